//! procd's names for the occupants of its table entries: [`Generation`] and [`ProcId`].
//!
//! Every entry has a generation, so that a process id (index | generation <<
//! `PROCD_ID_GENERATION_SHIFT`) names one occupant of an entry and never the next. On the wire
//! (requests, replies, timer cookies) an id is its `u32`.

use abi::{PROCD_ID_GENERATION_SHIFT, PROCD_MAX_PROCESSES};

/// The generation of a table entry's occupant (of a free entry: the next occupant's). Never 0
/// in a table procd keeps: a fresh entry has [`Generation::FIRST`], and [`Generation::next`]
/// skips 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct Generation(u16);

impl Generation {
    /// The generation of every entry of a fresh table.
    pub const FIRST: Self = Self(1);

    /// The generation `raw` (0 is no entry's; only a malformed id carries it).
    pub const fn new(raw: u16) -> Self {
        Self(raw)
    }

    /// Its number.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// The generation after this one: + 1, with 0xFFFF (and 0) followed by 1.
    pub const fn next(self) -> Self {
        match self.0 {
            0 | u16::MAX => Self(1),
            g => Self(g + 1),
        }
    }
}

impl From<u16> for Generation {
    fn from(raw: u16) -> Self {
        Self(raw)
    }
}

// A u16 generation above the index bits fits in a u32 id, and every index fits below them.
const _: () = assert!(
    PROCD_ID_GENERATION_SHIFT + 16 <= 32 && PROCD_MAX_PROCESSES <= 1 << PROCD_ID_GENERATION_SHIFT
);

/// Mask of an id's index bits.
const INDEX_MASK: u32 = (1 << PROCD_ID_GENERATION_SHIFT) - 1;

/// procd's process id: table index | generation << `PROCD_ID_GENERATION_SHIFT`. A value read
/// from the wire may name nothing ([`ProcId::split`] says so).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct ProcId(u32);

impl ProcId {
    /// The id of the occupant of table entry `index` at `generation` (`None` for an index
    /// beyond the table).
    pub fn new(index: usize, generation: Generation) -> Option<Self> {
        if index >= PROCD_MAX_PROCESSES {
            return None;
        }
        let index = u32::try_from(index).ok()?;
        Some(Self(
            u32::from(generation.0) << PROCD_ID_GENERATION_SHIFT | index,
        ))
    }

    /// The (table index, generation) the id names (`None` for an index beyond the table or
    /// generation 0, which no entry ever has).
    pub fn split(self) -> Option<(usize, Generation)> {
        let index = usize::try_from(self.0 & INDEX_MASK).ok()?;
        let generation = u16::try_from(self.0 >> PROCD_ID_GENERATION_SHIFT).ok()?;
        (index < PROCD_MAX_PROCESSES && generation != 0).then_some((index, Generation(generation)))
    }

    /// Its wire form.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl From<u32> for ProcId {
    /// The id a request or a timer cookie carries, as is.
    fn from(raw: u32) -> Self {
        Self(raw)
    }
}

impl From<ProcId> for u32 {
    fn from(id: ProcId) -> Self {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_wrap_to_1_never_0() {
        let next = |g: u16| Generation(g).next().get();
        assert_eq!(next(1), 2);
        assert_eq!(next(0xFFFE), 0xFFFF);
        assert_eq!(next(0xFFFF), 1);
        assert_eq!(next(0), 1);
    }

    #[test]
    fn ids_split_into_index_and_generation() {
        let id = |i: usize, g: u16| ProcId::new(i, Generation(g)).map(ProcId::get);
        let split = |raw: u32| ProcId(raw).split().map(|(i, g)| (i, g.get()));
        assert_eq!(id(3, 9), Some(0x0009_0003));
        assert_eq!(id(PROCD_MAX_PROCESSES, 1), None);
        assert_eq!(split(0x0009_0003), Some((3, 9)));
        assert_eq!(split(0x0000_0003), None, "generation 0");
        assert_eq!(split(PROCD_MAX_PROCESSES as u32 | 1 << 16), None);
        assert_eq!(split(0xFFFF | 1 << 16), None);
        assert_eq!(split(u32::MAX), None);
        for i in 0..PROCD_MAX_PROCESSES {
            for g in [1, 2, 0x8000, 0xFFFF] {
                assert_eq!(id(i, g).and_then(split), Some((i, g)));
            }
        }
    }
}
