//! `send_handle` / `recv_handle`: an fd over a [`Connection`].
//!
//! Above `connection` (which encodes with the codec in `reduction`), so the
//! codec never depends on the connection that carries it.

use std::os::fd::{AsFd, OwnedFd};

use serde::{Deserialize, Serialize};

use super::{decode, deserialize_fd, serialize_handle};
use crate::connection::Connection;
use crate::error::{Error, Result};

/// The message [`send_handle`] sends: one fd and nothing else.
#[derive(Serialize, Deserialize)]
struct SentHandle(
    #[serde(
        serialize_with = "serialize_handle",
        deserialize_with = "deserialize_fd"
    )]
    OwnedFd,
);

/// Sends a duplicate of `fd` (a file, a socket, a pipe end, any open file
/// description) over `conn`; the peer gets its own fd for it from
/// [`recv_handle`]. The caller keeps `fd`.
///
/// Python: `multiprocessing.reduction.send_handle(conn, handle, destination_pid)`
/// (no pid is needed on Unix: the fd rides with the message as
/// `SCM_RIGHTS`).
///
/// # Errors
///
/// [`Error::Encode`] when `conn` is a TCP connection (from a `Listener` or
/// `Client` on a TCP address): only Unix sockets carry fds; [`Error::Io`] if
/// `fd` cannot be duplicated or the peer is gone; [`Error::Closed`],
/// [`Error::Value`] on a read-only end.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// use std::io::{Read, Write};
/// use std::os::unix::net::UnixStream;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let (a, b) = mp::pipe(true)?;
///     let (mut mine, theirs) = UnixStream::pair()?;
///     mp::reduction::send_handle(&a, &theirs)?;
///     drop(theirs); // the receiver has its own fd now
///     let mut got = UnixStream::from(mp::reduction::recv_handle(&b)?);
///     got.write_all(b"via the received fd")?;
///     drop(got);
///     let mut text = String::new();
///     mine.read_to_string(&mut text)?;
///     assert_eq!(text, "via the received fd");
///     Ok(())
/// }
/// ```
pub fn send_handle(conn: &Connection, fd: impl AsFd) -> Result<()> {
    let fd = fd.as_fd().try_clone_to_owned()?;
    conn.send(&SentHandle(fd))
}

/// Receives an fd sent with [`send_handle`], blocking until the message
/// arrives.
///
/// Python: `multiprocessing.reduction.recv_handle(conn)`.
///
/// # Errors
///
/// [`Error::Decode`] when the next message carries no fd or is not a
/// `send_handle` message (it is consumed, and any fds in it are closed);
/// [`Error::Eof`], [`Error::Closed`], [`Error::Value`] on a write-only end,
/// [`Error::Io`], as [`Connection::recv`](crate::Connection::recv).
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let (a, b) = mp::pipe(true)?;
///     a.send(&7u32)?; // no fd in it
///     assert!(matches!(mp::reduction::recv_handle(&b), Err(mp::Error::Decode(_))));
///     Ok(())
/// }
/// ```
pub fn recv_handle(conn: &Connection) -> Result<OwnedFd> {
    let frame = conn.recv_frame(None)?;
    if frame.fds.is_empty() {
        return Err(Error::decode(
            "recv_handle: the message carries no file descriptor (send it with send_handle)",
        ));
    }
    let SentHandle(fd) = decode(&frame.bytes, frame.fds)?;
    Ok(fd)
}
