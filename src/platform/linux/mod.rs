//! The Linux backend.

pub(crate) mod fd;
pub(crate) mod spawn;
