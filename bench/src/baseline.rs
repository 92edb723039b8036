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
//! A commit of one proposal needs at least one durable write on a quorum (the follower's sync,
//! after the append reached it) and one round trip between leader and follower; the client's own
//! round trip to the leader comes on top. So `commit p50 / (fsync p50 + RTT p50)` is the
//! yardstick ratio: 1.0 would be "one fsync plus one round trip", everything above it is the
//! engine's own hand-offs (and the client's round trip).

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::Path;
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
}

impl Yardstick {
    /// Measures both probes (the fsync one in `dir`) and relates `commit_us_p50` to them.
    pub fn measure(dir: &Path, commit_us_p50: f64) -> io::Result<Yardstick> {
        let fsync = fsync_samples_us(dir)?;
        let rtt = rtt_samples_us()?;
        let (fsync_us_p50, rtt_us_p50) = (median(&fsync), median(&rtt));
        let floor_us = fsync_us_p50 + rtt_us_p50;
        assert!(floor_us > 0.0, "a yardstick of {floor_us} µs");
        Ok(Yardstick {
            fsync_us_p50: round1(fsync_us_p50),
            fsync_samples: fsync.len(),
            rtt_us_p50: round1(rtt_us_p50),
            rtt_samples: rtt.len(),
            floor_us: round1(floor_us),
            commit_p50_ratio: (commit_us_p50 / floor_us * 100.0).round() / 100.0,
        })
    }

    /// The report line.
    pub fn describe(&self) -> String {
        format!(
            "fdatasync 4 KiB p50 {} µs + loopback RTT p50 {} µs = {} µs; commit p50 = {}x that",
            self.fsync_us_p50, self.rtt_us_p50, self.floor_us, self.commit_p50_ratio
        )
    }
}

/// Times `pwrite` + `fdatasync` of 4 KiB blocks in a zero-filled, synced file in `dir`.
fn fsync_samples_us(dir: &Path) -> io::Result<Vec<f64>> {
    let file = tempfile::Builder::new()
        .prefix("yardstick-fsync")
        .tempfile_in(dir)?;
    let file: &File = file.as_file();
    let zeros = vec![0u8; FSYNC_WRITE_BYTES * FSYNC_FILE_BLOCKS as usize];
    file.write_all_at(&zeros, 0)?;
    file.sync_all()?;
    // Non-zero content, so nothing along the way can recognise the writes as zeros.
    let block: Vec<u8> = (0..FSYNC_WRITE_BYTES)
        .map(|i| (i % 251) as u8 + 1)
        .collect();
    let mut samples = Vec::with_capacity(FSYNC_SAMPLES);
    let start = Instant::now();
    while samples.len() < FSYNC_SAMPLES && start.elapsed() < PROBE_TIME_MAX {
        let offset = (samples.len() as u64 % FSYNC_FILE_BLOCKS) * FSYNC_WRITE_BYTES as u64;
        let began = Instant::now();
        file.write_all_at(&block, offset)?;
        file.sync_data()?;
        samples.push(began.elapsed().as_secs_f64() * 1e6);
    }
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
        let yardstick = Yardstick::measure(dir.path(), 1000.0).unwrap();
        assert!(yardstick.fsync_samples > 0 && yardstick.rtt_samples > 0);
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
}
