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
use std::io;

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

impl Value {
    /// Reads one value from a blocking reader (for clients, tools and tests; the server parses
    /// requests with [`parser`]). Bulk strings and arrays longer than `len_max` are refused
    /// before anything is allocated for them. Bytes that are not RESP fail with an
    /// `InvalidData` error holding a [`BadReply`].
    pub fn read_from(reader: &mut impl io::BufRead, len_max: usize) -> io::Result<Value> {
        let mut line = Vec::new();
        reader.read_until(b'\n', &mut line)?;
        let bad = |what: BadReply| io::Error::new(io::ErrorKind::InvalidData, what);
        if line.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let Some(body) = line.strip_suffix(b"\r\n") else {
            return Err(bad(BadReply::NoCrlf(
                String::from_utf8_lossy(&line).into_owned(),
            )));
        };
        let text = String::from_utf8_lossy(&body[1..]).into_owned();
        let length = |text: &str| -> io::Result<Option<usize>> {
            match text.parse::<i64>() {
                Ok(-1) => Ok(None),
                Ok(n) if (0..=len_max as i64).contains(&n) => Ok(Some(n as usize)),
                _ => Err(bad(BadReply::Length {
                    text: text.to_owned(),
                    max: len_max,
                })),
            }
        };
        Ok(match body[0] {
            b'+' => Value::Simple(text),
            b'-' => Value::Error(text),
            b':' => Value::Int(
                text.parse()
                    .map_err(|_| bad(BadReply::Integer(text.clone())))?,
            ),
            b'$' => match length(&text)? {
                None => Value::Nil,
                Some(len) => {
                    let mut data = vec![0; len + 2];
                    reader.read_exact(&mut data)?;
                    if !data.ends_with(b"\r\n") {
                        return Err(bad(BadReply::BulkNoCrlf));
                    }
                    data.truncate(len);
                    Value::Bulk(Bytes::from(data))
                }
            },
            b'*' => match length(&text)? {
                None => Value::Nil,
                Some(len) => Value::Array(
                    (0..len)
                        .map(|_| Value::read_from(reader, len_max))
                        .collect::<io::Result<_>>()?,
                ),
            },
            other => return Err(bad(BadReply::Type(other))),
        })
    }
}

/// Why bytes read as a reply are not RESP (inside an `InvalidData` I/O error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadReply {
    /// A line that does not end in CRLF.
    NoCrlf(String),
    /// A length that is not a number, or above the limit.
    Length {
        /// The length's text.
        text: String,
        /// The largest length accepted.
        max: usize,
    },
    /// An integer reply that is not a number.
    Integer(String),
    /// A bulk string not followed by CRLF.
    BulkNoCrlf,
    /// A type byte RESP2 does not have.
    Type(u8),
}

impl fmt::Display for BadReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadReply::NoCrlf(line) => write!(f, "reply line {line:?} does not end in CRLF"),
            BadReply::Length { text, max } => {
                write!(f, "bad or too large length {text:?} (max {max})")
            }
            BadReply::Integer(text) => write!(f, "bad integer {text:?}"),
            BadReply::BulkNoCrlf => f.write_str("bulk string not followed by CRLF"),
            BadReply::Type(byte) => write!(f, "unknown reply type byte {byte:#04x}"),
        }
    }
}

impl std::error::Error for BadReply {}

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
    fn reads_what_it_encodes() {
        let values = [
            Value::ok(),
            Value::error("ERR", "no"),
            Value::Int(-12),
            Value::Nil,
            Value::Bulk(Bytes::from_static(b"a\r\nb")),
            Value::Array(vec![Value::Int(1), Value::Array(vec![]), Value::Nil]),
        ];
        let mut wire = Vec::new();
        for value in &values {
            value.encode(&mut wire);
        }
        let mut reader = &wire[..];
        for value in &values {
            assert_eq!(&Value::read_from(&mut reader, 100).unwrap(), value);
        }
        let err = Value::read_from(&mut &b"$101\r\n"[..], 100).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            err.get_ref().and_then(|inner| inner.downcast_ref()),
            Some(&BadReply::Length {
                text: "101".to_owned(),
                max: 100
            })
        );
        assert_eq!(err.to_string(), "bad or too large length \"101\" (max 100)");
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
