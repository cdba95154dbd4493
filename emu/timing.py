"""What one instruction does to the pipeline: its micro-ops, ports, latency and register traffic.

`describe(insn, model)` turns a capstone instruction (detail mode) into an `InsnTiming`, the input of
the block model (emu/blockmodel.py). Registers become *variables* of the block model: each general
register (whatever its size), the flags, each xmm register, and the branch-resolution time. The
rules LLVM 14's model leaves out are applied here:

- **stack engine**: `push`, `pop`, `call` and `ret` neither read nor write `rsp` (the front end
  tracks it) and lose the ALU micro-op LLVM gives them for the `rsp` update;
- **move elimination**: a register-to-register `mov`/`movaps`/`movdqa`/`movq` between two
  different registers has no latency;
- **zero idioms**: `xor r, r`, `sub r, r`, `pxor x, x`, `xorps x, x` and the like read nothing;
- **load-to-use**: an instruction with a memory source waits for its address registers, then the
  load latency, and its other inputs only for the operation's own latency;
- **partial registers**: writing an 8- or 16-bit register merges into the old value (reads it).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import IntEnum

import capstone
from capstone import x86

from emu.events import MILLICYCLES_PER_CYCLE

GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
START = 0
"""Variable 0: the block's dispatch start (in a summary's entries) and the dispatch clock (in the state)."""
FLAGS = 17
XMM0 = 18
NVARS = 34
RSP = 1 + GPRS.index("rsp")


class BranchKind(IntEnum):
    """How a block ends, for the branch predictor (emu/_accounting.c mirrors these numbers)."""

    NONE = 0  # falls through (the block was cut for size) or ends without a branch
    COND = 1  # conditional direct branch: predicted by the pattern table
    DIRECT = 2  # jmp/call to a fixed target: always predicted, taken
    INDIRECT = 3  # jmp/call through a register or memory: predicted by the last target seen
    RET = 4  # predicted by the return stack: taken, never mispredicted
    SERIAL = 5  # syscall and friends: everything in flight completes first


def _register_variables() -> dict[str, int]:
    """Every name capstone gives a general register (any size), the flags and xmm0-15 -> variable."""
    out: dict[str, int] = {}
    for i, name in enumerate(GPRS):
        if name[1:].isdigit():  # r8 .. r15
            names: tuple[str, ...] = (name, name + "d", name + "w", name + "b")
        elif name[1:] in ("ax", "bx", "cx", "dx"):
            names = (name, "e" + name[1:], name[1:], name[1] + "l", name[1] + "h")
        else:  # rsi, rdi, rbp, rsp
            names = (name, "e" + name[1:], name[1:], name[1:] + "l")
        for alias in names:
            out[alias] = 1 + i
    out.update({"rflags": FLAGS, "eflags": FLAGS, "flags": FLAGS})
    out.update({f"xmm{k}": XMM0 + k for k in range(16)})
    return out


_REGISTER_VARS = _register_variables()

_WORD_POINTERS = frozenset({"si", "di", "bp", "sp"})
_STACK_OPS = frozenset({"push", "pop", "call", "ret"})
_MOVES = frozenset({"mov", "movaps", "movapd", "movdqa", "movdqu", "movups", "movq"})
_ZERO_IDIOMS = frozenset({"xor", "sub", "pxor", "xorps", "xorpd", "psubb", "psubw", "psubd", "psubq", "pcmpgtd"})
_BARRIERS = frozenset({"lfence", "mfence", "cpuid", "rdtsc", "rdtscp", "syscall", "sysenter", "int", "int3"})
_SERIAL = frozenset({"syscall", "sysenter", "int", "int3", "hlt"})


@dataclass(frozen=True)
class InsnTiming:
    """One instruction as the block model sees it. Times are in millicycles."""

    address: int
    size: int
    fused: int
    """Micro-ops in the fused domain (what the rename stage takes)."""
    ports: tuple[tuple[tuple[str, ...], int], ...]
    """Micro-op groups: (the ports each may issue to, millicycles of port time in all)."""
    latency: int
    load: bool
    store: bool
    address_vars: tuple[int, ...]
    data_vars: tuple[int, ...]
    dst_vars: tuple[int, ...]
    zero_idiom: bool = False
    move: bool = False
    barrier: bool = False
    stack_delta: int | None = None
    """For push/pop: the change to rsp; the stack slot is addressed relative to the block's rsp."""
    stack_slot: int | None = None
    """A load or store at [rsp + disp] (after the stack engine's adjustments): the slot's offset."""
    branch: BranchKind = BranchKind.NONE
    target: int = 0


_VARIABLE_OF_REG: dict[int, int | None] = {}
"""`variable` by capstone register id (a register's name depends on its id alone)."""


def variable(insn: capstone.CsInsn, reg: int) -> int | None:
    """The block-model variable of a register, or None for registers it does not track (rip, segments)."""
    try:
        return _VARIABLE_OF_REG[reg]
    except KeyError:
        found = _VARIABLE_OF_REG[reg] = _REGISTER_VARS.get(insn.reg_name(reg) or "")
        return found


def _memory_operands(insn: capstone.CsInsn, mnemonic: str) -> list[x86.X86Op]:
    if mnemonic == "lea" or mnemonic.startswith("nop"):
        return []
    return [op for op in insn.operands if op.type == x86.X86_OP_MEM]


def branch_kind(insn: capstone.CsInsn, groups: Collection[int] | None = None) -> tuple[BranchKind, int]:
    """How `insn` ends a block, and its direct target (0 when it has none). `groups`: its
    capstone groups, when the caller has them already."""
    mnemonic = insn.mnemonic
    if mnemonic in _SERIAL:
        return BranchKind.SERIAL, 0
    if groups is None:
        groups = insn.groups
    if capstone.CS_GRP_RET in groups:
        return BranchKind.RET, 0
    if capstone.CS_GRP_JUMP not in groups and capstone.CS_GRP_CALL not in groups:
        return BranchKind.NONE, 0
    operands = insn.operands
    direct = len(operands) == 1 and operands[0].type == x86.X86_OP_IMM
    if not direct:
        return BranchKind.INDIRECT, 0
    target = int(operands[0].imm)
    if mnemonic in ("jmp", "call"):
        return BranchKind.DIRECT, target
    return BranchKind.COND, target


def _registers(insn: capstone.CsInsn, mem: list[x86.X86Op]) -> tuple[set[int], set[int], set[int]]:
    """(address vars, data vars, destination vars) of `insn`, whose memory operands are `mem`."""
    reads, writes = insn.regs_access()
    address: set[int] = set()
    for op in mem:
        for reg in (op.mem.base, op.mem.index):
            var = variable(insn, reg) if reg else None
            if var is not None:
                address.add(var)
    data = {v for v in (variable(insn, r) for r in reads) if v is not None}
    dst: set[int] = set()
    for reg in writes:
        var = variable(insn, reg)
        if var is None:
            continue
        dst.add(var)
        if var < FLAGS and _is_partial_write(insn, reg):
            data.add(var)  # an 8- or 16-bit write merges into the old value
    explicit_data = {v for v in (_operand_var(insn, op) for op in insn.operands) if v is not None}
    data -= address - explicit_data
    return address, data, dst


def _operand_var(insn: capstone.CsInsn, op: x86.X86Op) -> int | None:
    return variable(insn, op.reg) if op.type == x86.X86_OP_REG else None


_PARTIAL_WRITES: dict[int, bool] = {}
"""Whether writing a register merges into its old value, by capstone register id."""


def _is_partial_write(insn: capstone.CsInsn, reg: int) -> bool:
    """An 8- or 16-bit general register (a write merges into the old value)."""
    try:
        return _PARTIAL_WRITES[reg]
    except KeyError:
        name = insn.reg_name(reg) or ""
        found = _PARTIAL_WRITES[reg] = name in _REGISTER_VARS and _is_partial(name)
        return found


def _is_partial(name: str) -> bool:
    return (
        name.endswith(("l", "h", "b", "w")) or (len(name) == 2 and name[1] == "x") or name in ("si", "di", "bp", "sp")
    )


def _is_same_pair(insn: capstone.CsInsn) -> bool:
    ops = insn.operands
    return len(ops) == 2 and all(op.type == x86.X86_OP_REG for op in ops) and ops[0].reg == ops[1].reg


def _stack_slot(insn: capstone.CsInsn, mem: list[x86.X86Op]) -> int | None:
    for op in mem:
        if variable(insn, op.mem.base) == RSP and not op.mem.index:
            return int(op.mem.disp)
    return None


def timing(
    insn: capstone.CsInsn,
    fused: int,
    ports: tuple[tuple[tuple[str, ...], int], ...],
    latency_cycles: int,
) -> InsnTiming:
    """The block model's view of `insn`, given its table figures (fused uops, port millicycles, latency)."""
    full_mnemonic = insn.mnemonic
    mnemonic = full_mnemonic.split(" ")[-1]
    mem = _memory_operands(insn, full_mnemonic)
    address, data, dst = _registers(insn, mem)
    kind, target = branch_kind(insn, insn.groups)
    stack_delta = None
    if mnemonic in _STACK_OPS:
        address.discard(RSP)
        data.discard(RSP)
        dst.discard(RSP)
        stack_delta = {"push": -8, "pop": 8, "call": -8, "ret": 8}[mnemonic]
    loads = bool(mem) and (mnemonic in ("pop", "ret") or _reads_memory(full_mnemonic, mem))
    stores = mnemonic in ("push", "call") or any(op.access & capstone.CS_AC_WRITE for op in mem)
    same_pair = _is_same_pair(insn)
    zero = same_pair and mnemonic in _ZERO_IDIOMS
    move = mnemonic in _MOVES and not mem and not same_pair and len(insn.operands) == 2
    if zero:
        data = set()
    return InsnTiming(
        address=insn.address,
        size=insn.size,
        fused=fused,
        ports=ports,
        latency=latency_cycles * MILLICYCLES_PER_CYCLE,
        load=loads or mnemonic == "pop",
        store=stores,
        address_vars=tuple(sorted(address)),
        data_vars=tuple(sorted(data)),
        dst_vars=tuple(sorted(dst)),
        zero_idiom=zero,
        move=move,
        barrier=mnemonic in _BARRIERS,
        stack_delta=stack_delta,
        stack_slot=_stack_slot(insn, mem),
        branch=kind,
        target=target,
    )


def _reads_memory(mnemonic: str, mem: list[x86.X86Op]) -> bool:
    if mnemonic.startswith(("rep", "lock")):
        return True
    return any(op.access & capstone.CS_AC_READ or not op.access for op in mem)
