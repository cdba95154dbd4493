//! The audit log and AUDIT_READ.

use super::*;

/// An AUDIT_READ request from `from_seq` with `reserved`.
pub(super) fn audit_req(from_seq: u32, reserved: u32) -> Message {
    let mut m = Message::new();
    let p = m.start(procd_op::AUDIT_READ, audit_read_request::SIZE);
    write_u32(p, audit_read_request::FROM_SEQ, from_seq);
    write_u32(p, audit_read_request::RESERVED, reserved);
    m
}

/// A decoded audit record: (seq, action, authority, pid, role, requester, detail); reserved
/// must be zero.
pub(super) type Audited = (u32, u16, u16, u32, u16, u64, u64);

pub(super) fn audit_records(payload: &[u8]) -> Vec<Audited> {
    assert_eq!(payload.len() % audit_record::SIZE, 0);
    payload
        .chunks_exact(audit_record::SIZE)
        .map(|r| {
            assert_eq!(read_u16(r, audit_record::RESERVED), Some(0));
            (
                read_u32(r, audit_record::SEQ).unwrap(),
                read_u16(r, audit_record::ACTION).unwrap(),
                read_u16(r, audit_record::AUTHORITY).unwrap(),
                read_u32(r, audit_record::PID).unwrap(),
                read_u16(r, audit_record::ROLE).unwrap(),
                read_u64(r, audit_record::REQUESTER).unwrap(),
                read_u64(r, audit_record::DETAIL).unwrap(),
            )
        })
        .collect()
}

/// AUDIT_READ from `from_seq` by rootd: the records replied.
pub(super) fn read_audit(k: &mut Model, p: &mut Procd, from_seq: u32) -> Vec<Audited> {
    let (st, payload) = ask(k, p, BADGE_ROOTD, audit_req(from_seq, 0));
    assert_eq!(st, status::OK);
    audit_records(&payload)
}

/// The (purpose, rights) of every grant procd plans for a TEST child, PROCD_ENDPOINT last.
pub(super) fn test_child_grants() -> Vec<(u16, u32)> {
    let env = bootstrap::parse(&procd_envelope(), role::PROCD).expect("envelope");
    let plan = capabi::plan_child_grants(role::TEST, &env).expect("plan");
    let mut grants: Vec<(u16, u32)> = plan
        .grants()
        .iter()
        .map(|g| (g.purpose, g.rights))
        .collect();
    grants.push((cap_purpose::PROCD_ENDPOINT, rights::SEND));
    grants
}

/// The records of one launch of a TEST child (image 4 unless given) as pid `pid`, from `seq`.
pub(super) fn launch_records(seq: u32, pid: u32, image_id: u32, requester: u64) -> Vec<Audited> {
    let kc = cap_purpose::KERNEL_CONTROL;
    let mut out = vec![(
        seq,
        audit_action::CREATE,
        kc,
        pid,
        role::TEST,
        requester,
        u64::from(image_id),
    )];
    for (purpose, granted) in test_child_grants() {
        let detail = u64::from(purpose) | u64::from(granted) << 16;
        out.push((
            0,
            audit_action::GRANT,
            kc,
            pid,
            role::TEST,
            requester,
            detail,
        ));
    }
    out.push((0, audit_action::START, kc, pid, role::TEST, requester, 0));
    for (i, r) in out.iter_mut().enumerate() {
        r.0 = seq + i as u32;
    }
    out
}

#[test]
fn a_spawn_records_create_its_grants_and_start() {
    let (mut k, mut p) = started();
    assert!(read_audit(&mut k, &mut p, 0).is_empty(), "empty at first");
    let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(5, role::TEST, 0));
    assert_eq!(st, status::OK);
    let records = read_audit(&mut k, &mut p, 0);
    assert_eq!(records, launch_records(0, 100, 5, BADGE_ROOTD));
    // The GRANT rights are the ones the kernel was asked for, in grant order.
    let granted: Vec<u64> = records
        .iter()
        .filter(|r| r.1 == audit_action::GRANT)
        .map(|r| r.6 >> 16)
        .collect();
    let asked: Vec<u64> = k.children[0].iter().map(|c| u64::from(c.2)).collect();
    assert_eq!(granted, asked);
    assert!(
        records.iter().any(|r| r.1 == audit_action::GRANT
            && r.6 & 0xFFFF == u64::from(cap_purpose::PROCD_ENDPOINT))
    );
    // AUDIT_READ itself records nothing and calls no kernel.
    assert_eq!(read_audit(&mut k, &mut p, 0), records);
}

#[test]
fn failed_spawns_record_nothing_but_a_failed_start_keeps_its_create() {
    let (mut k, mut p) = started();
    k.mint_status = status::BUSY;
    assert_eq!(
        spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(5, role::TEST, 0)).0,
        status::BUSY
    );
    k.mint_status = status::OK;
    k.create_status = status::DENIED;
    assert_eq!(
        spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(5, role::TEST, 0)).0,
        status::DENIED
    );
    k.create_status = status::OK;
    assert_eq!(
        spawn(&mut k, &mut p, 7, spawn_request(5, role::TEST, 0)).0,
        status::DENIED
    );
    assert_eq!(
        spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(0, role::TEST, 0)).0,
        status::INVALID_ARGUMENT
    );
    k.create_reply_hook = Some(|m: &mut Message| {
        let mut h = m.header();
        h.cap_count = 0;
        h.caps = [0; MSG_MAX_CAPS];
        m.set_header(&h);
    });
    assert_eq!(
        spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(5, role::TEST, 0)).0,
        status::INTERNAL
    );
    k.create_reply_hook = None;
    assert!(read_audit(&mut k, &mut p, 0).is_empty());
    // The kernel created the process; its START failed: CREATE and GRANTs only.
    k.start_status = status::INTERNAL;
    let pid = k.next_pid;
    assert_eq!(
        spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(5, role::TEST, 0)).0,
        status::INTERNAL
    );
    let mut expected = launch_records(0, pid, 5, BADGE_ROOTD);
    expected.pop();
    assert_eq!(read_audit(&mut k, &mut p, 0), expected);
}

#[test]
fn stop_kill_and_reap_are_recorded_with_rootd_and_their_authority() {
    let (mut k, mut p) = spawned(2, true);
    let base = p.audit().next_seq();
    let kc = cap_purpose::KERNEL_CONTROL;
    assert_eq!(
        ask(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            process_req(procd_op::STOP, pid_of(0, 1))
        )
        .0,
        status::OK
    );
    assert_eq!(
        ask(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            process_req(procd_op::KILL, pid_of(1, 1))
        )
        .0,
        status::OK
    );
    // Failures record nothing: BUSY (already stopping), then a kernel refusal.
    assert_eq!(
        ask(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            process_req(procd_op::KILL, pid_of(1, 1))
        )
        .0,
        status::BUSY
    );
    assert_eq!(
        ask(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            process_req(procd_op::REAP, pid_of(1, 1))
        )
        .0,
        status::BUSY
    );
    deliver_kills(&mut k, &mut p);
    assert_eq!(
        ask(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            process_req(procd_op::REAP, pid_of(1, 1))
        )
        .0,
        status::OK
    );
    assert_eq!(
        ask(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            process_req(procd_op::REAP, pid_of(1, 1))
        )
        .0,
        status::NOT_FOUND
    );
    assert_eq!(
        read_audit(&mut k, &mut p, base),
        [
            (
                base,
                audit_action::STOP,
                kc,
                100,
                role::TEST,
                BADGE_ROOTD,
                0
            ),
            (
                base + 1,
                audit_action::KILL,
                kc,
                101,
                role::TEST,
                BADGE_ROOTD,
                0
            ),
            (
                base + 2,
                audit_action::REAP,
                0,
                101,
                role::TEST,
                BADGE_ROOTD,
                u64::from(death_kind::KILLED)
            ),
        ]
    );
    // A refused KILL_PROCESS records nothing.
    let (mut k, mut p) = spawned(1, true);
    let base = p.audit().next_seq();
    k.kill_status = status::DENIED;
    assert_eq!(
        ask(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            process_req(procd_op::KILL, pid_of(0, 1))
        )
        .0,
        status::DENIED
    );
    assert!(read_audit(&mut k, &mut p, base).is_empty());
}

#[test]
fn a_policy_restart_records_restart_then_the_launch_by_the_kernel() {
    let (mut k, mut p) = spawned_restarting(0, restart_policy::ON_FAILURE, 3, 10_000, 250);
    let base = p.audit().next_seq();
    kernel_event(&mut k, &mut p, fault(100));
    assert!(
        read_audit(&mut k, &mut p, base).is_empty(),
        "a death records nothing"
    );
    fire(&mut k, &mut p);
    let mut expected = vec![(
        base,
        audit_action::RESTART,
        0,
        101,
        role::TEST,
        BADGE_KERNEL,
        100,
    )];
    expected.extend(launch_records(base + 1, 101, 4, BADGE_KERNEL));
    assert_eq!(read_audit(&mut k, &mut p, base), expected);
    // A STOP while RESTARTING (no kernel call) is recorded with authority 0.
    kernel_event(&mut k, &mut p, fault(101));
    let next = p.audit().next_seq();
    assert_eq!(
        ask(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            process_req(procd_op::STOP, pid_of(0, 2))
        )
        .0,
        status::OK
    );
    assert_eq!(
        read_audit(&mut k, &mut p, next),
        [(next, audit_action::STOP, 0, 101, role::TEST, BADGE_ROOTD, 0)]
    );
    // A failed restart records nothing.
    let (mut k, mut p) = spawned_restarting(0, restart_policy::ON_FAILURE, 3, 10_000, 250);
    let base = p.audit().next_seq();
    kernel_event(&mut k, &mut p, fault(100));
    k.create_status = status::BUSY;
    fire(&mut k, &mut p);
    assert!(read_audit(&mut k, &mut p, base).is_empty());
}

#[test]
fn the_ring_drops_the_oldest_and_audit_read_pages() {
    let (mut k, mut p) = started();
    let per_spawn = launch_records(0, 0, 4, BADGE_ROOTD).len() as u32;
    // Spawn and STOP until more than AUDIT_RING records were made.
    let mut made = 0;
    while made <= AUDIT_RING as u32 {
        let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(4, role::TEST, 0));
        assert_eq!(st, status::OK);
        let id = live_ids(&p)[0];
        assert_eq!(
            ask(&mut k, &mut p, BADGE_ROOTD, process_req(procd_op::STOP, id)).0,
            status::OK
        );
        deliver_kills(&mut k, &mut p);
        made += per_spawn + 1;
    }
    assert_eq!(p.audit().next_seq(), made);
    let oldest = made - AUDIT_RING as u32;
    let first = read_audit(&mut k, &mut p, 0);
    assert_eq!(first.len(), AUDIT_READ_MAX);
    assert_eq!(AUDIT_READ_MAX, 30);
    assert_eq!(
        first.iter().map(|r| r.0).collect::<Vec<_>>(),
        (oldest..oldest + 30).collect::<Vec<_>>()
    );
    // Paging: from the next seq on, until nothing is left.
    let mut seen: Vec<u32> = Vec::new();
    let mut from = 0;
    loop {
        let page = read_audit(&mut k, &mut p, from);
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 30);
        seen.extend(page.iter().map(|r| r.0));
        from = page.last().unwrap().0 + 1;
    }
    assert_eq!(seen, (oldest..made).collect::<Vec<_>>());
    let tail = read_audit(&mut k, &mut p, made - 3);
    assert_eq!(
        tail.iter().map(|r| r.0).collect::<Vec<_>>(),
        [made - 3, made - 2, made - 1]
    );
    assert!(read_audit(&mut k, &mut p, made).is_empty());
    assert!(read_audit(&mut k, &mut p, u32::MAX).is_empty());
}

#[test]
fn audit_read_is_rootd_only_and_well_formed() {
    let (mut k, mut p) = spawned(1, true);
    let none: (u32, Vec<u8>) = (status::DENIED, vec![]);
    for badge in [0, 7, BADGE_ROOTD + 1, PROCD_CHILD_BADGE_BASE] {
        assert_eq!(
            ask(&mut k, &mut p, badge, audit_req(0, 1)),
            none,
            "DENIED first"
        );
        assert_eq!(ask(&mut k, &mut p, badge, audit_req(0, 0)), none);
    }
    let invalid = (status::INVALID_ARGUMENT, vec![]);
    assert_eq!(ask(&mut k, &mut p, BADGE_ROOTD, audit_req(0, 1)), invalid);
    for len in [0, 4, 7, 9, 16] {
        let mut m = audit_req(0, 0);
        m.start(procd_op::AUDIT_READ, len);
        assert_eq!(ask(&mut k, &mut p, BADGE_ROOTD, m), invalid, "len {len}");
    }
    let mut m = audit_req(0, 0);
    k.deliver_caps(&mut m, 1);
    assert_eq!(ask(&mut k, &mut p, BADGE_ROOTD, m), invalid, "caps");
    let mut m = audit_req(0, 0);
    let mut h = m.header();
    h.reserved0 = 1;
    m.set_header(&h);
    assert_eq!(
        ask(&mut k, &mut p, BADGE_ROOTD, m),
        invalid,
        "reserved header"
    );
    assert!(k.requests.is_empty(), "no kernel calls");
    assert_eq!(
        read_audit(&mut k, &mut p, 0).len(),
        launch_records(0, 0, 4, 0).len()
    );
}
