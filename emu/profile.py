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
it). Code outside any sized symbol is "[unknown]". Names are the image's demangled symbol names
(emu/symbols.py).

Each block's cost (millicycles) is added to its stack; `stacks()` gives them root first, prefixed
with the process name. The sums are exact in millicycles: per guest they equal the cycles its
retired instructions cost, with two exceptions the probe cannot see: blocks run one instruction at
a time at an exact instruction-limit stop (not probed at all), and a block that faults part way
(charged whole, though the guest is charged only up to the fault).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from pathlib import Path

from emu.cpu import GuestCpu, GuestMemoryError
from emu.elf import PAGE_SIZE, ElfImage, Perm

DEFAULT_MAX_DEPTH = 64
UNKNOWN_FRAME = "[unknown]"
_FRAME_RECORD = struct.Struct("<QQ")
_RETURN_ADDRESS = struct.Struct("<Q")
_FRAMELESS_OPCODES = frozenset({b"\x55", b"\xc3", b"\xc2", b"\xf3\xc3"})
"""push rbp; ret; ret imm16; rep ret: the first instruction of a block that runs without a frame record."""


def _frame_name(text: str) -> str:
    """A frame or process name that cannot break a folded line (`;` separates frames)."""
    return text.replace(";", ":").replace("\n", " ") or UNKNOWN_FRAME


class _StackWindow:
    """Reads a guest's stack from an address to the end of its page in one host call, so walking
    the frames of one block costs about one read, not one per frame. Make a new one per block:
    the guest writes its stack between blocks."""

    def __init__(self, cpu: GuestCpu) -> None:
        self._cpu = cpu
        self._base = 0
        self._data = b""

    def unpack(self, layout: struct.Struct, address: int) -> tuple[int, ...] | None:
        """`layout` unpacked from guest memory at `address`, or None where it is not mapped."""
        offset = address - self._base
        if offset < 0 or offset + layout.size > len(self._data):
            length = max(layout.size, PAGE_SIZE - address % PAGE_SIZE)
            try:
                self._data = self._cpu.read(address, length)
            except GuestMemoryError:
                return None
            self._base, offset = address, 0
        return layout.unpack_from(self._data, offset)


class _GuestStacks:
    """The call-stack sampler of one guest: its symbol caches and what each stack cost."""

    def __init__(self, cpu: GuestCpu, image: ElfImage, max_depth: int) -> None:
        self.cpu = cpu
        self.image = image
        self.max_depth = max_depth
        self.samples: dict[tuple[str, ...], int] = {}
        """leaf-first frames -> millicycles"""
        self.millicycles = 0
        self.instructions = 0
        self._leaf: dict[int, tuple[str, bool]] = {}
        self._caller: dict[int, str | None] = {}
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
        stack = _StackWindow(self.cpu)
        if frameless:
            ret = stack.unpack(_RETURN_ADDRESS, self.cpu.reg("rsp"))
            caller = None if ret is None else self._caller_of(ret[0])
            if caller is None:
                return tuple(frames)
            frames.append(caller)
        fp = self.cpu.reg("rbp")
        while fp != 0 and len(frames) < self.max_depth:
            record = stack.unpack(_FRAME_RECORD, fp)
            caller = None if record is None else self._caller_of(record[1])
            if record is None or caller is None:
                break
            frames.append(caller)
            if record[0] <= fp:
                break
            fp = record[0]
        return tuple(frames[: self.max_depth])

    def _is_code(self, address: int) -> bool:
        return any(start <= address < end for start, end in self._code)

    def _name(self, address: int) -> tuple[str, int] | None:
        where = self.image.symbolize(address)
        if where is None:
            return None
        name = where[0]
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

    def _caller_of(self, return_address: int) -> str | None:
        """The function a return address points into, or None if it is not code (the walk ends)."""
        if return_address in self._caller:
            return self._caller[return_address]
        found = None
        if self._is_code(return_address):
            where = self._name(return_address - 1)
            found = UNKNOWN_FRAME if where is None else where[0]
        self._caller[return_address] = found
        return found


class StackProfiler:
    """An `Instrument` that profiles every guest it is given; read the result with `stacks()`.

    It costs a Python call, two register reads and about one guest-memory read per executed block
    (roughly 15 microseconds), so a profiled run is much slower than a plain one; counts, the
    trace and its digest are the same.
    """

    def __init__(self, *, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        if max_depth < 1:
            raise ValueError(f"max_depth must be at least 1, not {max_depth}")
        self.max_depth = max_depth
        self._guests: dict[int, _GuestStacks] = {}

    def __call__(self, cpu: GuestCpu, image: ElfImage, pid: int) -> None:
        guest = _GuestStacks(cpu, image, self.max_depth)
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
