//! The kernel calls of the forkserver: forking a child as the server's
//! sibling, dying with the program, and giving a forked child the program's
//! working directory, umask and standard streams.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Forks this process with `clone(CLONE_PARENT | SIGCHLD)`: the new process is
/// a child of *our* parent (the program that runs the forkserver), not of us,
/// so the program waits for it, gets its `SIGCHLD` and reads its exit code as
/// for a child it spawned itself. Returns `Some(pid)` here and `None` in the
/// new process.
///
/// Only for a single-threaded caller (the forkserver checks that it is): the
/// child gets a copy of the one thread, and no lock can be held by a thread
/// that does not exist there. glibc's fork handlers do not run (nothing of
/// ours registers one), and the copy of glibc's thread descriptor keeps the
/// server's thread id, which glibc uses only as an owner tag (unique, since
/// the server's id stays taken while it lives).
pub(crate) fn fork_as_sibling() -> io::Result<Option<u32>> {
    let flags = (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY:
    // - with a null stack pointer `clone` behaves as `fork`: the child runs on
    //   a copy of our stack and memory, returning 0 here; the null tid and tls
    //   pointers are not used without their CLONE_* flags.
    // - the caller is single-threaded (see above), so the child's copy of the
    //   address space is consistent: no other thread was mid-update.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            0 as libc::c_ulong,
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    match r {
        0 => Ok(None),
        pid if pid > 0 => Ok(Some(pid as u32)),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Asks the kernel to SIGKILL this process when its parent thread exits
/// (`PR_SET_PDEATHSIG`): the thread that created it, or, for a child forked
/// with `CLONE_PARENT`, that of the process it was forked from. Not
/// inherited by children; cleared by the kernel when this process changes
/// its user or group ids.
pub(crate) fn die_with_parent() -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number by value and touches no
    // memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How many threads this process runs (`Threads:` of `/proc/self/status`).
pub(crate) fn thread_count() -> io::Result<usize> {
    status_field("Threads:")?
        .parse()
        .map_err(|_| io::Error::other("unreadable Threads: line in /proc/self/status"))
}

/// This process's umask, read without changing it (`Umask:` of
/// `/proc/self/status`, Linux 4.7+; `umask(2)` can only read by setting, which
/// would race with other threads creating files).
pub(crate) fn current_umask() -> io::Result<u32> {
    u32::from_str_radix(&status_field("Umask:")?, 8)
        .map_err(|_| io::Error::other("unreadable Umask: line in /proc/self/status"))
}

fn status_field(name: &str) -> io::Result<String> {
    use std::io::Read;
    // One read of a buffer the whole file fits in (about 1.5 KiB), where
    // `read_to_string` would `statx` and grow from 32 bytes (ten system calls
    // on every start of a child).
    let mut raw = Vec::with_capacity(8192);
    std::fs::File::open("/proc/self/status")?
        .take(64 * 1024)
        .read_to_end(&mut raw)?;
    let status = String::from_utf8_lossy(&raw);
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| io::Error::other(format!("no {name} line in /proc/self/status")))
}

/// Sets this process's umask.
pub(crate) fn set_umask(mask: u32) {
    // SAFETY: umask takes a mode by value and cannot fail.
    unsafe { libc::umask(mask as libc::mode_t) };
}

/// Makes the directory open as `dir` the working directory.
pub(crate) fn change_dir(dir: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fchdir takes an fd number by value; a bad one is EBADF.
    if unsafe { libc::fchdir(dir.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens the working directory (`O_PATH`, close-on-exec), to hand it on.
pub(crate) fn open_cwd() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(".")?;
    Ok(dir.into())
}

/// Makes `stdout` and `stderr` this process's fds 1 and 2.
pub(crate) fn take_std_streams(stdout: BorrowedFd<'_>, stderr: BorrowedFd<'_>) -> io::Result<()> {
    dup_onto(stdout, libc::STDOUT_FILENO)?;
    dup_onto(stderr, libc::STDERR_FILENO)
}

/// Puts `fd` at number `target` (`dup2`; the copy is not close-on-exec, as a
/// standard stream should not be).
fn dup_onto(fd: BorrowedFd<'_>, target: libc::c_int) -> io::Result<()> {
    // SAFETY: dup2 takes two fd numbers by value; `target` (0, 1 or 2) is one
    // of the standard streams, which nothing in this process owns as an OwnedFd.
    if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// This process's name as `ps` shows it (`/proc/self/comm`).
pub(crate) fn process_name() -> io::Result<String> {
    Ok(std::fs::read_to_string("/proc/self/comm")?
        .trim_end_matches('\n')
        .to_string())
}

/// Renames this process (`PR_SET_NAME` of its main thread; 15 bytes kept).
pub(crate) fn set_process_name(name: &str) -> io::Result<()> {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes
    // from `buf`, which is 16 bytes long and ends with a NUL.
    let rc = unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
