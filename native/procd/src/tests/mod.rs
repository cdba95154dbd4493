//! Host tests: procd against a model kernel (`Model`), one module per concern; helpers a
//! module defines for its own tests are shared with the later ones.

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

mod audit;
mod child_died;
mod client_spawn;
mod deps;
mod failures;
mod fuzz;
mod ids_status;
mod probe;
mod restart_edges;
mod restarts;
mod spawn_service;
mod startup;
mod stop_kill;

// Helpers a module defines for its own tests, shared with the others.
use audit::*;
use child_died::*;
use deps::*;
use failures::*;
use ids_status::*;
use probe::*;
use restarts::*;
