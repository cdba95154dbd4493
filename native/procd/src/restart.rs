//! Restart policy: the backoff timer after a death and the relaunch when it fires.

use crate::LogPart::{Dec, Text};
use crate::{
    Kernel, ProcState, Procd, ProcessEntry, Restart, next_generation, process_id, split_id,
    status_part,
};
use abi::{
    BADGE_KERNEL, Message, kernel_op, read_u32, read_u64, status, timer_event, timer_request,
    write_u32, write_u64,
};

impl Procd {
    /// The child in entry `index` (occupant `entry`, still live) ended with `death` and `code`
    /// and its restart policy restarts it.
    ///
    /// CALL kernel-control READ_MONOTONIC_CLOCK for `now`. Then, with `counted` the restarts
    /// that count for a run ending at `now` ([`Restart::counted`]: 0 if the run outlasted the
    /// window):
    ///
    /// - `counted >= max_restarts`: log `procd: child <pid> over its restart bound`, then
    ///   `hold_failed`.
    /// - Otherwise mark the entry RESTARTING (same pid and generation, no endpoint slot, its
    ///   count set to `counted`), delete procd's capability to the child's endpoint, and CALL
    ///   kernel-control SET_TIMER at `now + (backoff_ms << min(counted, 16))` (saturating),
    ///   cookie = the entry's id
    ///   (index | generation << 16), endpoint slot = procd's SELF_ENDPOINT; then log
    ///   `procd: child <pid> restarting in <delay> ms`.
    ///
    /// If READ_MONOTONIC_CLOCK or SET_TIMER fails: log `procd: restart of <pid> failed:
    /// <STATUS>`, then `hold_failed`.
    pub(crate) fn restart_after(
        &mut self,
        k: &mut impl Kernel,
        msg: &mut Message,
        index: usize,
        entry: ProcessEntry,
        death: u16,
        code: u32,
    ) {
        let now = match self.read_clock(k, msg) {
            Ok(now) => now,
            Err(failure) => {
                log_restart_failed(k, entry.pid, failure);
                return self.hold_failed(k, index, entry, death, code);
            }
        };
        let counted = entry.restart.counted(now);
        if counted >= entry.restart.max_restarts {
            k.debug_write(&[
                Text(b"procd: child "),
                Dec(u64::from(entry.pid)),
                Text(b" over its restart bound"),
            ]);
            return self.hold_failed(k, index, entry, death, code);
        }
        let delay = entry.restart.delay(counted);
        let restarting = ProcessEntry {
            state: ProcState::Restarting { death, code },
            endpoint_slot: 0,
            // A run that outlasted the window cleared the count.
            restart: Restart {
                count: counted,
                ..entry.restart
            },
            ..entry
        };
        self.table.set(index, restarting);
        k.cap_delete(entry.endpoint_slot);
        let Some(cookie) = process_id(index, entry.generation) else {
            log_restart_failed(k, entry.pid, status::INTERNAL);
            return self.hold_failed(k, index, restarting, death, code);
        };
        let payload = msg.start(kernel_op::SET_TIMER, timer_request::SIZE);
        // Cannot fail: the payload is timer_request::SIZE bytes.
        let _ = write_u64(payload, timer_request::AT_TICKS, now.saturating_add(delay))
            && write_u32(payload, timer_request::COOKIE, cookie)
            && write_u32(payload, timer_request::ENDPOINT_SLOT, self.self_endpoint);
        match self.kernel_call(k, msg) {
            Ok(reply) => {
                // An OK SET_TIMER reply carries no capabilities; a broken kernel's are not kept.
                self.discard_caps(k, &reply);
                k.debug_write(&[
                    Text(b"procd: child "),
                    Dec(u64::from(entry.pid)),
                    Text(b" restarting in "),
                    Dec(delay),
                    Text(b" ms"),
                ]);
            }
            Err(failure) => {
                log_restart_failed(k, entry.pid, failure);
                self.hold_failed(k, index, restarting, death, code);
            }
        }
    }

    /// TIMER from the kernel (badge already checked): a restart's backoff is over.
    ///
    /// Ignored if the payload is not a `timer_event`, capabilities came along, or the cookie
    /// does not name (index | generation << 16) a RESTARTING entry with that generation (a
    /// STOP or KILL freed it meanwhile, or the cookie is not one of procd's). Otherwise count
    /// the restart, its run starting at the event's `ticks` ([`Restart::record`]), and
    /// [`Procd::launch`] the same image, role and flags again in the same entry with the next
    /// generation (a new pid and id; the old id is stale from then on); log `procd: restarted <old pid> as <new pid>`.
    /// If the launch fails: log `procd: restart of <old pid> failed: <STATUS>` and
    /// `hold_failed` the entry with its old pid, generation and the death it restarted after.
    pub(crate) fn timer(&mut self, k: &mut impl Kernel, msg: &mut Message) {
        let event = msg.header();
        if usize::from(event.payload_len) != timer_event::SIZE || event.cap_count != 0 {
            return;
        }
        let payload = msg.payload();
        let (Some(cookie), Some(ticks)) = (
            read_u32(payload, timer_event::COOKIE),
            read_u64(payload, timer_event::TICKS),
        ) else {
            return;
        };
        let Some((index, generation)) = split_id(cookie) else {
            return;
        };
        let Some(entry) = self.table.entries().get(index).copied() else {
            return;
        };
        let ProcState::Restarting { death, code } = entry.state else {
            return;
        };
        if entry.generation != generation {
            return;
        }
        let mut restart = entry.restart;
        restart.record(ticks);
        let entry = ProcessEntry { restart, ..entry };
        self.table.set(index, entry);
        match self.launch(
            k,
            msg,
            index,
            next_generation(generation),
            entry,
            BADGE_KERNEL,
            Some(entry.pid),
        ) {
            Ok(spawned) => {
                k.debug_write(&[
                    Text(b"procd: restarted "),
                    Dec(u64::from(entry.pid)),
                    Text(b" as "),
                    Dec(u64::from(spawned.pid)),
                ]);
                self.release_held(k, msg);
            }
            Err(failure) => {
                log_restart_failed(k, entry.pid, failure);
                self.hold_failed(k, index, entry, death, code);
            }
        }
    }
}

/// Log `procd: restart of <pid> failed: <STATUS>`.
pub(crate) fn log_restart_failed(k: &mut impl Kernel, pid: u32, code: u32) {
    k.debug_write(&[
        Text(b"procd: restart of "),
        Dec(u64::from(pid)),
        Text(b" failed: "),
        status_part(code),
    ]);
}
