"""procd never stalls on a peer: its REPORT to crashd is a non-blocking send (NBSEND).

A crashd that does not receive loses the reports (procd logs each one dropped), and procd goes on
serving: it restarts its children and answers rootd. The native procd runs under the emulator and
the executable spec agrees with it.
"""

from __future__ import annotations

from emu.trace import Trace
from procd_model.abi import CapPurpose, RestartPolicy, Role
from procd_model.actor import ActorProgram
from procd_model.peers import Crashd
from procd_model.reference import ProcdSpec, check_against_spec, native_steps
from procd_model.rootd import ManifestEntry, Services
from procd_model.world import run_bootstrap

MANIFEST = (
    ManifestEntry(
        "phase0-fault-kill",
        Role.TEST,
        expect_exit=None,
        expect_fault="unmapped-write",
        restart=RestartPolicy.ON_FAILURE,
        max_restarts=3,
        window_ms=1000,
        backoff_ms=1,
    ),
    ManifestEntry("phase0-exit", Role.TEST),
)


class DeafCrashd(Crashd):
    """A crashd that never receives: its process ends at once, and its endpoint stays."""

    def program(self, slot: int) -> ActorProgram:
        yield from ()


def test_a_crashd_that_never_receives_does_not_stop_procd() -> None:
    trace = Trace()
    outcome = run_bootstrap(trace, 5_000_000, manifest=MANIFEST, services=Services(crashd=DeafCrashd()))
    assert outcome.ok, outcome.detail
    logs = [str(e.fields["text"]) for e in trace.events if e.kind == "log"]
    dropped = [line for line in logs if line.startswith("procd: crashd report of child ")]
    restarted = [line for line in logs if line.startswith("procd: restarted ")]
    assert len(dropped) == 4 and all(line.endswith(" dropped: crashd is not receiving") for line in dropped)
    assert len(restarted) == 3, "procd went on serving its TIMERs"
    assert "phase0-exit: running" in logs, "and rootd's next spawn"
    procd = next(e.pid for e in trace.events if e.kind == "process.create" and e.fields.get("name") == "procd")
    divergence = check_against_spec(
        native_steps(trace.events, procd), ProcdSpec(holds=frozenset({CapPurpose.CRASHD_ENDPOINT}))
    )
    assert divergence is None, divergence.describe()


def test_a_receiving_crashd_gets_every_report() -> None:
    crashd = Crashd()
    outcome = run_bootstrap(Trace(), 5_000_000, manifest=MANIFEST, services=Services(crashd=crashd))
    assert outcome.ok, outcome.detail
    assert len(crashd.records) == 4
