"""Restarts are never unbounded: every restart-policy value, on the native procd and in the spec.

A child that keeps dying within `window_ms` of starting (one that always faults, or one that exits
cleanly under ALWAYS) is restarted at most `max_restarts` times, whatever the window and the
backoff (0 and the maxima included), and then held FAILED. The native procd runs under the
emulator; the executable spec (procd_model/reference.py) must agree with it request by request.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import example, given, settings
from hypothesis import strategies as st

from emu.trace import Trace
from procd_model.abi import RestartPolicy, Role
from procd_model.reference import ProcdSpec, check_against_spec, native_steps
from procd_model.rootd import ManifestEntry
from procd_model.world import run_bootstrap

U32_MAX = 0xFFFF_FFFF
BOOT_INSTRUCTIONS = 100_000
"""Generous room for booting procd and the first launch."""
RESTART_INSTRUCTIONS = 40_000
"""Generous room for one death and restart (about 12,000 instructions today)."""


@dataclass(frozen=True)
class Child:
    image: str
    expect_exit: int | None
    expect_fault: str | None


FAULTS = Child("phase0-fault-kill", None, "unmapped-write")
EXITS_CLEANLY = Child("phase0-exit", 0, None)

children = st.one_of(
    st.tuples(st.just(FAULTS), st.sampled_from(list(RestartPolicy))),
    st.tuples(st.just(EXITS_CLEANLY), st.just(RestartPolicy.ALWAYS)),
)


def procd_lines(trace: Trace) -> list[str]:
    texts = (str(e.fields["text"]) for e in trace.events if e.kind == "log")
    return [text for text in texts if text.startswith("procd:")]


@settings(max_examples=6, deadline=None)
@given(
    child=children,
    max_restarts=st.sampled_from([0, 1, 2, 255]),
    window_ms=st.sampled_from([0, 1, 2, 1000, U32_MAX]),
    backoff_ms=st.sampled_from([0, 1, U32_MAX]),
)
@example(child=(EXITS_CLEANLY, RestartPolicy.ALWAYS), max_restarts=2, window_ms=0, backoff_ms=0)
@example(child=(FAULTS, RestartPolicy.ON_FAILURE), max_restarts=2, window_ms=1, backoff_ms=U32_MAX)
@example(child=(EXITS_CLEANLY, RestartPolicy.ALWAYS), max_restarts=255, window_ms=0, backoff_ms=U32_MAX)
def test_a_child_that_keeps_dying_ends_failed_after_at_most_max_restarts(
    child: tuple[Child, RestartPolicy], max_restarts: int, window_ms: int, backoff_ms: int
) -> None:
    image, policy = child
    entry = ManifestEntry(
        image.image,
        Role.TEST,
        expect_exit=image.expect_exit,
        expect_fault=image.expect_fault,
        restart=policy,
        max_restarts=max_restarts,
        window_ms=window_ms,
        backoff_ms=backoff_ms,
    )
    trace = Trace()
    limit = BOOT_INSTRUCTIONS + RESTART_INSTRUCTIONS * (max_restarts + 1)
    outcome = run_bootstrap(trace, limit, manifest=(entry,))
    assert outcome.ok, outcome.detail  # not the instruction limit: the restarts ended

    lines = procd_lines(trace)
    restarts = [line for line in lines if line.startswith("procd: restarted ")]
    # Each run dies microseconds after it starts, far within any window of 1 ms or more (and
    # a window of 0 never clears the count): so exactly max_restarts restarts, none under NEVER.
    expected = 0 if policy is RestartPolicy.NEVER else max_restarts
    assert len(restarts) <= max_restarts
    assert len(restarts) == expected
    launched = [e.pid for e in trace.events if e.kind == "process.create" and e.fields.get("name") == image.image]
    assert len(launched) == 1 + expected
    last_pid = launched[-1]
    assert lines[-1] == f"procd: child {last_pid} failed", lines[-3:]
    assert (f"procd: child {last_pid} over its restart bound" in lines) == (policy is not RestartPolicy.NEVER)

    steps = native_steps(trace.events, next(e.pid for e in trace.events if e.fields.get("name") == "procd"))
    divergence = check_against_spec(steps, ProcdSpec())
    assert divergence is None, divergence.describe()
