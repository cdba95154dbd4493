"""The exporters the CLI offers: each module in `emu.export` registers its own, and `python -m emu
run` makes one option per registered exporter, so a new exporter is one module.

An exporter renders a finished run (`RunView`) to text. Its destination is either a FILE named by
its option (written through `emu.output`'s safe outputs, like the trace) or a report printed after
the run (to stdout when the trace goes elsewhere, else to stderr).
"""

from __future__ import annotations

import enum
import importlib
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from emu.events import ModelFacts
from emu.trace import Event
from emu.world import Instrument


class Destination(enum.Enum):
    FILE = "file"
    """`--OPTION FILE`: the rendering is written to FILE."""
    REPORT = "report"
    """`--OPTION`: the rendering is printed after the run."""


@dataclass(frozen=True)
class RunView:
    """What an exporter reads of a finished run."""

    events: Sequence[Event]
    """The run's stream and the summary (see `emu.trace.Trace.events`)."""
    frequency_hz: int
    names: Mapping[int, str]
    """pid -> display name (`emu.export.process_names`)."""
    model: ModelFacts
    """What the world declared about its events."""
    probe: Instrument | None = None
    """The exporter's own probe (its `make_probe()`), after it watched every guest."""


@dataclass(frozen=True)
class Exporter:
    option: str
    """The command-line option, e.g. "--perfetto"."""
    help: str
    destination: Destination
    render: Callable[[RunView], str]
    rank: int
    """Where the option is listed in `--help` among the exporters' (lowest first)."""
    make_probe: Callable[[], Instrument] | None = None
    """For exporters that watch the guests as they run (a profiler): one probe per run."""

    @property
    def dest(self) -> str:
        """The argparse attribute the option sets."""
        return self.option.lstrip("-").replace("-", "_")


_REGISTERED: dict[str, Exporter] = {}


def register(exporter: Exporter) -> Exporter:
    """Offer `exporter` (called by its module on import); an option may be registered once."""
    known = _REGISTERED.get(exporter.option)
    if known is not None and known != exporter:
        raise ValueError(f"exporter option {exporter.option} is registered twice")
    _REGISTERED[exporter.option] = exporter
    return exporter


def exporters() -> list[Exporter]:
    """Every exporter of the `emu.export` package, in their `--help` order."""
    package = importlib.import_module("emu.export")
    for module in sorted(info.name for info in pkgutil.iter_modules(package.__path__)):
        importlib.import_module(f"emu.export.{module}")
    return sorted(_REGISTERED.values(), key=lambda exporter: (exporter.rank, exporter.option))
