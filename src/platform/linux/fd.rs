//! File descriptors: socket pairs, pipes, `SCM_RIGHTS` passing, `poll` with
//! deadlines, and pidfds.
//!
//! Every fd made here is close-on-exec, so a re-executed child holds only the fds
//! that spawn hands it on purpose (ipc-channel's rule).

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};

/// The most fds one message may carry (the kernel's `SCM_MAX_FD`).
pub(crate) const MAX_FDS_PER_MESSAGE: usize = 253;

/// Ready for reading (data, or the peer hung up).
pub(crate) const READABLE: i16 = libc::POLLIN;
/// Ready for writing.
pub(crate) const WRITABLE: i16 = libc::POLLOUT;
/// The peer closed its end (or the fd is in error): reads give EOF.
pub(crate) const HUNG_UP: i16 = libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR;

/// A connected pair of `AF_UNIX` stream sockets.
pub(crate) fn socketpair_stream() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

/// A connected pair of `AF_UNIX` seqpacket sockets: every send is one message,
/// received whole or not at all.
pub(crate) fn socketpair_seqpacket() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

/// A close-on-exec pipe: `(read end, write end)` (the shared-memory
/// tracker's channel; tests use it as a non-socket fd).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

/// True when `fd` is a pipe (or FIFO).
pub(crate) fn is_pipe(fd: BorrowedFd<'_>) -> bool {
    nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFIFO)
}

/// A wake-up counter: [`EventFd::write`] adds, [`EventFd::read`] takes the
/// count (readable while it is not zero).
pub(crate) use nix::sys::eventfd::EventFd;

/// A close-on-exec, non-blocking [`EventFd`] (a thread's wake-up fd, polled
/// with the fds it waits on).
pub(crate) fn eventfd() -> io::Result<EventFd> {
    use nix::sys::eventfd::EfdFlags;
    Ok(EventFd::from_flags(
        EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
    )?)
}

/// Nanoseconds on the clock `Instant` uses (CLOCK_MONOTONIC, one clock for
/// all processes of the machine); 0 if it cannot be read.
pub(crate) fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| std::time::Duration::from(t).as_nanos() as u64)
        .unwrap_or(0)
}

/// Asks for a send buffer of `bytes` on a socket. The kernel doubles the
/// request and caps it at `net.core.wmem_max`, for root as for anyone (only
/// `SO_SNDBUFFORCE` goes past the cap, and it needs a privilege this crate
/// does not ask for), so the result is the same with or without privileges.
pub(crate) fn set_send_buffer(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    Ok(nix::sys::socket::setsockopt(
        &fd,
        nix::sys::socket::sockopt::SndBuf,
        &bytes,
    )?)
}

/// The send buffer of a socket, in bytes (as the kernel counts it: twice
/// what was asked for).
#[cfg(test)]
pub(crate) fn send_buffer(fd: BorrowedFd<'_>) -> io::Result<usize> {
    Ok(nix::sys::socket::getsockopt(
        &fd,
        nix::sys::socket::sockopt::SndBuf,
    )?)
}

/// Whether `fd` is a socket (it can carry fds) rather than a pipe.
pub(crate) fn is_socket(fd: BorrowedFd<'_>) -> bool {
    nix::sys::stat::fstat(fd)
        .map(|st| (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK)
        .unwrap_or(false)
}

/// Whether `fd` is a Unix-domain socket: the only kind that carries fds
/// (a TCP socket silently drops `SCM_RIGHTS`).
pub(crate) fn is_unix_socket(fd: BorrowedFd<'_>) -> bool {
    nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(fd.as_raw_fd())
        .map(|a| a.as_unix_addr().is_some())
        .unwrap_or(false)
}

/// Sends `bufs` with `fds` attached (`SCM_RIGHTS`), retrying on `EINTR`.
///
/// Returns the number of bytes written, which may be less than the total; the
/// fds travel with the first byte. `MSG_NOSIGNAL`: a dead peer is `EPIPE`, not a
/// signal that kills us.
pub(crate) fn send_with_fds(
    fd: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsgs = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsgs };
    loop {
        match sendmsg::<()>(fd.as_raw_fd(), bufs, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Err(Errno::EINTR) => continue,
            other => return Ok(other?),
        }
    }
}

/// Like [`send_with_fds`], but never blocks: `Ok(None)` when the socket buffer
/// has no room (`EAGAIN`). A stream socket may take only part of `bufs`.
pub(crate) fn try_send_with_fds(
    fd: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
) -> io::Result<Option<usize>> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsgs = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsgs };
    let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
    loop {
        match sendmsg::<()>(fd.as_raw_fd(), bufs, cmsgs, flags, None) {
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(None),
            other => return Ok(Some(other?)),
        }
    }
}

/// Whether a send failed because the message cannot fit the socket as one
/// datagram (`EMSGSIZE`, or `ENOBUFS` for one larger than the buffer).
pub(crate) fn is_too_big(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMSGSIZE) | Some(libc::ENOBUFS))
}

/// The error of a message received without all its fds (`MSG_CTRUNC`: they
/// did not fit, or the process is at its fd limit). The message itself was
/// consumed.
#[derive(Debug)]
struct FdsTruncated;

impl std::fmt::Display for FdsTruncated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "a message carried more file descriptors than could be received \
             (too many, or this process is at its fd limit)",
        )
    }
}

impl std::error::Error for FdsTruncated {}

/// True for the error of a message received without all its fds (the
/// message was consumed: it is lost to the caller).
pub(crate) fn is_fds_truncated(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<FdsTruncated>())
}

/// The error of a message too big for its socket (`EMSGSIZE`).
pub(crate) fn too_big() -> io::Error {
    io::Error::from_raw_os_error(libc::EMSGSIZE)
}

/// Receives up to `max` bytes, appending them to `buf` without zero-filling
/// first (the spare capacity is reserved here), and any fds to `fds`; `cmsg`
/// comes from [`cmsg_buffer`].
///
/// `nonblocking`: `Ok(None)` instead of waiting when nothing is there. Returns
/// `Ok(Some(0))` at end of file.
pub(crate) fn recv_append(
    fd: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    max: usize,
    cmsg: &mut Vec<u8>,
    fds: &mut Vec<OwnedFd>,
    nonblocking: bool,
) -> io::Result<Option<usize>> {
    buf.reserve(max);
    let spare = buf.spare_capacity_mut();
    let want = max.min(spare.len());
    // SAFETY:
    // - `spare` is the vector's allocated, unused capacity, at least `want`
    //   bytes long and exclusively borrowed here.
    // - the slice is only handed to the kernel to write into; no byte of it is
    //   read before `set_len` below, and only the bytes the kernel reported
    //   written are ever exposed.
    let dst = unsafe { std::slice::from_raw_parts_mut(spare.as_mut_ptr().cast::<u8>(), want) };
    match recv_flags_with(fd, dst, cmsg, fds, nonblocking)? {
        None => Ok(None),
        Some(msg) => {
            let len = buf.len();
            // SAFETY:
            // - the kernel wrote `msg.len <= want` bytes at the start of the spare
            //   capacity, so `len + msg.len` bytes are initialized and allocated.
            unsafe { buf.set_len(len + msg.len) };
            Ok(Some(msg.len))
        }
    }
}

/// What one `recvmsg` gave.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Received {
    /// Bytes written into the buffer.
    pub(crate) len: usize,
    /// The datagram was longer than the buffer; the rest is lost (`MSG_TRUNC`).
    pub(crate) truncated: bool,
}

/// A control-message buffer with room for the most fds one message carries
/// (for [`recv_flags_with`]).
pub(crate) fn cmsg_buffer() -> Vec<u8> {
    nix::cmsg_space!([RawFd; MAX_FDS_PER_MESSAGE])
}

/// One `recvmsg` into `buf`, appending fds to `fds`, retrying on `EINTR`;
/// `cmsg` is a buffer from [`cmsg_buffer`], kept by the caller so that a hot
/// receive loop allocates nothing. `nonblocking`: `Ok(None)` instead of
/// waiting when nothing is there. On a datagram socket the message is taken
/// whole (or reported truncated).
pub(crate) fn recv_flags_with(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    cmsg: &mut Vec<u8>,
    fds: &mut Vec<OwnedFd>,
    nonblocking: bool,
) -> io::Result<Option<Received>> {
    let mut flags = MsgFlags::MSG_CMSG_CLOEXEC;
    if nonblocking {
        flags |= MsgFlags::MSG_DONTWAIT;
    }
    match recvmsg_fds(fd, buf, cmsg, fds, flags) {
        Err(e) if nonblocking && e.raw_os_error() == Some(Errno::EAGAIN as i32) => Ok(None),
        other => Ok(Some(other?)),
    }
}

/// The one `recvmsg` loop both receive functions share: retries on `EINTR`,
/// takes ownership of every fd that arrived (appended to `fds`), and fails
/// when the fds did not all fit (`MSG_CTRUNC`: too many for `cmsg`, or the
/// process at its fd limit; the kernel closed the rest, and the message is
/// consumed: [`is_fds_truncated`]).
fn recvmsg_fds(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    cmsg: &mut Vec<u8>,
    fds: &mut Vec<OwnedFd>,
    flags: MsgFlags,
) -> io::Result<Received> {
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = match recvmsg::<()>(fd.as_raw_fd(), &mut iov, Some(&mut *cmsg), flags) {
            Err(Errno::EINTR) => continue,
            other => other?,
        };
        // Before `cmsgs()`, which refuses a truncated control buffer with a
        // bare ENOBUFS that would not say the message is gone. The fds the
        // kernel did install before it ran out (none when the process is at
        // its fd limit from the start) are not walked: nix gives no safe way.
        if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(io::Error::other(FdsTruncated));
        }
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for r in raw {
                    // SAFETY:
                    // - the kernel just installed `r` in our fd table for this
                    //   message (SCM_RIGHTS), and nothing else owns it yet.
                    fds.push(unsafe { OwnedFd::from_raw_fd(r) });
                }
            }
        }
        return Ok(Received {
            len: msg.bytes,
            truncated: msg.flags.contains(MsgFlags::MSG_TRUNC),
        });
    }
}

/// Receives into `buf`, appending any fds that arrive to `fds`, retrying on
/// `EINTR`. Returns 0 at end of file.
pub(crate) fn recv_with_fds(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    let mut cmsg = cmsg_buffer();
    Ok(recvmsg_fds(fd, buf, &mut cmsg, fds, MsgFlags::MSG_CMSG_CLOEXEC)?.len)
}

/// `read(2)`, retrying on `EINTR`. Returns 0 at end of file.
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match nix::unistd::read(fd, buf) {
            Err(Errno::EINTR) => continue,
            other => return Ok(other?),
        }
    }
}

/// `write(2)`, retrying on `EINTR`. For sockets use [`send_with_fds`], which
/// does not raise `SIGPIPE`.
pub(crate) fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    loop {
        match nix::unistd::write(fd, buf) {
            Err(Errno::EINTR) => continue,
            other => return Ok(other?),
        }
    }
}

/// Shuts a socket down both ways. On a listening socket this wakes every
/// thread polling it (`connection::Listener::close`).
pub(crate) fn shutdown(fd: BorrowedFd<'_>) -> io::Result<()> {
    nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Both)?;
    Ok(())
}

/// Switches `O_NONBLOCK` on or off.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    let flags = if on {
        flags | OFlag::O_NONBLOCK
    } else {
        flags - OFlag::O_NONBLOCK
    };
    fcntl(fd, FcntlArg::F_SETFL(flags))?;
    Ok(())
}

/// Waits until one of `fds` has one of its requested events, or `deadline`
/// passes (`None`: wait forever). Returns each fd's returned events (all 0 on
/// timeout).
///
/// The deadline is absolute, so an `EINTR` retry does not stretch it.
pub(crate) fn poll(
    fds: &[(BorrowedFd<'_>, i16)],
    deadline: Option<Instant>,
) -> io::Result<Vec<i16>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|(fd, events)| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: *events,
            revents: 0,
        })
        .collect();
    loop {
        let timeout_ms: libc::c_int = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up, so that we never wake just before the deadline and spin.
                let ms = left.as_nanos().div_ceil(1_000_000);
                ms.min(libc::c_int::MAX as u128) as libc::c_int
            }
        };
        // SAFETY:
        // - `pfds` is a valid, writable array of `pfds.len()` pollfd structs that
        //   outlives the call; the fds are borrowed for the whole call.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(err);
        }
        if n == 0 && deadline.is_some_and(|d| Instant::now() < d) {
            continue;
        }
        return Ok(pfds.iter().map(|p| p.revents).collect());
    }
}

/// `fd`'s returned events among `events`, looked at without waiting (a
/// zero-timeout `poll` of one fd, allocating nothing: the spinning receive
/// calls it in a loop).
pub(crate) fn poll_now(fd: BorrowedFd<'_>, events: i16) -> io::Result<i16> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    loop {
        // SAFETY:
        // - `pfd` is one valid, writable pollfd on our stack for the whole
        //   call, and its fd is borrowed for the call.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        if n >= 0 {
            return Ok(pfd.revents);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// How many times the calling thread has been switched out involuntarily
/// (preempted while runnable: `getrusage(RUSAGE_THREAD)`'s `ru_nivcsw`); 0
/// if it cannot be read. A rise means another task wanted this CPU: the
/// spinning receive (`connection/spin.rs`) then stops spinning.
pub(crate) fn involuntary_switches() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY:
    // - `usage` is a writable rusage on our stack for the whole call; the
    //   kernel fills it and touches nothing else.
    let r = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    if r != 0 {
        return 0;
    }
    // SAFETY:
    // - zero-initialised and then filled by a successful getrusage: every
    //   field is a plain integer.
    let usage = unsafe { usage.assume_init() };
    u64::try_from(usage.ru_nivcsw).unwrap_or(0)
}

/// Waits until `fd` has one of `events` or the deadline passes; true if it has.
pub(crate) fn wait_for(
    fd: BorrowedFd<'_>,
    events: i16,
    deadline: Option<Instant>,
) -> io::Result<bool> {
    Ok(poll(&[(fd, events)], deadline)?[0] != 0)
}

/// True if the peer of socket `fd` has closed its end (checked without waiting).
pub(crate) fn peer_closed(fd: BorrowedFd<'_>) -> bool {
    match poll(&[(fd, libc::POLLRDHUP)], Some(Instant::now())) {
        Ok(revents) => revents[0] & HUNG_UP != 0,
        Err(_) => true,
    }
}

/// A pidfd for `pid`: readable once the process has exited.
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY:
    // - pidfd_open takes a pid and flags by value and touches no memory of ours.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0 as libc::c_uint) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY:
    // - on success pidfd_open returns a new fd (close-on-exec by default) that
    //   nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// Takes ownership of an fd inherited from the parent (its number came in an
/// environment variable), making it close-on-exec again so that our own
/// children do not inherit it in turn.
///
/// # Errors
///
/// `EBADF` if `raw` is not an open fd of this process.
pub(crate) fn adopt_inherited(raw: RawFd) -> io::Result<OwnedFd> {
    // SAFETY:
    // - F_GETFD only reads the fd's flags; it fails with EBADF on a closed fd,
    //   which we check before taking ownership.
    if unsafe { libc::fcntl(raw, libc::F_GETFD) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY:
    // - `raw` is open (checked above) and was handed to this process for it
    //   alone: the spawning parent cleared close-on-exec on exactly this fd, and
    //   nothing else in this process knows its number (the variable is removed).
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    Ok(fd)
}

/// Ignores `SIGPIPE`, so that a write to a closed pipe is an `EPIPE` error, as
/// std arranges before `main` (a child may run before `main`, from the test
/// support constructor).
pub(crate) fn ignore_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY:
    // - SIG_IGN installs no handler code, so no async-signal-safety concern.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) };
}

/// Turns on TCP keepalive for socket `fd`, probing after 10 s of silence every
/// 5 s, 3 times: a peer whose machine died or whose network went away is
/// noticed in about 25 s instead of never (a remote pool worker).
pub(crate) fn set_keepalive(fd: BorrowedFd<'_>) -> io::Result<()> {
    for (level, name, value) in [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 10),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 5),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3),
    ] {
        let v: libc::c_int = value;
        // SAFETY:
        // - `fd` is a borrowed, open fd for the whole call; `v` is a c_int on
        //   our stack and the length passed is its size, so the kernel reads
        //   exactly that int and nothing else.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                level,
                name,
                (&raw const v).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::time::Duration;

    #[test]
    fn fds_travel_with_bytes() {
        let (a, b) = socketpair_stream().unwrap();
        let (r, w) = pipe().unwrap();
        let n = send_with_fds(a.as_fd(), &[IoSlice::new(b"hi")], &[w.as_fd()]).unwrap();
        assert_eq!(n, 2);
        drop(w);
        let mut got = Vec::new();
        let mut buf = Vec::new();
        let mut cmsg = cmsg_buffer();
        assert_eq!(
            recv_append(b.as_fd(), &mut buf, 8, &mut cmsg, &mut got, false).unwrap(),
            Some(2)
        );
        assert_eq!(&buf[..], b"hi");
        assert_eq!(got.len(), 1);
        assert_eq!(write(got[0].as_fd(), b"x").unwrap(), 1);
        let mut one = [0u8; 1];
        assert_eq!(read(r.as_fd(), &mut one).unwrap(), 1);
        assert_eq!(&one, b"x");
    }

    #[test]
    fn poll_times_out_after_deadline() {
        let (a, _b) = socketpair_stream().unwrap();
        let start = Instant::now();
        let ready = wait_for(a.as_fd(), READABLE, Some(start + Duration::from_millis(30))).unwrap();
        assert!(!ready);
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn poll_now_sees_data_and_hang_up_without_waiting() {
        let (a, b) = socketpair_stream().unwrap();
        assert_eq!(poll_now(a.as_fd(), READABLE).unwrap(), 0);
        assert_eq!(write(b.as_fd(), b"x").unwrap(), 1);
        assert_eq!(poll_now(a.as_fd(), READABLE).unwrap() & READABLE, READABLE);
        let mut one = [0u8; 1];
        assert_eq!(read(a.as_fd(), &mut one).unwrap(), 1);
        drop(b);
        assert_ne!(poll_now(a.as_fd(), READABLE).unwrap(), 0);
    }

    #[test]
    fn peer_closed_is_seen() {
        let (a, b) = socketpair_stream().unwrap();
        assert!(!peer_closed(a.as_fd()));
        drop(b);
        assert!(peer_closed(a.as_fd()));
    }

    #[test]
    fn sockets_and_pipes_are_told_apart() {
        let (a, _b) = socketpair_stream().unwrap();
        let (r, _w) = pipe().unwrap();
        assert!(is_socket(a.as_fd()));
        assert!(!is_socket(r.as_fd()));
    }
}
