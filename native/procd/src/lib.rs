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
//! rootd names a child by procd's process id ([`process_id`]): table index | generation <<
//! `PROCD_ID_GENERATION_SHIFT`, so an id outlives its process only as NOT_FOUND.
//!
//! No heap and no panics on any message contents: fixed arrays, checked access only.
#![cfg_attr(not(test), no_std)]

use abi::{
    AUDIT_RING, BADGE_KERNEL, BADGE_ROOTD, CAP_TABLE_SLOTS, ENVELOPE_MAX_SLOTS, MSG_MAX_PAYLOAD,
    Message, MessageHeader, PROCD_CHILD_BADGE_BASE, PROCD_MAX_PROCESSES, audit_action,
    audit_read_request, audit_record, cap_purpose, child_death, clock_reply, crash_event,
    crash_record, crashd_op, create_process_reply, create_process_request, death_kind,
    envelope_flag, fault_kind, grant, kernel_event, kernel_op, kill_request, mint_request,
    notify_bit, proc_state, procd_op, process_request, process_status, read_u8, read_u16, read_u32,
    read_u64, restart_policy, rights, role, spawn_service_reply, spawn_service_request,
    start_process_request, startup_status, status, timer_event, timer_request, write_u16,
    write_u32, write_u64,
};
use bootstrap::{Envelope, EnvelopeBuilder, SlotEntry};
use capabi::{Grant, GrantPlan};

mod audit;
mod table;

pub use audit::{AuditLog, AuditRecord};

pub use table::{
    Ending, ProcState, ProcessEntry, ProcessTable, Restart, next_generation, process_id, split_id,
};

// LIST's reply, one process_status per entry, always fits in one message.
const _: () = assert!(PROCD_MAX_PROCESSES * process_status::SIZE <= MSG_MAX_PAYLOAD);

/// The most audit records one AUDIT_READ reply carries: 30 (960 bytes; the brief's cap,
/// though MSG_MAX_PAYLOAD would hold one more).
pub const AUDIT_READ_MAX: usize = 30;
const _: () =
    assert!(AUDIT_READ_MAX * audit_record::SIZE <= MSG_MAX_PAYLOAD && AUDIT_READ_MAX <= AUDIT_RING);

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

use LogPart::{Dec, Hex, Text};

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
    fn record(
        &mut self,
        action: u16,
        authority: u16,
        pid: u32,
        child_role: u16,
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
            match request.op {
                kernel_event::CHILD_DIED => self.child_died(k, msg),
                kernel_event::TIMER => self.timer(k, msg),
                _ => {}
            }
            return Answer::Silent;
        }
        // Each op leaves its OK reply in `msg`; an error is written here.
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

    /// Whether `slot` holds one of procd's own capabilities (from its envelope, or a child
    /// endpoint it keeps).
    fn owns_slot(&self, slot: u32) -> bool {
        self.env.holds_slot(slot) || self.table.holds_slot(slot)
    }

    /// CAP_DELETE every capability the message `header` says was transferred to us, except
    /// slots procd already owns (a correct kernel never reports those).
    fn discard_caps(&self, k: &mut impl Kernel, header: &MessageHeader) {
        for &slot in header.cap_slots() {
            if !self.owns_slot(slot) {
                k.cap_delete(slot);
            }
        }
    }

    /// SPAWN_SERVICE: DENIED unless `badge` is `BADGE_ROOTD`; otherwise `spawn_checked` with
    /// requester `BADGE_ROOTD` and no client limits.
    fn spawn_service(
        &mut self,
        k: &mut impl Kernel,
        badge: u64,
        msg: &mut Message,
    ) -> Result<Spawned, u32> {
        if badge != BADGE_ROOTD {
            return Err(status::DENIED);
        }
        self.spawn_checked(k, BADGE_ROOTD, msg, false)
    }

    /// SPAWN from an authorised client: DENIED unless `badge` is [`child_badge`] of a RUNNING
    /// entry whose flags include `envelope_flag::SPAWNER` (checked first). Otherwise exactly
    /// SPAWN_SERVICE (`spawn_checked`) with the client's badge as the audit requester, and the
    /// client limits: after the usual INVALID_ARGUMENT checks, DENIED unless the role is TEST
    /// and the flags include none of REQUIRED, BOOTSTRAP_CRITICAL and SPAWNER (a client can
    /// create neither more privileged services nor more spawners).
    fn spawn_for_client(
        &mut self,
        k: &mut impl Kernel,
        badge: u64,
        msg: &mut Message,
    ) -> Result<Spawned, u32> {
        let authorised = badge_index(badge)
            .and_then(|index| self.table.entries().get(index))
            .is_some_and(|e| {
                e.state == ProcState::Running && e.flags & envelope_flag::SPAWNER != 0
            });
        if !authorised {
            return Err(status::DENIED);
        }
        self.spawn_checked(k, badge, msg, true)
    }

    /// The body of SPAWN_SERVICE and SPAWN, after the badge check; `requester` is the audit
    /// requester (also kept in the entry for a held service's later launch), `client` applies
    /// SPAWN's limits (see `spawn_for_client`).
    ///
    /// Validate the request (INVALID_ARGUMENT also for a role procd never runs
    /// ([`procd_runs`]), an unknown `restart_policy` or a non-zero reserved field, and see
    /// `check_dependencies`), take the lowest free entry (BUSY if none), then, if every role of
    /// `depends_on` is available (rootd started it, or it has a RUNNING entry; or it is 0),
    /// [`Procd::launch`] the service there with the entry's generation (and `release_held`).
    /// Otherwise hold it: the entry becomes HELD with the request and
    /// that generation, the reply is OK with pid 0, endpoint 0 and its id, and procd logs
    /// `procd: holding <role> until its dependencies run` (no kernel call, no audit record).
    fn spawn_checked(
        &mut self,
        k: &mut impl Kernel,
        requester: u64,
        msg: &mut Message,
        client: bool,
    ) -> Result<Spawned, u32> {
        let request = msg.header();
        if usize::from(request.payload_len) != spawn_service_request::SIZE
            || request.cap_count != 0
            || request.reserved0 != 0
            || request.reserved1 != 0
        {
            return Err(status::INVALID_ARGUMENT);
        }
        let payload = msg.payload();
        let field_u32 = |offset| read_u32(payload, offset).ok_or(status::INVALID_ARGUMENT);
        let field_u16 = |offset| read_u16(payload, offset).ok_or(status::INVALID_ARGUMENT);
        let field_u8 = |offset| read_u8(payload, offset).ok_or(status::INVALID_ARGUMENT);
        let image_id = field_u32(spawn_service_request::IMAGE_ID)?;
        let child_role = field_u16(spawn_service_request::ROLE)?;
        let flags = field_u16(spawn_service_request::FLAGS)?;
        let restart = Restart {
            policy: field_u8(spawn_service_request::RESTART)?,
            max_restarts: field_u8(spawn_service_request::MAX_RESTARTS)?,
            window_ms: field_u32(spawn_service_request::WINDOW_MS)?,
            backoff_ms: field_u32(spawn_service_request::BACKOFF_MS)?,
            count: 0,
            run_start: 0,
        };
        let reserved = field_u16(spawn_service_request::RESERVED)?;
        let depends_on =
            read_u64(payload, spawn_service_request::DEPENDS_ON).ok_or(status::INVALID_ARGUMENT)?;
        if role::name(child_role).is_none()
            || !procd_runs(child_role)
            || flags & !envelope_flag::ALL != 0
            || image_id == 0
            || restart_policy::name(restart.policy).is_none()
            || reserved != 0
        {
            return Err(status::INVALID_ARGUMENT);
        }
        let privileged =
            envelope_flag::REQUIRED | envelope_flag::BOOTSTRAP_CRITICAL | envelope_flag::SPAWNER;
        if client && (child_role != role::TEST || flags & privileged != 0) {
            return Err(status::DENIED);
        }
        self.check_dependencies(child_role, depends_on)?;
        let index = self.table.free_index().ok_or(status::BUSY)?;
        let generation = self.table.generation(index).ok_or(status::INTERNAL)?;
        let service = ProcessEntry {
            role: child_role,
            image_id,
            flags,
            restart,
            depends_on,
            requester,
            ..ProcessEntry::default()
        };
        if self.dependencies_available(depends_on) {
            let spawned = self.launch(k, msg, index, generation, service, requester, None)?;
            self.release_held(k, msg);
            return Ok(spawned);
        }
        // Hold it: no kernel call and no audit record until its dependencies run.
        let id = process_id(index, generation).ok_or(status::INTERNAL)?;
        self.table.set(
            index,
            ProcessEntry {
                state: ProcState::Held,
                generation,
                ..service
            },
        );
        let mut name = [0u8; ROLE_NAME_MAX];
        k.debug_write(&[
            Text(b"procd: holding "),
            Text(role_lowercase(child_role, &mut name)),
            Text(b" until its dependencies run"),
        ]);
        Ok(Spawned {
            pid: 0,
            endpoint: 0,
            id,
        })
    }

    /// SPAWN_SERVICE's dependency checks for a child of `child_role` depending on the roles of
    /// `depends_on` (bit r: role r):
    ///
    /// - INVALID_ARGUMENT if a bit names no known role (`role::name`) or the child's own role.
    /// - NOT_FOUND if a named role is one procd never runs ([`procd_runs`]) and rootd did not
    ///   start it before procd (the envelope's `started_roles`): it would wait for ever.
    /// - NOT_FOUND if a named role has a FAILED entry and is not available
    ///   (`role_available`): a dependency failed, so the child could never start.
    /// - INVALID_ARGUMENT for a cycle: starting from `depends_on`, the dependencies of HELD
    ///   entries of the roles reached are followed transitively; reaching `child_role` is one.
    fn check_dependencies(&self, child_role: u16, depends_on: u64) -> Result<(), u32> {
        let known = (0..64u16)
            .filter(|&r| role::name(r).is_some())
            .fold(0u64, |mask, r| mask | 1 << r);
        let own = role_bit(child_role);
        if depends_on & !known != 0 || depends_on & own != 0 {
            return Err(status::INVALID_ARGUMENT);
        }
        // A role nobody will ever start: NOT_FOUND.
        if roles_of(depends_on).any(|r| !procd_runs(r) && !self.started_by_rootd(r)) {
            return Err(status::NOT_FOUND);
        }
        // A dependency failed (and nothing of its role is available): NOT_FOUND.
        if roles_of(depends_on).any(|r| self.table.role_failed(r) && !self.role_available(r)) {
            return Err(status::NOT_FOUND);
        }
        let mut reached = depends_on;
        loop {
            let next = self
                .table
                .entries()
                .iter()
                .filter(|e| e.state == ProcState::Held && reached & role_bit(e.role) != 0)
                .fold(reached, |mask, e| mask | e.depends_on);
            if next == reached {
                break;
            }
            reached = next;
        }
        if reached & own != 0 {
            return Err(status::INVALID_ARGUMENT);
        }
        Ok(())
    }

    /// Whether every role of `depends_on` is available ([`Procd::role_available`]; true for 0).
    fn dependencies_available(&self, depends_on: u64) -> bool {
        roles_of(depends_on).all(|r| self.role_available(r))
    }

    /// Whether rootd started a service of role `r` before procd (the envelope says so).
    fn started_by_rootd(&self, r: u16) -> bool {
        self.started_roles & role_bit(r) != 0
    }

    /// Whether a dependency on role `r` is satisfied: rootd started it before procd, or one of
    /// procd's entries of that role is RUNNING.
    fn role_available(&self, r: u16) -> bool {
        self.started_by_rootd(r) || self.table.role_running(r)
    }

    /// A process became RUNNING: launch, in index order, every HELD entry whose dependencies
    /// are all available now, repeating until none is left to launch (a launched one
    /// may release others). Each launch is the normal one ([`Procd::launch`], requester: the
    /// entry's, i.e. whoever asked for it) into the held entry with its own id; log
    /// `procd: releasing <role> (pid <pid>)`. A launch that fails logs
    /// `procd: release of <role> failed: <STATUS>` and holds the entry FAILED with death
    /// DEPENDENCY and code 0 (`fail_entry`: its own dependents fail too).
    fn release_held(&mut self, k: &mut impl Kernel, msg: &mut Message) {
        let mut changed = true;
        while changed {
            changed = false;
            for index in 0..PROCD_MAX_PROCESSES {
                let Some(entry) = self.table.entries().get(index).copied() else {
                    continue;
                };
                if entry.state != ProcState::Held || !self.dependencies_available(entry.depends_on)
                {
                    continue;
                }
                changed = true;
                let mut name = [0u8; ROLE_NAME_MAX];
                match self.launch(
                    k,
                    msg,
                    index,
                    entry.generation,
                    entry,
                    entry.requester,
                    None,
                ) {
                    Ok(spawned) => k.debug_write(&[
                        Text(b"procd: releasing "),
                        Text(role_lowercase(entry.role, &mut name)),
                        Text(b" (pid "),
                        Dec(u64::from(spawned.pid)),
                        Text(b")"),
                    ]),
                    Err(failure) => {
                        k.debug_write(&[
                            Text(b"procd: release of "),
                            Text(role_lowercase(entry.role, &mut name)),
                            Text(b" failed: "),
                            status_part(failure),
                        ]);
                        self.fail_entry(k, index, entry, death_kind::DEPENDENCY, 0);
                    }
                }
            }
        }
    }

    /// Start the service `service` describes (its image_id, role, flags and restart record) in
    /// table entry `index` with `generation`: MINT (see below), CREATE_PROCESS then
    /// START_PROCESS. On success the entry is RUNNING with the new pid, endpoint and endpoint
    /// slot. On failure the failing status (the kernel's, or INTERNAL); the entry is untouched
    /// unless START_PROCESS failed, which releases it (see below).
    ///
    /// A child whose intake spec lists PROCD_ENDPOINT (required or optional) gets a SEND
    /// capability to procd's endpoint with badge [`child_badge`]`(index)`: procd MINTs it into
    /// its own table (a failed MINT is the reply, nothing else happens), appends its grant to
    /// the plan, and deletes its copy once CREATE_PROCESS has returned, whatever the outcome.
    ///
    /// Audit (requester `requester`): once procd accepts CREATE_PROCESS's reply, RESTART
    /// (detail: the old pid) if `restart_of` names one, CREATE (detail: image id) and one GRANT
    /// per grant of the plan (detail: purpose | rights << 16), all with the new pid; START
    /// once START_PROCESS succeeds.
    #[allow(clippy::too_many_arguments)]
    fn launch(
        &mut self,
        k: &mut impl Kernel,
        msg: &mut Message,
        index: usize,
        generation: u16,
        service: ProcessEntry,
        requester: u64,
        restart_of: Option<u32>,
    ) -> Result<Spawned, u32> {
        let (image_id, child_role, flags) = (service.image_id, service.role, service.flags);
        let id = process_id(index, generation).ok_or(status::INTERNAL)?;
        let mut plan = capabi::plan_child_grants(child_role, &self.env)?;

        // The child's PROCD_ENDPOINT: minted here, badged with the child's table index.
        let minted = match capabi::intake_entry(child_role, cap_purpose::PROCD_ENDPOINT) {
            Some(_) => Some(self.mint_child_endpoint(k, msg, index)?),
            None => None,
        };
        let created = match minted {
            Some(slot) => plan
                .push(slot, rights::SEND, cap_purpose::PROCD_ENDPOINT)
                .map(|_| ()),
            None => Ok(()),
        }
        .and_then(|()| self.create_process(k, msg, image_id, child_role, flags, &plan));
        // The child holds its own copy now (or never will): procd keeps none.
        if let Some(slot) = minted {
            k.cap_delete(slot);
        }
        let created = created?;

        // Keep the endpoint capability the kernel returns.
        let pid = read_u32(msg.payload(), create_process_reply::PID);
        let endpoint = read_u32(msg.payload(), create_process_reply::ENDPOINT);
        let endpoint_slot = created.cap_slots().first().copied();
        let (Some(pid), Some(endpoint), Some(endpoint_slot)) = (pid, endpoint, endpoint_slot)
        else {
            // OK without the promised payload or capability: a kernel fault, not ours to keep.
            self.discard_caps(k, &created);
            return Err(status::INTERNAL);
        };
        if endpoint_slot == 0
            || endpoint_slot >= CAP_TABLE_SLOTS
            || self.owns_slot(endpoint_slot)
            || Some(endpoint_slot) == minted
        {
            self.discard_caps(k, &created);
            return Err(status::INTERNAL);
        }
        // Keep only the endpoint capability.
        for &extra in created.cap_slots().get(1..).unwrap_or(&[]) {
            if extra != endpoint_slot && !self.owns_slot(extra) {
                k.cap_delete(extra);
            }
        }
        let entry = ProcessEntry {
            state: ProcState::Created,
            pid,
            endpoint,
            endpoint_slot,
            generation,
            ..service
        };
        self.table.set(index, entry);
        if let Some(old_pid) = restart_of {
            self.record(
                audit_action::RESTART,
                0,
                pid,
                child_role,
                requester,
                u64::from(old_pid),
            );
        }
        let control = cap_purpose::KERNEL_CONTROL;
        self.record(
            audit_action::CREATE,
            control,
            pid,
            child_role,
            requester,
            u64::from(image_id),
        );
        for g in plan.grants() {
            let detail = u64::from(g.purpose) | u64::from(g.rights) << 16;
            self.record(
                audit_action::GRANT,
                control,
                pid,
                child_role,
                requester,
                detail,
            );
        }

        // START_PROCESS.
        let payload = msg.start(kernel_op::START_PROCESS, start_process_request::SIZE);
        // Cannot fail: the payload is start_process_request::SIZE bytes (reserved stays 0).
        let _ = write_u32(payload, start_process_request::PID, pid);
        if let Err(code) = self.kernel_call(k, msg) {
            // A created process that never started: keeping the entry would only use up table
            // capacity (procd does not reap it), so the entry is released and procd drops its
            // endpoint capability. Its id was never handed out, so the generation stays for the
            // next occupant. rootd sees the kernel's status (a restart holds the entry FAILED).
            self.table.release(index);
            k.cap_delete(endpoint_slot);
            return Err(code);
        }
        self.table.set(
            index,
            ProcessEntry {
                state: ProcState::Running,
                ..entry
            },
        );
        self.record(audit_action::START, control, pid, child_role, requester, 0);
        Ok(Spawned { pid, endpoint, id })
    }

    /// The id a STOP, KILL, REAP or STATUS request from `badge` names: DENIED unless `badge` is
    /// `BADGE_ROOTD`; INVALID_ARGUMENT unless the payload is one process_request with reserved
    /// 0 and the header carries no capabilities and zero reserved fields.
    fn requested_id(badge: u64, msg: &Message) -> Result<u32, u32> {
        if badge != BADGE_ROOTD {
            return Err(status::DENIED);
        }
        let request = msg.header();
        if usize::from(request.payload_len) != process_request::SIZE
            || request.cap_count != 0
            || request.reserved0 != 0
            || request.reserved1 != 0
        {
            return Err(status::INVALID_ARGUMENT);
        }
        let payload = msg.payload();
        match (
            read_u32(payload, process_request::ID),
            read_u32(payload, process_request::RESERVED),
        ) {
            (Some(id), Some(0)) => Ok(id),
            _ => Err(status::INVALID_ARGUMENT),
        }
    }

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
    fn end_process(
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
        // Cannot fail: the payload is kill_request::SIZE bytes (reserved stays 0).
        let _ = write_u32(payload, kill_request::PID, entry.pid);
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

    /// STATUS from rootd: reply OK with the process_status of the process the request's id
    /// names. After the request checks (`requested_id`), NOT_FOUND for a stale id.
    fn status(&self, badge: u64, msg: &mut Message) -> Result<(), u32> {
        let id = Self::requested_id(badge, msg)?;
        let (_, entry) = self.table.lookup(id).ok_or(status::NOT_FOUND)?;
        let state = entry.reported_state().ok_or(status::NOT_FOUND)?;
        let record = msg.start(status::OK, process_status::SIZE);
        if write_status(record, id, entry, state) {
            Ok(())
        } else {
            Err(status::INTERNAL)
        }
    }

    /// REAP from rootd: reply OK with the process_status of the FAILED entry the request's id
    /// names (state FAILED, its death and code), and free the entry (its next occupant gets the
    /// next generation). After the request checks (`requested_id`): NOT_FOUND for a stale or
    /// free id, BUSY for a running, stopping, restarting or HELD process (only a FAILED entry can be
    /// reaped).
    fn reap(&mut self, badge: u64, msg: &mut Message) -> Result<(), u32> {
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
        if !write_status(record, id, &entry, proc_state::FAILED) {
            return Err(status::INTERNAL);
        }
        self.table.free(index);
        self.record(
            audit_action::REAP,
            0,
            entry.pid,
            entry.role,
            badge,
            u64::from(death),
        );
        Ok(())
    }

    /// AUDIT_READ from rootd: reply OK with the retained audit records whose seq is at least
    /// the request's `from_seq`, oldest first, at most [`AUDIT_READ_MAX`] (none: an empty
    /// payload). DENIED unless `badge` is `BADGE_ROOTD`; INVALID_ARGUMENT unless the payload is
    /// one audit_read_request with reserved 0 and the header carries no capabilities and zero
    /// reserved fields.
    fn audit_read(&self, badge: u64, msg: &mut Message) -> Result<(), u32> {
        if badge != BADGE_ROOTD {
            return Err(status::DENIED);
        }
        let request = msg.header();
        if usize::from(request.payload_len) != audit_read_request::SIZE
            || request.cap_count != 0
            || request.reserved0 != 0
            || request.reserved1 != 0
        {
            return Err(status::INVALID_ARGUMENT);
        }
        let payload = msg.payload();
        let from_seq = match (
            read_u32(payload, audit_read_request::FROM_SEQ),
            read_u32(payload, audit_read_request::RESERVED),
        ) {
            (Some(from_seq), Some(0)) => from_seq,
            _ => return Err(status::INVALID_ARGUMENT),
        };
        let selected = || {
            self.audit
                .records()
                .filter(move |r| r.seq >= from_seq)
                .take(AUDIT_READ_MAX)
        };
        let payload = msg.start(status::OK, selected().count() * audit_record::SIZE);
        for (out, record) in payload.chunks_exact_mut(audit_record::SIZE).zip(selected()) {
            if !record.write(out) {
                return Err(status::INTERNAL);
            }
        }
        Ok(())
    }

    /// LIST from rootd: reply OK with one process_status per running, stopping, FAILED,
    /// RESTARTING or HELD (pid 0) entry, in table index order (none: an empty payload). DENIED unless `badge`
    /// is `BADGE_ROOTD`; INVALID_ARGUMENT for a payload, capabilities or non-zero reserved
    /// header fields.
    fn list(&self, badge: u64, msg: &mut Message) -> Result<(), u32> {
        if badge != BADGE_ROOTD {
            return Err(status::DENIED);
        }
        let request = msg.header();
        if request.payload_len != 0
            || request.cap_count != 0
            || request.reserved0 != 0
            || request.reserved1 != 0
        {
            return Err(status::INVALID_ARGUMENT);
        }
        let listed = || {
            self.table
                .entries()
                .iter()
                .enumerate()
                .filter_map(|(index, e)| {
                    let id = process_id(index, e.generation)?;
                    Some((id, e, e.reported_state()?))
                })
        };
        let payload = msg.start(status::OK, listed().count() * process_status::SIZE);
        for (record, (id, entry, state)) in
            payload.chunks_exact_mut(process_status::SIZE).zip(listed())
        {
            if !write_status(record, id, entry, state) {
                return Err(status::INTERNAL);
            }
        }
        Ok(())
    }

    /// MINT_ENDPOINT: a SEND capability to procd's own endpoint with badge
    /// [`child_badge`]`(index)`, for the child about to take table entry `index`. Returns the
    /// slot of the new capability in procd's table; `Err` with the kernel's status (any
    /// capabilities the reply carried deleted), or INTERNAL if an OK reply names no usable slot.
    fn mint_child_endpoint(
        &self,
        k: &mut impl Kernel,
        msg: &mut Message,
        index: usize,
    ) -> Result<u32, u32> {
        let badge = child_badge(index).ok_or(status::INTERNAL)?;
        let payload = msg.start(kernel_op::MINT_ENDPOINT, mint_request::SIZE);
        // Cannot fail: the payload is mint_request::SIZE bytes.
        let _ = write_u32(payload, mint_request::SRC_SLOT, self.self_endpoint)
            && write_u32(payload, mint_request::RIGHTS, rights::SEND)
            && write_u64(payload, mint_request::BADGE, badge);
        let minted = self.kernel_call(k, msg)?;
        match minted.cap_slots().first().copied() {
            Some(slot) if slot != 0 && slot < CAP_TABLE_SLOTS && !self.owns_slot(slot) => {
                for &extra in minted.cap_slots().get(1..).unwrap_or(&[]) {
                    if extra != slot && !self.owns_slot(extra) {
                        k.cap_delete(extra);
                    }
                }
                Ok(slot)
            }
            _ => {
                // OK without a usable capability: a kernel fault, not ours to keep.
                self.discard_caps(k, &minted);
                Err(status::INTERNAL)
            }
        }
    }

    /// CREATE_PROCESS for a child serving `child_role` with `flags`, with the grants of `plan`
    /// and an envelope listing them. Returns the reply header (`msg` holds the reply) or the
    /// failing status.
    fn create_process(
        &self,
        k: &mut impl Kernel,
        msg: &mut Message,
        image_id: u32,
        child_role: u16,
        flags: u16,
        plan: &GrantPlan,
    ) -> Result<MessageHeader, u32> {
        // The child's start envelope: its own endpoint plus one record per grant.
        let mut builder = EnvelopeBuilder::new(child_role, flags).map_err(|_| status::INTERNAL)?;
        let mut records = [SlotEntry::default(); ENVELOPE_MAX_SLOTS];
        for record in plan.envelope_slots(&mut records) {
            builder
                .push(record.slot, record.purpose)
                .map_err(|_| status::INTERNAL)?;
        }

        if !write_create_request(msg, image_id, plan.grants(), self.self_endpoint, &builder) {
            return Err(status::INTERNAL);
        }
        self.kernel_call(k, msg)
    }

    /// PROBE_COMPLETE from the child whose PROCD_ENDPOINT capability carries `badge`.
    ///
    /// DENIED unless `badge` is a child badge ([`badge_index`]) naming a live table entry (not
    /// free, not FAILED: a failed child is dead); then INVALID_ARGUMENT if the `request` header
    /// has a payload, capabilities or a non-zero reserved field. Otherwise NOTIFY
    /// `notify_bit::PROBE_COMPLETE` on the bootstrap notification (asynchronous: procd never
    /// blocks on it; a failure is logged) and log `procd: probe complete (pid <pid>)`.
    fn probe_complete(
        &self,
        k: &mut impl Kernel,
        badge: u64,
        request: &MessageHeader,
    ) -> Result<(), u32> {
        let entry = badge_index(badge)
            .and_then(|index| self.table.entries().get(index))
            .filter(|e| e.state.is_live())
            .ok_or(status::DENIED)?;
        if request.payload_len != 0
            || request.cap_count != 0
            || request.reserved0 != 0
            || request.reserved1 != 0
        {
            return Err(status::INVALID_ARGUMENT);
        }
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
    fn child_died(&mut self, k: &mut impl Kernel, msg: &mut Message) {
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
        // Whether the death is a failure, and the code a FAILED entry records.
        let (failed, recorded) = match kind {
            death_kind::EXITED => {
                k.debug_write(&[
                    Text(b"procd: child "),
                    Dec(u64::from(pid)),
                    Text(b" exited "),
                    Dec(code),
                ]);
                (code != 0, u32::try_from(code).unwrap_or(u32::MAX))
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
                (true, u32::try_from(code).unwrap_or(u32::MAX))
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
                (!stopped, 0)
            }
            _ => return,
        };
        let stopped = entry.state == ProcState::Stopping(Ending::Stop);
        if !stopped && entry.restart.wants(failed) {
            self.restart_after(k, msg, index, entry, kind, recorded);
        } else if failed {
            self.hold_failed(k, index, entry, kind, recorded);
        } else {
            self.table.free(index);
            k.cap_delete(entry.endpoint_slot);
        }
    }

    /// Hold entry `index` (whose occupant was `entry`) FAILED with `death` and `code`, keeping
    /// its id until rootd REAPs it: delete procd's capability to the child's endpoint (if
    /// `entry` still names one); log `procd: child <pid> failed`; and if the entry's flags have
    /// `envelope_flag::REQUIRED`, NOTIFY `notify_bit::SERVICE_FAILED` on the bootstrap
    /// notification (asynchronous; a failure is logged). Then HELD entries depending on its
    /// role fail too (`fail_dependents`).
    fn hold_failed(
        &mut self,
        k: &mut impl Kernel,
        index: usize,
        entry: ProcessEntry,
        death: u16,
        code: u32,
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
        k.debug_write(&[
            Text(b"procd: child "),
            Dec(u64::from(entry.pid)),
            Text(b" failed"),
        ]);
        self.notify_if_required(k, entry.flags);
        self.fail_dependents(k, entry.role);
    }

    /// Hold entry `index` (occupant `entry`) FAILED with `death` and `code` without the
    /// `procd: child <pid> failed` line (the caller logged why): as `hold_failed` otherwise.
    fn fail_entry(
        &mut self,
        k: &mut impl Kernel,
        index: usize,
        entry: ProcessEntry,
        death: u16,
        code: u32,
    ) {
        self.table.set(
            index,
            ProcessEntry {
                state: ProcState::Failed { death, code },
                endpoint_slot: 0,
                ..entry
            },
        );
        if entry.endpoint_slot != 0 {
            k.cap_delete(entry.endpoint_slot);
        }
        self.notify_if_required(k, entry.flags);
        self.fail_dependents(k, entry.role);
    }

    /// An entry of `failed_role` became FAILED: unless the role is still available (another
    /// entry of it RUNNING, or rootd started it), every HELD entry depending on it can never
    /// start. Each (in index order) is held FAILED with death DEPENDENCY and code
    /// `failed_role`, after logging `procd: <role> cannot start: <failed role> failed`; that
    /// fails its own dependents in turn (each step turns a HELD entry FAILED, so this ends).
    fn fail_dependents(&mut self, k: &mut impl Kernel, failed_role: u16) {
        if self.role_available(failed_role) {
            return;
        }
        for index in 0..PROCD_MAX_PROCESSES {
            let Some(entry) = self.table.entries().get(index).copied() else {
                continue;
            };
            if entry.state != ProcState::Held || entry.depends_on & role_bit(failed_role) == 0 {
                continue;
            }
            let (mut name, mut dep) = ([0u8; ROLE_NAME_MAX], [0u8; ROLE_NAME_MAX]);
            k.debug_write(&[
                Text(b"procd: "),
                Text(role_lowercase(entry.role, &mut name)),
                Text(b" cannot start: "),
                Text(role_lowercase(failed_role, &mut dep)),
                Text(b" failed"),
            ]);
            self.fail_entry(
                k,
                index,
                entry,
                death_kind::DEPENDENCY,
                u32::from(failed_role),
            );
        }
    }

    /// NOTIFY `notify_bit::SERVICE_FAILED` on the bootstrap notification if `flags` has
    /// `envelope_flag::REQUIRED` (asynchronous; a failure is logged).
    fn notify_if_required(&self, k: &mut impl Kernel, flags: u16) {
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
    fn restart_after(
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
    fn timer(&mut self, k: &mut impl Kernel, msg: &mut Message) {
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

    /// CALL kernel-control READ_MONOTONIC_CLOCK: the clock in ticks, or the failing status
    /// (INTERNAL for an OK reply that is not one clock_reply).
    fn read_clock(&self, k: &mut impl Kernel, msg: &mut Message) -> Result<u64, u32> {
        msg.start(kernel_op::READ_MONOTONIC_CLOCK, 0);
        let reply = self.kernel_call(k, msg)?;
        self.discard_caps(k, &reply);
        if usize::from(reply.payload_len) != clock_reply::SIZE {
            return Err(status::INTERNAL);
        }
        read_u64(msg.payload(), clock_reply::TICKS).ok_or(status::INTERNAL)
    }

    /// NBSEND crashd a REPORT of child `pid` killed for `fault` at `address` (0 and 0 for a
    /// kill by KILL_PROCESS), if procd holds crashd's endpoint. procd never blocks on crashd: a
    /// report crashd is not waiting for is dropped by the kernel (BUSY) and logged
    /// `procd: crashd report of child <pid> dropped: crashd is not receiving`; any other failure
    /// is logged `procd: crashd report failed <STATUS>`. Either is otherwise ignored
    /// (foundation services are optional). Uses `msg` as the buffer.
    fn report_killed(
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
        // Cannot fail: the payload is crash_record::SIZE bytes (reserved stays 0).
        let _ = write_u32(record, crash_record::PID, pid)
            && write_u16(record, crash_record::EVENT, crash_event::KILLED)
            && write_u64(record, crash_record::CODE, fault)
            && write_u64(record, crash_record::ADDRESS, address);
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

    /// CALL kernel-control with `msg`. `Ok(reply header)` when both the syscall and the reply
    /// say OK; otherwise `Err(status)` — the syscall's status, or the reply's op as is — after
    /// deleting any capabilities the reply carried.
    fn kernel_call(&self, k: &mut impl Kernel, msg: &mut Message) -> Result<MessageHeader, u32> {
        let syscall = k.call(self.kernel_control, msg);
        if syscall != status::OK {
            return Err(syscall);
        }
        let reply = msg.header();
        if reply.op != status::OK {
            self.discard_caps(k, &reply);
            return Err(reply.op);
        }
        Ok(reply)
    }
}

/// Whether procd may ever run a service of role `r`: a known role other than rootd's own
/// (ROOTD, and MEMD, VSPACED and PAGERD, which rootd starts itself before procd), PROCD and
/// GENERIC. SPAWN_SERVICE and SPAWN refuse the others (INVALID_ARGUMENT), and a dependency on
/// one is satisfied only if rootd started it.
pub fn procd_runs(r: u16) -> bool {
    role::name(r).is_some()
        && !matches!(
            r,
            role::ROOTD | role::MEMD | role::VSPACED | role::PAGERD | role::PROCD | role::GENERIC
        )
}

/// Room for any role's name ([`role_lowercase`]).
const ROLE_NAME_MAX: usize = 16;

/// Role `r`'s bit in a `depends_on` mask (0 for a role beyond bit 63).
fn role_bit(r: u16) -> u64 {
    1u64.checked_shl(u32::from(r)).unwrap_or(0)
}

/// The roles whose bits `mask` has.
fn roles_of(mask: u64) -> impl Iterator<Item = u16> {
    (0..64u16).filter(move |&r| mask & role_bit(r) != 0)
}

/// Role `r`'s name in lowercase, written into `buf` (truncated to it; `?` for an unknown role).
fn role_lowercase(r: u16, buf: &mut [u8; ROLE_NAME_MAX]) -> &[u8] {
    let name = role::name(r).unwrap_or("?").as_bytes();
    let len = name.len().min(ROLE_NAME_MAX);
    for (out, b) in buf.iter_mut().zip(name) {
        *out = b.to_ascii_lowercase();
    }
    buf.get(..len).unwrap_or(&[])
}

/// A status as a log part: its name, or `0x` and hex digits for an unknown one.
fn status_part(code: u32) -> LogPart<'static> {
    match status::name(code) {
        Some(name) => Text(name.as_bytes()),
        None => Hex(u64::from(code)),
    }
}

/// Log `procd: restart of <pid> failed: <STATUS>`.
fn log_restart_failed(k: &mut impl Kernel, pid: u32, code: u32) {
    k.debug_write(&[
        Text(b"procd: restart of "),
        Dec(u64::from(pid)),
        Text(b" failed: "),
        status_part(code),
    ]);
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

/// Write a CREATE_PROCESS request into `msg`: `image_id`, the `grants`, badge 0,
/// `supervisor_slot` (procd's own endpoint, where the kernel reports the child's death) and the
/// envelope `builder` holds. `false` if anything does not fit (it always does: at most
/// `CREATE_MAX_GRANTS` grants and an envelope of at most `1 + CREATE_MAX_GRANTS` slots).
fn write_create_request(
    msg: &mut Message,
    image_id: u32,
    grants: &[Grant],
    supervisor_slot: u32,
    builder: &EnvelopeBuilder,
) -> bool {
    let envelope_len = builder.envelope().encoded_len();
    let (Ok(grant_count), Ok(envelope_len_u16)) =
        (u16::try_from(grants.len()), u16::try_from(envelope_len))
    else {
        return false;
    };
    let payload = msg.start(
        kernel_op::CREATE_PROCESS,
        create_process_request::SIZE + envelope_len,
    );
    let mut ok = grants.len() <= create_process_request::GRANTS_COUNT
        && write_u32(payload, create_process_request::IMAGE_ID, image_id)
        && write_u16(payload, create_process_request::GRANT_COUNT, grant_count)
        && write_u16(payload, create_process_request::ENVELOPE_LEN, envelope_len_u16)
        // Badge 0 on procd's own capability to the child's endpoint: procd is its only holder
        // and tells children apart by the slot its table records.
        && write_u64(payload, create_process_request::BADGE, 0)
        && write_u32(payload, create_process_request::SUPERVISOR_SLOT, supervisor_slot);
    for (i, g) in grants.iter().enumerate() {
        let at = create_process_request::GRANTS + grant::SIZE * i;
        ok = ok && payload.get_mut(at..).is_some_and(|record| g.write(record));
    }
    ok && payload
        .get_mut(create_process_request::SIZE..)
        .and_then(|area| builder.write(area))
        == Some(envelope_len)
}

/// Write a process_status record for the process `id` in `entry`, reported `state`, into the
/// start of `record`; `false` if it does not fit.
fn write_status(record: &mut [u8], id: u32, entry: &ProcessEntry, state: u16) -> bool {
    let (death, code) = entry.death_and_code();
    record.len() >= process_status::SIZE
        && write_u32(record, process_status::ID, id)
        && write_u32(record, process_status::PID, entry.pid)
        && write_u32(record, process_status::IMAGE_ID, entry.image_id)
        && write_u16(record, process_status::ROLE, entry.role)
        && write_u16(record, process_status::STATE, state)
        && write_u16(record, process_status::FLAGS, entry.flags)
        && write_u16(record, process_status::DEATH, death)
        && write_u32(record, process_status::CODE, code)
}

/// A started child, as SPAWN_SERVICE reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Spawned {
    pid: u32,
    endpoint: u32,
    /// procd's process id for it.
    id: u32,
}

impl Spawned {
    /// Leave the OK SPAWN_SERVICE reply in `msg`.
    fn write_reply(self, msg: &mut Message) {
        let payload = msg.start(status::OK, spawn_service_reply::SIZE);
        // Cannot fail: the payload is spawn_service_reply::SIZE bytes (reserved stays 0).
        let _ = write_u32(payload, spawn_service_reply::PID, self.pid)
            && write_u32(payload, spawn_service_reply::ENDPOINT, self.endpoint)
            && write_u32(payload, spawn_service_reply::ID, self.id);
    }
}

#[cfg(test)]
mod tests;
