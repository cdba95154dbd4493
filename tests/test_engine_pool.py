"""Warm engines (procd_model/kernel/engines.py) give byte-identical traces to fresh ones."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

import procd_model.world as world
from emu.elf import load_elf
from emu.trace import Trace, TraceWriter
from procd_model.abi import BADGE_ROOTD, SPAWN_SERVICE_REQUEST, ProcdOp, Role, Status
from procd_model.client import Conversation, Request
from procd_model.images import fixtures_dir
from procd_model.kernel import Kernel, engines
from procd_model.kernel.engines import EnginePool
from procd_model.messages import Message
from procd_model.scenario import builtin_scenarios

SCENARIOS = {scenario.name: scenario for scenario in builtin_scenarios()}


def _recording_kernels(monkeypatch: pytest.MonkeyPatch) -> list[Kernel]:
    """Every kernel `world.make_kernel` makes from now on, in order."""
    kernels: list[Kernel] = []
    make_kernel = world.make_kernel

    def recording_make_kernel(*args: object, **kwargs: object) -> Kernel:
        kernel = make_kernel(*args, **kwargs)  # type: ignore[arg-type]
        kernels.append(kernel)
        return kernel

    monkeypatch.setattr(world, "make_kernel", recording_make_kernel)
    return kernels


def _trace_of(scenario_name: str, monkeypatch: pytest.MonkeyPatch, pool: EnginePool) -> bytes:
    """The whole JSONL trace of a scenario run with guests' engines from `pool`; every engine
    still live at the end goes back to the pool too."""
    monkeypatch.setattr(engines, "SHARED", pool)
    kernels = _recording_kernels(monkeypatch)
    out = io.BytesIO()
    trace = Trace(TraceWriter("jsonl", out))
    world.run_scenario(trace, SCENARIOS[scenario_name], 100_000_000)
    for kernel in kernels:
        kernel.release_engines()
    return out.getvalue()


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_traces_the_same_on_warm_and_fresh_engines(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = _trace_of(name, monkeypatch, EnginePool(capacity=0))
    pool = EnginePool()
    first = _trace_of(name, monkeypatch, pool)
    warm = _trace_of(name, monkeypatch, pool)  # every engine of this run was used before
    assert pool.reused > 0
    assert first == fresh
    assert warm == fresh


def _spawn() -> Request:
    return Request(Message(ProcdOp.SPAWN_SERVICE, SPAWN_SERVICE_REQUEST.pack(image_id=2, role=Role.TEST, flags=0)))


def test_the_pool_stays_bounded_and_dead_processes_keep_their_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = EnginePool(capacity=2)
    monkeypatch.setattr(engines, "SHARED", pool)
    talk = Conversation([BADGE_ROOTD])
    for _ in range(50):
        reply = talk.ask(_spawn())
        assert reply is not None and reply[1] is not None and reply[1].op == Status.OK
    assert pool.reused >= 49  # each child's engine served the next child
    assert pool.idle_count() <= 2
    children = [p for p in talk.kernel.procs.values() if p.name == "phase0-exit"]
    assert len(children) == 50
    for child in children:
        assert child.cpu is not None and child.cpu.closed and child.cpu.retired == children[0].cpu.retired  # type: ignore[union-attr]
        with pytest.raises(RuntimeError, match="this guest is dead"):
            child.cpu.reg("rip")


def test_an_engine_whose_memory_map_grew_is_not_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lone image without an image note gets a stack mapped after its layout: its engine cannot
    be put back to the laid-out state, so the pool closes it instead of handing it out again."""
    pool = EnginePool()
    monkeypatch.setattr(engines, "SHARED", pool)
    image = load_elf(Path(__file__).parent / "data" / "lone-c.elf")
    outcomes = [world.run_alone(Trace(), image, 100_000_000) for _ in range(3)]
    assert all(outcome.ok for outcome in outcomes), [outcome.detail for outcome in outcomes]
    assert pool.reused == 0 and pool.idle_count() == 0


def test_idle_engines_of_images_no_longer_used_are_evicted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each run with a user's procd image is a new image object: the pool keeps a bounded number
    of idle engines in all, evicting those of the images used least recently."""
    pool = EnginePool()
    monkeypatch.setattr(engines, "SHARED", pool)
    kernels = _recording_kernels(monkeypatch)
    procd = load_elf(fixtures_dir() / "procd.elf")
    for _ in range(engines.MAX_IDLE + 4):
        assert world.run_bootstrap(Trace(), 100_000_000, procd_image=procd).ok
        kernels.pop().release_engines()  # procd's engine goes idle under this run's image
    assert pool.idle_count() <= engines.MAX_IDLE
    assert len(pool._held) <= engines.MAX_IDLE


def test_a_guests_ipc_buffer_is_its_engines_page_and_part_of_its_saved_state() -> None:
    """The kernel reads and writes a guest's IPC buffer straight in host memory: what the guest
    (its engine) sees, and what a saved state holds and puts back."""
    from emu.accounting import UNIT_CPU
    from procd_model.abi import IPC_BUFFER_SIZE, IPC_BUFFER_VADDR
    from procd_model.images import boot_image_named, load_boot_image
    from procd_model.kernel.engines import fresh_engine
    from procd_model.kernel.state import GuestContext

    image = load_boot_image(boot_image_named("phase0-exit").image_id)
    context = GuestContext(fresh_engine(image, UNIT_CPU), image)
    context.write_ipc(b"hello")
    assert context.cpu.read(IPC_BUFFER_VADDR, 5) == b"hello" == context.read_ipc(5)
    saved = context.cpu.save_state()
    context.write_ipc(b"HELLO")
    context.cpu.write(IPC_BUFFER_VADDR + 5, b"!")
    assert context.read_ipc(6) == b"HELLO!"
    context.cpu.restore_state(saved)
    assert context.read_ipc(6) == b"hello\0" and len(context.read_ipc()) == IPC_BUFFER_SIZE


def test_pages_outside_host_buffers_are_put_back_through_the_engine() -> None:
    """Executable pages live in the engine, not in a host buffer: a saved state still puts back
    exactly the pages that changed."""
    from emu.accounting import UNIT_CPU
    from emu.elf import PAGE_SIZE, Perm
    from procd_model.images import boot_image_named, load_boot_image
    from procd_model.kernel.engines import fresh_engine

    image = load_boot_image(boot_image_named("phase0-exit").image_id)
    cpu = fresh_engine(image, UNIT_CPU)
    code = 0x7000_0000
    cpu.map(code, 3 * PAGE_SIZE, Perm.R | Perm.W | Perm.X)
    assert cpu.host_buffer(code, PAGE_SIZE) is None
    cpu.write(code, b"\x90" * (3 * PAGE_SIZE))
    saved = cpu.save_state()
    cpu.write(code + PAGE_SIZE + 5, b"\xcc")
    assert cpu.restore_state(saved) == 1
    assert cpu.read(code, 3 * PAGE_SIZE) == b"\x90" * (3 * PAGE_SIZE)
