"""Random loop programs, encoded straight to x86-64 machine code, for differential tests of the clock.

A program is a list of items: a plain instruction from a small palette (ALU, multiplies, divides,
moves the renamer eliminates, zero idioms, leas, shifts, loads and stores through `r12`, push/pop,
`rdtsc`/`rdtscp`, a call, SSE), a forward branch over a few instructions (on a xorshift bit:
unpredictable; or on the loop counter: periodic), a load that faults in one lap of a loop, or a
counted loop around a body of items. Loops nest up to three deep, each on
its own counter (`r8d`, `r9d`, `r10d`), and run a fixed count or one taken from the xorshift state.
`rbx` holds the xorshift state, `r12` points at 4 KiB of data, and the program ends with
``mov edi, eax; mov eax, 9; syscall``. Everything else (rax, rcx, rdx, rsi, xmm0-2, the stack)
is scratch. Only the `Fault` item faults.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hypothesis import strategies as st

DATA_ADDR = 0x600000
STACK_TOP = DATA_ADDR + 0x800
COUNTERS = (0, 1, 2)
"""r8d, r9d and r10d, by loop depth (their low three bits in ModRM)."""
SCRATCH = (0, 2, 6)
"""rax, rdx and rsi."""
RBX = 3


@dataclass(frozen=True)
class Insn:
    code: bytes


@dataclass(frozen=True)
class Call:
    """A call of the function placed after the exit (``ror rax, 7; ret``)."""


@dataclass(frozen=True)
class Fault:
    """A load from the unmapped page 0 in the lap where the innermost loop's counter equals `lap`."""

    lap: int


@dataclass(frozen=True)
class Branch:
    """A forward branch over `skipped`: on bit `bit` of the xorshift state, or of the counter."""

    on_counter: bool
    bit: int
    skipped: tuple[Insn | Call, ...]


@dataclass(frozen=True)
class Loop:
    trips: int
    """The trip count; 0: taken from the xorshift state (1 to 8 laps)."""
    body: tuple[Item, ...]


Item = Insn | Call | Fault | Branch | Loop


def _rr(opcode: bytes, reg: int, rm: int) -> bytes:
    return b"\x48" + opcode + bytes([0xC0 | reg << 3 | rm])


def _r12(opcode: bytes, reg: int, disp: int) -> bytes:
    """`opcode` with a register and the memory operand [r12 + disp8]."""
    return b"\x49" + opcode + bytes([0x44 | reg << 3, 0x24, disp])


XORSHIFT = Insn(
    b"".join(
        _rr(b"\x89", RBX, 0) + b"\x48\xc1" + bytes([0xC0 | ext << 3, amount]) + _rr(b"\x31", 0, RBX)
        for ext, amount in ((4, 13), (5, 7), (4, 17))
    )
)
"""One xorshift step of rbx: three times mov rax, rbx; shl/shr rax, n; xor rbx, rax."""


_reg = st.sampled_from(SCRATCH)
_disp = st.integers(0, 15).map(lambda k: 8 * k)


def _insn() -> st.SearchStrategy[Insn | Call]:
    return st.one_of(
        st.builds(lambda s, d: Insn(_rr(b"\x01", s, d)), _reg, _reg),  # add d, s
        st.builds(lambda s, d: Insn(_rr(b"\x31", s, d)), _reg, _reg),  # xor d, s (a zero idiom if s == d)
        st.builds(lambda d, s: Insn(b"\x48\x0f\xaf" + bytes([0xC0 | d << 3 | s])), _reg, _reg),  # imul d, s
        st.builds(lambda s, d: Insn(_rr(b"\x89", s, d)), st.sampled_from((*SCRATCH, RBX)), _reg),  # mov d, s
        st.builds(
            lambda d, a, b: Insn(b"\x48\x8d" + bytes([0x04 | d << 3, a | b << 3])), _reg, _reg, _reg
        ),  # lea d, [a + b]
        st.builds(lambda d, s, k: Insn(b"\x48\x8d" + bytes([0x40 | d << 3 | s, k])), _reg, _reg, st.integers(1, 127)),
        st.builds(
            lambda ext, r, n: Insn(b"\x48\xc1" + bytes([0xC0 | ext << 3 | r, n])),
            st.sampled_from((1, 4, 5)),  # ror, shl, shr
            _reg,
            st.integers(1, 63),
        ),
        st.builds(lambda d, k: Insn(_r12(b"\x8b", d, k)), _reg, _disp),  # mov d, [r12 + k]
        st.builds(lambda s, k: Insn(_r12(b"\x89", s, k)), _reg, _disp),  # mov [r12 + k], s
        st.builds(lambda d, k: Insn(_r12(b"\x03", d, k)), _reg, _disp),  # add d, [r12 + k]
        st.builds(lambda a, b: Insn(bytes([0x50 | a, 0x58 | b])), _reg, _reg),  # push a; pop b
        st.just(Insn(b"\x83\xce\x01\x31\xd2\xf7\xf6")),  # or esi, 1; xor edx, edx; div esi
        st.just(Insn(b"\x0f\x31")),  # rdtsc: the exit code sees the clock
        st.just(Insn(b"\x0f\x01\xf9")),  # rdtscp
        st.just(Insn(b"\x0f\x59\xc1")),  # mulps xmm0, xmm1
        st.just(Insn(b"\x0f\x58\xc2")),  # addps xmm0, xmm2
        st.just(Call()),
    )


def _branch(depth: int) -> st.SearchStrategy[Branch]:
    return st.builds(
        Branch,
        st.booleans() if depth > 0 else st.just(False),
        st.integers(0, 3),
        st.lists(_insn(), min_size=1, max_size=3).map(tuple),
    )


def _items(depth: int) -> st.SearchStrategy[tuple[Item, ...]]:
    leaf: st.SearchStrategy[Item] = st.one_of(_insn(), _branch(depth), st.just(XORSHIFT))
    if depth > 0:
        leaf = st.one_of(leaf, st.builds(Fault, st.integers(1, 12)))
    if depth < len(COUNTERS):
        loop = st.builds(Loop, st.integers(0, 12), st.deferred(lambda: _items(depth + 1)))
        leaf = st.one_of(leaf, loop)
    return st.lists(leaf, min_size=0 if depth == 0 else 1, max_size=6).map(tuple)


def programs() -> st.SearchStrategy[tuple[tuple[Item, ...], int]]:
    """(items, xorshift seed): items around at least one outer loop of up to 30 laps."""
    outer = st.builds(Loop, st.integers(1, 30), _items(1))
    items = st.builds(lambda before, loop, after: (*before, loop, *after), _items(0), outer, _items(0))
    return st.tuples(items, st.integers(1, 2**32 - 1))


class _Assembler:
    def __init__(self) -> None:
        self.code = bytearray()
        self.calls: list[int] = []
        """Offsets of the rel32 fields of calls, patched to the function once it is placed."""

    def items(self, items: tuple[Item, ...], depth: int) -> None:
        for item in items:
            if isinstance(item, Loop):
                self.loop(item, depth)
            elif isinstance(item, Branch):
                self.branch(item, depth)
            elif isinstance(item, Fault):
                self.code += b"\x41\x83" + bytes([0xF8 | COUNTERS[depth - 1], item.lap])  # cmp rNd, lap
                self.code += b"\x75\x08"  # jne over the load
                self.code += b"\x48\x8b\x04\x25\x10\x00\x00\x00"  # mov rax, [0x10]
            else:
                self.insn(item)

    def insn(self, insn: Insn | Call) -> None:
        if isinstance(insn, Call):
            self.code += b"\xe8"
            self.calls.append(len(self.code))
            self.code += bytes(4)
        else:
            self.code += insn.code

    def branch(self, branch: Branch, depth: int) -> None:
        if branch.on_counter:
            counter = COUNTERS[depth - 1]
            self.code += b"\x41\xf7" + bytes([0xC0 | counter]) + struct.pack("<I", 1 << branch.bit)  # test rNd, imm
        else:
            self.code += b"\xf6\xc3" + bytes([1 << branch.bit])  # test bl, imm
        self.code += b"\x74\x00"  # jz over the skipped instructions
        field = len(self.code) - 1
        for insn in branch.skipped:
            self.insn(insn)
        self.code[field] = len(self.code) - field - 1

    def loop(self, loop: Loop, depth: int) -> None:
        counter = COUNTERS[depth]
        if loop.trips:
            self.code += b"\x41" + bytes([0xB8 | counter]) + struct.pack("<I", loop.trips)  # mov rNd, trips
        else:
            self.code += b"\x41\x89" + bytes([0xC0 | RBX << 3 | counter])  # mov rNd, ebx
            self.code += b"\x41\x83" + bytes([0xE0 | counter, 7])  # and rNd, 7
            self.code += b"\x41\xff" + bytes([0xC0 | counter])  # inc rNd
        head = len(self.code)
        self.items(loop.body, depth + 1)
        self.code += b"\x41\xff" + bytes([0xC8 | counter])  # dec rNd
        self.code += b"\x0f\x85" + struct.pack("<i", head - (len(self.code) + 6))  # jnz head


def assemble(items: tuple[Item, ...], seed: int) -> bytes:
    """The program's machine code, loaded at any address (all branches are relative)."""
    out = _Assembler()
    out.code += b"\x49\xc7\xc4" + struct.pack("<I", DATA_ADDR)  # mov r12, DATA_ADDR
    out.code += b"\x48\xc7\xc4" + struct.pack("<I", STACK_TOP)  # mov rsp, STACK_TOP
    out.code += b"\xbb" + struct.pack("<I", seed)  # mov ebx, seed
    out.items(items, 0)
    out.code += b"\x89\xc7\xb8\x09\x00\x00\x00\x0f\x05"  # mov edi, eax; mov eax, 9; syscall
    function = len(out.code)
    out.code += b"\x48\xc1\xc8\x07\xc3"  # ror rax, 7; ret
    for field in out.calls:
        out.code[field : field + 4] = struct.pack("<i", function - (field + 4))
    return bytes(out.code)
