//! Planted bugs (cargo feature `planted-panic`, off by default): a procd that fails in a known
//! way on a rare request, so the emulator's crash dumps of procd itself can be tested. The
//! default build compiles none of this.

/// The id whose STATUS request panics. No table entry has it in any test (index 0xF00D).
pub const PLANTED_PANIC_ID: u32 = 0x0BAD_F00D;

/// STATUS of `id`: panics for [`PLANTED_PANIC_ID`] (the planted bug), else nothing.
#[inline(never)]
pub(crate) fn status_of(id: u32) {
    if id == PLANTED_PANIC_ID {
        panic!("planted bug: STATUS of id {id:#x}");
    }
}
