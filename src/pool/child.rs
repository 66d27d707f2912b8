//! The pool worker: CPython's `pool.worker()`, a free function over one channel,
//! and the wire format it shares with the parent's handler.
//!
//! A worker is a child started by `spawn::start` whose target is [`worker_main`].
//! Its channel is the bootstrap socket (`child_context().parent_conn`): duplex,
//! and able to carry file descriptors, so a task may hold handles such as a
//! `Connection`.
//!
//! # Frames
//!
//! Every frame is `body ++ postcard(trailer) ++ seq ++ [trailer length]`, `seq`
//! a little-endian `u32`. The body is an encoded value (`reduction::encode`),
//! whose envelope says how many fds ride with it; the trailer says what the
//! frame is. Putting the trailer last lets both sides build a frame by
//! appending to the body's `Vec` and take it apart by truncating, with no copy
//! of the body; the fixed-width seq lets the parent number a task it built
//! earlier when it picks the worker.
//!
//! | direction | trailer | body |
//! |---|---|---|
//! | parent → worker, bootstrap payload | [`Setup`] | the initializer's argument; the last fd is the worker's [`Gate`] |
//! | parent → worker | [`Call`], with its seq | the task's argument (a `Vec` of items for a chunk) |
//! | worker → parent | [`Reply::Ready`] | empty: initialized, send work |
//! | worker → parent | [`Reply::InitFailed`] | a [`WireFailure`]; the worker then exits |
//! | worker → parent | [`Reply::Done`] | the encoded result, or a [`WireFailure`] |
//!
//! # Which task was running when a worker died
//!
//! A worker runs its tasks one at a time, in the order they were sent, and
//! answers them in that order. The parent keeps up to eight tasks in flight
//! per worker. Before running one, the worker claims it at the [`Gate`], so the
//! parent knows, without any message and even after a death, which task was
//! running (it fails with `WorkerLost`) and which were only sent (they go to
//! another worker); and it can take back tasks that wait behind a long one.

use std::io::Write;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use std::os::fd::{AsFd, OwnedFd};

use super::gate::{self, Gate};
use super::ring::{self, Next, WorkerRing};
use crate::connection::{Connection, Frame};
use crate::error::{Error, Result};
use crate::platform::fd;
use crate::reduction::{self, CallOutcome, Encoded, FnRef, PanicInfo, Payload};
use crate::spawn;

/// Exit code of a worker whose initializer failed.
pub(crate) const EXIT_INIT_FAILED: i32 = 1;
/// Exit code of a worker that lost its channel in a way other than EOF.
pub(crate) const EXIT_CHANNEL_BROKEN: i32 = 2;

/// The trailer of a worker's bootstrap payload.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Setup {
    /// Exit after this many tasks (`maxtasksperchild`).
    pub(crate) maxtasks: Option<u64>,
    /// The initializer, whose argument is the body.
    pub(crate) init: Option<FnRef>,
}

/// The trailer of a task frame.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Call {
    /// The task's id, echoed in the answers.
    pub(crate) id: u64,
    /// What to run on the body.
    pub(crate) func: FnRef,
}

/// The trailer of a worker's frame.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    /// The initializer (if any) ran; the worker waits for tasks.
    Ready,
    /// The initializer failed; the body is a [`WireFailure`].
    InitFailed,
    /// Task `id` finished.
    Done {
        /// The task.
        id: u64,
        /// True: the body is the encoded result; false: a [`WireFailure`].
        ok: bool,
        /// How long it ran, in nanoseconds (the parent sends tasks ahead only
        /// to a worker whose last task was short).
        ran_ns: u64,
    },
}

/// Why a task or the initializer failed, on its way to the parent.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum WireFailure {
    /// The function panicked.
    Panicked(PanicInfo),
    /// The argument did not decode.
    Decode(String),
    /// The result did not encode.
    Encode(String),
    /// Anything else.
    Other(String),
}

impl WireFailure {
    pub(crate) fn from_error(e: Error) -> Self {
        match e {
            Error::Decode(m) => WireFailure::Decode(m),
            Error::Encode(m) => WireFailure::Encode(m),
            other => WireFailure::Other(other.to_string()),
        }
    }

    /// The parent-side error, for a failure in worker `name` (pid `pid`).
    pub(crate) fn into_error(self, name: &str, pid: u32) -> Error {
        match self {
            WireFailure::Panicked(p) => p.into_error(name.to_string(), pid),
            WireFailure::Decode(m) => {
                Error::Decode(format!("in pool worker {name} (pid {pid}): {m}"))
            }
            WireFailure::Encode(m) => {
                Error::Encode(format!("in pool worker {name} (pid {pid}): {m}"))
            }
            WireFailure::Other(m) => {
                Error::Value(format!("in pool worker {name} (pid {pid}): {m}"))
            }
        }
    }
}

/// Bytes after the trailer: the seq and the trailer's length.
const TAIL: usize = 5;

/// Appends `postcard(trailer) ++ seq ++ [len]` to `buf`.
///
/// # Errors
///
/// [`Error::Encode`] if the trailer does not serialize or is longer than 255
/// bytes (never for the trailers of this module).
pub(crate) fn append_trailer<T: Serialize>(buf: &mut Vec<u8>, trailer: &T, seq: u32) -> Result<()> {
    let start = buf.len();
    let mut out =
        reduction::append_postcard(trailer, std::mem::take(buf)).map_err(Error::encode)?;
    let len = out.len() - start;
    let Ok(len) = u8::try_from(len) else {
        *buf = out;
        buf.truncate(start);
        return Err(Error::encode(
            "a pool frame trailer is longer than 255 bytes",
        ));
    };
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(len);
    *buf = out;
    Ok(())
}

/// Splits a frame into its body length, trailer and seq.
///
/// # Errors
///
/// [`Error::Decode`] for a frame too short for its trailer or a trailer that
/// does not decode.
pub(crate) fn split_trailer<T: DeserializeOwned>(frame: &[u8]) -> Result<(usize, T, u32)> {
    let n = frame.len();
    if n < TAIL {
        return Err(Error::decode("pool frame without a trailer"));
    }
    let len = frame[n - 1] as usize;
    let seq = u32::from_le_bytes(frame[n - TAIL..n - 1].try_into().expect("4 bytes"));
    let Some(body_len) = n.checked_sub(TAIL + len) else {
        return Err(Error::decode("pool frame shorter than its trailer"));
    };
    let trailer = postcard::from_bytes(&frame[body_len..n - TAIL]).map_err(Error::decode)?;
    Ok((body_len, trailer, seq))
}

/// Numbers a task frame of the parent's for the worker it goes to.
pub(crate) fn set_seq(frame: &mut [u8], seq: u32) {
    let n = frame.len();
    frame[n - TAIL..n - 1].copy_from_slice(&seq.to_le_bytes());
}

/// A task as the worker reads it.
pub(crate) struct Task {
    /// The task's id.
    pub(crate) id: u64,
    /// Its seq on this worker's gate.
    pub(crate) seq: u32,
    /// What to run.
    pub(crate) func: FnRef,
    /// The argument.
    pub(crate) arg: Payload,
}

pub(crate) fn parse_task(frame: Frame) -> Result<Task> {
    let Frame { mut bytes, fds } = frame;
    let (body_len, call, seq): (usize, Call, u32) = split_trailer(&bytes)?;
    bytes.truncate(body_len);
    Ok(Task {
        id: call.id,
        seq,
        func: call.func,
        arg: Encoded { bytes, fds },
    })
}

pub(crate) fn send_reply(
    conn: &Connection,
    mut body: Vec<u8>,
    fds: &[OwnedFd],
    reply: &Reply,
) -> Result<()> {
    append_trailer(&mut body, reply, 0)?;
    conn.send_frame(&body, fds)
}

pub(crate) fn failure_body(f: WireFailure) -> Vec<u8> {
    // A WireFailure holds only strings; if even it cannot encode, say so in one.
    reduction::encode(&f)
        .or_else(|e| reduction::encode(&WireFailure::Other(e.to_string())))
        .map(|e| e.bytes)
        .unwrap_or_default()
}

/// Exits the worker, flushing stdout first.
pub(crate) fn leave(code: i32) -> ! {
    spawn::exit_child(code)
}

/// The worker's target: runs the initializer, then tasks until the parent
/// hangs up or `maxtasks` is reached. Never returns.
///
/// Python: `multiprocessing.pool.worker(inqueue, outqueue, initializer,
/// initargs, maxtasks)`.
pub(crate) fn worker_main(payload: Payload) -> CallOutcome {
    let Some(ctx) = spawn::child_context() else {
        return CallOutcome::Failed(Error::value(
            "the pool worker loop runs only in a pool worker",
        ));
    };
    let conn = &ctx.parent_conn;
    let (Encoded { bytes, fds }, setup, mut chan) = open_setup(conn, payload);
    if let Some(init) = setup.init {
        let failure = match init.call(Encoded { bytes, fds }) {
            Ok(CallOutcome::Returned(_)) => None,
            Ok(CallOutcome::Panicked(p)) => Some(WireFailure::Panicked(p)),
            Ok(CallOutcome::Failed(e)) | Err(e) => Some(WireFailure::from_error(e)),
        };
        flush_stdio();
        if let Some(f) = failure {
            let _ = send_reply(conn, failure_body(f), &[], &Reply::InitFailed);
            leave(EXIT_INIT_FAILED);
        }
    }
    crate::platform::env::keep_freed_memory();
    if send_reply(conn, Vec::new(), &[], &Reply::Ready).is_err() {
        leave(EXIT_CHANNEL_BROKEN);
    }
    run_tasks(conn, &mut chan, setup.maxtasks)
}

/// Takes a worker's bootstrap payload apart: the initializer's argument, the
/// [`Setup`], and the gate, ring and eventfd (the payload's last three fds).
/// A payload that does not parse is answered with `InitFailed` and the
/// worker exits.
pub(crate) fn open_setup(conn: &Connection, payload: Payload) -> (Encoded, Setup, Channel) {
    let Encoded { mut bytes, mut fds } = payload;
    let parsed = split_trailer(&bytes).and_then(|(body_len, setup, _): (usize, Setup, u32)| {
        let mut take = |what: &str| {
            fds.pop()
                .ok_or_else(|| Error::decode(format!("the worker's {what} did not arrive")))
        };
        let wake = take("wake-up eventfd")?;
        let ring = WorkerRing::from_fd(take("ring")?)?;
        let gate = Gate::from_fd(take("start gate")?)?;
        Ok((
            body_len,
            setup,
            Channel {
                gate,
                ring,
                wake,
                last_seq: 0,
            },
        ))
    });
    match parsed {
        Ok((body_len, setup, chan)) => {
            bytes.truncate(body_len);
            (Encoded { bytes, fds }, setup, chan)
        }
        Err(e) => {
            let _ = send_reply(
                conn,
                failure_body(WireFailure::from_error(e)),
                &[],
                &Reply::InitFailed,
            );
            leave(EXIT_INIT_FAILED);
        }
    }
}

pub(crate) fn flush_stdio() {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
}

/// What a worker talks to the parent through besides its socket.
pub(crate) struct Channel {
    /// Which task has started.
    pub(crate) gate: Gate,
    /// Tasks in, results out.
    ring: WorkerRing,
    /// The pool's eventfd: written when the parent's scheduler sleeps.
    wake: OwnedFd,
    /// The seq of the last task read (seqs only grow).
    last_seq: u32,
}

/// The worker's ring is corrupted (a task scribbled on it, or the parent's
/// side lies): tell the parent, say why, exit.
fn ring_broken(chan: &Channel, why: &str) -> ! {
    chan.ring.poison();
    eprintln!("multiprocess: pool worker found its ring corrupted ({why}); exiting");
    leave(EXIT_CHANNEL_BROKEN)
}

/// Reads a frame from the socket; `None` when the parent hung up.
fn recv_socket(conn: &Connection) -> Option<Frame> {
    match conn.recv_frame(None) {
        Ok(frame) => Some(frame),
        Err(Error::Eof) => None,
        // The parent died with our answers unread in its socket: the kernel
        // reports a reset instead of end of file. Same meaning, same quiet
        // exit (a message from every worker would be a storm on stderr).
        Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
        Err(e) => {
            eprintln!("multiprocess: pool worker lost its channel ({e}); exiting");
            leave(EXIT_CHANNEL_BROKEN)
        }
    }
}

/// Reads the next task from the ring (or the socket, where the ring says so);
/// `None` when the parent hung up or closed the ring.
pub(crate) fn next_task(conn: &Connection, chan: &mut Channel, buf: &mut Vec<u8>) -> Option<Task> {
    let hung_up = || conn.peer_closed();
    let frame = match chan.ring.next(buf, hung_up) {
        Ok(Next::Frame) => Frame {
            bytes: std::mem::take(buf),
            fds: Vec::new(),
        },
        Ok(Next::Socket) => recv_socket(conn)?,
        Ok(Next::Closed) => return None,
        Err(why) => ring_broken(chan, &why),
    };
    match parse_task(frame) {
        Ok(t) if gate::after(t.seq, chan.last_seq) => {
            chan.last_seq = t.seq;
            Some(t)
        }
        Ok(t) => ring_broken(
            chan,
            &format!("task seq {} after seq {}", t.seq, chan.last_seq),
        ),
        Err(e) => {
            eprintln!("multiprocess: pool worker got a corrupt task ({e}); exiting");
            leave(EXIT_CHANNEL_BROKEN)
        }
    }
}

/// Sends an answer: in the ring if it fits, else on the socket (announced
/// in the ring).
pub(crate) fn send_answer(
    conn: &Connection,
    chan: &mut Channel,
    mut body: Vec<u8>,
    fds: &[OwnedFd],
    reply: &Reply,
) -> Result<()> {
    append_trailer(&mut body, reply, 0)?;
    let wake = &chan.wake;
    let wake_parent = || {
        // A full counter (never in practice) still leaves the fd readable.
        let _ = fd::write(wake.as_fd(), &1u64.to_ne_bytes());
    };
    let hung_up = || conn.peer_closed();
    let inline = fds.is_empty() && body.len() <= ring::RECORD_MAX;
    if inline {
        return chan
            .ring
            .push(Some(&body), wake_parent, hung_up)
            .map_err(Error::value);
    }
    // The frame first, so the parent finds it when it reads the marker.
    conn.send_frame(&body, fds)?;
    chan.ring
        .push(None, wake_parent, hung_up)
        .map_err(Error::value)
}

/// Runs one task: the answer's body, its fds and its trailer.
pub(crate) fn execute(task: Task) -> (Vec<u8>, Vec<OwnedFd>, Reply) {
    let began = std::time::Instant::now();
    let outcome = task.func.call(task.arg);
    flush_stdio();
    let ran_ns = began.elapsed().as_nanos().try_into().unwrap_or(u64::MAX);
    let (body, fds, ok) = match outcome {
        Ok(CallOutcome::Returned(enc)) => (enc.bytes, enc.fds, true),
        Ok(CallOutcome::Panicked(p)) => (failure_body(WireFailure::Panicked(p)), Vec::new(), false),
        Ok(CallOutcome::Failed(e)) | Err(e) => {
            (failure_body(WireFailure::from_error(e)), Vec::new(), false)
        }
    };
    let reply = Reply::Done {
        id: task.id,
        ok,
        ran_ns,
    };
    (body, fds, reply)
}

fn run_tasks(conn: &Connection, chan: &mut Channel, maxtasks: Option<u64>) -> ! {
    let mut done: u64 = 0;
    let mut buf = Vec::new();
    loop {
        let Some(task) = next_task(conn, chan, &mut buf) else {
            leave(0)
        };
        if !chan.gate.claim(task.seq) {
            // Taken back by the parent (it waited behind a long task while
            // another worker was idle): it runs there.
            continue;
        }
        let (body, fds, reply) = execute(task);
        done += 1;
        // The task ran in this address space: if it wrote on the ring, stop
        // here, before trusting it with the answer.
        if let Err(why) = chan.ring.check_own() {
            ring_broken(chan, &why);
        }
        if let Err(e) = send_answer(conn, chan, body, &fds, &reply) {
            if matches!(e, Error::Value(_)) && !conn.peer_closed() {
                ring_broken(chan, &e.to_string());
            }
            leave(EXIT_CHANNEL_BROKEN);
        }
        drop(fds);
        if maxtasks.is_some_and(|m| done >= m) {
            leave(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailers_round_trip_after_a_body() {
        let mut buf = reduction::encode(&(1u8, "x".to_string())).unwrap().bytes;
        let body = buf.clone();
        let call = Call {
            id: 77,
            func: FnRef::returning(|x: u8| x),
        };
        append_trailer(&mut buf, &call, 0).unwrap();
        set_seq(&mut buf, 0x0102_0304);
        let (n, back, seq): (usize, Call, u32) = split_trailer(&buf).unwrap();
        assert_eq!(&buf[..n], &body[..]);
        assert_eq!(back.id, 77);
        assert_eq!(back.func, call.func);
        assert_eq!(seq, 0x0102_0304);
    }

    #[test]
    fn short_or_corrupt_frames_are_errors() {
        assert!(split_trailer::<Reply>(&[]).is_err());
        assert!(split_trailer::<Reply>(&[0, 0, 0, 0, 200]).is_err());
        assert!(split_trailer::<Reply>(&[0xff, 0xff, 0, 0, 0, 0, 2]).is_err());
    }
}
