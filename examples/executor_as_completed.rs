//! The Python docs' `ThreadPoolExecutor`/`as_completed` example ("load_url"),
//! done with processes and CPU work instead of URLs: each "URL" is a job of a
//! given size (count the primes below it), and the results are printed as
//! they complete, not in submission order.
//!
//! Usage: `cargo run --example executor_as_completed`.
//!
//! Python (the docs):
//! ```python
//! with concurrent.futures.ThreadPoolExecutor(max_workers=5) as executor:
//!     future_to_url = {executor.submit(load_url, url, 60): url for url in URLS}
//!     for future in concurrent.futures.as_completed(future_to_url):
//!         url = future_to_url[future]
//!         try:
//!             data = future.result()
//!         except Exception as exc:
//!             print('%r generated an exception: %s' % (url, exc))
//!         else:
//!             print('%r page is %d bytes' % (url, len(data)))
//! ```

use mp::futures::{ProcessPoolExecutor, as_completed};
use multiprocess as mp;

/// The "pages": a name and a size of work. The last one fails, as a bad URL
/// does in the docs' example.
const JOBS: &[(&str, u64)] = &[
    ("http://www.foxnews.com/", 400_000),
    ("http://www.cnn.com/", 150_000),
    ("http://europe.wsj.com/", 600_000),
    ("http://www.bbc.co.uk/", 50_000),
    ("http://nonexistant-subdomain.python.org/", 0),
];

/// `load_url`: count the primes below `limit` (a sieve); a limit of 0 is an
/// error, like an unknown host.
fn load_url(limit: u64) -> usize {
    assert!(limit > 0, "Name or service not known");
    let n = limit as usize;
    let mut composite = vec![false; n];
    let mut primes = 0;
    for i in 2..n {
        if !composite[i] {
            primes += 1;
            let mut j = i * i;
            while j < n {
                composite[j] = true;
                j += i;
            }
        }
    }
    primes
}

fn main() -> mp::Result<()> {
    mp::init();
    let executor = ProcessPoolExecutor::new(5)?;
    // future_to_url: the futures, and the name of each at the same index.
    let futures: Vec<_> = JOBS
        .iter()
        .map(|&(_, size)| executor.submit(load_url, size))
        .collect::<mp::Result<_>>()?;
    for future in as_completed(&futures, None) {
        let future = future?;
        let index = futures
            .iter()
            .position(|f| std::ptr::eq(f, future))
            .expect("as_completed yields the futures given");
        let url = JOBS[index].0;
        match future.result() {
            Ok(primes) => println!("{url:?} page has {primes} primes"),
            Err(exc) => println!("{url:?} generated an exception: {exc}"),
        }
    }
    executor.shutdown(true, false);
    Ok(())
}
