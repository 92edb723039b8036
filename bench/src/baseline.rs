//! The latency yardstick of a cluster run: what "one fsync plus one round trip" costs on this
//! machine at the moment of the run, so a single-proposal commit latency can be read against
//! the floor the hardware sets instead of against a fixed number.
//!
//! Measured in the same run, right after the load stops (the cluster is idle then, but its
//! processes still run, as during the measurement):
//! - **fdatasync**: `pwrite` of 4 KiB into a file in the run's data directory (same
//!   filesystem as the nodes' logs), into blocks zero-filled and synced beforehand (as the log's
//!   segments are), then `fdatasync`; the p50 of up to [`FSYNC_SAMPLES`] such pairs.
//! - **loopback round trip**: [`RTT_MESSAGE_BYTES`] bytes sent over a TCP_NODELAY loopback
//!   connection to a thread that echoes them back; both ends block in `read`, so every sample
//!   pays the wake-ups a blocked pipeline stage pays. The p50 of up to [`RTT_SAMPLES`].
//!
//! - **quorum fdatasync** (local clusters only): the same write + `fdatasync`, started at once
//!   by one thread per node, each on its own file, as the nodes of a local cluster all sync the
//!   same entry at the same moment on the one disk they share; per round, the time until a
//!   majority of them finished (what a commit waits for). On a disk that serves syncs one at a
//!   time this is well above a lone fsync.
//!
//! A commit of one proposal needs at least one durable write on a quorum (the follower's sync,
//! after the append reached it) and one round trip between leader and follower; the client's own
//! round trip to the leader comes on top. So `commit p50 / (fsync p50 + RTT p50)` is the
//! yardstick ratio: 1.0 would be "one fsync plus one round trip", everything above it is the
//! engine's own hand-offs (and the client's round trip). For a local cluster the report also
//! relates the commit to `quorum fsync p50 + RTT p50`, the floor that the nodes sharing one disk
//! really have.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Bytes per durable write of the fsync probe.
pub const FSYNC_WRITE_BYTES: usize = 4096;
/// Most `pwrite` + `fdatasync` pairs timed.
pub const FSYNC_SAMPLES: usize = 200;
/// Bytes of the message echoed by the round-trip probe.
pub const RTT_MESSAGE_BYTES: usize = 64;
/// Most round trips timed.
pub const RTT_SAMPLES: usize = 2000;
/// Each probe stops after this long even with fewer samples (a slow disk must not stall the
/// report).
const PROBE_TIME_MAX: Duration = Duration::from_secs(2);
/// Blocks of the probe file, written cyclically (like recycled log segments).
const FSYNC_FILE_BLOCKS: u64 = 256;
/// Round trips made before timing starts (connection set-up, first page faults).
const RTT_WARMUP: usize = 50;

/// The yardstick and the run's commit p50 expressed against it.
#[derive(Clone, Debug, Serialize)]
pub struct Yardstick {
    /// Median of `pwrite` 4 KiB + `fdatasync` in the data directory, µs.
    pub fsync_us_p50: f64,
    /// How many fsync samples were taken.
    pub fsync_samples: usize,
    /// Median loopback TCP round trip of a 64-byte message between two blocking threads, µs.
    pub rtt_us_p50: f64,
    /// How many round-trip samples were taken.
    pub rtt_samples: usize,
    /// `fsync_us_p50 + rtt_us_p50`: "one fsync plus one round trip", µs.
    pub floor_us: f64,
    /// The run's commit latency p50 divided by `floor_us`.
    pub commit_p50_ratio: f64,
    /// Local clusters: how long a majority of `nodes` simultaneous `pwrite` + `fdatasync`s (one
    /// file each, this disk) took, p50 over rounds, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quorum_fsync_us_p50: Option<f64>,
    /// `quorum_fsync_us_p50 + rtt_us_p50`: the disk floor of a local cluster, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_floor_us: Option<f64>,
    /// The run's commit latency p50 divided by `cluster_floor_us`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_p50_cluster_ratio: Option<f64>,
}

impl Yardstick {
    /// Measures the probes (the fsync ones in `dir`) and relates `commit_us_p50` to them;
    /// `local_nodes` is the size of a local cluster sharing this disk (`None`: a remote one, no
    /// quorum probe).
    pub fn measure(
        dir: &Path,
        commit_us_p50: f64,
        local_nodes: Option<usize>,
    ) -> io::Result<Yardstick> {
        let fsync = fsync_samples_us(dir)?;
        let rtt = rtt_samples_us()?;
        let (fsync_us_p50, rtt_us_p50) = (median(&fsync), median(&rtt));
        let floor_us = fsync_us_p50 + rtt_us_p50;
        assert!(floor_us > 0.0, "a yardstick of {floor_us} µs");
        let quorum_fsync_us_p50 = match local_nodes {
            Some(nodes) if nodes > 1 => Some(median(&quorum_fsync_samples_us(dir, nodes)?)),
            _ => None,
        };
        let cluster_floor_us = quorum_fsync_us_p50.map(|quorum| quorum + rtt_us_p50);
        Ok(Yardstick {
            fsync_us_p50: round1(fsync_us_p50),
            fsync_samples: fsync.len(),
            rtt_us_p50: round1(rtt_us_p50),
            rtt_samples: rtt.len(),
            floor_us: round1(floor_us),
            commit_p50_ratio: ratio(commit_us_p50, floor_us),
            quorum_fsync_us_p50: quorum_fsync_us_p50.map(round1),
            cluster_floor_us: cluster_floor_us.map(round1),
            commit_p50_cluster_ratio: cluster_floor_us.map(|floor| ratio(commit_us_p50, floor)),
        })
    }

    /// The report line.
    pub fn describe(&self) -> String {
        let mut line = format!(
            "fdatasync 4 KiB p50 {} µs + loopback RTT p50 {} µs = {} µs; commit p50 = {}x that",
            self.fsync_us_p50, self.rtt_us_p50, self.floor_us, self.commit_p50_ratio
        );
        if let (Some(quorum), Some(floor), Some(ratio)) = (
            self.quorum_fsync_us_p50,
            self.cluster_floor_us,
            self.commit_p50_cluster_ratio,
        ) {
            line.push_str(&format!(
                "; with the nodes' syncs at once on this disk (quorum fdatasync p50 {quorum} µs) \
                 {floor} µs, commit p50 = {ratio}x that"
            ));
        }
        line
    }
}

/// `value / floor`, two decimals.
fn ratio(value: f64, floor: f64) -> f64 {
    (value / floor * 100.0).round() / 100.0
}

/// A zero-filled, synced probe file in `dir` (removed when dropped).
fn probe_file(dir: &Path) -> io::Result<tempfile::NamedTempFile> {
    let file = tempfile::Builder::new()
        .prefix("yardstick-fsync")
        .tempfile_in(dir)?;
    let zeros = vec![0u8; FSYNC_WRITE_BYTES * FSYNC_FILE_BLOCKS as usize];
    file.as_file().write_all_at(&zeros, 0)?;
    file.as_file().sync_all()?;
    Ok(file)
}

/// Times one `pwrite` of a 4 KiB block (sample number `n`, cycling over the file) + `fdatasync`.
fn timed_sync(file: &File, n: usize) -> io::Result<f64> {
    // Non-zero content, so nothing along the way can recognise the writes as zeros.
    let block: [u8; FSYNC_WRITE_BYTES] = std::array::from_fn(|i| (i % 251) as u8 + 1);
    let offset = (n as u64 % FSYNC_FILE_BLOCKS) * FSYNC_WRITE_BYTES as u64;
    let began = Instant::now();
    file.write_all_at(&block, offset)?;
    file.sync_data()?;
    Ok(began.elapsed().as_secs_f64() * 1e6)
}

/// Times `pwrite` + `fdatasync` of 4 KiB blocks in a zero-filled, synced file in `dir`.
fn fsync_samples_us(dir: &Path) -> io::Result<Vec<f64>> {
    let file = probe_file(dir)?;
    let mut samples = Vec::with_capacity(FSYNC_SAMPLES);
    let start = Instant::now();
    while samples.len() < FSYNC_SAMPLES && start.elapsed() < PROBE_TIME_MAX {
        samples.push(timed_sync(file.as_file(), samples.len())?);
    }
    Ok(samples)
}

/// Rounds of `nodes` simultaneous timed syncs (one thread and file each, started together at a
/// barrier); each round's sample is the time of its majority-th fastest sync.
fn quorum_fsync_samples_us(dir: &Path, nodes: usize) -> io::Result<Vec<f64>> {
    assert!(nodes > 1, "a quorum probe of {nodes} node(s)");
    let files = (0..nodes)
        .map(|_| probe_file(dir))
        .collect::<io::Result<Vec<_>>>()?;
    // The coordinator decides at the barrier whether another round runs, so every thread
    // runs the same number of rounds.
    let barrier = Arc::new(Barrier::new(nodes + 1));
    let go = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let rounds: Vec<io::Result<Vec<f64>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = files
            .iter()
            .map(|file| {
                let (barrier, go) = (barrier.clone(), go.clone());
                scope.spawn(move || -> io::Result<Vec<f64>> {
                    let mut times = Vec::new();
                    loop {
                        barrier.wait();
                        if !go.load(std::sync::atomic::Ordering::Acquire) {
                            return Ok(times);
                        }
                        let time = timed_sync(file.as_file(), times.len());
                        barrier.wait();
                        times.push(time?);
                    }
                })
            })
            .collect();
        let start = Instant::now();
        let mut round = 0;
        loop {
            let more = round < FSYNC_SAMPLES && start.elapsed() < PROBE_TIME_MAX;
            go.store(more, std::sync::atomic::Ordering::Release);
            barrier.wait();
            if !more {
                break;
            }
            barrier.wait();
            round += 1;
        }
        workers
            .into_iter()
            .map(|worker| worker.join().expect("a quorum probe thread panicked"))
            .collect()
    });
    let rounds = rounds.into_iter().collect::<io::Result<Vec<_>>>()?;
    let majority = nodes / 2 + 1;
    let samples = (0..rounds[0].len())
        .map(|round| {
            let mut times: Vec<f64> = rounds.iter().map(|times| times[round]).collect();
            times.sort_by(f64::total_cmp);
            times[majority - 1]
        })
        .collect();
    Ok(samples)
}

/// Times round trips of a small message to an echo thread over loopback TCP.
fn rtt_samples_us() -> io::Result<Vec<f64>> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = listener.local_addr()?;
    let echo = std::thread::Builder::new()
        .name("yardstick-echo".to_string())
        .spawn(move || -> io::Result<()> {
            let (mut stream, _) = listener.accept()?;
            stream.set_nodelay(true)?;
            let mut message = [0u8; RTT_MESSAGE_BYTES];
            // Ends when the client closes its side.
            while stream.read_exact(&mut message).is_ok() {
                stream.write_all(&message)?;
            }
            Ok(())
        })?;
    let mut samples = Vec::with_capacity(RTT_SAMPLES);
    {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        let mut message = [7u8; RTT_MESSAGE_BYTES];
        let start = Instant::now();
        for round in 0.. {
            if samples.len() >= RTT_SAMPLES || start.elapsed() >= PROBE_TIME_MAX {
                break;
            }
            let began = Instant::now();
            stream.write_all(&message)?;
            stream.read_exact(&mut message)?;
            if round >= RTT_WARMUP {
                samples.push(began.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    echo.join()
        .map_err(|_| io::Error::other("the echo thread panicked"))??;
    if samples.is_empty() {
        return Err(io::Error::other("no round trip completed in time"));
    }
    Ok(samples)
}

/// The median of `samples` (the lower middle of an even count); `samples` must not be empty.
fn median(samples: &[f64]) -> f64 {
    assert!(!samples.is_empty(), "the median of no samples");
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[(sorted.len() - 1) / 2]
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_middle_sample() {
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.0);
        assert_eq!(median(&[9.0]), 9.0);
    }

    #[test]
    fn both_probes_measure_and_the_ratio_follows() {
        let dir = tempfile::tempdir().unwrap();
        let yardstick = Yardstick::measure(dir.path(), 1000.0, None).unwrap();
        assert!(yardstick.fsync_samples > 0 && yardstick.rtt_samples > 0);
        assert!(yardstick.quorum_fsync_us_p50.is_none());
        assert!(yardstick.fsync_us_p50 > 0.0 && yardstick.rtt_us_p50 > 0.0);
        let expected = 1000.0 / (yardstick.fsync_us_p50 + yardstick.rtt_us_p50);
        assert!(
            (yardstick.commit_p50_ratio - expected).abs() < 0.05,
            "{yardstick:?}"
        );
        assert!(yardstick.describe().contains("commit p50"));
        // The probe file is gone.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_local_cluster_gets_the_quorum_probe_too() {
        let dir = tempfile::tempdir().unwrap();
        let yardstick = Yardstick::measure(dir.path(), 1000.0, Some(3)).unwrap();
        let quorum = yardstick.quorum_fsync_us_p50.expect("measured");
        assert!(quorum > 0.0, "{yardstick:?}");
        let floor = yardstick.cluster_floor_us.unwrap();
        assert!(
            (floor - (quorum + yardstick.rtt_us_p50)).abs() < 0.2,
            "{yardstick:?}"
        );
        let expected = 1000.0 / floor;
        let ratio = yardstick.commit_p50_cluster_ratio.unwrap();
        assert!((ratio - expected).abs() < 0.05, "{yardstick:?}");
        assert!(yardstick.describe().contains("quorum fdatasync"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
