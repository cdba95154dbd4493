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
from unicorn.unicorn_py3.unicorn import uclib

from emu.accounting import STOP_CYCLES, STOP_INSNS, STOP_NONE, STOP_UNKNOWN, UNLIMITED, Accountant, CostFunction
from emu.cpuid import cpuid_leaf
from emu.elf import PAGE_SIZE, ElfImage, Perm
from emu.events import MILLICYCLES_PER_CYCLE
from emu.insnlog import Feed, InsnLog
from emu.interrupt import engine_running

_STOP_NOWHERE = 0xFFFF_FFFF_FFFF_FFFF
_TCG_BUFFER_BYTES = 8 << 20

REGISTERS = {
    "rax": x86_const.UC_X86_REG_RAX,
    "rbx": x86_const.UC_X86_REG_RBX,
    "rcx": x86_const.UC_X86_REG_RCX,
    "rdx": x86_const.UC_X86_REG_RDX,
    "rsi": x86_const.UC_X86_REG_RSI,
    "rdi": x86_const.UC_X86_REG_RDI,
    "rbp": x86_const.UC_X86_REG_RBP,
    "rsp": x86_const.UC_X86_REG_RSP,
    "r8": x86_const.UC_X86_REG_R8,
    "r9": x86_const.UC_X86_REG_R9,
    "r10": x86_const.UC_X86_REG_R10,
    "r11": x86_const.UC_X86_REG_R11,
    "r12": x86_const.UC_X86_REG_R12,
    "r13": x86_const.UC_X86_REG_R13,
    "r14": x86_const.UC_X86_REG_R14,
    "r15": x86_const.UC_X86_REG_R15,
    "rip": x86_const.UC_X86_REG_RIP,
    "rflags": x86_const.UC_X86_REG_RFLAGS,
}


class TrapKind(Enum):
    SYSCALL = "syscall"
    FAULT = "fault"
    BUDGET = "budget"


class FaultCause(Enum):
    """What went wrong in a guest, as the CPU (or a host that kills it) saw it; the ABI numbers
    these for CHILD_DIED records as `procd_model.abi.FaultKind`, by the same member names."""

    UNMAPPED_READ = "unmapped-read"
    UNMAPPED_WRITE = "unmapped-write"
    UNMAPPED_FETCH = "unmapped-fetch"
    PROTECTED_READ = "protected-read"
    PROTECTED_WRITE = "protected-write"
    PROTECTED_FETCH = "protected-fetch"
    INVALID_OPCODE = "invalid-opcode"
    DIVIDE_ERROR = "divide-error"
    BREAKPOINT = "breakpoint"
    INTERRUPT = "interrupt"
    GENERAL_PROTECTION = "general-protection"
    CPU_EXCEPTION = "cpu-exception"
    INJECTED = "injected"
    """Not raised by the CPU: a host (a test, a scenario) kills the guest on purpose."""


@dataclass(frozen=True)
class Fault:
    kind: FaultCause
    rip: int
    address: int | None = None
    detail: str = ""

    def describe(self) -> str:
        where = f" at {self.address:#x}" if self.address is not None else ""
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.kind.value}{where}, rip {self.rip:#x}{extra}"


@dataclass(frozen=True)
class Trap:
    """Why `run` returned. For SYSCALL, rip is the address after the `syscall` instruction."""

    kind: TrapKind
    rip: int
    fault: Fault | None = None


BlockProbe = Callable[[int, int, int, int, int, int], None]
"""probe(address, size, machine_icount, machine_clock_millicycles, block_insns, block_millicycles)"""


class GuestMemoryError(Exception):
    """The host tried to read or write guest memory that is not mapped."""


_MEM_FAULTS = {
    uc_const.UC_MEM_READ_UNMAPPED: FaultCause.UNMAPPED_READ,
    uc_const.UC_MEM_WRITE_UNMAPPED: FaultCause.UNMAPPED_WRITE,
    uc_const.UC_MEM_FETCH_UNMAPPED: FaultCause.UNMAPPED_FETCH,
    uc_const.UC_MEM_READ_PROT: FaultCause.PROTECTED_READ,
    uc_const.UC_MEM_WRITE_PROT: FaultCause.PROTECTED_WRITE,
    uc_const.UC_MEM_FETCH_PROT: FaultCause.PROTECTED_FETCH,
}
_FETCH_FAULTS = (FaultCause.UNMAPPED_FETCH, FaultCause.PROTECTED_FETCH)
_FETCH_ACCESSES = frozenset({uc_const.UC_MEM_FETCH_UNMAPPED, uc_const.UC_MEM_FETCH_PROT})
_ACCESS_NAMES = {
    uc_const.UC_MEM_READ_UNMAPPED: "read",
    uc_const.UC_MEM_READ_PROT: "read",
    uc_const.UC_MEM_WRITE_UNMAPPED: "write",
    uc_const.UC_MEM_WRITE_PROT: "write",
}
# x86 exception vectors that are traps (the instruction retired) rather than faults.
_TRAP_VECTORS = {3: FaultCause.BREAKPOINT, 4: FaultCause.INTERRUPT}


def _identity_tlb_fill(uc: unicorn.Uc, page: int, _access: int, entry: object, _user: object) -> bool:
    """Map the virtual page `page` to the same physical address, with every permission: the
    memory map's own permissions decide what is allowed, and unmapped pages fault exactly."""
    entry.paddr = page  # type: ignore[attr-defined]
    entry.perms = uc_const.UC_PROT_ALL  # type: ignore[attr-defined]
    return True


def is_canonical(address: int) -> bool:
    """True if the 64-bit `address` is canonical: bits 63..47 all equal (4-level paging)."""
    return (address & 0xFFFF_FFFF_FFFF_FFFF) >> 47 in (0, 0x1FFFF)


def _page_floor(value: int) -> int:
    return value & ~(PAGE_SIZE - 1)


def _page_ceil(value: int) -> int:
    return (value + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


class _RegisterBatch:
    """Preallocated arguments for uc_reg_read_batch / uc_reg_write_batch."""

    def __init__(self, names: tuple[str, ...]) -> None:
        count = len(names)
        self.ids = (ctypes.c_int * count)(*(REGISTERS[name] for name in names))
        self.values = (ctypes.c_uint64 * count)()
        self.pointers = (ctypes.c_void_p * count)(*(ctypes.addressof(self.values) + 8 * i for i in range(count)))


class GuestCpu:
    """A single-threaded guest: its own Unicorn engine, memory map, instruction and cycle counts."""

    def __init__(self, cost_of: CostFunction) -> None:
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
        self._pages: dict[int, Perm] = {}
        self._closed = False
        self._batches: dict[tuple[str, ...], _RegisterBatch] = {}
        self._acct = Accountant(self._uc, cost_of)
        self._state = self._acct.state
        self._exact_tail = False
        self._syscall = False
        self._fault: Fault | None = None
        self._fault_on_fetch = False
        self._clock_base = 0
        self._icount_base = 0
        self._image: ElfImage | None = None
        self._insn_log: InsnLog | None = None
        self._next_seq: Callable[[], int] = lambda: 0
        uc = self._uc
        uc.hook_add(uc_const.UC_HOOK_INSN, self._on_syscall, None, 1, 0, x86_const.UC_X86_INS_SYSCALL)
        uc.hook_add(uc_const.UC_HOOK_INSN, self._on_cpuid, None, 1, 0, x86_const.UC_X86_INS_CPUID)
        uc.hook_add(uc_const.UC_HOOK_INTR, self._on_interrupt)
        uc.hook_add(uc_const.UC_HOOK_INSN_INVALID, self._on_invalid)
        uc.hook_add(uc_const.UC_HOOK_MEM_INVALID, self._on_mem_fault)
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

    # ------------------------------------------------------------------ memory

    def map(self, address: int, size: int, perms: Perm, data: bytes = b"") -> None:
        """Map [address, address+size) page-aligned with `perms` and copy `data` to `address`.

        Pages already mapped (a page shared by two segments) keep their mapping and get the
        union of both permissions.
        """
        start, end = _page_floor(address), _page_ceil(address + max(size, len(data)))
        run_start: int | None = None  # a run of new pages is mapped in one call (a stack is many)
        for page in range(start, end + PAGE_SIZE, PAGE_SIZE):
            old = self._pages.get(page) if page < end else perms
            if old is None:
                run_start = page if run_start is None else run_start
                continue
            if run_start is not None:
                self._uc.mem_map(run_start, page - run_start, int(perms))
                self._pages.update(dict.fromkeys(range(run_start, page, PAGE_SIZE), perms))
                run_start = None
            if page < end and old | perms != old:
                self._uc.mem_protect(page, PAGE_SIZE, int(old | perms))
                self._pages[page] = old | perms
        if data:
            self._uc.mem_write(address, bytes(data))

    def load(self, image: ElfImage) -> None:
        """Map every PT_LOAD segment of `image`, sweep its code, and point RIP at its entry."""
        for segment in image.segments:
            self.map(segment.vaddr, segment.memsz, segment.perms, segment.data)
        self._acct.add_image(image)
        self._image = image
        self.set_reg("rip", image.entry)

    def is_mapped(self, address: int, size: int) -> bool:
        if size <= 0:
            return True
        return all(page in self._pages for page in range(_page_floor(address), address + size, PAGE_SIZE))

    def read(self, address: int, size: int) -> bytes:
        if not self.is_mapped(address, size):
            raise GuestMemoryError(f"read of {size} bytes at {address:#x} touches unmapped memory")
        return bytes(self._uc.mem_read(address, size))

    def write(self, address: int, data: bytes) -> None:
        if not self.is_mapped(address, len(data)):
            raise GuestMemoryError(f"write of {len(data)} bytes at {address:#x} touches unmapped memory")
        self._uc.mem_write(address, bytes(data))

    # --------------------------------------------------------------- registers

    def reg(self, name: str) -> int:
        return int(self._uc.reg_read(REGISTERS[name]))

    def set_reg(self, name: str, value: int) -> None:
        self._uc.reg_write(REGISTERS[name], value & 0xFFFF_FFFF_FFFF_FFFF)

    def regs(self, names: tuple[str, ...]) -> tuple[int, ...]:
        """Several registers in one call into the engine (syscall entry reads seven)."""
        batch = self._batch(names)
        status = uclib.uc_reg_read_batch(self._uc._uch, batch.ids, batch.pointers, len(names))
        if status != uc_const.UC_ERR_OK:
            raise unicorn.UcError(status)
        return tuple(batch.values)

    def set_regs(self, names: tuple[str, ...], values: tuple[int, ...]) -> None:
        batch = self._batch(names)
        for i, value in enumerate(values):
            batch.values[i] = value & 0xFFFF_FFFF_FFFF_FFFF
        status = uclib.uc_reg_write_batch(self._uc._uch, batch.ids, batch.pointers, len(names))
        if status != uc_const.UC_ERR_OK:
            raise unicorn.UcError(status)

    def _batch(self, names: tuple[str, ...]) -> _RegisterBatch:
        batch = self._batches.get(names)
        if batch is None:
            batch = _RegisterBatch(names)
            self._batches[names] = batch
        return batch

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
        self._fault = None
        self._fault_on_fetch = False
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
        if self._fault is None and error is not None:
            self._fault = self._fault_from_error(error, rip)
        log = self._insn_log
        if self._fault is None and not self._syscall and log is not None and log.stopped():
            # The instruction log stopped before `rip` ran: give back the block's tail, let the
            # log drain or learn the instruction, and go on from `rip`.
            self._settle_to(rip)
            log.service()
            return None
        if self._fault is None and not self._syscall and state.stop == STOP_NONE:
            # emu_start returned with no hook asking: the guest executed `hlt`, a privileged
            # instruction at user level.
            self._fault = Fault(FaultCause.GENERAL_PROTECTION, max(rip - 1, 0), None, "privileged instruction hlt")
        if self._fault is not None:
            self._settle_fault(self._fault)
            return Trap(TrapKind.FAULT, self._fault.rip, self._fault)
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
        if self._fault_on_fetch or fault.kind in _FETCH_FAULTS or fault.kind in _TRAP_VECTORS.values():
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

    def _fault_from_error(self, error: unicorn.UcError, rip: int) -> Fault:
        if error.errno == uc_const.UC_ERR_INSN_INVALID:
            return Fault(FaultCause.INVALID_OPCODE, rip)
        if error.errno == uc_const.UC_ERR_FETCH_UNMAPPED:
            self._fault_on_fetch = True
            if not is_canonical(rip):
                return Fault(FaultCause.GENERAL_PROTECTION, rip, rip, "non-canonical fetch")
            return Fault(FaultCause.UNMAPPED_FETCH, rip, rip)
        return Fault(FaultCause.CPU_EXCEPTION, rip, None, str(error))

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

    def _on_interrupt(self, uc: unicorn.Uc, vector: int, _user: object) -> None:
        rip = self.reg("rip")
        if vector == 0:
            self._fault = Fault(FaultCause.DIVIDE_ERROR, rip)
        elif vector in _TRAP_VECTORS:
            self._fault = Fault(_TRAP_VECTORS[vector], rip, None, f"vector {vector}")
        else:
            self._fault = Fault(FaultCause.INTERRUPT, rip, None, f"vector {vector}")
        uc.emu_stop()

    def _on_invalid(self, uc: unicorn.Uc, _user: object) -> bool:
        self._fault = Fault(FaultCause.INVALID_OPCODE, self.reg("rip"))
        return False

    def _on_mem_fault(self, uc: unicorn.Uc, access: int, address: int, size: int, _value: int, _user: object) -> bool:
        if self._fault is not None:
            return False  # an access split into pieces reports each piece: the first is the fault
        self._fault_on_fetch = access in _FETCH_ACCESSES
        if not is_canonical(address):
            # x86-64 raises #GP (#SS for a stack reference, reported the same way) for an access
            # that touches a non-canonical address; `address` is its first non-canonical byte.
            what = "fetch" if self._fault_on_fetch else f"{size}-byte {_ACCESS_NAMES.get(access, 'access')}"
            self._fault = Fault(FaultCause.GENERAL_PROTECTION, self.reg("rip"), address, f"non-canonical {what}")
            return False
        kind = _MEM_FAULTS.get(access, FaultCause.CPU_EXCEPTION)
        self._fault = Fault(kind, self.reg("rip"), address, f"{size}-byte access")
        return False
