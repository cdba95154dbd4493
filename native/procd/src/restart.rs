//! Restart policy: what a process's policy restarts and how often ([`Restart`]), the backoff
//! timer after a death, and the relaunch when it fires.

use crate::LogPart::{Dec, Text};
use crate::lifecycle::ChildFailed;
use crate::spawn::Launch;
use crate::{DeathKind, Kernel, ProcId, ProcState, Procd, ProcessEntry, status_part};
use abi::{
    BADGE_KERNEL, Message, kernel_op, read_u32, read_u64, restart_policy, status, timer_event,
    timer_request, write_u32, write_u64,
};

/// A process's restart policy (from its SPAWN_SERVICE request) and the restarts it has had.
///
/// `count` is the number of restarts since the count was last cleared. It is cleared only when
/// one run lasted the window: the clock (ticks, 1 per virtual millisecond) at its death minus
/// `run_start`, the clock when that run started, exceeds `window_ms` (the clock rounds down, so
/// only then did the run surely last `window_ms` of virtual time; the backoff before a run
/// never counts, as it comes before the run's start). `window_ms` 0 never clears it, so
/// `max_restarts` bounds the entry's restarts over its life. A process that keeps dying within
/// the window of starting is therefore restarted at most `max_restarts` times, whatever the
/// other values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Restart {
    /// When it is restarted.
    pub policy: RestartPolicy,
    /// Restarts allowed while the count is not cleared; a death with that many counted holds
    /// it FAILED (0: never restarted).
    pub max_restarts: u8,
    /// Ticks (milliseconds) a run must exceed to clear the count; 0: never cleared.
    pub window_ms: u32,
    /// Delay before a restart with none counted; doubled per restart counted (up to << 16).
    pub backoff_ms: u32,
    /// Restarts since the count was last cleared (saturating at 255).
    pub count: u8,
    /// Clock ticks when the current run started: the TIMER that relaunched it. 0 for the first
    /// run, whose start never matters (nothing is counted before it).
    pub run_start: u64,
}

/// When procd restarts a process that ended (`restart_policy` on the wire), parsed once from
/// its SPAWN_SERVICE request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum RestartPolicy {
    /// Never restarted.
    #[default]
    Never = restart_policy::NEVER,
    /// Restarted after a fault, a kill that was not a STOP, or a non-zero exit.
    OnFailure = restart_policy::ON_FAILURE,
    /// Restarted after any ending except a STOP.
    Always = restart_policy::ALWAYS,
}

impl TryFrom<u8> for RestartPolicy {
    type Error = UnknownPolicy;

    #[inline(always)]
    fn try_from(raw: u8) -> Result<Self, UnknownPolicy> {
        match raw {
            restart_policy::NEVER => Ok(Self::Never),
            restart_policy::ON_FAILURE => Ok(Self::OnFailure),
            restart_policy::ALWAYS => Ok(Self::Always),
            _ => Err(UnknownPolicy),
        }
    }
}

/// No `restart_policy` has that number: a request carrying it is INVALID_ARGUMENT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownPolicy;

impl From<UnknownPolicy> for u32 {
    fn from(_: UnknownPolicy) -> Self {
        status::INVALID_ARGUMENT
    }
}

impl Restart {
    /// A restart record for `policy` and its bounds, with no restarts counted.
    #[inline(always)]
    pub const fn new(
        policy: RestartPolicy,
        max_restarts: u8,
        window_ms: u32,
        backoff_ms: u32,
    ) -> Self {
        Self {
            policy,
            max_restarts,
            window_ms,
            backoff_ms,
            count: 0,
            run_start: 0,
        }
    }

    /// Whether the policy restarts a process after an ending that was (`failed`) or was not
    /// a failure (a STOP is never passed here: it never restarts).
    pub const fn wants(&self, failed: bool) -> bool {
        match self.policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => failed,
            RestartPolicy::Never => false,
        }
    }

    /// The restarts that count when the current run dies at clock `now`: 0 if the run lasted
    /// more than `window_ms` ticks (`window_ms` not 0), else `count`.
    pub const fn counted(&self, now: u64) -> u8 {
        let outlasted =
            self.window_ms != 0 && now.saturating_sub(self.run_start) > self.window_ms as u64;
        // Planted bug: the count is never cleared, however long a run lasted.
        if outlasted && !cfg!(feature = "planted-restart-count-never-resets") {
            0
        } else {
            self.count
        }
    }

    /// The backoff before the next restart with `counted` restarts counted:
    /// `backoff_ms << min(counted, 16)` ticks, at most `u32::MAX` (about 49.7 days): so even 255
    /// restarts at the longest backoff end long before virtual time does (2^64 cycles), where
    /// the kernel refuses a timer.
    pub fn delay(&self, counted: u8) -> u64 {
        (u64::from(self.backoff_ms) << counted.min(16)).min(u64::from(u32::MAX))
    }

    /// Record a restart whose run starts at clock `ticks`: one more counted (saturating).
    pub fn record(&mut self, ticks: u64) {
        self.count = self.count.saturating_add(1);
        self.run_start = ticks;
    }
}

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
        death: DeathKind,
        code: u32,
    ) {
        let now = match self.read_clock(k, msg) {
            Ok(now) => now,
            Err(failure) => {
                log_restart_failed(k, entry.pid, failure);
                return self.hold_failed(k, index, entry, death, code, ChildFailed);
            }
        };
        let counted = entry.restart.counted(now);
        if counted >= entry.restart.max_restarts {
            k.debug_write(&[
                Text(b"procd: child "),
                Dec(u64::from(entry.pid)),
                Text(b" over its restart bound"),
            ]);
            return self.hold_failed(k, index, entry, death, code, ChildFailed);
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
        let Some(cookie) = ProcId::new(index, entry.generation) else {
            log_restart_failed(k, entry.pid, status::INTERNAL);
            return self.hold_failed(k, index, restarting, death, code, ChildFailed);
        };
        let payload = msg.start(kernel_op::SET_TIMER, timer_request::SIZE);
        // Always fits: the payload is timer_request::SIZE bytes.
        let written = write_u64(payload, timer_request::AT_TICKS, now.saturating_add(delay))
            && write_u32(payload, timer_request::COOKIE, cookie.get())
            && write_u32(payload, timer_request::ENDPOINT_SLOT, self.self_endpoint);
        debug_assert!(written, "a fixed-size payload always fits its record");
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
                self.hold_failed(k, index, restarting, death, code, ChildFailed);
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
        let Some((index, generation)) = ProcId::from(cookie).split() else {
            return;
        };
        let Some(entry) = self.table.entries().get(index).copied() else {
            return;
        };
        let ProcState::Restarting { death, code } = entry.state else {
            return;
        };
        // Compared as numbers (`!=` on Generation compiles to other instructions; the held
        // traces count every one).
        if entry.generation.get() != generation.get() {
            return;
        }
        let mut restart = entry.restart;
        restart.record(ticks);
        let entry = ProcessEntry { restart, ..entry };
        self.table.set(index, entry);
        let launch = Launch {
            index,
            generation: generation.next(),
            service: entry,
            requester: BADGE_KERNEL,
            restart_of: Some(entry.pid),
        };
        match self.launch(k, msg, launch) {
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
                self.hold_failed(k, index, entry, death, code, ChildFailed);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DeathKind, ProcState, ProcessEntry};
    use abi::proc_state;

    #[test]
    fn every_policy_number_parses_to_its_variant_and_no_other_does() {
        for raw in 0..=u8::MAX {
            let parsed = RestartPolicy::try_from(raw);
            assert_eq!(
                parsed.map(|p| p as u8),
                restart_policy::name(raw).map(|_| raw).ok_or(UnknownPolicy)
            );
        }
        assert_eq!(u32::from(UnknownPolicy), status::INVALID_ARGUMENT);
        assert_eq!(
            Restart::new(RestartPolicy::Always, 1, 2, 3).policy,
            RestartPolicy::Always
        );
    }

    #[test]
    fn restarts_are_counted_until_a_run_outlasts_the_window() {
        let mut r = Restart::new(RestartPolicy::OnFailure, 3, 100, 5);
        assert!(r.wants(true) && !r.wants(false));
        assert_eq!(r.counted(0), 0);
        r.record(50);
        assert_eq!((r.count, r.run_start), (1, 50));
        assert_eq!(
            r.counted(150),
            1,
            "a run of exactly the window may be shorter"
        );
        assert_eq!(
            r.counted(151),
            0,
            "a run longer than the window clears the count"
        );
        assert_eq!(
            r.counted(10),
            1,
            "a clock before the run's start counts as inside it"
        );
        r.record(149);
        assert_eq!((r.count, r.run_start), (2, 149));
        assert_eq!(r.delay(0), 5);
        assert_eq!(r.delay(3), 40);
        assert_eq!(r.delay(16), 5 << 16);
        assert_eq!(r.delay(255), 5 << 16);
        r.backoff_ms = u32::MAX;
        assert_eq!(r.delay(0), u64::from(u32::MAX));
        assert_eq!(
            r.delay(255),
            u64::from(u32::MAX),
            "capped: 255 restarts stay within virtual time"
        );
        r.count = 255;
        r.record(151);
        assert_eq!(r.count, 255, "saturates");
        r.window_ms = 0;
        assert_eq!(
            r.counted(u64::MAX),
            255,
            "a window of 0 never clears the count"
        );
        r.window_ms = u32::MAX;
        assert_eq!(r.counted(u64::MAX), 0);
        for (policy, failed, clean) in [
            (RestartPolicy::Never, false, false),
            (RestartPolicy::OnFailure, true, false),
            (RestartPolicy::Always, true, true),
        ] {
            r.policy = policy;
            assert_eq!((r.wants(true), r.wants(false)), (failed, clean));
        }
        let restarting = ProcessEntry {
            state: ProcState::Restarting {
                death: DeathKind::Faulted,
                code: 1,
            },
            ..ProcessEntry::default()
        };
        assert_eq!(restarting.reported_state(), Some(proc_state::RESTARTING));
        assert_eq!(restarting.death_and_code(), None);
        assert!(!restarting.state.is_live());
    }
}
