//! A client for a whole cluster: it keeps one connection to the node it believes leads, follows
//! `NotLeader` redirects, and moves on to the next member when a node is down, until a deadline.
//! A redirect to a client address it was not given (a member added since, say) adds that
//! address to the ones it tries.
//!
//! Retry policy (what makes it safe): a proposal is sent again automatically only when it surely
//! had no effect (a redirect, a refused or failed connect). When a connection breaks after a
//! proposal went out, the outcome is unknown and [`ClusterClient::propose`] returns the error;
//! [`ClusterClient::propose_idempotent`] retries then too, for commands that may apply twice.
//! Reads are always retried.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::net::ClientTls;
use crate::node::{Applied, AppliedBatch};
use crate::raft::MembershipChange;
use crate::types::LogIndex;

use super::{Client, ClientError, Credentials};

/// Pause after a full round of members without success, or when no leader is known.
const BACKOFF: Duration = Duration::from_millis(25);

/// A client that follows the leader across a cluster's members.
pub struct ClusterClient {
    addrs: Vec<SocketAddr>,
    cluster_id: u64,
    timeout: Duration,
    retry_for: Duration,
    /// The member tried next (or connected to).
    current: usize,
    connection: Option<Client>,
    credentials: Option<Credentials>,
    tls: Option<ClientTls>,
}

impl ClusterClient {
    /// A client for the members whose client addresses are `addrs`. `timeout` bounds each
    /// connect, read and write; calls keep retrying other members for up to 10 s (see
    /// [`ClusterClient::with_retry_for`]). Connects lazily.
    pub fn new(addrs: Vec<SocketAddr>, cluster_id: u64, timeout: Duration) -> ClusterClient {
        assert!(
            !addrs.is_empty(),
            "a cluster client needs at least one address"
        );
        ClusterClient {
            addrs,
            cluster_id,
            timeout,
            retry_for: Duration::from_secs(10),
            current: 0,
            connection: None,
            credentials: None,
            tls: None,
        }
    }

    /// Authenticates every connection with `credentials`.
    pub fn with_credentials(mut self, credentials: Credentials) -> ClusterClient {
        self.credentials = Some(credentials);
        self
    }

    /// Speaks TLS on every connection (see [`Client::connect_with`]).
    pub fn with_tls(mut self, tls: ClientTls) -> ClusterClient {
        self.tls = Some(tls);
        self
    }

    /// Sets how long one call keeps trying before it returns the last error.
    pub fn with_retry_for(mut self, retry_for: Duration) -> ClusterClient {
        self.retry_for = retry_for;
        self
    }

    /// The member the client is connected to (or will try next).
    pub fn current_addr(&self) -> SocketAddr {
        self.addrs[self.current]
    }

    /// Proposes `command` at the leader. Retries only while the proposal surely did not apply.
    pub fn propose(&mut self, command: &[u8]) -> Result<Applied, ClientError> {
        self.with_leader(false, |client| client.propose(command))
    }

    /// Proposes `command` at the leader, retrying also when the outcome is unknown: the command
    /// may apply more than once, so use this only for idempotent commands.
    pub fn propose_idempotent(&mut self, command: &[u8]) -> Result<Applied, ClientError> {
        self.with_leader(true, |client| client.propose(command))
    }

    /// Proposes `commands` in one request at the leader (consecutive indexes, all or none).
    /// Retries only while the batch surely did not apply.
    pub fn propose_batch(&mut self, commands: &[Bytes]) -> Result<AppliedBatch, ClientError> {
        self.with_leader(false, |client| client.propose_batch(commands))
    }

    /// Runs `query` at the leader (linearizable).
    pub fn read(&mut self, query: &[u8]) -> Result<Applied, ClientError> {
        self.with_leader(true, |client| client.read(query, true))
    }

    /// Asks the leader to change the membership (see [`Client::change_membership`]) and waits
    /// until the change is applied there; returns its log index. Retries only while the change
    /// surely was not proposed (redirects, failed connects).
    pub fn change_membership(&mut self, change: MembershipChange) -> Result<LogIndex, ClientError> {
        self.with_leader(false, |client| client.change_membership(change))
    }

    /// The status JSON of the member the client is connected to, or else of the next member
    /// that answers (see [`Client::status`]). After a successful write that is the leader (or
    /// was, when it wrote).
    pub fn status(&mut self) -> Result<String, ClientError> {
        self.with_leader(true, Client::status)
    }

    /// Connects to `addr` next (adding it to the members tried if it is new), dropping the
    /// current connection unless it is to `addr` already.
    pub fn switch_to(&mut self, addr: SocketAddr) {
        let position = match self.addrs.iter().position(|known| *known == addr) {
            Some(position) => position,
            None => {
                self.addrs.push(addr);
                self.addrs.len() - 1
            }
        };
        if position != self.current {
            self.connection = None;
            self.current = position;
        }
    }

    fn advance(&mut self) {
        self.connection = None;
        self.current = (self.current + 1) % self.addrs.len();
    }

    /// Runs `call` against the member believed to lead until it succeeds, fails for good, or
    /// the deadline passes. `retry_unknown`: also retry after a broken connection.
    fn with_leader<T>(
        &mut self,
        retry_unknown: bool,
        mut call: impl FnMut(&mut Client) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let deadline = Instant::now() + self.retry_for;
        let mut failures_in_round = 0;
        loop {
            let result = match self.connection.as_mut() {
                Some(client) => call(client),
                None => {
                    let addr = self.addrs[self.current];
                    let credentials = self.credentials.as_ref();
                    match Client::connect_with(
                        addr,
                        self.cluster_id,
                        self.timeout,
                        credentials,
                        self.tls.as_ref(),
                    ) {
                        Ok(client) => {
                            self.connection = Some(client);
                            continue;
                        }
                        Err(err) => Err(err),
                    }
                }
            };
            let connected = self.connection.is_some();
            let err = match result {
                Ok(applied) => return Ok(applied),
                Err(err) => err,
            };
            let retry = match &err {
                ClientError::NotLeader {
                    leader_addr: Some(addr),
                    ..
                } => {
                    match addr.parse::<SocketAddr>() {
                        Ok(addr) if addr != self.addrs[self.current] => self.switch_to(addr),
                        _ => {
                            self.advance();
                            failures_in_round += 1;
                        }
                    }
                    true
                }
                ClientError::NotLeader { .. } => {
                    self.advance();
                    failures_in_round += 1;
                    true
                }
                ClientError::Io(_) if !connected => {
                    // The connect itself failed: nothing was sent.
                    self.advance();
                    failures_in_round += 1;
                    true
                }
                ClientError::Io(_) | ClientError::Protocol(_) => {
                    self.advance();
                    failures_in_round += 1;
                    retry_unknown
                }
                ClientError::Refused(_)
                | ClientError::Auth(_)
                | ClientError::Server(_)
                | ClientError::Invalid(_) => false,
            };
            if !retry || Instant::now() >= deadline {
                return Err(err);
            }
            if failures_in_round >= self.addrs.len() {
                failures_in_round = 0;
                std::thread::sleep(BACKOFF);
            }
        }
    }
}
