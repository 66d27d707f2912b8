//! Processes by pid: signals and reaping.
//!
//! The one place that sends a signal to a pid or waits for one; every caller
//! above `platform/` goes through these functions.

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

pub(crate) use nix::sys::signal::Signal;

fn pid_of(pid: u32) -> Pid {
    Pid::from_raw(pid as i32)
}

/// Sends `sig` to `pid`. Errors (the process is gone) are ignored: callers
/// that care reap it next, which tells.
pub(crate) fn kill(pid: u32, sig: Signal) {
    let _ = nix::sys::signal::kill(pid_of(pid), sig);
}

/// Kills this process at once (SIGKILL): no destructors, no exit handlers.
pub(crate) fn kill_self() {
    kill(std::process::id(), Signal::SIGKILL);
}

/// False only when the kernel says no process `pid` exists (`ESRCH`); a
/// process we may not signal, or a zombie, counts as existing.
pub(crate) fn exists(pid: u32) -> bool {
    !matches!(nix::sys::signal::kill(pid_of(pid), None), Err(Errno::ESRCH))
}

/// Reaps the child `pid`: its exit code in Python's convention (`-N` when
/// killed by signal N), or `None` while it runs (only when not `block`ing).
/// A child already reaped elsewhere (a `waitpid(-1)` behind our back) gives
/// 255: gone, status lost.
pub(crate) fn reap(pid: u32, block: bool) -> Option<i32> {
    let flags = if block {
        None
    } else {
        Some(WaitPidFlag::WNOHANG)
    };
    loop {
        match waitpid(pid_of(pid), flags) {
            Ok(WaitStatus::Exited(_, code)) => return Some(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Some(-(sig as i32)),
            Ok(WaitStatus::StillAlive) => return None,
            Ok(_) => {
                if !block {
                    return None;
                }
            }
            Err(Errno::EINTR) => continue,
            Err(_) => return Some(255),
        }
    }
}

/// Waits for the child `pid` to exit and reaps it; its exit code as [`reap`]
/// gives it.
pub(crate) fn reap_blocking(pid: u32) -> Option<i32> {
    reap(pid, true)
}

/// The kernel thread id of the calling thread.
pub(crate) fn gettid() -> u32 {
    nix::unistd::gettid().as_raw() as u32
}

/// Detaches this process from its parent, as a daemon does: forks, the
/// parent `_exit(0)`s at once (its spawner reaps it), and the child, now an
/// orphan adopted by init (or the nearest subreaper), starts its own session
/// so that a terminal's Ctrl-C or hang-up does not reach it. Returns in the
/// child only.
///
/// Call it only while this process has a single thread (from `init()`,
/// before anything starts one): the child of a `fork` has just the calling
/// thread.
///
/// # Errors
///
/// `EAGAIN`/`ENOMEM` from fork (the caller then runs undetached).
pub(crate) fn detach() -> std::io::Result<()> {
    // SAFETY:
    // - called only while the process has one thread (see above), so the
    //   child inherits no lock held by another thread; the parent branch
    //   calls only `_exit`, which is async-signal-safe.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { .. } => {
            // SAFETY: `_exit` ends the process at once; nothing of ours needs
            // to run (no buffered output was written yet).
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Child => {
            let _ = nix::unistd::setsid();
            Ok(())
        }
    }
}

/// Ignores `SIGINT`, `SIGTERM` and `SIGHUP`, as CPython's resource tracker
/// does for the first two: a process whose job is to clean up after the
/// others when they are interrupted must not be interrupted with them.
pub(crate) fn ignore_interrupts() {
    use nix::sys::signal::{SigHandler, signal};
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: SIG_IGN installs no handler code.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
}

/// Points stdout at `/dev/null`.
///
/// # Errors
///
/// Those of opening `/dev/null` or `dup2`.
pub(crate) fn stdout_to_dev_null() -> std::io::Result<()> {
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    nix::unistd::dup2_stdout(null)?;
    Ok(())
}

/// The resident set size of process `pid` in bytes, from the `VmRSS:` line
/// of `/proc/PID/status` (in kB there). `None` when the process is gone or
/// the file is unreadable.
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    // The children are reaped through `reap`, not std's `wait`.
    #[allow(clippy::zombie_processes)]
    fn reap_reports_exit_codes_and_signals() {
        let exited = std::process::Command::new("sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap();
        assert_eq!(reap_blocking(exited.id()), Some(3));
        let sleeper = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = sleeper.id();
        assert_eq!(reap(pid, false), None);
        assert!(exists(pid));
        kill(pid, Signal::SIGKILL);
        assert_eq!(reap_blocking(pid), Some(-9));
        // Reaped: a second reap says "status lost" (not ours any more).
        assert_eq!(reap(pid, false), Some(255));
        assert!(exists(std::process::id()));
        // std's handle must not wait again (it would get ECHILD); drop it.
        drop(sleeper);
    }
}
