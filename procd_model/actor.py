"""Modelled peers (rootd, crashd, ...) are Python generators that make real syscalls.

An actor yields `Syscall` requests and is resumed with their `SyscallResult`, so it goes through
the same kernel paths, capability checks and blocking rules as a guest; it just retires no
instructions.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

from procd_model.abi import Status, Syscall
from procd_model.messages import Message


@dataclass(frozen=True)
class SyscallRequest:
    number: Syscall
    args: tuple[int, ...] = ()
    message: Message | bytes | None = None
    """Written to the actor's IPC buffer before the syscall runs (bytes: verbatim, for fuzzing)."""


@dataclass(frozen=True)
class SyscallResult:
    status: Status
    values: tuple[int, int, int]
    buffer: bytes
    """The actor's IPC buffer after the syscall."""

    def message(self) -> Message:
        return Message.decode(self.buffer)


ActorProgram = Generator[SyscallRequest, SyscallResult, None]


def call(slot: int, op: int, payload: bytes = b"", caps: tuple[int, ...] = ()) -> SyscallRequest:
    return SyscallRequest(Syscall.CALL, (slot,), Message(op, payload, caps))
