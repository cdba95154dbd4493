//! The IPC message: a `message_header` followed by up to `MSG_MAX_PAYLOAD` payload bytes,
//! held in a buffer the size of the kernel's IPC buffer.

use crate::wire::{read_u8, read_u16, read_u32, read_u64, write_u16, write_u32, write_u64};
use crate::{IPC_BUFFER_SIZE, MSG_MAX_CAPS, MSG_MAX_PAYLOAD, message_header};

/// A decoded `message_header`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageHeader {
    /// Operation of a request; status code of a reply.
    pub op: u32,
    pub payload_len: u16,
    pub cap_count: u8,
    pub reserved0: u8,
    /// Sender: slots to transfer. Receiver: slots the transferred capabilities landed in.
    pub caps: [u32; message_header::CAPS_COUNT],
    pub reserved1: u64,
}

impl MessageHeader {
    /// A header with `op` and `payload_len` set and everything else zero (no capabilities).
    pub const fn new(op: u32, payload_len: u16) -> Self {
        Self {
            op,
            payload_len,
            cap_count: 0,
            reserved0: 0,
            caps: [0; message_header::CAPS_COUNT],
            reserved1: 0,
        }
    }

    /// Decode the header at the start of `bytes`; `None` if `bytes` is too short.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut caps = [0u32; message_header::CAPS_COUNT];
        for (i, cap) in caps.iter_mut().enumerate() {
            *cap = read_u32(bytes, message_header::CAPS + 4 * i)?;
        }
        Some(Self {
            op: read_u32(bytes, message_header::OP)?,
            payload_len: read_u16(bytes, message_header::PAYLOAD_LEN)?,
            cap_count: read_u8(bytes, message_header::CAP_COUNT)?,
            reserved0: read_u8(bytes, message_header::RESERVED0)?,
            caps,
            reserved1: read_u64(bytes, message_header::RESERVED1)?,
        })
    }

    /// Encode into the start of `out`; `false` (nothing written) if `out` is too short.
    pub fn encode(&self, out: &mut [u8]) -> bool {
        let Some(dst) = out.get_mut(..message_header::SIZE) else {
            return false;
        };
        let mut ok = write_u32(dst, message_header::OP, self.op)
            & write_u16(dst, message_header::PAYLOAD_LEN, self.payload_len)
            & write_u64(dst, message_header::RESERVED1, self.reserved1);
        if let Some(b) = dst.get_mut(message_header::CAP_COUNT) {
            *b = self.cap_count;
        }
        if let Some(b) = dst.get_mut(message_header::RESERVED0) {
            *b = self.reserved0;
        }
        for (i, cap) in self.caps.iter().enumerate() {
            ok &= write_u32(dst, message_header::CAPS + 4 * i, *cap);
        }
        ok
    }

    /// The transferred-capability slots the header names (`cap_count` clamped to
    /// `MSG_MAX_CAPS`).
    pub fn cap_slots(&self) -> &[u32] {
        let n = usize::from(self.cap_count).min(MSG_MAX_CAPS);
        self.caps.get(..n).unwrap_or(&[])
    }

    /// `payload_len` clamped to `MSG_MAX_PAYLOAD`.
    pub fn payload_len_clamped(&self) -> usize {
        usize::from(self.payload_len).min(MSG_MAX_PAYLOAD)
    }
}

/// A whole message in a buffer laid out exactly like the kernel's IPC buffer.
#[derive(Clone)]
pub struct Message {
    bytes: [u8; IPC_BUFFER_SIZE],
}

impl Default for Message {
    fn default() -> Self {
        Self::new()
    }
}

impl Message {
    /// An all-zero message.
    pub const fn new() -> Self {
        Self {
            bytes: [0; IPC_BUFFER_SIZE],
        }
    }

    /// The raw buffer.
    pub fn as_bytes(&self) -> &[u8; IPC_BUFFER_SIZE] {
        &self.bytes
    }

    /// The raw buffer, writable.
    pub fn as_bytes_mut(&mut self) -> &mut [u8; IPC_BUFFER_SIZE] {
        &mut self.bytes
    }

    /// The decoded header.
    pub fn header(&self) -> MessageHeader {
        // The buffer always holds a whole header.
        MessageHeader::decode(&self.bytes).unwrap_or_default()
    }

    /// Overwrite the header.
    pub fn set_header(&mut self, header: &MessageHeader) {
        // Cannot fail: the buffer always holds a whole header.
        let _ = header.encode(&mut self.bytes);
    }

    /// The payload the header declares (its length clamped to `MSG_MAX_PAYLOAD`).
    pub fn payload(&self) -> &[u8] {
        let len = self.header().payload_len_clamped();
        self.payload_area()
            .get(..len)
            .unwrap_or_else(|| self.payload_area())
    }

    /// The whole payload area (`MSG_MAX_PAYLOAD` bytes), whatever the header says.
    pub fn payload_area(&self) -> &[u8] {
        self.bytes.get(message_header::SIZE..).unwrap_or(&[])
    }

    /// The whole payload area (`MSG_MAX_PAYLOAD` bytes), writable.
    pub fn payload_area_mut(&mut self) -> &mut [u8] {
        self.bytes
            .get_mut(message_header::SIZE..)
            .unwrap_or(&mut [])
    }

    /// Bytes of the buffer that carry the message: header plus declared payload.
    pub fn wire_len(&self) -> usize {
        message_header::SIZE + self.header().payload_len_clamped()
    }

    /// Start a new message: header `op` with `payload_len` (clamped to `MSG_MAX_PAYLOAD`), no
    /// capabilities, reserved fields zero; the first `payload_len` payload bytes are zeroed and
    /// returned for the caller to fill.
    pub fn start(&mut self, op: u32, payload_len: usize) -> &mut [u8] {
        let len = payload_len.min(MSG_MAX_PAYLOAD);
        // `len` fits in u16: MSG_MAX_PAYLOAD < 65536.
        self.set_header(&MessageHeader::new(op, len as u16));
        let area = self.payload_area_mut();
        let payload = area.get_mut(..len).unwrap_or(&mut []);
        payload.fill(0);
        payload
    }
}

const _: () = assert!(MSG_MAX_PAYLOAD <= u16::MAX as usize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = MessageHeader {
            op: 0x402,
            payload_len: 8,
            cap_count: 2,
            reserved0: 0,
            caps: [5, 6, 0, 0],
            reserved1: 0,
        };
        let mut b = [0u8; message_header::SIZE];
        assert!(h.encode(&mut b));
        assert_eq!(MessageHeader::decode(&b), Some(h));
        assert_eq!(h.cap_slots(), &[5, 6]);
        assert_eq!(read_u32(&b, message_header::CAPS + 4), Some(6));
    }

    #[test]
    fn header_codec_rejects_short_buffers() {
        assert_eq!(
            MessageHeader::decode(&[0u8; message_header::SIZE - 1]),
            None
        );
        let mut short = [0u8; 8];
        assert!(!MessageHeader::new(1, 0).encode(&mut short));
        assert_eq!(short, [0u8; 8]);
    }

    #[test]
    fn cap_slots_are_clamped() {
        let h = MessageHeader {
            cap_count: 200,
            caps: [1, 2, 3, 4],
            ..MessageHeader::default()
        };
        assert_eq!(h.cap_slots(), &[1, 2, 3, 4]);
    }

    #[test]
    fn message_payload_follows_header() {
        let mut m = Message::new();
        m.start(7, 3).copy_from_slice(&[9, 8, 7]);
        assert_eq!(m.header().op, 7);
        assert_eq!(m.payload(), &[9, 8, 7]);
        assert_eq!(m.wire_len(), message_header::SIZE + 3);
        assert_eq!(m.as_bytes()[message_header::SIZE], 9);

        let mut h = m.header();
        h.payload_len = u16::MAX;
        m.set_header(&h);
        assert_eq!(m.payload().len(), MSG_MAX_PAYLOAD);
        assert_eq!(m.wire_len(), IPC_BUFFER_SIZE);
    }

    #[test]
    fn start_zeroes_stale_payload() {
        let mut m = Message::new();
        m.payload_area_mut().fill(0xAA);
        assert_eq!(m.start(1, 4), &[0, 0, 0, 0]);
        assert_eq!(m.start(1, 5000).len(), MSG_MAX_PAYLOAD);
    }
}
