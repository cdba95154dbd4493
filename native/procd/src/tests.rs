//! Host tests: procd against a model kernel.

use super::*;
use abi::{
    BADGE_KERNEL, BADGE_ROOTD, CAP_TABLE_SLOTS, CHILD_FIRST_GRANT_SLOT, CHILD_SELF_ENDPOINT_SLOT,
    MSG_MAX_CAPS, audit_action, audit_read_request, cap_type, child_death, clock_reply,
    crash_event, crash_record, crashd_op, create_process_reply, create_process_request, death_kind,
    envelope_flag, fault_kind, grant, kernel_event, kernel_op, kill_request, message_header,
    mint_request, proc_state, procd_op, process_request, read_u16, read_u32, read_u64,
    restart_policy, rights, spawn_service_reply, spawn_service_request, start_process_request,
    timer_event, timer_request, write_u16, write_u32, write_u64,
};
use bootstrap::EnvelopeBuilder;
use std::collections::{BTreeMap, BTreeSet};

const SELF_EP: u32 = 1;
const KC: u32 = 2;
const NOTIFY: u32 = 3;
const CRASHD: u32 = 5;

/// A model of the kernel as procd sees it: a capability table, a kernel-control endpoint that
/// mints, creates and starts processes, and logs of every call.
struct Model {
    caps: BTreeMap<u32, (u32, u32)>,
    /// Badges of the capabilities in `caps` that have one (MINT_ENDPOINT's).
    badges: BTreeMap<u32, u64>,
    /// What every successful CREATE_PROCESS gave its child: (child slot, type, rights, badge)
    /// per grant, in grant order.
    children: Vec<Vec<(u32, u32, u32, u64)>>,
    log: Vec<String>,
    notified: Vec<(u32, u64)>,
    deleted: Vec<u32>,
    /// Every CAP_DELETE with the number of kernel-control requests made before it.
    deleted_after: Vec<(u32, usize)>,
    /// Every kernel-control request (op, payload).
    requests: Vec<(u32, Vec<u8>)>,
    next_pid: u32,
    next_endpoint: u32,
    /// Overrides: syscall status of the next CALL, reply status of MINT / CREATE / START.
    call_status: u32,
    mint_status: u32,
    create_status: u32,
    start_status: u32,
    /// Tamper with a successful MINT / CREATE reply.
    mint_reply_hook: Option<fn(&mut Message)>,
    create_reply_hook: Option<fn(&mut Message)>,
    /// Syscall status of every NOTIFY.
    notify_status: u32,
    /// Every NBSEND: (slot, header, payload).
    sends: Vec<(u32, MessageHeader, Vec<u8>)>,
    /// Syscall status of every NBSEND (BUSY: no receiver was waiting, the message is dropped).
    send_status: u32,
    /// Processes alive that procd created (KILL_PROCESS may end them).
    alive: BTreeSet<u32>,
    /// Processes alive that are not procd's children (KILL_PROCESS is DENIED).
    foreign: BTreeSet<u32>,
    /// Pids KILL_PROCESS ended, in order, whose CHILD_DIED (kind KILLED) the test delivers.
    killed: Vec<u32>,
    /// Override: reply status of KILL_PROCESS.
    kill_status: u32,
    /// The monotonic clock READ_MONOTONIC_CLOCK reports (ticks).
    clock: u64,
    /// Overrides: reply status of READ_MONOTONIC_CLOCK / SET_TIMER.
    clock_status: u32,
    timer_status: u32,
    /// Timers SET_TIMER accepted and not yet fired: (at_ticks, cookie, endpoint slot).
    timers: Vec<(u64, u32, u32)>,
}

impl Model {
    fn new() -> Self {
        let caps = BTreeMap::from([
            (SELF_EP, (cap_type::ENDPOINT, rights::RECV)),
            (KC, (cap_type::KERNEL_CONTROL, rights::SEND | rights::SPAWN)),
            (NOTIFY, (cap_type::NOTIFICATION, rights::SEND)),
            (CRASHD, (cap_type::ENDPOINT, rights::SEND | rights::GRANT)),
        ]);
        Self {
            caps,
            badges: BTreeMap::new(),
            children: Vec::new(),
            log: Vec::new(),
            notified: Vec::new(),
            deleted: Vec::new(),
            deleted_after: Vec::new(),
            requests: Vec::new(),
            next_pid: 100,
            next_endpoint: 7000,
            call_status: status::OK,
            mint_status: status::OK,
            create_status: status::OK,
            start_status: status::OK,
            mint_reply_hook: None,
            create_reply_hook: None,
            notify_status: status::OK,
            sends: Vec::new(),
            send_status: status::OK,
            alive: BTreeSet::new(),
            foreign: BTreeSet::from([1, 2, 3]),
            killed: Vec::new(),
            kill_status: status::OK,
            clock: 0,
            clock_status: status::OK,
            timer_status: status::OK,
            timers: Vec::new(),
        }
    }

    /// KILL_PROCESS as the kernel contract describes it: the process ends at once and its
    /// CHILD_DIED (kind KILLED) is queued (in `killed`).
    fn kill(&mut self, msg: &mut Message, payload: &[u8]) {
        if self.kill_status != status::OK {
            msg.start(self.kill_status, 0);
            return;
        }
        if payload.len() != kill_request::SIZE
            || read_u32(payload, kill_request::RESERVED) != Some(0)
        {
            msg.start(status::INVALID_ARGUMENT, 0);
            return;
        }
        let pid = read_u32(payload, kill_request::PID).unwrap();
        let code = if self.alive.remove(&pid) {
            self.killed.push(pid);
            status::OK
        } else if self.foreign.contains(&pid) {
            status::DENIED
        } else {
            status::NOT_FOUND
        };
        msg.start(code, 0);
    }

    /// SET_TIMER as the kernel contract describes it: the timer is recorded in `timers`.
    fn set_timer(&mut self, msg: &mut Message, payload: &[u8]) {
        if self.timer_status != status::OK {
            msg.start(self.timer_status, 0);
            return;
        }
        if payload.len() != timer_request::SIZE {
            msg.start(status::INVALID_ARGUMENT, 0);
            return;
        }
        let at = read_u64(payload, timer_request::AT_TICKS).unwrap();
        let cookie = read_u32(payload, timer_request::COOKIE).unwrap();
        let slot = read_u32(payload, timer_request::ENDPOINT_SLOT).unwrap();
        let code = match self.caps.get(&slot) {
            Some(&(cap_type::ENDPOINT, r)) if r & rights::RECV != 0 => status::OK,
            Some(&(cap_type::ENDPOINT, _)) => status::DENIED,
            _ => status::INVALID_ARGUMENT,
        };
        if code == status::OK {
            self.timers.push((at, cookie, slot));
        }
        msg.start(code, 0);
    }

    fn free_slot(&self) -> u32 {
        self.try_free_slot().expect("free slot")
    }

    fn try_free_slot(&self) -> Option<u32> {
        (1..CAP_TABLE_SLOTS).find(|s| !self.caps.contains_key(s))
    }

    /// MINT_ENDPOINT as the kernel contract describes it.
    fn mint(&mut self, msg: &mut Message, payload: &[u8]) {
        if self.mint_status != status::OK {
            msg.start(self.mint_status, 0);
            return;
        }
        let refuse = |msg: &mut Message, code| {
            msg.start(code, 0);
        };
        if payload.len() != mint_request::SIZE {
            return refuse(msg, status::INVALID_ARGUMENT);
        }
        let src = read_u32(payload, mint_request::SRC_SLOT).unwrap();
        let mint_rights = read_u32(payload, mint_request::RIGHTS).unwrap();
        let badge = read_u64(payload, mint_request::BADGE).unwrap();
        let Some(&(src_type, src_rights)) = self.caps.get(&src) else {
            return refuse(msg, status::INVALID_ARGUMENT);
        };
        if src_type != cap_type::ENDPOINT
            || mint_rights == 0
            || mint_rights & !(rights::SEND | rights::GRANT) != 0
            || badge == 0
            || badge == BADGE_KERNEL
        {
            return refuse(msg, status::INVALID_ARGUMENT);
        }
        if src_rights & rights::RECV == 0 {
            return refuse(msg, status::DENIED);
        }
        let Some(slot) = self.try_free_slot() else {
            return refuse(msg, status::BUSY);
        };
        self.caps.insert(slot, (cap_type::ENDPOINT, mint_rights));
        self.badges.insert(slot, badge);
        msg.start(status::OK, 0);
        let mut h = msg.header();
        h.cap_count = 1;
        h.caps[0] = slot;
        msg.set_header(&h);
        if let Some(hook) = self.mint_reply_hook {
            hook(msg);
        }
    }

    /// The capabilities a CREATE_PROCESS request grants, resolved against the table:
    /// `Err(NOT_FOUND)` for an empty source slot, `Err(DENIED)` for wider rights.
    fn resolve_grants(&self, payload: &[u8]) -> Result<Vec<(u32, u32, u32, u64)>, u32> {
        let count = read_u16(payload, create_process_request::GRANT_COUNT).unwrap();
        (0..usize::from(count))
            .map(|i| {
                let word = read_u64(payload, create_process_request::GRANTS + grant::SIZE * i)
                    .ok_or(status::INVALID_ARGUMENT)?;
                let (src, want) = (word as u32, (word >> 32) as u32);
                let &(t, have) = self.caps.get(&src).ok_or(status::NOT_FOUND)?;
                if want & !have != 0 {
                    return Err(status::DENIED);
                }
                let badge = self.badges.get(&src).copied().unwrap_or(0);
                Ok((CHILD_FIRST_GRANT_SLOT + i as u32, t, want, badge))
            })
            .collect()
    }

    /// Put capabilities into the table as if they arrived with `msg`, recording the slots in
    /// its header.
    fn deliver_caps(&mut self, msg: &mut Message, count: usize) {
        let mut h = msg.header();
        for i in 0..count {
            let slot = self.free_slot();
            self.caps.insert(slot, (cap_type::ENDPOINT, rights::SEND));
            h.caps[i] = slot;
        }
        h.cap_count = count as u8;
        msg.set_header(&h);
    }

    fn kernel_control(&mut self, msg: &mut Message) {
        let h = msg.header();
        let payload = msg.payload().to_vec();
        self.requests.push((h.op, payload.clone()));
        match h.op {
            kernel_op::MINT_ENDPOINT => self.mint(msg, &payload),
            kernel_op::KILL_PROCESS => self.kill(msg, &payload),
            kernel_op::CREATE_PROCESS => {
                if self.create_status != status::OK {
                    msg.start(self.create_status, 0);
                    return;
                }
                let granted = match self.resolve_grants(&payload) {
                    Ok(granted) => granted,
                    Err(code) => {
                        msg.start(code, 0);
                        return;
                    }
                };
                self.children.push(granted);
                let pid = self.next_pid;
                self.alive.insert(pid);
                let endpoint = self.next_endpoint;
                self.next_pid += 1;
                self.next_endpoint += 1;
                let p = msg.start(status::OK, create_process_reply::SIZE);
                write_u32(p, create_process_reply::PID, pid);
                write_u32(p, create_process_reply::ENDPOINT, endpoint);
                self.deliver_caps(msg, 1);
                let slot = msg.header().caps[0];
                self.caps
                    .insert(slot, (cap_type::ENDPOINT, rights::SEND | rights::GRANT));
                if let Some(hook) = self.create_reply_hook {
                    hook(msg);
                }
            }
            kernel_op::START_PROCESS => {
                msg.start(self.start_status, 0);
            }
            kernel_op::SET_TIMER => self.set_timer(msg, &payload),
            kernel_op::READ_MONOTONIC_CLOCK => {
                if self.clock_status != status::OK {
                    msg.start(self.clock_status, 0);
                } else if !payload.is_empty() {
                    msg.start(status::INVALID_ARGUMENT, 0);
                } else {
                    let p = msg.start(status::OK, clock_reply::SIZE);
                    write_u64(p, clock_reply::TICKS, self.clock);
                }
            }
            _ => {
                msg.start(status::INVALID_ARGUMENT, 0);
            }
        }
    }
}

impl Kernel for Model {
    fn cap_info(&mut self, slot: u32) -> Option<(u32, u32)> {
        self.caps.get(&slot).copied()
    }

    fn cap_delete(&mut self, slot: u32) {
        self.deleted.push(slot);
        self.deleted_after.push((slot, self.requests.len()));
        self.caps.remove(&slot);
        self.badges.remove(&slot);
    }

    fn call(&mut self, slot: u32, msg: &mut Message) -> u32 {
        if self.call_status != status::OK {
            return self.call_status;
        }
        assert_eq!(slot, KC, "procd only CALLs kernel-control");
        self.kernel_control(msg);
        status::OK
    }

    fn nb_send(&mut self, slot: u32, msg: &Message) -> u32 {
        self.sends
            .push((slot, msg.header(), msg.payload().to_vec()));
        self.send_status
    }

    fn notify(&mut self, slot: u32, bits: u64) -> u32 {
        self.notified.push((slot, bits));
        self.notify_status
    }

    fn debug_write(&mut self, parts: &[LogPart<'_>]) {
        let mut line = String::new();
        for part in parts {
            match *part {
                LogPart::Text(text) => line.push_str(std::str::from_utf8(text).expect("ascii")),
                LogPart::Dec(value) => line.push_str(&value.to_string()),
                LogPart::Hex(value) => line.push_str(&format!("{value:#x}")),
            }
        }
        assert!(line.len() <= abi::DEBUG_WRITE_MAX);
        self.log.push(line);
    }
}

fn envelope_bytes(slots: &[(u32, u16)]) -> Vec<u8> {
    let mut b = EnvelopeBuilder::new(role::PROCD, envelope_flag::REQUIRED).expect("role");
    for &(slot, purpose) in slots {
        b.push(slot, purpose).expect("slot");
    }
    let mut out = vec![0u8; abi::ENVELOPE_MAX];
    let n = b.write(&mut out).expect("fits");
    out.truncate(n);
    out
}

fn procd_envelope() -> Vec<u8> {
    envelope_bytes(&[
        (SELF_EP, cap_purpose::SELF_ENDPOINT),
        (KC, cap_purpose::KERNEL_CONTROL),
        (NOTIFY, cap_purpose::BOOTSTRAP_NOTIFY),
        (CRASHD, cap_purpose::CRASHD_ENDPOINT),
    ])
}

fn started() -> (Model, Procd) {
    let mut k = Model::new();
    let p = start(&mut k, Some(&procd_envelope())).expect("starts");
    k.log.clear();
    k.notified.clear();
    (k, p)
}

fn spawn_request(image_id: u32, role: u16, flags: u16) -> Message {
    let mut m = Message::new();
    let p = m.start(procd_op::SPAWN_SERVICE, spawn_service_request::SIZE);
    write_u32(p, spawn_service_request::IMAGE_ID, image_id);
    write_u16(p, spawn_service_request::ROLE, role);
    write_u16(p, spawn_service_request::FLAGS, flags);
    m
}

/// Assert `msg` is a well-formed reply and return (status, payload).
fn reply(msg: &Message) -> (u32, Vec<u8>) {
    let h = msg.header();
    assert_eq!(h.cap_count, 0);
    assert_eq!(h.reserved0, 0);
    assert_eq!(h.reserved1, 0);
    assert_eq!(h.caps, [0; MSG_MAX_CAPS]);
    (h.op, msg.payload().to_vec())
}

fn spawn(k: &mut Model, p: &mut Procd, badge: u64, mut m: Message) -> (u32, Vec<u8>) {
    assert_eq!(p.handle(k, badge, &mut m), Answer::Reply);
    reply(&m)
}

// ------------------------------------------------------------------ startup

#[test]
fn startup_accepts_and_notifies_ready() {
    let mut k = Model::new();
    let p = start(&mut k, Some(&procd_envelope())).expect("starts");
    assert_eq!(k.log, ["procd: envelope accepted"]);
    assert_eq!(k.notified, [(NOTIFY, notify_bit::READY)]);
    assert_eq!(p.self_endpoint(), SELF_EP);
    assert_eq!(p.table().live().count(), 0);
}

#[test]
fn startup_refuses_a_null_envelope() {
    let mut k = Model::new();
    assert_eq!(
        start(&mut k, None).map(|_| ()),
        Err(startup_status::ENVELOPE_NULL)
    );
    assert_eq!(k.log, ["procd: startup refused: ENVELOPE_NULL"]);
    assert!(k.notified.is_empty());
}

#[test]
fn startup_refuses_bad_envelopes_by_name() {
    let mut bad_magic = procd_envelope();
    bad_magic[0] ^= 0xFF;
    let mut other_role = procd_envelope();
    write_u16(&mut other_role, abi::envelope_header::ROLE, role::TEST);
    let cases: [(&[u8], u64, &str); 3] = [
        (&bad_magic, startup_status::BAD_MAGIC, "BAD_MAGIC"),
        (&other_role, startup_status::BAD_ROLE, "BAD_ROLE"),
        (&[1, 2, 3], startup_status::BAD_LENGTH, "BAD_LENGTH"),
    ];
    for (bytes, code, name) in cases {
        let mut k = Model::new();
        assert_eq!(start(&mut k, Some(bytes)).map(|_| ()), Err(code));
        assert_eq!(k.log, [format!("procd: startup refused: {name}")]);
        assert!(k.notified.is_empty());
    }
}

#[test]
fn startup_refuses_a_bad_intake() {
    // Missing kernel control purpose.
    let mut k = Model::new();
    let env = envelope_bytes(&[
        (SELF_EP, cap_purpose::SELF_ENDPOINT),
        (NOTIFY, cap_purpose::BOOTSTRAP_NOTIFY),
    ]);
    assert_eq!(
        start(&mut k, Some(&env)).map(|_| ()),
        Err(startup_status::INTAKE_MISSING)
    );
    assert_eq!(k.log, ["procd: startup refused: INTAKE_MISSING"]);

    // Kernel control without SPAWN.
    let mut k = Model::new();
    k.caps.insert(KC, (cap_type::KERNEL_CONTROL, rights::SEND));
    assert_eq!(
        start(&mut k, Some(&procd_envelope())).map(|_| ()),
        Err(startup_status::INTAKE_RIGHTS)
    );
    assert_eq!(k.log, ["procd: startup refused: INTAKE_RIGHTS"]);

    // Notification slot holding an endpoint.
    let mut k = Model::new();
    k.caps.insert(NOTIFY, (cap_type::ENDPOINT, rights::SEND));
    assert_eq!(
        start(&mut k, Some(&procd_envelope())).map(|_| ()),
        Err(startup_status::INTAKE_WRONG_TYPE)
    );

    // Empty self-endpoint slot.
    let mut k = Model::new();
    k.caps.remove(&SELF_EP);
    assert_eq!(
        start(&mut k, Some(&procd_envelope())).map(|_| ()),
        Err(startup_status::INTAKE_MISSING)
    );
}

// ------------------------------------------------------------------ SPAWN_SERVICE

#[test]
fn spawn_service_creates_and_starts() {
    let (mut k, mut p) = started();
    let flags = envelope_flag::REQUIRED | envelope_flag::BOOTSTRAP_CRITICAL;
    let (st, payload) = spawn(
        &mut k,
        &mut p,
        BADGE_ROOTD,
        spawn_request(42, role::TIMED, flags),
    );
    assert_eq!(st, status::OK);
    assert_eq!(payload.len(), spawn_service_reply::SIZE);
    assert_eq!(read_u32(&payload, spawn_service_reply::PID), Some(100));
    assert_eq!(
        read_u32(&payload, spawn_service_reply::ENDPOINT),
        Some(7000)
    );
    assert_eq!(
        read_u32(&payload, spawn_service_reply::ID),
        Some(1 << abi::PROCD_ID_GENERATION_SHIFT),
        "index 0, generation 1"
    );
    assert_eq!(read_u32(&payload, spawn_service_reply::RESERVED), Some(0));

    // CREATE_PROCESS then START_PROCESS.
    assert_eq!(k.requests.len(), 2);
    let (op, create) = &k.requests[0];
    assert_eq!(*op, kernel_op::CREATE_PROCESS);
    assert_eq!(read_u32(create, create_process_request::IMAGE_ID), Some(42));
    // TIMED: kernel control (required, SEND) and bootstrap notify (optional, SEND).
    assert_eq!(
        read_u16(create, create_process_request::GRANT_COUNT),
        Some(2)
    );
    let grant = |i: usize| read_u64(create, create_process_request::GRANTS + 8 * i);
    assert_eq!(
        grant(0),
        Some(u64::from(KC) | (u64::from(rights::SEND) << 32))
    );
    assert_eq!(
        grant(1),
        Some(u64::from(NOTIFY) | (u64::from(rights::SEND) << 32))
    );
    for i in 2..create_process_request::GRANTS_COUNT {
        assert_eq!(grant(i), Some(0));
    }
    assert_eq!(read_u64(create, create_process_request::BADGE), Some(0));
    assert_eq!(
        read_u32(create, create_process_request::SUPERVISOR_SLOT),
        Some(SELF_EP),
        "procd supervises its children on its own endpoint"
    );
    assert_eq!(read_u32(create, create_process_request::RESERVED), Some(0));
    let env_len = usize::from(read_u16(create, create_process_request::ENVELOPE_LEN).unwrap());
    assert_eq!(create.len(), create_process_request::SIZE + env_len);
    let env = bootstrap::parse(&create[create_process_request::SIZE..], role::TIMED)
        .expect("child envelope parses");
    assert_eq!(env.flags(), flags);
    assert_eq!(
        env.slot_for(cap_purpose::SELF_ENDPOINT),
        Some(CHILD_SELF_ENDPOINT_SLOT)
    );
    assert_eq!(
        env.slot_for(cap_purpose::KERNEL_CONTROL),
        Some(CHILD_FIRST_GRANT_SLOT)
    );
    assert_eq!(
        env.slot_for(cap_purpose::BOOTSTRAP_NOTIFY),
        Some(CHILD_FIRST_GRANT_SLOT + 1)
    );
    assert_eq!(env.slots().len(), 3);

    let (op, start_req) = &k.requests[1];
    assert_eq!(*op, kernel_op::START_PROCESS);
    assert_eq!(start_req.len(), start_process_request::SIZE);
    assert_eq!(read_u32(start_req, start_process_request::PID), Some(100));
    assert_eq!(
        read_u32(start_req, start_process_request::RESERVED),
        Some(0)
    );

    let live: Vec<_> = p.table().live().copied().collect();
    assert_eq!(live.len(), 1);
    let e = live[0];
    assert_eq!(e.state, ProcState::Running);
    assert_eq!(
        (e.pid, e.endpoint, e.role, e.image_id, e.flags),
        (100, 7000, role::TIMED, 42, flags)
    );
    assert!(
        k.caps.contains_key(&e.endpoint_slot),
        "procd keeps the child endpoint cap"
    );
    assert!(k.deleted.is_empty());
    assert!(k.log.is_empty());
}

#[test]
fn spawn_ids_come_from_the_kernel_in_order() {
    let (mut k, mut p) = started();
    for i in 0..3 {
        let (st, payload) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(9, role::TEST, 0));
        assert_eq!(st, status::OK);
        assert_eq!(read_u32(&payload, 0), Some(100 + i));
        assert_eq!(read_u32(&payload, 4), Some(7000 + i));
        assert_eq!(read_u32(&payload, 8), Some(1 << 16 | i));
        assert_eq!(read_u32(&payload, 12), Some(0));
    }
    let slots: Vec<u32> = p.table().live().map(|e| e.endpoint_slot).collect();
    let mut unique = slots.clone();
    unique.dedup();
    assert_eq!(slots, unique);
    assert_eq!(p.table().entries()[0].pid, 100);
    assert_eq!(p.table().entries()[2].pid, 102);
}

#[test]
fn spawn_requires_the_rootd_badge() {
    let (mut k, mut p) = started();
    for badge in [0, 2, BADGE_KERNEL - 1] {
        let (st, payload) = spawn(&mut k, &mut p, badge, spawn_request(1, role::TEST, 0));
        assert_eq!(st, status::DENIED);
        assert!(payload.is_empty());
    }
    assert!(k.requests.is_empty());
}

#[test]
fn spawn_rejects_malformed_requests() {
    let (mut k, mut p) = started();
    let mut short = spawn_request(1, role::TEST, 0);
    let mut h = short.header();
    h.payload_len = 7;
    short.set_header(&h);
    let mut long = spawn_request(1, role::TEST, 0);
    h.payload_len = 9;
    long.set_header(&h);
    let mut reserved0 = spawn_request(1, role::TEST, 0);
    let mut h = reserved0.header();
    h.reserved0 = 1;
    reserved0.set_header(&h);
    let mut reserved1 = spawn_request(1, role::TEST, 0);
    let mut h = reserved1.header();
    h.reserved1 = 1 << 63;
    reserved1.set_header(&h);
    let cases = [
        short,
        long,
        reserved0,
        reserved1,
        spawn_request(0, role::TEST, 0),
        spawn_request(1, 0, 0),
        spawn_request(1, 0x99, 0),
        spawn_request(1, role::ROOTD, 0),
        spawn_request(1, role::PROCD, 0),
        spawn_request(1, role::GENERIC, 0),
        // The lowest flag bit outside envelope_flag::ALL (0x7): unknown.
        spawn_request(1, role::TEST, envelope_flag::ALL + 1),
        spawn_request(1, role::TEST, 0xFFFF),
    ];
    for m in cases {
        let (st, payload) = spawn(&mut k, &mut p, BADGE_ROOTD, m);
        assert_eq!(st, status::INVALID_ARGUMENT);
        assert!(payload.is_empty());
    }
    assert!(k.requests.is_empty());
    assert_eq!(p.table().live().count(), 0);
}

#[test]
fn request_caps_are_deleted_and_refused() {
    let (mut k, mut p) = started();
    let mut m = spawn_request(1, role::TEST, 0);
    k.deliver_caps(&mut m, 2);
    let delivered = m.header().cap_slots().to_vec();
    assert_eq!(p.handle(&mut k, BADGE_ROOTD, &mut m), Answer::Reply);
    assert_eq!(reply(&m).0, status::INVALID_ARGUMENT);
    assert_eq!(k.deleted, delivered);
    assert!(delivered.iter().all(|s| !k.caps.contains_key(s)));
    assert!(k.requests.is_empty());

    // Wrong badge as well: DENIED comes first, the caps still go.
    k.deleted.clear();
    let mut m = spawn_request(1, role::TEST, 0);
    k.deliver_caps(&mut m, 1);
    let delivered = m.header().cap_slots().to_vec();
    assert_eq!(p.handle(&mut k, 0, &mut m), Answer::Reply);
    assert_eq!(reply(&m).0, status::DENIED);
    assert_eq!(k.deleted, delivered);

    // Unknown op with caps.
    k.deleted.clear();
    let mut m = Message::new();
    m.start(0x999, 0);
    k.deliver_caps(&mut m, MSG_MAX_CAPS);
    assert_eq!(p.handle(&mut k, BADGE_ROOTD, &mut m), Answer::Reply);
    assert_eq!(reply(&m).0, status::INVALID_ARGUMENT);
    assert_eq!(k.deleted.len(), MSG_MAX_CAPS);
}

#[test]
fn own_slots_are_never_deleted() {
    let (mut k, mut p) = started();
    let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(1, role::TEST, 0));
    assert_eq!(st, status::OK);
    k.deleted.clear();
    let child_slot = p.table().entries()[0].endpoint_slot;
    // A (broken) kernel claims caps landed in procd's own slots.
    let mut m = Message::new();
    m.start(procd_op::SPAWN_SERVICE, 0);
    let mut h = m.header();
    h.cap_count = 4;
    h.caps = [SELF_EP, KC, child_slot, CRASHD];
    m.set_header(&h);
    assert_eq!(p.handle(&mut k, BADGE_ROOTD, &mut m), Answer::Reply);
    assert_eq!(reply(&m).0, status::INVALID_ARGUMENT);
    assert!(k.deleted.is_empty());
}

#[test]
fn unknown_ops_are_invalid() {
    let (mut k, mut p) = started();
    for op in [
        0,
        1,
        kernel_op::CREATE_PROCESS,
        kernel_op::KILL_PROCESS,
        0x401,
        0x40C, // 0x403 is SPAWN now
        0x40B,
        u32::MAX,
    ] {
        let mut m = Message::new();
        m.start(op, 8);
        assert_eq!(p.handle(&mut k, BADGE_ROOTD, &mut m), Answer::Reply);
        assert_eq!(reply(&m), (status::INVALID_ARGUMENT, vec![]));
    }
    assert!(k.requests.is_empty());
}

#[test]
fn a_full_table_is_busy() {
    let (mut k, mut p) = started();
    for _ in 0..abi::PROCD_MAX_PROCESSES {
        let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(3, role::TEST, 0));
        assert_eq!(st, status::OK);
    }
    let before = k.requests.len();
    let (st, payload) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(3, role::TEST, 0));
    assert_eq!(st, status::BUSY);
    assert!(payload.is_empty());
    assert_eq!(k.requests.len(), before, "no kernel call when full");
}

#[test]
fn create_failure_is_passed_through() {
    for code in [status::NOT_FOUND, status::DENIED, status::BUSY, 0x1234] {
        let (mut k, mut p) = started();
        k.create_status = code;
        let (st, payload) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(5, role::TEST, 0));
        assert_eq!(st, code);
        assert!(payload.is_empty());
        // MINT (TEST lists PROCD_ENDPOINT), then CREATE.
        assert_eq!(k.requests.len(), 2);
        assert_eq!(p.table().live().count(), 0);
        assert_eq!(
            k.deleted.len(),
            1,
            "the minted copy is deleted after a failed CREATE"
        );
        assert_eq!(
            k.caps.keys().copied().collect::<Vec<_>>(),
            [SELF_EP, KC, NOTIFY, CRASHD]
        );
    }
}

#[test]
fn call_syscall_failure_is_passed_through() {
    let (mut k, mut p) = started();
    k.call_status = status::DENIED;
    let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(5, role::TEST, 0));
    assert_eq!(st, status::DENIED);
    assert_eq!(p.table().live().count(), 0);
}

#[test]
fn start_failure_frees_the_entry_and_drops_the_endpoint() {
    let (mut k, mut p) = started();
    k.start_status = status::INTERNAL;
    let (st, payload) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(5, role::TEST, 0));
    assert_eq!(st, status::INTERNAL);
    assert!(payload.is_empty());
    // MINT, CREATE, START.
    assert_eq!(k.requests.len(), 3);
    assert_eq!(p.table().live().count(), 0);
    assert_eq!(
        k.deleted.len(),
        2,
        "the minted copy and the child endpoint cap are dropped"
    );
    assert_eq!(
        k.caps.keys().copied().collect::<Vec<_>>(),
        [SELF_EP, KC, NOTIFY, CRASHD]
    );
    // The freed entry is reused.
    k.start_status = status::OK;
    let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(5, role::TEST, 0));
    assert_eq!(st, status::OK);
    assert_eq!(p.table().entries()[0].state, ProcState::Running);
}

#[test]
fn malformed_create_replies_are_internal() {
    let hooks: [fn(&mut Message); 5] = [
        // No capability.
        |m| {
            let mut h = m.header();
            h.cap_count = 0;
            m.set_header(&h);
        },
        // Short payload.
        |m| {
            let mut h = m.header();
            h.payload_len = 4;
            m.set_header(&h);
        },
        // The endpoint cap "landed" in procd's kernel-control slot.
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
        k.create_reply_hook = Some(hook);
        let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(5, role::TEST, 0));
        assert_eq!(st, status::INTERNAL);
        assert_eq!(
            k.requests.iter().map(|r| r.0).collect::<Vec<_>>(),
            [kernel_op::MINT_ENDPOINT, kernel_op::CREATE_PROCESS],
            "no START after a bad CREATE reply"
        );
        assert_eq!(p.table().live().count(), 0);
        assert!(!k.deleted.contains(&KC));
        assert!(k.badges.is_empty(), "the minted copy is gone");
    }
}

#[test]
fn extra_caps_in_a_create_reply_are_dropped() {
    let (mut k, mut p) = started();
    k.create_reply_hook = Some(|m| {
        let mut h = m.header();
        h.cap_count = 2;
        h.caps[1] = 40;
        m.set_header(&h);
    });
    k.caps.insert(40, (cap_type::ENDPOINT, rights::SEND));
    let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(5, role::TEST, 0));
    assert_eq!(st, status::OK);
    // The minted copy (right after CREATE), then the extra capability.
    assert_eq!(k.deleted.len(), 2);
    assert_eq!(k.deleted[1], 40);
    assert!(k.badges.is_empty());
}

#[test]
fn reply_overwrites_the_request() {
    let (mut k, mut p) = started();
    let mut m = spawn_request(1, role::TEST, 0);
    m.payload_area_mut().fill(0xEE);
    let mut h = m.header();
    h.payload_len = 900;
    m.set_header(&h);
    assert_eq!(p.handle(&mut k, BADGE_ROOTD, &mut m), Answer::Reply);
    let (st, payload) = reply(&m);
    assert_eq!(st, status::INVALID_ARGUMENT);
    assert!(payload.is_empty());
    assert_eq!(m.wire_len(), message_header::SIZE);
}

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
                .filter_map(|i| p.table().id_of(i))
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
        let asked = asked_id.and_then(|id| p.table().lookup(id).map(|(i, e)| (i, *e)));
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
            .and_then(|cookie| p.table().lookup(cookie))
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
                        assert_eq!(after.generation, next_generation(before.generation));
                    }
                    (procd_op::STOP | procd_op::KILL, status::OK) => {
                        ends_ok += 1;
                        assert_eq!(k.requests.len(), requests + 1);
                        assert_eq!(k.requests[requests].0, kernel_op::KILL_PROCESS);
                        let (_, e) = p.table().lookup(asked_id.unwrap()).expect("live");
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
                        assert_eq!(after.generation, next_generation(before.generation));
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
                                assert_eq!(after.generation, next_generation(before.generation));
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
                            assert_eq!(Some(cookie), p.table().id_of(index));
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
            assert_ne!(e.generation, 0);
        }
        for e in p.table().failed() {
            assert_eq!(e.endpoint_slot, 0);
            assert_ne!(e.generation, 0);
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

// ------------------------------------------------------------------ CHILD_DIED

/// A CHILD_DIED message as the kernel sends it.
fn child_died(pid: u32, kind: u16, code: u64, address: u64) -> Message {
    let mut m = Message::new();
    let p = m.start(kernel_event::CHILD_DIED, child_death::SIZE);
    write_u32(p, child_death::PID, pid);
    write_u16(p, child_death::KIND, kind);
    write_u64(p, child_death::CODE, code);
    write_u64(p, child_death::ADDRESS, address);
    m
}

/// Deliver a kernel event: it must get no reply.
fn kernel_event(k: &mut Model, p: &mut Procd, mut m: Message) {
    assert_eq!(p.handle(k, BADGE_KERNEL, &mut m), Answer::Silent);
}

/// Spawn `n` TEST children (pids 100.., endpoints 7000..) and clear the model's logs.
fn spawned(n: usize, crashd: bool) -> (Model, Procd) {
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

fn live_pids(p: &Procd) -> Vec<u32> {
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
    assert_eq!(p.table().entries()[1].generation, 2);
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
                death: death_kind::FAULTED,
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

// ------------------------------------------------------------------ PROCD_ENDPOINT and PROBE_COMPLETE

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
fn child_cap(k: &Model, purpose: u16) -> Option<(u32, u32, u32, u64)> {
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
fn probe() -> Message {
    let mut m = Message::new();
    m.start(procd_op::PROBE_COMPLETE, 0);
    m
}

fn probe_from(k: &mut Model, p: &mut Procd, badge: u64, mut m: Message) -> u32 {
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

// ------------------------------------------------------------------ process ids, STOP, KILL, STATUS, LIST

/// procd's process id for table index `index` at `generation`.
fn pid_of(index: u32, generation: u32) -> u32 {
    generation << abi::PROCD_ID_GENERATION_SHIFT | index
}

/// The ids of the running and stopping entries, by index.
fn live_ids(p: &Procd) -> Vec<u32> {
    (0..abi::PROCD_MAX_PROCESSES)
        .filter(|&i| p.table().entries()[i].reported_state().is_some())
        .filter_map(|i| p.table().id_of(i))
        .collect()
}

/// A STOP, KILL or STATUS request for `id`.
fn process_req(op: u32, id: u32) -> Message {
    let mut m = Message::new();
    let p = m.start(op, process_request::SIZE);
    write_u32(p, process_request::ID, id);
    m
}

fn list_req() -> Message {
    let mut m = Message::new();
    m.start(procd_op::LIST, 0);
    m
}

/// Send `m` with `badge` and return the (status, payload) of the reply.
fn ask(k: &mut Model, p: &mut Procd, badge: u64, m: Message) -> (u32, Vec<u8>) {
    spawn(k, p, badge, m)
}

/// A decoded process_status record: (id, pid, image_id, role, state, flags); the reserved
/// fields must be zero.
fn status_record(record: &[u8]) -> (u32, u32, u32, u16, u16, u16) {
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
fn deliver_kills(k: &mut Model, p: &mut Procd) {
    for pid in std::mem::take(&mut k.killed) {
        kernel_event(k, p, child_died(pid, death_kind::KILLED, 0, 0));
    }
}

/// The kernel-control ops procd called, in order.
fn kernel_ops(k: &Model) -> Vec<u32> {
    k.requests.iter().map(|r| r.0).collect()
}

#[test]
fn a_reused_entry_gets_the_next_generation_and_the_old_id_is_not_found() {
    let (mut k, mut p) = spawned(3, true);
    assert_eq!(live_ids(&p), [pid_of(0, 1), pid_of(1, 1), pid_of(2, 1)]);
    kernel_event(&mut k, &mut p, child_died(101, death_kind::EXITED, 0, 0));
    assert_eq!(
        p.table().entries()[1].generation,
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
    assert_eq!(p.table().entries()[0].generation, 1);
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
    assert_eq!(p.table().entries()[0].generation, 3);
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
    assert_eq!(p.table().entries()[0].generation, 2);
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

// ------------------------------------------------------------------ failures and REAP

/// A decoded process_status record of any state: (id, pid, image_id, role, state, flags, death,
/// code).
fn full_record(record: &[u8]) -> (u32, u32, u32, u16, u16, u16, u16, u32) {
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
fn spawned_with(flags: &[u16]) -> (Model, Procd) {
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

const FAILED: u16 = abi::proc_state::FAILED;

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
        assert_eq!(held.state, ProcState::Failed { death, code }, "{line}");
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
        assert_eq!((e.state, e.generation), (ProcState::Free, 2));
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
    assert_eq!((freed.state, freed.generation), (ProcState::Free, 2));
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

// ------------------------------------------------------------------ restarts

const RESTARTING: u16 = abi::proc_state::RESTARTING;

/// A SPAWN_SERVICE request for image 4, role TEST with `flags` and a restart policy.
fn restart_request(
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
fn spawned_restarting(
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
fn timer_msg(cookie: u32, ticks: u64) -> Message {
    let mut m = Message::new();
    let p = m.start(kernel_event::TIMER, timer_event::SIZE);
    write_u32(p, timer_event::COOKIE, cookie);
    write_u64(p, timer_event::TICKS, ticks);
    m
}

/// Fire the oldest pending timer: advance the clock to its time (if later) and deliver TIMER.
fn fire(k: &mut Model, p: &mut Procd) {
    let (at, cookie, slot) = k.timers.remove(0);
    assert_eq!(slot, SELF_EP, "procd's TIMERs come to its own endpoint");
    k.clock = k.clock.max(at);
    kernel_event(k, p, timer_msg(cookie, k.clock));
}

/// The STATUS (status, record) of `id`.
fn status_of(k: &mut Model, p: &mut Procd, id: u32) -> (u32, Vec<u8>) {
    ask(k, p, BADGE_ROOTD, process_req(procd_op::STATUS, id))
}

fn fault(pid: u32) -> Message {
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
            death: death_kind::FAULTED,
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
        (e.pid, e.generation, e.image_id, e.role, e.flags),
        (101, 2, 4, role::TEST, flags)
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
    assert_eq!(p.table().generation(0), Some(2));
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
        assert_eq!(p.table().entries()[0].generation, 2 + n);
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
        assert_eq!(p.table().generation(0), Some(2));
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
        restart_policy::NEVER,
        restart_policy::ON_FAILURE,
        restart_policy::ALWAYS,
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
                death: death_kind::FAULTED,
                code: fault_kind::UNMAPPED_READ as u32
            }
        );
        assert_eq!((e.pid, e.generation, e.endpoint_slot), (100, 1, 0));
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
    assert_eq!((e.pid, e.generation, e.restart.count), (102, 3, 1));
    k.clock = 1500;
    k.log.clear();
    kernel_event(&mut k, &mut p, child_died(102, death_kind::EXITED, 0, 0));
    assert_eq!(k.log[1], "procd: child 102 over its restart bound");
}

// ------------------------------------------------------------------ audit log

/// An AUDIT_READ request from `from_seq` with `reserved`.
fn audit_req(from_seq: u32, reserved: u32) -> Message {
    let mut m = Message::new();
    let p = m.start(procd_op::AUDIT_READ, audit_read_request::SIZE);
    write_u32(p, audit_read_request::FROM_SEQ, from_seq);
    write_u32(p, audit_read_request::RESERVED, reserved);
    m
}

/// A decoded audit record: (seq, action, authority, pid, role, requester, detail); reserved
/// must be zero.
type Audited = (u32, u16, u16, u32, u16, u64, u64);

fn audit_records(payload: &[u8]) -> Vec<Audited> {
    assert_eq!(payload.len() % audit_record::SIZE, 0);
    payload
        .chunks_exact(audit_record::SIZE)
        .map(|r| {
            assert_eq!(read_u16(r, audit_record::RESERVED), Some(0));
            (
                read_u32(r, audit_record::SEQ).unwrap(),
                read_u16(r, audit_record::ACTION).unwrap(),
                read_u16(r, audit_record::AUTHORITY).unwrap(),
                read_u32(r, audit_record::PID).unwrap(),
                read_u16(r, audit_record::ROLE).unwrap(),
                read_u64(r, audit_record::REQUESTER).unwrap(),
                read_u64(r, audit_record::DETAIL).unwrap(),
            )
        })
        .collect()
}

/// AUDIT_READ from `from_seq` by rootd: the records replied.
fn read_audit(k: &mut Model, p: &mut Procd, from_seq: u32) -> Vec<Audited> {
    let (st, payload) = ask(k, p, BADGE_ROOTD, audit_req(from_seq, 0));
    assert_eq!(st, status::OK);
    audit_records(&payload)
}

/// The (purpose, rights) of every grant procd plans for a TEST child, PROCD_ENDPOINT last.
fn test_child_grants() -> Vec<(u16, u32)> {
    let env = bootstrap::parse(&procd_envelope(), role::PROCD).expect("envelope");
    let plan = capabi::plan_child_grants(role::TEST, &env).expect("plan");
    let mut grants: Vec<(u16, u32)> = plan
        .grants()
        .iter()
        .map(|g| (g.purpose, g.rights))
        .collect();
    grants.push((cap_purpose::PROCD_ENDPOINT, rights::SEND));
    grants
}

/// The records of one launch of a TEST child (image 4 unless given) as pid `pid`, from `seq`.
fn launch_records(seq: u32, pid: u32, image_id: u32, requester: u64) -> Vec<Audited> {
    let kc = cap_purpose::KERNEL_CONTROL;
    let mut out = vec![(
        seq,
        audit_action::CREATE,
        kc,
        pid,
        role::TEST,
        requester,
        u64::from(image_id),
    )];
    for (purpose, granted) in test_child_grants() {
        let detail = u64::from(purpose) | u64::from(granted) << 16;
        out.push((
            0,
            audit_action::GRANT,
            kc,
            pid,
            role::TEST,
            requester,
            detail,
        ));
    }
    out.push((0, audit_action::START, kc, pid, role::TEST, requester, 0));
    for (i, r) in out.iter_mut().enumerate() {
        r.0 = seq + i as u32;
    }
    out
}

#[test]
fn a_spawn_records_create_its_grants_and_start() {
    let (mut k, mut p) = started();
    assert!(read_audit(&mut k, &mut p, 0).is_empty(), "empty at first");
    let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(5, role::TEST, 0));
    assert_eq!(st, status::OK);
    let records = read_audit(&mut k, &mut p, 0);
    assert_eq!(records, launch_records(0, 100, 5, BADGE_ROOTD));
    // The GRANT rights are the ones the kernel was asked for, in grant order.
    let granted: Vec<u64> = records
        .iter()
        .filter(|r| r.1 == audit_action::GRANT)
        .map(|r| r.6 >> 16)
        .collect();
    let asked: Vec<u64> = k.children[0].iter().map(|c| u64::from(c.2)).collect();
    assert_eq!(granted, asked);
    assert!(
        records.iter().any(|r| r.1 == audit_action::GRANT
            && r.6 & 0xFFFF == u64::from(cap_purpose::PROCD_ENDPOINT))
    );
    // AUDIT_READ itself records nothing and calls no kernel.
    assert_eq!(read_audit(&mut k, &mut p, 0), records);
}

#[test]
fn failed_spawns_record_nothing_but_a_failed_start_keeps_its_create() {
    let (mut k, mut p) = started();
    k.mint_status = status::BUSY;
    assert_eq!(
        spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(5, role::TEST, 0)).0,
        status::BUSY
    );
    k.mint_status = status::OK;
    k.create_status = status::DENIED;
    assert_eq!(
        spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(5, role::TEST, 0)).0,
        status::DENIED
    );
    k.create_status = status::OK;
    assert_eq!(
        spawn(&mut k, &mut p, 7, spawn_request(5, role::TEST, 0)).0,
        status::DENIED
    );
    assert_eq!(
        spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(0, role::TEST, 0)).0,
        status::INVALID_ARGUMENT
    );
    k.create_reply_hook = Some(|m: &mut Message| {
        let mut h = m.header();
        h.cap_count = 0;
        h.caps = [0; MSG_MAX_CAPS];
        m.set_header(&h);
    });
    assert_eq!(
        spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(5, role::TEST, 0)).0,
        status::INTERNAL
    );
    k.create_reply_hook = None;
    assert!(read_audit(&mut k, &mut p, 0).is_empty());
    // The kernel created the process; its START failed: CREATE and GRANTs only.
    k.start_status = status::INTERNAL;
    let pid = k.next_pid;
    assert_eq!(
        spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(5, role::TEST, 0)).0,
        status::INTERNAL
    );
    let mut expected = launch_records(0, pid, 5, BADGE_ROOTD);
    expected.pop();
    assert_eq!(read_audit(&mut k, &mut p, 0), expected);
}

#[test]
fn stop_kill_and_reap_are_recorded_with_rootd_and_their_authority() {
    let (mut k, mut p) = spawned(2, true);
    let base = p.audit().next_seq();
    let kc = cap_purpose::KERNEL_CONTROL;
    assert_eq!(
        ask(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            process_req(procd_op::STOP, pid_of(0, 1))
        )
        .0,
        status::OK
    );
    assert_eq!(
        ask(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            process_req(procd_op::KILL, pid_of(1, 1))
        )
        .0,
        status::OK
    );
    // Failures record nothing: BUSY (already stopping), then a kernel refusal.
    assert_eq!(
        ask(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            process_req(procd_op::KILL, pid_of(1, 1))
        )
        .0,
        status::BUSY
    );
    assert_eq!(
        ask(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            process_req(procd_op::REAP, pid_of(1, 1))
        )
        .0,
        status::BUSY
    );
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
    assert_eq!(
        ask(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            process_req(procd_op::REAP, pid_of(1, 1))
        )
        .0,
        status::NOT_FOUND
    );
    assert_eq!(
        read_audit(&mut k, &mut p, base),
        [
            (
                base,
                audit_action::STOP,
                kc,
                100,
                role::TEST,
                BADGE_ROOTD,
                0
            ),
            (
                base + 1,
                audit_action::KILL,
                kc,
                101,
                role::TEST,
                BADGE_ROOTD,
                0
            ),
            (
                base + 2,
                audit_action::REAP,
                0,
                101,
                role::TEST,
                BADGE_ROOTD,
                u64::from(death_kind::KILLED)
            ),
        ]
    );
    // A refused KILL_PROCESS records nothing.
    let (mut k, mut p) = spawned(1, true);
    let base = p.audit().next_seq();
    k.kill_status = status::DENIED;
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
    assert!(read_audit(&mut k, &mut p, base).is_empty());
}

#[test]
fn a_policy_restart_records_restart_then_the_launch_by_the_kernel() {
    let (mut k, mut p) = spawned_restarting(0, restart_policy::ON_FAILURE, 3, 10_000, 250);
    let base = p.audit().next_seq();
    kernel_event(&mut k, &mut p, fault(100));
    assert!(
        read_audit(&mut k, &mut p, base).is_empty(),
        "a death records nothing"
    );
    fire(&mut k, &mut p);
    let mut expected = vec![(
        base,
        audit_action::RESTART,
        0,
        101,
        role::TEST,
        BADGE_KERNEL,
        100,
    )];
    expected.extend(launch_records(base + 1, 101, 4, BADGE_KERNEL));
    assert_eq!(read_audit(&mut k, &mut p, base), expected);
    // A STOP while RESTARTING (no kernel call) is recorded with authority 0.
    kernel_event(&mut k, &mut p, fault(101));
    let next = p.audit().next_seq();
    assert_eq!(
        ask(
            &mut k,
            &mut p,
            BADGE_ROOTD,
            process_req(procd_op::STOP, pid_of(0, 2))
        )
        .0,
        status::OK
    );
    assert_eq!(
        read_audit(&mut k, &mut p, next),
        [(next, audit_action::STOP, 0, 101, role::TEST, BADGE_ROOTD, 0)]
    );
    // A failed restart records nothing.
    let (mut k, mut p) = spawned_restarting(0, restart_policy::ON_FAILURE, 3, 10_000, 250);
    let base = p.audit().next_seq();
    kernel_event(&mut k, &mut p, fault(100));
    k.create_status = status::BUSY;
    fire(&mut k, &mut p);
    assert!(read_audit(&mut k, &mut p, base).is_empty());
}

#[test]
fn the_ring_drops_the_oldest_and_audit_read_pages() {
    let (mut k, mut p) = started();
    let per_spawn = launch_records(0, 0, 4, BADGE_ROOTD).len() as u32;
    // Spawn and STOP until more than AUDIT_RING records were made.
    let mut made = 0;
    while made <= AUDIT_RING as u32 {
        let (st, _) = spawn(&mut k, &mut p, BADGE_ROOTD, spawn_request(4, role::TEST, 0));
        assert_eq!(st, status::OK);
        let id = live_ids(&p)[0];
        assert_eq!(
            ask(&mut k, &mut p, BADGE_ROOTD, process_req(procd_op::STOP, id)).0,
            status::OK
        );
        deliver_kills(&mut k, &mut p);
        made += per_spawn + 1;
    }
    assert_eq!(p.audit().next_seq(), made);
    let oldest = made - AUDIT_RING as u32;
    let first = read_audit(&mut k, &mut p, 0);
    assert_eq!(first.len(), AUDIT_READ_MAX);
    assert_eq!(AUDIT_READ_MAX, 30);
    assert_eq!(
        first.iter().map(|r| r.0).collect::<Vec<_>>(),
        (oldest..oldest + 30).collect::<Vec<_>>()
    );
    // Paging: from the next seq on, until nothing is left.
    let mut seen: Vec<u32> = Vec::new();
    let mut from = 0;
    loop {
        let page = read_audit(&mut k, &mut p, from);
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 30);
        seen.extend(page.iter().map(|r| r.0));
        from = page.last().unwrap().0 + 1;
    }
    assert_eq!(seen, (oldest..made).collect::<Vec<_>>());
    let tail = read_audit(&mut k, &mut p, made - 3);
    assert_eq!(
        tail.iter().map(|r| r.0).collect::<Vec<_>>(),
        [made - 3, made - 2, made - 1]
    );
    assert!(read_audit(&mut k, &mut p, made).is_empty());
    assert!(read_audit(&mut k, &mut p, u32::MAX).is_empty());
}

#[test]
fn audit_read_is_rootd_only_and_well_formed() {
    let (mut k, mut p) = spawned(1, true);
    let none: (u32, Vec<u8>) = (status::DENIED, vec![]);
    for badge in [0, 7, BADGE_ROOTD + 1, PROCD_CHILD_BADGE_BASE] {
        assert_eq!(
            ask(&mut k, &mut p, badge, audit_req(0, 1)),
            none,
            "DENIED first"
        );
        assert_eq!(ask(&mut k, &mut p, badge, audit_req(0, 0)), none);
    }
    let invalid = (status::INVALID_ARGUMENT, vec![]);
    assert_eq!(ask(&mut k, &mut p, BADGE_ROOTD, audit_req(0, 1)), invalid);
    for len in [0, 4, 7, 9, 16] {
        let mut m = audit_req(0, 0);
        m.start(procd_op::AUDIT_READ, len);
        assert_eq!(ask(&mut k, &mut p, BADGE_ROOTD, m), invalid, "len {len}");
    }
    let mut m = audit_req(0, 0);
    k.deliver_caps(&mut m, 1);
    assert_eq!(ask(&mut k, &mut p, BADGE_ROOTD, m), invalid, "caps");
    let mut m = audit_req(0, 0);
    let mut h = m.header();
    h.reserved0 = 1;
    m.set_header(&h);
    assert_eq!(
        ask(&mut k, &mut p, BADGE_ROOTD, m),
        invalid,
        "reserved header"
    );
    assert!(k.requests.is_empty(), "no kernel calls");
    assert_eq!(
        read_audit(&mut k, &mut p, 0).len(),
        launch_records(0, 0, 4, 0).len()
    );
}

// ------------------------------------------------------------------ dependency order

const HELD: u16 = abi::proc_state::HELD;

/// A SPAWN_SERVICE request for `image_id`, `role`, `flags`, held until the roles of
/// `depends_on` run.
fn dep_request(image_id: u32, role: u16, flags: u16, depends_on: u64) -> Message {
    let mut m = spawn_request(image_id, role, flags);
    write_u64(
        m.payload_area_mut(),
        spawn_service_request::DEPENDS_ON,
        depends_on,
    );
    m
}

fn bit(r: u16) -> u64 {
    1 << r
}

/// The (pid, endpoint, id) of an OK SPAWN_SERVICE reply.
fn spawned_reply(reply: (u32, Vec<u8>)) -> (u32, u32, u32) {
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
fn state_of(k: &mut Model, p: &mut Procd, id: u32) -> (u16, u32, u16, u32) {
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
        (entry.image_id, entry.role, entry.generation),
        (4, role::TEST, 1)
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

const RUNNING_STATE: u16 = abi::proc_state::RUNNING;

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
    assert_eq!(p.table().generation(0), Some(3));
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

// ------------------------------------------------------------------ SPAWN (authorised clients)

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
    assert_eq!((entry.role, entry.flags), (role::TEST, 0));
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
