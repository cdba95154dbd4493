"""Which guest blocks ran: a byte map per address range, for coverage-guided fuzzing.

`BlockCoverage(uc, into)` marks, in the `CoverageMap` `into`, the first byte of every block that
starts in the map's range (a native `UC_HOOK_BLOCK` from `_coverage.c`, or a Python hook where the
extension is not built). A fuzzer folds each example's map into a running total with
`fold_into`, which says how many blocks the example reached first. Coverage never touches the accounting, so
instruction counts and cycles are the same with it on or off.
"""

from __future__ import annotations

import ctypes
import os

from unicorn import unicorn_const as uc_const

from emu.native_hook import add_native_hook

FORCE_PYTHON_ENV = "EMU_COVERAGE"
"""Set to "python" to use the Python hook even where the native one is built (tests)."""


class CoverState(ctypes.Structure):
    """Mirrors `struct emu_cover` in `_coverage.c`."""

    _fields_ = [
        ("begin", ctypes.c_uint64),
        ("end", ctypes.c_uint64),
        ("hits", ctypes.POINTER(ctypes.c_uint8)),
    ]


def _load_native() -> ctypes.CDLL | None:
    if os.environ.get(FORCE_PYTHON_ENV) == "python":
        return None
    try:
        from emu import _coverage  # type: ignore[attr-defined]
    except ImportError:
        return None
    library = ctypes.CDLL(_coverage.__file__)
    library.emu_cover_layout_size.restype = ctypes.c_uint64
    library.emu_cover_merge.restype = ctypes.c_uint64
    library.emu_cover_merge.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64]
    library.emu_cover_count.restype = ctypes.c_uint64
    library.emu_cover_count.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
    if library.emu_cover_layout_size() != ctypes.sizeof(CoverState):
        raise RuntimeError("emu/_coverage.c and emu/coverage.py disagree on struct emu_cover")
    return library


_NATIVE = _load_native()


class CoverageMap:
    """Which block starts of [begin, end) have run: one byte per code byte."""

    def __init__(self, begin: int, end: int) -> None:
        if end <= begin:
            raise ValueError(f"an empty coverage range {begin:#x}..{end:#x}")
        self.begin, self.end = begin, end
        self.hits = (ctypes.c_uint8 * (end - begin))()

    def count(self) -> int:
        """Blocks covered."""
        if _NATIVE is not None:
            return int(_NATIVE.emu_cover_count(ctypes.addressof(self.hits), len(self.hits)))
        return len(self.hits) - bytes(self.hits).count(0)

    def addresses(self) -> list[int]:
        """The addresses of the blocks covered, ascending."""
        return [self.begin + i for i, hit in enumerate(bytes(self.hits)) if hit]

    def fold_into(self, total: CoverageMap) -> int:
        """Add these blocks to `total` and clear this map; how many were new to `total`."""
        if (total.begin, total.end) != (self.begin, self.end):
            raise ValueError("a coverage map of another range")
        if _NATIVE is not None:
            return int(
                _NATIVE.emu_cover_merge(ctypes.addressof(self.hits), ctypes.addressof(total.hits), len(self.hits))
            )
        fresh = 0
        for i, hit in enumerate(bytes(self.hits)):
            if hit:
                fresh += not total.hits[i]
                total.hits[i] = 1
                self.hits[i] = 0
        return fresh


class BlockCoverage:
    """Marks, in `into`, every block that starts in its range on one engine, from now on."""

    def __init__(self, uc: object, into: CoverageMap) -> None:
        self.into = into
        self._state = CoverState(into.begin, into.end, ctypes.cast(into.hits, ctypes.POINTER(ctypes.c_uint8)))
        self._install(uc)

    def _install(self, uc: object) -> None:
        begin, last = self.into.begin, self.into.end - 1
        if _NATIVE is not None:
            add_native_hook(uc, uc_const.UC_HOOK_BLOCK, _NATIVE.emu_cover_block, self._state, begin, last)
        else:
            uc.hook_add(uc_const.UC_HOOK_BLOCK, self._python_block, begin=begin, end=last)  # type: ignore[attr-defined]
        uc.ctl_flush_tb()  # type: ignore[attr-defined]

    def _python_block(self, _uc: object, address: int, _size: int, _user: object) -> None:
        if self.into.begin <= address < self.into.end:
            self.into.hits[address - self.into.begin] = 1
