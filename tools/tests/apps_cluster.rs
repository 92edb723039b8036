//! The kv, bank and lock apps on a real 3-node cluster of `lockstep serve` processes, driven
//! with RESP-style commands routed by each app's front end and carried by the native client:
//! exactly-once INCR across a leader kill -9, the bank total under concurrent transfers, and
//! lock fencing tokens across owners and a leader change.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{AppClient, Cluster};
use lockstep::apps::AppKind;
use lockstep::resp::Value;

/// How long the bank test keeps transferring (override with LOCKSTEP_BANK_TEST_MS).
fn bank_test_duration() -> Duration {
    let ms = std::env::var("LOCKSTEP_BANK_TEST_MS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(1_500);
    Duration::from_millis(ms)
}

#[test]
fn kv_session_incr_applies_once_across_a_leader_kill() {
    let mut cluster = Cluster::start(3, "kv", &[]);
    let leader = cluster.wait_leader(Duration::from_secs(10));
    let mut client = AppClient::new(&cluster, AppKind::Kv);
    assert_eq!(
        client.run(&["SET", "counter", "10", "EX", "3600"]),
        Value::ok()
    );
    let session = client.int(&["SESSION.OPEN"]).to_string();
    assert_eq!(
        client.int(&["SESSION", &session, "1", "INCR", "counter"]),
        11
    );

    // Seq 2 goes to the leader, which dies at once: the sender cannot know whether it applied.
    // The retry (same session, same seq) must move the counter by one in total.
    let mut doomed = AppClient::new(&cluster, AppKind::Kv);
    let doomed_session = session.clone();
    let sender = std::thread::spawn(move || {
        doomed.try_run(&["SESSION", &doomed_session, "2", "INCR", "counter"], false)
    });
    std::thread::sleep(Duration::from_millis(2));
    cluster.kill9(leader);
    let first = sender.join().expect("sender thread");
    let retry = client
        .try_run(&["SESSION", &session, "2", "INCR", "counter"], true)
        .expect("retry at the new leader");
    assert_eq!(
        retry,
        Value::Int(12),
        "the first attempt answered {first:?}"
    );
    assert_eq!(
        client.run(&["SESSION", &session, "2", "INCR", "counter"]),
        Value::Int(12)
    );
    assert_eq!(
        client.run(&["GET", "counter"]),
        Value::Bulk(bytes::Bytes::from_static(b"12"))
    );
    let ttl = client.int(&["PTTL", "counter"]);
    assert!((3_000_000..=3_600_000).contains(&ttl), "PTTL {ttl}");
    let Value::Error(stale) = client.run(&["SESSION", &session, "1", "INCR", "counter"]) else {
        panic!("a stale sequence number was applied");
    };
    assert!(stale.contains("stale"), "{stale}");

    cluster.restart(leader);
    cluster.wait_converged(Duration::from_secs(20));
}

#[test]
fn bank_total_is_unchanged_by_concurrent_transfers() {
    let cluster = Cluster::start(3, "bank", &[]);
    cluster.wait_leader(Duration::from_secs(10));
    let mut admin = AppClient::new(&cluster, AppKind::Bank);
    const ACCOUNTS: usize = 8;
    for account in 0..ACCOUNTS {
        assert_eq!(
            admin.run(&["BANK.OPEN", &format!("acct-{account}"), "1000"]),
            Value::ok()
        );
    }
    let expected_total = Value::Array(vec![
        Value::Int(1000 * ACCOUNTS as i64),
        Value::Int(ACCOUNTS as i64),
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let mut client = AppClient::new(&cluster, AppKind::Bank);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let (mut done, mut refused) = (0u64, 0u64);
                let mut state = worker as u64 * 7919 + 1;
                while !stop.load(Ordering::Relaxed) {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let from = (state >> 33) as usize % ACCOUNTS;
                    let to = (from + 1 + (state >> 45) as usize % (ACCOUNTS - 1)) % ACCOUNTS;
                    let amount = (state >> 20) % 400 + 1;
                    let reply = client.run(&[
                        "BANK.TRANSFER",
                        &format!("acct-{from}"),
                        &format!("acct-{to}"),
                        &amount.to_string(),
                    ]);
                    match reply {
                        Value::Simple(_) => done += 1,
                        Value::Error(message) if message.contains("insufficient") => refused += 1,
                        other => panic!("transfer answered {other:?}"),
                    }
                }
                (done, refused)
            })
        })
        .collect();
    let deadline = Instant::now() + bank_test_duration();
    while Instant::now() < deadline {
        assert_eq!(admin.run(&["BANK.TOTAL"]), expected_total);
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let mut transfers = 0;
    for worker in workers {
        let (done, _refused) = worker.join().expect("worker");
        transfers += done;
    }
    assert!(transfers > 0, "no transfer went through");
    assert_eq!(admin.run(&["BANK.TOTAL"]), expected_total);
    let sum: i64 = (0..ACCOUNTS)
        .map(|account| admin.int(&["BANK.BALANCE", &format!("acct-{account}")]))
        .sum();
    assert_eq!(sum, 1000 * ACCOUNTS as i64);
    cluster.wait_converged(Duration::from_secs(20));
}

#[test]
fn lock_tokens_increase_across_owners_and_a_leader_change() {
    let mut cluster = Cluster::start(3, "lock", &[]);
    let leader = cluster.wait_leader(Duration::from_secs(10));
    let mut client = AppClient::new(&cluster, AppKind::Lock);
    let first = client.int(&["LOCK.ACQUIRE", "job", "alice", "60000"]);
    let Value::Error(held) = client.run(&["LOCK.ACQUIRE", "job", "bob", "1000"]) else {
        panic!("bob got a held lock");
    };
    assert!(held.starts_with("LOCKED"), "{held}");
    assert_eq!(
        client.int(&["LOCK.ACQUIRE", "job", "alice", "300"]),
        first,
        "renewal keeps the token"
    );
    let mut tokens = vec![first];

    cluster.kill9(leader);
    // Alice's 300 ms lease runs out on the log clock of the new leader: bob gets a larger token.
    let deadline = Instant::now() + Duration::from_secs(20);
    let bob = loop {
        // Re-acquiring by the same owner only renews, so a retry after an unknown outcome
        // (the connection to the killed leader broke) is safe.
        let acquired = client.try_run(&["LOCK.ACQUIRE", "job", "bob", "60000"], true);
        match acquired.expect("acquire at the new leader") {
            Value::Int(token) => break token,
            Value::Error(message) if message.starts_with("LOCKED") => {
                assert!(Instant::now() < deadline, "alice's lease never ended");
                std::thread::sleep(Duration::from_millis(50));
            }
            other => panic!("acquire answered {other:?}"),
        }
    };
    tokens.push(bob);
    let Value::Array(owner) = client.run(&["LOCK.OWNER", "job"]) else {
        panic!("no owner after bob acquired");
    };
    assert_eq!(owner[0], Value::Bulk(bytes::Bytes::from_static(b"bob")));
    assert_eq!(owner[1], Value::Int(bob));
    assert_eq!(client.int(&["LOCK.RELEASE", "job", "alice"]), 0);
    assert_eq!(client.int(&["LOCK.RELEASE", "job", "bob"]), 1);
    assert_eq!(client.run(&["LOCK.OWNER", "job"]), Value::Nil);
    cluster.restart(leader);
    for owner in ["carol", "alice", "bob"] {
        tokens.push(client.int(&["LOCK.ACQUIRE", "job", owner, "60000"]));
        assert_eq!(client.int(&["LOCK.RELEASE", "job", owner]), 1);
    }
    assert!(
        tokens.windows(2).all(|pair| pair[0] < pair[1]),
        "tokens not strictly increasing: {tokens:?}"
    );
    cluster.wait_converged(Duration::from_secs(20));
}
