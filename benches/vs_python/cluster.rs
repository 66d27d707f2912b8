//! Beyond one machine (issue 18): a map served by workers that connect over
//! loopback TCP (`Pool::builder().listen`), against the same map served by
//! local workers, measured in the same rotation. CPython has no such pool, so
//! the row is ours only and its ratio is against the local row (the closing
//! note of the table).

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Result, ensure};
use multiprocess as mp;

use crate::{Better, Cfg, Side, Workload};

/// This area's rows.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "cluster_map_tasks_per_s",
        better: Better::Higher,
        side: Side::Ours,
        count: 20_000,
        quick_count: 2_000,
        baseline: Some("baseline_local_pool_map_tasks_per_s"),
        what: "Pool.listen() served by 2 workers over loopback TCP: map(square, 0..n), chunksize 1",
        run: cluster_map_tasks_per_s,
    },
    Workload {
        name: "baseline_local_pool_map_tasks_per_s",
        better: Better::Higher,
        side: Side::Baseline,
        count: 20_000,
        quick_count: 2_000,
        baseline: None,
        what: "the same map on Pool(2) of local workers (what cluster_map_tasks_per_s is compared with)",
        run: local_pool_map_tasks_per_s,
    },
];

/// The task: its square, and which process computed it.
fn square_pid(x: u64) -> (u64, u32) {
    (x * x, std::process::id())
}

/// Times `map(square_pid, 0..n)` with chunksize 1 and checks the sum.
fn timed_map(pool: &mp::Pool, n: u64) -> Result<f64> {
    let t0 = Instant::now();
    let out = pool.map_with_chunksize(square_pid, 0..n, 1)?;
    let secs = t0.elapsed().as_secs_f64();
    let sum: u64 = out.iter().map(|(v, _)| v).sum();
    let want = n.saturating_sub(1) * n * (2 * n).saturating_sub(1) / 6;
    ensure!(sum == want, "map: sum {sum}, expected {want}");
    Ok(n as f64 / secs)
}

/// Maps until every one of `workers` processes has served (untimed).
fn warm_up(pool: &mp::Pool, workers: usize) -> Result<()> {
    loop {
        let out = pool.map_with_chunksize(square_pid, 0..200u64, 1)?;
        let pids: BTreeSet<u32> = out.iter().map(|(_, p)| *p).collect();
        if pids.len() >= workers {
            return Ok(());
        }
    }
}

/// Two workers (this bench binary with `MULTIPROCESS_CONNECT`) join a
/// listening pool on 127.0.0.1; untimed warm-up until both have served; then
/// `n / seconds` of the timed map. Closed and reaped untimed.
pub fn cluster_map_tasks_per_s(cfg: &Cfg) -> Result<Option<f64>> {
    const KEY: &str = "vs-python-cluster-bench";
    let pool = mp::Pool::builder()
        .processes(2)
        .listen("127.0.0.1:0", KEY)?;
    let addr = pool.listen_address().expect("a listening pool");
    let exe = std::env::current_exe()?;
    let mut workers: Vec<Child> = Vec::new();
    for _ in 0..2 {
        workers.push(
            Command::new(&exe)
                .env("MULTIPROCESS_CONNECT", addr.to_string())
                .env("MULTIPROCESS_AUTHKEY", KEY)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()?,
        );
    }
    let measured = warm_up(&pool, 2).and_then(|()| timed_map(&pool, cfg.n));
    pool.close();
    let joined = pool.join();
    for mut w in workers {
        if measured.is_err() {
            let _ = w.kill();
        }
        w.wait()?;
    }
    joined?;
    Ok(Some(measured?))
}

/// The same map on `Pool::new(2)` (local workers), warmed up the same way.
pub fn local_pool_map_tasks_per_s(cfg: &Cfg) -> Result<Option<f64>> {
    let pool = mp::Pool::new(2)?;
    warm_up(&pool, 2)?;
    let r = timed_map(&pool, cfg.n)?;
    pool.close();
    pool.join()?;
    Ok(Some(r))
}
