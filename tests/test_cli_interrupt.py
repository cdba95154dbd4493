"""SIGINT and SIGTERM stop a running `python -m emu run` promptly, with one line and no temporary file.

Each test starts a real process on a guest that never ends, waits until the trace demonstrably
grows (so the guest is running, with its hooks), sends the signal, and waits for the exit: a
timeout is a failure. The signal lands wherever the process happens to be, often inside a hook
called by Unicorn through ctypes, where a KeyboardInterrupt used to be lost.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from elfcraft import code_image

from emu.interrupt import Interrupted, deferred, engine_running, handling_signals

ROOT = Path(__file__).resolve().parent.parent
YIELD_FOR_EVER = code_image(bytes.fromhex("b8080000000f05ebf7"))  # L: mov eax, YIELD; syscall; jmp L
STARTED_BYTES = 64 << 10
"""Trace bytes written before the signal is sent: the guest has run many times round its loop."""
START_TIMEOUT = 120.0
EXIT_TIMEOUT = 60.0


def started(folder: Path, proc: subprocess.Popen[bytes]) -> bool:
    """Whether the trace's temporary file has grown past STARTED_BYTES (polled; not a timing check)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.stat().st_size >= STARTED_BYTES for p in folder.iterdir() if p.name.startswith(".trace.")):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize(
    "mode",
    [["--folded", "{out}/stacks.folded"], ["--trace", "block"], ["--trace", "insn"]],
    ids=["folded", "block", "insn"],
)
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["INT", "TERM"])
def test_a_signal_stops_the_run(mode: list[str], signum: int, code: int, tmp_path: Path) -> None:
    image = tmp_path / "yield.elf"
    image.write_bytes(YIELD_FOR_EVER)
    out = tmp_path / "out"
    out.mkdir()
    (out / "trace").write_text("before\n")
    args = [a.format(out=out) for a in mode]
    command = [sys.executable, "-m", "emu", "run", str(image), *args, "--out", str(out / "trace"), "--no-dumps"]
    command += ["--max-instructions", str(2**62)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert started(out, proc), "the run did not start"
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=EXIT_TIMEOUT)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == code, err.decode()
    assert err.decode() == f"emu: interrupted by {signal.Signals(signum).name}\n"
    assert [p.name for p in out.iterdir()] == ["trace"], "no new output and no temporary file may remain"
    assert (out / "trace").read_text() == "before\n"


def test_a_signal_during_an_engine_run_stops_it_and_raises_after() -> None:
    """Inside an engine run the handler only records the signal and asks the engine to stop."""
    stops: list[str] = []
    with pytest.raises(Interrupted) as caught, handling_signals():
        with engine_running(lambda: stops.append("stop")):
            signal.raise_signal(signal.SIGINT)
            assert stops == ["stop"]
        pytest.fail("leaving the engine run must raise")
    assert caught.value.exit_code == 130 and caught.value.name == "SIGINT"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_signal_between_engine_runs_is_raised_at_once_or_after_a_deferred_block() -> None:
    with pytest.raises(Interrupted), handling_signals():
        signal.raise_signal(signal.SIGTERM)
        pytest.fail("outside an engine run the signal raises at once")
    steps: list[str] = []
    with pytest.raises(Interrupted) as caught, handling_signals():
        with deferred():
            signal.raise_signal(signal.SIGTERM)
            steps.append("finished")
        pytest.fail("leaving the deferred block must raise")
    assert steps == ["finished"] and caught.value.exit_code == 143
