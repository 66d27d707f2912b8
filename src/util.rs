//! Small helpers shared by every module (CPython's `multiprocessing/util.py`).

use std::time::{Duration, Instant};

/// `now + timeout` as a deadline, or `None` (wait forever) if that overflows.
///
/// Every `*_timeout(d)` method turns its duration into a deadline once, so
/// retries after spurious wakes or `EINTR` never stretch the wait (crossbeam's
/// `*_deadline` pattern).
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}
