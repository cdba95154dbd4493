"""Where an image's blocks start, found statically: the denominator of block coverage.

A block starts at every function symbol, at every direct jump or call target, and after every
instruction that ends one (a jump, a call, a return, a `syscall`, a `rep` string instruction,
which is a block of its own, ...): that is where Unicorn's
translation blocks start too when the code runs (it also splits blocks longer than 512
instructions or crossing a page, which this does not count).
"""

from __future__ import annotations

import capstone
from capstone import x86_const

from emu.elf import ElfImage, Perm

_ENDS_BLOCK = {
    capstone.CS_GRP_JUMP,
    capstone.CS_GRP_CALL,
    capstone.CS_GRP_RET,
    capstone.CS_GRP_INT,
    capstone.CS_GRP_IRET,
}
_SYSCALLS = {x86_const.X86_INS_SYSCALL, x86_const.X86_INS_SYSENTER, x86_const.X86_INS_UD2, x86_const.X86_INS_HLT}


_REP_PREFIXES = {x86_const.X86_PREFIX_REP, x86_const.X86_PREFIX_REPNE}


def _repeats(insn: capstone.CsInsn) -> bool:
    """A `rep`/`repne` string instruction."""
    return bool(_REP_PREFIXES.intersection(insn.prefix)) and insn.mnemonic.startswith(("rep", "repne", "repe"))


def block_starts(image: ElfImage) -> set[int]:
    """The addresses where the image's executable code starts a block."""
    disassembler = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    disassembler.detail = True
    starts: set[int] = {s.address for s in image.symbols if s.size}
    for segment in image.segments:
        if not segment.perms & Perm.X:
            continue
        end = segment.vaddr + len(segment.data)
        for insn in disassembler.disasm(segment.data, segment.vaddr):
            if _repeats(insn):  # a block of its own: QEMU loops on it
                starts.add(insn.address)
            elif not (_ENDS_BLOCK.intersection(insn.groups) or insn.id in _SYSCALLS):
                continue
            if insn.address + insn.size < end:
                starts.add(insn.address + insn.size)
            operand = insn.operands[0] if insn.operands else None
            if operand is not None and operand.type == x86_const.X86_OP_IMM:
                starts.add(operand.imm)
    code = [s for s in image.segments if s.perms & Perm.X]
    return {a for a in starts if any(s.vaddr <= a < s.vaddr + len(s.data) for s in code)}
