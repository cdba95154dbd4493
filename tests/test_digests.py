"""Every shipped scenario and every committed image run alone keeps its recorded trace digest.

A redesign keeps behaviour, so it leaves these byte-identical. A commit that changes behaviour on
purpose re-records them (`python tools/record_digests.py`) and says so in its message.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import record_digests  # noqa: E402

RECORDED: dict[str, str] = json.loads(record_digests.DIGESTS.read_text())


def test_every_scenario_and_image_is_recorded() -> None:
    assert list(RECORDED) == list(record_digests.current_digest_runs())


@pytest.mark.parametrize("run", list(RECORDED))
def test_the_trace_digest_is_unchanged(run: str) -> None:
    assert record_digests.digest_of(run) == RECORDED[run], f"{run}: the trace changed (see this module's docstring)"
