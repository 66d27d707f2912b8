//! Port of the seed "multiprocess使用心得": split the rows of a table by a key
//! into `cpu_count()` buckets, fit each group (a per-flight linear regression)
//! in a pool, report progress over a Pipe passed inside the map parameters, and
//! merge the fitted parameters.
//!
//! Python (the seed):
//! ```python
//! p = multiprocessing.Pool()
//! p_conn, c_conn = multiprocessing.Pipe()
//! for keys, flt in train_data.groupby(by=train_group_col):
//!     _flight_group_list[i % _njobs].append((keys, flt)); i += 1
//! params = [(_flight_group_list[i], i, c_conn, t0) for i in range(_njobs)]
//! res = p.map(fun, params); p.close(); p.join()
//! print('output:')
//! while p_conn.poll(): print(p_conn.recv())
//! ```

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use multiprocess as mp;
use serde::{Deserialize, Serialize};

/// One row of the training table: the group key and one (x, y) sample.
type Row = (String, f64, f64);
/// A group: its key and its rows' (x, y).
type Group = (String, Vec<(f64, f64)>);

/// The fitted model of one group (the seed's `_tmp_dict`).
#[derive(Debug, Serialize, Deserialize)]
struct Fit {
    keys: String,
    intercept: f64,
    coef: f64,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The seed's `fun`: fit every group of one bucket, then report on the pipe.
fn fun(
    (flts, process_idx, conn, t0): (Vec<Group>, usize, mp::Connection, f64),
) -> Vec<(Fit, Vec<f64>, Vec<f64>)> {
    let mut res = Vec::new();
    for (keys, flt) in flts {
        let x: Vec<f64> = flt.iter().map(|p| p.0).collect();
        let y: Vec<f64> = flt.iter().map(|p| p.1).collect();
        let n = x.len() as f64;
        let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
        let sxy: f64 = x.iter().zip(&y).map(|(a, b)| (a - mx) * (b - my)).sum();
        let sxx: f64 = x.iter().map(|a| (a - mx) * (a - mx)).sum();
        let coef = sxy / sxx;
        res.push((
            Fit {
                keys,
                intercept: my - coef * mx,
                coef,
            },
            x,
            y,
        ));
    }
    let t = now() - t0;
    conn.send(&format!(
        "data process of {}: finished@{:.2}s",
        process_idx + 1,
        t
    ))
    .unwrap();
    res
}

/// A deterministic table: 24 flights, y = a + b*x with a little noise.
fn train_data() -> Vec<Row> {
    let mut seed: u64 = 0x2c2a_ae8f;
    let mut noise = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 0.01
    };
    let mut rows = Vec::new();
    for f in 0..24 {
        let (a, b) = (f as f64 * 0.5, 1.0 + f as f64 / 8.0);
        for i in 0..200 {
            let x = i as f64 / 10.0;
            rows.push((format!("FL{:03}", f + 1), x, a + b * x + noise()));
        }
    }
    rows
}

/// Python's repr of a float, rounded to 4 places as a fit would be shown.
fn py_float(v: f64) -> String {
    let s = format!("{}", (v * 1e4).round() / 1e4);
    if s.contains('.') || s.contains('e') || s.contains("inf") || s.contains("NaN") {
        s
    } else {
        format!("{s}.0")
    }
}

fn main() -> anyhow::Result<()> {
    mp::init();
    let p = mp::Pool::new(mp::cpu_count())?;
    let (p_conn, c_conn) = mp::pipe(true)?;
    let t0 = now();

    let njobs = mp::cpu_count();
    // groupby: BTreeMap keeps pandas' sorted group order.
    let mut groups: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for (key, x, y) in train_data() {
        groups.entry(key).or_default().push((x, y));
    }
    let mut flight_group_list: Vec<Vec<Group>> = (0..njobs).map(|_| Vec::new()).collect();
    for (i, (keys, flt)) in groups.into_iter().enumerate() {
        flight_group_list[i % njobs].push((keys, flt));
    }
    let mut params = Vec::new();
    for (i, bucket) in flight_group_list.into_iter().enumerate() {
        params.push((bucket, i, c_conn.try_clone()?, t0));
    }

    let res = p.map(fun, params)?;
    p.close();
    p.join()?;

    println!("output:");
    while p_conn.poll()? {
        println!("{}", p_conn.recv::<String>()?);
    }

    let mut param_dict = Vec::new();
    for r in res {
        for (tmp_dict, _x_train, _y_train) in r {
            param_dict.push(format!(
                "'{}': {{'intercept': {}, 'coef': {}}}",
                tmp_dict.keys,
                py_float(tmp_dict.intercept),
                py_float(tmp_dict.coef)
            ));
        }
    }
    println!("{{{}}}", param_dict.join(", "));
    drop(c_conn);
    Ok(())
}
