//! phase2-irq-client: WAITs on its IRQ notification and checks the word it gets has the IRQ
//! bit. Logs the bits and exits 0, or logs the deviation and exits `test_status::PROTOCOL`.
#![no_std]
#![no_main]

use abi::{cap_purpose, notify_bit, role, test_status};
use testkit::Failure;

rt::entry!(main);

/// The `.erix_image` note: this image serves role TEST.
#[used]
#[unsafe(link_section = ".erix_image")]
static IMAGE_NOTE: [u8; abi::image_note::SIZE] = abi::image_note(role::TEST);

const NAME: &[u8] = b"phase2-irq-client";

fn main(envelope: *const u8) -> ! {
    // SAFETY: `envelope` is the pointer the kernel passed to _start.
    let test = unsafe { testkit::start(NAME, envelope) };
    let irq = test.slot(cap_purpose::IRQ_NOTIFY);
    let bits = test.check(rt::sys::wait(irq).map_err(Failure::Syscall), b"WAIT");
    let mut line = test.line();
    line.push(b"irq ").push_hex(bits);
    if bits & notify_bit::IRQ == 0 {
        line.push(b": no IRQ bit");
        test.exit(&line, test_status::PROTOCOL)
    }
    test.exit(&line, test_status::OK)
}
