//! The bank app's RESP commands: BANK.OPEN, BANK.DEPOSIT, BANK.WITHDRAW, BANK.TRANSFER,
//! BANK.BALANCE, BANK.TOTAL, mapped onto [`BankCommand`]s.

use bytes::Bytes;

use crate::apps::bank::BankCommand;
use crate::resp::Value;

use super::{check_arity, parse_i64, Access, CommandSet};

/// The bank command set.
#[derive(Clone, Copy, Debug, Default)]
pub struct BankCommands;

impl CommandSet for BankCommands {
    fn encode(
        &self,
        name: &str,
        args: &[Bytes],
        out: &mut Vec<u8>,
    ) -> Result<Option<Access>, Value> {
        let (command, access) = match name {
            "bank.open" => {
                check_arity(name, args, 1, 2)?;
                let initial = match args.get(1) {
                    Some(amount) => parse_i64(amount)?,
                    None => 0,
                };
                let command = BankCommand::Open {
                    account: &args[0],
                    initial,
                };
                (command, Access::Write)
            }
            "bank.deposit" | "bank.withdraw" => {
                check_arity(name, args, 2, 2)?;
                let (account, amount) = (&args[0][..], parse_i64(&args[1])?);
                let command = if name == "bank.deposit" {
                    BankCommand::Deposit { account, amount }
                } else {
                    BankCommand::Withdraw { account, amount }
                };
                (command, Access::Write)
            }
            "bank.transfer" => {
                check_arity(name, args, 3, 3)?;
                let command = BankCommand::Transfer {
                    from: &args[0],
                    to: &args[1],
                    amount: parse_i64(&args[2])?,
                };
                (command, Access::Write)
            }
            "bank.balance" => {
                check_arity(name, args, 1, 1)?;
                (BankCommand::Balance { account: &args[0] }, Access::Read)
            }
            "bank.total" => {
                check_arity(name, args, 0, 0)?;
                (BankCommand::Total, Access::Read)
            }
            _ => return Ok(None),
        };
        command.encode(out);
        Ok(Some(access))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{error, run};
    use super::super::{wrong_arity, RespFrontend};
    use super::*;
    use crate::apps::bank::Bank;

    #[test]
    fn every_command_answers() {
        let frontend = RespFrontend::new(BankCommands);
        let mut bank = Bank::new();
        let mut index = 0;
        let mut run = |words: &[&str]| run(&frontend, &mut bank, &mut index, 1, words);
        assert_eq!(run(&["BANK.OPEN", "alice", "100"]), Value::ok());
        assert_eq!(run(&["bank.open", "bob"]), Value::ok());
        assert_eq!(
            run(&["BANK.OPEN", "bob"]),
            error("ERR account 'bob' exists")
        );
        assert_eq!(run(&["BANK.DEPOSIT", "bob", "5"]), Value::Int(5));
        assert_eq!(run(&["BANK.WITHDRAW", "bob", "2"]), Value::Int(3));
        assert_eq!(
            run(&["BANK.WITHDRAW", "bob", "4"]),
            error("ERR insufficient funds: account 'bob' holds 3, 4 asked")
        );
        assert_eq!(run(&["BANK.TRANSFER", "alice", "bob", "60"]), Value::ok());
        assert_eq!(
            run(&["BANK.TRANSFER", "alice", "carol", "1"]),
            error("ERR no such account 'carol'")
        );
        assert_eq!(run(&["BANK.BALANCE", "alice"]), Value::Int(40));
        assert_eq!(run(&["BANK.BALANCE", "bob"]), Value::Int(63));
        assert_eq!(run(&["BANK.BALANCE", "carol"]), Value::Nil);
        assert_eq!(
            run(&["BANK.TOTAL"]),
            Value::Array(vec![Value::Int(103), Value::Int(2)])
        );
        assert_eq!(run(&["BANK.TOTAL", "x"]), wrong_arity("bank.total"));
        assert_eq!(
            run(&["BANK.TRANSFER", "a", "b"]),
            wrong_arity("bank.transfer")
        );
        assert_eq!(
            run(&["BANK.DEPOSIT", "bob", "lots"]),
            error("ERR value is not an integer or out of range")
        );
        assert_eq!(
            run(&["BANK.DEPOSIT", "bob", "-1"]),
            error("ERR amount must be a positive integer, got -1")
        );
        assert_eq!(run(&["GET", "k"]), error("ERR unknown command 'GET'"));
    }
}
