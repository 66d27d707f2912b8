//! Python's `multiprocessing.context`: start methods and contexts.
//!
//! | Python | Rust |
//! |---|---|
//! | `'spawn'`, `'forkserver'` | [`StartMethod::Spawn`], [`StartMethod::Forkserver`] (`"spawn".parse()`) |
//! | `'fork'` | none: `"fork".parse()` is [`Error::Value`] (see [`StartMethod`]) |
//! | `set_start_method(m)` | [`set_start_method`]`(m)` |
//! | `get_start_method()` | [`get_start_method`]`()` |
//! | `get_all_start_methods()` | [`get_all_start_methods`]`()` |
//! | `get_context(m)` | [`get_context`]`(m)` |
//! | `ctx.Process(target=f, args=(a,))` | [`Context::process`]`(f, a)` |
//! | `ctx.Pool(...)` | [`Context::pool_builder`]`()` |

pub(crate) mod method;

use std::process::Termination;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::pool::PoolBuilder;
use crate::process::Process;

pub use method::{
    START_METHOD_VAR, StartMethod, get_all_start_methods, get_start_method, set_start_method,
};

/// A start method to make processes and pools with, whatever the global one
/// is.
///
/// Python: the context objects of `multiprocessing.get_context(method)`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let ctx = mp::get_context(mp::StartMethod::Forkserver);
///     let mut p = ctx.process(|n: i32| std::process::ExitCode::from(n as u8), 4);
///     p.start()?;
///     p.join()?;
///     assert_eq!(p.exitcode(), Some(4));
///     let pool = ctx.pool_builder().processes(1).build()?;
///     assert_eq!(pool.apply(|x: u32| x + 1, 1)?, 2);
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// Its start method.
    method: StartMethod,
}

/// The context of `method`.
///
/// Python: `multiprocessing.get_context(method)`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// let ctx = mp::get_context(mp::StartMethod::Spawn);
/// assert_eq!(ctx.start_method(), mp::StartMethod::Spawn);
/// ```
pub fn get_context(method: StartMethod) -> Context {
    Context { method }
}

impl Context {
    /// This context's start method.
    ///
    /// Python: `ctx.get_start_method()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// assert_eq!(mp::get_context(mp::StartMethod::Forkserver).start_method(), mp::StartMethod::Forkserver);
    /// ```
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    /// A [`Process`] that will start with this context's method; otherwise
    /// [`Process::new`].
    ///
    /// Python: `ctx.Process(target=target, args=(arg,))`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// mp::init();
    /// let mut p = mp::get_context(mp::StartMethod::Spawn).process(|_: ()| (), ());
    /// p.start().unwrap();
    /// p.join().unwrap();
    /// assert_eq!(p.exitcode(), Some(0));
    /// ```
    pub fn process<F, A, R>(&self, target: F, arg: A) -> Process
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Termination,
    {
        Process::new(target, arg).with_start_method(self.method)
    }

    /// A [`PoolBuilder`] whose workers start with this context's method.
    ///
    /// Python: `ctx.Pool(...)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// mp::init();
    /// let pool = mp::get_context(mp::StartMethod::Spawn).pool_builder().processes(1).build().unwrap();
    /// assert_eq!(pool.map(|x: u8| x * 2, [1, 2]).unwrap(), vec![2, 4]);
    /// ```
    pub fn pool_builder(&self) -> PoolBuilder {
        crate::Pool::builder().start_method(self.method)
    }
}
