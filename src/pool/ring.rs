//! Per-worker rings in shared memory: the hot path of pool tasks and results.
//!
//! Each worker shares one memfd with the parent holding two byte rings: tasks
//! (the parent writes, the worker reads) and results (the worker writes, the
//! parent reads). A record is `[len u32][kind u32]` and `len` bytes, padded to
//! 8; a record never wraps (a `WRAP` record fills the end of the area and the
//! next record starts at 0). A frame bigger than [`RECORD_MAX`], or one with
//! fds, goes through the worker's socket instead, announced by a `SOCKET`
//! record in its place, so the order of frames is the order of records.
//!
//! # Waiting
//!
//! A reader finding its ring empty watches the writer's published index for
//! [`spin_for`] (a reply that comes that soon costs no sleep and no wake),
//! then raises its *sleeps* flag, looks once more and sleeps: the worker on a
//! futex on the index, the parent's scheduler in its `poll` (it also watches
//! pidfds and sockets). A writer publishes its index, then wakes the reader
//! only if that flag is up (`FUTEX_WAKE`, or a write to the pool's eventfd
//! for the parent, which lowers the flag: one write per sleep). Both sides use `SeqCst` for the flag and the index, so
//! either the writer sees the flag or the reader sees the new index. A
//! parent thread waiting for its own task's answer (the pool's direct path,
//! see [`RingWatch`]) counts itself in a *waiters* word: while it is there,
//! the worker wakes it (a futex on a word of its own) and not the scheduler.
//!
//! # Trust
//!
//! Each side keeps its own cursors privately and only publishes them; what it
//! reads from the other side is checked (an index more than the area ahead, a
//! length past the published bytes, an unknown kind) and reported as a
//! corruption, never followed. A task runs in the worker's address space and
//! can scribble on the mapping: the worker checks its own published words
//! after every task, and the parent fails the tasks whose answers were in a
//! corrupted ring with a clear error and replaces the worker. The words only
//! the worker reads (whether a parent thread waits, whether the handler
//! sleeps) are hints: the parent keeps its own count of waiters, and its
//! handler looks at a busy worker's ring now and then, so a hint overwritten
//! by a task delays answers and loses none.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::platform::futex;
use crate::platform::shm::ShmRegion;

/// Bytes of each ring's data area (a power of two, so `u32` cursors wrap
/// cleanly).
pub(crate) const AREA: usize = 128 * 1024;
/// The largest frame carried in a ring; bigger ones go through the socket.
pub(crate) const RECORD_MAX: usize = 16 * 1024;
/// Record header: length and kind.
const HDR: usize = 8;
/// Where the data areas start (control words before, each on its own cache
/// line so the two sides do not write to the same line).
const DATA: usize = 4096;
/// Size of the region.
pub(crate) const LEN: usize = DATA + 2 * AREA;

/// Control words (byte offsets of `AtomicU32`s).
mod ctl {
    /// Task ring: bytes written (parent).
    pub(super) const T_HEAD: usize = 0;
    /// Task ring: bytes consumed (worker).
    pub(super) const T_TAIL: usize = 64;
    /// The worker sleeps on `T_HEAD`'s futex.
    pub(super) const WORKER_SLEEPS: usize = 128;
    /// The parent sends no more tasks.
    pub(super) const CLOSED: usize = 192;
    /// Result ring: bytes written (worker).
    pub(super) const R_HEAD: usize = 256;
    /// Result ring: bytes consumed (parent).
    pub(super) const R_TAIL: usize = 320;
    /// The worker sleeps on `R_TAIL`'s futex, waiting for room.
    pub(super) const WRITER_SLEEPS: usize = 384;
    /// The parent's scheduler sleeps in `poll`.
    pub(super) const PARENT_SLEEPS: usize = 448;
    /// The worker found its ring corrupted and is exiting.
    pub(super) const POISON: usize = 512;
    /// Parent threads waiting for a result in this ring themselves (see
    /// [`RingWatch`]): while there are any, a result wakes them, not the
    /// scheduler.
    pub(super) const WAITERS: usize = 576;
    /// How many of those sleep on `WAKE_SEQ`'s futex.
    pub(super) const WAITER_SLEEPS: usize = 640;
    /// Bumped to wake the sleeping waiters.
    pub(super) const WAKE_SEQ: usize = 704;
}

/// A record carrying a frame.
const KIND_FRAME: u32 = 1;
/// A record saying: the next frame is on the socket.
const KIND_SOCKET: u32 = 2;
/// A record filling the end of the area.
const KIND_WRAP: u32 = 3;
/// A record saying: no more tasks (see [`ParentRing::close`]).
const KIND_CLOSE: u32 = 4;

/// How long a reader watches an empty ring before it sleeps (the queue's
/// figure: one cross-core hop with room to spare); zero on a machine with one
/// CPU, where spinning only delays the writer.
pub(crate) fn spin_for() -> Duration {
    static SPIN: OnceLock<Duration> = OnceLock::new();
    *SPIN.get_or_init(|| match std::thread::available_parallelism() {
        Ok(n) if n.get() > 1 => Duration::from_micros(50),
        _ => Duration::ZERO,
    })
}

/// Spinning pays only while the other side answers within the spin: on a
/// machine whose CPUs are all busy, a spinning thread takes the CPU the
/// other side needs to answer. A waiting site spins while its recent spins
/// ended with an answer; after `misses` misses in a row it sleeps at once,
/// and tries a spin again only every `probe`th wait.
///
/// Two settings. A site whose spin competes with the thread it waits for
/// (a worker waiting for its next task, a caller waiting for its answer)
/// stops at the first miss and probes rarely ([`new`](Self::new)): on a
/// loaded machine its spin delays the very answer it waits for. The pool's
/// scheduler and an `imap` consumer ([`tolerant`](Self::tolerant), each
/// yielding its CPU now and then while it spins) serve several workers at once,
/// so a stream of short tasks keeps its spin paying even when one wait in a
/// few misses (the end of one worker's window while the other still runs);
/// stopping it at the first miss made it sleep in `poll` and be woken by an
/// `eventfd` write for each handful of results.
pub(crate) struct SpinGate {
    /// Spins in a row that ended without an answer.
    misses: AtomicU32,
    /// Waits since the spins stopped paying.
    waits: AtomicU32,
    /// Misses in a row after which the site stops spinning.
    max_misses: u32,
    /// While stopped, one wait in this many spins, to see if it pays again.
    probe: u32,
}

impl SpinGate {
    /// A site whose spins have paid so far, stopping at the first miss.
    pub(crate) const fn new() -> SpinGate {
        SpinGate {
            misses: AtomicU32::new(0),
            waits: AtomicU32::new(0),
            max_misses: 1,
            probe: 256,
        }
    }

    /// A site that stops spinning after four misses in a row and, while
    /// stopped, spins one wait in sixteen (the pool's scheduler).
    pub(crate) const fn tolerant() -> SpinGate {
        SpinGate {
            misses: AtomicU32::new(0),
            waits: AtomicU32::new(0),
            max_misses: 4,
            probe: 16,
        }
    }

    /// How long this wait should spin: [`spin_for`], or zero while spins do
    /// not pay.
    pub(crate) fn budget(&self) -> Duration {
        if self.misses.load(Ordering::Relaxed) < self.max_misses
            || self.waits.fetch_add(1, Ordering::Relaxed) % self.probe == 0
        {
            spin_for()
        } else {
            Duration::ZERO
        }
    }

    /// Records whether a spin ended with an answer.
    pub(crate) fn record(&self, answered: bool) {
        if answered {
            self.misses.store(0, Ordering::Relaxed);
        } else {
            let _ = self
                .misses
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                    Some(m.saturating_add(1))
                });
        }
    }
}

/// The worker's wait for its next task.
static WORKER_SPIN: SpinGate = SpinGate::new();

/// A record read from a ring.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Record {
    /// A frame, copied into the caller's buffer.
    Frame,
    /// The next frame is on the socket.
    Socket,
    /// No more tasks (only in the task ring).
    Closed,
}

/// One direction's offsets.
#[derive(Clone, Copy)]
struct Dir {
    head: usize,
    tail: usize,
    area: usize,
}

const TASKS: Dir = Dir {
    head: ctl::T_HEAD,
    tail: ctl::T_TAIL,
    area: DATA,
};
const RESULTS: Dir = Dir {
    head: ctl::R_HEAD,
    tail: ctl::R_TAIL,
    area: DATA + AREA,
};

fn pad8(n: usize) -> usize {
    (n + 7) & !7
}

/// The shared region and the operations both sides use.
struct Rings {
    region: ShmRegion,
    /// Parent threads waiting in this ring for their own result: the
    /// parent's own count, which it trusts (the shared `WAITERS` word only
    /// tells the worker, and a task could overwrite it).
    waiting: AtomicU32,
}

impl Rings {
    fn word(&self, off: usize) -> &AtomicU32 {
        self.region.atomic_u32(off)
    }

    /// Wakes the parent threads sleeping in [`RingWatch::sleep`], if any.
    fn wake_waiters(&self) {
        if self.word(ctl::WAITER_SLEEPS).load(Ordering::SeqCst) != 0 {
            let seq = self.word(ctl::WAKE_SEQ);
            seq.fetch_add(1, Ordering::SeqCst);
            futex::wake_all(seq);
        }
    }

    /// Free bytes for a writer at `head`, or why the reader's index is bad.
    fn room(&self, d: Dir, head: u32) -> Result<usize, String> {
        let tail = self.word(d.tail).load(Ordering::Acquire);
        let used = head.wrapping_sub(tail) as usize;
        if used > AREA || used % 8 != 0 {
            return Err(format!(
                "the reader's index {tail} is not within the {AREA} bytes behind the writer's {head}"
            ));
        }
        Ok(AREA - used)
    }

    /// Bytes a record of `len` takes at `head` (with the wrap record it may need).
    fn need(head: u32, len: usize) -> usize {
        let pos = head as usize % AREA;
        let rec = HDR + pad8(len);
        let to_end = AREA - pos;
        if rec > to_end { to_end + rec } else { rec }
    }

    /// Writes a record at `*head` (room checked by the caller) and publishes it.
    fn write(&self, d: Dir, head: &mut u32, kind: u32, bytes: &[u8]) {
        let mut pos = *head as usize % AREA;
        let rec = HDR + pad8(bytes.len());
        if rec > AREA - pos {
            let skip = AREA - pos;
            self.header(d, pos, skip as u32, KIND_WRAP);
            *head = head.wrapping_add(skip as u32);
            pos = 0;
        }
        self.header(d, pos, bytes.len() as u32, kind);
        self.region.copy_in(d.area + pos + HDR, bytes);
        *head = head.wrapping_add(rec as u32);
        // SeqCst: against the reader's sleeps flag (see the module docs).
        self.word(d.head).store(*head, Ordering::SeqCst);
    }

    fn header(&self, d: Dir, pos: usize, len: u32, kind: u32) {
        let mut h = [0u8; HDR];
        h[..4].copy_from_slice(&len.to_le_bytes());
        h[4..].copy_from_slice(&kind.to_le_bytes());
        self.region.copy_in(d.area + pos, &h);
    }

    /// Reads the record at `tail` without consuming it: the record (a frame
    /// copied into `buf`) and the tail past it; `None` if empty.
    fn peek(&self, d: Dir, tail: u32, buf: &mut Vec<u8>) -> Result<Option<(Record, u32)>, String> {
        let head = self.word(d.head).load(Ordering::Acquire);
        let mut tail = tail;
        let mut avail = head.wrapping_sub(tail) as usize;
        if avail == 0 {
            return Ok(None);
        }
        if avail > AREA || avail % 8 != 0 {
            return Err(format!(
                "the writer's index {head} is not within the {AREA} bytes ahead of the reader's {tail}"
            ));
        }
        let mut wrapped = false;
        loop {
            let pos = tail as usize % AREA;
            let mut h = [0u8; HDR];
            self.region.copy_out(d.area + pos, &mut h);
            let len = u32::from_le_bytes(h[..4].try_into().expect("4 bytes")) as usize;
            let kind = u32::from_le_bytes(h[4..].try_into().expect("4 bytes"));
            match kind {
                KIND_WRAP if !wrapped && len == AREA - pos && len < avail && pos != 0 => {
                    tail = tail.wrapping_add(len as u32);
                    avail -= len;
                    wrapped = true;
                }
                KIND_FRAME if len <= RECORD_MAX && HDR + pad8(len) <= avail.min(AREA - pos) => {
                    buf.clear();
                    buf.resize(len, 0);
                    self.region.copy_out(d.area + pos + HDR, buf);
                    let next = tail.wrapping_add((HDR + pad8(len)) as u32);
                    return Ok(Some((Record::Frame, next)));
                }
                KIND_SOCKET if len == 0 => {
                    return Ok(Some((Record::Socket, tail.wrapping_add(HDR as u32))));
                }
                KIND_CLOSE if len == 0 && d.head == TASKS.head => {
                    return Ok(Some((Record::Closed, tail.wrapping_add(HDR as u32))));
                }
                _ => {
                    return Err(format!(
                        "a record of kind {kind} declaring {len} bytes at offset {pos}, with {avail} bytes published"
                    ));
                }
            }
        }
    }

    /// Publishes the reader's new `tail`.
    fn consume(&self, d: Dir, tail: u32) {
        self.word(d.tail).store(tail, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------
// The parent's side

/// The parent's end of one worker's rings.
pub(crate) struct ParentRing {
    rings: Arc<Rings>,
    /// Task ring bytes written.
    t_head: u32,
    /// Result ring bytes consumed.
    r_tail: u32,
}

impl ParentRing {
    /// New, empty rings.
    ///
    /// # Errors
    ///
    /// The errors of creating shared memory.
    pub(crate) fn create() -> io::Result<ParentRing> {
        Ok(ParentRing {
            rings: Arc::new(Rings {
                region: ShmRegion::create(LEN)?,
                waiting: AtomicU32::new(0),
            }),
            t_head: 0,
            r_tail: 0,
        })
    }

    /// The memfd, for the worker's bootstrap payload.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.rings.region.fd()
    }

    /// True if `frame` may travel in the ring (small enough, no fds).
    pub(crate) fn fits(frame: &[u8], fds: usize) -> bool {
        fds == 0 && frame.len() <= RECORD_MAX
    }

    /// Places a task frame (`Some`) or a socket marker (`None`); false when
    /// there is no room yet (records taken back and not yet skipped by the
    /// worker).
    ///
    /// # Errors
    ///
    /// The worker published an impossible index.
    #[cfg(test)]
    pub(crate) fn push(&mut self, frame: Option<&[u8]>) -> Result<bool, String> {
        let pushed = self.push_quiet(frame)?;
        if pushed {
            self.wake_worker();
        }
        Ok(pushed)
    }

    /// [`push`](Self::push) without waking the worker: a writer placing
    /// several records wakes it once, after the last
    /// ([`wake_worker`](Self::wake_worker)).
    ///
    /// # Errors
    ///
    /// As [`push`](Self::push).
    pub(crate) fn push_quiet(&mut self, frame: Option<&[u8]>) -> Result<bool, String> {
        let (kind, bytes) = match frame {
            Some(f) => (KIND_FRAME, f),
            None => (KIND_SOCKET, &[][..]),
        };
        let room = self.rings.room(TASKS, self.t_head)?;
        if Rings::need(self.t_head, bytes.len()) > room {
            return Ok(false);
        }
        self.rings.write(TASKS, &mut self.t_head, kind, bytes);
        Ok(true)
    }

    /// Wakes the worker if it sleeps waiting for a task.
    pub(crate) fn wake_worker(&self) {
        if self.rings.word(ctl::WORKER_SLEEPS).load(Ordering::SeqCst) != 0 {
            futex::wake(self.rings.word(ctl::T_HEAD), 1);
        }
    }

    /// The next result record, not consumed (see [`consume`](Self::consume)).
    ///
    /// # Errors
    ///
    /// The ring is corrupted: why.
    pub(crate) fn peek(&self, buf: &mut Vec<u8>) -> Result<Option<(Record, u32)>, String> {
        self.rings.peek(RESULTS, self.r_tail, buf)
    }

    /// Consumes up to `tail` (from [`peek`](Self::peek)); wakes the worker if
    /// it waits for room.
    pub(crate) fn consume(&mut self, tail: u32) {
        self.r_tail = tail;
        self.rings.consume(RESULTS, tail);
        let w = self.rings.word(ctl::R_TAIL);
        if self.rings.word(ctl::WRITER_SLEEPS).load(Ordering::SeqCst) != 0 {
            futex::wake(w, 1);
        }
    }

    /// No more tasks: the worker exits once it has read the ring.
    ///
    /// The `CLOSED` flag alone can be missed: a worker that found it clear
    /// sleeps on the task ring's head index, which the flag leaves as it
    /// was, so a wake sent before it sleeps is lost and it would sleep its
    /// whole slice. A close record moves the head. A ring with no room for
    /// it holds records the worker reads first, and it sees the flag after.
    pub(crate) fn close(&mut self) {
        self.rings.word(ctl::CLOSED).store(1, Ordering::SeqCst);
        // Either the worker sees the flag or this side sees the tail it
        // published before it looked: the room is not judged on a stale tail.
        std::sync::atomic::fence(Ordering::SeqCst);
        let room = self.rings.room(TASKS, self.t_head).unwrap_or(0);
        if Rings::need(self.t_head, 0) <= room {
            self.rings.write(TASKS, &mut self.t_head, KIND_CLOSE, &[]);
        }
        futex::wake_all(self.rings.word(ctl::T_HEAD));
    }

    /// The worker said it found the ring corrupted.
    pub(crate) fn poisoned(&self) -> bool {
        self.rings.word(ctl::POISON).load(Ordering::Acquire) != 0
    }

    /// A handle on the result ring's indexes and waiter words that needs no
    /// lock (see [`RingWatch`]).
    pub(crate) fn watch(&self) -> RingWatch {
        RingWatch {
            rings: self.rings.clone(),
        }
    }
}

/// What a parent thread other than the scheduler sees of one worker's result
/// ring without holding the pool's lock: whether results wait unread, and the
/// words through which the worker (or whoever sets a result) wakes it.
///
/// A thread waiting for the answer of a task it placed on this worker
/// *enters* (the worker then wakes it, not the scheduler), reads results
/// itself under the pool's lock, and *leaves*; a result published while it
/// left is handed to the scheduler (see [`leave`](Self::leave)). The flag and
/// the index are a Dekker pair (`SeqCst` on both sides), as for the scheduler.
#[derive(Clone)]
pub(crate) struct RingWatch {
    rings: Arc<Rings>,
}

impl RingWatch {
    /// True if the worker published results the parent has not consumed.
    pub(crate) fn has_unread(&self) -> bool {
        self.rings.word(ctl::R_HEAD).load(Ordering::SeqCst)
            != self.rings.word(ctl::R_TAIL).load(Ordering::SeqCst)
    }

    /// The worker's published result index (what a spin watches).
    pub(crate) fn head(&self) -> &AtomicU32 {
        self.rings.word(ctl::R_HEAD)
    }

    /// True while a parent thread waits in this ring for its own result.
    pub(crate) fn has_waiters(&self) -> bool {
        self.rings.waiting.load(Ordering::SeqCst) != 0
    }

    /// Raises or lowers the flag saying the scheduler sleeps in `poll`.
    pub(crate) fn set_parent_sleeps(&self, on: bool) {
        self.rings
            .word(ctl::PARENT_SLEEPS)
            .store(u32::from(on), Ordering::SeqCst);
    }

    /// Registers a waiting thread: from now on the worker wakes waiters,
    /// not the scheduler.
    pub(crate) fn enter(&self) {
        self.rings.waiting.fetch_add(1, Ordering::SeqCst);
        self.rings.word(ctl::WAITERS).fetch_add(1, Ordering::SeqCst);
    }

    /// Unregisters a waiting thread. True if results wait unread: the
    /// worker may have skipped waking the scheduler for them, so the caller
    /// must wake it.
    pub(crate) fn leave(&self) -> bool {
        self.rings.word(ctl::WAITERS).fetch_sub(1, Ordering::SeqCst);
        self.rings.waiting.fetch_sub(1, Ordering::SeqCst);
        self.has_unread()
    }

    /// Sleeps until the worker publishes a result, [`wake`](Self::wake) is
    /// called, or `until`; `ready` is looked at once more after the sleeper
    /// is counted, so a wake between it and the sleep is not lost.
    pub(crate) fn sleep(&self, until: Instant, ready: impl Fn() -> bool) {
        let sleeps = self.rings.word(ctl::WAITER_SLEEPS);
        let seq = self.rings.word(ctl::WAKE_SEQ);
        sleeps.fetch_add(1, Ordering::SeqCst);
        let seen = seq.load(Ordering::SeqCst);
        if !ready() && !self.has_unread() {
            futex::wait(seq, seen, Some(until));
        }
        sleeps.fetch_sub(1, Ordering::SeqCst);
    }

    /// Wakes the threads sleeping in [`sleep`](Self::sleep) (their result
    /// was set some other way).
    pub(crate) fn wake(&self) {
        self.rings.wake_waiters();
    }
}

// ---------------------------------------------------------------------------
// The worker's side

/// What the worker reads next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// A task frame, in the buffer.
    Frame,
    /// A task frame on the socket.
    Socket,
    /// The parent closed the ring and everything is read.
    Closed,
}

/// The worker's end of its rings.
pub(crate) struct WorkerRing {
    rings: Rings,
    /// Task ring bytes consumed.
    t_tail: u32,
    /// Result ring bytes written.
    r_head: u32,
}

/// How long a sleeping worker waits before it looks at its socket: a parent
/// that hung up without closing the ring is seen within this.
const SLEEP_SLICE: Duration = Duration::from_secs(1);

impl WorkerRing {
    /// The rings whose memfd the parent sent.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `fd` is not a region of the rings' size.
    pub(crate) fn from_fd(fd: OwnedFd) -> io::Result<WorkerRing> {
        let region = ShmRegion::from_fd(fd)?;
        if region.len() < LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the pool worker's ring is too small",
            ));
        }
        let rings = Rings {
            region,
            waiting: AtomicU32::new(0),
        };
        let t_tail = rings.word(ctl::T_TAIL).load(Ordering::Acquire);
        let r_head = rings.word(ctl::R_HEAD).load(Ordering::Acquire);
        Ok(WorkerRing {
            rings,
            t_tail,
            r_head,
        })
    }

    /// Waits for the next task record (a frame lands in `buf`). `hung_up`
    /// says whether the parent's end of the socket is closed.
    ///
    /// # Errors
    ///
    /// The ring is corrupted: why.
    pub(crate) fn next(
        &mut self,
        buf: &mut Vec<u8>,
        hung_up: impl Fn() -> bool,
    ) -> Result<Next, String> {
        let head = self.rings.word(ctl::T_HEAD);
        let sleeps = self.rings.word(ctl::WORKER_SLEEPS);
        // Read the clock only once the ring is found empty: a busy worker
        // finds its next task at once, and a clock read costs as much as a
        // small task on a virtual machine.
        let mut spin_until = None;
        // 0: not spun yet, 1: spinning, 2: slept.
        let mut phase = 0;
        loop {
            let seen = head.load(Ordering::SeqCst);
            if let Some((rec, tail)) = self.rings.peek(TASKS, self.t_tail, buf)? {
                if phase == 1 {
                    WORKER_SPIN.record(true);
                }
                self.t_tail = tail;
                self.rings.consume(TASKS, tail);
                return Ok(match rec {
                    Record::Frame => Next::Frame,
                    Record::Socket => Next::Socket,
                    Record::Closed => Next::Closed,
                });
            }
            if self.rings.word(ctl::CLOSED).load(Ordering::SeqCst) != 0 {
                return Ok(Next::Closed);
            }
            let until = *spin_until.get_or_insert_with(|| Instant::now() + WORKER_SPIN.budget());
            if Instant::now() < until {
                phase = 1;
                spin_while(head, seen, until);
                continue;
            }
            if phase == 1 {
                WORKER_SPIN.record(false);
            }
            phase = 2;
            sleeps.store(1, Ordering::SeqCst);
            if head.load(Ordering::SeqCst) == seen
                && self.rings.word(ctl::CLOSED).load(Ordering::SeqCst) == 0
                && !futex::wait(head, seen, Some(Instant::now() + SLEEP_SLICE))
                && hung_up()
            {
                sleeps.store(0, Ordering::SeqCst);
                return Ok(Next::Closed);
            }
            sleeps.store(0, Ordering::SeqCst);
        }
    }

    /// Checks that the words only this side writes still hold what it wrote
    /// (a task may scribble on the mapping).
    ///
    /// # Errors
    ///
    /// What changed.
    pub(crate) fn check_own(&self) -> Result<(), String> {
        let t = self.rings.word(ctl::T_TAIL).load(Ordering::Acquire);
        let r = self.rings.word(ctl::R_HEAD).load(Ordering::Acquire);
        if t != self.t_tail || r != self.r_head {
            return Err(format!(
                "the worker's published indexes changed under it (task ring {} -> {t}, result ring {} -> {r})",
                self.t_tail, self.r_head
            ));
        }
        Ok(())
    }

    /// Places a result frame (`Some`) or a socket marker (`None`), waiting
    /// for room; calls `wake_parent` if the parent sleeps. `hung_up` as for
    /// [`next`](Self::next): a parent gone while we wait for room ends the
    /// wait with an error.
    ///
    /// # Errors
    ///
    /// The parent published an impossible index, or hung up.
    pub(crate) fn push(
        &mut self,
        frame: Option<&[u8]>,
        wake_parent: impl Fn(),
        hung_up: impl Fn() -> bool,
    ) -> Result<(), String> {
        let (kind, bytes) = match frame {
            Some(f) => (KIND_FRAME, f),
            None => (KIND_SOCKET, &[][..]),
        };
        let need = Rings::need(self.r_head, bytes.len());
        let tail = self.rings.word(ctl::R_TAIL);
        let sleeps = self.rings.word(ctl::WRITER_SLEEPS);
        // The clock only once the ring is found full (see `next`).
        let mut spin_until = None;
        loop {
            let seen = tail.load(Ordering::SeqCst);
            if self.rings.room(RESULTS, self.r_head)? >= need {
                break;
            }
            let until = *spin_until.get_or_insert_with(|| Instant::now() + spin_for());
            if Instant::now() < until {
                spin_while(tail, seen, until);
                continue;
            }
            sleeps.store(1, Ordering::SeqCst);
            if tail.load(Ordering::SeqCst) == seen
                && !futex::wait(tail, seen, Some(Instant::now() + SLEEP_SLICE))
                && hung_up()
            {
                sleeps.store(0, Ordering::SeqCst);
                return Err("the parent hung up".into());
            }
            sleeps.store(0, Ordering::SeqCst);
        }
        self.rings.write(RESULTS, &mut self.r_head, kind, bytes);
        // A parent thread waiting for this result reads it itself: wake it,
        // and not the scheduler (see `RingWatch`).
        self.rings.wake_waiters();
        // The first result after the scheduler went to sleep wakes it and
        // lowers the flag: the results after it, published before the
        // scheduler is up, cost no more writes (it drains them all). The
        // load first: while the scheduler is awake the flag's line is only
        // read, not written, by every result.
        let parent_sleeps = self.rings.word(ctl::PARENT_SLEEPS);
        if self.rings.word(ctl::WAITERS).load(Ordering::SeqCst) == 0
            && parent_sleeps.load(Ordering::SeqCst) != 0
            && parent_sleeps.swap(0, Ordering::SeqCst) != 0
        {
            wake_parent();
        }
        Ok(())
    }

    /// Tells the parent the ring is corrupted (before the worker exits).
    pub(crate) fn poison(&self) {
        self.rings.word(ctl::POISON).store(1, Ordering::SeqCst);
    }
}

/// Watches `word` while it still reads `seen`, until `until`. Only a hint.
#[inline]
fn spin_while(word: &AtomicU32, seen: u32, until: Instant) {
    loop {
        for _ in 0..64 {
            // Relaxed: the value only decides how long to spin.
            if word.load(Ordering::Relaxed) != seen {
                return;
            }
            std::hint::spin_loop();
        }
        if Instant::now() >= until {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (ParentRing, WorkerRing) {
        let p = ParentRing::create().unwrap();
        let fd = p.fd().try_clone_to_owned().unwrap();
        (p, WorkerRing::from_fd(fd).unwrap())
    }

    #[test]
    fn frames_and_markers_keep_their_order_across_many_wraps() {
        let (mut p, mut w) = pair();
        let mut buf = Vec::new();
        for i in 0..5000usize {
            let frame = vec![(i % 251) as u8; (i * 37) % 3000];
            assert!(p.push(Some(&frame)).unwrap());
            assert!(p.push(None).unwrap());
            assert_eq!(w.next(&mut buf, || false).unwrap(), Next::Frame);
            assert_eq!(buf, frame);
            assert_eq!(w.next(&mut buf, || false).unwrap(), Next::Socket);
            w.push(Some(&frame), || {}, || false).unwrap();
            let (rec, tail) = p.peek(&mut buf).unwrap().unwrap();
            assert_eq!((rec, &buf), (Record::Frame, &frame));
            p.consume(tail);
            assert!(!p.watch().has_unread());
        }
        w.check_own().unwrap();
    }

    #[test]
    fn a_full_task_ring_refuses_until_read() {
        let (mut p, mut w) = pair();
        let frame = vec![7u8; RECORD_MAX];
        let mut n = 0;
        while p.push(Some(&frame)).unwrap() {
            n += 1;
        }
        assert_eq!(n, AREA / (HDR + RECORD_MAX));
        let mut buf = Vec::new();
        assert_eq!(w.next(&mut buf, || false).unwrap(), Next::Frame);
        assert!(p.push(Some(&frame)).unwrap());
    }

    #[test]
    fn close_ends_the_worker_once_read() {
        let (mut p, mut w) = pair();
        assert!(p.push(Some(b"x")).unwrap());
        p.close();
        let mut buf = Vec::new();
        assert_eq!(w.next(&mut buf, || false).unwrap(), Next::Frame);
        assert_eq!(w.next(&mut buf, || false).unwrap(), Next::Closed);
    }

    /// The lost wake-up `close` guards against: a worker that read the
    /// `CLOSED` flag just before it was set, then sleeps on the head index.
    /// Simulated by clearing the flag after the close: the close record
    /// alone must end the worker (with the parent never seen hung up, a
    /// missed close would keep it asleep for good).
    #[test]
    fn close_ends_a_worker_that_missed_the_flag() {
        let (mut p, mut w) = pair();
        p.close();
        p.rings.word(ctl::CLOSED).store(0, Ordering::SeqCst);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = tx.send(w.next(&mut buf, || false));
        });
        let got = rx.recv_timeout(Duration::from_secs(30));
        assert_eq!(got, Ok(Ok(Next::Closed)), "hang guard: no answer in 30 s");
    }

    #[test]
    fn a_close_record_in_the_result_ring_is_an_error() {
        let (p, _w) = pair();
        p.rings.header(RESULTS, 0, 0, KIND_CLOSE);
        p.rings
            .word(ctl::R_HEAD)
            .store(HDR as u32, Ordering::SeqCst);
        let mut buf = Vec::new();
        assert!(p.peek(&mut buf).is_err());
    }

    #[test]
    fn a_sleeping_worker_is_woken_by_a_push() {
        let (mut p, mut w) = pair();
        let t = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let r = w.next(&mut buf, || false);
            (r, buf)
        });
        // Whether the worker is spinning or asleep, the push reaches it.
        assert!(p.push(Some(b"wake")).unwrap());
        let (r, buf) = t.join().unwrap();
        assert_eq!(r, Ok(Next::Frame));
        assert_eq!(buf, b"wake");
    }

    #[test]
    fn lying_indexes_and_lengths_are_errors() {
        let (p, _w) = pair();
        let mut buf = Vec::new();
        // A wrapped index: far more than the area ahead.
        p.rings
            .word(ctl::R_HEAD)
            .store(0x8000_0000, Ordering::SeqCst);
        assert!(p.peek(&mut buf).is_err());
        // An index not on a record boundary.
        p.rings.word(ctl::R_HEAD).store(12, Ordering::SeqCst);
        assert!(p.peek(&mut buf).is_err());
        // A record declaring more bytes than were published.
        p.rings.header(RESULTS, 0, 1 << 30, KIND_FRAME);
        p.rings.word(ctl::R_HEAD).store(16, Ordering::SeqCst);
        assert!(p.peek(&mut buf).is_err());
        // An unknown kind.
        p.rings.header(RESULTS, 0, 0, 99);
        assert!(p.peek(&mut buf).is_err());
        // A wrap record that is not at the end of the area.
        p.rings.header(RESULTS, 0, 8, KIND_WRAP);
        assert!(p.peek(&mut buf).is_err());
    }

    #[test]
    fn a_sleeping_scheduler_is_woken_once_per_sleep() {
        let (p, mut w) = pair();
        let wakes = std::cell::Cell::new(0);
        let wake = || wakes.set(wakes.get() + 1);
        // Awake: no write to the eventfd.
        w.push(Some(b"a"), wake, || false).unwrap();
        assert_eq!(wakes.get(), 0);
        // Asleep: the first result wakes it, the next ones before it is up
        // do not (it drains them all).
        p.watch().set_parent_sleeps(true);
        for frame in [b"b", b"c", b"d"] {
            w.push(Some(frame), wake, || false).unwrap();
        }
        assert_eq!(wakes.get(), 1);
        // Asleep again: woken again.
        p.watch().set_parent_sleeps(true);
        w.push(Some(b"e"), wake, || false).unwrap();
        assert_eq!(wakes.get(), 2);
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        let mut p = p;
        while let Some((_, tail)) = p.peek(&mut buf).unwrap() {
            seen.push(buf.clone());
            p.consume(tail);
        }
        assert_eq!(seen, [b"a", b"b", b"c", b"d", b"e"]);
    }

    /// Spins granted in `waits` waits that all miss.
    fn spins_while_missing(gate: &SpinGate, waits: u32) -> u32 {
        (0..waits)
            .filter(|_| {
                let spun = !gate.budget().is_zero();
                if spun {
                    gate.record(false);
                }
                spun
            })
            .count() as u32
    }

    #[test]
    fn spin_gates_stop_after_their_misses_and_a_hit_restarts_them() {
        if spin_for().is_zero() {
            // One CPU: no site ever spins.
            assert!(SpinGate::tolerant().budget().is_zero());
            return;
        }
        // Strict: one miss, then one wait in 256.
        let strict = SpinGate::new();
        assert_eq!(spins_while_missing(&strict, 1 + 512), 1 + 2);
        // Tolerant: four misses, then one wait in 16.
        let tolerant = SpinGate::tolerant();
        assert_eq!(spins_while_missing(&tolerant, 4 + 64), 4 + 4);
        // A probe that hits makes it spin on every wait again.
        tolerant.record(true);
        assert_eq!(spins_while_missing(&tolerant, 4), 4);
    }

    #[test]
    fn a_scribbled_own_index_is_seen() {
        let (_p, w) = pair();
        w.check_own().unwrap();
        w.rings.word(ctl::R_HEAD).store(40, Ordering::SeqCst);
        assert!(w.check_own().is_err());
    }
}
