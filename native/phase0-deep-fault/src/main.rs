//! phase0-deep-fault: logs that it runs, then faults three non-inlined calls deep
//! (`main` -> `outer` -> `middle` -> `deep_store`), in a leaf that never sets up a frame:
//! `deep_store` is written in assembly with its call-frame information (CFA = rsp + 8) and no
//! prologue, so `rbp` still holds `middle`'s frame when it faults. A crash dump's backtrace must
//! name every frame: DWARF CFI gets this right, the rbp chain alone would skip `middle`. Should
//! the store somehow succeed, it exits `test_status::BREACH`.
#![no_std]
#![no_main]

use abi::test_status;
use core::hint::black_box;

/// An address in the first page, which the kernel never maps in any address space.
const UNMAPPED: u64 = 0x18;

// `deep_store(address, value) -> value`: stores `value` at `address`. A leaf with no prologue
// (no push of rbp, no stack adjustment), as hand-written or heavily optimised leaves are, with
// the CFI a compiler gives such a leaf.
core::arch::global_asm!(
    ".pushsection .text.deep_store,\"ax\",@progbits",
    ".globl deep_store",
    ".type deep_store,@function",
    "deep_store:",
    ".cfi_startproc",
    "mov qword ptr [rdi], rsi",
    "mov rax, rsi",
    "ret",
    ".cfi_endproc",
    ".size deep_store, . - deep_store",
    ".popsection",
);

unsafe extern "sysv64" {
    /// See the assembly above.
    fn deep_store(address: u64, value: u64) -> u64;
}

#[inline(never)]
fn middle(address: u64, value: u64) -> u64 {
    // Using the result after the call keeps it a call (no tail call into the leaf).
    // SAFETY: none; this store is the test (the page is unmapped, so the CPU faults).
    unsafe { deep_store(black_box(address), value) }.wrapping_add(1)
}

#[inline(never)]
fn outer(address: u64) -> u64 {
    middle(black_box(address), 0xdead_beef).wrapping_mul(3)
}

testkit::image!(b"phase0-deep-fault", |test| {
    black_box(outer(black_box(UNMAPPED)));
    test.fail(
        b"survived a store to an unmapped address",
        test_status::BREACH,
    )
});
