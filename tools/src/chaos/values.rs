//! Value checks that give plain answers where the linearizability search only says "no order
//! fits": no read returns a value nobody wrote, no acknowledged write is lost from the final
//! state, and a counter ends within the increments acknowledged and attempted.
//!
//! They assume the workload's conventions: every write of a register key writes a value of its
//! own, and counter keys see only increments of +1 and reads.

use super::history::{Op, OpKind, Outcome};

/// The problems found in one key's history; `final_read` is the read made after the faults
/// healed (the state every later reader will see).
pub fn check_values(key: &str, ops: &[&Op], final_read: Option<&Op>) -> Vec<String> {
    let mut problems = Vec::new();
    let is_counter = ops.iter().any(|op| matches!(op.kind, OpKind::Incr(_)));
    if is_counter {
        check_counter(key, ops, final_read, &mut problems);
    } else {
        check_register(key, ops, final_read, &mut problems);
    }
    problems
}

fn check_register(key: &str, ops: &[&Op], final_read: Option<&Op>, problems: &mut Vec<String>) {
    let writes: Vec<&Op> = ops
        .iter()
        .copied()
        .filter(|op| matches!(op.kind, OpKind::Write(_)) && op.outcome != Outcome::Fail)
        .collect();
    let writer_of = |value: i64| {
        writes
            .iter()
            .copied()
            .find(|op| op.kind == OpKind::Write(value))
    };
    for read in ops.iter().copied().chain(final_read) {
        let (OpKind::Read, Outcome::Ok(Some(value))) = (read.kind, read.outcome) else {
            continue;
        };
        match writer_of(value) {
            None => problems.push(format!(
                "{key}: read returned {value}, which no client wrote (or whose write failed): {read}"
            )),
            Some(write) if write.invoke_ns > read.complete_ns => problems.push(format!(
                "{key}: read returned {value} before its write was sent: {read}; write {write}"
            )),
            Some(_) => {}
        }
    }
    let Some(final_read) = final_read else { return };
    let Outcome::Ok(final_value) = final_read.outcome else {
        return;
    };
    // The final value's write must not be one that an acknowledged write surely followed.
    let final_write_complete_ns = final_value.and_then(writer_of).map(|op| op.complete_ns);
    for acked in writes
        .iter()
        .filter(|op| matches!(op.outcome, Outcome::Ok(_)))
    {
        let overwritten_by_older = match final_write_complete_ns {
            None => true,
            Some(complete_ns) => complete_ns < acked.invoke_ns,
        };
        if overwritten_by_older {
            problems.push(format!(
                "{key}: acknowledged write lost: {acked}; final read {final_read}"
            ));
        }
    }
}

fn check_counter(key: &str, ops: &[&Op], final_read: Option<&Op>, problems: &mut Vec<String>) {
    let acked = ops
        .iter()
        .filter(|op| matches!(op.kind, OpKind::Incr(_)) && matches!(op.outcome, Outcome::Ok(_)))
        .count() as i64;
    let attempted = ops
        .iter()
        .filter(|op| matches!(op.kind, OpKind::Incr(_)) && op.outcome != Outcome::Fail)
        .count() as i64;
    for op in ops.iter().copied().chain(final_read) {
        if let (OpKind::Read | OpKind::Incr(_), Outcome::Ok(Some(value))) = (op.kind, op.outcome) {
            if value > attempted {
                problems.push(format!(
                    "{key}: value {value} exceeds the {attempted} increments attempted: {op}"
                ));
            }
        }
    }
    if let Some(final_read) = final_read {
        let final_value = match final_read.outcome {
            Outcome::Ok(value) => value.unwrap_or(0),
            _ => return,
        };
        if final_value < acked {
            problems.push(format!(
                "{key}: acknowledged increments lost: final value {final_value} < {acked} \
                 acknowledged: {final_read}"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: OpKind, outcome: Outcome, invoke_ns: u64, complete_ns: u64) -> Op {
        Op {
            process: 0,
            key: "k".into(),
            kind,
            invoke_ns,
            complete_ns,
            outcome,
        }
    }

    fn run(ops: &[Op], final_read: &Op) -> Vec<String> {
        let refs: Vec<&Op> = ops.iter().collect();
        check_values("k", &refs, Some(final_read))
    }

    #[test]
    fn register_history_without_problems() {
        let ops = [
            op(OpKind::Write(1), Outcome::Ok(None), 0, 1),
            op(OpKind::Write(2), Outcome::Unknown, 2, u64::MAX),
            op(OpKind::Read, Outcome::Ok(Some(2)), 3, 4),
        ];
        let final_read = op(OpKind::Read, Outcome::Ok(Some(2)), 10, 11);
        assert_eq!(run(&ops, &final_read), Vec::<String>::new());
    }

    #[test]
    fn value_nobody_wrote_and_failed_write_seen() {
        let ops = [
            op(OpKind::Write(1), Outcome::Fail, 0, 1),
            op(OpKind::Read, Outcome::Ok(Some(1)), 3, 4),
            op(OpKind::Read, Outcome::Ok(Some(9)), 5, 6),
        ];
        let final_read = op(OpKind::Read, Outcome::Ok(None), 10, 11);
        let problems = run(&ops, &final_read);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().all(|p| p.contains("no client wrote")));
    }

    #[test]
    fn lost_acknowledged_write() {
        let ops = [
            op(OpKind::Write(1), Outcome::Ok(None), 0, 1),
            op(OpKind::Write(2), Outcome::Ok(None), 2, 3),
        ];
        let stale = op(OpKind::Read, Outcome::Ok(Some(1)), 10, 11);
        let problems = run(&ops, &stale);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("acknowledged write lost"));
        let empty = op(OpKind::Read, Outcome::Ok(None), 10, 11);
        assert_eq!(run(&ops, &empty).len(), 2);
    }

    #[test]
    fn counter_bounds() {
        let ops = [
            op(OpKind::Incr(1), Outcome::Ok(Some(1)), 0, 1),
            op(OpKind::Incr(1), Outcome::Unknown, 2, u64::MAX),
            op(OpKind::Incr(1), Outcome::Fail, 3, 4),
        ];
        for good in [1, 2] {
            let final_read = op(OpKind::Read, Outcome::Ok(Some(good)), 10, 11);
            assert_eq!(run(&ops, &final_read), Vec::<String>::new());
        }
        let lost = op(OpKind::Read, Outcome::Ok(None), 10, 11);
        assert!(run(&ops, &lost)[0].contains("increments lost"));
        let doubled = op(OpKind::Read, Outcome::Ok(Some(3)), 10, 11);
        assert!(run(&ops, &doubled)[0].contains("exceeds"));
    }
}
