//! Optional TLS on the transport's connections (rustls with the ring provider): the settings of
//! the ports, a client's trust, and the TLS side of the event loop's stream
//! (`super::conn_stream::ConnStream`). Compiled with the crate's `tls` feature only; without it,
//! `tls_off.rs` takes this module's place with the same types, where only plain TCP exists.
//!
//! What this module owns and guarantees:
//! - [`TlsSettings::load`] reads the PEM files once, at start, and refuses anything it cannot use
//!   with a [`TlsError`] naming the file and what is wrong (missing, not PEM, no certificate or
//!   key in it, key not matching the certificate, certificate not chaining to the CA, expired,
//!   not valid for the node's peer address).
//! - Client port: a TLS server (no client certificate asked for). Peer port: mutual TLS, the
//!   acceptor requires a client certificate chaining to the CA file, and the dialer verifies the
//!   acceptor's certificate against the CA file with the peer's IP address as the server name
//!   (so node certificates carry their peer address's IP as a subject alternative name).
//! - [`TlsStream`] keeps the event loop's stream contract: a TLS read
//!   takes up to one scratch buffer of ciphertext from the socket with one `recv`, and hands
//!   all the plaintext it decrypts to the frame decoder (nothing stays buffered inside rustls,
//!   so no readable edge is missed). A TLS write encrypts at most rustls' buffer limit (64 KiB)
//!   beyond what the socket took, so the out queue's byte count stays the real backlog.

use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig};
use rustls::{ServerConnection, StreamOwned};

use super::conn_stream::ConnStream;
use super::frame::{FrameDecoder, ReadOutcome};
pub use super::tls_types::{TlsError, TlsFile, TlsFileProblem, TlsPorts};

/// Bytes of ciphertext one TLS read takes from the socket at most (the size of the event loop's
/// scratch buffer).
pub const TLS_READ_BYTES: usize = 64 << 10;

/// The TLS configuration of a transport; the default is plain TCP on both ports.
#[derive(Clone, Debug, Default)]
pub struct TlsSettings {
    /// The server side of the client port.
    client_port: Option<Arc<ServerConfig>>,
    /// Both sides of the peer port.
    peer: Option<PeerTls>,
}

/// Mutual TLS between peers.
#[derive(Clone, Debug)]
struct PeerTls {
    /// Accepting: requires a client certificate chaining to the CA.
    acceptor: Arc<ServerConfig>,
    /// Dialing: verifies the acceptor against the CA and presents this node's certificate.
    dialer: Arc<ClientConfig>,
}

/// The crypto provider every configuration here is built with (chosen explicitly, so nothing
/// depends on a process-wide default).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(file: TlsFile, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|err| {
        let problem = match err.kind() {
            io::ErrorKind::NotFound => TlsFileProblem::NotFound,
            _ => TlsFileProblem::Unreadable(err),
        };
        TlsError::file(file, path, problem)
    })
}

/// The certificates of a PEM file (at least one).
fn load_certs(file: TlsFile, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = read_file(file, path)?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::file(file, path, TlsFileProblem::NotPem(err)))?;
    if certs.is_empty() {
        return Err(TlsError::file(file, path, TlsFileProblem::NoCertificate));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = read_file(TlsFile::Key, path)?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|err| {
        let problem = match err {
            rustls::pki_types::pem::Error::NoItemsFound => TlsFileProblem::NoPrivateKey,
            other => TlsFileProblem::NotPem(other),
        };
        TlsError::file(TlsFile::Key, path, problem)
    })
}

/// The trust anchors of the CA file.
fn load_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(TlsFile::Ca, path)? {
        roots
            .add(cert)
            .map_err(|err| TlsError::file(TlsFile::Ca, path, TlsFileProblem::UnusableCa(err)))?;
    }
    Ok(Arc::new(roots))
}

/// The CA file's roots as the client side of TLS (no client certificate).
fn client_config(roots: Arc<RootCertStore>) -> Result<ClientConfig, rustls::Error> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl TlsSettings {
    /// Reads the node's certificate chain, key and CA file (PEM) and builds the configurations
    /// of the ports `ports` names. With peer TLS on, the node's own certificate is checked the
    /// way its peers will check it (chains to the CA, in its validity period, valid for its peer
    /// address's IP), so a bad certificate stops the node at start rather than every handshake.
    pub fn load(
        cert_file: &Path,
        key_file: &Path,
        ca_file: &Path,
        ports: TlsPorts,
    ) -> Result<TlsSettings, TlsError> {
        let certs = load_certs(TlsFile::Cert, cert_file)?;
        let key = load_key(key_file)?;
        let roots = load_roots(ca_file)?;
        let cert_error = |problem| TlsError::file(TlsFile::Cert, cert_file, problem);
        // A key that does not belong to the certificate is the usual mistake here: name both.
        let key_error = |err: rustls::Error| {
            let problem = match err {
                rustls::Error::InconsistentKeys(_) => TlsFileProblem::KeyMismatch {
                    cert_file: cert_file.to_owned(),
                },
                other => TlsFileProblem::UnusableKey(other),
            };
            TlsError::file(TlsFile::Key, key_file, problem)
        };
        let builder = || {
            ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("the ring provider supports the default protocol versions")
        };
        let client_port = if ports.client {
            let config = builder()
                .with_no_client_auth()
                .with_single_cert(certs.clone(), key.clone_key())
                .map_err(key_error)?;
            Some(Arc::new(config))
        } else {
            None
        };
        let peer = match ports.peer {
            None => None,
            Some(peer_ip) => {
                let unusable = |err| {
                    TlsError::file(TlsFile::Ca, ca_file, TlsFileProblem::CannotVerifyPeers(err))
                };
                let client_verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), provider())
                        .build()
                        .map_err(unusable)?;
                let server_verifier =
                    WebPkiServerVerifier::builder_with_provider(Arc::clone(&roots), provider())
                        .build()
                        .map_err(unusable)?;
                let now = UnixTime::now();
                client_verifier
                    .verify_client_cert(&certs[0], &certs[1..], now)
                    .map_err(|source| {
                        cert_error(TlsFileProblem::RefusedAsClient {
                            ca_file: ca_file.to_owned(),
                            source,
                        })
                    })?;
                server_verifier
                    .verify_server_cert(
                        &certs[0],
                        &certs[1..],
                        &ServerName::IpAddress(peer_ip.into()),
                        &[],
                        now,
                    )
                    .map_err(|source| {
                        cert_error(TlsFileProblem::RefusedAsServer {
                            peer_ip,
                            ca_file: ca_file.to_owned(),
                            source,
                        })
                    })?;
                let acceptor = builder()
                    .with_client_cert_verifier(client_verifier)
                    .with_single_cert(certs.clone(), key.clone_key())
                    .map_err(key_error)?;
                let dialer = ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .expect("the ring provider supports the default protocol versions")
                    .with_root_certificates(roots)
                    .with_client_auth_cert(certs, key)
                    .map_err(key_error)?;
                Some(PeerTls {
                    acceptor: Arc::new(acceptor),
                    dialer: Arc::new(dialer),
                })
            }
        };
        Ok(TlsSettings { client_port, peer })
    }

    /// Whether the client port speaks TLS.
    pub fn client_port(&self) -> bool {
        self.client_port.is_some()
    }

    /// Whether the peer port speaks (mutual) TLS.
    pub fn peer_port(&self) -> bool {
        self.peer.is_some()
    }

    /// Bytes of the event loop's scratch buffer for TLS reads: [`TLS_READ_BYTES`] if a port
    /// speaks TLS, else none.
    pub(super) fn read_scratch_bytes(&self) -> usize {
        if self.client_port() || self.peer_port() {
            TLS_READ_BYTES
        } else {
            0
        }
    }

    /// The stream of an accepted client connection.
    pub(super) fn accept_client(&self, tcp: TcpStream) -> Result<ConnStream, rustls::Error> {
        match &self.client_port {
            None => Ok(ConnStream::Plain(tcp)),
            Some(config) => {
                let tls = ServerConnection::new(Arc::clone(config))?;
                Ok(ConnStream::tls(tcp, tls.into()))
            }
        }
    }

    /// The stream of an accepted peer connection.
    pub(super) fn accept_peer(&self, tcp: TcpStream) -> Result<ConnStream, rustls::Error> {
        match &self.peer {
            None => Ok(ConnStream::Plain(tcp)),
            Some(peer) => {
                let tls = ServerConnection::new(Arc::clone(&peer.acceptor))?;
                Ok(ConnStream::tls(tcp, tls.into()))
            }
        }
    }

    /// The stream of a connection dialed to the peer at `addr` (its IP is the server name).
    pub(super) fn dial_peer(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
    ) -> Result<ConnStream, rustls::Error> {
        match &self.peer {
            None => Ok(ConnStream::Plain(tcp)),
            Some(peer) => {
                let name = ServerName::IpAddress(addr.ip().into());
                let tls = ClientConnection::new(Arc::clone(&peer.dialer), name)?;
                Ok(ConnStream::tls(tcp, tls.into()))
            }
        }
    }
}

/// TLS for a client of the client port: the CA certificates its nodes' certificates chain to.
/// The server name checked is the IP address dialed.
#[derive(Clone, Debug)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
}

impl ClientTls {
    /// Trusts the CA certificates of a PEM file.
    pub fn from_ca_file(ca_file: &Path) -> Result<ClientTls, TlsError> {
        let roots = load_roots(ca_file)?;
        let config = client_config(roots)
            .map_err(|err| TlsError::file(TlsFile::Ca, ca_file, TlsFileProblem::NoClient(err)))?;
        Ok(ClientTls {
            config: Arc::new(config),
        })
    }

    /// Starts TLS on a connected blocking socket to `addr` (the handshake runs on first use).
    pub fn wrap(
        &self,
        tcp: std::net::TcpStream,
        addr: SocketAddr,
    ) -> io::Result<StreamOwned<ClientConnection, std::net::TcpStream>> {
        let name = ServerName::IpAddress(addr.ip().into());
        let tls = ClientConnection::new(Arc::clone(&self.config), name)
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
        Ok(StreamOwned::new(tls, tcp))
    }
}

/// A rustls connection over a non-blocking socket.
pub(super) struct TlsStream {
    tcp: TcpStream,
    tls: Connection,
    /// The other end sent close_notify: nothing more will come.
    peer_closed: bool,
}

/// An error of the TLS layer (bad record, failed handshake, refused certificate) as an I/O
/// error of kind `InvalidData`.
fn tls_error(err: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {err}"))
}

impl ConnStream {
    fn tls(tcp: TcpStream, tls: Connection) -> ConnStream {
        ConnStream::Tls(Box::new(TlsStream {
            tcp,
            tls,
            peer_closed: false,
        }))
    }
}

impl TlsStream {
    pub(super) fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    pub(super) fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    /// Records wait to be written (a handshake message, or records the socket did not take).
    pub(super) fn wants_write(&self) -> bool {
        self.tls.wants_write()
    }

    pub(super) fn is_handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    /// Sends close_notify (best effort, never blocks).
    pub(super) fn close_notify(&mut self) {
        self.tls.send_close_notify();
        let _ = self.flush_records();
    }

    /// One `recv` of at most `scratch.len()` ciphertext bytes, all of whose plaintext goes to
    /// `decoder`.
    pub(super) fn read_into(
        &mut self,
        decoder: &mut FrameDecoder,
        scratch: &mut [u8],
    ) -> io::Result<ReadOutcome> {
        if self.peer_closed {
            return Ok(ReadOutcome::Closed);
        }
        let received = loop {
            match (&self.tcp).read(scratch) {
                Ok(n) => break n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(ReadOutcome::WouldBlock)
                }
                Err(err) => return Err(err),
            }
        };
        if received == 0 {
            return Ok(ReadOutcome::Closed);
        }
        let mut input = &scratch[..received];
        let mut plaintext = 0;
        while !input.is_empty() {
            // Takes what fits in rustls' record buffer; processing below empties it again, so
            // the whole read is consumed (a record is at most ~16 KiB).
            if self.tls.read_tls(&mut input)? == 0 {
                break;
            }
            let state = match self.tls.process_new_packets() {
                Ok(state) => state,
                Err(err) => {
                    // Send the alert saying why, if the socket takes it.
                    let _ = self.flush_records();
                    return Err(tls_error(err));
                }
            };
            let len = state.plaintext_bytes_to_read();
            if len > 0 {
                let reader = &mut self.tls;
                decoder.append_with(len, |buf| reader.reader().read_exact(buf))?;
                plaintext += len;
            }
            if state.peer_has_closed() {
                self.peer_closed = true;
                break;
            }
        }
        if plaintext == 0 && self.peer_closed {
            return Ok(ReadOutcome::Closed);
        }
        Ok(ReadOutcome::Data(plaintext))
    }

    /// Writes TLS records until none is left (`Ok`) or the socket would block (`WouldBlock`).
    pub(super) fn flush_records(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.tcp) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    pub(super) fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // Earlier records first: the plaintext below is accepted only once they are out, so
        // rustls never holds more than its buffer limit.
        self.flush_records()?;
        let accepted = self.tls.writer().write_vectored(bufs)?;
        if accepted == 0 {
            // The handshake is unfinished and its plaintext buffer is full; the event loop
            // retries once a read has moved the handshake on.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.flush_records() {
            Err(err) if err.kind() != io::ErrorKind::WouldBlock => Err(err),
            _ => Ok(accepted),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use bytes::Bytes;

    use super::*;
    use crate::net::dev_pki::DevPki;
    use crate::net::frame::FrameType;
    use crate::net::out_queue::OutQueue;
    use crate::net::peer_msg::BodyPart;
    use crate::net::NetStats;

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// A CA and one node's files in a temporary directory.
    struct Files {
        dir: tempfile::TempDir,
        pki: DevPki,
        cert: PathBuf,
        key: PathBuf,
        ca: PathBuf,
    }

    fn files(ips: &[IpAddr]) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::new("test CA").unwrap();
        let ca = pki.write_ca(dir.path()).unwrap();
        let node = pki.write_node(dir.path(), "node", ips).unwrap();
        Files {
            dir,
            pki,
            cert: node.cert_file,
            key: node.key_file,
            ca,
        }
    }

    const BOTH: TlsPorts = TlsPorts {
        client: true,
        peer: Some(LOCALHOST),
    };

    fn settings(files: &Files) -> TlsSettings {
        TlsSettings::load(&files.cert, &files.key, &files.ca, BOTH).unwrap()
    }

    /// A connected pair of non-blocking sockets on loopback (dialer, acceptor).
    fn socket_pair() -> (TcpStream, TcpStream, SocketAddr) {
        let listener = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let dialer = std::net::TcpStream::connect(addr).unwrap();
        let (acceptor, _) = listener.accept().unwrap();
        for socket in [&dialer, &acceptor] {
            socket.set_nonblocking(true).unwrap();
        }
        (
            TcpStream::from_std(dialer),
            TcpStream::from_std(acceptor),
            addr,
        )
    }

    /// One side of a connection under test, driven the way the event loop drives it.
    struct Side {
        stream: ConnStream,
        out: OutQueue,
        decoder: FrameDecoder,
        frames: Vec<(FrameType, Bytes)>,
        closed: bool,
    }

    impl Side {
        fn new(stream: ConnStream) -> Side {
            Side {
                stream,
                out: OutQueue::new(),
                decoder: FrameDecoder::new(8 << 20),
                frames: Vec::new(),
                closed: false,
            }
        }

        /// One read and one flush; reads are repeated until they would block.
        fn turn(&mut self, scratch: &mut [u8]) -> io::Result<()> {
            let mut stats = NetStats::default();
            self.out.write_to(&mut self.stream, &mut stats)?;
            loop {
                match self.stream.read_into(&mut self.decoder, scratch)? {
                    ReadOutcome::Data(_) => {
                        while let Some(frame) = self.decoder.next_frame().unwrap() {
                            self.frames.push(frame);
                        }
                    }
                    ReadOutcome::WouldBlock => return Ok(()),
                    ReadOutcome::Closed => {
                        self.closed = true;
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Turns both sides until `done` holds (or either fails); panics after 20 s.
    fn pump(
        a: &mut Side,
        b: &mut Side,
        mut done: impl FnMut(&Side, &Side) -> bool,
    ) -> io::Result<()> {
        let mut scratch = vec![0; TLS_READ_BYTES];
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(a, b) {
            assert!(Instant::now() < deadline, "no progress in 20 s");
            a.turn(&mut scratch)?;
            b.turn(&mut scratch)?;
        }
        Ok(())
    }

    /// Frames of many sizes, one of them a large shared payload, arrive whole and in order in
    /// both directions, over TLS and over plain TCP.
    fn round_trip(settings: &TlsSettings) {
        let (dialer, acceptor, addr) = socket_pair();
        let mut dialer = Side::new(settings.dial_peer(dialer, addr).unwrap());
        let mut acceptor = Side::new(settings.accept_peer(acceptor).unwrap());
        let mut sent = Vec::new();
        let mut scratch = Vec::new();
        for i in 0..300usize {
            let len = (i * 7919) % (70 << 10);
            scratch.clear();
            scratch.extend((0..len).map(|at| (at + i) as u8));
            let body = if i == 150 {
                let shared = Bytes::from(vec![0xA5; 3 << 20]);
                dialer.out.push_frame(
                    FrameType::Raft,
                    &scratch,
                    &[BodyPart::Inline(0..len), BodyPart::Shared(shared.clone())],
                );
                [&scratch[..], &shared[..]].concat()
            } else {
                dialer
                    .out
                    .push_frame(FrameType::Raft, &scratch, &[BodyPart::Inline(0..len)]);
                scratch.clone()
            };
            sent.push(body);
        }
        acceptor
            .out
            .push_frame(FrameType::ClientReply, b"back", &[BodyPart::Inline(0..4)]);
        pump(&mut dialer, &mut acceptor, |dialer, acceptor| {
            acceptor.frames.len() == sent.len() && dialer.frames.len() == 1
        })
        .unwrap();
        for (at, ((ty, body), expected)) in acceptor.frames.iter().zip(&sent).enumerate() {
            assert_eq!(*ty, FrameType::Raft, "frame {at}");
            assert!(body[..] == expected[..], "frame {at} differs");
        }
        assert_eq!(&dialer.frames[0].1[..], b"back");
        assert!(dialer.out.is_empty() && !dialer.stream.wants_write());

        // An orderly close is seen as one by the other end.
        dialer.stream.close_notify();
        drop(dialer.stream.tcp_mut().shutdown(std::net::Shutdown::Write));
        pump(&mut dialer, &mut acceptor, |_, acceptor| acceptor.closed).unwrap();
    }

    #[test]
    fn frames_cross_tls_and_plain_tcp_whole_and_in_order() {
        let files = files(&[LOCALHOST]);
        round_trip(&settings(&files));
        round_trip(&TlsSettings::default());
    }

    #[test]
    fn a_plaintext_client_is_refused_by_a_tls_port() {
        let files = files(&[LOCALHOST]);
        let settings = settings(&files);
        let (dialer, acceptor, _) = socket_pair();
        let mut plain = Side::new(ConnStream::Plain(dialer));
        let mut tls = Side::new(settings.accept_client(acceptor).unwrap());
        plain.out.push_raw(b"*1\r\n$4\r\nPING\r\n");
        let err = pump(&mut plain, &mut tls, |_, _| false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().starts_with("TLS: "), "{err}");
        assert!(tls.stream.is_handshaking());
    }

    #[test]
    fn a_peer_with_a_certificate_from_another_ca_is_refused() {
        let ours = files(&[LOCALHOST]);
        let theirs = files(&[LOCALHOST]);
        // Each direction: a stranger dialing us, and us dialing a stranger.
        for (dial, accept) in [(&theirs, &ours), (&ours, &theirs)] {
            let (dialer, acceptor, addr) = socket_pair();
            let mut dialer = Side::new(settings(dial).dial_peer(dialer, addr).unwrap());
            let mut acceptor = Side::new(settings(accept).accept_peer(acceptor).unwrap());
            dialer
                .out
                .push_frame(FrameType::PeerHello, b"hi", &[BodyPart::Inline(0..2)]);
            let result = pump(&mut dialer, &mut acceptor, |_, acceptor| {
                !acceptor.frames.is_empty()
            });
            let err = result.expect_err("a certificate from another CA was accepted");
            assert!(err.to_string().contains("certificate"), "{err}");
            assert!(acceptor.frames.is_empty());
        }
    }

    #[test]
    fn a_peer_without_a_client_certificate_is_refused() {
        let files = files(&[LOCALHOST]);
        let roots = load_roots(&files.ca).unwrap();
        let no_cert = Arc::new(client_config(roots).unwrap());
        let (dialer, acceptor, _) = socket_pair();
        let name = ServerName::IpAddress(LOCALHOST.into());
        let tls = ClientConnection::new(no_cert, name).unwrap();
        let mut dialer = Side::new(ConnStream::tls(dialer, tls.into()));
        let mut acceptor = Side::new(settings(&files).accept_peer(acceptor).unwrap());
        dialer
            .out
            .push_frame(FrameType::PeerHello, b"hi", &[BodyPart::Inline(0..2)]);
        let err = pump(&mut dialer, &mut acceptor, |_, acceptor| {
            !acceptor.frames.is_empty()
        })
        .unwrap_err();
        assert!(err.to_string().contains("TLS"), "{err}");
        assert!(acceptor.frames.is_empty());
    }

    /// What `load` says about `files` (must fail).
    fn load_error(cert: &Path, key: &Path, ca: &Path, ports: TlsPorts) -> String {
        match TlsSettings::load(cert, key, ca, ports) {
            Ok(_) => panic!("loaded {cert:?} {key:?} {ca:?}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn unusable_files_are_named_with_what_is_wrong() {
        let good = files(&[LOCALHOST]);
        let dir = good.dir.path();
        let missing = dir.join("missing.pem");
        let message = load_error(&missing, &good.key, &good.ca, BOTH);
        assert!(message.starts_with("cert_file ") && message.ends_with("missing.pem: not found"));
        let err = TlsSettings::load(&missing, &good.key, &good.ca, BOTH).unwrap_err();
        assert!(
            matches!(&err, TlsError::File { file: TlsFile::Cert, path, problem }
                if *path == missing && matches!(**problem, TlsFileProblem::NotFound)),
            "{err:?}"
        );

        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let message = load_error(&good.cert, &good.key, &garbage, BOTH);
        assert!(
            message.starts_with("ca_file ") && message.contains("holds no PEM certificate"),
            "{message}"
        );
        let message = load_error(&good.cert, &garbage, &good.ca, BOTH);
        assert!(
            message.starts_with("key_file ") && message.contains("holds no PEM private key"),
            "{message}"
        );

        // Another node's key.
        let other = good.pki.write_node(dir, "other", &[LOCALHOST]).unwrap();
        let message = load_error(&good.cert, &other.key_file, &good.ca, BOTH);
        assert!(
            message.starts_with("key_file ") && message.contains("does not match the certificate"),
            "{message}"
        );
        let err = TlsSettings::load(&good.cert, &other.key_file, &good.ca, BOTH).unwrap_err();
        assert!(
            matches!(&err, TlsError::File { problem, .. }
                if matches!(&**problem, TlsFileProblem::KeyMismatch { cert_file } if *cert_file == good.cert)),
            "{err:?}"
        );

        // A certificate of another CA.
        let stranger = files(&[LOCALHOST]);
        let message = load_error(&stranger.cert, &stranger.key, &good.ca, BOTH);
        assert!(
            message.starts_with("cert_file ") && message.contains("peers would refuse it"),
            "{message}"
        );

        // Not valid for the peer address.
        let elsewhere = TlsPorts {
            client: true,
            peer: Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))),
        };
        let message = load_error(&good.cert, &good.key, &good.ca, elsewhere);
        assert!(
            message.contains("peers dialing 127.0.0.2 would refuse it"),
            "{message}"
        );

        // Expired.
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let expired = good.pki.sign(params).unwrap();
        let (cert, key) = (dir.join("expired.pem"), dir.join("expired-key.pem"));
        std::fs::write(&cert, expired.cert_pem).unwrap();
        std::fs::write(&key, expired.key_pem).unwrap();
        let message = load_error(&cert, &key, &good.ca, BOTH);
        assert!(message.to_lowercase().contains("expired"), "{message}");

        // The client port alone checks only that the files are usable.
        let client_only = TlsPorts {
            client: true,
            peer: None,
        };
        let settings = TlsSettings::load(&cert, &key, &good.ca, client_only).unwrap();
        assert!(settings.client_port() && !settings.peer_port());
    }

    #[test]
    fn a_client_trusting_the_ca_files_reaches_the_client_port() {
        let files = files(&[LOCALHOST]);
        let client = ClientTls::from_ca_file(&files.ca).unwrap();
        let settings = settings(&files);
        let listener = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let blocking = std::thread::spawn(move || {
            let tcp = std::net::TcpStream::connect(addr).unwrap();
            let mut stream = client.wrap(tcp, addr).unwrap();
            stream.write_all(b"ping").unwrap();
            let mut reply = [0u8; 4];
            stream.read_exact(&mut reply).unwrap();
            reply
        });
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_nonblocking(true).unwrap();
        let mut server = Side::new(settings.accept_client(TcpStream::from_std(tcp)).unwrap());
        let mut scratch = vec![0; TLS_READ_BYTES];
        while server.decoder.buffered() < 4 {
            server.turn(&mut scratch).unwrap();
        }
        assert_eq!(server.decoder.peek(), b"ping");
        server.out.push_raw(b"pong");
        while !server.out.is_empty() || server.stream.wants_write() {
            server.turn(&mut scratch).unwrap();
        }
        assert_eq!(&blocking.join().unwrap(), b"pong");
    }
}
