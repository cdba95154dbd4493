"""Measure the loop kernels' core cycles on this machine, without performance counters.

    python3 -m benches.measure [--write] [--repeat R]

Builds a C harness (gcc) holding every kernel of benches/kernel_defs.py as an assembly function
``k(buffer, iterations)``, and times each with ``lfence; rdtsc; lfence`` at two iteration counts
(the difference cancels call and setup costs), taking the minimum over `repeat` rounds (the
machine is shared: the minimum is the least disturbed). The time-stamp counter ticks at a fixed
rate, not at the core clock, so each round also times ``cal_add``, 16 dependent one-cycle adds per
iteration: its ticks per iteration / 16 is the ticks per core cycle, and a kernel's cycles per
iteration are its ticks per iteration over that ratio.

The whole harness runs `runs` times and each kernel keeps its median run. Prints the figures;
``--write`` stores them in benches/data/measured-zen4.json with the CPU's
name, so that the suite (benches/kernels.py) and the Zen 4 model's data (tools/derive_costs.py
--cpu zen4) never depend on the host. Refuses to write on a CPU that is not AMD family 0x19.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from benches.kernel_defs import BUFFER_BYTES, CALIBRATION, SUITE, Kernel, loop_source

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benches" / "data" / "measured-zen4.json"
SMALL, LARGE = 20_000, 120_000
SAVED = ("rbx", "rbp", "r12", "r13", "r14", "r15")


def asm_source(kernels: tuple[Kernel, ...]) -> str:
    """Every kernel as a function ``k<i>(buffer, iterations)`` (System V: rdi, rsi)."""
    out = [".intel_syntax noprefix", ".text"]
    for i, kernel in enumerate(kernels):
        pop = "\n".join(f"pop {r}" for r in reversed(SAVED))
        out += [f".globl k{i}", ".p2align 6", f"k{i}:", *(f"push {r}" for r in SAVED), "mov r15, rsi"]
        out.append(loop_source(kernel, f"{pop}\nret"))
    out.append('.section .note.GNU-stack,"",@progbits')
    return "\n".join(out) + "\n"


HARNESS_MAIN = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef void (*kernel_fn)(void *, long);

static inline uint64_t ticks(void)
{
    uint32_t lo, hi;
    __asm__ volatile("lfence\n\trdtsc\n\tlfence" : "=a"(lo), "=d"(hi)::"memory");
    return ((uint64_t)hi << 32) | lo;
}

static uint64_t best(kernel_fn k, void *buffer, long n)
{
    uint64_t least = UINT64_MAX;
    for (int r = 0; r < 3; r++) {
        const uint64_t t0 = ticks();
        k(buffer, n);
        const uint64_t t = ticks() - t0;
        least = t < least ? t : least;
    }
    return least;
}

/* Ticks per iteration, without the call and setup: the difference of two iteration counts. */
static double per_iteration(kernel_fn k, void *buffer)
{
    return (double)(best(k, buffer, LARGE) - best(k, buffer, SMALL)) / (LARGE - SMALL);
}

int main(int argc, char **argv)
{
    const int repeat = argc > 1 ? atoi(argv[1]) : 15;
    void *buffer = aligned_alloc(4096, BUFFER_BYTES);
    for (size_t i = 0; i < BUFFER_BYTES; i++) {
        ((char *)buffer)[i] = 0;
    }
    printf("{");
    for (int i = 0; i < NKERNELS; i++) {
        /* Keep the round in which the kernel ran fastest (other tenants only ever slow it down),
         * converted with the ratio measured around it in that round: the faster of two runs of
         * the calibration chain, one before and one after. */
        double ticks_at = 1e300, ratio_at = 0;
        for (int r = 0; r < repeat; r++) {
            const double c = per_iteration(KERNELS[CAL], buffer);
            const double per = per_iteration(KERNELS[i], buffer);
            const double c2 = per_iteration(KERNELS[CAL], buffer);
            if (per < ticks_at) {
                ticks_at = per;
                ratio_at = (c < c2 ? c : c2) / 16.0;
            }
        }
        printf("%s\"%s\": [%.4f, %.4f]", i ? ", " : "", NAMES[i], ticks_at, ratio_at);
    }
    printf("}\n");
    free(buffer);
    return 0;
}
"""


def harness_source(kernels: tuple[Kernel, ...]) -> str:
    cal = next(i for i, k in enumerate(kernels) if k.name == "cal_add")
    parts = [
        "#define _ISOC11_SOURCE",
        f"#define BUFFER_BYTES {BUFFER_BYTES}",
        f"#define SMALL {SMALL}L",
        f"#define LARGE {LARGE}L",
        f"#define NKERNELS {len(kernels)}",
        f"#define CAL {cal}",
    ]
    parts += [f"extern void k{i}(void *buffer, long iterations);" for i in range(len(kernels))]
    names = ", ".join(f'"{k.name}"' for k in kernels)
    fns = ", ".join(f"k{i}" for i in range(len(kernels)))
    parts.append(
        HARNESS_MAIN.replace(
            "int main",
            f"static const char *NAMES[] = {{{names}}};\nstatic const kernel_fn KERNELS[] = {{{fns}}};\n\nint main",
        )
    )
    return "\n".join(parts) + "\n"


def cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return platform.processor() or "unknown"
    fields: dict[str, str] = dict(
        re.findall(r"^(cpu family|model|model name|vendor_id)\s*:\s*(.*)$", text, re.MULTILINE)
    )
    return (
        f"{fields.get('vendor_id', '?')} family {fields.get('cpu family', '?')} model {fields.get('model', '?')}: "
        + fields.get("model name", "?")
    )


def measure(repeat: int) -> dict[str, tuple[float, float]]:
    """(ticks per iteration, ticks per core cycle) of every kernel, calibration kernels included."""
    kernels = (*CALIBRATION, *SUITE)
    with tempfile.TemporaryDirectory(prefix="measure-") as tmp:
        src, asm, exe = Path(tmp) / "harness.c", Path(tmp) / "kernels.s", Path(tmp) / "harness"
        src.write_text(harness_source(kernels), encoding="utf-8")
        asm.write_text(asm_source(kernels), encoding="utf-8")
        build = subprocess.run(
            ["gcc", "-O2", "-std=c11", "-Wall", "-o", str(exe), str(src), str(asm)], capture_output=True, text=True
        )
        if build.returncode != 0:
            raise SystemExit(f"measure: gcc failed: {build.stderr.strip()[:400]}")
        run = subprocess.run([str(exe), str(repeat)], capture_output=True, text=True, check=True)
    raw: dict[str, list[float]] = json.loads(run.stdout)
    return {name: (values[0], values[1]) for name, values in raw.items()}


def median_of(runs: list[dict[str, tuple[float, float]]]) -> dict[str, tuple[float, float]]:
    """Per kernel, the run with the median cycles. Within a run the fastest round counts (other
    tenants only slow a kernel down); across runs the core clock, and so the ratio, moves, and the
    fewest cycles would favour a run whose ratio came out high: the median is robust to both."""
    out = {}
    for name in runs[0]:
        ordered = sorted((run[name] for run in runs), key=lambda pair: pair[0] / pair[1])
        out[name] = ordered[len(ordered) // 2]
    return out


def to_cycles(figures: dict[str, tuple[float, float]]) -> dict[str, dict[str, float]]:
    return {
        name: {"ticks": round(ticks, 4), "ticks_per_cycle": round(ratio, 4), "cycles": round(ticks / ratio, 2)}
        for name, (ticks, ratio) in figures.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=101, help="rounds per run (default 101)")
    parser.add_argument("--runs", type=int, default=5, help="runs of the harness, the median counts (default 5)")
    parser.add_argument("--write", action="store_true", help=f"store the figures in {OUT.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    cycles = to_cycles(median_of([measure(args.repeat) for _ in range(max(1, args.runs))]))
    for name, entry in cycles.items():
        ratio = entry["ticks_per_cycle"]
        print(
            f"{name:18} {entry['cycles']:8.2f} cycles/iteration  ({entry['ticks']:.3f} ticks, {ratio:.4f} ticks/cycle)"
        )
    if args.write:
        where = cpu_name()
        if "family 25" not in where:
            print(f"measure: this is {where}, not a Zen 4 (AMD family 0x19): not writing", file=sys.stderr)
            return 1
        calibration = {k.name for k in CALIBRATION}
        data = {
            "cpu": where,
            "method": "lfence;rdtsc around 20k and 120k iterations, fastest of the rounds of a run, median of the "
            "runs, ticks per core cycle from "
            "16 dependent adds per iteration timed in the same round (python -m benches.measure)",
            "repeat": args.repeat,
            "runs": args.runs,
            "calibration": {k: v for k, v in cycles.items() if k in calibration},
            "kernels": {k: v for k, v in cycles.items() if k not in calibration},
        }
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"measure: wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
