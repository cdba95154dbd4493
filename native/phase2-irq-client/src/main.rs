//! phase2-irq-client: WAITs on its IRQ notification and checks the word it gets has the IRQ
//! bit. Logs the bits and exits 0, or logs the deviation and exits `test_status::PROTOCOL`.
#![no_std]
#![no_main]

use abi::{cap_purpose, notify_bit, test_status};
use testkit::Failure;

testkit::image!(b"phase2-irq-client", |test| {
    let irq = test.slot(cap_purpose::IRQ_NOTIFY);
    let bits = test.check(rt::sys::wait(irq).map_err(Failure::Syscall), b"WAIT");
    let mut line = test.line();
    line.push(b"irq ").push_hex(bits);
    if bits & notify_bit::IRQ == 0 {
        line.push(b": no IRQ bit");
        test.exit(&line, test_status::PROTOCOL)
    }
    test.exit(&line, test_status::OK)
});
