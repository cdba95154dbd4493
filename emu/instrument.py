"""Per-block and per-instruction trace events, attached to each guest the world creates.

`TraceProbes` is an `Instrument`: for every new guest that passes the pid filter it attaches a
block probe (trace level block) or the native instruction log (level insn), restricted to one
symbol's address range when a symbol filter is given, so code outside it runs at full speed.
"""

from __future__ import annotations

from collections.abc import Iterable

from emu.cpu import GuestCpu
from emu.elf import ElfImage
from emu.events import BLOCK, MILLICYCLES_PER_CYCLE
from emu.trace import Level, Trace


class TraceProbes:
    """Attach block or instruction probes to guests according to the trace level and filters."""

    def __init__(self, trace: Trace, pid: int | None = None, symbol: str | None = None, *, text: bool = False) -> None:
        self.trace = trace
        self.text = text
        """Render instruction events for a text trace too (the digest always uses JSONL)."""
        self.pid = pid
        self.symbol = symbol
        self.symbol_seen = False

    def __call__(self, cpu: GuestCpu, image: ElfImage, pid: int) -> None:
        if self.trace.level < Level.BLOCK:
            return
        found = image.symbol_named(self.symbol) if self.symbol is not None else None
        self.symbol_seen = self.symbol_seen or found is not None
        if self.pid is not None and pid != self.pid:
            return
        begin, end = 1, 0
        if self.symbol is not None:
            if found is None:
                return  # this image does not have it; another may
            begin, end = found.address, found.address + max(found.size, 1) - 1
        trace = self.trace
        if trace.level >= Level.INSN:
            cpu.attach_insn_log(pid, trace.feed, lambda: trace.next_seq, text=self.text, begin=begin, end=end)
            return

        def on_block(address: int, size: int, icount: int, clock: int, insns: int, cost: int) -> None:
            trace.emit_at(
                icount,
                clock // MILLICYCLES_PER_CYCLE,
                BLOCK,
                pid,
                address=f"{address:#x}",
                symbol=cpu.symbolize(address),
                insns=insns,
                millicycles=cost,
            )

        cpu.add_block_probe(on_block, begin, end)

    def filter_warnings(self, pids: Iterable[int]) -> list[str]:
        """After the run: each filter that selected nothing, and why (`pids`: every process of the run)."""
        warnings = []
        if self.pid is not None and self.pid not in set(pids):
            warnings.append(f"--trace-pid {self.pid}: no process had that pid in this run")
        if self.symbol is not None:
            level = self.trace.level
            if level < Level.BLOCK:
                warnings.append(
                    f"--trace-symbol {self.symbol}: applies to block and insn events only, "
                    f"which --trace {level.name.lower()} does not show"
                )
            elif not self.symbol_seen:
                warnings.append(f"--trace-symbol {self.symbol}: no image has that symbol")
        return warnings
