//! Custom shared objects: CPython's `BaseManager.register(typeid, callable)`.
//!
//! A user type implements [`SharedObject`]: how to build it (`Init`), the enum
//! of its calls (`Call`) and what a call answers (`Reply`). The manager builds
//! it in the server process and serves it; an [`ObjectProxy<T>`] calls it from
//! any process. No registration step is needed: the server runs this very
//! binary, and the proxy sends it a reference to the monomorphised constructor.

// `Sealed` is public only as the unnameable supertrait of `Managed`; its
// methods take and return crate-internal types on purpose.
#![allow(private_interfaces)]

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[allow(unused_imports)] // doc links
use crate::error::Error;
use crate::error::Result;
use crate::reduction::{self, CallOutcome, Encoded, FnRef, Payload};

use super::client::unexpected;
use super::protocol::{Blob, Kind, Op, Reply};
use super::proxy::{Handle, Managed, Sealed};

/// A type whose value lives in a manager's server process and is used from
/// other processes through an [`ObjectProxy`].
///
/// Every call is one atomic operation: the server holds the object's lock
/// while [`call`](SharedObject::call) runs, so calls from different processes
/// never interleave. A `call` that panics gives the caller
/// [`Error::Remote`]; the server keeps serving (and keeps the object, in
/// whatever state the panic left it).
///
/// Python: a class given to `BaseManager.register(typeid, callable)`, its
/// public methods becoming the proxy's methods. Here the methods are the
/// variants of `Call`, so which ones are exposed (Python's `exposed=`) is
/// decided by the enum, and a method a proxy does not offer cannot be called.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// use serde::{Deserialize, Serialize};
///
/// /// A counter served by the manager.
/// struct Counter(i64);
///
/// #[derive(Serialize, Deserialize)]
/// enum CounterCall { Add(i64), Get }
///
/// impl mp::SharedObject for Counter {
///     type Init = i64;
///     type Call = CounterCall;
///     type Reply = i64;
///     fn new(start: i64) -> Self {
///         Counter(start)
///     }
///     fn call(&mut self, call: CounterCall) -> i64 {
///         match call {
///             CounterCall::Add(n) => { self.0 += n; self.0 }
///             CounterCall::Get => self.0,
///         }
///     }
/// }
///
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let m = mp::Manager::new()?;
///     let c = m.create::<Counter>(10)?;
///     let mut p = mp::Process::new(|c: mp::ObjectProxy<Counter>| {
///         c.call(CounterCall::Add(5)).unwrap();
///     }, c.clone());
///     p.start()?;
///     p.join()?;
///     assert_eq!(c.call(CounterCall::Get)?, 15);
///     m.shutdown()
/// }
/// ```
pub trait SharedObject: Send + 'static {
    /// What the constructor takes (Python: the arguments of `manager.Foo(...)`).
    type Init: Serialize + DeserializeOwned;
    /// The calls the object answers: usually an enum, one variant per method.
    type Call: Serialize + DeserializeOwned;
    /// What a call answers (use a `Result` to return errors to the caller,
    /// as Python re-raises the method's exception).
    type Reply: Serialize + DeserializeOwned;

    /// Builds the object, in the server process.
    fn new(init: Self::Init) -> Self;

    /// Runs one call, in the server process, under the object's lock.
    fn call(&mut self, call: Self::Call) -> Self::Reply;
}

/// A served object with its type erased, as the server holds it.
pub(crate) trait ErasedObject: Send {
    /// Decodes a call, runs it, encodes the reply.
    fn dispatch(&mut self, call: &Blob) -> Result<Blob>;
}

/// A `T` as the server holds it.
struct Served<T>(T);

impl<T: SharedObject> ErasedObject for Served<T> {
    fn dispatch(&mut self, call: &Blob) -> Result<Blob> {
        let call: T::Call = call.decode()?;
        let reply = self.0.call(call);
        Blob::encode(&reply)
    }
}

thread_local! {
    /// Where [`construct`] leaves the object it built for the server thread
    /// that called it.
    static CONSTRUCTED: RefCell<Option<Box<dyn ErasedObject>>> = const { RefCell::new(None) };
}

/// The constructor trampoline for `T`: decodes `T::Init`, builds the object
/// (catching a panic), and leaves it in [`CONSTRUCTED`].
fn construct<T: SharedObject>(payload: Payload) -> CallOutcome {
    let init: T::Init = match reduction::decode(&payload.bytes, payload.fds) {
        Ok(i) => i,
        Err(e) => return CallOutcome::Failed(e),
    };
    match reduction::catch(move || T::new(init)) {
        Ok(obj) => {
            CONSTRUCTED.with(|c| *c.borrow_mut() = Some(Box::new(Served(obj))));
            CallOutcome::Returned(Encoded::default())
        }
        Err(p) => CallOutcome::Panicked(p),
    }
}

/// Takes the object the last [`construct`] on this thread built.
pub(crate) fn take_constructed() -> Option<Box<dyn ErasedObject>> {
    CONSTRUCTED.with(|c| c.borrow_mut().take())
}

/// A proxy for a [`SharedObject`] served by a manager.
///
/// `Clone + Serialize + Deserialize + Send`: pass it to children, grandchildren
/// and pool workers as (part of) their argument; each call is one round trip.
///
/// Python: the `AutoProxy` / `BaseProxy` that `manager.Foo()` returns, and its
/// `_callmethod`.
pub struct ObjectProxy<T: SharedObject> {
    /// The server and the object's id.
    handle: Handle,
    /// The served type.
    _type: PhantomData<fn() -> T>,
}

impl<T: SharedObject> ObjectProxy<T> {
    /// Calls the object: sends `call`, runs it in the server under the object's
    /// lock, and returns its reply.
    ///
    /// Python: `proxy.method(...)` / `proxy._callmethod(name, args)`.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] when the call panicked in the server (the server keeps
    /// serving), [`Error::Encode`]/[`Error::Decode`] when the call or the reply
    /// does not (de)serialize, [`Error::Closed`] when the manager is gone,
    /// [`Error::Io`].
    pub fn call(&self, call: T::Call) -> Result<T::Reply> {
        match self.handle.call(Op::Custom(Blob::encode(&call)?))? {
            Reply::Value(b) => b.decode(),
            other => Err(unexpected(other)),
        }
    }
}

impl<T: SharedObject> Clone for ObjectProxy<T> {
    fn clone(&self) -> Self {
        ObjectProxy {
            handle: self.handle.clone(),
            _type: PhantomData,
        }
    }
}

impl<T: SharedObject> fmt::Debug for ObjectProxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectProxy")
            .field("type", &std::any::type_name::<T>())
            .field("id", &self.handle.id)
            .finish_non_exhaustive()
    }
}

impl<T: SharedObject> Serialize for ObjectProxy<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.handle.serialize(s)
    }
}

impl<'de, T: SharedObject> Deserialize<'de> for ObjectProxy<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(ObjectProxy {
            handle: Handle::deserialize(d)?,
            _type: PhantomData,
        })
    }
}

impl<T: SharedObject> Sealed for ObjectProxy<T> {
    type Init = T::Init;
    fn kind(init: &T::Init) -> Result<Kind> {
        Ok(Kind::Custom {
            ctor: FnRef::internal(construct::<T>),
            init: Blob::encode(init)?,
        })
    }
    fn from_handle(handle: Handle) -> Self {
        ObjectProxy {
            handle,
            _type: PhantomData,
        }
    }
    fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl<T: SharedObject> Managed for ObjectProxy<T> {}
