//! [`Future`]: the handle `submit` returns, on the pool's result slot.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::connection::deadline_after;
use crate::error::{Error, Result};
use crate::pool::{Inner, Slot};

/// Not yet given to a worker: `cancel()` succeeds.
pub(crate) const PENDING: u8 = 0;
/// Given to a worker (Python: moved to the call queue): `cancel()` fails.
pub(crate) const RUNNING: u8 = 1;
/// Cancelled: the outcome is (or is about to be) `Error::Cancelled`.
pub(crate) const CANCELLED: u8 = 2;

/// What a [`Future`], its pool job and the executor's registry share.
pub(crate) struct Core<R> {
    /// The outcome, filled by the pool's handler thread.
    pub(crate) slot: Arc<Slot<R>>,
    /// [`PENDING`], [`RUNNING`] or [`CANCELLED`].
    pub(crate) state: AtomicU8,
    /// The pool task's id (0 until submitted), for `cancel_running`.
    pub(crate) task: AtomicU64,
    /// The pool, to kill a worker by task.
    pub(crate) pool: Weak<Inner>,
}

impl<R> Core<R> {
    pub(crate) fn new(pool: Weak<Inner>) -> Arc<Self> {
        Arc::new(Core {
            slot: Slot::new(),
            state: AtomicU8::new(PENDING),
            task: AtomicU64::new(0),
            pool,
        })
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.state.load(Ordering::Acquire) == CANCELLED
    }

    /// Python's `Future.cancel()`: only a task not yet given to a worker.
    pub(crate) fn cancel(&self) -> bool {
        match self
            .state
            .compare_exchange(PENDING, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => self.settle_cancel(PENDING),
            Err(state) => state == CANCELLED,
        }
    }

    /// Gives a future just marked [`CANCELLED`] (from `before`) its outcome.
    /// An outcome that got there first (the task finished, or failed) wins:
    /// the state goes back and the future was not cancelled, so
    /// `cancelled()` never contradicts `result()`.
    fn settle_cancel(&self, before: u8) -> bool {
        if self.slot.set(Err(Error::Cancelled)) {
            return true;
        }
        self.state.store(before, Ordering::Release);
        false
    }

    /// Marks the task running as it goes to a worker; false if cancelled.
    pub(crate) fn claim(&self) -> bool {
        match self
            .state
            .compare_exchange(PENDING, RUNNING, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(state) => state == RUNNING,
        }
    }
}

/// Cancelling a future without knowing its result type (the executor's
/// `shutdown(cancel_futures = true)`).
pub(crate) trait Cancel: Send + Sync {
    /// [`Core::cancel`].
    fn cancel(&self) -> bool;
    /// True once there is an outcome.
    fn done(&self) -> bool;
}

impl<R: Send> Cancel for Core<R> {
    fn cancel(&self) -> bool {
        Core::cancel(self)
    }

    fn done(&self) -> bool {
        !self.slot.is_pending()
    }
}

/// The eventual result of a task given to a
/// [`ProcessPoolExecutor`](super::ProcessPoolExecutor).
///
/// Wait for it with [`result`](Self::result), poll it with
/// [`done`](Self::done), or `.await` it: `Future` implements
/// [`std::future::Future`] with `Output = Result<R>`, and the pool's handler
/// thread wakes the awaiting task, under any async runtime. `Future` is `Send`
/// and `Sync`; all methods take `&self`.
///
/// Python: `concurrent.futures.Future`.
///
/// # Differences from Python
///
/// The value moves out on the first successful [`result`](Self::result) (or
/// `.await`); a second call gives [`Error::Value`] (no `R: Clone` bound). An
/// error is handed out again every time, as Python re-raises it. A future
/// whose worker died gives [`Error::WorkerLost`] and the executor goes on
/// (Python breaks the whole executor: `BrokenProcessPool`).
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let ex = mp::futures::ProcessPoolExecutor::new(2)?;
///     let f = ex.submit(|x: u64| x.pow(2), 12)?;
///     assert_eq!(f.result()?, 144);
///     assert!(f.done() && !f.cancelled());
///     Ok(())
/// }
/// ```
pub struct Future<R> {
    pub(crate) core: Arc<Core<R>>,
}

impl<R: Send + 'static> Future<R> {
    pub(crate) fn from_core(core: Arc<Core<R>>) -> Self {
        Future { core }
    }

    /// Waits for the task and returns its result.
    ///
    /// Python: `Future.result()`.
    ///
    /// # Errors
    ///
    /// [`Error::Cancelled`] when cancelled; [`Error::Remote`] when the function
    /// panicked; [`Error::WorkerLost`] when its worker died; [`Error::Timeout`]
    /// when it overran its task timeout; [`Error::Closed`] when the executor was
    /// stopped first; [`Error::Value`] when an earlier call took the value.
    pub fn result(&self) -> Result<R> {
        self.core.slot.take_deadline(None)
    }

    /// Like [`result`](Self::result), waiting at most `timeout`: then
    /// [`Error::Timeout`], and the task goes on.
    ///
    /// Python: `Future.result(timeout)`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when not done in time; else as [`result`](Self::result).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// use std::time::Duration;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let ex = mp::futures::ProcessPoolExecutor::new(1)?;
    ///     let f = ex.submit(|ms: u64| std::thread::sleep(Duration::from_millis(ms)), 300)?;
    ///     assert!(matches!(f.result_timeout(Duration::from_millis(5)), Err(mp::Error::Timeout)));
    ///     f.result()?;
    ///     Ok(())
    /// }
    /// ```
    pub fn result_timeout(&self, timeout: Duration) -> Result<R> {
        self.core.slot.take_deadline(deadline_after(timeout))
    }

    /// True once the task finished or was cancelled.
    ///
    /// Python: `Future.done()`.
    pub fn done(&self) -> bool {
        !self.core.slot.is_pending()
    }

    /// True while the task is with a worker and not done (Python counts a task
    /// in the call queue as running; here one handed to a worker).
    ///
    /// Python: `Future.running()`.
    pub fn running(&self) -> bool {
        self.core.state.load(Ordering::Acquire) == RUNNING && self.core.slot.is_pending()
    }

    /// Cancels the task if no worker has it yet: true then (and when already
    /// cancelled); false once it runs or is done. The done callbacks run.
    ///
    /// Python: `Future.cancel()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// use std::time::Duration;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let ex = mp::futures::ProcessPoolExecutor::new(1)?;
    ///     let done = ex.submit(|x: u8| x, 1)?;
    ///     done.result()?;
    ///     assert!(!done.cancel());
    ///     Ok(())
    /// }
    /// ```
    pub fn cancel(&self) -> bool {
        self.core.cancel()
    }

    /// Cancels the task even while it runs: its worker is killed (SIGKILL) and
    /// the pool replaces it. True if the future is cancelled now; false when it
    /// was already done. A task handed to a worker but waiting there behind
    /// another is not killed: it runs, and its result is dropped.
    ///
    /// Beyond Python (pebble's `future.cancel()` on a running task).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// use std::time::Duration;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let ex = mp::futures::ProcessPoolExecutor::new(1)?;
    ///     let f = ex.submit(|_: ()| std::thread::sleep(Duration::from_secs(60)), ())?;
    ///     assert!(f.cancel_running());
    ///     assert!(matches!(f.result(), Err(mp::Error::Cancelled)));
    ///     assert_eq!(ex.submit(|x: u8| x, 7)?.result()?, 7);
    ///     Ok(())
    /// }
    /// ```
    pub fn cancel_running(&self) -> bool {
        loop {
            let state = self.core.state.load(Ordering::Acquire);
            if state == CANCELLED {
                return true;
            }
            if self.done() {
                return false;
            }
            if self
                .core
                .state
                .compare_exchange(state, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            if !self.core.settle_cancel(state) {
                return false;
            }
            if state == RUNNING {
                let task = self.core.task.load(Ordering::Acquire);
                if let Some(pool) = self.core.pool.upgrade() {
                    pool.kill_task(task);
                }
            }
            return true;
        }
    }

    /// True if the future was cancelled.
    ///
    /// Python: `Future.cancelled()`.
    pub fn cancelled(&self) -> bool {
        self.core.is_cancelled()
    }

    /// Runs `cb(&future)` once the future is done (finished or cancelled): at
    /// once on this thread if it already is, else on the pool's handler thread
    /// (keep it quick; it must not wait for another result of the same
    /// executor). Callbacks run in the order added; a panic in one is printed
    /// and ignored.
    ///
    /// Python: `Future.add_done_callback(fn)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// use std::sync::mpsc;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let ex = mp::futures::ProcessPoolExecutor::new(1)?;
    ///     let (tx, rx) = mpsc::channel();
    ///     let f = ex.submit(|x: i32| x * 2, 21)?;
    ///     f.add_done_callback(move |f| tx.send(f.result().ok()).unwrap());
    ///     assert_eq!(rx.recv().unwrap(), Some(42));
    ///     Ok(())
    /// }
    /// ```
    pub fn add_done_callback<F>(&self, cb: F)
    where
        F: FnOnce(&Future<R>) + Send + 'static,
    {
        let me = Future {
            core: self.core.clone(),
        };
        self.core.slot.on_set(Box::new(move || cb(&me)));
    }

    /// Finished with an error other than a cancellation.
    pub(crate) fn failed(&self) -> bool {
        !self.cancelled() && self.core.slot.error().is_some()
    }
}

impl<R: Send + 'static> std::future::Future for Future<R> {
    type Output = Result<R>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R>> {
        self.core.slot.poll_take(cx)
    }
}

impl<R> fmt::Debug for Future<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.core.state.load(Ordering::Acquire) {
            CANCELLED => "cancelled",
            _ if !self.core.slot.is_pending() => "finished",
            RUNNING => "running",
            _ => "pending",
        };
        f.debug_struct("Future").field("state", &state).finish()
    }
}
