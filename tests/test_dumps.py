"""Crash dumps: written on every guest crash, read by `python -m emu dump` (and by gdb), replayed
exactly by `python -m emu replay`, and refused with one line when they cannot be used."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emu.cli import main
from emu.dumpfile import DUMP_SUFFIX, encode_dump, load_dump
from emu.elf import load_elf
from emu.replay import start_replay
from procd_model.abi import PROCESS_REQUEST, ProcdOp
from procd_model.client import Request, ask_all
from procd_model.cpu_model import cpu_model
from procd_model.dump import DumpRecorder, PausedKernel, replay_inputs
from procd_model.images import fixtures_dir
from procd_model.messages import Message
from procd_model.scenario import builtin_scenarios

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = fixtures_dir()
PLANTED_PANIC_ID = 0x0BAD_F00D
"""native/procd/src/planted.rs: procd-panic.elf panics on STATUS of this id."""


def run_dumping(folder: Path, *args: str) -> list[Path]:
    main(["run", *args, "--trace", "none", "--out", str(folder / "trace"), "--dump-dir", str(folder / "dumps")])
    return sorted((folder / "dumps").glob(f"*{DUMP_SUFFIX}")) if (folder / "dumps").is_dir() else []


def dump_json(path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["dump", str(path), "--json"]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


@pytest.fixture(scope="module")
def fault_kill_dump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    (dump,) = run_dumping(tmp_path_factory.mktemp("fault-kill"), "--scenario", "phase0-fault-kill")
    return dump


@pytest.fixture(scope="module")
def deep_fault_dump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    (dump,) = run_dumping(tmp_path_factory.mktemp("deep"), str(FIXTURES / "phase0-deep-fault.elf"))
    return dump


def test_the_fault_kill_scenario_writes_a_dump_crashd_names(fault_kill_dump: Path, tmp_path: Path) -> None:
    dump = load_dump(fault_kill_dump)
    assert fault_kill_dump.name == dump.id + DUMP_SUFFIX
    assert dump.payload["cause"] == {
        "kind": "fault",
        "fault": "unmapped-write",
        "rip": dump.registers["rip"],
        "address": 0x10,
        "access": "8-byte access",
    }
    out = tmp_path / "trace.jsonl"
    main(["run", "--scenario", "phase0-fault-kill", "--format", "jsonl", "--out", str(out), "--no-dumps"])
    logs = [json.loads(line).get("text", "") for line in out.read_text().splitlines()]
    assert f"crashd: record 0: pid 6 killed, dump {dump.id}" in logs
    assert not (tmp_path / "dumps").exists()


def test_dump_names_the_function_and_line_and_shows_procd(
    fault_kill_dump: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = dump_json(fault_kill_dump, capsys)
    assert report["fault"].startswith("pid 6 (phase0-fault-kill) faulted: unmapped-write at 0x10 (8-byte access)")
    assert report["fault"].endswith("in phase0_fault_kill::main+0x2d at phase0-fault-kill/src/main.rs:16")
    names = [f["function"] for f in report["backtrace"]]
    assert names == ["phase0_fault_kill::main", "phase0_fault_kill::__rt_entry", "_start"]
    rows = {row["name"]: row for row in report["processes"]}
    assert rows["rootd"]["doing"] == "waiting for a reply from pid 5 (procd)"
    assert rows["crashd"]["doing"] == "in RECV on endpoint 4 (crashd)"
    assert rows["procd"]["state"] == "ready" and "registers" in rows["procd"]
    assert rows["phase0-fault-kill"]["doing"] == "faulted (this dump)"
    assert [c["slot"] for c in report["capabilities"]] == [1, 2, 3, 4, 5, 6, 7]
    assert report["disassembly"] and sum(i["faulting"] for i in report["disassembly"]) == 1
    assert report["events"][-1]["kind"] == "syscall"
    capsys.readouterr()
    assert main(["dump", str(fault_kill_dump)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == report["fault"]
    assert "=> 0x1100046" in text and "waiting for a reply from pid 5 (procd)" in text


def test_the_backtrace_is_right_through_a_leaf_without_a_frame(
    deep_fault_dump: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = dump_json(deep_fault_dump, capsys)
    frames = report["backtrace"]
    assert [f["function"] for f in frames] == [
        "deep_store",
        "phase0_deep_fault::middle",
        "phase0_deep_fault::outer",
        "phase0_deep_fault::main",
        "phase0_deep_fault::__rt_entry",
        "_start",
    ]
    assert all(f["found_by"] == "cfi" for f in frames[1:])
    source = (ROOT / "native" / "phase0-deep-fault" / "src" / "main.rs").read_text().splitlines()
    for frame, call in zip(frames[1:4], ("deep_store(", "middle(", "outer("), strict=True):
        file, line = frame["source"].rsplit(":", 1)
        assert file == "phase0-deep-fault/src/main.rs"
        assert call in source[int(line) - 1], frame
    assert "called from phase0_deep_fault::middle at phase0-deep-fault/src/main.rs:" in report["fault"]


def test_repeated_runs_do_not_clobber_a_dump(tmp_path: Path) -> None:
    first = run_dumping(tmp_path, str(FIXTURES / "phase0-deep-fault.elf"))
    both = run_dumping(tmp_path, str(FIXTURES / "phase0-deep-fault.elf"))
    assert len(first) == 1 and len(both) == 2
    assert both[0].read_bytes() == both[1].read_bytes()
    assert {p.name for p in both} == {first[0].name, first[0].name.replace(DUMP_SUFFIX, f"-2{DUMP_SUFFIX}")}
    assert not [p for p in (tmp_path / "dumps").iterdir() if p.name.startswith(".")]


def test_no_dumps_writes_none_and_the_default_folder_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import emu.cli

    monkeypatch.setattr(emu.cli, "DEFAULT_DUMP_DIR", tmp_path / "default")
    image = str(FIXTURES / "phase0-deep-fault.elf")
    main(["run", image, "--trace", "none", "--no-dumps"])
    assert not (tmp_path / "default").exists()
    main(["run", image, "--trace", "none"])
    (written,) = (tmp_path / "default").iterdir()
    assert f"emu: crash dump written: {written}" in capsys.readouterr().err


def _planted_panic_dump(folder: Path) -> Path:
    recorder = DumpRecorder(None, folder, replay_inputs("procd_model.world", 50_000_000))
    request = Request(Message(ProcdOp.STATUS, PROCESS_REQUEST.pack(id=PLANTED_PANIC_ID)))
    ask_all([request], procd_image=load_elf(FIXTURES / "procd-panic.elf"), recorder=recorder)
    (dump,) = recorder.written
    return dump


def test_a_procd_panic_dump_carries_file_line_and_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dump = load_dump(_planted_panic_dump(tmp_path))
    message = dump.payload["cause"]["message"]
    assert re.fullmatch(r"panic at procd/src/planted\.rs:\d+: planted bug: STATUS of id 0xbadf00d", message)
    report = dump_json(tmp_path / (dump.id + DUMP_SUFFIX), capsys)
    line = int(message.split(":")[1])
    assert (
        report["fault"]
        == f"pid 2 (procd) panicked in procd::planted::status_of+0x3b at procd/src/planted.rs:{line}: {message}"
    )
    assert {"name": "procd", "doing": "panicked (this dump)"}.items() <= report["processes"][1].items()
    assert "procd::planted::status_of" in [f["function"] for f in report["backtrace"]]
    assert report["message"]["op_name"] == "STATUS" and report["message"]["from_name"] == "client"


def _crashing_scenarios() -> list[str]:
    return [
        s.name
        for s in builtin_scenarios()
        if any(e.expect_fault for e in s.manifest) or any(i.fault_at_instruction is not None for i in s.inject)
    ]


@pytest.mark.parametrize("scenario", _crashing_scenarios())
def test_replay_reproduces_every_fault_of_the_shipped_scenarios(scenario: str, tmp_path: Path) -> None:
    dumps = run_dumping(tmp_path, "--scenario", scenario)
    assert dumps, f"{scenario} wrote no dump"
    for dump in dumps:
        session = start_replay(dump)
        assert session.mismatches == [], dump.name
        assert session.outcome.stop == "stopped-at-crash"


@pytest.mark.parametrize("before", [1, 2, 3, 7, 100])
def test_stop_before_stops_exactly_n_instructions_early(before: int, deep_fault_dump: Path) -> None:
    crash_at = load_dump(deep_fault_dump).payload["clock"]["icount"]
    session = start_replay(deep_fault_dump, before)
    assert session.reproduced and session.paused is not None
    assert session.paused.icount == crash_at - before
    registers = session.paused.registers(1)
    assert registers is not None and registers["rip"] != load_dump(deep_fault_dump).registers["rip"]


@pytest.mark.parametrize("before", [1, 4, 999])
def test_a_stopped_replay_runs_on_to_the_same_crash(before: int, fault_kill_dump: Path) -> None:
    """Stopping mid-block (and mid-turn) disturbs nothing: running on reaches the crash at the
    same instruction with the same registers and memory."""
    dump = load_dump(fault_kill_dump)
    session = start_replay(fault_kill_dump, before)
    paused = session.paused
    assert isinstance(paused, PausedKernel)
    recorder = paused.kernel.crash_watch
    assert isinstance(recorder, DumpRecorder)
    recorder.stop_at = dump.id
    assert paused.run_on(dump.payload["replay"]["max_instructions"]) == "stopped-at-crash"
    captured = recorder.captured
    assert captured is not None
    assert captured["clock"] == dump.payload["clock"]
    assert captured["registers"] == dump.payload["registers"]
    assert captured["memory"] == dump.payload["memory"]


def test_replay_command_reports_and_exits(deep_fault_dump: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(deep_fault_dump)]) == 0
    assert "reproduced phase0-deep-fault.elf-pid1-i" in capsys.readouterr().err
    assert main(["replay", str(deep_fault_dump), "--stop-before", "3"]) == 0
    assert "stopped 3 instructions before" in capsys.readouterr().err


# ----------------------------------------------------------------------------- bad dumps


def rewrite(source: Path, target: Path, change: Any) -> Path:
    """`source` re-encoded with its payload changed by `change(payload)`."""
    dump = load_dump(source)
    payload = json.loads(json.dumps(dump.payload))
    change(payload)
    target.write_bytes(encode_dump(payload, signal=11, segments=list(dump.segments)))
    return target


def test_a_changed_register_is_a_replay_mismatch(deep_fault_dump: Path, tmp_path: Path) -> None:
    def change(payload: dict[str, Any]) -> None:
        payload["registers"]["r12"] ^= 1

    bad = rewrite(deep_fault_dump, tmp_path / "bad.core", change)
    session = start_replay(bad)
    assert session.mismatches == [
        f"r12 is {session.dump.registers['r12'] ^ 1:#x}, the dump has {session.dump.registers['r12']:#x}"
    ]
    assert main(["replay", str(bad)]) == 1


def _bad_inputs(source: Path, folder: Path) -> list[tuple[str, Path, str]]:
    raw = source.read_bytes()
    truncated, corrupt, foreign = folder / "truncated.core", folder / "corrupt.core", folder / "foreign.core"
    truncated.write_bytes(raw[: len(raw) // 2])
    corrupt.write_bytes(raw.replace(b'"format"', b'"formaX"'))
    from emu.coredump import prstatus, write_core

    foreign.write_bytes(write_core([prstatus({"rip": 1}, signal=11, pid=1)], []))
    missing = rewrite(source, folder / "missing.core", lambda p: p["images"][0].update(path=str(folder / "nope.elf")))
    changed_image = folder / "changed.elf"
    changed_image.write_bytes(load_elf(FIXTURES / "phase0-deep-fault.elf").raw + b"\0")
    changed = rewrite(source, folder / "changed.core", lambda p: p["images"][0].update(path=str(changed_image)))
    memory = bytearray(raw)
    memory[-1] ^= 0xFF
    tampered = folder / "tampered.core"
    tampered.write_bytes(bytes(memory))
    return [
        ("truncated", truncated, "truncated"),
        ("corrupt", corrupt, "corrupt dump"),
        ("wrong version", rewrite(source, folder / "v9.core", lambda p: p.update(version=9)), "version 9"),
        ("foreign core", foreign, "not a procd-emu dump (no PROCDEMU note)"),
        ("not ELF", FIXTURES / "rustc-version.txt", "not an ELF file"),
        ("an executable", FIXTURES / "phase0-exit.elf", "not a core file"),
        ("image missing", missing, "is missing"),
        ("image changed", changed, "changed since the dump"),
        ("memory changed", tampered, "does not match the digest"),
        ("field missing", rewrite(source, folder / "nocause.core", lambda p: p["cause"].pop("kind")), "is missing or"),
        ("field mistyped", rewrite(source, folder / "badclock.core", lambda p: p.update(clock=[])), "no 'clock'"),
        ("no file", folder / "absent.core", "cannot read"),
    ]


@pytest.mark.parametrize("command", ["dump", "replay"])
def test_bad_dumps_are_one_line_exit_2(
    command: str, deep_fault_dump: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for what, path, expected in _bad_inputs(deep_fault_dump, tmp_path):
        capsys.readouterr()
        assert main([command, str(path)]) == 2, what
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"emu: error: {path}: "), (what, err)
        assert expected in err, (what, err)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(1, 255)), min_size=1, max_size=4))
def test_a_damaged_dump_is_read_or_refused_in_one_line(
    flips: list[tuple[int, int]], deep_fault_dump: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whatever bytes change, `dump` either reads the file (0) or refuses it in one line (2)."""
    data = bytearray(deep_fault_dump.read_bytes())
    for at, xor in flips:
        data[at % len(data)] ^= xor
    damaged = tmp_path / "damaged.core"
    damaged.write_bytes(bytes(data))
    capsys.readouterr()
    code = main(["dump", str(damaged)])
    err = capsys.readouterr().err
    assert code in (0, 2)
    assert code == 0 or (err.count("\n") == 1 and err.startswith(f"emu: error: {damaged}: ")), err


def test_core_output_never_overwrites_the_dump(deep_fault_dump: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = deep_fault_dump.read_bytes()
    assert main(["dump", str(deep_fault_dump), "--core", str(deep_fault_dump)]) == 2
    assert "is the input file" in capsys.readouterr().err
    assert deep_fault_dump.read_bytes() == before


def test_a_message_received_without_a_call_is_the_one_in_flight() -> None:
    """procd crashing on the kernel's CHILD_DIED (a SEND) shows that message, as the trace decoded it."""
    from procd_model.caps import CapTable
    from procd_model.dump_state import in_flight
    from procd_model.kernel import Kernel
    from procd_model.kernel.state import ActorContext, Process

    kernel = Kernel()
    proc = Process(5, "procd", CapTable(), ActorContext(iter(())))  # type: ignore[arg-type]
    kernel.trace.emit("ipc.recv", 5, endpoint=6, op="CHILD_DIED", badge=1, sender=0, call=False, child_pid=6)
    kernel.trace.emit("ipc.recv", 4, endpoint=4, op="REPORT", badge=0, sender=5, call=False)
    message = in_flight(kernel, proc)
    assert message is not None and message["received"] and message["op_name"] == "CHILD_DIED"
    assert message["from"] == 0 and message["child_pid"] == 6


def test_a_call_through_a_bad_pointer_still_names_the_caller(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The pc is no code (a fetch fault): the caller is found from the return address the call
    pushed, not skipped as the rbp chain would."""
    from elfcraft import code_image

    image = tmp_path / "bad-call.elf"
    image.write_bytes(code_image(bytes.fromhex("48c7c034120000" + "ffd0" + "90")))  # mov rax, 0x1234; call rax
    (dump,) = run_dumping(tmp_path, str(image))
    frames = dump_json(dump, capsys)["backtrace"]
    assert [(f["pc"], f["found_by"]) for f in frames[:2]] == [(0x1234, "registers"), (0x400009, "return-address")]


def test_an_image_with_broken_call_frame_information_still_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Malformed DWARF in a user's image is no debug information there: the frame pointers
    still give a backtrace, and nothing raises."""
    from elftools.elf.elffile import ELFFile

    raw = bytearray((FIXTURES / "phase0-deep-fault.elf").read_bytes())
    with (FIXTURES / "phase0-deep-fault.elf").open("rb") as stream:
        section = ELFFile(stream).get_section_by_name(".eh_frame")
        offset, size = section["sh_offset"], section["sh_size"]
    raw[offset : offset + size] = b"\xff" * size
    image = tmp_path / "broken-cfi.elf"
    image.write_bytes(bytes(raw))
    (dump,) = run_dumping(tmp_path, str(image))
    frames = dump_json(dump, capsys)["backtrace"]
    assert frames[0]["function"] == "deep_store"
    assert {f["found_by"] for f in frames[1:]} == {"frame-pointer"}


def test_replay_runs_a_scenario_file_from_its_recorded_text(tmp_path: Path) -> None:
    """The dump keeps the scenario file's text: a replay still reproduces the crash after the
    file changed or went away."""
    scenario = tmp_path / "mine.toml"
    scenario.write_text((ROOT / "procd_model" / "scenarios" / "phase0-fault-kill.toml").read_text())
    (dump,) = run_dumping(tmp_path, "--scenario", str(scenario))
    assert load_dump(dump).payload["replay"]["scenario"]["text"] == scenario.read_text()
    assert start_replay(dump).reproduced
    scenario.write_text("# changed since\n" + scenario.read_text().replace("phase0-exit", "phase0-probe"))
    assert start_replay(dump).reproduced
    scenario.unlink()
    assert start_replay(dump).reproduced


def test_a_replay_runs_on_the_cpu_model_the_dump_was_taken_on(tmp_path: Path) -> None:
    """The clock decides preemption, so a replay must time the guests as the dumped run did."""
    (dump,) = run_dumping(tmp_path, "--scenario", "phase0-fault-kill", "--cpu", "zen4")
    assert load_dump(dump).payload["replay"]["cpu"] == "zen4"
    session = start_replay(dump)
    assert session.mismatches == []
    assert session.outcome.frequency_hz == cpu_model("zen4").frequency_hz != cpu_model("skylake").frequency_hz


def test_a_dump_naming_an_unknown_cpu_model_is_one_line_exit_2(
    deep_fault_dump: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = rewrite(deep_fault_dump, tmp_path / "cpu.core", lambda p: p["replay"].update(cpu="pentium"))
    capsys.readouterr()
    assert main(["replay", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pentium" in err, err
