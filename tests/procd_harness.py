"""Drive the native procd from tests: boot it under rootd, then talk to it as a client actor."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from emu.trace import Trace
from emu.world import RunOutcome
from procd_model.abi import BADGE_ROOTD, CapType, Rights, Status
from procd_model.actor import ActorProgram, SyscallRequest
from procd_model.caps import Capability, CapTable
from procd_model.kernel import Kernel, Process
from procd_model.messages import Message
from procd_model.rootd import ManifestEntry, ProcdBoot, Rootd
from procd_model.world import run_bootstrap

MAX_INSTRUCTIONS = 20_000_000


@dataclass(frozen=True)
class Request:
    """One request a test client sends procd; `raw` bytes go into the IPC buffer verbatim."""

    message: Message | bytes
    badge: int = BADGE_ROOTD
    caps_from_client: bool = False


@dataclass
class Session:
    outcome: RunOutcome
    trace: Trace
    kernel: Kernel | None = None
    replies: list[tuple[Status, Message | None]] = field(default_factory=list)
    procd: Process | None = None


def boot(boot: ProcdBoot | None = None, manifest: Iterable[ManifestEntry] = ()) -> Session:
    trace = Trace()
    outcome = run_bootstrap(trace, MAX_INSTRUCTIONS, manifest=tuple(manifest), boot=boot)
    return Session(outcome, trace)


def serve(requests: list[Request]) -> Session:
    """Boot procd, then send `requests` from a client actor and collect every reply."""
    trace = Trace()
    session = Session(RunOutcome(False, "", ""), trace)

    def on_ready(rootd: Rootd) -> None:
        kernel = rootd.kernel
        procd = kernel.procs[rootd.procd_pid]
        session.kernel, session.procd = kernel, procd
        caps = CapTable()
        badges = sorted({r.badge for r in requests})
        slot_of = {}
        for badge in badges:
            cap = Capability(CapType.ENDPOINT, procd.endpoint, Rights.SEND | Rights.GRANT, badge)
            slot_of[badge] = caps.install(cap)
        spare = caps.install(Capability(CapType.NOTIFICATION, kernel.new_notification().obj, Rights.SEND))
        assert spare is not None

        def client() -> ActorProgram:
            for request in requests:
                message = request.message
                if request.caps_from_client and isinstance(message, Message):
                    message = Message(message.op, message.payload, (spare,))
                result = yield SyscallRequest(3, (slot_of[request.badge],), message)  # CALL
                reply = result.message() if result.status is Status.OK else None
                session.replies.append((result.status, reply))

        kernel.spawn_actor("client", client(), caps)

    session.outcome = run_bootstrap(trace, MAX_INSTRUCTIONS, manifest=(), on_ready=on_ready)
    return session
