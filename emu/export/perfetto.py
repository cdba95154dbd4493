"""A run as a Chrome Trace Event Format timeline, for https://ui.perfetto.dev (or chrome://tracing).

Layout: one process track per emulated process (pid P, one thread with tid P, named from its
`process.create`); the kernel gets a track only if an event needs one. The time axis is virtual
time: `ts` in microseconds = cycle / frequency_hz * 1e6, rounded to whole nanoseconds (3 decimals;
slice ends are computed in nanoseconds first, so nested slices nest exactly).

- "running" slices (`X`, cat "sched"): from each `sched.switch` to P until the next switch or
  `sched.idle` (or the last event), with the instructions and cycles the machine advanced
  meanwhile; "idle" slices on the kernel's track for each `sched.idle` interval (nothing ran).
- calls the kernel serves itself (an `ipc.send` to an endpoint the model declares kernel-served,
  `ModelFacts.kernel_served_endpoints`, answered by an `ipc.reply` from the kernel's pid): one
  slice on the caller's track, from the send to the reply.
- IPC: a zero-length slice on each side ("send OP", "recv OP", "reply OP") with the event's fields
  as args, and a flow arrow between them (`s`/`f` with "bp": "e", ids unique per arrow, start and
  end sharing cat and name): ipc.send -> the ipc.recv that took the message (FIFO per endpoint and
  sender, cat "ipc"), and ipc.reply -> the caller (cat "ipc.reply"). A message often lands while
  its receiver is blocked, outside its running slices, hence the zero-length slices: each flow event
  comes right after its own slice at the same timestamp, and Perfetto's importer, which keeps file
  order among zero-length slices, flows and instants of one timestamp, binds it to the slice on top
  of the track's stack, that one. Arrows whose message nobody received are left out.
- syscalls, lifecycle (process.create/start/exit), faults, logs, notifications and any other event
  kind: thread-scoped instant events (`i`, "s": "t").
- `block`/`insn` events are left out; the summary goes to the top-level "otherData".

The output is deterministic (same events, same bytes): keys sorted, one event per line, no host data.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emu.events import (
    BLOCK,
    FAULT,
    IDLE_NAME,
    INSN,
    IPC_RECV,
    IPC_REPLY,
    IPC_SEND,
    KERNEL_PID,
    LOG,
    NO_FACTS,
    PROCESS_CREATE,
    PROCESS_EXIT,
    PROCESS_START,
    SCHED_IDLE,
    SCHED_SWITCH,
    SUMMARY,
    SYSCALL,
    ModelFacts,
)
from emu.export import idle_intervals, name_of, write_text_atomic
from emu.export import process_names as known_names
from emu.export.registry import Destination, Exporter, RunView, register
from emu.trace import Event

_SKIPPED = frozenset({BLOCK, INSN, SUMMARY, SCHED_SWITCH, SCHED_IDLE})
_LIFECYCLE = {PROCESS_CREATE: "create", PROCESS_START: "start", PROCESS_EXIT: "exit"}
_SUMMARY_KEYS = ("stop", "ok", "detail", "instructions", "digest")

TraceEvent = dict[str, Any]


@dataclass(frozen=True)
class Clock:
    """Converts virtual cycles to the format's microseconds, through whole nanoseconds."""

    frequency_hz: int

    def ns(self, cycle: int) -> int:
        """`cycle` in nanoseconds, rounded half up (integer arithmetic: no float drift)."""
        return (cycle * 2_000_000_000 + self.frequency_hz) // (2 * self.frequency_hz)


def _us(ns: int) -> float:
    return ns / 1000


@dataclass
class _Builder:
    """Turns events into trace events, each with a sort key (timestamp, event seq, order within)."""

    clock: Clock
    model: ModelFacts
    out: list[tuple[tuple[int, int, int], TraceEvent]] = field(default_factory=list)
    tracks: set[int] = field(default_factory=set)
    next_flow: int = 1
    pending_sends: dict[tuple[Any, int], deque[tuple[int, str]]] = field(default_factory=dict)
    pending_kernel: dict[int, deque[Event]] = field(default_factory=dict)
    unfinished_flows: dict[int, TraceEvent] = field(default_factory=dict)

    def add(self, event: Event, entry: TraceEvent) -> None:
        """Queue `entry`, made for `event`: sorted by time, then event, then the order of adding."""
        self.tracks.add(entry["pid"])
        self.out.append(((entry["ts_ns"], event.seq, len(self.out)), entry))

    def base(self, ph: str, name: str, cat: str, pid: int, cycle: int, args: Mapping[str, Any] | None) -> TraceEvent:
        entry: TraceEvent = {"ph": ph, "name": name, "cat": cat, "pid": pid, "tid": pid, "ts_ns": self.clock.ns(cycle)}
        if args:
            entry["args"] = dict(args)
        return entry

    def instant(self, event: Event, name: str, cat: str, pid: int | None = None) -> None:
        entry = self.base("i", name, cat, event.pid if pid is None else pid, event.cycle, event.fields)
        entry["s"] = "t"
        self.add(event, entry)

    def slice(self, event: Event, name: str, cat: str, pid: int, end_cycle: int, args: Mapping[str, Any]) -> None:
        """A complete slice on `pid`'s track from `event` to `end_cycle`."""
        entry = self.base("X", name, cat, pid, event.cycle, args)
        entry["dur_ns"] = self.clock.ns(end_cycle) - entry["ts_ns"]
        self.add(event, entry)

    def anchored_flow(self, event: Event, ph: str, flow: int, label: str, name: str, cat: str, pid: int) -> None:
        """A zero-length slice `label` on `pid`'s track at `event`, then one end (`ph`) of flow
        `flow` bound to it."""
        self.slice(event, label, cat, pid, event.cycle, event.fields)
        entry = self.base(ph, name, cat, pid, event.cycle, None)
        entry["id"] = flow
        entry["bp"] = "e"
        self.add(event, entry)
        if ph == "s":
            self.unfinished_flows[flow] = entry
        else:
            self.unfinished_flows.pop(flow, None)

    def finish(self) -> list[TraceEvent]:
        """The sorted trace events, less flow starts that never ended (a message nobody took);
        kernel-served calls that got no reply become zero-length slices."""
        for pending in self.pending_kernel.values():
            for request in pending:
                self.slice(
                    request, str(request.fields.get("op", "?")), "kernel", request.pid, request.cycle, request.fields
                )
        dangling = {id(entry) for entry in self.unfinished_flows.values()}
        self.out.sort(key=lambda item: item[0])
        return [_in_microseconds(entry) for _, entry in self.out if id(entry) not in dangling]

    def new_flow(self) -> int:
        flow, self.next_flow = self.next_flow, self.next_flow + 1
        return flow


def _running_slices(builder: _Builder, events: Sequence[Event]) -> None:
    """A process runs from a switch to it until the next switch or idle interval (or the end);
    an idle interval is an "idle" slice on the kernel's track."""
    marks = [e for e in events if e.kind in (SCHED_SWITCH, SCHED_IDLE)]
    if not marks:
        return
    last = events[-1]
    for mark, following in zip(marks, [*marks[1:], last], strict=True):
        if mark.kind == SCHED_SWITCH:
            args = {"instructions": following.icount - mark.icount, "cycles": following.cycle - mark.cycle}
            builder.slice(mark, "running", "sched", mark.pid, following.cycle, args)
    for idle, until in idle_intervals(events):
        builder.slice(idle, IDLE_NAME, "sched", KERNEL_PID, until, {"cycles": until - idle.cycle})


def _ipc_send(builder: _Builder, event: Event) -> None:
    op = str(event.fields.get("op", "?"))
    endpoint = event.fields.get("endpoint")
    if isinstance(endpoint, str) and endpoint in builder.model.kernel_served_endpoints:
        builder.pending_kernel.setdefault(event.pid, deque()).append(event)
        return
    flow = builder.new_flow()
    builder.anchored_flow(event, "s", flow, f"send {op}", op, "ipc", event.pid)
    builder.pending_sends.setdefault((endpoint, event.pid), deque()).append((flow, op))


def _ipc_recv(builder: _Builder, event: Event) -> None:
    op = str(event.fields.get("op", "?"))
    queue = builder.pending_sends.get((event.fields.get("endpoint"), event.fields.get("sender", -1)))
    if queue:
        flow, sent_op = queue.popleft()
        builder.anchored_flow(event, "f", flow, f"recv {op}", sent_op, "ipc", event.pid)
    else:
        builder.slice(event, f"recv {op}", "ipc", event.pid, event.cycle, event.fields)


def _ipc_reply(builder: _Builder, event: Event) -> None:
    caller = event.fields.get("to")
    op = str(event.fields.get("op", "(dropped)"))
    pending = builder.pending_kernel.get(caller) if isinstance(caller, int) else None
    if event.pid == KERNEL_PID and pending:
        request = pending.popleft()
        args = {**request.fields, "reply": dict(event.fields)}
        builder.slice(request, op, "kernel", request.pid, event.cycle, args)
        return
    if event.pid == KERNEL_PID or not isinstance(caller, int):
        builder.instant(event, f"reply {op}", "ipc", caller if isinstance(caller, int) else None)
        return
    flow = builder.new_flow()
    builder.anchored_flow(event, "s", flow, f"reply {op}", op, "ipc.reply", event.pid)
    builder.anchored_flow(event, "f", flow, f"reply {op}", op, "ipc.reply", caller)


def _other(builder: _Builder, event: Event) -> None:
    if event.kind in _LIFECYCLE:
        builder.instant(event, _LIFECYCLE[event.kind], "process")
    elif event.kind == FAULT:
        builder.instant(event, f"fault {event.fields.get('fault', '?')}", "process")
    elif event.kind == SYSCALL:
        builder.instant(event, str(event.fields.get("name", "syscall")), "syscall")
    elif event.kind == LOG:
        builder.instant(event, str(event.fields.get("text", "")) or "log", "log")
    else:
        builder.instant(event, event.kind, event.kind.split(".")[0])


def _metadata(pid: int, name: str) -> list[TraceEvent]:
    common = {"pid": pid, "tid": pid, "ph": "M"}
    return [
        {**common, "name": "process_name", "args": {"name": name}},
        {**common, "name": "process_sort_index", "args": {"sort_index": pid}},
        {**common, "name": "thread_name", "args": {"name": name}},
    ]


def _in_microseconds(entry: TraceEvent) -> TraceEvent:
    """Replace the builder's nanosecond fields with the format's microseconds."""
    done = {k: v for k, v in entry.items() if k not in ("ts_ns", "dur_ns")}
    done["ts"] = _us(entry["ts_ns"])
    if "dur_ns" in entry:
        done["dur"] = _us(entry["dur_ns"])
    return done


def perfetto_trace(
    events: Iterable[Event],
    frequency_hz: int,
    process_names: Mapping[int, str] | None = None,
    model: ModelFacts = NO_FACTS,
) -> dict[str, Any]:
    """The trace as a JSON-ready object: {"displayTimeUnit", "traceEvents", "otherData"}.
    `process_names` (pid -> name) overrides the names the events give; `model` is what the world
    declared about its events (which calls the kernel serves)."""
    if frequency_hz <= 0:
        raise ValueError(f"frequency_hz must be positive, not {frequency_hz}")
    events = list(events)
    names = known_names(events, process_names)
    builder = _Builder(Clock(frequency_hz), model)
    if events:
        _running_slices(builder, events)
    handlers = {IPC_SEND: _ipc_send, IPC_RECV: _ipc_recv, IPC_REPLY: _ipc_reply}
    for event in events:
        if event.kind in _SKIPPED:
            continue
        handlers.get(event.kind, _other)(builder, event)
    timed = builder.finish()
    trace_events = [m for pid in sorted(builder.tracks) for m in _metadata(pid, name_of(pid, names))]
    trace_events.extend(timed)
    other: dict[str, Any] = {"clock": "virtual", "frequency_hz": frequency_hz}
    for event in events:
        if event.kind == SUMMARY:
            other.update({key: event.fields[key] for key in _SUMMARY_KEYS if key in event.fields})
    return {"displayTimeUnit": "ns", "traceEvents": trace_events, "otherData": other}


def render_perfetto(
    events: Iterable[Event],
    frequency_hz: int,
    process_names: Mapping[int, str] | None = None,
    model: ModelFacts = NO_FACTS,
) -> str:
    """The trace as JSON text: deterministic, one trace event per line."""
    trace = perfetto_trace(events, frequency_hz, process_names, model)
    dump = _dumps
    lines = ",\n".join(dump(entry) for entry in trace["traceEvents"])
    return (
        f'{{"displayTimeUnit":{dump(trace["displayTimeUnit"])},\n"traceEvents":[\n{lines}\n],\n'
        f'"otherData":{dump(trace["otherData"])}}}\n'
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def write_perfetto(
    events: Iterable[Event],
    path: Path | str,
    frequency_hz: int,
    process_names: Mapping[int, str] | None = None,
    model: ModelFacts = NO_FACTS,
) -> None:
    """Write the timeline of `events` to `path` (atomically). `process_names` overrides trace names."""
    write_text_atomic(path, render_perfetto(events, frequency_hz, process_names, model))


def _export(run: RunView) -> str:
    return render_perfetto(run.events, run.frequency_hz, run.names, run.model)


register(
    Exporter(
        "--perfetto",
        "also write the run as a Perfetto timeline (Chrome trace JSON) to FILE",
        Destination.FILE,
        _export,
        rank=10,
    )
)
