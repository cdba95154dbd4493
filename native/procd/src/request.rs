//! Request checks shared by procd's ops: the header and payload shapes rootd's requests carry.

use crate::{ProcId, Procd};
use abi::{BADGE_ROOTD, Message, process_request, read_u32, status};

impl Procd {
    /// The id a STOP, KILL, REAP or STATUS request from `badge` names: DENIED unless `badge` is
    /// `BADGE_ROOTD`; INVALID_ARGUMENT unless the payload is one process_request with reserved
    /// 0 and the header carries no capabilities and zero reserved fields.
    pub(crate) fn requested_id(badge: u64, msg: &Message) -> Result<ProcId, u32> {
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
            (Some(id), Some(0)) => Ok(ProcId::from(id)),
            _ => Err(status::INVALID_ARGUMENT),
        }
    }
}
