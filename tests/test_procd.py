"""The native procd under the emulator: envelope and intake refusal, and its request loop."""

from __future__ import annotations

import pytest
from elfcraft import code_image
from hypothesis import given, settings
from hypothesis import strategies as st

from emu.elf import load_elf
from emu.trace import Trace
from emu.world import RunOutcome
from procd_model import world
from procd_model.abi import (
    AUDIT_READ_REQUEST,
    AUDIT_RECORD,
    BADGE_ROOTD,
    CHILD_DEATH,
    CRASH_RECORD,
    ENVELOPE_HEADER,
    ENVELOPE_MAGIC,
    PROCD_ID_GENERATION_SHIFT,
    PROCD_MAX_PROCESSES,
    PROCESS_REQUEST,
    PROCESS_STATUS,
    SPAWN_SERVICE_REPLY,
    SPAWN_SERVICE_REQUEST,
    AuditAction,
    CapPurpose,
    DeathKind,
    EnvelopeFlag,
    KernelEvent,
    ProcdOp,
    ProcState,
    RestartPolicy,
    Rights,
    Role,
    StartupStatus,
    Status,
)
from procd_model.abi import FaultKind as AbiFaultKind
from procd_model.client import Request, ask_all
from procd_model.images import BOOT_IMAGES, boot_image, boot_image_named
from procd_model.messages import EnvelopeSlot, Grant, Message, build_envelope
from procd_model.reference import UNSPAWNABLE, ProcdSpec, check_against_spec, native_steps
from procd_model.rootd import SLOT_BOOT_NOTIFY_SEND, SLOT_KERNEL_CONTROL, ProcdBoot, Services, default_procd_boot
from procd_model.world import run_bootstrap

GOOD_SLOTS = [
    EnvelopeSlot(1, CapPurpose.SELF_ENDPOINT),
    EnvelopeSlot(2, CapPurpose.KERNEL_CONTROL),
    EnvelopeSlot(3, CapPurpose.BOOTSTRAP_NOTIFY),
]
GOOD_GRANTS = default_procd_boot().grants


def boot(boot_config: ProcdBoot | None = None) -> tuple[RunOutcome, Trace]:
    trace = Trace()
    return run_bootstrap(trace, 20_000_000, manifest=(), boot=boot_config), trace


FLAGS = EnvelopeFlag.REQUIRED


def patched(**fields: int) -> bytes:
    """The good envelope with header fields overwritten."""
    good = build_envelope(Role.PROCD, FLAGS, GOOD_SLOTS)
    header = ENVELOPE_HEADER.unpack(good)
    header.update(fields)
    return ENVELOPE_HEADER.pack(**header) + good[ENVELOPE_HEADER.size :]


REFUSALS = {
    "bad magic": (ProcdBoot(patched(magic=ENVELOPE_MAGIC ^ 1), GOOD_GRANTS), StartupStatus.BAD_MAGIC),
    "major 2": (ProcdBoot(patched(major=2), GOOD_GRANTS), StartupStatus.BAD_VERSION),
    "minor 2": (ProcdBoot(patched(minor=2), GOOD_GRANTS), StartupStatus.BAD_VERSION),
    "wrong role": (ProcdBoot(build_envelope(Role.TEST, FLAGS, GOOD_SLOTS), GOOD_GRANTS), StartupStatus.BAD_ROLE),
    "unknown role": (ProcdBoot(patched(role=999), GOOD_GRANTS), StartupStatus.BAD_ROLE),
    "unknown flag": (ProcdBoot(patched(flags=0x80), GOOD_GRANTS), StartupStatus.BAD_FLAGS),
    "reserved set": (ProcdBoot(patched(reserved0=5), GOOD_GRANTS), StartupStatus.BAD_RESERVED),
    "started role 0": (ProcdBoot(patched(started_roles=5), GOOD_GRANTS), StartupStatus.BAD_RESERVED),
    "started roles in minor 0": (
        ProcdBoot(patched(minor=0, started_roles=1 << Role.MEMD), GOOD_GRANTS),
        StartupStatus.BAD_RESERVED,
    ),
    "length lies": (ProcdBoot(patched(total_len=100), GOOD_GRANTS), StartupStatus.BAD_LENGTH),
    "slot zero": (
        ProcdBoot(
            build_envelope(Role.PROCD, FLAGS, [EnvelopeSlot(0, CapPurpose.SELF_ENDPOINT), *GOOD_SLOTS[1:]]), GOOD_GRANTS
        ),
        StartupStatus.BAD_SLOT_TABLE,
    ),
    "duplicate purpose": (
        ProcdBoot(
            build_envelope(Role.PROCD, FLAGS, [*GOOD_SLOTS, EnvelopeSlot(4, CapPurpose.SELF_ENDPOINT)]), GOOD_GRANTS
        ),
        StartupStatus.BAD_SLOT_TABLE,
    ),
    "kernel-control not handed over": (
        ProcdBoot(build_envelope(Role.PROCD, FLAGS, [GOOD_SLOTS[0], GOOD_SLOTS[2]]), GOOD_GRANTS),
        StartupStatus.INTAKE_MISSING,
    ),
    "notification slot empty": (
        ProcdBoot(
            build_envelope(Role.PROCD, FLAGS, [*GOOD_SLOTS[:2], EnvelopeSlot(9, CapPurpose.BOOTSTRAP_NOTIFY)]),
            GOOD_GRANTS,
        ),
        StartupStatus.INTAKE_MISSING,
    ),
    "kernel-control without SPAWN": (
        ProcdBoot(
            build_envelope(Role.PROCD, FLAGS, GOOD_SLOTS),
            [Grant(SLOT_KERNEL_CONTROL, Rights.SEND), Grant(SLOT_BOOT_NOTIFY_SEND, Rights.SEND)],
        ),
        StartupStatus.INTAKE_RIGHTS,
    ),
    "notification where kernel-control belongs": (
        ProcdBoot(
            build_envelope(
                Role.PROCD,
                FLAGS,
                [
                    GOOD_SLOTS[0],
                    EnvelopeSlot(3, CapPurpose.KERNEL_CONTROL),
                    EnvelopeSlot(2, CapPurpose.BOOTSTRAP_NOTIFY),
                ],
            ),
            GOOD_GRANTS,
        ),
        StartupStatus.INTAKE_WRONG_TYPE,
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_bad_envelope_or_intake_refuses_to_start(case: str) -> None:
    boot_config, status = REFUSALS[case]
    outcome, trace = boot(boot_config)
    assert not outcome.ok
    assert outcome.stop == "halted"
    assert f"procd refused to start: {status.name} (exit {int(status):#x})" in outcome.detail
    procd = next(p for p in outcome.processes if p["name"] == "procd")
    assert procd["state"] == "exited" and procd["exit_code"] == status
    logs = [e.fields["text"] for e in trace.of_kind("log")]
    reason = f"bootstrap halted: procd refused to start: {status.name} (exit {int(status):#x})"
    assert logs == [f"procd: startup refused: {status.name}", reason], "procd's line, then rootd's as it halts"
    assert not trace.of_kind("fault")


def test_good_envelope_is_accepted() -> None:
    outcome, trace = boot()
    assert outcome.ok, outcome.detail
    assert [e.fields["text"] for e in trace.of_kind("log")] == ["procd: envelope accepted"]


def spawn(image_id: int = 2, role: int = Role.TEST, flags: int = 0) -> Message:
    return Message(ProcdOp.SPAWN_SERVICE, SPAWN_SERVICE_REQUEST.pack(image_id=image_id, role=role, flags=flags))


MALFORMED = [
    ("wrong badge", Request(spawn(), badge=7), Status.DENIED),
    (
        "short payload",
        Request(Message(ProcdOp.SPAWN_SERVICE, b"\x02\x00\x00\x00\x20\x00\x00")),
        Status.INVALID_ARGUMENT,
    ),
    ("long payload", Request(Message(ProcdOp.SPAWN_SERVICE, spawn().payload + b"\x00")), Status.INVALID_ARGUMENT),
    ("empty payload", Request(Message(ProcdOp.SPAWN_SERVICE)), Status.INVALID_ARGUMENT),
    ("unknown role", Request(spawn(role=999)), Status.INVALID_ARGUMENT),
    ("role rootd", Request(spawn(role=Role.ROOTD)), Status.INVALID_ARGUMENT),
    ("role procd", Request(spawn(role=Role.PROCD)), Status.INVALID_ARGUMENT),
    ("role generic", Request(spawn(role=Role.GENERIC)), Status.INVALID_ARGUMENT),
    ("unknown flag", Request(spawn(flags=0x8000)), Status.INVALID_ARGUMENT),
    ("image 0", Request(spawn(image_id=0)), Status.INVALID_ARGUMENT),
    ("unknown image", Request(spawn(image_id=99)), Status.NOT_FOUND),
    ("unknown op", Request(Message(0x999, b"abc")), Status.INVALID_ARGUMENT),
    ("caps attached", Request(spawn(), attach_cap=True), Status.INVALID_ARGUMENT),
]


def test_malformed_requests_get_error_replies_and_procd_keeps_serving() -> None:
    requests = [r for _, r, _ in MALFORMED] + [Request(spawn())]
    session = ask_all(requests, Trace())
    assert session.procd is not None and session.kernel is not None
    got = [(s, Status(m.op) if m else None) for s, m in session.replies]
    expected = [(Status.OK, status) for _, _, status in MALFORMED] + [(Status.OK, Status.OK)]
    assert [name for (name, _, _), g, e in zip(MALFORMED, got, expected, strict=False) if g != e] == []
    assert got[-1] == (Status.OK, Status.OK)
    last = session.replies[-1][1]
    assert last is not None
    child_pid = SPAWN_SERVICE_REPLY.unpack(last.payload)["pid"]
    child = session.kernel.procs[child_pid]
    assert child.name == "phase0-exit" and child.exit_code == 0
    assert session.procd.state.value == "blocked", "procd is back in RECV"
    assert not session.trace.of_kind("fault")
    # The capability attached to a request was deleted, not kept, and the endpoint capability of
    # the child that ran and exited was dropped when procd learnt of its death: procd holds its
    # intake only.
    assert len(session.procd.caps.occupied()) == 3


def test_table_full_answers_busy() -> None:
    """Children that stay alive (irq clients waiting for an interrupt that never comes) fill the table."""
    waiter = boot_image_named("phase2-irq-client").image_id
    requests = [Request(spawn(image_id=waiter)) for _ in range(PROCD_MAX_PROCESSES + 2)]
    session = ask_all(requests, Trace(), services=Services())
    statuses = [Status(m.op) for _, m in session.replies if m is not None]
    assert statuses == [Status.OK] * PROCD_MAX_PROCESSES + [Status.BUSY] * 2


def test_children_that_die_free_their_entries() -> None:
    """procd learns of each death from the kernel, so short-lived children never fill its table."""
    requests = [Request(spawn()) for _ in range(PROCD_MAX_PROCESSES + 8)]
    session = ask_all(requests, Trace())
    statuses = [Status(m.op) for _, m in session.replies if m is not None]
    assert statuses == [Status.OK] * (PROCD_MAX_PROCESSES + 8)
    logs = [e.fields["text"] for e in session.trace.of_kind("log") if e.pid == session.procd.pid]  # type: ignore[union-attr]
    assert sum(1 for line in logs if line.endswith(" exited 0")) == PROCD_MAX_PROCESSES + 8


def test_forged_child_death_is_denied() -> None:
    forged = Message(KernelEvent.CHILD_DIED, CHILD_DEATH.pack(pid=3, kind=DeathKind.EXITED, code=0))
    session = ask_all([Request(forged), Request(spawn())], Trace())
    assert [Status(m.op) for _, m in session.replies if m is not None] == [Status.DENIED, Status.OK]


SPAWNABLE_ROLES = [role for role in Role if role.name not in UNSPAWNABLE]

valid_spawns = st.fixed_dictionaries(
    {
        "image_id": st.sampled_from([image.image_id for image in BOOT_IMAGES]),
        "role": st.sampled_from(SPAWNABLE_ROLES),
        "flags": st.integers(0, EnvelopeFlag.REQUIRED | EnvelopeFlag.BOOTSTRAP_CRITICAL | EnvelopeFlag.SPAWNER),
        "restart": st.sampled_from(list(RestartPolicy)),
        "max_restarts": st.integers(0, 3),
        "window_ms": st.sampled_from([0, 1, 1000, 0xFFFF_FFFF]),
        "backoff_ms": st.sampled_from([0, 1, 1000, 0xFFFF_FFFF]),
        "depends_on": st.one_of(
            st.just(0), st.sampled_from([role for role in Role if role < 64]).map(lambda r: 1 << r)
        ),
    }
).map(lambda fields: SPAWN_SERVICE_REQUEST.pack(**fields))
"""SPAWN_SERVICE payloads procd must accept as well formed (some still refused: an unmet
dependency is held, an image that does not serve the role fails to start)."""


@st.composite
def near_valid_spawns(draw: st.DrawFn) -> bytes:
    """A valid spawn payload with one byte changed, cut short or made longer."""
    payload = draw(valid_spawns)
    edit = draw(st.sampled_from(["change", "cut", "grow"]))
    if edit == "change":
        at = draw(st.integers(0, len(payload) - 1))
        return payload[:at] + bytes([draw(st.integers(0, 255))]) + payload[at + 1 :]
    if edit == "cut":
        return payload[: draw(st.integers(0, len(payload) - 1))]
    return payload + draw(st.binary(min_size=1, max_size=8))


requests_strategy = st.lists(
    st.tuples(
        st.one_of(st.just(ProcdOp.SPAWN_SERVICE), st.sampled_from([0, 0x401, 0x403, 0xFFFFFFFF])),
        st.one_of(valid_spawns, near_valid_spawns(), st.binary(max_size=40)),
        st.one_of(st.just(BADGE_ROOTD), st.sampled_from([0, 2])),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=25, deadline=None)
@given(requests_strategy)
def test_any_request_gets_a_reply_and_procd_survives(fuzz: list[tuple[int, bytes, int]]) -> None:
    """Whatever arrives (valid spawns, near-valid and arbitrary payloads, under any op and
    badge), procd answers every request with a defined status, as its specification says, and
    then spawns normally."""
    requests = [Request(Message(op, payload), badge=badge) for op, payload, badge in fuzz] + [Request(spawn())]
    session = ask_all(requests, Trace())
    assert session.procd is not None
    assert len(session.replies) == len(requests)
    for status, message in session.replies:
        assert status is Status.OK and message is not None
        assert message.op in set(Status)
    assert session.replies[-1][1] is not None and session.replies[-1][1].op == Status.OK
    # A valid spawn may start an image that faults by design (phase0-fault-kill): procd never does.
    assert not [e for e in session.trace.of_kind("fault") if e.pid == session.procd.pid]
    divergence = check_against_spec(native_steps(session.trace.events, session.procd.pid), ProcdSpec())
    assert divergence is None, divergence.describe()


@settings(max_examples=50, deadline=None)
@given(valid_spawns)
def test_the_fuzzed_valid_spawns_are_whole_well_formed_requests(payload: bytes) -> None:
    """The fuzz above can reach procd's spawn path: its valid payloads are whole spawn requests
    (28 bytes) whose every field passes procd's checks of form."""
    assert len(payload) == SPAWN_SERVICE_REQUEST.size
    fields = SPAWN_SERVICE_REQUEST.unpack(payload)
    assert boot_image(fields["image_id"]) is not None
    assert Role(fields["role"]).name not in UNSPAWNABLE
    assert fields["flags"] & ~int(EnvelopeFlag.REQUIRED | EnvelopeFlag.BOOTSTRAP_CRITICAL | EnvelopeFlag.SPAWNER) == 0
    assert fields["restart"] in set(RestartPolicy) and fields["reserved"] == 0


def manage(op: int, proc_id: int, reserved: int = 0) -> Message:
    return Message(op, PROCESS_REQUEST.pack(id=proc_id, reserved=reserved))


def test_stop_kill_status_and_list_with_generations() -> None:
    """rootd's hold over running processes; ids carry a generation so stale ids are refused."""
    waiter = boot_image_named("phase2-irq-client").image_id
    first_id = 0 | 1 << PROCD_ID_GENERATION_SHIFT  # index 0, first generation
    second_id = 0 | 2 << PROCD_ID_GENERATION_SHIFT  # index 0 again, after the first died
    requests = [
        Request(spawn(image_id=waiter)),
        Request(manage(ProcdOp.STATUS, first_id)),
        Request(Message(ProcdOp.LIST)),
        Request(manage(ProcdOp.STATUS, first_id), badge=7),
        Request(manage(ProcdOp.STOP, first_id)),
        Request(manage(ProcdOp.STATUS, first_id)),  # the stop completed: the id is stale now
        Request(spawn(image_id=waiter)),
        Request(manage(ProcdOp.STOP, first_id)),  # stale: must not touch the new occupant
        Request(manage(ProcdOp.KILL, second_id)),
        Request(manage(ProcdOp.KILL, second_id, reserved=1)),
        Request(Message(ProcdOp.LIST)),
    ]
    services = Services()
    session = ask_all(requests, Trace(), services=services)
    replies = [(Status(m.op), m.payload) for _, m in session.replies if m is not None]
    assert [status for status, _ in replies] == [
        Status.OK,
        Status.OK,
        Status.OK,
        Status.DENIED,
        Status.OK,
        Status.NOT_FOUND,
        Status.OK,
        Status.NOT_FOUND,
        Status.OK,
        Status.INVALID_ARGUMENT,
        Status.OK,
    ]
    spawned = SPAWN_SERVICE_REPLY.unpack(replies[0][1])
    assert spawned["id"] == first_id
    status = PROCESS_STATUS.unpack(replies[1][1])
    assert (status["id"], status["pid"], status["image_id"]) == (first_id, spawned["pid"], waiter)
    assert status["role"] == Role.TEST and status["state"] == ProcState.RUNNING
    assert len(replies[2][1]) == PROCESS_STATUS.size  # LIST: one live process
    assert SPAWN_SERVICE_REPLY.unpack(replies[6][1])["id"] == second_id
    # LIST after the kill: the killed process is held FAILED (killed, not stopped) until REAP
    (held,) = [PROCESS_STATUS.unpack(replies[10][1])]
    assert (held["id"], held["state"], held["death"]) == (second_id, ProcState.FAILED, DeathKind.KILLED)
    # STOP is not reported to crashd; KILL is, as KILLED
    ((_, payload),) = services.crashd.records
    assert CRASH_RECORD.unpack(payload)["pid"] == SPAWN_SERVICE_REPLY.unpack(replies[6][1])["pid"]
    logs = [e.fields["text"] for e in session.trace.of_kind("log") if session.procd and e.pid == session.procd.pid]
    assert f"procd: child {spawned['pid']} stopped" in logs


def audit_records(payload: bytes) -> list[dict[str, int]]:
    size = AUDIT_RECORD.size
    return [AUDIT_RECORD.unpack(payload, offset) for offset in range(0, len(payload), size)]


def test_the_audit_log_says_who_asked_and_under_which_authority() -> None:
    waiter = boot_image_named("phase2-irq-client").image_id
    first_id = 0 | 1 << PROCD_ID_GENERATION_SHIFT
    read_all = Message(ProcdOp.AUDIT_READ, AUDIT_READ_REQUEST.pack(from_seq=0))
    requests = [
        Request(spawn(image_id=waiter)),
        Request(manage(ProcdOp.KILL, first_id)),
        Request(manage(ProcdOp.REAP, first_id)),
        Request(read_all),
        Request(read_all, badge=7),
        Request(Message(ProcdOp.AUDIT_READ, AUDIT_READ_REQUEST.pack(from_seq=0, reserved=1))),
        Request(Message(ProcdOp.AUDIT_READ, AUDIT_READ_REQUEST.pack(from_seq=3))),
    ]
    session = ask_all(requests, Trace(), services=Services())
    replies = [(Status(m.op), m.payload) for _, m in session.replies if m is not None]
    assert [status for status, _ in replies] == [Status.OK] * 4 + [Status.DENIED, Status.INVALID_ARGUMENT, Status.OK]
    child = SPAWN_SERVICE_REPLY.unpack(replies[0][1])["pid"]
    records = audit_records(replies[3][1])
    actions = [AuditAction(r["action"]).name for r in records]
    grants = actions.count("GRANT")
    assert actions == ["CREATE"] + ["GRANT"] * grants + ["START", "KILL", "REAP"]
    assert grants >= 2  # named, timed, the interrupt and procd's own endpoint, for a TEST child
    assert [r["seq"] for r in records] == list(range(len(records)))
    assert all(r["requester"] == BADGE_ROOTD and r["pid"] == child for r in records)
    authority = {AuditAction(r["action"]).name: r["authority"] for r in records}
    assert authority["CREATE"] == authority["START"] == authority["KILL"] == CapPurpose.KERNEL_CONTROL
    assert authority["REAP"] == 0
    granted = {r["detail"] & 0xFFFF for r in records if r["action"] == AuditAction.GRANT}
    assert CapPurpose.PROCD_ENDPOINT in granted and CapPurpose.NAMED_ENDPOINT in granted
    assert [r["seq"] for r in audit_records(replies[6][1])] == list(range(3, len(records)))


NON_CANONICAL_RIP = 0xFFF0_0000_0110_0000


def test_a_fault_at_a_non_canonical_rip_reaches_crashd_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child that jumps to a non-canonical address dies of general-protection; the kernel's
    CHILD_DIED, procd's log and crashd's record carry all 64 bits of its rip."""
    jumper_id = boot_image_named("phase0-fault-kill").image_id
    code = bytes([0x48, 0xB8]) + NON_CANONICAL_RIP.to_bytes(8, "little") + bytes.fromhex("ffe0")  # movabs; jmp rax
    jumper = load_elf(code_image(code, base=0x1100000), name="phase0-fault-kill")
    real_loader = world.load_boot_image
    monkeypatch.setattr(world, "load_boot_image", lambda i: jumper if i == jumper_id else real_loader(i))
    services = Services()
    session = ask_all([Request(spawn(image_id=jumper_id))], Trace(), services=services)
    (fault,) = session.trace.of_kind("fault")
    assert (fault.fields["fault"], fault.fields["rip"]) == ("general-protection", f"{NON_CANONICAL_RIP:#x}")
    assert fault.fields["address"] == f"{NON_CANONICAL_RIP:#x}"
    ((_, payload),) = services.crashd.records
    record = CRASH_RECORD.unpack(payload)
    assert (record["code"], record["address"]) == (AbiFaultKind.GENERAL_PROTECTION, NON_CANONICAL_RIP)
    logs = [e.fields["text"] for e in session.trace.of_kind("log")]
    assert any(f"faulted GENERAL_PROTECTION at {NON_CANONICAL_RIP:#x}" in text for text in logs), logs
