//! The parent side of a pool: one thread that does what CPython's three
//! handler threads (worker, task and result handler) do.
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
//! `worker.rs` for how that is known exactly) fails with `Error::WorkerLost`;
//! tasks sent to it but not started go back to the front of the queue; a
//! replacement starts. A task overrunning its timeout gets its worker killed and
//! fails with `Error::Timeout`. Every job that is dropped unanswered sets its
//! result to an error on drop, so even a bug here ends in an error, not a hang.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use nix::sys::eventfd::EventFd;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::gate::{self, Gate};
use super::worker::{self, Reply, Setup, WireFailure};
use crate::connection::DEFAULT_MAX_MESSAGE_LEN;
use crate::connection::framing;
use crate::connection::reader::FrameReader;
use crate::error::{Error, Result};
use crate::platform::fd;
use crate::reduction::{self, Encoded, FnRef, PreparedCall};
use crate::spawn::{self, StartSpec};

/// Tasks in flight per worker: the one running and, while its tasks are
/// short, up to seven sent ahead (each claimed at the worker's [`Gate`] when
/// it starts, so a death still fails exactly the running one).
const MAX_IN_FLIGHT: usize = 8;
/// Frames written per `sendmsg` at most.
const WRITE_BATCH: usize = MAX_IN_FLIGHT;
/// A worker gets a prefetched task only while its last task ran shorter than
/// this: for short tasks the prefetch hides the round trip, for long ones it
/// would only make a task wait behind another while a worker may be idle.
const PREFETCH_MAX_TASK_TIME: Duration = Duration::from_millis(2);
/// While a worker is idle and nothing is queued, tasks waiting behind one that
/// has run this long on another worker are taken back and run by the idle one.
const STEAL_AFTER: Duration = Duration::from_millis(2);
/// How often the handler looks whether a task with a timeout has started when
/// it was written but not yet claimed.
const START_POLL: Duration = Duration::from_millis(5);
/// Consecutive worker start-up failures after which the pool is broken.
const MAX_START_FAILURES: u32 = 3;
/// Pause before retrying a failed worker start.
const START_RETRY_DELAY: Duration = Duration::from_millis(100);
/// How long `close()` waits for idle workers to exit after their sockets are
/// closed before it kills them.
const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// How long the handler waits for a worker it killed to die.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Bytes read from a worker's socket per `recvmsg` at most.
const READ_CHUNK: usize = 64 * 1024;

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
}

/// One unit of work for a worker.
pub(crate) struct Task {
    /// Unique in the pool; echoed by the worker.
    pub(crate) id: u64,
    /// The job it belongs to.
    pub(crate) job: u64,
    /// Its index in the job (the chunk number for map/imap).
    pub(crate) index: u64,
    /// The frame: encoded argument and [`worker::Call`] trailer.
    pub(crate) frame: Vec<u8>,
    /// The fds the argument's handles carry.
    pub(crate) fds: Vec<OwnedFd>,
    /// Kill the worker and fail the task if it runs longer.
    pub(crate) timeout: Option<Duration>,
    /// The function it runs (prefetch is only for a function known to be quick).
    pub(crate) func: FnRef,
    /// Failed before it was sent (its argument did not encode): the handler
    /// answers it with this error instead of sending it.
    pub(crate) failed: Option<Error>,
}

impl Task {
    /// Builds a task calling `func` on the encoded `arg`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] if the trailer does not encode (it always does).
    pub(crate) fn new(
        id: u64,
        job: u64,
        index: u64,
        func: FnRef,
        arg: Encoded,
        timeout: Option<Duration>,
    ) -> Result<Task> {
        let Encoded { mut bytes, fds } = arg;
        worker::append_trailer(&mut bytes, &worker::Call { id, func }, 0)?;
        Ok(Task {
            id,
            job,
            index,
            frame: bytes,
            fds,
            timeout,
            func,
            failed: None,
        })
    }

    /// A task that already failed with `err`: it is answered, never sent.
    pub(crate) fn failed(id: u64, job: u64, index: u64, func: FnRef, err: Error) -> Task {
        Task {
            id,
            job,
            index,
            frame: Vec::new(),
            fds: Vec::new(),
            timeout: None,
            func,
            failed: Some(err),
        }
    }
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
}

/// The initializer and its encoded argument, kept for every worker start.
pub(crate) struct InitSpec {
    /// The initializer's trampoline.
    pub(crate) func: FnRef,
    /// Its encoded argument.
    pub(crate) arg: Encoded,
}

/// The pool, shared by the `Pool` handle, the handler thread and feeders.
pub(crate) struct Inner {
    /// State shared with submitters.
    pub(crate) shared: Mutex<Shared>,
    /// Written to wake the handler.
    pub(crate) wake: EventFd,
    /// Task and job ids.
    pub(crate) ids: AtomicU64,
    /// The number of workers.
    pub(crate) processes: usize,
    /// `maxtasksperchild`.
    pub(crate) maxtasks: Option<u64>,
    /// The pool-wide task timeout.
    pub(crate) task_timeout: Option<Duration>,
    /// The initializer; dropped (with the fds its argument holds) once the
    /// handler has exited.
    pub(crate) init: Mutex<Option<InitSpec>>,
    /// The handler thread, until joined.
    pub(crate) thread: Mutex<Option<JoinHandle<()>>>,
    /// The handler thread's id (callbacks run there).
    pub(crate) thread_id: OnceLock<ThreadId>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
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
        let mut s = lock(&self.shared);
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
        if wake {
            self.wake_handler();
        }
        Ok(())
    }

    /// Asks the handler to look at job `id` again.
    pub(crate) fn tick(&self, id: u64) {
        let mut s = lock(&self.shared);
        if s.finished {
            return;
        }
        s.ticks.push(id);
        let wake = std::mem::replace(&mut s.asleep, false);
        drop(s);
        if wake {
            self.wake_handler();
        }
    }

    /// Moves to `state` (never back to `Run`, never from `Terminate`).
    pub(crate) fn set_state(&self, state: PoolState) {
        let mut s = lock(&self.shared);
        let next = match (s.state, state) {
            (PoolState::Terminate, _) => PoolState::Terminate,
            (_, PoolState::Terminate) => PoolState::Terminate,
            (PoolState::Close, _) => PoolState::Close,
            (PoolState::Run, st) => st,
        };
        s.state = next;
        s.asleep = false;
        drop(s);
        self.wake_handler();
    }

    pub(crate) fn wake_handler(&self) {
        // The counter cannot overflow from single increments in practice; a
        // failed write (EAGAIN at the maximum) still leaves the fd readable.
        let _ = self.wake.write(1);
    }

    /// A new id for a job or task.
    pub(crate) fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Starts one worker (on any thread).
    pub(crate) fn start_worker(&self) -> Result<Worker> {
        let spec = lock(&self.init);
        let (body, fds, init) = match &*spec {
            Some(i) => {
                let fds = i
                    .arg
                    .fds
                    .iter()
                    .map(|f| f.try_clone())
                    .collect::<io::Result<Vec<_>>>()?;
                (i.arg.bytes.clone(), fds, Some(i.func))
            }
            None => (reduction::encode(&())?.bytes, Vec::new(), None),
        };
        drop(spec);
        let gate = Gate::create()?;
        let mut fds = fds;
        fds.push(gate.fd().try_clone_to_owned()?);
        let mut bytes = body;
        worker::append_trailer(
            &mut bytes,
            &Setup {
                maxtasks: self.maxtasks,
                init,
            },
            0,
        )?;
        let (identity, name) = spawn::next_child_identity("PoolWorker");
        let child = spawn::start(StartSpec {
            name: name.clone(),
            identity,
            daemon: true,
            quiet_panics: true,
            call: PreparedCall {
                target: FnRef::internal(worker::worker_main),
                payload: Ok(Encoded { bytes, fds }),
            },
        })?;
        let mut w = Worker {
            pid: child.pid,
            name,
            pidfd: child.pidfd,
            sock: None,
            gate,
            next_seq: 0,
            phase: Phase::Booting,
            started_at: child.started_at,
            inflight: VecDeque::new(),
            sent: 0,
            partial: 0,
            tail: Vec::new(),
            tail_sent: 0,
            assigned: 0,
            inbuf: Vec::new(),
            reader: FrameReader::new(DEFAULT_MAX_MESSAGE_LEN),
            in_fds: VecDeque::new(),
            eof: false,
            write_broken: false,
            exited: false,
            reaped: false,
            last_run: None,
            last_func: None,
            timed_out: None,
        };
        // Our own copy of the socket, non-blocking; the Connection (and its
        // fd) is dropped here.
        let sock = child
            .conn
            .with_fd(|fd| fd.try_clone_to_owned())
            .map_err(|_| Error::Closed);
        match sock.and_then(|r| r.map_err(Error::from)) {
            Ok(s) => match fd::set_nonblocking(s.as_fd(), true) {
                Ok(()) => w.sock = Some(s),
                Err(e) => return Err(e.into()),
            },
            Err(e) => return Err(e),
        }
        Ok(w)
    }
}

/// Where a worker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the bootstrap's `Started` report.
    Booting,
    /// Running its initializer.
    Initializing,
    /// Serving tasks.
    Ready,
}

/// A task sent (or being sent) to a worker.
struct InFlight {
    /// The task; its frame and fds are freed once it has started.
    task: Task,
    /// Its number on this worker's [`Gate`].
    seq: u32,
    /// When it started running, once the gate showed it.
    started_at: Option<Instant>,
}

/// A worker process, seen from the handler.
pub(crate) struct Worker {
    /// Its pid.
    pid: u32,
    /// `PoolWorker-N`.
    name: String,
    /// Readable once it exited.
    pidfd: OwnedFd,
    /// The socket (non-blocking); `None` once closed by `close()`.
    sock: Option<OwnedFd>,
    /// Which of its tasks started; where tasks sent ahead are taken back.
    gate: Gate,
    /// The seq of the last task given to it.
    next_seq: u32,
    /// Start-up progress.
    phase: Phase,
    /// When it was started.
    started_at: Instant,
    /// Tasks sent to it, oldest (running) first.
    inflight: VecDeque<InFlight>,
    /// How many of `inflight` are completely written.
    sent: usize,
    /// Bytes of `inflight[sent]` written (header included).
    partial: usize,
    /// The rest of a frame taken back half written: still to be written (the
    /// stream must stay whole; the worker drops it, as its gate says).
    tail: Vec<u8>,
    /// Bytes of `tail` written.
    tail_sent: usize,
    /// Tasks given to it in all (for `maxtasksperchild`).
    assigned: u64,
    /// Where one `recvmsg` lands (`READ_CHUNK` bytes once the first read
    /// came) before the reader takes the bytes.
    inbuf: Vec<u8>,
    /// Its frames: the limit is checked at the header, and memory grows only
    /// as bytes arrive, so a worker announcing 1 TiB costs nothing.
    reader: FrameReader,
    /// Fds received and not yet handed to a frame (a read may span several
    /// frames, so they are matched by the count each message declares).
    in_fds: VecDeque<OwnedFd>,
    /// The socket reached end of file.
    eof: bool,
    /// A write failed (the worker is gone).
    write_broken: bool,
    /// The pidfd became readable.
    exited: bool,
    /// `waitpid` done.
    reaped: bool,
    /// How long its last task ran (as the worker measured it).
    last_run: Option<Duration>,
    /// The function its last task ran.
    last_func: Option<FnRef>,
    /// The task failed with `Timeout` when it was killed for overrunning.
    timed_out: Option<u64>,
}

impl Worker {
    fn kill(&self) {
        if !self.exited {
            let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        }
    }

    /// Reaps it (it has exited or was killed); its exit code.
    fn reap(&mut self) -> Option<i32> {
        if self.reaped {
            return None;
        }
        self.reaped = true;
        crate::process::reap_blocking(self.pid)
    }

    /// Still worth sending work to.
    fn usable(&self) -> bool {
        self.phase == Phase::Ready
            && !self.exited
            && !self.eof
            && !self.write_broken
            && self.sock.is_some()
    }

    fn unsent(&self) -> bool {
        (self.sent < self.inflight.len() || self.tail_sent < self.tail.len()) && !self.write_broken
    }

    /// Records the start of the running task once the gate shows it, and frees
    /// its argument (nothing will resend it). Returns when it started.
    fn note_start(&mut self) -> Option<Instant> {
        let f = self.inflight.front_mut()?;
        if f.started_at.is_none() && self.sent > 0 && !gate::after(f.seq, self.gate.started()) {
            f.started_at = Some(self.gate.started_at());
            f.task.frame = Vec::new();
            f.task.fds = Vec::new();
        }
        f.started_at
    }

    /// True while its running task is young enough for more to be sent ahead.
    fn running_briefly(&self, now: Instant) -> bool {
        self.inflight
            .front()
            .and_then(|f| f.started_at)
            .is_none_or(|s| now.saturating_duration_since(s) < PREFETCH_MAX_TASK_TIME)
    }

    /// Takes back the tasks waiting behind its running one: revoked at the
    /// gate if written (even half), dropped from the write queue if not. The
    /// rest of a half-written frame moves to `tail`, still to be written.
    /// Returns the tasks, oldest first.
    fn take_back(&mut self) -> Vec<Task> {
        let half = self.partial > 0 && self.tail.is_empty();
        let last_written = if half {
            Some(self.sent)
        } else {
            self.sent.checked_sub(1)
        };
        let started = match last_written {
            Some(i) => self.gate.revoke(self.inflight[i].seq),
            None => self.gate.started(),
        };
        let mut kept = VecDeque::with_capacity(2);
        let mut taken = Vec::new();
        let mut sent = 0;
        for (i, f) in std::mem::take(&mut self.inflight).into_iter().enumerate() {
            let written = i < self.sent;
            let half_written = i == self.sent && self.partial > 0;
            if half_written && !half {
                // Cannot happen (a tail exists only after a take-back, and
                // then nothing is half written); keep the stream whole anyway.
                kept.push_back(f);
                continue;
            }
            if written && !gate::after(f.seq, started) {
                sent += 1;
                kept.push_back(f);
                continue;
            }
            if half_written {
                let (h, hlen) = framing::encode_header(f.task.frame.len());
                let mut whole = Vec::with_capacity(hlen + f.task.frame.len() - self.partial);
                let skip = self.partial;
                if skip < hlen {
                    whole.extend_from_slice(&h[skip..hlen]);
                    whole.extend_from_slice(&f.task.frame);
                } else {
                    whole.extend_from_slice(&f.task.frame[skip - hlen..]);
                }
                self.tail = whole;
                self.tail_sent = 0;
            }
            taken.push(f.task);
        }
        self.inflight = kept;
        self.sent = sent;
        self.partial = 0;
        self.assigned -= taken.len() as u64;
        taken
    }

    /// Writes as much of the queued frames as the socket takes, several frames
    /// per `sendmsg` (a frame's fds ride with its first byte, so a batch stops
    /// before a second frame that carries fds).
    fn flush(&mut self) {
        if !self.flush_tail() {
            return;
        }
        while self.sent < self.inflight.len() && !self.write_broken {
            let Some(sock) = &self.sock else { return };
            let end = (self.sent + WRITE_BATCH).min(self.inflight.len());
            let mut headers = [([0u8; 12], 0usize); WRITE_BATCH];
            let mut count = 0;
            for (k, f) in self.inflight.range(self.sent..end).enumerate() {
                if k > 0 && !f.task.fds.is_empty() {
                    break;
                }
                headers[k] = framing::encode_header(f.task.frame.len());
                count += 1;
            }
            let res = {
                let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(2 * count);
                let mut skip = self.partial;
                for (k, (h, hlen)) in headers.iter().enumerate().take(count) {
                    for part in [&h[..*hlen], &self.inflight[self.sent + k].task.frame[..]] {
                        if skip >= part.len() {
                            skip -= part.len();
                        } else {
                            slices.push(IoSlice::new(&part[skip..]));
                            skip = 0;
                        }
                    }
                }
                let first = &self.inflight[self.sent].task;
                let fds: Vec<_> = if self.partial == 0 {
                    first.fds.iter().map(|f| f.as_fd()).collect()
                } else {
                    Vec::new()
                };
                fd::send_with_fds(sock.as_fd(), &slices, &fds)
            };
            match res {
                Ok(mut n) => {
                    for (_, hlen) in headers.iter().take(count) {
                        let f = &mut self.inflight[self.sent];
                        let left = hlen + f.task.frame.len() - self.partial;
                        if n < left {
                            self.partial += n;
                            break;
                        }
                        n -= left;
                        self.partial = 0;
                        self.sent += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    // EPIPE / ECONNRESET: the worker is gone; its pidfd says how.
                    self.write_broken = true;
                    return;
                }
            }
        }
    }

    /// Writes what is left of a frame taken back half written; true once
    /// nothing is left.
    fn flush_tail(&mut self) -> bool {
        while self.tail_sent < self.tail.len() && !self.write_broken {
            let Some(sock) = &self.sock else { return false };
            let rest = [IoSlice::new(&self.tail[self.tail_sent..])];
            match fd::send_with_fds(sock.as_fd(), &rest, &[]) {
                Ok(n) => self.tail_sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => {
                    self.write_broken = true;
                    return false;
                }
            }
        }
        self.tail = Vec::new();
        self.tail_sent = 0;
        !self.write_broken
    }

    /// Reads what the socket has into the reader; false once it reached end
    /// of file. Stops early at a frame error (the worker is then killed, so
    /// a worker streaming garbage cannot keep the handler reading).
    fn fill(&mut self) -> bool {
        if self.inbuf.len() < READ_CHUNK {
            self.inbuf.resize(READ_CHUNK, 0);
        }
        while !self.reader.failed() {
            let Some(sock) = &self.sock else { return false };
            let mut fds = Vec::new();
            let res = fd::recv_with_fds(sock.as_fd(), &mut self.inbuf, &mut fds);
            self.in_fds.extend(fds);
            match res {
                Ok(0) => {
                    self.reader.end_of_file();
                    self.eof = true;
                    return false;
                }
                Ok(n) => self.reader.push(&self.inbuf[..n], Vec::new()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(_) => {
                    self.eof = true;
                    return false;
                }
            }
        }
        true
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
            self.reap();
        }
    }
}

/// The handler thread's own state.
struct Handler {
    /// Shared with the pool handle.
    inner: Arc<Inner>,
    /// The live workers.
    workers: Vec<Worker>,
    /// Tasks waiting for a worker, oldest first.
    pending: VecDeque<Task>,
    /// Jobs not finished.
    jobs: HashMap<u64, Box<dyn Job>>,
    /// The state last seen.
    state: PoolState,
    /// Why the pool is broken.
    broken: Option<Error>,
    /// Worker starts that failed in a row.
    start_failures: u32,
    /// Do not retry a failed start before this.
    retry_at: Option<Instant>,
    /// The last start error.
    last_start_error: Option<String>,
    /// When to look again for tasks to take back (see `steal`).
    steal_at: Option<Instant>,
}

/// Starts the handler thread over `workers`.
///
/// # Errors
///
/// [`Error::Io`] if the thread cannot be started (the workers are then killed).
pub(crate) fn spawn_handler(inner: Arc<Inner>, workers: Vec<Worker>) -> Result<()> {
    let mut h = Handler {
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
    };
    h.publish_pids();
    let thread = std::thread::Builder::new()
        .name("multiprocess-pool".into())
        .spawn(move || {
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| h.run())) {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                let mut s = lock(&h.inner.shared);
                s.broken.get_or_insert_with(|| {
                    Error::value(format!("the pool's handler thread panicked: {msg}"))
                });
                drop(s);
                h.shutdown_now(&Error::value(format!(
                    "the pool's handler thread panicked: {msg}"
                )));
            }
            h.exit();
        })?;
    let _ = inner.thread_id.set(thread.thread().id());
    *lock(&inner.thread) = Some(thread);
    Ok(())
}

impl Handler {
    fn run(&mut self) {
        loop {
            self.take_submissions();
            match self.state {
                PoolState::Terminate => {
                    self.shutdown_now(&Error::Closed);
                    return;
                }
                _ if self.broken.is_some() => {
                    let e = self.broken.take().unwrap_or(Error::Closed);
                    self.shutdown_now(&e);
                    self.broken = Some(e);
                    return;
                }
                PoolState::Close if self.all_done() => {
                    self.shutdown_gracefully();
                    return;
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
            let settled =
                self.broken.is_some() || (self.state == PoolState::Close && self.all_done());
            let deadline = if settled {
                Some(Instant::now())
            } else {
                self.next_deadline()
            };
            self.wait_and_serve(deadline);
            self.check_deadlines();
        }
    }

    /// Takes new jobs, tasks, ticks and the state. From here on a submitter
    /// writes the eventfd, so the next `poll` cannot miss its work.
    fn take_submissions(&mut self) {
        let mut s = lock(&self.inner.shared);
        self.state = s.state;
        for (id, job) in s.new_jobs.drain(..) {
            self.jobs.insert(id, job);
        }
        self.pending.extend(s.queue.drain(..));
        let ticks = std::mem::take(&mut s.ticks);
        s.asleep = true;
        drop(s);
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
            && self
                .workers
                .iter()
                .all(|w| w.inflight.is_empty() && (w.phase == Phase::Ready || w.exited))
    }

    fn publish_pids(&self) {
        let pids = self
            .workers
            .iter()
            .filter(|w| !w.exited)
            .map(|w| w.pid)
            .collect();
        lock(&self.inner.shared).worker_pids = pids;
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
        let mut s = lock(&self.inner.shared);
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
        for depth in 0..MAX_IN_FLIGHT {
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
                if depth > 0
                    && (w.last_run.is_none_or(|d| d >= PREFETCH_MAX_TASK_TIME)
                        || w.last_func != self.pending.front().map(|t| t.func)
                        || !w.running_briefly(now))
                {
                    continue;
                }
                let Some(mut task) = self.next_task() else {
                    break;
                };
                let w = &mut self.workers[wi];
                w.next_seq = w.next_seq.wrapping_add(1);
                let seq = w.next_seq;
                worker::set_seq(&mut task.frame, seq);
                w.assigned += 1;
                w.inflight.push_back(InFlight {
                    task,
                    seq,
                    started_at: None,
                });
            }
        }
        for w in &mut self.workers {
            if w.unsent() {
                w.flush();
            }
        }
    }

    /// The next task whose job still wants it.
    fn next_task(&mut self) -> Option<Task> {
        while let Some(mut t) = self.pending.pop_front() {
            if let Some(e) = t.failed.take() {
                self.finish(t.job, t.index, Err(e));
                continue;
            }
            if self.jobs.get(&t.job).is_some_and(|j| j.cancelled()) {
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
            if w.phase == Phase::Booting && !w.exited {
                earliest(w.started_at + spawn::start_timeout());
            }
            let started = w.note_start();
            if let Some(t) = w.inflight.front().and_then(|f| f.task.timeout) {
                match started {
                    Some(s) => earliest(s + t),
                    None if !w.exited => earliest(now + START_POLL),
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
            if w.inflight.len() < 2 || w.exited || w.write_broken {
                continue;
            }
            // A start not yet seen is looked for again then (a claim wakes
            // nobody).
            let since = w.note_start().unwrap_or(now);
            if now < since + STEAL_AFTER {
                let at = since + STEAL_AFTER;
                self.steal_at = Some(self.steal_at.map_or(at, |x| x.min(at)));
                continue;
            }
            taken.extend(w.take_back());
        }
        self.pending.extend(taken);
    }

    /// Polls the wake fd and every worker until `deadline`, and serves what is ready.
    fn wait_and_serve(&mut self, deadline: Option<Instant>) {
        let revents = {
            let mut fds: Vec<(std::os::fd::BorrowedFd<'_>, i16)> =
                Vec::with_capacity(1 + 2 * self.workers.len());
            fds.push((self.inner.wake.as_fd(), fd::READABLE));
            let mut map = Vec::with_capacity(self.workers.len());
            for w in &self.workers {
                let sock = w.sock.as_ref().filter(|_| !w.eof).map(|f| {
                    let mut ev = fd::READABLE;
                    if w.unsent() {
                        ev |= fd::WRITABLE;
                    }
                    fds.push((f.as_fd(), ev));
                    fds.len() - 1
                });
                let pid = if w.exited {
                    None
                } else {
                    fds.push((w.pidfd.as_fd(), fd::READABLE));
                    Some(fds.len() - 1)
                };
                map.push((sock, pid));
            }
            match fd::poll(&fds, deadline) {
                Ok(r) => Some((r, map)),
                Err(_) => None,
            }
        };
        let Some((revents, map)) = revents else {
            return;
        };
        if revents[0] != 0 {
            let _ = self.inner.wake.read();
        }
        for (wi, (sock, pid)) in map.into_iter().enumerate() {
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
                    self.workers[wi].exited = true;
                }
            }
        }
        self.bury_exited();
    }

    /// Reads and handles every complete frame from worker `wi`.
    fn read_worker(&mut self, wi: usize) {
        let open = self.workers[wi].fill();
        self.parse_frames(wi);
        if !open {
            self.workers[wi].eof = true;
        }
    }

    /// Handles the frames the reader completed, until a bad one.
    fn parse_frames(&mut self, wi: usize) {
        while let Some(frame) = self.workers[wi].reader.pop() {
            let handled = frame.and_then(|f| self.handle_frame(wi, &f.bytes));
            if let Err(e) = handled {
                self.protocol_error(wi, &e.to_string());
                break;
            }
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
        let (body_len, reply, _seq): (usize, Reply, u32) = worker::split_trailer(frame)?;
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
                let e = match e {
                    Error::Remote {
                        process,
                        pid,
                        message,
                        location,
                        backtrace,
                    } => Error::Remote {
                        process,
                        pid,
                        message: format!("the pool initializer panicked: {message}"),
                        location,
                        backtrace,
                    },
                    other => other,
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
            if w.exited {
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
                    w.exited = true;
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
            if !self.workers[wi].exited {
                wi += 1;
                continue;
            }
            // Everything it wrote before dying is in our socket buffer.
            if !self.workers[wi].eof && self.workers[wi].sock.is_some() {
                self.read_worker(wi);
            }
            let mut w = self.workers.swap_remove(wi);
            changed = true;
            self.publish_pids();
            let code = w.reap();
            let booting = w.phase != Phase::Ready;
            let mut requeue = Vec::new();
            // Dead, so the gate holds still: it says exactly which task began.
            let started = w.gate.started();
            for (i, f) in w.inflight.drain(..).enumerate() {
                let running = i == 0 && i < w.sent && !gate::after(f.seq, started);
                if running {
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
            let mut s = lock(&self.inner.shared);
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
            w.sock = None;
        }
        let deadline = Instant::now() + CLOSE_GRACE;
        for w in &mut self.workers {
            if !w.exited
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
        lock(&self.inner.init).take();
        let (jobs, tasks) = {
            let mut s = lock(&self.inner.shared);
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
