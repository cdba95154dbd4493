"""Campaigns on several processes: one `Campaign` per job, one shared example database.

Each job fuzzes from its own seed (the campaign's seed plus its number) and shares its corpus
through the database; every half second it sends the parent what it has done and the blocks it
covered, and each new failure as soon as it is shrunk. The parent adds the jobs' work up, unions
their coverage and saves each failure once, whichever job found it.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.queues import Queue
from pathlib import Path

from procd_model.cpu_model import DEFAULT_CPU
from procd_model.fuzz.campaign import Campaign, Failure, Progress
from procd_model.fuzz.database import open_database
from procd_model.fuzz.target import ProcdTarget

REPORT_EVERY = 0.5
"""Seconds between a job's progress reports."""


@dataclass(frozen=True)
class JobSpec:
    """What one job needs to start (sent to a fresh process, so plain data)."""

    number: int
    seed: int
    procd: Path | None
    database: str | None
    examples: int | None
    seconds: float | None
    cpu: str = DEFAULT_CPU


@dataclass(frozen=True)
class JobReport:
    number: int
    progress: Progress
    coverage: bytes
    failure: Failure | None = None
    done: bool = False
    error: str | None = None
    """Why the job ended early (an exception of the emulator itself): one line."""


def _job(spec: JobSpec, out: Queue[JobReport]) -> None:
    """One job, reporting to `out`; whatever ends it early is reported as its error, one line."""
    try:
        _fuzz(spec, out)
    except Exception as exc:  # a bug of the emulator or the model: reported, never a silent end
        out.put(JobReport(spec.number, Progress(), b"", done=True, error=f"{type(exc).__name__}: {exc}"))


def _fuzz(spec: JobSpec, out: Queue[JobReport]) -> None:
    from emu.elf import load_elf

    image = load_elf(spec.procd, "procd") if spec.procd is not None else None
    target = ProcdTarget(image, cpu=spec.cpu)
    campaign = Campaign(target, spec.seed, open_database(spec.database))
    last = 0.0

    def report(progress: Progress, failure: Failure | None = None, done: bool = False) -> None:
        out.put(JobReport(spec.number, progress, bytes(target.total.hits), failure, done))

    def on_progress(progress: Progress) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= REPORT_EVERY:
            last = now
            report(progress)

    progress = campaign.run(
        examples=spec.examples,
        seconds=spec.seconds,
        on_failure=lambda failure: report(campaign.progress, failure),
        on_progress=on_progress,
    )
    report(progress, done=True)


def run_jobs(
    specs: list[JobSpec],
    on_report: Callable[[JobReport], None],
) -> list[int]:
    """Run every job in its own process until all are done; each report goes to `on_report`.
    The numbers of the jobs that ended without saying they were done (their process died)."""
    context = multiprocessing.get_context("spawn")
    out: Queue[JobReport] = context.Queue()
    workers = [context.Process(target=_job, args=(spec, out), daemon=True) for spec in specs]
    for worker in workers:
        worker.start()
    running = len(workers)
    finished: set[int] = set()
    try:
        while running:
            try:
                report = out.get(timeout=1.0)
            except queue.Empty:
                if not any(worker.is_alive() for worker in workers):
                    break
                continue
            on_report(report)
            running -= report.done
            if report.done:
                finished.add(report.number)
    finally:
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.terminate()
    return [spec.number for spec in specs if spec.number not in finished]
