"""The native procd and its executable spec in lockstep, over lifecycle sequences.

A Hypothesis state machine restores the native procd from a world snapshot taken right after
its boot (procd_model.fuzz.target.ProcdTarget.fresh) and drives it with what a lifecycle can
hold: spawns of children that exit, fault, never end, report a probe or spawn a child of their
own, with restart policies, dependencies and flags; STOP, KILL, REAP, STATUS, LIST, AUDIT_READ, PROBE_COMPLETE and SPAWN
(from the right and wrong badges, with live and stale ids); forged CHILD_DIED and TIMER;
virtual time passing to the next timer (restart backoffs) or by some milliseconds; the services' interrupt (which ends
the children waiting for it); kills from outside procd; and CREATE_PROCESS failures the kernel
answers. After every step:

- procd is alive and back in RECV, and every request got exactly one reply with a status the
  ABI defines (the machine never stalls: Conversation raises if it does not go quiet);
- every message procd took was handled as `procd_model/reference.py` says (kernel calls,
  notifications, crashd reports, reply status, pid and id);
- an OK LIST reply lists exactly the entries the spec holds (id, pid, image, role, state, flags).
- ids are unique and an entry's generation only grows; no two entries name one pid;
- no child holds a capability outside its role's intake spec, or with wider rights;
- no entry is restarted beyond its bound; an OK REAP leaves procd no capability to the reaped
  process's endpoint;
- and at the end, the same steps run again on a fresh boot give the same trace, byte for byte.

Restart policies are drawn so that restarts are bounded under any window semantics (a window far
longer than the backoffs); the extreme values are tests/test_hostile.py's.

Profiles: CI runs a bounded number of examples (a few seconds). For a long search set
`PROCD_STATEFUL=long` (500 examples of up to 80 steps), e.g.
`PROCD_STATEFUL=long .venv/bin/python -m pytest -q tests/test_spec_stateful.py`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    precondition,
    rule,
)

from procd_model.abi import (
    AUDIT_READ_REQUEST,
    BADGE_ROOTD,
    CHILD_DEATH,
    PROCD_CHILD_BADGE_BASE,
    PROCD_ID_GENERATION_SHIFT,
    SPAWN_SERVICE_REPLY,
    TIMER_EVENT,
    DeathKind,
    EnvelopeFlag,
    KernelEvent,
    ProcdOp,
    Role,
    Status,
)
from procd_model.client import Request
from procd_model.fuzz.target import ProcdTarget
from procd_model.harness import (
    FOREIGN_BADGES,
    Answer,
    agree,
    check_children,
    listed,
    live_children,
    process_id,
    process_request,
    reply_status,
    spawn_request,
)
from procd_model.kernel import ScriptedFaults
from procd_model.messages import Message
from procd_model.strategies import SERVICE_ROLES, TEST_IMAGES, dependencies
from procd_model.strategies import restart_policies as policies

LONG = os.environ.get("PROCD_STATEFUL") == "long"


Rule = Callable[..., Any]


def recorded(method: Rule) -> Rule:
    """Log the rule's call (name and arguments), so teardown can run the example again."""

    @functools.wraps(method)
    def wrapper(self: ProcdLifecycle, **kwargs: Any) -> Any:
        self.log.append((method.__name__, kwargs))
        return method(self, **kwargs)

    return wrapper


@functools.cache
def booted_procd() -> ProcdTarget:
    """procd booted once; every example starts from its post-boot snapshot, restored."""
    return ProcdTarget()


ID_INDEX_MASK = (1 << PROCD_ID_GENERATION_SHIFT) - 1


class ProcdLifecycle(RuleBasedStateMachine):
    """rootd's and the children's requests, time and deaths; native and spec compared after each."""

    ids = Bundle("ids")

    def __init__(self) -> None:
        super().__init__()
        self.talk, self.follower = booted_procd().fresh()
        self.faults = ScriptedFaults()
        self.talk.kernel.injector = self.faults
        self.asked = 0
        self.log: list[tuple[str, dict[str, Any]]] = []
        self.generations: dict[int, int] = {}
        """Per table index, the highest generation seen in an id."""
        self.pid_of: dict[int, int] = {}
        """Per id, the pid its occupant got (once it has one)."""

    def ask(self, request: Request) -> Status:
        answer: Answer = self.talk.ask(request)
        self.asked += 1
        status = reply_status(answer)
        agree(self.talk, self.follower)
        if request.message.op == ProcdOp.LIST and status is Status.OK:  # type: ignore[union-attr]
            assert answer is not None and answer[1] is not None
            assert listed(answer[1]) == self.follower.spec.listing()
        return status

    # ----------------------------------------------------------------- spawns

    @rule(
        target=ids,
        image=st.sampled_from(TEST_IMAGES),
        policy=policies,
        depends_on=dependencies,
        required=st.booleans(),
    )
    @recorded
    def spawn_test(self, image: str, policy: dict[str, int], depends_on: int, required: bool) -> object:
        flags = int(EnvelopeFlag.REQUIRED) if required else 0
        if image == "phase1-spawner":
            flags |= EnvelopeFlag.SPAWNER
        return self._spawn(spawn_request(image, flags=flags, depends_on=depends_on, **policy))

    @rule(target=ids, role=st.sampled_from(SERVICE_ROLES), policy=policies, depends_on=dependencies)
    @recorded
    def spawn_service(self, role: Role, policy: dict[str, int], depends_on: int) -> object:
        return self._spawn(spawn_request("svc-stub", role=role, depends_on=depends_on & ~(1 << role), **policy))

    def _spawn(self, request: Request) -> object:
        before = len(self.talk.replies)
        status = self.ask(request)
        if status is not Status.OK:
            return multiple()
        reply = self.talk.replies[before][1]
        assert reply is not None
        return SPAWN_SERVICE_REPLY.unpack(reply.payload)["id"]

    # ------------------------------------------------------ rootd's requests

    @rule(proc_id=ids, op=st.sampled_from([ProcdOp.STOP, ProcdOp.KILL, ProcdOp.STATUS]))
    @recorded
    def manage(self, proc_id: int, op: ProcdOp) -> None:
        self.ask(process_request(op, proc_id))

    @rule(proc_id=consumes(ids))
    @recorded
    def reap(self, proc_id: int) -> None:
        """REAP; an OK one leaves procd no capability to the reaped process's endpoint."""
        pid = self.pid_of.get(proc_id, 0)
        if self.ask(process_request(ProcdOp.REAP, proc_id)) is Status.OK and pid:
            endpoint = self.talk.kernel.procs[pid].endpoint
            held = [cap for _, cap in self.talk.procd.caps.occupied() if cap.obj == endpoint]
            assert not held, f"procd still holds {held} to reaped pid {pid}'s endpoint"

    @rule(
        op=st.sampled_from([ProcdOp.STOP, ProcdOp.KILL, ProcdOp.STATUS, ProcdOp.REAP]),
        index=st.integers(0, 3),
        generation=st.integers(0, 4),
    )
    @recorded
    def manage_any_id(self, op: ProcdOp, index: int, generation: int) -> None:
        """Ids procd may never have handed out, or handed out to an earlier occupant."""
        self.ask(process_request(op, process_id(index, generation)))

    @rule(proc_id=ids, op=st.sampled_from([ProcdOp.STOP, ProcdOp.KILL, ProcdOp.REAP, ProcdOp.STATUS]))
    @recorded
    def manage_from_a_wrong_badge(self, proc_id: int, op: ProcdOp) -> None:
        assert self.ask(process_request(op, proc_id, badge=FOREIGN_BADGES[0])) is Status.DENIED

    @rule(target=ids)
    @recorded
    def list_all(self) -> object:
        """LIST, and take the ids it names (a restart gives a process a new one)."""
        assert self.ask(Request(Message(ProcdOp.LIST))) is Status.OK
        reply = self.talk.replies[-1][1]
        assert reply is not None
        return multiple(*(record["id"] for record in listed(reply)))

    @rule(from_seq=st.sampled_from([0, 1, 30, 0xFFFF_FFFF]))
    @recorded
    def audit_read(self, from_seq: int) -> None:
        assert self.ask(Request(Message(ProcdOp.AUDIT_READ, AUDIT_READ_REQUEST.pack(from_seq=from_seq)))) is Status.OK

    @rule(
        which=st.integers(0, 31),
        event=st.sampled_from([KernelEvent.CHILD_DIED, KernelEvent.TIMER]),
        badge=st.sampled_from([BADGE_ROOTD, FOREIGN_BADGES[0], PROCD_CHILD_BADGE_BASE]),
    )
    @recorded
    def forged_kernel_event(self, which: int, event: KernelEvent, badge: int) -> None:
        """A CHILD_DIED naming a live child, or a TIMER naming a live id, not from the kernel:
        DENIED, and nothing changes (the next LIST still matches the spec)."""
        children = self.children() or [0]
        pid = children[which % len(children)]
        if event is KernelEvent.CHILD_DIED:
            payload = CHILD_DEATH.pack(pid=pid, kind=DeathKind.FAULTED, code=1)
        else:
            payload = TIMER_EVENT.pack(cookie=process_id(which % 4, 1 + which // 4 % 3), ticks=1)
        assert self.ask(Request(Message(event, payload), badge=badge)) is Status.DENIED

    # ----------------------------------------------------- children's requests

    @rule(index=st.integers(0, 4))
    @recorded
    def probe_complete(self, index: int) -> None:
        self.ask(Request(Message(ProcdOp.PROBE_COMPLETE), badge=PROCD_CHILD_BADGE_BASE + index))

    @rule(index=st.integers(0, 4), role=st.sampled_from([Role.TEST, Role.NAMED]))
    @recorded
    def spawn_from_a_child(self, index: int, role: Role) -> None:
        """SPAWN through a child's badge: allowed only for a RUNNING child with SPAWNER."""
        request = spawn_request("phase0-exit", role=role)
        message = request.message
        assert isinstance(message, Message)
        self.ask(Request(Message(ProcdOp.SPAWN, message.payload), badge=PROCD_CHILD_BADGE_BASE + index))

    # ------------------------------------------------------- time and deaths

    @precondition(lambda self: self.talk.kernel.event_pending)
    @rule()
    @recorded
    def time_passes(self) -> None:
        assert self.talk.pass_time()
        agree(self.talk, self.follower)

    @rule(ms=st.sampled_from([1, 2, 6, 20, 100, 1_000]))
    @recorded
    def sleep(self, ms: int) -> None:
        """Idle virtual time passes (timers due in between fire): a run can outlast its window."""
        self.talk.sleep(ms)
        agree(self.talk, self.follower)

    @rule()
    @recorded
    def interrupt(self) -> None:
        self.talk.interrupt()
        agree(self.talk, self.follower)

    @rule(image=st.sampled_from(TEST_IMAGES), status=st.sampled_from([Status.BUSY, Status.NOT_FOUND, Status.INTERNAL]))
    @recorded
    def next_create_fails(self, image: str, status: Status) -> None:
        """The kernel answers the next CREATE_PROCESS for `image` with `status` (a spawn, a
        restart or a held service's release then fails as the spec says)."""
        self.faults.fail_creates(image, status)

    @precondition(lambda self: bool(self.children()))
    @rule(which=st.integers(0, 31))
    @recorded
    def killed_from_outside(self, which: int) -> None:
        children = self.children()
        assert self.talk.terminate(children[which % len(children)])
        agree(self.talk, self.follower)

    def children(self) -> list[int]:
        """Live guest processes procd created (supervises)."""
        return live_children(self.talk)

    @invariant()
    def ids_are_unique_and_generations_only_grow(self) -> None:
        for record in self.follower.spec.listing():
            index, generation = record["id"] & ID_INDEX_MASK, record["id"] >> PROCD_ID_GENERATION_SHIFT
            assert generation >= self.generations.get(index, 0), f"entry {index}'s generation went back"
            self.generations[index] = generation
            if record["pid"]:
                assert self.pid_of.setdefault(record["id"], record["pid"]) == record["pid"], "an id was reused"
        pids = [record["pid"] for record in self.follower.spec.listing() if record["pid"]]
        assert len(pids) == len(set(pids)), "two entries name one pid"

    @invariant()
    def children_hold_only_what_their_intake_allows(self) -> None:
        """No child holds a capability its role's intake spec does not list, or one with
        wider rights than the spec lists for that type."""
        check_children(self.talk, self.follower)

    @invariant()
    def restarts_stay_within_their_bound(self) -> None:
        for index, entry in self.follower.spec.live.items():
            assert entry.restarts <= entry.max_restarts, f"entry {index} restarted beyond its bound"

    def teardown(self) -> None:
        """The same example run again gives the same trace, byte for byte."""
        if getattr(self, "replaying", False) or not self.log:
            return
        first = self.talk.trace.digest()
        again = ProcdLifecycle()  # the same world, restored to just after boot again
        again.replaying = True
        for name, kwargs in self.log:
            getattr(again, name)(**kwargs)
        assert again.talk.trace.digest() == first, "the same steps gave another trace"

    @invariant()
    def procd_serves(self) -> None:
        assert self.talk.procd.state.value == "blocked", "procd is back in RECV"
        assert len(self.talk.replies) == self.asked, "every request got exactly one reply"


ProcdLifecycle.TestCase.settings = settings(
    max_examples=500 if LONG else 30,
    stateful_step_count=80 if LONG else 40,
    deadline=None,
)
test_native_procd_follows_its_spec_over_lifecycles = ProcdLifecycle.TestCase
