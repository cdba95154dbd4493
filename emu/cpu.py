"""One guest address space and CPU on a Unicorn engine, with exact instruction and cycle accounting.

`GuestCpu.run(...)` executes until the guest issues `syscall`, faults, or would exceed its
instruction or cycle budget, and returns a `Trap` that says which. Guest faults never raise: they
come back as a `Fault`. `retired` (instructions) and `cost` (millicycles) are exact at every kind
of stop: the block accounting (emu/accounting.py) counts whole blocks before they run, a fault
inside a block gives back the block's unexecuted tail, and `rdtsc` sees the cycles retired up to
itself. A budget stop lands on a block boundary; `run(..., exact=True)` then steps the remainder
one instruction at a time (used once, for the machine's final instruction limit).
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable
from enum import Enum
from typing import Any, NamedTuple, NoReturn

import unicorn
from unicorn import unicorn_const as uc_const
from unicorn import x86_const
from unicorn.unicorn_py3.arch.intel import HOOK_INSN_CPUID_CFUNC

from emu.accounting import (
    STOP_CYCLES,
    STOP_INSNS,
    STOP_NONE,
    STOP_UNKNOWN,
    UNLIMITED,
    Accountant,
    CpuModel,
    add_native_entry_hooks,
)
from emu.coverage import BlockCoverage, CoverageMap
from emu.cpuid import cpuid_leaf
from emu.debugstop import DebugStops
from emu.elf import ElfImage
from emu.engine_calls import EngineCalls
from emu.engine_state import EngineState
from emu.events import MILLICYCLES_PER_CYCLE
from emu.faults import Fault as Fault
from emu.faults import FaultCatcher
from emu.faults import FaultCause as FaultCause
from emu.insnlog import Feed, InsnLog
from emu.interrupt import engine_running
from emu.memory import GuestMemory
from emu.memory import GuestMemoryError as GuestMemoryError
from emu.registers import RegisterFile, register_ids

_STOP_NOWHERE = 0xFFFF_FFFF_FFFF_FFFF
_TCG_BUFFER_BYTES = 8 << 20
_PR_SET_THP_DISABLE = 41


@functools.cache
def _no_huge_pages() -> None:
    """Unicorn asks for transparent huge pages on each engine's translation buffer, so every
    engine touched 2 MiB of it for a few kilobytes of code (2.9 MiB resident per engine, 1 MiB
    without). Turn huge pages off for this process (Linux; elsewhere nothing happens)."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(_PR_SET_THP_DISABLE, 1, 0, 0, 0)


class TrapKind(Enum):
    SYSCALL = "syscall"
    FAULT = "fault"
    BUDGET = "budget"
    DEBUG = "debug"
    """A breakpoint or a finished step stopped the guest before the instruction at rip."""


class Trap(NamedTuple):
    """Why `run` returned. For SYSCALL, rip is the address after the `syscall` instruction.
    (A named tuple: one is made per run, and a frozen dataclass costs twice as much to make.)"""

    kind: TrapKind
    rip: int
    fault: Fault | None = None
    registers: tuple[int, ...] | None = None
    """For SYSCALL: the registers `GuestCpu.read_at_syscall` named, read at the stop."""


BlockProbe = Callable[[int, int, int, int, int, int], None]
"""probe(address, size, machine_icount, machine_clock_millicycles, block_insns, block_millicycles)"""


def _identity_tlb_fill(uc: unicorn.Uc, page: int, _access: int, entry: object, _user: object) -> bool:
    """Map the virtual page `page` to the same physical address, with every permission: the
    memory map's own permissions decide what is allowed, and unmapped pages fault exactly."""
    entry.paddr = page  # type: ignore[attr-defined]
    entry.perms = uc_const.UC_PROT_ALL  # type: ignore[attr-defined]
    return True


def _engine_gone(*_args: Any) -> NoReturn:
    raise RuntimeError("this guest is dead: its engine is closed or serves another guest")


class GuestCpu:
    """A single-threaded guest: its own Unicorn engine, memory map, instruction and cycle counts."""

    def __init__(self, model: CpuModel) -> None:
        _no_huge_pages()
        self._uc = unicorn.Uc(uc_const.UC_ARCH_X86, uc_const.UC_MODE_64)
        self._kept: list[object] = []
        """What native hooks point into, kept as long as the engine."""
        self._uc.ctl_set_tcg_buffer_size(_TCG_BUFFER_BYTES)
        # Virtual TLB mode, with a fill hook that maps every page to the physical address equal to
        # its full 64-bit virtual address. The default mode truncates addresses to 52 bits, so a
        # non-canonical address aliased a low one (a fault at 0x8000000000000010 was reported at
        # 0x10, and a non-canonical jump could run mapped code). This way every memory fault hook
        # sees the exact address, and nothing is ever mapped at a non-canonical one. (Without a
        # fill hook, virtual mode ran compiled code 2.5x slower; the hook runs once per TLB miss.)
        self._uc.ctl_set_tlb_mode(uc_const.UC_TLB_VIRTUAL)
        # Memory and registers are their own rooms; their methods are the CPU's.
        self._acct = Accountant(self._uc, model)
        self._state = self._acct.state
        syscall_flag = ctypes.addressof(self._state) + type(self._state).syscalled.offset
        self._calls = EngineCalls(self._uc, syscall_flag)
        self._at_syscall = register_ids(("rip",))
        self._at_syscall_rip = 0
        memory, registers = GuestMemory(self._uc), RegisterFile(self._uc, self._calls)
        self._memory = memory
        self.map, self.is_mapped, self.read, self.write = memory.map, memory.is_mapped, memory.read, memory.write
        self.host_buffer = memory.host_buffer
        self.regions = memory.regions
        self.reg, self.set_reg = registers.reg, registers.set_reg
        self.regs, self.set_regs = registers.regs, registers.set_regs
        self.registers, self.debug = registers, DebugStops(self._uc)
        self.vector_registers = registers.vector_registers
        self._closed = False
        self._instrumented = False
        self.ran_insns = self.ran_cost = 0
        """Instructions and millicycles the last `run` retired."""
        self._clock_base = 0
        self._icount_base = 0
        self._image: ElfImage | None = None
        self._insn_log: InsnLog | None = None
        self._next_seq: Callable[[], int] = lambda: 0
        uc = self._uc
        if not add_native_entry_hooks(uc, self._state):  # native: no Python call per syscall or TLB miss
            uc.hook_add(uc_const.UC_HOOK_TLB_FILL, _identity_tlb_fill)
            uc.hook_add(uc_const.UC_HOOK_INSN, self._on_syscall, None, 1, 0, x86_const.UC_X86_INS_SYSCALL)
        uc.hook_add(uc_const.UC_HOOK_INSN, self._on_cpuid, None, 1, 0, x86_const.UC_X86_INS_CPUID)
        self._faults = FaultCatcher(uc)
        self._running = engine_running(self._stop_soon)
        """The guard around each `emu_start` (made once: an engine never runs inside itself)."""
        # The binding refuses RDTSC hooks; the C core supports them (see the unicorn notes).
        self._rdtsc_hooks = [HOOK_INSN_CPUID_CFUNC(self._on_rdtsc), HOOK_INSN_CPUID_CFUNC(self._on_rdtscp)]
        rdtsc_insns = (x86_const.UC_X86_INS_RDTSC, x86_const.UC_X86_INS_RDTSCP)
        for callback, insn in zip(self._rdtsc_hooks, rdtsc_insns, strict=True):
            uc._Uc__do_hook_add(uc_const.UC_HOOK_INSN, callback, 1, 0, ctypes.c_int(insn))

    def replay_loops(self, enabled: bool) -> None:
        """Whether the clock replays loops whose timing repeats (the default) or times every
        block: the counts and the clock are the same either way (see emu/_accounting.c). An
        engine with replay off is not reused for another guest."""
        self._acct.replay_loops(enabled)
        self._instrumented |= not enabled

    def replayed_blocks(self) -> int:
        """Blocks the clock has counted by replaying loops so far (0 with replay off)."""
        return self._acct.replayed_blocks()

    def loop_replays(self) -> int:
        """Loop replays the clock has begun so far."""
        return self._acct.replays()

    def read_at_syscall(self, names: tuple[str, ...]) -> None:
        """Read `names` (rip among them) with each stop at a `syscall`: its `Trap.registers`."""
        self._at_syscall = register_ids(names)
        self._at_syscall_rip = names.index("rip")

    def close(self) -> None:
        """Release the Unicorn engine now. Counts stay readable; touching the engine is an error."""
        finalizer = getattr(self._uc, "_Uc__finalizer", None)
        if finalizer is not None:
            finalizer()
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def can_restore(self, state: EngineState) -> bool:
        """No probe or instruction log was attached, loop replay was not turned off, and the memory
        map is the one `state` was taken with: the engine can be put back to `state` and serve
        another guest."""
        return not self._closed and not self._instrumented and state.fits(self._memory)

    def save_state(self) -> EngineState:
        """Registers, volatile pages and counters now (see emu/engine_state.py)."""
        self.registers.flush()
        return EngineState.take(self._uc, self._memory, self._state, self._inside)

    def restore_state(self, state: EngineState) -> int:
        """Put back a state `save_state` took from this engine; the number of pages rewritten."""
        self.registers.rip_hint = None  # the context restore moves rip
        self.registers.drop_staged()  # and sets every register
        self._inside, self._resumed_at = state.inside, None
        return state.put_back(self._uc, self._memory, self._state)

    def retire(self) -> GuestCpu:
        """A closed view with the final counts, for the dead process; the engine stays usable."""
        return _RetiredCpu(self._image, self.retired, self.cost)

    @property
    def retired(self) -> int:
        """Instructions this guest has retired."""
        return int(self._state.insns)

    @property
    def cost(self) -> int:
        """Millicycles this guest's retired instructions cost."""
        return int(self._state.cost)

    def add_block_probe(self, probe: BlockProbe, begin: int = 1, end: int = 0) -> None:
        """Call `probe` before each block in [begin, end] runs (all blocks by default).

        The probe sees the block's address and size, the machine's instruction count and clock
        (millicycles) before it, and what the block costs (instructions, millicycles). Probes
        never change any count.
        """
        state = self._state

        def on_block(uc: unicorn.Uc, address: int, size: int, _user: object) -> None:
            if state.stop != STOP_NONE or (address, int(state.block_insns)) == self._resumed_at:
                return  # not run now (a budget stop), or the rest of a block shown already (a debug stop)
            if state.continued:
                return  # the rest of a block the instruction log split: counted with its start
            probe(
                address,
                size,
                self._icount_base + state.block_insns,
                self._clock_base + state.block_cost,
                int(state.insns - state.block_insns),
                int(state.cost - state.block_cost),
            )

        self._uc.hook_add(uc_const.UC_HOOK_BLOCK, on_block, None, begin, end)
        self._instrumented = True
        self._uc.ctl_flush_tb()

    def attach_coverage(self, into: CoverageMap) -> BlockCoverage:
        """Mark in `into` every block that starts in its range from now on (see emu/coverage.py);
        counts and cycles are unchanged. The engine keeps the hook (and its state) for life."""
        coverage = BlockCoverage(self._uc, into)
        self._kept.append(coverage)
        return coverage

    def attach_insn_log(
        self, pid: int, feed: Feed, next_seq: Callable[[], int], *, text: bool, begin: int = 1, end: int = 0
    ) -> None:
        """Trace every instruction in [begin, end] as an `insn` event, rendered natively (see emu/insnlog.py).

        `feed(count, jsonl, text)` receives the lines after each run; `next_seq()` says where
        their numbering starts. Never changes any count.
        """
        symbolize = self.symbolize
        self._insn_log = InsnLog(self._uc, self._acct, self.read, symbolize, pid, feed, text=text, begin=begin, end=end)
        self._next_seq = next_seq
        self._instrumented = True
        self._uc.ctl_flush_tb()

    def symbolize(self, address: int) -> str:
        """`function+0xoffset` for an address in the loaded image, else the bare address."""
        where = self._image.symbolize(address) if self._image is not None else None
        return f"{where[0]}+{where[1]:#x}" if where is not None else f"{address:#x}"

    def load(self, image: ElfImage) -> None:
        """Map every PT_LOAD segment of `image`, sweep its code, and point RIP at its entry."""
        for segment in image.segments:
            self.map(segment.vaddr, segment.memsz, segment.perms, segment.data)
        self._acct.add_image(image)
        self._image = image
        self._memory.seal()
        self.set_reg("rip", image.entry)

    # --------------------------------------------------------------- execution

    def run(
        self, budget: int, cost_budget: int = UNLIMITED, *, exact: bool = False, clock: int = 0, icount: int = 0
    ) -> Trap:
        """Run until a syscall, a fault, or the next block would exceed either budget.

        `budget` is in instructions, `cost_budget` in millicycles. `clock` (millicycles) and
        `icount` are the machine's virtual time and instruction count now; `rdtsc` and probes see
        them advanced by what this run retires. With `exact`, an instruction-budget stop lands on
        exactly `budget` retired instructions.
        """
        state = self._state
        insns_before, cost_before = state.insns, state.cost
        self._clock_base = clock - cost_before
        self._icount_base = icount - insns_before
        insn_limit = insns_before + budget
        state.insn_limit = insn_limit
        state.cost_limit = UNLIMITED if cost_budget == UNLIMITED else cost_before + cost_budget
        log = self._insn_log
        if log is not None:
            log.begin_run(self._next_seq(), self._icount_base, self._clock_base)
        inside = self._inside
        trap: Trap | None
        if exact and inside is not None and inside[1] > insn_limit:
            trap = self._run_exact_tail(insn_limit)  # the limit falls in the rest of a block stopped inside
        else:
            trap = self._emulate(False)  # `_run_once`, its first try inline: most runs end there
        if trap is None:
            trap = self._run_once()
        if trap.kind is TrapKind.BUDGET and exact and state.stop == STOP_INSNS and state.insns < insn_limit:
            trap = self._run_exact_tail(insn_limit)
        state.insn_limit = state.cost_limit = UNLIMITED
        self.ran_insns, self.ran_cost = state.insns - insns_before, state.cost - cost_before
        if log is not None:
            log.drain()
        return trap

    def _run_exact_tail(self, insn_limit: int) -> Trap:
        """Run on to exactly `insn_limit` retired instructions: the block that crosses the limit
        is counted and timed whole, and a code hook stops inside it (see `_stop_inside`)."""
        self._state.insn_limit = UNLIMITED
        self._exact_limit = insn_limit
        return self._run_once(exact_tail=True)

    def _run_once(self, *, exact_tail: bool = False) -> Trap:
        while True:
            trap = self._emulate(exact_tail)
            if trap is not None:
                return trap

    def _emulate(self, exact_tail: bool) -> Trap | None:
        state = self._state
        state.stop = state.syscalled = STOP_NONE
        faults = self._faults
        faults.reset()
        self.debug.hit = None
        error: unicorn.UcError | None = None
        step_hook = None
        self._exact_hit = False
        if exact_tail:
            # Watch instruction by instruction. Translated blocks do not see a hook added later,
            # so flush before and after (this path runs once, at a final stop).
            step_hook = self._uc.hook_add(uc_const.UC_HOOK_CODE, self._on_step)
            self._uc.ctl_flush_tb()
        at_syscall = None
        registers = self.registers
        try:
            begin = registers.rip_hint
            registers.rip_hint = None  # the engine moves on: the hint holds again once rip is read
            if self._inside is not None:
                self._resume_inside(self.reg("rip") if begin is None else begin)
            with self._running:
                begin = self.reg("rip") if begin is None else begin
                at_syscall = self._calls.start(begin, self._at_syscall, registers.take_staged())
        except unicorn.UcError as exc:
            error = exc
        finally:
            if at_syscall is None:  # a `syscall` stop ended the run natively (emu_syscall_stop)
                self._acct.run_ended()
            if step_hook is not None:
                self._uc.hook_del(step_hook)
                self._uc.ctl_flush_tb()
        if at_syscall is not None and faults.fault is None:
            # the usual stop, as the checks below would find it, with its registers read already
            rip = registers.rip_hint = at_syscall[self._at_syscall_rip]
            return Trap(TrapKind.SYSCALL, rip, None, at_syscall)
        rip = registers.rip_hint = self.reg("rip")
        if faults.fault is None and error is not None:
            faults.fault = faults.from_error(error, rip)
        if faults.fault is None and not state.syscalled and self._exact_hit:
            self._stop_inside(rip)
            if self._insn_log is not None:
                self._insn_log.retract(rip)
            state.stop = STOP_INSNS
            return Trap(TrapKind.BUDGET, rip)
        if faults.fault is None and not state.syscalled and self.debug.hit is not None:
            self._stop_inside(rip)
            self._resumed_at = (rip, int(state.insns))
            if self._insn_log is not None:
                self._insn_log.retract(rip)
            return Trap(TrapKind.DEBUG, rip)
        log = self._insn_log
        syscalled = state.syscalled
        if faults.fault is None and not syscalled and log is not None and log.stopped():
            # The instruction log stopped before `rip` ran: the block was counted and timed whole,
            # so the block that resumes at `rip` is its rest (a split must not change the clock).
            # Let the log drain or learn the instruction, and go on from `rip`.
            self._acct.continue_at(rip)
            log.service()
            return None
        if faults.fault is None and not syscalled and state.stop == STOP_NONE:
            # emu_start returned with no hook asking: the guest executed `hlt`, a privileged
            # instruction at user level.
            faults.fault = Fault(FaultCause.GENERAL_PROTECTION, max(rip - 1, 0), None, "privileged instruction hlt")
        if faults.fault is not None:
            self._settle_fault(faults.fault)
            return Trap(TrapKind.FAULT, faults.fault.rip, faults.fault)
        if syscalled:
            return Trap(TrapKind.SYSCALL, rip)
        if state.stop == STOP_UNKNOWN:
            # The block hook met a block off the swept instruction stream: learn it and go on.
            self._acct.learn_block(self.read)
            return None
        assert state.stop in (STOP_INSNS, STOP_CYCLES)
        return Trap(TrapKind.BUDGET, rip)

    def _stop_soon(self) -> None:
        """Make `emu_start` return before the next block (a signal arrived; see emu/interrupt.py):
        `emu_stop` if it runs, else the zero budget stops it at its first block (the run is abandoned)."""
        self._state.insn_limit = 0
        self._uc.emu_stop()

    def _settle_fault(self, fault: Fault) -> None:
        """Uncount what a fault kept from retiring: the faulting instruction and the rest of its block.

        Traps (int3, int n) retire their instruction; fetch faults happen before any instruction
        of the new block was counted.
        """
        if self._faults.retired_its_instruction(fault):
            return
        self._settle_to(fault.rip)

    def _settle_to(self, rip: int) -> None:
        """Count the current block only up to `rip` (the instructions before it retired)."""
        state = self._state
        done = self._acct.block_offset(rip)
        if done is not None:
            state.insns = state.block_insns + done[0]
            state.cost = state.block_cost + done[1]

    def virtual_clock(self) -> int:
        """The machine's virtual time in millicycles at the current instruction (inside a hook)."""
        state = self._state
        done = self._acct.block_offset(self.reg("rip"))
        cost = int(state.cost) if done is None else int(state.block_cost) + done[1]
        return self._clock_base + cost

    # -------------------------------------------------------------------- hooks

    _resumed_at: tuple[int, int] | None = None
    """(rip, instructions) where a debug stop left the guest: block probes skip the resumed rest."""
    _inside: tuple[int, int, int] | None = None
    """(rip, instructions, millicycles) of a stop inside a block: the counts with the whole block."""
    _exact_limit = 0
    _exact_hit = False

    def _stop_inside(self, rip: int) -> None:
        """The guest stopped inside the current block, before `rip` (a debug stop, an exact
        instruction limit). The block was counted and timed whole; show the counts up to `rip`,
        and keep the whole block's, which `_resume_inside` puts back: a stop must not change the
        clock (the block model times a block as a whole, so its two halves need not add up to it)."""
        state = self._state
        whole = (int(state.insns), int(state.cost))
        if self._acct.block_offset(rip) is None:
            return
        self._settle_to(rip)
        self._inside = (rip, *whole)

    def _resume_inside(self, rip: int) -> None:
        """Before running on from a stop inside a block: if the guest resumes where it stopped,
        its counts are the whole block's again and the rest of the block runs uncounted."""
        stopped_at, insns, cost = self._inside  # type: ignore[misc]
        self._inside = None
        if rip != stopped_at:
            return  # a debugger moved the guest: the rest of the block never runs
        self._state.insns, self._state.cost = insns, cost
        self._acct.continue_at(rip)

    def _on_step(self, uc: unicorn.Uc, address: int, _size: int, _user: object) -> None:
        if self._insn_log is not None and self._insn_log.stopped():
            return  # the log stopped before this instruction: it does not run now
        done = self._acct.block_offset(address)
        if done is not None and self._state.block_insns + done[0] >= self._exact_limit:
            self._exact_hit = True
            uc.emu_stop()  # before this instruction executes

    def _on_syscall(self, uc: unicorn.Uc, _user: object) -> None:
        self._state.syscalled = 1
        uc.emu_stop()  # RIP is left after the syscall instruction: resuming continues there

    def _on_cpuid(self, uc: unicorn.Uc, _user: object) -> int:
        leaf = cpuid_leaf(self.reg("rax") & 0xFFFF_FFFF, self.reg("rcx") & 0xFFFF_FFFF)
        for name, value in zip(("rax", "rbx", "rcx", "rdx"), leaf, strict=True):
            self.set_reg(name, value)
        return 1  # skip the real instruction

    def _tsc(self) -> int:
        return self.virtual_clock() // MILLICYCLES_PER_CYCLE

    def _on_rdtsc(self, _uch: object, _user: object) -> int:
        tsc = self._tsc()
        self.set_reg("rax", tsc & 0xFFFF_FFFF)
        self.set_reg("rdx", tsc >> 32)
        return 1

    def _on_rdtscp(self, _uch: object, _user: object) -> int:
        self.set_reg("rcx", 0)  # IA32_TSC_AUX: processor 0
        return self._on_rdtsc(_uch, _user)


class _RetiredCpu(GuestCpu):
    """What a dead guest keeps of its CPU: its image and final counts (a few words: a long run
    keeps one per dead process). Anything that would touch an engine is an error."""

    map = is_mapped = read = write = host_buffer = reg = set_reg = regs = set_regs = staticmethod(_engine_gone)  # type: ignore[assignment]

    def __init__(self, image: ElfImage | None, retired: int, cost: int) -> None:
        self._image, self._closed, self._instrumented = image, True, True
        self._final = (retired, cost)

    @property
    def retired(self) -> int:
        return self._final[0]

    @property
    def cost(self) -> int:
        return self._final[1]
