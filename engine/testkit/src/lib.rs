//! # lockstep-testkit
//!
//! What lockstep's tests, tools and benchmark share to run nodes:
//! - [`cluster`]: a small key-value state machine and [`cluster::TestCluster`], in-process nodes
//!   on free loopback ports;
//! - [`ports`]: free loopback ports and members on them, and starting again on fresh ports when
//!   one picked free was taken meanwhile;
//! - [`process`]: local node processes: start with captured output, wait for the ready line,
//!   signal, stop, kill, log tails;
//! - [`serve`]: the `lockstep serve` command line of a local node, and status queries over the
//!   client protocol (the leader the nodes agree on).

#![deny(missing_docs)]

pub mod cluster;
pub mod ports;
pub mod process;
pub mod serve;
