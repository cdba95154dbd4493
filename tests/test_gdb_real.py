"""Real gdb, in batch mode, against `python -m emu run --gdb 0`: break on a procd function in
spawn.rs, continue to it, step (stepi and next), read registers and memory, list the processes as
threads, ask `monitor` for the virtual time, detach; the run then ends as it would without gdb,
with the same digest. Skipped where gdb is not installed, except under CI (which installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from gdb_harness import ROOT, WAIT_SECONDS, Emulator, plain_digest

from emu.elf import Perm, load_elf

GDB = shutil.which("gdb")
PROCD_ELF = ROOT / "fixtures" / "elf" / "procd.elf"
PROCD = load_elf(PROCD_ELF)
LAUNCH = next(s for s in PROCD.symbols if s.name.endswith("::launch"))

pytestmark = pytest.mark.skipif(GDB is None and not os.environ.get("CI"), reason="gdb is not installed")


def gdb_batch(port: int, *commands: str) -> str:
    assert GDB is not None, "CI installs gdb (.ci/run)"
    args = [GDB, "-batch", "-nx", "-ex", "set pagination off", "-ex", f"target remote 127.0.0.1:{port}"]
    for command in commands:
        args += ["-ex", command]
    result = subprocess.run([*args, str(PROCD_ELF)], capture_output=True, text=True, timeout=WAIT_SECONDS, check=False)
    return result.stdout + result.stderr


def register(output: str, name: str) -> list[int]:
    return [int(value, 16) for value in re.findall(rf"^{name}\s+(0x[0-9a-f]+)", output, re.MULTILINE)]


def test_gdb_breaks_steps_reads_and_detaches(tmp_path: Path) -> None:
    code_bytes = next(
        s.data[LAUNCH.address - s.vaddr : LAUNCH.address - s.vaddr + 8]
        for s in PROCD.segments
        if s.vaddr <= LAUNCH.address < s.end
    )
    with Emulator(tmp_path / "t.jsonl", "--trace", "none") as emu:
        out = gdb_batch(
            emu.port,
            "break launch<procd::Syscalls>",
            "continue",
            "info registers rip",
            "stepi",
            "info registers rip",
            "next",
            "info registers rip rsp",
            f"x/8xb {LAUNCH.address:#x}",
            "info threads",
            "monitor",
            "bt",
            "detach",
        )
        code, err = emu.finish()
    assert "Breakpoint 1, launch<procd::Syscalls> () at procd/src/spawn.rs:" in out, out
    rips = register(out, "rip")
    assert len(rips) == 3, out
    assert all(LAUNCH.address <= rip < LAUNCH.address + LAUNCH.size for rip in rips), (rips, out)
    assert rips[0] < rips[1], "stepi moved on by one instruction"
    rsp = register(out, "rsp")
    writable = [s for s in PROCD.segments if s.perms & Perm.W]
    assert rsp and any(s.vaddr <= rsp[0] < s.end for s in writable), (rsp, out)  # procd's stack is in its image
    dumped = re.search(rf"{LAUNCH.address:#x} <launch<procd::Syscalls>>:((?:\s+0x[0-9a-f]{{2}}){{8}})", out)
    assert dumped is not None, out
    assert bytes(int(b, 16) for b in dumped.group(1).split()) == code_bytes
    assert re.search(r'Thread \d+ "procd"', out), out
    assert re.search(r"virtual time: \d+ cycles", out) and "guest" in out and "rootd" in out, out
    assert "in spawn_checked<procd::Syscalls>" in out, out  # the backtrace goes through its caller
    assert "[Inferior 1 (Remote target) detached]" in out, out
    assert code == 0, err
    assert emu.events()[-1]["digest"] == plain_digest(tmp_path, "--trace", "none")
