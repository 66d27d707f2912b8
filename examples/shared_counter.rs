//! The classic shared-counter race, across processes.
//!
//! Python original:
//! ```python
//! def work(counter, n, locked):
//!     for _ in range(n):
//!         if locked:
//!             with counter.get_lock():
//!                 counter.value += 1
//!         else:
//!             counter.value += 1      # read, add, write: not atomic
//!
//! counter = Value('q', 0)
//! ps = [Process(target=work, args=(counter, N, False)) for _ in range(4)]
//! ...
//! ```
//!
//! Unlocked, two processes read the same old value and both write old + 1: an
//! update is lost. Holding the value's lock across the read-modify-write loses
//! none.

use multiprocess as mp;

const WORKERS: usize = 4;
const INCREMENTS: u64 = 100_000;

/// Runs `WORKERS` processes of `work` on a fresh counter; returns its end value.
fn run(with_lock: bool) -> anyhow::Result<u64> {
    let counter = mp::Value::new(0u64)?;
    let mut children = Vec::new();
    for _ in 0..WORKERS {
        let mut p = mp::Process::new(work, (counter.clone(), INCREMENTS, with_lock));
        p.start()?;
        children.push(p);
    }
    for mut p in children {
        p.join()?;
    }
    Ok(counter.get())
}

fn work((counter, n, with_lock): (mp::Value<u64>, u64, bool)) {
    for _ in 0..n {
        if with_lock {
            *counter.lock() += 1; // like `with counter.get_lock(): counter.value += 1`
        } else {
            let old = counter.get(); // read
            counter.set(old + 1); // write: another process may have written in between
        }
    }
}

fn main() -> anyhow::Result<()> {
    mp::init();
    let expected = WORKERS as u64 * INCREMENTS;
    let racy = run(false)?;
    let safe = run(true)?;
    println!("expected:           {expected}");
    println!(
        "without the lock:   {racy} ({} updates lost)",
        expected - racy
    );
    println!(
        "with the lock:      {safe} ({} updates lost)",
        expected - safe
    );
    assert_eq!(safe, expected);
    Ok(())
}
