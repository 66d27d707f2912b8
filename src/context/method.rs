//! Start methods and the program-wide choice of one (the part of Python's
//! `multiprocessing.context` below processes and pools, which use it).

use crate::util::Unpoison;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The variable that picks the default start method (`spawn` or
/// `forkserver`) for a program that does not call [`set_start_method`].
pub const START_METHOD_VAR: &str = "MULTIPROCESS_START_METHOD";

/// How a child process is started. Both give the child the same fresh state:
/// it has run only the code before [`init`](crate::init); they differ in cost.
///
/// There is no `fork`: a Rust program may run threads that hold locks (the
/// allocator's, stdio's, any `Mutex`) at the moment of a fork, and the child
/// would inherit them locked, with no thread to release them. See
/// docs/design.md.
///
/// Python: the method names of `multiprocessing.get_all_start_methods()`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// let m: mp::StartMethod = "forkserver".parse().unwrap();
/// assert_eq!(m, mp::StartMethod::Forkserver);
/// assert_eq!(m.to_string(), "forkserver");
/// assert!(matches!("fork".parse::<mp::StartMethod>(), Err(mp::Error::Value(_))));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StartMethod {
    /// The binary is run again (`posix_spawn` of `/proc/self/exe`) for every
    /// child. Python: `'spawn'`.
    Spawn,
    /// The binary is run again once, as a server that has run only the code
    /// before `init()`; every child is forked from it and handed the parent's
    /// current environment, working directory, umask and standard streams.
    /// Python: `'forkserver'`.
    Forkserver,
}

impl StartMethod {
    /// The method's name as Python spells it (`"spawn"`, `"forkserver"`).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiprocess::StartMethod::Spawn.name(), "spawn");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            StartMethod::Spawn => "spawn",
            StartMethod::Forkserver => "forkserver",
        }
    }
}

impl fmt::Display for StartMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why `"fork"` is refused.
const NO_FORK: &str = "the 'fork' start method is not available: a Rust program cannot fork \
     safely, because other threads (the test harness, a pool's handler thread, any library's) may \
     hold locks at that moment (the allocator's, stdio's, a Mutex) and the child would inherit them \
     locked with no thread left to release them, along with half-updated allocator state; use \
     'forkserver', which forks from a single-threaded server, or 'spawn'";

impl FromStr for StartMethod {
    type Err = Error;

    /// Parses `"spawn"` or `"forkserver"`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for `"fork"` (its text says why) and for any other name.
    fn from_str(s: &str) -> Result<StartMethod> {
        match s {
            "spawn" => Ok(StartMethod::Spawn),
            "forkserver" => Ok(StartMethod::Forkserver),
            "fork" => Err(Error::value(NO_FORK)),
            other => Err(Error::value(format!(
                "cannot find context for {other:?}: the start methods are 'spawn' and 'forkserver'"
            ))),
        }
    }
}

/// The method when nothing chose one: [`START_METHOD_VAR`] if set and valid,
/// else the forkserver (the same children as spawn's, started several times
/// faster; CPython 3.14's POSIX default too).
fn default_method() -> StartMethod {
    let Some(v) = std::env::var_os(START_METHOD_VAR) else {
        return StartMethod::Forkserver;
    };
    match v.to_str().map(str::parse::<StartMethod>) {
        Some(Ok(m)) => m,
        _ => {
            eprintln!(
                "multiprocess: ignoring {START_METHOD_VAR}={v:?} (expected 'spawn' or \
                 'forkserver'); using 'forkserver'"
            );
            StartMethod::Forkserver
        }
    }
}

/// The method chosen by [`set_start_method`], or the default once read.
static METHOD: Mutex<Option<StartMethod>> = Mutex::new(None);
/// Whether [`set_start_method`] chose [`METHOD`].
static SET_EXPLICITLY: AtomicBool = AtomicBool::new(false);
/// Set when this process started its first child with the global method.
static CHILD_STARTED: AtomicBool = AtomicBool::new(false);

/// Sets the start method of this program's children (those not made from a
/// [`Context`](crate::Context)).
///
/// Call it once, early. Calling it again with the method already in force is
/// fine; with another one after an earlier call or after a child was started
/// it is an error (Python's `set_start_method` without `force=True`).
///
/// Python: `multiprocessing.set_start_method(method)`.
///
/// # Errors
///
/// [`Error::Value`] when another method was already set or used to start a
/// child.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// mp::init();
/// mp::set_start_method(mp::StartMethod::Forkserver).unwrap();
/// assert_eq!(mp::get_start_method(), mp::StartMethod::Forkserver);
/// assert!(mp::set_start_method(mp::StartMethod::Forkserver).is_ok());
/// assert!(matches!(mp::set_start_method(mp::StartMethod::Spawn), Err(mp::Error::Value(_))));
/// ```
pub fn set_start_method(method: StartMethod) -> Result<()> {
    let mut current = METHOD.lock().unpoison();
    let in_force = *current.get_or_insert_with(default_method);
    if in_force == method {
        SET_EXPLICITLY.store(true, Ordering::Relaxed);
        return Ok(());
    }
    if SET_EXPLICITLY.load(Ordering::Relaxed) || CHILD_STARTED.load(Ordering::Relaxed) {
        return Err(Error::value(format!(
            "context has already been set: the start method is '{in_force}' (set it once, before \
             the first child starts)"
        )));
    }
    *current = Some(method);
    SET_EXPLICITLY.store(true, Ordering::Relaxed);
    Ok(())
}

/// The start method in force: the one [`set_start_method`] chose, else the
/// default (`forkserver`, or [`START_METHOD_VAR`] when set).
///
/// Python: `multiprocessing.get_start_method()`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// let m = mp::get_start_method();
/// assert!(mp::get_all_start_methods().contains(&m));
/// ```
pub fn get_start_method() -> StartMethod {
    *METHOD.lock().unpoison().get_or_insert_with(default_method)
}

/// The start method for a child about to start with the global method; from
/// now on [`set_start_method`] may not change it.
pub(crate) fn method_for_start(chosen: Option<StartMethod>) -> StartMethod {
    chosen.unwrap_or_else(|| {
        let m = get_start_method();
        CHILD_STARTED.store(true, Ordering::Relaxed);
        m
    })
}

/// The available start methods, the default first.
///
/// Python: `multiprocessing.get_all_start_methods()`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// let all = mp::get_all_start_methods();
/// assert!(all.contains(&mp::StartMethod::Spawn));
/// assert!(all.contains(&mp::StartMethod::Forkserver));
/// ```
pub fn get_all_start_methods() -> Vec<StartMethod> {
    let first = default_method();
    let mut all = vec![first];
    all.extend(
        [StartMethod::Spawn, StartMethod::Forkserver]
            .into_iter()
            .filter(|m| *m != first),
    );
    all
}
