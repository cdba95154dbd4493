"""Snapshots of a booted world (a `Conversation`), restored in process.

`take(talk)` saves the kernel (`Kernel.checkpoint`: state, engines, actors' buffers), the trace
(`Trace.mark`), rootd's, the peers' and the harness's plain data, and where every actor's
generator is suspended. `restore(talk, snapshot)` puts all of it back; the machine then behaves
exactly as it did when the snapshot was taken: the same requests give the same trace, byte for
byte, as after a fresh boot (tests/test_world_snapshot.py).

Generators cannot be copied. Between requests each actor of a Conversation waits at one place
(rootd in its WAIT loop, the client on its doorbell, each peer in its RECV/REPLY_RECV), and its
locals there are overwritten before they are read, so the same suspended generator serves any
restore. `restore` checks that every actor is suspended where it was and raises
`SnapshotError` otherwise (for example a snapshot taken while an actor was in the middle of
something).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from types import FrameType, GeneratorType
from typing import TYPE_CHECKING, Any

from emu.trace import TraceMark
from procd_model.kernel import ActorContext, Process
from procd_model.kernel.checkpoint import KernelCheckpoint

if TYPE_CHECKING:
    from procd_model.client import Conversation
    from procd_model.rootd import Rootd


class SnapshotError(RuntimeError):
    """A snapshot cannot be restored exactly (an actor is not suspended where it was)."""


Position = tuple[tuple[Any, int], ...]
"""Each generator of an actor's chain with the instruction offset it is suspended at."""


def _chain(generator: Any, out: list[Any]) -> None:
    """`generator`, the generators it delegates to (`yield from`) and those it drives (held in
    its locals, as rootd's program drives its bootstrap steps)."""
    out.append(generator)
    frame: FrameType | None = generator.gi_frame
    if frame is None:
        return
    inner = generator.gi_yieldfrom
    if isinstance(inner, GeneratorType):
        _chain(inner, out)
    for value in frame.f_locals.values():
        if isinstance(value, GeneratorType) and value is not inner and value not in out:
            _chain(value, out)


def position(generator: Any) -> Position:
    """Where an actor's generators are suspended (-1 for a finished one)."""
    chain: list[Any] = []
    _chain(generator, chain)
    return tuple((g, g.gi_frame.f_lasti if g.gi_frame is not None else -1) for g in chain)


def still_at(where: Position) -> bool:
    """Each generator of the chain is suspended where it was (cheap: no locals are read)."""
    return all((g.gi_frame.f_lasti if g.gi_frame is not None else -1) == lasti for g, lasti in where)


def _actor_positions(procs: dict[int, Process]) -> dict[int, Position]:
    return {
        pid: position(proc.context.program)
        for pid, proc in procs.items()
        if isinstance(proc.context, ActorContext) and not proc.state.is_dead
    }


@dataclass(frozen=True)
class RootdSaved:
    procd_pid: int
    ready: bool
    finished: bool
    spawned: tuple[Any, ...]
    problems: tuple[str, ...]
    probes_completed: int
    bits: int
    halt_reason: str | None
    foundation: tuple[tuple[int, str], ...]
    supervises: bool


def _save_rootd(rootd: Rootd) -> RootdSaved:
    return RootdSaved(
        rootd.procd_pid,
        rootd.ready,
        rootd.finished,
        tuple(replace(record) for record in rootd.spawned),
        tuple(rootd.problems),
        rootd.probes_completed,
        rootd.bits,
        rootd.halt_reason,
        tuple(rootd.foundation.items()),
        rootd.supervises,
    )


def _put_rootd(rootd: Rootd, saved: RootdSaved) -> None:
    rootd.procd_pid, rootd.ready, rootd.finished = saved.procd_pid, saved.ready, saved.finished
    rootd.spawned = [replace(record) for record in saved.spawned]
    rootd.problems, rootd.probes_completed = list(saved.problems), saved.probes_completed
    rootd.bits, rootd.halt_reason = saved.bits, saved.halt_reason
    rootd.foundation, rootd.supervises = dict(saved.foundation), saved.supervises


@dataclass(frozen=True)
class PeersSaved:
    names: tuple[tuple[bytes, int], ...] | None
    crash_records: tuple[tuple[int, bytes], ...] | None
    crash_reported: int


def _save_peers(rootd: Rootd) -> PeersSaved:
    names = tuple(rootd.named.names.items()) if rootd.named is not None else None
    if rootd.services is None:
        return PeersSaved(names, None, 0)
    crashd = rootd.services.crashd
    return PeersSaved(names, tuple(crashd.records), crashd.reported)


def _put_peers(rootd: Rootd, saved: PeersSaved) -> None:
    if rootd.named is not None and saved.names is not None:
        rootd.named.names = dict(saved.names)
    if rootd.services is not None and saved.crash_records is not None:
        crashd = rootd.services.crashd
        crashd.records = deque(saved.crash_records, maxlen=crashd.records.maxlen)
        crashd.reported = saved.crash_reported


@dataclass(frozen=True)
class WorldSnapshot:
    kernel: KernelCheckpoint
    trace: TraceMark
    rootd: RootdSaved
    peers: PeersSaved
    replies: tuple[int, tuple[Any, ...]]
    outbox: tuple[Any, ...]
    stop: Any
    positions: dict[int, Position]


def take(talk: Conversation) -> WorldSnapshot:
    kernel = talk.kernel
    return WorldSnapshot(
        kernel.checkpoint(),
        talk.trace.mark(),
        _save_rootd(talk.rootd),
        _save_peers(talk.rootd),
        talk.replies.save(),
        tuple(talk._outbox),
        talk.stop,
        _actor_positions(kernel.procs),
    )


def restore(talk: Conversation, snapshot: WorldSnapshot) -> None:
    kernel = talk.kernel
    for pid, where in snapshot.positions.items():
        if not still_at(where):
            proc = snapshot.kernel.procs[pid]
            raise SnapshotError(f"actor {proc.name} (pid {pid}) is not suspended where it was at the snapshot")
    kernel.restore(snapshot.kernel)
    talk.trace.rewind(snapshot.trace)
    _put_rootd(talk.rootd, snapshot.rootd)
    _put_peers(talk.rootd, snapshot.peers)
    talk.replies.put(snapshot.replies)
    talk._outbox.clear()
    talk._outbox.extend(snapshot.outbox)
    talk.stop = snapshot.stop
