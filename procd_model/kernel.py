"""The modelled EriX kernel: processes, endpoints, notifications, capabilities, scheduling.

A syscall flows decode -> dispatch -> handler -> one place that commits the result: guests' arguments
come from registers (`_guest_args`), actors' from their request; handlers return an `Outcome` and
never touch Unicorn; `_commit` writes the result back to whichever kind of process asked.

Scheduling is deterministic: a FIFO run queue; the current process runs until it blocks, exits,
yields or uses up its quantum (then it goes to the back). A process a syscall wakes is appended
to the queue. START_PROCESS is the one exception: the started process runs next and its starter
goes to the back of the queue ("the child runs first").
"""

from __future__ import annotations

import enum
import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from emu.accounting import CpuModel
from emu.cpu import Fault, FaultCause, GuestCpu, GuestMemoryError, TrapKind
from emu.elf import PAGE_SIZE, ElfImage, Perm
from emu.events import (
    FAULT,
    IPC_RECV,
    IPC_REPLY,
    IPC_SEND,
    IRQ,
    KERNEL_PID,
    LOG,
    NOTIFY,
    PROCESS_CREATE,
    PROCESS_EXIT,
    PROCESS_KILL,
    PROCESS_START,
    SCHED_IDLE,
    SCHED_SWITCH,
    SYSCALL,
)
from emu.events import MILLICYCLES_PER_CYCLE as MILLI
from emu.trace import Trace
from emu.world import Instrument
from procd_model import costs
from procd_model.abi import (
    BADGE_KERNEL,
    CAP_TABLE_SLOTS,
    CHILD_DEATH,
    CHILD_FIRST_GRANT_SLOT,
    CHILD_SELF_ENDPOINT_SLOT,
    CLOCK_REPLY,
    CREATE_MAX_GRANTS,
    CREATE_PROCESS_REPLY,
    CREATE_PROCESS_REQUEST,
    DEBUG_WRITE_MAX,
    ENVELOPE_MAX,
    ENVELOPE_VADDR,
    IPC_BUFFER_SIZE,
    IPC_BUFFER_VADDR,
    KILL_REQUEST,
    MINT_REQUEST,
    MONOTONIC_CLOCK_HZ,
    START_PROCESS_REQUEST,
    SYSCALL_ARG_REGISTERS,
    SYSCALL_CLOBBERED_REGISTERS,
    SYSCALL_NUMBER_REGISTER,
    SYSCALL_RESULT_REGISTERS,
    SYSCALL_STATUS_REGISTER,
    TIMER_EVENT,
    TIMER_REQUEST,
    CapType,
    DeathKind,
    KernelEvent,
    KernelOp,
    NotifyBit,
    Rights,
    Status,
    Syscall,
)
from procd_model.abi import FaultKind as AbiFaultKind
from procd_model.actor import ActorProgram, SyscallResult
from procd_model.caps import Capability, CapLookupError, CapTable
from procd_model.cpu_model import default_cpu_model
from procd_model.messages import Message, MessageError, envelope_role
from procd_model.ops import (
    KERNEL_CONTROL_ENDPOINT,
    KERNEL_EVENTS,
    IpcRecord,
    NotifyRecord,
    decode_payload,
    op_name,
    status_name,
)

_SYSCALL_REGISTERS = (SYSCALL_NUMBER_REGISTER, *SYSCALL_ARG_REGISTERS)
_RESULT_REGISTERS = (SYSCALL_STATUS_REGISTER, *SYSCALL_RESULT_REGISTERS, *SYSCALL_CLOBBERED_REGISTERS)
"""Status and results, then what the hardware `syscall` leaves: rcx = return address, r11 = rflags."""


class ProcState(enum.Enum):
    CREATED = "created"
    READY = "ready"
    BLOCKED = "blocked"
    EXITED = "exited"
    FAULTED = "faulted"
    KILLED = "killed"

    @property
    def is_dead(self) -> bool:
        return self in (ProcState.EXITED, ProcState.FAULTED, ProcState.KILLED)


class ImageLayoutError(Exception):
    """An image that cannot be placed in a process (it overlaps a kernel-owned page)."""


@dataclass
class PendingSend:
    """A sender waiting on an endpoint's queue, its message already copied out."""

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
    senders: deque[PendingSend] = field(default_factory=deque)
    receivers: deque[int] = field(default_factory=deque)


@dataclass
class Notification:
    obj: int
    word: int = 0
    waiters: deque[int] = field(default_factory=deque)


@dataclass
class Process:
    pid: int
    name: str
    caps: CapTable
    cpu: GuestCpu | None = None
    program: ActorProgram | None = None
    image: ElfImage | None = None
    endpoint: int = 0
    """Object id of the endpoint the kernel created with the process (0 for none)."""
    supervisor: int = 0
    """Endpoint that gets a CHILD_DIED message when this process dies (0: none)."""
    fault_at: int | None = None
    """Kill the process with an injected fault when it has retired this many instructions."""
    state: ProcState = ProcState.CREATED
    reply_to: int | None = None
    """Pid of the caller this process owes a reply (its one-shot reply right)."""
    reply_op: tuple[str, int] = ("", 0)
    """(service, op) of the call being served, to decode the reply in the trace."""
    awaiting_reply_from: int | None = None
    exit_code: int | None = None
    fault: Fault | None = None
    actor_buffer: bytearray = field(default_factory=lambda: bytearray(IPC_BUFFER_SIZE))
    actor_result: SyscallResult | None = None
    actor_started: bool = False

    @property
    def is_guest(self) -> bool:
        return self.cpu is not None

    def read_ipc(self, size: int = IPC_BUFFER_SIZE) -> bytes:
        if self.cpu is not None:
            return self.cpu.read(IPC_BUFFER_VADDR, size)
        return bytes(self.actor_buffer[:size])

    def write_ipc(self, data: bytes) -> None:
        if self.cpu is not None:
            self.cpu.write(IPC_BUFFER_VADDR, data)
        else:
            self.actor_buffer[: len(data)] = data


@dataclass(frozen=True)
class Interrupt:
    notification: int
    line: int


@dataclass(frozen=True)
class Timer:
    endpoint: int
    cookie: int


TimedEvent = Interrupt | Timer


@dataclass(frozen=True)
class SyscallArgs:
    number: int
    args: tuple[int, int, int, int, int, int]


@dataclass(frozen=True)
class Done:
    """The syscall completed now with `status` and up to three result values."""

    status: Status
    values: tuple[int, int, int] = (0, 0, 0)
    end_turn: bool = False


class Blocked:
    """The caller now waits; someone else's syscall will complete it."""


class Gone:
    """The caller exited or was killed."""


Outcome = Done | Blocked | Gone
_KERNEL_OP_COSTS = {
    KernelOp.CREATE_PROCESS: costs.CREATE_PROCESS,
    KernelOp.START_PROCESS: costs.START_PROCESS,
    KernelOp.READ_MONOTONIC_CLOCK: costs.READ_MONOTONIC_CLOCK,
    KernelOp.MINT_ENDPOINT: costs.MINT_ENDPOINT,
    KernelOp.KILL_PROCESS: costs.KILL_PROCESS,
    KernelOp.SET_TIMER: costs.SET_TIMER,
}
BLOCKED = Blocked()
GONE = Gone()


@dataclass(frozen=True)
class StopReason:
    kind: str
    """"idle", "instruction-limit" or "halted"."""
    detail: str = ""


class Kernel:
    def __init__(
        self,
        trace: Trace | None = None,
        *,
        image_loader: Callable[[int], ElfImage | None] | None = None,
        cpu_model: CpuModel | None = None,
        quantum_cycles: int = costs.DEFAULT_QUANTUM_CYCLES,
        instrument: Instrument | None = None,
    ) -> None:
        self._instrument = instrument
        self.trace = trace if trace is not None else Trace()
        self.trace.bind_clock(lambda: self.icount, lambda: self.clock // MILLI)
        self.cpu_model = cpu_model if cpu_model is not None else default_cpu_model()
        self.icount = 0
        """Instructions retired by every guest."""
        self.clock = 0
        """Virtual time in millicycles: guest instructions plus the kernel's modelled work."""
        self.quantum = quantum_cycles * MILLI
        self._running = KERNEL_PID
        """The pid the trace shows as current (the kernel before the first switch and after idle)."""
        self._last_ran = KERNEL_PID
        """The process whose context the CPU holds: switching back to it after idle costs nothing."""
        self.procs: dict[int, Process] = {}
        self.endpoints: dict[int, Endpoint] = {}
        self.notifications: dict[int, Notification] = {}
        self.run_queue: deque[int] = deque()
        self.death_observers: list[Callable[[Process], None]] = []
        self.logs: list[str] = []
        """Every DEBUG_WRITE line, whatever the trace level (scenarios check them)."""
        self._image_loader = image_loader
        self._next_pid = 1
        self._next_obj = 1
        self._halt: StopReason | None = None
        self._timed: list[tuple[int, int, TimedEvent]] = []
        """Pending interrupts and timers: (millicycles, order, event), a heap."""
        self._timed_order = 0
        self.fault_injections: dict[str, int] = {}
        """image name -> instruction count at which its next process is killed (scenarios)"""
        self.create_failures: dict[str, list[tuple[Status, int]]] = {}
        """image name -> (status, times): what the next CREATE_PROCESS calls for it answer, in order (scenarios)"""

    # ------------------------------------------------------------- world setup

    def fail_creates(self, image: str, status: Status, times: int = 1) -> None:
        """Answer the next `times` CREATE_PROCESS calls for `image` that pass the checks with `status`
        (after any failures already queued for it)."""
        self.create_failures.setdefault(image, []).append((status, times))

    def new_endpoint(self, service: str = "") -> Endpoint:
        endpoint = Endpoint(self._take_obj(), service)
        self.endpoints[endpoint.obj] = endpoint
        return endpoint

    def new_notification(self) -> Notification:
        notification = Notification(self._take_obj())
        self.notifications[notification.obj] = notification
        return notification

    def _take_obj(self) -> int:
        obj = self._next_obj
        self._next_obj += 1
        return obj

    def spawn_actor(self, name: str, program: ActorProgram, caps: CapTable) -> Process:
        """A modelled peer, ready to run."""
        proc = Process(self._take_pid(), name, caps, program=program)
        self.procs[proc.pid] = proc
        self.trace.emit(PROCESS_CREATE, proc.pid, name=name, actor=True)
        self._make_ready(proc)
        return proc

    def create_guest(self, name: str, image: ElfImage, envelope: bytes, caps: CapTable, endpoint: int = 0) -> Process:
        """A process running `image`, created but not started. Raises ImageLayoutError."""
        for segment in image.segments:
            for base in (IPC_BUFFER_VADDR, ENVELOPE_VADDR):
                if segment.vaddr < base + PAGE_SIZE and base < segment.end:
                    raise ImageLayoutError(
                        f"{image.name}: segment {segment.index} [{segment.vaddr:#x}, {segment.end:#x}) overlaps "
                        f"the kernel-owned page at {base:#x}"
                    )
        cpu = GuestCpu(self.cpu_model.cost_of)
        cpu.load(image)
        cpu.map(IPC_BUFFER_VADDR, PAGE_SIZE, Perm.R | Perm.W)
        cpu.map(ENVELOPE_VADDR, PAGE_SIZE, Perm.R, envelope)
        cpu.set_reg("rdi", ENVELOPE_VADDR)
        cpu.set_reg("rsp", 0)
        proc = Process(self._take_pid(), name, caps, cpu=cpu, image=image, endpoint=endpoint)
        proc.fault_at = self.fault_injections.pop(image.name, None)
        self.procs[proc.pid] = proc
        if self._instrument is not None:
            self._instrument(cpu, image, proc.pid)
        role = envelope_role(envelope)
        self.trace.emit(
            PROCESS_CREATE,
            proc.pid,
            name=name,
            role=role.name if role is not None else None,
            entry=f"{image.entry:#x}",
            endpoint=endpoint,
        )
        return proc

    def start(self, proc: Process, *, run_next: bool = False) -> None:
        self.trace.emit(PROCESS_START, proc.pid, name=proc.name)
        self._make_ready(proc, front=run_next)

    def _take_pid(self) -> int:
        pid = self._next_pid
        self._next_pid += 1
        return pid

    def halt(self, kind: str, detail: str) -> None:
        if self._halt is None:
            self._halt = StopReason(kind, detail)

    def monotonic_ticks(self) -> int:
        return self.clock * MONOTONIC_CLOCK_HZ // (self.cpu_model.frequency_hz * MILLI)

    def charge(self, cycles: int) -> None:
        """Advance virtual time by kernel work."""
        self.clock += cycles * MILLI

    def _switch_to(self, proc: Process) -> None:
        if proc.pid != self._running:
            if proc.pid != self._last_ran:
                self.charge(costs.CONTEXT_SWITCH)
            self.trace.emit(SCHED_SWITCH, proc.pid, previous=self._running)
            self._running = self._last_ran = proc.pid

    def _idle_until(self, at: int) -> None:
        """Nothing is ready until `at` (millicycles): virtual time jumps there. The trace shows the
        interval as idle, then the kernel as current (it delivers what came due) until a switch."""
        self.trace.emit(SCHED_IDLE, KERNEL_PID, previous=self._running, until=at // MILLI)
        self._running = KERNEL_PID
        self.clock = at

    # --------------------------------------------------------------- scheduler

    def schedule_irq(self, notification: Notification, at_cycle: int, line: int = 0) -> None:
        """Raise interrupt `line` at virtual time `at_cycle`: the kernel sets NotifyBit.IRQ on
        `notification` at the first block boundary from which the next block would reach that
        time (or then, if the machine is idle until it)."""
        self._schedule(at_cycle * MILLI, Interrupt(notification.obj, line))

    def _schedule(self, at: int, event: TimedEvent) -> None:
        self._timed_order += 1
        heapq.heappush(self._timed, (at, self._timed_order, event))

    def _next_timed(self) -> int | None:
        return self._timed[0][0] if self._timed else None

    def _fire_next(self) -> None:
        """Deliver the earliest interrupt or timer (its time has come, or the next block would pass it)."""
        at, _, event = heapq.heappop(self._timed)
        if isinstance(event, Interrupt):
            self.trace.emit(IRQ, KERNEL_PID, line=event.line, notification=event.notification, scheduled=at // MILLI)
            self._signal(self.notifications[event.notification], NotifyBit.IRQ)
            return
        endpoint = self.endpoints.get(event.endpoint)
        if endpoint is not None:
            payload = TIMER_EVENT.pack(cookie=event.cookie, ticks=self.monotonic_ticks())
            self._kernel_message(endpoint, KernelEvent.TIMER, payload, cookie=event.cookie)

    def _fire_due(self) -> None:
        while self._timed and self._timed[0][0] <= self.clock:
            self._fire_next()

    def run(self, max_instructions: int, *, jump_to_events: bool = True) -> StopReason:
        """Run until every process is blocked or dead, the limit is reached, or a halt.

        When nothing is runnable, virtual time jumps to the next pending interrupt or timer and
        the run goes on; with `jump_to_events` False the run stops there instead ("idle", with
        the event still pending), so a harness can act between requests (`advance_to_next_event`)."""
        while self._halt is None:
            self._fire_due()
            if not self.run_queue:
                next_event = self._next_timed()
                if next_event is None:
                    return StopReason("idle")
                if not jump_to_events:
                    return StopReason("idle", "an interrupt or timer is pending")
                self._idle_until(next_event)
                continue
            proc = self.procs[self.run_queue.popleft()]
            if proc.state is not ProcState.READY:
                continue
            if proc.is_guest:
                self._run_guest(proc, max_instructions)
            else:
                self._run_actor(proc)
        return self._halt

    @property
    def event_pending(self) -> bool:
        """Whether an interrupt or a timer is scheduled and has not fired yet."""
        return bool(self._timed)

    def advance_to_next_event(self) -> bool:
        """Let virtual time pass, while nothing runs, up to the next pending interrupt or timer
        (it fires on the next `run`); False if none is pending."""
        next_event = self._next_timed()
        if next_event is None:
            return False
        self.clock = max(self.clock, next_event)
        return True

    def signal(self, notification: Notification, bits: int) -> None:
        """NOTIFY `bits` on `notification` from outside the modelled processes (a test harness)."""
        self.trace.emit(
            NOTIFY, KERNEL_PID, NotifyRecord(notification.obj, bits), notification=notification.obj, bits=bits
        )
        self._signal(notification, bits)

    def terminate(self, pid: int) -> bool:
        """End the live guest `pid` from outside (as an operator's kill would): it dies KILLED
        and its supervisor gets CHILD_DIED. False if `pid` is no live guest."""
        target = self.procs.get(pid)
        if target is None or target.state.is_dead or target.cpu is None:
            return False
        self.trace.emit(PROCESS_KILL, target.pid, name=target.name, by=KERNEL_PID)
        self._bury(target, ProcState.KILLED)
        return True

    def _make_ready(self, proc: Process, *, front: bool = False) -> None:
        proc.state = ProcState.READY
        if front:
            self.run_queue.appendleft(proc.pid)
        else:
            self.run_queue.append(proc.pid)

    def _run_guest(self, proc: Process, max_instructions: int) -> None:
        """One turn: run until the process blocks, dies, yields or has used a whole quantum."""
        cpu = proc.cpu
        assert cpu is not None
        self._switch_to(proc)
        turn_end = cpu.cost + self.quantum
        while self._halt is None:
            remaining = max_instructions - self.icount
            if remaining <= 0:
                self.run_queue.appendleft(proc.pid)
                self.halt("instruction-limit", f"reached {max_instructions} instructions")
                return
            if cpu.cost >= turn_end:
                self.run_queue.append(proc.pid)
                return
            insn_budget = remaining
            if proc.fault_at is not None:
                insn_budget = min(insn_budget, proc.fault_at - cpu.retired)
                if insn_budget <= 0:
                    rip = cpu.reg("rip")
                    self._kill(proc, Fault(FaultCause.INJECTED, rip, None, f"at instruction {proc.fault_at}"))
                    return
            budget = turn_end - cpu.cost
            next_event = self._next_timed()
            event_bound = next_event is not None and next_event - self.clock <= budget
            if next_event is not None:
                budget = min(budget, max(next_event - self.clock, 0))
            before, cost_before = cpu.retired, cpu.cost
            trap = cpu.run(insn_budget, budget, exact=True, clock=self.clock, icount=self.icount)
            self.icount += cpu.retired - before
            self.clock += cpu.cost - cost_before
            if trap.kind is TrapKind.FAULT:
                assert trap.fault is not None
                self._kill(proc, trap.fault)
                return
            if trap.kind is TrapKind.BUDGET:
                if proc.fault_at is not None and cpu.retired >= proc.fault_at:
                    continue  # the injection check above kills it
                if self.icount < max_instructions:
                    if event_bound:
                        self._fire_next()  # the next block would reach the event's time
                    self.run_queue.append(proc.pid)
                    return
                continue  # the limit check above reports it
            self.charge(costs.KERNEL_ENTRY_EXIT)
            if not self._carry_on(proc, self._guest_syscall(proc, cpu)):
                return

    def _run_actor(self, proc: Process) -> None:
        program = proc.program
        assert program is not None
        self._switch_to(proc)
        while self._halt is None:
            try:
                if not proc.actor_started:
                    proc.actor_started = True
                    request = next(program)
                else:
                    result, proc.actor_result = proc.actor_result, None
                    assert result is not None
                    request = program.send(result)
            except StopIteration:
                self._exit(proc, 0)
                return
            if isinstance(request.message, Message):
                proc.write_ipc(request.message.encode())
            elif request.message is not None:
                proc.write_ipc(request.message[:IPC_BUFFER_SIZE])
            args = (tuple(request.args) + (0,) * 6)[:6]
            self.charge(costs.KERNEL_ENTRY_EXIT)
            outcome = self._syscall(proc, SyscallArgs(int(request.number), args))  # type: ignore[arg-type]
            if not self._carry_on(proc, outcome):
                return

    def _carry_on(self, proc: Process, outcome: Outcome) -> bool:
        """Commit a completed syscall; False when the turn is over (blocked, gone or yielding)."""
        if not isinstance(outcome, Done):
            return False
        self._commit(proc, outcome)
        if outcome.end_turn:
            self.run_queue.append(proc.pid)
            return False
        return True

    # ----------------------------------------------------------- syscall entry

    def _guest_syscall(self, proc: Process, cpu: GuestCpu) -> Outcome:
        number, *args = cpu.regs(_SYSCALL_REGISTERS)
        return self._syscall(proc, SyscallArgs(number, (args[0], args[1], args[2], args[3], args[4], args[5])))

    def _syscall(self, proc: Process, call: SyscallArgs) -> Outcome:
        try:
            number = Syscall(call.number)
        except ValueError:
            self._kill(proc, self._syscall_fault(proc, f"unknown syscall number {call.number}"))
            return GONE
        traced = self.trace.wants(SYSCALL)
        fields: dict[str, Any] = {}
        if traced:
            fields = {"name": number.name, **self._describe_args(number, call.args)}
            if number is Syscall.EXIT:
                self.trace.emit(SYSCALL, proc.pid, **fields)
        try:
            outcome = self._handlers[number](self, proc, call.args)
        except GuestMemoryError as exc:
            self._kill(proc, self._syscall_fault(proc, f"IPC buffer unusable: {exc}"))
            return GONE
        if traced and isinstance(outcome, Done):
            self.trace.emit(SYSCALL, proc.pid, **fields, status=outcome.status.name)
        elif traced and isinstance(outcome, Blocked):
            self.trace.emit(SYSCALL, proc.pid, **fields, status="blocked")
        return outcome

    def _syscall_fault(self, proc: Process, detail: str) -> Fault:
        rip = proc.cpu.reg("rip") - 2 if proc.cpu is not None else 0
        return Fault(FaultCause.GENERAL_PROTECTION, rip, None, detail)

    @staticmethod
    def _describe_args(number: Syscall, args: tuple[int, ...]) -> dict[str, Any]:
        if number in (
            Syscall.SEND,
            Syscall.NBSEND,
            Syscall.RECV,
            Syscall.CALL,
            Syscall.REPLY_RECV,
            Syscall.WAIT,
            Syscall.POLL,
        ):
            return {"slot": args[0]}
        if number is Syscall.NOTIFY:
            return {"slot": args[0], "bits": args[1]}
        if number is Syscall.EXIT:
            return {"code": args[0]}
        if number in (Syscall.CAP_INFO, Syscall.CAP_DELETE):
            return {"slot": args[0]}
        if number is Syscall.DEBUG_WRITE:
            return {"len": args[1]}
        return {}

    def _commit(self, proc: Process, outcome: Done) -> None:
        """Write a completed syscall's result to the process that made it."""
        if proc.cpu is not None:
            cpu = proc.cpu
            rip, rflags = cpu.regs(("rip", "rflags"))
            cpu.set_regs(_RESULT_REGISTERS, (int(outcome.status), *outcome.values, rip, rflags))
        else:
            proc.actor_result = SyscallResult(outcome.status, outcome.values, bytes(proc.actor_buffer))

    def _complete(self, proc: Process, status: Status, values: tuple[int, int, int] = (0, 0, 0)) -> None:
        """Finish a blocked process's syscall and make it runnable."""
        self._commit(proc, Done(status, values))
        self._make_ready(proc)

    # -------------------------------------------------------------- handlers

    def _sys_send(self, proc: Process, args: tuple[int, ...]) -> Outcome:
        return self._send(proc, args[0], is_call=False)

    def _sys_call(self, proc: Process, args: tuple[int, ...]) -> Outcome:
        return self._send(proc, args[0], is_call=True)

    def _sys_nbsend(self, proc: Process, args: tuple[int, ...]) -> Outcome:
        """SEND that never blocks (seL4's NBSend): the message reaches a receiver waiting on the
        endpoint now, or is dropped (no capability moves) and the sender gets BUSY."""
        return self._send(proc, args[0], is_call=False, blocking=False)

    def _send(self, proc: Process, slot: int, *, is_call: bool, blocking: bool = True) -> Outcome:
        try:
            cap = proc.caps.lookup(slot, (CapType.ENDPOINT, CapType.KERNEL_CONTROL), Rights.SEND)
            message = Message.decode(proc.read_ipc())
            caps = self._collect_transfer(proc, cap, message)
        except CapLookupError as exc:
            return Done(exc.status)
        except MessageError:
            return Done(Status.INVALID_ARGUMENT)
        if cap.cap_type is CapType.KERNEL_CONTROL:
            if not is_call or caps:
                return Done(Status.INVALID_ARGUMENT)
            return self._kernel_control(proc, cap, message)
        endpoint = self.endpoints[cap.obj]
        pending = PendingSend(proc.pid, message, caps, cap.badge, is_call)
        dropped = not blocking and not endpoint.receivers
        self.trace.emit(
            IPC_SEND,
            proc.pid,
            IpcRecord(endpoint.service, message.op, message.payload, len(caps), cap.badge, is_call),
            endpoint=endpoint.obj,
            op=op_name(endpoint.service, message.op),
            call=is_call,
            len=len(message.payload),
            caps=len(caps),
            **decode_payload(endpoint.service, message.op, message.payload, reply=False),
            **({"dropped": True} if dropped else {}),
        )
        if dropped:
            return Done(Status.BUSY)
        if endpoint.receivers:
            receiver = self.procs[endpoint.receivers.popleft()]
            self._deliver(receiver, endpoint, pending)
            self._complete(receiver, Status.OK, (pending.badge, 0, 0))
            if not is_call:
                return Done(Status.OK)
        else:
            endpoint.senders.append(pending)
        proc.state = ProcState.BLOCKED
        return BLOCKED

    def _collect_transfer(self, proc: Process, cap: Capability, message: Message) -> tuple[Capability, ...]:
        if not message.caps:
            return ()
        if not cap.rights & Rights.GRANT:
            raise CapLookupError(Status.DENIED, "sending capabilities needs GRANT")
        out = []
        for slot in message.caps:
            held = proc.caps.get(slot)
            if held is None:
                raise CapLookupError(Status.NOT_FOUND, f"slot {slot} is empty")
            out.append(held)
        return tuple(out)

    def _deliver(self, receiver: Process, endpoint: Endpoint, pending: PendingSend) -> None:
        """Copy a message into the receiver; a CALL leaves the receiver owing a reply."""
        landed = []
        for cap in pending.caps:
            slot = receiver.caps.install(cap)
            if slot is not None:
                landed.append(slot)
        delivered = Message(pending.message.op, pending.message.payload, tuple(landed))
        receiver.write_ipc(delivered.encode())
        self.charge(costs.ipc_transfer(len(delivered.payload), len(landed)))
        service = endpoint.service
        if pending.is_call:
            receiver.reply_to = pending.pid
            receiver.reply_op = (service, delivered.op)
            self.procs[pending.pid].awaiting_reply_from = receiver.pid
        elif pending.pid == KERNEL_PID:
            service = KERNEL_EVENTS  # the kernel's own message: nobody waits for it
        else:
            sender = self.procs[pending.pid]
            if sender.state is ProcState.BLOCKED:
                self._complete(sender, Status.OK)
        self.trace.emit(
            IPC_RECV,
            receiver.pid,
            IpcRecord(
                service, delivered.op, delivered.payload, len(landed), pending.badge, pending.is_call, peer=pending.pid
            ),
            endpoint=endpoint.obj,
            op=op_name(service, delivered.op),
            badge=pending.badge,
            sender=pending.pid,
            call=pending.is_call,
            len=len(delivered.payload),
            caps=list(landed),
            **decode_payload(service, delivered.op, delivered.payload, reply=False),
        )

    def _sys_recv(self, proc: Process, args: tuple[int, ...]) -> Outcome:
        try:
            cap = proc.caps.lookup(args[0], (CapType.ENDPOINT,), Rights.RECV)
        except CapLookupError as exc:
            return Done(exc.status)
        self._drop_reply_right(proc)
        endpoint = self.endpoints[cap.obj]
        if endpoint.senders:
            pending = endpoint.senders.popleft()
            self._deliver(proc, endpoint, pending)
            return Done(Status.OK, (pending.badge, 0, 0))
        endpoint.receivers.append(proc.pid)
        proc.state = ProcState.BLOCKED
        return BLOCKED

    def _drop_reply_right(self, proc: Process) -> None:
        """A server that receives again without replying loses the old reply right; the caller
        it belonged to is answered INTERNAL instead of being left blocked forever."""
        if proc.reply_to is None:
            return
        caller = self.procs[proc.reply_to]
        proc.reply_to = None
        if caller.awaiting_reply_from == proc.pid and caller.state is ProcState.BLOCKED:
            caller.awaiting_reply_from = None
            self.trace.emit(
                IPC_REPLY,
                proc.pid,
                IpcRecord(*proc.reply_op, status=Status.INTERNAL, peer=caller.pid),
                to=caller.pid,
                status="INTERNAL",
                dropped=True,
            )
            self._complete(caller, Status.INTERNAL)

    def _sys_reply(self, proc: Process, args: tuple[int, ...]) -> Outcome:
        return Done(self._reply(proc))

    def _reply(self, proc: Process) -> Status:
        if proc.reply_to is None:
            return Status.NOT_FOUND
        try:
            message = Message.decode(proc.read_ipc())
        except MessageError:
            return Status.INVALID_ARGUMENT
        if message.caps:
            return Status.INVALID_ARGUMENT
        caller = self.procs[proc.reply_to]
        proc.reply_to = None
        caller.awaiting_reply_from = None
        caller.write_ipc(message.encode())
        self.charge(costs.ipc_transfer(len(message.payload), 0))
        service, op = proc.reply_op
        fields = decode_payload(service, op, message.payload, reply=True) if message.op == Status.OK else {}
        self.trace.emit(
            IPC_REPLY,
            proc.pid,
            IpcRecord(service, op, message.payload, status=message.op, peer=caller.pid),
            to=caller.pid,
            op=op_name(service, op),
            status=status_name(message.op),
            len=len(message.payload),
            **fields,
        )
        self._complete(caller, Status.OK)
        return Status.OK

    def _sys_reply_recv(self, proc: Process, args: tuple[int, ...]) -> Outcome:
        status = self._reply(proc)
        if status not in (Status.OK, Status.NOT_FOUND):
            return Done(status)
        return self._sys_recv(proc, args)

    def _sys_notify(self, proc: Process, args: tuple[int, ...]) -> Outcome:
        try:
            cap = proc.caps.lookup(args[0], (CapType.NOTIFICATION,), Rights.SEND)
        except CapLookupError as exc:
            return Done(exc.status)
        notification = self.notifications[cap.obj]
        self.trace.emit(
            NOTIFY, proc.pid, NotifyRecord(notification.obj, args[1]), notification=notification.obj, bits=args[1]
        )
        self._signal(notification, args[1] | cap.badge)
        return Done(Status.OK)

    def _signal(self, notification: Notification, bits: int) -> None:
        """OR `bits` into the word; a waiter takes the whole word and wakes."""
        notification.word |= bits
        if notification.waiters and notification.word:
            waiter = self.procs[notification.waiters.popleft()]
            taken, notification.word = notification.word, 0
            self._complete(waiter, Status.OK, (taken, 0, 0))

    def _sys_wait(self, proc: Process, args: tuple[int, ...]) -> Outcome:
        try:
            cap = proc.caps.lookup(args[0], (CapType.NOTIFICATION,), Rights.RECV)
        except CapLookupError as exc:
            return Done(exc.status)
        notification = self.notifications[cap.obj]
        if notification.word:
            bits, notification.word = notification.word, 0
            return Done(Status.OK, (bits, 0, 0))
        notification.waiters.append(proc.pid)
        proc.state = ProcState.BLOCKED
        return BLOCKED

    def _sys_poll(self, proc: Process, args: tuple[int, ...]) -> Outcome:
        """WAIT without waiting: the bits set so far (and clear them), 0 if none."""
        try:
            cap = proc.caps.lookup(args[0], (CapType.NOTIFICATION,), Rights.RECV)
        except CapLookupError as exc:
            return Done(exc.status)
        notification = self.notifications[cap.obj]
        bits, notification.word = notification.word, 0
        return Done(Status.OK, (bits, 0, 0))

    def _sys_yield(self, proc: Process, args: tuple[int, ...]) -> Outcome:
        return Done(Status.OK, end_turn=True)

    def _sys_exit(self, proc: Process, args: tuple[int, ...]) -> Outcome:
        self._exit(proc, args[0])
        return GONE

    def _sys_debug_write(self, proc: Process, args: tuple[int, ...]) -> Outcome:
        pointer, length = args[0], args[1]
        if length > DEBUG_WRITE_MAX:
            return Done(Status.INVALID_ARGUMENT)
        if proc.cpu is None:
            return Done(Status.INVALID_ARGUMENT)
        try:
            data = proc.cpu.read(pointer, length)
        except GuestMemoryError:
            return Done(Status.INVALID_ARGUMENT)
        text = data.decode("utf-8", errors="replace").rstrip("\n")
        self.logs.append(text)
        self.trace.emit(LOG, proc.pid, text=text)
        return Done(Status.OK)

    def _sys_cap_info(self, proc: Process, args: tuple[int, ...]) -> Outcome:
        try:
            cap = proc.caps.lookup(args[0], tuple(CapType), Rights(0))
        except CapLookupError as exc:
            return Done(exc.status)
        return Done(Status.OK, (int(cap.cap_type), int(cap.rights), 0))

    def _sys_cap_delete(self, proc: Process, args: tuple[int, ...]) -> Outcome:
        if not 0 <= args[0] < CAP_TABLE_SLOTS:
            return Done(Status.INVALID_ARGUMENT)
        proc.caps.delete(args[0])
        return Done(Status.OK)

    _handlers: dict[Syscall, Callable[[Kernel, Process, tuple[int, ...]], Outcome]] = {
        Syscall.SEND: _sys_send,
        Syscall.NBSEND: _sys_nbsend,
        Syscall.RECV: _sys_recv,
        Syscall.CALL: _sys_call,
        Syscall.REPLY: _sys_reply,
        Syscall.REPLY_RECV: _sys_reply_recv,
        Syscall.NOTIFY: _sys_notify,
        Syscall.WAIT: _sys_wait,
        Syscall.POLL: _sys_poll,
        Syscall.YIELD: _sys_yield,
        Syscall.EXIT: _sys_exit,
        Syscall.DEBUG_WRITE: _sys_debug_write,
        Syscall.CAP_INFO: _sys_cap_info,
        Syscall.CAP_DELETE: _sys_cap_delete,
    }

    # ----------------------------------------------------------- kernel control

    def _kernel_control(self, proc: Process, cap: Capability, message: Message) -> Outcome:
        """Serve a CALL on kernel-control at once; the reply lands in the caller's buffer."""
        self.trace.emit(
            IPC_SEND,
            proc.pid,
            IpcRecord("kernel", message.op, message.payload, call=True),
            endpoint=KERNEL_CONTROL_ENDPOINT,
            op=op_name("kernel", message.op),
            call=True,
            len=len(message.payload),
            caps=0,
            **decode_payload("kernel", message.op, message.payload, reply=False),
        )
        status, reply, extra = self._kernel_op(proc, cap, message)
        proc.write_ipc(reply.encode())
        self.charge(costs.ipc_transfer(len(message.payload), 0) + costs.ipc_transfer(len(reply.payload), 0))
        if status is Status.OK:
            extra = {**decode_payload("kernel", message.op, reply.payload, reply=True), **extra}
        self.trace.emit(
            IPC_REPLY,
            KERNEL_PID,
            IpcRecord("kernel", message.op, reply.payload, status=status, peer=proc.pid),
            to=proc.pid,
            op=op_name("kernel", message.op),
            status=status.name,
            len=len(reply.payload),
            **extra,
        )
        end_turn = status is Status.OK and message.op == KernelOp.START_PROCESS
        return Done(Status.OK, end_turn=end_turn)

    def _kernel_op(self, proc: Process, cap: Capability, message: Message) -> tuple[Status, Message, dict[str, Any]]:
        try:
            op = KernelOp(message.op)
        except ValueError:
            return Status.INVALID_ARGUMENT, Message(Status.INVALID_ARGUMENT), {}
        self.charge(_KERNEL_OP_COSTS[op])
        if op is KernelOp.READ_MONOTONIC_CLOCK:
            ticks = self.monotonic_ticks()
            return Status.OK, Message(Status.OK, CLOCK_REPLY.pack(ticks=ticks)), {}
        if op is KernelOp.MINT_ENDPOINT:
            return self._mint_endpoint(proc, message.payload)
        if op is KernelOp.SET_TIMER:
            return self._set_timer(proc, message.payload)
        if not cap.rights & Rights.SPAWN:
            return Status.DENIED, Message(Status.DENIED), {}
        if op is KernelOp.CREATE_PROCESS:
            return self._create_process(proc, message.payload)
        if op is KernelOp.KILL_PROCESS:
            return self._kill_process(proc, message.payload)
        return self._start_process(message.payload)

    def _create_process(self, proc: Process, payload: bytes) -> tuple[Status, Message, dict[str, Any]]:
        def refuse(status: Status, why: str) -> tuple[Status, Message, dict[str, Any]]:
            return status, Message(status), {"reason": why}

        if len(payload) < CREATE_PROCESS_REQUEST.size:
            return refuse(Status.INVALID_ARGUMENT, "short request")
        request = CREATE_PROCESS_REQUEST.unpack(payload)
        envelope = payload[CREATE_PROCESS_REQUEST.size :]
        if request["grant_count"] > CREATE_MAX_GRANTS:
            return refuse(Status.INVALID_ARGUMENT, "too many grants")
        if request["envelope_len"] != len(envelope) or len(envelope) > ENVELOPE_MAX:
            return refuse(Status.INVALID_ARGUMENT, "envelope length")
        if request["reserved"]:
            return refuse(Status.INVALID_ARGUMENT, "reserved field set")
        if request["badge"] == BADGE_KERNEL:
            return refuse(Status.INVALID_ARGUMENT, "BADGE_KERNEL is the kernel's own")
        supervisor = 0
        supervisor_slot = request["supervisor_slot"]
        if supervisor_slot:
            held = proc.caps.get(supervisor_slot)
            if held is None or held.cap_type is not CapType.ENDPOINT:
                return refuse(Status.INVALID_ARGUMENT, f"supervisor slot {supervisor_slot} holds no endpoint")
            supervisor = held.obj
        granted: list[Capability] = []
        for record in request["grants"][: request["grant_count"]]:
            src_slot, rights = record & 0xFFFF_FFFF, record >> 32
            source = proc.caps.get(src_slot)
            if source is None:
                return refuse(Status.NOT_FOUND, f"grant source slot {src_slot} is empty")
            if rights & ~int(Rights.SEND | Rights.RECV | Rights.GRANT | Rights.SPAWN):
                return refuse(Status.INVALID_ARGUMENT, f"unknown rights {rights:#x}")
            derived = source.derive(Rights(rights))
            if derived is None:
                return refuse(Status.DENIED, f"grant from slot {src_slot} would widen its rights")
            granted.append(derived)
        image = self._image_loader(request["image_id"]) if self._image_loader else None
        if image is None:
            return refuse(Status.NOT_FOUND, f"no boot image {request['image_id']}")
        injected = self.create_failures.get(image.name)
        if injected:
            status, times = injected[0]
            if times > 1:
                injected[0] = (status, times - 1)
            else:
                injected.pop(0)
            return refuse(status, "injected by the scenario")
        endpoint = self.new_endpoint()
        caps = CapTable()
        caps.install(Capability(CapType.ENDPOINT, endpoint.obj, Rights.RECV), CHILD_SELF_ENDPOINT_SLOT)
        for index, cap in enumerate(granted):
            caps.install(cap, CHILD_FIRST_GRANT_SLOT + index)
        reply_cap = Capability(CapType.ENDPOINT, endpoint.obj, Rights.SEND | Rights.GRANT, request["badge"])
        reply_slot = proc.caps.install(reply_cap)
        if reply_slot is None:
            del self.endpoints[endpoint.obj]
            return refuse(Status.BUSY, "caller's capability table is full")
        try:
            child = self.create_guest(image.name, image, envelope, caps, endpoint.obj)
        except ImageLayoutError as exc:
            proc.caps.delete(reply_slot)
            del self.endpoints[endpoint.obj]
            return refuse(Status.INVALID_ARGUMENT, str(exc))
        endpoint.service = child.name
        child.supervisor = supervisor
        payload_out = CREATE_PROCESS_REPLY.pack(pid=child.pid, endpoint=endpoint.obj)
        return Status.OK, Message(Status.OK, payload_out, (reply_slot,)), {"caps": [reply_slot]}

    def _set_timer(self, proc: Process, payload: bytes) -> tuple[Status, Message, dict[str, Any]]:
        """Send TIMER (with the cookie) to an endpoint the caller receives on, at a monotonic time."""
        if len(payload) != TIMER_REQUEST.size:
            return Status.INVALID_ARGUMENT, Message(Status.INVALID_ARGUMENT), {}
        request = TIMER_REQUEST.unpack(payload)
        target = proc.caps.get(request["endpoint_slot"])
        if target is None or target.cap_type is not CapType.ENDPOINT:
            return Status.INVALID_ARGUMENT, Message(Status.INVALID_ARGUMENT), {}
        if not target.rights & Rights.RECV:
            return Status.DENIED, Message(Status.DENIED), {}
        millicycles_per_tick = self.cpu_model.frequency_hz * MILLI // MONOTONIC_CLOCK_HZ
        at = max(request["at_ticks"] * millicycles_per_tick, self.clock)
        self._schedule(at, Timer(target.obj, request["cookie"]))
        return Status.OK, Message(Status.OK), {"at_ticks": request["at_ticks"]}

    def _mint_endpoint(self, proc: Process, payload: bytes) -> tuple[Status, Message, dict[str, Any]]:
        """A badged SEND/GRANT capability to an endpoint the caller can receive on (like seL4's Mint)."""
        if len(payload) != MINT_REQUEST.size:
            return Status.INVALID_ARGUMENT, Message(Status.INVALID_ARGUMENT), {}
        request = MINT_REQUEST.unpack(payload)
        rights, badge = request["rights"], request["badge"]
        source = proc.caps.get(request["src_slot"])
        allowed = int(Rights.SEND | Rights.GRANT)
        if source is None or source.cap_type is not CapType.ENDPOINT or not rights or rights & ~allowed:
            return Status.INVALID_ARGUMENT, Message(Status.INVALID_ARGUMENT), {}
        if badge in (0, BADGE_KERNEL):
            return Status.INVALID_ARGUMENT, Message(Status.INVALID_ARGUMENT), {}
        if not source.rights & Rights.RECV:
            return Status.DENIED, Message(Status.DENIED), {}
        slot = proc.caps.install(Capability(CapType.ENDPOINT, source.obj, Rights(rights), badge))
        if slot is None:
            return Status.BUSY, Message(Status.BUSY), {}
        return Status.OK, Message(Status.OK, b"", (slot,)), {"caps": [slot], "badge": badge}

    def _kill_process(self, proc: Process, payload: bytes) -> tuple[Status, Message, dict[str, Any]]:
        """End a process whose supervisor endpoint the caller can receive on (its own child)."""
        if len(payload) != KILL_REQUEST.size:
            return Status.INVALID_ARGUMENT, Message(Status.INVALID_ARGUMENT), {}
        request = KILL_REQUEST.unpack(payload)
        if request["reserved"]:
            return Status.INVALID_ARGUMENT, Message(Status.INVALID_ARGUMENT), {}
        target = self.procs.get(request["pid"])
        if target is None or target.state.is_dead or target.cpu is None:
            return Status.NOT_FOUND, Message(Status.NOT_FOUND), {}
        supervises = any(
            cap.cap_type is CapType.ENDPOINT and cap.obj == target.supervisor and cap.rights & Rights.RECV
            for _, cap in proc.caps.occupied()
        )
        if not target.supervisor or not supervises:
            return Status.DENIED, Message(Status.DENIED), {}
        self.trace.emit(PROCESS_KILL, target.pid, name=target.name, by=proc.pid)
        self._bury(target, ProcState.KILLED)
        return Status.OK, Message(Status.OK), {"killed": target.pid}

    def _start_process(self, payload: bytes) -> tuple[Status, Message, dict[str, Any]]:
        if len(payload) != START_PROCESS_REQUEST.size:
            return Status.INVALID_ARGUMENT, Message(Status.INVALID_ARGUMENT), {}
        request = START_PROCESS_REQUEST.unpack(payload)
        if request["reserved"]:
            return Status.INVALID_ARGUMENT, Message(Status.INVALID_ARGUMENT), {}
        child = self.procs.get(request["pid"])
        if child is None:
            return Status.NOT_FOUND, Message(Status.NOT_FOUND), {}
        if child.state is not ProcState.CREATED:
            return Status.BUSY, Message(Status.BUSY), {}
        self.start(child, run_next=True)
        return Status.OK, Message(Status.OK), {"started": child.pid}

    # ----------------------------------------------------------------- death

    def _exit(self, proc: Process, code: int) -> None:
        proc.exit_code = code
        self.trace.emit(PROCESS_EXIT, proc.pid, name=proc.name, code=code)
        self._bury(proc, ProcState.EXITED)

    def _kill(self, proc: Process, fault: Fault) -> None:
        proc.fault = fault
        fields: dict[str, Any] = {"name": proc.name, "fault": fault.kind.value, "rip": f"{fault.rip:#x}"}
        if proc.image is not None:
            where = proc.image.symbolize(fault.rip)
            if where is not None:
                fields["symbol"] = f"{where[0]}+{where[1]:#x}"
        if fault.address is not None:
            fields["address"] = f"{fault.address:#x}"
        if fault.detail:
            fields["detail"] = fault.detail
        self.trace.emit(FAULT, proc.pid, **fields)
        self._bury(proc, ProcState.FAULTED)

    def _tell_supervisor(self, proc: Process) -> None:
        """Queue CHILD_DIED on the supervisor's endpoint, as a SEND from the kernel itself."""
        if proc.state is ProcState.KILLED:
            record = CHILD_DEATH.pack(pid=proc.pid, kind=DeathKind.KILLED)
        elif proc.fault is not None:
            record = CHILD_DEATH.pack(
                pid=proc.pid,
                kind=DeathKind.FAULTED,
                code=AbiFaultKind[proc.fault.kind.name],
                address=proc.fault.rip,
            )
        else:
            record = CHILD_DEATH.pack(pid=proc.pid, kind=DeathKind.EXITED, code=proc.exit_code or 0)
        endpoint = self.endpoints.get(proc.supervisor)
        if endpoint is not None:
            self._kernel_message(endpoint, KernelEvent.CHILD_DIED, record, child_pid=proc.pid)

    def _kernel_message(self, endpoint: Endpoint, op: KernelEvent, payload: bytes, **shown: Any) -> None:
        """Queue a message from the kernel itself (badge BADGE_KERNEL, no reply right) on `endpoint`."""
        pending = PendingSend(KERNEL_PID, Message(op, payload), (), BADGE_KERNEL, is_call=False)
        self.trace.emit(
            IPC_SEND,
            KERNEL_PID,
            IpcRecord(KERNEL_EVENTS, op, payload, badge=BADGE_KERNEL),
            endpoint=endpoint.obj,
            op=op.name,
            call=False,
            len=len(payload),
            caps=0,
            **shown,
        )
        if endpoint.receivers:
            receiver = self.procs[endpoint.receivers.popleft()]
            self._deliver(receiver, endpoint, pending)
            self._complete(receiver, Status.OK, (BADGE_KERNEL, 0, 0))
        else:
            endpoint.senders.append(pending)

    def _bury(self, proc: Process, state: ProcState) -> None:
        """Remove a dead process from every queue; its pending caller is answered INTERNAL."""
        self._drop_reply_right(proc)
        proc.state = state
        for endpoint in self.endpoints.values():
            if proc.pid in endpoint.receivers:
                endpoint.receivers.remove(proc.pid)
            endpoint.senders = deque(p for p in endpoint.senders if p.pid != proc.pid)
        for notification in self.notifications.values():
            if proc.pid in notification.waiters:
                notification.waiters.remove(proc.pid)
        if proc.awaiting_reply_from is not None:
            server = self.procs[proc.awaiting_reply_from]
            if server.reply_to == proc.pid:
                server.reply_to = None
        if proc.supervisor:
            self._tell_supervisor(proc)
        for observer in self.death_observers:
            observer(proc)
        if proc.cpu is not None:
            proc.cpu.close()  # its counts stay; the engine's memory goes
