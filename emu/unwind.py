"""Stack unwinding for x86-64 guests: DWARF call-frame information first (right in a leaf that
never set up a frame), the rbp chain only where no CFI covers a pc."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from emu.debuginfo import DebugInfo

MAX_FRAMES = 64
_DWARF_REGS = ("rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp", *(f"r{i}" for i in range(8, 16)))
"""x86-64 DWARF register numbers 0..15; 16 is the return address."""
_RA = 16

ReadWord = Callable[[int], int | None]
"""Reads the 8-byte little-endian word at an address (None: not in the memory available)."""


@dataclass(frozen=True)
class Frame:
    pc: int
    """The frame's pc: the faulting instruction (frame 0), else the return address."""
    cfa: int | None
    method: str
    """How the frame was found: "registers" (frame 0), "cfi" or "frame-pointer"."""

    @property
    def lookup_pc(self) -> int:
        """The pc to symbolize: a return address points after its call, so step back into it."""
        return self.pc if self.method == "registers" else self.pc - 1


def backtrace(
    registers: dict[str, int], read_word: ReadWord, debug: DebugInfo, is_code: Callable[[int], bool] = lambda pc: True
) -> list[Frame]:
    """The frames from the registers up to the outermost one (CFI says where it ends) or until
    the stack cannot be followed further. When the faulting pc is not code at all (`is_code`:
    a call or jump through a bad pointer), the return address is taken from the top of the
    stack, where a call just left it."""
    regs: dict[str, int | None] = {name: registers.get(name) for name in (*_DWARF_REGS, "rip")}
    frames = [Frame(registers["rip"], None, "registers")]
    while len(frames) < MAX_FRAMES:
        lookup = frames[-1].lookup_pc
        step = _step_cfi(regs, lookup, read_word, debug)
        if step is None and len(frames) == 1 and not is_code(lookup):
            step = _step_just_called(regs, read_word)
            method = "return-address"
        elif step is None:
            step = _step_frame_pointer(regs, read_word)
            method = "frame-pointer"
        else:
            method = "cfi"
        if step is None:
            break
        regs, cfa = step
        pc = regs["rip"]
        if not pc or cfa is None:
            break
        frames.append(Frame(pc, cfa, method))
    return frames


def _step_cfi(
    regs: dict[str, int | None], pc: int, read_word: ReadWord, debug: DebugInfo
) -> tuple[dict[str, int | None], int | None] | None:
    rule = debug.frame_rule(pc)
    if rule is None:
        return None
    if rule.ra_undefined or rule.cfa_reg >= len(_DWARF_REGS):
        return {**regs, "rip": 0}, None
    base = regs.get(_DWARF_REGS[rule.cfa_reg])
    if base is None:
        return {**regs, "rip": 0}, None
    cfa = (base + rule.cfa_offset) & 0xFFFF_FFFF_FFFF_FFFF
    caller = dict(regs)
    for regno, offset in rule.saved.items():
        value = read_word(cfa + offset)
        if regno == _RA:
            caller["rip"] = value
        elif regno < len(_DWARF_REGS):
            caller[_DWARF_REGS[regno]] = value
    if _RA not in rule.saved:
        caller["rip"] = None
    caller["rsp"] = cfa
    if caller["rip"] is None:
        return {**caller, "rip": 0}, None
    return caller, cfa


def _step_just_called(
    regs: dict[str, int | None], read_word: ReadWord
) -> tuple[dict[str, int | None], int | None] | None:
    rsp = regs.get("rsp")
    ret = None if rsp is None else read_word(rsp)
    if rsp is None or ret is None:
        return None
    return {**regs, "rsp": rsp + 8, "rip": ret}, rsp + 8


def _step_frame_pointer(
    regs: dict[str, int | None], read_word: ReadWord
) -> tuple[dict[str, int | None], int | None] | None:
    rbp = regs.get("rbp")
    if not rbp:
        return None
    saved_rbp, ret = read_word(rbp), read_word(rbp + 8)
    if ret is None:
        return None
    return {**regs, "rbp": saved_rbp, "rsp": rbp + 16, "rip": ret}, rbp + 16
