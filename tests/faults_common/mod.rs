//! Shared machinery of the fault-injection tests (tests/faults*.rs): a seeded
//! schedule, the four fault kinds and how to inject them, a per-round guard
//! that prints the seed when a round fails, and the per-class tally.
//!
//! Every fault test runs rounds driven by [`Rng`], seeded from
//! `MP_FAULT_SEED` (decimal or `0x` hex; default [`DEFAULT_SEED`]). The number
//! of rounds is the test's default, times 10 with the `slow-tests` feature, or
//! `MP_FAULT_ROUNDS` when set.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use multiprocess as mp;
use nix::sys::signal::{Signal, kill, raise};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// The seed used when `MP_FAULT_SEED` is not set.
pub const DEFAULT_SEED: u64 = 0x6d70_6661_756c_7473;

/// The exit code of the `Exit` fault (`std::process::exit(EXIT_CODE)`).
pub const EXIT_CODE: i32 = 77;

/// The seed of this run.
pub fn seed() -> u64 {
    match std::env::var("MP_FAULT_SEED") {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("MP_FAULT_SEED={s:?} is not a u64"))
        }
        Err(_) => DEFAULT_SEED,
    }
}

/// Rounds to run: `default`, times 10 under `slow-tests`, or `MP_FAULT_ROUNDS`.
pub fn rounds(default: usize) -> usize {
    if let Ok(s) = std::env::var("MP_FAULT_ROUNDS") {
        return s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("MP_FAULT_ROUNDS={s:?} is not a count"));
    }
    if cfg!(feature = "slow-tests") {
        default * 10
    } else {
        default
    }
}

/// splitmix64: small, seedable, good enough to pick fault points.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// The schedule of one test: the run's seed mixed with the test's name, so
    /// tests do not share a schedule.
    pub fn for_test(name: &str) -> Rng {
        let mut h = seed();
        for b in name.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        Rng(h)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo)
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// How a victim dies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// SIGKILL (from the parent, or the victim sends it to itself).
    Kill,
    /// SIGSEGV (from the parent, or raised in the victim).
    Segv,
    /// `std::process::abort()` in the victim (SIGABRT).
    Abort,
    /// `std::process::exit(EXIT_CODE)` in the victim, from another thread, in
    /// the middle of whatever the victim's main thread is doing.
    Exit,
}

impl Fault {
    pub const ALL: [Fault; 4] = [Fault::Kill, Fault::Segv, Fault::Abort, Fault::Exit];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "sigkill",
            Fault::Segv => "sigsegv",
            Fault::Abort => "abort",
            Fault::Exit => "exit",
        }
    }

    /// The victim's `exitcode()` after this fault.
    pub fn exitcode(self) -> i32 {
        match self {
            Fault::Kill => -libc::SIGKILL,
            Fault::Segv => -libc::SIGSEGV,
            Fault::Abort => -libc::SIGABRT,
            Fault::Exit => EXIT_CODE,
        }
    }
}

/// When and how one victim dies: the fault, a delay, and whether the victim
/// does it to itself (a timer thread inside it) or the parent does it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug)]
pub struct Plan {
    pub fault: Fault,
    /// Delay from the victim's start (inside) or from the parent's go (outside).
    pub delay_us: u64,
    /// The victim kills itself from a timer thread.
    pub inside: bool,
}

impl Plan {
    /// A plan for `fault` with a delay below `max_delay_us`. Abort and exit can
    /// only happen inside; SIGKILL and SIGSEGV come from either side.
    pub fn new(rng: &mut Rng, fault: Fault, max_delay_us: u64) -> Plan {
        let inside = match fault {
            Fault::Abort | Fault::Exit => true,
            Fault::Kill | Fault::Segv => rng.chance(1, 2),
        };
        Plan {
            fault,
            delay_us: rng.below(max_delay_us.max(1)),
            inside,
        }
    }

    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us)
    }

    /// In the victim, first thing: arms the timer thread of an inside plan.
    pub fn arm(self) {
        if !self.inside {
            return;
        }
        std::thread::spawn(move || {
            // Fault timing, not synchronisation: the point is to land anywhere.
            std::thread::sleep(self.delay());
            die_now(self.fault);
        });
    }

    /// In the parent, for an outside plan: waits the delay, then delivers the
    /// signal; for an inside plan: nothing (the victim does it). Either way,
    /// then waits (with a hang guard) for the victim to die, and checks that it
    /// died of this fault.
    pub fn strike(self, p: &mut mp::Process) {
        if !self.inside {
            // Fault timing, not synchronisation.
            std::thread::sleep(self.delay());
        }
        self.strike_now(p);
    }

    /// As [`strike`](Plan::strike) without the delay (the caller already chose
    /// the moment, e.g. once the victim is known to be blocked).
    pub fn strike_now(self, p: &mut mp::Process) {
        let pid = p.pid().expect("started");
        let guard = crate::common::LONG;
        let start = Instant::now();
        // A victim killed from outside before it answered the start-up
        // handshake is reported by `join` as a start-up failure.
        let inside = self.inside;
        let joined = move |p: &mut mp::Process, d: Duration| match p.join_timeout(d) {
            Ok(done) => done,
            Err(mp::Error::Spawn(_)) if !inside => true,
            Err(e) => panic!("join of victim {pid}: {e}"),
        };
        if !self.inside {
            signal_until_dead(pid, self.fault, || joined(p, Duration::from_millis(100)));
        }
        while !joined(p, Duration::from_millis(200)) {
            assert!(
                start.elapsed() < guard,
                "hang: victim {pid} did not die of {:?} within {guard:?}",
                self
            );
        }
        assert_eq!(
            p.exitcode(),
            Some(self.fault.exitcode()),
            "victim {pid} should have died of {self:?}"
        );
    }
}

/// Sends `fault`'s signal to `pid` until `dead()` says it died (a SIGSEGV sent
/// from outside is first taken by std's stack-overflow handler, which resets
/// it to the default action and returns; the next one kills).
pub fn signal_until_dead(pid: u32, fault: Fault, mut dead: impl FnMut() -> bool) {
    let sig = match fault {
        Fault::Kill => Signal::SIGKILL,
        Fault::Segv => Signal::SIGSEGV,
        Fault::Abort => Signal::SIGABRT,
        Fault::Exit => panic!("exit cannot be sent from outside"),
    };
    let start = Instant::now();
    loop {
        let _ = kill(Pid::from_raw(pid as i32), sig);
        if dead() {
            return;
        }
        assert!(
            start.elapsed() < crate::common::LONG,
            "hang: {pid} survived {sig:?} for {:?}",
            crate::common::LONG
        );
    }
}

/// Dies of `fault` at once (in the victim).
pub fn die_now(fault: Fault) -> ! {
    match fault {
        Fault::Kill => {
            let _ = kill(Pid::this(), Signal::SIGKILL);
        }
        Fault::Segv => {
            // The first SIGSEGV may be taken by std's handler, which restores
            // the default action and returns; the next one kills.
            for _ in 0..3 {
                let _ = raise(Signal::SIGSEGV);
            }
        }
        Fault::Abort => std::process::abort(),
        Fault::Exit => std::process::exit(EXIT_CODE),
    }
    // Only reached if the signal did not kill us: make it loud.
    std::process::abort()
}

/// Blocks the calling thread forever (a victim whose work is done waits here
/// for its fault).
pub fn park_forever() -> ! {
    loop {
        std::thread::park();
    }
}

/// Polls `cond` until it holds, failing the test after `guard` (polling shared
/// memory or /proc: a hang guard loop, not synchronisation).
pub fn wait_until(guard: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < guard, "hang: {what} not within {guard:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Prints the seed and round when the round it guards panics.
pub struct RoundGuard {
    pub class: String,
    pub round: usize,
}

impl RoundGuard {
    pub fn new(class: &str, round: usize) -> RoundGuard {
        RoundGuard {
            class: class.to_string(),
            round,
        }
    }
}

impl Drop for RoundGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "FAILED: fault round {} of `{}` (seed {:#x}; rerun with MP_FAULT_SEED={:#x})",
                self.round,
                self.class,
                seed(),
                seed()
            );
        }
    }
}

/// Injected faults and passed rounds per (fault, class); prints one summary
/// line per entry when dropped (run with `--nocapture` to see them).
#[derive(Default)]
pub struct Tally {
    class: String,
    counts: BTreeMap<String, (u64, u64)>,
}

impl Tally {
    pub fn new(class: &str) -> Tally {
        Tally {
            class: class.to_string(),
            counts: BTreeMap::new(),
        }
    }

    /// One fault injected (and survived by the test) in a round that passed.
    pub fn passed(&mut self, fault: Fault, detail: &str) {
        self.passed_n(fault.name(), detail, 1);
    }

    /// `injected` faults of kind `kind` in one passed round.
    pub fn passed_n(&mut self, kind: &str, detail: &str, injected: u64) {
        let key = if detail.is_empty() {
            format!("{kind} {}", self.class)
        } else {
            format!("{kind} {} ({detail})", self.class)
        };
        let e = self.counts.entry(key).or_default();
        e.0 += injected;
        e.1 += 1;
        if !detail.is_empty() {
            let e = self
                .counts
                .entry(format!("{kind} {} (all)", self.class))
                .or_default();
            e.0 += injected;
            e.1 += 1;
        }
    }

    /// An event worth reporting that is not a fault (e.g. "item lost to the
    /// victim"): counted, printed with the summary.
    pub fn note(&mut self, what: &str) {
        let e = self
            .counts
            .entry(format!("note {}: {what}", self.class))
            .or_default();
        e.0 += 1;
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        for (k, (inj, rounds)) in &self.counts {
            if let Some(note) = k.strip_prefix("note ") {
                println!("faults: {note} x{inj} (seed {:#x})", seed());
            } else {
                println!(
                    "faults: {k} {inj} injected, {rounds} rounds passed (seed {:#x})",
                    seed()
                );
            }
        }
    }
}

/// The payload of item `id` of `len` bytes: a pattern a receiver can verify.
pub fn payload(id: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (id as usize).wrapping_mul(31).wrapping_add(i) as u8)
        .collect()
}

/// True if `bytes` is the payload of item `id`.
pub fn payload_ok(id: u32, bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .all(|(i, &b)| b == (id as usize).wrapping_mul(31).wrapping_add(i) as u8)
}

/// True if `pid` has exited (gone from /proc, or a zombie).
pub fn pid_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z')),
    }
}

/// Polls `cond` for at most `limit`; returns whether it came to hold.
pub fn wait_until_or(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
