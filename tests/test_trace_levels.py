"""Trace levels and filters change what is shown, never what is counted."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from emu.cli import main

LEVELS = ["ipc", "syscall", "block", "insn"]


def run(tmp_path: Path, *args: str) -> list[dict[str, object]]:
    out = tmp_path / "trace.jsonl"
    assert main(["run", *args, "--format", "jsonl", "--out", str(out)]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def ipc_view(events: list[dict[str, object]]) -> list[tuple[object, ...]]:
    """The IPC-level events without their seq (which shifts when more events are shown)."""
    keep = []
    for event in events:
        if event["kind"] in ("syscall", "block", "insn"):
            continue
        fields = {k: v for k, v in event.items() if k not in ("seq", "digest")}
        keep.append(tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in fields.items())))
    return keep


def test_every_level_counts_the_same(tmp_path: Path) -> None:
    views = {level: ipc_view(run(tmp_path, "--trace", level)) for level in LEVELS}
    for level in LEVELS[1:]:
        assert views[level] == views["ipc"], level


def test_block_and_insn_events_agree_with_the_totals(tmp_path: Path) -> None:
    blocks = run(tmp_path, "--trace", "block")
    insns = run(tmp_path, "--trace", "insn")
    summary = insns[-1]
    block_total = sum(e["insns"] for e in blocks if e["kind"] == "block")  # type: ignore[misc]
    insn_total = sum(1 for e in insns if e["kind"] == "insn")
    assert insn_total == summary["instructions"] == blocks[-1]["instructions"]
    assert block_total == summary["instructions"]
    per_insn = [e for e in insns if e["kind"] == "insn"]
    assert [e["icount"] for e in per_insn] == list(range(len(per_insn)))
    cycles = [e["cycle"] for e in per_insn]
    assert cycles == sorted(cycles)


def test_insn_events_show_address_symbol_bytes_and_disassembly(tmp_path: Path) -> None:
    events = run(tmp_path, "--trace", "insn", "--trace-pid", "3")
    insns = [e for e in events if e["kind"] == "insn"]
    assert insns and {e["pid"] for e in insns} == {3}
    first = insns[0]
    assert first["address"] == "0x1000000" and first["symbol"] == "_start+0x0"
    assert first["bytes"].startswith("488d25") and first["disasm"].startswith("lea rsp, [rip + ")  # type: ignore[union-attr]


def test_symbol_filter(tmp_path: Path) -> None:
    events = run(tmp_path, "--trace", "insn", "--trace-symbol", "bootstrap::parse")
    insns = [e for e in events if e["kind"] == "insn"]
    assert insns
    assert all(str(e["symbol"]).startswith("bootstrap::parse+") for e in insns)
    assert {e["pid"] for e in insns} == {2, 3}


def test_text_and_jsonl_insn_traces_match(tmp_path: Path) -> None:
    jsonl = run(tmp_path, "--trace", "insn", "--trace-pid", "3")
    out = tmp_path / "trace.txt"
    assert main(["run", "--trace", "insn", "--trace-pid", "3", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()[1:]
    assert len(lines) == len(jsonl)
    for line, event in zip(lines, jsonl, strict=True):
        seq, icount, cycle, _pid, kind = line.split()[:5]
        assert (int(seq), int(icount), int(cycle), kind) == (
            event["seq"],
            event["icount"],
            event["cycle"],
            event["kind"],
        )
    assert f"digest={jsonl[-1]['digest']}" in lines[-1]


@pytest.mark.parametrize("level", LEVELS)
def test_two_runs_are_byte_identical_at_every_level(tmp_path: Path, level: str) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert main(["run", "--trace", level, "--format", "jsonl", "--out", str(out)]) == 0
    assert a.read_bytes() == b.read_bytes()


def test_exports_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    perfetto, folded = tmp_path / "run.json", tmp_path / "run.folded"
    args = ["run", "--perfetto", str(perfetto), "--folded", str(folded), "--stats", "--out", str(tmp_path / "t")]
    assert main(args) == 0
    stats = capsys.readouterr().out
    assert "SPAWN_SERVICE" in stats and "procd" in stats
    assert json.loads(perfetto.read_text())["traceEvents"]
    assert any(line.startswith("procd;_start") for line in folded.read_text().splitlines())


ALL_LEVELS = ["none", *LEVELS]


def test_the_digest_identifies_the_run_at_every_level_filter_and_format(tmp_path: Path) -> None:
    """The digest is the SHA-256 of the `--trace syscall` JSONL lines before the summary, whatever is shown."""
    syscall = run(tmp_path, "--trace", "syscall")
    lines = (tmp_path / "trace.jsonl").read_bytes().splitlines(keepends=True)[:-1]
    expected = hashlib.sha256(b"".join(lines)).hexdigest()
    assert syscall[-1]["digest"] == expected
    for level in ALL_LEVELS:
        assert run(tmp_path, "--trace", level)[-1]["digest"] == expected, level
        assert run(tmp_path, "--trace", level, "--trace-pid", "2")[-1]["digest"] == expected, level
    text = tmp_path / "trace.txt"
    assert main(["run", "--trace", "none", "--out", str(text)]) == 0
    assert text.read_text().splitlines()[-1].endswith(f"digest={expected}")
    other = run(tmp_path, "--trace", "none", "--scenario", "phase0-probe")[-1]["digest"]
    assert other != expected


@pytest.mark.parametrize("level", LEVELS)
def test_trace_pid_shows_only_that_process_at_every_level(tmp_path: Path, level: str) -> None:
    everything = run(tmp_path, "--trace", level)
    filtered = run(tmp_path, "--trace", level, "--trace-pid", "2")
    assert [e["seq"] for e in filtered] == list(range(len(filtered)))
    assert {e["pid"] for e in filtered[:-1]} == {2} and filtered[-1]["kind"] == "summary"

    def without_seq(events: list[dict[str, object]]) -> list[dict[str, object]]:
        return [{k: v for k, v in e.items() if k != "seq"} for e in events]

    assert without_seq(filtered[:-1]) == without_seq([e for e in everything if e["pid"] == 2])
    assert filtered[-1] == {**everything[-1], "seq": len(filtered) - 1}


def test_a_pid_that_never_existed_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = run(tmp_path, "--trace-pid", "99")
    assert [e["kind"] for e in events] == ["summary"]
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == ["emu: warning: --trace-pid 99: no process had that pid in this run"]


@pytest.mark.parametrize("level", ["none", "ipc", "syscall"])
def test_trace_symbol_where_it_cannot_apply_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], level: str
) -> None:
    run(tmp_path, "--trace", level, "--trace-symbol", "bootstrap::parse")
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == [
        f"emu: warning: --trace-symbol bootstrap::parse: applies to block and insn events only, "
        f"which --trace {level} does not show"
    ]


def test_trace_symbol_is_looked_for_in_every_image_even_with_a_pid_filter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(tmp_path, "--trace", "block", "--trace-symbol", "phase0_exit::main", "--trace-pid", "2")
    assert "warning" not in capsys.readouterr().err
    run(tmp_path, "--trace", "block", "--trace-symbol", "no_such_function")
    assert "no_such_function: no image has that symbol" in capsys.readouterr().err


def test_stats_are_the_same_at_every_level(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    tables = set()
    for level in ALL_LEVELS:
        assert main(["run", "--trace", level, "--stats", "--trace-pid", "2", "--out", str(tmp_path / "t")]) == 0
        tables.add(capsys.readouterr().out)
    (table,) = tables
    assert "SPAWN_SERVICE" in table and "phase0-exit" in table
