//! What a pool sends a worker: a [`Task`], and the initializer every worker
//! runs first ([`InitSpec`]). The bottom of the pool parent's modules: the
//! per-worker I/O (`worker_io.rs`), the shared state (`submit.rs`) and the
//! scheduler all use these, and they use none of them.

use std::os::fd::OwnedFd;
use std::time::Duration;

use super::child;
use crate::error::{Error, Result};
use crate::reduction::{Encoded, FnRef};

/// One unit of work for a worker.
pub(crate) struct Task {
    /// Unique in the pool; echoed by the worker.
    pub(crate) id: u64,
    /// The job it belongs to.
    pub(crate) job: u64,
    /// Its index in the job (the chunk number for map/imap).
    pub(crate) index: u64,
    /// The frame: encoded argument and [`child::Call`] trailer.
    pub(crate) frame: Vec<u8>,
    /// The fds the argument's handles carry.
    pub(crate) fds: Vec<OwnedFd>,
    /// Kill the worker and fail the task if it runs longer.
    pub(crate) timeout: Option<Duration>,
    /// The function it runs (prefetch is only for a function known to be quick).
    pub(crate) func: FnRef,
    /// Failed before it was sent (its argument did not encode): the handler
    /// answers it with this error instead of sending it. Boxed: an error is
    /// rare and half the size of a task, and a big map holds every task.
    pub(crate) failed: Option<Box<Error>>,
}

impl Task {
    /// Builds a task calling `func` on the encoded `arg`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] if the trailer does not encode (it always does).
    pub(crate) fn new(
        id: u64,
        job: u64,
        index: u64,
        func: FnRef,
        arg: Encoded,
        timeout: Option<Duration>,
    ) -> Result<Task> {
        let Encoded { mut bytes, fds } = arg;
        child::append_trailer(&mut bytes, &child::Call { id, func }, 0)?;
        Ok(Task {
            id,
            job,
            index,
            frame: bytes,
            fds,
            timeout,
            func,
            failed: None,
        })
    }

    /// A task that already failed with `err`: it is answered, never sent.
    pub(crate) fn failed(id: u64, job: u64, index: u64, func: FnRef, err: Error) -> Task {
        Task {
            id,
            job,
            index,
            frame: Vec::new(),
            fds: Vec::new(),
            timeout: None,
            func,
            failed: Some(Box::new(err)),
        }
    }
}

/// The initializer and its encoded argument, kept for every worker start.
pub(crate) struct InitSpec {
    /// The initializer's trampoline.
    pub(crate) func: FnRef,
    /// Its encoded argument.
    pub(crate) arg: Encoded,
}
