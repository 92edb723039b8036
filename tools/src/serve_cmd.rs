//! `lockstep serve`: run one node. Options come from `--config FILE` (TOML, see
//! `docs/CONFIG.md`) and from flags; a flag overrides the file's value, and an option neither
//! gives takes its default. `id`, `cluster_id`, `data_dir`, `app` and at least one member are
//! required from one or the other; every missing one is named in one message. The help shows
//! each setting's default as the code defines it ([`with_defaults_in_help`]).
//!
//! Exit status: 0 after a clean shutdown on SIGINT/SIGTERM; 1 when the configuration is bad (the
//! message names the option) or the node fails; 2 for flags clap rejects.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use lockstep_server::apps::AppKind;
use lockstep_server::security::Limits;
use lockstep_server::security::TlsFiles;
use lockstep_server::{
    self, ConfigLayer, LogFormat, MemberConfig, ServerConfig, ServerError, Tuning,
};

use crate::{env_setting, LOG_ENV, LOG_FORMAT_ENV};

/// Arguments of `lockstep serve`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Every option is documented in docs/CONFIG.md. The node prints \
`lockstep node <id> ready: peer <addr> client <addr>` on stdout once it serves; logs go to \
stderr: level from --log-level, else LOCKSTEP_LOG, else the file's log_level, else info; \
format likewise from --log-format, LOCKSTEP_LOG_FORMAT, log_format (text or json)."
)]
pub struct Args {
    /// TOML configuration file; flags override its values.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// This node's id (not 0; one of the members).
    #[arg(long, value_name = "N")]
    id: Option<u64>,
    /// The cluster id: peers and clients presenting another one are refused.
    #[arg(long, value_name = "N")]
    cluster_id: Option<u64>,
    /// Directory of the log, hard state and snapshots (created if missing).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// State machine: `kv` (key-value store), `bank` (ledger), `lock` (lock service) or `journal`
    /// (opaque entries, counted and hashed).
    #[arg(long, value_name = "APP", value_parser = parse_app)]
    app: Option<AppKind>,
    /// A cluster member as ID=PEER_ADDR/CLIENT_ADDR, e.g. 1=127.0.0.1:7001/127.0.0.1:6380.
    /// Repeat for every member (this node included); replaces the file's member list.
    #[arg(long = "member", value_name = "ID=PEER/CLIENT", value_parser = MemberConfig::parse)]
    members: Vec<MemberConfig>,
    /// Start a new data directory as a node joining an existing cluster: it waits, neither
    /// campaigning nor voting, until the leader adds it (`lockstep member add`). `--member`
    /// then lists the current members and this node. Ignored once the data directory holds a
    /// log.
    #[arg(long)]
    join: bool,
    /// Serve Prometheus metrics over HTTP on HOST:PORT (`GET /metrics`) [default: off].
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<SocketAddr>,
    /// Log filter: a level (`error`, `warn`, `info`, `debug`, `trace`) or per-module
    /// directives (`lockstep=debug,info`); wins over LOCKSTEP_LOG and the file [default: info].
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Log format: `text` or `json` (one object per line); wins over LOCKSTEP_LOG_FORMAT and
    /// the file [default: text].
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Length of one consensus tick, milliseconds.
    #[arg(long, value_name = "MS")]
    tick_ms: Option<u64>,
    /// Election timeout base in ticks (timeouts are drawn from [N, 2N)).
    #[arg(long, value_name = "TICKS")]
    election_ticks: Option<u32>,
    /// Leader heartbeat interval in ticks, below the election timeout.
    #[arg(long, value_name = "TICKS")]
    heartbeat_ticks: Option<u32>,
    /// Most proposals gathered into one batch.
    #[arg(long, value_name = "N")]
    batch_entries_max: Option<u32>,
    /// Most payload bytes gathered into one batch.
    #[arg(long, value_name = "BYTES")]
    batch_bytes_max: Option<u32>,
    /// Most payload bytes per append message to a follower.
    #[arg(long, value_name = "BYTES")]
    append_bytes_max: Option<u32>,
    /// Per-follower pipelining window: most append messages in flight.
    #[arg(long, value_name = "N")]
    inflight_messages_max: Option<u32>,
    /// Per-follower pipelining window: most payload bytes in flight.
    #[arg(long, value_name = "BYTES")]
    inflight_bytes_max: Option<u64>,
    /// Snapshot the state machine (and compact the log) after this many applied entries.
    #[arg(long, value_name = "N")]
    snapshot_entries: Option<u64>,
    /// ... or after this many bytes of applied entries, whichever comes first.
    #[arg(long, value_name = "BYTES")]
    snapshot_bytes: Option<u64>,
    /// Size of each preallocated log segment, a multiple of 4096.
    #[arg(long, value_name = "BYTES")]
    segment_bytes: Option<u64>,
    /// How the log is made durable: `io_uring` (falls back to fdatasync when unavailable),
    /// `fdatasync`, or `none` (no syncs at all: NOT durable, for benchmarks only).
    #[arg(long, value_name = "MODE")]
    sync: Option<String>,
    /// How records reach a segment: `pwrite` (vectored writes into the file) or `mmap` (copy
    /// into the mapped segment).
    #[arg(long, value_name = "MODE")]
    append_mode: Option<String>,
    /// Pin the four stage threads, in the order network, consensus, storage, apply, to these
    /// cores, e.g. 2,3,4,5 (a shorter list wraps around: 0,1 puts network and storage on 0);
    /// an empty string: no pinning.
    #[arg(long, value_name = "CORES", value_parser = parse_cores)]
    cpu_affinity: Option<CoreList>,
    /// Bound of each inter-stage channel, in batches.
    #[arg(long, value_name = "N")]
    channel_capacity: Option<usize>,
    /// Largest frame accepted or sent on any connection, bytes.
    #[arg(long, value_name = "BYTES")]
    max_frame_bytes: Option<u32>,
    /// Sync rounds the log keeps in flight at once, 1..=64.
    #[arg(long, value_name = "N")]
    syncs_in_flight: Option<usize>,
    /// Sync on the storage thread itself when it has nothing else to do and no round runs
    /// (pwrite append mode only): true or false.
    #[arg(long, value_name = "BOOL")]
    sync_inline: Option<bool>,
    /// Let the network thread run light consensus turns itself while the consensus stage is
    /// idle: true or false.
    #[arg(long, value_name = "BOOL")]
    inline_turns: Option<bool>,
    /// SO_SNDBUF / SO_RCVBUF requested for every socket, bytes.
    #[arg(long, value_name = "BYTES")]
    socket_buffer_bytes: Option<usize>,
    /// How linearizable reads are confirmed: "index" (a heartbeat round to a quorum) or
    /// "lease" (no round while the leader's lease holds; assumes bounded clock drift).
    #[arg(long, value_name = "MODE")]
    read_mode: Option<String>,
    /// File holding the secret all members share (at least 32 bytes; one trailing newline is
    /// ignored): peers must prove they know it before their messages are read, and a peer
    /// without it is refused [default: peers are not authenticated].
    #[arg(long, value_name = "FILE")]
    peer_secret_file: Option<PathBuf>,
    /// File holding the password of the `default` client user (AUTH, native hello); without
    /// it clients need no password [default: none].
    #[arg(long, value_name = "FILE")]
    client_password_file: Option<PathBuf>,
    /// File holding the password of the read-only client user `reader` [default: none].
    #[arg(long, value_name = "FILE")]
    readonly_password_file: Option<PathBuf>,
    /// Most concurrent client connections.
    #[arg(long, value_name = "N")]
    max_clients: Option<usize>,
    /// Largest client request (RESP command or native frame), bytes.
    #[arg(long, value_name = "BYTES")]
    max_request_bytes: Option<usize>,
    /// Most request bytes a RESP connection may have read and not yet answered; reading
    /// pauses there.
    #[arg(long, value_name = "BYTES")]
    max_pipelined_bytes: Option<usize>,
    /// Close a client connection idle this long, ms; 0 = never.
    #[arg(long, value_name = "MS")]
    idle_timeout_ms: Option<u64>,
    /// Close a client that leaves its replies unread this long, ms; 0 = never.
    #[arg(long, value_name = "MS")]
    slow_client_timeout_ms: Option<u64>,
    /// TLS: this node's certificate chain (PEM); with --tls-key-file and --tls-ca-file turns TLS
    /// on (see --tls-ports) [default: no TLS].
    #[arg(long, value_name = "FILE")]
    tls_cert_file: Option<PathBuf>,
    /// TLS: this node's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE")]
    tls_key_file: Option<PathBuf>,
    /// TLS: the CA certificate(s) (PEM) peers' certificates must chain to.
    #[arg(long, value_name = "FILE")]
    tls_ca_file: Option<PathBuf>,
    /// TLS: which ports speak it, `both`, `client` or `peer` [default: both].
    #[arg(long, value_name = "PORTS", value_parser = parse_tls_ports)]
    tls_ports: Option<(bool, bool)>,
    /// How long an idle stage polls its inputs before blocking, µs (0 = never spin; at most
    /// 10000).
    #[arg(long, value_name = "US")]
    spin_us: Option<u64>,
}

/// Every tuning and limit setting's default, taken from the code ([`Tuning::default`],
/// [`Limits::default`]), as (the setting's name, which is also its flag's argument id; the
/// value as the help shows it).
fn setting_defaults() -> Vec<(String, String)> {
    let sections = [
        serde_json::to_value(Tuning::default()),
        serde_json::to_value(Limits::default()),
    ];
    let mut defaults = Vec::new();
    for section in sections {
        let section = section.expect("the default settings serialize");
        let serde_json::Value::Object(fields) = section else {
            panic!("a settings section serializes as an object, not {section}");
        };
        for (name, value) in fields {
            let shown = match value {
                serde_json::Value::String(text) => text,
                serde_json::Value::Array(items) if items.is_empty() => "none".to_string(),
                other => other.to_string(),
            };
            defaults.push((name, shown));
        }
    }
    defaults
}

/// The `serve` command with each tuning and limit flag's help ending in `[default: VALUE]`,
/// VALUE taken from the code's defaults, so the help cannot drift from them.
pub fn with_defaults_in_help(command: clap::Command) -> clap::Command {
    let mut command = command;
    for (id, value) in setting_defaults() {
        assert!(
            command
                .get_arguments()
                .any(|arg| arg.get_id() == id.as_str()),
            "the setting `{id}` has no `lockstep serve` flag"
        );
        command = command.mut_arg(id, |arg| {
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            arg.help(format!("{help} [default: {value}]"))
        });
    }
    command
}

/// Parses `--tls-ports` into (client, peer).
fn parse_tls_ports(text: &str) -> Result<(bool, bool), String> {
    match text {
        "both" => Ok((true, true)),
        "client" => Ok((true, false)),
        "peer" => Ok((false, true)),
        other => Err(format!(
            "{other:?} is not a port choice (expected \"both\", \"client\" or \"peer\")"
        )),
    }
}

/// A parsed `--cpu-affinity` list (a named type so clap does not treat it as repeated values).
#[derive(Clone, Debug)]
struct CoreList(Vec<usize>);

pub(crate) fn parse_app(text: &str) -> Result<AppKind, String> {
    AppKind::from_name(text)
        .ok_or_else(|| format!("{text:?} is not an app (expected {})", AppKind::NAMES))
}

fn parse_cores(text: &str) -> Result<CoreList, String> {
    if text.trim().is_empty() {
        return Ok(CoreList(Vec::new()));
    }
    text.split(',')
        .map(|core| {
            core.trim()
                .parse::<usize>()
                .map_err(|e| format!("core id {core:?}: {e}"))
        })
        .collect::<Result<Vec<usize>, String>>()
        .map(CoreList)
}

impl Args {
    /// The configuration: the file (if any) with the flags applied, validated.
    fn config(self) -> Result<ServerConfig, String> {
        let source = match &self.config {
            Some(path) => format!("{} with flags", path.display()),
            None => "flags".to_string(),
        };
        let mut layer = match &self.config {
            Some(path) => ConfigLayer::parse_file(path).map_err(|e| e.to_string())?,
            None => ConfigLayer::default(),
        };
        self.apply_to(&mut layer);
        let config = layer.complete().map_err(|e| {
            format!("{source}: {e}: give them as flags or in the --config file (docs/CONFIG.md)")
        })?;
        config
            .validate()
            .map_err(|e| e.in_source(&source).to_string())?;
        Ok(config)
    }

    fn apply_to(self, config: &mut ConfigLayer) {
        fn set<T>(target: &mut T, value: Option<T>) {
            if let Some(value) = value {
                *target = value;
            }
        }
        fn set_some<T>(target: &mut Option<T>, value: Option<T>) {
            if value.is_some() {
                *target = value;
            }
        }
        set_some(&mut config.id, self.id);
        set_some(&mut config.cluster_id, self.cluster_id);
        set_some(&mut config.data_dir, self.data_dir);
        set_some(&mut config.app, self.app);
        set_some(&mut config.metrics_addr, self.metrics_addr);
        set_some(&mut config.log_level, self.log_level);
        set_some(&mut config.log_format, self.log_format);
        if !self.members.is_empty() {
            config.members = self.members;
        }
        config.join |= self.join;
        set_some(&mut config.security.peer_secret_file, self.peer_secret_file);
        let tuning = &mut config.tuning;
        set(&mut tuning.tick_ms, self.tick_ms);
        set(&mut tuning.election_ticks, self.election_ticks);
        set(&mut tuning.heartbeat_ticks, self.heartbeat_ticks);
        set(&mut tuning.batch_entries_max, self.batch_entries_max);
        set(&mut tuning.batch_bytes_max, self.batch_bytes_max);
        set(&mut tuning.append_bytes_max, self.append_bytes_max);
        set(
            &mut tuning.inflight_messages_max,
            self.inflight_messages_max,
        );
        set(&mut tuning.inflight_bytes_max, self.inflight_bytes_max);
        set(&mut tuning.snapshot_entries, self.snapshot_entries);
        set(&mut tuning.snapshot_bytes, self.snapshot_bytes);
        set(&mut tuning.segment_bytes, self.segment_bytes);
        set(&mut tuning.sync, self.sync);
        set(&mut tuning.append_mode, self.append_mode);
        set(
            &mut tuning.cpu_affinity,
            self.cpu_affinity.map(|cores| cores.0),
        );
        set(&mut tuning.channel_capacity, self.channel_capacity);
        set(&mut tuning.max_frame_bytes, self.max_frame_bytes);
        set(&mut tuning.syncs_in_flight, self.syncs_in_flight);
        set(&mut tuning.sync_inline, self.sync_inline);
        set(&mut tuning.inline_turns, self.inline_turns);
        set(&mut tuning.socket_buffer_bytes, self.socket_buffer_bytes);
        set(&mut tuning.read_mode, self.read_mode);
        set(&mut tuning.spin_us, self.spin_us);
        let security = &mut config.security;
        set_some(
            &mut security.client_password_file,
            self.client_password_file,
        );
        set_some(
            &mut security.readonly_password_file,
            self.readonly_password_file,
        );
        let limits = &mut config.limits;
        set(&mut limits.max_clients, self.max_clients);
        set(&mut limits.max_request_bytes, self.max_request_bytes);
        set(&mut limits.max_pipelined_bytes, self.max_pipelined_bytes);
        set(&mut limits.idle_timeout_ms, self.idle_timeout_ms);
        set(
            &mut limits.slow_client_timeout_ms,
            self.slow_client_timeout_ms,
        );
        let tls_flags = self.tls_cert_file.is_some()
            || self.tls_key_file.is_some()
            || self.tls_ca_file.is_some()
            || self.tls_ports.is_some();
        if tls_flags {
            // Files not given here nor in the file stay empty, which validation names.
            let tls = config.security.tls.get_or_insert_with(|| TlsFiles {
                cert_file: PathBuf::new(),
                key_file: PathBuf::new(),
                ca_file: PathBuf::new(),
                client: true,
                peer: true,
            });
            set(&mut tls.cert_file, self.tls_cert_file);
            set(&mut tls.key_file, self.tls_key_file);
            set(&mut tls.ca_file, self.tls_ca_file);
            if let Some((client, peer)) = self.tls_ports {
                tls.client = client;
                tls.peer = peer;
            }
        }
    }
}

/// Sets up logging with the filter and format from the flag, else the environment, else the file, else the default.
/// `flags` are the `--log-level` and `--log-format` values (already merged into `config`).
fn log_settings(
    config: &ServerConfig,
    flags: (Option<String>, Option<String>),
) -> Result<(), String> {
    let (level_flag, format_flag) = flags;
    let format = match format_flag
        .is_none()
        .then(|| env_setting(LOG_FORMAT_ENV))
        .flatten()
    {
        Some(name) => LogFormat::from_name(&name)
            .map_err(|why| format!("environment variable {LOG_FORMAT_ENV}: {why}"))?,
        None => config
            .log_format()
            .map_err(|e| e.to_string())?
            .unwrap_or(LogFormat::Text),
    };
    let (level, source) = match (level_flag, env_setting(LOG_ENV), &config.log_level) {
        (Some(flag), _, _) => (flag, "--log-level"),
        (None, Some(env), _) => (env, LOG_ENV),
        (None, None, Some(file)) => (file.clone(), "the file's log_level"),
        (None, None, None) => ("info".to_string(), "the default"),
    };
    crate::init_logging(&level, format).map_err(|why| {
        ServerError::option("log_level", format!("{why} (from {source})")).to_string()
    })
}

/// Runs the subcommand.
pub fn run(args: Args) -> ExitCode {
    let flags = (args.log_level.clone(), args.log_format.clone());
    let result = args.config().and_then(|config| {
        log_settings(&config, flags)?;
        lockstep_server::run(config).map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("lockstep serve: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Args as _;

    fn serve_command() -> clap::Command {
        with_defaults_in_help(Args::augment_args(clap::Command::new("serve")))
    }

    fn help_of(command: &clap::Command, id: &str) -> String {
        let arg = command
            .get_arguments()
            .find(|arg| arg.get_id() == id)
            .unwrap_or_else(|| panic!("no flag --{id}"));
        arg.get_help().map(ToString::to_string).unwrap_or_default()
    }

    #[test]
    fn every_setting_flag_shows_the_code_default_once() {
        let command = serve_command();
        for (id, value) in setting_defaults() {
            let help = help_of(&command, &id);
            assert!(
                help.ends_with(&format!("[default: {value}]")),
                "--{id}: {help}"
            );
            assert_eq!(help.matches("[default:").count(), 1, "--{id}: {help}");
        }
        let tuning = Tuning::default();
        assert!(help_of(&command, "append_mode")
            .ends_with(&format!("[default: {}]", tuning.append_mode)));
        assert!(help_of(&command, "sync").contains("`none`"));
    }

    fn config_of(flags: &[&str]) -> Result<ServerConfig, String> {
        crate::parse_flags::<Args>("serve", flags)
            .expect("flags parse")
            .config()
    }

    const MEMBER: &str = "1=127.0.0.1:7001/127.0.0.1:6380";

    #[test]
    fn a_file_of_tuning_only_and_flags_for_the_rest_make_one_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tuning.toml");
        std::fs::write(&file, "[tuning]\nsync = \"fdatasync\"\ntick_ms = 5\n").unwrap();
        let data = dir.path().join("data");
        let config = config_of(&[
            "--config",
            file.to_str().unwrap(),
            "--id",
            "1",
            "--cluster-id",
            "7",
            "--data-dir",
            data.to_str().unwrap(),
            "--app",
            "kv",
            "--member",
            MEMBER,
            "--tick-ms",
            "2",
        ])
        .unwrap();
        assert_eq!((config.id, config.cluster_id), (1, 7));
        assert_eq!(config.data_dir, data);
        assert_eq!(config.members.len(), 1);
        assert_eq!(config.tuning.sync, "fdatasync", "the file's value");
        assert_eq!(config.tuning.tick_ms, 2, "the flag wins over the file");
        assert_eq!(
            config.tuning.segment_bytes,
            Tuning::default().segment_bytes,
            "neither gives it: the default"
        );
    }

    #[test]
    fn every_missing_required_option_is_named_at_once() {
        let error = config_of(&["--id", "1"]).unwrap_err();
        for named in ["--cluster-id", "--data-dir", "--app", "--member"] {
            assert!(error.contains(named), "{named} missing from: {error}");
        }
        assert!(!error.contains("(flag --id)"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("partial.toml");
        std::fs::write(&file, "id = 1\napp = \"kv\"\n").unwrap();
        let error =
            config_of(&["--config", file.to_str().unwrap(), "--member", MEMBER]).unwrap_err();
        assert!(
            error.contains("`cluster_id` (flag --cluster-id)")
                && error.contains("`data_dir` (flag --data-dir)")
                && error.contains("partial.toml"),
            "{error}"
        );
    }
}
