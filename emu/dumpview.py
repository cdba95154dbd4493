"""A crash dump read for a person debugging: the fault in one line, a symbolized backtrace, the
code around the fault, registers, every process and what it was doing, capabilities, the message
in flight and the last events. `analyse` gives it as data (`--json`); `render` as text."""

from __future__ import annotations

from typing import Any

import capstone

from emu.debuginfo import DebugInfo
from emu.dumpfile import Dump, DumpError
from emu.elf import ElfError, ElfImage, Perm, load_elf
from emu.registers import REGISTERS
from emu.trace import Event, to_text
from emu.unwind import backtrace

_CONTEXT_BEFORE, _CONTEXT_AFTER = 8, 4


class DumpImages:
    """The crashed process's image, loaded from the path the dump records (check_images has
    checked its hash), and its debug information."""

    def __init__(self, label: str, dump: Dump) -> None:
        name = dump.payload["process"]["image"]
        entry = next((i for i in dump.payload["images"] if i.get("name") == name and i.get("path")), None)
        if entry is None:
            raise DumpError(f"{label}: the dump does not name the faulting process's image file")
        try:
            self.image = load_elf(entry["path"], name=name)
            self.debug = DebugInfo(self.image.raw)
        except ElfError as exc:
            raise DumpError(f"{label}: image {name}: {exc}") from None


def _reader(dump: Dump, image: ElfImage) -> Any:
    def read(address: int, size: int) -> bytes | None:
        data = dump.read(address, size)
        if data is not None:
            return data
        for segment in image.segments:
            offset = address - segment.vaddr
            if offset >= 0 and offset + size <= segment.memsz:
                return (segment.data + bytes(segment.memsz - len(segment.data)))[offset : offset + size]
        return None

    return read


def _where(images: DumpImages, pc: int) -> dict[str, Any]:
    """The function `pc` is in (symbol table), its line there, and what is inlined at `pc`."""
    symbol = images.image.symbolize(pc)
    *inlined, (_, line) = images.debug.locations(pc)
    return {
        "function": symbol[0] if symbol else None,
        "offset": symbol[1] if symbol else None,
        "source": str(line) if line else None,
        "inlined": [{"function": name, "source": str(at) if at else None} for name, at in inlined],
    }


def frames(dump: Dump, images: DumpImages) -> list[dict[str, Any]]:
    read = _reader(dump, images.image)

    def word(address: int) -> int | None:
        data = read(address, 8)
        return None if data is None else int.from_bytes(data, "little")

    def is_code(pc: int) -> bool:
        return any(s.vaddr <= pc < s.end and s.perms & Perm.X for s in images.image.segments)

    rows = []
    for number, frame in enumerate(backtrace(dump.registers, word, images.debug, is_code)):
        where = _where(images, frame.lookup_pc)
        if where["function"] is not None and frame.method != "registers":
            where["offset"] = frame.pc - (frame.lookup_pc - where["offset"])
        rows.append({"frame": number, "pc": frame.pc, "found_by": frame.method, **where})
    return rows


def disassembly(dump: Dump, images: DumpImages) -> list[dict[str, Any]]:
    """The instructions around the faulting one (from its function's start), marked."""
    rip = dump.registers["rip"]
    symbol = images.image.symbolize(rip)
    start = rip - symbol[1] if symbol else rip
    code = _reader(dump, images.image)
    length = rip - start + 16 * _CONTEXT_AFTER
    data = None
    while data is None and length > 0:
        data = code(start, length)
        length -= 16
    if data is None:
        return []
    engine = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    insns = [(i.address, i.bytes.hex(), f"{i.mnemonic} {i.op_str}".strip()) for i in engine.disasm(data, start)]
    at = next((n for n, insn in enumerate(insns) if insn[0] == rip), None)
    if at is None:
        return []
    chosen = insns[max(0, at - _CONTEXT_BEFORE) : at + _CONTEXT_AFTER + 1]
    return [{"address": a, "bytes": b, "text": t, "faulting": a == rip} for a, b, t in chosen]


_PANIC_MACHINERY = ("rt::panic::", "rust_begin_unwind", "panicking")
"""Frames of the panic path itself (the runtime's handler, core's panic entry points)."""


def _panicking(frame: dict[str, Any]) -> bool:
    return any(part in (frame.get("function") or "") for part in _PANIC_MACHINERY)


def fault_line(dump: Dump, stack: list[dict[str, Any]]) -> str:
    """The fault in one line: what, where (function and file:line), which process. A panic is
    placed at the first frame outside the panic machinery; a frame with no line (assembly) by
    the nearest caller that has one."""
    payload = dump.payload
    if payload["cause"]["kind"] == "panic":
        stack = [f for f in stack if not _panicking(f)] or stack
    top = stack[0]
    cause, process = payload["cause"], payload["process"]
    who = f"pid {process['pid']} ({process['name']})"
    where = f"{top['function']}+{top['offset']:#x}" if top.get("function") else f"{cause['rip']:#x}"
    source = f" at {top['source']}" if top.get("source") else ""
    caller = next((f for f in stack[1:] if f.get("source")), None)
    if not source and caller is not None:
        source = f", called from {caller['function']} at {caller['source']}"
    if cause["kind"] == "panic":
        return f"{who} panicked in {where}{source}: {cause.get('message', '')}"
    address = f" at {cause['address']:#x}" if cause.get("address") is not None else ""
    access = f" ({cause['access']})" if cause.get("access") else ""
    return f"{who} faulted: {cause['fault']}{address}{access}, in {where}{source}"


def analyse(label: str, dump: Dump) -> dict[str, Any]:
    """Everything `render` prints, as data."""
    images = DumpImages(label, dump)
    stack = frames(dump, images)
    payload = dump.payload
    return {
        "dump": payload["id"],
        "fault": fault_line(dump, stack),
        "cause": payload["cause"],
        "process": payload["process"],
        "backtrace": stack,
        "disassembly": disassembly(dump, images),
        "registers": {name: dump.registers[name] for name in REGISTERS if name in dump.registers},
        "vector_registers": payload.get("vector_registers", {}),
        "processes": payload["processes"],
        "capabilities": payload.get("capabilities", []),
        "message": payload.get("message"),
        "endpoints": payload.get("endpoints", []),
        "clock": payload["clock"],
        "images": payload["images"],
        "events": payload.get("events", []),
        "replay": {k: v for k, v in payload["replay"].items() if k != "scenario"}
        | {"scenario": _scenario_label(payload["replay"].get("scenario"))},
    }


def _scenario_label(scenario: dict[str, Any] | None) -> str | None:
    if scenario is None:
        return None
    return str(scenario.get("name") or scenario.get("path"))


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return ["  " + line for line in lines]


def render(report: dict[str, Any]) -> str:
    out = [report["fault"], "", "backtrace:"]
    for f in report["backtrace"]:
        name = f"{f['function']}+{f['offset']:#x}" if f["function"] else "??"
        source = f" at {f['source']}" if f["source"] else ""
        for inner in f["inlined"]:
            at = f" at {inner['source']}" if inner["source"] else ""
            out.append(f"      {'':18} inlined {inner['function'] or '??'}{at}")
        out.append(f"  #{f['frame']:<2} {f['pc']:#018x} in {name}{source}  [{f['found_by']}]")
    out += ["", "code:"]
    for insn in report["disassembly"]:
        mark = "=>" if insn["faulting"] else "  "
        out.append(f"  {mark} {insn['address']:#x}  {insn['bytes']:<24} {insn['text']}")
    out += ["", "registers:"]
    names = list(report["registers"])
    for i in range(0, len(names), 3):
        out.append("  " + "   ".join(f"{n:>6} {report['registers'][n]:#018x}" for n in names[i : i + 3]))
    vectors = {n: v for n, v in report["vector_registers"].items() if n.startswith("xmm") and v}
    for name, value in vectors.items():
        out.append(f"  {name:>6} {value:#034x}")
    if report["vector_registers"]:
        out.append(f"  (xmm registers not shown are 0; mxcsr {report['vector_registers'].get('mxcsr', 0):#x})")
    clock = report["clock"]
    out += ["", f"processes (at instruction {clock['icount']}, cycle {clock['cycle']}):"]
    rows = [[str(p["pid"]), p["name"], p["kind"], p["state"], p["doing"]] for p in report["processes"]]
    out += _table(["pid", "name", "kind", "state", "doing"], rows)
    out += ["", f"capabilities of pid {report['process']['pid']}:"]
    caps = [
        [str(c["slot"]), c["type"], str(c["object"]), c["rights"], f"{c['badge']:#x}"] for c in report["capabilities"]
    ]
    out += _table(["slot", "type", "object", "rights", "badge"], caps)
    out += ["", "message in flight:", f"  {_message_text(report['message'])}"]
    out += ["", f"last {len(report['events'])} events:"]
    out += ["  " + to_text(_event(e)) for e in report["events"]]
    return "\n".join(out) + "\n"


def _message_text(message: dict[str, Any] | None) -> str:
    if message is None:
        return "none (the process was not serving a call, and received no message lately)"
    if message.get("received"):
        shown = {k: v for k, v in message.items() if k not in ("received", "from", "op_name", "op")}
        details = " ".join(f"{k}={v}" for k, v in shown.items())
        return f"last received (not a call): {message.get('op_name')} from pid {message.get('from')}: {details}"
    text = f"{message.get('op_name')} ({message.get('op', 0):#x}) from pid {message['from']} ({message['from_name']})"
    if "payload" in message:
        text += f", {message['len']} bytes: {message['payload'] or '-'}"
    elif message.get("buffer_reused"):
        text += "; its IPC buffer has since been reused"
    return text


def _event(row: dict[str, Any]) -> Event:
    fields = {k: v for k, v in row.items() if k not in ("seq", "icount", "cycle", "pid", "kind")}
    return Event(row["seq"], row["icount"], row["cycle"], row["pid"], row["kind"], fields)
