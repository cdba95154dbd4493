//! Restart policies: restarts, backoff and the restart bound.

use super::*;

pub(super) const RESTARTING: u16 = abi::proc_state::RESTARTING;

/// A SPAWN_SERVICE request for image 4, role TEST with `flags` and a restart policy.
pub(super) fn restart_request(
    flags: u16,
    policy: u8,
    max_restarts: u8,
    window_ms: u32,
    backoff_ms: u32,
) -> Message {
    let mut m = spawn_request(4, role::TEST, flags);
    let p = m.payload_area_mut();
    p[spawn_service_request::RESTART] = policy;
    p[spawn_service_request::MAX_RESTARTS] = max_restarts;
    write_u32(p, spawn_service_request::WINDOW_MS, window_ms);
    write_u32(p, spawn_service_request::BACKOFF_MS, backoff_ms);
    m
}

/// A procd with one TEST child (pid 100, id index 0 generation 1) spawned with `flags` and the
/// restart policy; the model's logs cleared.
pub(super) fn spawned_restarting(
    flags: u16,
    policy: u8,
    max_restarts: u8,
    window_ms: u32,
    backoff_ms: u32,
) -> (Model, Procd) {
    let (mut k, mut p) = started();
    let m = restart_request(flags, policy, max_restarts, window_ms, backoff_ms);
    let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, m);
    assert_eq!(st, status::OK);
    k.log.clear();
    k.notified.clear();
    k.requests.clear();
    k.deleted.clear();
    k.deleted_after.clear();
    k.sends.clear();
    (k, p)
}

/// A TIMER message as the kernel sends it.
pub(super) fn timer_msg(cookie: u32, ticks: u64) -> Message {
    let mut m = Message::new();
    let p = m.start(kernel_event::TIMER, timer_event::SIZE);
    write_u32(p, timer_event::COOKIE, cookie);
    write_u64(p, timer_event::TICKS, ticks);
    m
}

/// Fire the oldest pending timer: advance the clock to its time (if later) and deliver TIMER.
pub(super) fn fire(k: &mut Model, p: &mut Procd) {
    let (at, cookie, slot) = k.timers.remove(0);
    assert_eq!(slot, SELF_EP, "procd's TIMERs come to its own endpoint");
    k.clock = k.clock.max(at);
    kernel_event(k, p, timer_msg(cookie, k.clock));
}

/// The STATUS (status, record) of `id`.
pub(super) fn status_of(k: &mut Model, p: &mut Procd, id: u32) -> (u32, Vec<u8>) {
    ask(k, p, BADGE_ROOTD, process_req(procd_op::STATUS, id))
}

pub(super) fn fault(pid: u32) -> Message {
    child_died(
        pid,
        death_kind::FAULTED,
        fault_kind::UNMAPPED_READ,
        0x40_0000,
    )
}

#[test]
fn on_failure_restarts_a_faulted_child_after_its_backoff_in_the_same_entry() {
    let flags = envelope_flag::REQUIRED;
    let (mut k, mut p) = spawned_restarting(flags, restart_policy::ON_FAILURE, 3, 10_000, 250);
    let first_child = k.children[0].clone();
    let old_slot = p.table().entries()[0].endpoint_slot;
    k.clock = 5_000;
    kernel_event(&mut k, &mut p, fault(100));
    // Logged and reported as always, then the clock, the endpoint dropped, the timer.
    assert_eq!(
        k.log,
        [
            "procd: child 100 faulted UNMAPPED_READ at 0x400000",
            "procd: child 100 restarting in 250 ms"
        ]
    );
    assert_eq!(k.sends.len(), 1, "reported to crashd");
    assert_eq!(
        kernel_ops(&k),
        [kernel_op::READ_MONOTONIC_CLOCK, kernel_op::SET_TIMER]
    );
    assert_eq!(k.requests[0].1, Vec::<u8>::new());
    assert_eq!(
        k.deleted_after,
        [(old_slot, 1)],
        "deleted between the two calls"
    );
    assert_eq!(k.timers, [(5_250, pid_of(0, 1), SELF_EP)]);
    assert!(k.notified.is_empty(), "a restart is no failure");
    // RESTARTING: named by the old id, with the dead pid, no endpoint held.
    let e = p.table().entries()[0];
    assert_eq!(
        e.state,
        ProcState::Restarting {
            death: DeathKind::Faulted,
            code: fault_kind::UNMAPPED_READ as u32
        }
    );
    assert_eq!(e.endpoint_slot, 0);
    assert!(!k.caps.contains_key(&old_slot));
    let (st, record) = status_of(&mut k, &mut p, pid_of(0, 1));
    assert_eq!(st, status::OK);
    assert_eq!(
        status_record(&record),
        (pid_of(0, 1), 100, 4, role::TEST, RESTARTING, flags)
    );
    let (st, list) = ask(&mut k, &mut p, BADGE_ROOTD, list_req());
    assert_eq!((st, list), (status::OK, record));
    // A repeated CHILD_DIED for the dead pid changes nothing.
    k.requests.clear();
    kernel_event(&mut k, &mut p, fault(100));
    assert!(k.requests.is_empty());
    assert_eq!(p.table().entries()[0], e);

    // The timer fires: the same image, role and flags again, generation 2.
    k.log.clear();
    fire(&mut k, &mut p);
    assert_eq!(k.log, ["procd: restarted 100 as 101"]);
    assert_eq!(
        kernel_ops(&k),
        [
            kernel_op::MINT_ENDPOINT,
            kernel_op::CREATE_PROCESS,
            kernel_op::START_PROCESS
        ]
    );
    let create = &k.requests[1].1;
    assert_eq!(read_u32(create, create_process_request::IMAGE_ID), Some(4));
    assert_eq!(
        read_u32(create, create_process_request::SUPERVISOR_SLOT),
        Some(SELF_EP)
    );
    assert_eq!(
        k.children[1], first_child,
        "the same grants, the same badge"
    );
    let e = p.table().entries()[0];
    assert_eq!(e.state, ProcState::Running);
    assert_eq!(
        (e.pid, e.generation.get(), e.image_id, e.role, e.flags),
        (101, 2, 4, Role::TEST, flags)
    );
    assert!(k.caps.contains_key(&e.endpoint_slot));
    assert_eq!(e.restart.count, 1);
    assert_eq!(
        e.restart.run_start, 5_250,
        "its run starts at the TIMER's ticks"
    );
    assert_eq!(
        status_of(&mut k, &mut p, pid_of(0, 1)).0,
        status::NOT_FOUND,
        "stale"
    );
    let (st, record) = status_of(&mut k, &mut p, pid_of(0, 2));
    assert_eq!(st, status::OK);
    assert_eq!(
        status_record(&record),
        (
            pid_of(0, 2),
            101,
            4,
            role::TEST,
            abi::proc_state::RUNNING,
            flags
        )
    );
    assert!(k.notified.is_empty());
    assert!(k.badges.is_empty(), "the minted copy is gone");
    // The restarted child probes through the same badge.
    assert_eq!(
        probe_from(&mut k, &mut p, abi::PROCD_CHILD_BADGE_BASE, probe()),
        status::OK
    );
    // A second firing of the same cookie (stale now) is ignored.
    k.requests.clear();
    k.log.clear();
    kernel_event(&mut k, &mut p, timer_msg(pid_of(0, 1), 9_999));
    assert!(k.requests.is_empty() && k.log.is_empty());
}

#[test]
fn on_failure_restarts_failures_but_not_a_clean_exit() {
    // A clean exit: freed as before, the clock never read.
    let (mut k, mut p) = spawned_restarting(0, restart_policy::ON_FAILURE, 3, 1000, 10);
    kernel_event(&mut k, &mut p, child_died(100, death_kind::EXITED, 0, 0));
    assert!(k.requests.is_empty());
    assert_eq!(k.log, ["procd: child 100 exited 0"]);
    assert_eq!(p.table().entries()[0].state, ProcState::Free);
    assert_eq!(p.table().generation(0).map(Generation::get), Some(2));
    assert!(k.timers.is_empty());

    // A non-zero exit, a kill by KILL and a kill procd never asked for are failures.
    type Death = fn(&mut Model, &mut Procd);
    let deaths: [(Death, &str); 3] = [
        (
            |k, p| kernel_event(k, p, child_died(100, death_kind::EXITED, 3, 0)),
            "procd: child 100 exited 3",
        ),
        (
            |k, p| {
                let (st, _) = ask(k, p, BADGE_ROOTD, process_req(procd_op::KILL, pid_of(0, 1)));
                assert_eq!(st, status::OK);
                k.requests.clear();
                deliver_kills(k, p);
            },
            "procd: child 100 killed",
        ),
        (
            |k, p| kernel_event(k, p, child_died(100, death_kind::KILLED, 0, 0)),
            "procd: child 100 killed",
        ),
    ];
    for (die, line) in deaths {
        let (mut k, mut p) = spawned_restarting(0, restart_policy::ON_FAILURE, 3, 1000, 10);
        die(&mut k, &mut p);
        assert_eq!(k.log, [line, "procd: child 100 restarting in 10 ms"]);
        assert_eq!(p.table().entries()[0].reported_state(), Some(RESTARTING));
        assert_eq!(k.timers.len(), 1);
    }
}

#[test]
fn always_restarts_a_clean_exit_but_never_a_stop() {
    let (mut k, mut p) = spawned_restarting(0, restart_policy::ALWAYS, 3, 1000, 10);
    kernel_event(&mut k, &mut p, child_died(100, death_kind::EXITED, 0, 0));
    assert_eq!(
        k.log,
        [
            "procd: child 100 exited 0",
            "procd: child 100 restarting in 10 ms"
        ]
    );
    fire(&mut k, &mut p);
    assert_eq!(p.table().entries()[0].state, ProcState::Running);
    assert_eq!(p.table().entries()[0].pid, 101);

    // STOP: never restarted, freed as always (ON_FAILURE and ALWAYS alike).
    for policy in [restart_policy::ALWAYS, restart_policy::ON_FAILURE] {
        let (mut k, mut p) = spawned_restarting(0, policy, 3, 1000, 10);
        let (st, _) = ask(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            process_req(procd_op::STOP, pid_of(0, 1)),
        );
        assert_eq!(st, status::OK);
        k.requests.clear();
        deliver_kills(&mut k, &mut p);
        assert!(k.requests.is_empty());
        assert_eq!(k.log, ["procd: child 100 stopped"]);
        assert_eq!(p.table().entries()[0].state, ProcState::Free);
        assert!(k.timers.is_empty());
    }
    // A STOPPING-for-STOP child that faults before the kill lands is not restarted either.
    let (mut k, mut p) = spawned_restarting(0, restart_policy::ALWAYS, 3, 1000, 10);
    let (st, _) = ask(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        process_req(procd_op::STOP, pid_of(0, 1)),
    );
    assert_eq!(st, status::OK);
    k.requests.clear();
    kernel_event(&mut k, &mut p, fault(100));
    assert!(k.requests.is_empty());
    assert!(matches!(
        p.table().entries()[0].state,
        ProcState::Failed { .. }
    ));
}

#[test]
fn never_holds_a_failure_failed() {
    let (mut k, mut p) =
        spawned_restarting(envelope_flag::REQUIRED, restart_policy::NEVER, 3, 1000, 10);
    kernel_event(&mut k, &mut p, fault(100));
    assert!(k.requests.is_empty(), "no clock, no timer");
    assert!(k.timers.is_empty());
    assert_eq!(
        k.log,
        [
            "procd: child 100 faulted UNMAPPED_READ at 0x400000",
            "procd: child 100 failed"
        ]
    );
    assert!(matches!(
        p.table().entries()[0].state,
        ProcState::Failed { .. }
    ));
    assert_eq!(k.notified, [(NOTIFY, notify_bit::SERVICE_FAILED)]);
}

#[test]
fn the_restart_bound_holds_a_required_service_failed_and_backoff_doubles() {
    let flags = envelope_flag::REQUIRED;
    let (mut k, mut p) = spawned_restarting(flags, restart_policy::ALWAYS, 3, 60_000, 100);
    let mut pid = 100;
    let mut delays = Vec::new();
    for n in 0..3u16 {
        k.log.clear();
        k.clock += 10;
        let before = k.clock;
        kernel_event(&mut k, &mut p, child_died(pid, death_kind::EXITED, 0, 0));
        let delay = 100u64 << n;
        delays.push(k.timers[0].0 - before);
        assert_eq!(
            k.log[1],
            format!("procd: child {pid} restarting in {delay} ms")
        );
        fire(&mut k, &mut p);
        pid += 1;
        assert_eq!(p.table().entries()[0].pid, pid);
        assert_eq!(p.table().entries()[0].generation.get(), 2 + n);
        assert_eq!(p.table().entries()[0].restart.count, (n + 1) as u8);
    }
    assert_eq!(delays, [100, 200, 400]);
    assert!(k.notified.is_empty());
    // The fourth ending within the window is over the bound: held FAILED, SERVICE_FAILED.
    k.log.clear();
    k.requests.clear();
    k.deleted.clear();
    let slot = p.table().entries()[0].endpoint_slot;
    kernel_event(&mut k, &mut p, child_died(pid, death_kind::EXITED, 0, 0));
    assert_eq!(
        k.log,
        [
            "procd: child 103 exited 0",
            "procd: child 103 over its restart bound",
            "procd: child 103 failed"
        ]
    );
    assert_eq!(kernel_ops(&k), [kernel_op::READ_MONOTONIC_CLOCK]);
    assert_eq!(k.deleted, [slot]);
    assert!(k.timers.is_empty());
    assert_eq!(k.notified, [(NOTIFY, notify_bit::SERVICE_FAILED)]);
    let id = pid_of(0, 4);
    let (st, record) = status_of(&mut k, &mut p, id);
    assert_eq!(st, status::OK);
    assert_eq!(
        full_record(&record),
        (id, 103, 4, role::TEST, FAILED, flags, death_kind::EXITED, 0)
    );
    // REAP frees it.
    let (st, _) = ask(&mut k, &mut p, BADGE_ROOTD, process_req(procd_op::REAP, id));
    assert_eq!(st, status::OK);
    assert_eq!(p.table().entries()[0].state, ProcState::Free);
}

#[test]
fn max_restarts_0_never_restarts_and_an_optional_service_is_only_held_failed() {
    let (mut k, mut p) = spawned_restarting(0, restart_policy::ON_FAILURE, 0, 1000, 10);
    kernel_event(&mut k, &mut p, fault(100));
    assert_eq!(
        k.log,
        [
            "procd: child 100 faulted UNMAPPED_READ at 0x400000",
            "procd: child 100 over its restart bound",
            "procd: child 100 failed"
        ]
    );
    assert!(k.timers.is_empty());
    assert!(k.notified.is_empty(), "not REQUIRED");
    assert!(matches!(
        p.table().entries()[0].state,
        ProcState::Failed { .. }
    ));
}

#[test]
fn backoff_shifts_saturate_at_16() {
    let (mut k, mut p) = spawned_restarting(0, restart_policy::ALWAYS, 255, u32::MAX, 3);
    for (pid, n) in (100u32..).zip(0..20u32) {
        k.log.clear();
        kernel_event(&mut k, &mut p, child_died(pid, death_kind::EXITED, 0, 0));
        let delay = 3u64 << n.min(16);
        assert_eq!(
            k.log[1],
            format!("procd: child {pid} restarting in {delay} ms")
        );
        assert_eq!(k.timers[0].0, k.clock + delay);
        fire(&mut k, &mut p);
    }
    // A huge backoff saturates the timer's time instead of overflowing.
    let (mut k, mut p) = spawned_restarting(0, restart_policy::ALWAYS, 255, u32::MAX, u32::MAX);
    k.clock = u64::MAX - 5;
    kernel_event(&mut k, &mut p, child_died(100, death_kind::EXITED, 0, 0));
    assert_eq!(k.timers[0].0, u64::MAX);
}
