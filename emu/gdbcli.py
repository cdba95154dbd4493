"""`--gdb [HOST:]PORT` on the command line (`run` and `replay`): the listening gdb server."""

from __future__ import annotations

import sys

from emu.gdbstub.server import GdbServer, GdbServerError, parse_address
from emu.world import InputError


def gdb_server(address: str | None) -> GdbServer | None:
    """The gdb server `--gdb` asks for, listening (its address printed on stderr), or None."""
    if address is None:
        return None
    try:
        host, port = parse_address(address)
        server = GdbServer(host, port, log=lambda line: print(f"emu: {line}", file=sys.stderr, flush=True))
    except ValueError as exc:
        raise InputError(f"--gdb: {exc}") from None
    except GdbServerError as exc:
        raise InputError(str(exc)) from None
    print(f"emu: gdb: listening on {server.address[0]}:{server.address[1]}", file=sys.stderr, flush=True)
    return server
