//! The remote worker: a process started by anything (a launcher rank above
//! 0, or a process with `MULTIPROCESS_CONNECT`) whose `mp::init()` connects
//! to a pool, passes the checks and serves tasks until the pool hangs up.
//!
//! Exit codes: 0 when the pool hung up (or `maxtasksperchild` was reached),
//! [`EXIT_INIT_FAILED`] when the initializer failed, [`EXIT_CHANNEL_BROKEN`]
//! when the connection broke mid-message, [`EXIT_REFUSED`] when the pool
//! refused it (authkey, build), [`EXIT_UNREACHABLE`] when the pool could not
//! be reached in time.

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use super::rendezvous::{self, Meeting};
use super::wire::{Hello, Verdict};
use super::{Rank, build_id};
use crate::connection::listener::{Address, Client, authenticate_client};
use crate::connection::{Connection, Frame};
use crate::error::{Error, Result};
use crate::platform::fd;
use crate::pool::child::{self, EXIT_CHANNEL_BROKEN, EXIT_INIT_FAILED, Reply, Setup, WireFailure};
use crate::reduction::{CallOutcome, Encoded};

/// The pool refused this worker (another authkey, another build).
pub(crate) const EXIT_REFUSED: i32 = 3;
/// The pool could not be reached in time.
pub(crate) const EXIT_UNREACHABLE: i32 = 4;

/// The environment variable that makes `mp::init()` a worker of a listening pool.
pub(crate) const CONNECT_VAR: &str = "MULTIPROCESS_CONNECT";

/// Called by `mp::init()` in a process that is not a local child: becomes a
/// remote worker (never returning) when `MULTIPROCESS_CONNECT` is set, or
/// when a launcher made this process a rank above 0; else returns.
pub(crate) fn divert() {
    if let Some(addr) = std::env::var_os(CONNECT_VAR) {
        // Our own children (a task may start processes) are not workers.
        crate::platform::env::remove_var(CONNECT_VAR);
        let addr = addr.to_string_lossy().into_owned();
        let key = match rendezvous::authkey_from_env() {
            Ok(Some(k)) => k,
            Ok(None) => fail(
                EXIT_REFUSED,
                &format!(
                    "{CONNECT_VAR}={addr} needs the pool's authkey in MULTIPROCESS_AUTHKEY or MULTIPROCESS_AUTHKEY_FILE"
                ),
            ),
            Err(e) => fail(EXIT_REFUSED, &e.to_string()),
        };
        let rank = super::rank().map(|r| r.rank as u64);
        serve(&addr, &key, rank, Instant::now() + rendezvous::timeout());
    }
    if std::env::var("MULTIPROCESS_SPMD").is_ok_and(|v| v == "0") {
        return;
    }
    let Some(rank) = super::rank() else { return };
    if rank.rank == 0 {
        return;
    }
    let deadline = Instant::now() + rendezvous::timeout();
    let get = |k: &str| std::env::var(k).ok();
    let addr = match spmd_address(&rank, &get, deadline) {
        Ok(a) => a,
        Err(e) => fail(EXIT_UNREACHABLE, &format!("{rank}: {e}")),
    };
    let key = match rendezvous::spmd_authkey(&rank) {
        Ok(k) => k,
        Err(e) => fail(EXIT_REFUSED, &e.to_string()),
    };
    serve(&addr, &key, Some(rank.rank as u64), deadline)
}

/// Rank 0's `host:port`, as a rank above 0 finds it.
fn spmd_address(
    rank: &Rank,
    get: &dyn Fn(&str) -> Option<String>,
    deadline: Instant,
) -> Result<String> {
    match rendezvous::meeting(rank, get)? {
        Meeting::Addr(a) => Ok(a),
        Meeting::File { path, .. } => {
            let job = rank.job_id.clone().unwrap_or_default();
            rendezvous::wait_published(&path, &job, deadline).map_err(|e| match e {
                Error::Timeout => Error::value(format!(
                    "rank 0 did not publish its address in {} in time",
                    path.display()
                )),
                e => e,
            })
        }
    }
}

fn fail(code: i32, why: &str) -> ! {
    eprintln!(
        "multiprocess: remote pool worker (pid {}): {why}",
        std::process::id()
    );
    crate::spawn::exit_child(code)
}

/// Connects to `addr` (retrying while nothing listens there yet, until
/// `deadline`), runs the handshake and serves tasks. Never returns.
fn serve(addr: &str, key: &[u8], rank: Option<u64>, deadline: Instant) -> ! {
    let conn = match connect(addr, deadline) {
        Ok(c) => c,
        Err(e) => fail(
            EXIT_UNREACHABLE,
            &format!("could not reach the pool at {addr}: {e}"),
        ),
    };
    if let Err(e) = authenticate_client(
        &conn,
        key,
        Some(deadline.max(Instant::now() + Duration::from_secs(10))),
    ) {
        fail(
            EXIT_REFUSED,
            &format!(
                "the pool at {addr} refused this worker: {e} (is MULTIPROCESS_AUTHKEY the pool's key?)"
            ),
        );
    }
    let id = build_id();
    let hello = Hello {
        build_id: id.to_vec(),
        rank,
        host: super::wire::hostname(),
        pid: std::process::id(),
    };
    if let Err(e) = conn.send(&hello) {
        fail(
            EXIT_CHANNEL_BROKEN,
            &format!("lost the pool at {addr}: {e}"),
        );
    }
    match conn.recv::<Verdict>() {
        Ok(Verdict::Welcome) => {}
        Ok(Verdict::Refused(why)) => fail(
            EXIT_REFUSED,
            &format!("the pool at {addr} refused this worker: {why}"),
        ),
        Err(e) => fail(
            EXIT_CHANNEL_BROKEN,
            &format!("lost the pool at {addr}: {e}"),
        ),
    }
    run(&conn)
}

fn connect(addr: &str, deadline: Instant) -> Result<Connection> {
    loop {
        let tried = addr
            .to_socket_addrs()
            .map_err(Error::from)
            .and_then(|mut it| {
                it.next()
                    .ok_or_else(|| Error::value(format!("{addr} resolves to nothing")))
            })
            .and_then(|sa: SocketAddr| {
                Client::connect_unauthenticated(&Address::Tcp(sa), Some(deadline))
            });
        match tried {
            Ok(c) => {
                let _ = c.with_fd(|f| fd::set_keepalive(f.as_fd()));
                return Ok(c);
            }
            Err(e) if Instant::now() >= deadline => return Err(e),
            // Not an address at all: no retry makes it one.
            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::InvalidInput => {
                return Err(Error::Io(e));
            }
            // Rank 0 may not listen yet, its name may not resolve yet (a
            // Kubernetes Service): try again shortly.
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Serves the pool on `conn`: the setup frame, then tasks.
fn run(conn: &Connection) -> ! {
    let Ok(Frame { mut bytes, fds }) = recv(conn) else {
        crate::spawn::exit_child(0)
    };
    let setup = match child::split_trailer::<Setup>(&bytes) {
        Ok((n, setup, _)) => {
            bytes.truncate(n);
            setup
        }
        Err(e) => fail(EXIT_CHANNEL_BROKEN, &format!("a bad setup frame: {e}")),
    };
    if let Some(init) = setup.init {
        let failure = match init.call(Encoded { bytes, fds }) {
            Ok(CallOutcome::Returned(_)) => None,
            Ok(CallOutcome::Panicked(p)) => Some(WireFailure::Panicked(p)),
            Ok(CallOutcome::Failed(e)) | Err(e) => Some(WireFailure::from_error(e)),
        };
        child::flush_stdio();
        if let Some(f) = failure {
            let _ = child::send_reply(conn, child::failure_body(f), &[], &Reply::InitFailed);
            crate::spawn::exit_child(EXIT_INIT_FAILED);
        }
    }
    if child::send_reply(conn, Vec::new(), &[], &Reply::Ready).is_err() {
        crate::spawn::exit_child(EXIT_CHANNEL_BROKEN);
    }
    let mut done: u64 = 0;
    loop {
        let Ok(frame) = recv(conn) else {
            crate::spawn::exit_child(0)
        };
        let task = match child::parse_task(frame) {
            Ok(t) => t,
            Err(e) => fail(EXIT_CHANNEL_BROKEN, &format!("a corrupt task: {e}")),
        };
        let (body, fds, reply) = child::execute(task);
        let (body, reply) = if fds.is_empty() {
            (body, reply)
        } else {
            let Reply::Done { id, ran_ns, .. } = reply else {
                unreachable!("execute answers Done")
            };
            let why = Error::Encode(super::NOT_ACROSS_MACHINES_RESULT.to_string());
            let body = child::failure_body(WireFailure::from_error(why));
            (
                body,
                Reply::Done {
                    id,
                    ok: false,
                    ran_ns,
                },
            )
        };
        drop(fds);
        if child::send_reply(conn, body, &[], &reply).is_err() {
            crate::spawn::exit_child(EXIT_CHANNEL_BROKEN);
        }
        done += 1;
        if setup.maxtasks.is_some_and(|m| done >= m) {
            crate::spawn::exit_child(0);
        }
    }
}

/// The next frame; `Err` when the pool hung up (end of file or reset).
fn recv(conn: &Connection) -> std::result::Result<Frame, ()> {
    match conn.recv_frame(None) {
        Ok(f) => Ok(f),
        Err(Error::Eof) => Err(()),
        Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Err(()),
        Err(e) => fail(EXIT_CHANNEL_BROKEN, &format!("lost the pool: {e}")),
    }
}
