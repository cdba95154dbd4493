//! procd, the EriX process lifecycle manager: its service logic.
//!
//! Everything procd decides lives here, behind the [`Kernel`] trait, so the host unit tests
//! drive it with a model kernel; `main.rs` implements [`Kernel`] with the real syscalls and runs
//! the RECV / handle / REPLY loop.
//!
//! - [`start`]: parse the start envelope (role PROCD), validate the capability intake, log the
//!   outcome, and on success signal `notify_bit::READY` on the bootstrap notification.
//! - [`Procd::handle`]: answer one request in place — SPAWN_SERVICE, STOP, KILL, REAP, STATUS,
//!   LIST or AUDIT_READ (the audit log of procd's lifecycle actions, see [`AuditLog`]) from rootd, or PROBE_COMPLETE from a child (through the badged PROCD_ENDPOINT
//!   capability procd minted for it: procd signals `notify_bit::PROBE_COMPLETE` on the bootstrap
//!   notification), or SPAWN from a child spawned with `envelope_flag::SPAWNER` (a TEST-role
//!   SPAWN_SERVICE on its behalf) — or act on one kernel event, which gets no reply: CHILD_DIED (log, report a
//!   killed child to crashd, then restart it after a backoff if its restart policy says so and
//!   it is within its restart bound; otherwise free its table entry after a clean end, or hold
//!   it FAILED until rootd REAPs it and signal `notify_bit::SERVICE_FAILED` if the service was
//!   REQUIRED), or TIMER (a restart's backoff is over: spawn the service again in the same
//!   entry with the next generation).
//!
//! rootd names a child by procd's process id ([`ProcId`]): table index | generation <<
//! `PROCD_ID_GENERATION_SHIFT`, so an id outlives its process only as NOT_FOUND.
//!
//! No heap and no panics on any message contents: fixed arrays, checked access only.
//!
//! Where things are: `dispatch` (an op to its handler), `request` (the header check and the id
//! rootd's requests carry), `spawn` (SPAWN_SERVICE, SPAWN and `launch`), `deps` (dependency
//! order: HELD entries), `lifecycle` (STOP, KILL, REAP, PROBE_COMPLETE, CHILD_DIED, holding an
//! entry FAILED), `restart` (restart policy and its TIMER), `queries` (STATUS, LIST,
//! AUDIT_READ), `kernel_calls` (kernel-control calls), and the state they share: `table`,
//! `id`, `roles` and `audit`. A new op is one handler in the module of its concern plus its arm in
//! `dispatch`.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

use abi::{
    AUDIT_RING, MSG_MAX_PAYLOAD, Message, MessageHeader, PROCD_CHILD_BADGE_BASE,
    PROCD_MAX_PROCESSES, audit_record, cap_purpose, notify_bit, process_status, role,
    startup_status, status,
};
use bootstrap::Envelope;

mod audit;
mod deps;
mod dispatch;
mod id;
mod kernel_calls;
mod lifecycle;
#[cfg(any(feature = "planted-length-off-by-one", feature = "planted-panic"))]
mod planted;
mod queries;
mod request;
mod restart;
mod roles;
mod spawn;
mod table;

pub use audit::{AuditLog, AuditRecord};
pub use id::{Generation, ProcId};

pub use restart::{Restart, RestartPolicy, UnknownPolicy};
pub use roles::Role;
pub use table::{DeathKind, Ending, ProcState, ProcessEntry, ProcessTable};

// LIST's reply, one process_status per entry, always fits in one message.
const _: () = assert!(PROCD_MAX_PROCESSES * process_status::SIZE <= MSG_MAX_PAYLOAD);

/// The most audit records one AUDIT_READ reply carries: 30 (960 bytes; the brief's cap,
/// though MSG_MAX_PAYLOAD would hold one more).
pub const AUDIT_READ_MAX: usize = 30;
const _: () =
    assert!(AUDIT_READ_MAX * audit_record::SIZE <= MSG_MAX_PAYLOAD && AUDIT_READ_MAX <= AUDIT_RING);

/// A record did not fit the buffer procd wrote it into. Every buffer is sized for its record,
/// so this is procd's own fault: a reply reports it as INTERNAL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DoesNotFit;

impl From<DoesNotFit> for u32 {
    fn from(_: DoesNotFit) -> Self {
        status::INTERNAL
    }
}

/// `Ok` if every write of a record succeeded (`all_written`), else [`DoesNotFit`].
pub(crate) fn fits(all_written: bool) -> Result<(), DoesNotFit> {
    if all_written { Ok(()) } else { Err(DoesNotFit) }
}

/// What procd needs from the kernel.
pub trait Kernel {
    /// CAP_INFO: type and rights of the capability in `slot`, `None` if the slot is empty (or
    /// the kernel refuses).
    fn cap_info(&mut self, slot: u32) -> Option<(u32, u32)>;
    /// CAP_DELETE `slot` (errors are ignored: the slot ends up empty either way).
    fn cap_delete(&mut self, slot: u32);
    /// CALL endpoint `slot` with `msg` (header plus declared payload); on syscall status OK
    /// `msg` holds the reply. Returns the syscall status.
    fn call(&mut self, slot: u32, msg: &mut Message) -> u32;
    /// NBSEND `msg` (header plus declared payload) on endpoint `slot`: never blocks, no reply.
    /// Returns the syscall status (BUSY: no receiver was waiting, the message was dropped).
    fn nb_send(&mut self, slot: u32, msg: &Message) -> u32;
    /// NOTIFY `bits` on notification `slot`; returns the syscall status.
    fn notify(&mut self, slot: u32, bits: u64) -> u32;
    /// DEBUG_WRITE one log line made of `parts`, concatenated.
    fn debug_write(&mut self, parts: &[LogPart<'_>]);
}

/// One piece of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogPart<'a> {
    /// Text as is.
    Text(&'a [u8]),
    /// A number in decimal.
    Dec(u64),
    /// A number as `0x` and lowercase hex digits, no leading zeros.
    Hex(u64),
}

use LogPart::{Hex, Text};

/// What the serving loop does once [`Procd::handle`] returns.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// REPLY with the message `handle` left in the buffer.
    Reply,
    /// Nothing: the message was a kernel event (badge `BADGE_KERNEL`), sent without a reply
    /// right.
    Silent,
}

/// Startup: validate the envelope and intake, then announce readiness.
///
/// `envelope` is `None` for a null envelope pointer. On failure logs
/// `procd: startup refused: <STATUS_NAME>` and returns the `startup_status` the image exits
/// with. On success logs `procd: envelope accepted` and NOTIFYs `notify_bit::READY` on the
/// bootstrap notification (a failed NOTIFY is logged; procd serves anyway).
pub fn start(k: &mut impl Kernel, envelope: Option<&[u8]>) -> Result<Procd, u64> {
    let accepted = envelope
        .ok_or(startup_status::ENVELOPE_NULL)
        .and_then(|bytes| bootstrap::parse(bytes, role::PROCD))
        .and_then(|env| {
            capabi::validate_intake(&env, role::PROCD, |slot| k.cap_info(slot))?;
            Procd::new(env)
        });
    let procd = match accepted {
        Ok(procd) => procd,
        Err(code) => {
            let name = startup_status::name(code).unwrap_or("UNKNOWN");
            k.debug_write(&[Text(b"procd: startup refused: "), Text(name.as_bytes())]);
            return Err(code);
        }
    };
    k.debug_write(&[Text(b"procd: envelope accepted")]);
    let notified = k.notify(procd.bootstrap_notify, notify_bit::READY);
    if notified != status::OK {
        let name = status::name(notified).unwrap_or("UNKNOWN");
        k.debug_write(&[Text(b"procd: READY notify failed: "), Text(name.as_bytes())]);
    }
    Ok(procd)
}

/// A running procd: its envelope, the slots it serves with, and its process table.
#[derive(Clone, Debug)]
pub struct Procd {
    env: Envelope,
    self_endpoint: u32,
    kernel_control: u32,
    bootstrap_notify: u32,
    /// crashd's endpoint, if the envelope lists one (optional intake).
    crashd: Option<u32>,
    /// The roles rootd started before procd (the envelope's `started_roles`; bit r: role r):
    /// dependencies on them are satisfied from the start.
    started_roles: u64,
    table: ProcessTable,
    /// The lifecycle actions procd took.
    audit: AuditLog,
}

impl Procd {
    /// A procd serving with the capabilities `env` lists (SELF_ENDPOINT, KERNEL_CONTROL and
    /// BOOTSTRAP_NOTIFY must be there: `Err(INTAKE_MISSING)` otherwise). The intake must already
    /// have been validated.
    pub fn new(env: Envelope) -> Result<Self, u64> {
        let slot = |purpose| env.slot_for(purpose).ok_or(startup_status::INTAKE_MISSING);
        Ok(Self {
            self_endpoint: slot(cap_purpose::SELF_ENDPOINT)?,
            kernel_control: slot(cap_purpose::KERNEL_CONTROL)?,
            bootstrap_notify: slot(cap_purpose::BOOTSTRAP_NOTIFY)?,
            crashd: env.slot_for(cap_purpose::CRASHD_ENDPOINT),
            started_roles: u64::from(env.started_roles()),
            env,
            table: ProcessTable::new(),
            audit: AuditLog::new(),
        })
    }

    /// The endpoint procd RECVs on.
    pub fn self_endpoint(&self) -> u32 {
        self.self_endpoint
    }

    /// The process table.
    pub fn table(&self) -> &ProcessTable {
        &self.table
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Append an audit record of `action` on process `pid` (role `child_role`), asked by
    /// `requester` under `authority`, with `detail`.
    pub(crate) fn record(
        &mut self,
        action: u16,
        authority: u16,
        pid: u32,
        child_role: Role,
        requester: u64,
        detail: u64,
    ) {
        self.audit.push(AuditRecord {
            seq: 0,
            action,
            authority,
            pid,
            role: child_role,
            requester,
            detail,
        });
    }

    /// Whether `slot` holds one of procd's own capabilities (from its envelope, or a child
    /// endpoint it keeps).
    pub(crate) fn owns_slot(&self, slot: u32) -> bool {
        self.env.holds_slot(slot) || self.table.holds_slot(slot)
    }

    /// CAP_DELETE every capability the message `header` says was transferred to us, except
    /// slots procd already owns (a correct kernel never reports those).
    pub(crate) fn discard_caps(&self, k: &mut impl Kernel, header: &MessageHeader) {
        for &slot in header.cap_slots() {
            if !self.owns_slot(slot) {
                k.cap_delete(slot);
            }
        }
    }
}

/// Whether procd may ever run a service of role `r`: a known role other than rootd's own
/// (ROOTD, and MEMD, VSPACED and PAGERD, which rootd starts itself before procd), PROCD and
/// GENERIC. SPAWN_SERVICE and SPAWN refuse the others (INVALID_ARGUMENT), and a dependency on
/// one is satisfied only if rootd started it.
pub fn procd_runs(r: Role) -> bool {
    r.name().is_some()
        && !matches!(
            r,
            Role::ROOTD | Role::MEMD | Role::VSPACED | Role::PAGERD | Role::PROCD | Role::GENERIC
        )
}

/// Room for any role's name ([`role_lowercase`]).
pub(crate) const ROLE_NAME_MAX: usize = 16;

/// Role `r`'s name in lowercase, written into `buf` (truncated to it; `?` for an unknown role).
pub(crate) fn role_lowercase(r: Role, buf: &mut [u8; ROLE_NAME_MAX]) -> &[u8] {
    let name = r.name().unwrap_or("?").as_bytes();
    let len = name.len().min(ROLE_NAME_MAX);
    for (out, b) in buf.iter_mut().zip(name) {
        *out = b.to_ascii_lowercase();
    }
    buf.get(..len).unwrap_or(&[])
}

/// A status as a log part: its name, or `0x` and hex digits for an unknown one.
pub(crate) fn status_part(code: u32) -> LogPart<'static> {
    match status::name(code) {
        Some(name) => Text(name.as_bytes()),
        None => Hex(u64::from(code)),
    }
}

/// The badge of the PROCD_ENDPOINT capability procd mints for the child in table entry
/// `index`: `PROCD_CHILD_BADGE_BASE + index` (`None` for an index beyond the table).
pub fn child_badge(index: usize) -> Option<u64> {
    if index >= PROCD_MAX_PROCESSES {
        return None;
    }
    u64::try_from(index)
        .ok()
        .and_then(|i| PROCD_CHILD_BADGE_BASE.checked_add(i))
}

/// The table index a child badge names: `Some(badge - PROCD_CHILD_BADGE_BASE)` for a badge in
/// `[PROCD_CHILD_BADGE_BASE, PROCD_CHILD_BADGE_BASE + PROCD_MAX_PROCESSES)`, `None` otherwise.
pub fn badge_index(badge: u64) -> Option<usize> {
    badge
        .checked_sub(PROCD_CHILD_BADGE_BASE)
        .and_then(|i| usize::try_from(i).ok())
        .filter(|&i| i < PROCD_MAX_PROCESSES)
}

#[cfg(test)]
mod tests;
