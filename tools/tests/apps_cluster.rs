//! The kv, bank and lock scenarios (see `common/apps.rs`) over the native client protocol:
//! commands routed by each app's front end on the test side, proposed or read at the leader of
//! a real 3-node cluster of `lockstep serve` processes.

mod common;

use common::apps::{self, AppRunner, NativeRunner};
use common::Cluster;
use lockstep_server::apps::AppKind;

fn native(app: AppKind) -> impl Fn(&Cluster) -> Box<dyn AppRunner> {
    move |cluster| Box::new(NativeRunner::new(cluster, app))
}

#[test]
fn kv_session_incr_applies_once_across_a_leader_kill() {
    apps::kv_session_incr_once_across_a_leader_kill(&native(AppKind::Kv));
}

#[test]
fn bank_total_is_unchanged_by_concurrent_transfers() {
    apps::bank_total_unchanged_by_concurrent_transfers(&native(AppKind::Bank));
}

#[test]
fn lock_tokens_increase_across_owners_and_a_leader_change() {
    apps::lock_tokens_increase_across_owners_and_a_leader_change(&native(AppKind::Lock));
}
