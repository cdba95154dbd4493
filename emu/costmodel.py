"""Per-instruction cycle costs for one named x86-64 CPU, for a deterministic virtual clock.

Every retired instruction advances the virtual cycle counter by its modelled cost, in
**millicycles** (1 cycle = 1000). The cost depends on the instruction's *form* only (mnemonic plus
operand kinds and sizes, see `form_key`), never on its neighbours, its operands' values or the
machine's state, so the emulator can sum the costs of a translation block once, with prefix sums.

The table comes from LLVM's scheduling model for the CPU, through llvm-mca: `tools/derive_costs.py`
writes ``emu/data/costs-<name>.json`` and docs/cost-model.md says what the numbers mean, how they
compare with llvm-mca on procd's hot path, and what the model leaves out.

    model = CostModel.load()                      # skylake
    model.cost(insn)                              # millicycles for one capstone instruction
    model.cost_of_bytes(code, address)            # [(address, size, cost), ...] for a linear sweep
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import capstone
from capstone import x86

from emu.blockmodel import BlockSummary, Machine, summarize
from emu.events import MILLICYCLES_PER_CYCLE
from emu.timing import InsnTiming, timing

DEFAULT_MODEL = "skylake"
CPU_NAMES = ("skylake", "zen4")
"""The CPU models with a table in emu/data/ (``costs-<name>.json``)."""

CATEGORIES = ("syscall", "call", "ret", "branch", "string", "simd", "memory", "other")
"""Fallback categories for forms the table lacks, in the order `category` tests them."""

_SIMD_GROUPS = frozenset(
    getattr(x86, name)
    for name in dir(x86)
    if name.startswith("X86_GRP_")
    and name[8:].startswith(("SSE", "SSSE", "AVX", "MMX", "3DNOW", "FMA", "F16C", "FPU", "AES", "PCLMUL", "SHA"))
)
_SYSCALL_MNEMONICS = frozenset({"syscall", "sysenter", "int"})
_REP_PREFIXES = frozenset({"rep", "repe", "repne", "repz", "repnz"})
_SEGMENT_REGS = frozenset({"cs", "ds", "es", "fs", "gs", "ss"})
_STACK_ENGINE_FORMS = ("push", "pop", "call", "ret")
_ALU_FORM = "add r64, r64"
"""The form whose ports are the integer ALUs: the stack engine takes one such micro-op off push/pop/call/ret."""
_REG_PREFIX_KINDS = (("xmm", "xmm"), ("ymm", "ymm"), ("zmm", "zmm"), ("st", "st"), ("mm", "mm"))


class CostModelError(Exception):
    """The cost table is missing or malformed."""


def _register_kind(insn: capstone.CsInsn, reg: int, size: int) -> str:
    name: str = insn.reg_name(reg) or ""
    if name in _SEGMENT_REGS:
        return "sreg"
    for prefix, kind in _REG_PREFIX_KINDS:
        if name.startswith(prefix):
            return kind
    if name.startswith(("cr", "dr")) and name[2:].isdigit():
        return name[:2]
    if name.startswith("k") and name[1:].isdigit():
        return "k"
    if name.startswith("bnd"):
        return "bnd"
    return f"r{size * 8}" if size else "r"


def form_key(insn: capstone.CsInsn) -> str:
    """A stable key for `insn`'s form: mnemonic (with prefixes such as ``rep``) and operand kinds.

    Operands become ``r8``/``r16``/``r32``/``r64`` (general registers by size), ``xmm``/``ymm``/
    ``zmm``/``mm``/``st``/``sreg``/``k`` (other register files), ``m<bits>`` (memory, by access
    size; ``m`` when capstone gives none), ``imm`` (immediates) and ``rel`` (direct branch and call
    targets). Registers, displacements, immediates and targets do not appear, so every instance of
    a form shares one cost. One exception: when the last two operands are the same register the
    key ends in `` (same)``, because LLVM models zero idioms such as ``xor eax, eax`` apart.

    Needs capstone's detail mode (``Cs.detail = True``).
    """
    kinds: list[str] = []
    operands = insn.operands
    is_branch = insn.group(capstone.CS_GRP_JUMP) or insn.group(capstone.CS_GRP_CALL)
    for op in operands:
        if op.type == x86.X86_OP_REG:
            kinds.append(_register_kind(insn, op.reg, op.size))
        elif op.type == x86.X86_OP_MEM:
            kinds.append(f"m{op.size * 8}" if op.size else "m")
        elif op.type == x86.X86_OP_IMM:
            kinds.append("rel" if is_branch else "imm")
        else:
            kinds.append("?")
    key = insn.mnemonic if not kinds else f"{insn.mnemonic} {', '.join(kinds)}"
    if (
        len(operands) >= 2
        and operands[-1].type == x86.X86_OP_REG
        and operands[-2].type == x86.X86_OP_REG
        and operands[-1].reg == operands[-2].reg
    ):
        key += " (same)"
    return key


def category(insn: capstone.CsInsn) -> str:
    """The fallback category of `insn` (one of `CATEGORIES`), for forms the table lacks."""
    if insn.mnemonic in _SYSCALL_MNEMONICS:
        return "syscall"
    if insn.group(capstone.CS_GRP_CALL):
        return "call"
    if insn.group(capstone.CS_GRP_RET) or insn.group(capstone.CS_GRP_IRET):
        return "ret"
    if insn.group(capstone.CS_GRP_JUMP):
        return "branch"
    if insn.mnemonic.split(" ", 1)[0] in _REP_PREFIXES:
        return "string"
    if any(group in _SIMD_GROUPS for group in insn.groups):
        return "simd"
    if insn.mnemonic != "lea" and any(op.type == x86.X86_OP_MEM for op in insn.operands):
        return "memory"
    return "other"


@dataclass(frozen=True)
class FormCost:
    """One row of the table: a form's cost and the llvm-mca figures it was computed from."""

    cost: int
    source: str
    """``mca`` (computed from llvm-mca's figures) or ``fixed`` (a documented constant)."""
    uops: int | None = None
    latency: int | None = None
    rthroughput: float | None = None
    ports: dict[str, float] | None = None
    """LLVM's average pressure on each execution port (or unit), in cycles per instruction."""


def port_groups(ports: dict[str, float]) -> tuple[tuple[tuple[str, ...], int], ...]:
    """LLVM's average pressure per port, regrouped into micro-ops and the ports each may use.

    LLVM spreads a micro-op evenly over the ports it may issue to, so ports with the same share
    (to 0.1 cycle) are one group: ``add`` gives p0, p1, p5, p6 a quarter each (one micro-op on four
    ports), a store p2/p3/p7 a third each and p4 one (one micro-op on three ports, one on p4).
    """
    return _port_groups(tuple(sorted(ports.items())))


@functools.lru_cache(maxsize=4096)
def _port_groups(ports: tuple[tuple[str, float], ...]) -> tuple[tuple[tuple[str, ...], int], ...]:
    groups: dict[float, list[str]] = {}
    loads = dict(ports)
    for port, load in ports:
        if load > 0:
            groups.setdefault(round(load, 1), []).append(port)
    return tuple(
        (tuple(names), round(sum(loads[name] for name in names) * MILLICYCLES_PER_CYCLE))
        for _, names in sorted(groups.items())
    )


def _machine(header: dict[str, Any]) -> Machine:
    raw = header.get("machine")
    if not isinstance(raw, dict):
        raise CostModelError("cost model: the table has no machine parameters")
    try:
        cycle = MILLICYCLES_PER_CYCLE
        return Machine(
            width=int(raw["width"]),
            window=int(raw["window_millicycles"]),
            load_latency=int(raw["load_latency"]) * cycle,
            store_forward_latency=int(raw["store_forward_latency"]) * cycle,
            mispredict_penalty=int(raw["mispredict_penalty"]) * cycle,
            taken_branch=int(raw["taken_branch_millicycles"]),
            jump=int(raw["jump_millicycles"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CostModelError(f"cost model: malformed machine parameters: {exc}") from None


class CostModel:
    """The cost table of one CPU: `cost` per instruction, `cost_of_bytes` per code range."""

    def __init__(
        self,
        name: str,
        frequency_hz: int,
        forms: dict[str, FormCost],
        defaults: dict[str, int],
        header: dict[str, Any] | None = None,
    ) -> None:
        missing = [c for c in CATEGORIES if c not in defaults]
        if missing:
            raise CostModelError(f"cost model {name}: no default cost for {', '.join(missing)}")
        for key, value in [*((k, f.cost) for k, f in forms.items()), *defaults.items()]:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CostModelError(f"cost model {name}: cost of {key!r} is {value!r}, not a positive integer")
        if isinstance(frequency_hz, bool) or not isinstance(frequency_hz, int) or frequency_hz <= 0:
            raise CostModelError(f"cost model {name}: frequency_hz {frequency_hz!r} is not a positive integer")
        self.name = name
        self.frequency_hz = frequency_hz
        """Nominal (base) clock of the modelled CPU: cycles per second of virtual time."""
        self.forms = forms
        self.defaults = defaults
        self.header = header or {}
        self._cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        self._cs.detail = True
        self._by_bytes: dict[bytes, int] = {}
        self._form_keys: dict[bytes, str] = {}
        self._timings: dict[tuple[int, bytes], InsnTiming] = {}
        self._cs_lite = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        """Finds instruction boundaries (no operand details: several times cheaper)."""
        self.machine = _machine(self.header)
        self.eliminates_moves = True
        """False: a register move costs its table latency, as in LLVM 14's Skylake model (only
        benches.kernels turns it off, to compare with llvm-mca on equal terms)."""

    @classmethod
    def load(cls, name: str = DEFAULT_MODEL) -> CostModel:
        """Read ``emu/data/costs-<name>.json`` (package data: works from an installed wheel)."""
        resource = resources.files("emu") / "data" / f"costs-{name}.json"
        try:
            text = resource.read_text(encoding="utf-8")
        except (OSError, ValueError) as exc:
            raise CostModelError(f"cost model {name}: cannot read {resource}: {exc}") from None
        try:
            return cls.from_json(json.loads(text))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise CostModelError(f"cost model {name}: malformed table: {exc}") from None

    @classmethod
    def from_json(cls, table: dict[str, Any]) -> CostModel:
        forms = {
            key: FormCost(
                cost=row["cost"],
                source=row["source"],
                uops=row.get("uops"),
                latency=row.get("latency"),
                rthroughput=row.get("rthroughput"),
                ports=row.get("ports"),
            )
            for key, row in table["forms"].items()
        }
        header = {k: v for k, v in table.items() if k != "forms"}
        return cls(table["cpu"], table["frequency_hz"], forms, dict(table["defaults"]), header)

    def row(self, insn: capstone.CsInsn) -> FormCost | None:
        """`insn`'s row: its form's, or for a same-register pair that is no zero idiom in the
        table (``imul rax, rax``), the row of the form with two registers."""
        raw = bytes(insn.bytes)
        key = self._form_keys.get(raw)
        if key is None:
            key = self._form_keys[raw] = form_key(insn)  # a function of the bytes alone
        found = self.forms.get(key)
        if found is None and key.endswith(" (same)"):
            found = self.forms.get(key[: -len(" (same)")])
        return found

    def lookup(self, insn: capstone.CsInsn) -> tuple[int, bool]:
        """(cost in millicycles, whether the table has `insn`'s form rather than a fallback)."""
        row = self.row(insn)
        if row is not None:
            return row.cost, True
        return self.defaults[category(insn)], False

    def cost(self, insn: capstone.CsInsn) -> int:
        """Millicycles that retiring `insn` adds to the virtual clock (at least 1).

        An encoding's cost never depends on where it sits (forms ignore addresses), so costs are
        cached by instruction bytes.
        """
        raw = bytes(insn.bytes)
        cost = self._by_bytes.get(raw)
        if cost is None:
            cost = self.lookup(insn)[0]
            self._by_bytes[raw] = cost
        return cost

    def cost_of_bytes(self, code: bytes, address: int) -> list[tuple[int, int, int]]:
        """(address, size, cost) of each instruction of a linear sweep of `code` loaded at `address`.

        The sweep stops at the first byte sequence capstone cannot decode.
        """
        return [(insn.address, insn.size, self.cost(insn)) for insn in self._cs.disasm(code, address)]

    def timing(self, insn: capstone.CsInsn) -> InsnTiming:
        """What `insn` does to the pipeline (emu/timing.py), from its form's row."""
        raw = bytes(insn.bytes)
        found = self._known_timing(raw, insn.address)
        if found is None:
            found = self._timing(insn)
            self._timings[(0, raw) if found.target == 0 else (insn.address, raw)] = found
        return found

    def _known_timing(self, raw: bytes, address: int) -> InsnTiming | None:
        """The timing of encoding `raw` at `address`, if worked out before. Direct branches carry
        their target (kept by address); anything else times the same wherever it sits (kept by its
        bytes alone)."""
        found = self._timings.get((0, raw))
        if found is not None:
            return found if found.address == address else dataclasses.replace(found, address=address)
        return self._timings.get((address, raw))

    def _timing(self, insn: capstone.CsInsn) -> InsnTiming:
        row = self.row(insn)
        width = self.machine.width
        cost = self.cost(insn)
        if row is None or row.source != "mca" or row.uops is None or row.ports is None:
            # Fixed costs and fallbacks: the cost is all front end, one cycle of latency.
            fused = max(1, -(-cost * width // MILLICYCLES_PER_CYCLE))
            return timing(insn, fused, (), 1)
        ports = dict(row.ports)
        fused = row.uops
        if insn.mnemonic in _STACK_ENGINE_FORMS:
            fused = max(1, fused - 1)
            alu = self.forms.get(_ALU_FORM)
            for port, load in (alu.ports or {}).items() if alu is not None else ():
                if port in ports:
                    ports[port] = max(0.0, ports[port] - load)
        found = timing(insn, fused, port_groups(ports), row.latency or 0)
        return found if self.eliminates_moves or not found.move else dataclasses.replace(found, move=False)

    def summarize(self, insns: Sequence[capstone.CsInsn]) -> BlockSummary:
        """The block model's summary of one translation block (emu/blockmodel.py)."""
        return summarize([self.timing(insn) for insn in insns], self.machine)

    def summarize_code(self, code: bytes, address: int) -> BlockSummary:
        """The summary of the block of `code` at `address`. An instruction is decoded in full only
        when no timing of its bytes (at its address, for a direct branch) is known yet."""
        timings: list[InsnTiming] = []
        offset = here = 0
        for here, size, _, _ in self._cs_lite.disasm_lite(code, address):
            raw = code[offset : offset + size]
            # Kept as first seen: of the addresses, the block model reads only the last one's.
            known = self._timings.get((0, raw)) or self._timings.get((here, raw))
            timings.append(known or self.timing(next(self._cs.disasm(raw, here, 1))))
            offset += size
        if timings and timings[-1].address != here:
            timings[-1] = dataclasses.replace(timings[-1], address=here)
        return summarize(timings, self.machine)

    def cycles(self, millicycles: int) -> float:
        """`millicycles` in cycles (for reports; the clock itself stays in integers)."""
        return millicycles / MILLICYCLES_PER_CYCLE
