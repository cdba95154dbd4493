//! bench-compute: compute-heavy work with no syscalls in its loops, for measuring the emulator's
//! accounting against an unhooked engine. Three kernels of different shapes, each repeated:
//! FNV-1a over a 16 KiB buffer (a tight five-instruction loop), sorting pseudo-random words
//! (`sort_unstable`: branches and calls), and an integer matrix product (longer blocks). It logs
//! one digest of all results and exits 0.
#![no_std]
#![no_main]

testkit::image!(main);

const BUFFER_BYTES: usize = 16 * 1024;
const HASH_ROUNDS: u64 = 64;
const SORT_WORDS: usize = 4096;
const SORT_ROUNDS: u32 = 8;
const N: usize = 40;
const MATRIX_ROUNDS: u32 = 16;
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

static mut BUFFER: [u8; BUFFER_BYTES] = [0; BUFFER_BYTES];
static mut WORDS: [u32; SORT_WORDS] = [0; SORT_WORDS];
static mut A: [[u32; N]; N] = [[0; N]; N];
static mut B: [[u32; N]; N] = [[0; N]; N];
static mut C: [[u32; N]; N] = [[0; N]; N];

fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut hash = FNV_OFFSET ^ seed;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// A 32-bit linear congruential generator (Numerical Recipes constants).
fn lcg(state: &mut u32) -> u32 {
    *state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
    *state
}

fn hash_rounds(buffer: &mut [u8; BUFFER_BYTES]) -> u64 {
    for (i, b) in buffer.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31);
    }
    let mut digest = 0;
    for round in 0..HASH_ROUNDS {
        digest = fnv1a(buffer, digest);
        if let Some(b) = buffer.get_mut((digest as usize) % BUFFER_BYTES) {
            *b ^= round as u8;
        }
    }
    digest
}

fn sort_rounds(words: &mut [u32; SORT_WORDS]) -> u64 {
    let mut state = 7;
    let mut digest = 0u64;
    for _ in 0..SORT_ROUNDS {
        for w in words.iter_mut() {
            *w = lcg(&mut state);
        }
        words.sort_unstable();
        digest = digest
            .wrapping_mul(31)
            .wrapping_add(u64::from(words[SORT_WORDS / 2]));
    }
    digest
}

fn matrix_rounds(a: &mut [[u32; N]; N], b: &mut [[u32; N]; N], c: &mut [[u32; N]; N]) -> u64 {
    let mut state = 11;
    for row in a.iter_mut().chain(b.iter_mut()) {
        for x in row.iter_mut() {
            *x = lcg(&mut state) >> 16;
        }
    }
    let mut digest = 0u64;
    for round in 0..MATRIX_ROUNDS {
        for i in 0..N {
            for j in 0..N {
                let mut sum = round;
                for k in 0..N {
                    sum = sum.wrapping_add(a[i][k].wrapping_mul(b[k][j]));
                }
                c[i][j] = sum;
            }
        }
        digest = digest
            .wrapping_mul(31)
            .wrapping_add(u64::from(c[round as usize % N][N - 1]));
    }
    digest
}

fn main(_envelope: *const u8) -> ! {
    // SAFETY: single-threaded image; nothing else refers to these statics.
    let (buffer, words, a, b, c) = unsafe {
        (
            &mut *core::ptr::addr_of_mut!(BUFFER),
            &mut *core::ptr::addr_of_mut!(WORDS),
            &mut *core::ptr::addr_of_mut!(A),
            &mut *core::ptr::addr_of_mut!(B),
            &mut *core::ptr::addr_of_mut!(C),
        )
    };
    let digest = hash_rounds(buffer)
        ^ sort_rounds(words).rotate_left(21)
        ^ matrix_rounds(a, b, c).rotate_left(42);
    let mut line = rt::LineBuf::new();
    line.push(b"bench-compute: digest ").push_hex(digest);
    let _ = rt::debug_write(line.as_bytes());
    rt::exit(0)
}
