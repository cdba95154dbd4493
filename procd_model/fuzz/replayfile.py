"""Replay files: a failure a campaign found, shrunk, as the requests that reproduce it.

A replay file is JSON (docs/fuzzing.md has the format)::

    {"format": "procd-emu-replay", "version": 1,
     "failure": {"key": "fault:unmapped-write@procd::spawn+0x40", "message": "..."},
     "procd": {"path": "fixtures/elf/procd.elf", "sha256": "..."},
     "steps": [{"kind": "request", "op": 1026, "payload": "0c00...", "badge": 1, "attach_cap": false},
               {"kind": "kill", "target": 0, "badge": 1}, {"kind": "time"}],
     "campaign": {"seed": 1, "found_after": 412, "cpu": "skylake"}}

A step is a `strategies.LifecycleStep`: "spawn" and "request" carry a message (`op` and
`payload`, or `raw` bytes) sent through `badge`, with a capability if `attach_cap`; "stop",
"kill", "reap" and "status" name an earlier spawn by position (`target`) through `badge`; "list",
"time", "interrupt"; "sleep" lets `target` milliseconds pass; "terminate" kills procd's live
child number `target` from outside. "campaign.cpu" is the CPU model the campaign's clock ran
(files written before it was recorded ran the default, "skylake").
`read_replay` checks every field and raises `ReplayFileError` (one line naming the file and the
problem) for anything else; `replay` runs the steps against the procd the file names (its
content hash must match) and returns the failure they cause now, if any.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emu.costmodel import CPU_NAMES
from emu.elf import ElfError, load_elf
from emu.files import FileReadError, read_bounded
from procd_model.abi import BADGE_ROOTD
from procd_model.client import Request
from procd_model.cpu_model import DEFAULT_CPU
from procd_model.fuzz.target import ProcdTarget
from procd_model.harness import ProcdMisbehaved
from procd_model.messages import Message
from procd_model.strategies import LIFECYCLE_KINDS, LifecycleStep

FORMAT = "procd-emu-replay"
VERSION = 1
MAX_REPLAY_BYTES = 1 << 20
MAX_STEPS = 64
MAX_PAYLOAD_HEX = 2 * 4096


class ReplayFileError(ValueError):
    """A replay file that cannot be used: one line naming the file and the problem."""


@dataclass(frozen=True)
class Replay:
    key: str
    message: str
    procd_path: Path
    procd_sha256: str
    steps: tuple[LifecycleStep, ...]
    seed: int
    found_after: int
    cpu: str = DEFAULT_CPU
    """The CPU model of the campaign's virtual clock (its timing decides preemption)."""


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def replay_json(replay: Replay) -> str:
    """The file's text (keys in a fixed order, so equal replays are equal files)."""
    steps = [_step_json(step) for step in replay.steps]
    document = {
        "format": FORMAT,
        "version": VERSION,
        "failure": {"key": replay.key, "message": replay.message},
        "procd": {"path": str(replay.procd_path), "sha256": replay.procd_sha256},
        "steps": steps,
        "campaign": {"seed": replay.seed, "found_after": replay.found_after, "cpu": replay.cpu},
    }
    return json.dumps(document, indent=1) + "\n"


def read_replay(path: Path) -> Replay:
    """The replay in `path`, every field checked (ReplayFileError otherwise)."""

    def fail(problem: str) -> ReplayFileError:
        return ReplayFileError(f"{path}: {problem}")

    try:
        text = read_bounded(path, MAX_REPLAY_BYTES).decode("utf-8")
        document = json.loads(text)
    except FileReadError as exc:
        raise fail(str(exc)) from None
    except ValueError as exc:
        raise fail(f"not a replay file ({type(exc).__name__}: {str(exc)[:80]})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise fail(f'not a replay file (no "format": "{FORMAT}")')
    if document.get("version") != VERSION:
        raise fail(f"replay format version {document.get('version')!r}; this procd-emu reads version {VERSION}")
    failure, procd, campaign = (_object(document, name, fail) for name in ("failure", "procd", "campaign"))
    steps = document.get("steps")
    if not isinstance(steps, list) or not 1 <= len(steps) <= MAX_STEPS:
        raise fail(f'"steps" must be a list of 1..{MAX_STEPS} steps')
    procd_path = Path(_text(procd, "procd.path", fail))
    if not procd_path.is_absolute():
        procd_path = path.parent / procd_path
    return Replay(
        key=_text(failure, "failure.key", fail),
        message=_text(failure, "failure.message", fail),
        procd_path=procd_path,
        procd_sha256=_text(procd, "procd.sha256", fail),
        steps=tuple(_step(entry, f"steps[{i}]", fail) for i, entry in enumerate(steps)),
        seed=_number(campaign, "campaign.seed", fail, 2**64 - 1),
        found_after=_number(campaign, "campaign.found_after", fail, 2**64 - 1),
        cpu=_cpu(campaign, fail),
    )


def _cpu(campaign: dict[str, Any], fail: Any) -> str:
    cpu = campaign.get("cpu", DEFAULT_CPU)
    if cpu not in CPU_NAMES:
        raise fail(f'"campaign.cpu" must be one of {", ".join(CPU_NAMES)}')
    return str(cpu)


def _object(document: dict[str, Any], name: str, fail: Any) -> dict[str, Any]:
    value = document.get(name)
    if not isinstance(value, dict):
        raise fail(f'"{name}" must be an object')
    return value


def _text(values: dict[str, Any], name: str, fail: Any) -> str:
    value = values.get(name.rsplit(".", 1)[-1])
    if not isinstance(value, str) or len(value) > 4096:
        raise fail(f'"{name}" must be a string of at most 4096 characters')
    return value


def _number(values: dict[str, Any], name: str, fail: Any, most: int) -> int:
    value = values.get(name.rsplit(".", 1)[-1])
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= most:
        raise fail(f'"{name}" must be an integer 0..{most}')
    return value


def _hex(values: dict[str, Any], name: str, fail: Any) -> bytes:
    text = values.get(name.rsplit(".", 1)[-1])
    try:
        if not isinstance(text, str) or len(text) > MAX_PAYLOAD_HEX:
            raise ValueError
        return bytes.fromhex(text)
    except ValueError:
        raise fail(f'"{name}" must be hex digits, at most {MAX_PAYLOAD_HEX}') from None


def _step_json(step: LifecycleStep) -> dict[str, Any]:
    entry: dict[str, Any] = {"kind": step.kind}
    if step.request is not None:
        message = step.request.message
        if isinstance(message, Message):
            entry |= {"op": message.op, "payload": message.payload.hex()}
        else:
            entry["raw"] = message.hex()
        return entry | {"badge": step.request.badge, "attach_cap": step.request.attach_cap}
    if step.kind in TARGETED:
        entry["target"] = step.target
    if _has_badge(step.kind):
        entry["badge"] = step.badge
    return entry


SENT = ("spawn", "request")
TARGETED = ("stop", "kill", "reap", "status", "terminate", "sleep")
"""Kinds whose `target` the file carries (a sleep's is its milliseconds)."""
KINDS = (*SENT, *LIFECYCLE_KINDS)


def _has_badge(kind: str) -> bool:
    return kind in ("stop", "kill", "reap", "status", "list")


def _step(entry: object, name: str, fail: Any) -> LifecycleStep:
    if not isinstance(entry, dict):
        raise fail(f'"{name}" must be an object')
    kind = entry.get("kind")
    if kind not in KINDS:
        raise fail(f'"{name}.kind" must be one of {", ".join(KINDS)}')
    if kind in SENT:
        return LifecycleStep(kind, _request(entry, name, fail))
    target = _number(entry, f"{name}.target", fail, 2**32 - 1) if kind in TARGETED else 0
    badge = _number(entry, f"{name}.badge", fail, 2**64 - 1) if _has_badge(kind) else BADGE_ROOTD
    return LifecycleStep(kind, None, target, badge)


def _request(entry: dict[str, Any], name: str, fail: Any) -> Request:
    attach = entry.get("attach_cap")
    if not isinstance(attach, bool):
        raise fail(f'"{name}.attach_cap" must be true or false')
    badge = _number(entry, f"{name}.badge", fail, 2**64 - 1)
    if "raw" in entry:
        return Request(_hex(entry, f"{name}.raw", fail), badge, attach)
    op = _number(entry, f"{name}.op", fail, 2**32 - 1)
    return Request(Message(op, _hex(entry, f"{name}.payload", fail)), badge, attach)


def replay(file: Replay) -> ProcdMisbehaved | None:
    """Run the file's steps against its procd: the failure they cause now (None: none)."""
    try:
        data = file.procd_path.read_bytes()
    except OSError as exc:
        raise ReplayFileError(f"{file.procd_path}: the replay's procd cannot be read ({exc.strerror})") from None
    if hashlib.sha256(data).hexdigest() != file.procd_sha256:
        raise ReplayFileError(f"{file.procd_path}: not the procd the failure was found with (its sha256 differs)")
    try:
        image = load_elf(data, "procd")
    except ElfError as exc:
        raise ReplayFileError(str(exc)) from None
    try:
        ProcdTarget(image, cpu=file.cpu).check(file.steps)
    except ProcdMisbehaved as exc:
        return exc
    return None
