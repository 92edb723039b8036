//! Clients and scenarios for the kv, bank and lock apps, written once and run over both client
//! protocols: [`NativeRunner`] routes RESP-style commands with the app's front end on the test
//! side and carries them over the native protocol; [`RedisRunner`] sends them as RESP with the
//! `redis` crate. Both follow the leader (redirects, dead nodes) like a real client would.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lockstep::client::ClusterClient;
use lockstep::resp::{Frontend, RouteContext, Routed, Value};
use lockstep_server::apps::AppKind;

use super::{Cluster, CLIENT_TIMEOUT};

/// How long a call keeps following the leader before it fails.
const RETRY_FOR: Duration = Duration::from_secs(20);

/// A client that runs RESP-style commands (`["SET", "k", "v"]`) against a cluster.
pub trait AppRunner: Send {
    /// Runs one command; its reply, or the client error. Writes are retried only when they
    /// surely did not apply, unless `retry_unknown` (for commands that are safe to repeat:
    /// reads, session commands, renewals).
    fn try_run(&mut self, words: &[&str], retry_unknown: bool) -> Result<Value, String>;

    /// Runs one command; panics on a client error.
    fn run(&mut self, words: &[&str]) -> Value {
        self.try_run(words, false)
            .unwrap_or_else(|err| panic!("{words:?} failed: {err}"))
    }

    /// The integer a command answered; panics on anything else.
    fn int(&mut self, words: &[&str]) -> i64 {
        match self.run(words) {
            Value::Int(n) => n,
            other => panic!("{words:?} answered {other:?}, not an integer"),
        }
    }
}

/// Makes a new client of a cluster.
pub type Connect = dyn Fn(&Cluster) -> Box<dyn AppRunner>;

/// The native protocol, with the app's front end routing on this side exactly as the node
/// routes a RESP request.
pub struct NativeRunner {
    frontend: Arc<dyn Frontend>,
    client: ClusterClient,
}

impl NativeRunner {
    /// A client of `cluster`, which runs `app`.
    pub fn new(cluster: &Cluster, app: AppKind) -> NativeRunner {
        NativeRunner {
            frontend: app.frontend().expect("the app has a RESP command set"),
            client: ClusterClient::new(cluster.client_addrs(), cluster.cluster_id, CLIENT_TIMEOUT)
                .with_retry_for(RETRY_FOR),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

impl AppRunner for NativeRunner {
    fn try_run(&mut self, words: &[&str], retry_unknown: bool) -> Result<Value, String> {
        let args: Vec<Bytes> = words
            .iter()
            .map(|word| Bytes::copy_from_slice(word.as_bytes()))
            .collect();
        let context = RouteContext { now_ms: now_ms() };
        let applied = match self.frontend.route(&args, &context) {
            Routed::Reply(value) => return Ok(value),
            Routed::Propose(command) if retry_unknown => self.client.propose_idempotent(&command),
            Routed::Propose(command) => self.client.propose(&command),
            Routed::Read(query) => self.client.read(&query),
        };
        let applied = applied.map_err(|err| err.to_string())?;
        Ok(self.frontend.reply(&applied.result))
    }
}

/// RESP over TCP with the `redis` crate: follows `-NOTLEADER <addr> <id>` redirects and moves
/// on to the next member when a node does not answer.
pub struct RedisRunner {
    addrs: Vec<SocketAddr>,
    current: usize,
    connection: Option<redis::Connection>,
}

impl RedisRunner {
    /// A client of the members `addrs`, trying `first` first.
    pub fn new(addrs: Vec<SocketAddr>, first: usize) -> RedisRunner {
        RedisRunner {
            addrs,
            current: first,
            connection: None,
        }
    }

    /// A client of `cluster`, starting at node 1.
    pub fn of(cluster: &Cluster) -> RedisRunner {
        RedisRunner::new(cluster.client_addrs(), 0)
    }

    fn connect(&mut self) -> Result<&mut redis::Connection, String> {
        if self.connection.is_none() {
            let url = format!("redis://{}/", self.addrs[self.current]);
            let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
            let connection = client
                .get_connection_with_timeout(CLIENT_TIMEOUT)
                .map_err(|e| e.to_string())?;
            connection
                .set_read_timeout(Some(CLIENT_TIMEOUT))
                .map_err(|e| e.to_string())?;
            self.connection = Some(connection);
        }
        Ok(self.connection.as_mut().expect("just connected"))
    }

    fn advance(&mut self) {
        self.connection = None;
        self.current = (self.current + 1) % self.addrs.len();
    }

    /// Sends one command once, to the member it is connected to.
    pub fn send(&mut self, words: &[&str]) -> redis::RedisResult<redis::Value> {
        let connection = self
            .connect()
            .map_err(|e| redis::RedisError::from((redis::ErrorKind::IoError, "connect", e)))?;
        let mut command = redis::cmd(words[0]);
        for word in &words[1..] {
            command.arg(*word);
        }
        command.query(connection)
    }
}

/// A `redis` crate value as the RESP value the node sent.
pub fn from_redis(value: redis::Value) -> Value {
    match value {
        redis::Value::Nil => Value::Nil,
        redis::Value::Int(n) => Value::Int(n),
        redis::Value::BulkString(bytes) => Value::Bulk(Bytes::from(bytes)),
        redis::Value::Array(items) => Value::Array(items.into_iter().map(from_redis).collect()),
        redis::Value::SimpleString(text) => Value::Simple(text),
        redis::Value::Okay => Value::ok(),
        other => panic!("a RESP2 server sent {other:?}"),
    }
}

impl AppRunner for RedisRunner {
    fn try_run(&mut self, words: &[&str], retry_unknown: bool) -> Result<Value, String> {
        let deadline = Instant::now() + RETRY_FOR;
        loop {
            let connected_before = self.connection.is_some();
            let error = match self.send(words) {
                Ok(value) => return Ok(from_redis(value)),
                Err(error) => error,
            };
            match error.code() {
                Some("NOTLEADER") => {
                    let leader = error.detail().and_then(|detail| detail.split(' ').next());
                    let position = leader
                        .and_then(|addr| addr.parse::<SocketAddr>().ok())
                        .and_then(|addr| self.addrs.iter().position(|known| *known == addr));
                    match position {
                        Some(position) if position != self.current => {
                            self.connection = None;
                            self.current = position;
                        }
                        _ => {
                            self.advance();
                            std::thread::sleep(Duration::from_millis(25));
                        }
                    }
                }
                Some(code) => {
                    return Ok(Value::Error(format!(
                        "{code} {}",
                        error.detail().unwrap_or("")
                    )))
                }
                None => {
                    // The connection failed or broke. Connecting surely applied nothing; a
                    // broken connection after the command went out may have.
                    let sent = connected_before || self.connection.is_some();
                    self.advance();
                    if sent && !retry_unknown {
                        return Err(format!("{error} (outcome unknown)"));
                    }
                    std::thread::sleep(Duration::from_millis(25));
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{words:?}: no leader answered within {RETRY_FOR:?}"
                ));
            }
        }
    }
}

/// How long the bank scenario keeps transferring (override with LOCKSTEP_BANK_TEST_MS).
fn bank_test_duration() -> Duration {
    let ms = std::env::var("LOCKSTEP_BANK_TEST_MS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(1_500);
    Duration::from_millis(ms)
}

/// A kv cluster that snapshots every few entries: `SESSION <id> 2 INCR` is sent and the leader
/// is killed (-9) at once; the retry with the same session and seq, at the new leader, moves the
/// counter by one in total. The killed node then restarts (from its snapshot), the next leader
/// is killed, and the session still answers the retry with the remembered reply.
pub fn kv_session_incr_once_across_a_leader_kill(connect: &Connect) {
    let mut cluster = Cluster::start(3, "kv", &["--snapshot-entries", "8"]);
    let leader = cluster.wait_leader(Duration::from_secs(10));
    let mut client = connect(&cluster);
    assert_eq!(
        client.run(&["SET", "counter", "10", "EX", "3600"]),
        Value::ok()
    );
    let session = client.int(&["SESSION.OPEN"]).to_string();
    assert_eq!(
        client.int(&["SESSION", &session, "1", "INCR", "counter"]),
        11
    );

    let mut doomed = connect(&cluster);
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
        Value::Bulk(Bytes::from_static(b"12"))
    );
    let ttl = client.int(&["PTTL", "counter"]);
    assert!((3_000_000..=3_600_000).contains(&ttl), "PTTL {ttl}");
    let Value::Error(stale) = client.run(&["SESSION", &session, "1", "INCR", "counter"]) else {
        panic!("a stale sequence number was applied");
    };
    assert!(stale.contains("stale"), "{stale}");
    for n in 0..20 {
        assert_eq!(
            client.run(&["SET", &format!("filler-{n}"), "x"]),
            Value::ok()
        );
    }
    cluster.restart(leader);
    cluster.wait_converged(Duration::from_secs(20));
    let second_leader = cluster.wait_leader(Duration::from_secs(10));
    cluster.kill9(second_leader);
    let retry = client
        .try_run(&["SESSION", &session, "2", "INCR", "counter"], true)
        .expect("retry at the third leader");
    assert_eq!(retry, Value::Int(12), "the session table did not survive");
    assert_eq!(
        client.int(&["SESSION", &session, "3", "INCR", "counter"]),
        13
    );
    cluster.restart(second_leader);
    cluster.wait_converged(Duration::from_secs(20));
}

/// A bank cluster: four threads transfer at random between eight accounts while the total is
/// read again and again; it never changes, and the balances add up to it at the end.
pub fn bank_total_unchanged_by_concurrent_transfers(connect: &Connect) {
    const ACCOUNTS: usize = 8;
    let cluster = Cluster::start(3, "bank", &[]);
    cluster.wait_leader(Duration::from_secs(10));
    let mut admin = connect(&cluster);
    for account in 0..ACCOUNTS {
        let name = format!("acct-{account}");
        assert_eq!(admin.run(&["BANK.OPEN", &name, "1000"]), Value::ok());
    }
    let expected_total = Value::Array(vec![
        Value::Int(1000 * ACCOUNTS as i64),
        Value::Int(ACCOUNTS as i64),
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4u64)
        .map(|worker| {
            let mut client = connect(&cluster);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut done = 0u64;
                let mut state = worker * 7919 + 1;
                while !stop.load(Ordering::Relaxed) {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let from = (state >> 33) as usize % ACCOUNTS;
                    let to = (from + 1 + (state >> 45) as usize % (ACCOUNTS - 1)) % ACCOUNTS;
                    let amount = ((state >> 20) % 400 + 1).to_string();
                    let (from, to) = (format!("acct-{from}"), format!("acct-{to}"));
                    match client.run(&["BANK.TRANSFER", &from, &to, &amount]) {
                        Value::Simple(_) => done += 1,
                        Value::Error(message) if message.contains("insufficient") => {}
                        other => panic!("transfer answered {other:?}"),
                    }
                }
                done
            })
        })
        .collect();
    let deadline = Instant::now() + bank_test_duration();
    while Instant::now() < deadline {
        assert_eq!(admin.run(&["BANK.TOTAL"]), expected_total);
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let transfers: u64 = workers
        .into_iter()
        .map(|worker| worker.join().expect("worker"))
        .sum();
    assert!(transfers > 0, "no transfer went through");
    assert_eq!(admin.run(&["BANK.TOTAL"]), expected_total);
    let sum: i64 = (0..ACCOUNTS)
        .map(|account| admin.int(&["BANK.BALANCE", &format!("acct-{account}")]))
        .sum();
    assert_eq!(sum, 1000 * ACCOUNTS as i64);
    cluster.wait_converged(Duration::from_secs(20));
}

/// A lock cluster: tokens granted to alice, then (after her lease ends on the new leader's log
/// clock, the old leader killed -9) bob, then three more owners, strictly increase.
pub fn lock_tokens_increase_across_owners_and_a_leader_change(connect: &Connect) {
    let mut cluster = Cluster::start(3, "lock", &[]);
    let leader = cluster.wait_leader(Duration::from_secs(10));
    let mut client = connect(&cluster);
    let first = client.int(&["LOCK.ACQUIRE", "job", "alice", "60000"]);
    let Value::Error(held) = client.run(&["LOCK.ACQUIRE", "job", "bob", "1000"]) else {
        panic!("bob got a held lock");
    };
    assert!(held.starts_with("LOCKED"), "{held}");
    let renewed = client.int(&["LOCK.ACQUIRE", "job", "alice", "300"]);
    assert_eq!(renewed, first, "a renewal keeps the token");
    let mut tokens = vec![first];

    cluster.kill9(leader);
    let deadline = Instant::now() + Duration::from_secs(20);
    let bob = loop {
        // Re-acquiring by the same owner only renews, so a retry after an unknown outcome (the
        // connection to the killed leader broke) is safe.
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
    assert_eq!(owner[0], Value::Bulk(Bytes::from_static(b"bob")));
    assert_eq!(owner[1], Value::Int(bob));
    assert_eq!(client.int(&["LOCK.RELEASE", "job", "alice"]), 0);
    assert_eq!(client.int(&["LOCK.RELEASE", "job", "bob"]), 1);
    assert_eq!(client.run(&["LOCK.OWNER", "job"]), Value::Nil);
    cluster.restart(leader);
    for owner in ["carol", "alice", "bob"] {
        let acquired = client.try_run(&["LOCK.ACQUIRE", "job", owner, "60000"], true);
        let Ok(Value::Int(token)) = acquired else {
            panic!("{owner} could not acquire the free lock: {acquired:?}");
        };
        tokens.push(token);
        assert_eq!(
            client.try_run(&["LOCK.RELEASE", "job", owner], true),
            Ok(Value::Int(1))
        );
    }
    assert!(
        tokens.windows(2).all(|pair| pair[0] < pair[1]),
        "tokens not strictly increasing: {tokens:?}"
    );
    cluster.wait_converged(Duration::from_secs(20));
}
