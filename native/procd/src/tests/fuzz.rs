//! procd never panics and keeps its invariants whatever messages arrive.

use super::*;

#[test]
fn never_panics_on_arbitrary_messages() {
    let (mut k, mut p) = started();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut probes_ok, mut ends_ok, mut statuses_ok, mut lists_ok, mut kills_seen) =
        (0, 0, 0, 0, 0);
    let (mut reaps_ok, mut reaps_busy, mut failures_seen, mut failed_statuses) = (0, 0, 0, 0);
    let mut service_failed_notifies = 0;
    let (mut restarts_seen, mut restarting_seen, mut over_bound_seen, mut ended_restarting) =
        (0, 0, 0, 0);
    let (mut timers_fired, mut timers_ignored) = (0, 0);
    for i in 0..12000 {
        k.clock += next() % 40;
        let mut m = Message::new();
        let bytes = m.as_bytes_mut();
        let n = (next() % 64) as usize;
        for b in bytes.iter_mut().take(n) {
            *b = next() as u8;
        }
        let mut forced_badge = None;
        if i % 5 == 1 {
            // A valid spawn now and then, so that there are children to probe, kill and fail;
            // half of them REQUIRED.
            let flags = if next() % 2 == 0 {
                envelope_flag::REQUIRED
            } else {
                0
            };
            m = spawn_request(1 + (next() % 9) as u32, role::TEST, flags);
            // A restart policy most of the time (an invalid one now and then), a small bound.
            let payload = m.payload_area_mut();
            payload[spawn_service_request::RESTART] = (next() % 4) as u8;
            payload[spawn_service_request::MAX_RESTARTS] = (next() % 4) as u8;
            write_u32(
                payload,
                spawn_service_request::WINDOW_MS,
                (next() % 3000) as u32,
            );
            write_u32(
                payload,
                spawn_service_request::BACKOFF_MS,
                (next() % 60) as u32,
            );
            if next() % 16 == 0 {
                write_u16(payload, spawn_service_request::RESERVED, next() as u16);
            }
        } else if i % 5 == 2 && !k.timers.is_empty() && next() % 4 == 0 {
            // A timer procd set comes due (the oldest; now and then a duplicate stays queued).
            let (at, cookie, slot) = if next() % 8 == 0 {
                k.timers[0]
            } else {
                k.timers.remove(0)
            };
            assert_eq!(slot, SELF_EP);
            k.clock = k.clock.max(at);
            m = timer_msg(cookie, k.clock);
            forced_badge = Some(BADGE_KERNEL);
        } else if i % 5 == 3 && !k.killed.is_empty() && next() % 2 == 0 {
            // The kernel's CHILD_DIED for a process STOP or KILL ended.
            let pid = k.killed.remove(0);
            m = child_died(pid, death_kind::KILLED, 0, 0);
            forced_badge = Some(BADGE_KERNEL);
            kills_seen += 1;
        } else if i % 5 == 3 && next() % 6 == 0 {
            // A live child's own death: a clean or failed exit, a fault, or a foreign kill.
            let live = live_pids(&p);
            if let Some(&pid) = live.get((next() as usize) % live.len().max(1)) {
                let (kind, code) = match next() % 4 {
                    0 => (death_kind::EXITED, 0),
                    1 => (death_kind::EXITED, next() % 3),
                    2 => (death_kind::FAULTED, 1 + next() % 12),
                    _ => (death_kind::KILLED, next() % 2),
                };
                k.alive.remove(&pid);
                k.killed.retain(|&killed| killed != pid);
                m = child_died(pid, kind, code, next() % 0x1000);
                forced_badge = Some(BADGE_KERNEL);
            }
        } else if i % 5 == 4 && next() % 4 == 0 {
            // rootd stops or kills a RESTARTING service.
            let restarting: Vec<u32> = (0..abi::PROCD_MAX_PROCESSES)
                .filter(|&i| matches!(p.table().entries()[i].state, ProcState::Restarting { .. }))
                .filter_map(|i| p.table().id_of(i).map(ProcId::get))
                .collect();
            if let Some(&id) = restarting.get((next() as usize) % restarting.len().max(1)) {
                let op = if next() % 2 == 0 {
                    procd_op::STOP
                } else {
                    procd_op::KILL
                };
                m = process_req(op, id);
                forced_badge = Some(BADGE_ROOTD);
            }
        } else if i % 5 == 4 && next() % 2 == 0 {
            // rootd reaps a failed entry, or asks to reap a live one.
            let named: Vec<u32> = live_ids(&p);
            if let Some(&id) = named.get((next() as usize) % named.len().max(1)) {
                m = process_req(procd_op::REAP, id);
                forced_badge = Some(BADGE_ROOTD);
            }
        } else if i % 2 == 0 {
            // Mostly-valid headers reach deeper.
            let (op, len) = match next() % 9 {
                0 => (procd_op::SPAWN_SERVICE, 16 + next() % 8),
                8 => (kernel_event::TIMER, 14 + next() % 4),
                1 => (kernel_event::CHILD_DIED, 20 + next() % 8),
                2 => (procd_op::PROBE_COMPLETE, next() % 4 / 3),
                3 => (procd_op::STOP, 6 + next() % 4),
                4 => (procd_op::KILL, 6 + next() % 4),
                5 => (procd_op::STATUS, 6 + next() % 4),
                6 => (procd_op::REAP, 6 + next() % 4),
                _ => (procd_op::LIST, next() % 4 / 3 * 8),
            };
            let mut h = MessageHeader::new(op, len as u16);
            if next() % 4 == 0 {
                h.cap_count = (next() % 8) as u8;
                h.caps = [next() as u32 % 80, next() as u32 % 80, 3, 70];
            }
            m.set_header(&h);
            if op == kernel_event::CHILD_DIED && next() % 2 == 0 {
                // A live pid (or one just past them), a known kind half the time.
                let payload = m.payload_area_mut();
                write_u32(payload, child_death::PID, 100 + (next() % 40) as u32);
                write_u16(payload, child_death::KIND, (next() % 4) as u16);
            }
            if op == kernel_event::TIMER {
                // A named entry's id (RESTARTING or not), a stale one, or anything.
                let named: Vec<u32> = live_ids(&p);
                let cookie = match (next() % 3, named.is_empty()) {
                    (0, false) => named[(next() as usize) % named.len()],
                    (1, _) => (next() % 40) as u32 | ((next() % 4) as u32) << 16,
                    _ => next() as u32,
                };
                let ticks = k.clock;
                let payload = m.payload_area_mut();
                write_u32(payload, timer_event::COOKIE, cookie);
                write_u64(payload, timer_event::TICKS, ticks);
            }
            if matches!(
                op,
                procd_op::STOP | procd_op::KILL | procd_op::STATUS | procd_op::REAP
            ) {
                // A live or failed id, a stale or out-of-range one, or anything.
                let live: Vec<u32> = live_ids(&p);
                let id = match (next() % 4, live.is_empty()) {
                    (0 | 1, false) => live[(next() as usize) % live.len()],
                    (2, _) => (next() % 40) as u32 | ((next() % 4) as u32) << 16,
                    _ => next() as u32,
                };
                let reserved = if next() % 4 == 0 { next() as u32 } else { 0 };
                let payload = m.payload_area_mut();
                write_u32(payload, process_request::ID, id);
                write_u32(payload, process_request::RESERVED, reserved);
            }
        }
        let badge = forced_badge.unwrap_or_else(|| match next() % 5 {
            0 => next(),
            1 => BADGE_KERNEL,
            2 => abi::PROCD_CHILD_BADGE_BASE - 2 + next() % 36,
            _ => BADGE_ROOTD,
        });
        let sends = k.sends.len();
        let notified = k.notified.len();
        let requests = k.requests.len();
        let request = m.header();
        let op = request.op;
        let asked_id = read_u32(m.payload(), process_request::ID);
        let asked =
            asked_id.and_then(|id| p.table().lookup(ProcId::from(id)).map(|(i, e)| (i, *e)));
        let probe = op == procd_op::PROBE_COMPLETE;
        let live_badge = badge_index(badge).is_some_and(|i| p.table().entries()[i].state.is_live());
        let listed = p
            .table()
            .entries()
            .iter()
            .filter(|e| e.reported_state().is_some())
            .count();
        let failed_before = p.table().failed().count();
        let died = read_u32(m.payload(), child_death::PID)
            .filter(|_| op == kernel_event::CHILD_DIED)
            .and_then(|pid| p.table().index_of_pid(pid))
            .map(|i| (i, p.table().entries()[i]));
        // The RESTARTING entry a TIMER's cookie names, if any.
        let timed = read_u32(m.payload(), timer_event::COOKIE)
            .filter(|_| {
                op == kernel_event::TIMER && request.payload_len as usize == timer_event::SIZE
            })
            .and_then(|cookie| p.table().lookup(ProcId::from(cookie)))
            .filter(|(_, e)| matches!(e.state, ProcState::Restarting { .. }))
            .map(|(i, e)| (i, *e));
        let timers = k.timers.len();
        let logged = k.log.len();
        match p.handle(&mut k, badge, &mut m) {
            Answer::Reply => {
                assert_ne!(badge, BADGE_KERNEL);
                let h = m.header();
                assert_eq!((h.cap_count, h.reserved0, h.reserved1), (0, 0, 0));
                assert!(h.op == status::OK || h.payload_len == 0);
                assert_eq!(k.sends.len(), sends, "only kernel events make procd SEND");
                if probe && h.op == status::OK {
                    assert!(live_badge);
                    probes_ok += 1;
                    assert_eq!(
                        k.notified[notified..],
                        [(NOTIFY, notify_bit::PROBE_COMPLETE)]
                    );
                } else {
                    assert_eq!(k.notified.len(), notified);
                }
                if probe && !live_badge {
                    assert_eq!(h.op, status::DENIED);
                }
                let rootd_op = matches!(
                    op,
                    procd_op::STOP
                        | procd_op::KILL
                        | procd_op::REAP
                        | procd_op::STATUS
                        | procd_op::LIST
                );
                if rootd_op && badge != BADGE_ROOTD {
                    assert_eq!(h.op, status::DENIED);
                }
                if matches!(op, procd_op::STATUS | procd_op::LIST | procd_op::REAP) {
                    assert_eq!(
                        k.requests.len(),
                        requests,
                        "STATUS, LIST and REAP call nobody"
                    );
                }
                if op != procd_op::REAP || h.op != status::OK {
                    assert_eq!(p.table().failed().count(), failed_before, "only REAP frees");
                }
                match (op, h.op) {
                    (procd_op::STOP | procd_op::KILL, status::OK) if matches!(asked, Some((_, e)) if matches!(e.state, ProcState::Restarting { .. })) =>
                    {
                        // A RESTARTING entry is freed without asking the kernel.
                        ended_restarting += 1;
                        let (index, before) = asked.unwrap();
                        assert_eq!(k.requests.len(), requests);
                        let after = p.table().entries()[index];
                        assert_eq!(after.state, ProcState::Free);
                        assert_eq!(after.generation, before.generation.next());
                    }
                    (procd_op::STOP | procd_op::KILL, status::OK) => {
                        ends_ok += 1;
                        assert_eq!(k.requests.len(), requests + 1);
                        assert_eq!(k.requests[requests].0, kernel_op::KILL_PROCESS);
                        let (_, e) = p
                            .table()
                            .lookup(ProcId::from(asked_id.unwrap()))
                            .expect("live");
                        assert!(matches!(e.state, ProcState::Stopping(_)));
                    }
                    (procd_op::STOP | procd_op::KILL, status::NOT_FOUND) => {
                        // Stale, or FAILED: nothing to end, the kernel not asked.
                        assert_eq!(k.requests.len(), requests);
                    }
                    (procd_op::STATUS, status::OK) => {
                        statuses_ok += 1;
                        let payload = m.payload();
                        assert_eq!(payload.len(), process_status::SIZE);
                        assert_eq!(read_u32(payload, process_status::ID), asked_id);
                        let state = read_u16(payload, process_status::STATE);
                        let death = read_u16(payload, process_status::DEATH).unwrap();
                        if state == Some(abi::proc_state::FAILED) {
                            failed_statuses += 1;
                            assert_ne!(death, 0);
                        } else {
                            assert_eq!(death, 0);
                            assert_eq!(read_u32(payload, process_status::CODE), Some(0));
                        }
                    }
                    (procd_op::REAP, status::OK) => {
                        reaps_ok += 1;
                        let (index, before) = asked.expect("a named entry");
                        assert!(matches!(before.state, ProcState::Failed { .. }));
                        let payload = m.payload();
                        assert_eq!(payload.len(), process_status::SIZE);
                        assert_eq!(
                            read_u16(payload, process_status::STATE),
                            Some(abi::proc_state::FAILED)
                        );
                        let after = p.table().entries()[index];
                        assert_eq!(after.state, ProcState::Free);
                        assert_eq!(after.generation, before.generation.next());
                        assert_eq!(p.table().failed().count(), failed_before - 1);
                    }
                    (procd_op::REAP, status::BUSY) => {
                        reaps_busy += 1;
                        let (_, before) = asked.expect("a named entry");
                        assert!(
                            before.state.is_live()
                                || matches!(before.state, ProcState::Restarting { .. })
                        );
                    }
                    (procd_op::REAP, _) => {
                        assert_eq!(p.table().failed().count(), failed_before);
                    }
                    (procd_op::LIST, status::OK) => {
                        lists_ok += 1;
                        assert_eq!(m.payload().len(), listed * process_status::SIZE);
                    }
                    _ => {}
                }
            }
            Answer::Silent => {
                assert_eq!(badge, BADGE_KERNEL);
                let ops: Vec<u32> = k.requests[requests..].iter().map(|r| r.0).collect();
                let new_log = &k.log[logged..];
                if op == kernel_event::TIMER {
                    // Only a RESTARTING entry's own TIMER spawns (MINT, CREATE, START).
                    assert!(
                        ops.iter().all(|&o| matches!(
                            o,
                            kernel_op::MINT_ENDPOINT
                                | kernel_op::CREATE_PROCESS
                                | kernel_op::START_PROCESS
                        )),
                        "{ops:?}"
                    );
                    match timed {
                        None => {
                            timers_ignored += 1;
                            assert!(ops.is_empty() && new_log.is_empty());
                        }
                        Some((index, before)) => {
                            timers_fired += 1;
                            let after = p.table().entries()[index];
                            if after.state == ProcState::Running {
                                restarts_seen += 1;
                                assert_eq!(after.generation, before.generation.next());
                                assert_eq!(
                                    (after.image_id, after.role, after.flags),
                                    (before.image_id, before.role, before.flags)
                                );
                                assert_eq!(
                                    new_log,
                                    [format!("procd: restarted {} as {}", before.pid, after.pid)]
                                );
                            } else {
                                assert!(matches!(after.state, ProcState::Failed { .. }));
                                assert_eq!(after.generation, before.generation);
                                assert_eq!(after.pid, before.pid);
                            }
                        }
                    }
                } else {
                    // A death reads the clock and sets a timer, nothing else.
                    assert!(
                        ops.is_empty()
                            || ops == [kernel_op::READ_MONOTONIC_CLOCK]
                            || ops == [kernel_op::READ_MONOTONIC_CLOCK, kernel_op::SET_TIMER],
                        "{ops:?}"
                    );
                    if !ops.is_empty() {
                        let (index, before) = died.expect("only a death reads the clock");
                        assert!(before.restart.wants(true));
                        let after = p.table().entries()[index];
                        if ops.len() == 2 {
                            restarting_seen += 1;
                            assert!(matches!(after.state, ProcState::Restarting { .. }));
                            assert_eq!(k.timers.len(), timers + 1);
                            let (at, cookie, _) = k.timers[timers];
                            assert!(at >= k.clock);
                            assert_eq!(Some(cookie), p.table().id_of(index).map(ProcId::get));
                        } else {
                            over_bound_seen += 1;
                            assert!(matches!(after.state, ProcState::Failed { .. }));
                            assert!(
                                new_log
                                    .iter()
                                    .any(|l| l.ends_with("over its restart bound"))
                            );
                        }
                    }
                }
                let failed_now = p.table().failed().count();
                let notifies = &k.notified[notified..];
                if failed_now > failed_before {
                    failures_seen += 1;
                    assert_eq!(failed_now, failed_before + 1);
                    let (_, e) = died.or(timed).expect("a live or restarting child failed");
                    if e.flags & envelope_flag::REQUIRED != 0 {
                        assert_eq!(notifies, [(NOTIFY, notify_bit::SERVICE_FAILED)]);
                        service_failed_notifies += 1;
                    } else {
                        assert!(notifies.is_empty());
                    }
                } else {
                    assert!(notifies.is_empty());
                }
            }
        }
        // No minted copy outlives the request.
        assert!(k.badges.is_empty());
        // Every SEND is a well-formed crashd report.
        for (slot, h, payload) in &k.sends[sends..] {
            assert_eq!(*slot, CRASHD);
            assert_eq!(h.op, crashd_op::REPORT);
            assert_eq!((h.cap_count, h.reserved0, h.reserved1), (0, 0, 0));
            assert_eq!(payload.len(), crash_record::SIZE);
        }
        // procd never deletes its own envelope capabilities, keeps every live child's, and
        // holds none for a FAILED one.
        for own in [SELF_EP, KC, NOTIFY, CRASHD] {
            assert!(k.caps.contains_key(&own));
        }
        for e in p.table().live() {
            assert!(k.caps.contains_key(&e.endpoint_slot));
            assert_ne!(e.generation.get(), 0);
        }
        for e in p.table().failed() {
            assert_eq!(e.endpoint_slot, 0);
            assert_ne!(e.generation.get(), 0);
        }
        for e in p.table().entries() {
            if matches!(e.state, ProcState::Restarting { .. }) {
                assert_eq!(e.endpoint_slot, 0);
            }
            // The bound: never more restarts in a window than allowed.
            assert!(e.restart.count <= e.restart.max_restarts, "{e:?}");
        }
        let held_slots = p.table().live().count() + 4;
        assert_eq!(
            k.caps.len(),
            held_slots,
            "procd keeps exactly what it holds"
        );
    }
    println!(
        "restarting {restarting_seen}, restarts {restarts_seen}, over bound {over_bound_seen}, \
         ended restarting {ended_restarting}, timers {timers_fired}/{timers_ignored}"
    );
    assert!(probes_ok > 0, "the fuzzer reaches accepted probes");
    assert!(ends_ok > 0, "the fuzzer reaches accepted STOP and KILL");
    assert!(statuses_ok > 0, "the fuzzer reaches accepted STATUS");
    assert!(failed_statuses > 0, "the fuzzer reaches STATUS of FAILED");
    assert!(lists_ok > 0, "the fuzzer reaches accepted LIST");
    assert!(kills_seen > 0, "the fuzzer delivers KILLED deaths");
    assert!(failures_seen > 0, "the fuzzer reaches failures");
    assert!(
        service_failed_notifies > 0,
        "the fuzzer reaches SERVICE_FAILED"
    );
    assert!(reaps_ok > 0, "the fuzzer reaches accepted REAP");
    assert!(reaps_busy > 0, "the fuzzer reaches REAP of a live process");
    assert!(restarting_seen > 0, "the fuzzer reaches RESTARTING");
    assert!(restarts_seen > 0, "the fuzzer reaches restarts");
    assert!(over_bound_seen > 0, "the fuzzer reaches the restart bound");
    assert!(
        ended_restarting > 0,
        "the fuzzer reaches STOP/KILL of RESTARTING"
    );
    assert!(
        timers_fired > 0 && timers_ignored > 0,
        "the fuzzer reaches TIMERs"
    );
}
