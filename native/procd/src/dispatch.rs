//! Dispatch: one request or kernel event to the handler of its op.

use crate::{Answer, Ending, Kernel, Procd};
use abi::{BADGE_KERNEL, KernelEvent, Message, kernel_event, procd_op, status};

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
        // place that maps op numbers to handlers (kernel events above). It stays on the numbers:
        // as a match on `ProcdOp::try_from(request.op)`, whose `Err` arm tells a forged kernel
        // event (DENIED) from an unknown op, that check compiles to a select instead of a
        // branch and the serving loop's instructions change (the held traces count them).
        let result = match request.op {
            procd_op::SPAWN_SERVICE => self
                .spawn_service(k, badge, msg)
                .map(|spawned| spawned.write_reply(msg)),
            procd_op::SPAWN => self
                .spawn_for_client(k, badge, msg)
                .map(|spawned| spawned.write_reply(msg)),
            procd_op::STOP => self.end_process(k, badge, msg, Ending::Stop),
            procd_op::KILL => self.end_process(k, badge, msg, Ending::Kill),
            procd_op::REAP => self.reap(badge, msg),
            procd_op::STATUS => self.status(badge, msg),
            procd_op::LIST => self.list(badge, msg),
            procd_op::AUDIT_READ => self.audit_read(badge, msg),
            procd_op::PROBE_COMPLETE => self.probe_complete(k, badge, &request).map(|()| {
                msg.start(status::OK, 0);
            }),
            kernel_event::CHILD_DIED | kernel_event::TIMER => Err(status::DENIED),
            _ => Err(status::INVALID_ARGUMENT),
        };
        if let Err(code) = result {
            msg.start(code, 0);
        }
        Answer::Reply
    }
}
