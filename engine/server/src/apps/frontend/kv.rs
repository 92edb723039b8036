//! The kv app's RESP commands: GET, SET (NX, XX, EX, PX), DEL, EXISTS, INCR, INCRBY, DECR,
//! DECRBY, APPEND, STRLEN, MGET, MSET, DBSIZE, PTTL, mapped onto [`KvCommand`]s.

use bytes::Bytes;

use crate::apps::kv::{KvCommand, SetCondition};
use crate::resp::Value;

use super::{check_arity, parse_i64, wrong_arity, Access, CommandSet};

/// The kv command set.
#[derive(Clone, Copy, Debug, Default)]
pub struct KvCommands;

fn syntax_error() -> Value {
    Value::error("ERR", "syntax error")
}

fn invalid_expire() -> Value {
    Value::error("ERR", "invalid expire time in 'set' command")
}

/// Parses SET's options (after key and value).
fn set_options(options: &[Bytes]) -> Result<(SetCondition, Option<u64>), Value> {
    let mut condition = SetCondition::Always;
    let mut ttl_ms = None;
    let mut rest = options.iter();
    while let Some(option) = rest.next() {
        let option = option.to_ascii_uppercase();
        match option.as_slice() {
            b"NX" | b"XX" if condition != SetCondition::Always => return Err(syntax_error()),
            b"NX" => condition = SetCondition::IfAbsent,
            b"XX" => condition = SetCondition::IfPresent,
            b"EX" | b"PX" if ttl_ms.is_some() => return Err(syntax_error()),
            b"EX" | b"PX" => {
                let amount = parse_i64(rest.next().ok_or_else(syntax_error)?)?;
                let unit_ms = if option == b"EX" { 1_000 } else { 1 };
                let ms = amount.checked_mul(unit_ms).filter(|ms| *ms > 0);
                ttl_ms = Some(ms.ok_or_else(invalid_expire)? as u64);
            }
            _ => return Err(syntax_error()),
        }
    }
    Ok((condition, ttl_ms))
}

fn keys(args: &[Bytes]) -> Vec<&[u8]> {
    args.iter().map(|arg| &arg[..]).collect()
}

impl CommandSet for KvCommands {
    fn encode(
        &self,
        name: &str,
        args: &[Bytes],
        out: &mut Vec<u8>,
    ) -> Result<Option<Access>, Value> {
        let (command, access) = match name {
            "get" => {
                check_arity(name, args, 1, 1)?;
                (KvCommand::Get { key: &args[0] }, Access::Read)
            }
            "set" => {
                check_arity(name, args, 2, usize::MAX)?;
                let (condition, ttl_ms) = set_options(&args[2..])?;
                let command = KvCommand::Set {
                    key: &args[0],
                    value: &args[1],
                    condition,
                    ttl_ms,
                };
                (command, Access::Write)
            }
            "del" => {
                check_arity(name, args, 1, usize::MAX)?;
                (KvCommand::DeleteMany { keys: keys(args) }, Access::Write)
            }
            "exists" => {
                check_arity(name, args, 1, usize::MAX)?;
                (KvCommand::ExistsMany { keys: keys(args) }, Access::Read)
            }
            "incr" | "decr" => {
                check_arity(name, args, 1, 1)?;
                let delta = if name == "incr" { 1 } else { -1 };
                (
                    KvCommand::Incr {
                        key: &args[0],
                        delta,
                    },
                    Access::Write,
                )
            }
            "incrby" | "decrby" => {
                check_arity(name, args, 2, 2)?;
                let amount = parse_i64(&args[1])?;
                let delta = if name == "incrby" {
                    amount
                } else {
                    amount
                        .checked_neg()
                        .ok_or_else(|| Value::error("ERR", "decrement would overflow"))?
                };
                (
                    KvCommand::Incr {
                        key: &args[0],
                        delta,
                    },
                    Access::Write,
                )
            }
            "append" => {
                check_arity(name, args, 2, 2)?;
                let command = KvCommand::Append {
                    key: &args[0],
                    value: &args[1],
                };
                (command, Access::Write)
            }
            "strlen" => {
                check_arity(name, args, 1, 1)?;
                (KvCommand::Len { key: &args[0] }, Access::Read)
            }
            "mget" => {
                check_arity(name, args, 1, usize::MAX)?;
                (KvCommand::GetMany { keys: keys(args) }, Access::Read)
            }
            "mset" => {
                if args.is_empty() || args.len() % 2 != 0 {
                    return Err(wrong_arity(name));
                }
                let pairs = args
                    .chunks_exact(2)
                    .map(|pair| (&pair[0][..], &pair[1][..]))
                    .collect();
                (KvCommand::PutMany { pairs }, Access::Write)
            }
            "dbsize" => {
                check_arity(name, args, 0, 0)?;
                (KvCommand::Count, Access::Read)
            }
            "pttl" => {
                check_arity(name, args, 1, 1)?;
                (KvCommand::Pttl { key: &args[0] }, Access::Read)
            }
            _ => return Ok(None),
        };
        command.encode(out);
        Ok(Some(access))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{bulk, error, run};
    use super::super::RespFrontend;
    use super::*;
    use crate::apps::kv::KvStore;
    use crate::resp::{Frontend, RouteContext, Routed};

    #[test]
    fn every_command_answers_like_redis() {
        let frontend = RespFrontend::new(KvCommands);
        let mut store = KvStore::new();
        let mut index = 0;
        let mut at =
            |now_ms: u64, words: &[&str]| run(&frontend, &mut store, &mut index, now_ms, words);
        let t = 1_000_000;
        assert_eq!(at(t, &["GET", "k"]), Value::Nil);
        assert_eq!(at(t, &["set", "k", "v"]), Value::ok());
        assert_eq!(at(t, &["GET", "k"]), bulk("v"));
        assert_eq!(at(t, &["SET", "k", "w", "NX"]), Value::Nil);
        assert_eq!(at(t, &["SET", "k", "w", "xx", "px", "500"]), Value::ok());
        assert_eq!(at(t, &["PTTL", "k"]), Value::Int(500));
        assert_eq!(at(t + 499, &["GET", "k"]), bulk("w"));
        assert_eq!(at(t + 500, &["GET", "k"]), Value::Nil);
        assert_eq!(
            at(t + 500, &["SET", "k", "x", "NX", "EX", "2"]),
            Value::ok()
        );
        assert_eq!(at(t + 500, &["PTTL", "k"]), Value::Int(2_000));
        assert_eq!(at(t, &["SET", "n", "10"]), Value::ok());
        assert_eq!(at(t, &["INCR", "n"]), Value::Int(11));
        assert_eq!(at(t, &["INCRBY", "n", "-20"]), Value::Int(-9));
        assert_eq!(at(t, &["DECR", "n"]), Value::Int(-10));
        assert_eq!(at(t, &["DECRBY", "n", "5"]), Value::Int(-15));
        assert_eq!(
            at(t, &["INCR", "k"]),
            error("ERR value is not an integer or out of range")
        );
        assert_eq!(at(t, &["APPEND", "k", "yz"]), Value::Int(3));
        assert_eq!(at(t, &["STRLEN", "k"]), Value::Int(3));
        assert_eq!(at(t, &["STRLEN", "nope"]), Value::Int(0));
        assert_eq!(at(t, &["MSET", "a", "1", "b", "2"]), Value::ok());
        assert_eq!(
            at(t, &["MGET", "a", "nope", "b"]),
            Value::Array(vec![bulk("1"), Value::Nil, bulk("2")])
        );
        assert_eq!(at(t, &["EXISTS", "a", "b", "a", "nope"]), Value::Int(3));
        assert_eq!(at(t, &["DBSIZE"]), Value::Int(4));
        assert_eq!(at(t, &["DEL", "a", "b", "nope"]), Value::Int(2));
        assert_eq!(at(t, &["DBSIZE"]), Value::Int(2));
    }

    #[test]
    fn bad_commands_are_answered_without_consensus() {
        let frontend = RespFrontend::new(KvCommands);
        let route = |words: &[&str]| {
            let args: Vec<Bytes> = words
                .iter()
                .map(|w| Bytes::copy_from_slice(w.as_bytes()))
                .collect();
            match frontend.route(&args, &RouteContext { now_ms: 1 }) {
                Routed::Reply(value) => value,
                other => panic!("{words:?} was routed as {other:?}"),
            }
        };
        assert_eq!(route(&["GET"]), wrong_arity("get"));
        assert_eq!(route(&["get", "a", "b"]), wrong_arity("get"));
        assert_eq!(route(&["MSET", "a"]), wrong_arity("mset"));
        assert_eq!(route(&["MSET"]), wrong_arity("mset"));
        assert_eq!(route(&["DBSIZE", "x"]), wrong_arity("dbsize"));
        assert_eq!(route(&["FOO", "x"]), error("ERR unknown command 'FOO'"));
        assert_eq!(
            route(&["INCRBY", "n", "x"]),
            error("ERR value is not an integer or out of range")
        );
        assert_eq!(
            route(&["DECRBY", "n", "-9223372036854775808"]),
            error("ERR decrement would overflow")
        );
        assert_eq!(
            route(&["SET", "k", "v", "EX", "0"]),
            error("ERR invalid expire time in 'set' command")
        );
        assert_eq!(route(&["SET", "k", "v", "EX"]), error("ERR syntax error"));
        assert_eq!(
            route(&["SET", "k", "v", "NX", "XX"]),
            error("ERR syntax error")
        );
        assert_eq!(
            route(&["SET", "k", "v", "EX", "1", "PX", "1"]),
            error("ERR syntax error")
        );
        assert_eq!(
            route(&["SET", "k", "v", "KEEPTTL"]),
            error("ERR syntax error")
        );
        assert_eq!(
            route(&["SET", "k", "v", "EX", "9223372036854775807"]),
            error("ERR invalid expire time in 'set' command")
        );
    }
}
