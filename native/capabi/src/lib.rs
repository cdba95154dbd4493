//! lib-capabi: the capability side of the bootstrap contract.
//!
//! - [`validate_intake`] checks the capabilities a start envelope hands over against the
//!   role's default intake spec (`abi::intake::for_role`).
//! - [`plan_child_grants`] derives, from a parent's envelope, the CREATE_PROCESS grants and the
//!   child's envelope slot list for a child role: exactly the child's intake spec, each with the
//!   spec's rights, never wider. Two purposes are never copied from the parent: SELF_ENDPOINT
//!   (the kernel creates it) and PROCD_ENDPOINT (the spawner mints it, with a badge naming the
//!   child, and appends it with [`GrantPlan::push`]; [`intake_entry`] tells whether a child's
//!   spec asks for it).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

use abi::{
    CHILD_FIRST_GRANT_SLOT, CHILD_SELF_ENDPOINT_SLOT, CREATE_MAX_GRANTS, ENVELOPE_MAX_SLOTS,
    IntakeEntry, cap_purpose, grant, intake, startup_status, status, write_u32,
};
use bootstrap::{Envelope, SlotEntry};

/// Check the capabilities `env` hands over against `role`'s intake spec.
///
/// `cap_info(slot)` reports the type and rights of the capability in `slot`, or `None` for an
/// empty slot. Entries are checked in spec order; the first failure is returned as a
/// `startup_status`:
/// - a required purpose missing from the envelope, or any listed slot that is empty:
///   `INTAKE_MISSING` (an optional purpose the envelope does not list is fine);
/// - a capability of another type: `INTAKE_WRONG_TYPE`;
/// - a capability without all the spec's rights: `INTAKE_RIGHTS`.
///
/// Envelope slots whose purpose the spec does not list are not examined.
pub fn validate_intake(
    env: &Envelope,
    role: u16,
    mut cap_info: impl FnMut(u32) -> Option<(u32, u32)>,
) -> Result<(), u64> {
    for entry in intake::for_role(role) {
        let Some(slot) = env.slot_for(entry.purpose) else {
            if entry.required {
                return Err(startup_status::INTAKE_MISSING);
            }
            continue;
        };
        let Some((cap_type, rights)) = cap_info(slot) else {
            return Err(startup_status::INTAKE_MISSING);
        };
        if cap_type != entry.cap_type {
            return Err(startup_status::INTAKE_WRONG_TYPE);
        }
        if rights & entry.rights != entry.rights {
            return Err(startup_status::INTAKE_RIGHTS);
        }
    }
    Ok(())
}

/// One CREATE_PROCESS grant: a copy of the parent's `src_slot` with exactly `rights`, landing
/// in the child's `child_slot` for `purpose`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Grant {
    pub src_slot: u32,
    pub rights: u32,
    pub child_slot: u32,
    pub purpose: u16,
}

impl Grant {
    /// Write the `grant` record (`src_slot`, `rights`: one `create_process_request.grants[i]`
    /// word) at the start of `out`; `false` if `out` is too short.
    pub fn write(&self, out: &mut [u8]) -> bool {
        out.len() >= grant::SIZE
            && write_u32(out, grant::SRC_SLOT, self.src_slot)
            && write_u32(out, grant::RIGHTS, self.rights)
    }
}

/// The grants for one child and the slot list of its start envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantPlan {
    grants: [Grant; CREATE_MAX_GRANTS],
    grant_count: usize,
}

impl GrantPlan {
    /// Append a grant of the parent's `src_slot` with `rights` for `purpose`, landing in the next
    /// child slot (`CHILD_FIRST_GRANT_SLOT + ` the number of grants before it), which is
    /// returned. The child's envelope lists it after the planned grants.
    ///
    /// `Err(status::INTERNAL)` if the plan already holds `CREATE_MAX_GRANTS` grants, `purpose`
    /// is SELF_ENDPOINT (the kernel's) or the plan already grants `purpose` (an envelope names
    /// each purpose once); the plan is unchanged then.
    pub fn push(&mut self, src_slot: u32, rights: u32, purpose: u16) -> Result<u32, u32> {
        if purpose == cap_purpose::SELF_ENDPOINT
            || self.grants().iter().any(|g| g.purpose == purpose)
        {
            return Err(status::INTERNAL);
        }
        let index = self.grant_count;
        let dst = self.grants.get_mut(index).ok_or(status::INTERNAL)?;
        // index < CREATE_MAX_GRANTS, far below u32::MAX.
        let child_slot = CHILD_FIRST_GRANT_SLOT + index as u32;
        *dst = Grant {
            src_slot,
            rights,
            child_slot,
            purpose,
        };
        self.grant_count += 1;
        Ok(child_slot)
    }

    /// The grants in CREATE_PROCESS order (grant `i` lands in `CHILD_FIRST_GRANT_SLOT + i`).
    pub fn grants(&self) -> &[Grant] {
        self.grants.get(..self.grant_count).unwrap_or(&[])
    }

    /// The child's envelope slot records: its own endpoint (created by the kernel at
    /// `CHILD_SELF_ENDPOINT_SLOT`) followed by one record per grant. Returns the filled part of
    /// `out`.
    pub fn envelope_slots<'a>(
        &self,
        out: &'a mut [SlotEntry; ENVELOPE_MAX_SLOTS],
    ) -> &'a [SlotEntry] {
        let mut n = 0;
        let records = core::iter::once(SlotEntry {
            slot: CHILD_SELF_ENDPOINT_SLOT,
            purpose: cap_purpose::SELF_ENDPOINT,
        })
        .chain(self.grants().iter().map(|g| SlotEntry {
            slot: g.child_slot,
            purpose: g.purpose,
        }));
        for (dst, src) in out.iter_mut().zip(records) {
            *dst = src;
            n += 1;
        }
        out.get(..n).unwrap_or(&[])
    }
}

// Every record of a plan (the self endpoint plus the grants) fits in an envelope.
const _: () = assert!(CREATE_MAX_GRANTS < ENVELOPE_MAX_SLOTS);

/// Plan the grants for a child serving `child_role`, from the capabilities `parent` holds.
///
/// For each entry of the child's intake spec except `SELF_ENDPOINT` (the kernel creates that
/// one) and `PROCD_ENDPOINT` (never the parent's own capability: procd mints a badged one per
/// child and appends it with [`GrantPlan::push`], required or optional): if the parent's
/// envelope lists a capability for the purpose, grant it with the entry's rights; a required
/// one the parent lacks is `Err(status::DENIED)`; an optional one it lacks is skipped. More grants than `CREATE_MAX_GRANTS` is `Err(status::INTERNAL)` (no spec in the
/// ABI comes close).
pub fn plan_child_grants(child_role: u16, parent: &Envelope) -> Result<GrantPlan, u32> {
    plan_from_spec(intake::for_role(child_role), parent)
}

fn plan_from_spec(spec: &[IntakeEntry], parent: &Envelope) -> Result<GrantPlan, u32> {
    let mut plan = GrantPlan {
        grants: [Grant::default(); CREATE_MAX_GRANTS],
        grant_count: 0,
    };
    for entry in spec {
        if !copied_from_parent(entry.purpose) {
            continue;
        }
        let Some(src_slot) = parent.slot_for(entry.purpose) else {
            if entry.required {
                return Err(status::DENIED);
            }
            continue;
        };
        let index = plan.grant_count;
        let dst = plan.grants.get_mut(index).ok_or(status::INTERNAL)?;
        *dst = Grant {
            src_slot,
            rights: entry.rights,
            // index < CREATE_MAX_GRANTS, far below u32::MAX.
            child_slot: CHILD_FIRST_GRANT_SLOT + index as u32,
            purpose: entry.purpose,
        };
        plan.grant_count += 1;
    }
    Ok(plan)
}

/// Whether the planner copies `purpose` from the parent's envelope: everything but
/// SELF_ENDPOINT (the kernel makes it) and PROCD_ENDPOINT (the spawner mints it).
fn copied_from_parent(purpose: u16) -> bool {
    !matches!(
        purpose,
        cap_purpose::SELF_ENDPOINT | cap_purpose::PROCD_ENDPOINT
    )
}

/// The entry of `role`'s intake spec for `purpose`, if the spec lists it (required or optional).
pub fn intake_entry(role: u16, purpose: u16) -> Option<&'static IntakeEntry> {
    intake::for_role(role).iter().find(|e| e.purpose == purpose)
}

#[cfg(test)]
mod tests;
