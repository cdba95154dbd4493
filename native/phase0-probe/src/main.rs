//! phase0-probe: SENDs `PROBE_COMPLETE` (empty payload) to procd's endpoint and exits 0; a failed
//! SEND exits `test_status::PROTOCOL`.
#![no_std]
#![no_main]

use abi::{cap_purpose, procd_op};

testkit::image!(b"phase0-probe", |test| {
    let procd = test.slot(cap_purpose::PROCD_ENDPOINT);
    test.check(
        testkit::send(procd, procd_op::PROBE_COMPLETE, &[]),
        b"SEND PROBE_COMPLETE",
    );
    test.pass(b"complete")
});
