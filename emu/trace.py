"""Trace events and their two renderings: JSON Lines for tools, aligned text for people.

An event is `seq`, `icount` (instructions retired by the whole machine so far), `pid`, `kind` and
decoded fields in the order they were given. The digest in the summary is the SHA-256 of the JSONL
rendering of every event before it, whichever format is being written, so a text trace and a JSONL
trace of the same run carry the same digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

FORMATS = ("text", "jsonl")
_RESERVED = frozenset({"seq", "icount", "pid", "kind"})


@dataclass(frozen=True)
class Event:
    seq: int
    icount: int
    pid: int
    kind: str
    fields: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "icount": self.icount, "pid": self.pid, "kind": self.kind, **self.fields}


def to_jsonl(event: Event) -> str:
    return json.dumps(event.as_dict(), separators=(",", ":"), ensure_ascii=True)


def _text_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value) if (not value or " " in value or '"' in value) else value
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_text_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_text_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def to_text(event: Event) -> str:
    pid = "-" if event.pid < 0 else str(event.pid)
    details = " ".join(f"{key}={_text_value(value)}" for key, value in event.fields.items())
    return f"{event.seq:>6} {event.icount:>12} {pid:>4}  {event.kind:<16} {details}".rstrip()


TEXT_HEADER = f"{'seq':>6} {'icount':>12} {'pid':>4}  {'kind':<16} details"


class Trace:
    """Collects events in order, stamps them, and feeds the digest."""

    def __init__(self, sink: Callable[[Event], None] | None = None) -> None:
        self._icount: Callable[[], int] = lambda: 0
        self._sink = sink
        self._digest = hashlib.sha256()
        self.events: list[Event] = []

    def bind_clock(self, icount: Callable[[], int]) -> None:
        """Stamp later events with `icount()` (the machine that owns the clock binds it)."""
        self._icount = icount

    def emit(self, kind: str, pid: int, /, **fields: Any) -> Event:
        clash = _RESERVED.intersection(fields)
        if clash:
            raise ValueError(f"event field {sorted(clash)[0]!r} would overwrite the event's own")
        event = Event(len(self.events), self._icount(), pid, kind, fields)
        self.events.append(event)
        self._digest.update(to_jsonl(event).encode() + b"\n")
        if self._sink is not None:
            self._sink(event)
        return event

    def digest(self) -> str:
        return self._digest.hexdigest()

    def of_kind(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]


class TraceWriter:
    """Writes events as they come, to stdout or to a file that appears only when complete.

    A file target is written to a temporary file beside it and renamed over the target on
    `commit()`; `abort()` removes the temporary file, so a failed run never leaves half a trace.
    """

    def __init__(self, fmt: str, out: Path | None) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown trace format {fmt!r}")
        self._render = to_jsonl if fmt == "jsonl" else to_text
        self._out = out
        self._tmp: str | None = None
        self._stream: IO[str]
        if out is None:
            self._stream = sys.stdout
        else:
            fd, self._tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent or Path("."))
            self._stream = os.fdopen(fd, "w", encoding="utf-8", newline="\n")
        self._header = TEXT_HEADER + "\n" if fmt == "text" else ""

    def write(self, event: Event) -> None:
        if self._header:
            self._stream.write(self._header)
            self._header = ""
        self._stream.write(self._render(event) + "\n")

    def commit(self) -> None:
        self._stream.flush()
        if self._tmp is not None and self._out is not None:
            self._stream.close()
            os.replace(self._tmp, self._out)
            self._tmp = None

    def abort(self) -> None:
        if self._tmp is not None:
            self._stream.close()
            os.unlink(self._tmp)
            self._tmp = None
