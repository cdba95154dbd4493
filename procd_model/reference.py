"""An executable specification of procd, and a check of the native procd against it.

`ProcdSpec` is procd's policy written plainly in Python: its process table as a state machine
and, for each request procd receives, what it must do — which kernel-control calls it makes,
which notifications and reports it sends, and what it replies. It knows nothing about how the
native code is written.

`check_against_spec(events, procd_pid)` walks a trace of a real run request by request. For each
message delivered to the native procd it feeds the spec the same request and the kernel's answers
to procd's own calls (the spec's view of the environment), then compares what the spec says procd
must do with what procd did. The first difference is reported with the request that caused it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from emu.trace import Event
from procd_model.abi import (
    BADGE_KERNEL,
    BADGE_ROOTD,
    INTAKE,
    PROCD_CHILD_BADGE_BASE,
    PROCD_ID_GENERATION_SHIFT,
    PROCD_MAX_PROCESSES,
    PROCESS_REQUEST,
    SPAWN_SERVICE_REQUEST,
    CapPurpose,
    EnvelopeFlag,
    KernelEvent,
    NotifyBit,
    ProcdOp,
    Role,
)

UNSPAWNABLE = {"ROOTD", "PROCD", "GENERIC"}


@dataclass(frozen=True)
class Actions:
    """What procd does for one request, in the terms both sides can be observed in."""

    kernel_calls: tuple[str, ...] = ()
    notifies: tuple[int, ...] = ()
    crash_reports: tuple[int, ...] = ()
    """pids procd reported to crashd as KILLED"""
    reply: tuple[str, int | None, int | None] | None = None
    """(status, child pid, procd's process id) of the reply, or None when procd does not reply"""


@dataclass
class Entry:
    """A live process in procd's table."""

    pid: int
    generation: int
    flags: int = 0
    stopping: str | None = None
    """None while running; "stop" or "kill" once procd asked the kernel to end it."""
    failed: bool = False
    """It faulted, was killed (not stopped) or exited non-zero: held until REAP."""


@dataclass
class ProcdSpec:
    """procd's policy. The defaults are the specification; tests change them to show the check
    catches a difference in any one detail."""

    table_size: int = PROCD_MAX_PROCESSES
    spawn_badges: frozenset[int] = frozenset({BADGE_ROOTD})
    holds: frozenset[CapPurpose] = frozenset()
    """Optional capabilities procd was handed (e.g. CRASHD_ENDPOINT)."""
    live: dict[int, Entry] = field(default_factory=dict)
    """table index -> the live child there"""
    generations: dict[int, int] = field(default_factory=dict)
    """table index -> generation of its latest occupant (a reused index gets the next one)"""

    def on_request(self, badge: int, request: dict[str, Any], kernel_replies: list[dict[str, Any]]) -> Actions:
        """What procd must do for a message; `kernel_replies` answers its kernel-control calls in order.

        A reply is only seen when the request came by CALL (a SEND leaves no reply right)."""
        actions = self._decide(badge, request, kernel_replies)
        if not request.get("call"):
            actions = Actions(actions.kernel_calls, actions.notifies, actions.crash_reports, None)
        return actions

    def _decide(self, badge: int, request: dict[str, Any], kernel_replies: list[dict[str, Any]]) -> Actions:
        op = op_number(request.get("op"))
        if badge == BADGE_KERNEL:
            if op == KernelEvent.CHILD_DIED:
                return self._child_died(request)
            return Actions()
        if op == ProcdOp.SPAWN_SERVICE:
            return self._spawn(badge, request, kernel_replies)
        if op == ProcdOp.PROBE_COMPLETE:
            return self._probe(badge, request)
        if op in (ProcdOp.STOP, ProcdOp.KILL, ProcdOp.STATUS, ProcdOp.LIST, ProcdOp.REAP):
            return self._manage(ProcdOp(op), badge, request, kernel_replies)
        if op == KernelEvent.CHILD_DIED:
            return Actions(reply=("DENIED", None, None))  # a forged kernel message
        return Actions(reply=("INVALID_ARGUMENT", None, None))

    # --------------------------------------------------------------- requests

    def _spawn(self, badge: int, request: dict[str, Any], replies: list[dict[str, Any]]) -> Actions:
        if badge not in self.spawn_badges:
            return Actions(reply=("DENIED", None, None))
        if request.get("len") != SPAWN_SERVICE_REQUEST.size or request.get("caps"):
            return Actions(reply=("INVALID_ARGUMENT", None, None))
        role, flags, image_id = request.get("role"), request.get("flags", 0), request.get("image_id", 0)
        if not isinstance(role, str) or role in UNSPAWNABLE or flags & ~int(_ALL_FLAGS):
            return Actions(reply=("INVALID_ARGUMENT", None, None))
        if image_id == 0:
            return Actions(reply=("INVALID_ARGUMENT", None, None))
        index = self._free_index()
        if index is None:
            return Actions(reply=("BUSY", None, None))
        calls: list[str] = []
        answers = iter(replies)
        if CapPurpose.PROCD_ENDPOINT in _intake_purposes(Role[role]):
            calls.append("MINT_ENDPOINT")
            minted = next(answers, None)
            if minted is None or minted["status"] != "OK":
                return Actions(tuple(calls), reply=(_status(minted), None, None))
        calls.append("CREATE_PROCESS")
        created = next(answers, None)
        if created is None or created["status"] != "OK":
            return Actions(tuple(calls), reply=(_status(created), None, None))
        calls.append("START_PROCESS")
        started = next(answers, None)
        if started is None or started["status"] != "OK":
            return Actions(tuple(calls), reply=(_status(started), None, None))
        pid = int(created["child_pid"])
        generation = self.generations.get(index, 0) % 0xFFFF + 1
        self.generations[index] = generation
        self.live[index] = Entry(pid, generation, int(flags))
        return Actions(tuple(calls), reply=("OK", pid, _process_id(index, generation)))

    def _manage(self, op: ProcdOp, badge: int, request: dict[str, Any], replies: list[dict[str, Any]]) -> Actions:
        """STOP, KILL, STATUS and LIST: rootd's view of and hold over the processes procd runs."""
        if badge != BADGE_ROOTD:
            return Actions(reply=("DENIED", None, None))
        if op is ProcdOp.LIST:
            if request.get("len") or request.get("caps"):
                return Actions(reply=("INVALID_ARGUMENT", None, None))
            return Actions(reply=("OK", None, None))
        if request.get("len") != PROCESS_REQUEST.size or request.get("caps") or request.get("reserved"):
            return Actions(reply=("INVALID_ARGUMENT", None, None))
        proc_id = int(request["proc_id"])
        index, generation = proc_id & ((1 << PROCD_ID_GENERATION_SHIFT) - 1), proc_id >> PROCD_ID_GENERATION_SHIFT
        entry = self.live.get(index)
        if entry is None or entry.generation != generation:
            return Actions(reply=("NOT_FOUND", None, None))  # a stale id never reaches the new occupant
        if op is ProcdOp.STATUS:
            return Actions(reply=("OK", entry.pid, proc_id))
        if op is ProcdOp.REAP:
            if not entry.failed:
                return Actions(reply=("BUSY", None, None))
            del self.live[index]
            return Actions(reply=("OK", entry.pid, proc_id))
        if entry.failed:
            return Actions(reply=("NOT_FOUND", None, None))  # nothing left to end
        if entry.stopping is not None:
            return Actions(reply=("BUSY", None, None))
        killed = next(iter(replies), None)
        if killed is None or killed["status"] != "OK":
            return Actions(("KILL_PROCESS",), reply=(_status(killed), None, None))
        entry.stopping = "kill" if op is ProcdOp.KILL else "stop"
        return Actions(("KILL_PROCESS",), reply=("OK", None, None))

    def _probe(self, badge: int, request: dict[str, Any]) -> Actions:
        index = badge - PROCD_CHILD_BADGE_BASE
        if not 0 <= index < self.table_size or index not in self.live:
            return Actions(reply=("DENIED", None, None))
        if request.get("len") or request.get("caps"):
            return Actions(reply=("INVALID_ARGUMENT", None, None))
        return Actions(notifies=(int(NotifyBit.PROBE_COMPLETE),), reply=("OK", None, None))

    def _child_died(self, request: dict[str, Any]) -> Actions:
        """Failure policy. A clean exit or a STOP frees the entry. A failure (a fault, a kill that
        was not a STOP, a non-zero exit) holds it as FAILED until REAP; faults and kills are
        reported to crashd; a REQUIRED service's failure is reported to rootd (SERVICE_FAILED)."""
        pid = request.get("child_pid")
        index = next((i for i, live in self.live.items() if live.pid == pid and not live.failed), None)
        death = request.get("death")
        if index is None or death not in ("EXITED", "FAULTED", "KILLED"):
            return Actions()
        entry = self.live[index]
        killed = death == "KILLED" and entry.stopping != "stop"
        failed = death == "FAULTED" or killed or (death == "EXITED" and request.get("code"))
        reported = (death == "FAULTED" or killed) and CapPurpose.CRASHD_ENDPOINT in self.holds
        reports = (entry.pid,) if reported else ()
        if not failed:
            del self.live[index]
            return Actions(crash_reports=reports)
        entry.failed = True
        required = entry.flags & EnvelopeFlag.REQUIRED
        notifies = (int(NotifyBit.SERVICE_FAILED),) if required else ()
        return Actions(notifies=notifies, crash_reports=reports)

    def _free_index(self) -> int | None:
        return next((i for i in range(self.table_size) if i not in self.live), None)


_ALL_FLAGS = EnvelopeFlag.REQUIRED | EnvelopeFlag.BOOTSTRAP_CRITICAL


def op_number(name: Any) -> int | None:
    """The op id behind a trace's op field (a name, or hex for ops the receiver's service lacks)."""
    if not isinstance(name, str):
        return None
    for names in (ProcdOp, KernelEvent):
        if name in names.__members__:
            return int(names[name])
    try:
        return int(name, 16)
    except ValueError:
        return None


def _intake_purposes(role: Role) -> set[CapPurpose]:
    entries = INTAKE.get(role, INTAKE[None])
    return {CapPurpose(entry.purpose) for entry in entries}


def _process_id(index: int, generation: int) -> int:
    return index | generation << PROCD_ID_GENERATION_SHIFT


def _status(reply: dict[str, Any] | None) -> str:
    return "INTERNAL" if reply is None else str(reply["status"])


# ------------------------------------------------------------------ the native side


@dataclass(frozen=True)
class Step:
    """One message delivered to procd, the kernel's answers to its calls, and what procd did."""

    seq: int
    badge: int
    request: dict[str, Any]
    kernel_replies: list[dict[str, Any]]
    did: Actions


def native_steps(events: Iterable[Event], procd_pid: int) -> list[Step]:
    """Cut a trace into procd's request steps (from each delivery to procd until the next)."""
    steps: list[Step] = []
    current: dict[str, Any] | None = None

    def close() -> None:
        if current is not None:
            steps.append(
                Step(
                    current["seq"],
                    current["badge"],
                    current["request"],
                    current["kernel_replies"],
                    Actions(
                        tuple(current["calls"]),
                        tuple(current["notifies"]),
                        tuple(current["reports"]),
                        current["reply"],
                    ),
                )
            )

    for event in events:
        fields = event.fields
        if event.kind == "ipc.recv" and event.pid == procd_pid:
            close()
            current = {
                "seq": event.seq,
                "badge": fields["badge"],
                "request": {**fields, "caps": len(fields.get("caps", []))},
                "kernel_replies": [],
                "calls": [],
                "notifies": [],
                "reports": [],
                "reply": None,
            }
        elif current is None:
            continue
        elif event.pid == procd_pid and event.kind == "ipc.send":
            if fields["endpoint"] == "kernel-control":
                current["calls"].append(fields["op"])
            elif fields["op"] == "REPORT":
                current["reports"].append(fields.get("child_pid", fields.get("pid")))
        elif event.pid == 0 and event.kind == "ipc.reply" and fields.get("to") == procd_pid:
            current["kernel_replies"].append(fields)
        elif event.pid == procd_pid and event.kind == "notify":
            current["notifies"].append(fields["bits"])
        elif event.pid == procd_pid and event.kind == "ipc.reply":
            current["reply"] = (fields["status"], fields.get("child_pid"), fields.get("proc_id"))
    close()
    return steps


@dataclass(frozen=True)
class Divergence:
    step: Step
    native: Actions
    spec: Actions

    def describe(self) -> str:
        request = self.step.request
        return (
            f"request at seq {self.step.seq} (op {request.get('op')}, badge {self.step.badge:#x}): "
            f"native procd did {self.native}, the spec says {self.spec}"
        )


def check_against_spec(steps: list[Step], spec: ProcdSpec) -> Divergence | None:
    """The first step where the native procd and the spec disagree, or None."""
    for step in steps:
        expected = spec.on_request(step.badge, step.request, step.kernel_replies)
        if expected != step.did:
            return Divergence(step, step.did, expected)
    return None
