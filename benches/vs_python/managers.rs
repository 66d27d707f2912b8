//! Manager workloads (issue 7). Missing until `mp::Manager` exists: each
//! function returns `Ok(None)`, and its doc comment says exactly what to
//! measure, so filling a row in means replacing one function body. The CPython
//! side runs every one of them.

use anyhow::Result;

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
pub fn manager_namespace_set_get_us(_cfg: &Cfg) -> Result<Option<f64>> {
    Ok(None)
}

/// `Manager::new()`, `dict::<i64, i64>()`, 50 untimed warm-up inserts, then
/// `clear()`. With `half = cfg.n / 2`, time `insert(i, i)` for `i in 0..half`
/// then `get(&i)` for the same keys, summing the values; stop the clock, check
/// `len() == half` and the sum is `(half-1)half/2`. Return `2 * half / seconds`.
///
/// CPython: `manager_dict_ops_per_s`.
pub fn manager_dict_ops_per_s(_cfg: &Cfg) -> Result<Option<f64>> {
    Ok(None)
}
