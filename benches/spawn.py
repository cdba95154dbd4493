"""SPAWN_SERVICE round trips and guest instructions per second through the full stack.

    python3 -m benches.spawn [--requests N] [--repeat K]

Three workloads, all with the native procd under the emulator, measured in one run:
- spawn: rootd-badged SPAWN_SERVICE requests that each create and start a phase0-exit process
  (procd's table holds PROCD_MAX_PROCESSES entries, so a run makes that many);
- serve: N requests procd rejects (image 0): the RECV -> dispatch -> REPLY loop alone;
- boot: the default scenario, end to end.
Each figure is the best of K repetitions (the machines are noisy; compare figures from one run).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

from emu.trace import Trace
from procd_model.abi import PROCD_MAX_PROCESSES, SPAWN_SERVICE_REQUEST, ProcdOp, Role, Status
from procd_model.client import Request, ask_all
from procd_model.messages import Message
from procd_model.world import run_bootstrap


@dataclass(frozen=True)
class Measurement:
    name: str
    round_trips: int
    instructions: int
    seconds: float

    def row(self) -> str:
        trips = f"{self.round_trips / self.seconds:>10.0f}" if self.round_trips else f"{'-':>10}"
        return (
            f"{self.name:<8} {self.round_trips:>7} {trips} {self.instructions:>12} "
            f"{self.instructions / self.seconds / 1e6:>9.2f} {self.seconds * 1e3:>9.1f}"
        )


def spawn_request(image_id: int) -> Request:
    payload = SPAWN_SERVICE_REQUEST.pack(image_id=image_id, role=Role.TEST, flags=0)
    return Request(Message(ProcdOp.SPAWN_SERVICE, payload))


def measure(name: str, requests: list[Request], expect: Status) -> Measurement:
    started = time.perf_counter()
    session = ask_all(requests)
    seconds = time.perf_counter() - started
    assert session.outcome.ok or session.outcome.stop == "unexpected", session.outcome.detail
    statuses = {Status(m.op) for _, m in session.replies if m is not None}
    assert statuses == {expect}, f"{name}: unexpected replies {statuses}"
    return Measurement(name, len(requests), session.outcome.instructions, seconds)


def measure_boot() -> Measurement:
    started = time.perf_counter()
    outcome = run_bootstrap(Trace(), 100_000_000)
    seconds = time.perf_counter() - started
    assert outcome.ok, outcome.detail
    return Measurement("boot", 1, outcome.instructions, seconds)


def best(run: Callable[[], Measurement], repeat: int) -> Measurement:
    return min((run() for _ in range(repeat)), key=lambda m: m.seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=2000, help="requests in the serve workload")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions; the best is reported")
    args = parser.parse_args(argv)
    rows = [
        best(lambda: measure("spawn", [spawn_request(2)] * PROCD_MAX_PROCESSES, Status.OK), args.repeat),
        best(lambda: measure("serve", [spawn_request(0)] * args.requests, Status.INVALID_ARGUMENT), args.repeat),
        best(measure_boot, args.repeat),
    ]
    print(f"{'workload':<8} {'trips':>7} {'trips/s':>10} {'guest insn':>12} {'M insn/s':>9} {'ms':>9}")
    for row in rows:
        print(row.row())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
