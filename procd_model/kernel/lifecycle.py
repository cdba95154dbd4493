"""Process lifecycle: create (guest or actor), start, exit, fault, kill, and burial: a dead process
leaves the one queue it waited in, its reply right and its caller's are settled, and its
supervisor gets CHILD_DIED."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from emu.cpu import Fault, GuestCpu
from emu.elf import PAGE_SIZE, ElfImage, Perm
from emu.events import FAULT, PROCESS_CREATE, PROCESS_EXIT, PROCESS_KILL, PROCESS_START
from procd_model.abi import CHILD_DEATH, ENVELOPE_VADDR, IPC_BUFFER_VADDR, DeathKind, KernelEvent
from procd_model.abi import FaultKind as AbiFaultKind
from procd_model.actor import ActorProgram
from procd_model.caps import CapTable
from procd_model.kernel import ipc, sched
from procd_model.kernel.outcome import ImageLayoutError
from procd_model.kernel.state import (
    ActorContext,
    GuestContext,
    InRecv,
    InReply,
    InSend,
    InWait,
    Process,
    RunState,
)
from procd_model.messages import envelope_role

if TYPE_CHECKING:
    from procd_model.kernel.core import Kernel


def take_pid(k: Kernel) -> int:
    pid = k.state.next_pid
    k.state.next_pid += 1
    return pid


def spawn_actor(k: Kernel, name: str, program: ActorProgram, caps: CapTable) -> Process:
    """A modelled peer, ready to run."""
    proc = Process(take_pid(k), name, caps, ActorContext(program))
    k.state.procs[proc.pid] = proc
    k.trace.emit(PROCESS_CREATE, proc.pid, name=name, actor=True)
    sched.make_ready(k, proc)
    return proc


def _check_layout(image: ElfImage) -> None:
    for segment in image.segments:
        for base in (IPC_BUFFER_VADDR, ENVELOPE_VADDR):
            if segment.vaddr < base + PAGE_SIZE and base < segment.end:
                raise ImageLayoutError(
                    f"{image.name}: segment {segment.index} [{segment.vaddr:#x}, {segment.end:#x}) overlaps "
                    f"the kernel-owned page at {base:#x}"
                )


def create_guest(k: Kernel, name: str, image: ElfImage, envelope: bytes, caps: CapTable, endpoint: int = 0) -> Process:
    """A process running `image`, created but not started. Raises ImageLayoutError."""
    _check_layout(image)
    cpu = GuestCpu(k.cpu_model)
    cpu.load(image)
    cpu.map(IPC_BUFFER_VADDR, PAGE_SIZE, Perm.R | Perm.W)
    cpu.map(ENVELOPE_VADDR, PAGE_SIZE, Perm.R, envelope)
    cpu.set_reg("rdi", ENVELOPE_VADDR)
    cpu.set_reg("rsp", 0)
    proc = Process(take_pid(k), name, caps, GuestContext(cpu, image), endpoint=endpoint)
    proc.fault_at = k.injector.fault_at(image.name)
    k.state.procs[proc.pid] = proc
    if k.instrument is not None:
        k.instrument(cpu, image, proc.pid)
    role = envelope_role(envelope)
    k.trace.emit(
        PROCESS_CREATE,
        proc.pid,
        name=name,
        role=role.name if role is not None else None,
        entry=f"{image.entry:#x}",
        endpoint=endpoint,
    )
    return proc


def start(k: Kernel, proc: Process, *, run_next: bool = False) -> None:
    k.trace.emit(PROCESS_START, proc.pid, name=proc.name)
    sched.make_ready(k, proc, front=run_next)


ROOT_PID = 1
"""The root process is the first process the world creates: rootd, or an image run alone."""


def make_root(k: Kernel, proc: Process) -> None:
    """`proc` is the root process: the run stops when it exits (see `exit_process`)."""
    if proc.pid != ROOT_PID:
        raise ValueError(f"the root process is the first one created (pid {ROOT_PID}), not pid {proc.pid}")
    k.state.root = proc.pid


def exit_process(k: Kernel, proc: Process, code: int) -> None:
    """`proc` exits with `code`. When the root process exits, the run stops there ("root-exited"):
    the system it started has nobody left to answer to (rootd exits only to halt bootstrap)."""
    proc.exit_code = code
    k.trace.emit(PROCESS_EXIT, proc.pid, name=proc.name, code=code)
    bury(k, proc, RunState.EXITED)
    if proc.pid == k.state.root:
        sched.halt(k, "root-exited", f"{proc.name} (pid {proc.pid}) exited with code {code}")


def fault(k: Kernel, proc: Process, what: Fault) -> None:
    """`proc` dies of `what` (a CPU fault, a bad syscall, or an injected fault)."""
    proc.fault = what
    fields: dict[str, Any] = {"name": proc.name, "fault": what.kind.value, "rip": f"{what.rip:#x}"}
    if proc.image is not None:
        where = proc.image.symbolize(what.rip)
        if where is not None:
            fields["symbol"] = f"{where[0]}+{where[1]:#x}"
    if what.address is not None:
        fields["address"] = f"{what.address:#x}"
    if what.detail:
        fields["detail"] = what.detail
    k.trace.emit(FAULT, proc.pid, **fields)
    bury(k, proc, RunState.FAULTED)


def live_guest(k: Kernel, pid: int) -> Process | None:
    """The guest `pid` if it is alive (actors cannot be killed)."""
    target = k.state.procs.get(pid)
    if target is None or target.state.is_dead or not target.is_guest:
        return None
    return target


def kill(k: Kernel, target: Process, by: int) -> None:
    """End `target` on `by`'s order: it dies KILLED."""
    k.trace.emit(PROCESS_KILL, target.pid, name=target.name, by=by)
    bury(k, target, RunState.KILLED)


def _death_record(proc: Process) -> bytes:
    if proc.state is RunState.KILLED:
        return CHILD_DEATH.pack(pid=proc.pid, kind=DeathKind.KILLED)
    if proc.fault is not None:
        return CHILD_DEATH.pack(
            pid=proc.pid,
            kind=DeathKind.FAULTED,
            code=AbiFaultKind[proc.fault.kind.name],
            address=proc.fault.rip,
        )
    return CHILD_DEATH.pack(pid=proc.pid, kind=DeathKind.EXITED, code=proc.exit_code or 0)


def _tell_supervisor(k: Kernel, proc: Process) -> None:
    """Queue CHILD_DIED on the supervisor's endpoint, as a SEND from the kernel itself."""
    endpoint = k.state.endpoints.get(proc.supervisor)
    if endpoint is not None:
        ipc.kernel_message(k, endpoint, KernelEvent.CHILD_DIED, _death_record(proc), child_pid=proc.pid)


def _leave_queue(k: Kernel, proc: Process) -> None:
    """Take `proc` out of what it waited in: one queue, or its server's reply right."""
    state = k.state
    match proc.waiting:
        case InSend(endpoint=obj):
            endpoint = state.endpoints[obj]
            endpoint.senders = deque(p for p in endpoint.senders if p.pid != proc.pid)
        case InRecv(endpoint=obj):
            state.endpoints[obj].receivers.remove(proc.pid)
        case InWait(notification=obj):
            state.notifications[obj].waiters.remove(proc.pid)
        case InReply(server=pid):
            server = state.procs[pid]
            if server.reply_to == proc.pid:
                server.reply_to = None
    proc.waiting = None


def bury(k: Kernel, proc: Process, state: RunState) -> None:
    """A dead process leaves its queue; the caller it owed a reply is answered INTERNAL."""
    ipc.drop_reply_right(k, proc)
    proc.state = state
    _leave_queue(k, proc)
    if proc.supervisor:
        _tell_supervisor(k, proc)
    for observer in k.observers:
        observer.process_died(proc)
    if isinstance(proc.context, GuestContext):
        proc.context.cpu.close()  # its counts stay; the engine's memory goes
