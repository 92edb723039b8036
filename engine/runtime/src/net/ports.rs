//! Picking free loopback ports for local clusters. The one picker of the workspace: it lives
//! here because the runtime's own unit tests need it, and `lockstep_testkit::ports` re-exports
//! it (with members on such ports) for the tools, the bench and the other crates' tests.
//!
//! A port found free by binding it and letting go can be taken before the node binds it, or
//! while a killed node is down before its restart on the same port: the kernel hands out
//! ports of its ephemeral range to every outgoing connection's local end and to every bind of
//! port 0. Picking outside that range (`/proc/sys/net/ipv4/ip_local_port_range`) leaves only a
//! program that binds that very port by number as a taker. Ports are drawn at random, so that
//! programs picking at once rarely try the same one, and each is checked by binding it; all are
//! held until every one is picked, so none is picked twice.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// The lowest port picked.
const PICK_MIN: u16 = 10_000;
/// Random draws before falling back to ports the kernel chooses.
const DRAWS_MAX: usize = 10_000;

/// `n` distinct loopback addresses whose ports are free now, outside the kernel's ephemeral
/// range when it leaves one of at least 1 000 ports above `PICK_MIN`; otherwise (or when
/// nothing free is found there) ports of the ephemeral range.
pub fn free_loopback_addrs(n: usize) -> io::Result<Vec<SocketAddr>> {
    let (low, high) = ephemeral_range().unwrap_or((32_768, 60_999));
    let spans = [
        (PICK_MIN, low.saturating_sub(1)),
        (high.saturating_add(1), u16::MAX),
    ];
    let span = spans
        .into_iter()
        .find(|&(first, last)| last >= first && last - first >= 1_000);
    let mut listeners = Vec::with_capacity(n);
    if let Some((first, last)) = span {
        let mut state = RandomState::new().build_hasher().finish();
        let width = u64::from(last - first) + 1;
        for _ in 0..DRAWS_MAX {
            if listeners.len() == n {
                break;
            }
            state = next_random(state);
            let port = first + (state % width) as u16;
            if let Ok(listener) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
                listeners.push(listener);
            }
        }
    }
    while listeners.len() < n {
        listeners.push(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?);
    }
    listeners.iter().map(TcpListener::local_addr).collect()
}

/// The kernel's ephemeral port range, if it can be read.
fn ephemeral_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut fields = text.split_whitespace().map(str::parse::<u16>);
    match (fields.next(), fields.next()) {
        (Some(Ok(low)), Some(Ok(high))) if low <= high => Some((low, high)),
        _ => None,
    }
}

/// splitmix64: one step of a small, well-mixed generator.
fn next_random(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_distinct_free_ports_outside_the_ephemeral_range() {
        let addrs = free_loopback_addrs(40).unwrap();
        let mut ports: Vec<u16> = addrs.iter().map(SocketAddr::port).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 40, "{addrs:?}");
        if let Some((low, high)) = ephemeral_range() {
            if low > PICK_MIN + 1_000 {
                assert!(
                    ports.iter().all(|&port| port < low || port > high),
                    "{ports:?} inside {low}..={high}"
                );
            }
        }
        for addr in addrs {
            assert!(addr.ip().is_loopback());
            TcpListener::bind(addr).expect("released and free");
        }
    }
}
