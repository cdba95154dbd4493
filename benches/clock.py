"""The virtual clock's cost, measured as ratios in one run.

    python3 -m benches.clock [--repeat K] [--requests N]

Each configuration runs in its own interpreter (the accounting mode is fixed at import), K times,
round-robin (each round starting one configuration later), timed in CPU time (time.process_time:
less disturbed by other tenants than wall time). Ratios between configurations are the median of
the rounds' ratios (a round's samples are seconds apart); rates use the best sample. Reported:
- compute: bench-compute.elf (16.5 M instructions: hashing, sorting, a matrix product) with the clock on
  (native block accounting, preemption quanta) against the same guest on an engine with no hooks
  but the syscall hook, and with the clock timing every block (no loop replay): the three in turn,
  5 rounds in each of 3 interpreters, each run on a fresh engine that translates every block; the
  median of all rounds' ratios counts (runs a fraction of a second apart see the same machine).
  The image runs once untimed first, so the clock finds its blocks' summaries learned: learning is
  paid once per block and process, and a fresh interpreter's first run, which pays it, is shown too
  (against the unhooked best). Also with the pure-Python fallback;
- request loop: procd booting and serving N requests it rejects, clock on against accounting off
  (both sides load and sweep the images; the clock's side also learns and times procd's blocks);
- tracing: the same request loop with `--trace syscall` written to a file against `--trace none`;
- insn: bench-compute with `--trace insn` (JSONL to a file and to /dev/null): instructions/s.
Targets: the clock costs at most 30% over no hooks on the compute guest (>= 0.77x; issue: a clock
worth the name cycle-accurate), and >= 0.8x on the request loop (issue: deterministic virtual
time); syscall tracing <= 20% over none; instruction tracing >= 2 M instructions/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
COMPUTE = ROOT / "fixtures" / "elf" / "bench-compute.elf"


# ------------------------------------------------------------------ workers (one per interpreter)


def _unhooked_compute() -> dict[str, float]:
    """bench-compute on a bare engine: only a syscall hook, which ends the run at EXIT."""
    import unicorn
    from unicorn import unicorn_const as uc_const
    from unicorn import x86_const

    from emu.elf import load_elf

    image = load_elf(COMPUTE)
    uc = unicorn.Uc(uc_const.UC_ARCH_X86, uc_const.UC_MODE_64)
    uc.ctl_set_tcg_buffer_size(8 << 20)
    for segment in image.segments:
        start = segment.vaddr & ~0xFFF
        uc.mem_map(start, ((segment.end + 0xFFF) & ~0xFFF) - start, int(segment.perms))
        uc.mem_write(segment.vaddr, segment.data)
    uc.mem_map(0x100000, 0x1000)
    uc.mem_map(0x110000, 0x1000)
    done = [False]

    def on_syscall(uc: unicorn.Uc, _user: object) -> None:
        if uc.reg_read(x86_const.UC_X86_REG_RAX) == 9:  # EXIT
            done[0] = True
            uc.emu_stop()

    uc.hook_add(uc_const.UC_HOOK_INSN, on_syscall, None, 1, 0, x86_const.UC_X86_INS_SYSCALL)
    uc.reg_write(x86_const.UC_X86_REG_RDI, 0x110000)
    started = time.process_time()
    uc.emu_start(image.entry, 0xFFFF_FFFF_FFFF_FFFF)
    seconds = time.process_time() - started
    assert done[0]
    return {"seconds": seconds}


def _world_run(image: Path | None, level: str, out: str | None, requests: int, loops: bool = True) -> dict[str, float]:
    from emu.elf import load_elf
    from emu.instrument import TraceProbes
    from emu.trace import LEVELS, Trace, TraceWriter
    from procd_model.abi import SPAWN_SERVICE_REQUEST, ProcdOp, Role
    from procd_model.client import Request, ask_all
    from procd_model.messages import Message
    from procd_model.world import prepare_alone

    writer = TraceWriter("jsonl", open(out, "wb")) if out else None  # noqa: SIM115
    trace = Trace(writer, level=LEVELS[level], keep=False)
    if image is not None:
        # Time the guest's execution only: creating the engine and sweeping the image are not
        # part of either side of the comparison.
        kernel, proc = prepare_alone(trace, load_elf(image), TraceProbes(trace))
        if not loops and proc.cpu is not None:
            proc.cpu.replay_loops(False)
        started = time.process_time()
        kernel.run(10**9)
        instructions = kernel.icount
    else:
        started = time.process_time()
        payload = SPAWN_SERVICE_REQUEST.pack(image_id=0, role=Role.TEST, flags=0)
        session = ask_all([Request(Message(ProcdOp.SPAWN_SERVICE, payload))] * requests, trace)
        instructions = session.outcome.instructions
    seconds = time.process_time() - started
    if writer:
        writer.flush()
    return {"seconds": seconds, "instructions": instructions}


def _paired_compute(rounds: int) -> dict[str, Any]:
    """bench-compute unhooked, with the clock on, and with the clock on timing every block, in
    turn in one process `rounds` times. Each round's ratios compare runs a fraction of a second
    apart (the machine's speed moves by a quarter within seconds); returned with the best times.
    The image runs once untimed first, so the clock's runs find its blocks' summaries learned."""
    _world_run(COMPUTE, "none", None, 0)
    bare, on, every = [], [], []
    instructions = 0.0
    for _ in range(rounds):
        bare.append(_unhooked_compute()["seconds"])
        run = _world_run(COMPUTE, "none", None, 0)
        on.append(run["seconds"])
        instructions = run["instructions"]
        every.append(_world_run(COMPUTE, "none", None, 0, loops=False)["seconds"])
    return {
        "on_ratios": [b / o for b, o in zip(bare, on, strict=True)],
        "every_ratios": [b / e for b, e in zip(bare, every, strict=True)],
        "bare": min(bare),
        "seconds": min(on),
        "instructions": instructions,
    }


def _worker(config: dict[str, str]) -> None:
    if config["what"] == "unhooked":
        print(json.dumps(_unhooked_compute()))
        return
    if config["what"] == "paired":
        print(json.dumps(_paired_compute(int(config["rounds"]))))
        return
    image = COMPUTE if config["what"] == "compute" else None
    level, out, requests = config["level"], config.get("out") or None, int(config["requests"])
    run = _world_run(image, level, out, requests)
    print(json.dumps(run))


# --------------------------------------------------------------------------------- driver


Config = tuple[dict[str, str], str]
"""(worker configuration, accounting mode: native, python or off)"""


def _sample(config: dict[str, str], accounting: str) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("EMU_ACCOUNTING", None)
    if accounting != "native":
        env["EMU_ACCOUNTING"] = accounting
    result = subprocess.run(
        [sys.executable, "-m", "benches.clock", "--worker", json.dumps(config)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    sample: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return sample


def measure_all(configs: dict[str, Config], repeat: int) -> dict[str, list[dict[str, float]]]:
    """`repeat` samples of each configuration, round-robin (each round starting one configuration
    later) so that a noisy spell on the machine hits every configuration alike. A round's samples
    are seconds apart, so ratios are taken round by round (`round_ratio`)."""
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
    names = list(configs)
    for round_ in range(repeat):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            config, accounting = configs[name]
            samples[name].append(_sample(config, accounting))
    return samples


def best(samples: list[dict[str, float]]) -> dict[str, float]:
    return min(samples, key=lambda sample: sample["seconds"])


def round_ratio(numerator: list[dict[str, float]], denominator: list[dict[str, float]]) -> float:
    """The median over rounds of numerator seconds / denominator seconds."""
    return statistics.median(n["seconds"] / d["seconds"] for n, d in zip(numerator, denominator, strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(json.loads(args.worker))
        return 0
    n = str(args.requests)
    with tempfile.TemporaryDirectory() as tmp:
        trace_file = str(Path(tmp) / "trace.jsonl")
        m = measure_all(
            {
                "cold": ({"what": "compute", "level": "none", "requests": n}, "native"),
                "loop_on": ({"what": "serve", "level": "none", "requests": n}, "native"),
                "loop_off": ({"what": "serve", "level": "none", "requests": n}, "off"),
                "traced": ({"what": "serve", "level": "syscall", "requests": n, "out": trace_file}, "native"),
                "insn_file": ({"what": "compute", "level": "insn", "requests": n, "out": trace_file}, "native"),
                "insn_null": ({"what": "compute", "level": "insn", "requests": n, "out": os.devnull}, "native"),
            },
            args.repeat,
        )
        fallback = best(
            measure_all({"fallback": ({"what": "compute", "level": "none", "requests": n}, "python")}, 1)["fallback"]
        )
        # Several interpreters: a process's layout (where its engines' code lands) can favour one
        # side for its whole life. The median over all their rounds counts.
        pairs = [_sample({"what": "paired", "rounds": "5"}, "native") for _ in range(3)]
        paired = {
            "on_ratio": statistics.median(r for p in pairs for r in p["on_ratios"]),
            "every_ratio": statistics.median(r for p in pairs for r in p["every_ratios"]),
            "bare": min(p["bare"] for p in pairs),
            "seconds": min(p["seconds"] for p in pairs),
            "instructions": pairs[0]["instructions"],
        }
    bare, insns = paired["bare"], paired["instructions"]
    rows: list[tuple[str, str, float]] = [
        ("compute: clock on / no hooks", f"{paired['on_ratio']:.2f}x", 0.77),
        ("compute: clock on, every block timed (no loop replay) / no hooks", f"{paired['every_ratio']:.2f}x", 0),
        (
            "compute: first run in a process (learns its blocks) / no hooks",
            f"{bare / best(m['cold'])['seconds']:.2f}x",
            0,
        ),
        ("compute: pure-Python fallback / no hooks", f"{bare / fallback['seconds']:.3f}x", 0),
        ("compute: clock on, M insn/s", f"{insns / paired['seconds'] / 1e6:.1f}", 0),
        ("request loop: clock on / accounting off", f"{round_ratio(m['loop_off'], m['loop_on']):.2f}x", 0.8),
        ("request loop: round trips/s (clock on)", f"{args.requests / best(m['loop_on'])['seconds']:.0f}", 0),
        ("request loop: --trace syscall cost over none", f"{round_ratio(m['traced'], m['loop_on']) - 1:+.0%}", 0),
        ("--trace insn to a file, M insn/s", f"{insns / best(m['insn_file'])['seconds'] / 1e6:.2f}", 2.0),
        ("--trace insn to /dev/null, M insn/s", f"{insns / best(m['insn_null'])['seconds'] / 1e6:.2f}", 2.0),
    ]
    width = max(len(name) for name, _, _ in rows)
    for name, value, target in rows:
        goal = f"  (target {target})" if target else ""
        print(f"{name:<{width}}  {value:>8}{goal}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
