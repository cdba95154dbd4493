"""Breakpoints and single steps for one engine, as code hooks that stop *before* an instruction.

Nothing is written to guest memory, so memory contents and digests are unaffected. A breakpoint is
a code hook on exactly its address (it costs nothing while that address does not run); a step is a
code hook on every address, present only while a step is pending. A hook that stops calls
`emu_stop` before its instruction executes and records why in `hit`; `GuestCpu` then gives back
the unexecuted tail of the block it had already counted (the same settling a fault gets), so the
instruction and cycle counts are those of the instructions that really ran, and resuming at `rip`
retires the rest exactly as an uninterrupted run would.
"""

from __future__ import annotations

from enum import Enum

import unicorn
from unicorn import unicorn_const as uc_const


class DebugHit(Enum):
    BREAKPOINT = "breakpoint"
    STEP = "step"


class DebugStops:
    """The debugger's stops in one guest's engine."""

    def __init__(self, uc: unicorn.Uc) -> None:
        self._uc = uc
        self._breakpoints: dict[int, int] = {}
        """address -> hook handle"""
        self._step_hook: int | None = None
        self._steps_left = 0
        self._pass_at: int | None = None
        self.hit: DebugHit | None = None
        """Why the engine stopped last (None: not for the debugger)."""

    @property
    def breakpoints(self) -> frozenset[int]:
        return frozenset(self._breakpoints)

    def add_breakpoint(self, address: int) -> None:
        if address in self._breakpoints:
            return
        hook = self._uc.hook_add(uc_const.UC_HOOK_CODE, self._on_breakpoint, None, address, address)
        self._breakpoints[address] = hook
        self._uc.ctl_flush_tb()  # code translated before the hook would not call it

    def remove_breakpoint(self, address: int) -> None:
        handle = self._breakpoints.pop(address, None)
        if handle is not None:
            self._uc.hook_del(handle)
            self._uc.ctl_flush_tb()

    def step(self) -> None:
        """Stop before the second instruction this engine executes from now (after exactly one)."""
        self._steps_left = 1
        if self._step_hook is None:
            self._step_hook = self._uc.hook_add(uc_const.UC_HOOK_CODE, self._on_step)
            self._uc.ctl_flush_tb()

    def cancel_step(self) -> None:
        if self._step_hook is not None:
            self._uc.hook_del(self._step_hook)
            self._step_hook = None
            self._uc.ctl_flush_tb()

    def pass_breakpoint_at(self, rip: int) -> None:
        """Resume at `rip` without stopping at a breakpoint there (the one just reported)."""
        self._pass_at = rip if rip in self._breakpoints else None

    def clear(self) -> None:
        """Remove every breakpoint and a pending step (the debugger detached)."""
        for address in list(self._breakpoints):
            self.remove_breakpoint(address)
        self.cancel_step()
        self._pass_at = None

    def take_hit(self) -> DebugHit | None:
        """Why the last run stopped for the debugger, once; a finished step's hook goes."""
        hit, self.hit = self.hit, None
        if hit is DebugHit.STEP:
            self.cancel_step()
        return hit

    def _on_breakpoint(self, uc: unicorn.Uc, address: int, _size: int, _user: object) -> None:
        if self._pass_at == address:
            self._pass_at = None
            return
        self.hit = DebugHit.BREAKPOINT
        uc.emu_stop()  # before this instruction executes

    def _on_step(self, uc: unicorn.Uc, address: int, _size: int, _user: object) -> None:
        if self._pass_at is not None and self._pass_at != address:
            self._pass_at = None  # the instruction at the breakpoint ran: it is passed
        if self._steps_left:
            self._steps_left -= 1
            return
        self.hit = DebugHit.STEP
        uc.emu_stop()
