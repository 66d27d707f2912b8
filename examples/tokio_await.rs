//! Awaiting process futures under tokio: 1,000 CPU-bound tasks submitted to a
//! `ProcessPoolExecutor`, awaited together with `join_all`, while a ticker
//! task on the same single-threaded runtime keeps ticking every 10 ms — the
//! futures never block the runtime (the pool's handler thread wakes them).
//!
//! Usage: `cargo run --release --example tokio_await`. Prints the results'
//! checksum, the elapsed time, and how many ticks the ticker made and its
//! largest gap (a blocked runtime would show one long gap).
//!
//! Python equivalent:
//! ```python
//! loop = asyncio.get_running_loop()
//! with ProcessPoolExecutor() as ex:
//!     results = await asyncio.gather(*(loop.run_in_executor(ex, work, i) for i in range(1000)))
//! ```

use std::time::{Duration, Instant};

use mp::futures::ProcessPoolExecutor;
use multiprocess as mp;

/// A few milliseconds of CPU work: an LCG run `n % 50 + 50` thousand steps.
fn work(n: u64) -> u64 {
    let mut x = n;
    for _ in 0..(n % 50 + 50) * 1000 {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    x
}

fn main() -> anyhow::Result<()> {
    mp::init();
    let executor = ProcessPoolExecutor::new(mp::cpu_count())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    rt.block_on(async {
        let t0 = Instant::now();
        let futures = (0..1000u64)
            .map(|i| executor.submit(work, i))
            .collect::<mp::Result<Vec<_>>>()?;
        let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
        let ticker = tokio::spawn(async move {
            let mut ticks = 0u32;
            let mut max_gap = Duration::ZERO;
            let mut last = Instant::now();
            let mut interval = tokio::time::interval(Duration::from_millis(10));
            loop {
                tokio::select! {
                    _ = interval.tick() => {
                        ticks += 1;
                        max_gap = max_gap.max(last.elapsed());
                        last = Instant::now();
                    }
                    _ = &mut done_rx => return (ticks, max_gap),
                }
            }
        });
        let results = futures_util::future::join_all(futures).await;
        let elapsed = t0.elapsed();
        let _ = done_tx.send(());
        let (ticks, max_gap) = ticker.await?;
        let results: Vec<u64> = results.into_iter().collect::<mp::Result<_>>()?;
        let want: Vec<u64> = (0..1000u64).map(work).collect();
        anyhow::ensure!(results == want, "a result differs from the serial one");
        let checksum = results.iter().fold(0u64, |a, &r| a ^ r);
        println!("1000 futures awaited in {elapsed:.2?}, checksum {checksum:#x}");
        println!("the ticker ticked {ticks} times meanwhile; largest gap {max_gap:.2?}");
        anyhow::Ok(())
    })?;
    executor.shutdown(true, false);
    Ok(())
}
