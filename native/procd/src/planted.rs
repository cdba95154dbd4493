//! Planted bugs that need code of their own (the others are a `cfg!` at their place): built only
//! with their cargo feature, into the procd variants `emu fuzz` must catch (docs/fuzzing.md).

use abi::{Malformed, MessageHeader, ProcdOp, spawn_service_request};

/// SPAWN_SERVICE's header check, off by one: a payload one byte longer than a
/// spawn_service_request passes too.
pub(crate) fn expect_spawn_admitting_one_more_byte(
    request: MessageHeader,
) -> Result<(), Malformed> {
    let mut header = request;
    if usize::from(header.payload_len) == spawn_service_request::SIZE + 1 {
        header.payload_len -= 1;
    }
    header.expect(ProcdOp::SpawnService.request())
}
