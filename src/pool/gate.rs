//! The start gate: a few bytes of shared memory per worker that settle, with
//! one compare-and-swap and no message, whether a task sent ahead to a worker
//! has started or was taken back by the parent.
//!
//! The parent numbers the tasks it sends to one worker 1, 2, 3, ... (the
//! *seq*, wrapping). The gate word holds two of them:
//!
//! - low half, written by the worker: the last seq it started;
//! - high half, written by the parent: the last seq it revoked.
//!
//! Before running a task the worker claims it: a CAS that sets *started* to its
//! seq, unless the seq lies in `(started, revoked]`, in which case the worker
//! drops the task unrun. The parent revokes every task sent after the started
//! one by a CAS that sets *revoked*; whichever CAS lands first wins, so a task
//! runs on exactly one worker. Since tasks are claimed in the order they are
//! sent, *started* alone tells the parent, even after the worker died, which
//! task was running (its caller gets `WorkerLost`) and which were only sent
//! (they go to another worker). The worker also stores when it started the
//! task, for timeouts.
//!
//! This is what lets the parent send tasks ahead (hiding the round trip for
//! short tasks) and still give a task to an idle worker when the one it was
//! sent to is stuck in a long task: CPython's workers pull from one shared
//! queue, so a task there never waits behind another while a worker is idle,
//! and ported code (tasks that meet at a barrier) relies on that.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::platform::fd::monotonic_ns;
use crate::platform::shm::ShmRegion;

/// Offset of the gate word.
const WORD: usize = 0;
/// Offset of the start time (CLOCK_MONOTONIC nanoseconds) of the last claim.
const START_NS: usize = 8;
/// Size of the region.
const LEN: usize = 16;

/// True if seq `a` comes after seq `b` (serial-number order: seqs wrap, and
/// the ones compared are never 2^31 apart).
pub(crate) fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

fn pack(started: u32, revoked: u32) -> u64 {
    u64::from(revoked) << 32 | u64::from(started)
}

fn unpack(word: u64) -> (u32, u32) {
    (word as u32, (word >> 32) as u32)
}

/// One worker's gate, mapped in the parent and in the worker.
pub(crate) struct Gate {
    region: ShmRegion,
}

impl Gate {
    /// A new gate: nothing started, nothing revoked.
    ///
    /// # Errors
    ///
    /// The errors of creating shared memory (`ENOMEM`, `EMFILE`).
    pub(crate) fn create() -> io::Result<Gate> {
        Ok(Gate {
            region: ShmRegion::create(LEN)?,
        })
    }

    /// The gate whose memfd the parent sent.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `fd` is not a sealed region of the gate's size.
    pub(crate) fn from_fd(fd: OwnedFd) -> io::Result<Gate> {
        let region = ShmRegion::from_fd(fd)?;
        if region.len() < LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the pool's start gate is too small",
            ));
        }
        Ok(Gate { region })
    }

    /// The memfd, for the worker's bootstrap payload.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.region.fd()
    }

    /// Worker: claims task `seq` before running it. False if the parent took
    /// it back (the worker then drops it unrun).
    pub(crate) fn claim(&self, seq: u32) -> bool {
        let word = self.region.atomic_u64(WORD);
        // Stored before the claim that publishes it (Release below). A failed
        // claim leaves a newer time behind, which only ever makes the parent's
        // view of a start later, never earlier.
        self.region
            .atomic_u64(START_NS)
            .store(monotonic_ns(), Ordering::Relaxed);
        let mut cur = word.load(Ordering::Acquire);
        loop {
            let (started, revoked) = unpack(cur);
            if after(seq, started) && !after(seq, revoked) {
                return false;
            }
            // The revoked range is emptied with the claim (revoked = started),
            // so it never falls 2^31 behind the seqs and wraps into the
            // future: everything up to `seq` is settled now.
            match word.compare_exchange_weak(
                cur,
                pack(seq, seq),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// Parent: the seq of the last task the worker started (0: none yet).
    pub(crate) fn started(&self) -> u32 {
        unpack(self.region.atomic_u64(WORD).load(Ordering::Acquire)).0
    }

    /// Parent: when the worker started its last task, for a worker whose
    /// `started()` was just seen.
    pub(crate) fn started_at(&self) -> Instant {
        let then = self.region.atomic_u64(START_NS).load(Ordering::Relaxed);
        let now_ns = monotonic_ns();
        let now = Instant::now();
        now.checked_sub(Duration::from_nanos(now_ns.saturating_sub(then)))
            .unwrap_or(now)
    }

    /// Parent: takes back every task sent after the started one, up to seq
    /// `upto`. Returns the started seq at that moment: the tasks after it (up
    /// to `upto`) will never run on this worker.
    pub(crate) fn revoke(&self, upto: u32) -> u32 {
        let word = self.region.atomic_u64(WORD);
        let mut cur = word.load(Ordering::Acquire);
        loop {
            let (started, _) = unpack(cur);
            if !after(upto, started) {
                return started;
            }
            match word.compare_exchange_weak(
                cur,
                pack(started, upto),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return started,
                Err(now) => cur = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Gate, Gate) {
        let parent = Gate::create().unwrap();
        let fd = parent.fd().try_clone_to_owned().unwrap();
        (parent, Gate::from_fd(fd).unwrap())
    }

    #[test]
    fn claims_in_order_are_seen_by_the_parent() {
        let (parent, worker) = pair();
        assert_eq!(parent.started(), 0);
        assert!(worker.claim(1));
        assert!(worker.claim(2));
        assert_eq!(parent.started(), 2);
        assert!(parent.started_at() <= Instant::now());
    }

    #[test]
    fn a_revoked_task_is_not_claimed_and_later_ones_are() {
        let (parent, worker) = pair();
        assert!(worker.claim(1));
        // Tasks 2 and 3 were sent ahead; the parent takes them back.
        assert_eq!(parent.revoke(3), 1);
        assert!(!worker.claim(2));
        assert!(!worker.claim(3));
        assert!(worker.claim(4));
        assert_eq!(parent.started(), 4);
    }

    #[test]
    fn a_revoke_after_the_claim_takes_nothing_back() {
        let (parent, worker) = pair();
        assert!(worker.claim(1));
        assert!(worker.claim(2));
        assert_eq!(parent.revoke(2), 2);
        assert!(worker.claim(3));
    }

    #[test]
    fn seqs_wrap() {
        let (parent, worker) = pair();
        assert!(after(1, u32::MAX));
        assert!(!after(u32::MAX, 1));
        assert!(worker.claim(u32::MAX));
        assert_eq!(parent.revoke(1), u32::MAX);
        assert!(!worker.claim(0));
        assert!(!worker.claim(1));
        assert!(worker.claim(2));
    }

    #[test]
    fn a_long_life_without_revokes_goes_past_half_the_seq_space() {
        let (parent, worker) = pair();
        assert!(worker.claim(0x7fff_ffff));
        assert!(worker.claim(0x8000_0000));
        assert!(worker.claim(0xffff_ffff));
        assert!(worker.claim(0));
        assert_eq!(parent.revoke(2), 0);
        assert!(!worker.claim(1));
        assert!(!worker.claim(2));
        assert!(worker.claim(3));
        assert!(worker.claim(0x8000_0004));
    }

    #[test]
    fn a_region_of_the_wrong_size_is_refused() {
        let small = ShmRegion::create(8).unwrap();
        let fd = small.fd().try_clone_to_owned().unwrap();
        assert!(Gate::from_fd(fd).is_err());
    }

    #[test]
    fn claim_and_revoke_race_has_one_winner() {
        for _ in 0..200 {
            let (parent, worker) = pair();
            assert!(worker.claim(1));
            let t = std::thread::spawn(move || worker.claim(2));
            let started = parent.revoke(2);
            let claimed = t.join().unwrap();
            // Either the worker started 2 (and the revoke took nothing) or the
            // revoke took 2 (and the worker refused it).
            assert_eq!(
                claimed,
                started == 2,
                "started {started}, claimed {claimed}"
            );
        }
    }
}
