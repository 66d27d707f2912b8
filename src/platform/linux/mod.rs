//! The Linux backend.

pub(crate) mod env;
pub(crate) mod fd;
pub(crate) mod forkserver;
pub(crate) mod futex;
pub(crate) mod membarrier;
pub(crate) mod named_shm;
pub(crate) mod process;
pub(crate) mod shm;
pub(crate) mod spawn;
