//! `membarrier(2)`: a memory barrier run on other CPUs on our behalf, so that a
//! frequent, cheap side of a handshake can skip its own fence and the rare side
//! pays for both (an asymmetric fence).
//!
//! The lock of `synchronize::raw` uses it: its release is a plain store and a
//! plain load, and a waiter, before it trusts a long sleep, forces a barrier
//! on every CPU that runs a registered process (`GLOBAL_EXPEDITED`: an
//! interrupt to each, only those).

/// `MEMBARRIER_CMD_GLOBAL_EXPEDITED` (`linux/membarrier.h`).
const GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
/// `MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED`.
const REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

/// Registers this process for [`global_expedited`] barriers: from then on, a
/// barrier any process asks for runs on whichever CPU runs one of our threads.
/// False when the kernel lacks the command (before 4.16, or built without it)
/// or a seccomp filter refuses it.
pub(crate) fn register_global_expedited() -> bool {
    membarrier(REGISTER_GLOBAL_EXPEDITED)
}

/// Runs a full memory barrier on every CPU now running a thread of a
/// registered process, and returns once they all did: every store those
/// threads made before it is visible to the caller afterwards, and every load
/// they make afterwards sees what the caller stored before it. False when the
/// kernel refused (see [`register_global_expedited`]).
pub(crate) fn global_expedited() -> bool {
    membarrier(GLOBAL_EXPEDITED)
}

fn membarrier(cmd: libc::c_int) -> bool {
    // SAFETY: `membarrier(cmd, flags = 0, cpu_id = 0)` reads no memory of
    // ours; an unknown or refused command only returns an error.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) };
    r == 0
}
