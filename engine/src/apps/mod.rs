//! Example state machines shipped with lockstep.

/// Which example state machine a server runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppKind {
    /// A key-value store.
    Kv,
    /// Opaque entries: counts them and hashes them in order (for benchmarks and tests).
    Journal,
}
