"""A cycle profiler: every executed block's modelled cost, charged to the guest call stack it ran in.

`StackProfiler` is an `Instrument` (see emu/world.py): for each guest it attaches a block probe,
which runs before each block executes and never changes a count. The probe finds the call stack:

- the current function is the symbol containing the block's address;
- callers come from the frame-pointer chain (images built with frame pointers): at a frame `rbp`,
  [rbp] is the caller's saved rbp and [rbp+8] the return address into the caller;
- where the function has no frame record yet, or no longer has one, its return address is at
  [rsp] and rbp still belongs to its caller, so that caller is read from [rsp] first. That is a
  block at the function's first instruction, at its `push rbp` (prologues the compiler shrink-wraps
  past an early exit), or at a `ret`. Code before a shrink-wrapped prologue in any other block is
  charged to the right function but misses its immediate caller.

The walk stops at rbp 0, a saved rbp that does not grow (stacks grow down, so callers' frames sit
higher), unmapped memory, a return address outside the image's executable segments, or `max_depth`
frames. Return addresses are symbolized at address - 1 (a call that ends a function returns past
it). Code outside any sized symbol is "[unknown]". Rust legacy-mangled names (`_ZN...17h<hash>E`)
are demangled without their hash unless `demangle=False`.

Each block's cost (millicycles) is added to its stack; `stacks()` gives them root first, prefixed
with the process name. The sums are exact in millicycles: per guest they equal the cycles its
retired instructions cost, with two exceptions the probe cannot see: blocks run one instruction at
a time at an exact instruction-limit stop (not probed at all), and a block that faults part way
(charged whole, though the guest is charged only up to the fault).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from pathlib import Path

from emu.cpu import GuestCpu, GuestMemoryError
from emu.elf import ElfImage, Perm

DEFAULT_MAX_DEPTH = 64
UNKNOWN_FRAME = "[unknown]"
_FRAME_RECORD = struct.Struct("<QQ")
_RETURN_ADDRESS = struct.Struct("<Q")
_FRAMELESS_OPCODES = frozenset({b"\x55", b"\xc3", b"\xc2", b"\xf3\xc3"})
"""push rbp; ret; ret imm16; rep ret: the first instruction of a block that runs without a frame record."""
_RUST_HASH = re.compile(r"h[0-9a-f]{16}")
_RUST_ESCAPES = {
    "SP": "@",
    "BP": "*",
    "RF": "&",
    "LT": "<",
    "GT": ">",
    "LP": "(",
    "RP": ")",
    "C": ",",
}
_RUST_ESCAPE = re.compile(r"\$([A-Z]{1,2}|u[0-9a-f]{2,6})\$")


def demangle(name: str) -> str:
    """`name` demangled if it is a Rust legacy (`_ZN...E`) symbol, else `name` unchanged."""
    if not (name.startswith("_ZN") and name.endswith("E")):
        return name
    parts: list[str] = []
    body, i = name[3:-1], 0
    while i < len(body):
        digits = i
        while i < len(body) and body[i].isdigit():
            i += 1
        if i == digits:
            return name
        length = int(body[digits:i])
        if i + length > len(body):
            return name
        parts.append(body[i : i + length])
        i += length
    if len(parts) > 1 and _RUST_HASH.fullmatch(parts[-1]):
        parts.pop()
    return "::".join(_unescape(part) for part in parts)


def _unescape(part: str) -> str:
    if part.startswith("_$"):
        part = part[1:]

    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code.startswith("u"):
            return chr(int(code[1:], 16))
        return _RUST_ESCAPES.get(code, match.group(0))

    return _RUST_ESCAPE.sub(one, part).replace("..", "::")


def _frame_name(text: str) -> str:
    """A frame or process name that cannot break a folded line (`;` separates frames)."""
    return text.replace(";", ":").replace("\n", " ") or UNKNOWN_FRAME


class _GuestStacks:
    """The call-stack sampler of one guest: its symbol caches and what each stack cost."""

    def __init__(self, cpu: GuestCpu, image: ElfImage, max_depth: int, demangle_names: bool) -> None:
        self.cpu = cpu
        self.image = image
        self.max_depth = max_depth
        self.demangle = demangle_names
        self.samples: dict[tuple[str, ...], int] = {}
        """leaf-first frames -> millicycles"""
        self.millicycles = 0
        self.instructions = 0
        self._leaf: dict[int, tuple[str, bool]] = {}
        self._caller: dict[int, str] = {}
        self._code = [(s.vaddr, s.end) for s in image.segments if s.perms & Perm.X]

    def on_block(self, address: int, _size: int, _icount: int, _clock: int, insns: int, millicycles: int) -> None:
        stack = self.stack_at(address)
        self.samples[stack] = self.samples.get(stack, 0) + millicycles
        self.millicycles += millicycles
        self.instructions += insns

    def stack_at(self, address: int) -> tuple[str, ...]:
        """The frames at `address` with the registers as they are now, leaf first."""
        leaf, frameless = self._leaf_of(address)
        frames = [leaf]
        if frameless:
            ret = self._read(_RETURN_ADDRESS, self.cpu.reg("rsp"))
            if ret is None or not self._is_code(ret[0]):
                return tuple(frames)
            frames.append(self._caller_of(ret[0]))
        fp = self.cpu.reg("rbp")
        while fp != 0 and len(frames) < self.max_depth:
            record = self._read(_FRAME_RECORD, fp)
            if record is None or not self._is_code(record[1]):
                break
            frames.append(self._caller_of(record[1]))
            if record[0] <= fp:
                break
            fp = record[0]
        return tuple(frames[: self.max_depth])

    def _read(self, layout: struct.Struct, address: int) -> tuple[int, ...] | None:
        try:
            return layout.unpack(self.cpu.read(address, layout.size))
        except GuestMemoryError:
            return None

    def _is_code(self, address: int) -> bool:
        return any(start <= address < end for start, end in self._code)

    def _name(self, address: int) -> tuple[str, int] | None:
        where = self.image.symbolize(address)
        if where is None:
            return None
        name = demangle(where[0]) if self.demangle else where[0]
        return _frame_name(name), where[1]

    def _leaf_of(self, address: int) -> tuple[str, bool]:
        """(function name, whether its return address is at [rsp]) for a block at `address`."""
        found = self._leaf.get(address)
        if found is None:
            where = self._name(address)
            if where is None:
                found = (UNKNOWN_FRAME, False)
            else:
                found = (where[0], where[1] == 0 or self._starts_frameless(address))
            self._leaf[address] = found
        return found

    def _starts_frameless(self, address: int) -> bool:
        try:
            code = self.cpu.read(address, 2)
        except GuestMemoryError:
            return False
        return code[:1] in _FRAMELESS_OPCODES or code in _FRAMELESS_OPCODES

    def _caller_of(self, return_address: int) -> str:
        found = self._caller.get(return_address)
        if found is None:
            where = self._name(return_address - 1)
            found = UNKNOWN_FRAME if where is None else where[0]
            self._caller[return_address] = found
        return found


class StackProfiler:
    """An `Instrument` that profiles every guest it is given; read the result with `stacks()`."""

    def __init__(self, *, max_depth: int = DEFAULT_MAX_DEPTH, demangle: bool = True) -> None:
        if max_depth < 1:
            raise ValueError(f"max_depth must be at least 1, not {max_depth}")
        self.max_depth = max_depth
        self.demangle = demangle
        self._guests: dict[int, _GuestStacks] = {}

    def __call__(self, cpu: GuestCpu, image: ElfImage, pid: int) -> None:
        guest = _GuestStacks(cpu, image, self.max_depth, self.demangle)
        self._guests[pid] = guest
        cpu.add_block_probe(guest.on_block)

    def pids(self) -> list[int]:
        return sorted(self._guests)

    def default_name(self, pid: int) -> str:
        """The name a pid's stacks get without `process_names`: its image's file name."""
        return Path(self._guests[pid].image.name).name

    def stacks(self, process_names: Mapping[int, str] | None = None) -> dict[tuple[str, ...], int]:
        """Root-first stacks (process name first) -> millicycles, summed over processes that share
        a name. `process_names` (pid -> name, e.g. from the trace) overrides the image names."""
        names = process_names or {}
        out: dict[tuple[str, ...], int] = {}
        for pid in self.pids():
            prefix = _frame_name(names.get(pid) or self.default_name(pid))
            for frames, cost in self._guests[pid].samples.items():
                key = (prefix, *reversed(frames))
                out[key] = out.get(key, 0) + cost
        return out

    def millicycles(self) -> dict[int, int]:
        """pid -> millicycles of every block the probe saw that guest run."""
        return {pid: guest.millicycles for pid, guest in sorted(self._guests.items())}

    def instructions(self) -> dict[int, int]:
        """pid -> instructions of every block the probe saw that guest run."""
        return {pid: guest.instructions for pid, guest in sorted(self._guests.items())}

    def guest_millicycles(self) -> dict[int, int]:
        """pid -> millicycles each guest's retired instructions cost, as its CPU counts them now."""
        return {pid: guest.cpu.cost for pid, guest in sorted(self._guests.items())}
