"""GDB remote serial protocol framing: `$payload#xx` packets, checksums, escaping, Ctrl-C.

`PacketReader.feed(bytes)` turns whatever arrives on the socket into events, whatever it is:
complete packets (checksum checked, binary escapes undone), Ctrl-C (a 0x03 byte between packets),
and bad packets (a wrong or non-hex checksum, or more than MAX_PACKET bytes, which the reader
drops without holding them). Acknowledgements (`+`, `-`) and stray bytes between packets are
ignored. Nothing here raises on any input.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

PACKET_SIZE = 0x4000
"""The largest packet we accept, advertised in qSupported (PacketSize)."""
MAX_PACKET = PACKET_SIZE + 64
"""A packet longer than this (a client ignoring PacketSize, or garbage) is dropped whole."""
INTERRUPT = 0x03
_ESCAPE = 0x7D
_SPECIAL = frozenset(b"#$}*")
_HEX = frozenset(b"0123456789abcdefABCDEF")


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def escape(data: bytes) -> bytes:
    """Binary data for a packet: `#`, `$`, `}` and `*` become `}` and the byte XOR 0x20."""
    out = bytearray()
    for byte in data:
        if byte in _SPECIAL:
            out += bytes((_ESCAPE, byte ^ 0x20))
        else:
            out.append(byte)
    return bytes(out)


def unescape(data: bytes) -> bytes:
    out = bytearray()
    escaped = False
    for byte in data:
        if escaped:
            out.append(byte ^ 0x20)
            escaped = False
        elif byte == _ESCAPE:
            escaped = True
        else:
            out.append(byte)
    return bytes(out)


def frame(payload: bytes) -> bytes:
    """The packet carrying `payload` (escaped, so binary and `*` are safe)."""
    body = escape(payload)
    return b"$" + body + b"#" + f"{checksum(body):02x}".encode()


class EventKind(Enum):
    PACKET = "packet"
    INTERRUPT = "interrupt"
    BAD = "bad"


@dataclass(frozen=True)
class Event:
    kind: EventKind
    payload: bytes = b""
    """The unescaped payload of a PACKET; what was wrong with a BAD one."""


class PacketReader:
    """Incremental parser: feed it bytes in any pieces, get whole events."""

    def __init__(self) -> None:
        self._body = bytearray()
        self._in_packet = False
        self._oversized = False
        self._sum: bytearray | None = None

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        for byte in data:
            event = self._byte(byte)
            if event is not None:
                events.append(event)
        return events

    def _byte(self, byte: int) -> Event | None:
        if self._sum is not None:
            self._sum.append(byte)
            return self._finish() if len(self._sum) == 2 else None
        if not self._in_packet:
            if byte == ord("$"):
                self._in_packet, self._oversized = True, False
                self._body.clear()
            elif byte == INTERRUPT:
                return Event(EventKind.INTERRUPT)
            return None  # '+', '-' or noise between packets
        if byte == ord("#"):
            self._sum = bytearray()
        elif len(self._body) < MAX_PACKET:
            self._body.append(byte)
        else:
            self._oversized = True
        return None

    def _finish(self) -> Event:
        assert self._sum is not None
        raw, body = bytes(self._sum), bytes(self._body)
        self._sum, self._in_packet = None, False
        self._body.clear()
        if self._oversized:
            return Event(EventKind.BAD, b"packet too large")
        if not all(c in _HEX for c in raw):
            return Event(EventKind.BAD, b"checksum is not hex")
        if int(raw, 16) != checksum(body):
            return Event(EventKind.BAD, b"wrong checksum")
        return Event(EventKind.PACKET, unescape(body))
