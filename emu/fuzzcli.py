"""`python -m emu fuzz`: the command line of a fuzzing campaign (the world runs it)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from emu.costmodel import CPU_NAMES, DEFAULT_MODEL
from emu.world import DEFAULT_WORLD, FuzzRequest, InputError, load_world

DEFAULT_SECONDS = 60.0
DEFAULT_DATABASE = ".procd-emu/fuzz-db"
DEFAULT_FAILURES = "fuzz-failures"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def add_fuzz_command(commands: Any) -> None:
    """The `fuzz` subcommand and its options."""
    fuzz = commands.add_parser(
        "fuzz",
        help="fuzz procd: a coverage-guided campaign checking every reply against the spec",
        description="Fuzz procd's IPC surface with Hypothesis, guided by the procd blocks each input reaches. "
        "Every distinct failure is shrunk and saved once as a replay file (see `python -m emu replay`).",
        epilog="exit codes: 0 no failure found, 1 failures found (their replay files are listed), "
        "2 usage or input error, 130 interrupted.",
    )
    fuzz.add_argument(
        "--time", type=_seconds, metavar="SECONDS", help=f"how long to fuzz (default: {DEFAULT_SECONDS:g})"
    )
    fuzz.add_argument("--examples", type=_positive, metavar="N", help="stop each job after N examples")
    fuzz.add_argument("--jobs", type=_positive, default=1, metavar="N", help="processes to fuzz with (default: 1)")
    fuzz.add_argument("--seed", type=int, default=0, metavar="S", help="the inputs' seed (job n uses S+n)")
    fuzz.add_argument("--procd", type=Path, metavar="IMAGE", help="fuzz this procd build (default: the committed one)")
    fuzz.add_argument(
        "--db",
        default=DEFAULT_DATABASE,
        metavar="DIR|redis://HOST:PORT",
        help=f"example database the jobs (and machines) share (default: {DEFAULT_DATABASE}); 'none' keeps nothing",
    )
    fuzz.add_argument(
        "--failures",
        type=Path,
        default=Path(DEFAULT_FAILURES),
        metavar="DIR",
        help=f"where replay files go (default: {DEFAULT_FAILURES}/)",
    )
    fuzz.add_argument(
        "--cpu",
        choices=CPU_NAMES,
        default=DEFAULT_MODEL,
        help=f"CPU model of the virtual clock (default: {DEFAULT_MODEL}); replay files record it",
    )
    fuzz.add_argument("--world", default=DEFAULT_WORLD, metavar="MODULE", help=argparse.SUPPRESS)


def fuzz_command(args: argparse.Namespace) -> int:
    world = load_world(args.world)
    fuzz = getattr(world, "fuzz", None)
    if not callable(fuzz):
        raise InputError(f"world {args.world!r} cannot fuzz (it has no fuzz() function)")
    seconds = args.time if args.time is not None else (None if args.examples is not None else DEFAULT_SECONDS)
    request = FuzzRequest(
        seconds=seconds,
        examples=args.examples,
        jobs=args.jobs,
        seed=args.seed,
        procd=args.procd,
        database=None if args.db == "none" else args.db,
        failures=args.failures,
        cpu=args.cpu,
    )
    result = fuzz(request)
    assert isinstance(result, int)
    return result
