//! The byte stream of one event-loop connection: plain TCP, or (with the `tls` feature) TLS over
//! the same non-blocking socket (`super::tls`).
//!
//! The contract is the same for both kinds: a read returns what it got and is repeated until it
//! would block (edge-triggered polling); a write accepts bytes or would block; `flush` pushes out
//! every TLS record already made, or would block. The plain path costs one `match` per read and
//! write (none without the `tls` feature, where `Plain` is the only variant): no copy, no
//! allocation.

use std::io::{self, IoSlice, Write};

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::frame::{FrameDecoder, ReadOutcome};
#[cfg(feature = "tls")]
use super::tls::TlsStream;

/// One connection's byte stream in the event loop.
pub(super) enum ConnStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    #[cfg(feature = "tls")]
    Tls(Box<TlsStream>),
}

impl ConnStream {
    /// The socket (for its options, errors and address).
    pub(super) fn tcp(&self) -> &TcpStream {
        match self {
            ConnStream::Plain(tcp) => tcp,
            #[cfg(feature = "tls")]
            ConnStream::Tls(stream) => stream.tcp(),
        }
    }

    pub(super) fn tcp_mut(&mut self) -> &mut TcpStream {
        match self {
            ConnStream::Plain(tcp) => tcp,
            #[cfg(feature = "tls")]
            ConnStream::Tls(stream) => stream.tcp_mut(),
        }
    }

    /// The socket, if the stream is plain TCP: other threads may then write to it directly
    /// (TLS state belongs to the loop's thread).
    pub(super) fn plain_tcp(&self) -> Option<&TcpStream> {
        match self {
            ConnStream::Plain(tcp) => Some(tcp),
            #[cfg(feature = "tls")]
            ConnStream::Tls(_) => None,
        }
    }

    /// Reads once into `decoder`: straight from the socket for plain TCP; for TLS, one `recv`
    /// of at most `scratch.len()` ciphertext bytes, all of whose plaintext goes to the decoder
    /// (`Data(0)` when it held only handshake records or a partial record).
    pub(super) fn read_into(
        &mut self,
        decoder: &mut FrameDecoder,
        #[cfg_attr(not(feature = "tls"), allow(unused_variables))] scratch: &mut [u8],
    ) -> io::Result<ReadOutcome> {
        match self {
            ConnStream::Plain(tcp) => decoder.read_from(tcp),
            #[cfg(feature = "tls")]
            ConnStream::Tls(stream) => stream.read_into(decoder, scratch),
        }
    }

    /// TLS records wait to be written (a handshake message, or records the socket did not take).
    pub(super) fn wants_write(&self) -> bool {
        match self {
            ConnStream::Plain(_) => false,
            #[cfg(feature = "tls")]
            ConnStream::Tls(stream) => stream.wants_write(),
        }
    }

    /// Whether a TLS handshake is still going on (false for plain TCP).
    pub(super) fn is_handshaking(&self) -> bool {
        match self {
            ConnStream::Plain(_) => false,
            #[cfg(feature = "tls")]
            ConnStream::Tls(stream) => stream.is_handshaking(),
        }
    }

    /// Before closing: tells a TLS peer the close is intended (best effort, never blocks).
    pub(super) fn close_notify(&mut self) {
        match self {
            ConnStream::Plain(_) => {}
            #[cfg(feature = "tls")]
            ConnStream::Tls(stream) => stream.close_notify(),
        }
    }
}

impl Write for ConnStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            ConnStream::Plain(tcp) => tcp.write_vectored(bufs),
            #[cfg(feature = "tls")]
            ConnStream::Tls(stream) => stream.write_vectored(bufs),
        }
    }

    /// Plain TCP: nothing to do. TLS: writes the records made so far, or fails with
    /// `WouldBlock` while some are left.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            ConnStream::Plain(_) => Ok(()),
            #[cfg(feature = "tls")]
            ConnStream::Tls(stream) => stream.flush_records(),
        }
    }
}

impl Source for ConnStream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.tcp_mut().register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.tcp_mut().reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.tcp_mut().deregister(registry)
    }
}
