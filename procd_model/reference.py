"""An executable specification of procd, and a check of the native procd against it.

`ProcdSpec` is procd's policy written plainly in Python: its process table as a state machine
and, for each request procd receives, what it must do — which kernel-control calls it makes,
which notifications and reports it sends, and what it replies. It knows nothing about how the
native code is written.

`native_steps(events, procd_pid)` cuts a trace of a real run into steps, one per message delivered
to the native procd, from the typed records the kernel attaches to its message events
(`procd_model.ops.IpcRecord`, never the trace's display fields). `check_against_spec(steps, spec)`
feeds the spec each step's request and the kernel's answers to procd's own calls (the spec's view
of the environment), then compares what the spec says procd must do with what procd did. The first
difference comes back as a `Divergence` naming the request that caused it (None if they agree).
`SpecFollower` does the same for a trace that grows step by step.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from emu.events import IPC_RECV, IPC_REPLY, IPC_SEND, KERNEL_PID, NOTIFY
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
    CrashdOp,
    DeathKind,
    EnvelopeFlag,
    KernelEvent,
    NotifyBit,
    ProcdOp,
    ProcState,
    RestartPolicy,
    Role,
    Status,
)
from procd_model.ops import IpcRecord, NotifyRecord, op_name, status_name

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
        return set_bits(self.depends_on)

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

    def copy(self) -> ProcdSpec:
        """A copy later requests do not change (entries copied; the rest is immutable)."""
        live = {index: replace(entry) for index, entry in self.live.items()}
        return replace(self, live=live, generations=dict(self.generations))

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

    def on_request(self, badge: int, request: Request, kernel_replies: list[KernelReply]) -> Actions:
        """What procd must do for a message; `kernel_replies` answers its kernel-control calls in order.

        A reply is only seen when the request came by CALL (a SEND leaves no reply right)."""
        actions = self._decide(badge, request, kernel_replies)
        if not request.call:
            actions = Actions(actions.kernel_calls, actions.notifies, actions.crash_reports, None)
        return actions

    def _decide(self, badge: int, request: Request, kernel_replies: list[KernelReply]) -> Actions:
        op = request.op
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
            return _audit_read(badge, request)
        if op in (KernelEvent.CHILD_DIED, KernelEvent.TIMER):
            return Actions(reply=("DENIED", None, None))  # a forged kernel message
        return Actions(reply=("INVALID_ARGUMENT", None, None))

    # --------------------------------------------------------------- requests

    def _client_spawn(self, badge: int, request: Request, replies: list[KernelReply]) -> Actions:
        """SPAWN from an authorised client: a running child spawned with the SPAWNER flag, asking
        for a TEST process without REQUIRED, BOOTSTRAP_CRITICAL or SPAWNER (no escalation)."""
        index = badge - PROCD_CHILD_BADGE_BASE
        client = self.live.get(index) if 0 <= index < self.table_size else None
        if client is None or not client.live or not client.flags & EnvelopeFlag.SPAWNER:
            return Actions(reply=("DENIED", None, None))
        return self._spawn(badge, request, replies, client=True)

    def _spawn(self, badge: int, request: Request, replies: list[KernelReply], *, client: bool = False) -> Actions:
        if not client and badge not in self.spawn_badges:
            return Actions(reply=("DENIED", None, None))
        if request.length != SPAWN_SERVICE_REQUEST.size or request.caps:
            return Actions(reply=("INVALID_ARGUMENT", None, None))
        role_value, flags, image_id = request.get("role"), request.get("flags"), request.get("image_id")
        if role_value not in _ROLE_VALUES or Role(role_value).name in UNSPAWNABLE or flags & ~int(_ALL_FLAGS):
            return Actions(reply=("INVALID_ARGUMENT", None, None))
        role = Role(role_value).name
        if image_id == 0 or request.get("restart") not in _RESTART_VALUES or request.get("reserved"):
            return Actions(reply=("INVALID_ARGUMENT", None, None))
        if client and (role != "TEST" or flags & int(_PRIVILEGED_FLAGS)):
            return Actions(reply=("DENIED", None, None))
        depends = request.get("depends_on")
        needs = set_bits(depends)
        if any(r not in _ROLE_VALUES for r in needs) or Role[role] in needs:
            return Actions(reply=("INVALID_ARGUMENT", None, None))
        if any(Role(r).name in UNSPAWNABLE and r not in self.started for r in needs):
            return Actions(reply=("NOT_FOUND", None, None))  # nobody will ever start it
        if any(self._failed_role(r) for r in needs):
            return Actions(reply=("NOT_FOUND", None, None))  # a dependency failed
        if _closes_cycle(self.live.values(), int(Role[role]), needs):
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
            policy=request.get("restart"),
            max_restarts=request.get("max_restarts"),
            window_ms=request.get("window_ms"),
            backoff_ms=request.get("backoff_ms"),
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

    def _release(self, answers: Iterator[KernelReply]) -> tuple[tuple[str, ...], tuple[int, ...]]:
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

    def _manage(self, op: ProcdOp, badge: int, request: Request, replies: list[KernelReply]) -> Actions:
        """STOP, KILL, STATUS and LIST: rootd's view of and hold over the processes procd runs."""
        if badge != BADGE_ROOTD:
            return Actions(reply=("DENIED", None, None))
        if op is ProcdOp.LIST:
            if request.length or request.caps:
                return Actions(reply=("INVALID_ARGUMENT", None, None))
            return Actions(reply=("OK", None, None))
        if request.length != PROCESS_REQUEST.size or request.caps or request.get("reserved"):
            return Actions(reply=("INVALID_ARGUMENT", None, None))
        proc_id = request.get("id")
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
        if killed is None or killed.status != Status.OK:
            return Actions(("KILL_PROCESS",), reply=(_status(killed), None, None))
        entry.stopping = "kill" if op is ProcdOp.KILL else "stop"
        return Actions(("KILL_PROCESS",), reply=("OK", None, None))

    def _probe(self, badge: int, request: Request) -> Actions:
        index = badge - PROCD_CHILD_BADGE_BASE
        entry = self.live.get(index) if 0 <= index < self.table_size else None
        if entry is None or not entry.live:
            return Actions(reply=("DENIED", None, None))  # no live child: FAILED, HELD or RESTARTING
        if request.length or request.caps:
            return Actions(reply=("INVALID_ARGUMENT", None, None))
        return Actions(notifies=(int(NotifyBit.PROBE_COMPLETE),), reply=("OK", None, None))

    def _child_died(self, request: Request, replies: list[KernelReply]) -> Actions:
        """Failure and restart policy for a child's death.

        A STOP frees the entry and is never restarted. Otherwise a restart policy (ALWAYS, or
        ON_FAILURE after a failure) restarts it after a backoff timer unless it is over its bound;
        a failure that is not restarted holds the entry FAILED until REAP, and a REQUIRED one is
        reported to rootd (SERVICE_FAILED); a clean exit frees it. Faults and kills (not STOPs)
        are reported to crashd first."""
        pid = request.values.get("pid")
        index = next((i for i, live in self.live.items() if live.pid == pid and live.live), None)
        death = _ENDINGS.get(request.get("kind"))
        if index is None or death is None:
            return Actions()
        entry = self.live[index]
        stopped = entry.stopping == "stop"
        entry.stopping = None  # the run STOP or KILL ended is over; a restart is a new run
        killed = death is DeathKind.KILLED and not stopped
        failure = bool(death is DeathKind.FAULTED or killed or (death is DeathKind.EXITED and request.get("code")))
        reported = (death is DeathKind.FAULTED or killed) and CapPurpose.CRASHD_ENDPOINT in self.holds
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
        if clock is None or clock.status != Status.OK:
            return Actions(("READ_MONOTONIC_CLOCK",), self._hold_failed(entry), reports)
        counted = entry.counted(clock.get("ticks"))
        if counted >= entry.max_restarts:
            return Actions(("READ_MONOTONIC_CLOCK",), self._hold_failed(entry), reports)
        timer = next(answers, None)
        if timer is None or timer.status != Status.OK:
            return Actions(("READ_MONOTONIC_CLOCK", "SET_TIMER"), self._hold_failed(entry), reports)
        entry.restarting, entry.restarts = True, counted
        return Actions(("READ_MONOTONIC_CLOCK", "SET_TIMER"), crash_reports=reports)

    def _timer(self, request: Request, replies: list[KernelReply]) -> Actions:
        """A backoff timer: restart the entry it names, in place, with the next generation."""
        cookie = request.get("cookie")
        if request.length != TIMER_EVENT.size or request.caps:
            return Actions()
        index = cookie & ((1 << PROCD_ID_GENERATION_SHIFT) - 1)
        entry = self.live.get(index)
        if entry is None or not entry.restarting or entry.generation != cookie >> PROCD_ID_GENERATION_SHIFT:
            return Actions()
        entry.restarts = min(entry.restarts + 1, 0xFF)
        entry.run_start = request.get("ticks")
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


def _closes_cycle(live: Iterable[Entry], own: int, needs: list[int]) -> bool:
    """Would holding a spawn of role `own` on `needs` close a cycle through the held entries of `live`?"""
    held = [entry for entry in live if entry.held]
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
        for entry in held:
            if entry.role == name:
                stack.extend(entry.dependencies())
    return False


def _audit_read(badge: int, request: Request) -> Actions:
    """Reading the audit log: rootd only, one well-formed audit_read_request."""
    if badge != BADGE_ROOTD:
        return Actions(reply=("DENIED", None, None))
    if request.length != AUDIT_READ_REQUEST.size or request.caps or request.get("reserved"):
        return Actions(reply=("INVALID_ARGUMENT", None, None))
    return Actions(reply=("OK", None, None))


_ALL_FLAGS = EnvelopeFlag.REQUIRED | EnvelopeFlag.BOOTSTRAP_CRITICAL | EnvelopeFlag.SPAWNER
_PRIVILEGED_FLAGS = EnvelopeFlag.REQUIRED | EnvelopeFlag.BOOTSTRAP_CRITICAL | EnvelopeFlag.SPAWNER
_ROLE_VALUES = frozenset(int(role) for role in Role)
_RESTART_VALUES = frozenset(int(policy) for policy in RestartPolicy)


def set_bits(mask: int) -> list[int]:
    """The numbers of the bits set in `mask`, ascending."""
    bits = []
    while mask:
        low = mask & -mask
        bits.append(low.bit_length() - 1)
        mask ^= low
    return bits


_ENDINGS = {int(kind): kind for kind in (DeathKind.EXITED, DeathKind.FAULTED, DeathKind.KILLED)}
"""The CHILD_DIED kinds procd acts on."""


def _intake_purposes(role: Role) -> set[CapPurpose]:
    entries = INTAKE.get(role, INTAKE[None])
    return {CapPurpose(entry.purpose) for entry in entries}


def _launch(role: str, answers: Iterator[KernelReply]) -> tuple[tuple[str, ...], int | None, str]:
    """The kernel calls that start a child of `role` (MINT for roles given PROCD_ENDPOINT, CREATE,
    START), answered in order: (calls, the new pid or None, the failing status)."""
    calls: list[str] = []
    steps = ["CREATE_PROCESS", "START_PROCESS"]
    if CapPurpose.PROCD_ENDPOINT in _intake_purposes(Role[role]):
        steps.insert(0, "MINT_ENDPOINT")
    created = KernelReply(Status.OK)
    for step in steps:
        calls.append(step)
        answer = next(answers, None)
        if answer is None or answer.status != Status.OK:
            return tuple(calls), None, _status(answer)
        if step == "CREATE_PROCESS":
            created = answer
    return tuple(calls), created.get("pid"), "OK"


def _process_id(index: int, generation: int) -> int:
    return index | generation << PROCD_ID_GENERATION_SHIFT


def _status(reply: KernelReply | None) -> str:
    return "INTERNAL" if reply is None else status_name(reply.status)


# ------------------------------------------------------------------ the native side


@dataclass(frozen=True)
class Request:
    """A message delivered to procd, typed (from the kernel's record of it, not the trace's text)."""

    op: int
    call: bool
    """Sent by CALL: procd owes a reply."""
    length: int
    """The payload's length in bytes."""
    caps: int
    """Capabilities that landed in procd's table."""
    values: Mapping[str, Any] = field(default_factory=dict)
    """The payload's fields by ABI name, when it has its layout's size (else none)."""

    def get(self, name: str) -> int:
        """The payload field `name`, 0 when the payload does not have it."""
        value = self.values.get(name, 0)
        return value if isinstance(value, int) else 0

    def describe(self) -> str:
        for names in (ProcdOp, KernelEvent):
            if self.op in names._value2member_map_:
                return names(self.op).name
        return f"{self.op:#x}"


@dataclass(frozen=True)
class KernelReply:
    """The kernel's answer to one of procd's kernel-control calls."""

    status: int
    values: Mapping[str, Any] = field(default_factory=dict)
    """The OK reply payload's fields by ABI name."""

    def get(self, name: str) -> int:
        value = self.values.get(name, 0)
        return value if isinstance(value, int) else 0


@dataclass(frozen=True)
class Step:
    """One message delivered to procd, the kernel's answers to its calls, and what procd did."""

    seq: int
    badge: int
    request: Request
    kernel_replies: list[KernelReply]
    did: Actions


@dataclass
class _Cut:
    """The step being cut from the trace: its delivery and what procd did since."""

    seq: int
    badge: int
    request: Request
    kernel_replies: list[KernelReply] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    notifies: list[int] = field(default_factory=list)
    reports: list[int] = field(default_factory=list)
    reply: tuple[str, int | None, int | None] | None = None

    def step(self) -> Step:
        did = Actions(tuple(self.calls), tuple(self.notifies), tuple(self.reports), self.reply)
        return Step(self.seq, self.badge, self.request, self.kernel_replies, did)

    def follow(self, event: Event, record: IpcRecord, procd_pid: int) -> None:
        """Take one more message event into the step."""
        if event.pid == procd_pid and event.kind == IPC_SEND:
            if record.service == "kernel":
                self.calls.append(op_name("kernel", record.op))
            elif record.service == "crashd" and record.op == CrashdOp.REPORT:
                pid = record.values().get("pid")
                self.reports.append(pid if isinstance(pid, int) else -1)  # -1: no pid, never what the spec says
        elif event.pid == KERNEL_PID and event.kind == IPC_REPLY and record.peer == procd_pid:
            self.kernel_replies.append(KernelReply(record.status or 0, record.values()))
        elif event.pid == procd_pid and event.kind == IPC_REPLY:
            values = record.values()
            self.reply = (status_name(record.status or 0), values.get("pid"), values.get("id"))


def native_steps(events: Iterable[Event], procd_pid: int) -> list[Step]:
    """Cut a trace into procd's request steps (from each delivery to procd until the next), reading
    the typed records the kernel attached to its message and notify events (`IpcRecord`,
    `NotifyRecord`)."""
    steps: list[Step] = []
    current: _Cut | None = None
    for event in events:
        record = event.data
        if event.kind == IPC_RECV and event.pid == procd_pid and isinstance(record, IpcRecord):
            if current is not None:
                steps.append(current.step())
            request = Request(record.op, record.call, len(record.payload), record.caps, record.values())
            current = _Cut(event.seq, record.badge, request)
        elif current is None:
            continue
        elif isinstance(record, IpcRecord):
            current.follow(event, record, procd_pid)
        elif event.pid == procd_pid and event.kind == NOTIFY and isinstance(record, NotifyRecord):
            current.notifies.append(record.bits)
    if current is not None:
        steps.append(current.step())
    return steps


@dataclass(frozen=True)
class Divergence:
    step: Step
    native: Actions
    spec: Actions

    def describe(self) -> str:
        request = self.step.request
        return (
            f"request at seq {self.step.seq} (op {request.describe()}, badge {self.step.badge:#x}): "
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
