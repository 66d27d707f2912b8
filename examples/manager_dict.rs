//! A dict shared by several workers through a manager: each worker squares
//! its own numbers into the dict and bumps a shared counter under a manager
//! lock; the parent reads the result.
//!
//! Python equivalent:
//! ```python
//! def worker(d, lock, numbers):
//!     for n in numbers:
//!         d[n] = n * n
//!         with lock:
//!             d['count'] = d.get('count', 0) + 1
//!
//! with Manager() as m:
//!     d, lock = m.dict(), m.Lock()
//!     ps = [Process(target=worker, args=(d, lock, range(w, 40, 4))) for w in range(4)]
//!     for p in ps: p.start()
//!     for p in ps: p.join()
//!     print(sorted(d.items()))
//! ```
//! (Here the counter lives in its own `ValueProxy`, since the dict's values are
//! typed: a `DictProxy<u32, u64>`.)

use multiprocess as mp;

/// Squares `numbers` into `d` and counts them in `count`.
fn worker(
    (d, lock, count, numbers): (
        mp::DictProxy<u32, u64>,
        mp::LockProxy,
        mp::ValueProxy<u32>,
        Vec<u32>,
    ),
) {
    for n in numbers {
        d.insert(n, u64::from(n) * u64::from(n)).expect("insert");
        // A read-modify-write needs the lock: get and set are two operations.
        let _guard = lock.lock().expect("lock");
        count.set(count.get().expect("get") + 1).expect("set");
    }
}

fn main() -> anyhow::Result<()> {
    mp::init();
    let m = mp::Manager::new()?;
    let d = m.dict::<u32, u64>()?;
    let lock = m.lock()?;
    let count = m.value(0u32)?;

    let workers = 4;
    let mut ps: Vec<mp::Process> = (0..workers)
        .map(|w| {
            let numbers: Vec<u32> = (w..40).step_by(workers as usize).collect();
            mp::Process::new(worker, (d.clone(), lock.clone(), count.clone(), numbers))
        })
        .collect();
    for p in &mut ps {
        p.start()?;
    }
    for p in &mut ps {
        p.join()?;
        anyhow::ensure!(
            p.exitcode() == Some(0),
            "a worker failed: {:?}",
            p.exitcode()
        );
    }

    let mut items = d.items()?;
    items.sort();
    anyhow::ensure!(items.len() == 40);
    anyhow::ensure!(
        items
            .iter()
            .all(|&(n, sq)| sq == u64::from(n) * u64::from(n))
    );
    anyhow::ensure!(count.get()? == 40, "count is {}", count.get()?);
    println!("{} squares, count = {}", items.len(), count.get()?);
    println!("{items:?}");
    m.shutdown()?;
    Ok(())
}
