//! [`ProcessPoolExecutor`]: Python's `concurrent.futures.ProcessPoolExecutor`
//! on a [`Pool`].

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::future::{Cancel, Core, Future};
use super::job::FutureJob;
use crate::connection::deadline_after;
use crate::error::{Error, Result};
use crate::pool::{IMapIterator, Pool, PoolBuilder};
use crate::util::Unpoison;

/// Futures remembered for `shutdown(cancel_futures = true)`; the finished
/// ones are forgotten once the list reaches this size.
const PRUNE_AT: usize = 1024;

/// A pool of worker processes that hands out a [`Future`] per task.
///
/// Built on [`Pool`]: the same workers, scheduler and crash handling. A worker
/// that dies mid-task fails only that task's future with
/// [`Error::WorkerLost`]; the executor replaces the worker and goes on.
///
/// Dropping the executor is `shutdown(wait = true)`, as leaving Python's
/// `with ProcessPoolExecutor() as ex:` is: the submitted work finishes first.
///
/// Python: `concurrent.futures.ProcessPoolExecutor`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// use mp::futures::ProcessPoolExecutor;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let ex = ProcessPoolExecutor::new(2)?;
///     let fs: Vec<_> = (0..4u64).map(|i| ex.submit(|i: u64| i * 10, i)).collect::<mp::Result<_>>()?;
///     let got: Vec<u64> = fs.iter().map(|f| f.result()).collect::<mp::Result<_>>()?;
///     assert_eq!(got, [0, 10, 20, 30]);
///     let squares: Vec<u64> = ex.map(|x: u64| x * x, 0..5)?.collect::<mp::Result<_>>()?;
///     assert_eq!(squares, [0, 1, 4, 9, 16]);
///     ex.shutdown(true, false);
///     Ok(())
/// }
/// ```
pub struct ProcessPoolExecutor {
    /// The pool doing the work.
    pool: Pool,
    /// Futures not known to be done (weakly: a dropped future is forgotten).
    futures: Mutex<Vec<Weak<dyn Cancel>>>,
}

/// Configures a [`ProcessPoolExecutor`].
///
/// Python: the arguments of `ProcessPoolExecutor(max_workers, mp_context,
/// initializer, initargs, max_tasks_per_child)`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let ex = mp::futures::ProcessPoolExecutor::builder()
///         .max_workers(2)
///         .initializer(|level: u8| assert_eq!(level, 3), 3)
///         .max_tasks_per_child(100)
///         .max_memory_per_child(1 << 30)
///         .build()?;
///     assert_eq!(ex.submit(|x: u8| x + 1, 1)?.result()?, 2);
///     Ok(())
/// }
/// ```
#[must_use = "a builder does nothing until build() is called"]
#[derive(Debug)]
pub struct ExecutorBuilder {
    /// The pool's builder.
    pool: PoolBuilder,
}

impl ExecutorBuilder {
    /// The number of worker processes (default: [`cpu_count`](crate::cpu_count)).
    ///
    /// Python: `max_workers`.
    pub fn max_workers(mut self, n: usize) -> Self {
        self.pool = self.pool.processes(n);
        self
    }

    /// Runs `f(arg)` in every worker when it starts. A panic there breaks the
    /// executor: every future and later submit fails with that error (Python:
    /// `BrokenProcessPool`).
    ///
    /// Python: `initializer`, `initargs`.
    pub fn initializer<F, A, R>(mut self, f: F, arg: A) -> Self
    where
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned,
    {
        self.pool = self.pool.initializer(f, arg);
        self
    }

    /// A worker exits after `n` tasks and a fresh one replaces it.
    ///
    /// Python: `max_tasks_per_child`.
    pub fn max_tasks_per_child(mut self, n: usize) -> Self {
        self.pool = self.pool.maxtasksperchild(n);
        self
    }

    /// A worker whose resident memory is above `bytes` after a task is
    /// replaced (see [`PoolBuilder::max_memory_per_child`]).
    ///
    /// Beyond Python (loky's `max_memory_per_child`).
    pub fn max_memory_per_child(mut self, bytes: u64) -> Self {
        self.pool = self.pool.max_memory_per_child(bytes);
        self
    }

    /// A task timeout for every task (see [`PoolBuilder::task_timeout`]);
    /// [`ProcessPoolExecutor::submit_with_timeout`] overrides it per task.
    ///
    /// Beyond Python (pebble's `schedule(timeout=)`).
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.pool = self.pool.task_timeout(timeout);
        self
    }

    /// Starts the workers.
    ///
    /// # Errors
    ///
    /// As [`PoolBuilder::build`]: [`Error::Value`] for 0 workers or a
    /// `max_tasks_per_child` of 0, [`Error::Spawn`] when workers cannot start.
    pub fn build(self) -> Result<ProcessPoolExecutor> {
        Ok(ProcessPoolExecutor {
            pool: self.pool.build()?,
            futures: Mutex::new(Vec::new()),
        })
    }
}

/// Options of [`ProcessPoolExecutor::map_with`]: Python's `map` keywords.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// use mp::futures::MapOptions;
/// use std::time::Duration;
/// let o = MapOptions::new().chunksize(16).timeout(Duration::from_secs(5)).buffersize(4);
/// assert_eq!(o, MapOptions { chunksize: 16, timeout: Some(Duration::from_secs(5)), buffersize: Some(4) });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapOptions {
    /// Items per task (Python's `chunksize`, default 1).
    pub chunksize: usize,
    /// The whole iteration must end by this long after the `map` call; past
    /// it, the next item is `Err(Error::Timeout)` and the rest are cancelled
    /// (Python's `timeout`).
    pub timeout: Option<Duration>,
    /// Tasks (chunks) submitted ahead of the consumer, at most (Python 3.14's
    /// `buffersize`; `None`: the pool's default read-ahead, 8 per worker and
    /// at least 32, or, while chunks and results are small, as many chunks
    /// as hold 16384 items, at most 256).
    pub buffersize: Option<usize>,
}

impl Default for MapOptions {
    fn default() -> Self {
        MapOptions {
            chunksize: 1,
            timeout: None,
            buffersize: None,
        }
    }
}

impl MapOptions {
    /// The defaults: chunksize 1, no timeout, the default read-ahead.
    pub fn new() -> Self {
        MapOptions::default()
    }

    /// Sets [`chunksize`](Self::chunksize).
    pub fn chunksize(mut self, n: usize) -> Self {
        self.chunksize = n;
        self
    }

    /// Sets [`timeout`](Self::timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets [`buffersize`](Self::buffersize).
    pub fn buffersize(mut self, n: usize) -> Self {
        self.buffersize = Some(n);
        self
    }
}

impl ProcessPoolExecutor {
    /// An executor of `max_workers` worker processes.
    ///
    /// Python: `ProcessPoolExecutor(max_workers)`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for 0 workers (Python: `ValueError`); as
    /// [`ExecutorBuilder::build`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     assert!(matches!(mp::futures::ProcessPoolExecutor::new(0), Err(mp::Error::Value(_))));
    ///     Ok(())
    /// }
    /// ```
    pub fn new(max_workers: usize) -> Result<ProcessPoolExecutor> {
        Self::builder().max_workers(max_workers).build()
    }

    /// A builder, for an initializer, `max_tasks_per_child`,
    /// `max_memory_per_child` or a task timeout.
    pub fn builder() -> ExecutorBuilder {
        ExecutorBuilder {
            pool: Pool::builder(),
        }
    }

    /// The number of workers.
    pub fn max_workers(&self) -> usize {
        self.pool.processes()
    }

    /// The pids of the workers alive now (they change as workers are replaced).
    ///
    /// Beyond Python (its tests read `executor._processes`).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.pool.worker_pids()
    }

    /// Schedules `f(arg)` on a worker; its [`Future`].
    ///
    /// Python: `Executor.submit(fn, *args)`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after [`shutdown`](Self::shutdown) (Python:
    /// `RuntimeError`), the broken executor's error, [`Error::Encode`] when
    /// `arg` does not serialize. The task's errors come from the future.
    pub fn submit<F, A, R>(&self, f: F, arg: A) -> Result<Future<R>>
    where
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.submit_inner(f, arg, None)
    }

    /// Like [`submit`](Self::submit), but the task may run at most `timeout`:
    /// past it, its worker is killed and replaced, and the future gives
    /// [`Error::Timeout`].
    ///
    /// Beyond Python (pebble's `schedule(fn, args, timeout=)`).
    ///
    /// # Errors
    ///
    /// As [`submit`](Self::submit).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// use std::time::Duration;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let ex = mp::futures::ProcessPoolExecutor::new(1)?;
    ///     let f = ex.submit_with_timeout(|s: u64| std::thread::sleep(Duration::from_secs(s)), 60, Duration::from_millis(100))?;
    ///     assert!(matches!(f.result(), Err(mp::Error::Timeout)));
    ///     Ok(())
    /// }
    /// ```
    pub fn submit_with_timeout<F, A, R>(&self, f: F, arg: A, timeout: Duration) -> Result<Future<R>>
    where
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.submit_inner(f, arg, Some(timeout))
    }

    fn submit_inner<F, A, R>(&self, f: F, arg: A, timeout: Option<Duration>) -> Result<Future<R>>
    where
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let core = Core::<R>::new(self.pool.downgrade());
        let job = Box::new(FutureJob::new(core.clone()));
        let task = self.pool.submit_job(f, arg, job, timeout)?;
        core.task.store(task, Ordering::Release);
        self.remember(&core);
        Ok(Future::from_core(core))
    }

    /// Keeps a weak handle for `shutdown(cancel_futures)`.
    fn remember<R: Send + 'static>(&self, core: &Arc<Core<R>>) {
        let weak: Weak<dyn Cancel> = Arc::downgrade(core) as Weak<dyn Cancel>;
        let mut fs = self.futures.lock().unpoison();
        if fs.len() >= PRUNE_AT {
            fs.retain(|w| w.upgrade().is_some_and(|c| !c.done()));
        }
        fs.push(weak);
    }

    /// Applies `f` to every item lazily, results in input order: an iterator of
    /// `Result<R>`. One item per task; the input is read a bounded number of
    /// tasks ahead of the consumer, so an endless input works. An `Err` ends the
    /// iteration (Python raises there); dropping the iterator cancels the rest.
    ///
    /// Python: `Executor.map(fn, iterable)` (which submits the whole input at
    /// once unless given 3.14's `buffersize`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after shutdown; [`Error::Io`] if the feeder thread
    /// cannot start. Per item: the task's error.
    pub fn map<F, A, R, I>(&self, f: F, items: I) -> Result<MapIter<R>>
    where
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'static,
    {
        self.map_with(f, items, MapOptions::default())
    }

    /// [`map`](Self::map) with Python's `chunksize`, `timeout` and `buffersize`.
    ///
    /// Python: `Executor.map(fn, iterable, timeout=, chunksize=, buffersize=)`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for a chunksize or buffersize of 0; else as
    /// [`map`](Self::map). Past the timeout, the next item is
    /// `Err(Error::Timeout)` and the iteration ends.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// use mp::futures::MapOptions;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let ex = mp::futures::ProcessPoolExecutor::new(2)?;
    ///     // An endless input with a bounded read-ahead: take what you need.
    ///     let opts = MapOptions::new().chunksize(10).buffersize(4);
    ///     let first: Vec<u64> = ex.map_with(|x: u64| x + 1, 0u64.., opts)?.take(25).collect::<mp::Result<_>>()?;
    ///     assert_eq!(first, (1..=25).collect::<Vec<_>>());
    ///     Ok(())
    /// }
    /// ```
    pub fn map_with<F, A, R, I>(&self, f: F, items: I, opts: MapOptions) -> Result<MapIter<R>>
    where
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'static,
    {
        if opts.buffersize == Some(0) {
            return Err(Error::value("buffersize must be at least 1"));
        }
        // The deadline counts from the call, as Python's does.
        let deadline = opts.timeout.and_then(deadline_after);
        let inner = self
            .pool
            .submit_imap(f, items, opts.chunksize, true, opts.buffersize)?;
        Ok(MapIter {
            inner: Some(inner),
            deadline,
        })
    }

    /// Stops accepting work. With `cancel_futures`, futures not yet given to a
    /// worker are cancelled. With `wait`, returns once all the remaining work
    /// is done and the workers have exited; without, at once (the work goes on;
    /// dropping the executor then waits for it). Calling it again is harmless.
    ///
    /// Python: `Executor.shutdown(wait=True, *, cancel_futures=False)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let ex = mp::futures::ProcessPoolExecutor::new(1)?;
    ///     let f = ex.submit(|x: u8| x, 5)?;
    ///     ex.shutdown(true, false);
    ///     assert_eq!(f.result()?, 5);
    ///     assert!(matches!(ex.submit(|x: u8| x, 6), Err(mp::Error::Closed)));
    ///     Ok(())
    /// }
    /// ```
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) {
        if cancel_futures {
            let fs = std::mem::take(&mut *self.futures.lock().unpoison());
            for c in fs.iter().filter_map(Weak::upgrade) {
                c.cancel();
            }
        }
        self.pool.close();
        if wait {
            // Only a callback on the pool's own thread is refused (it would
            // wait for itself); there, not waiting is all that can be done.
            let _ = self.pool.join();
        }
    }

    /// Stops now: kills every worker (SIGKILL), fails every unfinished future
    /// with [`Error::Closed`], reaps the workers and returns. Later submits
    /// give [`Error::Closed`].
    ///
    /// Python 3.14: `ProcessPoolExecutor.terminate_workers()` /
    /// `kill_workers()` (SIGTERM / SIGKILL there).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// use std::time::Duration;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let ex = mp::futures::ProcessPoolExecutor::new(1)?;
    ///     let f = ex.submit(|s: u64| std::thread::sleep(Duration::from_secs(s)), 60)?;
    ///     ex.terminate_workers();
    ///     assert!(matches!(f.result(), Err(mp::Error::Closed)));
    ///     Ok(())
    /// }
    /// ```
    pub fn terminate_workers(&self) {
        self.pool.terminate();
    }
}

impl Drop for ProcessPoolExecutor {
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}

impl fmt::Debug for ProcessPoolExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessPoolExecutor")
            .field("pool", &self.pool)
            .finish()
    }
}

/// The results of [`ProcessPoolExecutor::map`], in input order.
///
/// Python: the generator `Executor.map` returns.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let ex = mp::futures::ProcessPoolExecutor::new(2)?;
///     let mut it = ex.map(|x: i32| if x == 2 { panic!("two") } else { x }, 0..5)?;
///     assert_eq!(it.next().transpose()?, Some(0));
///     assert_eq!(it.next().transpose()?, Some(1));
///     assert!(matches!(it.next(), Some(Err(mp::Error::Remote { .. }))));
///     assert!(it.next().is_none()); // an error ends it, as Python's raise does
///     Ok(())
/// }
/// ```
pub struct MapIter<R> {
    /// The pool's lazy ordered map; `None` once ended.
    inner: Option<IMapIterator<R>>,
    /// When the whole map must be done.
    deadline: Option<Instant>,
}

impl<R> Iterator for MapIter<R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        let it = self.inner.as_mut()?;
        let next = match self.deadline {
            None => it.next(),
            Some(d) => it.next_timeout(d.saturating_duration_since(Instant::now())),
        };
        if !matches!(next, Some(Ok(_))) {
            // An error or the end: stop reading the input and drop what is
            // queued (Python's generator cancels the remaining futures).
            self.inner = None;
        }
        next
    }
}

impl<R> fmt::Debug for MapIter<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapIter")
            .field("ended", &self.inner.is_none())
            .field("deadline", &self.deadline)
            .finish()
    }
}
