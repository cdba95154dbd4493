//! The id STOP, KILL, REAP and STATUS carry ([`Procd::requested_id`]). Every request's header is
//! checked against the payload its op carries with `abi`'s one check, `MessageHeader::expect`
//! (e.g. `request.expect(ProcdOp::Status.request())?`), generated from the ABI's op table.

use crate::{ProcId, Procd};
use abi::{BADGE_ROOTD, Message, ProcdOp, process_request, read_u32, status};

impl Procd {
    /// The id a STOP, KILL, REAP or STATUS request from `badge` names: DENIED unless `badge` is
    /// `BADGE_ROOTD`; INVALID_ARGUMENT unless the payload is one process_request with reserved
    /// 0 and the header carries no capabilities and zero reserved fields.
    pub(crate) fn requested_id(badge: u64, msg: &Message) -> Result<ProcId, u32> {
        if badge != BADGE_ROOTD && !cfg!(feature = "planted-missing-badge-check") {
            return Err(status::DENIED);
        }
        let request = msg.header();
        request.expect(ProcdOp::Status.request())?;
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
