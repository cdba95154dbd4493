"""`python -m emu fuzz`: campaigns find procd's planted bugs within their budgets, pass the real
procd, save each distinct failure once as a replay file, and are reproducible from their seed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emu.cli import main
from emu.elf import load_elf
from procd_model.fuzz.campaign import CORPUS_KEY, Campaign, Failure
from procd_model.fuzz.database import open_database
from procd_model.fuzz.decode import MAX_STEPS, decode_steps, seed_inputs
from procd_model.fuzz.replayfile import ReplayFileError, read_replay, replay
from procd_model.fuzz.target import ProcdTarget, TargetError
from procd_model.images import fixtures_dir
from procd_model.strategies import LIFECYCLE_KINDS

FIXTURES = fixtures_dir()

PLANTED_BUDGETS = {
    "missing-badge-check": 300,
    "generation-stuck": 300,
    "length-off-by-one": 1_000,
    "wider-rights": 300,
    "restart-count-never-resets": 6_000,
    "panic": 4_000,
}
"""Examples within which a seed-0 campaign must find each planted bug."""


def first_failure(procd: Path | None, examples: int, seed: int = 0) -> Failure | None:
    image = load_elf(procd, "procd") if procd is not None else None
    found: list[Failure] = []
    Campaign(ProcdTarget(image), seed).run(examples=examples, until_failures=1, on_failure=found.append)
    return found[0] if found else None


@pytest.mark.parametrize("bug", sorted(PLANTED_BUDGETS))
def test_a_campaign_finds_each_planted_bug_within_its_budget(bug: str) -> None:
    failure = first_failure(FIXTURES / f"procd-{bug}.elf", PLANTED_BUDGETS[bug])
    assert failure is not None, f"procd-{bug}: not found in {PLANTED_BUDGETS[bug]} examples"
    assert failure.steps, "a failure comes with the steps that reproduce it"


def test_the_real_procd_passes_a_campaign() -> None:
    assert first_failure(None, 1_000, seed=1) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_into_steps_that_encode_whole_records(data: bytes) -> None:
    steps = decode_steps(data)
    assert len(steps) <= MAX_STEPS
    for step in steps:
        assert step.kind in LIFECYCLE_KINDS or step.request is not None


def test_seed_inputs_decode_to_the_lifecycles_they_describe() -> None:
    kinds = [[step.kind for step in decode_steps(seed)] for seed in seed_inputs()]
    assert ["spawn", "terminate", "time", "sleep", "terminate", "time"] in kinds
    assert all(k and k[0] == "spawn" for k in kinds)


def test_a_campaign_is_reproducible_from_its_seed() -> None:
    runs = []
    for _ in range(2):
        campaign = Campaign(ProcdTarget(), seed=7)
        progress = campaign.run(examples=40)
        runs.append((progress.examples, progress.invalid, progress.corpus, progress.blocks))
    assert runs[0] == runs[1]


def test_emu_fuzz_saves_each_failure_once_and_replay_reproduces_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    procd = FIXTURES / "procd-missing-badge-check.elf"
    failures = tmp_path / "failures"
    args = [
        "fuzz",
        "--procd",
        str(procd),
        "--examples",
        "300",
        "--db",
        str(tmp_path / "db"),
        "--failures",
        str(failures),
    ]
    assert main(args) == 1
    saved = sorted(failures.glob("*.replay.json"))
    assert saved, "a failure was saved"
    assert all(json.loads(p.read_text())["format"] == "procd-emu-replay" for p in saved)
    keys = [read_replay(p).key for p in saved]
    assert len(keys) == len(set(keys)), "each distinct failure is saved once"
    again = replay(read_replay(saved[0]))
    assert again is not None and again.key == keys[0], "the replay file reproduces its failure"
    capsys.readouterr()
    assert main(["replay", str(saved[0])]) == 0
    assert f"reproduced {keys[0]}" in capsys.readouterr().err


def test_a_campaign_on_zen4_runs_its_clock_on_zen4_and_its_replay_files_say_so(tmp_path: Path) -> None:
    assert ProcdTarget(cpu="zen4").fresh()[0].kernel.cpu_model.name == "zen4"
    assert ProcdTarget().fresh()[0].kernel.cpu_model.name == "skylake"
    failures = tmp_path / "failures"
    procd = FIXTURES / "procd-missing-badge-check.elf"
    args = ["fuzz", "--procd", str(procd), "--examples", "300", "--db", "none", "--failures", str(failures)]
    assert main([*args, "--cpu", "zen4"]) == 1
    saved = sorted(failures.glob("*.replay.json"))
    assert saved and all(json.loads(p.read_text())["campaign"]["cpu"] == "zen4" for p in saved)
    found = read_replay(saved[0])
    assert found.cpu == "zen4"
    again = replay(found)
    assert again is not None and again.key == found.key


def test_a_replay_file_without_a_cpu_ran_the_default_and_an_unknown_cpu_is_one_line(tmp_path: Path) -> None:
    document = {
        "format": "procd-emu-replay",
        "version": 1,
        "failure": {"key": "k", "message": "m"},
        "procd": {"path": "procd.elf", "sha256": "00"},
        "steps": [{"kind": "list", "badge": 1}],
        "campaign": {"seed": 0, "found_after": 1},
    }
    path = tmp_path / "old.replay.json"
    path.write_text(json.dumps(document))
    assert read_replay(path).cpu == "skylake"
    document["campaign"] = {"seed": 0, "found_after": 1, "cpu": "pentium"}
    path.write_text(json.dumps(document))
    with pytest.raises(ReplayFileError, match=re.escape('"campaign.cpu" must be one of skylake, zen4')) as caught:
        read_replay(path)
    assert "\n" not in str(caught.value)


def test_replaying_a_bad_replay_file_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.replay.json"
    path.write_text('{"format": "procd-emu-replay", "version": 2}')
    assert main(["replay", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "version 2" in err, err


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "not a replay file"),
        ("{}", "not a replay file"),
        ('{"format": "procd-emu-replay", "version": 9}', "version 9"),
        (
            '{"format": "procd-emu-replay", "version": 1, "failure": {}, "procd": {}, "campaign": {}, "steps": []}',
            '"steps"',
        ),
        ("\x00\xff", "not a replay file"),
    ],
)
def test_a_bad_replay_file_is_one_clear_line(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "bad.replay.json"
    path.write_text(text, encoding="latin-1")
    with pytest.raises(ReplayFileError, match=problem) as caught:
        read_replay(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_fuzz_refuses_a_procd_that_is_not_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fuzz", "--procd", str(FIXTURES / "phase0-exit.elf"), "--examples", "1", "--db", "none"]) == 2
    assert "not a procd image" in capsys.readouterr().err


def test_a_procd_crash_found_by_fuzzing_comes_with_its_dump(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    failures = tmp_path / "failures"
    procd = FIXTURES / "procd-panic.elf"
    args = ["fuzz", "--procd", str(procd), "--examples", "4000", "--db", "none", "--failures", str(failures)]
    assert main(args) == 1
    (saved,) = failures.glob("panic-*.replay.json")
    (dump,) = failures.glob("*.core")
    capsys.readouterr()
    assert main(["dump", str(dump)]) == 0
    report = capsys.readouterr().out
    assert "panicked in procd::planted::spawn_fields" in report and "procd/src/planted.rs" in report
    assert read_replay(saved).key.startswith("panic:procd/src/planted.rs:")


def test_two_jobs_share_one_database_and_each_failure_is_saved_once(tmp_path: Path) -> None:
    failures, database = tmp_path / "failures", tmp_path / "db"
    procd = FIXTURES / "procd-missing-badge-check.elf"
    args = ["fuzz", "--jobs", "2", "--procd", str(procd), "--examples", "200", "--db", str(database)]
    assert main([*args, "--failures", str(failures)]) == 1
    keys = [read_replay(path).key for path in failures.glob("*.replay.json")]
    assert keys and len(keys) == len(set(keys)), "both jobs found failures; each key is saved once"
    shared = open_database(str(database))
    assert shared is not None and list(shared.fetch(CORPUS_KEY)), "the jobs kept their corpus in the database"


def test_a_procd_that_does_not_boot_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_boot(_self: ProcdTarget) -> None:
        raise TargetError("procd does not boot: the machine stopped: instruction-limit")

    monkeypatch.setattr(ProcdTarget, "_boot", no_boot)
    args = ["fuzz", "--procd", str(FIXTURES / "procd.elf"), "--examples", "5", "--db", "none"]
    assert main([*args, "--failures", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not boot" in err and "procd.elf" in err, err


def test_a_job_that_stops_on_an_error_is_reported_not_silent() -> None:
    from procd_model.fuzz.jobs import JobSpec, run_jobs

    reports = []
    bad = JobSpec(0, 0, FIXTURES / "no-such-procd.elf", None, 5, None)
    lost = run_jobs([bad], reports.append)
    assert lost == [] and reports and reports[-1].error is not None and reports[-1].done


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=MAX_STEPS + 2))
def test_decoding_at_most_n_steps_gives_the_first_n(data: bytes, limit: int) -> None:
    assert decode_steps(data, limit) == decode_steps(data)[:limit]
