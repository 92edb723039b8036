//! [`ServerError`]: why the server could not start, or stopped with an error. Every variant
//! names what is at fault (the option, the file, the node); the messages are the ones operators
//! and tests know.

use std::error::Error;
use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::node::NodeError;

/// An underlying error kept as the cause of a [`ServerError`].
pub type Cause = Box<dyn Error + Send + Sync + 'static>;

/// Why the server could not start or stopped with an error. The message names the file and the
/// option at fault when there is one.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerError {
    /// An option whose value cannot be used.
    Option {
        /// Its name as the file spells it (e.g. `tuning.sync`, `security.tls.cert_file`); the
        /// message also names the matching `lockstep serve` flag.
        name: String,
        /// What is wrong with it (naming the value).
        why: String,
        /// The error behind it, if any (also shown in `why`).
        cause: Option<Cause>,
    },
    /// The configuration file cannot be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The configuration is not valid TOML, or holds an unknown or mistyped option.
    Toml(toml::de::Error),
    /// Required options are missing (their names as the file spells them).
    Missing(Vec<&'static str>),
    /// An error of the configuration that came from `origin` (a file, or a file with flags).
    In {
        /// Where the configuration came from.
        origin: String,
        /// The error.
        error: Box<ServerError>,
    },
    /// A signal handler cannot be installed.
    Signal {
        /// The signal.
        signal: i32,
        /// Why.
        source: io::Error,
    },
    /// The ready line cannot be written to stdout.
    ReadyLine(io::Error),
    /// The checks before the node starts failed (the error names the option).
    Preflight {
        /// The node.
        id: u64,
        /// What failed.
        error: Box<ServerError>,
    },
    /// The node failed to start.
    Start {
        /// The node.
        id: u64,
        /// Why.
        source: NodeError,
        /// What the operator should do, when the cause is a known one.
        hint: Option<&'static str>,
    },
    /// The node failed while serving (it stopped itself).
    Failed {
        /// The node.
        id: u64,
        /// The failure it reported.
        failure: NodeError,
        /// What the operator should do, when the cause is a known one.
        hint: Option<&'static str>,
    },
    /// The node failed to shut down cleanly.
    Shutdown {
        /// The node.
        id: u64,
        /// Why.
        source: NodeError,
        /// What the operator should do, when the cause is a known one.
        hint: Option<&'static str>,
    },
}

impl ServerError {
    /// An error about option `name` (as the file spells it, e.g. `tuning.sync`).
    pub fn option(name: &str, why: String) -> ServerError {
        ServerError::Option {
            name: name.to_owned(),
            why,
            cause: None,
        }
    }

    /// An error about option `name` caused by `cause` (`why` shows it).
    pub fn option_caused(
        name: &str,
        why: String,
        cause: impl Error + Send + Sync + 'static,
    ) -> ServerError {
        ServerError::Option {
            name: name.to_owned(),
            why,
            cause: Some(Box::new(cause)),
        }
    }

    /// The same error, as one of the configuration from `origin`.
    pub fn in_source(self, origin: &str) -> ServerError {
        ServerError::In {
            origin: origin.to_owned(),
            error: Box::new(self),
        }
    }
}

/// The `lockstep serve` flag of option `name` (`None` for the `[tuning]` table as a whole).
fn flag_of(name: &str) -> Option<String> {
    let key = name.rsplit('.').next().unwrap_or(name);
    Some(match key {
        "members" => "member".to_string(),
        "tuning" => return None,
        tls if name.starts_with("security.tls.") => format!("tls-{}", tls.replace('_', "-")),
        other => other.replace('_', "-"),
    })
}

/// "`{message}`", then ". What to do: `{hint}`" if there is a hint.
fn with_hint(
    f: &mut fmt::Formatter<'_>,
    message: fmt::Arguments<'_>,
    hint: Option<&str>,
) -> fmt::Result {
    f.write_fmt(message)?;
    match hint {
        Some(hint) => write!(f, ". What to do: {hint}"),
        None => Ok(()),
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Option { name, why, .. } => match flag_of(name) {
                Some(flag) => write!(f, "option `{name}` (flag --{flag}): {why}"),
                None => write!(f, "option `{name}`: {why}"),
            },
            ServerError::Read { path, source } => {
                write!(f, "{}: cannot read: {source}", path.display())
            }
            ServerError::Toml(err) => f.write_str(err.to_string().trim_end()),
            ServerError::Missing(names) => {
                let s = if names.len() == 1 { "" } else { "s" };
                write!(f, "missing field{s} ")?;
                for (at, name) in names.iter().enumerate() {
                    let separator = if at == 0 { "" } else { ", " };
                    let flag = flag_of(name).expect("a required option has a flag");
                    write!(f, "{separator}`{name}` (flag --{flag})")?;
                }
                Ok(())
            }
            ServerError::In { origin, error } => write!(f, "{origin}: {error}"),
            ServerError::Signal { signal, source } => {
                write!(
                    f,
                    "cannot install the handler for signal {signal}: {source}"
                )
            }
            ServerError::ReadyLine(err) => {
                write!(f, "cannot write the ready line to stdout: {err}")
            }
            ServerError::Preflight { id, error } => {
                write!(f, "node {id} failed to start: {error}")
            }
            ServerError::Start { id, source, hint } => with_hint(
                f,
                format_args!("node {id} failed to start: {source}"),
                *hint,
            ),
            ServerError::Failed { id, failure, hint } => {
                with_hint(f, format_args!("node {id} failed: {failure}"), *hint)
            }
            ServerError::Shutdown { id, source, hint } => with_hint(
                f,
                format_args!("node {id} failed to shut down cleanly: {source}"),
                *hint,
            ),
        }
    }
}

impl Error for ServerError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            ServerError::Option { cause, .. } => cause.as_deref().map(|cause| cause as _),
            ServerError::Read { source, .. } | ServerError::Signal { source, .. } => Some(source),
            ServerError::ReadyLine(source) => Some(source),
            ServerError::Toml(source) => Some(source),
            ServerError::In { error, .. } | ServerError::Preflight { error, .. } => Some(error),
            ServerError::Start { source, .. } | ServerError::Shutdown { source, .. } => {
                Some(source)
            }
            ServerError::Missing(_) | ServerError::Failed { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_name_their_flag_and_causes_are_kept() {
        let err = ServerError::option("tuning.sync", "\"x\" is not a sync mode".to_string());
        assert_eq!(
            err.to_string(),
            "option `tuning.sync` (flag --sync): \"x\" is not a sync mode"
        );
        let err = ServerError::option("tuning", "too small".to_string());
        assert_eq!(err.to_string(), "option `tuning`: too small");
        let io = io::Error::new(io::ErrorKind::NotFound, "gone");
        let err = ServerError::option_caused("security.tls.ca_file", "gone".to_string(), io)
            .in_source("node.toml");
        assert_eq!(
            err.to_string(),
            "node.toml: option `security.tls.ca_file` (flag --tls-ca-file): gone"
        );
        let option = err.source().expect("the option error");
        let io = option.source().expect("the cause");
        assert_eq!(
            io.downcast_ref::<io::Error>().map(io::Error::kind),
            Some(io::ErrorKind::NotFound)
        );
    }

    #[test]
    fn missing_options_are_listed_with_their_flags() {
        assert_eq!(
            ServerError::Missing(vec!["id"]).to_string(),
            "missing field `id` (flag --id)"
        );
        assert_eq!(
            ServerError::Missing(vec!["cluster_id", "members"]).to_string(),
            "missing fields `cluster_id` (flag --cluster-id), `members` (flag --member)"
        );
    }
}
