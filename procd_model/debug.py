"""The modelled machine as a gdb target (`emu.gdbstub.target.DebugTarget`), and the port the
kernel's run loop calls at its stops.

Threads are the guest processes (tid = pid), each with its own engine and address space; actors
(rootd, the modelled peers) have no registers and appear only in `monitor ps`. Breakpoints live in
every guest engine, present and future (`guest_created` is chained into the world's instrument).
The run loop asks `DebugPort` between turns whether the client pressed Ctrl-C, and hands it each
debug trap; nothing here changes what runs when, so every count and the trace digest are those of
the run without a debugger.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

from emu.cpu import Fault, FaultCause, GuestCpu, GuestMemoryError
from emu.debugstop import DebugHit
from emu.elf import ElfImage
from emu.events import MILLICYCLES_PER_CYCLE
from emu.gdbstub.target import Debugger, Resume, Stop, StopKind, TargetError, ThreadInfo
from emu.registers import OTHER_REGISTERS, REGISTERS
from procd_model.kernel.state import GuestContext, InRecv, InReply, InSend, InWait, Process, Waiting

if TYPE_CHECKING:
    from procd_model.kernel.core import Kernel

_FAULT_SIGNALS = {
    FaultCause.INVALID_OPCODE: signal.SIGILL,
    FaultCause.DIVIDE_ERROR: signal.SIGFPE,
    FaultCause.BREAKPOINT: signal.SIGTRAP,
}
"""What gdb is told for a fault (any other: SIGSEGV)."""
_NAMES = {"eflags": "rflags"}
_READ_ONLY = frozenset(("cs", "ss", "ds", "es", "fs", "gs"))
"""Writing a segment selector would reload the segment (and could leave 64-bit mode)."""
"""gdb's register names that differ from the emulator's."""


def _waiting(waiting: Waiting | None) -> str:
    if isinstance(waiting, InRecv):
        return f"in RECV on endpoint {waiting.endpoint}"
    if isinstance(waiting, InSend):
        return f"sending on endpoint {waiting.endpoint}"
    if isinstance(waiting, InReply):
        return f"waiting for a reply from pid {waiting.server}"
    if isinstance(waiting, InWait):
        return f"in WAIT on notification {waiting.notification}"
    return ""


def describe(proc: Process) -> str:
    """What a process is doing, in a few words."""
    if proc.fault is not None and proc.state.is_dead:
        return f"{proc.state.value}: {proc.fault.describe()}"
    if proc.exit_code is not None:
        return f"{proc.state.value} (code {proc.exit_code})"
    doing = _waiting(proc.waiting)
    return f"{proc.state.value} {doing}" if doing else proc.state.value


class KernelDebugTarget:
    """The kernel's processes, registers, memory and breakpoints, for the gdb stub."""

    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel
        self._breakpoints: set[int] = set()

    def _cpus(self) -> dict[int, GuestCpu]:
        return {
            pid: proc.context.cpu
            for pid, proc in sorted(self._kernel.procs.items())
            if isinstance(proc.context, GuestContext) and not proc.context.cpu.closed
        }

    def _cpu(self, tid: int) -> GuestCpu:
        cpu = self._cpus().get(tid)
        if cpu is None:
            raise TargetError(f"no live guest with pid {tid}")
        return cpu

    def guest_created(self, cpu: GuestCpu, _image: ElfImage, _pid: int) -> None:
        for address in sorted(self._breakpoints):
            cpu.debug.add_breakpoint(address)

    def threads(self) -> list[ThreadInfo]:
        procs, running = self._kernel.procs, self._kernel.state.running
        return [
            ThreadInfo(pid, procs[pid].name, "running" if pid == running else describe(procs[pid]))
            for pid in self._cpus()
        ]

    def read_register(self, tid: int, name: str) -> int | None:
        cpu, name = self._cpu(tid), _NAMES.get(name, name)
        if name in REGISTERS:
            return cpu.reg(name)
        return cpu.registers.other(name) if name in OTHER_REGISTERS else None

    def write_register(self, tid: int, name: str, value: int) -> None:
        cpu, name = self._cpu(tid), _NAMES.get(name, name)
        if name in _READ_ONLY:
            raise TargetError(f"{name} is read-only (a 64-bit flat segment)")
        if name in REGISTERS:
            cpu.set_reg(name, value)
        elif name in OTHER_REGISTERS:
            cpu.registers.set_other(name, value)
        else:
            raise TargetError(f"{name} is not modelled")

    def read_memory(self, tid: int, address: int, size: int) -> bytes:
        try:
            return self._cpu(tid).read(address, size)
        except (GuestMemoryError, OverflowError) as exc:
            raise TargetError(str(exc)) from None

    def write_memory(self, tid: int, address: int, data: bytes) -> None:
        try:
            self._cpu(tid).write(address, data)
        except (GuestMemoryError, OverflowError) as exc:
            raise TargetError(str(exc)) from None

    def set_breakpoint(self, address: int) -> None:
        self._breakpoints.add(address)
        for cpu in self._cpus().values():
            cpu.debug.add_breakpoint(address)

    def clear_breakpoint(self, address: int) -> None:
        self._breakpoints.discard(address)
        for cpu in self._cpus().values():
            cpu.debug.remove_breakpoint(address)

    def step(self, tid: int) -> None:
        self._cpu(tid).debug.step()

    def resume_from(self, tid: int) -> None:
        cpu = self._cpus().get(tid)
        if cpu is not None:
            cpu.debug.pass_breakpoint_at(cpu.reg("rip"))

    def detach(self) -> None:
        self._breakpoints.clear()
        for cpu in self._cpus().values():
            cpu.debug.clear()

    def clock(self) -> str:
        state, frequency = self._kernel.state, self._kernel.cpu_model.frequency_hz
        cycles = state.clock // MILLICYCLES_PER_CYCLE
        return (
            f"virtual time: {cycles} cycles ({cycles / frequency * 1e3:.6f} ms at {frequency / 1e9:g} GHz), "
            f"{state.icount} instructions retired"
        )

    def process_table(self) -> list[str]:
        rows = [f"{'pid':>4}  {'name':<24} {'kind':<6} {'instructions':>12}  state"]
        for pid, proc in sorted(self._kernel.procs.items()):
            guest = isinstance(proc.context, GuestContext)
            retired = str(proc.context.cpu.retired) if isinstance(proc.context, GuestContext) else "-"
            doing = "running" if pid == self._kernel.state.running else describe(proc)
            rows.append(f"{pid:>4}  {proc.name:<24} {'guest' if guest else 'actor':<6} {retired:>12}  {doing}")
        return rows


def attach_debugger(kernel: Kernel, debugger: Debugger) -> None:
    """Make `kernel` stop for `debugger`: a target over it, breakpoints in every guest created."""
    target = KernelDebugTarget(kernel)
    previous = kernel.instrument

    def instrument(cpu: GuestCpu, image: ElfImage, pid: int) -> None:
        target.guest_created(cpu, image, pid)
        if previous is not None:
            previous(cpu, image, pid)

    kernel.instrument = instrument
    kernel.debug = DebugPort(debugger, target)
    debugger.attach(target)


class DebugPort:
    """What the run loop calls: the first-turn stop, Ctrl-C polls, debug traps and faults."""

    def __init__(self, debugger: Debugger, target: KernelDebugTarget) -> None:
        self.debugger = debugger
        self.target = target
        self._entered = False
        self.killed = False

    def _stop(self, stop: Stop) -> None:
        if self.debugger.stopped(stop) is Resume.KILL:
            self.killed = True

    def turn(self, proc: Process) -> None:
        """A guest's turn begins: the very first one is the client's entry stop."""
        if not self._entered:
            self._entered = True
            self._stop(Stop(StopKind.ENTRY, proc.pid))

    def poll(self, last_pid: int) -> None:
        """Between turns: a Ctrl-C from the client stops the machine here, reported in the guest
        that ran last (or the first live guest, when a modelled peer or the kernel ran last)."""
        if self._entered and self.debugger.interrupted():
            guests = [thread.tid for thread in self.target.threads()]
            tid = last_pid if last_pid in guests or not guests else guests[0]
            self._stop(Stop(StopKind.INTERRUPT, tid, signal.SIGINT))

    def trapped(self, proc: Process, hit: DebugHit | None) -> None:
        kind = StopKind.BREAKPOINT if hit is DebugHit.BREAKPOINT else StopKind.STEP
        self._stop(Stop(kind, proc.pid))

    def faulted(self, proc: Process, fault: Fault) -> None:
        """`proc` faulted and is about to be ended: the client sees it first, registers and all."""
        self._stop(Stop(StopKind.FAULT, proc.pid, _FAULT_SIGNALS.get(fault.kind, signal.SIGSEGV), fault.describe()))
