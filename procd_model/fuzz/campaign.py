"""One fuzzing process: byte strings decoded into lifecycles, a corpus that new procd blocks grow.

Each round picks an input (fresh random bytes, or a mutation or splice of corpus entries; the
corpus starts from `decode.seed_inputs` and what the example database holds), decodes it into
lifecycle steps (`decode.py`) and runs them with `ProcdTarget.check`. An input that reaches procd
blocks no earlier one reached joins the corpus (and the shared example database, so other jobs
and machines start from it). A failure whose key is new is shrunk by Hypothesis (the input as a
`@given(binary())` test run with `fuzz_one_input`, then shrunk under a key check so the shrink
keeps the same failure) and reported once through `on_failure`.

The inputs come from `random.Random(seed)`, so with an example budget (`examples=`) a campaign
is reproducible; with a time budget it stops when the host clock says so.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.database import ExampleDatabase, InMemoryExampleDatabase

from procd_model.fuzz.decode import decode_steps, seed_inputs
from procd_model.fuzz.target import ProcdTarget
from procd_model.harness import ProcdMisbehaved
from procd_model.strategies import LifecycleStep

CORPUS_KEY = b"procd-emu.fuzz.corpus"
"""Where the example database keeps the corpus (inputs that reached new procd blocks)."""
FRESH_INPUT_BYTES = (4, 96)
"""Length range of a fresh random input."""
MAX_INPUT_BYTES = 1024
"""Longest input (mutations cut longer ones)."""
Decoder = Callable[[bytes], list[LifecycleStep]]


def as_hypothesis_binary(data: bytes) -> bytes:
    """The byte string with which `fuzz_one_input` draws exactly `data` from `st.binary()`:
    each byte preceded by a "one more" choice (0xFF) and the end by a "stop" choice (0x00)."""
    return b"".join(bytes((0xFF, byte)) for byte in data) + b"\x00"


def first_step_only(data: bytes) -> list[LifecycleStep]:
    """Decode only the input's first step (single-request examples, for `benches.fuzz`)."""
    return decode_steps(data, limit=1)


SHRINK_EXAMPLES = 2_000
"""Most examples one shrink may run."""


@dataclass(frozen=True)
class Failure:
    """A distinct failure, shrunk: its key, message, and the steps that reproduce it."""

    key: str
    message: str
    steps: tuple[LifecycleStep, ...]
    found_after: int
    """Examples the campaign ran before it found this one (this one included)."""


@dataclass
class Progress:
    """What a campaign has done so far."""

    examples: int = 0
    invalid: int = 0
    corpus: int = 0
    blocks: int = 0
    failures: list[str] = field(default_factory=list)


def _shrink_test(
    target: ProcdTarget,
    decode: Decoder,
    key: str,
    database: ExampleDatabase,
    found: list[Sequence[LifecycleStep]],
) -> Callable[..., None]:
    @settings(
        database=database,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.reuse, Phase.shrink],
        max_examples=SHRINK_EXAMPLES,
        report_multiple_bugs=False,
    )
    @given(st.binary(max_size=MAX_INPUT_BYTES).map(decode))
    def shrink_example(steps: list[LifecycleStep]) -> None:
        try:
            target.check(steps)
        except ProcdMisbehaved as exc:
            if exc.key == key:
                found.append(steps)
                raise

    return shrink_example


class Campaign:
    """Fuzz `target` from `seed`, sharing its corpus through `database` (None: none)."""

    def __init__(
        self,
        target: ProcdTarget,
        seed: int,
        database: ExampleDatabase | None = None,
        decode: Decoder = decode_steps,
    ) -> None:
        self.target = target
        self.decode = decode
        self.random = random.Random(seed)
        self.database = database
        shared = sorted(database.fetch(CORPUS_KEY)) if database is not None else []
        self.corpus: list[bytes] = [*seed_inputs(), *shared]
        self.progress = Progress(corpus=len(self.corpus))
        self.known: set[str] = set()

    def run(
        self,
        *,
        examples: int | None = None,
        seconds: float | None = None,
        until_failures: int | None = None,
        on_failure: Callable[[Failure], None] = lambda _: None,
        on_progress: Callable[[Progress], None] = lambda _: None,
    ) -> Progress:
        """Run until `examples` examples or `seconds` of host time have gone, or `until_failures`
        distinct failures were found (whichever comes first)."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while examples is None or self.progress.examples < examples:
            if deadline is not None and time.monotonic() >= deadline:
                break
            if until_failures is not None and len(self.progress.failures) >= until_failures:
                break
            failure = self.one_round()
            if failure is not None:
                on_failure(failure)
            on_progress(self.progress)
        return self.progress

    def one_round(self) -> Failure | None:
        """Run one input; the failure it found, shrunk, if its key is new."""
        data = self._next_input()
        self.progress.examples += 1
        steps = self.decode(data)
        if not steps:
            self.progress.invalid += 1
            return None
        try:
            self.target.check(steps)
        except ProcdMisbehaved as exc:
            self._merge_coverage()
            if exc.key in self.known:
                return None
            self.known.add(exc.key)
            self.progress.failures.append(exc.key)
            return self._shrink(data, exc)
        if self._merge_coverage():
            self._keep(data)
        return None

    def _merge_coverage(self) -> int:
        """Fold the example's blocks into the campaign's; how many were new (the count of blocks
        covered changes only then)."""
        fresh = self.target.merge_coverage()
        if fresh:
            self.progress.blocks = self.target.total.count()
        return fresh

    def _keep(self, data: bytes) -> None:
        self.corpus.append(data)
        self.progress.corpus = len(self.corpus)
        if self.database is not None:
            self.database.save(CORPUS_KEY, data)

    def _next_input(self) -> bytes:
        rng = self.random
        if not self.corpus or rng.random() < 0.2:
            return rng.randbytes(rng.randint(*FRESH_INPUT_BYTES))
        data = bytearray(rng.choice(self.corpus))
        for _ in range(rng.randint(1, 4)):
            data = _mutate(rng, data, self.corpus)
        return bytes(data[:MAX_INPUT_BYTES])

    def _shrink(self, data: bytes, first: ProcdMisbehaved) -> Failure:
        found: list[Sequence[LifecycleStep]] = []
        database = InMemoryExampleDatabase()
        test = _shrink_test(self.target, self.decode, first.key, database, found)
        message = str(first)
        with contextlib.suppress(ProcdMisbehaved):  # it fails: that puts it in `database`
            test.hypothesis.fuzz_one_input(as_hypothesis_binary(data))  # type: ignore[attr-defined]
        try:
            test()
        except ProcdMisbehaved as exc:
            message = str(exc)
        steps = tuple(found[-1]) if found else tuple(self.target.last_steps)
        return Failure(first.key, message, steps, self.progress.examples)


def _mutate(rng: random.Random, data: bytearray, corpus: list[bytes]) -> bytearray:
    """One AFL-style mutation: flip a bit, set a byte, overwrite or insert a run, cut, splice, or
    clone a run (steps repeated)."""
    if not data:
        return bytearray(rng.randbytes(8))
    choice = rng.randrange(7)
    at = rng.randrange(len(data))
    if choice == 0:
        data[at] ^= 1 << rng.randrange(8)
    elif choice == 1:
        data[at] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
    elif choice == 2:
        run = rng.randbytes(rng.randint(1, 16))
        data[at : at + len(run)] = run
    elif choice == 3:
        data[at:at] = rng.randbytes(rng.randint(1, 16))
    elif choice == 4 and len(data) > 8:
        end = min(len(data), at + rng.randint(1, 32))
        del data[at:end]
    elif choice == 5:
        data[at:at] = bytes(data[at : at + rng.randint(1, 16)])
    else:
        other = rng.choice(corpus)
        cut = rng.randrange(len(other) + 1)
        data = data[:at] + bytearray(other[cut:])
    return data
