//! The minted PROCD_ENDPOINT and PROBE_COMPLETE.

use super::*;

#[test]
fn child_badges_map_table_indices_both_ways() {
    assert_eq!(child_badge(0), Some(abi::PROCD_CHILD_BADGE_BASE));
    let last = abi::PROCD_MAX_PROCESSES - 1;
    assert_eq!(
        child_badge(last),
        Some(abi::PROCD_CHILD_BADGE_BASE + last as u64)
    );
    assert_eq!(child_badge(abi::PROCD_MAX_PROCESSES), None);
    assert_eq!(child_badge(usize::MAX), None);
    for i in 0..abi::PROCD_MAX_PROCESSES {
        assert_eq!(badge_index(child_badge(i).unwrap()), Some(i));
    }
    let base = abi::PROCD_CHILD_BADGE_BASE;
    for badge in [
        0,
        BADGE_ROOTD,
        base - 1,
        base + abi::PROCD_MAX_PROCESSES as u64,
        base + 0x1_0000,
        BADGE_KERNEL,
        BADGE_KERNEL - 1,
    ] {
        assert_eq!(badge_index(badge), None, "badge {badge:#x}");
    }
}

/// The (child slot, type, rights, badge) the last created child got for `purpose`, by its
/// envelope.
pub(super) fn child_cap(k: &Model, purpose: u16) -> Option<(u32, u32, u32, u64)> {
    let (_, create) = k
        .requests
        .iter()
        .rev()
        .find(|(op, _)| *op == kernel_op::CREATE_PROCESS)?;
    let role = read_u16(
        &create[create_process_request::SIZE..],
        abi::envelope_header::ROLE,
    )?;
    let env = bootstrap::parse(&create[create_process_request::SIZE..], role).ok()?;
    let slot = env.slot_for(purpose)?;
    k.children.last()?.iter().find(|c| c.0 == slot).copied()
}

#[test]
fn a_test_child_gets_a_minted_procd_endpoint() {
    let (mut k, mut p) = started();
    let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(6, role::TEST, 0));
    assert_eq!(st, status::OK);

    // MINT_ENDPOINT on procd's own endpoint: SEND, badge BASE + index 0.
    let ops: Vec<u32> = k.requests.iter().map(|r| r.0).collect();
    assert_eq!(
        ops,
        [
            kernel_op::MINT_ENDPOINT,
            kernel_op::CREATE_PROCESS,
            kernel_op::START_PROCESS
        ]
    );
    let mint = &k.requests[0].1;
    assert_eq!(mint.len(), mint_request::SIZE);
    assert_eq!(read_u32(mint, mint_request::SRC_SLOT), Some(SELF_EP));
    assert_eq!(read_u32(mint, mint_request::RIGHTS), Some(rights::SEND));
    assert_eq!(
        read_u64(mint, mint_request::BADGE),
        Some(abi::PROCD_CHILD_BADGE_BASE)
    );

    // The minted capability is the last grant, SEND only, and the child's PROCD_ENDPOINT.
    let create = &k.requests[1].1;
    let grants = usize::from(read_u16(create, create_process_request::GRANT_COUNT).unwrap());
    assert_eq!(
        grants, 3,
        "bootstrap notify, kernel control, procd endpoint"
    );
    let last = read_u64(
        create,
        create_process_request::GRANTS + grant::SIZE * (grants - 1),
    )
    .unwrap();
    let minted_slot = last as u32;
    assert_eq!((last >> 32) as u32, rights::SEND);
    assert_eq!(
        child_cap(&k, cap_purpose::PROCD_ENDPOINT),
        Some((
            CHILD_FIRST_GRANT_SLOT + 2,
            cap_type::ENDPOINT,
            rights::SEND,
            abi::PROCD_CHILD_BADGE_BASE
        ))
    );
    let env = bootstrap::parse(&create[create_process_request::SIZE..], role::TEST).unwrap();
    assert_eq!(
        env.slots().last().map(|s| (s.slot, s.purpose)),
        Some((CHILD_FIRST_GRANT_SLOT + 2, cap_purpose::PROCD_ENDPOINT))
    );
    // The child's view passes its own intake check.
    let table = |slot: u32| {
        if slot == CHILD_SELF_ENDPOINT_SLOT {
            return Some((cap_type::ENDPOINT, rights::RECV));
        }
        k.children[0]
            .iter()
            .find(|c| c.0 == slot)
            .map(|c| (c.1, c.2))
    };
    assert_eq!(capabi::validate_intake(&env, role::TEST, table), Ok(()));

    // procd deleted its copy right after CREATE (2 requests in), before START.
    assert_eq!(k.deleted_after, [(minted_slot, 2)]);
    assert!(k.badges.is_empty());
    assert_eq!(k.caps.len(), 5, "procd's four plus the child's endpoint");

    // The next child gets the next index's badge.
    let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(6, role::TEST, 0));
    assert_eq!(st, status::OK);
    assert_eq!(
        read_u64(&k.requests[3].1, mint_request::BADGE),
        Some(abi::PROCD_CHILD_BADGE_BASE + 1)
    );
    assert_eq!(
        child_cap(&k, cap_purpose::PROCD_ENDPOINT).map(|c| c.3),
        Some(abi::PROCD_CHILD_BADGE_BASE + 1)
    );
    assert!(k.badges.is_empty());
}

#[test]
fn the_procd_endpoint_comes_after_every_planned_grant() {
    // A procd holding named and timed too: TEST gets those, then its PROCD_ENDPOINT.
    const NAMED: u32 = 8;
    const TIMED: u32 = 9;
    let mut k = Model::new();
    k.caps.insert(NAMED, (cap_type::ENDPOINT, rights::SEND));
    k.caps.insert(TIMED, (cap_type::ENDPOINT, rights::SEND));
    let env = envelope_bytes(&[
        (SELF_EP, cap_purpose::SELF_ENDPOINT),
        (KC, cap_purpose::KERNEL_CONTROL),
        (NOTIFY, cap_purpose::BOOTSTRAP_NOTIFY),
        (CRASHD, cap_purpose::CRASHD_ENDPOINT),
        (NAMED, cap_purpose::NAMED_ENDPOINT),
        (TIMED, cap_purpose::TIMED_ENDPOINT),
    ]);
    let mut p = start(&mut k, Some(&env)).expect("starts");
    let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(6, role::TEST, 0));
    assert_eq!(st, status::OK);
    let purposes: Vec<u16> = {
        let create = &k.requests[1].1;
        let env = bootstrap::parse(&create[create_process_request::SIZE..], role::TEST).unwrap();
        env.slots().iter().map(|s| s.purpose).collect()
    };
    assert_eq!(
        purposes,
        [
            cap_purpose::SELF_ENDPOINT,
            cap_purpose::BOOTSTRAP_NOTIFY,
            cap_purpose::KERNEL_CONTROL,
            cap_purpose::NAMED_ENDPOINT,
            cap_purpose::TIMED_ENDPOINT,
            cap_purpose::PROCD_ENDPOINT,
        ]
    );
    assert_eq!(
        child_cap(&k, cap_purpose::PROCD_ENDPOINT),
        Some((
            CHILD_FIRST_GRANT_SLOT + 4,
            cap_type::ENDPOINT,
            rights::SEND,
            abi::PROCD_CHILD_BADGE_BASE
        ))
    );
    assert_eq!(
        child_cap(&k, cap_purpose::NAMED_ENDPOINT).map(|c| c.3),
        Some(0),
        "copied, not minted"
    );
}

#[test]
fn roles_without_a_procd_endpoint_get_no_mint() {
    let (mut k, mut p) = started();
    let (st, _) = spawn(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        spawn_request(6, role::TIMED, 0),
    );
    assert_eq!(st, status::OK);
    assert!(
        k.requests
            .iter()
            .all(|(op, _)| *op != kernel_op::MINT_ENDPOINT)
    );
    assert_eq!(child_cap(&k, cap_purpose::PROCD_ENDPOINT), None);
    assert!(k.deleted.is_empty());
}

#[test]
fn the_minted_copy_is_deleted_after_a_failed_create() {
    for code in [status::NOT_FOUND, status::DENIED, status::BUSY, 0x1234] {
        let (mut k, mut p) = started();
        k.create_status = code;
        let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(6, role::TEST, 0));
        assert_eq!(st, code);
        let minted = k.requests[0].0 == kernel_op::MINT_ENDPOINT;
        assert!(minted);
        assert_eq!(k.deleted_after.len(), 1);
        assert_eq!(k.deleted_after[0].1, 2, "after CREATE");
        assert!(k.badges.is_empty());
        assert_eq!(p.table().live().count(), 0);
    }
    // A CREATE the kernel refuses for a grant (one that would widen the source's rights).
    let (mut k, mut p) = started();
    k.caps
        .insert(NOTIFY, (cap_type::NOTIFICATION, rights::RECV));
    let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(6, role::TEST, 0));
    assert_eq!(st, status::DENIED);
    assert_eq!(k.deleted_after.len(), 1);
    assert!(k.badges.is_empty());
    assert_eq!(p.table().live().count(), 0);
}

#[test]
fn a_failed_mint_is_reported_and_leaks_nothing() {
    for code in [
        status::INVALID_ARGUMENT,
        status::DENIED,
        status::BUSY,
        status::INTERNAL,
        0x77,
    ] {
        let (mut k, mut p) = started();
        let caps_before = k.caps.clone();
        k.mint_status = code;
        let (st, payload) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(6, role::TEST, 0));
        assert_eq!(st, code);
        assert!(payload.is_empty());
        assert_eq!(
            k.requests.iter().map(|r| r.0).collect::<Vec<_>>(),
            [kernel_op::MINT_ENDPOINT],
            "no CREATE after a failed MINT"
        );
        assert_eq!(p.table().live().count(), 0);
        assert_eq!(k.caps, caps_before);
        assert!(k.deleted.is_empty());

        // The entry was not used up: the next spawn takes index 0 (badge BASE).
        k.mint_status = status::OK;
        k.requests.clear();
        let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(6, role::TEST, 0));
        assert_eq!(st, status::OK);
        assert_eq!(
            read_u64(&k.requests[0].1, mint_request::BADGE),
            Some(abi::PROCD_CHILD_BADGE_BASE)
        );
        assert_eq!(p.table().entries()[0].state, ProcState::Running);
    }

    // A real BUSY: procd's capability table is full.
    let (mut k, mut p) = started();
    for slot in 1..CAP_TABLE_SLOTS {
        k.caps
            .entry(slot)
            .or_insert((cap_type::NOTIFICATION, rights::SEND));
    }
    let caps_before = k.caps.clone();
    let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(6, role::TEST, 0));
    assert_eq!(st, status::BUSY);
    assert_eq!(k.caps, caps_before);
    assert_eq!(p.table().live().count(), 0);

    // The CALL itself failing.
    let (mut k, mut p) = started();
    k.call_status = status::DENIED;
    let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(6, role::TEST, 0));
    assert_eq!(st, status::DENIED);
    assert!(k.deleted.is_empty());
    assert_eq!(p.table().live().count(), 0);
}

#[test]
fn malformed_mint_replies_are_internal_and_leak_nothing() {
    let hooks: [fn(&mut Message); 4] = [
        // No capability.
        |m| {
            let mut h = m.header();
            h.cap_count = 0;
            m.set_header(&h);
        },
        // "Landed" in procd's kernel-control slot.
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
        k.mint_reply_hook = Some(hook);
        let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(6, role::TEST, 0));
        assert_eq!(st, status::INTERNAL);
        assert_eq!(k.requests.len(), 1, "no CREATE after a bad MINT reply");
        assert_eq!(p.table().live().count(), 0);
        for own in [SELF_EP, KC, NOTIFY, CRASHD] {
            assert!(k.caps.contains_key(&own));
        }
    }

    // Extra capabilities along with a good one: dropped, the spawn goes on.
    let (mut k, mut p) = started();
    k.caps.insert(40, (cap_type::ENDPOINT, rights::SEND));
    k.mint_reply_hook = Some(|m| {
        let mut h = m.header();
        h.cap_count = 3;
        h.caps[1] = 40;
        h.caps[2] = SELF_EP;
        m.set_header(&h);
    });
    let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(6, role::TEST, 0));
    assert_eq!(st, status::OK);
    assert_eq!(
        k.deleted_after[0],
        (40, 1),
        "the extra goes right after MINT"
    );
    assert!(!k.deleted.contains(&SELF_EP));
    assert!(k.badges.is_empty());
}

#[test]
fn a_create_reply_naming_the_minted_slot_is_internal() {
    let (mut k, mut p) = started();
    k.create_reply_hook = Some(|m| {
        // The minted copy is the lowest free slot (4); a broken kernel claims the endpoint
        // capability landed there.
        let mut h = m.header();
        h.caps[0] = 4;
        m.set_header(&h);
    });
    let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(6, role::TEST, 0));
    assert_eq!(st, status::INTERNAL);
    assert_eq!(p.table().live().count(), 0);
    assert!(k.badges.is_empty());
    assert_eq!(k.requests.len(), 2, "no START");
}

/// A PROBE_COMPLETE as a child SENDs it.
pub(super) fn probe() -> Message {
    let mut m = Message::new();
    m.start(procd_op::PROBE_COMPLETE, 0);
    m
}

pub(super) fn probe_from(k: &mut Model, p: &mut Procd, badge: u64, mut m: Message) -> u32 {
    assert_eq!(p.handle(k, badge, &mut m), Answer::Reply);
    let (st, payload) = reply(&m);
    assert!(payload.is_empty());
    st
}

#[test]
fn probe_complete_from_a_live_child_notifies_once() {
    let (mut k, mut p) = spawned(3, true);
    let before: Vec<_> = p.table().entries().to_vec();
    let badge = child_badge(1).unwrap();
    assert_eq!(probe_from(&mut k, &mut p, badge, probe()), status::OK);
    assert_eq!(k.notified, [(NOTIFY, notify_bit::PROBE_COMPLETE)]);
    assert_eq!(k.log, ["procd: probe complete (pid 101)"]);
    assert_eq!(p.table().entries(), &before[..]);
    assert!(k.requests.is_empty());
    assert!(k.sends.is_empty(), "a notification, never a SEND");
    assert!(k.deleted.is_empty());

    // Each probe is one notification.
    assert_eq!(
        probe_from(&mut k, &mut p, child_badge(0).unwrap(), probe()),
        status::OK
    );
    assert_eq!(k.notified.len(), 2);
    assert_eq!(k.log[1], "procd: probe complete (pid 100)");
}

#[test]
fn probe_complete_from_anyone_else_is_denied() {
    let (mut k, mut p) = spawned(3, true);
    // Free index 1; index 3 was never used.
    kernel_event(&mut k, &mut p, child_died(101, death_kind::EXITED, 0, 0));
    k.log.clear();
    k.deleted.clear();
    let before: Vec<_> = p.table().entries().to_vec();
    let base = abi::PROCD_CHILD_BADGE_BASE;
    for badge in [
        BADGE_ROOTD,
        0,
        2,
        base - 1,
        base + 1,
        base + 3,
        base + abi::PROCD_MAX_PROCESSES as u64 - 1,
        base + abi::PROCD_MAX_PROCESSES as u64,
        base + 0x1_0000,
        BADGE_KERNEL - 1,
    ] {
        assert_eq!(
            probe_from(&mut k, &mut p, badge, probe()),
            status::DENIED,
            "badge {badge:#x}"
        );
    }
    // DENIED comes before the payload check.
    let mut with_payload = probe();
    with_payload.start(procd_op::PROBE_COMPLETE, 8);
    assert_eq!(
        probe_from(&mut k, &mut p, BADGE_ROOTD, with_payload),
        status::DENIED
    );
    assert!(k.notified.is_empty());
    assert!(k.log.is_empty());
    assert_eq!(p.table().entries(), &before[..]);

    // From the kernel's badge it is no request at all: ignored, no reply.
    kernel_event(&mut k, &mut p, probe());
    assert!(k.notified.is_empty());

    // A child that later takes the freed index gets its badge: that is fine.
    let (st, payload) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(4, role::TEST, 0));
    assert_eq!(st, status::OK);
    assert_eq!(p.table().entries()[1].pid, 103);
    assert_eq!(
        read_u32(&payload, spawn_service_reply::PID),
        Some(103),
        "the new child is at index 1"
    );
    assert_eq!(
        child_cap(&k, cap_purpose::PROCD_ENDPOINT).map(|c| c.3),
        Some(base + 1)
    );
    assert_eq!(probe_from(&mut k, &mut p, base + 1, probe()), status::OK);
    assert_eq!(k.log, ["procd: probe complete (pid 103)"]);
    assert_eq!(k.notified, [(NOTIFY, notify_bit::PROBE_COMPLETE)]);
}

#[test]
fn malformed_probe_complete_is_invalid() {
    let (mut k, mut p) = spawned(1, true);
    let badge = child_badge(0).unwrap();
    let with = |f: fn(&mut MessageHeader)| {
        let mut m = probe();
        let mut h = m.header();
        f(&mut h);
        m.set_header(&h);
        m
    };
    let cases = [
        with(|h| h.payload_len = 1),
        with(|h| h.payload_len = 8),
        with(|h| h.payload_len = abi::MSG_MAX_PAYLOAD as u16),
        with(|h| h.payload_len = u16::MAX),
        with(|h| h.reserved0 = 1),
        with(|h| h.reserved1 = 1),
        // Claims capabilities that are not in the table.
        with(|h| h.cap_count = 1),
    ];
    for m in cases {
        assert_eq!(
            probe_from(&mut k, &mut p, badge, m),
            status::INVALID_ARGUMENT
        );
    }
    // With real capabilities: deleted, INVALID_ARGUMENT.
    let mut m = probe();
    k.deliver_caps(&mut m, 2);
    let delivered = m.header().cap_slots().to_vec();
    assert_eq!(
        probe_from(&mut k, &mut p, badge, m),
        status::INVALID_ARGUMENT
    );
    assert!(delivered.iter().all(|s| k.deleted.contains(s)));
    assert!(k.notified.is_empty());
    assert!(k.log.is_empty());
    assert_eq!(live_pids(&p), [100]);
}

#[test]
fn a_failed_probe_notify_is_logged_and_still_ok() {
    let (mut k, mut p) = spawned(1, true);
    k.notify_status = status::DENIED;
    assert_eq!(
        probe_from(&mut k, &mut p, child_badge(0).unwrap(), probe()),
        status::OK
    );
    assert_eq!(
        k.log,
        [
            "procd: probe complete (pid 100)",
            "procd: PROBE_COMPLETE notify failed: DENIED"
        ]
    );
    assert_eq!(k.notified.len(), 1);
}
