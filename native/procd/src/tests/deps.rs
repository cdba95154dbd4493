//! Dependency order: HELD entries, their release and their failure.

use super::*;

pub(super) const HELD: u16 = abi::proc_state::HELD;

/// A SPAWN_SERVICE request for `image_id`, `role`, `flags`, held until the roles of
/// `depends_on` run.
pub(super) fn dep_request(image_id: u32, role: u16, flags: u16, depends_on: u64) -> Message {
    let mut m = spawn_request(image_id, role, flags);
    write_u64(
        m.payload_area_mut(),
        spawn_service_request::DEPENDS_ON,
        depends_on,
    );
    m
}

pub(super) fn bit(r: u16) -> u64 {
    1 << r
}

/// The (pid, endpoint, id) of an OK SPAWN_SERVICE reply.
pub(super) fn spawned_reply(reply: (u32, Vec<u8>)) -> (u32, u32, u32) {
    let (st, payload) = reply;
    assert_eq!(st, status::OK);
    assert_eq!(payload.len(), spawn_service_reply::SIZE);
    assert_eq!(read_u32(&payload, spawn_service_reply::RESERVED), Some(0));
    (
        read_u32(&payload, spawn_service_reply::PID).unwrap(),
        read_u32(&payload, spawn_service_reply::ENDPOINT).unwrap(),
        read_u32(&payload, spawn_service_reply::ID).unwrap(),
    )
}

/// The (state, pid, death, code) STATUS reports for `id`.
pub(super) fn state_of(k: &mut Model, p: &mut Procd, id: u32) -> (u16, u32, u16, u32) {
    let (st, record) = status_of(k, p, id);
    assert_eq!(st, status::OK);
    (
        read_u16(&record, process_status::STATE).unwrap(),
        read_u32(&record, process_status::PID).unwrap(),
        read_u16(&record, process_status::DEATH).unwrap(),
        read_u32(&record, process_status::CODE).unwrap(),
    )
}

#[test]
fn a_spawn_is_held_until_its_dependency_runs() {
    let (mut k, mut p) = started();
    let held = spawned_reply(spawn(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        dep_request(4, role::TEST, 0, bit(role::TIMED)),
    ));
    assert_eq!(held, (0, 0, pid_of(0, 1)));
    assert_eq!(
        k.log,
        ["procd: holding test until its dependencies run".to_string()]
    );
    assert!(k.requests.is_empty(), "no kernel calls");
    assert_eq!(p.audit().records().count(), 0, "no audit record yet");
    assert_eq!(state_of(&mut k, &mut p, held.2), (HELD, 0, 0, 0));
    let (st, listed) = ask(&mut k, &mut p, BADGE_ROOTD, list_req());
    assert_eq!(st, status::OK);
    assert_eq!(status_record(&listed), (held.2, 0, 4, role::TEST, HELD, 0));
    assert_eq!(
        ask(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            process_req(procd_op::REAP, held.2)
        ),
        (status::BUSY, vec![])
    );
    // A probe from the held entry's badge: nothing lives there.
    assert_eq!(
        probe_from(&mut k, &mut p, child_badge(0).unwrap(), probe()),
        status::DENIED
    );
    k.log.clear();

    // TIMED has no dependencies: spawned now, and then the held TEST is released.
    let timed = spawned_reply(spawn(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        dep_request(6, role::TIMED, 0, 0),
    ));
    assert_eq!((timed.0, timed.2), (100, pid_of(1, 1)));
    assert_eq!(
        kernel_ops(&k),
        [
            kernel_op::CREATE_PROCESS,
            kernel_op::START_PROCESS,
            kernel_op::MINT_ENDPOINT,
            kernel_op::CREATE_PROCESS,
            kernel_op::START_PROCESS,
        ]
    );
    assert_eq!(k.log, ["procd: releasing test (pid 101)".to_string()]);
    assert_eq!(state_of(&mut k, &mut p, held.2), (RUNNING_STATE, 101, 0, 0));
    let entry = p.table().entries()[0];
    assert_eq!(
        (entry.image_id, entry.role, entry.generation.get()),
        (4, Role::TEST, 1)
    );
    // The released launch is audited as rootd's, with its own pid.
    let test_records: Vec<_> = p
        .audit()
        .records()
        .filter(|r| r.pid == 101)
        .map(|r| (r.action, r.requester))
        .collect();
    assert_eq!(
        test_records.first(),
        Some(&(audit_action::CREATE, BADGE_ROOTD))
    );
    assert_eq!(
        test_records.last(),
        Some(&(audit_action::START, BADGE_ROOTD))
    );
    assert!(test_records.iter().all(|r| r.1 == BADGE_ROOTD));
    // PROBE_COMPLETE from the released child works.
    assert_eq!(
        probe_from(&mut k, &mut p, child_badge(0).unwrap(), probe()),
        status::OK
    );
}

pub(super) const RUNNING_STATE: u16 = abi::proc_state::RUNNING;

#[test]
fn a_satisfied_dependency_spawns_at_once() {
    let (mut k, mut p) = started();
    spawned_reply(spawn(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        dep_request(6, role::TIMED, 0, 0),
    ));
    k.requests.clear();
    k.log.clear();
    let test = spawned_reply(spawn(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        dep_request(4, role::TEST, 0, bit(role::TIMED)),
    ));
    assert_eq!((test.0, test.2), (101, pid_of(1, 1)));
    assert_eq!(
        kernel_ops(&k),
        [
            kernel_op::MINT_ENDPOINT,
            kernel_op::CREATE_PROCESS,
            kernel_op::START_PROCESS
        ]
    );
    assert!(k.log.is_empty());
}

#[test]
fn a_chain_is_released_in_dependency_order() {
    let (mut k, mut p) = started();
    // TEST depends on NAMED, NAMED on TIMED.
    let test = spawned_reply(spawn(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        dep_request(4, role::TEST, 0, bit(role::NAMED)),
    ));
    let named = spawned_reply(spawn(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        dep_request(5, role::NAMED, 0, bit(role::TIMED)),
    ));
    assert_eq!((test.2, named.2), (pid_of(0, 1), pid_of(1, 1)));
    assert!(k.requests.is_empty());
    k.log.clear();
    spawned_reply(spawn(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        dep_request(6, role::TIMED, 0, 0),
    ));
    assert_eq!(
        k.log,
        [
            "procd: releasing named (pid 101)".to_string(),
            "procd: releasing test (pid 102)".to_string(),
        ]
    );
    let created: Vec<u32> = k
        .requests
        .iter()
        .filter(|r| r.0 == kernel_op::CREATE_PROCESS)
        .map(|r| read_u32(&r.1, create_process_request::IMAGE_ID).unwrap())
        .collect();
    assert_eq!(created, [6, 5, 4]);
    assert_eq!(state_of(&mut k, &mut p, named.2).1, 101);
    assert_eq!(state_of(&mut k, &mut p, test.2).1, 102);
}

#[test]
fn a_failing_dependency_fails_the_held_entries_transitively() {
    let (mut k, mut p) = started();
    // TIMED restarts once after a failure; it faults and is RESTARTING.
    let mut m = dep_request(6, role::TIMED, 0, 0);
    let pl = m.payload_area_mut();
    pl[spawn_service_request::RESTART] = restart_policy::ON_FAILURE;
    pl[spawn_service_request::MAX_RESTARTS] = 1;
    write_u32(pl, spawn_service_request::WINDOW_MS, 1000);
    write_u32(pl, spawn_service_request::BACKOFF_MS, 10);
    let timed = spawned_reply(spawn(&mut k, &mut p, BADGE_ROOTD, m));
    kernel_event(&mut k, &mut p, fault(timed.0));
    // TEST (REQUIRED) waits for TIMED, NAMED for TEST.
    let test = spawned_reply(spawn(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        dep_request(4, role::TEST, envelope_flag::REQUIRED, bit(role::TIMED)),
    ));
    let named = spawned_reply(spawn(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        dep_request(5, role::NAMED, 0, bit(role::TEST)),
    ));
    assert_eq!((test.0, named.0), (0, 0));
    k.log.clear();
    k.notified.clear();
    // The restart fails: TIMED is FAILED, and so are the held entries.
    k.create_status = status::RETRY;
    fire(&mut k, &mut p);
    assert_eq!(
        k.log,
        [
            "procd: restart of 100 failed: RETRY".to_string(),
            "procd: child 100 failed".to_string(),
            "procd: test cannot start: timed failed".to_string(),
            "procd: named cannot start: test failed".to_string(),
        ]
    );
    assert_eq!(
        k.notified,
        [(NOTIFY, notify_bit::SERVICE_FAILED)],
        "once, for the REQUIRED TEST"
    );
    let dep = death_kind::DEPENDENCY;
    assert_eq!(
        state_of(&mut k, &mut p, test.2),
        (proc_state::FAILED, 0, dep, u32::from(role::TIMED))
    );
    assert_eq!(
        state_of(&mut k, &mut p, named.2),
        (proc_state::FAILED, 0, dep, u32::from(role::TEST))
    );
    // A new spawn depending on a failed role: NOT_FOUND.
    k.create_status = status::OK;
    k.requests.clear();
    for depends_on in [bit(role::TIMED), bit(role::TEST) | bit(role::CRASHD)] {
        assert_eq!(
            spawn(
                &mut k,
                &mut p,
                BADGE_ROOTD,
                dep_request(7, role::LOGD, 0, depends_on)
            ),
            (status::NOT_FOUND, vec![])
        );
    }
    // A held entry that failed can be REAPed.
    let (st, record) = ask(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        process_req(procd_op::REAP, test.2),
    );
    assert_eq!(st, status::OK);
    assert_eq!(read_u16(&record, process_status::DEATH), Some(dep));
    assert!(k.requests.is_empty());
}

#[test]
fn a_failed_dependency_with_a_running_replacement_is_no_failure() {
    let (mut k, mut p) = started();
    // Two TIMED; one fails while the other runs: a new dependent spawns at once.
    let first = spawned_reply(spawn(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        dep_request(6, role::TIMED, 0, 0),
    ));
    spawned_reply(spawn(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        dep_request(6, role::TIMED, 0, 0),
    ));
    kernel_event(&mut k, &mut p, fault(first.0));
    let test = spawned_reply(spawn(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        dep_request(4, role::TEST, 0, bit(role::TIMED)),
    ));
    assert_eq!(test.0, 102);
}

#[test]
fn a_failed_release_holds_the_entry_failed() {
    let (mut k, mut p) = started();
    let test = spawned_reply(spawn(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        dep_request(4, role::TEST, envelope_flag::REQUIRED, bit(role::TIMED)),
    ));
    k.log.clear();
    // TIMED needs no MINT; the TEST release's MINT fails.
    k.mint_status = status::RETRY;
    spawned_reply(spawn(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        dep_request(6, role::TIMED, 0, 0),
    ));
    assert_eq!(k.log, ["procd: release of test failed: RETRY".to_string()]);
    assert_eq!(k.notified, [(NOTIFY, notify_bit::SERVICE_FAILED)]);
    assert_eq!(
        state_of(&mut k, &mut p, test.2),
        (proc_state::FAILED, 0, death_kind::DEPENDENCY, 0)
    );
}

#[test]
fn bad_dependencies_are_invalid() {
    let (mut k, mut p) = started();
    let invalid = (status::INVALID_ARGUMENT, vec![]);
    for depends_on in [
        bit(role::TEST),
        1,
        bit(0x11),
        bit(63),
        bit(role::TIMED) | bit(0x30),
    ] {
        assert_eq!(
            spawn(
                &mut k,
                &mut p,
                BADGE_ROOTD,
                dep_request(4, role::TEST, 0, depends_on)
            ),
            invalid,
            "{depends_on:#x}"
        );
    }
    // A 2-cycle: TEST held on TIMED, then TIMED depending on TEST.
    let test = spawned_reply(spawn(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        dep_request(4, role::TEST, 0, bit(role::TIMED)),
    ));
    assert_eq!(
        spawn(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            dep_request(6, role::TIMED, 0, bit(role::TEST))
        ),
        invalid
    );
    // A 3-cycle through a held chain: NAMED held on TEST, then TIMED depending on NAMED.
    spawned_reply(spawn(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        dep_request(5, role::NAMED, 0, bit(role::TEST)),
    ));
    assert_eq!(
        spawn(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            dep_request(6, role::TIMED, 0, bit(role::NAMED))
        ),
        invalid
    );
    assert!(k.requests.is_empty(), "no kernel calls");
    assert_eq!(state_of(&mut k, &mut p, test.2).0, HELD);
    assert_eq!(p.table().free_index(), Some(2));
}

#[test]
fn stop_or_kill_of_a_held_entry_frees_it() {
    let (mut k, mut p) = started();
    for op in [procd_op::STOP, procd_op::KILL] {
        let held = spawned_reply(spawn(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            dep_request(4, role::TEST, 0, bit(role::TIMED)),
        ));
        assert_eq!(
            ask(&mut k, &mut p, BADGE_ROOTD, process_req(op, held.2)),
            (status::OK, vec![])
        );
        assert_eq!(p.table().entries()[0].state, ProcState::Free);
        assert_eq!(
            status_of(&mut k, &mut p, held.2),
            (status::NOT_FOUND, vec![])
        );
    }
    assert_eq!(p.table().generation(0).map(Generation::get), Some(3));
    assert!(k.requests.is_empty(), "no kernel calls");
    assert_eq!(p.audit().records().count(), 0);
    // Nothing is left to release.
    spawned_reply(spawn(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        dep_request(6, role::TIMED, 0, 0),
    ));
    assert_eq!(k.alive.len(), 1);
}

#[test]
fn a_table_full_of_held_entries_is_busy() {
    let (mut k, mut p) = started();
    for i in 0..abi::PROCD_MAX_PROCESSES {
        let held = spawned_reply(spawn(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            dep_request(4, role::TEST, 0, bit(role::TIMED)),
        ));
        assert_eq!(held, (0, 0, pid_of(i as u32, 1)));
    }
    let busy = (status::BUSY, vec![]);
    assert_eq!(
        spawn(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            dep_request(4, role::TEST, 0, bit(role::TIMED))
        ),
        busy
    );
    assert_eq!(
        spawn(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            dep_request(6, role::TIMED, 0, 0)
        ),
        busy
    );
    assert!(k.requests.is_empty());
}
