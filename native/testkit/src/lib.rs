//! testkit: what the test images share, so each image's `main` reads as its test and nothing
//! else.
//!
//! Pure parts (host-tested):
//! - [`request`]: a message with an op and a payload;
//! - [`expect_status`], [`reply_u64`]: checks on a reply (its header `op` is its status);
//! - [`pad_name`], [`named_request`]: the name service's request record;
//! - [`Failure`]: what went wrong talking to a peer.
//!
//! Image parts (they make syscalls through `rt`; not in the host test build):
//! - [`image!`]: an image's entry point and `.erix_image` note, so its `main.rs` holds only its
//!   test;
//! - [`start`]: log `<name>: running`, parse the start envelope for role TEST, or exit with its
//!   `startup_status`;
//! - [`Test`]: the slot for a purpose (or exit `INTAKE_MISSING`), log lines prefixed with the
//!   image's name, pass/fail exits, and [`Test::check`] for a peer exchange;
//! - [`call`], [`send`]: CALL or SEND a request through the IPC buffer.
//!
//! Nothing here panics on what a peer sends: every field is read with bounds checks.
#![cfg_attr(not(test), no_std)]

use abi::{MSG_MAX_PAYLOAD, Message, NAME_MAX, named_request, read_u64, status};

/// What [`image!`] expands to names, so an image needs no dependencies of its own for it.
///
/// Declared before `mod image` on purpose: resolving `rt` here, before image.rs names
/// `bootstrap`, fixes the order in which rustc loads these crates into an image, and so the
/// order of their code in its text segment.
#[cfg(not(test))]
#[doc(hidden)]
pub mod __image {
    pub use abi::{image_note, role};
    pub use rt::entry;
}

/// Define an image's entry point (`_start`, from `rt::entry!`) and its `.erix_image` note,
/// which says role TEST.
///
/// - `testkit::image!(NAME, |test| { ... })`: a test. `_start` runs [`start`] with `NAME` (log
///   `<NAME>: running`, parse the start envelope for role TEST, or exit with its
///   `startup_status`) and then the block, with `test` bound to the [`Test`]. The block never
///   returns: it ends in `test.pass`, `test.fail` or `test.exit`.
/// - `testkit::image!(main)`: an image that reads its start envelope itself (or ignores it):
///   `_start` runs `fn main(envelope: *const u8) -> !`.
#[cfg(not(test))]
#[macro_export]
macro_rules! image {
    ($name:expr, |$test:ident| $body:block) => {
        $crate::image!(main);

        fn main(envelope: *const u8) -> ! {
            // SAFETY: `envelope` is the pointer the kernel passed to _start.
            let $test = unsafe { $crate::start($name, envelope) };
            $body
        }
    };
    ($main:ident) => {
        $crate::__image::entry!($main);

        /// The `.erix_image` note: this image serves role TEST.
        #[used]
        #[unsafe(link_section = ".erix_image")]
        static IMAGE_NOTE: [u8; $crate::__image::image_note::SIZE] =
            $crate::__image::image_note($crate::__image::role::TEST);
    };
}

#[cfg(not(test))]
mod image;
#[cfg(not(test))]
pub use image::{Test, call, send, start};

// The name field of a named_request is exactly one NAME_MAX name.
const _: () = assert!(named_request::NAME_COUNT == NAME_MAX);

/// What went wrong in an exchange with a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The request payload exceeds `MSG_MAX_PAYLOAD` (nothing was sent).
    TooLong(usize),
    /// The syscall itself failed with this status (rax).
    Syscall(u32),
    /// The reply's status (its header `op`) is this, not the one expected.
    Status { got: u32, want: u32 },
    /// The reply payload (this many bytes) is too short for the field read.
    ShortReply(usize),
}

/// A message with header `op`, `payload` and no capabilities; `Err(TooLong)` if `payload` exceeds
/// `MSG_MAX_PAYLOAD`.
pub fn request(op: u32, payload: &[u8]) -> Result<Message, Failure> {
    if payload.len() > MSG_MAX_PAYLOAD {
        return Err(Failure::TooLong(payload.len()));
    }
    let mut msg = Message::new();
    let dst = msg.start(op, payload.len());
    for (d, s) in dst.iter_mut().zip(payload) {
        *d = *s;
    }
    Ok(msg)
}

/// `Ok` if `reply`'s status is `want`.
pub fn expect_status(reply: &Message, want: u32) -> Result<(), Failure> {
    let got = reply.header().op;
    if got == want {
        Ok(())
    } else {
        Err(Failure::Status { got, want })
    }
}

/// The little-endian `u64` at `offset` in an OK reply's payload: `Err(Status)` if the reply is
/// not OK, `Err(ShortReply)` if its declared payload does not cover the field.
pub fn reply_u64(reply: &Message, offset: usize) -> Result<u64, Failure> {
    expect_status(reply, status::OK)?;
    let payload = reply.payload();
    read_u64(payload, offset).ok_or(Failure::ShortReply(payload.len()))
}

/// `name` NUL-padded to `NAME_MAX` bytes; `None` for a name that is empty, longer than
/// `NAME_MAX` or holds a NUL (padding could not be told from the name).
pub fn pad_name(name: &[u8]) -> Option<[u8; NAME_MAX]> {
    // Not `contains(&0)`: that calls core's memchr, whose object file would bring all of
    // core's debug info into every image.
    let fits = !name.is_empty() && name.len() <= NAME_MAX && name.iter().all(|&b| b != 0);
    if !fits {
        return None;
    }
    let mut out = [0u8; NAME_MAX];
    for (d, s) in out.iter_mut().zip(name) {
        *d = *s;
    }
    Some(out)
}

/// The `named_request` record binding (REGISTER) or naming (LOOKUP, `value` ignored) `name`;
/// `None` if [`pad_name`] refuses the name.
pub fn named_request(name: &[u8], value: u64) -> Option<[u8; named_request::SIZE]> {
    let padded = pad_name(name)?;
    let mut out = [0u8; named_request::SIZE];
    let field = out.get_mut(named_request::NAME..named_request::NAME + NAME_MAX)?;
    // A zip rather than copy_from_slice: no length-mismatch panic path in the images.
    for (d, s) in field.iter_mut().zip(padded) {
        *d = s;
    }
    abi::write_u64(&mut out, named_request::VALUE, value).then_some(out)
}

#[cfg(test)]
mod tests;
