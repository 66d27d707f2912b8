//! Python's `multiprocessing.connection.Listener` and `Client`: connections
//! between processes that did not start each other, over TCP, Unix-domain
//! socket paths or Linux abstract socket names, guarded by an authkey.
//!
//! | Python | Rust |
//! |---|---|
//! | `Listener(address, authkey=key)` | [`Listener::bind`]`(address, Some(key))` |
//! | `listener.accept()` | [`Listener::accept`] / [`Listener::accept_timeout`] |
//! | `listener.address` / `last_accepted` | [`Listener::address`] / [`Listener::last_accepted`] |
//! | `listener.close()` | [`Listener::close`] (also on drop) |
//! | `Client(address, authkey=key)` | [`Client::connect`]`(address, Some(key))` |
//! | `('host', port)` / `'/path'` / `'\0name'` | [`Address::Tcp`] / [`Address::Unix`] / [`Address::Abstract`] |
//!
//! Framing and the authkey handshake are CPython's own, so either side may be a
//! Python program (see docs/porting.md, "Talking to Python").

use crate::util::Unpoison;
use std::borrow::Cow;
use std::fmt;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Connection, DEFAULT_MAX_MESSAGE_LEN, auth, deadline_after};
use crate::error::{Error, Result};
use crate::platform::fd;

/// The `authkey` argument of [`Manager::serve`](crate::Manager::serve) and
/// [`Manager::connect`](crate::Manager::connect).
///
/// The one spelling of an authkey in this crate is `Option<&[u8]>` (Python's
/// `authkey=None` or a key), as [`Listener::bind`] and [`Client::connect`]
/// take it; `AuthKey` converts from it, so a manager takes the same
/// `Some(key)` / `None`. It also converts from a key itself (`&[u8]`,
/// `b"literal"`, `&Vec<u8>`, `Vec<u8>`, `&str`, `String`), which the
/// manager's calls accepted before. What no key means is Python's: a
/// `Listener` or `Client` without one skips the handshake; a `Manager`
/// without one uses [`current_process().authkey()`](crate::ProcessInfo::authkey).
///
/// # Examples
///
/// ```
/// use multiprocess::connection::AuthKey;
/// assert_eq!(AuthKey::from(None).key(), None);
/// assert_eq!(AuthKey::from(Some(b"k".as_slice())).key(), Some(b"k".as_slice()));
/// assert_eq!(AuthKey::from(b"k").key(), Some(b"k".as_slice()));
/// assert_eq!(AuthKey::from(vec![1u8]).key(), Some([1u8].as_slice()));
/// assert_eq!(format!("{:?}", AuthKey::from(b"secret")), "AuthKey(Some(..))");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKey<'a>(Option<Cow<'a, [u8]>>);

/// Says whether there is a key, never what it is.
impl fmt::Debug for AuthKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(_) => f.write_str("AuthKey(Some(..))"),
            None => f.write_str("AuthKey(None)"),
        }
    }
}

impl AuthKey<'_> {
    /// The key, or `None` when none was given.
    pub fn key(&self) -> Option<&[u8]> {
        self.0.as_deref()
    }
}

impl<'a> From<Option<&'a [u8]>> for AuthKey<'a> {
    fn from(key: Option<&'a [u8]>) -> Self {
        AuthKey(key.map(Cow::Borrowed))
    }
}

impl<'a> From<&'a [u8]> for AuthKey<'a> {
    fn from(key: &'a [u8]) -> Self {
        AuthKey(Some(Cow::Borrowed(key)))
    }
}

impl<'a, const N: usize> From<&'a [u8; N]> for AuthKey<'a> {
    fn from(key: &'a [u8; N]) -> Self {
        AuthKey(Some(Cow::Borrowed(key.as_slice())))
    }
}

impl<'a> From<&'a Vec<u8>> for AuthKey<'a> {
    fn from(key: &'a Vec<u8>) -> Self {
        AuthKey(Some(Cow::Borrowed(key.as_slice())))
    }
}

impl From<Vec<u8>> for AuthKey<'_> {
    fn from(key: Vec<u8>) -> Self {
        AuthKey(Some(Cow::Owned(key)))
    }
}

impl<'a> From<&'a str> for AuthKey<'a> {
    fn from(key: &'a str) -> Self {
        AuthKey(Some(Cow::Borrowed(key.as_bytes())))
    }
}

impl<'a> From<&'a String> for AuthKey<'a> {
    fn from(key: &'a String) -> Self {
        AuthKey(Some(Cow::Borrowed(key.as_bytes())))
    }
}

impl From<String> for AuthKey<'_> {
    fn from(key: String) -> Self {
        AuthKey(Some(Cow::Owned(key.into_bytes())))
    }
}

impl<const N: usize> From<[u8; N]> for AuthKey<'_> {
    fn from(key: [u8; N]) -> Self {
        AuthKey(Some(Cow::Owned(key.to_vec())))
    }
}

/// Where a [`Listener`] listens and a [`Client`] connects.
///
/// Python: the `address` argument of `Listener`/`Client`: a `(host, port)`
/// tuple (`AF_INET`), a path string (`AF_UNIX`), or a string starting with a
/// NUL byte (a Linux abstract `AF_UNIX` name; here without the NUL).
///
/// # Examples
///
/// ```
/// use multiprocess::connection::Address;
/// use std::net::SocketAddr;
/// use std::path::PathBuf;
/// let tcp: Address = "127.0.0.1:6000".parse::<SocketAddr>().unwrap().into();
/// let unix: Address = PathBuf::from("/tmp/app.sock").into();
/// let abs = Address::Abstract("my-app".into());
/// assert_eq!(tcp.to_string(), "127.0.0.1:6000");
/// assert_eq!(unix.to_string(), "/tmp/app.sock");
/// assert_eq!(abs.to_string(), "@my-app");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Address {
    /// A TCP address (`AF_INET`/`AF_INET6`); port 0 binds a free port.
    Tcp(SocketAddr),
    /// A Unix-domain socket at a filesystem path (`AF_UNIX`).
    Unix(PathBuf),
    /// A Linux abstract Unix-domain socket name: no file, gone with its last fd
    /// (Python: an `AF_UNIX` address starting with `"\0"`).
    Abstract(String),
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Address {
        Address::Tcp(addr)
    }
}

impl From<PathBuf> for Address {
    fn from(path: PathBuf) -> Address {
        Address::Unix(path)
    }
}

impl From<&Path> for Address {
    fn from(path: &Path) -> Address {
        Address::Unix(path.to_path_buf())
    }
}

impl From<&Address> for Address {
    fn from(addr: &Address) -> Address {
        addr.clone()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(a) => write!(f, "{a}"),
            Address::Unix(p) => write!(f, "{}", p.display()),
            Address::Abstract(n) => write!(f, "@{n}"),
        }
    }
}

impl Address {
    /// The address of a Unix peer or socket, if it has one.
    fn from_unix(addr: &UnixSocketAddr) -> Option<Address> {
        if let Some(p) = addr.as_pathname() {
            return Some(Address::Unix(p.to_path_buf()));
        }
        addr.as_abstract_name()
            .map(|n| Address::Abstract(String::from_utf8_lossy(n).into_owned()))
    }

    /// The std form of an abstract name.
    fn abstract_addr(name: &str) -> Result<UnixSocketAddr> {
        Ok(UnixSocketAddr::from_abstract_name(name.as_bytes())?)
    }
}

/// The listening socket.
#[derive(Debug)]
enum Socket {
    /// `AF_INET`/`AF_INET6`.
    Tcp(TcpListener),
    /// `AF_UNIX`, path or abstract.
    Unix(UnixListener),
}

impl Socket {
    /// Accepts one pending connection (non-blocking): the stream and the peer.
    fn accept(&self) -> std::io::Result<(OwnedFd, Option<Address>)> {
        match self {
            Socket::Tcp(l) => {
                let (s, peer) = l.accept()?;
                // Handshake and request/reply traffic is many small writes: no Nagle.
                s.set_nodelay(true)?;
                Ok((OwnedFd::from(s), Some(Address::Tcp(peer))))
            }
            Socket::Unix(l) => {
                let (s, peer) = l.accept()?;
                super::widen_send_buffer(s.as_fd());
                Ok((OwnedFd::from(s), Address::from_unix(&peer)))
            }
        }
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Socket::Tcp(l) => l.as_fd(),
            Socket::Unix(l) => l.as_fd(),
        }
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        Socket::as_fd(self)
    }
}

/// A bound, listening socket that hands out authenticated [`Connection`]s.
///
/// With an authkey, every accepted connection first passes CPython's mutual
/// HMAC handshake (the 3.12+ `{sha256}` form, and the 3.11 HMAC-MD5 one from
/// older peers); a peer with another key is refused with
/// [`Error::Authentication`] and nothing it sends is read as a message.
/// Without an authkey, connections are not authenticated (as in Python).
///
/// The socket is close-on-exec. A Unix path is removed when the listener is
/// closed or dropped; binding over an existing path fails, as in Python.
/// All methods take `&self`: one thread may `accept` while another `close`s,
/// which wakes it with [`Error::Closed`].
///
/// Python: `multiprocessing.connection.Listener`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// use mp::connection::{Client, Listener};
/// use std::net::SocketAddr;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let l = Listener::bind("127.0.0.1:0".parse::<SocketAddr>().unwrap(), Some(b"secret".as_slice()))?;
///     let addr = l.address();
///     let t = std::thread::spawn(move || -> mp::Result<()> {
///         let c = Client::connect(addr, Some(b"secret".as_slice()))?;
///         c.send_bytes(b"hello")?;
///         Ok(())
///     });
///     let conn = l.accept()?;
///     assert_eq!(conn.recv_bytes()?, b"hello");
///     t.join().unwrap()
/// }
/// ```
pub struct Listener {
    /// The socket; `None` once closed. Calls clone the `Arc`, so `close()` in
    /// another thread never closes an fd that an `accept` is polling.
    socket: Mutex<Option<Arc<Socket>>>,
    /// Set by `close()`.
    closed: AtomicBool,
    /// The bound address (with the real port).
    address: Address,
    /// The authkey, if connections are authenticated.
    authkey: Option<Vec<u8>>,
    /// The path to remove on close (Unix path sockets only).
    unlink: Mutex<Option<PathBuf>>,
    /// The peer of the last accepted connection.
    last_accepted: Mutex<Option<Address>>,
    /// The message limit given to accepted connections.
    max_len: AtomicU64,
}

impl Listener {
    /// Binds `address` and listens on it. Port 0 picks a free TCP port (see
    /// [`address`](Listener::address)).
    ///
    /// `authkey`: `Some(key)` makes every [`accept`](Listener::accept) run the
    /// authkey handshake (an empty key too, as in Python 3.13); `None` accepts
    /// anyone.
    ///
    /// Python: `Listener(address, authkey=authkey)`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`]: the address is in use (`AddrInUse`, also for an existing
    /// Unix path), not available, or not permitted.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::connection::{Address, Listener};
    /// let l = Listener::bind(Address::Abstract(format!("doc-{}", std::process::id())), None).unwrap();
    /// assert!(matches!(l.address(), Address::Abstract(_)));
    /// // The same name twice is an error.
    /// assert!(Listener::bind(l.address(), None).is_err());
    /// ```
    pub fn bind(address: impl Into<Address>, authkey: Option<&[u8]>) -> Result<Listener> {
        let requested = address.into();
        let (socket, address, unlink) = match &requested {
            Address::Tcp(a) => {
                let l = TcpListener::bind(a)?;
                let bound = l.local_addr()?;
                (Socket::Tcp(l), Address::Tcp(bound), None)
            }
            Address::Unix(p) => {
                let l = UnixListener::bind(p)?;
                (Socket::Unix(l), requested.clone(), Some(p.clone()))
            }
            Address::Abstract(n) => {
                let l = UnixListener::bind_addr(&Address::abstract_addr(n)?)?;
                (Socket::Unix(l), requested.clone(), None)
            }
        };
        // Non-blocking, so that `accept` waits in `poll` (with a deadline, and
        // woken by `close`) and a connection reset between the two never blocks.
        if let Err(e) = fd::set_nonblocking(socket.as_fd(), true) {
            if let Some(path) = &unlink {
                let _ = std::fs::remove_file(path);
            }
            return Err(e.into());
        }
        Ok(Listener {
            socket: Mutex::new(Some(Arc::new(socket))),
            closed: AtomicBool::new(false),
            address,
            authkey: authkey.map(<[u8]>::to_vec),
            unlink: Mutex::new(unlink),
            last_accepted: Mutex::new(None),
            max_len: AtomicU64::new(DEFAULT_MAX_MESSAGE_LEN),
        })
    }

    /// Waits for a connection, runs the authkey handshake (if this listener has
    /// a key) and returns the connection.
    ///
    /// Blocks until a peer connects and, with an authkey, until it has answered
    /// (a peer that connects and stays silent blocks this call, as in Python;
    /// use [`accept_timeout`](Listener::accept_timeout) against that). The
    /// listener stays usable after a failed handshake.
    ///
    /// Python: `Listener.accept()`.
    ///
    /// # Errors
    ///
    /// [`Error::Authentication`] when the peer's key differs or it does not
    /// speak the handshake (the peer gets `#FAILURE#`; the connection is
    /// closed), [`Error::Closed`] once the listener is closed (also when closed
    /// by another thread during the wait), [`Error::Io`].
    pub fn accept(&self) -> Result<Connection> {
        self.accept_deadline(None)
    }

    /// Like [`accept`](Listener::accept), but gives up with [`Error::Timeout`]
    /// if no peer has connected and finished the handshake within `timeout`.
    ///
    /// # Errors
    ///
    /// As [`accept`](Listener::accept), plus [`Error::Timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// use mp::connection::Listener;
    /// use std::time::Duration;
    /// let l = Listener::bind("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap(), None).unwrap();
    /// assert!(matches!(l.accept_timeout(Duration::from_millis(10)), Err(mp::Error::Timeout)));
    /// l.close();
    /// assert!(matches!(l.accept(), Err(mp::Error::Closed)));
    /// ```
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Connection> {
        self.accept_deadline(deadline_after(timeout))
    }

    /// `accept` with an absolute deadline covering the wait and the handshake.
    pub(crate) fn accept_deadline(&self, deadline: Option<Instant>) -> Result<Connection> {
        let conn = self.accept_unauthenticated(deadline)?;
        if let Some(key) = &self.authkey {
            authenticate_accepted(&conn, key, deadline)?;
        }
        Ok(conn)
    }

    /// Accepts one connection without running the handshake, so that a server
    /// can run it elsewhere (for example on a thread per connection, so a slow
    /// peer does not hold up the others) with [`authenticate_accepted`] and
    /// [`authkey`](Listener::authkey).
    pub(crate) fn accept_unauthenticated(&self, deadline: Option<Instant>) -> Result<Connection> {
        loop {
            let socket = self.socket()?;
            match socket.accept() {
                Ok((stream, peer)) => {
                    *self.last_accepted.lock().unpoison() = peer;
                    let conn = Connection::from_fd(stream, true, true);
                    conn.set_max_message_len(self.max_len.load(Ordering::Relaxed));
                    return Ok(conn);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // A peer that reset before we accepted: wait for the next one.
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) if self.is_closed() => return Err(Error::Closed),
                Err(e) => return Err(e.into()),
            }
            if self.is_closed() {
                return Err(Error::Closed);
            }
            if !fd::wait_for(socket.as_fd(), fd::READABLE, deadline)? {
                return Err(Error::Timeout);
            }
        }
    }

    /// The socket for one call, or `Closed`.
    fn socket(&self) -> Result<Arc<Socket>> {
        let guard = self.socket.lock().unpoison();
        guard.clone().ok_or(Error::Closed)
    }

    /// The listening socket for [`wait`](super::wait), kept open by its `Arc`
    /// while polled (a concurrent `close()` does not free the fd).
    pub(super) fn wait_source(&self) -> Result<Arc<dyn AsFd + Send + Sync>> {
        Ok(self.socket()?)
    }

    /// The address this listener is bound to, with the real port for a TCP
    /// port 0; pass it to [`Client::connect`].
    ///
    /// Python: `Listener.address`.
    pub fn address(&self) -> Address {
        self.address.clone()
    }

    /// The peer address of the last accepted connection: `None` before the
    /// first one, or when the peer is an unnamed Unix socket (Python: `''`).
    ///
    /// Python: `Listener.last_accepted`.
    pub fn last_accepted(&self) -> Option<Address> {
        self.last_accepted.lock().unpoison().clone()
    }

    /// Sets the largest message the connections accepted from now on take
    /// (see [`Connection::set_max_message_len`]); default 4 GiB. Peers of a
    /// listener may be untrusted: a lower limit caps what one frame can make
    /// this process allocate. The handshake is capped at 256 bytes regardless.
    pub fn set_max_message_len(&self, max: u64) {
        self.max_len.store(max, Ordering::Relaxed);
    }

    /// Stops listening: later (and in-progress) `accept` calls give
    /// [`Error::Closed`], new peers are refused, and a Unix path is removed.
    /// Connections already accepted are not affected. Closing twice is fine.
    ///
    /// Python: `Listener.close()`.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let socket = self.socket.lock().unpoison().take();
        if let Some(socket) = socket {
            // Wakes threads polling it in `accept`; they drop the last `Arc`.
            // An error here (already shut down) leaves nothing to wake.
            let _ = fd::shutdown(socket.as_fd());
        }
        if let Some(path) = self.unlink.lock().unpoison().take() {
            // Already removed by someone else is fine.
            let _ = std::fs::remove_file(path);
        }
    }

    /// True after [`close`](Listener::close).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key itself.
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("authenticated", &self.authkey.is_some())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.close();
    }
}

/// Connects to a [`Listener`] (ours or CPython's).
///
/// A namespace for [`Client::connect`], as Python's `Client` is a function.
///
/// Python: `multiprocessing.connection.Client`.
#[derive(Debug)]
pub enum Client {}

impl Client {
    /// Connects to `address` and, with an authkey, runs the mutual handshake
    /// (answering the listener's challenge, then challenging it). The result is
    /// a duplex [`Connection`].
    ///
    /// Python: `Client(address, authkey=authkey)`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when nothing listens there (`ConnectionRefused`,
    /// `NotFound`), [`Error::Authentication`] when the keys differ or the
    /// listener does not speak the handshake.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// use mp::connection::{Address, Client, Listener};
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let name = Address::Abstract(format!("client-doc-{}", std::process::id()));
    ///     let l = Listener::bind(name.clone(), Some(b"right".as_slice()))?;
    ///     let t = std::thread::spawn(move || l.accept().map(|_| ()));
    ///     let r = Client::connect(name, Some(b"wrong".as_slice()));
    ///     assert!(matches!(r, Err(mp::Error::Authentication(_))));
    ///     assert!(matches!(t.join().unwrap(), Err(mp::Error::Authentication(_))));
    ///     Ok(())
    /// }
    /// ```
    pub fn connect(address: impl Into<Address>, authkey: Option<&[u8]>) -> Result<Connection> {
        Client::connect_deadline(&address.into(), authkey, None)
    }

    /// Like [`connect`](Client::connect), but gives up with [`Error::Timeout`]
    /// when connecting and the handshake take longer than `timeout`.
    ///
    /// # Errors
    ///
    /// As [`connect`](Client::connect), plus [`Error::Timeout`].
    pub fn connect_timeout(
        address: impl Into<Address>,
        authkey: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Connection> {
        Client::connect_deadline(&address.into(), authkey, deadline_after(timeout))
    }

    /// `connect` with an absolute deadline (`None`: none).
    pub(crate) fn connect_deadline(
        address: &Address,
        authkey: Option<&[u8]>,
        deadline: Option<Instant>,
    ) -> Result<Connection> {
        let conn = Client::connect_unauthenticated(address, deadline)?;
        if let Some(key) = authkey {
            authenticate_client(&conn, key, deadline)?;
        }
        Ok(conn)
    }

    /// Connects without the handshake (run [`authenticate_client`] on it).
    pub(crate) fn connect_unauthenticated(
        address: &Address,
        deadline: Option<Instant>,
    ) -> Result<Connection> {
        let stream: OwnedFd = match address {
            Address::Tcp(a) => {
                let s = match deadline {
                    None => TcpStream::connect(a)?,
                    Some(d) => {
                        let left = d.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Err(Error::Timeout);
                        }
                        TcpStream::connect_timeout(a, left).map_err(|e| match e.kind() {
                            std::io::ErrorKind::TimedOut => Error::Timeout,
                            _ => Error::Io(e),
                        })?
                    }
                };
                s.set_nodelay(true)?;
                s.into()
            }
            Address::Unix(p) => UnixStream::connect(p)?.into(),
            Address::Abstract(n) => UnixStream::connect_addr(&Address::abstract_addr(n)?)?.into(),
        };
        if !matches!(address, Address::Tcp(_)) {
            super::widen_send_buffer(stream.as_fd());
        }
        Ok(Connection::from_fd(stream, true, true))
    }
}

/// Runs the listener's half of the authkey handshake on a connection that is
/// already open (see [`Listener::accept_unauthenticated`]).
pub(crate) fn authenticate_accepted(
    conn: &Connection,
    authkey: &[u8],
    deadline: Option<Instant>,
) -> Result<()> {
    auth::server_handshake(conn, authkey, deadline)
}

/// Runs the client's half of the authkey handshake on an open connection.
pub(crate) fn authenticate_client(
    conn: &Connection,
    authkey: &[u8],
    deadline: Option<Instant>,
) -> Result<()> {
    auth::client_handshake(conn, authkey, deadline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_and_client_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Listener>();
        check::<Address>();
    }

    #[test]
    fn close_wakes_a_blocked_accept() {
        let l = Arc::new(
            Listener::bind(
                Address::Abstract(format!("wake-{}", std::process::id())),
                None,
            )
            .unwrap(),
        );
        let l2 = Arc::clone(&l);
        let t = std::thread::spawn(move || l2.accept().map(|_| ()));
        // Whether the thread has reached poll yet or not, it must see Closed.
        l.close();
        assert!(matches!(t.join().unwrap(), Err(Error::Closed)));
    }

    #[test]
    fn debug_hides_the_authkey() {
        let l = Listener::bind(
            Address::Abstract(format!("dbg-{}", std::process::id())),
            Some(b"hunter2"),
        )
        .unwrap();
        let s = format!("{l:?}");
        // The key as text, and as the byte list a derived Debug would print
        // (the pid in the address may itself contain "104", so look for the run).
        assert!(
            s.contains("authenticated: true")
                && !s.contains("hunter2")
                && !s.contains("104, 117, 110"),
            "{s}"
        );
    }

    #[test]
    fn unix_path_is_removed_on_close() {
        let path =
            std::env::temp_dir().join(format!("mp-listener-unit-{}.sock", std::process::id()));
        let l = Listener::bind(path.clone(), None).unwrap();
        assert!(path.exists());
        drop(l);
        assert!(!path.exists());
    }
}
