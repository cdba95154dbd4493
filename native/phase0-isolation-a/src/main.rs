//! phase0-isolation-a: fills its data page at `ISOLATION_A_DATA_VADDR` with a known pattern,
//! YIELDs so the scheduler runs phase0-isolation-b (which tries to reach that address), then
//! checks the pattern: `data intact` and exit 0, or a breach and exit `test_status::BREACH`.
#![no_std]
#![no_main]

use abi::{ISOLATION_A_DATA_VADDR, test_status};

const WORDS: usize = 4096 / 8;
const YIELDS: u32 = 32;

/// The page isolation-b tries to reach: linker/image.ld places `.isolation` at ISOLATION_DATA,
/// which this image's layout in native/imagelink sets to `ISOLATION_A_DATA_VADDR` (and the test
/// checks that it did).
#[unsafe(link_section = ".isolation")]
static mut DATA: [u64; WORDS] = [0; WORDS];

/// The word stored at index `i`: different in every word and unlike zero.
fn pattern(i: usize) -> u64 {
    0x1501_a7ed_0000_0000 ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

testkit::image!(b"phase0-isolation-a", |test| {
    let data = (&raw mut DATA).cast::<u64>();
    if data.addr() as u64 != ISOLATION_A_DATA_VADDR {
        let mut line = test.line();
        line.push(b"data page at ").push_hex(data.addr() as u64);
        line.push(b", not at ISOLATION_A_DATA_VADDR");
        test.exit(&line, test_status::BREACH)
    }
    for i in 0..WORDS {
        // SAFETY: i < WORDS, inside DATA; single-threaded, and nothing else refers to DATA.
        // Volatile: the stores and loads must really happen around the YIELDs.
        unsafe { data.add(i).write_volatile(pattern(i)) };
    }
    for _ in 0..YIELDS {
        rt::sys::yield_now();
    }
    let mut changed = 0u64;
    let mut first = None;
    for i in 0..WORDS {
        // SAFETY: as above.
        if unsafe { data.add(i).read_volatile() } != pattern(i) {
            changed += 1;
            first.get_or_insert(i);
        }
    }
    match first {
        None => test.pass(b"data intact"),
        Some(word) => {
            let mut line = test.line();
            line.push(b"breach: ").push_u64(changed);
            line.push(b" words changed, the first at word ")
                .push_u64(word as u64);
            test.exit(&line, test_status::BREACH)
        }
    }
});
