//! # lockstep-server
//!
//! The lockstep server: a [`lockstep::Node`] running one of the example state machines, with
//! its configuration (TOML file and flags), run until SIGINT/SIGTERM. Shared by `lockstep serve`
//! and by `lockstep-bench`, which re-executes itself as a node.
//!
//! - [`config`]: [`ServerConfig`] (the file's shape), [`ConfigLayer`] (a file or flags that
//!   may each lack options), loading, validation, mapping onto
//!   [`crate::node::NodeConfig`];
//! - [`run`] / [`run_until`]: start the node, announce readiness, serve until told to stop
//!   ([`run_with`] / [`run_until_with`]: with an embedder's work running next to the node);
//! - [`metrics`]: the Prometheus endpoint (`metrics_addr`);
//! - [`security`]: the `[security]` (peer secret, client passwords, TLS) and `[limits]` sections;
//! - [`pki`]: a throwaway certificate authority for test clusters (`lockstep cluster --tls`);
//! - [`apps`]: the example state machines (kv, bank, lock) and their RESP command sets.

#![deny(missing_docs)]

// The runtime's layers under the names the server's modules use.
pub(crate) use lockstep::{apply, log, net, node, raft, resp, types};

pub mod apps;

pub mod config;
mod error;
pub mod metrics;
pub mod pki;
mod run;
pub mod security;

pub use self::config::{
    ConfigLayer, LogFormat, MemberConfig, MemberParseError, MemberProblem, ServerConfig,
    ServerError, Tuning, UnknownLogFormat, DEFAULT_CLUSTER_ID,
};
pub use self::metrics::{MetricsError, MetricsServer};
pub use self::run::{ready_line, run, run_until, run_until_with, run_with, READY_MARKER};
