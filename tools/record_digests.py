"""Record the trace digest of every shipped scenario and of every committed image run alone.

`tests/test_digests.py` holds the recorded digests: a change that keeps behaviour (a redesign)
leaves every one of them byte-identical. A commit that changes behaviour on purpose re-records
them with `python tools/record_digests.py` and says so in its message.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

from emu.cli import main as emu_main
from procd_model.images import fixtures_dir
from procd_model.scenario import builtin_scenarios

DIGESTS = Path(__file__).resolve().parent.parent / "tests" / "data" / "digests.json"


def run_digest(args: list[str]) -> str:
    """The digest in the summary of `python -m emu run ARGS` (its exit code does not matter here)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "trace.jsonl"
        with contextlib.redirect_stderr(io.StringIO()):
            emu_main(["run", *args, "--trace", "none", "--format", "jsonl", "--out", str(out), "--no-dumps"])
        summary = json.loads(out.read_text().splitlines()[-1])
    digest = summary["digest"]
    assert isinstance(digest, str)
    return digest


def current_digest_runs() -> list[str]:
    """The runs held: `scenario NAME` for each shipped scenario, `image FILE` for each committed image."""
    runs = [f"scenario {s.name}" for s in builtin_scenarios()]
    return runs + [f"image {image.name}" for image in sorted(fixtures_dir().glob("*.elf"))]


def digest_of(run: str) -> str:
    """The digest of one run named as `current_digest_runs` names it."""
    kind, name = run.split(" ", 1)
    return run_digest(["--scenario", name] if kind == "scenario" else [str(fixtures_dir() / name)])


def main() -> int:
    DIGESTS.parent.mkdir(parents=True, exist_ok=True)
    digests = {run: digest_of(run) for run in current_digest_runs()}
    DIGESTS.write_text(json.dumps(digests, indent=2) + "\n")
    print(f"recorded {DIGESTS.name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
