//! Python's `multiprocessing.synchronize`: locks, semaphores, events,
//! conditions and barriers shared by processes.
//!
//! Every primitive lives in OS shared memory (a sealed anonymous memfd: nothing
//! is named, nothing is left in /dev/shm even when every process is killed) and
//! blocks on a shared futex. Uncontended operations are one atomic instruction;
//! a waiter sleeps in the kernel and wakes on the holder's release. Every handle
//! is `Clone + Serialize + Deserialize`: pass it to a child as (part of) the
//! target's argument, a pool task, a queue item or a `Connection` message.
//!
//! | Python | Rust |
//! |---|---|
//! | `Lock()` | [`Lock::new`] |
//! | `RLock()` | [`RLock::new`] |
//! | `Semaphore(value)` | [`Semaphore::new`] |
//! | `BoundedSemaphore(value)` | [`BoundedSemaphore::new`] |
//! | `Event()` | [`Event::new`] |
//! | `Condition(lock=None)` | [`Condition::new`], [`Condition::with_lock`] |
//! | `Barrier(parties)` / `Barrier(parties, action, timeout)` | [`Barrier::new`] / [`Barrier::builder`] ([`BarrierBuilder`]) |
//! | `acquire()` / `acquire(False)` / `acquire(timeout=t)` | `acquire()` / `try_acquire()` / `acquire_timeout(t)` |
//! | `with lock:` | `let _g = lock.lock();` |
//!
//! Beyond Python: a process that dies holding a [`Lock`], [`RLock`] or a
//! `Value`'s lock does not deadlock the others. The lock word records the
//! holder's pid; a waiter checks the holder every
//! [`OWNER_CHECK_SLICE`](raw::OWNER_CHECK_SLICE) (100 ms) and takes the lock
//! over from a dead one. [`Lock::acquire_checked`] reports that as
//! [`Acquired::OwnerDied`]; every lock counts such take-overs
//! ([`Lock::recoveries`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Result;
use crate::platform::shm::ShmRegion;

mod barrier;
mod condition;
mod event;
pub(crate) mod lock;
pub(crate) mod raw;
pub(crate) mod region;

pub use barrier::{Barrier, BarrierBuilder};
pub use condition::Condition;
pub use event::Event;
pub use lock::{Lock, LockGuard, RLock, RLockGuard};
pub use raw::Acquired;
pub use raw::missed_lock_wakes;

use raw::{RawSemLock, deadline_after};
use region::{HEADER, Kind};

// ---------------------------------------------------------------------------
// Semaphore

/// A counting semaphore shared by processes.
///
/// `acquire` takes one unit, blocking while the count is 0; `release` gives one
/// back and wakes one waiter. The count has no upper bound below
/// `SEM_VALUE_MAX` (2^31 − 1), as in Python: releasing more than was acquired
/// raises it.
///
/// Python: `multiprocessing.Semaphore(value)`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let s = mp::Semaphore::new(2)?;
///     s.acquire();
///     assert!(s.try_acquire());
///     assert!(!s.try_acquire());
///     s.release()?;
///     assert_eq!(s.get_value(), 1);
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct Semaphore {
    /// The core, at `HEADER` of its own region.
    raw: RawSemLock,
}

impl Semaphore {
    /// Creates a semaphore with count `value`.
    ///
    /// Python: `Semaphore(value)`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`](crate::Error::Value) when `value` exceeds 2^31 − 1;
    /// [`Error::Io`](crate::Error::Io) when no shared memory can be created
    /// (out of fds or memory).
    ///
    /// # Examples
    ///
    /// ```
    /// let s = multiprocess::Semaphore::new(0)?;
    /// assert!(!s.try_acquire());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new(value: u32) -> Result<Semaphore> {
        Ok(Semaphore {
            raw: new_sem(value, None)?,
        })
    }

    /// Takes one unit, blocking while the count is 0.
    ///
    /// Python: `Semaphore.acquire()`.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = multiprocess::Semaphore::new(1)?;
    /// s.acquire();
    /// assert_eq!(s.get_value(), 0);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    #[inline]
    pub fn acquire(&self) {
        self.raw.acquire();
    }

    /// Takes one unit if the count is positive; never blocks.
    ///
    /// Python: `Semaphore.acquire(False)`.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = multiprocess::Semaphore::new(1)?;
    /// assert!(s.try_acquire());
    /// assert!(!s.try_acquire());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    #[inline]
    pub fn try_acquire(&self) -> bool {
        self.raw.try_acquire()
    }

    /// Takes one unit, blocking at most `timeout`; false when it ran out. A zero
    /// timeout still takes a free unit.
    ///
    /// Python: `Semaphore.acquire(timeout=t)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let s = multiprocess::Semaphore::new(0)?;
    /// assert!(!s.acquire_timeout(Duration::from_millis(10)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.raw.acquire_deadline(deadline_after(timeout))
    }

    /// Gives one unit back, waking one waiter if any.
    ///
    /// Python: `Semaphore.release()`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`](crate::Error::Value) when the count is already
    /// 2^31 − 1 (Python's `OverflowError`/`ValueError`).
    ///
    /// # Examples
    ///
    /// ```
    /// let s = multiprocess::Semaphore::new(0)?;
    /// s.release()?;
    /// s.release()?;
    /// assert_eq!(s.get_value(), 2);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    #[inline]
    pub fn release(&self) -> Result<()> {
        self.raw.release()
    }

    /// The current count (a snapshot: other processes may change it at once).
    ///
    /// Python: `Semaphore.get_value()`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiprocess::Semaphore::new(3)?.get_value(), 3);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get_value(&self) -> u32 {
        self.raw.get_value()
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("value", &self.get_value())
            .finish()
    }
}

// ---------------------------------------------------------------------------
// BoundedSemaphore

/// A semaphore that may not be released above its initial value.
///
/// Like [`Semaphore`], but `release` past the initial count is an error
/// instead of raising the count: it catches a release too many.
///
/// Python: `multiprocessing.BoundedSemaphore(value)`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let s = mp::BoundedSemaphore::new(1)?;
///     s.acquire();
///     s.release()?;
///     assert!(matches!(s.release(), Err(mp::Error::Value(_))));
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct BoundedSemaphore {
    /// The core, bounded by the initial value.
    raw: RawSemLock,
}

impl BoundedSemaphore {
    /// Creates a semaphore with count and bound `value`.
    ///
    /// Python: `BoundedSemaphore(value)`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`](crate::Error::Value) when `value` exceeds 2^31 − 1;
    /// [`Error::Io`](crate::Error::Io) when no shared memory can be created.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = multiprocess::BoundedSemaphore::new(2)?;
    /// assert_eq!(s.get_value(), 2);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new(value: u32) -> Result<BoundedSemaphore> {
        Ok(BoundedSemaphore {
            raw: new_sem(value, Some(value))?,
        })
    }

    /// Takes one unit, blocking while the count is 0.
    ///
    /// Python: `BoundedSemaphore.acquire()`.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = multiprocess::BoundedSemaphore::new(1)?;
    /// s.acquire();
    /// assert_eq!(s.get_value(), 0);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    #[inline]
    pub fn acquire(&self) {
        self.raw.acquire();
    }

    /// Takes one unit if the count is positive; never blocks.
    ///
    /// Python: `BoundedSemaphore.acquire(False)`.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = multiprocess::BoundedSemaphore::new(1)?;
    /// assert!(s.try_acquire());
    /// assert!(!s.try_acquire());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    #[inline]
    pub fn try_acquire(&self) -> bool {
        self.raw.try_acquire()
    }

    /// Takes one unit, blocking at most `timeout`; false when it ran out.
    ///
    /// Python: `BoundedSemaphore.acquire(timeout=t)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let s = multiprocess::BoundedSemaphore::new(1)?;
    /// assert!(s.acquire_timeout(Duration::from_millis(10)));
    /// assert!(!s.acquire_timeout(Duration::from_millis(10)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.raw.acquire_deadline(deadline_after(timeout))
    }

    /// Gives one unit back, waking one waiter if any.
    ///
    /// Python: `BoundedSemaphore.release()`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`](crate::Error::Value) when the count is already at the
    /// initial value (Python: `ValueError("semaphore or lock released too many
    /// times")`).
    ///
    /// # Examples
    ///
    /// ```
    /// let s = multiprocess::BoundedSemaphore::new(1)?;
    /// assert!(s.release().is_err());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    #[inline]
    pub fn release(&self) -> Result<()> {
        self.raw.release()
    }

    /// The current count (a snapshot).
    ///
    /// Python: `BoundedSemaphore.get_value()`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiprocess::BoundedSemaphore::new(3)?.get_value(), 3);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get_value(&self) -> u32 {
        self.raw.get_value()
    }
}

impl fmt::Debug for BoundedSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedSemaphore")
            .field("value", &self.get_value())
            .field("maxvalue", &self.raw.max())
            .finish()
    }
}

/// A semaphore in a region of its own.
fn new_sem(value: u32, max: Option<u32>) -> Result<RawSemLock> {
    let region = region::create(Kind::Semaphore, HEADER + RawSemLock::SIZE)?;
    RawSemLock::init(region, HEADER, value, max)
}

fn attach_sem<'de, D: Deserializer<'de>>(d: D) -> Result<RawSemLock, D::Error> {
    let region: Arc<ShmRegion> =
        region::deserialize(d, &[Kind::Semaphore], HEADER + RawSemLock::SIZE)?;
    Ok(RawSemLock::attach(region, HEADER))
}

impl Serialize for Semaphore {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        region::serialize(self.raw.region(), s)
    }
}

impl<'de> Deserialize<'de> for Semaphore {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Semaphore {
            raw: attach_sem(d)?,
        })
    }
}

impl Serialize for BoundedSemaphore {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        region::serialize(self.raw.region(), s)
    }
}

impl<'de> Deserialize<'de> for BoundedSemaphore {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(BoundedSemaphore {
            raw: attach_sem(d)?,
        })
    }
}
