//! What the TLS configuration looks like whether or not the crate is built with its `tls`
//! feature: which ports speak TLS ([`TlsPorts`]), which PEM file is at fault ([`TlsFile`]) and
//! what is wrong ([`TlsError`], [`TlsFileProblem`]).
//!
//! The problems that come from rustls exist only with the feature (both enums are
//! `#[non_exhaustive]`, so a `match` written for either build compiles in the other).

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

/// Which of the three PEM files a [`TlsError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFile {
    /// The node's certificate chain.
    Cert,
    /// The node's private key.
    Key,
    /// The certificate authorities trusted.
    Ca,
}

impl TlsFile {
    /// The option's name in `[security.tls]` (`cert_file`, `key_file`, `ca_file`).
    pub fn option(self) -> &'static str {
        match self {
            TlsFile::Cert => "cert_file",
            TlsFile::Key => "key_file",
            TlsFile::Ca => "ca_file",
        }
    }
}

/// Which ports speak TLS, for [`super::TlsSettings::load`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsPorts {
    /// TLS on the client port.
    pub client: bool,
    /// TLS on the peer port, with the IP of this node's peer address (its certificate must be
    /// valid for it, since peers verify it as the server name); none: plain peer port.
    pub peer: Option<IpAddr>,
}

/// Why TLS cannot be set up.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file that cannot be used: which one, its path, and why.
    File {
        /// The file at fault.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// What is wrong with it (boxed: rustls' errors are large, and errors are rare).
        problem: Box<TlsFileProblem>,
    },
    /// TLS was asked for, but this build has none: the `lockstep` crate's `tls` feature is off
    /// (never a silent fallback to plain TCP).
    NotCompiledIn,
}

#[cfg(feature = "tls")]
impl TlsError {
    pub(super) fn file(file: TlsFile, path: impl Into<PathBuf>, problem: TlsFileProblem) -> Self {
        TlsError::File {
            file,
            path: path.into(),
            problem: Box::new(problem),
        }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::File {
                file,
                path,
                problem,
            } => write!(f, "{} {}: {problem}", file.option(), path.display()),
            TlsError::NotCompiledIn => f.write_str(
                "TLS is not available: this build of lockstep has no TLS support (the `lockstep` \
                 crate's `tls` feature is off)",
            ),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::File { problem, .. } => problem.source(),
            TlsError::NotCompiledIn => None,
        }
    }
}

/// What is wrong with a TLS file.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsFileProblem {
    /// The file does not exist.
    NotFound,
    /// The file cannot be read.
    Unreadable(io::Error),
    /// The file holds no PEM certificate.
    NoCertificate,
    /// The key file holds no PEM private key.
    NoPrivateKey,
    /// The key does not belong to the certificate of `cert_file`.
    KeyMismatch {
        /// The certificate's file.
        cert_file: PathBuf,
    },
    /// The file is not valid PEM.
    #[cfg(feature = "tls")]
    NotPem(rustls::pki_types::pem::Error),
    /// A certificate of the CA file cannot be a trust anchor.
    #[cfg(feature = "tls")]
    UnusableCa(rustls::Error),
    /// The CA file's certificates cannot verify peers.
    #[cfg(feature = "tls")]
    CannotVerifyPeers(rustls::server::VerifierBuilderError),
    /// The CA file cannot make a TLS client.
    #[cfg(feature = "tls")]
    NoClient(rustls::Error),
    /// The key cannot be used with the certificate.
    #[cfg(feature = "tls")]
    UnusableKey(rustls::Error),
    /// Peers would refuse the node's certificate when it dials them.
    #[cfg(feature = "tls")]
    RefusedAsClient {
        /// The CA file it was checked against.
        ca_file: PathBuf,
        /// Why it was refused.
        source: rustls::Error,
    },
    /// Peers dialing the node's peer address would refuse its certificate.
    #[cfg(feature = "tls")]
    RefusedAsServer {
        /// The IP of the node's peer address.
        peer_ip: IpAddr,
        /// The CA file it was checked against.
        ca_file: PathBuf,
        /// Why it was refused.
        source: rustls::Error,
    },
}

impl fmt::Display for TlsFileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsFileProblem::NotFound => f.write_str("not found"),
            TlsFileProblem::Unreadable(err) => write!(f, "cannot read: {err}"),
            TlsFileProblem::NoCertificate => {
                f.write_str("holds no PEM certificate (no \"-----BEGIN CERTIFICATE-----\" section)")
            }
            TlsFileProblem::NoPrivateKey => {
                f.write_str("holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")
            }
            TlsFileProblem::KeyMismatch { cert_file } => write!(
                f,
                "does not match the certificate in cert_file {}",
                cert_file.display()
            ),
            #[cfg(feature = "tls")]
            TlsFileProblem::NotPem(err) => write!(f, "not valid PEM: {err}"),
            #[cfg(feature = "tls")]
            TlsFileProblem::UnusableCa(err) => write!(f, "not a usable CA certificate: {err}"),
            #[cfg(feature = "tls")]
            TlsFileProblem::CannotVerifyPeers(err) => {
                write!(f, "cannot verify peers with it: {err}")
            }
            #[cfg(feature = "tls")]
            TlsFileProblem::NoClient(err) => write!(f, "cannot build a TLS client with it: {err}"),
            #[cfg(feature = "tls")]
            TlsFileProblem::UnusableKey(err) => write!(f, "not a usable private key: {err}"),
            #[cfg(feature = "tls")]
            TlsFileProblem::RefusedAsClient { ca_file, source } => write!(
                f,
                "peers would refuse it as a client certificate (checked against ca_file {}): \
                 {source}",
                ca_file.display()
            ),
            #[cfg(feature = "tls")]
            TlsFileProblem::RefusedAsServer {
                peer_ip,
                ca_file,
                source,
            } => write!(
                f,
                "peers dialing {peer_ip} would refuse it (checked against ca_file {}): {source}",
                ca_file.display()
            ),
        }
    }
}

impl std::error::Error for TlsFileProblem {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsFileProblem::NotFound
            | TlsFileProblem::NoCertificate
            | TlsFileProblem::NoPrivateKey
            | TlsFileProblem::KeyMismatch { .. } => None,
            TlsFileProblem::Unreadable(err) => Some(err),
            #[cfg(feature = "tls")]
            TlsFileProblem::NotPem(err) => Some(err),
            #[cfg(feature = "tls")]
            TlsFileProblem::UnusableCa(err)
            | TlsFileProblem::NoClient(err)
            | TlsFileProblem::UnusableKey(err)
            | TlsFileProblem::RefusedAsClient { source: err, .. }
            | TlsFileProblem::RefusedAsServer { source: err, .. } => Some(err),
            #[cfg(feature = "tls")]
            TlsFileProblem::CannotVerifyPeers(err) => Some(err),
        }
    }
}
