"""Modelled services (named, timed) and kernel-raised interrupts."""

from __future__ import annotations

from elfcraft import code_image

from emu.accounting import UNIT_CPU
from emu.elf import load_elf
from emu.trace import Trace
from procd_model.abi import (
    CLOCK_REPLY,
    NAMED_REPLY,
    NAMED_REQUEST,
    CapType,
    NamedOp,
    NotifyBit,
    Rights,
    Status,
    Syscall,
    TimedOp,
)
from procd_model.actor import ActorProgram, SyscallRequest, call
from procd_model.caps import Capability, CapTable
from procd_model.kernel import Kernel
from procd_model.peers import WALL_CLOCK_EPOCH_MS, Named, Timed


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


def test_irq_interrupts_a_busy_guest_at_a_block_boundary() -> None:
    """A guest spinning in a loop is stopped just before the block that reaches the interrupt."""
    kernel = Kernel(Trace(), cpu_model=UNIT_CPU)
    irq = kernel.new_notification()
    endpoint = kernel.new_endpoint("spin")
    caps = CapTable()
    caps.install(Capability(CapType.ENDPOINT, endpoint.obj, Rights.RECV), 1)
    # mov ecx, 100000; L: dec ecx; jnz L; xor edi, edi; mov eax, 9; syscall
    spin = load_elf(code_image(bytes.fromhex("b9a0860100ffc975fc31ffb8090000000f05")))
    proc = kernel.create_guest("spin", spin, b"", caps, endpoint.obj)
    kernel.start(proc)
    kernel.schedule_irq(irq, 50_123)
    assert kernel.run(10**7).kind == "idle"
    (event,) = kernel.trace.of_kind("irq")
    assert 50_123 - 2 <= event.cycle <= 50_123  # the loop's blocks are two one-cycle instructions
    assert proc.exit_code == 0 and proc.cpu is not None and proc.cpu.retired == 1 + 200_000 + 3


def test_interrupt_timing_is_deterministic() -> None:
    def cycles() -> list[int]:
        kernel = Kernel(Trace(), cpu_model=UNIT_CPU)
        irq = kernel.new_notification()
        endpoint = kernel.new_endpoint("spin")
        caps = CapTable()
        caps.install(Capability(CapType.ENDPOINT, endpoint.obj, Rights.RECV), 1)
        spin = load_elf(code_image(bytes.fromhex("b9a0860100ffc975fc31ffb8090000000f05")))
        proc = kernel.create_guest("spin", spin, b"", caps, endpoint.obj)
        kernel.start(proc)
        for at in (7_777, 33_333, 99_999):
            kernel.schedule_irq(irq, at)
        kernel.run(10**7)
        return [e.cycle for e in kernel.trace.of_kind("irq")]

    assert cycles() == cycles()
