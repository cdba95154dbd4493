"""The hot calls into a Unicorn engine: run it, read or write registers in batches, and put
saved pages back.

A spawn round trip starts engines a dozen times and moves registers around each run. Through
ctypes each such call converts its arguments in Python; `emu/_engine.c`, where it was built, makes
each one a single CPython call: `start` also writes a syscall's staged results before the run and
reads the next syscall's registers when the run stopped at one, and `put_pages` compares and
rewrites a run of saved pages in one call. Where it was not built (or EMU_ACCOUNTING=python), the
same calls go through ctypes with the same results. Register sets are `RegisterIds`: Unicorn ids
in a C array made once.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from typing import Any

import unicorn
from unicorn import unicorn_const as uc_const
from unicorn.unicorn_py3.unicorn import uclib

from emu.accounting import FORCE_PYTHON_ENV

_NO_END = 0xFFFF_FFFF_FFFF_FFFF


class RegisterIds:
    """Unicorn register ids in a C array, with what a ctypes batch call needs besides."""

    def __init__(self, ids: Sequence[int], *, has_rip: bool = False) -> None:
        self.has_rip = has_rip
        """Whether rip is among them (a write moves the guest)."""
        self.count = len(ids)
        self.ids = (ctypes.c_int * self.count)(*ids)
        self.address = ctypes.addressof(self.ids)
        self._values = (ctypes.c_uint64 * self.count)()
        self._pointers = (ctypes.c_void_p * self.count)(
            *(ctypes.addressof(self._values) + 8 * i for i in range(self.count))
        )


def _load() -> Any:
    if os.environ.get(FORCE_PYTHON_ENV) in ("python", "off"):
        return None
    try:
        from emu import _engine  # type: ignore[attr-defined]
    except ImportError:
        return None
    address = ctypes.c_void_p
    _engine.bind(
        ctypes.cast(uclib.uc_emu_start, address).value,
        ctypes.cast(uclib.uc_reg_read_batch, address).value,
        ctypes.cast(uclib.uc_reg_write_batch, address).value,
    )
    return _engine


_NATIVE = _load()


def native_available() -> bool:
    return _NATIVE is not None


def put_pages(host: int, saved: bytes, page_size: int) -> int:
    """Put `saved` (whole pages) back at host address `host`, rewriting only the pages that
    differ; the number rewritten."""
    if _NATIVE is not None:
        return int(_NATIVE.put_pages(host, saved, page_size))
    if _memcmp(host, saved, len(saved)) == 0:
        return 0
    written = 0
    for offset in range(0, len(saved), page_size):
        page = saved[offset : offset + page_size]
        if _memcmp(host + offset, page, page_size):
            ctypes.memmove(host + offset, page, page_size)
            written += 1
    return written


_memcmp = ctypes.CDLL(None).memcmp
_memcmp.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t)
_memcmp.restype = ctypes.c_int


def _check(status: int) -> None:
    if status != uc_const.UC_ERR_OK:
        raise unicorn.UcError(status)


def _ctypes_read(uc: unicorn.Uc, registers: RegisterIds) -> tuple[int, ...]:
    status = uclib.uc_reg_read_batch(uc._uch, registers.ids, registers._pointers, registers.count)
    _check(status)
    return tuple(registers._values[:])


def _ctypes_write(uc: unicorn.Uc, registers: RegisterIds, values: Sequence[int]) -> None:
    registers._values[:] = values  # type: ignore[call-overload]  # a c_uint64 keeps the low 64 bits
    _check(uclib.uc_reg_write_batch(uc._uch, registers.ids, registers._pointers, registers.count))


class EngineCalls:
    """The hot calls on one engine (its handle taken once). `syscall_flag` is the address of the
    uint32 the engine's native `syscall` stop sets (emu/accounting.py's `syscalled`)."""

    def __init__(self, uc: unicorn.Uc, syscall_flag: int) -> None:
        self._uc = uc
        self._handle: int = uc._uch.value
        self._flag_address = syscall_flag
        self._flag = ctypes.c_uint32.from_address(syscall_flag)

    def read(self, registers: RegisterIds) -> tuple[int, ...]:
        """The registers' values, in their order."""
        if _NATIVE is None:
            return _ctypes_read(self._uc, registers)
        values = _NATIVE.read(self._handle, registers.address, registers.count)
        if values.__class__ is int:
            raise unicorn.UcError(values)
        return values  # type: ignore[no-any-return]

    def write(self, registers: RegisterIds, values: Sequence[int]) -> None:
        """Set the registers (each value's low 64 bits)."""
        if _NATIVE is None:
            _ctypes_write(self._uc, registers, values)
            return
        _check(_NATIVE.write(self._handle, registers.address, values))

    def start(
        self, begin: int, registers: RegisterIds, staged: tuple[RegisterIds, Sequence[int]] | None = None
    ) -> tuple[int, ...] | None:
        """Write the `staged` registers (ids, values), if any, then run the engine from `begin`
        until a hook stops it (or an error: UcError). If the run stopped at a `syscall` (the
        syscall flag is set), `registers`' values, read in the same call; else None. An exception a
        Python hook raised during the run is raised here, as the binding's `emu_start` does."""
        uc = self._uc
        uc._hook_exception = None
        if _NATIVE is None:
            if staged is not None:
                _ctypes_write(uc, *staged)
            _check(uclib.uc_emu_start(uc._uch, begin, _NO_END, 0, 0))
            result: tuple[int, ...] | None = _ctypes_read(uc, registers) if self._flag.value else None
        else:
            handle, flag = self._handle, self._flag_address
            if staged is None:
                outcome = _NATIVE.start(handle, begin, flag, registers.address, registers.count)
            else:
                written, values = staged
                outcome = _NATIVE.start(
                    handle, begin, flag, registers.address, registers.count, written.address, values
                )
            if outcome.__class__ is int:
                _check(outcome)
                result = None
            else:
                result = outcome
        if uc._hook_exception is not None:
            raise uc._hook_exception
        return result
