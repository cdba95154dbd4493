//! The panic handler: `panic at <file>:<line>: <message>` in one `DEBUG_WRITE` line, then exit
//! with `startup_status::PANIC` (the emulator's crash dump records that line).
//!
//! rustc keeps the panic handler in every image, so every image now links the part of `core`
//! that holds `core::fmt::write`: the linker drops its code (nothing calls it), but its unwind
//! tables leave `rust_eh_personality` and 16 bytes of data behind, which moves the stack and
//! some functions of images that never panic by a few bytes (their instructions are the same).

use crate::LineBuf;
use crate::sys::{debug_write, exit};

/// A line `core::fmt` writes to: its output is appended (truncated like `LineBuf::push`; never
/// an error).
pub struct FmtLine(pub LineBuf);

impl core::fmt::Write for FmtLine {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        self.0.push(text.as_bytes());
        Ok(())
    }
}

/// Log `panic at <file>:<line>: <message>` (without a location: `panic: <message>`) and exit
/// with `startup_status::PANIC`. The message is formatted with `core::fmt` into the line's fixed
/// buffer; what does not fit in one `DEBUG_WRITE` line is dropped.
pub fn panic_exit(
    location: Option<&core::panic::Location<'_>>,
    message: core::fmt::Arguments<'_>,
) -> ! {
    let mut line = LineBuf::new();
    line.push(b"panic");
    if let Some(loc) = location {
        line.push(b" at ");
        line.push(loc.file().as_bytes());
        line.push(b":");
        line.push_u64(u64::from(loc.line()));
    }
    line.push(b": ");
    let mut line = FmtLine(line);
    // FmtLine's writes never fail (they truncate), so neither does this.
    let _ = core::fmt::write(&mut line, message);
    let _ = debug_write(line.0.as_bytes());
    exit(abi::startup_status::PANIC)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    panic_exit(info.location(), format_args!("{}", info.message()))
}

#[cfg(test)]
mod tests {
    use super::FmtLine;
    use crate::LineBuf;
    use core::fmt::Write;

    #[test]
    fn formats_with_core_fmt() {
        let mut l = FmtLine(LineBuf::new());
        l.0.push(b"panic: ");
        write!(l, "op {:#x} of pid {}", 0x407, 9).unwrap();
        assert_eq!(l.0.as_bytes(), b"panic: op 0x407 of pid 9");
    }
}
