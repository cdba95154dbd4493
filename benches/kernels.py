"""The cycle model against llvm-mca and real hardware on a suite of loop kernels.

    python3 -m benches.kernels [--cpu skylake|zen4] [--as-llvm]

For each kernel of benches/kernel_defs.py, reports cycles per iteration:

- **emulator**: the virtual clock of the chosen CPU model, the difference between runs of 2000 and
  1000 iterations over 1000 (start-up cancels out);
- **mca skl / mca zn3**: llvm-mca's simulated loop, Total Cycles / 1000 for the body and the loop
  branch with ``-iterations=1000`` and ``-mcpu=skylake`` / ``-mcpu=znver3`` (LLVM 14 has no znver4);
- **measured**: this machine's CPU (AMD Zen 4), from benches/data/measured-zen4.json, written by
  ``python3 -m benches.measure`` (the figures are committed: nothing here runs on the host CPU).

With ``--as-llvm``, two more columns: the emulator with the two effects LLVM 14's model leaves
out switched off (moves are not eliminated: each costs its table latency; a mispredicted branch
costs nothing, as in llvm-mca, which predicts every branch), and its error against the reference.

The error columns and their means (mean absolute percentage error) compare the emulator with the
reference of its model: llvm-mca's Skylake loop for ``--cpu skylake``, the measured cycles for
``--cpu zen4``; llvm-mca's Zen 3 model is scored against the measurements too, for scale.
Needs GNU as and objcopy (to assemble the kernels) and llvm-mca.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from benches.kernel_defs import BUFFER_BYTES, SUITE, Kernel, loop_source
from emu.accounting import CpuModel
from emu.cpu import GuestCpu, TrapKind
from emu.elf import Perm

ROOT = Path(__file__).resolve().parent.parent
MEASURED = ROOT / "benches" / "data" / "measured-zen4.json"
CODE, BUFFER, STACK = 0x400000, 0x600000, 0x7F0000
MCA_ITERATIONS = 1000
EXIT = "mov eax, 9\nsyscall"


class KernelError(Exception):
    """A tool is missing or failed: one line, exit status 2."""


def assemble(source: str) -> bytes:
    """Intel-syntax `source` as flat machine code (GNU as, then objcopy)."""
    for tool in ("as", "objcopy"):
        if shutil.which(tool) is None:
            raise KernelError(f"{tool} not found (install binutils)")
    with tempfile.TemporaryDirectory(prefix="kernels-") as tmp:
        src, obj, out = Path(tmp) / "k.s", Path(tmp) / "k.o", Path(tmp) / "k.bin"
        src.write_text(".intel_syntax noprefix\n" + source + "\n", encoding="utf-8")
        for args in (
            ["as", "--64", "-o", str(obj), str(src)],
            ["objcopy", "-O", "binary", "-j", ".text", str(obj), str(out)],
        ):
            done = subprocess.run(args, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise KernelError(f"{args[0]} failed: {done.stderr.strip()[:200]}")
        return out.read_bytes()


def emulated_cycles(kernel: Kernel, model: CpuModel, iterations: int) -> int:
    """Millicycles the emulator charges for `iterations` of `kernel` (setup and exit included)."""
    code = assemble(loop_source(kernel, EXIT))
    cpu = GuestCpu(model)
    cpu.map(CODE, (len(code) + 0xFFF) & ~0xFFF, Perm.R | Perm.X, code)
    cpu.map(BUFFER, BUFFER_BYTES, Perm.R | Perm.W)
    cpu.map(STACK, 0x10000, Perm.R | Perm.W)
    cpu.set_regs(("rip", "rdi", "r15", "rsp"), (CODE, BUFFER, iterations, STACK + 0x8000))
    trap = cpu.run(10**8)
    if trap.kind is not TrapKind.SYSCALL:
        raise KernelError(f"{kernel.name}: the emulator stopped with {trap.kind.value} at {trap.rip:#x}")
    cost = cpu.cost
    cpu.close()
    return cost


def emulator_per_iteration(kernel: Kernel, model: CpuModel) -> float:
    return (emulated_cycles(kernel, model, 2000) - emulated_cycles(kernel, model, 1000)) / 1000 / 1000


def mca_per_iteration(kernel: Kernel, mcpu: str) -> float:
    """llvm-mca's Total Cycles / iterations for the body and the loop branch."""
    llvm_mca = shutil.which("llvm-mca")
    if llvm_mca is None:
        raise KernelError("llvm-mca not found (install LLVM 14)")
    source = ".intel_syntax noprefix\n.Lt:\n" + kernel.mca_body() + "\ndec r15\njne .Lt\n"
    with tempfile.TemporaryDirectory(prefix="kernels-") as tmp:
        path = Path(tmp) / "k.s"
        path.write_text(source, encoding="utf-8")
        args = [llvm_mca, f"-mcpu={mcpu}", f"-iterations={MCA_ITERATIONS}", "--json", str(path)]
        done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise KernelError(f"llvm-mca failed on {kernel.name}: {done.stderr.strip()[:200]}")
    summary = json.loads(done.stdout)["CodeRegions"][0]["SummaryView"]
    return float(summary["TotalCycles"]) / float(summary["Iterations"])


@dataclass(frozen=True)
class Row:
    kernel: Kernel
    emulator: float
    mca_skylake: float
    mca_znver3: float
    measured: float | None
    as_llvm: float | None = None
    """The emulator with move elimination off and free mispredictions (``--as-llvm``)."""


def measured_cycles() -> dict[str, float]:
    """Committed cycles per iteration on a Zen 4 (benches/data/measured-zen4.json), by kernel."""
    try:
        data = json.loads(MEASURED.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {name: float(entry["cycles"]) for name, entry in data.get("kernels", {}).items()}


FREE_MISPREDICTION = -(1 << 50)
"""A refill penalty that holds nothing back: the next block starts as if the branch was predicted."""


def as_llvm(name: str) -> CpuModel:
    """CPU model `name` without the two effects LLVM 14's model leaves out: no move elimination,
    and a mispredicted branch costs nothing (the predictor still runs; its misses are free)."""
    from emu.costmodel import CostModel

    model = CostModel.load(name)
    model.eliminates_moves = False
    model.machine = replace(model.machine, mispredict_penalty=FREE_MISPREDICTION)
    return CpuModel(model.name, model.frequency_hz, model.cost, model.summarize_code, model.machine)


def collect(model: CpuModel, llvm_like: CpuModel | None = None) -> list[Row]:
    measured = measured_cycles()
    return [
        Row(
            kernel,
            emulator_per_iteration(kernel, model),
            mca_per_iteration(kernel, "skylake"),
            mca_per_iteration(kernel, "znver3"),
            measured.get(kernel.name),
            None if llvm_like is None else emulator_per_iteration(kernel, llvm_like),
        )
        for kernel in SUITE
    ]


def error(value: float, reference: float | None) -> float | None:
    return None if reference is None or reference == 0 else (value - reference) / reference


def mean_abs(errors: list[float | None]) -> float | None:
    known = [abs(e) for e in errors if e is not None]
    return sum(known) / len(known) if known else None


def reference(row: Row, cpu: str) -> float | None:
    return row.mca_skylake if cpu == "skylake" else row.measured


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:+.1f}%"


def render(rows: list[Row], cpu: str) -> str:
    ref_name = "mca skl" if cpu == "skylake" else "measured"
    llvm = any(row.as_llvm is not None for row in rows)
    extra_head = f" as LLVM 14 | its error vs {ref_name} |" if llvm else ""
    lines = [
        f"| kernel | what | emulator ({cpu}) | mca skl | mca zn3 | measured (Zen 4) | error vs {ref_name} "
        f"| mca zn3 vs measured |{extra_head}",
        "|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if llvm else ""),
    ]
    errors: list[float | None] = []
    zn3: list[float | None] = []
    llvm_errors: list[float | None] = []
    for row in rows:
        e = error(row.emulator, reference(row, cpu))
        z = error(row.mca_znver3, row.measured)
        errors.append(e)
        zn3.append(z)
        measured = "n/a" if row.measured is None else f"{row.measured:.2f}"
        extra = ""
        if llvm:
            le = None if row.as_llvm is None else error(row.as_llvm, reference(row, cpu))
            llvm_errors.append(le)
            extra = f" {'n/a' if row.as_llvm is None else f'{row.as_llvm:.2f}'} | {pct(le)} |"
        lines.append(
            f"| {row.kernel.name} | {row.kernel.what} | {row.emulator:.2f} | {row.mca_skylake:.2f} | "
            f"{row.mca_znver3:.2f} | {measured} | {pct(e)} | {pct(z)} |{extra}"
        )
    worst = max((abs(e) for e in errors if e is not None), default=0.0)
    extra = ""
    if llvm:
        llvm_worst = max((abs(e) for e in llvm_errors if e is not None), default=0.0)
        extra = f" | **{pct(mean_abs(llvm_errors))}** (worst {llvm_worst * 100:.1f}%) |"
    lines.append(
        f"| **mean abs. error** | | | | | | **{pct(mean_abs(errors))}** (worst {worst * 100:.1f}%) | "
        f"{pct(mean_abs(zn3))} |{extra}"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cpu", choices=("skylake", "zen4"), default="skylake")
    parser.add_argument("--as-llvm", action="store_true", help="also the model without what LLVM 14 leaves out")
    args = parser.parse_args(argv)
    from procd_model.cpu_model import cpu_model

    try:
        rows = collect(cpu_model(args.cpu), as_llvm(args.cpu) if args.as_llvm else None)
    except KernelError as exc:
        print(f"kernels: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(render(rows, args.cpu))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
