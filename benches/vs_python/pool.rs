//! Pool workloads (issue 6), the same work as the CPython functions of the
//! same names in `benches/python/vs_python.py`.

use std::time::Instant;

use anyhow::{Result, ensure};
use multiprocess as mp;

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
        what: "Pool(2) up, one apply, close, join; per pool (the default start method)",
        run: pool_startup_ms,
    },
    Workload {
        name: "pool_startup_ms[spawn]",
        better: Better::Lower,
        side: Side::Both,
        count: 10,
        quick_count: 1,
        baseline: None,
        what: "Pool(2) up, one apply, close, join; per pool, workers by spawn",
        run: pool_startup_ms_spawn,
    },
    Workload {
        name: "pool_startup_ms[forkserver]",
        better: Better::Lower,
        side: Side::Both,
        count: 10,
        quick_count: 1,
        baseline: None,
        what: "Pool(2) up, one apply, close, join; per pool, workers by the forkserver",
        run: pool_startup_ms_forkserver,
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
pub fn pool_startup_ms(cfg: &Cfg) -> Result<Option<f64>> {
    pool_startup_ms_with(cfg, mp::get_start_method())
}

/// `pool_startup_ms` with spawn.
pub fn pool_startup_ms_spawn(cfg: &Cfg) -> Result<Option<f64>> {
    pool_startup_ms_with(cfg, mp::StartMethod::Spawn)
}

/// `pool_startup_ms` with the forkserver.
pub fn pool_startup_ms_forkserver(cfg: &Cfg) -> Result<Option<f64>> {
    pool_startup_ms_with(cfg, mp::StartMethod::Forkserver)
}

fn pool_startup_ms_with(cfg: &Cfg, method: mp::StartMethod) -> Result<Option<f64>> {
    let mut total = 0.0;
    for round in 0..=cfg.n {
        let t0 = Instant::now();
        let pool = mp::get_context(method)
            .pool_builder()
            .processes(2)
            .build()?;
        ensure!(pool.apply(square, 7)? == 49, "pool_startup: wrong result");
        pool.close();
        pool.join()?;
        if round > 0 {
            total += t0.elapsed().as_secs_f64();
        }
    }
    Ok(Some(total * 1e3 / cfg.n as f64))
}

/// The task of the map rows.
fn square(x: u64) -> u64 {
    x * x
}

/// `sum(x * x for x in range(n))`.
fn sum_of_squares(n: u64) -> u64 {
    n.saturating_sub(1) * n * (2 * n).saturating_sub(1) / 6
}

/// A `Pool::new(2)` checked and warmed up as the map rows want it.
fn warm_pool() -> Result<mp::Pool> {
    let pool = mp::Pool::new(2)?;
    ensure!(pool.apply(square, 3)? == 9, "pool warm-up: wrong result");
    let warm = pool.map(square, 0..1000u64)?;
    ensure!(
        warm.iter().sum::<u64>() == sum_of_squares(1000),
        "pool warm-up: wrong map"
    );
    Ok(pool)
}

/// Times `run(pool)` (which returns the sum of the squares of `0..n`), checks
/// the sum, and returns tasks per second.
fn map_rate(n: u64, run: impl FnOnce(&mp::Pool) -> Result<u64>) -> Result<Option<f64>> {
    let pool = warm_pool()?;
    let t0 = Instant::now();
    let sum = run(&pool)?;
    let secs = t0.elapsed().as_secs_f64();
    ensure!(
        sum == sum_of_squares(n),
        "map: sum {sum}, expected {}",
        sum_of_squares(n)
    );
    pool.close();
    pool.join()?;
    Ok(Some(n as f64 / secs))
}

/// With a `Pool::new(2)` already up (untimed: `apply(square, 3)` == 9, then a
/// warm-up `map(square, 0..1000)`), time `pool.map(square, 0..cfg.n)` with the
/// default chunksize (`square(x: u64) -> u64 = x * x`), sum the results and
/// check the sum equals `(n-1)n(2n-1)/6`; then close and join (untimed).
/// Return `n / seconds`.
///
/// CPython: `_map_rate(ctx, n, None, False)` in vs_python.py.
pub fn pool_map_tasks_per_s(cfg: &Cfg) -> Result<Option<f64>> {
    map_rate(cfg.n, |pool| Ok(pool.map(square, 0..cfg.n)?.iter().sum()))
}

/// As [`pool_map_tasks_per_s`], with `map_with_chunksize(square, 0..cfg.n, 1)`.
///
/// CPython: `_map_rate(ctx, n, 1, False)`.
pub fn pool_map_chunksize1_tasks_per_s(cfg: &Cfg) -> Result<Option<f64>> {
    map_rate(cfg.n, |pool| {
        Ok(pool.map_with_chunksize(square, 0..cfg.n, 1)?.iter().sum())
    })
}

/// As [`pool_map_tasks_per_s`], with `imap_with_chunksize(square, 0..cfg.n,
/// 64)`, summing the items as the iterator yields them (each `Ok`), same check.
///
/// CPython: `_map_rate(ctx, n, 64, True)`.
pub fn pool_imap_tasks_per_s(cfg: &Cfg) -> Result<Option<f64>> {
    map_rate(cfg.n, |pool| {
        let mut sum = 0u64;
        for r in pool.imap_with_chunksize(square, 0..cfg.n, 64)? {
            sum += r?;
        }
        Ok(sum)
    })
}

/// With a `Pool::new(2)` up and 50 untimed warm-up calls, time `cfg.n`
/// sequential `pool.apply(|_: ()| (), ())` calls; return the mean per call in
/// µs. Close and join untimed.
///
/// CPython: `pool_apply_roundtrip_us`.
pub fn pool_apply_roundtrip_us(cfg: &Cfg) -> Result<Option<f64>> {
    let pool = mp::Pool::new(2)?;
    for _ in 0..50 {
        pool.apply(|_: ()| (), ())?;
    }
    let t0 = Instant::now();
    for _ in 0..cfg.n {
        pool.apply(|_: ()| (), ())?;
    }
    let secs = t0.elapsed().as_secs_f64();
    pool.close();
    pool.join()?;
    Ok(Some(secs * 1e6 / cfg.n as f64))
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
pub fn cpu_speedup_2proc(cfg: &Cfg) -> Result<Option<f64>> {
    let target = if cfg.quick { 0.02 } else { 0.1 };
    // Calibrate: steps for one task of about `target` seconds on this machine.
    let probe = 2_000_000u64;
    let t0 = Instant::now();
    std::hint::black_box(cpu_task((1, probe)));
    let steps = ((probe as f64) * target / t0.elapsed().as_secs_f64()).max(1.0) as u64;
    let work: Vec<(u64, u64)> = (1..=cfg.n).map(|seed| (seed, steps)).collect();
    let t0 = Instant::now();
    let serial: Vec<u64> = work.iter().map(|w| cpu_task(*w)).collect();
    let serial_secs = t0.elapsed().as_secs_f64();
    let pool = mp::Pool::new(2)?;
    ensure!(pool.apply(square, 2)? == 4, "cpu_speedup warm-up");
    let t0 = Instant::now();
    let parallel = pool.map_with_chunksize(cpu_task, work, 1)?;
    let pool_secs = t0.elapsed().as_secs_f64();
    ensure!(
        parallel == serial,
        "cpu_speedup: pool results differ from the serial ones"
    );
    pool.close();
    pool.join()?;
    Ok(Some(serial_secs / pool_secs))
}

/// `steps` LCG steps from `seed`. Never inlined: the serial run and the
/// workers then run the same machine code (inlined into the serial loop it
/// was compiled differently from the copy the pool calls through its function
/// reference, which skewed the ratio by a few percent either way).
#[inline(never)]
fn cpu_task((seed, steps): (u64, u64)) -> u64 {
    let mut x = seed;
    for _ in 0..steps {
        x = std::hint::black_box((x.wrapping_mul(1_103_515_245) + 12_345) & 0x7fff_ffff);
    }
    x
}
