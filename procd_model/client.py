"""Talk to a booted native procd as a client: send requests, collect replies.

This is what fuzzing and benchmarks build on: `ask_all(requests)` boots procd under rootd, then a
client actor CALLs procd with each request (through capabilities the harness installs with
the badge each request names) and records every reply. `Conversation` does the same one request
at a time, with the machine quiet in between, so a stateful test can decide the next step from
the last answer and let virtual time pass or children die between requests. Nothing on the
Python side answers for procd.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from emu.accounting import CpuModel
from emu.elf import ElfImage
from emu.trace import Trace
from emu.world import Instrument, RunOutcome
from procd_model import world_snapshot
from procd_model.abi import BADGE_ROOTD, CapType, NotifyBit, Rights, Role, Status, Syscall
from procd_model.actor import ActorProgram, SyscallRequest
from procd_model.caps import Capability, CapTable
from procd_model.dump import DumpRecorder
from procd_model.kernel import Kernel, Notification, Process, StopReason, sched
from procd_model.messages import Message
from procd_model.ops import MODEL_FACTS
from procd_model.rootd import SLOT_IRQ, Rootd, Services, default_procd_boot
from procd_model.world import make_kernel, run_bootstrap
from procd_model.world_snapshot import WorldSnapshot

DEFAULT_MAX_INSTRUCTIONS = 100_000_000


@dataclass(frozen=True)
class Request:
    """One CALL to procd. `message` bytes go into the IPC buffer verbatim (garbage is allowed)."""

    message: Message | bytes
    badge: int = BADGE_ROOTD
    attach_cap: bool = False
    """Attach a spare notification capability to the message (procd must refuse and delete it)."""


@dataclass
class Session:
    outcome: RunOutcome
    trace: Trace
    kernel: Kernel | None = None
    procd: Process | None = None
    replies: list[tuple[Status, Message | None]] = field(default_factory=list)
    """Per request: the CALL's syscall status and the reply message (None if the CALL failed)."""

    def close(self) -> None:
        """Done with the machine: its engines go back to the pool (processes keep their counts)."""
        if self.kernel is not None:
            self.kernel.release_engines()


def ask_all(
    requests: Sequence[Request],
    trace: Trace | None = None,
    max_instructions: int = DEFAULT_MAX_INSTRUCTIONS,
    services: Services | None = None,
    before_procd: tuple[Role, ...] = (),
    procd_image: ElfImage | None = None,
    recorder: DumpRecorder | None = None,
) -> Session:
    """Boot procd (`procd_image`, default the committed one; with `services` if given, after the
    services of `before_procd` that rootd starts itself), then send `requests` in order from a
    client actor and collect every reply. `recorder` records crash dumps. Without a `trace`,
    events are hashed but not kept (pass `Trace()` to read them afterwards; `Trace.off()` records
    nothing at all)."""
    session = Session(RunOutcome(False, "", "", model=MODEL_FACTS), trace if trace is not None else Trace(keep=False))

    def on_ready(rootd: Rootd) -> None:
        rootd.supervises = False  # the client speaks to procd in rootd's place
        kernel = rootd.kernel
        procd = kernel.procs[rootd.procd_pid]
        session.kernel, session.procd = kernel, procd
        caps = CapTable()
        slot_of: dict[int, int] = {}
        for badge in sorted({r.badge for r in requests}):
            slot = caps.install(Capability(CapType.ENDPOINT, procd.endpoint, Rights.SEND | Rights.GRANT, badge))
            assert slot is not None
            slot_of[badge] = slot
        spare = caps.install(Capability(CapType.NOTIFICATION, kernel.new_notification().obj, Rights.SEND))
        assert spare is not None
        kernel.spawn_actor("client", _client(requests, slot_of, spare, session), caps)

    session.outcome = run_bootstrap(
        session.trace,
        max_instructions,
        manifest=(),
        on_ready=on_ready,
        services=services,
        before_procd=before_procd,
        procd_image=procd_image,
        recorder=recorder,
    )
    return session


def _client(requests: Sequence[Request], slot_of: dict[int, int], spare: int, session: Session) -> ActorProgram:
    for request in requests:
        message = request.message
        if request.attach_cap and isinstance(message, Message):
            message = Message(message.op, message.payload, (spare,))
        result = yield SyscallRequest(Syscall.CALL, (slot_of[request.badge],), message)
        reply = result.message() if result.status is Status.OK else None
        session.replies.append((result.status, reply))


Reply = tuple[Status, Message | None]


class ReplyLog:
    """A conversation's replies, numbered from 0 in the order they came: `len` counts every one,
    but only the latest `keep` are kept (index them by number, or from the end with negative
    indices), so a long conversation does not grow. Iterating gives the kept ones in order."""

    def __init__(self, keep: int = 256) -> None:
        self.keep = keep
        self._kept: deque[Reply] = deque(maxlen=keep)
        self._count = 0

    def append(self, reply: Reply) -> None:
        self._kept.append(reply)
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> Reply:
        """Reply number `index` (negative: from the end). Raises IndexError for one not kept."""
        if index < 0:
            index += self._count
        offset = index - (self._count - len(self._kept))
        if not 0 <= index < self._count or offset < 0:
            raise IndexError(f"reply {index} is not kept (the latest {len(self._kept)} of {self._count} are)")
        return self._kept[offset]

    def __iter__(self) -> Iterator[Reply]:
        return iter(self._kept)

    def save(self) -> tuple[int, tuple[Reply, ...]]:
        return self._count, tuple(self._kept)

    def put(self, saved: tuple[int, tuple[Reply, ...]]) -> None:
        """Back to what `save` returned."""
        self._count = saved[0]
        self._kept.clear()
        self._kept.extend(saved[1])


class ConversationError(RuntimeError):
    """The machine did not get where a Conversation step needs it (procd did not boot, halted)."""


class Conversation:
    """procd booted under rootd (with `services`), then asked one request at a time.

    Every step runs the machine until nothing is runnable, without letting virtual time jump to
    a pending timer or interrupt: `ask` sends one request and returns its reply; `pass_time`
    lets the next pending timer or interrupt fire; `interrupt` raises the services' interrupt
    (children WAITing on IRQ_NOTIFY wake); `terminate` ends a child from outside. Between steps
    procd is back in RECV, so each step's trace events hold whole requests.
    """

    def __init__(
        self,
        badges: Iterable[int],
        services: Services | None = None,
        max_instructions: int = DEFAULT_MAX_INSTRUCTIONS,
        trace: Trace | None = None,
        procd_image: ElfImage | None = None,
        instrument: Instrument | None = None,
        cpu: CpuModel | None = None,
    ) -> None:
        self.trace = trace if trace is not None else Trace(keep=False)
        self.kernel = make_kernel(self.trace, procd_image, instrument, cpu=cpu)
        self.max_instructions = max_instructions
        self.replies = ReplyLog()
        """Every reply counted, the latest kept (a long conversation stays flat)."""
        self._outbox: deque[Request] = deque()
        self._slot_of: dict[int, int] = {}
        self._doorbell: Notification | None = None
        self._irq: Notification | None = None
        self.rootd = Rootd(self.kernel, [], default_procd_boot(with_services=services is not None), services)
        self.rootd.on_ready.append(lambda rootd: self._join(rootd, sorted(set(badges))))
        self._rootd_process = self.rootd.start()
        self._settle()
        if not self.rootd.ready or self._doorbell is None:
            raise ConversationError(f"procd did not signal READY ({self.stop.kind}: {self.stop.detail})")

    @property
    def procd(self) -> Process:
        return self.kernel.procs[self.rootd.procd_pid]

    def ask(self, request: Request) -> tuple[Status, Message | None] | None:
        """CALL procd with `request` and run until the machine is quiet: the CALL's status and
        reply, or None if the CALL has not completed (procd stalled or died)."""
        assert self._doorbell is not None
        before = len(self.replies)
        self._outbox.append(request)
        self.kernel.signal(self._doorbell, 1)
        self._settle()
        return self.replies[before] if len(self.replies) > before else None

    def close(self) -> None:
        """Done with the machine: its engines go back to the pool (processes keep their counts)."""
        self.kernel.release_engines()

    def snapshot(self) -> WorldSnapshot:
        """The whole world as it is now (procd back in RECV between steps): kernel, engines,
        trace, rootd, peers and replies. `restore` brings it back, any number of times."""
        return world_snapshot.take(self)

    def restore(self, snapshot: WorldSnapshot) -> None:
        """Back to `snapshot`: the next steps give exactly the trace they gave from there.
        Raises SnapshotError if an actor is no longer suspended where it was."""
        world_snapshot.restore(self, snapshot)

    def discard(self, snapshot: WorldSnapshot) -> None:
        """`snapshot` will not be restored again: the engines it held may serve other guests."""
        self.kernel.discard(snapshot.kernel)

    def pass_time(self) -> bool:
        """Let virtual time pass to the next pending timer or interrupt and run until quiet;
        False if nothing was pending."""
        if not self.kernel.advance_to_next_event():
            return False
        self._settle()
        return True

    def sleep(self, ms: int) -> None:
        """Let `ms` virtual milliseconds pass while nothing but timers and interrupts runs (each
        due in between fires at its time), running until quiet after each."""
        until = sched.monotonic_ticks(self.kernel) + ms
        while self.kernel.idle_until(until):
            self._settle()

    def interrupt(self) -> None:
        """Raise the services' interrupt (IRQ on the IRQ_NOTIFY notification) and run until quiet."""
        if self._irq is None:
            raise ConversationError("no services: there is no interrupt notification")
        self.kernel.signal(self._irq, NotifyBit.IRQ)
        self._settle()

    def terminate(self, pid: int) -> bool:
        """Kill process `pid` from outside procd and run until quiet; False if it is not a live guest."""
        if not self.kernel.terminate(pid):
            return False
        self._settle()
        return True

    def _settle(self) -> None:
        self.stop: StopReason = self.kernel.run(self.max_instructions, jump_to_events=False)
        if self.stop.kind != "idle":
            why = self._rootd_process.last_log if self.stop.kind == "root-exited" else None
            detail = f"{self.stop.detail}: {why}" if why else self.stop.detail
            raise ConversationError(f"the machine stopped: {self.stop.kind}: {detail}")

    def _join(self, rootd: Rootd, badges: list[int]) -> None:
        rootd.supervises = False  # the client speaks to procd in rootd's place
        kernel = rootd.kernel
        caps = CapTable()
        for badge in badges:
            cap = Capability(CapType.ENDPOINT, self.procd.endpoint, Rights.SEND | Rights.GRANT, badge)
            slot = caps.install(cap)
            assert slot is not None
            self._slot_of[badge] = slot
        spare = caps.install(Capability(CapType.NOTIFICATION, kernel.new_notification().obj, Rights.SEND))
        self._doorbell = kernel.new_notification()
        doorbell = caps.install(Capability(CapType.NOTIFICATION, self._doorbell.obj, Rights.RECV))
        assert spare is not None and doorbell is not None
        irq = self._rootd_process.caps.get(SLOT_IRQ)
        if rootd.services is not None and irq is not None:
            self._irq = kernel.notifications[irq.obj]
        kernel.spawn_actor("client", self._client(spare, doorbell), caps)

    def _client(self, spare: int, doorbell: int) -> ActorProgram:
        while True:
            if not self._outbox:
                yield SyscallRequest(Syscall.WAIT, (doorbell,))
                continue
            request = self._outbox.popleft()
            message = request.message
            if request.attach_cap and isinstance(message, Message):
                message = Message(message.op, message.payload, (spare,))
            result = yield SyscallRequest(Syscall.CALL, (self._slot_of[request.badge],), message)
            reply = result.message() if result.status is Status.OK else None
            self.replies.append((result.status, reply))
