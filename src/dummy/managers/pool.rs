//! `PoolProxy` and its result proxies: a thread pool held by a dummy
//! `Manager` (as src/managers/pool.rs for the process manager).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::super::{AsyncResult, Pool};
#[cfg(doc)]
use super::Manager;
use super::alive::Alive;
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;

/// A pool of worker threads held by a dummy [`Manager`]. As the thread
/// [`Pool`]: functions may capture, arguments and results need only be `Send`.
///
/// Python: `manager.Pool(n)`.
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// let m = mp::Manager::new()?;
/// let pool = m.pool(2)?;
/// assert_eq!(pool.map(|x: u32| x * x, 1..=3)?, [1, 4, 9]);
/// assert_eq!(pool.apply_async(|x: u32| x + 1, 1)?.get()?, 2);
/// pool.close()?;
/// pool.join()?;
/// # Ok::<(), mp::Error>(())
/// ```
#[derive(Clone)]
pub struct PoolProxy {
    pub(super) alive: Alive,
    pub(super) pool: Arc<Pool>,
}

impl fmt::Debug for PoolProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolProxy")
            .field("pool", &self.pool)
            .finish()
    }
}

impl PoolProxy {
    /// Runs `f(arg)` on a worker and waits.
    ///
    /// # Errors
    ///
    /// As [`Pool::apply`], and [`Error::Closed`] after the manager's shutdown.
    pub fn apply<F, A, R>(&self, f: F, arg: A) -> Result<R>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
    {
        self.alive.check()?;
        self.pool.apply(f, arg)
    }

    /// Submits `f(arg)`.
    ///
    /// # Errors
    ///
    /// As [`Pool::apply_async`].
    pub fn apply_async<F, A, R>(&self, f: F, arg: A) -> Result<PoolResultProxy<R>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
    {
        self.alive.check()?;
        Ok(PoolResultProxy {
            alive: self.alive.clone(),
            result: Arc::new(self.pool.apply_async(f, arg)?),
        })
    }

    /// Applies `f` to every item.
    ///
    /// # Errors
    ///
    /// As [`Pool::map`].
    pub fn map<F, A, R>(&self, f: F, items: impl IntoIterator<Item = A>) -> Result<Vec<R>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
    {
        self.alive.check()?;
        self.pool.map(f, items)
    }

    /// [`map`](PoolProxy::map) without waiting.
    ///
    /// # Errors
    ///
    /// As [`Pool::map_async`].
    pub fn map_async<F, A, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A>,
    ) -> Result<PoolMapResultProxy<R>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
    {
        self.alive.check()?;
        Ok(PoolMapResultProxy {
            alive: self.alive.clone(),
            result: Arc::new(self.pool.map_async(f, items)?),
        })
    }

    /// [`map`](PoolProxy::map) with tuple arguments.
    ///
    /// # Errors
    ///
    /// As [`Pool::map`].
    pub fn starmap<F, A, R>(&self, f: F, items: impl IntoIterator<Item = A>) -> Result<Vec<R>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
    {
        self.map(f, items)
    }

    /// Accepts no more work.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after the manager's shutdown.
    pub fn close(&self) -> Result<()> {
        self.alive.check()?;
        self.pool.close();
        Ok(())
    }

    /// Stops now (see [`Pool::terminate`]).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after the manager's shutdown.
    pub fn terminate(&self) -> Result<()> {
        self.alive.check()?;
        self.pool.terminate();
        Ok(())
    }

    /// Waits for the workers (see [`Pool::join`]).
    ///
    /// # Errors
    ///
    /// As [`Pool::join`], [`Error::Closed`].
    pub fn join(&self) -> Result<()> {
        self.alive.check()?;
        self.pool.join()
    }
}

macro_rules! result_proxy {
    ($(#[$doc:meta])* $name:ident, $out:ty) => {
        $(#[$doc])*
        pub struct $name<R> {
            pub(super) alive: Alive,
            pub(super) result: Arc<AsyncResult<$out>>,
        }

        impl<R> Clone for $name<R> {
            fn clone(&self) -> Self {
                $name {
                    alive: self.alive.clone(),
                    result: self.result.clone(),
                }
            }
        }

        impl<R> fmt::Debug for $name<R> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).field("result", &self.result).finish()
            }
        }

        impl<R> $name<R> {
            /// Waits until ready.
            ///
            /// # Errors
            ///
            /// [`Error::Closed`] after the manager's shutdown.
            pub fn wait(&self) -> Result<()> {
                self.alive.check()?;
                self.result.wait();
                Ok(())
            }

            /// Waits at most `timeout`; true if ready.
            ///
            /// # Errors
            ///
            /// [`Error::Closed`].
            pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
                self.alive.check()?;
                Ok(self.result.wait_timeout(timeout))
            }

            /// True once ready.
            ///
            /// # Errors
            ///
            /// [`Error::Closed`].
            pub fn ready(&self) -> Result<bool> {
                self.alive.check()?;
                Ok(self.result.ready())
            }

            /// Whether the call succeeded.
            ///
            /// # Errors
            ///
            /// [`Error::Value`] if not ready, [`Error::Closed`].
            pub fn successful(&self) -> Result<bool> {
                self.alive.check()?;
                self.result.successful()
            }

            /// Waits for the result and takes it.
            ///
            /// # Errors
            ///
            /// As [`AsyncResult::get`], [`Error::Closed`].
            pub fn get(&self) -> Result<$out> {
                self.alive.check()?;
                self.result.get()
            }

            /// [`get`](Self::get), waiting at most `timeout`.
            ///
            /// # Errors
            ///
            /// As [`AsyncResult::get_timeout`], [`Error::Closed`].
            pub fn get_timeout(&self, timeout: Duration) -> Result<$out> {
                self.alive.check()?;
                self.result.get_timeout(timeout)
            }
        }
    };
}

result_proxy!(
    /// The result of [`PoolProxy::apply_async`].
    PoolResultProxy,
    R
);
result_proxy!(
    /// The result of [`PoolProxy::map_async`].
    PoolMapResultProxy,
    Vec<R>
);
