//! phase0-exit: the smallest test image. Logs that it runs, checks its start envelope (role
//! TEST) and exits 0; a bad envelope exits with its `startup_status`.
#![no_std]
#![no_main]

use abi::{role, startup_status};

testkit::image!(main);

fn main(envelope: *const u8) -> ! {
    let _ = rt::debug_write(b"phase0-exit: running");
    // SAFETY: the kernel maps the start envelope page read-only at the pointer it passes in
    // rdi, and never changes it.
    let Some(bytes) = (unsafe { rt::envelope_bytes(envelope) }) else {
        rt::exit(startup_status::ENVELOPE_NULL)
    };
    match bootstrap::parse(bytes, role::TEST) {
        Ok(_) => rt::exit(startup_status::OK),
        Err(code) => rt::exit(code),
    }
}
