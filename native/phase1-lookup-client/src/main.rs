//! phase1-lookup-client: REGISTERs its own name with a value at the name service, LOOKUPs it and
//! checks the value, then LOOKUPs a name nobody registered and checks for NOT_FOUND. Exits 0,
//! or logs the deviation and exits `test_status::PROTOCOL`.
#![no_std]
#![no_main]

use abi::{cap_purpose, named_op, named_reply, status, test_status};

const NAME: &[u8] = b"phase1-lookup-client";
const VALUE: u64 = 0x1234_5678;
const MISSING: &[u8] = b"no-such-name";

testkit::image!(NAME, |test| {
    let named = test.slot(cap_purpose::NAMED_ENDPOINT);
    let (Some(register), Some(lookup), Some(missing)) = (
        testkit::named_request(NAME, VALUE),
        testkit::named_request(NAME, 0),
        testkit::named_request(MISSING, 0),
    ) else {
        test.fail(b"a name does not fit NAME_MAX", test_status::PROTOCOL)
    };

    let reply = test.check(
        testkit::call(named, named_op::REGISTER, &register),
        b"REGISTER",
    );
    test.check(testkit::expect_status(&reply, status::OK), b"REGISTER");

    let reply = test.check(testkit::call(named, named_op::LOOKUP, &lookup), b"LOOKUP");
    let value = test.check(testkit::reply_u64(&reply, named_reply::VALUE), b"LOOKUP");
    if value != VALUE {
        let mut line = test.line();
        line.push(b"LOOKUP: value ").push_hex(value);
        line.push(b", registered ").push_hex(VALUE);
        test.exit(&line, test_status::PROTOCOL)
    }

    let reply = test.check(
        testkit::call(named, named_op::LOOKUP, &missing),
        b"LOOKUP no-such-name",
    );
    test.check(
        testkit::expect_status(&reply, status::NOT_FOUND),
        b"LOOKUP no-such-name",
    );
    test.pass(b"lookup ok")
});
