//! Submitting work to a pool: the job type, and the state the
//! [`Pool`](super::Pool) handle, `imap` feeders and the scheduler thread
//! share (the submit queue, the life-cycle state, the wake-up eventfd, and
//! the [`Scheduler`] state under its lock).
//!
//! The scheduler (`scheduler.rs`) takes submitted tasks (`task.rs`) and
//! places them on workers; `worker_io.rs` is the parent side of one worker's
//! socket; `child.rs` is the loop that runs in the worker process. The
//! [`Scheduler`] struct is defined here, beside the [`Inner`] that holds it,
//! so that the modules depend on each other without a cycle.

use crate::util::Unpoison;
use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use super::ring::RingWatch;
use super::task::{InitSpec, Task};
use super::worker_io::{self, Worker, WorkerSpec};
use crate::error::{Error, Result};
use crate::platform::fd::EventFd;

/// A task's encoded result as it came back, borrowed from the read buffer.
pub(crate) struct Body<'a> {
    /// The encoded value.
    pub(crate) bytes: &'a [u8],
    /// The fds its handles carry.
    pub(crate) fds: Vec<OwnedFd>,
}

/// One submitted call (`apply_async`, `map_async`, `imap`), type-erased so the
/// handler can finish it. Callbacks run inside `complete`, on the handler thread.
pub(crate) trait Job: Send {
    /// Task `index` of this job finished; true once the job needs nothing more.
    fn complete(&mut self, index: u64, outcome: Result<Body<'_>>) -> bool;
    /// True once the job needs nothing more (checked on a tick).
    fn finished(&self) -> bool {
        false
    }
    /// True when nobody wants the results any more: queued tasks are dropped.
    fn cancelled(&self) -> bool {
        false
    }
    /// A task of this job is about to go to a worker: false drops it instead
    /// (answered with `Error::Closed`). A futures job marks its future running
    /// here, unless it was cancelled first.
    fn claim(&self) -> bool {
        !self.cancelled()
    }
    /// The submitting thread placed this job's one task on an idle worker's
    /// ring itself: `direct` lets the job's waiter take the answer from that
    /// ring without the handler thread. False if the job does not take that
    /// path (it has callbacks to run on the handler thread), which keeps the
    /// task on the handler's path.
    fn direct(&self, _direct: Direct) -> bool {
        false
    }
}

/// A task placed on an idle worker's ring by the thread that submitted it:
/// what a thread waiting for its answer needs to read that answer from the
/// ring itself (see `scheduler.rs`, "The direct path").
#[derive(Clone)]
pub(crate) struct Direct {
    /// The pool (weak: a waiting result must not keep it alive).
    pub(crate) pool: Weak<Inner>,
    /// The worker it went to.
    pub(crate) pid: u32,
    /// The task.
    pub(crate) task: u64,
    /// The worker's result ring.
    pub(crate) watch: RingWatch,
    /// The submitting thread waits at once (`Pool::apply`): it entered the
    /// ring watch when placing the task, so that an answer coming before it
    /// waits does not wake the handler; the wait (or the result's setting)
    /// leaves it.
    pub(crate) held: bool,
}

/// The pool's life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PoolState {
    /// Accepting work.
    Run,
    /// `close()`: finishing the work there is.
    Close,
    /// `terminate()`: stopping now.
    Terminate,
}

/// What submitters and the handler share.
pub(crate) struct Shared {
    /// The life-cycle state.
    pub(crate) state: PoolState,
    /// The handler thread has exited: nothing will be served any more.
    pub(crate) finished: bool,
    /// Why the pool is broken, if it is.
    pub(crate) broken: Option<Error>,
    /// Tasks not yet taken by the handler.
    pub(crate) queue: VecDeque<Task>,
    /// Jobs not yet taken by the handler.
    pub(crate) new_jobs: Vec<(u64, Box<dyn Job>)>,
    /// Jobs whose `finished()` should be checked again.
    pub(crate) ticks: Vec<u64>,
    /// The handler may be blocked in `poll`: write the eventfd to wake it.
    pub(crate) asleep: bool,
    /// Workers alive (for `Debug` and tests of the pool size).
    pub(crate) worker_pids: Vec<u32>,
    /// Tasks whose worker is to be killed if it is running them
    /// (`mp::futures::Future::cancel_running`).
    pub(crate) kill_tasks: Vec<u64>,
}

/// The pool, shared by the `Pool` handle, the handler thread and feeders.
pub(crate) struct Inner {
    /// State shared with submitters.
    pub(crate) shared: Mutex<Shared>,
    /// The workers, queue and jobs: the handler thread's while it works,
    /// and the direct path's (`try_lock`) while it sleeps; `None` before the
    /// handler starts and after it exits. Locked before `shared`, never after.
    pub(crate) core: Mutex<Option<Scheduler>>,
    /// Written to wake the handler.
    pub(crate) wake: EventFd,
    /// Bumped by every submit, tick and state change: what the handler
    /// watches while it spins before sleeping.
    pub(crate) submits: AtomicU32,
    /// Task and job ids.
    pub(crate) ids: AtomicU64,
    /// The number of workers.
    pub(crate) processes: usize,
    /// `maxtasksperchild`.
    pub(crate) maxtasks: Option<u64>,
    /// The pool-wide task timeout.
    pub(crate) task_timeout: Option<Duration>,
    /// Retire a worker whose resident memory is above this after a task.
    pub(crate) max_memory: Option<u64>,
    /// How workers are started.
    pub(crate) method: crate::context::method::StartMethod,
    /// The initializer; dropped (with the fds its argument holds) once the
    /// handler has exited.
    pub(crate) init: Mutex<Option<InitSpec>>,
    /// The handler thread, until joined.
    pub(crate) thread: Mutex<Option<JoinHandle<()>>>,
    /// The handler thread's id (callbacks run there).
    pub(crate) thread_id: OnceLock<ThreadId>,
    /// Workers connect over TCP, each through a local relay (`remote.rs`).
    pub(crate) remote: Option<super::remote::RemoteSpec>,
}

impl Inner {
    /// Starts one worker (on any thread).
    pub(crate) fn start_worker(&self) -> Result<Worker> {
        worker_io::start_worker(WorkerSpec {
            init: &self.init,
            remote: self.remote.as_ref(),
            wake: &self.wake,
            maxtasks: self.maxtasks,
            method: self.method,
        })
    }

    /// Hands a job and its tasks to the handler. `internal` submits (an `imap`
    /// feeder) are accepted after `close()`, since their call was.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after close (unless internal) or terminate, or once the
    /// handler has exited; the broken pool's error when broken. The job and
    /// tasks are dropped then (the job's result becomes that error).
    pub(crate) fn submit(
        &self,
        job: Option<(u64, Box<dyn Job>)>,
        tasks: Vec<Task>,
        internal: bool,
    ) -> Result<()> {
        let (job, tasks) = match (job, internal) {
            (Some(j), false) if tasks.len() == 1 => match self.place_direct(j, tasks, false) {
                Ok(()) => return Ok(()),
                Err((j, tasks)) => (Some(j), tasks),
            },
            (job, _) => (job, tasks),
        };
        self.enqueue(job, tasks, internal)
    }

    /// [`submit`](Self::submit)'s queue for the handler.
    fn enqueue(
        &self,
        job: Option<(u64, Box<dyn Job>)>,
        tasks: Vec<Task>,
        internal: bool,
    ) -> Result<()> {
        let mut s = self.shared.lock().unpoison();
        if let Some(b) = &s.broken {
            return Err(b.duplicate());
        }
        let open = match s.state {
            PoolState::Run => true,
            PoolState::Close => internal,
            PoolState::Terminate => false,
        };
        if !open || s.finished {
            return Err(Error::Closed);
        }
        if let Some(j) = job {
            s.new_jobs.push(j);
        }
        s.queue.extend(tasks);
        let wake = std::mem::replace(&mut s.asleep, false);
        drop(s);
        self.submits.fetch_add(1, Ordering::Release);
        if wake {
            self.wake_handler();
        }
        Ok(())
    }

    /// Submits a job of one task whose result the calling thread waits for
    /// at once (`Pool::apply`): placed directly, the wait is registered with
    /// the worker's ring before the task is, so the worker never wakes the
    /// handler for its answer.
    ///
    /// # Errors
    ///
    /// As [`submit`](Self::submit).
    pub(crate) fn submit_waited(&self, job: (u64, Box<dyn Job>), task: Task) -> Result<()> {
        match self.place_direct(job, vec![task], true) {
            Ok(()) => Ok(()),
            Err((j, tasks)) => self.enqueue(Some(j), tasks, false),
        }
    }

    /// Asks the handler to look at job `id` again.
    pub(crate) fn tick(&self, id: u64) {
        let mut s = self.shared.lock().unpoison();
        if s.finished {
            return;
        }
        s.ticks.push(id);
        let wake = std::mem::replace(&mut s.asleep, false);
        drop(s);
        self.submits.fetch_add(1, Ordering::Release);
        if wake {
            self.wake_handler();
        }
    }

    /// Moves to `state` (never back to `Run`, never from `Terminate`).
    pub(crate) fn set_state(&self, state: PoolState) {
        let mut s = self.shared.lock().unpoison();
        let next = match (s.state, state) {
            (PoolState::Terminate, _) => PoolState::Terminate,
            (_, PoolState::Terminate) => PoolState::Terminate,
            (PoolState::Close, _) => PoolState::Close,
            (PoolState::Run, st) => st,
        };
        s.state = next;
        s.asleep = false;
        drop(s);
        self.submits.fetch_add(1, Ordering::Release);
        self.wake_handler();
    }

    pub(crate) fn wake_handler(&self) {
        // The counter cannot overflow from single increments in practice; a
        // failed write (EAGAIN at the maximum) still leaves the fd readable.
        let _ = self.wake.write(1);
    }

    /// Asks the handler to kill the worker running task `id` (if one is; a
    /// task not started is left alone). The task's answer is whatever the
    /// worker's death gives it; the worker is replaced.
    pub(crate) fn kill_task(&self, id: u64) {
        let mut s = self.shared.lock().unpoison();
        if s.finished {
            return;
        }
        s.kill_tasks.push(id);
        let wake = std::mem::replace(&mut s.asleep, false);
        drop(s);
        if wake {
            self.wake_handler();
        }
    }

    /// A new id for a job or task.
    pub(crate) fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }
}

/// The pool's scheduling state: the workers, the queue and the jobs. It
/// lives in [`Inner::core`] under one lock: the handler thread holds it while
/// it works (not while it sleeps in `poll`), and a submitting or waiting
/// thread takes it (`try_lock`, never blocking behind the handler) for the
/// direct path (see `scheduler.rs`, "The direct path"). It is defined here, beside
/// [`Inner`] which holds it; its methods are in `scheduler.rs`.
pub(crate) struct Scheduler {
    /// Shared with the pool handle.
    pub(super) inner: Arc<Inner>,
    /// The live workers. Only the handler thread adds or removes one, so
    /// they hold still while it sleeps.
    pub(super) workers: Vec<Worker>,
    /// Tasks waiting for a worker, oldest first.
    pub(super) pending: VecDeque<Task>,
    /// Jobs not finished.
    pub(super) jobs: HashMap<u64, Box<dyn Job>>,
    /// The state last seen.
    pub(super) state: PoolState,
    /// Why the pool is broken.
    pub(super) broken: Option<Error>,
    /// Worker starts that failed in a row.
    pub(super) start_failures: u32,
    /// Do not retry a failed start before this.
    pub(super) retry_at: Option<Instant>,
    /// The last start error.
    pub(super) last_start_error: Option<String>,
    /// When to look again for tasks to take back (see `steal`).
    pub(super) steal_at: Option<Instant>,
    /// Where ring records are copied to be handled.
    pub(super) scratch: Vec<u8>,
}
