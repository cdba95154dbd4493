"""Scenarios: a boot manifest for rootd and the outcome expected, in TOML.

    name = "phase0-fault-kill"  # 1..64 printable characters
    description = "a child faults; procd reaps it and reports the kill to crashd"   # 0..256

    [boot]                      # optional: services rootd starts itself, in order, before procd
    before_procd = ["MEMD", "VSPACED", "PAGERD"]   # service role names but ROOTD, PROCD
                                                   # (the svc-stub image stands in for them)

    [services]                  # optional: named, timed, crashd and an interrupt notification
    irq_at_cycle = 400000       # optional, 0..2**64-1: when the kernel raises the interrupt

    [[spawn]]                   # rootd's SPAWN_SERVICE requests, in order
    image = "phase0-fault-kill" # a boot image name (python -m emu scenarios lists them), or an
                                # ELF file: a path relative to this file, with a / or ending in
                                # .elf (procd_model/scenario_images.py)
    role = "TEST"               # a role name
    flags = []                  # distinct envelope flag names, e.g. ["REQUIRED"]
    status = "OK"               # a status name: the reply procd must give
    ends = "fault unmapped-write"   # "exit N" (N 0..2**64-1), "fault KIND" (a fault event's
                                # kind), "alive" or "never" (never started); default "exit 0"
    probe = false               # rootd then waits for procd's PROBE_COMPLETE notification
    restart = "on-failure"      # "never" (default), "on-failure" or "always"
    max_restarts = 3            # 0..255: restarts allowed until a run outlasts window_ms;
                                # one more holds it FAILED
    window_ms = 1000            # 0..2**32-1 virtual milliseconds (0: the count is never cleared)
    backoff_ms = 2              # 0..2**32-1: before the first restart; doubles for each restart
                                # counted
    depends = ["NAMED"]         # distinct role names (below 64, so not GENERIC): held by procd
                                # until processes of these roles run

    [[inject]]                  # optional faults to inject, into an image the scenario starts
    image = "phase0-exit"       # (a [[spawn]] image or file, one such an image spawns, procd,
                                # or svc-stub when [boot] names roles)
    fault_at_instruction = 500  # 0..2**64-1: kill its next process at that many instructions
                                # (once per image)...
    # fail_create = "BUSY"      # ...or answer CREATE_PROCESS for it with this status (not OK)
    # times = 1                 # 1..2**32-1 (default 1): how many times; only with fail_create

    [expect]
    halts = "required service"  # optional, 1..256 characters: bootstrap must halt, its message
                                # containing this; the run then succeeds (exit 0)
    crashd_reports = 1          # optional, 0..256 (crashd's ring): KILLED records crashd must hold
    logs = ["procd: child"]     # optional, each 1..256 characters: each must start some log line

Unknown keys are errors, so a scenario never silently asks for something this version does not
do; so is any value outside its range (`SCENARIO_SCHEMA` below is the one statement of them all).
A file is read only if it is at most 1 MiB (MAX_FILE_BYTES), valid UTF-8, and valid TOML nested
at most 32 levels deep (MAX_NESTING: brackets open at once, parts of a dotted key). Every error
is one line naming the file and the key (`spawn[2].restart`), quoting at most a few dozen
characters of the value.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from emu.cpu import FaultCause
from emu.files import FileReadError, read_bounded
from procd_model.abi import CRASHD_RING, DEBUG_WRITE_MAX, EnvelopeFlag, RestartPolicy, Role, Status
from procd_model.images import BOOT_IMAGES, boot_image_named
from procd_model.kernel import ScriptedFaults
from procd_model.rootd import FOUNDATION_IMAGE, ManifestEntry, Services
from procd_model.scenario_images import ImageFiles, UserImage, names_a_file
from procd_model.schema import (
    DIGITS,
    U8_MAX,
    U32_MAX,
    U64_MAX,
    ArrayOfTables,
    Boolean,
    Integer,
    Key,
    ListOf,
    OneOf,
    SchemaError,
    Table,
    Text,
    echo,
    kind_of,
    listing,
    suggestion,
)
from procd_model.toml_limits import nesting

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

MAX_FILE_BYTES = 1 << 20
"""A scenario file larger than this (1 MiB) is refused before it is read."""
MAX_NESTING = 32
"""Levels of [ and { nesting, and parts of a dotted key, at most (procd_model/toml_limits.py)."""
LINE_LIMIT = 180
"""Characters of an error message at most (the command line adds `emu: error: `)."""
MAX_IMAGE_PATH = 4096
"""Characters of an image file path at most."""
SOURCE_LIMIT = 90
"""Characters of the file name an error message shows at most (its tail)."""


class ScenarioError(ValueError):
    """A scenario file that cannot be used: one short line naming the file and the key."""


@dataclass(frozen=True)
class Ends:
    """How a spawned process must end: `"exit N"` (N 0..2**64-1, the EXIT syscall's rdi),
    `"fault KIND"` (a `fault` event's kind), `"alive"` or `"never"` (procd never starts it).
    Checks to the ManifestEntry fields it sets."""

    def check(self, key: str, raw: object) -> dict[str, Any]:
        if not isinstance(raw, str):
            raise SchemaError(key, f'expected a string like "exit 0", got {kind_of(raw)}')
        words = raw.split()
        if words == ["never"]:
            return {"expect_exit": None, "never_starts": True}
        if words == ["alive"]:
            return {"expect_exit": None}
        if len(words) == 2 and words[0] == "exit":
            code = words[1]
            if DIGITS.fullmatch(code) and len(code) <= 20 and int(code) <= U64_MAX:
                return {"expect_exit": int(code)}
            raise SchemaError(key, f"exit code {echo(code)} is not a number 0..{U64_MAX}")
        if len(words) == 2 and words[0] == "fault":
            if words[1] in FAULT_KINDS:
                return {"expect_exit": None, "expect_fault": words[1]}
            hint = suggestion(words[1], FAULT_KINDS)
            raise SchemaError(key, f"{echo(words[1])} is not a fault kind{hint} (one of: {listing(FAULT_KINDS)})")
        raise SchemaError(key, f'expected "exit N", "fault KIND", "alive" or "never", got {echo(raw)}')

    def describe(self) -> str:
        return f'"exit N" (N 0..{U64_MAX}), "fault KIND", "alive" or "never"'


@dataclass(frozen=True)
class ImageRef:
    """A boot image name, or a path to an ELF file (with a `/` or ending in `.elf`), resolved later
    against the scenario file's folder (procd_model/scenario_images.py)."""

    names: tuple[str, ...]

    def check(self, key: str, raw: object) -> str:
        if isinstance(raw, str) and names_a_file(raw):
            if not raw.isprintable() or len(raw) > MAX_IMAGE_PATH:
                raise SchemaError(key, f"{echo(raw)} is not a usable file name")
            return raw
        return OneOf(self.names, "boot image").check(key, raw)

    def describe(self) -> str:
        return OneOf(self.names, "boot image").describe() + ", or a path to an ELF file"


def _names(members: Any) -> tuple[str, ...]:
    return tuple(member.name for member in members)


IMAGES = tuple(image.name for image in BOOT_IMAGES)
ROLES = _names(Role)
DEPENDABLE_ROLES = _names(role for role in Role if role < 64)
"""Roles a spawn may depend on: spawn_service_request.depends_on is a u64 bit set by role."""
STARTABLE_ROLES = _names(role for role in Role if role < 32 and role not in (Role.ROOTD, Role.PROCD))
"""Roles rootd may start itself before procd (svc-stub stands in for them): services, which procd's
envelope lists in started_roles, a u32 of role bits (so not TEST or GENERIC)."""
FAILURE_STATUSES = _names(status for status in Status if status is not Status.OK)
RESTART_POLICIES = {policy.name.lower().replace("_", "-"): policy for policy in RestartPolicy}
FAULT_KINDS = tuple(kind.value for kind in FaultCause)

SPAWN_SCHEMA = Table(
    (
        Key("image", ImageRef(IMAGES), required=True),
        Key("role", OneOf(ROLES, "role"), required=True),
        Key("flags", ListOf(OneOf(_names(EnvelopeFlag), "envelope flag"), distinct=True), default=[]),
        Key("status", OneOf(_names(Status), "status"), default="OK"),
        Key("ends", Ends(), default={"expect_exit": 0}),
        Key("probe", Boolean(), default=False),
        Key("restart", OneOf(tuple(RESTART_POLICIES), "restart policy"), default="never"),
        Key("max_restarts", Integer(0, U8_MAX), default=0),
        Key("window_ms", Integer(0, U32_MAX), default=0),
        Key("backoff_ms", Integer(0, U32_MAX), default=0),
        Key("depends", ListOf(OneOf(DEPENDABLE_ROLES, "role to depend on"), distinct=True), default=[]),
    )
)
INJECT_SCHEMA = Table(
    (
        Key("image", ImageRef(IMAGES), required=True),
        Key("fault_at_instruction", Integer(0, U64_MAX)),
        Key("fail_create", OneOf(FAILURE_STATUSES, "failure status")),
        Key("times", Integer(1, U32_MAX)),
    )
)
SCENARIO_SCHEMA = Table(
    (
        Key("name", Text(1, 64), required=True),
        Key("description", Text(0, 256), default=""),
        Key("boot", Table((Key("before_procd", ListOf(OneOf(STARTABLE_ROLES, "role rootd starts")), default=[]),))),
        Key("services", Table((Key("irq_at_cycle", Integer(0, U64_MAX)),))),
        Key("spawn", ArrayOfTables(SPAWN_SCHEMA), required=True),
        Key("inject", ArrayOfTables(INJECT_SCHEMA), default=[]),
        Key(
            "expect",
            Table(
                (
                    Key("halts", Text(1, 256)),
                    Key("crashd_reports", Integer(0, CRASHD_RING)),
                    Key("logs", ListOf(Text(1, DEBUG_WRITE_MAX)), default=[]),
                )
            ),
        ),
    )
)
"""The scenario format: every key, its type, range or allowed values, and its default."""


@dataclass(frozen=True)
class Expectations:
    crashd_reports: int | None = None
    logs: tuple[str, ...] = ()
    halts: str | None = None
    """The run must halt bootstrap with this text in its message (the run then succeeds)."""


@dataclass(frozen=True)
class Injection:
    """A fault to inject: kill the next process of `image` at an instruction count, or answer
    the next `times` CREATE_PROCESS calls for `image` with `fail_create`."""

    image: str
    fault_at_instruction: int | None = None
    fail_create: Status | None = None
    times: int = 1

    def apply(self, faults: ScriptedFaults) -> None:
        if self.fault_at_instruction is not None:
            faults.kill_at[self.image] = self.fault_at_instruction
        if self.fail_create is not None:
            faults.fail_creates(self.image, self.fail_create, self.times)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    manifest: tuple[ManifestEntry, ...]
    services: Services | None = None
    expect: Expectations = field(default_factory=Expectations)
    inject: tuple[Injection, ...] = ()
    before_procd: tuple[Role, ...] = ()
    """Roles rootd starts itself (stand-in images), in order, before procd."""
    images: tuple[UserImage, ...] = ()
    """The ELF files the scenario names by path, loaded."""


def _error(source: str, key: str, problem: str) -> ScenarioError:
    """One short line: the file (its tail if long, control characters escaped), the key, the problem."""
    shown = source if source.isprintable() else repr(source)[1:-1]
    if len(shown) > SOURCE_LIMIT:
        shown = "…" + shown[-(SOURCE_LIMIT - 1) :]
    text = f"{shown}: {key}: {problem}" if key else f"{shown}: {problem}"
    return ScenarioError(text if len(text) <= LINE_LIMIT else text[: LINE_LIMIT - 1] + "…")


def parse_scenario(text: str, source: str, folder: Path | None = None) -> Scenario:
    """The scenario in `text` (TOML); errors name `source` and the offending key. Image paths are
    relative to `folder` (None: the scenario cannot name image files)."""
    depth = nesting(text, stop_above=MAX_NESTING)
    if depth.brackets > MAX_NESTING:
        raise _error(source, "", f"nested too deeply (more than {MAX_NESTING} levels of [ and {{)")
    if depth.dotted > MAX_NESTING:
        raise _error(source, "", f"nested too deeply (a dotted key of more than {MAX_NESTING} parts)")
    try:
        data = tomllib.loads(text)
    except RecursionError:  # not expected after the check above; the parser's own limit
        raise _error(source, "", "not valid TOML: nested too deeply") from None
    except ValueError as exc:  # TOMLDecodeError, or an integer literal with too many digits
        raise _error(source, "", f"not valid TOML: {exc}") from None
    try:
        return _scenario(SCENARIO_SCHEMA.check("", data), ImageFiles(folder))
    except SchemaError as exc:
        raise _error(source, exc.key, exc.problem) from None


def _scenario(values: dict[str, Any], files: ImageFiles) -> Scenario:
    """The Scenario from checked values, after the checks that span keys."""
    for key in ("spawn", "inject"):
        for i, table in enumerate(values[key]):
            if names_a_file(table["image"]):
                table["image"] = files.resolve(f"{key}[{i}].image", table["image"])
    ids = {image.name: image.image_id for image in files.images}
    manifest = tuple(_spawn(spawn, ids.get(spawn["image"], 0)) for spawn in values["spawn"])
    services = None if values["services"] is None else Services(irq_at_cycle=values["services"]["irq_at_cycle"])
    expect = Expectations()
    if values["expect"] is not None:
        table = values["expect"]
        if table["crashd_reports"] is not None and services is None:
            raise SchemaError("expect.crashd_reports", "needs a [services] table (crashd)")
        expect = Expectations(table["crashd_reports"], tuple(table["logs"]), table["halts"])
    before = tuple(Role[name] for name in (values["boot"] or {}).get("before_procd", []))
    started = _started_images(manifest, before)
    inject = tuple(_injection(f"inject[{i}]", table, started) for i, table in enumerate(values["inject"]))
    killed: set[str] = set()
    for i, injection in enumerate(inject):
        if injection.fault_at_instruction is not None:
            if injection.image in killed:  # the kernel kills only the image's next process
                raise SchemaError(f"inject[{i}]", f"a second fault_at_instruction for {injection.image!r}")
            killed.add(injection.image)
    return Scenario(values["name"], values["description"], manifest, services, expect, inject, before, files.images)


def _spawn(values: dict[str, Any], image_id: int) -> ManifestEntry:
    flags = 0
    for name in values["flags"]:
        flags |= EnvelopeFlag[name]
    return ManifestEntry(
        values["image"],
        Role[values["role"]],
        flags,
        Status[values["status"]],
        await_probe=values["probe"],
        restart=RESTART_POLICIES[values["restart"]],
        max_restarts=values["max_restarts"],
        window_ms=values["window_ms"],
        backoff_ms=values["backoff_ms"],
        depends_on=tuple(Role[name] for name in values["depends"]),
        image_id=image_id,
        **values["ends"],
    )


def _started_images(manifest: tuple[ManifestEntry, ...], before_procd: tuple[Role, ...]) -> set[str]:
    """Images whose processes a run of the scenario may create: those an injection can apply to."""
    started = {"procd"} | {entry.image for entry in manifest} | ({FOUNDATION_IMAGE} if before_procd else set())
    pending = list(started)
    while pending:
        image = pending.pop()
        for child in boot_image_named(image).spawns if image in IMAGES else ():
            if child not in started:
                started.add(child)
                pending.append(child)
    return started


def _injection(key: str, values: dict[str, Any], started: set[str]) -> Injection:
    image = values["image"]
    if image not in started:
        raise SchemaError(f"{key}.image", f"{image!r} is never started by this scenario (no [[spawn]] names it)")
    fault_at, fail = values["fault_at_instruction"], values["fail_create"]
    if (fault_at is None) == (fail is None):
        raise SchemaError(key, "give exactly one of fault_at_instruction and fail_create")
    if values["times"] is not None and fail is None:
        raise SchemaError(f"{key}.times", "applies only to fail_create")
    status = None if fail is None else Status[fail]
    return Injection(image, fault_at, status, 1 if values["times"] is None else values["times"])


def builtin_scenarios() -> list[Scenario]:
    """The scenarios shipped with procd-emu, by name."""
    folder = resources.files("procd_model").joinpath("scenarios")
    found = sorted((entry for entry in folder.iterdir() if entry.name.endswith(".toml")), key=lambda e: e.name)
    parsed = [parse_scenario(entry.read_text(encoding="utf-8"), f"scenarios/{entry.name}") for entry in found]
    return sorted(parsed, key=lambda scenario: scenario.name)


def unmet_expectations(scenario: Scenario, logs: list[str], *, halted: bool = False) -> list[str]:
    """What the run did not show that the scenario's [expect] table asks for."""
    problems = []
    expect = scenario.expect
    if expect.halts is not None and not halted:
        problems.append(f"bootstrap did not halt ({expect.halts!r} expected)")
    if expect.crashd_reports is not None and scenario.services is not None:
        held = len(scenario.services.crashd.records)
        if held != expect.crashd_reports:
            problems.append(f"crashd holds {held} reports, expected {expect.crashd_reports}")
    for wanted in expect.logs:
        if not any(line.startswith(wanted) for line in logs):
            problems.append(f"no log line starts with {wanted!r}")
    return problems


def read_scenario_file(path: Path) -> str:
    """The text of a scenario file: a regular file of at most MAX_FILE_BYTES (checked before it is
    read whole; a FIFO or device is refused unread, never waited on), UTF-8."""
    source = str(path)
    try:
        data = read_bounded(path, MAX_FILE_BYTES)
    except FileReadError as exc:
        raise _error(source, "", str(exc)) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _error(source, "", f"not UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start})") from None


def load_scenario(name_or_path: str) -> Scenario:
    """A built-in scenario by name, or a user's scenario file."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or _exists(path):
        return parse_scenario(read_scenario_file(path), name_or_path, path.parent)
    for scenario in builtin_scenarios():
        if scenario.name == name_or_path:
            return scenario
    names = listing(tuple(s.name for s in builtin_scenarios()))
    raise ScenarioError(f"no scenario named {echo(name_or_path)} (built in: {names}); a file needs a .toml name")


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long for the system, or with a NUL byte
        return False
