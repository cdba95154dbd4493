"""World snapshots (procd_model/world_snapshot.py): a restored world is exactly the world it was."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from emu.engine_state import counters_of
from emu.registers import REGISTERS
from emu.trace import Trace, jsonl_line
from procd_model.abi import BADGE_ROOTD, SPAWN_SERVICE_REQUEST, ProcdOp, RestartPolicy, Role
from procd_model.client import Conversation, Request
from procd_model.harness import process_id, process_request, spawn_request
from procd_model.kernel import GuestContext, snapshot_state
from procd_model.messages import Message
from procd_model.rootd import Services
from procd_model.world_snapshot import SnapshotError, WorldSnapshot

BADGES = (BADGE_ROOTD, 7)


def _world(services: bool = True) -> Conversation:
    return Conversation(BADGES, Services() if services else None, trace=Trace())


def _steps() -> dict[str, Request]:
    """Requests of every kind: spawns that exit, fault, wait or restart, kills, stops, reaps,
    lists, statuses, refusals and garbage."""
    return {
        "spawn": spawn_request("phase0-exit"),
        "fault": spawn_request("phase0-fault-kill"),
        "waiter": spawn_request("phase2-irq-client"),
        "restarting": spawn_request("phase0-fault-kill", restart=RestartPolicy.ALWAYS, max_restarts=2, backoff_ms=1),
        "reject": Request(Message(ProcdOp.SPAWN_SERVICE, SPAWN_SERVICE_REQUEST.pack(image_id=0, role=Role.TEST))),
        "kill": process_request(ProcdOp.KILL, process_id(0, 1)),
        "stop": process_request(ProcdOp.STOP, process_id(1, 1)),
        "reap": process_request(ProcdOp.REAP, process_id(1, 1)),
        "status": process_request(ProcdOp.STATUS, process_id(0, 1)),
        "list": Request(Message(ProcdOp.LIST)),
        "foreign": Request(Message(ProcdOp.LIST), badge=7),
        "garbage": Request(b"\x01\x02\x03" * 20),
    }


def _play(talk: Conversation, names: list[str], *, pass_time: bool = True) -> list[Any]:
    steps = _steps()
    answers: list[Any] = []
    for name in names:
        answers.append(talk.ask(steps[name]))
        if pass_time:
            talk.pass_time()  # restarts' backoff timers fire
    return answers


def _lines(talk: Conversation) -> list[bytes]:
    return [jsonl_line(event) for event in talk.trace.events]


AFTER = ["spawn", "fault", "list", "waiter", "kill", "reject", "restarting", "status", "garbage", "list"]


def test_a_world_restored_to_procd_in_recv_traces_as_a_fresh_boot() -> None:
    fresh = _world()
    fresh_answers = _play(fresh, AFTER)

    talk = _world()
    snapshot = talk.snapshot()
    _play(talk, ["waiter", "spawn", "fault", "restarting", "kill", "foreign", "list"])
    talk.restore(snapshot)
    assert _play(talk, AFTER) == fresh_answers
    assert _lines(talk) == _lines(fresh)
    assert talk.trace.digest() == fresh.trace.digest()


def _machine(talk: Conversation) -> dict[str, Any]:
    """Everything the machine holds, as values: kernel state, and each live guest's registers,
    volatile pages, counters and the registers its pending syscall entered with."""
    kernel = talk.kernel
    guests: dict[int, Any] = {}
    for pid, proc in kernel.procs.items():
        context = proc.context
        if isinstance(context, GuestContext) and not context.cpu.closed:
            cpu = context.cpu
            runs = cpu._memory.volatile_runs()
            pages = [cpu.read(address, size) for address, size in runs]
            guests[pid] = (cpu.regs(tuple(REGISTERS)), pages, counters_of(cpu._state), context.entry)
    return {
        "state": snapshot_state(kernel.state),
        "guests": guests,
        "digest": talk.trace.digest(),
        "events": len(talk.trace.events),
        "replies": list(talk.replies),
        "crashd": (list(talk.rootd.services.crashd.records) if talk.rootd.services else None),
    }


def _restore_is_exact(talk: Conversation, snapshot: WorldSnapshot, before: dict[str, Any], names: list[str]) -> None:
    _play(talk, names)
    talk.restore(snapshot)
    after = _machine(talk)
    assert after["state"] == before["state"]  # processes, capability tables, queues, timers, clocks
    assert after["guests"] == before["guests"]  # registers, memory pages, counters
    assert {k: v for k, v in after.items() if k not in ("state", "guests")} == {
        k: v for k, v in before.items() if k not in ("state", "guests")
    }


def test_restore_after_many_different_requests_is_exact() -> None:
    talk = _world()
    _play(talk, ["waiter", "restarting"], pass_time=False)  # a live child and a pending timer
    assert talk.kernel.event_pending
    snapshot = talk.snapshot()
    before = _machine(talk)
    _restore_is_exact(talk, snapshot, before, list(_steps()) * 2)
    _restore_is_exact(talk, snapshot, before, ["kill", "spawn", "spawn", "fault", "reap", "list"])
    talk.discard(snapshot)


@settings(max_examples=8, deadline=None)
@given(st.lists(st.sampled_from(sorted(_steps())), max_size=8))
def test_any_requests_after_a_snapshot_leave_a_restore_exact(names: list[str]) -> None:
    talk = _world()
    snapshot = talk.snapshot()
    _play(talk, names)
    talk.restore(snapshot)
    assert _play(talk, ["spawn", "fault", "list"]) == _play(_FRESH_TALK(), ["spawn", "fault", "list"])


def _FRESH_TALK() -> Conversation:
    return _world()


def test_restoring_an_actor_that_moved_on_is_refused() -> None:
    talk = _world(services=False)
    snapshot = talk.snapshot()
    talk.rootd.halt_reason = None
    client = next(p for p in talk.kernel.procs.values() if p.name == "client")
    program = client.context.program  # type: ignore[union-attr]
    program.close()  # the client's generator is finished: it can no longer be where it was
    try:
        talk.restore(snapshot)
    except SnapshotError as exc:
        assert "client" in str(exc)
    else:
        raise AssertionError("restore accepted an actor that is not where it was")
