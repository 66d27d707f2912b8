//! What a remote worker and the pool's relay say to each other before the
//! pool frames (`pool/child.rs`) begin, and what relays report to the pool.
//!
//! After the authkey handshake (both ways, CPython's HMAC challenge):
//!
//! | direction | message |
//! |---|---|
//! | worker → pool | [`Hello`] |
//! | pool → worker | [`Verdict`]; on `Refused` both sides close |
//! | pool → worker | the setup frame: the initializer's argument, `Setup` trailer |
//! | worker → pool | `Reply::Ready` or `Reply::InitFailed` |
//! | then | task frames and `Reply::Done` frames, one task at a time |

use serde::{Deserialize, Serialize};

/// The worker introduces itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// SHA-256 of its executable.
    pub(crate) build_id: Vec<u8>,
    /// Its rank, when a launcher started it.
    pub(crate) rank: Option<u64>,
    /// Its host name.
    pub(crate) host: String,
    /// Its pid (on its host).
    pub(crate) pid: u32,
}

/// The pool's answer to a [`Hello`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Verdict {
    /// Serve tasks.
    Welcome,
    /// Go away, and why.
    Refused(String),
}

/// What a relay tells the pool (a datagram each; dropped if nobody reads).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Event {
    /// A worker passed every check and ran its initializer.
    Joined {
        /// Its rank, if it has one.
        rank: Option<u64>,
        /// Its host.
        host: String,
        /// Its pid.
        pid: u32,
    },
    /// A worker was refused.
    Refused {
        /// Where it connected from.
        peer: String,
        /// Why.
        why: String,
    },
}

/// This host's name (`/proc/sys/kernel/hostname`), or `localhost`.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
