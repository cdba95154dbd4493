//! Little-endian field access at a byte offset. Out-of-range access yields `None`/`false`,
//! never a panic.

fn field<const N: usize>(bytes: &[u8], offset: usize) -> Option<[u8; N]> {
    let end = offset.checked_add(N)?;
    bytes.get(offset..end)?.try_into().ok()
}

fn put<const N: usize>(bytes: &mut [u8], offset: usize, value: [u8; N]) -> bool {
    let Some(end) = offset.checked_add(N) else {
        return false;
    };
    match bytes.get_mut(offset..end) {
        Some(dst) => {
            // A zip rather than copy_from_slice: no length-mismatch panic path in the images.
            for (d, v) in dst.iter_mut().zip(value) {
                *d = v;
            }
            true
        }
        None => false,
    }
}

/// The byte at `offset`.
pub fn read_u8(bytes: &[u8], offset: usize) -> Option<u8> {
    bytes.get(offset).copied()
}

/// The little-endian `u16` at `offset`.
pub fn read_u16(bytes: &[u8], offset: usize) -> Option<u16> {
    field(bytes, offset).map(u16::from_le_bytes)
}

/// The little-endian `u32` at `offset`.
pub fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    field(bytes, offset).map(u32::from_le_bytes)
}

/// The little-endian `u64` at `offset`.
pub fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    field(bytes, offset).map(u64::from_le_bytes)
}

/// Store `value` little-endian at `offset`; `false` (and nothing written) if it does not fit.
pub fn write_u16(bytes: &mut [u8], offset: usize, value: u16) -> bool {
    put(bytes, offset, value.to_le_bytes())
}

/// Store `value` little-endian at `offset`; `false` (and nothing written) if it does not fit.
pub fn write_u32(bytes: &mut [u8], offset: usize, value: u32) -> bool {
    put(bytes, offset, value.to_le_bytes())
}

/// Store `value` little-endian at `offset`; `false` (and nothing written) if it does not fit.
pub fn write_u64(bytes: &mut [u8], offset: usize, value: u64) -> bool {
    put(bytes, offset, value.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian() {
        let b = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(read_u8(&b, 8), Some(9));
        assert_eq!(read_u16(&b, 0), Some(0x0201));
        assert_eq!(read_u32(&b, 1), Some(0x0504_0302));
        assert_eq!(read_u64(&b, 1), Some(0x0908_0706_0504_0302));
    }

    #[test]
    fn out_of_range_reads_are_none() {
        let b = [0u8; 4];
        assert_eq!(read_u8(&b, 4), None);
        assert_eq!(read_u16(&b, 3), None);
        assert_eq!(read_u32(&b, 1), None);
        assert_eq!(read_u64(&b, 0), None);
        assert_eq!(read_u32(&b, usize::MAX), None);
        assert_eq!(read_u16(&b, usize::MAX - 1), None);
    }

    #[test]
    fn writes_round_trip_and_refuse_overflow() {
        let mut b = [0u8; 8];
        assert!(write_u16(&mut b, 0, 0xBEEF));
        assert!(write_u32(&mut b, 2, 0xDEAD_BEEF));
        assert_eq!(read_u16(&b, 0), Some(0xBEEF));
        assert_eq!(read_u32(&b, 2), Some(0xDEAD_BEEF));
        assert!(write_u64(&mut b, 0, u64::MAX));
        assert_eq!(read_u64(&b, 0), Some(u64::MAX));
        let before = b;
        assert!(!write_u64(&mut b, 1, 0));
        assert!(!write_u32(&mut b, 5, 0));
        assert!(!write_u16(&mut b, usize::MAX, 0));
        assert_eq!(b, before);
    }
}
