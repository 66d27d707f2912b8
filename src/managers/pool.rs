//! `Manager().Pool()`: a pool of worker processes living in the manager's
//! server process, used through a proxy from any process that holds one.
//!
//! The proxy sends the function as a reference to its monomorphised
//! trampoline (this binary's, which the server and its workers run too) and
//! the argument encoded; the server hands both to its `mp::Pool` as one
//! [`RawTask`], and the worker runs the trampoline, which decodes the
//! argument, calls the function and encodes the result. The server never
//! decodes either.

// `Sealed` is public only as the unnameable supertrait of `Managed`; its
// methods take and return crate-internal types on purpose.
#![allow(private_interfaces)]

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::Result;
#[allow(unused_imports)] // doc links
use crate::error::{Error, RemoteError};
use crate::reduction::{CallOutcome, Encoded, FnRef};

use super::protocol::{Blob, Kind, Op, Wait};
use super::proxy::{Handle, Managed, Sealed, proxy_boilerplate};

/// One task of a manager's pool: the function's trampoline and the encoded
/// argument, opaque to the server.
#[derive(Serialize, Deserialize)]
pub(crate) struct RawTask {
    /// `FnRef::returning(f)`, made by the proxy.
    pub(crate) func: FnRef,
    /// The encoded argument.
    pub(crate) arg: Vec<u8>,
}

/// What a [`RawTask`] gave.
#[derive(Serialize, Deserialize)]
pub(crate) enum RawResult {
    /// The encoded result.
    Returned(Vec<u8>),
    /// The argument did not decode, or the result did not encode.
    Failed(String),
    /// The function panicked, in this worker.
    Panicked(RemoteError),
}

/// Runs a [`RawTask`] in a pool worker of the manager.
pub(crate) fn run_task(t: RawTask) -> RawResult {
    let payload = Encoded {
        bytes: t.arg,
        fds: Vec::new(),
    };
    match t.func.call(payload) {
        Ok(CallOutcome::Returned(enc)) => RawResult::Returned(enc.bytes),
        Ok(CallOutcome::Panicked(p)) => RawResult::Panicked(
            p.into_remote(crate::spawn::current_name().to_string(), std::process::id()),
        ),
        Ok(CallOutcome::Failed(e)) | Err(e) => RawResult::Failed(e.to_string()),
    }
}

/// The items of a `map`, encoded; they (and any proxies in them) live until
/// the server has them.
fn encode_items<A: Serialize>(items: &[A]) -> Result<Vec<Blob>> {
    items.iter().map(Blob::encode).collect()
}

/// A proxy for a pool of worker processes living in the manager's server
/// process (`m.pool(n)`). Any process holding the proxy submits work to it;
/// the pool lives until its last proxy is dropped (then it is terminated,
/// like a dropped [`Pool`](crate::Pool)) or the manager shuts down.
///
/// The functions are those a [`Pool`](crate::Pool) takes: non-capturing
/// closures or fn items, `Fn(A) -> R`.
///
/// Python: `manager.Pool(processes)`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let m = mp::Manager::new()?;
///     let pool = m.pool(2)?;
///     assert_eq!(pool.apply(|x: i32| x * x, 7)?, 49);
///     let r = pool.apply_async(|s: String| s.len(), "four".to_string())?;
///     assert_eq!(r.get()?, 4);
///     assert_eq!(pool.map(|x: u32| x + 1, vec![1, 2, 3])?, vec![2, 3, 4]);
///     pool.close()?;
///     pool.join()?;
///     m.shutdown()
/// }
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct PoolProxy {
    /// The server and the object's id.
    handle: Handle,
}
proxy_boilerplate!(PoolProxy);

impl PoolProxy {
    /// Runs `f(arg)` in a worker of the manager's pool and waits for the
    /// result.
    ///
    /// Python: `pool.apply(f, args)`.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] when `f` panicked, [`Error::WorkerLost`] when the
    /// worker died, [`Error::Closed`] after `close()`/`terminate()` or when
    /// the manager is gone, [`Error::Encode`]/[`Error::Decode`] when the value
    /// did not cross, [`Error::Io`].
    pub fn apply<F, A, R>(&self, f: F, arg: A) -> Result<R>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.handle
            .value(Op::PoolApply(FnRef::returning(f), Blob::encode(&arg)?))
    }

    /// Submits `f(arg)` and returns at once.
    ///
    /// Python: `pool.apply_async(f, args)`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `close()`/`terminate()` or when the manager is
    /// gone, [`Error::Encode`], [`Error::Io`]. The task's own errors come from
    /// [`PoolResultProxy::get`].
    pub fn apply_async<F, A, R>(&self, f: F, arg: A) -> Result<PoolResultProxy<R>>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let op = Op::PoolApplyAsync(FnRef::returning(f), Blob::encode(&arg)?);
        Ok(PoolResultProxy {
            handle: self.handle.object(op)?,
            _type: PhantomData,
        })
    }

    /// Runs `f` over every item in the pool's workers; the results in order.
    ///
    /// Python: `pool.map(f, iterable)`.
    ///
    /// # Errors
    ///
    /// As [`apply`](Self::apply), for the first item that failed.
    pub fn map<F, A, R>(&self, f: F, items: impl IntoIterator<Item = A>) -> Result<Vec<R>>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let kept: Vec<A> = items.into_iter().collect();
        self.handle
            .values(Op::PoolMap(FnRef::returning(f), encode_items(&kept)?))
    }

    /// Submits `f` over every item and returns at once.
    ///
    /// Python: `pool.map_async(f, iterable)`.
    ///
    /// # Errors
    ///
    /// As [`apply_async`](Self::apply_async).
    pub fn map_async<F, A, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A>,
    ) -> Result<PoolMapResultProxy<R>>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let kept: Vec<A> = items.into_iter().collect();
        let op = Op::PoolMapAsync(FnRef::returning(f), encode_items(&kept)?);
        Ok(PoolMapResultProxy {
            handle: self.handle.object(op)?,
            _type: PhantomData,
        })
    }

    /// [`map`](Self::map) over tuples: `f` takes the tuple (Rust has no
    /// argument unpacking).
    ///
    /// Python: `pool.starmap(f, iterable)`.
    ///
    /// # Errors
    ///
    /// As [`map`](Self::map).
    pub fn starmap<F, A, R>(&self, f: F, items: impl IntoIterator<Item = A>) -> Result<Vec<R>>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.map(f, items)
    }

    /// No more work: the workers exit once the submitted tasks are done.
    ///
    /// Python: `pool.close()`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager is gone, [`Error::Io`].
    pub fn close(&self) -> Result<()> {
        self.handle.unit(Op::PoolClose)
    }

    /// Stops the workers at once; unfinished tasks give [`Error::Closed`].
    ///
    /// Python: `pool.terminate()`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager is gone, [`Error::Io`].
    pub fn terminate(&self) -> Result<()> {
        self.handle.unit(Op::PoolTerminate)
    }

    /// Waits for the workers to exit, after `close()` or `terminate()`.
    ///
    /// Python: `pool.join()`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] before `close()`/`terminate()`, [`Error::Closed`] when
    /// the manager is gone, [`Error::Io`].
    pub fn join(&self) -> Result<()> {
        self.handle.unit(Op::PoolJoin)
    }
}

impl Sealed for PoolProxy {
    type Init = u32;
    fn kind(processes: &u32) -> Result<Kind> {
        Ok(Kind::Pool(*processes))
    }
    fn from_handle(handle: Handle) -> Self {
        PoolProxy { handle }
    }
    fn handle(&self) -> &Handle {
        &self.handle
    }
}
impl Managed for PoolProxy {}

/// The result of a [`PoolProxy::apply_async`], kept in the manager: any
/// process holding it may wait for it and read it (each `get` gives the
/// same value).
///
/// Python: the `AsyncResult` proxy `manager.Pool().apply_async()` returns.
pub struct PoolResultProxy<R> {
    /// The server and the object's id.
    handle: Handle,
    /// The result type.
    _type: PhantomData<fn() -> R>,
}
proxy_boilerplate!(PoolResultProxy<R>);

/// The result of a [`PoolProxy::map_async`]: as [`PoolResultProxy`], for
/// the list of results.
pub struct PoolMapResultProxy<R> {
    /// The server and the object's id.
    handle: Handle,
    /// The item result type.
    _type: PhantomData<fn() -> R>,
}
proxy_boilerplate!(PoolMapResultProxy<R>);

/// The waiting methods both result proxies share.
macro_rules! result_methods {
    ($name:ident) => {
        impl<R> $name<R> {
            /// Waits until the result is there.
            ///
            /// Python: `result.wait()`.
            ///
            /// # Errors
            ///
            /// [`Error::Closed`] when the manager is gone, [`Error::Io`].
            pub fn wait(&self) -> Result<()> {
                self.handle.flag(Op::ResultWait(Wait::Forever)).map(drop)
            }

            /// Waits up to `timeout`; true if the result is there.
            ///
            /// Python: `result.wait(timeout)`.
            ///
            /// # Errors
            ///
            /// [`Error::Closed`] when the manager is gone, [`Error::Io`].
            pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
                self.handle.flag(Op::ResultWait(Wait::timeout(timeout)))
            }

            /// Whether the result is there.
            ///
            /// Python: `result.ready()`.
            ///
            /// # Errors
            ///
            /// [`Error::Closed`] when the manager is gone, [`Error::Io`].
            pub fn ready(&self) -> Result<bool> {
                self.handle.flag(Op::ResultReady)
            }

            /// Whether the task succeeded.
            ///
            /// Python: `result.successful()`.
            ///
            /// # Errors
            ///
            /// [`Error::Value`] when the result is not there yet,
            /// [`Error::Closed`], [`Error::Io`].
            pub fn successful(&self) -> Result<bool> {
                self.handle.flag(Op::ResultSuccessful)
            }
        }
    };
}
result_methods!(PoolResultProxy);
result_methods!(PoolMapResultProxy);

impl<R: DeserializeOwned> PoolResultProxy<R> {
    /// Waits for the result and returns it.
    ///
    /// Python: `result.get()`.
    ///
    /// # Errors
    ///
    /// The task's error: [`Error::Remote`] when the function panicked,
    /// [`Error::WorkerLost`] when its worker died, [`Error::Closed`] when the
    /// pool was terminated first or the manager is gone; [`Error::Decode`],
    /// [`Error::Io`].
    pub fn get(&self) -> Result<R> {
        self.handle.value(Op::ResultGet(Wait::Forever))
    }

    /// Like [`get`](Self::get), but gives up after `timeout` with
    /// [`Error::Timeout`] (the task goes on).
    ///
    /// Python: `result.get(timeout)`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`], else as [`get`](Self::get).
    pub fn get_timeout(&self, timeout: Duration) -> Result<R> {
        self.handle.value(Op::ResultGet(Wait::timeout(timeout)))
    }
}

impl<R: DeserializeOwned> PoolMapResultProxy<R> {
    /// Waits for the results and returns them, in order.
    ///
    /// Python: `result.get()`.
    ///
    /// # Errors
    ///
    /// As [`PoolResultProxy::get`], for the first item that failed.
    pub fn get(&self) -> Result<Vec<R>> {
        self.handle.values(Op::ResultGet(Wait::Forever))
    }

    /// Like [`get`](Self::get), but gives up after `timeout` with
    /// [`Error::Timeout`].
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`], else as [`get`](Self::get).
    pub fn get_timeout(&self, timeout: Duration) -> Result<Vec<R>> {
        self.handle.values(Op::ResultGet(Wait::timeout(timeout)))
    }
}

impl fmt::Debug for RawTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawTask")
            .field("arg_len", &self.arg.len())
            .finish()
    }
}
