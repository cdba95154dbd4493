"""Endpoints and IPC: SEND, CALL, NBSEND, RECV, REPLY, REPLY_RECV, capability transfer, and
messages from the kernel itself (CHILD_DIED, TIMER).

A CALL that a receiver takes leaves the receiver owing a reply (`reply_to`) and the caller
blocked `InReply(receiver)`; the reply right is one-shot and is lost when the receiver receives
again without replying (the caller then gets INTERNAL).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from emu.events import IPC_RECV, IPC_REPLY, IPC_SEND, KERNEL_PID
from procd_model import costs
from procd_model.abi import BADGE_KERNEL, CapType, KernelEvent, Rights, Status
from procd_model.caps import Capability, CapLookupError
from procd_model.kernel import sched
from procd_model.kernel.outcome import BLOCKED, Done, Outcome
from procd_model.kernel.state import Endpoint, InRecv, InReply, InSend, PendingSend, Process
from procd_model.messages import Message, MessageError
from procd_model.ops import KERNEL_EVENTS, IpcRecord, decode_payload, op_name, status_name

if TYPE_CHECKING:
    from procd_model.kernel.core import Kernel


def read_send(proc: Process, slot: int) -> tuple[Capability, Message, tuple[Capability, ...]] | Done:
    """The SEND capability in `slot`, the message in the IPC buffer and the capabilities it moves,
    or the failed syscall's result."""
    try:
        cap = proc.caps.lookup(slot, (CapType.ENDPOINT, CapType.KERNEL_CONTROL), Rights.SEND)
        message = Message.decode(proc.read_ipc())
        caps = _collect_transfer(proc, cap, message)
    except CapLookupError as exc:
        return Done(exc.status)
    except MessageError:
        return Done(Status.INVALID_ARGUMENT)
    return cap, message, caps


def _collect_transfer(proc: Process, cap: Capability, message: Message) -> tuple[Capability, ...]:
    if not message.caps:
        return ()
    if not cap.rights & Rights.GRANT:
        raise CapLookupError(Status.DENIED, "sending capabilities needs GRANT")
    out = []
    for slot in message.caps:
        held = proc.caps.get(slot)
        if held is None:
            raise CapLookupError(Status.NOT_FOUND, f"slot {slot} is empty")
        out.append(held)
    return tuple(out)


def send(k: Kernel, proc: Process, pending: PendingSend, endpoint: Endpoint, *, blocking: bool = True) -> Outcome:
    """Deliver `pending` to a receiver waiting on `endpoint`, or queue it (a non-blocking send
    with nobody waiting is dropped: BUSY)."""
    message = pending.message
    dropped = not blocking and not endpoint.receivers
    if k.trace.recording:
        k.trace.emit(
            IPC_SEND,
            proc.pid,
            IpcRecord(endpoint.service, message.op, message.payload, len(pending.caps), pending.badge, pending.is_call),
            endpoint=endpoint.obj,
            op=op_name(endpoint.service, message.op),
            call=pending.is_call,
            len=len(message.payload),
            caps=len(pending.caps),
            **decode_payload(endpoint.service, message.op, message.payload, reply=False),
            **({"dropped": True} if dropped else {}),
        )
    if dropped:
        return Done(Status.BUSY)
    if endpoint.receivers:
        receiver = k.state.procs[endpoint.receivers.pop(0)]
        deliver(k, receiver, endpoint, pending)
        sched.complete(k, receiver, Status.OK, (pending.badge, 0, 0))
        return BLOCKED if pending.is_call else Done(Status.OK)
    endpoint.senders.append(pending)
    sched.block(proc, InSend(endpoint.obj))
    return BLOCKED


def deliver(k: Kernel, receiver: Process, endpoint: Endpoint, pending: PendingSend) -> None:
    """Copy a message into the receiver; a CALL leaves the receiver owing a reply."""
    landed = []
    for cap in pending.caps:
        slot = receiver.caps.install(cap)
        if slot is not None:
            landed.append(slot)
    delivered = Message(pending.message.op, pending.message.payload, tuple(landed))
    receiver.write_ipc(delivered.encode())
    sched.charge(k, costs.ipc_transfer(len(delivered.payload), len(landed)))
    service = endpoint.service
    if pending.is_call:
        receiver.reply_to = pending.pid
        receiver.reply_op = (service, delivered.op)
        sched.block(k.state.procs[pending.pid], InReply(receiver.pid))
    elif pending.pid == KERNEL_PID:
        service = KERNEL_EVENTS  # the kernel's own message: nobody waits for it
    else:
        sender = k.state.procs[pending.pid]
        if sender.waiting == InSend(endpoint.obj):
            sched.complete(k, sender, Status.OK)
    if k.trace.recording:
        record = IpcRecord(
            service, delivered.op, delivered.payload, len(landed), pending.badge, pending.is_call, peer=pending.pid
        )
        k.trace.emit(
            IPC_RECV,
            receiver.pid,
            record,
            endpoint=endpoint.obj,
            op=op_name(service, delivered.op),
            badge=pending.badge,
            sender=pending.pid,
            call=pending.is_call,
            len=len(delivered.payload),
            caps=list(landed),
            **decode_payload(service, delivered.op, delivered.payload, reply=False),
        )


def kernel_message(k: Kernel, endpoint: Endpoint, op: KernelEvent, payload: bytes, **shown: Any) -> None:
    """Queue a message from the kernel itself (badge BADGE_KERNEL, no reply right) on `endpoint`."""
    pending = PendingSend(KERNEL_PID, Message(op, payload), (), BADGE_KERNEL, is_call=False)
    if k.trace.recording:
        k.trace.emit(
            IPC_SEND,
            KERNEL_PID,
            IpcRecord(KERNEL_EVENTS, op, payload, badge=BADGE_KERNEL),
            endpoint=endpoint.obj,
            op=op.name,
            call=False,
            len=len(payload),
            caps=0,
            **shown,
        )
    if endpoint.receivers:
        receiver = k.state.procs[endpoint.receivers.pop(0)]
        deliver(k, receiver, endpoint, pending)
        sched.complete(k, receiver, Status.OK, (BADGE_KERNEL, 0, 0))
    else:
        endpoint.senders.append(pending)


def sys_recv(k: Kernel, proc: Process, args: tuple[int, ...]) -> Outcome:
    try:
        cap = proc.caps.lookup(args[0], (CapType.ENDPOINT,), Rights.RECV)
    except CapLookupError as exc:
        return Done(exc.status)
    drop_reply_right(k, proc)
    endpoint = k.state.endpoints[cap.obj]
    if endpoint.senders:
        pending = endpoint.senders.pop(0)
        deliver(k, proc, endpoint, pending)
        return Done(Status.OK, (pending.badge, 0, 0))
    endpoint.receivers.append(proc.pid)
    sched.block(proc, InRecv(endpoint.obj))
    return BLOCKED


def drop_reply_right(k: Kernel, proc: Process) -> None:
    """A server that receives again without replying loses the old reply right; the caller
    it belonged to is answered INTERNAL instead of being left blocked forever."""
    if proc.reply_to is None:
        return
    caller = k.state.procs[proc.reply_to]
    proc.reply_to = None
    if caller.waiting == InReply(proc.pid):
        if k.trace.recording:
            k.trace.emit(
                IPC_REPLY,
                proc.pid,
                IpcRecord(*proc.reply_op, status=Status.INTERNAL, peer=caller.pid),
                to=caller.pid,
                status="INTERNAL",
                dropped=True,
            )
        sched.complete(k, caller, Status.INTERNAL)


def reply(k: Kernel, proc: Process) -> Status:
    if proc.reply_to is None:
        return Status.NOT_FOUND
    try:
        message = Message.decode(proc.read_ipc())
    except MessageError:
        return Status.INVALID_ARGUMENT
    if message.caps:
        return Status.INVALID_ARGUMENT
    caller = k.state.procs[proc.reply_to]
    proc.reply_to = None
    caller.write_ipc(message.encode())
    sched.charge(k, costs.ipc_transfer(len(message.payload), 0))
    service, op = proc.reply_op
    if k.trace.recording:
        fields = decode_payload(service, op, message.payload, reply=True) if message.op == Status.OK else {}
        k.trace.emit(
            IPC_REPLY,
            proc.pid,
            IpcRecord(service, op, message.payload, status=message.op, peer=caller.pid),
            to=caller.pid,
            op=op_name(service, op),
            status=status_name(message.op),
            len=len(message.payload),
            **fields,
        )
    sched.complete(k, caller, Status.OK)
    return Status.OK


def sys_reply(k: Kernel, proc: Process, args: tuple[int, ...]) -> Outcome:
    return Done(reply(k, proc))


def sys_reply_recv(k: Kernel, proc: Process, args: tuple[int, ...]) -> Outcome:
    status = reply(k, proc)
    if status not in (Status.OK, Status.NOT_FOUND):
        return Done(status)
    return sys_recv(k, proc, args)
