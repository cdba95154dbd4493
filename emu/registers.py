"""A guest's x86-64 registers by name, read and written singly or in batches."""

from __future__ import annotations

import ctypes

import unicorn
from unicorn import unicorn_const as uc_const
from unicorn import x86_const
from unicorn.unicorn_py3.unicorn import uclib

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

OTHER_REGISTERS: dict[str, tuple[int, int]] = {
    **{name: (getattr(x86_const, f"UC_X86_REG_{name.upper()}"), 16) for name in ("cs", "ss", "ds", "es", "fs", "gs")},
    "fs_base": (x86_const.UC_X86_REG_FS_BASE, 64),
    "gs_base": (x86_const.UC_X86_REG_GS_BASE, 64),
    "mxcsr": (x86_const.UC_X86_REG_MXCSR, 32),
    **{f"xmm{i}": (getattr(x86_const, f"UC_X86_REG_XMM{i}"), 128) for i in range(16)},
}
"""Registers only a debugger reads or writes: name -> (Unicorn id, width in bits)."""


VECTOR_REGISTERS = {
    **{f"xmm{i}": getattr(x86_const, f"UC_X86_REG_XMM{i}") for i in range(16)},
    "mxcsr": x86_const.UC_X86_REG_MXCSR,
    "fpcw": x86_const.UC_X86_REG_FPCW,
    "fpsw": x86_const.UC_X86_REG_FPSW,
    "fptag": x86_const.UC_X86_REG_FPTAG,
}
"""The SSE registers and the x87 control, status and tag words (what a core's NT_FPREGSET holds
besides the x87 stack, which the images never use)."""


class _RegisterBatch:
    """Preallocated arguments for uc_reg_read_batch / uc_reg_write_batch."""

    def __init__(self, names: tuple[str, ...]) -> None:
        count = len(names)
        self.ids = (ctypes.c_int * count)(*(REGISTERS[name] for name in names))
        self.values = (ctypes.c_uint64 * count)()
        self.has_rip = "rip" in names
        self.pointers = (ctypes.c_void_p * count)(*(ctypes.addressof(self.values) + 8 * i for i in range(count)))


class RegisterFile:
    """The registers of one Unicorn engine, read and written straight through the C API into one
    preallocated value (the binding's `reg_read` builds its arguments on every call)."""

    def __init__(self, uc: unicorn.Uc) -> None:
        self._uc = uc
        self._batches: dict[tuple[str, ...], _RegisterBatch] = {}
        self._value = ctypes.c_uint64()
        self._value_ref = ctypes.byref(self._value)
        self.rip_hint: int | None = None
        """rip where the engine last stopped, while nothing has written rip since (a write of
        rip through this file, or a context restore (`GuestCpu.restore_state`), clears it): the
        next run starts there without reading it again."""

    def reg(self, name: str) -> int:
        status = uclib.uc_reg_read(self._uc._uch, REGISTERS[name], self._value_ref)
        if status != uc_const.UC_ERR_OK:
            raise unicorn.UcError(status)
        return self._value.value

    def vector_registers(self) -> dict[str, int]:
        """VECTOR_REGISTERS by name (a crash dump records them)."""
        return {name: int(self._uc.reg_read(number)) for name, number in VECTOR_REGISTERS.items()}

    def set_reg(self, name: str, value: int) -> None:
        if name == "rip":
            self.rip_hint = None
        self._value.value = value & 0xFFFF_FFFF_FFFF_FFFF
        status = uclib.uc_reg_write(self._uc._uch, REGISTERS[name], self._value_ref)
        if status != uc_const.UC_ERR_OK:
            raise unicorn.UcError(status)

    def other(self, name: str) -> int:
        """A segment, SSE or base register (OTHER_REGISTERS)."""
        return int(self._uc.reg_read(OTHER_REGISTERS[name][0]))

    def set_other(self, name: str, value: int) -> None:
        ident, bits = OTHER_REGISTERS[name]
        self._uc.reg_write(ident, value & ((1 << bits) - 1))

    def regs(self, names: tuple[str, ...]) -> tuple[int, ...]:
        """Several registers in one call into the engine (syscall entry reads seven)."""
        batch = self._batch(names)
        status = uclib.uc_reg_read_batch(self._uc._uch, batch.ids, batch.pointers, len(names))
        if status != uc_const.UC_ERR_OK:
            raise unicorn.UcError(status)
        return tuple(batch.values[:])  # one slice: the array's values in one C loop

    def set_regs(self, names: tuple[str, ...], values: tuple[int, ...]) -> None:
        batch = self._batch(names)
        if batch.has_rip:
            self.rip_hint = None
        # a c_uint64 array keeps each value's low 64 bits (no masking here); any sequence fits
        batch.values[:] = values  # type: ignore[call-overload]
        status = uclib.uc_reg_write_batch(self._uc._uch, batch.ids, batch.pointers, len(names))
        if status != uc_const.UC_ERR_OK:
            raise unicorn.UcError(status)

    def _batch(self, names: tuple[str, ...]) -> _RegisterBatch:
        batch = self._batches.get(names)
        if batch is None:
            batch = _RegisterBatch(names)
            self._batches[names] = batch
        return batch
