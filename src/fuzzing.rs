//! Entry points for the fuzz targets (`fuzz/`) and the corrupt-input replay
//! test (`tests/bad_input.rs`). Not part of the API: hidden, unstable, and
//! only public so that those two can reach the crate's internal decoders.
//!
//! Each function takes bytes that another process could have written and
//! feeds them to one decoder through the code path the crate really uses (a
//! socket or pipe for connection frames, a queue's datagram socket for queue
//! items, the manager's buffered channel for its frames). The first byte of
//! the input is a *selector* (which type to decode as, which fds ride along,
//! which side of the handshake); the rest is what the peer sent.
//!
//! The contract, checked by the fuzzers and the replay test: no input makes
//! these functions panic, hang or allocate more than a small multiple of the
//! input (every read honours a length limit), and each returns the outcome
//! of the decode so a test can assert on it.

use std::collections::BTreeMap;
use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::connection::{Connection, auth, pickle};
use crate::error::{Error, Result};
use crate::managers::channel::Channel;
use crate::managers::protocol::{Request, Response};
use crate::platform::{fd, shm};
use crate::queues::Queue;
use crate::reduction;

/// The longest input fed through a socket or pipe: what fits in a pipe's or
/// socket's buffer, so the bytes are written before they are read and no
/// thread is needed. (libFuzzer's default `-max_len` is 4096.)
pub const MAX_STREAM_INPUT: usize = 60_000;

/// The authkey both handshake sides use.
pub const AUTHKEY: &[u8] = b"fuzz-authkey";

/// Hang guard for the reads that take a deadline.
const GUARD: Duration = Duration::from_secs(10);

/// An enum and a struct, as user messages have them.
#[derive(Debug, Serialize, Deserialize)]
enum Sample {
    /// A unit variant.
    Unit,
    /// A newtype variant.
    Number(i64),
    /// A struct variant with nested options.
    Record {
        /// A string.
        name: String,
        /// Nested options.
        flags: Vec<Option<bool>>,
        /// A float.
        ratio: f32,
    },
}

/// Splits the selector byte off `data`.
fn split(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((s, rest)) => (*s, rest),
        None => (0, &[]),
    }
}

/// Writes `bytes` into `fd` (set non-blocking: what does not fit is dropped,
/// never waited for), then closes it.
fn feed(writer: OwnedFd, bytes: &[u8]) {
    let _ = fd::set_nonblocking(writer.as_fd(), true);
    let mut off = 0;
    while off < bytes.len() {
        match fd::write(writer.as_fd(), &bytes[off..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => off += n,
        }
    }
}

/// The outcome of one receive, in a form tests compare easily: the payload
/// length, or the error.
pub type Outcome = Result<usize>;

/// CPython frames as a [`Connection`] reads them.
///
/// Selector bits: `0`: a pipe instead of a Unix socket; `1..=2`: receive with
/// `recv_bytes` (0), `recv::<Vec<u8>>` (1), `recv::<String>` (2) or
/// `recv_bytes_into` a 64-byte buffer (3); `3..=4`: the message limit, 4 GiB
/// (the default), 0, 64 or 4096 bytes. The rest of the input is the byte
/// stream; the writer closes after it.
///
/// Returns one outcome per receive, until end of file (the last one is then
/// `Err(Error::Eof)`) or at most `len / 4 + 4` receives (a corrupt header
/// makes every later receive fail the same way).
pub fn connection_frames(data: &[u8]) -> Vec<Outcome> {
    fd::ignore_sigpipe();
    let (sel, stream) = split(data);
    let stream = &stream[..stream.len().min(MAX_STREAM_INPUT)];
    let pair = if sel & 1 == 0 {
        fd::socketpair_stream().map(|(a, b)| (b, a))
    } else {
        pipe()
    };
    let (reader, writer) = match pair {
        Ok(p) => p,
        Err(e) => return vec![Err(e.into())],
    };
    let conn = Connection::from_fd(reader, true, false);
    match (sel >> 3) & 3 {
        0 => {}
        1 => conn.set_max_message_len(0),
        2 => conn.set_max_message_len(64),
        _ => conn.set_max_message_len(4096),
    }
    feed(writer, stream);
    let mut out = Vec::new();
    for _ in 0..stream.len() / 4 + 4 {
        let r = match (sel >> 1) & 3 {
            0 => conn.recv_bytes().map(|b| b.len()),
            1 => conn.recv::<Vec<u8>>().map(|b| b.len()),
            2 => conn.recv::<String>().map(|s| s.len()),
            _ => {
                let mut buf = [0u8; 64];
                conn.recv_bytes_into(&mut buf)
            }
        };
        let eof = matches!(r, Err(Error::Eof));
        out.push(r);
        if eof {
            break;
        }
    }
    out
}

/// The sans-I/O frame reader (`connection::reader::FrameReader`, which
/// `Connection` and the pool parent read through) driven directly, with no
/// socket: the stream three ways, checked against each other.
///
/// Selector bits: `0..=1`: the limit, 4 GiB (the default), 0, 64 or 4096
/// bytes; `2..=4`: a chunk size, 1 to 128 bytes. The rest is the stream,
/// then end of file. It is fed (a) in one `push`, (b) pushed in chunks, (c)
/// through `read_with` by a transport giving at most a chunk per read (a
/// short read, as a socket gives). All three must give the same frames and
/// errors, every payload no longer than the stream, and after every step the
/// reader may hold no more than twice the bytes fed plus 128 KiB (so a lying
/// header costs nothing). A broken invariant panics.
///
/// Returns (a)'s outcomes: per frame the payload length or the error, ending
/// with `Err(Error::Eof)` or the lasting corrupt-header error.
pub fn frame_reader(data: &[u8]) -> Vec<Outcome> {
    use crate::connection::reader::FrameReader;
    let (sel, stream) = split(data);
    let max = match sel & 3 {
        0 => crate::connection::DEFAULT_MAX_MESSAGE_LEN,
        1 => 0,
        2 => 64,
        _ => 4096,
    };
    let chunk = 1usize << ((sel >> 2) & 7);
    let check_memory = |r: &FrameReader, fed: usize| {
        assert!(
            r.held_bytes() <= FrameReader::memory_bound(fed),
            "{} bytes held after {fed} fed",
            r.held_bytes()
        );
    };
    // Every outcome, then the final one (end of file or the lasting error).
    let outcomes = |mut r: FrameReader| -> Vec<Outcome> {
        let mut out: Vec<Outcome> = std::iter::from_fn(|| r.pop())
            .map(|f| f.map(|f| f.bytes.len()))
            .collect();
        if let Some(last) = r.next_frame() {
            out.push(last.map(|f| f.bytes.len()));
        }
        out
    };
    let mut whole = FrameReader::new(max);
    whole.push(stream, Vec::new());
    check_memory(&whole, stream.len());
    whole.end_of_file();
    let out = outcomes(whole);

    let mut pushed = FrameReader::new(max);
    for (i, part) in stream.chunks(chunk).enumerate() {
        pushed.push(part, Vec::new());
        check_memory(&pushed, (i * chunk + part.len()).min(stream.len()));
    }
    pushed.end_of_file();

    let mut read = FrameReader::new(max);
    let mut off = 0;
    loop {
        let step = read.read_with(|buf, want, _fds| {
            let n = want.min(chunk).min(stream.len() - off);
            buf.extend_from_slice(&stream[off..off + n]);
            off += n;
            Ok::<_, std::convert::Infallible>(Some(n))
        });
        check_memory(&read, off);
        if matches!(step, Ok(Some(0))) {
            break;
        }
    }

    let render = |v: &[Outcome]| format!("{v:?}");
    let (a, b, c) = (
        render(&out),
        render(&outcomes(pushed)),
        render(&outcomes(read)),
    );
    assert_eq!(a, b, "one push and chunks of {chunk} differ");
    assert_eq!(a, c, "one push and reads of {chunk} differ");
    for n in out.iter().flatten() {
        assert!(*n <= stream.len(), "a payload longer than the stream");
    }
    assert!(
        matches!(out.last(), Some(Err(Error::Eof | Error::Decode(_)))),
        "the stream must end: {out:?}"
    );
    out
}

/// A close-on-exec pipe: `(read end, write end)`.
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

/// Fds to hand to a decoder: `n` of them, cycling through a shared-memory
/// region of 64 bytes, a socket and a pipe end (so a handle that expects one
/// kind meets the others).
fn some_fds(n: usize) -> Vec<OwnedFd> {
    let mut fds = Vec::with_capacity(n);
    for i in 0..n {
        let fd = match i % 3 {
            0 => shm::ShmRegion::create(64)
                .and_then(|r| r.fd().try_clone_to_owned())
                .ok(),
            1 => fd::socketpair_stream().ok().map(|(a, _)| a),
            _ => pipe().ok().map(|(r, _)| r),
        };
        if let Some(fd) = fd {
            fds.push(fd);
        }
    }
    fds
}

/// Decodes `bytes` as a `T` and renders it with `Debug`.
fn decode_as<T: DeserializeOwned + std::fmt::Debug>(
    bytes: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<String> {
    reduction::decode::<T>(bytes, fds).map(|v| format!("{v:?}"))
}

/// The number of types [`envelope`] can decode as.
pub const ENVELOPE_TYPES: u8 = 10;

/// The typed envelope (`reduction::decode`), as `Connection::recv`, queue
/// items and process arguments use it.
///
/// Selector: low nibble: the type (`% ENVELOPE_TYPES`): `u64`, `String`,
/// `Vec<u8>`, `(i32, String, Option<f64>)`, `BTreeMap<String, Vec<u32>>`, an
/// enum with unit, newtype and struct variants, `Vec<Sample>`, `char`, and
/// two types holding handles: a [`Connection`] and a [`Lock`](crate::Lock).
/// High nibble: how many fds arrive with the message (0 to 15: lying fd counts).
/// The rest is the message. The fds are real (a shared-memory region, a socket,
/// a pipe), so a decode that takes one builds a real handle.
///
/// Returns the decoded value's `Debug` form, or the error.
pub fn envelope(data: &[u8]) -> Result<String> {
    let (sel, bytes) = split(data);
    let fds = some_fds(usize::from(sel >> 4));
    match (sel & 0x0f) % ENVELOPE_TYPES {
        0 => decode_as::<u64>(bytes, fds),
        1 => decode_as::<String>(bytes, fds),
        2 => decode_as::<Vec<u8>>(bytes, fds),
        3 => decode_as::<(i32, String, Option<f64>)>(bytes, fds),
        4 => decode_as::<BTreeMap<String, Vec<u32>>>(bytes, fds),
        5 => decode_as::<Sample>(bytes, fds),
        6 => decode_as::<Vec<Sample>>(bytes, fds),
        7 => decode_as::<char>(bytes, fds),
        8 => decode_as::<Connection>(bytes, fds),
        _ => decode_as::<crate::Lock>(bytes, fds),
    }
}

/// Encodes `value` in the typed envelope, for building corpora and tests
/// (prefix the selector of [`envelope`] yourself).
///
/// # Errors
///
/// [`Error::Encode`] as `reduction::encode`.
pub fn encode_envelope<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    Ok(reduction::encode(value)?.bytes)
}

/// The authkey handshake, with the fuzz bytes as everything the peer sends.
///
/// Selector bit 0: we serve (`Listener::accept`'s side: challenge first) when
/// clear, we are the client (`Client::connect`'s side: answer first) when
/// set. The rest is the peer's byte stream (CPython frames); the peer then
/// stops sending but keeps reading, so our own messages always go out.
///
/// The message parsers run on the raw bytes too (`digest_and_payload`,
/// `create_response`, `verify_response` against a fixed challenge).
///
/// Returns the handshake's result: `Ok(())` only for a peer that knows
/// [`AUTHKEY`] (for the client side, a fuzz input can only get that far by
/// forging an HMAC of our random challenge).
pub fn handshake(data: &[u8]) -> Result<()> {
    fd::ignore_sigpipe();
    let (sel, stream) = split(data);
    let _ = auth::digest_and_payload(stream);
    let _ = auth::create_response(AUTHKEY, stream);
    let _ = auth::verify_response(
        AUTHKEY,
        b"{sha256}0123456789012345678901234567890123456789",
        stream,
    );
    let stream = &stream[..stream.len().min(MAX_STREAM_INPUT)];
    let (ours, peer) = fd::socketpair_stream()?;
    let conn = Connection::from_fd(ours, true, true);
    let _ = fd::set_nonblocking(peer.as_fd(), true);
    let mut off = 0;
    while off < stream.len() {
        match fd::send_with_fds(peer.as_fd(), &[IoSlice::new(&stream[off..])], &[]) {
            Ok(0) | Err(_) => break,
            Ok(n) => off += n,
        }
    }
    // Half-close: our reads see end of file after the stream, our writes
    // still land in the peer's (unread) buffer.
    nix::sys::socket::shutdown(
        std::os::fd::AsRawFd::as_raw_fd(&peer),
        nix::sys::socket::Shutdown::Write,
    )
    .map_err(Error::from)?;
    let deadline = Instant::now().checked_add(GUARD);
    let r = if sel & 1 == 0 {
        auth::server_handshake(&conn, AUTHKEY, deadline)
    } else {
        auth::client_handshake(&conn, AUTHKEY, deadline)
    };
    drop(peer);
    r
}

/// The number of types [`pickle()`](fn@pickle) can decode as.
pub const PICKLE_TYPES: u8 = 7;

/// Unpickles (`connection::pickle::loads`, what `Connection::recv_pickle`
/// does with a frame).
///
/// Selector (`% PICKLE_TYPES`): `i64`, `String`, `Vec<i64>`,
/// `(Option<i64>, String)`, `BTreeMap<String, (i64, f64, bool)>`,
/// `Vec<Vec<String>>`, `BTreeMap<String, Vec<Option<f64>>>`. The rest is the pickle.
///
/// Returns the value's `Debug` form, or the error (a pickle naming a class or
/// function is an [`Error::Decode`]; nothing runs).
pub fn pickle(data: &[u8]) -> Result<String> {
    let (sel, bytes) = split(data);
    fn loads_as<T: DeserializeOwned + std::fmt::Debug>(b: &[u8]) -> Result<String> {
        pickle::loads::<T>(b).map(|v| format!("{v:?}"))
    }
    match sel % PICKLE_TYPES {
        0 => loads_as::<i64>(bytes),
        1 => loads_as::<String>(bytes),
        2 => loads_as::<Vec<i64>>(bytes),
        3 => loads_as::<(Option<i64>, String)>(bytes),
        4 => loads_as::<BTreeMap<String, (i64, f64, bool)>>(bytes),
        5 => loads_as::<Vec<Vec<String>>>(bytes),
        _ => loads_as::<BTreeMap<String, Vec<Option<f64>>>>(bytes),
    }
}

/// Pickles `value` (protocol 3), for building corpora and tests.
///
/// # Errors
///
/// [`Error::Encode`].
pub fn dumps<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    pickle::dumps(value)
}

/// A queue datagram, received by a real [`Queue`] (`get_timeout`: the
/// receive buffer, truncation check and item decode).
///
/// Selector bits: `0..=1`: the item type, `u64`, `String`, `Vec<u8>` or
/// `Connection` (a handle); `2..=3`: what rides along: nothing, three fds
/// (socket, pipe, region), a sealed memfd holding the `tail`, or an
/// unsealed memfd holding it. Then two bytes (little endian): the
/// datagram's length, the datagram, and the `tail` (the memfd's contents).
///
/// Returns the item's `Debug` form, or the error of sending the datagram or
/// of the `get`.
pub fn queue_item(data: &[u8]) -> Result<String> {
    let (sel, rest) = split(data);
    let n = match rest {
        [a, b, ..] => usize::from(u16::from_le_bytes([*a, *b])),
        _ => 0,
    };
    let rest = rest.get(2..).unwrap_or(&[]);
    let (dgram, tail) = rest.split_at(n.min(rest.len()));
    let fds: Vec<OwnedFd> = match (sel >> 2) & 3 {
        0 => Vec::new(),
        1 => some_fds(3),
        2 => vec![shm::sealed_bytes(tail)?],
        _ => {
            // A region of ours: sealed against resizing, not against writes.
            let r = shm::ShmRegion::create(tail.len())?;
            let fd = r.fd().try_clone_to_owned()?;
            nix::sys::uio::pwrite(&fd, tail, 0)?;
            vec![fd]
        }
    };
    fn get_as<T>(dgram: &[u8], fds: Vec<OwnedFd>) -> Result<String>
    where
        T: Serialize + DeserializeOwned + std::fmt::Debug,
    {
        let q = Queue::<T>::new()?;
        q.inject_datagram(dgram, &fds)?;
        drop(fds);
        q.get_timeout(GUARD).map(|v| format!("{v:?}"))
    }
    match sel & 3 {
        0 => get_as::<u64>(dgram, fds),
        1 => get_as::<String>(dgram, fds),
        2 => get_as::<Vec<u8>>(dgram, fds),
        _ => get_as::<Connection>(dgram, fds),
    }
}

/// Builds the input of [`queue_item`] (selector, datagram, memfd contents).
pub fn queue_input(selector: u8, dgram: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut v = vec![selector];
    v.extend_from_slice(&(dgram.len().min(u16::MAX as usize) as u16).to_le_bytes());
    v.extend_from_slice(dgram);
    v.extend_from_slice(tail);
    v
}

/// A manager request as the server decodes one frame's payload.
///
/// Returns the request's `Debug` form, or [`Error::Decode`].
pub fn manager_request(data: &[u8]) -> Result<String> {
    postcard::from_bytes::<Request>(data)
        .map(|r| format!("{r:?}"))
        .map_err(|e| Error::decode(format!("corrupt manager request: {e}")))
}

/// A manager response as a proxy decodes one frame's payload.
///
/// Returns the response's `Debug` form (`Ok(Err(..))` is the server's error
/// answer), or [`Error::Decode`].
pub fn manager_reply(data: &[u8]) -> Result<String> {
    postcard::from_bytes::<Response>(data)
        .map(|r| format!("{r:?}"))
        .map_err(|e| Error::decode(format!("corrupt manager reply: {e}")))
}

/// The manager channel's receive side (chunked socket reads into the crate's
/// one `FrameReader`), fed through a socket, each frame then decoded as a
/// request (selector bit 0 clear, the server's side) or a reply (set, a
/// proxy's side). Bit 1: receive with the spinning first wait (as a proxy
/// does) or without.
///
/// Returns, per frame, the payload length or the error, until end of file or
/// an error that ends the stream, at most `len / 4 + 4` of them.
pub fn manager_channel(data: &[u8]) -> Vec<Outcome> {
    fd::ignore_sigpipe();
    let (sel, stream) = split(data);
    let stream = &stream[..stream.len().min(MAX_STREAM_INPUT)];
    let (ours, peer) = match fd::socketpair_stream() {
        Ok(p) => p,
        Err(e) => return vec![Err(e.into())],
    };
    let conn = Connection::from_fd(ours, true, true);
    let chan = match Channel::from_connection(&conn) {
        Ok(c) => c,
        Err(e) => return vec![Err(e)],
    };
    feed(peer, stream);
    let mut out = Vec::new();
    for _ in 0..stream.len() / 4 + 4 {
        let r = chan.recv(sel & 2 != 0, |frame| {
            let decoded = if sel & 1 == 0 {
                manager_request(frame).map(drop)
            } else {
                manager_reply(frame).map(drop)
            };
            decoded.map(|()| frame.len())
        });
        let r = r.and_then(|inner| inner);
        let stop = matches!(
            r,
            Err(Error::Eof | Error::MessageTooLarge { .. } | Error::Io(_))
        ) || matches!(&r, Err(Error::Decode(m)) if m.starts_with("truncated") || m.starts_with("corrupt frame"));
        out.push(r);
        if stop {
            break;
        }
    }
    out
}

/// The server's end of a local manager connection reading its shared-memory
/// mailbox (`managers/mailbox.rs`), where a peer wrote anything at all.
///
/// Selector: bit 0, a sealed memfd of the bytes after the slot rides with the
/// wake byte (as a long message's does); bit 1, the reader spins first. The
/// rest, up to one slot (64 KiB), is written over the slot as it is: state
/// (u32 LE; 1 = full), the asleep mark (u32), the length (u64 LE; bit 63: the
/// message is in the memfd), then the message. The peer then sends one wake
/// byte and hangs up, so a slot that is not full ends in end of file.
///
/// Returns the message's length once it decoded as a manager request, or the
/// error: [`Error::Eof`], [`Error::Decode`], [`Error::MessageTooLarge`].
pub fn manager_mailbox(data: &[u8]) -> Result<usize> {
    use crate::managers::mailbox::{Mailbox, SLOT};
    fd::ignore_sigpipe();
    let (sel, rest) = split(data);
    let peer = Mailbox::create()?;
    let ours = Mailbox::open(peer.fd().try_clone_to_owned()?)?;
    let (peer_sock, our_sock) = fd::socketpair_stream()?;
    let slot = &rest[..rest.len().min(SLOT)];
    peer.write_raw_slot(slot);
    let memfd = if sel & 1 != 0 {
        Some(crate::platform::shm::sealed_bytes(&rest[slot.len()..])?)
    } else {
        None
    };
    let fds: Vec<_> = memfd.iter().map(|f| f.as_fd()).collect();
    fd::send_with_fds(peer_sock.as_fd(), &[std::io::IoSlice::new(b"!")], &fds)?;
    drop(peer_sock);
    ours.recv(our_sock.as_fd(), sel & 2 != 0, |frame| {
        manager_request(frame).map(|_| frame.len())
    })?
}

/// Frames `payload` the CPython way (4-byte big-endian length, or `-1` and 8
/// bytes above 2 GiB), for building corpora and tests.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let (h, n) = crate::connection::framing::encode_header(payload.len());
    let mut v = h[..n].to_vec();
    v.extend_from_slice(payload);
    v
}

/// Encodes a manager request or response for corpora: the postcard bytes of
/// a `NumberOfObjects` request (`0`), a `Lookup` request (`1`), a `Unit`
/// reply (`2`) or a `Key` error reply (`3`).
pub fn manager_sample(which: u8) -> Vec<u8> {
    use crate::managers::protocol::{Reply, WireError};
    let r = match which {
        0 => postcard::to_stdvec(&Request::NumberOfObjects),
        1 => postcard::to_stdvec(&Request::Lookup {
            name: "shared".into(),
            tag: 7,
            type_name: "Namespace".into(),
        }),
        2 => postcard::to_stdvec(&Response::Ok(Reply::Unit)),
        _ => postcard::to_stdvec(&Response::Err(WireError::Key("k".into()))),
    };
    r.unwrap_or_default()
}

/// A pool task frame as a worker reads it: the trailer (`Call`: task id and
/// function reference; never called here), the seq, then the body decoded
/// as a chunk of `u64` items (as `map` sends them).
///
/// Returns `"id seq body"` with the body's decode result, or the trailer's
/// [`Error::Decode`].
pub fn pool_task(data: &[u8]) -> Result<String> {
    use crate::pool::child::{Call, split_trailer};
    let (body_len, call, seq): (usize, Call, u32) = split_trailer(data)?;
    let body = reduction::decode::<Vec<u64>>(&data[..body_len], Vec::new());
    Ok(format!("{} {seq} {body:?}", call.id))
}

/// A pool result frame as the parent's handler reads it: the trailer
/// (`Reply`), then the body: for `Done { ok: true }` an encoded `u64`, for a
/// failed task or initializer a `WireFailure`, turned into the public error.
///
/// Returns the reply and the body's outcome, or the trailer's
/// [`Error::Decode`].
pub fn pool_result(data: &[u8]) -> Result<String> {
    use crate::pool::child::{Reply, WireFailure, split_trailer};
    let (body_len, reply, _seq): (usize, Reply, u32) = split_trailer(data)?;
    let body = &data[..body_len];
    let outcome = match &reply {
        Reply::Done { ok: true, .. } => {
            reduction::decode::<u64>(body, Vec::new()).map(|v| v.to_string())
        }
        Reply::Done { ok: false, .. } | Reply::InitFailed => {
            match reduction::decode::<WireFailure>(body, Vec::new()) {
                Ok(f) => Err(f.into_error("PoolWorker-1", 1)),
                Err(e) => Err(e),
            }
        }
        Reply::Ready => Ok(String::new()),
    };
    Ok(format!("{reply:?} {outcome:?}"))
}

/// Builds pool frames for corpora: `body ++ postcard(trailer) ++ seq ++
/// [len]`, with a `Done { id: 1, ok: true }` reply (`0`), a `Ready` reply
/// (`1`), or a task `Call` (`2`, with a function reference that no worker
/// would accept) around `body`.
pub fn pool_frame(which: u8, body: &[u8]) -> Vec<u8> {
    use crate::pool::child::{Reply, append_trailer};
    let mut v = body.to_vec();
    let r = match which {
        0 => append_trailer(
            &mut v,
            &Reply::Done {
                id: 1,
                ok: true,
                ran_ns: 0,
            },
            0,
        ),
        1 => append_trailer(&mut v, &Reply::Ready, 0),
        _ => {
            // A Call's wire form: id, then the FnRef's offset and check.
            append_trailer(&mut v, &(7u64, 0i64, 0u64), 0)
        }
    };
    r.map(|()| v).unwrap_or_default()
}
