//! The operating-system layer: the only place that talks to the kernel directly.
//!
//! Everything above it holds `OwnedFd`/`BorrowedFd` and calls the safe functions
//! re-exported here; the `unsafe` of this crate lives in this module (and in the
//! function-pointer rebuild of `reduction::call`). One backend per OS, picked here, as
//! ipc-channel does in `platform/mod.rs`.

#[cfg(not(target_os = "linux"))]
compile_error!("multiprocess supports Linux only: it relies on memfd, futex, pidfd and SCM_RIGHTS");

mod linux;

pub(crate) use linux::{env, fd, forkserver, futex, membarrier, named_shm, process, shm, spawn};
