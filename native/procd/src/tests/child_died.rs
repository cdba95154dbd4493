//! CHILD_DIED: a child's death, its crashd report and its entry.

use super::*;

/// A CHILD_DIED message as the kernel sends it.
pub(super) fn child_died(pid: u32, kind: u16, code: u64, address: u64) -> Message {
    let mut m = Message::new();
    let p = m.start(kernel_event::CHILD_DIED, child_death::SIZE);
    write_u32(p, child_death::PID, pid);
    write_u16(p, child_death::KIND, kind);
    write_u64(p, child_death::CODE, code);
    write_u64(p, child_death::ADDRESS, address);
    m
}

/// Deliver a kernel event: it must get no reply.
pub(super) fn kernel_event(k: &mut Model, p: &mut Procd, mut m: Message) {
    assert_eq!(p.handle(k, BADGE_KERNEL, &mut m), Answer::Silent);
}

/// Spawn `n` TEST children (pids 100.., endpoints 7000..) and clear the model's logs.
pub(super) fn spawned(n: usize, crashd: bool) -> (Model, Procd) {
    let mut k = Model::new();
    let env = if crashd {
        procd_envelope()
    } else {
        envelope_bytes(&[
            (SELF_EP, cap_purpose::SELF_ENDPOINT),
            (KC, cap_purpose::KERNEL_CONTROL),
            (NOTIFY, cap_purpose::BOOTSTRAP_NOTIFY),
        ])
    };
    let mut p = start(&mut k, Some(&env)).expect("starts");
    for _ in 0..n {
        let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(4, role::TEST, 0));
        assert_eq!(st, status::OK);
    }
    k.log.clear();
    k.notified.clear();
    k.requests.clear();
    k.deleted.clear();
    (k, p)
}

pub(super) fn live_pids(p: &Procd) -> Vec<u32> {
    p.table().live().map(|e| e.pid).collect()
}

#[test]
fn an_exited_child_is_freed_and_its_endpoint_dropped() {
    let (mut k, mut p) = spawned(3, true);
    let entry = p.table().entries()[1];
    assert_eq!(entry.pid, 101);
    kernel_event(&mut k, &mut p, child_died(101, death_kind::EXITED, 0, 0));
    assert_eq!(k.log, ["procd: child 101 exited 0"]);
    assert_eq!(p.table().entries()[1].state, ProcState::Free);
    assert_eq!(p.table().entries()[1].generation.get(), 2);
    assert_eq!(live_pids(&p), [100, 102]);
    assert_eq!(k.deleted, [entry.endpoint_slot]);
    assert!(!k.caps.contains_key(&entry.endpoint_slot));
    assert!(k.sends.is_empty(), "an exit is not a crash");
    assert!(k.requests.is_empty());
    assert!(k.notified.is_empty());

    // A large exit code is logged in full (and, non-zero, is a failure).
    kernel_event(
        &mut k,
        &mut p,
        child_died(100, death_kind::EXITED, u64::MAX, 0),
    );
    assert_eq!(k.log[1], "procd: child 100 exited 18446744073709551615");
    assert_eq!(k.log[2], "procd: child 100 failed");
    assert_eq!(live_pids(&p), [102]);
}

#[test]
fn a_faulted_child_is_reported_to_crashd_once() {
    let (mut k, mut p) = spawned(2, true);
    let entry = p.table().entries()[0];
    kernel_event(
        &mut k,
        &mut p,
        child_died(
            100,
            death_kind::FAULTED,
            fault_kind::UNMAPPED_WRITE,
            0x40_1a2b,
        ),
    );
    assert_eq!(
        k.log,
        [
            "procd: child 100 faulted UNMAPPED_WRITE at 0x401a2b",
            "procd: child 100 failed"
        ]
    );
    assert_eq!(k.sends.len(), 1);
    let (slot, h, record) = &k.sends[0];
    assert_eq!(*slot, CRASHD);
    assert_eq!(
        *h,
        MessageHeader::new(crashd_op::REPORT, crash_record::SIZE as u16)
    );
    assert_eq!(record.len(), crash_record::SIZE);
    assert_eq!(read_u32(record, crash_record::PID), Some(100));
    assert_eq!(
        read_u16(record, crash_record::EVENT),
        Some(crash_event::KILLED)
    );
    assert_eq!(read_u16(record, crash_record::RESERVED), Some(0));
    assert_eq!(
        read_u64(record, crash_record::CODE),
        Some(fault_kind::UNMAPPED_WRITE)
    );
    assert_eq!(read_u64(record, crash_record::ADDRESS), Some(0x40_1a2b));
    assert_eq!(live_pids(&p), [101]);
    assert_eq!(k.deleted, [entry.endpoint_slot]);
    assert!(k.requests.is_empty(), "no CALL: crashd is told with SEND");

    // The same death again (the entry is held FAILED, not live): nothing more.
    let held = p.table().entries()[0];
    kernel_event(
        &mut k,
        &mut p,
        child_died(
            100,
            death_kind::FAULTED,
            fault_kind::UNMAPPED_WRITE,
            0x40_1a2b,
        ),
    );
    assert_eq!(k.sends.len(), 1);
    assert_eq!(k.log.len(), 2);
    assert_eq!(k.deleted.len(), 1);
    assert_eq!(p.table().entries()[0], held);
}

#[test]
fn a_faulted_child_without_crashd_is_only_logged_and_freed() {
    let (mut k, mut p) = spawned(1, false);
    let entry = p.table().entries()[0];
    kernel_event(
        &mut k,
        &mut p,
        child_died(
            100,
            death_kind::FAULTED,
            fault_kind::INVALID_OPCODE,
            0x40_0000,
        ),
    );
    assert_eq!(
        k.log,
        [
            "procd: child 100 faulted INVALID_OPCODE at 0x400000",
            "procd: child 100 failed"
        ]
    );
    assert!(k.sends.is_empty());
    assert_eq!(live_pids(&p), [] as [u32; 0]);
    assert_eq!(k.deleted, [entry.endpoint_slot]);
}

#[test]
fn every_fault_kind_is_named_and_an_unknown_one_is_hex() {
    let kinds = [
        fault_kind::UNMAPPED_READ,
        fault_kind::PROTECTED_FETCH,
        fault_kind::DIVIDE_ERROR,
        fault_kind::GENERAL_PROTECTION,
        fault_kind::CPU_EXCEPTION,
    ];
    for kind in kinds {
        let (mut k, mut p) = spawned(1, true);
        kernel_event(
            &mut k,
            &mut p,
            child_died(100, death_kind::FAULTED, kind, 0),
        );
        let name = fault_kind::name(kind).unwrap();
        assert_eq!(
            k.log,
            [
                format!("procd: child 100 faulted {name} at 0x0"),
                "procd: child 100 failed".to_string()
            ]
        );
        assert_eq!(
            p.table().entries()[0].state,
            ProcState::Failed {
                death: DeathKind::Faulted,
                code: kind as u32
            }
        );
        assert_eq!(read_u64(&k.sends[0].2, crash_record::CODE), Some(kind));
    }
    // A fault kind this procd does not know: still a kill, reported as is.
    let (mut k, mut p) = spawned(1, true);
    kernel_event(
        &mut k,
        &mut p,
        child_died(100, death_kind::FAULTED, 0x77, 0x1234),
    );
    assert_eq!(
        k.log,
        [
            "procd: child 100 faulted 0x77 at 0x1234",
            "procd: child 100 failed"
        ]
    );
    assert_eq!(read_u64(&k.sends[0].2, crash_record::CODE), Some(0x77));
    assert_eq!(live_pids(&p), [] as [u32; 0]);
}

#[test]
fn a_failed_crashd_report_is_logged_and_ignored() {
    for (code, shown) in [
        (status::DENIED, "DENIED"),
        (status::NOT_FOUND, "NOT_FOUND"),
        (0x99, "0x99"),
    ] {
        let (mut k, mut p) = spawned(2, true);
        k.send_status = code;
        kernel_event(
            &mut k,
            &mut p,
            child_died(101, death_kind::FAULTED, fault_kind::BREAKPOINT, 0x40_0010),
        );
        assert_eq!(
            k.log,
            [
                "procd: child 101 faulted BREAKPOINT at 0x400010".to_string(),
                format!("procd: crashd report failed {shown}"),
                "procd: child 101 failed".to_string(),
            ]
        );
        assert_eq!(k.sends.len(), 1);
        assert_eq!(live_pids(&p), [100]);
        assert!(
            matches!(p.table().entries()[1].state, ProcState::Failed { .. }),
            "the entry is held FAILED all the same"
        );
        assert_eq!(k.deleted.len(), 1);
    }
}

#[test]
fn a_report_crashd_is_not_waiting_for_is_dropped_logged_and_procd_goes_on() {
    let (mut k, mut p) = spawned(2, true);
    k.send_status = status::BUSY;
    kernel_event(&mut k, &mut p, fault(101));
    assert_eq!(
        k.log,
        [
            "procd: child 101 faulted UNMAPPED_READ at 0x400000",
            "procd: crashd report of child 101 dropped: crashd is not receiving",
            "procd: child 101 failed",
        ]
    );
    assert_eq!(k.sends.len(), 1, "one attempt, never retried");
    assert!(matches!(
        p.table().entries()[1].state,
        ProcState::Failed { .. }
    ));
    // procd goes on serving: the next request is answered.
    let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(4, role::TEST, 0));
    assert_eq!(st, status::OK);
}

#[test]
fn a_forged_child_died_is_denied_and_changes_nothing() {
    let (mut k, mut p) = spawned(2, true);
    let before: Vec<_> = p.table().entries().to_vec();
    let caps_before = k.caps.clone();
    for badge in [BADGE_ROOTD, 0, 2, BADGE_KERNEL - 1] {
        for kind in [death_kind::EXITED, death_kind::FAULTED] {
            let mut m = child_died(100, kind, fault_kind::UNMAPPED_READ, 0x1000);
            assert_eq!(p.handle(&mut k, badge, &mut m), Answer::Reply);
            assert_eq!(reply(&m), (status::DENIED, vec![]));
        }
    }
    assert_eq!(p.table().entries(), &before[..]);
    assert_eq!(k.caps, caps_before);
    assert!(k.deleted.is_empty());
    assert!(k.sends.is_empty());
    assert!(k.log.is_empty());
    assert!(k.requests.is_empty());

    // Forged with capabilities: they are deleted as for any request, and still DENIED.
    let mut m = child_died(100, death_kind::EXITED, 0, 0);
    k.deliver_caps(&mut m, 2);
    let delivered = m.header().cap_slots().to_vec();
    assert_eq!(p.handle(&mut k, BADGE_ROOTD, &mut m), Answer::Reply);
    assert_eq!(reply(&m).0, status::DENIED);
    assert_eq!(k.deleted, delivered);
    assert_eq!(p.table().entries(), &before[..]);
}

#[test]
fn child_died_for_an_unknown_pid_changes_nothing() {
    let (mut k, mut p) = spawned(2, true);
    // Free an entry so that a zeroed (pid 0) entry exists.
    kernel_event(&mut k, &mut p, child_died(100, death_kind::EXITED, 0, 0));
    k.log.clear();
    k.deleted.clear();
    let before: Vec<_> = p.table().entries().to_vec();
    let caps_before = k.caps.clone();
    for pid in [0, 1, 2, 99, 100, 102, u32::MAX] {
        for kind in [death_kind::EXITED, death_kind::FAULTED] {
            kernel_event(&mut k, &mut p, child_died(pid, kind, 1, 2));
        }
    }
    assert_eq!(p.table().entries(), &before[..]);
    assert_eq!(k.caps, caps_before);
    assert!(k.deleted.is_empty());
    assert!(k.sends.is_empty());
    assert!(k.log.is_empty());
}

#[test]
fn a_full_table_accepts_a_spawn_after_a_child_died() {
    let (mut k, mut p) = spawned(abi::PROCD_MAX_PROCESSES, true);
    let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(4, role::TEST, 0));
    assert_eq!(st, status::BUSY);
    let freed = p.table().entries()[5];
    assert_eq!(freed.pid, 105);
    kernel_event(&mut k, &mut p, child_died(105, death_kind::EXITED, 0, 0));
    assert_eq!(p.table().free_index(), Some(5));

    let (st, payload) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(4, role::TEST, 0));
    assert_eq!(st, status::OK);
    let pid = 100 + abi::PROCD_MAX_PROCESSES as u32;
    assert_eq!(read_u32(&payload, spawn_service_reply::PID), Some(pid));
    let reused = p.table().entries()[5];
    assert_eq!((reused.state, reused.pid), (ProcState::Running, pid));
    assert_eq!(p.table().live().count(), abi::PROCD_MAX_PROCESSES);
    // The kernel was free to put the new endpoint capability in the slot procd just emptied.
    assert_eq!(reused.endpoint_slot, freed.endpoint_slot);
    assert!(k.caps.contains_key(&reused.endpoint_slot));
    let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(4, role::TEST, 0));
    assert_eq!(st, status::BUSY);
}

#[test]
fn children_coming_and_going_never_fill_the_tables() {
    let (mut k, mut p) = spawned(0, true);
    for round in 0..(4 * abi::PROCD_MAX_PROCESSES as u32) {
        let (st, payload) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(4, role::TEST, 0));
        assert_eq!(st, status::OK, "round {round}");
        let pid = read_u32(&payload, spawn_service_reply::PID).unwrap();
        let id = read_u32(&payload, spawn_service_reply::ID).unwrap();
        if round % 2 == 0 {
            kernel_event(&mut k, &mut p, child_died(pid, death_kind::EXITED, 0, 0));
        } else {
            // A failure: held until rootd reaps it.
            kernel_event(&mut k, &mut p, child_died(pid, death_kind::FAULTED, 3, 0));
            assert_eq!(p.table().failed().count(), 1);
            assert_eq!(
                ask(&mut k, &mut p, BADGE_ROOTD, process_req(procd_op::REAP, id)).0,
                status::OK
            );
        }
        assert_eq!(p.table().live().count(), 0);
        assert_eq!(p.table().free_index(), Some(0));
    }
    // Only procd's own envelope capabilities remain.
    assert_eq!(
        k.caps.keys().copied().collect::<Vec<_>>(),
        [SELF_EP, KC, NOTIFY, CRASHD]
    );
    assert_eq!(k.sends.len(), 2 * abi::PROCD_MAX_PROCESSES);
}

#[test]
fn malformed_child_died_messages_are_ignored() {
    let (mut k, mut p) = spawned(2, true);
    let before: Vec<_> = p.table().entries().to_vec();
    let with_len = |len: u16| {
        let mut m = child_died(100, death_kind::FAULTED, fault_kind::UNMAPPED_READ, 0);
        let mut h = m.header();
        h.payload_len = len;
        m.set_header(&h);
        m
    };
    let cases = [
        with_len(0),
        with_len(child_death::SIZE as u16 - 1),
        with_len(child_death::SIZE as u16 + 1),
        with_len(abi::MSG_MAX_PAYLOAD as u16),
        with_len(u16::MAX),
        child_died(100, 0, 0, 0),
        child_died(100, death_kind::KILLED + 1, 0, 0),
        child_died(100, u16::MAX, 0, 0),
    ];
    for m in cases {
        kernel_event(&mut k, &mut p, m);
    }
    assert_eq!(p.table().entries(), &before[..]);
    assert!(k.deleted.is_empty());
    assert!(k.sends.is_empty());
    assert!(k.log.is_empty());

    // Capabilities along with it: they are deleted, the event is ignored.
    let mut m = child_died(100, death_kind::EXITED, 0, 0);
    k.deliver_caps(&mut m, 1);
    let delivered = m.header().cap_slots().to_vec();
    kernel_event(&mut k, &mut p, m);
    assert_eq!(k.deleted, delivered);
    assert_eq!(p.table().entries(), &before[..]);
    assert!(k.log.is_empty());
}

#[test]
fn other_kernel_badged_messages_are_ignored_without_reply() {
    let (mut k, mut p) = spawned(1, true);
    let before: Vec<_> = p.table().entries().to_vec();
    kernel_event(&mut k, &mut p, spawn_request(4, role::TEST, 0));
    let mut unknown = Message::new();
    unknown.start(kernel_event::CHILD_DIED + 1, 8);
    kernel_event(&mut k, &mut p, unknown);
    assert!(k.requests.is_empty());
    assert_eq!(p.table().entries(), &before[..]);
    assert!(k.log.is_empty());
    assert!(k.sends.is_empty());
}
