//! The parent side of one pool worker: its process (pid, pidfd), its
//! non-blocking socket with a write cursor over the tasks sent to it and a
//! [`FrameReader`] over what it sends back, and its [`Gate`] (which of the
//! tasks sent ahead has started). Starting a worker is here too
//! (`start_worker`). The scheduler (`scheduler.rs`) decides what to
//! send; this file only moves bytes and keeps the bookkeeping per worker.

use crate::util::Unpoison;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::child::{self, Setup};
use super::gate::{self, Gate};
use super::remote::RemoteSpec;
use super::ring::ParentRing;
use super::task::{InitSpec, Task};
use crate::connection::DEFAULT_MAX_MESSAGE_LEN;
use crate::connection::framing;
use crate::connection::reader::FrameReader;
use crate::context::method::StartMethod;
use crate::error::{Error, Result};
use crate::platform::fd;
use crate::platform::fd::EventFd;
use crate::platform::process as platform_process;
use crate::reduction::{self, Encoded, FnRef, PreparedCall};
use crate::spawn::{self, StartSpec};

/// Tasks in flight per worker: the one running and, while its tasks are
/// short, up to seven sent ahead (each claimed at the worker's [`Gate`] when
/// it starts, so a death still fails exactly the running one).
pub(super) const MAX_IN_FLIGHT: usize = 8;
/// A worker gets a prefetched task only while its last task ran shorter than
/// this: for short tasks the prefetch hides the round trip, for long ones it
/// would only make a task wait behind another while a worker may be idle.
pub(super) const PREFETCH_MAX_TASK_TIME: Duration = Duration::from_millis(2);
/// Tasks in flight per worker while its tasks are tiny (its last one ran
/// under [`TINY_TASK_TIME`]): a window of eight such tasks is run before the
/// scheduler's next pass, so the worker would wait on the scheduler; a
/// deeper window lets each pass serve and refill more tasks at once, and the
/// worker finds its ring empty (and sleeps, and must be woken) less often.
/// Measured with `map_with_chunksize(square, 0..20_000, 1)` on a fresh pool
/// of 2: 1.28-1.38M tasks/s with 32, 1.56-1.75M with 128, 1.61-1.85M with
/// 256, no better with 512. A worker holds at most 256 tasks of under 50 µs
/// (13 ms of work) that another could have run; while another worker is
/// idle, stealing takes the window back once a task of it ran 50 µs or more
/// (`Scheduler::steal`).
pub(super) const MAX_IN_FLIGHT_TINY: usize = 256;
/// See [`MAX_IN_FLIGHT_TINY`].
pub(super) const TINY_TASK_TIME: Duration = Duration::from_micros(50);
/// Bytes read from a worker's socket per `recvmsg` at most.
const READ_CHUNK: usize = 64 * 1024;

/// What starting a worker needs of the pool (`start_worker`).
pub(super) struct WorkerSpec<'a> {
    /// The initializer, if any (read under its lock at each start).
    pub(super) init: &'a Mutex<Option<InitSpec>>,
    /// Workers connect over TCP, each through a local relay (`remote.rs`).
    pub(super) remote: Option<&'a RemoteSpec>,
    /// The handler's eventfd, which the worker's ring writes wake.
    pub(super) wake: &'a EventFd,
    /// `maxtasksperchild`.
    pub(super) maxtasks: Option<u64>,
    /// How the worker is started.
    pub(super) method: StartMethod,
}

/// Starts one worker (on any thread).
pub(super) fn start_worker(s: WorkerSpec<'_>) -> Result<Worker> {
    let (start, parts) = prepare_worker(&s)?;
    let child = spawn::start(start)?;
    finish_worker(&s, parts, child)
}

/// Starts `n` workers at once: under the forkserver in one request, so the
/// pool's start-up costs one request to the server, not one per worker.
/// Either all are started or none is left.
pub(super) fn start_workers(s: WorkerSpec<'_>, n: usize) -> Result<Vec<Worker>> {
    let mut starts = Vec::with_capacity(n);
    let mut parts = Vec::with_capacity(n);
    for _ in 0..n {
        let (start, p) = prepare_worker(&s)?;
        starts.push(start);
        parts.push(p);
    }
    let children = spawn::start_many(starts)?;
    let mut workers = Vec::with_capacity(n);
    let mut children = children.into_iter();
    for p in parts {
        let child = children.next().expect("one child per worker");
        match finish_worker(&s, p, child) {
            Ok(w) => workers.push(w),
            // This worker and those so far are killed by their drop.
            Err(e) => {
                spawn::abandon(children.map(|c| c.pid));
                return Err(e);
            }
        }
    }
    Ok(workers)
}

/// What a worker has before its process exists.
struct WorkerParts {
    /// `PoolWorker-N`.
    name: String,
    /// Its start gate.
    gate: Gate,
    /// Its ring.
    ring: ParentRing,
}

/// Makes a worker's gate, ring and start request.
fn prepare_worker(s: &WorkerSpec<'_>) -> Result<(StartSpec, WorkerParts)> {
    let spec = s.init.lock().unpoison();
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
    // A remote slot: the relay gets the initializer's argument wrapped
    // (with the key and build id) and the listening socket (remote.rs).
    let (body, fds) = match s.remote {
        Some(r) => (r.relay_body(body)?, Vec::new()),
        None => (body, fds),
    };
    let gate = Gate::create()?;
    let ring = ParentRing::create()?;
    let mut fds = fds;
    fds.push(gate.fd().try_clone_to_owned()?);
    fds.push(ring.fd().try_clone_to_owned()?);
    fds.push(s.wake.as_fd().try_clone_to_owned()?);
    let target = match s.remote {
        Some(r) => {
            fds.extend(r.relay_fds()?);
            FnRef::internal(super::remote::relay_main)
        }
        None => FnRef::internal(child::worker_main),
    };
    let mut bytes = body;
    child::append_trailer(
        &mut bytes,
        &Setup {
            maxtasks: s.maxtasks,
            init,
        },
        0,
    )?;
    let (identity, name) = spawn::next_child_identity("PoolWorker");
    let start = StartSpec {
        name: name.clone(),
        identity,
        daemon: true,
        quiet_panics: true,
        method: s.method,
        call: PreparedCall {
            target,
            payload: Ok(Encoded { bytes, fds }),
        },
    };
    Ok((start, WorkerParts { name, gate, ring }))
}

/// Makes the parent's side of a worker whose process `child` has started.
fn finish_worker(s: &WorkerSpec<'_>, parts: WorkerParts, child: spawn::Child) -> Result<Worker> {
    let WorkerParts { name, gate, ring } = parts;
    let mut w = Worker {
        pid: child.pid,
        name,
        pidfd: Arc::new(child.pidfd),
        sock: None,
        gate,
        ring,
        ring_blocked: false,
        marker_waits: false,
        ring_broken: None,
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
        life: Life::Running,
        last_run: None,
        last_func: None,
        timed_out: None,
        awaiting_remote: s.remote.is_some(),
    };
    // Our own copy of the socket, non-blocking; the Connection (and its
    // fd) is dropped here.
    let sock = child
        .conn
        .with_fd(|fd| fd.try_clone_to_owned())
        .map_err(|_| Error::Closed);
    match sock.and_then(|r| r.map_err(Error::from)) {
        Ok(s) => match fd::set_nonblocking(s.as_fd(), true) {
            Ok(()) => w.sock = Some(Arc::new(s)),
            Err(e) => return Err(e.into()),
        },
        Err(e) => return Err(e),
    }
    Ok(w)
}

/// Where a worker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Waiting for the bootstrap's `Started` report.
    Booting,
    /// Running its initializer.
    Initializing,
    /// Serving tasks.
    Ready,
}

/// A worker process's life, as the parent knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    /// Not seen to exit.
    Running,
    /// Its pidfd became readable: it exited, not yet reaped.
    Exited,
    /// `waitpid` done: its pid may belong to another process now.
    Reaped,
}

/// A task sent (or being sent) to a worker.
pub(super) struct InFlight {
    /// The task; its frame and fds are freed once it has started.
    pub(super) task: Task,
    /// Its number on this worker's [`Gate`].
    pub(super) seq: u32,
    /// When it started running, once the gate showed it.
    pub(super) started_at: Option<Instant>,
    /// It travels in the ring (else on the socket, announced in the ring).
    pub(super) via_ring: bool,
    /// Its socket marker is in the ring (socket tasks only).
    pub(super) marked: bool,
}

/// A worker process, seen from the handler.
pub(crate) struct Worker {
    /// Its pid.
    pub(super) pid: u32,
    /// `PoolWorker-N`.
    pub(super) name: String,
    /// Readable once it exited (shared with the handler's `poll` while it
    /// sleeps without the lock).
    pub(super) pidfd: Arc<OwnedFd>,
    /// The socket (non-blocking); `None` once closed by `close()` (shared
    /// like `pidfd`).
    pub(super) sock: Option<Arc<OwnedFd>>,
    /// Which of its tasks started; where tasks sent ahead are taken back.
    pub(super) gate: Gate,
    /// Tasks in, results out (the socket carries what does not fit).
    pub(super) ring: ParentRing,
    /// The next frame waits for room in the ring (records taken back and not
    /// yet skipped by the worker): look again soon.
    pub(super) ring_blocked: bool,
    /// The ring's next record is a socket marker whose frame has not all
    /// arrived: the ring has nothing to serve until the socket has.
    pub(super) marker_waits: bool,
    /// The worker's ring was found corrupted: why.
    pub(super) ring_broken: Option<String>,
    /// The seq of the last task given to it.
    pub(super) next_seq: u32,
    /// Start-up progress.
    pub(super) phase: Phase,
    /// When it was started.
    pub(super) started_at: Instant,
    /// Tasks sent to it, oldest (running) first.
    pub(super) inflight: VecDeque<InFlight>,
    /// How many of `inflight` are completely written.
    pub(super) sent: usize,
    /// Bytes of `inflight[sent]` written (header included).
    pub(super) partial: usize,
    /// The rest of a frame taken back half written: still to be written (the
    /// stream must stay whole; the worker drops it, as its gate says).
    pub(super) tail: Vec<u8>,
    /// Bytes of `tail` written.
    pub(super) tail_sent: usize,
    /// Tasks given to it in all (for `maxtasksperchild`).
    pub(super) assigned: u64,
    /// Where one `recvmsg` lands (`READ_CHUNK` bytes once the first read
    /// came) before the reader takes the bytes.
    pub(super) inbuf: Vec<u8>,
    /// Its frames: the limit is checked at the header, and memory grows only
    /// as bytes arrive, so a worker announcing 1 TiB costs nothing.
    pub(super) reader: FrameReader,
    /// Fds received and not yet handed to a frame (a read may span several
    /// frames, so they are matched by the count each message declares).
    pub(super) in_fds: VecDeque<OwnedFd>,
    /// The socket reached end of file.
    pub(super) eof: bool,
    /// A write failed (the worker is gone).
    pub(super) write_broken: bool,
    /// Whether the process still runs (its socket has its own two flags
    /// above: end of file and a failed write come in either order).
    life: Life,
    /// How long its last task ran (as the worker measured it).
    pub(super) last_run: Option<Duration>,
    /// The function its last task ran.
    pub(super) last_func: Option<FnRef>,
    /// The task failed with `Timeout` when it was killed for overrunning.
    pub(super) timed_out: Option<u64>,
    /// A remote slot's relay: until it is ready it waits for a worker to
    /// join, which `close()` need not wait for.
    pub(super) awaiting_remote: bool,
}

impl Worker {
    /// SIGKILLs it, unless it is known to have exited (its pid may then be
    /// reused).
    pub(super) fn kill(&self) {
        if self.life == Life::Running {
            platform_process::kill(self.pid, platform_process::Signal::SIGKILL);
        }
    }

    /// It has exited (its pidfd became readable), or was reaped.
    pub(super) fn exited(&self) -> bool {
        self.life != Life::Running
    }

    /// Its pidfd became readable.
    pub(super) fn mark_exited(&mut self) {
        if self.life == Life::Running {
            self.life = Life::Exited;
        }
    }

    /// Reaps it (it has exited or was killed); its exit code.
    pub(super) fn reap(&mut self) -> Option<i32> {
        if self.life == Life::Reaped {
            return None;
        }
        self.life = Life::Reaped;
        platform_process::reap_blocking(self.pid)
    }

    /// Still worth sending work to.
    pub(super) fn usable(&self) -> bool {
        self.phase == Phase::Ready
            && !self.exited()
            && !self.eof
            && !self.write_broken
            && self.ring_broken.is_none()
            && self.sock.is_some()
    }

    pub(super) fn unsent(&self) -> bool {
        (self.sent < self.inflight.len() || self.tail_sent < self.tail.len()) && !self.write_broken
    }

    /// Something waits to be written on the socket (poll for writable).
    pub(super) fn unsent_on_socket(&self) -> bool {
        self.unsent() && !self.ring_blocked
    }

    /// Records the start of the running task once the gate shows it, and frees
    /// its argument (nothing will resend it). Returns when it started.
    pub(super) fn note_start(&mut self) -> Option<Instant> {
        let f = self.inflight.front_mut()?;
        if f.started_at.is_none() && self.sent > 0 && !gate::after(f.seq, self.gate.started()) {
            f.started_at = Some(self.gate.started_at());
            f.task.frame = Vec::new();
            f.task.fds = Vec::new();
        }
        f.started_at
    }

    /// True while its running task is young enough for more to be sent ahead.
    pub(super) fn running_briefly(&self, now: Instant) -> bool {
        self.inflight
            .front()
            .and_then(|f| f.started_at)
            .is_none_or(|s| now.saturating_duration_since(s) < PREFETCH_MAX_TASK_TIME)
    }

    /// Takes back the tasks waiting behind its running one: revoked at the
    /// gate if written (even half), dropped from the write queue if not. The
    /// rest of a half-written frame moves to `tail`, still to be written.
    /// Returns the tasks, oldest first.
    pub(super) fn take_back(&mut self) -> Vec<Task> {
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

    /// Writes the queued frames: a small one into the ring whole; a big one
    /// (or one with fds) on the socket, as much as it takes, after its marker
    /// in the ring. Nothing is queued behind a socket frame (see `dispatch`),
    /// so the two never interleave.
    pub(super) fn flush(&mut self) {
        let mut pushed = false;
        self.flush_records(&mut pushed);
        // One wake-up for all the records placed (the worker may sleep on
        // the ring; a socket frame's marker is among them).
        if pushed {
            self.ring.wake_worker();
        }
    }

    /// [`flush`](Self::flush) without the wake-up; `pushed` is set when a
    /// record went into the ring.
    fn flush_records(&mut self, pushed: &mut bool) {
        self.ring_blocked = false;
        if !self.flush_tail() {
            return;
        }
        while self.sent < self.inflight.len() && !self.write_broken && self.ring_broken.is_none() {
            let f = &mut self.inflight[self.sent];
            let placed = if f.via_ring {
                self.ring.push_quiet(Some(&f.task.frame))
            } else if !f.marked {
                self.ring.push_quiet(None)
            } else {
                Ok(true)
            };
            match placed {
                Ok(true) if f.via_ring => {
                    *pushed = true;
                    self.sent += 1;
                    continue;
                }
                Ok(true) => {
                    if !f.marked {
                        *pushed = true;
                    }
                    f.marked = true;
                    // The worker reads the frame from the socket once it
                    // sees the marker: wake it now, not after the write.
                    self.ring.wake_worker();
                }
                Ok(false) => {
                    self.ring_blocked = true;
                    return;
                }
                Err(why) => {
                    self.ring_broken = Some(why);
                    self.write_broken = true;
                    self.kill();
                    return;
                }
            }
            if !self.flush_socket_frame() {
                return;
            }
        }
    }

    /// Writes as much of the socket frame `inflight[sent]` as the socket
    /// takes; true once it is all written.
    fn flush_socket_frame(&mut self) -> bool {
        let Some(sock) = &self.sock else { return false };
        let f = &self.inflight[self.sent];
        let (h, hlen) = framing::encode_header(f.task.frame.len());
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(2);
        let mut skip = self.partial;
        for part in [&h[..hlen], &f.task.frame[..]] {
            if skip >= part.len() {
                skip -= part.len();
            } else {
                slices.push(IoSlice::new(&part[skip..]));
                skip = 0;
            }
        }
        let fds: Vec<_> = if self.partial == 0 {
            f.task.fds.iter().map(|f| f.as_fd()).collect()
        } else {
            Vec::new()
        };
        let left = hlen + f.task.frame.len() - self.partial;
        match fd::send_with_fds(sock.as_fd(), &slices, &fds) {
            Ok(n) if n < left => {
                self.partial += n;
                false
            }
            Ok(_) => {
                self.partial = 0;
                self.sent += 1;
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(_) => {
                // EPIPE / ECONNRESET: the worker is gone; its pidfd says how.
                self.write_broken = true;
                false
            }
        }
    }

    /// Writes what is left of a frame taken back half written; true once
    /// nothing is left.
    pub(super) fn flush_tail(&mut self) -> bool {
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
    pub(super) fn fill(&mut self) -> bool {
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
                    // A frame cut short is no protocol error: the worker
                    // died mid-write, and its pidfd tells how.
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
        if self.life != Life::Reaped {
            self.kill();
            self.reap();
        }
    }
}
