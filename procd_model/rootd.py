"""rootd, modelled as an actor: boots procd through kernel-control, then spawns services through it.

It boots procd the way a root task does (CREATE_PROCESS with procd's envelope and intake
capabilities, START_PROCESS), waits for procd's READY notification, then sends one SPAWN_SERVICE
per boot-manifest entry and checks every reply. It also supervises procd: if procd dies, bootstrap
halts with the reason.

rootd halts bootstrap the way any process ends: it writes why as a DEBUG_WRITE line
(`bootstrap halted: ...`) and EXITs with RootdStatus.BOOTSTRAP_HALTED; the kernel stops the run
when rootd, the root process, exits. Deaths it cannot see in a reply (procd's, or a service's it
started itself) reach it through the kernel's death watch, which rings its bootstrap notification
with CRITICAL_DIED, so a rootd blocked in a WAIT wakes; it checks the watch after every syscall.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from procd_model.abi import (
    BADGE_ROOTD,
    CHILD_FIRST_GRANT_SLOT,
    CHILD_SELF_ENDPOINT_SLOT,
    CREATE_PROCESS_REPLY,
    DEBUG_WRITE_MAX,
    IPC_BUFFER_VADDR,
    PROCD_ID_GENERATION_SHIFT,
    PROCESS_REQUEST,
    PROCESS_STATUS,
    SPAWN_SERVICE_REPLY,
    SPAWN_SERVICE_REQUEST,
    START_PROCESS_REQUEST,
    CapPurpose,
    CapType,
    DeathKind,
    EnvelopeFlag,
    FaultKind,
    KernelOp,
    NotifyBit,
    ProcdOp,
    ProcState,
    RestartPolicy,
    Rights,
    Role,
    RootdStatus,
    StartupStatus,
    Status,
    Syscall,
)
from procd_model.actor import ActorProgram, SyscallRequest, call
from procd_model.caps import Capability, CapTable
from procd_model.images import boot_image_named
from procd_model.kernel import Kernel, Notification, Process, RunState
from procd_model.messages import EnvelopeSlot, Grant, build_envelope, create_process_payload
from procd_model.peers import Crashd, Named, Timed

SLOT_KERNEL_CONTROL = 1
SLOT_BOOT_NOTIFY_RECV = 2
SLOT_BOOT_NOTIFY_SEND = 3
SLOT_NAMED = 4
SLOT_TIMED = 5
SLOT_IRQ = 6
SLOT_CRASHD = 7
FOUNDATION_IMAGE = "svc-stub"
"""The stand-in image for services with no native image here."""


@dataclass(frozen=True)
class ManifestEntry:
    """One service in rootd's boot manifest, and what rootd expects of it."""

    image: str
    role: Role
    flags: int = 0
    expect_status: Status = Status.OK
    expect_exit: int | None = 0
    """Exit code the spawned process must end with (None: it must not exit)."""
    expect_fault: str | None = None
    """The fault kind (e.g. "unmapped-write") that must kill it instead; with expect_exit None
    and expect_fault None the process must still be alive at the end."""
    await_probe: bool = False
    """After spawning it, rootd waits for procd's PROBE_COMPLETE notification."""
    restart: RestartPolicy = RestartPolicy.NEVER
    max_restarts: int = 0
    window_ms: int = 0
    backoff_ms: int = 0
    depends_on: tuple[Role, ...] = ()
    """Roles that must be running before procd starts it (procd holds it until then)."""
    never_starts: bool = False
    """procd must never start it (it stays held, or a dependency failed)."""
    image_id: int = 0
    """The image id rootd asks for; 0: the boot image named `image`."""

    @property
    def boot_id(self) -> int:
        """The image id SPAWN_SERVICE names for this entry."""
        return self.image_id or boot_image_named(self.image).image_id


@dataclass
class SpawnRecord:
    entry: ManifestEntry
    status: Status
    pid: int = 0
    endpoint: int = 0
    proc_id: int = 0
    """procd's id for it (pid is 0 while procd holds it for its dependencies)."""


@dataclass
class ProcdBoot:
    """How rootd boots procd: its envelope and the capabilities granted (the intake)."""

    envelope: bytes
    grants: list[Grant]


def _failure(death: int, code: int) -> str:
    """How a FAILED process ended, for the halt message."""
    if death == DeathKind.FAULTED:
        try:
            return f"faulted: {FaultKind(code).name}"
        except ValueError:
            return f"faulted: fault kind {code}"
    if death == DeathKind.KILLED:
        return "was killed"
    return f"exited with code {code}"


def default_procd_boot(*, with_services: bool = False, started: tuple[Role, ...] = ()) -> ProcdBoot:
    """procd's envelope and intake as the ABI's PROCD intake spec asks for them.

    `started` are the services rootd starts itself before procd; the envelope lists them
    (`started_roles`), so procd counts dependencies on them as satisfied.

    `with_services` also hands procd SEND capabilities to named and timed and the RECV side of the
    interrupt notification (optional intake entries, for distribution to the test images), and a
    SEND capability to crashd (for its kill reports).
    """
    grants = [
        Grant(SLOT_KERNEL_CONTROL, Rights.SEND | Rights.SPAWN),
        Grant(SLOT_BOOT_NOTIFY_SEND, Rights.SEND),
    ]
    purposes = [CapPurpose.KERNEL_CONTROL, CapPurpose.BOOTSTRAP_NOTIFY]
    if with_services:
        grants += [
            Grant(SLOT_NAMED, Rights.SEND),
            Grant(SLOT_TIMED, Rights.SEND),
            Grant(SLOT_IRQ, Rights.RECV),
            Grant(SLOT_CRASHD, Rights.SEND),
        ]
        purposes += [
            CapPurpose.NAMED_ENDPOINT,
            CapPurpose.TIMED_ENDPOINT,
            CapPurpose.IRQ_NOTIFY,
            CapPurpose.CRASHD_ENDPOINT,
        ]
    slots = [EnvelopeSlot(CHILD_SELF_ENDPOINT_SLOT, CapPurpose.SELF_ENDPOINT)]
    slots += [EnvelopeSlot(CHILD_FIRST_GRANT_SLOT + i, purpose) for i, purpose in enumerate(purposes)]
    flags = EnvelopeFlag.REQUIRED | EnvelopeFlag.BOOTSTRAP_CRITICAL
    return ProcdBoot(build_envelope(Role.PROCD, flags, slots, started), grants)


@dataclass(frozen=True)
class Services:
    """The modelled services rootd starts before procd when the test images need them."""

    irq_at_cycle: int | None = None
    """When the kernel raises the interrupt on the IRQ_NOTIFY notification (None: never)."""
    crashd: Crashd = field(default_factory=Crashd)
    """The crashd actor's state, for tests and scenarios to inspect."""


@dataclass
class Rootd:
    kernel: Kernel
    manifest: list[ManifestEntry]
    boot: ProcdBoot = field(default_factory=default_procd_boot)
    services: Services | None = None
    procd_pid: int = 0
    ready: bool = False
    finished: bool = False
    spawned: list[SpawnRecord] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    probes_completed: int = 0
    bits: int = 0
    """Bootstrap-notification bits taken but not yet acted on."""
    halt_reason: str | None = None
    """Why bootstrap halts (`bootstrap halted: ...`), once rootd knows; it then logs it and exits."""
    before_procd: tuple[Role, ...] = ()
    """Services rootd starts itself, in order, before procd (EriX: memd, vspaced, pagerd)."""
    foundation: dict[int, str] = field(default_factory=dict)
    """pid -> role of those services (their death halts bootstrap)."""
    notification: Notification | None = None
    """rootd's bootstrap notification (its death watch rings it)."""
    on_ready: list[Callable[[Rootd], None]] = field(default_factory=list)
    """Called once procd has signalled READY, before the manifest is sent (tests hook in here)."""
    named: Named | None = None
    """The name service's state, when rootd started the services."""
    supervises: bool = True
    """After its manifest rootd keeps WAITing for procd's SERVICE_FAILED, so that a REQUIRED
    service failing at any later time halts bootstrap. The client harness, which speaks to
    procd in rootd's place from READY on, turns this off: rootd then only stays alive (WAITing,
    acting on nothing but its death watch)."""

    def start(self) -> Process:
        """Create rootd's process with its boot capabilities and watch for procd's death."""
        kernel = self.kernel
        notification = self.notification = kernel.new_notification()
        caps = CapTable()
        caps.install(Capability(CapType.KERNEL_CONTROL, 0, Rights.SEND | Rights.SPAWN), SLOT_KERNEL_CONTROL)
        caps.install(Capability(CapType.NOTIFICATION, notification.obj, Rights.RECV), SLOT_BOOT_NOTIFY_RECV)
        caps.install(Capability(CapType.NOTIFICATION, notification.obj, Rights.SEND), SLOT_BOOT_NOTIFY_SEND)
        kernel.observe_deaths(self)
        rootd = kernel.spawn_actor("rootd", self.program(), caps)
        kernel.make_root(rootd)
        if self.services is not None:
            self._start_services(caps, self.services)
        return rootd

    def _start_services(self, caps: CapTable, services: Services) -> None:
        """named, timed and crashd as actors, and the interrupt notification; rootd keeps what procd gets."""
        kernel = self.kernel
        self.named = Named()
        services_started = (
            (SLOT_NAMED, "named", self.named.program),
            (SLOT_TIMED, "timed", Timed(2).program),
            (SLOT_CRASHD, "crashd", services.crashd.program),
        )
        for slot, name, program in services_started:
            endpoint = kernel.new_endpoint(name)
            own = CapTable()
            own.install(Capability(CapType.ENDPOINT, endpoint.obj, Rights.RECV), 1)
            own.install(Capability(CapType.KERNEL_CONTROL, 0, Rights.SEND), 2)
            caps.install(Capability(CapType.ENDPOINT, endpoint.obj, Rights.SEND), slot)
            kernel.spawn_actor(name, program(1), own)
        services.crashd.dump_of = kernel.state.dumps.get
        irq = kernel.new_notification()
        caps.install(Capability(CapType.NOTIFICATION, irq.obj, Rights.RECV), SLOT_IRQ)
        if services.irq_at_cycle is not None:
            kernel.schedule_irq(irq, services.irq_at_cycle)

    def process_died(self, proc: Process) -> None:
        """The death watch: the death of procd or of a service rootd started itself halts
        bootstrap. rootd learns it on its next turn; CRITICAL_DIED wakes it if it is WAITing."""
        why = self._critical_death(proc)
        if why is None or self.halt_reason is not None:
            return
        self.halt_reason = f"bootstrap halted: {why}"
        assert self.notification is not None
        self.kernel.signal(self.notification, NotifyBit.CRITICAL_DIED)

    def _critical_death(self, proc: Process) -> str | None:
        """How procd or a service rootd started itself ended (None: any other process)."""
        if proc.pid in self.foundation:
            role = self.foundation[proc.pid]
            if proc.state is RunState.KILLED:
                return f"{role.lower()} was killed"
            how = f"faulted: {proc.fault.describe()}" if proc.fault is not None else f"exited {proc.exit_code}"
            return f"{role.lower()} {how}"
        if proc.pid != self.procd_pid:
            return None
        if proc.state is RunState.KILLED:
            why = "procd was killed"
        elif proc.fault is not None:
            why = f"procd faulted: {proc.fault.describe()}"
        else:
            code = proc.exit_code or 0
            try:
                name = StartupStatus(code).name
            except ValueError:
                name = f"{code:#x}"
            when = "refused to start" if not self.ready else "exited"
            why = f"procd {when}: {name} (exit {code:#x})"
        return why

    def _boot_foundation(self, role: Role) -> ActorProgram:
        """Create and start a service rootd launches itself before procd (memd, vspaced, pagerd),
        and wait until it says READY: each must be up before the next is started."""
        image = boot_image_named(FOUNDATION_IMAGE)
        slots = [EnvelopeSlot(1, CapPurpose.SELF_ENDPOINT), EnvelopeSlot(2, CapPurpose.BOOTSTRAP_NOTIFY)]
        envelope = build_envelope(role, EnvelopeFlag.REQUIRED | EnvelopeFlag.BOOTSTRAP_CRITICAL, slots)
        request = create_process_payload(image.image_id, [Grant(SLOT_BOOT_NOTIFY_SEND, Rights.SEND)], envelope)
        result = yield call(SLOT_KERNEL_CONTROL, KernelOp.CREATE_PROCESS, request)
        reply = result.message()
        if reply.op != Status.OK:
            self.problems.append(f"CREATE_PROCESS for {role.name.lower()} failed: {Status(reply.op).name}")
            return
        pid = CREATE_PROCESS_REPLY.unpack(reply.payload)["pid"]
        self.foundation[pid] = role.name
        yield call(SLOT_KERNEL_CONTROL, KernelOp.START_PROCESS, START_PROCESS_REQUEST.pack(pid=pid))
        while not self.bits & NotifyBit.READY:
            result = yield SyscallRequest(Syscall.WAIT, (SLOT_BOOT_NOTIFY_RECV,))
            self.bits |= result.values[0]
        self.bits &= ~NotifyBit.READY

    def program(self) -> ActorProgram:
        """rootd's life: `_bootstrap`, checking the death watch after every syscall; once
        bootstrap halts, the reason as a log line and EXIT with BOOTSTRAP_HALTED. If its own boot
        steps fail (`problems`), it exits 0."""
        steps = self._bootstrap()
        try:
            request = next(steps)
            while self.halt_reason is None:
                result = yield request
                if self.halt_reason is None:
                    request = steps.send(result)
        except StopIteration:
            if self.halt_reason is None:
                return
        steps.close()
        assert self.halt_reason is not None
        line = self.halt_reason.encode()[:DEBUG_WRITE_MAX]
        yield SyscallRequest(Syscall.DEBUG_WRITE, (IPC_BUFFER_VADDR, len(line)), line)
        yield SyscallRequest(Syscall.EXIT, (RootdStatus.BOOTSTRAP_HALTED,))

    def _bootstrap(self) -> ActorProgram:
        for role in self.before_procd:
            yield from self._boot_foundation(role)
            if self.problems:
                return
        procd = boot_image_named("procd")
        request = create_process_payload(procd.image_id, self.boot.grants, self.boot.envelope, badge=BADGE_ROOTD)
        result = yield call(SLOT_KERNEL_CONTROL, KernelOp.CREATE_PROCESS, request)
        reply = result.message()
        if reply.op != Status.OK:
            self.problems.append(f"CREATE_PROCESS for procd failed: {Status(reply.op).name}")
            return
        self.procd_pid = CREATE_PROCESS_REPLY.unpack(reply.payload)["pid"]
        procd_slot = reply.caps[0]
        result = yield call(SLOT_KERNEL_CONTROL, KernelOp.START_PROCESS, START_PROCESS_REQUEST.pack(pid=self.procd_pid))
        if result.message().op != Status.OK:
            self.problems.append("START_PROCESS for procd failed")
            return
        while not self.bits & NotifyBit.READY:
            result = yield SyscallRequest(Syscall.WAIT, (SLOT_BOOT_NOTIFY_RECV,))
            self.bits |= result.values[0]
        self.bits &= ~NotifyBit.READY
        self.ready = True
        for hook in self.on_ready:
            hook(self)
        for entry in self.manifest:
            yield from self._spawn(procd_slot, entry)
            yield from self._check_required(procd_slot)
            if self.halt_reason is not None:
                return
        yield from self._resolve_held(procd_slot)
        self.finished = True
        yield from self._watch(procd_slot)

    def _watch(self, procd_slot: int) -> ActorProgram:
        """After the manifest: WAIT for procd's notifications for as long as the system runs
        (the run ends idle with rootd waiting); a REQUIRED service that fails halts bootstrap.
        Handed over to a client (`supervises` off), rootd WAITs and acts on nothing."""
        while self.halt_reason is None:
            result = yield SyscallRequest(Syscall.WAIT, (SLOT_BOOT_NOTIFY_RECV,))
            if self.supervises:
                self.bits |= result.values[0]
                yield from self._check_required(procd_slot)

    def _resolve_held(self, procd_slot: int) -> ActorProgram:
        """Learn the pids of spawns procd held for their dependencies and started later."""
        for record in self.spawned:
            if record.status is not Status.OK or record.pid:
                continue
            result = yield call(procd_slot, ProcdOp.STATUS, PROCESS_REQUEST.pack(id=record.proc_id))
            reply = result.message()
            if reply.op == Status.OK and len(reply.payload) == PROCESS_STATUS.size:
                record.pid = PROCESS_STATUS.unpack(reply.payload)["pid"]

    def _check_required(self, procd_slot: int) -> ActorProgram:
        """Take procd's asynchronous reports; a failed REQUIRED service halts bootstrap progression."""
        result = yield SyscallRequest(Syscall.POLL, (SLOT_BOOT_NOTIFY_RECV,))
        self.bits |= result.values[0]
        if not self.bits & NotifyBit.SERVICE_FAILED:
            return
        self.bits &= ~NotifyBit.SERVICE_FAILED
        result = yield call(procd_slot, ProcdOp.LIST)
        reply = result.message()
        size = PROCESS_STATUS.size
        for offset in range(0, len(reply.payload) - size + 1, size):
            status = PROCESS_STATUS.unpack(reply.payload, offset)
            if status["state"] != ProcState.FAILED or not status["flags"] & EnvelopeFlag.REQUIRED:
                continue
            name = self._service_name(status)
            why = _failure(status["death"], status["code"])
            self.halt_reason = f"bootstrap halted: required service {name} (pid {status['pid']}) {why}"
            return

    def _service_name(self, status: dict[str, int]) -> str:
        """The manifest image of the entry a `process_status` describes: the latest spawn into
        its table index with its image (a restart keeps the index, not the pid or the id)."""
        index = status["id"] & ((1 << PROCD_ID_GENERATION_SHIFT) - 1)
        for record in reversed(self.spawned):
            same_entry = record.proc_id & ((1 << PROCD_ID_GENERATION_SHIFT) - 1) == index
            if record.status is Status.OK and same_entry and record.entry.boot_id == status["image_id"]:
                return record.entry.image
        return f"pid {status['pid']}"

    def _spawn(self, procd_slot: int, entry: ManifestEntry) -> ActorProgram:
        request = SPAWN_SERVICE_REQUEST.pack(
            image_id=entry.boot_id,
            role=entry.role,
            flags=entry.flags,
            restart=entry.restart,
            max_restarts=entry.max_restarts,
            window_ms=entry.window_ms,
            backoff_ms=entry.backoff_ms,
            depends_on=sum(1 << role for role in entry.depends_on),
        )
        result = yield call(procd_slot, ProcdOp.SPAWN_SERVICE, request)
        if result.status is not Status.OK:
            self.problems.append(f"SPAWN_SERVICE {entry.image}: CALL failed with {result.status.name}")
            return
        reply = result.message()
        try:
            status = Status(reply.op)
        except ValueError:
            self.problems.append(f"SPAWN_SERVICE {entry.image}: reply carries unknown status {reply.op:#x}")
            return
        record = SpawnRecord(entry, status)
        if status is Status.OK:
            if len(reply.payload) != SPAWN_SERVICE_REPLY.size:
                self.problems.append(f"SPAWN_SERVICE {entry.image}: reply payload is {len(reply.payload)} bytes")
                return
            fields = SPAWN_SERVICE_REPLY.unpack(reply.payload)
            record.pid, record.endpoint, record.proc_id = fields["pid"], fields["endpoint"], fields["id"]
            if entry.await_probe:
                while not self.bits & NotifyBit.PROBE_COMPLETE:
                    result = yield SyscallRequest(Syscall.WAIT, (SLOT_BOOT_NOTIFY_RECV,))
                    self.bits |= result.values[0]
                self.bits &= ~NotifyBit.PROBE_COMPLETE
                self.probes_completed += 1
        if status is not entry.expect_status:
            self.problems.append(f"SPAWN_SERVICE {entry.image}: expected {entry.expect_status.name}, got {status.name}")
        self.spawned.append(record)
