//! Remote workers: a pool whose workers connect over TCP
//! ([`PoolBuilder::listen`], [`PoolBuilder::cluster`]).
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

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::child::{self, Call, Channel, Reply, Setup, WireFailure};
use super::{Pool, PoolBuilder};
use crate::cluster::rendezvous::{self, Meeting};
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

impl PoolBuilder {
    /// Builds a pool whose workers connect over TCP: it listens on `addr`,
    /// and any process of this same program started (by anything, anywhere)
    /// with `MULTIPROCESS_CONNECT=host:port` and the authkey in
    /// `MULTIPROCESS_AUTHKEY` (or a file named by `MULTIPROCESS_AUTHKEY_FILE`)
    /// becomes one of its workers in `mp::init()`.
    ///
    /// [`processes`](PoolBuilder::processes) is the most workers served at
    /// once (default [`cpu_count`](crate::cpu_count)); workers may join and
    /// leave while the pool runs. Tasks wait until a worker has joined. A
    /// worker that leaves or is lost fails only the task it was running, with
    /// [`Error::WorkerLost`] (the pid is the pool's local relay for that
    /// worker); its other tasks go to other workers.
    ///
    /// Every connection passes CPython's HMAC handshake both ways, and the
    /// worker's executable must have the same contents as this one (a SHA-256
    /// is compared); a worker with another key or build is refused, with a
    /// message on both sides. A task whose argument holds shared memory, an OS
    /// lock, a queue or a connection fails with [`Error::Encode`] naming the
    /// Manager equivalent.
    ///
    /// Beyond Python (Ray's `Pool(ray_address=...)`, dask's workers joining
    /// a scheduler).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `addr` cannot be bound; [`Error::Encode`] when the
    /// initializer's argument holds fds; as [`build`](PoolBuilder::build).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let pool = mp::Pool::builder().processes(2).listen("127.0.0.1:0", b"secret")?;
    ///     let addr = pool.listen_address().unwrap();
    ///     // Start workers: MULTIPROCESS_CONNECT=<addr> MULTIPROCESS_AUTHKEY=secret ./this-program
    ///     assert_eq!(addr.ip().to_string(), "127.0.0.1");
    ///     Ok(())
    /// }
    /// ```
    pub fn listen(self, addr: impl ToSocketAddrs, authkey: impl AsRef<[u8]>) -> Result<Pool> {
        let listener = TcpListener::bind(addr)?;
        self.listen_on(listener, authkey.as_ref().to_vec())
    }

    fn listen_on(self, listener: TcpListener, authkey: Vec<u8>) -> Result<Pool> {
        if let Some(Ok(init)) = &self.init
            && !init.arg.fds.is_empty()
        {
            return Err(Error::Encode(format!(
                "the initializer's argument cannot go to remote workers: {NOT_ACROSS_MACHINES_ARG}"
            )));
        }
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let (tx, rx) = UnixDatagram::pair()?;
        tx.set_nonblocking(true)?;
        let spec = RemoteSpec {
            listener,
            address,
            authkey,
            build_id: cluster::build_id(),
            events_tx: tx,
            events_rx: Mutex::new(rx),
        };
        self.build_with(Some(spec))
    }

    /// SPMD: in rank 0 of a job started by a launcher (see
    /// [`cluster::rank`](crate::cluster::rank)), a pool whose workers are the
    /// other ranks (their `mp::init()` made them workers); waits until every
    /// rank has joined, at most `MULTIPROCESS_CLUSTER_TIMEOUT` seconds
    /// (default 60; see [`cluster_timeout`](PoolBuilder::cluster_timeout)).
    /// Outside a launcher, or in a job of one process, the pool of local
    /// workers [`build`](PoolBuilder::build) gives: the same program runs on a
    /// laptop and on a cluster.
    ///
    /// How the ranks find rank 0 and which key they share: docs/cluster.md.
    ///
    /// Python/mpi4py: `MPIPoolExecutor()` under `mpiexec -n N python -m mpi4py.futures`.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] naming the ranks that did not join in time;
    /// [`Error::Value`] when rank 0's address cannot be found, or in a rank
    /// above 0 (started with `MULTIPROCESS_SPMD=0`); as
    /// [`listen`](PoolBuilder::listen).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let pool = mp::Pool::builder().processes(2).cluster()?;
    ///     let sum: u64 = pool.map(|x: u64| x * x, 0..100)?.into_iter().sum();
    ///     assert_eq!(sum, 328350);
    ///     Ok(())
    /// }
    /// ```
    pub fn cluster(self) -> Result<Pool> {
        self.cluster_timeout(rendezvous::timeout())
    }

    /// [`cluster`](PoolBuilder::cluster), waiting at most `timeout` for the
    /// other ranks.
    ///
    /// # Errors
    ///
    /// As [`cluster`](PoolBuilder::cluster).
    pub fn cluster_timeout(self, timeout: Duration) -> Result<Pool> {
        let deadline = Instant::now() + timeout;
        let Some(rank) = cluster::rank().filter(|r| r.size > 1) else {
            return self.build();
        };
        if rank.rank != 0 {
            return Err(Error::value(format!(
                "{rank}: only rank 0 builds the cluster pool (the other ranks serve it from mp::init(); \
                 MULTIPROCESS_SPMD=0 turned that off)"
            )));
        }
        let key = rendezvous::spmd_authkey(&rank)?;
        let get = |k: &str| std::env::var(k).ok();
        let (listener, file) = match rendezvous::meeting(&rank, &get)? {
            Meeting::Addr(a) => {
                let port = a
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .ok_or_else(|| Error::value(format!("{a}: rank 0's address needs a port")))?;
                (TcpListener::bind(("0.0.0.0", port))?, None)
            }
            Meeting::File { path, local } => {
                let l = TcpListener::bind(if local { "127.0.0.1:0" } else { "0.0.0.0:0" })?;
                let host = if local {
                    "127.0.0.1".to_string()
                } else {
                    std::env::var("MULTIPROCESS_ADVERTISE_ADDR")
                        .unwrap_or_else(|_| cluster::wire::hostname())
                };
                let addr = format!("{host}:{}", l.local_addr()?.port());
                rendezvous::publish(&path, rank.job_id.as_deref().unwrap_or(""), &addr)?;
                (l, Some(path))
            }
        };
        let built = self
            .processes(rank.size - 1)
            .listen_on(listener, key)
            .and_then(|pool| {
                pool.wait_for_ranks(rank.size, deadline, timeout)
                    .map(|()| pool)
            });
        if let Some(path) = file {
            let _ = std::fs::remove_file(path);
        }
        built
    }
}

impl Pool {
    /// Where a listening pool ([`PoolBuilder::listen`],
    /// [`PoolBuilder::cluster`]) accepts workers, with the real port for a
    /// port 0; `None` for a pool of local workers.
    ///
    /// Beyond Python.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// mp::init();
    /// let local = mp::Pool::new(1).unwrap();
    /// assert_eq!(local.listen_address(), None);
    /// ```
    pub fn listen_address(&self) -> Option<SocketAddr> {
        self.inner.remote.as_ref().map(|r| r.address)
    }

    /// Waits until ranks `1..size` have joined.
    fn wait_for_ranks(&self, size: usize, deadline: Instant, timeout: Duration) -> Result<()> {
        let Some(spec) = &self.inner.remote else {
            return Ok(());
        };
        let mut joined = vec![false; size];
        joined[0] = true;
        let rx = spec.events_rx.lock().unpoison();
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
                    spec.address
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
            // A peer that reset before we accepted, or out of fds for a moment.
            Err(_) => {}
        }
        let polled = conn.with_fd(|pool| {
            fd::poll(
                &[(listener.as_fd(), fd::READABLE), (pool, libc::POLLRDHUP)],
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
    let polled = conn.with_fd(|pool| {
        tcp.with_fd(|t| fd::poll(&[(t, fd::READABLE), (pool, libc::POLLRDHUP)], None))
    });
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
