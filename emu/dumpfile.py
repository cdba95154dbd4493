"""Crash dumps: an ELF core (see emu/coredump.py) with a versioned JSON payload in a note.

The format is documented in docs/dump-format.md. A world builds the payload (what it knows of its
machine); this module packs it with the faulting process's registers and memory into a core
gdb opens, and reads a dump back, checking it, with one-line `DumpError`s for anything else.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emu.coredump import (
    Core,
    CoreError,
    CoreSegment,
    Note,
    fpregset,
    prpsinfo,
    prstatus,
    read_core,
    registers_of,
    write_core,
)
from emu.files import FileReadError, read_bounded

DUMP_OWNER = b"PROCDEMU"
"""The owner name of the payload note."""
NT_DUMP_JSON = 1
"""The payload note's type: UTF-8 JSON."""
DUMP_FORMAT = "procd-emu-dump"
DUMP_VERSION = 1
MAX_DUMP_FILE_BYTES = 256 << 20
DUMP_SUFFIX = ".core"


class DumpError(Exception):
    """A dump that cannot be used: one line naming the file and the problem (exit 2)."""


PAYLOAD_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError)
"""What reading a well-formed but wrong payload (a field missing or of another type) raises."""


def malformed(label: str, exc: Exception) -> DumpError:
    """The one-line error for a payload whose fields are not what version 1 says."""
    return DumpError(f"{label}: corrupt dump: a payload field is missing or malformed ({type(exc).__name__}: {exc})")


@dataclass(frozen=True)
class Dump:
    payload: dict[str, Any]
    registers: dict[str, int]
    """The faulting process's registers (the payload's, which NT_PRSTATUS repeats for gdb)."""
    segments: tuple[CoreSegment, ...]

    @property
    def id(self) -> str:
        return str(self.payload["id"])

    def read(self, address: int, size: int) -> bytes | None:
        """Bytes of the process's dumped memory, or None where the dump holds none."""
        for segment in self.segments:
            offset = address - segment.vaddr
            if offset >= 0 and offset + size <= len(segment.data):
                return segment.data[offset : offset + size]
        return None


def memory_digest(segments: Iterable[tuple[int, bytes]]) -> str:
    """SHA-256 over each (address, bytes) range in order: address and length as 8-byte little
    endian words, then the bytes. The dump and a replay hash the same ranges this way."""
    digest = hashlib.sha256()
    for address, data in segments:
        digest.update(address.to_bytes(8, "little") + len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def encode_dump(payload: dict[str, Any], *, signal: int, segments: list[CoreSegment]) -> bytes:
    """The dump file's bytes. `payload` must hold `process` (pid, name) and `registers`."""
    process = payload["process"]
    registers = {name: int(value) for name, value in payload["registers"].items()}
    body = {"format": DUMP_FORMAT, "version": DUMP_VERSION, **payload}
    notes = [
        prstatus(registers, signal=signal, pid=int(process["pid"])),
        prpsinfo(str(process["name"]), pid=int(process["pid"])),
        fpregset({name: int(value) for name, value in payload.get("vector_registers", {}).items()}),
        Note(DUMP_OWNER, NT_DUMP_JSON, json.dumps(body, indent=1, sort_keys=False).encode()),
    ]
    return write_core(notes, segments)


def load_dump(path: Path | str) -> Dump:
    """Read and check the dump at `path`; DumpError (naming the file) for anything unusable."""
    label = str(path)
    try:
        raw = read_bounded(path, MAX_DUMP_FILE_BYTES)
    except FileReadError as exc:
        raise DumpError(f"{label}: {exc}") from None
    try:
        core = read_core(raw)
    except CoreError as exc:
        raise DumpError(f"{label}: not a procd-emu dump: {exc}") from None
    return _from_core(label, core)


def _from_core(label: str, core: Core) -> Dump:
    note = core.note(DUMP_OWNER, NT_DUMP_JSON)
    if note is None:
        raise DumpError(f"{label}: a core file, but not a procd-emu dump (no {DUMP_OWNER.decode()} note)")
    try:
        payload = json.loads(note.desc.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DumpError(f"{label}: corrupt dump: its {DUMP_OWNER.decode()} note is not JSON ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != DUMP_FORMAT:
        raise DumpError(f"{label}: corrupt dump: its payload is not a {DUMP_FORMAT}")
    version = payload.get("version")
    if version != DUMP_VERSION:
        raise DumpError(f"{label}: dump format version {version!r}; this program reads version {DUMP_VERSION}")
    problem = _missing_keys(payload)
    if problem:
        raise DumpError(f"{label}: corrupt dump: {problem}")
    status = core.note(b"CORE", 1)
    registers = {k: int(v) for k, v in payload["registers"].items()}
    if status is not None:
        try:
            _, from_note = registers_of(status)
        except CoreError as exc:
            raise DumpError(f"{label}: corrupt dump: {exc}") from None
        if any(from_note.get(name) != value for name, value in registers.items() if name in from_note):
            raise DumpError(f"{label}: corrupt dump: NT_PRSTATUS and the payload disagree on the registers")
    dump = Dump(payload, registers, core.segments)
    digest = memory_digest((s.vaddr, s.data) for s in core.segments)
    if digest != payload["memory"]["digest"]:
        raise DumpError(f"{label}: corrupt dump: its memory does not match the digest it records")
    return dump


_REQUIRED = {
    "id": str,
    "cause": dict,
    "process": dict,
    "registers": dict,
    "memory": dict,
    "images": list,
    "clock": dict,
    "processes": list,
    "replay": dict,
}


_REQUIRED_FIELDS = {
    ("cause", "kind"): str,
    ("cause", "rip"): int,
    ("process", "pid"): int,
    ("process", "name"): str,
    ("process", "image"): str,
    ("clock", "icount"): int,
    ("clock", "cycle"): int,
    ("replay", "world"): str,
    ("replay", "max_instructions"): int,
}


def _missing_keys(payload: dict[str, Any]) -> str | None:
    for key, kind in _REQUIRED.items():
        if not isinstance(payload.get(key), kind):
            return f"its payload has no {key!r} ({kind.__name__})"
    for (outer, inner), field_type in _REQUIRED_FIELDS.items():
        if not isinstance(payload[outer].get(inner), field_type):
            return f"a payload field is missing or malformed: {outer}.{inner} is not {field_type.__name__}"
    if payload["cause"]["kind"] not in ("fault", "panic"):
        return f"a payload field is missing or malformed: cause.kind {payload['cause']['kind']!r}"
    if not isinstance(payload["memory"].get("digest"), str):
        return "its payload has no memory digest"
    if not all(isinstance(v, int) for v in payload["registers"].values()):
        return "a register value is not an integer"
    return None


def check_images(label: str, dump: Dump) -> None:
    """Each image the dump names must exist with the content hash it records."""
    for image in dump.payload["images"]:
        path = image.get("path")
        if not path:
            continue
        try:
            digest = file_sha256(path)
        except OSError as exc:
            raise DumpError(f"{label}: image {image.get('name')} is missing: {path}: {exc.strerror}") from None
        if digest != image.get("sha256"):
            raise DumpError(f"{label}: image {image.get('name')} changed since the dump: {path} has another sha256")
