//! Python's `concurrent.futures` for processes: a [`ProcessPoolExecutor`]
//! whose [`submit`](ProcessPoolExecutor::submit) hands back a [`Future`],
//! with [`as_completed`] and [`wait`].
//!
//! | Python | Rust |
//! |---|---|
//! | `ProcessPoolExecutor(max_workers, initializer=, initargs=, max_tasks_per_child=)` | [`ProcessPoolExecutor::new`], [`ProcessPoolExecutor::builder`] ([`ExecutorBuilder`]) |
//! | `ex.submit(fn, arg)` | [`ProcessPoolExecutor::submit`] |
//! | `ex.map(fn, it, timeout=, chunksize=, buffersize=)` | [`ProcessPoolExecutor::map`], [`ProcessPoolExecutor::map_with`] ([`MapOptions`]) |
//! | `ex.shutdown(wait=True, cancel_futures=False)` | [`ProcessPoolExecutor::shutdown`]; dropping is `shutdown(true, false)` |
//! | `Future.result(timeout)`, `done`, `running`, `cancel`, `cancelled`, `add_done_callback` | [`Future`] methods of the same names, `result_timeout` |
//! | `await asyncio.wrap_future(f)` | `f.await` (any runtime) |
//! | `as_completed(fs, timeout)`, `wait(fs, timeout, return_when)` | [`as_completed`], [`wait`], [`ReturnWhen`] |
//! | `CancelledError` | [`Error::Cancelled`](crate::Error::Cancelled) |
//!
//! # Beyond Python
//!
//! * A worker that dies mid-task fails only that future with
//!   [`Error::WorkerLost`](crate::Error::WorkerLost); the executor replaces it
//!   and goes on (Python breaks the whole executor: `BrokenProcessPool`).
//! * [`Future::cancel_running`] kills the worker running the task.
//! * [`ProcessPoolExecutor::submit_with_timeout`]: a per-task time limit.
//! * [`ExecutorBuilder::max_memory_per_child`]: workers recycled by memory.
//! * `map` reads its input lazily with a bounded read-ahead (3.14's
//!   `buffersize` is the default behaviour here).
//!
//! # Examples
//!
//! ```
//! use multiprocess as mp;
//! use mp::futures::{ProcessPoolExecutor, as_completed};
//! fn main() -> mp::Result<()> {
//!     mp::init();
//!     let ex = ProcessPoolExecutor::new(2)?;
//!     let fs: Vec<_> = [10u64, 20, 30].into_iter().map(|n| ex.submit(|n: u64| (1..=n).sum::<u64>(), n)).collect::<mp::Result<_>>()?;
//!     let mut sums: Vec<u64> = as_completed(&fs, None).map(|f| f?.result()).collect::<mp::Result<_>>()?;
//!     sums.sort();
//!     assert_eq!(sums, [55, 210, 465]);
//!     Ok(())
//! }
//! ```

mod executor;
mod future;
mod job;
mod wait;

pub use executor::{ExecutorBuilder, MapIter, MapOptions, ProcessPoolExecutor};
pub use future::Future;
pub use wait::{AsCompleted, DoneAndNotDone, ReturnWhen, as_completed, wait};
// For the thread twin, `mp::dummy::futures`, which shares `wait`'s code.
pub(crate) use wait::{Completions, Watch, completions, wait_split};

/// Whether [`Future::cancel_running`] was called on the task running on this
/// thread: always false in a worker process, where `cancel_running` kills the
/// worker instead of asking it to stop. It exists so that a task written to
/// stop early under `mp::dummy::futures` (threads, which cannot be killed and
/// are asked instead) compiles and runs here unchanged.
///
/// Beyond Python.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let ex = mp::futures::ProcessPoolExecutor::new(1)?;
///     let f = ex.submit(|n: u64| (0..n).take_while(|_| !mp::futures::cancel_requested()).count(), 10)?;
///     assert_eq!(f.result()?, 10);
///     Ok(())
/// }
/// ```
pub fn cancel_requested() -> bool {
    false
}
