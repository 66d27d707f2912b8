//! What a submit hands back: [`AsyncResult`] (Python's `ApplyResult` and
//! `MapResult`) and [`IMapIterator`] (Python's `IMapIterator` and
//! `IMapUnorderedIterator`), and the jobs that fill them on the pool's handler
//! thread.

use crate::util::Unpoison;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::ring::SpinGate;
use super::scheduler::Take;
use super::submit::{Body, Direct, Inner, Job};
use crate::connection::deadline_after;
use crate::error::{Error, Result};
use crate::reduction;

/// Runs a user callback on the handler thread; a panic in it is reported by the
/// panic hook (like a panic on any thread) and does not stop the pool.
fn run_callback(f: impl FnOnce()) {
    let _ = catch_unwind(AssertUnwindSafe(f));
}

// ---------------------------------------------------------------------------
// The slot behind an AsyncResult

/// Where an [`AsyncResult`]'s outcome lands.
enum SlotState<R> {
    /// Not finished.
    Pending,
    /// Finished; the value or the error.
    Ready(Result<R>),
    /// A `get()` took the value.
    Taken,
}

/// The shared cell of one [`AsyncResult`].
pub(crate) struct Slot<R> {
    /// The outcome.
    state: Mutex<SlotState<R>>,
    /// Signalled once the outcome is set.
    cond: Condvar,
    /// Async wakers and completion hooks, run once the outcome is set.
    notify: Mutex<Notify>,
    /// Set with the outcome: what a waiter watches while it spins before it
    /// sleeps on `cond`.
    done: AtomicBool,
    /// Where the task went when its submitter placed it on a worker itself:
    /// a waiter takes the answer from that worker's ring (see
    /// `scheduler.rs`, "The direct path"). Dropped once the outcome is set.
    direct: Mutex<Option<Direct>>,
    /// The submitter entered the direct ring watch for its waiter
    /// ([`Direct::held`]); whoever clears this leaves it.
    held: AtomicBool,
}

/// A one-shot hook run (on the thread that sets the outcome) once a slot is set.
pub(crate) type Hook = Box<dyn FnOnce() + Send + 'static>;

/// Who is told when a [`Slot`] is set (std `Future`s and `mp::futures`).
/// Always locked inside the slot's state lock.
#[derive(Default)]
struct Notify {
    /// Wakers of tasks awaiting the slot.
    wakers: Vec<Waker>,
    /// Completion hooks, in registration order.
    hooks: Vec<Hook>,
}

impl<R> Slot<R> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Slot {
            state: Mutex::new(SlotState::Pending),
            cond: Condvar::new(),
            notify: Mutex::new(Notify::default()),
            done: AtomicBool::new(false),
            direct: Mutex::new(None),
            held: AtomicBool::new(false),
        })
    }

    /// The task went straight to a worker: see [`Slot::direct`](Self).
    pub(crate) fn set_direct(&self, d: Direct) {
        let mut slot = self.direct.lock().unpoison();
        if !self.done.load(Ordering::SeqCst) {
            self.held.store(d.held, Ordering::SeqCst);
            *slot = Some(d);
        }
    }

    /// Sets the outcome (once; later calls are ignored) and wakes the waiters:
    /// threads, async tasks, then the hooks in order. True if this call set it.
    pub(crate) fn set(&self, result: Result<R>) -> bool {
        let mut s = self.state.lock().unpoison();
        if !matches!(*s, SlotState::Pending) {
            return false;
        }
        *s = SlotState::Ready(result);
        // SeqCst: against a direct waiter's sleep (see `RingWatch::sleep`).
        self.done.store(true, Ordering::SeqCst);
        // Taken under the state lock: a hook or waker added after this sees
        // the outcome set and runs at once (see `on_set`, `register`).
        let (wakers, hooks) = {
            let mut n = self.notify.lock().unpoison();
            (std::mem::take(&mut n.wakers), std::mem::take(&mut n.hooks))
        };
        drop(s);
        self.cond.notify_all();
        if let Some(d) = self.direct.lock().unpoison().take() {
            // Set without the waiter (it never came, or not yet).
            if self.held.swap(false, Ordering::SeqCst) {
                release(&d);
            }
            d.watch.wake();
        }
        wakers.into_iter().for_each(Waker::wake);
        for h in hooks {
            run_callback(h);
        }
        true
    }

    pub(crate) fn is_pending(&self) -> bool {
        matches!(*self.state.lock().unpoison(), SlotState::Pending)
    }

    /// Runs `hook` once the outcome is set: now (on this thread) if it is.
    pub(crate) fn on_set(&self, hook: Hook) {
        let s = self.state.lock().unpoison();
        if matches!(*s, SlotState::Pending) {
            self.notify.lock().unpoison().hooks.push(hook);
        } else {
            drop(s);
            run_callback(hook);
        }
    }

    /// Registers `waker` while the outcome is not set; false if it is (poll
    /// again).
    fn register(&self, waker: &Waker) -> bool {
        let s = self.state.lock().unpoison();
        if !matches!(*s, SlotState::Pending) {
            return false;
        }
        let mut n = self.notify.lock().unpoison();
        n.wakers.retain(|w| !w.will_wake(waker));
        n.wakers.push(waker.clone());
        true
    }

    /// The outcome without waiting: `None` while pending; else as
    /// [`AsyncResult::get`] (the value moves out, an error is copied).
    pub(crate) fn try_take(&self) -> Option<Result<R>> {
        let mut s = self.state.lock().unpoison();
        match std::mem::replace(&mut *s, SlotState::Taken) {
            SlotState::Pending => {
                *s = SlotState::Pending;
                None
            }
            other => Some(take_outcome(&mut s, other)),
        }
    }

    /// A copy of the error, if the outcome is an error (`None` while pending).
    pub(crate) fn error(&self) -> Option<Error> {
        match &*self.state.lock().unpoison() {
            SlotState::Ready(Err(e)) => Some(e.duplicate()),
            _ => None,
        }
    }

    /// `std::future::Future::poll` for anything backed by this slot.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Result<R>> {
        loop {
            if let Some(r) = self.try_take() {
                return Poll::Ready(r);
            }
            if self.register(cx.waker()) {
                // Registered while pending: `set` will wake it.
                return Poll::Pending;
            }
        }
    }

    /// Waits until set or `deadline` and takes the outcome (see
    /// [`AsyncResult::get`]); [`Error::Timeout`] at the deadline.
    pub(crate) fn take_deadline(&self, deadline: Option<Instant>) -> Result<R> {
        let mut s = self.wait_deadline(deadline).ok_or(Error::Timeout)?;
        let state = std::mem::replace(&mut *s, SlotState::Taken);
        take_outcome(&mut s, state)
    }

    /// Waits until set or `deadline`; the guard, or `None` on timeout.
    fn wait_deadline(&self, deadline: Option<Instant>) -> Option<MutexGuard<'_, SlotState<R>>> {
        // A result that comes within the spin (a short task on a worker that
        // spins on its ring too) costs this thread no sleep and wake-up.
        static SPIN: SpinGate = SpinGate::new();
        // The direct path's waits (one short task each, `apply`) keep a gate
        // of their own: a wait for a whole `map` misses its spin every time,
        // and must not stop the spins of the round trips that pay.
        static DIRECT_SPIN: SpinGate = SpinGate::new();
        let direct = self.direct.lock().unpoison().clone();
        if let Some(d) = direct {
            self.wait_direct(&d, deadline, &DIRECT_SPIN);
        }
        let start = Instant::now();
        let budget = if self.done.load(Ordering::Acquire) {
            Duration::ZERO
        } else {
            SPIN.budget()
        };
        let until = deadline.map_or(start + budget, |d| d.min(start + budget));
        'spin: while !budget.is_zero() {
            for _ in 0..64 {
                if self.done.load(Ordering::Acquire) {
                    SPIN.record(true);
                    break 'spin;
                }
                std::hint::spin_loop();
            }
            if Instant::now() >= until {
                // A wait cut short by its deadline says nothing about the spin.
                if deadline.is_none_or(|d| d > until) {
                    SPIN.record(false);
                }
                break;
            }
        }
        let mut s = self.state.lock().unpoison();
        while matches!(*s, SlotState::Pending) {
            match deadline {
                None => s = self.cond.wait(s).unpoison(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    s = self.cond.wait_timeout(s, d - now).unpoison().0;
                }
            }
        }
        Some(s)
    }
}

impl<R> Slot<R> {
    /// The direct path's wait (see `scheduler.rs`): watches the worker's
    /// result ring, spinning then sleeping on it, and takes the answer from
    /// it when it comes, until the outcome is set, the deadline passes, or
    /// the answer is the handler's to serve.
    fn wait_direct(&self, d: &Direct, deadline: Option<Instant>, spin: &SpinGate) {
        let held = self.held.swap(false, Ordering::SeqCst);
        let Some(pool) = d.pool.upgrade() else {
            return;
        };
        // A callback on the handler thread waiting here would wait for
        // itself to let go of the lock.
        if pool.thread_id.get() == Some(&std::thread::current().id()) {
            if held {
                release(d);
            }
            return;
        }
        let done = || self.done.load(Ordering::SeqCst);
        if !held {
            d.watch.enter();
        }
        let budget = spin.budget();
        let mut spin_until = Instant::now() + budget;
        let mut spun = false;
        let mut busy = 0;
        while !done() {
            if d.watch.has_unread() {
                match pool.take_direct(d) {
                    Take::Done | Take::Handoff => break,
                    // Held long (the handler runs callbacks): the handler
                    // serves the ring itself once it is through.
                    Take::Busy if busy >= DIRECT_BUSY_TRIES => break,
                    Take::Busy => {
                        busy += 1;
                        std::thread::yield_now();
                        continue;
                    }
                }
            }
            let now = Instant::now();
            if deadline.is_some_and(|t| now >= t) {
                break;
            }
            if now < spin_until {
                spun = true;
                if spin_on(d.watch.head(), &self.done, spin_until) {
                    spin.record(true);
                    // The next wait for this result spins afresh.
                    spin_until = Instant::now() + budget;
                    spun = false;
                }
                continue;
            }
            if spun {
                spin.record(false);
                spun = false;
            }
            let until = deadline.map_or(now + DIRECT_SLICE, |t| t.min(now + DIRECT_SLICE));
            d.watch.sleep(until, done);
        }
        release(d);
    }
}

/// Leaves `d`'s ring watch for a waiter that is done with it; the results
/// the worker did not wake the handler for are then the handler's.
fn release(d: &Direct) {
    if d.watch.leave() {
        if let Some(pool) = d.pool.upgrade() {
            pool.wake_handler();
        }
    }
}

/// How often a direct waiter tries the pool's lock for an answer that is
/// there before it leaves the answer to the handler.
const DIRECT_BUSY_TRIES: u32 = 100;

/// How long a direct waiter sleeps before it looks again on its own (a wake
/// is never lost; this bounds the cost of a bug).
const DIRECT_SLICE: Duration = Duration::from_millis(100);

/// Spins until `head` moves, `done` is set, or `until`; true if either came.
fn spin_on(head: &std::sync::atomic::AtomicU32, done: &AtomicBool, until: Instant) -> bool {
    let seen = head.load(Ordering::Relaxed);
    loop {
        for _ in 0..64 {
            if head.load(Ordering::Relaxed) != seen || done.load(Ordering::Relaxed) {
                return true;
            }
            std::hint::spin_loop();
        }
        if Instant::now() >= until {
            return false;
        }
    }
}

/// Hands out a set outcome taken from the slot (which now holds `Taken`): the
/// value moves out; an error is put back and a copy handed out.
fn take_outcome<R>(s: &mut SlotState<R>, state: SlotState<R>) -> Result<R> {
    match state {
        SlotState::Ready(Ok(v)) => Ok(v),
        SlotState::Ready(Err(e)) => {
            let copy = e.duplicate();
            *s = SlotState::Ready(Err(e));
            Err(copy)
        }
        SlotState::Taken => Err(Error::value(
            "the result was already taken by an earlier get()",
        )),
        SlotState::Pending => unreachable!("take_outcome is called only once the slot is set"),
    }
}

/// The result of [`Pool::apply_async`](crate::Pool::apply_async) or
/// [`Pool::map_async`](crate::Pool::map_async): a value that will be there once
/// a worker has answered.
///
/// Callbacks given with the submit have run by the time [`get`](Self::get) or
/// [`wait`](Self::wait) returns. `AsyncResult` is `Send` and `Sync`; all methods
/// take `&self`.
///
/// Python: `multiprocessing.pool.AsyncResult` (`ApplyResult`, `MapResult`).
///
/// # Differences from Python
///
/// A value moves out of the `AsyncResult` on the first successful `get()`:
/// a second `get()` gives [`Error::Value`] (no `R: Clone` bound is needed). An
/// error is handed out again by every `get()`, as Python re-raises it.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let pool = mp::Pool::new(2)?;
///     let r = pool.apply_async(|x: u64| x * x, 12)?;
///     r.wait();
///     assert!(r.ready());
///     assert!(r.successful()?);
///     assert_eq!(r.get()?, 144);
///     Ok(())
/// }
/// ```
pub struct AsyncResult<R> {
    /// Filled by the pool's handler thread.
    slot: Arc<Slot<R>>,
}

impl<R> AsyncResult<R> {
    pub(crate) fn new(slot: Arc<Slot<R>>) -> Self {
        AsyncResult { slot }
    }

    /// A result that is already there (an empty `map_async`, a refused submit).
    pub(crate) fn ready_with(result: Result<R>) -> Self {
        let slot = Slot::new();
        slot.set(result);
        AsyncResult { slot }
    }

    /// Waits for the result and returns it.
    ///
    /// Python: `AsyncResult.get()`.
    ///
    /// # Errors
    ///
    /// The task's error: [`Error::Remote`] when the function panicked,
    /// [`Error::WorkerLost`] when its worker died mid-task, [`Error::Timeout`]
    /// when it overran the pool's or the call's task timeout, [`Error::Closed`]
    /// when the pool was terminated (or dropped) first, [`Error::Decode`] /
    /// [`Error::Encode`] when the argument or result did not cross;
    /// [`Error::Value`] when an earlier `get()` already took the value.
    pub fn get(&self) -> Result<R> {
        self.get_deadline(None)
    }

    /// Like [`get`](Self::get), but gives up after `timeout` with
    /// [`Error::Timeout`]; the task goes on, and a later `get` can still return
    /// its result.
    ///
    /// Python: `AsyncResult.get(timeout)`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when not ready in time, else as [`get`](Self::get).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// use std::time::Duration;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let pool = mp::Pool::new(1)?;
    ///     let slow = pool.apply_async(|ms: u64| std::thread::sleep(Duration::from_millis(ms)), 300)?;
    ///     assert!(matches!(slow.get_timeout(Duration::from_millis(10)), Err(mp::Error::Timeout)));
    ///     slow.get()?;
    ///     Ok(())
    /// }
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<R> {
        self.get_deadline(deadline_after(timeout))
    }

    fn get_deadline(&self, deadline: Option<Instant>) -> Result<R> {
        self.slot.take_deadline(deadline)
    }

    /// Waits until the result is ready.
    ///
    /// Python: `AsyncResult.wait()`.
    pub fn wait(&self) {
        let _ = self.slot.wait_deadline(None);
    }

    /// Waits up to `timeout`; true if the result is ready.
    ///
    /// Python: `AsyncResult.wait(timeout)` (which returns `None`; check
    /// `ready()` there).
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.slot.wait_deadline(deadline_after(timeout)).is_some()
    }

    /// True once the task has finished (successfully or not).
    ///
    /// Python: `AsyncResult.ready()`.
    pub fn ready(&self) -> bool {
        !self.slot.is_pending()
    }

    /// Whether the task finished without error.
    ///
    /// Python: `AsyncResult.successful()`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when the result is not ready yet.
    pub fn successful(&self) -> Result<bool> {
        match &*self.slot.state.lock().unpoison() {
            SlotState::Pending => Err(Error::value("the result is not ready; wait() for it first")),
            SlotState::Ready(r) => Ok(r.is_ok()),
            SlotState::Taken => Ok(true),
        }
    }
}

/// Awaiting an `AsyncResult` gives what [`get`](AsyncResult::get) gives,
/// without blocking a thread: the pool's handler thread wakes the task. Works
/// under any async runtime (the crate depends on none).
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// use std::future::Future;
/// use std::sync::Arc;
/// use std::task::{Context, Poll, Wake, Waker};
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let pool = mp::Pool::new(1)?;
///     let r = pool.apply_async(|x: u32| x + 1, 41)?;
///     // Any executor drives it; a minimal one (park until woken):
///     struct Unpark(std::thread::Thread);
///     impl Wake for Unpark {
///         fn wake(self: Arc<Self>) {
///             self.0.unpark()
///         }
///     }
///     let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
///     let mut cx = Context::from_waker(&waker);
///     let mut r = std::pin::pin!(r);
///     let v = loop {
///         match r.as_mut().poll(&mut cx) {
///             Poll::Ready(v) => break v?,
///             Poll::Pending => std::thread::park(),
///         }
///     };
///     assert_eq!(v, 42);
///     Ok(())
/// }
/// ```
impl<R> std::future::Future for AsyncResult<R> {
    type Output = Result<R>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R>> {
        self.slot.poll_take(cx)
    }
}

impl<R> fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &*self.slot.state.lock().unpoison() {
            SlotState::Pending => "pending",
            SlotState::Ready(Ok(_)) | SlotState::Taken => "ready (ok)",
            SlotState::Ready(Err(_)) => "ready (error)",
        };
        f.debug_struct("AsyncResult")
            .field("state", &state)
            .finish()
    }
}

/// A boxed success callback.
pub(crate) type Callback<R> = Box<dyn FnOnce(&R) + Send + 'static>;
/// A boxed error callback.
pub(crate) type ErrorCallback = Box<dyn FnOnce(&Error) + Send + 'static>;

// ---------------------------------------------------------------------------
// apply

/// The job of one `apply_async`.
pub(crate) struct ApplyJob<R> {
    /// Where the result goes.
    slot: Arc<Slot<R>>,
    /// Run with the value before it is stored.
    callback: Option<Callback<R>>,
    /// Run with the error before it is stored.
    error_callback: Option<ErrorCallback>,
}

impl<R> ApplyJob<R> {
    pub(crate) fn new(
        slot: Arc<Slot<R>>,
        callback: Option<Callback<R>>,
        error_callback: Option<ErrorCallback>,
    ) -> Self {
        ApplyJob {
            slot,
            callback,
            error_callback,
        }
    }
}

impl<R: DeserializeOwned + Send + 'static> Job for ApplyJob<R> {
    fn complete(&mut self, _index: u64, outcome: Result<Body<'_>>) -> bool {
        let result = outcome.and_then(|b| reduction::decode::<R>(b.bytes, b.fds));
        match &result {
            Ok(v) => {
                if let Some(cb) = self.callback.take() {
                    run_callback(|| cb(v));
                }
            }
            Err(e) => {
                if let Some(cb) = self.error_callback.take() {
                    run_callback(|| cb(e));
                }
            }
        }
        self.slot.set(result);
        true
    }

    fn direct(&self, direct: Direct) -> bool {
        // Callbacks run on the handler thread, as Python's do.
        if self.callback.is_some() || self.error_callback.is_some() {
            return false;
        }
        self.slot.set_direct(direct);
        true
    }
}

impl<R> Drop for ApplyJob<R> {
    fn drop(&mut self) {
        // A job dropped unanswered (the pool was terminated): never a hang.
        self.slot.set(Err(Error::Closed));
    }
}

// ---------------------------------------------------------------------------
// map

/// The job of one `map_async`: chunk results in input order, the first error.
pub(crate) struct MapJob<R> {
    /// The results of chunks `0..next`, in order (decoded straight into it).
    all: Vec<R>,
    /// The first chunk not yet in `all`.
    next: usize,
    /// Chunks that came in before their turn, one entry per chunk.
    chunks: Vec<Option<Vec<R>>>,
    /// Chunks not answered yet.
    remaining: usize,
    /// Items in all.
    items: usize,
    /// The first error, in completion order (Python keeps the first too).
    error: Option<Error>,
    /// Where the result goes.
    slot: Arc<Slot<Vec<R>>>,
    /// Run with the whole result.
    callback: Option<Callback<Vec<R>>>,
    /// Run with the first error, once.
    error_callback: Option<ErrorCallback>,
}

impl<R> MapJob<R> {
    pub(crate) fn new(
        chunks: usize,
        items: usize,
        slot: Arc<Slot<Vec<R>>>,
        callback: Option<Callback<Vec<R>>>,
        error_callback: Option<ErrorCallback>,
    ) -> Self {
        MapJob {
            all: Vec::new(),
            next: 0,
            chunks: (0..chunks).map(|_| None).collect(),
            remaining: chunks,
            items,
            error: None,
            slot,
            callback,
            error_callback,
        }
    }
}

impl<R: DeserializeOwned + Send + 'static> Job for MapJob<R> {
    fn complete(&mut self, index: u64, outcome: Result<Body<'_>>) -> bool {
        let Some(entry) = usize::try_from(index)
            .ok()
            .and_then(|i| self.chunks.get_mut(i))
        else {
            return self.remaining == 0;
        };
        self.remaining -= 1;
        let in_turn = usize::try_from(index).is_ok_and(|i| i == self.next);
        let decoded = match outcome {
            Ok(_) if self.error.is_some() => Ok(()),
            Ok(b) if in_turn => {
                if self.all.capacity() == 0 {
                    self.all.reserve_exact(self.items);
                }
                reduction::decode_extend(b.bytes, b.fds, &mut self.all)
            }
            Ok(b) => reduction::decode::<Vec<R>>(b.bytes, b.fds).map(|v| *entry = Some(v)),
            Err(e) => Err(e),
        };
        match decoded {
            Ok(()) if self.error.is_none() && in_turn => {
                self.next += 1;
                while let Some(early) = self.chunks.get_mut(self.next).and_then(Option::take) {
                    self.all.extend(early);
                    self.next += 1;
                }
            }
            Ok(()) => {}
            Err(e) => {
                if self.error.is_none() {
                    self.error = Some(e);
                    // Free the memory of the chunks already in: the call fails.
                    self.chunks.iter_mut().for_each(|c| *c = None);
                    self.all = Vec::new();
                }
            }
        }
        if self.remaining > 0 {
            return false;
        }
        if let Some(e) = self.error.take() {
            if let Some(cb) = self.error_callback.take() {
                run_callback(|| cb(&e));
            }
            self.slot.set(Err(e));
        } else {
            let all = std::mem::take(&mut self.all);
            if let Some(cb) = self.callback.take() {
                run_callback(|| cb(&all));
            }
            self.slot.set(Ok(all));
        }
        true
    }
}

impl<R> Drop for MapJob<R> {
    fn drop(&mut self) {
        self.slot.set(Err(Error::Closed));
    }
}

// ---------------------------------------------------------------------------
// imap

/// The state shared by an [`IMapIterator`], its feeder thread and its job.
pub(crate) struct IMapShared<R> {
    /// Everything below.
    pub(crate) state: Mutex<IMapState<R>>,
    /// The consumer's: signalled when a chunk arrives while it sleeps
    /// ([`IMapState::consumer_waits`]), when the input ends, or when the
    /// job is abandoned.
    pub(crate) cond: Condvar,
    /// The feeder's: signalled when the consumer has drained the read-ahead
    /// to the feeder's low-water mark ([`IMapState::feeder_waits`]), or when
    /// the iterator is dropped or the job abandoned.
    pub(crate) room: Condvar,
    /// Chunks answered (as `received`, outside the lock): what a consumer
    /// watches while it spins before it sleeps.
    pub(crate) arrivals: AtomicU64,
}

/// See [`IMapShared`].
pub(crate) struct IMapState<R> {
    /// Results in input order (`imap`) or completion order (`imap_unordered`).
    pub(crate) ordered: bool,
    /// Ordered: chunk index → result, for chunks that arrived early.
    pub(crate) by_index: BTreeMap<u64, Result<Vec<R>>>,
    /// Unordered: results as they arrived.
    pub(crate) arrived: VecDeque<Result<Vec<R>>>,
    /// Ordered: the chunk to hand out next.
    pub(crate) next_index: u64,
    /// Chunks submitted to the pool.
    pub(crate) submitted: u64,
    /// Chunks answered by the pool.
    pub(crate) received: u64,
    /// Chunks fully handed out to the user.
    pub(crate) consumed: u64,
    /// The feeder has read the whole input (or stopped).
    pub(crate) feeding_done: bool,
    /// Why the feeder stopped early (the pool was terminated).
    pub(crate) feed_error: Option<Error>,
    /// The input iterator panicked: re-raised in the consumer at its position.
    pub(crate) feed_panic: Option<Box<dyn std::any::Any + Send>>,
    /// The iterator was dropped: stop reading the input.
    pub(crate) dropped: bool,
    /// The pool dropped the job before all chunks came back.
    pub(crate) abandoned: bool,
    /// The consumer sleeps on `cond`: an arriving chunk must signal it.
    pub(crate) consumer_waits: bool,
    /// The feeder sleeps on `room` until no more than this many chunks are
    /// submitted and not consumed (a low-water mark, so that it wakes once
    /// per batch of chunks, not once per chunk).
    pub(crate) feeder_waits: Option<u64>,
    /// Chunks answered so far whose result was small (at most a ring
    /// record): the feeder reads further ahead only once a first window of
    /// them came back small (see `Feeder::window`).
    pub(crate) small_results: u64,
    /// A chunk or a chunk's result was bigger than a ring record: the feeder
    /// keeps to the narrow read-ahead from then on, so that the chunks held
    /// ahead and their results stay few when they are big.
    pub(crate) big_frames: bool,
}

impl<R> IMapShared<R> {
    pub(crate) fn new(ordered: bool) -> Arc<Self> {
        Arc::new(IMapShared {
            state: Mutex::new(IMapState {
                ordered,
                by_index: BTreeMap::new(),
                arrived: VecDeque::new(),
                next_index: 0,
                submitted: 0,
                received: 0,
                consumed: 0,
                feeding_done: false,
                feed_error: None,
                feed_panic: None,
                dropped: false,
                abandoned: false,
                consumer_waits: false,
                feeder_waits: None,
                small_results: 0,
                big_frames: false,
            }),
            cond: Condvar::new(),
            room: Condvar::new(),
            arrivals: AtomicU64::new(0),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, IMapState<R>> {
        self.state.lock().unpoison()
    }

    /// Wakes the consumer and the feeder whatever they wait for (the
    /// iterator was dropped, the job abandoned, the input ended).
    pub(crate) fn wake_all(&self) {
        self.cond.notify_all();
        self.room.notify_all();
    }
}

impl<R> IMapState<R> {
    /// No more chunk will come back.
    pub(crate) fn finished(&self) -> bool {
        (self.feeding_done || self.dropped) && self.received == self.submitted
    }
}

/// The job of one `imap`/`imap_unordered`.
pub(crate) struct IMapJob<R> {
    /// Shared with the iterator and the feeder.
    shared: Arc<IMapShared<R>>,
}

impl<R> IMapJob<R> {
    pub(crate) fn new(shared: Arc<IMapShared<R>>) -> Self {
        IMapJob { shared }
    }
}

impl<R: DeserializeOwned + Send + 'static> Job for IMapJob<R> {
    fn complete(&mut self, index: u64, outcome: Result<Body<'_>>) -> bool {
        let small = outcome
            .as_ref()
            .is_ok_and(|b| b.bytes.len() <= super::ring::RECORD_MAX);
        let result = outcome.and_then(|b| reduction::decode::<Vec<R>>(b.bytes, b.fds));
        let mut s = self.shared.lock();
        s.received += 1;
        if small {
            s.small_results += 1;
        } else if result.is_ok() {
            s.big_frames = true;
        }
        if !s.dropped {
            if s.ordered {
                s.by_index.insert(index, result);
            } else {
                s.arrived.push_back(result);
            }
        }
        let finished = s.finished();
        // Only the first chunk after the consumer fell asleep that lets it
        // go on signals it: in order, the chunk it waits for (one that came
        // early would only wake it to sleep again).
        let wake = s.consumer_waits && (!s.ordered || index == s.next_index);
        if wake {
            s.consumer_waits = false;
        }
        drop(s);
        // Released after the chunk is in place: a spinning consumer that
        // sees the count finds the chunk when it takes the lock.
        self.shared.arrivals.fetch_add(1, Ordering::Release);
        // Only a sleeping consumer needs the signal (it raised its flag
        // under the lock, so it cannot miss this chunk).
        if wake {
            self.shared.cond.notify_all();
        }
        finished
    }

    fn finished(&self) -> bool {
        self.shared.lock().finished()
    }

    fn cancelled(&self) -> bool {
        self.shared.lock().dropped
    }
}

impl<R> Drop for IMapJob<R> {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        if !s.finished() {
            s.abandoned = true;
            drop(s);
            self.shared.wake_all();
        }
    }
}

/// The results of [`Pool::imap`](crate::Pool::imap) and
/// [`Pool::imap_unordered`](crate::Pool::imap_unordered), as they come.
///
/// An `Iterator<Item = Result<R>>`: one `Ok` per input item, in input order for
/// `imap` and in completion order for `imap_unordered`. A chunk whose task
/// failed yields one `Err` in place of its items, and the iteration goes on.
/// If the input iterator panics, that panic is raised again in the thread
/// calling `next()` at the point where the input ended (chunk-aligned, as in
/// Python). Dropping the iterator makes the pool stop reading the input.
///
/// Python: `multiprocessing.pool.IMapIterator` / `IMapUnorderedIterator`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let pool = mp::Pool::new(2)?;
///     let squares: Vec<u64> = pool.imap(|x: u64| x * x, 0..5)?.collect::<mp::Result<_>>()?;
///     assert_eq!(squares, [0, 1, 4, 9, 16]);
///     Ok(())
/// }
/// ```
pub struct IMapIterator<R> {
    /// Shared with the feeder thread and the pool's job.
    shared: Arc<IMapShared<R>>,
    /// The pool, told when the iterator is dropped.
    pool: Weak<Inner>,
    /// The job's id in the pool.
    job: u64,
    /// Whether spinning for the next chunk pays (per iterator: one slow
    /// input says nothing about another imap's chunks).
    spin: SpinGate,
    /// Items of the chunk being handed out: this handle's alone, so an item
    /// costs no lock of the shared state (a `Mutex` only so that the handle
    /// stays `Sync` whatever `R` is; it is reached by `get_mut`, never locked).
    current: Mutex<std::vec::IntoIter<R>>,
    /// The items are produced by the pool, not owned by this handle.
    _marker: PhantomData<fn() -> R>,
}

impl<R> IMapIterator<R> {
    pub(crate) fn new(shared: Arc<IMapShared<R>>, pool: Weak<Inner>, job: u64) -> Self {
        IMapIterator {
            shared,
            pool,
            job,
            spin: SpinGate::tolerant(),
            current: Mutex::new(Vec::new().into_iter()),
            _marker: PhantomData,
        }
    }

    /// Like `next()`, but waits at most `timeout` for the next result; a timeout
    /// gives `Some(Err(Error::Timeout))` and the iteration can go on.
    ///
    /// Python: `IMapIterator.next(timeout)`.
    ///
    /// # Errors
    ///
    /// `Some(Err(Error::Timeout))` when nothing arrived in time; the other
    /// errors as for `next()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// use std::time::Duration;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let pool = mp::Pool::new(1)?;
    ///     let mut it = pool.imap(|ms: u64| { std::thread::sleep(Duration::from_millis(ms)); ms }, [300])?;
    ///     assert!(matches!(it.next_timeout(Duration::from_millis(10)), Some(Err(mp::Error::Timeout))));
    ///     assert_eq!(it.next().transpose()?, Some(300));
    ///     assert!(it.next().is_none());
    ///     Ok(())
    /// }
    /// ```
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R>> {
        self.next_deadline(deadline_after(timeout))
    }

    fn next_deadline(&mut self, deadline: Option<Instant>) -> Option<Result<R>> {
        if let Some(v) = self.current.get_mut().unpoison().next() {
            return Some(Ok(v));
        }
        // Chunks of short tasks come back every few microseconds: spinning
        // that long on the arrival count costs this thread no sleep and the
        // handler no cross-core wake per chunk.
        let mut spun = false;
        let mut s = self.shared.lock();
        loop {
            let next = if s.ordered {
                let i = s.next_index;
                s.by_index.remove(&i).inspect(|_| s.next_index += 1)
            } else {
                s.arrived.pop_front()
            };
            if let Some(chunk) = next {
                s.consumed += 1;
                // The feeder sleeps until the read-ahead is down to its mark.
                if s.feeder_waits
                    .is_some_and(|low| s.submitted - s.consumed <= low)
                {
                    // Once: the feeder raises it again if it sleeps again.
                    s.feeder_waits = None;
                    self.shared.room.notify_all();
                }
                match chunk {
                    Ok(items) => {
                        let current = self.current.get_mut().unpoison();
                        *current = items.into_iter();
                        match current.next() {
                            Some(v) => return Some(Ok(v)),
                            // An empty chunk: the next one.
                            None => continue,
                        }
                    }
                    Err(e) => return Some(Err(e)),
                }
            }
            if s.consumed == s.submitted && s.feeding_done {
                if let Some(e) = s.feed_error.take() {
                    return Some(Err(e));
                }
                if let Some(p) = s.feed_panic.take() {
                    drop(s);
                    std::panic::resume_unwind(p);
                }
                return None;
            }
            if s.abandoned {
                // The pool went away with chunks unanswered.
                s.abandoned = false;
                s.feeding_done = true;
                s.submitted = s.consumed;
                return Some(Err(Error::Closed));
            }
            // The first chunk waits for the feeder to start and the pipeline
            // to fill: no spin, so that wait does not turn the spin off.
            if !spun && s.received > 0 {
                spun = true;
                let seen = self.shared.arrivals.load(Ordering::Acquire);
                drop(s);
                self.spin_for_arrival(seen, deadline);
                s = self.shared.lock();
                continue;
            }
            s.consumer_waits = true;
            s = match deadline {
                None => self.shared.cond.wait(s).unpoison(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        s.consumer_waits = false;
                        return Some(Err(Error::Timeout));
                    }
                    self.shared.cond.wait_timeout(s, d - now).unpoison().0
                }
            };
            s.consumer_waits = false;
        }
    }

    /// Watches the arrival count while it still reads `seen`, for the spin
    /// budget (not past `deadline`).
    fn spin_for_arrival(&self, seen: u64, deadline: Option<Instant>) {
        let spin = &self.spin;
        let budget = spin.budget();
        if budget.is_zero() {
            return;
        }
        let until = Instant::now() + budget;
        let until = deadline.map_or(until, |d| d.min(until));
        let mut rounds = 0u32;
        loop {
            for _ in 0..64 {
                if self.shared.arrivals.load(Ordering::Acquire) != seen {
                    spin.record(true);
                    return;
                }
                std::hint::spin_loop();
            }
            // The chunk comes from the pool's scheduler, which may be
            // waiting for this CPU on a loaded machine.
            rounds += 1;
            if rounds % 4 == 0 {
                std::thread::yield_now();
            }
            if Instant::now() >= until {
                // A wait cut short by its deadline says nothing about the spin.
                if deadline.is_none_or(|d| d > until) {
                    spin.record(false);
                }
                return;
            }
        }
    }
}

impl<R> Iterator for IMapIterator<R> {
    type Item = Result<R>;

    /// Waits for the next result.
    ///
    /// Python: `next(it)`.
    fn next(&mut self) -> Option<Result<R>> {
        self.next_deadline(None)
    }
}

impl<R> Drop for IMapIterator<R> {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.dropped = true;
        s.by_index.clear();
        s.arrived.clear();
        drop(s);
        self.shared.wake_all();
        // The job may be finished now: let the pool forget it (close() waits
        // for it otherwise).
        if let Some(pool) = self.pool.upgrade() {
            pool.tick(self.job);
        }
    }
}

impl<R> fmt::Debug for IMapIterator<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.shared.lock();
        f.debug_struct("IMapIterator")
            .field("ordered", &s.ordered)
            .field("submitted_chunks", &s.submitted)
            .field("received_chunks", &s.received)
            .field("input_done", &s.feeding_done)
            .finish()
    }
}
