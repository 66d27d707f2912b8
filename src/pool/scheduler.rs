//! The pool's scheduler: one thread in the parent that does what CPython's
//! three handler threads (worker, task and result handler) do.
//!
//! It owns the workers. One `poll` covers every worker's socket and pidfd and
//! an eventfd that submitters write when the thread sleeps. Sockets are
//! non-blocking on this side, with a write cursor and a read buffer per worker,
//! so a large task on its way to a worker never stops results from coming back
//! (the deadlock CPython avoids with separate task and result threads).
//!
//! # States
//!
//! | state | submits | the thread |
//! |---|---|---|
//! | `Run` | accepted | serves work, replaces dead or retired workers |
//! | `Close` | `Error::Closed` (an `imap` already running still feeds) | finishes all work, then closes the workers' sockets, reaps them and exits |
//! | `Terminate` | `Error::Closed` | SIGKILLs the workers, fails every unfinished task with `Error::Closed`, reaps, exits |
//!
//! A pool whose workers cannot start (the initializer panics, or start-up
//! fails three times in a row) is *broken*: every unfinished task and every
//! later submit fails with that error, and the thread exits.
//!
//! # Never hang, never lose a task
//!
//! A worker's death is seen on its pidfd. The task it was running (see
//! `child.rs` and `gate.rs` for how that is known exactly) fails with `Error::WorkerLost`;
//! tasks sent to it but not started go back to the front of the queue; a
//! replacement starts. A task overrunning its timeout gets its worker killed and
//! fails with `Error::Timeout`. Every job that is dropped unanswered sets its
//! result to an error on drop, so even a bug here ends in an error, not a hang.

use crate::util::Unpoison;
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use super::child::{self, Reply, WireFailure};
use super::gate::{self};
use super::ring::{self, ParentRing, Record};
use super::submit::{Body, Direct, Inner, Job, PoolState, Scheduler};
use super::task::Task;
use super::worker_io::{
    InFlight, MAX_IN_FLIGHT, MAX_IN_FLIGHT_TINY, PREFETCH_MAX_TASK_TIME, Phase, TINY_TASK_TIME,
    Worker,
};
use crate::connection::DEFAULT_MAX_MESSAGE_LEN;
use crate::connection::reader::FrameReader;
use crate::error::{Error, RemoteError, Result};
use crate::platform::fd;
use crate::reduction::{self};
use crate::spawn::{self};

/// While a worker is idle and nothing is queued, tasks waiting behind one that
/// has run this long on another worker are taken back and run by the idle one.
const STEAL_AFTER: Duration = Duration::from_millis(2);
/// How often the scheduler looks whether a task with a timeout has started
/// when it was written but not yet claimed.
const START_POLL: Duration = Duration::from_millis(5);
/// How soon the scheduler looks again at a worker whose ring had no room for
/// the next task (records taken back, which the worker skips when it next
/// reads).
const RING_RETRY: Duration = Duration::from_millis(1);
/// While a worker has tasks, the handler looks at its ring at least this
/// often, whatever woke it or not (see `next_deadline`).
const IN_FLIGHT_LOOK: Duration = Duration::from_millis(200);
/// The scheduler's spin yields its CPU once in this many rounds of checks (a
/// few microseconds).
const YIELD_EVERY: u32 = 8;
/// Consecutive worker start-up failures after which the pool is broken.
const MAX_START_FAILURES: u32 = 3;
/// Pause before retrying a failed worker start.
const START_RETRY_DELAY: Duration = Duration::from_millis(100);
/// How long `close()` waits for idle workers to exit after their sockets are
/// closed before it kills them.
const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// How long the scheduler waits for a worker it killed to die.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// The handler thread's own state (what it keeps while it sleeps unlocked).
struct Handler {
    /// Shared with the pool handle.
    inner: Arc<Inner>,
    /// Whether spinning before a sleep pays.
    spin: ring::SpinGate,
}

/// What the handler watches while it waits without the lock: per worker,
/// its fds (shared, so that closing the worker's socket meanwhile closes
/// nothing under `poll`) and its result ring.
struct Watch {
    /// When to look again at the latest.
    deadline: Option<Instant>,
    /// One entry per worker, in `workers` order.
    workers: Vec<WatchedWorker>,
    /// No worker is ready yet (the pool's start-up): what comes next comes
    /// on a socket (`Started`, `Ready`), which a spin does not watch, and a
    /// submit could go nowhere, so the wait does not spin.
    none_ready: bool,
}

struct WatchedWorker {
    /// Which worker (indexes are checked against it).
    pid: u32,
    /// Its socket while open and not at end of file, and whether something
    /// waits to be written on it.
    sock: Option<(Arc<OwnedFd>, bool)>,
    /// Its pidfd while not seen to exit.
    pidfd: Option<Arc<OwnedFd>>,
    /// Its rings.
    ring: ring::RingWatch,
    /// Its ring has records the scheduler can serve (see `Worker::has_results`).
    servable: bool,
}

/// A `poll`'s events, and per watched worker where its socket's and pidfd's
/// events are in them.
type Polled = (Vec<i16>, Vec<(Option<usize>, Option<usize>)>);

/// What the handler does after one pass over its work.
enum Step {
    /// Sleep until the deadline or an event.
    Wait(Option<Instant>),
    /// The pool is shut down.
    Exit,
}

/// Starts the handler thread over `workers`.
///
/// # Errors
///
/// [`Error::Io`] if the thread cannot be started (the workers are then killed).
pub(crate) fn spawn_scheduler(inner: Arc<Inner>, workers: Vec<Worker>) -> Result<()> {
    let core = Scheduler {
        inner: inner.clone(),
        workers,
        pending: VecDeque::new(),
        jobs: HashMap::new(),
        state: PoolState::Run,
        broken: None,
        start_failures: 0,
        retry_at: None,
        last_start_error: None,
        steal_at: None,
        scratch: Vec::new(),
    };
    core.publish_pids();
    let mut h = Handler {
        inner: inner.clone(),
        spin: ring::SpinGate::tolerant(),
    };
    // Put in place before the thread runs; taken out (which ends the cycle
    // `Inner` -> `Scheduler` -> `Inner`) when it exits.
    *inner.core.lock().unpoison() = Some(core);
    let spawned = std::thread::Builder::new()
        .name("multiprocess-pool".into())
        .spawn(move || {
            let run = catch_unwind(AssertUnwindSafe(|| h.run()));
            let Some(mut core) = h.inner.core.lock().unpoison().take() else {
                return;
            };
            if let Err(p) = run {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                let mut s = core.inner.shared.lock().unpoison();
                s.broken.get_or_insert_with(|| {
                    Error::value(format!("the pool's handler thread panicked: {msg}"))
                });
                drop(s);
                core.shutdown_now(&Error::value(format!(
                    "the pool's handler thread panicked: {msg}"
                )));
            }
            // Outside the lock: the jobs dropped here run callbacks.
            core.exit();
        });
    let thread = match spawned {
        Ok(t) => t,
        Err(e) => {
            // Dropping the workers kills them.
            inner.core.lock().unpoison().take();
            return Err(e.into());
        }
    };
    let _ = inner.thread_id.set(thread.thread().id());
    *inner.thread.lock().unpoison() = Some(thread);
    Ok(())
}

impl Handler {
    fn run(&mut self) {
        loop {
            let watch = {
                let mut g = self.inner.core.lock().unpoison();
                let Some(core) = g.as_mut() else { return };
                match core.step() {
                    Step::Exit => return,
                    Step::Wait(deadline) => core.watch(deadline),
                }
            };
            let revents = self.wait(&watch);
            let mut g = self.inner.core.lock().unpoison();
            let Some(core) = g.as_mut() else { return };
            core.serve(&watch, revents);
            drop(watch);
            core.check_deadlines();
        }
    }

    /// Spins, then polls the wake fd and every worker until the deadline.
    /// The poll's events, or `None` when the spin saw work come.
    fn wait(&self, watch: &Watch) -> Option<Polled> {
        if !watch.none_ready && self.spin_for_work(watch) {
            return None;
        }
        // Raise the flags that make a worker write the eventfd, then look once
        // more: a result published before the flag was seen is served now.
        for w in &watch.workers {
            w.ring.set_parent_sleeps(true);
        }
        let deadline = if watch.workers.iter().any(WatchedWorker::ready) {
            Some(Instant::now())
        } else {
            watch.deadline
        };
        let mut fds: Vec<(std::os::fd::BorrowedFd<'_>, i16)> =
            Vec::with_capacity(1 + 2 * watch.workers.len());
        fds.push((self.inner.wake.as_fd(), fd::READABLE));
        let mut map = Vec::with_capacity(watch.workers.len());
        for w in &watch.workers {
            let sock = w.sock.as_ref().map(|(f, writable)| {
                let mut ev = fd::READABLE;
                if *writable {
                    ev |= fd::WRITABLE;
                }
                fds.push((f.as_fd(), ev));
                fds.len() - 1
            });
            let pid = w.pidfd.as_ref().map(|f| {
                fds.push((f.as_fd(), fd::READABLE));
                fds.len() - 1
            });
            map.push((sock, pid));
        }
        let polled = fd::poll(&fds, deadline);
        for w in &watch.workers {
            w.ring.set_parent_sleeps(false);
        }
        match polled {
            Ok(r) => Some((r, map)),
            Err(_) => None,
        }
    }

    /// Before sleeping: watches the rings and the submit counter for up to
    /// [`ring::spin_for`] (not past the deadline), so that a result or a
    /// submit that comes that soon costs no sleep and wake-up. True if one came.
    fn spin_for_work(&self, watch: &Watch) -> bool {
        let start = Instant::now();
        let budget = self.spin.budget();
        if budget.is_zero() {
            return false;
        }
        let deadline = watch.deadline;
        let until = deadline.map_or(start + budget, |d| d.min(start + budget));
        let seen = self.inner.submits.load(Ordering::Acquire);
        let mut rounds = 0u32;
        loop {
            for _ in 0..16 {
                if self.inner.submits.load(Ordering::Relaxed) != seen
                    || watch.workers.iter().any(WatchedWorker::ready)
                {
                    self.spin.record(true);
                    return true;
                }
                std::hint::spin_loop();
            }
            // On a machine whose CPUs are all taken, the thread this spin
            // waits for (a worker, a feeder) may be waiting for this CPU:
            // let it run now and then (a no-op when nothing else is runnable).
            rounds += 1;
            if rounds % YIELD_EVERY == 0 {
                std::thread::yield_now();
            }
            if Instant::now() >= until {
                // A wait cut short by a deadline says nothing about the spin.
                if deadline.is_none_or(|d| d > until) {
                    self.spin.record(false);
                }
                return false;
            }
        }
    }
}

impl WatchedWorker {
    /// Its ring holds results for the scheduler: servable, and no thread
    /// waiting in it for its own result (that thread reads them, and hands
    /// what it leaves to the scheduler, see `RingWatch::leave`).
    fn ready(&self) -> bool {
        self.servable && !self.ring.has_waiters() && self.ring.has_unread()
    }
}

impl Scheduler {
    /// One pass: takes submissions, handles the life cycle, starts workers,
    /// steals and dispatches. Then: when to look again, or exit.
    fn step(&mut self) -> Step {
        self.take_submissions();
        match self.state {
            PoolState::Terminate => {
                self.shutdown_now(&Error::Closed);
                return Step::Exit;
            }
            _ if self.broken.is_some() => {
                let e = self.broken.take().unwrap_or(Error::Closed);
                self.shutdown_now(&e);
                self.broken = Some(e);
                return Step::Exit;
            }
            PoolState::Close if self.all_done() => {
                self.shutdown_gracefully();
                return Step::Exit;
            }
            _ => {}
        }
        self.replace_workers();
        self.steal();
        self.dispatch();
        // Dispatch may have emptied the queue without filling an idle
        // worker (tasks answered without sending, fewer tasks than idle
        // workers): look again, or the steal waits for an unrelated event.
        self.steal();
        self.dispatch();
        // Dispatch may have finished jobs (tasks of a dropped imap) and a
        // failed start may have broken the pool: look again at once then.
        let settled = self.broken.is_some() || (self.state == PoolState::Close && self.all_done());
        Step::Wait(if settled {
            Some(Instant::now())
        } else {
            self.next_deadline()
        })
    }

    /// What the handler watches while it sleeps.
    fn watch(&self, deadline: Option<Instant>) -> Watch {
        let workers = self
            .workers
            .iter()
            .map(|w| WatchedWorker {
                pid: w.pid,
                sock: w
                    .sock
                    .as_ref()
                    .filter(|_| !w.eof)
                    .map(|s| (s.clone(), w.unsent_on_socket())),
                pidfd: (!w.exited()).then(|| w.pidfd.clone()),
                ring: w.ring.watch(),
                servable: !w.marker_waits && w.ring_broken.is_none() && w.phase == Phase::Ready,
            })
            .collect();
        let none_ready = self.workers.iter().all(|w| w.phase != Phase::Ready);
        Watch {
            deadline,
            workers,
            none_ready,
        }
    }

    /// Serves what the wait brought: the poll's events (`None`: the spin saw
    /// work), then every ring, then the dead.
    fn serve(&mut self, watch: &Watch, revents: Option<Polled>) {
        if let Some((revents, map)) = revents {
            if revents[0] != 0 {
                let _ = self.inner.wake.read();
            }
            for (w, (sock, pid)) in watch.workers.iter().zip(map) {
                // Only this thread removes workers, so the index holds; the
                // pid check keeps it honest.
                let Some(wi) = self.workers.iter().position(|x| x.pid == w.pid) else {
                    continue;
                };
                if let Some(i) = sock {
                    let ev = revents[i];
                    if ev & fd::WRITABLE != 0 {
                        self.workers[wi].flush();
                    }
                    if ev & (fd::READABLE | fd::HUNG_UP) != 0 {
                        self.read_worker(wi);
                    }
                }
                if let Some(i) = pid {
                    if revents[i] != 0 {
                        self.workers[wi].mark_exited();
                    }
                }
            }
        }
        self.drain_rings();
        self.bury_exited();
    }

    /// Takes new jobs, tasks, ticks and the state. From here on a submitter
    /// writes the eventfd, so the next `poll` cannot miss its work.
    fn take_submissions(&mut self) {
        let mut s = self.inner.shared.lock().unpoison();
        self.state = s.state;
        for (id, job) in s.new_jobs.drain(..) {
            self.jobs.insert(id, job);
        }
        self.pending.append(&mut s.queue);
        let ticks = std::mem::take(&mut s.ticks);
        let kills = std::mem::take(&mut s.kill_tasks);
        s.asleep = true;
        drop(s);
        for id in kills {
            self.kill_task(id);
        }
        for id in ticks {
            if self.jobs.get(&id).is_some_and(|j| j.finished()) {
                self.jobs.remove(&id);
            }
        }
    }

    /// Everything submitted is answered and every worker is past its initializer.
    fn all_done(&self) -> bool {
        self.pending.is_empty()
            && self.jobs.is_empty()
            && self.workers.iter().all(|w| {
                w.inflight.is_empty()
                    && (w.phase == Phase::Ready || w.exited() || w.awaiting_remote)
            })
    }

    fn publish_pids(&self) {
        let pids = self
            .workers
            .iter()
            .filter(|w| !w.exited())
            .map(|w| w.pid)
            .collect();
        self.inner.shared.lock().unpoison().worker_pids = pids;
    }

    /// Completes task `index` of job `job`.
    fn finish(&mut self, job: u64, index: u64, outcome: Result<Body<'_>>) {
        if let Some(j) = self.jobs.get_mut(&job) {
            if j.complete(index, outcome) {
                self.jobs.remove(&job);
            }
        }
    }

    /// Starts workers until there are `processes` of them (while there is or
    /// may be work).
    fn replace_workers(&mut self) {
        let wanted = match self.state {
            PoolState::Run => self.inner.processes,
            PoolState::Close if !self.pending.is_empty() || !self.jobs.is_empty() => {
                self.inner.processes
            }
            _ => 0,
        };
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.retry_at = None;
        let mut changed = false;
        while self.workers.len() < wanted {
            match self.inner.start_worker() {
                Ok(w) => {
                    self.workers.push(w);
                    changed = true;
                }
                Err(e) => {
                    self.start_failed(format!("could not start a pool worker: {e}"));
                    self.retry_at = Some(Instant::now() + START_RETRY_DELAY);
                    break;
                }
            }
        }
        if changed {
            self.publish_pids();
        }
    }

    fn start_failed(&mut self, why: String) {
        self.start_failures += 1;
        if self.start_failures >= MAX_START_FAILURES && self.broken.is_none() {
            self.set_broken(Error::Spawn(format!(
                "the pool's workers failed to start {MAX_START_FAILURES} times in a row; last: {why}"
            )));
        }
        self.last_start_error = Some(why);
    }

    fn set_broken(&mut self, e: Error) {
        let mut s = self.inner.shared.lock().unpoison();
        if s.broken.is_none() {
            s.broken = Some(e.duplicate());
        }
        drop(s);
        self.broken.get_or_insert(e);
    }

    /// Gives queued tasks to workers with room: idle workers first, then a
    /// prefetch to workers whose tasks are short.
    fn dispatch(&mut self) {
        let now = Instant::now();
        for w in &mut self.workers {
            w.note_start();
        }
        // Level the windows: every worker gets its `depth`th task before any
        // gets its next. Start at the shallowest window, and stop at a depth
        // that placed nothing with no deeper window left to serve (a full
        // window of 256 would otherwise cost a pass that many idle rounds).
        let shallowest = self.workers.iter().map(|w| w.inflight.len()).min();
        for depth in shallowest.unwrap_or(MAX_IN_FLIGHT_TINY)..MAX_IN_FLIGHT_TINY {
            if self.pending.is_empty() || self.workers.iter().all(|w| w.inflight.len() < depth) {
                break;
            }
            for wi in 0..self.workers.len() {
                if self.pending.is_empty() {
                    break;
                }
                let w = &self.workers[wi];
                if !w.usable()
                    || w.inflight.len() != depth
                    || self.inner.maxtasks.is_some_and(|m| w.assigned >= m)
                {
                    continue;
                }
                // Prefetch only what this worker has just run quickly: the
                // same function, under the limit. A function not yet timed
                // (a new map of long tasks) waits for an idle worker instead
                // of queueing behind a long task on a busy one.
                // Nothing waits behind a frame on the socket, nor goes there
                // behind another task: the ring and the socket never
                // interleave (see `Worker::flush`).
                if depth >= MAX_IN_FLIGHT && w.last_run.is_none_or(|d| d >= TINY_TASK_TIME) {
                    continue;
                }
                if depth > 0 {
                    self.drop_dead_front();
                }
                let w = &self.workers[wi];
                if depth > 0
                    && (w.last_run.is_none_or(|d| d >= PREFETCH_MAX_TASK_TIME)
                        || w.last_func != self.pending.front().map(|t| t.func)
                        || !w.running_briefly(now)
                        || w.inflight.iter().any(|f| !f.via_ring)
                        || self
                            .pending
                            .front()
                            .is_some_and(|t| !ParentRing::fits(&t.frame, t.fds.len())))
                {
                    continue;
                }
                let Some(mut task) = self.next_task() else {
                    break;
                };
                // The front was checked after `drop_dead_front`; a job
                // cancelled since (by another thread) makes `next_task` skip
                // it and return a later task, maybe another function or one
                // for the socket: that one waits for a worker that can take
                // it. (A future it belongs to already reads as running.)
                if depth > 0
                    && (self.workers[wi].last_func != Some(task.func)
                        || !ParentRing::fits(&task.frame, task.fds.len()))
                {
                    self.pending.push_front(task);
                    continue;
                }
                let w = &mut self.workers[wi];
                w.next_seq = w.next_seq.wrapping_add(1);
                let seq = w.next_seq;
                child::set_seq(&mut task.frame, seq);
                w.assigned += 1;
                let via_ring = ParentRing::fits(&task.frame, task.fds.len());
                w.inflight.push_back(InFlight {
                    task,
                    seq,
                    started_at: None,
                    via_ring,
                    marked: false,
                });
            }
        }
        for w in &mut self.workers {
            if w.unsent() {
                w.flush();
            }
        }
    }

    /// Answers the tasks at the front of the queue that will not run (failed
    /// before they were sent, or their job was cancelled), so that the front
    /// is the task `next_task` returns and a check of it holds for that task.
    fn drop_dead_front(&mut self) {
        while let Some(t) = self.pending.front() {
            let cancelled = self.jobs.get(&t.job).is_some_and(|j| j.cancelled());
            if t.failed.is_none() && !cancelled {
                return;
            }
            let mut t = self.pending.pop_front().expect("the front is there");
            let e = t.failed.take().map_or(Error::Closed, |e| *e);
            self.finish(t.job, t.index, Err(e));
        }
    }

    /// The next task whose job still wants it.
    fn next_task(&mut self) -> Option<Task> {
        while let Some(mut t) = self.pending.pop_front() {
            if let Some(e) = t.failed.take() {
                self.finish(t.job, t.index, Err(*e));
                continue;
            }
            if self.jobs.get(&t.job).is_some_and(|j| !j.claim()) {
                self.finish(t.job, t.index, Err(Error::Closed));
                continue;
            }
            return Some(t);
        }
        None
    }

    /// The earliest task deadline, start-up deadline or time to look again
    /// (a task with a timeout not yet seen starting; a steal).
    fn next_deadline(&mut self) -> Option<Instant> {
        let now = Instant::now();
        let mut d = self.retry_at.into_iter().chain(self.steal_at).min();
        let mut earliest = |t: Instant| d = Some(d.map_or(t, |x: Instant| x.min(t)));
        for w in &mut self.workers {
            if w.phase == Phase::Booting && !w.exited() {
                earliest(w.started_at + spawn::start_timeout());
            }
            if w.ring_blocked {
                earliest(now + RING_RETRY);
            }
            // A worker wakes the handler only when no parent thread waits
            // in its ring, as the shared `WAITERS` word says; a task that
            // overwrote that word would leave its results unannounced. So
            // while a worker has work, the handler looks again now and then:
            // a result so hidden comes late instead of never.
            if !w.inflight.is_empty() {
                earliest(now + IN_FLIGHT_LOOK);
            }
            let started = w.note_start();
            if let Some(t) = w.inflight.front().and_then(|f| f.task.timeout) {
                match started {
                    Some(s) => earliest(s + t),
                    None if !w.exited() => earliest(now + START_POLL),
                    None => {}
                }
            }
        }
        d
    }

    /// Work stealing for the tail of a job: while a worker is idle and nothing
    /// is queued, tasks waiting behind one that has run [`STEAL_AFTER`] on
    /// another worker go back to the queue (the idle worker takes them next).
    /// Sets `steal_at` to when to look again.
    fn steal(&mut self) {
        self.steal_at = None;
        let maxtasks = self.inner.maxtasks;
        let idle = self.workers.iter().any(|w| {
            w.usable() && w.inflight.is_empty() && maxtasks.is_none_or(|m| w.assigned < m)
        });
        if !idle || !self.pending.is_empty() || self.state == PoolState::Terminate {
            return;
        }
        let now = Instant::now();
        let mut taken = Vec::new();
        for w in &mut self.workers {
            if w.inflight.len() < 2 || w.exited() || w.write_broken {
                continue;
            }
            // A start not yet seen is looked for again then (a claim wakes
            // nobody).
            let since = w.note_start().unwrap_or(now);
            // A deep window was sent while its tasks were tiny; once they
            // run longer, what waits in it is taken back at once, not after
            // one of them has run `STEAL_AFTER` (256 tasks of 1 ms each
            // would otherwise sit on this worker while another is idle).
            let slowed =
                w.inflight.len() > MAX_IN_FLIGHT && w.last_run.is_some_and(|d| d >= TINY_TASK_TIME);
            if !slowed && now < since + STEAL_AFTER {
                let at = since + STEAL_AFTER;
                self.steal_at = Some(self.steal_at.map_or(at, |x| x.min(at)));
                continue;
            }
            taken.extend(w.take_back());
        }
        self.pending.extend(taken);
    }

    /// Serves what every worker put in its ring.
    fn drain_rings(&mut self) {
        for wi in 0..self.workers.len() {
            if self.workers[wi].phase == Phase::Ready {
                self.drain_ring(wi);
            }
        }
    }

    /// Serves worker `wi`'s ring records in order: a frame in the ring, or
    /// one from the socket where a marker says so (once it has arrived).
    fn drain_ring(&mut self, wi: usize) {
        let mut buf = std::mem::take(&mut self.scratch);
        loop {
            let w = &mut self.workers[wi];
            if w.ring_broken.is_some() {
                break;
            }
            let (rec, tail) = match w.ring.peek(&mut buf) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(why) => {
                    self.ring_error(wi, why);
                    break;
                }
            };
            let handled = match rec {
                // Read only from a task ring; a result ring refuses it as
                // corrupt before it gets here.
                Record::Closed => {
                    self.ring_error(wi, "a close record in the result ring".into());
                    break;
                }
                Record::Frame => {
                    w.ring.consume(tail);
                    w.marker_waits = false;
                    self.handle_frame(wi, &buf)
                }
                Record::Socket => {
                    let mut frame = w.reader.pop();
                    if frame.is_none() && !w.eof && w.sock.is_some() {
                        // Its frame was written before the marker: likely in
                        // the socket by now.
                        if !w.fill() {
                            w.eof = true;
                        }
                        frame = w.reader.pop();
                    }
                    match frame {
                        Some(Ok(f)) => {
                            w.ring.consume(tail);
                            w.marker_waits = false;
                            self.handle_frame(wi, &f.bytes)
                        }
                        Some(Err(e)) => Err(e),
                        // Not all here yet: the socket's next read brings it
                        // (until then the ring is not "ready": the scheduler
                        // polls the socket instead of spinning on it).
                        None => {
                            w.marker_waits = true;
                            break;
                        }
                    }
                }
            };
            if let Err(e) = handled {
                self.protocol_error(wi, &e.to_string());
                break;
            }
        }
        self.scratch = buf;
    }

    /// Worker `wi`'s ring is corrupted: kill it; the tasks whose answers were
    /// in the ring fail with the reason when its death is handled.
    fn ring_error(&mut self, wi: usize, why: String) {
        let w = &mut self.workers[wi];
        eprintln!(
            "multiprocess: pool worker {} (pid {}) corrupted its ring ({why}); killing it",
            w.name, w.pid
        );
        w.kill();
        w.write_broken = true;
        w.ring_broken = Some(why);
    }

    /// Reads and handles every complete frame from worker `wi`.
    fn read_worker(&mut self, wi: usize) {
        self.workers[wi].marker_waits = false;
        let open = self.workers[wi].fill();
        self.parse_frames(wi);
        if !open {
            self.workers[wi].eof = true;
        }
    }

    /// Handles the frames the reader completed, until a bad one.
    /// Until the worker is ready its frames come on the socket alone; after
    /// that, in the order of its ring's records.
    fn parse_frames(&mut self, wi: usize) {
        while self.workers[wi].phase != Phase::Ready {
            let Some(frame) = self.workers[wi].reader.pop() else {
                return;
            };
            let handled = frame.and_then(|f| self.handle_frame(wi, &f.bytes));
            if let Err(e) = handled {
                self.protocol_error(wi, &e.to_string());
                return;
            }
        }
        self.drain_ring(wi);
        // A bad frame on the socket is a protocol error at once, marker or
        // not: nothing after it in the stream can be read.
        let w = &mut self.workers[wi];
        if w.reader.failed() && w.ring_broken.is_none() && !w.exited() {
            let why = loop {
                match w.reader.pop() {
                    Some(Err(e)) => break e.to_string(),
                    Some(Ok(_)) => continue,
                    None => break "a bad frame".to_string(),
                }
            };
            self.protocol_error(wi, &why);
        }
    }

    /// A worker broke the protocol: kill it (its death is handled as usual).
    fn protocol_error(&mut self, wi: usize, why: &str) {
        let w = &mut self.workers[wi];
        eprintln!(
            "multiprocess: pool worker {} (pid {}) sent a bad message ({why}); killing it",
            w.name, w.pid
        );
        w.kill();
        w.eof = true;
        w.reader = FrameReader::new(DEFAULT_MAX_MESSAGE_LEN);
    }

    fn take_fds(&mut self, wi: usize, bytes: &[u8]) -> Result<Vec<OwnedFd>> {
        let n = reduction::declared_fds(bytes);
        let w = &mut self.workers[wi];
        if w.in_fds.len() < n {
            return Err(Error::decode("a message's file descriptors did not arrive"));
        }
        Ok(w.in_fds.drain(..n).collect())
    }

    fn handle_frame(&mut self, wi: usize, frame: &[u8]) -> Result<()> {
        if self.workers[wi].phase == Phase::Booting {
            let fds = self.take_fds(wi, frame)?;
            return match reduction::decode::<spawn::Report>(frame, fds)? {
                spawn::Report::Started => {
                    self.workers[wi].phase = Phase::Initializing;
                    Ok(())
                }
                spawn::Report::Panicked(p) => {
                    Err(Error::decode(format!("panic at start-up: {}", p.message)))
                }
            };
        }
        let (body_len, reply, _seq): (usize, Reply, u32) = child::split_trailer(frame)?;
        let body = &frame[..body_len];
        let fds = self.take_fds(wi, body)?;
        match reply {
            Reply::Ready => {
                self.workers[wi].phase = Phase::Ready;
                self.start_failures = 0;
            }
            Reply::InitFailed => {
                let w = &self.workers[wi];
                let e = match reduction::decode::<WireFailure>(body, fds) {
                    Ok(f) => f.into_error(&w.name, w.pid),
                    Err(e) => e,
                };
                let e = match RemoteError::of(&e) {
                    Some(r) => RemoteError {
                        message: format!("the pool initializer panicked: {}", r.message),
                        ..r
                    }
                    .into(),
                    None => e,
                };
                self.set_broken(e);
            }
            Reply::Done { id, ok, ran_ns } => {
                let w = &mut self.workers[wi];
                if w.timed_out == Some(id) {
                    return Ok(());
                }
                if w.inflight.front().map(|f| f.task.id) != Some(id) || w.sent == 0 {
                    return Err(Error::decode(format!(
                        "an answer for task {id}, which is not the running one"
                    )));
                }
                let f = w.inflight.pop_front().expect("checked above");
                w.sent -= 1;
                w.last_func = Some(f.task.func);
                w.last_run = Some(Duration::from_nanos(ran_ns));
                let outcome = if ok {
                    Ok(Body { bytes: body, fds })
                } else {
                    Err(match reduction::decode::<WireFailure>(body, fds) {
                        Ok(fail) => fail.into_error(&w.name, w.pid),
                        Err(e) => e,
                    })
                };
                self.finish(f.task.job, f.task.index, outcome);
                self.check_memory(wi);
            }
        }
        Ok(())
    }

    /// Kills workers whose running task overran its timeout, and workers that
    /// did not start in time.
    fn check_deadlines(&mut self) {
        let now = Instant::now();
        let mut timed_out = Vec::new();
        let overran = |w: &Worker| {
            w.inflight
                .front()
                .is_some_and(|f| match (f.started_at, f.task.timeout) {
                    (Some(s), Some(t)) => now >= s + t,
                    _ => false,
                })
        };
        for wi in 0..self.workers.len() {
            let w = &mut self.workers[wi];
            if w.exited() {
                continue;
            }
            w.note_start();
            if w.phase == Phase::Booting && now >= w.started_at + spawn::start_timeout() {
                w.kill();
                continue;
            }
            if overran(w) && !w.eof && w.sock.is_some() {
                // An answer may be waiting: the task finished just in time.
                self.read_worker(wi);
            }
            let w = &mut self.workers[wi];
            if overran(w) {
                w.kill();
                let f = w.inflight.pop_front().expect("checked above");
                // Its answer, if it finishes before the kill lands, is
                // dropped, not taken for a protocol error.
                w.timed_out = Some(f.task.id);
                w.sent = w.sent.saturating_sub(1);
                // The rest of its tasks were not started: they go back to the
                // queue when its death is handled. No more writes to it.
                w.write_broken = true;
                w.partial = 0;
                // Wait for the death (SIGKILL: at once) so that when the
                // caller sees the timeout, the worker is gone from the pool.
                if fd::wait_for(w.pidfd.as_fd(), fd::READABLE, Some(now + KILL_WAIT))
                    .unwrap_or(false)
                {
                    w.mark_exited();
                }
                timed_out.push((f.task.job, f.task.index));
            }
        }
        if !timed_out.is_empty() {
            self.bury_exited();
        }
        for (job, index) in timed_out {
            self.finish(job, index, Err(Error::Timeout));
        }
    }

    /// Handles workers whose pidfd fired: drain, reap, fail or requeue their
    /// tasks.
    fn bury_exited(&mut self) {
        let mut changed = false;
        let mut lost = Vec::new();
        let mut wi = 0;
        while wi < self.workers.len() {
            if !self.workers[wi].exited() {
                wi += 1;
                continue;
            }
            // Everything it wrote before dying is in our socket buffer and
            // its ring.
            if !self.workers[wi].eof && self.workers[wi].sock.is_some() {
                self.read_worker(wi);
            }
            if self.workers[wi].phase == Phase::Ready {
                self.drain_ring(wi);
            }
            let mut w = self.workers.swap_remove(wi);
            changed = true;
            self.publish_pids();
            let code = w.reap();
            let booting = w.phase != Phase::Ready;
            let mut requeue = Vec::new();
            // Dead, so the gate holds still: it says exactly which task began.
            let started = w.gate.started();
            let corrupt = w.ring_broken.take().or_else(|| {
                w.ring
                    .poisoned()
                    .then(|| "the worker found it corrupted".to_string())
            });
            for (i, f) in w.inflight.drain(..).enumerate() {
                let began = i < w.sent && !gate::after(f.seq, started);
                if began && let Some(why) = &corrupt {
                    // Its answer, if it came, was in the corrupted ring.
                    let e = Error::Decode(format!(
                        "pool worker {} (pid {}) corrupted its shared-memory ring ({why}); the task's result is lost",
                        w.name, w.pid
                    ));
                    lost.push((f.task.job, f.task.index, e));
                } else if began && i == 0 {
                    let e = Error::WorkerLost {
                        pid: w.pid,
                        exitcode: code,
                    };
                    lost.push((f.task.job, f.task.index, e));
                } else {
                    requeue.push(f.task);
                }
            }
            for t in requeue.into_iter().rev() {
                self.pending.push_front(t);
            }
            if booting && self.broken.is_none() && self.state != PoolState::Terminate {
                self.start_failed(format!(
                    "worker {} (pid {}) exited before it was ready: {}",
                    w.name,
                    w.pid,
                    spawn::describe_exit(code)
                ));
            }
        }
        if changed {
            self.publish_pids();
            // Replace now, so that when a caller learns of the loss the pool
            // is whole again.
            self.replace_workers();
        }
        for (job, index, e) in lost {
            self.finish(job, index, Err(e));
        }
    }

    /// terminate() or a broken pool: kill every worker, fail every unfinished
    /// task with `err`, reap.
    fn shutdown_now(&mut self, err: &Error) {
        for w in &self.workers {
            w.kill();
        }
        {
            let mut s = self.inner.shared.lock().unpoison();
            for (id, job) in s.new_jobs.drain(..) {
                self.jobs.insert(id, job);
            }
            self.pending.extend(s.queue.drain(..));
        }
        let mut failed = Vec::new();
        for w in &mut self.workers {
            failed.extend(w.inflight.drain(..).map(|f| (f.task.job, f.task.index)));
        }
        failed.extend(self.pending.drain(..).map(|t| (t.job, t.index)));
        for (job, index) in failed {
            self.finish(job, index, Err(err.duplicate()));
        }
        self.jobs.clear();
        for w in &mut self.workers {
            w.reap();
        }
        self.workers.clear();
        self.publish_pids();
    }

    /// close(): all work is done. Hang up on every worker (an idle worker exits
    /// at end of file), wait for them, reap.
    fn shutdown_gracefully(&mut self) {
        for w in &mut self.workers {
            w.ring.close();
            w.sock = None;
        }
        let deadline = Instant::now() + CLOSE_GRACE;
        for w in &mut self.workers {
            if !w.exited()
                && !fd::wait_for(w.pidfd.as_fd(), fd::READABLE, Some(deadline)).unwrap_or(false)
            {
                w.kill();
            }
            w.reap();
        }
        self.workers.clear();
        self.publish_pids();
    }

    /// Marks the pool finished and fails whatever raced in meanwhile.
    fn exit(&mut self) {
        self.inner.init.lock().unpoison().take();
        let (jobs, tasks) = {
            let mut s = self.inner.shared.lock().unpoison();
            s.finished = true;
            s.asleep = false;
            (
                std::mem::take(&mut s.new_jobs),
                std::mem::take(&mut s.queue),
            )
        };
        for (id, job) in jobs {
            self.jobs.insert(id, job);
        }
        let err = self.broken.take().unwrap_or(Error::Closed);
        for t in tasks {
            self.finish(t.job, t.index, Err(err.duplicate()));
        }
        self.jobs.clear();
    }
}

// ---------------------------------------------------------------------------
// Hooks for `mp::futures` (kept apart so they can be re-applied to a new
// scheduler): kill the worker running a task, retire a worker by memory.

impl Scheduler {
    /// `cancel_running`: kills the worker whose running task is `id`. Nothing
    /// when the task is queued, waiting behind another on a worker, or done.
    /// The death is handled as any other (the task's answer is `WorkerLost`,
    /// the tasks behind it go back to the queue, a replacement starts).
    fn kill_task(&mut self, id: u64) {
        for w in &mut self.workers {
            if w.exited() || w.sent == 0 {
                continue;
            }
            if w.inflight.front().is_some_and(|f| f.task.id == id) {
                w.kill();
                return;
            }
        }
    }

    /// `max_memory_per_child`: after a task on worker `wi`, if its resident
    /// memory is above the limit it gets no more work; once it has nothing in
    /// flight it is hung up on (it exits at end of file) and replaced.
    fn check_memory(&mut self, wi: usize) {
        let Some(limit) = self.inner.max_memory else {
            return;
        };
        let w = &mut self.workers[wi];
        if !w.write_broken {
            let over = crate::platform::process::rss_bytes(w.pid).is_some_and(|rss| rss > limit);
            if !over {
                return;
            }
            // Tasks waiting behind the running one go to other workers.
            let taken = w.take_back();
            w.write_broken = true;
            for t in taken.into_iter().rev() {
                self.pending.push_front(t);
            }
        }
        let w = &mut self.workers[wi];
        if w.inflight.is_empty() && !w.exited() {
            // The close record wakes a worker asleep on its empty ring (the
            // hang-up alone is seen only at the end of its sleep slice).
            w.ring.close();
            w.sock = None;
        }
    }
}

// ---------------------------------------------------------------------------
// The direct path: a task and its answer without the handler thread.
//
// A thread submitting one task (`apply_async`, an executor's `submit`) while
// the handler is asleep takes the lock itself and, if a worker is idle and
// nothing is queued, places the task in that worker's ring (with the next
// seq on its gate, as `dispatch` does) and registers the job: no wake-up of
// the handler. The thread then waiting for the answer (`AsyncResult::get`,
// `Future::result`) enters that worker's ring watch, so the worker wakes it
// and not the handler, spins then sleeps on the ring, and takes the answer
// itself under the lock when it is the next record; it completes the job
// (decoding, done callbacks) on its own thread, outside the lock. Whatever
// it cannot take (a result on the socket, a worker that died, a record of
// another task) it leaves to the handler, which it wakes when it leaves.
// Everything else is the handler's as before: deaths (the pidfd is in its
// `poll`), stealing, kills. Tasks with a timeout, and pools recycling
// workers (`maxtasksperchild`, `max_memory_per_child`), keep the handler's
// path: their bookkeeping wants the handler awake.

/// What a waiter's attempt to take its answer found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// The answer was taken and the job completed.
    Done,
    /// Not now (the lock is held, or the record is not all there): try again.
    Busy,
    /// Not for this thread to take: the handler serves it.
    Handoff,
}

impl Inner {
    /// The core, if nobody holds it.
    fn try_core(&self) -> Option<MutexGuard<'_, Option<Scheduler>>> {
        match self.core.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Places the job's one task on an idle worker's ring, from the
    /// submitting thread (`held`: see [`Direct::held`]). Gives the job and task back when the direct path
    /// does not apply (the handler is busy, work is queued, no worker is
    /// idle, the task needs the handler's bookkeeping).
    #[allow(clippy::type_complexity)]
    pub(crate) fn place_direct(
        &self,
        job: (u64, Box<dyn Job>),
        mut tasks: Vec<Task>,
        held: bool,
    ) -> std::result::Result<(), ((u64, Box<dyn Job>), Vec<Task>)> {
        let simple = self.maxtasks.is_none()
            && self.max_memory.is_none()
            && tasks.len() == 1
            && tasks.iter().all(|t| {
                t.timeout.is_none() && t.failed.is_none() && ParentRing::fits(&t.frame, t.fds.len())
            });
        if !simple {
            return Err((job, tasks));
        }
        let Some(mut g) = self.try_core() else {
            return Err((job, tasks));
        };
        let Some(core) = g.as_mut() else {
            return Err((job, tasks));
        };
        let open = {
            let s = self.shared.lock().unpoison();
            s.broken.is_none() && s.state == PoolState::Run && !s.finished && s.queue.is_empty()
        };
        let idle = core
            .workers
            .iter()
            .position(|w| w.usable() && w.inflight.is_empty() && !w.unsent() && !w.ring_blocked);
        let Some(wi) = idle.filter(|_| open && core.broken.is_none() && core.pending.is_empty())
        else {
            return Err((job, tasks));
        };
        let (job_id, j) = job;
        if !j.claim() {
            // Cancelled: the handler's path answers it.
            return Err(((job_id, j), tasks));
        }
        let mut task = tasks.pop().expect("one task");
        let pool = Arc::downgrade(&core.inner);
        let w = &mut core.workers[wi];
        w.next_seq = w.next_seq.wrapping_add(1);
        let seq = w.next_seq;
        child::set_seq(&mut task.frame, seq);
        w.assigned += 1;
        let watch = w.ring.watch();
        let taken = j.direct(Direct {
            pool,
            pid: w.pid,
            task: task.id,
            watch: watch.clone(),
            held,
        });
        if taken && held {
            // Before the task is in the ring: its answer cannot come first.
            watch.enter();
        }
        w.inflight.push_back(InFlight {
            task,
            seq,
            started_at: None,
            via_ring: true,
            marked: false,
        });
        w.flush();
        // No room after all, or the ring broke: the handler sees to it.
        let stuck = w.unsent() || w.ring_broken.is_some();
        core.jobs.insert(job_id, j);
        drop(g);
        if stuck {
            self.tick_handler();
        }
        Ok(())
    }

    /// The waiter's side: takes task `d.task`'s answer if it is the next
    /// record in its worker's ring, and completes the job on this thread.
    pub(crate) fn take_direct(&self, d: &Direct) -> Take {
        let Some(mut g) = self.try_core() else {
            return Take::Busy;
        };
        let Some(core) = g.as_mut() else {
            return Take::Handoff;
        };
        let (job, index, outcome) = match core.take_direct(d) {
            Ok(t) => t,
            Err(t) => return t,
        };
        // The handler sleeps without a deadline while the worker is busy, and
        // the worker woke only us: tell the handler when this answer frees
        // work for it — `close()` waiting for the last answer, a task queued
        // behind this one, or tasks sent ahead elsewhere that may be stolen.
        let wake = {
            let s = self.shared.lock().unpoison();
            s.state != PoolState::Run || !s.queue.is_empty()
        } || !core.pending.is_empty()
            || core.workers.iter().any(|w| w.inflight.len() > 1);
        drop(g);
        if wake {
            self.tick_handler();
        }
        if let Some(mut j) = job {
            match outcome {
                Ok(bytes) => j.complete(
                    index,
                    Ok(Body {
                        bytes: &bytes,
                        fds: Vec::new(),
                    }),
                ),
                Err(e) => j.complete(index, Err(e)),
            };
        }
        Take::Done
    }

    /// Makes the handler run a pass (it may be asleep in `poll`).
    pub(crate) fn tick_handler(&self) {
        self.shared.lock().unpoison().asleep = false;
        self.submits.fetch_add(1, Ordering::Release);
        self.wake_handler();
    }
}

impl Scheduler {
    /// Under the lock: consumes the record of `d.task`'s answer if it is the
    /// next one in its worker's ring. The job (unless it is gone), the task's
    /// index and its outcome (the encoded value, or the task's error).
    #[allow(clippy::type_complexity)]
    fn take_direct(
        &mut self,
        d: &Direct,
    ) -> std::result::Result<(Option<Box<dyn Job>>, u64, Result<Vec<u8>>), Take> {
        let Some(wi) = self.workers.iter().position(|w| w.pid == d.pid) else {
            return Err(Take::Handoff);
        };
        let w = &mut self.workers[wi];
        if w.phase != Phase::Ready
            || w.ring_broken.is_some()
            || w.marker_waits
            || w.sent == 0
            || w.timed_out == Some(d.task)
            || w.inflight.front().map(|f| f.task.id) != Some(d.task)
        {
            return Err(Take::Handoff);
        }
        let mut buf = std::mem::take(&mut self.scratch);
        let (tail, body_len, ok, ran_ns) = match Self::direct_record(w, d.task, &mut buf) {
            Ok(r) => r,
            Err(t) => {
                self.scratch = buf;
                return Err(t);
            }
        };
        w.ring.consume(tail);
        let f = w.inflight.pop_front().expect("checked above");
        w.sent -= 1;
        w.last_func = Some(f.task.func);
        w.last_run = Some(Duration::from_nanos(ran_ns));
        buf.truncate(body_len);
        let outcome = if ok {
            Ok(buf)
        } else {
            let e = match reduction::decode::<WireFailure>(&buf, Vec::new()) {
                Ok(fail) => fail.into_error(&w.name, w.pid),
                Err(e) => e,
            };
            self.scratch = buf;
            Err(e)
        };
        let job = self.jobs.remove(&f.task.job);
        self.check_memory(wi);
        Ok((job, f.task.index, outcome))
    }

    /// The next record of worker `w`'s ring, if it is the answer of `task`
    /// carried in the ring: its end, the body's length, whether it is a value,
    /// how long the task ran.
    fn direct_record(
        w: &Worker,
        task: u64,
        buf: &mut Vec<u8>,
    ) -> std::result::Result<(u32, usize, bool, u64), Take> {
        let (rec, tail) = match w.ring.peek(buf) {
            Ok(Some(r)) => r,
            Ok(None) => return Err(Take::Busy),
            Err(_) => return Err(Take::Handoff),
        };
        if rec != Record::Frame {
            return Err(Take::Handoff);
        }
        let Ok((body_len, reply, _seq)) = child::split_trailer::<Reply>(buf) else {
            return Err(Take::Handoff);
        };
        match reply {
            Reply::Done { id, ok, ran_ns }
                if id == task && reduction::declared_fds(&buf[..body_len]) == 0 =>
            {
                Ok((tail, body_len, ok, ran_ns))
            }
            _ => Err(Take::Handoff),
        }
    }
}
