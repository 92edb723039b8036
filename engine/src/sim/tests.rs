//! Seed sweeps, determinism, the bug switch and regression seeds.

use super::*;

#[test]
fn same_seed_same_trace() {
    let a = run(SimOptions::new(7, 3, 2000));
    let b = run(SimOptions::new(7, 3, 2000));
    assert_eq!(a.trace_hash, b.trace_hash, "{a}\n{b}");
}
