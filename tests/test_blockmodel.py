"""The dependency-aware block model: summaries at translation time, the clock they drive at run time."""

from __future__ import annotations

from pathlib import Path

import capstone
import loopgen
import pytest
from elfcraft import code_image
from hypothesis import given, settings

from emu.blockmodel import port_bound_of
from emu.costmodel import CostModel, form_key
from emu.cpu import GuestCpu, TrapKind
from emu.elf import Perm, load_elf
from emu.timing import FLAGS, START, XMM0, BranchKind
from procd_model.cpu_model import default_cpu_model

RAX, RCX, RDX, RBX, RSP = 1, 3, 4, 2, 8
"""Block-model variables of a few registers (emu/timing.py numbers them rax, rbx, rcx, rdx, ...)."""


@pytest.fixture(scope="module")
def model() -> CostModel:
    return CostModel.load()


def _insns(hex_bytes: str, address: int = 0x401000) -> list[capstone.CsInsn]:
    cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    cs.detail = True
    code = bytes.fromhex(hex_bytes)
    insns = list(cs.disasm(code, address))
    assert sum(i.size for i in insns) == len(code), hex_bytes
    return insns


def _entries(model: CostModel, hex_bytes: str) -> dict[int, dict[int, int]]:
    out: dict[int, dict[int, int]] = {}
    for dst, src, off in model.summarize(_insns(hex_bytes)).entries:
        out.setdefault(dst, {})[src] = off
    return out


def test_a_dependency_chain_adds_its_latencies(model: CostModel) -> None:
    # add rax, rbx x4: rax is ready 4 cycles after its old value (or rbx's)
    entries = _entries(model, "4801d8" * 4)
    assert entries[RAX][RAX] == 4000 and entries[RAX][RBX] == 4000
    assert model.summarize(_insns("4801d8" * 4)).through == 1000  # 4 fused uops, width 4


def test_independent_work_is_bound_by_width_and_ports(model: CostModel) -> None:
    # add rax, rbx; add rcx, rbx; add rdx, rbx; add rsi, rbx; imul rdi, rbx; imul r8, rbx
    block = "4801d84801d94801da4801de480faffb4c0fafc3"
    summary = model.summarize(_insns(block))
    assert summary.through == 2000  # two imuls on the one multiplier port
    entries = _entries(model, block)
    assert entries[RAX][RAX] == 1000 and entries[RCX][RCX] == 1000


def test_zero_idioms_read_nothing_and_moves_are_eliminated(model: CostModel) -> None:
    entries = _entries(model, "31c001d8")  # xor eax, eax; add eax, ebx
    assert RAX not in entries[RAX] and entries[RAX][RBX] == 1000
    entries = _entries(model, "4889d8")  # mov rax, rbx
    assert entries[RAX][RBX] == 0


def test_loads_wait_for_the_address_then_the_load_latency(model: CostModel) -> None:
    assert _entries(model, "488b00")[RAX][RAX] == 5000  # mov rax, [rax]: pointer chasing
    entries = _entries(model, "480303")  # add rax, [rbx]
    assert entries[RAX][RAX] == 1000 and entries[RAX][RBX] == 6000


def test_the_stack_engine_keeps_rsp_out_of_push_and_pop(model: CostModel) -> None:
    entries = _entries(model, "505b")  # push rax; pop rbx: forwarded through the stack
    assert RSP not in entries
    assert entries[RBX][RAX] == model.machine.store_forward_latency
    push = model.timing(_insns("50")[0])
    assert push.fused == 1 and RSP not in push.data_vars + push.dst_vars


def test_flags_and_branches_are_tracked(model: CostModel) -> None:
    entries = _entries(model, "4839d87500")  # cmp rax, rbx; jne
    assert entries[FLAGS][RAX] == 1000 and START in entries[FLAGS]
    summary = model.summarize(_insns("4839d87500"))
    # A mispredicted jne refills after it resolves: one cycle after the flags are ready.
    assert (summary.branch_var, summary.branch_off) == (FLAGS, 1000)
    assert summary.kind == BranchKind.COND and summary.target == 0x401005


def test_sse_forms_are_costed_and_chained(model: CostModel) -> None:
    for hex_bytes in ("0f59c1", "0f5803", "660ffec1", "f20f59c1"):
        insn = _insns(hex_bytes)[0]
        assert model.lookup(insn)[1], form_key(insn)
    entries = _entries(model, "0f59c10f59c1")  # mulps xmm0, xmm1 twice
    assert entries[XMM0][XMM0] == 8000


def test_the_port_bound_assigns_micro_ops_at_best() -> None:
    alu, branch = ("p0", "p1", "p5", "p6"), ("p0", "p6")
    assert port_bound_of({alu: 4000, branch: 2000}) == 1500  # 6 uops on 4 ports, 2 of them only on p0/p6
    assert port_bound_of({alu: 1000, branch: 4000}) == 2000  # the branch ports are the bottleneck


def _assert_no_block_renames_more_than_the_width(model: CostModel, code: bytes, address: int) -> None:
    """Every block of a linear sweep of `code` (ending at a jump, a return or 32 instructions)."""
    cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    cs.detail = True
    block: list[capstone.CsInsn] = []
    for insn in cs.disasm(code, address):
        block.append(insn)
        if insn.group(capstone.CS_GRP_JUMP) or insn.group(capstone.CS_GRP_RET) or len(block) == 32:
            summary = model.summarize(block)
            fused = sum(model.timing(i).fused for i in block)
            assert fused * 1000 <= summary.through * model.machine.width, hex(block[0].address)
            block = []


def test_no_block_of_the_fixtures_renames_more_than_the_width(model: CostModel) -> None:
    for name in ("procd.elf", "bench-compute.elf"):
        path = Path(__file__).resolve().parent.parent / "fixtures" / "elf" / name
        for segment in load_elf(path).segments:
            if segment.perms & Perm.X:
                _assert_no_block_renames_more_than_the_width(model, segment.data, segment.vaddr)


@pytest.mark.parametrize("cpu", ["skylake", "zen4"])
@settings(max_examples=40, deadline=None)
@given(program=loopgen.programs())
def test_no_block_of_a_random_loop_program_renames_more_than_the_width(
    cpu: str, program: tuple[tuple[loopgen.Item, ...], int]
) -> None:
    _assert_no_block_renames_more_than_the_width(CostModel.load(cpu), loopgen.assemble(*program), 0x400000)


def _cycles_per_iteration(loop_body: str, iterations: int = 2000) -> float:
    """Run `loop_body; dec ecx; jnz` `iterations` times on the default CPU: cycles per iteration."""
    body = bytes.fromhex(loop_body)
    back = -(len(body) + 2 + 6)
    # mov ecx, N; L: body; dec ecx; jnz L; mov eax, 9; syscall
    code = b"\xb9" + iterations.to_bytes(4, "little") + body + b"\xff\xc9\x0f\x85"
    code += back.to_bytes(4, "little", signed=True) + b"\xb8\x09\x00\x00\x00\x0f\x05"
    cpu = GuestCpu(default_cpu_model())
    cpu.load(load_elf(code_image(code)))
    assert cpu.run(10**7).kind is TrapKind.SYSCALL
    return cpu.cost / 1000 / iterations


def test_loops_run_at_the_speed_of_their_slowest_constraint() -> None:
    chain = _cycles_per_iteration("4801d8" * 4)  # add rax, rbx x4: a 4-cycle chain
    independent = _cycles_per_iteration("4801d84801da4801de4801df")  # four chains of one
    imul = _cycles_per_iteration("480fafc0" * 2)  # imul rax, rax x2: latency 3 each
    assert chain == pytest.approx(4.0, rel=0.05)
    assert independent == pytest.approx(1.5, rel=0.1)  # 6 fused uops over 4 ports, the branch on p0/p6
    assert imul == pytest.approx(6.0, rel=0.05)


def test_the_same_run_gives_the_same_clock() -> None:
    first = _cycles_per_iteration("4801d8480fafc0", 500)
    assert first == _cycles_per_iteration("4801d8480fafc0", 500)


def test_an_instruction_log_that_stops_inside_blocks_never_moves_the_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tiny log buffer stops the guest inside nearly every block to drain it; the block model
    must count and time each block once, whole, so the digest is the untraced run's."""
    import json

    from emu import insnlog
    from emu.cli import main

    def digest(*args: str) -> str:
        out = tmp_path / "trace.jsonl"
        assert main(["run", "--scenario", "phase0-exit", *args, "--format", "jsonl", "--out", str(out)]) == 0
        return str(json.loads(out.read_text().splitlines()[-1])["digest"])

    untraced = digest("--trace", "none")
    monkeypatch.setattr(insnlog, "BUFFER_BYTES", 600)
    assert digest("--trace", "insn") == untraced


def test_block_probes_see_each_block_once_when_the_log_splits_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Probes (block events, the folded profile) add up to the guest's counts even when the
    instruction log stops inside blocks: a block's resumed rest is not reported again."""
    from emu import insnlog

    monkeypatch.setattr(insnlog, "BUFFER_BYTES", 600)
    body = bytes.fromhex("4801d8480fafc04801da")  # add rax, rbx; imul rax, rax; add rdx, rbx
    back = -(len(body) + 2 + 6)
    code = b"\xb9" + (300).to_bytes(4, "little") + body + b"\xff\xc9\x0f\x85"
    code += back.to_bytes(4, "little", signed=True) + b"\xb8\x09\x00\x00\x00\x0f\x05"
    cpu = GuestCpu(default_cpu_model())
    cpu.load(load_elf(code_image(code)))
    seen: list[tuple[int, int]] = []
    cpu.add_block_probe(lambda _a, _s, _i, _c, insns, cost: seen.append((insns, cost)))
    lines: list[int] = []
    cpu.attach_insn_log(1, lambda count, _json, _text: lines.append(count), lambda: 0, text=False)
    assert cpu.run(10**6).kind is TrapKind.SYSCALL
    assert sum(lines) == cpu.retired
    assert sum(i for i, _ in seen) == cpu.retired
    assert sum(c for _, c in seen) == cpu.cost
