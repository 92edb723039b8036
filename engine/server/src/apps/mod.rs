//! Example state machines shipped with lockstep, and what they share.
//!
//! - [`kv`]: a key-value store with expiry ([`KvStore`]);
//! - [`bank`]: a ledger of accounts with atomic transfers ([`Bank`]);
//! - [`lock`]: named locks with leases and fencing tokens ([`LockService`]);
//! - [`journal`]: opaque entries, counted and hashed in order (the benchmark app);
//! - [`machine`]: the state machine kv, bank and lock run as: envelope, log clock and
//!   [`sessions`] for exactly-once writes;
//! - [`frontend`]: their RESP command sets;
//! - [`reply`]: the tagged reply all of them return to proposers and readers.
//!
//! Every machine is deterministic and never panics on bad input: a command it cannot decode
//! gets an error reply.

use std::sync::Arc;

use crate::resp::Frontend;

pub mod bank;
mod codec;
mod deadlines;
pub mod envelope;
pub mod frontend;
pub mod journal;
pub mod kv;
pub mod lock;
pub mod machine;
pub mod reply;
pub mod sessions;

pub use self::bank::{Bank, BankCommand};
pub use self::codec::DecodeError;
pub use self::envelope::Envelope;
pub use self::frontend::{BankCommands, KvCommands, LockCommands, RespFrontend};
pub use self::journal::{Journal, JournalDigest};
pub use self::kv::{KvCommand, KvStore};
pub use self::lock::{LockCommand, LockService};
pub use self::machine::{App, Machine};
pub use self::reply::{Reply, ReplyError};

/// Which example state machine a server runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppKind {
    /// A key-value store.
    Kv,
    /// A bank ledger.
    Bank,
    /// A lock service.
    Lock,
    /// Opaque entries: counts them and hashes them in order (for benchmarks and tests).
    Journal,
}

impl AppKind {
    /// The name used in configuration files and flags.
    pub fn name(self) -> &'static str {
        match self {
            AppKind::Kv => "kv",
            AppKind::Bank => "bank",
            AppKind::Lock => "lock",
            AppKind::Journal => "journal",
        }
    }

    /// Every app, in the order help texts list them.
    pub const ALL: [AppKind; 4] = [AppKind::Kv, AppKind::Bank, AppKind::Lock, AppKind::Journal];

    /// The accepted names, for messages: `kv, bank, lock or journal`.
    pub const NAMES: &'static str = "kv, bank, lock or journal";

    /// Parses a configuration name (one of [`AppKind::NAMES`]).
    pub fn from_name(name: &str) -> Option<AppKind> {
        AppKind::ALL.into_iter().find(|app| app.name() == name)
    }

    /// The RESP command set of this app, served on the client port; `None` for apps without
    /// one (the journal takes opaque entries over the native protocol only).
    pub fn frontend(self) -> Option<Arc<dyn Frontend>> {
        match self {
            AppKind::Kv => Some(Arc::new(RespFrontend::new(KvCommands))),
            AppKind::Bank => Some(Arc::new(RespFrontend::new(BankCommands))),
            AppKind::Lock => Some(Arc::new(RespFrontend::new(LockCommands))),
            AppKind::Journal => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_resp_apps_have_a_frontend() {
        for app in AppKind::ALL {
            assert_eq!(AppKind::from_name(app.name()), Some(app));
            assert!(AppKind::NAMES.contains(app.name()));
            assert_eq!(app.frontend().is_some(), app != AppKind::Journal);
        }
        assert_eq!(AppKind::from_name("sql"), None);
    }
}
