"""Folded stacks (Brendan Gregg's format) of cycles per call stack, for flamegraph.pl, inferno,
speedscope or https://www.speedscope.app.

One line per stack: frames root first, joined by ";", a space, then the whole cycles spent in
that stack. Costs are summed in millicycles per stack first and then rounded down, so each line
loses less than one cycle; stacks under one cycle are left out. Time in which nothing ran is one
`[idle]` line, so a flame graph's width is guest work plus idle time (kernel work is in neither).
Lines are sorted, so the same profile always gives the same file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

from emu.events import MILLICYCLES_PER_CYCLE
from emu.export import idle_intervals, write_text_atomic
from emu.export.registry import Destination, Exporter, RunView, register
from emu.profile import StackProfiler
from emu.trace import Event

IDLE_FRAME = "[idle]"
"""The one-frame stack of the time nothing ran (the run's `sched.idle` intervals)."""


class StackProfile(Protocol):
    """What `write_folded` needs of a profiler (emu.profile.StackProfiler is one)."""

    def stacks(self, process_names: Mapping[int, str] | None = None) -> dict[tuple[str, ...], int]:
        """Root-first frame tuples -> millicycles."""
        ...


def folded_lines(stacks: Mapping[tuple[str, ...], int]) -> list[str]:
    """`frame;frame;... cycles` lines, sorted, for stacks of at least one whole cycle."""
    lines = []
    for frames, millicycles in stacks.items():
        cycles = millicycles // MILLICYCLES_PER_CYCLE
        if cycles > 0:
            lines.append(f"{';'.join(frames)} {cycles}")
    return sorted(lines)


def render_folded(
    profile: StackProfile, process_names: Mapping[int, str] | None = None, events: Iterable[Event] = ()
) -> str:
    """The profile's stacks, plus one `[idle]` stack for the idle intervals among `events`."""
    stacks = dict(profile.stacks(process_names))
    idle = sum(until - event.cycle for event, until in idle_intervals(events))
    if idle:
        stacks[(IDLE_FRAME,)] = stacks.get((IDLE_FRAME,), 0) + idle * MILLICYCLES_PER_CYCLE
    lines = folded_lines(stacks)
    return "".join(line + "\n" for line in lines)


def write_folded(
    profile: StackProfile,
    path: Path | str,
    process_names: Mapping[int, str] | None = None,
    events: Iterable[Event] = (),
) -> None:
    """Write `profile` as folded stacks to `path` (atomically). `process_names` (pid -> name)
    replaces the profiler's own names for the first frame; `events` give the idle time."""
    write_text_atomic(path, render_folded(profile, process_names, events))


def _export(run: RunView) -> str:
    assert isinstance(run.probe, StackProfiler)  # make_probe made it
    return render_folded(run.probe, run.names, run.events)


register(
    Exporter(
        "--folded",
        "profile cycles per guest call stack and write folded stacks to FILE (flame graphs)",
        Destination.FILE,
        _export,
        rank=30,
        make_probe=StackProfiler,
    )
)
