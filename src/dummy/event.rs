//! `Event` on a std `Mutex` and `Condvar`.

use crate::util::Unpoison;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::wait_until;
use crate::error::Result;
use crate::util::deadline_after;

/// A flag threads wait for.
///
/// Python: `multiprocessing.dummy.Event` (`threading.Event`).
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// use std::time::Duration;
/// let e = mp::Event::new()?;
/// assert!(!e.wait_timeout(Duration::from_millis(1)));
/// e.set();
/// e.wait();
/// assert!(e.is_set());
/// # Ok::<(), mp::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct Event {
    inner: Arc<(Mutex<bool>, Condvar)>,
}

impl Event {
    /// A new, clear event.
    ///
    /// # Errors
    ///
    /// None in practice (the `Result` keeps the process version's signature).
    pub fn new() -> Result<Event> {
        Ok(Event::default())
    }

    /// True once set (until cleared).
    pub fn is_set(&self) -> bool {
        *self.inner.0.lock().unpoison()
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        *self.inner.0.lock().unpoison() = true;
        self.inner.1.notify_all();
    }

    /// Clears the flag.
    pub fn clear(&self) {
        *self.inner.0.lock().unpoison() = false;
    }

    /// Blocks until the flag is set.
    pub fn wait(&self) {
        let _ = wait_until(&self.inner.1, self.inner.0.lock().unpoison(), None, |s| *s);
    }

    /// Waits at most `timeout`; true if the flag is set.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = deadline_after(timeout);
        wait_until(
            &self.inner.1,
            self.inner.0.lock().unpoison(),
            deadline,
            |s| *s,
        )
        .1
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}
