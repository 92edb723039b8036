//! Frames: the unit of every connection (peer or client). Layout in `docs/FORMATS.md`
//! ("Wire protocol"):
//!
//! ```text
//! 0       magic 0xB7
//! 1       frame format version (1)
//! 2       frame type (FrameType)
//! 3       reserved, zero
//! 4..8    body length in bytes (u32 LE)
//! 8..12   CRC32 of bytes 0..8, then of the body
//! 12..    body
//! ```
//!
//! Guarantees: a frame is accepted only if its header is well formed, its whole length (header
//! included) is at most the configured maximum, and its CRC matches. The length is checked before
//! any buffer is sized for the body, so a hostile length never causes a large allocation.
//! [`FrameDecoder`] hands bodies out as `Bytes` slices of its read buffer, never copying them.

use std::fmt;
use std::io;
use std::os::fd::AsRawFd;

use bytes::{Buf, Bytes, BytesMut};

/// First byte of every frame (not ASCII, so a text protocol can be told apart by its first byte).
pub const FRAME_MAGIC: u8 = 0xB7;
/// The frame format version this code reads and writes.
pub const FRAME_VERSION: u8 = 1;
/// Bytes of a frame header.
pub const FRAME_HEADER_BYTES: usize = 12;

/// Smallest read the decoder asks the socket for.
const READ_CHUNK_BYTES: usize = 64 << 10;

/// Frames with a smaller body are copied out of the read buffer rather than sliced from it.
/// Consumers may keep a body for long (a follower keeps an append's batch in its in-memory log
/// until the next snapshot), and a slice keeps its whole read chunk alive: one small append per
/// chunk would pin 64 KiB (a page of it resident) for every entry held.
const COPY_BELOW_BYTES: usize = 16 << 10;

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
    /// A peer's proof that it knows the cluster's secret ([`super::PeerProof`]).
    PeerProof = 6,
}

impl FrameType {
    /// Decodes the type byte.
    pub fn from_u8(value: u8) -> Option<FrameType> {
        match value {
            1 => Some(FrameType::PeerHello),
            2 => Some(FrameType::Raft),
            3 => Some(FrameType::ClientHello),
            4 => Some(FrameType::ClientRequest),
            5 => Some(FrameType::ClientReply),
            6 => Some(FrameType::PeerProof),
            _ => None,
        }
    }
}

/// Why a frame was refused.
#[derive(Debug)]
pub enum FrameError {
    /// The connection failed or closed.
    Io(io::Error),
    /// The bytes are not a valid frame; `reason` says how (magic, version, type, CRC).
    Malformed {
        /// What is wrong.
        reason: Malformed,
    },
    /// The frame is longer than the configured maximum.
    TooLarge {
        /// The length the frame header announces.
        len: u64,
        /// The maximum.
        max: u32,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Io(err) => write!(f, "connection error: {err}"),
            FrameError::Malformed { reason } => write!(f, "malformed frame: {reason}"),
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the maximum of {max} bytes")
            }
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FrameError::Io(err) => Some(err),
            FrameError::Malformed { .. } | FrameError::TooLarge { .. } => None,
        }
    }
}

/// How a frame header is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Not the frame magic.
    Magic(u8),
    /// A frame version this code does not speak.
    Version(u8),
    /// A frame type this code does not know.
    Type(u8),
    /// The reserved byte is not zero.
    Reserved(u8),
    /// The checksum does not match the frame.
    Checksum {
        /// The checksum in the header.
        stored: u32,
        /// The checksum of the frame.
        computed: u32,
    },
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Malformed::Magic(magic) => {
                write!(f, "bad magic {magic:#04x} (expected {FRAME_MAGIC:#04x})")
            }
            Malformed::Version(version) => write!(
                f,
                "unknown frame version {version} (expected {FRAME_VERSION})"
            ),
            Malformed::Type(ty) => write!(f, "unknown frame type {ty}"),
            Malformed::Reserved(byte) => write!(f, "reserved byte is {byte:#04x}"),
            Malformed::Checksum { stored, computed } => write!(
                f,
                "frame checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
        }
    }
}

impl From<io::Error> for FrameError {
    fn from(err: io::Error) -> FrameError {
        FrameError::Io(err)
    }
}

/// A checked frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// The frame type.
    pub ty: FrameType,
    /// Bytes of body after the header.
    pub body_len: u32,
    /// The CRC the header announces.
    pub crc: u32,
}

impl FrameHeader {
    /// Decodes and checks a header: magic, version, type, reserved byte, and that the whole frame
    /// fits in `max_frame_bytes`. The CRC is checked later, against the body.
    pub fn decode(
        bytes: &[u8; FRAME_HEADER_BYTES],
        max_frame_bytes: u32,
    ) -> Result<FrameHeader, FrameError> {
        if bytes[0] != FRAME_MAGIC {
            return Err(malformed(Malformed::Magic(bytes[0])));
        }
        if bytes[1] != FRAME_VERSION {
            return Err(malformed(Malformed::Version(bytes[1])));
        }
        let ty = FrameType::from_u8(bytes[2]).ok_or(malformed(Malformed::Type(bytes[2])))?;
        if bytes[3] != 0 {
            return Err(malformed(Malformed::Reserved(bytes[3])));
        }
        let body_len = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
        let len = FRAME_HEADER_BYTES as u64 + u64::from(body_len);
        if len > u64::from(max_frame_bytes) {
            return Err(FrameError::TooLarge {
                len,
                max: max_frame_bytes,
            });
        }
        let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        Ok(FrameHeader { ty, body_len, crc })
    }

    /// Checks the CRC against `body`.
    pub fn check_body(&self, raw_header: &[u8], body: &[u8]) -> Result<(), FrameError> {
        let computed = frame_crc(&raw_header[..8], [body]);
        if computed != self.crc {
            return Err(malformed(Malformed::Checksum {
                stored: self.crc,
                computed,
            }));
        }
        Ok(())
    }
}

fn malformed(reason: Malformed) -> FrameError {
    FrameError::Malformed { reason }
}

fn frame_crc<'a>(head8: &[u8], body_parts: impl IntoIterator<Item = &'a [u8]>) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(head8);
    for part in body_parts {
        hasher.update(part);
    }
    hasher.finalize()
}

/// The header of a frame of type `ty` whose body is the concatenation of `body_parts` (the
/// transport sends the parts without joining them).
pub fn frame_header<'a, I>(ty: FrameType, body_parts: I) -> [u8; FRAME_HEADER_BYTES]
where
    I: IntoIterator<Item = &'a [u8]>,
    I::IntoIter: Clone,
{
    let body_parts = body_parts.into_iter();
    let body_len: usize = body_parts.clone().map(<[u8]>::len).sum();
    let body_len = u32::try_from(body_len)
        .unwrap_or_else(|_| panic!("frame body of {body_len} bytes exceeds u32"));
    let mut header = [0u8; FRAME_HEADER_BYTES];
    header[0] = FRAME_MAGIC;
    header[1] = FRAME_VERSION;
    header[2] = ty as u8;
    header[4..8].copy_from_slice(&body_len.to_le_bytes());
    let crc = frame_crc(&header[..8], body_parts);
    header[8..12].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Appends one frame of type `ty` holding `body` to `out`.
pub fn encode_frame(ty: FrameType, body: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&frame_header(ty, [body]));
    out.extend_from_slice(body);
}

/// Reads one whole frame from a blocking reader into `body` (replacing its contents), checking
/// length, type and CRC. For clients and tools; the transport decodes incrementally.
pub fn read_frame(
    reader: &mut impl io::Read,
    max_frame_bytes: u32,
    body: &mut Vec<u8>,
) -> Result<FrameType, FrameError> {
    let mut raw = [0u8; FRAME_HEADER_BYTES];
    reader.read_exact(&mut raw)?;
    let header = FrameHeader::decode(&raw, max_frame_bytes)?;
    body.clear();
    body.resize(header.body_len as usize, 0);
    reader.read_exact(body)?;
    header.check_body(&raw, body)?;
    Ok(header.ty)
}

/// Incremental frame decoder for non-blocking sockets: read into it, then take whole frames out.
///
/// Bodies of at least `COPY_BELOW_BYTES` are `Bytes` slices of the read buffer (zero copy);
/// smaller ones are copied out, so a kept body never pins a read chunk much larger than itself
/// and the buffer is reused while only small frames arrive. The decoder's own memory is bounded
/// by the largest frame accepted plus one read chunk.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_frame_bytes: u32,
}

/// Outcome of [`FrameDecoder::read_from`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many bytes were read.
    Data(usize),
    /// The reader has nothing now.
    WouldBlock,
    /// The peer closed the connection.
    Closed,
}

impl FrameDecoder {
    /// An empty decoder accepting frames of at most `max_frame_bytes` (header included).
    pub fn new(max_frame_bytes: u32) -> FrameDecoder {
        assert!(
            max_frame_bytes as usize > FRAME_HEADER_BYTES,
            "max_frame_bytes {max_frame_bytes} leaves no room for a body"
        );
        FrameDecoder {
            buf: BytesMut::new(),
            max_frame_bytes,
        }
    }

    /// Bytes received and not yet taken as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The bytes received and not yet taken (for detecting a protocol from its first bytes).
    pub fn peek(&self) -> &[u8] {
        &self.buf
    }

    /// Does one `recv` from `socket` into the buffer's spare capacity (no zero-filling). The read
    /// is sized to finish the frame in progress (once its header is known to be acceptable) and
    /// at least one chunk.
    pub fn read_from(&mut self, socket: &impl AsRawFd) -> io::Result<ReadOutcome> {
        let mut want = READ_CHUNK_BYTES;
        if self.buf.len() >= FRAME_HEADER_BYTES {
            let raw: &[u8; FRAME_HEADER_BYTES] =
                self.buf[..FRAME_HEADER_BYTES].try_into().expect("header");
            if let Ok(header) = FrameHeader::decode(raw, self.max_frame_bytes) {
                let total = FRAME_HEADER_BYTES + header.body_len as usize;
                want = want.max(total.saturating_sub(self.buf.len()));
            }
        }
        self.buf.reserve(want);
        let spare = self.buf.spare_capacity_mut();
        let received = loop {
            // SAFETY: `spare` is writable memory of `spare.len()` bytes owned by `self.buf` and
            // not aliased during the call; the kernel writes at most that many bytes into it.
            let rc = unsafe {
                libc::recv(
                    socket.as_raw_fd(),
                    spare.as_mut_ptr().cast(),
                    spare.len(),
                    0,
                )
            };
            if rc >= 0 {
                break rc as usize;
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(ReadOutcome::WouldBlock),
                _ => return Err(err),
            }
        };
        if received == 0 {
            return Ok(ReadOutcome::Closed);
        }
        assert!(
            received <= spare.len(),
            "recv returned {received} bytes into {} of space",
            spare.len()
        );
        // SAFETY: the kernel initialised the first `received` bytes of the spare capacity.
        unsafe { self.buf.set_len(self.buf.len() + received) };
        Ok(ReadOutcome::Data(received))
    }

    /// Takes the first `len` buffered bytes out (a text protocol's request; zero copy).
    pub fn take_prefix(&mut self, len: usize) -> Bytes {
        assert!(
            len <= self.buf.len(),
            "taking {len} bytes of {} buffered",
            self.buf.len()
        );
        self.buf.split_to(len).freeze()
    }

    /// Appends received bytes (for callers that read elsewhere, and for tests).
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Appends `len` bytes that `fill` writes into the buffer (for a source that is not a socket,
    /// e.g. plaintext coming out of TLS: one copy, no intermediate buffer). On an error nothing
    /// is appended.
    pub fn append_with(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let start = self.buf.len();
        self.buf.resize(start + len, 0);
        let filled = fill(&mut self.buf[start..]);
        if filled.is_err() {
            self.buf.truncate(start);
        }
        filled
    }

    /// Takes the next whole frame out of the buffer, if one is complete. A bad header is
    /// reported as soon as its 12 bytes are in; the CRC once the whole body is.
    pub fn next_frame(&mut self) -> Result<Option<(FrameType, Bytes)>, FrameError> {
        if self.buf.len() < FRAME_HEADER_BYTES {
            return Ok(None);
        }
        let raw: [u8; FRAME_HEADER_BYTES] =
            self.buf[..FRAME_HEADER_BYTES].try_into().expect("header");
        let header = FrameHeader::decode(&raw, self.max_frame_bytes)?;
        let total = FRAME_HEADER_BYTES + header.body_len as usize;
        if self.buf.len() < total {
            return Ok(None);
        }
        header.check_body(&raw, &self.buf[FRAME_HEADER_BYTES..total])?;
        let body = if (header.body_len as usize) < COPY_BELOW_BYTES {
            let body = Bytes::copy_from_slice(&self.buf[FRAME_HEADER_BYTES..total]);
            self.buf.advance(total);
            body
        } else {
            let mut frame = self.buf.split_to(total).freeze();
            frame.split_off(FRAME_HEADER_BYTES)
        };
        Ok(Some((header.ty, body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_blocking_and_incremental() {
        let mut wire = Vec::new();
        encode_frame(FrameType::Raft, b"hello", &mut wire);
        encode_frame(FrameType::ClientReply, b"", &mut wire);
        assert_eq!(wire.len(), 2 * FRAME_HEADER_BYTES + 5);

        let mut reader = &wire[..];
        let mut body = Vec::new();
        assert_eq!(
            read_frame(&mut reader, 1024, &mut body).unwrap(),
            FrameType::Raft
        );
        assert_eq!(body, b"hello");
        assert_eq!(
            read_frame(&mut reader, 1024, &mut body).unwrap(),
            FrameType::ClientReply
        );
        assert!(body.is_empty());

        // Byte by byte through the incremental decoder.
        let mut decoder = FrameDecoder::new(1024);
        let mut frames = Vec::new();
        for byte in &wire {
            decoder.extend(&[*byte]);
            while let Some(frame) = decoder.next_frame().unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(
            frames,
            vec![
                (FrameType::Raft, Bytes::from_static(b"hello")),
                (FrameType::ClientReply, Bytes::new())
            ]
        );
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn small_bodies_are_copied_out_and_large_ones_sliced() {
        let large = vec![7u8; COPY_BELOW_BYTES];
        let mut wire = Vec::new();
        encode_frame(FrameType::Raft, b"small", &mut wire);
        encode_frame(FrameType::Raft, &large, &mut wire);
        let mut decoder = FrameDecoder::new(1 << 20);
        decoder.extend(&wire);
        let start = decoder.peek().as_ptr() as usize;
        let buffer = start..start + wire.len();
        let (_, small) = decoder.next_frame().unwrap().unwrap();
        let (_, sliced) = decoder.next_frame().unwrap().unwrap();
        assert_eq!((&small[..], &sliced[..]), (&b"small"[..], &large[..]));
        assert!(
            !buffer.contains(&(small.as_ptr() as usize)),
            "a small body kept must not pin the read buffer"
        );
        assert!(
            buffer.contains(&(sliced.as_ptr() as usize)),
            "a large body is not copied"
        );
    }

    #[test]
    fn split_header_matches_joined() {
        let joined = frame_header(FrameType::Raft, [&b"abcdef"[..]]);
        let split = frame_header(FrameType::Raft, [&b"ab"[..], &b""[..], &b"cdef"[..]]);
        assert_eq!(joined, split);
    }

    #[test]
    fn refuses_bad_crc_magic_type_and_length() {
        let mut wire = Vec::new();
        encode_frame(FrameType::Raft, b"payload", &mut wire);

        let mut bad_crc = wire.clone();
        *bad_crc.last_mut().unwrap() ^= 1;
        let err = read_frame(&mut &bad_crc[..], 1024, &mut Vec::new()).unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::Malformed {
                    reason: Malformed::Checksum { .. }
                }
            ),
            "{err}"
        );
        assert!(err
            .to_string()
            .starts_with("malformed frame: frame checksum mismatch"));

        let mut bad_magic = wire.clone();
        bad_magic[0] = b'*';
        let err = read_frame(&mut &bad_magic[..], 1024, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("magic"), "{err}");

        let mut bad_type = wire.clone();
        bad_type[2] = 99;
        let err = read_frame(&mut &bad_type[..], 1024, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("type 99"), "{err}");

        // A huge announced length is refused from the header alone, before any allocation.
        let mut huge = wire.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = read_frame(&mut &huge[..], 1024, &mut Vec::new()).unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge { len, max: 1024 } if len == u32::MAX as u64 + 12)
        );
        let mut decoder = FrameDecoder::new(1024);
        decoder.extend(&huge[..FRAME_HEADER_BYTES]);
        assert!(matches!(
            decoder.next_frame(),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn read_from_sizes_reads_to_the_frame() {
        use std::io::Write;
        use std::os::unix::net::UnixStream;

        let body: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut wire = Vec::new();
        encode_frame(FrameType::Raft, &body, &mut wire);
        let (mut tx, rx) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            tx.write_all(&wire).unwrap();
        });
        let mut decoder = FrameDecoder::new(1 << 20);
        loop {
            match decoder.read_from(&rx).unwrap() {
                ReadOutcome::Data(_) => {}
                ReadOutcome::Closed => break,
                ReadOutcome::WouldBlock => unreachable!("blocking socket"),
            }
        }
        writer.join().unwrap();
        let (ty, got) = decoder.next_frame().unwrap().unwrap();
        assert_eq!(ty, FrameType::Raft);
        assert_eq!(&got[..], &body[..]);
        assert_eq!(decoder.buffered(), 0);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = read_frame(&mut &bytes[..], 128, &mut Vec::new());
            let mut decoder = FrameDecoder::new(128);
            decoder.extend(&bytes);
            while let Ok(Some(_)) = decoder.next_frame() {}
        }

        #[test]
        fn round_trips(bodies in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..64), 0..8)) {
            let mut wire = Vec::new();
            for body in &bodies {
                encode_frame(FrameType::ClientRequest, body, &mut wire);
            }
            let mut decoder = FrameDecoder::new(1024);
            decoder.extend(&wire);
            for body in &bodies {
                let (ty, got) = decoder.next_frame().unwrap().unwrap();
                prop_assert_eq!(ty, FrameType::ClientRequest);
                prop_assert_eq!(&got[..], &body[..]);
            }
            prop_assert!(decoder.next_frame().unwrap().is_none());
        }
    }
}
