//! TLS in a build without the crate's `tls` feature (mounted as module `tls`): the same public
//! types as `tls.rs`, but only plain TCP exists. [`TlsSettings`] is always the plain setting,
//! [`ClientTls`] cannot be made, and asking for TLS fails with [`TlsError::NotCompiledIn`] (never
//! a silent fallback to plain TCP).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;

use mio::net::TcpStream;

use super::conn_stream::ConnStream;
pub use super::tls_types::{TlsError, TlsFile, TlsFileProblem, TlsPorts};

/// The TLS configuration of a transport: plain TCP on both ports (the only one this build has).
#[derive(Clone, Debug, Default)]
pub struct TlsSettings {
    _plain: (),
}

impl TlsSettings {
    /// Fails: this build has no TLS.
    pub fn load(
        _cert_file: &Path,
        _key_file: &Path,
        _ca_file: &Path,
        _ports: TlsPorts,
    ) -> Result<TlsSettings, TlsError> {
        Err(TlsError::NotCompiledIn)
    }

    /// Whether the client port speaks TLS: never in this build.
    pub fn client_port(&self) -> bool {
        false
    }

    /// Whether the peer port speaks TLS: never in this build.
    pub fn peer_port(&self) -> bool {
        false
    }

    /// Bytes of the event loop's scratch buffer for TLS reads: none.
    pub(super) fn read_scratch_bytes(&self) -> usize {
        0
    }

    /// The stream of an accepted client connection.
    pub(super) fn accept_client(&self, tcp: TcpStream) -> Result<ConnStream, Infallible> {
        Ok(ConnStream::Plain(tcp))
    }

    /// The stream of an accepted peer connection.
    pub(super) fn accept_peer(&self, tcp: TcpStream) -> Result<ConnStream, Infallible> {
        Ok(ConnStream::Plain(tcp))
    }

    /// The stream of a connection dialed to a peer.
    pub(super) fn dial_peer(
        &self,
        tcp: TcpStream,
        _addr: SocketAddr,
    ) -> Result<ConnStream, Infallible> {
        Ok(ConnStream::Plain(tcp))
    }
}

/// TLS for a client of the client port; in this build there is none (no value of this type
/// exists).
#[derive(Clone, Debug)]
pub enum ClientTls {}

impl ClientTls {
    /// Fails: this build has no TLS.
    pub fn from_ca_file(_ca_file: &Path) -> Result<ClientTls, TlsError> {
        Err(TlsError::NotCompiledIn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asking_for_tls_without_the_feature_is_an_error() {
        let path = Path::new("ca.pem");
        let ports = TlsPorts {
            client: true,
            peer: None,
        };
        let err = TlsSettings::load(path, path, path, ports).unwrap_err();
        assert!(matches!(err, TlsError::NotCompiledIn), "{err:?}");
        assert!(err.to_string().contains("`tls` feature is off"), "{err}");
        let err = ClientTls::from_ca_file(path).unwrap_err();
        assert!(matches!(err, TlsError::NotCompiledIn), "{err:?}");
        let plain = TlsSettings::default();
        assert!(!plain.client_port() && !plain.peer_port());
    }
}
