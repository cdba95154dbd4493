"""`--out`, `--perfetto`, `--folded`: what is at the path is never destroyed; bad paths exit 2 before the run.

Also the bounded input files and the program name in usage lines.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from elfcraft import code_image

from emu.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXIT0 = code_image(bytes.fromhex("31ffb8090000000f05"))  # exit(0)


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("emu: error: "), captured.err
    assert captured.out == "", "the run must not start"
    return lines[0]


def summary_of(text: str) -> dict[str, object]:
    last = json.loads(text.splitlines()[-1])
    assert isinstance(last, dict) and last["kind"] == "summary"
    return last


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "exit0.elf"
    path.parent.mkdir()
    path.write_bytes(EXIT0)
    return path


# ------------------------------------------------------------------ what is written, and how


def test_out_through_a_symlink_writes_its_target(tmp_path: Path, image: Path) -> None:
    target = tmp_path / "real.jsonl"
    target.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target.name)
    assert main(["run", str(image), "--format", "jsonl", "--out", str(link)]) == 0
    assert link.is_symlink() and os.readlink(link) == target.name
    assert summary_of(target.read_text())["ok"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "link.jsonl", "real.jsonl"]


def test_a_dangling_symlink_creates_its_target(tmp_path: Path, image: Path) -> None:
    link = tmp_path / "link.folded"
    link.symlink_to("made.folded")
    assert main(["run", str(image), "--folded", str(link)]) == 0
    assert link.is_symlink() and (tmp_path / "made.folded").is_file()


def test_out_on_a_fifo_is_streamed_to_not_replaced(tmp_path: Path, image: Path) -> None:
    fifo = tmp_path / "trace.fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    try:
        assert main(["run", str(image), "--format", "jsonl", "--out", str(fifo)]) == 0
        received, _ = reader.communicate(timeout=60)
    finally:
        reader.kill()
        reader.wait()
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert summary_of(received.decode())["ok"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "trace.fifo"]


def test_a_character_device_is_streamed_to(tmp_path: Path, image: Path) -> None:
    before = os.lstat(os.devnull)
    args = ["--out", os.devnull, "--perfetto", os.devnull, "--folded", os.devnull, "--trace", "ipc"]
    assert main(["run", str(image), *args]) == 0
    after = os.lstat(os.devnull)
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)


def test_dash_is_standard_output(tmp_path: Path, image: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(image), "--format", "jsonl", "--out", "-"]) == 0
    assert summary_of(capfd.readouterr().out)["ok"] is True
    assert not (Path.cwd() / "-").exists()


def test_dev_stdout_is_the_descriptor_not_a_file(tmp_path: Path, image: Path) -> None:
    """`--out /dev/stdout` writes through descriptor 1, which here is a file opened for appending."""
    log = tmp_path / "log"
    log.write_text("kept\n")
    with log.open("a") as stdout:
        done = subprocess.run(
            [sys.executable, "-m", "emu", "run", str(image), "--format", "jsonl", "--out", "/dev/stdout", "--no-dumps"],
            cwd=ROOT,
            stdout=stdout,
            stderr=subprocess.PIPE,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    text = log.read_text()
    assert text.startswith("kept\n") and summary_of(text)["ok"] is True


def test_an_existing_file_keeps_its_mode(tmp_path: Path, image: Path) -> None:
    out = tmp_path / "private.jsonl"
    out.write_text("old\n")
    out.chmod(0o600)
    assert main(["run", str(image), "--format", "jsonl", "--out", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert summary_of(out.read_text())["ok"] is True


def test_a_long_file_name_still_gets_a_temporary_file(tmp_path: Path, image: Path) -> None:
    out = tmp_path / ("t" * 250)
    assert main(["run", str(image), "--out", str(out)]) == 0
    assert out.is_file()


def test_a_run_that_fails_leaves_every_output_as_it_was(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The outputs are open when the world finds the scenario file bad: all are aborted."""
    scenario = tmp_path / "bad.toml"
    scenario.write_text("name = 1\n")
    out = tmp_path / "out"
    out.mkdir()
    names = ("trace", "run.json", "stacks.folded")
    for name in names:
        (out / name).write_text("before\n")
    args = ["--out", str(out / names[0]), "--perfetto", str(out / names[1]), "--folded", str(out / names[2])]
    assert main(["run", "--scenario", str(scenario), "--trace", "ipc", *args]) == 2
    assert str(scenario) in one_error_line(capsys)
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    assert all((out / name).read_text() == "before\n" for name in names)


# ------------------------------------------------------------------ refused before the run


def test_out_naming_the_input_image_is_refused(tmp_path: Path, image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    link = tmp_path / "link.elf"
    link.symlink_to(image)
    hard = tmp_path / "hard.elf"
    os.link(image, hard)
    for option in ("--out", "--perfetto", "--folded"):
        for path in (image, link, hard):
            assert main(["run", str(image), "--trace", "ipc", option, str(path)]) == 2
            assert "input file" in one_error_line(capsys)
            assert image.read_bytes() == EXIT0
    assert main(["run", str(link), "--out", str(image)]) == 2
    assert "input file" in one_error_line(capsys)
    assert image.read_bytes() == EXIT0 and link.is_symlink()


def test_out_naming_the_scenario_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "s.toml"
    text = (ROOT / "procd_model" / "scenarios" / "phase0-exit.toml").read_text()
    scenario.write_text(text)
    assert main(["run", "--scenario", str(scenario), "--out", str(scenario)]) == 2
    assert "input file" in one_error_line(capsys)
    assert scenario.read_text() == text


def test_out_naming_a_committed_image_or_scenario_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """The default run reads the committed images and scenarios: no output may overwrite them."""
    for committed in (ROOT / "fixtures" / "elf" / "procd.elf", ROOT / "procd_model" / "scenarios" / "phase0-exit.toml"):
        before = committed.read_bytes()
        assert main(["run", "--out", str(committed)]) == 2
        assert "input file" in one_error_line(capsys)
        assert committed.read_bytes() == before


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("folder", "is a directory"),
        ("folder/", "names a folder"),
        ("missing/", "names a folder"),
        ("missing/t.jsonl", "does not exist"),
        ("/proc/self/status", "refusing to write there"),
        ("/proc/self/fd/9999", "is not open"),
        ("/sys/kernel/profiling", "refusing to write there"),
        ("", "empty path"),
        ("missing\nfolder/t", "does not exist"),
    ],
)
@pytest.mark.parametrize("option", ["--out", "--perfetto", "--folded"])
def test_unusable_outputs_exit_2_before_the_run(
    option: str, where: str, expected: str, tmp_path: Path, image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "folder").mkdir()
    path = where if where.startswith("/") or not where else f"{tmp_path}/{where}"
    before = sorted(tmp_path.rglob("*"))
    assert main(["run", str(image), "--trace", "ipc", option, path]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"emu: error: {option} ") and expected in line, line
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_folder_or_file_is_refused(
    tmp_path: Path, image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "t.jsonl").write_text("old\n")
    locked.chmod(0o500)
    readonly = tmp_path / "readonly.jsonl"
    readonly.write_text("old\n")
    readonly.chmod(0o400)
    try:
        for path, expected in ((locked / "t.jsonl", "not writable"), (readonly, "not writable")):
            assert main(["run", str(image), "--out", str(path)]) == 2
            assert expected in one_error_line(capsys)
        assert (locked / "t.jsonl").read_text() == "old\n" and readonly.read_text() == "old\n"
    finally:
        locked.chmod(0o700)


def test_a_descriptor_open_only_for_reading_is_refused(
    tmp_path: Path, image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readable = tmp_path / "readable"
    readable.write_text("kept\n")
    fd = os.open(readable, os.O_RDONLY)
    try:
        assert main(["run", str(image), "--out", f"/dev/fd/{fd}"]) == 2
        assert f"descriptor {fd} is not open for writing" in one_error_line(capsys)
    finally:
        os.close(fd)
    assert readable.read_text() == "kept\n"


def test_two_outputs_naming_the_same_file_are_refused(
    tmp_path: Path, image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "same"
    link = tmp_path / "link"
    link.symlink_to(out)
    cases = [
        ["--out", str(out), "--perfetto", str(out)],
        ["--out", str(out), "--folded", str(link)],
        ["--perfetto", "-"],  # the trace already goes to standard output
        ["--out", "-", "--folded", "/dev/stdout"],
    ]
    for case in cases:
        assert main(["run", str(image), "--trace", "ipc", *case]) == 2
        assert "same file as" in one_error_line(capsys)
    assert not out.exists()


# ------------------------------------------------------------------ input files


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: Path(os.devnull), "is a character device, not a regular file"),
        (lambda d: Path("/dev/zero"), "is a character device, not a regular file"),
        (lambda d: d, "is a directory, not a regular file"),
    ],
)
def test_an_image_that_is_not_a_regular_file_is_refused_unread(
    make: object, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    assert main(["run", str(path), "--out", str(tmp_path / "t")]) == 2
    assert expected in one_error_line(capsys)


def test_an_image_fifo_is_refused_without_waiting_for_a_writer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "image.fifo"
    os.mkfifo(fifo)
    assert main(["run", str(fifo)]) == 2
    assert "is a FIFO, not a regular file" in one_error_line(capsys)


def test_an_image_larger_than_the_limit_is_refused_unread(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from emu.elf import MAX_IMAGE_FILE_BYTES

    big = tmp_path / "big.elf"
    with big.open("wb") as file:
        file.write(EXIT0)
        file.truncate(MAX_IMAGE_FILE_BYTES + 1)  # sparse: nothing is really stored
    assert main(["run", str(big)]) == 2
    assert "is larger than the limit of 64 MiB" in one_error_line(capsys)


def test_read_bounded_stops_at_the_limit_when_a_file_grows(tmp_path: Path) -> None:
    """The size is checked on the open file, and reading never takes more than limit + 1 bytes."""
    from emu.files import FileReadError, read_bounded

    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    assert read_bounded(path, 10) == b"x" * 10
    with pytest.raises(FileReadError, match="larger than the limit of 9 bytes"):
        read_bounded(path, 9)
    with pytest.raises(FileReadError, match="cannot read"):
        read_bounded(tmp_path / "missing", 9)


# ------------------------------------------------------------------ the program's name


def test_usage_names_the_console_script(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert capsys.readouterr().out.startswith("usage: procd-emu ")


def test_usage_names_python_dash_m_emu() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "emu", "run", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.startswith("usage: python -m emu run ")
