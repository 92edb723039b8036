//! Per-connection output: frames queued in order and written with vectored writes. Small frames
//! are packed into one staging buffer; large shared payloads (batch payloads, snapshot chunks)
//! are queued as their own `Bytes` and written without being copied. Owns the count of queued
//! bytes that the loop bounds, and knows where the queued consensus messages start, so that
//! those not yet begun can move to another connection to the same peer (`append_whole_frames`).

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::{Bytes, BytesMut};

use super::conn_stream::ConnStream;
use super::frame::{frame_header, FrameType};
use super::peer_msg::BodyPart;
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
    /// Bytes ever queued (written or not): the offset the next byte queued will have.
    pushed: u64,
    /// Offsets (as `pushed` counts) where queued consensus-message frames start, oldest first;
    /// those before the first unwritten byte are dropped as writes pass them. (Handshake and
    /// client frames are not listed: they belong to their connection.)
    frame_starts: VecDeque<u64>,
}

impl OutQueue {
    pub(super) fn new() -> OutQueue {
        OutQueue {
            chunks: VecDeque::new(),
            staging: BytesMut::new(),
            queued_bytes: 0,
            pushed: 0,
            frame_starts: VecDeque::new(),
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
        if ty == FrameType::Raft {
            self.frame_starts.push_back(self.pushed);
        }
        self.pushed += total as u64;
        self.queued_bytes += total;
        total
    }

    /// Queues bytes as they are (a text protocol's reply, no frame header; or the tail of a
    /// frame whose start a direct write sent).
    pub(super) fn push_raw(&mut self, bytes: &[u8]) {
        self.staging.extend_from_slice(bytes);
        self.pushed += bytes.len() as u64;
        self.queued_bytes += bytes.len();
    }

    /// The offset (as `pushed` counts) of the first byte not yet written.
    fn written(&self) -> u64 {
        self.pushed - self.queued_bytes as u64
    }

    /// Moves the consensus messages of `from` that no write has begun (and everything queued
    /// after the first of them: on a peer connection, only more of them) to the end of this
    /// queue, in order, without copying their payloads; drops what precedes them in `from` (the
    /// unwritten tail of a frame partly written: the other end cannot use it without its start;
    /// an unsent handshake frame). Returns the bytes moved.
    ///
    /// Example: `from` queued messages at offsets 0 (100 bytes), 100 (50) and 150 (30) and wrote
    /// 120 bytes: the message at 100 is partly written, so its 30 unwritten bytes are dropped
    /// and the 30-byte message at 150 moves.
    pub(super) fn append_whole_frames(&mut self, mut from: OutQueue) -> usize {
        from.seal();
        let written = from.written();
        let Some(&first) = from.frame_starts.iter().find(|&&start| start >= written) else {
            return 0;
        };
        drop_front(&mut from.chunks, (first - written) as usize);
        let moved = (from.pushed - first) as usize;
        assert_eq!(
            moved,
            from.chunks.iter().map(Bytes::len).sum::<usize>(),
            "the frames from offset {first} are not what the queue holds"
        );
        self.seal();
        let base = self.pushed;
        self.frame_starts.extend(
            from.frame_starts
                .iter()
                .filter(|&&start| start >= first)
                .map(|start| base + (start - first)),
        );
        self.chunks.extend(from.chunks);
        self.pushed += moved as u64;
        self.queued_bytes += moved;
        moved
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
            drop_front(&mut self.chunks, written);
            let written = self.written();
            while self
                .frame_starts
                .front()
                .is_some_and(|&start| start < written)
            {
                self.frame_starts.pop_front();
            }
        }
        match stream.flush() {
            Ok(()) => Ok(false),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(true),
            Err(err) => Err(err),
        }
    }
}

/// Drops the first `count` queued bytes of `chunks` (which holds at least that many).
fn drop_front(chunks: &mut VecDeque<Bytes>, mut count: usize) {
    while count > 0 {
        let front = chunks.front_mut().expect("the dropped bytes are queued");
        if front.len() <= count {
            count -= front.len();
            chunks.pop_front();
        } else {
            bytes::Buf::advance(front, count);
            count = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(queue: &mut OutQueue, body: &[u8]) {
        queue.push_frame(FrameType::Raft, body, &[BodyPart::Inline(0..body.len())]);
    }

    #[test]
    fn whole_messages_move_and_a_partial_frame_tail_or_a_handshake_frame_does_not() {
        // A spilled tail of a directly written frame, a handshake frame, then two consensus
        // messages (one with a shared payload).
        let mut from = OutQueue::new();
        from.push_raw(b"tail");
        from.push_frame(FrameType::PeerHello, b"hi", &[BodyPart::Inline(0..2)]);
        frame(&mut from, b"first");
        from.push_frame(
            FrameType::Raft,
            b"",
            &[BodyPart::Shared(Bytes::from_static(b"second"))],
        );
        let mut to = OutQueue::new();
        frame(&mut to, b"queued");
        let to_before = to.queued_bytes;
        let moved = to.append_whole_frames(from);
        assert_eq!(moved, from_bytes(&[b"first", b"second"]));
        assert_eq!(to.queued_bytes, to_before + moved);
        assert_eq!(to.frame_starts.len(), 3);
        to.seal();
        let bytes: Vec<u8> = to.chunks.iter().flat_map(|chunk| chunk.to_vec()).collect();
        let mut expected = Vec::new();
        for body in [&b"queued"[..], b"first", b"second"] {
            expected.extend_from_slice(&frame_header(FrameType::Raft, [body]));
            expected.extend_from_slice(body);
        }
        assert_eq!(bytes, expected);
        // A queue holding no message start moves nothing.
        let mut tail_only = OutQueue::new();
        tail_only.push_raw(b"tail");
        assert_eq!(to.append_whole_frames(tail_only), 0);
    }

    fn from_bytes(bodies: &[&[u8]]) -> usize {
        bodies
            .iter()
            .map(|body| frame_header(FrameType::Raft, [*body]).len() + body.len())
            .sum()
    }
}
