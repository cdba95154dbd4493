"""Notifications: NOTIFY ORs bits into a word; WAIT takes the word (or blocks); POLL takes it now."""

from __future__ import annotations

from typing import TYPE_CHECKING

from emu.events import NOTIFY
from procd_model.abi import CapType, Rights, Status
from procd_model.caps import Capability, CapLookupError
from procd_model.kernel import sched
from procd_model.kernel.outcome import BLOCKED, Done, Outcome
from procd_model.kernel.state import InWait, Notification, Process
from procd_model.ops import NotifyRecord

if TYPE_CHECKING:
    from procd_model.kernel.core import Kernel


def signal(k: Kernel, notification: Notification, bits: int) -> None:
    """OR `bits` into the word; a waiter takes the whole word and wakes."""
    notification.word |= bits
    if notification.waiters and notification.word:
        waiter = k.state.procs[notification.waiters.pop(0)]
        taken, notification.word = notification.word, 0
        sched.complete(k, waiter, Status.OK, (taken, 0, 0))


def _lookup(proc: Process, slot: int, right: Rights) -> Capability | Done:
    try:
        return proc.caps.lookup(slot, (CapType.NOTIFICATION,), right)
    except CapLookupError as exc:
        return Done(exc.status)


def sys_notify(k: Kernel, proc: Process, args: tuple[int, ...]) -> Outcome:
    cap = _lookup(proc, args[0], Rights.SEND)
    if isinstance(cap, Done):
        return cap
    notification = k.state.notifications[cap.obj]
    if k.trace.recording:
        k.trace.emit(
            NOTIFY, proc.pid, NotifyRecord(notification.obj, args[1]), notification=notification.obj, bits=args[1]
        )
    signal(k, notification, args[1] | cap.badge)
    return Done(Status.OK)


def sys_wait(k: Kernel, proc: Process, args: tuple[int, ...]) -> Outcome:
    cap = _lookup(proc, args[0], Rights.RECV)
    if isinstance(cap, Done):
        return cap
    notification = k.state.notifications[cap.obj]
    if notification.word:
        bits, notification.word = notification.word, 0
        return Done(Status.OK, (bits, 0, 0))
    notification.waiters.append(proc.pid)
    sched.block(proc, InWait(notification.obj))
    return BLOCKED


def sys_poll(k: Kernel, proc: Process, args: tuple[int, ...]) -> Outcome:
    """WAIT without waiting: the bits set so far (and clear them), 0 if none."""
    cap = _lookup(proc, args[0], Rights.RECV)
    if isinstance(cap, Done):
        return cap
    notification = k.state.notifications[cap.obj]
    bits, notification.word = notification.word, 0
    return Done(Status.OK, (bits, 0, 0))
