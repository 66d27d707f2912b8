//! Manager workloads (issue 7): a Namespace set/get round trip and dict
//! operations against a `Manager` server process, the same work as the CPython
//! functions of the same names.

use std::time::Instant;

use anyhow::{Result, anyhow, bail, ensure};
use multiprocess as mp;

use crate::{Better, Cfg, Side, Workload};

/// This area's rows.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "manager_namespace_set_get_us",
        better: Better::Lower,
        side: Side::Both,
        count: 2_000,
        quick_count: 200,
        baseline: None,
        what: "Namespace set + get of an int, per pair",
        run: manager_namespace_set_get_us,
    },
    Workload {
        name: "manager_dict_ops_per_s",
        better: Better::Higher,
        side: Side::Both,
        count: 10_000,
        quick_count: 1_000,
        baseline: None,
        what: "DictProxy: n/2 inserts then n/2 gets",
        run: manager_dict_ops_per_s,
    },
];

/// `Manager::new()` and `namespace()` (untimed), 50 untimed warm-up rounds,
/// then time `cfg.n` rounds of `ns.set("x", &i)` and `ns.get::<u64>("x")`,
/// checking each get returns `i`. Return µs per set+get pair. Shut the manager
/// down untimed.
///
/// CPython: `manager_namespace_set_get_us`.
pub fn manager_namespace_set_get_us(cfg: &Cfg) -> Result<Option<f64>> {
    let m = mp::Manager::new()?;
    let ns = m.namespace()?;
    for i in 0..50u64 {
        ns.set("x", &i)?;
        ensure!(ns.get::<u64>("x")? == i, "namespace warm-up");
    }
    let t0 = Instant::now();
    for i in 0..cfg.n {
        ns.set("x", &i)?;
        if ns.get::<u64>("x")? != i {
            bail!("namespace get {i}");
        }
    }
    let dt = t0.elapsed();
    m.shutdown()?;
    Ok(Some(dt.as_secs_f64() * 1e6 / cfg.n as f64))
}

/// `Manager::new()`, `dict::<i64, i64>()`, 50 untimed warm-up inserts, then
/// `clear()`. With `half = cfg.n / 2`, time `insert(i, i)` for `i in 0..half`
/// then `get(&i)` for the same keys, summing the values; stop the clock, check
/// `len() == half` and the sum is `(half-1)half/2`. Return `2 * half / seconds`.
///
/// CPython: `manager_dict_ops_per_s`.
pub fn manager_dict_ops_per_s(cfg: &Cfg) -> Result<Option<f64>> {
    let half = (cfg.n / 2) as i64;
    let m = mp::Manager::new()?;
    let d = m.dict::<i64, i64>()?;
    for i in 0..50 {
        d.insert(-1 - i, i)?;
    }
    d.clear()?;
    let t0 = Instant::now();
    for i in 0..half {
        d.insert(i, i)?;
    }
    let mut got = 0i64;
    for i in 0..half {
        got += d.get(&i)?.ok_or_else(|| anyhow!("dict key {i} missing"))?;
    }
    let dt = t0.elapsed();
    ensure!(d.len()? == half as usize, "dict len");
    let want = (half - 1) * half / 2;
    ensure!(got == want, "dict checksum {got} != {want}");
    m.shutdown()?;
    Ok(Some(2.0 * half as f64 / dt.as_secs_f64()))
}
