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
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::platform::futex;
use crate::platform::process::{exists, gettid};
use crate::platform::shm::ShmRegion;

/// How many times a contended acquire re-reads the word before it sleeps in the
/// kernel (std's futex mutex spins 100 times too). Each round is one relaxed load
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

pub(crate) use crate::util::deadline_after;

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
/// Set in the lock word when a waiter may be asleep on it.
const CONTENDED: u32 = 1 << 31;

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
/// | 0 | `word: u32` | 0 = unlocked; else the holder's pid, plus `CONTENDED` (bit 31) when a waiter may sleep |
/// | 4 | `recoveries: u32` | how many times a waiter took the lock over from a dead holder |
/// | 8 | `holder: u64` | the holder's stamp: `start_time << 22 \| pid`, written just after the CAS |
///
/// States of `word` (std's futex mutex, with the pid in place of `LOCKED`):
///
/// | word | meaning |
/// |---|---|
/// | `0` | unlocked |
/// | `pid` | locked by `pid`, nobody asleep |
/// | `pid \| CONTENDED` | locked by `pid`, waiters may be asleep: release wakes one |
///
/// Acquire is one CAS `0 -> pid` plus a relaxed store of the stamp; release is
/// one swap to 0 (any process may release, as Python allows), and a wake only
/// if `CONTENDED` was set. Waiters sleep in slices of [`OWNER_CHECK_SLICE`];
/// after each one they look the holder up in `/proc`: gone or a zombie means
/// dead; alive with another start time than the stamp means the pid was reused
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

impl RawLock {
    /// Bytes taken in the region.
    pub(crate) const SIZE: usize = 16;

    /// Writes an unlocked lock at `offset` (8-aligned) of `region`.
    pub(crate) fn init(region: Arc<ShmRegion>, offset: usize) -> RawLock {
        let l = RawLock { region, offset };
        l.word().store(0, Ordering::Relaxed);
        l.recoveries_word().store(0, Ordering::Relaxed);
        l.holder().store(0, Ordering::Relaxed);
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

    fn recoveries_word(&self) -> &AtomicU32 {
        self.region.atomic_u32(self.offset + 4)
    }

    #[inline]
    fn holder(&self) -> &AtomicU64 {
        self.region.atomic_u64(self.offset + 8)
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
        if self.try_acquire() {
            return Some(Acquired::Clean);
        }
        self.acquire_slow(deadline)
    }

    #[cold]
    fn acquire_slow(&self, deadline: Option<Instant>) -> Option<Acquired> {
        let me = me();
        let word = self.word();
        spin_while(|| word.load(Ordering::Relaxed) != 0);
        if self.try_acquire() {
            return Some(Acquired::Clean);
        }
        // A word seen `Suspect` on the previous slice (see type doc).
        let mut suspect: Option<u32> = None;
        loop {
            let s = word.load(Ordering::Relaxed);
            if s & PID_MASK == 0 {
                // Free. Take it as CONTENDED: others may still sleep (std does
                // the same; at worst one needless wake).
                if word
                    .compare_exchange(s, me.pid | CONTENDED, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    self.record(me);
                    return Some(Acquired::Clean);
                }
                continue;
            }
            if s & CONTENDED == 0
                && word
                    .compare_exchange(s, s | CONTENDED, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            let s = s | CONTENDED;
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return None;
            }
            let slice_end = now + OWNER_CHECK_SLICE;
            let until = match deadline {
                Some(d) if d < slice_end => d,
                _ => slice_end,
            };
            if futex::wait(word, s, Some(until)) || Instant::now() < slice_end {
                // Woken (or the user's deadline, checked at the loop's top).
                continue;
            }
            // A whole slice without a release: is the holder still there?
            let pid = s & PID_MASK;
            let verdict = match liveness(pid, self.holder().load(Ordering::Relaxed)) {
                Liveness::Suspect if suspect == Some(s) => Liveness::Dead,
                v => v,
            };
            suspect = (verdict == Liveness::Suspect).then_some(s);
            if verdict == Liveness::Dead
                && word
                    .compare_exchange(s, me.pid | CONTENDED, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                self.record(me);
                self.recoveries_word().fetch_add(1, Ordering::Relaxed);
                return Some(Acquired::OwnerDied { pid });
            }
        }
    }

    /// Releases the lock, whoever holds it, and wakes one waiter if any.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when it is not locked.
    #[inline]
    pub(crate) fn release(&self) -> Result<()> {
        // Release: what the holder wrote is visible to the next acquirer.
        let old = self.word().swap(0, Ordering::Release);
        if old & CONTENDED != 0 || old == 0 {
            return self.release_slow(old);
        }
        Ok(())
    }

    #[cold]
    fn release_slow(&self, old: u32) -> Result<()> {
        if old == 0 {
            return Err(Error::value(RELEASED_TOO_MANY));
        }
        // One wake suffices: the woken waiter takes the lock as CONTENDED, so
        // its own release wakes the next.
        futex::wake(self.word(), 1);
        Ok(())
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
