//! Pool workloads (issue 6). Missing until `mp::Pool` exists: each function
//! returns `Ok(None)`, and its doc comment says exactly what to measure, so
//! filling a row in means replacing one function body. The CPython side
//! (`benches/python/vs_python.py`) already runs every one of them.

use anyhow::Result;

use crate::{Better, Cfg, Side, Workload};

/// This area's rows.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "pool_startup_ms",
        better: Better::Lower,
        side: Side::Both,
        count: 10,
        quick_count: 1,
        baseline: None,
        what: "Pool(2) up, one apply, close, join; per pool",
        run: pool_startup_ms,
    },
    Workload {
        name: "pool_map_tasks_per_s",
        better: Better::Higher,
        side: Side::Both,
        count: 200_000,
        quick_count: 20_000,
        baseline: None,
        what: "Pool(2).map(square, 0..n), default chunksize",
        run: pool_map_tasks_per_s,
    },
    Workload {
        name: "pool_map_chunksize1_tasks_per_s",
        better: Better::Higher,
        side: Side::Both,
        count: 20_000,
        quick_count: 2_000,
        baseline: None,
        what: "Pool(2).map(square, 0..n), chunksize 1",
        run: pool_map_chunksize1_tasks_per_s,
    },
    Workload {
        name: "pool_imap_tasks_per_s",
        better: Better::Higher,
        side: Side::Both,
        count: 50_000,
        quick_count: 5_000,
        baseline: None,
        what: "Pool(2).imap(square, 0..n), chunksize 64",
        run: pool_imap_tasks_per_s,
    },
    Workload {
        name: "pool_apply_roundtrip_us",
        better: Better::Lower,
        side: Side::Both,
        count: 2_000,
        quick_count: 200,
        baseline: None,
        what: "sequential Pool(2).apply of a no-op, per call",
        run: pool_apply_roundtrip_us,
    },
    Workload {
        name: "cpu_speedup_2proc",
        better: Better::Higher,
        side: Side::Both,
        count: 8,
        quick_count: 8,
        baseline: None,
        what: "8 CPU-bound tasks: serial time / Pool(2) time",
        run: cpu_speedup_2proc,
    },
];

/// `cfg.n + 1` rounds of: start the clock, `Pool::new(2)`, `pool.apply(square,
/// 7)` (check it is 49), `close()`, `join()`, stop the clock. Round 0 is the
/// warm-up and not counted; return the mean of the others in ms.
///
/// CPython: `pool_startup_ms` in vs_python.py.
pub fn pool_startup_ms(_cfg: &Cfg) -> Result<Option<f64>> {
    Ok(None)
}

/// With a `Pool::new(2)` already up (untimed: `apply(square, 3)` == 9, then a
/// warm-up `map(square, 0..1000)`), time `pool.map(square, 0..cfg.n)` with the
/// default chunksize (`square(x: u64) -> u64 = x * x`), sum the results and
/// check the sum equals `(n-1)n(2n-1)/6`; then close and join (untimed).
/// Return `n / seconds`.
///
/// CPython: `_map_rate(ctx, n, None, False)` in vs_python.py.
pub fn pool_map_tasks_per_s(_cfg: &Cfg) -> Result<Option<f64>> {
    Ok(None)
}

/// As [`pool_map_tasks_per_s`], with `map_with_chunksize(square, 0..cfg.n, 1)`.
///
/// CPython: `_map_rate(ctx, n, 1, False)`.
pub fn pool_map_chunksize1_tasks_per_s(_cfg: &Cfg) -> Result<Option<f64>> {
    Ok(None)
}

/// As [`pool_map_tasks_per_s`], with `imap_with_chunksize(square, 0..cfg.n,
/// 64)`, summing the items as the iterator yields them (each `Ok`), same check.
///
/// CPython: `_map_rate(ctx, n, 64, True)`.
pub fn pool_imap_tasks_per_s(_cfg: &Cfg) -> Result<Option<f64>> {
    Ok(None)
}

/// With a `Pool::new(2)` up and 50 untimed warm-up calls, time `cfg.n`
/// sequential `pool.apply(|_: ()| (), ())` calls; return the mean per call in
/// µs. Close and join untimed.
///
/// CPython: `pool_apply_roundtrip_us`.
pub fn pool_apply_roundtrip_us(_cfg: &Cfg) -> Result<Option<f64>> {
    Ok(None)
}

/// `cfg.n` (8) tasks `cpu_task((seed, steps))` for seeds `1..=n`, where
/// `cpu_task` runs `steps` LCG steps `x = (x * 1103515245 + 12345) & 0x7fffffff`
/// from `x = seed` (use `std::hint::black_box` so it is not folded) and returns
/// `x`. Pick `steps` so one task takes about 0.1 s (0.02 s with `cfg.quick`),
/// like CPython's 1_500_000 (300_000) steps do there. Time the 8 tasks run
/// serially in this process; then, with a `Pool::new(2)` up (untimed warm-up
/// apply), time `map_with_chunksize(cpu_task, work, 1)`. Check the pool's
/// results equal the serial ones; return serial time / pool time.
///
/// CPython: `cpu_speedup_2proc`.
pub fn cpu_speedup_2proc(_cfg: &Cfg) -> Result<Option<f64>> {
    Ok(None)
}
