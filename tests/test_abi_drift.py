"""The ABI is written once (abi/erix-abi.toml); both generated sides must match it and each other."""

import re
import subprocess
import sys
from pathlib import Path

import procd_model.abi as abi

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import abigen  # noqa: E402


def test_generated_files_are_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "abigen.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _rust_constants() -> dict[str, int]:
    """`module::NAME -> value` for every constant in the generated Rust file."""
    text = (ROOT / "native" / "abi" / "src" / "generated.rs").read_text()
    out: dict[str, int] = {}
    module = ""
    for line in text.splitlines():
        opened = re.match(r"pub mod (\w+) \{", line)
        if opened:
            module = opened.group(1)
        elif line == "}":
            module = ""
        found = re.match(r"\s*pub const (\w+): \w+ = (0x[0-9a-fA-F]+|[0-9]+);", line)
        if found:
            out[f"{module}::{found.group(1)}" if module else found.group(1)] = int(found.group(2), 0)
    return out


def test_rust_and_python_agree_on_every_value() -> None:
    spec = abigen.load_spec()
    rust = _rust_constants()
    for enum in spec["enum"]:
        python_enum = getattr(abi, abigen._camel(enum["name"]))
        for value in enum["values"]:
            assert rust[f"{enum['name']}::{value['name']}"] == int(python_enum[value["name"]]) == value["value"]
    for const in spec["constant"]:
        assert rust[const["name"]] == getattr(abi, const["name"]) == const["value"]


def test_rust_and_python_agree_on_every_layout() -> None:
    spec = abigen.load_spec()
    rust = _rust_constants()
    for layout in spec["layout"]:
        python_layout = getattr(abi, layout["name"].upper())
        assert rust[f"{layout['name']}::SIZE"] == python_layout.size
        for field in python_layout.fields:
            assert rust[f"{layout['name']}::{field.name.upper()}"] == field.offset


def test_known_erix_values() -> None:
    """Values EriX states publicly must never move."""
    assert abi.ProcdOp.SPAWN_SERVICE == 0x402
    assert abi.KernelOp.READ_MONOTONIC_CLOCK == 13
    assert (abi.CrashdOp.REPORT, abi.CrashdOp.READ) == (0x520, 0x521)
    assert abi.IPC_BUFFER_SIZE == 1024
    assert abi.MONOTONIC_CLOCK_HZ == 1000
    assert abi.MESSAGE_HEADER.size + abi.MSG_MAX_PAYLOAD == abi.IPC_BUFFER_SIZE


def test_a_changed_spec_makes_the_check_fail(tmp_path: Path) -> None:
    """The drift check is real: a spec with a moved number yields different generated text."""
    spec = abigen.load_spec()
    before = abigen.outputs(spec)
    spec["enum"][0]["values"][0]["value"] = 99
    after = abigen.outputs(spec)
    assert all(before[path] != after[path] for path in before)
