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
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
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
    Ok(socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)?)
}

/// A connected pair of `AF_UNIX` seqpacket sockets: every send is one message,
/// received whole or not at all.
pub(crate) fn socketpair_seqpacket() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)?)
}

/// A pipe: `(read end, write end)`.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

/// Whether `fd` is a socket (it can carry fds) rather than a pipe.
pub(crate) fn is_socket(fd: BorrowedFd<'_>) -> bool {
    nix::sys::stat::fstat(fd)
        .map(|st| (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK)
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

/// Receives into `buf`, appending any fds that arrive to `fds`, retrying on
/// `EINTR`. Returns 0 at end of file.
pub(crate) fn recv_with_fds(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS_PER_MESSAGE]);
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = match recvmsg::<()>(
            fd.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(Errno::EINTR) => continue,
            other => other?,
        };
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
        if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(io::Error::other("a message carried more file descriptors than fit"));
        }
        return Ok(msg.bytes);
    }
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

/// Switches `O_NONBLOCK` on or off.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    let flags = if on { flags | OFlag::O_NONBLOCK } else { flags - OFlag::O_NONBLOCK };
    fcntl(fd, FcntlArg::F_SETFL(flags))?;
    Ok(())
}

/// Waits until one of `fds` has one of its requested events, or `deadline`
/// passes (`None`: wait forever). Returns each fd's returned events (all 0 on
/// timeout).
///
/// The deadline is absolute, so an `EINTR` retry does not stretch it.
pub(crate) fn poll(fds: &[(BorrowedFd<'_>, i16)], deadline: Option<Instant>) -> io::Result<Vec<i16>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|(fd, events)| libc::pollfd { fd: fd.as_raw_fd(), events: *events, revents: 0 })
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

/// Waits until `fd` has one of `events` or the deadline passes; true if it has.
pub(crate) fn wait_for(fd: BorrowedFd<'_>, events: i16, deadline: Option<Instant>) -> io::Result<bool> {
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

/// The number of open fds of this process (entries of `/proc/self/fd`).
pub(crate) fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count().saturating_sub(1)).unwrap_or(0)
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
        let mut buf = [0u8; 8];
        assert_eq!(recv_with_fds(b.as_fd(), &mut buf, &mut got).unwrap(), 2);
        assert_eq!(&buf[..2], b"hi");
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
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))?;
    Ok(fd)
}

/// Ignores `SIGPIPE`, so that a write to a closed pipe is an `EPIPE` error, as
/// std arranges before `main` (a child may run before `main`, from the test
/// support constructor).
pub(crate) fn ignore_sigpipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY:
    // - SIG_IGN installs no handler code, so no async-signal-safety concern.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) };
}
