//! Scripted scenarios run inside the simulator (every step still checked): the Raft Figure 8
//! commit rule, built step by step so that the `CommitOldTermByCounting` bug is observable on
//! every run, whatever the election timeouts pick.

use super::checker::{Invariant, Violation};
use super::cluster::{Cluster, SimOptions};
use super::disk::DiskLatency;
use super::network::NetworkFaults;
use super::profile::{Profile, NEMESIS_ACTIONS, TICK};
use crate::raft::InjectedBug;

/// A calm fault mix (the script injects the faults): fast network, fast disks, slow mode 20-40
/// ticks, one entry per Append message.
fn scripted_profile(lease_reads: bool) -> Profile {
    Profile {
        network: NetworkFaults::quiet(1, 20),
        disk: DiskLatency {
            sync_min: 1,
            sync_max: 10,
            slow_sync_max: 40 * TICK,
        },
        nemesis_gap_max: TICK,
        weights: [0; NEMESIS_ACTIONS],
        downtime_max: TICK,
        propose_gap_max: TICK,
        propose_burst_max: 1,
        read_gap_max: 0,
        lease_reads,
        membership_changes: false,
        compact_every: 0,
        batch_entries_max: 1,
        append_bytes_max: 20,
        inflight_messages_max: 8,
        snapshot_chunk_bytes: 1 << 20,
        damaged_restart_per_mille: 0,
    }
}

/// The two nodes other than `node` in a three-node cluster.
fn others(node: usize) -> (usize, usize) {
    match node {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    }
}

/// Runs until `done` holds, failing the script (with every node's status) after `ticks` ticks.
fn wait(
    cluster: &mut Cluster,
    ticks: u64,
    what: &str,
    done: impl Fn(&Cluster) -> bool,
) -> Result<(), Violation> {
    if !cluster.run_until(ticks, done)? {
        let statuses: Vec<String> = (0..3)
            .map(|node| format!("{:?}", cluster.status_of(node)))
            .collect();
        panic!(
            "figure 8 script: {what} did not happen within {ticks} ticks; nodes:\n{}",
            statuses.join("\n")
        );
    }
    Ok(())
}

/// Raft Figure 8 on three nodes A, B, C:
/// 1. A leads; A, B, C agree on the log; A is cut off and appends X at index i (term tA) alone.
/// 2. B is elected by B and C in a later term tB and cut off at once: its Noop Y at i (tB) stays
///    on B only.
/// 3. A (whose disk turns slow as it wins) is elected by A and C in tA' > tB; it sends X and its Noop Z (i + 1) to
///    C, which acks i + 1 while A's own Z is not yet durable. A correct leader cannot commit X
///    now (its term is not tA'); the buggy one counts A and C holding X and commits it.
/// 4. A crashes, losing Z; B and A (C cut off) elect B, whose Y overwrites X at i on A.
///
/// Returns the violation if one happened.
fn figure_8(seed: u64, bug: Option<InjectedBug>) -> Result<(), Violation> {
    let mut options = SimOptions::new(seed, 3, 0);
    options.bug = bug;
    options.trace = std::env::var_os("LOCKSTEP_SIM_TRACE").is_some();
    let mut cluster = Cluster::with_profile(options, scripted_profile(false));
    cluster.start_all()?;
    wait(&mut cluster, 200, "first election", |c| {
        c.leader().is_some()
    })?;
    let a = cluster.leader().expect("a leader");
    let (b0, c0) = match a {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    };
    cluster.propose_at(a, b"common")?;
    let agreed = cluster.last_index_of(a);
    wait(&mut cluster, 100, "agreement on the first entries", |c| {
        (0..3).all(|n| c.commit_of(n) >= agreed)
    })?;
    // 1. X on A alone.
    cluster.isolate(&[a]);
    assert!(cluster.propose_at(a, b"X")?, "the leader accepts X");
    let i = cluster.last_index_of(a);
    wait(&mut cluster, 50, "X durable on A", |c| {
        c.durable_index_of(a) >= i
    })?;
    // 2. B or C is elected (call it B) and cut off at once; its Noop Y stays on B.
    wait(&mut cluster, 300, "an election among B and C", |c| {
        c.is_leader(b0) || c.is_leader(c0)
    })?;
    let (b, c) = if cluster.is_leader(b0) {
        (b0, c0)
    } else {
        (c0, b0)
    };
    cluster.isolate(&[b]);
    wait(&mut cluster, 50, "Y durable on B", |cl| {
        cl.durable_index_of(b) >= i
    })?;
    // 3. A, with a slow disk, is elected by A and C; C acks X and Z.
    cluster.heal();
    cluster.isolate(&[b]);
    cluster.slow_disk_on_leadership(a);
    wait(
        &mut cluster,
        400,
        "A re-elected and replicating to C",
        |cl| cl.is_leader(a) && cl.last_index_of(c) > i,
    )?;
    // Give A the time to count (the buggy core commits X here), but less than its slow sync.
    cluster.run_until(5, |cl| cl.commit_of(a) >= i)?;
    // 4. A crashes before Z is durable; B is elected by B and A and overwrites X.
    cluster.crash_losing_pending(a)?;
    cluster.set_slow_disk(a, false);
    cluster.heal();
    cluster.isolate(&[c]);
    cluster.restart(a)?;
    wait(&mut cluster, 400, "B elected, committing past i", |cl| {
        cl.is_leader(b) && cl.commit_of(b) > i
    })?;
    Ok(())
}

/// Without the bug the script runs clean, and B takes over and commits once A and B can talk.
#[test]
fn figure_8_a_leader_commits_only_entries_of_its_own_term_by_counting() {
    for seed in 0..5 {
        if let Err(violation) = figure_8(seed, None) {
            panic!("figure 8 without the bug, seed {seed}: {violation}");
        }
    }
}

#[test]
fn figure_8_commit_old_term_by_counting_is_caught() {
    for seed in 0..5 {
        let violation = figure_8(seed, Some(InjectedBug::CommitOldTermByCounting))
            .expect_err("the checker must catch an old-term entry committed by counting");
        assert!(
            matches!(
                violation.invariant,
                Invariant::StateMachineSafety | Invariant::LeaderCompleteness
            ),
            "seed {seed}: unexpected violation {violation}"
        );
        println!("seed {seed}: {violation}");
    }
}

/// Lease reads beyond their clock bound: leader A is cut off from B and C, whose clocks run
/// `follower_period` time units per tick against A's 100. B or C is elected and commits a write;
/// then a client reads at A, which still believes in its lease. With clocks within the documented
/// drift bound A's lease has lapsed by then (the read waits for a quorum round it cannot get);
/// with much faster follower clocks A serves a stale read, and the checker must say so.
fn lease_read_with_follower_clock(seed: u64, follower_period: u64) -> Result<u64, Violation> {
    let mut options = SimOptions::new(seed, 3, 0);
    options.trace = std::env::var_os("LOCKSTEP_SIM_TRACE").is_some();
    let mut cluster = Cluster::with_profile(options, scripted_profile(true));
    cluster.start_all()?;
    wait(&mut cluster, 200, "first election", |c| {
        c.leader().is_some()
    })?;
    let a = cluster.leader().expect("a leader");
    let (b, c) = others(a);
    cluster.propose_at(a, b"W1")?;
    let w1 = cluster.last_index_of(a);
    wait(&mut cluster, 100, "W1 committed everywhere", |cl| {
        (0..3).all(|n| cl.commit_of(n) >= w1)
    })?;
    // Let A hear from its quorum once more, then cut it off and speed the followers up.
    cluster.run_until(3, |_| false)?;
    cluster.isolate(&[a]);
    cluster.set_tick_period(b, follower_period);
    cluster.set_tick_period(c, follower_period);
    wait(&mut cluster, 100, "a new leader among B and C", |cl| {
        cl.is_leader(b) || cl.is_leader(c)
    })?;
    let new = if cluster.is_leader(b) { b } else { c };
    cluster.propose_at(new, b"W2")?;
    let w2 = cluster.last_index_of(new);
    wait(&mut cluster, 100, "W2 committed", |cl| {
        cl.commit_of(new) >= w2
    })?;
    let served_before = cluster.reads_served();
    cluster.read_at(a)?;
    cluster.run_until(20, |cl| cl.reads_served() > served_before)?;
    Ok(cluster.reads_served() - served_before)
}

#[test]
fn lease_reads_within_the_clock_bound_are_never_stale() {
    // Follower clocks 8 % fast: within the bound of `LEASE_DRIFT_TICKS`.
    for seed in 0..5 {
        if let Err(violation) = lease_read_with_follower_clock(seed, 92) {
            panic!("seed {seed}: {violation}");
        }
    }
}

#[test]
fn lease_reads_beyond_the_clock_bound_are_caught() {
    // Follower clocks 3.3 times as fast as the leader's: far beyond the bound.
    let caught = (0..5)
        .filter_map(|seed| lease_read_with_follower_clock(seed, 30).err())
        .inspect(|violation| println!("{violation}"))
        .filter(|violation| violation.invariant == Invariant::LinearizableRead)
        .count();
    assert!(caught > 0, "no stale lease read was caught in 5 seeds");
}
