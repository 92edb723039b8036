//! Frames: the unit of every connection (peer or client). Layout in `docs/FORMATS.md`
//! ("Wire protocol"): length, type, CRC, body; bounded by a maximum size.

use std::io;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// A peer's handshake ([`super::PeerHello`]).
    PeerHello = 1,
    /// A consensus message.
    Raft = 2,
    /// A client's handshake ([`super::ClientHello`]).
    ClientHello = 3,
    /// A client request ([`super::ClientRequest`]).
    ClientRequest = 4,
    /// A reply to a client ([`super::ClientReply`]).
    ClientReply = 5,
}

/// Why a frame was refused.
#[derive(Debug)]
pub enum FrameError {
    /// The connection failed or closed.
    Io(io::Error),
    /// The bytes are not a valid frame; `reason` says how (length, type, CRC).
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// The frame is longer than the configured maximum.
    TooLarge {
        /// The length the frame header announces.
        len: u64,
        /// The maximum.
        max: u32,
    },
}

/// Appends one frame of type `ty` holding `body` to `out`.
pub fn encode_frame(ty: FrameType, body: &[u8], out: &mut Vec<u8>) {
    let _ = (ty, body, out);
    todo!("net helper")
}

/// Reads one whole frame from a blocking reader into `body` (replacing its contents), checking
/// length, type and CRC. For clients and tools; the transport decodes incrementally.
pub fn read_frame(
    reader: &mut impl io::Read,
    max_frame_bytes: u32,
    body: &mut Vec<u8>,
) -> Result<FrameType, FrameError> {
    let _ = (reader, max_frame_bytes, body);
    todo!("net helper")
}
