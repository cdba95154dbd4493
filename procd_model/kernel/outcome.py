"""What a syscall handler returns, and why a run stopped: values, not exceptions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from procd_model.abi import Status
from procd_model.messages import Message


class Done(NamedTuple):
    """The syscall completed now with `status` and up to three result values. (A named tuple:
    every syscall makes one, and a frozen dataclass costs twice as much to make.)"""

    status: Status
    values: tuple[int, int, int] = (0, 0, 0)
    end_turn: bool = False


class Blocked:
    """The caller now waits; someone else's syscall will complete it."""


class Gone:
    """The caller exited or was killed."""


Outcome = Done | Blocked | Gone
BLOCKED = Blocked()
GONE = Gone()


@dataclass(frozen=True)
class ControlReply:
    """A kernel-control op's answer: the status, the reply message, and fields the trace shows."""

    status: Status
    message: Message
    shown: dict[str, Any] = field(default_factory=dict)


def refused(status: Status, **shown: Any) -> ControlReply:
    """A kernel-control reply that is only `status` (no payload, no capabilities)."""
    return ControlReply(status, Message(status), shown)


@dataclass(frozen=True)
class StopReason:
    kind: str
    """"idle", "instruction-limit" or "root-exited" (the root process exited; the world reads why)."""
    detail: str = ""


class ImageLayoutError(Exception):
    """An image that cannot be placed in a process (it overlaps a kernel-owned page)."""
