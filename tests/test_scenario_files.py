"""Hostile scenario files: any file exits 0, 1 or 2, never with a traceback.

Every bad file exits 2 with exactly one short line on stderr naming the file (and the key when
there is one); the shipped scenarios still load and run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emu.cli import main
from emu.cpu import FaultCause
from procd_model.scenario import (
    INJECT_SCHEMA,
    LINE_LIMIT,
    MAX_FILE_BYTES,
    SCENARIO_SCHEMA,
    SPAWN_SCHEMA,
    ScenarioError,
    load_scenario,
    parse_scenario,
)
from procd_model.schema import Integer, ListOf, Table, Text
from procd_model.toml_limits import Nesting, nesting

MAX_LINE = 200
SPAWN = '[[spawn]]\nimage = "phase0-exit"\nrole = "TEST"\n'
HEAD = 'name = "x"\n'


def refused(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run the scenario file `path`; assert exit 2 and one short line naming it; return the line."""
    code = main(["run", "--scenario", str(path), "--trace", "none"])
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert code == 2, captured.err[-2000:]
    assert len(lines) == 1, lines[:5]
    assert lines[0].startswith(f"emu: error: {path}"), lines[0][:300]
    assert len(lines[0]) <= MAX_LINE, lines[0][:300]
    assert "Traceback" not in captured.err
    return lines[0]


def write(tmp_path: Path, text: str | bytes, name: str = "s.toml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ the reported cases


def test_a_file_that_is_not_utf8_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(write(tmp_path, b'name = "\xff\xfe"\n' + SPAWN.encode()), capsys)
    assert "UTF-8" in line


def test_a_non_string_restart_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(write(tmp_path, HEAD + SPAWN + "restart = 1\n"), capsys)
    assert "spawn[0].restart" in line


def test_an_exit_code_in_other_digits_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(write(tmp_path, HEAD + SPAWN + 'ends = "exit ²"\n'), capsys)
    assert "spawn[0].ends" in line


@pytest.mark.parametrize("literal", ["1" + "0" * 30, "1" + "0" * 5000, "0x" + "f" * 20])
def test_integers_beyond_64_bits_exit_2(literal: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refused(write(tmp_path, f"{HEAD}[services]\nirq_at_cycle = {literal}\n{SPAWN}"), capsys)


def test_a_huge_times_exits_2_without_allocating(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = HEAD + SPAWN + f'[[inject]]\nimage = "phase0-exit"\nfail_create = "BUSY"\ntimes = {2**62}\n'
    line = refused(write(tmp_path, text), capsys)
    assert "inject[0].times" in line


@pytest.mark.parametrize("opening", ["[", "{a = "])
def test_toml_nested_thousands_deep_exits_2(opening: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    closing = "]" if opening == "[" else "}"
    line = refused(write(tmp_path, f"{HEAD}x = {opening * 5000}1{closing * 5000}\n{SPAWN}"), capsys)
    assert "nested" in line


@pytest.mark.parametrize(
    "text, key",
    [
        (f"{HEAD}[services]\nirq_at_cycle = -5\n{SPAWN}", "services.irq_at_cycle"),
        (HEAD + SPAWN + '[[inject]]\nimage = "phase0-exit"\nfail_create = "BUSY"\ntimes = -1\n', "inject[0].times"),
        (HEAD + SPAWN + '[[inject]]\nimage = "phase0-exit"\nfail_create = "BUSY"\ntimes = 0\n', "inject[0].times"),
        (f"{HEAD}[services]\n{SPAWN}[expect]\ncrashd_reports = -1\n", "expect.crashd_reports"),
    ],
)
def test_negative_numbers_are_refused_where_they_make_no_sense(
    text: str, key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert key in refused(write(tmp_path, text), capsys)


def test_a_long_value_is_not_echoed_whole(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refused(write(tmp_path, HEAD + SPAWN + f'restart = "{"x" * 500_000}"\n'), capsys)


def test_a_10mb_file_is_refused_by_its_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(write(tmp_path, HEAD + SPAWN + f'restart = "{"x" * 10_000_000}"\n'), capsys)
    assert "larger than" in line


def test_an_unknown_fault_kind_is_refused_at_load_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(write(tmp_path, HEAD + SPAWN + 'ends = "fault segfault"\n'), capsys)
    assert "spawn[0].ends" in line


def test_an_injection_for_an_image_never_spawned_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = HEAD + SPAWN + '[[inject]]\nimage = "phase0-probe"\nfault_at_instruction = 5\n'
    line = refused(write(tmp_path, text), capsys)
    assert "inject[0].image" in line and "phase0-probe" in line


def test_a_misspelt_restart_suggests_the_documented_spelling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = refused(write(tmp_path, HEAD + SPAWN + 'restart = "onfailure"\n'), capsys)
    assert "'on-failure'" in line and "ON_FAILURE" not in line


def test_a_satisfied_expected_halt_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.jsonl"
    assert main(["run", "--scenario", "force-fail", "--format", "jsonl", "--out", str(out)]) == 0
    assert "emu: ok (halted): bootstrap halted: required service phase0-fault-kill" in capsys.readouterr().err
    summary = json.loads(out.read_text().splitlines()[-1])
    assert summary["stop"] == "halted" and summary["ok"] is True


def test_an_expected_halt_with_another_expectation_unmet_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shipped = (Path(__file__).resolve().parent.parent / "procd_model/scenarios/force-fail.toml").read_text()
    unmet = write(tmp_path, shipped + 'logs = ["no such line"]\n')
    assert main(["run", "--scenario", str(unmet), "--trace", "none"]) == 1
    assert "no log line starts with 'no such line'" in capsys.readouterr().err
    other = write(tmp_path, shipped.replace("required service phase0-fault-kill", "something else"), "o.toml")
    assert main(["run", "--scenario", str(other), "--trace", "none"]) == 1
    assert "expected a halt mentioning 'something else'" in capsys.readouterr().err


def test_an_expected_halt_that_does_not_come_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, HEAD + SPAWN + '[expect]\nhalts = "required service"\n')
    assert main(["run", "--scenario", str(path), "--trace", "none"]) == 1
    assert "bootstrap did not halt" in capsys.readouterr().err


# ------------------------------------------------------------------ siblings


@pytest.mark.parametrize(
    "text, key",
    [
        (HEAD + SPAWN + 'depends = ["GENERIC"]\n', "spawn[0].depends[0]"),  # once a struct.error at run time
        (HEAD + SPAWN + 'depends = ["NAMED", "NAMED"]\n', "spawn[0].depends[1]"),
        (HEAD + SPAWN + 'flags = ["REQUIRED", "REQUIRED"]\n', "spawn[0].flags[1]"),
        (HEAD + SPAWN + 'restart = "ON_FAILURE"\n', "spawn[0].restart"),
        (HEAD + SPAWN + 'ends = "exit -1"\n', "spawn[0].ends"),
        (HEAD + SPAWN + f'ends = "exit {2**64}"\n', "spawn[0].ends"),
        (HEAD + SPAWN + 'ends = "exit 1" \nends = "alive"\n', ""),  # a duplicate key: not TOML
        (HEAD + SPAWN + "max_restarts = 1.5\n", "spawn[0].max_restarts"),
        (HEAD + SPAWN + "probe = 1\n", "spawn[0].probe"),
        (HEAD + SPAWN + '[[inject]]\nimage = "phase0-exit"\nfault_at_instruction = 5\ntimes = 2\n', "inject[0].times"),
        (
            HEAD + SPAWN + '[[inject]]\nimage = "phase0-exit"\nfault_at_instruction = 5\n'
            '[[inject]]\nimage = "phase0-exit"\nfault_at_instruction = 9\n',
            "inject[1]",
        ),
        ('name = ""\n' + SPAWN, "name"),
        ('name = "two\\nlines"\n' + SPAWN, "name"),
        (HEAD + SPAWN + '[expect]\nlogs = [""]\n', "expect.logs[0]"),
        (HEAD + '[boot]\nbefore_procd = ["PROCD"]\n' + SPAWN, "boot.before_procd[0]"),
        (HEAD + "spawn = 1\n", "spawn"),
        (HEAD + "[spawn]\n", "spawn"),
        ("name = 1\n" + SPAWN, "name"),
        (HEAD + "name.a.b.c = 1\n" + SPAWN, ""),
        (HEAD + "x = " + "{a." * 3000 + "b = 1" + "}" * 3000 + "\n" + SPAWN, ""),
    ],
)
def test_siblings_of_the_reported_cases_exit_2(
    text: str, key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert f": {key}: " in refused(write(tmp_path, text), capsys) or not key


def test_an_injection_into_an_image_a_spawned_client_spawns_is_accepted(tmp_path: Path) -> None:
    text = (
        'name = "x"\n[[spawn]]\nimage = "phase1-spawner"\nrole = "TEST"\nflags = ["SPAWNER"]\n'
        '[[inject]]\nimage = "phase0-exit"\nfail_create = "BUSY"\ntimes = 3\n'
    )
    scenario = load_scenario(str(write(tmp_path, text)))
    assert scenario.inject[0].times == 3


def test_fail_create_times_answers_exactly_that_many_creates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spawn_busy = SPAWN + 'status = "BUSY"\n'
    text = HEAD + '[[inject]]\nimage = "phase0-exit"\nfail_create = "BUSY"\ntimes = 2\n' + spawn_busy * 2 + SPAWN
    assert main(["run", "--scenario", str(write(tmp_path, text)), "--trace", "none"]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("where", ["dir.toml", "/dev/zero", "missing.toml", "x" * 5000 + ".toml", "x" * 5000])
def test_unusable_paths_exit_2_with_one_line(where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "dir.toml").mkdir()
    path = where if where.startswith("/") else str(tmp_path / where)
    code = main(["run", "--scenario", path, "--trace", "none"])
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 1 and len(lines[0]) <= MAX_LINE, lines


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.toml"
    os.mkfifo(fifo)
    # In a child process: opening a FIFO with no writer would block this test for ever.
    run = subprocess.run(
        [sys.executable, "-m", "emu", "run", "--scenario", str(fifo), "--trace", "none"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and run.stderr.splitlines() == [f"emu: error: {fifo}: is a FIFO, not a regular file"]


def test_a_file_name_with_a_newline_still_gives_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "name = 1\n", "two\nlines.toml")
    code = main(["run", "--scenario", str(path), "--trace", "none"])
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 1 and "two\\nlines.toml: name: " in lines[0], lines


def test_a_file_larger_than_the_limit_is_not_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "big.toml"
    with path.open("wb") as file:
        file.truncate(MAX_FILE_BYTES + 1)  # sparse: never read, only its size is checked
    assert "is larger than the limit of 1 MiB" in refused(path, capsys)
    exactly = write(tmp_path, (HEAD + SPAWN).ljust(MAX_FILE_BYTES, "#"), "ok.toml")
    assert load_scenario(str(exactly)).name == "x"


# ------------------------------------------------------------------ every key's range at its bounds

# The documented ranges (docs/abi.md §15, README), written out here as the oracle.
INTEGER_RANGES = {
    ("services", "irq_at_cycle"): (0, 2**64 - 1),
    ("spawn", "max_restarts"): (0, 255),
    ("spawn", "window_ms"): (0, 2**32 - 1),
    ("spawn", "backoff_ms"): (0, 2**32 - 1),
    ("inject", "fault_at_instruction"): (0, 2**64 - 1),
    ("inject", "times"): (1, 2**32 - 1),
    ("expect", "crashd_reports"): (0, 256),
}
TEXT_LENGTHS = {
    ("", "name"): (1, 64),
    ("", "description"): (0, 256),
    ("expect", "halts"): (1, 256),
    ("expect", "logs"): (1, 256),
}


def scenario_with(table: str, key: str, value: str) -> str:
    """A minimal valid scenario but for `key = value` in `table` ("" for the top level)."""
    if table == "":
        rest = "" if key == "name" else HEAD
        return f"{rest}{key} = {value}\n{SPAWN}"
    if table == "services":
        return f"{HEAD}[services]\n{key} = {value}\n{SPAWN}"
    if table == "spawn":
        return f"{HEAD}{SPAWN}{key} = {value}\n"
    if table == "inject":
        other = 'fail_create = "BUSY"\n' if key == "times" else ""
        return f'{HEAD}{SPAWN}[[inject]]\nimage = "phase0-exit"\n{other}{key} = {value}\n'
    assert table == "expect"
    return f"{HEAD}[services]\n{SPAWN}[expect]\n{key} = {value}\n"


def key_path(table: str, key: str) -> str:
    return key if table == "" else f"{table}[0].{key}" if table in ("spawn", "inject") else f"{table}.{key}"


def schema_keys(kind: type) -> set[tuple[str, str]]:
    """(table, key) of every key of the scenario schema whose value is a `kind`."""
    found = set()
    for key in SCENARIO_SCHEMA.keys:
        table = getattr(key.value, "table", key.value)
        if isinstance(table, Table):
            found |= {(key.name, inner.name) for inner in table.keys if isinstance(inner.value, kind)}
            found |= {
                (key.name, inner.name)
                for inner in table.keys
                if isinstance(inner.value, ListOf) and isinstance(inner.value.item, kind)
            }
        elif isinstance(key.value, kind):
            found.add(("", key.name))
    return found


def test_the_oracle_covers_every_numeric_and_text_key() -> None:
    assert schema_keys(Integer) == set(INTEGER_RANGES)
    assert schema_keys(Text) == set(TEXT_LENGTHS)


@pytest.mark.parametrize("table, key", sorted(INTEGER_RANGES))
def test_every_integer_key_at_its_bounds(
    table: str, key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    low, high = INTEGER_RANGES[table, key]
    for inside in (low, high):
        load_scenario(str(write(tmp_path, scenario_with(table, key, str(inside)))))
    for outside in (low - 1, high + 1):
        line = refused(write(tmp_path, scenario_with(table, key, str(outside))), capsys)
        assert f": {key_path(table, key)}: " in line and "out of range" in line


@pytest.mark.parametrize("table, key", sorted(TEXT_LENGTHS))
def test_every_text_key_at_its_length_bounds(
    table: str, key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shortest, longest = TEXT_LENGTHS[table, key]
    listed = key == "logs"

    def value(length: int) -> str:
        text = f'"{"é" * length}"'
        return f"[{text}]" if listed else text

    for inside in (shortest, longest):
        load_scenario(str(write(tmp_path, scenario_with(table, key, value(inside)))))
    for outside in (shortest - 1, longest + 1):
        if outside < 0:
            continue
        line = refused(write(tmp_path, scenario_with(table, key, value(outside))), capsys)
        assert f": {key_path(table, key)}{'[0]' if listed else ''}: " in line


@pytest.mark.parametrize("code, accepted", [("0", True), (str(2**64 - 1), True), (str(2**64), False), ("-1", False)])
def test_exit_codes_at_their_bounds(
    code: str, accepted: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, HEAD + SPAWN + f'ends = "exit {code}"\n')
    if accepted:
        assert load_scenario(str(path)).manifest[0].expect_exit == int(code)
    else:
        assert "spawn[0].ends" in refused(path, capsys)


def test_every_named_value_is_accepted_and_its_near_misses_refused(tmp_path: Path) -> None:
    """Each allowed name of each name-valued key loads; the same name lower-cased does not."""
    for table, key, names in (
        ("spawn", "restart", ("never", "on-failure", "always")),
        ("spawn", "status", ("OK", "DENIED", "NOT_FOUND", "INVALID_ARGUMENT", "BUSY", "INTERNAL", "RETRY")),
        ("spawn", "ends", (*(f"fault {kind.value}" for kind in FaultCause), "alive", "never", "exit 7")),
    ):
        for name in names:
            load_scenario(str(write(tmp_path, scenario_with(table, key, f'"{name}"'))))
            with pytest.raises(ScenarioError):
                load_scenario(str(write(tmp_path, scenario_with(table, key, f'"{name.upper()}x"'))))


# ------------------------------------------------------------------ the malformed-scenario corpus

SHIPPED = sorted((Path(__file__).resolve().parent.parent / "procd_model" / "scenarios").glob("*.toml"))
CORPUS: dict[str, bytes] = {
    "empty": b"",
    "bom": b"\xef\xbb\xbf" + (HEAD + SPAWN).encode(),
    "nul": (HEAD + SPAWN).encode() + b"\x00",
    "latin-1": 'name = "café"\n'.encode("latin-1") + SPAWN.encode(),
    "lone surrogate escape": b'name = "\\ud800"\n' + SPAWN.encode(),
    "utf-16": (HEAD + SPAWN).encode("utf-16"),
    "binary": bytes(range(256)) * 4,
    "unterminated string": b'name = "x\n' + SPAWN.encode(),
    "unterminated multi-line string": b'name = """' + b'"' * 1000,
    "unclosed array": HEAD.encode() + SPAWN.encode() + b"flags = [" * 100,
    "deep arrays": HEAD.encode() + b"x = " + b"[" * 100_000 + b"]" * 100_000 + b"\n",
    "deep dotted key": HEAD.encode() + b"x" + b".x" * 100_000 + b" = 1\n",
    "huge decimal": HEAD.encode() + b"[services]\nirq_at_cycle = " + b"9" * 100_000 + b"\n",
    "huge hex": HEAD.encode() + b"[services]\nirq_at_cycle = 0x" + b"f" * 100_000 + b"\n",
    "float": HEAD.encode() + b"[services]\nirq_at_cycle = 1e999\n",
    "nan": (HEAD + SPAWN + "max_restarts = nan\n").encode(),
    "date": (HEAD + SPAWN + "window_ms = 1979-05-27\n").encode(),
    "inline table spawn": (HEAD + 'spawn = [{image = "phase0-exit", role = "TEST", x = 1}]\n').encode(),
    "array for a table": (HEAD + SPAWN + "expect = [1]\n").encode(),
    "long key": (HEAD + SPAWN + "k" * 500_000 + " = 1\n").encode(),
    "long quoted key": (HEAD + SPAWN + '"' + "\\n" * 200_000 + '" = 1\n').encode(),
    "long name": ('name = "' + "n" * 900_000 + '"\n' + SPAWN).encode(),
    "long error text": (HEAD + SPAWN + 'ends = "fault ' + "k" * 900_000 + '"\n').encode(),
    "control characters": (HEAD + SPAWN + 'role = "\\u001b[31mTEST"\n').encode(),
    "right-to-left": (HEAD + SPAWN + 'role = "\u202eTSET"\n').encode(),
    "spawn without image": (HEAD + '[[spawn]]\nrole = "TEST"\n').encode(),
    "no name": SPAWN.encode(),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_the_malformed_corpus_exits_2_with_one_short_line(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refused(write(tmp_path, CORPUS[case]), capsys)


def test_the_shipped_scenario_files_still_load_and_run_as_files(capsys: pytest.CaptureFixture[str]) -> None:
    """Every shipped file loads from its path (test_scenarios.py runs each by name); three run."""
    assert len(SHIPPED) >= 17
    for path in SHIPPED:
        assert load_scenario(str(path)).name == path.stem
    for name in ("phase0-exit", "force-fail", "restart-storm"):
        path = next(p for p in SHIPPED if p.stem == name)
        assert main(["run", "--scenario", str(path), "--trace", "none"]) == 0, capsys.readouterr().err


KEYS = sorted(
    {key.name for key in SCENARIO_SCHEMA.keys}
    | {k.name for k in SPAWN_SCHEMA.keys}
    | {k.name for k in INJECT_SCHEMA.keys}
)
HEADERS = ["[services]", "[[spawn]]", "[[inject]]", "[expect]", "[boot]", "[spawn]", "[[expect]]", "[x]", "[[boot]]"]
LITERALS = [
    '"exit 0"',
    '"exit 1"',
    '"fault injected"',
    '"fault unmapped-write"',
    '"alive"',
    '"never"',
    '"on-failure"',
    '"always"',
    '"TEST"',
    '"NAMED"',
    '"GENERIC"',
    '"phase0-exit"',
    '"svc-stub"',
    '"BUSY"',
    '"OK"',
    '["REQUIRED"]',
    '["MEMD"]',
    '["NAMED"]',
    "[]",
    "{}",
    "true",
    "false",
    "1e999",
    "nan",
    "-inf",
    "1979-05-27",
    "[[1]]",
    '"x"',
]
scalars = st.one_of(
    st.sampled_from(LITERALS),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(max_size=12).map(json.dumps),
)
toml_lines = st.one_of(
    st.sampled_from(HEADERS),
    st.tuples(st.sampled_from(KEYS), scalars).map(lambda kv: f"{kv[0]} = {kv[1]}"),
)
toml_ish = st.lists(toml_lines, max_size=14).map(lambda lines: "\n".join(['name = "h"', *lines]) + "\n")


@st.composite
def mutated_shipped(draw: st.DrawFn) -> bytes:
    """A shipped scenario with a few bytes deleted, replaced or inserted."""
    data = bytearray(draw(st.sampled_from(SHIPPED)).read_bytes())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        cut = draw(st.integers(0, 8))
        data[at : at + cut] = draw(st.binary(max_size=6) | st.sampled_from(LITERALS).map(str.encode))
    return bytes(data)


def exits_cleanly(data: bytes, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The invariant: exit 0, 1 or 2, never an exception; on 2 one short line naming the file."""
    path = folder / "fuzz.toml"
    path.write_bytes(data)
    code = main(["run", "--scenario", str(path), "--trace", "none", "--max-instructions", "20000"])
    lines = capsys.readouterr().err.splitlines()
    assert code in (0, 1, 2)
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith(f"emu: error: {path}") and len(lines[0]) <= MAX_LINE, lines


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(toml_ish.map(str.encode), mutated_shipped(), st.binary(max_size=200)))
def test_any_file_exits_0_1_or_2_never_a_traceback(
    data: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exits_cleanly(data, tmp_path, capsys)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(toml_ish, mutated_shipped().map(lambda b: b.decode("utf-8", "replace"))))
def test_parsing_any_text_gives_a_scenario_or_one_short_scenario_error(text: str) -> None:
    try:
        parse_scenario(text, "fuzz.toml")
    except ScenarioError as exc:
        message = str(exc)
        assert message.startswith("fuzz.toml: ") and "\n" not in message and len(message) <= LINE_LIMIT


@pytest.mark.parametrize(
    "text, brackets, dotted",
    [
        ("a = 1", 0, 1),
        ("[a.b.c]\nx = [[1], [2]]", 2, 3),
        ("a = \"[[[[\" # [[[[\nb = '{{'", 0, 1),
        ('a = """x\\"""[[[""""\nb.c.d = 1', 0, 3),
        ("a = '''[[['''''\nb = [[[1]]]", 3, 1),
        ('"quoted . key".b . c = 1', 0, 3),
        ("t = 1979-05-27T07:32:00.999\nf = 1.5e3", 0, 2),
        ('a = "unterminated\nb = [[[[[[', 0, 1),  # the parser stops at the string
    ],
)
def test_nesting_is_measured_outside_strings_and_comments(text: str, brackets: int, dotted: int) -> None:
    assert nesting(text) == Nesting(brackets, dotted)


def test_docs_state_every_range_the_loader_checks() -> None:
    """docs/abi.md §15 gives each numeric key's range and each text key's length as the oracle above."""
    docs = (Path(__file__).resolve().parent.parent / "docs" / "abi.md").read_text()
    section = docs.split("## 15. Scenarios", 1)[1].split("The shipped scenarios:", 1)[0]
    minus, dash = "\N{MINUS SIGN}", "\N{EN DASH}"  # as the docs typeset them
    powers = {2**64 - 1: f"2⁶⁴{minus}1", 2**32 - 1: f"2³²{minus}1"}
    for (_, key), (low, high) in {**INTEGER_RANGES, **TEXT_LENGTHS}.items():
        stated = f"{powers.get(low, low)}{dash}{powers.get(high, high)}"
        rows = [line for line in section.splitlines() if f"`{key}" in line and stated in line]
        assert rows, f"docs/abi.md §15 does not give {key} the range {stated}"
