//! The Prometheus endpoint (`metrics_addr`, off by default): `GET /metrics` on a small HTTP
//! server of its own (tiny_http, its own threads) answers with the node's metrics in the
//! OpenMetrics text format (prometheus-client's encoder). Every family is listed in
//! `docs/OPERATIONS.md`.
//!
//! Guarantees: a scrape costs the node one status request to its consensus stage (which reads
//! counters the stages keep anyway and samples channel lengths); nothing is added to the hot
//! path. Metrics are derived from [`NodeStatus`] alone, so the endpoint and `lockstep status`
//! always agree. A failing scrape (a client gone mid-answer) is logged at debug level and the
//! server keeps serving.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::node::{Node, NodeStatus};

/// The media type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The path metrics are served on.
pub const METRICS_PATH: &str = "/metrics";

/// The roles a node reports, each a series of `lockstep_role`.
const ROLES: [&str; 5] = [
    "leader",
    "follower",
    "candidate",
    "pre-candidate",
    "stopped",
];

/// Why the metrics endpoint cannot serve.
#[derive(Debug)]
pub enum MetricsError {
    /// The address cannot be listened on.
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why (the HTTP server's error).
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The serving thread cannot be started.
    Spawn(io::Error),
}

impl fmt::Display for MetricsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricsError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            MetricsError::Spawn(err) => write!(f, "cannot spawn the metrics thread: {err}"),
        }
    }
}

impl std::error::Error for MetricsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MetricsError::Bind { source, .. } => Some(&**source),
            MetricsError::Spawn(err) => Some(err),
        }
    }
}

/// A metrics endpoint: bound by [`MetricsServer::bind`], answering once [`MetricsServer::serve`]
/// runs; stops (and joins its thread) on [`MetricsServer::stop`] or drop.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Listens on `addr`; connections wait until [`MetricsServer::serve`] is called. Bound
    /// before the node starts, so a bad address stops the server before it touches the data
    /// directory. The error says why the address could not be used.
    pub fn bind(addr: SocketAddr) -> Result<MetricsServer, MetricsError> {
        let server =
            tiny_http::Server::http(addr).map_err(|source| MetricsError::Bind { addr, source })?;
        let addr = server
            .server_addr()
            .to_ip()
            .expect("an HTTP server bound to an IP address reports one");
        Ok(MetricsServer {
            server: Arc::new(server),
            addr,
            thread: None,
        })
    }

    /// Starts answering scrapes with `node`'s metrics, on a thread of its own.
    pub fn serve(&mut self, node: Arc<Node>) -> Result<(), MetricsError> {
        assert!(
            self.thread.is_none(),
            "metrics on {} already served",
            self.addr
        );
        let serving = Arc::clone(&self.server);
        let thread = std::thread::Builder::new()
            .name("ls-metrics".to_string())
            .spawn(move || serve(&serving, &node))
            .map_err(MetricsError::Spawn)?;
        self.thread = Some(thread);
        tracing::info!(addr = %self.addr, "serving metrics on http://{}{METRICS_PATH}", self.addr);
        Ok(())
    }

    /// The bound address (the port is the kernel's choice when `addr` had port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and joins the thread (which then drops its reference to the node).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the metrics thread panicked");
            }
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Answers requests until the server is unblocked.
fn serve(server: &tiny_http::Server, node: &Node) {
    for request in server.incoming_requests() {
        let path = request.url().split('?').next().unwrap_or("");
        let response = match (request.method(), path) {
            (tiny_http::Method::Get, METRICS_PATH) => {
                let body = encode(&node.status());
                tiny_http::Response::from_string(body).with_header(header(CONTENT_TYPE))
            }
            (tiny_http::Method::Get, "/") => {
                tiny_http::Response::from_string(format!("lockstep: metrics at {METRICS_PATH}\n"))
            }
            (tiny_http::Method::Get, _) => tiny_http::Response::from_string(format!(
                "not found; metrics are at {METRICS_PATH}\n"
            ))
            .with_status_code(404),
            _ => tiny_http::Response::from_string("only GET is served\n").with_status_code(405),
        };
        if let Err(e) = request.respond(response) {
            tracing::debug!(error = %e, "a metrics scrape failed");
        }
    }
}

fn header(content_type: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes("Content-Type", content_type).expect("a constant header is valid")
}

/// The node's metrics in the OpenMetrics text format.
pub fn encode(status: &NodeStatus) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StatusCollector(status.clone())));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .expect("encoding into a String cannot fail");
    text
}

/// Encodes one status as metric families (a fresh one per scrape).
#[derive(Debug)]
struct StatusCollector(NodeStatus);

/// One labelled series of a family: label value and sample.
type Series<'a, T> = (&'a str, T);

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Fmt {
    ConstCounter::new(value).encode(encoder.encode_descriptor(
        name,
        help,
        None,
        MetricType::Counter,
    )?)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Fmt {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    series: &[Series<'_, i64>],
) -> Fmt {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for &(value_of_label, value) in series {
        ConstGauge::new(value).encode(family.encode_family(&[(label, value_of_label)])?)?;
    }
    Ok(())
}

fn counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    series: &[Series<'_, u64>],
) -> Fmt {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for &(value_of_label, value) in series {
        ConstCounter::new(value).encode(family.encode_family(&[(label, value_of_label)])?)?;
    }
    Ok(())
}

type Fmt = Result<(), std::fmt::Error>;

/// A gauge sample from an unsigned count (saturating: no count here comes near `i64::MAX`).
fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Collector for StatusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Fmt {
        let status = &self.0;
        let e = &mut encoder;
        let roles: Vec<Series<'_, i64>> = ROLES
            .iter()
            .map(|&role| (role, i64::from(status.role.as_str() == role)))
            .collect();
        gauges(
            e,
            "lockstep_role",
            "1 for the role this node has now, 0 for the others",
            "role",
            &roles,
        )?;
        gauge(e, "lockstep_node_id", "This node's id", signed(status.id))?;
        gauge(e, "lockstep_term", "Current term", signed(status.term))?;
        gauge(
            e,
            "lockstep_leader_id",
            "The leader this node knows of (0: none)",
            signed(status.leader.unwrap_or(0)),
        )?;
        gauge(
            e,
            "lockstep_commit_index",
            "Commit index",
            signed(status.commit),
        )?;
        gauge(
            e,
            "lockstep_applied_index",
            "Index the state machine has applied",
            signed(status.applied),
        )?;
        gauge(
            e,
            "lockstep_durable_index",
            "Last index of the local log known durable",
            signed(status.durable),
        )?;
        counter(e, "lockstep_committed_entries", "Entries committed over the log's life (the commit index): rate() gives commits per second", status.commit)?;
        counter(
            e,
            "lockstep_applied_entries",
            "Entries applied over the log's life (the applied index)",
            status.applied,
        )?;

        let runtime = &status.runtime;
        counter(
            e,
            "lockstep_leader_changes",
            "Times this node learned of a new leader",
            runtime.leader_changes,
        )?;
        let counters_of_node = &status.counters;
        counter(
            e,
            "lockstep_elections_started",
            "Elections this node started",
            counters_of_node.elections_started,
        )?;
        counter(
            e,
            "lockstep_proposed_entries",
            "Entries proposed at this node while it led",
            counters_of_node.entries_proposed,
        )?;
        counter(
            e,
            "lockstep_sealed_batches",
            "Batches sealed by this node as leader",
            counters_of_node.batches_sealed,
        )?;
        counter(
            e,
            "lockstep_reads_confirmed",
            "Linearizable reads confirmed",
            counters_of_node.reads_ready,
        )?;
        counter(
            e,
            "lockstep_snapshots_installed",
            "Snapshots installed from a leader",
            counters_of_node.snapshots_installed,
        )?;
        counters(
            e,
            "lockstep_consensus_turns",
            "Consensus turns, by the thread that ran them",
            "thread",
            &[
                ("consensus", counters_of_node.turns),
                ("network", counters_of_node.inline_turns),
            ],
        )?;
        counters(
            e,
            "lockstep_client_errors",
            "Client requests answered with an error, by kind",
            "kind",
            &[
                ("not_leader", runtime.client_not_leader),
                ("other", runtime.client_errors),
            ],
        )?;

        let log = &status.log;
        counter(
            e,
            "lockstep_log_appended_entries",
            "Entries appended to the local log (over appended batches: entries per batch)",
            log.entries_appended,
        )?;
        counter(
            e,
            "lockstep_log_appended_batches",
            "Batch records appended to the local log",
            log.batches_appended,
        )?;
        counter(
            e,
            "lockstep_log_appended_bytes",
            "Record bytes appended to the local log",
            log.bytes_appended,
        )?;
        counter(e, "lockstep_log_syncs", "Sync rounds completed", log.syncs)?;
        counter(
            e,
            "lockstep_log_synced_entries",
            "Entries made durable by sync rounds (over syncs: entries per sync)",
            log.entries_synced,
        )?;
        counter(
            e,
            "lockstep_log_synced_bytes",
            "Record bytes made durable by sync rounds (over syncs: bytes per sync)",
            log.bytes_synced,
        )?;
        let latency = &runtime.sync_latency;
        let mut buckets: Vec<(f64, u64)> = latency
            .bounds_us
            .iter()
            .map(|&bound| bound as f64 / 1e6)
            .chain(std::iter::once(f64::MAX))
            .zip(latency.counts.iter().copied())
            .collect();
        if buckets.is_empty() {
            buckets.push((f64::MAX, 0));
        }
        e.encode_descriptor(
            "lockstep_log_sync_latency_seconds",
            "Time from requesting durability of appended records to the storage stage seeing them durable",
            None,
            MetricType::Histogram,
        )?
        .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            latency.sum_us as f64 / 1e6,
            latency.count,
            &buckets,
            None,
        )?;

        let queues = &runtime.queues;
        gauges(
            e,
            "lockstep_queue_depth",
            "Items (batches) waiting in each inter-stage channel, sampled at scrape time",
            "queue",
            &[
                ("requests", signed(queues.requests as u64)),
                ("net_events", signed(queues.net_events as u64)),
                ("feedback", signed(queues.feedback as u64)),
                ("storage", signed(queues.storage as u64)),
                ("apply", signed(queues.apply as u64)),
            ],
        )?;
        gauge(
            e,
            "lockstep_queue_capacity",
            "Bound of each bounded inter-stage channel (channel_capacity)",
            signed(queues.capacity as u64),
        )?;

        let count_role =
            |role: &str| signed(status.members.iter().filter(|m| m.role == role).count() as u64);
        gauges(
            e,
            "lockstep_members",
            "Members of the membership in effect (the latest appended), by role",
            "role",
            &[
                ("voter", count_role("voter")),
                ("learner", count_role("learner")),
            ],
        )?;
        gauge(
            e,
            "lockstep_membership_change_pending",
            "1 while the membership in effect is not yet committed (a change is in progress)",
            i64::from(!status.members_committed),
        )?;

        let peer_ids: Vec<String> = status
            .peers
            .iter()
            .map(|peer| peer.id.to_string())
            .collect();
        let per_peer = |value: fn(&crate::node::PeerProgress) -> u64| -> Vec<Series<'_, i64>> {
            peer_ids
                .iter()
                .zip(&status.peers)
                .map(|(id, peer)| (id.as_str(), signed(value(peer))))
                .collect()
        };
        gauges(
            e,
            "lockstep_peer_match_index",
            "Leader only: highest index known durable on each follower",
            "peer",
            &per_peer(|peer| peer.matched),
        )?;
        gauges(
            e,
            "lockstep_peer_inflight_bytes",
            "Leader only: payload bytes sent to each follower and not yet acknowledged",
            "peer",
            &per_peer(|peer| peer.inflight_bytes),
        )?;
        gauges(
            e,
            "lockstep_peer_inflight_messages",
            "Leader only: append messages sent to each follower and not yet acknowledged",
            "peer",
            &per_peer(|peer| u64::from(peer.inflight_messages)),
        )?;

        if let Some(net) = &status.net {
            counter(
                e,
                "lockstep_net_frames_received",
                "Frames received on all connections",
                net.frames_in,
            )?;
            counter(
                e,
                "lockstep_net_frames_sent",
                "Frames sent on all connections",
                net.frames_out,
            )?;
            counter(
                e,
                "lockstep_net_received_bytes",
                "Bytes received on all connections",
                net.bytes_in,
            )?;
            counter(
                e,
                "lockstep_net_sent_bytes",
                "Bytes sent on all connections",
                net.bytes_out,
            )?;
            counter(
                e,
                "lockstep_net_writes",
                "Write system calls on sockets",
                net.writes,
            )?;
            counter(
                e,
                "lockstep_net_rejected_frames",
                "Connections closed for a malformed, oversized or checksum-failing frame",
                net.bad_frames,
            )?;
            counter(
                e,
                "lockstep_net_rejected_handshakes",
                "Connections refused at the handshake (wrong version, cluster id or node)",
                net.handshakes_refused,
            )?;
            counters(
                e,
                "lockstep_net_refused_peer_handshakes",
                "Peer connections refused at the handshake, by reason (bad_proof: another \
                 secret or a replay; no_proof / no_secret: a secret on one side only; \
                 unknown_node: this node's own id or 0; ...)",
                "reason",
                &net.peer_refusals.by_reason(),
            )?;
            counter(
                e,
                "lockstep_net_peer_connects",
                "Peer connections established",
                net.peer_connects,
            )?;
            counter(
                e,
                "lockstep_net_peer_disconnects",
                "Peer connections lost",
                net.peer_disconnects,
            )?;
            counter(
                e,
                "lockstep_net_client_connects",
                "Client connections accepted",
                net.client_connects,
            )?;
            counter(
                e,
                "lockstep_net_dropped_messages",
                "Consensus messages dropped (peer unreachable or its queue full)",
                net.messages_dropped,
            )?;
            counter(
                e,
                "lockstep_net_blocked_reads",
                "Times a full event channel stopped socket reads (back-pressure)",
                net.events_blocked,
            )?;
            counter(
                e,
                "lockstep_net_client_auth_failures",
                "Failed client authentications (AUTH, HELLO AUTH, native hello)",
                net.client_auth_failures,
            )?;
            counters(
                e,
                "lockstep_net_client_limit_hits",
                "Client connections refused or closed, or reads paused, at a [limits] setting",
                "reason",
                &[
                    ("max_clients", net.clients_refused_max),
                    ("max_request_bytes", net.clients_closed_request_bytes),
                    ("max_pipelined_bytes", net.client_reads_paused_pipelined),
                    ("idle_timeout", net.clients_closed_idle),
                    ("slow_client_timeout", net.clients_closed_slow),
                ],
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{LogCounters, MemberStatus, PeerProgress, RuntimeStatus};

    fn status() -> NodeStatus {
        let mut runtime = RuntimeStatus {
            leader_changes: 2,
            ..RuntimeStatus::default()
        };
        runtime.queues.storage = 3;
        runtime.sync_latency.bounds_us = vec![100, 1_000];
        runtime.sync_latency.counts = vec![1, 2, 0];
        runtime.sync_latency.count = 3;
        runtime.sync_latency.sum_us = 1_500;
        NodeStatus {
            id: 1,
            role: lockstep::Role::Leader,
            term: 4,
            leader: Some(1),
            commit: 17,
            applied: 16,
            durable: 17,
            repair_until: None,
            suspect: false,
            peers: vec![PeerProgress {
                id: 2,
                matched: 15,
                next: 18,
                state: "replicate".to_string(),
                inflight_messages: 1,
                inflight_bytes: 640,
            }],
            members: vec![MemberStatus {
                id: 1,
                role: "voter".to_string(),
                peer_addr: None,
                client_addr: None,
            }],
            members_committed: true,
            counters: Default::default(),
            log: LogCounters {
                syncs: 9,
                ..LogCounters::default()
            },
            net: Some(crate::net::NetStats {
                clients_closed_slow: 2,
                ..Default::default()
            }),
            runtime,
        }
    }

    #[test]
    fn every_family_is_encoded_with_its_value() {
        let text = encode(&status());
        for line in [
            "lockstep_role{role=\"leader\"} 1",
            "lockstep_role{role=\"follower\"} 0",
            "lockstep_term 4",
            "lockstep_committed_entries_total 17",
            "lockstep_leader_changes_total 2",
            "lockstep_log_syncs_total 9",
            "lockstep_log_sync_latency_seconds_count 3",
            "lockstep_log_sync_latency_seconds_bucket{le=\"0.001\"} 3",
            "lockstep_log_sync_latency_seconds_bucket{le=\"+Inf\"} 3",
            "lockstep_queue_depth{queue=\"storage\"} 3",
            "lockstep_peer_inflight_bytes{peer=\"2\"} 640",
            "lockstep_members{role=\"voter\"} 1",
            "lockstep_members{role=\"learner\"} 0",
            "lockstep_membership_change_pending 0",
            "lockstep_net_rejected_frames_total 0",
            "lockstep_net_refused_peer_handshakes_total{reason=\"bad_proof\"} 0",
            "lockstep_net_client_auth_failures_total 0",
            "lockstep_net_client_limit_hits_total{reason=\"slow_client_timeout\"} 2",
            "lockstep_client_errors_total{kind=\"not_leader\"} 0",
            "lockstep_consensus_turns_total{thread=\"network\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn a_node_without_network_or_syncs_still_encodes() {
        let mut status = status();
        status.net = None;
        status.peers.clear();
        status.runtime = RuntimeStatus::default();
        let text = encode(&status);
        assert!(!text.contains("lockstep_net_"), "{text}");
        assert!(
            text.contains("lockstep_log_sync_latency_seconds_bucket{le=\"+Inf\"} 0"),
            "{text}"
        );
    }
}
