//! Process ids and generations, STATUS and LIST.

use super::*;

/// procd's process id for table index `index` at `generation`.
pub(super) fn pid_of(index: u32, generation: u32) -> u32 {
    generation << abi::PROCD_ID_GENERATION_SHIFT | index
}

/// The ids of the running and stopping entries, by index.
pub(super) fn live_ids(p: &Procd) -> Vec<u32> {
    (0..abi::PROCD_MAX_PROCESSES)
        .filter(|&i| p.table().entries()[i].reported_state().is_some())
        .filter_map(|i| p.table().id_of(i).map(ProcId::get))
        .collect()
}

/// A STOP, KILL or STATUS request for `id`.
pub(super) fn process_req(op: u32, id: u32) -> Message {
    let mut m = Message::new();
    let p = m.start(op, process_request::SIZE);
    write_u32(p, process_request::ID, id);
    m
}

pub(super) fn list_req() -> Message {
    let mut m = Message::new();
    m.start(procd_op::LIST, 0);
    m
}

/// Send `m` with `badge` and return the (status, payload) of the reply.
pub(super) fn ask(k: &mut Model, p: &mut Procd, badge: u64, m: Message) -> (u32, Vec<u8>) {
    spawn(k, p, badge, m)
}

/// A decoded process_status record: (id, pid, image_id, role, state, flags); the reserved
/// fields must be zero.
pub(super) fn status_record(record: &[u8]) -> (u32, u32, u32, u16, u16, u16) {
    assert_eq!(record.len(), process_status::SIZE);
    assert_eq!(read_u16(record, process_status::DEATH), Some(0));
    assert_eq!(read_u32(record, process_status::CODE), Some(0));
    (
        read_u32(record, process_status::ID).unwrap(),
        read_u32(record, process_status::PID).unwrap(),
        read_u32(record, process_status::IMAGE_ID).unwrap(),
        read_u16(record, process_status::ROLE).unwrap(),
        read_u16(record, process_status::STATE).unwrap(),
        read_u16(record, process_status::FLAGS).unwrap(),
    )
}

/// Deliver the CHILD_DIED (kind KILLED) of every process KILL_PROCESS ended, in order.
pub(super) fn deliver_kills(k: &mut Model, p: &mut Procd) {
    for pid in std::mem::take(&mut k.killed) {
        kernel_event(k, p, child_died(pid, death_kind::KILLED, 0, 0));
    }
}

/// The kernel-control ops procd called, in order.
pub(super) fn kernel_ops(k: &Model) -> Vec<u32> {
    k.requests.iter().map(|r| r.0).collect()
}

#[test]
fn a_reused_entry_gets_the_next_generation_and_the_old_id_is_not_found() {
    let (mut k, mut p) = spawned(3, true);
    assert_eq!(live_ids(&p), [pid_of(0, 1), pid_of(1, 1), pid_of(2, 1)]);
    kernel_event(&mut k, &mut p, child_died(101, death_kind::EXITED, 0, 0));
    assert_eq!(
        p.table().entries()[1].generation.get(),
        2,
        "kept for the next occupant"
    );

    let (st, payload) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(4, role::TEST, 0));
    assert_eq!(st, status::OK);
    assert_eq!(read_u32(&payload, spawn_service_reply::PID), Some(103));
    assert_eq!(
        read_u32(&payload, spawn_service_reply::ID),
        Some(pid_of(1, 2))
    );
    k.requests.clear();

    // The old id names the entry's previous occupant: NOT_FOUND, and never applied to the new.
    for op in [procd_op::STATUS, procd_op::STOP, procd_op::KILL] {
        assert_eq!(
            ask(&mut k, &mut p, BADGE_ROOTD, process_req(op, pid_of(1, 1))),
            (status::NOT_FOUND, vec![])
        );
    }
    assert!(k.requests.is_empty());
    assert_eq!(p.table().entries()[1].state, ProcState::Running);

    // The new id works.
    let (st, record) = ask(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        process_req(procd_op::STATUS, pid_of(1, 2)),
    );
    assert_eq!(st, status::OK);
    assert_eq!(status_record(&record).1, 103);
    let (st, _) = ask(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        process_req(procd_op::STOP, pid_of(1, 2)),
    );
    assert_eq!(st, status::OK);
    assert_eq!(k.requests.len(), 1);
    assert_eq!(read_u32(&k.requests[0].1, kill_request::PID), Some(103));
}

#[test]
fn a_failed_start_does_not_use_up_a_generation() {
    let (mut k, mut p) = started();
    k.start_status = status::INTERNAL;
    let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(5, role::TEST, 0));
    assert_eq!(st, status::INTERNAL);
    assert_eq!(p.table().entries()[0].generation.get(), 1);
    k.start_status = status::OK;
    let (st, payload) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(5, role::TEST, 0));
    assert_eq!(st, status::OK);
    assert_eq!(
        read_u32(&payload, spawn_service_reply::ID),
        Some(pid_of(0, 1)),
        "the failed spawn's id was never handed out"
    );
}

#[test]
fn generations_wrap_from_0xffff_to_1() {
    let (mut k, mut p) = started();
    let mut last = 0;
    for round in 1..=0x1_0001u32 {
        // TIMED: no MINT, so the model's logs stay small.
        let (st, payload) = spawn(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            spawn_request(4, role::TIMED, 0),
        );
        assert_eq!(st, status::OK);
        let id = read_u32(&payload, spawn_service_reply::ID).unwrap();
        let expected = if round <= 0xFFFF {
            round
        } else {
            round - 0xFFFF
        };
        assert_eq!(id, pid_of(0, expected), "round {round}");
        let pid = read_u32(&payload, spawn_service_reply::PID).unwrap();
        kernel_event(&mut k, &mut p, child_died(pid, death_kind::EXITED, 0, 0));
        k.requests.clear();
        k.children.clear();
        k.deleted.clear();
        k.deleted_after.clear();
        k.log.clear();
        last = id;
    }
    assert_eq!(last, pid_of(0, 2));
    assert_eq!(p.table().entries()[0].generation.get(), 3);
}

#[test]
fn status_reports_one_process() {
    let (mut k, mut p) = started();
    let flags = envelope_flag::REQUIRED | envelope_flag::BOOTSTRAP_CRITICAL;
    spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(9, role::TEST, 0));
    let (st, _) = spawn(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        spawn_request(42, role::TIMED, flags),
    );
    assert_eq!(st, status::OK);
    k.requests.clear();
    let (st, record) = ask(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        process_req(procd_op::STATUS, pid_of(1, 1)),
    );
    assert_eq!(st, status::OK);
    assert_eq!(
        status_record(&record),
        (
            pid_of(1, 1),
            101,
            42,
            role::TIMED,
            abi::proc_state::RUNNING,
            flags
        )
    );
    assert!(k.requests.is_empty(), "STATUS asks the kernel nothing");
    assert!(k.log.is_empty());

    // STOPPING once STOP is accepted.
    let (st, _) = ask(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        process_req(procd_op::STOP, pid_of(1, 1)),
    );
    assert_eq!(st, status::OK);
    let (st, record) = ask(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        process_req(procd_op::STATUS, pid_of(1, 1)),
    );
    assert_eq!(st, status::OK);
    assert_eq!(status_record(&record).4, abi::proc_state::STOPPING);
}

#[test]
fn list_reports_every_live_process_in_index_order() {
    let (mut k, mut p) = started();
    assert_eq!(
        ask(&mut k, &mut p, BADGE_ROOTD, list_req()),
        (status::OK, vec![])
    );
    for image in [5, 6, 7] {
        let (st, _) = spawn(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            spawn_request(image, role::TEST, 0),
        );
        assert_eq!(st, status::OK);
    }
    // Index 0 ends; index 0 is taken again by a TIMED child, generation 2; index 2 is killed
    // but its death has not arrived.
    kernel_event(&mut k, &mut p, child_died(100, death_kind::EXITED, 0, 0));
    let (st, _) = spawn(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        spawn_request(8, role::TIMED, 1),
    );
    assert_eq!(st, status::OK);
    let (st, _) = ask(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        process_req(procd_op::KILL, pid_of(2, 1)),
    );
    assert_eq!(st, status::OK);
    k.requests.clear();

    let (st, payload) = ask(&mut k, &mut p, BADGE_ROOTD, list_req());
    assert_eq!(st, status::OK);
    let records: Vec<_> = payload
        .chunks(process_status::SIZE)
        .map(status_record)
        .collect();
    use abi::proc_state::{RUNNING, STOPPING};
    assert_eq!(
        records,
        [
            (pid_of(0, 2), 103, 8, role::TIMED, RUNNING, 1),
            (pid_of(1, 1), 101, 6, role::TEST, RUNNING, 0),
            (pid_of(2, 1), 102, 7, role::TEST, STOPPING, 0),
        ]
    );
    assert!(k.requests.is_empty(), "LIST asks the kernel nothing");

    // Each record is what STATUS says of the same id.
    for record in payload.chunks(process_status::SIZE) {
        let id = read_u32(record, process_status::ID).unwrap();
        let (st, one) = ask(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            process_req(procd_op::STATUS, id),
        );
        assert_eq!(st, status::OK);
        assert_eq!(one, record);
    }
}

#[test]
fn list_of_a_full_table_fits_one_reply() {
    let (mut k, mut p) = spawned(abi::PROCD_MAX_PROCESSES, true);
    let (st, payload) = ask(&mut k, &mut p, BADGE_ROOTD, list_req());
    assert_eq!(st, status::OK);
    assert_eq!(
        payload.len(),
        abi::PROCD_MAX_PROCESSES * process_status::SIZE
    );
    for (i, record) in payload.chunks(process_status::SIZE).enumerate() {
        let (id, pid, ..) = status_record(record);
        assert_eq!((id, pid), (pid_of(i as u32, 1), 100 + i as u32));
    }
}
