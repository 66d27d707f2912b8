//! `Manager` for threads: proxies with the process proxies' methods, backed
//! by objects in this process.
//!
//! Python's dummy `Manager` hands out the plain objects. Ours hands out
//! proxies, so a program written against `mp::Manager` compiles unchanged and
//! keeps the proxy's meaning: a value read from a `DictProxy` is a copy (kept
//! encoded, as the server keeps it), and after [`Manager::shutdown`] every
//! proxy gives [`Error::Closed`].

use crate::util::Unpoison;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::{
    Barrier, BoundedSemaphore, Condition, Event, JoinableQueue, Lock, Pool, Queue, RLock,
    Semaphore, run_caught,
};
use crate::SharedObject;
use crate::error::{Error, Result};

mod alive;
mod custom;
mod pool;
mod proxy;
mod sync;

use alive::{Alive, Named, encode};
pub use custom::ObjectProxy;
pub use pool::{PoolMapResultProxy, PoolProxy, PoolResultProxy};
pub use proxy::{ArrayProxy, DictProxy, ListProxy, Namespace, ValueProxy};
use proxy::{Dict, List};
pub use sync::{
    BarrierProxy, BoundedSemaphoreProxy, ConditionProxy, EventProxy, JoinableQueueProxy, LockProxy,
    ProxyGuard, QueueProxy, RLockProxy, SemaphoreProxy,
};

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
        let mut names = self.alive.names.lock().unpoison();
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
        let names = self.alive.names.lock().unpoison();
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
        self.alive.names.lock().unpoison().insert(
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

impl Drop for Manager {
    fn drop(&mut self) {
        // As the process manager: dropping it shuts it down.
        let _ = self.shutdown();
    }
}
