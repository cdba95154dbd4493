"""Load and strictly validate a static x86-64 ELF executable with pyelftools.

Every problem with the file becomes one `ElfError` whose message names the file and what is
wrong, never a traceback from deep inside the parser.
"""

from __future__ import annotations

import bisect
import functools
import io
import itertools
import os
from dataclasses import dataclass, replace
from enum import IntFlag
from pathlib import Path

from elftools.common.exceptions import ELFError as _PyElfError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from emu.files import FileReadError, read_bounded
from emu.symbols import demangle

PAGE_SIZE = 0x1000
MAX_SEGMENT_BYTES = 64 << 20
"""Largest memory size one PT_LOAD segment may have."""
MAX_IMAGE_BYTES = 256 << 20
"""Largest total memory size of all PT_LOAD segments."""
MAX_IMAGE_FILE_BYTES = 64 << 20
"""Largest ELF file the loader reads; anything larger, or not a regular file, is refused unread."""
USER_ADDRESS_LIMIT = 0x0000_8000_0000_0000
"""First address above the canonical lower half: user mappings must end at or below it."""

_EM_X86_64 = 62
_ELF_HEADER_SIZE = 64
_PF_X, _PF_W, _PF_R = 1, 2, 4


class ElfError(Exception):
    """The file is not a loadable static x86-64 ELF executable."""


class Perm(IntFlag):
    """Page permissions (same bit values as Unicorn's UC_PROT_*)."""

    NONE = 0
    R = 1
    W = 2
    X = 4


@dataclass(frozen=True)
class Segment:
    """One PT_LOAD segment: `data` is the file part; the rest up to `memsz` is zero."""

    index: int
    vaddr: int
    memsz: int
    data: bytes
    perms: Perm

    @property
    def end(self) -> int:
        return self.vaddr + self.memsz


@dataclass(frozen=True)
class Symbol:
    address: int
    size: int
    name: str
    """Demangled (what traces show)."""
    linkage_name: str
    """As in the symbol table."""


@dataclass(frozen=True)
class ElfImage:
    """A validated executable: where to map what, where to start, and its symbols."""

    name: str
    entry: int
    segments: tuple[Segment, ...]
    symbols: tuple[Symbol, ...]
    raw: bytes
    path: str | None = None
    """The file it was read from, as an absolute path (None: given as bytes)."""

    def section(self, name: str) -> bytes | None:
        """The bytes of section `name`, or None if the image has no such section."""
        elf = ELFFile(io.BytesIO(self.raw))
        section = elf.get_section_by_name(name)
        if section is None or section.header["sh_type"] == "SHT_NOBITS":
            return None
        return bytes(section.data())

    def symbol_named(self, name: str) -> Symbol | None:
        """The symbol with this demangled or linkage name."""
        for symbol in self.symbols:
            if name in (symbol.name, symbol.linkage_name):
                return symbol
        return None

    def symbolize(self, address: int) -> tuple[str, int] | None:
        """(symbol name, offset) of the sized symbol containing `address`, if any."""
        i = bisect.bisect_right(self._starts, address)
        for symbol in reversed(self.symbols[max(0, i - 8) : i]):
            if symbol.address <= address < symbol.address + symbol.size:
                return symbol.name, address - symbol.address
        return None

    @functools.cached_property
    def _starts(self) -> list[int]:
        return [s.address for s in self.symbols]


def load_elf(source: str | Path | bytes, name: str | None = None) -> ElfImage:
    """Read `source` (a path or the file's bytes) and return a validated `ElfImage`."""
    if isinstance(source, bytes):
        raw = source
        label = name or "<bytes>"
    else:
        label = name or str(source)
        try:
            raw = read_bounded(source, MAX_IMAGE_FILE_BYTES)
        except FileReadError as exc:
            raise ElfError(f"{label}: {exc}") from None
        return replace(_parse(raw, label), path=os.path.abspath(source))
    return _parse(raw, label)


def _fail(label: str, message: str) -> ElfError:
    return ElfError(f"{label}: {message}")


def _check_ident(raw: bytes, label: str) -> None:
    if len(raw) < 4 or raw[:4] != b"\x7fELF":
        raise _fail(label, "not an ELF file (bad magic)")
    if len(raw) < 6:
        raise _fail(label, f"truncated: {len(raw)} bytes, shorter than the ELF identification")
    if raw[4] == 1:
        raise _fail(label, "32-bit ELF (ELFCLASS32); only 64-bit x86-64 executables are supported")
    if raw[4] != 2:
        raise _fail(label, f"unknown ELF class {raw[4]}; expected ELFCLASS64")
    if raw[5] != 1:
        raise _fail(label, "big-endian or unknown data encoding; expected little-endian (ELFDATA2LSB)")
    if len(raw) < _ELF_HEADER_SIZE:
        raise _fail(label, f"truncated: {len(raw)} bytes, shorter than the 64-byte ELF header")


def _parse(raw: bytes, label: str) -> ElfImage:
    _check_ident(raw, label)
    try:
        elf = ELFFile(io.BytesIO(raw))
        header = elf.header
        if header["e_machine"] != "EM_X86_64":
            raise _fail(label, f"wrong machine {header['e_machine']}; expected EM_X86_64")
        if header["e_type"] != "ET_EXEC":
            raise _fail(label, f"not a static executable (type {header['e_type']}); expected ET_EXEC")
        ph_end = header["e_phoff"] + header["e_phnum"] * header["e_phentsize"]
        if header["e_phnum"] and ph_end > len(raw):
            raise _fail(label, f"truncated: program headers end at {ph_end:#x}, file is {len(raw):#x} bytes")
        segments = _load_segments(elf, raw, label)
        symbols = _load_symbols(elf, raw)
    except ElfError:
        raise
    except (_PyElfError, ValueError, KeyError, IndexError, OSError, EOFError) as exc:
        raise _fail(label, f"malformed ELF: {exc}") from None
    except Exception as exc:  # construct's StreamError and friends: any parser failure is malformed input
        raise _fail(label, f"malformed ELF: {type(exc).__name__}: {exc}") from None
    entry = int(header["e_entry"])
    if not any(s.vaddr <= entry < s.end and s.perms & Perm.X for s in segments):
        raise _fail(label, f"entry point {entry:#x} is outside every executable segment")
    return ElfImage(label, entry, segments, symbols, raw)


def _load_segments(elf: ELFFile, raw: bytes, label: str) -> tuple[Segment, ...]:
    segments: list[Segment] = []
    total = 0
    for index in range(elf.num_segments()):
        ph = elf.get_segment(index).header
        if ph["p_type"] != "PT_LOAD" or ph["p_memsz"] == 0:
            continue
        vaddr, memsz, filesz, offset = ph["p_vaddr"], ph["p_memsz"], ph["p_filesz"], ph["p_offset"]
        where = f"segment {index} at {vaddr:#x}"
        if filesz > memsz:
            raise _fail(label, f"{where}: file size {filesz:#x} exceeds memory size {memsz:#x}")
        if memsz > MAX_SEGMENT_BYTES:
            raise _fail(label, f"{where} is oversized: {memsz:#x} bytes (limit {MAX_SEGMENT_BYTES:#x})")
        if vaddr + memsz > USER_ADDRESS_LIMIT:
            raise _fail(label, f"{where}: ends at {vaddr + memsz:#x}, beyond the user address space")
        if offset + filesz > len(raw):
            raise _fail(label, f"truncated: {where} needs file bytes up to {offset + filesz:#x}, file is {len(raw):#x}")
        if vaddr < PAGE_SIZE:
            raise _fail(label, f"{where} maps the zero page")
        total += memsz
        if total > MAX_IMAGE_BYTES:
            raise _fail(label, f"image is oversized: loadable segments exceed {MAX_IMAGE_BYTES:#x} bytes")
        flags = ph["p_flags"]
        perms = Perm.NONE
        perms |= Perm.R if flags & _PF_R else Perm.NONE
        perms |= Perm.W if flags & _PF_W else Perm.NONE
        perms |= Perm.X if flags & _PF_X else Perm.NONE
        segments.append(Segment(index, vaddr, memsz, raw[offset : offset + filesz], perms))
    if not segments:
        raise _fail(label, "no loadable (PT_LOAD) segments")
    ordered = sorted(segments, key=lambda s: s.vaddr)
    for before, after in itertools.pairwise(ordered):
        if after.vaddr < before.end:
            raise _fail(
                label,
                f"segments {before.index} [{before.vaddr:#x}, {before.end:#x}) and "
                f"{after.index} [{after.vaddr:#x}, {after.end:#x}) overlap",
            )
    return tuple(ordered)


def _load_symbols(elf: ELFFile, raw: bytes) -> tuple[Symbol, ...]:
    table = elf.get_section_by_name(".symtab")
    if not isinstance(table, SymbolTableSection):
        return ()
    symbols = {}
    for sym in table.iter_symbols():
        if sym["st_info"]["type"] not in ("STT_FUNC", "STT_OBJECT", "STT_NOTYPE") or not sym.name:
            continue
        if sym["st_shndx"] in ("SHN_UNDEF", "SHN_ABS") or sym["st_value"] == 0:
            continue
        key = (int(sym["st_value"]), sym.name)
        symbols[key] = Symbol(int(sym["st_value"]), int(sym["st_size"]), demangle(sym.name), sym.name)
    return tuple(symbols[key] for key in sorted(symbols))
