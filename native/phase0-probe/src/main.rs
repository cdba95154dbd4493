//! phase0-probe: SENDs `PROBE_COMPLETE` (empty payload) to procd's endpoint and exits 0; a failed
//! SEND exits `test_status::PROTOCOL`.
#![no_std]
#![no_main]

use abi::{cap_purpose, procd_op, role};

rt::entry!(main);

/// The `.erix_image` note: this image serves role TEST.
#[used]
#[unsafe(link_section = ".erix_image")]
static IMAGE_NOTE: [u8; abi::image_note::SIZE] = abi::image_note(role::TEST);

const NAME: &[u8] = b"phase0-probe";

fn main(envelope: *const u8) -> ! {
    // SAFETY: `envelope` is the pointer the kernel passed to _start.
    let test = unsafe { testkit::start(NAME, envelope) };
    let procd = test.slot(cap_purpose::PROCD_ENDPOINT);
    test.check(
        testkit::send(procd, procd_op::PROBE_COMPLETE, &[]),
        b"SEND PROBE_COMPLETE",
    );
    test.pass(b"complete")
}
