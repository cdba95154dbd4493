//! Queries from rootd: STATUS, LIST and AUDIT_READ.

use crate::{AUDIT_READ_MAX, DoesNotFit, ProcId, Procd, ProcessEntry, fits};
use abi::{
    BADGE_ROOTD, Message, ProcdOp, audit_read_request, audit_record, process_status, read_u32,
    status, write_u16, write_u32,
};

impl Procd {
    /// STATUS from rootd: reply OK with the process_status of the process the request's id
    /// names. After the request checks (`requested_id`), NOT_FOUND for a stale id.
    pub(crate) fn status(&self, badge: u64, msg: &mut Message) -> Result<(), u32> {
        let id = Self::requested_id(badge, msg)?;
        #[cfg(feature = "planted-panic")]
        crate::planted::status_of(u32::from(id));
        let (_, entry) = self.table.lookup(id).ok_or(status::NOT_FOUND)?;
        let state = entry.reported_state().ok_or(status::NOT_FOUND)?;
        let record = msg.start(status::OK, process_status::SIZE);
        write_status(record, id, entry, state)?;
        Ok(())
    }

    /// LIST from rootd: reply OK with one process_status per running, stopping, FAILED,
    /// RESTARTING or HELD (pid 0) entry, in table index order (none: an empty payload). DENIED unless `badge`
    /// is `BADGE_ROOTD`; INVALID_ARGUMENT for a payload, capabilities or non-zero reserved
    /// header fields.
    pub(crate) fn list(&self, badge: u64, msg: &mut Message) -> Result<(), u32> {
        if badge != BADGE_ROOTD {
            return Err(status::DENIED);
        }
        let request = msg.header();
        request.expect(ProcdOp::List.request())?;
        let listed = || {
            self.table
                .entries()
                .iter()
                .enumerate()
                .filter_map(|(index, e)| {
                    let id = ProcId::new(index, e.generation)?;
                    Some((id, e, e.reported_state()?))
                })
        };
        let payload = msg.start(status::OK, listed().count() * process_status::SIZE);
        for (record, (id, entry, state)) in
            payload.chunks_exact_mut(process_status::SIZE).zip(listed())
        {
            write_status(record, id, entry, state)?;
        }
        Ok(())
    }

    /// AUDIT_READ from rootd: reply OK with the retained audit records whose seq is at least
    /// the request's `from_seq`, oldest first, at most [`AUDIT_READ_MAX`] (none: an empty
    /// payload). DENIED unless `badge` is `BADGE_ROOTD`; INVALID_ARGUMENT unless the payload is
    /// one audit_read_request with reserved 0 and the header carries no capabilities and zero
    /// reserved fields.
    pub(crate) fn audit_read(&self, badge: u64, msg: &mut Message) -> Result<(), u32> {
        if badge != BADGE_ROOTD {
            return Err(status::DENIED);
        }
        let request = msg.header();
        request.expect(ProcdOp::AuditRead.request())?;
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
            record.write(out)?;
        }
        Ok(())
    }
}

/// Write a process_status record for the process `id` in `entry`, reported `state`, into the
/// start of `record`.
#[inline(always)]
pub(crate) fn write_status(
    record: &mut [u8],
    id: ProcId,
    entry: &ProcessEntry,
    state: u16,
) -> Result<(), DoesNotFit> {
    fits(write_status_fields(record, id, entry, state))
}

// The writes of `write_status`, `false` if one does not fit. Kept apart (not inlined) so that
// `write_status` compiles to the instructions the held traces count.
fn write_status_fields(record: &mut [u8], id: ProcId, entry: &ProcessEntry, state: u16) -> bool {
    let (death, code) = match entry.death_and_code() {
        Some((death, code)) => (death.wire(), code),
        None => (0, 0),
    };
    record.len() >= process_status::SIZE
        && write_u32(record, process_status::ID, id.get())
        && write_u32(record, process_status::PID, entry.pid)
        && write_u32(record, process_status::IMAGE_ID, entry.image_id)
        && write_u16(record, process_status::ROLE, entry.role.get())
        && write_u16(record, process_status::STATE, state)
        && write_u16(record, process_status::FLAGS, entry.flags)
        && write_u16(record, process_status::DEATH, death)
        && write_u32(record, process_status::CODE, code)
}
