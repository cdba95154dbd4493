//! The kernel's IPC buffer (`IPC_BUFFER_SIZE` bytes at `IPC_BUFFER_VADDR`, read-write).
//!
//! The kernel rewrites the buffer during SEND/RECV/CALL/REPLY, so the images never hold a Rust
//! reference to it: they copy the message into a local [`Message`] after a syscall and back
//! before one. Only header plus declared payload is copied.

use abi::{IPC_BUFFER_SIZE, IPC_BUFFER_VADDR, Message};

const HEADER: usize = abi::message_header::SIZE;

fn buffer() -> *mut u8 {
    // IPC_BUFFER_VADDR fits in usize on x86_64.
    core::ptr::with_exposed_provenance_mut(IPC_BUFFER_VADDR as usize)
}

/// Copy the message the kernel left in the IPC buffer into `msg` (header and declared payload;
/// the rest of `msg` is left as it was).
pub fn load(msg: &mut Message) {
    let dst = msg.as_bytes_mut().as_mut_ptr();
    // SAFETY: the kernel maps IPC_BUFFER_SIZE readable bytes at IPC_BUFFER_VADDR for the
    // process's lifetime; `dst` is a distinct local buffer of the same size.
    unsafe { core::ptr::copy_nonoverlapping(buffer(), dst, HEADER) };
    let payload = msg.header().payload_len_clamped();
    let dst = msg.as_bytes_mut().as_mut_ptr();
    // SAFETY: as above; HEADER + payload <= IPC_BUFFER_SIZE (payload_len is clamped to
    // MSG_MAX_PAYLOAD).
    unsafe { core::ptr::copy_nonoverlapping(buffer().add(HEADER), dst.add(HEADER), payload) };
}

/// Copy `msg` (header and declared payload) into the IPC buffer for the next syscall.
pub fn store(msg: &Message) {
    let len = msg.wire_len().min(IPC_BUFFER_SIZE);
    // SAFETY: the kernel maps IPC_BUFFER_SIZE writable bytes at IPC_BUFFER_VADDR;
    // `len` <= IPC_BUFFER_SIZE.
    unsafe { core::ptr::copy_nonoverlapping(msg.as_bytes().as_ptr(), buffer(), len) };
}
