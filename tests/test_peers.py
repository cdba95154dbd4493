"""Modelled services (named, timed) and kernel-raised interrupts."""

from __future__ import annotations

from elfcraft import code_image

from emu.accounting import UNIT_CPU
from emu.elf import load_elf
from emu.trace import Trace
from procd_model.abi import (
    BADGE_KERNEL,
    CHILD_DEATH,
    CLOCK_REPLY,
    CRASH_READ_REQUEST,
    CRASH_RECORD,
    CRASHD_RING,
    CREATE_PROCESS_REPLY,
    KILL_REQUEST,
    MINT_REQUEST,
    NAMED_REPLY,
    NAMED_REQUEST,
    START_PROCESS_REQUEST,
    TIMER_EVENT,
    TIMER_REQUEST,
    CapType,
    CrashdOp,
    DeathKind,
    KernelEvent,
    KernelOp,
    NamedOp,
    NotifyBit,
    Rights,
    Status,
    Syscall,
    TimedOp,
)
from procd_model.abi import FaultKind as AbiFaultKind
from procd_model.actor import ActorProgram, SyscallRequest, call
from procd_model.caps import Capability, CapTable
from procd_model.kernel import Kernel, Notification, Process
from procd_model.messages import create_process_payload
from procd_model.peers import WALL_CLOCK_EPOCH_MS, Crashd, Named, Timed


def named_request(name: bytes, value: int = 0) -> bytes:
    return NAMED_REQUEST.pack(name=tuple(name.ljust(32, b"\0")), value=value)


def with_service(program: ActorProgram, client: ActorProgram, name: str) -> Kernel:
    kernel = Kernel(Trace(), cpu_model=UNIT_CPU)
    endpoint = kernel.new_endpoint(name)
    own = CapTable()
    own.install(Capability(CapType.ENDPOINT, endpoint.obj, Rights.RECV), 1)
    own.install(Capability(CapType.KERNEL_CONTROL, 0, Rights.SEND), 2)
    kernel.spawn_actor(name, program, own)
    theirs = CapTable()
    theirs.install(Capability(CapType.ENDPOINT, endpoint.obj, Rights.SEND), 1)
    kernel.spawn_actor("client", client, theirs)
    assert kernel.run(10**6).kind == "idle"
    return kernel


def test_named_registers_once_and_looks_up() -> None:
    replies: list[tuple[Status, bytes]] = []

    def client() -> ActorProgram:
        for op, payload in (
            (NamedOp.REGISTER, named_request(b"svc", 7)),
            (NamedOp.REGISTER, named_request(b"svc", 8)),
            (NamedOp.LOOKUP, named_request(b"svc")),
            (NamedOp.LOOKUP, named_request(b"other")),
            (NamedOp.LOOKUP, b"short"),
            (0x999, named_request(b"svc")),
        ):
            result = yield call(1, op, payload)
            reply = result.message()
            replies.append((Status(reply.op), reply.payload))

    with_service(Named().program(1), client(), "named")
    assert [s for s, _ in replies] == [
        Status.OK,
        Status.BUSY,
        Status.OK,
        Status.NOT_FOUND,
        Status.INVALID_ARGUMENT,
        Status.INVALID_ARGUMENT,
    ]
    assert NAMED_REPLY.unpack(replies[2][1])["value"] == 7


def test_timed_reads_the_kernel_clock() -> None:
    ticks: list[int] = []
    statuses: list[Status] = []

    def client() -> ActorProgram:
        for op in (TimedOp.NOW_MONOTONIC, TimedOp.NOW_WALL, TimedOp.WAIT_UNTIL):
            result = yield call(1, op)
            reply = result.message()
            statuses.append(Status(reply.op))
            if reply.op == Status.OK:
                ticks.append(CLOCK_REPLY.unpack(reply.payload)["ticks"])

    kernel = with_service(Timed(2).program(1), client(), "timed")
    assert statuses == [Status.OK, Status.OK, Status.INVALID_ARGUMENT]
    assert ticks[0] <= kernel.monotonic_ticks()
    assert ticks[1] - WALL_CLOCK_EPOCH_MS >= ticks[0]


def test_irq_wakes_a_waiter_at_its_time_when_idle() -> None:
    kernel = Kernel(Trace(), cpu_model=UNIT_CPU)
    irq = kernel.new_notification()
    woken: list[tuple[int, int]] = []

    def waiter() -> ActorProgram:
        result = yield SyscallRequest(Syscall.WAIT, (1,))
        woken.append((result.values[0], kernel.clock // 1000))

    caps = CapTable()
    caps.install(Capability(CapType.NOTIFICATION, irq.obj, Rights.RECV), 1)
    kernel.spawn_actor("waiter", waiter(), caps)
    kernel.schedule_irq(irq, 1_000_000)
    assert kernel.run(10**6).kind == "idle"
    assert woken and woken[0][0] & NotifyBit.IRQ
    assert woken[0][1] >= 1_000_000
    irq_events = kernel.trace.of_kind("irq")
    assert [e.cycle for e in irq_events] == [1_000_000]


def spinning_guest() -> tuple[Kernel, Notification, Process]:
    """A started guest that counts ECX down from 100000 and exits 0; the kernel, an irq, it."""
    kernel = Kernel(Trace(), cpu_model=UNIT_CPU)
    irq = kernel.new_notification()
    endpoint = kernel.new_endpoint("spin")
    caps = CapTable()
    caps.install(Capability(CapType.ENDPOINT, endpoint.obj, Rights.RECV), 1)
    # mov ecx, 100000; L: dec ecx; jnz L; xor edi, edi; mov eax, 9; syscall
    spin = load_elf(code_image(bytes.fromhex("b9a0860100ffc975fc31ffb8090000000f05")))
    proc = kernel.create_guest("spin", spin, b"", caps, endpoint.obj)
    kernel.start(proc)
    return kernel, irq, proc


def test_irq_interrupts_a_busy_guest_at_a_block_boundary() -> None:
    """A guest spinning in a loop is stopped just before the block that reaches the interrupt."""
    kernel, irq, proc = spinning_guest()
    kernel.schedule_irq(irq, 50_123)
    assert kernel.run(10**7).kind == "idle"
    (event,) = kernel.trace.of_kind("irq")
    assert 50_123 - 2 <= event.cycle <= 50_123  # the loop's blocks are two one-cycle instructions
    assert proc.exit_code == 0 and proc.cpu is not None and proc.cpu.retired == 1 + 200_000 + 3


def test_interrupt_timing_is_deterministic() -> None:
    def cycles() -> list[int]:
        kernel, irq, _ = spinning_guest()
        for at in (7_777, 33_333, 99_999):
            kernel.schedule_irq(irq, at)
        kernel.run(10**7)
        return [e.cycle for e in kernel.trace.of_kind("irq")]

    assert cycles() == cycles()


def crash_record(pid: int, event: int = 1, code: int = 2, address: int = 0x1234) -> bytes:
    return CRASH_RECORD.pack(pid=pid, event=event, code=code, address=address)


def test_crashd_keeps_a_ring_of_killed_reports() -> None:
    crashd = Crashd()
    statuses: list[Status] = []
    read: list[tuple[Status, bytes]] = []

    def client() -> ActorProgram:
        for pid in range(CRASHD_RING + 3):
            result = yield call(1, CrashdOp.REPORT, crash_record(pid))
            statuses.append(Status(result.message().op))
        result = yield call(1, CrashdOp.REPORT, crash_record(99, event=7))
        statuses.append(Status(result.message().op))
        for sequence in (0, 3, CRASHD_RING + 2, CRASHD_RING + 3):
            result = yield call(1, CrashdOp.READ, CRASH_READ_REQUEST.pack(sequence=sequence))
            reply = result.message()
            read.append((Status(reply.op), reply.payload))

    with_service(crashd.program(1), client(), "crashd")
    assert statuses == [Status.OK] * (CRASHD_RING + 3) + [Status.INVALID_ARGUMENT]
    assert [s for s, _ in read] == [Status.NOT_FOUND, Status.OK, Status.OK, Status.NOT_FOUND]
    assert CRASH_RECORD.unpack(read[1][1])["pid"] == 3
    assert len(crashd.records) == CRASHD_RING


def test_supervisor_gets_child_died_from_the_kernel() -> None:
    """CREATE_PROCESS with a supervisor slot: the child's death arrives as a kernel message."""
    kernel = Kernel(Trace(), cpu_model=UNIT_CPU, image_loader=lambda image_id: images.get(image_id))
    images = {
        1: load_elf(code_image(bytes.fromhex("bf07000000b8090000000f05"))),  # exit(7)
        2: load_elf(code_image(bytes.fromhex("9089042500100000"))),  # nop; write to 0x1000
    }
    endpoint = kernel.new_endpoint("supervisor")
    caps = CapTable()
    caps.install(Capability(CapType.KERNEL_CONTROL, 0, Rights.SEND | Rights.SPAWN), 1)
    caps.install(Capability(CapType.ENDPOINT, endpoint.obj, Rights.RECV), 2)
    deaths: list[tuple[int, dict[str, int]]] = []

    def supervisor() -> ActorProgram:
        for image_id in (1, 2):
            request = create_process_payload(image_id, [], b"", supervisor_slot=2)
            result = yield call(1, KernelOp.CREATE_PROCESS, request)
            pid = CREATE_PROCESS_REPLY.unpack(result.message().payload)["pid"]
            yield call(1, KernelOp.START_PROCESS, START_PROCESS_REQUEST.pack(pid=pid))
        for _ in range(2):
            result = yield SyscallRequest(Syscall.RECV, (2,))
            message = result.message()
            assert message.op == KernelEvent.CHILD_DIED
            deaths.append((result.values[0], CHILD_DEATH.unpack(message.payload)))

    kernel.spawn_actor("supervisor", supervisor(), caps)
    assert kernel.run(10**6).kind == "idle"
    assert [badge for badge, _ in deaths] == [BADGE_KERNEL, BADGE_KERNEL]
    exited, faulted = (record for _, record in deaths)
    assert (exited["kind"], exited["code"]) == (DeathKind.EXITED, 7)
    assert (faulted["kind"], faulted["code"]) == (DeathKind.FAULTED, AbiFaultKind.UNMAPPED_WRITE)
    assert faulted["address"] == 0x400001


def test_supervisor_slot_must_hold_an_endpoint() -> None:
    kernel = Kernel(Trace(), cpu_model=UNIT_CPU, image_loader=lambda image_id: None)
    caps = CapTable()
    caps.install(Capability(CapType.KERNEL_CONTROL, 0, Rights.SEND | Rights.SPAWN), 1)
    replies: list[Status] = []

    def program() -> ActorProgram:
        result = yield call(1, KernelOp.CREATE_PROCESS, create_process_payload(1, [], b"", supervisor_slot=1))
        replies.append(Status(result.message().op))

    kernel.spawn_actor("p", program(), caps)
    kernel.run(1000)
    assert replies == [Status.INVALID_ARGUMENT]


def test_mint_endpoint_gives_badged_send_capabilities() -> None:
    kernel = Kernel(Trace(), cpu_model=UNIT_CPU)
    own, other = kernel.new_endpoint("own"), kernel.new_endpoint("other")
    caps = CapTable()
    caps.install(Capability(CapType.KERNEL_CONTROL, 0, Rights.SEND), 1)
    caps.install(Capability(CapType.ENDPOINT, own.obj, Rights.RECV), 2)
    caps.install(Capability(CapType.ENDPOINT, other.obj, Rights.SEND), 3)
    results: list[tuple[Status, tuple[int, ...]]] = []

    def program() -> ActorProgram:
        for src, rights, badge in (
            (2, Rights.SEND, 0x10005),
            (2, Rights.SEND | Rights.RECV, 1),
            (2, Rights.SEND, 0),
            (2, Rights.SEND, BADGE_KERNEL),
            (3, Rights.SEND, 1),
            (9, Rights.SEND, 1),
        ):
            result = yield call(1, KernelOp.MINT_ENDPOINT, MINT_REQUEST.pack(src_slot=src, rights=rights, badge=badge))
            reply = result.message()
            results.append((Status(reply.op), reply.caps))

    kernel.spawn_actor("p", program(), caps)
    kernel.run(1000)
    assert [status for status, _ in results] == [
        Status.OK,
        Status.INVALID_ARGUMENT,
        Status.INVALID_ARGUMENT,
        Status.INVALID_ARGUMENT,
        Status.DENIED,
        Status.INVALID_ARGUMENT,
    ]
    (slot,) = results[0][1]
    minted = kernel.procs[1].caps.get(slot)
    assert minted == Capability(CapType.ENDPOINT, own.obj, Rights.SEND, 0x10005)


def test_kill_process_ends_a_supervised_child() -> None:
    spin = load_elf(code_image(b"\xeb\xfe"))  # jmp $
    kernel = Kernel(Trace(), cpu_model=UNIT_CPU, image_loader=lambda image_id: spin, quantum_cycles=5_000)
    own = kernel.new_endpoint("supervisor")
    caps = CapTable()
    caps.install(Capability(CapType.KERNEL_CONTROL, 0, Rights.SEND | Rights.SPAWN), 1)
    caps.install(Capability(CapType.ENDPOINT, own.obj, Rights.RECV), 2)
    statuses: list[Status] = []
    deaths: list[dict[str, int]] = []

    def supervisor() -> ActorProgram:
        pids = []
        for supervisor_slot in (2, 0):
            result = yield call(
                1, KernelOp.CREATE_PROCESS, create_process_payload(1, [], b"", supervisor_slot=supervisor_slot)
            )
            pid = CREATE_PROCESS_REPLY.unpack(result.message().payload)["pid"]
            yield call(1, KernelOp.START_PROCESS, START_PROCESS_REQUEST.pack(pid=pid))
            pids.append(pid)
        supervised, orphan = pids
        for pid, reserved in ((supervised, 1), (orphan, 0), (supervised, 0), (supervised, 0), (99, 0)):
            result = yield call(1, KernelOp.KILL_PROCESS, KILL_REQUEST.pack(pid=pid, reserved=reserved))
            statuses.append(Status(result.message().op))
        result = yield SyscallRequest(Syscall.RECV, (2,))
        deaths.append(CHILD_DEATH.unpack(result.message().payload))

    kernel.spawn_actor("supervisor", supervisor(), caps)
    stop = kernel.run(200_000)
    assert statuses == [Status.INVALID_ARGUMENT, Status.DENIED, Status.OK, Status.NOT_FOUND, Status.NOT_FOUND]
    assert deaths == [{"pid": 2, "kind": DeathKind.KILLED, "reserved": 0, "code": 0, "address": 0}]
    assert [e.pid for e in kernel.trace.of_kind("process.kill")] == [2]
    assert stop.kind == "instruction-limit"  # the unsupervised child spins on


def test_set_timer_sends_timer_at_its_time() -> None:
    kernel = Kernel(Trace(), cpu_model=UNIT_CPU)
    own, other = kernel.new_endpoint("own"), kernel.new_endpoint("other")
    caps = CapTable()
    caps.install(Capability(CapType.KERNEL_CONTROL, 0, Rights.SEND), 1)
    caps.install(Capability(CapType.ENDPOINT, own.obj, Rights.RECV), 2)
    caps.install(Capability(CapType.ENDPOINT, other.obj, Rights.SEND), 3)
    statuses: list[Status] = []
    timers: list[tuple[int, dict[str, int], int]] = []

    def program() -> ActorProgram:
        for slot, at in ((3, 5), (9, 5), (2, 7), (2, 5)):
            result = yield call(
                1, KernelOp.SET_TIMER, TIMER_REQUEST.pack(at_ticks=at, cookie=at * 10, endpoint_slot=slot)
            )
            statuses.append(Status(result.message().op))
        for _ in range(2):
            result = yield SyscallRequest(Syscall.RECV, (2,))
            event = TIMER_EVENT.unpack(result.message().payload)
            timers.append((result.values[0], event, kernel.monotonic_ticks()))

    kernel.spawn_actor("p", program(), caps)
    assert kernel.run(1000).kind == "idle"
    assert statuses == [Status.DENIED, Status.INVALID_ARGUMENT, Status.OK, Status.OK]
    assert [(badge, event["cookie"]) for badge, event, _ in timers] == [(BADGE_KERNEL, 50), (BADGE_KERNEL, 70)]
    assert [event["ticks"] for _, event, _ in timers] == [5, 7]  # the idle machine jumped to each time


def test_set_timer_past_the_end_of_virtual_time_is_refused() -> None:
    """Virtual time is a u64 of cycles (what rdtsc and every trace event carry): a timer due later
    would make the clock overflow, so SET_TIMER refuses it, and the run goes on."""
    kernel = Kernel(Trace())
    own = kernel.new_endpoint("own")
    caps = CapTable()
    caps.install(Capability(CapType.KERNEL_CONTROL, 0, Rights.SEND), 1)
    caps.install(Capability(CapType.ENDPOINT, own.obj, Rights.RECV), 2)
    per_tick = kernel.cpu_model.frequency_hz // 1000
    last = (2**64 - 1) // per_tick  # the last tick whose first cycle is still a u64
    statuses: list[Status] = []

    def program() -> ActorProgram:
        for at in (2**64 - 1, last + 1, last):
            result = yield call(1, KernelOp.SET_TIMER, TIMER_REQUEST.pack(at_ticks=at, cookie=1, endpoint_slot=2))
            statuses.append(Status(result.message().op))
        yield SyscallRequest(Syscall.RECV, (2,))

    kernel.spawn_actor("p", program(), caps)
    assert kernel.run(1000).kind == "idle"
    assert statuses == [Status.INVALID_ARGUMENT, Status.INVALID_ARGUMENT, Status.OK]
    assert kernel.trace.events[-1].cycle < 2**64
