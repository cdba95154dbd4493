"""The ABI is written once (abi/erix-abi.toml); both generated sides must match it and each other."""

import copy
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import procd_model.abi as abi
from procd_model import ops
from procd_model.wire import Shape

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import abigen  # noqa: E402


def test_generated_files_are_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "abigen.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


RUST_GENERATED = ROOT / "native" / "abi" / "src" / "generated.rs"


def _rust_constants() -> dict[str, int]:
    """`module::NAME -> value` for every constant in the generated Rust file."""
    text = RUST_GENERATED.read_text()
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


Side = tuple[str, str] | None
"""What one side of an op carries, as (layout name, shape name), or None for no payload."""


def _spec_payloads() -> dict[tuple[str, str], tuple[Side, Side]]:
    """(op enum, member) -> (request, reply), as the spec's [[service]] tables state them."""
    out: dict[tuple[str, str], tuple[Side, Side]] = {}
    for service in abigen.load_spec()["service"]:
        for op, request, reply in abigen._op_payloads(service):
            out[(service["ops"], op)] = (request, reply)
    return out


def _python_side(carried: Any) -> Side:
    return None if carried is None else (carried.layout.name, carried.shape.value)


def _python_payloads() -> dict[tuple[str, str], tuple[Side, Side]]:
    """The same mapping read from the generated Python table."""
    names = {
        cls: name
        for name, cls in ((e["name"], getattr(abi, abigen._camel(e["name"]))) for e in abigen.load_spec()["enum"])
    }
    out: dict[tuple[str, str], tuple[Side, Side]] = {}
    for (service, op), carried in abi.PAYLOADS.items():
        enum = abi.SERVICE_OPS[service]
        out[(names[enum], enum(op).name)] = (_python_side(carried.request), _python_side(carried.reply))
    return out


def _rust_payloads() -> dict[tuple[str, str], tuple[Side, Side]]:
    """The same mapping read from the generated Rust: each op enum's `TryFrom<u32>` arms (which
    number is which variant) and its `request()` / `reply()` arms."""
    shapes = {rust: spec for spec, rust in abigen.SHAPES.items()}
    numbered: dict[tuple[str, str], str] = {}  # (type, variant) -> (enum module::MEMBER)
    sides: dict[tuple[str, str, str], Side] = {}  # (type, variant, side)
    type_name = side = ""
    for line in RUST_GENERATED.read_text().splitlines():
        if found := re.match(r"\s*impl (?:TryFrom<u32> for )?(\w+) \{", line):
            type_name = found.group(1)
        elif found := re.match(r"\s*pub const fn (request|reply)\(self\) -> Payload \{", line):
            side = found.group(1)
        elif found := re.match(r"\s*(\w+)::(\w+) => Ok\(Self::(\w+)\),", line):
            numbered[(type_name, found.group(3))] = f"{found.group(1)}::{found.group(2)}"
        elif found := re.match(r"\s*Self::(\w+) => Payload::(Empty|(\w+)\((\w+)::SIZE\)),", line):
            carried = None if found.group(2) == "Empty" else (found.group(4), shapes[found.group(3)])
            sides[(type_name, found.group(1), side)] = carried
    out: dict[tuple[str, str], tuple[Side, Side]] = {}
    for (type_name, variant), member in numbered.items():
        module, name = member.split("::")
        out[(module, name)] = (sides[(type_name, variant, "request")], sides[(type_name, variant, "reply")])
    return out


def test_every_op_of_every_service_says_what_it_carries() -> None:
    """Each [[service]] lists every op of its enum, and the trace's service names are the spec's."""
    spec = abigen.load_spec()
    stated = _spec_payloads()
    for service in spec["service"]:
        members = next(e["values"] for e in spec["enum"] if e["name"] == service["ops"])
        assert {(service["ops"], m["name"]) for m in members} <= set(stated)
    assert set(abi.SERVICE_OPS) == {service["name"] for service in spec["service"]}
    assert ops.KERNEL_EVENTS in abi.SERVICE_OPS
    assert ops.SERVICE_OPS is abi.SERVICE_OPS


def test_rust_and_python_agree_with_the_spec_on_every_op_payload() -> None:
    stated = _spec_payloads()
    assert _python_payloads() == stated
    assert _rust_payloads() == stated


def test_the_trace_decodes_by_the_generated_table() -> None:
    """decode_payload shows a record's fields exactly where the table gives one record (or a head
    record), except the ops it names as never decoded."""
    for (service, op), carried in abi.PAYLOADS.items():
        for reply, side in ((False, carried.request), (True, carried.reply)):
            decoded = ops.decode_payload(service, op, bytes(1000), reply=reply)
            if side is None or side.shape is Shape.RECORDS or (service, op) in ops.NOT_DECODED:
                assert decoded == {}, (service, op, reply)
            else:
                shown = {ops._SHOWN[f.name] for f in side.layout.fields if f.name in ops._SHOWN}
                assert set(decoded) == shown, (service, op, reply)


def test_a_changed_op_payload_makes_the_check_fail() -> None:
    """Moving an op to another layout changes both generated files, so a stale one is caught."""
    spec = abigen.load_spec()
    before = abigen.outputs(spec)
    changed = copy.deepcopy(spec)
    entry = next(e for s in changed["service"] if s["name"] == "procd" for e in s["payloads"] if e["op"] == "STOP")
    entry["request"] = "audit_read_request"
    after = abigen.outputs(changed)
    assert all(before[path] != after[path] for path in before)


def _spec_with(edit: str) -> dict[str, Any]:
    spec = copy.deepcopy(abigen.load_spec())
    procd = next(s for s in spec["service"] if s["name"] == "procd")
    if edit == "op left out":
        procd["payloads"] = [e for e in procd["payloads"] if e["op"] != "REAP"]
    elif edit == "op twice":
        procd["payloads"].append(dict(procd["payloads"][0]))
    elif edit == "unknown layout":
        procd["payloads"][0]["reply"] = "no_such_layout"
    elif edit == "unknown shape":
        procd["payloads"][0]["reply_shape"] = "many"
    elif edit == "side missing":
        del procd["payloads"][0]["reply"]
    return spec


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("op left out", "REAP has no payloads entry"),
        ("op twice", "SPAWN_SERVICE is listed twice"),
        ("unknown layout", "'no_such_layout' is not a [[layout]]"),
        ("unknown shape", "reply_shape: 'many'"),
        ("side missing", "SPAWN_SERVICE says no reply"),
    ],
)
def test_the_generator_refuses_an_incomplete_op_table(edit: str, message: str) -> None:
    with pytest.raises(SystemExit, match=re.escape(message)):
        abigen.outputs(_spec_with(edit))
