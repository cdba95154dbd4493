//! lib-bootstrap: the start envelope (`RootServiceStartEnvelopeV1`).
//!
//! [`parse`] validates an envelope strictly, in a fixed order, and reports the first broken
//! rule as a `startup_status` code; [`EnvelopeBuilder`] writes one (procd uses it for the
//! children it spawns). Both enforce the same rules, so everything the builder writes parses.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

use abi::{
    CAP_TABLE_SLOTS, ENVELOPE_MAGIC, ENVELOPE_MAJOR, ENVELOPE_MAX, ENVELOPE_MAX_SLOTS,
    ENVELOPE_MINOR, cap_purpose, envelope_flag, envelope_header as hdr, envelope_slot, read_u16,
    read_u32, role, startup_status, write_u16, write_u32,
};

/// One slot record: capability slot `slot` holds the capability for `purpose`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotEntry {
    pub slot: u32,
    pub purpose: u16,
}

/// A validated start envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope {
    role: u16,
    flags: u16,
    started_roles: u32,
    slots: [SlotEntry; ENVELOPE_MAX_SLOTS],
    slot_count: usize,
}

impl Envelope {
    /// The service role.
    pub fn role(&self) -> u16 {
        self.role
    }

    /// The startup flags (only `envelope_flag` bits).
    pub fn flags(&self) -> u16 {
        self.flags
    }

    /// The roles its creator started before it (bit r: role r; only known roles below 32;
    /// 0 in a minor-0 envelope). rootd lists the services it started itself before procd.
    pub fn started_roles(&self) -> u32 {
        self.started_roles
    }

    /// The slot records, in envelope order.
    pub fn slots(&self) -> &[SlotEntry] {
        self.slots.get(..self.slot_count).unwrap_or(&[])
    }

    /// The slot holding the capability for `purpose`, if the envelope hands one over.
    pub fn slot_for(&self, purpose: u16) -> Option<u32> {
        self.slots()
            .iter()
            .find(|s| s.purpose == purpose)
            .map(|s| s.slot)
    }

    /// Whether some slot record names `slot`.
    pub fn holds_slot(&self, slot: u32) -> bool {
        self.slots().iter().any(|s| s.slot == slot)
    }

    /// Bytes the encoded envelope takes.
    pub fn encoded_len(&self) -> usize {
        hdr::SIZE + envelope_slot::SIZE * self.slot_count
    }

    /// Write the envelope at the start of `out`; returns its length, or `None` (and `out`
    /// untouched) if `out` is too short.
    pub fn encode(&self, out: &mut [u8]) -> Option<usize> {
        let len = self.encoded_len();
        let out = out.get_mut(..len)?;
        out.fill(0);
        let mut ok = write_u32(out, hdr::MAGIC, ENVELOPE_MAGIC)
            && write_u16(out, hdr::MAJOR, ENVELOPE_MAJOR)
            && write_u16(out, hdr::MINOR, ENVELOPE_MINOR)
            && write_u32(out, hdr::TOTAL_LEN, u32::try_from(len).ok()?)
            && write_u16(out, hdr::ROLE, self.role)
            && write_u16(out, hdr::FLAGS, self.flags)
            && write_u16(out, hdr::SLOT_COUNT, u16::try_from(self.slot_count).ok()?)
            && write_u32(out, hdr::STARTED_ROLES, self.started_roles);
        for (i, s) in self.slots().iter().enumerate() {
            let at = hdr::SIZE + envelope_slot::SIZE * i;
            ok = ok
                && write_u32(out, at + envelope_slot::SLOT, s.slot)
                && write_u16(out, at + envelope_slot::PURPOSE, s.purpose);
        }
        ok.then_some(len)
    }

    /// The first rule `entry` breaks against the slots recorded so far.
    fn check_slot(&self, entry: SlotEntry) -> Result<(), u64> {
        let valid = entry.slot != 0
            && entry.slot < CAP_TABLE_SLOTS
            && cap_purpose::name(entry.purpose).is_some()
            && !self
                .slots()
                .iter()
                .any(|s| s.slot == entry.slot || s.purpose == entry.purpose);
        if valid {
            Ok(())
        } else {
            Err(startup_status::BAD_SLOT_TABLE)
        }
    }
}

/// Builds an envelope under the same rules [`parse`] enforces.
#[derive(Clone, Copy, Debug)]
pub struct EnvelopeBuilder {
    envelope: Envelope,
}

impl EnvelopeBuilder {
    /// Start an envelope for `role` with `flags`: `Err(BAD_ROLE)` for an unknown role,
    /// `Err(BAD_FLAGS)` for unknown flag bits.
    pub fn new(role: u16, flags: u16) -> Result<Self, u64> {
        if role::name(role).is_none() {
            return Err(startup_status::BAD_ROLE);
        }
        if flags & !envelope_flag::ALL != 0 {
            return Err(startup_status::BAD_FLAGS);
        }
        Ok(Self {
            envelope: Envelope {
                role,
                flags,
                started_roles: 0,
                slots: [SlotEntry::default(); ENVELOPE_MAX_SLOTS],
                slot_count: 0,
            },
        })
    }

    /// List the roles the creator started before this service (`started_roles`):
    /// `Err(BAD_RESERVED)` if a bit names no known role.
    pub fn started_roles(&mut self, roles: u32) -> Result<&mut Self, u64> {
        if roles & !known_roles_below_32() != 0 {
            return Err(startup_status::BAD_RESERVED);
        }
        self.envelope.started_roles = roles;
        Ok(self)
    }

    /// Add a slot record: `Err(BAD_SLOT_TABLE)` if it breaks a slot rule or the table is full.
    pub fn push(&mut self, slot: u32, purpose: u16) -> Result<&mut Self, u64> {
        let entry = SlotEntry { slot, purpose };
        self.envelope.check_slot(entry)?;
        let free = self
            .envelope
            .slots
            .get_mut(self.envelope.slot_count)
            .ok_or(startup_status::BAD_SLOT_TABLE)?;
        *free = entry;
        self.envelope.slot_count += 1;
        Ok(self)
    }

    /// The envelope built so far.
    pub fn envelope(&self) -> Envelope {
        self.envelope
    }

    /// Write the envelope into `out` (see [`Envelope::encode`]).
    pub fn write(&self, out: &mut [u8]) -> Option<usize> {
        self.envelope.encode(out)
    }
}

/// Parse and validate the start envelope in `bytes` for an image serving `expected_role`.
///
/// Checks, in this order, returning the first failure as a `startup_status` code:
/// 1. `bytes` holds a whole header (`BAD_LENGTH`);
/// 2. magic (`BAD_MAGIC`);
/// 3. major 1, minor 0 or 1 (`BAD_VERSION`);
/// 4. `total_len == 24 + 8 * slot_count`, `total_len <= ENVELOPE_MAX`,
///    `slot_count <= ENVELOPE_MAX_SLOTS` and `total_len <= bytes.len()` (`BAD_LENGTH`);
/// 5. a known role equal to `expected_role` (`BAD_ROLE`);
/// 6. no unknown flag bits (`BAD_FLAGS`);
/// 7. zero `reserved0`, and `started_roles` naming only known roles (0 in minor 0)
///    (`BAD_RESERVED`);
/// 8. each slot record in order: slot in `1..CAP_TABLE_SLOTS`, known purpose, slot and purpose
///    not seen before, zero reserved field (`BAD_SLOT_TABLE`).
///
/// Bytes past `total_len` are ignored.
pub fn parse(bytes: &[u8], expected_role: u16) -> Result<Envelope, u64> {
    let u16_at = |offset| read_u16(bytes, offset).ok_or(startup_status::BAD_LENGTH);
    let u32_at = |offset| read_u32(bytes, offset).ok_or(startup_status::BAD_LENGTH);
    if bytes.len() < hdr::SIZE {
        return Err(startup_status::BAD_LENGTH);
    }
    if u32_at(hdr::MAGIC)? != ENVELOPE_MAGIC {
        return Err(startup_status::BAD_MAGIC);
    }
    let minor = u16_at(hdr::MINOR)?;
    if u16_at(hdr::MAJOR)? != ENVELOPE_MAJOR || minor > ENVELOPE_MINOR {
        return Err(startup_status::BAD_VERSION);
    }
    let total_len = usize::try_from(u32_at(hdr::TOTAL_LEN)?).unwrap_or(usize::MAX);
    let slot_count = usize::from(u16_at(hdr::SLOT_COUNT)?);
    if total_len != hdr::SIZE + envelope_slot::SIZE * slot_count
        || total_len > ENVELOPE_MAX
        || slot_count > ENVELOPE_MAX_SLOTS
        || total_len > bytes.len()
    {
        return Err(startup_status::BAD_LENGTH);
    }
    let role = u16_at(hdr::ROLE)?;
    if role::name(role).is_none() || role != expected_role {
        return Err(startup_status::BAD_ROLE);
    }
    let flags = u16_at(hdr::FLAGS)?;
    if flags & !envelope_flag::ALL != 0 {
        return Err(startup_status::BAD_FLAGS);
    }
    let started_roles = u32_at(hdr::STARTED_ROLES)?;
    if u16_at(hdr::RESERVED0)? != 0 || (minor == 0 && started_roles != 0) {
        return Err(startup_status::BAD_RESERVED);
    }
    let mut builder = EnvelopeBuilder::new(role, flags)?;
    builder.started_roles(started_roles)?;
    for i in 0..slot_count {
        let at = hdr::SIZE + envelope_slot::SIZE * i;
        let slot = u32_at(at + envelope_slot::SLOT)?;
        let purpose = u16_at(at + envelope_slot::PURPOSE)?;
        if u16_at(at + envelope_slot::RESERVED)? != 0 {
            return Err(startup_status::BAD_SLOT_TABLE);
        }
        builder.push(slot, purpose)?;
    }
    Ok(builder.envelope())
}

/// The mask of every known role below 32 (bit r: role r).
fn known_roles_below_32() -> u32 {
    (0..32u16)
        .filter(|&r| role::name(r).is_some())
        .fold(0, |mask, r| mask | 1 << r)
}

#[cfg(test)]
mod tests;
