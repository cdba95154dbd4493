//! Planted bugs that need code of their own (the others are a `cfg!` at their place), each built
//! only with its cargo feature, into the procd variants the emulator's tools must catch: `emu
//! fuzz` (docs/fuzzing.md) and crash dumps of procd itself (docs/dump-format.md). The default
//! build compiles none of this.

#[cfg(feature = "planted-length-off-by-one")]
use abi::{Malformed, MessageHeader, ProcdOp, spawn_service_request};

/// SPAWN_SERVICE's header check, off by one: a payload one byte longer than a
/// spawn_service_request passes too.
#[cfg(feature = "planted-length-off-by-one")]
pub(crate) fn expect_spawn_admitting_one_more_byte(
    request: MessageHeader,
) -> Result<(), Malformed> {
    let mut header = request;
    if usize::from(header.payload_len) == spawn_service_request::SIZE + 1 {
        header.payload_len -= 1;
    }
    header.expect(ProcdOp::SpawnService.request())
}

/// The id whose STATUS request panics. No table entry has it in any test (index 0xF00D).
#[cfg(feature = "planted-panic")]
pub const PLANTED_PANIC_ID: u32 = 0x0BAD_F00D;

/// STATUS of `id`: panics for [`PLANTED_PANIC_ID`] (the planted bug), else nothing.
#[cfg(feature = "planted-panic")]
#[inline(never)]
pub(crate) fn status_of(id: u32) {
    if id == PLANTED_PANIC_ID {
        panic!("planted bug: STATUS of id {id:#x}");
    }
}

/// A rare combination of SPAWN_SERVICE fields panics: a LOGD service, restarted ALWAYS, at most
/// 3 times, after a backoff of 40 ms. Each test is its own branch, so a coverage-guided fuzzer
/// can find its way in one field at a time.
#[cfg(feature = "planted-panic")]
#[inline(never)]
pub(crate) fn spawn_fields(role: u16, policy: u8, max_restarts: u8, backoff_ms: u32) {
    if role == abi::role::LOGD
        && policy == abi::restart_policy::ALWAYS
        && max_restarts == 3
        && backoff_ms == 40
    {
        panic!("planted bug: a LOGD service restarted ALWAYS, 3 times, after 40 ms");
    }
}
