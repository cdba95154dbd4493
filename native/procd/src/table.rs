//! procd's process table: `PROCD_MAX_PROCESSES` fixed entries, filled lowest index first.

use abi::PROCD_MAX_PROCESSES;

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
    pub role: u16,
    pub image_id: u32,
    pub flags: u16,
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
                role: 0,
                image_id: 0,
                flags: 0,
            }; PROCD_MAX_PROCESSES],
        }
    }

    /// All entries, free ones included, by index.
    pub fn entries(&self) -> &[ProcessEntry] {
        &self.entries
    }

    /// Entries in use.
    pub fn live(&self) -> impl Iterator<Item = &ProcessEntry> {
        self.entries.iter().filter(|e| e.state != ProcState::Free)
    }

    /// The lowest free index, if any.
    pub fn free_index(&self) -> Option<usize> {
        self.entries.iter().position(|e| e.state == ProcState::Free)
    }

    /// Whether a live entry keeps its endpoint capability in `slot`.
    pub fn holds_slot(&self, slot: u32) -> bool {
        self.live().any(|e| e.endpoint_slot == slot)
    }

    /// The index of the live entry for process `pid`, if any (free entries never match, so pid 0
    /// finds nothing unless a live entry has it).
    pub fn index_of_pid(&self, pid: u32) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.state != ProcState::Free && e.pid == pid)
    }

    /// Mark entry `index` free (ignored if out of range); a later spawn may reuse it.
    pub fn free(&mut self, index: usize) {
        self.set(index, ProcessEntry::default());
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
}
