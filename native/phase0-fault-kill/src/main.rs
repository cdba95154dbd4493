//! phase0-fault-kill: logs that it runs, then writes to an address nothing maps, so the kernel
//! kills it with a page fault. It never exits normally: should the write somehow succeed, it
//! logs that and exits `test_status::BREACH` (memory protection did not hold).
#![no_std]
#![no_main]

use abi::test_status;

/// An address in the first page, which the kernel never maps in any address space.
const UNMAPPED: usize = 0x10;

testkit::image!(b"phase0-fault-kill", |test| {
    let target = core::ptr::with_exposed_provenance_mut::<u64>(UNMAPPED);
    // SAFETY: none; this write is the test. The page is unmapped, so the CPU raises a page
    // fault and the kernel kills the process; volatile, so the compiler keeps the store.
    unsafe { target.write_volatile(0xdead_beef) };
    test.fail(
        b"survived a write to an unmapped address",
        test_status::BREACH,
    )
});
