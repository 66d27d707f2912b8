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

pub(crate) mod auth;
pub(crate) mod framing;
pub(crate) mod listener;
pub(crate) mod pickle;
pub(crate) mod reader;
pub(crate) mod spin;

pub(crate) use listener::authenticate_accepted;
pub use listener::{Address, AuthKey, Client, Listener};

use crate::util::Unpoison;
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
pub(crate) use reader::Frame;
use reader::FrameReader;
use spin::Spin;

/// The default ceiling on one message's declared length: larger frames are
/// refused before anything is allocated for them.
pub const DEFAULT_MAX_MESSAGE_LEN: u64 = 4 << 30;

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
    /// The receive side: held while reading; a sender that would block takes
    /// it (if free) to drain incoming bytes, so two peers sending big messages
    /// to each other at once never deadlock.
    recv: Mutex<RecvState>,
    /// Largest declared length accepted.
    max_len: AtomicU64,
    /// Whether (and how long) a receive looks before it sleeps: only when
    /// the peer is on this machine (see `spin.rs`).
    spin: Spin,
}

impl Connection {
    /// Wraps a connected socket or a pipe end.
    pub(crate) fn from_fd(fd: OwnedFd, readable: bool, writable: bool) -> Connection {
        let socket = fd::is_socket(fd.as_fd());
        // A Unix socket's peer is a process on this machine: worth spinning
        // for. A TCP peer may be anywhere, and a pipe is CPython's business.
        let local = socket && fd::is_unix_socket(fd.as_fd());
        Connection {
            inner: Arc::new(Inner {
                fd: Mutex::new(Some(Arc::new(fd))),
                closed: AtomicBool::new(false),
                readable,
                writable,
                socket,
                write_lock: Mutex::new(()),
                recv: Mutex::new(RecvState::new(socket)),
                max_len: AtomicU64::new(DEFAULT_MAX_MESSAGE_LEN),
                spin: Spin::new(local),
            }),
        }
    }

    /// The fd for one call, or `Closed`.
    fn fd(&self) -> Result<Arc<OwnedFd>> {
        let guard = self.inner.fd.lock().unpoison();
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
    ///     a.send(&("answer".to_string(), 42u8))?;
    ///     assert_eq!(b.recv::<(String, u8)>()?, ("answer".to_string(), 42));
    ///     Ok(())
    /// }
    /// ```
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        self.check_writable()?;
        let enc = reduction::encode(value)?;
        // TCP would silently drop the fds: only Unix sockets carry them.
        if !enc.fds.is_empty() && !self.with_fd(fd::is_unix_socket)? {
            return Err(Error::encode(
                "handles can only be sent over a Unix socket connection (pipe(), or a Listener on a Unix path or abstract name), not over TCP",
            ));
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
        if self.buffered() {
            return Ok(true);
        }
        // `poll()` passes a deadline of now: no spin then.
        if self.inner.spin.until_readable(fd.as_fd(), deadline)? {
            return Ok(true);
        }
        Ok(fd::wait_for(fd.as_fd(), fd::READABLE, deadline)?)
    }

    /// True if a frame (or an error, or end of file) already sits in the
    /// receive buffer, drained there by a send. A receive in progress on
    /// another thread counts as nothing buffered: its bytes are on the fd.
    pub(crate) fn buffered(&self) -> bool {
        match self.inner.recv.try_lock() {
            Ok(st) => st.has_news(),
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner().has_news(),
            Err(std::sync::TryLockError::WouldBlock) => false,
        }
    }

    /// Closes this end. Later calls on it give [`Error::Closed`]; the peer sees
    /// end of file once every copy of this end is closed. Closing twice is fine.
    ///
    /// Python: `Connection.close()`.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let fd = self.inner.fd.lock().unpoison().take();
        drop(fd);
    }

    /// True after [`close`](Connection::close).
    ///
    /// Python: `Connection.closed` (named `is_closed` as on the queues and
    /// the listener).
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, _b) = multiprocess::pipe(true)?;
    /// a.close();
    /// assert!(a.is_closed());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn is_closed(&self) -> bool {
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
    ///
    /// On a readable socket the writes never block: when the buffer is full we
    /// wait for room *or* incoming bytes, and read those into the receive
    /// state, where `recv` finds them. So two processes sending each other big
    /// messages at once both make progress.
    pub(crate) fn send_frame(&self, payload: &[u8], fds: &[OwnedFd]) -> Result<()> {
        let fd = self.fd()?;
        let fd = fd.as_fd();
        let (header, hlen) = framing::encode_header(payload.len());
        let _w = self.inner.write_lock.lock().unpoison();
        if !self.inner.socket {
            return self.write_frame_to_pipe(fd, &header[..hlen], payload);
        }
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
        let total = hlen + payload.len();
        let mut sent = 0;
        while sent < total {
            let bufs_storage;
            let bufs: &[IoSlice<'_>] = if sent < hlen {
                bufs_storage = [IoSlice::new(&header[sent..hlen]), IoSlice::new(payload)];
                &bufs_storage
            } else {
                bufs_storage = [IoSlice::new(&payload[sent - hlen..]), IoSlice::new(&[])];
                &bufs_storage[..1]
            };
            // The fds ride with the first byte of the header, so the receiver
            // meets them while it reads this frame's header.
            let attach: &[BorrowedFd<'_>] = if sent == 0 { &borrowed } else { &[] };
            match fd::try_send_with_fds(fd, bufs, attach)? {
                Some(0) => return Err(Error::Io(std::io::ErrorKind::WriteZero.into())),
                Some(n) => sent += n,
                None => self.wait_to_send(fd)?,
            }
        }
        Ok(())
    }

    /// A pipe end (from `from_fd`): blocking writes; a write-only pipe has no
    /// incoming bytes to drain.
    fn write_frame_to_pipe(&self, fd: BorrowedFd<'_>, header: &[u8], payload: &[u8]) -> Result<()> {
        if payload.len() <= framing::SMALL_MESSAGE {
            let mut joined = header.to_vec();
            joined.extend_from_slice(payload);
            return write_all(fd, &joined);
        }
        write_all(fd, header)?;
        write_all(fd, payload)
    }

    /// Blocks until the socket has room, meanwhile reading whatever the peer
    /// sends into the receive state (when this end may receive and no other
    /// thread is receiving: that thread reads the bytes instead).
    fn wait_to_send(&self, fd: BorrowedFd<'_>) -> Result<()> {
        if self.inner.readable {
            let guard = match self.inner.recv.try_lock() {
                Ok(g) => Some(g),
                Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            };
            if let Some(mut st) = guard {
                if !st.finished() {
                    let rev = fd::poll(&[(fd, fd::WRITABLE | fd::READABLE)], None)?[0];
                    if rev & fd::WRITABLE == 0 && rev & (fd::READABLE | fd::HUNG_UP) != 0 {
                        let max = self.inner.max_len.load(Ordering::Relaxed);
                        st.drain(fd, max);
                    }
                    return Ok(());
                }
            }
        }
        fd::poll(&[(fd, fd::WRITABLE)], None)?;
        Ok(())
    }

    /// Reads one frame, waiting until `deadline` for it to start.
    pub(crate) fn recv_frame(&self, deadline: Option<Instant>) -> Result<Frame> {
        self.check_readable()?;
        let fd = self.fd()?;
        let fd = fd.as_fd();
        let mut st = self.inner.recv.lock().unpoison();
        let max = self.inner.max_len.load(Ordering::Relaxed);
        let mut spun = false;
        loop {
            if let Some(done) = st.take_next() {
                return done;
            }
            // Look before sleeping, once per call, for the frame's start: a
            // peer on this machine often answers sooner than a sleeper wakes.
            // The look is the header's own non-blocking read, not a `poll`
            // followed by the read: a look that finds nothing costs the same
            // system call, and one that finds the frame saves one (a small
            // frame is then two reads, header and payload).
            if !spun && st.at_frame_start() {
                spun = true;
                if self
                    .inner
                    .spin
                    .until(deadline, || st.read_once(fd, max, true))?
                {
                    continue;
                }
            }
            // The deadline bounds the wait for a frame to start; once its first
            // bytes are in, the rest is read without one (as CPython does).
            let waiting_for_start = deadline.is_some() && st.at_frame_start();
            if waiting_for_start && !fd::wait_for(fd, fd::READABLE, deadline)? {
                return Err(Error::Timeout);
            }
            // Non-blocking after a poll: another process sharing this end may
            // have taken the bytes, and then we go back to waiting.
            st.read_once(fd, max, waiting_for_start)?;
        }
    }
}

/// Writes all of `buf` to a pipe.
fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> Result<()> {
    while !buf.is_empty() {
        let n = fd::write(fd, buf)?;
        if n == 0 {
            return Err(Error::Io(std::io::ErrorKind::WriteZero.into()));
        }
        buf = &buf[n..];
    }
    Ok(())
}

/// The send buffer asked for on the Unix sockets the crate makes for
/// connections: both ends of a `pipe()`, a `Listener`'s accepted connections
/// and a `Client`'s on a Unix address, and a child's bootstrap socket (a
/// `Process`'s channel, a pool worker's socket). The kernel doubles it, up to
/// `net.core.wmem_max` (see `fd::set_send_buffer`). Set where the socket is
/// made, never on a connection rebuilt from an fd (a clone, one received), so
/// a value the user set through `fileno()` stays; TCP keeps the kernel's
/// autotuning, which setting one would end. The default (about 208 KiB)
/// split a 1 MiB message into five sends and as many wake-ups of the reader:
/// a child sending 1 MiB messages to its parent over `pipe(true)` moved 3.0
/// GB/s with it, 7.6 GB/s asking for 256 KiB, 9.5-10.3 GB/s asking for 1 MiB
/// and 8.5-9.2 asking for 4 MiB (this VM's `wmem_max` is 4 MiB; where it is
/// the kernel's default 208 KiB the buffer still doubles). A buffer holds
/// only bytes sent and not yet read.
const LOCAL_SEND_BUFFER: usize = 1 << 20;

/// Asks for [`LOCAL_SEND_BUFFER`] on a Unix socket the crate just made. Best
/// effort: a smaller buffer only makes big messages slower.
pub(crate) fn widen_send_buffer(fd: BorrowedFd<'_>) {
    let _ = fd::set_send_buffer(fd, LOCAL_SEND_BUFFER);
}

/// Most bytes one `read` from a pipe asks for (a pipe's default maximum
/// size, `/proc/sys/fs/pipe-max-size`).
const PIPE_READ: usize = 1 << 20;

/// The receive side of a connection: the [`FrameReader`] fed one read at a
/// time, by `recv` or by a send that drains the socket. Reads never go past
/// the frame being read, so fds (which ride with the first header byte)
/// always land with their own frame.
#[derive(Debug)]
struct RecvState {
    /// The frame parser.
    reader: FrameReader,
    /// The fd is a socket (`recvmsg`, fds) rather than a pipe (`read`).
    socket: bool,
    /// Control-message buffer for `recvmsg`, kept to spare an allocation per
    /// read (empty for a pipe).
    cmsg: Vec<u8>,
}

/// One read of up to `want` bytes appended to `buf`: `recvmsg` on a socket
/// (given its control buffer), `read` on a pipe (`cmsg` is `None`).
/// `Ok(None)` when `nonblocking` and nothing is there; `Ok(Some(0))` at end
/// of file.
fn read_append(
    fd: BorrowedFd<'_>,
    cmsg: Option<&mut Vec<u8>>,
    buf: &mut Vec<u8>,
    want: usize,
    fds: &mut Vec<OwnedFd>,
    nonblocking: bool,
) -> std::io::Result<Option<usize>> {
    if let Some(cmsg) = cmsg {
        return fd::recv_append(fd, buf, want, cmsg, fds, nonblocking);
    }
    if nonblocking && !fd::wait_for(fd, fd::READABLE, Some(Instant::now()))? {
        return Ok(None);
    }
    // Zero-filled before the read: take no more than a pipe holds (1 MiB at
    // most, unless raised), so a lying header costs no memory.
    let want = want.min(PIPE_READ);
    let start = buf.len();
    buf.resize(start + want, 0);
    let r = fd::read(fd, &mut buf[start..]);
    let n = r.as_ref().ok().copied().unwrap_or(0);
    buf.truncate(start + n);
    r.map(Some)
}

impl RecvState {
    fn new(socket: bool) -> RecvState {
        RecvState {
            socket,
            cmsg: if socket {
                fd::cmsg_buffer()
            } else {
                Vec::new()
            },
            reader: FrameReader::new(DEFAULT_MAX_MESSAGE_LEN),
        }
    }

    /// Something to hand out without reading.
    fn has_news(&self) -> bool {
        self.reader.has_news()
    }

    /// No more reads will ever succeed.
    fn finished(&self) -> bool {
        self.reader.finished()
    }

    /// No byte of the next frame has been read yet.
    fn at_frame_start(&self) -> bool {
        self.reader.at_frame_start()
    }

    /// The next result for `recv`, if one is decided without reading.
    fn take_next(&mut self) -> Option<Result<Frame>> {
        self.reader.next_frame()
    }

    /// Reads what is available without blocking (the draining sender's step).
    /// A read error ends the receive side with that error queued.
    fn drain(&mut self, fd: BorrowedFd<'_>, max: u64) {
        if let Err(e) = self.read_once(fd, max, true) {
            self.reader.fail(e);
        }
    }

    /// One read for the frame being received; completes frames in the
    /// reader. True if it took bytes or met end of file, false if nothing
    /// was there (`nonblocking` only).
    fn read_once(&mut self, fd: BorrowedFd<'_>, max: u64, nonblocking: bool) -> Result<bool> {
        self.reader.set_max(max);
        let cmsg = self.socket.then_some(&mut self.cmsg);
        let n = self
            .reader
            .read_with(|buf, want, fds| read_append(fd, cmsg, buf, want, fds, nonblocking))?;
        Ok(n.is_some())
    }
}

/// Something [`wait`] can wait on: a [`Connection`] (ready when a message or
/// end of file can be read), a started [`Process`](crate::Process) (ready
/// once it has exited; Python's `Process.sentinel`), a [`Listener`] (ready
/// when a connection is pending), or any fd that can be polled: std's
/// `File` (a pipe, a FIFO, a character device), `TcpStream`, `TcpListener`,
/// `UdpSocket`, `UnixStream`, `UnixListener`, `UnixDatagram`, `ChildStdout`,
/// `ChildStderr`, `Stdin`, `OwnedFd`, `BorrowedFd`, and any other [`AsFd`]
/// type wrapped in [`Fileno`] (ready when a read will not block, as `select`
/// says). Python: any object with a `fileno()` method.
///
/// To mix kinds in one call, give `wait` a slice of `&dyn Waitable`.
///
/// The trait is sealed: its method is internal.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// use mp::connection::{Waitable, wait};
/// use std::io::Write;
/// use std::os::unix::net::UnixStream;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let (a, b) = mp::pipe(true)?;
///     let (mut s1, s2) = UnixStream::pair()?;
///     s1.write_all(b"x")?;
///     let objects: [&dyn Waitable; 2] = [&b, &s2];
///     let ready = wait(&objects, None)?;
///     assert_eq!(ready.len(), 1); // the socket, not the silent pipe
///     # drop(a);
///     Ok(())
/// }
/// ```
pub trait Waitable: sealed::Sealed {}

// `pub(crate)`: `Process` (in process.rs, above this layer) implements it.
#[allow(unreachable_pub)]
pub(crate) mod sealed {
    use std::os::fd::{AsFd, BorrowedFd};
    use std::sync::Arc;

    /// What `wait` needs from an object.
    pub trait Sealed {
        /// The fd to poll for readability, or `Ok(None)` when the object is
        /// ready without polling.
        fn source(&self) -> crate::Result<Option<BorrowedFdHolder<'_>>>;
    }

    /// A borrowed fd kept alive for the wait (a connection's or a listener's
    /// fd is shared with a concurrent `close`).
    pub enum BorrowedFdHolder<'a> {
        /// An fd held by its `Arc`.
        Shared(Arc<dyn AsFd + Send + Sync>),
        /// A fd borrowed from the object.
        Borrowed(BorrowedFd<'a>),
    }

    impl std::fmt::Debug for BorrowedFdHolder<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_tuple("BorrowedFdHolder").field(&self.fd()).finish()
        }
    }

    impl BorrowedFdHolder<'_> {
        /// The fd to poll.
        pub fn fd(&self) -> BorrowedFd<'_> {
            match self {
                BorrowedFdHolder::Shared(fd) => fd.as_fd(),
                BorrowedFdHolder::Borrowed(fd) => *fd,
            }
        }
    }
}

impl sealed::Sealed for Connection {
    fn source(&self) -> Result<Option<sealed::BorrowedFdHolder<'_>>> {
        self.check_readable()?;
        let fd = self.fd()?;
        if self.buffered() {
            return Ok(None);
        }
        Ok(Some(sealed::BorrowedFdHolder::Shared(fd)))
    }
}
impl Waitable for Connection {}

impl sealed::Sealed for Listener {
    fn source(&self) -> Result<Option<sealed::BorrowedFdHolder<'_>>> {
        Ok(Some(sealed::BorrowedFdHolder::Shared(self.wait_source()?)))
    }
}
impl Waitable for Listener {}

impl<W: Waitable + ?Sized> sealed::Sealed for &W {
    fn source(&self) -> Result<Option<sealed::BorrowedFdHolder<'_>>> {
        (**self).source()
    }
}
impl<W: Waitable + ?Sized> Waitable for &W {}

/// Makes the std types that own or borrow a pollable fd [`Waitable`].
macro_rules! waitable_by_fd {
    ($($t:ty),* $(,)?) => {$(
        impl sealed::Sealed for $t {
            fn source(&self) -> Result<Option<sealed::BorrowedFdHolder<'_>>> {
                Ok(Some(sealed::BorrowedFdHolder::Borrowed(self.as_fd())))
            }
        }
        impl Waitable for $t {}
    )*};
}

waitable_by_fd!(
    std::fs::File,
    std::net::TcpStream,
    std::net::TcpListener,
    std::net::UdpSocket,
    std::os::unix::net::UnixStream,
    std::os::unix::net::UnixListener,
    std::os::unix::net::UnixDatagram,
    std::process::ChildStdout,
    std::process::ChildStderr,
    std::io::Stdin,
    OwnedFd,
    BorrowedFd<'_>,
);

/// Any [`AsFd`] type as a [`Waitable`]: ready when reading its fd will not
/// block. For fd types of other crates (mio, nix, socket2, ...); std's own
/// are `Waitable` as they are.
///
/// Python: any object with a `fileno()` method, as `wait` accepts.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// use mp::connection::{Fileno, wait};
/// use std::io::Write;
/// use std::os::unix::net::UnixStream;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let (mut s1, s2) = UnixStream::pair()?;
///     let w = Fileno(&s2);
///     assert!(wait(&[&w], Some(std::time::Duration::ZERO))?.is_empty());
///     s1.write_all(b"x")?;
///     assert_eq!(wait(&[&w], None)?.len(), 1);
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Fileno<T: AsFd>(pub T);

impl<T: AsFd> sealed::Sealed for Fileno<T> {
    fn source(&self) -> Result<Option<sealed::BorrowedFdHolder<'_>>> {
        Ok(Some(sealed::BorrowedFdHolder::Borrowed(self.0.as_fd())))
    }
}
impl<T: AsFd> Waitable for Fileno<T> {}

/// Waits until at least one of `objects` is ready, or `timeout` passes
/// (`None`: no limit), and returns the ready ones, in the order given (an
/// empty list on timeout).
///
/// A connection is ready when a message, or end of file, can be read (so
/// `recv` will not block); a process when it has exited; a [`Listener`] when
/// a connection is pending; any other fd ([`Waitable`] lists them) when a
/// read will not block. A zero timeout checks without waiting. To mix kinds,
/// pass `&dyn Waitable` references.
///
/// Python: `multiprocessing.connection.wait(object_list, timeout)`.
///
/// # Errors
///
/// [`Error::Closed`] for a closed connection or listener, [`Error::Value`]
/// for a write-only connection or a process not started, [`Error::Io`].
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// use mp::connection::wait;
/// use std::time::Duration;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let (a, b) = mp::pipe(true)?;
///     let (c, d) = mp::pipe(true)?;
///     assert!(wait(&[&b, &d], Some(Duration::from_millis(10)))?.is_empty());
///     a.send(&1u8)?;
///     let ready = wait(&[&b, &d], None)?;
///     assert_eq!(ready.len(), 1);
///     assert!(std::ptr::eq(ready[0], &b));
///     # drop(c);
///     Ok(())
/// }
/// ```
pub fn wait<'a, W: Waitable + ?Sized>(
    objects: &[&'a W],
    timeout: Option<Duration>,
) -> Result<Vec<&'a W>> {
    use sealed::{BorrowedFdHolder, Sealed};
    let deadline = timeout.and_then(deadline_after);
    let sources: Vec<Option<BorrowedFdHolder<'_>>> =
        objects.iter().map(|o| o.source()).collect::<Result<_>>()?;
    let any_ready = sources.iter().any(Option::is_none);
    let polled: Vec<(usize, BorrowedFd<'_>)> = sources
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.as_ref().map(|h| (i, h.fd())))
        .collect();
    let pfds: Vec<(BorrowedFd<'_>, i16)> =
        polled.iter().map(|(_, fd)| (*fd, fd::READABLE)).collect();
    // With one object already ready, only look (do not wait) at the others.
    let poll_deadline = if any_ready {
        Some(Instant::now())
    } else {
        deadline
    };
    let revents = if pfds.is_empty() {
        if !any_ready {
            // Python: wait([], t) sleeps for t; wait([]) would sleep forever.
            match deadline {
                Some(d) => std::thread::sleep(d.saturating_duration_since(Instant::now())),
                None => {
                    return Err(Error::value(
                        "wait() on an empty list with no timeout would never return",
                    ));
                }
            }
        }
        Vec::new()
    } else {
        fd::poll(&pfds, poll_deadline)?
    };
    let mut ready = vec![false; objects.len()];
    for (i, s) in sources.iter().enumerate() {
        if s.is_none() {
            ready[i] = true;
        }
    }
    for ((i, _), rev) in polled.iter().zip(revents) {
        if rev != 0 {
            ready[*i] = true;
        }
    }
    Ok(objects
        .iter()
        .zip(ready)
        .filter_map(|(o, r)| r.then_some(*o))
        .collect())
}

pub(crate) use crate::util::deadline_after;

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fd = self.fd().ok().map(|fd| fd.as_raw_fd());
        f.debug_struct("Connection")
            .field("fd", &fd)
            .field("readable", &self.inner.readable)
            .field("writable", &self.inner.writable)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// The wire form of a `Connection` inside a sent value.
#[derive(Serialize, Deserialize)]
struct WireConnection {
    #[serde(
        serialize_with = "reduction::serialize_handle",
        deserialize_with = "reduction::deserialize_fd"
    )]
    fd: OwnedFd,
    readable: bool,
    writable: bool,
}

impl Serialize for Connection {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let fd = self.fd().map_err(S::Error::custom)?;
        let dup = fd.try_clone().map_err(S::Error::custom)?;
        WireConnection {
            fd: dup,
            readable: self.inner.readable,
            writable: self.inner.writable,
        }
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
    widen_send_buffer(a.as_fd());
    widen_send_buffer(b.as_fd());
    if duplex {
        Ok((
            Connection::from_fd(a, true, true),
            Connection::from_fd(b, true, true),
        ))
    } else {
        Ok((
            Connection::from_fd(a, true, false),
            Connection::from_fd(b, false, true),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_connections_get_the_bigger_send_buffer() {
        // The kernel's cap applies to everyone, root included: the buffer is
        // twice the request, or twice the cap where that is lower.
        let cap: usize = std::fs::read_to_string("/proc/sys/net/core/wmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let want = 2 * LOCAL_SEND_BUFFER.min(cap);
        let send_buffer = |c: &Connection| fd::send_buffer(c.fd().unwrap().as_fd()).unwrap();
        let (a, b) = pipe(true).unwrap();
        assert_eq!((send_buffer(&a), send_buffer(&b)), (want, want));
        // A simplex pipe's write end; its read end never sends.
        let (_rx, tx) = pipe(false).unwrap();
        assert_eq!(send_buffer(&tx), want);
    }

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
        assert!(matches!(
            b.recv_bytes(),
            Err(Error::MessageTooLarge { len: 11, max: 10 })
        ));
    }

    /// A raw socket to write arbitrary bytes at a connection.
    fn raw_pair() -> (OwnedFd, Connection) {
        let (a, b) = fd::socketpair_stream().unwrap();
        (a, Connection::from_fd(b, true, true))
    }

    fn write_raw(fd: &OwnedFd, bytes: &[u8]) {
        let mut off = 0;
        while off < bytes.len() {
            off += fd::write(fd.as_fd(), &bytes[off..]).unwrap();
        }
    }

    #[test]
    fn corrupt_header_is_a_lasting_decode_error() {
        let (raw, c) = raw_pair();
        write_raw(&raw, &(-7i32).to_be_bytes());
        write_raw(&raw, b"more bytes");
        assert!(matches!(c.recv_bytes(), Err(Error::Decode(m)) if m.contains("negative length")));
        assert!(matches!(c.recv_bytes(), Err(Error::Decode(_))));
        assert!(c.poll().unwrap());
    }

    #[test]
    fn truncated_frame_is_a_decode_error_then_eof() {
        let (raw, c) = raw_pair();
        write_raw(&raw, &100i32.to_be_bytes());
        write_raw(&raw, b"only ten b");
        drop(raw);
        assert!(matches!(c.recv_bytes(), Err(Error::Decode(m)) if m.contains("truncated")));
        assert!(matches!(c.recv_bytes(), Err(Error::Eof)));
        // A header cut short is truncated too.
        let (raw, c) = raw_pair();
        write_raw(&raw, &[0, 0]);
        drop(raw);
        assert!(matches!(c.recv_bytes(), Err(Error::Decode(_))));
    }

    #[test]
    fn garbage_payload_is_a_decode_error_not_a_panic() {
        let (raw, c) = raw_pair();
        write_raw(&raw, &5i32.to_be_bytes());
        write_raw(&raw, &[0xA7, 0, 1, 2, 3]);
        assert!(matches!(c.recv::<String>(), Err(Error::Decode(_))));
    }

    #[test]
    fn oversized_frame_is_skipped_and_the_stream_goes_on() {
        let (a, b) = pipe(true).unwrap();
        b.set_max_message_len(1000);
        a.send_bytes(&vec![1u8; 100_000]).unwrap();
        a.send_bytes(b"next").unwrap();
        assert!(matches!(
            b.recv_bytes(),
            Err(Error::MessageTooLarge { len: 100_000, .. })
        ));
        assert_eq!(b.recv_bytes().unwrap(), b"next");
    }

    #[test]
    fn mutual_big_sends_do_not_deadlock() {
        let (a, b) = pipe(true).unwrap();
        let big: Vec<u8> = (0..(24 << 20)).map(|i| (i % 253) as u8).collect();
        let big2 = big.clone();
        let t = std::thread::spawn(move || {
            b.send_bytes(&big2).unwrap();
            b.send_bytes(b"after").unwrap();
            let got = b.recv_bytes().unwrap();
            (got.len(), b.recv_bytes().unwrap())
        });
        a.send_bytes(&big).unwrap();
        a.send_bytes(b"after").unwrap();
        // What `a` drained while sending is served first; poll sees it.
        assert!(a.poll_timeout(Duration::from_secs(30)).unwrap());
        assert_eq!(a.recv_bytes().unwrap(), big);
        assert_eq!(a.recv_bytes().unwrap(), b"after");
        let (len, after) = t.join().unwrap();
        assert_eq!(len, big.len());
        assert_eq!(after, b"after");
    }

    #[test]
    fn fds_stay_with_their_frame_when_drained() {
        let (a, b) = pipe(true).unwrap();
        let (c, d) = pipe(true).unwrap();
        let big = vec![9u8; 8 << 20];
        let big2 = big.clone();
        let t = std::thread::spawn(move || {
            b.send(&c).unwrap();
            b.send_bytes(&big2).unwrap();
            b.send(&c).unwrap();
            drop(c);
            b.recv_bytes().unwrap().len()
        });
        a.send_bytes(&big).unwrap();
        let c1: Connection = a.recv().unwrap();
        assert_eq!(a.recv_bytes().unwrap().len(), big.len());
        let c2: Connection = a.recv().unwrap();
        c1.send(&1u8).unwrap();
        c2.send(&2u8).unwrap();
        assert_eq!(d.recv::<u8>().unwrap(), 1);
        assert_eq!(d.recv::<u8>().unwrap(), 2);
        assert_eq!(t.join().unwrap(), big.len());
    }

    #[test]
    fn only_a_unix_socket_spins() {
        let (a, _b) = pipe(true).unwrap();
        assert_eq!(a.inner.spin.enabled(), spin::machine_may_spin());
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let tcp = Connection::from_fd(OwnedFd::from(s), true, true);
        assert!(!tcp.inner.spin.enabled());
        let (r, _w) = fd::pipe().unwrap();
        assert!(!Connection::from_fd(r, true, false).inner.spin.enabled());
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
