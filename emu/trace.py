"""Trace events and their two renderings: JSON Lines for tools, aligned text for people.

An event is `seq`, `icount` (instructions retired by the whole machine so far), `cycle` (virtual
time in cycles), `pid`, `kind` and decoded fields in the order they were given. The digest in the
summary is the SHA-256 of the run's stream (`Trace`): the JSONL lines a `--trace syscall` trace has
before its summary, whatever level, filter or format is being written, so every view of the same
run carries the same digest.
"""

from __future__ import annotations

import enum
import hashlib
import json
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

import orjson

from emu.events import BLOCK, INSN, SUMMARY, SYSCALL

FORMATS = ("text", "jsonl")
RECENT_EVENTS = 64
"""How many of the run's latest events `Trace.recent` keeps (a crash dump shows them)."""


class Level(enum.IntEnum):
    """How much a trace shows. Each level includes the ones before it."""

    NONE = -1
    """the summary alone"""
    IPC = 0
    """process lifecycle, messages, notifications, logs, faults, scheduling, the summary"""
    SYSCALL = 1
    """plus every syscall"""
    BLOCK = 2
    """plus every executed translation block"""
    INSN = 3
    """plus every executed instruction"""


LEVELS = {level.name.lower(): level for level in Level}
_KIND_LEVEL = {SYSCALL: Level.SYSCALL, BLOCK: Level.BLOCK, INSN: Level.INSN, SUMMARY: Level.NONE}
_RESERVED = frozenset({"seq", "icount", "cycle", "pid", "kind"})
_OUTSIDE_THE_RUN = frozenset({BLOCK, INSN, SUMMARY})
"""Kinds that are not part of the run's stream (the digest): views of it, and the summary itself."""


@dataclass(slots=True)
class Event:
    seq: int
    icount: int
    cycle: int
    pid: int
    kind: str
    fields: dict[str, Any] = field(default_factory=dict)
    data: object = None
    """Typed data its producer attached for readers that know the model (e.g. the message a
    kernel moved); never rendered and not in the digest: `fields` are what the trace shows."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "icount": self.icount,
            "cycle": self.cycle,
            "pid": self.pid,
            "kind": self.kind,
            **self.fields,
        }


_KIND_JSON: dict[str, bytes] = {}


def jsonl_line(event: Event) -> bytes:
    """The event as one compact JSON object in UTF-8, keys in order (no newline)."""
    return _render(event.seq, event.icount, event.cycle, event.pid, event.kind, event.fields)


def _render(seq: int, icount: int, cycle: int, pid: int, kind: str, fields: dict[str, Any]) -> bytes:
    """orjson renders the fields (this runs for every event); the fixed head is formatted directly."""
    kind_json = _KIND_JSON.get(kind)
    if kind_json is None:
        kind_json = _KIND_JSON[kind] = orjson.dumps(kind)
    head = b'{"seq":%d,"icount":%d,"cycle":%d,"pid":%d,"kind":%s' % (seq, icount, cycle, pid, kind_json)
    if not fields:
        return head + b"}"
    return head + b"," + orjson.dumps(fields)[1:]


def text_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value) if (not value or " " in value or '"' in value) else value
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(text_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{text_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def to_text(event: Event) -> str:
    pid = "-" if event.pid < 0 else str(event.pid)
    details = " ".join(f"{key}={text_value(value)}" for key, value in event.fields.items())
    return f"{event.seq:>6} {event.icount:>12} {event.cycle:>12} {pid:>4}  {event.kind:<16} {details}".rstrip()


TEXT_HEADER = f"{'seq':>6} {'icount':>12} {'cycle':>12} {'pid':>4}  {'kind':<16} details"


class TraceSink(Protocol):
    """Where a trace's lines go (a TraceWriter)."""

    wants_text: bool
    """True if `write` renders text and so needs the Event itself, not only its JSONL line."""

    def write(self, event: Event | None, jsonl: bytes) -> None:
        """One event, with its JSONL line (no newline) already rendered."""

    def write_raw(self, jsonl: bytes, text: bytes) -> None:
        """Whole lines already rendered in both formats."""


@dataclass(frozen=True)
class TraceMark:
    """A point in a trace (`Trace.mark`): seqs, the digest so far, the events kept so far and the
    latest events' lines (what a crash dump shows)."""

    next_seq: int
    run_seq: int
    digest: Any
    events: tuple[Event, ...]
    recent: tuple[bytes, ...] = ()


class Trace:
    """Collects events in order, stamps them, and feeds the digest and the sink.

    Two streams come out of the same calls. The **run's stream** is every event at level
    `syscall`, of every process, numbered from 0: it is what the digest covers and what `events`
    keeps for the exporters, whatever is shown, so the digest and the exports identify the run,
    not the view of it. The **shown stream** is what the level and the pid filter let through,
    numbered from 0 on its own, and goes to the sink. At level `syscall` with no filter the two
    are the same lines and each event is rendered once.
    """

    def __init__(
        self, sink: TraceSink | None = None, level: Level = Level.SYSCALL, *, keep: bool = True, pid: int | None = None
    ) -> None:
        """`keep=False` streams events to the sink without keeping them (long runs: memory, and the
        garbage collector's work grows with every object kept alive). `pid` shows only the events
        of that process (and the summary)."""
        self.level = level
        self.pid = pid
        self._keep = keep
        self._icount: Callable[[], int] = lambda: 0
        self._cycle: Callable[[], int] = lambda: 0
        self._sink = sink
        self._sink_needs_events = sink is not None and sink.wants_text
        self._hidden = frozenset(kind for kind, shown in _KIND_LEVEL.items() if shown > level)
        self._shows_ipc = level >= Level.IPC
        self._digest = hashlib.sha256()
        self._pending: list[bytes] = []
        """JSONL lines not yet hashed (hashing in batches is much cheaper than per event)."""
        self.next_seq = 0
        """The seq of the next shown event."""
        self.run_seq = 0
        """The seq of the next event of the run's stream."""
        self.events: list[Event] = []
        """The run's stream (level syscall, unfiltered) and the summary, if `keep`."""
        self.recording = True
        """False for `Trace.off()`: producers then build no event and no field (the lean path)."""
        self.recent: deque[bytes] = deque(maxlen=RECENT_EVENTS)
        """The JSONL lines of the run's latest RECENT_EVENTS events, whatever `keep` says."""

    @classmethod
    def off(cls) -> Trace:
        """A trace that records nothing: no event, no digest (its `digest()` is empty). Producers
        check `recording` before building an event's fields; `emit` ignores what reaches it."""
        trace = cls(level=Level.NONE, keep=False)
        trace.recording = False
        return trace

    def mark(self) -> TraceMark:
        """Where the trace is now: `rewind` brings it back here (a world snapshot's restore).
        Lines already written to the sink stay written."""
        self._hash_pending()
        return TraceMark(self.next_seq, self.run_seq, self._digest.copy(), tuple(self.events), tuple(self.recent))

    def rewind(self, mark: TraceMark) -> None:
        """Back to `mark`: the same seqs, digest and kept events as then."""
        self.next_seq, self.run_seq = mark.next_seq, mark.run_seq
        self._digest, self._pending = mark.digest.copy(), []
        self.events[:] = mark.events
        self.recent.clear()
        self.recent.extend(mark.recent)

    def bind_clock(self, icount: Callable[[], int], cycle: Callable[[], int]) -> None:
        """Stamp later events with `icount()` and `cycle()` (the machine that owns the clock binds it)."""
        self._icount = icount
        self._cycle = cycle

    def wants(self, kind: str) -> bool:
        """True if an event of `kind` is recorded at all (shown, or part of the run's stream)."""
        return self.recording and (kind not in _OUTSIDE_THE_RUN or self._shows(kind))

    def _shows(self, kind: str) -> bool:
        return kind not in self._hidden and (kind in _KIND_LEVEL or self._shows_ipc)

    def emit(self, kind: str, pid: int, data: object = None, /, **fields: Any) -> None:
        """Record an event stamped with the machine's clock now; `data` is kept with it, unrendered
        (see `Event.data`)."""
        if self.recording:
            self._record(self._icount(), self._cycle(), kind, pid, fields, data)

    def emit_at(self, icount: int, cycle: int, kind: str, pid: int, /, **fields: Any) -> None:
        """Record an event with explicit stamps (for events observed inside a running guest)."""
        if self.recording:
            self._record(icount, cycle, kind, pid, fields)

    def _record(
        self, icount: int, cycle: int, kind: str, pid: int, fields: dict[str, Any], data: object = None
    ) -> None:
        if not _RESERVED.isdisjoint(fields):
            clash = sorted(_RESERVED.intersection(fields))[0]
            raise ValueError(f"event field {clash!r} would overwrite the event's own")
        line = None
        run_seq = self.run_seq
        if kind not in _OUTSIDE_THE_RUN:
            self.run_seq = run_seq + 1
            line = _render(run_seq, icount, cycle, pid, kind, fields)
            pending = self._pending
            pending.append(line)
            self.recent.append(line)
            if len(pending) >= 512:
                self._hash_pending()
            if self._keep:
                self.events.append(Event(run_seq, icount, cycle, pid, kind, fields, data))
        elif kind == SUMMARY and self._keep:
            self.events.append(Event(run_seq, icount, cycle, pid, kind, fields))
        if not self._shows(kind) or (self.pid is not None and pid != self.pid and kind != SUMMARY):
            return
        seq = self.next_seq
        self.next_seq = seq + 1
        if line is None or seq != run_seq:
            line = _render(seq, icount, cycle, pid, kind, fields)
        if self._sink is not None:
            event = Event(seq, icount, cycle, pid, kind, fields) if self._sink_needs_events else None
            self._sink.write(event, line)

    def _hash_pending(self) -> None:
        if self._pending:
            self._pending.append(b"")
            self._digest.update(b"\n".join(self._pending))
            self._pending = []

    def feed(self, count: int, jsonl: bytes, text: bytes) -> None:
        """Take `count` shown instruction events already rendered (seq from `next_seq` on) in both formats."""
        self.next_seq += count
        if self._sink is not None:
            self._sink.write_raw(jsonl, text)

    def digest(self) -> str:
        """The SHA-256 of the run's stream so far: its JSONL lines, each ending in a newline
        ("" for `Trace.off()`, which hashes nothing)."""
        if not self.recording:
            return ""
        self._hash_pending()
        return self._digest.hexdigest()

    def of_kind(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]


class TraceWriter:
    """Writes events as they come to a byte stream (stdout by default).

    Where the stream goes, and whether a file appears only when complete, is `emu.output`'s
    business. Output is UTF-8 bytes with "\n" line ends on every platform.
    """

    def __init__(self, fmt: str, stream: IO[bytes] | None = None) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown trace format {fmt!r}")
        self.wants_text = fmt == "text"
        self._stream: IO[bytes] = stream if stream is not None else sys.stdout.buffer
        self._header = (TEXT_HEADER + "\n").encode() if fmt == "text" else b""

    def _start(self) -> None:
        if self._header:
            self._stream.write(self._header)
            self._header = b""

    def write(self, event: Event | None, jsonl: bytes) -> None:
        self._start()
        if self.wants_text:
            assert event is not None  # wants_text makes the trace pass it
            self._stream.write((to_text(event) + "\n").encode("utf-8"))
        else:
            self._stream.write(jsonl + b"\n")

    def write_raw(self, jsonl: bytes, text: bytes) -> None:
        """Write pre-rendered lines (the format this writer writes)."""
        self._start()
        self._stream.write(text if self.wants_text else jsonl)

    def flush(self) -> None:
        self._stream.flush()
