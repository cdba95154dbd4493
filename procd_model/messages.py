"""IPC message and start-envelope codecs (the Python twin of the native libraries' formats)."""

from __future__ import annotations

from dataclasses import dataclass

from procd_model.abi import (
    CREATE_PROCESS_REQUEST,
    ENVELOPE_HEADER,
    ENVELOPE_MAGIC,
    ENVELOPE_MAJOR,
    ENVELOPE_MAX,
    ENVELOPE_MINOR,
    ENVELOPE_SLOT,
    IPC_BUFFER_SIZE,
    MESSAGE_HEADER,
    MSG_MAX_CAPS,
    MSG_MAX_PAYLOAD,
    CapPurpose,
    Rights,
    Role,
)

_HEADER_ORDER = (
    ("op", 1),
    ("payload_len", 1),
    ("cap_count", 1),
    ("reserved0", 1),
    ("caps", MSG_MAX_CAPS),
    ("reserved1", 1),
)
if MESSAGE_HEADER.field_order() != _HEADER_ORDER:  # the flat codecs below index the fields by position
    raise ImportError("messages.py: message_header's fields changed; update its flat encode/decode")
_HEADER_SIZE = MESSAGE_HEADER.size
_NO_CAPS = (0,) * MSG_MAX_CAPS


class MessageError(ValueError):
    """A message header the kernel refuses (the sender gets INVALID_ARGUMENT)."""


@dataclass(frozen=True)
class Message:
    """A message as it sits in an IPC buffer: op (or status, in a reply), payload, cap slots."""

    op: int
    payload: bytes = b""
    caps: tuple[int, ...] = ()

    def encode(self) -> bytes:
        count = len(self.caps)
        if len(self.payload) > MSG_MAX_PAYLOAD or count > MSG_MAX_CAPS:
            raise MessageError("message too large")
        caps = self.caps + _NO_CAPS[count:] if count else _NO_CAPS
        return MESSAGE_HEADER.pack_flat(self.op, len(self.payload), count, 0, *caps, 0) + self.payload

    @classmethod
    def decode(cls, buffer: bytes) -> Message:
        """Decode and validate the message at the start of an IPC buffer."""
        if len(buffer) < _HEADER_SIZE:
            raise MessageError(f"IPC buffer holds {len(buffer)} bytes, less than a header")
        op, payload_len, cap_count, reserved0, *caps, reserved1 = MESSAGE_HEADER.unpack_flat(buffer)
        if payload_len > MSG_MAX_PAYLOAD:
            raise MessageError(f"payload_len {payload_len} exceeds {MSG_MAX_PAYLOAD}")
        if cap_count > MSG_MAX_CAPS:
            raise MessageError(f"cap_count {cap_count} exceeds {MSG_MAX_CAPS}")
        if reserved0 or reserved1:
            raise MessageError("reserved header fields are not zero")
        end = _HEADER_SIZE + payload_len
        if end > min(len(buffer), IPC_BUFFER_SIZE):
            raise MessageError("payload runs past the IPC buffer")
        return cls(op, bytes(buffer[_HEADER_SIZE:end]), tuple(caps[:cap_count]))


@dataclass(frozen=True)
class EnvelopeSlot:
    slot: int
    purpose: CapPurpose


def build_envelope(
    role: Role, flags: int, slots: list[EnvelopeSlot] | tuple[EnvelopeSlot, ...], started: tuple[Role, ...] = ()
) -> bytes:
    """A RootServiceStartEnvelopeV1 handing over `slots`; `started` lists the roles the creator
    started before this service (rootd to procd: `started_roles`)."""
    if any(r >= 32 for r in started):
        raise ValueError("started_roles holds only roles below 32")
    body = b"".join(ENVELOPE_SLOT.pack(slot=s.slot, purpose=s.purpose) for s in slots)
    total = ENVELOPE_HEADER.size + len(body)
    header = ENVELOPE_HEADER.pack(
        magic=ENVELOPE_MAGIC,
        major=ENVELOPE_MAJOR,
        minor=ENVELOPE_MINOR,
        total_len=total,
        role=role,
        flags=flags,
        slot_count=len(slots),
        started_roles=sum(1 << r for r in set(started)),
    )
    return header + body


def envelope_role(envelope: bytes) -> Role | None:
    """The role an envelope names, for display; None if it does not parse that far."""
    if len(envelope) < ENVELOPE_HEADER.size or len(envelope) > ENVELOPE_MAX:
        return None
    header = ENVELOPE_HEADER.unpack(envelope)
    if header["magic"] != ENVELOPE_MAGIC:
        return None
    try:
        return Role(header["role"])
    except ValueError:
        return None


@dataclass(frozen=True)
class Grant:
    src_slot: int
    rights: Rights


def create_process_payload(
    image_id: int, grants: list[Grant], envelope: bytes, badge: int = 0, supervisor_slot: int = 0
) -> bytes:
    records = tuple(g.src_slot | (int(g.rights) << 32) for g in grants)
    fixed = CREATE_PROCESS_REQUEST.pack(
        image_id=image_id,
        grant_count=len(grants),
        envelope_len=len(envelope),
        grants=records,
        badge=badge,
        supervisor_slot=supervisor_slot,
    )
    return fixed + envelope
