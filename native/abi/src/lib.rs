//! The EriX ABI for the native images.
//!
//! Every number comes from `abi/erix-abi.toml` through the generated module (re-exported at
//! the crate root), with an enum per service's ops (`ProcdOp`, `KernelOp`, ...: `TryFrom<u32>`,
//! and the payload each op carries); this crate adds only little-endian codecs over byte
//! slices, the message-buffer type and the header check of a request against its op's
//! payload (`MessageHeader::expect`). No behaviour lives here.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

mod generated;

pub use generated::*;

mod msg;
mod payload;
mod wire;

pub use msg::{Message, MessageHeader};
pub use payload::{Malformed, Payload, UnknownOp};
pub use wire::{read_u8, read_u16, read_u32, read_u64, write_u16, write_u32, write_u64};

/// The bytes of an `image_note` record for `role`, as stored in an image's `.erix_image`
/// section.
pub const fn image_note(role: u16) -> [u8; image_note::SIZE] {
    let mut out = [0u8; image_note::SIZE];
    let magic = IMAGE_NOTE_MAGIC.to_le_bytes();
    let role = role.to_le_bytes();
    let version = IMAGE_NOTE_VERSION.to_le_bytes();
    let mut i = 0;
    while i < magic.len() {
        out[image_note::MAGIC + i] = magic[i];
        i += 1;
    }
    let mut i = 0;
    while i < role.len() {
        out[image_note::ROLE + i] = role[i];
        out[image_note::VERSION + i] = version[i];
        i += 1;
    }
    out
}

// The IPC buffer is exactly a message header followed by the largest payload.
const _: () = assert!(message_header::SIZE + MSG_MAX_PAYLOAD == IPC_BUFFER_SIZE);
const _: () = assert!(message_header::CAPS_COUNT == MSG_MAX_CAPS);
const _: () = assert!(create_process_request::GRANTS_COUNT == CREATE_MAX_GRANTS);
// Each `create_process_request.grants` u64 word is one `grant` record.
const _: () = assert!(grant::SIZE == 8);
const _: () =
    assert!(envelope_header::SIZE + ENVELOPE_MAX_SLOTS * envelope_slot::SIZE <= ENVELOPE_MAX);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_note_layout() {
        let note = image_note(role::PROCD);
        assert_eq!(read_u32(&note, image_note::MAGIC), Some(IMAGE_NOTE_MAGIC));
        assert_eq!(read_u16(&note, image_note::ROLE), Some(role::PROCD));
        assert_eq!(
            read_u16(&note, image_note::VERSION),
            Some(IMAGE_NOTE_VERSION)
        );
        assert_eq!(&note[..4], b"ERXI");
    }

    #[test]
    fn magics_spell_their_names() {
        assert_eq!(&ENVELOPE_MAGIC.to_le_bytes(), b"ERXV");
        assert_eq!(&IMAGE_NOTE_MAGIC.to_le_bytes(), b"ERXI");
    }

    #[test]
    fn intake_specs_resolve() {
        assert_eq!(intake::for_role(role::PROCD), intake::PROCD);
        assert_eq!(intake::for_role(role::NAMED), intake::DEFAULT);
        assert!(intake::for_role(role::TEST).iter().any(|e| e.required));
    }
}
