"""rootd halts bootstrap by exiting: a DEBUG_WRITE line saying why, then EXIT with
BOOTSTRAP_HALTED; the kernel stops the run when rootd (the root process, pid 1) exits, and the
world turns that exit and line into the `halted` outcome."""

from __future__ import annotations

import pytest

from emu.events import LOG, PROCESS_EXIT, SYSCALL
from emu.trace import Event, Trace
from emu.world import RunOutcome
from procd_model.abi import (
    BADGE_ROOTD,
    IPC_BUFFER_SIZE,
    IPC_BUFFER_VADDR,
    Role,
    RootdStatus,
    StartupStatus,
    Status,
    Syscall,
)
from procd_model.abi import TestStatus as ImageStatus
from procd_model.actor import ActorProgram, SyscallRequest
from procd_model.caps import CapTable
from procd_model.client import Conversation, ConversationError
from procd_model.kernel import Kernel, RunState, ScriptedFaults
from procd_model.rootd import ProcdBoot, Rootd, default_procd_boot
from procd_model.scenario import load_scenario
from procd_model.world import run_bootstrap, run_scenario

ROOTD_PID = 1


def assert_rootd_halted(trace: Trace, outcome: RunOutcome, reason: str) -> None:
    """rootd's reason line and then its exit with BOOTSTRAP_HALTED end the trace (nothing else
    runs after them); the outcome is the halt, with the line as its message."""
    events: list[Event] = [e for e in trace.events if e.kind != "summary"]
    line = next(e for e in reversed(events) if e.kind == LOG)
    after = events[events.index(line) :]
    exit_event = after[-1]
    assert {e.pid for e in after} == {ROOTD_PID}
    assert [e.fields["name"] for e in after if e.kind == SYSCALL] == ["DEBUG_WRITE", "EXIT"]
    assert (line.kind, line.pid) == (LOG, ROOTD_PID)
    assert line.fields["text"].startswith("bootstrap halted: ") and reason in line.fields["text"]
    assert (exit_event.kind, exit_event.pid) == (PROCESS_EXIT, ROOTD_PID)
    assert exit_event.fields["code"] == RootdStatus.BOOTSTRAP_HALTED
    assert outcome.stop == "halted"
    assert outcome.detail.startswith(line.fields["text"])
    rootd = next(p for p in outcome.processes if p["pid"] == ROOTD_PID)
    assert rootd["state"] == "exited" and rootd["exit_code"] == RootdStatus.BOOTSTRAP_HALTED


def test_a_failed_required_service_makes_rootd_exit_with_the_halt_code() -> None:
    """rootd is in its supervision loop: it logs and exits there."""
    trace = Trace()
    outcome = run_scenario(trace, load_scenario("force-fail"), 50_000_000)
    assert outcome.ok, outcome.detail
    assert_rootd_halted(trace, outcome, "required service phase0-fault-kill (pid ")


def test_procd_refusing_to_start_wakes_rootd_from_its_wait_and_it_exits() -> None:
    """rootd is blocked WAITing for READY when procd dies: its death watch wakes it."""
    trace = Trace()
    good = default_procd_boot()
    bad = ProcdBoot(good.envelope[:-8], good.grants)  # too short: procd refuses it
    outcome = run_bootstrap(trace, 20_000_000, manifest=(), boot=bad)
    assert not outcome.ok
    assert_rootd_halted(trace, outcome, "procd refused to start: ")


def test_a_foundation_service_dying_makes_rootd_exit_with_the_halt_code() -> None:
    """A service rootd starts itself dies before READY while rootd WAITs for it."""
    trace = Trace()

    def kill_the_first_stub(kernel: Kernel) -> None:
        kernel.injector = ScriptedFaults(kill_at={"svc-stub": 1})

    outcome = run_bootstrap(trace, 20_000_000, manifest=(), prepare=kill_the_first_stub, before_procd=(Role.MEMD,))
    assert not outcome.ok
    assert_rootd_halted(trace, outcome, "memd faulted: ")


def test_the_halt_code_is_no_status_a_service_ends_with() -> None:
    codes = {int(v) for v in StartupStatus} | {int(v) for v in ImageStatus}
    assert int(RootdStatus.BOOTSTRAP_HALTED) not in codes


def test_the_run_stops_when_the_root_process_exits() -> None:
    """Whatever else is runnable: the kernel's rule, for any root process."""
    kernel = Kernel()
    ran: list[str] = []

    def root() -> ActorProgram:
        yield SyscallRequest(Syscall.EXIT, (7,))

    def other() -> ActorProgram:
        ran.append("other")
        yield SyscallRequest(Syscall.YIELD)

    kernel.make_root(kernel.spawn_actor("root", root(), CapTable()))
    kernel.spawn_actor("other", other(), CapTable())
    stop = kernel.run(1000)
    assert stop.kind == "root-exited" and "code 7" in stop.detail
    assert ran == []
    assert kernel.run(1000) == stop, "the machine stays stopped"


def nothing() -> ActorProgram:
    yield from ()


def test_only_the_first_process_can_be_the_root() -> None:
    kernel = Kernel()
    kernel.spawn_actor("first", nothing(), CapTable())
    second = kernel.spawn_actor("second", nothing(), CapTable())
    with pytest.raises(ValueError, match="pid 1"):
        kernel.make_root(second)


def test_without_a_root_the_run_goes_on_until_idle() -> None:
    """A kernel whose world names no root (a unit test's) runs every process to the end."""
    kernel = Kernel()
    ran: list[str] = []

    def first() -> ActorProgram:
        yield SyscallRequest(Syscall.EXIT, (0,))

    def second() -> ActorProgram:
        ran.append("second")
        yield SyscallRequest(Syscall.YIELD)

    kernel.spawn_actor("first", first(), CapTable())
    kernel.spawn_actor("second", second(), CapTable())
    assert kernel.run(1000).kind == "idle"
    assert ran == ["second"]


def test_an_actor_writes_log_lines_from_its_ipc_buffer() -> None:
    """DEBUG_WRITE reads an actor's IPC buffer (its only memory, at IPC_BUFFER_VADDR)."""
    kernel = Kernel()
    statuses: list[Status] = []

    def writer() -> ActorProgram:
        for pointer, length in ((IPC_BUFFER_VADDR, 5), (IPC_BUFFER_VADDR + IPC_BUFFER_SIZE - 2, 5), (0, 1)):
            result = yield SyscallRequest(Syscall.DEBUG_WRITE, (pointer, length), b"hello")
            statuses.append(result.status)

    kernel.spawn_actor("writer", writer(), CapTable())
    kernel.run(1000)
    assert statuses == [Status.OK, Status.INVALID_ARGUMENT, Status.INVALID_ARGUMENT]
    assert kernel.logs == ["hello"] and kernel.procs[1].last_log == "hello"


def test_rootd_handed_over_to_a_client_still_halts_when_procd_dies() -> None:
    """In the client harness rootd WAITs and acts on nothing, except its death watch."""
    conversation = Conversation([BADGE_ROOTD])
    assert conversation.kernel.procs[ROOTD_PID].state is RunState.BLOCKED
    with pytest.raises(ConversationError, match=r"root-exited: .*: bootstrap halted: procd was killed$"):
        conversation.terminate(conversation.rootd.procd_pid)
    rootd = conversation.kernel.procs[ROOTD_PID]
    assert rootd.exit_code == RootdStatus.BOOTSTRAP_HALTED


def test_a_killed_foundation_service_is_named_as_killed() -> None:
    """Killed while rootd is running (its READY hook): rootd learns it after its next syscall."""
    trace = Trace()

    def kill_memd(rootd: Rootd) -> None:
        memd = next(pid for pid, role in rootd.foundation.items() if role == "MEMD")
        assert rootd.kernel.terminate(memd)

    outcome = run_bootstrap(trace, 20_000_000, on_ready=kill_memd, before_procd=(Role.MEMD,))
    assert_rootd_halted(trace, outcome, "memd was killed")
