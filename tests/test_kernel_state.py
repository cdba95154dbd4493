"""The kernel's state is plain data: a snapshot is a copy later runs leave alone, and states compare.
Also what the state records (whom a caller waits on) and what the world injects."""

from procd_model import costs
from procd_model.abi import CapType, KernelOp, Rights, Status, Syscall
from procd_model.actor import ActorProgram, SyscallRequest, call
from procd_model.caps import Capability, CapTable
from procd_model.kernel import InRecv, InReply, Kernel, RunState, ScriptedFaults, snapshot_state
from procd_model.kernel.control import KERNEL_CONTROL_OPS
from procd_model.messages import Message


def table(*caps: tuple[int, Capability]) -> CapTable:
    t = CapTable()
    for slot, cap in caps:
        t.install(cap, slot)
    return t


def echo_server() -> ActorProgram:
    result = yield SyscallRequest(Syscall.RECV, (1,))
    yield SyscallRequest(Syscall.REPLY, (), Message(Status.OK, result.message().payload[::-1]))


def caller() -> ActorProgram:
    yield call(1, 0x77, b"abc")


def with_server(server: ActorProgram) -> tuple[Kernel, int]:
    kernel = Kernel()
    endpoint = kernel.new_endpoint("test")
    kernel.spawn_actor("server", server, table((1, Capability(CapType.ENDPOINT, endpoint.obj, Rights.RECV))))
    assert kernel.run(10**6).kind == "idle"
    return kernel, endpoint.obj


def test_a_snapshot_equals_its_original_and_later_runs_leave_it_alone() -> None:
    kernel, endpoint = with_server(echo_server())
    snapshot = kernel.snapshot()
    again = snapshot_state(kernel.state)
    assert snapshot == kernel.state and again == snapshot
    assert snapshot.procs[1].waiting == InRecv(endpoint)

    kernel.spawn_actor("client", caller(), table((1, Capability(CapType.ENDPOINT, endpoint, Rights.SEND))))
    assert kernel.run(10**6).kind == "idle"

    assert kernel.state != snapshot
    assert snapshot == again, "running on changed nothing in the snapshot"
    assert snapshot.procs[1].state is RunState.BLOCKED and 2 not in snapshot.procs
    assert kernel.procs[1].state is RunState.EXITED and kernel.procs[2].state is RunState.EXITED
    assert snapshot.clock < kernel.clock


def test_a_snapshot_keeps_its_own_capability_tables() -> None:
    kernel, endpoint = with_server(echo_server())
    snapshot = kernel.snapshot()
    kernel.procs[1].caps.delete(1)
    assert snapshot.procs[1].caps.get(1) == Capability(CapType.ENDPOINT, endpoint, Rights.RECV)
    assert kernel.state != snapshot


def test_a_caller_whose_call_was_received_records_whom_it_waits_on() -> None:
    def silent_server() -> ActorProgram:
        yield SyscallRequest(Syscall.RECV, (1,))
        yield SyscallRequest(Syscall.WAIT, (2,))  # never signalled: the caller stays waiting

    kernel = Kernel()
    endpoint = kernel.new_endpoint("test")
    notification = kernel.new_notification()
    server_caps = table(
        (1, Capability(CapType.ENDPOINT, endpoint.obj, Rights.RECV)),
        (2, Capability(CapType.NOTIFICATION, notification.obj, Rights.RECV)),
    )
    server = kernel.spawn_actor("server", silent_server(), server_caps)
    client = kernel.spawn_actor("client", caller(), table((1, Capability(CapType.ENDPOINT, endpoint.obj, Rights.SEND))))
    assert kernel.run(10**6).kind == "idle"
    assert client.state is RunState.BLOCKED and client.waiting == InReply(server.pid)
    assert server.reply_to == client.pid


def test_scripted_faults_answer_in_the_order_they_were_queued() -> None:
    faults = ScriptedFaults(kill_at={"a": 10})
    faults.fail_creates("a", Status.BUSY, times=2)
    faults.fail_creates("a", Status.NOT_FOUND)
    assert [faults.create_failure("a") for _ in range(4)] == [Status.BUSY, Status.BUSY, Status.NOT_FOUND, None]
    assert faults.create_failure("b") is None
    assert (faults.fault_at("a"), faults.fault_at("a")) == (10, None), "a kill applies to the next process only"


def test_every_kernel_control_op_has_a_handler_and_its_documented_cost() -> None:
    assert set(KERNEL_CONTROL_OPS) == set(KernelOp)
    documented = {
        KernelOp.CREATE_PROCESS: costs.CREATE_PROCESS,
        KernelOp.START_PROCESS: costs.START_PROCESS,
        KernelOp.READ_MONOTONIC_CLOCK: costs.READ_MONOTONIC_CLOCK,
        KernelOp.MINT_ENDPOINT: costs.MINT_ENDPOINT,
        KernelOp.KILL_PROCESS: costs.KILL_PROCESS,
        KernelOp.SET_TIMER: costs.SET_TIMER,
    }
    assert {op: entry.cost for op, entry in KERNEL_CONTROL_OPS.items()} == documented
    spawning = {op for op, entry in KERNEL_CONTROL_OPS.items() if entry.needs_spawn}
    assert spawning == {KernelOp.CREATE_PROCESS, KernelOp.START_PROCESS, KernelOp.KILL_PROCESS}


def test_rights_made_once_per_value_are_the_flags_themselves() -> None:
    from procd_model.caps import rights_of

    for value in range(40):
        assert rights_of(value) == Rights(value) and type(rights_of(value)) is Rights
