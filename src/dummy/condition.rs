//! `Condition` over a dummy [`RLock`], as CPython's `threading.Condition`:
//! each waiter parks on its own flag, and `notify(n)` raises the first `n`.

use crate::util::Unpoison;
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::lock::{RLock, RLockGuard};
use super::wait_until;
use crate::error::{Error, Result};
use crate::util::deadline_after;

/// One waiting thread's flag, raised by a notify.
type Waiter = Arc<(Mutex<bool>, Condvar)>;

/// A condition variable between threads.
///
/// Python: `multiprocessing.dummy.Condition` (`threading.Condition`).
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// let c = mp::Condition::new()?;
/// let ready = Arc::new(AtomicBool::new(false));
/// let (c2, r2) = (c.clone(), ready.clone());
/// let mut p = mp::Process::new(move |_: ()| {
///     let _g = c2.lock();
///     r2.store(true, Ordering::SeqCst);
///     c2.notify_all().unwrap();
/// }, ());
/// p.start()?;
/// {
///     let _g = c.lock();
///     assert!(c.wait_for(|| ready.load(Ordering::SeqCst))?);
/// }
/// p.join()?;
/// # Ok::<(), mp::Error>(())
/// ```
#[derive(Clone)]
pub struct Condition {
    lock: RLock,
    waiters: Arc<Mutex<VecDeque<Waiter>>>,
}

impl Condition {
    /// A condition with a new [`RLock`].
    ///
    /// # Errors
    ///
    /// None in practice (the `Result` keeps the process version's signature).
    pub fn new() -> Result<Condition> {
        Condition::with_lock(RLock::new()?)
    }

    /// A condition over an existing lock.
    ///
    /// # Errors
    ///
    /// None in practice.
    pub fn with_lock(lock: RLock) -> Result<Condition> {
        Ok(Condition {
            lock,
            waiters: Arc::default(),
        })
    }

    /// The underlying lock.
    pub fn get_lock(&self) -> RLock {
        self.lock.clone()
    }

    /// Takes the underlying lock.
    pub fn acquire(&self) {
        self.lock.acquire()
    }

    /// Takes the underlying lock if free (or ours).
    pub fn try_acquire(&self) -> bool {
        self.lock.try_acquire()
    }

    /// Takes the underlying lock, waiting at most `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.lock.acquire_timeout(timeout)
    }

    /// Releases one level of the underlying lock.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] unless this thread holds it.
    pub fn release(&self) -> Result<()> {
        self.lock.release()
    }

    /// Takes the underlying lock until the guard is dropped.
    pub fn lock(&self) -> RLockGuard<'_> {
        self.lock.lock()
    }

    /// Releases the lock, waits for a notify, takes the lock back. True when
    /// notified.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] unless this thread holds the lock.
    pub fn wait(&self) -> Result<bool> {
        self.wait_deadline(None)
    }

    /// [`wait`](Condition::wait) for at most `timeout`; false on timeout.
    ///
    /// # Errors
    ///
    /// As [`wait`](Condition::wait).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.wait_deadline(deadline_after(timeout))
    }

    fn wait_deadline(&self, deadline: Option<Instant>) -> Result<bool> {
        if !self.lock.is_owned() {
            return Err(Error::value(
                "must acquire() condition before using wait(); take it with lock() or acquire()",
            ));
        }
        let me: Waiter = Arc::default();
        self.waiters.lock().unpoison().push_back(me.clone());
        let levels = self.lock.release_all()?;
        let notified = wait_until(&me.1, me.0.lock().unpoison(), deadline, |raised| *raised).1;
        self.lock.restore(levels);
        if !notified {
            // Timed out: leave the queue, unless a notify took us meanwhile.
            let mut ws = self.waiters.lock().unpoison();
            ws.retain(|w| !Arc::ptr_eq(w, &me));
            return Ok(*me.0.lock().unpoison());
        }
        Ok(true)
    }

    /// Waits until `predicate()` holds; checked first, then after each wake.
    /// A predicate true at once returns `true` without waiting, so without
    /// the lock (Python's `wait_for`, and the process `Condition`).
    ///
    /// # Errors
    ///
    /// As [`wait`](Condition::wait), when it has to wait.
    pub fn wait_for(&self, predicate: impl FnMut() -> bool) -> Result<bool> {
        self.wait_for_deadline(predicate, None)
    }

    /// [`wait_for`](Condition::wait_for) for at most `timeout`; the
    /// predicate's last value.
    ///
    /// # Errors
    ///
    /// As [`wait`](Condition::wait).
    pub fn wait_for_timeout(
        &self,
        predicate: impl FnMut() -> bool,
        timeout: Duration,
    ) -> Result<bool> {
        self.wait_for_deadline(predicate, deadline_after(timeout))
    }

    fn wait_for_deadline(
        &self,
        mut predicate: impl FnMut() -> bool,
        deadline: Option<Instant>,
    ) -> Result<bool> {
        // Python's `wait_for` tests the predicate before anything else: true
        // at once is no wait, so no lock is needed (as the process Condition).
        if predicate() {
            return Ok(true);
        }
        if !self.lock.is_owned() {
            return Err(Error::value(
                "must acquire() condition before using wait_for(); take it with lock() or acquire()",
            ));
        }
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            self.wait_deadline(deadline)?;
            if predicate() {
                return Ok(true);
            }
        }
    }

    /// Wakes one waiter.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] unless this thread holds the lock.
    pub fn notify(&self) -> Result<()> {
        self.notify_n(1)
    }

    /// Wakes up to `n` waiters.
    ///
    /// # Errors
    ///
    /// As [`notify`](Condition::notify).
    pub fn notify_n(&self, n: usize) -> Result<()> {
        if !self.lock.is_owned() {
            return Err(Error::value(
                "cannot notify on un-acquired lock; take the condition's lock first",
            ));
        }
        let mut ws = self.waiters.lock().unpoison();
        for _ in 0..n {
            let Some(w) = ws.pop_front() else { break };
            *w.0.lock().unpoison() = true;
            w.1.notify_one();
        }
        Ok(())
    }

    /// Wakes every waiter.
    ///
    /// # Errors
    ///
    /// As [`notify`](Condition::notify).
    pub fn notify_all(&self) -> Result<()> {
        self.notify_n(usize::MAX)
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition")
            .field("lock", &self.lock)
            .field("waiters", &self.waiters.lock().unpoison().len())
            .finish()
    }
}
