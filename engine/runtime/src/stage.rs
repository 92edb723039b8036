//! Stage threads: every thread of a running node (network, consensus, storage, apply) runs its
//! body through [`run_stage`], so that a panic in any of them ends the process.
//!
//! Why the whole process: the stages hand work to each other over channels, and a stage that
//! is gone looks to the others like one that stopped; a node missing one stage would keep its
//! ports open and answer nothing (or, worse, keep acknowledging what it can no longer apply).
//! A panic is a bug, not an expected failure: the process exits with status 1 after one fatal
//! line naming the stage (the panic's own message and place are printed just before it by the
//! panic hook), so a supervisor sees it and restarts the node, which recovers from its log.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The exit status of a process whose stage panicked.
pub const STAGE_PANIC_EXIT_STATUS: i32 = 1;

/// Runs `body`, the work of stage `stage` ("network", "consensus", "storage" or "apply"); if
/// it panics, logs a fatal line naming the stage and exits the process with
/// [`STAGE_PANIC_EXIT_STATUS`].
pub(crate) fn run_stage<T>(stage: &'static str, body: impl FnOnce() -> T) -> T {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        #[cfg(any(test, feature = "test-hooks"))]
        maybe_inject_panic(stage);
        body()
    }));
    match outcome {
        Ok(value) => value,
        Err(payload) => exit_after_panic(stage, payload.as_ref()),
    }
}

fn exit_after_panic(stage: &'static str, payload: &(dyn Any + Send)) -> ! {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    let line = format!(
        "fatal: the {stage} stage panicked ({message}); the process exits with status \
         {STAGE_PANIC_EXIT_STATUS}"
    );
    if tracing::dispatcher::has_been_set() {
        tracing::error!(stage, panic = message, "{line}");
    } else {
        eprintln!("lockstep: {line}");
    }
    std::process::exit(STAGE_PANIC_EXIT_STATUS)
}

/// Test hook: the stage a test's child process makes panic.
#[cfg(any(test, feature = "test-hooks"))]
pub const PANIC_STAGE_VAR: &str = "LOCKSTEP_TEST_PANIC_STAGE";
/// Test hook: how the child starts its node, "node" (a `Node`, whose state machine panics for
/// the apply stage) or "serve" (the server).
#[cfg(any(test, feature = "test-hooks"))]
pub const CHILD_MODE_VAR: &str = "LOCKSTEP_TEST_PANIC_MODE";

/// Test hook (feature `test-hooks`): panics at the start of `stage` when [`PANIC_STAGE_VAR`]
/// names it (apply is made to panic by its state machine instead, in "node" mode).
#[cfg(any(test, feature = "test-hooks"))]
fn maybe_inject_panic(stage: &str) {
    let Ok(named) = std::env::var(PANIC_STAGE_VAR) else {
        return;
    };
    let apply_by_state_machine =
        stage == "apply" && std::env::var(CHILD_MODE_VAR).as_deref() == Ok("node");
    if named == stage && !apply_by_state_machine {
        panic!("injected panic in the {stage} stage");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Each test runs a node in a child process (this test binary again, running only
    //! [`stage_panic_child`]) whose stage panics, and checks the child's exit status and
    //! stderr.

    use std::collections::BTreeMap;
    use std::process::Command;
    use std::time::Duration;

    use bytes::Bytes;

    use crate::node::PeerConfig;
    use crate::types::{LogIndex, NodeId};
    use crate::{Node, NodeConfig, StateMachine};

    use super::{CHILD_MODE_VAR, PANIC_STAGE_VAR};

    /// The exit status of a child whose node outlived the panic.
    const STILL_ALIVE_STATUS: i32 = 3;

    /// A state machine that panics on its first command when `panics` (else does nothing).
    struct PanicsOnApply {
        panics: bool,
    }

    impl StateMachine for PanicsOnApply {
        fn apply(&mut self, index: LogIndex, _command: &[u8]) -> Bytes {
            assert!(!self.panics, "the state machine cannot apply {index}");
            Bytes::new()
        }

        fn query(&self, _query: &[u8]) -> Bytes {
            Bytes::new()
        }

        fn snapshot(&self, _out: &mut Vec<u8>) {}

        fn restore(&mut self, _snapshot: &[u8]) -> Result<(), crate::apply::RestoreError> {
            Ok(())
        }
    }

    /// The child's body: starts one node with a network (so every stage runs), proposes a
    /// command, and exits with [`STILL_ALIVE_STATUS`] if the process is still alive after the
    /// panic should have ended it.
    #[test]
    #[ignore = "run in a child process by the stage panic tests"]
    fn stage_panic_child() {
        let dir = tempfile::tempdir().unwrap();
        let addrs = crate::net::free_loopback_addrs(2).unwrap();
        let me = PeerConfig {
            peer_addr: addrs[0],
            client_addr: Some(addrs[1]),
        };
        let members = BTreeMap::from([(NodeId(1), me)]);
        let config = NodeConfig::new(NodeId(1), 7, members, dir.path().to_path_buf());
        let panics = std::env::var(PANIC_STAGE_VAR).as_deref() == Ok("apply");
        let node = Node::start(config, PanicsOnApply { panics }).expect("the node starts");
        // Until it leads; the panic ends the process long before the deadline.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            let outcome = node
                .propose(Bytes::from_static(b"x"))
                .wait_timeout(Duration::from_millis(100));
            if outcome.is_err() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        std::process::exit(STILL_ALIVE_STATUS);
    }

    /// Runs [`stage_panic_child`] with `stage` panicking; returns its exit status and stderr.
    fn run_child(mode: &str, stage: &str) -> (Option<i32>, String) {
        let output = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "stage::tests::stage_panic_child",
                "--include-ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(PANIC_STAGE_VAR, stage)
            .env(CHILD_MODE_VAR, mode)
            .output()
            .expect("run the child");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    fn assert_stage_panic_ends_the_process(mode: &str, stage: &str) {
        let (status, stderr) = run_child(mode, stage);
        assert_eq!(
            status,
            Some(super::STAGE_PANIC_EXIT_STATUS),
            "a panic in the {stage} stage ({mode}) must end the process; stderr:\n{stderr}"
        );
        let line = format!("fatal: the {stage} stage panicked");
        assert!(
            stderr.contains(&line),
            "no {line:?} line on stderr:\n{stderr}"
        );
    }

    #[test]
    fn a_state_machine_that_panics_ends_the_process_naming_the_apply_stage() {
        assert_stage_panic_ends_the_process("node", "apply");
    }

    #[test]
    fn a_panic_in_the_consensus_stage_ends_the_process() {
        assert_stage_panic_ends_the_process("node", "consensus");
    }

    #[test]
    fn a_panic_in_the_storage_stage_ends_the_process() {
        assert_stage_panic_ends_the_process("node", "storage");
    }

    #[test]
    fn a_panic_in_the_network_stage_ends_the_process() {
        assert_stage_panic_ends_the_process("node", "network");
    }
}
