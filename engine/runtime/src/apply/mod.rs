//! Execution's contract: the [`StateMachine`] trait users implement, and the snapshot files it
//! is saved in ([`snapshot`]). The apply stage that runs it (committed commands behind the
//! commit index; ordering never waits for it) is part of the runtime, in `node`.

pub mod snapshot;

use bytes::Bytes;

use crate::types::LogIndex;

/// A deterministic state machine replicated by lockstep.
///
/// Every replica applies the same commands in the same order, so `apply` must depend only on the
/// state and the command: no clocks, randomness, thread timing or iteration over unordered
/// containers. Time, if needed, enters as data inside the command.
pub trait StateMachine: Send + 'static {
    /// Applies the committed `command` at log `index` and returns the reply for its proposer.
    /// A command the machine does not understand must still be handled deterministically (for
    /// example by returning an error reply), never by panicking.
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Bytes;

    /// Applies the committed `commands`, at consecutive log indexes from `first`, and pushes
    /// one reply per command onto `replies`, in order. The default calls
    /// [`StateMachine::apply`] for each; a state machine that keeps its state on disk overrides
    /// it to make the run one transaction. The runtime hands over each committed batch in one
    /// call, cut only where a read must see the state between two of its commands, and never
    /// calls it with no command. The same determinism rules hold.
    fn apply_batch(&mut self, first: LogIndex, commands: &[&[u8]], replies: &mut Vec<Bytes>) {
        for (offset, command) in commands.iter().enumerate() {
            replies.push(self.apply(first.plus(offset as u64), command));
        }
    }

    /// Answers a read-only `query` against the current state.
    fn query(&self, query: &[u8]) -> Bytes;

    /// Appends a serialization of the whole state to `out` (restorable by
    /// [`StateMachine::restore`] on any replica).
    fn snapshot(&self, out: &mut Vec<u8>);

    /// Replaces the whole state with the one `snapshot` describes; an error (the bytes are
    /// not a state this machine can hold) stops the node with [`crate::NodeError::StateMachine`].
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError>;
}

/// Why a state machine refused a snapshot: any error converts into it with `?` (a `String` or
/// `&str` with `.into()`).
pub type RestoreError = Box<dyn std::error::Error + Send + Sync>;
