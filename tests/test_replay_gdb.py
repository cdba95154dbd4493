"""`python -m emu replay DUMP --gdb 0`: gdb (batch mode) attaches to a replay, continues to the
recorded crash, sees the fault where the dump says it was, and detaches; the replay still checks
the crash against the dump (exit 0). Skipped where gdb is not installed, except under CI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from gdb_harness import ROOT, WAIT_SECONDS, Emulator

from emu.cli import main

GDB = shutil.which("gdb")
FAULTING = ROOT / "fixtures" / "elf" / "phase0-fault-kill.elf"

pytestmark = pytest.mark.skipif(GDB is None and not os.environ.get("CI"), reason="gdb is not installed")


class Replay(Emulator):
    """`python -m emu replay DUMP --gdb 0` (the harness reads its port and always ends it)."""

    def __init__(self, dump: Path) -> None:
        command = [sys.executable, "-m", "emu", "replay", str(dump), "--gdb", "0"]
        environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.trace = dump
        self.proc = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environment
        )
        self._stderr = b""
        self.port = self._read_port()


def test_gdb_follows_a_replay_to_the_recorded_crash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dumps = tmp_path / "dumps"
    assert main(["run", "--scenario", "phase0-fault-kill", "--trace", "none", "--dump-dir", str(dumps)]) == 0
    (dump,) = sorted(dumps.glob("*.core"))
    capsys.readouterr()
    with Replay(dump) as replay:
        assert GDB is not None, "CI installs gdb (.ci/run)"
        args = [GDB, "-batch", "-nx", "-ex", "set pagination off", "-ex", f"target remote 127.0.0.1:{replay.port}"]
        for command in ("continue", "info registers rip", "bt", "detach"):
            args += ["-ex", command]
        result = subprocess.run(
            [*args, str(FAULTING)], capture_output=True, text=True, timeout=WAIT_SECONDS, check=False
        )
        out = result.stdout + result.stderr
        code, err = replay.finish()
    assert "SIGSEGV" in out, out
    assert re.search(r"main \(\) at phase0-fault-kill/src/main.rs:\d+", out), out
    assert code == 0, err
    assert "reproduced" in err and "exactly" in err, err
