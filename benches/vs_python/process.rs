//! Process workloads (issue 2): starting and joining children.

use anyhow::{Result, ensure};
use multiprocess as mp;
use std::time::Instant;

use crate::{Better, Cfg, Side, Workload};

/// This area's rows: the default start method, then one row per method.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "spawn_join_ms",
        better: Better::Lower,
        side: Side::Both,
        count: 20,
        quick_count: 2,
        // The default is the forkserver: a fork, as the server makes it.
        baseline: Some("baseline_fork_wait_ms"),
        what: "start + join of a no-op child, per child (the default start method)",
        run: spawn_join_ms,
    },
    Workload {
        name: "spawn_join_ms[spawn]",
        better: Better::Lower,
        side: Side::Both,
        count: 20,
        quick_count: 2,
        baseline: Some("baseline_fork_exec_wait_ms"),
        what: "start + join of a no-op child, per child, started by spawn",
        run: spawn_join_ms_spawn,
    },
    Workload {
        name: "spawn_join_ms[forkserver]",
        better: Better::Lower,
        side: Side::Both,
        count: 20,
        quick_count: 2,
        baseline: Some("baseline_fork_wait_ms"),
        what: "start + join of a no-op child, per child, forked by the forkserver",
        run: spawn_join_ms_forkserver,
    },
];

/// `spawn_join_ms` with the default start method.
pub fn spawn_join_ms(cfg: &Cfg) -> Result<Option<f64>> {
    spawn_join_ms_with(cfg, mp::get_start_method())
}

/// `spawn_join_ms` with spawn.
pub fn spawn_join_ms_spawn(cfg: &Cfg) -> Result<Option<f64>> {
    spawn_join_ms_with(cfg, mp::StartMethod::Spawn)
}

/// `spawn_join_ms` with the forkserver.
pub fn spawn_join_ms_forkserver(cfg: &Cfg) -> Result<Option<f64>> {
    spawn_join_ms_with(cfg, mp::StartMethod::Forkserver)
}

/// Start and join a child running a no-op target, `cfg.n` times in a row after
/// one untimed warm-up (which also starts the forkserver); the mean time per
/// child in ms. Each child must exit 0.
///
/// CPython: `p = ctx.Process(target=noop); p.start(); p.join()`.
fn spawn_join_ms_with(cfg: &Cfg, method: mp::StartMethod) -> Result<Option<f64>> {
    let ctx = mp::get_context(method);
    let once = || -> Result<()> {
        let mut p = ctx.process(|_: ()| {}, ());
        p.start()?;
        p.join()?;
        ensure!(
            p.exitcode() == Some(0),
            "spawn_join[{method}]: exit code {:?}",
            p.exitcode()
        );
        Ok(())
    };
    once()?; // warm-up
    let t0 = Instant::now();
    for _ in 0..cfg.n {
        once()?;
    }
    Ok(Some(t0.elapsed().as_secs_f64() * 1e3 / cfg.n as f64))
}
