//! A producer/consumer pipeline over two queues, stopped by a sentinel: the
//! classic `multiprocessing` pattern.
//!
//! Python original:
//! ```python
//! def worker(inq, outq):
//!     for item in iter(inq.get, None):       # None is the sentinel
//!         outq.put((item, item * item))
//!     outq.put(None)
//!
//! if __name__ == '__main__':
//!     inq, outq = Queue(maxsize=16), Queue()
//!     workers = [Process(target=worker, args=(inq, outq)) for _ in range(3)]
//!     for w in workers: w.start()
//!     for i in range(100): inq.put(i)
//!     for _ in workers: inq.put(None)
//!     done, total = 0, 0
//!     while done < len(workers):
//!         r = outq.get()
//!         if r is None: done += 1
//!         else: total += r[1]
//!     for w in workers: w.join()
//! ```

use multiprocess as mp;

/// Numbers in, `None` as the sentinel.
type Inbox = mp::Queue<Option<u64>>;
/// (number, square) out, `None` when a worker stops.
type Outbox = mp::Queue<Option<(u64, u64)>>;

/// A stage of the pipeline: squares numbers until it meets the sentinel.
fn worker((inq, outq): (Inbox, Outbox)) {
    while let Some(item) = inq.get().unwrap() {
        outq.put(Some((item, item * item))).unwrap();
    }
    // Pass the sentinel on, so the collector knows this worker is done.
    outq.put(None).unwrap();
}

fn main() -> anyhow::Result<()> {
    mp::init();
    // A bounded input queue: the producer waits when the workers fall behind.
    let inq = mp::Queue::with_maxsize(16)?;
    let outq = mp::Queue::new()?;
    let mut workers: Vec<mp::Process> = (0..3)
        .map(|_| mp::Process::new(worker, (inq.clone(), outq.clone())))
        .collect();
    for w in &mut workers {
        w.start()?;
    }
    for i in 0..100u64 {
        inq.put(Some(i))?;
    }
    for _ in &workers {
        inq.put(None)?;
    }
    let (mut done, mut total, mut count) = (0, 0u64, 0);
    while done < workers.len() {
        match outq.get()? {
            None => done += 1,
            Some((_, square)) => {
                total += square;
                count += 1;
            }
        }
    }
    for w in &mut workers {
        w.join()?;
    }
    println!("{count} results, sum of squares = {total}");
    anyhow::ensure!(count == 100 && total == (0..100u64).map(|i| i * i).sum::<u64>());
    Ok(())
}
