"""An image's DWARF, as a debugger needs it: call-frame rules (`.eh_frame`, else `.debug_frame`)
and source lines (`.debug_line`), read lazily with pyelftools."""

from __future__ import annotations

import bisect
import functools
import io
from dataclasses import dataclass
from typing import Any

from elftools.elf.elffile import ELFFile


@dataclass(frozen=True)
class FrameRule:
    """How to find the caller's registers at one pc: CFA = register `cfa_reg` + `cfa_offset`;
    `saved[regno]` is the offset from the CFA where the register was saved (DWARF numbering:
    16 is the return address). `ra_undefined` marks the outermost frame."""

    cfa_reg: int
    cfa_offset: int
    saved: dict[int, int]
    ra_undefined: bool


@dataclass(frozen=True)
class SourceLine:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class DebugInfo:
    """CFI and line tables of one ELF image (its bytes)."""

    def __init__(self, raw: bytes) -> None:
        self._elf = ELFFile(io.BytesIO(raw))
        try:
            self._dwarf = self._elf.get_dwarf_info() if self._elf.has_dwarf_info() else None
        except Exception:  # malformed DWARF: see frame_rule
            self._dwarf = None

    @functools.cached_property
    def _fdes(self) -> list[tuple[int, int, Any]]:
        """(start, end, FDE) sorted by start, from .eh_frame and .debug_frame."""
        dwarf = self._dwarf
        if dwarf is None:
            return []
        entries: list[Any] = []
        if dwarf.has_EH_CFI():
            entries += dwarf.EH_CFI_entries()
        if dwarf.has_CFI():
            entries += dwarf.CFI_entries()
        fdes = [
            (e["initial_location"], e["initial_location"] + e["address_range"], e)
            for e in entries
            if type(e).__name__ == "FDE"
        ]
        return sorted(fdes, key=lambda f: f[0])

    # Malformed DWARF (a user's image) is no debug information at that pc, never a crash of the
    # reader: pyelftools and construct raise many kinds of exceptions for it, hence `Exception`.

    def frame_rule(self, pc: int) -> FrameRule | None:
        """The call-frame rule at `pc`, or None where no CFI covers it."""
        try:
            return self._frame_rule(pc)
        except Exception:  # malformed DWARF: see above
            return None

    def source_line(self, pc: int) -> SourceLine | None:
        """The file and line the instruction at `pc` comes from (the line table's row for it)."""
        try:
            return self._source_line(pc)
        except Exception:  # malformed DWARF: see above
            return None

    def locations(self, pc: int) -> list[tuple[str | None, SourceLine | None]]:
        """(function, source line) of `pc`, innermost first: the functions inlined at `pc`, each
        at its line, then the function the code belongs to, at the line that called the first
        inlined one (only the function itself when nothing is inlined there). The last entry's
        function is None: the caller names it from the symbol table."""
        try:
            return self._locations(pc)
        except Exception:  # malformed DWARF: see above
            return [(None, None)]

    def _frame_rule(self, pc: int) -> FrameRule | None:
        fdes = self._fdes
        i = bisect.bisect_right([f[0] for f in fdes], pc) - 1
        if i < 0 or not fdes[i][0] <= pc < fdes[i][1]:
            return None
        rows = [r for r in fdes[i][2].get_decoded().table if r["pc"] <= pc]
        if not rows:
            return None
        row = rows[-1]
        cfa = row["cfa"]
        if cfa.expr is not None or cfa.reg is None:
            return None  # a DWARF expression: not produced by our compilers for x86-64 code
        saved, ra_undefined = {}, False
        for regno, rule in row.items():
            if not isinstance(regno, int):
                continue
            if rule.type == "OFFSET":
                saved[regno] = rule.arg
            elif rule.type == "UNDEFINED" and regno == 16:
                ra_undefined = True
        return FrameRule(cfa.reg, cfa.offset, saved, ra_undefined)

    def _source_line(self, pc: int) -> SourceLine | None:
        table = self._line_table_for(pc)
        if not table:
            return None
        i = bisect.bisect_right(table, (pc, chr(0x10FFFF), 1 << 62)) - 1
        if i < 0:
            return None
        _, file, line = table[i]
        return SourceLine(file, line) if line else None

    def _cu_offset(self, pc: int) -> int | None:
        dwarf = self._dwarf
        if dwarf is None:
            return None
        aranges = dwarf.get_aranges()
        return aranges.cu_offset_at_addr(pc) if aranges is not None else None

    def _line_table_for(self, pc: int) -> list[tuple[int, str, int]]:
        offset = self._cu_offset(pc)
        return [] if offset is None else self._cu_lines(offset)

    def _locations(self, pc: int) -> list[tuple[str | None, SourceLine | None]]:
        here = self._source_line(pc)
        offset = self._cu_offset(pc)
        if offset is None:
            return [(None, here)]
        assert self._dwarf is not None
        cu = self._dwarf.get_CU_at(offset)
        files = _file_names(self._dwarf.line_program_for_CU(cu))
        chain = _inline_chain(self._dwarf, cu, pc)
        rows: list[tuple[str | None, SourceLine | None]] = []
        line = here
        for die in reversed(chain):
            rows.append((_die_name(die), line))
            call_file, call_line = die.attributes.get("DW_AT_call_file"), die.attributes.get("DW_AT_call_line")
            line = SourceLine(files.get(call_file.value, "?"), call_line.value) if call_file and call_line else None
        rows.append((None, line))
        return rows

    @functools.lru_cache(maxsize=64)  # noqa: B019  # one DebugInfo per image, kept while it is read
    def _cu_lines(self, offset: int) -> list[tuple[int, str, int]]:
        assert self._dwarf is not None
        cu = self._dwarf.get_CU_at(offset)
        program = self._dwarf.line_program_for_CU(cu)
        if program is None:
            return []
        files = _file_names(program)
        rows: list[tuple[int, str, int]] = []
        for entry in program.get_entries():
            state = entry.state
            if state is None:
                continue
            if state.end_sequence:
                rows.append((state.address, "", 0))
                continue
            rows.append((state.address, files.get(state.file, "?"), state.line))
        rows.sort(key=lambda r: r[0])
        return rows


def _file_names(program: Any) -> dict[int, str]:
    """File index -> path as the line program names it (DWARF 5 numbers from 0, earlier from 1)."""
    header = program.header
    version = header["version"]
    directories = [d if isinstance(d, bytes) else getattr(d, "DW_LNCT_path", b"") for d in header["include_directory"]]
    names: dict[int, str] = {}
    for i, entry in enumerate(header["file_entry"]):
        name = entry.name if hasattr(entry, "name") else entry.DW_LNCT_path
        directory_index = entry.dir_index if hasattr(entry, "dir_index") else entry.DW_LNCT_directory_index
        index = i if version >= 5 else i + 1
        name = name.decode(errors="replace")
        if not name.startswith("/") and version >= 5 and 0 < directory_index < len(directories):
            name = f"{directories[directory_index].decode(errors='replace')}/{name}"
        elif not name.startswith("/") and version < 5 and 0 < directory_index <= len(directories):
            name = f"{directories[directory_index - 1].decode(errors='replace')}/{name}"
        names[index] = name
    return names


def _contains(dwarf: Any, cu: Any, die: Any, pc: int) -> bool:
    attrs = die.attributes
    if "DW_AT_low_pc" in attrs and "DW_AT_high_pc" in attrs:
        low, high = attrs["DW_AT_low_pc"].value, attrs["DW_AT_high_pc"]
        end = high.value if high.form == "DW_FORM_addr" else low + high.value
        return bool(low <= pc < end)
    if "DW_AT_ranges" in attrs:
        ranges = dwarf.range_lists()
        if ranges is None:
            return False
        base = cu.get_top_DIE().attributes.get("DW_AT_low_pc")
        base_address = base.value if base is not None else 0
        for entry in ranges.get_range_list_at_offset(attrs["DW_AT_ranges"].value, cu=cu):
            if (
                hasattr(entry, "begin_offset")
                and base_address + entry.begin_offset <= pc < base_address + entry.end_offset
            ):
                return True
    return False


def _inline_chain(dwarf: Any, cu: Any, pc: int) -> list[Any]:
    """The inlined-subroutine DIEs that contain `pc`, outermost first."""
    chain: list[Any] = []
    parent = next(
        (d for d in cu.get_top_DIE().iter_children() if d.tag == "DW_TAG_subprogram" and _contains(dwarf, cu, d, pc)),
        None,
    )
    while parent is not None:
        parent = next(
            (d for d in parent.iter_children() if d.tag == "DW_TAG_inlined_subroutine" and _contains(dwarf, cu, d, pc)),
            None,
        )
        if parent is not None:
            chain.append(parent)
    return chain


def _die_name(die: Any) -> str | None:
    origin = die.get_DIE_from_attribute("DW_AT_abstract_origin") if "DW_AT_abstract_origin" in die.attributes else die
    name = origin.attributes.get("DW_AT_name")
    return name.value.decode(errors="replace") if name is not None else None
