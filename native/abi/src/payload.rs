//! What an op's payload is made of, and the one check of a request's header against it.
//!
//! The generated op enums (`ProcdOp`, `KernelOp`, ...) say which [`Payload`] each op's request
//! and OK reply carry; [`MessageHeader::expect`] is the header check a server applies to a
//! request before reading its payload.

use crate::msg::MessageHeader;
use crate::status;

/// The payload a message carries, in bytes of its layout (`<layout>::SIZE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// No payload.
    Empty,
    /// Exactly one record of this many bytes.
    One(usize),
    /// Zero or more records of this many bytes, back to back.
    Records(usize),
    /// One record of this many bytes, then bytes it describes (CREATE_PROCESS's envelope).
    Head(usize),
}

impl Payload {
    /// Whether a payload of `len` bytes has this shape.
    #[inline]
    pub const fn admits(self, len: usize) -> bool {
        match self {
            Payload::Empty => len == 0,
            Payload::One(size) => len == size,
            Payload::Records(size) => size != 0 && len.is_multiple_of(size),
            Payload::Head(size) => len >= size,
        }
    }
}

/// A number that names no op of the enum it was converted to (`TryFrom<u32>` of an op enum).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownOp(pub u32);

impl From<UnknownOp> for u32 {
    /// An unknown op is answered INVALID_ARGUMENT.
    fn from(_: UnknownOp) -> u32 {
        status::INVALID_ARGUMENT
    }
}

/// A request whose header does not fit its op: the wrong payload length, capabilities
/// attached, or a reserved field set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed;

impl From<Malformed> for u32 {
    /// A malformed request is answered INVALID_ARGUMENT.
    fn from(_: Malformed) -> u32 {
        status::INVALID_ARGUMENT
    }
}

impl MessageHeader {
    /// Check a request's header against the `payload` its op carries (e.g.
    /// `ProcdOp::Stop.request()`): `payload_len` admitted by it, no capabilities, both reserved
    /// fields zero. `?` turns the error into INVALID_ARGUMENT in a function returning
    /// `Result<_, u32>`.
    ///
    /// `#[inline]` (here and on `Payload::admits`) lets the check fold into the caller as if
    /// written there: procd's images compile to the same instructions as with its hand-written
    /// checks, which the trace digests hold.
    #[inline]
    pub const fn expect(&self, payload: Payload) -> Result<(), Malformed> {
        if payload.admits(self.payload_len as usize)
            && self.cap_count == 0
            && self.reserved0 == 0
            && self.reserved1 == 0
        {
            Ok(())
        } else {
            Err(Malformed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        KernelEvent, KernelOp, MSG_MAX_PAYLOAD, ProcdOp, audit_record, create_process_request,
        kernel_event, message_header, procd_op, process_request, spawn_service_request,
    };

    fn header(payload_len: u16) -> MessageHeader {
        MessageHeader::new(procd_op::STOP, payload_len)
    }

    #[test]
    fn shapes_admit_their_lengths() {
        assert!(Payload::Empty.admits(0) && !Payload::Empty.admits(1));
        assert!(
            Payload::One(8).admits(8) && !Payload::One(8).admits(7) && !Payload::One(8).admits(9)
        );
        assert!(Payload::Records(24).admits(0) && Payload::Records(24).admits(48));
        assert!(!Payload::Records(24).admits(25));
        assert!(
            !Payload::Records(0).admits(0),
            "a zero-size record admits nothing"
        );
        assert!(
            Payload::Head(4).admits(4)
                && Payload::Head(4).admits(900)
                && !Payload::Head(4).admits(3)
        );
    }

    #[test]
    fn expect_checks_length_caps_and_reserved_fields() {
        let stop = ProcdOp::Stop.request();
        assert_eq!(stop, Payload::One(process_request::SIZE));
        assert_eq!(header(process_request::SIZE as u16).expect(stop), Ok(()));
        assert_eq!(header(0).expect(stop), Err(Malformed));
        assert_eq!(
            header(process_request::SIZE as u16 + 1).expect(stop),
            Err(Malformed)
        );
        assert_eq!(header(u16::MAX).expect(stop), Err(Malformed));
        let good = header(process_request::SIZE as u16);
        for bad in [
            MessageHeader {
                cap_count: 1,
                ..good
            },
            MessageHeader {
                reserved0: 1,
                ..good
            },
            MessageHeader {
                reserved1: 1,
                ..good
            },
        ] {
            assert_eq!(bad.expect(stop), Err(Malformed));
        }
        assert_eq!(u32::from(Malformed), status::INVALID_ARGUMENT);
    }

    #[test]
    fn op_numbers_round_trip_and_unknown_ones_are_errors() {
        for op in ProcdOp::ALL {
            assert_eq!(ProcdOp::try_from(op.number()), Ok(op));
            assert_eq!(u32::from(op), op.number());
            assert_eq!(procd_op::name(op.number()), Some(op.name()));
        }
        for op in KernelOp::ALL {
            assert_eq!(KernelOp::try_from(u32::from(op)), Ok(op));
        }
        for number in [0, 0x401, 0x40B, kernel_event::CHILD_DIED, u32::MAX] {
            assert_eq!(ProcdOp::try_from(number), Err(UnknownOp(number)));
        }
        assert_eq!(
            KernelEvent::try_from(procd_op::SPAWN),
            Err(UnknownOp(procd_op::SPAWN))
        );
        assert_eq!(u32::from(UnknownOp(9)), status::INVALID_ARGUMENT);
    }

    #[test]
    fn payloads_say_what_procd_and_the_kernel_exchange() {
        assert_eq!(
            ProcdOp::SpawnService.request(),
            Payload::One(spawn_service_request::SIZE)
        );
        assert_eq!(ProcdOp::Spawn.request(), ProcdOp::SpawnService.request());
        assert_eq!(ProcdOp::List.request(), Payload::Empty);
        assert_eq!(
            ProcdOp::AuditRead.reply(),
            Payload::Records(audit_record::SIZE)
        );
        assert_eq!(
            KernelOp::CreateProcess.request(),
            Payload::Head(create_process_request::SIZE)
        );
        // Every fixed request fits one message.
        for op in ProcdOp::ALL {
            if let Payload::One(size) | Payload::Head(size) = op.request() {
                assert!(
                    size <= MSG_MAX_PAYLOAD
                        && message_header::SIZE + size <= crate::IPC_BUFFER_SIZE
                );
            }
        }
    }
}
