//! Python's `multiprocessing.dummy`: the same API, backed by threads of this
//! process.
//!
//! Change one line, `use multiprocess as mp;` to `use multiprocess::dummy as mp;`,
//! and a program runs its workers as threads instead of child processes. Every
//! name a program uses from `mp::` is here with the same methods and errors, so
//! the program compiles unchanged; where a thread can do more, it may:
//! a target may capture variables, and arguments and results need not be
//! serializable (only [`Send`]).
//!
//! What changes is what a learner should see change (the guide
//! `docs/processes-vs-threads.md` shows each one running):
//!
//! - memory is shared: a worker that changes a global changes it for everyone;
//! - a worker that aborts or segfaults takes the whole program down (a panic is
//!   still caught and reported as [`Error::Remote`], as for a process);
//! - start-up and messages are cheap (no `fork`/`exec`, no serialization).
//!
//! [`Lock`], [`RLock`], [`Semaphore`], [`BoundedSemaphore`], [`Event`],
//! [`Condition`], [`Barrier`], the queues, [`Value`] and [`Array`] are built on
//! std's `Mutex` and `Condvar`; [`pipe`] is the crate's own [`Connection`]
//! (a Unix socket pair, which works between threads as between processes);
//! [`Manager`] hands out proxies with the process proxies' methods, backed by
//! objects in this process.
//!
//! [`futures`] is `mp::futures` on threads: Python's
//! `concurrent.futures.ThreadPoolExecutor`, also named `ProcessPoolExecutor`
//! there so a program needs only its `use` line changed.
//!
//! Python: `multiprocessing.dummy` and `multiprocessing.pool.ThreadPool`
//! (which is [`crate::ThreadPool`], this module's [`Pool`]).
//!
//! # Examples
//!
//! ```
//! use multiprocess::dummy as mp;
//!
//! fn main() -> mp::Result<()> {
//!     mp::init(); // does nothing here, kept so the program reads the same
//!     let greeting = String::from("hello"); // a thread may capture it
//!     let pool = mp::Pool::new(2)?;
//!     let lens = pool.map(move |w: &str| format!("{greeting} {w}").len(), ["a", "bb"])?;
//!     assert_eq!(lens, [7, 8]);
//!     pool.close();
//!     pool.join()
//! }
//! ```

mod barrier;
mod condition;
mod event;
pub mod futures;
mod lock;
mod managers;
mod pool;
mod process;
mod queues;
mod semaphore;
mod sharedctypes;

pub use barrier::{Barrier, BarrierBuilder};
pub use condition::Condition;
pub use event::Event;
pub use lock::{Lock, LockGuard, RLock, RLockGuard};
pub use managers::{
    ArrayProxy, BarrierProxy, BoundedSemaphoreProxy, ConditionProxy, DictProxy, EventProxy,
    JoinableQueueProxy, ListProxy, LockProxy, Managed, Manager, Namespace, ObjectProxy,
    PoolMapResultProxy, PoolProxy, PoolResultProxy, ProxyGuard, QueueProxy, RLockProxy,
    SemaphoreProxy, ValueProxy,
};
pub use pool::{AsyncResult, IMapIterator, Pool, PoolBuilder};
pub use process::{Process, ProcessInfo, active_children, current_process, parent_process};
pub use queues::{JoinableQueue, Queue, SimpleQueue};
pub use semaphore::{BoundedSemaphore, Semaphore};
pub use sharedctypes::{Array, ArrayGuard, SharedLock, Value, ValueGuard};

// The same in both worlds: errors, start-up, and what is not about workers.
// Memory shared by name, and the lock-free shared values, are the same
// memory whether the other side is a thread or a process (Python's dummy
// programs use `shared_memory` unchanged too).
pub use crate::{
    Acquired, Connection, Error, RawArray, RawValue, Result, Scalar, SharedMemoryManager,
    SharedObject, cluster, connection, cpu_count, init, pipe, reduction, reset_executable,
    set_executable, set_start_timeout, shared_memory, test_support,
};

use crate::util::Unpoison;
use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, MutexGuard, Once};
use std::time::Instant;

use crate::reduction::PanicInfo;

thread_local! {
    /// Set on a pool worker thread: its panics are reported as the task's
    /// error, not printed (as a process pool's worker does not print them).
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Installs (once) a panic hook that records where a panic happened, for the
/// [`Error::Remote`] of a dummy worker, and then runs the previous hook unless
/// the thread is a quiet pool worker.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        let capture = std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
        std::panic::set_hook(Box::new(move |info| {
            let location = info.location().map(|l| l.to_string());
            let backtrace = capture.then(|| std::backtrace::Backtrace::force_capture().to_string());
            crate::reduction::record_panic(location, backtrace);
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, catching a panic as the [`Error::Remote`] a process would report.
fn run_caught<R>(name: &str, f: impl FnOnce() -> R) -> Result<R> {
    crate::reduction::catch(f)
        .map_err(|p: PanicInfo| p.into_error(name.to_string(), std::process::id()))
}

/// A new thread's name: `Thread-1`, `ThreadPoolWorker-2`, ... (one counter,
/// as Python's thread names share one).
fn next_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Waits on `cv` until `done(&mut state)` holds, or `deadline` passes (`None`:
/// no limit). Returns the guard and whether `done` held.
fn wait_until<'a, T>(
    cv: &Condvar,
    mut g: MutexGuard<'a, T>,
    deadline: Option<Instant>,
    mut done: impl FnMut(&mut T) -> bool,
) -> (MutexGuard<'a, T>, bool) {
    loop {
        if done(&mut g) {
            return (g, true);
        }
        match deadline {
            None => g = cv.wait(g).unpoison(),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return (g, false);
                }
                g = cv.wait_timeout(g, left).unpoison().0;
            }
        }
    }
}
