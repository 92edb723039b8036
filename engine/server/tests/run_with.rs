//! `run_until_with`: the embedder's work runs next to the served node, on the same node, and
//! the node shuts down only after that work saw `ending` and returned.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lockstep::Role;
use lockstep_server::ServerConfig;

/// A one-node journal server in `dir`.
fn config(dir: &std::path::Path) -> ServerConfig {
    let addrs = lockstep::net::free_loopback_addrs(2).unwrap();
    let text = format!(
        "id = 1\ncluster_id = 7\napp = \"journal\"\ndata_dir = {:?}\n[[members]]\nid = 1\n\
         peer_addr = \"{}\"\nclient_addr = \"{}\"\n",
        dir.join("data"),
        addrs[0],
        addrs[1]
    );
    ServerConfig::parse_toml(&text).expect("a config")
}

#[test]
fn alongside_proposes_on_the_served_node_and_ends_before_it_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let stop = AtomicBool::new(false);
    let ended = AtomicBool::new(false);
    let (applied_tx, applied_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        let stop = &stop;
        let stopper = scope.spawn(move || {
            let applied = applied_rx.recv_timeout(Duration::from_secs(30));
            stop.store(true, Ordering::Relaxed);
            applied
        });
        lockstep_server::run_until_with(config(dir.path()), stop, |node, ending| {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut leadership = node.subscribe();
            while leadership.current().role != Role::Leader && Instant::now() < deadline {
                leadership.wait_changed_timeout(Duration::from_millis(50));
            }
            let applied = node.propose(Bytes::from_static(b"entry")).wait();
            applied_tx.send(applied).unwrap();
            while !ending.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
            }
            ended.store(true, Ordering::Relaxed);
        })
        .unwrap();
        let applied = stopper.join().unwrap().expect("alongside reported");
        assert!(applied.is_ok(), "{applied:?}");
    });
    assert!(
        ended.load(Ordering::Relaxed),
        "alongside did not see ending"
    );
}
