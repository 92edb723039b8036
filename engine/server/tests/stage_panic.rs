//! A served node whose stage panics ends its process with the runtime's status: the child is
//! this test binary again, running only [`served_node_child`] with a stage made to panic.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lockstep::{CHILD_MODE_VAR, PANIC_STAGE_VAR, STAGE_PANIC_EXIT_STATUS};
use lockstep_server::ServerConfig;

/// The exit status of a child whose node outlived the panic.
const STILL_ALIVE_STATUS: i32 = 3;

#[test]
#[ignore = "run in a child process by the test below"]
fn served_node_child() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = lockstep::net::free_loopback_addrs(2).unwrap();
    let text = format!(
        "id = 1\ncluster_id = 7\napp = \"kv\"\ndata_dir = {:?}\n[[members]]\nid = 1\n\
         peer_addr = \"{}\"\nclient_addr = \"{}\"\n",
        dir.path().join("data"),
        addrs[0],
        addrs[1]
    );
    let config = ServerConfig::parse_toml(&text).expect("a config");
    let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    // The panic ends the process long before this stops a node that outlived it.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(10));
        stop.store(true, Ordering::Relaxed);
    });
    let outcome = lockstep_server::run_until(config, stop);
    eprintln!("run_until returned {outcome:?}");
    std::process::exit(STILL_ALIVE_STATUS);
}

#[test]
fn a_served_node_whose_stage_panics_exits_with_status_1() {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "served_node_child",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PANIC_STAGE_VAR, "apply")
        .env(CHILD_MODE_VAR, "serve")
        .output()
        .expect("run the child");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(STAGE_PANIC_EXIT_STATUS),
        "a panic in the apply stage must end the process; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("fatal: the apply stage panicked"),
        "no fatal line on stderr:\n{stderr}"
    );
}
