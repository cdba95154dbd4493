//! phase0-isolation-b: reads, then writes, the address where phase0-isolation-a keeps its data
//! (`ISOLATION_A_DATA_VADDR`). In its own address space that page is unmapped, so the read
//! faults and the kernel kills it. It never exits normally: should both accesses succeed, it
//! logs that and exits `test_status::BREACH`.
#![no_std]
#![no_main]

use abi::{ISOLATION_A_DATA_VADDR, test_status};

testkit::image!(b"phase0-isolation-b", |test| {
    // The address fits in usize on x86_64.
    let target = core::ptr::with_exposed_provenance_mut::<u64>(ISOLATION_A_DATA_VADDR as usize);
    // SAFETY: none; these accesses are the test. The page is isolation-a's and unmapped here,
    // so the read raises a page fault; volatile, so the compiler keeps both accesses.
    let seen = unsafe { target.read_volatile() };
    unsafe { target.write_volatile(!seen) };
    let mut line = test.line();
    line.push(b"breach: read ").push_hex(seen);
    line.push(b" at ISOLATION_A_DATA_VADDR and wrote there");
    test.exit(&line, test_status::BREACH)
});
