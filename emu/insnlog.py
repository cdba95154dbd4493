"""Instruction-level trace lines at native speed.

Every traced instruction becomes one `insn` event: address, symbol+offset, bytes and disassembly
(capstone, once per address). Rendering millions of events through Python objects is far too slow,
so each instruction's fields are pre-rendered once as a JSON fragment and a text fragment, and a
code hook (C in emu/_accounting.c, or the same logic in Python where it is not built) writes whole
lines into buffers that are handed to the trace in bulk. The lines are byte-for-byte what
`emu.trace.jsonl_line` / `to_text` would produce for the same event.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

import capstone
import orjson
from unicorn import unicorn_const as uc_const

from emu.accounting import Accountant, native_library
from emu.blockclock import MAX_RANGES, AccountState
from emu.events import MILLICYCLES_PER_CYCLE
from emu.trace import text_value

NO_FRAGMENT = 0xFFFF_FFFF
LOG_OK, LOG_FULL, LOG_MISSING = 0, 1, 2
BUFFER_BYTES = 8 << 20
TAIL_BYTES = 1 << 16
"""Longer than any one line (symbols are bounded), so the last line starts within the tail."""
Feed = Callable[[int, bytes, bytes], None]
"""feed(count, jsonl_lines, text_lines)"""


class FragRange(ctypes.Structure):
    _fields_ = [("base", ctypes.c_uint64), ("end", ctypes.c_uint64), ("index", ctypes.POINTER(ctypes.c_uint32))]


class InsnLogState(ctypes.Structure):
    """Mirrors `struct emu_insn_log` in emu/_accounting.c."""

    _fields_ = [
        ("acct", ctypes.POINTER(AccountState)),
        ("icount_base", ctypes.c_uint64),
        ("clock_base", ctypes.c_uint64),
        ("seq", ctypes.c_uint64),
        ("missing_address", ctypes.c_uint64),
        ("json", ctypes.c_void_p),
        ("json_len", ctypes.c_uint64),
        ("json_cap", ctypes.c_uint64),
        ("text", ctypes.c_void_p),
        ("text_len", ctypes.c_uint64),
        ("text_cap", ctypes.c_uint64),
        ("json_frags", ctypes.c_void_p),
        ("json_offsets", ctypes.POINTER(ctypes.c_uint64)),
        ("text_frags", ctypes.c_void_p),
        ("text_offsets", ctypes.POINTER(ctypes.c_uint64)),
        ("pid", ctypes.c_uint32),
        ("stop", ctypes.c_uint32),
        ("nranges", ctypes.c_uint32),
        ("count", ctypes.c_uint32),
        ("emu_stop", ctypes.c_void_p),
        ("ranges", FragRange * MAX_RANGES),
    ]


def fragments(fields: dict[str, Any]) -> tuple[bytes, bytes]:
    """The JSON and text renderings of an event's own fields (what follows `"kind":...,`)."""
    as_json = orjson.dumps(fields)[1:-1]
    as_text = " ".join(f"{key}={text_value(value)}" for key, value in fields.items())
    return as_json, as_text.rstrip().encode("utf-8")


class InsnLog:
    """One guest's instruction trace: fragments per address, the hook, and the output buffers."""

    def __init__(
        self,
        uc: Any,
        accountant: Accountant,
        read: Callable[[int, int], bytes],
        symbolize: Callable[[int], str],
        pid: int,
        feed: Feed,
        *,
        text: bool,
        begin: int,
        end: int,
    ) -> None:
        self._uc = uc
        self._acct = accountant
        self._read = read
        self._symbolize = symbolize
        self._feed = feed
        self._cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        self._begin, self._end = begin, end
        self._index: dict[int, int] = {}
        self._json: list[bytes] = []
        self._text: list[bytes] = []
        self._pinned: list[Any] = []
        self.state = InsnLogState()
        state = self.state
        state.acct = ctypes.pointer(accountant.state)
        state.pid = pid
        state.emu_stop = accountant.state.emu_stop
        self._json_buffer = ctypes.create_string_buffer(BUFFER_BYTES)
        state.json = ctypes.cast(self._json_buffer, ctypes.c_void_p)
        state.json_cap = BUFFER_BYTES
        self._text_buffer = ctypes.create_string_buffer(BUFFER_BYTES if text else 1)
        state.text = ctypes.cast(self._text_buffer, ctypes.c_void_p) if text else None
        state.text_cap = BUFFER_BYTES if text else 0
        for address, size in accountant.boundaries(begin, end if end > begin else 1 << 64):
            self._add(address, size)
        self._publish()
        self._install()

    # ---------------------------------------------------------------- fragments

    def _add(self, address: int, size: int) -> None:
        code = self._read(address, size)
        insn = next(self._cs.disasm_lite(code, address, 1), None)
        text = f"{insn[2]} {insn[3]}".strip() if insn else "(bad)"
        if insn is not None and insn[1] != size:
            code = code[: insn[1]]
        fields = {"address": f"{address:#x}", "symbol": self._symbolize(address), "bytes": code.hex(), "disasm": text}
        as_json, as_text = fragments(fields)
        self._index[address] = len(self._json)
        self._json.append(as_json)
        self._text.append(as_text)

    def _publish(self) -> None:
        """Hand the fragment tables to the native hook (rebuilt whole: it happens rarely)."""
        state = self.state
        pinned: list[Any] = []
        for blob, offsets_field, frags_field in (
            (self._json, "json_offsets", "json_frags"),
            (self._text, "text_offsets", "text_frags"),
        ):
            offsets = (ctypes.c_uint64 * (len(blob) + 1))()
            total = 0
            for i, fragment in enumerate(blob):
                offsets[i] = total
                total += len(fragment)
            offsets[len(blob)] = total
            joined = ctypes.create_string_buffer(b"".join(blob), max(total, 1))
            pinned += [offsets, joined]
            setattr(state, offsets_field, offsets)
            setattr(state, frags_field, ctypes.cast(joined, ctypes.c_void_p))
        addresses = sorted(self._index)
        groups = _ranges(addresses)
        for slot, (base, end) in enumerate(groups):
            index = (ctypes.c_uint32 * (end - base))(*([NO_FRAGMENT] * (end - base)))
            for address in addresses:
                if base <= address < end:
                    index[address - base] = self._index[address]
            pinned.append(index)
            state.ranges[slot].base, state.ranges[slot].end = base, end
            state.ranges[slot].index = ctypes.cast(index, ctypes.POINTER(ctypes.c_uint32))
        state.nranges = len(groups)
        self._pinned = pinned

    # --------------------------------------------------------------------- hook

    def _install(self) -> None:
        library = native_library()
        begin, end = self._begin, self._end
        if library is None or not self._acct.native:
            self._uc.hook_add(uc_const.UC_HOOK_CODE, self._python_hook, None, begin, end)
            return
        from emu.native_hook import add_native_hook

        add_native_hook(self._uc, uc_const.UC_HOOK_CODE, library.emu_log_insn, self.state, begin, end)

    def _python_hook(self, uc: Any, address: int, size: int, _user: object) -> None:
        """emu_log_insn, in Python: identical lines."""
        state = self.state
        frag = self._index.get(address)
        retired = self._retired_before(address)
        if frag is None or retired is None:
            state.stop = LOG_MISSING
            state.missing_address = address
            uc.emu_stop()
            return
        insns, cost = retired
        icount, cycle = state.icount_base + insns, (state.clock_base + cost) // MILLICYCLES_PER_CYCLE
        seq, pid = state.seq, state.pid
        line = b'{"seq":%d,"icount":%d,"cycle":%d,"pid":%d,"kind":"insn",%s}\n' % (
            seq,
            icount,
            cycle,
            pid,
            self._json[frag],
        )
        self._py_json.append(line)
        if state.text:
            self._py_text.append(
                b"%6d %12d %12d %4d  insn             %s\n" % (seq, icount, cycle, pid, self._text[frag])
            )
        state.seq += 1
        state.count += 1
        if len(self._py_json) >= 65536:
            self.drain()  # bound memory on long runs; nothing else is emitted while a guest runs

    _py_json: list[bytes] = []
    _py_text: list[bytes] = []

    def _retired_before(self, address: int) -> tuple[int, int] | None:
        acct = self._acct.state
        done = self._acct.block_offset(address)
        if done is None:
            return None
        return int(acct.block_insns) + done[0], int(acct.block_cost) + done[1]

    # ------------------------------------------------------------------- running

    def begin_run(self, seq: int, icount_base: int, clock_base: int) -> None:
        state = self.state
        state.seq, state.icount_base, state.clock_base = seq, icount_base, clock_base
        self._py_json, self._py_text = [], []

    def stopped(self) -> bool:
        return bool(self.state.stop)

    def retract(self, address: int) -> None:
        """Take back the last line if it is for `address` at the current count: a debugger stopped
        the guest before that instruction ran, after this log's hook had written it."""
        state = self.state
        if not state.count:
            return
        icount = state.icount_base + int(self._acct.state.insns)
        mark = b',"icount":%d,' % icount, b'"kind":"insn","address":"%s"' % f"{address:#x}".encode()
        if self._py_json:
            if all(part in self._py_json[-1] for part in mark):
                self._py_json.pop()
                if self._py_text:
                    self._py_text.pop()
                state.count, state.seq = state.count - 1, state.seq - 1
            return
        start = _last_line_start(self._json_buffer, state.json_len)
        if all(
            part in ctypes.string_at(ctypes.addressof(self._json_buffer) + start, state.json_len - start)
            for part in mark
        ):
            state.json_len = start
            if state.text:
                state.text_len = _last_line_start(self._text_buffer, state.text_len)
            state.count, state.seq = state.count - 1, state.seq - 1

    def service(self) -> None:
        """Deal with the stop the hook asked for: drain the buffers or learn the instruction."""
        state = self.state
        if state.stop == LOG_MISSING:
            address = state.missing_address
            if address not in self._index:
                insn = next(self._cs.disasm_lite(self._read(address, 16), address, 1), None)
                self._add(address, insn[1] if insn else 1)
                self._publish()
        self.drain()
        state.stop = LOG_OK

    def drain(self) -> None:
        state = self.state
        if not state.count:
            return
        if self._py_json or self._py_text:
            jsonl, text = b"".join(self._py_json), b"".join(self._py_text)
            self._py_json, self._py_text = [], []
        else:
            jsonl = ctypes.string_at(self._json_buffer, state.json_len)
            text = ctypes.string_at(self._text_buffer, state.text_len) if state.text else b""
        count = state.count
        state.json_len = state.text_len = 0
        state.count = 0
        self._feed(count, jsonl, text)


def _last_line_start(buffer: ctypes.Array[ctypes.c_char], length: int) -> int:
    """Where the last newline-terminated line of `buffer[:length]` starts."""
    tail_start = max(0, length - TAIL_BYTES)
    tail = ctypes.string_at(ctypes.addressof(buffer) + tail_start, length - tail_start)
    return tail_start + tail.rfind(b"\n", 0, len(tail) - 1) + 1


def _ranges(addresses: list[int]) -> list[tuple[int, int]]:
    """Group sorted addresses into at most MAX_RANGES [base, end) runs, split at the widest gaps."""
    gap = 4096
    while True:
        out: list[tuple[int, int]] = []
        for address in addresses:
            if out and address - out[-1][1] < gap:
                out[-1] = (out[-1][0], address + 16)
            else:
                out.append((address, address + 16))
        if len(out) <= MAX_RANGES:
            return out
        gap *= 4
