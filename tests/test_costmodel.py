"""The per-instruction cycle cost model: its table, form keys, fallbacks and determinism."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import capstone
import pytest

from emu.costmodel import CATEGORIES, CostModel, CostModelError, category, form_key
from emu.elf import Perm, load_elf

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "elf"
TABLE = ROOT / "emu" / "data" / "costs-skylake.json"
DERIVE = ROOT / "tools" / "derive_costs.py"

EXPECTED_FALLBACKS: frozenset[str] = frozenset()
"""Forms in the committed fixtures that may use a category default instead of a derived cost."""


def _cs() -> capstone.Cs:
    cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    cs.detail = True
    return cs


def _insn(hex_bytes: str, address: int = 0x401000) -> capstone.CsInsn:
    code = bytes.fromhex(hex_bytes)
    insns = list(_cs().disasm(code, address))
    assert len(insns) == 1 and insns[0].size == len(code), hex_bytes
    return insns[0]


def _key(hex_bytes: str, address: int = 0x401000) -> str:
    return form_key(_insn(hex_bytes, address))


def _tool(name: str) -> ModuleType:
    """A script of tools/ as a module (imported once)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model() -> CostModel:
    return CostModel.load()


def test_table_loads_with_its_header(model: CostModel) -> None:
    assert model.name == "skylake"
    assert model.frequency_hz == 2_000_000_000
    assert len(model.forms) > 100
    assert set(model.defaults) == set(CATEGORIES)
    assert model.header["units"].startswith("millicycles")
    assert "LLVM version" in model.header["llvm_mca"]["version"]
    assert model.header["formula"]
    assert model.machine.load_latency == 5000
    assert CostModel.load("skylake").forms == model.forms


def test_table_file_is_canonical_json() -> None:
    text = TABLE.read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), indent=1, sort_keys=True, ensure_ascii=True) + "\n"


def test_costs_are_positive_integers(model: CostModel) -> None:
    for key, row in model.forms.items():
        assert isinstance(row.cost, int) and not isinstance(row.cost, bool), key
        assert row.cost >= 1, key
        assert row.source in ("mca", "fixed"), key
    assert all(isinstance(v, int) and v >= 1 for v in model.defaults.values())


def test_mca_rows_follow_the_documented_formula(model: CostModel) -> None:
    """A form's cost is its share of the rename width; its ports and latency come with it."""
    width = model.header["machine"]["width"]
    assert width == model.machine.width == 4
    for key, row in model.forms.items():
        if row.source != "mca":
            continue
        assert row.uops is not None and row.latency is not None and row.ports is not None, key
        assert row.cost == max(1, int(Fraction(row.uops * 1000, width) + Fraction(1, 2))), key


@pytest.mark.parametrize("cpu", ["skylake", "zen4"])
def test_every_fixture_instruction_has_a_derived_cost(cpu: str) -> None:
    model = CostModel.load(cpu)
    cs = _cs()
    fallbacks: dict[str, str] = {}
    elves = sorted(FIXTURES.glob("*.elf"))
    assert elves
    for path in elves:
        for segment in load_elf(path).segments:
            if not segment.perms & Perm.X:
                continue
            for insn in cs.disasm(segment.data, segment.vaddr):
                cost, derived = model.lookup(insn)
                assert cost >= 1
                if not derived:
                    fallbacks.setdefault(form_key(insn), f"{path.name}:{insn.address:#x} {insn.mnemonic} {insn.op_str}")
    unexpected = {k: v for k, v in fallbacks.items() if k not in EXPECTED_FALLBACKS}
    assert not unexpected, f"forms without a derived cost (re-run tools/derive_costs.py): {unexpected}"


@pytest.mark.parametrize("cpu", ["skylake", "zen4"])
def test_common_compiler_output_has_derived_costs(cpu: str) -> None:
    """Every built-in form (SSE arithmetic, conversions, integer forms compilers emit) is in the
    table, with micro-ops, a latency and ports: none falls to a category default."""
    model = CostModel.load(cpu)
    derive = _tool("derive_costs")
    unassembled = {line.split(":")[0] for line in model.header["unassembled"]}
    for encoding in derive.BUILTIN_FORMS:
        insn = _insn(encoding)
        key = form_key(insn)
        if key in unassembled:
            continue
        row = model.row(insn)
        assert row is not None, f"{cpu}: {key} ({insn.mnemonic} {insn.op_str}) has no derived cost"
        if row.source == "mca":
            assert row.uops and row.latency is not None and row.ports is not None, key  # zero idioms: no port


def test_form_key_ignores_registers_addresses_and_values() -> None:
    assert _key("4889d8") == _key("4889d1") == "mov r64, r64"  # mov rax, rbx / mov rcx, rdx
    assert _key("488b03") == _key("488b4b08") == "mov r64, m64"  # mov rax, [rbx] / mov rcx, [rbx + 8]
    assert _key("488b0500010000") == "mov r64, m64"  # mov rax, [rip + 0x100]
    assert _key("488b03") != _key("4889d8")
    assert _key("83c008") == _key("0578563412") == "add r32, imm"  # imm8 and imm32 encodings
    assert _key("7500", 0x401000) == _key("0f8500010000", 0x402000) == "jne rel"
    assert _key("e800000000", 0x401000) == _key("e800000000", 0x405000) == "call rel"
    assert _key("ffd0") == "call r64"
    assert _key("ff23") == "jmp m64"
    assert _key("c3") == "ret"
    assert _key("0f05") == "syscall"
    assert _key("f348a5") == "rep movsq m64, m64"


def test_form_key_marks_same_register_pairs() -> None:
    assert _key("31c0") == "xor r32, r32 (same)"  # xor eax, eax: a zero idiom
    assert _key("31c8") == "xor r32, r32"  # xor eax, ecx
    assert _key("4885c0") == _key("4d85ff") == "test r64, r64 (same)"
    assert _key("0f57c0") == "xorps xmm, xmm (same)"


def test_unknown_forms_fall_back_by_category(model: CostModel) -> None:
    cases = {
        "c5f458c2": "simd",  # vaddps ymm0, ymm1, ymm2
        "e300": "branch",  # jrcxz
        "480fc70b": "memory",  # cmpxchg16b xmmword ptr [rbx]
        "0fa3d8": None,  # bt eax, ebx (r32 form: derived or not, it must cost something)
    }
    for hex_bytes, expected in cases.items():
        insn = _insn(hex_bytes)
        cost, derived = model.lookup(insn)
        if expected is None:
            assert cost >= 1
            continue
        assert not derived, form_key(insn)
        assert category(insn) == expected
        assert cost == model.defaults[expected]


def test_categories() -> None:
    assert category(_insn("0f05")) == "syscall"
    assert category(_insn("e800000000")) == "call"
    assert category(_insn("c3")) == "ret"
    assert category(_insn("7500")) == "branch"
    assert category(_insn("f3a4")) == "string"
    assert category(_insn("0f1003")) == "simd"
    assert category(_insn("488b03")) == "memory"
    assert category(_insn("488d4308")) == "other"  # lea reads no memory
    assert category(_insn("4801d8")) == "other"
    assert category(_insn("cc")) == "other"  # int3 traps; it is no syscall


def test_cost_of_bytes_is_deterministic_and_position_independent(model: CostModel) -> None:
    image = load_elf(FIXTURES / "procd.elf")
    segment = next(s for s in image.segments if s.perms & Perm.X)
    first = model.cost_of_bytes(segment.data, segment.vaddr)
    assert first == model.cost_of_bytes(segment.data, segment.vaddr)
    assert first == CostModel.load().cost_of_bytes(segment.data, segment.vaddr)
    assert [c for _, _, c in first] == [c for _, _, c in model.cost_of_bytes(segment.data, 0x7000_0000)]
    address = segment.vaddr
    for insn_address, size, cost in first:
        assert insn_address == address and size > 0 and cost >= 1
        address += size
    assert address == segment.vaddr + len(segment.data)
    insns = list(_cs().disasm(segment.data, segment.vaddr))
    assert [c for _, _, c in first] == [model.cost(i) for i in insns]


def test_cost_of_bytes_stops_at_undecodable_bytes(model: CostModel) -> None:
    out = model.cost_of_bytes(bytes.fromhex("4889d8") + b"\x06" + bytes.fromhex("c3"), 0x1000)
    assert [(a, s) for a, s, _ in out] == [(0x1000, 3)]


def test_fixed_costs(model: CostModel) -> None:
    assert model.cost(_insn("0f05")) == model.header["fixed"]["syscall"]["cost"]
    assert model.cost(_insn("f348a5")) == model.header["fixed"]["string"]["cost"]


def test_malformed_tables_are_refused(model: CostModel) -> None:
    table = json.loads(TABLE.read_text(encoding="utf-8"))
    bad = json.loads(json.dumps(table))
    next(iter(bad["forms"].values()))["cost"] = 0
    with pytest.raises(CostModelError, match="not a positive integer"):
        CostModel.from_json(bad)
    bad = json.loads(json.dumps(table))
    del bad["defaults"]["simd"]
    with pytest.raises(CostModelError, match="no default cost for simd"):
        CostModel.from_json(bad)
    with pytest.raises(CostModelError, match="cannot read"):
        CostModel.load("no-such-cpu")


def _require(reason: str) -> NoReturn:
    """Skip for `reason`, except in CI, where the test's tools must be there."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must provide it: apt-get install llvm, which is LLVM 14 on Debian 12)")
    pytest.skip(reason)


def _llvm_mca() -> str:
    found = shutil.which("llvm-mca")
    if found is None:
        _require("llvm-mca is not installed")
    return found


def test_the_zen4_table_takes_the_measured_figures() -> None:
    """The Zen 4 model is LLVM's Zen 3 model calibrated with committed measurements of the host."""
    zen4 = CostModel.load("zen4")
    measured = json.loads((ROOT / "benches" / "data" / "measured-zen4.json").read_text(encoding="utf-8"))
    cal = {name: entry["cycles"] for name, entry in measured["calibration"].items()}
    assert zen4.machine.width == 6
    assert zen4.machine.load_latency == round(cal["cal_load"] / 8) * 1000
    assert zen4.forms["div r32"].latency == round(cal["cal_div32"] / 4)
    assert zen4.forms["imul r64, r64"].latency == 3
    assert zen4.header["llvm_mca"]["args"][0] == "-mcpu=znver3"


@pytest.mark.parametrize("cpu", ["skylake", "zen4"])
def test_rederiving_gives_a_byte_identical_table(tmp_path: Path, cpu: str) -> None:
    table = ROOT / "emu" / "data" / f"costs-{cpu}.json"
    llvm_mca = _llvm_mca()
    version = re.search(
        r"LLVM version \S+", subprocess.run([llvm_mca, "--version"], capture_output=True, text=True).stdout
    )
    committed = json.loads(table.read_text(encoding="utf-8"))["llvm_mca"]["version"]
    if version is None or version.group(0) != committed:
        found = version.group(0) if version else "of unknown version"
        _require(f"llvm-mca is {found}; the table was derived with {committed}")
    out = tmp_path / "costs.json"
    result = subprocess.run(
        [sys.executable, str(DERIVE), "--cpu", cpu, "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == table.read_bytes(), f"stale {table.name}: re-run tools/derive_costs.py --cpu {cpu}"


def test_model_tracks_llvm_mca_on_procds_hot_path() -> None:
    llvm_mca = _llvm_mca()
    compare_mca = _tool("compare_mca")
    report = compare_mca.compare(CostModel.load(), llvm_mca, "skylake")
    assert [p.label for p in report.paths] == ["valid", "rejected"]
    assert all(p.reply_op is not None for p in report.paths)
    summary = compare_mca.summarize(report)
    assert summary.compared > 100
    # The executed hot path as a whole: the figure the virtual clock accumulates.
    assert abs(summary.executed_clock - summary.executed_mca) <= 0.10 * summary.executed_mca
    # No block's throughput bound lets it rename more than the machine's width.
    assert summary.widest <= report.width
    assert "| block | symbol+offset |" in compare_mca.markdown(report)


def test_derive_reports_a_missing_llvm_mca_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(DERIVE), "--llvm-mca", str(tmp_path / "nope"), "--out", str(tmp_path / "x.json")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "llvm-mca not found" in result.stderr
    assert not (tmp_path / "x.json").exists()


def test_mca_asm_rewrites_targets_and_rip_offsets() -> None:
    derive = _tool("derive_costs")
    assert derive.mca_asm(_insn("e800100000")) == "call .Lt"
    assert derive.mca_asm(_insn("7510")) == "jne .Lt"
    assert derive.mca_asm(_insn("488b0500010000")) == "mov rax, qword ptr [rip + 64]"
    assert derive.mca_asm(_insn("ff23")) == "jmp qword ptr [rbx]"
