//! `Event`: a flag processes wait on.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::raw::{SPIN_LIMIT, deadline_after};
use super::region::{self, HEADER, Kind};
use crate::connection::spin::{SPIN_MAX, Spin};
use crate::error::Result;
use crate::platform::futex;
use crate::platform::shm::ShmRegion;

/// `state` word: the flag is clear.
const CLEAR: u32 = 0;
/// `state` word: the flag is set.
const SET: u32 = 1;

/// A flag shared by processes: `wait` blocks until some process `set`s it.
///
/// State in shared memory: `state: u32` (`CLEAR`/`SET`, the futex word) and
/// `waiters: u32` (sleepers; `set` makes the wake syscall only if > 0). `set`
/// swaps the state and then reads `waiters`; a waiter increments `waiters` and
/// then reads the state (both `SeqCst`), so either `set` sees the waiter or the
/// waiter sees the flag. Before it sleeps, a waiter watches the flag for up
/// to 50 µs (the `Connection`'s adaptive policy, `connection/spin.rs`: less
/// after misses, none while the CPUs are contended), so a flag set back and
/// forth between two processes costs no sleep and no wake-up.
///
/// Python: `multiprocessing.Event()`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let e = mp::Event::new()?;
///     let mut p = mp::Process::new(|e: mp::Event| e.set(), e.clone());
///     p.start()?;
///     e.wait(); // returns once the child has set it
///     assert!(e.is_set());
///     p.join()
/// }
/// ```
#[derive(Clone)]
pub struct Event {
    /// `state` at `HEADER`, `waiters` at `HEADER + 4`.
    region: Arc<ShmRegion>,
    /// How long this process's waits watch the flag before they sleep
    /// (shared by clones; a received `Event` starts afresh).
    spin: Arc<Spin>,
}

impl Event {
    /// Creates a clear event.
    ///
    /// Python: `Event()`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) when no shared memory can be created.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!multiprocess::Event::new()?.is_set());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new() -> Result<Event> {
        Ok(Event {
            region: region::create(Kind::Event, HEADER + 8)?,
            spin: Arc::new(Spin::new(true)),
        })
    }

    fn state(&self) -> &AtomicU32 {
        self.region.atomic_u32(HEADER)
    }

    fn waiters(&self) -> &AtomicU32 {
        self.region.atomic_u32(HEADER + 4)
    }

    /// True when the flag is set.
    ///
    /// Python: `Event.is_set()`.
    ///
    /// # Examples
    ///
    /// ```
    /// let e = multiprocess::Event::new()?;
    /// e.set();
    /// assert!(e.is_set());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn is_set(&self) -> bool {
        self.state().load(Ordering::Acquire) == SET
    }

    /// Sets the flag and wakes every waiter, in every process.
    ///
    /// Python: `Event.set()`.
    ///
    /// # Examples
    ///
    /// ```
    /// let e = multiprocess::Event::new()?;
    /// e.set();
    /// assert!(e.wait_timeout(std::time::Duration::ZERO));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn set(&self) {
        if self.state().swap(SET, Ordering::SeqCst) == CLEAR
            && self.waiters().load(Ordering::SeqCst) > 0
        {
            futex::wake_all(self.state());
        }
    }

    /// Clears the flag; later waits block until the next `set`.
    ///
    /// Python: `Event.clear()`.
    ///
    /// # Examples
    ///
    /// ```
    /// let e = multiprocess::Event::new()?;
    /// e.set();
    /// e.clear();
    /// assert!(!e.is_set());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn clear(&self) {
        self.state().store(CLEAR, Ordering::Release);
    }

    /// Blocks until the flag is set (returns at once if it is).
    ///
    /// Python: `Event.wait()`.
    ///
    /// # Examples
    ///
    /// ```
    /// let e = multiprocess::Event::new()?;
    /// e.set();
    /// e.wait();
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn wait(&self) {
        self.wait_deadline(None);
    }

    /// Blocks until the flag is set or `timeout` passes; returns the flag (true
    /// when set, false on timeout).
    ///
    /// Python: `Event.wait(timeout)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let e = multiprocess::Event::new()?;
    /// assert!(!e.wait_timeout(Duration::from_millis(10)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_deadline(deadline_after(timeout))
    }

    /// Blocks until the flag is set or `deadline` passes; returns the flag.
    pub(crate) fn wait_deadline(&self, deadline: Option<Instant>) -> bool {
        if self.is_set() {
            return true;
        }
        self.wait_slow(deadline)
    }

    #[cold]
    fn wait_slow(&self, deadline: Option<Instant>) -> bool {
        let state = self.state();
        if self.spin_until_set(deadline) {
            return self.is_set();
        }
        // SeqCst: pairs with `set` (see the type doc).
        self.waiters().fetch_add(1, Ordering::SeqCst);
        let set = loop {
            if state.load(Ordering::SeqCst) == SET {
                break true;
            }
            if !futex::wait(state, CLEAR, deadline) {
                break state.load(Ordering::SeqCst) == SET;
            }
        };
        self.waiters().fetch_sub(1, Ordering::Relaxed);
        set
    }

    /// Watches the flag without sleeping: [`SPIN_LIMIT`] rounds, then, if
    /// the policy says to spin now, for this wait's budget (at most
    /// [`SPIN_MAX`], cut short by `deadline`); true once it is seen set.
    fn spin_until_set(&self, deadline: Option<Instant>) -> bool {
        let state = self.state();
        let is_set = || state.load(Ordering::Relaxed) == SET;
        // First a few rounds, whatever the policy: a flag set from another
        // core is often seen within them, before the policy is asked.
        let soon = (0..SPIN_LIMIT).any(|_| {
            std::hint::spin_loop();
            is_set()
        });
        if soon {
            return true;
        }
        let Some(budget) = self.spin.begin() else {
            return false;
        };
        let full = Instant::now() + budget.min(SPIN_MAX);
        let until = deadline.map_or(full, |d| d.min(full));
        let found = loop {
            // The clock is read once per 64 looks: a look is one load.
            if (0..64).any(|_| {
                std::hint::spin_loop();
                is_set()
            }) {
                break true;
            }
            if Instant::now() >= until {
                break false;
            }
        };
        self.spin.end(found, budget, until != full);
        found
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        region::serialize(&self.region, s)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Event {
            region: region::deserialize(d, &[Kind::Event], HEADER + 8)?,
            spin: Arc::new(Spin::new(true)),
        })
    }
}
