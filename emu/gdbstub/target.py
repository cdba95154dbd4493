"""The two sides of the gdb stub's contract with a machine.

`DebugTarget` is what a paused machine offers the stub: its threads (processes, each with its own
address space), their registers and memory, breakpoints, and arming a single step. A world
implements it (procd_model/debug.py does, over the modelled kernel); so can a world rebuilt from a
dump. `Debugger` is what the machine calls while it runs: `stopped` at each stop (it returns when
the client resumes), `interrupted` between slices of guest execution (Ctrl-C from the client), and
`finished` when the run ends. The machine drives and the stub answers, so the run loop stays the
only place that decides what executes next, and stepping never changes its schedule.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from enum import Enum
from typing import Protocol


class StopKind(Enum):
    ENTRY = "entry"
    """The first guest is about to execute its first instruction (the client attaches here)."""
    BREAKPOINT = "breakpoint"
    STEP = "step"
    INTERRUPT = "interrupt"
    FAULT = "fault"
    """A guest faulted; the machine then ends it as it would without a debugger."""


@dataclass(frozen=True)
class Stop:
    kind: StopKind
    tid: int
    """The thread (process id) that stopped."""
    signal: int = signal.SIGTRAP
    """What gdb is told: SIGTRAP for breakpoints and steps, SIGINT, or the fault's signal."""
    detail: str = ""


class Resume(Enum):
    CONTINUE = "continue"
    """Run on (steps the client asked for are armed on the target)."""
    KILL = "kill"
    """The client killed the program: end the run."""


@dataclass(frozen=True)
class ThreadInfo:
    tid: int
    name: str
    state: str
    """What it is doing, in a few words ("running", "blocked in RECV")."""


class TargetError(Exception):
    """A request the target cannot satisfy (unmapped memory, a thread that is gone)."""


class DebugTarget(Protocol):
    def threads(self) -> list[ThreadInfo]:
        """The live threads that have registers and memory, by tid."""
        ...

    def read_register(self, tid: int, name: str) -> int | None:
        """A register by gdb's name (emu/gdbstub/registers.py); None when it is not modelled."""
        ...

    def write_register(self, tid: int, name: str, value: int) -> None: ...

    def read_memory(self, tid: int, address: int, size: int) -> bytes:
        """Bytes of `tid`'s address space; TargetError if any is unmapped."""
        ...

    def write_memory(self, tid: int, address: int, data: bytes) -> None: ...

    def set_breakpoint(self, address: int) -> None:
        """Stop any thread before it executes `address` (no memory is written)."""
        ...

    def clear_breakpoint(self, address: int) -> None: ...

    def step(self, tid: int) -> None:
        """Stop `tid` after it has executed exactly one more instruction (when it next runs)."""
        ...

    def resume_from(self, tid: int) -> None:
        """`tid` reported the last stop: it resumes without stopping again at a breakpoint there."""
        ...

    def detach(self) -> None:
        """Remove every breakpoint and pending step: the run goes on undisturbed."""
        ...

    def clock(self) -> str:
        """One line for `monitor time`: the virtual time and the instructions retired."""
        ...

    def process_table(self) -> list[str]:
        """Lines for `monitor ps`: a header, then one line per process (actors too)."""
        ...


class Debugger(Protocol):
    def attach(self, target: DebugTarget) -> None:
        """The machine the client will see (before it first stops)."""
        ...

    def stopped(self, stop: Stop) -> Resume:
        """The machine stopped: serve the client until it resumes."""
        ...

    def interrupted(self) -> bool:
        """Called between slices of execution: True when the client asked to stop (Ctrl-C)."""
        ...

    def finished(self, exit_code: int) -> None:
        """The run ended (exit code as the command line reports it)."""
        ...
