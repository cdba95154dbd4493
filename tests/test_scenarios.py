"""Scenarios: the built-in ones pass; scenario files are checked strictly; expectations decide."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emu.cli import main
from procd_model.scenario import builtin_scenarios

BUILTIN = sorted(s.name for s in builtin_scenarios())


def test_the_shipped_scenarios_are_listed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenarios"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == BUILTIN
    assert {
        "force-fail",
        "optional-fails",
        "inject-fault",
        "create-fails",
        "phase0-exit",
        "phase0-fault-kill",
        "phase0-isolation",
        "phase1-lookup",
        "phase1-time",
        "phase2-irq",
    } <= set(BUILTIN)


@pytest.mark.parametrize("name", BUILTIN)
def test_every_shipped_scenario_ends_as_it_says(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = next(s for s in builtin_scenarios() if s.name == name)
    code = main(["run", "--scenario", name, "--trace", "ipc", "--out", str(tmp_path / "t")])
    assert code == 0
    if scenario.expect.halts is not None:
        assert scenario.expect.halts in capsys.readouterr().err


def test_force_fail_halts_naming_the_service_and_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.jsonl"
    assert main(["run", "--scenario", "force-fail", "--format", "jsonl", "--out", str(out)]) == 0  # as it expects
    err = capsys.readouterr().err
    assert "bootstrap halted: required service phase0-fault-kill" in err and "faulted: UNMAPPED_WRITE" in err
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert events[-1]["stop"] == "halted"
    spawned = [e for e in events if e["kind"] == "process.create" and e.get("name") == "phase0-exit"]
    assert len(spawned) == 1, "bootstrap stopped before the third spawn"
    notified = [e for e in events if e["kind"] == "notify" and e["bits"] == 8]
    assert notified, "procd reported the failure to rootd with SERVICE_FAILED"


SCENARIO = """
name = "mine"
[services]
[[spawn]]
image = "phase0-fault-kill"
role = "TEST"
ends = "fault unmapped-write"
[expect]
crashd_reports = {reports}
"""


def test_a_user_scenario_file_runs_and_its_expectations_decide(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(SCENARIO.format(reports=1))
    bad.write_text(SCENARIO.format(reports=2))
    assert main(["run", "--scenario", str(good), "--trace", "none"]) == 0
    assert main(["run", "--scenario", str(bad), "--trace", "none"]) == 1
    assert "crashd holds 1 reports, expected 2" in capsys.readouterr().err


BROKEN = {
    "not toml": ("name = ", "not valid TOML"),
    "unknown key": (
        'name = "x"\nrestart = "always"\n[[spawn]]\nimage = "phase0-exit"\nrole = "TEST"',
        "unknown key 'restart'",
    ),
    "no spawn": ('name = "x"', "missing key 'spawn'"),
    "unknown image": ('name = "x"\n[[spawn]]\nimage = "nope"\nrole = "TEST"', "'nope' is not a boot image"),
    "unknown role": ('name = "x"\n[[spawn]]\nimage = "phase0-exit"\nrole = "KING"', "'KING' is not a role"),
    "bad ending": (
        'name = "x"\n[[spawn]]\nimage = "phase0-exit"\nrole = "TEST"\nends = "explode"',
        'expected "exit N"',
    ),
    "reports need crashd": (
        'name = "x"\n[[spawn]]\nimage = "phase0-exit"\nrole = "TEST"\n[expect]\ncrashd_reports = 0',
        "needs a [services] table",
    ),
    "inject both": (
        'name = "x"\n[[spawn]]\nimage = "phase0-exit"\nrole = "TEST"\n'
        '[[inject]]\nimage = "phase0-exit"\nfault_at_instruction = 5\nfail_create = "BUSY"',
        "exactly one of",
    ),
    "inject ok": (
        'name = "x"\n[[spawn]]\nimage = "phase0-exit"\nrole = "TEST"\n'
        '[[inject]]\nimage = "phase0-exit"\nfail_create = "OK"',
        "'OK' is not a failure status",
    ),
    "a test image before procd": (
        'name = "x"\n[boot]\nbefore_procd = ["TEST"]\n[[spawn]]\nimage = "phase0-exit"\nrole = "TEST"',
        "boot.before_procd[0]: 'TEST' is not a role rootd starts",
    ),
    "wrong type": (
        'name = "x"\n[[spawn]]\nimage = "phase0-exit"\nrole = "TEST"\nflags = "REQUIRED"',
        "flags: expected",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_scenario_files_exit_2_with_one_line(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, expected = BROKEN[case]
    path = tmp_path / "s.toml"
    path.write_text(text)
    assert main(["run", "--scenario", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"emu: error: {path}") and expected in err[0], err


def test_unknown_scenario_name_and_image_with_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--scenario", "no-such-scenario"]) == 2
    assert "no scenario named 'no-such-scenario'" in capsys.readouterr().err
    assert main(["run", "fixtures/elf/phase0-exit.elf", "--scenario", "phase0-exit"]) == 2


def test_restart_storm_backs_off_and_stops_at_its_bound(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    assert main(["run", "--scenario", "restart-storm", "--format", "jsonl", "--out", str(out)]) == 0
    events = [json.loads(line) for line in out.read_text().splitlines()]
    logs = [(e["cycle"], e["text"]) for e in events if e["kind"] == "log" and e["text"].startswith("procd: child")]
    restarting = [(cycle, text) for cycle, text in logs if "restarting in" in text]
    assert [text.split("restarting in ")[1] for _, text in restarting] == ["1 ms", "2 ms", "4 ms"]
    timers = [e for e in events if e["kind"] == "ipc.send" and e["pid"] == 0 and e["op"] == "TIMER"]
    # procd sets each timer for now + backoff in 1 ms ticks (2,000,000 cycles at 2 GHz); the
    # backoff doubles: the restarts land on ticks 0+1, 1+2 and 3+4
    assert [e["cycle"] // 2_000_000 for e in timers] == [1, 3, 7]
    assert any(text.endswith("over its restart bound") for _, text in logs)
    faults = [e for e in events if e["kind"] == "fault"]
    assert len(faults) == 4 and len({e["pid"] for e in faults}) == 4  # the original and three restarts


def test_erix_boot_order(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    assert main(["run", "--scenario", "erix-boot-order", "--trace", "ipc", "--format", "jsonl", "--out", str(out)]) == 0
    events = [json.loads(line) for line in out.read_text().splitlines()]
    ups = [e["text"].split(":")[0] for e in events if e["kind"] == "log" and e["text"].endswith(": up")]
    accepted = next(e["seq"] for e in events if e["kind"] == "log" and e["text"] == "procd: envelope accepted")
    assert ups == [
        "memd",
        "vspaced",
        "pagerd",
        "named",
        "logd",
        "crashd",
        "timed",
        "irqd",
        "deviced",
        "probed",
        "hotplugd",
        "seriald",
        "fbcond",
        "inputd",
    ]
    pagerd_up = next(e["seq"] for e in events if e["kind"] == "log" and e["text"] == "pagerd: up")
    named_up = next(e["seq"] for e in events if e["kind"] == "log" and e["text"] == "named: up")
    assert pagerd_up < accepted < named_up, "memd..pagerd before procd; the rest through procd after it"
    # the later services were spawned by procd (SPAWN_SERVICE), never created by rootd directly
    creators = {e["to"] for e in events if e["kind"] == "ipc.reply" and e.get("op") == "CREATE_PROCESS"}
    assert len(creators) == 2  # rootd (memd, vspaced, pagerd, procd) and procd (the rest)


def test_dependency_order_starts_services_after_their_dependencies(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    assert (
        main(["run", "--scenario", "dependency-order", "--trace", "ipc", "--format", "jsonl", "--out", str(out)]) == 0
    )
    events = [json.loads(line) for line in out.read_text().splitlines()]
    ups = [e["text"] for e in events if e["kind"] == "log" and e["text"].endswith(": up")]
    assert ups == ["named: up", "timed: up", "logd: up"]  # irqd is held forever; deviced was a cycle
    replies = [e["status"] for e in events if e["kind"] == "ipc.reply" and e.get("op") == "SPAWN_SERVICE"]
    assert replies == ["OK", "OK", "OK", "OK", "INVALID_ARGUMENT"]


def test_a_failed_dependency_is_refused_with_not_found(tmp_path: Path) -> None:
    assert main(["run", "--scenario", "dependency-fails", "--trace", "none"]) == 0


def test_the_readme_example_scenario_runs(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    example = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "example.toml"
    path.write_text(example)
    assert main(["run", "--scenario", str(path), "--trace", "none"]) == 0


LATE_FAILURE = """
name = "late"
[services]
[[spawn]]
image = "phase0-fault-kill"
role = "TEST"
flags = ["REQUIRED"]
ends = "fault unmapped-write"
restart = "on-failure"
max_restarts = 1
window_ms = 1000
backoff_ms = 5
[[spawn]]
image = "phase0-exit"
role = "TEST"
"""


def test_a_required_service_that_fails_after_the_manifest_still_halts_bootstrap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its first fault is restarted (no SERVICE_FAILED yet); rootd finishes its manifest; the
    restarted process faults over its bound after rootd's last spawn, and rootd must still halt."""
    scenario, out = tmp_path / "late.toml", tmp_path / "t.jsonl"
    scenario.write_text(LATE_FAILURE)
    assert main(["run", "--scenario", str(scenario), "--format", "jsonl", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "bootstrap halted: required service phase0-fault-kill (pid " in err and "faulted: UNMAPPED_WRITE" in err
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert events[-1]["stop"] == "halted"
    last_spawn = max(e["seq"] for e in events if e["kind"] == "ipc.recv" and e.get("op") == "SPAWN_SERVICE")
    notified = [e["seq"] for e in events if e["kind"] == "notify" and e["bits"] == 8]
    assert notified and notified[0] > last_spawn, "the failure came after rootd's last spawn"


def test_the_summary_says_a_held_service_was_not_started() -> None:
    """dependency-order's irqd waits for a role no one runs: procd holds it, it never starts."""
    from emu.trace import Trace
    from procd_model.world import run_scenario

    scenario = next(s for s in builtin_scenarios() if s.name == "dependency-order")
    outcome = run_scenario(Trace(), scenario, 50_000_000)
    assert outcome.ok, outcome.detail
    assert "irqd (svc-stub) held (not started)" in outcome.detail
    assert "pid 0" not in outcome.detail
