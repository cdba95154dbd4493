//! Failures held FAILED, SERVICE_FAILED and REAP.

use super::*;

/// A decoded process_status record of any state: (id, pid, image_id, role, state, flags, death,
/// code).
pub(super) fn full_record(record: &[u8]) -> (u32, u32, u32, u16, u16, u16, u16, u32) {
    assert_eq!(record.len(), process_status::SIZE);
    (
        read_u32(record, process_status::ID).unwrap(),
        read_u32(record, process_status::PID).unwrap(),
        read_u32(record, process_status::IMAGE_ID).unwrap(),
        read_u16(record, process_status::ROLE).unwrap(),
        read_u16(record, process_status::STATE).unwrap(),
        read_u16(record, process_status::FLAGS).unwrap(),
        read_u16(record, process_status::DEATH).unwrap(),
        read_u32(record, process_status::CODE).unwrap(),
    )
}

/// Spawn TEST children with `flags` each (pids 100.., ids index 0.. generation 1) and clear
/// the model's logs.
pub(super) fn spawned_with(flags: &[u16]) -> (Model, Procd) {
    let (mut k, mut p) = started();
    for &f in flags {
        let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(4, role::TEST, f));
        assert_eq!(st, status::OK);
    }
    k.log.clear();
    k.notified.clear();
    k.requests.clear();
    k.deleted.clear();
    (k, p)
}

pub(super) const FAILED: u16 = abi::proc_state::FAILED;

#[test]
fn every_kind_of_failure_is_held_failed_with_its_death_and_code() {
    // (how it dies, death, code recorded, its log line, reported to crashd)
    type Death = fn(&mut Model, &mut Procd);
    let cases: [(Death, u16, u32, &str, bool); 7] = [
        (
            |k, p| {
                kernel_event(
                    k,
                    p,
                    child_died(
                        100,
                        death_kind::FAULTED,
                        fault_kind::DIVIDE_ERROR,
                        0x40_0123,
                    ),
                )
            },
            death_kind::FAULTED,
            fault_kind::DIVIDE_ERROR as u32,
            "procd: child 100 faulted DIVIDE_ERROR at 0x400123",
            true,
        ),
        (
            |k, p| {
                let (st, _) = ask(k, p, BADGE_ROOTD, process_req(procd_op::KILL, pid_of(0, 1)));
                assert_eq!(st, status::OK);
                deliver_kills(k, p);
            },
            death_kind::KILLED,
            0,
            "procd: child 100 killed",
            true,
        ),
        (
            // Killed by someone else, whatever code the kernel gives.
            |k, p| kernel_event(k, p, child_died(100, death_kind::KILLED, 9, 9)),
            death_kind::KILLED,
            0,
            "procd: child 100 killed",
            true,
        ),
        (
            |k, p| kernel_event(k, p, child_died(100, death_kind::EXITED, 3, 0)),
            death_kind::EXITED,
            3,
            "procd: child 100 exited 3",
            false,
        ),
        (
            |k, p| kernel_event(k, p, child_died(100, death_kind::EXITED, 0xFFFF_FFFF, 0)),
            death_kind::EXITED,
            u32::MAX,
            "procd: child 100 exited 4294967295",
            false,
        ),
        (
            // An exit code beyond u32 saturates: it stays non-zero.
            |k, p| kernel_event(k, p, child_died(100, death_kind::EXITED, 1 << 32, 0)),
            death_kind::EXITED,
            u32::MAX,
            "procd: child 100 exited 4294967296",
            false,
        ),
        (
            // A fault kind this procd does not know is recorded as is.
            |k, p| kernel_event(k, p, child_died(100, death_kind::FAULTED, 0x77, 0)),
            death_kind::FAULTED,
            0x77,
            "procd: child 100 faulted 0x77 at 0x0",
            true,
        ),
    ];
    for (die, death, code, line, reported) in cases {
        let (mut k, mut p) = spawned_with(&[0, 0]);
        let entry = p.table().entries()[0];
        die(&mut k, &mut p);
        assert_eq!(k.log, [line, "procd: child 100 failed"], "{line}");
        let held = p.table().entries()[0];
        let failed = held
            .death_and_code()
            .map(|(death, code)| (death.wire(), code));
        assert_eq!(failed, Some((death, code)), "{line}");
        // It keeps its id, pid and place; procd no longer holds its endpoint.
        assert_eq!(
            (
                held.pid,
                held.generation,
                held.image_id,
                held.role,
                held.flags
            ),
            (
                entry.pid,
                entry.generation,
                entry.image_id,
                entry.role,
                entry.flags
            )
        );
        assert_eq!(held.endpoint_slot, 0);
        assert_eq!(k.deleted, [entry.endpoint_slot]);
        assert!(!k.caps.contains_key(&entry.endpoint_slot));
        assert_eq!(
            p.table().free_index(),
            Some(2),
            "a FAILED entry is not free"
        );
        assert_eq!(live_pids(&p), [101]);
        assert_eq!(p.table().failed().count(), 1);
        assert_eq!(k.sends.len(), usize::from(reported), "{line}");
        assert!(k.notified.is_empty(), "an optional service: no notify");
        // STATUS names it by its old id.
        let (st, record) = ask(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            process_req(procd_op::STATUS, pid_of(0, 1)),
        );
        assert_eq!(st, status::OK);
        assert_eq!(
            full_record(&record),
            (pid_of(0, 1), 100, 4, role::TEST, FAILED, 0, death, code)
        );
    }
}

#[test]
fn a_clean_exit_and_a_stop_still_free_the_entry() {
    let required = envelope_flag::REQUIRED;
    let (mut k, mut p) = spawned_with(&[required, required]);
    let (e0, e1) = (p.table().entries()[0], p.table().entries()[1]);
    kernel_event(&mut k, &mut p, child_died(100, death_kind::EXITED, 0, 0));
    let (st, _) = ask(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        process_req(procd_op::STOP, pid_of(1, 1)),
    );
    assert_eq!(st, status::OK);
    deliver_kills(&mut k, &mut p);
    assert_eq!(
        k.log,
        ["procd: child 100 exited 0", "procd: child 101 stopped"]
    );
    for i in 0..2 {
        let e = p.table().entries()[i];
        assert_eq!((e.state, e.generation.get()), (ProcState::Free, 2));
    }
    assert_eq!(k.deleted, [e0.endpoint_slot, e1.endpoint_slot]);
    assert_eq!(p.table().failed().count(), 0);
    assert!(k.notified.is_empty(), "no failure, no SERVICE_FAILED");
    assert!(k.sends.is_empty());
    assert_eq!(
        ask(&mut k, &mut p, BADGE_ROOTD, list_req()),
        (status::OK, vec![])
    );
}

#[test]
fn a_required_failure_notifies_service_failed_once_and_an_optional_one_does_not() {
    let (mut k, mut p) = spawned_with(&[
        envelope_flag::REQUIRED,
        0,
        envelope_flag::REQUIRED | envelope_flag::BOOTSTRAP_CRITICAL,
        envelope_flag::BOOTSTRAP_CRITICAL,
    ]);
    // The REQUIRED child faults: reported to crashd, then notified.
    kernel_event(
        &mut k,
        &mut p,
        child_died(
            100,
            death_kind::FAULTED,
            fault_kind::UNMAPPED_READ,
            0x40_0000,
        ),
    );
    assert_eq!(k.notified, [(NOTIFY, notify_bit::SERVICE_FAILED)]);
    assert_eq!(k.sends.len(), 1);
    assert_eq!(
        k.log,
        [
            "procd: child 100 faulted UNMAPPED_READ at 0x400000",
            "procd: child 100 failed"
        ]
    );
    // Its death again changes nothing: no second notify.
    kernel_event(
        &mut k,
        &mut p,
        child_died(
            100,
            death_kind::FAULTED,
            fault_kind::UNMAPPED_READ,
            0x40_0000,
        ),
    );
    assert_eq!(k.notified.len(), 1);
    assert_eq!(k.sends.len(), 1);

    // Optional services fail silently (but for the log); the rest goes on.
    kernel_event(&mut k, &mut p, child_died(101, death_kind::EXITED, 1, 0));
    kernel_event(&mut k, &mut p, child_died(103, death_kind::KILLED, 0, 0));
    assert_eq!(k.notified.len(), 1);
    assert_eq!(live_pids(&p), [102]);
    let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(4, role::TEST, 0));
    assert_eq!(st, status::OK);

    // A REQUIRED child killed by KILL: notified once more, and a failed NOTIFY is logged.
    k.notify_status = status::DENIED;
    k.log.clear();
    let (st, _) = ask(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        process_req(procd_op::KILL, pid_of(2, 1)),
    );
    assert_eq!(st, status::OK);
    deliver_kills(&mut k, &mut p);
    assert_eq!(
        k.notified,
        [
            (NOTIFY, notify_bit::SERVICE_FAILED),
            (NOTIFY, notify_bit::SERVICE_FAILED)
        ]
    );
    assert_eq!(
        k.log,
        [
            "procd: child 102 killed",
            "procd: child 102 failed",
            "procd: SERVICE_FAILED notify failed: DENIED"
        ]
    );
    assert!(matches!(
        p.table().entries()[2].state,
        ProcState::Failed { .. }
    ));
    // An unnamed status is shown in hex.
    let (mut k, mut p) = spawned_with(&[envelope_flag::REQUIRED]);
    k.notify_status = 0x99;
    kernel_event(&mut k, &mut p, child_died(100, death_kind::EXITED, 2, 0));
    assert_eq!(k.log[2], "procd: SERVICE_FAILED notify failed: 0x99");
}

#[test]
fn a_non_zero_exit_is_not_reported_to_crashd() {
    let (mut k, mut p) = spawned_with(&[0, envelope_flag::REQUIRED]);
    kernel_event(&mut k, &mut p, child_died(100, death_kind::EXITED, 5, 0));
    kernel_event(&mut k, &mut p, child_died(101, death_kind::EXITED, 6, 0));
    assert!(k.sends.is_empty());
    assert_eq!(p.table().failed().count(), 2);
    assert_eq!(k.notified, [(NOTIFY, notify_bit::SERVICE_FAILED)]);
}

#[test]
fn status_and_list_show_failed_entries_with_death_and_code() {
    let flags = envelope_flag::REQUIRED;
    let (mut k, mut p) = spawned_with(&[0, flags, 0, 0]);
    kernel_event(
        &mut k,
        &mut p,
        child_died(101, death_kind::FAULTED, fault_kind::BREAKPOINT, 0x40_0001),
    );
    kernel_event(&mut k, &mut p, child_died(102, death_kind::EXITED, 42, 0));
    let (st, _) = ask(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        process_req(procd_op::STOP, pid_of(3, 1)),
    );
    assert_eq!(st, status::OK);
    k.requests.clear();

    let (st, payload) = ask(&mut k, &mut p, BADGE_ROOTD, list_req());
    assert_eq!(st, status::OK);
    let records: Vec<_> = payload
        .chunks(process_status::SIZE)
        .map(full_record)
        .collect();
    use abi::proc_state::{RUNNING, STOPPING};
    let bp = fault_kind::BREAKPOINT as u32;
    assert_eq!(
        records,
        [
            (pid_of(0, 1), 100, 4, role::TEST, RUNNING, 0, 0, 0),
            (
                pid_of(1, 1),
                101,
                4,
                role::TEST,
                FAILED,
                flags,
                death_kind::FAULTED,
                bp
            ),
            (
                pid_of(2, 1),
                102,
                4,
                role::TEST,
                FAILED,
                0,
                death_kind::EXITED,
                42
            ),
            (pid_of(3, 1), 103, 4, role::TEST, STOPPING, 0, 0, 0),
        ]
    );
    for record in payload.chunks(process_status::SIZE) {
        let id = read_u32(record, process_status::ID).unwrap();
        let (st, one) = ask(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            process_req(procd_op::STATUS, id),
        );
        assert_eq!((st, &one[..]), (status::OK, record));
    }
    assert!(k.requests.is_empty());
}

#[test]
fn reap_frees_a_failed_entry_and_the_next_spawn_gets_the_next_generation() {
    let (mut k, mut p) = spawned_with(&[0, envelope_flag::REQUIRED]);
    kernel_event(&mut k, &mut p, child_died(101, death_kind::EXITED, 7, 0));
    let caps_before = k.caps.clone();
    k.log.clear();
    k.deleted.clear();
    k.notified.clear();
    let (st, record) = ask(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        process_req(procd_op::REAP, pid_of(1, 1)),
    );
    assert_eq!(st, status::OK);
    assert_eq!(
        full_record(&record),
        (
            pid_of(1, 1),
            101,
            4,
            role::TEST,
            FAILED,
            envelope_flag::REQUIRED,
            death_kind::EXITED,
            7
        )
    );
    let freed = p.table().entries()[1];
    assert_eq!((freed.state, freed.generation.get()), (ProcState::Free, 2));
    assert!(k.requests.is_empty(), "REAP asks the kernel nothing");
    assert!(k.deleted.is_empty(), "nothing left to delete");
    assert_eq!(k.caps, caps_before);
    assert!(k.notified.is_empty());
    assert!(k.log.is_empty());

    // The id is gone; the entry's next occupant gets generation 2.
    for op in [procd_op::REAP, procd_op::STATUS] {
        assert_eq!(
            ask(&mut k, &mut p, BADGE_ROOTD, process_req(op, pid_of(1, 1))),
            (status::NOT_FOUND, vec![])
        );
    }
    let (st, payload) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(4, role::TEST, 0));
    assert_eq!(st, status::OK);
    assert_eq!(
        read_u32(&payload, spawn_service_reply::ID),
        Some(pid_of(1, 2))
    );
    assert_eq!(
        ask(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            process_req(procd_op::REAP, pid_of(1, 1))
        ),
        (status::NOT_FOUND, vec![]),
        "the stale id never reaps the new occupant"
    );
}

#[test]
fn reap_of_a_running_or_stopping_entry_is_busy() {
    let (mut k, mut p) = spawned_with(&[0, 0]);
    let (st, _) = ask(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        process_req(procd_op::KILL, pid_of(1, 1)),
    );
    assert_eq!(st, status::OK);
    k.requests.clear();
    let before: Vec<_> = p.table().entries().to_vec();
    for id in [pid_of(0, 1), pid_of(1, 1)] {
        assert_eq!(
            ask(&mut k, &mut p, BADGE_ROOTD, process_req(procd_op::REAP, id)),
            (status::BUSY, vec![])
        );
    }
    assert_eq!(p.table().entries(), &before[..]);
    assert!(k.requests.is_empty());
    assert!(k.deleted.is_empty());
    // Once its death arrives (a KILL: a failure) it can be reaped.
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
}

#[test]
fn reap_of_a_stale_or_free_id_is_not_found() {
    let (mut k, mut p) = spawned_with(&[0, 0]);
    kernel_event(&mut k, &mut p, child_died(100, death_kind::EXITED, 0, 0));
    kernel_event(&mut k, &mut p, child_died(101, death_kind::EXITED, 1, 0));
    let before: Vec<_> = p.table().entries().to_vec();
    for id in [
        0,
        pid_of(0, 1),  // freed
        pid_of(0, 2),  // free: the next occupant's
        pid_of(1, 2),  // not the FAILED occupant's generation
        pid_of(2, 1),  // never used
        pid_of(31, 1), // never used, the last entry
        pid_of(abi::PROCD_MAX_PROCESSES as u32, 1),
        u32::MAX,
    ] {
        assert_eq!(
            ask(&mut k, &mut p, BADGE_ROOTD, process_req(procd_op::REAP, id)),
            (status::NOT_FOUND, vec![]),
            "id {id:#x}"
        );
    }
    assert_eq!(p.table().entries(), &before[..]);
}

#[test]
fn stop_or_kill_of_a_failed_entry_is_not_found() {
    let (mut k, mut p) = spawned_with(&[0]);
    kernel_event(
        &mut k,
        &mut p,
        child_died(100, death_kind::FAULTED, fault_kind::INVALID_OPCODE, 0),
    );
    let before: Vec<_> = p.table().entries().to_vec();
    k.requests.clear();
    for op in [procd_op::STOP, procd_op::KILL] {
        assert_eq!(
            ask(&mut k, &mut p, BADGE_ROOTD, process_req(op, pid_of(0, 1))),
            (status::NOT_FOUND, vec![])
        );
    }
    assert!(k.requests.is_empty(), "nothing to end: no KILL_PROCESS");
    assert_eq!(p.table().entries(), &before[..]);
    // It is still held, and still reapable.
    assert_eq!(
        ask(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            process_req(procd_op::REAP, pid_of(0, 1))
        )
        .0,
        status::OK
    );
}

#[test]
fn reap_from_anyone_but_rootd_is_denied_first() {
    let (mut k, mut p) = spawned_with(&[0]);
    kernel_event(&mut k, &mut p, child_died(100, death_kind::EXITED, 1, 0));
    let before: Vec<_> = p.table().entries().to_vec();
    for badge in [0, 2, child_badge(0).unwrap(), BADGE_KERNEL - 1] {
        let mut bad = process_req(procd_op::REAP, pid_of(0, 1));
        write_u32(bad.payload_area_mut(), process_request::RESERVED, 1);
        for m in [process_req(procd_op::REAP, pid_of(0, 1)), bad] {
            assert_eq!(ask(&mut k, &mut p, badge, m), (status::DENIED, vec![]));
        }
    }
    assert_eq!(p.table().entries(), &before[..]);
    // From the kernel's badge it is no request at all.
    kernel_event(&mut k, &mut p, process_req(procd_op::REAP, pid_of(0, 1)));
    assert_eq!(p.table().entries(), &before[..]);
}

#[test]
fn a_table_full_of_failed_entries_is_busy_until_one_is_reaped() {
    let (mut k, mut p) = spawned(abi::PROCD_MAX_PROCESSES, true);
    for pid in 100..100 + abi::PROCD_MAX_PROCESSES as u32 {
        kernel_event(&mut k, &mut p, child_died(pid, death_kind::EXITED, 1, 0));
    }
    assert_eq!(p.table().live().count(), 0);
    assert_eq!(p.table().failed().count(), abi::PROCD_MAX_PROCESSES);
    // Only procd's own capabilities are left.
    assert_eq!(
        k.caps.keys().copied().collect::<Vec<_>>(),
        [SELF_EP, KC, NOTIFY, CRASHD]
    );
    k.requests.clear();
    let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(4, role::TEST, 0));
    assert_eq!(st, status::BUSY);
    assert!(k.requests.is_empty());
    // LIST shows them all.
    let (st, payload) = ask(&mut k, &mut p, BADGE_ROOTD, list_req());
    assert_eq!(st, status::OK);
    assert_eq!(
        payload.len(),
        abi::PROCD_MAX_PROCESSES * process_status::SIZE
    );
    assert!(
        payload
            .chunks(process_status::SIZE)
            .all(|r| read_u16(r, process_status::STATE) == Some(FAILED))
    );

    let (st, _) = ask(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        process_req(procd_op::REAP, pid_of(7, 1)),
    );
    assert_eq!(st, status::OK);
    let (st, payload) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(4, role::TEST, 0));
    assert_eq!(st, status::OK);
    assert_eq!(
        read_u32(&payload, spawn_service_reply::ID),
        Some(pid_of(7, 2))
    );
    let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(4, role::TEST, 0));
    assert_eq!(st, status::BUSY);
}

#[test]
fn probe_complete_from_a_failed_childs_badge_is_denied() {
    let (mut k, mut p) = spawned_with(&[0]);
    kernel_event(&mut k, &mut p, child_died(100, death_kind::EXITED, 1, 0));
    k.notified.clear();
    assert_eq!(
        probe_from(&mut k, &mut p, child_badge(0).unwrap(), probe()),
        status::DENIED
    );
    assert!(k.notified.is_empty());
}
