//! Lifecycle: STOP, KILL and REAP from rootd, PROBE_COMPLETE from a child, a child's death,
//! and holding a failed entry FAILED.

use crate::LogPart::{Dec, Hex, Text};
use crate::queries::write_status;
use crate::{DeathKind, Ending, Kernel, ProcState, Procd, ProcessEntry, badge_index, status_part};
use abi::{
    Message, MessageHeader, ProcdOp, audit_action, cap_purpose, child_death, crash_event,
    crash_record, crashd_op, death_kind, envelope_flag, fault_kind, kernel_op, kill_request,
    notify_bit, proc_state, process_status, read_u16, read_u32, read_u64, status, write_u16,
    write_u32, write_u64,
};

impl Procd {
    /// STOP or KILL (`ending`) from rootd: CALL kernel-control KILL_PROCESS for the process the
    /// request's id names, and on OK mark its entry STOPPING (its CHILD_DIED, kind KILLED, comes
    /// later; see `child_died`) and reply OK with no payload.
    ///
    /// After the request checks (`requested_id`): NOT_FOUND for a stale id or a FAILED entry
    /// (its process is already dead: nothing to end), BUSY if the entry is already STOPPING,
    /// and the failing status (the syscall's, or the kernel's reply) if KILL_PROCESS fails, the
    /// entry unchanged. A RESTARTING entry (its process is dead; its restart is pending) is
    /// freed and the reply is OK, without calling the kernel: the service stays down, and the
    /// pending TIMER finds no RESTARTING entry with its cookie's generation and is ignored.
    /// A HELD entry (never launched) is freed likewise, OK, with no kernel call and no audit
    /// record.
    pub(crate) fn end_process(
        &mut self,
        k: &mut impl Kernel,
        badge: u64,
        msg: &mut Message,
        ending: Ending,
    ) -> Result<(), u32> {
        let id = Self::requested_id(badge, msg)?;
        let (index, entry) = self
            .table
            .lookup(id)
            .map(|(index, entry)| (index, *entry))
            .ok_or(status::NOT_FOUND)?;
        let action = match ending {
            Ending::Stop => audit_action::STOP,
            Ending::Kill => audit_action::KILL,
        };
        match entry.state {
            ProcState::Stopping(_) => return Err(status::BUSY),
            ProcState::Failed { .. } => return Err(status::NOT_FOUND),
            ProcState::Restarting { .. } => {
                self.table.free(index);
                self.record(action, 0, entry.pid, entry.role, badge, 0);
                msg.start(status::OK, 0);
                return Ok(());
            }
            ProcState::Held => {
                // Nothing exists in the kernel yet (and nothing was audited): just free it.
                self.table.free(index);
                msg.start(status::OK, 0);
                return Ok(());
            }
            _ => {}
        }
        let payload = msg.start(kernel_op::KILL_PROCESS, kill_request::SIZE);
        // Always fits: the payload is kill_request::SIZE bytes (reserved stays 0).
        let written = write_u32(payload, kill_request::PID, entry.pid);
        debug_assert!(written, "a fixed-size payload always fits its record");
        let killed = self.kernel_call(k, msg)?;
        // An OK KILL_PROCESS reply carries no capabilities; a broken kernel's are not kept.
        self.discard_caps(k, &killed);
        self.record(
            action,
            cap_purpose::KERNEL_CONTROL,
            entry.pid,
            entry.role,
            badge,
            0,
        );
        self.table.set(
            index,
            ProcessEntry {
                state: ProcState::Stopping(ending),
                ..entry
            },
        );
        msg.start(status::OK, 0);
        Ok(())
    }

    /// REAP from rootd: reply OK with the process_status of the FAILED entry the request's id
    /// names (state FAILED, its death and code), and free the entry (its next occupant gets the
    /// next generation). After the request checks (`requested_id`): NOT_FOUND for a stale or
    /// free id, BUSY for a running, stopping, restarting or HELD process (only a FAILED entry can be
    /// reaped).
    pub(crate) fn reap(&mut self, badge: u64, msg: &mut Message) -> Result<(), u32> {
        let id = Self::requested_id(badge, msg)?;
        let (index, entry) = self
            .table
            .lookup(id)
            .map(|(index, entry)| (index, *entry))
            .ok_or(status::NOT_FOUND)?;
        let ProcState::Failed { death, .. } = entry.state else {
            return Err(status::BUSY);
        };
        let record = msg.start(status::OK, process_status::SIZE);
        write_status(record, id, &entry, proc_state::FAILED)?;
        self.table.free(index);
        self.record(
            audit_action::REAP,
            0,
            entry.pid,
            entry.role,
            badge,
            u64::from(death.wire()),
        );
        Ok(())
    }

    /// PROBE_COMPLETE from the child whose PROCD_ENDPOINT capability carries `badge`.
    ///
    /// DENIED unless `badge` is a child badge ([`badge_index`]) naming a live table entry (not
    /// free, not FAILED: a failed child is dead); then INVALID_ARGUMENT if the `request` header
    /// has a payload, capabilities or a non-zero reserved field. Otherwise NOTIFY
    /// `notify_bit::PROBE_COMPLETE` on the bootstrap notification (asynchronous: procd never
    /// blocks on it; a failure is logged) and log `procd: probe complete (pid <pid>)`.
    pub(crate) fn probe_complete(
        &self,
        k: &mut impl Kernel,
        badge: u64,
        request: &MessageHeader,
    ) -> Result<(), u32> {
        let entry = badge_index(badge)
            .and_then(|index| self.table.entries().get(index))
            .filter(|e| e.state.is_live())
            .ok_or(status::DENIED)?;
        request.expect(ProcdOp::ProbeComplete.request())?;
        let notified = k.notify(self.bootstrap_notify, notify_bit::PROBE_COMPLETE);
        k.debug_write(&[
            Text(b"procd: probe complete (pid "),
            Dec(u64::from(entry.pid)),
            Text(b")"),
        ]);
        if notified != status::OK {
            let name = match status::name(notified) {
                Some(name) => Text(name.as_bytes()),
                None => Hex(u64::from(notified)),
            };
            k.debug_write(&[Text(b"procd: PROBE_COMPLETE notify failed: "), name]);
        }
        Ok(())
    }

    /// CHILD_DIED from the kernel (badge already checked): one of procd's children ended.
    ///
    /// Ignored if the payload is not a `child_death` record, capabilities came along, the
    /// death kind is unknown, or no live entry has the pid (e.g. its START_PROCESS failed and
    /// the entry is already gone, or it already failed). Otherwise: log the death; SEND crashd
    /// a KILLED record, if procd holds its endpoint, for a FAULTED child (the kernel killed it:
    /// its fault kind and rip) and for a KILLED one that STOP did not ask for (KILL, or a kill
    /// procd never asked for: code 0, address 0). Then:
    ///
    /// - An entry STOP asked to end (STOPPING for STOP, whatever the death) is never
    ///   restarted. Otherwise the entry's restart policy decides: ALWAYS restarts after any
    ///   ending, ON_FAILURE after a failure only, NEVER never. A restart is `restart_after`.
    /// - No restart, a clean end (EXITED with code 0, or KILLED after STOP): free the entry
    ///   (its next occupant gets the next generation) and delete procd's capability to the
    ///   child's endpoint.
    /// - No restart, a failure (FAULTED, KILLED without STOP, EXITED non-zero): `hold_failed`.
    ///
    /// The death kind and code a FAILED entry records: the exit code saturated to u32, the
    /// fault kind, 0 for KILLED.
    pub(crate) fn child_died(&mut self, k: &mut impl Kernel, msg: &mut Message) {
        let event = msg.header();
        if usize::from(event.payload_len) != child_death::SIZE || event.cap_count != 0 {
            return;
        }
        let payload = msg.payload();
        let (Some(pid), Some(kind), Some(code), Some(address)) = (
            read_u32(payload, child_death::PID),
            read_u16(payload, child_death::KIND),
            read_u64(payload, child_death::CODE),
            read_u64(payload, child_death::ADDRESS),
        ) else {
            return;
        };
        let Some((index, entry)) = self
            .table
            .index_of_pid(pid)
            .and_then(|index| Some((index, *self.table.entries().get(index)?)))
        else {
            return;
        };
        // How it died, whether that is a failure, and the code a FAILED entry records.
        let (death, failed, recorded) = match kind {
            death_kind::EXITED => {
                k.debug_write(&[
                    Text(b"procd: child "),
                    Dec(u64::from(pid)),
                    Text(b" exited "),
                    Dec(code),
                ]);
                (
                    DeathKind::Exited,
                    code != 0,
                    u32::try_from(code).unwrap_or(u32::MAX),
                )
            }
            death_kind::FAULTED => {
                let fault = match fault_kind::name(code) {
                    Some(name) => Text(name.as_bytes()),
                    None => Hex(code),
                };
                k.debug_write(&[
                    Text(b"procd: child "),
                    Dec(u64::from(pid)),
                    Text(b" faulted "),
                    fault,
                    Text(b" at "),
                    Hex(address),
                ]);
                self.report_killed(k, msg, pid, code, address);
                (
                    DeathKind::Faulted,
                    true,
                    u32::try_from(code).unwrap_or(u32::MAX),
                )
            }
            death_kind::KILLED => {
                let stopped = entry.state == ProcState::Stopping(Ending::Stop);
                k.debug_write(&[
                    Text(b"procd: child "),
                    Dec(u64::from(pid)),
                    Text(if stopped { b" stopped" } else { b" killed" }),
                ]);
                if !stopped {
                    self.report_killed(k, msg, pid, 0, 0);
                }
                (DeathKind::Killed, !stopped, 0)
            }
            _ => return,
        };
        let stopped = entry.state == ProcState::Stopping(Ending::Stop);
        if !stopped && entry.restart.wants(failed) {
            self.restart_after(k, msg, index, entry, death, recorded);
        } else if failed {
            self.hold_failed(k, index, entry, death, recorded, ChildFailed);
        } else {
            self.table.free(index);
            k.cap_delete(entry.endpoint_slot);
        }
    }

    /// Hold entry `index` (whose occupant was `entry`) FAILED with `death` and `code`, keeping
    /// its id until rootd REAPs it: delete procd's capability to the child's endpoint (if
    /// `entry` still names one); log the line `L` writes ([`ChildFailed`]: `procd: child <pid>
    /// failed`; [`AlreadyLogged`]: none, the caller logged why); and if the entry's flags have
    /// `envelope_flag::REQUIRED`, NOTIFY `notify_bit::SERVICE_FAILED` on the bootstrap
    /// notification (asynchronous; a failure is logged). Then HELD entries depending on its
    /// role fail too (`fail_dependents`).
    pub(crate) fn hold_failed<L: FailureLine>(
        &mut self,
        k: &mut impl Kernel,
        index: usize,
        entry: ProcessEntry,
        death: DeathKind,
        code: u32,
        _line: L,
    ) {
        self.table.set(
            index,
            ProcessEntry {
                state: ProcState::Failed { death, code },
                // procd no longer holds the child's endpoint capability.
                endpoint_slot: 0,
                ..entry
            },
        );
        if entry.endpoint_slot != 0 {
            k.cap_delete(entry.endpoint_slot);
        }
        L::write(k, entry.pid);
        self.notify_if_required(k, entry.flags);
        self.fail_dependents(k, entry.role);
    }

    /// NOTIFY `notify_bit::SERVICE_FAILED` on the bootstrap notification if `flags` has
    /// `envelope_flag::REQUIRED` (asynchronous; a failure is logged).
    pub(crate) fn notify_if_required(&self, k: &mut impl Kernel, flags: u16) {
        if flags & envelope_flag::REQUIRED != 0 {
            let notified = k.notify(self.bootstrap_notify, notify_bit::SERVICE_FAILED);
            if notified != status::OK {
                k.debug_write(&[
                    Text(b"procd: SERVICE_FAILED notify failed: "),
                    status_part(notified),
                ]);
            }
        }
    }

    /// NBSEND crashd a REPORT of child `pid` killed for `fault` at `address` (0 and 0 for a
    /// kill by KILL_PROCESS), if procd holds crashd's endpoint. procd never blocks on crashd: a
    /// report crashd is not waiting for is dropped by the kernel (BUSY) and logged
    /// `procd: crashd report of child <pid> dropped: crashd is not receiving`; any other failure
    /// is logged `procd: crashd report failed <STATUS>`. Either is otherwise ignored
    /// (foundation services are optional). Uses `msg` as the buffer.
    pub(crate) fn report_killed(
        &self,
        k: &mut impl Kernel,
        msg: &mut Message,
        pid: u32,
        fault: u64,
        address: u64,
    ) {
        let Some(crashd) = self.crashd else {
            return;
        };
        let record = msg.start(crashd_op::REPORT, crash_record::SIZE);
        // Always fits: the payload is crash_record::SIZE bytes (reserved stays 0).
        let written = write_u32(record, crash_record::PID, pid)
            && write_u16(record, crash_record::EVENT, crash_event::KILLED)
            && write_u64(record, crash_record::CODE, fault)
            && write_u64(record, crash_record::ADDRESS, address);
        debug_assert!(written, "a fixed-size payload always fits its record");
        let sent = k.nb_send(crashd, msg);
        if sent == status::BUSY {
            k.debug_write(&[
                Text(b"procd: crashd report of child "),
                Dec(u64::from(pid)),
                Text(b" dropped: crashd is not receiving"),
            ]);
        } else if sent != status::OK {
            let code = match status::name(sent) {
                Some(name) => Text(name.as_bytes()),
                None => Hex(u64::from(sent)),
            };
            k.debug_write(&[Text(b"procd: crashd report failed "), code]);
        }
    }
}

/// The log line [`Procd::hold_failed`] writes for a failure. Each kind is its own type, so each
/// caller gets its own copy of `hold_failed` with the line fixed (no run-time choice).
pub(crate) trait FailureLine {
    /// Log the line for the failed child `pid`, if any.
    fn write(k: &mut impl Kernel, pid: u32);
}

/// `procd: child <pid> failed`: the child's death or its restart failed.
pub(crate) struct ChildFailed;

impl FailureLine for ChildFailed {
    fn write(k: &mut impl Kernel, pid: u32) {
        k.debug_write(&[
            Text(b"procd: child "),
            Dec(u64::from(pid)),
            Text(b" failed"),
        ]);
    }
}

/// No line: the caller already logged why the entry failed (a dependency, a failed release).
pub(crate) struct AlreadyLogged;

impl FailureLine for AlreadyLogged {
    fn write(_: &mut impl Kernel, _: u32) {}
}
