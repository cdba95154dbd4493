"""Kernel-control: the CALLs a process makes on its KERNEL_CONTROL capability, served at once.

`KERNEL_CONTROL_OPS` maps each op to its handler, its cost in virtual cycles (charged before the
handler runs, procd_model/costs.py documents each) and whether it needs the SPAWN right. An
unknown op is INVALID_ARGUMENT and costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from emu.events import IPC_REPLY, IPC_SEND, KERNEL_PID
from procd_model import costs
from procd_model.abi import (
    BADGE_KERNEL,
    CHILD_FIRST_GRANT_SLOT,
    CHILD_SELF_ENDPOINT_SLOT,
    CLOCK_REPLY,
    CREATE_MAX_GRANTS,
    CREATE_PROCESS_REPLY,
    CREATE_PROCESS_REQUEST,
    ENVELOPE_MAX,
    KILL_REQUEST,
    MINT_REQUEST,
    START_PROCESS_REQUEST,
    TIMER_REQUEST,
    CapType,
    KernelOp,
    Rights,
    Status,
)
from procd_model.caps import Capability, CapTable
from procd_model.kernel import lifecycle, sched
from procd_model.kernel.outcome import ControlReply, Done, ImageLayoutError, Outcome, refused
from procd_model.kernel.state import Process, RunState, Timer
from procd_model.messages import Message
from procd_model.ops import KERNEL_CONTROL_ENDPOINT, IpcRecord, decode_payload, op_name

if TYPE_CHECKING:
    from procd_model.kernel.core import Kernel

ControlHandler = Callable[["Kernel", Process, bytes], ControlReply]


@dataclass(frozen=True)
class ControlOp:
    handler: ControlHandler
    cost: int
    """Virtual cycles the kernel's work costs (procd_model/costs.py)."""
    needs_spawn: bool = False
    """Only a capability with the SPAWN right may ask (else DENIED)."""


def serve(k: Kernel, proc: Process, cap: Capability, message: Message) -> Outcome:
    """Serve a CALL on kernel-control at once; the reply lands in the caller's buffer."""
    traced = k.trace.recording
    name = op_name("kernel", message.op) if traced else ""
    if traced:
        k.trace.emit(
            IPC_SEND,
            proc.pid,
            IpcRecord("kernel", message.op, message.payload, call=True),
            endpoint=KERNEL_CONTROL_ENDPOINT,
            op=name,
            call=True,
            len=len(message.payload),
            caps=0,
            **decode_payload("kernel", message.op, message.payload, reply=False),
        )
    answer = _dispatch(k, proc, cap, message)
    reply = answer.message
    proc.write_ipc(reply.encode())
    sched.charge(k, costs.ipc_transfer(len(message.payload), 0) + costs.ipc_transfer(len(reply.payload), 0))
    if traced:
        shown = answer.shown
        if answer.status is Status.OK:
            shown = {**decode_payload("kernel", message.op, reply.payload, reply=True), **shown}
        k.trace.emit(
            IPC_REPLY,
            KERNEL_PID,
            IpcRecord("kernel", message.op, reply.payload, status=answer.status, peer=proc.pid),
            to=proc.pid,
            op=name,
            status=answer.status.name,
            len=len(reply.payload),
            **shown,
        )
    # START_PROCESS: the child runs first, its starter goes to the back of the queue.
    end_turn = answer.status is Status.OK and message.op == KernelOp.START_PROCESS
    return Done(Status.OK, end_turn=end_turn)


def _dispatch(k: Kernel, proc: Process, cap: Capability, message: Message) -> ControlReply:
    op = _OPS_BY_NUMBER.get(message.op)
    if op is None:
        return refused(Status.INVALID_ARGUMENT)
    entry = KERNEL_CONTROL_OPS[op]
    sched.charge(k, entry.cost)
    if entry.needs_spawn and not int(cap.rights) & _SPAWN:
        return refused(Status.DENIED)
    return entry.handler(k, proc, message.payload)


def read_monotonic_clock(k: Kernel, proc: Process, payload: bytes) -> ControlReply:
    return ControlReply(Status.OK, Message(Status.OK, CLOCK_REPLY.pack(ticks=sched.monotonic_ticks(k))))


def mint_endpoint(k: Kernel, proc: Process, payload: bytes) -> ControlReply:
    """A badged SEND/GRANT capability to an endpoint the caller can receive on (like seL4's Mint)."""
    if len(payload) != MINT_REQUEST.size:
        return refused(Status.INVALID_ARGUMENT)
    request = MINT_REQUEST.unpack(payload)
    rights, badge = request["rights"], request["badge"]
    source = proc.caps.get(request["src_slot"])
    allowed = int(Rights.SEND | Rights.GRANT)
    if source is None or source.cap_type is not CapType.ENDPOINT or not rights or rights & ~allowed:
        return refused(Status.INVALID_ARGUMENT)
    if badge in (0, BADGE_KERNEL):
        return refused(Status.INVALID_ARGUMENT)
    if not source.rights & Rights.RECV:
        return refused(Status.DENIED)
    slot = proc.caps.install(Capability(CapType.ENDPOINT, source.obj, Rights(rights), badge))
    if slot is None:
        return refused(Status.BUSY)
    return ControlReply(Status.OK, Message(Status.OK, b"", (slot,)), {"caps": [slot], "badge": badge})


def set_timer(k: Kernel, proc: Process, payload: bytes) -> ControlReply:
    """Send TIMER (with the cookie) to an endpoint the caller receives on, at a monotonic time."""
    if len(payload) != TIMER_REQUEST.size:
        return refused(Status.INVALID_ARGUMENT)
    request = TIMER_REQUEST.unpack(payload)
    target = proc.caps.get(request["endpoint_slot"])
    if target is None or target.cap_type is not CapType.ENDPOINT:
        return refused(Status.INVALID_ARGUMENT)
    if not target.rights & Rights.RECV:
        return refused(Status.DENIED)
    at = request["at_ticks"] * sched.millicycles_per_tick(k)
    if at >= sched.CLOCK_END:  # the clock could not show it: virtual time would overflow
        return refused(Status.INVALID_ARGUMENT)
    at = max(at, k.state.clock)
    sched.schedule(k, at, Timer(target.obj, request["cookie"]))
    return ControlReply(Status.OK, Message(Status.OK), {"at_ticks": request["at_ticks"]})


def kill_process(k: Kernel, proc: Process, payload: bytes) -> ControlReply:
    """End a process whose supervisor endpoint the caller can receive on (its own child)."""
    if len(payload) != KILL_REQUEST.size:
        return refused(Status.INVALID_ARGUMENT)
    request = KILL_REQUEST.unpack(payload)
    if request["reserved"]:
        return refused(Status.INVALID_ARGUMENT)
    target = lifecycle.live_guest(k, request["pid"])
    if target is None:
        return refused(Status.NOT_FOUND)
    supervises = any(
        cap.cap_type is CapType.ENDPOINT and cap.obj == target.supervisor and cap.rights & Rights.RECV
        for _, cap in proc.caps.occupied()
    )
    if not target.supervisor or not supervises:
        return refused(Status.DENIED)
    lifecycle.kill(k, target, by=proc.pid)
    return ControlReply(Status.OK, Message(Status.OK), {"killed": target.pid})


def start_process(k: Kernel, proc: Process, payload: bytes) -> ControlReply:
    if len(payload) != START_PROCESS_REQUEST.size:
        return refused(Status.INVALID_ARGUMENT)
    request = START_PROCESS_REQUEST.unpack(payload)
    if request["reserved"]:
        return refused(Status.INVALID_ARGUMENT)
    child = k.state.procs.get(request["pid"])
    if child is None:
        # a pid below next_pid that is not kept belonged to a process long dead (forgotten)
        return refused(Status.BUSY if 0 < request["pid"] < k.state.next_pid else Status.NOT_FOUND)
    if child.state is not RunState.CREATED:
        return refused(Status.BUSY)
    lifecycle.start(k, child, run_next=True)
    return ControlReply(Status.OK, Message(Status.OK), {"started": child.pid})


@dataclass(frozen=True)
class _CreateRequest:
    image_id: int
    badge: int
    envelope: bytes
    supervisor: int
    grants: tuple[Capability, ...]


_KNOWN_RIGHTS = int(Rights.SEND | Rights.RECV | Rights.GRANT | Rights.SPAWN)
_SPAWN = int(Rights.SPAWN)
_OPS_BY_NUMBER = {int(op): op for op in KernelOp}


def _read_create(proc: Process, payload: bytes) -> _CreateRequest | ControlReply:
    """CREATE_PROCESS's request checked against the caller's capabilities, or the refusal."""
    if len(payload) < CREATE_PROCESS_REQUEST.size:
        return refused(Status.INVALID_ARGUMENT, reason="short request")
    request = CREATE_PROCESS_REQUEST.unpack(payload)
    envelope = payload[CREATE_PROCESS_REQUEST.size :]
    if request["grant_count"] > CREATE_MAX_GRANTS:
        return refused(Status.INVALID_ARGUMENT, reason="too many grants")
    if request["envelope_len"] != len(envelope) or len(envelope) > ENVELOPE_MAX:
        return refused(Status.INVALID_ARGUMENT, reason="envelope length")
    if request["reserved"]:
        return refused(Status.INVALID_ARGUMENT, reason="reserved field set")
    if request["badge"] == BADGE_KERNEL:
        return refused(Status.INVALID_ARGUMENT, reason="BADGE_KERNEL is the kernel's own")
    supervisor = 0
    supervisor_slot = request["supervisor_slot"]
    if supervisor_slot:
        held = proc.caps.get(supervisor_slot)
        if held is None or held.cap_type is not CapType.ENDPOINT:
            return refused(Status.INVALID_ARGUMENT, reason=f"supervisor slot {supervisor_slot} holds no endpoint")
        supervisor = held.obj
    granted: list[Capability] = []
    for record in request["grants"][: request["grant_count"]]:
        src_slot, rights = record & 0xFFFF_FFFF, record >> 32
        source = proc.caps.get(src_slot)
        if source is None:
            return refused(Status.NOT_FOUND, reason=f"grant source slot {src_slot} is empty")
        if rights & ~_KNOWN_RIGHTS:
            return refused(Status.INVALID_ARGUMENT, reason=f"unknown rights {rights:#x}")
        derived = source.derive(Rights(rights))
        if derived is None:
            return refused(Status.DENIED, reason=f"grant from slot {src_slot} would widen its rights")
        granted.append(derived)
    return _CreateRequest(request["image_id"], request["badge"], envelope, supervisor, tuple(granted))


def create_process(k: Kernel, proc: Process, payload: bytes) -> ControlReply:
    request = _read_create(proc, payload)
    if isinstance(request, ControlReply):
        return request
    image = k.image_loader(request.image_id) if k.image_loader else None
    if image is None:
        return refused(Status.NOT_FOUND, reason=f"no boot image {request.image_id}")
    injected = k.injector.create_failure(image.name)
    if injected is not None:
        return refused(injected, reason="injected by the scenario")
    endpoint = k.new_endpoint()
    caps = CapTable()
    caps.install(Capability(CapType.ENDPOINT, endpoint.obj, Rights.RECV), CHILD_SELF_ENDPOINT_SLOT)
    for index, cap in enumerate(request.grants):
        caps.install(cap, CHILD_FIRST_GRANT_SLOT + index)
    reply_cap = Capability(CapType.ENDPOINT, endpoint.obj, Rights.SEND | Rights.GRANT, request.badge)
    reply_slot = proc.caps.install(reply_cap)
    if reply_slot is None:
        del k.state.endpoints[endpoint.obj]
        return refused(Status.BUSY, reason="caller's capability table is full")
    try:
        child = lifecycle.create_guest(k, image.name, image, request.envelope, caps, endpoint.obj)
    except ImageLayoutError as exc:
        proc.caps.delete(reply_slot)
        del k.state.endpoints[endpoint.obj]
        return refused(Status.INVALID_ARGUMENT, reason=str(exc))
    endpoint.service = child.name
    child.supervisor = request.supervisor
    payload_out = CREATE_PROCESS_REPLY.pack(pid=child.pid, endpoint=endpoint.obj)
    return ControlReply(Status.OK, Message(Status.OK, payload_out, (reply_slot,)), {"caps": [reply_slot]})


KERNEL_CONTROL_OPS: dict[KernelOp, ControlOp] = {
    KernelOp.CREATE_PROCESS: ControlOp(create_process, costs.CREATE_PROCESS, needs_spawn=True),
    KernelOp.START_PROCESS: ControlOp(start_process, costs.START_PROCESS, needs_spawn=True),
    KernelOp.READ_MONOTONIC_CLOCK: ControlOp(read_monotonic_clock, costs.READ_MONOTONIC_CLOCK),
    KernelOp.MINT_ENDPOINT: ControlOp(mint_endpoint, costs.MINT_ENDPOINT),
    KernelOp.KILL_PROCESS: ControlOp(kill_process, costs.KILL_PROCESS, needs_spawn=True),
    KernelOp.SET_TIMER: ControlOp(set_timer, costs.SET_TIMER),
}
"""Every kernel-control op (abi's KernelOp): handler, cost, and whether it needs SPAWN."""
