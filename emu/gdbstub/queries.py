"""The gdb stub's `q` packets: features, the target description, threads and `monitor`."""

from __future__ import annotations

from typing import TYPE_CHECKING
from xml.sax.saxutils import escape, quoteattr

from emu.gdbstub.registers import target_xml

if TYPE_CHECKING:
    from emu.gdbstub.commands import Session

MONITOR_HELP = "monitor commands: time (virtual time and instructions), ps (the process table), help"


def xfer_chunk(document: bytes, args: bytes) -> bytes:
    """`offset,length` of `document`: `m` and a chunk when more follows, `l` and the last one."""
    offset_text, length_text = args.split(b",")
    offset, length = int(offset_text, 16), int(length_text, 16)
    chunk = document[offset : offset + length]
    return (b"l" if offset + length >= len(document) else b"m") + chunk


def features_read(_session: Session, args: bytes) -> bytes:
    annex, _, rest = args.partition(b":")
    if annex != b"target.xml":
        return b"E00"
    return xfer_chunk(target_xml(), rest)


def threads_document(session: Session) -> bytes:
    rows = [
        f"<thread id={quoteattr(f'{thread.tid:x}')} name={quoteattr(thread.name)}>"
        f"{escape(f'{thread.name} (pid {thread.tid}): {thread.state}')}</thread>"
        for thread in session.target.threads()
    ]
    return ('<?xml version="1.0"?>\n<threads>\n' + "\n".join(rows) + "\n</threads>\n").encode()


def threads_read(session: Session, args: bytes) -> bytes:
    _annex, _, rest = args.partition(b":")
    return xfer_chunk(threads_document(session), rest)


def first_thread_info(session: Session, _args: bytes) -> bytes:
    tids = [thread.tid for thread in session.target.threads()]
    return (b"m" + ",".join(f"{tid:x}" for tid in tids).encode()) if tids else b"l"


def next_thread_info(_session: Session, _args: bytes) -> bytes:
    return b"l"


def current_thread(session: Session, _args: bytes) -> bytes:
    return f"QC{session.stop.tid:x}".encode() if session.stop is not None else b""


def thread_extra_info(session: Session, args: bytes) -> bytes:
    tid = int(args, 16)
    for thread in session.target.threads():
        if thread.tid == tid:
            return f"{thread.name}: {thread.state}".encode().hex().encode()
    return b"E03"


def monitor(session: Session, args: bytes) -> bytes:
    """`monitor CMD`: the reply is the output, hex-encoded."""
    command = bytes.fromhex(args.decode("ascii")).decode("utf-8", "replace").strip()
    target = session.target
    if command == "time":
        shown = [target.clock()]
    elif command == "ps":
        shown = target.process_table()
    elif command == "":
        shown = [target.clock(), *target.process_table()]
    else:
        shown = [MONITOR_HELP] if command == "help" else [f"unknown monitor command {command!r}; {MONITOR_HELP}"]
    return ("\n".join(shown) + "\n").encode().hex().encode()


def supported(_session: Session, _args: bytes) -> bytes:
    from emu.gdbstub.commands import FEATURES

    return FEATURES.encode()
