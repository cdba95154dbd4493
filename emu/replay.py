"""Replay a crash dump: run the recorded inputs again and stop at the crash (or N instructions
before it), leaving the machine paused there, and check that it is the same crash.

`start_replay` gives a `ReplaySession`: the paused machine (a debugger can take it over), and
at the crash itself every difference from the dump: the instruction count, each register and
the digest of the process's memory. A difference is reported, never ignored.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emu.costmodel import CPU_NAMES, DEFAULT_MODEL
from emu.dumpfile import PAYLOAD_ERRORS, Dump, DumpError, check_images, load_dump, malformed
from emu.gdbstub.target import Debugger
from emu.trace import Trace
from emu.world import DumpRequest, PausedMachine, RunOutcome, RunRequest, load_world


@dataclass
class ReplaySession:
    dump: Dump
    outcome: RunOutcome
    stop_before: int
    """How many instructions before the crash the machine stopped (0: at the crash)."""
    mismatches: list[str] = field(default_factory=list)

    @property
    def paused(self) -> PausedMachine | None:
        return self.outcome.paused

    @property
    def reproduced(self) -> bool:
        return not self.mismatches


def _scenario_argument(label: str, scenario: dict[str, Any] | None, folder: Path) -> str | None:
    """The scenario to run: a built-in by name, the recorded file if unchanged, else its
    recorded text in a file of the same name in `folder`."""
    if scenario is None:
        return None
    if "name" in scenario:
        return str(scenario["name"])
    path = Path(scenario["path"])
    try:
        if hashlib.sha256(path.read_bytes()).hexdigest() == scenario["sha256"]:
            return str(path)
    except OSError:
        pass
    copy = folder / (path.name or "scenario.toml")
    copy.write_text(scenario["text"], encoding="utf-8")
    return str(copy)


def _image_argument(label: str, image: dict[str, Any] | None) -> Path | None:
    if image is None:
        return None
    path = Path(image["path"])
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise DumpError(f"{label}: the image the run was given is missing: {path}: {exc.strerror}") from None
    if digest != image["sha256"]:
        raise DumpError(f"{label}: the image the run was given changed since the dump: {path}")
    return path


@dataclass(frozen=True)
class _Plan:
    """What the dump says to run, read (and checked) before anything runs."""

    world: str
    image: Path | None
    procd: Path | None
    scenario: dict[str, Any] | None
    cpu: str
    limit: int
    stop_at: str | None
    crash_at: int


def _plan(label: str, dump: Dump, stop_before: int) -> _Plan:
    check_images(label, dump)
    inputs = dump.payload["replay"]
    crash_at = int(dump.payload["clock"]["icount"])
    if stop_before < 0 or stop_before >= crash_at:
        raise DumpError(f"{label}: --stop-before {stop_before}: the crash came at instruction {crash_at}")
    limit = crash_at - stop_before if stop_before else int(inputs["max_instructions"])
    image = _image_argument(label, inputs.get("image"))
    procd = _image_argument(label, inputs.get("procd"))
    stop_at = None if stop_before else dump.id
    cpu = inputs.get("cpu", DEFAULT_MODEL)  # dumps from before --cpu ran on the default
    if cpu not in CPU_NAMES:
        raise DumpError(f"{label}: the run's CPU model {cpu!r} is not one of {', '.join(CPU_NAMES)}")
    return _Plan(str(inputs["world"]), image, procd, inputs.get("scenario"), cpu, limit, stop_at, crash_at)


def start_replay(path: Path | str, stop_before: int = 0, debugger: Debugger | None = None) -> ReplaySession:
    """Replay the dump at `path` (with `debugger`, a gdb server, attached from the first
    instruction); raises DumpError (exit 2) for a dump that cannot be replayed."""
    label = str(path)
    dump = load_dump(path)
    try:
        plan = _plan(label, dump, stop_before)
    except PAYLOAD_ERRORS as exc:
        raise malformed(label, exc) from None
    world = load_world(plan.world)
    with tempfile.TemporaryDirectory(prefix="emu-replay-") as folder:
        try:
            scenario = _scenario_argument(label, plan.scenario, Path(folder))
        except PAYLOAD_ERRORS as exc:
            raise malformed(label, exc) from None
        request = RunRequest(
            plan.image,
            plan.limit,
            scenario=scenario,
            procd=plan.procd,
            debugger=debugger,
            dumps=DumpRequest(None, plan.stop_at),
            cpu=plan.cpu,
        )
        outcome = world.run(request, Trace(keep=False))
    session = ReplaySession(dump, outcome, stop_before)
    session.mismatches = _check_crash(session) if not stop_before else _check_stop(session, plan.crash_at - stop_before)
    return session


def _check_stop(session: ReplaySession, expected: int) -> list[str]:
    paused = session.paused
    if paused is None or paused.icount != expected:
        got = "nothing" if paused is None else f"instruction {paused.icount}"
        return [f"the run stopped at {got} ({session.outcome.stop}), not at instruction {expected}"]
    return []


def _check_crash(session: ReplaySession) -> list[str]:
    """Every difference between the crash the replay reached and the dump's."""
    dump, captured = session.dump, session.outcome.captured
    if captured is None:
        return [f"the replay never reached the crash (it ended: {session.outcome.stop}: {session.outcome.detail})"]
    problems = []
    want, got = dump.payload["clock"]["icount"], captured["clock"]["icount"]
    if want != got:
        problems.append(f"the crash came at instruction {got}, the dump's at {want}")
    for name, value in dump.registers.items():
        now = captured["registers"].get(name)
        if now != value:
            shown = "missing" if now is None else f"{now:#x}"
            problems.append(f"{name} is {shown}, the dump has {value:#x}")
    for name, value in dump.payload.get("vector_registers", {}).items():
        if captured["vector_registers"].get(name) != value:
            problems.append(f"{name} is {captured['vector_registers'].get(name)!r}, the dump has {value:#x}")
    if captured["memory"]["digest"] != dump.payload["memory"]["digest"]:
        problems.append("the process's memory differs from the dump's (memory digest)")
    return problems
