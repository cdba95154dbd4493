"""How soon a campaign finds each planted bug, and what a campaign covers.

    python3 -m benches.planted [--json] [--seed S] [--limit N] [--coverage-seconds T]

For each procd variant with a planted bug (`fixtures/elf/procd-<bug>.elf`, built from the same
source behind a cargo feature), a campaign from seed S runs until its first failure (at most N
examples): the examples it took, the CPU seconds to find it and to shrink it, and its key. The
committed procd then runs N examples and must show no failure. With `--coverage-seconds T`, a
campaign against the committed procd runs T seconds of wall time and reports the blocks of procd
it covered against all of procd's blocks (found statically, `emu.blocks`).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from emu.blocks import block_starts
from emu.elf import load_elf
from procd_model.fuzz.campaign import Campaign, Failure
from procd_model.fuzz.target import ProcdTarget
from procd_model.images import fixtures_dir

BUGS = (
    "missing-badge-check",
    "wider-rights",
    "generation-stuck",
    "length-off-by-one",
    "panic",
    "restart-count-never-resets",
)


def time_to_find(bug: str, seed: int, limit: int) -> dict[str, Any]:
    """Run a campaign against procd-<bug> until its first failure; what it took."""
    image = load_elf(fixtures_dir() / f"procd-{bug}.elf", "procd")
    campaign = Campaign(ProcdTarget(image), seed)
    found: list[tuple[Failure, float]] = []
    started = time.process_time()
    campaign.run(examples=limit, until_failures=1, on_failure=lambda f: found.append((f, time.process_time())))
    if not found:
        return {"bug": bug, "found": False, "examples": campaign.progress.examples}
    failure, at = found[0]
    return {
        "bug": bug,
        "found": True,
        "examples": failure.found_after,
        "cpu_seconds_incl_shrinking": round(at - started, 2),
        "key": failure.key,
    }


def clean_run(seed: int, examples: int) -> dict[str, Any]:
    """The committed procd under `examples` examples: the failures found (none expected)."""
    progress = Campaign(ProcdTarget(), seed).run(examples=examples)
    return {"examples": progress.examples, "failures": list(progress.failures)}


def coverage(seed: int, seconds: float) -> dict[str, Any]:
    """A campaign against the committed procd for `seconds`: its examples and blocks covered."""
    target = ProcdTarget()
    progress = Campaign(target, seed).run(seconds=seconds)
    every = len(block_starts(target.image))
    return {
        "seconds": seconds,
        "examples": progress.examples,
        "blocks_covered": progress.blocks,
        "blocks_in_procd": every,
        "failures": list(progress.failures),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seed", type=int, default=0, help="campaign seed (default: 0, as the CI test)")
    parser.add_argument("--limit", type=int, default=10_000, help="most examples per campaign (default: 10000)")
    parser.add_argument("--coverage-seconds", type=float, default=0.0, help="also run a coverage campaign this long")
    args = parser.parse_args(argv)
    figures: dict[str, Any] = {
        "planted": [time_to_find(bug, args.seed, args.limit) for bug in BUGS],
        "committed_procd": clean_run(args.seed, min(args.limit, 1000)),
    }
    if args.coverage_seconds > 0:
        figures["coverage"] = coverage(args.seed + 1, args.coverage_seconds)
    if args.json:
        print(json.dumps(figures))
        return 0
    for row in figures["planted"]:
        print(json.dumps(row))
    print("committed procd:", json.dumps(figures["committed_procd"]))
    if "coverage" in figures:
        print("coverage:", json.dumps(figures["coverage"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
