//! Port of the seed program "使用 Manager 进行内存共享" (sharing memory with a
//! Manager): a table of rows is put into a manager `Namespace`; workers each
//! take a chunk, compute `C = (A + B) // 2`, and the parent concatenates the
//! chunks.
//!
//! Python original (pandas DataFrame; a `Vec` of row structs here):
//! ```python
//! manage = Manager()
//! namespace = manage.Namespace()
//!
//! def fun(namespace, i, size):
//!     print(f'pid: {os.getpid()}, processing data[{i}:{i+size}] ...')
//!     data = namespace.data[i:i+size]
//!     data['C'] = data.apply(lambda x: (x['A'] + x['B']) // 2, axis=1)
//!     # namespace.data.loc[i:i+size-1, 'C'] = data['C'].values   # not written back: why?
//!     # namespace.data2 = data  # this one is written
//!     return data
//!
//! data = pd.DataFrame({'A': list(range(10000)), 'B': list(range(10000, 0, -1))})
//! data['C'] = [0] * len(data)
//! namespace.data = data
//! jobs = min(4, cpu_count())
//! size = int(datalen / jobs) + 5
//! p = Pool(jobs)
//! res = [p.apply_async(fun, args=(namespace, i, size)) for i in range(0, datalen, size)]
//! p.close(); p.join()
//! data = pd.concat([i.get() for i in res])
//! ```
//!
//! The seed's puzzle ("the data was not written: why?") is the manager's
//! proxy rule: `namespace.data` hands the worker a *copy*; changing the copy
//! changes nothing shared until it is assigned back to the namespace. Here
//! `ns.get("data")` is visibly a copy, and `ns.set(..)` writes back.

use multiprocess as mp;
use serde::{Deserialize, Serialize};

/// One row of the table (a DataFrame row in the seed).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Row {
    a: i64,
    b: i64,
    c: i64,
}

/// A worker: reads its chunk from the namespace and computes column C.
fn fun((ns, i, size): (mp::Namespace, usize, usize)) -> Vec<Row> {
    println!(
        "pid: {}, processing data[{i}:{}] ...",
        std::process::id(),
        i + size
    );
    // A copy of the shared table (Python: `namespace.data` also returns a copy).
    let table: Vec<Row> = ns.get("data").expect("the table is in the namespace");
    let end = (i + size).min(table.len());
    let mut data = table[i..end].to_vec();
    for row in &mut data {
        row.c = (row.a + row.b).div_euclid(2); // Python's `//`
    }
    // Writing a new name works (the seed's `namespace.data2 = data`):
    ns.set(&format!("data2_{i}"), &data).expect("set data2");
    data
}

fn main() -> anyhow::Result<()> {
    mp::init();
    let manage = mp::Manager::new()?;
    let namespace = manage.namespace()?;

    let n = 10_000i64;
    let data: Vec<Row> = (0..n)
        .map(|k| Row {
            a: k,
            b: n - k,
            c: 0,
        })
        .collect();
    let datalen = data.len();
    namespace.set("data", &data)?;
    drop(data);

    let jobs = 4.min(mp::cpu_count());
    let size = datalen / jobs + 5;
    let p = mp::Pool::new(jobs)?;
    let mut res = Vec::new();
    for i in (0..datalen).step_by(size) {
        res.push(p.apply_async(fun, (namespace.clone(), i, size))?);
        println!("{i} processor started !");
    }
    p.close();
    p.join()?;

    // pd.concat([i.get() for i in res])
    let mut data: Vec<Row> = Vec::with_capacity(datalen);
    for r in &res {
        data.extend(r.get()?);
    }

    anyhow::ensure!(
        data.len() == datalen,
        "rows lost: {} of {datalen}",
        data.len()
    );
    anyhow::ensure!(
        data.iter().all(|r| r.c == (r.a + r.b).div_euclid(2)),
        "a wrong C"
    );
    println!(
        "rows: {}, first: {:?}, last: {:?}",
        data.len(),
        data[0],
        data[datalen - 1]
    );

    // The shared table itself was never changed: the workers changed copies.
    let shared: Vec<Row> = namespace.get("data")?;
    anyhow::ensure!(shared.iter().all(|r| r.c == 0));
    println!(
        "namespace.data still has C == 0 everywhere (workers changed copies); names now: {:?}",
        namespace.names()?
    );
    manage.shutdown()?;
    Ok(())
}
