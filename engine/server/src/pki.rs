//! A throwaway certificate authority for trying TLS out and for tests: a fresh CA key and
//! certificate, and node certificates it signs whose subject alternative names are the IP
//! addresses (and `localhost`) the nodes are reached at. Nothing here is for production: keys
//! are generated in memory and written unencrypted (mode 0600) where asked.
//!
//! The files it writes are what `[security.tls]` reads: `ca.pem` (the CA certificate, the
//! `ca_file` of nodes and clients), `<name>.pem` and `<name>-key.pem` (a node's `cert_file`
//! and `key_file`). The CA's key is not written: the set is complete as generated.

use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair, SanType};

/// A CA that signs node certificates.
pub struct DevPki {
    cert: Certificate,
    key: KeyPair,
}

/// A certificate and its private key, PEM encoded.
pub struct IssuedCert {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// The files of one node written by [`DevPki::write_node`].
pub struct NodeFiles {
    /// The certificate (`cert_file`).
    pub cert_file: PathBuf,
    /// The private key (`key_file`).
    pub key_file: PathBuf,
}

fn rcgen_error(err: rcgen::Error) -> io::Error {
    io::Error::other(format!("certificate generation: {err}"))
}

impl DevPki {
    /// A new CA named `name` (its common name).
    pub fn new(name: &str) -> io::Result<DevPki> {
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).map_err(rcgen_error)?;
        Ok(DevPki { cert, key })
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for `ips` (and `localhost`), signed by this CA, with rcgen's default
    /// validity period (1975 to 4096).
    pub fn issue(&self, common_name: &str, ips: &[IpAddr]) -> io::Result<IssuedCert> {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned()]).map_err(rcgen_error)?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        self.sign(params)
    }

    /// Signs `params` with a fresh key (tests use it for certificates with odd validity).
    pub fn sign(&self, params: CertificateParams) -> io::Result<IssuedCert> {
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(rcgen_error)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes `ca.pem` into `dir` and returns its path.
    pub fn write_ca(&self, dir: &Path) -> io::Result<PathBuf> {
        let path = dir.join("ca.pem");
        write_file(&path, &self.ca_pem(), 0o644)?;
        Ok(path)
    }

    /// Issues a certificate for `ips` and writes `<name>.pem` and `<name>-key.pem` into `dir`.
    pub fn write_node(&self, dir: &Path, name: &str, ips: &[IpAddr]) -> io::Result<NodeFiles> {
        let issued = self.issue(name, ips)?;
        let files = NodeFiles {
            cert_file: dir.join(format!("{name}.pem")),
            key_file: dir.join(format!("{name}-key.pem")),
        };
        write_file(&files.cert_file, &issued.cert_pem, 0o644)?;
        write_file(&files.key_file, &issued.key_pem, 0o600)?;
        Ok(files)
    }
}

/// Writes `text` to a new or truncated file created with `mode`, naming the file on error.
fn write_file(path: &Path, text: &str, mode: u32) -> io::Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(|err| io::Error::new(err.kind(), format!("{}: {err}", path.display())))
}
