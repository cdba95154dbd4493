"""Per-block and per-instruction trace events, attached to each guest the world creates.

`TraceProbes` is an `Instrument`: for every new guest that passes the pid filter it attaches a
block probe (trace level block) or the native instruction log (level insn), restricted to one
symbol's address range when a symbol filter is given, so code outside it runs at full speed.
"""

from __future__ import annotations

from emu.cpu import GuestCpu
from emu.elf import ElfImage
from emu.trace import Level, Trace

MILLI = 1000


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
        if self.trace.level < Level.BLOCK or (self.pid is not None and pid != self.pid):
            return
        begin, end = 1, 0
        if self.symbol is not None:
            found = image.symbol_named(self.symbol)
            if found is None:
                return  # this image does not have it; another may
            self.symbol_seen = True
            begin, end = found.address, found.address + max(found.size, 1) - 1
        trace = self.trace
        if trace.level >= Level.INSN:
            cpu.attach_insn_log(pid, trace.feed, lambda: trace.next_seq, text=self.text, begin=begin, end=end)
            return

        def on_block(address: int, size: int, icount: int, clock: int, insns: int, cost: int) -> None:
            trace.emit_at(
                icount,
                clock // MILLI,
                "block",
                pid,
                address=f"{address:#x}",
                symbol=cpu.symbolize(address),
                insns=insns,
                millicycles=cost,
            )

        cpu.add_block_probe(on_block, begin, end)
