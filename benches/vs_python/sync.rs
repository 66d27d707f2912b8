//! Synchronization workloads (issue 4). Missing until `mp::Lock`, `mp::Value`,
//! `mp::Event` and `mp::Barrier` exist: each function returns `Ok(None)`, and
//! its doc comment says exactly what to measure, so filling a row in means
//! replacing one function body. The CPython side runs every one of them.

use anyhow::Result;

use crate::{Better, Cfg, Side, Workload};

/// This area's rows.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "lock_uncontended_ns",
        better: Better::Lower,
        side: Side::Both,
        count: 1_000_000,
        quick_count: 100_000,
        baseline: Some("baseline_futex_lock_ns"),
        what: "Lock acquire+release pair, one process",
        run: lock_uncontended_ns,
    },
    Workload {
        name: "lock_contended_ops_per_s",
        better: Better::Higher,
        side: Side::Both,
        count: 100_000,
        quick_count: 10_000,
        baseline: Some("baseline_futex_contended_ops_per_s"),
        what: "2 processes x n locked increments of a shared Value",
        run: lock_contended_ops_per_s,
    },
    Workload {
        name: "event_pingpong_us",
        better: Better::Lower,
        side: Side::Both,
        count: 5_000,
        quick_count: 500,
        baseline: None,
        what: "two Events bounced between two processes, per round trip",
        run: event_pingpong_us,
    },
];

/// `Lock::new()`, 1000 untimed acquire/release pairs, then time `cfg.n` pairs
/// of `acquire(); release()` (check `release()` is `Ok`); return ns per pair.
///
/// CPython: `lock_uncontended_ns`.
pub fn lock_uncontended_ns(_cfg: &Cfg) -> Result<Option<f64>> {
    Ok(None)
}

/// `Value::new(0i64)`, `Barrier::new(3)`, a `Queue` (or pipe) for "done".
/// Start 2 processes, each: `barrier.wait()`, then `cfg.n` times
/// `{ let mut g = value.lock(); *g += 1; }`, then put a "done". The parent
/// waits on the barrier, starts the clock, takes both "done"s, stops it, joins
/// both (exit 0) and checks `value.get() == 2 * n` exactly (fail loudly
/// otherwise). Return `2 * n / seconds`.
///
/// CPython: `lock_contended_ops_per_s`.
pub fn lock_contended_ops_per_s(_cfg: &Cfg) -> Result<Option<f64>> {
    Ok(None)
}

/// Events `ping` and `pong`; a child loops `n + 100` times: `ping.wait();
/// ping.clear(); pong.set()`. The parent does the same `n + 100` rounds of
/// `ping.set(); pong.wait_timeout(60 s)` (must be true)`; pong.clear()`,
/// timing the last `n` (the first 100 are the warm-up); join (exit 0).
/// Return µs per round trip.
///
/// CPython: `event_pingpong_us`.
pub fn event_pingpong_us(_cfg: &Cfg) -> Result<Option<f64>> {
    Ok(None)
}
