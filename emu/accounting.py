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

from emu.blockclock import MAX_RANGES, AccountState, Memo, Summary, SummaryStore, commit, learn, predict, time_block
from emu.blockmodel import FLAT_MACHINE, BlockSummary, Machine, flat_summary
from emu.elf import ElfImage, Perm
from emu.events import MILLICYCLES_PER_CYCLE
from emu.native_hook import add_native_hook

NO_BOUNDARY = 0xFFFF_FFFF_FFFF_FFFF
STOP_NONE, STOP_INSNS, STOP_UNKNOWN, STOP_CYCLES = 0, 1, 2, 3
UNLIMITED = 0xFFFF_FFFF_FFFF_FFFF
FORCE_PYTHON_ENV = "EMU_ACCOUNTING"
""""python": use the pure-Python hook even where the native one is built. "off": no accounting at
all (counts stay zero, budgets never stop a guest) - only benchmarks use this, as the baseline."""

CostFunction = Callable[[capstone.CsInsn], int]
"""Millicycles of front-end time one instruction takes (its position inside a block). A function of
the instruction's bytes alone: the sweep asks once per distinct encoding."""
Summarizer = Callable[[bytes, int], BlockSummary]
"""The block model's summary of one translation block: its code and its address."""


@dataclass(frozen=True)
class CpuModel:
    """What guest instructions cost and how fast virtual time runs.

    `cost_of` places an instruction inside its block (where a fault or `rdtsc` lands, what a
    single step costs) and is what the sweep of an image calls for every instruction; `summarize`
    times whole blocks, with `machine`'s predictor parameters."""

    name: str
    frequency_hz: int
    cost_of: CostFunction
    summarize: Summarizer
    machine: Machine = FLAT_MACHINE


def flat(cost_of: CostFunction) -> Summarizer:
    """A block model without dependencies: a block costs the sum of its instructions' `cost_of`."""

    def summarize(code: bytes, address: int) -> BlockSummary:
        return flat_summary([cost_of(insn) for insn in _DETAIL_DISASSEMBLER.disasm(code, address)])

    return summarize


def _one_cycle(_insn: capstone.CsInsn) -> int:
    return MILLICYCLES_PER_CYCLE


UNIT_CPU = CpuModel("unit", 1_000_000_000, _one_cycle, flat(_one_cycle))
"""Every instruction costs one cycle at 1 GHz: a simple model for tests of the accounting itself."""


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


def _disassembler(detail: bool = True) -> capstone.Cs:
    cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    cs.detail = detail
    return cs


_DETAIL_DISASSEMBLER = _disassembler()
"""Decodes with operand details, for costs and flat summaries."""
_BOUNDARY_DISASSEMBLER = _disassembler(detail=False)
"""Finds instruction boundaries: decoding without operand details is several times cheaper."""


def sweep(code: bytes, base: int, cost_of: CostFunction) -> PrefixTable:
    """Linear sweep of `code` at `base`; undecodable bytes are skipped one at a time.

    Only the first instruction of each distinct encoding is decoded in full, for `cost_of`."""
    insns = array("Q", [NO_BOUNDARY]) * (len(code) + 1)
    cost = array("Q", [0]) * (len(code) + 1)
    cost_by_bytes: dict[bytes, int] = {}
    count = total = 0
    offset = 0
    while offset < len(code):
        for _, size, _, _ in _BOUNDARY_DISASSEMBLER.disasm_lite(code[offset:], base + offset):
            insns[offset] = count
            cost[offset] = total
            raw = code[offset : offset + size]
            insn_cost = cost_by_bytes.get(raw)
            if insn_cost is None:
                insn_cost = cost_by_bytes[raw] = cost_of(next(_DETAIL_DISASSEMBLER.disasm(raw, base + offset, 1)))
            count += 1
            total += insn_cost
            offset += size
        if offset < len(code):  # capstone stopped at bytes it cannot decode
            insns[offset] = count
            cost[offset] = total
            offset += 1
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
    library.emu_loop_layout_size.restype = ctypes.c_uint64
    for statistic in (library.emu_loop_replayed, library.emu_loop_replays):
        statistic.restype = ctypes.c_uint64
        statistic.argtypes = [ctypes.c_void_p]
    library.emu_run_end.restype = None
    library.emu_run_end.argtypes = [ctypes.c_void_p]
    for name, mirror in (("summary", Summary), ("memo", Memo)):
        size = getattr(library, f"emu_{name}_layout_size")
        size.restype = ctypes.c_uint64
        if size() != ctypes.sizeof(mirror):
            raise RuntimeError(f"emu/_accounting.c and emu/blockclock.py disagree on struct emu_{name}")
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

    def __init__(self, uc: object, model: CpuModel) -> None:
        self.state = AccountState()
        self.state.emu_stop = _EMU_STOP
        self.state.insn_limit = UNLIMITED
        self.state.cost_limit = UNLIMITED
        self._cost_of = model.cost_of
        self._summarize = model.summarize
        self.summaries = SummaryStore(self.state, model.machine)
        self._tables: list[PrefixTable] = []
        self._pinned: list[object] = []
        self._image_ranges = 0
        self._image_learned: dict[tuple[int, int], BlockSummary] | None = None
        """The summaries learned of the image's blocks, shared by every engine running it."""
        self.native = _NATIVE is not None
        self._uc = uc
        self._loop: ctypes.Array[ctypes.c_char] | None = None
        """The native hook's loop finder and replayer (see emu/_accounting.c), when native."""
        self.run_ended: Callable[[], None] = lambda: None
        """Call after every run: a loop replay in progress ends (its state is rebuilt) and the trail
        the hook finds loops in is forgotten, since the host may change the state before the next run."""
        if _NATIVE is not None:
            self.run_ended = functools.partial(_NATIVE.emu_run_end, ctypes.addressof(self.state))
            self._loop = ctypes.create_string_buffer(_NATIVE.emu_loop_layout_size())
            self.state.loop = ctypes.addressof(self._loop)
        self._install(uc)

    def replay_loops(self, enabled: bool) -> None:
        """Let the native hook replay loops whose timing state repeats (the default), or time
        every block (for tests: both give the same counts and clock). Only while stopped."""
        if self._loop is not None:
            self.run_ended()
            self.state.loop = ctypes.addressof(self._loop) if enabled else None

    def replayed_blocks(self) -> int:
        """Blocks counted by replaying loops so far (0 without the native hook)."""
        return self._loop_statistic("emu_loop_replayed")

    def replays(self) -> int:
        """Loop replays begun so far."""
        return self._loop_statistic("emu_loop_replays")

    def _loop_statistic(self, function: str) -> int:
        if _NATIVE is None or self._loop is None:
            return 0
        return int(getattr(_NATIVE, function)(ctypes.addressof(self._loop)))

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
        self._image_learned = _learned(image, self._summarize)  # looked up once: hashing an image is slow
        for (start, end), summary in self._image_learned.items():
            insns = self._count(start, end)
            if insns is not None:
                self.summaries.add(start, end, summary, insns)

    def _count(self, start: int, end: int) -> int | None:
        """Instructions of the block [start, end): from the first table where both are boundaries."""
        for table in self._tables:
            first, last = table.lookup(start), table.lookup(end)
            if first is not None and last is not None:
                return last[0] - first[0]
        return None

    def _add_range(self, table: PrefixTable) -> None:
        if self.state.nranges == MAX_RANGES:
            # Recycle the oldest per-block range; image ranges stay.
            first = self._image_ranges
            self.summaries.forget_within(self._tables[first].base, self._tables[first].end)
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
        """Learn the block the hook did not know: sweep it if it is off the swept instruction
        stream, and summarize it for the block model."""
        address, size = int(self.state.unknown_address), int(self.state.unknown_size)
        end = address + size
        insns = self._count(address, end)
        if insns is None:
            self._add_range(sweep(read(address, size), address, self._cost_of))
            insns = self._count(address, end)
            assert insns is not None
        code = read(address, size)
        summary = summary_of(code, address, self._summarize)
        self.summaries.add(address, end, summary, insns)
        learned = self._image_learned
        if learned is not None and any(t.lookup(address) is not None for t in self._tables[: self._image_ranges]):
            # Code of the image itself: later engines running the image start out knowing the block.
            learned[(address, end)] = summary

    def continue_at(self, address: int) -> None:
        """The current block stopped before `address` without a fault (the instruction log had to
        drain): the block was counted and timed whole, so the block that resumes there is its rest."""
        self.state.cont_start = address

    def block_offset(self, address: int) -> tuple[int, int] | None:
        """(instructions, millicycles) of the current block that retire before `address`.

        Uses the first range in which both the block's start and `address` are instruction
        boundaries, as the native code does. Inside a block, time runs at the front end's pace
        (the prefix tables), within what the block was charged.
        """
        start = self.state.block_start
        charged = int(self.state.cost - self.state.block_cost)
        for table in self._tables:
            first, here = table.lookup(start), table.lookup(address)
            if first is not None and here is not None:
                return here[0] - first[0], min(here[1] - first[1], charged)
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

    # ---------------------------------------------------------- Python fallback

    def _python_block(self, uc: object, address: int, size: int, _user: object) -> None:
        """The same decision as emu_account_block, for engines without the native hook."""
        state = self.state
        end = address + size
        start = address
        state.continued = 0
        if state.cont_start and address == state.cont_start:
            if end <= state.block_end:
                state.cont_start = 0
                state.continued = 1
                return
            start = int(state.block_end)
        found = self.summaries.find(start, end)
        if found is None:
            state.stop = STOP_UNKNOWN
            state.unknown_address, state.unknown_size = start, end - start
            uc.emu_stop()  # type: ignore[attr-defined]
            return
        summary, count = found
        outcome = predict(state, start)
        clock, ready = time_block(state, summary, outcome.start)
        cost = clock - state.cost
        if state.insns + count > state.insn_limit or state.cost + cost > state.cost_limit:
            state.stop = STOP_INSNS if state.insns + count > state.insn_limit else STOP_CYCLES
            uc.emu_stop()  # type: ignore[attr-defined]
            return
        learn(state, outcome, start)
        commit(state, summary, outcome, ready)
        state.cont_start = 0
        state.block_start, state.block_end = start, end
        state.block_insns, state.block_cost = state.insns, state.cost
        state.insns += count
        state.cost += cost


@functools.lru_cache(maxsize=64)
def _learned(image: ElfImage, summarize: Summarizer) -> dict[tuple[int, int], BlockSummary]:
    """The summaries learned so far of blocks in `image`'s code, by (start, end)."""
    return {}


@functools.lru_cache(maxsize=1 << 16)
def summary_of(code: bytes, address: int, summarize: Summarizer) -> BlockSummary:
    """The summary of the block of `code` at `address` (cached: the same bytes at the same place
    time the same in every engine)."""
    return summarize(code, address)
