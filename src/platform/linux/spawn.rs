//! Starting a child: the current binary run again, with one inherited socket.
//!
//! `std::process::Command` does the fork and exec; the one thing it cannot do is
//! hand the child a chosen fd without leaking it to every other child started at
//! the same moment. So the socket stays close-on-exec in the parent, and only the
//! forked child clears the flag, between fork and exec (`pre_exec`).

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// What to run: the executable, argv, and the environment variable that tells
/// the child which inherited fd is its channel to the parent.
pub(crate) struct SpawnSpec<'a> {
    /// The file to execute (normally `/proc/self/exe`).
    pub(crate) exe: &'a Path,
    /// `argv[0]` as the parent was started with it.
    pub(crate) arg0: OsString,
    /// The remaining arguments (the parent's own, so code before `init()` sees
    /// the same command line).
    pub(crate) args: Vec<OsString>,
    /// The variable that carries the fd number to the child.
    pub(crate) fd_var: &'a str,
    /// The child's end of the channel; inherited under its own number.
    pub(crate) channel: BorrowedFd<'a>,
}

/// Forks and executes `spec`, with stdin on `/dev/null` and stdout/stderr
/// inherited. Returns the child's pid; the caller reaps it.
pub(crate) fn spawn_child(spec: SpawnSpec<'_>) -> io::Result<u32> {
    let raw = spec.channel.as_raw_fd();
    let mut cmd = Command::new(spec.exe);
    cmd.arg0(&spec.arg0)
        .args(&spec.args)
        .env(spec.fd_var, raw.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    // SAFETY:
    // - the closure runs in the forked child before exec and only calls fcntl,
    //   which is async-signal-safe; it allocates nothing and takes no lock.
    // - `raw` is a valid fd in the child: fork copies the whole fd table, and
    //   `spec.channel` is borrowed, so it is open until spawn() returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(raw, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // std's Child neither kills nor reaps on drop; the pid is ours to reap.
    Ok(child.id())
}
