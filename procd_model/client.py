"""Talk to a booted native procd as a client: send requests, collect replies.

This is what fuzzing and benchmarks build on: `serve(requests)` boots procd under rootd, then a
client actor CALLs procd with each request (through capabilities the harness installs with
the badge each request names) and records every reply. Nothing on the Python side answers for procd.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from emu.trace import Trace
from emu.world import RunOutcome
from procd_model.abi import BADGE_ROOTD, CapType, Rights, Role, Status, Syscall
from procd_model.actor import ActorProgram, SyscallRequest
from procd_model.caps import Capability, CapTable
from procd_model.kernel import Kernel, Process
from procd_model.messages import Message
from procd_model.rootd import Rootd, Services
from procd_model.world import run_bootstrap

DEFAULT_MAX_INSTRUCTIONS = 100_000_000


@dataclass(frozen=True)
class Request:
    """One CALL to procd. `message` bytes go into the IPC buffer verbatim (garbage is allowed)."""

    message: Message | bytes
    badge: int = BADGE_ROOTD
    attach_cap: bool = False
    """Attach a spare notification capability to the message (procd must refuse and delete it)."""


@dataclass
class Session:
    outcome: RunOutcome
    trace: Trace
    kernel: Kernel | None = None
    procd: Process | None = None
    replies: list[tuple[Status, Message | None]] = field(default_factory=list)
    """Per request: the CALL's syscall status and the reply message (None if the CALL failed)."""


def serve(
    requests: Sequence[Request],
    trace: Trace | None = None,
    max_instructions: int = DEFAULT_MAX_INSTRUCTIONS,
    services: Services | None = None,
    before_procd: tuple[Role, ...] = (),
) -> Session:
    """Boot procd (with `services` if given, after the services of `before_procd` that rootd
    starts itself), then send `requests` in order from a client actor and collect every reply."""
    session = Session(RunOutcome(False, "", ""), trace if trace is not None else Trace())

    def on_ready(rootd: Rootd) -> None:
        kernel = rootd.kernel
        procd = kernel.procs[rootd.procd_pid]
        session.kernel, session.procd = kernel, procd
        caps = CapTable()
        slot_of: dict[int, int] = {}
        for badge in sorted({r.badge for r in requests}):
            slot = caps.install(Capability(CapType.ENDPOINT, procd.endpoint, Rights.SEND | Rights.GRANT, badge))
            assert slot is not None
            slot_of[badge] = slot
        spare = caps.install(Capability(CapType.NOTIFICATION, kernel.new_notification().obj, Rights.SEND))
        assert spare is not None
        kernel.spawn_actor("client", _client(requests, slot_of, spare, session), caps)

    session.outcome = run_bootstrap(
        session.trace, max_instructions, manifest=(), on_ready=on_ready, services=services, before_procd=before_procd
    )
    return session


def _client(requests: Sequence[Request], slot_of: dict[int, int], spare: int, session: Session) -> ActorProgram:
    for request in requests:
        message = request.message
        if request.attach_cap and isinstance(message, Message):
            message = Message(message.op, message.payload, (spare,))
        result = yield SyscallRequest(Syscall.CALL, (slot_of[request.badge],), message)
        reply = result.message() if result.status is Status.OK else None
        session.replies.append((result.status, reply))
