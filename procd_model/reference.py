"""An executable specification of procd, and a check of the native procd against it.

`ProcdSpec` is procd's policy written plainly in Python: its process table as a state machine
and, for each request procd receives, what it must do — which kernel-control calls it makes,
which notifications and reports it sends, and what it replies. It knows nothing about how the
native code is written.

`native_steps(events, procd_pid)` cuts a trace of a real run into procd's steps: each message
delivered to the native procd, the kernel's answers to procd's own calls, and what procd did.
`check_against_spec(steps, spec)` feeds the spec each step's request and kernel answers (the
spec's view of the environment) and compares what the spec says procd must do with what procd
did; the first difference comes back as a `Divergence` naming the request that caused it (None if
they agree). `SpecFollower` does the same for a trace that grows step by step.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from emu.trace import Event
from procd_model.abi import (
    AUDIT_READ_REQUEST,
    BADGE_KERNEL,
    BADGE_ROOTD,
    INTAKE,
    PROCD_CHILD_BADGE_BASE,
    PROCD_ID_GENERATION_SHIFT,
    PROCD_MAX_PROCESSES,
    PROCESS_REQUEST,
    SPAWN_SERVICE_REQUEST,
    TIMER_EVENT,
    CapPurpose,
    EnvelopeFlag,
    KernelEvent,
    NotifyBit,
    ProcdOp,
    ProcState,
    RestartPolicy,
    Role,
)

UNSPAWNABLE = {"ROOTD", "MEMD", "VSPACED", "PAGERD", "PROCD", "GENERIC"}
"""Roles procd never runs: rootd's own (it starts MEMD, VSPACED and PAGERD itself before procd),
procd itself, and GENERIC."""


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
    restarting: bool = False
    """It ended and its backoff timer is pending."""
    image_id: int = 0
    role: str = "TEST"
    policy: int = RestartPolicy.NEVER
    max_restarts: int = 0
    window_ms: int = 0
    backoff_ms: int = 0
    restarts: int = 0
    """Restarts since the count was last cleared (a run that outlasted the window clears it)."""
    run_start: int = 0
    """Ticks when the current run started (the TIMER that relaunched it; 0 for the first run)."""
    held: bool = False
    """Spawned with dependencies that were not running: procd launches it when they are."""
    depends_on: int = 0

    @property
    def live(self) -> bool:
        return not self.failed and not self.restarting and not self.held

    @property
    def state(self) -> ProcState:
        """The `proc_state` STATUS and LIST report for it."""
        if self.held:
            return ProcState.HELD
        if self.failed:
            return ProcState.FAILED
        if self.restarting:
            return ProcState.RESTARTING
        return ProcState.RUNNING if self.stopping is None else ProcState.STOPPING

    def dependencies(self) -> list[int]:
        return [r for r in range(64) if self.depends_on >> r & 1]

    def counted(self, now: int) -> int:
        """Restarts that count toward the bound for a run dying at `now`: none once the run lasted
        more than `window_ms` ticks (the clock rounds down, so it surely lasted the window; the
        backoff comes before the run's start and never counts); `window_ms` 0 never clears them."""
        if self.window_ms and now - self.run_start > self.window_ms:
            return 0
        return self.restarts


@dataclass
class ProcdSpec:
    """procd's policy. The defaults are the specification; tests change them to show the check
    catches a difference in any one detail."""

    table_size: int = PROCD_MAX_PROCESSES
    spawn_badges: frozenset[int] = frozenset({BADGE_ROOTD})
    holds: frozenset[CapPurpose] = frozenset()
    """Optional capabilities procd was handed (e.g. CRASHD_ENDPOINT)."""
    started: frozenset[Role] = frozenset()
    """Roles rootd started before procd (its envelope's started_roles): dependencies on them are
    satisfied from the start."""
    live: dict[int, Entry] = field(default_factory=dict)
    """table index -> the live child there"""
    generations: dict[int, int] = field(default_factory=dict)
    """table index -> generation of its latest occupant (a reused index gets the next one)"""

    def listing(self) -> list[dict[str, int]]:
        """What LIST reports, entry by entry in index order: each `process_status` record's
        id, pid, image_id, role, state and flags."""
        return [
            {
                "id": _process_id(index, entry.generation),
                "pid": entry.pid,
                "image_id": entry.image_id,
                "role": int(Role[entry.role]),
                "state": int(entry.state),
                "flags": entry.flags,
            }
            for index, entry in sorted(self.live.items())
        ]

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
                return self._child_died(request, kernel_replies)
            if op == KernelEvent.TIMER:
                return self._timer(request, kernel_replies)
            return Actions()
        if op == ProcdOp.SPAWN_SERVICE:
            return self._spawn(badge, request, kernel_replies)
        if op == ProcdOp.SPAWN:
            return self._client_spawn(badge, request, kernel_replies)
        if op == ProcdOp.PROBE_COMPLETE:
            return self._probe(badge, request)
        if op in (ProcdOp.STOP, ProcdOp.KILL, ProcdOp.STATUS, ProcdOp.LIST, ProcdOp.REAP):
            return self._manage(ProcdOp(op), badge, request, kernel_replies)
        if op == ProcdOp.AUDIT_READ:
            return self._audit_read(badge, request)
        if op in (KernelEvent.CHILD_DIED, KernelEvent.TIMER):
            return Actions(reply=("DENIED", None, None))  # a forged kernel message
        return Actions(reply=("INVALID_ARGUMENT", None, None))

    # --------------------------------------------------------------- requests

    def _client_spawn(self, badge: int, request: dict[str, Any], replies: list[dict[str, Any]]) -> Actions:
        """SPAWN from an authorised client: a running child spawned with the SPAWNER flag, asking
        for a TEST process without REQUIRED, BOOTSTRAP_CRITICAL or SPAWNER (no escalation)."""
        index = badge - PROCD_CHILD_BADGE_BASE
        client = self.live.get(index) if 0 <= index < self.table_size else None
        if client is None or not client.live or not client.flags & EnvelopeFlag.SPAWNER:
            return Actions(reply=("DENIED", None, None))
        return self._spawn(badge, request, replies, client=True)

    def _spawn(
        self, badge: int, request: dict[str, Any], replies: list[dict[str, Any]], *, client: bool = False
    ) -> Actions:
        if not client and badge not in self.spawn_badges:
            return Actions(reply=("DENIED", None, None))
        if request.get("len") != SPAWN_SERVICE_REQUEST.size or request.get("caps"):
            return Actions(reply=("INVALID_ARGUMENT", None, None))
        role, flags, image_id = request.get("role"), request.get("flags", 0), request.get("image_id", 0)
        if not isinstance(role, str) or role in UNSPAWNABLE or flags & ~int(_ALL_FLAGS):
            return Actions(reply=("INVALID_ARGUMENT", None, None))
        if image_id == 0 or request.get("restart", 0) not in set(RestartPolicy) or request.get("reserved"):
            return Actions(reply=("INVALID_ARGUMENT", None, None))
        if client and (role != "TEST" or flags & int(_PRIVILEGED_FLAGS)):
            return Actions(reply=("DENIED", None, None))
        depends = int(request.get("depends_on", 0))
        needs = [r for r in range(64) if depends >> r & 1]
        if any(r not in _ROLE_VALUES for r in needs) or Role[role] in needs:
            return Actions(reply=("INVALID_ARGUMENT", None, None))
        if any(Role(r).name in UNSPAWNABLE and r not in self.started for r in needs):
            return Actions(reply=("NOT_FOUND", None, None))  # nobody will ever start it
        if any(self._failed_role(r) for r in needs):
            return Actions(reply=("NOT_FOUND", None, None))  # a dependency failed
        if self._cycle(int(Role[role]), needs):
            return Actions(reply=("INVALID_ARGUMENT", None, None))
        index = self._free_index()
        if index is None:
            return Actions(reply=("BUSY", None, None))
        generation = self.generations.get(index, 0) % 0xFFFF + 1
        entry = Entry(
            0,
            generation,
            int(flags),
            image_id=image_id,
            role=role,
            policy=request.get("restart", 0),
            max_restarts=request.get("max_restarts", 0),
            window_ms=request.get("window_ms", 0),
            backoff_ms=request.get("backoff_ms", 0),
            depends_on=depends,
        )
        if not all(self._running(r) for r in needs):
            self.generations[index] = generation
            entry.held = True
            self.live[index] = entry
            return Actions(reply=("OK", 0, _process_id(index, generation)))
        answers = iter(replies)
        calls, pid, failed = _launch(role, answers)
        if pid is None:
            return Actions(calls, reply=(failed, None, None))
        self.generations[index] = generation
        entry.pid = pid
        self.live[index] = entry
        more, notifies = self._release(answers)
        return Actions(calls + more, notifies, reply=("OK", pid, _process_id(index, generation)))

    # ----------------------------------------------------------- dependencies

    def _running(self, role: int) -> bool:
        """Whether a dependency on `role` is satisfied: rootd started it, or procd runs one."""
        if role in self.started:
            return True
        name = Role(role).name
        return any(e.role == name and e.live and e.stopping is None for e in self.live.values())

    def _failed_role(self, role: int) -> bool:
        name = Role(role).name
        return any(e.role == name and e.failed for e in self.live.values()) and not self._running(role)

    def _cycle(self, own: int, needs: list[int]) -> bool:
        """Would holding a spawn of role `own` on `needs` close a cycle through held entries?"""
        seen: set[int] = set()
        stack = list(needs)
        while stack:
            role = stack.pop()
            if role == own:
                return True
            if role in seen:
                continue
            seen.add(role)
            name = Role(role).name
            for entry in self.live.values():
                if entry.held and entry.role == name:
                    stack.extend(entry.dependencies())
        return False

    def _release(self, answers: Iterator[dict[str, Any]]) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """Launch, in index order and until nothing changes, held entries whose dependencies run."""
        calls: list[str] = []
        notifies: list[int] = []
        changed = True
        while changed:
            changed = False
            for index in sorted(self.live):
                entry = self.live[index]
                if not entry.held or not all(self._running(r) for r in entry.dependencies()):
                    continue
                made, pid, _ = _launch(entry.role, answers)
                calls += made
                entry.held = False
                if pid is None:
                    notifies += self._hold_failed(entry)
                else:
                    entry.pid = pid
                    changed = True
        return tuple(calls), tuple(notifies)

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
        if entry.restarting or entry.held:
            del self.live[index]  # stays down (a pending TIMER will find nothing)
            return Actions(reply=("OK", None, None))
        if entry.stopping is not None:
            return Actions(reply=("BUSY", None, None))
        killed = next(iter(replies), None)
        if killed is None or killed["status"] != "OK":
            return Actions(("KILL_PROCESS",), reply=(_status(killed), None, None))
        entry.stopping = "kill" if op is ProcdOp.KILL else "stop"
        return Actions(("KILL_PROCESS",), reply=("OK", None, None))

    @staticmethod
    def _audit_read(badge: int, request: dict[str, Any]) -> Actions:
        """Reading the audit log: rootd only, one well-formed audit_read_request."""
        if badge != BADGE_ROOTD:
            return Actions(reply=("DENIED", None, None))
        if request.get("len") != AUDIT_READ_REQUEST.size or request.get("caps") or request.get("reserved"):
            return Actions(reply=("INVALID_ARGUMENT", None, None))
        return Actions(reply=("OK", None, None))

    def _probe(self, badge: int, request: dict[str, Any]) -> Actions:
        index = badge - PROCD_CHILD_BADGE_BASE
        entry = self.live.get(index) if 0 <= index < self.table_size else None
        if entry is None or not entry.live:
            return Actions(reply=("DENIED", None, None))  # no live child: FAILED, HELD or RESTARTING
        if request.get("len") or request.get("caps"):
            return Actions(reply=("INVALID_ARGUMENT", None, None))
        return Actions(notifies=(int(NotifyBit.PROBE_COMPLETE),), reply=("OK", None, None))

    def _child_died(self, request: dict[str, Any], replies: list[dict[str, Any]]) -> Actions:
        """Failure and restart policy for a child's death.

        A STOP frees the entry and is never restarted. Otherwise a restart policy (ALWAYS, or
        ON_FAILURE after a failure) restarts it after a backoff timer unless it is over its bound;
        a failure that is not restarted holds the entry FAILED until REAP, and a REQUIRED one is
        reported to rootd (SERVICE_FAILED); a clean exit frees it. Faults and kills (not STOPs)
        are reported to crashd first."""
        pid = request.get("child_pid")
        index = next((i for i, live in self.live.items() if live.pid == pid and live.live), None)
        death = request.get("death")
        if index is None or death not in ("EXITED", "FAULTED", "KILLED"):
            return Actions()
        entry = self.live[index]
        stopped = entry.stopping == "stop"
        entry.stopping = None  # the run STOP or KILL ended is over; a restart is a new run
        killed = death == "KILLED" and not stopped
        failure = bool(death == "FAULTED" or killed or (death == "EXITED" and request.get("code")))
        reported = (death == "FAULTED" or killed) and CapPurpose.CRASHD_ENDPOINT in self.holds
        reports = (entry.pid,) if reported else ()
        restart = not stopped and (
            entry.policy == RestartPolicy.ALWAYS or (entry.policy == RestartPolicy.ON_FAILURE and failure)
        )
        if not restart:
            if not failure:
                del self.live[index]
                return Actions(crash_reports=reports)
            return Actions(notifies=self._hold_failed(entry), crash_reports=reports)
        answers = iter(replies)
        clock = next(answers, None)
        if clock is None or clock["status"] != "OK":
            return Actions(("READ_MONOTONIC_CLOCK",), self._hold_failed(entry), reports)
        counted = entry.counted(int(clock["ticks"]))
        if counted >= entry.max_restarts:
            return Actions(("READ_MONOTONIC_CLOCK",), self._hold_failed(entry), reports)
        timer = next(answers, None)
        if timer is None or timer["status"] != "OK":
            return Actions(("READ_MONOTONIC_CLOCK", "SET_TIMER"), self._hold_failed(entry), reports)
        entry.restarting, entry.restarts = True, counted
        return Actions(("READ_MONOTONIC_CLOCK", "SET_TIMER"), crash_reports=reports)

    def _timer(self, request: dict[str, Any], replies: list[dict[str, Any]]) -> Actions:
        """A backoff timer: restart the entry it names, in place, with the next generation."""
        cookie = request.get("cookie")
        if request.get("len") != TIMER_EVENT.size or request.get("caps") or not isinstance(cookie, int):
            return Actions()
        index = cookie & ((1 << PROCD_ID_GENERATION_SHIFT) - 1)
        entry = self.live.get(index)
        if entry is None or not entry.restarting or entry.generation != cookie >> PROCD_ID_GENERATION_SHIFT:
            return Actions()
        entry.restarts = min(entry.restarts + 1, 0xFF)
        entry.run_start = int(request.get("ticks", 0))
        answers = iter(replies)
        calls, pid, _ = _launch(entry.role, answers)
        if pid is None:
            entry.restarting = False
            return Actions(calls, self._hold_failed(entry))
        entry.pid, entry.restarting = pid, False
        entry.generation = entry.generation % 0xFFFF + 1
        self.generations[index] = entry.generation
        more, notifies = self._release(answers)
        return Actions(calls + more, notifies)

    def _hold_failed(self, entry: Entry) -> tuple[int, ...]:
        """Hold the entry FAILED, and every held entry that can now never start because it
        depends on this role; the notifications that are due (SERVICE_FAILED for REQUIRED)."""
        entry.failed = True
        notifies = [int(NotifyBit.SERVICE_FAILED)] if entry.flags & EnvelopeFlag.REQUIRED else []
        failed_role = int(Role[entry.role])
        if self._running(failed_role):
            return tuple(notifies)
        for other in list(self.live.values()):
            if other.held and failed_role in other.dependencies():
                other.held = False
                notifies += self._hold_failed(other)
        return tuple(notifies)

    def _free_index(self) -> int | None:
        return next((i for i in range(self.table_size) if i not in self.live), None)


_ALL_FLAGS = EnvelopeFlag.REQUIRED | EnvelopeFlag.BOOTSTRAP_CRITICAL | EnvelopeFlag.SPAWNER
_PRIVILEGED_FLAGS = EnvelopeFlag.REQUIRED | EnvelopeFlag.BOOTSTRAP_CRITICAL | EnvelopeFlag.SPAWNER
_ROLE_VALUES = frozenset(int(role) for role in Role)


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


def _launch(role: str, answers: Iterator[dict[str, Any]]) -> tuple[tuple[str, ...], int | None, str]:
    """The kernel calls that start a child of `role` (MINT for roles given PROCD_ENDPOINT, CREATE,
    START), answered in order: (calls, the new pid or None, the failing status)."""
    calls: list[str] = []
    steps = ["CREATE_PROCESS", "START_PROCESS"]
    if CapPurpose.PROCD_ENDPOINT in _intake_purposes(Role[role]):
        steps.insert(0, "MINT_ENDPOINT")
    created: dict[str, Any] = {}
    for step in steps:
        calls.append(step)
        answer = next(answers, None)
        if answer is None or answer["status"] != "OK":
            return tuple(calls), None, _status(answer)
        if step == "CREATE_PROCESS":
            created = answer
    return tuple(calls), int(created["child_pid"]), "OK"


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


@dataclass
class SpecFollower:
    """Checks a growing trace against `spec`, the new requests at each call, the spec keeping
    its state in between (for harnesses that run the machine step by step)."""

    spec: ProcdSpec
    procd_pid: int
    seen: int = 0
    """How many of the trace's events were checked already."""

    def check(self, events: list[Event]) -> tuple[list[Step], Divergence | None]:
        """The steps procd took since the last call, and the first divergence among them."""
        steps = native_steps(events[self.seen :], self.procd_pid)
        self.seen = len(events)
        return steps, check_against_spec(steps, self.spec)


def check_against_spec(steps: list[Step], spec: ProcdSpec) -> Divergence | None:
    """The first step where the native procd and the spec disagree, or None."""
    for step in steps:
        expected = spec.on_request(step.badge, step.request, step.kernel_replies)
        if expected != step.did:
            return Divergence(step, step.did, expected)
    return None
