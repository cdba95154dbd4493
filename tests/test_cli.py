"""`python -m emu run`: the default scenario end to end, determinism, limits and exit codes."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from elfcraft import code_image

from emu.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run_jsonl(tmp_path: Path, *args: str, name: str = "trace.jsonl") -> tuple[int, list[dict[str, object]]]:
    out = tmp_path / name
    code = main(["run", *args, "--format", "jsonl", "--out", str(out)])
    return code, [json.loads(line) for line in out.read_text().splitlines()]


def test_default_run_tells_the_whole_story_in_order(tmp_path: Path) -> None:
    code, events = run_jsonl(tmp_path)
    assert code == 0
    for i, event in enumerate(events):
        assert event["seq"] == i
        assert {"seq", "icount", "cycle", "pid", "kind"} <= set(event)
    icounts = [e["icount"] for e in events]
    assert icounts == sorted(icounts)

    def index(predicate: object, after: int = -1) -> int:
        for i, event in enumerate(events):
            if i > after and predicate(event):  # type: ignore[operator]
                return i
        raise AssertionError("expected event not found")

    procd = next(e["pid"] for e in events if e["kind"] == "process.create" and e.get("name") == "procd")
    accepted = index(lambda e: e["kind"] == "log" and e["text"] == "procd: envelope accepted")
    received = index(
        lambda e: e["kind"] == "ipc.recv" and e["pid"] == procd and e["op"] == "SPAWN_SERVICE" and e["badge"] == 1,
        accepted,
    )
    create = index(lambda e: e["kind"] == "ipc.send" and e["pid"] == procd and e["op"] == "CREATE_PROCESS", received)
    start = index(lambda e: e["kind"] == "ipc.send" and e["pid"] == procd and e["op"] == "START_PROCESS", create)
    child = events[create + 1]
    assert child["kind"] == "process.create" and child["name"] == "phase0-exit"
    running = index(lambda e: e["kind"] == "log" and e["pid"] == child["pid"], start)
    exited = index(lambda e: e["kind"] == "process.exit" and e["pid"] == child["pid"], running)
    assert events[exited]["code"] == 0
    reply = index(lambda e: e["kind"] == "ipc.reply" and e["pid"] == procd and e["op"] == "SPAWN_SERVICE", exited)
    assert events[reply]["status"] == "OK" and events[reply]["child_pid"] == child["pid"]
    summary = events[-1]
    assert summary["kind"] == "summary" and summary["ok"] is True and summary["stop"] == "completed"
    assert summary["instructions"] == events[-1]["icount"] > 0


def test_procd_events_come_from_its_own_instructions(tmp_path: Path) -> None:
    """procd's every event is caused by a syscall of the native binary: instructions retire between them."""
    _, events = run_jsonl(tmp_path)
    procd = next(e["pid"] for e in events if e["kind"] == "process.create" and e.get("name") == "procd")
    syscalls = [e for e in events if e["pid"] == procd and e["kind"] == "syscall"]
    assert len(syscalls) >= 8
    assert all(b["icount"] > a["icount"] for a, b in itertools.pairwise(syscalls) if a["name"] != "RECV")
    summary = events[-1]
    procd_row = next(p for p in summary["processes"] if p["pid"] == procd)  # type: ignore[union-attr]
    assert procd_row["instructions"] > 1000
    kinds = {e["kind"] for e in events if e["pid"] == procd}
    expected = {"syscall", "ipc.send", "ipc.recv", "ipc.reply", "notify", "log", "process.create", "process.start"}
    assert kinds <= expected | {"sched.switch"}


def test_two_runs_are_byte_identical(tmp_path: Path) -> None:
    main(["run", "--format", "jsonl", "--out", str(tmp_path / "a.jsonl")])
    main(["run", "--format", "jsonl", "--out", str(tmp_path / "b.jsonl")])
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_cpu_option_chooses_the_clock_and_stays_deterministic(tmp_path: Path) -> None:
    """--cpu zen4 runs the same instructions on another clock; each model repeats itself exactly."""
    code, skylake = run_jsonl(tmp_path, name="skl.jsonl")
    assert code == 0
    runs = [run_jsonl(tmp_path, "--cpu", "zen4", name=f"zen4-{k}.jsonl") for k in range(2)]
    assert runs[0] == runs[1] and runs[0][0] == 0
    zen4 = runs[0][1]
    assert [(e["kind"], e["icount"]) for e in zen4] == [(e["kind"], e["icount"]) for e in skylake]
    assert [e["cycle"] for e in zen4] != [e["cycle"] for e in skylake]
    with pytest.raises(SystemExit):
        main(["run", "--cpu", "pentium"])


def test_separate_interpreters_agree(tmp_path: Path) -> None:
    """A fresh process (new hash seed, new engines) writes the same bytes."""
    for name, seed in (("a", "1"), ("b", "2")):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "emu",
                "run",
                "--format",
                "jsonl",
                "--out",
                str(tmp_path / f"{name}.jsonl"),
                "--no-dumps",
            ],
            cwd=ROOT,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
            check=True,
            capture_output=True,
        )
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_text_format_has_the_same_digest(tmp_path: Path) -> None:
    _, events = run_jsonl(tmp_path)
    out = tmp_path / "trace.txt"
    assert main(["run", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0].split() == ["seq", "icount", "cycle", "pid", "kind", "details"]
    assert len(lines) == len(events) + 1
    assert f"digest={events[-1]['digest']}" in lines[-1]


def test_runaway_guest_stops_at_the_instruction_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "spin.elf"
    image.write_bytes(code_image(b"\xeb\xfe"))  # jmp $
    code, events = run_jsonl(tmp_path, str(image), "--max-instructions", "250001")
    assert code == 1
    assert events[-1]["stop"] == "instruction-limit"
    assert events[-1]["instructions"] == 250001
    assert "instruction-limit" in capsys.readouterr().err


def test_default_scenario_stops_at_the_limit_too(tmp_path: Path) -> None:
    code, events = run_jsonl(tmp_path, "--max-instructions", "5000")
    assert code == 1
    assert events[-1]["stop"] == "instruction-limit" and events[-1]["instructions"] == 5000


def test_faulting_lone_image_is_a_fault_event(tmp_path: Path) -> None:
    image = tmp_path / "fault.elf"
    image.write_bytes(code_image(bytes.fromhex("9089042500100000")))  # nop; mov [0x1000], eax
    code, events = run_jsonl(tmp_path, str(image))
    assert code == 1
    fault = next(e for e in events if e["kind"] == "fault")
    assert fault["fault"] == "unmapped-write" and fault["address"] == "0x1000" and fault["rip"] == "0x400001"
    assert events[-1]["stop"] == "faulted"


def test_lone_image_that_exits_zero_completes(tmp_path: Path) -> None:
    image = tmp_path / "exit0.elf"
    image.write_bytes(code_image(bytes.fromhex("31ffb8090000000f05")))  # exit(0)
    code, events = run_jsonl(tmp_path, str(image))
    assert code == 0
    kinds = [e["kind"] for e in events]
    assert kinds == ["process.create", "process.start", "sched.switch", "syscall", "process.exit", "summary"]


def test_committed_phase0_exit_runs_alone(tmp_path: Path) -> None:
    """A test image given as IMAGE is not procd: it runs alone, with the role its image note declares."""
    code, events = run_jsonl(tmp_path, str(ROOT / "fixtures" / "elf" / "phase0-exit.elf"))
    create = events[0]
    assert create["kind"] == "process.create" and create["role"] == "TEST"
    assert [e["text"] for e in events if e["kind"] == "log"] == ["phase0-exit: running"]
    assert code == 0


def test_procd_given_as_image_runs_the_scenario(tmp_path: Path) -> None:
    code, events = run_jsonl(tmp_path, str(ROOT / "fixtures" / "elf" / "procd.elf"))
    assert code == 0 and events[-1]["stop"] == "completed"


def test_where_a_procd_image_lies_does_not_change_the_trace(tmp_path: Path) -> None:
    # The committed procd, copied under two other names and folders, is the same image: the same
    # trace as the default run, which boots the committed one.
    _, default = run_jsonl(tmp_path, name="default.jsonl")
    for copy in (tmp_path / "a" / "procd.elf", tmp_path / "b" / "my-procd.elf"):
        copy.parent.mkdir()
        copy.write_bytes((ROOT / "fixtures" / "elf" / "procd.elf").read_bytes())
        _, events = run_jsonl(tmp_path, str(copy), name=f"{copy.parent.name}.jsonl")
        assert events == default, copy


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "--max-instructions", "0"])
    assert exc.value.code == 2
    assert main(["run", "--out", str(tmp_path / "missing" / "t.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_jsonl_lines_are_exactly_compact_json() -> None:
    """The hand-assembled JSONL line equals the standard library's rendering of the same event."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from emu.trace import Event, jsonl_line

    values = st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=8,
    )
    reserved = {"seq", "icount", "cycle", "pid", "kind"}

    @settings(max_examples=200, deadline=None)
    @given(st.dictionaries(st.text().filter(lambda k: k not in reserved), values, max_size=6), st.text())
    def check(fields: dict[str, object], kind: str) -> None:
        event = Event(3, 10, 20, 2, kind, fields)
        expected = json.dumps(event.as_dict(), separators=(",", ":"), ensure_ascii=False)
        assert json.loads(jsonl_line(event)) == json.loads(expected)
        assert list(json.loads(jsonl_line(event))) == list(event.as_dict())

    check()
