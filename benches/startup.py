"""What a user waits for, from a fresh interpreter: `python -m emu run` on the default scenario,
and procd booting and serving 1000 requests (benches.clock's request loop) with the clock on.

    python3 -m benches.startup [--samples N] [--against CHECKOUT]

Each sample is a fresh interpreter that imports `emu.cli` (timed: the imports), then runs one
workload (timed: the run, which loads and sweeps the images, learns and times every block, and
emulates): the default scenario with its trace going nowhere, or the request loop. CPU time
(time.process_time), median of N samples, after one untimed sample per tree and workload (which
compiles its bytecode). With ``--against``, the same samples run in another checkout of the
project (with its extensions built) in turn, each side first every other round, and each figure
is also given as the median ratio this tree / that tree of samples taken seconds apart, so that
the machine's speed moves both sides alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_SAMPLE = """
import json, os, sys, time
started = time.process_time()
from emu import cli
imported = time.process_time()
if sys.argv[1] == "default":
    status = cli.main(["run", "--no-dumps", "--out", os.devnull])
else:
    from benches.clock import _world_run
    status = 0 if _world_run(None, "none", None, 1000)["seconds"] > 0 else 1
done = time.process_time()
print(json.dumps({"imports": imported - started, "run": done - imported, "status": status, "from": cli.__file__}))
"""
WORKLOADS = ("default", "requests")


def sample(tree: Path, workload: str) -> dict[str, float]:
    """One fresh interpreter's import and `workload` CPU seconds in checkout `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # both sides import from compiled bytecode, as users do
    env.pop("EMU_ACCOUNTING", None)
    done = subprocess.run(
        [sys.executable, "-c", _SAMPLE, workload], cwd=tree, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"startup: the {workload} sample failed in {tree}: {done.stderr.strip().splitlines()[-1:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    if figures["status"] != 0:
        raise SystemExit(f"startup: the {workload} run exited {figures['status']} in {tree}")
    if not Path(figures["from"]).resolve().is_relative_to(tree):
        raise SystemExit(f"startup: the sample in {tree} imported emu from {figures['from']}")
    return {"imports": figures["imports"], workload: figures["run"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--samples", type=int, default=9)
    parser.add_argument("--against", type=Path, help="another checkout to compare with, sample by sample")
    args = parser.parse_args(argv)
    trees = [ROOT] + ([args.against.resolve()] if args.against else [])
    samples: dict[Path, dict[str, list[float]]] = {tree: {} for tree in trees}
    for tree in trees:
        for workload in WORKLOADS:
            sample(tree, workload)  # untimed: writes the bytecode caches and warms the file cache
    for round_ in range(args.samples):
        for tree in trees if round_ % 2 == 0 else trees[::-1]:  # neither side always goes first
            for workload in WORKLOADS:
                for what, seconds in sample(tree, workload).items():
                    samples[tree].setdefault(what, []).append(seconds)
    for what, label in (("imports", "imports"), ("default", "default run"), ("requests", "1000 requests")):
        here = samples[ROOT][what]
        line = f"{label:14s} {statistics.median(here) * 1000:7.1f} ms"
        if args.against:
            there = samples[trees[1]][what]
            ratios = [h / t for h, t in zip(here, there, strict=True)]
            line += f"   against: {statistics.median(there) * 1000:7.1f} ms   ratio {statistics.median(ratios):.2f}x"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
