"""The interface between the generic emulator and a modelled world that plugs into it.

A world is a module with `run(request, trace) -> RunOutcome`. The CLI loads it by name
(`--world`, default `procd_model.world`), so `emu` itself never imports a particular OS model.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

from emu.cpu import GuestCpu
from emu.elf import ElfImage
from emu.events import KERNEL_PID, NO_FACTS, SUMMARY, ModelFacts
from emu.gdbstub.target import Debugger
from emu.trace import Trace

DEFAULT_WORLD = "procd_model.world"


Instrument = Callable[[GuestCpu, ElfImage, int], None]
"""Called with each new guest's CPU, image and pid before it runs (trace probes, profilers)."""


class InputError(Exception):
    """Bad input from the user (an image, a scenario): exit 2 with this one-line message."""


@dataclass(frozen=True)
class DumpRequest:
    """What the world does on a guest crash (see docs/dump-format.md)."""

    folder: Path | None = None
    """Write a dump file of each crash here (None: write none; crashes are still named)."""
    stop_at: str | None = None
    """Stop the machine at the crash with this dump id, leaving it as it is (a replay)."""


class PausedMachine(Protocol):
    """A world's machine stopped where a replay asked (read by emu/replay.py; a debugger may
    take it over)."""

    @property
    def icount(self) -> int:
        """Instructions the whole machine retired."""
        ...

    def registers(self, pid: int) -> dict[str, int] | None:
        """Process `pid`'s registers, if it is a guest whose machine still exists."""
        ...

    def memory_digest(self, pid: int) -> str | None:
        """The digest (emu.dumpfile.memory_digest) of what a dump of `pid` would hold."""
        ...


@dataclass(frozen=True)
class RunRequest:
    image: Path | None
    """An image to run; None for the world's default scenario."""
    max_instructions: int
    instrument: Instrument | None = None
    scenario: str | None = None
    """A scenario the world knows by name, or a scenario file."""
    procd: Path | None = None
    """A procd build to run in the scenario instead of the world's own (`--procd`)."""
    debugger: Debugger | None = None
    """A gdb server (`--gdb`) the world's run loop stops for (emu/gdbstub/target.py)."""
    dumps: DumpRequest = DumpRequest()
    cpu: str = "skylake"
    """The CPU model the guests run on (one of emu.costmodel.CPU_NAMES)."""


@dataclass(frozen=True)
class RunOutcome:
    ok: bool
    """True when the scenario completed as expected."""
    stop: str
    """Why the machine stopped: "completed", "idle", "instruction-limit", "halted", ..."""
    detail: str
    processes: list[dict[str, Any]] = field(default_factory=list)
    instructions: int = 0
    frequency_hz: int = 1_000_000_000
    """Virtual cycles per second of the run's clock (for exports on a time axis)."""
    model: ModelFacts = NO_FACTS
    """What the world's model declares about its events (for the exporters)."""
    dumps: tuple[Path, ...] = ()
    """The dump files written, in order."""
    paused: PausedMachine | None = None
    """The machine, left as it stopped (for a replay)."""
    captured: dict[str, Any] | None = None
    """The payload of the crash the machine stopped at (`DumpRequest.stop_at`)."""


def emit_summary(trace: Trace, outcome: RunOutcome) -> None:
    """The last event of every trace: how the run ended, and the digest of everything before."""
    trace.emit(
        SUMMARY,
        KERNEL_PID,
        stop=outcome.stop,
        ok=outcome.ok,
        detail=outcome.detail,
        instructions=outcome.instructions,
        processes=outcome.processes,
        digest=trace.digest(),
    )


class World(Protocol):
    def run(self, request: RunRequest, trace: Trace) -> RunOutcome: ...

    def scenarios(self) -> list[tuple[str, str]]:
        """(name, one-line description) of the scenarios the world ships."""
        ...

    def input_files(self, scenario: str | None = None) -> list[Path]:
        """Files a run may read besides IMAGE and a scenario file (its committed images, its
        scenarios, files `scenario` names): outputs must never overwrite them."""
        ...


def load_world(name: str) -> World:
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        raise InputError(f"cannot load world {name!r}: {exc}") from None
    for function in ("run", "scenarios", "input_files"):
        if not callable(getattr(module, function, None)):
            raise InputError(f"world {name!r} has no {function}() function (see emu/world.py)")
    return cast(World, module)


@dataclass(frozen=True)
class FuzzRequest:
    """A fuzzing campaign (`python -m emu fuzz`), for a world that has a `fuzz` function."""

    seconds: float | None
    """Stop after this much host time (None: only the example budget stops it)."""
    examples: int | None
    """Stop each job after this many examples (None: only the time stops it)."""
    jobs: int
    seed: int
    procd: Path | None
    """The image under test (None: the world's own)."""
    database: str | None
    """Where the corpus and failures are shared: a folder or redis://HOST:PORT (None: nowhere)."""
    failures: Path
    """Where each distinct failure's replay file goes."""
    cpu: str = "skylake"
    """The CPU model of the virtual clock (`emu.costmodel.CPU_NAMES`)."""
