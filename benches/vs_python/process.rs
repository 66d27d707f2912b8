//! Process workloads (issue 2): starting and joining children.

use anyhow::{Result, ensure};
use multiprocess as mp;
use std::time::Instant;

use crate::{Better, Cfg, Side, Workload};

/// This area's rows.
pub const WORKLOADS: &[Workload] = &[Workload {
    name: "spawn_join_ms",
    better: Better::Lower,
    side: Side::Both,
    count: 20,
    quick_count: 2,
    baseline: Some("baseline_fork_exec_wait_ms"),
    what: "start + join of a no-op child, per child",
    run: spawn_join_ms,
}];

/// Start and join a child running a no-op target, `cfg.n` times in a row after
/// one untimed warm-up; the mean time per child in ms. Each child must exit 0.
///
/// CPython: `p = ctx.Process(target=noop); p.start(); p.join()`.
pub fn spawn_join_ms(cfg: &Cfg) -> Result<Option<f64>> {
    let once = || -> Result<()> {
        let mut p = mp::Process::new(|_: ()| {}, ());
        p.start()?;
        p.join()?;
        ensure!(
            p.exitcode() == Some(0),
            "spawn_join: exit code {:?}",
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
