"""Long runs stay flat: the kernel keeps a bounded history of dead processes, their endpoints and
log lines, and a conversation a bounded tail of its replies, without changing any trace."""

from __future__ import annotations

import pytest
from elfcraft import code_image

from emu.accounting import UNIT_CPU
from emu.elf import load_elf
from emu.trace import Trace
from procd_model.abi import (
    BADGE_ROOTD,
    CREATE_PROCESS_REPLY,
    SPAWN_SERVICE_REQUEST,
    START_PROCESS_REQUEST,
    CapType,
    KernelOp,
    ProcdOp,
    Rights,
    Role,
    Status,
)
from procd_model.actor import ActorProgram, call
from procd_model.caps import Capability, CapTable
from procd_model.client import Conversation, ReplyLog, Request
from procd_model.kernel import Kernel
from procd_model.messages import Message, create_process_payload
from procd_model.world import describe_processes

SPAWN = Request(Message(ProcdOp.SPAWN_SERVICE, SPAWN_SERVICE_REQUEST.pack(image_id=2, role=Role.TEST, flags=0)))


def _small_history(talk: Conversation, keep: int) -> None:
    talk.kernel.keep_dead = keep
    talk.kernel.keep_logs = keep
    talk.replies = ReplyLog(keep)


def test_a_long_conversation_keeps_a_bounded_history() -> None:
    talk = Conversation([BADGE_ROOTD], trace=Trace.off())
    _small_history(talk, 4)
    sizes = []
    for _ in range(60):
        reply = talk.ask(SPAWN)
        assert reply is not None and reply[1] is not None and reply[1].op == Status.OK
        kernel = talk.kernel
        sizes.append((len(kernel.procs), len(kernel.endpoints), len(kernel.logs), len(list(talk.replies))))
    late = sizes[20:]
    assert max(procs for procs, _, _, _ in late) <= min(procs for procs, _, _, _ in late) + 1
    assert max(s[1] for s in late) <= min(s[1] for s in late) + 2 * 4 + 1  # orphans wait for a sweep
    assert max(s[2] for s in late) < 3 * 4
    assert max(s[3] for s in late) == 4
    assert len(talk.replies) == 60 and talk.replies[59] == talk.replies[-1]
    forgotten = talk.kernel.state.forgotten
    assert forgotten.count > 0 and forgotten.instructions > 0
    assert describe_processes(talk.kernel)[-1]["count"] == forgotten.count


def _spawns(keep: int | None, count: int) -> tuple[str, list[object], list[object]]:
    talk = Conversation([BADGE_ROOTD], trace=Trace(keep=False))
    if keep is not None:
        _small_history(talk, keep)
    replies = [talk.ask(SPAWN) for _ in range(count)]
    rows = [row for row in describe_processes(talk.kernel) if row["state"] != "forgotten"]
    return talk.trace.digest(), replies, rows[-1:]


def test_forgetting_changes_no_trace() -> None:
    assert _spawns(1, 25) == _spawns(None, 25)


def test_a_snapshot_restores_exactly_across_forgetting() -> None:
    talk = Conversation([BADGE_ROOTD], trace=Trace(keep=False))
    _small_history(talk, 2)
    for _ in range(3):
        talk.ask(SPAWN)
    snapshot = talk.snapshot()
    state = talk.kernel.snapshot()
    first = [talk.ask(SPAWN) for _ in range(8)]
    digest = talk.trace.digest()
    talk.restore(snapshot)
    assert talk.kernel.snapshot() == state
    assert [talk.ask(SPAWN) for _ in range(8)] == first
    assert talk.trace.digest() == digest


def _spawner(keep: int, children: int) -> tuple[Kernel, list[Status]]:
    """An actor creates and starts `children` exit(7) children, then starts the first again and
    a pid that never was."""
    kernel = Kernel(Trace(), cpu_model=UNIT_CPU, image_loader=lambda image_id: image)
    kernel.keep_dead = keep
    image = load_elf(code_image(bytes.fromhex("bf07000000b8090000000f05")))  # exit(7)
    caps = CapTable()
    caps.install(Capability(CapType.KERNEL_CONTROL, 0, Rights.SEND | Rights.SPAWN), 1)
    answers: list[Status] = []

    def spawner() -> ActorProgram:
        pids = []
        for _ in range(children):
            result = yield call(1, KernelOp.CREATE_PROCESS, create_process_payload(1, [], b""))
            pids.append(CREATE_PROCESS_REPLY.unpack(result.message().payload)["pid"])
            yield call(1, KernelOp.START_PROCESS, START_PROCESS_REQUEST.pack(pid=pids[-1]))
        for pid in (pids[0], 999):
            result = yield call(1, KernelOp.START_PROCESS, START_PROCESS_REQUEST.pack(pid=pid))
            answers.append(Status(result.message().op))

    kernel.spawn_actor("spawner", spawner(), caps)
    assert kernel.run(10**6).kind == "idle"
    return kernel, answers


@pytest.mark.parametrize("keep", [1, 1024])
def test_starting_a_forgotten_process_is_busy_as_for_a_kept_dead_one(keep: int) -> None:
    kernel, answers = _spawner(keep, 6)
    assert answers == [Status.BUSY, Status.NOT_FOUND]
    assert (2 in kernel.procs) is (keep > 1)


def test_an_orphaned_endpoint_someone_still_names_is_kept() -> None:
    """The spawner keeps a capability to each child's endpoint: none is dropped."""
    kernel, _ = _spawner(1, 6)
    assert kernel.state.forgotten.count == 6 and kernel.state.orphans_named == 6  # swept, all named
    held = {cap.obj for _, cap in kernel.procs[1].caps.occupied() if cap.cap_type is CapType.ENDPOINT}
    assert len(held) == 6 and held <= set(kernel.endpoints)


def test_a_reply_log_counts_every_reply_and_keeps_the_latest() -> None:
    log = ReplyLog(3)
    for op in range(5):
        log.append((Status.OK, Message(op)))
    assert len(log) == 5 and [m.op for _, m in log if m is not None] == [2, 3, 4]
    assert log[2] == log[-3] and log[4] == log[-1]
    with pytest.raises(IndexError):
        log[1]
    with pytest.raises(IndexError):
        log[5]
    saved = log.save()
    log.append((Status.OK, None))
    log.put(saved)
    assert len(log) == 5 and log[-1][1] == Message(4)
