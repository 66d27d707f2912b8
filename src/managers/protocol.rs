//! The manager's wire protocol: one request frame, one response frame.
//!
//! CPython's `managers.py` sends `(ident, methodname, args, kwds)` pickles and
//! answers `('#RETURN', value)` / `('#ERROR', exc)` / `('#TRACEBACK', text)`. Here
//! a request is a postcard-encoded [`Request`] and the answer a [`Response`],
//! each one frame of the connection's (CPython) framing. Values inside are the
//! typed envelopes of `reduction::encode` ([`Blob`]): the server stores and
//! compares those bytes without decoding them, and the client's `decode::<T>`
//! checks the type tag, so a value read back as another type is an error.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, RemoteError, Result};
use crate::reduction::{self, FnRef};

pub(crate) use super::refs::ObjId;
use super::refs::{BlobRefs, RefOwner};

/// An encoded value (a `reduction` envelope), serialized as one byte string,
/// then the ids of the objects of the manager it travels to or from that the
/// value holds proxies to (see `refs.rs`: the blob holds one reference to
/// each while it is stored in the server, and hands them to the client that
/// reads it).
pub(crate) struct Blob {
    /// The envelope.
    pub(crate) bytes: Vec<u8>,
    /// The proxies inside, for the few values that hold any (boxed, so a
    /// plain value costs one pointer more).
    pub(crate) refs: Option<Box<BlobRefs>>,
}

impl Blob {
    /// A blob of these bytes holding no proxies.
    pub(crate) fn plain(bytes: Vec<u8>) -> Blob {
        Blob { bytes, refs: None }
    }

    /// The objects of its manager the value holds proxies to.
    pub(crate) fn ids(&self) -> &[ObjId] {
        self.refs.as_ref().map_or(&[], |r| &r.ids)
    }
}

impl Default for Blob {
    fn default() -> Blob {
        Blob::plain(Vec::new())
    }
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blob")
            .field("len", &self.bytes.len())
            .field("refs", &self.ids())
            .finish()
    }
}

// Equality and hashing are of the value's bytes (dict keys, `list.index`).
impl PartialEq for Blob {
    fn eq(&self, other: &Blob) -> bool {
        self.bytes == other.bytes
    }
}
impl Eq for Blob {}
impl std::hash::Hash for Blob {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.bytes.hash(h);
    }
}

impl Clone for Blob {
    /// A copy in the server holds references of its own; elsewhere a copy
    /// owns none.
    fn clone(&self) -> Blob {
        let refs = self.refs.as_ref().map(|r| {
            let owner = match r.owner {
                RefOwner::Server => {
                    super::refs::server_incref(&r.ids);
                    RefOwner::Server
                }
                _ => RefOwner::Nobody,
            };
            Box::new(BlobRefs {
                ids: r.ids.clone(),
                embedded: r.embedded.clone(),
                owner,
            })
        });
        Blob {
            bytes: self.bytes.clone(),
            refs,
        }
    }
}

impl Drop for Blob {
    fn drop(&mut self) {
        if let Some(r) = self.refs.take() {
            let BlobRefs { ids, owner, .. } = *r;
            super::refs::release_blob(owner, &ids);
        }
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&Bytes(&self.bytes))?;
        t.serialize_element(&super::refs::refs_to_send(self.refs.as_deref()))?;
        t.end()
    }
}

/// Bytes serialized as a byte string.
struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// A byte string, deserialized.
struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> std::result::Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(
                self,
                v: Vec<u8>,
            ) -> std::result::Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (bytes, ids) = <(ByteBuf, Vec<ObjId>)>::deserialize(d)?;
        let refs = (!ids.is_empty()).then(|| {
            let (ids, owner) = super::refs::take_received(ids);
            Box::new(BlobRefs {
                ids,
                embedded: Vec::new(),
                owner,
            })
        });
        Ok(Blob {
            bytes: bytes.0,
            refs,
        })
    }
}

impl Blob {
    /// Encodes `value` for storage in the manager.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] when it does not serialize, or when it holds a handle
    /// (a lock, queue, connection ...): the server cannot keep file descriptors
    /// for other processes; store a manager proxy instead.
    pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Blob> {
        let (enc, embedded) = super::refs::collecting(|| reduction::encode(value));
        let mut enc = enc?;
        // `set("x", "text")` and `set("x", &v[..])` store what `get::<String>`
        // and `get::<Vec<_>>` read: tag borrowed forms as their owned form.
        let owned = owned_type_name::<T>();
        if owned != std::any::type_name::<T>() {
            enc.bytes[2..10].copy_from_slice(&reduction::fnv1a(owned.as_bytes()).to_le_bytes());
        }
        if !enc.fds.is_empty() {
            return Err(Error::encode(format!(
                "a {} holds a handle (lock, queue, connection, shared value); a manager can only \
                 store plain data and manager proxies: use m.lock(), m.queue() ... instead",
                std::any::type_name::<T>()
            )));
        }
        let mut blob = Blob::plain(std::mem::take(&mut enc.bytes));
        if !embedded.is_empty() {
            blob.refs = Some(Box::new(BlobRefs {
                embedded,
                ..BlobRefs::default()
            }));
        }
        Ok(blob)
    }

    /// The type tag in the envelope (bytes 2..10 of `reduction`'s layout:
    /// magic, fd count, tag), if the blob is one.
    pub(crate) fn tag(&self) -> Option<u64> {
        let bytes: [u8; 8] = self.bytes.get(2..10)?.try_into().ok()?;
        Some(u64::from_le_bytes(bytes))
    }

    /// Decodes the value as a `T`. The proxies inside adopt the references
    /// this blob brought from the manager.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] when it holds another type or is corrupt.
    pub(crate) fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        super::refs::adopting(self.refs.as_deref(), || {
            reduction::decode(&self.bytes, Vec::new())
        })
    }
}

/// The name of `T`'s owned form: `str` → `String`, `[X]` → `Vec<X>`, a
/// reference → its target; any other type's own name.
pub(crate) fn owned_type_name<T: ?Sized>() -> Cow<'static, str> {
    let mut name = std::any::type_name::<T>();
    while let Some(rest) = name.strip_prefix('&') {
        name = rest.strip_prefix("mut ").unwrap_or(rest);
    }
    if name == "str" {
        return Cow::Borrowed("alloc::string::String");
    }
    match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        // An array `[X; N]` is its own type.
        Some(inner) if !inner.contains(';') => Cow::Owned(format!("alloc::vec::Vec<{inner}>")),
        _ => Cow::Borrowed(name),
    }
}

/// How long a blocking call may wait on the server.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum Wait {
    /// Do not wait (`block=False`).
    No,
    /// Wait as long as it takes.
    Forever,
    /// Wait at most this long.
    For(Duration),
}

impl Wait {
    /// The absolute deadline, counted from now (`None`: no deadline).
    pub(crate) fn deadline(self) -> Option<Instant> {
        match self {
            Wait::No => Some(Instant::now()),
            Wait::Forever => None,
            Wait::For(d) => Instant::now().checked_add(d),
        }
    }

    /// `For(d)`, or `Forever` when `d` is too large to be a deadline.
    pub(crate) fn timeout(d: Duration) -> Wait {
        if Instant::now().checked_add(d).is_some() {
            Wait::For(d)
        } else {
            Wait::Forever
        }
    }
}

/// What kind of object to create, with its initial state.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Kind {
    /// `Namespace()`.
    Namespace,
    /// `dict()`, with initial items.
    Dict(Vec<(Blob, Blob)>),
    /// `list()`, with initial items.
    List(Vec<Blob>),
    /// `Array(typecode, seq)`: a list of fixed length.
    Array(Vec<Blob>),
    /// `Value(typecode, value)`.
    Value(Blob),
    /// `Lock()`.
    Lock,
    /// `RLock()`.
    RLock,
    /// `Semaphore(n)`.
    Semaphore(u32),
    /// `BoundedSemaphore(n)`.
    BoundedSemaphore(u32),
    /// `Condition()` (with its own RLock).
    Condition,
    /// `Event()`.
    Event,
    /// `Barrier(parties)`.
    Barrier(u32),
    /// `Queue(maxsize)` / `JoinableQueue(maxsize)`; 0 = unbounded.
    Queue {
        /// The bound; 0 for none.
        maxsize: usize,
        /// A `JoinableQueue` (counts unfinished tasks).
        joinable: bool,
    },
    /// `Pool(processes)`: a pool of worker processes of the server.
    Pool(u32),
    /// A user type: the constructor trampoline and its encoded `Init`.
    Custom {
        /// `custom::construct::<T>`.
        ctor: FnRef,
        /// The encoded `T::Init`.
        init: Blob,
    },
}

/// An object to create: its kind, and the type tag of the proxy that will use
/// it (checked when another process looks it up by name).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Spec {
    /// What to create.
    pub(crate) kind: Kind,
    /// `type_tag` of the proxy type.
    pub(crate) tag: u64,
    /// The proxy type's name, for error messages.
    pub(crate) type_name: String,
}

/// One call from a client.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// Creates an object; answers [`Reply::Id`].
    Create(Spec),
    /// Returns the object registered under the name, creating it from the spec
    /// first if there is none; answers [`Reply::Id`].
    CreateNamed(String, Spec),
    /// Registers an existing object under a name (replacing any other).
    Publish {
        /// The name.
        name: String,
        /// The object.
        id: ObjId,
    },
    /// Looks up a named object whose proxy type has this tag; answers [`Reply::Id`].
    Lookup {
        /// The name.
        name: String,
        /// The proxy type's tag.
        tag: u64,
        /// The proxy type's name.
        type_name: String,
    },
    /// Calls a method of an object.
    Call(ObjId, Op),
    /// How many objects the server holds (CPython's `_number_of_objects`).
    NumberOfObjects,
    /// Stops the server; answered before it exits.
    Shutdown,
    /// Opens this process's session (see `refs.rs`) on this connection, its
    /// lifeline: when it closes, the session's references are released.
    /// Answers [`Reply::Id`] with the session's number.
    OpenSession,
    /// Attaches this connection to a session: the objects it creates or
    /// reads are referenced by that session.
    Attach(u64),
    /// The session takes one more reference to the object.
    Incref(ObjId),
    /// The session drops one reference to the object.
    Decref(ObjId),
    /// A new reference to the object for a proxy in transit; answers
    /// [`Reply::Id`] with its token.
    Transit(ObjId),
    /// The session claims a transit reference (or, if the token was claimed
    /// already, takes a new reference to the object).
    Claim {
        /// The token.
        token: u64,
        /// The object it is for.
        id: ObjId,
    },
}

/// A method call on one object. One enum for every kind; the server answers
/// [`Error::Value`] when the object is of another kind.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Op {
    // --- Namespace
    /// `setattr(ns, name, value)`.
    NsSet(String, String, Blob),
    /// `getattr(ns, name)`: name and the expected value's type tag and name.
    NsGet(String, u64, String),
    /// `hasattr`.
    NsHas(String),
    /// `delattr`.
    NsDel(String),
    /// The names, sorted.
    NsNames,
    // --- dict
    /// `d[k] = v`; answers the old value.
    DictInsert(Blob, Blob),
    /// `d.get(k)`.
    DictGet(Blob),
    /// `d.pop(k, None)`.
    DictRemove(Blob),
    /// `len(d)`.
    DictLen,
    /// `k in d`.
    DictContains(Blob),
    /// `list(d.keys())`.
    DictKeys,
    /// `list(d.values())`.
    DictValues,
    /// `list(d.items())` (also `d.copy()`).
    DictItems,
    /// `d.clear()`.
    DictClear,
    /// `d.popitem()` (the last inserted).
    DictPopItem,
    /// `d.setdefault(k, v)`: answers the value now stored.
    DictSetDefault(Blob, Blob),
    /// `d.update(items)`.
    DictUpdate(Vec<(Blob, Blob)>),
    // --- list and array
    /// `l.append(x)`.
    ListPush(Blob),
    /// `l[i]` (negative from the end).
    ListGet(i64),
    /// `l[i] = x`.
    ListSet(i64, Blob),
    /// `len(l)`.
    ListLen,
    /// `l.pop(i)` (`None`: the last).
    ListPop(Option<i64>),
    /// `l.extend(xs)`.
    ListExtend(Vec<Blob>),
    /// `l[:]`.
    ListToVec,
    /// `l[start:stop]` with Python's clamping.
    ListSlice(i64, i64),
    /// `l.insert(i, x)`.
    ListInsert(i64, Blob),
    /// `l.remove(x)`.
    ListRemove(Blob),
    /// `l.index(x)`.
    ListIndex(Blob),
    /// `l.count(x)`.
    ListCount(Blob),
    /// `l.reverse()`.
    ListReverse,
    /// `l.clear()`.
    ListClear,
    /// `l *= n`.
    ListRepeat(u64),
    // --- Value
    /// `v.get()`.
    ValueGet,
    /// `v.set(x)`.
    ValueSet(Blob),
    // --- Lock, RLock, Semaphore, BoundedSemaphore, Condition
    /// `acquire(blocking, timeout)`.
    Acquire(Wait),
    /// `release()`.
    Release,
    /// A semaphore's value.
    SemValue,
    /// `Condition.wait(timeout)`.
    CondWait(Wait),
    /// `Condition.notify(n)`.
    CondNotify(u64),
    /// `Condition.notify_all()`.
    CondNotifyAll,
    // --- Event
    /// `set()`.
    EventSet,
    /// `clear()`.
    EventClear,
    /// `is_set()`.
    EventIsSet,
    /// `wait(timeout)`.
    EventWait(Wait),
    // --- Barrier
    /// `wait(timeout)`.
    BarrierWait(Wait),
    /// `abort()`.
    BarrierAbort,
    /// `reset()`.
    BarrierReset,
    /// `parties`.
    BarrierParties,
    /// `n_waiting`.
    BarrierNWaiting,
    /// `broken`.
    BarrierBroken,
    // --- Queue, JoinableQueue
    /// `put(item, block, timeout)`.
    QueuePut(Blob, Wait),
    /// `get(block, timeout)`.
    QueueGet(Wait),
    /// `qsize()`.
    QueueSize,
    /// `empty()`.
    QueueEmpty,
    /// `full()`.
    QueueFull,
    /// `task_done()`.
    QueueTaskDone,
    /// `join()`.
    QueueJoin(Wait),
    // --- custom objects
    /// A call of a user type: the encoded `T::Call`.
    Custom(Blob),
    // --- Pool and its results
    /// `pool.apply(f, args)`: the function (its result-encoding trampoline)
    /// and the encoded argument; answers the encoded result.
    PoolApply(FnRef, Blob),
    /// `pool.apply_async(f, args)`: answers [`Reply::Id`] of a result object.
    PoolApplyAsync(FnRef, Blob),
    /// `pool.map(f, items)`: answers the encoded results, in order.
    PoolMap(FnRef, Vec<Blob>),
    /// `pool.map_async(f, items)`: answers [`Reply::Id`] of a result object.
    PoolMapAsync(FnRef, Vec<Blob>),
    /// `pool.close()`.
    PoolClose,
    /// `pool.terminate()`.
    PoolTerminate,
    /// `pool.join()`.
    PoolJoin,
    /// `result.get(timeout)` of a pool result.
    ResultGet(Wait),
    /// `result.wait(timeout)`: answers whether it is ready.
    ResultWait(Wait),
    /// `result.ready()`.
    ResultReady,
    /// `result.successful()`.
    ResultSuccessful,
}

/// A successful answer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    /// Nothing to return.
    Unit,
    /// A flag.
    Bool(bool),
    /// A count or index.
    Count(u64),
    /// A new or found object.
    Id(ObjId),
    /// One value.
    Value(Blob),
    /// Maybe one value.
    Maybe(Option<Blob>),
    /// Several values.
    Values(Vec<Blob>),
    /// Key-value pairs.
    Pairs(Vec<(Blob, Blob)>),
    /// Maybe one pair.
    MaybePair(Option<(Blob, Blob)>),
    /// Names.
    Names(Vec<String>),
}

/// The errors a server can answer with; [`WireError::into_error`] makes the
/// public [`Error`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum WireError {
    /// [`Error::Timeout`].
    Timeout,
    /// [`Error::Empty`].
    Empty,
    /// [`Error::Full`].
    Full,
    /// [`Error::Key`].
    Key(String),
    /// [`Error::Value`].
    Value(String),
    /// [`Error::Decode`].
    Decode(String),
    /// [`Error::BrokenBarrier`].
    BrokenBarrier,
    /// [`Error::Closed`]: the server is shutting down.
    Closed,
    /// [`Error::Remote`]: a user method panicked in the server, or a task in
    /// a worker of the manager's pool.
    Remote(RemoteError),
    /// [`Error::WorkerLost`]: a worker of a manager's pool died in a task.
    WorkerLost {
        /// Its pid.
        pid: u32,
        /// Its exit code.
        exitcode: Option<i32>,
    },
}

impl WireError {
    /// The public error.
    pub(crate) fn into_error(self) -> Error {
        match self {
            WireError::Timeout => Error::Timeout,
            WireError::Empty => Error::Empty,
            WireError::Full => Error::Full,
            WireError::Key(k) => Error::Key(k),
            WireError::Value(m) => Error::Value(m),
            WireError::Decode(m) => Error::Decode(m),
            WireError::BrokenBarrier => Error::BrokenBarrier,
            WireError::Closed => Error::Closed,
            WireError::Remote(r) => r.into(),
            WireError::WorkerLost { pid, exitcode } => Error::WorkerLost { pid, exitcode },
        }
    }

    /// The wire form of an error of a pool task or call in the server.
    pub(crate) fn from_error(e: Error) -> WireError {
        if let Some(r) = RemoteError::of(&e) {
            return WireError::Remote(r);
        }
        match e {
            Error::Timeout => WireError::Timeout,
            Error::Closed => WireError::Closed,
            Error::Value(m) => WireError::Value(m),
            Error::Decode(m) => WireError::Decode(m),
            Error::WorkerLost { pid, exitcode } => WireError::WorkerLost { pid, exitcode },
            other => WireError::Value(other.to_string()),
        }
    }
}

/// The answer to one [`Request`].
pub(crate) type Response = std::result::Result<Reply, WireError>;

/// Python's index rule: negative counts from the end; `None` when out of range.
pub(crate) fn py_index(i: i64, len: usize) -> Option<usize> {
    let len = len as i64;
    let i = if i < 0 { i + len } else { i };
    (0..len).contains(&i).then_some(i as usize)
}

/// Python's slice clamping for `l[start:stop]` (step 1).
pub(crate) fn py_slice(start: i64, stop: i64, len: usize) -> std::ops::Range<usize> {
    let clamp = |i: i64| -> usize {
        let len = len as i64;
        let i = if i < 0 { (i + len).max(0) } else { i.min(len) };
        i as usize
    };
    let (a, b) = (clamp(start), clamp(stop));
    a..b.max(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_indexing() {
        assert_eq!(py_index(0, 3), Some(0));
        assert_eq!(py_index(-1, 3), Some(2));
        assert_eq!(py_index(3, 3), None);
        assert_eq!(py_index(-4, 3), None);
        assert_eq!(py_slice(2, 10, 5), 2..5);
        assert_eq!(py_slice(-2, i64::MAX, 5), 3..5);
        assert_eq!(py_slice(4, 1, 5), 4..4);
        assert_eq!(py_slice(i64::MIN, i64::MAX, 5), 0..5);
    }

    #[test]
    fn borrowed_forms_are_tagged_as_owned() {
        assert_eq!(
            Blob::encode("abc").unwrap().decode::<String>().unwrap(),
            "abc"
        );
        assert_eq!(
            Blob::encode(&&"abc").unwrap().decode::<String>().unwrap(),
            "abc"
        );
        assert_eq!(
            Blob::encode(&[1u8, 2][..])
                .unwrap()
                .decode::<Vec<u8>>()
                .unwrap(),
            vec![1, 2]
        );
        assert_eq!(
            Blob::encode(&[1u8, 2])
                .unwrap()
                .decode::<[u8; 2]>()
                .unwrap(),
            [1, 2]
        );
        assert_eq!(owned_type_name::<str>(), "alloc::string::String");
        assert_eq!(owned_type_name::<&[u32]>(), "alloc::vec::Vec<u32>");
        assert_eq!(owned_type_name::<u32>(), "u32");
    }

    #[test]
    fn the_tag_is_where_reduction_puts_it() {
        let b = Blob::encode(&5u32).unwrap();
        assert_eq!(b.tag(), Some(reduction::type_tag::<u32>()));
        assert_eq!(Blob::plain(vec![1, 2]).tag(), None);
    }

    #[test]
    fn blobs_are_typed() {
        let b = Blob::encode(&vec![1u8, 2]).unwrap();
        assert_eq!(b.decode::<Vec<u8>>().unwrap(), vec![1, 2]);
        assert!(matches!(b.decode::<String>(), Err(Error::Decode(_))));
        let wire = postcard::to_stdvec(&b).unwrap();
        assert_eq!(postcard::from_bytes::<Blob>(&wire).unwrap(), b);
    }
}
