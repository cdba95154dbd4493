//! The procd image: the [`procd`] service logic on the real syscalls.
//!
//! `_start` (from `rt::entry!`) runs [`main`] with the start-envelope pointer. After startup
//! procd loops forever: RECV on its endpoint, copy the message in, handle it, copy the reply
//! out, REPLY (NOT_FOUND there just means the client used SEND), RECV again. Kernel events
//! (badge `BADGE_KERNEL`) get no reply at all.
#![no_std]
#![no_main]

use abi::{Message, role, startup_status, status};
use procd::{Answer, Kernel, LogPart};
use rt::{LineBuf, sys};

rt::entry!(main);

/// The `.erix_image` note: this image serves role PROCD.
#[used]
#[unsafe(link_section = ".erix_image")]
static IMAGE_NOTE: [u8; abi::image_note::SIZE] = abi::image_note(role::PROCD);

/// [`Kernel`] on the real syscalls.
struct Syscalls;

impl Kernel for Syscalls {
    fn cap_info(&mut self, slot: u32) -> Option<(u32, u32)> {
        sys::cap_info(slot).ok().map(|c| (c.cap_type, c.rights))
    }

    fn cap_delete(&mut self, slot: u32) {
        let _ = sys::cap_delete(slot);
    }

    fn call(&mut self, slot: u32, msg: &mut Message) -> u32 {
        rt::ipc::store(msg);
        match sys::call(slot) {
            Ok(()) => {
                rt::ipc::load(msg);
                status::OK
            }
            Err(code) => code,
        }
    }

    fn nb_send(&mut self, slot: u32, msg: &Message) -> u32 {
        rt::ipc::store(msg);
        match sys::nbsend(slot) {
            Ok(()) => status::OK,
            Err(code) => code,
        }
    }

    fn notify(&mut self, slot: u32, bits: u64) -> u32 {
        match sys::notify(slot, bits) {
            Ok(()) => status::OK,
            Err(code) => code,
        }
    }

    fn debug_write(&mut self, parts: &[LogPart<'_>]) {
        let mut line = LineBuf::new();
        for part in parts {
            match *part {
                LogPart::Text(text) => line.push(text),
                LogPart::Dec(value) => line.push_u64(value),
                LogPart::Hex(value) => line.push_hex(value),
            };
        }
        let _ = sys::debug_write(line.as_bytes());
    }
}

/// Log `procd: <what> failed: <STATUS>`.
fn log_failure(what: &[u8], code: u32) {
    let mut line = LineBuf::new();
    line.push(b"procd: ").push(what).push(b" failed: ");
    match status::name(code) {
        Some(name) => line.push(name.as_bytes()),
        None => line.push_hex(u64::from(code)),
    };
    let _ = sys::debug_write(line.as_bytes());
}

fn main(envelope: *const u8) -> ! {
    let mut kernel = Syscalls;
    // SAFETY: the kernel maps the start envelope page read-only at the pointer it passes in
    // rdi, and never changes it.
    let bytes = unsafe { rt::envelope_bytes(envelope) };
    let mut procd = match procd::start(&mut kernel, bytes) {
        Ok(procd) => procd,
        Err(code) => rt::exit(code),
    };
    let mut msg = Message::new();
    loop {
        let badge = match sys::recv(procd.self_endpoint()) {
            Ok(badge) => badge,
            Err(code) => {
                // Intake guaranteed a RECV capability; the kernel broke the contract and there
                // is nothing to serve with. The ABI has no runtime-failure exit code.
                log_failure(b"RECV", code);
                rt::exit(startup_status::PANIC);
            }
        };
        rt::ipc::load(&mut msg);
        if procd.handle(&mut kernel, badge, &mut msg) == Answer::Silent {
            continue;
        }
        rt::ipc::store(&msg);
        match sys::reply() {
            Ok(()) | Err(status::NOT_FOUND) => {}
            Err(code) => log_failure(b"REPLY", code),
        }
    }
}
