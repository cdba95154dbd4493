//! Request checks shared by procd's ops: the one header check every request gets
//! ([`expect_len`]) and the id STOP, KILL, REAP and STATUS carry ([`Procd::requested_id`]).
//!
//! With the generated op enums and header check of `abi`, `expect_len` becomes that check and
//! `Procd::handle` (dispatch.rs) matches on the op enum; the handlers stay as they are.

use crate::{ProcId, Procd};
use abi::{BADGE_ROOTD, Message, MessageHeader, process_request, read_u32, status};

impl Procd {
    /// The id a STOP, KILL, REAP or STATUS request from `badge` names: DENIED unless `badge` is
    /// `BADGE_ROOTD`; INVALID_ARGUMENT unless the payload is one process_request with reserved
    /// 0 and the header carries no capabilities and zero reserved fields.
    pub(crate) fn requested_id(badge: u64, msg: &Message) -> Result<ProcId, u32> {
        if badge != BADGE_ROOTD {
            return Err(status::DENIED);
        }
        let request = msg.header();
        expect_len(&request, process_request::SIZE)?;
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

/// The header check of every request: INVALID_ARGUMENT unless its payload is `len` bytes and it
/// carries no capabilities and zero reserved fields.
#[inline(always)]
pub(crate) fn expect_len(request: &MessageHeader, len: usize) -> Result<(), u32> {
    if usize::from(request.payload_len) != len
        || request.cap_count != 0
        || request.reserved0 != 0
        || request.reserved1 != 0
    {
        return Err(status::INVALID_ARGUMENT);
    }
    Ok(())
}
