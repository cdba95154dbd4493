"""The kernel's state as a dump shows it: what each process is doing, in words; capability tables
with rights and badges; endpoint queues; the IPC message in flight."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from emu.events import IPC_RECV
from procd_model.caps import CapTable
from procd_model.kernel.state import GuestContext, InRecv, InReply, InSend, InWait, Process, RunState
from procd_model.messages import Message, MessageError
from procd_model.ops import op_name

if TYPE_CHECKING:
    from procd_model.kernel.core import Kernel


def _who(k: Kernel, pid: int) -> str:
    proc = k.procs.get(pid)
    return f"pid {pid} ({proc.name})" if proc is not None else f"pid {pid}"


def _service(k: Kernel, obj: int) -> str:
    endpoint = k.endpoints.get(obj)
    return f" ({endpoint.service})" if endpoint is not None and endpoint.service else ""


def doing(k: Kernel, proc: Process, crashed: int, how: str = "faulted") -> str:
    """What `proc` was doing, in words ("waiting for a reply from pid 2 (procd)"); the crashed
    process `how` it crashed ("faulted", "panicked")."""
    if proc.pid == crashed:
        return f"{how} (this dump)"
    if proc.state is RunState.EXITED:
        return f"exited with code {proc.exit_code}"
    if proc.state is RunState.FAULTED:
        return f"faulted: {proc.fault.describe()}" if proc.fault is not None else "faulted"
    if proc.state is RunState.KILLED:
        return "killed"
    match proc.waiting:
        case InSend(endpoint=obj):
            return f"sending on endpoint {obj}{_service(k, obj)}"
        case InRecv(endpoint=obj):
            return f"in RECV on endpoint {obj}{_service(k, obj)}"
        case InReply(server=pid):
            return f"waiting for a reply from {_who(k, pid)}"
        case InWait(notification=obj):
            return f"waiting on notification {obj}"
    if proc.state is RunState.READY:
        return "ready to run"
    return "created, not started" if proc.state is RunState.CREATED else str(proc.state.value)


def process_rows(
    k: Kernel, crashed: int, registers: Callable[[GuestContext], dict[str, int]], how: str = "faulted"
) -> list[dict[str, Any]]:
    """Every process: pid, name, kernel state, what it was doing, and a live guest's registers."""
    rows = []
    for pid in sorted(k.procs):
        proc = k.procs[pid]
        row: dict[str, Any] = {
            "pid": pid,
            "name": proc.name,
            "kind": "guest" if proc.is_guest else "actor",
            "state": proc.state.value,
            "doing": doing(k, proc, crashed, how),
        }
        if proc.reply_to is not None:
            row["owes_reply_to"] = proc.reply_to
        if isinstance(proc.context, GuestContext) and not proc.context.cpu.closed:
            row["instructions"] = proc.context.cpu.retired
            row["registers"] = registers(proc.context)
        rows.append(row)
    return rows


def capabilities(table: CapTable) -> list[dict[str, Any]]:
    return [
        {
            "slot": slot,
            "type": cap.cap_type.name,
            "object": cap.obj,
            "rights": "|".join(r.name or "" for r in type(cap.rights) if r in cap.rights) or "none",
            "badge": cap.badge,
        }
        for slot, cap in table.occupied()
    ]


def _message(service: str, message: Message, **extra: Any) -> dict[str, Any]:
    return {
        "op": message.op,
        "op_name": op_name(service, message.op),
        "len": len(message.payload),
        "payload": message.payload.hex(),
        "caps": list(message.caps),
        **extra,
    }


def endpoints(k: Kernel) -> list[dict[str, Any]]:
    """Each endpoint with its queues: senders (and the messages they wait to deliver), receivers."""
    rows = []
    for obj in sorted(k.endpoints):
        endpoint = k.endpoints[obj]
        senders = [
            _message(endpoint.service, s.message, pid=s.pid, badge=s.badge, call=s.is_call) for s in endpoint.senders
        ]
        rows.append(
            {"obj": obj, "service": endpoint.service, "senders": senders, "receivers": list(endpoint.receivers)}
        )
    return rows


def _last_received(k: Kernel, pid: int) -> dict[str, Any] | None:
    """The last message `pid` received (a SEND, such as the kernel's CHILD_DIED), from the trace's
    latest events, as the trace decoded it; None if none is among them."""
    for line in reversed(k.trace.recent):
        event = json.loads(line)
        if event["kind"] == IPC_RECV and event["pid"] == pid:
            fields = {
                key: value for key, value in event.items() if key not in ("seq", "icount", "cycle", "pid", "kind")
            }
            return {"received": True, "from": event.get("sender"), "op_name": event.get("op"), **fields}
    return None


def in_flight(k: Kernel, proc: Process) -> dict[str, Any] | None:
    """The message the crashed process was handling: the call it owes a reply to (decoded from
    its IPC buffer, where the kernel put it), else the last message it received."""
    if proc.reply_to is None:
        return _last_received(k, proc.pid)
    service, op = proc.reply_op
    row: dict[str, Any] = {"from": proc.reply_to, "from_name": k.procs[proc.reply_to].name, "service": service}
    try:
        message = Message.decode(proc.read_ipc())
    except MessageError as exc:
        return {**row, "op": op, "op_name": op_name(service, op), "undecodable": str(exc)}
    if message.op != op:
        return {**row, "op": op, "op_name": op_name(service, op), "buffer_reused": True}
    return {**row, **_message(service, message)}
