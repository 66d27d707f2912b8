//! [`ThreadPoolExecutor`]: Python's `concurrent.futures.ThreadPoolExecutor`
//! on a thread [`Pool`].

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::super::pool::retire_current_worker;
use super::super::{IMapIterator, Pool, PoolBuilder, current_process, run_caught};
use super::future::{Cancel, Core, Future, with_current};
use crate::error::{Error, Result};
use crate::futures::MapOptions;
use crate::util::{Unpoison, deadline_after};

/// Futures remembered for `shutdown(cancel_futures = true)`; the finished
/// ones are forgotten once the list reaches this size.
const PRUNE_AT: usize = 1024;

/// The error of a failed initializer, once one failed: every task not yet
/// started, and every later submit, fails with it (Python: `BrokenThreadPool`).
type Broken = Arc<OnceLock<Error>>;

/// A pool of worker threads that hands out a [`Future`] per task:
/// `mp::futures::ProcessPoolExecutor`'s API, on threads of this process.
///
/// Built on [`Pool`] (`mp::dummy::Pool`): the same worker threads, queue,
/// `max_tasks_per_child`, initializer and task timeouts. A task that panics
/// fails only its future, with [`Error::Remote`], as in a process; the
/// worker goes on. Tasks may capture, and arguments and results need only be
/// `Send`.
///
/// Dropping the executor is `shutdown(wait = true)`, as leaving Python's
/// `with ThreadPoolExecutor() as ex:` is.
///
/// Python: `concurrent.futures.ThreadPoolExecutor`. It is also named
/// [`ProcessPoolExecutor`](super::ProcessPoolExecutor) here, as
/// `multiprocessing.dummy` names its threads `Process`, so that a program
/// runs on threads with only its `use` line changed.
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// use mp::futures::ThreadPoolExecutor;
/// let ex = ThreadPoolExecutor::new(2)?;
/// let fs: Vec<_> = (0..4u64).map(|i| ex.submit(|i: u64| i * 10, i)).collect::<mp::Result<_>>()?;
/// let got: Vec<u64> = fs.iter().map(|f| f.result()).collect::<mp::Result<_>>()?;
/// assert_eq!(got, [0, 10, 20, 30]);
/// let squares: Vec<u64> = ex.map(|x: u64| x * x, 0..5)?.collect::<mp::Result<_>>()?;
/// assert_eq!(squares, [0, 1, 4, 9, 16]);
/// ex.shutdown(true, false);
/// # Ok::<(), mp::Error>(())
/// ```
pub struct ThreadPoolExecutor {
    /// The pool doing the work (an `Arc`: futures hold it weakly, for
    /// `cancel_running`).
    pool: Arc<Pool>,
    /// Futures not known to be done (weakly: a dropped future is forgotten).
    futures: Mutex<Vec<Weak<dyn Cancel>>>,
    /// Set if the initializer failed.
    broken: Broken,
}

/// Configures a [`ThreadPoolExecutor`]: the process builder's methods.
///
/// Python: the arguments of `ThreadPoolExecutor(max_workers, initializer,
/// initargs)` (and the process executor's `max_tasks_per_child`).
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// let ex = mp::futures::ThreadPoolExecutor::builder()
///     .max_workers(2)
///     .initializer(|level: u8| assert_eq!(level, 3), 3)
///     .max_tasks_per_child(100)
///     .build()?;
/// assert_eq!(ex.submit(|x: u8| x + 1, 1)?.result()?, 2);
/// # Ok::<(), mp::Error>(())
/// ```
#[must_use = "a builder does nothing until build() is called"]
#[derive(Debug)]
pub struct ExecutorBuilder {
    /// The pool's builder.
    pool: PoolBuilder,
    /// Shared with the initializer and, once built, the executor.
    broken: Broken,
    /// `max_memory_per_child`: refused by `build` (see there).
    max_memory: Option<u64>,
}

impl ExecutorBuilder {
    /// The number of worker threads (default: [`cpu_count`](crate::cpu_count)).
    ///
    /// Python: `max_workers`.
    pub fn max_workers(mut self, n: usize) -> Self {
        self.pool = self.pool.processes(n);
        self
    }

    /// Runs `f(arg)` on every worker thread when it starts. A panic there
    /// breaks the executor: every task not yet started and every later submit
    /// fails with that [`Error::Remote`] (Python: `BrokenThreadPool`).
    ///
    /// Python: `initializer`, `initargs`.
    pub fn initializer<F, A, R>(mut self, f: F, arg: A) -> Self
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Serialize + DeserializeOwned,
    {
        let broken = self.broken.clone();
        self.pool = self.pool.initializer(
            move |a: A| {
                let name = current_process().name().to_string();
                if let Err(e) = run_caught(&name, || drop(f(a))) {
                    let _ = broken.set(e);
                }
            },
            arg,
        );
        self
    }

    /// A worker thread exits after `n` tasks and a fresh one replaces it.
    ///
    /// Python: `max_tasks_per_child`.
    pub fn max_tasks_per_child(mut self, n: usize) -> Self {
        self.pool = self.pool.maxtasksperchild(n);
        self
    }

    /// Refused: [`build`](Self::build) gives [`Error::Value`]. Worker threads
    /// share this process's memory, so there is no memory of one worker to
    /// measure, and replacing a thread frees none (the process version
    /// replaces a worker process whose RSS is above `bytes`).
    pub fn max_memory_per_child(mut self, bytes: u64) -> Self {
        self.max_memory = Some(bytes);
        self
    }

    /// A task timeout for every task: past it the future gives
    /// [`Error::Timeout`] and a fresh worker takes the busy one's place (the
    /// busy thread runs on until its function returns: a thread cannot be
    /// killed). [`ThreadPoolExecutor::submit_with_timeout`] overrides it per
    /// task.
    ///
    /// Beyond Python (pebble's `schedule(timeout=)`).
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.pool = self.pool.task_timeout(timeout);
        self
    }

    /// Starts the worker threads.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for 0 workers, a `max_tasks_per_child` of 0, or a
    /// `max_memory_per_child` (see there); [`Error::Encode`] for an
    /// initializer argument that does not encode; [`Error::Spawn`] when the OS
    /// refuses a thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::dummy as mp;
    /// let b = mp::futures::ThreadPoolExecutor::builder().max_memory_per_child(1 << 30);
    /// assert!(matches!(b.build(), Err(mp::Error::Value(_))));
    /// ```
    pub fn build(self) -> Result<ThreadPoolExecutor> {
        if self.max_memory.is_some() {
            return Err(Error::value(
                "max_memory_per_child is for worker processes: worker threads share \
                 one process's memory, so none of it is a worker's own to measure or free",
            ));
        }
        Ok(ThreadPoolExecutor {
            pool: Arc::new(self.pool.build()?),
            futures: Mutex::new(Vec::new()),
            broken: self.broken,
        })
    }
}

impl ThreadPoolExecutor {
    /// An executor of `max_workers` worker threads.
    ///
    /// Python: `ThreadPoolExecutor(max_workers)`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for 0 workers (Python: `ValueError`); as
    /// [`ExecutorBuilder::build`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::dummy as mp;
    /// assert!(matches!(mp::futures::ThreadPoolExecutor::new(0), Err(mp::Error::Value(_))));
    /// ```
    pub fn new(max_workers: usize) -> Result<ThreadPoolExecutor> {
        Self::builder().max_workers(max_workers).build()
    }

    /// A builder, for an initializer, `max_tasks_per_child` or a task timeout.
    pub fn builder() -> ExecutorBuilder {
        ExecutorBuilder {
            pool: Pool::builder(),
            broken: Arc::new(OnceLock::new()),
            max_memory: None,
        }
    }

    /// The number of workers.
    pub fn max_workers(&self) -> usize {
        self.pool.processes()
    }

    /// This process's pid once per worker thread alive now (they are threads
    /// of this process); empty once shut down.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.pool.worker_pids()
    }

    /// Schedules `f(arg)` on a worker thread; its [`Future`].
    ///
    /// Python: `Executor.submit(fn, *args)`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after [`shutdown`](Self::shutdown) (Python:
    /// `RuntimeError`); the initializer's error once it failed. The task's
    /// errors come from the future.
    pub fn submit<F, A, R>(&self, f: F, arg: A) -> Result<Future<R>>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Send + 'static,
        R: Send + 'static,
    {
        self.submit_inner(f, arg, None)
    }

    /// Like [`submit`](Self::submit), but the task may run at most `timeout`:
    /// past it, the future gives [`Error::Timeout`] and a fresh worker takes
    /// the busy one's place (the busy thread runs on until its function
    /// returns, and then exits).
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
    /// use multiprocess::dummy as mp;
    /// use std::time::Duration;
    /// let ex = mp::futures::ThreadPoolExecutor::new(1)?;
    /// let go = mp::Event::new()?;
    /// let g = go.clone();
    /// let f = ex.submit_with_timeout(move |_: ()| g.wait(), (), Duration::from_millis(50))?;
    /// assert!(matches!(f.result(), Err(mp::Error::Timeout)));
    /// go.set(); // lets the overrunning thread return, so shutdown can end
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn submit_with_timeout<F, A, R>(&self, f: F, arg: A, timeout: Duration) -> Result<Future<R>>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Send + 'static,
        R: Send + 'static,
    {
        self.submit_inner(f, arg, Some(timeout))
    }

    fn submit_inner<F, A, R>(&self, f: F, arg: A, timeout: Option<Duration>) -> Result<Future<R>>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Send + 'static,
        R: Send + 'static,
    {
        self.check_broken()?;
        let core = Core::<R>::new(Arc::downgrade(&self.pool));
        let (mine, theirs, broken) = (core.clone(), core.clone(), self.broken.clone());
        let run = move || {
            if !mine.claim() {
                return; // cancelled (or failed) before a worker took it
            }
            if let Some(e) = broken.get() {
                mine.finish(Err(e.duplicate()));
                return;
            }
            let name = current_process().name().to_string();
            let outcome = with_current(mine.state(), || run_caught(&name, || f(arg)));
            if !mine.finish(outcome) && mine.is_cancelled() {
                // `cancel_running` won while it ran and started a worker in
                // this one's place: this one exits now.
                retire_current_worker();
            }
        };
        let fail = Arc::new(move |e: Error| theirs.finish(Err(e)));
        self.pool.submit_task(Box::new(run), fail, timeout)?;
        self.remember(&core);
        Ok(Future { core })
    }

    /// The initializer's error, if it failed.
    fn check_broken(&self) -> Result<()> {
        match self.broken.get() {
            Some(e) => Err(e.duplicate()),
            None => Ok(()),
        }
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
    /// tasks ahead of the consumer (on a feeder thread), so an endless input
    /// works. An `Err` ends the iteration; dropping the iterator cancels the
    /// rest.
    ///
    /// Python: `Executor.map(fn, iterable)`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after shutdown; the initializer's error once it
    /// failed; [`Error::Spawn`] if the feeder thread cannot start. Per item:
    /// the task's error.
    pub fn map<F, A, R, I>(&self, f: F, items: I) -> Result<MapIter<R>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'static,
    {
        self.map_with(f, items, MapOptions::default())
    }

    /// [`map`](Self::map) with Python's `chunksize`, `timeout` and `buffersize`
    /// ([`MapOptions`]; `buffersize` `None` is 4 tasks per worker here).
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
    /// use multiprocess::dummy as mp;
    /// use mp::futures::MapOptions;
    /// let ex = mp::futures::ThreadPoolExecutor::new(2)?;
    /// // An endless input with a bounded read-ahead: take what you need.
    /// let opts = MapOptions::new().chunksize(10).buffersize(4);
    /// let first: Vec<u64> = ex.map_with(|x: u64| x + 1, 0u64.., opts)?.take(25).collect::<mp::Result<_>>()?;
    /// assert_eq!(first, (1..=25).collect::<Vec<_>>());
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn map_with<F, A, R, I>(&self, f: F, items: I, opts: MapOptions) -> Result<MapIter<R>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'static,
    {
        if opts.buffersize == Some(0) {
            return Err(Error::value("buffersize must be at least 1"));
        }
        self.check_broken()?;
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

    /// Stops accepting work. With `cancel_futures`, futures no worker has
    /// taken yet are cancelled. With `wait`, returns once all the remaining
    /// work is done and the worker threads have exited; without, at once (the
    /// work goes on; dropping the executor then waits for it). Calling it again
    /// is harmless.
    ///
    /// Python: `Executor.shutdown(wait=True, *, cancel_futures=False)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::dummy as mp;
    /// let ex = mp::futures::ThreadPoolExecutor::new(1)?;
    /// let f = ex.submit(|x: u8| x, 5)?;
    /// ex.shutdown(true, false);
    /// assert_eq!(f.result()?, 5);
    /// assert!(matches!(ex.submit(|x: u8| x, 6), Err(mp::Error::Closed)));
    /// # Ok::<(), mp::Error>(())
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
            // Refused only on one of its own workers (it would wait for
            // itself); there, not waiting is all that can be done.
            let _ = self.pool.join();
        }
    }

    /// Stops now: every unfinished future fails with [`Error::Closed`], idle
    /// workers exit, later submits give [`Error::Closed`]; returns at once. A
    /// thread cannot be killed: a worker busy in a function exits when the
    /// function returns (its result is dropped).
    ///
    /// Python 3.14: `ProcessPoolExecutor.terminate_workers()` (which kills
    /// processes).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::dummy as mp;
    /// let ex = mp::futures::ThreadPoolExecutor::new(1)?;
    /// let go = mp::Event::new()?;
    /// let g = go.clone();
    /// let f = ex.submit(move |_: ()| g.wait(), ())?;
    /// ex.terminate_workers();
    /// assert!(matches!(f.result(), Err(mp::Error::Closed)));
    /// go.set();
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn terminate_workers(&self) {
        self.pool.terminate();
    }
}

impl Drop for ThreadPoolExecutor {
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}

impl fmt::Debug for ThreadPoolExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPoolExecutor")
            .field("pool", &self.pool)
            .field("broken", &self.broken.get().is_some())
            .finish()
    }
}

/// The results of [`ThreadPoolExecutor::map`], in input order.
///
/// Python: the generator `Executor.map` returns.
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// let ex = mp::futures::ThreadPoolExecutor::new(2)?;
/// let mut it = ex.map(|x: i32| if x == 2 { panic!("two") } else { x }, 0..5)?;
/// assert_eq!(it.next().transpose()?, Some(0));
/// assert_eq!(it.next().transpose()?, Some(1));
/// assert!(matches!(it.next(), Some(Err(mp::Error::Remote { .. }))));
/// assert!(it.next().is_none()); // an error ends it, as Python's raise does
/// # Ok::<(), mp::Error>(())
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
            // An error or the end: stop reading the input; the chunks still
            // queued are skipped (Python's generator cancels the rest).
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
