//! What a workload must provide to a chaos run: client threads that record a history, a
//! command that proves the cluster serves again, the final reads and checks once the faults
//! healed, and a hash of one replica's local state for the convergence check.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use lockstep::client::{Client, ClusterClient};

use super::cluster::CLUSTER_ID;

/// The client addresses of the cluster's current members, shared by the harness (which
/// replaces them when the `member` nemesis changes the membership) and the workload's clients
/// (which pick a change up between two operations); and the highest log index of a write
/// acknowledged to a client so far, which the `power` nemesis checks stays durable on a
/// majority. Clones share one book.
#[derive(Clone, Debug)]
pub struct AddressBook {
    shared: Arc<BookShared>,
}

#[derive(Debug)]
struct BookShared {
    addrs: RwLock<Vec<SocketAddr>>,
    /// Bumped at every change.
    version: AtomicU64,
    /// Highest log index of a write acknowledged to a client.
    acked: AtomicU64,
}

impl AddressBook {
    /// A book holding `addrs`.
    pub fn new(addrs: Vec<SocketAddr>) -> AddressBook {
        assert!(!addrs.is_empty(), "an address book needs an address");
        AddressBook {
            shared: Arc::new(BookShared {
                addrs: RwLock::new(addrs),
                version: AtomicU64::new(0),
                acked: AtomicU64::new(0),
            }),
        }
    }

    /// Replaces the addresses.
    pub fn set(&self, addrs: Vec<SocketAddr>) {
        assert!(!addrs.is_empty(), "an address book needs an address");
        *self.shared.addrs.write().expect("address book lock") = addrs;
        self.shared.version.fetch_add(1, Ordering::Release);
    }

    /// A client's write was acknowledged at log index `index`.
    pub fn note_acked(&self, index: u64) {
        self.shared.acked.fetch_max(index, Ordering::AcqRel);
    }

    /// The highest log index of a write acknowledged to a client so far.
    pub fn highest_acked(&self) -> u64 {
        self.shared.acked.load(Ordering::Acquire)
    }

    /// The addresses now.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.shared.addrs.read().expect("address book lock").clone()
    }

    /// A cluster client over the addresses now, with `timeout` per request and `retry_for` per
    /// call.
    pub fn cluster_client(&self, timeout: Duration, retry_for: Duration) -> FollowingClient {
        let version = self.shared.version.load(Ordering::Acquire);
        let client =
            ClusterClient::new(self.addrs(), CLUSTER_ID, timeout).with_retry_for(retry_for);
        FollowingClient {
            book: self.clone(),
            version,
            timeout,
            retry_for,
            client,
        }
    }
}

/// A cluster client that follows an [`AddressBook`]: [`FollowingClient::get`] rebuilds it over
/// the new addresses when the book changed since it was built (dropping its connection, which
/// is harmless between operations).
pub struct FollowingClient {
    book: AddressBook,
    version: u64,
    timeout: Duration,
    retry_for: Duration,
    client: ClusterClient,
}

impl FollowingClient {
    /// The client, over the book's current addresses. Call it between operations only.
    pub fn get(&mut self) -> &mut ClusterClient {
        let version = self.book.shared.version.load(Ordering::Acquire);
        if version != self.version {
            *self = self.book.cluster_client(self.timeout, self.retry_for);
        }
        &mut self.client
    }
}

/// The verdict of a workload's checkers.
#[derive(Debug, Default)]
pub struct Checked {
    /// Violations found (the run fails).
    pub failures: Vec<String>,
    /// Keys or objects the checkers could not decide (reported, not failures).
    pub undecided: Vec<String>,
}

/// Counts of a history's operations by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutcomeCounts {
    /// Took effect.
    pub ok: usize,
    /// Surely did not take effect.
    pub fail: usize,
    /// May have taken effect.
    pub unknown: usize,
}

impl OutcomeCounts {
    /// All operations.
    pub fn total(&self) -> usize {
        self.ok + self.fail + self.unknown
    }
}

/// How a recorded operation ended, as the counts see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// Took effect (or was answered, for a read or a refusal).
    Ok,
    /// Surely did not take effect.
    Fail,
    /// May have taken effect.
    Unknown,
}

/// One operation of a workload's history.
pub trait Recorded {
    /// How it ended.
    fn settled(&self) -> Settled;
    /// Its place in the history file: (invocation time, process).
    fn order(&self) -> (u64, u32);
    /// Its line in the history file.
    fn history_line(&self) -> serde_json::Value;
}

/// Counts `ops` by how they ended.
pub fn count_outcomes<'a, T: Recorded + 'a>(ops: impl IntoIterator<Item = &'a T>) -> OutcomeCounts {
    let mut counts = OutcomeCounts::default();
    for op in ops {
        match op.settled() {
            Settled::Ok => counts.ok += 1,
            Settled::Fail => counts.fail += 1,
            Settled::Unknown => counts.unknown += 1,
        }
    }
    counts
}

/// Writes `ops` as the history file of `workload`, in invocation order.
pub fn write_recorded<'a, T: Recorded + 'a>(
    path: &Path,
    seed: u64,
    workload: &str,
    ops: impl IntoIterator<Item = &'a T>,
) -> Result<(), String> {
    let mut ops: Vec<&T> = ops.into_iter().collect();
    ops.sort_by_key(|op| op.order());
    let lines: Vec<serde_json::Value> = ops.iter().map(|op| op.history_line()).collect();
    super::history::write_history(path, seed, workload, &lines)
}

/// A workload of a chaos run, shared by its client threads.
pub trait Workload: Send + Sync {
    /// Prepares the state the clients need (e.g. opens accounts) before they start.
    fn setup(&self, addrs: &[SocketAddr]) -> Result<(), String>;

    /// One client thread's loop, until `stop`.
    fn client(&self, process: u32, seed: u64, stop: &AtomicBool);

    /// A command whose successful proposal shows the cluster serves, changing nothing the
    /// checkers look at.
    fn probe_command(&self) -> Vec<u8>;

    /// After the clients stopped and the faults healed: the final reads through the leader
    /// (as process `final_process`) and the checkers over the whole history.
    fn finish(&self, addrs: &[SocketAddr], final_process: u32) -> Checked;

    /// An order-sensitive hash of the state the workload touched, read locally from the node
    /// `client` is connected to.
    fn state_hash(&self, client: &mut Client) -> Result<u64, String>;

    /// The history's operations by outcome.
    fn counts(&self) -> OutcomeCounts;

    /// Writes the history file.
    fn write_history(&self, path: &Path, seed: u64) -> Result<(), String>;
}

/// Folds `bytes` into an FNV-1a hash, with a separator after them.
pub fn fold_hash(hash: &mut u64, bytes: &[u8]) {
    for byte in bytes.iter().chain(&[0xff]) {
        *hash = (*hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
    }
}

/// The FNV-1a starting value.
pub const HASH_START: u64 = 0xcbf2_9ce4_8422_2325;
