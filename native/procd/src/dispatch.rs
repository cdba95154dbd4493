//! Dispatch: one request or kernel event to the handler of its op.

use crate::{Answer, Ending, Kernel, Procd};
use abi::{BADGE_KERNEL, KernelEvent, Message, ProcdOp, status};

impl Procd {
    /// Handle the message in `msg`, which arrived through a capability badged `badge`.
    ///
    /// Capabilities that came with the message are deleted first (procd keeps none it did not
    /// ask for).
    ///
    /// A message badged `BADGE_KERNEL` (which no capability can carry: the kernel sent it) is a
    /// kernel event: CHILD_DIED (see `child_died`) and TIMER (see `timer`) are acted on, other
    /// ops are ignored, and the answer is [`Answer::Silent`] (the kernel expects no reply; `msg`
    /// is scratch).
    ///
    /// Anything else is a request: the answer is [`Answer::Reply`] with the reply left in `msg`:
    /// header op = status, payload_len, no capabilities, reserved fields zero; error replies
    /// carry no payload. A request carrying capabilities is answered INVALID_ARGUMENT (after the
    /// badge check: SPAWN_SERVICE, STOP, KILL, REAP, STATUS, LIST and AUDIT_READ are DENIED unless the badge
    /// is `BADGE_ROOTD`, PROBE_COMPLETE unless it names a live child, SPAWN unless it names a
    /// RUNNING child with the SPAWNER flag). A CHILD_DIED or TIMER
    /// from anyone but the kernel is forged: DENIED. Unknown ops are INVALID_ARGUMENT.
    pub fn handle(&mut self, k: &mut impl Kernel, badge: u64, msg: &mut Message) -> Answer {
        let request = msg.header();
        self.discard_caps(k, &request);
        if badge == BADGE_KERNEL {
            match KernelEvent::try_from(request.op) {
                Ok(KernelEvent::ChildDied) => self.child_died(k, msg),
                Ok(KernelEvent::Timer) => self.timer(k, msg),
                Err(_) => {}
            }
            return Answer::Silent;
        }
        // Each op leaves its OK reply in `msg`; an error is written here. This match is the one
        // place that maps ops to handlers (kernel events above).
        let result = match ProcdOp::try_from(request.op) {
            Ok(ProcdOp::SpawnService) => self
                .spawn_service(k, badge, msg)
                .map(|spawned| spawned.write_reply(msg)),
            Ok(ProcdOp::Spawn) => self
                .spawn_for_client(k, badge, msg)
                .map(|spawned| spawned.write_reply(msg)),
            Ok(ProcdOp::Stop) => self.end_process(k, badge, msg, Ending::Stop),
            Ok(ProcdOp::Kill) => self.end_process(k, badge, msg, Ending::Kill),
            Ok(ProcdOp::Reap) => self.reap(badge, msg),
            Ok(ProcdOp::Status) => self.status(badge, msg),
            Ok(ProcdOp::List) => self.list(badge, msg),
            Ok(ProcdOp::AuditRead) => self.audit_read(badge, msg),
            Ok(ProcdOp::ProbeComplete) => self.probe_complete(k, badge, &request).map(|()| {
                msg.start(status::OK, 0);
            }),
            // A kernel event from anyone but the kernel is forged.
            Err(_) if KernelEvent::try_from(request.op).is_ok() => Err(status::DENIED),
            Err(_) => Err(status::INVALID_ARGUMENT),
        };
        if let Err(code) = result {
            msg.start(code, 0);
        }
        Answer::Reply
    }
}
