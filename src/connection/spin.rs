//! Spinning before sleeping, for a [`Connection`](super::Connection) whose
//! peer is a process on this machine (a Unix socket).
//!
//! A message between two processes that both sleep in `recvmsg` costs a
//! cross-core wake-up per hop: on a virtual machine about 50 µs, most of a
//! ping-pong's round trip. So a receive that finds nothing first looks at the
//! socket for a short while (a zero-timeout `poll` in a loop) before it
//! sleeps. The look is `poll`, not a non-blocking `recvmsg`: a spinning
//! `recvmsg` takes the socket lock the sender needs (measured 3x slower in
//! the manager's channel, `managers/channel.rs`).
//!
//! Bounded and adaptive. A spin lasts at most [`SPIN_MAX`]. One that finds
//! nothing halves the next one's budget, down to none below [`SPIN_MIN`]
//! (so a peer that answers slowly, a worker computing for a second, costs a
//! handful of short spins and then none); one that finds a message restores
//! the full budget. A connection that has stopped spinning spins in full
//! again on every [`PROBE_EVERY`]th wait, to notice a peer turned quick.
//!
//! Contention stops it at once. A spinning thread looks busy to the
//! scheduler: when another task wants the CPU, the spinner (or its peer,
//! spinning in turn) is made to wait a whole time slice while its message
//! sits there, where a thread asleep in `recvmsg` would have been woken at
//! once; measured, the ping-pong got 2x slower than not spinning at all on a
//! machine with 1.5 of its 2 cores taken by others. So before a spin the
//! thread's count of involuntary context switches is read (one `getrusage`,
//! at most every 100 µs, made when the wait begins, while the peer is still
//! at work on its answer, so that it never delays handling the answer a
//! spin finds); if it rose since the last look, it rests. For the same
//! reason the spin never yields: `sched_yield` hands the CPU to a busy
//! process for its whole slice.
//!
//! Resting for contention, a connection probes: it spins in full on every
//! 32nd wait. A probe that finds its message restores the full budget (and
//! the interval of [`PROBE_EVERY`]), until the next look sees a new
//! preemption: under lasting contention with a quick peer, a probe every 16
//! to 32 waits. Each rest that follows one without a found message doubles
//! the interval, up to [`PROBE_MAX`] (a peer that is slow as well). A probe
//! starts the count afresh: preemptions while resting say nothing about
//! spinning, and on a virtual machine they come from resting itself (a
//! sleeper's idle virtual CPU looks busy to the guest's scheduler, which then
//! wakes the sleeper onto its peer's CPU, the peer's "preemption"); counting
//! them kept both sides of a ping-pong resting for good, 4-15 µs a round trip
//! where spinning takes 0.1-1 µs. The count is per thread: a probe on one
//! connection also clears a preemption another connection of the same thread
//! had yet to see, as the first look after a preemption always did.
//!
//! Never on a machine with one CPU to run on (`cpu_count() == 1`: one CPU,
//! an affinity mask of one, or a cgroup quota below two): there the peer
//! needs this very CPU to answer.

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::platform::fd;

/// The longest spin: well above a round trip when both sides are awake (a
/// few µs), and about one cross-core wake-up, so a spin that fails costs no
/// more than the sleep it tried to avoid. The queue and the manager spin as
/// long.
pub(crate) const SPIN_MAX: Duration = Duration::from_micros(50);

/// A budget below this is no spin at all (two or three looks).
pub(crate) const SPIN_MIN: Duration = Duration::from_micros(4);

/// A connection that stopped spinning spins in full on every this-many-th
/// wait (at most `SPIN_MAX / PROBE_EVERY`, about 3 µs, per wait on average).
pub(crate) const PROBE_EVERY: u32 = 16;

/// The rarest probing, under lasting contention: a machine that turns idle
/// again is noticed within this many waits. Low, because a probe that
/// happens to spin while the peer probes too is what brings two resting
/// sides back to spinning (measured with a busy loop on one core: as fast at
/// 64 as at 1,024; on a quiet machine, far fewer ping-pongs stuck resting).
pub(crate) const PROBE_MAX: u32 = 64;

/// Whether this process has more than one CPU to run on, asked once (std's
/// `available_parallelism`: the affinity mask, capped by a cgroup quota).
pub(crate) fn machine_may_spin() -> bool {
    static MAY: OnceLock<bool> = OnceLock::new();
    *MAY.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

/// How one spin went.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// The socket became readable.
    Found,
    /// The whole budget (this long) passed without a message.
    Missed(Duration),
    /// The caller's deadline came first.
    CutShort,
}

/// One connection's spin policy (see the module doc). Shared by the threads
/// receiving on the connection: the budget is only a hint, so relaxed
/// atomics do.
#[derive(Debug)]
pub(crate) struct Spin {
    /// Spinning is possible at all: a local peer, and more than one CPU.
    enabled: bool,
    /// The next spin's budget in nanoseconds; 0 when resting.
    budget_ns: AtomicU32,
    /// Waits since resting began (a probe spins when it reaches `interval`).
    rested: AtomicU32,
    /// While resting, spin on every this-many-th wait: [`PROBE_EVERY`],
    /// doubled by each rest for contention up to [`PROBE_MAX`], back to
    /// [`PROBE_EVERY`] when a spin finds its message.
    interval: AtomicU32,
}

impl Spin {
    /// The policy for a connection: spinning when `local` (a Unix socket)
    /// and the machine allows it, starting with the full budget.
    pub(crate) fn new(local: bool) -> Spin {
        Spin {
            enabled: local && machine_may_spin(),
            budget_ns: AtomicU32::new(nanos(SPIN_MAX)),
            rested: AtomicU32::new(0),
            interval: AtomicU32::new(PROBE_EVERY),
        }
    }

    /// Whether this connection spins at all.
    #[cfg(test)]
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// Looks at `fd` until it is readable (data, end of file or an error),
    /// the budget is spent, or `deadline` passes; true if it is readable.
    /// False at once when spinning is off or resting.
    ///
    /// # Errors
    ///
    /// `poll`'s error (a bad fd).
    pub(crate) fn until_readable(
        &self,
        fd: BorrowedFd<'_>,
        deadline: Option<Instant>,
    ) -> io::Result<bool> {
        self.until(deadline, || Ok(fd::poll_now(fd, fd::READABLE)? != 0))
    }

    /// Calls `look` until it returns true (what was waited for is there),
    /// the budget is spent, or `deadline` passes; true if `look` did. False
    /// at once, without a look, when spinning is off or resting. `look` is a
    /// system call (a `poll`, or a non-blocking read that takes what it
    /// finds), so the loop reads the clock and never yields.
    ///
    /// # Errors
    ///
    /// `look`'s error, as it returned it (the spin then teaches nothing).
    pub(crate) fn until<E>(
        &self,
        deadline: Option<Instant>,
        mut look: impl FnMut() -> std::result::Result<bool, E>,
    ) -> std::result::Result<bool, E> {
        let Some(budget) = self.start() else {
            return Ok(false);
        };
        let start = Instant::now();
        let full = start + budget;
        let until = deadline.map_or(full, |d| d.min(full));
        let ready = loop {
            if look()? {
                break true;
            }
            if Instant::now() >= until {
                break false;
            }
            std::hint::spin_loop();
        };
        let outcome = if ready {
            Outcome::Found
        } else if until == full {
            Outcome::Missed(budget)
        } else {
            Outcome::CutShort
        };
        self.learn(outcome);
        Ok(ready)
    }

    /// Sets the next budget from how a spin went.
    fn learn(&self, outcome: Outcome) {
        match outcome {
            Outcome::Found => self.found(),
            Outcome::Missed(spent) => self.missed(spent),
            // Cut short by the caller's deadline: says nothing of the peer.
            Outcome::CutShort => {}
        }
    }

    /// For a waiter that spins on something other than an fd (a queue's
    /// shared counter): this wait's budget, `None` for no spin. Each call
    /// counts as one wait; report how it went with [`end`](Spin::end).
    pub(crate) fn begin(&self) -> Option<Duration> {
        self.start()
    }

    /// Reports a spin begun with [`begin`](Spin::begin): whether it found
    /// what it waited for, the budget it had, and whether the caller's
    /// deadline cut it short.
    pub(crate) fn end(&self, found: bool, budget: Duration, cut_short: bool) {
        let outcome = match (found, cut_short) {
            (true, _) => Outcome::Found,
            (false, false) => Outcome::Missed(budget),
            (false, true) => Outcome::CutShort,
        };
        self.learn(outcome);
    }

    /// This wait's budget, or `None` for no spin: as [`budget`](Spin::budget)
    /// says, unless this thread was preempted since its last look, and then
    /// it rests instead (see [`rest`](Spin::rest)); a probe (a spin while
    /// resting) is not judged, it takes the count afresh. Asked here, when a
    /// wait begins, and not when a spin ends: a wait begins right after this
    /// thread's own message went out, so the system call (`getrusage`, about
    /// a microsecond on a virtual machine) overlaps the peer's work instead
    /// of delaying the handling of the answer a spin has just found.
    fn start(&self) -> Option<Duration> {
        let probe = self.resting();
        let budget = self.budget()?;
        if probe {
            // What happened while resting is not held against the probe.
            contention_count_afresh();
        } else if cpu_contended() {
            self.rest();
            return None;
        }
        Some(budget)
    }

    /// Whether this connection is resting (a wait spins only as a probe).
    fn resting(&self) -> bool {
        self.budget_ns.load(Ordering::Relaxed) == 0
    }

    /// This wait's budget by the rules alone, or `None` for no spin.
    fn budget(&self) -> Option<Duration> {
        if !self.enabled {
            return None;
        }
        let ns = self.budget_ns.load(Ordering::Relaxed);
        if ns != 0 {
            return Some(Duration::from_nanos(u64::from(ns)));
        }
        let rested = self.rested.fetch_add(1, Ordering::Relaxed) + 1;
        if rested < self.interval.load(Ordering::Relaxed) {
            return None;
        }
        self.rested.store(0, Ordering::Relaxed);
        Some(SPIN_MAX)
    }

    /// A spin found a message: the peer answers quickly; spin in full.
    fn found(&self) {
        self.budget_ns.store(nanos(SPIN_MAX), Ordering::Relaxed);
        self.rested.store(0, Ordering::Relaxed);
        self.interval.store(PROBE_EVERY, Ordering::Relaxed);
    }

    /// Another task wanted this CPU: spinning makes this thread look busy to
    /// the scheduler, which then lets the other run for a whole time slice
    /// while a message waits (a sleeper would be woken at once). Rest.
    /// The longer the contention lasts, the rarer the probes.
    fn rest(&self) {
        self.budget_ns.store(0, Ordering::Relaxed);
        self.rested.store(0, Ordering::Relaxed);
        let longer = self
            .interval
            .load(Ordering::Relaxed)
            .saturating_mul(2)
            .min(PROBE_MAX);
        self.interval.store(longer, Ordering::Relaxed);
    }

    /// A spin of `spent` found nothing: halve the budget, or rest.
    fn missed(&self, spent: Duration) {
        let half = spent / 2;
        let next = if half < SPIN_MIN { 0 } else { nanos(half) };
        self.budget_ns.store(next, Ordering::Relaxed);
    }

    /// The budget in nanoseconds, for tests.
    #[cfg(test)]
    fn budget_now(&self) -> u32 {
        self.budget_ns.load(Ordering::Relaxed)
    }
}

thread_local! {
    /// When this thread last asked whether it was preempted, and the count
    /// of involuntary context switches it then had.
    static SEEN: std::cell::Cell<Option<(Instant, u64)>> =
        const { std::cell::Cell::new(None) };
}

/// How often a thread asks the kernel whether it was preempted: a
/// `getrusage` costs about a microsecond on a virtual machine, more than a
/// whole round trip through shared memory (an `Event` or a queue
/// ping-pong), while preemption comes in time slices of milliseconds. A
/// preemption between two asks is still seen, by the next one.
const CONTENTION_CHECK_EVERY: Duration = Duration::from_micros(100);

/// Whether this thread was preempted since it last asked (the kernel's
/// count of involuntary context switches rose): the CPUs are contended, and
/// spinning would hurt (see [`Spin::rest`]). Asks the kernel at most once
/// per [`CONTENTION_CHECK_EVERY`] (false in between). The first call on a
/// thread only takes the count.
fn cpu_contended() -> bool {
    let now = Instant::now();
    SEEN.with(|seen| match seen.get() {
        Some((at, _)) if now.duration_since(at) < CONTENTION_CHECK_EVERY => false,
        before => {
            let count = fd::involuntary_switches();
            seen.set(Some((now, count)));
            before.is_some_and(|(_, b)| b != count)
        }
    })
}

/// Takes this thread's count of involuntary context switches now, so that
/// the next [`cpu_contended`] judges only what comes after.
fn contention_count_afresh() {
    SEEN.with(|seen| seen.set(Some((Instant::now(), fd::involuntary_switches()))));
}

/// `d` in nanoseconds (the budgets are far below 4 s).
fn nanos(d: Duration) -> u32 {
    u32::try_from(d.as_nanos()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// A spin policy that is on whatever the machine (the rules, not the
    /// machine, are under test here).
    fn on() -> Spin {
        Spin {
            enabled: true,
            ..Spin::new(true)
        }
    }

    /// How many of the next `waits` waits would spin.
    fn spins_in(s: &Spin, waits: u32) -> u32 {
        (0..waits).filter(|_| s.budget().is_some()).count() as u32
    }

    #[test]
    fn a_waiting_message_or_end_of_file_is_seen_at_once() {
        let (a, b) = fd::socketpair_stream().unwrap();
        fd::write(b.as_fd(), b"x").unwrap();
        assert!(on().until_readable(a.as_fd(), None).unwrap());
        let (a, b) = fd::socketpair_stream().unwrap();
        drop(b);
        assert!(on().until_readable(a.as_fd(), None).unwrap());
    }

    #[test]
    fn a_spin_that_finds_nothing_lasts_its_budget_and_no_more_than_the_deadline() {
        let (a, _b) = fd::socketpair_stream().unwrap();
        let s = on();
        let t0 = Instant::now();
        assert!(!s.until_readable(a.as_fd(), None).unwrap());
        assert!(t0.elapsed() >= SPIN_MAX);
        let s = on();
        let t0 = Instant::now();
        assert!(!s.until_readable(a.as_fd(), Some(t0)).unwrap());
        assert!(!s.until_readable(a.as_fd(), Some(t0 - SPIN_MAX)).unwrap());
    }

    // Each `until` below is the first spin of its test's thread, so the
    // contention check (which only takes the count on a thread's first
    // call) cannot make it rest.

    #[test]
    fn a_look_that_finds_ends_the_spin_at_once() {
        let s = on();
        let mut looks = 0;
        let found = s.until(None, || {
            looks += 1;
            Ok::<_, ()>(looks == 3)
        });
        assert_eq!((found, looks), (Ok(true), 3));
        assert_eq!(s.budget_now(), nanos(SPIN_MAX));
        // Resting: no look at all.
        s.rest();
        let mut looks = 0;
        let none = s.until(None, || {
            looks += 1;
            Ok::<_, ()>(true)
        });
        assert_eq!((none, looks), (Ok(false), 0));
    }

    #[test]
    fn a_look_that_fails_ends_the_spin_with_its_error() {
        let s = on();
        let mut looks = 0;
        let failed = s.until(None, || {
            looks += 1;
            Err::<bool, _>("look failed")
        });
        assert_eq!((failed, looks), (Err("look failed"), 1));
    }

    #[test]
    fn misses_halve_the_budget_then_rest_then_probe() {
        let s = on();
        let full = nanos(SPIN_MAX);
        let mut budgets = vec![s.budget_now()];
        while let Some(b) = s.budget().filter(|_| budgets.len() < 10) {
            s.learn(Outcome::Missed(b));
            budgets.push(s.budget_now());
        }
        assert_eq!(budgets, [full, full / 2, full / 4, full / 8, 0]);
        // Resting: a full spin every PROBE_EVERY-th wait only.
        assert_eq!(spins_in(&s, PROBE_EVERY * 3), 3);
        // A message found restores the full budget.
        s.learn(Outcome::Found);
        assert_eq!(s.budget_now(), full);
        assert_eq!(spins_in(&s, 4), 4);
    }

    #[test]
    fn contention_rests_at_once_and_probes_ever_more_rarely() {
        let s = on();
        s.rest();
        assert_eq!(s.budget_now(), 0);
        assert_eq!(spins_in(&s, PROBE_EVERY * 2), 1);
        s.rest();
        assert_eq!(spins_in(&s, PROBE_EVERY * 4), 1);
        for _ in 0..20 {
            s.rest();
        }
        assert_eq!(spins_in(&s, PROBE_MAX), 1);
        // A quiet spin that finds its message ends the rest.
        s.learn(Outcome::Found);
        assert_eq!(spins_in(&s, 4), 4);
    }

    /// Makes this thread's last contention look say one preemption fewer
    /// than now, long enough ago to be asked again: as if it was just
    /// preempted.
    fn as_if_just_preempted() {
        let count = fd::involuntary_switches();
        let long_ago = Instant::now() - CONTENTION_CHECK_EVERY * 2;
        SEEN.with(|seen| seen.set(Some((long_ago, count.wrapping_sub(1)))));
    }

    #[test]
    fn a_preemption_rests_a_spinning_connection_but_not_a_probe() {
        let s = on();
        as_if_just_preempted();
        assert_eq!(s.start(), None, "spinning, a preemption means rest");
        let interval = s.interval.load(Ordering::Relaxed);
        assert_eq!(interval, PROBE_EVERY * 2);
        for _ in 1..interval {
            assert_eq!(s.start(), None);
        }
        // The probe's turn: preempted while resting, it probes all the same,
        // and takes the count afresh for the looks that follow.
        as_if_just_preempted();
        let before = Instant::now();
        assert_eq!(s.start(), Some(SPIN_MAX));
        let taken = SEEN.with(|seen| seen.get()).map(|(at, _)| at);
        assert!(taken.is_some_and(|at| at >= before), "{taken:?}");
    }

    #[test]
    fn a_spin_cut_short_by_a_deadline_teaches_nothing() {
        let s = on();
        s.learn(Outcome::CutShort);
        assert_eq!(s.budget_now(), nanos(SPIN_MAX));
    }

    /// The child half of `one_cpu_means_no_spin`.
    const ONE_CPU_CHILD: &str = "MP_TEST_SPIN_ONE_CPU_CHILD";

    #[test]
    fn one_cpu_means_no_spin() {
        if std::env::var_os(ONE_CPU_CHILD).is_some() {
            assert!(!machine_may_spin());
            assert!(!Spin::new(true).enabled());
            return;
        }
        // This test binary again, confined to one CPU by its affinity mask.
        let out = std::process::Command::new("taskset")
            .args(["-c", "0"])
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", "connection::spin::tests::one_cpu_means_no_spin"])
            .env(ONE_CPU_CHILD, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "{text}");
    }

    #[test]
    fn off_means_no_look_at_all() {
        let (a, b) = fd::socketpair_stream().unwrap();
        fd::write(b.as_fd(), b"x").unwrap();
        let s = Spin::new(false);
        assert!(!s.enabled());
        assert!(!s.until_readable(a.as_fd(), None).unwrap());
    }
}
