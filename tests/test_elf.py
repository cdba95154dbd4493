"""Malformed or foreign ELF files: exit 2 with one clear line, nothing written."""

from pathlib import Path

import pytest
from elfcraft import PF_R, PF_W, PF_X, Seg, build_elf, code_image

from emu.cli import main
from emu.elf import ElfError, Perm, load_elf

GOOD = code_image(b"\xeb\xfe")
CASES = {
    "not-elf": (b"#!/bin/sh\necho hello\n", "not an ELF file"),
    "empty": (b"", "not an ELF file"),
    "32-bit": (build_elf([Seg(0x400000, b"\x90")], 0x400000, elf_class=1), "32-bit ELF"),
    "big-endian": (build_elf([Seg(0x400000, b"\x90")], 0x400000, data_encoding=2), "little-endian"),
    "wrong-machine": (build_elf([Seg(0x400000, b"\x90")], 0x400000, machine=183), "wrong machine EM_AARCH64"),
    "relocatable": (build_elf([Seg(0x400000, b"\x90")], 0x400000, elf_type=1), "not a static executable"),
    "truncated-header": (GOOD[:40], "truncated"),
    "truncated-phdrs": (GOOD[:80], "truncated: program headers"),
    "truncated-segment": (build_elf([Seg(0x400000, b"\x90", offset=1 << 20)], 0x400000), "truncated: segment 0"),
    "overlapping": (
        build_elf([Seg(0x400000, b"\x90" * 0x2000), Seg(0x401000, b"\x90", PF_R | PF_W)], 0x400000),
        "overlap",
    ),
    "oversized": (build_elf([Seg(0x400000, b"\x90", memsz=1 << 30)], 0x400000), "oversized"),
    "filesz-over-memsz": (build_elf([Seg(0x400000, b"\x90" * 16, memsz=8)], 0x400000), "exceeds memory size"),
    "beyond-user-space": (
        build_elf([Seg(0x7FFF_FFFF_F000, b"\x90", memsz=0x2000)], 0x7FFF_FFFF_F000),
        "beyond the user",
    ),
    "zero-page": (build_elf([Seg(0x0, b"\x90")], 0x0), "zero page"),
    "entry-outside": (build_elf([Seg(0x400000, b"\x90")], 0x500000), "entry point 0x500000 is outside"),
    "entry-not-executable": (
        build_elf([Seg(0x400000, b"\x90"), Seg(0x600000, b"\x00", PF_R | PF_W)], 0x600000),
        "outside every executable segment",
    ),
    "no-segments": (build_elf([], 0x400000), "no loadable"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_image_exits_2_with_one_line(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, expected = CASES[name]
    image = tmp_path / f"{name}.elf"
    image.write_bytes(data)
    out = tmp_path / "trace.jsonl"
    assert main(["run", str(image), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"emu: error: {image}: ")
    assert expected in lines[0]
    assert "Traceback" not in captured.err
    assert captured.out == ""
    assert list(tmp_path.iterdir()) == [image], "nothing may be written for bad input"


def test_missing_file_is_an_input_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "nope.elf")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_good_image_loads_with_permissions() -> None:
    data = build_elf(
        [Seg(0x400000, b"\x90\xc3", PF_R | PF_X), Seg(0x600000, b"\x01", PF_R | PF_W, memsz=0x3000)], 0x400000
    )
    image = load_elf(data)
    assert image.entry == 0x400000
    assert [(s.vaddr, s.memsz, s.perms) for s in image.segments] == [
        (0x400000, 2, Perm.R | Perm.X),
        (0x600000, 0x3000, Perm.R | Perm.W),
    ]


def test_every_truncation_of_a_real_image_is_rejected_cleanly() -> None:
    """Cutting a valid image anywhere gives an ElfError or a valid image, never another exception."""
    for cut in range(0, len(GOOD), 7):
        try:
            load_elf(GOOD[:cut])
        except ElfError as exc:
            assert "\n" not in str(exc)
