"""A campaign's inputs: byte strings decoded into lifecycle steps, a few bytes per step.

Every byte string is a valid input (decoding stops where the bytes run out), each step is a short
fixed layout, so a mutated byte changes one field of one step (an image, a restart bound, a
window, a badge) and a splice keeps whole steps. The first byte of a step picks its kind:

| kind | bytes after the kind | the step |
|---|---|---|
| spawn | image, role, flags, policy, bound, window, backoff, depends | rootd's SPAWN_SERVICE (mostly valid) |
| bent-spawn | the spawn's 8, then bend | a spawn whose length is off by up to 4, or with a capability |
| request | op, badge, attach, length, payload... | any op from any caller, `length` payload bytes |
| stop, kill, reap, status | target, badge | that op on the id of the target-th OK spawn |
| list | badge | LIST |
| time, interrupt | - | time passes to the next timer; the services' interrupt |
| sleep | ms | that many milliseconds (from a table) pass |
| terminate | target | procd's live child number `target` is killed from outside |

`encode_steps` writes the bytes back for the steps it can express, so a campaign can start from
known lifecycles.
"""

from __future__ import annotations

from procd_model.abi import (
    BADGE_ROOTD,
    SPAWN_SERVICE_REQUEST,
    EnvelopeFlag,
    ProcdOp,
    RestartPolicy,
    Role,
)
from procd_model.client import Request
from procd_model.harness import CHILD_BADGES, FOREIGN_BADGES
from procd_model.images import boot_image_named
from procd_model.messages import Message
from procd_model.strategies import OP_NUMBERS, SERVICE_ROLES, TEST_IMAGES, UNKNOWN_IMAGE_ID, LifecycleStep

KINDS = (
    "spawn",
    "spawn",
    "spawn",
    "request",
    "request",
    "stop",
    "kill",
    "reap",
    "status",
    "list",
    "time",
    "time",
    "sleep",
    "sleep",
    "interrupt",
    "terminate",
    "terminate",
    "bent-spawn",
    "bent-spawn",
)
"""Kind by the step's first byte (modulo): spawns, time and deaths come more often."""
IMAGES = (*TEST_IMAGES, "svc-stub")
ROLES = (Role.TEST, *SERVICE_ROLES, Role.PROCD, 0xFFFF)
"""TEST for test images, a service role for svc-stub, and two procd refuses."""
FLAGS = (0, EnvelopeFlag.REQUIRED, EnvelopeFlag.SPAWNER, EnvelopeFlag.REQUIRED | EnvelopeFlag.SPAWNER, 0x80)
POLICIES = (RestartPolicy.NEVER, RestartPolicy.ON_FAILURE, RestartPolicy.ALWAYS, 7)
BOUNDS = (0, 1, 2, 3, 255)
WINDOWS = (60_000, 0, 1, 5, 1_000)
BACKOFFS = (0, 1, 5, 40)
SLEEPS = (1, 2, 6, 20, 100, 1_000)
BADGES = (BADGE_ROOTD, BADGE_ROOTD, BADGE_ROOTD, *FOREIGN_BADGES, *CHILD_BADGES[:4])
MAX_STEPS = 16


def _pick(table: tuple[int, ...] | tuple[str, ...], byte: int) -> int | str:
    return table[byte % len(table)]


def decode_steps(data: bytes, limit: int = MAX_STEPS) -> list[LifecycleStep]:
    """The steps `data` encodes (at most `limit`, and at most MAX_STEPS; a step cut short by the
    end is dropped)."""
    steps: list[LifecycleStep] = []
    at = 0
    limit = min(limit, MAX_STEPS)
    while at < len(data) and len(steps) < limit:
        kind = str(_pick(KINDS, data[at]))
        step, at = _decode_one(kind, data, at + 1)
        if step is None:
            break
        steps.append(step)
    return steps


_NEEDS = {
    "spawn": 8,
    "bent-spawn": 9,
    "request": 4,
    "stop": 2,
    "kill": 2,
    "reap": 2,
    "status": 2,
    "list": 1,
    "sleep": 1,
    "terminate": 1,
}
"""The bytes each step kind reads after its kind byte (a request reads its payload too)."""


def _decode_one(kind: str, data: bytes, at: int) -> tuple[LifecycleStep | None, int]:
    need = _NEEDS.get(kind, 0)
    if at + need > len(data):
        return None, at
    field = data[at : at + need]
    if kind == "spawn":
        return LifecycleStep("spawn", _spawn(field)), at + need
    if kind == "bent-spawn":
        return LifecycleStep("request", _bent(_spawn(field), field[8])), at + need
    if kind == "request":
        length = field[3]
        payload = data[at + need : at + need + length]
        op = int(_pick(OP_NUMBERS, field[0]))
        badge = int(_pick(BADGES, field[1]))
        return LifecycleStep("request", Request(Message(op, payload), badge, bool(field[2] & 1))), at + need + len(
            payload
        )
    if kind in ("stop", "kill", "reap", "status"):
        return LifecycleStep(kind, None, field[0], int(_pick(BADGES, field[1]))), at + need
    if kind == "list":
        return LifecycleStep(kind, None, 0, int(_pick(BADGES, field[0]))), at + need
    if kind == "sleep":
        return LifecycleStep(kind, None, int(_pick(SLEEPS, field[0]))), at + need
    if kind == "terminate":
        return LifecycleStep(kind, None, field[0]), at + need
    return LifecycleStep(kind), at


def _spawn(field: bytes) -> Request:
    image = str(_pick(IMAGES, field[0]))
    role = int(_pick(ROLES, field[1]))
    image_id = UNKNOWN_IMAGE_ID if field[0] == 0xFF else boot_image_named(image).image_id
    depends = sum(1 << r for i, r in enumerate(SERVICE_ROLES) if field[7] >> i & 1)
    payload = SPAWN_SERVICE_REQUEST.pack(
        image_id=image_id,
        role=role,
        flags=int(_pick(FLAGS, field[2])),
        restart=int(_pick(POLICIES, field[3])),
        max_restarts=int(_pick(BOUNDS, field[4])),
        window_ms=int(_pick(WINDOWS, field[5])),
        backoff_ms=int(_pick(BACKOFFS, field[6])),
        depends_on=depends,
    )
    return Request(Message(ProcdOp.SPAWN_SERVICE, payload))


def _bent(spawn: Request, bend: int) -> Request:
    """`spawn` with a capability attached (bend >= 0x80), or its payload 1..4 bytes shorter or
    longer (cut, or padded with zeros)."""
    if bend >= 0x80:
        return Request(spawn.message, spawn.badge, attach_cap=True)
    message = spawn.message
    assert isinstance(message, Message)
    delta = (1 + bend % 4) * (1 if bend & 0x40 else -1)
    size = len(message.payload) + delta
    return Request(Message(message.op, (message.payload + bytes(4))[:size]), spawn.badge)


def encode_spawn(
    image: str,
    role: Role = Role.TEST,
    flags: int = 0,
    policy: int = 0,
    bound: int = 0,
    window: int = 60_000,
    backoff: int = 0,
) -> bytes:
    """The bytes of one spawn step (each value must be in its table)."""
    return bytes(
        [
            KINDS.index("spawn"),
            IMAGES.index(image),
            ROLES.index(role),
            FLAGS.index(flags),
            POLICIES.index(policy),
            BOUNDS.index(bound),
            WINDOWS.index(window),
            BACKOFFS.index(backoff),
            0,
        ]
    )


def encode_step(kind: str, value: int = 0) -> bytes:
    """The bytes of one step without a request: `value` is a target, or a sleep's milliseconds."""
    code = KINDS.index(kind)
    if kind == "sleep":
        return bytes([code, SLEEPS.index(value)])
    if kind in ("stop", "kill", "reap", "status"):
        return bytes([code, value, 0])
    if kind in ("list", "terminate"):
        return bytes([code, value])
    return bytes([code])


def seed_inputs() -> list[bytes]:
    """Lifecycles a campaign starts from: a spawn of each kind of child, a restart after a kill
    and after a while, a restart storm, a SPAWN from an authorised child, the interrupt."""
    restart = encode_spawn("svc-stub", policy=RestartPolicy.ON_FAILURE, bound=3, window=5, backoff=1)
    storm = encode_spawn("phase0-fault-kill", policy=RestartPolicy.ON_FAILURE, bound=3, window=1_000, backoff=1)
    return [
        encode_spawn("phase0-exit"),
        restart
        + encode_step("terminate")
        + encode_step("time")
        + encode_step("sleep", 20)
        + encode_step("terminate")
        + encode_step("time"),
        storm + encode_step("time") + encode_step("time") + encode_step("time") + encode_step("list"),
        encode_spawn("phase1-spawner", flags=EnvelopeFlag.SPAWNER) + encode_step("time"),
        encode_spawn("phase2-irq-client") + encode_step("interrupt") + encode_step("status"),
        encode_spawn("svc-stub", Role.NAMED) + encode_step("stop") + encode_step("reap"),
    ]
