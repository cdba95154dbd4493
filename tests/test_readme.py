"""The README's quick start is two commands, and CI runs exactly those two; its layout names every
native crate."""

from __future__ import annotations

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the quick start has no sh code block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_quick_start_is_two_commands_in_a_virtual_environment() -> None:
    install_and_run, test = quick_start_commands()
    # A system Python that refuses installs outside a virtual environment (PEP 668) must still work.
    assert install_and_run.startswith("python3 -m venv ")
    assert "-m emu run" in install_and_run
    assert test.endswith("-m pytest")


def test_ci_runs_the_quick_start_commands_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    install_and_run, test = quick_start_commands()
    # CI may add flags such as --quiet, but each command's words stay, in order.
    for command in (install_and_run, test):
        words = command.split()
        assert any(_words_in_order(words, line.split()) for line in ci), f".ci/run does not run {command!r}"


def _words_in_order(wanted: list[str], line: list[str]) -> bool:
    it = iter(line)
    return all(any(w == x for x in it) for w in wanted)


def test_layout_names_every_native_crate() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if line.startswith("| `native/` |"))
    named = re.findall(r"`([^`]+)`", row.split("|")[2])
    workspace = tomllib.loads((ROOT / "native" / "Cargo.toml").read_text(encoding="utf-8"))
    assert sorted(named) == sorted(workspace["workspace"]["members"])
