//! Scripted scenario tests of the core, named after the rules they check, on the in-memory
//! cluster of [`harness`].

mod harness;
mod scenarios;
