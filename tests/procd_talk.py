"""Shared by the tests that talk to the native procd one request at a time and hold every step
against the executable spec (procd_model/reference.py): building requests, and the check."""

from __future__ import annotations

from emu.trace import Trace
from procd_model.abi import (
    BADGE_ROOTD,
    PROCD_CHILD_BADGE_BASE,
    PROCD_ID_GENERATION_SHIFT,
    PROCD_MAX_PROCESSES,
    PROCESS_REQUEST,
    PROCESS_STATUS,
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

FOREIGN_BADGES = (2, 7, 0xFFFF, PROCD_CHILD_BADGE_BASE - 1, PROCD_CHILD_BADGE_BASE + PROCD_MAX_PROCESSES)
"""Badges no request should be honoured from: not rootd's, not a child's."""
CHILD_BADGES = tuple(PROCD_CHILD_BADGE_BASE + i for i in range(PROCD_MAX_PROCESSES))
ALL_BADGES = (BADGE_ROOTD, *FOREIGN_BADGES, *CHILD_BADGES)

Answer = tuple[Status, Message | None] | None


def talk_to_procd(max_instructions: int = 20_000_000) -> tuple[Conversation, SpecFollower]:
    """procd booted with services (crashd among them), a client holding every badge of
    ALL_BADGES, and a spec following it."""
    talk = Conversation(ALL_BADGES, Services(), max_instructions=max_instructions, trace=Trace())
    spec = ProcdSpec(holds=frozenset({CapPurpose.CRASHD_ENDPOINT}))
    return talk, SpecFollower(spec, talk.procd.pid)


def agree(talk: Conversation, follower: SpecFollower) -> list[Step]:
    """Every request procd took since the last call was handled as the spec says, and procd
    is alive; the steps."""
    steps, divergence = follower.check(talk.trace.events)
    assert divergence is None, divergence.describe()
    assert not talk.procd.state.is_dead, f"procd died: {talk.procd.fault or talk.procd.exit_code}"
    return steps


def reply_status(answer: Answer) -> Status:
    """The status procd replied with; fails unless the CALL got exactly a defined status."""
    assert answer is not None, "procd never answered the CALL"
    syscall, reply = answer
    assert syscall is Status.OK and reply is not None, f"the CALL itself failed: {syscall.name}"
    assert not reply.caps, "a reply carries no capabilities"
    return Status(reply.op)  # ValueError for a status the ABI does not define


def spawn_request(image: str, role: Role = Role.TEST, **fields: int) -> Request:
    payload = SPAWN_SERVICE_REQUEST.pack(image_id=boot_image_named(image).image_id, role=role, **fields)
    return Request(Message(ProcdOp.SPAWN_SERVICE, payload))


def process_id(index: int, generation: int) -> int:
    return index | generation << PROCD_ID_GENERATION_SHIFT


def process_request(op: ProcdOp, proc_id: int, badge: int = BADGE_ROOTD) -> Request:
    return Request(Message(op, PROCESS_REQUEST.pack(id=proc_id)), badge=badge)


def listed(reply: Message) -> list[dict[str, int]]:
    """The records of an OK LIST reply, with the fields the spec predicts."""
    size = PROCESS_STATUS.size
    assert len(reply.payload) % size == 0
    keys = ("id", "pid", "image_id", "role", "state", "flags")
    records = [PROCESS_STATUS.unpack(reply.payload, at) for at in range(0, len(reply.payload), size)]
    return [{k: r[k] for k in keys} for r in records]
