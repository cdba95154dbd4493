"""Types behind the generated ABI module: fixed little-endian layouts, the payload each op
carries, and intake entries.

Plain data and codecs only; nothing here knows about the emulator.
"""

from __future__ import annotations

import enum
import itertools
import struct
from dataclasses import dataclass, field
from typing import Any

_CODES = {"u8": "B", "u16": "H", "u32": "I", "u64": "Q"}


class WireError(ValueError):
    """Bytes that do not fit a layout (too short)."""


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    offset: int
    count: int = 1


@dataclass(frozen=True)
class Layout:
    """A fixed little-endian record: pack from keyword values, unpack into a dict."""

    name: str
    fields: tuple[Field, ...]
    _struct: struct.Struct = field(init=False, repr=False, compare=False)
    _names: frozenset[str] = field(init=False, repr=False, compare=False)
    _scalar_names: tuple[str, ...] | None = field(init=False, repr=False, compare=False)
    """The field names in order when every field is a single value (then packing is one call)."""
    _plan: tuple[tuple[str, int, int], ...] = field(init=False, repr=False, compare=False)
    """(name, index of its first value among the unpacked ones, count) of each field in order."""

    def __post_init__(self) -> None:
        fmt = "<" + "".join(f"{f.count if f.count > 1 else ''}{_CODES[f.type]}" for f in self.fields)
        object.__setattr__(self, "_struct", struct.Struct(fmt))
        object.__setattr__(self, "_names", frozenset(f.name for f in self.fields))
        scalar = all(f.count == 1 for f in self.fields)
        object.__setattr__(self, "_scalar_names", tuple(f.name for f in self.fields) if scalar else None)
        starts = itertools.accumulate((f.count for f in self.fields), initial=0)  # one more than fields
        plan = tuple((f.name, start, f.count) for f, start in zip(self.fields, starts, strict=False))
        object.__setattr__(self, "_plan", plan)

    @property
    def size(self) -> int:
        return self._struct.size

    def offset(self, name: str) -> int:
        for f in self.fields:
            if f.name == name:
                return f.offset
        raise KeyError(name)

    def pack(self, **values: Any) -> bytes:
        """Pack the named fields; missing fields are zero, unknown names are an error."""
        if not self._names.issuperset(values):
            raise KeyError(f"{self.name} has no field {sorted(set(values) - self._names)[0]!r}")
        names = self._scalar_names
        if names is not None:
            return self._struct.pack(*[int(values.get(name, 0)) for name in names])
        flat: list[int] = []
        for f in self.fields:
            value = values.get(f.name, 0 if f.count == 1 else (0,) * f.count)
            if f.count == 1:
                flat.append(int(value))
            else:
                items = tuple(value) + (0,) * (f.count - len(tuple(value)))
                if len(items) != f.count:
                    raise ValueError(f"{self.name}.{f.name} holds {f.count} items, got {len(tuple(value))}")
                flat.extend(int(v) for v in items)
        return self._struct.pack(*flat)

    def pack_flat(self, *values: int) -> bytes:
        """Pack every field's values in layout order, arrays flattened (no names: the hot paths)."""
        return self._struct.pack(*values)

    def unpack_flat(self, data: bytes) -> tuple[int, ...]:
        """The values `pack_flat` takes, from the start of `data` (at least `size` bytes)."""
        return self._struct.unpack_from(data)

    def field_order(self) -> tuple[tuple[str, int], ...]:
        """(name, count) of each field in order: what `pack_flat` expects."""
        return tuple((f.name, f.count) for f in self.fields)

    def unpack(self, data: bytes, offset: int = 0) -> dict[str, Any]:
        if len(data) - offset < self.size:
            raise WireError(f"{self.name} needs {self.size} bytes, got {max(0, len(data) - offset)}")
        flat = self._struct.unpack_from(data, offset)
        if self._scalar_names is not None:
            return dict(zip(self._scalar_names, flat, strict=True))
        return {name: flat[i] if count == 1 else flat[i : i + count] for name, i, count in self._plan}


@dataclass(frozen=True)
class IntakeEntry:
    """A capability a role's intake spec lists: what it is for, its type, its least rights."""

    purpose: int
    cap_type: int
    rights: int
    required: bool


class Shape(enum.Enum):
    """How a payload is made of its layout's records (the spec's `request_shape`/`reply_shape`)."""

    ONE = "one"
    """Exactly one record."""
    RECORDS = "records"
    """Zero or more records, back to back."""
    HEAD = "head"
    """One record, then bytes it describes (CREATE_PROCESS's envelope)."""


@dataclass(frozen=True)
class Payload:
    """The payload a message carries: records of `layout`, arranged as `shape` says."""

    layout: Layout
    shape: Shape = Shape.ONE

    def admits(self, length: int) -> bool:
        """Whether a payload of `length` bytes has this shape."""
        size = self.layout.size
        if self.shape is Shape.ONE:
            return length == size
        if self.shape is Shape.RECORDS:
            return length % size == 0
        return length >= size


@dataclass(frozen=True)
class OpPayloads:
    """What an op's request and its OK reply carry; None is an empty payload."""

    request: Payload | None
    reply: Payload | None
