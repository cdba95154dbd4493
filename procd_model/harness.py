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

from emu.elf import ElfImage
from emu.events import IPC_RECV, IPC_REPLY, IPC_SEND, NOTIFY
from emu.trace import Trace
from emu.world import Instrument
from procd_model.abi import (
    BADGE_ROOTD,
    INTAKE,
    PROCD_CHILD_BADGE_BASE,
    PROCD_ID_GENERATION_SHIFT,
    PROCD_MAX_PROCESSES,
    PROCESS_REQUEST,
    PROCESS_STATUS,
    SPAWN_SERVICE_REPLY,
    SPAWN_SERVICE_REQUEST,
    CapPurpose,
    CapType,
    ProcdOp,
    Role,
    Status,
)
from procd_model.client import Conversation, Request
from procd_model.cpu_model import DEFAULT_CPU, cpu_model
from procd_model.images import boot_image_named
from procd_model.messages import Message
from procd_model.reference import Divergence, ProcdSpec, SpecFollower, Step
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
    with something that is not exactly one defined status.

    `key` names the failure without the example's particulars (which op, which of the spec's
    observations differ, where procd faulted), so a fuzzer can tell distinct failures apart.
    """

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


def divergence_key(divergence: Divergence) -> str:
    """The op and which observations differ: `divergence:SPAWN_SERVICE:reply,kernel_calls`."""
    op = divergence.step.request.describe().split(" ", 1)[0]
    differ = [name for name in ACTION_FIELDS if getattr(divergence.native, name) != getattr(divergence.spec, name)]
    native, spec = divergence.native.reply, divergence.spec.reply
    if native is not None and spec is not None and native[0] != spec[0]:
        differ = [f"status {native[0]} not {spec[0]}", *differ]
    return f"divergence:{op}:{','.join(differ)}"


ACTION_FIELDS = ("kernel_calls", "notifies", "crash_reports", "reply")
"""The observations of `reference.Actions`, in the order failure keys name them."""


SPEC_EVENTS = frozenset({IPC_SEND, IPC_RECV, IPC_REPLY, NOTIFY})
"""The events whose typed data the spec follower reads (`reference.native_steps`)."""


def talk_to_procd(
    max_instructions: int = 20_000_000,
    procd_image: ElfImage | None = None,
    instrument: Instrument | None = None,
    *,
    lean: bool = False,
    cpu: str = DEFAULT_CPU,
) -> tuple[Conversation, SpecFollower]:
    """procd (the committed one, or `procd_image`) booted with services (crashd among them), a
    client holding every badge of ALL_BADGES, and a spec following it; `instrument` sees every
    guest CPU before it runs. `lean`: the trace keeps only what the follower reads
    (`Trace.data_only(SPEC_EVENTS)`: no digest, no fields), as a fuzz campaign needs. `cpu`
    names the CPU model of the virtual clock."""
    talk = Conversation(
        ALL_BADGES,
        Services(),
        max_instructions=max_instructions,
        trace=Trace.data_only(SPEC_EVENTS) if lean else Trace(),
        procd_image=procd_image,
        instrument=instrument,
        cpu=cpu_model(cpu),
    )
    spec = ProcdSpec(holds=frozenset({CapPurpose.CRASHD_ENDPOINT}))
    return talk, SpecFollower(spec, talk.procd.pid)


def agree(talk: Conversation, follower: SpecFollower) -> list[Step]:
    """Every request procd took since the last call was handled as the spec says, and procd
    is alive; the steps."""
    steps, divergence = follower.check(talk.trace.events)
    if talk.procd.state.is_dead:
        raise procd_died(talk)
    if divergence is not None:
        raise ProcdMisbehaved(divergence.describe(), divergence_key(divergence))
    return steps


def reply_status(answer: Answer) -> Status:
    """The status procd replied with; ProcdMisbehaved unless the CALL got exactly a defined status."""
    if answer is None:
        raise ProcdMisbehaved("procd never answered the CALL", "no-reply")
    syscall, reply = answer
    if syscall is not Status.OK or reply is None:
        raise ProcdMisbehaved(f"the CALL itself failed: {syscall.name}", f"call-failed:{syscall.name}")
    if reply.caps:
        raise ProcdMisbehaved("a reply carries capabilities", "reply-with-caps")
    try:
        return Status(reply.op)
    except ValueError:
        raise ProcdMisbehaved(
            f"procd replied with status {reply.op:#x}, which the ABI does not define", "undefined-status"
        ) from None


def procd_died(talk: Conversation) -> ProcdMisbehaved:
    """procd is dead: where it faulted (its symbol) or how it exited."""
    procd = talk.procd
    fault = procd.fault
    if fault is None:
        last = procd.last_log or ""
        if last.startswith("panic at "):  # rt's panic handler: `panic at FILE:LINE: MESSAGE`
            site = last.removeprefix("panic at ").split(": ", 1)[0]
            return ProcdMisbehaved(f"procd panicked: {last}", f"panic:{site}")
        return ProcdMisbehaved(f"procd exited with {procd.exit_code}", f"exit:{procd.exit_code}")
    found = procd.image.symbolize(fault.rip) if procd.image is not None else None
    where = f"{found[0]}+{found[1]:#x}" if found is not None else f"{fault.rip:#x}"
    return ProcdMisbehaved(f"procd faulted: {fault.describe()} in {where}", f"fault:{fault.kind.value}@{where}")


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
    """Carry out one lifecycle step and check it against the spec and the intake invariant
    (`check_children`): the reply's status for a request (an OK spawn's id is appended to `ids`),
    None for time passing, sleeping, the interrupt or a kill from outside."""
    status: Status | None = None
    if step.kind == "time":
        talk.pass_time()
    elif step.kind == "sleep":
        talk.sleep(step.target)
    elif step.kind == "interrupt":
        talk.interrupt()
    elif step.kind == "terminate":
        children = live_children(talk)
        if children:
            talk.terminate(children[step.target % len(children)])
    else:
        request = _step_request(step, ids)
        answer = talk.ask(request)
        status = reply_status(answer)
        spawned = isinstance(request.message, Message) and request.message.op in (ProcdOp.SPAWN_SERVICE, ProcdOp.SPAWN)
        if spawned and status is Status.OK and answer is not None and answer[1] is not None:
            reply = answer[1].payload
            if len(reply) >= SPAWN_SERVICE_REPLY.size:
                ids.append(SPAWN_SERVICE_REPLY.unpack(reply)["id"])
    agree(talk, follower)
    check_children(talk, follower)
    return status


def _step_request(step: LifecycleStep, ids: list[int]) -> Request:
    if step.kind in ("spawn", "request"):
        if step.request is None:
            raise ValueError(f"a {step.kind} step carries its request")
        return step.request
    if step.kind == "list":
        return Request(Message(ProcdOp.LIST, b""), badge=step.badge)
    op = {"stop": ProcdOp.STOP, "kill": ProcdOp.KILL, "reap": ProcdOp.REAP, "status": ProcdOp.STATUS}[step.kind]
    return process_request(op, ids[step.target % len(ids)] if ids else 0, step.badge)


def run_lifecycle(steps: Sequence[LifecycleStep]) -> list[Status | None]:
    """Boot procd and carry out `steps` in order, each checked against the spec (ProcdMisbehaved
    if procd breaks its contract); each step's status (None for steps without a request)."""
    talk, follower = talk_to_procd()
    ids: list[int] = []
    return [perform(talk, follower, step, ids) for step in steps]


def live_children(talk: Conversation) -> list[int]:
    """Pids of the live guest processes procd created (it supervises them), ascending."""
    procd = talk.procd
    return sorted(
        p.pid
        for p in talk.kernel.procs.values()
        if p.is_guest and p.supervisor == procd.endpoint and not p.state.is_dead
    )


def check_children(talk: Conversation, follower: SpecFollower) -> None:
    """Every live child of procd is in the spec's table, and holds no capability its role's
    intake spec does not list, or with wider rights than it lists (ProcdMisbehaved)."""
    roles = {r["pid"]: Role(r["role"]) for r in follower.spec.listing() if r["pid"]}
    for pid in live_children(talk):
        role = roles.get(pid)
        if role is None:
            raise ProcdMisbehaved(f"pid {pid} is procd's child but not in its table", "untracked-child")
        allowed = INTAKE.get(role, INTAKE[None])
        for slot, cap in talk.kernel.procs[pid].caps.occupied():
            if not any(cap.cap_type == e.cap_type and cap.rights & ~e.rights == 0 for e in allowed):
                raise ProcdMisbehaved(
                    f"pid {pid} ({role.name}) holds {cap} in slot {slot}, outside its intake spec",
                    f"capability-outside-intake:{role.name}:{CapType(cap.cap_type).name}",
                )
