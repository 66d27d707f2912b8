//! `Barrier`: `threading.Barrier`'s algorithm over shared memory.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::raw::{RawCondvar, RawLock, deadline_after};
use super::region::{self, HEADER, Kind};
use crate::error::{Error, Result};
use crate::platform::shm::ShmRegion;
use crate::reduction::{self, CallOutcome, FnRef};

/// Layout after the header: the internal mutex, then the words below.
const MUTEX: usize = HEADER;
const SEQ: usize = MUTEX + RawLock::SIZE;
const PARTIES: usize = SEQ + 4;
const COUNT: usize = SEQ + 8;
const STATE: usize = SEQ + 12;
/// The default timeout in nanoseconds (`u64`; [`NO_TIMEOUT`]: none).
const TIMEOUT: usize = (SEQ + 16).next_multiple_of(8);
/// The action's encoded length (`u32`; 0: no action), then its bytes.
const ACTION_LEN: usize = TIMEOUT + 8;
const ACTION: usize = ACTION_LEN + 4;
/// Room for an encoded `FnRef` (two varints: at most 20 bytes).
const ACTION_MAX: usize = 28;
const SIZE: usize = ACTION + ACTION_MAX;

/// `TIMEOUT`: `wait()` without a deadline.
const NO_TIMEOUT: u64 = u64::MAX;

/// `state`: parties are arriving (`threading.Barrier`'s 0).
const FILLING: u32 = 0;
/// `state`: the barrier tripped; the parties of that pass are leaving (1).
const DRAINING: u32 = 1;
/// `state`: `reset()` broke the waiters, who are leaving (-1).
const RESETTING: u32 = 2;
/// `state`: aborted or timed out; every `wait` fails until `reset()` (-2).
const BROKEN: u32 = 3;

/// A barrier for a fixed number of parties (processes or threads): each
/// `wait` blocks until `parties` callers are waiting, then all go on.
///
/// The state machine is `threading.Barrier`'s (which CPython's
/// `multiprocessing.Barrier` runs over shared state): `count` parties arrive
/// while `FILLING`; the last flips to `DRAINING` and wakes the others; the last
/// to leave flips back to `FILLING`, so a fast party cannot enter the next pass
/// before the previous one has drained. All under an internal lock (with dead
/// holder take-over), with a notification counter to sleep on.
///
/// Python: `multiprocessing.Barrier(parties, action=None, timeout=None)`; the
/// action and the default timeout are set with [`Barrier::builder`].
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let b = mp::Barrier::new(2)?;
///     let mut p = mp::Process::new(|b: mp::Barrier| { b.wait().unwrap(); }, b.clone());
///     p.start()?;
///     let index = b.wait()?; // both parties arrived
///     assert!(index < 2);
///     p.join()
/// }
/// ```
#[derive(Clone)]
pub struct Barrier {
    /// The mutex, condvar and words (see the consts above).
    region: Arc<ShmRegion>,
}

impl Barrier {
    /// Creates a barrier for `parties` callers.
    ///
    /// Python: `Barrier(parties)`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when `parties` is 0; [`Error::Io`] when no shared memory
    /// can be created.
    ///
    /// # Examples
    ///
    /// ```
    /// let b = multiprocess::Barrier::new(1)?;
    /// assert_eq!(b.wait()?, 0); // one party never blocks
    /// assert!(multiprocess::Barrier::new(0).is_err());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new(parties: usize) -> Result<Barrier> {
        Barrier::builder(parties).build()
    }

    /// Starts a barrier for `parties` callers with an action or a default
    /// timeout (see [`BarrierBuilder`]).
    ///
    /// Python: `Barrier(parties, action=f, timeout=t)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = multiprocess::Barrier::builder(1)
    ///     .action(|| println!("all here"))
    ///     .timeout(Duration::from_secs(5))
    ///     .build()?;
    /// assert_eq!(b.wait()?, 0);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn builder(parties: usize) -> BarrierBuilder {
        BarrierBuilder {
            parties,
            action: None,
            timeout: None,
        }
    }

    fn mutex(&self) -> RawLock {
        RawLock::attach(self.region.clone(), MUTEX)
    }

    fn cv(&self) -> RawCondvar {
        RawCondvar::attach(self.region.clone(), SEQ)
    }

    fn word(&self, at: usize) -> &AtomicU32 {
        self.region.atomic_u32(at)
    }

    /// Waits until `parties` callers wait; returns this caller's arrival index,
    /// `0..parties` (exactly one caller per pass gets each index).
    ///
    /// With a default timeout ([`BarrierBuilder::timeout`]) this waits at most
    /// that long, as [`wait_timeout`](Barrier::wait_timeout) would. With an
    /// action ([`BarrierBuilder::action`]), the last party to arrive runs it
    /// before any party is released.
    ///
    /// Python: `Barrier.wait()`.
    ///
    /// # Errors
    ///
    /// [`Error::BrokenBarrier`] when the barrier is or becomes broken while
    /// waiting ([`abort`](Barrier::abort), [`reset`](Barrier::reset), another
    /// party's timeout, the default timeout, or a panicking action).
    /// [`Error::Remote`] to the party whose action panicked (the barrier is
    /// broken then); [`Error::Decode`] to it if the stored action fails its
    /// integrity check (a corrupt region).
    ///
    /// # Examples
    ///
    /// ```
    /// let b = multiprocess::Barrier::new(1)?;
    /// b.abort();
    /// assert!(matches!(b.wait(), Err(multiprocess::Error::BrokenBarrier)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn wait(&self) -> Result<usize> {
        match self.default_timeout() {
            Some(t) => self.wait_timeout(t),
            None => self.wait_deadline(None),
        }
    }

    /// The default timeout of [`wait`](Barrier::wait), if any.
    fn default_timeout(&self) -> Option<Duration> {
        match self.region.atomic_u64(TIMEOUT).load(Ordering::Relaxed) {
            NO_TIMEOUT => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }

    /// Like [`wait`](Barrier::wait), giving up after `timeout`: a timeout
    /// breaks the barrier for every party (as in Python).
    ///
    /// An explicit `timeout` replaces the barrier's default one.
    ///
    /// Python: `Barrier.wait(timeout)`.
    ///
    /// # Errors
    ///
    /// [`Error::BrokenBarrier`] on timeout, or when the barrier is or becomes
    /// broken; as [`wait`](Barrier::wait) for a panicking action.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = multiprocess::Barrier::new(2)?;
    /// assert!(matches!(b.wait_timeout(Duration::from_millis(10)), Err(multiprocess::Error::BrokenBarrier)));
    /// assert!(b.is_broken());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize> {
        self.wait_deadline(deadline_after(timeout))
    }

    /// Sleeps on the condvar with the mutex held; holds it again on return.
    /// False on timeout.
    fn sleep(&self, mutex: &RawLock, deadline: Option<Instant>) -> bool {
        let cv = self.cv();
        let seen = cv.prepare();
        // We hold it: release cannot fail.
        let _ = mutex.release();
        let in_time = cv.wait(seen, deadline);
        mutex.acquire_deadline(None);
        in_time
    }

    fn wait_deadline(&self, deadline: Option<Instant>) -> Result<usize> {
        let mutex = self.mutex();
        mutex.acquire_deadline(None);
        // _enter: wait while a previous pass drains or resets. Unlike Python,
        // the deadline counts here too: a party that died inside `wait` never
        // leaves its pass, and a timed wait must not wait for it forever.
        while matches!(self.state(), DRAINING | RESETTING) {
            if !self.sleep(&mutex, deadline) && matches!(self.state(), DRAINING | RESETTING) {
                let _ = mutex.release();
                return Err(Error::BrokenBarrier);
            }
        }
        if self.state() == BROKEN {
            let _ = mutex.release();
            return Err(Error::BrokenBarrier);
        }
        let index = self.word(COUNT).load(Ordering::Relaxed);
        self.word(COUNT).store(index + 1, Ordering::Relaxed);
        let result = if index + 1 == self.word(PARTIES).load(Ordering::Relaxed) {
            // _release: the last party runs the action, then trips the
            // barrier; a failed action breaks it instead (Python's `_break`).
            match self.run_action() {
                Ok(()) => {
                    self.set_state(DRAINING);
                    self.cv().notify_all();
                    Ok(index as usize)
                }
                Err(e) => {
                    self.break_locked();
                    Err(e)
                }
            }
        } else {
            // _wait
            loop {
                if self.state() != FILLING {
                    break;
                }
                if !self.sleep(&mutex, deadline) && self.state() == FILLING {
                    self.break_locked();
                    break;
                }
            }
            if matches!(self.state(), RESETTING | BROKEN) {
                Err(Error::BrokenBarrier)
            } else {
                Ok(index as usize)
            }
        };
        // _exit
        let left = self.word(COUNT).load(Ordering::Relaxed) - 1;
        self.word(COUNT).store(left, Ordering::Relaxed);
        if left == 0 && matches!(self.state(), DRAINING | RESETTING) {
            self.set_state(FILLING);
            self.cv().notify_all();
        }
        let _ = mutex.release();
        result
    }

    /// Runs the action, if any, in this process (mutex held, as Python runs it
    /// under the barrier's condition lock).
    fn run_action(&self) -> Result<()> {
        let len = self.word(ACTION_LEN).load(Ordering::Relaxed) as usize;
        if len == 0 {
            return Ok(());
        }
        let mut bytes = [0u8; ACTION_MAX];
        let bytes = &mut bytes[..len.min(ACTION_MAX)];
        self.region.copy_out(ACTION, bytes);
        let action: FnRef = postcard::from_bytes(bytes)
            .map_err(|e| Error::decode(format!("a barrier action that does not decode: {e}")))?;
        match action.call(reduction::encode(&())?)? {
            CallOutcome::Returned(_) => Ok(()),
            CallOutcome::Failed(e) => Err(e),
            CallOutcome::Panicked(p) => {
                let me = crate::current_process();
                Err(p.into_error(me.name().to_string(), me.pid()))
            }
        }
    }

    /// The state word; read and written under the mutex (Relaxed).
    fn state(&self) -> u32 {
        self.word(STATE).load(Ordering::Relaxed)
    }

    fn set_state(&self, s: u32) {
        self.word(STATE).store(s, Ordering::Relaxed);
    }

    /// `_break`: marks the barrier broken and wakes everyone (mutex held).
    fn break_locked(&self) {
        self.set_state(BROKEN);
        self.cv().notify_all();
    }

    /// Breaks the barrier: current and future waiters get
    /// [`Error::BrokenBarrier`] until [`reset`](Barrier::reset).
    ///
    /// Python: `Barrier.abort()`.
    ///
    /// # Examples
    ///
    /// ```
    /// let b = multiprocess::Barrier::new(3)?;
    /// b.abort();
    /// assert!(b.is_broken());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn abort(&self) {
        let mutex = self.mutex();
        mutex.acquire_deadline(None);
        self.break_locked();
        let _ = mutex.release();
    }

    /// Returns the barrier to its initial state; parties waiting now get
    /// [`Error::BrokenBarrier`].
    ///
    /// Python: `Barrier.reset()`.
    ///
    /// # Examples
    ///
    /// ```
    /// let b = multiprocess::Barrier::new(1)?;
    /// b.abort();
    /// b.reset();
    /// assert!(!b.is_broken());
    /// assert_eq!(b.wait()?, 0);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn reset(&self) {
        let mutex = self.mutex();
        mutex.acquire_deadline(None);
        if self.word(COUNT).load(Ordering::Relaxed) > 0 {
            if matches!(self.state(), FILLING | BROKEN) {
                self.set_state(RESETTING);
            }
        } else {
            self.set_state(FILLING);
        }
        self.cv().notify_all();
        let _ = mutex.release();
    }

    /// How many parties must call `wait` to trip the barrier.
    ///
    /// Python: `Barrier.parties`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiprocess::Barrier::new(4)?.parties(), 4);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn parties(&self) -> usize {
        self.word(PARTIES).load(Ordering::Relaxed) as usize
    }

    /// How many parties are waiting now (a snapshot).
    ///
    /// Python: `Barrier.n_waiting`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiprocess::Barrier::new(4)?.n_waiting(), 0);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn n_waiting(&self) -> usize {
        let mutex = self.mutex();
        mutex.acquire_deadline(None);
        let n = if self.state() == FILLING {
            self.word(COUNT).load(Ordering::Relaxed) as usize
        } else {
            0
        };
        let _ = mutex.release();
        n
    }

    /// True when the barrier is broken (aborted or timed out, not yet reset).
    ///
    /// Python: `Barrier.broken`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!multiprocess::Barrier::new(2)?.is_broken());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn is_broken(&self) -> bool {
        self.word(STATE).load(Ordering::Relaxed) == BROKEN
    }
}

/// Configures a [`Barrier`]: an action run when all parties have arrived, and
/// a default timeout for [`Barrier::wait`].
///
/// Python: the `action` and `timeout` arguments of `Barrier(parties, action,
/// timeout)`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// use std::time::Duration;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let b = mp::Barrier::builder(2).timeout(Duration::from_millis(10)).build()?;
///     // Nobody else comes: the default timeout breaks the barrier.
///     assert!(matches!(b.wait(), Err(mp::Error::BrokenBarrier)));
///     assert!(b.is_broken());
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, Copy)]
#[must_use = "a builder does nothing until build() is called"]
pub struct BarrierBuilder {
    parties: usize,
    action: Option<FnRef>,
    timeout: Option<Duration>,
}

impl BarrierBuilder {
    /// Sets the action: the last party to arrive calls `f()` before any party
    /// is released, once per pass. `f` is a non-capturing closure or a `fn`
    /// item, since any party's process may run it; state it needs lives in a
    /// `static` of the program (set by each party). If it panics, the barrier
    /// breaks: the party that ran it gets [`Error::Remote`], the others
    /// [`Error::BrokenBarrier`]. It runs under the barrier's internal lock (as
    /// in Python), so it must not call this barrier's methods.
    ///
    /// Python: `Barrier(parties, action=f)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// static TRIPS: AtomicUsize = AtomicUsize::new(0);
    /// let b = multiprocess::Barrier::builder(1)
    ///     .action(|| { TRIPS.fetch_add(1, Ordering::Relaxed); })
    ///     .build()?;
    /// b.wait()?;
    /// b.wait()?;
    /// assert_eq!(TRIPS.load(Ordering::Relaxed), 2);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn action<F, R>(mut self, f: F) -> Self
    where
        F: Fn() -> R,
    {
        reduction::assert_zero_sized::<F>();
        // A closure around a zero-sized `f` is zero-sized too: it travels as
        // any target does.
        self.action = Some(FnRef::discard(move |(): ()| f()));
        self
    }

    /// Sets the default timeout of [`Barrier::wait`]; an explicit
    /// [`Barrier::wait_timeout`] overrides it. A wait that times out breaks
    /// the barrier.
    ///
    /// Python: `Barrier(parties, timeout=t)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = multiprocess::Barrier::builder(1).timeout(Duration::from_secs(1)).build()?;
    /// assert_eq!(b.wait()?, 0);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Creates the barrier.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when `parties` is 0; [`Error::Io`] when no shared memory
    /// can be created.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(multiprocess::Barrier::builder(0).build().is_err());
    /// ```
    pub fn build(self) -> Result<Barrier> {
        let parties = u32::try_from(self.parties)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| Error::value("a barrier needs between 1 and 2^32 - 1 parties"))?;
        let action = match &self.action {
            Some(f) => postcard::to_stdvec(f)
                .map_err(|e| Error::encode(format!("a barrier action: {e}")))?,
            None => Vec::new(),
        };
        if action.len() > ACTION_MAX {
            return Err(Error::encode("a barrier action reference is too long"));
        }
        let region = region::create(Kind::Barrier, SIZE)?;
        RawLock::init(region.clone(), MUTEX);
        region.atomic_u32(PARTIES).store(parties, Ordering::Relaxed);
        // Durations past u64 nanoseconds (584 years) mean no limit.
        let nanos = self.timeout.map_or(NO_TIMEOUT, |t| {
            u64::try_from(t.as_nanos()).unwrap_or(NO_TIMEOUT)
        });
        region.atomic_u64(TIMEOUT).store(nanos, Ordering::Relaxed);
        region.copy_in(ACTION, &action);
        region
            .atomic_u32(ACTION_LEN)
            .store(action.len() as u32, Ordering::Relaxed);
        Ok(Barrier { region })
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.is_broken())
            .finish()
    }
}

impl Serialize for Barrier {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        region::serialize(&self.region, s)
    }
}

impl<'de> Deserialize<'de> for Barrier {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Barrier {
            region: region::deserialize(d, &[Kind::Barrier], SIZE)?,
        })
    }
}
