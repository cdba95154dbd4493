"""The kernel's state as plain data: processes, endpoints, notifications, the run queue, timed
events and the clocks. `snapshot_state` copies it; two states compare with `==`.

A process's context (a guest's emulated CPU, an actor's generator) is not data that can be
copied: a snapshot shares it with the state it was taken from.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field, replace

from emu.cpu import Fault, GuestCpu, GuestMemoryError
from emu.elf import ElfImage
from emu.events import KERNEL_PID
from procd_model.abi import (
    IPC_BUFFER_SIZE,
    IPC_BUFFER_VADDR,
    SYSCALL_CLOBBERED_REGISTERS,
    SYSCALL_RESULT_REGISTERS,
    SYSCALL_STATUS_REGISTER,
)
from procd_model.actor import ActorProgram, SyscallResult
from procd_model.caps import Capability, CapTable
from procd_model.kernel.outcome import Done, StopReason
from procd_model.messages import Message

_RESULT_REGISTERS = (SYSCALL_STATUS_REGISTER, *SYSCALL_RESULT_REGISTERS, *SYSCALL_CLOBBERED_REGISTERS)
"""Status and results, then what the hardware `syscall` leaves: rcx = return address, r11 = rflags."""


class RunState(enum.Enum):
    """Where a process is in the kernel's scheduler (not procd's `proc_state` of a service)."""

    CREATED = "created"
    READY = "ready"
    BLOCKED = "blocked"
    EXITED = "exited"
    FAULTED = "faulted"
    KILLED = "killed"

    @property
    def is_dead(self) -> bool:
        return self in (RunState.EXITED, RunState.FAULTED, RunState.KILLED)


@dataclass(frozen=True)
class InSend:
    """Queued as a sender on `endpoint` (a SEND, or a CALL not yet received)."""

    endpoint: int


@dataclass(frozen=True)
class InRecv:
    """Queued as a receiver on `endpoint`."""

    endpoint: int


@dataclass(frozen=True)
class InReply:
    """A CALL the process `server` received and owes a reply to (Hubris's `InReply(TaskId)`)."""

    server: int


@dataclass(frozen=True)
class InWait:
    """Waiting on `notification`."""

    notification: int


Waiting = InSend | InRecv | InReply | InWait


@dataclass(frozen=True)
class PendingSend:
    """A sender waiting on an endpoint's queue, its message already copied out (immutable: a
    snapshot's queues share them)."""

    pid: int
    message: Message
    caps: tuple[Capability, ...]
    badge: int
    is_call: bool


@dataclass
class Endpoint:
    obj: int
    service: str
    """Whose operations arrive here, for naming ops in the trace (e.g. "procd")."""
    senders: list[PendingSend] = field(default_factory=list)
    """Queued senders, first in line first (lists: an endpoint's queue is short, and an empty
    deque costs 600 bytes, kept by every endpoint a long run ever made)."""
    receivers: list[int] = field(default_factory=list)


@dataclass
class Notification:
    obj: int
    word: int = 0
    waiters: list[int] = field(default_factory=list)


@dataclass(eq=False)
class GuestContext:
    """A guest's machine: its emulated CPU and the image it runs. Its IPC buffer is a mapped page."""

    cpu: GuestCpu
    image: ElfImage
    entry: tuple[int, int] | None = None
    """rip and rflags when the syscall being served was entered (read with its arguments, in
    one call): the result's commit writes them to rcx and r11 without reading them again."""

    def read_ipc(self, size: int = IPC_BUFFER_SIZE) -> bytes:
        return self.cpu.read(IPC_BUFFER_VADDR, size)

    def write_ipc(self, data: bytes) -> None:
        self.cpu.write(IPC_BUFFER_VADDR, data)

    def read(self, address: int, size: int) -> bytes:
        """Guest memory (DEBUG_WRITE's text). Raises GuestMemoryError."""
        return self.cpu.read(address, size)

    def commit(self, outcome: Done) -> None:
        """Write a syscall's result to the registers, as `sysret` leaves them."""
        rip, rflags = self.entry if self.entry is not None else self.cpu.regs(("rip", "rflags"))
        self.cpu.set_regs(_RESULT_REGISTERS, (int(outcome.status), *outcome.values, rip, rflags))

    def syscall_rip(self) -> int:
        """The address of the `syscall` instruction being served (2 bytes before rip)."""
        return self.cpu.reg("rip") - 2


@dataclass(eq=False)
class ActorContext:
    """A modelled peer: a generator resumed with each syscall's result, and its IPC buffer."""

    program: ActorProgram
    buffer: bytearray = field(default_factory=lambda: bytearray(IPC_BUFFER_SIZE))
    result: SyscallResult | None = None
    started: bool = False

    def read_ipc(self, size: int = IPC_BUFFER_SIZE) -> bytes:
        return bytes(self.buffer[:size])

    def write_ipc(self, data: bytes) -> None:
        self.buffer[: len(data)] = data

    def read(self, address: int, size: int) -> bytes:
        """An actor's only memory is its IPC buffer, at IPC_BUFFER_VADDR as a guest's. Raises
        GuestMemoryError for anything outside it."""
        offset = address - IPC_BUFFER_VADDR
        if offset < 0 or offset + size > IPC_BUFFER_SIZE:
            raise GuestMemoryError(f"{size} bytes at {address:#x} are outside the IPC buffer")
        return bytes(self.buffer[offset : offset + size])

    def commit(self, outcome: Done) -> None:
        self.result = SyscallResult(outcome.status, outcome.values, bytes(self.buffer))

    def syscall_rip(self) -> int:
        return 0


Context = GuestContext | ActorContext


@dataclass
class Process:
    pid: int
    name: str
    caps: CapTable
    context: Context
    endpoint: int = 0
    """Object id of the endpoint the kernel created with the process (0 for none)."""
    supervisor: int = 0
    """Endpoint that gets a CHILD_DIED message when this process dies (0: none)."""
    fault_at: int | None = None
    """Kill the process with an injected fault when it has retired this many instructions."""
    state: RunState = RunState.CREATED
    waiting: Waiting | None = None
    """What a BLOCKED process waits for (None otherwise)."""
    reply_to: int | None = None
    """Pid of the caller this process owes a reply (its one-shot reply right)."""
    reply_op: tuple[str, int] = ("", 0)
    """(service, op) of the call being served, to decode the reply in the trace."""
    exit_code: int | None = None
    fault: Fault | None = None
    last_log: str | None = None
    """Its latest DEBUG_WRITE line (rootd's says why it halted bootstrap)."""

    @property
    def is_guest(self) -> bool:
        return isinstance(self.context, GuestContext)

    @property
    def cpu(self) -> GuestCpu | None:
        """A guest's CPU (None for an actor)."""
        return self.context.cpu if isinstance(self.context, GuestContext) else None

    @property
    def image(self) -> ElfImage | None:
        return self.context.image if isinstance(self.context, GuestContext) else None

    def read_ipc(self, size: int = IPC_BUFFER_SIZE) -> bytes:
        return self.context.read_ipc(size)

    def write_ipc(self, data: bytes) -> None:
        self.context.write_ipc(data)


@dataclass(frozen=True)
class Interrupt:
    notification: int
    line: int


@dataclass(frozen=True)
class Timer:
    endpoint: int
    cookie: int


TimedEvent = Interrupt | Timer


@dataclass
class KernelState:
    """Everything the kernel keeps between syscalls."""

    procs: dict[int, Process] = field(default_factory=dict)
    endpoints: dict[int, Endpoint] = field(default_factory=dict)
    notifications: dict[int, Notification] = field(default_factory=dict)
    run_queue: deque[int] = field(default_factory=deque)
    timed: list[tuple[int, int, TimedEvent]] = field(default_factory=list)
    """Pending interrupts and timers: (millicycles, order, event), a heap."""
    timed_order: int = 0
    icount: int = 0
    """Instructions retired by every guest."""
    clock: int = 0
    """Virtual time in millicycles: guest instructions plus the kernel's modelled work."""
    running: int = KERNEL_PID
    """The pid the trace shows as current (the kernel before the first switch and after idle)."""
    last_ran: int = KERNEL_PID
    """The process whose context the CPU holds: switching back to it after idle costs nothing."""
    next_pid: int = 1
    next_obj: int = 1
    root: int | None = None
    """The root process's pid (`Kernel.make_root`): the run stops when it exits."""
    halt: StopReason | None = None
    turn_left: int | None = None
    """Millicycles left of the running guest's turn when the instruction limit stopped the run
    inside it: a run resumed from there (a replay's paused machine) finishes that turn, as the
    run that was not stopped would have."""
    logs: list[str] = field(default_factory=list)
    """Every DEBUG_WRITE line, whatever the trace level (scenarios check them)."""
    dumps: dict[int, str] = field(default_factory=dict)
    """pid -> the id of the dump of its crash (named whether or not a file is written)."""
    dead: deque[int] = field(default_factory=deque)
    """Pids of the dead processes still kept in `procs`, oldest death first (see
    `lifecycle.forget_oldest_dead`: a long run keeps a bounded history)."""
    forgotten: Forgotten = field(default_factory=lambda: Forgotten(0, 0))
    orphans: list[int] = field(default_factory=list)
    """Endpoints of forgotten processes, dropped once no capability, supervisor or timer names them."""
    orphans_named: int = 0
    """Orphans the last sweep found still named (sweeps wait for `keep_dead` more than that)."""
    logs_dropped: int = 0
    """DEBUG_WRITE lines dropped from the middle of `logs` (see `syscalls.keep_log`)."""


@dataclass(frozen=True)
class Forgotten:
    """What is left of the dead processes a long run no longer keeps: how many, and the
    instructions they retired (the run's summary still counts them)."""

    count: int
    instructions: int


def snapshot_state(state: KernelState) -> KernelState:
    """A copy of `state` that later runs do not change (contexts are shared, see the module doc).

    Written out by hand: every container is copied, and what it holds is either immutable
    (waits, faults, capabilities, messages, timed events) or copied here (processes' capability
    tables, endpoints' and notifications' queues)."""
    procs = {pid: replace(proc, caps=proc.caps.copy()) for pid, proc in state.procs.items()}
    endpoints = {
        obj: Endpoint(e.obj, e.service, list(e.senders), list(e.receivers)) for obj, e in state.endpoints.items()
    }
    notifications = {obj: Notification(n.obj, n.word, list(n.waiters)) for obj, n in state.notifications.items()}
    return replace(
        state,
        procs=procs,
        endpoints=endpoints,
        notifications=notifications,
        run_queue=deque(state.run_queue),
        timed=list(state.timed),
        logs=list(state.logs),
        dumps=dict(state.dumps),
        dead=deque(state.dead),
        orphans=list(state.orphans),
    )
