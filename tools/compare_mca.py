"""Compare the block model with llvm-mca on procd's hot path.

    python3 tools/compare_mca.py [--markdown] [--write-doc] [--cpu skylake] [--llvm-mca PATH]

Boots procd under rootd, then a client CALLs it with SPAWN_SERVICE requests: a valid one (image 2,
role TEST, flags 0) and a rejected one (image 0), twice each. Block probes on procd's engine record
every block procd executes from the return of its RECV syscall to its REPLY syscall (the hot path;
procd's own CALLs to kernel-control in between are part of it) and what the virtual clock charged
for it. The second pass of each request is compared (the hot path is hot: the branch predictor has
seen it once; the first pass is the warm-up):

- **executed path**: the virtual clock over the whole path against llvm-mca's simulation of the
  same dynamic instruction sequence as straight-line code (``-iterations=1``): both count
  dependencies, ports and dispatch, and llvm-mca predicts every branch;
- **per distinct block**: the block model's throughput bound (emu/blockmodel.py) against
  llvm-mca's *Block RThroughput*, and llvm-mca's Total Cycles / Iterations of the block as a loop
  (``-iterations=100``) for reference.

Instructions with a fixed cost (``syscall``, ``rep`` string instructions: llvm-mca cannot time
them) are left out of the llvm-mca side. ``--markdown`` prints the report as Markdown;
``--write-doc`` replaces the generated part of docs/cost-model.md.

Errors (llvm-mca missing, procd not reaching the hot path) are one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "tools"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from derive_costs import CPUS, FIXED_COSTS, DeriveError, decoder, find_llvm_mca, mca_asm, mca_version, run_mca  # noqa: E402
from unicorn import unicorn_const as uc_const  # noqa: E402
from unicorn import x86_const  # noqa: E402

from emu.costmodel import CostModel, category  # noqa: E402
from emu.elf import ElfImage, Perm  # noqa: E402
from emu.trace import Trace  # noqa: E402
from procd_model.abi import BADGE_ROOTD, SPAWN_SERVICE_REQUEST, CapType, ProcdOp, Rights, Role, Status, Syscall  # noqa: E402
from procd_model.actor import ActorProgram, SyscallRequest  # noqa: E402
from procd_model.caps import Capability, CapTable  # noqa: E402
from procd_model.messages import Message  # noqa: E402
from procd_model.rootd import Rootd  # noqa: E402
from procd_model.world import run_bootstrap  # noqa: E402

DOC = ROOT / "docs" / "cost-model.md"
DOC_BEGIN = "<!-- BEGIN tools/compare_mca.py --markdown -->"
DOC_END = "<!-- END tools/compare_mca.py --markdown -->"
LOOP_ITERATIONS = 100
MAX_INSTRUCTIONS = 10_000_000
TARGET_ERROR = 0.10

_VALID = SPAWN_SERVICE_REQUEST.pack(image_id=2, role=Role.TEST, flags=0)
_REJECTED = SPAWN_SERVICE_REQUEST.pack(image_id=0, role=Role.TEST, flags=0)
REQUESTS = (("warm-up valid", _VALID), ("warm-up rejected", _REJECTED), ("valid", _VALID), ("rejected", _REJECTED))
"""(label, SPAWN_SERVICE payload) of each request; the last `COMPARED` are compared."""
COMPARED = 2

_SYSCALL_BYTES = b"\x0f\x05"


class CompareError(Exception):
    """Reported as one line, exit status 2."""


# --------------------------------------------------------------------------- collection


@dataclass
class HotPath:
    label: str
    blocks: list[tuple[int, int]]
    """(address, size) of every block procd executed, in order."""
    charges: list[int] = field(default_factory=list)
    """Millicycles the virtual clock charged each of `blocks`."""
    status: Status | None = None
    reply_op: int | None = None


@dataclass
class _Recorder:
    recv_return: int = 0
    recording: bool = False
    paths: list[list[tuple[int, int]]] = field(default_factory=list)
    charges: list[list[int]] = field(default_factory=list)
    syscalls: list[int] = field(default_factory=list)

    def on_block(self, address: int, size: int, _icount: int, _clock: int, _insns: int, millicycles: int) -> None:
        if not self.recording and address == self.recv_return:
            self.recording = True
            self.paths.append([])
            self.charges.append([])
        if self.recording:
            self.paths[-1].append((address, size))
            self.charges[-1].append(millicycles)

    def on_syscall_site(self, uc: Any, _address: int, _size: int, _user: object) -> None:
        number = int(uc.reg_read(x86_const.UC_X86_REG_RAX))
        self.syscalls.append(number)
        if self.recording and number in (Syscall.REPLY, Syscall.REPLY_RECV):
            self.recording = False


def _client(slot: int, paths: list[HotPath]) -> ActorProgram:
    for path, (_label, payload) in zip(paths, REQUESTS, strict=True):
        result = yield SyscallRequest(Syscall.CALL, (slot,), Message(ProcdOp.SPAWN_SERVICE, payload))
        path.status = result.status
        if result.status is Status.OK:
            path.reply_op = result.message().op


def collect_hot_paths() -> tuple[ElfImage, list[HotPath]]:
    """Run procd on `REQUESTS` and return its image and the blocks of each request's hot path."""
    recorder = _Recorder()
    paths = [HotPath(label, []) for label, _ in REQUESTS]
    found: dict[str, ElfImage] = {}

    def on_ready(rootd: Rootd) -> None:
        kernel = rootd.kernel
        procd = kernel.procs[rootd.procd_pid]
        if procd.cpu is None or procd.image is None:
            raise CompareError("procd is not a guest process")
        found["image"] = procd.image
        cpu = procd.cpu
        rip = cpu.reg("rip")
        if cpu.read(rip - 2, 2) != _SYSCALL_BYTES:
            raise CompareError(f"procd is not blocked in a syscall when READY (rip {rip:#x})")
        recorder.recv_return = rip
        uc = cpu._uc
        cpu.add_block_probe(recorder.on_block)
        # GuestCpu's syscall hook stops the engine, so later UC_HOOK_INSN hooks never run: read
        # the syscall number with a code hook on each `syscall` site of procd's image instead.
        for segment in procd.image.segments:
            if segment.perms & Perm.X:
                for address, size, mnemonic, _ in decoder().disasm_lite(segment.data, segment.vaddr):
                    if mnemonic == "syscall":
                        uc.hook_add(uc_const.UC_HOOK_CODE, recorder.on_syscall_site, None, address, address + size - 1)
        uc.ctl_flush_tb()
        caps = CapTable()
        slot = caps.install(Capability(CapType.ENDPOINT, procd.endpoint, Rights.SEND | Rights.GRANT, BADGE_ROOTD))
        if slot is None:
            raise CompareError("no free capability slot for the client")
        kernel.spawn_actor("client", _client(slot, paths), caps)

    outcome = run_bootstrap(Trace(), MAX_INSTRUCTIONS, manifest=(), on_ready=on_ready)
    if "image" not in found:
        raise CompareError(f"procd never signalled READY: {outcome.stop}: {outcome.detail}")
    if len(recorder.paths) < len(REQUESTS):
        raise CompareError(f"recorded {len(recorder.paths)} hot paths for {len(REQUESTS)} requests")
    for path, blocks, charges in zip(paths, recorder.paths, recorder.charges, strict=False):
        path.blocks = blocks
        path.charges = charges
        if path.status is not Status.OK:
            raise CompareError(f"{path.label} request: CALL to procd ended with {path.status}")
    if Syscall.RECV not in recorder.syscalls:
        raise CompareError("procd made no RECV after READY: the hot path's start is not a RECV return")
    return found["image"], paths


# --------------------------------------------------------------------------- comparison


@dataclass
class BlockRow:
    address: int
    size: int
    symbol: str
    instructions: int
    runs: int
    model: float
    """Cycles: the block model's throughput bound for the block."""
    clock: float = 0.0
    """Cycles: what the virtual clock charged the block on the path, on average."""
    fused: int = 0
    """Fused micro-ops of the block."""
    mca: float | None = None
    """llvm-mca Block RThroughput of the compared instructions (None: nothing left to compare)."""
    loop: float | None = None
    """llvm-mca Total Cycles / Iterations of the same loop."""
    excluded: tuple[str, ...] = ()

    @property
    def error(self) -> float | None:
        if self.mca is None or self.mca == 0:
            return None
        return (self.model - self.mca) / self.mca


@dataclass
class Report:
    cpu: str
    mca_version: str
    paths: list[HotPath]
    rows: list[BlockRow]
    traces: list[int]
    """llvm-mca's Total Cycles for each path's instruction sequence."""
    width: int
    """The model's rename width (micro-ops per cycle)."""


_RUST_ESCAPES = {"LT": "<", "GT": ">", "RF": "&", "BP": "*", "C": ",", "SP": "@"}


def _unescape(part: str) -> str:
    if part.startswith("_$"):
        part = part[1:]
    part = re.sub(r"\$u([0-9a-f]{2})\$", lambda m: chr(int(m.group(1), 16)), part)
    part = re.sub(r"\$([A-Z]+)\$", lambda m: _RUST_ESCAPES.get(m.group(1), m.group(0)), part)
    return part.replace("..", "::")


def demangle(name: str) -> str:
    """Rust's legacy mangling (_ZN...E) to a path without the hash; other names unchanged."""
    if not (name.startswith("_ZN") and name.endswith("E")):
        return name
    parts: list[str] = []
    i = 3
    while i < len(name) - 1:
        j = i
        while j < len(name) and name[j].isdigit():
            j += 1
        if j == i:
            return name
        length = int(name[i:j])
        parts.append(name[j : j + length])
        i = j + length
    if parts and re.fullmatch(r"h[0-9a-f]{16}", parts[-1]):
        parts.pop()
    return "::".join(_unescape(part) for part in parts)


def _symbol(image: ElfImage, address: int) -> str:
    found = image.symbolize(address)
    if found is None:
        return "?"
    name, offset = found
    return f"{demangle(name)}+{offset:#x}"


def _code(image: ElfImage, address: int, size: int) -> bytes:
    for segment in image.segments:
        if segment.vaddr <= address and address + size <= segment.vaddr + len(segment.data):
            start = address - segment.vaddr
            return segment.data[start : start + size]
    raise CompareError(f"block {address:#x}+{size} is outside procd's file-backed segments")


def _instructions(image: ElfImage, address: int, size: int) -> list[Any]:
    return list(decoder().disasm(_code(image, address, size), address))


def _trace_cycles(image: ElfImage, path: HotPath, llvm_mca: str, mcpu: str) -> int:
    """llvm-mca's Total Cycles for the path's instructions as one straight-line sequence."""
    lines = [
        mca_asm(insn)
        for address, size in path.blocks
        for insn in _instructions(image, address, size)
        if category(insn) not in FIXED_COSTS
    ]
    results, rejected = run_mca(llvm_mca, mcpu, [("path", lines)], 1)
    if rejected or len(results) != 1:
        raise CompareError(f"llvm-mca could not simulate the {path.label} path")
    return results[0].total_cycles


def compare(model: CostModel, llvm_mca: str, mcpu: str) -> Report:
    image, all_paths = collect_hot_paths()
    paths = all_paths[-COMPARED:]
    runs = Counter(block for path in paths for block in path.blocks)
    charged: Counter[tuple[int, int]] = Counter()
    for path in paths:
        for block, millicycles in zip(path.blocks, path.charges, strict=True):
            charged[block] += millicycles
    rows: list[BlockRow] = []
    regions: list[tuple[str, Sequence[str]]] = []
    region_rows: list[BlockRow] = []
    for address, size in sorted(runs):
        insns = _instructions(image, address, size)
        kept = [insn for insn in insns if category(insn) not in FIXED_COSTS]
        summary = model.summarize(insns)
        row = BlockRow(
            address=address,
            size=size,
            symbol=_symbol(image, address),
            instructions=len(insns),
            runs=runs[(address, size)],
            model=summary.through / 1000,
            clock=charged[(address, size)] / runs[(address, size)] / 1000,
            fused=sum(model.timing(insn).fused for insn in insns),
            excluded=tuple(insn.mnemonic for insn in insns if category(insn) in FIXED_COSTS),
        )
        rows.append(row)
        if kept:
            regions.append((f"b{address:x}_{size}", [mca_asm(insn) for insn in kept]))
            region_rows.append(row)
    try:
        results, rejected = run_mca(llvm_mca, mcpu, regions, LOOP_ITERATIONS)
        traces = [_trace_cycles(image, path, llvm_mca, mcpu) for path in paths]
    except DeriveError as exc:
        raise CompareError(str(exc)) from None
    if rejected:
        r, i, what = rejected[0]
        raise CompareError(f"llvm-mca rejected {regions[r][1][i]!r} ({what})")
    if len(results) != len(region_rows):
        raise CompareError(f"llvm-mca analysed {len(results)} regions for {len(region_rows)} blocks")
    for row, result in zip(region_rows, results, strict=True):
        row.mca = result.block_rthroughput
        row.loop = result.total_cycles / result.iterations
    return Report(model.name, mca_version(llvm_mca), paths, rows, traces, model.machine.width)


# --------------------------------------------------------------------------- reporting


@dataclass(frozen=True)
class Summary:
    blocks: int
    compared: int
    within_target: int
    within_25: int
    worst: BlockRow
    median_abs_error: float
    unique_model: float
    unique_mca: float
    executed_clock: float
    executed_mca: float
    executed_blocks: int
    widest: float
    """The most fused micro-ops per cycle any block's throughput bound allows."""


def summarize(report: Report) -> Summary:
    compared = [row for row in report.rows if row.error is not None]
    if not compared:
        raise CompareError("no block could be compared")
    errors = [abs(row.error) for row in compared if row.error is not None]
    worst = max(compared, key=lambda row: abs(row.error or 0.0))
    return Summary(
        blocks=len(report.rows),
        compared=len(compared),
        within_target=sum(e <= TARGET_ERROR + 1e-9 for e in errors),
        within_25=sum(e <= 0.25 + 1e-9 for e in errors),
        worst=worst,
        median_abs_error=statistics.median(errors),
        unique_model=sum(row.model for row in compared),
        unique_mca=sum(row.mca or 0.0 for row in compared),
        executed_clock=sum(sum(path.charges) for path in report.paths) / 1000,
        executed_mca=float(sum(report.traces)),
        executed_blocks=sum(len(path.blocks) for path in report.paths),
        widest=max(row.fused / row.model for row in report.rows if row.model),
    )


def _pct(value: float) -> str:
    return f"{value * 100:+.1f}%"


def _ratio(model: float, reference: float) -> float:
    return (model - reference) / reference if reference else 0.0


def markdown(report: Report) -> str:
    s = summarize(report)
    lines = [
        f"Generated by `python tools/compare_mca.py --markdown` ({report.mca_version}, `-mcpu={report.cpu}`).",
        "",
        "| executed hot path (second pass) | blocks | virtual clock | llvm-mca, straight line | error |",
        "|---|---:|---:|---:|---:|",
    ]
    for path, trace in zip(report.paths, report.traces, strict=True):
        clock = sum(path.charges) / 1000
        lines.append(
            f"| {path.label} request | {len(path.blocks)} | {clock:.2f} | {trace} | {_pct(_ratio(clock, trace))} |"
        )
    lines += [
        f"| **both** | {s.executed_blocks} | {s.executed_clock:.2f} | {s.executed_mca:.0f} | "
        f"**{_pct(_ratio(s.executed_clock, s.executed_mca))}** |",
        "",
        f"Per distinct block ({s.compared} compared of {s.blocks}), the model's throughput bound against llvm-mca's "
        f"Block RThroughput: sums {s.unique_model:.2f} vs {s.unique_mca:.2f} cycles "
        f"({_pct(_ratio(s.unique_model, s.unique_mca))}); within {TARGET_ERROR:.0%}: {s.within_target}; "
        f"within 25%: {s.within_25}; median |error| {s.median_abs_error:.1%}; worst `{s.worst.address:#x}` "
        f"({s.worst.symbol}) {_pct(s.worst.error or 0.0)}. Widest block: {s.widest:.2f} fused micro-ops per cycle "
        f"(the rename width is {report.width}). *clock* is what the virtual clock charged the block on average "
        "(with waits for its inputs and branch refills); *mca loop* is llvm-mca's Total Cycles / Iterations of "
        f"the block run as a loop (`-iterations={LOOP_ITERATIONS}`).",
        "",
        "| block | symbol+offset | insns | runs | model | mca BRT | error | clock | mca loop |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report.rows:
        note = f" (excl. {', '.join(row.excluded)})" if row.excluded else ""
        mca = f"{row.mca:.3f}" if row.mca is not None else "n/a"
        loop = f"{row.loop:.2f}" if row.loop is not None else "n/a"
        error = _pct(row.error) if row.error is not None else "n/a"
        lines.append(
            f"| `{row.address:#x}` | `{row.symbol}`{note} | {row.instructions} | {row.runs} | {row.model:.3f} | "
            f"{mca} | {error} | {row.clock:.2f} | {loop} |"
        )
    return "\n".join(lines) + "\n"


def plain(report: Report) -> str:
    s = summarize(report)
    lines = [f"{'block':>10} {'insns':>5} {'runs':>4} {'model':>7} {'mca':>7} {'error':>8} {'clock':>7}  symbol"]
    for row in report.rows:
        mca = f"{row.mca:7.3f}" if row.mca is not None else f"{'n/a':>7}"
        error = f"{_pct(row.error):>8}" if row.error is not None else f"{'n/a':>8}"
        lines.append(
            f"{row.address:#10x} {row.instructions:5} {row.runs:4} {row.model:7.3f} {mca} {error} {row.clock:7.2f}  "
            f"{row.symbol}"
        )
    lines += [
        "",
        f"executed hot path: clock {s.executed_clock:.2f} vs llvm-mca {s.executed_mca:.0f} cycles "
        f"({_pct(_ratio(s.executed_clock, s.executed_mca))}); widest block {s.widest:.2f} uops/cycle",
        f"throughput bounds vs Block RThroughput: {_pct(_ratio(s.unique_model, s.unique_mca))}; within "
        f"{TARGET_ERROR:.0%}: {s.within_target}/{s.compared}; worst {s.worst.address:#x} {_pct(s.worst.error or 0.0)}",
    ]
    return "\n".join(lines) + "\n"


def write_doc(text: str, doc: Path = DOC) -> None:
    try:
        current = doc.read_text(encoding="utf-8")
    except OSError as exc:
        raise CompareError(f"{doc}: cannot read: {exc.strerror or exc}") from None
    begin, end = current.find(DOC_BEGIN), current.find(DOC_END)
    if begin < 0 or end < begin:
        raise CompareError(f"{doc}: no {DOC_BEGIN} ... {DOC_END} section")
    updated = current[: begin + len(DOC_BEGIN)] + "\n" + text + current[end:]
    try:
        doc.write_text(updated, encoding="utf-8")
    except OSError as exc:
        raise CompareError(f"{doc}: cannot write: {exc.strerror or exc}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", choices=sorted(CPUS), default="skylake", help="CPU model (default skylake)")
    parser.add_argument("--llvm-mca", help="llvm-mca executable (default: the one on PATH)")
    parser.add_argument("--markdown", action="store_true", help="print the report as Markdown")
    parser.add_argument("--write-doc", action="store_true", help=f"replace the generated section of {DOC.name}")
    args = parser.parse_args(argv)
    try:
        model = CostModel.load(args.cpu)
        report = compare(model, find_llvm_mca(args.llvm_mca), CPUS[args.cpu].mcpu)
        if args.write_doc:
            write_doc(markdown(report))
        else:
            sys.stdout.write(markdown(report) if args.markdown else plain(report))
    except (CompareError, DeriveError) as exc:
        print(f"compare_mca: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
