"""procd_model.strategies: each strategy draws what it promises, and procd holds its contract
on every draw (exactly one defined status per request, as the executable spec says)."""

from __future__ import annotations

import contextlib
import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emu.trace import Trace
from procd_model.abi import BADGE_ROOTD, SPAWN_SERVICE_REQUEST, Status
from procd_model.client import Request
from procd_model.harness import (
    CHILD_BADGES,
    FOREIGN_BADGES,
    agree,
    reply_status,
    run_lifecycle,
    talk_to_procd,
)
from procd_model.messages import Message
from procd_model.scenario import Scenario
from procd_model.strategies import (
    WRONG_FIELDS,
    LifecycleStep,
    NearValid,
    arbitrary_requests,
    boot_manifests,
    callers,
    lifecycle_sequences,
    near_valid_spawns,
    valid_spawns,
)
from procd_model.world import run_scenario

FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FEW
@given(request=valid_spawns())
def test_a_valid_spawn_is_accepted(request: Request) -> None:
    talk, follower = talk_to_procd()
    assert isinstance(request.message, Message) and len(request.message.payload) == SPAWN_SERVICE_REQUEST.size
    assert reply_status(talk.ask(request)) is Status.OK
    agree(talk, follower)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(near=near_valid_spawns())
def test_procd_refuses_a_spawn_with_one_field_wrong(near: NearValid) -> None:
    talk, follower = talk_to_procd()
    status = reply_status(talk.ask(near.request))
    agree(talk, follower)
    assert status is not Status.OK, f"accepted with a wrong {near.wrong}"


@settings(max_examples=200, deadline=None)
@given(near=near_valid_spawns())
def test_exactly_the_named_field_is_wrong(near: NearValid) -> None:
    assert near.wrong in WRONG_FIELDS
    message = near.request.message
    assert isinstance(message, Message)
    assert near.request.attach_cap == (near.wrong == "capability")
    assert (len(message.payload) != SPAWN_SERVICE_REQUEST.size) == (near.wrong == "length")


@FEW
@given(request=arbitrary_requests())
def test_any_request_gets_exactly_one_defined_status_as_the_spec_says(request: Request) -> None:
    talk, follower = talk_to_procd()
    reply_status(talk.ask(request))
    agree(talk, follower)


@given(st.data())
def test_callers_with_and_without_authority(data: st.DataObject) -> None:
    assert data.draw(callers(authority=True)) == BADGE_ROOTD
    assert data.draw(callers(authority=False)) in (*FOREIGN_BADGES, *CHILD_BADGES)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=lifecycle_sequences(max_size=8))
def test_a_lifecycle_sequence_follows_the_spec(steps: list[LifecycleStep]) -> None:
    assert steps[0].kind == "spawn"
    statuses = run_lifecycle(steps)
    assert statuses[0] is Status.OK
    assert len(statuses) == len(steps)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=boot_manifests())
def test_a_drawn_boot_manifest_runs_as_expected_and_the_same_twice(scenario: Scenario) -> None:
    def digest() -> tuple[bool, str, str]:
        trace = Trace()
        with contextlib.redirect_stderr(io.StringIO()):
            outcome = run_scenario(trace, scenario, 50_000_000)
        return outcome.ok, outcome.detail, trace.digest()

    first = digest()
    assert first[0], first[1]
    assert digest() == first
