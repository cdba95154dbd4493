//! STOP and KILL.

use super::*;

#[test]
fn stop_ends_the_child_and_its_death_is_not_reported() {
    let (mut k, mut p) = spawned(2, true);
    let entry = p.table().entries()[0];
    let (st, payload) = ask(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        process_req(procd_op::STOP, pid_of(0, 1)),
    );
    assert_eq!((st, payload), (status::OK, vec![]));
    // One KILL_PROCESS for the child's pid, reserved 0.
    assert_eq!(kernel_ops(&k), [kernel_op::KILL_PROCESS]);
    let kill = &k.requests[0].1;
    assert_eq!(kill.len(), kill_request::SIZE);
    assert_eq!(read_u32(kill, kill_request::PID), Some(100));
    assert_eq!(read_u32(kill, kill_request::RESERVED), Some(0));
    assert_eq!(
        p.table().entries()[0].state,
        ProcState::Stopping(Ending::Stop)
    );
    assert!(k.log.is_empty());
    assert!(k.sends.is_empty());
    assert!(
        k.deleted.is_empty(),
        "the endpoint stays until the death arrives"
    );

    deliver_kills(&mut k, &mut p);
    assert_eq!(k.log, ["procd: child 100 stopped"]);
    assert!(k.sends.is_empty(), "a stop is not a crash");
    assert_eq!(p.table().entries()[0].state, ProcState::Free);
    assert_eq!(p.table().entries()[0].generation.get(), 2);
    assert_eq!(k.deleted, [entry.endpoint_slot]);
    assert_eq!(live_pids(&p), [101]);
    assert_eq!(kernel_ops(&k), [kernel_op::KILL_PROCESS], "no more calls");
    assert_eq!(
        ask(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            process_req(procd_op::STATUS, pid_of(0, 1))
        ),
        (status::NOT_FOUND, vec![])
    );
}

#[test]
fn kill_ends_the_child_and_its_death_is_reported_once() {
    let (mut k, mut p) = spawned(2, true);
    let entry = p.table().entries()[1];
    let (st, _) = ask(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        process_req(procd_op::KILL, pid_of(1, 1)),
    );
    assert_eq!(st, status::OK);
    assert_eq!(kernel_ops(&k), [kernel_op::KILL_PROCESS]);
    assert_eq!(read_u32(&k.requests[0].1, kill_request::PID), Some(101));
    assert_eq!(
        p.table().entries()[1].state,
        ProcState::Stopping(Ending::Kill)
    );
    assert!(k.sends.is_empty(), "reported when the death arrives");

    deliver_kills(&mut k, &mut p);
    assert_eq!(
        k.log,
        ["procd: child 101 killed", "procd: child 101 failed"]
    );
    assert_eq!(k.sends.len(), 1);
    let (slot, h, record) = &k.sends[0];
    assert_eq!(*slot, CRASHD);
    assert_eq!(
        *h,
        MessageHeader::new(crashd_op::REPORT, crash_record::SIZE as u16)
    );
    assert_eq!(read_u32(record, crash_record::PID), Some(101));
    assert_eq!(
        read_u16(record, crash_record::EVENT),
        Some(crash_event::KILLED)
    );
    assert_eq!(read_u16(record, crash_record::RESERVED), Some(0));
    assert_eq!(read_u64(record, crash_record::CODE), Some(0));
    assert_eq!(read_u64(record, crash_record::ADDRESS), Some(0));
    assert_eq!(live_pids(&p), [100]);
    assert_eq!(k.deleted, [entry.endpoint_slot]);

    // The same death again: the entry is no longer live, nothing more.
    kernel_event(&mut k, &mut p, child_died(101, death_kind::KILLED, 0, 0));
    assert_eq!(k.sends.len(), 1);
    assert_eq!(k.log.len(), 2);
    assert_eq!(k.deleted.len(), 1);
}

#[test]
fn a_kill_without_crashd_is_only_logged_and_freed() {
    let (mut k, mut p) = spawned(1, false);
    let (st, _) = ask(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        process_req(procd_op::KILL, pid_of(0, 1)),
    );
    assert_eq!(st, status::OK);
    deliver_kills(&mut k, &mut p);
    assert_eq!(
        k.log,
        ["procd: child 100 killed", "procd: child 100 failed"]
    );
    assert!(k.sends.is_empty());
    assert_eq!(live_pids(&p), [] as [u32; 0]);
}

#[test]
fn a_kill_procd_did_not_ask_for_is_reported_and_a_failed_report_logged() {
    let (mut k, mut p) = spawned(2, true);
    // The kernel's word, code and address as given: procd reports 0 and 0.
    kernel_event(&mut k, &mut p, child_died(100, death_kind::KILLED, 5, 6));
    assert_eq!(
        k.log,
        ["procd: child 100 killed", "procd: child 100 failed"]
    );
    assert_eq!(k.sends.len(), 1);
    assert_eq!(read_u32(&k.sends[0].2, crash_record::PID), Some(100));
    assert_eq!(read_u64(&k.sends[0].2, crash_record::CODE), Some(0));
    assert_eq!(read_u64(&k.sends[0].2, crash_record::ADDRESS), Some(0));
    assert_eq!(live_pids(&p), [101]);

    k.send_status = status::DENIED;
    let (st, _) = ask(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        process_req(procd_op::KILL, pid_of(1, 1)),
    );
    assert_eq!(st, status::OK);
    deliver_kills(&mut k, &mut p);
    assert_eq!(
        k.log[2..],
        [
            "procd: child 101 killed",
            "procd: crashd report failed DENIED",
            "procd: child 101 failed"
        ]
    );
    assert_eq!(live_pids(&p), [] as [u32; 0]);
}

#[test]
fn a_stopping_child_that_dies_otherwise_is_handled_by_its_death() {
    // A (broken) kernel's EXITED or FAULTED for a child procd asked to stop.
    let (mut k, mut p) = spawned(2, true);
    for id in [pid_of(0, 1), pid_of(1, 1)] {
        let (st, _) = ask(&mut k, &mut p, BADGE_ROOTD, process_req(procd_op::STOP, id));
        assert_eq!(st, status::OK);
    }
    kernel_event(&mut k, &mut p, child_died(100, death_kind::EXITED, 3, 0));
    kernel_event(
        &mut k,
        &mut p,
        child_died(101, death_kind::FAULTED, fault_kind::BREAKPOINT, 0x40_0001),
    );
    assert_eq!(
        k.log,
        [
            "procd: child 100 exited 3",
            "procd: child 100 failed",
            "procd: child 101 faulted BREAKPOINT at 0x400001",
            "procd: child 101 failed"
        ]
    );
    assert_eq!(k.sends.len(), 1, "a fault is reported whatever procd asked");
    assert_eq!(live_pids(&p), [] as [u32; 0]);
    assert_eq!(p.table().failed().count(), 2);
    // Their KILLED deaths, if they came too late, change nothing.
    let held: Vec<_> = p.table().entries().to_vec();
    deliver_kills(&mut k, &mut p);
    assert_eq!(k.log.len(), 4);
    assert_eq!(k.sends.len(), 1);
    assert_eq!(p.table().entries(), &held[..]);
}

#[test]
fn stop_or_kill_of_a_stopping_process_is_busy() {
    for first in [procd_op::STOP, procd_op::KILL] {
        let (mut k, mut p) = spawned(1, true);
        let id = pid_of(0, 1);
        assert_eq!(
            ask(&mut k, &mut p, BADGE_ROOTD, process_req(first, id)).0,
            status::OK
        );
        let state = p.table().entries()[0].state;
        for again in [procd_op::STOP, procd_op::KILL] {
            assert_eq!(
                ask(&mut k, &mut p, BADGE_ROOTD, process_req(again, id)),
                (status::BUSY, vec![])
            );
        }
        assert_eq!(k.requests.len(), 1, "one KILL_PROCESS only");
        assert_eq!(
            p.table().entries()[0].state,
            state,
            "the first request stands"
        );
        // STATUS still answers while it stops.
        assert_eq!(
            ask(
                &mut k,
                &mut p,
                BADGE_ROOTD,
                process_req(procd_op::STATUS, id)
            )
            .0,
            status::OK
        );
        deliver_kills(&mut k, &mut p);
        let expected = if first == procd_op::STOP { 0 } else { 1 };
        assert_eq!(k.sends.len(), expected);
        assert_eq!(
            ask(&mut k, &mut p, BADGE_ROOTD, process_req(first, id)),
            (status::NOT_FOUND, vec![])
        );
    }
}

#[test]
fn a_refused_kill_process_is_passed_through() {
    for code in [
        status::NOT_FOUND,
        status::DENIED,
        status::INVALID_ARGUMENT,
        status::INTERNAL,
        0x1234,
    ] {
        for op in [procd_op::STOP, procd_op::KILL] {
            let (mut k, mut p) = spawned(1, true);
            let before: Vec<_> = p.table().entries().to_vec();
            k.kill_status = code;
            assert_eq!(
                ask(&mut k, &mut p, BADGE_ROOTD, process_req(op, pid_of(0, 1))),
                (code, vec![])
            );
            assert_eq!(kernel_ops(&k), [kernel_op::KILL_PROCESS]);
            assert_eq!(p.table().entries(), &before[..], "the entry is unchanged");
            assert!(k.deleted.is_empty());
            // A later request goes through.
            k.kill_status = status::OK;
            assert_eq!(
                ask(&mut k, &mut p, BADGE_ROOTD, process_req(op, pid_of(0, 1))).0,
                status::OK
            );
        }
    }

    // The kernel's own refusals: the child is already dead (its CHILD_DIED still queued), or
    // not procd's.
    let (mut k, mut p) = spawned(2, true);
    k.alive.remove(&100);
    k.alive.remove(&101);
    k.foreign.insert(101);
    assert_eq!(
        ask(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            process_req(procd_op::STOP, pid_of(0, 1))
        )
        .0,
        status::NOT_FOUND
    );
    assert_eq!(
        ask(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            process_req(procd_op::KILL, pid_of(1, 1))
        )
        .0,
        status::DENIED
    );
    assert_eq!(p.table().entries()[0].state, ProcState::Running);
    // The queued death then frees the entry as usual.
    kernel_event(&mut k, &mut p, child_died(100, death_kind::EXITED, 0, 0));
    assert_eq!(live_pids(&p), [101]);

    // The CALL itself failing.
    let (mut k, mut p) = spawned(1, true);
    k.call_status = status::DENIED;
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
    assert_eq!(p.table().entries()[0].state, ProcState::Running);
}

#[test]
fn stale_and_unknown_ids_are_not_found() {
    let (mut k, mut p) = spawned(2, true);
    kernel_event(&mut k, &mut p, child_died(101, death_kind::EXITED, 0, 0));
    k.log.clear();
    k.deleted.clear();
    let before: Vec<_> = p.table().entries().to_vec();
    let ids = [
        0,
        pid_of(0, 0),
        pid_of(0, 2),
        pid_of(0, 0xFFFF),
        pid_of(1, 1), // freed
        pid_of(1, 2), // free: the next occupant's
        pid_of(2, 1), // never used
        pid_of(abi::PROCD_MAX_PROCESSES as u32, 1),
        pid_of(0xFFFF, 1),
        pid_of(0x20, 1),
        u32::MAX,
    ];
    for id in ids {
        for op in [
            procd_op::STATUS,
            procd_op::STOP,
            procd_op::KILL,
            procd_op::REAP,
        ] {
            assert_eq!(
                ask(&mut k, &mut p, BADGE_ROOTD, process_req(op, id)),
                (status::NOT_FOUND, vec![]),
                "op {op:#x} id {id:#x}"
            );
        }
    }
    assert!(k.requests.is_empty());
    assert_eq!(p.table().entries(), &before[..]);
    assert!(k.log.is_empty());
    assert!(k.sends.is_empty());
}

#[test]
fn rootd_ops_from_anyone_else_are_denied() {
    let (mut k, mut p) = spawned(2, true);
    let before: Vec<_> = p.table().entries().to_vec();
    let malformed = |op| {
        let mut m = process_req(op, pid_of(0, 1));
        m.start(op, 3);
        m
    };
    for badge in [
        0,
        2,
        child_badge(0).unwrap(),
        child_badge(1).unwrap(),
        BADGE_KERNEL - 1,
        0x8000_0000_0000_0001,
    ] {
        for m in [
            process_req(procd_op::STOP, pid_of(0, 1)),
            process_req(procd_op::KILL, pid_of(0, 1)),
            process_req(procd_op::STATUS, pid_of(0, 1)),
            process_req(procd_op::REAP, pid_of(0, 1)),
            list_req(),
            // DENIED comes before the payload checks.
            malformed(procd_op::STOP),
            malformed(procd_op::KILL),
            malformed(procd_op::STATUS),
            malformed(procd_op::REAP),
            malformed(procd_op::LIST),
            process_req(procd_op::STOP, u32::MAX),
        ] {
            assert_eq!(
                ask(&mut k, &mut p, badge, m),
                (status::DENIED, vec![]),
                "badge {badge:#x}"
            );
        }
        // With capabilities: deleted, still DENIED.
        let mut m = process_req(procd_op::KILL, pid_of(0, 1));
        k.deliver_caps(&mut m, 2);
        let delivered = m.header().cap_slots().to_vec();
        assert_eq!(ask(&mut k, &mut p, badge, m).0, status::DENIED);
        assert!(delivered.iter().all(|s| !k.caps.contains_key(s)));
    }
    assert!(k.requests.is_empty());
    assert_eq!(p.table().entries(), &before[..]);
    assert!(k.notified.is_empty());

    // From the kernel's badge they are no requests at all: ignored, no reply.
    for m in [
        process_req(procd_op::KILL, pid_of(0, 1)),
        process_req(procd_op::STOP, pid_of(0, 1)),
        list_req(),
    ] {
        kernel_event(&mut k, &mut p, m);
    }
    assert!(k.requests.is_empty());
    assert_eq!(p.table().entries(), &before[..]);
}

#[test]
fn malformed_rootd_ops_are_invalid() {
    let (mut k, mut p) = spawned(2, true);
    let before: Vec<_> = p.table().entries().to_vec();
    let with = |mut m: Message, f: &dyn Fn(&mut MessageHeader)| {
        let mut h = m.header();
        f(&mut h);
        m.set_header(&h);
        m
    };
    for op in [
        procd_op::STOP,
        procd_op::KILL,
        procd_op::STATUS,
        procd_op::REAP,
    ] {
        let good = || process_req(op, pid_of(0, 1));
        let mut reserved = good();
        write_u32(reserved.payload_area_mut(), process_request::RESERVED, 1);
        let mut high_reserved = good();
        write_u32(
            high_reserved.payload_area_mut(),
            process_request::RESERVED,
            0x8000_0000,
        );
        let cases = [
            with(good(), &|h| h.payload_len = 0),
            with(good(), &|h| h.payload_len = 4),
            with(good(), &|h| h.payload_len = 7),
            with(good(), &|h| h.payload_len = 9),
            with(good(), &|h| h.payload_len = 16),
            with(good(), &|h| h.payload_len = process_status::SIZE as u16),
            with(good(), &|h| h.payload_len = u16::MAX),
            with(good(), &|h| h.reserved0 = 1),
            with(good(), &|h| h.reserved1 = 1 << 40),
            // Claims capabilities that are not in the table.
            with(good(), &|h| h.cap_count = 1),
            reserved,
            high_reserved,
        ];
        for m in cases {
            assert_eq!(
                ask(&mut k, &mut p, BADGE_ROOTD, m),
                (status::INVALID_ARGUMENT, vec![]),
                "op {op:#x}"
            );
        }
        // With real capabilities: deleted, INVALID_ARGUMENT.
        let mut m = good();
        k.deliver_caps(&mut m, 3);
        let delivered = m.header().cap_slots().to_vec();
        assert_eq!(
            ask(&mut k, &mut p, BADGE_ROOTD, m).0,
            status::INVALID_ARGUMENT
        );
        assert!(delivered.iter().all(|s| k.deleted.contains(s)));
    }
    for m in [
        with(list_req(), &|h| h.payload_len = 1),
        with(list_req(), &|h| {
            h.payload_len = process_request::SIZE as u16
        }),
        with(list_req(), &|h| h.payload_len = u16::MAX),
        with(list_req(), &|h| h.reserved0 = 1),
        with(list_req(), &|h| h.reserved1 = 1),
        with(list_req(), &|h| h.cap_count = 2),
    ] {
        assert_eq!(
            ask(&mut k, &mut p, BADGE_ROOTD, m),
            (status::INVALID_ARGUMENT, vec![]),
            "LIST"
        );
    }
    let mut m = list_req();
    k.deliver_caps(&mut m, 1);
    let delivered = m.header().cap_slots().to_vec();
    assert_eq!(
        ask(&mut k, &mut p, BADGE_ROOTD, m).0,
        status::INVALID_ARGUMENT
    );
    assert!(delivered.iter().all(|s| k.deleted.contains(s)));

    assert!(k.requests.is_empty());
    assert_eq!(p.table().entries(), &before[..]);
    assert!(k.log.is_empty());
}

#[test]
fn stopped_and_killed_children_come_and_go_without_filling_the_tables() {
    let (mut k, mut p) = spawned(0, true);
    for round in 0..(4 * abi::PROCD_MAX_PROCESSES as u32) {
        let (st, payload) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(4, role::TEST, 0));
        assert_eq!(st, status::OK, "round {round}");
        let id = read_u32(&payload, spawn_service_reply::ID).unwrap();
        assert_eq!(id, pid_of(0, round + 1));
        let op = if round % 2 == 0 {
            procd_op::STOP
        } else {
            procd_op::KILL
        };
        assert_eq!(
            ask(&mut k, &mut p, BADGE_ROOTD, process_req(op, id)).0,
            status::OK
        );
        deliver_kills(&mut k, &mut p);
        if op == procd_op::KILL {
            // A KILL is a failure: held until rootd reaps it.
            assert_eq!(
                ask(&mut k, &mut p, BADGE_ROOTD, process_req(procd_op::REAP, id)).0,
                status::OK
            );
        }
        assert_eq!(p.table().live().count(), 0);
        assert_eq!(p.table().free_index(), Some(0));
    }
    assert_eq!(
        k.caps.keys().copied().collect::<Vec<_>>(),
        [SELF_EP, KC, NOTIFY, CRASHD]
    );
    assert_eq!(
        k.sends.len(),
        2 * abi::PROCD_MAX_PROCESSES,
        "the kills only"
    );
}
