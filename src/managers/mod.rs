//! Python's `multiprocessing.managers`: a server process that owns shared
//! objects, and proxies that use them from any process.
//!
//! | Python | Rust |
//! |---|---|
//! | `Manager()` / `SyncManager().start()` | [`Manager::new`] |
//! | `BaseManager(address, authkey).start()` | [`Manager::serve`] |
//! | `BaseManager(address, authkey).connect()` | [`Manager::connect`] |
//! | `manager.shutdown()` / `with Manager() as m:` | [`Manager::shutdown`] / drop |
//! | `Namespace()`, `dict()`, `list()`, `Value()`, `Array()` | [`Manager::namespace`], [`dict`](Manager::dict), [`list`](Manager::list), [`value`](Manager::value), [`array`](Manager::array) |
//! | `Lock()`, `RLock()`, `Semaphore()`, `BoundedSemaphore()`, `Condition()`, `Event()`, `Barrier()` | same names in snake_case |
//! | `Queue()`, `JoinableQueue()` | [`Manager::queue`], [`Manager::joinable_queue`] |
//! | `Pool(processes)` | [`Manager::pool`] |
//! | `BaseManager.register(typeid, callable)` + `manager.Foo()` | `impl` [`SharedObject`] + [`Manager::create`] |
//! | a registered typeid shared by name (`get_queue`) | [`Manager::named`], [`Manager::lookup`], [`Manager::publish`] |
//!
//! # How it works
//!
//! [`Manager::new`] starts the server: this binary run again (a daemon child,
//! so it never outlives its parent) listening on a Linux abstract Unix socket
//! with a random 32-byte authkey. Each client connection passes CPython's
//! authkey handshake and gets its own server thread; each proxy call is one
//! request and one answer (postcard), one atomic operation on the server; a
//! connection on this machine carries them through shared memory. A proxy
//! holds the address, the authkey and the object's id, so it serializes into
//! children, grandchildren and pool workers, and connects lazily there: one
//! connection per thread per manager, kept for the thread's life.
//!
//! # Errors after the end
//!
//! Once the manager has shut down, or its server died, every proxy call gives
//! [`Error::Closed`](crate::Error::Closed) at once (connection refused, or end of
//! file on an open connection); nothing hangs.
//!
//! # Lifetime of objects
//!
//! As in CPython, an object is freed when the last proxy to it is dropped, in
//! whatever process it is: proxies count references on the server. A proxy
//! and its clones share one reference in a process; each process holds its
//! references in a session whose connection it keeps open, so a process that
//! dies, even by SIGKILL, releases them. A proxy in transit (a `Process`
//! argument, a pool task, a queue item) holds a reference until the process
//! that receives it takes it over; a proxy stored in a manager container
//! holds one while it is stored. An object registered by name
//! ([`Manager::named`], [`Manager::publish`]) lives as long as the manager.
//! [`Manager::number_of_objects`] counts the live objects.

pub(crate) mod channel;
mod client;
mod custom;
pub(crate) mod mailbox;
mod pool;
pub(crate) mod protocol;
mod proxy;
mod refs;
mod server;
mod sync;

use crate::util::Unpoison;
use std::fmt;
use std::io::Read;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::connection::{Address, AuthKey, Connection, Listener, authenticate_accepted};
use crate::error::{Error, Result};
use crate::platform::{fd, process};
use crate::reduction::{self, CallOutcome, FnRef, Payload, PreparedCall};
use crate::spawn::{self, Child, StartSpec};

use client::ServerRef;
use protocol::{Reply, Request, Spec};
use proxy::{Handle, Sealed, proxy_type};

pub use custom::{ObjectProxy, SharedObject};
pub use pool::{PoolMapResultProxy, PoolProxy, PoolResultProxy};
pub use proxy::{ArrayProxy, DictProxy, ListProxy, Managed, Namespace, ValueProxy};
pub use sync::{
    BarrierProxy, BoundedSemaphoreProxy, ConditionProxy, EventProxy, JoinableQueueProxy, LockProxy,
    ProxyGuard, QueueProxy, RLockProxy, SemaphoreProxy,
};

/// How long `shutdown` waits for the server to exit after asking it to, and
/// then again after SIGTERM, before SIGKILL. CPython waits 1 s; a loaded
/// 2-core machine needs more.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client may take over the authkey handshake before the server
/// drops it.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the server tells the process that started it, once it listens.
#[derive(Debug, Serialize, Deserialize)]
enum Ready {
    /// Listening on this address (with the real port).
    Listening(Address),
    /// Could not bind.
    Failed(String),
}

/// What the server process is started with.
#[derive(Serialize, Deserialize)]
struct ServerConfig {
    /// Where to listen.
    address: Address,
    /// The authkey clients must prove.
    authkey: Vec<u8>,
}

/// A manager: a server process owning shared objects, and the factory of
/// proxies to them.
///
/// `Manager::new()` starts a private server; [`serve`](Manager::serve) starts
/// one others can reach at an address; [`connect`](Manager::connect) is a
/// client of such a one. Dropping the manager that started a server shuts it
/// down (Python's `with Manager() as m:`), so keep it alive while proxies are
/// in use, in this process or others.
///
/// Python: `multiprocessing.Manager()` / `managers.SyncManager`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let m = mp::Manager::new()?;
///     let d = m.dict::<String, i32>()?;
///     let mut p = mp::Process::new(|d: mp::DictProxy<String, i32>| {
///         d.insert("from child".into(), 7).unwrap();
///     }, d.clone());
///     p.start()?;
///     p.join()?;
///     assert_eq!(d.get(&"from child".into())?, Some(7));
///     m.shutdown()?;
///     assert!(matches!(d.len(), Err(mp::Error::Closed)));
///     Ok(())
/// }
/// ```
pub struct Manager {
    /// Address and authkey of the server.
    server: Arc<ServerRef>,
    /// The server process, for a manager that started one (until shutdown).
    process: Mutex<Option<Child>>,
    /// The server's pid, when this manager started it.
    pid: Option<u32>,
    /// The server's exit code, once it has been shut down.
    exitcode: Mutex<Option<i32>>,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("address", &self.server.addr)
            .field("pid", &self.pid)
            .field("exitcode", &self.exitcode())
            .finish()
    }
}

/// 32 random bytes from the kernel.
fn random_bytes() -> Result<[u8; 32]> {
    let mut buf = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

impl Manager {
    /// Starts a manager's server process and returns once it is listening.
    ///
    /// The server listens on a Linux abstract socket with this process's authkey
    /// ([`current_process().authkey()`](crate::ProcessInfo::authkey)); it
    /// is a daemon child, so it exits when this process dies, however it dies.
    ///
    /// Python: `multiprocessing.Manager()`.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] when `mp::init()` was not called or the server process
    /// did not start, [`Error::Io`] when the socket could not be made.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let m = mp::Manager::new()?;
    ///     assert!(m.pid().is_some());
    ///     m.shutdown()?;
    ///     assert_eq!(m.exitcode(), Some(0));
    ///     Ok(())
    /// }
    /// ```
    pub fn new() -> Result<Manager> {
        let nonce = random_bytes()?;
        let name: String = nonce[..8].iter().map(|b| format!("{b:02x}")).collect();
        let address = Address::Abstract(format!("mp-manager-{}-{name}", std::process::id()));
        Manager::start(address, spawn::current_authkey()?)
    }

    /// Starts a manager's server process listening on `address` with
    /// `authkey`, so that other programs can [`connect`](Manager::connect) to
    /// it. A TCP port 0 picks a free port: see [`address`](Manager::address).
    /// `authkey` is an [`AuthKey`]: a key (`b"secret"`, `&[u8]`, `Vec<u8>`) or
    /// `None` for this process's own ([`ProcessInfo::authkey`](crate::ProcessInfo::authkey)),
    /// as Python's `authkey=None`.
    ///
    /// The server is a daemon child of this process: it exits when this
    /// manager shuts down or is dropped, or when this process dies.
    ///
    /// Python: `BaseManager(address, authkey).start()`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the address cannot be bound (in use, not permitted),
    /// [`Error::Spawn`] when the server process did not start.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// use std::net::SocketAddr;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let server = mp::Manager::serve("127.0.0.1:0".parse::<SocketAddr>().unwrap(), b"secret")?;
    ///     let q = server.named::<mp::QueueProxy<String>>("jobs", 0)?;
    ///     let client = mp::Manager::connect(server.address(), b"secret")?;
    ///     let jobs = client.named::<mp::QueueProxy<String>>("jobs", 0)?;
    ///     jobs.put("hello".into())?;
    ///     assert_eq!(q.get()?, "hello");
    ///     server.shutdown()
    /// }
    /// ```
    pub fn serve<'k>(
        address: impl Into<Address>,
        authkey: impl Into<AuthKey<'k>>,
    ) -> Result<Manager> {
        Manager::start(address.into(), manager_authkey(authkey.into())?)
    }

    /// A client of the manager served at `address` (by [`serve`](Manager::serve)
    /// in another process or program), proving `authkey` (an [`AuthKey`] as in
    /// [`serve`](Manager::serve); `None`: this process's own). It starts nothing: its
    /// [`shutdown`](Manager::shutdown) and drop only close this process's
    /// connections (but the one that holds its references: the proxies it
    /// still has keep working, and their objects stay alive until they are
    /// dropped or the process ends). Get shared objects with
    /// [`named`](Manager::named) and [`lookup`](Manager::lookup), or create
    /// new ones.
    ///
    /// Python: `BaseManager(address, authkey).connect()`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when nothing listens there, [`Error::Authentication`] when
    /// the authkey is wrong.
    pub fn connect<'k>(
        address: impl Into<Address>,
        authkey: impl Into<AuthKey<'k>>,
    ) -> Result<Manager> {
        let authkey = manager_authkey(authkey.into())?;
        let server = Arc::new(ServerRef::new(address.into(), authkey));
        server.connect_now()?;
        Ok(Manager {
            server,
            process: Mutex::new(None),
            pid: None,
            exitcode: Mutex::new(None),
        })
    }

    fn start(address: Address, authkey: Vec<u8>) -> Result<Manager> {
        let (identity, name) = spawn::next_child_identity("SyncManager");
        let config = ServerConfig {
            address,
            authkey: authkey.clone(),
        };
        let call = PreparedCall {
            target: FnRef::internal(server_entry),
            payload: reduction::encode(&config),
        };
        let child = spawn::start(StartSpec {
            name,
            identity,
            daemon: true,
            quiet_panics: true,
            method: crate::context::method::method_for_start(None),
            call,
        })?;
        let ready = child.wait_started(None).and_then(|()| {
            let frame = child
                .conn
                .recv_frame(Some(child.started_at + spawn::start_timeout()))?;
            reduction::decode::<Ready>(&frame.bytes, frame.fds)
        });
        let addr = match ready {
            Ok(Ready::Listening(addr)) => addr,
            other => {
                process::kill(child.pid, process::Signal::SIGKILL);
                process::reap_blocking(child.pid);
                return Err(match other {
                    Ok(Ready::Failed(msg)) => Error::Io(std::io::Error::other(msg)),
                    Err(e @ Error::Spawn(_)) => e,
                    Err(e) => {
                        Error::Spawn(format!("the manager's server process did not start: {e}"))
                    }
                    Ok(Ready::Listening(_)) => unreachable!("matched above"),
                });
            }
        };
        let pid = child.pid;
        Ok(Manager {
            server: Arc::new(ServerRef::new(addr, authkey)),
            process: Mutex::new(Some(child)),
            pid: Some(pid),
            exitcode: Mutex::new(None),
        })
    }

    /// The address the server listens on (with the real port for TCP port 0).
    ///
    /// Python: `BaseManager.address`.
    pub fn address(&self) -> Address {
        self.server.addr.clone()
    }

    /// The server's pid, for a manager that started it (`None` for a
    /// [`connect`](Manager::connect)ed one).
    ///
    /// Python: `manager._process.pid`.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The server's exit code after [`shutdown`](Manager::shutdown): 0, or
    /// `-15` (SIGTERM) / `-9` (SIGKILL) when it had to be stopped, or the
    /// signal that killed it; `None` before.
    ///
    /// Python: `manager._process.exitcode`.
    pub fn exitcode(&self) -> Option<i32> {
        *self.exitcode.lock().unpoison()
    }

    /// Stops the server (for a manager that started it) and closes this
    /// process's connections to it. Proxies used afterwards, here or in any
    /// other process, give [`Error::Closed`]. Calling it again does nothing.
    ///
    /// The server is asked to exit; after 5 s it is sent
    /// SIGTERM, after as long again SIGKILL, and then reaped, so
    /// [`exitcode`](Manager::exitcode) is 0 or `-15` (or `-9`). A
    /// [`connect`](Manager::connect)ed manager only disconnects: the server is
    /// its owner's to stop.
    ///
    /// Python: `manager.shutdown()`.
    ///
    /// # Errors
    ///
    /// None so far; the `Result` leaves room for a failure to stop the server.
    pub fn shutdown(&self) -> Result<()> {
        let child = self.process.lock().unpoison().take();
        let key = self.server.key();
        let Some(child) = child else {
            client::forget_server(key, true);
            return Ok(());
        };
        // A server that already died cannot answer: that is fine, it is reaped below.
        let _ = self.server.request(&Request::Shutdown);
        client::forget_server(key, false);
        let code = stop_server(&child);
        *self.exitcode.lock().unpoison() = code;
        Ok(())
    }

    /// The number of objects the server holds: those some proxy (in any
    /// process, in transit, or stored in a manager container) or a name
    /// still refers to.
    ///
    /// Python: `manager._number_of_objects()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let m = mp::Manager::new()?;
    ///     let d = m.dict::<u8, u8>()?;
    ///     let e = d.clone();
    ///     assert_eq!(m.number_of_objects()?, 1);
    ///     drop((d, e)); // the last proxy: the dict is freed
    ///     assert_eq!(m.number_of_objects()?, 0);
    ///     m.shutdown()
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager has shut down or died, [`Error::Io`].
    pub fn number_of_objects(&self) -> Result<usize> {
        match self.server.request(&Request::NumberOfObjects)? {
            Reply::Count(n) => Ok(n as usize),
            other => Err(client::unexpected(other)),
        }
    }

    /// Sends a request that answers a new or found object, and makes its
    /// handle (holding the reference the server gave this process).
    fn request_handle(&self, req: &Request) -> Result<Handle> {
        match self.server.request_in_session(req)? {
            (Reply::Id(id), session) => Ok(Handle::new(self.server.clone(), id, session)),
            (other, _) => Err(client::unexpected(other)),
        }
    }

    /// Creates a new object of proxy type `P` from `init` (see [`Managed`] for
    /// what each type takes).
    fn make<P: Managed>(&self, init: P::Init) -> Result<P> {
        let (tag, type_name) = proxy_type::<P>();
        let spec = Spec {
            kind: P::kind(&init)?,
            tag,
            type_name,
        };
        Ok(P::from_handle(self.request_handle(&Request::Create(spec))?))
    }

    /// The object registered as `name`, created from `init` first if there is
    /// none (atomically: two processes asking at once get the same object).
    /// What `init` is for each proxy type is listed under [`Managed`].
    ///
    /// Python: a typeid registered on the manager class and shared by every
    /// client (`QueueManager.register('get_queue', callable=lambda: queue)`).
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when `name` holds an object of another proxy type
    /// (another kind, or other item types), [`Error::Encode`] when `init` does
    /// not serialize, [`Error::Remote`] when a custom object's constructor
    /// panicked, [`Error::Closed`], [`Error::Io`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let m = mp::Manager::new()?;
    ///     let a = m.named::<mp::ValueProxy<i64>>("counter", 5)?;
    ///     let b = m.named::<mp::ValueProxy<i64>>("counter", 0)?; // exists: init unused
    ///     b.set(6)?;
    ///     assert_eq!(a.get()?, 6);
    ///     assert!(matches!(m.named::<mp::ValueProxy<String>>("counter", String::new()), Err(mp::Error::Value(_))));
    ///     m.shutdown()
    /// }
    /// ```
    pub fn named<P: Managed>(&self, name: &str, init: P::Init) -> Result<P> {
        let (tag, type_name) = proxy_type::<P>();
        let spec = Spec {
            kind: P::kind(&init)?,
            tag,
            type_name,
        };
        Ok(P::from_handle(self.request_handle(
            &Request::CreateNamed(name.to_string(), spec),
        )?))
    }

    /// The object registered as `name` (by [`named`](Manager::named) or
    /// [`publish`](Manager::publish)).
    ///
    /// # Errors
    ///
    /// [`Error::Key`] when nothing is registered under `name`, [`Error::Value`]
    /// when it is of another proxy type, [`Error::Closed`], [`Error::Io`].
    pub fn lookup<P: Managed>(&self, name: &str) -> Result<P> {
        let (tag, type_name) = proxy_type::<P>();
        Ok(P::from_handle(self.request_handle(&Request::Lookup {
            name: name.to_string(),
            tag,
            type_name,
        })?))
    }

    /// Registers the object behind `proxy` as `name` (replacing any earlier
    /// one), so clients can [`lookup`](Manager::lookup) it.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when `proxy` belongs to another manager,
    /// [`Error::Closed`], [`Error::Io`].
    pub fn publish<P: Managed>(&self, name: &str, proxy: &P) -> Result<()> {
        let h = proxy.handle();
        if h.server.key() != self.server.key() {
            return Err(Error::value("the proxy belongs to another manager"));
        }
        match self.server.request(&Request::Publish {
            name: name.to_string(),
            id: h.id,
        })? {
            Reply::Unit => Ok(()),
            other => Err(client::unexpected(other)),
        }
    }

    /// A new shared namespace.
    ///
    /// Python: `manager.Namespace()`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager has shut down or died, [`Error::Io`].
    pub fn namespace(&self) -> Result<Namespace> {
        self.make(())
    }

    /// The namespace registered as `name`, created if there is none: how
    /// clients of a remote manager share one (see [`named`](Manager::named)).
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when `name` holds another kind of object,
    /// [`Error::Closed`], [`Error::Io`].
    pub fn namespace_named(&self, name: &str) -> Result<Namespace> {
        self.named(name, ())
    }

    /// A new, empty shared dict.
    ///
    /// Python: `manager.dict()`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn dict<K: Serialize, V: Serialize>(&self) -> Result<DictProxy<K, V>> {
        self.make(())
    }

    /// A new shared dict holding `items`.
    ///
    /// Python: `manager.dict(items)`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Closed`], [`Error::Io`].
    pub fn dict_from<K: Serialize, V: Serialize>(
        &self,
        items: impl IntoIterator<Item = (K, V)>,
    ) -> Result<DictProxy<K, V>> {
        // The items (proxies among them) live until the server has them.
        let kept: Vec<(K, V)> = items.into_iter().collect();
        let items = kept
            .iter()
            .map(|(k, v)| Ok((protocol::Blob::encode(k)?, protocol::Blob::encode(v)?)))
            .collect::<Result<Vec<_>>>()?;
        let (tag, type_name) = proxy_type::<DictProxy<K, V>>();
        let spec = Spec {
            kind: protocol::Kind::Dict(items),
            tag,
            type_name,
        };
        Ok(DictProxy::from_handle(
            self.request_handle(&Request::Create(spec))?,
        ))
    }

    /// A new, empty shared list.
    ///
    /// Python: `manager.list()`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn list<T: Serialize>(&self) -> Result<ListProxy<T>> {
        self.make(())
    }

    /// A new shared list holding `items`.
    ///
    /// Python: `manager.list(seq)`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Closed`], [`Error::Io`].
    pub fn list_from<T: Serialize>(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> Result<ListProxy<T>> {
        // The items (proxies among them) live until the server has them.
        let kept: Vec<T> = items.into_iter().collect();
        let items = kept
            .iter()
            .map(protocol::Blob::encode)
            .collect::<Result<Vec<_>>>()?;
        let (tag, type_name) = proxy_type::<ListProxy<T>>();
        let spec = Spec {
            kind: protocol::Kind::List(items),
            tag,
            type_name,
        };
        Ok(ListProxy::from_handle(
            self.request_handle(&Request::Create(spec))?,
        ))
    }

    /// A new shared value.
    ///
    /// Python: `manager.Value(typecode, value)`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Closed`], [`Error::Io`].
    pub fn value<T: Serialize>(&self, value: T) -> Result<ValueProxy<T>> {
        self.make(value)
    }

    /// A new shared fixed-length array holding `items`.
    ///
    /// Python: `manager.Array(typecode, seq)`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Closed`], [`Error::Io`].
    pub fn array<T: Serialize>(&self, items: Vec<T>) -> Result<ArrayProxy<T>> {
        self.make(items)
    }

    /// A new shared lock.
    ///
    /// Python: `manager.Lock()`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn lock(&self) -> Result<LockProxy> {
        self.make(())
    }

    /// A new shared re-entrant lock.
    ///
    /// Python: `manager.RLock()`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn rlock(&self) -> Result<RLockProxy> {
        self.make(())
    }

    /// A new shared semaphore with value `value`.
    ///
    /// Python: `manager.Semaphore(value)`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn semaphore(&self, value: u32) -> Result<SemaphoreProxy> {
        self.make(value)
    }

    /// A new shared bounded semaphore with value (and bound) `value`.
    ///
    /// Python: `manager.BoundedSemaphore(value)`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn bounded_semaphore(&self, value: u32) -> Result<BoundedSemaphoreProxy> {
        self.make(value)
    }

    /// A new shared condition variable (with its own RLock).
    ///
    /// Python: `manager.Condition()`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn condition(&self) -> Result<ConditionProxy> {
        self.make(())
    }

    /// A new shared event, not set.
    ///
    /// Python: `manager.Event()`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn event(&self) -> Result<EventProxy> {
        self.make(())
    }

    /// A new shared barrier for `parties` parties.
    ///
    /// Python: `manager.Barrier(parties)`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for 0 parties, [`Error::Closed`], [`Error::Io`].
    pub fn barrier(&self, parties: usize) -> Result<BarrierProxy> {
        self.make(parties)
    }

    /// A new, unbounded shared queue.
    ///
    /// Python: `manager.Queue()`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn queue<T: Serialize>(&self) -> Result<QueueProxy<T>> {
        self.make(0)
    }

    /// A new shared queue holding at most `maxsize` items (0: unbounded).
    ///
    /// Python: `manager.Queue(maxsize)`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn queue_with_maxsize<T: Serialize>(&self, maxsize: usize) -> Result<QueueProxy<T>> {
        self.make(maxsize)
    }

    /// A new, unbounded shared joinable queue.
    ///
    /// Python: `manager.JoinableQueue()`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn joinable_queue<T: Serialize>(&self) -> Result<JoinableQueueProxy<T>> {
        self.make(0)
    }

    /// A new shared joinable queue holding at most `maxsize` items (0: unbounded).
    ///
    /// Python: `manager.JoinableQueue(maxsize)`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`].
    pub fn joinable_queue_with_maxsize<T: Serialize>(
        &self,
        maxsize: usize,
    ) -> Result<JoinableQueueProxy<T>> {
        self.make(maxsize)
    }

    /// A new pool of `processes` worker processes living in the server
    /// process (children of the server), and a proxy to it: any process
    /// holding the proxy submits work there. See [`PoolProxy`].
    ///
    /// Python: `manager.Pool(processes)`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for 0 processes, [`Error::Closed`], [`Error::Io`].
    pub fn pool(&self, processes: usize) -> Result<PoolProxy> {
        // A `usize` as in [`Pool::new`](crate::Pool::new); the wire carries a u32.
        let processes = u32::try_from(processes)
            .map_err(|_| Error::value(format!("a pool of {processes} processes is too large")))?;
        self.make(processes)
    }

    /// A new object of the user type `T`, built in the server by
    /// `T::new(init)`, and a proxy to it.
    ///
    /// Python: `MyManager.register('Foo', FooBar)` then `manager.Foo()`.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] when `T::new` panicked (the server keeps serving),
    /// [`Error::Encode`] when `init` does not serialize, [`Error::Closed`],
    /// [`Error::Io`].
    pub fn create<T: SharedObject>(&self, init: T::Init) -> Result<ObjectProxy<T>> {
        self.make(init)
    }
}

/// The key a manager uses: the one given, or (Python's `authkey=None`) this
/// process's own.
fn manager_authkey(authkey: AuthKey<'_>) -> Result<Vec<u8>> {
    match authkey.key() {
        Some(key) => Ok(key.to_vec()),
        None => spawn::current_authkey(),
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Waits for the server to exit, escalating to SIGTERM then SIGKILL, and
/// reaps it; its exit code.
fn stop_server(child: &Child) -> Option<i32> {
    use process::Signal;
    let exited = |within: Duration| {
        fd::wait_for(
            child.pidfd.as_fd(),
            fd::READABLE,
            Some(Instant::now() + within),
        )
    };
    if !exited(SHUTDOWN_TIMEOUT).unwrap_or(false) {
        process::kill(child.pid, Signal::SIGTERM);
        if !exited(SHUTDOWN_TIMEOUT).unwrap_or(false) {
            process::kill(child.pid, Signal::SIGKILL);
        }
    }
    process::reap_blocking(child.pid)
}

// ---------------------------------------------------------------------------
// The server process

/// The server process's entry point (a trampoline `spawn` calls).
fn server_entry(payload: Payload) -> CallOutcome {
    match reduction::decode::<ServerConfig>(&payload.bytes, payload.fds) {
        Ok(config) => run_server(config),
        Err(e) => CallOutcome::Failed(e),
    }
}

/// Binds, reports to the parent, and serves until a client asks to shut down
/// (then exits 0). Runs in the server process.
fn run_server(config: ServerConfig) -> CallOutcome {
    let Some(ctx) = spawn::child_context() else {
        return CallOutcome::Failed(Error::Spawn(
            "the manager server must run in a child process".into(),
        ));
    };
    let listener = match Listener::bind(config.address, None) {
        Ok(l) => l,
        Err(e) => {
            let _ = ctx
                .parent_conn
                .send(&Ready::Failed(format!("could not listen: {e}")));
            spawn::exit_child(1);
        }
    };
    if ctx
        .parent_conn
        .send(&Ready::Listening(listener.address()))
        .is_err()
    {
        spawn::exit_child(1);
    }
    let server = server::Server::new();
    refs::install_server(server.clone());
    let authkey = Arc::new(config.authkey);
    loop {
        let conn = match listener.accept_unauthenticated(None) {
            Ok(c) => c,
            Err(Error::Closed) => spawn::exit_child(0),
            // Out of fds or a transient failure: keep serving the others.
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let server = server.clone();
        let authkey = authkey.clone();
        let spawned = std::thread::Builder::new()
            .name("manager-client".into())
            .spawn(move || serve_client(&server, &conn, &authkey));
        // Could not start a thread: the connection is dropped with the closure,
        // and the client gets `Closed`.
        drop(spawned);
    }
}

/// One client connection: the handshake, then its requests.
fn serve_client(server: &server::Server, conn: &Connection, authkey: &[u8]) {
    if authenticate_accepted(conn, authkey, Some(Instant::now() + HANDSHAKE_TIMEOUT)).is_err() {
        return;
    }
    let Ok(channel) = channel::Channel::from_connection(conn) else {
        return;
    };
    if server.serve_connection(&channel) {
        spawn::exit_child(0);
    }
}
