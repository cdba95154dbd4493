"""`python -m emu dump FILE` and `python -m emu replay FILE`: reading and replaying crash dumps.

Exit codes: 0 done (a replay reproduced the crash exactly); 1 a replay that did not; 2 a dump
that cannot be used (truncated, corrupt, another version, not a dump, its images missing or
changed), as one line naming the file.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from emu.coredump import read_core, write_core
from emu.dumpfile import MAX_DUMP_FILE_BYTES, PAYLOAD_ERRORS, check_images, load_dump, malformed
from emu.dumpview import DumpImages, analyse, render
from emu.files import read_bounded
from emu.gdbcli import gdb_server
from emu.output import Outputs, input_identities, resolve_target
from emu.replay import ReplaySession, start_replay
from emu.world import DEFAULT_WORLD, InputError, load_world

EXIT_OK, EXIT_MISMATCH = 0, 1


def _count(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def add_dump_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    dump = commands.add_parser(
        "dump",
        help="read a crash dump: the fault, backtrace, code, registers, processes",
        epilog="exit codes: 0 read, 2 the dump cannot be used (one line says why)",
    )
    dump.add_argument("file", type=Path, metavar="FILE", help="a dump written by `run` (dumps/*.core)")
    dump.add_argument("--json", action="store_true", help="print the same as JSON")
    dump.add_argument("--core", metavar="OUT", help="also write an ELF core file for gdb to OUT")
    replay = commands.add_parser(
        "replay",
        help="re-run a dump's run, stop at its crash and check it is the same",
        epilog="exit codes: 0 reproduced exactly, 1 a difference (listed), 2 the dump cannot be used",
    )
    replay.add_argument(
        "file", type=Path, metavar="FILE", help="a dump written by `run`, or a replay file written by `fuzz`"
    )
    replay.add_argument(
        "--stop-before", type=_count, default=0, metavar="N", help="stop N instructions before the crash (exact)"
    )
    replay.add_argument(
        "--gdb",
        metavar="[HOST:]PORT",
        help="serve the GDB remote protocol while replaying a dump (loopback unless HOST is given; 0: any port)",
    )
    replay.add_argument("--world", default=DEFAULT_WORLD, metavar="MODULE", help=argparse.SUPPRESS)


def dump_command(args: argparse.Namespace) -> int:
    label = str(args.file)
    dump = load_dump(args.file)
    try:
        check_images(label, dump)
        report = analyse(label, dump)
        text = json.dumps(report, indent=1) + "\n" if args.json else render(report)
    except PAYLOAD_ERRORS as exc:
        raise malformed(label, exc) from None
    if args.core is not None:
        core = read_core(read_bounded(args.file, MAX_DUMP_FILE_BYTES))
        target = resolve_target("--core", args.core, input_identities([args.file]))
        with Outputs() as outputs:
            output = outputs.open(target)
            output.stream.write(write_core(list(core.notes), list(core.segments)))
            output.commit()
    print(text, end="")
    return EXIT_OK


def replay_command(args: argparse.Namespace) -> int:
    if is_fuzz_replay(args.file):
        if args.gdb is not None or args.stop_before:
            raise InputError(f"{args.file}: --gdb and --stop-before replay crash dumps, not fuzz replay files")
        return replay_fuzz_failure(args)
    server = gdb_server(args.gdb)
    exit_code = EXIT_MISMATCH
    try:
        session = start_replay(args.file, args.stop_before, server)
        try:
            text = describe_replay(str(args.file), session)
        except PAYLOAD_ERRORS as exc:
            raise malformed(str(args.file), exc) from None
        print(text, file=sys.stderr)
        exit_code = EXIT_OK if session.reproduced else EXIT_MISMATCH
        return exit_code
    finally:
        if server is not None:
            server.finished(exit_code)


def is_fuzz_replay(path: Path) -> bool:
    """Whether `path` holds a fuzz replay file (JSON) rather than a crash dump (an ELF core)."""
    try:
        with path.open("rb") as file:
            head = file.read(64).lstrip()
    except OSError:
        return False  # the dump reader says why
    return head.startswith(b"{")


def replay_fuzz_failure(args: argparse.Namespace) -> int:
    """Run a fuzz replay file's steps against the procd it names: 0 if its failure reproduces
    (the same key), 1 if not."""
    replay = getattr(load_world(args.world), "replay_failure", None)
    if not callable(replay):
        raise InputError(f"world {args.world!r} cannot replay fuzz failures")
    reproduced, text = replay(args.file)
    print(text, file=sys.stderr)
    return EXIT_OK if reproduced else EXIT_MISMATCH


def describe_replay(label: str, session: ReplaySession) -> str:
    """What the replay found, for people: one line, then the differences or the stop point."""
    dump = session.dump
    if session.mismatches:
        lines = [f"emu: replay: {dump.id} was NOT reproduced:"] + [f"  {m}" for m in session.mismatches]
        return "\n".join(lines)
    if not session.stop_before:
        icount = dump.payload["clock"]["icount"]
        return f"emu: replay: reproduced {dump.id} exactly: instruction {icount}, registers and memory digest equal"
    pid = int(dump.payload["process"]["pid"])
    paused = session.paused
    assert paused is not None
    registers = paused.registers(pid)
    head = f"emu: replay: stopped {session.stop_before} instructions before {dump.id}, at instruction {paused.icount}"
    if registers is None:
        return f"{head}; pid {pid} does not run yet"
    images = DumpImages(label, dump)
    symbol = images.image.symbolize(registers["rip"])
    line = images.debug.source_line(registers["rip"])
    where = f"{symbol[0]}+{symbol[1]:#x}" if symbol else f"{registers['rip']:#x}"
    regs = " ".join(f"{name}={value:#x}" for name, value in registers.items())
    return f"{head}: pid {pid} at {where}{f' ({line})' if line else ''}\n  {regs}"


DUMP_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"dump": dump_command, "replay": replay_command}
