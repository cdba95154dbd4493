"""Names and decoded fields of operations, per service, for the trace."""

from __future__ import annotations

import contextlib
from typing import Any

from procd_model.abi import (
    PAYLOADS,
    SERVICE_OPS,
    CrashdOp,
    CrashEvent,
    DeathKind,
    ProcState,
    Role,
    Status,
    TimedOp,
)
from procd_model.wire import Shape

__all__ = ["KERNEL_EVENTS", "SERVICE_OPS", "decode_payload", "op_name", "status_name"]

KERNEL_EVENTS = "kernel-event"
"""The pseudo-service of messages the kernel sends itself (CHILD_DIED); a service of the spec."""

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


def decode_payload(service: str, op: int, payload: bytes, *, reply: bool) -> dict[str, Any]:
    """The interesting fields of a request or OK reply payload: its first record's, when the spec
    gives it one record (or a head record) and the payload is at least that long. A payload of
    zero or more records is not decoded."""
    payloads = None if (service, op) in NOT_DECODED else PAYLOADS.get((service, op))
    carried = None if payloads is None else payloads.reply if reply else payloads.request
    if carried is None or carried.shape is Shape.RECORDS or len(payload) < carried.layout.size:
        return {}
    layout = carried.layout
    fields = {_SHOWN[k]: v for k, v in layout.unpack(payload).items() if k in _SHOWN}
    for key, names in (("death", DeathKind), ("event", CrashEvent), ("proc_state", ProcState)):
        if key in fields:
            with contextlib.suppress(ValueError):
                fields[key] = names(fields[key]).name
    if "role" in fields:
        with contextlib.suppress(ValueError):
            fields["role"] = Role(fields["role"]).name
    return fields
