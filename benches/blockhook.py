"""The block hook's own cost: ns per block of emu_account_block, replayed in C over bench-compute.

    python3 -m benches.blockhook [--repeat K]

Runs bench-compute.elf once under the emulator (the clock learns every block's summary) while a
native recorder notes each block (address, size) that ran; then builds a small C driver around
emu/_accounting.c (with the system's C compiler) that resets the clock's run-time state and calls
emu_account_block over the recorded blocks in a loop, K times, and reports the best time per block
and the final instruction count and clock (which a pure speed change must leave unchanged).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPUTE = ROOT / "fixtures" / "elf" / "bench-compute.elf"

DRIVER = r"""
#include <stddef.h>
#include "%(source)s"

struct emu_recording {
    uint64_t *address;
    uint32_t *size;
    uint64_t count;
    uint64_t capacity;
};

void emu_record_block(void *uc, uint64_t address, uint32_t size, struct emu_recording *r)
{
    (void)uc;
    if (r->count < r->capacity) {
        r->address[r->count] = address;
        r->size[r->count] = size;
    }
    r->count++;
}

static int emu_never_stop(void *uc) { (void)uc; return 0; }

/* Replay the recorded blocks from a clean run-time state; the final (insns, cost). */
void emu_replay(struct emu_account *a, const struct emu_recording *r, uint64_t *insns, uint64_t *cost)
{
    a->emu_stop = emu_never_stop;
    a->insns = a->cost = 0;
    a->insn_limit = a->cost_limit = UINT64_MAX;
    emu_run_end(a);
    memset(&a->block_end, 0, sizeof(*a) - offsetof(struct emu_account, block_end));
    a->repeat = NULL;
    for (uint64_t i = 0; i < r->count; i++) {
        emu_account_block(NULL, r->address[i], r->size[i], a);
    }
    emu_run_end(a);
    *insns = a->insns;
    *cost = a->cost;
}
"""


class Recording(ctypes.Structure):
    _fields_ = [
        ("address", ctypes.POINTER(ctypes.c_uint64)),
        ("size", ctypes.POINTER(ctypes.c_uint32)),
        ("count", ctypes.c_uint64),
        ("capacity", ctypes.c_uint64),
    ]


def build_driver(folder: Path) -> ctypes.CDLL:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        sys.exit("benches.blockhook: no C compiler (cc) found")
    source = folder / "driver.c"
    source.write_text(DRIVER % {"source": ROOT / "emu" / "_accounting.c"})
    library = folder / "driver.so"
    include = sysconfig.get_paths()["include"]
    flags = (sysconfig.get_config_var("CFLAGS") or "-O3").split()  # as the extension is built
    subprocess.run([compiler, *flags, "-shared", "-fPIC", f"-I{include}", str(source), "-o", str(library)], check=True)
    return ctypes.CDLL(str(library))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cpu", default="skylake")
    args = parser.parse_args(argv)

    from unicorn import unicorn_const as uc_const

    from emu.elf import load_elf
    from emu.native_hook import add_native_hook
    from emu.trace import Trace
    from procd_model.cpu_model import cpu_model
    from procd_model.world import prepare_alone

    with tempfile.TemporaryDirectory(prefix="emu-blockhook-") as folder:
        driver = build_driver(Path(folder))
        capacity = 4 << 20
        addresses, sizes = (ctypes.c_uint64 * capacity)(), (ctypes.c_uint32 * capacity)()
        recording = Recording(addresses, sizes, 0, capacity)
        kernel, proc = prepare_alone(Trace(keep=False), load_elf(COMPUTE), cpu=cpu_model(args.cpu))
        cpu = proc.cpu
        assert cpu is not None
        add_native_hook(cpu._uc, uc_const.UC_HOOK_BLOCK, driver.emu_record_block, recording)
        cpu._uc.ctl_flush_tb()
        kernel.run(10**9)
        if recording.count > capacity:
            sys.exit(f"benches.blockhook: {recording.count} blocks, more than the {capacity} recorded")
        state = cpu._state
        ran = (int(state.insns), int(state.cost))
        blocks = int(recording.count)
        result: dict[str, object] = {"cpu": args.cpu, "blocks": blocks, "insns": ran[0], "cost": ran[1]}
        for loops in (True, False):
            cpu._acct.replay_loops(loops)
            insns, cost = ctypes.c_uint64(), ctypes.c_uint64()
            best = float("inf")
            replayed, replays = cpu._acct.replayed_blocks(), cpu._acct.replays()
            for _ in range(args.repeat):
                started = time.perf_counter()
                driver.emu_replay(ctypes.byref(state), ctypes.byref(recording), ctypes.byref(insns), ctypes.byref(cost))
                best = min(best, time.perf_counter() - started)
            if (insns.value, cost.value) != ran:
                sys.exit(f"benches.blockhook: the replay counted {(insns.value, cost.value)}, the run {ran}")
            if loops:
                result["ns_per_block"] = round(best / blocks * 1e9, 2)
                result["replayed"] = round((cpu._acct.replayed_blocks() - replayed) / args.repeat / blocks, 4)
                result["replays"] = (cpu._acct.replays() - replays) // args.repeat
            else:
                result["ns_per_block_timing_all"] = round(best / blocks * 1e9, 2)
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
