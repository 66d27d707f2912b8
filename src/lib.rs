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
//! # Module map
//!
//! | Python module | here |
//! |---|---|
//! | `multiprocessing.process` | [`Process`], [`current_process`], [`parent_process`], [`active_children`], [`cpu_count`] |
//! | `multiprocessing.pool` | [`Pool`], [`PoolBuilder`], [`AsyncResult`], [`IMapIterator`] |
//! | `multiprocessing.connection` | [`Connection`], [`pipe`], [`connection::wait`] |
//! | `multiprocessing.queues` | [`Queue`], [`JoinableQueue`], [`SimpleQueue`] |
//! | `multiprocessing.synchronize` | [`Lock`], [`RLock`], [`Semaphore`], [`BoundedSemaphore`], [`Event`], [`Condition`], [`Barrier`] |
//! | `multiprocessing.sharedctypes` | [`Value`], [`Array`] |
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

pub mod connection;
mod error;
mod managers;
#[allow(unsafe_code)]
mod platform;
mod pool;
mod process;
mod queues;
mod reduction;
mod sharedctypes;
mod spawn;
mod synchronize;

pub use connection::{Connection, pipe};
pub use error::{Error, Result};
pub use managers::{
    ArrayProxy, BarrierProxy, BoundedSemaphoreProxy, ConditionProxy, DictProxy, EventProxy,
    JoinableQueueProxy, ListProxy, LockProxy, Managed, Manager, Namespace, ObjectProxy, ProxyGuard,
    QueueProxy, RLockProxy, SemaphoreProxy, SharedObject, ValueProxy,
};
pub use pool::{AsyncResult, IMapIterator, Pool, PoolBuilder};
pub use process::{
    Process, ProcessInfo, active_children, cpu_count, current_process, parent_process,
};
pub use queues::{JoinableQueue, Queue, SimpleQueue};
pub use sharedctypes::{Array, ArrayGuard, Scalar, Value, ValueGuard};
pub use spawn::{init, reset_executable, set_executable, set_start_timeout};
pub use synchronize::{
    Acquired, Barrier, BoundedSemaphore, Condition, Event, Lock, LockGuard, RLock, RLockGuard,
    Semaphore,
};
