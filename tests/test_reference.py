"""The native procd, request by request, against the executable specification in procd_model/reference.py."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emu.trace import Event, Trace
from procd_model.abi import (
    BADGE_ROOTD,
    PROCD_CHILD_BADGE_BASE,
    PROCD_MAX_PROCESSES,
    PROCESS_REQUEST,
    SPAWN_SERVICE_REQUEST,
    CapPurpose,
    KernelEvent,
    NotifyBit,
    ProcdOp,
    RestartPolicy,
    Role,
    Status,
)
from procd_model.client import Request, ask_all
from procd_model.harness import agree, process_id, process_request, reply_status, spawn_request, talk_to_procd
from procd_model.images import boot_image_named
from procd_model.messages import Message
from procd_model.reference import ProcdSpec, Step, check_against_spec, native_steps
from procd_model.rootd import Services
from procd_model.scenario import builtin_scenarios
from procd_model.world import run_scenario


def procd_pid(events: list[Event]) -> int:
    return next(e.pid for e in events if e.kind == "process.create" and e.fields.get("name") == "procd")


def spec_for(services: Services | None, started: tuple[Role, ...] = ()) -> ProcdSpec:
    holds = frozenset({CapPurpose.CRASHD_ENDPOINT}) if services is not None else frozenset()
    return ProcdSpec(holds=holds, started=frozenset(started))


def steps_of(trace: Trace) -> list[Step]:
    return native_steps(trace.events, procd_pid(trace.events))


@pytest.mark.parametrize("scenario", builtin_scenarios(), ids=lambda s: s.name)
def test_every_scenario_matches_the_spec(scenario: object) -> None:
    trace = Trace()
    outcome = run_scenario(trace, scenario, 50_000_000)  # type: ignore[arg-type]
    assert outcome.ok or scenario.expect.halts in outcome.detail, outcome.detail  # type: ignore[attr-defined]
    steps = steps_of(trace)
    assert steps, "procd received requests"
    spec = spec_for(scenario.services, scenario.before_procd)  # type: ignore[attr-defined]
    divergence = check_against_spec(steps, spec)
    assert divergence is None, divergence.describe()


def spawn(image: str = "phase0-exit", role: int = Role.TEST, flags: int = 0) -> Message:
    image_id = boot_image_named(image).image_id if image else 0
    return Message(ProcdOp.SPAWN_SERVICE, SPAWN_SERVICE_REQUEST.pack(image_id=image_id, role=role, flags=flags))


MIXED = [
    Request(spawn(), badge=7),
    Request(Message(ProcdOp.SPAWN_SERVICE, b"\x02")),
    Request(spawn(role=Role.PROCD)),
    Request(spawn(image="")),
    Request(Message(ProcdOp.SPAWN_SERVICE, SPAWN_SERVICE_REQUEST.pack(image_id=99, role=Role.TEST))),
    Request(Message(0x777)),
    Request(Message(ProcdOp.PROBE_COMPLETE)),
    Request(spawn(), attach_cap=True),
    Request(spawn("phase0-probe")),
    Request(spawn()),
]


def mixed_session() -> list[Step]:
    session = ask_all(MIXED, Trace(), services=Services())
    return steps_of(session.trace)


def test_malformed_and_valid_requests_match_the_spec() -> None:
    steps = mixed_session()
    assert len(steps) >= len(MIXED)
    divergence = check_against_spec(steps, spec_for(Services()))
    assert divergence is None, divergence.describe()


def depends(role: int, *on: Role, image: str = "svc-stub") -> Message:
    payload = SPAWN_SERVICE_REQUEST.pack(
        image_id=boot_image_named(image).image_id, role=role, depends_on=sum(1 << r for r in on)
    )
    return Message(ProcdOp.SPAWN_SERVICE, payload)


def test_dependencies_on_roles_procd_never_runs_match_the_spec() -> None:
    """rootd started MEMD before procd: a dependency on it is satisfied; on VSPACED, ROOTD or PROCD
    (nobody will start them) it is refused NOT_FOUND; procd never spawns MEMD itself."""
    requests = [
        Request(depends(Role.NAMED, Role.MEMD)),
        Request(depends(Role.TIMED, Role.VSPACED)),
        Request(depends(Role.TIMED, Role.ROOTD)),
        Request(depends(Role.TIMED, Role.PROCD, Role.MEMD)),
        Request(depends(Role.LOGD, Role.MEMD, Role.CRASHD)),
        Request(depends(Role.MEMD)),
        Request(depends(Role.PAGERD)),
    ]
    session = ask_all(requests, Trace(), before_procd=(Role.MEMD,))
    statuses = [Status(reply.op) for _, reply in session.replies if reply is not None]
    assert (
        statuses
        == [Status.OK, Status.NOT_FOUND, Status.NOT_FOUND, Status.NOT_FOUND, Status.OK] + [Status.INVALID_ARGUMENT] * 2
    )
    assert session.kernel is not None
    assert "named: up" in session.kernel.logs
    assert "logd: up" not in session.kernel.logs, "held for CRASHD"
    steps = steps_of(session.trace)
    divergence = check_against_spec(steps, spec_for(None, (Role.MEMD,)))
    assert divergence is None, divergence.describe()
    # The spec without the roles rootd started disagrees at the first request.
    divergence = check_against_spec(steps, spec_for(None))
    assert divergence is not None and divergence.spec.reply == ("NOT_FOUND", None, None)


def full_table_session() -> list[Step]:
    waiter = boot_image_named("phase2-irq-client").image_id
    payload = SPAWN_SERVICE_REQUEST.pack(image_id=waiter, role=Role.TEST, flags=0)
    session = ask_all(
        [Request(Message(ProcdOp.SPAWN_SERVICE, payload))] * (PROCD_MAX_PROCESSES + 1), Trace(), services=Services()
    )
    return steps_of(session.trace)


def test_a_full_table_matches_the_spec() -> None:
    divergence = check_against_spec(full_table_session(), spec_for(Services()))
    assert divergence is None, divergence.describe()


def test_changing_one_policy_detail_in_the_spec_is_caught() -> None:
    """The check is real: a spec that differs in one detail fails, and names the request."""
    steps = mixed_session()
    lenient = spec_for(Services())
    lenient.spawn_badges = frozenset({BADGE_ROOTD, 7})
    divergence = check_against_spec(steps, lenient)
    assert divergence is not None and divergence.step.badge == 7
    assert "SPAWN_SERVICE" in divergence.describe()

    smaller = spec_for(Services())
    smaller.table_size = PROCD_MAX_PROCESSES - 1
    divergence = check_against_spec(full_table_session(), smaller)
    assert divergence is not None and divergence.spec.reply == ("BUSY", None, None)

    silent_crashd = ProcdSpec()  # forgets that procd reports kills to crashd
    trace = Trace()
    scenario = next(s for s in builtin_scenarios() if s.name == "phase0-fault-kill")
    run_scenario(trace, scenario, 50_000_000)
    divergence = check_against_spec(steps_of(trace), silent_crashd)
    assert divergence is not None and divergence.step.request.op == KernelEvent.CHILD_DIED


fuzz = st.lists(
    st.tuples(
        st.sampled_from(
            [
                ProcdOp.SPAWN_SERVICE,
                ProcdOp.SPAWN_SERVICE,
                ProcdOp.PROBE_COMPLETE,
                ProcdOp.STOP,
                ProcdOp.KILL,
                ProcdOp.STATUS,
                ProcdOp.LIST,
                ProcdOp.REAP,
                ProcdOp.AUDIT_READ,
                0x100,
                0x999,
            ]
        ),
        st.one_of(
            st.binary(max_size=12),
            st.builds(
                lambda image, role, flags: SPAWN_SERVICE_REQUEST.pack(image_id=image, role=role, flags=flags),
                st.integers(0, 12),
                st.sampled_from([Role.TEST, Role.TIMED, Role.PROCD, Role.ROOTD, 77]),
                st.sampled_from([0, 1, 2, 3, 4]),
            ),
            st.builds(
                lambda index, generation: PROCESS_REQUEST.pack(id=index | generation << 16),
                st.integers(0, 2),
                st.integers(0, 3),
            ),
        ),
        st.sampled_from([BADGE_ROOTD, 2, PROCD_CHILD_BADGE := 0x10000]),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=30, deadline=None)
@given(fuzz)
def test_fuzzed_requests_match_the_spec(requests: list[tuple[int, bytes, int]]) -> None:
    session = ask_all(
        [Request(Message(op, payload), badge=badge) for op, payload, badge in requests], Trace(), services=Services()
    )
    divergence = check_against_spec(steps_of(session.trace), spec_for(Services()))
    assert divergence is None, divergence.describe()


# ---------------------------------------------------------------- one request at a time

ENTRY_STATES = {
    "FAILED": [spawn_request("phase0-fault-kill")],
    "HELD": [spawn_request("phase0-exit", depends_on=1 << Role.NAMED)],
    "RESTARTING": [spawn_request("phase0-fault-kill", restart=RestartPolicy.ON_FAILURE, max_restarts=3, backoff_ms=50)],
}


@pytest.mark.parametrize("state", ENTRY_STATES)
def test_probe_complete_from_an_entry_with_no_live_child_is_denied(state: str) -> None:
    """docs/abi.md §8: PROBE_COMPLETE is DENIED unless the badge names a live child."""
    talk, follower = talk_to_procd()
    for request in ENTRY_STATES[state]:
        talk.ask(request)
    status = reply_status(talk.ask(Request(Message(ProcdOp.PROBE_COMPLETE), badge=PROCD_CHILD_BADGE_BASE)))
    assert status is Status.DENIED
    agree(talk, follower)


def test_kill_of_a_process_restarted_after_a_kill_is_carried_out() -> None:
    """A KILL ends a run; the restarted process is a new run, RUNNING, which KILL ends again."""
    talk, follower = talk_to_procd()
    policy = {"restart": RestartPolicy.ALWAYS, "max_restarts": 3, "window_ms": 1000, "backoff_ms": 1}
    talk.ask(spawn_request("phase2-irq-client", **policy))
    assert reply_status(talk.ask(process_request(ProcdOp.KILL, process_id(0, 1)))) is Status.OK
    assert talk.pass_time(), "the restart's timer was pending"
    assert reply_status(talk.ask(process_request(ProcdOp.KILL, process_id(0, 2)))) is Status.OK
    agree(talk, follower)


@pytest.mark.parametrize("name", ["phase0-fault-kill", "phase0-probe", "restart-storm"])
def test_the_steps_come_from_typed_records_not_the_traces_display_fields(name: str) -> None:
    trace = Trace()
    scenario = next(s for s in builtin_scenarios() if s.name == name)
    run_scenario(trace, scenario, 50_000_000)
    steps = steps_of(trace)
    assert steps
    blanked = [Event(e.seq, e.icount, e.cycle, e.pid, e.kind, {}, e.data) for e in trace.events]
    assert native_steps(blanked, procd_pid(trace.events)) == steps
    assert steps[0].request.op == ProcdOp.SPAWN_SERVICE


def test_a_step_holds_the_typed_request_kernel_answers_and_actions() -> None:
    trace = Trace()
    run_scenario(trace, next(s for s in builtin_scenarios() if s.name == "phase0-probe"), 50_000_000)
    steps = steps_of(trace)
    spawn = steps[0]
    assert (spawn.request.op, spawn.request.call, spawn.request.get("role")) == (ProcdOp.SPAWN_SERVICE, True, Role.TEST)
    assert [reply.status for reply in spawn.kernel_replies] == [Status.OK] * len(spawn.did.kernel_calls)
    probe = next(step for step in steps if step.request.op == ProcdOp.PROBE_COMPLETE)
    assert probe.did.notifies == (NotifyBit.PROBE_COMPLETE,) and not probe.request.call  # a SEND: no reply


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_set_bits_are_the_bits_of_a_u64_mask(mask: int) -> None:
    from procd_model.reference import set_bits

    assert set_bits(mask) == [r for r in range(64) if mask >> r & 1]
