"""One guest address space and CPU on a Unicorn engine, with exact instruction accounting.

`GuestCpu.run(budget)` executes until the guest issues `syscall`, faults, or would exceed the
instruction budget, and returns a `Trap` that says which. Guest faults never raise: they come back
as a `Fault`. `retired` counts instructions the guest has retired, exactly, at every kind of stop.

Accounting: a block hook adds the instruction count of each translated block (capstone-decoded
once per block and cached). A stop inside a block (a fault) subtracts the block's unexecuted tail.
A budget stop happens before a block that would cross the budget, so it lands on a block boundary;
`run(..., exact=True)` then steps the remainder one instruction at a time with a code hook.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from enum import Enum

import capstone
import unicorn
from unicorn import unicorn_const as uc_const
from unicorn import x86_const

from emu.elf import PAGE_SIZE, ElfImage, Perm

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


class FaultKind(Enum):
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


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
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


class GuestMemoryError(Exception):
    """The host tried to read or write guest memory that is not mapped."""


_MEM_FAULTS = {
    uc_const.UC_MEM_READ_UNMAPPED: FaultKind.UNMAPPED_READ,
    uc_const.UC_MEM_WRITE_UNMAPPED: FaultKind.UNMAPPED_WRITE,
    uc_const.UC_MEM_FETCH_UNMAPPED: FaultKind.UNMAPPED_FETCH,
    uc_const.UC_MEM_READ_PROT: FaultKind.PROTECTED_READ,
    uc_const.UC_MEM_WRITE_PROT: FaultKind.PROTECTED_WRITE,
    uc_const.UC_MEM_FETCH_PROT: FaultKind.PROTECTED_FETCH,
}
_FETCH_FAULTS = (FaultKind.UNMAPPED_FETCH, FaultKind.PROTECTED_FETCH)
# x86 exception vectors that are traps (the instruction retired) rather than faults.
_TRAP_VECTORS = {3: FaultKind.BREAKPOINT, 4: FaultKind.INTERRUPT}


def _page_floor(value: int) -> int:
    return value & ~(PAGE_SIZE - 1)


def _page_ceil(value: int) -> int:
    return (value + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


class GuestCpu:
    """A single-threaded guest: its own Unicorn engine, memory map and instruction count."""

    def __init__(self) -> None:
        self._uc = unicorn.Uc(uc_const.UC_ARCH_X86, uc_const.UC_MODE_64)
        self._uc.ctl_set_tcg_buffer_size(_TCG_BUFFER_BYTES)
        self._cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        self._pages: dict[int, Perm] = {}
        self._blocks: dict[tuple[int, int], tuple[int, ...]] = {}
        self.retired = 0
        """Instructions this guest has retired."""
        self._limit = 0
        self._exact_tail = False
        self._block_start = 0
        self._block_base = 0
        self._block_addrs: tuple[int, ...] = ()
        self._stop: TrapKind | None = None
        self._fault: Fault | None = None
        uc = self._uc
        uc.hook_add(uc_const.UC_HOOK_BLOCK, self._on_block)
        uc.hook_add(uc_const.UC_HOOK_INSN, self._on_syscall, None, 1, 0, x86_const.UC_X86_INS_SYSCALL)
        uc.hook_add(uc_const.UC_HOOK_INTR, self._on_interrupt)
        uc.hook_add(uc_const.UC_HOOK_INSN_INVALID, self._on_invalid)
        uc.hook_add(uc_const.UC_HOOK_MEM_INVALID, self._on_mem_fault)

    # ------------------------------------------------------------------ memory

    def map(self, address: int, size: int, perms: Perm, data: bytes = b"") -> None:
        """Map [address, address+size) page-aligned with `perms` and copy `data` to `address`.

        Pages already mapped (a page shared by two segments) keep their mapping and get the
        union of both permissions.
        """
        start, end = _page_floor(address), _page_ceil(address + max(size, len(data)))
        for page in range(start, end, PAGE_SIZE):
            old = self._pages.get(page)
            if old is None:
                self._uc.mem_map(page, PAGE_SIZE, int(perms))
                self._pages[page] = perms
            elif old | perms != old:
                self._uc.mem_protect(page, PAGE_SIZE, int(old | perms))
                self._pages[page] = old | perms
        if data:
            self._uc.mem_write(address, bytes(data))

    def load(self, image: ElfImage) -> None:
        """Map every PT_LOAD segment of `image` and point RIP at its entry."""
        for segment in image.segments:
            self.map(segment.vaddr, segment.memsz, segment.perms, segment.data)
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

    # --------------------------------------------------------------- execution

    def run(self, budget: int, *, exact: bool = False) -> Trap:
        """Run until a syscall, a fault, or the next block would exceed `budget` instructions.

        With `exact`, a budget stop lands on exactly `budget` retired instructions.
        """
        start = self.retired
        trap = self._run_until(start + budget, exact_tail=False)
        if trap.kind is TrapKind.BUDGET and exact and self.retired < start + budget:
            trap = self._run_until(start + budget, exact_tail=True)
        return trap

    def _run_until(self, limit: int, *, exact_tail: bool) -> Trap:
        self._limit = limit
        self._exact_tail = exact_tail
        self._stop = None
        self._fault = None
        self._block_addrs = ()
        begin = self.reg("rip")
        error: unicorn.UcError | None = None
        step_hook = None
        if exact_tail:
            # Step the last few instructions one by one. Translated blocks do not see a hook
            # added later, so flush before and after (this path runs once, at a final stop).
            step_hook = self._uc.hook_add(uc_const.UC_HOOK_CODE, self._on_step)
            self._uc.ctl_flush_tb()
        try:
            self._uc.emu_start(begin, _STOP_NOWHERE)
        except unicorn.UcError as exc:
            error = exc
        finally:
            if step_hook is not None:
                self._uc.hook_del(step_hook)
                self._uc.ctl_flush_tb()
        rip = self.reg("rip")
        if self._fault is None and error is not None:
            self._fault = self._fault_from_error(error, rip)
        if self._stop is None and self._fault is None:
            # emu_start returned with no hook asking: the guest executed `hlt`, a privileged
            # instruction at user level.
            self._fault = Fault(FaultKind.GENERAL_PROTECTION, max(rip - 1, 0), None, "privileged instruction hlt")
        if self._fault is not None:
            self._settle_fault(self._fault)
            return Trap(TrapKind.FAULT, self._fault.rip, self._fault)
        assert self._stop is not None
        return Trap(self._stop, rip)

    def _settle_fault(self, fault: Fault) -> None:
        """Uncount what a fault kept from retiring: the faulting instruction and the rest of its block.

        Traps (int3, int n) retire their instruction; fetch faults happen before any
        instruction of the new block was counted.
        """
        if fault.kind in _FETCH_FAULTS or fault.kind in _TRAP_VECTORS.values():
            return
        if self._exact_tail:
            self.retired -= 1  # the step hook counted the faulting instruction before it ran
            return
        addrs = self._block_addrs
        if addrs and addrs[0] <= fault.rip <= addrs[-1]:
            self.retired = self._block_base + bisect.bisect_left(addrs, fault.rip)

    def _fault_from_error(self, error: unicorn.UcError, rip: int) -> Fault:
        if error.errno == uc_const.UC_ERR_INSN_INVALID:
            return Fault(FaultKind.INVALID_OPCODE, rip)
        if error.errno == uc_const.UC_ERR_FETCH_UNMAPPED:
            return Fault(FaultKind.UNMAPPED_FETCH, rip, rip)
        return Fault(FaultKind.CPU_EXCEPTION, rip, None, str(error))

    # -------------------------------------------------------------------- hooks

    def _decode_block(self, address: int, size: int) -> tuple[int, ...]:
        code = bytes(self._uc.mem_read(address, size))
        addrs = tuple(insn[0] for insn in self._cs.disasm_lite(code, address))
        return addrs or (address,)

    def _on_block(self, uc: unicorn.Uc, address: int, size: int, _user: object) -> None:
        addrs = self._blocks.get((address, size))
        if addrs is None:
            addrs = self._decode_block(address, size)
            self._blocks[(address, size)] = addrs
        if self._exact_tail:
            return  # the step hook counts
        count = len(addrs)
        if self.retired + count > self._limit:
            self._stop = TrapKind.BUDGET
            uc.emu_stop()  # stops before this block executes; it is not counted
            return
        self._block_base = self.retired
        self._block_addrs = addrs
        self.retired += count

    def _on_step(self, uc: unicorn.Uc, _address: int, _size: int, _user: object) -> None:
        if self.retired >= self._limit:
            self._stop = TrapKind.BUDGET
            uc.emu_stop()  # before this instruction executes
            return
        self.retired += 1

    def _on_syscall(self, uc: unicorn.Uc, _user: object) -> None:
        self._stop = TrapKind.SYSCALL
        uc.emu_stop()  # RIP is left after the syscall instruction: resuming continues there

    def _on_interrupt(self, uc: unicorn.Uc, vector: int, _user: object) -> None:
        rip = self.reg("rip")
        if vector == 0:
            self._fault = Fault(FaultKind.DIVIDE_ERROR, rip)
        elif vector in _TRAP_VECTORS:
            self._fault = Fault(_TRAP_VECTORS[vector], rip, None, f"vector {vector}")
        else:
            self._fault = Fault(FaultKind.INTERRUPT, rip, None, f"vector {vector}")
        uc.emu_stop()

    def _on_invalid(self, uc: unicorn.Uc, _user: object) -> bool:
        self._fault = Fault(FaultKind.INVALID_OPCODE, self.reg("rip"))
        return False

    def _on_mem_fault(self, uc: unicorn.Uc, access: int, address: int, size: int, _value: int, _user: object) -> bool:
        kind = _MEM_FAULTS.get(access, FaultKind.CPU_EXCEPTION)
        self._fault = Fault(kind, self.reg("rip"), address, f"{size}-byte access")
        return False
