//! The crate's one error type.
//!
//! Python raises a zoo of exceptions (`queue.Empty`, `multiprocessing.TimeoutError`,
//! `EOFError`, `BufferTooShort`, `AuthenticationError`, `ValueError`, ...); here each
//! is a variant of [`Error`], and every fallible method lists in its `# Errors`
//! section exactly the variants it can return.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `Result<T, multiprocess::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error this crate returns.
///
/// Display texts say what happened and, where a user can act, what to do.
///
/// Python: the exceptions of `multiprocessing`, `queue` and `threading` that the
/// ported calls raise; each variant names its Python counterpart.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let (a, b) = mp::pipe(true)?;
///     a.close();
///     assert!(matches!(b.recv::<i32>(), Err(mp::Error::Eof)));
///     Ok(())
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The deadline passed first. Python: `multiprocessing.TimeoutError`.
    #[error("timed out before the operation could complete")]
    Timeout,
    /// Nothing to get from a queue. Python: `queue.Empty`.
    #[error("queue is empty")]
    Empty,
    /// No room in a bounded queue. Python: `queue.Full`.
    #[error("queue is full")]
    Full,
    /// The peer closed its end and nothing is left to read. Python: `EOFError`.
    #[error("end of file: the other end of the connection was closed")]
    Eof,
    /// A value or a call was wrong for the object's state. Python: `ValueError`
    /// (and the `AssertionError`s of misuse, such as starting a process twice).
    #[error("{0}")]
    Value(String),
    /// A name or key is missing. Python: `KeyError`.
    #[error("key not found: {0}")]
    Key(String),
    /// The function panicked in the child process. Python: the remote exception
    /// with its `RemoteTraceback`.
    #[error("{}", RemoteDisplay { process, pid: *pid, message, location: location.as_deref(), backtrace: backtrace.as_deref() })]
    Remote {
        /// The name of the process that panicked (`Process-1`, `PoolWorker-3`, ...).
        process: String,
        /// Its pid.
        pid: u32,
        /// The panic message.
        message: String,
        /// `file:line:column` of the panic, when known.
        location: Option<String>,
        /// The child's backtrace, captured when `RUST_BACKTRACE` is set.
        backtrace: Option<String>,
    },
    /// The process running the task died before it answered (SIGKILL, abort,
    /// segfault, `process::exit`, the OOM killer). Python's Pool hangs here.
    #[error("{}", LostDisplay { pid: *pid, exitcode: *exitcode })]
    WorkerLost {
        /// The pid of the dead worker.
        pid: u32,
        /// Its exit code in Python's convention: `n` after `exit(n)`, `-SIG` when
        /// killed by a signal; `None` if it could not be read.
        exitcode: Option<i32>,
    },
    /// The pool, queue, connection or manager was already closed or shut down.
    /// Python: `ValueError("Pool not running")`, `OSError("handle is closed")`.
    #[error("the pool, queue, connection or manager is closed; create a new one to go on")]
    Closed,
    /// The future was cancelled before it ran (or while it ran, by
    /// `cancel_running`). Python: `concurrent.futures.CancelledError`.
    #[error("the future was cancelled")]
    Cancelled,
    /// The authkey handshake failed. Python: `AuthenticationError`.
    #[error("authentication failed: {0}")]
    Authentication(String),
    /// An operating-system call failed. Python: `OSError`.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A message could not be decoded: a corrupt or truncated frame, or a value of
    /// another type than the one asked for.
    #[error("could not decode a message: {0}")]
    Decode(String),
    /// A value could not be encoded for another process (for example a handle put
    /// into a byte stream that cannot carry file descriptors).
    #[error("could not encode a value: {0}")]
    Encode(String),
    /// A child process could not be started or did not complete its start-up.
    #[error("could not start the child process: {0}")]
    Spawn(String),
    /// The barrier was aborted, reset while waited on, or a wait timed out.
    /// Python: `threading.BrokenBarrierError`.
    #[error("the barrier is broken (aborted, reset or timed out); call reset() to use it again")]
    BrokenBarrier,
    /// The buffer given to `recv_bytes_into` was too small; the whole message is
    /// handed back. Python: `BufferTooShort` (whose `args[0]` is the message).
    #[error("buffer too short: the message has {} bytes; use a larger buffer or recv_bytes()", .0.len())]
    BufferTooShort(Vec<u8>),
    /// A message declared a length above the connection's maximum; nothing was
    /// allocated for it.
    #[error(
        "message of {len} bytes exceeds the maximum of {max} bytes; send less at once (a Connection's limit is raised with set_max_message_len())"
    )]
    MessageTooLarge {
        /// The declared length.
        len: u64,
        /// The limit in force.
        max: u64,
    },
}

/// A panic in another process, attributed to that process: the fields of
/// [`Error::Remote`] in the one form that crosses a process boundary (serde).
/// A manager's answer and a manager pool's result carry it; the pool parent
/// and a `Process` attribute a caught panic (`reduction::PanicInfo`, which
/// does not know its process) with [`PanicInfo::into_remote`].
///
/// One conversion each way: `Error::from(remote)` and [`RemoteError::of`].
///
/// [`PanicInfo::into_remote`]: crate::reduction::PanicInfo::into_remote
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RemoteError {
    /// The name of the process that panicked.
    pub(crate) process: String,
    /// Its pid.
    pub(crate) pid: u32,
    /// The panic message.
    pub(crate) message: String,
    /// `file:line:column` of the panic, when known.
    pub(crate) location: Option<String>,
    /// The backtrace, when captured.
    pub(crate) backtrace: Option<String>,
}

impl RemoteError {
    /// The remote error `e` is, if it is an [`Error::Remote`] (a copy).
    pub(crate) fn of(e: &Error) -> Option<RemoteError> {
        match e {
            Error::Remote {
                process,
                pid,
                message,
                location,
                backtrace,
            } => Some(RemoteError {
                process: process.clone(),
                pid: *pid,
                message: message.clone(),
                location: location.clone(),
                backtrace: backtrace.clone(),
            }),
            _ => None,
        }
    }
}

impl From<RemoteError> for Error {
    fn from(r: RemoteError) -> Error {
        Error::Remote {
            process: r.process,
            pid: r.pid,
            message: r.message,
            location: r.location,
            backtrace: r.backtrace,
        }
    }
}

struct RemoteDisplay<'a> {
    process: &'a str,
    pid: u32,
    message: &'a str,
    location: Option<&'a str>,
    backtrace: Option<&'a str>,
}

impl fmt::Display for RemoteDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (pid {}) panicked: {}",
            self.process, self.pid, self.message
        )?;
        if let Some(location) = self.location {
            write!(f, " at {location}")?;
        }
        if let Some(backtrace) = self.backtrace {
            write!(f, "\nremote backtrace:\n{backtrace}")?;
        }
        Ok(())
    }
}

struct LostDisplay {
    pid: u32,
    exitcode: Option<i32>,
}

impl fmt::Display for LostDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "worker process (pid {}) died while running the task: ",
            self.pid
        )?;
        match self.exitcode {
            Some(code) if code < 0 => write!(f, "killed by signal {}", signal_name(-code)),
            Some(code) => write!(f, "exited with code {code}"),
            None => write!(f, "its exit status is unknown"),
        }
    }
}

/// `SIGKILL (9)` for 9; the number alone for a signal without a name.
pub(crate) fn signal_name(signo: i32) -> String {
    match nix::sys::signal::Signal::try_from(signo) {
        Ok(sig) => format!("{} ({signo})", sig.as_str()),
        Err(_) => format!("{signo}"),
    }
}

impl Error {
    /// True for [`Error::Timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(multiprocess::Error::Timeout.is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout)
    }

    /// A second copy of this error (`Error` is not `Clone`: `io::Error` is not),
    /// so that a stored result can hand out the same error every time, as
    /// Python re-raises a stored exception. An `Io` error keeps its kind and text.
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Timeout => Error::Timeout,
            Error::Empty => Error::Empty,
            Error::Full => Error::Full,
            Error::Eof => Error::Eof,
            Error::Closed => Error::Closed,
            Error::Cancelled => Error::Cancelled,
            Error::BrokenBarrier => Error::BrokenBarrier,
            Error::Value(m) => Error::Value(m.clone()),
            Error::Key(m) => Error::Key(m.clone()),
            Error::Authentication(m) => Error::Authentication(m.clone()),
            Error::Decode(m) => Error::Decode(m.clone()),
            Error::Encode(m) => Error::Encode(m.clone()),
            Error::Spawn(m) => Error::Spawn(m.clone()),
            Error::BufferTooShort(b) => Error::BufferTooShort(b.clone()),
            Error::MessageTooLarge { len, max } => Error::MessageTooLarge {
                len: *len,
                max: *max,
            },
            Error::WorkerLost { pid, exitcode } => Error::WorkerLost {
                pid: *pid,
                exitcode: *exitcode,
            },
            // Through its wire form (the fallback is never taken).
            Error::Remote { .. } => {
                RemoteError::of(self).map_or_else(|| Error::Value(self.to_string()), Error::from)
            }
            Error::Io(io) => Error::Io(std::io::Error::new(io.kind(), io.to_string())),
        }
    }

    pub(crate) fn value(msg: impl Into<String>) -> Self {
        Error::Value(msg.into())
    }

    pub(crate) fn decode(msg: impl fmt::Display) -> Self {
        Error::Decode(msg.to_string())
    }

    pub(crate) fn encode(msg: impl fmt::Display) -> Self {
        Error::Encode(msg.to_string())
    }
}

impl From<nix::errno::Errno> for Error {
    fn from(errno: nix::errno::Errno) -> Self {
        Error::Io(std::io::Error::from(errno))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_lost_names_the_signal() {
        let e = Error::WorkerLost {
            pid: 7,
            exitcode: Some(-9),
        };
        assert_eq!(
            e.to_string(),
            "worker process (pid 7) died while running the task: killed by signal SIGKILL (9)"
        );
        let e = Error::WorkerLost {
            pid: 7,
            exitcode: Some(3),
        };
        assert!(e.to_string().ends_with("exited with code 3"));
    }

    #[test]
    fn remote_shows_message_and_location() {
        let e = Error::Remote {
            process: "Process-1".into(),
            pid: 42,
            message: "boom".into(),
            location: Some("src/main.rs:3:5".into()),
            backtrace: None,
        };
        assert_eq!(
            e.to_string(),
            "Process-1 (pid 42) panicked: boom at src/main.rs:3:5"
        );
    }

    #[test]
    fn a_remote_error_crosses_a_boundary_and_back() {
        let r = RemoteError {
            process: "PoolWorker-2".into(),
            pid: 42,
            message: "boom".into(),
            location: Some("src/main.rs:3:5".into()),
            backtrace: Some("0: main".into()),
        };
        let bytes = postcard::to_stdvec(&r).unwrap();
        let back: RemoteError = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, r);
        let e = Error::from(back);
        assert_eq!(
            e.to_string(),
            "PoolWorker-2 (pid 42) panicked: boom at src/main.rs:3:5\nremote backtrace:\n0: main"
        );
        assert_eq!(RemoteError::of(&e), Some(r.clone()));
        assert_eq!(RemoteError::of(&e.duplicate()), Some(r));
        assert_eq!(RemoteError::of(&Error::Timeout), None);
    }

    #[test]
    fn error_is_send_sync_static() {
        fn check<T: Send + Sync + 'static + std::error::Error>() {}
        check::<Error>();
    }
}
