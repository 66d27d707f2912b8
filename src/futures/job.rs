//! The pool job behind a [`Future`](super::Future): the pool's own
//! `ApplyJob` (decode, store, wake threads, wakers and done callbacks), plus
//! the future's state: a task going to a worker marks it running, unless it
//! was cancelled first (then the pool drops it unsent).

use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::future::Core;
use crate::error::{Error, Result};
use crate::pool::{ApplyJob, Direct, Job};

/// See the module docs.
pub(crate) struct FutureJob<R> {
    /// Shared with the future.
    core: Arc<Core<R>>,
    /// Fills the future's slot.
    apply: ApplyJob<R>,
}

impl<R> FutureJob<R> {
    pub(crate) fn new(core: Arc<Core<R>>) -> Self {
        let apply = ApplyJob::new(core.slot.clone(), None, None);
        FutureJob { core, apply }
    }
}

impl<R: DeserializeOwned + Send + 'static> Job for FutureJob<R> {
    fn complete(&mut self, index: u64, outcome: Result<crate::pool::Body<'_>>) -> bool {
        if self.core.is_cancelled() {
            // Cancelled while the answer was on its way: the cancel wins,
            // whichever of the two reached the slot first.
            self.core.slot.set(Err(Error::Cancelled));
            return true;
        }
        self.apply.complete(index, outcome)
    }

    fn cancelled(&self) -> bool {
        self.core.is_cancelled()
    }

    fn claim(&self) -> bool {
        self.core.claim()
    }

    fn direct(&self, direct: Direct) -> bool {
        self.apply.direct(direct)
    }
}

impl<R> Drop for FutureJob<R> {
    fn drop(&mut self) {
        if self.core.is_cancelled() {
            self.core.slot.set(Err(Error::Cancelled));
        }
        // `apply` drops next: an unanswered job becomes `Error::Closed`.
    }
}
