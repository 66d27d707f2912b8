//! The client side: where a manager lives, and this process's connections to it.
//!
//! Like CPython's `BaseProxy`, a proxy carries only the server's address, the
//! authkey and the object's id; it connects lazily. Each thread of a process
//! keeps one connection per manager (CPython's per-thread `_tls.connection`), so
//! a proxy deserialized in a grandchild just works, threads never wait on each
//! other's blocking calls, and an `RLock` is owned by the thread that took it.
//! The connection closes when its thread ends, or when the [`Manager`] that
//! started the server shuts it down.
//!
//! [`Manager`]: super::Manager

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};

use serde::{Deserialize, Serialize};

use crate::connection::{Address, Client};
use crate::error::{Error, Result};
use crate::reduction::fnv1a;

use super::channel::Channel;
use super::protocol::{Reply, Request, Response};

/// A manager's address and authkey: what a proxy needs to reach it.
#[derive(Clone, Serialize, Deserialize)]
#[serde(from = "WireServerRef", into = "WireServerRef")]
pub(crate) struct ServerRef {
    /// Where the server listens.
    pub(crate) addr: Address,
    /// The key of the connection handshake.
    pub(crate) authkey: Vec<u8>,
    /// The connection-cache key, computed once.
    key: u64,
}

/// The serialized form of a [`ServerRef`] (without the derived key).
#[derive(Serialize, Deserialize)]
struct WireServerRef {
    /// Where the server listens.
    addr: Address,
    /// The key of the connection handshake.
    authkey: Vec<u8>,
}

impl From<WireServerRef> for ServerRef {
    fn from(w: WireServerRef) -> Self {
        ServerRef::new(w.addr, w.authkey)
    }
}

impl From<ServerRef> for WireServerRef {
    fn from(s: ServerRef) -> Self {
        WireServerRef {
            addr: s.addr,
            authkey: s.authkey,
        }
    }
}

impl fmt::Debug for ServerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the authkey.
        f.debug_struct("ServerRef")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// This thread's connections, by server key.
    static CONNS: RefCell<HashMap<u64, Arc<Channel>>> = RefCell::new(HashMap::new());
}

/// Every live connection of this process, by server key, so that a shutdown
/// can close the ones of other threads too.
static OPEN: Mutex<Vec<(u64, Weak<Channel>)>> = Mutex::new(Vec::new());

impl ServerRef {
    /// The cache key: address and authkey.
    pub(crate) fn key(&self) -> u64 {
        self.key
    }

    /// The server at `addr` with `authkey`.
    pub(crate) fn new(addr: Address, authkey: Vec<u8>) -> ServerRef {
        let mut bytes = addr.to_string().into_bytes();
        bytes.push(0);
        bytes.extend_from_slice(&authkey);
        ServerRef {
            key: fnv1a(&bytes),
            addr,
            authkey,
        }
    }

    /// This thread's connection to the server, made on first use.
    fn connection(&self, key: u64) -> Result<Arc<Channel>> {
        let cached = CONNS.with(|c| c.borrow().get(&key).cloned());
        if let Some(conn) = cached {
            if !conn.is_closed() {
                return Ok(conn);
            }
        }
        let conn = match Client::connect(&self.addr, Some(&self.authkey)) {
            Ok(conn) => conn,
            // A wrong key is answered with a failure message; a server that
            // hangs up in the middle of the handshake has most likely died
            // (killed while this thread connected). If nothing listens any
            // more, the manager is gone: `Closed`, not a key problem.
            Err(Error::Authentication(why)) => {
                let gone = server_gone(&self.addr);
                return Err(if gone {
                    Error::Closed
                } else {
                    Error::Authentication(why)
                });
            }
            Err(e) => return Err(lost(e)),
        };
        let conn = Arc::new(self.channel(&conn)?);
        self.remember(key, conn.clone());
        Ok(conn)
    }

    /// Connects this thread now (instead of at the first call), so that a bad
    /// address or key shows as such.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when nothing listens there, [`Error::Authentication`] on a
    /// wrong key.
    pub(crate) fn connect_now(&self) -> Result<()> {
        let key = self.key();
        CONNS.with(|c| c.borrow_mut().remove(&key));
        let conn = Client::connect(&self.addr, Some(&self.authkey))?;
        let conn = Arc::new(self.channel(&conn)?);
        self.remember(key, conn);
        Ok(())
    }

    /// The channel over an authenticated connection: through shared memory
    /// when the server is on this machine (a Unix-socket address).
    fn channel(&self, conn: &crate::connection::Connection) -> Result<Channel> {
        match self.addr {
            Address::Unix(_) | Address::Abstract(_) => Channel::local_client(conn).map_err(lost),
            Address::Tcp(_) => Channel::from_connection(conn),
        }
    }

    /// Caches `conn` as this thread's connection to the server.
    fn remember(&self, key: u64, conn: Arc<Channel>) {
        {
            let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
            open.retain(|(_, w)| w.strong_count() > 0);
            open.push((key, Arc::downgrade(&conn)));
        }
        CONNS.with(|c| c.borrow_mut().insert(key, conn));
    }

    /// Sends one request and waits for its answer.
    ///
    /// # Errors
    ///
    /// The error the server answered with; [`Error::Closed`] when the server
    /// is gone (shut down, killed, or refusing connections); [`Error::Io`] for
    /// another failure to reach it; [`Error::Authentication`] on a wrong key.
    pub(crate) fn request(&self, req: &Request) -> Result<Reply> {
        let bytes = postcard::to_stdvec(req).map_err(Error::encode)?;
        let key = self.key();
        let conn = self.connection(key)?;
        let response = conn
            .send(&bytes)
            .and_then(|()| conn.recv(true, |frame| postcard::from_bytes::<Response>(frame)));
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                // This connection is finished either way.
                conn.close();
                CONNS.with(|c| c.borrow_mut().remove(&key));
                return Err(lost(e));
            }
        };
        response
            .map_err(|e| Error::decode(format!("corrupt answer from the manager: {e}")))?
            .map_err(|e| e.into_error())
    }
}

/// Whether the manager at `addr` is gone: nothing accepts there, or what
/// accepts hangs up instead of opening the handshake (a live server sends its
/// challenge at once; a dying one may still accept for a moment).
fn server_gone(addr: &Address) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    match Client::connect_unauthenticated(addr, Some(deadline)) {
        Err(e) => matches!(lost(e), Error::Closed),
        Ok(conn) => match conn.recv_frame(Some(deadline)) {
            Ok(_) | Err(Error::Timeout) => false,
            Err(e) => matches!(lost(e), Error::Closed),
        },
    }
}

/// The error for a connection that broke mid-call: the server went away.
fn lost(e: Error) -> Error {
    match e {
        Error::Eof | Error::Closed | Error::Decode(_) => Error::Closed,
        Error::Io(io) if is_gone(&io) => Error::Closed,
        other => other,
    }
}

/// Whether an I/O error means that nothing serves the address any more.
fn is_gone(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused
            | NotFound
            | BrokenPipe
            | ConnectionReset
            | ConnectionAborted
            | NotConnected
    )
}

/// Closes every connection of this process to the server with `key` (the
/// server was shut down): later calls reconnect, and fail with `Closed`.
pub(crate) fn forget_server(key: u64) {
    let conns: Vec<Arc<Channel>> = {
        let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
        let found = open
            .iter()
            .filter(|(k, _)| *k == key)
            .filter_map(|(_, w)| w.upgrade())
            .collect();
        open.retain(|(k, w)| *k != key && w.strong_count() > 0);
        found
    };
    for c in conns {
        c.close();
    }
    CONNS.with(|c| c.borrow_mut().remove(&key));
}

/// The answer had another shape than the request calls for.
pub(crate) fn unexpected(reply: Reply) -> Error {
    Error::decode(format!("unexpected answer from the manager: {reply:?}"))
}
