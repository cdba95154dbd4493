//! A fixed buffer for one `DEBUG_WRITE` line: text that does not fit is dropped.

use abi::DEBUG_WRITE_MAX;

/// Up to `DEBUG_WRITE_MAX` bytes of a log line.
pub struct LineBuf {
    buf: [u8; DEBUG_WRITE_MAX],
    len: usize,
}

impl Default for LineBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl LineBuf {
    /// An empty line.
    pub const fn new() -> Self {
        Self {
            buf: [0; DEBUG_WRITE_MAX],
            len: 0,
        }
    }

    /// Append `bytes`, truncating at `DEBUG_WRITE_MAX`.
    pub fn push(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes {
            match self.buf.get_mut(self.len) {
                Some(slot) => {
                    *slot = b;
                    self.len += 1;
                }
                None => break,
            }
        }
        self
    }

    /// Append `value` in decimal.
    pub fn push_u64(&mut self, mut value: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            if let Some(d) = digits.get_mut(start) {
                *d = b'0' + (value % 10) as u8;
            }
            value /= 10;
            if value == 0 || start == 0 {
                break;
            }
        }
        self.push(digits.get(start..).unwrap_or(&[]))
    }

    /// Append `value` as `0x` and lowercase hex digits.
    pub fn push_hex(&mut self, value: u64) -> &mut Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.push(b"0x");
        let mut started = false;
        for shift in (0..16).rev() {
            let nibble = ((value >> (shift * 4)) & 0xF) as usize;
            started |= nibble != 0 || shift == 0;
            if started {
                self.push(HEX.get(nibble..=nibble).unwrap_or(b"?"));
            }
        }
        self
    }

    /// The line so far.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composes_text_and_numbers() {
        let mut l = LineBuf::new();
        l.push(b"at ")
            .push_u64(0)
            .push(b" ")
            .push_u64(1234567890)
            .push(b" ");
        l.push_u64(u64::MAX)
            .push(b" ")
            .push_hex(0)
            .push(b" ")
            .push_hex(0x402);
        assert_eq!(
            l.as_bytes(),
            b"at 0 1234567890 18446744073709551615 0x0 0x402"
        );
    }

    #[test]
    fn truncates_at_the_debug_write_limit() {
        let mut l = LineBuf::new();
        for _ in 0..100 {
            l.push(b"abcdefgh");
        }
        l.push_u64(42);
        assert_eq!(l.as_bytes().len(), DEBUG_WRITE_MAX);
        assert!(l.as_bytes().iter().all(|b| b.is_ascii_lowercase()));
    }
}
