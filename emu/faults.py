"""Guest faults as values: what went wrong (`FaultCause`), where (`Fault`), and the engine hooks
that catch them (`FaultCatcher`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import unicorn
from unicorn import unicorn_const as uc_const
from unicorn import x86_const


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


def is_canonical(address: int) -> bool:
    """True if the 64-bit `address` is canonical: bits 63..47 all equal (4-level paging)."""
    return (address & 0xFFFF_FFFF_FFFF_FFFF) >> 47 in (0, 0x1FFFF)


class FaultCatcher:
    """The engine's fault hooks. Each run starts with `reset()`; the first fault it meets is `fault`."""

    def __init__(self, uc: unicorn.Uc) -> None:
        self._uc = uc
        self.fault: Fault | None = None
        self.on_fetch = False
        """The fault happened fetching an instruction (before any instruction of its block was counted)."""
        uc.hook_add(uc_const.UC_HOOK_INTR, self._on_interrupt)
        uc.hook_add(uc_const.UC_HOOK_INSN_INVALID, self._on_invalid)
        uc.hook_add(uc_const.UC_HOOK_MEM_INVALID, self._on_mem_fault)

    def reset(self) -> None:
        self.fault = None
        self.on_fetch = False

    def retired_its_instruction(self, fault: Fault) -> bool:
        """True when `fault` leaves the counts as they are: traps (int3, int n) retire their
        instruction, and fetch faults happen before any instruction of the new block was counted."""
        return self.on_fetch or fault.kind in _FETCH_FAULTS or fault.kind in _TRAP_VECTORS.values()

    def from_error(self, error: unicorn.UcError, rip: int) -> Fault:
        if error.errno == uc_const.UC_ERR_INSN_INVALID:
            return Fault(FaultCause.INVALID_OPCODE, rip)
        if error.errno == uc_const.UC_ERR_FETCH_UNMAPPED:
            self.on_fetch = True
            if not is_canonical(rip):
                return Fault(FaultCause.GENERAL_PROTECTION, rip, rip, "non-canonical fetch")
            return Fault(FaultCause.UNMAPPED_FETCH, rip, rip)
        return Fault(FaultCause.CPU_EXCEPTION, rip, None, str(error))

    def _rip(self) -> int:
        return int(self._uc.reg_read(x86_const.UC_X86_REG_RIP))

    def _on_interrupt(self, uc: unicorn.Uc, vector: int, _user: object) -> None:
        rip = self._rip()
        if vector == 0:
            self.fault = Fault(FaultCause.DIVIDE_ERROR, rip)
        elif vector in _TRAP_VECTORS:
            self.fault = Fault(_TRAP_VECTORS[vector], rip, None, f"vector {vector}")
        else:
            self.fault = Fault(FaultCause.INTERRUPT, rip, None, f"vector {vector}")
        uc.emu_stop()

    def _on_invalid(self, uc: unicorn.Uc, _user: object) -> bool:
        self.fault = Fault(FaultCause.INVALID_OPCODE, self._rip())
        return False

    def _on_mem_fault(self, uc: unicorn.Uc, access: int, address: int, size: int, _value: int, _user: object) -> bool:
        if self.fault is not None:
            return False  # an access split into pieces reports each piece: the first is the fault
        self.on_fetch = access in _FETCH_ACCESSES
        if not is_canonical(address):
            # x86-64 raises #GP (#SS for a stack reference, reported the same way) for an access
            # that touches a non-canonical address; `address` is its first non-canonical byte.
            what = "fetch" if self.on_fetch else f"{size}-byte {_ACCESS_NAMES.get(access, 'access')}"
            self.fault = Fault(FaultCause.GENERAL_PROTECTION, self._rip(), address, f"non-canonical {what}")
            return False
        kind = _MEM_FAULTS.get(access, FaultCause.CPU_EXCEPTION)
        self.fault = Fault(kind, self._rip(), address, f"{size}-byte access")
        return False
