"""Exporters register themselves; the CLI offers one option per registered exporter."""

from __future__ import annotations

from pathlib import Path

import pytest

from emu.cli import build_parser, main
from emu.export import registry
from emu.export.registry import Destination, Exporter, RunView, exporters


def test_the_shipped_exporters_are_registered_in_help_order() -> None:
    assert [(e.option, e.destination) for e in exporters()] == [
        ("--perfetto", Destination.FILE),
        ("--stats", Destination.REPORT),
        ("--folded", Destination.FILE),
    ]


def _count_events(run: RunView) -> str:
    kernel_served = ",".join(sorted(run.model.kernel_served_endpoints))
    return f"{len(run.events)} events, kernel serves {kernel_served}\n"


def test_a_new_exporter_is_one_registration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    counter = Exporter("--count", "write how many events the run had to FILE", Destination.FILE, _count_events, 99)
    monkeypatch.setitem(registry._REGISTERED, counter.option, counter)
    assert build_parser().parse_args(["run", "--count", "n.txt"]).count == "n.txt"
    out = tmp_path / "count.txt"
    assert main(["run", "--trace", "none", "--out", str(tmp_path / "trace.txt"), "--count", str(out)]) == 0
    assert out.read_text().endswith("events, kernel serves kernel-control\n")  # the model's declaration


def test_an_option_is_registered_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTERED", dict(registry._REGISTERED))
    clash = Exporter("--stats", "another", Destination.REPORT, _count_events, 1)
    with pytest.raises(ValueError, match="--stats"):
        registry.register(clash)
