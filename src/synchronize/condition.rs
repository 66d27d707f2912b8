//! `Condition`: wait for a state change made under a shared [`RLock`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::lock::{RLock, RLockGuard, RawRLock};
use super::raw::deadline_after;
use super::region::{self, HEADER, Kind};
use crate::error::{Error, Result};
use crate::platform::futex;
use crate::platform::shm::ShmRegion;

/// Where the condition's counters start (after an RLock core at `HEADER`).
const COUNTERS: usize = HEADER + RawRLock::SIZE;
/// Bytes of a condition region.
const SIZE: usize = COUNTERS + 12;

/// A condition variable shared by processes, with its own [`RLock`] (or one
/// given with [`with_lock`](Condition::with_lock)).
///
/// Hold the lock, check the state, `wait` (which releases the lock while
/// asleep and takes it back before returning); another process changes the
/// state under the lock and calls `notify`.
///
/// Counts are exact, as CPython's tests demand: `notify(n)` wakes at most `n`
/// of the processes waiting *when it was called* (never a later waiter's
/// share), and a waiter that timed out is not counted. Three words, changed
/// only under the lock: `seq` (the futex word, bumped by every notify),
/// `waiters` (registered, not yet woken) and `signals` (wake-ups granted but
/// not yet taken). A woken waiter takes the lock back, then a signal.
///
/// Python: `multiprocessing.Condition(lock=None)`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let cond = mp::Condition::new()?;
///     let ready = mp::Value::new(false)?;
///     let mut p = mp::Process::new(|(cond, ready): (mp::Condition, mp::Value<bool>)| {
///         let _g = cond.lock();
///         ready.set(true);
///         cond.notify().unwrap();
///     }, (cond.clone(), ready.clone()));
///     let _g = cond.lock();
///     p.start()?;
///     assert!(cond.wait_for(|| ready.get())?);
///     drop(_g);
///     p.join()
/// }
/// ```
#[derive(Clone)]
pub struct Condition {
    /// The lock the state is guarded by.
    lock: RLock,
    /// The counters: `seq`, `waiters`, `signals` at `COUNTERS`.
    region: Arc<ShmRegion>,
}

impl Condition {
    /// Creates a condition with a new [`RLock`] of its own.
    ///
    /// Python: `Condition()`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when no shared memory can be created.
    ///
    /// # Examples
    ///
    /// ```
    /// let c = multiprocess::Condition::new()?;
    /// assert!(c.try_acquire());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new() -> Result<Condition> {
        let region = region::create(Kind::Condition, SIZE)?;
        let lock = RLock::from_raw(RawRLock::init(region.clone(), HEADER));
        Ok(Condition { lock, region })
    }

    /// Creates a condition over an existing lock (several conditions may share
    /// one lock).
    ///
    /// Python: `Condition(lock)` (with an `RLock`; a plain `Lock` is not
    /// accepted here, since `wait` must know the owner).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when no shared memory can be created.
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = multiprocess::RLock::new()?;
    /// let c = multiprocess::Condition::with_lock(lock.clone())?;
    /// let _g = c.lock();
    /// assert!(lock.is_owned());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn with_lock(lock: RLock) -> Result<Condition> {
        let region = region::create(Kind::Condition, SIZE)?;
        // The region's own RLock core stays unused.
        RawRLock::init(region.clone(), HEADER);
        Ok(Condition { lock, region })
    }

    fn seq(&self) -> &AtomicU32 {
        self.region.atomic_u32(COUNTERS)
    }

    fn waiters(&self) -> &AtomicU32 {
        self.region.atomic_u32(COUNTERS + 4)
    }

    fn signals(&self) -> &AtomicU32 {
        self.region.atomic_u32(COUNTERS + 8)
    }

    /// The underlying lock (a clone of the handle).
    ///
    /// # Examples
    ///
    /// ```
    /// let c = multiprocess::Condition::new()?;
    /// c.acquire();
    /// assert!(c.get_lock().is_owned());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get_lock(&self) -> RLock {
        self.lock.clone()
    }

    /// Takes the lock. Python: `Condition.acquire()`.
    ///
    /// # Examples
    ///
    /// ```
    /// let c = multiprocess::Condition::new()?;
    /// c.acquire();
    /// c.release()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn acquire(&self) {
        self.lock.acquire();
    }

    /// Takes the lock if free or ours; never blocks. Python: `acquire(False)`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(multiprocess::Condition::new()?.try_acquire());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn try_acquire(&self) -> bool {
        self.lock.try_acquire()
    }

    /// Takes the lock, blocking at most `timeout`. Python: `acquire(timeout=t)`.
    ///
    /// # Examples
    ///
    /// ```
    /// let c = multiprocess::Condition::new()?;
    /// assert!(c.acquire_timeout(std::time::Duration::from_millis(10)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.lock.acquire_timeout(timeout)
    }

    /// Releases one level of the lock. Python: `Condition.release()`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when the calling thread does not hold the lock.
    ///
    /// # Examples
    ///
    /// ```
    /// let c = multiprocess::Condition::new()?;
    /// assert!(c.release().is_err());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        self.lock.release()
    }

    /// Takes the lock; the guard releases it when dropped. Python: `with cond:`.
    ///
    /// # Examples
    ///
    /// ```
    /// let c = multiprocess::Condition::new()?;
    /// let _g = c.lock();
    /// c.notify_all()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn lock(&self) -> RLockGuard<'_> {
        self.lock.lock()
    }

    /// Releases the lock, sleeps until notified, and takes the lock back.
    /// Returns `Ok(true)` (it cannot time out).
    ///
    /// Python: `Condition.wait()`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when the calling thread does not hold the lock (Python:
    /// `AssertionError('must acquire() condition before using wait()')`).
    ///
    /// # Examples
    ///
    /// ```
    /// let c = multiprocess::Condition::new()?;
    /// assert!(matches!(c.wait(), Err(multiprocess::Error::Value(_))));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn wait(&self) -> Result<bool> {
        self.wait_deadline(None)
    }

    /// Like [`wait`](Condition::wait), for at most `timeout`: `Ok(false)` when
    /// it ran out (the lock is held again either way).
    ///
    /// Python: `Condition.wait(timeout)`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when the calling thread does not hold the lock.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let c = multiprocess::Condition::new()?;
    /// let _g = c.lock();
    /// assert!(!c.wait_timeout(Duration::from_millis(10))?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.wait_deadline(deadline_after(timeout))
    }

    /// Waits until notified or `deadline`; the lock is held again on return.
    pub(crate) fn wait_deadline(&self, deadline: Option<Instant>) -> Result<bool> {
        let raw = &self.lock.raw;
        if !raw.is_mine() {
            return Err(Error::value(
                "must acquire() condition before using wait(); take it with lock() or acquire()",
            ));
        }
        // Counters change only under the lock, which orders them: Relaxed.
        self.waiters().fetch_add(1, Ordering::Relaxed);
        let mut seen = self.seq().load(Ordering::Relaxed);
        // A signal is ours only if a notify came after we registered: a
        // waiter that died inside `wait` stays counted, and a notify may have
        // granted it a signal nobody took; that one must not wake us.
        let registered = seen;
        let levels = raw.release_all()?;
        loop {
            let in_time = futex::wait(self.seq(), seen, deadline);
            raw.restore(levels);
            let signals = self.signals().load(Ordering::Relaxed);
            if signals > 0 && self.seq().load(Ordering::Relaxed) != registered {
                self.signals().store(signals - 1, Ordering::Relaxed);
                self.waiters().fetch_sub(1, Ordering::Relaxed);
                return Ok(true);
            }
            if !in_time || deadline.is_some_and(|d| Instant::now() >= d) {
                self.waiters().fetch_sub(1, Ordering::Relaxed);
                return Ok(false);
            }
            // Spurious, or another waiter took the signal: sleep again.
            seen = self.seq().load(Ordering::Relaxed);
            raw.release_all()?;
        }
    }

    /// Waits until `predicate()` is true, re-checking after every wake;
    /// returns its last value (always true here).
    ///
    /// Python: `Condition.wait_for(predicate)`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when it must wait and the calling thread does not hold
    /// the lock (a predicate already true returns at once, as in CPython).
    ///
    /// # Examples
    ///
    /// ```
    /// let c = multiprocess::Condition::new()?;
    /// assert!(matches!(c.wait_for(|| false), Err(multiprocess::Error::Value(_))));
    /// let _g = c.lock();
    /// assert!(c.wait_for(|| true)?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn wait_for(&self, predicate: impl FnMut() -> bool) -> Result<bool> {
        self.wait_for_deadline(predicate, None)
    }

    /// Like [`wait_for`](Condition::wait_for) for at most `timeout`; returns the
    /// predicate's value when the time ran out (false if never reached).
    ///
    /// Python: `Condition.wait_for(predicate, timeout)`.
    ///
    /// # Errors
    ///
    /// As [`wait_for`](Condition::wait_for).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let c = multiprocess::Condition::new()?;
    /// let _g = c.lock();
    /// assert!(!c.wait_for_timeout(|| false, Duration::from_millis(10))?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
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
        // As CPython: a predicate already true returns at once; only a wait
        // needs the lock (and says so when it is not held).
        loop {
            if predicate() {
                return Ok(true);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            self.wait_deadline(deadline)?;
        }
    }

    /// Wakes one waiting process (if any).
    ///
    /// Python: `Condition.notify()`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when the calling thread does not hold the lock.
    ///
    /// # Examples
    ///
    /// ```
    /// let c = multiprocess::Condition::new()?;
    /// assert!(c.notify().is_err());
    /// let _g = c.lock();
    /// c.notify()?; // nobody waits: harmless
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn notify(&self) -> Result<()> {
        self.notify_n(1)
    }

    /// Wakes up to `n` waiting processes.
    ///
    /// Python: `Condition.notify(n)`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when the calling thread does not hold the lock.
    ///
    /// # Examples
    ///
    /// ```
    /// let c = multiprocess::Condition::new()?;
    /// let _g = c.lock();
    /// c.notify_n(3)?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn notify_n(&self, n: usize) -> Result<()> {
        // The shared counters are u32: more than u32::MAX waiters cannot exist.
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        if !self.lock.raw.is_mine() {
            return Err(Error::value(
                "cannot notify on un-acquired lock; take the condition's lock first",
            ));
        }
        let waiting = self.waiters().load(Ordering::Relaxed);
        let signals = self.signals().load(Ordering::Relaxed);
        let k = n.min(waiting.saturating_sub(signals));
        if k > 0 {
            self.signals().store(signals + k, Ordering::Relaxed);
            self.seq().fetch_add(1, Ordering::Relaxed);
            futex::wake(self.seq(), k);
        }
        Ok(())
    }

    /// Wakes every waiting process.
    ///
    /// Python: `Condition.notify_all()`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when the calling thread does not hold the lock.
    ///
    /// # Examples
    ///
    /// ```
    /// let c = multiprocess::Condition::new()?;
    /// let _g = c.lock();
    /// c.notify_all()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn notify_all(&self) -> Result<()> {
        self.notify_n(usize::MAX)
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition")
            .field("lock", &self.lock)
            .field("waiters", &self.waiters().load(Ordering::Relaxed))
            .finish()
    }
}

/// The wire form: the lock and the counters' region.
#[derive(Serialize, Deserialize)]
struct Wire {
    lock: RLock,
    #[serde(
        serialize_with = "serialize_region",
        deserialize_with = "deserialize_region"
    )]
    region: Arc<ShmRegion>,
}

fn serialize_region<S: Serializer>(r: &Arc<ShmRegion>, s: S) -> Result<S::Ok, S::Error> {
    region::serialize(r, s)
}

fn deserialize_region<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<ShmRegion>, D::Error> {
    region::deserialize(d, &[Kind::Condition], SIZE)
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            lock: self.lock.clone(),
            region: self.region.clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        Ok(Condition {
            lock: w.lock,
            region: w.region,
        })
    }
}
