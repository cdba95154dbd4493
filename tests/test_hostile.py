"""Hostile input to the native procd: every op code, every payload length, forged badges, stale
ids and restart-policy extremes. For every request: procd does not fault and keeps serving, the
CALL gets exactly one reply with a status the ABI defines, and native procd does what the
executable spec (procd_model/reference.py) says. Explicit tables state the statuses docs/abi.md
§8 gives; Hypothesis adds random sequences.

Restart-policy extremes that restart for ever under the old window semantics are in
`test_restart_extremes_*` (they need the bounded-restart window of docs/abi.md §8).

CI runs a bounded sample (well under 30 s). `PROCD_HOSTILE=long` adds every payload length
0..MSG_MAX_PAYLOAD for every op and the generation wrap-around (0xFFFF reuses of one entry).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emu.trace import Trace
from procd_model.abi import (
    AUDIT_READ_REQUEST,
    BADGE_ROOTD,
    MSG_MAX_PAYLOAD,
    PAYLOADS,
    PROCD_CHILD_BADGE_BASE,
    PROCESS_REQUEST,
    SPAWN_SERVICE_REPLY,
    SPAWN_SERVICE_REQUEST,
    CapPurpose,
    EnvelopeFlag,
    KernelEvent,
    ProcdOp,
    ProcState,
    RestartPolicy,
    Role,
    Status,
)
from procd_model.client import Conversation, Request, Session, ask_all
from procd_model.harness import (
    FOREIGN_BADGES,
    agree,
    listed,
    process_id,
    process_request,
    reply_status,
    spawn_request,
    talk_to_procd,
)
from procd_model.messages import Message
from procd_model.reference import ProcdSpec, check_against_spec, native_steps
from procd_model.rootd import Services
from procd_model.wire import Shape

LONG = os.environ.get("PROCD_HOSTILE") == "long"
U32_MAX = 0xFFFF_FFFF
UNKNOWN_OPS = (0, 1, 0x400, 0x401, 0x40B, 0x4FF, 0x510, 0x520, 0xFFFF, U32_MAX)
"""Op codes procd does not serve: below, between and above its own, and other services' ops."""
FORGED_KERNEL_OPS = (KernelEvent.CHILD_DIED, KernelEvent.TIMER)
ALL_OPS = (*ProcdOp, *FORGED_KERNEL_OPS, *UNKNOWN_OPS)
ROOTD_OPS = (
    ProcdOp.SPAWN_SERVICE,
    ProcdOp.STOP,
    ProcdOp.KILL,
    ProcdOp.REAP,
    ProcdOp.STATUS,
    ProcdOp.LIST,
    ProcdOp.AUDIT_READ,
)
CHILD_OPS = (ProcdOp.PROBE_COMPLETE, ProcdOp.SPAWN)
PAYLOAD_SIZE = {
    op: 0 if (request := PAYLOADS[("procd", op)].request) is None else request.layout.size for op in ProcdOp
}
"""The one request payload length each op accepts, from the ABI's op table (each procd request is
one record or nothing)."""
assert all(p.request is None or p.request.shape is Shape.ONE for (s, _), p in PAYLOADS.items() if s == "procd")

# The table the session starts with, so that every kind of entry can be named by a child badge.
LIVE_SPAWNER, FAILED, HELD, RESTARTING, FREE = 0, 1, 2, 3, 4
SETUP = (
    spawn_request("svc-stub", flags=EnvelopeFlag.SPAWNER),  # never ends
    spawn_request("phase0-fault-kill"),  # FAILED at once
    spawn_request("svc-stub", role=Role.NAMED, depends_on=1 << Role.IRQD),  # HELD: no IRQD ever runs
    spawn_request(
        "phase0-fault-kill", restart=RestartPolicy.ON_FAILURE, max_restarts=1, window_ms=U32_MAX, backoff_ms=U32_MAX
    ),  # RESTARTING until long after the session
)
WRONG_CHILD_BADGES = tuple(PROCD_CHILD_BADGE_BASE + i for i in (FAILED, HELD, RESTARTING, FREE, 31))
"""Child badges that name no live child: FAILED, HELD, RESTARTING and free entries."""


def spec() -> ProcdSpec:
    return ProcdSpec(holds=frozenset({CapPurpose.CRASHD_ENDPOINT}))


def session_of(requests: list[Request]) -> Session:
    """SETUP then `requests` in one session; every request answered as the spec says, procd alive."""
    session = ask_all([*SETUP, *requests], Trace(), services=Services())
    assert session.procd is not None and not session.procd.state.is_dead, "procd died"
    assert session.procd.state.value == "blocked", "procd is back in RECV"
    assert len(session.replies) == len(SETUP) + len(requests), "every request got exactly one reply"
    divergence = check_against_spec(native_steps(session.trace.events, session.procd.pid), spec())
    assert divergence is None, divergence.describe()
    return session


def statuses(session: Session) -> list[Status]:
    return [reply_status(answer) for answer in session.replies[len(SETUP) :]]


def pattern(length: int, seed: int) -> bytes:
    return bytes((seed + i * 7) % 256 for i in range(length))


def honoured_badge(op: int) -> int:
    """A badge that passes op's badge check, so that the payload checks are reached."""
    return PROCD_CHILD_BADGE_BASE + LIVE_SPAWNER if op in CHILD_OPS else BADGE_ROOTD


# ------------------------------------------------------------------ op codes and lengths


LENGTHS = (
    range(MSG_MAX_PAYLOAD + 1)
    if LONG
    else sorted({*range(65), *range(65, MSG_MAX_PAYLOAD, 37), MSG_MAX_PAYLOAD - 1, MSG_MAX_PAYLOAD})
)
"""Every length 0..64 (around every request size), then a stride and the maximum; all of them
with PROCD_HOSTILE=long."""


def test_every_op_at_payload_lengths_up_to_the_maximum() -> None:
    """Each op, from a badge it honours, with payload lengths 0..MSG_MAX_PAYLOAD (LENGTHS): a
    wrong length is INVALID_ARGUMENT (a forged kernel event DENIED, an unknown op
    INVALID_ARGUMENT whatever its length), and the right one is whatever the spec says."""
    grid = [(op, length) for op in ALL_OPS for length in LENGTHS]
    session = session_of([Request(Message(op, pattern(n, op)), badge=honoured_badge(op)) for op, n in grid])
    for (op, length), status in zip(grid, statuses(session), strict=True):
        if op in FORGED_KERNEL_OPS:
            assert status is Status.DENIED, (hex(op), length)
        elif op not in PAYLOAD_SIZE or length != PAYLOAD_SIZE[ProcdOp(op)]:
            assert status is Status.INVALID_ARGUMENT, (hex(op), length, status)


def test_header_fields_the_kernel_refuses_never_reach_procd() -> None:
    """Raw IPC buffers with a payload_len past the maximum, too many capabilities or reserved
    header bytes set: the kernel refuses the CALL (INVALID_ARGUMENT) and procd sees nothing."""
    raw = [
        Message(ProcdOp.LIST).encode()[:4] + (MSG_MAX_PAYLOAD + 1).to_bytes(2, "little") + bytes(26),
        Message(ProcdOp.LIST).encode()[:6] + bytes([5]) + bytes(25),
        Message(ProcdOp.LIST).encode()[:7] + bytes([1]) + bytes(24),
        Message(ProcdOp.LIST).encode()[:24] + (1).to_bytes(8, "little"),
    ]
    session = ask_all([Request(r) for r in raw] + [Request(Message(ProcdOp.LIST))], Trace(), services=Services())
    assert [status for status, _ in session.replies[:-1]] == [Status.INVALID_ARGUMENT] * len(raw)
    assert reply_status(session.replies[-1]) is Status.OK
    received = [e for e in session.trace.events if e.kind == "ipc.recv" and e.pid == session.procd.pid]  # type: ignore[union-attr]
    assert [e.fields["op"] for e in received if e.fields["badge"] == BADGE_ROOTD] == ["LIST"]


# ------------------------------------------------------------------------ forged badges


def well_formed(op: int) -> Message:
    """A request of op with a payload of its right size and plausible contents."""
    if op in (ProcdOp.SPAWN_SERVICE, ProcdOp.SPAWN):
        message = spawn_request("phase0-exit").message
        assert isinstance(message, Message)
        return Message(op, message.payload)
    if op in (ProcdOp.STOP, ProcdOp.KILL, ProcdOp.REAP, ProcdOp.STATUS):
        return Message(op, PROCESS_REQUEST.pack(id=process_id(LIVE_SPAWNER, 1)))
    if op == ProcdOp.AUDIT_READ:
        return Message(op, AUDIT_READ_REQUEST.pack(from_seq=0))
    return Message(op)


def expected_from_a_wrong_badge(op: int) -> Status:
    return Status.INVALID_ARGUMENT if op in UNKNOWN_OPS else Status.DENIED


def wrong_badges(op: int) -> tuple[int, ...]:
    if op in ROOTD_OPS:
        return (*FOREIGN_BADGES, *WRONG_CHILD_BADGES, PROCD_CHILD_BADGE_BASE + LIVE_SPAWNER)
    if op in CHILD_OPS:
        return (BADGE_ROOTD, *FOREIGN_BADGES, *WRONG_CHILD_BADGES)
    return (BADGE_ROOTD, *FOREIGN_BADGES, *WRONG_CHILD_BADGES, PROCD_CHILD_BADGE_BASE + LIVE_SPAWNER)


def test_every_op_from_every_wrong_badge_is_refused() -> None:
    """rootd's ops from anyone else, a child's ops from rootd, strangers and children that are
    not live (FAILED, HELD, RESTARTING, free), a kernel event from anyone: DENIED, before any
    other check; an unknown op is INVALID_ARGUMENT from anyone. Nothing changes: the live
    spawner the KILLs and STOPs name is still RUNNING at the end."""
    grid = [(op, badge) for op in ALL_OPS for badge in wrong_badges(op)]
    requests = [Request(well_formed(op), badge=badge) for op, badge in grid]
    session = session_of([*requests, Request(Message(ProcdOp.LIST))])
    *answers, last = statuses(session)
    for (op, badge), status in zip(grid, answers, strict=True):
        assert status is expected_from_a_wrong_badge(op), (hex(op), hex(badge), status)
    assert last is Status.OK
    reply = session.replies[-1][1]
    assert reply is not None
    assert listed(reply)[LIVE_SPAWNER]["state"] == ProcState.RUNNING


def test_an_attached_capability_is_refused_for_every_op() -> None:
    requests = [Request(well_formed(op), badge=honoured_badge(op), attach_cap=True) for op in ALL_OPS]
    for op, status in zip(ALL_OPS, statuses(session_of(requests)), strict=True):
        assert status is (Status.DENIED if op in FORGED_KERNEL_OPS else Status.INVALID_ARGUMENT), hex(op)


# ---------------------------------------------------------------------------- stale ids

ID_OPS = (ProcdOp.STOP, ProcdOp.KILL, ProcdOp.REAP, ProcdOp.STATUS)


def all_refused_as_stale(talk: Conversation, proc_id: int) -> None:
    for op in ID_OPS:
        assert reply_status(talk.ask(process_request(op, proc_id))) is Status.NOT_FOUND, (op.name, hex(proc_id))


def test_stale_ids_never_reach_a_later_occupant() -> None:
    """Ids of a reaped entry, of a clean exit, of a freed HELD entry and of a restarted process's
    earlier run, once a new occupant has the entry; and ids no entry ever had."""
    talk, follower = talk_to_procd()
    # a FAILED entry, reaped, then reused
    talk.ask(spawn_request("phase0-fault-kill"))
    assert reply_status(talk.ask(process_request(ProcdOp.REAP, process_id(0, 1)))) is Status.OK
    talk.ask(spawn_request("svc-stub"))  # index 0, generation 2
    all_refused_as_stale(talk, process_id(0, 1))
    # a clean exit frees its entry at once
    talk.ask(spawn_request("phase0-exit"))  # index 1, exits
    talk.ask(spawn_request("svc-stub"))  # index 1, generation 2
    all_refused_as_stale(talk, process_id(1, 1))
    # a HELD entry STOPped, then reused
    talk.ask(spawn_request("svc-stub", depends_on=1 << Role.IRQD))  # index 2
    assert reply_status(talk.ask(process_request(ProcdOp.STOP, process_id(2, 1)))) is Status.OK
    talk.ask(spawn_request("svc-stub"))
    all_refused_as_stale(talk, process_id(2, 1))
    # a restarted process: its first run's id is stale, the new one works
    talk.ask(
        spawn_request("svc-stub", restart=RestartPolicy.ON_FAILURE, max_restarts=1, window_ms=U32_MAX, backoff_ms=1)
    )
    assert reply_status(talk.ask(process_request(ProcdOp.KILL, process_id(3, 1)))) is Status.OK
    assert talk.pass_time()
    all_refused_as_stale(talk, process_id(3, 1))
    assert reply_status(talk.ask(process_request(ProcdOp.STATUS, process_id(3, 2)))) is Status.OK
    # ids no entry has: generation 0, indexes past the table, generations ahead
    for proc_id in (process_id(0, 0), process_id(32, 1), process_id(0xFFFF, 1), process_id(0, 0xFFFF), U32_MAX):
        all_refused_as_stale(talk, proc_id)
    agree(talk, follower)


@pytest.mark.skipif(not LONG, reason="about a minute: PROCD_HOSTILE=long")
def test_a_generation_wraps_from_0xffff_to_1_and_old_ids_stay_stale() -> None:
    """Entry 0 is taken by a HELD spawn and freed by STOP 0xFFFF times (no kernel call): its
    generation wraps to 1, never 0; the id of generation 0xFFFF is then stale."""
    held = spawn_request("svc-stub", depends_on=1 << Role.IRQD)
    requests: list[Request] = []
    for generation in range(1, 0x10000):
        requests += [held, process_request(ProcdOp.STOP, process_id(0, generation))]
    requests += [held, process_request(ProcdOp.STATUS, process_id(0, 0xFFFF)), process_request(ProcdOp.STATUS, 1 << 16)]
    session = ask_all(requests, services=Services(), max_instructions=2_000_000_000)
    assert session.procd is not None and not session.procd.state.is_dead
    assert len(session.replies) == len(requests), session.outcome.detail
    assert all(reply_status(answer) is Status.OK for answer in session.replies[:-2])
    assert [reply_status(answer) for answer in session.replies[-2:]] == [Status.NOT_FOUND, Status.OK]


# ----------------------------------------------------------------- restart-policy values

POLICY_EXTREMES = [
    (policy, max_restarts, window, backoff)
    for policy in RestartPolicy
    for max_restarts in (0, 255)
    for window in (0, U32_MAX)
    for backoff in (0, U32_MAX)
]


def test_invalid_restart_values_are_refused() -> None:
    bad = [value for value in range(256) if value not in set(RestartPolicy)]
    requests = [spawn_request("phase0-exit", restart=value) for value in bad]
    assert statuses(session_of(requests)) == [Status.INVALID_ARGUMENT] * len(bad)


def test_restart_policy_extremes_are_accepted_and_a_stop_is_never_restarted() -> None:
    """Every combination of the extreme values: spawned, RUNNING, and a STOP ends it for good."""
    talk, follower = talk_to_procd()
    for policy, max_restarts, window, backoff in POLICY_EXTREMES:
        fields = {"restart": policy, "max_restarts": max_restarts, "window_ms": window, "backoff_ms": backoff}
        answer = talk.ask(spawn_request("svc-stub", **fields))
        assert reply_status(answer) is Status.OK and answer is not None and answer[1] is not None
        proc_id = SPAWN_SERVICE_REPLY.unpack(answer[1].payload)["id"]
        assert reply_status(talk.ask(process_request(ProcdOp.STATUS, proc_id))) is Status.OK
        assert reply_status(talk.ask(process_request(ProcdOp.STOP, proc_id))) is Status.OK
        agree(talk, follower)
        assert not talk.kernel.event_pending, "a STOP is never restarted"
        all_refused_as_stale(talk, proc_id)
    agree(talk, follower)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(ALL_OPS),
            st.one_of(
                st.binary(max_size=MSG_MAX_PAYLOAD),
                st.builds(
                    lambda image, role, flags, restart, extremes: SPAWN_SERVICE_REQUEST.pack(
                        image_id=image, role=role, flags=flags, restart=restart, **extremes
                    ),
                    st.integers(0, 12),
                    st.sampled_from([Role.TEST, Role.NAMED, Role.PROCD, 0, 0xFFFF]),
                    st.integers(0, 0xFFFF),
                    st.integers(0, 3),
                    st.fixed_dictionaries(
                        {
                            "max_restarts": st.sampled_from([0, 1, 255]),
                            "window_ms": st.sampled_from([U32_MAX]),
                            "backoff_ms": st.sampled_from([0, U32_MAX]),
                        }
                    ),
                ),
                st.builds(
                    lambda index, generation: PROCESS_REQUEST.pack(id=process_id(index, generation)),
                    st.sampled_from([0, 1, 2, 3, 4, 31, 32, 0xFFFF]),
                    st.sampled_from([0, 1, 2, 0xFFFF]),
                ),
            ),
            st.sampled_from([BADGE_ROOTD, *FOREIGN_BADGES, PROCD_CHILD_BADGE_BASE + LIVE_SPAWNER, *WRONG_CHILD_BADGES]),
            st.booleans(),
        ),
        min_size=1,
        max_size=12,
    )
)
@settings(max_examples=25, deadline=None)
def test_random_hostile_sequences_match_the_spec(requests: list[tuple[int, bytes, int, bool]]) -> None:
    session_of([Request(Message(op, payload), badge, attach) for op, payload, badge, attach in requests])


# ------------------------------------------------- restart extremes (bounded restarts)

WINDOWS = (0, 1, U32_MAX)
BACKOFFS = (0, 1, U32_MAX)
EXTREME_CASES = [
    (image, policy, max_restarts, window, backoff)
    for image, policy in (
        ("phase0-fault-kill", RestartPolicy.ON_FAILURE),
        ("phase0-fault-kill", RestartPolicy.ALWAYS),
        ("phase0-exit", RestartPolicy.ALWAYS),
    )
    for max_restarts in (0, 1)
    for window in WINDOWS
    for backoff in BACKOFFS
] + [
    ("phase0-fault-kill", RestartPolicy.ON_FAILURE, 255, 0, 0),
    ("phase0-fault-kill", RestartPolicy.ALWAYS, 255, U32_MAX, 1),
    ("phase0-exit", RestartPolicy.ALWAYS, 255, 1, U32_MAX),
]


@pytest.mark.parametrize(("image", "policy", "max_restarts", "window", "backoff"), EXTREME_CASES)
def test_restart_extremes_are_bounded(image: str, policy: int, max_restarts: int, window: int, backoff: int) -> None:
    """A child that always ends at once (a fault, or a clean exit under ALWAYS) is restarted at
    most max_restarts times whatever window_ms and backoff_ms are (0 and the maxima included),
    then held FAILED (a clean exit may instead free its entry); procd and the spec agree all
    along.

    Needs the bounded-restart window semantics (docs/abi.md §8, Restart policy): under a window
    that reopens, window_ms 0, or a window shorter than the backoff restarts for ever."""
    talk, follower = talk_to_procd(max_instructions=5_000_000)
    fields = {"restart": policy, "max_restarts": max_restarts, "window_ms": window, "backoff_ms": backoff}
    assert reply_status(talk.ask(spawn_request(image, **fields))) is Status.OK
    agree(talk, follower)
    for _ in range(max_restarts + 2):
        if not talk.pass_time():
            break
        agree(talk, follower)
    restarts = sum(1 for line in talk.kernel.logs if line.startswith("procd: restarted "))
    assert restarts <= max_restarts, f"{restarts} restarts, bound {max_restarts}"
    assert not talk.kernel.event_pending, "no restart is still pending: the child is held, not restarted for ever"
    answer = talk.ask(Request(Message(ProcdOp.LIST)))
    assert reply_status(answer) is Status.OK and answer is not None and answer[1] is not None
    states = [record["state"] for record in listed(answer[1])]
    assert states == [ProcState.FAILED] or (image == "phase0-exit" and not states), states  # held, or a clean end freed
    agree(talk, follower)
