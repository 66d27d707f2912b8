//! Python's `multiprocessing`, in Rust: real OS child processes behind the API
//! Python users already know.
//!
//! A child is this very binary run again with a worker flag; [`init`], the first
//! line of `main`, sends it straight to its work. Processes share no memory:
//! arguments and results travel with serde, and shared state lives in OS shared
//! memory or behind handles that cross process boundaries as file descriptors.
//!
//! # Hello, process
//!
//! ```
//! use multiprocess as mp;
//!
//! fn main() -> mp::Result<()> {
//!     mp::init(); // in a child: runs the child's work and exits
//!     let mut p = mp::Process::new(|n: u64| println!("square: {}", n * n), 10);
//!     p.start()?;
//!     p.join()?;
//!     assert_eq!(p.exitcode(), Some(0));
//!     Ok(())
//! }
//! ```
//!
//! # Talking to a child
//!
//! ```
//! use multiprocess as mp;
//!
//! fn main() -> mp::Result<()> {
//!     mp::init();
//!     let (parent_end, child_end) = mp::pipe(true)?;
//!     let mut p = mp::Process::new(|conn: mp::Connection| {
//!         let x: i32 = conn.recv().unwrap();
//!         conn.send(&(x * 2)).unwrap();
//!     }, child_end);
//!     p.start()?;
//!     parent_end.send(&21)?;
//!     assert_eq!(parent_end.recv::<i32>()?, 42);
//!     p.join()
//! }
//! ```
//!
//! # A pool of workers
//!
//! ```
//! use multiprocess as mp;
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn main() -> mp::Result<()> {
//!     mp::init();
//!     let pool = mp::Pool::new(2)?;
//!     assert_eq!(pool.map(square, 1..=4)?, vec![1, 4, 9, 16]);
//!     let r = pool.apply_async(|(a, b): (i32, i32)| a + b, (2, 3))?;
//!     assert_eq!(r.get()?, 5);
//!     // A task that panics is an error for that task; the pool goes on.
//!     let checked = |x: i32| if x < 0 { panic!("bad input {x}") } else { x };
//!     assert!(matches!(pool.apply(checked, -1), Err(mp::Error::Remote { .. })));
//!     assert_eq!(pool.apply(checked, 3)?, 3);
//!     pool.close();
//!     pool.join()
//! }
//! ```
//!
//! # Shared state and queues
//!
//! ```
//! use multiprocess as mp;
//!
//! fn main() -> mp::Result<()> {
//!     mp::init();
//!     let counter = mp::Value::new(0i64)?; // in OS shared memory
//!     let results = mp::Queue::<String>::new()?;
//!     let mut workers = Vec::new();
//!     for id in 0..2 {
//!         let mut p = mp::Process::new(
//!             |(id, counter, results): (u32, mp::Value<i64>, mp::Queue<String>)| {
//!                 for _ in 0..1000 {
//!                     *counter.lock() += 1; // `with v.get_lock(): v.value += 1`
//!                 }
//!                 results.put(format!("worker {id} done")).unwrap();
//!             },
//!             (id, counter.clone(), results.clone()),
//!         );
//!         p.start()?;
//!         workers.push(p);
//!     }
//!     for _ in 0..2 {
//!         assert!(results.get()?.ends_with("done"));
//!     }
//!     for p in &mut workers {
//!         p.join()?;
//!     }
//!     assert_eq!(counter.get(), 2000);
//!     Ok(())
//! }
//! ```
//!
//! # A manager
//!
//! ```
//! use multiprocess as mp;
//!
//! fn main() -> mp::Result<()> {
//!     mp::init();
//!     let m = mp::Manager::new()?; // a server process owning the objects
//!     let d = m.dict::<String, i64>()?;
//!     let mut p = mp::Process::new(|d: mp::DictProxy<String, i64>| d.insert("x".into(), 7).map(drop), d.clone());
//!     p.start()?;
//!     p.join()?;
//!     assert_eq!(d.get(&"x".to_string())?, Some(7));
//!     m.shutdown()
//! }
//! ```
//!
//! # Module map
//!
//! | Python module | here |
//! |---|---|
//! | `multiprocessing.process` | [`Process`], [`current_process`], [`parent_process`], [`active_children`], [`cpu_count`] |
//! | `multiprocessing.pool` | [`Pool`], [`PoolBuilder`], [`AsyncResult`], [`IMapIterator`] |
//! | `concurrent.futures` (`ProcessPoolExecutor`) | [`futures::ProcessPoolExecutor`], [`futures::Future`], [`futures::as_completed`], [`futures::wait`] |
//! | `multiprocessing.connection` | [`Connection`], [`pipe`], [`connection::wait`] |
//! | `multiprocessing.reduction` | [`reduction::send_handle`], [`reduction::recv_handle`] |
//! | `multiprocessing.queues` | [`Queue`], [`JoinableQueue`], [`SimpleQueue`] |
//! | `multiprocessing.synchronize` | [`Lock`], [`RLock`], [`Semaphore`], [`BoundedSemaphore`], [`Event`], [`Condition`], [`Barrier`] |
//! | `multiprocessing.sharedctypes` | [`Value`], [`Array`], [`RawValue`], [`RawArray`] |
//! | `multiprocessing.shared_memory` | [`shared_memory::SharedMemory`], [`shared_memory::ShareableList`], [`SharedMemoryManager`] |
//! | `multiprocessing.managers` | [`Manager`], [`Namespace`], [`DictProxy`], [`ListProxy`], [`ValueProxy`], [`LockProxy`], [`QueueProxy`], [`EventProxy`], [`SharedObject`], ... |
//! | `multiprocessing.spawn` | [`init`], [`set_executable`], [`test_support!`] |

#![deny(unsafe_code, unsafe_op_in_unsafe_fn)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc
)]

#[cfg(test)]
crate::test_support!();

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
#[path = "fuzzing.rs"]
pub mod __fuzz;
pub mod cluster;
pub mod connection;
mod context;
pub mod dummy;
mod error;
mod forkserver;
pub mod futures;
mod managers;
#[allow(unsafe_code)]
mod platform;
mod pool;
mod process;
mod queues;
pub mod reduction;
pub mod shared_memory;
mod sharedctypes;
mod spawn;
mod synchronize;
mod util;

pub use cluster::entry::init;
pub use connection::{Connection, pipe};
pub use context::{
    Context, START_METHOD_VAR, StartMethod, get_all_start_methods, get_context, get_start_method,
    set_start_method,
};
pub use dummy::Pool as ThreadPool;
pub use error::{Error, Result};
pub use managers::{
    ArrayProxy, BarrierProxy, BoundedSemaphoreProxy, ConditionProxy, DictProxy, EventProxy,
    JoinableQueueProxy, ListProxy, LockProxy, Managed, Manager, Namespace, ObjectProxy,
    PoolMapResultProxy, PoolProxy, PoolResultProxy, ProxyGuard, QueueProxy, RLockProxy,
    SemaphoreProxy, SharedObject, ValueProxy,
};
pub use pool::{AsyncResult, IMapIterator, Pool, PoolBuilder};
pub use process::{
    Process, ProcessInfo, active_children, cpu_count, current_process, parent_process,
};
pub use queues::{JoinableQueue, Queue, SimpleQueue};
pub use shared_memory::SharedMemoryManager;
pub use sharedctypes::{
    Array, ArrayGuard, RawArray, RawValue, Scalar, SharedLock, Value, ValueGuard,
};
pub use spawn::{reset_executable, set_executable, set_start_timeout};
/// For the crate's tests only: wakes this process's lock waiters missed.
#[doc(hidden)]
pub use synchronize::missed_lock_wakes as __missed_lock_wakes;
pub use synchronize::{
    Acquired, Barrier, BarrierBuilder, BoundedSemaphore, Condition, Event, Lock, LockGuard, RLock,
    RLockGuard, Semaphore,
};

/// The README's example runs as a doctest, so it cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctest;
