//! procd's process table: `PROCD_MAX_PROCESSES` fixed entries, filled lowest index first.
//!
//! An entry is free, or holds a live process (created, running or stopping), or a FAILED one:
//! a child that faulted, was killed without STOP, or exited non-zero. A FAILED entry keeps its
//! id (index and generation) and its place in the table until rootd REAPs it
//! ([`ProcessTable::free`]); procd no longer holds its endpoint capability. A RESTARTING entry
//! holds a process that ended and that procd restarts (in the same entry, with the next
//! generation) when its backoff timer fires; it keeps its id until then and holds no endpoint
//! capability either. A HELD entry is a spawn waiting for its dependencies: it has an id but no
//! process (pid 0) until procd launches it in that same entry.
//!
//! Every entry has a generation, so that procd's process ids ([`ProcId`]: index |
//! generation << `PROCD_ID_GENERATION_SHIFT`) name one occupant of an entry and never the next.
//! A fresh table's entries have generation 1; a free entry holds the generation its next
//! occupant gets. Freeing an entry after its occupant's life ([`ProcessTable::free`]) advances
//! the generation (0xFFFF wraps to 1, never 0); releasing an entry whose spawn failed before
//! procd handed out its id ([`ProcessTable::release`]) keeps it.

use abi::{PROCD_MAX_PROCESSES, death_kind, proc_state};

use crate::{Generation, ProcId, Restart, RestartPolicy, Role};

/// Why procd asked the kernel to end a child (STOP or KILL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// STOP: the death is not reported to crashd.
    Stop,
    /// KILL: the death is reported to crashd as KILLED.
    Kill,
}

/// How a child ended (its `death_kind` on the wire), as a FAILED or RESTARTING entry keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum DeathKind {
    /// It EXITed; the code is its exit code.
    Exited = death_kind::EXITED,
    /// The kernel killed it for a fault; the code is its fault_kind.
    Faulted = death_kind::FAULTED,
    /// KILL_PROCESS ended it; the code is 0.
    Killed = death_kind::KILLED,
    /// procd never started it: a dependency failed; the code is that dependency's role.
    Dependency = death_kind::DEPENDENCY,
}

impl DeathKind {
    /// Its `death_kind` number.
    pub const fn wire(self) -> u16 {
        self as u16
    }
}

/// Lifecycle state of a table entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProcState {
    /// Unused.
    #[default]
    Free,
    /// CREATE_PROCESS succeeded; START_PROCESS not yet.
    Created,
    /// START_PROCESS succeeded.
    Running,
    /// The kernel accepted KILL_PROCESS for it (asked by STOP or KILL); its CHILD_DIED has not
    /// arrived yet.
    Stopping(Ending),
    /// It died a failure (faulted, killed without STOP, or exited non-zero); held until REAP.
    Failed {
        /// How it ended.
        death: DeathKind,
        /// EXITED: the exit code (saturated to u32); FAULTED: the fault_kind; KILLED: 0.
        code: u32,
    },
    /// It ended and its restart policy restarts it: procd's SET_TIMER for the restart is
    /// pending. The death is kept for the FAILED state it falls to if the restart fails.
    Restarting {
        /// How it ended.
        death: DeathKind,
        /// As for [`ProcState::Failed`].
        code: u32,
    },
    /// Spawned with dependencies (`depends_on`) not all RUNNING yet: nothing exists in the
    /// kernel (pid 0, no endpoint); procd launches it in this entry, with this id, once every
    /// role it depends on has a RUNNING entry.
    Held,
}

impl ProcState {
    /// Whether the entry holds a process that may still be alive, whose endpoint capability
    /// procd keeps: created, running or stopping (not free, not FAILED).
    pub const fn is_live(self) -> bool {
        matches!(self, Self::Created | Self::Running | Self::Stopping(_))
    }
}

/// One process procd created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessEntry {
    pub state: ProcState,
    /// Process id from the kernel's CREATE_PROCESS reply.
    pub pid: u32,
    /// Endpoint id from the kernel's CREATE_PROCESS reply.
    pub endpoint: u32,
    /// procd's slot holding the SEND|GRANT capability to the child's endpoint.
    pub endpoint_slot: u32,
    pub role: Role,
    pub image_id: u32,
    pub flags: u16,
    /// The occupant's generation (of a free entry: the next occupant's). Never 0 in a table
    /// procd keeps.
    pub generation: Generation,
    /// Its restart policy and recent restarts.
    pub restart: Restart,
    /// The roles it waits for (bit r: role r), from its SPAWN_SERVICE request.
    pub depends_on: u64,
    /// Who asked for it (`BADGE_ROOTD`, or the SPAWN client's badge): the audit requester of
    /// a held service's launch.
    pub requester: u64,
}

impl ProcessEntry {
    /// The `proc_state` STATUS and LIST report for this entry: RUNNING, STOPPING, FAILED,
    /// RESTARTING or HELD; `None` for an entry no request can name (free, or created but not started).
    pub fn reported_state(&self) -> Option<u16> {
        match self.state {
            ProcState::Running => Some(proc_state::RUNNING),
            ProcState::Stopping(_) => Some(proc_state::STOPPING),
            ProcState::Failed { .. } => Some(proc_state::FAILED),
            ProcState::Restarting { .. } => Some(proc_state::RESTARTING),
            ProcState::Held => Some(proc_state::HELD),
            ProcState::Free | ProcState::Created => None,
        }
    }

    /// The death and code STATUS and LIST report: the FAILED entry's, `None` for any other
    /// (RESTARTING included; the wire says (0, 0)).
    pub fn death_and_code(&self) -> Option<(DeathKind, u32)> {
        match self.state {
            ProcState::Failed { death, code } => Some((death, code)),
            _ => None,
        }
    }
}

/// The process table.
#[derive(Clone, Debug)]
pub struct ProcessTable {
    entries: [ProcessEntry; PROCD_MAX_PROCESSES],
}

impl Default for ProcessTable {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessTable {
    /// An empty table.
    pub const fn new() -> Self {
        Self {
            entries: [ProcessEntry {
                state: ProcState::Free,
                pid: 0,
                endpoint: 0,
                endpoint_slot: 0,
                role: Role::new(0),
                image_id: 0,
                flags: 0,
                generation: Generation::FIRST,
                restart: Restart::new(RestartPolicy::Never, 0, 0, 0),
                depends_on: 0,
                requester: 0,
            }; PROCD_MAX_PROCESSES],
        }
    }

    /// All entries, free ones included, by index.
    pub fn entries(&self) -> &[ProcessEntry] {
        &self.entries
    }

    /// Entries whose process may still be alive ([`ProcState::is_live`]): not free, not FAILED.
    pub fn live(&self) -> impl Iterator<Item = &ProcessEntry> {
        self.entries.iter().filter(|e| e.state.is_live())
    }

    /// Whether some entry of role `role` is RUNNING.
    pub fn role_running(&self, role: Role) -> bool {
        self.entries
            .iter()
            .any(|e| e.role == role && e.state == ProcState::Running)
    }

    /// Whether some entry of role `role` is FAILED.
    pub fn role_failed(&self, role: Role) -> bool {
        self.entries
            .iter()
            .any(|e| e.role == role && matches!(e.state, ProcState::Failed { .. }))
    }

    /// FAILED entries, held until REAP.
    pub fn failed(&self) -> impl Iterator<Item = &ProcessEntry> {
        self.entries
            .iter()
            .filter(|e| matches!(e.state, ProcState::Failed { .. }))
    }

    /// The lowest free index, if any (FAILED entries are not free).
    pub fn free_index(&self) -> Option<usize> {
        self.entries.iter().position(|e| e.state == ProcState::Free)
    }

    /// Whether a live entry keeps its endpoint capability in `slot`.
    pub fn holds_slot(&self, slot: u32) -> bool {
        self.live().any(|e| e.endpoint_slot == slot)
    }

    /// The index of the live entry for process `pid`, if any (free and FAILED entries never
    /// match, so pid 0 finds nothing unless a live entry has it).
    pub fn index_of_pid(&self, pid: u32) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.state.is_live() && e.pid == pid)
    }

    /// The entry process id `id` names, with its index: `None` if the index is out of range,
    /// the entry is not running, stopping, FAILED or RESTARTING (free, or created but not
    /// started), or its
    /// generation is not the id's (a stale id).
    pub fn lookup(&self, id: ProcId) -> Option<(usize, &ProcessEntry)> {
        let (index, generation) = id.split()?;
        self.entries
            .get(index)
            .filter(|e| e.reported_state().is_some() && e.generation == generation)
            .map(|e| (index, e))
    }

    /// The id of the occupant of entry `index` (`None` if out of range).
    pub fn id_of(&self, index: usize) -> Option<ProcId> {
        self.generation(index)
            .and_then(|generation| ProcId::new(index, generation))
    }

    /// The generation the next occupant of entry `index` gets (`None` if out of range).
    pub fn generation(&self, index: usize) -> Option<Generation> {
        self.entries.get(index).map(|e| e.generation)
    }

    /// Mark entry `index` free after its occupant's life (its clean end, or REAP of a FAILED
    /// entry; ignored if out of range): a later spawn may reuse it, with the next generation.
    pub fn free(&mut self, index: usize) {
        if let Some(e) = self.entries.get_mut(index) {
            // Planted bug: the next occupant gets the same generation, so old ids name it.
            let generation = if cfg!(feature = "planted-generation-stuck") {
                e.generation
            } else {
                e.generation.next()
            };
            *e = ProcessEntry {
                generation,
                ..ProcessEntry::default()
            };
        }
    }

    /// Mark entry `index` free again without advancing its generation (ignored if out of
    /// range): for an occupant whose id procd never handed out.
    pub fn release(&mut self, index: usize) {
        if let Some(e) = self.entries.get_mut(index) {
            *e = ProcessEntry {
                generation: e.generation,
                ..ProcessEntry::default()
            };
        }
    }

    /// Overwrite entry `index` (ignored if out of range).
    pub fn set(&mut self, index: usize, entry: ProcessEntry) {
        if let Some(e) = self.entries.get_mut(index) {
            *e = entry;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(raw: u16) -> Generation {
        Generation::new(raw)
    }
    use abi::PROCD_ID_GENERATION_SHIFT;

    #[test]
    fn fills_lowest_free_index() {
        let mut t = ProcessTable::new();
        assert_eq!(t.free_index(), Some(0));
        let used = ProcessEntry {
            state: ProcState::Running,
            endpoint_slot: 9,
            ..ProcessEntry::default()
        };
        t.set(0, used);
        t.set(1, used);
        assert_eq!(t.free_index(), Some(2));
        t.set(0, ProcessEntry::default());
        assert_eq!(t.free_index(), Some(0));
        assert!(t.holds_slot(9));
        assert!(!t.holds_slot(0));
        assert_eq!(t.live().count(), 1);
        t.set(PROCD_MAX_PROCESSES, used);
        assert_eq!(t.live().count(), 1);
    }

    #[test]
    fn full_table_has_no_free_index() {
        let mut t = ProcessTable::new();
        for i in 0..PROCD_MAX_PROCESSES {
            t.set(
                i,
                ProcessEntry {
                    state: ProcState::Created,
                    ..ProcessEntry::default()
                },
            );
        }
        assert_eq!(t.free_index(), None);
        assert_eq!(t.entries().len(), PROCD_MAX_PROCESSES);
    }

    #[test]
    fn finds_live_entries_by_pid_and_frees_them() {
        let mut t = ProcessTable::new();
        assert_eq!(t.index_of_pid(0), None, "free entries never match");
        t.set(
            3,
            ProcessEntry {
                state: ProcState::Running,
                pid: 7,
                endpoint_slot: 12,
                ..ProcessEntry::default()
            },
        );
        assert_eq!(t.index_of_pid(7), Some(3));
        assert_eq!(t.index_of_pid(0), None);
        assert_eq!(t.index_of_pid(8), None);
        t.free(3);
        assert_eq!(t.index_of_pid(7), None);
        assert!(!t.holds_slot(12));
        assert_eq!(t.live().count(), 0);
        t.free(PROCD_MAX_PROCESSES);
    }

    fn running(pid: u32) -> ProcessEntry {
        ProcessEntry {
            state: ProcState::Running,
            pid,
            ..ProcessEntry::default()
        }
    }

    #[test]
    fn a_fresh_table_starts_every_entry_at_generation_1() {
        let t = ProcessTable::new();
        assert!(
            t.entries()
                .iter()
                .all(|e| e.generation == Generation::FIRST)
        );
        assert_eq!(
            t.id_of(0).map(ProcId::get),
            Some(1 << PROCD_ID_GENERATION_SHIFT)
        );
        assert_eq!(
            t.id_of(5).map(ProcId::get),
            Some(1 << PROCD_ID_GENERATION_SHIFT | 5)
        );
        assert_eq!(t.id_of(PROCD_MAX_PROCESSES), None);
    }

    #[test]
    fn freeing_advances_the_generation_and_releasing_keeps_it() {
        let mut t = ProcessTable::new();
        t.set(
            2,
            ProcessEntry {
                generation: g(1),
                ..running(7)
            },
        );
        let id = t.id_of(2).unwrap();
        assert_eq!(t.lookup(id).map(|(i, e)| (i, e.pid)), Some((2, 7)));
        t.free(2);
        assert_eq!(t.entries()[2].state, ProcState::Free);
        assert_eq!(t.generation(2), Some(g(2)));
        assert_eq!(t.lookup(id), None, "free");
        t.set(
            2,
            ProcessEntry {
                generation: g(2),
                ..running(8)
            },
        );
        assert_eq!(t.lookup(id), None, "stale");
        let new_id = t.id_of(2).unwrap();
        assert_eq!(new_id.get(), 2 << PROCD_ID_GENERATION_SHIFT | 2);
        assert_eq!(t.lookup(new_id).map(|(_, e)| e.pid), Some(8));
        t.release(2);
        assert_eq!(t.generation(2), Some(g(2)));
        assert_eq!(t.lookup(new_id), None);
        t.free(PROCD_MAX_PROCESSES);
        t.release(PROCD_MAX_PROCESSES);
    }

    #[test]
    fn a_freed_entry_at_generation_0xffff_goes_back_to_1() {
        let mut t = ProcessTable::new();
        t.set(
            0,
            ProcessEntry {
                generation: g(0xFFFF),
                ..running(1)
            },
        );
        assert_eq!(t.id_of(0).map(ProcId::get), Some(0xFFFF_0000));
        assert_eq!(t.lookup(ProcId::from(0xFFFF_0000)).map(|(i, _)| i), Some(0));
        t.free(0);
        assert_eq!(t.generation(0), Some(g(1)));
    }

    #[test]
    fn only_running_and_stopping_entries_are_named_by_ids() {
        let mut t = ProcessTable::new();
        let id = t.id_of(0).unwrap();
        assert_eq!(t.lookup(id), None);
        for (state, found) in [
            (ProcState::Created, false),
            (ProcState::Running, true),
            (ProcState::Stopping(Ending::Stop), true),
            (ProcState::Stopping(Ending::Kill), true),
        ] {
            t.set(
                0,
                ProcessEntry {
                    state,
                    generation: g(1),
                    ..ProcessEntry::default()
                },
            );
            assert_eq!(t.lookup(id).is_some(), found, "{state:?}");
        }
        assert_eq!(running(1).reported_state(), Some(proc_state::RUNNING));
        assert_eq!(ProcessEntry::default().reported_state(), None);
    }

    #[test]
    fn failed_entries_are_named_but_neither_live_nor_free() {
        let mut t = ProcessTable::new();
        let failed = ProcessEntry {
            state: ProcState::Failed {
                death: DeathKind::Exited,
                code: 3,
            },
            pid: 7,
            endpoint_slot: 12,
            generation: g(1),
            ..ProcessEntry::default()
        };
        t.set(0, failed);
        let id = t.id_of(0).unwrap();
        assert_eq!(t.lookup(id).map(|(i, _)| i), Some(0));
        assert_eq!(failed.reported_state(), Some(proc_state::FAILED));
        assert_eq!(failed.death_and_code(), Some((DeathKind::Exited, 3)));
        assert_eq!(running(1).death_and_code(), None);
        assert!(!failed.state.is_live());
        assert_eq!(t.live().count(), 0);
        assert_eq!(t.failed().count(), 1);
        assert_eq!(t.index_of_pid(7), None);
        assert!(!t.holds_slot(12));
        assert_eq!(t.free_index(), Some(1));
        t.free(0);
        assert_eq!(t.failed().count(), 0);
        assert_eq!((t.free_index(), t.generation(0)), (Some(0), Some(g(2))));
        assert_eq!(t.lookup(id), None);
    }
}
