//! Python's `multiprocessing.pool`: a pool of worker processes that run
//! functions for you, with results in order, callbacks, and lazy iteration.
//!
//! | Python | Rust |
//! |---|---|
//! | `Pool(processes, initializer, initargs, maxtasksperchild)` | [`Pool::new`], [`Pool::builder`] ([`PoolBuilder`]) |
//! | `apply(f, args)` / `apply_async(f, args, callback, error_callback)` | [`Pool::apply`], [`Pool::apply_async`], [`Pool::apply_async_with`] |
//! | `map` / `map_async` / `starmap` / `starmap_async` | [`Pool::map`], [`Pool::map_with_chunksize`], [`Pool::map_async`], [`Pool::map_async_with_chunksize`], [`Pool::map_async_with`], [`Pool::starmap`], [`Pool::starmap_with_chunksize`], [`Pool::starmap_async`], [`Pool::starmap_async_with_chunksize`] |
//! | `imap` / `imap_unordered` | [`Pool::imap`], [`Pool::imap_with_chunksize`], [`Pool::imap_unordered`], [`Pool::imap_unordered_with_chunksize`] |
//! | `close()` / `terminate()` / `join()` | same names; dropping the pool terminates it (`with Pool() as p:`) |
//! | `AsyncResult`, `IMapIterator` | [`AsyncResult`], [`IMapIterator`] |
//! | (pebble's `schedule(timeout=)`) | [`PoolBuilder::task_timeout`], [`Pool::apply_async_timeout`] |
//!
//! # Beyond CPython
//!
//! * A worker that dies mid-task (SIGKILL, abort, segfault, `process::exit`,
//!   the OOM killer) fails exactly the task it was running with
//!   [`Error::WorkerLost`]; tasks sent to it but not started go to another
//!   worker, and a replacement starts. CPython's pool hangs there forever
//!   (cpython#66587).
//! * A task may have a timeout: its worker is killed and replaced, and the task
//!   fails with [`Error::Timeout`].
//! * `imap` reads its input lazily with a bounded read-ahead: an endless
//!   iterator works, and dropping the [`IMapIterator`] stops the reading.
//! * `terminate()` returns at once, even with thousands of tasks queued.

pub(crate) mod child;
mod gate;
pub(crate) mod remote;
mod result;
mod ring;
mod scheduler;
mod submit;
mod task;
mod worker_io;

use crate::util::Unpoison;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::method::StartMethod;
use crate::error::{Error, Result};
use crate::platform::fd;
use crate::reduction::{self, FnRef};
pub(crate) use result::{ApplyJob, Slot};
pub use result::{AsyncResult, IMapIterator};
use result::{Callback, ErrorCallback, IMapJob, IMapShared, MapJob};
pub(crate) use submit::{Body, Direct, Inner, Job};
use submit::{PoolState, Shared};
use task::{InitSpec, Task};

/// Chunks an `imap` may have read ahead of the consumer, per worker (at least
/// [`READ_AHEAD_MIN`]): enough to keep every worker busy, little enough that
/// memory stays flat for an endless input.
const READ_AHEAD_PER_WORKER: usize = 8;
/// The least read-ahead of an `imap`, in chunks.
const READ_AHEAD_MIN: usize = 32;
/// Small chunks are read further ahead, up to this many items...
const READ_AHEAD_ITEMS: usize = 16384;
/// ...in at most this many chunks. A window of 32 chunks of 64 tiny items
/// ran dry every few microseconds: the feeder slept and was woken, the
/// workers emptied their rings and slept and were woken. `imap_with_chunksize
/// (square, 0..40_000, 64)` on a fresh pool of 2, medians of 60: 15.7-16.2M
/// items/s with 32 chunks, 19.0-20.1M with 64, 18.4-24.7M with 128 and
/// 23.1-28.0M with 256 (alternated runs).
const READ_AHEAD_MAX: usize = 256;

/// The read-ahead of an `imap` with no `buffersize`, in chunks: 8 per
/// worker and at least 32, or as many chunks as hold 16384 items if that is
/// more (at most 256). Chunks of 512 items or more keep the first rule, so
/// the memory a window of big chunks holds is what it was.
fn default_read_ahead(processes: usize, chunksize: usize) -> usize {
    let by_items = (READ_AHEAD_ITEMS / chunksize.max(1)).min(READ_AHEAD_MAX);
    narrow_read_ahead(processes).max(by_items)
}

/// The first rule of [`default_read_ahead`]: 8 chunks per worker, at least
/// 32 (what an `imap` of big chunks or big results keeps to).
fn narrow_read_ahead(processes: usize) -> usize {
    (READ_AHEAD_PER_WORKER * processes).max(READ_AHEAD_MIN)
}

/// A `map` hands its chunks to the pool in batches of at most this many...
const SUBMIT_BATCH: usize = 64;
/// ...or this many bytes (the first chunk always alone, so work starts).
const SUBMIT_BATCH_BYTES: usize = 256 * 1024;

/// Python's default `map` chunksize: `ceil(len / (4 * processes))`, 0 for an
/// empty input.
fn default_chunksize(len: usize, processes: usize) -> usize {
    len.div_ceil(4 * processes.max(1))
}

/// Configures a [`Pool`]: worker count, initializer, `maxtasksperchild`, task
/// timeout.
///
/// Python: the arguments of `multiprocessing.Pool(...)`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// use std::time::Duration;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let pool = mp::Pool::builder()
///         .processes(2)
///         .initializer(|seed: u64| assert_eq!(seed, 42), 42)
///         .maxtasksperchild(100)
///         .task_timeout(Duration::from_secs(60))
///         .build()?;
///     assert_eq!(pool.map(|x: i32| x + 1, [1, 2, 3])?, [2, 3, 4]);
///     Ok(())
/// }
/// ```
#[must_use = "a builder does nothing until build() is called"]
pub struct PoolBuilder {
    /// Worker count; `None`: [`cpu_count`](crate::cpu_count).
    processes: Option<usize>,
    /// The initializer and its encoded argument (or the encode error).
    init: Option<Result<InitSpec>>,
    /// `maxtasksperchild`.
    maxtasks: Option<usize>,
    /// The pool-wide task timeout.
    task_timeout: Option<Duration>,
    /// `max_memory_per_child`, in bytes.
    max_memory: Option<u64>,
    /// The workers' start method; `None`: the global one.
    method: Option<StartMethod>,
}

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("processes", &self.processes)
            .field("initializer", &self.init.is_some())
            .field("maxtasksperchild", &self.maxtasks)
            .field("task_timeout", &self.task_timeout)
            .field("max_memory_per_child", &self.max_memory)
            .field("start_method", &self.method)
            .finish()
    }
}

impl PoolBuilder {
    /// Starts the workers with `method` instead of the global start method
    /// ([`Context::pool_builder`](crate::Context::pool_builder) sets it).
    ///
    /// Python: `get_context(method).Pool(...)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// mp::init();
    /// let pool = mp::Pool::builder()
    ///     .processes(1)
    ///     .start_method(mp::StartMethod::Forkserver)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(pool.apply(|x: i32| -x, 3).unwrap(), -3);
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// The number of worker processes (default: [`cpu_count`](crate::cpu_count)).
    ///
    /// Python: `Pool(processes=n)`.
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// Runs `f(arg)` once in every worker before its first task, replacement
    /// workers included. `f` must not capture variables (checked at compile
    /// time); its result is dropped. `arg` may hold handles (a `Connection`,
    /// a lock): every worker gets its own copy.
    ///
    /// If the initializer panics, the pool is *broken*: every unfinished task
    /// and every later submit fails with [`Error::Remote`] naming the panic
    /// (CPython restarts the worker forever and the tasks hang).
    ///
    /// Python: `Pool(initializer=f, initargs=args)`.
    pub fn initializer<F, A, R>(mut self, f: F, arg: A) -> Self
    where
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned,
    {
        let func = FnRef::discard(f);
        self.init = Some(reduction::encode(&arg).map(|arg| InitSpec { func, arg }));
        self
    }

    /// A worker exits after `n` tasks and a fresh one replaces it (for code
    /// that leaks). A `map` chunk counts as one task.
    ///
    /// Python: `Pool(maxtasksperchild=n)`.
    pub fn maxtasksperchild(mut self, n: usize) -> Self {
        self.maxtasks = Some(n);
        self
    }

    /// Limits how long one task (one chunk of a `map`/`imap`) may run: when it
    /// overruns, its worker is killed (SIGKILL) and replaced, and the task fails
    /// with [`Error::Timeout`]. The clock starts when the worker starts the
    /// task, not when it is submitted.
    ///
    /// Beyond Python (pebble's and billiard's task timeouts).
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.task_timeout = Some(timeout);
        self
    }

    /// Replaces a worker after a task that leaves its resident memory (RSS)
    /// above `bytes`: it gets no more work, exits once idle, and a fresh
    /// worker takes its place (a leak in the task code is bounded this way).
    ///
    /// Beyond Python (loky's and billiard's `max_memory_per_child`).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let pool = mp::Pool::builder().processes(1).max_memory_per_child(1 << 30).build()?;
    ///     assert_eq!(pool.apply(|x: u8| x, 3)?, 3);
    ///     Ok(())
    /// }
    /// ```
    pub fn max_memory_per_child(mut self, bytes: u64) -> Self {
        self.max_memory = Some(bytes);
        self
    }

    /// Starts the workers and the pool's handler thread.
    ///
    /// Returns once the workers are started (not yet initialized); tasks
    /// submitted meanwhile wait for them.
    ///
    /// Python: `multiprocessing.Pool(...)`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for 0 processes or a `maxtasksperchild` of 0;
    /// [`Error::Encode`] if the initializer's argument does not serialize;
    /// [`Error::Spawn`] when `mp::init()` was not called or a worker cannot be
    /// started; [`Error::Io`] when out of fds or processes. Workers already
    /// started are killed and reaped then.
    pub fn build(self) -> Result<Pool> {
        self.build_with(None)
    }

    /// True when the initializer's argument holds fds (it cannot go to a
    /// remote worker).
    pub(crate) fn init_carries_fds(&self) -> bool {
        matches!(&self.init, Some(Ok(i)) if !i.arg.fds.is_empty())
    }

    /// [`build`](Self::build), with the workers remote when `remote` says
    /// where they connect (`remote.rs`, `cluster/pool.rs`).
    pub(crate) fn build_with(self, remote: Option<remote::RemoteSpec>) -> Result<Pool> {
        let processes = self.processes.unwrap_or_else(crate::cpu_count);
        if processes == 0 {
            return Err(Error::value("number of processes must be at least 1"));
        }
        if self.maxtasks == Some(0) {
            return Err(Error::value(
                "maxtasksperchild must be a positive number or None",
            ));
        }
        let init = self.init.transpose()?;
        crate::spawn::check_initialized()?;
        let wake = fd::eventfd()?;
        let inner = Arc::new(Inner {
            shared: Mutex::new(Shared {
                state: PoolState::Run,
                finished: false,
                broken: None,
                queue: Default::default(),
                new_jobs: Vec::new(),
                ticks: Vec::new(),
                asleep: false,
                worker_pids: Vec::new(),
                kill_tasks: Vec::new(),
            }),
            core: Mutex::new(None),
            wake,
            submits: AtomicU32::new(0),
            ids: AtomicU64::new(1),
            processes,
            maxtasks: self.maxtasks.map(|n| n as u64),
            task_timeout: self.task_timeout,
            max_memory: self.max_memory,
            method: crate::context::method::method_for_start(self.method),
            init: Mutex::new(init),
            thread: Mutex::new(None),
            thread_id: OnceLock::new(),
            remote,
        });
        // All at once (one forkserver request); on error none is left.
        let workers = worker_io::start_workers(
            worker_io::WorkerSpec {
                init: &inner.init,
                remote: inner.remote.as_ref(),
                wake: &inner.wake,
                maxtasks: inner.maxtasks,
                method: inner.method,
            },
            processes,
        )?;
        scheduler::spawn_scheduler(inner.clone(), workers)?;
        Ok(Pool { inner })
    }
}

/// Computes in the forkserver, once, what each worker it forks would
/// otherwise work out again (whether to spin: a look at the CPU count, about
/// twenty system calls), so that the workers inherit it.
pub(crate) fn warm_fork_image() {
    let _ = ring::spin_for();
}

/// A pool of worker processes.
///
/// Workers are this binary run again ([`init`](crate::init) sends them to
/// their loop). Functions are non-capturing closures or `fn` items; arguments
/// and results travel with serde and may hold handles (a `Connection`, a
/// lock, a queue). One handler thread in this process sends tasks, receives
/// results and runs callbacks (all but the one of an empty
/// [`map_async_with`](Pool::map_async_with), which runs on the caller's
/// thread). All methods take `&self`; `Pool` is `Send` and
/// `Sync`.
///
/// Dropping a `Pool` terminates it, like leaving Python's `with Pool() as p:`:
/// unfinished tasks fail with [`Error::Closed`]. To let the work finish, call
/// [`close`](Self::close) and [`join`](Self::join) first.
///
/// Python: `multiprocessing.Pool` / `multiprocessing.pool.Pool`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let pool = mp::Pool::new(2)?;
///     assert_eq!(pool.apply(|(a, b): (i32, i32)| a * b, (6, 7))?, 42);
///     assert_eq!(pool.map(|x: u64| x * x, 0..5)?, [0, 1, 4, 9, 16]);
///     pool.close();
///     pool.join()
/// }
/// ```
pub struct Pool {
    /// Shared with the handler thread and feeders.
    inner: Arc<Inner>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.inner.shared.lock().unpoison();
        f.debug_struct("Pool")
            .field("processes", &self.inner.processes)
            .field("state", &s.state)
            .field("workers", &s.worker_pids)
            .field("queued", &s.queue.len())
            .finish()
    }
}

impl Pool {
    /// A pool of `processes` workers.
    ///
    /// Python: `multiprocessing.Pool(processes)`.
    ///
    /// # Errors
    ///
    /// As [`PoolBuilder::build`]: [`Error::Value`] for 0 processes.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     assert!(matches!(mp::Pool::new(0), Err(mp::Error::Value(_))));
    ///     let pool = mp::Pool::new(mp::cpu_count())?;
    ///     assert_eq!(pool.processes(), mp::cpu_count());
    ///     Ok(())
    /// }
    /// ```
    pub fn new(processes: usize) -> Result<Pool> {
        Pool::builder().processes(processes).build()
    }

    /// A builder, for an initializer, `maxtasksperchild` or a task timeout.
    ///
    /// Python: `multiprocessing.Pool(processes, initializer, initargs, maxtasksperchild)`.
    pub fn builder() -> PoolBuilder {
        PoolBuilder {
            processes: None,
            init: None,
            maxtasks: None,
            task_timeout: None,
            max_memory: None,
            method: None,
        }
    }

    /// The number of workers the pool keeps.
    pub fn processes(&self) -> usize {
        self.inner.processes
    }

    /// The remote side of a listening pool (`cluster/pool.rs`).
    pub(crate) fn remote(&self) -> Option<&remote::RemoteSpec> {
        self.inner.remote.as_ref()
    }

    /// The pids of the workers alive now (they change as workers are replaced).
    ///
    /// Beyond Python (CPython's tests read `pool._pool`).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.inner.shared.lock().unpoison().worker_pids.clone()
    }

    fn check_open(&self) -> Result<()> {
        let s = self.inner.shared.lock().unpoison();
        if let Some(b) = &s.broken {
            return Err(b.duplicate());
        }
        if s.state != PoolState::Run || s.finished {
            return Err(Error::Closed);
        }
        Ok(())
    }

    fn submit_apply<F, A, R>(
        &self,
        f: F,
        arg: A,
        callback: Option<Callback<R>>,
        error_callback: Option<ErrorCallback>,
        timeout: Option<Duration>,
        waited: bool,
    ) -> Result<AsyncResult<R>>
    where
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.check_open()?;
        let func = FnRef::returning(f);
        let enc = reduction::encode(&arg)?;
        drop(arg);
        let job = self.inner.next_id();
        let task = Task::new(
            self.inner.next_id(),
            job,
            0,
            func,
            enc,
            timeout.or(self.inner.task_timeout),
        )?;
        let slot = Slot::new();
        let j: Box<dyn Job> = Box::new(ApplyJob::new(slot.clone(), callback, error_callback));
        if waited {
            // `apply`: this thread waits at once; see `Inner::submit_waited`.
            self.inner.submit_waited((job, j), task)?;
        } else {
            self.inner.submit(Some((job, j)), vec![task], false)?;
        }
        Ok(AsyncResult::new(slot))
    }

    /// `mp::futures`: submits `f(arg)` as one task that `job` finishes, with
    /// `timeout` (else the pool's task timeout). Returns the task's id.
    pub(crate) fn submit_job<F, A, R>(
        &self,
        f: F,
        arg: A,
        job: Box<dyn Job>,
        timeout: Option<Duration>,
    ) -> Result<u64>
    where
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.check_open()?;
        let func = FnRef::returning(f);
        let enc = reduction::encode(&arg)?;
        drop(arg);
        let job_id = self.inner.next_id();
        let id = self.inner.next_id();
        let task = Task::new(
            id,
            job_id,
            0,
            func,
            enc,
            timeout.or(self.inner.task_timeout),
        )?;
        self.inner.submit(Some((job_id, job)), vec![task], false)?;
        Ok(id)
    }

    /// The pool's shared state, weakly (a future must not keep a pool alive).
    pub(crate) fn downgrade(&self) -> Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    /// Runs `f(arg)` in a worker and waits for the result.
    ///
    /// Python: `Pool.apply(f, args)`.
    ///
    /// # Errors
    ///
    /// Submitting: [`Error::Closed`] after `close()`/`terminate()`,
    /// [`Error::Encode`] if `arg` does not serialize. The task:
    /// [`Error::Remote`] when `f` panicked, [`Error::WorkerLost`] when the
    /// worker died, [`Error::Timeout`] past the task timeout,
    /// [`Error::Decode`]/[`Error::Encode`] when the value did not cross.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let pool = mp::Pool::new(1)?;
    ///     assert_eq!(pool.apply(|x: i32| x * x, 5)?, 25);
    ///     match pool.apply(|_: ()| -> i32 { panic!("boom") }, ()) {
    ///         Err(mp::Error::Remote { message, .. }) => assert_eq!(message, "boom"),
    ///         other => panic!("{other:?}"),
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn apply<F, A, R>(&self, f: F, arg: A) -> Result<R>
    where
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.submit_apply(f, arg, None, None, None, true)?.get()
    }

    /// Submits `f(arg)` and returns at once.
    ///
    /// Python: `Pool.apply_async(f, args)`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `close()`/`terminate()` (or the broken pool's
    /// error), [`Error::Encode`] if `arg` does not serialize. The task's own
    /// errors come from [`AsyncResult::get`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let pool = mp::Pool::new(2)?;
    ///     let rs: Vec<_> = (0..4).map(|i| pool.apply_async(|i: u32| i * 10, i)).collect::<mp::Result<_>>()?;
    ///     let got: Vec<u32> = rs.iter().map(|r| r.get()).collect::<mp::Result<_>>()?;
    ///     assert_eq!(got, [0, 10, 20, 30]);
    ///     pool.close();
    ///     assert!(matches!(pool.apply_async(|i: u32| i, 1), Err(mp::Error::Closed)));
    ///     pool.join()
    /// }
    /// ```
    pub fn apply_async<F, A, R>(&self, f: F, arg: A) -> Result<AsyncResult<R>>
    where
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.submit_apply(f, arg, None, None, None, false)
    }

    /// Like [`apply_async`](Self::apply_async), with callbacks. `callback`
    /// gets the result, `error_callback` the error; they run in this process
    /// on the pool's one handler thread (so they may capture, and must be
    /// quick), and have run by the time `get()`/`wait()` returns. A panic in a
    /// callback is printed and ignored. A callback must not wait for another
    /// result of the same pool (it would wait for itself).
    ///
    /// Python: `Pool.apply_async(f, args, callback=cb, error_callback=ecb)`.
    ///
    /// # Errors
    ///
    /// As [`apply_async`](Self::apply_async); no callback runs then.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// use std::sync::{Arc, Mutex};
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let pool = mp::Pool::new(1)?;
    ///     let seen = Arc::new(Mutex::new(Vec::new()));
    ///     let (s1, s2) = (seen.clone(), seen.clone());
    ///     let r = pool.apply_async_with(
    ///         |x: i32| if x < 0 { panic!("negative") } else { x },
    ///         -1,
    ///         move |v: &i32| s1.lock().unwrap().push(format!("ok {v}")),
    ///         move |e: &mp::Error| s2.lock().unwrap().push(format!("error {e}")),
    ///     )?;
    ///     assert!(r.get().is_err());
    ///     assert!(seen.lock().unwrap()[0].contains("negative"));
    ///     Ok(())
    /// }
    /// ```
    pub fn apply_async_with<F, A, R, C, E>(
        &self,
        f: F,
        arg: A,
        callback: C,
        error_callback: E,
    ) -> Result<AsyncResult<R>>
    where
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
        C: FnOnce(&R) + Send + 'static,
        E: FnOnce(&Error) + Send + 'static,
    {
        self.submit_apply(
            f,
            arg,
            Some(Box::new(callback)),
            Some(Box::new(error_callback)),
            None,
            false,
        )
    }

    /// Like [`apply_async`](Self::apply_async), but the task may run at most
    /// `timeout` (overriding the pool's [`task_timeout`](PoolBuilder::task_timeout)):
    /// past it the worker is killed and replaced, and `get()` gives
    /// [`Error::Timeout`].
    ///
    /// Beyond Python (pebble's `schedule(f, args, timeout=)`).
    ///
    /// # Errors
    ///
    /// As [`apply_async`](Self::apply_async).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// use std::time::Duration;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let pool = mp::Pool::new(1)?;
    ///     let r = pool.apply_async_timeout(|ms: u64| std::thread::sleep(Duration::from_millis(ms)), 60_000, Duration::from_millis(100))?;
    ///     assert!(matches!(r.get(), Err(mp::Error::Timeout)));
    ///     assert_eq!(pool.apply(|x: u8| x, 7)?, 7); // a fresh worker took over
    ///     Ok(())
    /// }
    /// ```
    pub fn apply_async_timeout<F, A, R>(
        &self,
        f: F,
        arg: A,
        timeout: Duration,
    ) -> Result<AsyncResult<R>>
    where
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.submit_apply(f, arg, None, None, Some(timeout), false)
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
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.check_open()?;
        if chunksize == Some(0) {
            return Err(Error::value("chunksize must be at least 1"));
        }
        // An input that knows its length (a range, a Vec) is encoded chunk by
        // chunk straight from the iterator; any other is read whole first, as
        // CPython does (the length sets the chunk size).
        let mut iter = items.into_iter();
        let (lo, hi) = iter.size_hint();
        if hi != Some(lo) {
            let all: Vec<A> = iter.by_ref().collect();
            return self.submit_chunks(
                f,
                all.len(),
                all.into_iter(),
                chunksize,
                callback,
                error_callback,
            );
        }
        self.submit_chunks(f, lo, iter, chunksize, callback, error_callback)
    }

    /// [`submit_map`](Self::submit_map) over `len` items that `items` yields.
    fn submit_chunks<F, A, R>(
        &self,
        f: F,
        len: usize,
        mut items: impl Iterator<Item = A>,
        chunksize: Option<usize>,
        callback: Option<Callback<Vec<R>>>,
        error_callback: Option<ErrorCallback>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        if len == 0 {
            if items.next().is_none() {
                let empty = Vec::new();
                if let Some(cb) = callback {
                    cb(&empty);
                }
                return Ok(AsyncResult::ready_with(Ok(empty)));
            }
            return Err(Error::value(
                "the input yielded items although its size_hint said it had none",
            ));
        }
        let chunksize = chunksize.unwrap_or_else(|| default_chunksize(len, self.inner.processes));
        let func = FnRef::chunk(f);
        let job_id = self.inner.next_id();
        let chunks = len.div_ceil(chunksize);
        let slot = Slot::new();
        let mut job = Some((
            job_id,
            Box::new(MapJob::new(
                chunks,
                len,
                slot.clone(),
                callback,
                error_callback,
            )) as Box<dyn Job>,
        ));
        // Each chunk goes to the pool as soon as it is encoded, so the workers
        // start on the first while the rest are encoded. A chunk that does not
        // encode fails, with the chunks after it (not encoded at all); the ones
        // before it run, and the call fails with its error, as CPython's does.
        // A panic of the input iterator fails them too (so the job ends), then
        // goes on to the caller.
        let mut failed: Option<Error> = None;
        let mut panic = None;
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        for index in 0..chunks {
            let n = chunksize.min(len - index * chunksize);
            let last = index + 1 == chunks;
            let encoded = match &failed {
                Some(e) => Err(e.duplicate()),
                None => match catch_unwind(AssertUnwindSafe(|| {
                    let enc = reduction::encode_seq(&mut items, n)?;
                    if last && items.next().is_some() {
                        return Err(Error::value(
                            "the input yielded more items than its size_hint said",
                        ));
                    }
                    Ok(enc)
                })) {
                    Ok(r) => r,
                    Err(p) => {
                        panic = Some(p);
                        Err(Error::value("the input iterator panicked"))
                    }
                },
            };
            let id = self.inner.next_id();
            let index = index as u64;
            let task = match encoded
                .and_then(|enc| Task::new(id, job_id, index, func, enc, self.inner.task_timeout))
            {
                Ok(t) => t,
                Err(e) => {
                    let t = Task::failed(id, job_id, index, func, e.duplicate());
                    failed.get_or_insert(e);
                    t
                }
            };
            // The first chunk goes at once; small ones after it in batches
            // (one lock and at most one wake-up each). After the first the
            // map is accepted: a close() meanwhile must not cut it short.
            batch_bytes += task.frame.len();
            batch.push(task);
            let full = batch.len() >= SUBMIT_BATCH || batch_bytes >= SUBMIT_BATCH_BYTES;
            if job.is_some() || full || last {
                let first = job.is_some();
                let tasks = std::mem::take(&mut batch);
                batch_bytes = 0;
                if let Err(e) = self.inner.submit(job.take(), tasks, !first) {
                    if let Some(p) = panic {
                        std::panic::resume_unwind(p);
                    }
                    return Err(e);
                }
            }
        }
        if let Some(p) = panic {
            std::panic::resume_unwind(p);
        }
        Ok(AsyncResult::new(slot))
    }

    /// Applies `f` to every item in the workers; the results in input order.
    ///
    /// The input is read whole first (as Python does) and cut into chunks of
    /// `ceil(len / (4 * processes))` items, one task each. If any task fails,
    /// the call still waits for all of them, then returns the first error (as
    /// Python does).
    ///
    /// Python: `Pool.map(f, iterable)`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `close()`/`terminate()`; the first failed
    /// chunk's error: [`Error::Encode`] if an item does not serialize (that
    /// chunk and the ones after it are never sent; the ones before it run, as
    /// in CPython), [`Error::Remote`], [`Error::WorkerLost`],
    /// [`Error::Timeout`], [`Error::Decode`]/[`Error::Encode`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let pool = mp::Pool::new(2)?;
    ///     let words = vec!["a".to_string(), "bb".to_string(), "ccc".to_string()];
    ///     assert_eq!(pool.map(|s: String| s.len(), words)?, [1, 2, 3]);
    ///     Ok(())
    /// }
    /// ```
    pub fn map<F, A, R, I>(&self, f: F, items: I) -> Result<Vec<R>>
    where
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.submit_map(f, items, None, None, None)?.get()
    }

    /// [`map`](Self::map) with `chunksize` items per task.
    ///
    /// Python: `Pool.map(f, iterable, chunksize)`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for a chunksize of 0, else as [`map`](Self::map).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let pool = mp::Pool::new(2)?;
    ///     assert_eq!(pool.map_with_chunksize(|x: i32| -x, 0..4, 3)?, [0, -1, -2, -3]);
    ///     assert!(matches!(pool.map_with_chunksize(|x: i32| x, 0..4, 0), Err(mp::Error::Value(_))));
    ///     Ok(())
    /// }
    /// ```
    pub fn map_with_chunksize<F, A, R, I>(&self, f: F, items: I, chunksize: usize) -> Result<Vec<R>>
    where
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.submit_map(f, items, Some(chunksize), None, None)?
            .get()
    }

    /// [`map`](Self::map) without waiting.
    ///
    /// Python: `Pool.map_async(f, iterable)`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `close()`/`terminate()`; the chunks' errors
    /// (an item that does not serialize included, as in [`map`](Self::map))
    /// come from [`AsyncResult::get`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let pool = mp::Pool::new(2)?;
    ///     let r = pool.map_async(|x: u8| x as u32 * 2, vec![1, 2, 3])?;
    ///     assert_eq!(r.get()?, [2, 4, 6]);
    ///     assert_eq!(pool.map_async(|x: u8| x, Vec::new())?.get()?, Vec::<u8>::new());
    ///     Ok(())
    /// }
    /// ```
    pub fn map_async<F, A, R, I>(&self, f: F, items: I) -> Result<AsyncResult<Vec<R>>>
    where
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.submit_map(f, items, None, None, None)
    }

    /// [`map_async`](Self::map_async) with `chunksize` items per task.
    ///
    /// Python: `Pool.map_async(f, iterable, chunksize)`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for a chunksize of 0 (nothing is submitted), else as
    /// [`map_async`](Self::map_async).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let pool = mp::Pool::new(2)?;
    ///     let r = pool.map_async_with_chunksize(|x: u8| x + 1, vec![1, 2, 3], 2)?;
    ///     assert_eq!(r.get()?, [2, 3, 4]);
    ///     assert!(matches!(pool.map_async_with_chunksize(|x: u8| x, vec![1], 0), Err(mp::Error::Value(_))));
    ///     Ok(())
    /// }
    /// ```
    pub fn map_async_with_chunksize<F, A, R, I>(
        &self,
        f: F,
        items: I,
        chunksize: usize,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.submit_map(f, items, Some(chunksize), None, None)
    }

    /// [`map_async`](Self::map_async) with callbacks: `callback` gets the
    /// whole result list, or `error_callback` the first error, once (on the
    /// pool's handler thread, before `get()` returns). For an empty input the
    /// callback runs at once with an empty list, on the caller's thread
    /// before this returns (CPython never calls it for an empty input).
    ///
    /// Python: `Pool.map_async(f, iterable, callback=cb, error_callback=ecb)`.
    ///
    /// # Errors
    ///
    /// As [`map_async`](Self::map_async).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// use std::sync::mpsc;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let pool = mp::Pool::new(2)?;
    ///     let (tx, rx) = mpsc::channel();
    ///     let r = pool.map_async_with(|x: i32| x * x, 0..4, move |v: &Vec<i32>| tx.send(v.clone()).unwrap(), |_e: &mp::Error| {})?;
    ///     r.wait();
    ///     assert_eq!(rx.try_recv().unwrap(), [0, 1, 4, 9]);
    ///     Ok(())
    /// }
    /// ```
    pub fn map_async_with<F, A, R, I, C, E>(
        &self,
        f: F,
        items: I,
        callback: C,
        error_callback: E,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
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

    /// Python's `starmap`: each item is a tuple of arguments. In Rust `f`
    /// already takes one tuple, so this is [`map`](Self::map) under the name
    /// porters look for.
    ///
    /// Python: `Pool.starmap(f, iterable)`.
    ///
    /// # Errors
    ///
    /// As [`map`](Self::map).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let pool = mp::Pool::new(2)?;
    ///     assert_eq!(pool.starmap(|(a, b): (i32, i32)| a * b, [(1, 2), (3, 4)])?, [2, 12]);
    ///     Ok(())
    /// }
    /// ```
    pub fn starmap<F, A, R, I>(&self, f: F, items: I) -> Result<Vec<R>>
    where
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.map(f, items)
    }

    /// [`starmap`](Self::starmap) with `chunksize` items per task.
    ///
    /// Python: `Pool.starmap(f, iterable, chunksize)`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for a chunksize of 0, else as [`map`](Self::map).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let pool = mp::Pool::new(2)?;
    ///     let pairs = [(1, 2), (3, 4), (5, 6)];
    ///     assert_eq!(pool.starmap_with_chunksize(|(a, b): (i32, i32)| a + b, pairs, 2)?, [3, 7, 11]);
    ///     Ok(())
    /// }
    /// ```
    pub fn starmap_with_chunksize<F, A, R, I>(
        &self,
        f: F,
        items: I,
        chunksize: usize,
    ) -> Result<Vec<R>>
    where
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.map_with_chunksize(f, items, chunksize)
    }

    /// [`starmap`](Self::starmap) without waiting.
    ///
    /// Python: `Pool.starmap_async(f, iterable)`.
    ///
    /// # Errors
    ///
    /// As [`map_async`](Self::map_async).
    pub fn starmap_async<F, A, R, I>(&self, f: F, items: I) -> Result<AsyncResult<Vec<R>>>
    where
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.map_async(f, items)
    }

    /// [`starmap_async`](Self::starmap_async) with `chunksize` items per task.
    ///
    /// Python: `Pool.starmap_async(f, iterable, chunksize)`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for a chunksize of 0 (nothing is submitted), else as
    /// [`map_async`](Self::map_async).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let pool = mp::Pool::new(2)?;
    ///     let r = pool.starmap_async_with_chunksize(|(a, b): (u8, u8)| a * b, vec![(2, 3), (4, 5)], 1)?;
    ///     assert_eq!(r.get()?, [6, 20]);
    ///     Ok(())
    /// }
    /// ```
    pub fn starmap_async_with_chunksize<F, A, R, I>(
        &self,
        f: F,
        items: I,
        chunksize: usize,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.map_async_with_chunksize(f, items, chunksize)
    }

    /// `imap`/`imap_unordered`; `read_ahead` chunks at most submitted and not
    /// yet consumed (`None`: the pool's default; also `mp::futures`' `map`
    /// with a `buffersize`).
    pub(crate) fn submit_imap<F, A, R, I>(
        &self,
        f: F,
        items: I,
        chunksize: usize,
        ordered: bool,
        read_ahead: Option<usize>,
    ) -> Result<IMapIterator<R>>
    where
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'static,
    {
        if chunksize == 0 {
            return Err(Error::value("chunksize must be at least 1"));
        }
        self.check_open()?;
        let func = FnRef::chunk(f);
        let shared = IMapShared::new(ordered);
        let job = self.inner.next_id();
        let j: Box<dyn Job> = Box::new(IMapJob::new(shared.clone()));
        self.inner.submit(Some((job, j)), Vec::new(), false)?;
        let feeder = Feeder {
            pool: Arc::downgrade(&self.inner),
            shared: shared.clone(),
            job,
            func,
            chunksize,
            read_ahead: read_ahead.map_or_else(
                || default_read_ahead(self.inner.processes, chunksize),
                |n| n.max(1),
            ) as u64,
            narrow: read_ahead.map_or_else(|| narrow_read_ahead(self.inner.processes), |n| n.max(1))
                as u64,
            timeout: self.inner.task_timeout,
        };
        let iter = items.into_iter();
        let spawned = std::thread::Builder::new()
            .name("multiprocess-imap-feeder".into())
            .spawn(move || feeder.run(iter));
        if let Err(e) = spawned {
            let mut s = shared.lock();
            s.feeding_done = true;
            drop(s);
            self.inner.tick(job);
            return Err(e.into());
        }
        Ok(IMapIterator::new(shared, Arc::downgrade(&self.inner), job))
    }

    /// Applies `f` to the items lazily; the results in input order, as they
    /// come. One item per task (chunksize 1, as in Python).
    ///
    /// `items` is read on a feeder thread, at most a bounded number of chunks
    /// ahead of the consumer, so an endless iterator works and memory stays
    /// flat; dropping the [`IMapIterator`] stops the reading. After `close()`
    /// an `imap` already running goes on feeding.
    ///
    /// Python: `Pool.imap(f, iterable)` (which reads the whole input at once).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `close()`/`terminate()`; [`Error::Io`] if the
    /// feeder thread cannot start. Per item: see [`IMapIterator`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let pool = mp::Pool::new(2)?;
    ///     // An endless input: take what you need, drop the iterator.
    ///     let first: Vec<u64> = pool.imap(|x: u64| x * 2, 0u64..)?.take(5).collect::<mp::Result<_>>()?;
    ///     assert_eq!(first, [0, 2, 4, 6, 8]);
    ///     Ok(())
    /// }
    /// ```
    pub fn imap<F, A, R, I>(&self, f: F, items: I) -> Result<IMapIterator<R>>
    where
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'static,
    {
        self.submit_imap(f, items, 1, true, None)
    }

    /// [`imap`](Self::imap) with `chunksize` items per task.
    ///
    /// Python: `Pool.imap(f, iterable, chunksize)`.
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
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'static,
    {
        self.submit_imap(f, items, chunksize, true, None)
    }

    /// [`imap`](Self::imap) with the results in completion order.
    ///
    /// Python: `Pool.imap_unordered(f, iterable)`.
    ///
    /// # Errors
    ///
    /// As [`imap`](Self::imap).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let pool = mp::Pool::new(2)?;
    ///     let mut got: Vec<i32> = pool.imap_unordered(|x: i32| x + 1, vec![1, 2, 3])?.collect::<mp::Result<_>>()?;
    ///     got.sort();
    ///     assert_eq!(got, [2, 3, 4]);
    ///     Ok(())
    /// }
    /// ```
    pub fn imap_unordered<F, A, R, I>(&self, f: F, items: I) -> Result<IMapIterator<R>>
    where
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'static,
    {
        self.submit_imap(f, items, 1, false, None)
    }

    /// [`imap_unordered`](Self::imap_unordered) with `chunksize` items per task.
    ///
    /// Python: `Pool.imap_unordered(f, iterable, chunksize)`.
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
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'static,
    {
        self.submit_imap(f, items, chunksize, false, None)
    }

    /// Accepts no more work; the workers exit once all submitted work is done.
    /// Calling it again, or after `terminate()`, does nothing.
    ///
    /// Python: `Pool.close()`.
    pub fn close(&self) {
        self.inner.set_state(PoolState::Close);
    }

    /// Stops now: kills the workers (SIGKILL), fails every unfinished task with
    /// [`Error::Closed`], reaps the workers and returns, promptly even with
    /// thousands of tasks queued. Idempotent. Called from a callback it does not
    /// wait (the handler thread finishes the job after the callback).
    ///
    /// Python: `Pool.terminate()` (SIGTERM there).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// use std::time::Duration;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let pool = mp::Pool::new(1)?;
    ///     let r = pool.apply_async(|_: ()| std::thread::sleep(Duration::from_secs(60)), ())?;
    ///     pool.terminate();
    ///     assert!(matches!(r.get(), Err(mp::Error::Closed)));
    ///     pool.join()
    /// }
    /// ```
    pub fn terminate(&self) {
        self.inner.set_state(PoolState::Terminate);
        if !self.on_handler_thread() {
            self.wait_handler();
        }
    }

    fn on_handler_thread(&self) -> bool {
        self.inner.thread_id.get() == Some(&std::thread::current().id())
    }

    fn wait_handler(&self) {
        let mut t = self.inner.thread.lock().unpoison();
        if let Some(h) = t.take() {
            let _ = h.join();
        }
    }

    /// Waits until the workers have exited: after `close()`, once all work is
    /// done; after `terminate()`, at once.
    ///
    /// Python: `Pool.join()`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] while the pool is still running (call `close()` or
    /// `terminate()` first, as Python requires), or when called from a
    /// callback (it would wait for itself).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let pool = mp::Pool::new(1)?;
    ///     assert!(matches!(pool.join(), Err(mp::Error::Value(_))));
    ///     let r = pool.apply_async(|x: i32| x, 1)?;
    ///     pool.close();
    ///     pool.join()?;
    ///     assert_eq!(r.get()?, 1);
    ///     Ok(())
    /// }
    /// ```
    pub fn join(&self) -> Result<()> {
        if self.inner.shared.lock().unpoison().state == PoolState::Run {
            return Err(Error::value(
                "pool is still running; call close() or terminate() before join()",
            ));
        }
        if self.on_handler_thread() {
            return Err(Error::value(
                "join() called from a pool callback would wait for itself",
            ));
        }
        self.wait_handler();
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Reads an `imap` input on its own thread, a bounded number of chunks ahead.
struct Feeder<R> {
    /// The pool (weak: a feeder blocked in the user's iterator must not keep
    /// the pool's fds alive).
    pool: Weak<Inner>,
    /// Shared with the iterator and the job.
    shared: Arc<IMapShared<R>>,
    /// The job's id.
    job: u64,
    /// The chunk trampoline.
    func: FnRef,
    /// Items per task.
    chunksize: usize,
    /// Chunks submitted but not yet consumed, at most, while chunks and
    /// results are small (see [`window`](Self::window)).
    read_ahead: u64,
    /// The same bound before the first window of results came back small,
    /// and once a chunk or a result was big: the first rule of
    /// [`default_read_ahead`] (or the `buffersize` given).
    narrow: u64,
    /// The pool's task timeout.
    timeout: Option<Duration>,
}

impl<R> Feeder<R> {
    /// Chunks that may be submitted and not consumed now. The wide read-ahead
    /// only counts chunks, so it is used only where chunks are known small:
    /// after a first narrow window of results all came back in ring records
    /// (16 KiB at most), and as long as no chunk or result was bigger. Big
    /// items then hold no more memory ahead than the narrow rule allows.
    fn window(&self, s: &result::IMapState<R>) -> u64 {
        if s.big_frames || s.small_results < self.narrow {
            self.narrow
        } else {
            self.read_ahead
        }
    }

    fn run<A: Serialize>(self, mut iter: impl Iterator<Item = A>) {
        let mut index: u64 = 0;
        loop {
            // Back-pressure: wait while the consumer is far enough behind.
            {
                let mut s = self.shared.lock();
                // Woken at the low-water mark (half the read-ahead), then
                // refilled to the full read-ahead: one wake per half window,
                // not one per chunk consumed.
                while !s.dropped && !s.abandoned && s.submitted - s.consumed >= self.window(&s) {
                    s.feeder_waits = Some(self.window(&s) / 2);
                    s = self.shared.room.wait(s).unpoison();
                }
                s.feeder_waits = None;
                if s.dropped || s.abandoned {
                    break;
                }
            }
            // The user's iterator runs outside every lock; a panic in it is
            // raised again in the consumer, at this chunk's position.
            let chunk = catch_unwind(AssertUnwindSafe(|| {
                iter.by_ref().take(self.chunksize).collect::<Vec<A>>()
            }));
            let chunk = match chunk {
                Ok(c) if c.is_empty() => break,
                Ok(c) => c,
                Err(p) => {
                    self.shared.lock().feed_panic = Some(p);
                    break;
                }
            };
            let Some(pool) = self.pool.upgrade() else {
                self.shared.lock().feed_error = Some(Error::Closed);
                break;
            };
            let task = reduction::encode(&chunk).and_then(|enc| {
                Task::new(
                    pool.next_id(),
                    self.job,
                    index,
                    self.func,
                    enc,
                    self.timeout,
                )
            });
            drop(chunk);
            let mut s = self.shared.lock();
            if s.dropped {
                break;
            }
            if task
                .as_ref()
                .is_ok_and(|t| t.frame.len() > ring::RECORD_MAX)
            {
                s.big_frames = true;
            }
            let submitted = task.and_then(|t| pool.submit(None, vec![t], true));
            drop(pool);
            match submitted {
                Ok(()) => {
                    s.submitted += 1;
                    index += 1;
                }
                Err(e) => {
                    s.feed_error = Some(e);
                    break;
                }
            }
        }
        self.shared.lock().feeding_done = true;
        self.shared.wake_all();
        if let Some(pool) = self.pool.upgrade() {
            pool.tick(self.job);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{default_chunksize, default_read_ahead};

    #[test]
    fn default_chunksize_is_pythons() {
        // CPython: chunksize, extra = divmod(len, processes * 4); if extra: chunksize += 1
        assert_eq!(default_chunksize(0, 4), 0);
        assert_eq!(default_chunksize(1, 4), 1);
        assert_eq!(default_chunksize(16, 4), 1);
        assert_eq!(default_chunksize(17, 4), 2);
        assert_eq!(default_chunksize(100, 2), 13);
        assert_eq!(default_chunksize(5, 0), 2);
    }

    #[test]
    fn small_chunks_are_read_further_ahead() {
        assert_eq!(default_read_ahead(2, 1), 256);
        assert_eq!(default_read_ahead(2, 64), 256);
        assert_eq!(default_read_ahead(2, 100), 163);
        assert_eq!(default_read_ahead(2, 512), 32);
        assert_eq!(default_read_ahead(2, 10_000), 32);
        assert_eq!(default_read_ahead(16, 10_000), 128);
        assert_eq!(default_read_ahead(64, 1), 512);
    }
}
