"""Exact instruction and cycle accounting per translated block, natively when possible.

Each executable segment of an image is swept once with capstone into two prefix tables indexed by
byte offset: instructions and millicycles retired before that offset (EMU_NO_BOUNDARY where an
offset is not an instruction boundary). A block [a, a+size) then costs P[a+size] - P[a].

A Unicorn block hook applies this before each block runs and stops emulation before a block that
would cross the instruction or cycle budget, so a budget stop never leaves a block half-counted.
The hook is the C function in `emu/_accounting.c` when that extension was built, or the same logic
in Python otherwise; both read and write one `AccountState` structure, so every other piece of
the emulator (fault settling, `rdtsc`, the exact step mode) is shared and the counts are identical.
"""

from __future__ import annotations

import ctypes
import functools
import os
from array import array
from collections.abc import Callable
from dataclasses import dataclass

import capstone
from unicorn import unicorn_const as uc_const
from unicorn import x86_const
from unicorn.unicorn_py3.unicorn import uclib

from emu.elf import ElfImage, Perm
from emu.events import MILLICYCLES_PER_CYCLE
from emu.native_hook import add_native_hook

NO_BOUNDARY = 0xFFFF_FFFF_FFFF_FFFF
MAX_RANGES = 16
STOP_NONE, STOP_INSNS, STOP_UNKNOWN, STOP_CYCLES = 0, 1, 2, 3
UNLIMITED = 0xFFFF_FFFF_FFFF_FFFF
FORCE_PYTHON_ENV = "EMU_ACCOUNTING"
""""python": use the pure-Python hook even where the native one is built. "off": no accounting at
all (counts stay zero, budgets never stop a guest) - only benchmarks use this, as the baseline."""

CostFunction = Callable[[capstone.CsInsn], int]
"""Millicycles one instruction costs."""


@dataclass(frozen=True)
class CpuModel:
    """What a guest instruction costs and how fast virtual time runs."""

    name: str
    frequency_hz: int
    cost_of: CostFunction


def _one_cycle(_insn: capstone.CsInsn) -> int:
    return MILLICYCLES_PER_CYCLE


UNIT_CPU = CpuModel("unit", 1_000_000_000, _one_cycle)
"""Every instruction costs one cycle at 1 GHz: a simple model for tests of the accounting itself."""


class Range(ctypes.Structure):
    _fields_ = [
        ("base", ctypes.c_uint64),
        ("end", ctypes.c_uint64),
        ("insns", ctypes.POINTER(ctypes.c_uint64)),
        ("cost", ctypes.POINTER(ctypes.c_uint64)),
    ]


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
        ("paused", ctypes.c_uint32),
        ("syscalled", ctypes.c_uint32),
        ("emu_stop", ctypes.c_void_p),
        ("ranges", Range * MAX_RANGES),
    ]


@dataclass(frozen=True)
class PrefixTable:
    """Prefix sums over one run of code: offsets are relative to `base`."""

    base: int
    end: int
    insns: array  # type: ignore[type-arg]
    cost: array  # type: ignore[type-arg]

    def lookup(self, address: int) -> tuple[int, int] | None:
        """(instructions, millicycles) retired before `address`, if it is an instruction boundary here."""
        if not self.base <= address <= self.end:
            return None
        count = self.insns[address - self.base]
        if count == NO_BOUNDARY:
            return None
        return count, self.cost[address - self.base]


def _disassembler() -> capstone.Cs:
    cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    cs.detail = True
    return cs


def sweep(code: bytes, base: int, cost_of: CostFunction) -> PrefixTable:
    """Linear sweep of `code` at `base`; undecodable bytes are skipped one at a time."""
    cs = _disassembler()
    insns = array("Q", [NO_BOUNDARY]) * (len(code) + 1)
    cost = array("Q", [0]) * (len(code) + 1)
    count = total = 0
    offset = 0
    while offset < len(code):
        insns[offset] = count
        cost[offset] = total
        decoded = next(cs.disasm(code[offset : offset + 16], base + offset, 1), None)
        if decoded is None:
            offset += 1
            continue
        count += 1
        total += cost_of(decoded)
        offset += decoded.size
    insns[len(code)] = count
    cost[len(code)] = total
    return PrefixTable(base, base + len(code), insns, cost)


@functools.lru_cache(maxsize=64)
def image_tables(image: ElfImage, cost_of: CostFunction) -> tuple[PrefixTable, ...]:
    """Prefix tables for every executable segment of `image` (cached: images are immutable)."""
    return tuple(sweep(segment.data, segment.vaddr, cost_of) for segment in image.segments if segment.perms & Perm.X)


def _load_native() -> ctypes.CDLL | None:
    if os.environ.get(FORCE_PYTHON_ENV) in ("python", "off"):
        return None
    try:
        from emu import _accounting  # type: ignore[attr-defined]
    except ImportError:
        return None
    library = ctypes.CDLL(_accounting.__file__)
    library.emu_account_layout_size.restype = ctypes.c_uint64
    if library.emu_account_layout_size() != ctypes.sizeof(AccountState):
        raise RuntimeError("emu/_accounting.c and emu/accounting.py disagree on struct emu_account")
    return library


_NATIVE = _load_native()
_X86_INS_SYSCALL = x86_const.UC_X86_INS_SYSCALL
_EMU_STOP = ctypes.cast(uclib.uc_emu_stop, ctypes.c_void_p).value


def native_available() -> bool:
    return _NATIVE is not None


def native_library() -> ctypes.CDLL | None:
    """The built extension as a C library (None where it is not built or EMU_ACCOUNTING=python)."""
    return _NATIVE


def add_native_entry_hooks(uc: object, state: AccountState) -> bool:
    """Register the native identity TLB fill and the native `syscall` stop (which sets
    `state.syscalled`); False where the extension is not built (the caller then hooks Python)."""
    if _NATIVE is None or not all(hasattr(_NATIVE, name) for name in ("emu_identity_tlb_fill", "emu_syscall_stop")):
        return False  # not built, or built from an older _accounting.c (reinstall to rebuild it)
    add_native_hook(uc, uc_const.UC_HOOK_TLB_FILL, _NATIVE.emu_identity_tlb_fill, None)
    syscall = ctypes.c_int(_X86_INS_SYSCALL)
    add_native_hook(uc, uc_const.UC_HOOK_INSN, _NATIVE.emu_syscall_stop, state, 1, 0, syscall)
    return True


class Accountant:
    """Owns one engine's AccountState and the block hook that keeps it."""

    def __init__(self, uc: object, cost_of: CostFunction) -> None:
        self.state = AccountState()
        self.state.emu_stop = _EMU_STOP
        self.state.insn_limit = UNLIMITED
        self.state.cost_limit = UNLIMITED
        self._cost_of = cost_of
        self._tables: list[PrefixTable] = []
        self._insn_costs: dict[int, int] = {}
        self._pinned: list[object] = []
        self._image_ranges = 0
        self.native = _NATIVE is not None
        self._uc = uc
        self._install(uc)

    def _install(self, uc: object) -> None:
        if os.environ.get(FORCE_PYTHON_ENV) == "off":
            return
        if _NATIVE is not None:
            add_native_hook(uc, uc_const.UC_HOOK_BLOCK, _NATIVE.emu_account_block, self.state)
        else:
            uc.hook_add(uc_const.UC_HOOK_BLOCK, self._python_block)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ tables

    def add_image(self, image: ElfImage) -> None:
        for table in image_tables(image, self._cost_of):
            self._add_range(table)
        self._image_ranges = self.state.nranges

    def _add_range(self, table: PrefixTable) -> None:
        if self.state.nranges == MAX_RANGES:
            # Recycle the oldest per-block range; image ranges stay.
            first = self._image_ranges
            del self._tables[first]
            del self._pinned[2 * first : 2 * first + 2]
            for i in range(first, MAX_RANGES - 1):
                self.state.ranges[i] = self.state.ranges[i + 1]
            self.state.nranges -= 1
        insns = (ctypes.c_uint64 * len(table.insns)).from_buffer(table.insns)
        cost = (ctypes.c_uint64 * len(table.cost)).from_buffer(table.cost)
        self._pinned += [insns, cost]
        entry = self.state.ranges[self.state.nranges]
        entry.base, entry.end = table.base, table.end
        entry.insns = ctypes.cast(insns, ctypes.POINTER(ctypes.c_uint64))
        entry.cost = ctypes.cast(cost, ctypes.POINTER(ctypes.c_uint64))
        self._tables.append(table)
        self.state.nranges += 1

    def learn_block(self, read: Callable[[int, int], bytes]) -> None:
        """Add a range for the block the hook did not know (off the swept instruction stream)."""
        address, size = self.state.unknown_address, self.state.unknown_size
        self._add_range(sweep(read(address, size), address, self._cost_of))

    def block_offset(self, address: int) -> tuple[int, int] | None:
        """(instructions, millicycles) of the current block that retire before `address`.

        Uses the first range in which both the block's start and `address` are instruction
        boundaries, as the native code does.
        """
        start = self.state.block_start
        for table in self._tables:
            first, here = table.lookup(start), table.lookup(address)
            if first is not None and here is not None:
                return here[0] - first[0], here[1] - first[1]
        return None

    def boundaries(self, begin: int, end: int) -> list[tuple[int, int]]:
        """(address, size) of every swept instruction of the image ranges inside [begin, end)."""
        out: list[tuple[int, int]] = []
        for table in self._tables[: self._image_ranges]:
            previous = None
            for offset in range(len(table.insns)):
                if table.insns[offset] == NO_BOUNDARY:
                    continue
                if previous is not None and begin <= table.base + previous < end:
                    out.append((table.base + previous, offset - previous))
                previous = offset
        return out

    def instruction_cost(self, address: int, size: int) -> int:
        """Millicycles of the one instruction at `address` (from the tables when they know it)."""
        cost = self._insn_costs.get(address)
        if cost is None:
            cost = self._lookup_instruction_cost(address, size)
            self._insn_costs[address] = cost
        return cost

    def _lookup_instruction_cost(self, address: int, size: int) -> int:
        for table in self._tables:
            first, last = table.lookup(address), table.lookup(address + size)
            if first is not None and last is not None and last[0] == first[0] + 1:
                return last[1] - first[1]
        return self._cost_of(next(_disassembler().disasm(bytes(self._read(address, size)), address, 1)))

    def _read(self, address: int, size: int) -> bytes:
        return bytes(self._uc.mem_read(address, size))  # type: ignore[attr-defined]

    # ---------------------------------------------------------- Python fallback

    def _python_block(self, uc: object, address: int, size: int, _user: object) -> None:
        """The same decision as emu_account_block, for engines without the native hook."""
        state = self.state
        if state.paused:
            return
        end = address + size
        for table in self._tables:
            first, last = table.lookup(address), table.lookup(end)
            if first is None or last is None:
                continue
            count, cost = last[0] - first[0], last[1] - first[1]
            if state.insns + count > state.insn_limit or state.cost + cost > state.cost_limit:
                state.stop = STOP_INSNS if state.insns + count > state.insn_limit else STOP_CYCLES
                uc.emu_stop()  # type: ignore[attr-defined]
                return
            state.block_start, state.block_insns, state.block_cost = address, state.insns, state.cost
            state.insns += count
            state.cost += cost
            return
        state.stop = STOP_UNKNOWN
        state.unknown_address, state.unknown_size = address, size
        uc.emu_stop()  # type: ignore[attr-defined]
