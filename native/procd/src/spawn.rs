//! Spawning: SPAWN_SERVICE and SPAWN, and the launch of a service into a table entry.

use crate::LogPart::Text;
use crate::kernel_calls::CHILD_PROCD_RIGHTS;
use crate::{
    Generation, Kernel, ProcId, ProcState, Procd, ProcessEntry, ROLE_NAME_MAX, Restart,
    RestartPolicy, Role, badge_index, procd_runs, role_lowercase,
};
use abi::{
    BADGE_ROOTD, CAP_TABLE_SLOTS, Message, audit_action, cap_purpose, create_process_reply,
    envelope_flag, kernel_op, read_u8, read_u16, read_u32, read_u64, spawn_service_reply,
    spawn_service_request, start_process_request, status, write_u32,
};

impl Procd {
    /// SPAWN_SERVICE: DENIED unless `badge` is `BADGE_ROOTD`; otherwise `spawn_checked` with
    /// requester `BADGE_ROOTD` and no client limits.
    pub(crate) fn spawn_service(
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
    pub(crate) fn spawn_for_client(
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
    pub(crate) fn spawn_checked(
        &mut self,
        k: &mut impl Kernel,
        requester: u64,
        msg: &mut Message,
        client: bool,
    ) -> Result<Spawned, u32> {
        let request = msg.header();
        #[cfg(not(feature = "planted-length-off-by-one"))]
        request.expect(abi::ProcdOp::SpawnService.request())?;
        #[cfg(feature = "planted-length-off-by-one")]
        crate::planted::expect_spawn_admitting_one_more_byte(request)?;
        let payload = msg.payload();
        let field_u32 = |offset| read_u32(payload, offset).ok_or(status::INVALID_ARGUMENT);
        let field_u16 = |offset| read_u16(payload, offset).ok_or(status::INVALID_ARGUMENT);
        let field_u8 = |offset| read_u8(payload, offset).ok_or(status::INVALID_ARGUMENT);
        let image_id = field_u32(spawn_service_request::IMAGE_ID)?;
        let child_role = Role::from(field_u16(spawn_service_request::ROLE)?);
        let flags = field_u16(spawn_service_request::FLAGS)?;
        let policy = RestartPolicy::try_from(field_u8(spawn_service_request::RESTART)?)?;
        let restart = Restart::new(
            policy,
            field_u8(spawn_service_request::MAX_RESTARTS)?,
            field_u32(spawn_service_request::WINDOW_MS)?,
            field_u32(spawn_service_request::BACKOFF_MS)?,
        );
        let reserved = field_u16(spawn_service_request::RESERVED)?;
        let depends_on =
            read_u64(payload, spawn_service_request::DEPENDS_ON).ok_or(status::INVALID_ARGUMENT)?;
        if child_role.name().is_none()
            || !procd_runs(child_role)
            || flags & !envelope_flag::ALL != 0
            || image_id == 0
            || reserved != 0
        {
            return Err(status::INVALID_ARGUMENT);
        }
        #[cfg(feature = "planted-panic")]
        crate::planted::spawn_fields(
            child_role.get(),
            policy as u8,
            restart.max_restarts,
            restart.backoff_ms,
        );
        let privileged =
            envelope_flag::REQUIRED | envelope_flag::BOOTSTRAP_CRITICAL | envelope_flag::SPAWNER;
        if client && (child_role != Role::TEST || flags & privileged != 0) {
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
            let spawned = self.launch(
                k,
                msg,
                Launch {
                    index,
                    generation,
                    service,
                    requester,
                    restart_of: None,
                },
            )?;
            self.release_held(k, msg);
            return Ok(spawned);
        }
        // Hold it: no kernel call and no audit record until its dependencies run.
        let id = ProcId::new(index, generation).ok_or(status::INTERNAL)?;
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

    /// Start the service `launch.service` describes (its image_id, role, flags and restart
    /// record) at table entry `launch.index` for an occupant of `launch.generation`: MINT (see below), CREATE_PROCESS then
    /// START_PROCESS. On success the entry is RUNNING with the new pid, endpoint and endpoint
    /// slot. On failure the failing status (the kernel's, or INTERNAL); the entry is untouched
    /// unless START_PROCESS failed, which releases it (see below).
    ///
    /// A child whose intake spec lists PROCD_ENDPOINT (required or optional) gets a SEND
    /// capability to procd's endpoint with badge [`child_badge`]`(index)`: procd MINTs it into
    /// its own table (a failed MINT is the reply, nothing else happens), appends its grant to
    /// the plan, and deletes its copy once CREATE_PROCESS has returned, whatever the outcome.
    ///
    /// Audit (requester `launch.requester`): once procd accepts CREATE_PROCESS's reply, RESTART
    /// (detail: the old pid) if `launch.restart_of` names one, CREATE (detail: image id) and one GRANT
    /// per grant of the plan (detail: purpose | rights << 16), all with the new pid; START
    /// once START_PROCESS succeeds.
    pub(crate) fn launch(
        &mut self,
        k: &mut impl Kernel,
        msg: &mut Message,
        launch: Launch,
    ) -> Result<Spawned, u32> {
        let Launch {
            index,
            generation,
            service,
            requester,
            restart_of,
        } = launch;
        let (image_id, child_role, flags) = (service.image_id, service.role, service.flags);
        let id = ProcId::new(index, generation).ok_or(status::INTERNAL)?;
        let mut plan = capabi::plan_child_grants(child_role.get(), &self.env)?;

        // The child's PROCD_ENDPOINT: minted here, badged with the child's table index.
        let minted = match capabi::intake_entry(child_role.get(), cap_purpose::PROCD_ENDPOINT) {
            Some(_) => Some(self.mint_child_endpoint(k, msg, index)?),
            None => None,
        };
        let created = match minted {
            Some(slot) => plan
                .push(slot, CHILD_PROCD_RIGHTS, cap_purpose::PROCD_ENDPOINT)
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
        // Always fits: the payload is start_process_request::SIZE bytes (reserved stays 0).
        let written = write_u32(payload, start_process_request::PID, pid);
        debug_assert!(written, "a fixed-size payload always fits its record");
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
}

/// What [`Procd::launch`] starts, where, and on whose behalf.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Launch {
    /// The table entry it runs in.
    pub(crate) index: usize,
    /// The occupant's generation (the entry's, for a new occupant or a restart).
    pub(crate) generation: Generation,
    /// The service: its image_id, role, flags and restart record (other fields are ignored).
    pub(crate) service: ProcessEntry,
    /// The audit requester of its records (`BADGE_KERNEL` for a policy restart).
    pub(crate) requester: u64,
    /// The pid of the run a policy restart replaces: audited as RESTART.
    pub(crate) restart_of: Option<u32>,
}

/// A started child, as SPAWN_SERVICE reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Spawned {
    pub(crate) pid: u32,
    pub(crate) endpoint: u32,
    /// procd's process id for it.
    pub(crate) id: ProcId,
}

impl Spawned {
    /// Leave the OK SPAWN_SERVICE reply in `msg`.
    pub(crate) fn write_reply(self, msg: &mut Message) {
        let payload = msg.start(status::OK, spawn_service_reply::SIZE);
        // Always fits: the payload is spawn_service_reply::SIZE bytes (reserved stays 0).
        let written = write_u32(payload, spawn_service_reply::PID, self.pid)
            && write_u32(payload, spawn_service_reply::ENDPOINT, self.endpoint)
            && write_u32(payload, spawn_service_reply::ID, self.id.get());
        debug_assert!(written, "a fixed-size payload always fits its record");
    }
}
