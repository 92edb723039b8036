//! Client users and their passwords: who may talk to the client port, and whether they may write.
//!
//! Two users exist: [`DEFAULT_USER`] (reads and writes) and [`READONLY_USER`] (reads only). With
//! no password configured for the default user, every client is the default user without
//! authenticating (a trusted network). Passwords are kept only as SHA-256 digests and a candidate
//! is compared by digest with a constant-time equality, so neither the comparison's time nor its
//! work depends on where the candidate first differs or on either password's length. Passwords are
//! never logged, and the `Debug` output of [`ClientUsers`] shows only which users have one.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The user that reads and writes (Redis's name for the user of a bare `AUTH password`).
pub const DEFAULT_USER: &str = "default";
/// The user that may only read.
pub const READONLY_USER: &str = "reader";

/// What an authenticated client may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientRole {
    /// Reads and writes.
    ReadWrite,
    /// Reads only: proposals are refused with `NOPERM`.
    ReadOnly,
}

impl ClientRole {
    /// The user name of the role.
    pub fn user(self) -> &'static str {
        match self {
            ClientRole::ReadWrite => DEFAULT_USER,
            ClientRole::ReadOnly => READONLY_USER,
        }
    }
}

/// The configured client passwords (as digests).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientUsers {
    default: Option<[u8; 32]>,
    readonly: Option<[u8; 32]>,
}

fn digest(password: &[u8]) -> [u8; 32] {
    Sha256::digest(password).into()
}

impl ClientUsers {
    /// No passwords: every client is the default user without authenticating.
    pub fn open() -> ClientUsers {
        ClientUsers::default()
    }

    /// The default user's password, and optionally the read-only user's. Panics on an empty
    /// password (configuration loading refuses those with a message naming the file).
    pub fn new(default_password: &[u8], readonly_password: Option<&[u8]>) -> ClientUsers {
        assert!(
            !default_password.is_empty() && readonly_password.is_none_or(|p| !p.is_empty()),
            "empty client password"
        );
        ClientUsers {
            default: Some(digest(default_password)),
            readonly: readonly_password.map(digest),
        }
    }

    /// Whether clients must authenticate before anything but the connection's greeting.
    pub fn required(&self) -> bool {
        self.default.is_some()
    }

    /// The role of a client that is not (or not yet) authenticated: read-write when no
    /// password is configured, none otherwise.
    pub fn anonymous(&self) -> Option<ClientRole> {
        (!self.required()).then_some(ClientRole::ReadWrite)
    }

    /// The role `user` gets with `password`, or `None` (unknown user, wrong password, or no
    /// password configured for that user). The password is compared in constant time.
    pub fn check(&self, user: &[u8], password: &[u8]) -> Option<ClientRole> {
        let candidate = digest(password);
        let (stored, role) = if user == DEFAULT_USER.as_bytes() {
            (self.default, ClientRole::ReadWrite)
        } else if user == READONLY_USER.as_bytes() {
            (self.readonly, ClientRole::ReadOnly)
        } else {
            (None, ClientRole::ReadOnly)
        };
        // Compare against a dummy digest when the user has none, so the work is the same.
        let matches = candidate.ct_eq(&stored.unwrap_or([0; 32]));
        (bool::from(matches) && stored.is_some()).then_some(role)
    }
}

impl fmt::Debug for ClientUsers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientUsers")
            .field("default_password", &self.default.is_some())
            .field("readonly_password", &self.readonly.is_some())
            .finish()
    }
}

/// Reads a password from the file at `path`: its bytes less one trailing newline (`\n` or
/// `\r\n`). The error (which never contains the password) says what is wrong with the file:
/// unreadable, empty, or holding a line break inside the password.
pub fn read_password_file(path: &Path) -> Result<Vec<u8>, PasswordFileError> {
    let mut bytes = std::fs::read(path).map_err(|source| PasswordFileError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(PasswordFileError::Empty {
            path: path.to_owned(),
        });
    }
    if bytes.iter().any(|&byte| byte == b'\n' || byte == b'\r') {
        return Err(PasswordFileError::LineBreak {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// A password file that cannot be used; never holds (or shows) the password.
#[derive(Debug)]
pub enum PasswordFileError {
    /// The file cannot be read.
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file holds no password.
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The password holds a line break (the file must hold one line).
    LineBreak {
        /// The file.
        path: PathBuf,
    },
}

impl fmt::Display for PasswordFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordFileError::Unreadable { path, source } => {
                write!(f, "{}: cannot read the password: {source}", path.display())
            }
            PasswordFileError::Empty { path } => {
                write!(f, "{}: the password file is empty", path.display())
            }
            PasswordFileError::LineBreak { path } => write!(
                f,
                "{}: the password holds a line break (the file must hold one line)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for PasswordFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PasswordFileError::Unreadable { source, .. } => Some(source),
            PasswordFileError::Empty { .. } | PasswordFileError::LineBreak { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_users_and_passwords() {
        let users = ClientUsers::new(b"s3cret", Some(b"peek"));
        assert!(users.required());
        assert_eq!(users.anonymous(), None);
        assert_eq!(
            users.check(b"default", b"s3cret"),
            Some(ClientRole::ReadWrite)
        );
        assert_eq!(users.check(b"reader", b"peek"), Some(ClientRole::ReadOnly));
        assert_eq!(users.check(b"default", b"peek"), None);
        assert_eq!(users.check(b"reader", b"s3cret"), None);
        assert_eq!(users.check(b"default", b"s3cret\n"), None);
        assert_eq!(users.check(b"default", b""), None);
        assert_eq!(users.check(b"admin", b"s3cret"), None);
        let format = format!("{users:?}");
        assert!(
            !format.contains("s3cret") && format.contains("true"),
            "{format}"
        );
    }

    #[test]
    fn password_files_lose_their_newline_and_must_hold_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        assert_eq!(read_password_file(&file("a", b"pw\n")).unwrap(), b"pw");
        assert_eq!(read_password_file(&file("b", b"pw\r\n")).unwrap(), b"pw");
        assert_eq!(read_password_file(&file("c", b"p w")).unwrap(), b"p w");
        let empty = read_password_file(&file("d", b"\n")).unwrap_err();
        assert!(
            matches!(empty, PasswordFileError::Empty { .. }),
            "{empty:?}"
        );
        let empty = empty.to_string();
        assert!(empty.contains("/d: the password file is empty"), "{empty}");
        let two = read_password_file(&file("e", b"secret\nline\n")).unwrap_err();
        assert!(
            matches!(two, PasswordFileError::LineBreak { .. }),
            "{two:?}"
        );
        let two = two.to_string();
        assert!(
            two.contains("line break") && !two.contains("secret"),
            "{two}"
        );
        let missing = read_password_file(&dir.path().join("none")).unwrap_err();
        assert!(
            matches!(&missing, PasswordFileError::Unreadable { source, .. }
                if source.kind() == io::ErrorKind::NotFound),
            "{missing:?}"
        );
        let missing = missing.to_string();
        assert!(missing.contains("/none: cannot read"), "{missing}");
    }

    #[test]
    fn open_users_need_no_password_and_have_no_reader() {
        let users = ClientUsers::open();
        assert!(!users.required());
        assert_eq!(users.anonymous(), Some(ClientRole::ReadWrite));
        assert_eq!(users.check(b"default", b""), None);
        assert_eq!(users.check(b"reader", b""), None);
        let no_reader = ClientUsers::new(b"pw", None);
        assert_eq!(no_reader.check(b"reader", &[0; 32]), None);
    }
}
