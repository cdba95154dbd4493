//! Restarts meeting STOP, KILL, forged or stale timers, failures, and the window.

use super::*;

#[test]
fn stop_or_kill_of_a_restarting_entry_frees_it_and_its_timer_is_ignored() {
    for op in [procd_op::STOP, procd_op::KILL] {
        let (mut k, mut p) = spawned_restarting(0, restart_policy::ON_FAILURE, 3, 1000, 10);
        kernel_event(&mut k, &mut p, fault(100));
        let id = pid_of(0, 1);
        // REAP of a RESTARTING entry is BUSY.
        let (st, _) = ask(&mut k, &mut p, BADGE_ROOTD, process_req(procd_op::REAP, id));
        assert_eq!(st, status::BUSY);
        k.requests.clear();
        k.log.clear();
        let (st, payload) = ask(&mut k, &mut p, BADGE_ROOTD, process_req(op, id));
        assert_eq!((st, payload), (status::OK, vec![]));
        assert!(k.requests.is_empty(), "the kernel is not asked");
        assert!(k.log.is_empty());
        assert_eq!(p.table().entries()[0].state, ProcState::Free);
        assert_eq!(p.table().generation(0).map(Generation::get), Some(2));
        assert_eq!(status_of(&mut k, &mut p, id).0, status::NOT_FOUND);
        // The timer fires later: no entry matches it.
        fire(&mut k, &mut p);
        assert!(k.requests.is_empty());
        assert!(k.log.is_empty());
        assert_eq!(p.table().entries()[0].state, ProcState::Free);
        // Even once a new service occupies the entry (generation 2).
        let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(4, role::TEST, 0));
        assert_eq!(st, status::OK);
        k.requests.clear();
        kernel_event(&mut k, &mut p, timer_msg(id, 50));
        assert!(k.requests.is_empty());
        assert_eq!(p.table().entries()[0].state, ProcState::Running);
    }
}

#[test]
fn a_forged_timer_is_denied_and_changes_nothing() {
    let (mut k, mut p) = spawned_restarting(0, restart_policy::ON_FAILURE, 3, 1000, 10);
    kernel_event(&mut k, &mut p, fault(100));
    let before = p.table().entries().to_vec();
    k.requests.clear();
    k.log.clear();
    for badge in [BADGE_ROOTD, abi::PROCD_CHILD_BADGE_BASE, 0, 12345] {
        let (st, payload) = spawn(&mut k, &mut p, badge, timer_msg(pid_of(0, 1), 10));
        assert_eq!((st, payload), (status::DENIED, vec![]));
    }
    assert!(k.requests.is_empty());
    assert!(k.log.is_empty());
    assert_eq!(p.table().entries(), &before[..]);
}

#[test]
fn timers_naming_no_restarting_entry_are_ignored() {
    let (mut k, mut p) = spawned_restarting(0, restart_policy::ON_FAILURE, 3, 1000, 10);
    // A second, running child in entry 1.
    let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(4, role::TEST, 0));
    assert_eq!(st, status::OK);
    kernel_event(&mut k, &mut p, fault(100));
    let before = p.table().entries().to_vec();
    k.requests.clear();
    k.log.clear();
    let cookie = pid_of(0, 1);
    let mut short = timer_msg(cookie, 10);
    let mut h = short.header();
    h.payload_len -= 1;
    short.set_header(&h);
    let mut long = timer_msg(cookie, 10);
    let mut h = long.header();
    h.payload_len += 1;
    long.set_header(&h);
    let mut with_caps = timer_msg(cookie, 10);
    k.deliver_caps(&mut with_caps, 1);
    for m in [
        timer_msg(pid_of(0, 2), 10),      // the next generation
        timer_msg(pid_of(0, 0xFFFF), 10), // another generation
        timer_msg(0, 10),                 // generation 0
        timer_msg(pid_of(1, 1), 10),      // a running entry
        timer_msg(pid_of(2, 1), 10),      // a free entry
        timer_msg(pid_of(0xFFFF, 1), 10), // beyond the table
        timer_msg(abi::PROCD_MAX_PROCESSES as u32 | 1 << 16, 10),
        timer_msg(u32::MAX, 10),
        short,
        long,
        with_caps,
    ] {
        kernel_event(&mut k, &mut p, m);
    }
    assert_eq!(kernel_ops(&k), Vec::<u32>::new());
    assert!(k.log.is_empty());
    assert_eq!(p.table().entries(), &before[..]);
    // The real one still restarts it.
    fire(&mut k, &mut p);
    assert_eq!(p.table().entries()[0].state, ProcState::Running);
}

#[test]
fn spawn_rejects_unknown_restart_policies_and_reserved_bits() {
    let (mut k, mut p) = started();
    let mut bad = Vec::new();
    for policy in [3u8, 4, 0x80, 0xFF] {
        bad.push(restart_request(0, policy, 1, 1, 1));
    }
    for reserved in [1u16, 0x8000, 0xFFFF] {
        let mut m = restart_request(0, restart_policy::ALWAYS, 1, 1, 1);
        write_u16(
            m.payload_area_mut(),
            spawn_service_request::RESERVED,
            reserved,
        );
        bad.push(m);
    }
    for m in bad {
        let (st, payload) = spawn(&mut k, &mut p, BADGE_ROOTD, m);
        assert_eq!((st, payload), (status::INVALID_ARGUMENT, vec![]));
    }
    assert!(k.requests.is_empty());
    assert_eq!(p.table().free_index(), Some(0));
    // Every known policy is accepted and stored with its bound.
    for policy in [
        restart_policy::NEVER,
        restart_policy::ON_FAILURE,
        restart_policy::ALWAYS,
    ] {
        let (st, _) = spawn(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            restart_request(0, policy, 7, 8, 9),
        );
        assert_eq!(st, status::OK);
    }
    for (i, policy) in [
        RestartPolicy::Never,
        RestartPolicy::OnFailure,
        RestartPolicy::Always,
    ]
    .into_iter()
    .enumerate()
    {
        let r = p.table().entries()[i].restart;
        assert_eq!(
            (r.policy, r.max_restarts, r.window_ms, r.backoff_ms, r.count),
            (policy, 7, 8, 9, 0)
        );
    }
}

#[test]
fn a_failed_clock_or_timer_holds_the_child_failed() {
    for (clock, timer) in [
        (status::DENIED, status::OK),
        (status::OK, status::INVALID_ARGUMENT),
    ] {
        let (mut k, mut p) = spawned_restarting(
            envelope_flag::REQUIRED,
            restart_policy::ON_FAILURE,
            3,
            1000,
            10,
        );
        k.clock_status = clock;
        k.timer_status = timer;
        let slot = p.table().entries()[0].endpoint_slot;
        kernel_event(&mut k, &mut p, fault(100));
        let name = status::name(if clock != status::OK { clock } else { timer }).unwrap();
        assert_eq!(
            k.log,
            [
                "procd: child 100 faulted UNMAPPED_READ at 0x400000".to_string(),
                format!("procd: restart of 100 failed: {name}"),
                "procd: child 100 failed".to_string()
            ]
        );
        assert_eq!(k.deleted, [slot], "the endpoint dropped once");
        assert!(k.timers.is_empty());
        assert_eq!(k.notified, [(NOTIFY, notify_bit::SERVICE_FAILED)]);
        let e = p.table().entries()[0];
        assert_eq!(
            e.state,
            ProcState::Failed {
                death: DeathKind::Faulted,
                code: fault_kind::UNMAPPED_READ as u32
            }
        );
        assert_eq!((e.pid, e.generation.get(), e.endpoint_slot), (100, 1, 0));
    }
    // The CALL syscall itself failing is a failed clock too.
    let (mut k, mut p) = spawned_restarting(0, restart_policy::ON_FAILURE, 3, 1000, 10);
    k.call_status = status::NOT_FOUND;
    kernel_event(&mut k, &mut p, fault(100));
    assert_eq!(k.log[1], "procd: restart of 100 failed: NOT_FOUND");
    assert!(matches!(
        p.table().entries()[0].state,
        ProcState::Failed { .. }
    ));
}

#[test]
fn a_failed_respawn_holds_the_entry_failed_with_its_old_id() {
    // (what fails, the status logged)
    type Sabotage = fn(&mut Model);
    let cases: [(Sabotage, &str); 3] = [
        (|k| k.mint_status = status::BUSY, "BUSY"),
        (|k| k.create_status = status::NOT_FOUND, "NOT_FOUND"),
        (|k| k.start_status = status::DENIED, "DENIED"),
    ];
    for (sabotage, name) in cases {
        let (mut k, mut p) =
            spawned_restarting(envelope_flag::REQUIRED, restart_policy::ALWAYS, 3, 1000, 10);
        kernel_event(&mut k, &mut p, child_died(100, death_kind::EXITED, 7, 0));
        sabotage(&mut k);
        k.log.clear();
        fire(&mut k, &mut p);
        assert_eq!(
            k.log,
            [
                format!("procd: restart of 100 failed: {name}"),
                "procd: child 100 failed".to_string()
            ]
        );
        assert_eq!(k.notified, [(NOTIFY, notify_bit::SERVICE_FAILED)]);
        let id = pid_of(0, 1);
        let (st, record) = status_of(&mut k, &mut p, id);
        assert_eq!(st, status::OK);
        assert_eq!(
            full_record(&record),
            (
                id,
                100,
                4,
                role::TEST,
                FAILED,
                envelope_flag::REQUIRED,
                death_kind::EXITED,
                7
            )
        );
        assert_eq!(p.table().entries()[0].endpoint_slot, 0);
        assert!(k.badges.is_empty(), "no minted copy kept");
        // Only the envelope capabilities remain.
        assert_eq!(k.caps.len(), 4);
        let (st, _) = ask(&mut k, &mut p, BADGE_ROOTD, process_req(procd_op::REAP, id));
        assert_eq!(st, status::OK);
    }
}

#[test]
fn probe_complete_from_a_restarting_childs_badge_is_denied() {
    let (mut k, mut p) = spawned_restarting(0, restart_policy::ON_FAILURE, 3, 1000, 10);
    kernel_event(&mut k, &mut p, fault(100));
    assert_eq!(
        probe_from(&mut k, &mut p, abi::PROCD_CHILD_BADGE_BASE, probe()),
        status::DENIED
    );
    assert!(k.notified.is_empty());
}

/// How a child in the restart-bound grid dies: a fault, a kill procd did not ask for, a
/// non-zero exit, or a clean exit (restarted only under ALWAYS).
fn grid_death(pid: u32, how: usize) -> Message {
    match how {
        0 => fault(pid),
        1 => child_died(pid, death_kind::KILLED, 0, 0),
        2 => child_died(pid, death_kind::EXITED, 7, 0),
        _ => child_died(pid, death_kind::EXITED, 0, 0),
    }
}

#[test]
fn a_child_that_keeps_dying_is_restarted_at_most_max_restarts_times_for_every_policy_value() {
    // Every run dies `lifetime` ticks after it started (0, or just inside a small window), with
    // every backoff and window, 0 and the maxima included: the count is never cleared, so the
    // child is restarted exactly max_restarts times and then held FAILED.
    for policy in [restart_policy::ON_FAILURE, restart_policy::ALWAYS] {
        for max_restarts in [0u8, 1, 2, 255] {
            for window_ms in [0u32, 1, 2, 1000, u32::MAX] {
                for backoff_ms in [0u32, 1, 1000, u32::MAX] {
                    for how in 0..4 {
                        if how == 3 && policy != restart_policy::ALWAYS {
                            continue; // ON_FAILURE frees a clean exit
                        }
                        let lifetime = u64::from(window_ms.saturating_sub(1)).min(1);
                        let case = (policy, max_restarts, window_ms, backoff_ms, how);
                        let (mut k, mut p) = spawned_restarting(
                            envelope_flag::REQUIRED,
                            policy,
                            max_restarts,
                            window_ms,
                            backoff_ms,
                        );
                        let mut restarts = 0u32;
                        let mut pid = 100;
                        loop {
                            k.clock = k.clock.saturating_add(lifetime);
                            kernel_event(&mut k, &mut p, grid_death(pid, how));
                            if k.timers.is_empty() {
                                break;
                            }
                            assert!(restarts < 300, "unbounded: {case:?}");
                            fire(&mut k, &mut p);
                            restarts += 1;
                            pid = p.table().entries()[0].pid;
                        }
                        assert_eq!(restarts, u32::from(max_restarts), "{case:?}");
                        assert!(
                            matches!(p.table().entries()[0].state, ProcState::Failed { .. }),
                            "{case:?}"
                        );
                        assert_eq!(
                            k.notified,
                            [(NOTIFY, notify_bit::SERVICE_FAILED)],
                            "{case:?}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn a_window_of_0_never_clears_the_count() {
    // Two restarts over the entry's life, however long each run lasts.
    let (mut k, mut p) = spawned_restarting(0, restart_policy::ON_FAILURE, 2, 0, 5);
    for pid in [100, 101] {
        kernel_event(&mut k, &mut p, fault(pid));
        fire(&mut k, &mut p);
        k.clock += 1_000_000;
    }
    k.log.clear();
    kernel_event(&mut k, &mut p, fault(102));
    assert_eq!(k.log[1], "procd: child 102 over its restart bound");
}

#[test]
fn backoff_never_counts_toward_the_window() {
    // A window shorter than the backoff: each run dies 5 ticks after it started, so nothing
    // is cleared however long procd waited before restarting it.
    let (mut k, mut p) = spawned_restarting(0, restart_policy::ON_FAILURE, 2, 100, 1000);
    for pid in [100, 101] {
        kernel_event(&mut k, &mut p, fault(pid));
        fire(&mut k, &mut p);
        k.clock += 5;
    }
    k.log.clear();
    kernel_event(&mut k, &mut p, fault(102));
    assert_eq!(k.log[1], "procd: child 102 over its restart bound");
}

#[test]
fn a_run_that_lasted_longer_than_the_window_clears_the_count() {
    // One restart allowed; window 1000, backoff 10. The restart starts its run at tick 10.
    let (mut k, mut p) = spawned_restarting(0, restart_policy::ALWAYS, 1, 1000, 10);
    kernel_event(&mut k, &mut p, child_died(100, death_kind::EXITED, 0, 0));
    fire(&mut k, &mut p);
    assert_eq!(k.clock, 10);
    // It dies 1000 ticks after its start: the clock rounds down, so that run may have lasted
    // less than 1000 ms of virtual time and the count stands: over the bound.
    k.clock = 1010;
    k.log.clear();
    kernel_event(&mut k, &mut p, child_died(101, death_kind::EXITED, 0, 0));
    assert_eq!(k.log[1], "procd: child 101 over its restart bound");
    // 1001 ticks after its start: it surely lasted the window, the count is cleared, the
    // backoff is the first one again, and the next run starts at the TIMER's ticks.
    let (mut k, mut p) = spawned_restarting(0, restart_policy::ALWAYS, 1, 1000, 10);
    kernel_event(&mut k, &mut p, child_died(100, death_kind::EXITED, 0, 0));
    fire(&mut k, &mut p);
    k.clock = 1011;
    k.log.clear();
    kernel_event(&mut k, &mut p, child_died(101, death_kind::EXITED, 0, 0));
    assert_eq!(k.log[1], "procd: child 101 restarting in 10 ms");
    assert_eq!(k.timers, [(1021, pid_of(0, 2), SELF_EP)]);
    fire(&mut k, &mut p);
    let e = p.table().entries()[0];
    assert_eq!((e.pid, e.generation.get(), e.restart.count), (102, 3, 1));
    k.clock = 1500;
    k.log.clear();
    kernel_event(&mut k, &mut p, child_died(102, death_kind::EXITED, 0, 0));
    assert_eq!(k.log[1], "procd: child 102 over its restart bound");
}
