"""gdb opens a crash dump (and the core `python -m emu dump --core` writes) and finds the same
backtrace and registers as `python -m emu dump`. gdb runs in batch mode; `.ci/run` installs it
where it is missing, so under CI a missing gdb fails instead of skipping."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from emu.cli import main
from emu.dumpfile import DUMP_SUFFIX, encode_dump, load_dump
from emu.registers import REGISTERS
from procd_model.images import fixtures_dir

FIXTURES = fixtures_dir()
GDB_SCRIPT = """
import gdb, json
gdb.execute("set backtrace past-main on")
gdb.execute("set backtrace past-entry on")
frames, frame = [], gdb.newest_frame()
while frame is not None:
    frames.append({"pc": int(frame.pc()), "name": frame.name(), "inline": frame.type() == gdb.INLINE_FRAME})
    frame = frame.older()
names = %s
registers = {n: int(gdb.parse_and_eval("$" + ("eflags" if n == "rflags" else n))) & (2**64 - 1) for n in names}
def half(i, n):
    return int(gdb.parse_and_eval(f"$xmm{i}.v2_int64[{n}]")) & (2**64 - 1)
vectors = {f"xmm{i}": half(i, 1) << 64 | half(i, 0) for i in range(16)}
vectors["mxcsr"] = int(gdb.parse_and_eval("$mxcsr"))
print("GDB-JSON " + json.dumps({"frames": frames, "registers": registers, "vectors": vectors}))
"""


def gdb() -> str:
    path = shutil.which("gdb")
    if path is None:
        if "CI" in os.environ:
            pytest.fail("gdb is missing (.ci/run installs it)")
        pytest.skip("gdb is not installed")
    return path


def gdb_view(image: Path, core: Path, folder: Path) -> dict[str, Any]:
    script = folder / "view.py"
    script.write_text(GDB_SCRIPT % json.dumps(list(REGISTERS)))
    result = subprocess.run(
        [gdb(), "-batch", "-nx", "-x", str(script), str(image), str(core)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    line = next((x for x in result.stdout.splitlines() if x.startswith("GDB-JSON ")), None)
    assert line is not None, result.stdout + result.stderr
    view: dict[str, Any] = json.loads(line.removeprefix("GDB-JSON "))
    return view


@pytest.mark.parametrize(
    ("image", "run"),
    [
        ("phase0-fault-kill.elf", ["--scenario", "phase0-fault-kill"]),
        ("phase0-deep-fault.elf", [str(FIXTURES / "phase0-deep-fault.elf")]),
    ],
)
def test_gdb_sees_the_same_backtrace_and_registers(
    image: str, run: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["run", *run, "--trace", "none", "--out", str(tmp_path / "trace"), "--dump-dir", str(tmp_path)])
    (dump,) = tmp_path.glob(f"*{DUMP_SUFFIX}")
    capsys.readouterr()
    core = tmp_path / "for-gdb.core"
    assert main(["dump", str(dump), "--json", "--core", str(core)]) == 0
    report = json.loads(capsys.readouterr().out)
    ours = report["backtrace"]
    for opened in (dump, core):
        view = gdb_view(FIXTURES / image, opened, tmp_path)
        assert view["registers"] == report["registers"], opened.name
        vectors = report["vector_registers"]
        assert view["vectors"] == {n: vectors[n] for n in view["vectors"]}, opened.name
        frames = [f for f in view["frames"] if not f["inline"]]
        assert [f["pc"] for f in frames] == [f["pc"] for f in ours], opened.name
        for theirs, mine in zip(frames, ours, strict=True):
            assert theirs["name"] is not None, theirs
            name = re.sub(r"::h[0-9a-f]{16}$", "", theirs["name"])  # gdb keeps a legacy symbol's hash
            assert mine["function"].endswith(name.split("::")[-1]), (theirs, mine)
        inlined = [f["name"] for f in view["frames"] if f["inline"]]
        assert inlined == [i["function"] for f in ours for i in f["inlined"]], opened.name


def test_gdb_reads_the_vector_registers_where_the_dump_puts_them(tmp_path: Path) -> None:
    """NT_FPREGSET's layout (FXSAVE): values written into a dump's payload come back from gdb."""
    main(["run", str(FIXTURES / "phase0-deep-fault.elf"), "--trace", "none", "--out", str(tmp_path / "t")])
    main(["run", str(FIXTURES / "phase0-deep-fault.elf"), "--trace", "none", "--dump-dir", str(tmp_path / "d")])
    (source,) = (tmp_path / "d").glob(f"*{DUMP_SUFFIX}")
    dump = load_dump(source)
    payload = json.loads(json.dumps(dump.payload))
    wanted = {f"xmm{i}": (0x0123_4567_89AB_CDEF << 64 | i << 8 | 0x5A) for i in range(16)} | {"mxcsr": 0x1F80}
    payload["vector_registers"].update(wanted)
    target = tmp_path / "vectors.core"
    target.write_bytes(encode_dump(payload, signal=11, segments=list(dump.segments)))
    assert gdb_view(FIXTURES / "phase0-deep-fault.elf", target, tmp_path)["vectors"] == wanted
