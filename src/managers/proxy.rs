//! The proxies of the containers: `Namespace`, `dict`, `list`, `Value`, `Array`.
//!
//! CPython's `NamespaceProxy`, `DictProxy`, `ListProxy`, `ValueProxy` and
//! `ArrayProxy`. Each method is one round trip and one atomic operation on the
//! server.
//!
//! # Reading gives a copy
//!
//! A value read through a proxy is a copy: changing it changes nothing in the
//! manager until it is written back (`ns.set`, `d.insert`, `l.set`). This is
//! Python's rule too (`ns.data.append(1)` and `d['k'].append(1)` are lost), and
//! the one the seeds trip over. Proxies stored inside containers stay proxies:
//! `d.insert("inner", &inner_dict)` and a later `d.get("inner")` gives a proxy to
//! the same shared dict (Python 3.6+ nested proxies).

// `Sealed` is public only as the unnameable supertrait of `Managed`; its
// methods take and return crate-internal types on purpose.
#![allow(private_interfaces)]

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;
use crate::error::Result;
use crate::reduction::type_tag;

use super::client::{ServerRef, unexpected};
use super::protocol::{Blob, Kind, ObjId, Op, Reply, Request, owned_type_name};
use super::refs;

/// A proxy's target: the server and the object's id, and the reference this
/// process holds to it (shared by the proxy's clones; see `refs.rs`).
#[derive(Clone)]
pub(crate) struct Handle(Arc<Target>);

/// What a [`Handle`] points to.
pub(crate) struct Target {
    /// Where the object lives.
    pub(crate) server: Arc<ServerRef>,
    /// Its id there.
    pub(crate) id: ObjId,
    /// The session holding this process's reference (`None`: it holds none,
    /// e.g. the object was already freed when the proxy arrived).
    session: Option<u64>,
}

impl std::ops::Deref for Handle {
    type Target = Target;
    fn deref(&self) -> &Target {
        &self.0
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(session) = self.session {
            self.server.decref(self.id, session);
        }
    }
}

impl Handle {
    /// A handle holding the reference `session` took to `id`.
    pub(crate) fn new(server: Arc<ServerRef>, id: ObjId, session: u64) -> Handle {
        Handle(Arc::new(Target {
            server,
            id,
            session: Some(session),
        }))
    }

    /// Calls a method of the object.
    pub(crate) fn call(&self, op: Op) -> Result<Reply> {
        self.server.request(&Request::Call(self.id, op))
    }

    /// A call that answers a new object (a pool's async result): its handle,
    /// holding the reference the server gave this process.
    pub(crate) fn object(&self, op: Op) -> Result<Handle> {
        match self
            .server
            .request_in_session(&Request::Call(self.id, op))?
        {
            (Reply::Id(id), session) => Ok(Handle::new(self.server.clone(), id, session)),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// A call that answers nothing.
    pub(crate) fn unit(&self, op: Op) -> Result<()> {
        match self.call(op)? {
            Reply::Unit => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// A call that answers a flag.
    pub(crate) fn flag(&self, op: Op) -> Result<bool> {
        match self.call(op)? {
            Reply::Bool(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    /// A call that answers a count.
    pub(crate) fn count(&self, op: Op) -> Result<u64> {
        match self.call(op)? {
            Reply::Count(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    /// A call that answers one value.
    pub(crate) fn value<T: DeserializeOwned>(&self, op: Op) -> Result<T> {
        match self.call(op)? {
            Reply::Value(b) => b.decode(),
            other => Err(unexpected(other)),
        }
    }

    /// A call that answers maybe one value.
    pub(crate) fn maybe<T: DeserializeOwned>(&self, op: Op) -> Result<Option<T>> {
        match self.call(op)? {
            Reply::Maybe(b) => b.map(|b| b.decode()).transpose(),
            other => Err(unexpected(other)),
        }
    }

    /// A call that answers several values.
    pub(crate) fn values<T: DeserializeOwned>(&self, op: Op) -> Result<Vec<T>> {
        match self.call(op)? {
            Reply::Values(bs) => bs.iter().map(Blob::decode).collect(),
            other => Err(unexpected(other)),
        }
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} at {}", self.id, self.server.addr)
    }
}

/// A proxy serialized into a manager value holds no token (the value holds
/// the reference); anywhere else it takes a transit reference, claimed by the
/// process that deserializes it. The serialized form: server, id, token (0:
/// none).
impl Serialize for Handle {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let token = if refs::record(self.server.key(), self.id) {
            0
        } else {
            // A manager that is gone: the proxy arrives with no reference and
            // its calls fail with `Closed`, as this one's would.
            self.server.transit(self.id).unwrap_or(0)
        };
        (&*self.server, self.id, token).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Handle {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (server, id, token) = <(ServerRef, ObjId, u64)>::deserialize(d)?;
        let session = match refs::try_adopt(server.key(), id) {
            Some(s) => Some(s),
            // Freed meanwhile, or the manager is gone: calls will say so.
            None => server.claim(token, id).ok(),
        };
        Ok(Handle(Arc::new(Target {
            server: Arc::new(server),
            id,
            session,
        })))
    }
}

/// The crate-side half of [`Managed`]: how a proxy type's object is created
/// and how the proxy is rebuilt from its handle.
pub trait Sealed: Sized {
    /// What creating the object takes (see [`Managed`]).
    type Init;
    /// The object to create.
    #[doc(hidden)]
    fn kind(init: &Self::Init) -> Result<Kind>;
    /// The proxy for a created or found object.
    #[doc(hidden)]
    fn from_handle(handle: Handle) -> Self;
    /// The proxy's target.
    #[doc(hidden)]
    fn handle(&self) -> &Handle;
}

/// A proxy type whose object a manager can create, name and look up
/// ([`Manager::named`](super::Manager::named),
/// [`Manager::lookup`](super::Manager::lookup),
/// [`Manager::publish`](super::Manager::publish)).
///
/// `Init` is what creating one takes: `()` for [`Namespace`], [`DictProxy`],
/// [`ListProxy`], `LockProxy`, `RLockProxy`, `ConditionProxy`, `EventProxy`;
/// the initial value for [`ValueProxy`]; the items for [`ArrayProxy`]; the
/// count for the semaphores; the parties for `BarrierProxy`; the maxsize (0:
/// unbounded) for the queues; `T::Init` for an `ObjectProxy<T>`.
///
/// Python: a typeid registered on a manager class (`register('get_queue', ...)`).
///
/// This trait is sealed: the crate implements it for its proxies.
pub trait Managed: Sealed {}

/// Implements Clone, Debug, Serialize, Deserialize for a proxy with a `handle`
/// and a `_type` marker.
macro_rules! proxy_boilerplate {
    ($name:ident < $($t:ident),* >) => {
        impl<$($t),*> Clone for $name<$($t),*> {
            fn clone(&self) -> Self {
                $name { handle: self.handle.clone(), _type: PhantomData }
            }
        }
        impl<$($t),*> fmt::Debug for $name<$($t),*> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).field("object", &self.handle).finish()
            }
        }
        impl<$($t),*> serde::Serialize for $name<$($t),*> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                serde::Serialize::serialize(&self.handle, s)
            }
        }
        impl<'de, $($t),*> serde::Deserialize<'de> for $name<$($t),*> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                Ok($name { handle: <Handle as serde::Deserialize>::deserialize(d)?, _type: PhantomData })
            }
        }
    };
    ($name:ident) => {
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).field("object", &self.handle).finish()
            }
        }
    };
}
pub(crate) use proxy_boilerplate;

// ---------------------------------------------------------------------------
// Namespace

/// A proxy for a manager's `Namespace`: named values of any serde type.
///
/// Each attribute keeps its value's type: [`get`](Namespace::get) as another
/// type is an [`Error::Value`] naming both types, never garbage. A missing name
/// is [`Error::Key`].
///
/// **A read is a copy.** `let mut v: Vec<i32> = ns.get("data")?; v.push(1);`
/// changes only `v`; the shared value changes when it is set back with
/// `ns.set("data", &v)?`. (Python: `ns.data.append(1)` is lost the same way.)
///
/// Python: `manager.Namespace()` (`NamespaceProxy`); `ns.x = v` is
/// `ns.set("x", &v)`, `ns.x` is `ns.get::<T>("x")`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let m = mp::Manager::new()?;
///     let ns = m.namespace()?;
///     ns.set("data", &vec![1, 2, 3])?;
///
///     // A read is a copy: changing it does not change the shared value...
///     let mut local: Vec<i32> = ns.get("data")?;
///     local.push(4);
///     assert_eq!(ns.get::<Vec<i32>>("data")?, vec![1, 2, 3]);
///     // ...until it is set back.
///     ns.set("data", &local)?;
///     assert_eq!(ns.get::<Vec<i32>>("data")?, vec![1, 2, 3, 4]);
///
///     assert!(matches!(ns.get::<String>("data"), Err(mp::Error::Value(_))));
///     assert!(matches!(ns.get::<i32>("missing"), Err(mp::Error::Key(_))));
///     m.shutdown()
/// }
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Namespace {
    /// The server and the object's id.
    handle: Handle,
}
proxy_boilerplate!(Namespace);

impl Namespace {
    /// Sets attribute `name` to a copy of `value` (replacing any value, of any type).
    ///
    /// Python: `setattr(ns, name, value)` / `ns.name = value`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] when the value does not serialize or holds a handle
    /// (store a manager proxy instead of a local lock or queue),
    /// [`Error::Closed`] when the manager has shut down or died, [`Error::Io`].
    pub fn set<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<()> {
        let op = Op::NsSet(
            name.to_string(),
            owned_type_name::<T>().into_owned(),
            Blob::encode(value)?,
        );
        self.handle.unit(op)
    }

    /// A copy of attribute `name`'s value.
    ///
    /// Python: `getattr(ns, name)` / `ns.name`.
    ///
    /// # Errors
    ///
    /// [`Error::Key`] when there is no such attribute, [`Error::Value`] when it
    /// holds another type than `T`, [`Error::Closed`] when the manager has shut
    /// down or died, [`Error::Io`].
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        let op = Op::NsGet(
            name.to_string(),
            type_tag::<T>(),
            std::any::type_name::<T>().to_string(),
        );
        self.handle.value(op)
    }

    /// Whether attribute `name` exists.
    ///
    /// Python: `hasattr(ns, name)`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager has shut down or died, [`Error::Io`].
    pub fn has(&self, name: &str) -> Result<bool> {
        self.handle.flag(Op::NsHas(name.to_string()))
    }

    /// Deletes attribute `name`.
    ///
    /// Python: `delattr(ns, name)` / `del ns.name`.
    ///
    /// # Errors
    ///
    /// [`Error::Key`] when there is no such attribute, [`Error::Closed`],
    /// [`Error::Io`].
    pub fn del(&self, name: &str) -> Result<()> {
        self.handle.unit(Op::NsDel(name.to_string()))
    }

    /// The attribute names, sorted.
    ///
    /// Python: `vars(ns)` keys / `dir(ns)`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn names(&self) -> Result<Vec<String>> {
        match self.handle.call(Op::NsNames)? {
            Reply::Names(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }
}

impl Sealed for Namespace {
    type Init = ();
    fn kind(_: &()) -> Result<Kind> {
        Ok(Kind::Namespace)
    }
    fn from_handle(handle: Handle) -> Self {
        Namespace { handle }
    }
    fn handle(&self) -> &Handle {
        &self.handle
    }
}
impl Managed for Namespace {}

// ---------------------------------------------------------------------------
// dict

/// A proxy for a manager's `dict` from `K` to `V`, in insertion order.
///
/// Keys are compared by their serialized bytes, so use key types whose equal
/// values serialize equally (integers, strings, tuples and enums of them; not
/// floats or hash maps). Reads are copies (see [`Namespace`]): a `V` you got
/// and changed must be inserted again.
///
/// Python: `manager.dict()` (`DictProxy`): `d[k] = v` is `d.insert(k, v)`,
/// `d.get(k)` is `d.get(&k)`, `del d[k]` is `d.remove(&k)`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let m = mp::Manager::new()?;
///     let d = m.dict::<String, Vec<i32>>()?;
///     d.insert("k".into(), vec![1])?;
///     let mut v = d.get(&"k".into())?.unwrap();
///     v.push(2); // a copy: the shared dict still holds [1]
///     assert_eq!(d.get(&"k".into())?, Some(vec![1]));
///     d.insert("k".into(), v)?; // now it holds [1, 2]
///     assert_eq!(d.get(&"k".into())?, Some(vec![1, 2]));
///     assert_eq!(d.len()?, 1);
///     m.shutdown()
/// }
/// ```
pub struct DictProxy<K, V> {
    /// The server and the object's id.
    handle: Handle,
    /// The key and value types.
    _type: PhantomData<fn() -> (K, V)>,
}
proxy_boilerplate!(DictProxy<K, V>);

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> DictProxy<K, V> {
    /// Sets `d[k] = v`, returning the value it replaced.
    ///
    /// Python: `d[k] = v`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] when `k` or `v` does not serialize or holds a handle,
    /// [`Error::Closed`] when the manager has shut down or died, [`Error::Io`].
    pub fn insert(&self, k: K, v: V) -> Result<Option<V>> {
        self.handle
            .maybe(Op::DictInsert(Blob::encode(&k)?, Blob::encode(&v)?))
    }

    /// A copy of the value for `k`, if any.
    ///
    /// Python: `d.get(k)`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Closed`], [`Error::Io`].
    pub fn get(&self, k: &K) -> Result<Option<V>> {
        self.handle.maybe(Op::DictGet(Blob::encode(k)?))
    }

    /// Removes `k`, returning its value if it was there.
    ///
    /// Python: `d.pop(k, None)`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Closed`], [`Error::Io`].
    pub fn remove(&self, k: &K) -> Result<Option<V>> {
        self.handle.maybe(Op::DictRemove(Blob::encode(k)?))
    }

    /// The number of items.
    ///
    /// Python: `len(d)`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn len(&self) -> Result<usize> {
        Ok(self.handle.count(Op::DictLen)? as usize)
    }

    /// Whether the dict has no items.
    ///
    /// Python: `not d`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Whether `k` is a key.
    ///
    /// Python: `k in d`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Closed`], [`Error::Io`].
    pub fn contains_key(&self, k: &K) -> Result<bool> {
        self.handle.flag(Op::DictContains(Blob::encode(k)?))
    }

    /// The keys, in insertion order.
    ///
    /// Python: `list(d.keys())`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn keys(&self) -> Result<Vec<K>> {
        self.handle.values(Op::DictKeys)
    }

    /// The values, in insertion order.
    ///
    /// Python: `list(d.values())`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn values(&self) -> Result<Vec<V>> {
        self.handle.values(Op::DictValues)
    }

    /// The items, in insertion order (a snapshot taken atomically).
    ///
    /// Python: `list(d.items())`, `d.copy()`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        match self.handle.call(Op::DictItems)? {
            Reply::Pairs(ps) => ps
                .iter()
                .map(|(k, v)| Ok((k.decode()?, v.decode()?)))
                .collect(),
            other => Err(unexpected(other)),
        }
    }

    /// Removes every item.
    ///
    /// Python: `d.clear()`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn clear(&self) -> Result<()> {
        self.handle.unit(Op::DictClear)
    }

    /// Removes and returns the last inserted item, if any.
    ///
    /// Python: `d.popitem()` (which raises `KeyError` on an empty dict).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn pop_item(&self) -> Result<Option<(K, V)>> {
        match self.handle.call(Op::DictPopItem)? {
            Reply::MaybePair(p) => p.map(|(k, v)| Ok((k.decode()?, v.decode()?))).transpose(),
            other => Err(unexpected(other)),
        }
    }

    /// Inserts `default` for `k` unless `k` is there; returns the value now
    /// stored, in one atomic step.
    ///
    /// Python: `d.setdefault(k, default)`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Closed`], [`Error::Io`].
    pub fn set_default(&self, k: K, default: V) -> Result<V> {
        self.handle.value(Op::DictSetDefault(
            Blob::encode(&k)?,
            Blob::encode(&default)?,
        ))
    }

    /// Inserts every item, in one atomic step.
    ///
    /// Python: `d.update(items)`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Closed`], [`Error::Io`].
    pub fn update(&self, items: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        // The items (proxies among them) live until the server has them.
        let kept: Vec<(K, V)> = items.into_iter().collect();
        let items = kept
            .iter()
            .map(|(k, v)| Ok((Blob::encode(k)?, Blob::encode(v)?)))
            .collect::<Result<Vec<_>>>()?;
        self.handle.unit(Op::DictUpdate(items))
    }
}

impl<K: Serialize, V: Serialize> Sealed for DictProxy<K, V> {
    type Init = ();
    fn kind(_: &()) -> Result<Kind> {
        Ok(Kind::Dict(Vec::new()))
    }
    fn from_handle(handle: Handle) -> Self {
        DictProxy {
            handle,
            _type: PhantomData,
        }
    }
    fn handle(&self) -> &Handle {
        &self.handle
    }
}
impl<K: Serialize, V: Serialize> Managed for DictProxy<K, V> {}

// ---------------------------------------------------------------------------
// list

/// A proxy for a manager's `list` of `T`.
///
/// Indices follow Python: negative ones count from the end. Reads are copies
/// (see [`Namespace`]).
///
/// Python: `manager.list()` (`ListProxy`): `l.append(x)` is `l.push(x)`, `l[i]`
/// is `l.get(i)`, `l[:]` is `l.to_vec()`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let m = mp::Manager::new()?;
///     let l = m.list::<i32>()?;
///     l.extend(0..5)?;
///     assert_eq!(l.get(-1)?, 4);
///     assert_eq!(l.slice(1, 3)?, vec![1, 2]);
///     assert_eq!(l.pop()?, 4);
///     assert_eq!(l.to_vec()?, vec![0, 1, 2, 3]);
///     assert!(matches!(l.get(10), Err(mp::Error::Value(_))));
///     m.shutdown()
/// }
/// ```
pub struct ListProxy<T> {
    /// The server and the object's id.
    handle: Handle,
    /// The item type.
    _type: PhantomData<fn() -> T>,
}
proxy_boilerplate!(ListProxy<T>);

impl<T: Serialize + DeserializeOwned> ListProxy<T> {
    /// Appends `x`.
    ///
    /// Python: `l.append(x)`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Closed`] when the manager has shut down or
    /// died, [`Error::Io`].
    pub fn push(&self, x: T) -> Result<()> {
        self.handle.unit(Op::ListPush(Blob::encode(&x)?))
    }

    /// A copy of item `i` (negative: from the end).
    ///
    /// Python: `l[i]`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when `i` is out of range (Python: `IndexError`),
    /// [`Error::Closed`], [`Error::Io`].
    pub fn get(&self, i: impl TryInto<i64>) -> Result<T> {
        self.handle.value(Op::ListGet(index(i)?))
    }

    /// Sets item `i` (negative: from the end).
    ///
    /// Python: `l[i] = x`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when `i` is out of range, [`Error::Encode`],
    /// [`Error::Closed`], [`Error::Io`].
    pub fn set(&self, i: impl TryInto<i64>, x: T) -> Result<()> {
        self.handle.unit(Op::ListSet(index(i)?, Blob::encode(&x)?))
    }

    /// The number of items.
    ///
    /// Python: `len(l)`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn len(&self) -> Result<usize> {
        Ok(self.handle.count(Op::ListLen)? as usize)
    }

    /// Whether the list is empty.
    ///
    /// Python: `not l`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Removes and returns the last item.
    ///
    /// Python: `l.pop()`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] on an empty list, [`Error::Closed`], [`Error::Io`].
    pub fn pop(&self) -> Result<T> {
        self.handle.value(Op::ListPop(None))
    }

    /// Removes and returns item `i` (negative: from the end).
    ///
    /// Python: `l.pop(i)`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when `i` is out of range, [`Error::Closed`], [`Error::Io`].
    pub fn pop_at(&self, i: impl TryInto<i64>) -> Result<T> {
        self.handle.value(Op::ListPop(Some(index(i)?)))
    }

    /// Appends every item, in one atomic step.
    ///
    /// Python: `l.extend(items)`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Closed`], [`Error::Io`].
    pub fn extend(&self, items: impl IntoIterator<Item = T>) -> Result<()> {
        // The items (proxies among them) live until the server has them.
        let kept: Vec<T> = items.into_iter().collect();
        let items = kept.iter().map(Blob::encode).collect::<Result<Vec<_>>>()?;
        self.handle.unit(Op::ListExtend(items))
    }

    /// A live iterator over the items: each step reads the next index from
    /// the manager (one round trip), so a change made meanwhile shows, as
    /// with Python's list iterator; it ends at the first index past the end
    /// and stays ended. Use [`to_vec`](Self::to_vec) for an atomic snapshot.
    ///
    /// Python: `iter(l)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let m = mp::Manager::new()?;
    ///     let l = m.list_from([1, 2, 3])?;
    ///     let mut it = l.iter();
    ///     assert_eq!(it.next().transpose()?, Some(1));
    ///     l.set(1, 20)?;
    ///     assert_eq!(it.collect::<mp::Result<Vec<_>>>()?, vec![20, 3]);
    ///     m.shutdown()
    /// }
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = Result<T>> + '_ {
        let mut next = 0i64;
        let mut done = false;
        std::iter::from_fn(move || {
            if done {
                return None;
            }
            let got = self
                .handle
                .values::<T>(Op::ListSlice(next, next.saturating_add(1)));
            match got {
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

    /// A copy of all items (a snapshot taken atomically).
    ///
    /// Python: `l[:]`, `list(l)`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.handle.values(Op::ListToVec)
    }

    /// A copy of items `start..stop`, clamped as Python clamps slices
    /// (negative: from the end; use `i64::MAX` for "to the end").
    ///
    /// Python: `l[start:stop]`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn slice(&self, start: impl TryInto<i64>, stop: impl TryInto<i64>) -> Result<Vec<T>> {
        self.handle
            .values(Op::ListSlice(index(start)?, index(stop)?))
    }

    /// Inserts `x` before item `i` (clamped to the list, as in Python).
    ///
    /// Python: `l.insert(i, x)`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Closed`], [`Error::Io`].
    pub fn insert(&self, i: impl TryInto<i64>, x: T) -> Result<()> {
        self.handle
            .unit(Op::ListInsert(index(i)?, Blob::encode(&x)?))
    }

    /// Removes the first item equal to `x` (compared by serialized bytes).
    ///
    /// Python: `l.remove(x)`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when `x` is not in the list, [`Error::Encode`],
    /// [`Error::Closed`], [`Error::Io`].
    pub fn remove(&self, x: &T) -> Result<()> {
        self.handle.unit(Op::ListRemove(Blob::encode(x)?))
    }

    /// The index of the first item equal to `x`.
    ///
    /// Python: `l.index(x)`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when `x` is not in the list, [`Error::Encode`],
    /// [`Error::Closed`], [`Error::Io`].
    pub fn index(&self, x: &T) -> Result<usize> {
        Ok(self.handle.count(Op::ListIndex(Blob::encode(x)?))? as usize)
    }

    /// How many items equal `x`.
    ///
    /// Python: `l.count(x)`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Closed`], [`Error::Io`].
    pub fn count(&self, x: &T) -> Result<usize> {
        Ok(self.handle.count(Op::ListCount(Blob::encode(x)?))? as usize)
    }

    /// Reverses the list in place.
    ///
    /// Python: `l.reverse()`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn reverse(&self) -> Result<()> {
        self.handle.unit(Op::ListReverse)
    }

    /// Removes every item.
    ///
    /// Python: `l.clear()`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn clear(&self) -> Result<()> {
        self.handle.unit(Op::ListClear)
    }

    /// Repeats the contents `n` times in place (`0` empties the list).
    ///
    /// Python: `l *= n`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when the result would be too long, [`Error::Closed`],
    /// [`Error::Io`].
    pub fn repeat(&self, n: usize) -> Result<()> {
        self.handle.unit(Op::ListRepeat(n as u64))
    }
}

impl<T: Serialize> Sealed for ListProxy<T> {
    type Init = ();
    fn kind(_: &()) -> Result<Kind> {
        Ok(Kind::List(Vec::new()))
    }
    fn from_handle(handle: Handle) -> Self {
        ListProxy {
            handle,
            _type: PhantomData,
        }
    }
    fn handle(&self) -> &Handle {
        &self.handle
    }
}
impl<T: Serialize> Managed for ListProxy<T> {}

// ---------------------------------------------------------------------------
// Value and Array

/// A proxy for a manager's `Value`: one value of type `T`.
///
/// Python: `manager.Value(typecode, value)` (`ValueProxy`): `v.value`/`v.get()`
/// is `v.get()`, `v.value = x`/`v.set(x)` is `v.set(x)`. Unlike
/// `multiprocessing.Value`, it has no lock of its own: a read-modify-write
/// needs a [`LockProxy`](super::LockProxy) around it.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let m = mp::Manager::new()?;
///     let v = m.value(1i64)?;
///     v.set(v.get()? + 1)?;
///     assert_eq!(v.get()?, 2);
///     m.shutdown()
/// }
/// ```
pub struct ValueProxy<T> {
    /// The server and the object's id.
    handle: Handle,
    /// The value type.
    _type: PhantomData<fn() -> T>,
}
proxy_boilerplate!(ValueProxy<T>);

impl<T: Serialize + DeserializeOwned> ValueProxy<T> {
    /// A copy of the value.
    ///
    /// Python: `v.get()` / `v.value`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager has shut down or died, [`Error::Io`].
    pub fn get(&self) -> Result<T> {
        self.handle.value(Op::ValueGet)
    }

    /// Replaces the value.
    ///
    /// Python: `v.set(x)` / `v.value = x`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Closed`], [`Error::Io`].
    pub fn set(&self, x: T) -> Result<()> {
        self.handle.unit(Op::ValueSet(Blob::encode(&x)?))
    }
}

impl<T: Serialize> Sealed for ValueProxy<T> {
    type Init = T;
    fn kind(init: &T) -> Result<Kind> {
        Ok(Kind::Value(Blob::encode(init)?))
    }
    fn from_handle(handle: Handle) -> Self {
        ValueProxy {
            handle,
            _type: PhantomData,
        }
    }
    fn handle(&self) -> &Handle {
        &self.handle
    }
}
impl<T: Serialize> Managed for ValueProxy<T> {}

/// A proxy for a manager's `Array`: a fixed-length sequence of `T`.
///
/// Python: `manager.Array(typecode, seq)` (`ArrayProxy`): `len(a)`, `a[i]`,
/// `a[i] = x`, `list(a)`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let m = mp::Manager::new()?;
///     let a = m.array(vec![0i32, 1])?;
///     a.set(1, 5)?;
///     assert_eq!(a.to_vec()?, vec![0, 5]);
///     assert_eq!(a.len()?, 2);
///     m.shutdown()
/// }
/// ```
pub struct ArrayProxy<T> {
    /// The server and the object's id.
    handle: Handle,
    /// The item type.
    _type: PhantomData<fn() -> T>,
}
proxy_boilerplate!(ArrayProxy<T>);

impl<T: Serialize + DeserializeOwned> ArrayProxy<T> {
    /// The number of items (fixed at creation).
    ///
    /// Python: `len(a)`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager has shut down or died, [`Error::Io`].
    pub fn len(&self) -> Result<usize> {
        Ok(self.handle.count(Op::ListLen)? as usize)
    }

    /// Whether the array has no items.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// A copy of item `i` (negative: from the end).
    ///
    /// Python: `a[i]`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when `i` is out of range, [`Error::Closed`], [`Error::Io`].
    pub fn get(&self, i: impl TryInto<i64>) -> Result<T> {
        self.handle.value(Op::ListGet(index(i)?))
    }

    /// Sets item `i` (negative: from the end).
    ///
    /// Python: `a[i] = x`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when `i` is out of range, [`Error::Encode`],
    /// [`Error::Closed`], [`Error::Io`].
    pub fn set(&self, i: impl TryInto<i64>, x: T) -> Result<()> {
        self.handle.unit(Op::ListSet(index(i)?, Blob::encode(&x)?))
    }

    /// A copy of all items.
    ///
    /// Python: `list(a)` / `a[:]`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.handle.values(Op::ListToVec)
    }
}

impl<T: Serialize> Sealed for ArrayProxy<T> {
    type Init = Vec<T>;
    fn kind(init: &Vec<T>) -> Result<Kind> {
        Ok(Kind::Array(
            init.iter().map(Blob::encode).collect::<Result<Vec<_>>>()?,
        ))
    }
    fn from_handle(handle: Handle) -> Self {
        ArrayProxy {
            handle,
            _type: PhantomData,
        }
    }
    fn handle(&self) -> &Handle {
        &self.handle
    }
}
impl<T: Serialize> Managed for ArrayProxy<T> {}

/// An index as Python's (any integer type; negative counts from the end).
fn index(i: impl TryInto<i64>) -> Result<i64> {
    i.try_into()
        .map_err(|_| Error::value("list index out of range (it does not fit in an i64)"))
}

/// The tag and name a proxy type is registered with on the server.
pub(crate) fn proxy_type<P>() -> (u64, String) {
    (type_tag::<P>(), std::any::type_name::<P>().to_string())
}
