//! The history of a kv chaos run: every client operation with its arguments, its invocation and
//! completion times (nanoseconds since the run started) and its outcome, and the versioned
//! JSON-lines file it is written to (see docs/CHAOS.md, "History file").
//!
//! Outcomes follow Jepsen's three cases: `Ok` (the operation took effect, with its result),
//! `Fail` (it surely did not take effect, e.g. the node was not the leader) and `Unknown` (the
//! connection broke or timed out after the request went out: it may or may not have applied,
//! now or later). The checkers treat `Unknown` writes as maybe-applied at any time after their
//! invocation.

use std::fmt;
use std::io::Write;
use std::path::Path;

/// Version of the history file format this code writes.
pub const HISTORY_FORMAT_VERSION: u32 = 1;

/// What an operation asked for. Values are the decimal numbers the kv app stores as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Read the key (linearizable read at the leader).
    Read,
    /// Set the key to the value.
    Write(i64),
    /// Add the delta to the key (a missing key counts as 0).
    Incr(i64),
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It took effect. The value: what a read saw (`None` = no such key), the new value of an
    /// increment; `None` for a write.
    Ok(Option<i64>),
    /// It surely did not take effect.
    Fail,
    /// It may have taken effect (timeout or broken connection after sending).
    Unknown,
}

/// Completion time of an operation whose outcome is unknown: it may take effect at any later
/// time, so it stays concurrent with everything after its invocation.
pub const NEVER_NS: u64 = u64::MAX;

/// One client operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// The client thread that ran it.
    pub process: u32,
    /// The key it touched.
    pub key: String,
    /// What it asked for.
    pub kind: OpKind,
    /// When it was sent, ns since the run started.
    pub invoke_ns: u64,
    /// When its answer arrived, ns since the run started ([`NEVER_NS`] when unknown).
    pub complete_ns: u64,
    /// How it ended.
    pub outcome: Outcome,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            OpKind::Read => "read".to_string(),
            OpKind::Write(value) => format!("write {value}"),
            OpKind::Incr(delta) => format!("incr {delta}"),
        };
        let outcome = match self.outcome {
            Outcome::Ok(Some(value)) => format!("ok {value}"),
            Outcome::Ok(None) if self.kind == OpKind::Read => "ok nil".to_string(),
            Outcome::Ok(None) => "ok".to_string(),
            Outcome::Fail => "fail".to_string(),
            Outcome::Unknown => "unknown".to_string(),
        };
        let complete = if self.complete_ns == NEVER_NS {
            "-".to_string()
        } else {
            format!("{:.3}ms", self.complete_ns as f64 / 1e6)
        };
        write!(
            f,
            "p{} {} {kind} -> {outcome} [{:.3}ms, {complete}]",
            self.process,
            self.key,
            self.invoke_ns as f64 / 1e6
        )
    }
}

impl Op {
    /// The op as one JSON object (one line of the history file).
    pub fn to_json(&self) -> serde_json::Value {
        let (kind, argument) = match self.kind {
            OpKind::Read => ("read", None),
            OpKind::Write(value) => ("write", Some(value)),
            OpKind::Incr(delta) => ("incr", Some(delta)),
        };
        let (outcome, value) = match self.outcome {
            Outcome::Ok(value) => ("ok", value),
            Outcome::Fail => ("fail", None),
            Outcome::Unknown => ("unknown", None),
        };
        serde_json::json!({
            "process": self.process,
            "key": self.key,
            "op": kind,
            "arg": argument,
            "invoke_ns": self.invoke_ns,
            "complete_ns": (self.complete_ns != NEVER_NS).then_some(self.complete_ns),
            "outcome": outcome,
            "value": value,
        })
    }
}

/// Writes a history to `path` as JSON lines: a header line naming the workload, then `ops`
/// (one JSON object each, in the order given).
pub fn write_history(
    path: &Path,
    seed: u64,
    workload: &str,
    ops: &[serde_json::Value],
) -> Result<(), String> {
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).map_err(|err| format!("create {}: {err}", path.display()))?,
    );
    let header = serde_json::json!({
        "format": "lockstep-chaos-history",
        "version": HISTORY_FORMAT_VERSION,
        "workload": workload,
        "seed": seed,
        "ops": ops.len(),
    });
    let write_err = |err: std::io::Error| format!("write {}: {err}", path.display());
    writeln!(out, "{header}").map_err(write_err)?;
    for op in ops {
        writeln!(out, "{op}").map_err(write_err)?;
    }
    out.flush().map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_file_has_a_versioned_header_and_one_line_per_op() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let ops = [
            Op {
                process: 1,
                key: "r0-0".into(),
                kind: OpKind::Write(7),
                invoke_ns: 20,
                complete_ns: NEVER_NS,
                outcome: Outcome::Unknown,
            },
            Op {
                process: 0,
                key: "r0-0".into(),
                kind: OpKind::Read,
                invoke_ns: 10,
                complete_ns: 15,
                outcome: Outcome::Ok(None),
            },
        ];
        let lines: Vec<serde_json::Value> = ops.iter().map(Op::to_json).collect();
        write_history(&path, 9, "kv", &lines).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["version"], HISTORY_FORMAT_VERSION);
        assert_eq!(lines[0]["seed"], 9);
        assert_eq!(lines[0]["workload"], "kv");
        assert_eq!(lines[1]["outcome"], "unknown");
        assert!(lines[1]["complete_ns"].is_null());
        assert_eq!(lines[2]["op"], "read");
        assert_eq!(
            ops[0].to_string(),
            "p1 r0-0 write 7 -> unknown [0.000ms, -]"
        );
    }
}
