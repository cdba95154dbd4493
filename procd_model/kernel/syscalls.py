"""Syscall entry: a syscall flows decode -> dispatch -> handler -> one place that commits the result.

A guest's arguments come from registers (`guest_syscall`), an actor's from its request; handlers
return an `Outcome` and never touch Unicorn; the process's context commits a completed result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from emu.cpu import Fault, FaultCause, GuestMemoryError
from emu.events import LOG, SYSCALL
from procd_model.abi import (
    CAP_TABLE_SLOTS,
    DEBUG_WRITE_MAX,
    SYSCALL_ARG_REGISTERS,
    SYSCALL_NUMBER_REGISTER,
    CapType,
    Rights,
    Status,
    Syscall,
)
from procd_model.caps import CapLookupError
from procd_model.kernel import control, ipc, lifecycle, notify
from procd_model.kernel.outcome import GONE, Blocked, Done, Outcome, SyscallArgs
from procd_model.kernel.state import GuestContext, PendingSend, Process

if TYPE_CHECKING:
    from procd_model.kernel.core import Kernel

_SYSCALL_REGISTERS = (SYSCALL_NUMBER_REGISTER, *SYSCALL_ARG_REGISTERS, "rip", "rflags")
Handler = Callable[["Kernel", Process, tuple[int, ...]], Outcome]
_SYSCALLS = {int(number): number for number in Syscall}
"""Syscall by number, looked up without building an enum member per call."""


def guest_syscall(k: Kernel, proc: Process, context: GuestContext) -> Outcome:
    number, a0, a1, a2, a3, a4, a5, rip, rflags = context.cpu.regs(_SYSCALL_REGISTERS)
    context.entry = (rip, rflags)  # the registers stay so until the result is committed
    return syscall(k, proc, SyscallArgs(number, (a0, a1, a2, a3, a4, a5)))


def syscall(k: Kernel, proc: Process, call: SyscallArgs) -> Outcome:
    number = _SYSCALLS.get(call.number)
    if number is None:
        lifecycle.fault(k, proc, _syscall_fault(proc, f"unknown syscall number {call.number}"))
        return GONE
    args = call.args
    traced = k.trace.recording and k.trace.wants(SYSCALL)  # the lean path asks nothing more
    fields: dict[str, Any] | None = None
    if traced:
        fields = {"name": number.name, **_describe_args(number, args)}
        if number is Syscall.EXIT:
            k.trace.emit(SYSCALL, proc.pid, **fields)
    try:
        outcome = HANDLERS[number](k, proc, args)
    except GuestMemoryError as exc:
        lifecycle.fault(k, proc, _syscall_fault(proc, f"IPC buffer unusable: {exc}"))
        return GONE
    if fields is not None:
        if isinstance(outcome, Done):
            k.trace.emit(SYSCALL, proc.pid, **fields, status=outcome.status.name)
        elif isinstance(outcome, Blocked):
            k.trace.emit(SYSCALL, proc.pid, **fields, status="blocked")
    return outcome


def _syscall_fault(proc: Process, detail: str) -> Fault:
    return Fault(FaultCause.GENERAL_PROTECTION, proc.context.syscall_rip(), None, detail)


_SLOT_ARG = frozenset(
    (
        Syscall.SEND,
        Syscall.NBSEND,
        Syscall.RECV,
        Syscall.CALL,
        Syscall.REPLY_RECV,
        Syscall.WAIT,
        Syscall.POLL,
        Syscall.CAP_INFO,
        Syscall.CAP_DELETE,
    )
)


def _describe_args(number: Syscall, args: tuple[int, ...]) -> dict[str, Any]:
    if number in _SLOT_ARG:
        return {"slot": args[0]}
    if number is Syscall.NOTIFY:
        return {"slot": args[0], "bits": args[1]}
    if number is Syscall.EXIT:
        return {"code": args[0]}
    if number is Syscall.DEBUG_WRITE:
        return {"len": args[1]}
    return {}


def _send(k: Kernel, proc: Process, slot: int, *, is_call: bool, blocking: bool = True) -> Outcome:
    read = ipc.read_send(proc, slot)
    if isinstance(read, Done):
        return read
    cap, message, caps = read
    if cap.cap_type is CapType.KERNEL_CONTROL:
        if not is_call or caps:
            return Done(Status.INVALID_ARGUMENT)
        return control.serve(k, proc, cap, message)
    pending = PendingSend(proc.pid, message, caps, cap.badge, is_call)
    return ipc.send(k, proc, pending, k.state.endpoints[cap.obj], blocking=blocking)


def _sys_send(k: Kernel, proc: Process, args: tuple[int, ...]) -> Outcome:
    return _send(k, proc, args[0], is_call=False)


def _sys_call(k: Kernel, proc: Process, args: tuple[int, ...]) -> Outcome:
    return _send(k, proc, args[0], is_call=True)


def _sys_nbsend(k: Kernel, proc: Process, args: tuple[int, ...]) -> Outcome:
    """SEND that never blocks (seL4's NBSend): the message reaches a receiver waiting on the
    endpoint now, or is dropped (no capability moves) and the sender gets BUSY."""
    return _send(k, proc, args[0], is_call=False, blocking=False)


def _sys_yield(k: Kernel, proc: Process, args: tuple[int, ...]) -> Outcome:
    return Done(Status.OK, end_turn=True)


def _sys_exit(k: Kernel, proc: Process, args: tuple[int, ...]) -> Outcome:
    lifecycle.exit_process(k, proc, args[0])
    return GONE


def _sys_debug_write(k: Kernel, proc: Process, args: tuple[int, ...]) -> Outcome:
    pointer, length = args[0], args[1]
    if length > DEBUG_WRITE_MAX:
        return Done(Status.INVALID_ARGUMENT)
    try:
        data = proc.context.read(pointer, length)
    except GuestMemoryError:
        return Done(Status.INVALID_ARGUMENT)
    text = data.decode("utf-8", errors="replace").rstrip("\n")
    keep_log(k, text)
    proc.last_log = text
    if k.trace.recording:
        k.trace.emit(LOG, proc.pid, text=text)
    return Done(Status.OK)


def _sys_cap_info(k: Kernel, proc: Process, args: tuple[int, ...]) -> Outcome:
    try:
        cap = proc.caps.lookup(args[0], tuple(CapType), Rights(0))
    except CapLookupError as exc:
        return Done(exc.status)
    return Done(Status.OK, (int(cap.cap_type), int(cap.rights), 0))


def _sys_cap_delete(k: Kernel, proc: Process, args: tuple[int, ...]) -> Outcome:
    if not 0 <= args[0] < CAP_TABLE_SLOTS:
        return Done(Status.INVALID_ARGUMENT)
    proc.caps.delete(args[0])
    return Done(Status.OK)


HANDLERS: dict[Syscall, Handler] = {
    Syscall.SEND: _sys_send,
    Syscall.NBSEND: _sys_nbsend,
    Syscall.RECV: ipc.sys_recv,
    Syscall.CALL: _sys_call,
    Syscall.REPLY: ipc.sys_reply,
    Syscall.REPLY_RECV: ipc.sys_reply_recv,
    Syscall.NOTIFY: notify.sys_notify,
    Syscall.WAIT: notify.sys_wait,
    Syscall.POLL: notify.sys_poll,
    Syscall.YIELD: _sys_yield,
    Syscall.EXIT: _sys_exit,
    Syscall.DEBUG_WRITE: _sys_debug_write,
    Syscall.CAP_INFO: _sys_cap_info,
    Syscall.CAP_DELETE: _sys_cap_delete,
}


KEEP_LOGS = 2048
"""DEBUG_WRITE lines a kernel keeps from the start of a run, and at least as many from its end."""


def keep_log(k: Kernel, text: str) -> None:
    """Append `text` to the kernel's log lines. A long run keeps its first `k.keep_logs` lines and
    at least its last `k.keep_logs`: when the lines reach three times that, the middle ones go
    (counted in `logs_dropped`). Scenarios check that some line starts with a prefix; their runs
    write far fewer lines, so they see every one."""
    logs = k.state.logs
    logs.append(text)
    keep = k.keep_logs
    if len(logs) >= 3 * keep:
        dropped = len(logs) - 2 * keep
        del logs[keep : keep + dropped]
        k.state.logs_dropped += dropped
