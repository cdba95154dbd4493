"""The kernel model on its own, driven by actors: IPC, capabilities, badges, reply rights."""

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from procd_model.abi import (
    CLOCK_REPLY,
    MESSAGE_HEADER,
    CapType,
    KernelOp,
    Rights,
    Status,
    Syscall,
)
from procd_model.actor import ActorProgram, SyscallRequest, SyscallResult, call
from procd_model.caps import Capability, CapTable
from procd_model.kernel import Kernel, RunState
from procd_model.messages import Grant, Message, create_process_payload

Log = list[tuple[str, object]]


def table(*caps: tuple[int, Capability]) -> CapTable:
    t = CapTable()
    for slot, cap in caps:
        t.install(cap, slot)
    return t


def two_party(
    client: Callable[[Log], ActorProgram],
    server: Callable[[Log], ActorProgram],
    client_rights: Rights = Rights.SEND | Rights.GRANT,
    badge: int = 42,
) -> tuple[Kernel, Log]:
    kernel = Kernel()
    endpoint = kernel.new_endpoint("test")
    log: Log = []
    kernel.spawn_actor("server", server(log), table((1, Capability(CapType.ENDPOINT, endpoint.obj, Rights.RECV))))
    client_caps = table(
        (1, Capability(CapType.ENDPOINT, endpoint.obj, client_rights, badge)),
        (5, Capability(CapType.NOTIFICATION, 99, Rights.SEND)),
    )
    kernel.spawn_actor("client", client(log), client_caps)
    assert kernel.run(10**6).kind == "idle"
    return kernel, log


def echo_server(log: Log) -> ActorProgram:
    result = yield SyscallRequest(Syscall.RECV, (1,))
    log.append(("server got", (result.status, result.values[0], result.message().op, result.message().payload)))
    yield SyscallRequest(Syscall.REPLY, (), Message(Status.OK, result.message().payload[::-1]))


def test_call_reply_carries_badge_and_payload() -> None:
    def client(log: Log) -> ActorProgram:
        result = yield call(1, 0x77, b"abc")
        log.append(("client got", (result.status, result.message().op, result.message().payload)))

    _, log = two_party(client, echo_server)
    assert log == [("server got", (Status.OK, 42, 0x77, b"abc")), ("client got", (Status.OK, Status.OK, b"cba"))]


def test_send_without_send_right_is_denied() -> None:
    def client(log: Log) -> ActorProgram:
        result = yield call(1, 1)
        log.append(("client", result.status))

    _, log = two_party(client, echo_server, client_rights=Rights.GRANT)
    assert log == [("client", Status.DENIED)]


def test_lookup_errors() -> None:
    def client(log: Log) -> ActorProgram:
        for slot in (64, 7, 5):
            result = yield call(slot, 1)
            log.append((f"slot {slot}", result.status))

    _, log = two_party(client, echo_server)
    assert log == [
        ("slot 64", Status.INVALID_ARGUMENT),
        ("slot 7", Status.NOT_FOUND),
        ("slot 5", Status.INVALID_ARGUMENT),
    ]


def test_malformed_header_is_refused_to_the_sender() -> None:
    bad = [
        MESSAGE_HEADER.pack(op=1, payload_len=993),
        MESSAGE_HEADER.pack(op=1, cap_count=5),
        MESSAGE_HEADER.pack(op=1, reserved0=1),
        MESSAGE_HEADER.pack(op=1, reserved1=1),
    ]

    def client(log: Log) -> ActorProgram:
        for raw in bad:
            result = yield SyscallRequest(Syscall.CALL, (1,), raw)
            log.append(("client", result.status))

    _, log = two_party(client, echo_server)
    assert log == [("client", Status.INVALID_ARGUMENT)] * 4


def test_transferring_caps_needs_grant() -> None:
    def client(log: Log) -> ActorProgram:
        result = yield call(1, 1, b"", caps=(5,))
        log.append(("client", result.status))

    _, log = two_party(client, echo_server, client_rights=Rights.SEND)
    assert log == [("client", Status.DENIED)]


def test_transferred_cap_lands_in_the_receiver() -> None:
    def server(log: Log) -> ActorProgram:
        result = yield SyscallRequest(Syscall.RECV, (1,))
        slot = result.message().caps[0]
        info = yield SyscallRequest(Syscall.CAP_INFO, (slot,))
        log.append(("server", (slot, CapType(info.values[0]), Rights(info.values[1]))))
        yield SyscallRequest(Syscall.REPLY, (), Message(Status.OK))

    def client(log: Log) -> ActorProgram:
        yield call(1, 1, b"", caps=(5,))

    _, log = two_party(client, server)
    assert log == [("server", (2, CapType.NOTIFICATION, Rights.SEND))]


def test_receiving_again_without_replying_answers_the_caller_internal() -> None:
    def server(log: Log) -> ActorProgram:
        yield SyscallRequest(Syscall.RECV, (1,))
        yield SyscallRequest(Syscall.RECV, (1,))

    def client(log: Log) -> ActorProgram:
        result = yield call(1, 1)
        log.append(("client", result.status))

    kernel, log = two_party(client, server)
    assert log == [("client", Status.INTERNAL)]
    assert kernel.procs[1].state is RunState.BLOCKED


def nbsend(slot: int, op: int, payload: bytes = b"", caps: tuple[int, ...] = ()) -> SyscallRequest:
    return SyscallRequest(Syscall.NBSEND, (slot,), Message(op, payload, caps))


def test_nbsend_delivers_to_a_waiting_receiver() -> None:
    def server(log: Log) -> ActorProgram:
        result = yield SyscallRequest(Syscall.RECV, (1,))
        message = result.message()
        log.append(("server got", (result.values[0], message.op, message.payload, message.caps)))

    def client(log: Log) -> ActorProgram:
        result = yield nbsend(1, 0x77, b"abc", caps=(5,))
        log.append(("client", result.status))

    kernel, log = two_party(client, server)
    assert log == [("client", Status.OK), ("server got", (42, 0x77, b"abc", (2,)))]
    sent = [e.fields for e in kernel.trace.events if e.kind == "ipc.send"]
    assert len(sent) == 1 and "dropped" not in sent[0]


def test_nbsend_without_a_waiting_receiver_drops_the_message_and_never_blocks() -> None:
    def server(log: Log) -> ActorProgram:
        yield SyscallRequest(Syscall.YIELD)  # not receiving when the client sends
        log.append(("server", "receives"))
        result = yield SyscallRequest(Syscall.RECV, (1,))
        log.append(("server got", result.message().op))

    def client(log: Log) -> ActorProgram:
        result = yield nbsend(1, 0x77, b"abc", caps=(5,))
        log.append(("client", result.status))

    kernel, log = two_party(client, server)
    assert log == [("client", Status.BUSY), ("server", "receives")]
    server = kernel.procs[1]
    assert server.state is RunState.BLOCKED, "the dropped message never arrives"
    assert server.caps.get(2) is None, "a dropped message transfers no capability"
    sent = [e.fields for e in kernel.trace.events if e.kind == "ipc.send"]
    assert len(sent) == 1 and sent[0]["dropped"] is True
    assert not any(e.kind == "ipc.recv" for e in kernel.trace.events)


def test_nbsend_checks_like_send() -> None:
    def server(log: Log) -> ActorProgram:
        yield SyscallRequest(Syscall.RECV, (1,))

    def client(log: Log) -> ActorProgram:
        for slot in (64, 7, 5):
            result = yield nbsend(slot, 1)
            log.append((f"slot {slot}", result.status))
        result = yield nbsend(1, 1, b"", caps=(9,))
        log.append(("empty cap", result.status))

    _, log = two_party(client, server)
    assert log == [
        ("slot 64", Status.INVALID_ARGUMENT),
        ("slot 7", Status.NOT_FOUND),
        ("slot 5", Status.INVALID_ARGUMENT),
        ("empty cap", Status.NOT_FOUND),
    ]

    kernel = Kernel()
    results: list[Status] = []

    def on_kernel_control() -> ActorProgram:
        result = yield nbsend(1, KernelOp.READ_MONOTONIC_CLOCK)
        results.append(result.status)

    kernel.spawn_actor("client", on_kernel_control(), table((1, Capability(CapType.KERNEL_CONTROL, 0, Rights.SEND))))
    assert kernel.run(10**6).kind == "idle"
    assert results == [Status.INVALID_ARGUMENT], "kernel-control answers only CALL"


def test_reply_without_a_reply_right() -> None:
    def server(log: Log) -> ActorProgram:
        result = yield SyscallRequest(Syscall.REPLY, (), Message(Status.OK))
        log.append(("server", result.status))

    def client(log: Log) -> ActorProgram:
        yield from ()

    _, log = two_party(client, server)
    assert log == [("server", Status.NOT_FOUND)]


def test_notifications_accumulate_bits() -> None:
    kernel = Kernel()
    notification = kernel.new_notification()
    log: list[int] = []

    def waiter() -> ActorProgram:
        result = yield SyscallRequest(Syscall.WAIT, (1,))
        log.append(result.values[0])

    def notifier() -> ActorProgram:
        yield SyscallRequest(Syscall.NOTIFY, (1, 0x1))
        yield SyscallRequest(Syscall.NOTIFY, (1, 0x4))

    kernel.spawn_actor(
        "notifier", notifier(), table((1, Capability(CapType.NOTIFICATION, notification.obj, Rights.SEND)))
    )
    kernel.spawn_actor("waiter", waiter(), table((1, Capability(CapType.NOTIFICATION, notification.obj, Rights.RECV))))
    kernel.run(1000)
    assert log == [0x5]


def kernel_control_client(requests: list[SyscallRequest], log: list[SyscallResult], rights: Rights) -> Kernel:
    kernel = Kernel(image_loader=lambda image_id: None)

    def program() -> ActorProgram:
        for request in requests:
            log.append((yield request))

    caps = table(
        (1, Capability(CapType.KERNEL_CONTROL, 0, rights)),
        (2, Capability(CapType.ENDPOINT, 9, Rights.SEND)),
    )
    kernel.spawn_actor("client", program(), caps)
    kernel.run(1000)
    return kernel


def test_kernel_control_checks_rights_and_images() -> None:
    log: list[SyscallResult] = []
    no_image = create_process_payload(7, [], b"")
    widen = create_process_payload(7, [Grant(2, Rights.SEND | Rights.RECV)], b"")
    kernel_control_client(
        [call(1, KernelOp.CREATE_PROCESS, no_image), call(1, KernelOp.READ_MONOTONIC_CLOCK)], log, Rights.SEND
    )
    assert [Status(r.message().op) for r in log] == [Status.DENIED, Status.OK]
    assert CLOCK_REPLY.unpack(log[1].message().payload)["ticks"] == 0
    log.clear()
    kernel_control_client(
        [
            call(1, KernelOp.CREATE_PROCESS, no_image),
            call(1, KernelOp.CREATE_PROCESS, widen),
            call(1, KernelOp.CREATE_PROCESS, b"short"),
            call(1, 99),
            SyscallRequest(Syscall.SEND, (1,), Message(KernelOp.READ_MONOTONIC_CLOCK)),
        ],
        log,
        Rights.SEND | Rights.SPAWN,
    )
    assert [r.status for r in log] == [Status.OK] * 4 + [Status.INVALID_ARGUMENT]
    assert [Status(r.message().op) for r in log[:4]] == [
        Status.NOT_FOUND,
        Status.DENIED,
        Status.INVALID_ARGUMENT,
        Status.INVALID_ARGUMENT,
    ]


syscall_numbers = st.integers(min_value=0, max_value=16)
raw_buffers = st.binary(min_size=0, max_size=64)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(syscall_numbers, st.lists(st.integers(min_value=0, max_value=70), max_size=3), raw_buffers),
        max_size=12,
    )
)
def test_garbage_syscalls_never_crash_the_kernel(calls: list[tuple[int, list[int], bytes]]) -> None:
    """Any sequence of syscalls with any arguments and buffers ends as a result or a dead process."""
    kernel = Kernel(image_loader=lambda image_id: None)
    endpoint = kernel.new_endpoint("test")

    def program() -> ActorProgram:
        for number, args, buffer in calls:
            if number == Syscall.EXIT:
                continue
            yield SyscallRequest(number, tuple(args), buffer)  # type: ignore[arg-type]

    caps = table(
        (1, Capability(CapType.ENDPOINT, endpoint.obj, Rights.SEND | Rights.RECV | Rights.GRANT)),
        (2, Capability(CapType.KERNEL_CONTROL, 0, Rights.SEND | Rights.SPAWN)),
        (3, Capability(CapType.NOTIFICATION, kernel.new_notification().obj, Rights.SEND | Rights.RECV)),
    )
    kernel.spawn_actor("fuzz", program(), caps)
    stop = kernel.run(10_000)
    assert stop.kind == "idle"
