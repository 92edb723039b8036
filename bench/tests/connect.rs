//! `lockstep-bench --connect` against a cluster that is not there: it says so at once, naming
//! the addresses, and an interrupted run never claims to have stopped nodes it did not start.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Stdio};

use lockstep_testkit::ports::free_loopback_addrs;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lockstep-bench"))
}

#[test]
fn connect_to_addresses_where_nothing_listens_fails_naming_them() {
    // Addresses on which nothing listens (ports picked free, then released).
    let closed = free_loopback_addrs(2).unwrap();
    let (first, second) = (closed[0].to_string(), closed[1].to_string());
    let output = bench()
        .args(["--connect", &format!("{first},{second}")])
        .args(["--seconds", "1", "--warmup", "0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "accepted: {stderr}");
    assert!(
        stderr.contains("no node answers at --connect")
            && stderr.contains(&first)
            && stderr.contains(&second)
            && stderr.contains("lockstep cluster"),
        "{stderr}"
    );
}

#[test]
fn an_interrupted_connect_run_does_not_claim_to_have_stopped_nodes() {
    // Something that accepts connections but never answers as a node: the bench waits for a
    // leader there, with its signal handlers installed.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let mut child = bench()
        .args(["--connect", &addr, "--seconds", "1", "--warmup", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reachability check's connection, then the first status request's.
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(silent.accept().unwrap().0);
    }
    // SAFETY: signalling a child process this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    drop(held);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(!stderr.contains("nodes stopped"), "{stderr}");
    assert!(!stderr.contains("data removed"), "{stderr}");
}
