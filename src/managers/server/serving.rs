//! What every object's operation gets to know about the client it serves,
//! below the objects and the server that dispatches to them: the client
//! itself (its number, whether it is still there), and how often a blocked call
//! looks for it.

use std::time::Duration;

use crate::managers::channel::Channel;

/// A connection being served.
pub(crate) struct Client<'a> {
    /// Its number (lock ownership).
    pub(super) id: u64,
    /// The connection, to see whether the peer has gone while we block.
    pub(super) conn: Option<&'a Channel>,
}

impl Client<'_> {
    /// False once the peer closed its end.
    pub(super) fn alive(&self) -> bool {
        self.conn.is_none_or(|c| !c.peer_closed())
    }
}

/// How often a thread blocked for a client checks that the client is still there.
pub(super) const PEER_CHECK: Duration = Duration::from_millis(50);
