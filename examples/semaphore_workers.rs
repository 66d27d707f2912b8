//! A `Semaphore` limiting how many worker processes run at once.
//!
//! Python original:
//! ```python
//! def worker(sem, active, peak, i):
//!     with sem:
//!         with active.get_lock():
//!             active.value += 1
//!             peak.value = max(peak.value, active.value)
//!         time.sleep(0.05)            # the work
//!         with active.get_lock():
//!             active.value -= 1
//!
//! sem = Semaphore(2)
//! ps = [Process(target=worker, args=(sem, active, peak, i)) for i in range(8)]
//! ```

use std::time::Duration;

use multiprocess as mp;

const LIMIT: u32 = 2;
const WORKERS: usize = 8;

fn worker((sem, active, peak, id): (mp::Semaphore, mp::Value<u32>, mp::Value<u32>, usize)) {
    sem.acquire();
    {
        let now = {
            let mut a = active.lock();
            *a += 1;
            *a
        };
        let mut p = peak.lock();
        *p = (*p).max(now);
    }
    println!("worker {id} working");
    std::thread::sleep(Duration::from_millis(50)); // the work
    *active.lock() -= 1;
    sem.release().expect("release what we acquired");
}

fn main() -> anyhow::Result<()> {
    mp::init();
    let sem = mp::Semaphore::new(LIMIT)?;
    let active = mp::Value::new(0u32)?;
    let peak = mp::Value::new(0u32)?;
    let mut children = Vec::new();
    for id in 0..WORKERS {
        let mut p = mp::Process::new(worker, (sem.clone(), active.clone(), peak.clone(), id));
        p.start()?;
        children.push(p);
    }
    for mut p in children {
        p.join()?;
    }
    println!(
        "{WORKERS} workers, at most {LIMIT} at a time: max concurrency observed = {}",
        peak.get()
    );
    assert!(peak.get() <= LIMIT);
    Ok(())
}
