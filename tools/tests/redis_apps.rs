//! The apps through a real Redis client library (the `redis` crate) against a real 3-node
//! cluster of `lockstep serve` processes: every kv command, pipelining, follower redirects, and
//! the kv/bank/lock scenarios of `common/apps.rs` (exactly-once INCR across a leader kill -9,
//! the bank total under concurrent transfers, lock fencing tokens across a leader change).

mod common;

use std::time::Duration;

use common::apps::{self, from_redis, AppRunner, RedisRunner};
use common::Cluster;
use lockstep::resp::Value;
use redis::RedisResult;

fn redis_client(cluster: &Cluster) -> Box<dyn AppRunner> {
    Box::new(RedisRunner::of(cluster))
}

fn connection(cluster: &Cluster, id: u64) -> redis::Connection {
    let url = format!("redis://{}/", cluster.client_addr(id));
    redis::Client::open(url.as_str())
        .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(5)))
        .unwrap_or_else(|err| panic!("connect to node {id}: {err}"))
}

fn query(connection: &mut redis::Connection, words: &[&str]) -> Value {
    let mut command = redis::cmd(words[0]);
    for word in &words[1..] {
        command.arg(*word);
    }
    let result: RedisResult<redis::Value> = command.query(connection);
    match result {
        Ok(value) => from_redis(value),
        Err(error) => match error.code() {
            Some(code) => Value::Error(format!("{code} {}", error.detail().unwrap_or(""))),
            None => panic!("{words:?}: {error}"),
        },
    }
}

fn bulk(text: &str) -> Value {
    Value::Bulk(bytes::Bytes::copy_from_slice(text.as_bytes()))
}

fn error(text: &str) -> Value {
    Value::Error(text.to_string())
}

#[test]
fn every_kv_command_and_pipelining() {
    let cluster = Cluster::start(3, "kv", &[]);
    let leader = cluster.wait_leader(Duration::from_secs(10));
    let mut con = connection(&cluster, leader);
    let mut run = |words: &[&str]| query(&mut con, words);
    assert_eq!(run(&["GET", "k"]), Value::Nil);
    assert_eq!(run(&["SET", "k", "v"]), Value::ok());
    assert_eq!(run(&["GET", "k"]), bulk("v"));
    assert_eq!(run(&["SET", "k", "w", "NX"]), Value::Nil);
    assert_eq!(run(&["SET", "k", "w", "XX", "EX", "100"]), Value::ok());
    let Value::Int(ttl) = run(&["PTTL", "k"]) else {
        panic!("PTTL is not an integer");
    };
    assert!((90_000..=100_000).contains(&ttl), "PTTL {ttl}");
    assert_eq!(run(&["SET", "short", "v", "PX", "150"]), Value::ok());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        run(&["GET", "short"]),
        Value::Nil,
        "expired by the leader's time"
    );
    assert_eq!(run(&["EXISTS", "short"]), Value::Int(0));
    assert_eq!(run(&["SET", "n", "5"]), Value::ok());
    assert_eq!(run(&["INCR", "n"]), Value::Int(6));
    assert_eq!(run(&["INCRBY", "n", "10"]), Value::Int(16));
    assert_eq!(run(&["DECR", "n"]), Value::Int(15));
    assert_eq!(run(&["DECRBY", "n", "20"]), Value::Int(-5));
    assert_eq!(
        run(&["INCR", "k"]),
        error("ERR value is not an integer or out of range")
    );
    assert_eq!(run(&["APPEND", "k", "xyz"]), Value::Int(4));
    assert_eq!(run(&["STRLEN", "k"]), Value::Int(4));
    assert_eq!(run(&["MSET", "a", "1", "b", "2"]), Value::ok());
    assert_eq!(
        run(&["MGET", "a", "missing", "b"]),
        Value::Array(vec![bulk("1"), Value::Nil, bulk("2")])
    );
    assert_eq!(run(&["EXISTS", "a", "b", "missing"]), Value::Int(2));
    assert_eq!(run(&["DBSIZE"]), Value::Int(4));
    assert_eq!(run(&["DEL", "a", "b", "missing"]), Value::Int(2));
    assert_eq!(run(&["DBSIZE"]), Value::Int(2));
    assert_eq!(
        run(&["GET"]),
        error("ERR wrong number of arguments for 'get' command")
    );
    assert_eq!(run(&["FOO", "bar"]), error("ERR unknown command 'FOO'"));
    assert_eq!(
        run(&["SET", "k", "v", "EX", "0"]),
        error("ERR invalid expire time in 'set' command")
    );

    // A pipeline of 200 writes and reads: replies come back in order.
    let mut pipe = redis::pipe();
    for n in 0..100 {
        pipe.cmd("SET").arg(format!("p{n}")).arg(n);
        pipe.cmd("GET").arg(format!("p{n}"));
    }
    let replies: Vec<redis::Value> = pipe.query(&mut con).expect("pipeline");
    assert_eq!(replies.len(), 200);
    for (n, pair) in replies.chunks(2).enumerate() {
        assert_eq!(from_redis(pair[0].clone()), Value::ok());
        assert_eq!(from_redis(pair[1].clone()), bulk(&n.to_string()));
    }
    cluster.wait_converged(Duration::from_secs(20));
}

#[test]
fn followers_redirect_writes_and_reads_to_the_leader() {
    let cluster = Cluster::start(3, "kv", &[]);
    let leader = cluster.wait_leader(Duration::from_secs(10));
    let follower = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let mut con = connection(&cluster, follower);
    let expected = format!("NOTLEADER {} {leader}", cluster.client_addr(leader));
    assert_eq!(query(&mut con, &["SET", "k", "v"]), error(&expected));
    assert_eq!(query(&mut con, &["GET", "k"]), error(&expected));
    // Errors found without consensus are answered anywhere.
    assert_eq!(
        query(&mut con, &["NOPE"]),
        error("ERR unknown command 'NOPE'")
    );
    // A client following the redirect gets its write applied.
    let mut client = RedisRunner::new(cluster.client_addrs(), follower as usize - 1);
    assert_eq!(client.run(&["SET", "k", "v"]), Value::ok());
    assert_eq!(
        query(&mut connection(&cluster, leader), &["GET", "k"]),
        bulk("v")
    );
}

#[test]
fn kv_session_incr_applies_once_across_a_leader_kill() {
    apps::kv_session_incr_once_across_a_leader_kill(&redis_client);
}

#[test]
fn bank_total_is_unchanged_by_concurrent_transfers() {
    apps::bank_total_unchanged_by_concurrent_transfers(&redis_client);
}

#[test]
fn lock_tokens_increase_across_owners_and_a_leader_change() {
    apps::lock_tokens_increase_across_owners_and_a_leader_change(&redis_client);
}
