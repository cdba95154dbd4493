//! SPAWN from authorised clients, and dependencies rootd started.

use super::*;

/// A SPAWN (0x403) request: spawn_service_request with `image_id`, `role` and `flags`.
fn client_spawn_request(image_id: u32, role: u16, flags: u16) -> Message {
    let mut m = spawn_request(image_id, role, flags);
    let mut h = m.header();
    h.op = procd_op::SPAWN;
    m.set_header(&h);
    m
}

/// procd with a RUNNING TEST child at index 0 (pid 100) spawned with `flags`; logs cleared.
fn with_child(flags: u16) -> (Model, Procd) {
    let (mut k, mut p) = started();
    let (st, _) = spawn(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        spawn_request(4, role::TEST, flags),
    );
    assert_eq!(st, status::OK);
    k.requests.clear();
    k.log.clear();
    (k, p)
}

#[test]
fn a_spawner_child_spawns_a_test_service_audited_with_its_badge() {
    let (mut k, mut p) = with_child(envelope_flag::SPAWNER);
    let badge = child_badge(0).expect("badge");
    let base = p.audit().next_seq();
    let (st, payload) = spawn(
        &mut k,
        &mut p,
        badge,
        client_spawn_request(4, role::TEST, 0),
    );
    assert_eq!(st, status::OK);
    assert_eq!(payload.len(), spawn_service_reply::SIZE);
    assert_eq!(read_u32(&payload, spawn_service_reply::PID), Some(101));
    assert_eq!(
        read_u32(&payload, spawn_service_reply::ID),
        Some(1 | 1 << abi::PROCD_ID_GENERATION_SHIFT),
        "index 1, generation 1"
    );
    let entry = p.table().entries()[1];
    assert_eq!(entry.state, ProcState::Running);
    assert_eq!((entry.role, entry.flags), (Role::TEST, 0));
    assert_eq!(
        read_audit(&mut k, &mut p, base),
        launch_records(base, 101, 4, badge)
    );
}

#[test]
fn a_held_client_spawn_is_audited_with_the_clients_badge_on_release() {
    let (mut k, mut p) = with_child(envelope_flag::SPAWNER);
    let badge = child_badge(0).expect("badge");
    let depends_on = 1u64 << role::TIMED;
    let mut m = Message::new();
    let payload = m.start(procd_op::SPAWN, spawn_service_request::SIZE);
    write_u32(payload, spawn_service_request::IMAGE_ID, 4);
    write_u16(payload, spawn_service_request::ROLE, role::TEST);
    write_u64(payload, spawn_service_request::DEPENDS_ON, depends_on);
    let (st, reply_payload) = spawn(&mut k, &mut p, badge, m);
    assert_eq!(st, status::OK);
    assert_eq!(read_u32(&reply_payload, spawn_service_reply::PID), Some(0));
    assert_eq!(p.table().entries()[1].state, ProcState::Held);
    let base = p.audit().next_seq();
    let (st, _) = spawn(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        spawn_request(9, role::TIMED, 0),
    );
    assert_eq!(st, status::OK);
    assert_eq!(p.table().entries()[1].state, ProcState::Running);
    let records = read_audit(&mut k, &mut p, base);
    let held: Vec<_> = records
        .iter()
        .filter(|r| r.3 == p.table().entries()[1].pid)
        .collect();
    assert!(!held.is_empty());
    assert!(held.iter().all(|r| r.5 == badge));
    assert!(
        records
            .iter()
            .filter(|r| r.4 == role::TIMED)
            .all(|r| r.5 == BADGE_ROOTD)
    );
}

#[test]
fn spawn_from_anyone_but_a_running_spawner_child_is_denied() {
    let (mut k, mut p) = with_child(0);
    let base = abi::PROCD_CHILD_BADGE_BASE;
    for badge in [
        child_badge(0).expect("badge"), // a child without SPAWNER
        BADGE_ROOTD,
        0,
        base - 1,
        base + 1, // a free entry
        base + abi::PROCD_MAX_PROCESSES as u64,
        base + 0x1_0000,
        BADGE_KERNEL - 1,
    ] {
        let (st, payload) = spawn(
            &mut k,
            &mut p,
            badge,
            client_spawn_request(4, role::TEST, 0),
        );
        assert_eq!(st, status::DENIED, "badge {badge:#x}");
        assert!(payload.is_empty());
    }
    // DENIED comes before the payload checks.
    let mut short = client_spawn_request(4, role::TEST, 0);
    let mut h = short.header();
    h.payload_len = 3;
    short.set_header(&h);
    assert_eq!(spawn(&mut k, &mut p, BADGE_ROOTD, short).0, status::DENIED);
    assert!(k.requests.is_empty());
    assert_eq!(p.table().live().count(), 1);
}

#[test]
fn a_stopping_spawner_child_is_denied() {
    let (mut k, mut p) = with_child(envelope_flag::SPAWNER);
    let (st, _) = ask(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        process_req(procd_op::STOP, pid_of(0, 1)),
    );
    assert_eq!(st, status::OK);
    k.requests.clear();
    let badge = child_badge(0).expect("badge");
    let (st, _) = spawn(
        &mut k,
        &mut p,
        badge,
        client_spawn_request(4, role::TEST, 0),
    );
    assert_eq!(st, status::DENIED);
    assert!(k.requests.is_empty());
}

#[test]
fn a_client_cannot_spawn_privileged_services_or_spawners() {
    let (mut k, mut p) = with_child(envelope_flag::SPAWNER);
    let badge = child_badge(0).expect("badge");
    let cases = [
        client_spawn_request(4, role::TEST, envelope_flag::REQUIRED),
        client_spawn_request(4, role::TEST, envelope_flag::BOOTSTRAP_CRITICAL),
        client_spawn_request(4, role::TEST, envelope_flag::SPAWNER),
        client_spawn_request(4, role::TEST, envelope_flag::ALL),
        client_spawn_request(4, role::TIMED, 0),
        client_spawn_request(4, role::CRASHD, 0),
    ];
    for m in cases {
        let (st, payload) = spawn(&mut k, &mut p, badge, m);
        assert_eq!(st, status::DENIED);
        assert!(payload.is_empty());
    }
    assert!(k.requests.is_empty());
    assert_eq!(p.table().live().count(), 1);
}

#[test]
fn malformed_client_spawns_are_invalid() {
    let (mut k, mut p) = with_child(envelope_flag::SPAWNER);
    let badge = child_badge(0).expect("badge");
    let mut short = client_spawn_request(4, role::TEST, 0);
    let mut h = short.header();
    h.payload_len = 7;
    short.set_header(&h);
    let mut reserved0 = client_spawn_request(4, role::TEST, 0);
    let mut h = reserved0.header();
    h.reserved0 = 1;
    reserved0.set_header(&h);
    let cases = [
        short,
        reserved0,
        client_spawn_request(0, role::TEST, 0),
        client_spawn_request(4, 0x99, 0),
        client_spawn_request(4, role::ROOTD, 0),
        client_spawn_request(4, role::GENERIC, 0),
        client_spawn_request(4, role::TEST, envelope_flag::ALL + 1),
    ];
    for m in cases {
        let (st, payload) = spawn(&mut k, &mut p, badge, m);
        assert_eq!(st, status::INVALID_ARGUMENT);
        assert!(payload.is_empty());
    }
    assert!(k.requests.is_empty());
    assert_eq!(p.table().live().count(), 1);
}

/// A procd whose envelope says rootd started the services of `started` (bit r: role r) before it.
fn started_after(started: u32) -> (Model, Procd) {
    let mut b = EnvelopeBuilder::new(role::PROCD, envelope_flag::REQUIRED).expect("role");
    b.started_roles(started).expect("known roles");
    for (slot, purpose) in [
        (SELF_EP, cap_purpose::SELF_ENDPOINT),
        (KC, cap_purpose::KERNEL_CONTROL),
        (NOTIFY, cap_purpose::BOOTSTRAP_NOTIFY),
        (CRASHD, cap_purpose::CRASHD_ENDPOINT),
    ] {
        b.push(slot, purpose).expect("slot");
    }
    let mut out = vec![0u8; abi::ENVELOPE_MAX];
    let n = b.write(&mut out).expect("fits");
    let mut k = Model::new();
    let p = start(&mut k, Some(&out[..n])).expect("starts");
    k.log.clear();
    k.notified.clear();
    (k, p)
}

#[test]
fn a_dependency_rootd_started_is_satisfied_at_once() {
    let (mut k, mut p) = started_after(1 << role::MEMD | 1 << role::VSPACED);
    let deps = bit(role::MEMD) | bit(role::VSPACED);
    let test = spawned_reply(spawn(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        dep_request(4, role::TEST, 0, deps),
    ));
    assert_eq!((test.0, test.2), (100, pid_of(0, 1)));
    assert_eq!(
        kernel_ops(&k),
        [
            kernel_op::MINT_ENDPOINT,
            kernel_op::CREATE_PROCESS,
            kernel_op::START_PROCESS
        ]
    );
    // With a dependency procd runs, it is held for that one only.
    let held = spawned_reply(spawn(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        dep_request(6, role::TIMED, 0, bit(role::MEMD) | bit(role::NAMED)),
    ));
    assert_eq!(held.0, 0);
    assert_eq!(state_of(&mut k, &mut p, held.2).0, HELD);
}

#[test]
fn a_dependency_procd_never_runs_and_rootd_did_not_start_is_not_found() {
    // Roles procd never runs: rootd's own (ROOTD, MEMD, VSPACED, PAGERD) and PROCD.
    for never in [
        role::ROOTD,
        role::MEMD,
        role::VSPACED,
        role::PAGERD,
        role::PROCD,
    ] {
        let (mut k, mut p) = started_after(1 << role::PAGERD & !(1u32 << never));
        k.requests.clear();
        let m = dep_request(4, role::TEST, 0, bit(never) | bit(role::NAMED));
        assert_eq!(
            spawn(&mut k, &mut p, BADGE_ROOTD, m),
            (status::NOT_FOUND, vec![]),
            "{never}"
        );
        assert!(k.requests.is_empty(), "no kernel call");
        assert!(k.log.is_empty(), "nothing held");
        assert_eq!(p.table().free_index(), Some(0), "no entry taken");
    }
    // Unknown bits and the child's own role are still INVALID_ARGUMENT, checked first.
    let (mut k, mut p) = started_after(0);
    let m = dep_request(4, role::TEST, 0, bit(role::MEMD) | 1 << 40);
    assert_eq!(
        spawn(&mut k, &mut p, BADGE_ROOTD, m).0,
        status::INVALID_ARGUMENT
    );
}

#[test]
fn procd_never_spawns_the_roles_rootd_starts_itself() {
    for never in [role::MEMD, role::VSPACED, role::PAGERD] {
        let (mut k, mut p) = started_after(0);
        let m = spawn_request(4, never, 0);
        assert_eq!(
            spawn(&mut k, &mut p, BADGE_ROOTD, m),
            (status::INVALID_ARGUMENT, vec![]),
            "{never}"
        );
        assert!(k.requests.is_empty());
    }
}
