"""Modelled EriX services procd and its test images talk to: named, timed and crashd.

Each is an actor serving its endpoint with RECV -> REPLY_RECV through the kernel's ordinary
syscalls, so capabilities, badges and blocking apply to them as to any guest. A request they do
not understand is answered INVALID_ARGUMENT (and they keep serving).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator

from procd_model.abi import (
    CLOCK_REPLY,
    CRASH_READ_REQUEST,
    CRASH_RECORD,
    CRASHD_RING,
    IPC_BUFFER_VADDR,
    NAMED_REPLY,
    NAMED_REQUEST,
    CrashdOp,
    CrashEvent,
    KernelOp,
    NamedOp,
    Status,
    Syscall,
    TimedOp,
)
from procd_model.actor import ActorProgram, SyscallRequest, SyscallResult, call
from procd_model.messages import Message, MessageError

WALL_CLOCK_EPOCH_MS = 1_767_225_600_000
"""timed's NOW_WALL at boot: 2026-01-01T00:00:00Z in milliseconds (procd-emu's choice)."""

Reply = Generator[SyscallRequest, SyscallResult, Message]
"""Works out one reply; may make syscalls on the way (timed calls kernel-control)."""


def serve(slot: int, handle: Callable[[Message], Reply]) -> ActorProgram:
    """RECV on `slot`, answer each request with the reply `handle` produces, forever.

    `handle` is itself an actor program (it may make syscalls, e.g. timed calls kernel-control)
    whose return value is the reply.
    """
    reply: Message | None = None
    while True:
        # One waiting point for both the first RECV and every REPLY_RECV: between requests the
        # actor is always suspended here, so a world snapshot can be restored (world_snapshot.py).
        number = Syscall.RECV if reply is None else Syscall.REPLY_RECV
        result = yield SyscallRequest(number, (slot,), reply)
        try:
            request = result.message()
        except MessageError:
            reply = Message(Status.INVALID_ARGUMENT)
        else:
            reply = yield from handle(request)


class Named:
    """The name service: REGISTER binds a name to a value once; LOOKUP finds it."""

    def __init__(self) -> None:
        self.names: dict[bytes, int] = {}

    def program(self, slot: int) -> ActorProgram:
        return serve(slot, self.handle)

    def handle(self, request: Message) -> Reply:
        yield from ()
        if request.op not in (NamedOp.REGISTER, NamedOp.LOOKUP) or len(request.payload) != NAMED_REQUEST.size:
            return Message(Status.INVALID_ARGUMENT)
        fields = NAMED_REQUEST.unpack(request.payload)
        name = bytes(fields["name"]).rstrip(b"\0")
        if not name or b"\0" in name:
            return Message(Status.INVALID_ARGUMENT)
        if request.op == NamedOp.REGISTER:
            if name in self.names:
                return Message(Status.BUSY)
            self.names[name] = fields["value"]
            return Message(Status.OK)
        if name not in self.names:
            return Message(Status.NOT_FOUND)
        return Message(Status.OK, NAMED_REPLY.pack(value=self.names[name]))


class Crashd:
    """crashd: keeps the last CRASHD_RING reports of killed processes; REPORT accepts only KILLED.

    Each record it keeps it also logs (DEBUG_WRITE), naming the dump of the crash: the kernel
    names every crash (`dump_of`, set by whoever starts crashd), whether or not a file is written.
    """

    def __init__(self) -> None:
        self.records: deque[tuple[int, bytes]] = deque(maxlen=CRASHD_RING)
        """(sequence number, crash_record payload), oldest first."""
        self.reported = 0
        self.dump_of: Callable[[int], str | None] = lambda pid: None
        """The dump id of process `pid`'s crash (None: it did not crash, e.g. it was killed)."""
        self.dumps: dict[int, str | None] = {}
        """sequence number -> the dump its record names."""

    def program(self, slot: int) -> ActorProgram:
        return serve(slot, self.handle)

    def handle(self, request: Message) -> Reply:
        if request.op == CrashdOp.REPORT and len(request.payload) == CRASH_RECORD.size:
            record = CRASH_RECORD.unpack(request.payload)
            if record["event"] != CrashEvent.KILLED or record["reserved"]:
                return Message(Status.INVALID_ARGUMENT)
            self.records.append((self.reported, request.payload))
            dump = self.dumps[self.reported] = self.dump_of(record["pid"])
            self.reported += 1
            line = f"crashd: record {self.reported - 1}: pid {record['pid']} killed, dump {dump or 'none'}".encode()
            yield SyscallRequest(Syscall.DEBUG_WRITE, (IPC_BUFFER_VADDR, len(line)), line)
            return Message(Status.OK)
        if request.op == CrashdOp.READ and len(request.payload) == CRASH_READ_REQUEST.size:
            read = CRASH_READ_REQUEST.unpack(request.payload)
            if read["reserved"]:
                return Message(Status.INVALID_ARGUMENT)
            wanted = read["sequence"]
            for sequence, payload in self.records:
                if sequence == wanted:
                    return Message(Status.OK, payload)
            return Message(Status.NOT_FOUND)
        return Message(Status.INVALID_ARGUMENT)


class Timed:
    """The time service: reads kernel-control READ_MONOTONIC_CLOCK (1000 ticks per second)."""

    def __init__(self, kernel_control_slot: int) -> None:
        self.kernel_control_slot = kernel_control_slot

    def program(self, slot: int) -> ActorProgram:
        return serve(slot, self.handle)

    def handle(self, request: Message) -> Reply:
        if request.op not in (TimedOp.NOW_MONOTONIC, TimedOp.NOW_WALL) or request.payload:
            return Message(Status.INVALID_ARGUMENT)
        result = yield call(self.kernel_control_slot, KernelOp.READ_MONOTONIC_CLOCK)
        reply = result.message()
        if result.status is not Status.OK or reply.op != Status.OK or len(reply.payload) != CLOCK_REPLY.size:
            return Message(Status.INTERNAL)
        ticks = CLOCK_REPLY.unpack(reply.payload)["ticks"]
        if request.op == TimedOp.NOW_WALL:
            ticks += WALL_CLOCK_EPOCH_MS
        return Message(Status.OK, CLOCK_REPLY.pack(ticks=ticks))
