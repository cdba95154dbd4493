"""Scheduling and virtual time: the run queue, context switches, the clock and the timed-event heap.

Scheduling is deterministic: a FIFO run queue; the current process runs until it blocks, exits,
yields or uses up its quantum (then it goes to the back). A process a syscall wakes is appended
to the queue. START_PROCESS is the one exception: the started process runs next and its starter
goes to the back of the queue ("the child runs first").
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from emu.events import KERNEL_PID, SCHED_IDLE, SCHED_SWITCH
from emu.events import MILLICYCLES_PER_CYCLE as MILLI
from procd_model import costs
from procd_model.abi import MONOTONIC_CLOCK_HZ, Status
from procd_model.kernel.outcome import Done, StopReason
from procd_model.kernel.state import Process, RunState, TimedEvent, Waiting

if TYPE_CHECKING:
    from procd_model.kernel.core import Kernel


def make_ready(k: Kernel, proc: Process, *, front: bool = False) -> None:
    proc.state = RunState.READY
    proc.waiting = None
    if front:
        k.state.run_queue.appendleft(proc.pid)
    else:
        k.state.run_queue.append(proc.pid)


def block(proc: Process, waiting: Waiting) -> None:
    """`proc` now waits for `waiting`."""
    proc.state = RunState.BLOCKED
    proc.waiting = waiting


def complete(k: Kernel, proc: Process, status: Status, values: tuple[int, int, int] = (0, 0, 0)) -> None:
    """Finish a blocked process's syscall and make it runnable."""
    proc.context.commit(Done(status, values))
    make_ready(k, proc)


def charge(k: Kernel, cycles: int) -> None:
    """Advance virtual time by kernel work."""
    k.state.clock += cycles * MILLI


CLOCK_END = (1 << 64) * MILLI
"""The end of virtual time, in millicycles: cycles are a u64 (rdtsc and every trace event carry
them), so nothing may be scheduled at or after 2**64 cycles."""


def monotonic_ticks(k: Kernel) -> int:
    return k.state.clock * MONOTONIC_CLOCK_HZ // (k.cpu_model.frequency_hz * MILLI)


def millicycles_per_tick(k: Kernel) -> int:
    return k.cpu_model.frequency_hz * MILLI // MONOTONIC_CLOCK_HZ


def switch_to(k: Kernel, proc: Process) -> None:
    state = k.state
    if proc.pid != state.running:
        if proc.pid != state.last_ran:
            charge(k, costs.CONTEXT_SWITCH)
        if k.trace.recording:
            k.trace.emit(SCHED_SWITCH, proc.pid, previous=state.running)
        state.running = state.last_ran = proc.pid


def idle_until(k: Kernel, at: int) -> None:
    """Nothing is ready until `at` (millicycles): virtual time jumps there. The trace shows the
    interval as idle, then the kernel as current (it delivers what came due) until a switch."""
    if k.trace.recording:
        k.trace.emit(SCHED_IDLE, KERNEL_PID, previous=k.state.running, until=at // MILLI)
    k.state.running = KERNEL_PID
    k.state.clock = at


def schedule(k: Kernel, at: int, event: TimedEvent) -> None:
    """Put an interrupt or timer on the heap for virtual time `at` (millicycles)."""
    k.state.timed_order += 1
    heapq.heappush(k.state.timed, (at, k.state.timed_order, event))


def next_timed(k: Kernel) -> int | None:
    return k.state.timed[0][0] if k.state.timed else None


def halt(k: Kernel, kind: str, detail: str) -> None:
    """Stop the run (the instruction limit, or the root process's exit); the first reason stays."""
    if k.state.halt is None:
        k.state.halt = StopReason(kind, detail)
