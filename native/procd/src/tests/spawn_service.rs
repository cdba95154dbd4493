//! SPAWN_SERVICE: requests, the kernel's replies and their failures.

use super::*;

#[test]
fn spawn_service_creates_and_starts() {
    let (mut k, mut p) = started();
    let flags = envelope_flag::REQUIRED | envelope_flag::BOOTSTRAP_CRITICAL;
    let (st, payload) = spawn(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        spawn_request(42, role::TIMED, flags),
    );
    assert_eq!(st, status::OK);
    assert_eq!(payload.len(), spawn_service_reply::SIZE);
    assert_eq!(read_u32(&payload, spawn_service_reply::PID), Some(100));
    assert_eq!(
        read_u32(&payload, spawn_service_reply::ENDPOINT),
        Some(7000)
    );
    assert_eq!(
        read_u32(&payload, spawn_service_reply::ID),
        Some(1 << abi::PROCD_ID_GENERATION_SHIFT),
        "index 0, generation 1"
    );
    assert_eq!(read_u32(&payload, spawn_service_reply::RESERVED), Some(0));

    // CREATE_PROCESS then START_PROCESS.
    assert_eq!(k.requests.len(), 2);
    let (op, create) = &k.requests[0];
    assert_eq!(*op, kernel_op::CREATE_PROCESS);
    assert_eq!(read_u32(create, create_process_request::IMAGE_ID), Some(42));
    // TIMED: kernel control (required, SEND) and bootstrap notify (optional, SEND).
    assert_eq!(
        read_u16(create, create_process_request::GRANT_COUNT),
        Some(2)
    );
    let grant = |i: usize| read_u64(create, create_process_request::GRANTS + 8 * i);
    assert_eq!(
        grant(0),
        Some(u64::from(KC) | (u64::from(rights::SEND) << 32))
    );
    assert_eq!(
        grant(1),
        Some(u64::from(NOTIFY) | (u64::from(rights::SEND) << 32))
    );
    for i in 2..create_process_request::GRANTS_COUNT {
        assert_eq!(grant(i), Some(0));
    }
    assert_eq!(read_u64(create, create_process_request::BADGE), Some(0));
    assert_eq!(
        read_u32(create, create_process_request::SUPERVISOR_SLOT),
        Some(SELF_EP),
        "procd supervises its children on its own endpoint"
    );
    assert_eq!(read_u32(create, create_process_request::RESERVED), Some(0));
    let env_len = usize::from(read_u16(create, create_process_request::ENVELOPE_LEN).unwrap());
    assert_eq!(create.len(), create_process_request::SIZE + env_len);
    let env = bootstrap::parse(&create[create_process_request::SIZE..], role::TIMED)
        .expect("child envelope parses");
    assert_eq!(env.flags(), flags);
    assert_eq!(
        env.slot_for(cap_purpose::SELF_ENDPOINT),
        Some(CHILD_SELF_ENDPOINT_SLOT)
    );
    assert_eq!(
        env.slot_for(cap_purpose::KERNEL_CONTROL),
        Some(CHILD_FIRST_GRANT_SLOT)
    );
    assert_eq!(
        env.slot_for(cap_purpose::BOOTSTRAP_NOTIFY),
        Some(CHILD_FIRST_GRANT_SLOT + 1)
    );
    assert_eq!(env.slots().len(), 3);

    let (op, start_req) = &k.requests[1];
    assert_eq!(*op, kernel_op::START_PROCESS);
    assert_eq!(start_req.len(), start_process_request::SIZE);
    assert_eq!(read_u32(start_req, start_process_request::PID), Some(100));
    assert_eq!(
        read_u32(start_req, start_process_request::RESERVED),
        Some(0)
    );

    let live: Vec<_> = p.table().live().copied().collect();
    assert_eq!(live.len(), 1);
    let e = live[0];
    assert_eq!(e.state, ProcState::Running);
    assert_eq!(
        (e.pid, e.endpoint, e.role, e.image_id, e.flags),
        (100, 7000, Role::TIMED, 42, flags)
    );
    assert!(
        k.caps.contains_key(&e.endpoint_slot),
        "procd keeps the child endpoint cap"
    );
    assert!(k.deleted.is_empty());
    assert!(k.log.is_empty());
}

#[test]
fn spawn_ids_come_from_the_kernel_in_order() {
    let (mut k, mut p) = started();
    for i in 0..3 {
        let (st, payload) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(9, role::TEST, 0));
        assert_eq!(st, status::OK);
        assert_eq!(read_u32(&payload, 0), Some(100 + i));
        assert_eq!(read_u32(&payload, 4), Some(7000 + i));
        assert_eq!(read_u32(&payload, 8), Some(1 << 16 | i));
        assert_eq!(read_u32(&payload, 12), Some(0));
    }
    let slots: Vec<u32> = p.table().live().map(|e| e.endpoint_slot).collect();
    let mut unique = slots.clone();
    unique.dedup();
    assert_eq!(slots, unique);
    assert_eq!(p.table().entries()[0].pid, 100);
    assert_eq!(p.table().entries()[2].pid, 102);
}

#[test]
fn spawn_requires_the_rootd_badge() {
    let (mut k, mut p) = started();
    for badge in [0, 2, BADGE_KERNEL - 1] {
        let (st, payload) = spawn(&mut k, &mut p, badge, spawn_request(1, role::TEST, 0));
        assert_eq!(st, status::DENIED);
        assert!(payload.is_empty());
    }
    assert!(k.requests.is_empty());
}

#[test]
fn spawn_rejects_malformed_requests() {
    let (mut k, mut p) = started();
    let mut short = spawn_request(1, role::TEST, 0);
    let mut h = short.header();
    h.payload_len = 7;
    short.set_header(&h);
    let mut long = spawn_request(1, role::TEST, 0);
    h.payload_len = 9;
    long.set_header(&h);
    let mut reserved0 = spawn_request(1, role::TEST, 0);
    let mut h = reserved0.header();
    h.reserved0 = 1;
    reserved0.set_header(&h);
    let mut reserved1 = spawn_request(1, role::TEST, 0);
    let mut h = reserved1.header();
    h.reserved1 = 1 << 63;
    reserved1.set_header(&h);
    let cases = [
        short,
        long,
        reserved0,
        reserved1,
        spawn_request(0, role::TEST, 0),
        spawn_request(1, 0, 0),
        spawn_request(1, 0x99, 0),
        spawn_request(1, role::ROOTD, 0),
        spawn_request(1, role::PROCD, 0),
        spawn_request(1, role::GENERIC, 0),
        // The lowest flag bit outside envelope_flag::ALL (0x7): unknown.
        spawn_request(1, role::TEST, envelope_flag::ALL + 1),
        spawn_request(1, role::TEST, 0xFFFF),
    ];
    for m in cases {
        let (st, payload) = spawn(&mut k, &mut p, BADGE_ROOTD, m);
        assert_eq!(st, status::INVALID_ARGUMENT);
        assert!(payload.is_empty());
    }
    assert!(k.requests.is_empty());
    assert_eq!(p.table().live().count(), 0);
}

#[test]
fn request_caps_are_deleted_and_refused() {
    let (mut k, mut p) = started();
    let mut m = spawn_request(1, role::TEST, 0);
    k.deliver_caps(&mut m, 2);
    let delivered = m.header().cap_slots().to_vec();
    assert_eq!(p.handle(&mut k, BADGE_ROOTD, &mut m), Answer::Reply);
    assert_eq!(reply(&m).0, status::INVALID_ARGUMENT);
    assert_eq!(k.deleted, delivered);
    assert!(delivered.iter().all(|s| !k.caps.contains_key(s)));
    assert!(k.requests.is_empty());

    // Wrong badge as well: DENIED comes first, the caps still go.
    k.deleted.clear();
    let mut m = spawn_request(1, role::TEST, 0);
    k.deliver_caps(&mut m, 1);
    let delivered = m.header().cap_slots().to_vec();
    assert_eq!(p.handle(&mut k, 0, &mut m), Answer::Reply);
    assert_eq!(reply(&m).0, status::DENIED);
    assert_eq!(k.deleted, delivered);

    // Unknown op with caps.
    k.deleted.clear();
    let mut m = Message::new();
    m.start(0x999, 0);
    k.deliver_caps(&mut m, MSG_MAX_CAPS);
    assert_eq!(p.handle(&mut k, BADGE_ROOTD, &mut m), Answer::Reply);
    assert_eq!(reply(&m).0, status::INVALID_ARGUMENT);
    assert_eq!(k.deleted.len(), MSG_MAX_CAPS);
}

#[test]
fn own_slots_are_never_deleted() {
    let (mut k, mut p) = started();
    let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(1, role::TEST, 0));
    assert_eq!(st, status::OK);
    k.deleted.clear();
    let child_slot = p.table().entries()[0].endpoint_slot;
    // A (broken) kernel claims caps landed in procd's own slots.
    let mut m = Message::new();
    m.start(procd_op::SPAWN_SERVICE, 0);
    let mut h = m.header();
    h.cap_count = 4;
    h.caps = [SELF_EP, KC, child_slot, CRASHD];
    m.set_header(&h);
    assert_eq!(p.handle(&mut k, BADGE_ROOTD, &mut m), Answer::Reply);
    assert_eq!(reply(&m).0, status::INVALID_ARGUMENT);
    assert!(k.deleted.is_empty());
}

#[test]
fn unknown_ops_are_invalid() {
    let (mut k, mut p) = started();
    for op in [
        0,
        1,
        kernel_op::CREATE_PROCESS,
        kernel_op::KILL_PROCESS,
        0x401,
        0x40C, // 0x403 is SPAWN now
        0x40B,
        u32::MAX,
    ] {
        let mut m = Message::new();
        m.start(op, 8);
        assert_eq!(p.handle(&mut k, BADGE_ROOTD, &mut m), Answer::Reply);
        assert_eq!(reply(&m), (status::INVALID_ARGUMENT, vec![]));
    }
    assert!(k.requests.is_empty());
}

#[test]
fn a_full_table_is_busy() {
    let (mut k, mut p) = started();
    for _ in 0..abi::PROCD_MAX_PROCESSES {
        let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(3, role::TEST, 0));
        assert_eq!(st, status::OK);
    }
    let before = k.requests.len();
    let (st, payload) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(3, role::TEST, 0));
    assert_eq!(st, status::BUSY);
    assert!(payload.is_empty());
    assert_eq!(k.requests.len(), before, "no kernel call when full");
}

#[test]
fn create_failure_is_passed_through() {
    for code in [status::NOT_FOUND, status::DENIED, status::BUSY, 0x1234] {
        let (mut k, mut p) = started();
        k.create_status = code;
        let (st, payload) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(5, role::TEST, 0));
        assert_eq!(st, code);
        assert!(payload.is_empty());
        // MINT (TEST lists PROCD_ENDPOINT), then CREATE.
        assert_eq!(k.requests.len(), 2);
        assert_eq!(p.table().live().count(), 0);
        assert_eq!(
            k.deleted.len(),
            1,
            "the minted copy is deleted after a failed CREATE"
        );
        assert_eq!(
            k.caps.keys().copied().collect::<Vec<_>>(),
            [SELF_EP, KC, NOTIFY, CRASHD]
        );
    }
}

#[test]
fn call_syscall_failure_is_passed_through() {
    let (mut k, mut p) = started();
    k.call_status = status::DENIED;
    let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(5, role::TEST, 0));
    assert_eq!(st, status::DENIED);
    assert_eq!(p.table().live().count(), 0);
}

#[test]
fn start_failure_frees_the_entry_and_drops_the_endpoint() {
    let (mut k, mut p) = started();
    k.start_status = status::INTERNAL;
    let (st, payload) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(5, role::TEST, 0));
    assert_eq!(st, status::INTERNAL);
    assert!(payload.is_empty());
    // MINT, CREATE, START.
    assert_eq!(k.requests.len(), 3);
    assert_eq!(p.table().live().count(), 0);
    assert_eq!(
        k.deleted.len(),
        2,
        "the minted copy and the child endpoint cap are dropped"
    );
    assert_eq!(
        k.caps.keys().copied().collect::<Vec<_>>(),
        [SELF_EP, KC, NOTIFY, CRASHD]
    );
    // The freed entry is reused.
    k.start_status = status::OK;
    let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(5, role::TEST, 0));
    assert_eq!(st, status::OK);
    assert_eq!(p.table().entries()[0].state, ProcState::Running);
}

#[test]
fn malformed_create_replies_are_internal() {
    let hooks: [fn(&mut Message); 5] = [
        // No capability.
        |m| {
            let mut h = m.header();
            h.cap_count = 0;
            m.set_header(&h);
        },
        // Short payload.
        |m| {
            let mut h = m.header();
            h.payload_len = 4;
            m.set_header(&h);
        },
        // The endpoint cap "landed" in procd's kernel-control slot.
        |m| {
            let mut h = m.header();
            h.caps[0] = KC;
            m.set_header(&h);
        },
        // Slot 0.
        |m| {
            let mut h = m.header();
            h.caps[0] = 0;
            m.set_header(&h);
        },
        // Out of range.
        |m| {
            let mut h = m.header();
            h.caps[0] = CAP_TABLE_SLOTS;
            m.set_header(&h);
        },
    ];
    for hook in hooks {
        let (mut k, mut p) = started();
        k.create_reply_hook = Some(hook);
        let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(5, role::TEST, 0));
        assert_eq!(st, status::INTERNAL);
        assert_eq!(
            k.requests.iter().map(|r| r.0).collect::<Vec<_>>(),
            [kernel_op::MINT_ENDPOINT, kernel_op::CREATE_PROCESS],
            "no START after a bad CREATE reply"
        );
        assert_eq!(p.table().live().count(), 0);
        assert!(!k.deleted.contains(&KC));
        assert!(k.badges.is_empty(), "the minted copy is gone");
    }
}

#[test]
fn extra_caps_in_a_create_reply_are_dropped() {
    let (mut k, mut p) = started();
    k.create_reply_hook = Some(|m| {
        let mut h = m.header();
        h.cap_count = 2;
        h.caps[1] = 40;
        m.set_header(&h);
    });
    k.caps.insert(40, (cap_type::ENDPOINT, rights::SEND));
    let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(5, role::TEST, 0));
    assert_eq!(st, status::OK);
    // The minted copy (right after CREATE), then the extra capability.
    assert_eq!(k.deleted.len(), 2);
    assert_eq!(k.deleted[1], 40);
    assert!(k.badges.is_empty());
}

#[test]
fn reply_overwrites_the_request() {
    let (mut k, mut p) = started();
    let mut m = spawn_request(1, role::TEST, 0);
    m.payload_area_mut().fill(0xEE);
    let mut h = m.header();
    h.payload_len = 900;
    m.set_header(&h);
    assert_eq!(p.handle(&mut k, BADGE_ROOTD, &mut m), Answer::Reply);
    let (st, payload) = reply(&m);
    assert_eq!(st, status::INVALID_ARGUMENT);
    assert!(payload.is_empty());
    assert_eq!(m.wire_len(), message_header::SIZE);
}
