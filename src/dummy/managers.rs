//! `Manager` for threads: proxies with the process proxies' methods, backed
//! by objects in this process.
//!
//! Python's dummy `Manager` hands out the plain objects. Ours hands out
//! proxies, so a program written against `mp::Manager` compiles unchanged and
//! keeps the proxy's meaning: a value read from a `DictProxy` is a copy (kept
//! encoded, as the server keeps it), and after [`Manager::shutdown`] every
//! proxy gives [`Error::Closed`].

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::lock;
use super::{
    AsyncResult, Barrier, BoundedSemaphore, Condition, Event, JoinableQueue, Lock, Pool, Queue,
    RLock, Semaphore, run_caught,
};
use crate::SharedObject;
use crate::error::{Error, Result};

fn encode<T: Serialize + ?Sized>(x: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(x).map_err(Error::encode)
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    postcard::from_bytes(b).map_err(Error::decode)
}

/// What every proxy of one manager shares: whether it is still running.
#[derive(Clone)]
struct Alive {
    running: Arc<AtomicBool>,
    objects: Arc<AtomicUsize>,
    /// The names of `named`/`publish`: a clone of the proxy, type-erased.
    names: Arc<Mutex<HashMap<String, Named>>>,
}

/// A named proxy: the proxy (a clone) and its type's name, for errors.
struct Named {
    proxy: Box<dyn Any + Send + Sync>,
    type_name: &'static str,
}

impl fmt::Debug for Alive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("running", &self.running.load(Ordering::Relaxed))
            .field("objects", &self.objects.load(Ordering::Relaxed))
            .finish()
    }
}

impl Alive {
    fn check(&self) -> Result<()> {
        if self.running.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(Error::Closed)
        }
    }
}

/// A manager whose objects live in this process, for threads.
///
/// Python: `multiprocessing.dummy.Manager()`.
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// let m = mp::Manager::new()?;
/// let d = m.dict::<String, i64>()?;
/// let d2 = d.clone();
/// let mut p = mp::Process::new(move |_: ()| d2.insert("x".into(), 7).map(drop), ());
/// p.start()?;
/// p.join()?;
/// assert_eq!(d.get(&"x".to_string())?, Some(7));
/// m.shutdown()?;
/// assert!(matches!(d.len(), Err(mp::Error::Closed)));
/// # Ok::<(), mp::Error>(())
/// ```
#[derive(Debug)]
pub struct Manager {
    alive: Alive,
}

impl Manager {
    /// A new manager.
    ///
    /// # Errors
    ///
    /// None in practice (the `Result` keeps the process version's signature).
    pub fn new() -> Result<Manager> {
        Ok(Manager {
            alive: Alive {
                running: Arc::new(AtomicBool::new(true)),
                objects: Arc::default(),
                names: Arc::default(),
            },
        })
    }

    /// The pid of the process holding the objects: this one.
    pub fn pid(&self) -> Option<u32> {
        Some(std::process::id())
    }

    /// `Some(0)` once shut down, as a server process that exited cleanly.
    pub fn exitcode(&self) -> Option<i32> {
        (!self.alive.running.load(Ordering::Acquire)).then_some(0)
    }

    /// Stops the manager: every proxy gives [`Error::Closed`] from now on.
    /// Idempotent.
    ///
    /// # Errors
    ///
    /// None in practice.
    pub fn shutdown(&self) -> Result<()> {
        self.alive.running.store(false, Ordering::Release);
        Ok(())
    }

    /// How many objects this manager has created.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `shutdown()`.
    pub fn number_of_objects(&self) -> Result<usize> {
        self.alive.check()?;
        Ok(self.alive.objects.load(Ordering::Relaxed))
    }

    fn made<P>(&self, proxy: P) -> Result<P> {
        self.alive.check()?;
        self.alive.objects.fetch_add(1, Ordering::Relaxed);
        Ok(proxy)
    }

    /// A new, empty [`Namespace`].
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `shutdown()`.
    pub fn namespace(&self) -> Result<Namespace> {
        self.made(Namespace {
            alive: self.alive.clone(),
            attrs: Arc::default(),
        })
    }

    /// A new, empty dict.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `shutdown()`.
    pub fn dict<K: Serialize, V: Serialize>(&self) -> Result<DictProxy<K, V>> {
        self.dict_from(std::iter::empty())
    }

    /// A new dict holding `items`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] for an item that does not encode, [`Error::Closed`].
    pub fn dict_from<K: Serialize, V: Serialize>(
        &self,
        items: impl IntoIterator<Item = (K, V)>,
    ) -> Result<DictProxy<K, V>> {
        let mut d = Dict::default();
        for (k, v) in items {
            d.insert(encode(&k)?, encode(&v)?);
        }
        self.made(DictProxy {
            alive: self.alive.clone(),
            dict: Arc::new(Mutex::new(d)),
            _type: PhantomData,
        })
    }

    /// A new, empty list.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `shutdown()`.
    pub fn list<T: Serialize>(&self) -> Result<ListProxy<T>> {
        self.list_from(std::iter::empty())
    }

    /// A new list holding `items`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Closed`].
    pub fn list_from<T: Serialize>(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> Result<ListProxy<T>> {
        let items = items
            .into_iter()
            .map(|x| encode(&x))
            .collect::<Result<_>>()?;
        self.made(ListProxy {
            list: List::new(&self.alive, items, false),
            _type: PhantomData,
        })
    }

    /// A new value.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Closed`].
    pub fn value<T: Serialize>(&self, value: T) -> Result<ValueProxy<T>> {
        self.made(ValueProxy {
            alive: self.alive.clone(),
            cell: Arc::new(Mutex::new(encode(&value)?)),
            _type: PhantomData,
        })
    }

    /// A new fixed-length array holding `items`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Closed`].
    pub fn array<T: Serialize>(&self, items: Vec<T>) -> Result<ArrayProxy<T>> {
        let items = items.iter().map(encode).collect::<Result<_>>()?;
        self.made(ArrayProxy {
            list: List::new(&self.alive, items, true),
            _type: PhantomData,
        })
    }

    /// A new lock.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `shutdown()`.
    pub fn lock(&self) -> Result<LockProxy> {
        self.made(LockProxy {
            alive: self.alive.clone(),
            inner: Lock::new()?,
        })
    }

    /// A new recursive lock.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `shutdown()`.
    pub fn rlock(&self) -> Result<RLockProxy> {
        self.made(RLockProxy {
            alive: self.alive.clone(),
            inner: RLock::new()?,
        })
    }

    /// A new semaphore.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] above `i32::MAX`, [`Error::Closed`].
    pub fn semaphore(&self, value: u32) -> Result<SemaphoreProxy> {
        self.made(SemaphoreProxy {
            alive: self.alive.clone(),
            inner: Semaphore::new(value)?,
        })
    }

    /// A new bounded semaphore.
    ///
    /// # Errors
    ///
    /// As [`semaphore`](Manager::semaphore).
    pub fn bounded_semaphore(&self, value: u32) -> Result<BoundedSemaphoreProxy> {
        self.made(BoundedSemaphoreProxy {
            alive: self.alive.clone(),
            inner: BoundedSemaphore::new(value)?,
        })
    }

    /// A new condition (over its own recursive lock).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `shutdown()`.
    pub fn condition(&self) -> Result<ConditionProxy> {
        self.made(ConditionProxy {
            alive: self.alive.clone(),
            inner: Condition::new()?,
        })
    }

    /// A new event.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `shutdown()`.
    pub fn event(&self) -> Result<EventProxy> {
        self.made(EventProxy {
            alive: self.alive.clone(),
            inner: Event::new()?,
        })
    }

    /// A new barrier for `parties` threads.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for 0 parties, [`Error::Closed`].
    pub fn barrier(&self, parties: usize) -> Result<BarrierProxy> {
        self.made(BarrierProxy {
            alive: self.alive.clone(),
            inner: Barrier::new(parties)?,
        })
    }

    /// A new unbounded queue.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `shutdown()`.
    pub fn queue<T: Serialize>(&self) -> Result<QueueProxy<T>> {
        self.queue_with_maxsize(0)
    }

    /// A new queue holding at most `maxsize` items (0: unbounded).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `shutdown()`.
    pub fn queue_with_maxsize<T: Serialize>(&self, maxsize: usize) -> Result<QueueProxy<T>> {
        self.made(QueueProxy {
            alive: self.alive.clone(),
            inner: Queue::with_maxsize(maxsize)?,
            _type: PhantomData,
        })
    }

    /// A new unbounded joinable queue.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `shutdown()`.
    pub fn joinable_queue<T: Serialize>(&self) -> Result<JoinableQueueProxy<T>> {
        self.joinable_queue_with_maxsize(0)
    }

    /// A new joinable queue holding at most `maxsize` items (0: unbounded).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `shutdown()`.
    pub fn joinable_queue_with_maxsize<T: Serialize>(
        &self,
        maxsize: usize,
    ) -> Result<JoinableQueueProxy<T>> {
        self.made(JoinableQueueProxy {
            alive: self.alive.clone(),
            inner: JoinableQueue::with_maxsize(maxsize)?,
            _type: PhantomData,
        })
    }
}

impl Manager {
    /// The object registered as `name`, created from `init` if there is none
    /// (one lock over both, so two threads asking get the same object).
    ///
    /// Python: a typeid registered on a manager class, shared by name.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when `name` holds another type, [`Error::Closed`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::dummy as mp;
    /// let m = mp::Manager::new()?;
    /// let a = m.named::<mp::EventProxy>("ready", ())?;
    /// let b = m.named::<mp::EventProxy>("ready", ())?;
    /// a.set()?;
    /// assert!(b.is_set()?);
    /// assert!(matches!(m.lookup::<mp::LockProxy>("ready"), Err(mp::Error::Value(_))));
    /// assert!(matches!(m.lookup::<mp::LockProxy>("nope"), Err(mp::Error::Key(_))));
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn named<P: Managed>(&self, name: &str, init: P::Init) -> Result<P> {
        self.alive.check()?;
        let mut names = lock(&self.alive.names);
        if let Some(found) = names.get(name) {
            return downcast(name, found);
        }
        let proxy = P::create(self, init)?;
        names.insert(
            name.to_string(),
            Named {
                proxy: Box::new(proxy.clone()),
                type_name: std::any::type_name::<P>(),
            },
        );
        Ok(proxy)
    }

    /// The object registered as `name`.
    ///
    /// # Errors
    ///
    /// [`Error::Key`] when none is, [`Error::Value`] when it is another
    /// type, [`Error::Closed`].
    pub fn lookup<P: Managed>(&self, name: &str) -> Result<P> {
        self.alive.check()?;
        let names = lock(&self.alive.names);
        let found = names
            .get(name)
            .ok_or_else(|| Error::Key(format!("no shared object is registered as {name:?}")))?;
        downcast(name, found)
    }

    /// Registers an existing proxy's object as `name` (replacing any).
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for a proxy of another manager, [`Error::Closed`].
    pub fn publish<P: Managed>(&self, name: &str, proxy: &P) -> Result<()> {
        self.alive.check()?;
        if !Arc::ptr_eq(&proxy.alive().running, &self.alive.running) {
            return Err(Error::value("the proxy belongs to another manager"));
        }
        lock(&self.alive.names).insert(
            name.to_string(),
            Named {
                proxy: Box::new(proxy.clone()),
                type_name: std::any::type_name::<P>(),
            },
        );
        Ok(())
    }

    /// The [`Namespace`] registered as `name`, created if there is none.
    ///
    /// # Errors
    ///
    /// As [`named`](Manager::named).
    pub fn namespace_named(&self, name: &str) -> Result<Namespace> {
        self.named(name, ())
    }

    /// A new object of a type of yours, used through an [`ObjectProxy`]:
    /// each call runs under the object's lock. The same
    /// [`SharedObject`] impl serves `multiprocess::Manager::create`.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] when `T::new` panicked, [`Error::Closed`].
    pub fn create<T: SharedObject>(&self, init: T::Init) -> Result<ObjectProxy<T>> {
        let obj = run_caught("SharedObject::new", move || T::new(init))?;
        self.made(ObjectProxy {
            alive: self.alive.clone(),
            obj: Arc::new(Mutex::new(obj)),
        })
    }

    /// A pool of `processes` worker threads, used through a [`PoolProxy`].
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for 0 workers, [`Error::Closed`].
    pub fn pool(&self, processes: usize) -> Result<PoolProxy> {
        let pool = Pool::new(processes)?;
        self.made(PoolProxy {
            alive: self.alive.clone(),
            pool: Arc::new(pool),
        })
    }
}

fn downcast<P: Managed>(name: &str, found: &Named) -> Result<P> {
    found.proxy.downcast_ref::<P>().cloned().ok_or_else(|| {
        Error::value(format!(
            "the shared object {name:?} is a {}, not a {}",
            found.type_name,
            std::any::type_name::<P>()
        ))
    })
}

mod sealed {
    /// Keeps [`Managed`](super::Managed) implemented by this module's proxies only.
    pub trait Sealed {}
}

/// A proxy type whose object a dummy [`Manager`] can create, name and look
/// up ([`Manager::named`], [`Manager::lookup`], [`Manager::publish`]).
///
/// `Init` is what creating one takes, as for [`crate::Managed`]: `()` for
/// [`Namespace`], [`DictProxy`], [`ListProxy`], the locks, [`ConditionProxy`]
/// and [`EventProxy`]; the initial value for [`ValueProxy`]; the items for
/// [`ArrayProxy`]; the count for the semaphores; the parties for
/// [`BarrierProxy`]; the maxsize (0: unbounded) for the queues; the worker
/// count for [`PoolProxy`]; `T::Init` for an [`ObjectProxy<T>`].
///
/// This trait is sealed.
#[allow(private_bounds)]
pub trait Managed: sealed::Sealed + Clone + Send + Sync + 'static {
    /// What creating the object takes.
    type Init;
    /// Creates the object in `manager`.
    #[doc(hidden)]
    fn create(manager: &Manager, init: Self::Init) -> Result<Self>;
    /// The manager state the proxy belongs to.
    #[doc(hidden)]
    #[allow(private_interfaces)]
    fn alive(&self) -> &Alive;
}

macro_rules! managed {
    ($ty:ty, $init:ty, |$m:ident, $i:ident| $make:expr $(, $($bound:tt)*)?) => {
        impl $(<$($bound)*>)? sealed::Sealed for $ty {}
        impl $(<$($bound)*>)? Managed for $ty {
            type Init = $init;
            fn create($m: &Manager, $i: $init) -> Result<Self> {
                $make
            }
            #[allow(private_interfaces)]
            fn alive(&self) -> &Alive {
                managed!(@alive self, $ty)
            }
        }
    };
    (@alive $s:ident, $ty:ty) => { $s.alive_ref() };
}

macro_rules! alive_ref {
    ($ty:ident $(<$($t:ident),*>)?, $($path:tt)*) => {
        impl $(<$($t),*>)? $ty $(<$($t),*>)? {
            fn alive_ref(&self) -> &Alive {
                &self.$($path)*
            }
        }
    };
}

alive_ref!(Namespace, alive);
alive_ref!(DictProxy<K, V>, alive);
alive_ref!(ListProxy<T>, list.alive);
alive_ref!(ValueProxy<T>, alive);
alive_ref!(ArrayProxy<T>, list.alive);
alive_ref!(LockProxy, alive);
alive_ref!(RLockProxy, alive);
alive_ref!(SemaphoreProxy, alive);
alive_ref!(BoundedSemaphoreProxy, alive);
alive_ref!(ConditionProxy, alive);
alive_ref!(EventProxy, alive);
alive_ref!(BarrierProxy, alive);
alive_ref!(QueueProxy<T>, alive);
alive_ref!(JoinableQueueProxy<T>, alive);
alive_ref!(PoolProxy, alive);

managed!(Namespace, (), |m, _i| m.namespace());
managed!(DictProxy<K, V>, (), |m, _i| m.dict(), K: Serialize + Send + 'static, V: Serialize + Send + 'static);
managed!(ListProxy<T>, (), |m, _i| m.list(), T: Serialize + Send + 'static);
managed!(ValueProxy<T>, T, |m, i| m.value(i), T: Serialize + Send + 'static);
managed!(ArrayProxy<T>, Vec<T>, |m, i| m.array(i), T: Serialize + Send + 'static);
managed!(LockProxy, (), |m, _i| m.lock());
managed!(RLockProxy, (), |m, _i| m.rlock());
managed!(SemaphoreProxy, u32, |m, i| m.semaphore(i));
managed!(BoundedSemaphoreProxy, u32, |m, i| m.bounded_semaphore(i));
managed!(ConditionProxy, (), |m, _i| m.condition());
managed!(EventProxy, (), |m, _i| m.event());
managed!(BarrierProxy, usize, |m, i| m.barrier(i));
managed!(QueueProxy<T>, usize, |m, i| m.queue_with_maxsize(i), T: Serialize + Send + 'static);
managed!(JoinableQueueProxy<T>, usize, |m, i| m.joinable_queue_with_maxsize(i), T: Serialize + Send + 'static);
// A `u32`, as the process `PoolProxy`'s (whose wire carries one).
managed!(PoolProxy, u32, |m, i| m.pool(i as usize));

impl<T: SharedObject> sealed::Sealed for ObjectProxy<T> {}
impl<T: SharedObject> Managed for ObjectProxy<T> {
    type Init = T::Init;
    fn create(manager: &Manager, init: T::Init) -> Result<Self> {
        manager.create(init)
    }
    #[allow(private_interfaces)]
    fn alive(&self) -> &Alive {
        &self.alive
    }
}

// ---------------------------------------------------------------------------
// ObjectProxy

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
    alive: Alive,
    obj: Arc<Mutex<T>>,
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
        let mut obj = lock(&self.obj);
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

// ---------------------------------------------------------------------------
// PoolProxy

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
    alive: Alive,
    pool: Arc<Pool>,
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
            alive: Alive,
            result: Arc<AsyncResult<$out>>,
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

impl Drop for Manager {
    fn drop(&mut self) {
        // As the process manager: dropping it shuts it down.
        let _ = self.shutdown();
    }
}

// ---------------------------------------------------------------------------
// Namespace

/// Named values of any serde type.
///
/// Python: `Manager().Namespace()`.
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// let m = mp::Manager::new()?;
/// let ns = m.namespace()?;
/// ns.set("x", &3u8)?;
/// assert_eq!(ns.get::<u8>("x")?, 3);
/// assert!(matches!(ns.get::<String>("x"), Err(mp::Error::Value(_))));
/// assert!(matches!(ns.get::<u8>("y"), Err(mp::Error::Key(_))));
/// # Ok::<(), mp::Error>(())
/// ```
#[derive(Clone)]
pub struct Namespace {
    alive: Alive,
    attrs: Arc<Mutex<Attrs>>,
}

impl Namespace {
    /// Sets attribute `name` to `value`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Closed`].
    pub fn set<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<()> {
        self.alive.check()?;
        let bytes = encode(value)?;
        lock(&self.attrs).insert(name.to_string(), (std::any::type_name::<T>(), bytes));
        Ok(())
    }

    /// A copy of attribute `name`.
    ///
    /// # Errors
    ///
    /// [`Error::Key`] when missing, [`Error::Value`] when it holds another
    /// type, [`Error::Closed`].
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        self.alive.check()?;
        let attrs = lock(&self.attrs);
        let (stored, bytes) = attrs
            .get(name)
            .ok_or_else(|| Error::Key(format!("the namespace has no attribute {name:?}")))?;
        let wanted = std::any::type_name::<T>();
        if !same_type(stored, wanted) {
            return Err(Error::value(format!(
                "namespace attribute {name:?} holds a {stored}, not a {wanted}"
            )));
        }
        decode(bytes)
    }

    /// True if attribute `name` exists.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn has(&self, name: &str) -> Result<bool> {
        self.alive.check()?;
        Ok(lock(&self.attrs).contains_key(name))
    }

    /// Deletes attribute `name`.
    ///
    /// # Errors
    ///
    /// [`Error::Key`] when missing, [`Error::Closed`].
    pub fn del(&self, name: &str) -> Result<()> {
        self.alive.check()?;
        match lock(&self.attrs).remove(name) {
            Some(_) => Ok(()),
            None => Err(Error::Key(format!(
                "the namespace has no attribute {name:?}"
            ))),
        }
    }

    /// The attribute names, sorted.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn names(&self) -> Result<Vec<String>> {
        self.alive.check()?;
        let mut names: Vec<String> = lock(&self.attrs).keys().cloned().collect();
        names.sort();
        Ok(names)
    }
}

/// A namespace's attributes: name -> (the type set, the encoded value).
type Attrs = HashMap<String, (&'static str, Vec<u8>)>;

/// True if a value set as `stored` reads back as `wanted`: the same type, or
/// a borrowed form and its owned one (`str`/`String`, `[T]`/`Vec<T>`).
fn same_type(stored: &str, wanted: &str) -> bool {
    let owned = |t: &str| match t {
        "str" => "alloc::string::String".to_string(),
        t if t.starts_with('[') && t.ends_with(']') => {
            format!("alloc::vec::Vec<{}>", &t[1..t.len() - 1])
        }
        t => t.to_string(),
    };
    owned(stored) == owned(wanted)
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Namespace")
            .field("names", &lock(&self.attrs).len())
            .finish()
    }
}

// ---------------------------------------------------------------------------
// DictProxy

/// An insertion-ordered dict of encoded keys and values, as the server's.
#[derive(Debug, Default)]
struct Dict {
    entries: BTreeMap<u64, (Vec<u8>, Vec<u8>)>,
    index: HashMap<Vec<u8>, u64>,
    next: u64,
}

impl Dict {
    fn insert(&mut self, k: Vec<u8>, v: Vec<u8>) -> Option<Vec<u8>> {
        if let Some(seq) = self.index.get(&k) {
            let slot = self.entries.get_mut(seq)?;
            return Some(std::mem::replace(&mut slot.1, v));
        }
        self.index.insert(k.clone(), self.next);
        self.entries.insert(self.next, (k, v));
        self.next += 1;
        None
    }

    fn get(&self, k: &[u8]) -> Option<&Vec<u8>> {
        self.index
            .get(k)
            .and_then(|s| self.entries.get(s))
            .map(|e| &e.1)
    }

    fn remove(&mut self, k: &[u8]) -> Option<Vec<u8>> {
        let seq = self.index.remove(k)?;
        self.entries.remove(&seq).map(|e| e.1)
    }
}

/// A shared dict; every value read is a copy.
///
/// Python: `Manager().dict()`.
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// let m = mp::Manager::new()?;
/// let d = m.dict_from([(1u8, "one".to_string())])?;
/// d.insert(2, "two".into())?;
/// assert_eq!(d.items()?, [(1, "one".to_string()), (2, "two".to_string())]);
/// # Ok::<(), mp::Error>(())
/// ```
pub struct DictProxy<K, V> {
    alive: Alive,
    dict: Arc<Mutex<Dict>>,
    _type: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for DictProxy<K, V> {
    fn clone(&self) -> Self {
        DictProxy {
            alive: self.alive.clone(),
            dict: self.dict.clone(),
            _type: PhantomData,
        }
    }
}

impl<K, V> fmt::Debug for DictProxy<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DictProxy")
            .field("len", &lock(&self.dict).index.len())
            .finish()
    }
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> DictProxy<K, V> {
    fn with<R>(&self, f: impl FnOnce(&mut Dict) -> Result<R>) -> Result<R> {
        self.alive.check()?;
        f(&mut lock(&self.dict))
    }

    /// Sets `k` to `v`; the previous value, if any.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Decode`], [`Error::Closed`].
    pub fn insert(&self, k: K, v: V) -> Result<Option<V>> {
        let (k, v) = (encode(&k)?, encode(&v)?);
        self.with(|d| d.insert(k, v).map(|old| decode(&old)).transpose())
    }

    /// A copy of the value at `k`.
    ///
    /// # Errors
    ///
    /// As [`insert`](DictProxy::insert).
    pub fn get(&self, k: &K) -> Result<Option<V>> {
        let k = encode(k)?;
        self.with(|d| d.get(&k).map(|v| decode(v)).transpose())
    }

    /// Removes `k`; its value, if any.
    ///
    /// # Errors
    ///
    /// As [`insert`](DictProxy::insert).
    pub fn remove(&self, k: &K) -> Result<Option<V>> {
        let k = encode(k)?;
        self.with(|d| d.remove(&k).map(|v| decode(&v)).transpose())
    }

    /// The number of entries.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn len(&self) -> Result<usize> {
        self.with(|d| Ok(d.index.len()))
    }

    /// True when empty.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// True if `k` is present.
    ///
    /// # Errors
    ///
    /// As [`insert`](DictProxy::insert).
    pub fn contains_key(&self, k: &K) -> Result<bool> {
        let k = encode(k)?;
        self.with(|d| Ok(d.index.contains_key(&k)))
    }

    /// The keys, in insertion order.
    ///
    /// # Errors
    ///
    /// As [`insert`](DictProxy::insert).
    pub fn keys(&self) -> Result<Vec<K>> {
        self.with(|d| d.entries.values().map(|(k, _)| decode(k)).collect())
    }

    /// The values, in insertion order.
    ///
    /// # Errors
    ///
    /// As [`insert`](DictProxy::insert).
    pub fn values(&self) -> Result<Vec<V>> {
        self.with(|d| d.entries.values().map(|(_, v)| decode(v)).collect())
    }

    /// The entries, in insertion order.
    ///
    /// # Errors
    ///
    /// As [`insert`](DictProxy::insert).
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        self.with(|d| {
            d.entries
                .values()
                .map(|(k, v)| Ok((decode(k)?, decode(v)?)))
                .collect()
        })
    }

    /// Removes every entry.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn clear(&self) -> Result<()> {
        self.with(|d| {
            *d = Dict::default();
            Ok(())
        })
    }

    /// Removes and returns the last entry inserted.
    ///
    /// # Errors
    ///
    /// As [`insert`](DictProxy::insert).
    pub fn pop_item(&self) -> Result<Option<(K, V)>> {
        self.with(|d| {
            let Some((_, (k, v))) = d.entries.pop_last() else {
                return Ok(None);
            };
            d.index.remove(&k);
            Ok(Some((decode(&k)?, decode(&v)?)))
        })
    }

    /// The value at `k`, inserting `default` first if missing.
    ///
    /// # Errors
    ///
    /// As [`insert`](DictProxy::insert).
    pub fn set_default(&self, k: K, default: V) -> Result<V> {
        let (k, v) = (encode(&k)?, encode(&default)?);
        self.with(|d| match d.get(&k) {
            Some(existing) => decode(existing),
            None => {
                d.insert(k, v);
                Ok(default)
            }
        })
    }

    /// Inserts every pair.
    ///
    /// # Errors
    ///
    /// As [`insert`](DictProxy::insert).
    pub fn update(&self, items: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        let items: Vec<(Vec<u8>, Vec<u8>)> = items
            .into_iter()
            .map(|(k, v)| Ok((encode(&k)?, encode(&v)?)))
            .collect::<Result<_>>()?;
        self.with(|d| {
            for (k, v) in items {
                d.insert(k, v);
            }
            Ok(())
        })
    }
}

// ---------------------------------------------------------------------------
// ListProxy and ArrayProxy

/// A list of encoded items, as the server's; `fixed` for an array.
#[derive(Debug, Clone)]
struct List {
    alive: Alive,
    items: Arc<Mutex<Vec<Vec<u8>>>>,
    fixed: bool,
}

fn out_of_range(i: i64, len: usize) -> Error {
    Error::value(format!("list index {i} out of range (length {len})"))
}

/// Python's index: negative counts from the end.
fn py_index(i: i64, len: usize) -> Option<usize> {
    let len = i64::try_from(len).ok()?;
    let at = if i < 0 { i + len } else { i };
    (0..len).contains(&at).then_some(at as usize)
}

/// Python's slice bounds, clamped.
fn py_slice(a: i64, b: i64, len: usize) -> std::ops::Range<usize> {
    let n = i64::try_from(len).unwrap_or(i64::MAX);
    let clamp = |i: i64| (if i < 0 { (i + n).max(0) } else { i.min(n) }) as usize;
    let (a, b) = (clamp(a), clamp(b));
    a..b.max(a)
}

fn index(i: impl TryInto<i64>) -> Result<i64> {
    i.try_into()
        .map_err(|_| Error::value("list index out of range (it does not fit in an i64)"))
}

impl List {
    fn new(alive: &Alive, items: Vec<Vec<u8>>, fixed: bool) -> List {
        List {
            alive: alive.clone(),
            items: Arc::new(Mutex::new(items)),
            fixed,
        }
    }

    fn with<R>(
        &self,
        resizes: Option<&str>,
        f: impl FnOnce(&mut Vec<Vec<u8>>) -> Result<R>,
    ) -> Result<R> {
        self.alive.check()?;
        if let (true, Some(op)) = (self.fixed, resizes) {
            return Err(Error::value(format!(
                "{op}: a manager Array has a fixed length"
            )));
        }
        f(&mut lock(&self.items))
    }

    fn get<T: DeserializeOwned>(&self, i: i64) -> Result<T> {
        self.with(None, |l| {
            let at = py_index(i, l.len()).ok_or_else(|| out_of_range(i, l.len()))?;
            decode(&l[at])
        })
    }

    fn set<T: Serialize>(&self, i: i64, x: &T) -> Result<()> {
        let x = encode(x)?;
        self.with(None, |l| {
            let at = py_index(i, l.len()).ok_or_else(|| out_of_range(i, l.len()))?;
            l[at] = x;
            Ok(())
        })
    }

    fn len(&self) -> Result<usize> {
        self.with(None, |l| Ok(l.len()))
    }

    fn slice<T: DeserializeOwned>(&self, a: i64, b: i64) -> Result<Vec<T>> {
        self.with(None, |l| {
            let r = py_slice(a, b, l.len());
            l[r].iter().map(|x| decode(x)).collect()
        })
    }
}

macro_rules! list_boilerplate {
    ($name:ident) => {
        impl<T> Clone for $name<T> {
            fn clone(&self) -> Self {
                $name {
                    list: self.list.clone(),
                    _type: PhantomData,
                }
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("len", &lock(&self.list.items).len())
                    .finish()
            }
        }
    };
}

/// A shared list; every item read is a copy.
///
/// Python: `Manager().list()`.
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// let m = mp::Manager::new()?;
/// let l = m.list_from([1, 2, 3])?;
/// l.push(4)?;
/// assert_eq!(l.get(-1)?, 4);
/// assert_eq!(l.slice(1, 3)?, [2, 3]);
/// assert!(matches!(l.get(9), Err(mp::Error::Value(_))));
/// # Ok::<(), mp::Error>(())
/// ```
pub struct ListProxy<T> {
    list: List,
    _type: PhantomData<fn() -> T>,
}

list_boilerplate!(ListProxy);

impl<T: Serialize + DeserializeOwned> ListProxy<T> {
    /// Appends `x`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Closed`].
    pub fn push(&self, x: T) -> Result<()> {
        let x = encode(&x)?;
        self.list.with(Some("push"), |l| {
            l.push(x);
            Ok(())
        })
    }

    /// A copy of item `i` (negative counts from the end).
    ///
    /// # Errors
    ///
    /// [`Error::Value`] out of range, [`Error::Decode`], [`Error::Closed`].
    pub fn get(&self, i: impl TryInto<i64>) -> Result<T> {
        self.list.get(index(i)?)
    }

    /// Sets item `i`.
    ///
    /// # Errors
    ///
    /// As [`get`](ListProxy::get).
    pub fn set(&self, i: impl TryInto<i64>, x: T) -> Result<()> {
        self.list.set(index(i)?, &x)
    }

    /// The number of items.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn len(&self) -> Result<usize> {
        self.list.len()
    }

    /// True when empty.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Removes and returns the last item.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when empty, [`Error::Closed`].
    pub fn pop(&self) -> Result<T> {
        self.list.with(Some("pop"), |l| match l.pop() {
            Some(x) => decode(&x),
            None => Err(Error::value("pop from an empty list")),
        })
    }

    /// Removes and returns item `i`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when empty or out of range, [`Error::Closed`].
    pub fn pop_at(&self, i: impl TryInto<i64>) -> Result<T> {
        let i = index(i)?;
        self.list.with(Some("pop"), |l| {
            if l.is_empty() {
                return Err(Error::value("pop from an empty list"));
            }
            let at = py_index(i, l.len()).ok_or_else(|| out_of_range(i, l.len()))?;
            decode(&l.remove(at))
        })
    }

    /// Appends every item.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Closed`].
    pub fn extend(&self, items: impl IntoIterator<Item = T>) -> Result<()> {
        let items: Vec<Vec<u8>> = items
            .into_iter()
            .map(|x| encode(&x))
            .collect::<Result<_>>()?;
        self.list.with(Some("extend"), |l| {
            l.extend(items);
            Ok(())
        })
    }

    /// The items one by one (each read when reached).
    pub fn iter(&self) -> impl Iterator<Item = Result<T>> + '_ {
        let mut next = 0i64;
        let mut done = false;
        std::iter::from_fn(move || {
            if done {
                return None;
            }
            match self.list.slice::<T>(next, next.saturating_add(1)) {
                Ok(mut v) if v.len() == 1 => {
                    next += 1;
                    v.pop().map(Ok)
                }
                Ok(_) => {
                    done = true;
                    None
                }
                Err(e) => {
                    done = true;
                    Some(Err(e))
                }
            }
        })
    }

    /// A copy of all items.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`], [`Error::Closed`].
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.list.slice(0, i64::MAX)
    }

    /// A copy of items `start..stop` (Python's slice bounds).
    ///
    /// # Errors
    ///
    /// As [`to_vec`](ListProxy::to_vec).
    pub fn slice(&self, start: impl TryInto<i64>, stop: impl TryInto<i64>) -> Result<Vec<T>> {
        self.list.slice(index(start)?, index(stop)?)
    }

    /// Inserts `x` before `i` (clamped, as Python's).
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Closed`].
    pub fn insert(&self, i: impl TryInto<i64>, x: T) -> Result<()> {
        let (i, x) = (index(i)?, encode(&x)?);
        self.list.with(Some("insert"), |l| {
            let at = py_slice(i, i64::MAX, l.len()).start;
            l.insert(at, x);
            Ok(())
        })
    }

    /// Removes the first item equal to `x`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] if none is, [`Error::Closed`].
    pub fn remove(&self, x: &T) -> Result<()> {
        let x = encode(x)?;
        self.list
            .with(Some("remove"), |l| match l.iter().position(|y| *y == x) {
                Some(at) => {
                    l.remove(at);
                    Ok(())
                }
                None => Err(Error::value("list.remove(x): x not in list")),
            })
    }

    /// The index of the first item equal to `x`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] if none is, [`Error::Closed`].
    pub fn index(&self, x: &T) -> Result<usize> {
        let x = encode(x)?;
        self.list.with(None, |l| {
            l.iter()
                .position(|y| *y == x)
                .ok_or_else(|| Error::value("list.index(x): x not in list"))
        })
    }

    /// How many items equal `x`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Closed`].
    pub fn count(&self, x: &T) -> Result<usize> {
        let x = encode(x)?;
        self.list
            .with(None, |l| Ok(l.iter().filter(|y| **y == x).count()))
    }

    /// Reverses the list in place.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn reverse(&self) -> Result<()> {
        self.list.with(None, |l| {
            l.reverse();
            Ok(())
        })
    }

    /// Removes every item.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn clear(&self) -> Result<()> {
        self.list.with(Some("clear"), |l| {
            l.clear();
            Ok(())
        })
    }

    /// Repeats the items `n` times in place (`l *= n`).
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when the result would be too long, [`Error::Closed`].
    pub fn repeat(&self, n: usize) -> Result<()> {
        self.list.with(Some("repeat"), |l| {
            let bytes: usize = l.iter().map(|b| b.len() + 24).sum();
            let fits = l.len().checked_mul(n).is_some_and(|t| t <= 1 << 27)
                && bytes.checked_mul(n).is_some_and(|t| t <= 4 << 30);
            if !fits {
                return Err(Error::value(format!(
                    "list *= {n}: the result would be too long"
                )));
            }
            let once = std::mem::take(l);
            for _ in 0..n {
                l.extend(once.iter().cloned());
            }
            Ok(())
        })
    }
}

/// A shared value; every read is a copy.
///
/// Python: `Manager().Value(typecode, value)`.
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// let m = mp::Manager::new()?;
/// let v = m.value(String::from("a"))?;
/// v.set("b".into())?;
/// assert_eq!(v.get()?, "b");
/// # Ok::<(), mp::Error>(())
/// ```
pub struct ValueProxy<T> {
    alive: Alive,
    cell: Arc<Mutex<Vec<u8>>>,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for ValueProxy<T> {
    fn clone(&self) -> Self {
        ValueProxy {
            alive: self.alive.clone(),
            cell: self.cell.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> fmt::Debug for ValueProxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueProxy").finish_non_exhaustive()
    }
}

impl<T: Serialize + DeserializeOwned> ValueProxy<T> {
    /// A copy of the value.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`], [`Error::Closed`].
    pub fn get(&self) -> Result<T> {
        self.alive.check()?;
        decode(&lock(&self.cell))
    }

    /// Sets the value.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Closed`].
    pub fn set(&self, x: T) -> Result<()> {
        self.alive.check()?;
        *lock(&self.cell) = encode(&x)?;
        Ok(())
    }
}

/// A shared fixed-length array; every item read is a copy.
///
/// Python: `Manager().Array(typecode, items)`.
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// let m = mp::Manager::new()?;
/// let a = m.array(vec![0u32; 3])?;
/// a.set(-1, 7)?;
/// assert_eq!(a.to_vec()?, [0, 0, 7]);
/// # Ok::<(), mp::Error>(())
/// ```
pub struct ArrayProxy<T> {
    list: List,
    _type: PhantomData<fn() -> T>,
}

list_boilerplate!(ArrayProxy);

impl<T: Serialize + DeserializeOwned> ArrayProxy<T> {
    /// The number of items.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn len(&self) -> Result<usize> {
        self.list.len()
    }

    /// True when empty.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// A copy of item `i` (negative counts from the end).
    ///
    /// # Errors
    ///
    /// [`Error::Value`] out of range, [`Error::Decode`], [`Error::Closed`].
    pub fn get(&self, i: impl TryInto<i64>) -> Result<T> {
        self.list.get(index(i)?)
    }

    /// Sets item `i`.
    ///
    /// # Errors
    ///
    /// As [`get`](ArrayProxy::get).
    pub fn set(&self, i: impl TryInto<i64>, x: T) -> Result<()> {
        self.list.set(index(i)?, &x)
    }

    /// A copy of all items.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`], [`Error::Closed`].
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.list.slice(0, i64::MAX)
    }
}

// ---------------------------------------------------------------------------
// Synchronization proxies

/// Holds a proxy's lock until dropped.
///
/// Python: the end of a `with lock:` block.
///
/// Not `Send`, as the process `ProxyGuard` is not: an `RLock` is owned by
/// the thread that took it, so a release from another thread would be
/// refused and the lock stay held.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ProxyGuard<'a> {
    /// The object to release.
    object: &'a dyn Release,
    /// Keeps the guard on the thread that took the lock.
    _not_send: PhantomData<*const ()>,
}

/// What a [`ProxyGuard`] releases.
trait Release {
    fn release_guard(&self);
}

impl fmt::Debug for ProxyGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyGuard").finish_non_exhaustive()
    }
}

impl Drop for ProxyGuard<'_> {
    fn drop(&mut self) {
        self.object.release_guard();
    }
}

macro_rules! sync_proxy {
    ($(#[$doc:meta])* $name:ident, $inner:ty) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            alive: Alive,
            inner: $inner,
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).field("object", &self.inner).finish()
            }
        }
    };
}

macro_rules! acquirer_methods {
    ($name:ident) => {
        impl $name {
            /// Blocks until acquired.
            ///
            /// The local type's `acquire` returns `()`; this one mirrors the
            /// process proxy's, which is a round trip that can fail.
            ///
            /// # Errors
            ///
            /// [`Error::Closed`] after the manager's `shutdown()`.
            pub fn acquire(&self) -> Result<()> {
                self.alive.check()?;
                self.inner.acquire();
                Ok(())
            }

            /// Acquires if possible now.
            ///
            /// # Errors
            ///
            /// [`Error::Closed`].
            pub fn try_acquire(&self) -> Result<bool> {
                self.alive.check()?;
                Ok(self.inner.try_acquire())
            }

            /// Waits at most `timeout`; true if acquired.
            ///
            /// # Errors
            ///
            /// [`Error::Closed`].
            pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
                self.alive.check()?;
                Ok(self.inner.acquire_timeout(timeout))
            }

            /// Releases.
            ///
            /// # Errors
            ///
            /// [`Error::Value`] as the local type's `release`, [`Error::Closed`].
            pub fn release(&self) -> Result<()> {
                self.alive.check()?;
                self.inner.release()
            }

            /// Acquires it and returns a guard that releases it on drop
            /// (Python's `with lock:`).
            ///
            /// # Errors
            ///
            /// As [`acquire`](Self::acquire): no guard when the lock was not taken.
            pub fn lock(&self) -> Result<ProxyGuard<'_>> {
                self.acquire()?;
                Ok(ProxyGuard {
                    object: self,
                    _not_send: PhantomData,
                })
            }
        }

        impl Release for $name {
            fn release_guard(&self) {
                // Released already by hand, or shut down: nothing to undo.
                let _ = self.inner.release();
            }
        }
    };
}

sync_proxy!(
    /// A shared lock. Python: `Manager().Lock()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::dummy as mp;
    /// let m = mp::Manager::new()?;
    /// let l = m.lock()?;
    /// let g = l.lock()?;
    /// assert!(!l.try_acquire()?);
    /// drop(g);
    /// assert!(l.try_acquire()?);
    /// # Ok::<(), mp::Error>(())
    /// ```
    LockProxy,
    Lock
);
acquirer_methods!(LockProxy);

sync_proxy!(
    /// A shared recursive lock. Python: `Manager().RLock()`.
    RLockProxy,
    RLock
);
acquirer_methods!(RLockProxy);

sync_proxy!(
    /// A shared semaphore. Python: `Manager().Semaphore(n)`.
    SemaphoreProxy,
    Semaphore
);
acquirer_methods!(SemaphoreProxy);

impl SemaphoreProxy {
    /// The current value.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn get_value(&self) -> Result<u32> {
        self.alive.check()?;
        Ok(self.inner.get_value())
    }
}

sync_proxy!(
    /// A shared bounded semaphore. Python: `Manager().BoundedSemaphore(n)`.
    BoundedSemaphoreProxy,
    BoundedSemaphore
);
acquirer_methods!(BoundedSemaphoreProxy);

impl BoundedSemaphoreProxy {
    /// The current value.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn get_value(&self) -> Result<u32> {
        self.alive.check()?;
        Ok(self.inner.get_value())
    }
}

sync_proxy!(
    /// A shared condition. Python: `Manager().Condition()`.
    ConditionProxy,
    Condition
);
acquirer_methods!(ConditionProxy);

impl ConditionProxy {
    /// Releases the lock, waits for a notify, takes the lock back; always
    /// true (Python's `wait()` without a timeout).
    ///
    /// # Errors
    ///
    /// [`Error::Value`] unless this thread holds the lock, [`Error::Closed`].
    pub fn wait(&self) -> Result<bool> {
        self.alive.check()?;
        self.inner.wait()
    }

    /// [`wait`](ConditionProxy::wait) for at most `timeout`; false on timeout.
    ///
    /// # Errors
    ///
    /// As [`wait`](ConditionProxy::wait).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.alive.check()?;
        self.inner.wait_timeout(timeout)
    }

    /// Waits until `predicate()` holds; always true (the predicate's last
    /// value, as Python's `wait_for` returns).
    ///
    /// # Errors
    ///
    /// As [`wait`](ConditionProxy::wait).
    pub fn wait_for(&self, predicate: impl FnMut() -> bool) -> Result<bool> {
        self.alive.check()?;
        self.inner.wait_for(predicate)
    }

    /// [`wait_for`](ConditionProxy::wait_for) for at most `timeout`; the
    /// predicate's last value.
    ///
    /// # Errors
    ///
    /// As [`wait`](ConditionProxy::wait).
    pub fn wait_for_timeout(
        &self,
        predicate: impl FnMut() -> bool,
        timeout: Duration,
    ) -> Result<bool> {
        self.alive.check()?;
        self.inner.wait_for_timeout(predicate, timeout)
    }

    /// Wakes one waiter.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] unless this thread holds the lock, [`Error::Closed`].
    pub fn notify(&self) -> Result<()> {
        self.alive.check()?;
        self.inner.notify()
    }

    /// Wakes up to `n` waiters.
    ///
    /// # Errors
    ///
    /// As [`notify`](ConditionProxy::notify).
    pub fn notify_n(&self, n: usize) -> Result<()> {
        self.alive.check()?;
        self.inner.notify_n(n)
    }

    /// Wakes every waiter.
    ///
    /// # Errors
    ///
    /// As [`notify`](ConditionProxy::notify).
    pub fn notify_all(&self) -> Result<()> {
        self.alive.check()?;
        self.inner.notify_all()
    }
}

sync_proxy!(
    /// A shared event. Python: `Manager().Event()`.
    EventProxy,
    Event
);

impl EventProxy {
    /// Sets the flag.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn set(&self) -> Result<()> {
        self.alive.check()?;
        self.inner.set();
        Ok(())
    }

    /// Clears the flag.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn clear(&self) -> Result<()> {
        self.alive.check()?;
        self.inner.clear();
        Ok(())
    }

    /// True once set.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn is_set(&self) -> Result<bool> {
        self.alive.check()?;
        Ok(self.inner.is_set())
    }

    /// Blocks until set.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn wait(&self) -> Result<()> {
        self.alive.check()?;
        self.inner.wait();
        Ok(())
    }

    /// Waits at most `timeout`; true if set.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.alive.check()?;
        Ok(self.inner.wait_timeout(timeout))
    }
}

sync_proxy!(
    /// A shared barrier. Python: `Manager().Barrier(n)`.
    BarrierProxy,
    Barrier
);

impl BarrierProxy {
    /// Waits for all parties; this party's arrival index.
    ///
    /// # Errors
    ///
    /// [`Error::BrokenBarrier`], [`Error::Closed`].
    pub fn wait(&self) -> Result<usize> {
        self.alive.check()?;
        self.inner.wait()
    }

    /// [`wait`](BarrierProxy::wait) for at most `timeout` (a timeout breaks it).
    ///
    /// # Errors
    ///
    /// As [`wait`](BarrierProxy::wait).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize> {
        self.alive.check()?;
        self.inner.wait_timeout(timeout)
    }

    /// Breaks the barrier.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn abort(&self) -> Result<()> {
        self.alive.check()?;
        self.inner.abort();
        Ok(())
    }

    /// Resets the barrier.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn reset(&self) -> Result<()> {
        self.alive.check()?;
        self.inner.reset();
        Ok(())
    }

    /// The number of parties.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn parties(&self) -> Result<usize> {
        self.alive.check()?;
        Ok(self.inner.parties())
    }

    /// The number of parties waiting now.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn n_waiting(&self) -> Result<usize> {
        self.alive.check()?;
        Ok(self.inner.n_waiting())
    }

    /// True once broken.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn is_broken(&self) -> Result<bool> {
        self.alive.check()?;
        Ok(self.inner.is_broken())
    }
}

macro_rules! queue_proxy {
    ($(#[$doc:meta])* $name:ident, $inner:ident) => {
        $(#[$doc])*
        pub struct $name<T> {
            alive: Alive,
            inner: $inner<T>,
            _type: PhantomData<fn() -> T>,
        }

        impl<T> Clone for $name<T> {
            fn clone(&self) -> Self {
                $name {
                    alive: self.alive.clone(),
                    inner: self.inner.clone(),
                    _type: PhantomData,
                }
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).field("object", &self.inner).finish()
            }
        }

        impl<T: Serialize + DeserializeOwned> $name<T> {
            /// Puts `item`, blocking while full.
            ///
            /// # Errors
            ///
            /// [`Error::Closed`].
            pub fn put(&self, item: T) -> Result<()> {
                self.alive.check()?;
                self.inner.put(item)
            }

            /// Puts `item`, waiting at most `timeout` for room.
            ///
            /// # Errors
            ///
            /// [`Error::Full`], [`Error::Closed`].
            pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<()> {
                self.alive.check()?;
                self.inner.put_timeout(item, timeout)
            }

            /// Puts `item` only if there is room now.
            ///
            /// # Errors
            ///
            /// [`Error::Full`], [`Error::Closed`].
            pub fn put_nowait(&self, item: T) -> Result<()> {
                self.alive.check()?;
                self.inner.put_nowait(item)
            }

            /// Takes the next item, blocking until there is one.
            ///
            /// # Errors
            ///
            /// [`Error::Closed`].
            pub fn get(&self) -> Result<T> {
                self.alive.check()?;
                self.inner.get()
            }

            /// Takes the next item, waiting at most `timeout`.
            ///
            /// # Errors
            ///
            /// [`Error::Empty`], [`Error::Closed`].
            pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
                self.alive.check()?;
                self.inner.get_timeout(timeout)
            }

            /// Takes the next item if there is one now.
            ///
            /// # Errors
            ///
            /// [`Error::Empty`], [`Error::Closed`].
            pub fn get_nowait(&self) -> Result<T> {
                self.alive.check()?;
                self.inner.get_nowait()
            }

            /// The number of items.
            ///
            /// # Errors
            ///
            /// [`Error::Closed`].
            pub fn qsize(&self) -> Result<usize> {
                self.alive.check()?;
                Ok(self.inner.qsize())
            }

            /// True when empty.
            ///
            /// # Errors
            ///
            /// [`Error::Closed`].
            pub fn empty(&self) -> Result<bool> {
                self.alive.check()?;
                Ok(self.inner.empty())
            }

            /// True when a bounded queue is full.
            ///
            /// # Errors
            ///
            /// [`Error::Closed`].
            pub fn full(&self) -> Result<bool> {
                self.alive.check()?;
                Ok(self.inner.full())
            }
        }
    };
}

queue_proxy!(
    /// A shared queue. Python: `Manager().Queue()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::dummy as mp;
    /// let m = mp::Manager::new()?;
    /// let q = m.queue()?;
    /// q.put(5)?;
    /// assert_eq!(q.get()?, 5);
    /// # Ok::<(), mp::Error>(())
    /// ```
    QueueProxy,
    Queue
);

queue_proxy!(
    /// A shared joinable queue. Python: `Manager().JoinableQueue()`.
    JoinableQueueProxy,
    JoinableQueue
);

impl<T: Serialize + DeserializeOwned> JoinableQueueProxy<T> {
    /// Marks one item got as done.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when called too often, [`Error::Closed`].
    pub fn task_done(&self) -> Result<()> {
        self.alive.check()?;
        self.inner.task_done()
    }

    /// Blocks until every item put is done.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn join(&self) -> Result<()> {
        self.alive.check()?;
        self.inner.join();
        Ok(())
    }

    /// [`join`](JoinableQueueProxy::join) for at most `timeout`; true if done.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool> {
        self.alive.check()?;
        Ok(self.inner.join_timeout(timeout))
    }
}
