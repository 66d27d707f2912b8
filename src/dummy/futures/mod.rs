//! Python's `concurrent.futures.ThreadPoolExecutor`: `mp::futures` on
//! threads. The same names, methods and errors, so a program written for
//! `mp::futures::ProcessPoolExecutor` runs on threads with its `use` line
//! changed to `use multiprocess::dummy as mp;`.
//!
//! | `mp::futures` (processes) | here (threads) |
//! |---|---|
//! | `ProcessPoolExecutor` | [`ThreadPoolExecutor`], also named [`ProcessPoolExecutor`] (as `multiprocessing.dummy` names threads `Process`) |
//! | `ExecutorBuilder`, `MapOptions`, `MapIter` | [`ExecutorBuilder`], [`MapOptions`] (the same type), [`MapIter`] |
//! | `Future<R>`, `.await` | [`Future`], `.await` (any runtime) |
//! | `as_completed`, `wait`, `ReturnWhen`, `DoneAndNotDone`, `AsCompleted` | [`as_completed`], [`wait`], [`ReturnWhen`] (the same type), [`DoneAndNotDone`], [`AsCompleted`] |
//! | `cancel_requested()` (always false) | [`cancel_requested`] |
//!
//! `wait` and `as_completed` are the process versions' code (one
//! implementation for both kinds of future); the executor runs its tasks on
//! a thread [`Pool`](super::Pool).
//!
//! # What differs from processes
//!
//! * A task may capture, and arguments and results need only be `Send`.
//! * A panic fails only its future with [`Error::Remote`](crate::Error::Remote),
//!   as in a process. But an abort or a segfault in a task takes the whole
//!   program down: there is no `WorkerLost` for a thread.
//! * [`Future::cancel_running`]: a thread cannot be killed. The future is
//!   cancelled at once and a fresh worker takes the busy one's place, and the
//!   task is *asked* to stop: [`cancel_requested`] turns true for it. A task
//!   that never looks runs to its end (its result is dropped).
//! * A per-task timeout likewise fails the future and replaces the worker;
//!   the overrunning thread exits when its function returns.
//! * [`ExecutorBuilder::max_memory_per_child`] is refused with
//!   [`Error::Value`](crate::Error::Value): threads have no memory of their
//!   own.
//!
//! # Examples
//!
//! ```
//! use multiprocess::dummy as mp;
//! use mp::futures::{ProcessPoolExecutor, as_completed};
//! fn main() -> mp::Result<()> {
//!     mp::init();
//!     let ex = ProcessPoolExecutor::new(2)?; // threads, under this name too
//!     let fs: Vec<_> = [10u64, 20, 30].into_iter().map(|n| ex.submit(|n: u64| (1..=n).sum::<u64>(), n)).collect::<mp::Result<_>>()?;
//!     let mut sums: Vec<u64> = as_completed(&fs, None).map(|f| f?.result()).collect::<mp::Result<_>>()?;
//!     sums.sort();
//!     assert_eq!(sums, [55, 210, 465]);
//!     Ok(())
//! }
//! ```

mod executor;
mod future;

use std::fmt;
use std::time::Duration;

use crate::error::Result;
use crate::futures::{Completions, completions, wait_split};
pub use crate::futures::{MapOptions, ReturnWhen};
pub use executor::{ExecutorBuilder, MapIter, ThreadPoolExecutor};
pub use future::{Future, cancel_requested};

/// [`ThreadPoolExecutor`] under the process executor's name, so that a
/// program runs on threads with only its `use` line changed (Python's
/// `multiprocessing.dummy` names its threads `Process` likewise).
pub type ProcessPoolExecutor = ThreadPoolExecutor;

/// What [`wait`] returns: the futures done and those not done, each in the
/// order given (duplicates once).
///
/// Python: `DoneAndNotDoneFutures(done, not_done)`.
pub struct DoneAndNotDone<'a, R> {
    /// Finished or cancelled.
    pub done: Vec<&'a Future<R>>,
    /// Still pending or running.
    pub not_done: Vec<&'a Future<R>>,
}

impl<R> fmt::Debug for DoneAndNotDone<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DoneAndNotDone")
            .field("done", &self.done.len())
            .field("not_done", &self.not_done.len())
            .finish()
    }
}

/// Waits until the futures meet `return_when`, or `timeout` passes (`None`:
/// no limit); which are done and which not. A timeout is not an error: look
/// at `not_done`.
///
/// Python: `concurrent.futures.wait(fs, timeout=None, return_when=ALL_COMPLETED)`.
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// use mp::futures::{ThreadPoolExecutor, ReturnWhen, wait};
/// let ex = ThreadPoolExecutor::new(2)?;
/// let go = mp::Event::new()?;
/// let g = go.clone();
/// let quick = ex.submit(|x: u64| x, 1)?;
/// let slow = ex.submit(move |x: u64| { g.wait(); x }, 2)?;
/// let r = wait([&quick, &slow], None, ReturnWhen::FirstCompleted);
/// assert_eq!(r.done.len(), 1);
/// assert_eq!(r.not_done.len(), 1);
/// go.set();
/// # Ok::<(), mp::Error>(())
/// ```
pub fn wait<'a, R: Send + 'static>(
    fs: impl IntoIterator<Item = &'a Future<R>>,
    timeout: Option<Duration>,
    return_when: ReturnWhen,
) -> DoneAndNotDone<'a, R> {
    let (done, not_done) = wait_split(fs, timeout, return_when);
    DoneAndNotDone { done, not_done }
}

/// The futures as they finish (finished or cancelled), each once: the ones
/// already done first. Past `timeout` (`None`: no limit) it yields one
/// `Err(Error::Timeout)` and ends.
///
/// Python: `concurrent.futures.as_completed(fs, timeout=None)`.
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// use mp::futures::{ThreadPoolExecutor, as_completed};
/// let ex = ThreadPoolExecutor::new(2)?;
/// let fs: Vec<_> = (1..=4u64).map(|i| ex.submit(|i: u64| i * i, i)).collect::<mp::Result<_>>()?;
/// let mut sum = 0;
/// for f in as_completed(&fs, None) {
///     sum += f?.result()?;
/// }
/// assert_eq!(sum, 1 + 4 + 9 + 16);
/// # Ok::<(), mp::Error>(())
/// ```
pub fn as_completed<'a, R: Send + 'static>(
    fs: impl IntoIterator<Item = &'a Future<R>>,
    timeout: Option<Duration>,
) -> AsCompleted<'a, R> {
    AsCompleted {
        inner: completions(fs, timeout),
    }
}

/// The iterator [`as_completed`] returns: `Result<&Future<R>>` per future.
pub struct AsCompleted<'a, R> {
    /// The process version's implementation.
    inner: Completions<'a, Future<R>>,
}

impl<'a, R> Iterator for AsCompleted<'a, R> {
    type Item = Result<&'a Future<R>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next()
    }
}

impl<R> fmt::Debug for AsCompleted<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsCompleted")
            .field("futures", &self.inner.fs.len())
            .field("left", &self.inner.left)
            .finish()
    }
}
