//! RESP2, the Redis serialization protocol, on the client port: values and their encoding
//! ([`Value`]), an incremental, size-bounded request parser ([`parser`]), and the seam between
//! the connection layer and a state machine's command set ([`Frontend`]).
//!
//! The network stage tells a RESP client from a native one by its first byte and then speaks
//! RESP on that connection for good: it parses requests, answers connection-level commands
//! itself (PING, ECHO, HELLO, SELECT, CLIENT, COMMAND, CONFIG, INFO, QUIT), hands every other
//! command to the node's [`Frontend`], which turns it into a proposal or a read, and writes the
//! replies back in request order. The wire details are documented in `docs/CLIENTS.md`.

pub mod parser;
pub mod session;

use std::fmt;

use bytes::Bytes;

/// A RESP2 value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `+text\r\n` (the text holds no CR or LF).
    Simple(String),
    /// `-text\r\n`: the first word is the error code (`ERR`, `WRONGTYPE`, `NOTLEADER`, ...).
    Error(String),
    /// `:n\r\n`.
    Int(i64),
    /// `$len\r\nbytes\r\n`.
    Bulk(Bytes),
    /// `$-1\r\n`: no value.
    Nil,
    /// `*n\r\n` followed by `n` values.
    Array(Vec<Value>),
}

impl Value {
    /// `+OK`.
    pub fn ok() -> Value {
        Value::Simple("OK".to_string())
    }

    /// An error reply `-<code> <message>`; CR and LF in the message become spaces.
    pub fn error(code: &str, message: impl fmt::Display) -> Value {
        let text = format!("{code} {message}").replace(['\r', '\n'], " ");
        Value::Error(text)
    }

    /// Appends the RESP2 encoding of `self` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Simple(text) => line(out, b'+', text.as_bytes()),
            Value::Error(text) => line(out, b'-', text.as_bytes()),
            Value::Int(n) => line(out, b':', n.to_string().as_bytes()),
            Value::Bulk(bytes) => {
                line(out, b'$', bytes.len().to_string().as_bytes());
                out.extend_from_slice(bytes);
                out.extend_from_slice(b"\r\n");
            }
            Value::Nil => out.extend_from_slice(b"$-1\r\n"),
            Value::Array(items) => {
                line(out, b'*', items.len().to_string().as_bytes());
                for item in items {
                    item.encode(out);
                }
            }
        }
    }
}

fn line(out: &mut Vec<u8>, kind: u8, text: &[u8]) {
    debug_assert!(!text.contains(&b'\r') && !text.contains(&b'\n'));
    out.push(kind);
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

/// What one RESP command becomes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Routed {
    /// Answered at once, without consensus (an arity error, an unknown command, ...).
    Reply(Value),
    /// Proposed through the log; once applied, the state machine's result is turned into the
    /// reply by [`Frontend::reply`].
    Propose(Bytes),
    /// A linearizable read through the state machine's query path; its answer is turned into
    /// the reply by [`Frontend::reply`].
    Read(Bytes),
}

/// Where a command is routed, given the facts only the connection layer knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteContext {
    /// The node's wall clock, milliseconds since the Unix epoch. A frontend that needs time in
    /// the state machine (expiry, leases) puts this value into the proposed command: it becomes
    /// data in the log, so every replica applies the same instant.
    pub now_ms: u64,
}

/// A state machine's RESP command set: maps commands to proposals or reads, and results to
/// replies. Called on the network thread, so it must be cheap and must not block.
pub trait Frontend: Send + Sync + fmt::Debug + 'static {
    /// Routes one command. `args[0]` is the command name as sent (any case); `args` is never
    /// empty. Connection-level commands never reach this.
    fn route(&self, args: &[Bytes], context: &RouteContext) -> Routed;

    /// Turns a state machine result (of a proposal or a read this frontend routed) into a reply.
    fn reply(&self, result: &[u8]) -> Value;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        value.encode(&mut out);
        out
    }

    #[test]
    fn encodes_every_kind() {
        assert_eq!(encoded(&Value::ok()), b"+OK\r\n");
        assert_eq!(encoded(&Value::Int(-3)), b":-3\r\n");
        assert_eq!(encoded(&Value::Nil), b"$-1\r\n");
        assert_eq!(
            encoded(&Value::Bulk(Bytes::from_static(b"ab"))),
            b"$2\r\nab\r\n"
        );
        assert_eq!(
            encoded(&Value::Array(vec![Value::Int(1), Value::Nil])),
            b"*2\r\n:1\r\n$-1\r\n"
        );
        assert_eq!(
            encoded(&Value::error("ERR", "bad\r\nthing")),
            b"-ERR bad  thing\r\n"
        );
    }
}
