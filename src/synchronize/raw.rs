//! The raw cores under every primitive of this module: words in shared memory,
//! blocked on with [`futex`].
//!
//! * [`RawSemLock`]: a counting semaphore (optionally bounded) over one value
//!   word and one waiter count. `Semaphore`, `BoundedSemaphore` and the queues'
//!   `maxsize` are built on it.
//! * [`RawLock`]: a mutex whose word holds the holder's pid, so that a waiter can
//!   find a dead holder and take the lock over ([`Acquired::OwnerDied`]).
//!   `Lock`, `RLock`, `Value`'s and `Array`'s locks are built on it.
//! * [`RawCondvar`]: a notification counter (std's futex condvar), for internal
//!   waits under one of the locks above.
//!
//! Every raw type is a view: an `Arc` of a region plus an offset, so several
//! cores can share one region (the queues put a semaphore next to their ring).

use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering, compiler_fence};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::platform::process::{exists, gettid};
use crate::platform::shm::ShmRegion;
use crate::platform::{futex, membarrier};

/// How many times a contended acquire (or an `Event` wait) re-reads its word
/// before it sleeps in the kernel (std's futex mutex spins 100 times too). Each round is one relaxed load
/// and a `spin_loop` hint, a few microseconds in all: enough to catch a holder
/// that is about to release, too short to burn a core.
pub(crate) const SPIN_LIMIT: u32 = 100;

/// How long a waiter sleeps before it checks whether the holder of a
/// [`RawLock`] is still alive. Only blocked waiters pay for it (one read of
/// `/proc/PID/stat` per slice); the fast path never does.
pub(crate) const OWNER_CHECK_SLICE: Duration = Duration::from_millis(100);

/// Python's `SEM_VALUE_MAX` on Linux: the largest value of a semaphore.
pub(crate) const SEM_VALUE_MAX: u32 = i32::MAX as u32;

/// The message of CPython's `ValueError` for a release too many.
pub(crate) const RELEASED_TOO_MANY: &str =
    "semaphore or lock released too many times; release only what was acquired";

/// Spins `n` rounds while `busy()` holds; returns early when it stops holding.
#[inline]
fn spin_while(mut busy: impl FnMut() -> bool) {
    for _ in 0..SPIN_LIMIT {
        if !busy() {
            return;
        }
        std::hint::spin_loop();
    }
}

/// How many `spin_loop` hints a contended [`RawLock`] acquire may spend before
/// it sleeps in the kernel: 10 µs where a hint takes 10 ns (the Xeon of
/// docs/benchmarks.md), up to 50 µs where it takes 140 cycles (Skylake).
const LOCK_SPIN_PAUSES: u32 = 1000;

/// The longest pause between two looks at a contended lock word, in hints.
const LOCK_SPIN_MAX_GAP: u32 = 64;

/// Waits while `busy()` holds, looking at it after pauses that double up to
/// [`LOCK_SPIN_MAX_GAP`] hints, for [`LOCK_SPIN_PAUSES`] hints in all. Each look
/// pulls the lock's cache line away from the holder, whose next write must
/// fetch it back: looking rarely lets a holder that takes the lock again and
/// again run at its own speed, and a lock that changes hands often is still
/// seen free within a gap. Against [`spin_while`]'s 100 back-to-back looks,
/// two processes incrementing a `Value` went from 14-29M to 51M increments/s
/// (medians of 10-12 runs).
#[inline]
fn spin_backoff(mut busy: impl FnMut() -> bool) {
    let mut gap = 1;
    let mut spent = 0;
    while spent < LOCK_SPIN_PAUSES {
        if !busy() {
            return;
        }
        for _ in 0..gap {
            std::hint::spin_loop();
        }
        spent += gap;
        gap = (gap * 2).min(LOCK_SPIN_MAX_GAP);
    }
}

/// How a contended [`RawLock`] acquire waits before it sleeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Spin {
    /// [`spin_backoff`], and again after each wake: for locks a process may
    /// take again and again (`Lock`, `RLock`, a `Value`'s), where the holder
    /// keeping its cache line is the throughput.
    Backoff,
    /// [`spin_while`] only, no spin after a wake: for a lock two sides take in
    /// turn (a queue's, between its producers and consumers), where a waiter
    /// that looks rarely leaves the other side running ahead of it. A queue's
    /// throughput was 3.9-4.3M items/s with it, 1.9-2.3M with the backoff.
    Eager,
}

pub(crate) use crate::util::deadline_after;

/// Spins on a contended lock word as `spin` says.
#[inline]
fn spin_on(spin: Spin, word: &AtomicU32) {
    let busy = || word.load(Ordering::Relaxed) != 0;
    match spin {
        Spin::Backoff => spin_backoff(busy),
        Spin::Eager => spin_while(busy),
    }
}

/// True once `deadline` (if any) has passed.
fn expired(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

// ---------------------------------------------------------------------------
// RawSemLock

/// A counting semaphore in [`RawSemLock::SIZE`] bytes of shared memory.
///
/// Layout (offsets from the view's start, all `u32`):
///
/// | offset | word | meaning |
/// |---|---|---|
/// | 0 | `value` | the count; waiters sleep on it while it is 0 |
/// | 4 | `waiters` | how many acquirers may be asleep; release wakes one only if > 0 |
/// | 8 | `max` | the bound (`SEM_VALUE_MAX` when unbounded) |
///
/// Acquire is one CAS on `value` when it is positive; release is one
/// `fetch_add` plus one load of `waiters`, and a `futex` wake only if someone
/// may sleep. Both sides use `SeqCst` on `value` and `waiters` (Dekker): either
/// the releaser sees the sleeper's `waiters` increment, or the sleeper sees the
/// released unit before it sleeps (and the futex re-checks `value == 0`).
#[derive(Clone)]
pub(crate) struct RawSemLock {
    /// The region holding the words.
    region: Arc<ShmRegion>,
    /// Where the three words start (4-aligned).
    offset: usize,
}

impl RawSemLock {
    /// Bytes taken in the region.
    pub(crate) const SIZE: usize = 16;

    /// A semaphore in a fresh region of its own.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when `value > max` or `max > SEM_VALUE_MAX`;
    /// [`Error::Io`] when no shared memory could be created.
    #[cfg(test)] // the crate's semaphores sit after a region header (synchronize/mod.rs)
    pub(crate) fn new(value: u32, max: Option<u32>) -> Result<RawSemLock> {
        let region = Arc::new(ShmRegion::create(Self::SIZE)?);
        Self::init(region, 0, value, max)
    }

    /// Writes a fresh semaphore at `offset` of `region` (before anyone else
    /// can see it) and returns a view of it.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when `value > max` or either is above `SEM_VALUE_MAX`.
    pub(crate) fn init(
        region: Arc<ShmRegion>,
        offset: usize,
        value: u32,
        max: Option<u32>,
    ) -> Result<RawSemLock> {
        let max = max.unwrap_or(SEM_VALUE_MAX);
        if max > SEM_VALUE_MAX || value > max {
            return Err(Error::value(format!(
                "semaphore value {value} out of range: it must be at most {max} \
                 (and at most {SEM_VALUE_MAX})"
            )));
        }
        let s = RawSemLock { region, offset };
        s.value().store(value, Ordering::Relaxed);
        s.waiters().store(0, Ordering::Relaxed);
        s.region
            .atomic_u32(offset + 8)
            .store(max, Ordering::Relaxed);
        Ok(s)
    }

    /// A view of a semaphore that [`init`](Self::init) wrote (in this or another
    /// process) at `offset` of `region`.
    pub(crate) fn attach(region: Arc<ShmRegion>, offset: usize) -> RawSemLock {
        RawSemLock { region, offset }
    }

    /// The region this semaphore lives in.
    pub(crate) fn region(&self) -> &Arc<ShmRegion> {
        &self.region
    }

    #[inline]
    fn value(&self) -> &AtomicU32 {
        self.region.atomic_u32(self.offset)
    }

    #[inline]
    fn waiters(&self) -> &AtomicU32 {
        self.region.atomic_u32(self.offset + 4)
    }

    /// The bound given at creation (`SEM_VALUE_MAX` when unbounded).
    #[inline]
    pub(crate) fn max(&self) -> u32 {
        self.region
            .atomic_u32(self.offset + 8)
            .load(Ordering::Relaxed)
    }

    /// The current count (a snapshot).
    pub(crate) fn get_value(&self) -> u32 {
        self.value().load(Ordering::Relaxed)
    }

    /// Takes one unit if the count is positive; never blocks.
    #[inline]
    pub(crate) fn try_acquire(&self) -> bool {
        let value = self.value();
        let mut v = value.load(Ordering::Relaxed);
        while v > 0 {
            match value.compare_exchange_weak(v, v - 1, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
        false
    }

    /// Takes one unit, blocking while the count is 0.
    pub(crate) fn acquire(&self) {
        self.acquire_deadline(None);
    }

    /// Takes one unit, blocking while the count is 0 until `deadline`
    /// (`None`: forever). False when the deadline passed first; a deadline
    /// already past still takes a free unit.
    #[inline]
    pub(crate) fn acquire_deadline(&self, deadline: Option<Instant>) -> bool {
        self.try_acquire() || self.acquire_slow(deadline)
    }

    #[cold]
    fn acquire_slow(&self, deadline: Option<Instant>) -> bool {
        let value = self.value();
        spin_while(|| value.load(Ordering::Relaxed) == 0);
        if self.try_acquire() {
            return true;
        }
        // SeqCst: pairs with the release's SeqCst load of `waiters` (see type doc).
        self.waiters().fetch_add(1, Ordering::SeqCst);
        let got = loop {
            if self.try_acquire() {
                break true;
            }
            if expired(deadline) {
                break false;
            }
            // A false return is a timeout: one last try, then give up.
            if !futex::wait(value, 0, deadline) {
                break self.try_acquire();
            }
        };
        self.waiters().fetch_sub(1, Ordering::SeqCst);
        got
    }

    /// Gives one unit back and wakes one sleeper, if any.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when the count is already at its bound (a
    /// `BoundedSemaphore` released too many times, or `SEM_VALUE_MAX`).
    #[inline]
    pub(crate) fn release(&self) -> Result<()> {
        let value = self.value();
        let max = self.max();
        let mut v = value.load(Ordering::Relaxed);
        loop {
            if v >= max {
                return Err(Error::value(RELEASED_TOO_MANY));
            }
            match value.compare_exchange_weak(v, v + 1, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        if self.waiters().load(Ordering::SeqCst) > 0 {
            futex::wake(value, 1);
        }
        Ok(())
    }
}

impl fmt::Debug for RawSemLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawSemLock")
            .field("value", &self.get_value())
            .field("max", &self.max())
            .finish()
    }
}

// ---------------------------------------------------------------------------
// Process identity and liveness

/// Bits of the lock word that hold the holder's pid (`PID_MAX_LIMIT` is 2^22).
const PID_MASK: u32 = (1 << 22) - 1;

/// How long a [`RawLock`] waiter first sleeps before it pays for the barrier
/// that makes its sleep safe (see the type doc): a lock that changes hands
/// often wakes it well within this, and a wake lost in the few nanoseconds the
/// barrier closes costs at most this much.
const FIRST_SLEEP: Duration = Duration::from_micros(100);

/// How long a waiter sleeps at a time when the barrier is refused (a seccomp
/// filter): it then looks at the word this often instead of trusting a wake.
const UNFENCED_SLEEP: Duration = Duration::from_millis(1);

/// [`RELEASE_MODE`]: not decided yet in this process.
const UNDECIDED: u8 = 0;
/// [`RELEASE_MODE`]: registered for waiters' barriers; release is a plain store.
const LIGHT: u8 = 1;
/// [`RELEASE_MODE`]: the kernel refused; release is a swap (a full fence).
const FENCED: u8 = 2;

/// Sleeps of this process's [`RawLock`] waiters that were trusted to end with
/// a wake (fenced) but ran to the end of their slice and then found the lock
/// free: wakes that were lost ([`missed_lock_wakes`]).
static MISSED_WAKES: AtomicU64 = AtomicU64::new(0);

/// How many wakes this process's lock waiters missed: sleeps trusted to end
/// with a wake that ran out their 100 ms slice and then found the lock free.
/// Always 0 unless the release's handshake is broken; the crate's tests check
/// it.
pub fn missed_lock_wakes() -> u64 {
    MISSED_WAKES.load(Ordering::Relaxed)
}

/// How this process releases a [`RawLock`]; decided on its first release.
static RELEASE_MODE: AtomicU8 = AtomicU8::new(UNDECIDED);

/// True when this process releases with a plain store: it is registered, so a
/// waiter's barrier reaches it.
#[inline]
fn light_release() -> bool {
    match RELEASE_MODE.load(Ordering::Relaxed) {
        LIGHT => true,
        FENCED => false,
        _ => decide_release_mode(),
    }
}

/// Registers this process for waiters' barriers, once (a race registers twice,
/// which the kernel takes as once).
#[cold]
fn decide_release_mode() -> bool {
    let light = membarrier::register_global_expedited();
    RELEASE_MODE.store(if light { LIGHT } else { FENCED }, Ordering::Relaxed);
    light
}

/// This process: its pid and its holder stamp (`start time << 22 | pid`).
#[derive(Clone, Copy, Debug)]
struct Me {
    /// `getpid()`.
    pid: u32,
    /// What a holder writes beside the lock word.
    stamp: u64,
}

/// Our identity, read once per process (children are fresh executables, so
/// there is no fork to invalidate it).
#[inline]
fn me() -> Me {
    static ME: OnceLock<Me> = OnceLock::new();
    *ME.get_or_init(|| {
        let pid = std::process::id();
        let start = proc_stat(pid).map_or(0, |s| s.start_time);
        Me {
            pid,
            stamp: stamp(pid, start),
        }
    })
}

fn stamp(pid: u32, start_time: u64) -> u64 {
    (start_time << 22) | u64::from(pid & PID_MASK)
}

/// The pid of this process (cached).
pub(crate) fn my_pid() -> u32 {
    me().pid
}

/// The kernel thread id of the calling thread (cached per thread).
pub(crate) fn my_tid() -> u32 {
    thread_local! {
        static TID: u32 = gettid();
    }
    TID.with(|t| *t)
}

/// What `/proc/PID/stat` says about a process.
struct ProcStat {
    /// The state letter (`R`, `S`, `Z`, ...).
    state: char,
    /// Field 22: start time in clock ticks after boot.
    start_time: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses.
    let rest = text.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state come fields 4..; start time is field 22, the 19th after it.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(ProcStat { state, start_time })
}

/// Whether the holder recorded in a lock word is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Liveness {
    Alive,
    /// Gone, or a zombie: it will never release.
    Dead,
    /// A live process has that pid but started at another time than the
    /// recorded holder: pid reuse, or a new holder that has not written its
    /// stamp yet. Dead only if it is still so one slice later.
    Suspect,
}

/// True when `pid` has exited (gone, or a zombie). A reused pid counts as
/// alive: callers then merely miss a death.
pub(crate) fn process_is_dead(pid: u32) -> bool {
    liveness(pid, 0) == Liveness::Dead
}

fn liveness(pid: u32, recorded: u64) -> Liveness {
    match proc_stat(pid) {
        // No /proc entry: ask the kernel directly (/proc may be missing or
        // mounted with hidepid). Only "no such process" proves death.
        None if exists(pid) => Liveness::Alive,
        None => Liveness::Dead,
        Some(s) if matches!(s.state, 'Z' | 'X' | 'x') => Liveness::Dead,
        Some(s) => {
            if recorded & u64::from(PID_MASK) == u64::from(pid)
                && recorded != stamp(pid, s.start_time)
            {
                Liveness::Suspect
            } else {
                Liveness::Alive
            }
        }
    }
}

// ---------------------------------------------------------------------------
// RawLock

/// How an acquire of a lock with an owner record went.
///
/// Python has no counterpart: a CPython lock whose holder died stays locked
/// forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// The lock was free, or released normally.
    Clean,
    /// The process holding the lock died (or exited) without releasing it; this
    /// caller took it over. Data the lock guards may be half-updated.
    OwnerDied {
        /// The pid of the dead holder.
        pid: u32,
    },
}

impl Acquired {
    /// True for [`Acquired::OwnerDied`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::Acquired;
    /// assert!(!Acquired::Clean.owner_died());
    /// assert!(Acquired::OwnerDied { pid: 7 }.owner_died());
    /// ```
    pub fn owner_died(&self) -> bool {
        matches!(self, Acquired::OwnerDied { .. })
    }
}

/// A mutex in [`RawLock::SIZE`] bytes of shared memory that records its
/// holder, so a dead holder is found and the lock taken over.
///
/// Layout:
///
/// | offset | field | meaning |
/// |---|---|---|
/// | 0 | `word: u32` | 0 = unlocked; else the holder's pid |
/// | 4 | `waiters: u32` | acquirers past their spin, which may sleep on `releases` |
/// | 8 | `holder: u64` | the holder's stamp: `start_time << 22 \| pid`, written just after the CAS |
/// | 16 | `recoveries: u32` | how many times a waiter took the lock over from a dead holder |
/// | 20 | `woken: u32` | 1 while a wake is on its way to a waiter that has not run yet |
/// | 24 | `releases: u32` | releases so far (wrapping); waiters sleep on it |
///
/// Acquire is one CAS `0 -> pid` plus a relaxed store of the stamp. Release
/// (any process may release, as Python allows) stores 0 and, if `waiters` is
/// not 0, counts itself in `releases` and wakes one sleeper, unless `woken`
/// says a wake is on its way already. A waiter reads `releases`, then `word`, and
/// sleeps on `releases` while it still reads the same: a release in between
/// (even one after which the same holder took the lock back) fails the sleep
/// at once. It clears `woken` before each sleep if it is set, and when it
/// takes the lock.
///
/// That check is a Dekker handshake: the releaser writes `word` then reads
/// `waiters` and `woken`, a waiter raises `waiters` (or clears `woken`) then
/// reads `word` before it sleeps, and without a full fence on both sides each
/// may miss the other's write, leaving the waiter asleep on a free lock. The fence on the release side would be a
/// locked instruction, half the cost of an uncontended lock and unlock (7 ns of
/// 14 on the machine of docs/benchmarks.md). So the release side has none: a
/// process registers with `membarrier` on its first release, releases with a
/// plain store and a plain load, and a waiter runs `membarrier` before it
/// trusts its sleep, which forces a full fence on every CPU running a
/// registered thread. Either the releaser's store was then visible, or its
/// loads come after the fence and see the waiter. Because that barrier
/// interrupts other CPUs, a waiter sleeps [`FIRST_SLEEP`] without it first,
/// and again after each clear of `woken`: a lock that changes hands wakes it
/// sooner, and only a waiter still asleep after that pays. Where the kernel
/// refuses `membarrier`, releases swap (a full fence) and a waiter that cannot
/// fence looks at the word every [`UNFENCED_SLEEP`]; a process of either kind
/// may share a lock with the other.
///
/// Two trades of the plain release. Two processes releasing the same held
/// `Lock` at once may both succeed, where a swap would make one of them fail
/// with "released too many times"; and a release racing with an acquire may
/// free the lock just taken, as a release arriving just after it would. A
/// waiter killed while it waits stays counted in `waiters`: the one wake sent
/// its way leaves `woken` set, so later releases make no more calls, and a
/// live waiter clears it before it sleeps. A wake sent to a waiter that is
/// killed before it runs is lost: another sleeper waits out its slice.
///
/// Waiters sleep in slices of [`OWNER_CHECK_SLICE`]; after one without a
/// release they look the holder up in `/proc`: gone or a zombie means dead;
/// alive with another start time than the stamp means the pid was reused
/// (dead), unless the stamp is merely late (so that case must hold for two
/// slices). A dead holder's word is CAS'd to the waiter's pid: only one waiter
/// wins, and a release racing with it makes the CAS fail.
#[derive(Clone)]
pub(crate) struct RawLock {
    /// The region holding the words.
    region: Arc<ShmRegion>,
    /// Where the words start (8-aligned).
    offset: usize,
}

/// How a sleeping [`RawLock`] waiter knows a release will wake it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Vigil {
    /// Not fenced since `woken` was last cleared: sleeps are short
    /// ([`FIRST_SLEEP`]).
    Unfenced,
    /// Fenced: every release from now on sees `waiters`, and wakes unless a
    /// wake is on its way to a waiter that will pass it on (by its own release,
    /// by clearing `woken` before it sleeps, or by waking the next as it gives
    /// up).
    Fenced,
    /// The barrier was refused: sleeps are short ([`UNFENCED_SLEEP`]).
    Polling,
}

impl Vigil {
    /// After `woken` was cleared again: a fence before it no longer covers it.
    fn rearmed(self) -> Vigil {
        match self {
            Vigil::Fenced => Vigil::Unfenced,
            v => v,
        }
    }
}

impl RawLock {
    /// Bytes taken in the region.
    pub(crate) const SIZE: usize = 32;

    /// Writes an unlocked lock at `offset` (8-aligned) of `region`.
    pub(crate) fn init(region: Arc<ShmRegion>, offset: usize) -> RawLock {
        let l = RawLock { region, offset };
        l.word().store(0, Ordering::Relaxed);
        l.waiters().store(0, Ordering::Relaxed);
        l.holder().store(0, Ordering::Relaxed);
        l.recoveries_word().store(0, Ordering::Relaxed);
        l.woken().store(0, Ordering::Relaxed);
        l.releases().store(0, Ordering::Relaxed);
        l
    }

    /// A view of a lock that [`init`](Self::init) wrote at `offset` of `region`.
    pub(crate) fn attach(region: Arc<ShmRegion>, offset: usize) -> RawLock {
        RawLock { region, offset }
    }

    /// The region this lock lives in.
    pub(crate) fn region(&self) -> &Arc<ShmRegion> {
        &self.region
    }

    /// Where this lock starts in its region.
    pub(crate) fn offset(&self) -> usize {
        self.offset
    }

    #[inline]
    fn word(&self) -> &AtomicU32 {
        self.region.atomic_u32(self.offset)
    }

    #[inline]
    fn waiters(&self) -> &AtomicU32 {
        self.region.atomic_u32(self.offset + 4)
    }

    #[inline]
    fn holder(&self) -> &AtomicU64 {
        self.region.atomic_u64(self.offset + 8)
    }

    fn recoveries_word(&self) -> &AtomicU32 {
        self.region.atomic_u32(self.offset + 16)
    }

    #[inline]
    fn woken(&self) -> &AtomicU32 {
        self.region.atomic_u32(self.offset + 20)
    }

    /// Releases so far (wrapping): the word waiters sleep on.
    #[inline]
    fn releases(&self) -> &AtomicU32 {
        self.region.atomic_u32(self.offset + 24)
    }

    /// The pid of the holder, `None` when unlocked.
    pub(crate) fn owner_pid(&self) -> Option<u32> {
        match self.word().load(Ordering::Relaxed) & PID_MASK {
            0 => None,
            pid => Some(pid),
        }
    }

    /// True when held by this process (any thread).
    pub(crate) fn held_by_me(&self) -> bool {
        self.word().load(Ordering::Relaxed) & PID_MASK == my_pid()
    }

    /// How many times a waiter took this lock over from a dead holder.
    pub(crate) fn recoveries(&self) -> u32 {
        self.recoveries_word().load(Ordering::Relaxed)
    }

    /// Records us as the holder. Relaxed: the stamp is only a hint for the
    /// liveness check, which tolerates a late or stale stamp (see type doc).
    #[inline]
    fn record(&self, me: Me) {
        self.holder().store(me.stamp, Ordering::Relaxed);
    }

    /// Takes the lock if it is free; never blocks, never takes over.
    #[inline]
    pub(crate) fn try_acquire(&self) -> bool {
        let me = me();
        if self
            .word()
            .compare_exchange(0, me.pid, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            self.record(me);
            true
        } else {
            false
        }
    }

    /// Takes the lock, blocking until `deadline` (`None`: forever). `None` when
    /// the deadline passed first; a past deadline still takes a free lock.
    #[inline]
    pub(crate) fn acquire_deadline(&self, deadline: Option<Instant>) -> Option<Acquired> {
        self.acquire_with(deadline, Spin::Backoff)
    }

    /// [`acquire_deadline`](Self::acquire_deadline) after the caller's own
    /// [`try_acquire`](Self::try_acquire) failed: no second compare-and-swap
    /// on a line another process holds.
    pub(crate) fn acquire_contended(&self, deadline: Option<Instant>) -> Option<Acquired> {
        self.acquire_slow(deadline, Spin::Backoff)
    }

    /// [`acquire_deadline`](Self::acquire_deadline), waiting as `spin` says.
    #[inline]
    pub(crate) fn acquire_with(&self, deadline: Option<Instant>, spin: Spin) -> Option<Acquired> {
        if self.try_acquire() {
            return Some(Acquired::Clean);
        }
        self.acquire_slow(deadline, spin)
    }

    #[cold]
    fn acquire_slow(&self, deadline: Option<Instant>, spin: Spin) -> Option<Acquired> {
        let word = self.word();
        if expired(deadline) {
            // A try with a zero timeout: no spin.
            return None;
        }
        spin_on(spin, word);
        if self.try_acquire() {
            return Some(Acquired::Clean);
        }
        // SeqCst: one side of the handshake (see type doc).
        self.waiters().fetch_add(1, Ordering::SeqCst);
        let got = self.wait_for_release(deadline, spin, membarrier::global_expedited);
        self.waiters().fetch_sub(1, Ordering::Relaxed);
        got
    }

    /// The sleeping part of an acquire, counted in `waiters`; `fence` is the
    /// barrier of the handshake (false: refused).
    fn wait_for_release(
        &self,
        deadline: Option<Instant>,
        spin: Spin,
        fence: fn() -> bool,
    ) -> Option<Acquired> {
        let me = me();
        let word = self.word();
        let releases = self.releases();
        let mut vigil = Vigil::Unfenced;
        // When the holder is next looked up in /proc: after a whole slice
        // without a release.
        let mut check_at = Instant::now() + OWNER_CHECK_SLICE;
        let mut seen = releases.load(Ordering::SeqCst);
        // A word seen `Suspect` on the previous check (see type doc).
        let mut suspect: Option<u32> = None;
        // A wake reached us: leaving without the lock passes it on.
        let mut was_woken = false;
        // A fenced sleep just ran out its slice without a wake.
        let mut slept_out = false;
        loop {
            // The release count first, then the word: a release between the
            // two makes the sleep below on the count fail at once. SeqCst:
            // the other side of a fenced releaser's handshake.
            let count = releases.load(Ordering::SeqCst);
            let s = word.load(Ordering::SeqCst);
            if std::mem::take(&mut slept_out) && s == 0 {
                // Free after a whole slice: the release that freed it woke
                // nobody who took it (a woken waiter takes it within
                // microseconds), unless one died on its way.
                MISSED_WAKES.fetch_add(1, Ordering::Relaxed);
            }
            if s == 0 {
                if word
                    .compare_exchange(0, me.pid, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    self.took_after_waiting(me);
                    return Some(Acquired::Clean);
                }
                continue;
            }
            let now = Instant::now();
            if count != seen {
                // Released and taken again since: a new holder, a new slice.
                seen = count;
                check_at = now + OWNER_CHECK_SLICE;
            }
            if deadline.is_some_and(|d| now >= d) {
                if was_woken {
                    // The wake that reached us goes to the next sleeper; the
                    // flag it set is cleared first, or a release that comes
                    // before that sleeper runs would skip it.
                    self.woken().store(0, Ordering::SeqCst);
                    futex::wake(releases, 1);
                }
                return None;
            }
            if now >= check_at {
                let pid = s & PID_MASK;
                let verdict = match liveness(pid, self.holder().load(Ordering::Relaxed)) {
                    Liveness::Suspect if suspect == Some(s) => Liveness::Dead,
                    v => v,
                };
                suspect = (verdict == Liveness::Suspect).then_some(s);
                if verdict == Liveness::Dead
                    && word
                        .compare_exchange(s, me.pid, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                {
                    self.took_after_waiting(me);
                    self.recoveries_word().fetch_add(1, Ordering::Relaxed);
                    return Some(Acquired::OwnerDied { pid });
                }
                check_at = now + OWNER_CHECK_SLICE;
                continue;
            }
            if self.woken().load(Ordering::SeqCst) != 0 {
                // A wake was sent that this waiter did not get while asleep:
                // it woke it (and it did not get the lock), found nobody
                // asleep, or went to another waiter (which may have died
                // before it ran). Cleared, or every release would skip the
                // wake this sleep needs.
                self.woken().store(0, Ordering::SeqCst);
                vigil = vigil.rearmed();
            }
            let nap = match vigil {
                Vigil::Unfenced => Some(now + FIRST_SLEEP),
                Vigil::Polling => Some(now + UNFENCED_SLEEP),
                Vigil::Fenced => None,
            };
            let until = [Some(check_at), deadline, nap]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(check_at);
            if futex::wait(releases, count, Some(until)) {
                // Woken, or released since `count` was read (so a sleep
                // never begins after a release it would miss), or a signal.
                was_woken = true;
                if spin == Spin::Backoff {
                    // Look for the lock again before sleeping again, as std's
                    // mutex does: a holder that takes it straight back would
                    // otherwise bounce this waiter through a futex call at
                    // each of its releases.
                    spin_backoff(|| word.load(Ordering::Relaxed) != 0);
                }
            } else if vigil == Vigil::Fenced && until == check_at {
                slept_out = true;
            } else if vigil == Vigil::Unfenced && nap.is_some_and(|n| Instant::now() >= n) {
                // Still held after a short sleep: make the long one safe.
                vigil = if fence() {
                    Vigil::Fenced
                } else {
                    Vigil::Polling
                };
            }
        }
    }

    /// Records a waiter as the holder. The wake that brought it here (if one
    /// did) has arrived: `woken` is cleared, so that its release can wake the
    /// next waiter instead of taking that wake for still on its way.
    fn took_after_waiting(&self, me: Me) {
        self.record(me);
        if self.woken().load(Ordering::Relaxed) != 0 {
            self.woken().store(0, Ordering::Relaxed);
        }
    }

    /// Releases the lock, whoever holds it, and wakes one waiter if any.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when it is not locked.
    #[inline]
    pub(crate) fn release(&self) -> Result<()> {
        self.release_with(light_release())
    }

    /// [`release`](Self::release) with a plain store (`light`) or a swap.
    #[inline]
    fn release_with(&self, light: bool) -> Result<()> {
        let word = self.word();
        if light {
            if word.load(Ordering::Relaxed) == 0 {
                return Err(Error::value(RELEASED_TOO_MANY));
            }
            // Release: what the holder wrote is visible to the next acquirer.
            word.store(0, Ordering::Release);
        } else if word.swap(0, Ordering::SeqCst) == 0 {
            return Err(Error::value(RELEASED_TOO_MANY));
        }
        // No fence when light: a waiter's barrier stands in for it (see type
        // doc); the compiler must still keep the load after the store.
        compiler_fence(Ordering::SeqCst);
        if self.waiters().load(Ordering::SeqCst) != 0 {
            self.count_and_wake();
        }
        Ok(())
    }

    /// A release's part when waiters are counted: counts the release where
    /// they sleep, then wakes one. Only such releases need counting: a waiter
    /// is counted in `waiters` before it first reads `releases`. The releaser
    /// alone counts (a release racing with the holder's own is the documented
    /// race above).
    #[cold]
    fn count_and_wake(&self) {
        let releases = self.releases();
        releases.store(
            releases.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::SeqCst,
        );
        if self.woken().load(Ordering::SeqCst) == 0 {
            self.wake_one();
        }
    }

    /// Wakes one sleeping waiter, unless a wake is already on its way: a woken
    /// waiter takes microseconds to run, and every release meanwhile would
    /// make a futex call that finds nobody (a queue's producer, releasing its
    /// lock for every item, made one per item). One wake suffices: the other
    /// waiters stay counted in `waiters`, so the next release wakes the next.
    ///
    /// A wake that finds nobody asleep leaves `woken` set: the counted waiters
    /// are all awake, and each clears it before it sleeps. One that looked at
    /// `woken` before this release and sleeps after it sleeps on the release
    /// count it read before, which this release changed: its sleep fails at
    /// once and it looks again.
    #[inline]
    fn wake_one(&self) {
        if self.woken().swap(1, Ordering::SeqCst) == 0 {
            futex::wake(self.releases(), 1);
        }
    }
}

impl fmt::Debug for RawLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawLock")
            .field("owner", &self.owner_pid().map(Pid))
            .finish()
    }
}

/// Shows a pid as `pid 812` in `Debug` output.
#[derive(Clone, Copy)]
pub(crate) struct Pid(pub(crate) u32);

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {}", self.0)
    }
}

// ---------------------------------------------------------------------------
// RawCondvar

/// A notification counter (std's futex condvar): waiters read it while holding
/// some lock, release the lock, and sleep while it is unchanged. Spurious wakes
/// happen; callers re-check their state under the lock.
#[derive(Clone)]
pub(crate) struct RawCondvar {
    /// The region holding the counter.
    region: Arc<ShmRegion>,
    /// Where the counter is (4-aligned).
    offset: usize,
}

impl RawCondvar {
    /// A view of the counter at `offset` of `region` (zero is a valid start).
    pub(crate) fn attach(region: Arc<ShmRegion>, offset: usize) -> RawCondvar {
        RawCondvar { region, offset }
    }

    fn seq(&self) -> &AtomicU32 {
        self.region.atomic_u32(self.offset)
    }

    /// The counter; read it *before* releasing the lock that guards the state
    /// waited on. Relaxed: the lock orders it with the state (std's argument).
    pub(crate) fn prepare(&self) -> u32 {
        self.seq().load(Ordering::Relaxed)
    }

    /// Sleeps while the counter still equals `seen`, until `deadline`. False on
    /// timeout.
    pub(crate) fn wait(&self, seen: u32, deadline: Option<Instant>) -> bool {
        futex::wait(self.seq(), seen, deadline)
    }

    /// Bumps the counter and wakes every sleeper.
    pub(crate) fn notify_all(&self) {
        self.seq().fetch_add(1, Ordering::Relaxed);
        futex::wake_all(self.seq());
    }
}

impl fmt::Debug for RawCondvar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawCondvar").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_reads_our_own_start_time() {
        let s = proc_stat(std::process::id()).unwrap();
        assert!(matches!(s.state, 'R' | 'S'));
        assert!(s.start_time > 0);
        assert_eq!(liveness(my_pid(), me().stamp), Liveness::Alive);
    }

    #[test]
    fn a_stamp_with_another_start_time_is_suspect() {
        let pid = my_pid();
        assert_eq!(liveness(pid, stamp(pid, 1)), Liveness::Suspect);
        // A stamp of another pid (not yet written) says nothing.
        assert_eq!(liveness(pid, stamp(pid + 1, 1)), Liveness::Alive);
    }

    #[test]
    fn semaphore_counts_and_bounds() {
        let s = RawSemLock::new(1, Some(2)).unwrap();
        assert!(s.try_acquire());
        assert!(!s.try_acquire());
        s.release().unwrap();
        s.release().unwrap();
        assert!(matches!(s.release(), Err(Error::Value(_))));
        assert_eq!(s.get_value(), 2);
        assert!(RawSemLock::new(3, Some(2)).is_err());
    }

    #[test]
    fn semaphore_wakes_a_thread() {
        let s = RawSemLock::new(0, None).unwrap();
        let s2 = s.clone();
        let t = std::thread::spawn(move || {
            s2.acquire_deadline(deadline_after(Duration::from_secs(30)))
        });
        s.release().unwrap();
        assert!(t.join().unwrap());
    }

    #[test]
    fn lock_records_its_holder() {
        let region = Arc::new(ShmRegion::create(64).unwrap());
        let l = RawLock::init(region, 16);
        assert_eq!(l.owner_pid(), None);
        assert_eq!(l.acquire_deadline(None), Some(Acquired::Clean));
        assert_eq!(l.owner_pid(), Some(my_pid()));
        assert!(!l.try_acquire());
        let t0 = Instant::now();
        assert_eq!(
            l.acquire_deadline(Some(t0 + Duration::from_millis(20))),
            None
        );
        assert!(t0.elapsed() >= Duration::from_millis(20));
        l.release().unwrap();
        assert!(matches!(l.release(), Err(Error::Value(_))));
    }

    /// A lock held by a pid no process has (above any `pid_max` default).
    fn held_by_nobody() -> RawLock {
        let region = Arc::new(ShmRegion::create(64).unwrap());
        let l = RawLock::init(region, 8);
        l.word().store(PID_MASK - 1, Ordering::Relaxed);
        l
    }

    /// Starts a thread waiting as `acquire_slow` does, with `fence`, and
    /// returns once it is counted in `waiters`.
    fn start_waiter(l: &RawLock, fence: fn() -> bool) -> std::thread::JoinHandle<Option<Acquired>> {
        let l2 = l.clone();
        let t = std::thread::spawn(move || {
            l2.waiters().fetch_add(1, Ordering::SeqCst);
            let got = l2.wait_for_release(
                deadline_after(Duration::from_secs(60)),
                Spin::Backoff,
                fence,
            );
            l2.waiters().fetch_sub(1, Ordering::Relaxed);
            got
        });
        while l.waiters().load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        t
    }

    #[test]
    fn both_release_modes_refuse_a_release_too_many() {
        for light in [true, false] {
            let region = Arc::new(ShmRegion::create(64).unwrap());
            let l = RawLock::init(region, 0);
            assert!(l.try_acquire());
            l.release_with(light).unwrap();
            assert!(matches!(l.release_with(light), Err(Error::Value(_))));
            assert_eq!(l.owner_pid(), None);
        }
    }

    #[test]
    fn releases_are_counted_while_a_waiter_is() {
        for light in [true, false] {
            let region = Arc::new(ShmRegion::create(64).unwrap());
            let l = RawLock::init(region, 0);
            // Nobody waits: a release touches nothing but the word.
            assert!(l.try_acquire());
            l.release_with(light).unwrap();
            assert_eq!(l.releases().load(Ordering::Relaxed), 0);
            // A waiter is counted (awake, so the one wake finds nobody and
            // leaves `woken` set): every release is counted where it would
            // sleep, across the wrap, even when the same holder takes the
            // lock back in between.
            l.waiters().store(1, Ordering::SeqCst);
            l.releases().store(u32::MAX - 2, Ordering::Relaxed);
            for i in 1..=5u32 {
                assert!(l.try_acquire());
                l.release_with(light).unwrap();
                assert_eq!(
                    l.releases().load(Ordering::Relaxed),
                    (u32::MAX - 2).wrapping_add(i)
                );
                assert_eq!(l.word().load(Ordering::Relaxed), 0);
            }
            assert_eq!(l.woken().load(Ordering::Relaxed), 1);
            // A refused release counts nothing.
            assert!(matches!(l.release_with(light), Err(Error::Value(_))));
            assert_eq!(l.releases().load(Ordering::Relaxed), 2);
        }
    }

    #[test]
    fn both_release_modes_wake_a_sleeping_waiter() {
        for light in [true, false] {
            let l = held_by_nobody();
            let t = start_waiter(&l, membarrier::global_expedited);
            l.release_with(light).unwrap();
            assert_eq!(t.join().unwrap(), Some(Acquired::Clean));
            assert_eq!(l.owner_pid(), Some(my_pid()));
            assert_eq!(l.waiters().load(Ordering::Relaxed), 0);
            assert_eq!(l.recoveries(), 0);
        }
    }

    /// Set by [`fence_called`] and [`fence_refused`] once the waiter has
    /// slept its first nap and asked for the barrier.
    static FENCE_ASKED: [AtomicU8; 2] = [AtomicU8::new(0), AtomicU8::new(0)];

    fn fence_called() -> bool {
        FENCE_ASKED[0].store(1, Ordering::SeqCst);
        membarrier::global_expedited()
    }

    fn fence_refused() -> bool {
        FENCE_ASKED[1].store(1, Ordering::SeqCst);
        false
    }

    #[test]
    fn a_wake_that_never_comes_is_made_up_for() {
        // A release that stores 0 without waking, made once the waiter is
        // past its first nap: what a lost wake would leave. A fenced waiter
        // finds the lock free at its next slice, a waiter whose barrier was
        // refused at its next poll; neither hangs, and neither takes it as a
        // dead holder's.
        for (i, fence) in [fence_called as fn() -> bool, fence_refused]
            .into_iter()
            .enumerate()
        {
            let l = held_by_nobody();
            let t = start_waiter(&l, fence);
            while FENCE_ASKED[i].load(Ordering::SeqCst) == 0 {
                std::thread::yield_now();
            }
            l.word().store(0, Ordering::SeqCst);
            assert_eq!(t.join().unwrap(), Some(Acquired::Clean));
            assert_eq!(l.recoveries(), 0);
        }
    }

    #[test]
    fn a_dead_holder_is_taken_over() {
        let region = Arc::new(ShmRegion::create(64).unwrap());
        let l = RawLock::init(region, 0);
        // Pretend pid 4194303 (above any real pid_max default) holds it.
        l.word().store(PID_MASK, Ordering::Relaxed);
        let got = l.acquire_deadline(deadline_after(Duration::from_secs(30)));
        assert_eq!(got, Some(Acquired::OwnerDied { pid: PID_MASK }));
        assert_eq!(l.recoveries(), 1);
        l.release().unwrap();
    }
}
