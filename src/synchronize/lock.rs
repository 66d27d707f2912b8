//! `Lock` and `RLock`, over [`RawLock`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::raw::{Acquired, Pid, RawLock, deadline_after, my_tid};
use super::region::{self, HEADER, Kind};
use crate::error::{Error, Result};
use crate::platform::shm::ShmRegion;

// ---------------------------------------------------------------------------
// Lock

/// A mutual-exclusion lock shared by processes.
///
/// Not owned, as in Python: any process (or thread) may release it, not only
/// the one that acquired it. Uncontended, `acquire` and `release` are one
/// atomic instruction each; a waiter sleeps in the kernel until a release.
///
/// Python: `multiprocessing.Lock()`.
///
/// # Differences from Python
///
/// The lock records the pid of the process holding it. If that process dies
/// (or exits) without releasing, a waiter finds out within about 100 ms and
/// takes the lock over, instead of waiting forever as in Python;
/// [`acquire_checked`](Lock::acquire_checked) tells the taker, and
/// [`recoveries`](Lock::recoveries) counts such events. A lock released by
/// another process than its acquirer is simply unlocked: no false report.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let lock = mp::Lock::new()?;
///     let mut p = mp::Process::new(|lock: mp::Lock| lock.release().unwrap(), lock.clone());
///     lock.acquire();
///     p.start()?; // the child releases what the parent acquired
///     p.join()?;
///     assert!(lock.try_acquire());
///     lock.release()
/// }
/// ```
#[derive(Clone)]
pub struct Lock {
    /// The core, at `HEADER` of its own region.
    raw: RawLock,
}

impl Lock {
    /// Creates an unlocked lock.
    ///
    /// Python: `Lock()`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when no shared memory can be created (out of fds or memory).
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = multiprocess::Lock::new()?;
    /// assert!(!lock.is_locked());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new() -> Result<Lock> {
        let region = region::create(Kind::Lock, HEADER + RawLock::SIZE)?;
        Ok(Lock {
            raw: RawLock::init(region, HEADER),
        })
    }

    /// Takes the lock, blocking until it is free.
    ///
    /// Any process may release it (no owner, as in Python); if the holder dies,
    /// the next waiter takes it.
    ///
    /// Python: `Lock.acquire()` (`block=True`, no timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let lock = mp::Lock::new()?;
    ///     lock.acquire();
    ///     assert!(!lock.try_acquire());
    ///     lock.release()
    /// }
    /// ```
    #[inline]
    pub fn acquire(&self) {
        self.raw.acquire_deadline(None);
    }

    /// Takes the lock if it is free; never blocks.
    ///
    /// Python: `Lock.acquire(False)`.
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = multiprocess::Lock::new()?;
    /// assert!(lock.try_acquire());
    /// assert!(!lock.try_acquire());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    #[inline]
    pub fn try_acquire(&self) -> bool {
        self.raw.try_acquire()
    }

    /// Takes the lock, blocking at most `timeout`; false when it ran out.
    ///
    /// Python: `Lock.acquire(timeout=t)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let lock = multiprocess::Lock::new()?;
    /// assert!(lock.acquire_timeout(Duration::from_millis(10)));
    /// assert!(!lock.acquire_timeout(Duration::from_millis(10)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.raw.acquire_deadline(deadline_after(timeout)).is_some()
    }

    /// Takes the lock like [`acquire`](Lock::acquire), and says whether it was
    /// taken over from a holder that died.
    ///
    /// Python: none (a CPython lock whose holder died is never released).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let lock = mp::Lock::new()?;
    ///     let mut p = mp::Process::new(|lock: mp::Lock| {
    ///         lock.acquire();
    ///         std::process::exit(0); // exits without releasing
    ///     }, lock.clone());
    ///     p.start()?;
    ///     p.join()?;
    ///     let how = lock.acquire_checked();
    ///     assert_eq!(how, mp::Acquired::OwnerDied { pid: p.pid().unwrap() });
    ///     assert_eq!(lock.recoveries(), 1);
    ///     lock.release()
    /// }
    /// ```
    pub fn acquire_checked(&self) -> Acquired {
        match self.raw.acquire_deadline(None) {
            Some(a) => a,
            // No deadline: the raw lock returns only once it holds the lock.
            None => unreachable!("an acquire without deadline returned without the lock"),
        }
    }

    /// Like [`acquire_checked`](Lock::acquire_checked), blocking at most
    /// `timeout`; `None` when it ran out.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiprocess::{Acquired, Lock};
    /// let lock = Lock::new()?;
    /// assert_eq!(lock.acquire_checked_timeout(Duration::ZERO), Some(Acquired::Clean));
    /// assert_eq!(lock.acquire_checked_timeout(Duration::from_millis(5)), None);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn acquire_checked_timeout(&self, timeout: Duration) -> Option<Acquired> {
        self.raw.acquire_deadline(deadline_after(timeout))
    }

    /// Releases the lock, whoever holds it, waking one waiter.
    ///
    /// Python: `Lock.release()`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when the lock is not held (Python:
    /// `ValueError("semaphore or lock released too many times")`).
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = multiprocess::Lock::new()?;
    /// lock.acquire();
    /// lock.release()?;
    /// assert!(matches!(lock.release(), Err(multiprocess::Error::Value(_))));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    #[inline]
    pub fn release(&self) -> Result<()> {
        self.raw.release()
    }

    /// Takes the lock and returns a guard that releases it when dropped.
    ///
    /// Python: `with lock:`.
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = multiprocess::Lock::new()?;
    /// {
    ///     let _guard = lock.lock();
    ///     assert!(lock.is_locked());
    /// }
    /// assert!(!lock.is_locked());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn lock(&self) -> LockGuard<'_> {
        let acquired = self.acquire_checked();
        LockGuard {
            lock: self,
            acquired,
        }
    }

    /// True while some process holds the lock (a snapshot).
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = multiprocess::Lock::new()?;
    /// lock.acquire();
    /// assert!(lock.is_locked());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn is_locked(&self) -> bool {
        self.raw.owner_pid().is_some()
    }

    /// The pid of the process holding the lock, `None` when unlocked.
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = multiprocess::Lock::new()?;
    /// lock.acquire();
    /// assert_eq!(lock.owner(), Some(std::process::id()));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn owner(&self) -> Option<u32> {
        self.raw.owner_pid()
    }

    /// How many times a waiter took this lock over from a holder that died.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiprocess::Lock::new()?.recoveries(), 0);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn recoveries(&self) -> u32 {
        self.raw.recoveries()
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let owner = self.raw.owner_pid();
        f.debug_struct("Lock")
            .field("locked", &owner.is_some())
            .field("owner", &owner.map(Pid))
            .finish()
    }
}

impl Serialize for Lock {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        region::serialize(self.raw.region(), s)
    }
}

impl<'de> Deserialize<'de> for Lock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let region = region::deserialize(d, &[Kind::Lock], HEADER + RawLock::SIZE)?;
        Ok(Lock {
            raw: RawLock::attach(region, HEADER),
        })
    }
}

/// Holds a [`Lock`]; releases it when dropped. Made by [`Lock::lock`].
///
/// Python: the body of `with lock:`.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    /// The lock held.
    lock: &'a Lock,
    /// How it was taken.
    acquired: Acquired,
}

impl LockGuard<'_> {
    /// How the lock was taken: [`Acquired::OwnerDied`] when the previous holder
    /// died holding it.
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = multiprocess::Lock::new()?;
    /// let g = lock.lock();
    /// assert_eq!(g.acquired(), multiprocess::Acquired::Clean);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn acquired(&self) -> Acquired {
        self.acquired
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // Another process may have released it meanwhile (allowed for a Lock);
        // then there is nothing left to release.
        let _ = self.lock.release();
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("lock", self.lock)
            .field("acquired", &self.acquired)
            .finish()
    }
}

// ---------------------------------------------------------------------------
// RawRLock

/// The message of CPython's `AssertionError` for a release by a non-owner.
const NOT_OWNER: &str = "attempt to release recursive lock not owned by thread; only the thread that acquired it may release it";

/// A recursive lock's state: a [`RawLock`] (the owning process) plus the
/// owning thread and the recursion count, which only the owner writes.
///
/// | offset | field |
/// |---|---|
/// | 0 | `RawLock` ([`RawLock::SIZE`] bytes) |
/// | `RawLock::SIZE` | `owner_tid: u32` (0 when unlocked) |
/// | `RawLock::SIZE + 4` | `count: u32` |
#[derive(Clone)]
pub(crate) struct RawRLock {
    /// The process-level lock.
    raw: RawLock,
}

impl RawRLock {
    /// Bytes taken in the region.
    pub(crate) const SIZE: usize = RawLock::SIZE + 8;

    /// Writes an unlocked recursive lock at `offset` (8-aligned).
    pub(crate) fn init(region: Arc<ShmRegion>, offset: usize) -> RawRLock {
        let r = RawRLock {
            raw: RawLock::init(region, offset),
        };
        r.tid().store(0, Ordering::Relaxed);
        r.count().store(0, Ordering::Relaxed);
        r
    }

    /// A view of a lock [`init`](Self::init) wrote at `offset`.
    pub(crate) fn attach(region: Arc<ShmRegion>, offset: usize) -> RawRLock {
        RawRLock {
            raw: RawLock::attach(region, offset),
        }
    }

    /// The region it lives in.
    pub(crate) fn region(&self) -> &Arc<ShmRegion> {
        self.raw.region()
    }

    fn tid(&self) -> &AtomicU32 {
        self.raw
            .region()
            .atomic_u32(self.raw.offset() + RawLock::SIZE)
    }

    fn count(&self) -> &AtomicU32 {
        self.raw
            .region()
            .atomic_u32(self.raw.offset() + RawLock::SIZE + 4)
    }

    /// True when the calling thread holds it. Relaxed: `owner_tid` equals our
    /// tid only if we wrote it ourselves, and nobody else writes our tid.
    pub(crate) fn is_mine(&self) -> bool {
        self.raw.held_by_me() && self.tid().load(Ordering::Relaxed) == my_tid()
    }

    /// Takes it (again, if ours), blocking until `deadline`.
    ///
    /// The compare-and-swap comes before the ownership check: when it takes
    /// the lock, the lock cannot have been ours, and a cache line another
    /// process holds is fetched once, for writing, instead of read first and
    /// then fetched again (two processes incrementing a `Value`: 4.3M to 6.0M
    /// increments/s with this change alone).
    pub(crate) fn acquire_deadline(&self, deadline: Option<Instant>) -> Option<Acquired> {
        let how = if self.raw.try_acquire() {
            Acquired::Clean
        } else if self.again() {
            return Some(Acquired::Clean);
        } else {
            self.raw.acquire_contended(deadline)?
        };
        self.tid().store(my_tid(), Ordering::Relaxed);
        self.count().store(1, Ordering::Relaxed);
        Some(how)
    }

    /// Takes it if free or ours; never blocks.
    pub(crate) fn try_acquire(&self) -> bool {
        if self.raw.try_acquire() {
            self.tid().store(my_tid(), Ordering::Relaxed);
            self.count().store(1, Ordering::Relaxed);
            return true;
        }
        self.again()
    }

    /// One more level if the calling thread holds it.
    fn again(&self) -> bool {
        let mine = self.is_mine();
        if mine {
            self.count().fetch_add(1, Ordering::Relaxed);
        }
        mine
    }

    /// Undoes one acquire by the owner.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when the calling thread does not hold it.
    pub(crate) fn release(&self) -> Result<()> {
        if !self.is_mine() {
            return Err(Error::value(NOT_OWNER));
        }
        let left = self.count().load(Ordering::Relaxed).saturating_sub(1);
        self.count().store(left, Ordering::Relaxed);
        if left == 0 {
            self.tid().store(0, Ordering::Relaxed);
            self.raw.release()?;
        }
        Ok(())
    }

    /// Releases every level at once (before a condition wait); returns the
    /// count to hand to [`restore`](Self::restore).
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when the calling thread does not hold it.
    pub(crate) fn release_all(&self) -> Result<u32> {
        if !self.is_mine() {
            return Err(Error::value(NOT_OWNER));
        }
        let count = self.count().load(Ordering::Relaxed);
        self.count().store(0, Ordering::Relaxed);
        self.tid().store(0, Ordering::Relaxed);
        self.raw.release()?;
        Ok(count.max(1))
    }

    /// Takes it back with the count [`release_all`](Self::release_all) returned.
    pub(crate) fn restore(&self, count: u32) -> Acquired {
        let how = match self.raw.acquire_deadline(None) {
            Some(a) => a,
            None => unreachable!("an acquire without deadline returned without the lock"),
        };
        self.tid().store(my_tid(), Ordering::Relaxed);
        self.count().store(count, Ordering::Relaxed);
        how
    }

    /// The owning pid, `None` when unlocked.
    pub(crate) fn owner_pid(&self) -> Option<u32> {
        self.raw.owner_pid()
    }

    /// The recursion count (meaningful while locked).
    pub(crate) fn level(&self) -> u32 {
        if self.owner_pid().is_some() {
            self.count().load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// Take-overs from dead holders.
    pub(crate) fn recoveries(&self) -> u32 {
        self.raw.recoveries()
    }
}

impl fmt::Debug for RawRLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLock")
            .field("owner", &self.owner_pid().map(Pid))
            .field("count", &self.level())
            .finish()
    }
}

// ---------------------------------------------------------------------------
// RLock

/// A recursive lock shared by processes: the owning thread may take it again,
/// and must release it as many times.
///
/// Python: `multiprocessing.RLock()`.
///
/// # Differences from Python
///
/// As for [`Lock`], a process that dies holding it does not block the others
/// forever: a waiter takes it over within about 100 ms
/// ([`acquire_checked`](RLock::acquire_checked) says so). A release by a
/// thread that does not own it is [`Error::Value`] (Python raises
/// `AssertionError`).
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let r = mp::RLock::new()?;
///     r.acquire();
///     r.acquire();
///     r.release()?;
///     r.release()?;
///     assert!(matches!(r.release(), Err(mp::Error::Value(_))));
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct RLock {
    /// The core, at `HEADER` of its region (its own, or a `Value`'s, `Array`'s
    /// or `Condition`'s).
    pub(crate) raw: RawRLock,
}

impl RLock {
    /// Creates an unlocked recursive lock.
    ///
    /// Python: `RLock()`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when no shared memory can be created.
    ///
    /// # Examples
    ///
    /// ```
    /// let r = multiprocess::RLock::new()?;
    /// assert!(r.try_acquire());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new() -> Result<RLock> {
        let region = region::create(Kind::RLock, HEADER + RawRLock::SIZE)?;
        Ok(RLock {
            raw: RawRLock::init(region, HEADER),
        })
    }

    /// An `RLock` over the core at `HEADER` of `region` (a `Value`'s, ...).
    pub(crate) fn from_raw(raw: RawRLock) -> RLock {
        RLock { raw }
    }

    /// Takes the lock, blocking while another thread (of any process) holds it;
    /// the owner takes it again at once.
    ///
    /// Python: `RLock.acquire()`.
    ///
    /// # Examples
    ///
    /// ```
    /// let r = multiprocess::RLock::new()?;
    /// r.acquire();
    /// r.acquire();
    /// assert_eq!(format!("{r:?}"), format!("RLock {{ owner: Some(pid {}), count: 2 }}", std::process::id()));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn acquire(&self) {
        self.raw.acquire_deadline(None);
    }

    /// Takes the lock if it is free or ours; never blocks.
    ///
    /// Python: `RLock.acquire(False)`.
    ///
    /// # Examples
    ///
    /// ```
    /// let r = multiprocess::RLock::new()?;
    /// assert!(r.try_acquire());
    /// assert!(r.try_acquire());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn try_acquire(&self) -> bool {
        self.raw.try_acquire()
    }

    /// Takes the lock, blocking at most `timeout`; false when it ran out.
    ///
    /// Python: `RLock.acquire(timeout=t)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let r = multiprocess::RLock::new()?;
    /// assert!(r.acquire_timeout(Duration::from_millis(10)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.raw.acquire_deadline(deadline_after(timeout)).is_some()
    }

    /// Takes the lock like [`acquire`](RLock::acquire), and says whether it was
    /// taken over from a process that died holding it.
    ///
    /// # Examples
    ///
    /// ```
    /// let r = multiprocess::RLock::new()?;
    /// assert_eq!(r.acquire_checked(), multiprocess::Acquired::Clean);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn acquire_checked(&self) -> Acquired {
        match self.raw.acquire_deadline(None) {
            Some(a) => a,
            None => unreachable!("an acquire without deadline returned without the lock"),
        }
    }

    /// Undoes one acquire; the lock is free once the owner released it as many
    /// times as it acquired it.
    ///
    /// Python: `RLock.release()`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when the calling thread does not hold it (Python:
    /// `AssertionError("attempt to release recursive lock not owned by
    /// thread")`).
    ///
    /// # Examples
    ///
    /// ```
    /// let r = multiprocess::RLock::new()?;
    /// assert!(r.release().is_err());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        self.raw.release()
    }

    /// Takes the lock and returns a guard that releases it once when dropped.
    ///
    /// Python: `with rlock:`.
    ///
    /// # Examples
    ///
    /// ```
    /// let r = multiprocess::RLock::new()?;
    /// {
    ///     let _a = r.lock();
    ///     let _b = r.lock(); // re-entrant
    /// }
    /// assert!(r.release().is_err());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn lock(&self) -> RLockGuard<'_> {
        let acquired = self.acquire_checked();
        RLockGuard {
            lock: self,
            acquired,
            _not_send: std::marker::PhantomData,
        }
    }

    /// True when the calling thread holds it.
    ///
    /// # Examples
    ///
    /// ```
    /// let r = multiprocess::RLock::new()?;
    /// r.acquire();
    /// assert!(r.is_owned());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn is_owned(&self) -> bool {
        self.raw.is_mine()
    }

    /// The pid of the owning process, `None` when unlocked.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiprocess::RLock::new()?.owner(), None);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn owner(&self) -> Option<u32> {
        self.raw.owner_pid()
    }

    /// How many times a waiter took this lock over from a holder that died.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiprocess::RLock::new()?.recoveries(), 0);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn recoveries(&self) -> u32 {
        self.raw.recoveries()
    }
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.raw.fmt(f)
    }
}

impl Serialize for RLock {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        region::serialize(self.raw.region(), s)
    }
}

impl<'de> Deserialize<'de> for RLock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Every kind that embeds an RLock keeps it at HEADER.
        let region = region::deserialize(
            d,
            &[Kind::RLock, Kind::Condition, Kind::Value, Kind::Array],
            HEADER + RawRLock::SIZE,
        )?;
        Ok(RLock {
            raw: RawRLock::attach(region, HEADER),
        })
    }
}

/// Holds an [`RLock`] once; releases that level when dropped. Made by
/// [`RLock::lock`].
///
/// Not `Send`: the level belongs to the thread that took it, and a release
/// from another thread would be refused, leaving the lock held for good.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RLockGuard<'a> {
    /// The lock held.
    lock: &'a RLock,
    /// How it was taken.
    acquired: Acquired,
    /// Keeps the guard on the thread that took the lock.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl RLockGuard<'_> {
    /// How the lock was taken: [`Acquired::OwnerDied`] when the previous holder
    /// died holding it.
    ///
    /// # Examples
    ///
    /// ```
    /// let r = multiprocess::RLock::new()?;
    /// assert!(!r.lock().acquired().owner_died());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn acquired(&self) -> Acquired {
        self.acquired
    }
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        // Only fails if another thread's misuse already released our level.
        let _ = self.lock.release();
    }
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLockGuard")
            .field("lock", self.lock)
            .field("acquired", &self.acquired)
            .finish()
    }
}
