"""Checkpoints of a whole kernel, restored in place: its plain-data state, its guests' engines,
its actors' buffers and what it injects.

`take(k)` copies the state with `snapshot_state` (hand-written copies of the plain data, no
`copy.deepcopy`), keeps a reference to every live object (processes, endpoints, notifications:
others hold them, e.g. a harness its doorbell, so a restore writes their fields back instead of
replacing them), copies each actor's IPC buffer and pending result, and takes each live guest's
engine state (`EngineState`: registers, the volatile pages, the counters). The engines are
pinned in the pool, so a guest that dies after the checkpoint keeps its engine for a restore.

`restore(k, checkpoint)` puts all of it back: the same objects with their fields as they were,
the processes created since gone (their engines back to the pool), each engine restored with
only the pages written since. An actor's generator cannot be copied: restoring is exact when
each actor is suspended where it was at the checkpoint (the harness checks; see
procd_model/world_snapshot.py).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from emu.engine_state import EngineState
from procd_model.kernel.inject import ScriptedFaults
from procd_model.kernel.state import (
    ActorContext,
    Endpoint,
    GuestContext,
    KernelState,
    Notification,
    Process,
    snapshot_state,
)

if TYPE_CHECKING:
    from procd_model.kernel.core import Kernel


@dataclass(frozen=True)
class ActorSaved:
    buffer: bytes
    result: object
    started: bool


@dataclass(frozen=True)
class KernelCheckpoint:
    state: KernelState
    """The plain-data copy (its processes' contexts are the live ones at the checkpoint)."""
    procs: dict[int, Process]
    endpoints: dict[int, Endpoint]
    notifications: dict[int, Notification]
    actors: dict[int, ActorSaved]
    engines: dict[int, tuple[EngineState, tuple[int, int] | None]]
    """Each live guest's engine state, and where its pending syscall was entered."""
    injected: ScriptedFaults | None


def _copy_faults(faults: ScriptedFaults) -> ScriptedFaults:
    return ScriptedFaults(dict(faults.kill_at), {image: list(q) for image, q in faults.create_failures.items()})


def take(k: Kernel) -> KernelCheckpoint:
    state = k.state
    actors: dict[int, ActorSaved] = {}
    engines: dict[int, tuple[EngineState, tuple[int, int] | None]] = {}
    for pid, proc in state.procs.items():
        context = proc.context
        if isinstance(context, ActorContext):
            actors[pid] = ActorSaved(bytes(context.buffer), context.result, context.started)
        elif not context.cpu.closed:
            engines[pid] = (context.cpu.save_state(), context.entry)
            k.engines.pin(context.cpu)
    injected = _copy_faults(k.injector) if isinstance(k.injector, ScriptedFaults) else None
    return KernelCheckpoint(
        snapshot_state(state),
        dict(state.procs),
        dict(state.endpoints),
        dict(state.notifications),
        actors,
        engines,
        injected,
    )


def _put_process(live: Process, saved: Process) -> None:
    """Every field of `saved` into `live` (capability tables copied: the checkpoint keeps its own)."""
    live.name, live.caps, live.context = saved.name, saved.caps.copy(), saved.context
    live.endpoint, live.supervisor, live.fault_at = saved.endpoint, saved.supervisor, saved.fault_at
    live.state, live.waiting, live.reply_to, live.reply_op = saved.state, saved.waiting, saved.reply_to, saved.reply_op
    live.exit_code, live.fault, live.last_log = saved.exit_code, saved.fault, saved.last_log


def _release_newer_engines(k: Kernel, checkpoint: KernelCheckpoint) -> None:
    """Guests created since the checkpoint go; their live engines return to the pool."""
    for pid, proc in k.state.procs.items():
        if pid not in checkpoint.procs and isinstance(proc.context, GuestContext) and not proc.context.cpu.closed:
            cpu = proc.context.cpu
            proc.context = GuestContext(cpu.retire(), proc.context.image)
            k.engines.release(cpu)


def restore(k: Kernel, checkpoint: KernelCheckpoint) -> None:
    _release_newer_engines(k, checkpoint)
    saved, state = checkpoint.state, k.state
    for pid, live in checkpoint.procs.items():
        _put_process(live, saved.procs[pid])
        if pid in checkpoint.actors:
            actor, context = checkpoint.actors[pid], live.context
            assert isinstance(context, ActorContext)
            context.buffer[:] = actor.buffer
            context.result, context.started = actor.result, actor.started  # type: ignore[assignment]
        elif pid in checkpoint.engines:
            assert isinstance(live.context, GuestContext)
            engine, live.context.entry = checkpoint.engines[pid]
            live.context.cpu.restore_state(engine)
    for obj, endpoint in checkpoint.endpoints.items():
        endpoint.senders = list(saved.endpoints[obj].senders)
        endpoint.receivers = list(saved.endpoints[obj].receivers)
    for obj, notification in checkpoint.notifications.items():
        notification.word = saved.notifications[obj].word
        notification.waiters = list(saved.notifications[obj].waiters)
    state.procs, state.endpoints = dict(checkpoint.procs), dict(checkpoint.endpoints)
    state.notifications = dict(checkpoint.notifications)
    state.run_queue, state.timed, state.logs = deque(saved.run_queue), list(saved.timed), list(saved.logs)
    state.timed_order, state.icount, state.clock = saved.timed_order, saved.icount, saved.clock
    state.running, state.last_ran, state.next_pid, state.next_obj = (
        saved.running,
        saved.last_ran,
        saved.next_pid,
        saved.next_obj,
    )
    state.root, state.halt, state.turn_left = saved.root, saved.halt, saved.turn_left
    state.dead, state.forgotten, state.orphans = deque(saved.dead), saved.forgotten, list(saved.orphans)
    state.logs_dropped, state.orphans_named = saved.logs_dropped, saved.orphans_named
    state.dumps.clear()  # in place: crashd holds the dict's `get`
    state.dumps.update(saved.dumps)
    if checkpoint.injected is not None:
        k.injector = _copy_faults(checkpoint.injected)


def discard(k: Kernel, checkpoint: KernelCheckpoint) -> None:
    """The checkpoint will not be restored again: its engines may serve other guests once dead."""
    for pid in checkpoint.engines:
        context = checkpoint.state.procs[pid].context
        assert isinstance(context, GuestContext)
        live = k.state.procs.get(pid)
        still_used = live is not None and live.context is context and not live.state.is_dead
        k.engines.unpin(context.cpu, dead=not still_used)
