"""The loop-kernel suite (benches/kernels.py): the block model against llvm-mca and a real Zen 4."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from benches import kernels
from benches.kernel_defs import CALIBRATION, SUITE
from procd_model.cpu_model import cpu_model

ROOT = Path(__file__).resolve().parent.parent


def _require(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide {', '.join(missing)}")
        pytest.skip(f"{', '.join(missing)} not installed")


def test_the_suite_covers_the_kinds_of_loop_the_issue_names() -> None:
    names = {k.name for k in SUITE}
    assert len(SUITE) >= 10
    for kind in ("add_chain", "independent_alu", "imul_chain", "div_chain", "pointer_chase", "copy", "call_ret"):
        assert kind in names
    assert {"unpredictable", "mov_lea", "sse_chain"} <= names
    assert {k.name for k in CALIBRATION}.isdisjoint(names)


def test_the_measured_figures_are_committed_for_every_kernel() -> None:
    data = json.loads((ROOT / "benches" / "data" / "measured-zen4.json").read_text(encoding="utf-8"))
    assert "family 25" in data["cpu"]
    assert set(data["kernels"]) == {k.name for k in SUITE}
    assert set(data["calibration"]) == {k.name for k in CALIBRATION}
    for entry in data["kernels"].values():
        assert entry["cycles"] == pytest.approx(entry["ticks"] / entry["ticks_per_cycle"], abs=0.01)


def test_zen4_model_tracks_the_measured_cycles() -> None:
    _require("as", "objcopy")
    measured = kernels.measured_cycles()
    model = cpu_model("zen4")
    errors = [
        abs(kernels.emulator_per_iteration(kernel, model) - measured[kernel.name]) / measured[kernel.name]
        for kernel in SUITE
    ]
    assert sum(errors) / len(errors) <= 0.15


def test_skylake_model_tracks_llvm_mca_on_average() -> None:
    _require("as", "objcopy", "llvm-mca")
    model = cpu_model("skylake")
    errors = []
    for kernel in SUITE:
        mca = kernels.mca_per_iteration(kernel, "skylake")
        errors.append(abs(kernels.emulator_per_iteration(kernel, model) - mca) / mca)
    assert sum(errors) / len(errors) <= 0.15


def test_the_emulated_loops_are_deterministic() -> None:
    _require("as", "objcopy")
    model = cpu_model("zen4")
    kernel = next(k for k in SUITE if k.name == "unpredictable")
    assert kernels.emulated_cycles(kernel, model, 300) == kernels.emulated_cycles(kernel, model, 300)


def test_native_and_python_clocks_agree_on_every_kernel() -> None:
    """The C hook and the Python fallback time the kernels (branches, divides, calls) identically."""
    _require("as", "objcopy")
    import subprocess
    import sys

    from emu import accounting

    if not accounting.native_available():
        pytest.skip("the native accounting extension is not built")
    script = (
        "import json; from benches import kernels; from benches.kernel_defs import SUITE; "
        "from procd_model.cpu_model import cpu_model; "
        "print(json.dumps({c + k.name: kernels.emulated_cycles(k, cpu_model(c), 200) "
        "for c in ('skylake', 'zen4') for k in SUITE}))"
    )
    env = {**os.environ, accounting.FORCE_PYTHON_ENV: "python"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    fallback = json.loads(done.stdout)
    native = {c + k.name: kernels.emulated_cycles(k, cpu_model(c), 200) for c in ("skylake", "zen4") for k in SUITE}
    assert native == fallback


def test_as_llvm_switches_off_move_elimination_and_the_refill_only() -> None:
    """benches.kernels --as-llvm: moves cost their latency, mispredictions nothing; the rest is the model."""
    _require("as", "objcopy")
    by_name = {k.name: k for k in SUITE}
    model, like_llvm = cpu_model("skylake"), kernels.as_llvm("skylake")
    per_iteration = {
        name: (
            kernels.emulator_per_iteration(by_name[name], model),
            kernels.emulator_per_iteration(by_name[name], like_llvm),
        )
        for name in ("mov_lea", "unpredictable", "add_chain")
    }
    assert per_iteration["mov_lea"] == (2.0, 4.0)  # two eliminated movs of the chain now cost a cycle each
    assert per_iteration["unpredictable"][1] < per_iteration["unpredictable"][0] - 5  # no 16-cycle refills
    assert per_iteration["add_chain"][0] == per_iteration["add_chain"][1]
