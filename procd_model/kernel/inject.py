"""What the world hands the kernel from outside the modelled machine: fault injection (a
scenario's or a test's), observers of process deaths, and the crash watch (dumps). The kernel
owns none of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from emu.cpu import Fault
from procd_model.abi import Status
from procd_model.kernel.state import Process


class Injector(Protocol):
    """Faults the kernel asks about at the points where it can inject them."""

    def fault_at(self, image: str) -> int | None:
        """The instruction count at which the process being created for `image` is killed
        (None: never). Asked once per guest created."""

    def create_failure(self, image: str) -> Status | None:
        """What a CREATE_PROCESS for `image` that passed every check answers instead of creating
        it (None: create it). Asked once per such call."""


class NoInjection:
    """The injector of a machine nobody tampers with."""

    def fault_at(self, image: str) -> int | None:
        return None

    def create_failure(self, image: str) -> Status | None:
        return None


@dataclass
class ScriptedFaults:
    """An injector a scenario or a test fills in: kill the next process of an image at an
    instruction count; fail the next CREATE_PROCESS calls for an image."""

    kill_at: dict[str, int] = field(default_factory=dict)
    """image name -> instruction count at which its next process is killed"""
    create_failures: dict[str, list[tuple[Status, int]]] = field(default_factory=dict)
    """image name -> (status, times): what the next CREATE_PROCESS calls for it answer, in order"""

    def fail_creates(self, image: str, status: Status, times: int = 1) -> None:
        """Answer the next `times` CREATE_PROCESS calls for `image` that pass the checks with
        `status` (after any failures already queued for it)."""
        self.create_failures.setdefault(image, []).append((status, times))

    def fault_at(self, image: str) -> int | None:
        return self.kill_at.pop(image, None)

    def create_failure(self, image: str) -> Status | None:
        queued = self.create_failures.get(image)
        if not queued:
            return None
        status, times = queued[0]
        if times > 1:
            queued[0] = (status, times - 1)
        else:
            queued.pop(0)
        return status


class DeathObserver(Protocol):
    """Told of every process death, after the kernel has buried it (queues left, supervisor told)."""

    def process_died(self, proc: Process) -> None: ...


@dataclass(frozen=True)
class Crash:
    """A guest's crash: a fault (`fault` set) or a panic (`panic`: the line its panic handler
    wrote, with file:line and message)."""

    fault: Fault | None = None
    panic: str | None = None


class CrashWatch(Protocol):
    """Told of every guest crash while the guest is still whole: registers, memory and the
    kernel's state are as they were when it crashed (nothing is torn down yet)."""

    def crashed(self, proc: Process, crash: Crash) -> bool:
        """Record the crash (a dump); True stops the machine right here, the process left as it
        was (a replay stopping at the crash it reproduces)."""


class NoWatch:
    """Nobody records crashes."""

    def crashed(self, proc: Process, crash: Crash) -> bool:
        return False
