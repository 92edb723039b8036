//! Scripted scenarios run inside the simulator (every step still checked): the Raft Figure 8
//! commit rule, the single-server membership change race, and reads at a leader cut off from
//! its successor, each built step by step so that the bug it guards against (re-inserted with
//! the bug switch) is observable on every run, whatever the election timeouts pick.

use super::checker::{Invariant, Violation};
use super::cluster::{Cluster, SimOptions};
use super::disk::DiskLatency;
use super::network::NetworkFaults;
use super::profile::{Profile, NEMESIS_ACTIONS, TICK};
use crate::raft::{InjectedBug, MembershipChange, ProposeError};
use crate::types::NodeId;

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
        let statuses: Vec<String> = (0..cluster.node_count())
            .map(|node| format!("{:?}", cluster.status_of(node)))
            .collect();
        panic!(
            "script: {what} did not happen within {ticks} ticks; nodes:\n{}",
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
    clean_on_every_seed("figure 8", figure_8);
}

#[test]
pub(super) fn figure_8_commit_old_term_by_counting_is_caught() {
    caught_on_every_seed(
        figure_8,
        InjectedBug::CommitOldTermByCounting,
        "the checker must catch an old-term entry committed by counting",
    );
}

/// A scripted scenario, run with a bug switched on (`Some`) or without (`None`).
type Script = fn(u64, Option<InjectedBug>) -> Result<(), Violation>;

/// Seeds every scripted scenario runs with.
const SCRIPT_SEEDS: std::ops::Range<u64> = 0..5;

/// `script` without a bug must run clean on every seed.
fn clean_on_every_seed(what: &str, script: Script) {
    for seed in SCRIPT_SEEDS {
        if let Err(violation) = script(seed, None) {
            panic!("{what} without the bug, seed {seed}: {violation}");
        }
    }
}

/// `script` with `bug` must be caught on every seed, as a violation of state machine safety or
/// leader completeness (`expectation` says what the checker must catch).
fn caught_on_every_seed(script: Script, bug: InjectedBug, expectation: &str) {
    for seed in SCRIPT_SEEDS {
        let violation = script(seed, Some(bug)).expect_err(expectation);
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

/// A read at a leader cut off from its successor: leader A is cut off from B and C, whose clocks
/// run `follower_period` time units per tick against A's 100. B or C is elected and commits a
/// write; then a client reads at A. Returns the reads A served.
///
/// Lease reads (`lease_reads`): A still believes in its lease. With clocks within the documented
/// drift bound A's lease has lapsed by then (the read waits for a quorum round it cannot get);
/// with much faster follower clocks A serves a stale read, and the checker must say so.
/// Read-index reads: A waits for a quorum round and never serves the read, unless `bug` is
/// `ReadWithoutConfirmation`, which serves it at once, stale.
fn read_at_a_cut_off_leader(
    seed: u64,
    lease_reads: bool,
    follower_period: u64,
    bug: Option<InjectedBug>,
) -> Result<u64, Violation> {
    let mut options = SimOptions::new(seed, 3, 0);
    options.trace = std::env::var_os("LOCKSTEP_SIM_TRACE").is_some();
    options.bug = bug;
    let mut cluster = Cluster::with_profile(options, scripted_profile(lease_reads));
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
        if let Err(violation) = read_at_a_cut_off_leader(seed, true, 92, None) {
            panic!("seed {seed}: {violation}");
        }
    }
}

#[test]
fn lease_reads_beyond_the_clock_bound_are_caught() {
    // Follower clocks 3.3 times as fast as the leader's: far beyond the bound.
    let caught = (0..5)
        .filter_map(|seed| read_at_a_cut_off_leader(seed, true, 30, None).err())
        .inspect(|violation| println!("{violation}"))
        .filter(|violation| violation.invariant == Invariant::LinearizableRead)
        .count();
    assert!(caught > 0, "no stale lease read was caught in 5 seeds");
}

// Fast follower clocks (as in the lease test above) elect A's successor and commit its write
// before A's check-quorum deposes A.
#[test]
fn read_index_at_a_cut_off_leader_waits_for_a_quorum() {
    for seed in 0..5 {
        match read_at_a_cut_off_leader(seed, false, 30, None) {
            Ok(served) => assert_eq!(served, 0, "seed {seed}: a read served without a quorum"),
            Err(violation) => panic!("seed {seed}: {violation}"),
        }
    }
}

#[test]
pub(super) fn read_without_confirmation_is_caught() {
    for seed in 0..5 {
        let violation =
            read_at_a_cut_off_leader(seed, false, 30, Some(InjectedBug::ReadWithoutConfirmation))
                .expect_err("the checker must catch a stale read at a deposed leader");
        assert_eq!(
            violation.invariant,
            Invariant::LinearizableRead,
            "seed {seed}: unexpected violation {violation}"
        );
        println!("seed {seed}: {violation}");
    }
}

/// The single-server membership change race on voters A, B, C, D and learner L (the spare node):
/// 1. A adds L, then appends Promote(L) at index p while cut off with L: only L receives it.
/// 2. B, C and D elect one of them, W; W's Appends to X (one of the other two) are lost, so
///    W's Noop at p stays on W and Y. W is asked at once to remove X: a correct leader refuses
///    (nothing of its term is committed); the buggy one appends Remove(X) and, counting over
///    {A, W, Y}, commits it and its Noop at p on W and Y.
/// 3. {W, Y} is cut off: A or L, whose logs are ahead of X's, win with X's vote (a majority of
///    {A, B, C, D, L}) and commit Promote(L) at p — another entry at a committed index.
/// 4. All heal; the leader changes the membership once its Noop is committed.
fn single_server_change(seed: u64, bug: Option<InjectedBug>) -> Result<(), Violation> {
    let mut options = SimOptions::new(seed, 4, 0);
    options.bug = bug;
    options.trace = std::env::var_os("LOCKSTEP_SIM_TRACE").is_some();
    let mut profile = scripted_profile(false);
    profile.membership_changes = true; // the spare node, L
    let mut cluster = Cluster::with_profile(options, profile);
    let learner = 4;
    let id = |node: usize| NodeId(node as u64 + 1);
    cluster.start_all()?;
    wait(&mut cluster, 200, "first election", |c| {
        c.leader().is_some()
    })?;
    let a = cluster.leader().expect("a leader");
    wait(&mut cluster, 100, "A's Noop committed", |c| {
        c.commit_of(a) >= c.last_index_of(a)
    })?;
    let added = cluster
        .change_membership_at(a, MembershipChange::AddLearner(id(learner), None))?
        .expect("A adds L");
    wait(&mut cluster, 100, "L added and caught up", |c| {
        (0..5).all(|n| c.commit_of(n) >= added)
    })?;
    // 1. Promote(L) reaches L only.
    cluster.isolate(&[a, learner]);
    let p = cluster
        .change_membership_at(a, MembershipChange::Promote(id(learner)))?
        .expect("A promotes L");
    wait(&mut cluster, 50, "Promote(L) durable on L", |c| {
        c.durable_index_of(learner) >= p
    })?;
    // 2. W is elected among B, C, D; its Appends to X are lost; it is asked to remove X.
    let rest: Vec<usize> = (0..4).filter(|&n| n != a).collect();
    wait(&mut cluster, 400, "an election among B, C, D", |c| {
        rest.iter().any(|&n| c.is_leader(n))
    })?;
    let w = *rest.iter().find(|&&n| cluster.is_leader(n)).expect("W");
    let (x, y) = match rest.iter().filter(|&&n| n != w).collect::<Vec<_>>()[..] {
        [&x, &y] => (x, y),
        _ => unreachable!("three nodes besides A"),
    };
    cluster.lose_appends_to(Some(x));
    match cluster.change_membership_at(w, MembershipChange::Remove(id(x)))? {
        Ok(removal) => wait(&mut cluster, 100, "W commits Remove(X)", |c| {
            c.commit_of(w) >= removal
        })?,
        Err(error) => assert!(
            matches!(error, ProposeError::TermNotCommitted { .. }),
            "W refuses Remove(X) for another reason: {error}"
        ),
    }
    // 3. {A, X, L} elect A or L, which commits past p.
    cluster.heal();
    cluster.isolate(&[w, y]);
    cluster.lose_appends_to(None);
    wait(
        &mut cluster,
        600,
        "A or L elected, committing past p",
        |c| {
            [a, learner]
                .iter()
                .any(|&n| c.is_leader(n) && c.commit_of(n) > p)
        },
    )?;
    // 4. Healed, the leader accepts the change once its Noop is committed.
    cluster.heal();
    for _ in 0..100 {
        if let Some(leader) = cluster.leader() {
            if let Ok(index) =
                cluster.change_membership_at(leader, MembershipChange::Remove(id(x)))?
            {
                let stay = [a, w, y, learner];
                return wait(&mut cluster, 200, "Remove(X) committed", |c| {
                    stay.iter().all(|&n| c.commit_of(n) >= index)
                });
            }
        }
        cluster.run_until(1, |_| false)?;
    }
    panic!("no leader accepted Remove(X) within 100 ticks of the heal");
}

#[test]
fn membership_changes_wait_for_a_commit_in_the_leaders_term() {
    clean_on_every_seed("single-server change", single_server_change);
}

#[test]
pub(super) fn membership_change_before_term_commit_is_caught() {
    caught_on_every_seed(
        single_server_change,
        InjectedBug::MembershipChangeBeforeTermCommit,
        "the checker must catch two entries committed at one index",
    );
}

/// Every simulated core checks its invariants after every event, in release builds too (the
/// simulator turns `check_invariants` on): a core broken on purpose is caught at its next tick.
#[test]
#[should_panic(expected = "past last index")]
fn simulated_cores_check_their_invariants_after_every_event_in_release_too() {
    let mut cluster = Cluster::with_profile(SimOptions::new(1, 3, 0), scripted_profile(false));
    cluster.start_all().expect("no violation");
    let far = cluster.last_index_of(0).plus(100);
    cluster.break_commit_of(0, far);
    let _ = cluster.run_until(2, |_| false);
}
