//! `NodeConfig::cpu_affinity` pins the four stages in the documented order — network,
//! consensus, storage, apply — so a list of four cores leaves none idle. (One test in this file:
//! it reads the threads of its own process.)

use lockstep::Node;
use std::time::{Duration, Instant};

use lockstep_testkit::cluster::{Kv, TestCluster};

/// The `Cpus_allowed_list` of each thread of this process whose name is `name`.
fn allowed_cores_of_threads_named(name: &str) -> Vec<String> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let status = std::fs::read_to_string(task.path().join("status")).unwrap();
        let allowed = status
            .lines()
            .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
            .expect("a Cpus_allowed_list line")
            .trim()
            .to_string();
        found.push(allowed);
    }
    found
}

/// The names of this process's threads (for failure messages).
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .map(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            comm.trim_end().to_string()
        })
        .collect()
}

#[test]
fn cpu_affinity_pins_network_consensus_storage_and_apply_in_that_order() {
    let cores: Vec<usize> = core_affinity::get_core_ids()
        .expect("the cores this process may run on")
        .into_iter()
        .map(|core| core.id)
        .collect();
    // The network slot gets the last core, consensus the first: on a machine of two or more
    // cores, an unpinned thread would be allowed more than one.
    let network = *cores.last().unwrap();
    let consensus = cores[0];
    let list = vec![network, consensus];
    let cluster = TestCluster::start(
        1,
        true,
        1 << 20,
        |cfg| cfg.cpu_affinity = Some(list.clone()),
        |cfg| Node::start(cfg, Kv::default()),
    );
    let expected = [
        ("lockstep-net", network),
        ("ls-consensus-n1", consensus),
        ("ls-storage-n1", network),
        ("ls-apply-n1", consensus),
    ];
    let pinned = || {
        expected
            .iter()
            .all(|(thread, core)| allowed_cores_of_threads_named(thread) == vec![core.to_string()])
    };
    // A thread names and pins itself once it runs: give all four the time to (the assertions
    // below then say which one is not pinned as it should be).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pinned() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    for (thread, core) in expected {
        assert_eq!(
            allowed_cores_of_threads_named(thread),
            vec![core.to_string()],
            "thread {thread} with cpu_affinity {list:?}; threads: {:?}",
            thread_names()
        );
    }
    for node in cluster.nodes.into_iter().flatten() {
        node.shutdown().unwrap();
    }
}
