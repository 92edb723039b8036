//! The kv load generator (`--mode kv`): one thread per client connection, each sending RESP
//! `SET`/`GET` commands to the leader with up to `depth` commands in flight (pipelining).
//!
//! Owns the measurement of the client round trip of each command (from writing it to reading
//! its reply: for a SET, committed by a quorum, durable and applied; for a GET, a linearizable
//! read in the server's read mode) per command kind and combined, and the accounting of every
//! reply that is not a success: `-NOTLEADER` makes the thread follow the redirect (or look for
//! the leader), and every other error reply is counted and its text kept ([`ErrorCounts`]),
//! never dropped. Counts include the warm-up; latencies only the measured window.
//!
//! The socket is non-blocking and driven by `poll(2)`: the thread writes what the socket takes
//! and reads every reply that has arrived in the same loop, so neither side can stall the other
//! however deep the pipeline or large the values. Replies come back in request order (RESP), so
//! the commands in flight are a FIFO queue. Loops (closed, open at `--rate`) and the warm-up
//! follow the log load ([`super::load`]).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::keys::{Op, Workload};
use super::load::{
    on_client_threads, refill_at, schedule, Dial, Ended, LoadPlan, Tally, CLIENT_TIMEOUT, PAYLOAD,
};
use crate::interrupt::Interrupt;
use crate::report::latency_histogram_ns;
use crate::resp::encode;
use crate::resp::reply::{Reply, ReplyParser, LINE_BYTES_MAX};

/// Bytes read from the socket at a time (the read buffer grows only for a larger reply).
const READ_BYTES: usize = 256 << 10;

/// Longest wait in `poll(2)`, so the window's end and Ctrl-C are noticed promptly.
const POLL_MS_MAX: u64 = 10;

/// Distinct error texts kept (the rest are counted in [`ErrorCounts::other`]).
const ERROR_TEXTS_MAX: usize = 8;

/// Longest error text kept, in bytes.
const ERROR_TEXT_BYTES_MAX: usize = 200;

/// What every kv load thread shares.
#[derive(Clone, Debug)]
pub struct KvPlan {
    /// Clients, depth, value bytes (`entry_bytes`), loop and window, as for the log load
    /// (`batch` is 1: RESP has no batch command; pipelining is the batching).
    pub load: LoadPlan,
    /// Keys and the GET/SET mix.
    pub workload: Workload,
}

/// One command kind's figures.
#[derive(Clone, Debug)]
pub struct OpTally {
    /// Round trip of every successful reply in the window, nanoseconds.
    pub latency_ns: Histogram<u64>,
    /// Successful replies in the window.
    pub done: u64,
    /// Commands sent, warm-up included.
    pub sent: u64,
    /// Error replies (other than `-NOTLEADER`), warm-up included.
    pub failed: u64,
    /// In flight on a connection that was given up (outcome unknown).
    pub abandoned: u64,
}

impl OpTally {
    fn new() -> OpTally {
        OpTally {
            latency_ns: latency_histogram_ns(),
            done: 0,
            sent: 0,
            failed: 0,
            abandoned: 0,
        }
    }

    fn merge(&mut self, other: &OpTally) {
        self.latency_ns
            .add(&other.latency_ns)
            .expect("same histogram bounds");
        self.done += other.done;
        self.sent += other.sent;
        self.failed += other.failed;
        self.abandoned += other.abandoned;
    }
}

/// Error replies by text: the first [`ERROR_TEXTS_MAX`] distinct texts with their counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ErrorCounts {
    /// Every error reply other than `-NOTLEADER`.
    pub total: u64,
    /// Distinct texts (the first [`ERROR_TEXT_BYTES_MAX`] bytes), in order of first sight.
    pub texts: Vec<ErrorText>,
    /// Error replies whose text was not kept (more distinct texts than are kept).
    pub other: u64,
}

/// One distinct error text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ErrorText {
    /// The reply's text, without the `-`.
    pub text: String,
    /// How many replies had it.
    pub count: u64,
}

impl ErrorCounts {
    /// Counts one error reply `text` (allocating only for a text not seen before).
    pub fn record(&mut self, text: &[u8]) {
        self.total += 1;
        let text = String::from_utf8_lossy(&text[..text.len().min(ERROR_TEXT_BYTES_MAX)]);
        if let Some(known) = self.texts.iter_mut().find(|known| known.text == text) {
            known.count += 1;
        } else if self.texts.len() < ERROR_TEXTS_MAX {
            self.texts.push(ErrorText {
                text: text.into_owned(),
                count: 1,
            });
        } else {
            self.other += 1;
        }
    }

    /// Adds `other`'s counts (texts beyond the limit go to `other`).
    pub fn merge(&mut self, other: &ErrorCounts) {
        let total = self.total + other.total;
        for text in &other.texts {
            if let Some(known) = self.texts.iter_mut().find(|known| known.text == text.text) {
                known.count += text.count;
            } else if self.texts.len() < ERROR_TEXTS_MAX {
                self.texts.push(text.clone());
            } else {
                self.other += text.count;
            }
        }
        self.other += other.other;
        self.total = total;
    }
}

/// What one thread (or, merged, all of them) measured.
#[derive(Clone, Debug)]
pub struct KvTally {
    /// Every command kind together: throughput, round trip, the per-second series and the
    /// connection-level counts (not-leader replies, reconnects, why threads stopped).
    pub all: Tally,
    /// SET commands.
    pub set: OpTally,
    /// GET commands.
    pub get: OpTally,
    /// GETs in the window answered nil (the key was not set yet).
    pub get_misses: u64,
    /// Error replies.
    pub errors: ErrorCounts,
}

impl KvTally {
    /// An empty tally for client thread `thread` (`None`: a total that threads merge into).
    pub fn new(thread: Option<usize>) -> KvTally {
        KvTally {
            all: Tally::new(thread),
            set: OpTally::new(),
            get: OpTally::new(),
            get_misses: 0,
            errors: ErrorCounts::default(),
        }
    }

    /// Adds `other`'s counts and samples to this one.
    pub fn merge(&mut self, other: &KvTally) {
        self.all.merge(&other.all);
        self.set.merge(&other.set);
        self.get.merge(&other.get);
        self.get_misses += other.get_misses;
        self.errors.merge(&other.errors);
    }

    fn op(&mut self, op: Op) -> &mut OpTally {
        match op {
            Op::Set => &mut self.set,
            Op::Get => &mut self.get,
        }
    }

    /// Records a successful reply to `op` received at `now`, sent at `since`.
    fn succeeded(&mut self, plan: &LoadPlan, op: Op, since: Instant, now: Instant) {
        if now < plan.measure_start || now >= plan.measure_end {
            return;
        }
        self.all.record(plan, since, now, 1);
        let nanos = u64::try_from(now.saturating_duration_since(since).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        let tally = self.op(op);
        tally.latency_ns.saturating_record(nanos);
        tally.done += 1;
    }
}

/// Runs `plan.load.clients` threads against the leader at `leader` until the window ends (or
/// `interrupt` is set), and returns their merged tally.
pub fn run(plan: &KvPlan, leader: SocketAddr, interrupt: &Interrupt) -> KvTally {
    let tallies = on_client_threads(plan.load.clients, "kv-client", plan, |plan, index| {
        let mut tally = drive(plan, index, leader, interrupt);
        tally.all.finish(&plan.load);
        tally
    });
    let mut total = KvTally::new(None);
    for tally in tallies {
        match tally {
            Some(tally) => total.merge(&tally),
            None => total
                .all
                .errors
                .push("a client thread panicked".to_string()),
        }
    }
    total.all.sent = total.set.sent + total.get.sent;
    total.all.failed = total.set.failed + total.get.failed;
    total.all.abandoned = total.set.abandoned + total.get.abandoned;
    total
}

/// One client thread (its caller adds its last second to the series: [`Tally::finish`]).
fn drive(plan: &KvPlan, index: usize, leader: SocketAddr, interrupt: &Interrupt) -> KvTally {
    let mut tally = KvTally::new(Some(index));
    let load = &plan.load;
    let (interval, next_intended) = schedule(load, index);
    let mut session = Session {
        load,
        chooser: plan.workload.chooser(index),
        value: &PAYLOAD[..load.entry_bytes],
        pending: VecDeque::with_capacity(load.depth),
        interval,
        next_intended,
    };
    // The buffers live as long as the thread: reconnecting reuses them.
    let mut wire = Wire {
        out: Vec::with_capacity(load.depth * (64 + load.entry_bytes)),
        out_at: 0,
        input: vec![0; READ_BYTES],
        start: 0,
        end: 0,
        bulk_bytes_max: load.entry_bytes.max(LINE_BYTES_MAX),
        parser: ReplyParser::new(load.entry_bytes.max(LINE_BYTES_MAX)),
    };
    let mut dial = Dial::new(leader);
    loop {
        let Some(addr) = dial.next_addr(load, index, &mut tally.all, interrupt) else {
            return tally;
        };
        let ended = match connect(addr) {
            Ok(stream) => {
                wire.reset();
                session.run(&stream, &mut wire, &mut tally, interrupt)
            }
            Err(_) => {
                std::thread::sleep(Duration::from_millis(50));
                Ended::Reconnect(None)
            }
        };
        if !matches!(ended, Ended::Done) {
            for (op, _) in session.pending.drain(..) {
                tally.op(op).abandoned += 1;
            }
        }
        session.pending.clear();
        match ended {
            Ended::Done => return tally,
            Ended::Reconnect(next) => dial.addr = next,
            Ended::Fatal(error) => {
                tally.all.errors.push(format!("client {index}: {error}"));
                return tally;
            }
        }
        if Instant::now() >= load.measure_end || interrupt.is_set() {
            return tally;
        }
    }
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    Ok(stream)
}

/// A connection's buffers: commands not yet written, bytes read but not yet parsed.
struct Wire {
    out: Vec<u8>,
    /// Bytes of `out` already written.
    out_at: usize,
    input: Vec<u8>,
    /// `input[start..end]` is unparsed.
    start: usize,
    end: usize,
    /// The longest value a reply may carry (the parser's limit).
    bulk_bytes_max: usize,
    parser: ReplyParser,
}

impl Wire {
    /// Empties the buffers for a new connection (keeping their memory).
    fn reset(&mut self) {
        self.out.clear();
        self.out_at = 0;
        self.start = 0;
        self.end = 0;
        self.parser = ReplyParser::new(self.bulk_bytes_max);
    }

    /// Writes what the socket takes; `Ok(true)` if anything was written.
    fn write(&mut self, mut stream: &TcpStream) -> io::Result<bool> {
        let mut wrote = false;
        while self.out_at < self.out.len() {
            match stream.write(&self.out[self.out_at..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out_at += n;
                    wrote = true;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        if self.out_at == self.out.len() {
            self.out.clear();
            self.out_at = 0;
        }
        Ok(wrote)
    }

    /// Reads what has arrived (once: the caller parses, then comes back); `Ok(false)` if
    /// nothing had.
    fn read(&mut self, mut stream: &TcpStream) -> io::Result<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.input.len() {
            if self.start > 0 {
                // Move the partial reply to the front.
                self.input.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                // One reply larger than the buffer: a large value (bounded by the parser), or
                // an array, which a SET or GET never gets.
                let grown = self.input.len() * 2;
                if grown > READ_BYTES + 2 * (self.bulk_bytes_max + LINE_BYTES_MAX) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("a reply of more than {} bytes", self.input.len()),
                    ));
                }
                self.input.resize(grown, 0);
            }
        }
        loop {
            match stream.read(&mut self.input[self.end..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }
}

/// The state of one thread's commands across reconnections.
struct Session<'a> {
    load: &'a LoadPlan,
    chooser: super::keys::Chooser,
    value: &'static [u8],
    /// Commands in flight, oldest first, with the instant their latency counts from.
    pending: VecDeque<(Op, Instant)>,
    /// Open loop: time between this thread's intended sends.
    interval: Option<Duration>,
    /// Open loop: the next intended send time.
    next_intended: Instant,
}

impl Session<'_> {
    fn run(
        &mut self,
        stream: &TcpStream,
        wire: &mut Wire,
        tally: &mut KvTally,
        interrupt: &Interrupt,
    ) -> Ended {
        let depth = self.load.depth;
        let refill_at = refill_at(depth);
        let mut last_reply = Instant::now();
        loop {
            let now = Instant::now();
            if now >= self.load.measure_end || interrupt.is_set() {
                return Ended::Done;
            }
            if self.pending.is_empty() {
                // The reply timeout runs only while something is in flight.
                last_reply = now;
            }
            match self.interval {
                None => {
                    if self.pending.len() <= refill_at {
                        while self.pending.len() < depth {
                            self.queue(wire, tally, now);
                        }
                    }
                }
                Some(interval) => {
                    while self.next_intended <= now && self.pending.len() < depth {
                        let intended = self.next_intended;
                        self.queue(wire, tally, intended);
                        self.next_intended += interval;
                    }
                }
            }
            let wrote = match wire.write(stream) {
                Ok(wrote) => wrote,
                Err(_) => return Ended::Reconnect(None),
            };
            let read = match wire.read(stream) {
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                    return Ended::Fatal(error.to_string())
                }
                Err(_) => return Ended::Reconnect(None),
            };
            if read {
                last_reply = Instant::now();
                if let Some(ended) = self.replies(wire, tally) {
                    return ended;
                }
            }
            if wrote || read {
                continue;
            }
            if !self.pending.is_empty() && last_reply.elapsed() > CLIENT_TIMEOUT {
                return Ended::Reconnect(None);
            }
            let mut wait = Duration::from_millis(POLL_MS_MAX);
            if self.interval.is_some() {
                wait = wait.min(self.next_intended.saturating_duration_since(Instant::now()));
            }
            if let Err(error) = wait_ready(stream, wire.out_at < wire.out.len(), wait) {
                return Ended::Fatal(format!("poll: {error}"));
            }
        }
    }

    /// Encodes the next command into the write buffer; its latency counts from `since`.
    fn queue(&mut self, wire: &mut Wire, tally: &mut KvTally, since: Instant) {
        let (op, key) = self.chooser.next();
        match op {
            Op::Set => encode::set(&mut wire.out, key, self.value),
            Op::Get => encode::get(&mut wire.out, key),
        }
        self.pending.push_back((op, since));
        tally.op(op).sent += 1;
    }

    /// Handles every complete reply in the read buffer; `Some` ends the connection.
    fn replies(&mut self, wire: &mut Wire, tally: &mut KvTally) -> Option<Ended> {
        loop {
            let parsed = match wire.parser.next(&wire.input[wire.start..wire.end]) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return None,
                Err(error) => return Some(Ended::Fatal(error.to_string())),
            };
            let (reply, len) = parsed;
            let Some((op, since)) = self.pending.pop_front() else {
                return Some(Ended::Fatal(format!(
                    "a reply with no command in flight: {reply:?}"
                )));
            };
            let now = Instant::now();
            match (op, reply) {
                (Op::Set, Reply::Simple(b"OK")) | (Op::Get, Reply::Bulk(_)) => {
                    tally.succeeded(self.load, op, since, now);
                }
                (Op::Get, Reply::Nil) => {
                    if now >= self.load.measure_start && now < self.load.measure_end {
                        tally.get_misses += 1;
                    }
                    tally.succeeded(self.load, op, since, now);
                }
                (_, Reply::Error(text)) if text.starts_with(b"NOTLEADER ") => {
                    tally.all.not_leader += 1;
                    let leader = text[b"NOTLEADER ".len()..]
                        .split(|&byte| byte == b' ')
                        .next()
                        .and_then(|addr| std::str::from_utf8(addr).ok())
                        .and_then(|addr| addr.parse().ok());
                    // This command was not applied; the rest in flight are abandoned.
                    return Some(Ended::Reconnect(leader));
                }
                (_, Reply::Error(text)) => {
                    tally.op(op).failed += 1;
                    tally.errors.record(text);
                }
                (_, other) => {
                    tally.op(op).failed += 1;
                    let text = format!(
                        "unexpected reply to {op:?}: {}",
                        crate::resp::reply::shown(&other)
                    );
                    tally.errors.record(text.as_bytes());
                }
            }
            wire.start += len;
        }
    }
}

/// Keys set by one `MSET` of the preload.
const PRELOAD_KEYS_PER_COMMAND: u64 = 1000;

/// Sets every key of `workload` once, to a `value_bytes` value, with `MSET`s to the leader at
/// `leader`, so that GETs read values from the start instead of nils. One command in flight:
/// a thousand keys per command keep it short (100,000 keys: 100 commits).
pub fn preload(
    leader: SocketAddr,
    workload: &Workload,
    value_bytes: usize,
    interrupt: &Interrupt,
) -> Result<(), String> {
    let failed = |what: String| format!("preloading {} keys: {what}", workload.keys());
    let mut stream =
        TcpStream::connect_timeout(&leader, CLIENT_TIMEOUT).map_err(|e| failed(e.to_string()))?;
    stream
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .map_err(|e| failed(e.to_string()))?;
    let mut names = workload.chooser(0);
    let value = &PAYLOAD[..value_bytes];
    let mut out = Vec::new();
    let mut input = vec![0; READ_BYTES];
    let mut first = 0;
    while first < workload.keys() {
        if interrupt.is_set() {
            return Err(failed("interrupted".to_string()));
        }
        let end = (first + PRELOAD_KEYS_PER_COMMAND).min(workload.keys());
        out.clear();
        encode::mset_header(&mut out, (end - first) as usize);
        for index in first..end {
            encode::bulk(&mut out, names.key(index));
            encode::bulk(&mut out, value);
        }
        stream.write_all(&out).map_err(|e| failed(e.to_string()))?;
        let mut parser = ReplyParser::new(LINE_BYTES_MAX);
        let mut filled = 0;
        loop {
            if let Some((reply, _)) = parser
                .next(&input[..filled])
                .map_err(|e| failed(e.to_string()))?
            {
                match reply {
                    Reply::Simple(b"OK") => break,
                    other => {
                        return Err(failed(format!(
                            "MSET of keys {first}..{end} answered {:?}",
                            crate::resp::reply::shown(&other)
                        )))
                    }
                }
            }
            if filled == input.len() {
                return Err(failed("an MSET reply too long".to_string()));
            }
            match stream.read(&mut input[filled..]) {
                Ok(0) => return Err(failed("the leader closed the connection".to_string())),
                Ok(n) => filled += n,
                Err(error) => return Err(failed(error.to_string())),
            }
        }
        first = end;
    }
    Ok(())
}

/// Waits up to `wait` for `stream` to be readable (or writable, if `writing`).
fn wait_ready(stream: &TcpStream, writing: bool, wait: Duration) -> io::Result<()> {
    let mut events = libc::POLLIN;
    if writing {
        events |= libc::POLLOUT;
    }
    let mut poll_fd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events,
        revents: 0,
    };
    let timeout_ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `poll_fd` is one valid pollfd for an open socket, and the count says one.
    let ready = unsafe { libc::poll(&mut poll_fd, 1, timeout_ms) };
    if ready < 0 {
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_texts_are_counted_and_bounded() {
        let mut errors = ErrorCounts::default();
        errors.record(b"ERR one");
        errors.record(b"ERR one");
        for index in 0..ERROR_TEXTS_MAX {
            errors.record(format!("ERR other {index}").as_bytes());
        }
        assert_eq!(errors.total, 2 + ERROR_TEXTS_MAX as u64);
        assert_eq!(errors.texts.len(), ERROR_TEXTS_MAX);
        assert_eq!(errors.texts[0].count, 2);
        assert_eq!(errors.other, 1);
        let mut merged = ErrorCounts::default();
        merged.record(b"ERR one");
        merged.merge(&errors);
        assert_eq!(merged.total, 3 + ERROR_TEXTS_MAX as u64);
        assert_eq!(merged.texts[0].count, 3);
        assert_eq!(merged.other, 1);
        let long = vec![b'x'; 1000];
        errors.record(&long);
        assert_eq!(errors.other, 2);
        let mut fresh = ErrorCounts::default();
        fresh.record(&long);
        assert_eq!(fresh.texts[0].text.len(), ERROR_TEXT_BYTES_MAX);
    }
}
