//! Free loopback ports for local clusters, and starting again on fresh ones when a port picked
//! free was taken before its node bound it.
//!
//! The picker itself is the runtime's [`free_loopback_addrs`] (its own unit tests need it, and
//! the runtime cannot depend on this crate), re-exported here: ports outside the kernel's
//! ephemeral range, drawn at random, none picked twice. Even so another program can bind a
//! port between the pick and the node's bind; [`retry_when_port_taken`] starts again then.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::ops::RangeInclusive;

use lockstep_server::MemberConfig;

pub use lockstep::net::free_loopback_addrs;

/// How many times [`retry_when_port_taken`] starts on fresh ports before an address in use
/// fails the start.
pub const START_ATTEMPTS: usize = 5;

/// The text of the OS error a bind to a taken address fails with, as a node logs it.
const ADDRESS_IN_USE: &str = "Address already in use";

/// Tries to find a run of consecutive free ports this many times before giving up.
const RUN_DRAWS_MAX: usize = 100;

/// `n` distinct loopback ports free now (see [`free_loopback_addrs`]).
pub fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    Ok(free_loopback_addrs(n)?
        .iter()
        .map(SocketAddr::port)
        .collect())
}

/// The first of `n` consecutive loopback ports free now (for a command that takes a first port
/// and counts up from it, such as `lockstep cluster --client-port`).
pub fn free_port_run(n: u16) -> io::Result<u16> {
    assert!(n >= 1, "a run of ports holds at least one");
    for _ in 0..RUN_DRAWS_MAX {
        let first = free_ports(1)?[0];
        let Some(end) = first.checked_add(n) else {
            continue;
        };
        let all_free = (first..end).all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok());
        if all_free {
            return Ok(first);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("no run of {n} free loopback ports in {RUN_DRAWS_MAX} draws"),
    ))
}

/// Members `ids` on loopback, each with a free peer port and a free client port (none chosen
/// twice; the peer port of the first id is the first port picked, its client port the next).
pub fn loopback_members(ids: RangeInclusive<u64>) -> io::Result<Vec<MemberConfig>> {
    let count = ids.clone().count();
    let addrs = free_loopback_addrs(2 * count)?;
    let members: Vec<MemberConfig> = ids
        .zip(addrs.chunks_exact(2))
        .map(|(id, pair)| MemberConfig {
            id,
            peer_addr: pair[0],
            client_addr: pair[1],
        })
        .collect();
    assert_eq!(members.len(), count, "two addresses per member");
    Ok(members)
}

/// Whether `text` (an error message, a node's log) says an address was in use.
pub fn mentions_address_in_use(text: &str) -> bool {
    text.contains(ADDRESS_IN_USE)
}

/// Why one start on ports picked free did not succeed.
#[derive(Debug)]
pub enum StartFailure<E> {
    /// A node found its address in use: a port picked free was taken meanwhile.
    PortTaken(E),
    /// Anything else.
    Failed(E),
}

/// Runs `start` (which picks its own fresh ports, and cleans up what it started when it
/// fails) until it succeeds, fails for another reason than a port in use, or found a port
/// taken [`START_ATTEMPTS`] times; returns that last failure then. `start` gets the attempt's
/// number, from 1.
pub fn retry_when_port_taken<T, E>(
    mut start: impl FnMut(usize) -> Result<T, StartFailure<E>>,
) -> Result<T, StartFailure<E>> {
    let mut attempt = 1;
    loop {
        match start(attempt) {
            Err(StartFailure::PortTaken(_)) if attempt < START_ATTEMPTS => attempt += 1,
            done => return done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_get_distinct_free_ports_in_id_order() {
        let members = loopback_members(3..=5).unwrap();
        let ids: Vec<u64> = members.iter().map(|member| member.id).collect();
        assert_eq!(ids, [3, 4, 5]);
        let mut ports: Vec<u16> = members
            .iter()
            .flat_map(|member| [member.peer_addr.port(), member.client_addr.port()])
            .collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 6, "{members:?}");
        assert!(members
            .iter()
            .all(|member| member.peer_addr.ip().is_loopback()));
    }

    #[test]
    fn a_run_of_ports_is_free_from_its_first() {
        let first = free_port_run(4).unwrap();
        for port in first..first + 4 {
            TcpListener::bind(("127.0.0.1", port)).expect("free");
        }
    }

    #[test]
    fn a_taken_port_is_retried_up_to_the_limit_and_other_failures_are_not() {
        let mut attempts = Vec::new();
        let result: Result<(), StartFailure<usize>> = retry_when_port_taken(|attempt| {
            attempts.push(attempt);
            Err(StartFailure::PortTaken(attempt))
        });
        assert!(
            matches!(result, Err(StartFailure::PortTaken(START_ATTEMPTS))),
            "{result:?}"
        );
        assert_eq!(attempts, (1..=START_ATTEMPTS).collect::<Vec<_>>());

        let mut calls = 0;
        let result: Result<(), StartFailure<&str>> = retry_when_port_taken(|_| {
            calls += 1;
            Err(StartFailure::Failed("bad flag"))
        });
        assert!(matches!(result, Err(StartFailure::Failed("bad flag"))));
        assert_eq!(calls, 1);

        let result: Result<usize, StartFailure<()>> =
            retry_when_port_taken(|attempt| match attempt {
                1 => Err(StartFailure::PortTaken(())),
                _ => Ok(attempt),
            });
        assert!(matches!(result, Ok(2)), "{result:?}");
    }

    #[test]
    fn an_address_in_use_is_recognized_in_a_log() {
        assert!(mentions_address_in_use(
            "ERROR bind 127.0.0.1:7000: Address already in use (os error 98)"
        ));
        assert!(!mentions_address_in_use("ERROR bind: Permission denied"));
    }
}
