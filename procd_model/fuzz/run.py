"""`python -m emu fuzz`: a campaign against procd, on one or several processes, with live progress.

Every distinct failure is saved once in the failures folder as a replay file
(`<key>-<hash>.replay.json`, see `replayfile.py`); the exit code is 1 if the campaign found any
(or a job stopped on an error of the emulator itself, said in one line), 0 if not. The live
display (rich) shows examples per second, procd's blocks covered (of the blocks `emu.blocks`
finds in its code) and the failures.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from emu.blocks import block_starts
from emu.elf import ElfError, ElfImage, load_elf
from emu.world import FuzzRequest, InputError
from procd_model.abi import Role
from procd_model.fuzz.campaign import Failure, Progress
from procd_model.fuzz.database import DatabaseError, open_database
from procd_model.fuzz.jobs import JobReport, JobSpec, run_jobs
from procd_model.fuzz.replayfile import Replay, replay_json, sha256_of
from procd_model.fuzz.target import ProcdTarget, TargetError
from procd_model.images import boot_image_named, fixtures_dir, image_role

EXIT_CLEAN, EXIT_FOUND = 0, 1


@dataclass
class Tally:
    """The campaign's state as the parent sees it: every job's latest progress, the union of
    their coverage, and the failures saved."""

    started: float
    statics: set[int]
    begin: int
    jobs: dict[int, Progress] = field(default_factory=dict)
    covered: bytearray = field(default_factory=bytearray)
    saved: dict[str, Path] = field(default_factory=dict)

    def add(self, report: JobReport) -> None:
        self.jobs[report.number] = report.progress
        if len(self.covered) < len(report.coverage):
            self.covered.extend(bytes(len(report.coverage) - len(self.covered)))
        for i, hit in enumerate(report.coverage):
            if hit:
                self.covered[i] = 1

    @property
    def examples(self) -> int:
        return sum(p.examples for p in self.jobs.values())

    def blocks(self) -> int:
        """Blocks covered among the image's static block starts."""
        return sum(1 for i, hit in enumerate(self.covered) if hit and self.begin + i in self.statics)

    def table(self) -> Table:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        table = Table(title="procd-emu fuzz", show_header=False)
        jobs = f"{len(self.jobs)} job" + ("s" if len(self.jobs) != 1 else "")
        table.add_row("examples", f"{self.examples:,} ({self.examples / elapsed:,.0f}/s, {jobs})")
        table.add_row("corpus", f"{sum(p.corpus for p in self.jobs.values()):,}")
        table.add_row("procd blocks covered", f"{self.blocks():,} of {len(self.statics):,}")
        table.add_row("distinct failures", str(len(self.saved)))
        for key, path in sorted(self.saved.items()):
            table.add_row("", f"{key} -> {path}")
        return table


def fuzz(request: FuzzRequest) -> int:
    """Run the campaign `request` describes; the exit code."""
    image = _procd(request.procd)
    if request.database is not None:
        try:
            open_database(request.database)
        except DatabaseError as exc:
            raise InputError(str(exc)) from None
    procd_path = request.procd if request.procd is not None else fixtures_dir() / boot_image_named("procd").filename
    statics = block_starts(image)
    target = ProcdTarget(image, cpu=request.cpu)
    try:
        target.fresh()  # a procd that does not boot is bad input, found before any job starts
    except TargetError as exc:
        raise InputError(f"--procd {request.procd}: {exc}") from None
    tally = Tally(time.monotonic(), statics, target.total.begin)
    specs = [
        JobSpec(n, request.seed + n, request.procd, request.database, request.examples, request.seconds, request.cpu)
        for n in range(request.jobs)
    ]
    console = Console(stderr=True)
    errors: list[str] = []
    with Live(tally.table(), console=console, refresh_per_second=4, transient=not console.is_terminal) as live:

        def on_report(report: JobReport) -> None:
            if report.error is not None:
                errors.append(f"emu: fuzz: job {report.number} stopped: {report.error}")
                return
            tally.add(report)
            if report.failure is not None and report.failure.key not in tally.saved:
                tally.saved[report.failure.key] = save_failure(request, procd_path, report.failure)
            live.update(tally.table())

        lost = run_jobs(specs, on_report)
    console.print(tally.table())
    errors += [f"emu: fuzz: job {number} ended without finishing (its process died)" for number in lost]
    for line in errors:
        print(line, file=sys.stderr)
    for key, path in sorted(tally.saved.items()):
        print(f"emu: fuzz: {key}: replay with python -m emu replay {path}", file=sys.stderr)
    return EXIT_FOUND if tally.saved or errors else EXIT_CLEAN


def _procd(path: Path | None) -> ElfImage:
    if path is None:
        return ProcdTarget().image
    try:
        image = load_elf(path, "procd")
    except (ElfError, OSError) as exc:
        raise InputError(f"--procd {path}: {exc}") from None
    if image_role(image) is not Role.PROCD:
        raise InputError(f"--procd {path}: not a procd image (its image note does not say role PROCD)")
    return image


def failure_name(key: str) -> str:
    """A file name for a failure key: readable, unique by a hash of the whole key."""
    slug = re.sub(r"[^A-Za-z0-9_.+-]+", "-", key).strip("-")[:80]
    return f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:10]}.replay.json"


def save_failure(request: FuzzRequest, procd_path: Path, failure: Failure) -> Path:
    """Write the failure's replay file (atomically; one already there is kept); its path."""
    folder = request.failures
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / failure_name(failure.key)
    replay = Replay(
        failure.key,
        failure.message,
        procd_path.resolve(),
        sha256_of(procd_path),
        failure.steps,
        request.seed,
        failure.found_after,
        request.cpu,
    )
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=".replay-")
    try:
        with os.fdopen(descriptor, "w") as out:
            out.write(replay_json(replay))
        os.link(temporary, path)  # never replaces a replay file already there
    except FileExistsError:
        return path  # saved by an earlier campaign, with its dump
    finally:
        os.unlink(temporary)
    if failure.key.split(":", 1)[0] in PROCD_CRASHES:
        image = load_elf(procd_path, "procd") if request.procd is not None else None
        for dump in ProcdTarget(image, cpu=request.cpu).dump(failure.steps, folder, path):
            print(f"emu: fuzz: {failure.key}: crash dump written: {dump}", file=sys.stderr)
    return path


PROCD_CRASHES = ("fault", "panic", "exit")
"""Failure kinds where procd itself crashed: their replay file comes with procd's crash dump."""
