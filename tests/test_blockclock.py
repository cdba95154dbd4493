"""The native hook's memo (emu/_accounting.c, struct emu_memo) reuses a block's last timing when
its live-ins repeat relative to its start, after raising each live-in to its floor: that is exact
only if a live-in at or below its floor changes no result. The Python clock has no memo, and the
native and fallback traces are compared byte for byte in tests/test_clock.py."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from emu.blockclock import MEMO_VARS, NVARS, AccountState, memo_of, time_block
from emu.blockmodel import BlockSummary
from emu.timing import START, BranchKind

OFFSETS = st.integers(min_value=0, max_value=20_000)


@st.composite
def summaries(draw: st.DrawFn) -> BlockSummary:
    entries: dict[tuple[int, int], int] = {}
    for dst in draw(st.sets(st.integers(1, 6), min_size=1, max_size=5)):
        entries[(dst, START)] = draw(OFFSETS)
        for src in draw(st.sets(st.integers(1, 8), max_size=4)):
            entries[(dst, src)] = draw(OFFSETS)
    if draw(st.booleans()):  # sometimes a result with no term from the start
        entries.pop(min(entries), None)
    return BlockSummary(draw(OFFSETS), tuple(sorted((d, s, o) for (d, s), o in entries.items())), BranchKind.COND)


@settings(max_examples=300, deadline=None)
@given(
    summary=summaries(),
    start=st.integers(0, 10**9),
    ready=st.lists(st.integers(0, 10**9 + 50_000), min_size=NVARS, max_size=NVARS),
)
def test_a_live_in_at_or_below_its_floor_changes_no_result(summary: BlockSummary, start: int, ready: list[int]) -> None:
    memo = memo_of(summary)
    if not memo.usable:
        return
    raw, raised = AccountState(), AccountState()
    raw.window = raised.window = 40_000
    for var, value in enumerate(ready):
        raw.ready[var] = raised.ready[var] = value
    for j in range(memo.nsrc):
        src = memo.src[j]
        raised.ready[src] = max(ready[src], start + memo.lo[j])
    assert time_block(raw, summary, start) == time_block(raised, summary, start)


def test_a_block_with_too_many_results_or_a_serializing_end_is_never_memoized() -> None:
    wide = BlockSummary(1000, tuple((dst, START, 0) for dst in range(1, MEMO_VARS + 2)))
    serial = BlockSummary(1000, ((1, START, 0),), BranchKind.SERIAL)
    assert not memo_of(wide).usable and not memo_of(serial).usable
    assert memo_of(BlockSummary(1000, ((1, START, 0), (1, 2, 5)))).usable
