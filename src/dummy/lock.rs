//! `Lock` and `RLock` on a std `Mutex` and `Condvar`: Python's
//! `threading.Lock` and `threading.RLock`.

use crate::util::Unpoison;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use super::wait_until;
use crate::error::{Error, Result};
use crate::synchronize::Acquired;
use crate::util::deadline_after;

const RELEASED_TOO_MANY: &str =
    "semaphore or lock released too many times; release only what was acquired";
const NOT_OWNER: &str = "attempt to release recursive lock not owned by thread; only the thread that acquired it may release it";

/// The state both locks keep: who holds it and how many times.
#[derive(Debug, Default)]
struct Held {
    owner: Option<ThreadId>,
    count: u32,
}

#[derive(Debug, Default)]
struct Inner {
    held: Mutex<Held>,
    freed: Condvar,
}

impl Inner {
    /// Takes the lock for `me` when it is free; for a recursive lock also
    /// when `me` holds it already.
    fn acquire(&self, recursive: bool, deadline: Option<Instant>) -> bool {
        let me = std::thread::current().id();
        let g = self.held.lock().unpoison();
        let (mut g, ok) = wait_until(&self.freed, g, deadline, |h| {
            h.count == 0 || (recursive && h.owner == Some(me))
        });
        if ok {
            g.owner = Some(me);
            g.count += 1;
        }
        ok
    }

    fn release_one(&self) {
        let mut g = self.held.lock().unpoison();
        g.count -= 1;
        if g.count == 0 {
            g.owner = None;
            drop(g);
            self.freed.notify_one();
        }
    }
}

/// A non-recursive lock between threads: any thread may release it.
///
/// Python: `multiprocessing.dummy.Lock` (`threading.Lock`).
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// let l = mp::Lock::new()?;
/// {
///     let _g = l.lock();
///     assert!(!l.try_acquire());
/// }
/// assert!(l.try_acquire());
/// l.release()?;
/// assert!(matches!(l.release(), Err(mp::Error::Value(_))));
/// # Ok::<(), mp::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct Lock {
    inner: Arc<Inner>,
}

impl Lock {
    /// A new, unlocked lock.
    ///
    /// # Errors
    ///
    /// None in practice (the `Result` keeps the process version's signature).
    pub fn new() -> Result<Lock> {
        Ok(Lock::default())
    }

    /// Blocks until the lock is taken.
    pub fn acquire(&self) {
        self.inner.acquire(false, None);
    }

    /// Takes the lock if it is free; never blocks.
    pub fn try_acquire(&self) -> bool {
        self.inner.acquire(false, Some(Instant::now()))
    }

    /// Waits at most `timeout` for the lock; true if taken.
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.inner.acquire(false, deadline_after(timeout))
    }

    /// [`acquire`](Lock::acquire), saying how: always [`Acquired::Clean`] for a
    /// thread (a thread cannot die holding it without the whole process).
    pub fn acquire_checked(&self) -> Acquired {
        self.acquire();
        Acquired::Clean
    }

    /// [`acquire_timeout`](Lock::acquire_timeout), saying how.
    pub fn acquire_checked_timeout(&self, timeout: Duration) -> Option<Acquired> {
        self.acquire_timeout(timeout).then_some(Acquired::Clean)
    }

    /// Releases the lock (any thread may).
    ///
    /// # Errors
    ///
    /// [`Error::Value`] if it is not locked.
    pub fn release(&self) -> Result<()> {
        let mut g = self.inner.held.lock().unpoison();
        if g.count == 0 {
            return Err(Error::value(RELEASED_TOO_MANY));
        }
        g.count = 0;
        g.owner = None;
        drop(g);
        self.inner.freed.notify_one();
        Ok(())
    }

    /// Takes the lock until the guard is dropped (`with lock:`).
    pub fn lock(&self) -> LockGuard<'_> {
        let acquired = self.acquire_checked();
        LockGuard {
            lock: self,
            acquired,
        }
    }

    /// True while some thread holds it.
    pub fn is_locked(&self) -> bool {
        self.inner.held.lock().unpoison().count > 0
    }

    /// The pid of the holder (this process, for a thread), `None` when free.
    pub fn owner(&self) -> Option<u32> {
        self.is_locked().then(std::process::id)
    }

    /// How many times a dead holder's lock was taken over: always 0 here.
    pub fn recoveries(&self) -> u32 {
        0
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("locked", &self.is_locked())
            .finish()
    }
}

/// Holds a [`Lock`] until dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    lock: &'a Lock,
    acquired: Acquired,
}

impl LockGuard<'_> {
    /// How the lock was taken.
    pub fn acquired(&self) -> Acquired {
        self.acquired
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // Another thread may have released it meanwhile (allowed for a Lock).
        let _ = self.lock.release();
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("lock", self.lock)
            .finish()
    }
}

/// A recursive lock: the holding thread may take it again, and must release
/// it as often.
///
/// Python: `multiprocessing.dummy.RLock` (`threading.RLock`).
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// let r = mp::RLock::new()?;
/// let _a = r.lock();
/// let _b = r.lock(); // again, same thread
/// assert!(r.is_owned());
/// # Ok::<(), mp::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct RLock {
    inner: Arc<Inner>,
}

impl RLock {
    /// A new, unlocked recursive lock.
    ///
    /// # Errors
    ///
    /// None in practice (the `Result` keeps the process version's signature).
    pub fn new() -> Result<RLock> {
        Ok(RLock::default())
    }

    /// Blocks until the lock is taken (at once if this thread holds it).
    pub fn acquire(&self) {
        self.inner.acquire(true, None);
    }

    /// Takes the lock if free or already ours; never blocks.
    pub fn try_acquire(&self) -> bool {
        self.inner.acquire(true, Some(Instant::now()))
    }

    /// Waits at most `timeout`; true if taken.
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.inner.acquire(true, deadline_after(timeout))
    }

    /// [`acquire`](RLock::acquire), saying how: always [`Acquired::Clean`].
    pub fn acquire_checked(&self) -> Acquired {
        self.acquire();
        Acquired::Clean
    }

    /// Releases one level.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] unless this thread holds it.
    pub fn release(&self) -> Result<()> {
        if !self.is_owned() {
            return Err(Error::value(NOT_OWNER));
        }
        self.inner.release_one();
        Ok(())
    }

    /// Takes the lock until the guard is dropped.
    pub fn lock(&self) -> RLockGuard<'_> {
        let acquired = self.acquire_checked();
        RLockGuard {
            lock: self,
            acquired,
            _not_send: std::marker::PhantomData,
        }
    }

    /// True if the calling thread holds it.
    pub fn is_owned(&self) -> bool {
        self.inner.held.lock().unpoison().owner == Some(std::thread::current().id())
    }

    /// The pid of the holder (this process, for a thread), `None` when free.
    pub fn owner(&self) -> Option<u32> {
        (self.inner.held.lock().unpoison().count > 0).then(std::process::id)
    }

    /// How many times a dead holder's lock was taken over: always 0 here.
    pub fn recoveries(&self) -> u32 {
        0
    }

    /// Releases every level this thread holds, for `Condition::wait`.
    pub(super) fn release_all(&self) -> Result<u32> {
        let mut g = self.inner.held.lock().unpoison();
        if g.owner != Some(std::thread::current().id()) {
            return Err(Error::value(NOT_OWNER));
        }
        let levels = g.count;
        g.count = 0;
        g.owner = None;
        drop(g);
        self.inner.freed.notify_one();
        Ok(levels)
    }

    /// Takes the lock back with `levels` levels, after `release_all`.
    pub(super) fn restore(&self, levels: u32) {
        self.acquire();
        self.inner.held.lock().unpoison().count = levels;
    }
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.inner.held.lock().unpoison();
        f.debug_struct("RLock")
            .field("locked", &(g.count > 0))
            .field("count", &g.count)
            .finish()
    }
}

/// Holds an [`RLock`] (one level) until dropped.
///
/// Not `Send`, as the process `RLockGuard` is not: an `RLock` is owned by
/// the thread that took it, so a release from another thread would be
/// refused and the lock stay held.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    acquired: Acquired,
    /// Keeps the guard on the thread that took the lock.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl RLockGuard<'_> {
    /// How the lock was taken.
    pub fn acquired(&self) -> Acquired {
        self.acquired
    }
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        let _ = self.lock.release();
    }
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLockGuard")
            .field("lock", self.lock)
            .finish()
    }
}
