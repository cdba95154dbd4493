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

from dataclasses import dataclass
from typing import Any

import unicorn

from emu.accounting import AccountState
from emu.elf import PAGE_SIZE
from emu.memory import GuestMemory

_COUNTERS = ("insns", "cost", "insn_limit", "cost_limit", "block_start", "block_insns", "block_cost", "stop", "paused")
"""The accounting fields a run changes (not its code ranges: those only ever cache the image's)."""


class EngineStateError(RuntimeError):
    """An engine cannot be put back to a copy (its memory map changed since the copy was taken)."""


@dataclass(frozen=True)
class EngineState:
    context: Any
    """Unicorn's saved CPU context (registers, flags, FPU and SSE state)."""
    runs: tuple[tuple[int, bytes], ...]
    """(address, bytes) of each run of volatile pages."""
    counters: tuple[int, ...]
    """The accounting counters, in `_COUNTERS` order."""

    @classmethod
    def take(cls, uc: unicorn.Uc, memory: GuestMemory, account: AccountState) -> EngineState:
        pages = tuple((address, memory.read(address, size)) for address, size in memory.volatile_runs())
        counters = tuple(int(getattr(account, name)) for name in _COUNTERS)
        return cls(uc.context_save(), pages, counters)

    def put_back(self, uc: unicorn.Uc, memory: GuestMemory, account: AccountState) -> int:
        """Restore this state into `uc`; the number of pages rewritten."""
        if memory.volatile_runs() != [(address, len(saved)) for address, saved in self.runs]:
            raise EngineStateError("the engine's volatile pages changed since its state was taken")
        written = 0
        for address, saved in self.runs:
            now = memory.read(address, len(saved))
            if now == saved:
                continue
            for offset in range(0, len(saved), PAGE_SIZE):
                page = saved[offset : offset + PAGE_SIZE]
                if now[offset : offset + PAGE_SIZE] != page:
                    memory.write(address + offset, page)
                    written += 1
        uc.context_restore(self.context)
        for name, value in zip(_COUNTERS, self.counters, strict=True):
            setattr(account, name, value)
        return written


def counters_of(account: AccountState) -> dict[str, int]:
    """The accounting counters by name (for tests that compare engines)."""
    return {name: int(getattr(account, name)) for name in _COUNTERS}
