"""The lean path: with the trace off (`Trace.off()`), the machine runs the same and builds no event."""

from __future__ import annotations

import pytest

import emu.trace
from emu.trace import Trace
from procd_model.abi import SPAWN_SERVICE_REQUEST, ProcdOp, Role
from procd_model.client import Request, ask_all
from procd_model.kernel import control, ipc, notify
from procd_model.messages import Message


def _requests() -> list[Request]:
    spawn = Request(Message(ProcdOp.SPAWN_SERVICE, SPAWN_SERVICE_REQUEST.pack(image_id=2, role=Role.TEST, flags=0)))
    reject = Request(Message(ProcdOp.SPAWN_SERVICE, SPAWN_SERVICE_REQUEST.pack(image_id=0, role=Role.TEST, flags=0)))
    return [spawn, reject, Request(Message(ProcdOp.LIST)), spawn, Request(b"\xff" * 40)]


def _forbidden(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("an event or an event field was built with the trace off")


def test_an_untraced_run_gives_the_same_replies_and_counts() -> None:
    traced = ask_all(_requests(), Trace())
    lean = ask_all(_requests(), Trace.off())
    assert lean.replies == traced.replies
    assert lean.outcome.instructions == traced.outcome.instructions
    assert (lean.outcome.ok, lean.outcome.stop, lean.outcome.detail) == (
        traced.outcome.ok,
        traced.outcome.stop,
        traced.outcome.detail,
    )
    assert lean.trace.events == [] and lean.trace.digest() == ""
    assert traced.trace.events and traced.trace.digest()


def test_an_untraced_run_builds_no_event_and_no_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emu.trace, "Event", _forbidden)
    monkeypatch.setattr(emu.trace, "_render", _forbidden)
    for module in (ipc, control, notify):
        monkeypatch.setattr(module, "IpcRecord", _forbidden, raising=False)
    for module in (ipc, control):
        monkeypatch.setattr(module, "decode_payload", _forbidden)
        monkeypatch.setattr(module, "op_name", _forbidden)
    session = ask_all(_requests(), Trace.off())
    assert session.outcome.ok and len(session.replies) == len(_requests())
