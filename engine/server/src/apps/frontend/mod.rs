//! The RESP command sets of the example apps: [`RespFrontend`] implements the connection
//! layer's [`Frontend`] seam for any [`CommandSet`] (kv, bank, lock).
//!
//! What it owns and guarantees:
//! - every command is routed without touching state: arity and argument errors, and unknown
//!   commands, are answered at once with Redis-style errors (`ERR wrong number of arguments for
//!   'get' command`, `ERR unknown command 'FOO'`), never proposed;
//! - every proposal and read is wrapped in an envelope carrying the routing node's clock, so time
//!   enters the log as data (see `apps::envelope`);
//! - `SESSION <id> <seq> <command...>` runs a write at most once per `(id, seq)` and
//!   `SESSION.OPEN` opens a session (see `docs/CLIENTS.md`, "Exactly-once writes");
//! - a state machine reply becomes a RESP value: `Ok` → `+OK`, `Value` → bulk, `Nil` → nil bulk,
//!   `Int` → integer, `Array` → array, `Error` → error (messages that start with an upper-case
//!   code keep it, others get `ERR`).

mod bank;
mod kv;
mod lock;

use std::fmt;

use bytes::Bytes;

use crate::resp::session::arity as wrong_arity;
use crate::resp::{Frontend, RouteContext, Routed, Value};

use super::envelope::Envelope;
use super::reply::Reply;

pub use self::bank::BankCommands;
pub use self::kv::KvCommands;
pub use self::lock::LockCommands;

/// Whether an encoded app command changes the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A write: proposed through the log.
    Write,
    /// A read: answered by a linearizable query.
    Read,
}

/// One app's RESP commands: parses a command and appends the app's binary encoding.
pub trait CommandSet: Send + Sync + fmt::Debug + 'static {
    /// Encodes the command `name` (lower case) with arguments `args` (after the name) into
    /// `out`; `Ok(None)` when the set has no such command, `Err` with the reply for a wrong
    /// arity or a bad argument.
    fn encode(
        &self,
        name: &str,
        args: &[Bytes],
        out: &mut Vec<u8>,
    ) -> Result<Option<Access>, Value>;
}

/// The [`Frontend`] of an app with the command set `C`.
#[derive(Debug, Default)]
pub struct RespFrontend<C> {
    commands: C,
}

impl<C: CommandSet> RespFrontend<C> {
    /// A front end for `commands`.
    pub fn new(commands: C) -> RespFrontend<C> {
        RespFrontend { commands }
    }

    /// Routes an app command, wrapped in `header` (an envelope without its command) when it is
    /// a write; reads are always wrapped in a timed envelope.
    fn route_command(&self, args: &[Bytes], header: Envelope<'_>, now_ms: u64) -> Routed {
        let name = lower(&args[0]);
        let mut out = header.to_vec();
        let header_len = out.len();
        match self.commands.encode(&name, &args[1..], &mut out) {
            Err(reply) => Routed::Reply(reply),
            Ok(None) => Routed::Reply(unknown_command(&String::from_utf8_lossy(&args[0]))),
            Ok(Some(Access::Write)) => Routed::Propose(Bytes::from(out)),
            Ok(Some(Access::Read)) if matches!(header, Envelope::Timed { .. }) => {
                Routed::Read(Bytes::from(out))
            }
            Ok(Some(Access::Read)) => {
                let mut query = Envelope::Timed {
                    now_ms,
                    command: &[],
                }
                .to_vec();
                query.extend_from_slice(&out[header_len..]);
                Routed::Read(Bytes::from(query))
            }
        }
    }

    fn route_session(&self, args: &[Bytes], now_ms: u64) -> Routed {
        if args.len() < 4 {
            return Routed::Reply(wrong_arity("session"));
        }
        let (client, seq) = match (parse_u64(&args[1]), parse_u64(&args[2])) {
            (Ok(client), Ok(seq)) => (client, seq),
            (Err(error), _) | (_, Err(error)) => return Routed::Reply(error),
        };
        if seq == 0 {
            return Routed::Reply(Value::error("ERR", "session sequence numbers start at 1"));
        }
        let inner = lower(&args[3]);
        if inner == "session" || inner == "session.open" {
            return Routed::Reply(Value::error("ERR", "SESSION cannot wrap a session command"));
        }
        let header = Envelope::Session {
            now_ms,
            client,
            seq,
            command: &[],
        };
        self.route_command(&args[3..], header, now_ms)
    }
}

impl<C: CommandSet> Frontend for RespFrontend<C> {
    fn route(&self, args: &[Bytes], context: &RouteContext) -> Routed {
        assert!(
            !args.is_empty(),
            "the connection layer routed an empty command"
        );
        let now_ms = context.now_ms;
        match lower(&args[0]).as_str() {
            "session" => self.route_session(args, now_ms),
            "session.open" if args.len() == 1 => {
                Routed::Propose(Bytes::from(Envelope::OpenSession { now_ms }.to_vec()))
            }
            "session.open" => Routed::Reply(wrong_arity("session.open")),
            _ => self.route_command(
                args,
                Envelope::Timed {
                    now_ms,
                    command: &[],
                },
                now_ms,
            ),
        }
    }

    fn reply(&self, result: &[u8]) -> Value {
        match Reply::decode(&Bytes::copy_from_slice(result)) {
            Ok(reply) => to_value(reply),
            Err(error) => Value::error("ERR", format!("the state machine answered badly: {error}")),
        }
    }
}

/// A state machine reply as a RESP value.
fn to_value(reply: Reply) -> Value {
    match reply {
        Reply::Ok => Value::ok(),
        Reply::Value(bytes) => Value::Bulk(bytes),
        Reply::Nil => Value::Nil,
        Reply::Int(n) => Value::Int(n),
        Reply::Array(items) => Value::Array(items.into_iter().map(to_value).collect()),
        Reply::Error(message) => {
            let code = message.split(' ').next().unwrap_or("");
            if !code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase()) {
                Value::Error(message.replace(['\r', '\n'], " "))
            } else {
                Value::error("ERR", message)
            }
        }
    }
}

fn lower(name: &[u8]) -> String {
    String::from_utf8_lossy(name).to_ascii_lowercase()
}

/// `ERR unknown command '<name>'`, with the name as the client sent it.
fn unknown_command(name: &str) -> Value {
    Value::error("ERR", format!("unknown command '{name}'"))
}

/// Checks that a command got between `min` and `max` arguments (after its name).
pub(crate) fn check_arity(name: &str, args: &[Bytes], min: usize, max: usize) -> Result<(), Value> {
    if (min..=max).contains(&args.len()) {
        Ok(())
    } else {
        Err(wrong_arity(name))
    }
}

fn not_an_integer() -> Value {
    Value::error("ERR", "value is not an integer or out of range")
}

/// A decimal `i64` argument.
pub(crate) fn parse_i64(arg: &[u8]) -> Result<i64, Value> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(not_an_integer)
}

/// A decimal `u64` argument.
pub(crate) fn parse_u64(arg: &[u8]) -> Result<u64, Value> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(not_an_integer)
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Drives a front end and a machine together, as the node would.

    use bytes::Bytes;

    use crate::apply::StateMachine;
    use crate::resp::{Frontend, RouteContext, Routed, Value};
    use crate::types::LogIndex;

    /// Routes `words` at time `now_ms` and, unless answered at once, applies or queries it.
    pub(crate) fn run(
        frontend: &dyn Frontend,
        machine: &mut dyn StateMachine,
        index: &mut u64,
        now_ms: u64,
        words: &[&str],
    ) -> Value {
        let args: Vec<Bytes> = words
            .iter()
            .map(|word| Bytes::copy_from_slice(word.as_bytes()))
            .collect();
        match frontend.route(&args, &RouteContext { now_ms }) {
            Routed::Reply(value) => value,
            Routed::Propose(command) => {
                *index += 1;
                frontend.reply(&machine.apply(LogIndex(*index), &command))
            }
            Routed::Read(query) => frontend.reply(&machine.query(&query)),
        }
    }

    /// A bulk string value.
    pub(crate) fn bulk(text: &str) -> Value {
        Value::Bulk(Bytes::copy_from_slice(text.as_bytes()))
    }

    /// An error value with this exact text.
    pub(crate) fn error(text: &str) -> Value {
        Value::Error(text.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{error, run};
    use super::*;
    use crate::apps::kv::KvStore;

    #[test]
    fn sessions_apply_a_retried_write_once() {
        let frontend = RespFrontend::new(KvCommands);
        let mut store = KvStore::new();
        let mut index = 0;
        let mut run = |words: &[&str]| run(&frontend, &mut store, &mut index, 1_000, words);
        let Value::Int(id) = run(&["SESSION.OPEN"]) else {
            panic!("no session id");
        };
        let id = id.to_string();
        assert_eq!(run(&["session", &id, "1", "INCR", "n"]), Value::Int(1));
        assert_eq!(run(&["SESSION", &id, "1", "INCR", "n"]), Value::Int(1));
        assert_eq!(
            run(&["SESSION", &id, "2", "INCRBY", "n", "5"]),
            Value::Int(6)
        );
        assert_eq!(
            run(&["SESSION", &id, "1", "INCR", "n"]),
            error(&format!(
                "ERR sequence 1 of session {id} is stale: 2 was applied already"
            ))
        );
        assert_eq!(
            run(&["SESSION", &id, "9", "GET", "n"]),
            Value::Bulk(Bytes::from_static(b"6"))
        );
        let Value::Error(unknown) = run(&["SESSION", "12345", "1", "INCR", "n"]) else {
            panic!("an unknown session was accepted");
        };
        assert!(unknown.starts_with("NOSESSION"), "{unknown}");
        assert_eq!(run(&["SESSION", &id, "3"]), wrong_arity("session"));
        assert_eq!(run(&["SESSION", "x", "3", "INCR", "n"]), not_an_integer());
        assert_eq!(
            run(&["SESSION", &id, "0", "INCR", "n"]),
            error("ERR session sequence numbers start at 1")
        );
        assert_eq!(
            run(&["SESSION", &id, "4", "SESSION.OPEN"]),
            error("ERR SESSION cannot wrap a session command")
        );
        assert_eq!(run(&["SESSION.OPEN", "x"]), wrong_arity("session.open"));
        assert_eq!(run(&["GET", "n"]), Value::Bulk(Bytes::from_static(b"6")));
    }

    #[test]
    fn replies_map_to_resp_values() {
        assert_eq!(
            to_value(Reply::Error("LOCKED held".into())),
            error("LOCKED held")
        );
        assert_eq!(
            to_value(Reply::Error("bad thing".into())),
            error("ERR bad thing")
        );
        assert_eq!(
            to_value(Reply::Array(vec![Reply::Ok, Reply::Nil])),
            Value::Array(vec![Value::ok(), Value::Nil])
        );
        let frontend = RespFrontend::new(KvCommands);
        assert!(matches!(frontend.reply(&[77]), Value::Error(_)));
    }
}
