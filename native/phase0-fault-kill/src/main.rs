//! phase0-fault-kill: logs that it runs, then writes to an address nothing maps, so the kernel
//! kills it with a page fault. It never exits normally: should the write somehow succeed, it
//! logs that and exits `test_status::BREACH` (memory protection did not hold).
#![no_std]
#![no_main]

use abi::{role, test_status};

rt::entry!(main);

/// The `.erix_image` note: this image serves role TEST.
#[used]
#[unsafe(link_section = ".erix_image")]
static IMAGE_NOTE: [u8; abi::image_note::SIZE] = abi::image_note(role::TEST);

const NAME: &[u8] = b"phase0-fault-kill";

/// An address in the first page, which the kernel never maps in any address space.
const UNMAPPED: usize = 0x10;

fn main(envelope: *const u8) -> ! {
    // SAFETY: `envelope` is the pointer the kernel passed to _start.
    let test = unsafe { testkit::start(NAME, envelope) };
    let target = core::ptr::with_exposed_provenance_mut::<u64>(UNMAPPED);
    // SAFETY: none; this write is the test. The page is unmapped, so the CPU raises a page
    // fault and the kernel kills the process; volatile, so the compiler keeps the store.
    unsafe { target.write_volatile(0xdead_beef) };
    test.fail(
        b"survived a write to an unmapped address",
        test_status::BREACH,
    )
}
