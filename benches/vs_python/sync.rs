//! Synchronization workloads (issue 4): `Lock`, `Value` under its lock, and
//! `Event` ping-pong, each the same work as the CPython function of the same
//! name.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use multiprocess as mp;

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
pub fn lock_uncontended_ns(cfg: &Cfg) -> Result<Option<f64>> {
    let lock = mp::Lock::new()?;
    for _ in 0..1000 {
        lock.acquire();
        lock.release()?;
    }
    let t0 = Instant::now();
    for _ in 0..cfg.n {
        lock.acquire();
        lock.release()?;
    }
    Ok(Some(t0.elapsed().as_secs_f64() * 1e9 / cfg.n as f64))
}

/// `Value::new(0i64)`, `Barrier::new(3)`, a `Queue` (or pipe) for "done".
/// Start 2 processes, each: `barrier.wait()`, then `cfg.n` times
/// `{ let mut g = value.lock(); *g += 1; }`, then put a "done". The parent
/// waits on the barrier, starts the clock, takes both "done"s, stops it, joins
/// both (exit 0) and checks `value.get() == 2 * n` exactly (fail loudly
/// otherwise). Return `2 * n / seconds`.
///
/// CPython: `lock_contended_ops_per_s`.
pub fn lock_contended_ops_per_s(cfg: &Cfg) -> Result<Option<f64>> {
    let value = mp::Value::new(0i64)?;
    let barrier = mp::Barrier::new(3)?;
    let (done_rx, done_tx) = mp::pipe(false)?;
    let mut workers = Vec::new();
    for _ in 0..2 {
        let mut p = mp::Process::new(
            |(value, barrier, done, n): (mp::Value<i64>, mp::Barrier, mp::Connection, u64)| {
                barrier.wait().expect("barrier");
                for _ in 0..n {
                    let mut g = value.lock();
                    *g += 1;
                }
                done.send(&1u8).expect("done");
            },
            (value.clone(), barrier.clone(), done_tx.try_clone()?, cfg.n),
        );
        p.start()?;
        workers.push(p);
    }
    drop(done_tx);
    barrier.wait()?;
    let t0 = Instant::now();
    for _ in 0..2 {
        done_rx.recv::<u8>()?;
    }
    let secs = t0.elapsed().as_secs_f64();
    for p in &mut workers {
        p.join()?;
        ensure!(
            p.exitcode() == Some(0),
            "lock_contended: exit code {:?}",
            p.exitcode()
        );
    }
    let total = value.get();
    ensure!(
        total == 2 * cfg.n as i64,
        "lock_contended: counter {total}, expected {}",
        2 * cfg.n
    );
    Ok(Some(2.0 * cfg.n as f64 / secs))
}

/// Events `ping` and `pong`; a child loops `n + 100` times: `ping.wait();
/// ping.clear(); pong.set()`. The parent does the same `n + 100` rounds of
/// `ping.set(); pong.wait_timeout(60 s)` (must be true)`; pong.clear()`,
/// timing the last `n` (the first 100 are the warm-up); join (exit 0).
/// Return µs per round trip.
///
/// CPython: `event_pingpong_us`.
pub fn event_pingpong_us(cfg: &Cfg) -> Result<Option<f64>> {
    const WARMUP: u64 = 100;
    let ping = mp::Event::new()?;
    let pong = mp::Event::new()?;
    let mut child = mp::Process::new(
        |(ping, pong, rounds): (mp::Event, mp::Event, u64)| {
            for _ in 0..rounds {
                ping.wait();
                ping.clear();
                pong.set();
            }
        },
        (ping.clone(), pong.clone(), cfg.n + WARMUP),
    );
    child.start()?;
    let mut t0 = Instant::now();
    for i in 0..cfg.n + WARMUP {
        if i == WARMUP {
            t0 = Instant::now();
        }
        ping.set();
        ensure!(
            pong.wait_timeout(Duration::from_secs(60)),
            "event_pingpong: no pong"
        );
        pong.clear();
    }
    let secs = t0.elapsed().as_secs_f64();
    child.join()?;
    ensure!(
        child.exitcode() == Some(0),
        "event_pingpong: exit code {:?}",
        child.exitcode()
    );
    Ok(Some(secs * 1e6 / cfg.n as f64))
}
