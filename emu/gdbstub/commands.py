"""The gdb remote commands: a table from packet prefix to handler, over a `DebugTarget`.

`Session.handle(payload)` answers one packet with a reply payload, or with an `Action` when the
client resumes (continue, step), detaches or kills. Malformed arguments (and numbers beyond 64
bits) get `E01`, a request the target refuses (unmapped memory, a thread that is gone, a read-only
register) `E0E`; an unknown packet gets the empty reply that means "not supported". Threads are
processes (`tid` = pid), each its own address space.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from emu.gdbstub import queries
from emu.gdbstub.packets import PACKET_SIZE
from emu.gdbstub.registers import REGISTERS, UNMODELLED, decode_value, encode_value
from emu.gdbstub.target import DebugTarget, Stop, StopKind, TargetError

OK, ERR_ARGS, ERR_TARGET = b"OK", b"E01", b"E0E"
MAX_MEMORY = PACKET_SIZE // 2 - 16
"""Bytes one `m` reply may carry (two hex digits each)."""
FEATURES = f"PacketSize={PACKET_SIZE:x};qXfer:features:read+;qXfer:threads:read+;swbreak+;vContSupported+"


class ActionKind(Enum):
    CONTINUE = "continue"
    DETACH = "detach"
    KILL = "kill"


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    step: int | None = None
    """A thread to step before stopping again (continue only)."""
    reply: bytes | None = None
    """Sent before acting (detach's OK)."""


Handler = Callable[["Session", bytes], "bytes | Action"]


def _hex(value: bytes) -> int:
    """A hex number of at most 64 bits (ValueError otherwise: addresses, lengths, thread ids)."""
    number = int(value.decode("ascii"), 16)
    if not 0 <= number < 1 << 64:
        raise ValueError(f"{number:#x} is not a 64-bit value")
    return number


def _tid(text: bytes) -> int:
    """A thread id in H, T, vCont (`-1` all, `0` any, `p1.2` multiprocess form)."""
    if text.startswith(b"p"):
        text = text.split(b".", 1)[-1] if b"." in text else b"-1"
    return -1 if text == b"-1" else _hex(text)


class Session:
    """One client's view of the target: selected threads and the last stop."""

    def __init__(self, target: DebugTarget) -> None:
        self.target = target
        self.stop: Stop | None = None
        self.general = 0
        self.control = 0

    def stopped(self, stop: Stop) -> None:
        self.stop = stop
        self.general = self.control = stop.tid

    def handle(self, payload: bytes) -> bytes | Action:
        for prefix, handler in COMMANDS:
            if payload.startswith(prefix):
                try:
                    return handler(self, payload[len(prefix) :])
                except TargetError:
                    return ERR_TARGET
                except (ValueError, UnicodeDecodeError, IndexError, KeyError):
                    return ERR_ARGS
        return b""

    def thread(self, wanted: int) -> int:
        """The thread a request names (0 or -1: the one that stopped), which must be alive."""
        tid = self.stop.tid if wanted in (0, -1) and self.stop is not None else wanted
        if tid not in {thread.tid for thread in self.target.threads()}:
            raise TargetError(f"no thread {tid}")
        return tid

    def stop_reply(self) -> bytes:
        stop = self.stop
        if stop is None:
            return b"S05"
        reason = "swbreak:;" if stop.kind is StopKind.BREAKPOINT else ""
        return f"T{stop.signal:02x}thread:{stop.tid:x};{reason}".encode()


def _g(session: Session, _args: bytes) -> bytes:
    tid = session.thread(session.general)
    values = (_read(session, tid, register.name) for register in REGISTERS)
    return b"".join(encode_value(register, value) for register, value in zip(REGISTERS, values, strict=True))


def _read(session: Session, tid: int, name: str) -> int | None:
    return None if name in UNMODELLED else session.target.read_register(tid, name)


def _big_g(session: Session, args: bytes) -> bytes:
    tid = session.thread(session.general)
    offset = 0
    for register in REGISTERS:
        text = args[offset : offset + 2 * register.size]
        offset += 2 * register.size
        if register.name in UNMODELLED or b"x" in text:
            continue
        value = decode_value(register, text)
        if value != _read(session, tid, register.name):  # gdb sends every register; write the changed
            session.target.write_register(tid, register.name, value)
    return OK


def _p(session: Session, args: bytes) -> bytes:
    register = REGISTERS[_hex(args)]
    return encode_value(register, _read(session, session.thread(session.general), register.name))


def _big_p(session: Session, args: bytes) -> bytes:
    number, value = args.split(b"=", 1)
    register = REGISTERS[_hex(number)]
    if register.name in UNMODELLED:
        return ERR_TARGET
    session.target.write_register(session.thread(session.general), register.name, decode_value(register, value))
    return OK


def _m(session: Session, args: bytes) -> bytes:
    address, length = (_hex(part) for part in args.split(b","))
    data = session.target.read_memory(session.thread(session.general), address, min(length, MAX_MEMORY))
    return data.hex().encode()


def _big_m(session: Session, args: bytes) -> bytes:
    where, data = args.split(b":", 1)
    address, length = (_hex(part) for part in where.split(b","))
    raw = bytes.fromhex(data.decode("ascii"))
    if len(raw) != length:
        return ERR_ARGS
    session.target.write_memory(session.thread(session.general), address, raw)
    return OK


def _x(session: Session, args: bytes) -> bytes:
    where, data = args.split(b":", 1)  # the framing layer has undone the escapes
    address, length = (_hex(part) for part in where.split(b","))
    if len(data) != length:
        return ERR_ARGS
    if length:
        session.target.write_memory(session.thread(session.general), address, data)
    return OK


def _breakpoint(insert: bool) -> Handler:
    def handle(session: Session, args: bytes) -> bytes:
        kind, address, _size = args.split(b",")[:3]
        if kind != b"0":
            return b""  # only software breakpoints
        (session.target.set_breakpoint if insert else session.target.clear_breakpoint)(_hex(address))
        return OK

    return handle


def _h(session: Session, args: bytes) -> bytes:
    which, tid = args[:1], _tid(args[1:])
    if tid > 0:
        session.thread(tid)
    if which == b"g":
        session.general = tid
    elif which == b"c":
        session.control = tid
    else:
        return ERR_ARGS
    return OK


def _t(session: Session, args: bytes) -> bytes:
    session.thread(_tid(args))
    return OK


def _step_thread(session: Session, text: bytes) -> int:
    """The thread a step names (none, 0 or -1: the control thread, else the one that stopped)."""
    tid = _tid(text) if text else -1
    if tid in (0, -1):
        tid = session.control if session.control > 0 else -1
    return session.thread(tid)


def _v_cont(session: Session, args: bytes) -> bytes | Action:
    if args == b"?":
        return b"vCont;c;C;s;S"
    step = None
    for item in args.lstrip(b";").split(b";"):
        verb, _, thread = item.partition(b":")
        if verb[:1] in (b"s", b"S") and step is None:
            step = _step_thread(session, thread)
        elif verb[:1] not in (b"c", b"C", b"s", b"S"):
            return b""  # `t` (stop) and `r` (range step) are not supported
    return Action(ActionKind.CONTINUE, step)


def _set_pc(session: Session, address: bytes) -> None:
    if address:
        session.target.write_register(_step_thread(session, b""), "rip", _hex(address))


def _c(session: Session, args: bytes) -> Action:
    _set_pc(session, args)
    return Action(ActionKind.CONTINUE)


def _s(session: Session, args: bytes) -> Action:
    _set_pc(session, args)
    return Action(ActionKind.CONTINUE, _step_thread(session, b""))


def _with_signal(resume: Handler) -> Handler:
    """`C sig[;addr]`, `S sig[;addr]`: the signal is not delivered (there are no signals here)."""

    def handle(session: Session, args: bytes) -> bytes | Action:
        _signal, _, address = args.partition(b";")
        return resume(session, address)

    return handle


COMMANDS: tuple[tuple[bytes, Handler], ...] = (
    (b"qSupported", queries.supported),
    (b"qXfer:features:read:", queries.features_read),
    (b"qXfer:threads:read:", queries.threads_read),
    (b"qfThreadInfo", queries.first_thread_info),
    (b"qsThreadInfo", queries.next_thread_info),
    (b"qThreadExtraInfo,", queries.thread_extra_info),
    (b"qC", queries.current_thread),
    (b"qAttached", lambda _s, _a: b"1"),
    (b"qRcmd,", queries.monitor),
    (b"vCont", _v_cont),
    (b"vKill", lambda _s, _a: Action(ActionKind.KILL, reply=OK)),
    (b"vMustReplyEmpty", lambda _s, _a: b""),
    (b"?", lambda session, _a: session.stop_reply()),
    (b"g", _g),
    (b"G", _big_g),
    (b"p", _p),
    (b"P", _big_p),
    (b"m", _m),
    (b"M", _big_m),
    (b"X", _x),
    (b"Z", _breakpoint(insert=True)),
    (b"z", _breakpoint(insert=False)),
    (b"H", _h),
    (b"T", _t),
    (b"c", _c),
    (b"s", _s),
    (b"C", _with_signal(_c)),
    (b"S", _with_signal(_s)),
    (b"D", lambda _s, _a: Action(ActionKind.DETACH, reply=OK)),
    (b"k", lambda _s, _a: Action(ActionKind.KILL)),
)
"""Packet prefix -> handler, most specific first (`qC` after `qXfer`, single letters last)."""
