//! The command line of the cluster benchmark (`lockstep-bench` with no subcommand) and its
//! validation into a [`RunConfig`].
//!
//! Owns every knob of a cluster run and the rules that make a combination of them valid: a
//! [`RunConfig`] only exists for a run that can start (node count 1, 3 or 5, non-zero sizes and
//! times, tuning knobs only for a cluster the bench starts itself, no durability mode the node
//! does not have, the kv knobs only with `--mode kv` and `--batch` only with `--mode log`,
//! `--embedded` only for a local closed-loop `--mode log` run).
//! Errors are messages that name the option.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use lockstep_server::{Tuning, DEFAULT_CLUSTER_ID};
use serde::Serialize;

use super::keys::KEYS_MAX;
use crate::report::Describe;

/// Largest entry the bench proposes (well under the node's default 64 MiB frame limit).
pub const ENTRY_BYTES_MAX: usize = 16 << 20;

/// Most client connections one run opens (each is a thread).
pub const CLIENTS_MAX: usize = 4096;

/// Entries per request unless `--batch` says otherwise (capped at `--depth`).
pub const DEFAULT_BATCH: usize = 64;

/// Most entries in flight on one connection.
pub const DEPTH_MAX: usize = 1 << 16;

/// Most payload bytes in one batch request (half the node's default 64 MiB frame limit).
pub const REQUEST_BYTES_MAX: usize = 32 << 20;

/// Entries in flight per connection unless `--depth` says otherwise, `--mode log`: 8 x 8192
/// in flight is where the zero-argument run reached its throughput plateau with the disk in
/// its slow regime (docs/BENCHMARKS.md, "Latency and the speed targets, session 4").
pub const DEFAULT_DEPTH_LOG: usize = 8192;

/// Commands in flight per connection unless `--depth` says otherwise, `--mode kv` (the node
/// stops reading a RESP connection with 1,024 commands unanswered: more would only wait in TCP).
pub const DEFAULT_DEPTH_KV: usize = 256;

/// `--read-ratio` unless given (`--mode kv`).
pub const DEFAULT_READ_RATIO: f64 = 0.5;

/// `--keys` unless given (`--mode kv`).
pub const DEFAULT_KEYS: u64 = 100_000;

/// Arguments of the cluster benchmark.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// What the clients send: `log` proposes opaque entries to the `journal` app over the
    /// native protocol; `kv` sends RESP SET/GET commands to the `kv` app.
    #[arg(long, value_enum, default_value_t = Mode::Log)]
    pub mode: Mode,
    /// Nodes in the local cluster: 1, 3 or 5.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Bytes of each proposed entry (`--mode kv`: of each SET's value).
    #[arg(long, visible_alias = "value-bytes", default_value_t = 16)]
    pub entry_bytes: usize,
    /// Client connections, each driven by its own thread.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Entries (`--mode kv`: commands) in flight per connection (pipelining). Default 8192 for
    /// `--mode log`, 256 for `--mode kv`.
    #[arg(long)]
    pub depth: Option<usize>,
    /// Entries per request: 1 sends `Propose` requests, more sends `ProposeBatch` requests of
    /// this many entries (a connection then keeps ceil(depth / batch) requests in flight). The
    /// default, 64, was chosen by `--sweep batch=1,16,64,256` (docs/BENCHMARKS.md); it is
    /// capped at `--depth` (and at 32 MiB per request), so `--depth 1` measures a single
    /// one-entry `Propose`.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Open loop: offer this many entries per second in total, spread evenly over the clients,
    /// and measure latency from each request's intended send time. Without it the loop is
    /// closed (each reply releases the next request).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Durability of the nodes' logs: `fsync` (io_uring fdatasync before acknowledging) or
    /// `none` (no syncs at all: NOT durable; isolates everything but the disk).
    #[arg(long, value_enum, default_value_t = Durability::Fsync)]
    pub durability: Durability,
    /// Nodes' most entries per batch (default: the node's own).
    #[arg(long)]
    pub batch_entries_max: Option<u32>,
    /// Nodes' most payload bytes per batch.
    #[arg(long)]
    pub batch_bytes_max: Option<u32>,
    /// Nodes' most payload bytes per append message.
    #[arg(long)]
    pub append_bytes_max: Option<u32>,
    /// Nodes' per-follower window: most append messages in flight.
    #[arg(long)]
    pub inflight_messages_max: Option<u32>,
    /// Nodes' per-follower window: most bytes in flight.
    #[arg(long)]
    pub inflight_bytes_max: Option<u64>,
    /// Nodes sync on the storage thread itself when it is idle (`true`, the node's default) or
    /// always through io_uring (`false`).
    #[arg(long, value_name = "BOOL")]
    pub sync_inline: Option<bool>,
    /// Nodes let the network thread run light consensus turns while consensus is idle
    /// (`true`, the node's default) or keep every turn on the consensus thread (`false`).
    #[arg(long, value_name = "BOOL")]
    pub inline_turns: Option<bool>,
    /// Drive the load inside each node process through the embedding API (`Node::propose` /
    /// `propose_batch`: `--clients` threads per node, proposing while it leads) instead of over
    /// the client protocol; the same figures are reported. `--mode log` with a local cluster
    /// and a closed loop only.
    #[arg(long)]
    pub embedded: bool,
    /// Benchmark an already running cluster: the client addresses of its members
    /// (`HOST:PORT,...`). No nodes are started or stopped.
    #[arg(long, value_delimiter = ',')]
    pub connect: Vec<String>,
    /// File holding the client password, for nodes that require one (`--connect`).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Cluster id presented to the nodes (the local cluster is started with it; `lockstep
    /// cluster` and `lockstep status` use the same default).
    #[arg(long, default_value_t = DEFAULT_CLUSTER_ID)]
    pub cluster_id: u64,
    /// With --connect: talk TLS to the nodes, trusting the CA certificate(s) of this PEM file.
    #[arg(long, value_name = "FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// Run a series and print one table: `KNOB=V1,V2,...` with KNOB one of `clients`, `depth`,
    /// `entry-bytes`, `batch` (e.g. `clients=1,16,256`).
    #[arg(long)]
    pub sweep: Option<String>,
    /// Parent directory of the nodes' temporary data directory (default: the system's).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also draw the latency percentile curve and the throughput of each second into this SVG
    /// file (not with --sweep).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// `--mode kv`: the share of commands that are GETs, 0.0..=1.0 (the rest are SETs;
    /// default 0.5).
    #[arg(long)]
    pub read_ratio: Option<f64>,
    /// `--mode kv`: the number of distinct keys (default 100000).
    #[arg(long)]
    pub keys: Option<u64>,
    /// `--mode kv`: pick keys Zipf-skewed with this exponent, 0 < s < 1 (YCSB uses 0.99),
    /// instead of uniformly; key 0 is the most popular.
    #[arg(long)]
    pub zipf: Option<f64>,
    /// `--mode kv`: the read mode of the nodes the bench starts (`index`: a heartbeat round
    /// confirms leadership; `lease`: no round while the lease holds). Default: the node's own
    /// (index). A `--connect` cluster reads in its own mode.
    #[arg(long, value_enum)]
    pub read_mode: Option<ReadMode>,
}

/// `--read-mode`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadMode {
    /// Read-index: a heartbeat round to a quorum before answering.
    Index,
    /// Leader lease: no round while a quorum heard from the leader recently.
    Lease,
}

impl ReadMode {
    /// The name `tuning.read_mode` takes.
    pub fn name(self) -> &'static str {
        match self {
            ReadMode::Index => "index",
            ReadMode::Lease => "lease",
        }
    }
}

/// The kv load of a `--mode kv` run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KvConfig {
    /// Share of commands that are GETs.
    pub read_ratio: f64,
    /// Distinct keys.
    pub keys: u64,
    /// Zipf exponent, or `None` for uniform keys.
    pub zipf: Option<f64>,
    /// How GETs are served: the local nodes' `tuning.read_mode`, or `"as configured"` for a
    /// `--connect` cluster.
    pub read_mode: String,
}

/// `--mode`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Opaque entries proposed to the `journal` app.
    Log,
    /// RESP SET/GET commands to the `kv` app.
    Kv,
}

/// `--durability`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Every node syncs its log (io_uring fdatasync) before an entry counts as durable.
    Fsync,
    /// No syncs at all (the nodes run with `tuning.sync = "none"`): NOT durable. The report
    /// says so first, in its text and its JSON.
    None,
}

impl Durability {
    /// The report's warning for this mode, if it needs one.
    pub fn warning(self) -> Option<String> {
        match self {
            Durability::Fsync => None,
            Durability::None => Some(
                "DURABILITY NONE: no node synced its log (tuning.sync = \"none\"); these are \
                 not durable commits and compare only with other --durability none runs"
                    .to_string(),
            ),
        }
    }
}

/// A knob a sweep varies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SweepKnob {
    /// `--clients`.
    Clients,
    /// `--depth`.
    Depth,
    /// `--entry-bytes`.
    EntryBytes,
    /// `--batch`.
    Batch,
    /// `--read-ratio` (`--mode kv`).
    ReadRatio,
}

/// A swept knob's value: a count, or a ratio for `read_ratio` (written in JSON as a whole
/// number when it is one).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KnobValue(pub f64);

impl KnobValue {
    /// The value as a count; it must be one (the sweep's parsing guarantees it).
    pub fn count(self) -> usize {
        assert!(
            self.0 >= 0.0 && self.0.fract() == 0.0,
            "{} is not a count",
            self.0
        );
        self.0 as usize
    }
}

impl std::fmt::Display for KnobValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for KnobValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0 >= 0.0 && self.0.fract() == 0.0 && self.0 < 2f64.powi(53) {
            serializer.serialize_u64(self.0 as u64)
        } else {
            serializer.serialize_f64(self.0)
        }
    }
}

/// `--sweep KNOB=V1,V2,...`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sweep {
    /// The knob varied.
    pub knob: SweepKnob,
    /// Its values, in run order.
    pub values: Vec<KnobValue>,
}

impl Sweep {
    /// Parses `KNOB=V1,V2,...`.
    pub fn parse(text: &str) -> Result<Sweep, String> {
        let (knob, values) = text.split_once('=').ok_or_else(|| {
            format!("--sweep {text:?}: expected KNOB=V1,V2,... (e.g. clients=1,16,256)")
        })?;
        let knob = match knob.trim() {
            "clients" => SweepKnob::Clients,
            "depth" => SweepKnob::Depth,
            "entry-bytes" | "entry_bytes" => SweepKnob::EntryBytes,
            "batch" => SweepKnob::Batch,
            "read-ratio" | "read_ratio" => SweepKnob::ReadRatio,
            other => {
                return Err(format!(
                    "--sweep: unknown knob {other:?} (one of clients, depth, entry-bytes, batch, \
                     read_ratio)"
                ))
            }
        };
        let values = values
            .split(',')
            .map(|value| match knob {
                SweepKnob::ReadRatio => value
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|ratio| (0.0..=1.0).contains(ratio))
                    .map(KnobValue)
                    .ok_or_else(|| format!("--sweep: {value:?} is not a ratio in 0..=1")),
                _ => value
                    .trim()
                    .parse::<usize>()
                    .map(|count| KnobValue(count as f64))
                    .map_err(|_| format!("--sweep: {value:?} is not a whole number")),
            })
            .collect::<Result<Vec<KnobValue>, String>>()?;
        if values.is_empty() {
            return Err("--sweep: no values".to_string());
        }
        Ok(Sweep { knob, values })
    }

    /// The name of the knob as an option, without dashes (`clients`, `depth`, `entry-bytes`,
    /// `batch`, `read_ratio`).
    pub fn knob_name(&self) -> &'static str {
        match self.knob {
            SweepKnob::Clients => "clients",
            SweepKnob::Depth => "depth",
            SweepKnob::EntryBytes => "entry-bytes",
            SweepKnob::Batch => "batch",
            SweepKnob::ReadRatio => "read_ratio",
        }
    }
}

/// Where the cluster under test comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The bench starts `nodes` local processes and stops them afterwards.
    Local {
        /// How many.
        nodes: usize,
    },
    /// An existing cluster, by its members' client addresses.
    Connect {
        /// The addresses.
        addrs: Vec<SocketAddr>,
    },
}

/// A validated run: everything one measurement needs.
#[derive(Clone, Debug, Serialize)]
pub struct RunConfig {
    /// What the clients send.
    pub mode: Mode,
    /// The cluster under test.
    pub target: Target,
    /// The state machine the local nodes run.
    pub app: &'static str,
    /// Bytes of each entry.
    pub entry_bytes: usize,
    /// Client connections.
    pub clients: usize,
    /// Entries in flight per connection.
    pub depth: usize,
    /// Entries per request (1: `Propose`; more: `ProposeBatch`; always 1 in kv mode).
    pub batch: usize,
    /// Whether the load runs inside the nodes, through the embedding API (`--embedded`).
    pub embedded: bool,
    /// Whether `--batch` was given (else the default adapts to each sweep point).
    #[serde(skip)]
    pub batch_given: bool,
    /// `"closed"` or `"open"`.
    pub load_loop: &'static str,
    /// Offered entries per second in total (open loop only).
    pub rate_per_sec: Option<f64>,
    /// Seconds of warm-up.
    pub warmup_sec: f64,
    /// Measured seconds.
    pub seconds: f64,
    /// Durability mode.
    pub durability: Durability,
    /// The tuning the local nodes run with (for `--connect`: the defaults, for reference).
    pub tuning: Tuning,
    /// The cluster id.
    pub cluster_id: u64,
    /// `--mode kv`: the key space, the mix and the read mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv: Option<KvConfig>,
    /// With `--sweep`: the knob varied (its value above is then only the base).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep: Option<Sweep>,
    /// Parent of the temporary data directory.
    #[serde(skip)]
    pub dir: Option<PathBuf>,
}

impl RunConfig {
    /// Validates `args` (ignoring `--sweep`, see [`Args::sweep_configs`]).
    pub fn from_args(args: &Args) -> Result<RunConfig, String> {
        if args.durability == Durability::None && !args.connect.is_empty() {
            return Err(
                "--durability none sets the sync mode of the nodes the bench starts; a cluster \
                 given with --connect runs with its own (set tuning.sync there)"
                    .to_string(),
            );
        }
        if args.tls_ca_file.is_some() && args.connect.is_empty() {
            return Err(
                "--tls-ca-file is for a cluster given with --connect (the nodes the \
                        bench starts speak plain TCP)"
                    .to_string(),
            );
        }
        embedded_fits(args)?;
        if !(1..=ENTRY_BYTES_MAX).contains(&args.entry_bytes) {
            return Err(format!(
                "--entry-bytes {}: must be 1..={ENTRY_BYTES_MAX}",
                args.entry_bytes
            ));
        }
        if !(1..=CLIENTS_MAX).contains(&args.clients) {
            return Err(format!(
                "--clients {}: must be 1..={CLIENTS_MAX}",
                args.clients
            ));
        }
        let depth = args.depth.unwrap_or(match args.mode {
            Mode::Log => DEFAULT_DEPTH_LOG,
            Mode::Kv => DEFAULT_DEPTH_KV,
        });
        if !(1..=DEPTH_MAX).contains(&depth) {
            return Err(format!("--depth {depth}: must be 1..={DEPTH_MAX}"));
        }
        let kv = kv_config(args)?;
        if kv.is_some() && args.batch.is_some() {
            return Err(
                "--batch groups entries into native batch requests (--mode log); RESP has no \
                 batch command: --depth pipelines the kv load"
                    .to_string(),
            );
        }
        // The default yields to a smaller depth or a large entry; an explicit --batch must fit.
        let batch_given = args.batch.is_some() || kv.is_some();
        let batch = match (&kv, args.batch) {
            (Some(_), _) => 1,
            (None, Some(batch)) => batch,
            (None, None) => default_batch(depth, args.entry_bytes),
        };
        if !(1..=depth).contains(&batch) {
            return Err(format!("--batch {batch}: must be 1..=--depth ({depth})"));
        }
        if batch.saturating_mul(args.entry_bytes + 4) > REQUEST_BYTES_MAX {
            return Err(format!(
                "--batch {batch} x --entry-bytes {}: a request would exceed \
                 {REQUEST_BYTES_MAX} bytes (give a smaller --batch)",
                args.entry_bytes
            ));
        }
        if !(args.seconds.is_finite() && args.seconds > 0.0) {
            return Err(format!("--seconds {}: must be more than 0", args.seconds));
        }
        if !(args.warmup.is_finite() && args.warmup >= 0.0) {
            return Err(format!("--warmup {}: must be 0 or more", args.warmup));
        }
        if let Some(rate) = args.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(format!("--rate {rate}: must be more than 0 entries/s"));
            }
        }
        let target = if args.connect.is_empty() {
            if ![1, 3, 5].contains(&args.nodes) {
                return Err(format!("--nodes {}: must be 1, 3 or 5", args.nodes));
            }
            Target::Local { nodes: args.nodes }
        } else {
            let tuned = [
                ("--batch-entries-max", args.batch_entries_max.is_some()),
                ("--batch-bytes-max", args.batch_bytes_max.is_some()),
                ("--append-bytes-max", args.append_bytes_max.is_some()),
                (
                    "--inflight-messages-max",
                    args.inflight_messages_max.is_some(),
                ),
                ("--inflight-bytes-max", args.inflight_bytes_max.is_some()),
                ("--sync-inline", args.sync_inline.is_some()),
                ("--inline-turns", args.inline_turns.is_some()),
            ];
            if let Some((option, _)) = tuned.iter().find(|(_, given)| *given) {
                return Err(format!(
                    "{option} tunes the nodes the bench starts; it cannot change a cluster \
                     given with --connect"
                ));
            }
            Target::Connect {
                addrs: resolve_all(&args.connect)?,
            }
        };
        Ok(RunConfig {
            mode: args.mode,
            target,
            app: match args.mode {
                Mode::Log => "journal",
                Mode::Kv => "kv",
            },
            entry_bytes: args.entry_bytes,
            clients: args.clients,
            depth,
            batch,
            embedded: args.embedded,
            batch_given,
            load_loop: if args.rate.is_some() {
                "open"
            } else {
                "closed"
            },
            rate_per_sec: args.rate,
            warmup_sec: args.warmup,
            seconds: args.seconds,
            durability: args.durability,
            tuning: tuning(args)?,
            cluster_id: args.cluster_id,
            kv,
            sweep: None,
            dir: args.dir.clone(),
        })
    }

    /// The cluster's size for titles: `3` (local) or `connected` (`--connect`).
    pub fn nodes_label(&self) -> String {
        match &self.target {
            Target::Local { nodes } => nodes.to_string(),
            Target::Connect { addrs } => format!("{} connected", addrs.len()),
        }
    }

    /// This configuration with the swept knob set to `value` (validated like the option).
    pub fn with(&self, knob: SweepKnob, value: KnobValue) -> Result<RunConfig, String> {
        let mut config = self.clone();
        if knob == SweepKnob::ReadRatio {
            let Some(kv) = &mut config.kv else {
                return Err("--sweep read_ratio: needs --mode kv".to_string());
            };
            if !(0.0..=1.0).contains(&value.0) {
                return Err(format!("--sweep read_ratio={value}: must be 0..=1"));
            }
            kv.read_ratio = value.0;
            return Ok(config);
        }
        if knob == SweepKnob::Batch && self.kv.is_some() {
            return Err("--sweep batch: --batch is for --mode log only".to_string());
        }
        let (name, max) = match knob {
            SweepKnob::Clients => ("clients", CLIENTS_MAX),
            SweepKnob::Depth => ("depth", DEPTH_MAX),
            SweepKnob::EntryBytes => ("entry-bytes", ENTRY_BYTES_MAX),
            SweepKnob::Batch | SweepKnob::ReadRatio => ("batch", self.depth),
        };
        let value = value.count();
        if !(1..=max).contains(&value) {
            return Err(format!("--sweep {name}={value}: must be 1..={max}"));
        }
        match knob {
            SweepKnob::Clients => config.clients = value,
            SweepKnob::Depth => config.depth = value,
            SweepKnob::EntryBytes => config.entry_bytes = value,
            SweepKnob::Batch | SweepKnob::ReadRatio => {
                config.batch = value;
                config.batch_given = true;
            }
        }
        if !config.batch_given {
            config.batch = default_batch(config.depth, config.entry_bytes);
        }
        if config.batch.saturating_mul(config.entry_bytes + 4) > REQUEST_BYTES_MAX {
            return Err(format!(
                "--sweep {name}={value}: a request of {} x {} B entries would exceed \
                 {REQUEST_BYTES_MAX} bytes",
                config.batch, config.entry_bytes
            ));
        }
        Ok(config)
    }
}

impl Args {
    /// The base configuration and, with `--sweep`, the parsed sweep.
    pub fn validate(&self) -> Result<(RunConfig, Option<Sweep>), String> {
        let mut config = RunConfig::from_args(self)?;
        let sweep = self.sweep.as_deref().map(Sweep::parse).transpose()?;
        if let Some(sweep) = &sweep {
            for &value in &sweep.values {
                config.with(sweep.knob, value)?;
            }
        }
        if sweep.is_some() && self.plot.is_some() {
            return Err("--plot draws one run; it cannot be combined with --sweep".to_string());
        }
        config.sweep = sweep.clone();
        Ok((config, sweep))
    }
}

/// Refuses `--embedded` with what it does not drive: RESP commands, a cluster the bench did not
/// start (its nodes run no proposer threads), an open loop.
fn embedded_fits(args: &Args) -> Result<(), String> {
    if !args.embedded {
        return Ok(());
    }
    let refused = [
        (
            "--mode kv",
            args.mode == Mode::Kv,
            "it proposes opaque entries to the journal app (--mode log)",
        ),
        (
            "--connect",
            !args.connect.is_empty(),
            "the load runs inside the nodes the bench starts",
        ),
        ("--rate", args.rate.is_some(), "its load is a closed loop"),
    ];
    match refused.iter().find(|(_, given, _)| *given) {
        Some((option, _, why)) => Err(format!(
            "--embedded cannot be combined with {option}: {why}"
        )),
        None => Ok(()),
    }
}

/// The kv settings of `--mode kv` (validated), `None` in log mode (where giving one is an error).
fn kv_config(args: &Args) -> Result<Option<KvConfig>, String> {
    if args.mode == Mode::Log {
        let given = [
            ("--read-ratio", args.read_ratio.is_some()),
            ("--keys", args.keys.is_some()),
            ("--zipf", args.zipf.is_some()),
            ("--read-mode", args.read_mode.is_some()),
        ];
        if let Some((option, _)) = given.iter().find(|(_, given)| *given) {
            return Err(format!("{option} shapes the kv load: it needs --mode kv"));
        }
        return Ok(None);
    }
    let read_ratio = args.read_ratio.unwrap_or(DEFAULT_READ_RATIO);
    if !(0.0..=1.0).contains(&read_ratio) {
        return Err(format!(
            "--read-ratio {read_ratio}: must be 0.0..=1.0 (the share of GETs)"
        ));
    }
    let keys = args.keys.unwrap_or(DEFAULT_KEYS);
    if !(1..=KEYS_MAX).contains(&keys) {
        return Err(format!("--keys {keys}: must be 1..={KEYS_MAX}"));
    }
    if let Some(zipf) = args.zipf {
        if !(zipf > 0.0 && zipf < 1.0) {
            return Err(format!(
                "--zipf {zipf}: the exponent must be more than 0 and less than 1 (e.g. 0.99)"
            ));
        }
    }
    let read_mode =
        match (args.read_mode, args.connect.is_empty()) {
            (Some(_), false) => return Err(
                "--read-mode sets the read mode of the nodes the bench starts; a cluster given \
                 with --connect reads in its own (tuning.read_mode there)"
                    .to_string(),
            ),
            (Some(mode), true) => mode.name().to_string(),
            (None, true) => Tuning::default().read_mode,
            (None, false) => "as configured".to_string(),
        };
    Ok(Some(KvConfig {
        read_ratio,
        keys,
        zipf: args.zipf,
        read_mode,
    }))
}

/// The default entries per request for `depth` entries in flight of `entry_bytes` each.
fn default_batch(depth: usize, entry_bytes: usize) -> usize {
    DEFAULT_BATCH
        .min(depth)
        .min(REQUEST_BYTES_MAX / (entry_bytes + 4))
        .max(1)
}

fn tuning(args: &Args) -> Result<Tuning, String> {
    let mut tuning = Tuning::default();
    if args.durability == Durability::None {
        tuning.sync = "none".to_string();
    }
    let positive = |option: &str, value: u64| {
        if value == 0 {
            Err(format!("{option} 0: must be more than 0"))
        } else {
            Ok(())
        }
    };
    if let Some(value) = args.batch_entries_max {
        positive("--batch-entries-max", value.into())?;
        tuning.batch_entries_max = value;
    }
    if let Some(value) = args.batch_bytes_max {
        positive("--batch-bytes-max", value.into())?;
        tuning.batch_bytes_max = value;
    }
    if let Some(value) = args.append_bytes_max {
        positive("--append-bytes-max", value.into())?;
        tuning.append_bytes_max = value;
    }
    if let Some(value) = args.inflight_messages_max {
        positive("--inflight-messages-max", value.into())?;
        tuning.inflight_messages_max = value;
    }
    if let Some(value) = args.inflight_bytes_max {
        positive("--inflight-bytes-max", value)?;
        tuning.inflight_bytes_max = value;
    }
    if let Some(mode) = args.read_mode {
        tuning.read_mode = mode.name().to_string();
    }
    if let Some(inline) = args.sync_inline {
        tuning.sync_inline = inline;
    }
    if let Some(inline) = args.inline_turns {
        tuning.inline_turns = inline;
    }
    Ok(tuning)
}

fn resolve_all(addrs: &[String]) -> Result<Vec<SocketAddr>, String> {
    addrs
        .iter()
        .map(|addr| {
            addr.to_socket_addrs()
                .map_err(|error| format!("--connect {addr}: {error}"))?
                .next()
                .ok_or_else(|| format!("--connect {addr}: no address"))
        })
        .collect()
}

impl Describe for RunConfig {
    fn rows(&self) -> Vec<(String, String)> {
        let cluster = match &self.target {
            Target::Local { nodes } => format!("{nodes} local node processes, app {}", self.app),
            Target::Connect { addrs } => format!(
                "existing cluster at {}",
                addrs
                    .iter()
                    .map(SocketAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        };
        let unit = if self.kv.is_some() {
            "commands"
        } else {
            "entries"
        };
        let load = match self.rate_per_sec {
            Some(rate) => format!("open loop at {rate} {unit}/s (latency from intended send)"),
            None if self.embedded => {
                "closed loop, embedded: in each node process, through the embedding API".to_string()
            }
            None => "closed loop".to_string(),
        };
        let tuning = &self.tuning;
        let mut rows = vec![("mode".into(), format!("{:?}", self.mode).to_lowercase())];
        rows.push(("cluster".into(), cluster));
        match &self.kv {
            None => {
                rows.push(("entry".into(), format!("{} B", self.entry_bytes)));
                let (clients, one, many) = if self.embedded {
                    ("proposer threads per node", "propose", "propose_batch")
                } else {
                    ("connections", "Propose", "ProposeBatch")
                };
                rows.push((
                    "clients".into(),
                    format!("{} {clients} x {} in flight", self.clients, self.depth),
                ));
                rows.push((
                    "requests".into(),
                    if self.batch == 1 {
                        format!("one entry per request ({one})")
                    } else {
                        format!("{} entries per request ({many})", self.batch)
                    },
                ));
            }
            Some(kv) => {
                rows.push((
                    "commands".into(),
                    format!(
                        "RESP GET {} % / SET {} %, {} B values, {} keys {}, reads: {}",
                        crate::report::round_to(kv.read_ratio * 100.0, 1),
                        crate::report::round_to((1.0 - kv.read_ratio) * 100.0, 1),
                        self.entry_bytes,
                        kv.keys,
                        kv.zipf
                            .map_or_else(|| "uniform".to_string(), |s| format!("zipf {s}")),
                        kv.read_mode
                    ),
                ));
                rows.push((
                    "clients".into(),
                    format!(
                        "{} connections x {} commands in flight (pipelined)",
                        self.clients, self.depth
                    ),
                ));
            }
        }
        rows.push(("load".into(), load));
        rows.extend([
            (
                "time".into(),
                format!("{} s warm-up, {} s measured", self.warmup_sec, self.seconds),
            ),
            (
                "durability".into(),
                match self.durability {
                    Durability::Fsync => format!("fsync ({})", tuning.sync),
                    Durability::None => "NONE: no syncs, NOT durable".to_string(),
                },
            ),
            (
                "batch".into(),
                format!(
                    "<= {} entries, <= {} B",
                    tuning.batch_entries_max, tuning.batch_bytes_max
                ),
            ),
            (
                "window".into(),
                format!(
                    "<= {} messages, <= {} B in flight per follower, <= {} B per append",
                    tuning.inflight_messages_max,
                    tuning.inflight_bytes_max,
                    tuning.append_bytes_max
                ),
            ),
        ]);
        if let Some(sweep) = &self.sweep {
            let values: Vec<String> = sweep.values.iter().map(KnobValue::to_string).collect();
            rows.push((
                "sweep".into(),
                format!("{}={} (one run each)", sweep.knob_name(), values.join(",")),
            ));
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(line: &[&str]) -> Result<(RunConfig, Option<Sweep>), String> {
        let cli =
            Cli::try_parse_from(std::iter::once("lockstep-bench").chain(line.iter().copied()))
                .map_err(|error| error.to_string())?;
        cli.args.validate()
    }

    #[test]
    fn defaults_are_a_closed_loop_three_node_fsync_run() {
        let (config, sweep) = parse(&[]).unwrap();
        assert_eq!(config.target, Target::Local { nodes: 3 });
        assert_eq!(config.mode, Mode::Log);
        assert_eq!(config.entry_bytes, 16);
        assert_eq!((config.clients, config.depth, config.batch), (8, 8192, 64));
        assert_eq!(config.load_loop, "closed");
        assert_eq!(config.durability, Durability::Fsync);
        assert_eq!(config.tuning, Tuning::default());
        assert!(sweep.is_none());
    }

    #[test]
    fn knobs_reach_the_config_and_the_tuning() {
        let (config, _) = parse(&[
            "--nodes",
            "5",
            "--entry-bytes",
            "128",
            "--clients",
            "2",
            "--depth",
            "1",
            "--seconds",
            "0.5",
            "--warmup",
            "0",
            "--rate",
            "1000",
            "--batch-entries-max",
            "64",
            "--inflight-bytes-max",
            "1048576",
        ])
        .unwrap();
        assert_eq!(config.target, Target::Local { nodes: 5 });
        assert_eq!(
            (config.entry_bytes, config.clients, config.depth),
            (128, 2, 1)
        );
        assert_eq!(config.batch, 1, "the default batch yields to --depth 1");
        assert_eq!((config.seconds, config.warmup_sec), (0.5, 0.0));
        assert_eq!(
            (config.load_loop, config.rate_per_sec),
            ("open", Some(1000.0))
        );
        assert_eq!(config.tuning.batch_entries_max, 64);
        assert_eq!(config.tuning.inflight_bytes_max, 1 << 20);
    }

    #[test]
    fn bad_values_are_refused_naming_the_option() {
        for (line, option) in [
            (&["--nodes", "2"][..], "--nodes"),
            (&["--entry-bytes", "0"][..], "--entry-bytes"),
            (&["--clients", "0"][..], "--clients"),
            (&["--depth", "0"][..], "--depth"),
            (&["--batch", "0"][..], "--batch"),
            (&["--depth", "4", "--batch", "8"][..], "--batch"),
            (
                &["--entry-bytes", "1048576", "--batch", "64"][..],
                "--batch",
            ),
            (&["--sweep", "batch=1,10000"][..], "--sweep"),
            (&["--seconds", "0"][..], "--seconds"),
            (&["--warmup=-1"][..], "--warmup"),
            (&["--rate", "0"][..], "--rate"),
            (
                &["--durability", "none", "--connect", "127.0.0.1:1"][..],
                "--durability",
            ),
            (&["--batch-bytes-max", "0"][..], "--batch-bytes-max"),
            (&["--sweep", "clients"][..], "--sweep"),
            (&["--sweep", "threads=1,2"][..], "--sweep"),
            (&["--sweep", "clients=1,x"][..], "--sweep"),
            (&["--sweep", "depth=1,0"][..], "--sweep"),
            (&["--sweep", "depth=1", "--plot", "x.svg"][..], "--plot"),
            (
                &["--connect", "127.0.0.1:1", "--batch-entries-max", "8"][..],
                "--batch-entries-max",
            ),
            (&["--connect", "not an address"][..], "--connect"),
        ] {
            let error = parse(line).expect_err(&format!("{line:?} was accepted"));
            assert!(error.contains(option), "{line:?}: {error}");
        }
    }

    #[test]
    fn embedded_runs_a_local_closed_log_load_only() {
        let (config, _) = parse(&["--embedded", "--clients", "2", "--batch", "1"]).unwrap();
        assert!(config.embedded);
        assert_eq!(
            (config.mode, config.clients, config.batch),
            (Mode::Log, 2, 1)
        );
        assert_eq!(serde_json::to_value(&config).unwrap()["embedded"], true);
        let (plain, _) = parse(&[]).unwrap();
        assert!(!plain.embedded);
        assert_eq!(serde_json::to_value(&plain).unwrap()["embedded"], false);
        for (line, option) in [
            (&["--embedded", "--mode", "kv"][..], "--mode kv"),
            (&["--embedded", "--connect", "127.0.0.1:1"][..], "--connect"),
            (&["--embedded", "--rate", "1000"][..], "--rate"),
        ] {
            let error = parse(line).expect_err(&format!("{line:?} was accepted"));
            assert!(error.contains("--embedded"), "{line:?}: {error}");
            assert!(error.contains(option), "{line:?}: {error}");
        }
    }

    #[test]
    fn sweeps_and_connect_parse() {
        let (config, sweep) = parse(&[
            "--connect",
            "127.0.0.1:6001,127.0.0.1:6002",
            "--sweep",
            "clients=1,16,256",
        ])
        .unwrap();
        let addrs: Vec<SocketAddr> = vec![
            "127.0.0.1:6001".parse().unwrap(),
            "127.0.0.1:6002".parse().unwrap(),
        ];
        assert_eq!(config.target, Target::Connect { addrs });
        let sweep = sweep.unwrap();
        assert_eq!(sweep.knob, SweepKnob::Clients);
        assert_eq!(
            sweep.values,
            vec![KnobValue(1.0), KnobValue(16.0), KnobValue(256.0)]
        );
        let point = config.with(sweep.knob, KnobValue(16.0)).unwrap();
        assert_eq!(point.clients, 16);
        // The default batch adapts to each point; a given one does not.
        let count = |value: usize| KnobValue(value as f64);
        assert_eq!(config.with(SweepKnob::Depth, count(8)).unwrap().batch, 8);
        assert_eq!(
            config
                .with(SweepKnob::EntryBytes, count(16 << 20))
                .unwrap()
                .batch,
            1
        );
        let (given, _) = parse(&["--batch", "32"]).unwrap();
        assert!(given.with(SweepKnob::Depth, count(8)).unwrap().batch == 32);
        assert_eq!(
            Sweep::parse("entry-bytes=16,4096").unwrap().knob,
            SweepKnob::EntryBytes
        );
    }

    #[test]
    fn kv_mode_takes_its_knobs_and_defaults() {
        let (config, _) = parse(&["--mode", "kv"]).unwrap();
        assert_eq!(config.mode, Mode::Kv);
        assert_eq!(config.app, "kv");
        assert_eq!((config.depth, config.batch), (DEFAULT_DEPTH_KV, 1));
        assert_eq!(
            config.kv,
            Some(KvConfig {
                read_ratio: DEFAULT_READ_RATIO,
                keys: DEFAULT_KEYS,
                zipf: None,
                read_mode: "index".to_string(),
            })
        );
        let (config, _) = parse(&[
            "--mode",
            "kv",
            "--read-ratio",
            "0.9",
            "--keys",
            "1000",
            "--zipf",
            "0.99",
            "--value-bytes",
            "128",
            "--depth",
            "64",
            "--read-mode",
            "lease",
        ])
        .unwrap();
        let kv = config.kv.clone().unwrap();
        assert_eq!((kv.read_ratio, kv.keys, kv.zipf), (0.9, 1000, Some(0.99)));
        assert_eq!(kv.read_mode, "lease");
        assert_eq!(config.tuning.read_mode, "lease");
        assert_eq!((config.entry_bytes, config.depth), (128, 64));
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["kv"]["read_ratio"], 0.9);
        assert_eq!(json["mode"], "kv");
        // Log mode keeps its own defaults and has no kv section.
        let (log, _) = parse(&["--mode", "log"]).unwrap();
        assert_eq!(log.depth, DEFAULT_DEPTH_LOG);
        assert!(serde_json::to_value(&log).unwrap().get("kv").is_none());
        // A connected cluster reads in its own mode.
        let (connected, _) = parse(&["--mode", "kv", "--connect", "127.0.0.1:6380"]).unwrap();
        assert_eq!(connected.kv.unwrap().read_mode, "as configured");
    }

    #[test]
    fn kv_knobs_are_refused_where_they_do_not_apply() {
        for (line, option) in [
            (&["--read-ratio", "0.5"][..], "--read-ratio"),
            (&["--keys", "10"][..], "--keys"),
            (&["--zipf", "0.9"][..], "--zipf"),
            (&["--read-mode", "lease"][..], "--read-mode"),
            (&["--mode", "kv", "--read-ratio", "1.5"][..], "--read-ratio"),
            (&["--mode", "kv", "--read-ratio=-0.1"][..], "--read-ratio"),
            (&["--mode", "kv", "--keys", "0"][..], "--keys"),
            (&["--mode", "kv", "--keys", "1000000000"][..], "--keys"),
            (&["--mode", "kv", "--zipf", "1"][..], "--zipf"),
            (&["--mode", "kv", "--zipf", "0"][..], "--zipf"),
            (&["--mode", "kv", "--batch", "8"][..], "--batch"),
            (
                &["--mode", "kv", "--sweep", "batch=1,8"][..],
                "--sweep batch",
            ),
            (&["--sweep", "read_ratio=0,0.5"][..], "--mode kv"),
            (
                &["--mode", "kv", "--sweep", "read_ratio=0,2"][..],
                "--sweep",
            ),
            (
                &[
                    "--mode",
                    "kv",
                    "--read-mode",
                    "lease",
                    "--connect",
                    "127.0.0.1:1",
                ][..],
                "--read-mode",
            ),
            (&["--mode", "kv", "--read-mode", "fast"][..], "fast"),
        ] {
            let error = parse(line).expect_err(&format!("{line:?} was accepted"));
            assert!(error.contains(option), "{line:?}: {error}");
        }
    }

    #[test]
    fn a_kv_sweep_of_the_read_ratio() {
        let (config, sweep) = parse(&["--mode", "kv", "--sweep", "read_ratio=0,0.5,0.9"]).unwrap();
        let sweep = sweep.unwrap();
        assert_eq!(sweep.knob_name(), "read_ratio");
        let ratios: Vec<f64> = sweep
            .values
            .iter()
            .map(|&value| {
                config
                    .with(sweep.knob, value)
                    .unwrap()
                    .kv
                    .unwrap()
                    .read_ratio
            })
            .collect();
        assert_eq!(ratios, [0.0, 0.5, 0.9]);
        // Whole values are written as integers, ratios as they are.
        assert_eq!(serde_json::to_string(&sweep.values).unwrap(), "[0,0.5,0.9]");
        let clients = parse(&["--mode", "kv", "--sweep", "clients=1,4"]).unwrap();
        assert_eq!(clients.1.unwrap().values, [KnobValue(1.0), KnobValue(4.0)]);
    }
}
