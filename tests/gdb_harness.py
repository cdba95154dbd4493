"""Run `python -m emu run --gdb 0 ...` as a subprocess and talk to it: the port comes from its
stderr line, every wait has a deadline, and the subprocess is always ended (`with Emulator(...)`).

`RspClient` is a minimal raw GDB remote protocol client over a socket, for the stub's tests.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from emu.gdbstub.packets import EventKind, PacketReader, frame

ROOT = Path(__file__).resolve().parent.parent
WAIT_SECONDS = 60.0
_LISTENING = re.compile(rb"listening on ([0-9.]+):([0-9]+)")


class Emulator:
    """`python -m emu run --gdb 0 ARGS` writing its JSONL trace to `trace`."""

    def __init__(self, trace: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.trace = trace
        command = [
            sys.executable,
            "-m",
            "emu",
            "run",
            "--gdb",
            "0",
            "--no-dumps",
            "--format",
            "jsonl",
            "--out",
            str(trace),
            *args,
        ]
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environment
        )
        self._stderr = b""
        self.port = self._read_port()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, _t: type[BaseException] | None, _v: BaseException | None, _tb: TracebackType | None) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=WAIT_SECONDS)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def _read_port(self) -> int:
        """Wait (with a deadline, not a sleep) for the `listening on HOST:PORT` line."""
        assert self.proc.stderr is not None
        deadline = time.monotonic() + WAIT_SECONDS
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stderr, selectors.EVENT_READ)
            while (found := _LISTENING.search(self._stderr)) is None:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(timeout=left):
                    raise TimeoutError(f"no listening line; stderr so far: {self._stderr!r}")
                chunk = os.read(self.proc.stderr.fileno(), 4096)
                if not chunk:
                    raise RuntimeError(f"the emulator exited before listening: {self._stderr!r}")
                self._stderr += chunk
        assert found.group(1) == b"127.0.0.1", found.group(0)
        return int(found.group(2))

    def finish(self) -> tuple[int, str]:
        """Wait for the exit: (exit code, all of stderr)."""
        _out, err = self.proc.communicate(timeout=WAIT_SECONDS)
        return self.proc.returncode, (self._stderr + err).decode("utf-8", "replace")

    def events(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.trace.read_text().splitlines()]


class RspClient:
    """Raw packets over a socket: send a command, read its reply (acknowledging it)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_SECONDS)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as gdb does: no 40 ms waits
        self._reader = PacketReader()
        self._pending: list[bytes] = []

    def send(self, payload: bytes) -> None:
        self.sock.sendall(frame(payload))

    def reply(self) -> bytes:
        while not self._pending:
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError("the stub closed the connection")
            for event in self._reader.feed(data):
                if event.kind is EventKind.PACKET:
                    self._pending.append(event.payload)
                    self.sock.sendall(b"+")
        return self._pending.pop(0)

    def ask(self, payload: bytes) -> bytes:
        self.send(payload)
        return self.reply()

    def close(self) -> None:
        self.sock.close()


def plain_digest(tmp_path: Path, *args: str) -> str:
    """The trace digest of the same run without a debugger."""
    from emu.cli import main

    out = tmp_path / "plain.jsonl"
    main(["run", "--format", "jsonl", "--out", str(out), *args])
    return str(json.loads(out.read_text().splitlines()[-1])["digest"])
