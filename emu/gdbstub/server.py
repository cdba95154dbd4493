"""The gdb server: a listening socket, one client connection, and the `Debugger` a machine calls.

The server listens from the start (so its address can be printed), and accepts the client at the
machine's first stop (the first guest's first instruction), as gdbserver does with a new program.
While the machine runs, `interrupted()` looks at the socket without blocking (a 0x03 byte is
Ctrl-C); at a stop, the server answers the client's packets until it resumes. A client that
disconnects, sends garbage or stops answering never ends the run: on any connection error the
server detaches (breakpoints and steps are removed) and the run goes on to its end undisturbed.
"""

from __future__ import annotations

import collections
import contextlib
import select
import socket
from collections.abc import Callable

from emu.gdbstub.commands import Action, ActionKind, Session
from emu.gdbstub.packets import Event, EventKind, PacketReader, frame
from emu.gdbstub.target import DebugTarget, Resume, Stop, StopKind

READ_BYTES = 1 << 16
MAX_QUEUED = 1024
"""Packets a client may send ahead of our replies (gdb sends one at a time) before we hang up."""


class Disconnected(Exception):
    """The client went away (or the connection broke)."""


class GdbServerError(Exception):
    """The server cannot listen where asked (one line for the command line)."""


def parse_address(text: str) -> tuple[str, int]:
    """`PORT` (loopback) or `HOST:PORT`; ValueError with a reason otherwise."""
    host, _, port_text = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 0xFFFF:
        raise ValueError(f"{text!r} is not PORT or HOST:PORT (PORT 0..65535; 0 picks a free one)")
    return host, int(port_text)


class Connection:
    """One client socket: packets in (as events, queued), packets and acks out."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = PacketReader()
        self._queued: collections.deque[Event] = collections.deque()

    def next_event(self) -> Event:
        """The next event, waiting for the client as long as it takes."""
        while not self._queued:
            self._receive(blocking=True)
        return self._queued.popleft()

    def poll_interrupt(self) -> bool:
        """Read what has arrived without waiting; True if it held a Ctrl-C (which is consumed)."""
        while select.select([self._sock], [], [], 0)[0]:
            self._receive(blocking=False)
        for event in list(self._queued):
            if event.kind is EventKind.INTERRUPT:
                self._queued.remove(event)
                return True
        return False

    def _receive(self, *, blocking: bool) -> None:
        try:
            data = self._sock.recv(READ_BYTES, 0 if blocking else socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError as exc:
            raise Disconnected(str(exc)) from None
        if not data:
            raise Disconnected("the client closed the connection")
        self._queued.extend(self._reader.feed(data))
        if len(self._queued) > MAX_QUEUED:
            raise Disconnected(f"the client sent more than {MAX_QUEUED} packets without waiting for replies")

    def send(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise Disconnected(str(exc)) from None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()


class GdbServer:
    """Serves one gdb client for one run (implements `emu.gdbstub.target.Debugger`)."""

    def __init__(self, host: str, port: int, log: Callable[[str], None]) -> None:
        try:
            self._listener = socket.create_server((host, port), family=_family(host), backlog=1)
        except OSError as exc:
            raise GdbServerError(f"--gdb {host}:{port}: cannot listen: {exc.strerror or exc}") from None
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._log = log
        self._target: DebugTarget | None = None
        self._session: Session | None = None
        self._conn: Connection | None = None
        self._detached = False

    def attach(self, target: DebugTarget) -> None:
        self._target = target
        self._session = Session(target)

    # --------------------------------------------------------------- Debugger

    def stopped(self, stop: Stop) -> Resume:
        if self._detached or self._session is None:
            return Resume.CONTINUE
        try:
            if self._conn is None:
                self._accept()
            self._session.stopped(stop)
            if stop.kind is not StopKind.ENTRY:
                self._send_packet(self._session.stop_reply())
            return self._serve()
        except Disconnected as exc:
            self._log(f"gdb: {exc}; the run goes on without the debugger")
            self._detach()
            return Resume.CONTINUE

    def interrupted(self) -> bool:
        if self._conn is None or self._detached:
            return False
        try:
            return self._conn.poll_interrupt()
        except Disconnected as exc:
            self._log(f"gdb: {exc}; the run goes on without the debugger")
            self._detach()
            return False

    def finished(self, exit_code: int) -> None:
        if self._conn is not None and not self._detached:
            with contextlib.suppress(Disconnected):
                self._send_packet(f"W{exit_code & 0xFF:02x}".encode())
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._listener.close()

    # --------------------------------------------------------------- internals

    def _accept(self) -> None:
        self._log(f"gdb: waiting for a client on {self.address[0]}:{self.address[1]}")
        sock, peer = self._listener.accept()
        self._conn = Connection(sock)
        self._log(f"gdb: client connected from {peer[0]}:{peer[1]}")

    def _serve(self) -> Resume:
        assert self._conn is not None and self._session is not None
        while True:
            event = self._conn.next_event()
            if event.kind is EventKind.BAD:
                self._conn.send(b"-")
                continue
            if event.kind is EventKind.INTERRUPT:
                continue  # already stopped
            self._conn.send(b"+")
            answer = self._answer(event.payload)
            if isinstance(answer, bytes):
                self._send_packet(answer)
                continue
            return self._act(answer)

    def _answer(self, payload: bytes) -> bytes | Action:
        """The session's answer; a fault of ours in a handler is logged and answered E7F, so no
        packet can end the run."""
        assert self._session is not None
        try:
            return self._session.handle(payload)
        except Exception as exc:  # the run must outlive any one packet
            self._log(f"gdb: error answering {payload[:40]!r}: {type(exc).__name__}: {exc}")
            return b"E7F"

    def _act(self, action: Action) -> Resume:
        assert self._conn is not None and self._session is not None and self._target is not None
        if action.reply is not None:
            self._send_packet(action.reply)
        if action.kind is ActionKind.KILL:
            self._log("gdb: the client killed the run")
            self._detach()
            return Resume.KILL
        if action.kind is ActionKind.DETACH:
            self._log("gdb: the client detached; the run goes on")
            self._detach()
            return Resume.CONTINUE
        if self._session.stop is not None:
            self._target.resume_from(self._session.stop.tid)
        if action.step is not None:
            self._target.step(action.step)
        return Resume.CONTINUE

    def _send_packet(self, payload: bytes) -> None:
        assert self._conn is not None
        self._conn.send(frame(payload))

    def _detach(self) -> None:
        self._detached = True
        if self._target is not None:
            self._target.detach()
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
