"""A scenario object run twice in one process gives the same trace and the same verdict: no
state of one run (crashd's records, its sequence numbers) leaks into the next."""

from __future__ import annotations

import pytest

from emu.trace import Trace
from procd_model.scenario import load_scenario
from procd_model.world import run_scenario


@pytest.mark.parametrize("name", ["phase0-fault-kill", "restart-storm"])
def test_the_same_scenario_object_runs_the_same_twice(name: str) -> None:
    scenario = load_scenario(name)
    runs = []
    for _ in range(2):
        trace = Trace()
        outcome = run_scenario(trace, scenario, 50_000_000)
        runs.append((outcome.ok, outcome.detail, trace.digest()))
    assert runs[0][0], runs[0][1]
    assert runs[1] == runs[0]
