"""GuestCpu: exact instruction counts at every kind of stop, and faults as values, not exceptions."""

import pytest
import unicorn
from elfcraft import code_image
from hypothesis import given, settings
from hypothesis import strategies as st
from unicorn import unicorn_const as uc_const
from unicorn import x86_const

from emu.accounting import UNIT_CPU
from emu.cpu import FaultCause, GuestCpu, TrapKind
from emu.elf import ElfImage, Perm, load_elf

# mov ecx, 1000; L: dec ecx; jnz L; mov eax, 9; xor edi, edi; syscall; jmp $
LOOP = bytes.fromhex("b9e8030000ffc975fcb80900000031ff0f05ebfe")
LOOP_INSNS_TO_SYSCALL = 1 + 2 * 1000 + 3


def reference_count(image: ElfImage) -> int:
    """Instructions up to and including the first syscall, counted one by one by a code hook."""
    uc = unicorn.Uc(uc_const.UC_ARCH_X86, uc_const.UC_MODE_64)
    for seg in image.segments:
        start = seg.vaddr & ~0xFFF
        size = ((seg.end + 0xFFF) & ~0xFFF) - start
        uc.mem_map(start, size)
        uc.mem_write(seg.vaddr, seg.data)
    count = [0]

    def on_code(uc: unicorn.Uc, address: int, size: int, _: object) -> None:
        count[0] += 1

    uc.hook_add(uc_const.UC_HOOK_CODE, on_code)
    uc.hook_add(uc_const.UC_HOOK_INSN, lambda uc, _: uc.emu_stop(), None, 1, 0, x86_const.UC_X86_INS_SYSCALL)
    uc.emu_start(image.entry, 0xFFFF_FFFF_FFFF_FFFF)
    return count[0]


def fresh(code: bytes) -> GuestCpu:
    cpu = GuestCpu(UNIT_CPU)
    cpu.load(load_elf(code_image(code)))
    return cpu


def test_count_at_syscall_matches_a_per_instruction_count() -> None:
    image = load_elf(code_image(LOOP))
    assert reference_count(image) == LOOP_INSNS_TO_SYSCALL
    cpu = GuestCpu(UNIT_CPU)
    cpu.load(image)
    trap = cpu.run(10**6)
    assert trap.kind is TrapKind.SYSCALL
    assert cpu.retired == LOOP_INSNS_TO_SYSCALL
    assert trap.rip == cpu.reg("rip")


@settings(max_examples=40, deadline=None)
@given(quanta=st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=30), exact=st.booleans())
def test_slicing_never_changes_the_total(quanta: list[int], exact: bool) -> None:
    """However the run is cut into budgets, the syscall arrives after the same number of instructions."""
    cpu = fresh(LOOP)
    for quantum in quanta * 20:
        before = cpu.retired
        trap = cpu.run(quantum, exact=exact)
        assert cpu.retired - before <= quantum
        if exact and trap.kind is TrapKind.BUDGET:
            assert cpu.retired - before == quantum
        if trap.kind is TrapKind.SYSCALL:
            break
    else:
        trap = cpu.run(10**6)
    assert trap.kind is TrapKind.SYSCALL
    assert cpu.retired == LOOP_INSNS_TO_SYSCALL


def test_exact_budget_stops_on_the_instruction() -> None:
    cpu = fresh(b"\xeb\xfe")  # jmp $
    assert cpu.run(12345, exact=True).kind is TrapKind.BUDGET
    assert cpu.retired == 12345


FAULTS = [
    # (name, code, kind, retired, fault rip offset)
    ("unmapped write", "b801000000bb020000008904250000000090", FaultCause.UNMAPPED_WRITE, 2, 10),
    ("unmapped read", "908b042500000000", FaultCause.UNMAPPED_READ, 1, 1),
    ("invalid opcode", "b8010000000f0b", FaultCause.INVALID_OPCODE, 1, 5),
    ("divide error", "31c9b801000000f7f1", FaultCause.DIVIDE_ERROR, 2, 7),
    ("breakpoint", "90cc90", FaultCause.BREAKPOINT, 2, 2),
    ("hlt", "90f4", FaultCause.GENERAL_PROTECTION, 1, 1),
    ("jump to null", "9031c0ffe0", FaultCause.UNMAPPED_FETCH, 3, None),
    ("write to code", "90488d05f9ffffffc60000", FaultCause.PROTECTED_WRITE, 2, 8),
]


@pytest.mark.parametrize(("name", "code", "kind", "retired", "rip_offset"), FAULTS, ids=[f[0] for f in FAULTS])
def test_faults_are_reported_with_exact_counts(
    name: str, code: str, kind: FaultCause, retired: int, rip_offset: int | None
) -> None:
    cpu = fresh(bytes.fromhex(code))
    trap = cpu.run(1000)
    assert trap.kind is TrapKind.FAULT
    assert trap.fault is not None and trap.fault.kind is kind
    assert cpu.retired == retired
    if rip_offset is not None:
        assert trap.fault.rip == 0x400000 + rip_offset


def test_fault_in_exact_tail_is_counted_exactly() -> None:
    """A block that crosses the budget is counted whole and stopped inside; a fault in it still counts exactly."""
    code = bytes.fromhex("90" * 20 + "89042500000000" + "90" * 20)
    cpu = fresh(code)
    trap = cpu.run(30, exact=True)
    assert trap.kind is TrapKind.FAULT
    assert trap.fault is not None and trap.fault.kind is FaultCause.UNMAPPED_WRITE
    assert cpu.retired == 20


def _movabs(register: int, value: int) -> bytes:
    """movabs r64, imm64 for rax (0), rcx (1), ..., rdi (7)."""
    return bytes([0x48, 0xB8 + register]) + value.to_bytes(8, "little")


RAX, RSP = 0, 4
# (name, code, kind, fault address, rip offset (None: the address), retired)
EXACT_ADDRESSES = [
    (
        "non-canonical write",
        _movabs(RAX, 0x8000_0000_0000_0010) + bytes.fromhex("48c70001000000"),  # mov qword [rax], 1
        FaultCause.GENERAL_PROTECTION,
        0x8000_0000_0000_0010,
        10,
        1,
    ),
    (
        "non-canonical read whose low bits name a mapped page",
        _movabs(RAX, 0x8000_0000_0040_0000) + bytes.fromhex("488b18"),  # mov rbx, [rax]
        FaultCause.GENERAL_PROTECTION,
        0x8000_0000_0040_0000,
        10,
        1,
    ),
    (
        "read in the canonical upper half",
        _movabs(RAX, 0xFFFF_8000_0000_0010) + bytes.fromhex("488b18"),
        FaultCause.UNMAPPED_READ,
        0xFFFF_8000_0000_0010,
        10,
        1,
    ),
    (
        "read straddling the end of the canonical lower half",
        _movabs(RAX, 0x7FFF_FFFF_FFFC) + bytes.fromhex("488b18"),
        FaultCause.GENERAL_PROTECTION,
        0x8000_0000_0000,
        10,
        1,
    ),
    (
        "write straddling the end of the canonical lower half",
        _movabs(RAX, 0x7FFF_FFFF_FFFE) + bytes.fromhex("488918"),  # mov [rax], rbx
        FaultCause.GENERAL_PROTECTION,
        0x8000_0000_0000,
        10,
        1,
    ),
    (
        "jump to a non-canonical address",
        _movabs(RAX, 0x8000_0000_0040_0000) + bytes.fromhex("ffe0"),  # jmp rax
        FaultCause.GENERAL_PROTECTION,
        0x8000_0000_0040_0000,
        None,
        2,
    ),
    (
        "call to a non-canonical address",
        _movabs(RSP, 0x7FFF_FFFF_F800) + _movabs(RAX, 0xFFF0_0000_0040_0000) + bytes.fromhex("ffd0"),  # call rax
        FaultCause.GENERAL_PROTECTION,
        0xFFF0_0000_0040_0000,
        None,
        3,
    ),
    (
        "push with a non-canonical stack pointer",
        _movabs(RSP, 0x8000_0000_0080_1000) + bytes.fromhex("50"),  # push rax
        FaultCause.GENERAL_PROTECTION,
        0x8000_0000_0080_0FF8,
        10,
        1,
    ),
    (
        "return to a non-canonical address",
        _movabs(RSP, 0x7FFF_FFFF_F800) + _movabs(RAX, 0x8000_0000_0000_1000) + bytes.fromhex("50c3"),  # push; ret
        FaultCause.GENERAL_PROTECTION,
        0x8000_0000_0000_1000,
        None,
        4,
    ),
]


@pytest.mark.parametrize(
    ("name", "code", "kind", "address", "rip_offset", "retired"), EXACT_ADDRESSES, ids=[c[0] for c in EXACT_ADDRESSES]
)
def test_fault_addresses_are_exact_and_non_canonical_ones_are_general_protection(
    name: str, code: bytes, kind: FaultCause, address: int, rip_offset: int | None, retired: int
) -> None:
    cpu = fresh(code)
    cpu.map(0x7FFF_FFFF_F000, 0x1000, Perm.R | Perm.W)  # the last page of the canonical lower half
    trap = cpu.run(1000)
    assert trap.kind is TrapKind.FAULT and trap.fault is not None
    assert (trap.fault.kind, trap.fault.address) == (kind, address), trap.fault.describe()
    assert trap.fault.rip == (address if rip_offset is None else 0x400000 + rip_offset)
    assert cpu.retired == retired


# syscall; mov eax, 1; syscall; mov eax, 2; syscall
HOPS = bytes.fromhex("0f05b8010000000f05b8020000000f05")


def test_a_run_starts_where_rip_was_last_written() -> None:
    """The next run starts from where the engine stopped, unless rip was written since: by
    set_reg, by set_regs with rip in the batch, or by restoring a saved state."""
    cpu = fresh(HOPS)
    entry = cpu.reg("rip")
    assert cpu.run(100).rip == entry + 2
    saved = cpu.save_state()
    cpu.set_reg("rip", entry + 9)  # skip `mov eax, 1; syscall`: straight to mov eax, 2
    assert cpu.run(100).rip == entry + 16 and cpu.reg("rax") == 2
    cpu.set_regs(("rax", "rip"), (0, entry + 2))  # back to `mov eax, 1`
    assert cpu.run(100).rip == entry + 9 and cpu.reg("rax") == 1
    cpu.restore_state(saved)  # back to the stop after the first syscall
    assert cpu.run(100).rip == entry + 9


def test_staged_registers_reach_the_guest_and_every_reader() -> None:
    """A syscall's results are staged: the next run writes them with its call into the engine,
    and any register access before that sees them; a saved state holds them, a restore drops
    ones staged after it."""
    cpu = fresh(bytes.fromhex("4889f8" + "0f05" + "4889f8" + "0f05"))  # mov rax, rdi; syscall (twice)
    cpu.registers.stage(("rdi",), (7,))
    trap = cpu.run(100)
    assert trap.kind is TrapKind.SYSCALL and cpu.reg("rax") == 7  # the run wrote it first
    cpu.registers.stage(("rdi", "rsi"), (9, 1))
    assert cpu.regs(("rdi", "rsi")) == (9, 1)  # a read writes them first
    cpu.registers.stage(("rdi",), (11,))
    saved = cpu.save_state()  # holds rdi = 11
    cpu.registers.stage(("rdi",), (13,))
    cpu.restore_state(saved)  # the 13 is forgotten
    assert cpu.run(100).kind is TrapKind.SYSCALL and cpu.reg("rax") == 11


# 200 rounds of a block with a dependency chain and a load: imul, add, mov from the stack, dec, jne.
CHAIN_LOOP = bytes.fromhex(
    "48c7c400008000" + "4881ec00010000" + "b9c8000000"  # rsp = 0x800000 - 0x100; ecx = 200
    "480fafc0" + "4801c3" + "488b1424" + "ffc9" + "75f1"  # imul rax, rax; add rbx, rax; mov rdx, [rsp]; dec; jne
    "b80900000031ff0f05"  # EXIT
)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=40))
def test_exact_stops_inside_blocks_never_move_the_clock(pieces: list[int]) -> None:
    """Stopped at exact instruction counts (inside blocks, and inside the rest of a block stopped
    in before), a guest on the block model retires the same instructions at the same clock."""
    from procd_model.cpu_model import default_cpu_model

    def guest() -> GuestCpu:
        cpu = GuestCpu(default_cpu_model())
        image = load_elf(code_image(CHAIN_LOOP))
        cpu.load(image)
        cpu.map(0x7FF000, 0x2000, Perm.R | Perm.W)
        return cpu

    whole = guest()
    assert whole.run(10**6).kind is TrapKind.SYSCALL
    pieced = guest()
    retired = 0
    for piece in pieces:
        trap = pieced.run(piece, exact=True)
        if trap.kind is TrapKind.SYSCALL:
            break
        assert trap.kind is TrapKind.BUDGET
        retired += piece
        assert pieced.retired == retired
    else:
        assert pieced.run(10**6).kind is TrapKind.SYSCALL
    assert (pieced.retired, pieced.cost) == (whole.retired, whole.cost)


def test_a_state_saved_while_stopped_inside_a_block_resumes_with_the_same_clock() -> None:
    from procd_model.cpu_model import default_cpu_model

    cpu = GuestCpu(default_cpu_model())
    cpu.load(load_elf(code_image(CHAIN_LOOP)))
    cpu.map(0x7FF000, 0x2000, Perm.R | Perm.W)
    assert cpu.run(9, exact=True).kind is TrapKind.BUDGET  # inside the loop's first block
    saved = cpu.save_state()
    assert cpu.run(10**6).kind is TrapKind.SYSCALL
    finished = (cpu.retired, cpu.cost)
    cpu.restore_state(saved)
    assert cpu.run(10**6).kind is TrapKind.SYSCALL
    assert (cpu.retired, cpu.cost) == finished
