//! phase1-time-client: asks timed for the monotonic time (NOW_MONOTONIC), does some work, asks
//! again, and checks the clock did not go back. Logs both readings and exits 0, or logs the
//! deviation and exits `test_status::PROTOCOL`.
#![no_std]
#![no_main]

use abi::{cap_purpose, clock_reply, test_status, timed_op};
use testkit::Test;

const WORK: u64 = 2_000_000;

/// timed's monotonic clock, in ticks.
fn now(test: &Test, timed: u32) -> u64 {
    let reply = test.check(
        testkit::call(timed, timed_op::NOW_MONOTONIC, &[]),
        b"NOW_MONOTONIC",
    );
    test.check(
        testkit::reply_u64(&reply, clock_reply::TICKS),
        b"NOW_MONOTONIC",
    )
}

testkit::image!(b"phase1-time-client", |test| {
    let timed = test.slot(cap_purpose::TIMED_ENDPOINT);
    let first = now(&test, timed);
    let mut sum = 0u64;
    for i in 0..WORK {
        sum = core::hint::black_box(sum.wrapping_add(i));
    }
    let second = now(&test, timed);
    let mut line = test.line();
    line.push(b"ticks ")
        .push_u64(first)
        .push(b" -> ")
        .push_u64(second);
    if second < first {
        line.push(b": the clock went back");
        test.exit(&line, test_status::PROTOCOL)
    }
    test.exit(&line, test_status::OK)
});
