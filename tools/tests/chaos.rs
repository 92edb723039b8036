//! CI-sized chaos runs of the real binary (`lockstep chaos`, see docs/CHAOS.md): a 3-node kv
//! cluster under kill -9, SIGSTOP and network partitions (which need root, `ip` and `nft`: the
//! partition run fails without them), under storage faults, and under member replacements, and
//! bank and lock clusters under kill -9 and SIGSTOP, must pass every checker; the same harness
//! with a re-inserted stale-read bug must fail.
//!
//! Power cuts run the nodes on power-cut disks (FUSE, `lockstep powerfs`) that forget what was
//! never synced; nodes that never sync must fail there.
//!
//! `LOCKSTEP_CHAOS_SECONDS` sets the fault time of each passing run (default 12) and
//! `LOCKSTEP_CHAOS_SEEDS` how many seeds to run (default 1, seeds 1..=N).

mod common;

use std::process::{Command, Stdio};

use common::BIN;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|text| {
            text.parse()
                .unwrap_or_else(|_| panic!("{name}={text:?} is not a number"))
        })
        .unwrap_or(default)
}

/// Runs `lockstep chaos` with `args` in a temporary run directory (removed afterwards, also
/// when the run fails); returns (exit code, stdout, stderr).
fn chaos(args: &[&str]) -> (Option<i32>, String, String) {
    chaos_with_env(args, &[])
}

/// [`chaos`] with environment variables `env` set for the run (and so for its nodes).
fn chaos_with_env(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(BIN)
        .arg("chaos")
        .args(args)
        .arg("--dir")
        .arg(dir.path())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run lockstep chaos");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn kv_history_survives_kills_pauses_and_partitions() {
    let seconds = env_number("LOCKSTEP_CHAOS_SECONDS", 12).to_string();
    for seed in 1..=env_number("LOCKSTEP_CHAOS_SEEDS", 1) {
        let seed = seed.to_string();
        let (code, stdout, stderr) = chaos(&[
            "--seconds",
            &seconds,
            "--seed",
            &seed,
            "--nemesis",
            "kill,pause,partition",
            "--netns",
        ]);
        eprintln!("{stderr}{stdout}");
        assert_eq!(code, Some(0), "seed {seed} failed:\n{stderr}{stdout}");
        assert!(stdout.starts_with("PASS"), "{stdout}");
        // Partitions need root, `ip` and `nft`: without them the run would pass without cutting
        // a single link, so this test fails instead (`.ci/run` installs nftables).
        assert!(
            stderr.contains("(network namespaces)")
                && (stderr.contains(" split [") || stderr.contains(" one-way: ")),
            "the run injected no partition (needs root, iproute2 and nftables):\n{stderr}"
        );
    }
}

#[test]
fn bank_and_lock_invariants_survive_kills_and_pauses() {
    for workload in ["bank", "lock"] {
        let (code, stdout, stderr) = chaos(&[
            "--seconds",
            "5",
            "--seed",
            "3",
            "--workload",
            workload,
            "--nemesis",
            "kill,pause",
        ]);
        eprintln!("{stderr}{stdout}");
        assert_eq!(code, Some(0), "{workload} failed:\n{stderr}{stdout}");
    }
}

#[test]
fn checkers_catch_reads_served_without_a_read_index() {
    let (code, stdout, stderr) = chaos(&[
        "--seconds",
        "4",
        "--seed",
        "7",
        "--nemesis",
        "pause,kill",
        "--bug",
        "stale-reads",
    ]);
    assert_eq!(
        code,
        Some(1),
        "the stale-read bug went unnoticed:\n{stderr}{stdout}"
    );
    assert!(stdout.starts_with("FAIL"), "{stdout}");
    assert!(
        stderr.contains("not linearizable") || stderr.contains("acknowledged"),
        "{stderr}"
    );
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    let (code, _, stderr) = chaos(&["--nemesis", "kill,flood"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("unknown fault \"flood\""), "{stderr}");
    let (code, _, stderr) = chaos(&["--nodes", "4"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--nodes 4"), "{stderr}");
}

/// Storage faults (bit flips in committed records, truncated segments, a deleted newest
/// segment) on one node at a time: the damaged node repairs its log from its peers (or refuses
/// to start, which the harness records and undoes), and no acknowledged write is lost. A deleted
/// segment is noticed through the log head (`docs/LOG.md`). `LOCKSTEP_CHAOS_SECONDS` sets the
/// length (default 12).
#[test]
fn kv_history_survives_storage_faults() {
    let seconds = env_number("LOCKSTEP_CHAOS_SECONDS", 12).to_string();
    let (code, stdout, stderr) = chaos(&[
        "--seconds",
        &seconds,
        "--seed",
        "4",
        "--nemesis",
        "kill,storage",
    ]);
    assert_eq!(code, Some(0), "{stderr}{stdout}");
}

/// Member replacements between kills: a member (the leader a third of the time) is removed, its
/// data wiped, and a new node with a fresh id joins (`serve --join`), is added as a learner and
/// promoted once caught up; restarted nodes must take the members from their logs, the clients
/// must follow the new addresses, and every acknowledged write must be on the final members,
/// which must be the voters the harness expects. `LOCKSTEP_CHAOS_SECONDS` sets the length
/// (default 12).
#[test]
fn kv_history_survives_member_replacements() {
    let seconds = env_number("LOCKSTEP_CHAOS_SECONDS", 12).to_string();
    let (code, stdout, stderr) = chaos(&[
        "--seconds",
        &seconds,
        "--seed",
        "1",
        "--nemesis",
        "kill,member",
    ]);
    eprintln!("{stderr}{stdout}");
    assert_eq!(code, Some(0), "{stderr}{stdout}");
    assert!(stdout.starts_with("PASS"), "{stdout}");
    assert!(
        stderr.contains(" replace "),
        "no member was replaced:\n{stderr}"
    );
}

/// Power cuts on disks that forget unsynced writes (FUSE; needs /dev/fuse and root, which CI
/// has): one node, the leader, a minority or every node at once loses what it never synced and
/// restarts; after each cut every acknowledged write must still be durable on a majority, and
/// the history must check. `LOCKSTEP_CHAOS_SECONDS` sets the length (default 12; at least one
/// cut of every node happens by then with this seed).
#[test]
fn acknowledged_writes_survive_power_cuts_of_every_node() {
    let seconds = env_number("LOCKSTEP_CHAOS_SECONDS", 12).max(12).to_string();
    let (code, stdout, stderr) =
        chaos(&["--seconds", &seconds, "--seed", "1", "--nemesis", "power"]);
    eprintln!("{stderr}{stdout}");
    assert_eq!(code, Some(0), "{stderr}{stdout}");
    assert!(stdout.starts_with("PASS"), "{stdout}");
    assert!(
        stderr.contains("power cut of all "),
        "no power cut of every node at once:\n{stderr}"
    );
}

/// The power nemesis must see what it exists to see: nodes that never sync (`--sync none`)
/// lose acknowledged writes when every node loses power.
#[test]
fn nodes_that_never_sync_lose_acknowledged_writes_to_power_cuts() {
    let (code, stdout, stderr) = chaos(&[
        "--seconds",
        "12",
        "--seed",
        "1",
        "--nemesis",
        "power",
        "--sync",
        "none",
        "--recovery-bound-s",
        "5",
    ]);
    assert_eq!(
        code,
        Some(1),
        "never syncing went unnoticed:\n{stderr}{stdout}"
    );
    assert!(stdout.starts_with("FAIL"), "{stdout}");
    assert!(stderr.contains("lost acknowledged writes"), "{stderr}");
}

/// With the consensus core's ack-before-durable bug switched on (`--features inject-bugs`,
/// `LOCKSTEP_INJECT_BUG`), followers acknowledge appends before they are durable: a power cut
/// of every node must lose acknowledged writes. `.ci/run` runs it.
#[cfg(feature = "inject-bugs")]
#[test]
fn acknowledging_before_durable_loses_writes_to_power_cuts() {
    let (code, stdout, stderr) = chaos_with_env(
        &[
            "--seconds",
            "30",
            "--seed",
            "1",
            "--nemesis",
            "power",
            "--recovery-bound-s",
            "5",
        ],
        &[("LOCKSTEP_INJECT_BUG", "ack-before-durable")],
    );
    assert_eq!(code, Some(1), "the bug went unnoticed:\n{stderr}{stdout}");
    assert!(stderr.contains("lost acknowledged writes"), "{stderr}");
}
