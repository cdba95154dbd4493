//! Dependency order: which roles a spawn waits for, releasing HELD entries and failing them.

use crate::LogPart::{Dec, Text};
use crate::lifecycle::AlreadyLogged;
use crate::spawn::Launch;
use crate::{
    DeathKind, Kernel, ProcState, Procd, ROLE_NAME_MAX, Role, procd_runs, role_lowercase,
    status_part,
};
use abi::{Message, PROCD_MAX_PROCESSES, role, status};

impl Procd {
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
    pub(crate) fn check_dependencies(&self, child_role: Role, depends_on: u64) -> Result<(), u32> {
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
    pub(crate) fn dependencies_available(&self, depends_on: u64) -> bool {
        roles_of(depends_on).all(|r| self.role_available(r))
    }

    /// Whether rootd started a service of role `r` before procd (the envelope says so).
    pub(crate) fn started_by_rootd(&self, r: Role) -> bool {
        self.started_roles & role_bit(r) != 0
    }

    /// Whether a dependency on role `r` is satisfied: rootd started it before procd, or one of
    /// procd's entries of that role is RUNNING.
    pub(crate) fn role_available(&self, r: Role) -> bool {
        self.started_by_rootd(r) || self.table.role_running(r)
    }

    /// A process became RUNNING: launch, in index order, every HELD entry whose dependencies
    /// are all available now, repeating until none is left to launch (a launched one
    /// may release others). Each launch is the normal one ([`Procd::launch`], requester: the
    /// entry's, i.e. whoever asked for it) into the held entry with its own id; log
    /// `procd: releasing <role> (pid <pid>)`. A launch that fails logs
    /// `procd: release of <role> failed: <STATUS>` and holds the entry FAILED with death
    /// DEPENDENCY and code 0 (`hold_failed` with no line of its own: its own dependents fail too).
    pub(crate) fn release_held(&mut self, k: &mut impl Kernel, msg: &mut Message) {
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
                let launch = Launch {
                    index,
                    generation: entry.generation,
                    service: entry,
                    requester: entry.requester,
                    restart_of: None,
                };
                match self.launch(k, msg, launch) {
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
                        self.hold_failed(k, index, entry, DeathKind::Dependency, 0, AlreadyLogged);
                    }
                }
            }
        }
    }

    /// An entry of `failed_role` became FAILED: unless the role is still available (another
    /// entry of it RUNNING, or rootd started it), every HELD entry depending on it can never
    /// start. Each (in index order) is held FAILED with death DEPENDENCY and code
    /// `failed_role`, after logging `procd: <role> cannot start: <failed role> failed`; that
    /// fails its own dependents in turn (each step turns a HELD entry FAILED, so this ends).
    pub(crate) fn fail_dependents(&mut self, k: &mut impl Kernel, failed_role: Role) {
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
            self.hold_failed(
                k,
                index,
                entry,
                DeathKind::Dependency,
                u32::from(failed_role.get()),
                AlreadyLogged,
            );
        }
    }
}

/// Role `r`'s bit in a `depends_on` mask (0 for a role beyond bit 63).
pub(crate) fn role_bit(r: Role) -> u64 {
    r.bit()
}

/// The roles whose bits `mask` has, lowest first.
pub(crate) fn roles_of(mask: u64) -> RolesOf {
    RolesOf(mask)
}

/// The roles of a `depends_on` mask ([`roles_of`]): its set bits, lowest first.
pub(crate) struct RolesOf(u64);

impl Iterator for RolesOf {
    type Item = Role;

    fn next(&mut self) -> Option<Role> {
        if self.0 == 0 {
            return None;
        }
        // At most 63, so it fits a u16.
        let r = self.0.trailing_zeros() as u16;
        self.0 &= self.0 - 1;
        Some(Role::new(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_of_yields_each_set_bit_once_lowest_first() {
        for mask in [
            0u64,
            1,
            0b1011_0000,
            1 << 63,
            u64::MAX,
            0x8000_0000_0000_0001,
        ] {
            let roles: Vec<u16> = roles_of(mask).map(Role::get).collect();
            let expected: Vec<u16> = (0..64u16).filter(|&r| mask & (1 << r) != 0).collect();
            assert_eq!(roles, expected, "mask {mask:#x}");
            let back = roles_of(mask).fold(0u64, |m, r| m | role_bit(r));
            assert_eq!(back, mask);
        }
    }
}
