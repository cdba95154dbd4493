"""Stop a run cleanly on SIGINT or SIGTERM, even while the guest runs inside Unicorn.

Python delivers a signal by running its handler between two bytecodes of the main thread. While an
engine runs, those bytecodes belong to a hook called through ctypes, and an exception raised there
can be lost ("Exception ignored on calling ctypes callback function") and the run goes on. So while
an engine runs the handler raises nothing: it records the signal and asks that engine to stop
before its next block. `GuestCpu` runs its engine inside `engine_running`, which raises
`Interrupted` in ordinary Python code as soon as `emu_start` has returned. Outside an engine the
handler raises `Interrupted` at once, except inside `deferred()`, which finishes first (an output's
rename or clean-up is never cut in half).

`Interrupted` derives from BaseException, like KeyboardInterrupt, so `except Exception` clauses on
the way up do not swallow it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType

SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""The signals `handling_signals` turns into `Interrupted`."""


class Interrupted(BaseException):
    """The user (SIGINT) or the system (SIGTERM) asked the run to stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as shells report a command a signal ended: 130, 143."""
        return 128 + self.signum


_pending: int | None = None
"""The first signal received and not yet raised."""
_stop_engine: Callable[[], None] | None = None
"""Asks the engine that is running now to stop (set by `engine_running`)."""
_deferring = 0


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    global _pending
    if _pending is None:
        _pending = signum
    if _stop_engine is not None:
        _stop_engine()
        return
    if _deferring == 0:
        raise_if_pending()


def raise_if_pending() -> None:
    """Raise `Interrupted` if a signal arrived and was not raised yet."""
    global _pending
    signum = _pending
    if signum is not None:
        _pending = None
        raise Interrupted(signum)


@contextmanager
def handling_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into `Interrupted` for the duration; restore the old handlers after.

    A signal that was ignored on entry (a background job's SIGINT, `nohup`) stays ignored. Outside
    the main thread, where Python cannot install handlers, nothing changes.
    """
    global _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    _pending = None
    for signum, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(signum, _on_signal)
    try:
        yield
        raise_if_pending()  # a signal deferred to the end is not lost
    finally:
        for signum, handler in previous.items():
            if handler is not signal.SIG_IGN:
                signal.signal(signum, handler)
        _pending = None


class engine_running:
    """`with engine_running(stop):` around `emu_start`. A signal in the block calls `stop()`, which
    must make the engine return soon (e.g. `emu_stop`); `Interrupted` is raised on leaving the block,
    and also on entering it if a signal is already pending."""

    def __init__(self, stop: Callable[[], None]) -> None:
        self._stop = stop
        self._outer: Callable[[], None] | None = None

    def __enter__(self) -> None:
        global _stop_engine
        if _pending is not None:  # raise_if_pending, inline: entered a dozen times per round trip
            raise_if_pending()
        self._outer = _stop_engine
        _stop_engine = self._stop

    def __exit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _traceback: TracebackType | None
    ) -> None:
        global _stop_engine
        _stop_engine = self._outer
        if _stop_engine is None and _pending is not None:
            raise_if_pending()


@contextmanager
def deferred() -> Iterator[None]:
    """Let the block finish before a signal that arrives during it is raised."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    if _deferring == 0 and _stop_engine is None:
        raise_if_pending()
