"""Where a run's instructions and virtual time went: per served operation and per process.

Attribution. The machine stamps every event with its instruction count and virtual clock. The
process that is *current* is the pid of the latest `sched.switch` (the kernel, pid 0, before the
first one and after an idle interval); everything the machine retires or spends between two
consecutive events is charged to the process current in between (`Ledger`). So:

- a process's **instructions** are exactly the ones it retired (instructions only advance while a
  guest runs; actors retire none);
- a process's **cycles** are the virtual time that passed while it was current: its own
  instructions plus the kernel work done meanwhile (its syscalls, IPC copies, kernel-control
  operations) and the context switch away from it (the kernel charges a switch before emitting
  `sched.switch`, so it lands in the outgoing process's interval). Time before the first switch is
  the kernel's.
- **idle** time is not any process's: a `sched.idle` event says nothing was ready from its cycle
  to its `until` cycle (virtual time jumped to the next timer or interrupt); that interval is
  charged to the idle row (IDLE_PID), and the kernel is current from then on until the next
  `sched.switch` (it delivers what came due). Summed over all rows, idle included, cycles add up
  to the clock at the last event.

Operations. An operation is opened by an `ipc.recv` of process P (named by the event's `op`) and
closed by P's next `ipc.reply` (a call answered, or its reply right dropped), P blocking in a
receive again (a syscall the model declares a receive, `ModelFacts.receive_syscalls`) or P's
next `ipc.recv` (a one-way message needs no reply: P is done with it when it waits for, or takes,
the next one), or P's exit or fault. Its cost is what the ledger charged to P in between, so time
P spent blocked, or others spent running, is not in it. Operations still open when the events end are left out.

Pass the whole event list including the summary: without it, whatever ran after the last event
(for example up to an instruction limit) is not charged to anyone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from emu.events import (
    FAULT,
    IDLE_PID,
    IPC_RECV,
    IPC_REPLY,
    IPC_SEND,
    KERNEL_PID,
    NO_FACTS,
    PROCESS_EXIT,
    SCHED_IDLE,
    SCHED_SWITCH,
    SUMMARY,
    SYSCALL,
    ModelFacts,
)
from emu.export import name_of, process_names
from emu.export.registry import Destination, Exporter, RunView, register
from emu.trace import Event

_CLOSES_OPERATION = frozenset({IPC_REPLY, IPC_RECV, PROCESS_EXIT, FAULT})


def _closes_operation(event: Event, model: ModelFacts) -> bool:
    if event.kind == SYSCALL:  # back in a receive, waiting for the next message
        name = event.fields.get("name")
        return event.fields.get("status") == "blocked" and isinstance(name, str) and name in model.receive_syscalls
    return event.kind in _CLOSES_OPERATION


@dataclass(frozen=True)
class Spend:
    """Instructions retired and virtual cycles spent."""

    instructions: int = 0
    cycles: int = 0

    def __add__(self, other: Spend) -> Spend:
        return Spend(self.instructions + other.instructions, self.cycles + other.cycles)

    def __sub__(self, other: Spend) -> Spend:
        return Spend(self.instructions - other.instructions, self.cycles - other.cycles)


class Ledger:
    """Charges the machine's progress between consecutive events to the process current then,
    and idle intervals (`sched.idle`) to IDLE_PID."""

    def __init__(self) -> None:
        self.current = KERNEL_PID
        self._stamp = Spend()
        self._spent: dict[int, Spend] = {}
        self._idle_until: int | None = None

    def observe(self, event: Event) -> None:
        """Account for the progress up to `event`, then follow it if it is a `sched.switch` or
        `sched.idle`."""
        stamp = Spend(event.icount, event.cycle)
        if self._idle_until is not None:
            woke = Spend(self._stamp.instructions, max(self._stamp.cycles, min(self._idle_until, stamp.cycles)))
            self._charge(IDLE_PID, woke - self._stamp)
            self._stamp, self._idle_until = woke, None
            self.current = KERNEL_PID  # the kernel delivers what came due, until the next switch
        self._charge(self.current, stamp - self._stamp)
        self._stamp = stamp
        if event.kind == SCHED_SWITCH:
            self.current = event.pid
        elif event.kind == SCHED_IDLE:
            until = event.fields.get("until")
            self._idle_until = until if isinstance(until, int) else event.cycle

    def _charge(self, pid: int, spend: Spend) -> None:
        self._spent[pid] = self.spent(pid) + spend

    def spent(self, pid: int) -> Spend:
        """What has been charged to `pid` so far."""
        return self._spent.get(pid, Spend())

    def pids(self) -> list[int]:
        return sorted(self._spent)


@dataclass(frozen=True)
class Percentiles:
    """Nearest-rank percentiles of integer samples."""

    p50: int
    p99: int
    max: int

    @classmethod
    def of(cls, samples: Sequence[int]) -> Percentiles:
        ordered = sorted(samples)
        return cls(nearest_rank(ordered, 50), nearest_rank(ordered, 99), ordered[-1])


def nearest_rank(ordered: Sequence[int], percent: int) -> int:
    """The nearest-rank `percent`th percentile of the non-empty, sorted `ordered`."""
    rank = max(1, -(-percent * len(ordered) // 100))
    return ordered[rank - 1]


@dataclass(frozen=True)
class OperationRow:
    op: str
    count: int
    instructions: Percentiles
    cycles: Percentiles


@dataclass(frozen=True)
class ProcessRow:
    pid: int
    name: str
    instructions: int
    cycles: int
    syscalls: int
    sent: int
    """`ipc.send` events by the process (calls and one-way sends, to endpoints or the kernel)."""
    received: int
    """`ipc.recv` events by the process."""
    replied: int
    """`ipc.reply` events by the process (not counting replies the kernel dropped for it)."""
    end: str
    """"exit N", "fault KIND", the state the summary gives, or "-"."""


def operation_samples(events: Iterable[Event], model: ModelFacts = NO_FACTS) -> dict[str, list[Spend]]:
    """op -> the receiver's own spend for each completed operation, in trace order."""
    ledger = Ledger()
    open_ops: dict[int, tuple[str, Spend]] = {}
    samples: dict[str, list[Spend]] = {}
    for event in events:
        ledger.observe(event)
        if event.pid in open_ops and _closes_operation(event, model):
            op, start = open_ops.pop(event.pid)
            samples.setdefault(op, []).append(ledger.spent(event.pid) - start)
        if event.kind == IPC_RECV:
            open_ops[event.pid] = (str(event.fields.get("op", "?")), ledger.spent(event.pid))
    return samples


def operation_stats(events: Iterable[Event], model: ModelFacts = NO_FACTS) -> list[OperationRow]:
    """One row per `op` received, sorted by op name."""
    rows = []
    for op, spends in sorted(operation_samples(events, model).items()):
        rows.append(
            OperationRow(
                op,
                len(spends),
                Percentiles.of([s.instructions for s in spends]),
                Percentiles.of([s.cycles for s in spends]),
            )
        )
    return rows


def process_stats(events: Sequence[Event], names: Mapping[int, str] | None = None) -> list[ProcessRow]:
    """One row per process, by pid; a kernel row (pid 0) only when time was charged to it; last,
    an idle row (pid IDLE_PID) when the machine was ever idle."""
    ledger = Ledger()
    counts: dict[tuple[int, str], int] = {}
    ends: dict[int, str] = {}
    states: dict[int, str] = {}
    pids: set[int] = set()
    for event in events:
        ledger.observe(event)
        if event.kind == SUMMARY:
            states.update(_summary_states(event))
            continue
        pids.add(event.pid)
        if event.kind == IPC_REPLY and event.fields.get("dropped"):
            continue
        counts[event.pid, event.kind] = counts.get((event.pid, event.kind), 0) + 1
        if event.kind == PROCESS_EXIT:
            ends[event.pid] = f"exit {event.fields.get('code')}"
        elif event.kind == FAULT:
            ends[event.pid] = f"fault {event.fields.get('fault')}"
    pids.update(states)
    pids.discard(KERNEL_PID)
    if ledger.spent(KERNEL_PID) != Spend():
        pids.add(KERNEL_PID)
    if ledger.spent(IDLE_PID) != Spend():
        pids.add(IDLE_PID)
    known = process_names(events, names)
    return [
        ProcessRow(
            pid,
            name_of(pid, known),
            ledger.spent(pid).instructions,
            ledger.spent(pid).cycles,
            counts.get((pid, SYSCALL), 0),
            counts.get((pid, IPC_SEND), 0),
            counts.get((pid, IPC_RECV), 0),
            counts.get((pid, IPC_REPLY), 0),
            ends.get(pid) or states.get(pid, "-"),
        )
        for pid in sorted(pids, key=lambda pid: (pid == IDLE_PID, pid))
    ]


def _summary_states(summary: Event) -> dict[int, str]:
    states = {}
    for row in summary.fields.get("processes") or ():
        if isinstance(row, dict) and isinstance(row.get("pid"), int):
            states[row["pid"]] = str(row.get("state", "-"))
    return states


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str | int]]) -> str:
    """A plain text table: integers right-aligned, text left-aligned, two spaces between columns."""
    cells = [list(headers)] + [[str(value) for value in row] for row in rows]
    numeric = [
        all(isinstance(row[i], int) or row[i] == "-" for row in rows) and bool(rows) for i in range(len(headers))
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(headers))]
    lines = []
    for line in cells:
        parts = [
            text.rjust(width) if is_number else text.ljust(width)
            for text, width, is_number in zip(line, widths, numeric, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def render_stats(events: Sequence[Event], names: Mapping[int, str] | None = None, model: ModelFacts = NO_FACTS) -> str:
    """Both tables, operations then processes, as text ending in a newline."""
    if not any(event.kind == SCHED_SWITCH for event in events):
        return "no statistics: the events have no sched.switch to attribute work to (trace level ipc or more)\n"
    operations = operation_stats(events, model)
    out = ["operations (receiver's own work, from its ipc.recv to its reply or its next receive)"]
    if operations:
        out.append(
            render_table(
                ("op", "count", "instr p50", "instr p99", "instr max", "cycles p50", "cycles p99", "cycles max"),
                [(row.op, row.count, *_triple(row.instructions), *_triple(row.cycles)) for row in operations],
            )
        )
    else:
        out.append("(no ipc.recv events)")
    out.append("")
    out.append("processes (cycles: virtual time while current, kernel work on its behalf included)")
    out.append(
        render_table(
            ("pid", "name", "instructions", "cycles", "syscalls", "sent", "received", "replied", "end"),
            [
                (
                    "-" if r.pid == IDLE_PID else r.pid,
                    r.name,
                    r.instructions,
                    r.cycles,
                    r.syscalls,
                    r.sent,
                    r.received,
                    r.replied,
                    r.end,
                )
                for r in process_stats(events, names)
            ],
        )
    )
    return "\n".join(out) + "\n"


def _triple(p: Percentiles) -> tuple[int, int, int]:
    return p.p50, p.p99, p.max


def _export(run: RunView) -> str:
    return render_stats(run.events, run.names, run.model)


register(
    Exporter(
        "--stats",
        "after the run, print instructions and cycles per operation and per process "
        "(to stdout when the trace goes to --out, else to stderr)",
        Destination.REPORT,
        _export,
        rank=20,
    )
)
