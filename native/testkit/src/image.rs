//! The parts that make syscalls: startup, slots, log lines and exits, CALL and SEND.

use crate::{Failure, request};
use abi::{Message, cap_purpose, role, startup_status, status, test_status};
use bootstrap::Envelope;
use rt::LineBuf;
use rt::sys;

/// A running test image: its name (the prefix of its log lines) and its validated envelope.
pub struct Test {
    name: &'static [u8],
    envelope: Envelope,
}

/// A log line starting `<name>: `.
fn line_for(name: &[u8]) -> LineBuf {
    let mut line = LineBuf::new();
    line.push(name).push(b": ");
    line
}

/// Append a status by its ABI name, or in hex when it has none.
fn push_status(line: &mut LineBuf, code: u32) {
    match status::name(code) {
        Some(name) => line.push(name.as_bytes()),
        None => line.push_hex(u64::from(code)),
    };
}

/// Append a description of `failure`.
fn push_failure(line: &mut LineBuf, failure: Failure) {
    match failure {
        Failure::TooLong(len) => {
            line.push(b"request payload too long (")
                .push_u64(len as u64);
            line.push(b" bytes)");
        }
        Failure::Syscall(code) => {
            line.push(b"syscall failed with ");
            push_status(line, code);
        }
        Failure::Status { got, want } => {
            line.push(b"reply status ");
            push_status(line, got);
            line.push(b", expected ");
            push_status(line, want);
        }
        Failure::ShortReply(len) => {
            line.push(b"reply payload too short (").push_u64(len as u64);
            line.push(b" bytes)");
        }
    }
}

/// Log `<name>: running`, then parse the start envelope at `envelope` for role TEST. A null
/// pointer or a bad envelope is logged and the image exits with its `startup_status`.
///
/// # Safety
/// `envelope` must be the pointer the kernel passed to `_start` (null, or the read-only start
/// envelope page, which never changes): see `rt::envelope_bytes`.
pub unsafe fn start(name: &'static [u8], envelope: *const u8) -> Test {
    let _ = rt::debug_write(line_for(name).push(b"running").as_bytes());
    // SAFETY: the caller's contract is rt::envelope_bytes's.
    let Some(bytes) = (unsafe { rt::envelope_bytes(envelope) }) else {
        let _ = rt::debug_write(line_for(name).push(b"no start envelope").as_bytes());
        rt::exit(startup_status::ENVELOPE_NULL)
    };
    match bootstrap::parse(bytes, role::TEST) {
        Ok(envelope) => Test { name, envelope },
        Err(code) => {
            let mut line = line_for(name);
            line.push(b"bad start envelope: ");
            line.push(startup_status::name(code).unwrap_or("?").as_bytes());
            let _ = rt::debug_write(line.as_bytes());
            rt::exit(code)
        }
    }
}

impl Test {
    /// The validated start envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The slot the envelope names for `purpose`; if it names none, log which purpose is
    /// missing and exit `INTAKE_MISSING`.
    pub fn slot(&self, purpose: u16) -> u32 {
        match self.envelope.slot_for(purpose) {
            Some(slot) => slot,
            None => {
                let mut line = self.line();
                line.push(b"no ");
                line.push(cap_purpose::name(purpose).unwrap_or("?").as_bytes());
                line.push(b" capability in the start envelope");
                self.exit(&line, startup_status::INTAKE_MISSING)
            }
        }
    }

    /// A log line starting `<name>: `, for the caller to complete.
    pub fn line(&self) -> LineBuf {
        line_for(self.name)
    }

    /// Log `<name>: <text>`.
    pub fn log(&self, text: &[u8]) {
        let _ = rt::debug_write(self.line().push(text).as_bytes());
    }

    /// Log `line` and exit with `code`.
    pub fn exit(&self, line: &LineBuf, code: u64) -> ! {
        let _ = rt::debug_write(line.as_bytes());
        rt::exit(code)
    }

    /// Log `<name>: <text>` and exit `OK`.
    pub fn pass(&self, text: &[u8]) -> ! {
        self.log(text);
        rt::exit(test_status::OK)
    }

    /// Log `<name>: <text>` and exit with `code`.
    pub fn fail(&self, text: &[u8], code: u64) -> ! {
        self.log(text);
        rt::exit(code)
    }

    /// The value of a peer exchange; on a failure log `<name>: <what>: <failure>` and exit
    /// `PROTOCOL`.
    pub fn check<T>(&self, result: Result<T, Failure>, what: &[u8]) -> T {
        match result {
            Ok(value) => value,
            Err(failure) => {
                let mut line = self.line();
                line.push(what).push(b": ");
                push_failure(&mut line, failure);
                self.exit(&line, test_status::PROTOCOL)
            }
        }
    }
}

/// CALL endpoint `slot` with request `op` and `payload`; the reply (whatever its status), or
/// `Err(Syscall)` if the CALL itself failed.
pub fn call(slot: u32, op: u32, payload: &[u8]) -> Result<Message, Failure> {
    let mut msg = request(op, payload)?;
    rt::ipc::store(&msg);
    sys::call(slot).map_err(Failure::Syscall)?;
    rt::ipc::load(&mut msg);
    Ok(msg)
}

/// SEND request `op` with `payload` on endpoint `slot` (no reply); `Err(Syscall)` if the SEND
/// failed.
pub fn send(slot: u32, op: u32, payload: &[u8]) -> Result<(), Failure> {
    rt::ipc::store(&request(op, payload)?);
    sys::send(slot).map_err(Failure::Syscall)
}
