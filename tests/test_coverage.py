"""Block coverage (emu/coverage.py): the native and Python hooks see the same blocks, coverage
never changes a count, and folding says which blocks are new."""

from __future__ import annotations

import pytest

from emu import coverage
from emu.blocks import block_starts
from emu.coverage import CoverageMap
from procd_model.fuzz.target import ProcdTarget
from procd_model.harness import spawn_request, talk_to_procd
from procd_model.strategies import LifecycleStep


def spawn_once(target: ProcdTarget) -> None:
    target.check([LifecycleStep("spawn", spawn_request("phase0-exit"))])


@pytest.mark.parametrize("native", [True, False])
def test_a_spawn_covers_blocks_and_the_same_spawn_adds_none(native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not native:
        monkeypatch.setattr(coverage, "_NATIVE", None)
    elif coverage._NATIVE is None:
        pytest.skip("the native coverage hook is not built")
    target = ProcdTarget()
    spawn_once(target)
    first = target.merge_coverage()
    spawn_once(target)
    assert first > 100 and target.merge_coverage() == 0
    statics = block_starts(target.image)
    assert set(target.total.addresses()) - statics == set(), "every block run starts where a static block does"


def test_native_and_python_hooks_cover_the_same_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    if coverage._NATIVE is None:
        pytest.skip("the native coverage hook is not built")
    native = ProcdTarget()
    spawn_once(native)
    native.merge_coverage()
    monkeypatch.setattr(coverage, "_NATIVE", None)
    python = ProcdTarget()
    spawn_once(python)
    python.merge_coverage()
    assert native.total.addresses() == python.total.addresses()


def test_coverage_never_changes_the_trace() -> None:
    def digest(with_coverage: bool) -> str:
        into = CoverageMap(0x400000, 0x500000)

        def instrument(cpu, image, _pid):  # type: ignore[no-untyped-def]
            if with_coverage and image.name == "procd":
                cpu.attach_coverage(into)

        talk, _ = talk_to_procd(instrument=instrument)
        talk.ask(spawn_request("phase0-exit"))
        return talk.trace.digest()

    assert digest(True) == digest(False)


def test_folding_counts_only_new_blocks() -> None:
    run, total = CoverageMap(100, 110), CoverageMap(100, 110)
    run.hits[1] = run.hits[5] = 1
    assert run.fold_into(total) == 2 and run.count() == 0 and total.addresses() == [101, 105]
    run.hits[5] = run.hits[9] = 1
    assert run.fold_into(total) == 1 and total.count() == 3
    with pytest.raises(ValueError):
        run.fold_into(CoverageMap(100, 111))
