//! The `[security]` and `[limits]` sections of a server's configuration: who may connect as a
//! peer (a shared secret proven by challenge-response), who may talk as a client (passwords),
//! whether the ports speak TLS, and the limits that protect a node from hostile or broken
//! clients. `docs/SECURITY.md` describes the threat model; `docs/CONFIG.md` every option.
//!
//! Secrets and passwords are read from files named here, never given on the command line.

use std::net::IpAddr;
use std::path::PathBuf;

use super::config::ServerError;
use crate::net::{TlsFile, TlsPorts, TlsSettings};

/// The `[security]` section. Everything is off by default (a trusted network).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Security {
    /// File holding the secret every member of the cluster shares; with it, a peer connection
    /// is used only after both sides proved they know the secret. None: peers are not
    /// authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_secret_file: Option<PathBuf>,
    /// File holding the password of the `default` client user (read and write). None: clients
    /// need no password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_password_file: Option<PathBuf>,
    /// File holding the password of the read-only client user. None: no read-only user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly_password_file: Option<PathBuf>,
    /// TLS on the client and peer ports; none: plain TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
}

/// The `[security.tls]` section: certificates and keys in PEM files.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// This node's certificate chain (PEM).
    pub cert_file: PathBuf,
    /// This node's private key (PEM).
    pub key_file: PathBuf,
    /// The CA certificate(s) (PEM) peers' certificates must chain to.
    pub ca_file: PathBuf,
    /// TLS on the client port.
    #[serde(default = "yes")]
    pub client: bool,
    /// TLS on the peer port.
    #[serde(default = "yes")]
    pub peer: bool,
}

fn yes() -> bool {
    true
}

impl TlsFiles {
    /// Checks the section's shape (every file named, some port on); the files are read by
    /// [`TlsFiles::load`].
    pub fn validate(&self) -> Result<(), ServerError> {
        for (file, path) in [
            (TlsFile::Cert, &self.cert_file),
            (TlsFile::Key, &self.key_file),
            (TlsFile::Ca, &self.ca_file),
        ] {
            if path.as_os_str().is_empty() {
                return Err(ServerError::option(
                    &format!("security.tls.{}", file.option()),
                    "is not set (TLS needs a certificate, its key and the CA file)".to_string(),
                ));
            }
        }
        if !self.client && !self.peer {
            return Err(ServerError::option(
                "security.tls.client",
                "and `security.tls.peer` are both false: TLS would be on no port (remove the \
                 section for plain TCP)"
                    .to_string(),
            ));
        }
        Ok(())
    }

    /// Reads the PEM files and builds the transport's TLS settings; `peer_ip` is the IP of this
    /// node's peer address (peers check the certificate against it). Errors name the option,
    /// the file and what is wrong with it.
    pub fn load(&self, peer_ip: IpAddr) -> Result<TlsSettings, ServerError> {
        let ports = TlsPorts {
            client: self.client,
            peer: self.peer.then_some(peer_ip),
        };
        TlsSettings::load(&self.cert_file, &self.key_file, &self.ca_file, ports).map_err(|err| {
            ServerError::option(
                &format!("security.tls.{}", err.file.option()),
                format!("{}: {}", err.path.display(), err.why),
            )
        })
    }
}

/// The `[limits]` section: bounds on what one client may cost a node.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most concurrent client connections.
    pub max_clients: usize,
    /// Largest single request (one RESP command or native frame), bytes.
    pub max_request_bytes: usize,
    /// Most request bytes one connection may have read but not yet answered.
    pub max_pipelined_bytes: usize,
    /// A client connection idle this long is closed, ms (0: never).
    pub idle_timeout_ms: u64,
    /// A client that leaves replies unread this long is disconnected, ms (0: never).
    pub slow_client_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_clients: 4096,
            max_request_bytes: 64 << 20,
            max_pipelined_bytes: 64 << 20,
            idle_timeout_ms: 0,
            slow_client_timeout_ms: 60_000,
        }
    }
}

#[cfg(test)]
mod tls_tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::net::dev_pki::DevPki;

    fn files(dir: &std::path::Path) -> TlsFiles {
        TlsFiles {
            cert_file: dir.join("node.pem"),
            key_file: dir.join("node-key.pem"),
            ca_file: dir.join("ca.pem"),
            client: true,
            peer: true,
        }
    }

    #[test]
    fn tls_errors_name_the_option_and_its_flag() {
        let dir = tempfile::tempdir().unwrap();
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let tls = files(dir.path());
        let unset = TlsFiles {
            key_file: PathBuf::new(),
            ..tls.clone()
        };
        let err = unset.validate().unwrap_err().0;
        assert!(
            err.starts_with("option `security.tls.key_file` (flag --tls-key-file): is not set"),
            "{err}"
        );
        let nowhere = TlsFiles {
            client: false,
            peer: false,
            ..tls.clone()
        };
        assert!(nowhere
            .validate()
            .unwrap_err()
            .0
            .contains("TLS would be on no port"));

        tls.validate().unwrap();
        let err = tls.load(localhost).unwrap_err().0;
        assert!(
            err.starts_with("option `security.tls.cert_file` (flag --tls-cert-file): ")
                && err.ends_with("node.pem: not found"),
            "{err}"
        );
        let pki = DevPki::new("test CA").unwrap();
        pki.write_ca(dir.path()).unwrap();
        pki.write_node(dir.path(), "node", &[localhost]).unwrap();
        let settings = tls.load(localhost).unwrap();
        assert!(settings.client_port() && settings.peer_port());
        let client_only = TlsFiles { peer: false, ..tls };
        let settings = client_only.load(localhost).unwrap();
        assert!(settings.client_port() && !settings.peer_port());
    }
}
