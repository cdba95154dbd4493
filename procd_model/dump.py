"""What a crash dump of the EriX world holds, and the crash watch that writes it.

`DumpRecorder` is the kernel's crash watch (`kernel.inject.CrashWatch`): on every guest fault or
panic it names the dump (`dump_id`, deterministic: the trace names it through crashd), builds the
payload from the kernel's state while the guest is still whole, and writes the file (emu's
dumpfile packs it as an ELF core, docs/dump-format.md). A replay asks it to stop the machine at
the crash it reproduces instead.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emu.coredump import CoreSegment
from emu.dumpfile import DUMP_SUFFIX, encode_dump, memory_digest
from emu.elf import ElfImage, Perm
from emu.events import MILLICYCLES_PER_CYCLE as MILLI
from emu.output import write_new_file
from emu.registers import REGISTERS
from procd_model.cpu_model import DEFAULT_CPU
from procd_model.dump_state import capabilities, endpoints, in_flight, process_rows
from procd_model.kernel.inject import Crash
from procd_model.kernel.state import GuestContext, Process

if TYPE_CHECKING:
    from procd_model.kernel.core import Kernel

_SIGNALS = {"invalid-opcode": 4, "breakpoint": 5, "divide-error": 8, "injected": 9}
_SIGSEGV, _SIGABRT = 11, 6


def guest_registers(context: GuestContext) -> dict[str, int]:
    names = tuple(REGISTERS)
    return dict(zip(names, context.cpu.regs(names), strict=True))


def guest_memory(context: GuestContext) -> list[CoreSegment]:
    """Everything mapped but the image's read-only segments (recorded by path and hash)."""
    read_only = [s for s in context.image.segments if not s.perms & Perm.W]
    segments = []
    for start, size, perms in context.cpu.regions():
        if not perms & Perm.W and any(s.vaddr < start + size and start < s.end for s in read_only):
            continue
        segments.append(CoreSegment(start, perms, context.cpu.read(start, size)))
    return segments


def image_identity(image: ElfImage) -> dict[str, Any]:
    return {"name": image.name, "path": image.path, "sha256": hashlib.sha256(image.raw).hexdigest()}


def _cause(proc: Process, crash: Crash, registers: dict[str, int]) -> tuple[dict[str, Any], int]:
    """The cause as the payload records it, and the signal gdb shows for it."""
    if crash.fault is None:
        return {"kind": "panic", "rip": registers["rip"], "message": crash.panic or ""}, _SIGABRT
    fault = crash.fault
    cause = {"kind": "fault", "fault": fault.kind.value, "rip": fault.rip, "address": fault.address}
    cause["access"] = fault.detail
    return cause, _SIGNALS.get(fault.kind.value, _SIGSEGV)


@dataclass
class DumpRecorder:
    """The crash watch of one run (see the module doc)."""

    kernel: Kernel | None
    """Set by the kernel's maker (`attach`)."""
    folder: Path | None
    """Where dumps are written (None: none are, but crashes are still named)."""
    replay: dict[str, Any]
    """What a replay needs: the world, the inputs of the run."""
    stop_at: str | None = None
    """Stop the machine at the crash with this dump id (a replay)."""
    written: list[Path] = field(default_factory=list)
    captured: dict[str, Any] | None = None
    """The payload of the crash the machine stopped at."""

    def attach(self, kernel: Kernel) -> None:
        self.kernel = kernel
        kernel.crash_watch = self

    def crashed(self, proc: Process, crash: Crash) -> bool:
        assert self.kernel is not None
        name = self.kernel.state.dumps[proc.pid]
        stop = name == self.stop_at
        if (self.folder is None and not stop) or not isinstance(proc.context, GuestContext):
            return False
        payload, segments, signal = self.build(proc, proc.context, crash, name)
        if stop:
            self.captured = payload
            return True
        if self.folder is not None:
            data = encode_dump(payload, signal=signal, segments=segments)
            self.written.append(write_new_file(self.folder, name, DUMP_SUFFIX, data))
        return False

    def build(
        self, proc: Process, context: GuestContext, crash: Crash, name: str
    ) -> tuple[dict[str, Any], list[CoreSegment], int]:
        k = self.kernel
        assert k is not None
        registers = guest_registers(context)
        cause, signal = _cause(proc, crash, registers)
        segments = guest_memory(context)
        images = {p.image.name: image_identity(p.image) for p in k.procs.values() if p.image is not None}
        payload = {
            "id": name,
            "cause": cause,
            "process": {"pid": proc.pid, "name": proc.name, "image": context.image.name},
            "registers": registers,
            "vector_registers": context.cpu.vector_registers(),
            "memory": {
                "digest": memory_digest((s.vaddr, s.data) for s in segments),
                "ranges": [[s.vaddr, len(s.data), int(s.perms)] for s in segments],
            },
            "images": sorted(images.values(), key=lambda i: str(i["name"])),
            "clock": {"icount": k.icount, "cycle": k.clock // MILLI, "frequency_hz": k.cpu_model.frequency_hz},
            "processes": process_rows(k, proc.pid, guest_registers, "panicked" if crash.fault is None else "faulted"),
            "capabilities": capabilities(proc.caps),
            "all_capabilities": {str(p.pid): capabilities(p.caps) for p in k.procs.values()},
            "endpoints": endpoints(k),
            "message": in_flight(k, proc),
            "events": [json.loads(line) for line in k.trace.recent()],
            "replay": self.replay,
        }
        return payload, segments, signal


@dataclass
class PausedKernel:
    """The kernel as a run left it, read as emu's `PausedMachine` (a replay compares it with the
    dump; a debugger can take it over)."""

    kernel: Kernel

    @property
    def icount(self) -> int:
        return self.kernel.icount

    def _guest(self, pid: int) -> GuestContext | None:
        proc = self.kernel.procs.get(pid)
        if proc is None or not isinstance(proc.context, GuestContext) or proc.context.cpu.closed:
            return None
        return proc.context

    def registers(self, pid: int) -> dict[str, int] | None:
        context = self._guest(pid)
        return None if context is None else guest_registers(context)

    def run_on(self, max_instructions: int) -> str:
        """Clear the stop and run on, until the machine retired `max_instructions` in all (or
        stops for another reason, e.g. at the crash its crash watch stops at); the stop's kind.
        A run stopped inside a guest's turn finishes that turn first, so the counts, cycles and
        schedule are those of a run never stopped."""
        self.kernel.state.halt = None
        return self.kernel.run(max_instructions).kind

    def memory_digest(self, pid: int) -> str | None:
        context = self._guest(pid)
        if context is None:
            return None
        return memory_digest((s.vaddr, s.data) for s in guest_memory(context))


def replay_inputs(world: str, max_instructions: int, cpu: str = DEFAULT_CPU) -> dict[str, Any]:
    """What a replay needs to run the same machine again: the world, the instruction limit and
    the CPU model (its clock decides preemption); the world adds the image (`image_input`) or the
    scenario (`scenario_input`) it ran."""
    return {"world": world, "max_instructions": max_instructions, "cpu": cpu, "image": None, "scenario": None}


def image_input(path: Path, image: ElfImage) -> dict[str, Any]:
    return {"path": os.path.abspath(path), "sha256": hashlib.sha256(image.raw).hexdigest()}


def scenario_input(name_or_path: str, text: str | None) -> dict[str, Any]:
    """A built-in scenario by name (`text` None), or a scenario file by path, hash and text."""
    if text is None:
        return {"name": name_or_path}
    digest = hashlib.sha256(text.encode()).hexdigest()
    return {"path": os.path.abspath(name_or_path), "sha256": digest, "text": text}
