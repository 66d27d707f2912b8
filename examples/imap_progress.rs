//! Port of the seed "multiprocessing 多线程": `imap` with a progress bar (the
//! seed's `tqdm` loop), using `indicatif`.
//!
//! Python (the seed):
//! ```python
//! pool = Pool(4)
//! results = pool.imap(func, parameters)
//! for result in tqdm(results):
//!     print(result)
//! pool.close()
//! pool.join()
//! ```

use indicatif::{ProgressBar, ProgressStyle};
use multiprocess as mp;

/// The function run for every parameter: some CPU work, then a result.
fn func(n: u64) -> u64 {
    (1..=200_000u64).fold(n, |acc, k| {
        acc.wrapping_mul(31).wrapping_add(k * n) % 1_000_003
    })
}

fn main() -> anyhow::Result<()> {
    mp::init();
    let pool = mp::Pool::new(4)?;
    let parameters: Vec<u64> = (0..40).collect();
    let total = parameters.len() as u64;

    let results = pool.imap(func, parameters)?;
    let bar = ProgressBar::new(total);
    bar.set_style(ProgressStyle::with_template(
        "{percent:>3}%|{wide_bar}| {pos}/{len} [{elapsed_precise}<{eta_precise}, {per_sec}]",
    )?);
    for result in bar.wrap_iter(results) {
        let line = format!("{}", result?);
        if bar.is_hidden() {
            println!("{line}"); // not a terminal: print plainly, as Python does
        } else {
            bar.println(line);
        }
    }
    bar.finish();

    pool.close();
    pool.join()?;
    Ok(())
}
