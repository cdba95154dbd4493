"""The modelled machine as a gdb target, in process: threads, registers, memory, Ctrl-C reporting."""

from __future__ import annotations

import signal
from pathlib import Path

from elfcraft import code_image

from emu.elf import load_elf
from emu.gdbstub.target import DebugTarget, Resume, Stop, StopKind
from emu.trace import Trace
from procd_model.debug import DebugPort, KernelDebugTarget
from procd_model.world import prepare_alone


class Recorder:
    """A debugger that records its stops and always has a Ctrl-C pending."""

    def __init__(self) -> None:
        self.stops: list[Stop] = []

    def attach(self, target: DebugTarget) -> None:
        pass

    def stopped(self, stop: Stop) -> Resume:
        self.stops.append(stop)
        return Resume.CONTINUE

    def interrupted(self) -> bool:
        return True

    def finished(self, exit_code: int) -> None:
        pass


def test_a_ctrl_c_after_a_peer_ran_is_reported_in_a_guest(tmp_path: Path) -> None:
    (tmp_path / "spin.elf").write_bytes(code_image(b"\xeb\xfe"))
    kernel, proc = prepare_alone(Trace(), load_elf(tmp_path / "spin.elf"))
    recorder = Recorder()
    port = DebugPort(recorder, KernelDebugTarget(kernel))
    port.turn(proc)
    port.poll(last_pid=0)  # the kernel (or an actor) ran last: no registers there
    port.poll(last_pid=proc.pid)
    assert [(s.kind, s.tid, s.signal) for s in recorder.stops] == [
        (StopKind.ENTRY, proc.pid, signal.SIGTRAP),
        (StopKind.INTERRUPT, proc.pid, signal.SIGINT),
        (StopKind.INTERRUPT, proc.pid, signal.SIGINT),
    ]


def test_the_target_reads_and_writes_a_guest(tmp_path: Path) -> None:
    (tmp_path / "spin.elf").write_bytes(code_image(b"\xeb\xfe", data=b"hello", data_addr=0x600000))
    kernel, proc = prepare_alone(Trace(), load_elf(tmp_path / "spin.elf"))
    target = KernelDebugTarget(kernel)
    assert [(t.tid, t.name) for t in target.threads()] == [(proc.pid, "spin.elf")]
    assert target.read_register(proc.pid, "rip") == 0x400000
    assert target.read_register(proc.pid, "st0") is None
    target.write_register(proc.pid, "xmm3", 1 << 100)
    assert target.read_register(proc.pid, "xmm3") == 1 << 100
    assert target.read_memory(proc.pid, 0x600000, 5) == b"hello"
    target.write_memory(proc.pid, 0x600000, b"J")
    assert target.read_memory(proc.pid, 0x600000, 2) == b"Je"
    assert "virtual time: 0 cycles" in target.clock()
    table = target.process_table()
    assert table[0].split()[:2] == ["pid", "name"] and "spin.elf" in table[1] and "guest" in table[1]
