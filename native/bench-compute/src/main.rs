//! bench-compute: compute-heavy work with no syscalls in the loop, for measuring the emulator's
//! accounting against an unhooked engine. Hashes a 16 KiB buffer with FNV-1a, `ROUNDS` times
//! (each round perturbs the buffer, so no round can be skipped), logs the digest and exits 0.
#![no_std]
#![no_main]

use abi::role;

rt::entry!(main);

/// The `.erix_image` note: this image serves role TEST.
#[used]
#[unsafe(link_section = ".erix_image")]
static IMAGE_NOTE: [u8; abi::image_note::SIZE] = abi::image_note(role::TEST);

const BUFFER_BYTES: usize = 16 * 1024;
const ROUNDS: u64 = 640;
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

static mut BUFFER: [u8; BUFFER_BYTES] = [0; BUFFER_BYTES];

fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut hash = FNV_OFFSET ^ seed;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

fn main(_envelope: *const u8) -> ! {
    // SAFETY: single-threaded image; nothing else refers to BUFFER.
    let buffer = unsafe { &mut *core::ptr::addr_of_mut!(BUFFER) };
    for (i, b) in buffer.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31);
    }
    let mut digest = 0;
    for round in 0..ROUNDS {
        digest = fnv1a(buffer, digest);
        let slot = (digest as usize) % BUFFER_BYTES;
        if let Some(b) = buffer.get_mut(slot) {
            *b ^= round as u8;
        }
    }
    let mut line = rt::LineBuf::new();
    line.push(b"bench-compute: digest ").push_hex(digest);
    let _ = rt::debug_write(line.as_bytes());
    rt::exit(0)
}
