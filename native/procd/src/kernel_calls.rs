//! Calls to kernel-control: MINT_ENDPOINT, CREATE_PROCESS, READ_MONOTONIC_CLOCK, and the
//! common reply check.

use crate::{DoesNotFit, Kernel, Procd, Role, child_badge, fits};
use abi::{
    CAP_TABLE_SLOTS, ENVELOPE_MAX_SLOTS, Message, MessageHeader, clock_reply,
    create_process_request, grant, kernel_op, mint_request, read_u64, rights, status, write_u16,
    write_u32, write_u64,
};
use bootstrap::{EnvelopeBuilder, SlotEntry};
use capabi::{Grant, GrantPlan};

/// The rights of the PROCD_ENDPOINT capability procd mints for a child and grants it: SEND, as
/// its intake spec says.
#[cfg(not(feature = "planted-wider-rights"))]
pub(crate) const CHILD_PROCD_RIGHTS: u32 = rights::SEND;
/// Planted bug: the child's PROCD_ENDPOINT also carries GRANT, wider than its intake spec.
#[cfg(feature = "planted-wider-rights")]
pub(crate) const CHILD_PROCD_RIGHTS: u32 = rights::SEND | rights::GRANT;

impl Procd {
    /// CALL kernel-control with `msg`. `Ok(reply header)` when both the syscall and the reply
    /// say OK; otherwise `Err(status)` — the syscall's status, or the reply's op as is — after
    /// deleting any capabilities the reply carried.
    pub(crate) fn kernel_call(
        &self,
        k: &mut impl Kernel,
        msg: &mut Message,
    ) -> Result<MessageHeader, u32> {
        let syscall = k.call(self.kernel_control, msg);
        if syscall != status::OK {
            return Err(syscall);
        }
        let reply = msg.header();
        if reply.op != status::OK {
            self.discard_caps(k, &reply);
            return Err(reply.op);
        }
        Ok(reply)
    }

    /// CALL kernel-control READ_MONOTONIC_CLOCK: the clock in ticks, or the failing status
    /// (INTERNAL for an OK reply that is not one clock_reply).
    pub(crate) fn read_clock(&self, k: &mut impl Kernel, msg: &mut Message) -> Result<u64, u32> {
        msg.start(kernel_op::READ_MONOTONIC_CLOCK, 0);
        let reply = self.kernel_call(k, msg)?;
        self.discard_caps(k, &reply);
        if usize::from(reply.payload_len) != clock_reply::SIZE {
            return Err(status::INTERNAL);
        }
        read_u64(msg.payload(), clock_reply::TICKS).ok_or(status::INTERNAL)
    }

    /// MINT_ENDPOINT: a SEND capability to procd's own endpoint with badge
    /// [`child_badge`]`(index)`, for the child about to take table entry `index`. Returns the
    /// slot of the new capability in procd's table; `Err` with the kernel's status (any
    /// capabilities the reply carried deleted), or INTERNAL if an OK reply names no usable slot.
    pub(crate) fn mint_child_endpoint(
        &self,
        k: &mut impl Kernel,
        msg: &mut Message,
        index: usize,
    ) -> Result<u32, u32> {
        let badge = child_badge(index).ok_or(status::INTERNAL)?;
        let payload = msg.start(kernel_op::MINT_ENDPOINT, mint_request::SIZE);
        // Always fits: the payload is mint_request::SIZE bytes.
        let written = write_u32(payload, mint_request::SRC_SLOT, self.self_endpoint)
            && write_u32(payload, mint_request::RIGHTS, CHILD_PROCD_RIGHTS)
            && write_u64(payload, mint_request::BADGE, badge);
        debug_assert!(written, "a fixed-size payload always fits its record");
        let minted = self.kernel_call(k, msg)?;
        match minted.cap_slots().first().copied() {
            Some(slot) if slot != 0 && slot < CAP_TABLE_SLOTS && !self.owns_slot(slot) => {
                for &extra in minted.cap_slots().get(1..).unwrap_or(&[]) {
                    if extra != slot && !self.owns_slot(extra) {
                        k.cap_delete(extra);
                    }
                }
                Ok(slot)
            }
            _ => {
                // OK without a usable capability: a kernel fault, not ours to keep.
                self.discard_caps(k, &minted);
                Err(status::INTERNAL)
            }
        }
    }

    /// CREATE_PROCESS for a child serving `child_role` with `flags`, with the grants of `plan`
    /// and an envelope listing them. Returns the reply header (`msg` holds the reply) or the
    /// failing status.
    pub(crate) fn create_process(
        &self,
        k: &mut impl Kernel,
        msg: &mut Message,
        image_id: u32,
        child_role: Role,
        flags: u16,
        plan: &GrantPlan,
    ) -> Result<MessageHeader, u32> {
        // The child's start envelope: its own endpoint plus one record per grant.
        let mut builder =
            EnvelopeBuilder::new(child_role.get(), flags).map_err(|_| status::INTERNAL)?;
        let mut records = [SlotEntry::default(); ENVELOPE_MAX_SLOTS];
        for record in plan.envelope_slots(&mut records) {
            builder
                .push(record.slot, record.purpose)
                .map_err(|_| status::INTERNAL)?;
        }

        write_create_request(msg, image_id, plan.grants(), self.self_endpoint, &builder)?;
        self.kernel_call(k, msg)
    }
}

/// Write a CREATE_PROCESS request into `msg`: `image_id`, the `grants`, badge 0,
/// `supervisor_slot` (procd's own endpoint, where the kernel reports the child's death) and the
/// envelope `builder` holds. `Err` if anything does not fit (it always does: at most
/// `CREATE_MAX_GRANTS` grants and an envelope of at most `1 + CREATE_MAX_GRANTS` slots).
#[inline(always)]
pub(crate) fn write_create_request(
    msg: &mut Message,
    image_id: u32,
    grants: &[Grant],
    supervisor_slot: u32,
    builder: &EnvelopeBuilder,
) -> Result<(), DoesNotFit> {
    fits(write_create_fields(
        msg,
        image_id,
        grants,
        supervisor_slot,
        builder,
    ))
}

// The writes of `write_create_request`, `false` if one does not fit. Kept apart (not inlined)
// so that `write_create_request` compiles to the instructions the held traces count.
fn write_create_fields(
    msg: &mut Message,
    image_id: u32,
    grants: &[Grant],
    supervisor_slot: u32,
    builder: &EnvelopeBuilder,
) -> bool {
    let envelope_len = builder.envelope().encoded_len();
    let (Ok(grant_count), Ok(envelope_len_u16)) =
        (u16::try_from(grants.len()), u16::try_from(envelope_len))
    else {
        return false;
    };
    let payload = msg.start(
        kernel_op::CREATE_PROCESS,
        create_process_request::SIZE + envelope_len,
    );
    let mut ok = grants.len() <= create_process_request::GRANTS_COUNT
        && write_u32(payload, create_process_request::IMAGE_ID, image_id)
        && write_u16(payload, create_process_request::GRANT_COUNT, grant_count)
        && write_u16(payload, create_process_request::ENVELOPE_LEN, envelope_len_u16)
        // Badge 0 on procd's own capability to the child's endpoint: procd is its only holder
        // and tells children apart by the slot its table records.
        && write_u64(payload, create_process_request::BADGE, 0)
        && write_u32(payload, create_process_request::SUPERVISOR_SLOT, supervisor_slot);
    for (i, g) in grants.iter().enumerate() {
        let at = create_process_request::GRANTS + grant::SIZE * i;
        ok = ok && payload.get_mut(at..).is_some_and(|record| g.write(record));
    }
    ok && payload
        .get_mut(create_process_request::SIZE..)
        .and_then(|area| builder.write(area))
        == Some(envelope_len)
}
