"""A run the instruction limit stopped inside a guest's turn resumes exactly: running on gives the
events, counts and cycles of a run that was never stopped (a replay's paused machine relies on it)."""

from __future__ import annotations

import pytest
from elfcraft import code_image

from emu.elf import load_elf
from emu.trace import Trace, jsonl_line
from procd_model.caps import CapTable
from procd_model.kernel import Kernel

SPIN = bytes.fromhex("48ffc0" + "ebfb")  # inc rax; jmp back: never blocks, so only the quantum switches
QUANTUM_CYCLES = 700


def spinning_pair(trace: Trace) -> Kernel:
    kernel = Kernel(trace, quantum_cycles=QUANTUM_CYCLES)
    for name, base in (("a", 0x400000), ("b", 0x500000)):
        proc = kernel.create_guest(name, load_elf(code_image(SPIN, base=base), name=name), b"", CapTable())
        kernel.start(proc)
    return kernel


def events(trace: Trace) -> list[bytes]:
    return [jsonl_line(e) for e in trace.events]


@pytest.mark.parametrize("stop_at", [1, 333, 1000, 2501])
def test_running_on_after_a_limit_stop_matches_a_run_never_stopped(stop_at: int) -> None:
    whole_trace, resumed_trace = Trace(), Trace()
    whole = spinning_pair(whole_trace)
    whole.run(30000)
    resumed = spinning_pair(resumed_trace)
    assert resumed.run(stop_at).kind == "instruction-limit"
    assert resumed.icount == stop_at
    resumed.state.halt = None
    resumed.run(30000)
    assert (resumed.icount, resumed.clock) == (whole.icount, whole.clock)
    assert events(resumed_trace) == events(whole_trace)
    assert len([e for e in whole_trace.events if e.kind == "sched.switch"]) > 4
