"""Build small ELF64 executables byte by byte, for tests of the loader and the CPU."""

from __future__ import annotations

import struct
from dataclasses import dataclass

PF_X, PF_W, PF_R = 1, 2, 4
EM_X86_64 = 62
ET_EXEC = 2
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")


@dataclass
class Seg:
    vaddr: int
    data: bytes
    flags: int = PF_R | PF_X
    memsz: int | None = None
    offset: int | None = None
    """File offset of the data; None places it after the headers (page-aligned)."""


def build_elf(
    segments: list[Seg],
    entry: int,
    *,
    machine: int = EM_X86_64,
    elf_class: int = 2,
    data_encoding: int = 1,
    elf_type: int = ET_EXEC,
) -> bytes:
    ident = b"\x7fELF" + bytes([elf_class, data_encoding, 1, 0]) + bytes(8)
    phoff = _EHDR.size
    header_end = phoff + _PHDR.size * len(segments)
    file_end = (header_end + 0xFFF) & ~0xFFF
    placed: list[tuple[Seg, int]] = []
    for seg in segments:
        offset = seg.offset if seg.offset is not None else file_end
        placed.append((seg, offset))
        if seg.offset is None:
            file_end = (offset + len(seg.data) + 0xFFF) & ~0xFFF
    ehdr = _EHDR.pack(ident, elf_type, machine, 1, entry, phoff, 0, 0, _EHDR.size, _PHDR.size, len(segments), 64, 0, 0)
    image = bytearray(ehdr)
    for seg, offset in placed:
        memsz = seg.memsz if seg.memsz is not None else len(seg.data)
        image += _PHDR.pack(1, seg.flags, offset, seg.vaddr, seg.vaddr, len(seg.data), memsz, 0x1000)
    for seg, offset in placed:
        if seg.offset is None:
            if len(image) < offset:
                image += bytes(offset - len(image))
            image[offset : offset + len(seg.data)] = seg.data
    return bytes(image)


def code_image(code: bytes, base: int = 0x400000, data: bytes | None = None, data_addr: int = 0x600000) -> bytes:
    """A one-segment executable of `code` at `base` (plus an optional RW data segment)."""
    segments = [Seg(base, code)]
    if data is not None:
        segments.append(Seg(data_addr, data, PF_R | PF_W))
    return build_elf(segments, base)
