"""The committed native images in fixtures/elf/ rebuild byte-identically from native/.

The images embed the compiler version, so the rebuild is only comparable with the rustc that
built them (recorded in fixtures/elf/rustc-version.txt). Without cargo, or with another rustc,
the test skips -- except when the environment variable CI is set: there a missing toolchain or
a version mismatch is a failure, so CI cannot go green without checking the fixtures.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

from procd_model import abi

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "elf"
BUILD_SCRIPT = ROOT / "tools" / "build_fixtures.py"


def _load_build_fixtures() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_fixtures", BUILD_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_fixtures = _load_build_fixtures()


def _skip_unless_ci(reason: str) -> NoReturn:
    if "CI" in os.environ:
        pytest.fail(f"{reason} (not skipped: CI is set)")
    pytest.skip(reason)


def _committed() -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in sorted(FIXTURES.iterdir()) if p.is_file()}
    expected = set(build_fixtures.fixture_files())
    missing = expected - set(files)
    assert not missing, f"fixtures/elf/ lacks {sorted(missing)}: run tools/build_fixtures.py"
    return files


def test_fixtures_rebuild_byte_identical(tmp_path: Path) -> None:
    committed = _committed()
    env = build_fixtures.build_env()
    recorded = committed[build_fixtures.VERSION_FILE].decode().strip()
    try:
        build_fixtures.find_tool(env, "CARGO", "cargo")
        current = build_fixtures.rustc_version(env)
    except build_fixtures.BuildError as exc:
        _skip_unless_ci(str(exc))
    if current != recorded:
        _skip_unless_ci(f"fixtures were built by {recorded!r}, this rustc is {current!r}")

    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            str(BUILD_SCRIPT),
            "--out",
            str(out),
            "--target-dir",
            str(tmp_path / "target"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    rebuilt = {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}
    assert sorted(rebuilt) == sorted(committed)
    differing = [name for name in committed if rebuilt[name] != committed[name]]
    assert not differing, (
        f"rebuilt {differing} differ from fixtures/elf/: the native sources changed without "
        "re-running tools/build_fixtures.py, or the build is not reproducible"
    )


def test_fixture_layout() -> None:
    """Three 4 KiB-aligned PT_LOAD segments (R+X, R, R+W), entry in the text, an image note."""
    elffile = pytest.importorskip("elftools.elf.elffile")
    pf_x, pf_w, pf_r = 1, 2, 4
    expected_roles = {"procd.elf": abi.Role.PROCD, "phase0-exit.elf": abi.Role.TEST}
    _committed()
    for name, role in expected_roles.items():
        with (FIXTURES / name).open("rb") as f:
            elf = elffile.ELFFile(f)
            loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
            assert [s["p_flags"] for s in loads] == [pf_r | pf_x, pf_r, pf_r | pf_w], name
            spans = []
            for seg in loads:
                assert seg["p_vaddr"] % 0x1000 == 0, name
                assert seg["p_align"] == 0x1000, name
                spans.append((seg["p_vaddr"], seg["p_vaddr"] + seg["p_memsz"]))
            assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), name
            text = loads[0]
            entry = elf.header["e_entry"]
            assert text["p_vaddr"] <= entry < text["p_vaddr"] + text["p_filesz"], name
            note = elf.get_section_by_name(".erix_image")
            assert note is not None, name
            assert not note["sh_flags"] & 0x2, f"{name}: .erix_image must not be loaded"
            fields = abi.IMAGE_NOTE.unpack(note.data())
            assert fields["magic"] == abi.IMAGE_NOTE_MAGIC, name
            assert fields["role"] == role, name
            assert fields["version"] == 1, name
            for section in (".symtab", ".debug_line", ".eh_frame"):
                assert elf.get_section_by_name(section) is not None, f"{name}: no {section}"
            assert elf.get_section_by_name(".comment") is None, name
