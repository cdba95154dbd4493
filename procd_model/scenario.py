"""Scenarios: a boot manifest for rootd and the outcome expected, in TOML.

    name = "phase0-fault-kill"
    description = "a child faults; procd reaps it and reports the kill to crashd"

    [boot]                      # optional: services rootd starts itself, in order, before procd
    before_procd = ["MEMD", "VSPACED", "PAGERD"]   # (the svc-stub image stands in for them)

    [services]                  # optional: named, timed, crashd and an interrupt notification
    irq_at_cycle = 400000       # optional: when the kernel raises the interrupt

    [[spawn]]                   # rootd's SPAWN_SERVICE requests, in order
    image = "phase0-fault-kill" # a boot image name (python -m emu scenarios lists them)
    role = "TEST"               # a role name
    flags = []                  # envelope flag names, e.g. ["REQUIRED"]
    status = "OK"               # the reply procd must give
    ends = "fault unmapped-write"   # "exit 0", "fault <kind>", "alive" or "never" (never started)
    probe = false               # rootd then waits for procd's PROBE_COMPLETE notification
    restart = "on-failure"      # "never" (default), "on-failure" or "always"
    max_restarts = 3            # restarts allowed until a run outlasts window_ms; one more holds it FAILED
    window_ms = 1000            # virtual milliseconds (0: the count is never cleared)
    backoff_ms = 2              # before the first restart; doubles for each restart counted
    depends = ["NAMED"]         # held by procd until processes of these roles run

    [[inject]]                  # optional faults to inject
    image = "phase0-exit"
    fault_at_instruction = 500  # kill its first process at that many instructions...
    # fail_create = "BUSY"      # ...or answer CREATE_PROCESS for it with this status
    # times = 1                 # (how many times)

    [expect]
    halts = "required service"  # optional: bootstrap must halt, its message containing this (exit 1)
    crashd_reports = 1          # optional: KILLED records crashd must hold
    logs = ["procd: child"]     # optional: each must start some log line

Unknown keys are errors, so a scenario never silently asks for something this version does not do.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from procd_model.abi import EnvelopeFlag, RestartPolicy, Role, Status
from procd_model.images import BOOT_IMAGES
from procd_model.kernel import Kernel
from procd_model.rootd import ManifestEntry, Services

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class ScenarioError(ValueError):
    """A scenario file that cannot be used: the message names the file and the key."""


@dataclass(frozen=True)
class Expectations:
    crashd_reports: int | None = None
    logs: tuple[str, ...] = ()
    halts: str | None = None
    """The run must halt bootstrap with this text in its message (the command then exits 1)."""


@dataclass(frozen=True)
class Injection:
    """A fault to inject: kill the first process of `image` at an instruction count, or answer
    the next `times` CREATE_PROCESS calls for `image` with `fail_create`."""

    image: str
    fault_at_instruction: int | None = None
    fail_create: Status | None = None
    times: int = 1

    def apply(self, kernel: Kernel) -> None:
        if self.fault_at_instruction is not None:
            kernel.fault_injections[self.image] = self.fault_at_instruction
        if self.fail_create is not None:
            kernel.create_failures.setdefault(self.image, []).extend([self.fail_create] * self.times)


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


def _keys(where: str, table: dict[str, Any], allowed: set[str], required: frozenset[str] = frozenset()) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ScenarioError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    missing = sorted(required - set(table))
    if missing:
        raise ScenarioError(f"{where}: missing key {missing[0]!r}")


def _typed(where: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ScenarioError(f"{where}: expected {what}, got {value!r}")
    return value


def _enum_member(where: str, enum: Any, name: Any) -> Any:
    _typed(where, name, str, "a name")
    try:
        return enum[name]
    except KeyError:
        names = ", ".join(member.name for member in enum)
        raise ScenarioError(f"{where}: unknown name {name!r} (one of: {names})") from None


def _spawn(where: str, table: Any) -> ManifestEntry:
    _typed(where, table, dict, "a table")
    keys = {"image", "role", "flags", "status", "ends", "probe", "restart", "max_restarts", "window_ms", "backoff_ms"}
    keys |= {"depends"}
    _keys(where, table, keys, frozenset({"image", "role"}))
    image = _typed(f"{where}.image", table["image"], str, "an image name")
    known = [b.name for b in BOOT_IMAGES]
    if image not in known:
        raise ScenarioError(f"{where}.image: unknown image {image!r} (one of: {', '.join(known)})")
    role = _enum_member(f"{where}.role", Role, table["role"])
    flags = 0
    for i, flag in enumerate(_typed(f"{where}.flags", table.get("flags", []), list, "a list of flag names")):
        flags |= _enum_member(f"{where}.flags[{i}]", EnvelopeFlag, flag)
    status = _enum_member(f"{where}.status", Status, table.get("status", "OK"))
    ends = _typed(f"{where}.ends", table.get("ends", "exit 0"), str, 'an ending like "exit 0"')  # or "never"
    probe = _typed(f"{where}.probe", table.get("probe", False), bool, "true or false")
    policy = _enum_member(f"{where}.restart", RestartPolicy, table.get("restart", "never").upper().replace("-", "_"))
    limits = {}
    for key, bound in (("max_restarts", 0xFF), ("window_ms", 0xFFFF_FFFF), ("backoff_ms", 0xFFFF_FFFF)):
        value = _typed(f"{where}.{key}", table.get(key, 0), int, "a count")
        if not 0 <= value <= bound:
            raise ScenarioError(f"{where}.{key}: {value} is out of range 0..{bound}")
        limits[key] = value
    depends = _typed(f"{where}.depends", table.get("depends", []), list, "a list of role names")
    needs = tuple(_enum_member(f"{where}.depends[{i}]", Role, name) for i, name in enumerate(depends))
    restart = {"restart": policy, **limits, "await_probe": probe, "depends_on": needs}
    words = ends.split()
    if words == ["never"]:
        return ManifestEntry(image, role, flags, status, expect_exit=None, never_starts=True, **restart)
    if words == ["alive"]:
        return ManifestEntry(image, role, flags, status, expect_exit=None, **restart)
    if len(words) == 2 and words[0] == "exit" and words[1].isdigit():
        return ManifestEntry(image, role, flags, status, expect_exit=int(words[1]), **restart)
    if len(words) == 2 and words[0] == "fault":
        return ManifestEntry(image, role, flags, status, expect_exit=None, expect_fault=words[1], **restart)
    raise ScenarioError(f'{where}.ends: expected "exit N", "fault KIND", "alive" or "never", got {ends!r}')


def parse_scenario(text: str, source: str) -> Scenario:
    """The scenario in `text` (TOML); errors name `source` and the offending key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: not valid TOML: {exc}") from None
    allowed = {"name", "description", "services", "spawn", "expect", "inject", "boot"}
    _keys(source, data, allowed, frozenset({"name", "spawn"}))
    name = _typed(f"{source}: name", data["name"], str, "a string")
    description = _typed(f"{source}: description", data.get("description", ""), str, "a string")
    spawns = _typed(f"{source}: spawn", data["spawn"], list, "an array of [[spawn]] tables")
    manifest = tuple(_spawn(f"{source}: spawn[{i}]", table) for i, table in enumerate(spawns))
    services = None
    if "services" in data:
        table = _typed(f"{source}: services", data["services"], dict, "a table")
        _keys(f"{source}: services", table, {"irq_at_cycle"})
        irq = table.get("irq_at_cycle")
        if irq is not None:
            _typed(f"{source}: services.irq_at_cycle", irq, int, "a cycle count")
        services = Services(irq_at_cycle=irq)
    expect = Expectations()
    if "expect" in data:
        table = _typed(f"{source}: expect", data["expect"], dict, "a table")
        _keys(f"{source}: expect", table, {"crashd_reports", "logs", "halts"})
        reports = table.get("crashd_reports")
        if reports is not None:
            _typed(f"{source}: expect.crashd_reports", reports, int, "a count")
            if services is None:
                raise ScenarioError(f"{source}: expect.crashd_reports needs a [services] table (crashd)")
        logs = _typed(f"{source}: expect.logs", table.get("logs", []), list, "a list of strings")
        for i, line in enumerate(logs):
            _typed(f"{source}: expect.logs[{i}]", line, str, "a string")
        halts = table.get("halts")
        if halts is not None:
            _typed(f"{source}: expect.halts", halts, str, "a string")
        expect = Expectations(reports, tuple(logs), halts)
    injections = _typed(f"{source}: inject", data.get("inject", []), list, "an array of [[inject]] tables")
    inject = tuple(_injection(f"{source}: inject[{i}]", table) for i, table in enumerate(injections))
    before: tuple[Role, ...] = ()
    if "boot" in data:
        boot = _typed(f"{source}: boot", data["boot"], dict, "a table")
        _keys(f"{source}: boot", boot, {"before_procd"})
        roles = _typed(f"{source}: boot.before_procd", boot.get("before_procd", []), list, "a list of role names")
        before = tuple(_enum_member(f"{source}: boot.before_procd[{i}]", Role, r) for i, r in enumerate(roles))
        if {Role.ROOTD, Role.PROCD, Role.GENERIC} & set(before):
            raise ScenarioError(f"{source}: boot.before_procd: ROOTD, PROCD and GENERIC cannot be started there")
        for role in before:
            if role >= 32:  # procd's envelope lists them in started_roles, a u32 of role bits
                raise ScenarioError(f"{source}: boot.before_procd: {role.name} cannot be started there (not a service)")
    return Scenario(name, description, manifest, services, expect, inject, before)


def _injection(where: str, table: Any) -> Injection:
    _typed(where, table, dict, "a table")
    _keys(where, table, {"image", "fault_at_instruction", "fail_create", "times"}, frozenset({"image"}))
    image = _typed(f"{where}.image", table["image"], str, "an image name")
    if image not in [b.name for b in BOOT_IMAGES]:
        raise ScenarioError(f"{where}.image: unknown image {image!r}")
    fault_at = table.get("fault_at_instruction")
    if fault_at is not None and (_typed(f"{where}.fault_at_instruction", fault_at, int, "a count") < 0):
        raise ScenarioError(f"{where}.fault_at_instruction: must not be negative")
    fail = table.get("fail_create")
    status = None if fail is None else _enum_member(f"{where}.fail_create", Status, fail)
    if status is Status.OK:
        raise ScenarioError(f"{where}.fail_create: OK is not a failure")
    if (fault_at is None) == (status is None):
        raise ScenarioError(f"{where}: give exactly one of fault_at_instruction and fail_create")
    times = _typed(f"{where}.times", table.get("times", 1), int, "a count")
    return Injection(image, fault_at, status, times)


def builtin_scenarios() -> list[Scenario]:
    """The scenarios shipped with procd-emu, by name."""
    folder = resources.files("procd_model").joinpath("scenarios")
    found = sorted((entry for entry in folder.iterdir() if entry.name.endswith(".toml")), key=lambda e: e.name)
    parsed = [parse_scenario(entry.read_text(encoding="utf-8"), f"scenarios/{entry.name}") for entry in found]
    return sorted(parsed, key=lambda scenario: scenario.name)


def unmet_expectations(scenario: Scenario, logs: list[str]) -> list[str]:
    """What the run did not show that the scenario's [expect] table asks for."""
    problems = []
    expect = scenario.expect
    if expect.halts is not None:
        problems.append(f"bootstrap did not halt ({expect.halts!r} expected)")
    if expect.crashd_reports is not None and scenario.services is not None:
        held = len(scenario.services.crashd.records)
        if held != expect.crashd_reports:
            problems.append(f"crashd holds {held} reports, expected {expect.crashd_reports}")
    for wanted in expect.logs:
        if not any(line.startswith(wanted) for line in logs):
            problems.append(f"no log line starts with {wanted!r}")
    return problems


def load_scenario(name_or_path: str) -> Scenario:
    """A built-in scenario by name, or a user's scenario file."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ScenarioError(f"{path}: cannot read: {exc.strerror or exc}") from None
        return parse_scenario(text, str(path))
    for scenario in builtin_scenarios():
        if scenario.name == name_or_path:
            return scenario
    names = ", ".join(s.name for s in builtin_scenarios())
    raise ScenarioError(f"no scenario named {name_or_path!r} (built in: {names}); a file needs a .toml name")
