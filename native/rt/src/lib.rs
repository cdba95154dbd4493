//! Runtime of the freestanding EriX images.
//!
//! - [`entry!`] defines `_start` (the kernel jumps there with `rdi` = envelope pointer and no
//!   stack) and hands the envelope pointer to the image's Rust entry function.
//! - [`sys`]: one typed wrapper per syscall.
//! - [`ipc`]: copying messages between the kernel's IPC buffer and a local [`abi::Message`].
//! - [`LineBuf`]: a fixed buffer for composing one `DEBUG_WRITE` line without `core::fmt`.
//! - the single `#[panic_handler]`: logs `panic at <file>:<line>: <message>` and exits with
//!   `startup_status::PANIC` (the emulator's crash dump records that line).
#![cfg_attr(not(test), no_std)]

// Linking the runtime links the memory primitives every image needs. Host unit tests leave
// them out so they never interpose on the C library's.
#[cfg(not(test))]
use mem as _;

pub mod ipc;
mod line;
mod panic;
pub mod sys;

pub use line::LineBuf;
pub use panic::panic_exit;
pub use sys::{debug_write, exit};

/// Define the image's entry point: `rt::entry!(main)` with `fn main(envelope: *const u8) -> !`.
///
/// Expands to `_start`, which loads `rsp` from the image's own stack reserve (`__stack_top`,
/// provided by the linker script; the kernel provides no stack), clears `rbp` so frame walks
/// stop there, keeps `rdi` (the start-envelope pointer) and calls `main` through a SysV
/// trampoline.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[doc(hidden)]
        extern "sysv64" fn __rt_entry(envelope: *const u8) -> ! {
            let main: fn(*const u8) -> ! = $main;
            main(envelope)
        }

        ::core::arch::global_asm!(
            ".pushsection .text._start,\"ax\",@progbits",
            ".globl _start",
            ".type _start,@function",
            "_start:",
            ".cfi_startproc",
            ".cfi_undefined rip",
            "lea rsp, [rip + __stack_top]",
            "xor ebp, ebp",
            "call {entry}",
            "ud2",
            ".cfi_endproc",
            ".size _start, . - _start",
            ".popsection",
            // An empty writable no-bits section for the linker script's stack reserve, so the
            // output `.stack` section is marked writable (sections made only of `. += N` are
            // not).
            ".pushsection .stack,\"aw\",@nobits",
            ".popsection",
            entry = sym __rt_entry,
        );
    };
}

/// The start envelope the kernel mapped at `ptr`, or `None` for a null pointer.
///
/// Reads the header's `total_len` first and then covers `total_len` bytes, clamped to
/// `[envelope_header::SIZE, ENVELOPE_MAX]`, so a lying header is caught by the parser instead of
/// reading past the envelope page.
///
/// # Safety
/// A non-null `ptr` must point at a readable start envelope page (the kernel maps a whole 4 KiB
/// read-only page at `ENVELOPE_VADDR`, so `ENVELOPE_MAX` bytes are always readable) that stays
/// unchanged for `'a`.
pub unsafe fn envelope_bytes<'a>(ptr: *const u8) -> Option<&'a [u8]> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: the header lies within the readable envelope page (caller's contract).
    let header = unsafe { core::slice::from_raw_parts(ptr, abi::envelope_header::SIZE) };
    let total = abi::read_u32(header, abi::envelope_header::TOTAL_LEN).unwrap_or(0);
    let len = usize::try_from(total)
        .unwrap_or(usize::MAX)
        .clamp(abi::envelope_header::SIZE, abi::ENVELOPE_MAX);
    // SAFETY: `len` <= ENVELOPE_MAX bytes, all within the envelope page (caller's contract).
    Some(unsafe { core::slice::from_raw_parts(ptr, len) })
}

/// The prebuilt `core` is compiled for unwinding and its exception tables name this symbol.
/// The images abort on panic, so it is never called.
#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_bytes_null_is_none() {
        assert!(unsafe { envelope_bytes(core::ptr::null()) }.is_none());
    }

    #[test]
    fn envelope_bytes_clamps_total_len() {
        let mut page = [0u8; 4096];
        let cases = [
            (0u32, abi::envelope_header::SIZE),
            (40, 40),
            (abi::ENVELOPE_MAX as u32, abi::ENVELOPE_MAX),
            (u32::MAX, abi::ENVELOPE_MAX),
        ];
        for (total, want) in cases {
            abi::write_u32(&mut page, abi::envelope_header::TOTAL_LEN, total);
            let got = unsafe { envelope_bytes(page.as_ptr()) }.map(<[u8]>::len);
            assert_eq!(got, Some(want), "total_len {total}");
        }
    }
}
