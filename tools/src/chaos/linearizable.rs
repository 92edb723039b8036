//! Linearizability checker for single-key histories of reads, writes and increments: the
//! Wing & Gong search with Lowe's memoization (as in Porcupine), one key at a time.
//!
//! The model is one register holding `Option<i64>` (`None` = no such key). Calls and returns
//! are put in one time-ordered list; the search repeatedly picks a pending call whose effect the
//! model accepts, lifts it (call and return) out of the list, and backtracks when it meets a
//! return that no order of the calls before it can explain. A set of (linearized ops, model
//! state) pairs already explored prunes the search, so histories of a few hundred ops per key
//! check in milliseconds.
//!
//! Outcomes: `Fail` ops and reads of unknown outcome are dropped (no effect, nothing
//! observed). A write or increment of unknown outcome returns at the end of time: it may be
//! linearized anywhere after its invocation, including after every other op, which is the
//! same as never having happened.
//!
//! Unknown writes are the search's worst enemy (each stays pending to the end). When every
//! write of a key has its own value and the key sees no increments, an unknown write whose
//! value no read returned is dropped before the search: in any linearization it is followed
//! by no read of its value, so removing it leaves a valid linearization, and the other way
//! round it may always be left out. The search is still exponential in the worst case; it stops
//! after a step budget and reports the key as undecided rather than running forever.

use std::collections::HashSet;

use super::history::{Op, OpKind, Outcome};

/// Link value meaning "no entry".
const NONE: usize = usize::MAX;

/// The verdict for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some total order of the ops respects real time and the register's semantics.
    Linearizable,
    /// No such order exists. `stuck_at` is the op whose completion the deepest partial order
    /// could not reach; `prefix` how many ops that partial order had linearized.
    NotLinearizable {
        /// The op the search could not get past.
        stuck_at: Op,
        /// Ops in the longest linearized prefix.
        prefix: usize,
    },
    /// The step budget ran out before a verdict.
    Undecided {
        /// Steps taken.
        steps: u64,
    },
}

/// The register model: the state after `kind` with `outcome` applied to `state`, or `None`
/// when the outcome contradicts the state.
fn step(state: Option<i64>, kind: OpKind, outcome: Outcome) -> Option<Option<i64>> {
    match kind {
        OpKind::Read => match outcome {
            Outcome::Ok(seen) if seen == state => Some(state),
            _ => None,
        },
        OpKind::Write(value) => Some(Some(value)),
        OpKind::Incr(delta) => {
            let new = state.unwrap_or(0).checked_add(delta)?;
            match outcome {
                Outcome::Ok(Some(returned)) if returned != new => None,
                _ => Some(Some(new)),
            }
        }
    }
}

/// A set of op positions, as bits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct OpSet(Vec<u64>);

impl OpSet {
    fn new(ops: usize) -> OpSet {
        OpSet(vec![0; ops.div_ceil(64)])
    }

    fn insert(&mut self, op: usize) {
        self.0[op / 64] |= 1 << (op % 64);
    }

    fn remove(&mut self, op: usize) {
        self.0[op / 64] &= !(1 << (op % 64));
    }
}

/// One call or return in the doubly linked event list (dancing links).
#[derive(Clone, Copy, Debug)]
struct Event {
    op: usize,
    is_call: bool,
    /// For a call, the position of its return event.
    return_event: usize,
    prev: usize,
    next: usize,
}

/// The event list with a head sentinel at position `events.len() - 1`.
struct EventList {
    events: Vec<Event>,
    head: usize,
}

impl EventList {
    /// Builds the list from the ops' (invoke, complete) times. At equal times a call sorts
    /// before a return, so touching intervals count as concurrent (the lenient reading).
    fn new(ops: &[&Op]) -> EventList {
        let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (position, op) in ops.iter().enumerate() {
            assert!(
                op.invoke_ns <= op.complete_ns,
                "op completes before it starts: {op}"
            );
            order.push((op.invoke_ns, false, position));
            order.push((op.complete_ns, true, position));
        }
        order.sort_unstable();
        let mut events: Vec<Event> = order
            .iter()
            .map(|&(_, is_return, op)| Event {
                op,
                is_call: !is_return,
                return_event: NONE,
                prev: NONE,
                next: NONE,
            })
            .collect();
        let mut return_of = vec![NONE; ops.len()];
        for (position, event) in events.iter().enumerate() {
            if !event.is_call {
                return_of[event.op] = position;
            }
        }
        for event in events.iter_mut().filter(|event| event.is_call) {
            event.return_event = return_of[event.op];
        }
        let head = events.len();
        events.push(Event {
            op: NONE,
            is_call: false,
            return_event: NONE,
            prev: NONE,
            next: NONE,
        });
        let mut prev = head;
        for position in 0..head {
            events[prev].next = position;
            events[position].prev = prev;
            prev = position;
        }
        EventList { events, head }
    }

    fn unlink(&mut self, position: usize) {
        let Event { prev, next, .. } = self.events[position];
        self.events[prev].next = next;
        if next != NONE {
            self.events[next].prev = prev;
        }
    }

    fn relink(&mut self, position: usize) {
        let Event { prev, next, .. } = self.events[position];
        self.events[prev].next = position;
        if next != NONE {
            self.events[next].prev = position;
        }
    }

    /// Removes a call and its return from the list.
    fn lift(&mut self, call: usize) {
        let return_event = self.events[call].return_event;
        self.unlink(call);
        self.unlink(return_event);
    }

    /// Puts back what [`EventList::lift`] removed (in reverse order).
    fn unlift(&mut self, call: usize) {
        let return_event = self.events[call].return_event;
        self.relink(return_event);
        self.relink(call);
    }
}

/// The ops that matter to the search: without failed ops, reads of unknown outcome and (when
/// that is sound, see the module header) unknown writes nobody observed.
fn relevant<'a>(ops: &[&'a Op]) -> Vec<&'a Op> {
    let mut written = HashSet::new();
    let mut writes_unique = true;
    let mut observed = HashSet::new();
    for op in ops {
        match (op.kind, op.outcome) {
            (OpKind::Write(value), _) => writes_unique &= written.insert(value),
            (OpKind::Incr(_), _) => writes_unique = false,
            (OpKind::Read, Outcome::Ok(Some(value))) => {
                observed.insert(value);
            }
            (OpKind::Read, _) => {}
        }
    }
    ops.iter()
        .copied()
        .filter(|op| match (op.kind, op.outcome) {
            (_, Outcome::Fail) | (OpKind::Read, Outcome::Unknown) => false,
            (OpKind::Write(value), Outcome::Unknown) => !writes_unique || observed.contains(&value),
            _ => true,
        })
        .collect()
}

/// Checks the ops of one key, giving up after `step_budget` search steps.
pub fn check_key(ops: &[&Op], step_budget: u64) -> Verdict {
    let ops = relevant(ops);
    let mut list = EventList::new(&ops);
    let mut linearized = OpSet::new(ops.len());
    let mut explored: HashSet<(OpSet, Option<i64>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<i64>)> = Vec::new();
    let mut state: Option<i64> = None;
    let mut deepest: (usize, usize) = (0, NONE);
    let mut steps: u64 = 0;
    let mut entry = list.events[list.head].next;
    while list.events[list.head].next != NONE {
        steps += 1;
        if steps > step_budget {
            return Verdict::Undecided { steps };
        }
        let event = list.events[entry];
        if event.is_call {
            let op = ops[event.op];
            if let Some(new_state) = step(state, op.kind, op.outcome) {
                linearized.insert(event.op);
                if explored.insert((linearized.clone(), new_state)) {
                    stack.push((entry, state));
                    state = new_state;
                    list.lift(entry);
                    entry = list.events[list.head].next;
                    continue;
                }
                linearized.remove(event.op);
            }
            entry = event.next;
            assert!(
                entry != NONE,
                "a call event is always followed by its return"
            );
        } else {
            if deepest.1 == NONE || stack.len() > deepest.0 {
                deepest = (stack.len(), event.op);
            }
            let Some((call, previous_state)) = stack.pop() else {
                return Verdict::NotLinearizable {
                    stuck_at: ops[deepest.1].clone(),
                    prefix: deepest.0,
                };
            };
            linearized.remove(list.events[call].op);
            state = previous_state;
            list.unlift(call);
            entry = list.events[call].next;
        }
    }
    Verdict::Linearizable
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::history::NEVER_NS;

    fn op(process: u32, kind: OpKind, outcome: Outcome, invoke_ns: u64, complete_ns: u64) -> Op {
        Op {
            process,
            key: "k".into(),
            kind,
            invoke_ns,
            complete_ns,
            outcome,
        }
    }

    fn check(ops: &[Op]) -> Verdict {
        let refs: Vec<&Op> = ops.iter().collect();
        check_key(&refs, 1_000_000)
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let ops = [
            op(0, OpKind::Read, Outcome::Ok(None), 0, 1),
            op(0, OpKind::Write(5), Outcome::Ok(None), 2, 3),
            op(0, OpKind::Read, Outcome::Ok(Some(5)), 4, 5),
            op(0, OpKind::Incr(2), Outcome::Ok(Some(7)), 6, 7),
            op(0, OpKind::Read, Outcome::Ok(Some(7)), 8, 9),
        ];
        assert_eq!(check(&ops), Verdict::Linearizable);
    }

    #[test]
    fn concurrent_ops_may_take_effect_in_either_order() {
        // Write 1 and write 2 overlap; reads after both may see either, but two later reads
        // cannot see 1 then 2 then 1 again.
        let ok = [
            op(0, OpKind::Write(1), Outcome::Ok(None), 0, 10),
            op(1, OpKind::Write(2), Outcome::Ok(None), 1, 9),
            op(2, OpKind::Read, Outcome::Ok(Some(1)), 11, 12),
        ];
        assert_eq!(check(&ok), Verdict::Linearizable);
        let flapping = [
            op(0, OpKind::Write(1), Outcome::Ok(None), 0, 10),
            op(1, OpKind::Write(2), Outcome::Ok(None), 1, 9),
            op(2, OpKind::Read, Outcome::Ok(Some(1)), 11, 12),
            op(2, OpKind::Read, Outcome::Ok(Some(2)), 13, 14),
        ];
        assert!(matches!(check(&flapping), Verdict::NotLinearizable { .. }));
    }

    #[test]
    fn a_read_of_the_old_value_after_a_completed_write_is_stale() {
        let ops = [
            op(0, OpKind::Write(1), Outcome::Ok(None), 0, 1),
            op(0, OpKind::Write(2), Outcome::Ok(None), 2, 3),
            op(1, OpKind::Read, Outcome::Ok(Some(1)), 4, 5),
        ];
        let Verdict::NotLinearizable { stuck_at, prefix } = check(&ops) else {
            panic!("stale read accepted");
        };
        assert_eq!(stuck_at.kind, OpKind::Read);
        assert_eq!(prefix, 2);
    }

    #[test]
    fn a_lost_acknowledged_write_is_caught() {
        let ops = [
            op(0, OpKind::Write(3), Outcome::Ok(None), 0, 1),
            op(1, OpKind::Read, Outcome::Ok(None), 2, 3),
        ];
        assert!(matches!(check(&ops), Verdict::NotLinearizable { .. }));
    }

    #[test]
    fn unknown_writes_may_apply_late_or_never() {
        let late = [
            op(0, OpKind::Write(1), Outcome::Ok(None), 0, 1),
            op(1, OpKind::Write(2), Outcome::Unknown, 2, NEVER_NS),
            op(2, OpKind::Read, Outcome::Ok(Some(1)), 3, 4),
            op(2, OpKind::Read, Outcome::Ok(Some(2)), 50, 51),
        ];
        assert_eq!(check(&late), Verdict::Linearizable);
        let never = [
            op(0, OpKind::Write(1), Outcome::Ok(None), 0, 1),
            op(1, OpKind::Write(2), Outcome::Unknown, 2, NEVER_NS),
            op(2, OpKind::Read, Outcome::Ok(Some(1)), 30, 31),
        ];
        assert_eq!(check(&never), Verdict::Linearizable);
        // But an unknown write cannot take effect before it was sent.
        let early = [
            op(2, OpKind::Read, Outcome::Ok(Some(2)), 0, 1),
            op(1, OpKind::Write(2), Outcome::Unknown, 2, NEVER_NS),
        ];
        assert!(matches!(check(&early), Verdict::NotLinearizable { .. }));
    }

    #[test]
    fn increments_are_checked_against_their_returned_values() {
        let ok = [
            op(0, OpKind::Incr(1), Outcome::Ok(Some(1)), 0, 10),
            op(1, OpKind::Incr(1), Outcome::Ok(Some(2)), 1, 5),
            op(2, OpKind::Incr(1), Outcome::Unknown, 2, NEVER_NS),
            op(3, OpKind::Read, Outcome::Ok(Some(3)), 11, 12),
        ];
        assert_eq!(check(&ok), Verdict::Linearizable);
        // Two increments cannot both return 1 (applied twice from the same state).
        let duplicated = [
            op(0, OpKind::Incr(1), Outcome::Ok(Some(1)), 0, 10),
            op(1, OpKind::Incr(1), Outcome::Ok(Some(1)), 1, 5),
        ];
        assert!(matches!(
            check(&duplicated),
            Verdict::NotLinearizable { .. }
        ));
        // A failed increment did not apply.
        let failed = [
            op(0, OpKind::Incr(1), Outcome::Fail, 0, 1),
            op(1, OpKind::Read, Outcome::Ok(Some(1)), 2, 3),
        ];
        assert!(matches!(check(&failed), Verdict::NotLinearizable { .. }));
    }

    #[test]
    fn many_concurrent_unknown_writes_stay_within_budget() {
        let mut ops: Vec<Op> = (0..40)
            .map(|i| {
                op(
                    i,
                    OpKind::Write(i as i64),
                    Outcome::Unknown,
                    i as u64,
                    NEVER_NS,
                )
            })
            .collect();
        ops.push(op(99, OpKind::Read, Outcome::Ok(Some(17)), 100, 101));
        ops.push(op(99, OpKind::Read, Outcome::Ok(Some(3)), 102, 103));
        assert_eq!(check(&ops), Verdict::Linearizable);
        let refs: Vec<&Op> = ops.iter().collect();
        assert!(matches!(check_key(&refs, 2), Verdict::Undecided { .. }));
        // An unknown write that a read observed stays in: once seen, its value cannot be
        // replaced by the older one again.
        let seen = [
            op(0, OpKind::Write(1), Outcome::Ok(None), 0, 1),
            op(1, OpKind::Write(2), Outcome::Unknown, 2, NEVER_NS),
            op(2, OpKind::Read, Outcome::Ok(Some(2)), 3, 4),
            op(2, OpKind::Read, Outcome::Ok(Some(1)), 5, 6),
        ];
        assert!(matches!(check(&seen), Verdict::NotLinearizable { .. }));
    }
}
