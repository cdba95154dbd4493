"""What one fuzz example does: procd as it was just booted, a few lifecycle steps, each held to the spec.

`ProcdTarget.check(steps)` raises `ProcdMisbehaved` (with a failure key) when procd breaks its
contract (`harness.perform`: the spec, exactly one defined status per request, children within
their intake spec), and leaves the procd blocks the example ran in `coverage` until the campaign
merges them. Each example starts from a world snapshot taken right after boot.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

from emu.coverage import CoverageMap
from emu.cpu import GuestCpu
from emu.elf import ElfImage, Perm
from procd_model.client import Conversation, ConversationError, Request
from procd_model.cpu_model import DEFAULT_CPU
from procd_model.dump import DumpRecorder, replay_inputs
from procd_model.harness import ProcdMisbehaved, agree, perform, procd_died, talk_to_procd
from procd_model.images import boot_image_named, load_boot_image
from procd_model.reference import ProcdSpec, SpecFollower
from procd_model.strategies import (
    LifecycleStep,
    arbitrary_requests,
    near_valid_spawns,
    valid_spawns,
)
from procd_model.world_snapshot import SnapshotError, WorldSnapshot

MAX_INSTRUCTIONS = 50_000_000
"""Guest instructions one step may run before it counts as a stall (a restart storm of 255
restarts with no backoff runs about 5 million)."""


def one_request() -> st.SearchStrategy[Request]:
    """A valid spawn (half of the time), a near-valid one, or anything at all."""
    near = near_valid_spawns().map(lambda near: near.request)
    return st.one_of(valid_spawns(), valid_spawns(), near, arbitrary_requests())


def text_range(image: ElfImage) -> tuple[int, int]:
    """[begin, end) of the image's executable segments."""
    code = [s for s in image.segments if s.perms & Perm.X]
    if not code:
        raise ValueError(f"{image.name}: no executable segment")
    return min(s.vaddr for s in code), max(s.end for s in code)


@dataclass
class Booted:
    """A booted world to restore for each example, and the spec as it was then."""

    talk: Conversation
    follower: SpecFollower
    snapshot: WorldSnapshot
    spec: ProcdSpec
    seen: int


class ProcdTarget:
    """Runs examples against procd (the committed one, or `procd_image`)."""

    def __init__(self, procd_image: ElfImage | None = None, *, digests: bool = False, cpu: str = DEFAULT_CPU) -> None:
        """`digests`: the world's trace is a full one (its digest identifies an example's run, as
        the stateful check compares); by default it keeps only what the spec follower reads.
        `cpu`: the CPU model of the virtual clock."""
        self.procd_image = procd_image
        self.digests = digests
        self.cpu = cpu
        self.image = procd_image if procd_image is not None else load_boot_image(boot_image_named("procd").image_id)
        begin, end = text_range(self.image)
        self.coverage = CoverageMap(begin, end)
        """Blocks run by examples since the campaign's last merge (see `merge_coverage`)."""
        self.total = CoverageMap(begin, end)
        """Blocks run by any example so far."""
        self.last_steps: Sequence[LifecycleStep] = ()
        self._booted: Booted | None = None

    def _instrument(self, cpu: GuestCpu, image: ElfImage, _pid: int) -> None:
        if image.name == "procd":
            cpu.attach_coverage(self.coverage)

    def _boot(self) -> Booted:
        """procd booted and back in RECV, with the coverage hook on its engine, and a snapshot."""
        try:
            talk, follower = talk_to_procd(
                MAX_INSTRUCTIONS, self.procd_image, self._instrument, lean=not self.digests, cpu=self.cpu
            )
            agree(talk, follower)
        except (ConversationError, ProcdMisbehaved) as exc:
            raise TargetError(f"procd does not boot: {exc}") from None
        # Only procd's engine carries the hook: children's engines come from the warm pool.
        talk.kernel.instrument = None
        return Booted(talk, follower, talk.snapshot(), follower.spec.copy(), follower.seen)

    def fresh(self) -> tuple[Conversation, SpecFollower]:
        """The booted world, as it was right after boot (restored, or booted again), and the spec
        following it. The same objects each time: what a caller did to them is undone."""
        booted = self._booted
        if booted is not None:
            try:
                booted.talk.restore(booted.snapshot)
            except SnapshotError:
                booted = None
        if booted is None:
            booted = self._booted = self._boot()
        booted.follower.spec = booted.spec.copy()
        booted.follower.seen = booted.seen
        return booted.talk, booted.follower

    def check(self, steps: Sequence[LifecycleStep]) -> None:
        """Carry out `steps` in order on procd just booted, each held to the spec (ProcdMisbehaved)."""
        self.last_steps = steps
        talk, follower = self.fresh()
        try:
            ids: list[int] = []
            for step in steps:
                perform(talk, follower, step, ids)
        except ConversationError as exc:
            self._booted = None  # a machine that did not go quiet is not restored from
            if talk.procd.state.is_dead:
                raise procd_died(talk) from None
            raise ProcdMisbehaved(f"the machine did not go quiet: {exc}", f"stall:{talk.stop.kind}") from None
        except ProcdMisbehaved:
            if talk.procd.state.is_dead:
                self._booted = None
            raise
        except Exception as exc:  # an emulator or model bug: a finding too, never a crash of the campaign
            self._booted = None
            raise ProcdMisbehaved(f"the emulator raised {exc!r}", f"error:{type(exc).__name__}") from exc

    def dump(self, steps: Sequence[LifecycleStep], folder: Path, replay_file: Path) -> list[Path]:
        """Run `steps` on procd freshly booted with crash dumps on (written to `folder`): the dumps
        written. A dump made this way names `replay_file`, which replays it (`python -m emu
        replay`); the dump itself is for reading (`python -m emu dump`) and for gdb."""
        inputs = replay_inputs("procd_model.world", MAX_INSTRUCTIONS, self.cpu)
        inputs["fuzz_replay"] = str(replay_file)
        recorder = DumpRecorder(None, folder, inputs)
        talk, follower = talk_to_procd(MAX_INSTRUCTIONS, self.procd_image, cpu=self.cpu)
        recorder.attach(talk.kernel)
        ids: list[int] = []
        with contextlib.suppress(ProcdMisbehaved, ConversationError):
            for step in steps:
                perform(talk, follower, step, ids)
        talk.close()
        return list(recorder.written)

    def merge_coverage(self) -> int:
        """Fold the blocks examples ran since the last call into `total`; how many were new."""
        return self.coverage.fold_into(self.total)


class TargetError(Exception):
    """The target cannot run examples at all (e.g. the procd given does not boot)."""
