//! `Semaphore` and `BoundedSemaphore` on a std `Mutex` and `Condvar`.

use crate::util::Unpoison;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::wait_until;
use crate::error::{Error, Result};
use crate::util::deadline_after;

/// The largest value, as the process version's (`SEM_VALUE_MAX`).
const VALUE_MAX: u32 = i32::MAX as u32;

#[derive(Debug)]
struct Inner {
    value: Mutex<u32>,
    posted: Condvar,
    max: u32,
}

impl Inner {
    fn new(value: u32, max: u32) -> Result<Arc<Inner>> {
        if value > max {
            return Err(Error::value(format!(
                "semaphore value {value} out of range: it must be at most {max} \
                 (and at most {VALUE_MAX})"
            )));
        }
        Ok(Arc::new(Inner {
            value: Mutex::new(value),
            posted: Condvar::new(),
            max,
        }))
    }

    fn acquire(&self, deadline: Option<Instant>) -> bool {
        let (mut g, ok) = wait_until(&self.posted, self.value.lock().unpoison(), deadline, |v| {
            *v > 0
        });
        if ok {
            *g -= 1;
        }
        ok
    }

    fn release(&self) -> Result<()> {
        let mut g = self.value.lock().unpoison();
        if *g >= self.max {
            return Err(Error::value(
                "semaphore or lock released too many times; release only what was acquired",
            ));
        }
        *g += 1;
        drop(g);
        self.posted.notify_one();
        Ok(())
    }
}

macro_rules! semaphore_methods {
    () => {
        /// Blocks until the value is above zero, then decrements it.
        pub fn acquire(&self) {
            self.inner.acquire(None);
        }

        /// Decrements if above zero; never blocks.
        pub fn try_acquire(&self) -> bool {
            self.inner.acquire(Some(Instant::now()))
        }

        /// Waits at most `timeout`; true if decremented.
        pub fn acquire_timeout(&self, timeout: Duration) -> bool {
            self.inner.acquire(deadline_after(timeout))
        }

        /// The current value.
        pub fn get_value(&self) -> u32 {
            *self.inner.value.lock().unpoison()
        }
    };
}

/// A counting semaphore between threads.
///
/// Python: `multiprocessing.dummy.Semaphore` (`threading.Semaphore`).
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// let s = mp::Semaphore::new(1)?;
/// s.acquire();
/// assert!(!s.try_acquire());
/// s.release()?;
/// assert_eq!(s.get_value(), 1);
/// # Ok::<(), mp::Error>(())
/// ```
#[derive(Clone)]
pub struct Semaphore {
    inner: Arc<Inner>,
}

impl Semaphore {
    /// A semaphore with `value` permits.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] above `i32::MAX`, as the process version.
    pub fn new(value: u32) -> Result<Semaphore> {
        Ok(Semaphore {
            inner: Inner::new(value, VALUE_MAX)?,
        })
    }

    semaphore_methods!();

    /// Increments the value, waking one waiter.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] past `i32::MAX`.
    pub fn release(&self) -> Result<()> {
        self.inner.release()
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("value", &self.get_value())
            .finish()
    }
}

/// A semaphore that refuses to be released above its initial value.
///
/// Python: `multiprocessing.dummy.BoundedSemaphore`.
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// let s = mp::BoundedSemaphore::new(1)?;
/// assert!(matches!(s.release(), Err(mp::Error::Value(_))));
/// # Ok::<(), mp::Error>(())
/// ```
#[derive(Clone)]
pub struct BoundedSemaphore {
    inner: Arc<Inner>,
}

impl BoundedSemaphore {
    /// A semaphore with `value` permits, at most `value`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] above `i32::MAX`.
    pub fn new(value: u32) -> Result<BoundedSemaphore> {
        if value > VALUE_MAX {
            return Err(Error::value(format!(
                "semaphore value {value} out of range: it must be at most {VALUE_MAX}"
            )));
        }
        Ok(BoundedSemaphore {
            inner: Inner::new(value, value)?,
        })
    }

    semaphore_methods!();

    /// Increments the value, waking one waiter.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] above the initial value.
    pub fn release(&self) -> Result<()> {
        self.inner.release()
    }
}

impl fmt::Debug for BoundedSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedSemaphore")
            .field("value", &self.get_value())
            .finish()
    }
}
