//! # lockstep-testkit
//!
//! What lockstep's tests, tools and benchmark share to run nodes:
//! - [`cluster`]: a small key-value state machine and [`cluster::TestCluster`], in-process nodes
//!   on free loopback ports.

#![deny(missing_docs)]

pub mod cluster;
