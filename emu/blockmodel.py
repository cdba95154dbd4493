"""Per-translation-block timing summaries: a throughput bound and a latency structure.

A block's summary says, for a block that starts dispatching at time S (the dispatch clock):

- `through`: the least time the block takes to dispatch, the largest of its fused micro-ops over
  the rename width and the busiest execution port (taken branches are charged at run time, when
  the predictor knows the outcome);
- `entries`: for each variable the block writes (a register, the flags, the branch-resolution
  time), its new ready time as the largest of ``S + offset`` and ``ready[src] + offset`` over its
  live-in sources. The dispatch clock then stays within the reorder window of the block's slowest
  new result (``clock >= result - window``, applied at run time).

All times are integer millicycles and every operation is a max or an add, so the summary of a
block is exact whatever the values it is applied to. `summarize` builds it once per block at
translation time; the native block hook (emu/_accounting.c) applies it before each execution and
carries the ready times, the dispatch clock and the branch predictor from block to block.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from emu.events import MILLICYCLES_PER_CYCLE
from emu.timing import RSP, START, BranchKind, InsnTiming

Expr = dict[int, int]
"""A ready time: max over src of (value of src + offset); src START is the block's dispatch start."""


@dataclass(frozen=True)
class Machine:
    """The machine parameters of one CPU model (millicycles unless named otherwise)."""

    width: int
    """Fused micro-ops renamed per cycle."""
    window: int
    """How far dispatch may run ahead of the slowest result in flight (the reorder buffer / width)."""
    load_latency: int
    store_forward_latency: int
    mispredict_penalty: int
    taken_branch: int
    """Least time between the starts of a block and the block after a taken conditional branch."""
    jump: int = 0
    """The same after an unconditional jump, a call or a return."""


FLAT_MACHINE = Machine(width=1, window=0, load_latency=0, store_forward_latency=0, mispredict_penalty=0, taken_branch=0)
"""No dependencies and no predictor: a block costs the sum of its instructions' costs."""


@dataclass(frozen=True)
class BlockSummary:
    """What the native hook needs to time one execution of a block (see the module docstring)."""

    through: int
    entries: tuple[tuple[int, int, int], ...]
    """(dst, src, offset), sorted by dst then src."""
    kind: BranchKind = BranchKind.NONE
    target: int = 0
    branch_pc: int = 0
    branch_var: int = START
    """The final branch resolves at ``max(ready[branch_var] + branch_off, S + branch_issue)``
    (START: the block's start), evaluated only when the predictor finds it mispredicted."""
    branch_off: int = 0
    branch_issue: int = 0


def _merge(into: Expr, other: Expr, shift: int = 0) -> None:
    for src, off in other.items():
        value = off + shift
        if into.get(src, value - 1) < value:
            into[src] = value


def _joined(parts: Iterable[Expr], shift: int = 0) -> Expr:
    out: Expr = {}
    get = out.get
    for part in parts:  # _merge inlined: summarizing is on the path of every block's first run
        for src, off in part.items():
            value = off + shift
            if get(src, value - 1) < value:
                out[src] = value
    return out


class _Composer:
    """Walks a block's instructions symbolically, one max-plus step each."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.exprs: dict[int, Expr] = {}
        self.window_start = 0
        """The largest result's term from the block's start, less the window (only that term of
        the window's bound is summarized; the rest is applied at run time)."""
        self.barrier: Expr = {START: 0}
        self.stores: dict[int, Expr] = {}
        self.rsp = 0
        self.fused = 0
        self.ports: dict[tuple[str, ...], int] = {}
        self.branch = (START, 0, 0)

    def ready(self, var: int) -> Expr:
        return self.exprs.get(var) or {var: 0}

    def issue(self) -> Expr:
        front = self.fused * MILLICYCLES_PER_CYCLE // self.machine.width
        out = dict(self.barrier)
        if out.get(START, front - 1) < front:
            out[START] = front
        return out

    def step(self, t: InsnTiming) -> None:
        issue = self.issue()
        self.fused += t.fused
        for group, load in t.ports:
            self.ports[group] = self.ports.get(group, 0) + load
        result = self._result(t, issue)
        for var in t.dst_vars:
            self.exprs[var] = result
        if t.branch in (BranchKind.COND, BranchKind.INDIRECT):
            self.branch = self._resolution(t, issue)
        if START in result:
            self.window_start = max(self.window_start, result[START] - self.machine.window)
        if t.barrier:
            self.barrier = _joined([self.barrier, *self.exprs.values()])

    def _resolution(self, t: InsnTiming, issue: Expr) -> tuple[int, int, int]:
        """(var, offset, issue offset) of the time a branch resolves: its input's ready time
        (the flags, a target register, or the address of a target in memory) plus its latency."""
        inputs = t.data_vars or t.address_vars
        var = inputs[0] if inputs else START
        return var, t.latency, issue.get(START, 0) + t.latency

    def _result(self, t: InsnTiming, issue: Expr) -> Expr:
        m = self.machine
        slot = self._slot(t)
        ready = self.ready
        if t.store and slot is not None:
            self.stores[slot] = _joined([issue, *(ready(v) for v in t.data_vars)])
        if t.zero_idiom:
            return dict(issue)
        inputs = [issue, *(ready(v) for v in t.data_vars)]
        latency = t.latency
        if t.load:
            loaded = _joined([issue, *(ready(v) for v in t.address_vars)], m.load_latency)
            if slot is not None and slot in self.stores:
                _merge(loaded, self.stores[slot], m.store_forward_latency)
            inputs.append(loaded)
            # A pop is the load alone (the stack engine did its rsp update).
            latency = 0 if t.stack_delta is not None else max(0, latency - m.load_latency)
        else:
            inputs.extend(ready(v) for v in t.address_vars)  # the address: issue is in already
        if t.move:
            return _joined(inputs)
        return _joined(inputs, latency)

    def _slot(self, t: InsnTiming) -> int | None:
        """The stack slot `t` loads or stores, relative to the block's entry rsp (stack engine)."""
        if t.stack_delta is not None:
            if t.stack_delta < 0:
                self.rsp += t.stack_delta
                return self.rsp if t.store else None
            slot = self.rsp
            self.rsp += t.stack_delta
            return slot if t.load else None
        if t.stack_slot is not None:
            return self.rsp + t.stack_slot
        if RSP in t.dst_vars:  # rsp written some other way: forget what the stack held
            self.stores.clear()
        return None


def port_bound_of(groups: dict[tuple[str, ...], int]) -> int:
    """The least time the ports need for these micro-op groups, however they are assigned.

    For every union U of groups' port sets, the micro-ops that can only use ports in U need
    load(U) / |U| cycles; the largest such bound is what the best assignment reaches.
    """
    return _port_bound(tuple(sorted(groups.items())))


@functools.lru_cache(maxsize=4096)
def _port_bound(loads: tuple[tuple[tuple[str, ...], int], ...]) -> int:
    """`port_bound_of` by the sorted (group, load) pairs (blocks often load the ports alike)."""
    groups = dict(loads)
    supports = [frozenset(group) for group in groups]
    unions: set[frozenset[str]] = set()
    for support in supports:
        unions |= {support | u for u in unions}
        unions.add(support)
    best = 0
    for union in unions:
        load = sum(v for group, v in groups.items() if union.issuperset(group))
        best = max(best, -(-load // len(union)))
    return best


def summarize(timings: Sequence[InsnTiming], machine: Machine) -> BlockSummary:
    """The summary of a block made of `timings`, in order."""
    composer = _Composer(machine)
    for t in timings:
        composer.step(t)
    port_bound = port_bound_of(composer.ports)
    # Rounded up: a block never renames more than the width (Zen 4's 6 does not divide 1000).
    rename_bound = -(-composer.fused * MILLICYCLES_PER_CYCLE // machine.width) if machine.width else 0
    through = max(rename_bound, port_bound)
    through = max(through, composer.window_start, 1 if timings else 0)
    # The window's bounds from live-in ready times are applied at run time, from the block's new
    # ready times (emu_time_block): one comparison per written variable instead of an entry each.
    entries: list[tuple[int, int, int]] = []
    for var, expr in composer.exprs.items():
        entries.extend((var, src, off) for src, off in expr.items())
    last = timings[-1] if timings else None
    kind = last.branch if last is not None else BranchKind.NONE
    var, off, issue = composer.branch
    return BlockSummary(
        through=through,
        entries=tuple(sorted(entries)),
        kind=kind,
        target=last.target if last is not None else 0,
        branch_pc=last.address if last is not None else 0,
        branch_var=var,
        branch_off=off,
        branch_issue=issue,
    )


def flat_summary(costs: Sequence[int]) -> BlockSummary:
    """A summary for a model without dependencies: the block costs the sum of `costs`."""
    return BlockSummary(through=sum(costs), entries=())
