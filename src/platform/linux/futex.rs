//! The futex: the one kernel call behind every blocking primitive in shared
//! memory.
//!
//! Modelled on std's `sys/sync/futex/unix.rs`, with one deliberate difference:
//! we never pass `FUTEX_PRIVATE_FLAG`. A private futex is keyed by the address
//! space, so a waiter in another process would never be woken.

use std::sync::atomic::AtomicU32;
use std::time::Instant;

/// Blocks while `*word == expected`, until woken or `deadline` passes
/// (`None`: no deadline). Returns false only on timeout; a true return may be
/// spurious (a wake, a signal, or the value already differed), so callers
/// re-check their condition in a loop.
///
/// The deadline is absolute (`FUTEX_WAIT_BITSET` on `CLOCK_MONOTONIC`, the
/// clock of `Instant`), so retrying after `EINTR` does not stretch it.
pub(crate) fn wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> bool {
    let abs = match deadline {
        None => None,
        Some(d) => match monotonic_deadline(d) {
            Some(ts) => Some(ts),
            None => return false,
        },
    };
    let ts_ptr = abs
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY:
    // - `word` is a valid, aligned AtomicU32 that outlives the call; the kernel
    //   only reads it (compares it with `expected`).
    // - `ts_ptr` is null or points to a timespec that lives until the call returns.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT_BITSET,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            libc::FUTEX_BITSET_MATCH_ANY,
        )
    };
    if r == 0 {
        return true;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        // The value had already changed, or a signal arrived: a normal wake.
        Some(libc::EAGAIN) | Some(libc::EINTR) => true,
        Some(libc::ETIMEDOUT) => false,
        // EFAULT/EINVAL: our own word is not a valid futex, a broken invariant.
        other => panic!("futex wait failed on our own shared word: errno {other:?}"),
    }
}

/// Wakes up to `n` waiters on `word` (in any process); returns how many woke.
pub(crate) fn wake(word: &AtomicU32, n: u32) -> usize {
    let n = n.min(i32::MAX as u32) as libc::c_int;
    // SAFETY:
    // - `word` is a valid, aligned AtomicU32; FUTEX_WAKE does not touch its memory,
    //   it only uses the address as the key.
    let r = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n) };
    if r < 0 {
        panic!(
            "futex wake failed on our own shared word: {}",
            std::io::Error::last_os_error()
        );
    }
    r as usize
}

/// Wakes every waiter on `word`.
pub(crate) fn wake_all(word: &AtomicU32) -> usize {
    wake(word, i32::MAX as u32)
}

/// `deadline` as an absolute `CLOCK_MONOTONIC` time; `None` if it has passed.
fn monotonic_deadline(deadline: Instant) -> Option<libc::timespec> {
    let left = deadline.checked_duration_since(Instant::now())?;
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).ok()?;
    let mut sec = now.tv_sec().saturating_add(left.as_secs() as libc::time_t);
    let mut nsec = now.tv_nsec() + left.subsec_nanos() as libc::c_long;
    if nsec >= 1_000_000_000 {
        sec = sec.saturating_add(1);
        nsec -= 1_000_000_000;
    }
    Some(libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    #[test]
    fn wait_times_out_at_the_deadline() {
        let w = AtomicU32::new(0);
        let start = Instant::now();
        let deadline = start + Duration::from_millis(30);
        while Instant::now() < deadline {
            if !wait(&w, 0, Some(deadline)) {
                break;
            }
        }
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn wait_returns_at_once_when_the_value_differs() {
        let w = AtomicU32::new(1);
        assert!(wait(&w, 0, Some(Instant::now() + Duration::from_secs(30))));
    }

    #[test]
    fn wake_releases_a_waiter() {
        let w = Arc::new(AtomicU32::new(0));
        let w2 = w.clone();
        let t = std::thread::spawn(move || {
            while w2.load(Ordering::Acquire) == 0 {
                wait(&w2, 0, None);
            }
        });
        w.store(1, Ordering::Release);
        while !t.is_finished() {
            wake_all(&w);
            std::thread::yield_now();
        }
        t.join().unwrap();
    }
}
