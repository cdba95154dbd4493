//! phase1-spawner: an authorised client (procd spawned it with `envelope_flag::SPAWNER`). CALLs
//! procd's SPAWN for a TEST service running phase0-exit and expects OK, then asks again with
//! `envelope_flag::REQUIRED` and expects DENIED (a client cannot spawn privileged services).
//! Exits 0, or logs the deviation and exits `test_status::PROTOCOL`.
#![no_std]
#![no_main]

use abi::{
    cap_purpose, envelope_flag, procd_op, role, spawn_service_request, status, write_u16, write_u32,
};

/// The boot image id of phase0-exit (procd_model/images.py BOOT_IMAGES): the child to spawn.
const PHASE0_EXIT_IMAGE_ID: u32 = 2;

/// A spawn_service_request for phase0-exit as role TEST with `flags`; restart NEVER (0), no
/// dependencies, everything else 0.
fn request(flags: u16) -> [u8; spawn_service_request::SIZE] {
    let mut payload = [0u8; spawn_service_request::SIZE];
    // Cannot fail: every field lies inside spawn_service_request::SIZE bytes.
    let _ = write_u32(
        &mut payload,
        spawn_service_request::IMAGE_ID,
        PHASE0_EXIT_IMAGE_ID,
    ) && write_u16(&mut payload, spawn_service_request::ROLE, role::TEST)
        && write_u16(&mut payload, spawn_service_request::FLAGS, flags);
    payload
}

testkit::image!(b"phase1-spawner", |test| {
    let procd = test.slot(cap_purpose::PROCD_ENDPOINT);

    let reply = test.check(testkit::call(procd, procd_op::SPAWN, &request(0)), b"SPAWN");
    test.check(testkit::expect_status(&reply, status::OK), b"SPAWN");

    let reply = test.check(
        testkit::call(procd, procd_op::SPAWN, &request(envelope_flag::REQUIRED)),
        b"SPAWN REQUIRED",
    );
    test.check(
        testkit::expect_status(&reply, status::DENIED),
        b"SPAWN REQUIRED",
    );
    test.pass(b"spawn ok")
});
