//! `ObjectProxy`: a `SharedObject` of yours held by a dummy `Manager`
//! (as src/managers/custom.rs for the process manager).

use crate::util::Unpoison;
use std::fmt;
use std::sync::{Arc, Mutex};

use super::super::run_caught;
#[cfg(doc)]
use super::Manager;
use super::alive::Alive;
use crate::SharedObject;
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;

/// A [`SharedObject`] of yours held by a dummy [`Manager`]; each call runs
/// under the object's lock.
///
/// Python: the `AutoProxy` that `manager.Foo()` returns.
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// struct Counter(i64);
/// impl mp::SharedObject for Counter {
///     type Init = i64;
///     type Call = i64;
///     type Reply = i64;
///     fn new(start: i64) -> Self { Counter(start) }
///     fn call(&mut self, add: i64) -> i64 { self.0 += add; self.0 }
/// }
/// let m = mp::Manager::new()?;
/// let c = m.create::<Counter>(10)?;
/// assert_eq!(c.call(5)?, 15);
/// # Ok::<(), mp::Error>(())
/// ```
pub struct ObjectProxy<T: SharedObject> {
    pub(super) alive: Alive,
    pub(super) obj: Arc<Mutex<T>>,
}

impl<T: SharedObject> ObjectProxy<T> {
    /// Runs `call` on the object, under its lock.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] when the call panicked (the object stays, in
    /// whatever state the panic left it), [`Error::Closed`].
    pub fn call(&self, call: T::Call) -> Result<T::Reply> {
        self.alive.check()?;
        let mut obj = self.obj.lock().unpoison();
        run_caught("SharedObject::call", || obj.call(call))
    }
}

impl<T: SharedObject> Clone for ObjectProxy<T> {
    fn clone(&self) -> Self {
        ObjectProxy {
            alive: self.alive.clone(),
            obj: self.obj.clone(),
        }
    }
}

impl<T: SharedObject> fmt::Debug for ObjectProxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectProxy")
            .field("type", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}
