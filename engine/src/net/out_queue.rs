//! Per-connection output: frames queued in order and written with vectored writes. Small frames
//! are packed into one staging buffer; large shared payloads (batch payloads, snapshot chunks)
//! are queued as their own `Bytes` and written without being copied. Owns the count of queued
//! bytes that the loop bounds.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::{Bytes, BytesMut};

use super::frame::{frame_header, FrameType};
use super::peer_msg::BodyPart;
use super::tls::ConnStream;
use super::NetStats;

/// Buffers handed to one `write_vectored`.
const IOVECS_PER_WRITE: usize = 128;

/// Frames queued for one connection: small frames are packed into `staging`, large payloads are
/// queued as their own `Bytes` so they are written without being copied.
pub(super) struct OutQueue {
    chunks: VecDeque<Bytes>,
    staging: BytesMut,
    /// Bytes queued and not yet written.
    pub(super) queued_bytes: usize,
}

impl OutQueue {
    pub(super) fn new() -> OutQueue {
        OutQueue {
            chunks: VecDeque::new(),
            staging: BytesMut::new(),
            queued_bytes: 0,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queued_bytes == 0
    }

    fn seal(&mut self) {
        if !self.staging.is_empty() {
            self.chunks.push_back(self.staging.split().freeze());
        }
    }

    /// Queues a frame whose body is `parts` (ranges of `scratch` and shared buffers).
    pub(super) fn push_frame(
        &mut self,
        ty: FrameType,
        scratch: &[u8],
        parts: &[BodyPart],
    ) -> usize {
        let slices = parts.iter().map(|part| match part {
            BodyPart::Inline(range) => &scratch[range.clone()],
            BodyPart::Shared(bytes) => &bytes[..],
        });
        let header = frame_header(ty, slices.clone());
        self.staging.extend_from_slice(&header);
        let mut total = header.len();
        for part in parts {
            match part {
                BodyPart::Inline(range) => self.staging.extend_from_slice(&scratch[range.clone()]),
                BodyPart::Shared(bytes) => {
                    self.seal();
                    self.chunks.push_back(bytes.clone());
                }
            }
        }
        total += slices.map(<[u8]>::len).sum::<usize>();
        self.queued_bytes += total;
        total
    }

    /// Queues bytes as they are (a text protocol's reply, no frame header).
    pub(super) fn push_raw(&mut self, bytes: &[u8]) {
        self.staging.extend_from_slice(bytes);
        self.queued_bytes += bytes.len();
    }

    /// Writes as much as the stream takes, then flushes it (TLS records). Returns whether the
    /// stream would block (output left, here or in the stream).
    pub(super) fn write_to(
        &mut self,
        stream: &mut ConnStream,
        stats: &mut NetStats,
    ) -> io::Result<bool> {
        self.seal();
        while !self.chunks.is_empty() {
            let mut slices = [IoSlice::new(&[]); IOVECS_PER_WRITE];
            let mut used = 0;
            for (slot, chunk) in slices.iter_mut().zip(&self.chunks) {
                *slot = IoSlice::new(chunk);
                used += 1;
            }
            let written = match stream.write_vectored(&slices[..used]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            stats.writes += 1;
            stats.bytes_out += written as u64;
            self.queued_bytes -= written;
            let mut left = written;
            while left > 0 {
                let front = self.chunks.front_mut().expect("written bytes were queued");
                if front.len() <= left {
                    left -= front.len();
                    self.chunks.pop_front();
                } else {
                    bytes::Buf::advance(front, left);
                    left = 0;
                }
            }
        }
        match stream.flush() {
            Ok(()) => Ok(false),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(true),
            Err(err) => Err(err),
        }
    }
}
