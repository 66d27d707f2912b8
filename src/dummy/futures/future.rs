//! [`Future`]: the handle the thread executor's `submit` returns.
//!
//! The outcome lives in the crate's one result cell (`crate::pool::Slot`,
//! the process pool's: threads waiting, async wakers, completion hooks);
//! the task runs on a [`Pool`](super::super::Pool) worker thread. One
//! atomic state decides, once, who delivers the outcome: the task, a
//! cancel, or the pool's `fail` (timeout, `terminate`).

use std::cell::RefCell;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use super::super::Pool;
use crate::error::{Error, Result};
use crate::futures::Watch;
use crate::pool::Slot;
use crate::util::deadline_after;

/// Not yet taken by a worker thread: `cancel()` succeeds.
const PENDING: u8 = 0;
/// A worker thread runs it: `cancel()` fails, `cancel_running()` asks.
const RUNNING: u8 = 1;
/// Cancelled: the outcome is (or is about to be) `Error::Cancelled`.
const CANCELLED: u8 = 2;
/// The task, a timeout or `terminate()` delivered the outcome.
const FINISHED: u8 = 3;

thread_local! {
    /// The state of the task this worker thread runs now, for
    /// [`cancel_requested`].
    static CURRENT: RefCell<Option<Arc<AtomicU8>>> = const { RefCell::new(None) };
}

/// Whether [`Future::cancel_running`] was called on the task running on this
/// thread: a thread cannot be killed, so a task that wants to stop early when
/// cancelled checks this now and then and returns. False outside a task of
/// a [`ThreadPoolExecutor`](super::ThreadPoolExecutor).
///
/// Beyond Python. `mp::futures::cancel_requested` is the process twin
/// (always false there: a process is killed instead).
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// use std::sync::mpsc;
/// let ex = mp::futures::ThreadPoolExecutor::new(1)?;
/// let (started_tx, started) = mpsc::channel();
/// let f = ex.submit(move |_: ()| {
///     started_tx.send(()).unwrap();
///     while !mp::futures::cancel_requested() {
///         std::thread::yield_now(); // a long computation, in slices
///     }
/// }, ())?;
/// started.recv().unwrap();
/// assert!(f.cancel_running()); // asks; the loop sees it and returns
/// assert!(matches!(f.result(), Err(mp::Error::Cancelled)));
/// ex.shutdown(true, false); // returns: the task stopped
/// # Ok::<(), mp::Error>(())
/// ```
pub fn cancel_requested() -> bool {
    CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Acquire) == CANCELLED)
    })
}

/// Runs `f` with `state` as this thread's current task (for
/// [`cancel_requested`]).
pub(super) fn with_current<T>(state: Arc<AtomicU8>, f: impl FnOnce() -> T) -> T {
    /// Clears the slot even if `f` panics.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            CURRENT.with(|c| c.borrow_mut().take());
        }
    }
    CURRENT.with(|c| *c.borrow_mut() = Some(state));
    let _reset = Reset;
    f()
}

/// What a [`Future`], its task and the executor share.
pub(super) struct Core<R> {
    /// The outcome.
    slot: Arc<Slot<R>>,
    /// [`PENDING`], [`RUNNING`], [`CANCELLED`] or [`FINISHED`]; in an `Arc`
    /// so the running task's thread can look at it ([`cancel_requested`]).
    state: Arc<AtomicU8>,
    /// The pool, to start a worker in place of one whose task was cancelled
    /// while running.
    pool: Weak<Pool>,
}

impl<R> Core<R> {
    pub(super) fn new(pool: Weak<Pool>) -> Arc<Self> {
        Arc::new(Core {
            slot: Slot::new(),
            state: Arc::new(AtomicU8::new(PENDING)),
            pool,
        })
    }

    pub(super) fn state(&self) -> Arc<AtomicU8> {
        self.state.clone()
    }

    pub(super) fn is_cancelled(&self) -> bool {
        self.state.load(Ordering::Acquire) == CANCELLED
    }

    /// Marks the task running as a worker takes it; false if it was
    /// cancelled or failed first (its outcome is set: skip it).
    pub(super) fn claim(&self) -> bool {
        self.state
            .compare_exchange(PENDING, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Delivers `outcome` unless a cancel or an earlier outcome came first;
    /// true if it did.
    pub(super) fn finish(&self, outcome: Result<R>) -> bool {
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            if cur == CANCELLED || cur == FINISHED {
                return false;
            }
            match self
                .state
                .compare_exchange(cur, FINISHED, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return self.slot.set(outcome),
                Err(now) => cur = now,
            }
        }
    }

    /// Python's `Future.cancel()`: only a task no worker has taken yet.
    fn cancel(&self) -> bool {
        match self
            .state
            .compare_exchange(PENDING, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                self.slot.set(Err(Error::Cancelled));
                true
            }
            Err(state) => state == CANCELLED,
        }
    }
}

/// Cancelling a future without knowing its result type (the executor's
/// `shutdown(cancel_futures = true)`).
pub(super) trait Cancel: Send + Sync {
    /// Python's `Future.cancel()`.
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
/// [`ThreadPoolExecutor`](super::ThreadPoolExecutor): `mp::futures::Future`'s
/// methods, for a task on a worker thread.
///
/// Wait for it with [`result`](Self::result), poll it with
/// [`done`](Self::done), or `.await` it: `Future` implements
/// [`std::future::Future`] with `Output = Result<R>`, and the worker thread
/// that finishes the task wakes the awaiting task, under any runtime.
///
/// Python: `concurrent.futures.Future` (from a `ThreadPoolExecutor`).
///
/// # Differences from the process version
///
/// A panic in the task is its [`Error::Remote`], as in a process; but a
/// thread cannot be killed, so [`cancel_running`](Self::cancel_running)
/// cancels the future and asks the task to stop ([`cancel_requested`])
/// instead of killing it. The value moves out on the first successful
/// [`result`](Self::result), as there.
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// let ex = mp::futures::ThreadPoolExecutor::new(2)?;
/// let base = 10; // a thread's task may capture
/// let f = ex.submit(move |x: u64| base + x.pow(2), 12)?;
/// assert_eq!(f.result()?, 154);
/// assert!(f.done() && !f.cancelled());
/// # Ok::<(), mp::Error>(())
/// ```
pub struct Future<R> {
    pub(super) core: Arc<Core<R>>,
}

impl<R: Send + 'static> Future<R> {
    /// Waits for the task and returns its result.
    ///
    /// Python: `Future.result()`.
    ///
    /// # Errors
    ///
    /// [`Error::Cancelled`] when cancelled; [`Error::Remote`] when the function
    /// panicked (or the executor's initializer did); [`Error::Timeout`] when it
    /// overran its task timeout; [`Error::Closed`] when the executor was
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
    /// use multiprocess::dummy as mp;
    /// use std::time::Duration;
    /// let ex = mp::futures::ThreadPoolExecutor::new(1)?;
    /// let go = mp::Event::new()?;
    /// let g = go.clone();
    /// let f = ex.submit(move |x: u8| { g.wait(); x }, 3)?;
    /// assert!(matches!(f.result_timeout(Duration::from_millis(5)), Err(mp::Error::Timeout)));
    /// go.set();
    /// assert_eq!(f.result()?, 3);
    /// # Ok::<(), mp::Error>(())
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

    /// True while a worker thread runs the task and it is not done.
    ///
    /// Python: `Future.running()`.
    pub fn running(&self) -> bool {
        self.core.state.load(Ordering::Acquire) == RUNNING && self.core.slot.is_pending()
    }

    /// Cancels the task if no worker has taken it yet: true then (and when
    /// already cancelled); false once it runs or is done. The done callbacks
    /// run.
    ///
    /// Python: `Future.cancel()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::dummy as mp;
    /// let ex = mp::futures::ThreadPoolExecutor::new(1)?;
    /// let go = mp::Event::new()?;
    /// let g = go.clone();
    /// let busy = ex.submit(move |_: ()| g.wait(), ())?;
    /// let queued = ex.submit(|x: u8| x, 1)?;
    /// assert!(queued.cancel());
    /// go.set();
    /// busy.result()?;
    /// assert!(!busy.cancel()); // done: too late
    /// assert!(matches!(queued.result(), Err(mp::Error::Cancelled)));
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn cancel(&self) -> bool {
        self.core.cancel()
    }

    /// Cancels the task even while it runs: the future is cancelled at once
    /// (its [`result`](Self::result) is [`Error::Cancelled`], its callbacks
    /// run) and a fresh worker thread takes the busy one's place. True if the
    /// future is cancelled now; false when it was already done.
    ///
    /// A thread cannot be killed: the function goes on until it returns (its
    /// result is dropped, and then its thread exits), unless it stops early by
    /// checking [`cancel_requested`], which turns true for it now. Until it
    /// returns, the executor's `shutdown(wait = true)` and drop wait for it.
    /// The process version kills the worker instead.
    ///
    /// Beyond Python (pebble's `future.cancel()` on a running task).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::dummy as mp;
    /// let ex = mp::futures::ThreadPoolExecutor::new(1)?;
    /// let (started_tx, started) = std::sync::mpsc::channel();
    /// let f = ex.submit(move |_: ()| {
    ///     started_tx.send(()).unwrap();
    ///     let mut rounds = 0u64;
    ///     while !mp::futures::cancel_requested() {
    ///         rounds += 1;
    ///         std::thread::yield_now();
    ///     }
    ///     rounds
    /// }, ())?;
    /// started.recv().unwrap();
    /// assert!(f.cancel_running());
    /// assert!(matches!(f.result(), Err(mp::Error::Cancelled)));
    /// // The replacement worker runs the next task.
    /// assert_eq!(ex.submit(|x: u8| x, 7)?.result()?, 7);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn cancel_running(&self) -> bool {
        let mut cur = self.core.state.load(Ordering::Acquire);
        loop {
            match cur {
                CANCELLED => return true,
                FINISHED => return false,
                _ => {}
            }
            match self.core.state.compare_exchange(
                cur,
                CANCELLED,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        self.core.slot.set(Err(Error::Cancelled));
        if cur == RUNNING {
            // The busy thread retires once its function returns (the task
            // sees the cancel when it tries to deliver); this one takes its
            // place now, so the executor keeps its capacity.
            if let Some(pool) = self.core.pool.upgrade() {
                let _ = pool.add_worker();
            }
        }
        true
    }

    /// True if the future was cancelled.
    ///
    /// Python: `Future.cancelled()`.
    pub fn cancelled(&self) -> bool {
        self.core.is_cancelled()
    }

    /// Runs `cb(&future)` once the future is done (finished or cancelled): at
    /// once on this thread if it already is, else on the thread that finishes
    /// it (the worker, or the one that cancels). Keep it quick. Callbacks run
    /// in the order added; a panic in one is printed and ignored.
    ///
    /// Python: `Future.add_done_callback(fn)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::dummy as mp;
    /// use std::sync::mpsc;
    /// let ex = mp::futures::ThreadPoolExecutor::new(1)?;
    /// let (tx, rx) = mpsc::channel();
    /// let f = ex.submit(|x: i32| x * 2, 21)?;
    /// f.add_done_callback(move |f| tx.send(f.result().ok()).unwrap());
    /// assert_eq!(rx.recv().unwrap(), Some(42));
    /// # Ok::<(), mp::Error>(())
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
}

impl<R: Send + 'static> Watch for Future<R> {
    fn on_done(&self, hook: Box<dyn FnOnce() + Send + 'static>) {
        self.core.slot.on_set(hook);
    }

    fn is_done(&self) -> bool {
        self.done()
    }

    fn has_failed(&self) -> bool {
        !self.cancelled() && self.core.slot.error().is_some()
    }

    fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.core, &other.core)
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
