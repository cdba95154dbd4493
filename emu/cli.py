"""`python -m emu`: run an image or the default scenario and write its trace.

Exit codes: 0 the scenario completed as expected; 1 the guest failed (a fault, a refusal to
start, a halted bootstrap, the instruction limit); 2 usage or input error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emu.cpu import GuestCpu
from emu.elf import ElfImage
from emu.export import process_names
from emu.export.folded import write_folded
from emu.export.perfetto import write_perfetto
from emu.export.stats import render_stats
from emu.instrument import TraceProbes
from emu.profile import StackProfiler
from emu.trace import FORMATS, LEVELS, Trace, TraceWriter
from emu.world import DEFAULT_WORLD, InputError, Instrument, RunRequest, emit_summary, load_world

EXIT_OK = 0
EXIT_GUEST_FAILED = 1
EXIT_INPUT_ERROR = 2
DEFAULT_MAX_INSTRUCTIONS = 100_000_000


def _positive(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m emu", description="Run procd and its world under emulation.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="run the default scenario or an image and print its trace",
        description="Run IMAGE (default: rootd boots the committed procd, which spawns phase0-exit).",
        epilog="exit codes: 0 completed as expected, 1 guest failed, 2 usage or input error",
    )
    run.add_argument("image", nargs="?", type=Path, metavar="IMAGE", help="ELF image (default: the procd scenario)")
    run.add_argument(
        "--scenario",
        metavar="NAME|FILE",
        help="run a built-in scenario (see `python -m emu scenarios`) or a scenario file (.toml)",
    )
    run.add_argument("--format", choices=FORMATS, default="text", help="trace format (default: text)")
    run.add_argument("--out", type=Path, metavar="FILE", help="write the trace to FILE instead of stdout")
    run.add_argument(
        "--max-instructions",
        type=_positive,
        default=DEFAULT_MAX_INSTRUCTIONS,
        metavar="N",
        help=f"stop the guest after N instructions (default: {DEFAULT_MAX_INSTRUCTIONS})",
    )
    run.add_argument(
        "--trace",
        choices=list(LEVELS),
        default="syscall",
        help="how much to show: none (summary only), ipc, syscall (default), block, insn; counts never change",
    )
    run.add_argument("--trace-pid", type=_positive, metavar="PID", help="show only this process's events")
    run.add_argument("--trace-symbol", metavar="NAME", help="block/insn events inside this function only")
    run.add_argument(
        "--perfetto",
        type=Path,
        metavar="FILE",
        help="also write the run as a Perfetto timeline (Chrome trace JSON) to FILE",
    )
    run.add_argument(
        "--stats",
        action="store_true",
        help="after the run, print instructions and cycles per operation and per process "
        "(to stdout when the trace goes to --out, else to stderr)",
    )
    run.add_argument(
        "--folded",
        type=Path,
        metavar="FILE",
        help="profile cycles per guest call stack and write folded stacks to FILE (flame graphs)",
    )
    run.add_argument("--world", default=DEFAULT_WORLD, metavar="MODULE", help=argparse.SUPPRESS)
    listing = commands.add_parser("scenarios", help="list the built-in scenarios, one line each")
    listing.add_argument("--world", default=DEFAULT_WORLD, metavar="MODULE", help=argparse.SUPPRESS)
    return parser


def scenarios_command(args: argparse.Namespace) -> int:
    rows = load_world(args.world).scenarios()
    width = max((len(name) for name, _ in rows), default=0)
    for name, description in rows:
        print(f"{name:<{width}}  {description}")
    return EXIT_OK


def _check_folder(option: str, path: Path | None) -> None:
    if path is not None and not (path.parent if str(path.parent) else Path(".")).is_dir():
        raise InputError(f"{option} {path}: folder {path.parent} does not exist")


def _chain(*instruments: Instrument) -> Instrument:
    def instrument(cpu: GuestCpu, image: ElfImage, pid: int) -> None:
        for each in instruments:
            each(cpu, image, pid)

    return instrument


def run_command(args: argparse.Namespace) -> int:
    out: Path | None = args.out
    for option, path in (("--out", out), ("--perfetto", args.perfetto), ("--folded", args.folded)):
        _check_folder(option, path)
    world = load_world(args.world)
    writer = TraceWriter(args.format, out)
    trace = Trace(
        writer, level=LEVELS[args.trace], keep=bool(args.perfetto or args.stats or args.folded), pid=args.trace_pid
    )
    probes = TraceProbes(trace, args.trace_pid, args.trace_symbol, text=writer.wants_text)
    profiler = StackProfiler() if args.folded is not None else None
    instrument = probes if profiler is None else _chain(probes, profiler)
    try:
        outcome = world.run(RunRequest(args.image, args.max_instructions, instrument, args.scenario), trace)
        emit_summary(trace, outcome)
    except BaseException:
        writer.abort()
        raise
    writer.commit()
    names = process_names(trace.events)
    if args.perfetto is not None:
        write_perfetto(trace.events, args.perfetto, outcome.frequency_hz, names)
    if profiler is not None:
        write_folded(profiler, args.folded, names, trace.events)
    if args.stats:
        print(render_stats(trace.events, names), end="", file=sys.stdout if out is not None else sys.stderr)
    for warning in probes.filter_warnings(row["pid"] for row in outcome.processes):
        print(f"emu: warning: {warning}", file=sys.stderr)
    verdict = "ok" if outcome.ok else "guest failed"
    print(f"emu: {verdict} ({outcome.stop}): {outcome.detail}", file=sys.stderr)
    return EXIT_OK if outcome.ok else EXIT_GUEST_FAILED


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return scenarios_command(args) if args.command == "scenarios" else run_command(args)
    except InputError as exc:
        print(f"emu: error: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print("emu: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as command-line tools do.
        sys.stderr.close()
        return 1
