//! Port of the seed "Python学习笔记之多进程": a batch of correlation jobs
//! (`cdata` strings `"x1,x2,...;y1,y2,..."` joined by `@`), run with one
//! `apply_async` per job, results joined by `@` in order; then the seed's
//! timing table, pool against serial.
//!
//! Python (the seed, `Calculator.py` and `correlation.py`):
//! ```python
//! p = multiprocessing.Pool()
//! for cdata in clist:
//!     results.append(p.apply_async(corr.work, args=(cdata,)))
//! p.close(); p.join()
//! for r in results: retstr += r.get() ...
//!
//! def work(cdata):
//!     val = re.split(';', cdata.strip())
//!     return str(compute_corr(val[0], val[1]))
//! ```

use std::time::Instant;

use multiprocess as mp;

/// `correlation.work`: split the job and compute its correlation.
fn work(cdata: String) -> String {
    let val: Vec<&str> = cdata.trim().split(';').collect();
    compute_corr(val[0], val[1]).to_string()
}

/// The strongest Pearson correlation of two comma-separated number lists
/// over lags 0..32 (the seed hides its computation; this one has its weight).
fn compute_corr(xstr: &str, ystr: &str) -> f64 {
    let x: Vec<f64> = xstr.split(',').filter_map(|v| v.parse().ok()).collect();
    let y: Vec<f64> = ystr.split(',').filter_map(|v| v.parse().ok()).collect();
    (0..32)
        .map(|lag| pearson(&x[lag..], &y))
        .fold(f64::MIN, f64::max)
}

/// Pearson's correlation of the common length of `x` and `y`.
fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &y[..n]);
    let n = n as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    let r = sxy / (sxx * syy).sqrt();
    (r * 1e6).round() / 1e6
}

/// `Base.execute_thread`: one `apply_async` per job on a default-size pool.
fn execute_thread(arg: &str) -> anyhow::Result<String> {
    let clist: Vec<&str> = arg.trim().split('@').collect();
    let p = mp::Pool::new(mp::cpu_count())?;
    let mut results = Vec::new();
    for cdata in &clist {
        results.push(p.apply_async(work, cdata.to_string())?);
    }
    p.close();
    p.join()?;
    let mut parts = Vec::with_capacity(results.len());
    for r in &results {
        parts.push(r.get()?);
    }
    Ok(parts.join("@"))
}

/// The same jobs, one after the other in this process.
fn execute_serial(arg: &str) -> String {
    arg.trim()
        .split('@')
        .map(|c| work(c.to_string()))
        .collect::<Vec<_>>()
        .join("@")
}

/// `tasks` jobs of 2000-point series, deterministic.
fn make_batch(tasks: usize) -> String {
    let mut seed: u64 = 0x63ad_cb6b;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 40) as f64 / (1u64 << 24) as f64
    };
    let mut jobs = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        let xs: Vec<f64> = (0..2000).map(|_| next()).collect();
        let ys: Vec<String> = xs
            .iter()
            .map(|x| format!("{:.5}", x * 0.7 + next() * 0.3))
            .collect();
        let xs: Vec<String> = xs.iter().map(|x| format!("{x:.5}")).collect();
        jobs.push(format!("{};{}", xs.join(","), ys.join(",")));
    }
    jobs.join("@")
}

fn main() -> anyhow::Result<()> {
    mp::init();
    println!("| 任务数量 | 多进程方式耗时(S) | 没多进程方式耗时(S) |");
    println!("| --- | --- | --- |");
    for tasks in [2540, 10160] {
        let batch = make_batch(tasks);
        let t = Instant::now();
        let parallel = execute_thread(&batch)?;
        let t_pool = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let serial = execute_serial(&batch);
        let t_serial = t.elapsed().as_secs_f64();
        anyhow::ensure!(parallel == serial, "the pool and the serial run disagree");
        println!("| {tasks} | {t_pool:.2}  | {t_serial:.2} |");
    }
    Ok(())
}
