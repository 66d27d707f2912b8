//! Small helpers shared by every module (CPython's `multiprocessing/util.py`).

use std::time::{Duration, Instant};

/// `now + timeout` as a deadline, or `None` (wait forever) if that overflows.
///
/// Every `*_timeout(d)` method turns its duration into a deadline once, so
/// retries after spurious wakes or `EINTR` never stretch the wait (crossbeam's
/// `*_deadline` pattern).
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// Takes the guard out of a lock result whether or not the lock is poisoned.
///
/// A panic while a crate mutex is held happens only inside code that keeps
/// the protected state consistent at every step (user callbacks run outside
/// the crate's locks), so a poisoned lock still guards usable state, and a
/// parent must never panic because some other thread did. One spelling for
/// `Mutex::lock`, `Condvar::wait` and `Condvar::wait_timeout` results alike.
pub(crate) trait Unpoison<G> {
    /// The guard (or the guard and the wait result), poisoned or not.
    fn unpoison(self) -> G;
}

impl<G> Unpoison<G> for std::sync::LockResult<G> {
    fn unpoison(self) -> G {
        self.unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
