"""A copy of one engine's state that can be put back: registers, the pages that can change, counters.

`EngineState.take` copies the CPU context (`context_save`), every volatile page (writable, or
mapped or written by the host after load: see `GuestMemory.volatile_runs`) and the accounting
counters. `put_back` restores them in the same engine: the context with `context_restore`, and
only the pages whose bytes differ from the copy (each run of pages is read in one call and
compared page by page; a page nobody wrote since is left alone: writable pages live in host
buffers, so reading and comparing them is a memcmp). Translated code stays warm.

Unicorn's copy-on-write memory snapshots are not used: they are superlinear in the pages
written, crash when restored out of order, and do not combine with `mem_protect` (see the
project's notes on Unicorn 2.1.4). The few writable pages of a small guest are cheaper to copy.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import unicorn

from emu.blockclock import AccountState
from emu.elf import PAGE_SIZE
from emu.engine_calls import put_pages
from emu.memory import GuestMemory

_COUNTERS = ("insns", "cost", "insn_limit", "cost_limit", "block_start", "block_insns", "block_cost", "stop")
"""The accounting fields a run changes (not its code ranges: those only ever cache the image's)."""
_RAW_COUNTS = AccountState.block_cost.offset + AccountState.block_cost.size
"""The 64-bit counters lead the structure (insns .. block_cost): restored with one copy."""
if tuple(field[0] for field in AccountState._fields_[:7]) != _COUNTERS[:7] or _COUNTERS[7:] != ("stop",):
    raise ImportError("emu/engine_state.py: AccountState's counters moved; update the raw copy")
_TIMING_FIRST = "block_end"
"""The block model's run-time state (ready times, the dispatch history, the branch predictor) runs
from this field to the end of the structure: put back in one copy, so that a warm engine times
its next guest exactly as a fresh one would."""
_TIMING_START = getattr(AccountState, _TIMING_FIRST).offset
_TIMING_SIZE = ctypes.sizeof(AccountState) - _TIMING_START
_TIMING_FIELDS = [field[0] for field in AccountState._fields_]
if {"summaries", "rows", "buckets", "ranges"} & set(_TIMING_FIELDS[_TIMING_FIELDS.index(_TIMING_FIRST) :]):
    raise ImportError("emu/engine_state.py: the block model's state holds pointers; copy it field by field")


class EngineStateError(RuntimeError):
    """An engine cannot be put back to a copy (its memory map changed since the copy was taken)."""


@dataclass(frozen=True)
class SavedRun:
    """A run of volatile pages as it was: all its bytes."""

    address: int
    data: bytes
    host: int | None = None
    """Where the run lies in host memory, if in one host buffer (its engine's, for its life)."""


@dataclass(frozen=True)
class EngineState:
    context: Any
    """Unicorn's saved CPU context (registers, flags, FPU and SSE state)."""
    runs: tuple[SavedRun, ...]
    counters: tuple[int, ...]
    """The accounting counters, in `_COUNTERS` order."""
    shape: list[tuple[int, int]]
    """(address, size) of each run: what the engine's volatile runs must be to put this back."""
    counts_raw: bytes
    """The leading 64-bit counters as bytes (insns .. block_cost), put back in one copy."""
    timing_raw: bytes
    """The block model's state as bytes (block_end .. the predictor's tables)."""
    inside: tuple[int, int, int] | None = None
    """The guest's stop inside a block, if it was stopped in one (see GuestCpu._stop_inside)."""

    @classmethod
    def take(
        cls, uc: unicorn.Uc, memory: GuestMemory, account: AccountState, inside: tuple[int, int, int] | None = None
    ) -> EngineState:
        runs = []
        for address, size in memory.volatile_runs():
            runs.append(SavedRun(address, memory.read(address, size), memory.host_address(address, size)))
        counters = tuple(int(getattr(account, name)) for name in _COUNTERS)
        shape = [(run.address, len(run.data)) for run in runs]
        raw = ctypes.string_at(ctypes.addressof(account), _RAW_COUNTS)
        timing = ctypes.string_at(ctypes.addressof(account) + _TIMING_START, _TIMING_SIZE)
        return cls(uc.context_save(), tuple(runs), counters, shape, raw, timing, inside)

    def fits(self, memory: GuestMemory) -> bool:
        """The engine's volatile pages are the ones this state holds (its map did not grow)."""
        return memory.volatile_runs() == self.shape

    def put_back(self, uc: unicorn.Uc, memory: GuestMemory, account: AccountState) -> int:
        """Restore this state into `uc`; the number of pages rewritten."""
        if not self.fits(memory):
            raise EngineStateError("the engine's volatile pages changed since its state was taken")
        written = 0
        for run in self.runs:
            host = run.host
            if host is None:
                written += _put_back_through_engine(memory, run)
                continue
            written += put_pages(host, run.data, PAGE_SIZE)  # in host memory: compared and copied in place
        uc.context_restore(self.context)
        ctypes.memmove(ctypes.addressof(account), self.counts_raw, _RAW_COUNTS)
        ctypes.memmove(ctypes.addressof(account) + _TIMING_START, self.timing_raw, _TIMING_SIZE)
        account.repeat = None  # the ready times moved: the last block's memo no longer describes them
        account.stop = self.counters[-1]
        return written


def _put_back_through_engine(memory: GuestMemory, run: SavedRun) -> int:
    now = memory.read(run.address, len(run.data))
    if now == run.data:
        return 0
    written = 0
    for offset in range(0, len(run.data), PAGE_SIZE):
        page = run.data[offset : offset + PAGE_SIZE]
        if now[offset : offset + PAGE_SIZE] != page:
            memory.write(run.address + offset, page)
            written += 1
    return written


def counters_of(account: AccountState) -> dict[str, int]:
    """The accounting counters by name (for tests that compare engines)."""
    return {name: int(getattr(account, name)) for name in _COUNTERS}
