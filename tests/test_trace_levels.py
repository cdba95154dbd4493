"""Trace levels and filters change what is shown, never what is counted."""

from __future__ import annotations

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


def test_stats_need_scheduling_events(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--trace", "none", "--stats"]) == 2
    assert "--trace ipc" in capsys.readouterr().err
