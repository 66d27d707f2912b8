//! Remote workers: a pool whose workers connect over TCP
//! (`PoolBuilder::listen`, `PoolBuilder::cluster`, in `cluster/pool.rs`).
//!
//! # The seam: one relay process per remote slot
//!
//! The scheduler drives local worker processes through a socket, a
//! shared-memory ring and a [`Gate`](super::gate) and sees their death on a
//! pidfd. A remote worker has none of these, so each slot of a listening pool
//! is a small local *relay* process that the scheduler drives exactly like a
//! worker (same bootstrap, ring, gate and pidfd): the scheduler is unchanged.
//! The relay:
//!
//! 1. accepts a TCP connection on the pool's listening socket (every relay
//!    polls the same socket, so one connection goes to one free slot), runs
//!    CPython's authkey handshake, compares the worker's build id (SHA-256 of
//!    its executable) with the pool's, sends it the initializer and waits for
//!    `Ready` — refusing, logging and accepting again on any failure;
//! 2. then answers `Ready` to the scheduler and relays tasks one at a time:
//!    it claims a task at the gate when it forwards it, so the gate says
//!    which task was running remotely;
//! 3. exits when the remote worker's connection ends (end of file, reset, or
//!    TCP keepalive giving up): its death is a worker's death, so the task it
//!    was running fails with `WorkerLost` and the tasks only sent to it go to
//!    other workers; a fresh relay takes the slot and waits for the next
//!    worker to join.
//!
//! A task whose argument carries fds (shared memory, OS locks, queues) is
//! answered by the relay with [`Error::Encode`] naming the Manager
//! equivalent, never sent.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::child::{self, Call, Channel, Reply, Setup, WireFailure};
use crate::cluster::wire::{Event, Hello, Verdict};
use crate::cluster::{self, NOT_ACROSS_MACHINES_ARG};
use crate::connection::Connection;
use crate::connection::auth;
use crate::error::{Error, Result};
use crate::platform::fd;
use crate::reduction::{self, CallOutcome, Encoded, Payload};
use crate::spawn;
use crate::util::Unpoison;

/// How long a connecting worker may take over the handshake and its hello.
const ADMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Exit code of a relay whose remote worker was lost.
const EXIT_REMOTE_LOST: i32 = 5;

/// What a listening pool keeps: the socket its relays accept on, the key,
/// the build id, and the relays' event channel.
pub(crate) struct RemoteSpec {
    /// Non-blocking; each relay has a duplicate.
    listener: TcpListener,
    /// Where it listens.
    address: SocketAddr,
    /// The authkey.
    authkey: Vec<u8>,
    /// SHA-256 of this executable.
    build_id: [u8; 32],
    /// The relays' end (non-blocking: a relay never waits on the pool).
    events_tx: UnixDatagram,
    /// Ours.
    events_rx: Mutex<UnixDatagram>,
}

/// A relay's part of its bootstrap body.
#[derive(Serialize, Deserialize)]
struct RelayBody {
    authkey: Vec<u8>,
    build_id: Vec<u8>,
    /// The initializer's encoded argument (no fds: checked at `listen`).
    init: Vec<u8>,
}

impl RemoteSpec {
    /// A spec over a bound `listener` (made non-blocking) and `authkey`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the socket cannot be set up.
    pub(crate) fn new(listener: TcpListener, authkey: Vec<u8>) -> Result<RemoteSpec> {
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let (tx, rx) = UnixDatagram::pair()?;
        tx.set_nonblocking(true)?;
        Ok(RemoteSpec {
            listener,
            address,
            authkey,
            build_id: cluster::build_id(),
            events_tx: tx,
            events_rx: Mutex::new(rx),
        })
    }

    /// Where it listens.
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    /// Waits until ranks `1..size` have joined (rank 0 is this process).
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] naming the ranks missing at `deadline`.
    pub(crate) fn wait_for_ranks(
        &self,
        size: usize,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<()> {
        let mut joined = vec![false; size];
        joined[0] = true;
        let rx = self.events_rx.lock().unpoison();
        let mut buf = vec![0u8; 64 * 1024];
        while joined.iter().any(|j| !j) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let missing: Vec<String> = (0..size)
                    .filter(|r| !joined[*r])
                    .map(|r| r.to_string())
                    .collect();
                return Err(Error::Spawn(format!(
                    "cluster: rank(s) {} of {size} did not join rank 0 at {} within {timeout:?}",
                    missing.join(", "),
                    self.address
                )));
            }
            rx.set_read_timeout(Some(left))?;
            let n = match rx.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if let Ok(Event::Joined { rank: Some(r), .. }) =
                postcard::from_bytes::<Event>(&buf[..n])
                && let Some(slot) = joined.get_mut(r as usize)
            {
                *slot = true;
            }
        }
        Ok(())
    }

    /// The body of a relay's bootstrap, wrapping the initializer's argument.
    pub(crate) fn relay_body(&self, init: Vec<u8>) -> Result<Vec<u8>> {
        Ok(reduction::encode(&RelayBody {
            authkey: self.authkey.clone(),
            build_id: self.build_id.to_vec(),
            init,
        })?
        .bytes)
    }

    /// The fds a relay gets after the worker's: the listening socket, then
    /// the event channel.
    pub(crate) fn relay_fds(&self) -> Result<[OwnedFd; 2]> {
        Ok([
            self.listener.as_fd().try_clone_to_owned()?,
            self.events_tx.as_fd().try_clone_to_owned()?,
        ])
    }
}

// ---------------------------------------------------------------------------
// The relay process.

/// A remote worker admitted into a slot.
struct Remote {
    conn: Connection,
    /// `rank 2 on host (pid 123) from 10.0.0.2:4567`, for messages.
    name: String,
}

/// The relay's target: admits one remote worker, then relays tasks to it
/// until it or the pool goes. Never returns.
pub(crate) fn relay_main(payload: Payload) -> CallOutcome {
    let Some(ctx) = spawn::child_context() else {
        return CallOutcome::Failed(Error::value("the pool relay runs only in a pool relay"));
    };
    let conn = &ctx.parent_conn;
    let Encoded { bytes, mut fds } = payload;
    let (Some(events), Some(listener)) = (fds.pop(), fds.pop()) else {
        eprintln!("multiprocess: pool relay started without its sockets");
        child::leave(child::EXIT_CHANNEL_BROKEN)
    };
    let (body, setup, mut chan) = child::open_setup(conn, Encoded { bytes, fds });
    let relay: RelayBody = match reduction::decode(&body.bytes, body.fds) {
        Ok(r) => r,
        Err(e) => {
            let f = child::failure_body(WireFailure::from_error(e));
            let _ = child::send_reply(conn, f, &[], &Reply::InitFailed);
            child::leave(child::EXIT_INIT_FAILED)
        }
    };
    let listener = TcpListener::from(listener);
    let events = UnixDatagram::from(events);
    let (remote, joined) = loop {
        if let Some(r) = admit(conn, &listener, &relay, &setup, &events) {
            break r;
        }
    };
    drop(listener);
    if child::send_reply(conn, Vec::new(), &[], &Reply::Ready).is_err() {
        child::leave(child::EXIT_CHANNEL_BROKEN);
    }
    // After Ready: whoever waits for the event finds the slot ready.
    report(&events, &joined);
    serve(conn, &mut chan, &remote, setup.maxtasks)
}

fn report(events: &UnixDatagram, e: &Event) {
    if let Ok(bytes) = postcard::to_allocvec(e) {
        // Nobody reading (a full buffer) is fine: events are for whoever waits.
        let _ = events.send(&bytes);
    }
}

/// Waits for a connection on `listener`; leaves when the pool hangs up.
fn accept(conn: &Connection, listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept() {
            Ok(pair) => return pair,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // A peer that reset before we accepted, or out of fds for a
            // moment: the socket stays readable, so pause instead of spinning.
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
        let polled = conn.with_fd(|pool| {
            fd::poll(
                &[(listener.as_fd(), fd::READABLE), (pool, fd::HUNG_UP)],
                None,
            )
        });
        match polled {
            Ok(Ok(rev)) if rev[1] & fd::HUNG_UP == 0 => {}
            // The pool closed or went away: this slot is done.
            _ => child::leave(0),
        }
    }
}

/// Accepts one connection and runs every check and the initializer on it;
/// `None` when it was refused or left (said on stderr and as an event).
fn admit(
    conn: &Connection,
    listener: &TcpListener,
    relay: &RelayBody,
    setup: &Setup,
    events: &UnixDatagram,
) -> Option<(Remote, Event)> {
    let (stream, peer) = accept(conn, listener);
    let refuse = |why: String| {
        eprintln!("multiprocess: pool refused a worker from {peer}: {why}");
        report(
            events,
            &Event::Refused {
                peer: peer.to_string(),
                why,
            },
        );
    };
    let _ = stream.set_nodelay(true);
    let _ = fd::set_keepalive(stream.as_fd());
    let tcp = Connection::from_fd(OwnedFd::from(stream), true, true);
    let deadline = Instant::now() + ADMIT_TIMEOUT;
    if let Err(e) = auth::server_handshake(&tcp, &relay.authkey, Some(deadline)) {
        refuse(format!("{e} (another authkey?)"));
        return None;
    }
    let hello = match tcp.recv_timeout::<Hello>(ADMIT_TIMEOUT) {
        Ok(h) => h,
        Err(e) => {
            refuse(format!("no hello: {e}"));
            return None;
        }
    };
    let who = match hello.rank {
        Some(r) => format!("rank {r} on {} (pid {})", hello.host, hello.pid),
        None => format!("{} (pid {})", hello.host, hello.pid),
    };
    if hello.build_id != relay.build_id {
        let why = format!(
            "another build: its executable's SHA-256 starts {}, the pool's {}; run the same binary everywhere",
            cluster::short_id(&hello.build_id),
            cluster::short_id(&relay.build_id)
        );
        let _ = tcp.send(&Verdict::Refused(why.clone()));
        refuse(format!("{who}: {why}"));
        return None;
    }
    let mut frame = relay.init.clone();
    let sent = tcp.send(&Verdict::Welcome).and_then(|()| {
        child::append_trailer(
            &mut frame,
            &Setup {
                maxtasks: setup.maxtasks,
                init: setup.init,
            },
            0,
        )?;
        tcp.send_frame(&frame, &[])
    });
    if sent.is_err() {
        eprintln!("multiprocess: pool worker {who} left before it started");
        return None;
    }
    // Its initializer runs: wait for its answer, or for the pool to go.
    let polled = conn
        .with_fd(|pool| tcp.with_fd(|t| fd::poll(&[(t, fd::READABLE), (pool, fd::HUNG_UP)], None)));
    match polled {
        Ok(Ok(Ok(rev))) if rev[1] & fd::HUNG_UP == 0 => {}
        _ => child::leave(0),
    }
    let answer = match tcp.recv_frame(None) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("multiprocess: pool worker {who} left during its initializer ({e})");
            return None;
        }
    };
    match child::split_trailer::<Reply>(&answer.bytes) {
        Ok((_, Reply::Ready, _)) => {}
        Ok((_, Reply::InitFailed, _)) => {
            // The scheduler reads it as a local worker's: the pool is broken.
            let _ = conn.send_frame(&answer.bytes, &[]);
            child::leave(child::EXIT_INIT_FAILED)
        }
        _ => {
            eprintln!("multiprocess: pool worker {who} sent a bad answer to its setup");
            return None;
        }
    }
    let joined = Event::Joined {
        rank: hello.rank,
        host: hello.host.clone(),
        pid: hello.pid,
    };
    let remote = Remote {
        conn: tcp,
        name: format!("{who} from {peer}"),
    };
    Some((remote, joined))
}

/// Relays tasks to the remote worker one at a time. Never returns.
fn serve(conn: &Connection, chan: &mut Channel, remote: &Remote, maxtasks: Option<u64>) -> ! {
    let lost = |why: &dyn std::fmt::Display| -> ! {
        eprintln!(
            "multiprocess: remote pool worker {} was lost ({why}); its running task fails with WorkerLost",
            remote.name
        );
        child::leave(EXIT_REMOTE_LOST)
    };
    let mut buf = Vec::new();
    let mut done: u64 = 0;
    loop {
        // The pool hung up: dropping the connection ends the remote worker.
        let Some(task) = child::next_task(conn, chan, &mut buf) else {
            child::leave(0)
        };
        if !chan.gate.claim(task.seq) {
            continue;
        }
        let child::Task { id, seq, func, arg } = task;
        if !arg.fds.is_empty() {
            let e = Error::Encode(NOT_ACROSS_MACHINES_ARG.to_string());
            let body = child::failure_body(WireFailure::from_error(e));
            let reply = Reply::Done {
                id,
                ok: false,
                ran_ns: 0,
            };
            if child::send_answer(conn, chan, body, &[], &reply).is_err() {
                child::leave(child::EXIT_CHANNEL_BROKEN);
            }
            continue;
        }
        let mut frame = arg.bytes;
        if let Err(e) = child::append_trailer(&mut frame, &Call { id, func }, seq) {
            lost(&e);
        }
        if let Err(e) = remote.conn.send_frame(&frame, &[]) {
            lost(&e);
        }
        let answer = match remote.conn.recv_frame(None) {
            Ok(f) => f,
            Err(Error::Eof) => lost(&"it hung up"),
            Err(e) => lost(&e),
        };
        let mut body = answer.bytes;
        let reply = match child::split_trailer::<Reply>(&body) {
            Ok((n, r @ Reply::Done { id: rid, .. }, _)) if rid == id => {
                body.truncate(n);
                r
            }
            _ => lost(&"it sent a bad answer"),
        };
        if child::send_answer(conn, chan, body, &[], &reply).is_err() {
            child::leave(child::EXIT_CHANNEL_BROKEN);
        }
        done += 1;
        if maxtasks.is_some_and(|m| done >= m) {
            child::leave(0);
        }
    }
}
