//! `Pool` of worker threads: Python's `multiprocessing.pool.ThreadPool`.
//!
//! One queue of tasks under a std `Mutex`, `processes` worker threads taking
//! from it. A task is a closure that runs the user's function under
//! `catch_unwind` and delivers to its result, so a panic is that task's
//! [`Error::Remote`] and the worker goes on. A task's result is claimed once:
//! by the task, or first by `terminate()` ([`Error::Closed`]) or a timeout
//! ([`Error::Timeout`]); a thread cannot be killed, so a timed-out task's
//! thread is retired once it returns and a fresh worker takes its place.

use crate::util::Unpoison;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{QUIET, install_panic_hook, next_name, run_caught, wait_until};
use crate::error::{Error, Result};
use crate::util::deadline_after;

/// CPython's default: `ceil(len / (4 * processes))`.
fn default_chunksize(len: usize, processes: usize) -> usize {
    len.div_ceil(4 * processes.max(1)).max(1)
}

/// Fails a task's result with `e` unless it already has one; true if it did.
type Fail = Arc<dyn Fn(Error) -> bool + Send + Sync>;

struct Task {
    run: Box<dyn FnOnce() + Send>,
    fail: Fail,
    timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Run,
    Close,
    Terminate,
}

struct State {
    mode: Mode,
    queue: VecDeque<(u64, Task)>,
    /// The tasks running now, to fail on `terminate()`.
    running: HashMap<u64, Fail>,
    next_id: u64,
    /// Worker threads alive.
    workers: usize,
}

struct Inner {
    state: Mutex<State>,
    work: Condvar,
    exited: Condvar,
    processes: usize,
    maxtasks: Option<usize>,
    task_timeout: Option<Duration>,
    init: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl Inner {
    fn submit(&self, task: Task) -> Result<()> {
        let mut s = self.state.lock().unpoison();
        if s.mode != Mode::Run {
            return Err(Error::Closed);
        }
        let id = s.next_id;
        s.next_id += 1;
        s.queue.push_back((id, task));
        drop(s);
        self.work.notify_one();
        Ok(())
    }

    fn check_open(&self) -> Result<()> {
        if self.state.lock().unpoison().mode != Mode::Run {
            return Err(Error::Closed);
        }
        Ok(())
    }
}

fn start_worker(inner: &Arc<Inner>) -> Result<()> {
    inner.state.lock().unpoison().workers += 1;
    let theirs = inner.clone();
    let spawned = std::thread::Builder::new()
        .name(next_name("ThreadPoolWorker"))
        .spawn(move || worker(&theirs));
    if let Err(e) = spawned {
        inner.state.lock().unpoison().workers -= 1;
        return Err(Error::Spawn(format!("could not start a thread: {e}")));
    }
    Ok(())
}

/// A worker thread's loop: take a task, run it, until the pool closes (and
/// its queue is empty) or terminates, or this worker is retired.
fn worker(inner: &Arc<Inner>) {
    QUIET.with(|q| q.set(true));
    MY_POOL.with(|p| p.set(Arc::as_ptr(inner) as usize));
    if let Some(init) = &inner.init {
        let name = super::current_process().name().to_string();
        if let Err(e) = run_caught(&name, || init()) {
            eprintln!("pool initializer failed: {e}");
        }
    }
    let mut done = 0usize;
    loop {
        let g = inner.state.lock().unpoison();
        let (mut g, _) = wait_until(&inner.work, g, None, |s| {
            s.mode != Mode::Run || !s.queue.is_empty()
        });
        if g.mode == Mode::Terminate {
            break;
        }
        let Some((id, task)) = g.queue.pop_front() else {
            break; // closed and drained
        };
        g.running.insert(id, task.fail.clone());
        drop(g);
        run_task(inner, task);
        let mut g = inner.state.lock().unpoison();
        g.running.remove(&id);
        if RETIRE_AFTER_TASK.with(|r| r.replace(false)) {
            // Its task timed out or was cancelled while it ran, and a fresh
            // worker took this one's place then.
            break;
        }
        drop(g);
        done += 1;
        if inner.maxtasks.is_some_and(|n| done >= n) {
            // Python's maxtasksperchild: a fresh worker takes over.
            if start_worker(inner).is_err() {
                continue; // no new thread: this one goes on
            }
            break;
        }
    }
    let mut g = inner.state.lock().unpoison();
    g.workers -= 1;
    drop(g);
    inner.exited.notify_all();
}

thread_local! {
    /// On a worker thread: the address of its pool's `Inner` (an identity
    /// only, never dereferenced), so that `join()` from it is refused.
    static MY_POOL: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// Set while a task runs that timed out or whose future was cancelled,
    /// and whose replacement already started: this worker exits once the
    /// task returns.
    static RETIRE_AFTER_TASK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Called on a worker thread: it exits when its current task returns (a
/// replacement was started: by the task timeout's watchdog, or by the
/// executor's `cancel_running`).
pub(super) fn retire_current_worker() {
    RETIRE_AFTER_TASK.with(|r| r.set(true));
}

/// Runs one task, with a watchdog thread when it has a time limit.
fn run_task(inner: &Arc<Inner>, task: Task) {
    let Some(limit) = task.timeout.or(inner.task_timeout) else {
        (task.run)();
        return;
    };
    let finished = Arc::new((Mutex::new(false), Condvar::new()));
    let (f2, fail, pool) = (finished.clone(), task.fail.clone(), Arc::downgrade(inner));
    let deadline = deadline_after(limit);
    let watchdog = std::thread::Builder::new()
        .name("ThreadPoolWatchdog".into())
        .spawn(move || watch(&f2, deadline, &fail, &pool));
    (task.run)();
    *finished.0.lock().unpoison() = true;
    finished.1.notify_all();
    if let Ok(w) = watchdog {
        if w.join().unwrap_or(false) {
            // Timed out and replaced: this thread, not whichever worker
            // happens to finish a task next, is the one that goes.
            retire_current_worker();
        }
    }
}

/// Fails the task with [`Error::Timeout`] if it runs past `deadline`, and
/// starts a worker in place of the busy one; true if it did (the busy one
/// then retires when its task returns).
fn watch(
    finished: &(Mutex<bool>, Condvar),
    deadline: Option<Instant>,
    fail: &Fail,
    pool: &Weak<Inner>,
) -> bool {
    let done = wait_until(&finished.1, finished.0.lock().unpoison(), deadline, |f| *f).1;
    if done || !fail(Error::Timeout) {
        return false;
    }
    let Some(inner) = pool.upgrade() else {
        return false;
    };
    if inner.state.lock().unpoison().mode == Mode::Terminate {
        return false;
    }
    start_worker(&inner).is_ok()
}

/// A callback on success.
type Callback<R> = Box<dyn FnOnce(&R) + Send>;
/// A callback on failure.
type ErrorCallback = Box<dyn FnOnce(&Error) + Send>;

enum SlotState<R> {
    Pending,
    Ready(Result<R>),
    Taken,
}

/// Where one result lands: claimed once, then filled.
struct Slot<R> {
    claimed: AtomicBool,
    state: Mutex<SlotState<R>>,
    ready: Condvar,
    callbacks: Mutex<(Option<Callback<R>>, Option<ErrorCallback>)>,
    /// Tasks awaiting the result; locked inside `state`.
    wakers: Mutex<Vec<Waker>>,
}

impl<R> Slot<R> {
    fn new(callback: Option<Callback<R>>, error_callback: Option<ErrorCallback>) -> Arc<Self> {
        Arc::new(Slot {
            claimed: AtomicBool::new(false),
            state: Mutex::new(SlotState::Pending),
            ready: Condvar::new(),
            callbacks: Mutex::new((callback, error_callback)),
            wakers: Mutex::new(Vec::new()),
        })
    }

    /// Delivers `result` unless another delivery came first; runs the
    /// matching callback before `get()` can see it. True if delivered.
    fn deliver(&self, result: Result<R>) -> bool {
        if self.claimed.swap(true, Ordering::AcqRel) {
            return false;
        }
        let (cb, ecb) = std::mem::take(&mut *self.callbacks.lock().unpoison());
        let ran = match (&result, cb, ecb) {
            (Ok(v), Some(cb), _) => catch_unwind(AssertUnwindSafe(|| cb(v))),
            (Err(e), _, Some(ecb)) => catch_unwind(AssertUnwindSafe(|| ecb(e))),
            _ => Ok(()),
        };
        if ran.is_err() {
            eprintln!("a pool callback panicked; the panic is ignored");
        }
        let mut s = self.state.lock().unpoison();
        *s = SlotState::Ready(result);
        // Taken under the state lock: a poll after this sees the result.
        let wakers = std::mem::take(&mut *self.wakers.lock().unpoison());
        drop(s);
        self.ready.notify_all();
        wakers.into_iter().for_each(Waker::wake);
        true
    }

    fn wait(&self, deadline: Option<Instant>) -> Option<std::sync::MutexGuard<'_, SlotState<R>>> {
        let (g, ok) = wait_until(&self.ready, self.state.lock().unpoison(), deadline, |s| {
            !matches!(s, SlotState::Pending)
        });
        ok.then_some(g)
    }
}

/// The result of an asynchronous call: [`Pool::apply_async`], [`Pool::map_async`].
///
/// Python: `multiprocessing.pool.AsyncResult`.
pub struct AsyncResult<R> {
    slot: Arc<Slot<R>>,
}

impl<R> AsyncResult<R> {
    /// Waits for the result and takes it.
    ///
    /// # Errors
    ///
    /// The task's error ([`Error::Remote`] for a panic, [`Error::Closed`] after
    /// `terminate()`, [`Error::Timeout`] past a task timeout); [`Error::Value`]
    /// when an earlier `get()` took the result already (it is moved, not
    /// copied).
    pub fn get(&self) -> Result<R> {
        self.get_deadline(None)
    }

    /// [`get`](AsyncResult::get), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if not ready in time, else as [`get`](AsyncResult::get).
    pub fn get_timeout(&self, timeout: Duration) -> Result<R> {
        self.get_deadline(deadline_after(timeout))
    }

    fn get_deadline(&self, deadline: Option<Instant>) -> Result<R> {
        let mut s = self.slot.wait(deadline).ok_or(Error::Timeout)?;
        take_ready(&mut s)
    }

    /// Waits until the result is ready.
    pub fn wait(&self) {
        let _ = self.slot.wait(None);
    }

    /// Waits at most `timeout`; true if ready.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.slot.wait(deadline_after(timeout)).is_some()
    }

    /// True once the result is ready.
    pub fn ready(&self) -> bool {
        !matches!(*self.slot.state.lock().unpoison(), SlotState::Pending)
    }

    /// Whether the call succeeded.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] if it is not ready yet.
    pub fn successful(&self) -> Result<bool> {
        match &*self.slot.state.lock().unpoison() {
            SlotState::Pending => Err(Error::value("the result is not ready; wait() for it first")),
            SlotState::Ready(r) => Ok(r.is_ok()),
            SlotState::Taken => Ok(true),
        }
    }
}

/// Takes a set result out of `s`: the value moves out (a second take is
/// [`Error::Value`]); an error stays and a copy is handed out.
fn take_ready<R>(s: &mut SlotState<R>) -> Result<R> {
    match std::mem::replace(s, SlotState::Taken) {
        SlotState::Ready(Ok(v)) => Ok(v),
        SlotState::Ready(Err(e)) => {
            let copy = e.duplicate();
            *s = SlotState::Ready(Err(e));
            Err(copy)
        }
        SlotState::Taken => Err(Error::value(
            "the result was already taken by an earlier get()",
        )),
        SlotState::Pending => unreachable!("take_ready is called only once the slot is set"),
    }
}

/// `.await` gives what [`get`](AsyncResult::get) gives; the worker thread
/// that delivers the result wakes the awaiting task (any runtime).
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// use std::future::Future;
/// use std::pin::pin;
/// use std::task::{Context, Poll, Waker};
/// let pool = mp::Pool::new(1)?;
/// let mut r = pin!(pool.apply_async(|x: u8| x + 1, 1)?);
/// r.as_ref().get_ref().wait(); // ready: one poll takes it
/// let mut cx = Context::from_waker(Waker::noop());
/// assert!(matches!(r.as_mut().poll(&mut cx), Poll::Ready(Ok(2))));
/// # Ok::<(), mp::Error>(())
/// ```
impl<R> std::future::Future for AsyncResult<R> {
    type Output = Result<R>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R>> {
        let mut s = self.slot.state.lock().unpoison();
        if matches!(*s, SlotState::Pending) {
            let mut w = self.slot.wakers.lock().unpoison();
            w.retain(|k| !k.will_wake(cx.waker()));
            w.push(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(take_ready(&mut s))
    }
}

impl<R> fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.ready())
            .finish()
    }
}

/// The parts of one `map`: chunk results in order, and how many are missing.
struct MapJob<R> {
    parts: Mutex<(Vec<Option<Vec<R>>>, usize)>,
    slot: Arc<Slot<Vec<R>>>,
}

impl<R> MapJob<R> {
    fn chunk_done(&self, index: usize, result: Result<Vec<R>>) {
        match result {
            Err(e) => {
                self.slot.deliver(Err(e));
            }
            Ok(v) => {
                let mut p = self.parts.lock().unpoison();
                p.0[index] = Some(v);
                p.1 -= 1;
                if p.1 == 0 {
                    let all = p.0.drain(..).flatten().flatten().collect();
                    drop(p);
                    self.slot.deliver(Ok(all));
                }
            }
        }
    }
}

/// What an `imap` shares between its feeder, its chunks and its iterator.
struct IMapState<R> {
    ordered: bool,
    by_index: BTreeMap<usize, Result<Vec<R>>>,
    arrived: VecDeque<Result<Vec<R>>>,
    current: std::vec::IntoIter<R>,
    next_index: usize,
    submitted: usize,
    consumed: usize,
    feeding_done: bool,
    feed_error: Option<Error>,
    feed_panic: Option<Box<dyn std::any::Any + Send>>,
    dropped: bool,
}

struct IMapShared<R> {
    state: Mutex<IMapState<R>>,
    cond: Condvar,
}

impl<R> IMapShared<R> {
    fn chunk_done(&self, index: usize, result: Result<Vec<R>>) {
        let mut s = self.state.lock().unpoison();
        if s.dropped {
            return;
        }
        if s.ordered {
            s.by_index.insert(index, result);
        } else {
            s.arrived.push_back(result);
        }
        drop(s);
        self.cond.notify_all();
    }
}

/// The results of [`Pool::imap`] and [`Pool::imap_unordered`], as they come.
///
/// Python: `multiprocessing.pool.IMapIterator`.
pub struct IMapIterator<R> {
    shared: Arc<IMapShared<R>>,
}

impl<R> IMapIterator<R> {
    /// The next result, waiting at most `timeout`: `Some(Err(Error::Timeout))`
    /// if none came in time (the iterator goes on), `None` at the end.
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R>> {
        self.next_deadline(deadline_after(timeout))
    }

    fn next_deadline(&mut self, deadline: Option<Instant>) -> Option<Result<R>> {
        let shared = &*self.shared;
        let mut s = shared.state.lock().unpoison();
        loop {
            if let Some(v) = s.current.next() {
                return Some(Ok(v));
            }
            let next = if s.ordered {
                let i = s.next_index;
                s.by_index.remove(&i).inspect(|_| s.next_index += 1)
            } else {
                s.arrived.pop_front()
            };
            if let Some(chunk) = next {
                s.consumed += 1;
                shared.cond.notify_all();
                match chunk {
                    Ok(items) => {
                        s.current = items.into_iter();
                        continue;
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
            s = match deadline {
                None => shared.cond.wait(s).unpoison(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Some(Err(Error::Timeout));
                    }
                    shared.cond.wait_timeout(s, d - now).unpoison().0
                }
            };
        }
    }
}

impl<R> Iterator for IMapIterator<R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        self.next_deadline(None)
    }
}

impl<R> Drop for IMapIterator<R> {
    fn drop(&mut self) {
        let mut s = self.shared.state.lock().unpoison();
        s.dropped = true;
        s.by_index.clear();
        s.arrived.clear();
        drop(s);
        self.shared.cond.notify_all();
    }
}

impl<R> fmt::Debug for IMapIterator<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.shared.state.lock().unpoison();
        f.debug_struct("IMapIterator")
            .field("ordered", &s.ordered)
            .field("submitted", &s.submitted)
            .field("consumed", &s.consumed)
            .finish()
    }
}

/// Configures a thread [`Pool`]: worker count, initializer,
/// `maxtasksperchild`, task timeout.
///
/// Python: the arguments of `ThreadPool(...)`.
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// let pool = mp::Pool::builder().processes(2).maxtasksperchild(1).build()?;
/// assert_eq!(pool.map(|x: u8| x + 1, 0..4)?, [1, 2, 3, 4]);
/// # Ok::<(), mp::Error>(())
/// ```
#[derive(Default)]
pub struct PoolBuilder {
    processes: Option<usize>,
    init: Option<Arc<dyn Fn() + Send + Sync>>,
    init_error: Option<Error>,
    maxtasks: Option<usize>,
    task_timeout: Option<Duration>,
}

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("processes", &self.processes)
            .field("initializer", &self.init.is_some())
            .field("maxtasksperchild", &self.maxtasks)
            .field("task_timeout", &self.task_timeout)
            .finish()
    }
}

impl PoolBuilder {
    /// The number of worker threads (default: [`crate::cpu_count`]).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// Runs `f(arg)` at the start of each worker thread. The argument is
    /// encoded once and decoded for each worker, as the process version does
    /// (so it need not be `Clone`); `f` may capture.
    pub fn initializer<F, A, R>(mut self, f: F, arg: A) -> Self
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Serialize + DeserializeOwned,
    {
        match postcard::to_stdvec(&arg) {
            Ok(bytes) => {
                self.init = Some(Arc::new(move || {
                    // It encoded, so it decodes: same type, same bytes.
                    if let Ok(a) = postcard::from_bytes::<A>(&bytes) {
                        drop(f(a));
                    }
                }));
            }
            Err(e) => self.init_error = Some(Error::encode(e)),
        }
        self
    }

    /// Each worker thread runs at most `n` tasks, then a fresh one replaces it.
    pub fn maxtasksperchild(mut self, n: usize) -> Self {
        self.maxtasks = Some(n);
        self
    }

    /// A task may run at most `timeout`; past it `get()` gives
    /// [`Error::Timeout`] and a fresh worker takes the busy one's place (the
    /// busy thread cannot be killed: it is retired when its task returns, and
    /// [`Pool::join`] waits for that).
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.task_timeout = Some(timeout);
        self
    }

    /// Starts the worker threads.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for 0 workers or a `maxtasksperchild` of 0,
    /// [`Error::Encode`] for an initializer argument that does not encode,
    /// [`Error::Spawn`] when the OS refuses a thread.
    pub fn build(self) -> Result<Pool> {
        self.build_threads()
    }

    /// The thread twin of [`mp::PoolBuilder::cluster`](crate::PoolBuilder::cluster):
    /// threads do not leave this process, so this is [`build`](Self::build),
    /// whatever launcher started the program (a program written for a
    /// cluster runs unchanged on threads).
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::dummy as mp;
    /// let pool = mp::Pool::builder().processes(2).cluster().unwrap();
    /// assert_eq!(pool.map(|x: u32| x + 1, [1, 2]).unwrap(), [2, 3]);
    /// ```
    pub fn cluster(self) -> Result<Pool> {
        self.build_threads()
    }

    fn build_threads(self) -> Result<Pool> {
        let processes = self.processes.unwrap_or_else(crate::cpu_count);
        if processes == 0 {
            return Err(Error::value("number of processes must be at least 1"));
        }
        if self.maxtasks == Some(0) {
            return Err(Error::value(
                "maxtasksperchild must be a positive number or None",
            ));
        }
        if let Some(e) = self.init_error {
            return Err(e);
        }
        install_panic_hook();
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                mode: Mode::Run,
                queue: VecDeque::new(),
                running: HashMap::new(),
                next_id: 0,
                workers: 0,
            }),
            work: Condvar::new(),
            exited: Condvar::new(),
            processes,
            maxtasks: self.maxtasks,
            task_timeout: self.task_timeout,
            init: self.init,
        });
        let pool = Pool { inner };
        for _ in 0..processes {
            // On error, dropping `pool` stops the workers started so far.
            start_worker(&pool.inner)?;
        }
        Ok(pool)
    }
}

/// A pool of worker threads with [`crate::Pool`]'s API.
///
/// Functions may capture, and arguments and results need only be `Send`.
/// A task that panics gives its [`Error::Remote`]; the worker goes on.
///
/// Python: `multiprocessing.pool.ThreadPool` (`multiprocessing.dummy.Pool`).
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// let pool = mp::Pool::new(2)?;
/// let offset = 10; // captured: a thread shares memory
/// assert_eq!(pool.map(move |x: i32| x + offset, 1..=3)?, [11, 12, 13]);
/// let r = pool.apply(|_: ()| -> i32 { panic!("boom") }, ());
/// assert!(matches!(r, Err(mp::Error::Remote { message, .. }) if message == "boom"));
/// assert_eq!(pool.apply(|x: i32| x * 2, 4)?, 8);
/// pool.close();
/// pool.join()?;
/// # Ok::<(), mp::Error>(())
/// ```
pub struct Pool {
    inner: Arc<Inner>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.inner.state.lock().unpoison();
        f.debug_struct("Pool")
            .field("processes", &self.inner.processes)
            .field("state", &s.mode)
            .field("queued", &s.queue.len())
            .finish()
    }
}

impl Pool {
    /// A pool of `processes` worker threads.
    ///
    /// # Errors
    ///
    /// As [`PoolBuilder::build`].
    pub fn new(processes: usize) -> Result<Pool> {
        Pool::builder().processes(processes).build()
    }

    /// A builder, for an initializer, `maxtasksperchild` or a task timeout.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The number of workers.
    pub fn processes(&self) -> usize {
        self.inner.processes
    }

    /// The pid of each worker: all this process's, since they are threads.
    pub fn worker_pids(&self) -> Vec<u32> {
        let n = self.inner.state.lock().unpoison().workers;
        vec![std::process::id(); n]
    }

    fn submit_apply<F, A, R>(
        &self,
        f: F,
        arg: A,
        callback: Option<Callback<R>>,
        error_callback: Option<ErrorCallback>,
        timeout: Option<Duration>,
    ) -> Result<AsyncResult<R>>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Send + 'static,
        R: Send + 'static,
    {
        self.inner.check_open()?;
        let slot = Slot::new(callback, error_callback);
        let (mine, theirs) = (slot.clone(), slot.clone());
        let task = Task {
            run: Box::new(move || {
                let name = super::current_process().name().to_string();
                mine.deliver(run_caught(&name, || f(arg)));
            }),
            fail: Arc::new(move |e| theirs.deliver(Err(e))),
            timeout,
        };
        self.inner.submit(task)?;
        Ok(AsyncResult { slot })
    }

    /// Queues a task built elsewhere in `dummy` (the executor's futures):
    /// `run` runs on a worker; `fail` delivers an error instead (on
    /// `terminate()` or past `timeout`) and says whether it did.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `close()`/`terminate()`.
    pub(super) fn submit_task(
        &self,
        run: Box<dyn FnOnce() + Send>,
        fail: Arc<dyn Fn(Error) -> bool + Send + Sync>,
        timeout: Option<Duration>,
    ) -> Result<()> {
        self.inner.submit(Task { run, fail, timeout })
    }

    /// Starts one more worker, in place of one busy with a task nobody waits
    /// for any more (it retires when that task returns). Nothing after
    /// `terminate()`.
    pub(super) fn add_worker(&self) -> Result<()> {
        if self.inner.state.lock().unpoison().mode == Mode::Terminate {
            return Ok(());
        }
        start_worker(&self.inner)
    }

    /// Runs `f(arg)` on a worker and waits for the result.
    ///
    /// Python: `Pool.apply(f, args)`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `close()`/`terminate()`, [`Error::Remote`] if
    /// `f` panicked.
    pub fn apply<F, A, R>(&self, f: F, arg: A) -> Result<R>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
    {
        self.submit_apply(f, arg, None, None, None)?.get()
    }

    /// Submits `f(arg)` and returns at once.
    ///
    /// Python: `Pool.apply_async(f, args)`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `close()`/`terminate()`; the task's own errors
    /// come from [`AsyncResult::get`].
    pub fn apply_async<F, A, R>(&self, f: F, arg: A) -> Result<AsyncResult<R>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
    {
        self.submit_apply(f, arg, None, None, None)
    }

    /// [`apply_async`](Self::apply_async) with callbacks; they run on the
    /// worker thread before `get()`/`wait()` return. A panic in a callback is
    /// printed and ignored.
    ///
    /// Python: `Pool.apply_async(f, args, callback=cb, error_callback=ecb)`.
    ///
    /// # Errors
    ///
    /// As [`apply_async`](Self::apply_async); no callback runs then.
    pub fn apply_async_with<F, A, R, C, E>(
        &self,
        f: F,
        arg: A,
        callback: C,
        error_callback: E,
    ) -> Result<AsyncResult<R>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
        C: FnOnce(&R) + Send + 'static,
        E: FnOnce(&Error) + Send + 'static,
    {
        self.submit_apply(
            f,
            arg,
            Some(Box::new(callback)),
            Some(Box::new(error_callback)),
            None,
        )
    }

    /// [`apply_async`](Self::apply_async) with a time limit: past it `get()`
    /// gives [`Error::Timeout`] and a fresh worker takes over (the busy
    /// thread runs on until its function returns: a thread cannot be killed).
    ///
    /// # Errors
    ///
    /// As [`apply_async`](Self::apply_async).
    pub fn apply_async_timeout<F, A, R>(
        &self,
        f: F,
        arg: A,
        timeout: Duration,
    ) -> Result<AsyncResult<R>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
    {
        self.submit_apply(f, arg, None, None, Some(timeout))
    }

    fn submit_map<F, A, R, I>(
        &self,
        f: F,
        items: I,
        chunksize: Option<usize>,
        callback: Option<Callback<Vec<R>>>,
        error_callback: Option<ErrorCallback>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.inner.check_open()?;
        if chunksize == Some(0) {
            return Err(Error::value("chunksize must be at least 1"));
        }
        let items: Vec<A> = items.into_iter().collect();
        let slot = Slot::new(callback, error_callback);
        if items.is_empty() {
            slot.deliver(Ok(Vec::new()));
            return Ok(AsyncResult { slot });
        }
        let chunksize =
            chunksize.unwrap_or_else(|| default_chunksize(items.len(), self.inner.processes));
        let chunks = items.len().div_ceil(chunksize);
        let job = Arc::new(MapJob {
            parts: Mutex::new(((0..chunks).map(|_| None).collect(), chunks)),
            slot: slot.clone(),
        });
        let f = Arc::new(f);
        let mut items = items.into_iter();
        for index in 0..chunks {
            let chunk: Vec<A> = items.by_ref().take(chunksize).collect();
            let (f, mine, theirs) = (f.clone(), job.clone(), job.clone());
            let task = Task {
                run: Box::new(move || {
                    let name = super::current_process().name().to_string();
                    let r = run_caught(&name, || chunk.into_iter().map(|a| f(a)).collect());
                    mine.chunk_done(index, r);
                }),
                fail: Arc::new(move |e| theirs.slot.deliver(Err(e))),
                timeout: None,
            };
            if let Err(e) = self.inner.submit(task) {
                slot.deliver(Err(e.duplicate()));
                return Err(e);
            }
        }
        Ok(AsyncResult { slot })
    }

    /// Applies `f` to every item, in chunks, and returns the results in order.
    ///
    /// Python: `Pool.map(f, iterable)`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `close()`/`terminate()`; the first chunk's
    /// error ([`Error::Remote`] for a panic).
    pub fn map<F, A, R, I>(&self, f: F, items: I) -> Result<Vec<R>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.submit_map(f, items, None, None, None)?.get()
    }

    /// [`map`](Self::map) with `chunksize` items per task.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for a chunksize of 0, else as [`map`](Self::map).
    pub fn map_with_chunksize<F, A, R, I>(&self, f: F, items: I, chunksize: usize) -> Result<Vec<R>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.submit_map(f, items, Some(chunksize), None, None)?
            .get()
    }

    /// [`map`](Self::map) without waiting.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `close()`/`terminate()`.
    pub fn map_async<F, A, R, I>(&self, f: F, items: I) -> Result<AsyncResult<Vec<R>>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.submit_map(f, items, None, None, None)
    }

    /// [`map_async`](Self::map_async) with `chunksize` items per task.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for a chunksize of 0, else as [`map_async`](Self::map_async).
    pub fn map_async_with_chunksize<F, A, R, I>(
        &self,
        f: F,
        items: I,
        chunksize: usize,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.submit_map(f, items, Some(chunksize), None, None)
    }

    /// [`map_async`](Self::map_async) with callbacks.
    ///
    /// # Errors
    ///
    /// As [`map_async`](Self::map_async).
    pub fn map_async_with<F, A, R, I, C, E>(
        &self,
        f: F,
        items: I,
        callback: C,
        error_callback: E,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
        C: FnOnce(&Vec<R>) + Send + 'static,
        E: FnOnce(&Error) + Send + 'static,
    {
        self.submit_map(
            f,
            items,
            None,
            Some(Box::new(callback)),
            Some(Box::new(error_callback)),
        )
    }

    /// Python's `starmap`: with tuple arguments it is [`map`](Self::map).
    ///
    /// # Errors
    ///
    /// As [`map`](Self::map).
    pub fn starmap<F, A, R, I>(&self, f: F, items: I) -> Result<Vec<R>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.map(f, items)
    }

    /// [`starmap`](Self::starmap) with `chunksize` items per task.
    ///
    /// # Errors
    ///
    /// As [`map_with_chunksize`](Self::map_with_chunksize).
    pub fn starmap_with_chunksize<F, A, R, I>(
        &self,
        f: F,
        items: I,
        chunksize: usize,
    ) -> Result<Vec<R>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.map_with_chunksize(f, items, chunksize)
    }

    /// [`starmap`](Self::starmap) without waiting.
    ///
    /// # Errors
    ///
    /// As [`map_async`](Self::map_async).
    pub fn starmap_async<F, A, R, I>(&self, f: F, items: I) -> Result<AsyncResult<Vec<R>>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.map_async(f, items)
    }

    /// [`starmap_async`](Self::starmap_async) with `chunksize` items per task.
    ///
    /// # Errors
    ///
    /// As [`map_async_with_chunksize`](Self::map_async_with_chunksize).
    pub fn starmap_async_with_chunksize<F, A, R, I>(
        &self,
        f: F,
        items: I,
        chunksize: usize,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.map_async_with_chunksize(f, items, chunksize)
    }

    /// The `imap` family; `window`: chunks read ahead of the consumer, at
    /// most (`None`: 4 per worker). The executor's `map` gives its `buffersize`.
    pub(super) fn submit_imap<F, A, R, I>(
        &self,
        f: F,
        items: I,
        chunksize: usize,
        ordered: bool,
        window: Option<usize>,
    ) -> Result<IMapIterator<R>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'static,
    {
        if chunksize == 0 {
            return Err(Error::value("chunksize must be at least 1"));
        }
        self.inner.check_open()?;
        let shared = Arc::new(IMapShared {
            state: Mutex::new(IMapState {
                ordered,
                by_index: BTreeMap::new(),
                arrived: VecDeque::new(),
                current: Vec::new().into_iter(),
                next_index: 0,
                submitted: 0,
                consumed: 0,
                feeding_done: false,
                feed_error: None,
                feed_panic: None,
                dropped: false,
            }),
            cond: Condvar::new(),
        });
        let feeder = Feeder {
            pool: Arc::downgrade(&self.inner),
            shared: shared.clone(),
            window: window.unwrap_or(4 * self.inner.processes),
        };
        let iter = items.into_iter();
        std::thread::Builder::new()
            .name("ThreadPoolFeeder".into())
            .spawn(move || feeder.run(Arc::new(f), iter, chunksize))
            .map_err(|e| Error::Spawn(format!("could not start a thread: {e}")))?;
        Ok(IMapIterator { shared })
    }

    /// Applies `f` to each item, yielding results in order as they come; the
    /// input is read lazily on a feeder thread (it may be endless).
    ///
    /// Python: `Pool.imap(f, iterable)`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `close()`/`terminate()`, [`Error::Spawn`] if the
    /// feeder thread cannot start. Per item: see [`IMapIterator`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::dummy as mp;
    /// let pool = mp::Pool::new(2)?;
    /// let first: Vec<u64> = pool.imap(|x: u64| x * 2, 0u64..)?.take(5).collect::<mp::Result<_>>()?;
    /// assert_eq!(first, [0, 2, 4, 6, 8]);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn imap<F, A, R, I>(&self, f: F, items: I) -> Result<IMapIterator<R>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'static,
    {
        self.submit_imap(f, items, 1, true, None)
    }

    /// [`imap`](Self::imap) with `chunksize` items per task.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for a chunksize of 0, else as [`imap`](Self::imap).
    pub fn imap_with_chunksize<F, A, R, I>(
        &self,
        f: F,
        items: I,
        chunksize: usize,
    ) -> Result<IMapIterator<R>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'static,
    {
        self.submit_imap(f, items, chunksize, true, None)
    }

    /// [`imap`](Self::imap) with the results in completion order.
    ///
    /// # Errors
    ///
    /// As [`imap`](Self::imap).
    pub fn imap_unordered<F, A, R, I>(&self, f: F, items: I) -> Result<IMapIterator<R>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'static,
    {
        self.submit_imap(f, items, 1, false, None)
    }

    /// [`imap_unordered`](Self::imap_unordered) with `chunksize` items per task.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for a chunksize of 0, else as [`imap`](Self::imap).
    pub fn imap_unordered_with_chunksize<F, A, R, I>(
        &self,
        f: F,
        items: I,
        chunksize: usize,
    ) -> Result<IMapIterator<R>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'static,
    {
        self.submit_imap(f, items, chunksize, false, None)
    }

    /// Accepts no more work; the workers exit once all submitted work is done.
    ///
    /// Python: `Pool.close()`.
    pub fn close(&self) {
        let mut s = self.inner.state.lock().unpoison();
        if s.mode == Mode::Run {
            s.mode = Mode::Close;
        }
        drop(s);
        self.inner.work.notify_all();
    }

    /// Stops now: every unfinished task fails with [`Error::Closed`] and idle
    /// workers exit. A worker busy in a function cannot be stopped: it exits
    /// when the function returns (its result is dropped). Idempotent.
    ///
    /// Python: `Pool.terminate()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::dummy as mp;
    /// let pool = mp::Pool::new(1)?;
    /// let stop = mp::Event::new()?;
    /// let s = stop.clone();
    /// let r = pool.apply_async(move |_: ()| s.wait(), ())?;
    /// pool.terminate();
    /// assert!(matches!(r.get(), Err(mp::Error::Closed)));
    /// stop.set();
    /// pool.join()?;
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn terminate(&self) {
        let mut s = self.inner.state.lock().unpoison();
        s.mode = Mode::Terminate;
        let queued: Vec<Task> = s.queue.drain(..).map(|(_, t)| t).collect();
        let running: Vec<Fail> = s.running.values().cloned().collect();
        drop(s);
        self.inner.work.notify_all();
        for t in queued {
            (t.fail)(Error::Closed);
        }
        for fail in running {
            fail(Error::Closed);
        }
    }

    /// Waits until the workers have exited: after `close()`, once all work
    /// is done; after `terminate()`, once no worker is busy.
    ///
    /// Python: `Pool.join()`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] while the pool is still running (call `close()` or
    /// `terminate()` first), or when called from one of its own workers or
    /// callbacks (it would wait for itself).
    pub fn join(&self) -> Result<()> {
        let s = self.inner.state.lock().unpoison();
        if s.mode == Mode::Run {
            return Err(Error::value(
                "pool is still running; call close() or terminate() before join()",
            ));
        }
        if MY_POOL.with(|p| p.get()) == Arc::as_ptr(&self.inner) as usize {
            return Err(Error::value(
                "join() called from a pool worker or callback would wait for itself",
            ));
        }
        let _ = wait_until(&self.inner.exited, s, None, |s| s.workers == 0);
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // As the process pool: dropping stops it (without waiting for a
        // worker busy in a function, which cannot be stopped).
        self.terminate();
    }
}

/// Reads an `imap` input on its own thread, a bounded number of chunks ahead.
struct Feeder<R> {
    pool: Weak<Inner>,
    shared: Arc<IMapShared<R>>,
    window: usize,
}

impl<R: Send + 'static> Feeder<R> {
    fn run<F, A>(self, f: Arc<F>, mut iter: impl Iterator<Item = A>, chunksize: usize)
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
    {
        let mut index = 0;
        loop {
            if !self.wait_for_room() {
                break;
            }
            let chunk = catch_unwind(AssertUnwindSafe(|| {
                iter.by_ref().take(chunksize).collect::<Vec<A>>()
            }));
            let chunk = match chunk {
                Ok(c) if c.is_empty() => break,
                Ok(c) => c,
                Err(p) => {
                    self.shared.state.lock().unpoison().feed_panic = Some(p);
                    break;
                }
            };
            let (f, mine, theirs) = (f.clone(), self.shared.clone(), self.shared.clone());
            let claimed = Arc::new(AtomicBool::new(false));
            let c2 = claimed.clone();
            let task = Task {
                run: Box::new(move || {
                    if mine.state.lock().unpoison().dropped {
                        return; // nobody reads it: the process pool drops it too
                    }
                    let name = super::current_process().name().to_string();
                    let r = run_caught(&name, || chunk.into_iter().map(|a| f(a)).collect());
                    if !claimed.swap(true, Ordering::AcqRel) {
                        mine.chunk_done(index, r);
                    }
                }),
                fail: Arc::new(move |e| {
                    let first = !c2.swap(true, Ordering::AcqRel);
                    if first {
                        theirs.chunk_done(index, Err(e));
                    }
                    first
                }),
                timeout: None,
            };
            // Counted before it can complete, so `consumed <= submitted` holds.
            self.shared.state.lock().unpoison().submitted += 1;
            let submitted = match self.pool.upgrade() {
                Some(p) => p.submit(task),
                None => Err(Error::Closed),
            };
            if let Err(e) = submitted {
                let mut s = self.shared.state.lock().unpoison();
                s.submitted -= 1;
                s.feed_error = Some(e);
                break;
            }
            index += 1;
        }
        self.shared.state.lock().unpoison().feeding_done = true;
        self.shared.cond.notify_all();
    }

    /// Waits until fewer than `window` chunks are unconsumed; false once the
    /// iterator was dropped.
    fn wait_for_room(&self) -> bool {
        let window = self.window.max(1);
        let g = self.shared.state.lock().unpoison();
        let (g, _) = wait_until(&self.shared.cond, g, None, |s| {
            s.dropped || s.submitted - s.consumed < window
        });
        !g.dropped
    }
}
