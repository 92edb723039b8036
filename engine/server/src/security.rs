//! The `[security]` and `[limits]` sections of a server's configuration: who may connect as a
//! peer (a shared secret proven by challenge-response), who may talk as a client (passwords),
//! whether the ports speak TLS, and the limits that protect a node from hostile or broken
//! clients. `docs/SECURITY.md` describes the threat model; `docs/CONFIG.md` every option.
//!
//! Secrets and passwords are read from files named here, never given on the command line.

use std::fmt;
use std::io::{self, Read};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::config::ServerError;
use crate::net::{
    read_password_file, ClientLimits, ClientUsers, PeerSecret, SecretTooShort, TlsError, TlsFile,
    TlsPorts, TlsSettings,
};

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

impl Security {
    /// The peer secret `peer_secret_file` names, read and checked: the file must exist, be
    /// readable, and hold at least [`crate::net::PEER_SECRET_BYTES_MIN`] bytes once one trailing
    /// newline (`\n` or `\r\n`) is cut. A file that group or others may read is accepted with a
    /// warning. Errors name the option and the file, never the secret's bytes.
    pub fn peer_secret(&self) -> Result<Option<PeerSecret>, ServerError> {
        let Some(path) = &self.peer_secret_file else {
            return Ok(None);
        };
        let fault = |err: SecretFileError| {
            ServerError::option_caused(
                "security.peer_secret_file",
                format!("{}: {err}", path.display()),
                err,
            )
        };
        let bytes = read_secret_file(path).map_err(fault)?;
        PeerSecret::new(bytes)
            .map(Some)
            .map_err(|err| fault(SecretFileError::Short(err)))
    }
}

/// What is wrong with the peer secret's file.
#[derive(Debug)]
enum SecretFileError {
    Open(io::Error),
    Stat(io::Error),
    NotAFile,
    Read(io::Error),
    Short(SecretTooShort),
}

impl fmt::Display for SecretFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretFileError::Open(err) => write!(f, "cannot open: {err}"),
            SecretFileError::Stat(err) => write!(f, "cannot stat: {err}"),
            SecretFileError::NotAFile => f.write_str("is not a regular file"),
            SecretFileError::Read(err) => write!(f, "cannot read: {err}"),
            SecretFileError::Short(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for SecretFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SecretFileError::Open(err)
            | SecretFileError::Stat(err)
            | SecretFileError::Read(err) => Some(err),
            SecretFileError::NotAFile | SecretFileError::Short(_) => None,
        }
    }
}

/// The bytes of a secret file less one trailing newline; warns when the file's mode lets group
/// or others read it.
fn read_secret_file(path: &Path) -> Result<Vec<u8>, SecretFileError> {
    let mut file = std::fs::File::open(path).map_err(SecretFileError::Open)?;
    let metadata = file.metadata().map_err(SecretFileError::Stat)?;
    if !metadata.is_file() {
        return Err(SecretFileError::NotAFile);
    }
    let mode = metadata.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            file = %path.display(),
            "the peer secret file has mode {:o}: group or others may read it (chmod 600 it)",
            mode & 0o777
        );
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(SecretFileError::Read)?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    Ok(bytes)
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
            let (option, why) = match &err {
                TlsError::File {
                    file,
                    path,
                    problem,
                } => (
                    format!("security.tls.{}", file.option()),
                    format!("{}: {problem}", path.display()),
                ),
                other => ("security.tls".to_string(), other.to_string()),
            };
            ServerError::option_caused(&option, why, err)
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

impl Security {
    /// The client users, their passwords read from `client_password_file` and
    /// `readonly_password_file`. The error names the option and the file, never a password.
    pub fn client_users(&self) -> Result<ClientUsers, ServerError> {
        let read = |option: &str, path: &PathBuf| {
            read_password_file(path)
                .map_err(|err| ServerError::option_caused(option, err.to_string(), err))
        };
        let readonly = self
            .readonly_password_file
            .as_ref()
            .map(|path| read("security.readonly_password_file", path))
            .transpose()?;
        let Some(path) = &self.client_password_file else {
            if readonly.is_some() {
                return Err(ServerError::option(
                    "security.readonly_password_file",
                    "needs security.client_password_file too (without a password for the \
                     default user every client may write)"
                        .to_string(),
                ));
            }
            return Ok(ClientUsers::open());
        };
        let default = read("security.client_password_file", path)?;
        if readonly.as_ref() == Some(&default) {
            return Err(ServerError::option(
                "security.readonly_password_file",
                "holds the same password as security.client_password_file (the read-only user \
                 needs its own)"
                    .to_string(),
            ));
        }
        Ok(ClientUsers::new(&default, readonly.as_deref()))
    }
}

impl Limits {
    /// Checks the limits; the error names the option at fault.
    pub fn validate(&self) -> Result<(), ServerError> {
        if self.max_clients == 0 {
            return Err(ServerError::option(
                "limits.max_clients",
                "must be at least 1".to_string(),
            ));
        }
        if self.max_request_bytes < REQUEST_BYTES_MIN {
            return Err(ServerError::option(
                "limits.max_request_bytes",
                format!(
                    "{} is below the smallest useful request limit, {REQUEST_BYTES_MIN} bytes",
                    self.max_request_bytes
                ),
            ));
        }
        if self.max_pipelined_bytes < self.max_request_bytes {
            return Err(ServerError::option(
                "limits.max_pipelined_bytes",
                format!(
                    "{} is below max_request_bytes {} (a largest request could never be read)",
                    self.max_pipelined_bytes, self.max_request_bytes
                ),
            ));
        }
        Ok(())
    }

    /// The per-connection limits the network stage enforces (0 ms: no timeout).
    pub fn client_limits(&self) -> ClientLimits {
        let timeout = |ms: u64| (ms > 0).then(|| Duration::from_millis(ms));
        ClientLimits {
            max_pipelined_bytes: self.max_pipelined_bytes,
            idle_timeout: timeout(self.idle_timeout_ms),
            slow_client_timeout: timeout(self.slow_client_timeout_ms),
        }
    }
}

/// The smallest `max_request_bytes` accepted: room for a small command and its arguments.
const REQUEST_BYTES_MIN: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    use std::fs;

    use crate::net::PEER_SECRET_BYTES_MIN;

    fn security(path: &Path) -> Security {
        Security {
            peer_secret_file: Some(path.to_path_buf()),
            ..Security::default()
        }
    }

    #[test]
    fn no_file_means_no_secret() {
        assert!(Security::default().peer_secret().unwrap().is_none());
    }

    #[test]
    fn a_secret_file_is_read_less_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let secret = "k".repeat(PEER_SECRET_BYTES_MIN);
        fs::write(&path, format!("{secret}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let loaded = security(&path).peer_secret().unwrap().unwrap();
        assert_eq!(loaded.len(), PEER_SECRET_BYTES_MIN);
        fs::write(&path, format!("{secret}\r\n")).unwrap();
        assert_eq!(security(&path).peer_secret().unwrap().unwrap().len(), 32);
        // Group-readable: accepted (with a warning).
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(security(&path).peer_secret().unwrap().is_some());
    }

    #[test]
    fn bad_secret_files_name_the_option_and_the_file_not_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        fs::write(&short, "tooshort-tooshort-tooshort-31by\n").unwrap();
        let missing = dir.path().join("missing");
        for (path, why) in [
            (&short, "31 bytes"),
            (&missing, "cannot open"),
            (&dir.path().to_path_buf(), "not a regular file"),
        ] {
            let err = security(path).peer_secret().unwrap_err().to_string();
            assert!(err.contains("security.peer_secret_file"), "{err}");
            assert!(err.contains("--peer-secret-file"), "{err}");
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains(why), "{err}");
            assert!(!err.contains("tooshort"), "{err}");
        }
    }

    #[test]
    fn client_passwords_come_from_files_named_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let mut security = Security::default();
        assert_eq!(security.client_users().unwrap(), ClientUsers::open());
        security.readonly_password_file = Some(write("ro", "peek\n"));
        let alone = security.client_users().unwrap_err().to_string();
        assert!(
            alone.contains(
                "`security.readonly_password_file` (flag --readonly-password-file): needs"
            ),
            "{alone}"
        );
        security.client_password_file = Some(write("pw", "s3cret\n"));
        let users = security.client_users().unwrap();
        assert_eq!(
            users.check(b"default", b"s3cret"),
            Some(crate::net::ClientRole::ReadWrite)
        );
        assert_eq!(
            users.check(b"reader", b"peek"),
            Some(crate::net::ClientRole::ReadOnly)
        );
        security.client_password_file = Some(write("empty", ""));
        let empty = security.client_users().unwrap_err().to_string();
        assert!(
            empty.contains("`security.client_password_file` (flag --client-password-file)")
                && empty.contains("/empty: the password file is empty"),
            "{empty}"
        );
        security.client_password_file = Some(write("same", "peek"));
        let same = security.client_users().unwrap_err().to_string();
        assert!(
            same.contains("same password") && !same.contains("peek"),
            "{same}"
        );
    }

    #[test]
    fn limits_are_checked_and_mapped() {
        Limits::default().validate().unwrap();
        let zero = Limits {
            max_clients: 0,
            ..Limits::default()
        };
        assert!(zero
            .validate()
            .unwrap_err()
            .to_string()
            .contains("(flag --max-clients)"));
        let tiny = Limits {
            max_request_bytes: 10,
            ..Limits::default()
        };
        assert!(tiny
            .validate()
            .unwrap_err()
            .to_string()
            .contains("limits.max_request_bytes"));
        let below = Limits {
            max_pipelined_bytes: 1 << 20,
            ..Limits::default()
        };
        assert!(below
            .validate()
            .unwrap_err()
            .to_string()
            .contains("(flag --max-pipelined-bytes)"));
        let mapped = Limits {
            idle_timeout_ms: 1500,
            slow_client_timeout_ms: 0,
            ..Limits::default()
        }
        .client_limits();
        assert_eq!(mapped.idle_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(mapped.slow_client_timeout, None);
        assert_eq!(mapped.max_pipelined_bytes, 64 << 20);
    }
}

#[cfg(test)]
mod tls_tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::pki::DevPki;

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
        let err = unset.validate().unwrap_err().to_string();
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
            .to_string()
            .contains("TLS would be on no port"));

        tls.validate().unwrap();
        let err = tls.load(localhost).unwrap_err();
        let cause = std::error::Error::source(&err).and_then(|cause| cause.downcast_ref());
        assert!(
            matches!(
                cause,
                Some(TlsError::File {
                    file: TlsFile::Cert,
                    ..
                })
            ),
            "{err:?}"
        );
        let err = err.to_string();
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
