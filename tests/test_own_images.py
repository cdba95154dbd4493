"""Your own images everywhere: `--procd ELF` with any scenario, and a scenario naming its own ELF files.

A procd build passed with --procd runs every scenario; the committed procd copied elsewhere gives
the same trace as the default. A scenario's `image` may be a path (relative to the scenario file)
to a client ELF. Every bad path, non-ELF or malformed ELF exits 2 with one line naming the
scenario file and the key, never a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from elfcraft import code_image

from emu.cli import main

ROOT = Path(__file__).resolve().parent.parent
ELF = ROOT / "fixtures" / "elf"


def run_jsonl(tmp_path: Path, *args: str, name: str = "trace.jsonl") -> tuple[int, list[dict[str, object]]]:
    out = tmp_path / name
    code = main(["run", *args, "--no-dumps", "--format", "jsonl", "--out", str(out)])
    return code, [json.loads(line) for line in out.read_text().splitlines()]


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, lines[:5]
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize("scenario", ["phase0-fault-kill", "restart-storm"])
def test_a_copy_of_the_committed_procd_gives_the_same_trace(tmp_path: Path, scenario: str) -> None:
    copy = tmp_path / "build" / "procd"
    copy.parent.mkdir()
    shutil.copy(ELF / "procd.elf", copy)
    code, default = run_jsonl(tmp_path, "--scenario", scenario, name="default.jsonl")
    code_own, own = run_jsonl(tmp_path, "--procd", str(copy), "--scenario", scenario, name="own.jsonl")
    assert (code_own, own) == (code, default)
    assert own[-1]["digest"] == default[-1]["digest"]


def test_procd_alone_runs_the_default_scenario(tmp_path: Path) -> None:
    _, default = run_jsonl(tmp_path, name="default.jsonl")
    code, own = run_jsonl(tmp_path, "--procd", str(ELF / "procd.elf"), name="own.jsonl")
    assert code == 0 and own == default


def test_a_procd_that_is_not_procd_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["run", "--procd", str(ELF / "phase0-exit.elf"), "--scenario", "phase0-exit", "--trace", "none"]
    assert main(args) == 2
    line = one_error_line(capsys)
    assert "phase0-exit.elf: not a procd image" in line and "TEST" in line


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "No such file"), (b"not an elf at all", "not an ELF file"), (b"\x7fELF\x02\x01\x01" + bytes(9), "")],
)
def test_a_bad_procd_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, problem: str
) -> None:
    path = tmp_path / "procd"
    if content is not None:
        path.write_bytes(content)
    assert main(["run", "--procd", str(path), "--scenario", "phase0-exit", "--trace", "none"]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"emu: error: {path}: ") and problem in line


def test_procd_with_an_image_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(ELF / "phase0-exit.elf"), "--procd", str(ELF / "procd.elf")]) == 2
    assert "not both" in one_error_line(capsys)


def scenario(folder: Path, image: str, extra: str = "", name: str = "s.toml") -> Path:
    path = folder / name
    path.write_text(f'name = "own"\n[[spawn]]\nimage = "{image}"\nrole = "TEST"\n{extra}', encoding="utf-8")
    return path


def test_a_scenario_names_its_own_client_elf(tmp_path: Path) -> None:
    (tmp_path / "clients").mkdir()
    shutil.copy(ELF / "phase0-exit.elf", tmp_path / "clients" / "my-exit.elf")
    path = scenario(tmp_path, "clients/my-exit.elf")
    code, events = run_jsonl(tmp_path, "--scenario", str(path))
    assert code == 0, events[-1]
    created = [e for e in events if e["kind"] == "process.create" and e.get("role") == "TEST"]
    assert [e["name"] for e in created] == ["clients/my-exit.elf"]
    logs = [e for e in events if e["pid"] == created[0]["pid"] and e.get("name") == "EXIT"]
    assert logs, "the client ran to its exit"


def test_a_path_is_relative_to_the_scenario_file_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(ELF / "phase0-fault-kill.elf", tmp_path / "faulty.elf")
    path = scenario(tmp_path, "faulty.elf", 'ends = "fault unmapped-write"\n')
    monkeypatch.chdir(ROOT)
    code, events = run_jsonl(tmp_path, "--scenario", str(path))
    assert code == 0, events[-1]


def test_inject_names_the_same_file_by_another_spelling(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    shutil.copy(ELF / "phase0-exit.elf", tmp_path / "c" / "x.elf")
    inject = '[[inject]]\nimage = "./c/../c/x.elf"\nfault_at_instruction = 40\n'
    path = scenario(tmp_path, "c/x.elf", 'ends = "fault injected"\n' + inject)
    code, events = run_jsonl(tmp_path, "--scenario", str(path))
    assert code == 0, events[-1]


def test_own_client_and_own_procd_together(tmp_path: Path) -> None:
    shutil.copy(ELF / "phase0-exit.elf", tmp_path / "a.elf")
    shutil.copy(ELF / "procd.elf", tmp_path / "procd.elf")
    path = scenario(tmp_path, "a.elf")
    code, events = run_jsonl(tmp_path, "--procd", str(tmp_path / "procd.elf"), "--scenario", str(path))
    assert code == 0 and events[-1]["ok"] is True


@pytest.mark.parametrize(
    ("image", "make", "problem"),
    [
        ("missing.elf", None, "no such file"),
        ("dir/", "dir", "directory"),
        ("text.elf", b"hello", "not an ELF file"),
        ("short.elf", b"\x7fELF\x02\x01\x01" + bytes(20), ""),
        ("empty.elf", b"", "not an ELF file"),
    ],
)
def test_a_bad_image_file_is_one_line_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], image: str, make: bytes | str | None, problem: str
) -> None:
    if isinstance(make, bytes):
        (tmp_path / image).write_bytes(make)
    elif make is not None:
        (tmp_path / make).mkdir()
    path = scenario(tmp_path, image)
    assert main(["run", "--scenario", str(path), "--trace", "none"]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"emu: error: {path}: spawn[0].image: "), line
    assert problem in line, line


def test_a_fifo_or_a_control_character_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    os.mkfifo(tmp_path / "pipe.elf")
    for image, problem in (("pipe.elf", "FIFO"), ("a\\u0007.elf", "not a usable file name")):
        path = scenario(tmp_path, image)
        assert main(["run", "--scenario", str(path), "--trace", "none"]) == 2
        line = one_error_line(capsys)
        assert line.startswith(f"emu: error: {path}: spawn[0].image: ") and problem in line, line


def test_an_absolute_path_works_too(tmp_path: Path) -> None:
    shutil.copy(ELF / "phase0-exit.elf", tmp_path / "abs.elf")
    (tmp_path / "scenarios").mkdir()
    path = scenario(tmp_path / "scenarios", str(tmp_path / "abs.elf"))
    code, events = run_jsonl(tmp_path, "--scenario", str(path))
    assert code == 0, events[-1]


def test_a_bad_inject_image_file_names_its_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = scenario(tmp_path, "phase0-exit", '[[inject]]\nimage = "gone.elf"\nfault_at_instruction = 1\n')
    assert main(["run", "--scenario", str(path), "--trace", "none"]) == 2
    assert f"{path}: inject[0].image: 'gone.elf': no such file" in one_error_line(capsys)


def test_an_image_overlapping_kernel_pages_is_refused_at_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "low.elf").write_bytes(code_image(b"\xf4", base=0x100000))
    path = scenario(tmp_path, "low.elf")
    assert main(["run", "--scenario", str(path), "--trace", "none"]) == 2
    assert "spawn[0].image: 'low.elf': segment" in one_error_line(capsys)


def test_an_output_never_overwrites_an_image_the_scenario_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = tmp_path / "client.elf"
    shutil.copy(ELF / "phase0-exit.elf", client)
    path = scenario(tmp_path, "client.elf")
    before = client.read_bytes()
    assert main(["run", "--scenario", str(path), "--out", str(client)]) == 2
    assert "is the input file" in one_error_line(capsys)
    assert client.read_bytes() == before
    procd = tmp_path / "procd.elf"
    shutil.copy(ELF / "procd.elf", procd)
    assert main(["run", "--procd", str(procd), "--out", str(procd)]) == 2
    assert "is the input file" in one_error_line(capsys)
