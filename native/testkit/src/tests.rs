//! Host tests of the pure parts.

use super::*;
use abi::{MessageHeader, clock_reply, named_reply, write_u64};

/// A reply with status `op` and `payload`.
fn reply(op: u32, payload: &[u8]) -> Message {
    request(op, payload).expect("payload fits")
}

#[test]
fn request_carries_op_and_payload_only() {
    let msg = request(0x530, &[1, 2, 3]).unwrap();
    assert_eq!(msg.header(), MessageHeader::new(0x530, 3));
    assert_eq!(msg.payload(), &[1, 2, 3]);
    assert_eq!(msg.wire_len(), abi::message_header::SIZE + 3);

    let empty = request(0x40a, &[]).unwrap();
    assert_eq!(empty.header(), MessageHeader::new(0x40a, 0));
    assert!(empty.payload().is_empty());
}

#[test]
fn request_refuses_a_payload_beyond_the_buffer() {
    let big = vec![7u8; MSG_MAX_PAYLOAD + 1];
    assert_eq!(
        request(1, &big).err(),
        Some(Failure::TooLong(MSG_MAX_PAYLOAD + 1))
    );
    let full = request(1, &big[..MSG_MAX_PAYLOAD]).unwrap();
    assert_eq!(full.payload().len(), MSG_MAX_PAYLOAD);
}

#[test]
fn expect_status_compares_the_reply_op() {
    assert_eq!(expect_status(&reply(status::OK, &[]), status::OK), Ok(()));
    assert_eq!(
        expect_status(&reply(status::NOT_FOUND, &[]), status::NOT_FOUND),
        Ok(())
    );
    assert_eq!(
        expect_status(&reply(status::OK, &[]), status::NOT_FOUND),
        Err(Failure::Status {
            got: status::OK,
            want: status::NOT_FOUND
        })
    );
    // An op that is no known status is still just compared.
    assert_eq!(
        expect_status(&reply(0xdead, &[]), status::OK),
        Err(Failure::Status {
            got: 0xdead,
            want: status::OK
        })
    );
}

#[test]
fn reply_u64_reads_an_ok_reply_field() {
    let mut payload = [0u8; clock_reply::SIZE];
    write_u64(&mut payload, clock_reply::TICKS, 0x0102_0304_0506_0708);
    assert_eq!(
        reply_u64(&reply(status::OK, &payload), clock_reply::TICKS),
        Ok(0x0102_0304_0506_0708)
    );
    // Extra payload is fine.
    let mut longer = [0xffu8; 12];
    write_u64(&mut longer, named_reply::VALUE, 42);
    assert_eq!(
        reply_u64(&reply(status::OK, &longer), named_reply::VALUE),
        Ok(42)
    );
}

#[test]
fn reply_u64_refuses_errors_and_short_payloads() {
    assert_eq!(
        reply_u64(&reply(status::BUSY, &[0; 8]), 0),
        Err(Failure::Status {
            got: status::BUSY,
            want: status::OK
        })
    );
    assert_eq!(
        reply_u64(&reply(status::OK, &[0; 7]), 0),
        Err(Failure::ShortReply(7))
    );
    assert_eq!(
        reply_u64(&reply(status::OK, &[]), 0),
        Err(Failure::ShortReply(0))
    );
    assert_eq!(
        reply_u64(&reply(status::OK, &[0; 8]), usize::MAX),
        Err(Failure::ShortReply(8))
    );
}

#[test]
fn reply_u64_ignores_bytes_past_the_declared_payload() {
    // Stale bytes in the buffer beyond payload_len must not be read as the field.
    let mut msg = reply(status::OK, &[0; 8]);
    msg.payload_area_mut().fill(0xaa);
    let mut header = msg.header();
    header.payload_len = 4;
    msg.set_header(&header);
    assert_eq!(reply_u64(&msg, 0), Err(Failure::ShortReply(4)));
}

#[test]
fn pad_name_pads_with_nul() {
    let padded = pad_name(b"phase1-lookup-client").unwrap();
    assert_eq!(&padded[..20], b"phase1-lookup-client");
    assert!(padded[20..].iter().all(|&b| b == 0));
    let exact = [b'x'; NAME_MAX];
    assert_eq!(pad_name(&exact), Some(exact));
}

#[test]
fn pad_name_refuses_empty_long_and_nul_names() {
    assert_eq!(pad_name(b""), None);
    assert_eq!(pad_name(&[b'x'; NAME_MAX + 1]), None);
    assert_eq!(pad_name(b"a\0b"), None);
}

#[test]
fn named_request_layout() {
    let req = named_request(b"no-such-name", 0x1234_5678).unwrap();
    assert_eq!(req.len(), named_request::SIZE);
    assert_eq!(
        &req[named_request::NAME..named_request::NAME + 12],
        b"no-such-name"
    );
    assert!(
        req[named_request::NAME + 12..named_request::NAME + NAME_MAX]
            .iter()
            .all(|&b| b == 0)
    );
    assert_eq!(read_u64(&req, named_request::VALUE), Some(0x1234_5678));
    assert_eq!(named_request(b"", 1), None);
}
