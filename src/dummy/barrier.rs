//! `Barrier` on a std `Mutex` and `Condvar`: Python's `threading.Barrier`.

use crate::util::Unpoison;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{run_caught, wait_until};
use crate::error::{Error, Result};
use crate::util::deadline_after;

type Action = Box<dyn Fn() + Send + Sync>;

/// The barrier's state. A waiter remembers both counters when it arrives: a
/// change of `trips` means it passed, a change of `breaks` that it was broken
/// out (abort, reset, a timeout or a failed action).
#[derive(Debug, Default)]
struct State {
    waiting: usize,
    trips: u64,
    breaks: u64,
    broken: bool,
}

struct Inner {
    parties: usize,
    timeout: Option<Duration>,
    action: Option<Action>,
    state: Mutex<State>,
    changed: Condvar,
}

/// A barrier for a fixed number of threads.
///
/// Python: `multiprocessing.dummy.Barrier` (`threading.Barrier`).
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// let b = mp::Barrier::new(2)?;
/// let b2 = b.clone();
/// let mut p = mp::Process::new(move |_: ()| { b2.wait().unwrap(); }, ());
/// p.start()?;
/// assert!(b.wait()? < 2);
/// p.join()?;
/// # Ok::<(), mp::Error>(())
/// ```
#[derive(Clone)]
pub struct Barrier {
    inner: Arc<Inner>,
}

impl Barrier {
    /// A barrier for `parties` threads.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for 0 parties or more than 2^32 - 1.
    pub fn new(parties: usize) -> Result<Barrier> {
        Barrier::builder(parties).build()
    }

    /// A builder for a barrier with an action or a default timeout.
    pub fn builder(parties: usize) -> BarrierBuilder {
        BarrierBuilder {
            parties,
            action: None,
            timeout: None,
        }
    }

    /// Waits until all parties have called `wait`; returns this party's
    /// arrival index (0 to parties - 1). The last to arrive runs the action.
    ///
    /// # Errors
    ///
    /// [`Error::BrokenBarrier`] if the barrier is or becomes broken, or the
    /// default timeout passes; [`Error::Remote`] to the party whose action
    /// panicked (the barrier is broken then).
    pub fn wait(&self) -> Result<usize> {
        match self.inner.timeout {
            Some(t) => self.wait_timeout(t),
            None => self.wait_deadline(None),
        }
    }

    /// [`wait`](Barrier::wait) for at most `timeout`: a timeout breaks the
    /// barrier for every party.
    ///
    /// # Errors
    ///
    /// As [`wait`](Barrier::wait).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize> {
        self.wait_deadline(deadline_after(timeout))
    }

    fn wait_deadline(&self, deadline: Option<Instant>) -> Result<usize> {
        let inner = &*self.inner;
        let mut g = inner.state.lock().unpoison();
        if g.broken {
            return Err(Error::BrokenBarrier);
        }
        let index = g.waiting;
        g.waiting += 1;
        if g.waiting == inner.parties {
            return self.trip(g, index);
        }
        let (trips, breaks) = (g.trips, g.breaks);
        let (mut g, woke) = wait_until(&inner.changed, g, deadline, |s| {
            s.trips != trips || s.breaks != breaks
        });
        if !woke {
            Self::break_locked(&mut g);
            inner.changed.notify_all();
            return Err(Error::BrokenBarrier);
        }
        if g.trips != trips {
            Ok(index)
        } else {
            Err(Error::BrokenBarrier)
        }
    }

    /// The last party: runs the action, then lets everyone go.
    fn trip(&self, mut g: std::sync::MutexGuard<'_, State>, index: usize) -> Result<usize> {
        let inner = &*self.inner;
        if let Some(action) = &inner.action {
            // The action runs with the state locked: nobody can pass meanwhile.
            if let Err(e) = run_caught("Barrier action", action) {
                Self::break_locked(&mut g);
                inner.changed.notify_all();
                return Err(e);
            }
        }
        g.waiting = 0;
        g.trips += 1;
        inner.changed.notify_all();
        Ok(index)
    }

    fn break_locked(s: &mut State) {
        s.broken = true;
        s.breaks += 1;
        s.waiting = 0;
    }

    /// Breaks the barrier: waiting and later `wait`s fail with
    /// [`Error::BrokenBarrier`] until [`reset`](Barrier::reset).
    pub fn abort(&self) {
        Self::break_locked(&mut self.inner.state.lock().unpoison());
        self.inner.changed.notify_all();
    }

    /// Returns the barrier to its initial state; parties waiting now get
    /// [`Error::BrokenBarrier`].
    pub fn reset(&self) {
        let mut g = self.inner.state.lock().unpoison();
        if g.waiting > 0 {
            g.breaks += 1;
        }
        g.waiting = 0;
        g.broken = false;
        drop(g);
        self.inner.changed.notify_all();
    }

    /// The number of parties.
    pub fn parties(&self) -> usize {
        self.inner.parties
    }

    /// The number of parties waiting now.
    pub fn n_waiting(&self) -> usize {
        self.inner.state.lock().unpoison().waiting
    }

    /// True once broken (until reset).
    pub fn is_broken(&self) -> bool {
        self.inner.state.lock().unpoison().broken
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("state", &*self.inner.state.lock().unpoison())
            .finish()
    }
}

/// Builds a [`Barrier`] with an action or a default timeout.
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
/// let runs = Arc::new(AtomicU32::new(0));
/// let r = runs.clone();
/// let b = mp::Barrier::builder(1).action(move || r.fetch_add(1, Ordering::SeqCst)).build()?;
/// b.wait()?;
/// assert_eq!(runs.load(Ordering::SeqCst), 1);
/// # Ok::<(), mp::Error>(())
/// ```
pub struct BarrierBuilder {
    parties: usize,
    action: Option<Action>,
    timeout: Option<Duration>,
}

impl fmt::Debug for BarrierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BarrierBuilder")
            .field("parties", &self.parties)
            .field("action", &self.action.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl BarrierBuilder {
    /// Runs `f` in the last party to arrive, before any party passes. It may
    /// capture (a thread shares memory).
    pub fn action<F, R>(mut self, f: F) -> Self
    where
        F: Fn() -> R + Send + Sync + 'static,
    {
        self.action = Some(Box::new(move || drop(f())));
        self
    }

    /// The default timeout of [`Barrier::wait`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Creates the barrier.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for 0 parties or more than 2^32 - 1.
    pub fn build(self) -> Result<Barrier> {
        if self.parties == 0 || u32::try_from(self.parties).is_err() {
            return Err(Error::value(
                "a barrier needs between 1 and 2^32 - 1 parties",
            ));
        }
        Ok(Barrier {
            inner: Arc::new(Inner {
                parties: self.parties,
                timeout: self.timeout,
                action: self.action,
                state: Mutex::default(),
                changed: Condvar::new(),
            }),
        })
    }
}
