//! Example state machines shipped with lockstep, and the reply encoding they share.
//!
//! - [`kv`]: a key-value store with a versioned binary command encoding (the layer a RESP front
//!   end maps onto);
//! - [`journal`]: opaque entries, counted and hashed in order (the benchmark app);
//! - [`reply`]: the tagged reply both return to proposers and readers.
//!
//! Both machines are deterministic and never panic on bad input: a command they cannot decode
//! gets an error reply.

use std::sync::Arc;

use crate::resp::Frontend;

pub mod journal;
pub mod kv;
pub mod reply;

pub use self::journal::{Journal, JournalDigest};
pub use self::kv::{KvCommand, KvStore};
pub use self::reply::{Reply, ReplyError};

/// Which example state machine a server runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppKind {
    /// A key-value store.
    Kv,
    /// Opaque entries: counts them and hashes them in order (for benchmarks and tests).
    Journal,
}

impl AppKind {
    /// The name used in configuration files and flags.
    pub fn name(self) -> &'static str {
        match self {
            AppKind::Kv => "kv",
            AppKind::Journal => "journal",
        }
    }

    /// Parses a configuration name (`kv` or `journal`).
    pub fn from_name(name: &str) -> Option<AppKind> {
        match name {
            "kv" => Some(AppKind::Kv),
            "journal" => Some(AppKind::Journal),
            _ => None,
        }
    }

    /// The RESP command set of this app, served on the client port; `None` for apps without
    /// one (the journal takes opaque entries over the native protocol only).
    pub fn frontend(self) -> Option<Arc<dyn Frontend>> {
        match self {
            AppKind::Kv | AppKind::Journal => None,
        }
    }
}
