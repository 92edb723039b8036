//! The load generator: one thread per client connection, each proposing entries to the leader
//! with up to `depth` requests in flight.
//!
//! Owns the measurement of commit latency (from sending a proposal to receiving its `Applied`
//! reply, i.e. committed by a quorum, durable, and applied) and its bookkeeping per thread
//! ([`Tally`]), merged once at the end; the hot loop shares only the per-second series
//! ([`Series`]), once per second per thread.
//!
//! - Closed loop (default): a thread keeps `depth` proposals in flight; once a quarter of them
//!   are answered it sends as many new ones in one flush (one write per refill, not per entry).
//! - Open loop (`rate`): each thread has a schedule of intended send times at `rate / clients`
//!   per second; latency is measured from the *intended* time, so when the cluster (or the
//!   `depth` limit) holds a request back, the wait is in the figure (no coordinated omission).
//!
//! Only replies that arrive inside the measured window count. A `NotLeader` reply or a lost
//! connection makes the thread find the leader again and reconnect; what was in flight then is
//! counted as abandoned (its outcome is unknown to the bench).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use lockstep::client::{Client, ClientError};
use lockstep::net::{ClientReply, ClientRequest};

use super::args::ENTRY_BYTES_MAX;
use super::in_flight::InFlight;
use super::series::{SecondTally, Series};
use super::status::{connect, find_leader, HANDSHAKE_REQ};
use crate::interrupt::Interrupt;
use crate::report::latency_histogram_ns;

/// How long a client waits for the connection, and then for any one reply.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client keeps looking for a leader after losing one before it gives up.
const LEADER_SEARCH: Duration = Duration::from_secs(10);

/// The bytes every proposal carries (a prefix of this many): zeros in static memory, so a
/// request's command is a `Bytes` that costs no allocation and no reference count.
pub static PAYLOAD: [u8; ENTRY_BYTES_MAX] = [0; ENTRY_BYTES_MAX];

/// How far (in requests) the oldest unanswered proposal of a connection may lag behind the
/// newest, in multiples of `depth`, before the bench gives up on the connection.
const LAG_DEPTHS_MAX: usize = 64;

/// What every load thread shares.
#[derive(Clone, Debug)]
pub struct LoadPlan {
    /// Client connections (threads).
    pub clients: usize,
    /// Entries in flight per connection.
    pub depth: usize,
    /// Entries per request (1: `Propose`, more: `ProposeBatch`).
    pub batch: usize,
    /// Bytes per entry.
    pub entry_bytes: usize,
    /// Total offered entries per second (open loop), or `None` (closed loop).
    pub rate_per_sec: Option<f64>,
    /// The cluster id to present.
    pub cluster_id: u64,
    /// Every member's client address (to find a new leader).
    pub members: Vec<SocketAddr>,
    /// Where load starts (warm-up included).
    pub load_start: Instant,
    /// Where the measured window starts.
    pub measure_start: Instant,
    /// Where it ends (load stops).
    pub measure_end: Instant,
    /// The per-second series the threads fill (one slot per second of the window, one
    /// position per client thread).
    pub series: Arc<Series>,
}

impl LoadPlan {
    /// Whole seconds in the measured window (the last one may be partial).
    pub fn window_seconds(&self) -> usize {
        let window = self.measure_end - self.measure_start;
        window.as_secs() as usize + usize::from(window.subsec_nanos() > 0)
    }
}

/// What one thread (or, merged, all of them) measured.
#[derive(Clone, Debug)]
pub struct Tally {
    /// Commit latency of every entry committed in the window, nanoseconds.
    pub latency_ns: Histogram<u64>,
    /// Entries committed in the window.
    pub committed: u64,
    /// Entries sent (warm-up included).
    pub sent: u64,
    /// `NotLeader` replies.
    pub not_leader: u64,
    /// Entries answered by `Error` replies (their outcome is unknown).
    pub failed: u64,
    /// Entries in flight on a connection that was given up (outcome unknown).
    pub abandoned: u64,
    /// Connections opened after the first.
    pub reconnects: u64,
    /// Why threads stopped before the end of the window, if any did.
    pub errors: Vec<String>,
    /// The client thread recording into this tally (`None` for a merged total).
    thread: Option<usize>,
    /// The second of the window being recorded, not yet added to the plan's series.
    current: Option<(usize, SecondTally)>,
}

impl Tally {
    /// An empty tally for client thread `thread` (`None`: a total that threads merge into).
    pub fn new(thread: Option<usize>) -> Tally {
        Tally {
            latency_ns: latency_histogram_ns(),
            committed: 0,
            sent: 0,
            not_leader: 0,
            failed: 0,
            abandoned: 0,
            reconnects: 0,
            errors: Vec::new(),
            thread,
            current: None,
        }
    }

    /// Adds `other`'s counts and samples to this one (`other` must be finished).
    pub fn merge(&mut self, other: &Tally) {
        assert!(
            other.current.is_none(),
            "thread {:?}'s tally merged before it finished",
            other.thread
        );
        self.latency_ns
            .add(&other.latency_ns)
            .expect("same histogram bounds");
        self.committed += other.committed;
        self.sent += other.sent;
        self.not_leader += other.not_leader;
        self.failed += other.failed;
        self.abandoned += other.abandoned;
        self.reconnects += other.reconnects;
        self.errors.extend(other.errors.iter().cloned());
    }

    /// Records one reply received at `now` for a request of `entries` entries whose latency
    /// counts from `since` (every entry of it is one sample).
    pub fn record(&mut self, plan: &LoadPlan, since: Instant, now: Instant, entries: u64) {
        if now < plan.measure_start || now >= plan.measure_end {
            return;
        }
        let thread = self.thread.expect("only a thread's tally records");
        let latency = now.saturating_duration_since(since);
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.latency_ns.saturating_record_n(nanos, entries);
        let second = (now - plan.measure_start).as_secs() as usize;
        match &mut self.current {
            Some((at, tally)) if *at != second => {
                plan.series.flush(thread, Some((*at, tally)), second);
                tally.clear();
                *at = second;
            }
            Some(_) => {}
            None => {
                plan.series.flush(thread, None, second);
                self.current = Some((second, SecondTally::new()));
            }
        }
        let (_, slot) = self.current.as_mut().expect("a current second");
        slot.committed += entries;
        slot.latency_us
            .saturating_record_n((nanos / 1000).max(1), entries);
        self.committed += entries;
    }

    /// Adds the second in progress to the plan's series and tells it this thread is done.
    pub fn finish(&mut self, plan: &LoadPlan) {
        let thread = self.thread.expect("only a thread's tally finishes");
        let current = self.current.take();
        plan.series.flush(
            thread,
            current.as_ref().map(|(at, tally)| (*at, tally)),
            usize::MAX,
        );
    }
}

/// Runs `plan.clients` threads against the leader at `leader` until the window ends (or
/// `interrupt` is set), and returns their merged tally.
pub fn run(plan: &LoadPlan, leader: SocketAddr, interrupt: &Interrupt) -> Tally {
    run_threads(plan, "client", |plan, index| {
        drive(plan, index, leader, interrupt)
    })
}

/// Runs `drive(plan, index)` on `plan.clients` threads named `name-index`, adds each thread's
/// last second to the plan's series ([`Tally::finish`]) and returns their merged tally.
pub fn run_threads(
    plan: &LoadPlan,
    name: &str,
    drive: impl Fn(&LoadPlan, usize) -> Tally + Sync,
) -> Tally {
    let mut total = Tally::new(None);
    for tally in on_client_threads(plan.clients, name, plan, |plan, index| {
        let mut tally = drive(plan, index);
        tally.finish(plan);
        tally
    }) {
        match tally {
            Some(tally) => total.merge(&tally),
            None => total.errors.push(format!("a {name} thread panicked")),
        }
    }
    total
}

/// In a closed loop with `depth` requests in flight: refill once this many or fewer are left
/// (once a quarter were answered), so that one refill sends several requests at once.
pub fn refill_at(depth: usize) -> usize {
    depth - (depth / 4).max(1)
}

/// Runs `drive(&shared, index)` on `clients` threads named `name-index` and returns what each
/// returned, in index order (`None` for a thread that panicked).
pub fn on_client_threads<S, T>(
    clients: usize,
    name: &str,
    shared: S,
    drive: impl Fn(&S, usize) -> T + Sync,
) -> Vec<Option<T>>
where
    S: Sync,
    T: Send,
{
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..clients)
            .map(|index| {
                let (shared, drive) = (&shared, &drive);
                std::thread::Builder::new()
                    .name(format!("{name}-{index}"))
                    .spawn_scoped(scope, move || drive(shared, index))
                    .expect("spawning a client thread")
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| thread.join().ok())
            .collect()
    })
}

/// The open-loop schedule of client thread `index`: the time between its intended sends
/// (`None` in a closed loop) and its first intended send, staggered evenly over one interval
/// across the threads.
pub fn schedule(plan: &LoadPlan, index: usize) -> (Option<Duration>, Instant) {
    let interval = plan
        .rate_per_sec
        .map(|rate| Duration::from_secs_f64(plan.clients as f64 / rate));
    let first = match interval {
        Some(interval) => plan.load_start + interval.mul_f64(index as f64 / plan.clients as f64),
        None => plan.load_start,
    };
    (interval, first)
}

/// Where a client thread connects next, across its reconnections.
pub struct Dial {
    /// The address of the next connection when known (else the leader is looked up).
    pub addr: Option<SocketAddr>,
    /// No connection has been opened yet: the next one is not a reconnect.
    first: bool,
}

impl Dial {
    /// The first connection goes to `leader`.
    pub fn new(leader: SocketAddr) -> Dial {
        Dial {
            addr: Some(leader),
            first: true,
        }
    }

    /// The address for client thread `index`'s next connection: [`Dial::addr`] when known,
    /// else the leader found by asking the members. Every connection after the first counts
    /// in `tally.reconnects`. `None` when no leader is found in time: the reason is in
    /// `tally.errors` and the thread stops.
    pub fn next_addr(
        &mut self,
        plan: &LoadPlan,
        index: usize,
        tally: &mut Tally,
        interrupt: &Interrupt,
    ) -> Option<SocketAddr> {
        let addr = match self.addr {
            Some(addr) => addr,
            None => {
                let deadline = Instant::now() + LEADER_SEARCH;
                match find_leader(&plan.members, plan.cluster_id, deadline, interrupt) {
                    Ok(found) => found.addr,
                    Err(error) => {
                        tally.errors.push(format!("client {index}: {error}"));
                        return None;
                    }
                }
            }
        };
        if !self.first {
            tally.reconnects += 1;
        }
        self.first = false;
        Some(addr)
    }
}

/// Why a connection's loop ended.
pub enum Ended {
    /// The window is over or the bench was interrupted.
    Done,
    /// Reconnect, to this address if known (else find the leader).
    Reconnect(Option<SocketAddr>),
    /// Give up: the message says why.
    Fatal(String),
}

/// One client thread (its caller adds its last second to the series: [`Tally::finish`]).
fn drive(plan: &LoadPlan, index: usize, leader: SocketAddr, interrupt: &Interrupt) -> Tally {
    let mut tally = Tally::new(Some(index));
    let payload = Bytes::from_static(&PAYLOAD[..plan.entry_bytes]);
    let (interval, next_intended) = schedule(plan, index);
    let mut connection = Connection {
        plan,
        payload: payload.clone(),
        commands: vec![payload; plan.batch],
        next_req: 1,
        pending: InFlight::with_capacity(2 * plan.depth),
        interval,
        next_intended,
    };
    let mut dial = Dial::new(leader);
    loop {
        let Some(addr) = dial.next_addr(plan, index, &mut tally, interrupt) else {
            return tally;
        };
        let ended = match connect(addr, plan.cluster_id, CLIENT_TIMEOUT) {
            Ok(mut client) => connection.run(&mut client, &mut tally, interrupt),
            Err(error) => {
                std::thread::sleep(Duration::from_millis(50));
                match error {
                    ClientError::Io(_) => Ended::Reconnect(None),
                    other => Ended::Fatal(format!("connecting to {addr}: {other:?}")),
                }
            }
        };
        if !matches!(ended, Ended::Done) {
            tally.abandoned += (connection.pending.len() * plan.batch) as u64;
        }
        connection.pending.clear();
        match ended {
            Ended::Done => return tally,
            Ended::Reconnect(next) => dial.addr = next,
            Ended::Fatal(error) => {
                tally.errors.push(format!("client {index}: {error}"));
                return tally;
            }
        }
        if Instant::now() >= plan.measure_end || interrupt.is_set() {
            return tally;
        }
    }
}

/// The state of one thread's proposals across reconnections.
struct Connection<'a> {
    plan: &'a LoadPlan,
    payload: Bytes,
    /// A batch request's commands (`plan.batch` copies of `payload`, sharing its bytes).
    commands: Vec<Bytes>,
    next_req: u64,
    /// Request id -> the instant its latency counts from.
    pending: InFlight,
    /// Open loop: time between this thread's intended sends.
    interval: Option<Duration>,
    /// Open loop: the next intended send time.
    next_intended: Instant,
}

impl Connection<'_> {
    fn run(&mut self, client: &mut Client, tally: &mut Tally, interrupt: &Interrupt) -> Ended {
        let batch = self.plan.batch;
        // In requests: enough of them to keep `plan.depth` entries in flight.
        let depth = self.plan.depth.div_ceil(batch);
        let refill_at = refill_at(depth);
        loop {
            let now = Instant::now();
            if now >= self.plan.measure_end || interrupt.is_set() {
                return Ended::Done;
            }
            let sent = match self.interval {
                None => {
                    let mut sent = false;
                    if self.pending.len() <= refill_at {
                        while self.pending.len() < depth {
                            if let Err(error) = self.send(client, tally, now) {
                                return error;
                            }
                            sent = true;
                        }
                    }
                    sent
                }
                Some(interval) => {
                    // A request leaves once its last entry is due; its latency counts from
                    // when its first one was (the wait to fill a batch is in the figures).
                    let mut sent = false;
                    let fill = interval * (batch as u32 - 1);
                    while self.next_intended + fill <= now && self.pending.len() < depth {
                        let intended = self.next_intended;
                        if let Err(error) = self.send(client, tally, intended) {
                            return error;
                        }
                        self.next_intended += interval * batch as u32;
                        sent = true;
                    }
                    sent
                }
            };
            if sent {
                if let Err(error) = client.flush() {
                    return lost(error);
                }
            }
            if self.pending.is_empty() {
                // Open loop, nothing in flight: wait for the next intended send.
                let wait = self.next_intended.saturating_duration_since(Instant::now());
                std::thread::sleep(wait.min(Duration::from_millis(10)));
                continue;
            }
            if self.pending.span() > LAG_DEPTHS_MAX * depth {
                return Ended::Fatal(format!(
                    "a proposal stayed unanswered while {} later ones were sent",
                    self.pending.span()
                ));
            }
            match client.recv() {
                Ok(ClientReply::Applied { req, .. }) if batch == 1 => {
                    match self.pending.remove(req) {
                        Some(since) => tally.record(self.plan, since, Instant::now(), 1),
                        None => return Ended::Fatal(format!("a reply to unknown request {req}")),
                    }
                }
                Ok(ClientReply::AppliedBatch { req, results, .. }) if results.len() == batch => {
                    match self.pending.remove(req) {
                        Some(since) => tally.record(self.plan, since, Instant::now(), batch as u64),
                        None => return Ended::Fatal(format!("a reply to unknown request {req}")),
                    }
                }
                Ok(ClientReply::Error { req, message }) => {
                    if self.pending.remove(req).is_none() {
                        return Ended::Fatal(format!(
                            "an error for unknown request {req}: {message}"
                        ));
                    }
                    tally.failed += batch as u64;
                }
                Ok(ClientReply::Ok { req: HANDSHAKE_REQ }) => {}
                Ok(ClientReply::NotLeader { leader_addr, .. }) => {
                    tally.not_leader += 1;
                    return Ended::Reconnect(leader_addr.and_then(|addr| addr.parse().ok()));
                }
                Ok(other) => return Ended::Fatal(format!("unexpected reply {other:?}")),
                Err(error) => return lost(error),
            }
        }
    }

    fn send(
        &mut self,
        client: &mut Client,
        tally: &mut Tally,
        since: Instant,
    ) -> Result<(), Ended> {
        let req = self.next_req;
        self.next_req += 1;
        let request = if self.commands.len() == 1 {
            ClientRequest::Propose {
                req,
                command: self.payload.clone(),
            }
        } else {
            ClientRequest::ProposeBatch {
                req,
                commands: self.commands.clone(),
            }
        };
        client.send(&request).map_err(lost)?;
        self.pending.insert(req, since);
        tally.sent += self.commands.len() as u64;
        Ok(())
    }
}

/// What a client error means for the connection.
fn lost(error: ClientError) -> Ended {
    match error {
        ClientError::Io(_) => Ended::Reconnect(None),
        ClientError::NotLeader { leader_addr, .. } => {
            Ended::Reconnect(leader_addr.and_then(|addr| addr.parse().ok()))
        }
        other => Ended::Fatal(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(window: Duration) -> LoadPlan {
        let load_start = Instant::now();
        let mut plan = LoadPlan {
            clients: 2,
            depth: 4,
            batch: 1,
            entry_bytes: 16,
            rate_per_sec: None,
            cluster_id: 7,
            members: Vec::new(),
            load_start,
            measure_start: load_start + Duration::from_secs(1),
            measure_end: load_start + Duration::from_secs(1) + window,
            series: Arc::new(Series::new(0, 2)),
        };
        plan.series = Arc::new(Series::new(plan.window_seconds(), plan.clients));
        plan
    }

    #[test]
    fn windows_count_partial_seconds() {
        assert_eq!(plan(Duration::from_secs(3)).window_seconds(), 3);
        assert_eq!(plan(Duration::from_millis(2500)).window_seconds(), 3);
        assert_eq!(plan(Duration::from_millis(500)).window_seconds(), 1);
    }

    #[test]
    fn only_replies_inside_the_window_are_recorded() {
        let plan = plan(Duration::from_secs(2));
        let mut tally = Tally::new(Some(0));
        let us = Duration::from_micros;
        // Warm-up: ignored.
        tally.record(&plan, plan.load_start, plan.load_start + us(100), 1);
        // Second 0 and second 1.
        tally.record(&plan, plan.measure_start, plan.measure_start + us(200), 1);
        let late = plan.measure_start + Duration::from_millis(1500);
        tally.record(&plan, late - us(300), late, 1);
        // After the end: ignored.
        tally.record(&plan, plan.measure_end, plan.measure_end + us(1), 1);
        tally.finish(&plan);
        Tally::new(Some(1)).finish(&plan);
        assert_eq!(tally.committed, 2);
        assert_eq!(tally.latency_ns.len(), 2);
        let counts = plan.series.counts();
        assert_eq!((counts[0].committed, counts[1].committed), (1, 1));
        assert!((199..=201).contains(&counts[0].p99_us), "{counts:?}");
        assert!((299..=301).contains(&counts[1].p99_us), "{counts:?}");
    }

    #[test]
    fn tallies_merge_counts_samples_and_seconds() {
        let plan = plan(Duration::from_secs(2));
        let mut a = Tally::new(Some(0));
        let mut b = Tally::new(Some(1));
        for micros in 1..=100u64 {
            a.record(
                &plan,
                plan.measure_start,
                plan.measure_start + Duration::from_micros(micros),
                1,
            );
        }
        for micros in 901..=1000u64 {
            let at = plan.measure_start + Duration::from_millis(1000);
            b.record(&plan, at - Duration::from_micros(micros), at, 1);
        }
        a.finish(&plan);
        b.finish(&plan);
        a.not_leader = 1;
        b.failed = 2;
        b.abandoned = 3;
        b.errors.push("client 1: gone".to_string());
        let mut total = Tally::new(None);
        total.merge(&a);
        total.merge(&b);
        assert_eq!(total.committed, 200);
        assert_eq!(total.latency_ns.len(), 200);
        let counts = plan.series.counts();
        assert_eq!((counts[0].committed, counts[1].committed), (100, 100));
        // The merged median sits between the two groups; the max is b's.
        let p50_us = total.latency_ns.value_at_quantile(0.5) / 1000;
        assert!((99..=101).contains(&p50_us), "{p50_us}");
        assert!((999..=1001).contains(&(total.latency_ns.max() / 1000)));
        assert_eq!((total.not_leader, total.failed, total.abandoned), (1, 2, 3));
        assert_eq!(total.errors, vec!["client 1: gone".to_string()]);
    }

    #[test]
    fn a_dial_counts_reconnects_and_stops_its_thread_when_no_leader_is_found() {
        let plan = plan(Duration::from_secs(1));
        let interrupt = Interrupt::default();
        let mut tally = Tally::new(Some(1));
        let leader: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let redirect: SocketAddr = "127.0.0.1:7002".parse().unwrap();
        let mut dial = Dial::new(leader);
        assert_eq!(
            dial.next_addr(&plan, 1, &mut tally, &interrupt),
            Some(leader)
        );
        assert_eq!(tally.reconnects, 0, "the first connection is no reconnect");
        dial.addr = Some(redirect);
        assert_eq!(
            dial.next_addr(&plan, 1, &mut tally, &interrupt),
            Some(redirect)
        );
        assert_eq!(tally.reconnects, 1);
        // No address known and the search for the leader ends without one.
        dial.addr = None;
        interrupt.set();
        assert_eq!(dial.next_addr(&plan, 1, &mut tally, &interrupt), None);
        assert_eq!(tally.reconnects, 1, "no connection, no reconnect");
        assert_eq!(
            tally.errors,
            vec!["client 1: interrupted while looking for the leader".to_string()]
        );
    }

    #[test]
    #[should_panic(expected = "before it finished")]
    fn unfinished_tallies_do_not_merge() {
        let plan = plan(Duration::from_secs(1));
        let mut tally = Tally::new(Some(0));
        tally.record(&plan, plan.measure_start, plan.measure_start, 1);
        Tally::new(None).merge(&tally);
    }
}
