//! The manager's request/answer channel: CPython's framing (a 4-byte
//! big-endian length, then the payload) over a connected socket, read in
//! chunks so that a small frame costs one `read`, parsed by the crate's one
//! frame reader (`connection/reader.rs`), and written with one `send` of
//! header and payload together.
//!
//! A waiting reader first polls for up to [`SPIN`] (yielding the CPU between
//! polls) before it sleeps in `read`: a manager call is a ping-pong, and the
//! answer usually comes within microseconds, sooner than a sleeping thread is
//! woken up again. CPython's `Connection.recv` always sleeps.
//!
//! A client on the same machine (a Unix-socket address) moves the messages
//! themselves to shared memory right after the handshake (see `mailbox.rs`):
//! its first frame is [`UPGRADE`] with the mailbox memfd, the server answers
//! [`UPGRADE_OK`], and from then on the socket only wakes sleepers and tells
//! of a dead peer.

use crate::util::Unpoison;
use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use super::mailbox::{Mailbox, SPIN};
use crate::connection::framing;
use crate::connection::reader::{Frame, FrameReader};
use crate::connection::{Connection, DEFAULT_MAX_MESSAGE_LEN};
use crate::error::{Error, Result};
use crate::platform::fd;

/// A client's first frame asking for the shared-memory path; its one fd is
/// the mailbox. (No request carries fds, so no request is mistaken for it.)
const UPGRADE: &[u8] = b"\xffmultiprocess-mailbox-1\xff";
/// The server's answer to [`UPGRADE`].
const UPGRADE_OK: &[u8] = b"\xffmailbox-ok\xff";
/// The server's answer to [`UPGRADE`] when it cannot map the mailbox (out of
/// fds or memory): the connection goes on over the socket.
const UPGRADE_NO: &[u8] = b"\xffmailbox-no\xff";

/// Most bytes one read takes from the socket (a small frame, or several,
/// cost one read).
const READ_CHUNK: usize = 64 * 1024;

/// The receive side: bytes read and not yet handed out, as frames.
struct Rx {
    /// The frame parser (the one of `connection/reader.rs`): it refuses a
    /// length above the limit at the header and grows a payload's buffer
    /// only as its bytes arrive.
    reader: FrameReader,
    /// Where one read lands before it goes to the reader.
    chunk: Vec<u8>,
    /// A frame shown to `recv_frame_if` and left for the next receive.
    held: Option<Frame>,
    /// The frame error already handed out, handed out again to every later
    /// receive: after a corrupt, truncated or oversized frame the stream is
    /// not read any further (an oversized frame's payload is not skipped).
    failed: Option<Error>,
}

/// One end of a manager connection.
pub(crate) struct Channel {
    /// The socket; `None` once closed. Calls clone the `Arc`, so a `close()`
    /// from another thread never closes an fd a call is using.
    fd: Mutex<Option<Arc<OwnedFd>>>,
    /// The receive side (one reader at a time).
    rx: Mutex<Rx>,
    /// The shared-memory path, once upgraded.
    mailbox: OnceLock<Mailbox>,
    /// The first frame has been looked at (only it may be an upgrade).
    first_seen: std::sync::atomic::AtomicBool,
}

impl Channel {
    /// Takes over the socket of an (authenticated) connection.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the connection is closed, [`Error::Io`] when out of fds.
    pub(crate) fn from_connection(conn: &Connection) -> Result<Channel> {
        let fd = conn.with_fd(|fd| fd.try_clone_to_owned())??;
        conn.close();
        Ok(Channel {
            fd: Mutex::new(Some(Arc::new(fd))),
            rx: Mutex::new(Rx {
                reader: FrameReader::new(DEFAULT_MAX_MESSAGE_LEN),
                chunk: vec![0; READ_CHUNK],
                held: None,
                failed: None,
            }),
            mailbox: OnceLock::new(),
            first_seen: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// A client's end over a local (Unix) socket: as
    /// [`from_connection`](Self::from_connection), then moved to shared
    /// memory.
    ///
    /// # Errors
    ///
    /// As `from_connection`; [`Error::Io`] if the mailbox cannot be made;
    /// [`Error::Decode`] if the server answers the upgrade with something else;
    /// [`Error::Eof`] if it hangs up.
    pub(crate) fn local_client(conn: &Connection) -> Result<Channel> {
        let ch = Self::from_connection(conn)?;
        // The client never takes an upgrade.
        ch.first_seen
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // Out of fds or memory: the socket path works all the same.
        let Ok(mailbox) = Mailbox::create() else {
            return Ok(ch);
        };
        ch.send_frame(UPGRADE, &[mailbox.fd()])?;
        match ch.recv(true, <[u8]>::to_vec)?.as_slice() {
            UPGRADE_OK => {
                let _ = ch.mailbox.set(mailbox);
            }
            UPGRADE_NO => {}
            _ => {
                return Err(Error::decode(
                    "the manager answered the shared-memory upgrade with something else",
                ));
            }
        }
        Ok(ch)
    }

    fn fd(&self) -> Result<Arc<OwnedFd>> {
        self.fd.lock().unpoison().clone().ok_or(Error::Closed)
    }

    /// Closes this end (the fd closes when no call uses it any more).
    pub(crate) fn close(&self) {
        let fd = self.fd.lock().unpoison().take();
        if let Some(fd) = &fd {
            // Wakes a thread of ours blocked reading it.
            let _ = fd::shutdown(fd.as_fd());
        }
    }

    /// True after [`close`](Channel::close).
    pub(crate) fn is_closed(&self) -> bool {
        self.fd.lock().unpoison().is_none()
    }

    /// True when the peer has closed its end (checked without waiting).
    pub(crate) fn peer_closed(&self) -> bool {
        self.fd()
            .map(|fd| fd::peer_closed(fd.as_fd()))
            .unwrap_or(true)
    }

    /// Sends one frame: header and payload in one `send`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Io`] (`EPIPE` when the peer is gone).
    pub(crate) fn send(&self, payload: &[u8]) -> Result<()> {
        if let Some(mailbox) = self.mailbox.get() {
            let fd = self.fd()?;
            return mailbox.send(fd.as_fd(), payload);
        }
        self.send_frame(payload, &[])
    }

    /// Sends one frame over the socket, with `fds` on its first byte.
    fn send_frame(&self, payload: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]) -> Result<()> {
        let fd = self.fd()?;
        let (header, hlen) = framing::encode_header(payload.len());
        let total = hlen + payload.len();
        let mut sent = 0;
        while sent < total {
            let bufs: [IoSlice<'_>; 2] = if sent < hlen {
                [IoSlice::new(&header[sent..hlen]), IoSlice::new(payload)]
            } else {
                [IoSlice::new(&payload[sent - hlen..]), IoSlice::new(&[])]
            };
            let n = fd::send_with_fds(fd.as_fd(), &bufs, if sent == 0 { fds } else { &[] })?;
            if n == 0 {
                return Err(Error::Io(std::io::ErrorKind::WriteZero.into()));
            }
            sent += n;
        }
        Ok(())
    }

    /// Receives one frame and hands its payload to `f`.
    ///
    /// With `spin`, polls for up to [`SPIN`] before sleeping in `read`.
    ///
    /// # Errors
    ///
    /// [`Error::Eof`] when the peer closed between frames, [`Error::Decode`]
    /// for a frame cut short or with a corrupt header,
    /// [`Error::MessageTooLarge`], [`Error::Closed`], [`Error::Io`].
    pub(crate) fn recv<R>(&self, spin: bool, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let fd = self.fd()?;
        if let Some(mailbox) = self.mailbox.get() {
            return mailbox.recv(fd.as_fd(), spin, f);
        }
        if self.take_upgrade(spin)? {
            return self.recv(spin, f);
        }
        self.recv_frame(spin, f)
    }

    /// Server side, before the first request: if the client's first frame is
    /// [`UPGRADE`], opens its mailbox and answers [`UPGRADE_OK`] (true).
    fn take_upgrade(&self, spin: bool) -> Result<bool> {
        if self.first_seen.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(false);
        }
        let upgrade = self.recv_frame_if(spin, |frame, fds| {
            (frame == UPGRADE && fds.len() == 1).then(|| fds.pop())
        })?;
        self.first_seen
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let Some(memfd) = upgrade else {
            return Ok(false);
        };
        let memfd = memfd.ok_or_else(|| Error::decode("an upgrade without its mailbox"))?;
        match Mailbox::open(memfd) {
            Ok(mailbox) => {
                self.send_frame(UPGRADE_OK, &[])?;
                let _ = self.mailbox.set(mailbox);
            }
            Err(_) => self.send_frame(UPGRADE_NO, &[])?,
        }
        Ok(true)
    }

    /// Receives one frame over the socket and hands its payload to `f`.
    fn recv_frame<R>(&self, spin: bool, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let mut f = Some(f);
        self.recv_frame_if(spin, |frame, _| f.take().map(|f| f(frame)))?
            .ok_or_else(|| Error::decode("a frame was left unread"))
    }

    /// Waits for the next frame over the socket and shows it (with the fds
    /// that came with it) to `f`; the frame is consumed only if `f` returns
    /// `Some`, else it is held for the next receive.
    fn recv_frame_if<R>(
        &self,
        spin: bool,
        f: impl FnOnce(&[u8], &mut Vec<OwnedFd>) -> Option<R>,
    ) -> Result<Option<R>> {
        let fd = self.fd()?;
        let mut rx = self.rx.lock().unpoison();
        let mut spin_until = spin.then(|| Instant::now() + SPIN);
        loop {
            if let Some(e) = &rx.failed {
                return Err(e.duplicate());
            }
            if rx.held.is_none() {
                match rx.reader.next_frame() {
                    Some(Ok(frame)) => rx.held = Some(frame),
                    // End of file stays end of file without being stored.
                    Some(Err(Error::Eof)) => return Err(Error::Eof),
                    Some(Err(e)) => {
                        rx.failed = Some(e.duplicate());
                        return Err(e);
                    }
                    None => {}
                }
            }
            if let Some(Frame { bytes, fds }) = &mut rx.held {
                let out = f(bytes, fds);
                if out.is_some() {
                    // Fds belong to the upgrade frame only; any other
                    // sender's are closed here, not kept.
                    rx.held = None;
                }
                return Ok(out);
            }
            if let Some(until) = spin_until {
                // Poll, yielding between polls, until data comes or time is up.
                // (Polling, not `recv(MSG_DONTWAIT)`: a spinning recv contends
                // for the socket lock the sender needs, and measured 3x slower.)
                while !fd::wait_for(fd.as_fd(), fd::READABLE, Some(Instant::now()))? {
                    if Instant::now() >= until {
                        spin_until = None;
                        break;
                    }
                    std::thread::yield_now();
                }
            }
            let mut fds = Vec::new();
            let Rx { reader, chunk, .. } = &mut *rx;
            match fd::recv_with_fds(fd.as_fd(), chunk, &mut fds)? {
                0 => reader.end_of_file(),
                n => reader.push(&chunk[..n], fds),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Channel, Channel) {
        let (a, b) = crate::connection::pipe(true).unwrap();
        (
            Channel::from_connection(&a).unwrap(),
            Channel::from_connection(&b).unwrap(),
        )
    }

    #[test]
    fn frames_keep_their_boundaries() {
        let (a, b) = pair();
        for m in [&b"hello"[..], b"", b"x"] {
            a.send(m).unwrap();
        }
        for m in [&b"hello"[..], b"", b"x"] {
            assert_eq!(b.recv(true, <[u8]>::to_vec).unwrap(), m);
        }
        let big = vec![7u8; 300_000];
        std::thread::scope(|s| {
            s.spawn(|| a.send(&big).unwrap());
            assert_eq!(b.recv(false, <[u8]>::to_vec).unwrap(), big);
        });
        drop(a);
        assert!(matches!(b.recv(false, |_| ()), Err(Error::Eof)));
    }

    /// A header declaring more than the limit is refused before a byte of
    /// payload is kept, and the stream is read no further: every later
    /// receive gets the same error, even after a good frame follows.
    #[test]
    fn a_lying_header_is_refused_and_ends_the_stream() {
        let (ours, peer) = crate::platform::fd::socketpair_stream().unwrap();
        let chan = Channel::from_connection(&Connection::from_fd(ours, true, true)).unwrap();
        let mut bytes = framed(b"fine");
        bytes.extend_from_slice(&(-1i32).to_be_bytes());
        bytes.extend_from_slice(&(1u64 << 40).to_be_bytes());
        bytes.extend_from_slice(&[0; 1000]);
        bytes.extend(framed(b"after"));
        fd::write(peer.as_fd(), &bytes).unwrap();
        assert_eq!(chan.recv(false, <[u8]>::to_vec).unwrap(), b"fine");
        for _ in 0..2 {
            let r = chan.recv(false, <[u8]>::to_vec);
            assert!(
                matches!(r, Err(Error::MessageTooLarge { len, max }) if len == 1 << 40 && max == DEFAULT_MAX_MESSAGE_LEN),
                "{r:?}"
            );
        }
    }

    #[test]
    fn a_negative_length_is_a_decode_error_every_time() {
        let (ours, peer) = crate::platform::fd::socketpair_stream().unwrap();
        let chan = Channel::from_connection(&Connection::from_fd(ours, true, true)).unwrap();
        fd::write(peer.as_fd(), &(-7i32).to_be_bytes()).unwrap();
        for _ in 0..2 {
            let r = chan.recv(true, |_| ());
            assert!(
                matches!(&r, Err(Error::Decode(m)) if m.contains("negative length -7")),
                "{r:?}"
            );
        }
    }

    #[test]
    fn a_frame_cut_short_is_truncated_then_stays_an_error() {
        let (ours, peer) = crate::platform::fd::socketpair_stream().unwrap();
        let chan = Channel::from_connection(&Connection::from_fd(ours, true, true)).unwrap();
        fd::write(peer.as_fd(), &framed(b"whole message")[..8]).unwrap();
        drop(peer);
        for _ in 0..2 {
            let r = chan.recv(false, |_| ());
            assert!(
                matches!(&r, Err(Error::Decode(m)) if m.starts_with("truncated")),
                "{r:?}"
            );
        }
    }

    fn framed(payload: &[u8]) -> Vec<u8> {
        let (h, n) = framing::encode_header(payload.len());
        let mut v = h[..n].to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn a_closed_channel_says_so() {
        let (a, b) = pair();
        assert!(!b.peer_closed());
        a.close();
        assert!(a.is_closed());
        assert!(matches!(a.send(b"x"), Err(Error::Closed)));
        assert!(b.peer_closed());
    }
}
