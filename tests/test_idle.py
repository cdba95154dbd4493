"""Virtual time in which nothing runs is idle time: the kernel emits it once (`sched.idle`), and
--stats, --perfetto and --folded show it as idle, never as some process's time."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from emu.cli import main

MAX_ACTOR_CYCLES = 100_000
"""More than any modelled actor's own work in restart-storm (rootd's CREATE_PROCESS of procd is
20,000), far less than the shortest idle interval (a 1 ms backoff: 2,000,000 cycles)."""


def run_storm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[list[dict[str, object]], str]:
    """restart-storm (procd restarts a faulting child after 1, 2 and 4 ms backoffs: idle between)."""
    out = tmp_path / "trace.jsonl"
    args = ["run", "--scenario", "restart-storm", "--trace", "ipc", "--format", "jsonl", "--out", str(out)]
    args += ["--stats", "--perfetto", str(tmp_path / "run.json"), "--folded", str(tmp_path / "run.folded")]
    assert main(args) == 0
    return [json.loads(line) for line in out.read_text().splitlines()], capsys.readouterr().out


def ns(microseconds: float) -> int:
    return round(microseconds * 1000)


def idle_cycles(events: list[dict[str, object]]) -> int:
    return sum(int(e["until"]) - int(e["cycle"]) for e in events if e["kind"] == "sched.idle")  # type: ignore[call-overload]


def test_the_kernel_marks_each_idle_interval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events, _ = run_storm(tmp_path, capsys)
    idles = [e for e in events if e["kind"] == "sched.idle"]
    assert len(idles) == 3 and idle_cycles(events) > 10_000_000
    for idle in idles:
        after = events[events.index(idle) + 1]
        assert idle["pid"] == 0 and after["cycle"] == idle["until"]  # the next event is what came due
        switch = next(e for e in events[events.index(idle) :] if e["kind"] == "sched.switch")
        assert switch["previous"] == 0  # the kernel was current from the wake-up to the switch


def test_stats_show_idle_as_idle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events, stats = run_storm(tmp_path, capsys)
    rows = []
    for line in stats.splitlines():
        match = re.match(r"\s*(\d+|-)\s+(\S+)\s+(\d+)\s+(\d+)\s", line)
        if match:
            rows.append((match[2], int(match[4])))
    assert sum(cycles for _, cycles in rows) == events[-1]["cycle"]
    rows_by_name = dict(rows)
    assert rows_by_name["idle"] == idle_cycles(events)
    for actor in ("rootd", "named", "timed", "crashd"):
        assert rows_by_name[actor] < MAX_ACTOR_CYCLES, (actor, rows_by_name[actor])
    report = next(line for line in stats.splitlines() if line.startswith("REPORT"))
    assert int(report.split()[-1]) < MAX_ACTOR_CYCLES  # crashd's REPORTs: its own work, no backoff in them


def test_perfetto_shows_idle_slices_and_no_process_running_through_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events, _ = run_storm(tmp_path, capsys)
    slices = [e for e in json.loads((tmp_path / "run.json").read_text())["traceEvents"] if e["ph"] == "X"]
    idle = [(ns(e["ts"]), ns(e["ts"]) + ns(e["dur"])) for e in slices if e["name"] == "idle"]
    assert len(idle) == 3 and all(e["pid"] == 0 for e in slices if e["name"] == "idle")
    assert sum(e["args"]["cycles"] for e in slices if e["name"] == "idle") == idle_cycles(events)
    for running in (e for e in slices if e["name"] == "running"):
        start, end = ns(running["ts"]), ns(running["ts"]) + ns(running["dur"])
        assert all(end <= idle_start or start >= idle_end for idle_start, idle_end in idle), running


def test_folded_stacks_have_one_idle_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events, _ = run_storm(tmp_path, capsys)
    lines = (tmp_path / "run.folded").read_text().splitlines()
    assert f"[idle] {idle_cycles(events)}" in lines


def test_every_operation_received_is_counted_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events, stats = run_storm(tmp_path, capsys)
    received = sum(1 for e in events if e["kind"] == "ipc.recv" and e["op"] == "REPORT")
    report = next(line for line in stats.splitlines() if line.startswith("REPORT"))
    # crashd's last REPORT ends when it blocks in REPLY_RECV again, with no later message to close it.
    assert received == 4 and int(report.split()[1]) == received
