"""The block model's run-time side: the state layout shared with emu/_accounting.c, the store of
block summaries the native hook reads, and the same timing step in Python for engines without it.

The native hook and `time_block` here must give identical results: both carry each variable's
ready time, the dispatch clock (the guest's cost) and the branch predictor from block to block,
as docs/cost-model.md describes. `emu/accounting.py` owns the hook; this module owns the arithmetic.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from emu.blockmodel import BlockSummary, Machine
from emu.timing import START, BranchKind

MAX_RANGES = 16
NVARS = 40
PRED_SIZE = 4096
BTB_SIZE = 256
BUCKETS = 4096


class Range(ctypes.Structure):
    _fields_ = [
        ("base", ctypes.c_uint64),
        ("end", ctypes.c_uint64),
        ("insns", ctypes.POINTER(ctypes.c_uint64)),
        ("cost", ctypes.POINTER(ctypes.c_uint64)),
    ]


ROW_SOURCES = 4
MAX_ROWS = 320
"""At most 34 variables, each with at most 35 sources, in rows of 4 (EMU_ROWS_MAX in the C file)."""
NO_SOURCE = -(1 << 30)
"""An unused source slot's offset: never the largest (every row has a real source from the start)."""


class Row(ctypes.Structure):
    """Mirrors `struct emu_row`: ready[dst] = max over slots of ready[src] + off (ready[0]: the start)."""

    _fields_ = [
        ("off", ctypes.c_int32 * ROW_SOURCES),
        ("src", ctypes.c_uint8 * ROW_SOURCES),
        ("dst", ctypes.c_uint8),
        ("merge", ctypes.c_uint8),
        ("pad", ctypes.c_uint16),
    ]


MEMO_VARS = 8
"""Live-ins and results a block may have to be memoized (EMU_MEMO_VARS in the C file)."""
NO_FLOOR = -(1 << 62)
"""A live-in's floor when some result it feeds has no term from the block's start."""


MEMO_WAYS = 2
"""Timings remembered per block (EMU_MEMO_WAYS in the C file)."""


class Timing(ctypes.Structure):
    """Mirrors `struct emu_timing`: one remembered timing of a block, relative to its start."""

    _fields_ = [
        ("key", ctypes.c_int64 * MEMO_VARS),
        ("out", ctypes.c_int64 * MEMO_VARS),
        ("clock", ctypes.c_int64),
        ("gen", ctypes.c_uint32),
        ("valid", ctypes.c_uint8),
        ("fixed", ctypes.c_uint8),
        ("pad", ctypes.c_uint16),
    ]


class Memo(ctypes.Structure):
    """Mirrors `struct emu_memo`: a block's live-ins with their floors, its results, and the
    timings the hook remembers (see the C file)."""

    _fields_ = [
        ("usable", ctypes.c_uint8),
        ("nsrc", ctypes.c_uint8),
        ("ndst", ctypes.c_uint8),
        ("last", ctypes.c_uint8),
        ("gens", ctypes.c_uint32),
        ("src", ctypes.c_uint8 * MEMO_VARS),
        ("dst", ctypes.c_uint8 * MEMO_VARS),
        ("lo", ctypes.c_int64 * MEMO_VARS),
        ("way", Timing * MEMO_WAYS),
    ]


class Summary(ctypes.Structure):
    _fields_ = [
        ("start", ctypes.c_uint64),
        ("end", ctypes.c_uint64),
        ("target", ctypes.c_uint64),
        ("branch_pc", ctypes.c_uint64),
        ("next", ctypes.c_uint32),
        ("first", ctypes.c_uint32),
        ("count", ctypes.c_uint32),
        ("through", ctypes.c_uint32),
        ("kind", ctypes.c_uint32),
        ("branch_var", ctypes.c_uint32),
        ("branch_off", ctypes.c_int32),
        ("branch_issue", ctypes.c_uint32),
        ("insns", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("memo", Memo),
        ("seen", ctypes.c_uint64),
        ("rest", ctypes.c_uint32),
        ("rested", ctypes.c_uint16),
        ("tries", ctypes.c_uint16),
    ]


def memo_of(summary: BlockSummary) -> Memo:
    """The static part of a block's memo: its live-ins with their floors, and its results.

    A live-in s at or below its floor changes no result: every result d with a term
    (START, o0) is at least start + o0, and s's term in d is ready[s] + o, at most start + o0
    when ready[s] - start <= o0 - o; the floor is the least such bound over the results s feeds."""
    memo = Memo()
    start_terms: dict[int, int] = {}
    for dst, src, off in summary.entries:
        if src == START:
            start_terms[dst] = max(off, start_terms.get(dst, off))
    floors: dict[int, int] = {}
    for dst, src, off in summary.entries:
        if src != START:
            bound = start_terms[dst] - off if dst in start_terms else NO_FLOOR
            floors[src] = min(bound, floors.get(src, bound))
    dsts = sorted({dst for dst, _, _ in summary.entries})
    if len(floors) > MEMO_VARS or len(dsts) > MEMO_VARS or summary.kind == BranchKind.SERIAL:
        return memo  # not usable: timed row by row every time
    memo.usable, memo.nsrc, memo.ndst = 1, len(floors), len(dsts)
    for j, src in enumerate(sorted(floors)):
        memo.src[j], memo.lo[j] = src, floors[src]
    for j, dst in enumerate(dsts):
        memo.dst[j] = dst
    return memo


class AccountState(ctypes.Structure):
    """Mirrors `struct emu_account` in emu/_accounting.c."""

    _fields_ = [
        ("insns", ctypes.c_uint64),
        ("cost", ctypes.c_uint64),
        ("insn_limit", ctypes.c_uint64),
        ("cost_limit", ctypes.c_uint64),
        ("block_start", ctypes.c_uint64),
        ("block_insns", ctypes.c_uint64),
        ("block_cost", ctypes.c_uint64),
        ("unknown_address", ctypes.c_uint64),
        ("unknown_size", ctypes.c_uint64),
        ("stop", ctypes.c_uint32),
        ("nranges", ctypes.c_uint32),
        ("continued", ctypes.c_uint32),
        ("syscalled", ctypes.c_uint32),
        ("emu_stop", ctypes.c_void_p),
        ("ranges", Range * MAX_RANGES),
        ("summaries", ctypes.POINTER(Summary)),
        ("rows", ctypes.POINTER(Row)),
        ("penalty", ctypes.c_int64),
        ("taken_cost", ctypes.c_uint64),
        ("jump_cost", ctypes.c_uint64),
        ("window", ctypes.c_uint64),
        ("buckets", ctypes.c_uint32 * BUCKETS),
        ("repeat", ctypes.c_void_p),
        ("looping", ctypes.c_void_p),
        ("loop", ctypes.c_void_p),
        ("block_end", ctypes.c_uint64),
        ("cont_start", ctypes.c_uint64),
        ("last_start", ctypes.c_uint64),
        ("pending_kind", ctypes.c_uint64),
        ("pending_target", ctypes.c_uint64),
        ("pending_pc", ctypes.c_uint64),
        ("pending_var", ctypes.c_uint64),
        ("pending_off", ctypes.c_int64),
        ("pending_issue", ctypes.c_uint64),
        ("mispredicts", ctypes.c_uint64),
        ("ready", ctypes.c_int64 * NVARS),
        ("btb", ctypes.c_uint64 * BTB_SIZE),
        ("pred", ctypes.c_uint8 * PRED_SIZE),
    ]


def bucket(start: int) -> int:
    return (start ^ (start >> 12)) & (BUCKETS - 1)


class SummaryStore:
    """Block summaries in flat C arrays the native hook reads, found by (start, end), each with
    the block's instruction count (so the hook needs no prefix table to count a block).

    Grown only while the engine is stopped (the hook never runs concurrently with Python)."""

    def __init__(self, state: AccountState, machine: Machine) -> None:
        self._state = state
        self._found: dict[tuple[int, int], tuple[BlockSummary, int]] = {}
        self._buckets = state.buckets
        self._summaries = (Summary * 64)()
        self._rows = (Row * 512)()
        self._nsummaries = 0
        self._nrows = 0
        state.penalty = machine.mispredict_penalty
        state.taken_cost = machine.taken_branch
        state.jump_cost = machine.jump
        state.window = machine.window
        self._publish()

    def find(self, start: int, end: int) -> tuple[BlockSummary, int] | None:
        """The summary of the block [start, end) and its instruction count, if known."""
        return self._found.get((start, end))

    def add(self, start: int, end: int, summary: BlockSummary, insns: int) -> None:
        if (start, end) in self._found:
            return
        self._found[(start, end)] = (summary, insns)
        rows = to_rows(summary.entries)
        self._reserve(len(rows))
        first = self._nrows
        for k, row in enumerate(rows):
            self._rows[first + k] = row
        self._nrows += len(rows)
        slot = bucket(start)
        record = Summary(start, end, summary.target, summary.branch_pc, self._buckets[slot], first, len(rows))
        record.through, record.kind = summary.through, int(summary.kind)
        record.branch_var, record.branch_off, record.branch_issue = (
            summary.branch_var,
            summary.branch_off,
            summary.branch_issue,
        )
        record.insns, record.memo = insns, memo_of(summary)
        self._summaries[self._nsummaries] = record
        self._nsummaries += 1
        self._buckets[slot] = self._nsummaries

    def forget_within(self, base: int, end: int) -> None:
        """Forget every block inside [base, end) (its prefix table is dropped: the hook must ask
        again, so that every block it counts lies in a table that places its instructions)."""
        for start, stop in [key for key in self._found if base <= key[0] and key[1] <= end]:
            del self._found[(start, stop)]
            slot, previous, index = bucket(start), 0, self._buckets[bucket(start)]
            while index != 0:
                record = self._summaries[index - 1]
                if record.start == start and record.end == stop:
                    if previous:
                        self._summaries[previous - 1].next = record.next
                    else:
                        self._buckets[slot] = record.next
                    break
                previous, index = index, record.next

    def _reserve(self, rows: int) -> None:
        if self._nsummaries == len(self._summaries):
            bigger_s = (Summary * (2 * len(self._summaries)))()
            ctypes.memmove(bigger_s, self._summaries, ctypes.sizeof(self._summaries))
            self._summaries = bigger_s
        if self._nrows + rows > len(self._rows):
            bigger_r = (Row * (2 * len(self._rows) + rows))()
            ctypes.memmove(bigger_r, self._rows, ctypes.sizeof(self._rows))
            self._rows = bigger_r
        self._publish()

    def _publish(self) -> None:
        self._state.repeat = None  # the hook's pointer into the summaries: they may have moved
        self._state.summaries = ctypes.cast(self._summaries, ctypes.POINTER(Summary))
        self._state.rows = ctypes.cast(self._rows, ctypes.POINTER(Row))


def to_rows(entries: tuple[tuple[int, int, int], ...]) -> list[Row]:
    """Pack (dst, src, offset) entries, sorted by dst, into rows of `ROW_SOURCES` slots."""
    groups: list[tuple[int, list[tuple[int, int]]]] = []
    for dst, src, off in entries:
        if not groups or groups[-1][0] != dst or len(groups[-1][1]) == ROW_SOURCES:
            groups.append((dst, []))
        groups[-1][1].append((src, off))
    rows: list[Row] = []
    for k, (dst, slots) in enumerate(groups):
        row = Row()
        row.dst, row.merge = dst, int(k > 0 and groups[k - 1][0] == dst)
        for slot in range(ROW_SOURCES):
            row.src[slot], row.off[slot] = slots[slot] if slot < len(slots) else (0, NO_SOURCE)
        rows.append(row)
    assert len(rows) <= MAX_ROWS
    return rows


@dataclass(frozen=True)
class Outcome:
    """The predictor's verdict on the last block's branch (see emu_predict in the C file)."""

    start: int
    pred_index: int = 0
    counter: int = 0
    taken: bool = False
    missed: bool = False


def predict(state: AccountState, address: int) -> Outcome:
    kind, start = state.pending_kind, int(state.cost)
    index = counter = 0
    taken = missed = False
    if kind == BranchKind.COND:
        taken = address == state.pending_target
        index = (state.pending_pc ^ (state.pending_pc >> 12)) & (PRED_SIZE - 1)
        counter = state.pred[index]
        predicted = state.pending_target < state.pending_pc if counter == 0 else counter >= 3
        missed = predicted != taken
    elif kind == BranchKind.INDIRECT:
        missed = state.btb[state.pending_pc & (BTB_SIZE - 1)] != address
    if missed:
        resolved = max(state.ready[state.pending_var] + state.pending_off, state.last_start + state.pending_issue)
        start = max(start, resolved + state.penalty)
    if taken:
        start = max(start, state.last_start + state.taken_cost)
    if kind in (BranchKind.DIRECT, BranchKind.INDIRECT, BranchKind.RET):
        start = max(start, state.last_start + state.jump_cost)
    return Outcome(start, index, counter, taken, missed)


def learn(state: AccountState, outcome: Outcome, address: int) -> None:
    if state.pending_kind == BranchKind.COND:
        c = outcome.counter
        if c == 0:
            state.pred[outcome.pred_index] = 3 if outcome.taken else 2
        else:
            state.pred[outcome.pred_index] = min(c + 1, 4) if outcome.taken else max(c - 1, 1)
    elif state.pending_kind == BranchKind.INDIRECT:
        state.btb[state.pending_pc & (BTB_SIZE - 1)] = address
    state.mispredicts += int(outcome.missed)


def time_block(state: AccountState, summary: BlockSummary, start: int) -> tuple[int, dict[int, int]]:
    """(new dispatch clock, new ready times of the variables the block writes)."""
    clock = start + summary.through
    out: dict[int, int] = {}
    for dst, src, off in summary.entries:
        value = (start if src == 0 else state.ready[src]) + off
        out[dst] = max(out.get(dst, value), value)
    if out:
        clock = max(clock, max(out.values()) - state.window)
    if summary.kind == BranchKind.SERIAL:
        clock = max([clock, *(state.ready[var] for var in range(1, NVARS)), *out.values()])
    return clock, out


def commit(state: AccountState, summary: BlockSummary, outcome: Outcome, ready: dict[int, int]) -> None:
    """Record the block's ready times and its branch for the next block (the clock is the caller's)."""
    for var, value in ready.items():
        state.ready[var] = value
    state.last_start = outcome.start
    state.pending_kind = int(summary.kind)
    state.pending_target = summary.target
    state.pending_pc = summary.branch_pc
    state.pending_var = summary.branch_var
    state.pending_off = summary.branch_off
    state.pending_issue = summary.branch_issue
