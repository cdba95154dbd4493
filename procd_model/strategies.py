"""Hypothesis strategies for procd's IPC surface, for your own property tests and fuzzing.

Every strategy draws plain values (`Request`s, `NearValid`s, `LifecycleStep`s, `Scenario`s), so
a test decides what to do with them. Paste this into a test of your own::

    from hypothesis import given, settings
    from procd_model.harness import agree, reply_status, talk_to_procd
    from procd_model.strategies import near_valid_spawns

    @settings(max_examples=50, deadline=None)
    @given(near=near_valid_spawns())
    def test_procd_refuses_a_spawn_with_one_field_wrong(near):
        talk, follower = talk_to_procd()
        status = reply_status(talk.ask(near.request))   # exactly one defined status
        agree(talk, follower)                            # as the executable spec says
        assert status.name != "OK", f"accepted with a wrong {near.wrong}"

What each one draws:

- `valid_spawns()`: SPAWN_SERVICE requests procd accepts from rootd (a test image as TEST, or
  svc-stub as a service role; a restart policy; dependencies on service roles).
- `near_valid_spawns()`: a valid spawn with exactly one thing wrong (`NearValid.wrong` names it:
  length, role, image, flags, restart, dependencies or capability).
- `arbitrary_requests()`: any op number (procd's, the kernel events', others) with any payload,
  from any caller, with or without an attached capability.
- `callers()`: badges with (`authority=True`) or without (`False`) rootd's authority, or both.
- `lifecycle_sequences()`: lists of `LifecycleStep`s (spawn, stop, kill, reap, status, list,
  time passing, sleeping, the interrupt, a child killed from outside) whose ids refer to earlier spawns
  by position.
- `boot_manifests()`: whole scenarios (rootd's boot manifest), checked by the scenario loader.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from procd_model.abi import (
    BADGE_ROOTD,
    MSG_MAX_PAYLOAD,
    SPAWN_SERVICE_REQUEST,
    EnvelopeFlag,
    KernelEvent,
    ProcdOp,
    RestartPolicy,
    Role,
)
from procd_model.client import Request
from procd_model.harness import CHILD_BADGES, FOREIGN_BADGES, spawn_request
from procd_model.images import BOOT_IMAGES
from procd_model.messages import Message
from procd_model.scenario import Scenario, parse_scenario

TEST_IMAGES = ("phase0-exit", "phase0-fault-kill", "phase2-irq-client", "phase0-probe", "svc-stub", "phase1-spawner")
"""Images procd may spawn as TEST: exits 0; faults; waits for the interrupt; reports a probe and
exits; never ends; SPAWNs a child (needs the SPAWNER flag)."""
SERVICE_ROLES = (Role.NAMED, Role.TIMED, Role.LOGD, Role.DEVICED)
"""Roles svc-stub stands in for, that other spawns may depend on."""
UNKNOWN_IMAGE_ID = max(image.image_id for image in BOOT_IMAGES) + 1
"""An image id no boot image has."""

restart_policies: st.SearchStrategy[dict[str, int]] = st.one_of(
    st.just({}),
    st.fixed_dictionaries(
        {
            "restart": st.sampled_from(list(RestartPolicy)),
            "max_restarts": st.integers(0, 3),
            "window_ms": st.sampled_from([60_000, 0, 1, 5]),
            "backoff_ms": st.sampled_from([0, 1, 5, 40]),
        }
    ),
)
"""spawn_service_request's restart fields: none (never restarted) or a policy with a small bound
and a window that is long, 0 (never cleared) or short (cleared by a run that lasts)."""

dependencies = st.one_of(
    st.just(0), st.sets(st.sampled_from(SERVICE_ROLES), max_size=2).map(lambda rs: sum(1 << r for r in rs))
)
"""A depends_on mask over service roles (0 most often)."""


@st.composite
def spawn_fields(draw: st.DrawFn) -> dict[str, int | str]:
    """The fields of a spawn_service_request procd accepts from rootd (with `image` by name)."""
    image = draw(st.sampled_from((*TEST_IMAGES, "svc-stub as service")))
    policy = draw(restart_policies)
    if image == "svc-stub as service":
        role = draw(st.sampled_from(SERVICE_ROLES))
        depends_on = draw(dependencies) & ~(1 << role)
        return {"image": "svc-stub", "role": role, "flags": 0, "depends_on": depends_on, **policy}
    flags = int(EnvelopeFlag.REQUIRED) if draw(st.booleans()) else 0
    if image == "phase1-spawner":
        flags |= EnvelopeFlag.SPAWNER
    return {"image": image, "role": Role.TEST, "flags": flags, "depends_on": draw(dependencies), **policy}


def _request(fields: dict[str, int | str]) -> Request:
    values = {k: int(v) for k, v in fields.items() if k not in ("image", "role")}
    return spawn_request(str(fields["image"]), Role(int(fields["role"])), **values)


def valid_spawns() -> st.SearchStrategy[Request]:
    """SPAWN_SERVICE requests from rootd that procd accepts (OK, or held until its dependencies run)."""
    return spawn_fields().map(_request)


@dataclass(frozen=True)
class NearValid:
    """A valid spawn with exactly one thing wrong: `wrong` names it."""

    request: Request
    wrong: str


WRONG_FIELDS = ("length", "role", "image", "flags", "restart", "dependencies", "capability")
"""What `near_valid_spawns` gets wrong, one per example."""


@st.composite
def near_valid_spawns(draw: st.DrawFn) -> NearValid:
    """A SPAWN_SERVICE from rootd that procd must refuse: a valid spawn with one thing wrong
    (a wrong image comes without dependencies, so it is not held but refused)."""
    fields = draw(spawn_fields())
    wrong = draw(st.sampled_from(WRONG_FIELDS))
    if wrong == "image":
        # procd holds a spawn with dependencies without asking the kernel (OK, pid 0); only its
        # launch would meet the unknown image. Without dependencies the kernel refuses it at once.
        fields["depends_on"] = 0
    if wrong == "capability":
        request = _request(fields)
        return NearValid(Request(request.message, attach_cap=True), wrong)
    if wrong == "length":
        message = _request(fields).message
        assert isinstance(message, Message)
        exact = SPAWN_SERVICE_REQUEST.size
        boundary = st.sampled_from([exact - 1, exact + 1, 0, MSG_MAX_PAYLOAD])
        size = draw(st.one_of(boundary, st.integers(0, MSG_MAX_PAYLOAD)).filter(lambda n: n != exact))
        payload = (message.payload + bytes(size))[:size]
        return NearValid(Request(Message(message.op, payload)), wrong)
    valid = _request(fields).message
    assert isinstance(valid, Message)
    field, value = draw(_wrong_value(wrong, fields))
    payload = SPAWN_SERVICE_REQUEST.pack(**{**SPAWN_SERVICE_REQUEST.unpack(valid.payload), field: value})
    return NearValid(Request(Message(ProcdOp.SPAWN_SERVICE, payload)), wrong)


def _wrong_value(wrong: str, fields: dict[str, int | str]) -> st.SearchStrategy[tuple[str, int]]:
    """The field and a value for it that makes the spawn invalid."""
    known_flags = int(EnvelopeFlag.REQUIRED | EnvelopeFlag.BOOTSTRAP_CRITICAL | EnvelopeFlag.SPAWNER)
    refused_roles = [0, Role.ROOTD, Role.PROCD, 0xFFFF, max(Role) + 1]
    choices: dict[str, st.SearchStrategy[int]] = {
        "role": st.sampled_from(refused_roles),
        "image": st.sampled_from([0, UNKNOWN_IMAGE_ID, 0xFFFF_FFFF]),
        "flags": st.integers(1, 0xFFFF)
        .map(lambda bits: (bits << 3) & 0xFFFF | int(fields["flags"]))
        .filter(lambda f: f & ~known_flags != 0),
        "restart": st.integers(max(RestartPolicy) + 1, 0xFF),
        "dependencies": st.sampled_from([1 << int(fields["role"]), 1 << 63, 1 << Role.ROOTD | 1 << 40]),
    }
    name = {"image": "image_id", "dependencies": "depends_on"}.get(wrong, wrong)
    return choices[wrong].map(lambda value: (name, value))


def callers(authority: bool | None = None) -> st.SearchStrategy[int]:
    """Badges a request comes through: rootd's (`authority=True`), a foreign or a child's
    (`False`), or any of them (`None`)."""
    without = st.sampled_from((*FOREIGN_BADGES, *CHILD_BADGES))
    if authority is None:
        return st.one_of(st.just(BADGE_ROOTD), without)
    return st.just(BADGE_ROOTD) if authority else without


OP_NUMBERS = (*(int(op) for op in ProcdOp), *(int(e) for e in KernelEvent), 0, 0x7FFF_FFFF, 0xFFFF_FFFF)
"""procd's ops, the kernel events (forged when a client sends them) and numbers nobody uses."""


@st.composite
def arbitrary_requests(draw: st.DrawFn) -> Request:
    """Any op with any payload (at most MSG_MAX_PAYLOAD bytes), from any caller, sometimes with
    a capability attached."""
    op = draw(st.one_of(st.sampled_from(OP_NUMBERS), st.integers(0, 0xFFFF_FFFF)))
    payload = draw(st.binary(max_size=MSG_MAX_PAYLOAD))
    return Request(Message(op, payload), badge=draw(callers()), attach_cap=draw(st.booleans()))


@dataclass(frozen=True)
class LifecycleStep:
    """One step of a lifecycle. `kind`:

    - spawn (a valid SPAWN_SERVICE) or request (anything): `request` is sent; an OK reply to a
      spawn gives an id later steps can name;
    - stop, kill, reap, status: that op for the id of an earlier spawn, by position in
      `target` (modulo the spawns made so far), through `badge`;
    - list; time (virtual time passes to the next timer); interrupt (the services' interrupt);
    - sleep: `target` virtual milliseconds pass (timers due in between fire);
    - terminate: procd's live child number `target` (modulo their number) is killed from outside.
    """

    kind: str
    request: Request | None = None
    target: int = 0
    badge: int = BADGE_ROOTD


LIFECYCLE_KINDS = ("stop", "kill", "reap", "status", "list", "time", "sleep", "interrupt", "terminate")
"""The steps of `lifecycle_steps` that carry no request."""


def lifecycle_steps() -> st.SearchStrategy[LifecycleStep]:
    """One lifecycle step: a valid spawn half of the time; ops on earlier spawns come from rootd
    mostly, sometimes from a caller without authority."""
    spawn = valid_spawns().map(lambda request: LifecycleStep("spawn", request))
    badge = st.one_of(st.just(BADGE_ROOTD), st.just(BADGE_ROOTD), callers(authority=False))
    other = st.builds(LifecycleStep, st.sampled_from(LIFECYCLE_KINDS), st.none(), st.integers(0, 31), badge)
    return st.one_of(spawn, other)


def lifecycle_sequences(max_size: int = 20) -> st.SearchStrategy[list[LifecycleStep]]:
    """Lists of lifecycle steps that start with a spawn."""
    first = valid_spawns().map(lambda request: LifecycleStep("spawn", request))
    return st.builds(lambda head, tail: [head, *tail], first, st.lists(lifecycle_steps(), max_size=max_size - 1))


BOOT_ROLES = ("MEMD", "VSPACED", "PAGERD")
"""Services rootd may start itself before procd in a manifest."""


@st.composite
def boot_manifests(draw: st.DrawFn) -> Scenario:
    """A whole scenario: services rootd starts before procd, and rootd's spawns of test images
    (each expected to succeed), checked by the scenario loader like any scenario file."""
    lines = ['name = "drawn"', 'description = "drawn by procd_model.strategies.boot_manifests"']
    before = draw(st.lists(st.sampled_from(BOOT_ROLES), unique=True, max_size=3))
    if before:
        lines += ["[boot]", "before_procd = [" + ", ".join(f'"{r}"' for r in before) + "]"]
    lines.append("[services]")
    ends = {"phase0-exit": "exit 0", "phase0-fault-kill": None, "svc-stub": "alive", "phase0-probe": "exit 0"}
    for image in draw(st.lists(st.sampled_from(sorted(ends)), min_size=1, max_size=4)):
        lines += ["[[spawn]]", f'image = "{image}"', 'role = "TEST"']
        if ends[image] is not None:
            lines.append(f'ends = "{ends[image]}"')
        else:
            lines.append('ends = "fault unmapped-write"')
        if image == "phase0-probe":
            lines.append("probe = true")
        policy = draw(st.sampled_from(["never", "on-failure", "always"]))
        if policy != "never" and image != "svc-stub":
            lines += [f'restart = "{policy}"', f"max_restarts = {draw(st.integers(0, 2))}", "backoff_ms = 1"]
    return parse_scenario("\n".join(lines) + "\n", "<boot_manifests>")
