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

/// What [`wait`] and [`as_completed`] need of a future; implemented by this
/// module's [`Future`] and by `mp::dummy::futures::Future` (threads), so both
/// share this one implementation.
pub(crate) trait Watch {
    /// Runs `hook` once the future is done: at once, on this thread, if it is.
    fn on_done(&self, hook: Box<dyn FnOnce() + Send + 'static>);
    /// Finished or cancelled.
    fn is_done(&self) -> bool;
    /// Finished with an error other than a cancellation.
    fn has_failed(&self) -> bool;
    /// The same future (two handles on one task).
    fn same(&self, other: &Self) -> bool;
}

impl<R: Send + 'static> Watch for Future<R> {
    fn on_done(&self, hook: Box<dyn FnOnce() + Send + 'static>) {
        self.core.slot.on_set(hook);
    }

    fn is_done(&self) -> bool {
        self.done()
    }

    fn has_failed(&self) -> bool {
        self.failed()
    }

    fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.core, &other.core)
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
    fn watch<F: Watch>(fs: &[&F]) -> Arc<Waiter> {
        let w = Arc::new(Waiter {
            finished: Mutex::new(VecDeque::new()),
            cond: Condvar::new(),
        });
        for (i, f) in fs.iter().enumerate() {
            let w2 = w.clone();
            f.on_done(Box::new(move || {
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
fn unique<'a, F: Watch>(fs: impl IntoIterator<Item = &'a F>) -> Vec<&'a F> {
    let mut out: Vec<&'a F> = Vec::new();
    for f in fs {
        if !out.iter().any(|g| g.same(f)) {
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
    let (done, not_done) = wait_split(fs, timeout, return_when);
    DoneAndNotDone { done, not_done }
}

/// [`wait`] for any [`Watch`] future: (done, not done).
pub(crate) fn wait_split<'a, F: Watch>(
    fs: impl IntoIterator<Item = &'a F>,
    timeout: Option<Duration>,
    return_when: ReturnWhen,
) -> (Vec<&'a F>, Vec<&'a F>) {
    let fs = unique(fs);
    let deadline = timeout.and_then(deadline_after);
    let met = |fs: &[&F]| match return_when {
        ReturnWhen::FirstCompleted => fs.iter().any(|f| f.is_done()),
        ReturnWhen::FirstException => {
            fs.iter().any(|f| f.has_failed()) || fs.iter().all(|f| f.is_done())
        }
        ReturnWhen::AllCompleted => fs.iter().all(|f| f.is_done()),
    };
    if !met(&fs) {
        let waiter = Waiter::watch(&fs);
        while !met(&fs) {
            if waiter.next(deadline).is_none() {
                break;
            }
        }
    }
    fs.into_iter().partition(|f| f.is_done())
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
    AsCompleted {
        inner: completions(fs, timeout),
    }
}

/// [`as_completed`] for any [`Watch`] future.
pub(crate) fn completions<'a, F: Watch>(
    fs: impl IntoIterator<Item = &'a F>,
    timeout: Option<Duration>,
) -> Completions<'a, F> {
    let fs = unique(fs);
    let waiter = Waiter::watch(&fs);
    Completions {
        left: fs.len(),
        fs,
        waiter,
        deadline: timeout.and_then(deadline_after),
        ended: false,
    }
}

/// The iterator [`as_completed`] returns: `Result<&Future<R>>` per future.
pub struct AsCompleted<'a, R> {
    /// The shared implementation.
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

/// [`as_completed`]'s iterator over any future type.
pub(crate) struct Completions<'a, F> {
    /// The futures, by index.
    pub(crate) fs: Vec<&'a F>,
    /// Told as each finishes.
    waiter: Arc<Waiter>,
    /// Futures not yet yielded.
    pub(crate) left: usize,
    /// When to give up.
    deadline: Option<Instant>,
    /// The timeout was reported.
    ended: bool,
}

impl<'a, F> Iterator for Completions<'a, F> {
    type Item = Result<&'a F>;

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
