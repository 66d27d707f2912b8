//! Port of the seed program "多线程/多进程" (multiprocess 使用心得): the data are
//! split into one group list per CPU, each worker fits its groups and reports
//! `data process of N: finished@X.XXs` to the parent through a `Pipe`; after
//! the workers are done the parent drains the pipe with `poll()`.
//!
//! Python original (abridged):
//! ```python
//! def fun(args):
//!     (flts, process_idx, conn, t0) = args
//!     res = [fit(keys, flt) for (keys, flt) in flts]
//!     conn.send('data process of %d: finished@%.2fs' % (process_idx+1, time.time()-t0))
//!     return res
//!
//! p = multiprocessing.Pool()
//! p_conn, c_conn = multiprocessing.Pipe()
//! params = [(groups[i], i, c_conn, t0) for i in range(njobs)]
//! res = p.map(fun, params)
//! p.close(); p.join()
//! while p_conn.poll():
//!     print(p_conn.recv())
//! ```
//!
//! Here each worker is a `Process` and returns its results through a `Queue`
//! (`examples/groupby_apply.rs` runs the same seed on a `Pool`, with the pipe
//! end inside the map parameters). Every worker holds a copy of the child
//! end of one pipe; each progress line is one small message, sent whole, so
//! lines from different workers never mix.

use multiprocess as mp;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// One group of the data: a key and its (x, y) points.
type Group = (String, Vec<(f64, f64)>);

/// Least-squares fit of one group: (key, intercept, coef).
fn fit((key, points): &Group) -> (String, f64, f64) {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (x, y) in points {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
    }
    let coef = if sxx == 0.0 { 0.0 } else { sxy / sxx };
    (key.clone(), my - coef * mx, coef)
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The worker: fit every group, report progress, hand the results back.
#[allow(clippy::type_complexity)]
fn fun(
    (groups, process_idx, conn, t0, results): (
        Vec<Group>,
        usize,
        mp::Connection,
        f64,
        mp::Queue<Vec<(String, f64, f64)>>,
    ),
) {
    let res: Vec<(String, f64, f64)> = groups.iter().map(fit).collect();
    let t = now_secs() - t0;
    conn.send(&format!(
        "data process of {}: finished@{:.2}s",
        process_idx + 1,
        t
    ))
    .unwrap();
    results.put(res).unwrap();
}

fn main() -> anyhow::Result<()> {
    mp::init();
    // Synthetic "train_data grouped by key": y = 2 + 0.5 * k * x plus a wiggle.
    let groups: Vec<Group> = (0..40)
        .map(|k| {
            let pts = (0..200).map(|i| {
                let x = f64::from(i) / 10.0;
                (
                    x,
                    2.0 + 0.5 * f64::from(k) * x + ((i * 7 + k) % 5) as f64 * 0.01,
                )
            });
            (format!("flight-{k:02}"), pts.collect())
        })
        .collect();

    let njobs = mp::cpu_count();
    let (p_conn, c_conn) = mp::pipe(true)?;
    let results = mp::Queue::new()?;
    let t0 = now_secs();

    // Split the groups round-robin, one list per CPU.
    let mut lists: Vec<Vec<Group>> = vec![Vec::new(); njobs];
    for (i, g) in groups.into_iter().enumerate() {
        lists[i % njobs].push(g);
    }
    let mut workers = Vec::new();
    for (i, list) in lists.into_iter().enumerate() {
        let mut p = mp::Process::new(fun, (list, i, c_conn.try_clone()?, t0, results.clone()));
        p.start()?;
        workers.push(p);
    }

    let mut param_dict = BTreeMap::new();
    for _ in 0..njobs {
        for (key, intercept, coef) in results.get()? {
            param_dict.insert(key, (intercept, coef));
        }
    }
    for p in &mut workers {
        p.join()?;
    }

    // As in the seed, the parent still holds the child end, so once the
    // messages are read poll() is false (with every copy of it closed, poll()
    // would be true at end of file and recv() an Err(Error::Eof)).
    println!("output:");
    while p_conn.poll()? {
        println!("{}", p_conn.recv::<String>()?);
    }
    for (key, (intercept, coef)) in param_dict.iter().take(3) {
        println!("{key}: intercept {intercept:.3}, coef {coef:.3}");
    }
    println!("{} groups fitted", param_dict.len());
    anyhow::ensure!(param_dict.len() == 40, "lost a group");
    drop(c_conn);
    Ok(())
}
