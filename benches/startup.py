"""What a user waits for: `python -m emu run` on the default scenario, from a fresh interpreter.

    python3 -m benches.startup [--samples N] [--against CHECKOUT]

Each sample is a fresh interpreter that imports `emu.cli` (timed: the imports), then runs the
default scenario with its trace going nowhere (timed: the run, which loads and sweeps the images,
learns and times every block, and emulates). CPU time (time.process_time), median of N samples,
after one untimed sample per tree (which compiles its bytecode). With ``--against``, the same
samples run in another checkout of the project (with its extensions built) in turn, each side
first every other round, and each figure is also given as the median ratio this tree / that tree
of samples taken seconds apart, so that the machine's speed moves both sides alike.
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
import json, os, time
started = time.process_time()
from emu import cli
imported = time.process_time()
status = cli.main(["run", "--no-dumps", "--out", os.devnull])
done = time.process_time()
print(json.dumps({"imports": imported - started, "run": done - imported, "status": status, "from": cli.__file__}))
"""


def sample(tree: Path) -> dict[str, float]:
    """One fresh interpreter's import and run CPU seconds in checkout `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # both sides import from compiled bytecode, as users do
    done = subprocess.run(
        [sys.executable, "-c", _SAMPLE], cwd=tree, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"startup: the sample failed in {tree}: {done.stderr.strip().splitlines()[-1:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    if figures["status"] != 0:
        raise SystemExit(f"startup: the default run exited {figures['status']} in {tree}")
    if not Path(figures["from"]).resolve().is_relative_to(tree):
        raise SystemExit(f"startup: the sample in {tree} imported emu from {figures['from']}")
    return {"imports": figures["imports"], "run": figures["run"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--samples", type=int, default=9)
    parser.add_argument("--against", type=Path, help="another checkout to compare with, sample by sample")
    args = parser.parse_args(argv)
    trees = [ROOT] + ([args.against.resolve()] if args.against else [])
    samples: dict[Path, list[dict[str, float]]] = {tree: [] for tree in trees}
    for tree in trees:
        sample(tree)  # untimed: writes the bytecode caches and warms the file cache
    for round_ in range(args.samples):
        for tree in trees if round_ % 2 == 0 else trees[::-1]:  # neither side always goes first
            samples[tree].append(sample(tree))
    for what in ("imports", "run"):
        here = [s[what] for s in samples[ROOT]]
        line = f"{what:8s} {statistics.median(here) * 1000:7.1f} ms"
        if args.against:
            there = [s[what] for s in samples[trees[1]]]
            ratios = [h / t for h, t in zip(here, there, strict=True)]
            line += f"   against: {statistics.median(there) * 1000:7.1f} ms   ratio {statistics.median(ratios):.2f}x"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
