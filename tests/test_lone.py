"""A lone image (one that is not procd) gets a SysV-style stack unless its image note says it
brings its own (docs/abi.md §7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from elfcraft import code_image

from emu.cli import main
from emu.elf import load_elf
from emu.trace import Trace
from procd_model.world import LONE_ENTRY_WORDS, LONE_STACK_SIZE, LONE_STACK_TOP, prepare_alone

ROOT = Path(__file__).resolve().parent.parent

# _start: rsp 16-byte aligned, argc 0 and the argv, envp and auxv terminators at [rsp]; then
# push rbx; call f; pop rbx; exit(0). Any check failing: exit(1). f writes 1020 KiB down the stack
# and returns. (Assembled once with GNU as; the bytes are committed so tests need no toolchain.)
SYSV_ENTRY_CHECKS = bytes.fromhex(
    "40f6c40f753748833c2400753048837c240800752848837c241000752048837c241800751848837c242000751053"
    "e8160000005b31ffb8090000000f05bf01000000b8090000000f05488984240010f0ffc3"
)


def run_jsonl(tmp_path: Path, image: Path) -> tuple[int, list[dict[str, object]]]:
    out = tmp_path / "trace.jsonl"
    code = main(["run", str(image), "--format", "jsonl", "--out", str(out)])
    return code, [json.loads(line) for line in out.read_text().splitlines()]


def test_a_plain_static_elf_starts_on_a_sysv_stack(tmp_path: Path) -> None:
    image = tmp_path / "stack.elf"
    image.write_bytes(code_image(SYSV_ENTRY_CHECKS))
    code, events = run_jsonl(tmp_path, image)
    assert [e["kind"] for e in events if e["kind"] in ("fault", "process.exit")] == ["process.exit"]
    assert code == 0, events[-1]


def test_the_stack_is_documented_size_with_an_unmapped_guard_below(tmp_path: Path) -> None:
    bottom = LONE_STACK_TOP - LONE_STACK_SIZE
    # mov [rsp - depth], rax for the lowest stack word, then for the word below it
    lowest = bottom - (LONE_STACK_TOP - 8 * LONE_ENTRY_WORDS)
    code = bytes.fromhex("48898424") + (lowest & 0xFFFF_FFFF).to_bytes(4, "little")
    code += bytes.fromhex("48898424") + ((lowest - 8) & 0xFFFF_FFFF).to_bytes(4, "little")
    image = tmp_path / "deep.elf"
    image.write_bytes(code_image(code))
    assert run_jsonl(tmp_path, image)[0] == 1
    fault = next(e for e in run_jsonl(tmp_path, image)[1] if e["kind"] == "fault")
    assert (fault["fault"], fault["address"], fault["rip"]) == ("unmapped-write", f"{bottom - 8:#x}", "0x400008")


def test_an_erix_image_brings_its_own_stack() -> None:
    """An image with a valid .erix_image note starts with rsp 0, as CREATE_PROCESS gives (§5)."""
    erix = load_elf(ROOT / "fixtures" / "elf" / "phase0-exit.elf")
    _, proc = prepare_alone(Trace(), erix)
    assert proc.cpu is not None and proc.cpu.reg("rsp") == 0
    assert not proc.cpu.is_mapped(LONE_STACK_TOP - PAGE, PAGE)
    _, plain = prepare_alone(Trace(), load_elf(code_image(SYSV_ENTRY_CHECKS)))
    assert plain.cpu is not None and plain.cpu.reg("rsp") == LONE_STACK_TOP - 8 * LONE_ENTRY_WORDS
    assert plain.cpu.reg("rsp") % 16 == 0


PAGE = 0x1000


def test_a_c_program_built_without_libc_runs_alone(tmp_path: Path) -> None:
    """gcc -static -nostdlib output (tests/data/lone-c.c) pushes at its first instruction."""
    code, events = run_jsonl(tmp_path, ROOT / "tests" / "data" / "lone-c.elf")
    assert code == 0, events[-1]


def test_an_image_in_the_way_of_the_stack_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "in-the-way.elf"
    image.write_bytes(code_image(bytes.fromhex("31ffb8090000000f05"), base=LONE_STACK_TOP - 0x2000))
    assert main(["run", str(image)]) == 2
    assert "overlaps the stack" in capsys.readouterr().err
