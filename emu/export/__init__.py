"""Renderings of a finished run for other tools: Perfetto timelines, statistics tables, folded stacks.

Everything here reads `emu.trace.Event`s (or a profiler's samples) after the run and never changes
a count. Each exporter is one module that registers itself (`emu.export.registry`); the CLI makes
an option of each. Conventions shared by the exporters: the kernel's pid is `emu.events.KERNEL_PID`,
a process's name is the `name` of its `process.create` event, what the model declares about its
events comes as `emu.events.ModelFacts`, and files are written through `emu.output` (a regular file
appears only when complete).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from emu.events import IDLE_NAME, IDLE_PID, KERNEL_NAME, KERNEL_PID, PROCESS_CREATE, SCHED_IDLE, SUMMARY
from emu.output import write_output
from emu.trace import Event


def idle_intervals(events: Iterable[Event]) -> list[tuple[Event, int]]:
    """Each `sched.idle` event with the cycle its idle interval ends."""
    out = []
    for event in events:
        if event.kind == SCHED_IDLE:
            until = event.fields.get("until")
            out.append((event, until if isinstance(until, int) and until >= event.cycle else event.cycle))
    return out


def process_names(events: Iterable[Event], overrides: Mapping[int, str] | None = None) -> dict[int, str]:
    """pid -> name: the first `process.create` name of each pid, then names from the summary's
    process list for pids the trace did not show being created; `overrides` win over both."""
    names: dict[int, str] = {}
    listed: dict[int, str] = {}
    for event in events:
        if event.kind == PROCESS_CREATE and event.pid not in names and isinstance(event.fields.get("name"), str):
            names[event.pid] = event.fields["name"]
        elif event.kind == SUMMARY:
            for row in event.fields.get("processes") or ():
                if isinstance(row, dict) and isinstance(row.get("pid"), int) and isinstance(row.get("name"), str):
                    listed.setdefault(row["pid"], row["name"])
    for pid, name in listed.items():
        names.setdefault(pid, name)
    if overrides:
        names.update(overrides)
    return names


def name_of(pid: int, names: Mapping[int, str]) -> str:
    """The display name of `pid`: its known name, "kernel" for pid 0, "idle" for IDLE_PID, else "pid N"."""
    if pid in names:
        return names[pid]
    return {KERNEL_PID: KERNEL_NAME, IDLE_PID: IDLE_NAME}.get(pid, f"pid {pid}")


def write_text_atomic(path: Path | str, text: str) -> None:
    """Write `text` (UTF-8) to `path` as `emu.output` writes every output: a regular file appears
    whole or not at all, a FIFO or device is streamed to, and nothing is replaced that is not a
    regular file."""
    write_output("output", path, text.encode("utf-8"))
