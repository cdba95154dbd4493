//! One typed wrapper per syscall.
//!
//! Convention: `syscall` with rax = number and arguments in rdi, rsi; the kernel returns rax =
//! status and results in rdi, rsi, rdx, clobbers rcx and r11 and preserves everything else. A
//! status other than `status::OK` becomes `Err(status)`.

use abi::{DEBUG_WRITE_MAX, status, syscall as nr};
use core::arch::asm;

/// rax after a syscall, and the three result registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Raw {
    pub status: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
}

/// Issue syscall `number` with arguments `a0` (rdi) and `a1` (rsi).
///
/// # Safety
/// Pointer arguments must satisfy the syscall's contract (e.g. DEBUG_WRITE reads `a1` bytes at
/// `a0`). The kernel may read and write the IPC buffer.
#[inline(always)]
pub unsafe fn raw(number: u64, a0: u64, a1: u64) -> Raw {
    let status: u64;
    let rdi: u64;
    let rsi: u64;
    let rdx: u64;
    // SAFETY: the kernel's syscall convention; memory is not declared untouched because the
    // kernel reads and writes the IPC buffer. The kernel does not use the user stack.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") number => status,
            inlateout("rdi") a0 => rdi,
            inlateout("rsi") a1 => rsi,
            lateout("rdx") rdx,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    Raw {
        status,
        rdi,
        rsi,
        rdx,
    }
}

/// `Ok(raw)` when rax is `status::OK`, else `Err(status)` (a status that does not fit in a
/// `u32` is reported as `INTERNAL`).
fn check(raw: Raw) -> Result<Raw, u32> {
    match u32::try_from(raw.status) {
        Ok(status::OK) => Ok(raw),
        Ok(s) => Err(s),
        Err(_) => Err(status::INTERNAL),
    }
}

#[inline(always)]
fn call0(number: u64, a0: u64, a1: u64) -> Result<Raw, u32> {
    // SAFETY: no pointer arguments.
    check(unsafe { raw(number, a0, a1) })
}

/// Capability type and rights reported by CAP_INFO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapInfo {
    pub cap_type: u32,
    pub rights: u32,
}

/// SEND the message in the IPC buffer on endpoint `slot`.
pub fn send(slot: u32) -> Result<(), u32> {
    call0(nr::SEND, u64::from(slot), 0).map(|_| ())
}

/// NBSEND the message in the IPC buffer on endpoint `slot`: never blocks. `Ok` if a receiver
/// was waiting and took it; `Err(BUSY)` if none was (the message is dropped).
pub fn nbsend(slot: u32) -> Result<(), u32> {
    call0(nr::NBSEND, u64::from(slot), 0).map(|_| ())
}

/// RECV on endpoint `slot`: blocks; returns the badge of the capability the message came
/// through. The message is in the IPC buffer.
pub fn recv(slot: u32) -> Result<u64, u32> {
    call0(nr::RECV, u64::from(slot), 0).map(|r| r.rdi)
}

/// CALL endpoint `slot` with the message in the IPC buffer; the reply replaces it.
pub fn call(slot: u32) -> Result<(), u32> {
    call0(nr::CALL, u64::from(slot), 0).map(|_| ())
}

/// REPLY to the pending caller with the IPC buffer (`Err(NOT_FOUND)` when there is none).
pub fn reply() -> Result<(), u32> {
    call0(nr::REPLY, 0, 0).map(|_| ())
}

/// REPLY, then RECV on `slot`; returns the badge of the next message.
pub fn reply_recv(slot: u32) -> Result<u64, u32> {
    call0(nr::REPLY_RECV, u64::from(slot), 0).map(|r| r.rdi)
}

/// NOTIFY: OR `bits` into notification `slot`.
pub fn notify(slot: u32, bits: u64) -> Result<(), u32> {
    call0(nr::NOTIFY, u64::from(slot), bits).map(|_| ())
}

/// WAIT on notification `slot`: blocks until non-zero; returns and clears the bits.
pub fn wait(slot: u32) -> Result<u64, u32> {
    call0(nr::WAIT, u64::from(slot), 0).map(|r| r.rdi)
}

/// YIELD the rest of the quantum.
pub fn yield_now() {
    let _ = call0(nr::YIELD, 0, 0);
}

/// EXIT with `code`; never returns.
pub fn exit(code: u64) -> ! {
    // SAFETY: EXIT never returns; `ud2` traps should a broken kernel return anyway.
    unsafe {
        asm!(
            "syscall",
            "ud2",
            in("rax") nr::EXIT,
            in("rdi") code,
            options(noreturn, nostack),
        )
    }
}

/// DEBUG_WRITE one log line; text beyond `DEBUG_WRITE_MAX` bytes is dropped.
pub fn debug_write(text: &[u8]) -> Result<(), u32> {
    let text = text.get(..DEBUG_WRITE_MAX).unwrap_or(text);
    // SAFETY: the kernel reads `text.len()` bytes at `text.as_ptr()`, all valid.
    check(unsafe { raw(nr::DEBUG_WRITE, text.as_ptr() as u64, text.len() as u64) }).map(|_| ())
}

/// CAP_INFO on `slot`: its type and rights (`Err(NOT_FOUND)` for an empty slot).
pub fn cap_info(slot: u32) -> Result<CapInfo, u32> {
    call0(nr::CAP_INFO, u64::from(slot), 0).map(|r| CapInfo {
        // Both fit in 32 bits by the ABI; anything wider is not a type/rights we know.
        cap_type: u32::try_from(r.rdi).unwrap_or(u32::MAX),
        rights: u32::try_from(r.rsi).unwrap_or(0),
    })
}

/// CAP_DELETE: empty `slot`.
pub fn cap_delete(slot: u32) -> Result<(), u32> {
    call0(nr::CAP_DELETE, u64::from(slot), 0).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_status(status: u64) -> Raw {
        Raw {
            status,
            rdi: 7,
            rsi: 8,
            rdx: 9,
        }
    }

    #[test]
    fn check_maps_statuses() {
        assert_eq!(check(raw_status(0)), Ok(raw_status(0)));
        assert_eq!(check(raw_status(2)), Err(status::NOT_FOUND));
        assert_eq!(check(raw_status(1 << 40)), Err(status::INTERNAL));
    }
}
