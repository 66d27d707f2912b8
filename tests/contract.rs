//! One contract for each local type and its manager proxy.
//!
//! Python has one name for `multiprocessing.Lock()` and `manager.Lock()`; here
//! they are two types (OS shared memory, and a proxy to an object in the
//! manager's server), and they must not drift apart. Two layers keep them
//! together:
//!
//! * **Signatures** (`same_signatures!`, checked at compile time): every
//!   method is listed once with the local type's signature; each local type
//!   must have exactly it, and each proxy the same with the return wrapped in
//!   `mp::Result` where the local one is not already a `Result` (the one
//!   difference API.md allows: a round trip can fail).
//! * **Behaviour** (`contract_tests!`): each scenario is a generic function
//!   over a [`Kit`] (a factory of one implementation's types), run once per
//!   implementation. The `Ret` trait maps `T` and `mp::Result<T>` to one
//!   shape, so a scenario is written once.
//!
//! The thread-backed `mp::dummy` types are the third and fourth
//! implementations: its local types sit in the `exact` lists, its manager's
//! proxies in the `wrapped` ones, so drift between `mp` and `mp::dummy` fails
//! to compile; its kits ([`Threads`], [`ThreadManaged`]) start the other party
//! as a `mp::dummy::Process` (a thread), and run every scenario too.
//!
//! Scenarios follow CPython's Lib/test/_test_multiprocessing.py (3.11.7, PSF
//! licence) `_TestLock`, `_TestSemaphore`, `_TestEvent`, `_TestCondition`,
//! `_TestBarrier`, `_TestQueue`, `_TestValue` and `TestSyncManagerTypes`,
//! which CPython itself runs once per "type" (processes, manager, threads).

multiprocess::test_support!();
mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{LeakCheck, SHORT, serial, within};
use multiprocess as mp;
use serde::Serialize;
use serde::de::DeserializeOwned;

// ---------------------------------------------------------------------------
// Signatures

/// Checks at compile time that each `exact` type has the listed methods with
/// exactly these signatures, and each `wrapped` type the same with the
/// return type `R` of a `plain` method as `mp::Result<R>` (a `fallible`
/// method's return is already a `Result`, and stays the same).
macro_rules! same_signatures {
    (
        exact: [$($exact:ty),* $(,)?],
        wrapped: [$($wrapped:ty),* $(,)?],
        $methods:tt
    ) => {
        $(same_signatures!(@exact $exact, $methods);)*
        $(same_signatures!(@wrapped $wrapped, $methods);)*
    };
    (@exact $t:ty, {
        plain { $($p:ident($($pa:ty),*) -> $pr:ty;)* }
        fallible { $($f:ident($($fa:ty),*) -> $fr:ty;)* }
    }) => {
        const _: () = {
            $(let _: fn(&$t $(, $pa)*) -> $pr = <$t>::$p;)*
            $(let _: fn(&$t $(, $fa)*) -> $fr = <$t>::$f;)*
        };
    };
    (@wrapped $t:ty, {
        plain { $($p:ident($($pa:ty),*) -> $pr:ty;)* }
        fallible { $($f:ident($($fa:ty),*) -> $fr:ty;)* }
    }) => {
        const _: () = {
            $(let _: fn(&$t $(, $pa)*) -> mp::Result<$pr> = <$t>::$p;)*
            $(let _: fn(&$t $(, $fa)*) -> $fr = <$t>::$f;)*
        };
    };
}

same_signatures! {
    exact: [mp::Lock, mp::RLock, mp::Semaphore, mp::BoundedSemaphore, mp::Condition,
        mp::dummy::Lock, mp::dummy::RLock, mp::dummy::Semaphore, mp::dummy::BoundedSemaphore,
        mp::dummy::Condition],
    wrapped: [mp::LockProxy, mp::RLockProxy, mp::SemaphoreProxy, mp::BoundedSemaphoreProxy,
        mp::ConditionProxy, mp::dummy::LockProxy, mp::dummy::RLockProxy,
        mp::dummy::SemaphoreProxy, mp::dummy::BoundedSemaphoreProxy, mp::dummy::ConditionProxy],
    {
        plain {
            acquire() -> ();
            try_acquire() -> bool;
            acquire_timeout(Duration) -> bool;
        }
        fallible {
            release() -> mp::Result<()>;
        }
    }
}

same_signatures! {
    exact: [mp::Semaphore, mp::BoundedSemaphore, mp::dummy::Semaphore, mp::dummy::BoundedSemaphore],
    wrapped: [mp::SemaphoreProxy, mp::BoundedSemaphoreProxy, mp::dummy::SemaphoreProxy,
        mp::dummy::BoundedSemaphoreProxy],
    {
        plain { get_value() -> u32; }
        fallible {}
    }
}

same_signatures! {
    exact: [mp::Condition, mp::dummy::Condition],
    wrapped: [mp::ConditionProxy, mp::dummy::ConditionProxy],
    {
        plain {}
        fallible {
            wait() -> mp::Result<bool>;
            wait_timeout(Duration) -> mp::Result<bool>;
            wait_for(fn() -> bool) -> mp::Result<bool>;
            wait_for_timeout(fn() -> bool, Duration) -> mp::Result<bool>;
            notify() -> mp::Result<()>;
            notify_n(usize) -> mp::Result<()>;
            notify_all() -> mp::Result<()>;
        }
    }
}

same_signatures! {
    exact: [mp::Event, mp::dummy::Event],
    wrapped: [mp::EventProxy, mp::dummy::EventProxy],
    {
        plain {
            set() -> ();
            clear() -> ();
            is_set() -> bool;
            wait() -> ();
            wait_timeout(Duration) -> bool;
        }
        fallible {}
    }
}

same_signatures! {
    exact: [mp::Barrier, mp::dummy::Barrier],
    wrapped: [mp::BarrierProxy, mp::dummy::BarrierProxy],
    {
        plain {
            abort() -> ();
            reset() -> ();
            parties() -> usize;
            n_waiting() -> usize;
            is_broken() -> bool;
        }
        fallible {
            wait() -> mp::Result<usize>;
            wait_timeout(Duration) -> mp::Result<usize>;
        }
    }
}

same_signatures! {
    exact: [mp::Queue<String>, mp::JoinableQueue<String>, mp::dummy::Queue<String>,
        mp::dummy::JoinableQueue<String>],
    wrapped: [mp::QueueProxy<String>, mp::JoinableQueueProxy<String>,
        mp::dummy::QueueProxy<String>, mp::dummy::JoinableQueueProxy<String>],
    {
        plain {
            qsize() -> usize;
            empty() -> bool;
            full() -> bool;
        }
        fallible {
            put(String) -> mp::Result<()>;
            put_timeout(String, Duration) -> mp::Result<()>;
            put_nowait(String) -> mp::Result<()>;
            get() -> mp::Result<String>;
            get_timeout(Duration) -> mp::Result<String>;
            get_nowait() -> mp::Result<String>;
        }
    }
}

same_signatures! {
    exact: [mp::Queue<String>, mp::JoinableQueue<String>, mp::dummy::Queue<String>,
        mp::dummy::JoinableQueue<String>],
    wrapped: [],
    {
        plain {
            maxsize() -> usize;
            close() -> ();
            is_closed() -> bool;
        }
        fallible {}
    }
}

same_signatures! {
    exact: [mp::JoinableQueue<String>, mp::dummy::JoinableQueue<String>],
    wrapped: [mp::JoinableQueueProxy<String>, mp::dummy::JoinableQueueProxy<String>],
    {
        plain {
            join() -> ();
            join_timeout(Duration) -> bool;
        }
        fallible {
            task_done() -> mp::Result<()>;
        }
    }
}

same_signatures! {
    exact: [mp::Value<i64>, mp::dummy::Value<i64>],
    wrapped: [mp::ValueProxy<i64>, mp::dummy::ValueProxy<i64>],
    {
        plain {
            get() -> i64;
            set(i64) -> ();
        }
        fallible {}
    }
}

same_signatures! {
    exact: [mp::Array<f64>, mp::dummy::Array<f64>],
    wrapped: [mp::ArrayProxy<f64>, mp::dummy::ArrayProxy<f64>],
    {
        plain {
            len() -> usize;
            is_empty() -> bool;
            get(usize) -> f64;
            set(usize, f64) -> ();
            to_vec() -> Vec<f64>;
        }
        fallible {}
    }
}

// Values and arrays given a lock (`lock=some_lock`): the same methods for
// either kind of lock, in both worlds; `get_lock()` returns the lock given.
same_signatures! {
    exact: [mp::Value<i64, mp::Lock>, mp::dummy::Value<i64, mp::dummy::Lock>],
    wrapped: [],
    {
        plain {
            get() -> i64;
            set(i64) -> ();
        }
        fallible {}
    }
}

same_signatures! {
    exact: [mp::Array<f64, mp::Lock>, mp::dummy::Array<f64, mp::dummy::Lock>],
    wrapped: [],
    {
        plain {
            len() -> usize;
            is_empty() -> bool;
            get(usize) -> f64;
            set(usize, f64) -> ();
            to_vec() -> Vec<f64>;
        }
        fallible {}
    }
}

const _: () = {
    use mp::dummy as d;
    let _: fn(i64, mp::Lock) -> mp::Result<mp::Value<i64, mp::Lock>> = mp::Value::with_lock;
    let _: fn(i64, d::Lock) -> mp::Result<d::Value<i64, d::Lock>> = d::Value::with_lock;
    let _: fn(usize, mp::RLock) -> mp::Result<mp::Array<f64, mp::RLock>> = mp::Array::with_lock;
    let _: fn(usize, d::RLock) -> mp::Result<d::Array<f64, d::RLock>> = d::Array::with_lock;
    let _: fn(&mp::Value<i64, mp::Lock>) -> mp::Lock = mp::Value::get_lock;
    let _: fn(&d::Value<i64, d::Lock>) -> d::Lock = d::Value::get_lock;
    let _: fn(&mp::Array<f64>) -> mp::RLock = mp::Array::get_lock;
    let _: fn(&d::Array<f64>) -> d::RLock = d::Array::get_lock;
    let _: for<'a> fn(&'a mp::Array<f64, mp::Lock>) -> mp::ArrayGuard<'a, f64, mp::Lock> =
        mp::Array::lock;
    let _: for<'a> fn(&'a d::Array<f64, d::Lock>) -> d::ArrayGuard<'a, f64, d::Lock> =
        d::Array::lock;
    let _: for<'a> fn(&'a mp::Value<i64, mp::RLock>) -> mp::ValueGuard<'a, i64, mp::RLock> =
        mp::Value::lock;
    let _: for<'a> fn(&'a d::Value<i64, d::RLock>) -> d::ValueGuard<'a, i64, d::RLock> =
        d::Value::lock;
};

// The factories: the same argument types for the same Python call.
const _: () = {
    let _: fn() -> mp::Result<mp::Lock> = mp::Lock::new;
    let _: fn(&mp::Manager) -> mp::Result<mp::LockProxy> = mp::Manager::lock;
    let _: fn() -> mp::Result<mp::RLock> = mp::RLock::new;
    let _: fn(&mp::Manager) -> mp::Result<mp::RLockProxy> = mp::Manager::rlock;
    let _: fn(u32) -> mp::Result<mp::Semaphore> = mp::Semaphore::new;
    let _: fn(&mp::Manager, u32) -> mp::Result<mp::SemaphoreProxy> = mp::Manager::semaphore;
    let _: fn(u32) -> mp::Result<mp::BoundedSemaphore> = mp::BoundedSemaphore::new;
    let _: fn(&mp::Manager, u32) -> mp::Result<mp::BoundedSemaphoreProxy> =
        mp::Manager::bounded_semaphore;
    let _: fn() -> mp::Result<mp::Event> = mp::Event::new;
    let _: fn(&mp::Manager) -> mp::Result<mp::EventProxy> = mp::Manager::event;
    let _: fn() -> mp::Result<mp::Condition> = mp::Condition::new;
    let _: fn(&mp::Manager) -> mp::Result<mp::ConditionProxy> = mp::Manager::condition;
    let _: fn(usize) -> mp::Result<mp::Barrier> = mp::Barrier::new;
    let _: fn(&mp::Manager, usize) -> mp::Result<mp::BarrierProxy> = mp::Manager::barrier;
    let _: fn(usize) -> mp::Result<mp::Queue<u8>> = mp::Queue::with_maxsize;
    let _: fn(&mp::Manager, usize) -> mp::Result<mp::QueueProxy<u8>> =
        mp::Manager::queue_with_maxsize;
    let _: fn(usize) -> mp::Result<mp::JoinableQueue<u8>> = mp::JoinableQueue::with_maxsize;
    let _: fn(&mp::Manager, usize) -> mp::Result<mp::JoinableQueueProxy<u8>> =
        mp::Manager::joinable_queue_with_maxsize;
    let _: fn(usize) -> mp::Result<mp::Pool> = mp::Pool::new;
    let _: fn(&mp::Manager, usize) -> mp::Result<mp::PoolProxy> = mp::Manager::pool;
    // Beyond one machine (docs/cluster.md).
    let _: fn(mp::PoolBuilder) -> mp::Result<mp::Pool> = mp::PoolBuilder::cluster;
    let _ = |b: mp::PoolBuilder| -> mp::Result<mp::Pool> { b.listen("0.0.0.0:0", b"key") };
    let _: fn(&mp::Pool) -> Option<std::net::SocketAddr> = mp::Pool::listen_address;
    let _: fn() -> Option<mp::cluster::Rank> = mp::cluster::rank;
};

// The same factories in `mp::dummy`: the same argument types as in `mp`.
const _: () = {
    use mp::dummy as d;
    let _: fn() -> mp::Result<d::Lock> = d::Lock::new;
    let _: fn(&d::Manager) -> mp::Result<d::LockProxy> = d::Manager::lock;
    let _: fn() -> mp::Result<d::RLock> = d::RLock::new;
    let _: fn(&d::Manager) -> mp::Result<d::RLockProxy> = d::Manager::rlock;
    let _: fn(u32) -> mp::Result<d::Semaphore> = d::Semaphore::new;
    let _: fn(&d::Manager, u32) -> mp::Result<d::SemaphoreProxy> = d::Manager::semaphore;
    let _: fn(u32) -> mp::Result<d::BoundedSemaphore> = d::BoundedSemaphore::new;
    let _: fn(&d::Manager, u32) -> mp::Result<d::BoundedSemaphoreProxy> =
        d::Manager::bounded_semaphore;
    let _: fn() -> mp::Result<d::Event> = d::Event::new;
    let _: fn(&d::Manager) -> mp::Result<d::EventProxy> = d::Manager::event;
    let _: fn() -> mp::Result<d::Condition> = d::Condition::new;
    let _: fn(&d::Manager) -> mp::Result<d::ConditionProxy> = d::Manager::condition;
    let _: fn(usize) -> mp::Result<d::Barrier> = d::Barrier::new;
    let _: fn(&d::Manager, usize) -> mp::Result<d::BarrierProxy> = d::Manager::barrier;
    let _: fn(usize) -> mp::Result<d::Queue<u8>> = d::Queue::with_maxsize;
    let _: fn(&d::Manager, usize) -> mp::Result<d::QueueProxy<u8>> = d::Manager::queue_with_maxsize;
    let _: fn(usize) -> mp::Result<d::JoinableQueue<u8>> = d::JoinableQueue::with_maxsize;
    let _: fn(&d::Manager, usize) -> mp::Result<d::JoinableQueueProxy<u8>> =
        d::Manager::joinable_queue_with_maxsize;
    let _: fn(usize) -> mp::Result<d::Pool> = d::Pool::new;
    let _: fn(&d::Manager, usize) -> mp::Result<d::PoolProxy> = d::Manager::pool;
    let _: fn(d::PoolBuilder) -> mp::Result<d::Pool> = d::PoolBuilder::cluster;
};

// concurrent.futures: `mp::futures` (processes) and its thread twin
// `mp::dummy::futures` (Python's `ThreadPoolExecutor`, also named
// `ProcessPoolExecutor` there): the same methods with the same signatures.
same_signatures! {
    exact: [mp::futures::Future<i64>, mp::dummy::futures::Future<i64>],
    wrapped: [],
    {
        plain {
            done() -> bool;
            running() -> bool;
            cancel() -> bool;
            cancel_running() -> bool;
            cancelled() -> bool;
        }
        fallible {
            result() -> mp::Result<i64>;
            result_timeout(Duration) -> mp::Result<i64>;
        }
    }
}

same_signatures! {
    exact: [mp::futures::ProcessPoolExecutor, mp::dummy::futures::ProcessPoolExecutor],
    wrapped: [],
    {
        plain {
            max_workers() -> usize;
            worker_pids() -> Vec<u32>;
            shutdown(bool, bool) -> ();
            terminate_workers() -> ();
        }
        fallible {}
    }
}

/// The generic and builder parts of one `futures` module, checked with the
/// same signatures (a task is a plain `fn`, which both accept).
macro_rules! executor_signatures {
    ($($m:ident)::+) => {
        const _: () = {
            use $($m)::+ as x;
            type Ex = x::ProcessPoolExecutor;
            type Task = fn(i64) -> i64;
            let _: fn(usize) -> mp::Result<Ex> = Ex::new;
            let _: fn() -> x::ExecutorBuilder = Ex::builder;
            let _: fn(x::ExecutorBuilder, usize) -> x::ExecutorBuilder =
                x::ExecutorBuilder::max_workers;
            let _: fn(x::ExecutorBuilder, fn(u8), u8) -> x::ExecutorBuilder =
                x::ExecutorBuilder::initializer::<fn(u8), u8, ()>;
            let _: fn(x::ExecutorBuilder, usize) -> x::ExecutorBuilder =
                x::ExecutorBuilder::max_tasks_per_child;
            let _: fn(x::ExecutorBuilder, u64) -> x::ExecutorBuilder =
                x::ExecutorBuilder::max_memory_per_child;
            let _: fn(x::ExecutorBuilder, Duration) -> x::ExecutorBuilder =
                x::ExecutorBuilder::task_timeout;
            let _: fn(x::ExecutorBuilder) -> mp::Result<Ex> = x::ExecutorBuilder::build;
            let _: fn(&Ex, Task, i64) -> mp::Result<x::Future<i64>> =
                Ex::submit::<Task, i64, i64>;
            let _: fn(&Ex, Task, i64, Duration) -> mp::Result<x::Future<i64>> =
                Ex::submit_with_timeout::<Task, i64, i64>;
            let _: fn(&Ex, Task, Vec<i64>) -> mp::Result<x::MapIter<i64>> =
                Ex::map::<Task, i64, i64, Vec<i64>>;
            let _: fn(&Ex, Task, Vec<i64>, mp::futures::MapOptions) -> mp::Result<x::MapIter<i64>> =
                Ex::map_with::<Task, i64, i64, Vec<i64>>;
            let _: fn(
                Vec<&'static x::Future<i64>>,
                Option<Duration>,
                mp::futures::ReturnWhen,
            ) -> x::DoneAndNotDone<'static, i64> = x::wait;
            let _: fn(Vec<&'static x::Future<i64>>, Option<Duration>) -> x::AsCompleted<'static, i64> =
                x::as_completed;
            let _: fn() -> bool = x::cancel_requested;
        };
    };
}

executor_signatures!(mp::futures);
executor_signatures!(mp::dummy::futures);

// `MapOptions` and `ReturnWhen` are the very same types in both.
const _: () = {
    fn same<T>(t: T) -> T {
        t
    }
    let _: fn(mp::futures::MapOptions) -> mp::dummy::futures::MapOptions = same;
    let _: fn(mp::futures::ReturnWhen) -> mp::dummy::futures::ReturnWhen = same;
};

// The guards: `with lock:` is `lock()` on both; the proxy's is a `Result`.
const _: () = {
    let _: for<'a> fn(&'a mp::Lock) -> mp::LockGuard<'a> = mp::Lock::lock;
    let _: for<'a> fn(&'a mp::LockProxy) -> mp::Result<mp::ProxyGuard<'a>> = mp::LockProxy::lock;
    let _: for<'a> fn(&'a mp::RLock) -> mp::RLockGuard<'a> = mp::RLock::lock;
    let _: for<'a> fn(&'a mp::RLockProxy) -> mp::Result<mp::ProxyGuard<'a>> = mp::RLockProxy::lock;
    let _: for<'a> fn(&'a mp::Condition) -> mp::RLockGuard<'a> = mp::Condition::lock;
    let _: for<'a> fn(&'a mp::ConditionProxy) -> mp::Result<mp::ProxyGuard<'a>> =
        mp::ConditionProxy::lock;
    use mp::dummy as d;
    let _: for<'a> fn(&'a d::Lock) -> d::LockGuard<'a> = d::Lock::lock;
    let _: for<'a> fn(&'a d::LockProxy) -> mp::Result<d::ProxyGuard<'a>> = d::LockProxy::lock;
    let _: for<'a> fn(&'a d::RLock) -> d::RLockGuard<'a> = d::RLock::lock;
    let _: for<'a> fn(&'a d::RLockProxy) -> mp::Result<d::ProxyGuard<'a>> = d::RLockProxy::lock;
    let _: for<'a> fn(&'a d::Condition) -> d::RLockGuard<'a> = d::Condition::lock;
    let _: for<'a> fn(&'a d::ConditionProxy) -> mp::Result<d::ProxyGuard<'a>> =
        d::ConditionProxy::lock;
};

// ---------------------------------------------------------------------------
// One shape for both: `T` and `mp::Result<T>` become `mp::Result<T>`

/// A method's return value as a `Result`: a local type's plain value is `Ok`.
trait Ret {
    /// The value inside.
    type Out;
    /// The value as a `Result`.
    fn ret(self) -> mp::Result<Self::Out>;
}

impl<T> Ret for mp::Result<T> {
    type Out = T;
    fn ret(self) -> mp::Result<T> {
        self
    }
}

/// `Ret` for plain values: they cannot fail.
macro_rules! plain_ret {
    ($($t:ty),*) => {$(
        impl Ret for $t {
            type Out = $t;
            fn ret(self) -> mp::Result<$t> {
                Ok(self)
            }
        }
    )*};
}
plain_ret!((), bool, u32, usize, i64, f64, Vec<f64>);

impl<'a> Ret for mp::LockGuard<'a> {
    type Out = mp::LockGuard<'a>;
    fn ret(self) -> mp::Result<Self> {
        Ok(self)
    }
}

impl<'a> Ret for mp::RLockGuard<'a> {
    type Out = mp::RLockGuard<'a>;
    fn ret(self) -> mp::Result<Self> {
        Ok(self)
    }
}

impl<'a> Ret for mp::dummy::LockGuard<'a> {
    type Out = mp::dummy::LockGuard<'a>;
    fn ret(self) -> mp::Result<Self> {
        Ok(self)
    }
}

impl<'a> Ret for mp::dummy::RLockGuard<'a> {
    type Out = mp::dummy::RLockGuard<'a>;
    fn ret(self) -> mp::Result<Self> {
        Ok(self)
    }
}

// ---------------------------------------------------------------------------
// The behaviour each implementation offers, in that one shape

/// Something passed to the other party of a scenario.
trait Shared: Clone + Send + 'static {}
impl<T: Clone + Send + 'static> Shared for T {}

/// Lock, RLock, Semaphore, BoundedSemaphore, Condition.
trait Acquirer: Shared {
    fn acquire(&self) -> mp::Result<()>;
    fn try_acquire(&self) -> mp::Result<bool>;
    fn acquire_timeout(&self, timeout: Duration) -> mp::Result<bool>;
    fn release(&self) -> mp::Result<()>;
    /// Runs `f` holding the `lock()` guard.
    fn locked<R>(&self, f: impl FnOnce() -> R) -> mp::Result<R>;
}

/// Semaphore and BoundedSemaphore.
trait Counting: Acquirer {
    fn get_value(&self) -> mp::Result<u32>;
}

trait EventApi: Shared {
    fn set(&self) -> mp::Result<()>;
    fn clear(&self) -> mp::Result<()>;
    fn is_set(&self) -> mp::Result<bool>;
    fn wait(&self) -> mp::Result<()>;
    fn wait_timeout(&self, timeout: Duration) -> mp::Result<bool>;
}

trait ConditionApi: Acquirer {
    fn wait(&self) -> mp::Result<bool>;
    fn wait_timeout(&self, timeout: Duration) -> mp::Result<bool>;
    fn wait_for(&self, predicate: impl FnMut() -> bool) -> mp::Result<bool>;
    fn wait_for_timeout(
        &self,
        predicate: impl FnMut() -> bool,
        timeout: Duration,
    ) -> mp::Result<bool>;
    fn notify(&self) -> mp::Result<()>;
    fn notify_n(&self, n: usize) -> mp::Result<()>;
    fn notify_all(&self) -> mp::Result<()>;
}

trait BarrierApi: Shared {
    fn wait(&self) -> mp::Result<usize>;
    fn wait_timeout(&self, timeout: Duration) -> mp::Result<usize>;
    fn abort(&self) -> mp::Result<()>;
    fn reset(&self) -> mp::Result<()>;
    fn parties(&self) -> mp::Result<usize>;
    fn n_waiting(&self) -> mp::Result<usize>;
    fn is_broken(&self) -> mp::Result<bool>;
}

/// Queue and JoinableQueue of `u32`.
trait QueueApi: Shared {
    fn put(&self, x: u32) -> mp::Result<()>;
    fn put_timeout(&self, x: u32, timeout: Duration) -> mp::Result<()>;
    fn put_nowait(&self, x: u32) -> mp::Result<()>;
    fn get(&self) -> mp::Result<u32>;
    fn get_timeout(&self, timeout: Duration) -> mp::Result<u32>;
    fn get_nowait(&self) -> mp::Result<u32>;
    fn qsize(&self) -> mp::Result<usize>;
    fn empty(&self) -> mp::Result<bool>;
    fn full(&self) -> mp::Result<bool>;
}

trait JoinableApi: QueueApi {
    fn task_done(&self) -> mp::Result<()>;
    fn join(&self) -> mp::Result<()>;
    fn join_timeout(&self, timeout: Duration) -> mp::Result<bool>;
}

trait ValueApi: Shared {
    fn get(&self) -> mp::Result<i64>;
    fn set(&self, x: i64) -> mp::Result<()>;
}

trait ArrayApi: Shared {
    fn len(&self) -> mp::Result<usize>;
    fn get(&self, i: usize) -> mp::Result<f64>;
    fn set(&self, i: usize, x: f64) -> mp::Result<()>;
    fn to_vec(&self) -> mp::Result<Vec<f64>>;
}

/// Forwards each listed method of a trait to the type's own method of the
/// same name, through `Ret`.
macro_rules! forward {
    ($tr:ident for $t:ty { $(fn $m:ident(&self $(, $a:ident: $at:ty)*) -> $r:ty;)* }) => {
        impl $tr for $t {
            $(fn $m(&self $(, $a: $at)*) -> $r {
                <$t>::$m(self $(, $a)*).ret()
            })*
        }
    };
}

macro_rules! acquirer {
    ($($t:ty),*) => {$(
        impl Acquirer for $t {
            fn acquire(&self) -> mp::Result<()> {
                <$t>::acquire(self).ret()
            }
            fn try_acquire(&self) -> mp::Result<bool> {
                <$t>::try_acquire(self).ret()
            }
            fn acquire_timeout(&self, timeout: Duration) -> mp::Result<bool> {
                <$t>::acquire_timeout(self, timeout).ret()
            }
            fn release(&self) -> mp::Result<()> {
                <$t>::release(self).ret()
            }
            fn locked<R>(&self, f: impl FnOnce() -> R) -> mp::Result<R> {
                let _guard = <$t>::lock(self).ret()?;
                Ok(f())
            }
        }
    )*};
}

/// `Acquirer` for the semaphores (which have no `lock()` guard locally).
macro_rules! semaphore {
    ($($t:ty),*) => {$(
        impl Acquirer for $t {
            fn acquire(&self) -> mp::Result<()> {
                <$t>::acquire(self).ret()
            }
            fn try_acquire(&self) -> mp::Result<bool> {
                <$t>::try_acquire(self).ret()
            }
            fn acquire_timeout(&self, timeout: Duration) -> mp::Result<bool> {
                <$t>::acquire_timeout(self, timeout).ret()
            }
            fn release(&self) -> mp::Result<()> {
                <$t>::release(self).ret()
            }
            fn locked<R>(&self, f: impl FnOnce() -> R) -> mp::Result<R> {
                Acquirer::acquire(self)?;
                let r = f();
                Acquirer::release(self)?;
                Ok(r)
            }
        }
        forward!(Counting for $t { fn get_value(&self) -> mp::Result<u32>; });
    )*};
}

macro_rules! condition {
    ($($t:ty),*) => {$(
        impl ConditionApi for $t {
            fn wait(&self) -> mp::Result<bool> {
                <$t>::wait(self)
            }
            fn wait_timeout(&self, timeout: Duration) -> mp::Result<bool> {
                <$t>::wait_timeout(self, timeout)
            }
            fn wait_for(&self, predicate: impl FnMut() -> bool) -> mp::Result<bool> {
                <$t>::wait_for(self, predicate)
            }
            fn wait_for_timeout(
                &self,
                predicate: impl FnMut() -> bool,
                timeout: Duration,
            ) -> mp::Result<bool> {
                <$t>::wait_for_timeout(self, predicate, timeout)
            }
            fn notify(&self) -> mp::Result<()> {
                <$t>::notify(self)
            }
            fn notify_n(&self, n: usize) -> mp::Result<()> {
                <$t>::notify_n(self, n)
            }
            fn notify_all(&self) -> mp::Result<()> {
                <$t>::notify_all(self)
            }
        }
    )*};
}

/// Every trait for one implementation's types.
macro_rules! implementation {
    (
        lock: $lock:ty, rlock: $rlock:ty, semaphores: [$($sem:ty),*], condition: $cond:ty,
        event: $event:ty, barrier: $barrier:ty, queue: $queue:ty, joinable: $jq:ty,
        value: $value:ty, array: $array:ty $(,)?
    ) => {
        acquirer!($lock, $rlock, $cond);
        semaphore!($($sem),*);
        condition!($cond);
        forward!(EventApi for $event {
            fn set(&self) -> mp::Result<()>;
            fn clear(&self) -> mp::Result<()>;
            fn is_set(&self) -> mp::Result<bool>;
            fn wait(&self) -> mp::Result<()>;
            fn wait_timeout(&self, timeout: Duration) -> mp::Result<bool>;
        });
        forward!(BarrierApi for $barrier {
            fn wait(&self) -> mp::Result<usize>;
            fn wait_timeout(&self, timeout: Duration) -> mp::Result<usize>;
            fn abort(&self) -> mp::Result<()>;
            fn reset(&self) -> mp::Result<()>;
            fn parties(&self) -> mp::Result<usize>;
            fn n_waiting(&self) -> mp::Result<usize>;
            fn is_broken(&self) -> mp::Result<bool>;
        });
        queue!($queue, $jq);
        forward!(JoinableApi for $jq {
            fn task_done(&self) -> mp::Result<()>;
            fn join(&self) -> mp::Result<()>;
            fn join_timeout(&self, timeout: Duration) -> mp::Result<bool>;
        });
        forward!(ValueApi for $value {
            fn get(&self) -> mp::Result<i64>;
            fn set(&self, x: i64) -> mp::Result<()>;
        });
        forward!(ArrayApi for $array {
            fn len(&self) -> mp::Result<usize>;
            fn get(&self, i: usize) -> mp::Result<f64>;
            fn set(&self, i: usize, x: f64) -> mp::Result<()>;
            fn to_vec(&self) -> mp::Result<Vec<f64>>;
        });
    };
}

macro_rules! queue {
    ($($t:ty),*) => {$(
        forward!(QueueApi for $t {
            fn put(&self, x: u32) -> mp::Result<()>;
            fn put_timeout(&self, x: u32, timeout: Duration) -> mp::Result<()>;
            fn put_nowait(&self, x: u32) -> mp::Result<()>;
            fn get(&self) -> mp::Result<u32>;
            fn get_timeout(&self, timeout: Duration) -> mp::Result<u32>;
            fn get_nowait(&self) -> mp::Result<u32>;
            fn qsize(&self) -> mp::Result<usize>;
            fn empty(&self) -> mp::Result<bool>;
            fn full(&self) -> mp::Result<bool>;
        });
    )*};
}

implementation! {
    lock: mp::Lock, rlock: mp::RLock, semaphores: [mp::Semaphore, mp::BoundedSemaphore],
    condition: mp::Condition, event: mp::Event, barrier: mp::Barrier,
    queue: mp::Queue<u32>, joinable: mp::JoinableQueue<u32>, value: mp::Value<i64>,
    array: mp::Array<f64>,
}

implementation! {
    lock: mp::LockProxy, rlock: mp::RLockProxy,
    semaphores: [mp::SemaphoreProxy, mp::BoundedSemaphoreProxy],
    condition: mp::ConditionProxy, event: mp::EventProxy, barrier: mp::BarrierProxy,
    queue: mp::QueueProxy<u32>, joinable: mp::JoinableQueueProxy<u32>,
    value: mp::ValueProxy<i64>, array: mp::ArrayProxy<f64>,
}

implementation! {
    lock: mp::dummy::Lock, rlock: mp::dummy::RLock,
    semaphores: [mp::dummy::Semaphore, mp::dummy::BoundedSemaphore],
    condition: mp::dummy::Condition, event: mp::dummy::Event, barrier: mp::dummy::Barrier,
    queue: mp::dummy::Queue<u32>, joinable: mp::dummy::JoinableQueue<u32>,
    value: mp::dummy::Value<i64>, array: mp::dummy::Array<f64>,
}

implementation! {
    lock: mp::dummy::LockProxy, rlock: mp::dummy::RLockProxy,
    semaphores: [mp::dummy::SemaphoreProxy, mp::dummy::BoundedSemaphoreProxy],
    condition: mp::dummy::ConditionProxy, event: mp::dummy::EventProxy,
    barrier: mp::dummy::BarrierProxy, queue: mp::dummy::QueueProxy<u32>,
    joinable: mp::dummy::JoinableQueueProxy<u32>, value: mp::dummy::ValueProxy<i64>,
    array: mp::dummy::ArrayProxy<f64>,
}

// ---------------------------------------------------------------------------
// Kits: one implementation's factories, and how it starts the other party

/// A factory of one implementation's types (Python's `multiprocessing`
/// module, a `Manager`, or `multiprocessing.dummy`).
trait Kit {
    type Lock: Acquirer;
    type RLock: Acquirer;
    type Semaphore: Counting;
    type BoundedSemaphore: Counting;
    type Event: EventApi;
    type Condition: ConditionApi;
    type Barrier: BarrierApi;
    type Queue: QueueApi;
    type JoinableQueue: JoinableApi;
    type Value: ValueApi;
    type Array: ArrayApi;
    fn lock(&self) -> mp::Result<Self::Lock>;
    fn rlock(&self) -> mp::Result<Self::RLock>;
    fn semaphore(&self, value: u32) -> mp::Result<Self::Semaphore>;
    fn bounded_semaphore(&self, value: u32) -> mp::Result<Self::BoundedSemaphore>;
    fn event(&self) -> mp::Result<Self::Event>;
    fn condition(&self) -> mp::Result<Self::Condition>;
    fn barrier(&self, parties: usize) -> mp::Result<Self::Barrier>;
    fn queue(&self, maxsize: usize) -> mp::Result<Self::Queue>;
    fn joinable_queue(&self, maxsize: usize) -> mp::Result<Self::JoinableQueue>;
    fn value(&self, x: i64) -> mp::Result<Self::Value>;
    fn array(&self, items: &[f64]) -> mp::Result<Self::Array>;
}

/// Starts the other party of a scenario (a process; a thread for a
/// thread-backed kit), running `f(arg)`; `f` asserts and panics on failure.
trait Spawn<A> {
    fn spawn<F: Fn(A) + Copy + Send + 'static>(&self, f: F, arg: A) -> Party;
}

/// The other party: joining it says whether its assertions held.
struct Party(Box<dyn FnOnce() -> Result<(), String>>);

impl Party {
    /// Joins it; fails the test if it failed.
    fn joined(self) {
        if let Err(e) = (self.0)() {
            panic!("the other party failed: {e}");
        }
    }
}

/// `Spawn` for the kits whose objects cross to a child process.
fn spawn_process<A, F>(f: F, arg: A) -> Party
where
    A: Serialize + DeserializeOwned + Send + 'static,
    F: Fn(A) + Copy + Send + 'static,
{
    let mut p = mp::Process::new(f, arg);
    p.start().expect("start the other party");
    Party(Box::new(move || {
        p.join().map_err(|e| e.to_string())?;
        match p.exitcode() {
            Some(0) => Ok(()),
            code => Err(format!("the child exited with {code:?}")),
        }
    }))
}

/// The crate's own types: OS shared memory.
struct Local;

impl Kit for Local {
    type Lock = mp::Lock;
    type RLock = mp::RLock;
    type Semaphore = mp::Semaphore;
    type BoundedSemaphore = mp::BoundedSemaphore;
    type Event = mp::Event;
    type Condition = mp::Condition;
    type Barrier = mp::Barrier;
    type Queue = mp::Queue<u32>;
    type JoinableQueue = mp::JoinableQueue<u32>;
    type Value = mp::Value<i64>;
    type Array = mp::Array<f64>;
    fn lock(&self) -> mp::Result<mp::Lock> {
        mp::Lock::new()
    }
    fn rlock(&self) -> mp::Result<mp::RLock> {
        mp::RLock::new()
    }
    fn semaphore(&self, value: u32) -> mp::Result<mp::Semaphore> {
        mp::Semaphore::new(value)
    }
    fn bounded_semaphore(&self, value: u32) -> mp::Result<mp::BoundedSemaphore> {
        mp::BoundedSemaphore::new(value)
    }
    fn event(&self) -> mp::Result<mp::Event> {
        mp::Event::new()
    }
    fn condition(&self) -> mp::Result<mp::Condition> {
        mp::Condition::new()
    }
    fn barrier(&self, parties: usize) -> mp::Result<mp::Barrier> {
        mp::Barrier::new(parties)
    }
    fn queue(&self, maxsize: usize) -> mp::Result<mp::Queue<u32>> {
        mp::Queue::with_maxsize(maxsize)
    }
    fn joinable_queue(&self, maxsize: usize) -> mp::Result<mp::JoinableQueue<u32>> {
        mp::JoinableQueue::with_maxsize(maxsize)
    }
    fn value(&self, x: i64) -> mp::Result<mp::Value<i64>> {
        mp::Value::new(x)
    }
    fn array(&self, items: &[f64]) -> mp::Result<mp::Array<f64>> {
        mp::Array::from_slice(items)
    }
}

impl<A: Serialize + DeserializeOwned + Send + 'static> Spawn<A> for Local {
    fn spawn<F: Fn(A) + Copy + Send + 'static>(&self, f: F, arg: A) -> Party {
        spawn_process(f, arg)
    }
}

/// A manager's proxies; the manager lives as long as the kit.
struct Managed(mp::Manager);

impl Managed {
    fn new() -> Managed {
        Managed(mp::Manager::new().expect("start a manager"))
    }
}

impl Kit for Managed {
    type Lock = mp::LockProxy;
    type RLock = mp::RLockProxy;
    type Semaphore = mp::SemaphoreProxy;
    type BoundedSemaphore = mp::BoundedSemaphoreProxy;
    type Event = mp::EventProxy;
    type Condition = mp::ConditionProxy;
    type Barrier = mp::BarrierProxy;
    type Queue = mp::QueueProxy<u32>;
    type JoinableQueue = mp::JoinableQueueProxy<u32>;
    type Value = mp::ValueProxy<i64>;
    type Array = mp::ArrayProxy<f64>;
    fn lock(&self) -> mp::Result<mp::LockProxy> {
        self.0.lock()
    }
    fn rlock(&self) -> mp::Result<mp::RLockProxy> {
        self.0.rlock()
    }
    fn semaphore(&self, value: u32) -> mp::Result<mp::SemaphoreProxy> {
        self.0.semaphore(value)
    }
    fn bounded_semaphore(&self, value: u32) -> mp::Result<mp::BoundedSemaphoreProxy> {
        self.0.bounded_semaphore(value)
    }
    fn event(&self) -> mp::Result<mp::EventProxy> {
        self.0.event()
    }
    fn condition(&self) -> mp::Result<mp::ConditionProxy> {
        self.0.condition()
    }
    fn barrier(&self, parties: usize) -> mp::Result<mp::BarrierProxy> {
        self.0.barrier(parties)
    }
    fn queue(&self, maxsize: usize) -> mp::Result<mp::QueueProxy<u32>> {
        self.0.queue_with_maxsize(maxsize)
    }
    fn joinable_queue(&self, maxsize: usize) -> mp::Result<mp::JoinableQueueProxy<u32>> {
        self.0.joinable_queue_with_maxsize(maxsize)
    }
    fn value(&self, x: i64) -> mp::Result<mp::ValueProxy<i64>> {
        self.0.value(x)
    }
    fn array(&self, items: &[f64]) -> mp::Result<mp::ArrayProxy<f64>> {
        self.0.array(items.to_vec())
    }
}

impl<A: Serialize + DeserializeOwned + Send + 'static> Spawn<A> for Managed {
    fn spawn<F: Fn(A) + Copy + Send + 'static>(&self, f: F, arg: A) -> Party {
        spawn_process(f, arg)
    }
}

/// `Spawn` for the thread-backed kits: the other party is a
/// `mp::dummy::Process`, a thread of this process.
fn spawn_thread<A, F>(f: F, arg: A) -> Party
where
    A: Send + 'static,
    F: Fn(A) + Copy + Send + 'static,
{
    let mut p = mp::dummy::Process::new(f, arg);
    p.start().expect("start the other party");
    Party(Box::new(move || {
        p.join().map_err(|e| e.to_string())?;
        match p.exitcode() {
            Some(0) => Ok(()),
            code => Err(format!(
                "the thread exited with {code:?}: {:?}",
                p.panic_error()
            )),
        }
    }))
}

/// `mp::dummy`'s own types: one process's memory, shared by threads.
struct Threads;

impl Kit for Threads {
    type Lock = mp::dummy::Lock;
    type RLock = mp::dummy::RLock;
    type Semaphore = mp::dummy::Semaphore;
    type BoundedSemaphore = mp::dummy::BoundedSemaphore;
    type Event = mp::dummy::Event;
    type Condition = mp::dummy::Condition;
    type Barrier = mp::dummy::Barrier;
    type Queue = mp::dummy::Queue<u32>;
    type JoinableQueue = mp::dummy::JoinableQueue<u32>;
    type Value = mp::dummy::Value<i64>;
    type Array = mp::dummy::Array<f64>;
    fn lock(&self) -> mp::Result<mp::dummy::Lock> {
        mp::dummy::Lock::new()
    }
    fn rlock(&self) -> mp::Result<mp::dummy::RLock> {
        mp::dummy::RLock::new()
    }
    fn semaphore(&self, value: u32) -> mp::Result<mp::dummy::Semaphore> {
        mp::dummy::Semaphore::new(value)
    }
    fn bounded_semaphore(&self, value: u32) -> mp::Result<mp::dummy::BoundedSemaphore> {
        mp::dummy::BoundedSemaphore::new(value)
    }
    fn event(&self) -> mp::Result<mp::dummy::Event> {
        mp::dummy::Event::new()
    }
    fn condition(&self) -> mp::Result<mp::dummy::Condition> {
        mp::dummy::Condition::new()
    }
    fn barrier(&self, parties: usize) -> mp::Result<mp::dummy::Barrier> {
        mp::dummy::Barrier::new(parties)
    }
    fn queue(&self, maxsize: usize) -> mp::Result<mp::dummy::Queue<u32>> {
        mp::dummy::Queue::with_maxsize(maxsize)
    }
    fn joinable_queue(&self, maxsize: usize) -> mp::Result<mp::dummy::JoinableQueue<u32>> {
        mp::dummy::JoinableQueue::with_maxsize(maxsize)
    }
    fn value(&self, x: i64) -> mp::Result<mp::dummy::Value<i64>> {
        mp::dummy::Value::new(x)
    }
    fn array(&self, items: &[f64]) -> mp::Result<mp::dummy::Array<f64>> {
        mp::dummy::Array::from_slice(items)
    }
}

impl<A: Send + 'static> Spawn<A> for Threads {
    fn spawn<F: Fn(A) + Copy + Send + 'static>(&self, f: F, arg: A) -> Party {
        spawn_thread(f, arg)
    }
}

/// `mp::dummy`'s manager proxies; the manager lives as long as the kit.
struct ThreadManaged(mp::dummy::Manager);

impl ThreadManaged {
    fn new() -> ThreadManaged {
        ThreadManaged(mp::dummy::Manager::new().expect("start a dummy manager"))
    }
}

impl Kit for ThreadManaged {
    type Lock = mp::dummy::LockProxy;
    type RLock = mp::dummy::RLockProxy;
    type Semaphore = mp::dummy::SemaphoreProxy;
    type BoundedSemaphore = mp::dummy::BoundedSemaphoreProxy;
    type Event = mp::dummy::EventProxy;
    type Condition = mp::dummy::ConditionProxy;
    type Barrier = mp::dummy::BarrierProxy;
    type Queue = mp::dummy::QueueProxy<u32>;
    type JoinableQueue = mp::dummy::JoinableQueueProxy<u32>;
    type Value = mp::dummy::ValueProxy<i64>;
    type Array = mp::dummy::ArrayProxy<f64>;
    fn lock(&self) -> mp::Result<mp::dummy::LockProxy> {
        self.0.lock()
    }
    fn rlock(&self) -> mp::Result<mp::dummy::RLockProxy> {
        self.0.rlock()
    }
    fn semaphore(&self, value: u32) -> mp::Result<mp::dummy::SemaphoreProxy> {
        self.0.semaphore(value)
    }
    fn bounded_semaphore(&self, value: u32) -> mp::Result<mp::dummy::BoundedSemaphoreProxy> {
        self.0.bounded_semaphore(value)
    }
    fn event(&self) -> mp::Result<mp::dummy::EventProxy> {
        self.0.event()
    }
    fn condition(&self) -> mp::Result<mp::dummy::ConditionProxy> {
        self.0.condition()
    }
    fn barrier(&self, parties: usize) -> mp::Result<mp::dummy::BarrierProxy> {
        self.0.barrier(parties)
    }
    fn queue(&self, maxsize: usize) -> mp::Result<mp::dummy::QueueProxy<u32>> {
        self.0.queue_with_maxsize(maxsize)
    }
    fn joinable_queue(&self, maxsize: usize) -> mp::Result<mp::dummy::JoinableQueueProxy<u32>> {
        self.0.joinable_queue_with_maxsize(maxsize)
    }
    fn value(&self, x: i64) -> mp::Result<mp::dummy::ValueProxy<i64>> {
        self.0.value(x)
    }
    fn array(&self, items: &[f64]) -> mp::Result<mp::dummy::ArrayProxy<f64>> {
        self.0.array(items.to_vec())
    }
}

impl<A: Send + 'static> Spawn<A> for ThreadManaged {
    fn spawn<F: Fn(A) + Copy + Send + 'static>(&self, f: F, arg: A) -> Party {
        spawn_thread(f, arg)
    }
}

// ---------------------------------------------------------------------------
// The scenarios, written once

/// A wait that must run out: long enough to be a real wait, short enough
/// to keep the suite quick.
const BRIEF: Duration = Duration::from_millis(20);

/// Python's `_TestLock.test_lock`: acquire, re-acquire fails, release,
/// release again is an error; the guard releases on drop.
fn lock_acquire_release<K: Kit>(kit: &K) {
    let lock = kit.lock().unwrap();
    lock.acquire().unwrap();
    assert!(!lock.try_acquire().unwrap());
    assert!(!lock.acquire_timeout(BRIEF).unwrap());
    lock.release().unwrap();
    assert!(matches!(lock.release(), Err(mp::Error::Value(_))));
    let inside = lock.locked(|| lock.try_acquire().unwrap()).unwrap();
    assert!(!inside, "held inside the guard");
    assert!(lock.try_acquire().unwrap(), "released by the guard");
    lock.release().unwrap();
}

/// A `Lock` has no owner: another process may release it (CPython's
/// `_TestLock.test_lock` does so across threads; `TestSyncManagerTypes`).
fn lock_released_by_another_process<K: Kit + Spawn<K::Lock>>(kit: &K) {
    let lock = kit.lock().unwrap();
    lock.acquire().unwrap();
    kit.spawn(|l: K::Lock| l.release().unwrap(), lock.clone())
        .joined();
    assert!(lock.try_acquire().unwrap());
    lock.release().unwrap();
}

/// Python's `_TestLock.test_rlock`: recursive, owned by its holder; another
/// process neither takes nor releases it.
fn rlock_ownership<K: Kit + Spawn<K::RLock>>(kit: &K) {
    let r = kit.rlock().unwrap();
    r.acquire().unwrap();
    r.acquire().unwrap();
    assert!(r.try_acquire().unwrap());
    kit.spawn(
        |r: K::RLock| {
            assert!(!r.try_acquire().unwrap());
            assert!(matches!(r.release(), Err(mp::Error::Value(_))));
        },
        r.clone(),
    )
    .joined();
    for _ in 0..3 {
        r.release().unwrap();
    }
    assert!(matches!(r.release(), Err(mp::Error::Value(_))));
    kit.spawn(
        |r: K::RLock| {
            assert!(r.try_acquire().unwrap());
            r.release().unwrap();
        },
        r.clone(),
    )
    .joined();
}

/// Python's `_TestSemaphore.test_semaphore`, `test_bounded_semaphore`,
/// `test_timeout`.
fn semaphore_bounds<K: Kit>(kit: &K) {
    let s = kit.semaphore(2).unwrap();
    assert_eq!(s.get_value().unwrap(), 2);
    s.acquire().unwrap();
    assert!(s.try_acquire().unwrap());
    assert_eq!(s.get_value().unwrap(), 0);
    assert!(!s.try_acquire().unwrap());
    assert!(!s.acquire_timeout(BRIEF).unwrap());
    for _ in 0..3 {
        s.release().unwrap();
    }
    assert_eq!(
        s.get_value().unwrap(),
        3,
        "a plain Semaphore goes past its start"
    );
    let b = kit.bounded_semaphore(1).unwrap();
    b.acquire().unwrap();
    assert_eq!(b.get_value().unwrap(), 0);
    b.release().unwrap();
    assert!(matches!(b.release(), Err(mp::Error::Value(_))));
    assert_eq!(b.get_value().unwrap(), 1);
    assert_eq!(b.locked(|| b.get_value().unwrap()).unwrap(), 0);
    assert_eq!(b.get_value().unwrap(), 1);
}

/// A semaphore counts across processes: a child's acquire is seen here.
fn semaphore_across_processes<K: Kit + Spawn<K::Semaphore>>(kit: &K) {
    let s = kit.semaphore(1).unwrap();
    kit.spawn(|s: K::Semaphore| s.acquire().unwrap(), s.clone())
        .joined();
    assert_eq!(s.get_value().unwrap(), 0);
    assert!(!s.try_acquire().unwrap());
    s.release().unwrap();
    assert!(s.try_acquire().unwrap());
}

/// Python's `_TestEvent.test_event`: set/clear/is_set, a wait that times
/// out, and a waiter woken by another process's `set`.
fn event_wait_timeout<K: Kit + Spawn<K::Event>>(kit: &K) {
    let e = kit.event().unwrap();
    assert!(!e.is_set().unwrap());
    assert!(!e.wait_timeout(BRIEF).unwrap());
    e.set().unwrap();
    assert!(e.is_set().unwrap());
    e.wait().unwrap();
    assert!(e.wait_timeout(BRIEF).unwrap());
    e.clear().unwrap();
    assert!(!e.is_set().unwrap());
    let child = kit.spawn(|e: K::Event| e.set().unwrap(), e.clone());
    e.wait().unwrap();
    assert!(e.is_set().unwrap());
    child.joined();
}

/// Python's `_TestCondition.test_waitfor` and the lock rules of `wait` and
/// `notify`: a child changes a shared value and notifies; the parent's
/// `wait_for` sees it.
fn condition_wait_notify<K>(kit: &K)
where
    K: Kit + Spawn<(K::Condition, K::Value)>,
{
    let c = kit.condition().unwrap();
    assert!(matches!(c.wait(), Err(mp::Error::Value(_))), "not held");
    assert!(matches!(c.wait_timeout(BRIEF), Err(mp::Error::Value(_))));
    assert!(matches!(c.wait_for(|| false), Err(mp::Error::Value(_))));
    assert!(
        c.wait_for(|| true).unwrap(),
        "true at once: no wait, no lock"
    );
    assert!(matches!(c.notify(), Err(mp::Error::Value(_))));
    assert!(matches!(c.notify_n(2), Err(mp::Error::Value(_))));
    assert!(matches!(c.notify_all(), Err(mp::Error::Value(_))));

    c.acquire().unwrap();
    assert!(!c.wait_timeout(BRIEF).unwrap(), "nobody notifies");
    assert!(!c.wait_for_timeout(|| false, BRIEF).unwrap());
    c.notify().unwrap();
    c.notify_n(3).unwrap();
    c.notify_all().unwrap();

    let v = kit.value(0).unwrap();
    let child = kit.spawn(
        |(c, v): (K::Condition, K::Value)| {
            for i in 1..=3 {
                c.acquire().unwrap();
                v.set(i).unwrap();
                c.notify().unwrap();
                c.release().unwrap();
            }
        },
        (c.clone(), v.clone()),
    );
    // Held since before the child started: it cannot set anything until
    // this wait releases the lock.
    assert!(c.wait_for(|| v.get().unwrap() == 3).unwrap());
    assert_eq!(v.get().unwrap(), 3);
    c.release().unwrap();
    child.joined();
}

/// A child waits in `wait` until the parent notifies (predicate loop: a
/// notify before the child waits is not lost).
fn condition_notify_wakes_a_waiter<K>(kit: &K)
where
    K: Kit + Spawn<(K::Condition, K::Value)>,
{
    let c = kit.condition().unwrap();
    let v = kit.value(0).unwrap();
    let child = kit.spawn(
        |(c, v): (K::Condition, K::Value)| {
            c.acquire().unwrap();
            while v.get().unwrap() == 0 {
                assert!(c.wait().unwrap(), "wait() returns true");
            }
            v.set(2).unwrap();
            c.notify_all().unwrap();
            c.release().unwrap();
        },
        (c.clone(), v.clone()),
    );
    c.locked(|| {
        v.set(1).unwrap();
        c.notify().unwrap();
    })
    .unwrap();
    c.locked(|| assert!(c.wait_for(|| v.get().unwrap() == 2).unwrap()))
        .unwrap();
    child.joined();
}

/// Python's `_TestBarrier.test_barrier`, `test_abort`, `test_reset`,
/// `test_timeout`: two parties get distinct indexes; abort and a timeout
/// break it; reset mends it.
fn barrier_parties_abort_broken<K>(kit: &K)
where
    K: Kit + Spawn<(K::Barrier, K::Value)>,
{
    assert!(matches!(kit.barrier(0), Err(mp::Error::Value(_))));
    let one = kit.barrier(1).unwrap();
    assert_eq!(one.wait().unwrap(), 0);

    let b = kit.barrier(2).unwrap();
    assert_eq!(b.parties().unwrap(), 2);
    assert_eq!(b.n_waiting().unwrap(), 0);
    assert!(!b.is_broken().unwrap());
    let index = kit.value(-1).unwrap();
    let child = kit.spawn(
        |(b, index): (K::Barrier, K::Value)| {
            let i = b.wait().unwrap();
            index.set(i as i64).unwrap();
        },
        (b.clone(), index.clone()),
    );
    let mine = b.wait().unwrap();
    child.joined();
    let both: BTreeSet<i64> = [mine as i64, index.get().unwrap()].into();
    assert_eq!(both, BTreeSet::from([0, 1]));

    b.abort().unwrap();
    assert!(b.is_broken().unwrap());
    assert!(matches!(b.wait(), Err(mp::Error::BrokenBarrier)));
    b.reset().unwrap();
    assert!(!b.is_broken().unwrap());
    assert!(matches!(
        b.wait_timeout(BRIEF),
        Err(mp::Error::BrokenBarrier)
    ));
    assert!(b.is_broken().unwrap(), "a timeout breaks it");
    b.reset().unwrap();
    assert_eq!(b.n_waiting().unwrap(), 0);
}

/// Python's `_TestQueue.test_put`, `test_get`, `test_qsize`: bounds give
/// `Full`, an empty queue `Empty`, order is kept, items cross processes.
fn queue_put_get_full_empty<K: Kit + Spawn<K::Queue>>(kit: &K) {
    let q = kit.queue(2).unwrap();
    assert!(q.empty().unwrap());
    assert_eq!(q.qsize().unwrap(), 0);
    q.put(1).unwrap();
    q.put_nowait(2).unwrap();
    assert!(q.full().unwrap());
    assert_eq!(q.qsize().unwrap(), 2);
    assert!(matches!(q.put_nowait(3), Err(mp::Error::Full)));
    assert!(matches!(q.put_timeout(3, BRIEF), Err(mp::Error::Full)));
    assert_eq!(q.get().unwrap(), 1);
    assert_eq!(q.get_timeout(BRIEF).unwrap(), 2);
    assert!(matches!(q.get_nowait(), Err(mp::Error::Empty)));
    assert!(matches!(q.get_timeout(BRIEF), Err(mp::Error::Empty)));

    let child = kit.spawn(
        |q: K::Queue| {
            for i in 0..10 {
                q.put(i).unwrap();
            }
        },
        q.clone(),
    );
    let got: Vec<u32> = (0..10).map(|_| q.get().unwrap()).collect();
    assert_eq!(got, (0..10).collect::<Vec<u32>>());
    child.joined();
    assert!(q.empty().unwrap());
}

/// Python's `_TestQueue.test_task_done` and `test_join`: `join` waits for
/// every item's `task_done`; one too many is an error.
fn joinable_task_done_join<K: Kit + Spawn<K::JoinableQueue>>(kit: &K) {
    let q = kit.joinable_queue(0).unwrap();
    q.join().unwrap();
    assert!(matches!(q.task_done(), Err(mp::Error::Value(_))));
    q.put(1).unwrap();
    assert!(!q.join_timeout(BRIEF).unwrap());
    assert_eq!(q.get().unwrap(), 1);
    q.task_done().unwrap();
    assert!(q.join_timeout(BRIEF).unwrap());

    for i in 0..5 {
        q.put(i).unwrap();
    }
    let child = kit.spawn(
        |q: K::JoinableQueue| {
            for i in 0..5 {
                assert_eq!(q.get().unwrap(), i);
                q.task_done().unwrap();
            }
        },
        q.clone(),
    );
    q.join().unwrap();
    assert_eq!(q.qsize().unwrap(), 0);
    child.joined();
    assert!(matches!(q.task_done(), Err(mp::Error::Value(_))));
}

/// Python's `_TestValue.test_value`: get, set, and a child's set seen here.
fn value_get_set<K: Kit + Spawn<K::Value>>(kit: &K) {
    let v = kit.value(5).unwrap();
    assert_eq!(v.get().unwrap(), 5);
    v.set(-7).unwrap();
    assert_eq!(v.get().unwrap(), -7);
    kit.spawn(
        |v: K::Value| {
            assert_eq!(v.get().unwrap(), -7);
            v.set(42).unwrap();
        },
        v.clone(),
    )
    .joined();
    assert_eq!(v.get().unwrap(), 42);
}

/// Python's `_TestArray.test_array`: len, get, set, to_vec, across a child.
fn array_get_set<K: Kit + Spawn<K::Array>>(kit: &K) {
    let a = kit.array(&[1.0, 2.0, 3.0]).unwrap();
    assert_eq!(a.len().unwrap(), 3);
    assert_eq!(a.get(1).unwrap(), 2.0);
    a.set(2, 9.5).unwrap();
    kit.spawn(
        |a: K::Array| {
            assert_eq!(a.to_vec().unwrap(), vec![1.0, 2.0, 9.5]);
            a.set(0, -1.0).unwrap();
        },
        a.clone(),
    )
    .joined();
    assert_eq!(a.to_vec().unwrap(), vec![-1.0, 2.0, 9.5]);
}

/// One `#[test]` per scenario for one implementation: `$kit` builds it.
/// Each test holds `serial()` (the leak check counts this process's children
/// and fds) and checks that nothing leaked once the kit is gone.
macro_rules! contract_tests {
    ($module:ident, $kit:expr) => {
        mod $module {
            use super::*;

            /// Runs `scenario` on a fresh kit under a hang guard and a leak check.
            fn run<K: Kit + 'static>(name: &'static str, make: fn() -> K, scenario: fn(&K)) {
                let _s = serial();
                let _leaks = LeakCheck::new();
                within(SHORT, name, move || {
                    let kit = make();
                    scenario(&kit);
                });
            }

            #[test]
            fn test_lock() {
                run("test_lock", || $kit, lock_acquire_release);
            }
            #[test]
            fn test_lock_released_by_another_process() {
                run(
                    "test_lock_released_by_another_process",
                    || $kit,
                    lock_released_by_another_process,
                );
            }
            #[test]
            fn test_rlock() {
                run("test_rlock", || $kit, rlock_ownership);
            }
            #[test]
            fn test_semaphore() {
                run("test_semaphore", || $kit, semaphore_bounds);
            }
            #[test]
            fn test_semaphore_across_processes() {
                run(
                    "test_semaphore_across_processes",
                    || $kit,
                    semaphore_across_processes,
                );
            }
            #[test]
            fn test_event() {
                run("test_event", || $kit, event_wait_timeout);
            }
            #[test]
            fn test_waitfor() {
                run("test_waitfor", || $kit, condition_wait_notify);
            }
            #[test]
            fn test_notify() {
                run("test_notify", || $kit, condition_notify_wakes_a_waiter);
            }
            #[test]
            fn test_barrier() {
                run("test_barrier", || $kit, barrier_parties_abort_broken);
            }
            #[test]
            fn test_queue() {
                run("test_queue", || $kit, queue_put_get_full_empty);
            }
            #[test]
            fn test_task_done() {
                run("test_task_done", || $kit, joinable_task_done_join);
            }
            #[test]
            fn test_value() {
                run("test_value", || $kit, value_get_set);
            }
            #[test]
            fn test_array() {
                run("test_array", || $kit, array_get_set);
            }
        }
    };
}

contract_tests!(local, Local);
contract_tests!(managed, Managed::new());
contract_tests!(dummy_local, Threads);
contract_tests!(dummy_managed, ThreadManaged::new());

// ---------------------------------------------------------------------------
// Proxies only: a lost manager is an error, never a panic or a false "acquired"

/// Every proxy call after `shutdown` is `Err(Closed)`: the blocking ones too,
/// and `lock()` gives no guard.
#[test]
fn proxies_give_closed_when_the_manager_is_gone() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    within(
        SHORT,
        "proxies_give_closed_when_the_manager_is_gone",
        || {
            let m = mp::Manager::new().unwrap();
            let lock = m.lock().unwrap();
            let rlock = m.rlock().unwrap();
            let sem = m.semaphore(1).unwrap();
            let bsem = m.bounded_semaphore(1).unwrap();
            let cond = m.condition().unwrap();
            let event = m.event().unwrap();
            let barrier = m.barrier(2).unwrap();
            let q = m.queue::<u32>().unwrap();
            let jq = m.joinable_queue::<u32>().unwrap();
            let v = m.value(1i64).unwrap();
            m.shutdown().unwrap();
            let closed = |r: mp::Result<()>| matches!(r, Err(mp::Error::Closed));
            assert!(closed(lock.acquire()));
            assert!(lock.lock().is_err_and(|e| matches!(e, mp::Error::Closed)));
            assert!(closed(rlock.acquire()));
            assert!(closed(sem.acquire()));
            assert!(closed(bsem.acquire()));
            assert!(closed(cond.acquire()));
            assert!(closed(cond.wait().map(drop)));
            assert!(closed(event.wait()));
            assert!(closed(barrier.wait().map(drop)));
            assert!(closed(q.get().map(drop)));
            assert!(closed(jq.join()));
            assert!(closed(v.get().map(drop)));
        },
    );
}

/// The dummy manager's proxies give `Err(Closed)` after `shutdown` too, as
/// the process proxies above (its objects live on in this process, but the
/// proxies keep the manager's meaning), and `lock()` gives no guard.
#[test]
fn dummy_proxies_give_closed_when_the_manager_is_gone() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    within(
        SHORT,
        "dummy_proxies_give_closed_when_the_manager_is_gone",
        || {
            let m = mp::dummy::Manager::new().unwrap();
            let lock = m.lock().unwrap();
            let rlock = m.rlock().unwrap();
            let sem = m.semaphore(1).unwrap();
            let bsem = m.bounded_semaphore(1).unwrap();
            let cond = m.condition().unwrap();
            let event = m.event().unwrap();
            let barrier = m.barrier(2).unwrap();
            let q = m.queue::<u32>().unwrap();
            let jq = m.joinable_queue::<u32>().unwrap();
            let v = m.value(1i64).unwrap();
            let held = cond.lock().unwrap();
            m.shutdown().unwrap();
            drop(held);
            let closed = |r: mp::Result<()>| matches!(r, Err(mp::Error::Closed));
            assert!(closed(lock.acquire()));
            assert!(lock.lock().is_err_and(|e| matches!(e, mp::Error::Closed)));
            assert!(closed(rlock.acquire()));
            assert!(closed(sem.acquire()));
            assert!(closed(bsem.acquire()));
            assert!(closed(cond.acquire()));
            assert!(closed(cond.wait().map(drop)));
            assert!(closed(cond.wait_for(|| true).map(drop)));
            assert!(closed(event.wait()));
            assert!(closed(barrier.wait().map(drop)));
            assert!(closed(barrier.is_broken().map(drop)));
            assert!(closed(q.get().map(drop)));
            assert!(closed(jq.join()));
            assert!(closed(v.get().map(drop)));
        },
    );
}

/// A guard held while its manager shuts down is dropped quietly: the lock
/// went with the manager.
#[test]
fn a_guard_outlives_its_manager() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    within(SHORT, "a_guard_outlives_its_manager", || {
        let m = mp::Manager::new().unwrap();
        let lock = m.lock().unwrap();
        let cond = m.condition().unwrap();
        let g1 = lock.lock().unwrap();
        let g2 = cond.lock().unwrap();
        m.shutdown().unwrap();
        drop(g1);
        drop(g2);
        assert!(matches!(lock.acquire(), Err(mp::Error::Closed)));
    });
}

/// An `acquire` blocked in the server when the server is killed returns
/// `Err(Closed)` instead of panicking or reporting the lock taken.
#[test]
fn a_blocked_acquire_fails_when_the_server_dies() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    within(
        SHORT,
        "a_blocked_acquire_fails_when_the_server_dies",
        || {
            let m = mp::Manager::new().unwrap();
            let lock = m.lock().unwrap();
            lock.acquire().unwrap();
            let waiter = {
                let lock = lock.clone();
                std::thread::spawn(move || lock.acquire())
            };
            // Whether the waiter's request reached the server before the kill or
            // not, the answer is the same: the lock was not taken.
            let pid = m.pid().expect("a started manager has a pid");
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            let r = waiter.join().expect("acquire must not panic");
            assert!(matches!(r, Err(mp::Error::Closed)), "{r:?}");
            assert!(matches!(lock.try_acquire(), Err(mp::Error::Closed)));
            drop(m);
        },
    );
}

// ---------------------------------------------------------------------------
// The authkey: `Option<&[u8]>` everywhere (a manager also takes a bare key)

/// `Some(key)` and `None` work for `Listener`/`Client` and `Manager` alike;
/// a manager's `None` is this process's authkey (Python's `authkey=None`).
#[test]
fn authkey_has_one_spelling() {
    use mp::connection::{Address, Client, Listener};
    let _s = serial();
    let _leaks = LeakCheck::new();
    within(SHORT, "authkey_has_one_spelling", || {
        let key = b"contract-key".to_vec();
        let name = Address::Abstract(format!("contract-authkey-{}", std::process::id()));
        let l = Listener::bind(name.clone(), Some(key.as_slice())).unwrap();
        let t = std::thread::spawn(move || l.accept().map(drop));
        Client::connect(name, Some(&key[..])).unwrap().close();
        t.join().unwrap().unwrap();

        let served = mp::Manager::serve(
            Address::Abstract(format!("contract-manager-{}", std::process::id())),
            Some(key.as_slice()),
        )
        .unwrap();
        for client in [
            mp::Manager::connect(served.address(), Some(key.as_slice())),
            mp::Manager::connect(served.address(), &key),
            mp::Manager::connect(served.address(), b"contract-key"),
        ] {
            client.unwrap().shutdown().unwrap();
        }
        assert!(matches!(
            mp::Manager::connect(served.address(), Some(b"wrong".as_slice())),
            Err(mp::Error::Authentication(_))
        ));
        assert!(matches!(
            mp::Manager::connect(served.address(), None),
            Err(mp::Error::Authentication(_))
        ));
        served.shutdown().unwrap();

        let own = mp::Manager::new().unwrap();
        let client = mp::Manager::connect(own.address(), None).unwrap();
        let ev = client.event().unwrap();
        ev.set().unwrap();
        assert!(ev.is_set().unwrap());
        drop(ev);
        client.shutdown().unwrap();
        own.shutdown().unwrap();
    });
}
