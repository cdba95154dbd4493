"""Operations per service: their names and decoded fields for the trace, and the typed record of
each message the kernel moves (`IpcRecord`, attached to its trace event for the reference spec)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from emu.events import ModelFacts
from procd_model.abi import (
    PAYLOADS,
    SERVICE_OPS,
    CrashdOp,
    CrashEvent,
    DeathKind,
    ProcState,
    Role,
    Status,
    Syscall,
    TimedOp,
)
from procd_model.wire import Shape

__all__ = ["KERNEL_EVENTS", "SERVICE_OPS", "decode_payload", "op_name", "status_name"]

KERNEL_EVENTS = "kernel-event"
"""The pseudo-service of messages the kernel sends itself (CHILD_DIED)."""
KERNEL_CONTROL_ENDPOINT = "kernel-control"
"""The `endpoint` an `ipc.send` to kernel-control shows: the kernel serves the call itself."""

MODEL_FACTS = ModelFacts(
    kernel_served_endpoints=frozenset({KERNEL_CONTROL_ENDPOINT}),
    receive_syscalls=frozenset({Syscall.RECV.name, Syscall.REPLY_RECV.name}),
)
"""What this model declares about its events, passed with every run (`RunOutcome.model`)."""

NOT_DECODED = frozenset({("timed", TimedOp.NOW_MONOTONIC), ("timed", TimedOp.NOW_WALL), ("crashd", CrashdOp.READ)})
"""Ops whose payloads the trace has never decoded although the spec gives their layouts: showing
their fields would change recorded traces (tests/test_digests.py), so taking one out of here is a
behaviour change that re-records the digests."""

# Payload field -> trace field (renamed where the name would clash with an event's own fields).
_SHOWN = {
    "image_id": "image_id",
    "role": "role",
    "flags": "flags",
    "pid": "child_pid",
    "endpoint": "child_endpoint",
    "ticks": "ticks",
    "grant_count": "grant_count",
    "kind": "death",
    "death": "death",
    "id": "proc_id",
    "reserved": "reserved",
    "restart": "restart",
    "max_restarts": "max_restarts",
    "window_ms": "window_ms",
    "backoff_ms": "backoff_ms",
    "cookie": "cookie",
    "from_seq": "from_seq",
    "depends_on": "depends_on",
    "state": "proc_state",
    "code": "code",
    "event": "event",
}


def op_name(service: str, op: int) -> str:
    ops = SERVICE_OPS.get(service)
    if ops is not None:
        try:
            return ops(op).name
        except ValueError:
            pass
    return f"{op:#x}"


def status_name(value: int) -> str:
    try:
        return Status(value).name
    except ValueError:
        return f"{value:#x}"


def payload_values(service: str, op: int, payload: bytes, *, reply: bool) -> dict[str, Any]:
    """A request or OK reply payload's first record by its ABI field names (integers, or lists of
    them for array fields), when the spec gives it one record (or a head record) and the payload is
    at least that long; a payload of zero or more records gives none."""
    payloads = PAYLOADS.get((service, op))
    carried = None if payloads is None else payloads.reply if reply else payloads.request
    if carried is None or carried.shape is Shape.RECORDS or len(payload) < carried.layout.size:
        return {}
    return carried.layout.unpack(payload)


def decode_payload(service: str, op: int, payload: bytes, *, reply: bool) -> dict[str, Any]:
    """The interesting fields of a request or OK reply payload, as the trace shows them (none for
    the ops in NOT_DECODED)."""
    if (service, op) in NOT_DECODED:
        return {}
    values = payload_values(service, op, payload, reply=reply)
    fields: dict[str, Any] = {_SHOWN[k]: v for k, v in values.items() if k in _SHOWN}
    for key, names in (("death", DeathKind), ("event", CrashEvent), ("proc_state", ProcState)):
        if key in fields:
            with contextlib.suppress(ValueError):
                fields[key] = names(fields[key]).name
    if "role" in fields:
        with contextlib.suppress(ValueError):
            fields["role"] = Role(fields["role"]).name
    return fields


@dataclass(frozen=True, slots=True)
class IpcRecord:
    """A message the kernel moved, typed: the `data` of its `ipc.send`, `ipc.recv` or `ipc.reply`
    event (whose fields show it rendered). Readers that know the model (the reference spec) read
    this, not the display fields."""

    service: str
    """Whose op numbering `op` is in: an endpoint's service, "kernel" or KERNEL_EVENTS."""
    op: int
    """The operation (for a reply: the operation replied to)."""
    payload: bytes = b""
    caps: int = 0
    """Capabilities sent (a send) or landed in the receiver (a delivery)."""
    badge: int = 0
    """The badge the receiver sees (sends and deliveries)."""
    call: bool = False
    """Sent by CALL: the receiver owes a reply."""
    status: int | None = None
    """A reply's status; None for a request."""
    peer: int | None = None
    """The other side: the sender of a delivery, the caller a reply goes to."""

    def values(self) -> dict[str, Any]:
        """The payload's fields by ABI name: a request's, or an OK reply's (else none)."""
        if self.status is not None and self.status != Status.OK:
            return {}
        return payload_values(self.service, self.op, self.payload, reply=self.status is not None)


@dataclass(frozen=True, slots=True)
class NotifyRecord:
    """A NOTIFY, typed: the `data` of its `notify` event."""

    notification: int
    """The notification object signalled."""
    bits: int
    """The bits the notifier OR-ed in (before the capability's badge)."""
