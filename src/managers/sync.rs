//! The proxies of the synchronization types and queues: CPython's
//! `AcquirerProxy` (Lock, RLock, Semaphore, BoundedSemaphore), `ConditionProxy`,
//! `EventProxy`, `BarrierProxy` and the `Queue`/`JoinableQueue` proxies.
//!
//! The objects live in the server (Python's `threading` and `queue` types
//! there); a blocking call blocks only the thread that serves this client.

// `Sealed` is public only as the unnameable supertrait of `Managed`; its
// methods take and return crate-internal types on purpose.
#![allow(private_interfaces)]

use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::error::Result;

use super::protocol::{Blob, Kind, Op, Wait};
use super::proxy::{Handle, Managed, Sealed, proxy_boilerplate};

/// Generates the acquire/release family of a lock-like proxy.
macro_rules! acquirer_methods {
    ($name:ident, $py:literal) => {
        impl $name {
            /// Blocks until acquired.
            ///
            #[doc = concat!("Python: `", $py, ".acquire()`.")]
            ///
            /// The local type's `acquire` returns `()`; this one is a round
            /// trip to the manager, so it says when that failed rather than
            /// panic or claim a lock it does not hold.
            ///
            /// # Errors
            ///
            /// [`Error::Closed`] when the manager has shut down or died, [`Error::Io`].
            pub fn acquire(&self) -> Result<()> {
                self.handle.flag(Op::Acquire(Wait::Forever)).map(|_| ())
            }

            /// Acquires without waiting; true if acquired.
            ///
            #[doc = concat!("Python: `", $py, ".acquire(blocking=False)`.")]
            ///
            /// # Errors
            ///
            /// [`Error::Closed`] when the manager has shut down or died, [`Error::Io`].
            pub fn try_acquire(&self) -> Result<bool> {
                self.handle.flag(Op::Acquire(Wait::No))
            }

            /// Waits up to `timeout` to acquire; true if acquired.
            ///
            #[doc = concat!("Python: `", $py, ".acquire(timeout=t)`.")]
            ///
            /// # Errors
            ///
            /// [`Error::Closed`] when the manager has shut down or died, [`Error::Io`].
            pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
                self.handle.flag(Op::Acquire(Wait::timeout(timeout)))
            }

            /// Releases it.
            ///
            #[doc = concat!("Python: `", $py, ".release()`.")]
            ///
            /// # Errors
            ///
            /// [`Error::Value`] when it is not held (an `RLock` or `Condition`:
            /// not held by this thread; a `BoundedSemaphore`: released past its
            /// initial value), [`Error::Closed`], [`Error::Io`].
            pub fn release(&self) -> Result<()> {
                self.handle.unit(Op::Release)
            }

            /// Acquires it and returns a guard that releases it on drop (Python's
            /// `with lock:`). A failed release on drop is ignored: the manager
            /// is gone, and its objects with it.
            ///
            /// # Errors
            ///
            /// As [`acquire`](Self::acquire): no guard when the lock was not taken.
            pub fn lock(&self) -> Result<ProxyGuard<'_>> {
                self.acquire()?;
                Ok(ProxyGuard {
                    handle: &self.handle,
                    _not_send: PhantomData,
                })
            }
        }
    };
}

/// Releases a manager lock, semaphore or condition on drop.
///
/// Python: the end of a `with lock:` block.
///
/// Not `Send`, as std's `MutexGuard` is not: an `RLock` is owned by the
/// thread that took it, so a release from another thread would be refused
/// and the lock stay held.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ProxyGuard<'a> {
    /// The object to release.
    handle: &'a Handle,
    /// Keeps the guard on the thread that took the lock.
    _not_send: PhantomData<*const ()>,
}

impl fmt::Debug for ProxyGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyGuard")
            .field("object", self.handle)
            .finish()
    }
}

impl Drop for ProxyGuard<'_> {
    fn drop(&mut self) {
        // Nothing to report to: the manager may be gone, which released it anyway.
        let _ = self.handle.unit(Op::Release);
    }
}

/// Implements the simple proxy parts for a type with only a `handle` field.
macro_rules! simple_proxy {
    ($name:ident, $init:ty, $kind:expr) => {
        proxy_boilerplate!($name);
        impl Sealed for $name {
            type Init = $init;
            fn kind(init: &$init) -> Result<Kind> {
                #[allow(clippy::redundant_closure_call)]
                Ok(($kind)(*init))
            }
            fn from_handle(handle: Handle) -> Self {
                $name { handle }
            }
            fn handle(&self) -> &Handle {
                &self.handle
            }
        }
        impl Managed for $name {}
    };
}

/// A proxy for a manager's `Lock`.
///
/// It has no owner: any thread or process may release it, as in Python. When
/// a client that holds it dies, it stays locked (another process may release
/// it, as CPython's tests do); an acquire the client was still waiting in when
/// it died is abandoned.
///
/// Python: `manager.Lock()` (`AcquirerProxy` over a `threading.Lock`).
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let m = mp::Manager::new()?;
///     let lk = m.lock()?;
///     lk.acquire()?;
///     assert!(!lk.try_acquire()?);
///     lk.release()?;
///     assert!(matches!(lk.release(), Err(mp::Error::Value(_))));
///     {
///         let _g = lk.lock()?;
///     }
///     assert!(lk.try_acquire()?);
///     m.shutdown()
/// }
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct LockProxy {
    /// The server and the object's id.
    handle: Handle,
}
simple_proxy!(LockProxy, (), |(): ()| Kind::Lock);
acquirer_methods!(LockProxy, "Lock");

/// A proxy for a manager's `RLock`: owned by the thread that acquired it, which
/// may acquire it again.
///
/// When the owning thread's connection ends (the thread or its process ended,
/// however), the server releases it: nobody else could.
///
/// Python: `manager.RLock()`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let m = mp::Manager::new()?;
///     let r = m.rlock()?;
///     r.acquire()?;
///     r.acquire()?;
///     r.release()?;
///     r.release()?;
///     assert!(matches!(r.release(), Err(mp::Error::Value(_))));
///     m.shutdown()
/// }
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct RLockProxy {
    /// The server and the object's id.
    handle: Handle,
}
simple_proxy!(RLockProxy, (), |(): ()| Kind::RLock);
acquirer_methods!(RLockProxy, "RLock");

/// A proxy for a manager's `Semaphore`.
///
/// A semaphore counts and has no owner (one process may acquire and another
/// release), so nothing is released when a client dies.
///
/// Python: `manager.Semaphore(n)`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let m = mp::Manager::new()?;
///     let s = m.semaphore(2)?;
///     s.acquire()?;
///     assert_eq!(s.get_value()?, 1);
///     s.release()?;
///     s.release()?; // a plain Semaphore may go above its start
///     assert_eq!(s.get_value()?, 3);
///     m.shutdown()
/// }
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct SemaphoreProxy {
    /// The server and the object's id.
    handle: Handle,
}
simple_proxy!(SemaphoreProxy, u32, Kind::Semaphore);
acquirer_methods!(SemaphoreProxy, "Semaphore");

impl SemaphoreProxy {
    /// The current value.
    ///
    /// Python: `Semaphore.get_value()` (`_value` of the server's semaphore).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager has shut down or died, [`Error::Io`].
    pub fn get_value(&self) -> Result<u32> {
        Ok(self.handle.count(Op::SemValue)? as u32)
    }
}

/// A proxy for a manager's `BoundedSemaphore`: releasing past the initial
/// value is an [`Error::Value`].
///
/// Python: `manager.BoundedSemaphore(n)`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let m = mp::Manager::new()?;
///     let s = m.bounded_semaphore(1)?;
///     s.acquire()?;
///     s.release()?;
///     assert!(matches!(s.release(), Err(mp::Error::Value(_))));
///     m.shutdown()
/// }
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct BoundedSemaphoreProxy {
    /// The server and the object's id.
    handle: Handle,
}
simple_proxy!(BoundedSemaphoreProxy, u32, Kind::BoundedSemaphore);
acquirer_methods!(BoundedSemaphoreProxy, "BoundedSemaphore");

impl BoundedSemaphoreProxy {
    /// The current value.
    ///
    /// Python: `BoundedSemaphore.get_value()`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager has shut down or died, [`Error::Io`].
    pub fn get_value(&self) -> Result<u32> {
        Ok(self.handle.count(Op::SemValue)? as u32)
    }
}

/// A proxy for a manager's `Condition` (with its own RLock, owned per thread).
///
/// `wait` releases the lock, waits for a `notify`, and takes the lock back.
/// When the owning thread's connection ends, the lock is released.
///
/// Python: `manager.Condition()` (`ConditionProxy`).
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// use std::time::Duration;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let m = mp::Manager::new()?;
///     let c = m.condition()?;
///     c.acquire()?;
///     assert!(!c.wait_timeout(Duration::from_millis(10))?); // nobody notifies
///     c.notify_all()?;
///     c.release()?;
///     assert!(matches!(c.wait(), Err(mp::Error::Value(_)))); // not held
///     m.shutdown()
/// }
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct ConditionProxy {
    /// The server and the object's id.
    handle: Handle,
}
simple_proxy!(ConditionProxy, (), |(): ()| Kind::Condition);
acquirer_methods!(ConditionProxy, "Condition");

impl ConditionProxy {
    /// Releases the lock, waits until notified, and takes the lock back.
    /// Returns `Ok(true)` (it cannot time out), as the local
    /// [`Condition::wait`](crate::Condition::wait) does.
    ///
    /// Python: `Condition.wait()` (which returns `True`).
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when this thread does not hold the lock,
    /// [`Error::Closed`] when the manager has shut down or died, [`Error::Io`].
    pub fn wait(&self) -> Result<bool> {
        self.handle.flag(Op::CondWait(Wait::Forever))
    }

    /// Like [`wait`](Self::wait) for at most `timeout`; true if notified (the
    /// lock is held again either way).
    ///
    /// Python: `Condition.wait(timeout)`.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.handle.flag(Op::CondWait(Wait::timeout(timeout)))
    }

    /// Waits until `predicate()` holds, checking it first and after each
    /// wake-up (the lock is held while it runs); returns its last value
    /// (always true here).
    ///
    /// Python: `Condition.wait_for(predicate)`.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait).
    pub fn wait_for(&self, mut predicate: impl FnMut() -> bool) -> Result<bool> {
        while !predicate() {
            self.wait()?;
        }
        Ok(true)
    }

    /// Like [`wait_for`](Self::wait_for) for at most `timeout`; the predicate's
    /// last value.
    ///
    /// Python: `Condition.wait_for(predicate, timeout)`.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait).
    pub fn wait_for_timeout(
        &self,
        mut predicate: impl FnMut() -> bool,
        timeout: Duration,
    ) -> Result<bool> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if predicate() {
                return Ok(true);
            }
            let left = match deadline {
                None => Duration::MAX,
                Some(d) => d.saturating_duration_since(Instant::now()),
            };
            if left.is_zero() {
                return Ok(false);
            }
            self.wait_timeout(left)?;
        }
    }

    /// Wakes one waiter.
    ///
    /// Python: `Condition.notify()`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when this thread does not hold the lock,
    /// [`Error::Closed`], [`Error::Io`].
    pub fn notify(&self) -> Result<()> {
        self.notify_n(1)
    }

    /// Wakes up to `n` waiters.
    ///
    /// Python: `Condition.notify(n)`.
    ///
    /// # Errors
    ///
    /// As [`notify`](Self::notify).
    pub fn notify_n(&self, n: usize) -> Result<()> {
        self.handle.unit(Op::CondNotify(n as u64))
    }

    /// Wakes every waiter.
    ///
    /// Python: `Condition.notify_all()`.
    ///
    /// # Errors
    ///
    /// As [`notify`](Self::notify).
    pub fn notify_all(&self) -> Result<()> {
        self.handle.unit(Op::CondNotifyAll)
    }
}

/// A proxy for a manager's `Event`.
///
/// Python: `manager.Event()` (`EventProxy`).
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// use std::time::Duration;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let m = mp::Manager::new()?;
///     let ev = m.event()?;
///     assert!(!ev.wait_timeout(Duration::from_millis(1))?);
///     ev.set()?;
///     ev.wait()?;
///     assert!(ev.is_set()?);
///     m.shutdown()
/// }
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct EventProxy {
    /// The server and the object's id.
    handle: Handle,
}
simple_proxy!(EventProxy, (), |(): ()| Kind::Event);

impl EventProxy {
    /// Sets the flag and wakes every waiter.
    ///
    /// Python: `Event.set()`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager has shut down or died, [`Error::Io`].
    pub fn set(&self) -> Result<()> {
        self.handle.unit(Op::EventSet)
    }

    /// Clears the flag.
    ///
    /// Python: `Event.clear()`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn clear(&self) -> Result<()> {
        self.handle.unit(Op::EventClear)
    }

    /// Whether the flag is set.
    ///
    /// Python: `Event.is_set()`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn is_set(&self) -> Result<bool> {
        self.handle.flag(Op::EventIsSet)
    }

    /// Blocks until the flag is set.
    ///
    /// Python: `Event.wait()`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn wait(&self) -> Result<()> {
        self.handle.flag(Op::EventWait(Wait::Forever)).map(|_| ())
    }

    /// Waits up to `timeout` for the flag; true if it is set.
    ///
    /// Python: `Event.wait(timeout)`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.handle.flag(Op::EventWait(Wait::timeout(timeout)))
    }
}

/// A proxy for a manager's `Barrier`.
///
/// A wait that times out breaks the barrier (as in Python); so does a party
/// whose client dies while waiting, so the others get
/// [`Error::BrokenBarrier`] instead of waiting forever.
///
/// Python: `manager.Barrier(parties)` (`BarrierProxy`).
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let m = mp::Manager::new()?;
///     let b = m.barrier(1)?;
///     assert_eq!(b.wait()?, 0);
///     b.abort()?;
///     assert!(matches!(b.wait(), Err(mp::Error::BrokenBarrier)));
///     b.reset()?;
///     assert_eq!(b.parties()?, 1);
///     m.shutdown()
/// }
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct BarrierProxy {
    /// The server and the object's id.
    handle: Handle,
}
proxy_boilerplate!(BarrierProxy);
impl Sealed for BarrierProxy {
    /// The number of parties, a `usize` as in [`Barrier::new`](crate::Barrier::new).
    type Init = usize;
    fn kind(parties: &usize) -> Result<Kind> {
        // The wire carries a u32; more parties than that could never meet.
        let parties = u32::try_from(*parties).map_err(|_| {
            Error::value(format!(
                "a barrier of {parties} parties is too large (at most {})",
                u32::MAX
            ))
        })?;
        Ok(Kind::Barrier(parties))
    }
    fn from_handle(handle: Handle) -> Self {
        BarrierProxy { handle }
    }
    fn handle(&self) -> &Handle {
        &self.handle
    }
}
impl Managed for BarrierProxy {}

impl BarrierProxy {
    /// Waits until all parties have called `wait`; returns this party's arrival
    /// index (`0..parties`).
    ///
    /// Python: `Barrier.wait()`.
    ///
    /// # Errors
    ///
    /// [`Error::BrokenBarrier`] when the barrier is or becomes broken (aborted,
    /// reset while waiting, a party timed out or died), [`Error::Closed`],
    /// [`Error::Io`].
    pub fn wait(&self) -> Result<usize> {
        Ok(self.handle.count(Op::BarrierWait(Wait::Forever))? as usize)
    }

    /// Like [`wait`](Self::wait) for at most `timeout`; a timeout breaks the
    /// barrier.
    ///
    /// Python: `Barrier.wait(timeout)`.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait) ([`Error::BrokenBarrier`] on a timeout).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize> {
        Ok(self.handle.count(Op::BarrierWait(Wait::timeout(timeout)))? as usize)
    }

    /// Breaks the barrier: current and future waits fail until `reset`.
    ///
    /// Python: `Barrier.abort()`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn abort(&self) -> Result<()> {
        self.handle.unit(Op::BarrierAbort)
    }

    /// Returns the barrier to its empty state; current waiters get
    /// [`Error::BrokenBarrier`].
    ///
    /// Python: `Barrier.reset()`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn reset(&self) -> Result<()> {
        self.handle.unit(Op::BarrierReset)
    }

    /// The number of parties.
    ///
    /// Python: `Barrier.parties`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn parties(&self) -> Result<usize> {
        Ok(self.handle.count(Op::BarrierParties)? as usize)
    }

    /// The number of parties waiting now.
    ///
    /// Python: `Barrier.n_waiting`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn n_waiting(&self) -> Result<usize> {
        Ok(self.handle.count(Op::BarrierNWaiting)? as usize)
    }

    /// Whether the barrier is broken (named as the local
    /// [`Barrier::is_broken`](crate::Barrier::is_broken)).
    ///
    /// Python: `Barrier.broken`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn is_broken(&self) -> Result<bool> {
        self.handle.flag(Op::BarrierBroken)
    }
}

/// Generates the Queue methods for a queue proxy.
macro_rules! queue_methods {
    ($name:ident, $py:literal) => {
        impl<T: Serialize + DeserializeOwned> $name<T> {
            /// Puts `item`, waiting for room in a bounded queue.
            ///
            #[doc = concat!("Python: `", $py, ".put(item)`.")]
            ///
            /// # Errors
            ///
            /// [`Error::Encode`] when the item does not serialize or holds a
            /// handle, [`Error::Closed`] when the manager has shut down or
            /// died, [`Error::Io`].
            pub fn put(&self, item: T) -> Result<()> {
                self.handle
                    .unit(Op::QueuePut(Blob::encode(&item)?, Wait::Forever))
            }

            /// Puts `item`, waiting at most `timeout` for room.
            ///
            #[doc = concat!("Python: `", $py, ".put(item, timeout=t)`.")]
            ///
            /// # Errors
            ///
            /// [`Error::Full`] when there was no room in time, and as [`put`](Self::put).
            pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<()> {
                self.handle
                    .unit(Op::QueuePut(Blob::encode(&item)?, Wait::timeout(timeout)))
            }

            /// Puts `item` only if there is room now.
            ///
            #[doc = concat!("Python: `", $py, ".put_nowait(item)`.")]
            ///
            /// # Errors
            ///
            /// [`Error::Full`] when the queue is full, and as [`put`](Self::put).
            pub fn put_nowait(&self, item: T) -> Result<()> {
                self.handle
                    .unit(Op::QueuePut(Blob::encode(&item)?, Wait::No))
            }

            /// Removes and returns the first item, waiting for one.
            ///
            #[doc = concat!("Python: `", $py, ".get()`.")]
            ///
            /// # Errors
            ///
            /// [`Error::Decode`] when the item is not a `T`, [`Error::Closed`]
            /// when the manager has shut down or died, [`Error::Io`].
            pub fn get(&self) -> Result<T> {
                self.handle.value(Op::QueueGet(Wait::Forever))
            }

            /// Like [`get`](Self::get), waiting at most `timeout`.
            ///
            #[doc = concat!("Python: `", $py, ".get(timeout=t)`.")]
            ///
            /// # Errors
            ///
            /// [`Error::Empty`] when no item came in time, and as [`get`](Self::get).
            pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
                self.handle.value(Op::QueueGet(Wait::timeout(timeout)))
            }

            /// Removes and returns the first item if there is one now.
            ///
            #[doc = concat!("Python: `", $py, ".get_nowait()`.")]
            ///
            /// # Errors
            ///
            /// [`Error::Empty`] when the queue is empty, and as [`get`](Self::get).
            pub fn get_nowait(&self) -> Result<T> {
                self.handle.value(Op::QueueGet(Wait::No))
            }

            /// The number of items (exact: the server holds them all).
            ///
            #[doc = concat!("Python: `", $py, ".qsize()`.")]
            ///
            /// # Errors
            ///
            /// [`Error::Closed`], [`Error::Io`].
            pub fn qsize(&self) -> Result<usize> {
                Ok(self.handle.count(Op::QueueSize)? as usize)
            }

            /// Whether the queue is empty.
            ///
            #[doc = concat!("Python: `", $py, ".empty()`.")]
            ///
            /// # Errors
            ///
            /// [`Error::Closed`], [`Error::Io`].
            pub fn empty(&self) -> Result<bool> {
                self.handle.flag(Op::QueueEmpty)
            }

            /// Whether a bounded queue is full.
            ///
            #[doc = concat!("Python: `", $py, ".full()`.")]
            ///
            /// # Errors
            ///
            /// [`Error::Closed`], [`Error::Io`].
            pub fn full(&self) -> Result<bool> {
                self.handle.flag(Op::QueueFull)
            }
        }

        impl<T: Serialize> Sealed for $name<T> {
            type Init = usize;
            fn kind(maxsize: &usize) -> Result<Kind> {
                Ok(Kind::Queue {
                    maxsize: *maxsize,
                    joinable: $name::<T>::JOINABLE,
                })
            }
            fn from_handle(handle: Handle) -> Self {
                $name {
                    handle,
                    _type: PhantomData,
                }
            }
            fn handle(&self) -> &Handle {
                &self.handle
            }
        }
        impl<T: Serialize> Managed for $name<T> {}
    };
}

/// A proxy for a manager's `Queue` of `T`.
///
/// The items live in the server; `qsize` is exact.
///
/// Python: `manager.Queue(maxsize)` (a `queue.Queue` in the server).
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// use std::time::Duration;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let m = mp::Manager::new()?;
///     let q = m.queue_with_maxsize::<String>(1)?;
///     q.put("a".into())?;
///     assert!(matches!(q.put_nowait("b".into()), Err(mp::Error::Full)));
///     assert_eq!(q.get()?, "a");
///     assert!(matches!(q.get_timeout(Duration::from_millis(5)), Err(mp::Error::Empty)));
///     m.shutdown()
/// }
/// ```
pub struct QueueProxy<T> {
    /// The server and the object's id.
    handle: Handle,
    /// The item type.
    _type: PhantomData<fn() -> T>,
}
proxy_boilerplate!(QueueProxy<T>);
impl<T> QueueProxy<T> {
    /// Not a JoinableQueue.
    const JOINABLE: bool = false;
}
queue_methods!(QueueProxy, "Queue");

/// A proxy for a manager's `JoinableQueue` of `T`: a [`QueueProxy`] that also
/// counts unfinished tasks.
///
/// Python: `manager.JoinableQueue(maxsize)`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let m = mp::Manager::new()?;
///     let q = m.joinable_queue::<u32>()?;
///     q.put(1)?;
///     assert_eq!(q.get()?, 1);
///     q.task_done()?;
///     q.join()?;
///     assert!(matches!(q.task_done(), Err(mp::Error::Value(_))));
///     m.shutdown()
/// }
/// ```
pub struct JoinableQueueProxy<T> {
    /// The server and the object's id.
    handle: Handle,
    /// The item type.
    _type: PhantomData<fn() -> T>,
}
proxy_boilerplate!(JoinableQueueProxy<T>);
impl<T> JoinableQueueProxy<T> {
    /// A JoinableQueue.
    const JOINABLE: bool = true;
}
queue_methods!(JoinableQueueProxy, "JoinableQueue");

impl<T: Serialize + DeserializeOwned> JoinableQueueProxy<T> {
    /// Marks one item taken with `get` as processed.
    ///
    /// Python: `JoinableQueue.task_done()`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when called more times than items were put,
    /// [`Error::Closed`], [`Error::Io`].
    pub fn task_done(&self) -> Result<()> {
        self.handle.unit(Op::QueueTaskDone)
    }

    /// Blocks until every item put has been marked done.
    ///
    /// Python: `JoinableQueue.join()`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn join(&self) -> Result<()> {
        self.handle.flag(Op::QueueJoin(Wait::Forever)).map(|_| ())
    }

    /// Like [`join`](Self::join) for at most `timeout`; true if all were done.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool> {
        self.handle.flag(Op::QueueJoin(Wait::timeout(timeout)))
    }
}
