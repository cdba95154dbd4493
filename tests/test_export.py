"""Exports of a run: the Perfetto timeline, the statistics tables, the cycle profiler's folded stacks."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import capstone
import pytest

import procd_model.kernel.core as procd_kernel
from emu.accounting import UNIT_CPU, CpuModel
from emu.cpu import GuestCpu
from emu.elf import ElfImage
from emu.events import ModelFacts
from emu.export import process_names
from emu.export.folded import folded_lines, render_folded, write_folded
from emu.export.perfetto import Clock, perfetto_trace, render_perfetto, write_perfetto
from emu.export.stats import nearest_rank, operation_stats, process_stats, render_stats
from emu.profile import StackProfiler
from emu.symbols import demangle
from emu.trace import Event, Trace
from emu.world import Instrument, RunOutcome, emit_summary
from procd_model.world import run_bootstrap

MAX_INSTRUCTIONS = 100_000_000


def _cpu_model() -> CpuModel:
    """The world's CPU model, or the unit model where its cost table is not there (yet)."""
    try:
        from procd_model.cpu_model import default_cpu_model

        return default_cpu_model()
    except Exception:
        return UNIT_CPU


@dataclass
class Run:
    events: list[Event]
    outcome: RunOutcome
    profiler: StackProfiler | None
    frequency_hz: int

    @property
    def names(self) -> dict[int, str]:
        return process_names(self.events)

    @property
    def summary(self) -> Event:
        return self.events[-1]


def _run(*, profile: bool = True, extra: Instrument | None = None) -> Run:
    model = _cpu_model()
    profiler = StackProfiler() if profile else None

    def instrument(cpu: GuestCpu, image: ElfImage, pid: int) -> None:
        if profiler is not None:
            profiler(cpu, image, pid)
        if extra is not None:
            extra(cpu, image, pid)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(procd_kernel, "default_cpu_model", lambda: model)
        trace = Trace()
        outcome = run_bootstrap(trace, MAX_INSTRUCTIONS, instrument=instrument)
    emit_summary(trace, outcome)
    assert outcome.ok, outcome.detail
    return Run(trace.events, outcome, profiler, model.frequency_hz)


@pytest.fixture(scope="module")
def run() -> Run:
    return _run()


@pytest.fixture(scope="module")
def perfetto(run: Run) -> dict[str, Any]:
    return perfetto_trace(run.events, run.frequency_hz, model=run.outcome.model)


def _pid_named(run: Run, name: str) -> int:
    return next(pid for pid, known in run.names.items() if known == name)


# ------------------------------------------------------------------ a Chrome Trace Event Format checker

_REQUIRED = {
    "X": {"name", "ph", "ts", "pid", "tid", "dur"},
    "i": {"name", "ph", "ts", "pid", "tid", "s"},
    "s": {"name", "ph", "ts", "pid", "tid", "id", "cat"},
    "f": {"name", "ph", "ts", "pid", "tid", "id", "cat", "bp"},
    "M": {"name", "ph", "pid", "tid", "args"},
}
_METADATA = {"process_name": str, "thread_name": str, "process_sort_index": int, "thread_sort_index": int}
_METADATA_ARG = {"process_name": "name", "thread_name": "name", "process_sort_index": "sort_index"}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _ns(value: float) -> int:
    return round(value * 1000)


def _check_event(index: int, event: Any) -> Iterator[str]:
    if not isinstance(event, dict):
        yield f"event {index} is not an object"
        return
    ph = event.get("ph")
    if ph not in _REQUIRED:
        yield f"event {index}: unknown ph {ph!r}"
        return
    missing = _REQUIRED[ph] - set(event)
    if missing:
        yield f"event {index} ({ph}): missing {sorted(missing)}"
        return
    if not isinstance(event["name"], str) or not all(isinstance(event[k], int) for k in ("pid", "tid")):
        yield f"event {index}: name must be a string, pid and tid integers"
    if "args" in event and not isinstance(event["args"], dict):
        yield f"event {index}: args must be an object"
    if ph == "M":
        yield from _check_metadata(index, event)
        return
    if not _is_number(event["ts"]) or event["ts"] < 0 or abs(event["ts"] * 1000 - _ns(event["ts"])) > 1e-6:
        yield f"event {index}: ts must be a non-negative number of whole nanoseconds, not {event['ts']!r}"
    if ph == "X" and (not _is_number(event["dur"]) or event["dur"] < 0):
        yield f"event {index}: dur must be a number >= 0, not {event['dur']!r}"
    if ph == "i" and event["s"] not in ("t", "p", "g"):
        yield f"event {index}: instant scope {event['s']!r}"
    if ph == "f" and event["bp"] != "e":
        yield f"event {index}: flow end must bind to its enclosing slice"


def _check_metadata(index: int, event: dict[str, Any]) -> Iterator[str]:
    kind = _METADATA.get(event["name"])
    key = _METADATA_ARG.get(event["name"], "sort_index")
    if kind is None:
        yield f"event {index}: unknown metadata {event['name']!r}"
    elif not isinstance(event["args"].get(key), kind):
        yield f"event {index}: metadata {event['name']} needs args.{key}"


def _check_flows(events: list[dict[str, Any]]) -> Iterator[str]:
    ends: dict[Any, dict[str, list[dict[str, Any]]]] = {}
    for event in events:
        if event.get("ph") in ("s", "f"):
            ends.setdefault(event["id"], {"s": [], "f": []})[event["ph"]].append(event)
    for flow, pair in ends.items():
        if len(pair["s"]) != 1 or len(pair["f"]) != 1:
            yield f"flow {flow}: {len(pair['s'])} starts and {len(pair['f'])} ends"
            continue
        start, end = pair["s"][0], pair["f"][0]
        if (start["cat"], start["name"]) != (end["cat"], end["name"]):
            yield f"flow {flow}: start and end differ in cat or name"
        if end["ts"] < start["ts"]:
            yield f"flow {flow}: ends before it starts"
        for side in (start, end):
            if _enclosing(events, side) is None:
                yield f"flow {flow}: no slice encloses its {side['ph']} on pid {side['pid']}"


def _check_nesting(events: list[dict[str, Any]]) -> Iterator[str]:
    tracks: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for event in events:
        if event.get("ph") == "X":
            start = _ns(event["ts"])
            tracks.setdefault((event["pid"], event["tid"]), []).append((start, start + _ns(event["dur"])))
    for track, spans in tracks.items():
        for i, (a0, a1) in enumerate(spans):
            for b0, b1 in spans[i + 1 :]:
                disjoint = a1 <= b0 or b1 <= a0
                nested = (a0 <= b0 and b1 <= a1) or (b0 <= a0 and a1 <= b1)
                if not (disjoint or nested):
                    yield f"track {track}: slices [{a0}, {a1}] and [{b0}, {b1}] overlap without nesting"


def validate_chrome_trace(doc: Any) -> list[str]:
    """Problems with `doc` as a Chrome Trace Event Format object; empty when it is valid."""
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        return ["not an object with a traceEvents list"]
    errors = [
        f"unknown top-level key {key!r}" for key in doc if key not in ("traceEvents", "displayTimeUnit", "otherData")
    ]
    if doc.get("displayTimeUnit", "ms") not in ("ms", "ns"):
        errors.append(f"displayTimeUnit {doc['displayTimeUnit']!r}")
    events = doc["traceEvents"]
    for index, event in enumerate(events):
        errors.extend(_check_event(index, event))
    if not errors:
        errors.extend(_check_flows(events))
        errors.extend(_check_nesting(events))
    return errors


def _enclosing(events: list[dict[str, Any]], at: dict[str, Any]) -> dict[str, Any] | None:
    """The innermost slice on `at`'s track that contains its timestamp."""
    t = _ns(at["ts"])
    best = None
    for event in events:
        if event.get("ph") != "X" or (event["pid"], event["tid"]) != (at["pid"], at["tid"]):
            continue
        start = _ns(event["ts"])
        end = start + _ns(event["dur"])
        if start <= t <= end and (best is None or _ns(best["dur"]) >= end - start):
            best = event
    return best


# ------------------------------------------------------------------------------------- Perfetto


def test_perfetto_file_is_valid_chrome_trace_json(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    write_perfetto(run.events, path, run.frequency_hz)
    doc = json.loads(path.read_text())
    assert validate_chrome_trace(doc) == []
    assert doc["displayTimeUnit"] == "ns"
    assert doc["otherData"]["frequency_hz"] == run.frequency_hz
    assert doc["otherData"]["digest"] == run.summary.fields["digest"]
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_export_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = [Event(0, 0, 0, 1, "log", {"text": float("nan")})]  # NaN is not JSON
    with pytest.raises(ValueError):
        write_perfetto(events, tmp_path / "bad.json", 1_000_000_000)

    def refuse(_src: str, _dst: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        write_perfetto(events[:0], tmp_path / "run.json", 1_000_000_000)
    assert list(tmp_path.iterdir()) == []


def test_the_checker_catches_broken_traces() -> None:
    assert validate_chrome_trace({"traceEvents": [{"ph": "X", "name": "a", "ts": 1, "pid": 1, "tid": 1}]})
    assert validate_chrome_trace(
        {"traceEvents": [{"ph": "s", "name": "a", "cat": "c", "id": 1, "ts": 1, "pid": 1, "tid": 1}]}
    )
    overlapping = [
        {"ph": "X", "name": "a", "ts": 0, "dur": 2, "pid": 1, "tid": 1},
        {"ph": "X", "name": "b", "ts": 1, "dur": 2, "pid": 1, "tid": 1},
    ]
    assert validate_chrome_trace({"traceEvents": overlapping})


def test_perfetto_has_one_named_track_per_process(run: Run, perfetto: dict[str, Any]) -> None:
    events = perfetto["traceEvents"]
    named = {e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    # The kernel has a track too: it sends procd the CHILD_DIED message when phase0-exit ends.
    assert named == {0: "kernel", 1: "rootd", 2: "procd", 3: "phase0-exit"}
    assert named == {0: "kernel"} | {row["pid"]: row["name"] for row in run.summary.fields["processes"]}
    threads = {e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert threads == named
    assert {e["pid"] for e in events} == set(named)
    assert all(e["tid"] == e["pid"] for e in events)


def test_perfetto_timestamps_are_sorted_and_in_virtual_time(run: Run, perfetto: dict[str, Any]) -> None:
    timed = [e for e in perfetto["traceEvents"] if e["ph"] != "M"]
    stamps = [e["ts"] for e in timed]
    assert stamps == sorted(stamps)
    clock = Clock(run.frequency_hz)
    last_end = max(_ns(e["ts"]) + _ns(e.get("dur", 0)) for e in timed)
    assert last_end == clock.ns(run.events[-1].cycle)


def test_perfetto_running_slices_share_one_cpu_and_match_the_stats(run: Run, perfetto: dict[str, Any]) -> None:
    running = sorted(
        (_ns(e["ts"]), _ns(e["ts"]) + _ns(e["dur"]), e["pid"], e["args"])
        for e in perfetto["traceEvents"]
        if e["ph"] == "X" and e["name"] == "running"
    )
    assert len(running) == sum(1 for e in run.events if e.kind == "sched.switch")
    for (_, end, _, _), (start, _, _, _) in itertools.pairwise(running):
        assert end <= start  # one CPU: never two processes running at once
    for row in process_stats(run.events):
        if row.pid == 0:
            continue
        mine = [r for r in running if r[2] == row.pid]
        assert sum(r[3]["instructions"] for r in mine) == row.instructions
        assert sum(r[3]["cycles"] for r in mine) == row.cycles


def test_perfetto_flows_connect_the_spawn_request_and_its_reply(run: Run, perfetto: dict[str, Any]) -> None:
    events = perfetto["traceEvents"]
    rootd, procd = _pid_named(run, "rootd"), _pid_named(run, "procd")
    flows = [e for e in events if e["ph"] in ("s", "f") and e["name"] == "SPAWN_SERVICE"]
    request = {e["ph"]: e for e in flows if e["cat"] == "ipc"}
    reply = {e["ph"]: e for e in flows if e["cat"] == "ipc.reply"}
    assert (request["s"]["pid"], request["f"]["pid"]) == (rootd, procd)
    assert (reply["s"]["pid"], reply["f"]["pid"]) == (procd, rootd)
    assert request["s"]["id"] == request["f"]["id"] != reply["s"]["id"] == reply["f"]["id"]
    recv = _enclosing(events, request["f"])
    assert recv is not None and recv["name"] == "recv SPAWN_SERVICE"
    assert recv["args"]["sender"] == rootd
    answered = _enclosing(events, reply["s"])
    assert answered is not None and answered["name"] == "reply SPAWN_SERVICE"
    assert answered["args"]["status"] == "OK"
    assert request["s"]["ts"] <= request["f"]["ts"] < reply["s"]["ts"] == reply["f"]["ts"]


def test_perfetto_shows_kernel_served_calls_syscalls_and_lifecycle(run: Run, perfetto: dict[str, Any]) -> None:
    events = perfetto["traceEvents"]
    procd = _pid_named(run, "procd")
    kernel_calls = [(e["pid"], e["name"]) for e in events if e.get("cat") == "kernel"]
    assert (procd, "CREATE_PROCESS") in kernel_calls and (procd, "START_PROCESS") in kernel_calls
    syscalls = sum(1 for e in events if e.get("cat") == "syscall")
    assert syscalls == sum(1 for e in run.events if e.kind == "syscall")
    lifecycle = Counter(e["name"] for e in events if e.get("cat") == "process")
    # phase0-exit exits; rootd stays, WAITing for procd's reports once its manifest is done
    assert lifecycle == {"create": 3, "start": 2, "exit": 1}


def test_perfetto_without_names_or_kernel_calls_still_draws() -> None:
    events = [
        Event(0, 0, 0, 4, "sched.switch", {"previous": 0}),
        Event(1, 5, 10, 4, "ipc.send", {"endpoint": 9, "op": "PING", "call": False}),
        Event(2, 5, 20, 5, "ipc.recv", {"endpoint": 9, "op": "PING", "sender": 4}),
        Event(3, 5, 30, 0, "ipc.reply", {"to": 4, "op": "X", "status": "OK"}),
        Event(4, 5, 40, 0, "custom.thing", {"n": 1}),
        Event(5, 6, 50, 4, "ipc.send", {"endpoint": 9, "op": "LOST", "call": True}),  # never received
        Event(6, 6, 60, 4, "ipc.send", {"endpoint": "kernel-control", "op": "K", "call": True}),  # no reply
    ]
    model = ModelFacts(kernel_served_endpoints=frozenset({"kernel-control"}))
    trace = perfetto_trace(events, 1_000_000, {5: "server"}, model)
    assert validate_chrome_trace(trace) == []
    names = {e["pid"]: e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "process_name"}
    assert names == {0: "kernel", 4: "pid 4", 5: "server"}
    assert [e["ts"] for e in trace["traceEvents"] if e["ph"] in ("s", "f")] == [10.0, 20.0]  # cycles at 1 MHz
    slices = {(e["pid"], e["name"]) for e in trace["traceEvents"] if e["ph"] == "X"}
    assert {(4, "send LOST"), (4, "K"), (4, "running"), (5, "recv PING")} <= slices
    # Which calls the kernel serves is the model's declaration, not the exporter's guess.
    undeclared = {(e["pid"], e["name"]) for e in perfetto_trace(events, 1_000_000)["traceEvents"] if e["ph"] == "X"}
    assert (4, "K") not in undeclared and (4, "send K") in undeclared
    with pytest.raises(ValueError):
        perfetto_trace(events, 0)


def test_clock_rounds_to_whole_nanoseconds() -> None:
    clock = Clock(3_000_000_000)
    assert [clock.ns(c) for c in (0, 1, 2, 3, 4, 3_000_000_000)] == [0, 0, 1, 1, 1, 1_000_000_000]


# ----------------------------------------------------------------------------------------- stats


def test_operation_stats_cost_spawn_service(run: Run) -> None:
    rows = {row.op: row for row in operation_stats(run.events)}
    spawn = rows["SPAWN_SERVICE"]
    assert spawn.count == 1
    assert 0 < spawn.instructions.p50 == spawn.instructions.p99 == spawn.instructions.max
    assert 0 < spawn.cycles.p50 == spawn.cycles.max
    procd = next(row for row in process_stats(run.events) if row.name == "procd")
    assert spawn.instructions.max < procd.instructions
    assert spawn.cycles.max < procd.cycles


def test_process_stats_match_the_summary(run: Run) -> None:
    rows = {row.pid: row for row in process_stats(run.events)}
    for listed in run.summary.fields["processes"]:
        row = rows[listed["pid"]]
        assert row.name == listed["name"]
        assert row.instructions == listed.get("instructions", 0)
        if "exit_code" in listed:
            assert row.end == f"exit {listed['exit_code']}"
        else:
            assert row.end == listed["state"]
    assert sum(row.instructions for row in rows.values()) == run.summary.fields["instructions"]
    assert sum(row.cycles for row in rows.values()) == run.events[-1].cycle
    assert sum(row.syscalls for row in rows.values()) == sum(1 for e in run.events if e.kind == "syscall")
    procd = next(row for row in rows.values() if row.name == "procd")
    # received: rootd's SPAWN_SERVICE and the kernel's CHILD_DIED for phase0-exit;
    # sent: the MINT_ENDPOINT, CREATE_PROCESS and START_PROCESS calls to kernel-control
    assert (procd.received, procd.replied, procd.sent) == (2, 1, 3)


def test_render_stats_is_an_aligned_table(run: Run) -> None:
    text = render_stats(run.events)
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("op "))
    spawn = next(line for line in lines if line.startswith("SPAWN_SERVICE"))
    assert len(header) == len(spawn)
    assert header.split() == [
        "op",
        "count",
        "instr",
        "p50",
        "instr",
        "p99",
        "instr",
        "max",
        "cycles",
        "p50",
        "cycles",
        "p99",
        "cycles",
        "max",
    ]
    assert any(re.match(r"\s*2\s+procd\s+\d+", line) for line in lines)
    assert text == render_stats(run.events)


def test_operations_close_on_reply_next_receive_waiting_again_or_death() -> None:
    def ev(seq: int, icount: int, pid: int, kind: str, **fields: Any) -> Event:
        return Event(seq, icount, icount * 2, pid, kind, fields)

    events = [
        ev(0, 0, 7, "sched.switch", previous=0),
        ev(1, 10, 7, "ipc.recv", op="ONE_WAY"),
        ev(2, 30, 7, "ipc.recv", op="CALL"),  # closes ONE_WAY after 20 instructions
        ev(3, 30, 8, "sched.switch", previous=7),
        ev(4, 90, 7, "sched.switch", previous=8),  # 60 instructions by pid 8 are not pid 7's
        ev(5, 95, 7, "ipc.reply", op="CALL"),
        ev(6, 100, 7, "ipc.recv", op="CALL"),
        ev(7, 104, 7, "fault", fault="unmapped-read"),
        ev(8, 110, 7, "ipc.recv", op="LEFT_OPEN"),
        ev(9, 120, 8, "ipc.recv", op="ONE_WAY"),
        ev(10, 123, 8, "syscall", name="REPLY_RECV", status="blocked"),  # back waiting: closes it
        ev(11, 130, 9, "ipc.recv", op="STILL_OPEN"),
        ev(12, 131, 9, "syscall", name="RECV", status="OK"),  # a receive that completed closes nothing
    ]
    rows = {
        row.op: row for row in operation_stats(events, ModelFacts(receive_syscalls=frozenset({"RECV", "REPLY_RECV"})))
    }
    assert set(rows) == {"ONE_WAY", "CALL"}
    # Which syscalls are receives is the model's declaration: undeclared, pid 8's op stays open.
    assert operation_stats(events)[1].count == 1
    assert rows["ONE_WAY"].count == 2 and rows["ONE_WAY"].instructions.max == 20
    assert rows["CALL"].count == 2
    assert (rows["CALL"].instructions.p50, rows["CALL"].instructions.max) == (4, 5)
    assert rows["CALL"].cycles.max == 10


def test_stats_need_scheduling_events() -> None:
    summary_only = [Event(0, 100, 200, 0, "summary", {"instructions": 100})]
    assert render_stats(summary_only).startswith("no statistics")


def test_nearest_rank_percentiles() -> None:
    values = list(range(1, 101))
    assert [nearest_rank(values, p) for p in (1, 50, 99, 100)] == [1, 50, 99, 100]
    assert nearest_rank([7], 50) == nearest_rank([7], 99) == 7
    assert nearest_rank([1, 2], 50) == 1 and nearest_rank([1, 2], 99) == 2


# ---------------------------------------------------------------------------------------- folded


def test_folded_stacks_parse_and_start_with_the_process(run: Run, tmp_path: Path) -> None:
    assert run.profiler is not None
    path = tmp_path / "run.folded"
    write_folded(run.profiler, path, run.names)
    lines = path.read_text().splitlines()
    assert lines == sorted(lines) and lines
    stacks = []
    for line in lines:
        match = re.fullmatch(r"([^ ;][^;]*(?:;[^;]+)*) ([1-9][0-9]*)", line)
        assert match, line
        stacks.append((match.group(1).split(";"), int(match.group(2))))
    guests = {run.names[pid] for pid in run.profiler.pids()}
    assert guests == {"procd", "phase0-exit"}
    assert {frames[0] for frames, _ in stacks} == guests
    procd = [frames for frames, _ in stacks if frames[0] == "procd"]
    assert all(frames[1] == "_start" for frames in procd)
    assert any("procd::main" in frames for frames in procd)


def test_folded_cycles_add_up_to_each_guests_cycles(run: Run) -> None:
    profiler = run.profiler
    assert profiler is not None
    assert profiler.millicycles() == profiler.guest_millicycles()
    stacks = profiler.stacks(run.names)
    lines = folded_lines(stacks)
    stats = {row.pid: row for row in process_stats(run.events)}
    for pid, millicycles in profiler.millicycles().items():
        name = run.names[pid]
        assert sum(cost for frames, cost in stacks.items() if frames[0] == name) == millicycles
        mine = [int(line.rsplit(" ", 1)[1]) for line in lines if line.split(";", 1)[0] == name]
        assert millicycles // 1000 - len(mine) <= sum(mine) <= millicycles // 1000
        assert profiler.instructions()[pid] == stats[pid].instructions
        assert millicycles // 1000 <= stats[pid].cycles  # running time also holds the kernel's work


def test_profiler_stacks_agree_with_a_shadow_call_stack() -> None:
    """Replay every call and ret at block granularity and compare with the frame-pointer walk."""
    disassembler = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    checker = StackProfiler()
    checked: list[int] = []
    mismatches: list[str] = []

    def shadow(cpu: GuestCpu, image: ElfImage, pid: int) -> None:
        checker(cpu, image, pid)
        guest = checker._guests[pid]
        returns: list[int] = []
        last: list[tuple[str, int]] = []

        def on_block(address: int, size: int, *_counts: int) -> None:
            if last:
                mnemonic, after = last.pop()
                if mnemonic == "call":
                    returns.append(after)
                elif mnemonic == "ret" and returns:
                    returns.pop()
            insns = list(disassembler.disasm_lite(cpu.read(address, size), address))
            last.append((insns[-1][2], address + size))
            expected = (*(guest._caller_of(r) for r in returns), guest._leaf_of(address)[0])
            walked = tuple(reversed(guest.stack_at(address)))
            checked.append(address)
            if walked != expected:
                mismatches.append(f"{address:#x}: walked {walked}, shadow {expected}")

        cpu.add_block_probe(on_block)

    _run(profile=False, extra=shadow)
    assert len(checked) > 1000
    assert mismatches == []


def test_demangle_rust_legacy_names() -> None:
    assert demangle("_ZN5procd4main17h6bca10f8014ffe1bE") == "procd::main"
    assert (
        demangle("_ZN49_$LT$procd..Syscalls$u20$as$u20$procd..Kernel$GT$11debug_write17hda81233f225ca0b0E")
        == "<procd::Syscalls as procd::Kernel>::debug_write"
    )
    assert demangle("_ZN4core5slice29_$LT$impl$u20$$u5b$T$u5d$$GT$4fill17h403bb3871b9e0e8bE") == (
        "core::slice::<impl [T]>::fill"
    )
    assert demangle("_ZNE") == "_ZNE" and demangle("_ZN9$uffffff$E") == "$uffffff$"
    assert demangle("memcpy") == "memcpy" and demangle("_ZN3fooE") == "foo" and demangle("_ZN99shortE") == "_ZN99shortE"


def test_folded_lines_round_down_and_drop_empty_stacks() -> None:
    stacks = {("p", "a"): 1999, ("p", "b"): 999, ("p", "a", "c"): 1000}
    assert folded_lines(stacks) == ["p;a 1", "p;a;c 1"]


# ---------------------------------------------------------------------------------- determinism


def test_exports_are_byte_identical_across_runs(run: Run, tmp_path: Path) -> None:
    again = _run()
    assert again.profiler is not None and run.profiler is not None
    for index, one in enumerate((run, again)):
        assert one.profiler is not None
        write_perfetto(one.events, tmp_path / f"{index}.json", one.frequency_hz, model=one.outcome.model)
        write_folded(one.profiler, tmp_path / f"{index}.folded", one.names)
    assert (tmp_path / "0.json").read_bytes() == (tmp_path / "1.json").read_bytes()
    assert (tmp_path / "0.folded").read_bytes() == (tmp_path / "1.folded").read_bytes()
    assert render_perfetto(run.events, run.frequency_hz) == render_perfetto(again.events, again.frequency_hz)
    assert render_folded(run.profiler, run.names) == render_folded(again.profiler, again.names)


def test_profiling_changes_no_count(run: Run) -> None:
    plain = _run(profile=False)
    assert plain.summary.fields["digest"] == run.summary.fields["digest"]
    assert [e.as_dict() for e in plain.events] == [e.as_dict() for e in run.events]
