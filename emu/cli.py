"""`python -m emu`: run an image or the default scenario and write its trace.

Exit codes: 0 the scenario completed as expected (or halted as its `[expect] halts` asks); 1 the
guest failed (a fault, a refusal to start, an unexpected halt, the instruction limit); 2 usage or
input error; 130 interrupted by SIGINT, 143 by SIGTERM (128 + the signal number). `dump` and
`replay` (emu/dumpcli.py): 0 done, 1 a replay that differs from its dump, 2 a dump that cannot be
used.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from emu.costmodel import CPU_NAMES, DEFAULT_MODEL
from emu.cpu import GuestCpu
from emu.dumpcli import DUMP_COMMANDS, add_dump_commands
from emu.dumpfile import DumpError
from emu.elf import ElfImage
from emu.export import process_names
from emu.export.registry import Destination, Exporter, RunView, exporters
from emu.fuzzcli import add_fuzz_command, fuzz_command
from emu.gdbcli import gdb_server
from emu.gdbstub.server import GdbServer
from emu.instrument import TraceProbes
from emu.interrupt import Interrupted, handling_signals
from emu.output import STDOUT, OutputError, Outputs, Target, check_distinct, input_identities, resolve_target
from emu.trace import FORMATS, LEVELS, Trace, TraceWriter
from emu.world import (
    DEFAULT_WORLD,
    DumpRequest,
    InputError,
    Instrument,
    RunRequest,
    World,
    emit_summary,
    load_world,
)

EXIT_OK = 0
EXIT_GUEST_FAILED = 1
EXIT_INPUT_ERROR = 2
DEFAULT_MAX_INSTRUCTIONS = 100_000_000
DEFAULT_DUMP_DIR = Path("dumps")
PROGRAM = "procd-emu"
"""The program name in usage lines; `python -m emu` passes its own."""


def _positive(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def build_parser(prog: str = PROGRAM) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Run procd and its world under emulation.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="run the default scenario or an image and print its trace",
        description="Run IMAGE (default: rootd boots the committed procd, which spawns phase0-exit).",
        epilog="exit codes: 0 completed as expected, 1 guest failed, 2 usage or input error, "
        "130 interrupted (SIGINT), 143 terminated (SIGTERM). Outputs: FILE may be - (stdout), a FIFO or "
        "device (streamed to), or a regular file (replaced only when complete).",
    )
    run.add_argument("image", nargs="?", type=Path, metavar="IMAGE", help="ELF image (default: the procd scenario)")
    run.add_argument(
        "--scenario",
        metavar="NAME|FILE",
        help="run a built-in scenario (see `python -m emu scenarios`) or a scenario file (.toml)",
    )
    run.add_argument(
        "--procd",
        type=Path,
        metavar="ELF",
        help="run the scenario (default or --scenario) with this procd build instead of the committed one",
    )
    run.add_argument(
        "--gdb",
        metavar="[HOST:]PORT",
        help="serve the GDB remote protocol on PORT (127.0.0.1 unless HOST is given; 0 picks a free port) "
        "and wait for a client at the first guest instruction",
    )
    run.add_argument("--format", choices=FORMATS, default="text", help="trace format (default: text)")
    run.add_argument("--out", metavar="FILE", help="write the trace to FILE instead of stdout")
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
    for exporter in exporters():
        if exporter.destination is Destination.FILE:
            run.add_argument(exporter.option, metavar="FILE", help=exporter.help)
        else:
            run.add_argument(exporter.option, action="store_true", help=exporter.help)
    run.add_argument(
        "--cpu",
        choices=CPU_NAMES,
        default=DEFAULT_MODEL,
        help=f"CPU model of the virtual clock (default: {DEFAULT_MODEL})",
    )
    dumps = run.add_mutually_exclusive_group()
    dumps.add_argument(
        "--dump-dir",
        type=Path,
        metavar="DIR",
        help=f"write a dump of each guest crash to DIR (default: {DEFAULT_DUMP_DIR}/; see `dump`, `replay`)",
    )
    dumps.add_argument("--no-dumps", action="store_true", help="write no crash dumps")
    run.add_argument("--world", default=DEFAULT_WORLD, metavar="MODULE", help=argparse.SUPPRESS)
    add_dump_commands(commands)
    listing = commands.add_parser("scenarios", help="list the built-in scenarios, one line each")
    listing.add_argument("--world", default=DEFAULT_WORLD, metavar="MODULE", help=argparse.SUPPRESS)
    add_fuzz_command(commands)
    return parser


def scenarios_command(args: argparse.Namespace) -> int:
    rows = load_world(args.world).scenarios()
    width = max((len(name) for name, _ in rows), default=0)
    for name, description in rows:
        print(f"{name:<{width}}  {description}")
    return EXIT_OK


def _input_files(args: argparse.Namespace, world: World) -> list[Path]:
    """The files the run may read, which an output must never overwrite."""
    files = [path for path in (args.image, args.procd) if path is not None]
    if args.scenario is not None and os.path.exists(args.scenario):
        files.append(Path(args.scenario))
    return files + world.input_files(args.scenario)


def _output_targets(args: argparse.Namespace, world: World) -> dict[str, Target]:
    """Where each output goes, checked before the run (see emu/output.py); the trace is under "--out"."""
    inputs = input_identities(_input_files(args, world))
    if args.out is None:
        trace = resolve_target("--out", STDOUT, inputs, label="the trace (standard output)")
    else:
        trace = resolve_target("--out", args.out, inputs)
    targets = {"--out": trace}
    for exporter in _chosen(args, Destination.FILE):
        targets[exporter.option] = resolve_target(exporter.option, getattr(args, exporter.dest), inputs)
    check_distinct(list(targets.values()))
    return targets


def _chosen(args: argparse.Namespace, destination: Destination | None = None) -> list[Exporter]:
    """The exporters the command line asks for (of one destination, if given), in `--help` order."""
    return [
        exporter
        for exporter in exporters()
        if getattr(args, exporter.dest) not in (None, False)
        and (destination is None or exporter.destination is destination)
    ]


def _chain(*instruments: Instrument) -> Instrument:
    def instrument(cpu: GuestCpu, image: ElfImage, pid: int) -> None:
        for each in instruments:
            each(cpu, image, pid)

    return instrument


def _dump_request(args: argparse.Namespace) -> DumpRequest:
    if args.no_dumps:
        return DumpRequest()
    folder = args.dump_dir if args.dump_dir is not None else DEFAULT_DUMP_DIR
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--dump-dir {folder}: not a folder")
    return DumpRequest(folder)


def run_command(args: argparse.Namespace) -> int:
    world = load_world(args.world)
    targets = _output_targets(args, world)
    server = gdb_server(args.gdb)
    exit_code = EXIT_GUEST_FAILED
    try:
        exit_code = _run(args, world, targets, server)
        return exit_code
    finally:
        if server is not None:
            server.finished(exit_code)


def _run(args: argparse.Namespace, world: World, targets: dict[str, Target], server: GdbServer | None) -> int:
    chosen = _chosen(args)
    with Outputs() as outputs:
        trace_out = outputs.open(targets["--out"])
        files = {e.option: outputs.open(targets[e.option]) for e in chosen if e.destination is Destination.FILE}
        writer = TraceWriter(args.format, trace_out.stream)
        trace = Trace(writer, level=LEVELS[args.trace], keep=bool(chosen), pid=args.trace_pid)
        probes = TraceProbes(trace, args.trace_pid, args.trace_symbol, text=writer.wants_text)
        own = {e.option: e.make_probe() for e in chosen if e.make_probe is not None}
        instrument = _chain(probes, *own.values()) if own else probes
        request = RunRequest(
            args.image,
            args.max_instructions,
            instrument,
            args.scenario,
            procd=args.procd,
            debugger=server,
            dumps=_dump_request(args),
            cpu=args.cpu,
        )
        outcome = world.run(request, trace)
        emit_summary(trace, outcome)
        writer.flush()
        trace_out.commit()
        names = process_names(trace.events)

        def view(exporter: Exporter) -> RunView:
            return RunView(trace.events, outcome.frequency_hz, names, outcome.model, own.get(exporter.option))

        for exporter in chosen:
            if exporter.destination is Destination.FILE:
                files[exporter.option].stream.write(exporter.render(view(exporter)).encode())
                files[exporter.option].commit()
    on_stdout = any(target.is_stdout for target in targets.values())
    for exporter in chosen:
        if exporter.destination is Destination.REPORT:
            print(exporter.render(view(exporter)), end="", file=sys.stderr if on_stdout else sys.stdout)
    for path in outcome.dumps:
        print(f"emu: crash dump written: {path}", file=sys.stderr)
    for warning in probes.filter_warnings(row["pid"] for row in outcome.processes):
        print(f"emu: warning: {warning}", file=sys.stderr)
    verdict = "ok" if outcome.ok else "guest failed"
    print(f"emu: {verdict} ({outcome.stop}): {outcome.detail}", file=sys.stderr)
    return EXIT_OK if outcome.ok else EXIT_GUEST_FAILED


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": run_command,
    "scenarios": scenarios_command,
    "fuzz": fuzz_command,
    **DUMP_COMMANDS,
}
"""What each subcommand runs."""


def main(argv: list[str] | None = None, prog: str = PROGRAM) -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        with handling_signals():
            return COMMANDS[args.command](args)
    except (InputError, OutputError, DumpError) as exc:
        print(f"emu: error: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except Interrupted as exc:
        print(f"emu: interrupted by {exc.name}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        # Before the handlers are installed (or where they cannot be): Python's own SIGINT.
        print("emu: interrupted by SIGINT", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as command-line tools do.
        sys.stderr.close()
        return 1
