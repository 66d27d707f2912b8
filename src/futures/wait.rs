//! [`wait`] and [`as_completed`]: waiting on many futures at once, woken by
//! the futures' completion hooks (no polling).

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::future::Future;
use crate::connection::deadline_after;
use crate::error::{Error, Result};
use crate::util::Unpoison;

/// When [`wait`] returns.
///
/// Python: `FIRST_COMPLETED`, `FIRST_EXCEPTION`, `ALL_COMPLETED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnWhen {
    /// As soon as any future is done (or cancelled).
    FirstCompleted,
    /// As soon as any future fails (an error other than a cancellation); if
    /// none does, when all are done.
    FirstException,
    /// When all futures are done.
    AllCompleted,
}

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

/// The futures told to a waiter, in completion order, with its condvar.
struct Waiter {
    /// Indices of finished futures, as they finish.
    finished: Mutex<VecDeque<usize>>,
    /// Signalled on each.
    cond: Condvar,
}

impl Waiter {
    /// A waiter told (by a done callback) when each of `fs` finishes.
    fn watch<R: Send + 'static>(fs: &[&Future<R>]) -> Arc<Waiter> {
        let w = Arc::new(Waiter {
            finished: Mutex::new(VecDeque::new()),
            cond: Condvar::new(),
        });
        for (i, f) in fs.iter().enumerate() {
            let w2 = w.clone();
            f.core.slot.on_set(Box::new(move || {
                w2.finished.lock().unpoison().push_back(i);
                w2.cond.notify_all();
            }));
        }
        w
    }

    /// The next finished index, waiting until `deadline`; `None` then.
    fn next(&self, deadline: Option<Instant>) -> Option<usize> {
        let mut q = self.finished.lock().unpoison();
        loop {
            if let Some(i) = q.pop_front() {
                return Some(i);
            }
            q = match deadline {
                None => self.cond.wait(q).unpoison(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    self.cond.wait_timeout(q, d - now).unpoison().0
                }
            };
        }
    }
}

/// `fs` without repeats (the same future given twice counts once, as in
/// Python's sets), in the order given.
fn unique<'a, R>(fs: impl IntoIterator<Item = &'a Future<R>>) -> Vec<&'a Future<R>> {
    let mut out: Vec<&'a Future<R>> = Vec::new();
    for f in fs {
        if !out.iter().any(|g| Arc::ptr_eq(&g.core, &f.core)) {
            out.push(f);
        }
    }
    out
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
/// use multiprocess as mp;
/// use mp::futures::{ProcessPoolExecutor, ReturnWhen, wait};
/// use std::time::Duration;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let ex = ProcessPoolExecutor::new(2)?;
///     let quick = ex.submit(|x: u64| x, 1)?;
///     let slow = ex.submit(|x: u64| { std::thread::sleep(Duration::from_secs(x)); x }, 60)?;
///     let r = wait([&quick, &slow], None, ReturnWhen::FirstCompleted);
///     assert_eq!(r.done.len(), 1);
///     assert_eq!(r.not_done.len(), 1);
///     slow.cancel_running();
///     Ok(())
/// }
/// ```
pub fn wait<'a, R: Send + 'static>(
    fs: impl IntoIterator<Item = &'a Future<R>>,
    timeout: Option<Duration>,
    return_when: ReturnWhen,
) -> DoneAndNotDone<'a, R> {
    let fs = unique(fs);
    let deadline = timeout.and_then(deadline_after);
    let met = |fs: &[&Future<R>]| match return_when {
        ReturnWhen::FirstCompleted => fs.iter().any(|f| f.done()),
        ReturnWhen::FirstException => fs.iter().any(|f| f.failed()) || fs.iter().all(|f| f.done()),
        ReturnWhen::AllCompleted => fs.iter().all(|f| f.done()),
    };
    if !met(&fs) {
        let waiter = Waiter::watch(&fs);
        while !met(&fs) {
            if waiter.next(deadline).is_none() {
                break;
            }
        }
    }
    let (done, not_done) = fs.into_iter().partition(|f| f.done());
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
/// use multiprocess as mp;
/// use mp::futures::{ProcessPoolExecutor, as_completed};
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let ex = ProcessPoolExecutor::new(2)?;
///     let fs: Vec<_> = (1..=4u64).map(|i| ex.submit(|i: u64| i * i, i)).collect::<mp::Result<_>>()?;
///     let mut sum = 0;
///     for f in as_completed(&fs, None) {
///         sum += f?.result()?;
///     }
///     assert_eq!(sum, 1 + 4 + 9 + 16);
///     Ok(())
/// }
/// ```
pub fn as_completed<'a, R: Send + 'static>(
    fs: impl IntoIterator<Item = &'a Future<R>>,
    timeout: Option<Duration>,
) -> AsCompleted<'a, R> {
    let fs = unique(fs);
    let waiter = Waiter::watch(&fs);
    AsCompleted {
        left: fs.len(),
        fs,
        waiter,
        deadline: timeout.and_then(deadline_after),
        ended: false,
    }
}

/// The iterator [`as_completed`] returns: `Result<&Future<R>>` per future.
pub struct AsCompleted<'a, R> {
    /// The futures, by index.
    fs: Vec<&'a Future<R>>,
    /// Told as each finishes.
    waiter: Arc<Waiter>,
    /// Futures not yet yielded.
    left: usize,
    /// When to give up.
    deadline: Option<Instant>,
    /// The timeout was reported.
    ended: bool,
}

impl<'a, R> Iterator for AsCompleted<'a, R> {
    type Item = Result<&'a Future<R>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 || self.ended {
            return None;
        }
        match self.waiter.next(self.deadline) {
            Some(i) => {
                self.left -= 1;
                Some(Ok(self.fs[i]))
            }
            None => {
                self.ended = true;
                Some(Err(Error::Timeout))
            }
        }
    }
}

impl<R> fmt::Debug for AsCompleted<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsCompleted")
            .field("futures", &self.fs.len())
            .field("left", &self.left)
            .finish()
    }
}
