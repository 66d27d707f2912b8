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

use crate::util::Unpoison;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};

use serde::{Deserialize, Serialize};

use crate::connection::{Address, Client};
use crate::error::{Error, Result};
use crate::reduction::fnv1a;

use super::channel::Channel;
use super::protocol::{ObjId, Reply, Request, Response};
use super::refs;

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
    /// This thread's connections, by server key, with the session each is
    /// attached to.
    static CONNS: RefCell<HashMap<u64, (Arc<Channel>, u64)>> = RefCell::new(HashMap::new());
}

/// This process's session with a manager (see `refs.rs`): the lifeline
/// connection, whose end releases the session's references.
struct Session {
    /// The session's number on the server.
    id: u64,
    /// The lifeline; reference requests go over it, one at a time.
    chan: Mutex<Arc<Channel>>,
}

/// This process's sessions, by server key.
static SESSIONS: Mutex<Option<HashMap<u64, Arc<Session>>>> = Mutex::new(None);

/// The open session with the manager `key`, if any.
fn current_session(key: u64) -> Option<Arc<Session>> {
    SESSIONS
        .lock()
        .unpoison()
        .as_ref()?
        .get(&key)
        .filter(|s| !s.chan.lock().unpoison().is_closed())
        .cloned()
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

    /// This process's session with the server, opened on first use.
    fn session(&self) -> Result<Arc<Session>> {
        let key = self.key();
        if let Some(s) = current_session(key) {
            return Ok(s);
        }
        let chan = self.open_channel()?;
        let id = match exchange(&chan, &Request::OpenSession)? {
            Reply::Id(id) => id,
            other => return Err(unexpected(other)),
        };
        let mut sessions = SESSIONS.lock().unpoison();
        let sessions = sessions.get_or_insert_with(HashMap::new);
        // Another thread may have opened one meanwhile: keep the first.
        if let Some(s) = sessions.get(&key) {
            if !s.chan.lock().unpoison().is_closed() {
                chan.close();
                return Ok(s.clone());
            }
        }
        let s = Arc::new(Session {
            id,
            chan: Mutex::new(chan),
        });
        sessions.insert(key, s.clone());
        Ok(s)
    }

    /// Sends a reference request over the session's lifeline; the answer and
    /// the session.
    fn ref_request(&self, req: &Request) -> Result<(Reply, u64)> {
        let s = self.session()?;
        let chan = s.chan.lock().unpoison();
        // Only a failed lifeline is closed: closing it ends the session and
        // releases every reference of this process, which an error the
        // server answered (an object freed meanwhile) must not do.
        let reply = exchange_answer(&chan, req).inspect_err(|_| chan.close())?;
        Ok((reply?, s.id))
    }

    /// A transit reference to `id` for a proxy being serialized: its token.
    pub(crate) fn transit(&self, id: ObjId) -> Result<u64> {
        match self.ref_request(&Request::Transit(id))? {
            (Reply::Id(token), _) => Ok(token),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Claims the transit reference `token` to `id` (or takes a new one):
    /// the session now holding it.
    pub(crate) fn claim(&self, token: u64, id: ObjId) -> Result<u64> {
        let req = if token == 0 {
            Request::Incref(id)
        } else {
            Request::Claim { token, id }
        };
        match self.ref_request(&req)? {
            (Reply::Unit, session) => Ok(session),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Drops one reference of `session` to `id`, if that session is still
    /// this process's (after a shutdown or a restart there is nothing to
    /// drop: the server released it, or is another server).
    pub(crate) fn decref(&self, id: ObjId, session: u64) {
        decref(self.key(), id, session);
    }

    /// A new authenticated channel to the server.
    fn open_channel(&self) -> Result<Arc<Channel>> {
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
        let chan = Arc::new(self.channel(&conn)?);
        remember(self.key(), &chan);
        Ok(chan)
    }

    /// This thread's connection to the server (made on first use, attached
    /// to this process's session) and the session.
    fn connection(&self, key: u64) -> Result<(Arc<Channel>, u64)> {
        // A shutdown closes the session and the connections attached to it
        // together, so an open cached connection's session is still current.
        let cached = CONNS.with(|c| c.borrow().get(&key).cloned());
        if let Some((conn, sid)) = cached {
            if !conn.is_closed() {
                return Ok((conn, sid));
            }
        }
        let session = self.session()?;
        let conn = self.open_channel()?;
        match exchange(&conn, &Request::Attach(session.id))? {
            Reply::Unit => {}
            other => return Err(unexpected(other)),
        }
        CONNS.with(|c| c.borrow_mut().insert(key, (conn.clone(), session.id)));
        Ok((conn, session.id))
    }

    /// Connects this process now (instead of at the first call), so that a
    /// bad address or key shows as such.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when nothing listens there, [`Error::Authentication`] on a
    /// wrong key.
    pub(crate) fn connect_now(&self) -> Result<()> {
        let key = self.key();
        CONNS.with(|c| c.borrow_mut().remove(&key));
        // A raw connection first, for the errors as they are (`Io` when
        // nothing listens), which the proxies' path turns into `Closed`.
        Client::connect(&self.addr, Some(&self.authkey))?.close();
        self.connection(key).map(drop)
    }

    /// The channel over an authenticated connection: through shared memory
    /// when the server is on this machine (a Unix-socket address).
    fn channel(&self, conn: &crate::connection::Connection) -> Result<Channel> {
        match self.addr {
            Address::Unix(_) | Address::Abstract(_) => Channel::local_client(conn).map_err(lost),
            Address::Tcp(_) => Channel::from_connection(conn),
        }
    }

    /// Sends one request and waits for its answer.
    ///
    /// # Errors
    ///
    /// The error the server answered with; [`Error::Closed`] when the server
    /// is gone (shut down, killed, or refusing connections); [`Error::Io`] for
    /// another failure to reach it; [`Error::Authentication`] on a wrong key.
    pub(crate) fn request(&self, req: &Request) -> Result<Reply> {
        self.request_in_session(req).map(|(r, _)| r)
    }

    /// [`request`](Self::request), also giving the session that holds the
    /// references the answer brings (a created object's, a read value's).
    pub(crate) fn request_in_session(&self, req: &Request) -> Result<(Reply, u64)> {
        let key = self.key();
        let bytes = refs::sending(key, || postcard::to_stdvec(req)).map_err(Error::encode)?;
        let (conn, session) = self.connection(key)?;
        let response = conn.send(&bytes).and_then(|()| {
            conn.recv(true, |frame| {
                refs::receiving(key, session, decref, || {
                    postcard::from_bytes::<Response>(frame)
                })
            })
        });
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                // This connection is finished either way.
                conn.close();
                CONNS.with(|c| c.borrow_mut().remove(&key));
                return Err(lost(e));
            }
        };
        let reply = response
            .map_err(|e| Error::decode(format!("corrupt answer from the manager: {e}")))?
            .map_err(|e| e.into_error())?;
        Ok((reply, session))
    }
}

/// Drops one reference of `session` to `id` at the manager `key`, if that
/// session is still this process's.
pub(crate) fn decref(key: u64, id: ObjId, session: u64) {
    let Some(s) = current_session(key) else {
        return;
    };
    if s.id != session {
        return;
    }
    let chan = s.chan.lock().unpoison();
    // As in `ref_request`: an answered error leaves the lifeline open.
    if exchange_answer(&chan, &Request::Decref(id)).is_err() {
        chan.close();
    }
}

/// Registers `chan` as a connection of this process to the server `key`, so
/// that a shutdown closes it.
fn remember(key: u64, chan: &Arc<Channel>) {
    let mut open = OPEN.lock().unpoison();
    open.retain(|(_, w)| w.strong_count() > 0);
    open.push((key, Arc::downgrade(chan)));
}

/// One request and its answer over `chan` (a lifeline or a fresh
/// connection: nothing in the answer holds references).
fn exchange(chan: &Channel, req: &Request) -> Result<Reply> {
    exchange_answer(chan, req)?
}

/// [`exchange`], telling the two failures apart: the outer `Err` when the
/// channel failed (unusable now: lost, or a corrupt answer), the inner one
/// when the server answered with an error (the channel is fine).
fn exchange_answer(chan: &Channel, req: &Request) -> Result<Result<Reply>> {
    let bytes = postcard::to_stdvec(req).map_err(Error::encode)?;
    chan.send(&bytes).map_err(lost)?;
    let answer = chan
        .recv(true, |frame| postcard::from_bytes::<Response>(frame))
        .map_err(lost)?
        .map_err(|e| Error::decode(format!("corrupt answer from the manager: {e}")))?;
    Ok(answer.map_err(|e| e.into_error()))
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
/// With `keep_session` (a client of a manager that goes on serving), the
/// lifeline stays open, so this process's objects stay alive.
pub(crate) fn forget_server(key: u64, keep_session: bool) {
    let lifeline = if keep_session {
        current_session(key).map(|s| s.chan.lock().unpoison().clone())
    } else {
        if let Some(sessions) = SESSIONS.lock().unpoison().as_mut() {
            sessions.remove(&key);
        }
        None
    };
    let conns: Vec<Arc<Channel>> = {
        let mut open = OPEN.lock().unpoison();
        let found = open
            .iter()
            .filter(|(k, _)| *k == key)
            .filter_map(|(_, w)| w.upgrade())
            .filter(|c| !lifeline.as_ref().is_some_and(|l| Arc::ptr_eq(l, c)))
            .collect();
        open.retain(|(k, w)| *k != key && w.strong_count() > 0);
        if let Some(l) = &lifeline {
            open.push((key, Arc::downgrade(l)));
        }
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
