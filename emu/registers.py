"""A guest's x86-64 registers by name, read and written singly or in batches."""

from __future__ import annotations

import unicorn
from unicorn import x86_const

from emu.engine_calls import EngineCalls, RegisterIds

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


def register_ids(names: tuple[str, ...]) -> RegisterIds:
    """The general registers `names` as a batch for EngineCalls."""
    return RegisterIds([REGISTERS[name] for name in names], has_rip="rip" in names)


class RegisterFile:
    """The registers of one Unicorn engine, read and written in batches made once per set of
    names (emu/engine_calls.py; the binding's `reg_read` builds its arguments on every call)."""

    def __init__(self, uc: unicorn.Uc, calls: EngineCalls) -> None:
        self._uc = uc
        self._calls = calls
        self._batches: dict[tuple[str, ...], RegisterIds] = {}
        self._staged: tuple[RegisterIds, tuple[int, ...]] | None = None
        """Registers to write before the engine next runs or anything reads or writes one
        (`stage`): a syscall's results travel with the next run's call into the engine."""
        self.rip_hint: int | None = None
        """rip where the engine last stopped, while nothing has written rip since (a write of
        rip through this file, or a context restore (`GuestCpu.restore_state`), clears it): the
        next run starts there without reading it again."""

    def stage(self, names: tuple[str, ...], values: tuple[int, ...]) -> None:
        """Set these registers as `set_regs` would, at the latest when the engine next runs:
        every read or write through this file, and `flush`, writes them first."""
        self.flush()
        batch = self._batch(names)
        if batch.has_rip:
            self.rip_hint = None
        self._staged = (batch, values)

    def flush(self) -> None:
        """Write the staged registers now (before anything reads the engine's registers directly)."""
        staged = self._staged
        if staged is not None:
            self._staged = None
            self._calls.write(*staged)

    def take_staged(self) -> tuple[RegisterIds, tuple[int, ...]] | None:
        """The staged registers, for the run that writes them; none are staged after."""
        staged, self._staged = self._staged, None
        return staged

    def drop_staged(self) -> None:
        """Forget the staged registers (a context restore sets every register)."""
        self._staged = None

    def reg(self, name: str) -> int:
        if self._staged is not None:
            self.flush()
        return self._calls.read(self._batch((name,)))[0]

    def vector_registers(self) -> dict[str, int]:
        """VECTOR_REGISTERS by name (a crash dump records them)."""
        self.flush()
        return {name: int(self._uc.reg_read(number)) for name, number in VECTOR_REGISTERS.items()}

    def set_reg(self, name: str, value: int) -> None:
        if name == "rip":
            self.rip_hint = None
        self.flush()
        self._calls.write(self._batch((name,)), (value,))

    def other(self, name: str) -> int:
        """A segment, SSE or base register (OTHER_REGISTERS)."""
        self.flush()
        return int(self._uc.reg_read(OTHER_REGISTERS[name][0]))

    def set_other(self, name: str, value: int) -> None:
        ident, bits = OTHER_REGISTERS[name]
        self.flush()
        self._uc.reg_write(ident, value & ((1 << bits) - 1))

    def regs(self, names: tuple[str, ...]) -> tuple[int, ...]:
        """Several registers in one call into the engine (syscall entry reads seven)."""
        if self._staged is not None:
            self.flush()
        return self._calls.read(self._batch(names))

    def set_regs(self, names: tuple[str, ...], values: tuple[int, ...]) -> None:
        """Several registers in one call (each value's low 64 bits)."""
        batch = self._batch(names)
        if batch.has_rip:
            self.rip_hint = None
        self.flush()
        self._calls.write(batch, values)

    def _batch(self, names: tuple[str, ...]) -> RegisterIds:
        batch = self._batches.get(names)
        if batch is None:
            batch = self._batches[names] = register_ids(names)
        return batch
