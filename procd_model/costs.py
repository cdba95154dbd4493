"""What the modelled kernel's own work costs in virtual cycles (procd-emu's choices).

Guest instructions cost what the CPU cost model says (emu/costmodel.py). The kernel is not
emulated instruction by instruction, so each of its actions is charged a fixed, documented cost
here; together they advance the machine's virtual clock. See docs/virtual-time.md.
"""

from __future__ import annotations

KERNEL_ENTRY_EXIT = 150
"""Every syscall: the `syscall`/`sysret` transition, register save and restore, dispatch."""
IPC_TRANSFER_BASE = 60
"""A message delivered to a receiver (or a reply to a caller): lookup, queueing, header copy."""
IPC_TRANSFER_PER_8_BYTES = 1
"""Copying the payload, per 8 bytes (rounded up)."""
CAP_TRANSFER = 40
"""Each capability installed in a receiver's table."""
CONTEXT_SWITCH = 400
"""The CPU passes from one process to another (address-space switch, TLB refill)."""
CREATE_PROCESS = 20_000
"""kernel-control CREATE_PROCESS: address space, mapping the image, capability table."""
START_PROCESS = 500
MINT_ENDPOINT = 200
KILL_PROCESS = 2_000
SET_TIMER = 100
READ_MONOTONIC_CLOCK = 30
DEFAULT_QUANTUM_CYCLES = 200_000
"""Virtual cycles a guest runs before it is preempted."""


def ipc_transfer(payload_len: int, caps: int) -> int:
    return IPC_TRANSFER_BASE + (payload_len + 7) // 8 * IPC_TRANSFER_PER_8_BYTES + caps * CAP_TRANSFER
