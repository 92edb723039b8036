//! The lock app's RESP commands: LOCK.ACQUIRE, LOCK.RELEASE, LOCK.OWNER, mapped onto
//! [`LockCommand`]s.

use bytes::Bytes;

use crate::apps::lock::LockCommand;
use crate::resp::Value;

use super::{check_arity, parse_u64, Access, CommandSet};

/// The lock command set.
#[derive(Clone, Copy, Debug, Default)]
pub struct LockCommands;

impl CommandSet for LockCommands {
    fn encode(
        &self,
        name: &str,
        args: &[Bytes],
        out: &mut Vec<u8>,
    ) -> Result<Option<Access>, Value> {
        let (command, access) = match name {
            "lock.acquire" => {
                check_arity(name, args, 3, 3)?;
                let lease_ms = parse_u64(&args[2])?;
                if lease_ms == 0 {
                    return Err(Value::error("ERR", "a lease must be at least 1 ms"));
                }
                let command = LockCommand::Acquire {
                    name: &args[0],
                    owner: &args[1],
                    lease_ms,
                };
                (command, Access::Write)
            }
            "lock.release" => {
                check_arity(name, args, 2, 2)?;
                let command = LockCommand::Release {
                    name: &args[0],
                    owner: &args[1],
                };
                (command, Access::Write)
            }
            "lock.owner" => {
                check_arity(name, args, 1, 1)?;
                (LockCommand::Owner { name: &args[0] }, Access::Read)
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
    use super::super::{wrong_arity, RespFrontend};
    use super::*;
    use crate::apps::lock::LockService;

    #[test]
    fn every_command_answers_and_leases_follow_the_routing_clock() {
        let frontend = RespFrontend::new(LockCommands);
        let mut service = LockService::new();
        let mut index = 0;
        let mut at =
            |now_ms, words: &[&str]| run(&frontend, &mut service, &mut index, now_ms, words);
        assert_eq!(at(1_000, &["LOCK.ACQUIRE", "l", "a", "100"]), Value::Int(1));
        assert_eq!(
            at(1_040, &["LOCK.ACQUIRE", "l", "b", "100"]),
            error("LOCKED lock 'l' is held by another owner for 60 ms more")
        );
        assert_eq!(
            at(1_050, &["LOCK.OWNER", "l"]),
            Value::Array(vec![bulk("a"), Value::Int(1), Value::Int(1_100)])
        );
        assert_eq!(at(1_100, &["LOCK.OWNER", "l"]), Value::Nil);
        assert_eq!(at(1_100, &["LOCK.ACQUIRE", "l", "b", "100"]), Value::Int(2));
        assert_eq!(at(1_110, &["LOCK.RELEASE", "l", "a"]), Value::Int(0));
        assert_eq!(at(1_110, &["LOCK.RELEASE", "l", "b"]), Value::Int(1));
        assert_eq!(at(1_110, &["LOCK.OWNER", "l"]), Value::Nil);
        assert_eq!(
            at(1_110, &["LOCK.ACQUIRE", "l", "a", "0"]),
            error("ERR a lease must be at least 1 ms")
        );
        assert_eq!(
            at(1_110, &["LOCK.ACQUIRE", "l", "a", "-5"]),
            error("ERR value is not an integer or out of range")
        );
        assert_eq!(at(1_110, &["LOCK.OWNER"]), wrong_arity("lock.owner"));
        assert_eq!(
            at(1_110, &["LOCK.STEAL", "l"]),
            error("ERR unknown command 'LOCK.STEAL'")
        );
    }
}
