"""ELF core files (ET_CORE) for x86-64, written and read without any particular OS model.

A core holds notes (`PT_NOTE`) and memory (`PT_LOAD`). `write_core` lays out the file gdb reads:
the ELF header, the note segment first, then one load segment per memory range. The notes it
writes for the process are Linux's: NT_PRSTATUS (signal, pid, the general registers in
`user_regs_struct` order) and NT_PRPSINFO (its name); any other note (an owner's own payload)
is passed in whole. `read_core` parses such a file back and raises `CoreError`, one line, for
anything that is not a well-formed x86-64 core.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from emu.elf import Perm

ET_CORE = 4
EM_X86_64 = 62
PT_LOAD, PT_NOTE = 1, 4
NT_PRSTATUS, NT_FPREGSET, NT_PRPSINFO = 1, 2, 3
CORE_OWNER = b"CORE"

USER_REGS = [
    "r15",
    "r14",
    "r13",
    "r12",
    "rbp",
    "rbx",
    "r11",
    "r10",
    "r9",
    "r8",
    "rax",
    "rcx",
    "rdx",
    "rsi",
    "rdi",
    "orig_rax",
    "rip",
    "cs",
    "rflags",
    "rsp",
    "ss",
    "fs_base",
    "gs_base",
    "ds",
    "es",
    "fs",
    "gs",
]
"""Linux's `struct user_regs_struct` for x86-64, in order (NT_PRSTATUS's pr_reg)."""
USER_CS, USER_SS = 0x33, 0x2B
"""The selectors a 64-bit user process runs with (what gdb shows for cs and ss)."""

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_NHDR = struct.Struct("<III")
_PRSTATUS_HEAD = struct.Struct("<iiih2xQQiiii64x")  # signal info, sigpend, sighold, ids, four timevals
_PRSTATUS = struct.Struct(f"<{_PRSTATUS_HEAD.size}s{len(USER_REGS)}Qi4x")
_PRPSINFO = struct.Struct("<bbbb4xQIIiiii16s80s")
_IDENT = b"\x7fELF\x02\x01\x01" + bytes(9)
_PF = {Perm.R: 4, Perm.W: 2, Perm.X: 1}
_MAX_CORE_SEGMENTS = 4096


class CoreError(Exception):
    """The bytes are not a well-formed x86-64 ELF core (the message says what is wrong)."""


@dataclass(frozen=True)
class Note:
    owner: bytes
    kind: int
    desc: bytes


@dataclass(frozen=True)
class CoreSegment:
    vaddr: int
    perms: Perm
    data: bytes


@dataclass(frozen=True)
class Core:
    notes: tuple[Note, ...]
    segments: tuple[CoreSegment, ...]

    def note(self, owner: bytes, kind: int) -> Note | None:
        return next((n for n in self.notes if n.owner == owner and n.kind == kind), None)


def prstatus(registers: dict[str, int], *, signal: int, pid: int) -> Note:
    """NT_PRSTATUS of a process stopped by `signal`: missing registers are 0, cs/ss the user ones."""
    regs = {"cs": USER_CS, "ss": USER_SS, "orig_rax": 0xFFFF_FFFF_FFFF_FFFF, **registers}
    head = _PRSTATUS_HEAD.pack(signal, 0, 0, signal, 0, 0, pid, 0, pid, pid)
    values = [regs.get(name, 0) & 0xFFFF_FFFF_FFFF_FFFF for name in USER_REGS]
    return Note(CORE_OWNER, NT_PRSTATUS, _PRSTATUS.pack(head, *values, 0))


_FXSAVE = struct.Struct("<HHBxHQQII128s256s96x")


def fpregset(vector: dict[str, int]) -> Note:
    """NT_FPREGSET: the FXSAVE image (`user_fpregs_struct`) of the SSE registers and the x87
    control words; the x87 stack is left zero. The tag word becomes FXSAVE's abridged form (one
    bit per register: not empty)."""
    tags = vector.get("fptag", 0xFFFF)
    abridged = sum(1 << i for i in range(8) if (tags >> (2 * i)) & 3 != 3)
    xmm = b"".join(vector.get(f"xmm{i}", 0).to_bytes(16, "little") for i in range(16))
    desc = _FXSAVE.pack(
        vector.get("fpcw", 0), vector.get("fpsw", 0), abridged, 0, 0, 0, vector.get("mxcsr", 0), 0xFFFF, bytes(128), xmm
    )
    return Note(CORE_OWNER, NT_FPREGSET, desc)


def prpsinfo(name: str, *, pid: int, state: str = "R") -> Note:
    """NT_PRPSINFO: the process's name (gdb prints it as the program that made the core)."""
    short = name.encode()[:15]
    desc = _PRPSINFO.pack(0, ord(state[0]), 0, 0, 0, 0, 0, pid, 0, pid, pid, short, name.encode()[:79])
    return Note(CORE_OWNER, NT_PRPSINFO, desc)


def registers_of(note: Note) -> tuple[int, dict[str, int]]:
    """(signal, registers) from an NT_PRSTATUS note."""
    if len(note.desc) < _PRSTATUS.size:
        raise CoreError(f"NT_PRSTATUS note is {len(note.desc)} bytes, expected {_PRSTATUS.size}")
    head, *values = _PRSTATUS.unpack_from(note.desc)
    signal = _PRSTATUS_HEAD.unpack(head)[0]
    return signal, dict(zip(USER_REGS, values[: len(USER_REGS)], strict=True))


def _pad4(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def _encode_note(note: Note) -> bytes:
    name = note.owner + b"\0"
    return _NHDR.pack(len(name), len(note.desc), note.kind) + _pad4(name) + _pad4(note.desc)


def _flags(perms: Perm) -> int:
    return sum(bit for perm, bit in _PF.items() if perms & perm)


def write_core(notes: list[Note], segments: list[CoreSegment]) -> bytes:
    """The bytes of a core file with `notes` in its PT_NOTE and one PT_LOAD per segment."""
    note_bytes = b"".join(_encode_note(n) for n in notes)
    count = 1 + len(segments)
    offset = _EHDR.size + count * _PHDR.size
    header = _EHDR.pack(_IDENT, ET_CORE, EM_X86_64, 1, 0, _EHDR.size, 0, 0, _EHDR.size, _PHDR.size, count, 0, 0, 0)
    phdrs = [_PHDR.pack(PT_NOTE, 0, offset, 0, 0, len(note_bytes), 0, 4)]
    offset += len(note_bytes)
    body = [note_bytes]
    for segment in segments:
        size = len(segment.data)
        phdrs.append(_PHDR.pack(PT_LOAD, _flags(segment.perms), offset, segment.vaddr, 0, size, size, 0x1000))
        body.append(segment.data)
        offset += size
    return header + b"".join(phdrs) + b"".join(body)


def read_core(raw: bytes) -> Core:
    """Parse `raw` as an x86-64 ELF core; CoreError names the first problem."""
    if raw[:4] != b"\x7fELF":
        raise CoreError("not an ELF file")
    if len(raw) < _EHDR.size:
        raise CoreError(f"truncated: {len(raw)} bytes, shorter than an ELF header")
    ident, e_type, machine, _version, _entry, phoff, _shoff, _, _ehsize, phentsize, phnum = _EHDR.unpack_from(raw)[:11]
    if ident[4] != 2 or ident[5] != 1:
        raise CoreError("not a 64-bit little-endian ELF file")
    if e_type != ET_CORE:
        raise CoreError(f"not a core file (ELF type {e_type})")
    if machine != EM_X86_64:
        raise CoreError(f"not an x86-64 core (machine {machine})")
    if phentsize != _PHDR.size or phnum > _MAX_CORE_SEGMENTS:
        raise CoreError(f"corrupt program headers ({phnum} of {phentsize} bytes)")
    if phoff + phnum * _PHDR.size > len(raw):
        raise CoreError("truncated: the program headers run past the end of the file")
    notes: list[Note] = []
    segments: list[CoreSegment] = []
    for i in range(phnum):
        p_type, p_flags, offset, vaddr, _paddr, filesz, _memsz, _align = _PHDR.unpack_from(raw, phoff + i * _PHDR.size)
        if offset + filesz > len(raw):
            raise CoreError(f"truncated: segment {i} ends at byte {offset + filesz}, the file has {len(raw)}")
        data = raw[offset : offset + filesz]
        if p_type == PT_NOTE:
            notes.extend(_parse_notes(data))
        elif p_type == PT_LOAD:
            perms = Perm(sum(perm for perm, bit in _PF.items() if p_flags & bit))
            segments.append(CoreSegment(vaddr, perms, data))
    return Core(tuple(notes), tuple(segments))


def _parse_notes(data: bytes) -> list[Note]:
    notes, at = [], 0
    while at + _NHDR.size <= len(data):
        namesz, descsz, kind = _NHDR.unpack_from(data, at)
        at += _NHDR.size
        name_end = at + namesz
        desc_at = at + namesz + (-namesz % 4)
        if desc_at + descsz > len(data):
            raise CoreError("corrupt note: it runs past its segment")
        notes.append(Note(data[at:name_end].rstrip(b"\0"), kind, data[desc_at : desc_at + descsz]))
        at = desc_at + descsz + (-descsz % 4)
    return notes
