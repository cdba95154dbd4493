//! Host tests: one per rule, the rule order, and round trips through the builder.

use super::*;
use abi::{envelope_header as hdr, write_u16, write_u32};

const PROCD_SLOTS: [(u32, u16); 3] = [
    (1, cap_purpose::SELF_ENDPOINT),
    (2, cap_purpose::KERNEL_CONTROL),
    (3, cap_purpose::BOOTSTRAP_NOTIFY),
];

/// A valid procd envelope in a buffer with room to spare.
fn valid() -> Vec<u8> {
    raw(role::PROCD, envelope_flag::REQUIRED, &PROCD_SLOTS)
}

/// Envelope bytes written field by field (independently of the builder).
fn raw(role: u16, flags: u16, slots: &[(u32, u16)]) -> Vec<u8> {
    let total = hdr::SIZE + envelope_slot::SIZE * slots.len();
    let mut b = vec![0u8; total];
    write_u32(&mut b, hdr::MAGIC, ENVELOPE_MAGIC);
    write_u16(&mut b, hdr::MAJOR, ENVELOPE_MAJOR);
    write_u16(&mut b, hdr::MINOR, ENVELOPE_MINOR);
    write_u32(&mut b, hdr::TOTAL_LEN, total as u32);
    write_u16(&mut b, hdr::ROLE, role);
    write_u16(&mut b, hdr::FLAGS, flags);
    write_u16(&mut b, hdr::SLOT_COUNT, slots.len() as u16);
    for (i, (slot, purpose)) in slots.iter().enumerate() {
        let at = hdr::SIZE + envelope_slot::SIZE * i;
        write_u32(&mut b, at + envelope_slot::SLOT, *slot);
        write_u16(&mut b, at + envelope_slot::PURPOSE, *purpose);
    }
    b
}

fn parse_procd(b: &[u8]) -> Result<Envelope, u64> {
    parse(b, role::PROCD)
}

#[test]
fn accepts_a_valid_envelope() {
    let env = parse_procd(&valid()).expect("valid");
    assert_eq!(env.role(), role::PROCD);
    assert_eq!(env.flags(), envelope_flag::REQUIRED);
    assert_eq!(env.slots().len(), 3);
    assert_eq!(env.slot_for(cap_purpose::KERNEL_CONTROL), Some(2));
    assert_eq!(env.slot_for(cap_purpose::BOOTSTRAP_NOTIFY), Some(3));
    assert_eq!(env.slot_for(cap_purpose::CRASHD_ENDPOINT), None);
    assert!(env.holds_slot(1));
    assert!(!env.holds_slot(4));
}

#[test]
fn accepts_zero_slots_and_trailing_bytes() {
    let mut b = raw(role::TEST, 0, &[]);
    assert_eq!(parse(&b, role::TEST).map(|e| e.slots().len()), Ok(0));
    b.extend_from_slice(&[0xFF; 100]);
    assert!(parse(&b, role::TEST).is_ok());
}

#[test]
fn short_input_is_bad_length() {
    let b = valid();
    assert_eq!(parse_procd(&[]), Err(startup_status::BAD_LENGTH));
    assert_eq!(
        parse_procd(&b[..hdr::SIZE - 1]),
        Err(startup_status::BAD_LENGTH)
    );
    // The header alone is readable, but total_len says more.
    assert_eq!(
        parse_procd(&b[..hdr::SIZE]),
        Err(startup_status::BAD_LENGTH)
    );
    assert_eq!(
        parse_procd(&b[..b.len() - 1]),
        Err(startup_status::BAD_LENGTH)
    );
}

#[test]
fn bad_magic() {
    let mut b = valid();
    write_u32(&mut b, hdr::MAGIC, ENVELOPE_MAGIC ^ 1);
    assert_eq!(parse_procd(&b), Err(startup_status::BAD_MAGIC));
}

#[test]
fn bad_version() {
    for (major, minor) in [(0, 0), (2, 0), (1, 2), (ENVELOPE_MAJOR, 0xFFFF)] {
        let mut b = valid();
        write_u16(&mut b, hdr::MAJOR, major);
        write_u16(&mut b, hdr::MINOR, minor);
        assert_eq!(parse_procd(&b), Err(startup_status::BAD_VERSION));
    }
}

#[test]
fn total_len_must_match_slot_count() {
    let mut b = valid();
    write_u32(
        &mut b,
        hdr::TOTAL_LEN,
        (hdr::SIZE + 2 * envelope_slot::SIZE) as u32,
    );
    assert_eq!(parse_procd(&b), Err(startup_status::BAD_LENGTH));
    let mut b = valid();
    write_u16(&mut b, hdr::SLOT_COUNT, 4);
    assert_eq!(parse_procd(&b), Err(startup_status::BAD_LENGTH));
    let mut b = valid();
    write_u32(&mut b, hdr::TOTAL_LEN, u32::MAX);
    assert_eq!(parse_procd(&b), Err(startup_status::BAD_LENGTH));
}

#[test]
fn too_many_slots_is_bad_length() {
    let slots: Vec<(u32, u16)> = (1..=ENVELOPE_MAX_SLOTS as u32 + 1)
        .map(|s| (s, cap_purpose::SELF_ENDPOINT))
        .collect();
    let mut b = raw(role::PROCD, 0, &slots);
    b.resize(ENVELOPE_MAX + 64, 0);
    assert_eq!(parse_procd(&b), Err(startup_status::BAD_LENGTH));
}

#[test]
fn oversized_total_len_is_bad_length() {
    // Consistent with slot_count but larger than ENVELOPE_MAX.
    let count = (ENVELOPE_MAX - hdr::SIZE) / envelope_slot::SIZE + 1;
    let mut b = valid();
    write_u16(&mut b, hdr::SLOT_COUNT, count as u16);
    write_u32(
        &mut b,
        hdr::TOTAL_LEN,
        (hdr::SIZE + envelope_slot::SIZE * count) as u32,
    );
    b.resize(4096, 0);
    assert_eq!(parse_procd(&b), Err(startup_status::BAD_LENGTH));
}

#[test]
fn bad_role() {
    // Known but not the expected role.
    assert_eq!(parse(&valid(), role::TEST), Err(startup_status::BAD_ROLE));
    // Unknown role, even when it is the "expected" one.
    let b = raw(0x77, 0, &[]);
    assert_eq!(parse(&b, 0x77), Err(startup_status::BAD_ROLE));
    let b = raw(0, 0, &[]);
    assert_eq!(parse(&b, 0), Err(startup_status::BAD_ROLE));
}

#[test]
fn bad_flags() {
    let b = raw(role::PROCD, envelope_flag::ALL, &PROCD_SLOTS);
    assert!(parse_procd(&b).is_ok());
    let b = raw(
        role::PROCD,
        envelope_flag::ALL << 1 & !envelope_flag::ALL,
        &PROCD_SLOTS,
    );
    assert_eq!(parse_procd(&b), Err(startup_status::BAD_FLAGS));
    let b = raw(role::PROCD, 0x8000 | envelope_flag::REQUIRED, &PROCD_SLOTS);
    assert_eq!(parse_procd(&b), Err(startup_status::BAD_FLAGS));
}

#[test]
fn bad_reserved() {
    let mut b = valid();
    write_u16(&mut b, hdr::RESERVED0, 1);
    assert_eq!(parse_procd(&b), Err(startup_status::BAD_RESERVED));
    let mut b = valid();
    write_u32(&mut b, hdr::STARTED_ROLES, 0x8000_0000);
    assert_eq!(
        parse_procd(&b),
        Err(startup_status::BAD_RESERVED),
        "a bit that names no role is reserved"
    );
    let mut b = valid();
    write_u32(&mut b, hdr::STARTED_ROLES, 1);
    assert_eq!(parse_procd(&b), Err(startup_status::BAD_RESERVED), "bit 0");
}

#[test]
fn minor_1_lists_the_roles_started_before_the_service() {
    let started = 1 << role::MEMD | 1 << role::PAGERD;
    let mut b = valid();
    assert_eq!(ENVELOPE_MINOR, 1);
    write_u32(&mut b, hdr::STARTED_ROLES, started);
    assert_eq!(parse_procd(&b).map(|e| e.started_roles()), Ok(started));
    // Every known role below 32 may be listed.
    let all = (1..32u16)
        .filter(|&r| role::name(r).is_some())
        .fold(0u32, |m, r| m | 1 << r);
    write_u32(&mut b, hdr::STARTED_ROLES, all);
    assert_eq!(parse_procd(&b).map(|e| e.started_roles()), Ok(all));
    // A minor-0 envelope has no such field: it must be 0 there, and is read as none.
    write_u16(&mut b, hdr::MINOR, 0);
    assert_eq!(parse_procd(&b), Err(startup_status::BAD_RESERVED));
    write_u32(&mut b, hdr::STARTED_ROLES, 0);
    assert_eq!(parse_procd(&b).map(|e| e.started_roles()), Ok(0));
    // The builder writes it, and only known roles.
    let mut builder = EnvelopeBuilder::new(role::PROCD, 0).expect("valid");
    builder.started_roles(started).expect("known roles");
    assert_eq!(
        builder.started_roles(1 << 31).map(|_| ()),
        Err(startup_status::BAD_RESERVED)
    );
    let mut buf = [0u8; ENVELOPE_MAX];
    let len = builder.write(&mut buf).expect("fits");
    let parsed = parse_procd(&buf[..len]).expect("parses");
    assert_eq!(parsed.started_roles(), started);
    assert_eq!(read_u16(&buf, hdr::MINOR), Some(1));
}

#[test]
fn bad_slot_table() {
    let cases: [&[(u32, u16)]; 7] = [
        &[(0, cap_purpose::SELF_ENDPOINT)],
        &[(CAP_TABLE_SLOTS, cap_purpose::SELF_ENDPOINT)],
        &[(u32::MAX, cap_purpose::SELF_ENDPOINT)],
        &[(1, 0)],
        &[(1, 0x99)],
        &[
            (1, cap_purpose::SELF_ENDPOINT),
            (1, cap_purpose::KERNEL_CONTROL),
        ],
        &[
            (1, cap_purpose::SELF_ENDPOINT),
            (2, cap_purpose::SELF_ENDPOINT),
        ],
    ];
    for slots in cases {
        let b = raw(role::PROCD, 0, slots);
        assert_eq!(
            parse_procd(&b),
            Err(startup_status::BAD_SLOT_TABLE),
            "{slots:?}"
        );
    }
    // The last valid slot is fine.
    let b = raw(
        role::PROCD,
        0,
        &[(CAP_TABLE_SLOTS - 1, cap_purpose::LOGD_ENDPOINT)],
    );
    assert!(parse_procd(&b).is_ok());
    // A non-zero reserved field in a slot record.
    let mut b = valid();
    write_u16(
        &mut b,
        hdr::SIZE + envelope_slot::SIZE + envelope_slot::RESERVED,
        1,
    );
    assert_eq!(parse_procd(&b), Err(startup_status::BAD_SLOT_TABLE));
}

#[test]
fn rules_apply_in_order() {
    // Every field broken at once: each fix reveals the next rule.
    let mut b = valid();
    write_u32(&mut b, hdr::MAGIC, 0);
    write_u16(&mut b, hdr::MAJOR, 9);
    write_u32(&mut b, hdr::TOTAL_LEN, 7);
    write_u16(&mut b, hdr::ROLE, role::TEST);
    write_u16(&mut b, hdr::FLAGS, 0xF0);
    write_u16(&mut b, hdr::RESERVED0, 1);
    write_u32(&mut b, hdr::SIZE, 0);
    type Fix = fn(&mut Vec<u8>);
    let steps: [(u64, Fix); 7] = [
        (startup_status::BAD_MAGIC, |b| {
            write_u32(b, hdr::MAGIC, ENVELOPE_MAGIC);
        }),
        (startup_status::BAD_VERSION, |b| {
            write_u16(b, hdr::MAJOR, ENVELOPE_MAJOR);
        }),
        (startup_status::BAD_LENGTH, |b| {
            let len = b.len() as u32;
            write_u32(b, hdr::TOTAL_LEN, len);
        }),
        (startup_status::BAD_ROLE, |b| {
            write_u16(b, hdr::ROLE, role::PROCD);
        }),
        (startup_status::BAD_FLAGS, |b| {
            write_u16(b, hdr::FLAGS, 0);
        }),
        (startup_status::BAD_RESERVED, |b| {
            write_u16(b, hdr::RESERVED0, 0);
        }),
        (startup_status::BAD_SLOT_TABLE, |b| {
            write_u32(b, hdr::SIZE, 1);
        }),
    ];
    for (want, fix) in steps {
        assert_eq!(parse_procd(&b), Err(want));
        fix(&mut b);
    }
    assert!(parse_procd(&b).is_ok());
}

#[test]
fn builder_round_trip() {
    let mut builder =
        EnvelopeBuilder::new(role::TIMED, envelope_flag::BOOTSTRAP_CRITICAL).expect("role");
    builder
        .push(1, cap_purpose::SELF_ENDPOINT)
        .and_then(|b| b.push(2, cap_purpose::KERNEL_CONTROL))
        .and_then(|b| b.push(63, cap_purpose::BOOTSTRAP_NOTIFY))
        .expect("slots");
    let mut buf = [0xAAu8; ENVELOPE_MAX];
    let len = builder.write(&mut buf).expect("fits");
    assert_eq!(len, hdr::SIZE + 3 * envelope_slot::SIZE);
    assert_eq!(len, builder.envelope().encoded_len());
    let parsed = parse(&buf[..len], role::TIMED).expect("parses");
    assert_eq!(parsed, builder.envelope());
    // Byte-exact against the independent writer.
    let expected = raw(
        role::TIMED,
        envelope_flag::BOOTSTRAP_CRITICAL,
        &[
            (1, cap_purpose::SELF_ENDPOINT),
            (2, cap_purpose::KERNEL_CONTROL),
            (63, cap_purpose::BOOTSTRAP_NOTIFY),
        ],
    );
    assert_eq!(&buf[..len], &expected[..]);
    // And parse -> encode gives the same bytes back.
    let mut again = [0u8; ENVELOPE_MAX];
    let n = parsed.encode(&mut again).expect("fits");
    assert_eq!(&again[..n], &expected[..]);
}

#[test]
fn builder_enforces_the_parse_rules() {
    assert_eq!(
        EnvelopeBuilder::new(0x77, 0).map(|_| ()),
        Err(startup_status::BAD_ROLE)
    );
    assert_eq!(
        EnvelopeBuilder::new(role::TEST, 0x10).map(|_| ()),
        Err(startup_status::BAD_FLAGS)
    );
    let mut b = EnvelopeBuilder::new(role::TEST, 0).expect("ok");
    assert!(b.push(1, cap_purpose::SELF_ENDPOINT).is_ok());
    for (slot, purpose) in [
        (0, cap_purpose::KERNEL_CONTROL),
        (CAP_TABLE_SLOTS, cap_purpose::KERNEL_CONTROL),
        (2, 0),
        (1, cap_purpose::KERNEL_CONTROL),
        (2, cap_purpose::SELF_ENDPOINT),
    ] {
        assert_eq!(
            b.push(slot, purpose).map(|_| ()),
            Err(startup_status::BAD_SLOT_TABLE)
        );
    }
    assert_eq!(b.envelope().slots().len(), 1);
}

#[test]
fn builder_refuses_short_output() {
    let mut b = EnvelopeBuilder::new(role::TEST, 0).expect("ok");
    b.push(1, cap_purpose::SELF_ENDPOINT).expect("ok");
    let mut small = [0x55u8; hdr::SIZE + envelope_slot::SIZE - 1];
    assert_eq!(b.write(&mut small), None);
    assert!(small.iter().all(|&x| x == 0x55));
}

#[test]
fn never_panics_on_arbitrary_bytes() {
    // A cheap deterministic fuzz: mutate a valid envelope byte by byte and at random.
    let base = valid();
    for i in 0..base.len() {
        for v in [0u8, 1, 0x7F, 0x80, 0xFF] {
            let mut b = base.clone();
            b[i] = v;
            let _ = parse_procd(&b);
            let _ = parse_procd(&b[..i]);
        }
    }
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..2000 {
        let mut b = base.clone();
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = (x % b.len() as u64) as usize;
            b[at] = (x >> 32) as u8;
        }
        if let Ok(env) = parse_procd(&b) {
            // Whatever parses re-encodes to the same bytes.
            let mut out = [0u8; ENVELOPE_MAX];
            let n = env.encode(&mut out).expect("fits");
            assert_eq!(&out[..n], &b[..n]);
        }
    }
}
