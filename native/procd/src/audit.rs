//! procd's audit log: a fixed ring of the last `AUDIT_RING` lifecycle actions procd took.
//!
//! Every record gets the next number of one global sequence (starting at 0, wrapping at
//! `u32::MAX`); once the ring is full a new record overwrites the oldest. No heap.

use crate::{DoesNotFit, Role, fits};
use abi::{AUDIT_RING, audit_record, write_u16, write_u32, write_u64};

/// One lifecycle action procd took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditRecord {
    /// Its place in procd's global sequence.
    pub seq: u32,
    /// Its `audit_action`.
    pub action: u16,
    /// The `cap_purpose` of the capability procd acted through (0: none).
    pub authority: u16,
    /// The process acted on.
    pub pid: u32,
    /// That process's role.
    pub role: Role,
    /// The badge of whoever asked (BADGE_KERNEL: the restart policy's TIMER).
    pub requester: u64,
    /// Per action: see `audit_action`.
    pub detail: u64,
}

impl AuditRecord {
    /// Write the `audit_record` at the start of `out` (reserved 0).
    #[inline(always)]
    pub fn write(&self, out: &mut [u8]) -> Result<(), DoesNotFit> {
        fits(self.write_fields(out))
    }

    // The writes of `write`, `false` if one does not fit. Kept apart (not inlined) so that
    // `write` compiles to the instructions the held traces count.
    fn write_fields(&self, out: &mut [u8]) -> bool {
        out.len() >= audit_record::SIZE
            && write_u32(out, audit_record::SEQ, self.seq)
            && write_u16(out, audit_record::ACTION, self.action)
            && write_u16(out, audit_record::AUTHORITY, self.authority)
            && write_u32(out, audit_record::PID, self.pid)
            && write_u16(out, audit_record::ROLE, self.role.get())
            && write_u16(out, audit_record::RESERVED, 0)
            && write_u64(out, audit_record::REQUESTER, self.requester)
            && write_u64(out, audit_record::DETAIL, self.detail)
    }
}

/// The ring of audit records.
#[derive(Clone, Debug)]
pub struct AuditLog {
    records: [AuditRecord; AUDIT_RING],
    /// The sequence number the next record gets.
    next_seq: u32,
    /// Records held (at most `AUDIT_RING`).
    len: usize,
}

impl Default for AuditLog {
    fn default() -> Self {
        Self::new()
    }
}

impl AuditLog {
    /// An empty log; its first record gets sequence number 0.
    pub const fn new() -> Self {
        Self {
            records: [AuditRecord {
                seq: 0,
                action: 0,
                authority: 0,
                pid: 0,
                role: Role::new(0),
                requester: 0,
                detail: 0,
            }; AUDIT_RING],
            next_seq: 0,
            len: 0,
        }
    }

    /// Append `record` with the next sequence number (its own `seq` is ignored), overwriting
    /// the oldest record if the ring is full.
    pub fn push(&mut self, record: AuditRecord) {
        let seq = self.next_seq;
        // AUDIT_RING fits in a u32, so the slot index is exact.
        let slot = (seq as usize) % AUDIT_RING;
        if let Some(r) = self.records.get_mut(slot) {
            *r = AuditRecord { seq, ..record };
        }
        self.next_seq = seq.wrapping_add(1);
        self.len = self.len.saturating_add(1).min(AUDIT_RING);
    }

    /// The retained records, oldest first.
    pub fn records(&self) -> impl Iterator<Item = &AuditRecord> {
        let start = (self.next_seq as usize).wrapping_sub(self.len);
        (0..self.len).filter_map(move |i| self.records.get(start.wrapping_add(i) % AUDIT_RING))
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u32 {
        self.next_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_ring_of_records_in_order() {
        let mut log = AuditLog::new();
        assert_eq!(log.records().count(), 0);
        for i in 0..(AUDIT_RING as u64 + 5) {
            log.push(AuditRecord {
                seq: 999,
                detail: i,
                ..AuditRecord::default()
            });
        }
        let seqs: Vec<u32> = log.records().map(|r| r.seq).collect();
        assert_eq!(seqs, (5..AUDIT_RING as u32 + 5).collect::<Vec<_>>());
        assert!(log.records().all(|r| u64::from(r.seq) == r.detail));
        assert_eq!(log.next_seq(), AUDIT_RING as u32 + 5);
    }
}
