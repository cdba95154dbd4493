"""The trace's vocabulary: every event kind and the constants that producers and readers share.

A world (the kernel model) emits events of these kinds; the trace, the exporters and the checks
read them. Each name is defined here once, so a kind cannot be spelled two ways.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# ------------------------------------------------------------------ shared constants

KERNEL_PID: Final = 0
"""The modelled kernel's pid: events it emits on its own behalf carry it."""
KERNEL_NAME: Final = "kernel"
IDLE_PID: Final = -1
"""Not a process: the row or track of time in which nothing ran (`sched.idle` intervals)."""
IDLE_NAME: Final = "idle"
MILLICYCLES_PER_CYCLE: Final = 1000
"""Guest instruction costs are fractional: costs and the machine clock keep millicycles."""

# ------------------------------------------------------------------ event kinds

PROCESS_CREATE: Final = "process.create"
"""A process exists (`name`, ...); its name is what exporters call it."""
PROCESS_START: Final = "process.start"
PROCESS_EXIT: Final = "process.exit"
"""A process ended by exiting (`code`)."""
PROCESS_KILL: Final = "process.kill"
FAULT: Final = "fault"
"""A guest faulted (`fault` names the kind) and is dead."""
SCHED_SWITCH: Final = "sched.switch"
"""The event's pid runs from now on (`previous` ran before)."""
SCHED_IDLE: Final = "sched.idle"
"""Nothing was ready from this event's cycle until its `until` cycle."""
IRQ: Final = "irq"
SYSCALL: Final = "syscall"
"""A syscall (`name`, `status`: a status name, or "blocked")."""
IPC_SEND: Final = "ipc.send"
"""A message sent (`endpoint`, `op`, ...)."""
IPC_RECV: Final = "ipc.recv"
"""A message taken by its receiver (`endpoint`, `op`, `sender`, `badge`, ...)."""
IPC_REPLY: Final = "ipc.reply"
"""A reply to a caller (`to`, `op`, `status`; `dropped` when the reply right was dropped)."""
NOTIFY: Final = "notify"
LOG: Final = "log"
"""A guest's debug output line (`text`)."""
BLOCK: Final = "block"
"""An executed translation block (trace level block; a view, not part of the run's stream)."""
INSN: Final = "insn"
"""An executed instruction (trace level insn; a view, not part of the run's stream)."""
SUMMARY: Final = "summary"
"""The last event: how the run ended and the digest of everything before it."""


# ------------------------------------------------------------------ what a model declares


@dataclass(frozen=True)
class ModelFacts:
    """Facts about a world's events that readers (the exporters) need and the events do not
    carry: the world passes them with the run (`emu.world.RunOutcome.model`), so an exporter
    reads what the model declares instead of knowing its quirks."""

    kernel_served_endpoints: frozenset[str] = frozenset()
    """`endpoint` values of `ipc.send` events whose call the kernel serves itself, answered by an
    `ipc.reply` from KERNEL_PID (not delivered to any process)."""
    receive_syscalls: frozenset[str] = frozenset()
    """`syscall` event names that wait for the next message: one with status "blocked" means its
    process is back waiting (so it is done with the message it had)."""


NO_FACTS: Final = ModelFacts()
"""A model that declares nothing (readers then treat every endpoint and syscall alike)."""
