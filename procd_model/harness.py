"""procd under test: the native procd booted with its services, a client holding every badge,
and the executable spec (procd_model/reference.py) following every message procd takes.

For property tests and fuzzing (see `procd_model.strategies`): `talk_to_procd()` boots it,
`Conversation.ask` sends one request, `agree` checks every step since the last check against
the spec, `reply_status` checks the reply is exactly one defined status. Also builders for the
requests procd takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from procd_model.abi import (
    BADGE_ROOTD,
    PROCD_CHILD_BADGE_BASE,
    PROCD_ID_GENERATION_SHIFT,
    PROCD_MAX_PROCESSES,
    PROCESS_REQUEST,
    PROCESS_STATUS,
    SPAWN_SERVICE_REPLY,
    SPAWN_SERVICE_REQUEST,
    CapPurpose,
    ProcdOp,
    Role,
    Status,
)
from procd_model.client import Conversation, Request
from procd_model.images import boot_image_named
from procd_model.messages import Message
from procd_model.reference import ProcdSpec, SpecFollower, Step
from procd_model.rootd import Services

if TYPE_CHECKING:
    from procd_model.strategies import LifecycleStep

FOREIGN_BADGES = (2, 7, 0xFFFF, PROCD_CHILD_BADGE_BASE - 1, PROCD_CHILD_BADGE_BASE + PROCD_MAX_PROCESSES)
"""Badges no request should be honoured from: not rootd's, not a child's."""
CHILD_BADGES = tuple(PROCD_CHILD_BADGE_BASE + i for i in range(PROCD_MAX_PROCESSES))
ALL_BADGES = (BADGE_ROOTD, *FOREIGN_BADGES, *CHILD_BADGES)

Answer = tuple[Status, Message | None] | None


class ProcdMisbehaved(AssertionError):
    """procd broke its contract: it diverged from the spec, died, never answered, or answered
    with something that is not exactly one defined status."""


def talk_to_procd(max_instructions: int = 20_000_000) -> tuple[Conversation, SpecFollower]:
    """procd booted with services (crashd among them), a client holding every badge of
    ALL_BADGES, and a spec following it."""
    talk = Conversation(ALL_BADGES, Services(), max_instructions=max_instructions)
    spec = ProcdSpec(holds=frozenset({CapPurpose.CRASHD_ENDPOINT}))
    return talk, SpecFollower(spec, talk.procd.pid)


def agree(talk: Conversation, follower: SpecFollower) -> list[Step]:
    """Every request procd took since the last call was handled as the spec says, and procd
    is alive; the steps."""
    steps, divergence = follower.check(talk.trace.events)
    if divergence is not None:
        raise ProcdMisbehaved(divergence.describe())
    if talk.procd.state.is_dead:
        raise ProcdMisbehaved(f"procd died: {talk.procd.fault or talk.procd.exit_code}")
    return steps


def reply_status(answer: Answer) -> Status:
    """The status procd replied with; ProcdMisbehaved unless the CALL got exactly a defined status."""
    if answer is None:
        raise ProcdMisbehaved("procd never answered the CALL")
    syscall, reply = answer
    if syscall is not Status.OK or reply is None:
        raise ProcdMisbehaved(f"the CALL itself failed: {syscall.name}")
    if reply.caps:
        raise ProcdMisbehaved("a reply carries capabilities")
    try:
        return Status(reply.op)
    except ValueError:
        raise ProcdMisbehaved(f"procd replied with status {reply.op:#x}, which the ABI does not define") from None


def spawn_request(image: str, role: Role = Role.TEST, **fields: int) -> Request:
    """rootd's SPAWN_SERVICE of boot image `image` as `role`; other fields of
    spawn_service_request by name (0 if not given)."""
    payload = SPAWN_SERVICE_REQUEST.pack(image_id=boot_image_named(image).image_id, role=role, **fields)
    return Request(Message(ProcdOp.SPAWN_SERVICE, payload))


def process_id(index: int, generation: int) -> int:
    """procd's id of table entry `index` for an occupant of `generation`."""
    return index | generation << PROCD_ID_GENERATION_SHIFT


def process_request(op: ProcdOp, proc_id: int, badge: int = BADGE_ROOTD) -> Request:
    """A STOP, KILL, REAP or STATUS of `proc_id` from `badge`."""
    return Request(Message(op, PROCESS_REQUEST.pack(id=proc_id)), badge=badge)


def listed(reply: Message) -> list[dict[str, int]]:
    """The records of an OK LIST reply, with the fields the spec predicts."""
    size = PROCESS_STATUS.size
    assert len(reply.payload) % size == 0
    keys = ("id", "pid", "image_id", "role", "state", "flags")
    records = [PROCESS_STATUS.unpack(reply.payload, at) for at in range(0, len(reply.payload), size)]
    return [{k: r[k] for k in keys} for r in records]


def perform(talk: Conversation, follower: SpecFollower, step: LifecycleStep, ids: list[int]) -> Status | None:
    """Carry out one lifecycle step and check it against the spec: the reply's status for a
    request (an OK spawn's id is appended to `ids`), None for time passing or the interrupt."""
    if step.kind == "time":
        talk.pass_time()
    elif step.kind == "interrupt":
        talk.interrupt()
    else:
        request = _step_request(step, ids)
        answer = talk.ask(request)
        status = reply_status(answer)
        agree(talk, follower)
        if step.kind == "spawn" and status is Status.OK and answer is not None and answer[1] is not None:
            ids.append(SPAWN_SERVICE_REPLY.unpack(answer[1].payload)["id"])
        return status
    agree(talk, follower)
    return None


def _step_request(step: LifecycleStep, ids: list[int]) -> Request:
    if step.kind == "spawn":
        assert step.request is not None, "a spawn step carries its request"
        return step.request
    if step.kind == "list":
        return Request(Message(ProcdOp.LIST, b""))
    op = {"stop": ProcdOp.STOP, "kill": ProcdOp.KILL, "reap": ProcdOp.REAP, "status": ProcdOp.STATUS}[step.kind]
    return process_request(op, ids[step.target % len(ids)] if ids else 0)


def run_lifecycle(steps: Sequence[LifecycleStep]) -> list[Status | None]:
    """Boot procd and carry out `steps` in order, each checked against the spec (ProcdMisbehaved
    if procd breaks its contract); each step's status (None for time and the interrupt)."""
    talk, follower = talk_to_procd()
    ids: list[int] = []
    return [perform(talk, follower, step, ids) for step in steps]
