//! The proxies of the synchronization types and queues (as
//! src/managers/sync.rs for the process manager): the dummy objects
//! themselves, behind the manager's `Alive` check.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::super::{
    Barrier, BoundedSemaphore, Condition, Event, JoinableQueue, Lock, Queue, RLock, Semaphore,
};
use super::alive::Alive;
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;

/// Holds a proxy's lock until dropped.
///
/// Python: the end of a `with lock:` block.
///
/// Not `Send`, as the process `ProxyGuard` is not: an `RLock` is owned by
/// the thread that took it, so a release from another thread would be
/// refused and the lock stay held.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ProxyGuard<'a> {
    /// The object to release.
    object: &'a dyn Release,
    /// Keeps the guard on the thread that took the lock.
    _not_send: PhantomData<*const ()>,
}

/// What a [`ProxyGuard`] releases.
trait Release {
    fn release_guard(&self);
}

impl fmt::Debug for ProxyGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyGuard").finish_non_exhaustive()
    }
}

impl Drop for ProxyGuard<'_> {
    fn drop(&mut self) {
        self.object.release_guard();
    }
}

macro_rules! sync_proxy {
    ($(#[$doc:meta])* $name:ident, $inner:ty) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            pub(super) alive: Alive,
            pub(super) inner: $inner,
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).field("object", &self.inner).finish()
            }
        }
    };
}

macro_rules! acquirer_methods {
    ($name:ident) => {
        impl $name {
            /// Blocks until acquired.
            ///
            /// The local type's `acquire` returns `()`; this one mirrors the
            /// process proxy's, which is a round trip that can fail.
            ///
            /// # Errors
            ///
            /// [`Error::Closed`] after the manager's `shutdown()`.
            pub fn acquire(&self) -> Result<()> {
                self.alive.check()?;
                self.inner.acquire();
                Ok(())
            }

            /// Acquires if possible now.
            ///
            /// # Errors
            ///
            /// [`Error::Closed`].
            pub fn try_acquire(&self) -> Result<bool> {
                self.alive.check()?;
                Ok(self.inner.try_acquire())
            }

            /// Waits at most `timeout`; true if acquired.
            ///
            /// # Errors
            ///
            /// [`Error::Closed`].
            pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
                self.alive.check()?;
                Ok(self.inner.acquire_timeout(timeout))
            }

            /// Releases.
            ///
            /// # Errors
            ///
            /// [`Error::Value`] as the local type's `release`, [`Error::Closed`].
            pub fn release(&self) -> Result<()> {
                self.alive.check()?;
                self.inner.release()
            }

            /// Acquires it and returns a guard that releases it on drop
            /// (Python's `with lock:`).
            ///
            /// # Errors
            ///
            /// As [`acquire`](Self::acquire): no guard when the lock was not taken.
            pub fn lock(&self) -> Result<ProxyGuard<'_>> {
                self.acquire()?;
                Ok(ProxyGuard {
                    object: self,
                    _not_send: PhantomData,
                })
            }
        }

        impl Release for $name {
            fn release_guard(&self) {
                // Released already by hand, or shut down: nothing to undo.
                let _ = self.inner.release();
            }
        }
    };
}

sync_proxy!(
    /// A shared lock. Python: `Manager().Lock()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::dummy as mp;
    /// let m = mp::Manager::new()?;
    /// let l = m.lock()?;
    /// let g = l.lock()?;
    /// assert!(!l.try_acquire()?);
    /// drop(g);
    /// assert!(l.try_acquire()?);
    /// # Ok::<(), mp::Error>(())
    /// ```
    LockProxy,
    Lock
);
acquirer_methods!(LockProxy);

sync_proxy!(
    /// A shared recursive lock. Python: `Manager().RLock()`.
    RLockProxy,
    RLock
);
acquirer_methods!(RLockProxy);

sync_proxy!(
    /// A shared semaphore. Python: `Manager().Semaphore(n)`.
    SemaphoreProxy,
    Semaphore
);
acquirer_methods!(SemaphoreProxy);

impl SemaphoreProxy {
    /// The current value.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn get_value(&self) -> Result<u32> {
        self.alive.check()?;
        Ok(self.inner.get_value())
    }
}

sync_proxy!(
    /// A shared bounded semaphore. Python: `Manager().BoundedSemaphore(n)`.
    BoundedSemaphoreProxy,
    BoundedSemaphore
);
acquirer_methods!(BoundedSemaphoreProxy);

impl BoundedSemaphoreProxy {
    /// The current value.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn get_value(&self) -> Result<u32> {
        self.alive.check()?;
        Ok(self.inner.get_value())
    }
}

sync_proxy!(
    /// A shared condition. Python: `Manager().Condition()`.
    ConditionProxy,
    Condition
);
acquirer_methods!(ConditionProxy);

impl ConditionProxy {
    /// Releases the lock, waits for a notify, takes the lock back; always
    /// true (Python's `wait()` without a timeout).
    ///
    /// # Errors
    ///
    /// [`Error::Value`] unless this thread holds the lock, [`Error::Closed`].
    pub fn wait(&self) -> Result<bool> {
        self.alive.check()?;
        self.inner.wait()
    }

    /// [`wait`](ConditionProxy::wait) for at most `timeout`; false on timeout.
    ///
    /// # Errors
    ///
    /// As [`wait`](ConditionProxy::wait).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.alive.check()?;
        self.inner.wait_timeout(timeout)
    }

    /// Waits until `predicate()` holds; always true (the predicate's last
    /// value, as Python's `wait_for` returns).
    ///
    /// # Errors
    ///
    /// As [`wait`](ConditionProxy::wait).
    pub fn wait_for(&self, predicate: impl FnMut() -> bool) -> Result<bool> {
        self.alive.check()?;
        self.inner.wait_for(predicate)
    }

    /// [`wait_for`](ConditionProxy::wait_for) for at most `timeout`; the
    /// predicate's last value.
    ///
    /// # Errors
    ///
    /// As [`wait`](ConditionProxy::wait).
    pub fn wait_for_timeout(
        &self,
        predicate: impl FnMut() -> bool,
        timeout: Duration,
    ) -> Result<bool> {
        self.alive.check()?;
        self.inner.wait_for_timeout(predicate, timeout)
    }

    /// Wakes one waiter.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] unless this thread holds the lock, [`Error::Closed`].
    pub fn notify(&self) -> Result<()> {
        self.alive.check()?;
        self.inner.notify()
    }

    /// Wakes up to `n` waiters.
    ///
    /// # Errors
    ///
    /// As [`notify`](ConditionProxy::notify).
    pub fn notify_n(&self, n: usize) -> Result<()> {
        self.alive.check()?;
        self.inner.notify_n(n)
    }

    /// Wakes every waiter.
    ///
    /// # Errors
    ///
    /// As [`notify`](ConditionProxy::notify).
    pub fn notify_all(&self) -> Result<()> {
        self.alive.check()?;
        self.inner.notify_all()
    }
}

sync_proxy!(
    /// A shared event. Python: `Manager().Event()`.
    EventProxy,
    Event
);

impl EventProxy {
    /// Sets the flag.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn set(&self) -> Result<()> {
        self.alive.check()?;
        self.inner.set();
        Ok(())
    }

    /// Clears the flag.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn clear(&self) -> Result<()> {
        self.alive.check()?;
        self.inner.clear();
        Ok(())
    }

    /// True once set.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn is_set(&self) -> Result<bool> {
        self.alive.check()?;
        Ok(self.inner.is_set())
    }

    /// Blocks until set.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn wait(&self) -> Result<()> {
        self.alive.check()?;
        self.inner.wait();
        Ok(())
    }

    /// Waits at most `timeout`; true if set.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.alive.check()?;
        Ok(self.inner.wait_timeout(timeout))
    }
}

sync_proxy!(
    /// A shared barrier. Python: `Manager().Barrier(n)`.
    BarrierProxy,
    Barrier
);

impl BarrierProxy {
    /// Waits for all parties; this party's arrival index.
    ///
    /// # Errors
    ///
    /// [`Error::BrokenBarrier`], [`Error::Closed`].
    pub fn wait(&self) -> Result<usize> {
        self.alive.check()?;
        self.inner.wait()
    }

    /// [`wait`](BarrierProxy::wait) for at most `timeout` (a timeout breaks it).
    ///
    /// # Errors
    ///
    /// As [`wait`](BarrierProxy::wait).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize> {
        self.alive.check()?;
        self.inner.wait_timeout(timeout)
    }

    /// Breaks the barrier.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn abort(&self) -> Result<()> {
        self.alive.check()?;
        self.inner.abort();
        Ok(())
    }

    /// Resets the barrier.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn reset(&self) -> Result<()> {
        self.alive.check()?;
        self.inner.reset();
        Ok(())
    }

    /// The number of parties.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn parties(&self) -> Result<usize> {
        self.alive.check()?;
        Ok(self.inner.parties())
    }

    /// The number of parties waiting now.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn n_waiting(&self) -> Result<usize> {
        self.alive.check()?;
        Ok(self.inner.n_waiting())
    }

    /// True once broken.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn is_broken(&self) -> Result<bool> {
        self.alive.check()?;
        Ok(self.inner.is_broken())
    }
}

macro_rules! queue_proxy {
    ($(#[$doc:meta])* $name:ident, $inner:ident) => {
        $(#[$doc])*
        pub struct $name<T> {
            pub(super) alive: Alive,
            pub(super) inner: $inner<T>,
            pub(super) _type: PhantomData<fn() -> T>,
        }

        impl<T> Clone for $name<T> {
            fn clone(&self) -> Self {
                $name {
                    alive: self.alive.clone(),
                    inner: self.inner.clone(),
                    _type: PhantomData,
                }
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).field("object", &self.inner).finish()
            }
        }

        impl<T: Serialize + DeserializeOwned> $name<T> {
            /// Puts `item`, blocking while full.
            ///
            /// # Errors
            ///
            /// [`Error::Closed`].
            pub fn put(&self, item: T) -> Result<()> {
                self.alive.check()?;
                self.inner.put(item)
            }

            /// Puts `item`, waiting at most `timeout` for room.
            ///
            /// # Errors
            ///
            /// [`Error::Full`], [`Error::Closed`].
            pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<()> {
                self.alive.check()?;
                self.inner.put_timeout(item, timeout)
            }

            /// Puts `item` only if there is room now.
            ///
            /// # Errors
            ///
            /// [`Error::Full`], [`Error::Closed`].
            pub fn put_nowait(&self, item: T) -> Result<()> {
                self.alive.check()?;
                self.inner.put_nowait(item)
            }

            /// Takes the next item, blocking until there is one.
            ///
            /// # Errors
            ///
            /// [`Error::Closed`].
            pub fn get(&self) -> Result<T> {
                self.alive.check()?;
                self.inner.get()
            }

            /// Takes the next item, waiting at most `timeout`.
            ///
            /// # Errors
            ///
            /// [`Error::Empty`], [`Error::Closed`].
            pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
                self.alive.check()?;
                self.inner.get_timeout(timeout)
            }

            /// Takes the next item if there is one now.
            ///
            /// # Errors
            ///
            /// [`Error::Empty`], [`Error::Closed`].
            pub fn get_nowait(&self) -> Result<T> {
                self.alive.check()?;
                self.inner.get_nowait()
            }

            /// The number of items.
            ///
            /// # Errors
            ///
            /// [`Error::Closed`].
            pub fn qsize(&self) -> Result<usize> {
                self.alive.check()?;
                Ok(self.inner.qsize())
            }

            /// True when empty.
            ///
            /// # Errors
            ///
            /// [`Error::Closed`].
            pub fn empty(&self) -> Result<bool> {
                self.alive.check()?;
                Ok(self.inner.empty())
            }

            /// True when a bounded queue is full.
            ///
            /// # Errors
            ///
            /// [`Error::Closed`].
            pub fn full(&self) -> Result<bool> {
                self.alive.check()?;
                Ok(self.inner.full())
            }
        }
    };
}

queue_proxy!(
    /// A shared queue. Python: `Manager().Queue()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::dummy as mp;
    /// let m = mp::Manager::new()?;
    /// let q = m.queue()?;
    /// q.put(5)?;
    /// assert_eq!(q.get()?, 5);
    /// # Ok::<(), mp::Error>(())
    /// ```
    QueueProxy,
    Queue
);

queue_proxy!(
    /// A shared joinable queue. Python: `Manager().JoinableQueue()`.
    JoinableQueueProxy,
    JoinableQueue
);

impl<T: Serialize + DeserializeOwned> JoinableQueueProxy<T> {
    /// Marks one item got as done.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when called too often, [`Error::Closed`].
    pub fn task_done(&self) -> Result<()> {
        self.alive.check()?;
        self.inner.task_done()
    }

    /// Blocks until every item put is done.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn join(&self) -> Result<()> {
        self.alive.check()?;
        self.inner.join();
        Ok(())
    }

    /// [`join`](JoinableQueueProxy::join) for at most `timeout`; true if done.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool> {
        self.alive.check()?;
        Ok(self.inner.join_timeout(timeout))
    }
}
