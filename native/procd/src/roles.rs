//! [`Role`]: a service role as procd keeps and compares it, a number of the ABI's `role`
//! constants.

use abi::role;

/// A service role (`role` on the wire). Any `u16` can arrive in a request: [`Role::name`] says
/// whether the ABI knows it. Its constants are the ABI's generated `role` numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct Role(u16);

impl Role {
    pub const ROOTD: Self = Self(role::ROOTD);
    pub const MEMD: Self = Self(role::MEMD);
    pub const VSPACED: Self = Self(role::VSPACED);
    pub const PAGERD: Self = Self(role::PAGERD);
    pub const PROCD: Self = Self(role::PROCD);
    pub const TIMED: Self = Self(role::TIMED);
    pub const TEST: Self = Self(role::TEST);
    pub const GENERIC: Self = Self(role::GENERIC);

    /// The role numbered `raw`.
    #[inline(always)]
    pub const fn new(raw: u16) -> Self {
        Self(raw)
    }

    /// Its number.
    #[inline(always)]
    pub const fn get(self) -> u16 {
        self.0
    }

    /// The ABI's name for it (`None` for a number the ABI does not know).
    #[inline(always)]
    pub const fn name(self) -> Option<&'static str> {
        role::name(self.0)
    }

    /// Its bit in a `depends_on` or `started_roles` mask (bit r: role r; 0 for a role beyond
    /// bit 63).
    #[inline(always)]
    pub fn bit(self) -> u64 {
        1u64.checked_shl(u32::from(self.0)).unwrap_or(0)
    }
}

impl From<u16> for Role {
    #[inline(always)]
    fn from(raw: u16) -> Self {
        Self(raw)
    }
}

impl From<Role> for u16 {
    #[inline(always)]
    fn from(r: Role) -> Self {
        r.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_is_its_abi_number() {
        assert_eq!(Role::TEST.get(), role::TEST);
        assert_eq!(Role::from(role::TIMED), Role::TIMED);
        assert_eq!(u16::from(Role::PROCD), role::PROCD);
        assert_eq!(Role::TEST.name(), Some("TEST"));
        assert_eq!(Role::new(0).name(), None);
        assert_eq!(Role::new(0x1234).name(), None);
    }

    #[test]
    fn only_roles_below_64_have_a_mask_bit() {
        assert_eq!(Role::new(0).bit(), 1);
        assert_eq!(Role::TEST.bit(), 1 << role::TEST);
        assert_eq!(Role::new(63).bit(), 1 << 63);
        assert_eq!(Role::new(64).bit(), 0);
        assert_eq!(Role::GENERIC.bit(), 0);
    }
}
