"""Process lifecycle: create (guest or actor), start, exit, fault, kill, and burial: a dead process
leaves the one queue it waited in, its reply right and its caller's are settled, and its
supervisor gets CHILD_DIED."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from emu.cpu import Fault
from emu.elf import PAGE_SIZE, ElfImage
from emu.events import FAULT, PROCESS_CREATE, PROCESS_EXIT, PROCESS_KILL, PROCESS_START
from procd_model.abi import (
    CHILD_DEATH,
    ENVELOPE_VADDR,
    IPC_BUFFER_VADDR,
    CapType,
    DeathKind,
    KernelEvent,
    StartupStatus,
)
from procd_model.abi import FaultKind as AbiFaultKind
from procd_model.actor import ActorProgram
from procd_model.caps import CapTable
from procd_model.kernel import ipc, sched
from procd_model.kernel.inject import Crash
from procd_model.kernel.outcome import ImageLayoutError
from procd_model.kernel.state import (
    ActorContext,
    Forgotten,
    GuestContext,
    InRecv,
    InReply,
    InSend,
    InWait,
    Process,
    RunState,
    Timer,
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
    if k.trace.recording:
        k.trace.emit(PROCESS_CREATE, proc.pid, name=name, actor=True)
    sched.make_ready(k, proc)
    return proc


def check_layout(image: ElfImage) -> None:
    """Raise ImageLayoutError if a segment of `image` overlaps a page the kernel owns."""
    for segment in image.segments:
        for base in (IPC_BUFFER_VADDR, ENVELOPE_VADDR):
            if segment.vaddr < base + PAGE_SIZE and base < segment.end:
                raise ImageLayoutError(
                    f"{image.name}: segment {segment.index} [{segment.vaddr:#x}, {segment.end:#x}) overlaps "
                    f"the kernel-owned page at {base:#x}"
                )


def create_guest(k: Kernel, name: str, image: ElfImage, envelope: bytes, caps: CapTable, endpoint: int = 0) -> Process:
    """A process running `image`, created but not started. Raises ImageLayoutError."""
    check_layout(image)
    cpu = k.engines.acquire(image, k.cpu_model, private=k.instrument is not None)
    if envelope:
        cpu.write(ENVELOPE_VADDR, envelope)
    proc = Process(take_pid(k), name, caps, GuestContext(cpu, image), endpoint=endpoint)
    proc.fault_at = k.injector.fault_at(image.name)
    k.state.procs[proc.pid] = proc
    if k.instrument is not None:
        k.instrument(cpu, image, proc.pid)
    if k.trace.recording:
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
    if k.trace.recording:
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
    the system it started has nobody left to answer to (rootd exits only to halt bootstrap).
    A guest's exit with the panic status is a crash: the crash watch sees it first."""
    if code == StartupStatus.PANIC and proc.is_guest and _watch_stops(k, proc, Crash(panic=proc.last_log or "")):
        return
    proc.exit_code = code
    if k.trace.recording:
        k.trace.emit(PROCESS_EXIT, proc.pid, name=proc.name, code=code)
    bury(k, proc, RunState.EXITED)
    if proc.pid == k.state.root:
        sched.halt(k, "root-exited", f"{proc.name} (pid {proc.pid}) exited with code {code}")


def fault(k: Kernel, proc: Process, what: Fault) -> None:
    """`proc` dies of `what` (a CPU fault, a bad syscall, or an injected fault); the crash watch
    sees it first."""
    if _watch_stops(k, proc, Crash(fault=what)):
        return
    proc.fault = what
    if k.trace.recording:
        k.trace.emit(FAULT, proc.pid, **_fault_fields(proc, what))
    bury(k, proc, RunState.FAULTED)


def _fault_fields(proc: Process, what: Fault) -> dict[str, Any]:
    fields: dict[str, Any] = {"name": proc.name, "fault": what.kind.value, "rip": f"{what.rip:#x}"}
    if proc.image is not None:
        where = proc.image.symbolize(what.rip)
        if where is not None:
            fields["symbol"] = f"{where[0]}+{where[1]:#x}"
    if what.address is not None:
        fields["address"] = f"{what.address:#x}"
    if what.detail:
        fields["detail"] = what.detail
    return fields


def crash_id(proc: Process, icount: int) -> str:
    """The name of a crash and of its dump: the same for the same crash in every run."""
    return f"{proc.name}-pid{proc.pid}-i{icount}"


def _watch_stops(k: Kernel, proc: Process, crash: Crash) -> bool:
    """Tell the crash watch; if it asks, stop the machine with `proc` as it is (back at the
    front of the run queue, so that running on repeats the crash). The crash is named first
    (`crash_id`), so crashd's record of it can name its dump."""
    k.state.dumps[proc.pid] = crash_id(proc, k.state.icount)
    if not k.crash_watch.crashed(proc, crash):
        return False
    k.state.run_queue.appendleft(proc.pid)
    sched.halt(k, "stopped-at-crash", f"stopped at {proc.name}'s crash (pid {proc.pid})")
    return True


def live_guest(k: Kernel, pid: int) -> Process | None:
    """The guest `pid` if it is alive (actors cannot be killed)."""
    target = k.state.procs.get(pid)
    if target is None or target.state.is_dead or not target.is_guest:
        return None
    return target


def kill(k: Kernel, target: Process, by: int) -> None:
    """End `target` on `by`'s order: it dies KILLED."""
    if k.trace.recording:
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
            endpoint.senders = [p for p in endpoint.senders if p.pid != proc.pid]
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
    """A dead process leaves its queue; the caller it owed a reply is answered INTERNAL; its
    engine goes back to the pool (its record stays, with how it ended)."""
    ipc.drop_reply_right(k, proc)
    proc.state = state
    _leave_queue(k, proc)
    if proc.supervisor:
        _tell_supervisor(k, proc)
    for observer in k.observers:
        observer.process_died(proc)
    _give_back_engine(k, proc)
    k.state.dead.append(proc.pid)
    forget_oldest_dead(k)


KEEP_DEAD = 1024
"""Dead processes a kernel keeps in full (`Kernel.keep_dead`); older ones are forgotten."""


def forget_oldest_dead(k: Kernel) -> None:
    """Keep at most `k.keep_dead` dead processes: forget the oldest beyond that (their record,
    capability table and retired CPU; their count and instructions go to `state.forgotten`).

    A buried process is no longer named by anything the kernel acts on: it has left every queue
    and reply right, its CHILD_DIED is queued, and the ops that take a pid answer for a forgotten
    one as for a dead one (`live_guest`, `control.start_process`). Its endpoint may still be
    named by others' capabilities: it becomes an orphan, dropped by `_sweep_orphans` once nothing
    names it. Runs with fewer dead processes than the bound are untouched."""
    state = k.state
    while len(state.dead) > k.keep_dead:
        proc = state.procs.pop(state.dead.popleft())
        cpu = proc.cpu
        retired = cpu.retired if cpu is not None else 0
        state.forgotten = Forgotten(state.forgotten.count + 1, state.forgotten.instructions + retired)
        if proc.endpoint:
            state.orphans.append(proc.endpoint)
    if len(state.orphans) > k.keep_dead + state.orphans_named:
        _sweep_orphans(k)


def _sweep_orphans(k: Kernel) -> None:
    """Drop the orphaned endpoints nothing can reach any more: no capability of a kept process or
    of a queued message names them, no supervisor field or timer, and nobody waits on them."""
    state = k.state
    named: set[int] = set()
    for proc in state.procs.values():
        named.add(proc.supervisor)
        named.update(cap.obj for _, cap in proc.caps.occupied() if cap.cap_type is CapType.ENDPOINT)
    for queue in state.endpoints.values():
        for pending in queue.senders:
            named.update(cap.obj for cap in pending.caps if cap.cap_type is CapType.ENDPOINT)
    named.update(event.endpoint for _, _, event in state.timed if isinstance(event, Timer))
    kept = []
    for obj in state.orphans:
        orphan = state.endpoints.get(obj)
        if orphan is None:
            continue
        if obj in named or orphan.senders or orphan.receivers:
            kept.append(obj)
        else:
            del state.endpoints[obj]
    state.orphans = kept
    state.orphans_named = len(kept)  # the next sweep waits for as many new orphans as a first one


def _give_back_engine(k: Kernel, proc: Process) -> None:
    """`proc` keeps a closed view of its CPU with its counts; the engine goes back to the pool."""
    context = proc.context
    if isinstance(context, GuestContext) and not context.cpu.closed:
        proc.context = GuestContext(context.cpu.retire(), context.image)
        k.engines.release(context.cpu)


def release_engines(k: Kernel) -> None:
    """Every guest's engine back to the pool (see `Kernel.release_engines`)."""
    for proc in k.state.procs.values():
        _give_back_engine(k, proc)
