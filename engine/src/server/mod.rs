//! The lockstep server: a [`crate::node::Node`] running one of the example state machines, with
//! its configuration (TOML file and flags), run until SIGINT/SIGTERM. Shared by `lockstep serve`
//! and by `lockstep-bench`, which re-executes itself as a node.
//!
//! - [`config`]: [`ServerConfig`] (the file's shape), [`ConfigLayer`] (a file or flags that
//!   may each lack options), loading, validation, mapping onto
//!   [`crate::node::NodeConfig`];
//! - [`run`] / [`run_until`]: start the node, announce readiness, serve until told to stop;
//! - [`metrics`]: the Prometheus endpoint (`metrics_addr`);
//! - [`security`]: the `[security]` (peer secret, client passwords, TLS) and `[limits]` sections.

pub mod config;
pub mod metrics;
mod run;
pub mod security;

pub use self::config::{
    ConfigLayer, LogFormat, MemberConfig, ServerConfig, ServerError, Tuning, DEFAULT_CLUSTER_ID,
};
pub use self::metrics::MetricsServer;
pub use self::run::{ready_line, run, run_until, READY_MARKER};
