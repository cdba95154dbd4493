//! The C memory primitives the compiler calls (`memcpy`, `memmove`, `memset`, `memcmp`,
//! `bcmp`).
//!
//! Stable Rust cannot enable the `mem` feature of `compiler_builtins`, so the images bring
//! their own. `#![no_builtins]` stops LLVM from recognising these loops as the very functions
//! they implement (which would turn them into self-calls). Copies and fills move 8 bytes at a
//! time (unaligned access is fine on x86_64) and finish byte by byte; comparisons go byte by
//! byte. Every guest instruction costs virtual time in the emulator, so the word loops matter.
//!
//! In the host unit tests the symbols are not exported (`no_mangle` is off) so they cannot
//! interpose on the C library's.
#![no_builtins]
#![cfg_attr(not(test), no_std)]

const WORD: usize = core::mem::size_of::<u64>();

/// Copy `n` bytes from `src` to `dest`; the regions must not overlap.
///
/// # Safety
/// `dest` and `src` must be valid for `n` bytes and must not overlap.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: same contract; a forward copy is correct for non-overlapping regions.
    unsafe { copy_forward(dest, src, n) };
    dest
}

/// Copy `n` bytes from `src` to `dest`; the regions may overlap.
///
/// # Safety
/// `dest` and `src` must be valid for `n` bytes.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: valid for `n` bytes. Copying forwards never overwrites a source byte before it
    // is read when `dest` is at or below `src`; copying backwards, when it is above.
    unsafe {
        if (dest as usize) <= (src as usize) {
            copy_forward(dest, src, n);
        } else {
            copy_backward(dest, src, n);
        }
    }
    dest
}

/// Fill `n` bytes at `dest` with the low byte of `c`.
///
/// # Safety
/// `dest` must be valid for `n` bytes.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    let byte = c as u8;
    let pattern = u64::from_ne_bytes([byte; WORD]);
    let mut i = 0;
    while n - i >= WORD {
        // SAFETY: `dest` is valid for `n` bytes and `i + WORD <= n`; x86_64 allows unaligned
        // access.
        unsafe { dest.add(i).cast::<u64>().write_unaligned(pattern) };
        i += WORD;
    }
    while i < n {
        // SAFETY: `i < n`.
        unsafe { *dest.add(i) = byte };
        i += 1;
    }
    dest
}

/// Copy 8 bytes at a time from the start, then the tail byte by byte.
///
/// Each word is read before it is written, so this is also correct for overlapping regions
/// with `dest` at or below `src`.
unsafe fn copy_forward(dest: *mut u8, src: *const u8, n: usize) {
    let mut i = 0;
    while n - i >= WORD {
        // SAFETY: both regions are valid for `n` bytes and `i + WORD <= n`; x86_64 allows
        // unaligned access.
        unsafe {
            let word = src.add(i).cast::<u64>().read_unaligned();
            dest.add(i).cast::<u64>().write_unaligned(word);
        }
        i += WORD;
    }
    while i < n {
        // SAFETY: `i < n`.
        unsafe { *dest.add(i) = *src.add(i) };
        i += 1;
    }
}

/// Copy 8 bytes at a time from the end, then the head byte by byte.
///
/// Correct for overlapping regions with `dest` above `src`.
unsafe fn copy_backward(dest: *mut u8, src: *const u8, n: usize) {
    let mut i = n;
    while i >= WORD {
        i -= WORD;
        // SAFETY: `i + WORD <= n`; see copy_forward.
        unsafe {
            let word = src.add(i).cast::<u64>().read_unaligned();
            dest.add(i).cast::<u64>().write_unaligned(word);
        }
    }
    while i > 0 {
        i -= 1;
        // SAFETY: `i < n`.
        unsafe { *dest.add(i) = *src.add(i) };
    }
}

/// Compare `n` bytes as unsigned chars: negative, zero or positive like C's `memcmp`.
///
/// # Safety
/// `a` and `b` must be valid for `n` bytes.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: the caller guarantees both regions are valid for `n` bytes.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// Zero if the `n` bytes are equal, non-zero otherwise.
///
/// # Safety
/// `a` and `b` must be valid for `n` bytes.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_and_set() {
        let src = [1u8, 2, 3, 4, 5];
        let mut dst = [0u8; 5];
        let r = unsafe { memcpy(dst.as_mut_ptr(), src.as_ptr(), 5) };
        assert_eq!(r, dst.as_mut_ptr());
        assert_eq!(dst, src);
        unsafe { memset(dst.as_mut_ptr().add(1), 0x1FF, 3) };
        assert_eq!(dst, [1, 0xFF, 0xFF, 0xFF, 5]);
        unsafe { memcpy(dst.as_mut_ptr(), src.as_ptr(), 0) };
        assert_eq!(dst, [1, 0xFF, 0xFF, 0xFF, 5]);
    }

    #[test]
    fn move_handles_both_overlaps() {
        let mut b = [1u8, 2, 3, 4, 5, 6];
        unsafe { memmove(b.as_mut_ptr().add(2), b.as_ptr(), 4) };
        assert_eq!(b, [1, 2, 1, 2, 3, 4]);
        let mut b = [1u8, 2, 3, 4, 5, 6];
        unsafe { memmove(b.as_mut_ptr(), b.as_ptr().add(2), 4) };
        assert_eq!(b, [3, 4, 5, 6, 5, 6]);
        let mut b = [1u8, 2, 3];
        unsafe { memmove(b.as_mut_ptr(), b.as_ptr(), 3) };
        assert_eq!(b, [1, 2, 3]);
    }

    /// Every length 0..40 at every offset 0..9, against a plain byte-by-byte model.
    #[test]
    fn all_small_sizes_and_offsets() {
        let pattern: Vec<u8> = (0..64u8)
            .map(|x| x.wrapping_mul(37).wrapping_add(1))
            .collect();
        for n in 0..40 {
            for (d, s) in [(0, 0), (1, 0), (0, 3), (5, 2), (7, 8)] {
                let mut dst = vec![0xEEu8; 64];
                unsafe { memcpy(dst.as_mut_ptr().add(d), pattern.as_ptr().add(s), n) };
                assert_eq!(&dst[d..d + n], &pattern[s..s + n]);
                assert!(dst[..d].iter().chain(&dst[d + n..]).all(|&b| b == 0xEE));

                let mut buf = vec![0x11u8; 64];
                unsafe { memset(buf.as_mut_ptr().add(d), 0xAB, n) };
                assert!(buf[d..d + n].iter().all(|&b| b == 0xAB));
                assert!(buf[..d].iter().chain(&buf[d + n..]).all(|&b| b == 0x11));
            }
            for shift in 0..10usize {
                // Overlapping moves both ways, against Vec::copy_within.
                let mut a = pattern.clone();
                let mut want = pattern.clone();
                unsafe { memmove(a.as_mut_ptr().add(shift), a.as_ptr(), n) };
                want.copy_within(0..n, shift);
                assert_eq!(a, want, "up n={n} shift={shift}");
                let mut a = pattern.clone();
                let mut want = pattern.clone();
                unsafe { memmove(a.as_mut_ptr(), a.as_ptr().add(shift), n) };
                want.copy_within(shift..shift + n, 0);
                assert_eq!(a, want, "down n={n} shift={shift}");
            }
        }
    }

    #[test]
    fn compare_is_unsigned() {
        let a = [1u8, 0x80, 3];
        let b = [1u8, 0x7F, 3];
        unsafe {
            assert!(memcmp(a.as_ptr(), b.as_ptr(), 3) > 0);
            assert!(memcmp(b.as_ptr(), a.as_ptr(), 3) < 0);
            assert_eq!(memcmp(a.as_ptr(), b.as_ptr(), 1), 0);
            assert_eq!(memcmp(a.as_ptr(), b.as_ptr(), 0), 0);
            assert_ne!(bcmp(a.as_ptr(), b.as_ptr(), 3), 0);
            assert_eq!(bcmp(a.as_ptr(), a.as_ptr(), 3), 0);
        }
    }
}
