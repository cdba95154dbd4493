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
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import unicorn
from unicorn import unicorn_const as uc_const
from unicorn import x86_const
from unicorn.unicorn_py3.arch.intel import HOOK_INSN_CPUID_CFUNC

from emu.accounting import STOP_CYCLES, STOP_INSNS, STOP_NONE, STOP_UNKNOWN, UNLIMITED, Accountant, CpuModel
from emu.cpuid import cpuid_leaf
from emu.elf import ElfImage
from emu.events import MILLICYCLES_PER_CYCLE
from emu.faults import Fault as Fault
from emu.faults import FaultCatcher
from emu.faults import FaultCause as FaultCause
from emu.insnlog import Feed, InsnLog
from emu.interrupt import engine_running
from emu.memory import GuestMemory
from emu.memory import GuestMemoryError as GuestMemoryError
from emu.registers import RegisterFile

_STOP_NOWHERE = 0xFFFF_FFFF_FFFF_FFFF
_TCG_BUFFER_BYTES = 8 << 20


class TrapKind(Enum):
    SYSCALL = "syscall"
    FAULT = "fault"
    BUDGET = "budget"


@dataclass(frozen=True)
class Trap:
    """Why `run` returned. For SYSCALL, rip is the address after the `syscall` instruction."""

    kind: TrapKind
    rip: int
    fault: Fault | None = None


BlockProbe = Callable[[int, int, int, int, int, int], None]
"""probe(address, size, machine_icount, machine_clock_millicycles, block_insns, block_millicycles)"""


def _identity_tlb_fill(uc: unicorn.Uc, page: int, _access: int, entry: object, _user: object) -> bool:
    """Map the virtual page `page` to the same physical address, with every permission: the
    memory map's own permissions decide what is allowed, and unmapped pages fault exactly."""
    entry.paddr = page  # type: ignore[attr-defined]
    entry.perms = uc_const.UC_PROT_ALL  # type: ignore[attr-defined]
    return True


class GuestCpu:
    """A single-threaded guest: its own Unicorn engine, memory map, instruction and cycle counts."""

    def __init__(self, model: CpuModel) -> None:
        self._uc = unicorn.Uc(uc_const.UC_ARCH_X86, uc_const.UC_MODE_64)
        self._uc.ctl_set_tcg_buffer_size(_TCG_BUFFER_BYTES)
        # Virtual TLB mode, with a fill hook that maps every page to the physical address equal to
        # its full 64-bit virtual address. The default mode truncates addresses to 52 bits, so a
        # non-canonical address aliased a low one (a fault at 0x8000000000000010 was reported at
        # 0x10, and a non-canonical jump could run mapped code). This way every memory fault hook
        # sees the exact address, and nothing is ever mapped at a non-canonical one. (Without a
        # fill hook, virtual mode ran compiled code 2.5x slower; the hook runs once per TLB miss.)
        self._uc.ctl_set_tlb_mode(uc_const.UC_TLB_VIRTUAL)
        self._uc.hook_add(uc_const.UC_HOOK_TLB_FILL, _identity_tlb_fill)
        # Memory and registers are their own rooms; their methods are the CPU's.
        memory, registers = GuestMemory(self._uc), RegisterFile(self._uc)
        self.map, self.is_mapped, self.read, self.write = memory.map, memory.is_mapped, memory.read, memory.write
        self.reg, self.set_reg, self.regs, self.set_regs = (
            registers.reg,
            registers.set_reg,
            registers.regs,
            registers.set_regs,
        )
        self._closed = False
        self._acct = Accountant(self._uc, model)
        self._state = self._acct.state
        self._exact_tail = False
        self._syscall = False
        self._clock_base = 0
        self._icount_base = 0
        self._image: ElfImage | None = None
        self._insn_log: InsnLog | None = None
        self._next_seq: Callable[[], int] = lambda: 0
        uc = self._uc
        uc.hook_add(uc_const.UC_HOOK_INSN, self._on_syscall, None, 1, 0, x86_const.UC_X86_INS_SYSCALL)
        uc.hook_add(uc_const.UC_HOOK_INSN, self._on_cpuid, None, 1, 0, x86_const.UC_X86_INS_CPUID)
        self._faults = FaultCatcher(uc)
        # The binding refuses RDTSC hooks; the C core supports them (see the unicorn notes).
        self._rdtsc_hooks = [HOOK_INSN_CPUID_CFUNC(self._on_rdtsc), HOOK_INSN_CPUID_CFUNC(self._on_rdtscp)]
        rdtsc_insns = (x86_const.UC_X86_INS_RDTSC, x86_const.UC_X86_INS_RDTSCP)
        for callback, insn in zip(self._rdtsc_hooks, rdtsc_insns, strict=True):
            uc._Uc__do_hook_add(uc_const.UC_HOOK_INSN, callback, 1, 0, ctypes.c_int(insn))

    def close(self) -> None:
        """Release the Unicorn engine now (a dead process's engine is never run again). Counts
        stay readable; anything that would touch the engine afterwards is an error."""
        finalizer = getattr(self._uc, "_Uc__finalizer", None)
        if finalizer is not None:
            finalizer()
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

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
            if state.stop != STOP_NONE or state.paused:
                return  # the accounting hook stopped before this block: it will not run now
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
        self._uc.ctl_flush_tb()

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
        self._uc.ctl_flush_tb()

    def symbolize(self, address: int) -> str:
        """`function+0xoffset` for an address in the loaded image, else the bare address."""
        if self._image is not None:
            where = self._image.symbolize(address)
            if where is not None:
                return f"{where[0]}+{where[1]:#x}"
        return f"{address:#x}"

    def load(self, image: ElfImage) -> None:
        """Map every PT_LOAD segment of `image`, sweep its code, and point RIP at its entry."""
        for segment in image.segments:
            self.map(segment.vaddr, segment.memsz, segment.perms, segment.data)
        self._acct.add_image(image)
        self._image = image
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
        self._clock_base = clock - state.cost
        self._icount_base = icount - state.insns
        insn_limit = state.insns + budget
        state.insn_limit = insn_limit
        state.cost_limit = UNLIMITED if cost_budget == UNLIMITED else state.cost + cost_budget
        log = self._insn_log
        if log is not None:
            log.begin_run(self._next_seq(), self._icount_base, self._clock_base)
        trap = self._run_once()
        if trap.kind is TrapKind.BUDGET and exact and state.stop == STOP_INSNS and state.insns < insn_limit:
            trap = self._run_once(exact_tail=True)
        state.insn_limit = state.cost_limit = UNLIMITED
        if log is not None:
            log.drain()
        return trap

    def _run_once(self, *, exact_tail: bool = False) -> Trap:
        while True:
            trap = self._emulate(exact_tail)
            if trap is not None:
                return trap

    def _emulate(self, exact_tail: bool) -> Trap | None:
        state = self._state
        state.stop = STOP_NONE
        self._syscall = False
        faults = self._faults
        faults.reset()
        self._exact_tail = exact_tail
        error: unicorn.UcError | None = None
        step_hook = None
        if exact_tail:
            # Step instruction by instruction. Translated blocks do not see a hook added later,
            # so flush before and after (this path runs once, at a final stop).
            state.paused = 1
            step_hook = self._uc.hook_add(uc_const.UC_HOOK_CODE, self._on_step)
            self._uc.ctl_flush_tb()
        try:
            with engine_running(self._stop_soon):
                self._uc.emu_start(self.reg("rip"), _STOP_NOWHERE)
        except unicorn.UcError as exc:
            error = exc
        finally:
            if step_hook is not None:
                state.paused = 0
                self._uc.hook_del(step_hook)
                self._uc.ctl_flush_tb()
        rip = self.reg("rip")
        if faults.fault is None and error is not None:
            faults.fault = faults.from_error(error, rip)
        log = self._insn_log
        if faults.fault is None and not self._syscall and log is not None and log.stopped():
            # The instruction log stopped before `rip` ran: the block was counted and timed whole,
            # so the block that resumes at `rip` is its rest (a split must not change the clock).
            # Let the log drain or learn the instruction, and go on from `rip`.
            if self._exact_tail:
                self._settle_to(rip)
            else:
                self._acct.continue_at(rip)
            log.service()
            return None
        if faults.fault is None and not self._syscall and state.stop == STOP_NONE:
            # emu_start returned with no hook asking: the guest executed `hlt`, a privileged
            # instruction at user level.
            faults.fault = Fault(FaultCause.GENERAL_PROTECTION, max(rip - 1, 0), None, "privileged instruction hlt")
        if faults.fault is not None:
            self._settle_fault(faults.fault)
            return Trap(TrapKind.FAULT, faults.fault.rip, faults.fault)
        if self._syscall:
            return Trap(TrapKind.SYSCALL, rip)
        if state.stop == STOP_UNKNOWN:
            # The block hook met a block off the swept instruction stream: learn it and go on.
            self._acct.learn_block(self.read)
            return None
        assert state.stop in (STOP_INSNS, STOP_CYCLES)
        return Trap(TrapKind.BUDGET, rip)

    def _stop_soon(self) -> None:
        """Make `emu_start` return before the next block (a signal arrived; see emu/interrupt.py).

        `emu_stop` does nothing if the engine has not started yet; the zero budget stops it at its
        first block then. The run is abandoned, so its counts no longer matter."""
        self._state.insn_limit = 0
        self._uc.emu_stop()

    def _settle_fault(self, fault: Fault) -> None:
        """Uncount what a fault kept from retiring: the faulting instruction and the rest of its block.

        Traps (int3, int n) retire their instruction; fetch faults happen before any instruction
        of the new block was counted.
        """
        if self._faults.retired_its_instruction(fault):
            return
        state = self._state
        if self._exact_tail:
            # The step hook counted the faulting instruction before it ran.
            state.insns -= 1
            state.cost -= self._step_cost
            return
        self._settle_to(fault.rip)

    def _settle_to(self, rip: int) -> None:
        """Count the current block only up to `rip` (the instructions before it retired)."""
        state = self._state
        if self._exact_tail:
            return  # stepping counts instruction by instruction
        done = self._acct.block_offset(rip)
        if done is not None:
            state.insns = state.block_insns + done[0]
            state.cost = state.block_cost + done[1]

    def virtual_clock(self) -> int:
        """The machine's virtual time in millicycles at the current instruction (inside a hook)."""
        state = self._state
        if self._exact_tail:
            return self._clock_base + int(state.cost)
        done = self._acct.block_offset(self.reg("rip"))
        cost = int(state.cost) if done is None else int(state.block_cost) + done[1]
        return self._clock_base + cost

    # -------------------------------------------------------------------- hooks

    _step_cost = 0

    def _on_step(self, uc: unicorn.Uc, address: int, size: int, _user: object) -> None:
        state = self._state
        if self._insn_log is not None and self._insn_log.stopped():
            return  # the log stopped before this instruction: it does not run now
        cost = self._acct.instruction_cost(address, size)
        if state.insns >= state.insn_limit or state.cost + cost > state.cost_limit:
            state.stop = STOP_INSNS if state.insns >= state.insn_limit else STOP_CYCLES
            uc.emu_stop()  # before this instruction executes
            return
        self._step_cost = cost
        state.insns += 1
        state.cost += cost

    def _on_syscall(self, uc: unicorn.Uc, _user: object) -> None:
        self._syscall = True
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
