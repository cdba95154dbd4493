//! svc-stub: a stand-in for an EriX service that has no native image here.
//!
//! It serves whatever role its start envelope names (the header's role, which the envelope is
//! then parsed for), except ROOTD, PROCD and GENERIC: a bad envelope, one of those roles, or no
//! SELF_ENDPOINT capability exits with the `startup_status`. Otherwise it logs
//! `<role>: up` (the role's name in lowercase), NOTIFYs READY on its BOOTSTRAP_NOTIFY
//! notification if it has one, and serves forever: RECV on its SELF_ENDPOINT, CAP_DELETE any
//! capabilities that came with the message, and REPLY INVALID_ARGUMENT with no payload. Kernel
//! events (badge `BADGE_KERNEL`) get no reply. It never exits once up.
#![no_std]
#![no_main]

use abi::{
    BADGE_KERNEL, Message, cap_purpose, envelope_header, notify_bit, role, startup_status, status,
};
use bootstrap::Envelope;
use rt::{LineBuf, sys};

// The image note says role TEST: it only says what the image is; the start envelope decides
// which role it serves.
testkit::image!(main);

/// A log line starting `<role name in lowercase>: `.
fn line_for(role: u16) -> LineBuf {
    let mut line = LineBuf::new();
    for &b in role::name(role).unwrap_or("?").as_bytes() {
        line.push(&[b.to_ascii_lowercase()]);
    }
    line.push(b": ");
    line
}

/// The validated start envelope (parsed for the role its header names), or the `startup_status`
/// to exit with.
fn startup(envelope: *const u8) -> Result<Envelope, u64> {
    // SAFETY: the kernel maps the start envelope page read-only at the pointer it passes in
    // rdi, and never changes it.
    let bytes = unsafe { rt::envelope_bytes(envelope) }.ok_or(startup_status::ENVELOPE_NULL)?;
    let role = abi::read_u16(bytes, envelope_header::ROLE).ok_or(startup_status::BAD_LENGTH)?;
    let env = bootstrap::parse(bytes, role)?;
    match env.role() {
        role::ROOTD | role::PROCD | role::GENERIC => Err(startup_status::BAD_ROLE),
        _ => Ok(env),
    }
}

fn main(envelope: *const u8) -> ! {
    let env = match startup(envelope) {
        Ok(env) => env,
        Err(code) => rt::exit(code),
    };
    let Some(endpoint) = env.slot_for(cap_purpose::SELF_ENDPOINT) else {
        rt::exit(startup_status::INTAKE_MISSING)
    };
    let _ = sys::debug_write(line_for(env.role()).push(b"up").as_bytes());
    if let Some(notify) = env.slot_for(cap_purpose::BOOTSTRAP_NOTIFY) {
        let _ = sys::notify(notify, notify_bit::READY);
    }
    serve(&env, endpoint)
}

/// Answer every request on `endpoint` INVALID_ARGUMENT, forever.
fn serve(env: &Envelope, endpoint: u32) -> ! {
    let mut msg = Message::new();
    let mut recv_failure_logged = false;
    loop {
        let badge = match sys::recv(endpoint) {
            Ok(badge) => badge,
            Err(code) => {
                // Not ours to fix and not a reason to exit: say so once, then keep trying
                // without hogging the CPU.
                if !recv_failure_logged {
                    let mut line = line_for(env.role());
                    line.push(b"RECV failed: ");
                    match status::name(code) {
                        Some(name) => line.push(name.as_bytes()),
                        None => line.push_hex(u64::from(code)),
                    };
                    let _ = sys::debug_write(line.as_bytes());
                    recv_failure_logged = true;
                }
                sys::yield_now();
                continue;
            }
        };
        rt::ipc::load(&mut msg);
        // Keep nothing that arrives; a slot the envelope handed over is never one the kernel
        // reports as transferred, but a broken report must not cost the stub its own caps.
        for &slot in msg.header().cap_slots() {
            if !env.holds_slot(slot) {
                let _ = sys::cap_delete(slot);
            }
        }
        if badge == BADGE_KERNEL {
            continue;
        }
        msg.start(status::INVALID_ARGUMENT, 0);
        rt::ipc::store(&msg);
        let _ = sys::reply();
    }
}
