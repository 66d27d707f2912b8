//! Python's `multiprocessing.connection`: message-oriented connections between
//! processes.
//!
//! | Python | Rust |
//! |---|---|
//! | `Pipe(duplex=True)` | [`pipe`]`(true)` |
//! | `Connection.send(obj)` / `recv()` | [`Connection::send`] / [`Connection::recv`] (any serde type) |
//! | `send_bytes` / `recv_bytes` / `recv_bytes_into` | same names |
//! | `poll(timeout)` | [`Connection::poll`] / [`Connection::poll_timeout`] |
//! | `close()` | [`Connection::close`] |
//!
//! Framing is CPython's own (see `framing`), so bytes sent with `send_bytes`
//! reach a Python `Connection.recv_bytes` unchanged. A connection over a Unix
//! socket also carries handles (locks, queues, other connections) inside sent
//! values, as file descriptors (`SCM_RIGHTS`).

pub(crate) mod framing;

use std::fmt;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::platform::fd;
use crate::reduction;
use framing::ShortHeader;

/// The default ceiling on one message's declared length: larger frames are
/// refused before anything is allocated for them.
pub const DEFAULT_MAX_MESSAGE_LEN: u64 = 4 << 30;

/// A frame as it came off the wire: payload bytes and the fds that rode with it.
pub(crate) struct Frame {
    /// The payload.
    pub(crate) bytes: Vec<u8>,
    /// Fds received with the frame (sockets only).
    pub(crate) fds: Vec<OwnedFd>,
}

/// One end of a connection: a socket or a pipe carrying framed messages.
///
/// `send`/`recv` carry any serde value, `send_bytes`/`recv_bytes` raw bytes;
/// message boundaries are kept. All methods take `&self`: a `Connection` may be
/// shared by threads (sends are serialized with sends, receives with receives).
/// Dropping it (or calling [`close`](Connection::close)) closes this end; once
/// every copy of it is closed, the peer's `recv` gives [`Error::Eof`].
///
/// Python: `multiprocessing.connection.Connection`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let (a, b) = mp::pipe(true)?;
///     a.send(&vec![1, 2, 3])?;
///     assert_eq!(b.recv::<Vec<i32>>()?, vec![1, 2, 3]);
///     b.send_bytes(b"pong")?;
///     assert_eq!(a.recv_bytes()?, b"pong");
///     Ok(())
/// }
/// ```
pub struct Connection {
    /// Shared so that `close()` can run while another thread is mid-call.
    inner: Arc<Inner>,
}

/// The state behind a [`Connection`].
struct Inner {
    /// The fd; `None` once closed. Calls clone the `Arc` so a concurrent
    /// `close()` only drops our reference, and the fd closes when the last
    /// in-flight call finishes.
    fd: Mutex<Option<Arc<OwnedFd>>>,
    /// Set by `close()`.
    closed: AtomicBool,
    /// May this end receive?
    readable: bool,
    /// May this end send?
    writable: bool,
    /// Whether the fd is a socket (it can carry fds).
    socket: bool,
    /// Held for the whole of one frame's write.
    write_lock: Mutex<()>,
    /// Held for the whole of one frame's read.
    read_lock: Mutex<()>,
    /// Largest declared length accepted.
    max_len: AtomicU64,
}

impl Connection {
    /// Wraps a connected socket or a pipe end.
    pub(crate) fn from_fd(fd: OwnedFd, readable: bool, writable: bool) -> Connection {
        let socket = fd::is_socket(fd.as_fd());
        Connection {
            inner: Arc::new(Inner {
                fd: Mutex::new(Some(Arc::new(fd))),
                closed: AtomicBool::new(false),
                readable,
                writable,
                socket,
                write_lock: Mutex::new(()),
                read_lock: Mutex::new(()),
                max_len: AtomicU64::new(DEFAULT_MAX_MESSAGE_LEN),
            }),
        }
    }

    /// The fd for one call, or `Closed`.
    fn fd(&self) -> Result<Arc<OwnedFd>> {
        let guard = self.inner.fd.lock().unwrap_or_else(|e| e.into_inner());
        guard.clone().ok_or(Error::Closed)
    }

    fn check_writable(&self) -> Result<()> {
        if !self.inner.writable {
            return Err(Error::value("connection is read-only"));
        }
        Ok(())
    }

    fn check_readable(&self) -> Result<()> {
        if !self.inner.readable {
            return Err(Error::value("connection is write-only"));
        }
        Ok(())
    }

    /// Sends `value` as one message. Handles inside it (locks, queues,
    /// connections) travel as file descriptors when this is a socket.
    ///
    /// Blocks until the whole message is handed to the kernel (for a large
    /// message: until the peer has read all but the socket buffer's worth).
    ///
    /// Python: `Connection.send(obj)` (pickle there, serde + postcard here).
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] if the value does not serialize (nothing is sent),
    /// [`Error::Closed`] after `close()`, [`Error::Value`] on a read-only end,
    /// [`Error::Io`] if the peer is gone (`EPIPE`).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let (a, b) = mp::pipe(true)?;
    ///     a.send(&("answer", 42u8))?;
    ///     assert_eq!(b.recv::<(String, u8)>()?, ("answer".to_string(), 42));
    ///     Ok(())
    /// }
    /// ```
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        self.check_writable()?;
        let enc = reduction::encode(value)?;
        if !enc.fds.is_empty() && !self.inner.socket {
            return Err(Error::encode("handles can only be sent over a socket connection"));
        }
        self.send_frame(&enc.bytes, &enc.fds)
    }

    /// Receives one message sent with [`send`](Connection::send), blocking until
    /// it arrives.
    ///
    /// Python: `Connection.recv()`.
    ///
    /// # Errors
    ///
    /// [`Error::Eof`] when the peer closed and nothing is left,
    /// [`Error::Decode`] for a message of another type or a corrupt one (the
    /// connection stays usable: the whole frame was consumed),
    /// [`Error::MessageTooLarge`], [`Error::Closed`], [`Error::Value`] on a
    /// write-only end, [`Error::Io`].
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T> {
        let frame = self.recv_frame(None)?;
        reduction::decode(&frame.bytes, frame.fds)
    }

    /// Like [`recv`](Connection::recv) but gives up with [`Error::Timeout`] once
    /// `timeout` has passed without a message.
    ///
    /// # Errors
    ///
    /// As [`recv`](Connection::recv), plus [`Error::Timeout`].
    pub fn recv_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T> {
        let frame = self.recv_frame(deadline_after(timeout))?;
        reduction::decode(&frame.bytes, frame.fds)
    }

    /// Sends `buf` as one message of raw bytes (CPython-compatible).
    ///
    /// Python: `Connection.send_bytes(buf)`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Value`] on a read-only end, [`Error::Io`].
    pub fn send_bytes(&self, buf: &[u8]) -> Result<()> {
        self.check_writable()?;
        self.send_frame(buf, &[])
    }

    /// Receives one message as raw bytes, blocking until it arrives.
    ///
    /// Python: `Connection.recv_bytes()`.
    ///
    /// # Errors
    ///
    /// [`Error::Eof`], [`Error::MessageTooLarge`], [`Error::Closed`],
    /// [`Error::Value`] on a write-only end, [`Error::Io`].
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        Ok(self.recv_frame(None)?.bytes)
    }

    /// Receives one message into `buf`, returning its length.
    ///
    /// Python: `Connection.recv_bytes_into(buf)`.
    ///
    /// # Errors
    ///
    /// [`Error::BufferTooShort`] with the whole message when it does not fit
    /// (the message is consumed either way), and as [`recv_bytes`](Connection::recv_bytes).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let (a, b) = mp::pipe(true)?;
    ///     a.send_bytes(b"hello")?;
    ///     let mut small = [0u8; 2];
    ///     match b.recv_bytes_into(&mut small) {
    ///         Err(mp::Error::BufferTooShort(msg)) => assert_eq!(msg, b"hello"),
    ///         other => panic!("{other:?}"),
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize> {
        let bytes = self.recv_bytes()?;
        if bytes.len() > buf.len() {
            return Err(Error::BufferTooShort(bytes));
        }
        buf[..bytes.len()].copy_from_slice(&bytes);
        Ok(bytes.len())
    }

    /// Whether a message (or end of file) is ready, without waiting.
    ///
    /// Python: `Connection.poll()` (timeout 0).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Value`] on a write-only end, [`Error::Io`].
    pub fn poll(&self) -> Result<bool> {
        self.poll_deadline(Some(Instant::now()))
    }

    /// Waits up to `timeout` for a message (or end of file); true if one is
    /// ready. An empty message counts as data.
    ///
    /// Python: `Connection.poll(timeout)`.
    ///
    /// # Errors
    ///
    /// As [`poll`](Connection::poll).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// use std::time::Duration;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let (a, b) = mp::pipe(true)?;
    ///     assert!(!b.poll_timeout(Duration::from_millis(10))?);
    ///     a.send_bytes(b"")?;
    ///     assert!(b.poll_timeout(Duration::from_millis(10))?);
    ///     Ok(())
    /// }
    /// ```
    pub fn poll_timeout(&self, timeout: Duration) -> Result<bool> {
        self.poll_deadline(deadline_after(timeout))
    }

    /// Waits until a message is ready or the deadline passes (`None`: forever).
    pub(crate) fn poll_deadline(&self, deadline: Option<Instant>) -> Result<bool> {
        self.check_readable()?;
        let fd = self.fd()?;
        Ok(fd::wait_for(fd.as_fd(), fd::READABLE, deadline)?)
    }

    /// Closes this end. Later calls on it give [`Error::Closed`]; the peer sees
    /// end of file once every copy of this end is closed. Closing twice is fine.
    ///
    /// Python: `Connection.close()`.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let fd = self.inner.fd.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(fd);
    }

    /// True after [`close`](Connection::close).
    pub fn closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// True if this end may receive.
    pub fn readable(&self) -> bool {
        self.inner.readable
    }

    /// True if this end may send.
    pub fn writable(&self) -> bool {
        self.inner.writable
    }

    /// Sets the largest message length this end accepts; a frame declaring more
    /// is refused with [`Error::MessageTooLarge`] before anything is allocated.
    pub fn set_max_message_len(&self, max: u64) {
        self.inner.max_len.store(max, Ordering::Relaxed);
    }

    /// The raw fd number, for use with `poll`/`select` (Python: `fileno()`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn fileno(&self) -> Result<i32> {
        Ok(self.fd()?.as_raw_fd())
    }

    /// A second handle to the same end (a `dup` of the fd).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`] when out of fds.
    pub fn try_clone(&self) -> Result<Connection> {
        let fd = self.fd()?.try_clone()?;
        let c = Connection::from_fd(fd, self.inner.readable, self.inner.writable);
        c.set_max_message_len(self.inner.max_len.load(Ordering::Relaxed));
        Ok(c)
    }

    /// Runs `f` with the borrowed fd (for `wait` and internal pollers).
    pub(crate) fn with_fd<R>(&self, f: impl FnOnce(BorrowedFd<'_>) -> R) -> Result<R> {
        let fd = self.fd()?;
        Ok(f(fd.as_fd()))
    }

    /// True if the peer has closed its end (checked without waiting).
    pub(crate) fn peer_closed(&self) -> bool {
        self.with_fd(fd::peer_closed).unwrap_or(true)
    }

    /// Writes one frame: header and payload, with `fds` attached to the first
    /// byte of the header.
    pub(crate) fn send_frame(&self, payload: &[u8], fds: &[OwnedFd]) -> Result<()> {
        let fd = self.fd()?;
        let fd = fd.as_fd();
        let (header, hlen) = framing::encode_header(payload.len());
        let _w = self.inner.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let first = if payload.len() <= framing::SMALL_MESSAGE { payload.len() } else { 0 };
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
        let head = [IoSlice::new(&header[..hlen]), IoSlice::new(&payload[..first])];
        let mut sent = if self.inner.socket {
            fd::send_with_fds(fd, &head, &borrowed)?
        } else {
            let mut joined = header[..hlen].to_vec();
            joined.extend_from_slice(&payload[..first]);
            fd::write(fd, &joined)?
        };
        // The rest (a partial first write, then any large payload) without fds.
        let total = hlen + payload.len();
        while sent < total {
            let n = if sent < hlen {
                self.write_some(fd, &[IoSlice::new(&header[sent..hlen]), IoSlice::new(payload)])?
            } else {
                self.write_some(fd, &[IoSlice::new(&payload[sent - hlen..])])?
            };
            sent += n;
        }
        Ok(())
    }

    fn write_some(&self, fd: BorrowedFd<'_>, bufs: &[IoSlice<'_>]) -> Result<usize> {
        let n = if self.inner.socket {
            fd::send_with_fds(fd, bufs, &[])?
        } else {
            fd::write(fd, &bufs[0])?
        };
        if n == 0 {
            return Err(Error::Io(std::io::ErrorKind::WriteZero.into()));
        }
        Ok(n)
    }

    /// Reads one frame, waiting until `deadline` for it to start.
    pub(crate) fn recv_frame(&self, deadline: Option<Instant>) -> Result<Frame> {
        self.check_readable()?;
        let fd = self.fd()?;
        let fd = fd.as_fd();
        let _r = self.inner.read_lock.lock().unwrap_or_else(|e| e.into_inner());
        if deadline.is_some() && !fd::wait_for(fd, fd::READABLE, deadline)? {
            return Err(Error::Timeout);
        }
        let mut fds = Vec::new();
        let mut short = [0u8; 4];
        if !self.read_exact(fd, &mut short, &mut fds, true)? {
            return Err(Error::Eof);
        }
        let len = match framing::decode_short(short) {
            ShortHeader::Len(n) => n,
            ShortHeader::Long => {
                let mut long = [0u8; 8];
                self.read_exact(fd, &mut long, &mut fds, false)?;
                framing::decode_long(long)
            }
            ShortHeader::Invalid(n) => {
                return Err(Error::decode(format!("corrupt frame: negative length {n}")));
            }
        };
        let max = self.inner.max_len.load(Ordering::Relaxed);
        if len > max {
            return Err(Error::MessageTooLarge { len, max });
        }
        let bytes = self.read_payload(fd, len as usize, &mut fds)?;
        Ok(Frame { bytes, fds })
    }

    /// Reads a payload of `len` bytes, growing the buffer as bytes arrive, so a
    /// lying header costs no more memory than the bytes really sent.
    fn read_payload(&self, fd: BorrowedFd<'_>, len: usize, fds: &mut Vec<OwnedFd>) -> Result<Vec<u8>> {
        const STEP: usize = 16 << 20;
        let mut buf = Vec::with_capacity(len.min(STEP));
        while buf.len() < len {
            let want = (len - buf.len()).min(STEP);
            let start = buf.len();
            buf.resize(start + want, 0);
            self.read_exact(fd, &mut buf[start..], fds, false)?;
        }
        Ok(buf)
    }

    /// Fills `buf`. Returns false on a clean end of file before the first byte
    /// when `eof_ok`; a short read anywhere else is a truncated frame.
    fn read_exact(&self, fd: BorrowedFd<'_>, buf: &mut [u8], fds: &mut Vec<OwnedFd>, eof_ok: bool) -> Result<bool> {
        let mut got = 0;
        while got < buf.len() {
            let n = if self.inner.socket {
                fd::recv_with_fds(fd, &mut buf[got..], fds)?
            } else {
                fd::read(fd, &mut buf[got..])?
            };
            if n == 0 {
                if got == 0 && eof_ok {
                    return Ok(false);
                }
                return Err(Error::decode("truncated frame: the peer closed mid-message"));
            }
            got += n;
        }
        Ok(true)
    }
}

/// `now + timeout`, or `None` (wait forever) if that overflows.
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fd = self.fd().ok().map(|fd| fd.as_raw_fd());
        f.debug_struct("Connection")
            .field("fd", &fd)
            .field("readable", &self.inner.readable)
            .field("writable", &self.inner.writable)
            .field("closed", &self.closed())
            .finish()
    }
}

/// The wire form of a `Connection` inside a sent value.
#[derive(Serialize, Deserialize)]
struct WireConnection {
    #[serde(serialize_with = "reduction::serialize_handle", deserialize_with = "reduction::deserialize_fd")]
    fd: OwnedFd,
    readable: bool,
    writable: bool,
}

impl Serialize for Connection {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let fd = self.fd().map_err(S::Error::custom)?;
        let dup = fd.try_clone().map_err(S::Error::custom)?;
        WireConnection { fd: dup, readable: self.inner.readable, writable: self.inner.writable }
            .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Connection {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let w = WireConnection::deserialize(deserializer)?;
        Ok(Connection::from_fd(w.fd, w.readable, w.writable))
    }
}

/// Creates a pair of connected [`Connection`]s.
///
/// `pipe(true)`: both ends send and receive. `pipe(false)`: `(receiver, sender)`,
/// and using an end the wrong way is an [`Error::Value`].
///
/// Both ends are Unix sockets, so handles can be sent over either kind.
///
/// Python: `multiprocessing.Pipe(duplex)`.
///
/// # Errors
///
/// [`Error::Io`] when the process is out of fds.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let (rx, tx) = mp::pipe(false)?;
///     tx.send(&1.5f64)?;
///     assert_eq!(rx.recv::<f64>()?, 1.5);
///     assert!(matches!(rx.send(&1), Err(mp::Error::Value(_))));
///     Ok(())
/// }
/// ```
pub fn pipe(duplex: bool) -> Result<(Connection, Connection)> {
    let (a, b) = fd::socketpair_stream()?;
    if duplex {
        Ok((Connection::from_fd(a, true, true), Connection::from_fd(b, true, true)))
    } else {
        Ok((Connection::from_fd(a, true, false), Connection::from_fd(b, false, true)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_are_kept() {
        let (a, b) = pipe(true).unwrap();
        for m in [&b"hello"[..], b"", b"a", b"bc"] {
            a.send_bytes(m).unwrap();
        }
        for m in [&b"hello"[..], b"", b"a", b"bc"] {
            assert_eq!(b.recv_bytes().unwrap(), m);
        }
    }

    #[test]
    fn eof_after_peer_closes() {
        let (a, b) = pipe(true).unwrap();
        a.send(&1u8).unwrap();
        a.close();
        assert_eq!(b.recv::<u8>().unwrap(), 1);
        assert!(matches!(b.recv::<u8>(), Err(Error::Eof)));
        assert!(matches!(a.send(&1u8), Err(Error::Closed)));
    }

    #[test]
    fn wrong_type_is_an_error_and_the_stream_goes_on() {
        let (a, b) = pipe(true).unwrap();
        a.send(&"text").unwrap();
        a.send(&5u32).unwrap();
        assert!(matches!(b.recv::<u64>(), Err(Error::Decode(_))));
        assert_eq!(b.recv::<u32>().unwrap(), 5);
    }

    #[test]
    fn oversized_frames_are_refused_before_allocation() {
        let (a, b) = pipe(true).unwrap();
        b.set_max_message_len(10);
        a.send_bytes(&[0u8; 11]).unwrap();
        assert!(matches!(b.recv_bytes(), Err(Error::MessageTooLarge { len: 11, max: 10 })));
    }

    #[test]
    fn connections_travel_inside_values() {
        let (a, b) = pipe(true).unwrap();
        let (c, d) = pipe(true).unwrap();
        a.send(&c).unwrap();
        drop(c);
        let c2: Connection = b.recv().unwrap();
        c2.send(&9i32).unwrap();
        assert_eq!(d.recv::<i32>().unwrap(), 9);
    }
}
