"""The floor of a round trip: the same guest work replayed on bare Unicorn.

`record(step)` runs one round trip through the full stack and records every `emu_start` the
model made: which image's engine, the registers before it, and what the host wrote into guest
memory since that engine's previous run. `Replay` then repeats exactly those engine calls on
warm bare engines (one per image, no model, no trace, no Python hook: the syscall hook is
Unicorn's own `uc_emu_stop`, the block accounting the native one), resetting a child's
writable pages when the trip created it, as a warm engine pool must. Its rate is the floor the
full stack is compared with.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import unicorn
from unicorn import unicorn_const as uc_const
from unicorn import x86_const
from unicorn.unicorn_py3.unicorn import uclib

from emu.accounting import UNLIMITED, Accountant
from emu.cpu import GuestCpu
from emu.elf import PAGE_SIZE, ElfImage, Perm
from procd_model.cpu_model import default_cpu_model


@dataclass
class Step:
    image: ElfImage
    fresh: bool
    """The first run of this engine in the trip (a child created by it)."""
    context: Any
    writes: list[tuple[int, bytes]]
    insn_room: int
    """Instructions the run was allowed (its budget stop lands where the recorded one did)."""
    cost_room: int
    insns: int = 0
    memory: list[tuple[int, bytes]] | None = None
    """The engine's writable pages before its first run in the trip (not for a fresh child)."""


def record(trip: Callable[[], object], kernel_pages: tuple[int, ...]) -> list[Step]:
    """The engine calls a call of `trip` makes (patches GuestCpu while it runs; the second of two
    calls is recorded). What the host changed in the pages the kernel writes (`kernel_pages`)
    since an engine's previous run is captured before each run."""
    steps: list[Step] = []
    seen: set[int] = set()
    last_pages: dict[tuple[int, int], bytes] = {}
    original_emulate = GuestCpu._emulate

    def emulate(cpu: GuestCpu, exact_tail: bool) -> object:
        image = cpu._image
        assert image is not None
        state = cpu._state
        before = int(state.insns)
        pages = _changed_spans(cpu, kernel_pages, last_pages)
        room = int(state.insn_limit) - before if state.insn_limit != UNLIMITED else UNLIMITED
        cost_room = int(state.cost_limit) - int(state.cost) if state.cost_limit != UNLIMITED else UNLIMITED
        cpu.registers.flush()  # a syscall's staged results belong to the context the run starts from
        step = Step(image, cpu.retired == 0, cpu._uc.context_save(), pages, room, cost_room)
        if id(cpu) not in seen and not step.fresh:
            step.memory = _writable_pages(cpu._uc, image, kernel_pages)
        seen.add(id(cpu))
        steps.append(step)
        result = original_emulate(cpu, exact_tail)
        step.insns = int(state.insns) - before
        for page in kernel_pages:  # what the guest itself wrote there is not the host's
            last_pages[(id(cpu), page)] = bytes(cpu._uc.mem_read(page, PAGE_SIZE))
        return result

    GuestCpu._emulate = emulate  # type: ignore[method-assign,assignment]
    try:
        trip()  # a first trip teaches what the kernel pages hold between runs
        steps.clear()
        seen.clear()
        trip()
    finally:
        GuestCpu._emulate = original_emulate  # type: ignore[method-assign]
    return steps


def _changed_spans(
    cpu: GuestCpu, pages: tuple[int, ...], last: dict[tuple[int, int], bytes]
) -> list[tuple[int, bytes]]:
    """The span of each kernel page that changed since this engine's previous run (the host's writes)."""
    spans = []
    for page in pages:
        now = bytes(cpu._uc.mem_read(page, PAGE_SIZE))
        before = bytes(PAGE_SIZE) if cpu.retired == 0 else last.get((id(cpu), page), b"")
        last[(id(cpu), page)] = now
        if now == before:
            continue
        if not before:
            spans.append((page, now))
            continue
        first = next(i for i in range(PAGE_SIZE) if now[i] != before[i])
        end = next(i for i in range(PAGE_SIZE, 0, -1) if now[i - 1] != before[i - 1])
        spans.append((page + first, now[first:end]))
    return spans


def _writable_pages(uc: unicorn.Uc, image: ElfImage, kernel_pages: tuple[int, ...]) -> list[tuple[int, bytes]]:
    pages = [(page, bytes(uc.mem_read(page, PAGE_SIZE))) for page in kernel_pages]
    for segment in image.segments:
        if segment.perms & Perm.W:
            start = segment.vaddr & ~(PAGE_SIZE - 1)
            for page in range(start, segment.end, PAGE_SIZE):
                pages.append((page, bytes(uc.mem_read(page, PAGE_SIZE))))
    return pages


_STOP_NOWHERE = 0xFFFF_FFFF_FFFF_FFFF


class _BareEngine:
    """One image on a bare engine: segments mapped, kernel pages mapped, C stop hook, native accounting."""

    def __init__(self, image: ElfImage, kernel_pages: tuple[int, ...]) -> None:
        uc = self.uc = unicorn.Uc(uc_const.UC_ARCH_X86, uc_const.UC_MODE_64)
        uc.ctl_set_tcg_buffer_size(8 << 20)
        self.writable: list[tuple[int, bytes]] = []
        for segment in image.segments:
            start = segment.vaddr & ~(PAGE_SIZE - 1)
            end = (segment.end + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
            uc.mem_map(start, end - start, int(segment.perms))
            uc.mem_write(segment.vaddr, segment.data)
            if segment.perms & Perm.W:
                self.writable.append((start, bytes(uc.mem_read(start, end - start))))
        for page in kernel_pages:
            uc.mem_map(page, PAGE_SIZE)
            self.writable.append((page, bytes(PAGE_SIZE)))
        handle = ctypes.c_size_t()
        status = uclib.uc_hook_add(
            uc._uch,
            ctypes.byref(handle),
            uc_const.UC_HOOK_INSN,
            ctypes.cast(uclib.uc_emu_stop, ctypes.c_void_p),
            None,
            ctypes.c_uint64(1),
            ctypes.c_uint64(0),
            ctypes.c_int(x86_const.UC_X86_INS_SYSCALL),
        )
        assert status == uc_const.UC_ERR_OK, status
        self.acct = Accountant(uc, default_cpu_model())
        self.acct.add_image(image)

    def reset(self) -> None:
        """A warm engine given to a new process: its writable pages get their first bytes back."""
        for address, data in self.writable:
            self.uc.mem_write(address, data)


def _limit(acct: Accountant, step: Step) -> int:
    """Give the engine the recorded run's instruction budget; its count before the run."""
    state = acct.state
    state.stop = 0
    before = int(state.insns)
    state.insn_limit = UNLIMITED if step.insn_room == UNLIMITED else before + step.insn_room
    state.cost_limit = UNLIMITED if step.cost_room == UNLIMITED else int(state.cost) + step.cost_room
    return before


class Replay:
    """The recorded steps on warm bare engines; `run()` replays one trip, returns its instructions."""

    def __init__(self, steps: list[Step], kernel_pages: tuple[int, ...]) -> None:
        self.steps = steps
        self.engines: dict[str, _BareEngine] = {}
        for step in steps:
            if step.image.name not in self.engines:
                self.engines[step.image.name] = _BareEngine(step.image, kernel_pages)
        self._keep_dirty_pages_only()

    def _keep_dirty_pages_only(self) -> None:
        """A trip starts from the recorded memory; restoring it costs only the pages a trip writes."""
        self.run()
        for step in self.steps:
            if step.memory is not None:
                uc = self.engines[step.image.name].uc
                step.memory = [(a, d) for a, d in step.memory if bytes(uc.mem_read(a, PAGE_SIZE)) != d]

    def check(self) -> None:
        """The replay retires exactly the instructions the recorded runs did."""
        for step in self.steps:
            assert self._step(step) == step.insns, (step.image.name, step.insns)

    def run(self) -> int:
        """One trip; the instructions it retired."""
        return sum(self._step(step) for step in self.steps)

    def _step(self, step: Step) -> int:
        engine = self.engines[step.image.name]
        uc = engine.uc
        if step.fresh:
            engine.reset()
        for address, data in step.memory or ():
            uc.mem_write(address, data)
        uc.context_restore(step.context)
        for address, data in step.writes:
            uc.mem_write(address, data)
        before = _limit(engine.acct, step)
        uc.emu_start(uc.reg_read(x86_const.UC_X86_REG_RIP), _STOP_NOWHERE)
        engine.acct.run_ended()  # as every run does (emu/cpu.py)
        return int(engine.acct.state.insns) - before

    def rate(self, seconds: float) -> float:
        """Trips per CPU second, replaying for about `seconds`."""
        count = 0
        started = time.process_time()
        while (spent := time.process_time() - started) < seconds:
            self.run()
            count += 1
        return count / spent
