"""Fuzzing rates, as ratios measured in one run.

    python3 -m benches.fuzz [--json] [--examples N] [--seconds S]

- machine reference: bare-Unicorn reject round trips per second (benches.spawn's floor) just
  before and after the single rate, the faster counting: how fast the machine ran then;
- single: `Campaign` examples per second (CPU time) when every example is one step (the first
  its input decodes to: mostly a spawn or a request) on procd restored from its post-boot snapshot
  (an input that decodes to no step is not counted), over the campaign's second N examples (warm),
  and over its first N (cold: the once-per-process sweeps of the images children run and the
  learning of each procd block on its first run fall there);
- lifecycle: the same with the campaign's own lifecycle examples (up to 16 steps), warm and cold;
- jobs: the campaign on 2 processes against 1 (as `python -m emu fuzz --jobs N` runs them),
  examples per wall second from each job's first progress report to its last, and their ratio
  (one job is measured before and after the two, and the faster of those counts);
- given: a `@given` property test that sends one request per example, against Hypothesis's own
  rate for an empty test body, and their ratio.
The machine is noisy: compare the ratios, which come from one run.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from hypothesis import HealthCheck, given, settings

from procd_model.fuzz.campaign import Campaign, Decoder, first_step_only
from procd_model.fuzz.decode import decode_steps
from procd_model.fuzz.jobs import JobReport, JobSpec, run_jobs
from procd_model.fuzz.target import ProcdTarget, one_request
from procd_model.strategies import LifecycleStep


def campaign_rates(decode: Decoder, examples: int) -> tuple[float, float]:
    """Examples that ran procd per CPU second of one campaign (inputs that decode to no step are
    run too but not counted): over its first `examples` after the boot (cold: each image a child
    runs is swept and each procd block learned on first use, once per process), and over the
    next `examples` (warm: what the rest of a campaign runs at)."""
    campaign = Campaign(ProcdTarget(), seed=1, decode=decode)
    campaign.run(examples=1)  # the boot
    rates = []
    for _ in range(2):
        invalid_before, done = campaign.progress.invalid, campaign.progress.examples
        start = time.process_time()
        progress = campaign.run(examples=done + examples)
        seconds = time.process_time() - start
        rates.append((examples - (progress.invalid - invalid_before)) / seconds)
    return rates[0], rates[1]


def jobs_rate(jobs: int, seconds: float) -> float:
    """Examples per wall second of `jobs` processes fuzzing for `seconds`, counted from each job's
    first progress report to its last (process start and boot left out)."""
    seen: dict[int, list[tuple[float, int]]] = {}

    def on_report(report: JobReport) -> None:
        seen.setdefault(report.number, []).append((time.monotonic(), report.progress.examples))

    with TemporaryDirectory() as folder:
        specs = [JobSpec(n, n, None, str(Path(folder) / "db"), None, seconds) for n in range(jobs)]
        run_jobs(specs, on_report)
    rate = 0.0
    for reports in seen.values():
        (start, first), (end, last) = reports[0], reports[-1]
        rate += (last - first) / (end - start) if end > start else 0.0
    return rate


def given_rates(examples: int) -> tuple[float, float]:
    """(examples/s of a @given test sending one request, of an empty @given test)."""
    target = ProcdTarget()
    quick = settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))

    @quick
    @given(one_request())
    def one(request: Any) -> None:
        target.check([LifecycleStep("request", request)])

    @quick
    @given(one_request())
    def empty(request: Any) -> None:
        pass

    return _rate(one, examples), _rate(empty, examples)


def _rate(test: Callable[[], None], examples: int) -> float:
    start = time.process_time()
    test()
    return examples / (time.process_time() - start)


def machine_reference() -> float:
    """Bare-Unicorn reject round trips per CPU second (benches.spawn's floor), sampled next to the
    single-request rate: how fast this machine runs right now, for reading the absolute rates
    (a shared machine's speed moves by tens of percent from minute to minute)."""
    from benches.spawn import REJECT_IMAGE, floor_sampler, spawn_request

    return floor_sampler(spawn_request(REJECT_IMAGE))()


def measure(examples: int, seconds: float) -> dict[str, Any]:
    reference_before = machine_reference()
    single_cold, single = campaign_rates(first_step_only, examples)
    reference = max(reference_before, machine_reference())
    lifecycle_cold, lifecycle = campaign_rates(decode_steps, examples)
    # one job before and after two, the faster counting: a noisy spell cannot flatter the ratio
    before, two_jobs, after = jobs_rate(1, seconds), jobs_rate(2, seconds), jobs_rate(1, seconds)
    one_job = max(before, after)
    with_procd, empty = given_rates(examples)
    return {
        "single_request_examples_per_s": round(single, 1),
        "single_request_cold_examples_per_s": round(single_cold, 1),
        "machine_reference_floor_rejects_per_s": round(reference),
        "lifecycle_examples_per_s": round(lifecycle, 1),
        "lifecycle_cold_examples_per_s": round(lifecycle_cold, 1),
        "jobs_1_examples_per_s": round(one_job, 1),
        "jobs_2_examples_per_s": round(two_jobs, 1),
        "jobs_2_over_1": round(two_jobs / one_job, 2),
        "given_one_request_per_s": round(with_procd, 1),
        "given_empty_body_per_s": round(empty, 1),
        "given_ratio": round(with_procd / empty, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--examples", type=int, default=2000, help="examples per rate (default: 2000)")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds per --jobs run (default: 15)")
    args = parser.parse_args(argv)
    figures = measure(args.examples, args.seconds)
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name:34} {value:>10}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
