//! `concurrent.futures` workloads (issue 15), the same work as the CPython
//! functions of the same names in `benches/python/vs_python.py`
//! (`ProcessPoolExecutor`).

use std::time::Instant;

use anyhow::{Result, ensure};
use mp::futures::{MapOptions, ProcessPoolExecutor};
use multiprocess as mp;

use crate::{Better, Cfg, Side, Workload};

/// This area's rows.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "executor_submit_roundtrip_us",
        better: Better::Lower,
        side: Side::Both,
        count: 2_000,
        quick_count: 200,
        baseline: None,
        what: "sequential ProcessPoolExecutor(2).submit(noop).result(), per call",
        run: executor_submit_roundtrip_us,
    },
    Workload {
        name: "executor_map_tasks_per_s",
        better: Better::Higher,
        side: Side::Both,
        count: 20_000,
        quick_count: 2_000,
        baseline: None,
        what: "ProcessPoolExecutor(2).map(square, 0..n), chunksize 1 (the default)",
        run: executor_map_tasks_per_s,
    },
];

/// The task of the map row.
fn square(x: u64) -> u64 {
    x * x
}

/// With a `ProcessPoolExecutor::new(2)` up and 50 untimed warm-up calls, time
/// `cfg.n` sequential `submit(|_: ()| (), ())?.result()?`; return the mean per
/// call in µs. Shut down untimed.
///
/// CPython: `executor_submit_roundtrip_us`.
pub fn executor_submit_roundtrip_us(cfg: &Cfg) -> Result<Option<f64>> {
    let ex = ProcessPoolExecutor::new(2)?;
    for _ in 0..50 {
        ex.submit(|_: ()| (), ())?.result()?;
    }
    let t0 = Instant::now();
    for _ in 0..cfg.n {
        ex.submit(|_: ()| (), ())?.result()?;
    }
    let secs = t0.elapsed().as_secs_f64();
    ex.shutdown(true, false);
    Ok(Some(secs * 1e6 / cfg.n as f64))
}

/// With a `ProcessPoolExecutor::new(2)` up (untimed warm-up: `submit(square,
/// 3)` == 9 and a `map` of 1000 items), time `map(square, 0..cfg.n)` with
/// chunksize 1, summing the results as they come; check the sum equals
/// `(n-1)n(2n-1)/6`. Return `n / seconds`.
///
/// CPython: `executor_map_tasks_per_s`.
pub fn executor_map_tasks_per_s(cfg: &Cfg) -> Result<Option<f64>> {
    let ex = ProcessPoolExecutor::new(2)?;
    ensure!(ex.submit(square, 3)?.result()? == 9, "executor warm-up");
    let warm: u64 = ex.map(square, 0..1000u64)?.sum::<mp::Result<u64>>()?;
    ensure!(warm == 332_833_500, "executor warm-up map: {warm}");
    let n = cfg.n;
    let t0 = Instant::now();
    let mut sum = 0u64;
    for r in ex.map_with(square, 0..n, MapOptions::new().chunksize(1))? {
        sum += r?;
    }
    let secs = t0.elapsed().as_secs_f64();
    let want = n.saturating_sub(1) * n * (2 * n).saturating_sub(1) / 6;
    ensure!(sum == want, "executor map: sum {sum}, expected {want}");
    ex.shutdown(true, false);
    Ok(Some(n as f64 / secs))
}
