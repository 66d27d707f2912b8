//! `Process` as a thread: Python's `multiprocessing.dummy.DummyProcess`.

use crate::util::Unpoison;
use std::fmt;
use std::process::{ExitCode, Termination};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{install_panic_hook, next_name, run_caught, wait_until};
use crate::error::{Error, Result};
use crate::util::deadline_after;

/// How a thread's target ended: its exit code as a process's would be, and
/// the panic that ended it.
#[derive(Debug)]
struct Outcome {
    exitcode: i32,
    panic: Option<Error>,
}

/// What the thread and its `Process` (and `ProcessInfo`s) share.
#[derive(Debug)]
struct Shared {
    name: String,
    outcome: Mutex<Option<Outcome>>,
    done: Condvar,
}

impl Shared {
    fn finish(&self, outcome: Outcome) {
        *self.outcome.lock().unpoison() = Some(outcome);
        self.done.notify_all();
    }

    fn is_done(&self) -> bool {
        self.outcome.lock().unpoison().is_some()
    }

    /// Waits until the thread has finished or the timeout passed; true if finished.
    fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.and_then(deadline_after);
        wait_until(&self.done, self.outcome.lock().unpoison(), deadline, |o| {
            o.is_some()
        })
        .1
    }
}

/// The running threads started by dummy `Process::start`, for [`active_children`].
fn registry() -> &'static Mutex<Vec<Weak<Shared>>> {
    static REGISTRY: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());
    &REGISTRY
}

type Target = Box<dyn FnOnce() -> ExitCode + Send>;

/// A thread with [`crate::Process`]'s API.
///
/// The target may capture variables and its argument need not be
/// serializable: the thread shares this process's memory. A panic in the
/// target ends the thread with exit code 1 and is kept as
/// [`panic_error`](Process::panic_error), as a child's is; an abort or a
/// segfault ends the whole program, since there is no other process to take it.
///
/// Python: `multiprocessing.dummy.Process` (`DummyProcess`, a `threading.Thread`).
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
/// fn main() -> mp::Result<()> {
///     let seen = Arc::new(AtomicU32::new(0));
///     let s = seen.clone();
///     let mut p = mp::Process::new(move |n: u32| s.store(n, Ordering::SeqCst), 7);
///     p.start()?;
///     p.join()?;
///     assert_eq!((p.exitcode(), seen.load(Ordering::SeqCst)), (Some(0), 7));
///     Ok(())
/// }
/// ```
pub struct Process {
    name: String,
    daemon: bool,
    target: Option<Target>,
    shared: Option<Arc<Shared>>,
    thread: Option<JoinHandle<()>>,
    closed: bool,
}

impl Process {
    /// A thread that will run `target(arg)` once [`start`](Process::start)ed.
    /// The target's result is its exit status, as `main`'s is (`Err` gives 1,
    /// an `ExitCode` gives itself).
    ///
    /// Python: `Process(target=f, args=(arg,))`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::dummy as mp;
    /// use std::process::ExitCode;
    /// fn main() -> mp::Result<()> {
    ///     let mut p = mp::Process::new(|n: u8| ExitCode::from(n), 3);
    ///     p.start()?;
    ///     p.join()?;
    ///     assert_eq!(p.exitcode(), Some(3));
    ///     Ok(())
    /// }
    /// ```
    pub fn new<F, A, R>(target: F, arg: A) -> Process
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Send + 'static,
        R: Termination,
    {
        Process {
            name: next_name("Thread"),
            daemon: false,
            target: Some(Box::new(move || target(arg).report())),
            shared: None,
            thread: None,
            closed: false,
        }
    }

    /// Renames the thread (its name as [`current_process`] reports it inside;
    /// a rename after `start()` is seen by this handle only).
    ///
    /// Python: `Process.name = ...`.
    pub fn set_name(&mut self, name: impl Into<String>) {
        self.name = name.into();
    }

    /// Marks the thread as a daemon. A daemon thread is not joined at exit (as
    /// a daemonic process is terminated at exit); kept for the API.
    ///
    /// Python: `Process.daemon = True`.
    pub fn set_daemon(&mut self, daemon: bool) {
        self.daemon = daemon;
    }

    /// The name.
    ///
    /// Python: `Process.name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The daemon flag.
    ///
    /// Python: `Process.daemon`.
    pub fn daemon(&self) -> bool {
        self.daemon
    }

    /// This process's pid once started (a thread has the pid of the process it
    /// runs in), `None` before.
    ///
    /// Python: `Process.pid` (`DummyProcess` has none; this is `os.getpid()`).
    pub fn pid(&self) -> Option<u32> {
        self.shared.as_ref().map(|_| std::process::id())
    }

    /// Starts the thread.
    ///
    /// Python: `Process.start()`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when started twice or after `close()`,
    /// [`Error::Spawn`] when the OS refuses a thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::dummy as mp;
    /// let mut p = mp::Process::new(|_: ()| (), ());
    /// p.start()?;
    /// assert!(matches!(p.start(), Err(mp::Error::Value(_))));
    /// p.join()?;
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn start(&mut self) -> Result<()> {
        self.check_open()?;
        let target = self
            .target
            .take()
            .ok_or_else(|| Error::value("cannot start a process twice"))?;
        install_panic_hook();
        let shared = Arc::new(Shared {
            name: self.name.clone(),
            outcome: Mutex::new(None),
            done: Condvar::new(),
        });
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name(self.name.clone())
            .spawn(move || run_target(&theirs, target))
            .map_err(|e| Error::Spawn(format!("could not start a thread: {e}")))?;
        let mut reg = registry().lock().unpoison();
        reg.retain(|w| w.upgrade().is_some_and(|s| !s.is_done()));
        reg.push(Arc::downgrade(&shared));
        self.shared = Some(shared);
        self.thread = Some(thread);
        Ok(())
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            return Err(Error::value("process object is closed"));
        }
        Ok(())
    }

    fn started(&self, what: &str) -> Result<&Arc<Shared>> {
        self.check_open()?;
        self.shared
            .as_ref()
            .ok_or_else(|| Error::value(format!("can only {what} a started process")))
    }

    /// Waits until the thread has finished.
    ///
    /// Python: `Process.join()`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] before `start()` or after `close()`.
    pub fn join(&mut self) -> Result<()> {
        self.started("join")?.wait(None);
        self.reap();
        Ok(())
    }

    /// Waits at most `timeout`; true if the thread has finished.
    ///
    /// Python: `Process.join(timeout)` followed by `exitcode is not None`.
    ///
    /// # Errors
    ///
    /// As [`join`](Process::join).
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<bool> {
        let done = self.started("join")?.wait(Some(timeout));
        if done {
            self.reap();
        }
        Ok(done)
    }

    /// Joins the OS thread once its target has finished.
    fn reap(&mut self) {
        if let Some(t) = self.thread.take() {
            // The target's panic was caught inside the thread: join cannot fail.
            let _ = t.join();
        }
    }

    /// True from `start()` until the target has returned.
    ///
    /// Python: `Process.is_alive()`.
    pub fn is_alive(&self) -> bool {
        self.shared.as_ref().is_some_and(|s| !s.is_done())
    }

    /// Releases the handle; later calls fail with [`Error::Value`] ("process
    /// object is closed").
    ///
    /// Python: `Process.close()`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] while the thread is still running.
    pub fn close(&mut self) -> Result<()> {
        if self.is_alive() {
            return Err(Error::value(
                "cannot close a process while it is still running; join() it first",
            ));
        }
        self.reap();
        self.closed = true;
        Ok(())
    }

    /// The exit code once the thread has finished: 0, 1 after a panic or an
    /// `Err`, or the target's `ExitCode`; `None` before.
    ///
    /// Python: `Process.exitcode`.
    pub fn exitcode(&self) -> Option<i32> {
        let s = self.shared.as_ref()?;
        s.outcome.lock().unpoison().as_ref().map(|o| o.exitcode)
    }

    /// The panic that ended the thread, as an [`Error::Remote`].
    ///
    /// Beyond Python (which prints the traceback only).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::dummy as mp;
    /// let mut p = mp::Process::new(|_: ()| panic!("boom"), ());
    /// p.start()?;
    /// p.join()?;
    /// assert_eq!(p.exitcode(), Some(1));
    /// assert!(matches!(p.panic_error(), Some(mp::Error::Remote { message, .. }) if message == "boom"));
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn panic_error(&self) -> Option<Error> {
        let s = self.shared.as_ref()?;
        s.outcome
            .lock()
            .unpoison()
            .as_ref()
            .and_then(|o| o.panic.as_ref().map(Error::duplicate))
    }

    /// A thread cannot be stopped from outside: this is the one call that
    /// differs. Python's threads have no `terminate()` either.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] always (before `start()`, as for a process; after it,
    /// because a thread cannot be terminated: give it an [`Event`](super::Event)
    /// to watch instead).
    pub fn terminate(&mut self) -> Result<()> {
        self.started("terminate")?;
        Err(Error::value(
            "a thread cannot be terminated (multiprocess::dummy); signal it with an Event and join it",
        ))
    }

    /// As [`terminate`](Process::terminate): a thread cannot be killed.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] always.
    pub fn kill(&mut self) -> Result<()> {
        self.started("kill")?;
        Err(Error::value(
            "a thread cannot be killed (multiprocess::dummy); signal it with an Event and join it",
        ))
    }

    /// A [`ProcessInfo`] for this thread once started.
    pub fn info(&self) -> Option<ProcessInfo> {
        self.shared.as_ref().map(ProcessInfo::thread)
    }
}

/// The thread's body: names the thread for `current_process`, runs the
/// target, records how it ended.
fn run_target(shared: &Arc<Shared>, target: Target) {
    CURRENT.with(|c| *c.borrow_mut() = Some(Arc::downgrade(shared)));
    let outcome = match run_caught(&shared.name, target) {
        Ok(code) => Outcome {
            exitcode: (0..=255u8)
                .find(|n| ExitCode::from(*n) == code)
                .map_or(1, i32::from),
            panic: None,
        },
        Err(e) => Outcome {
            exitcode: 1,
            panic: Some(e),
        },
    };
    shared.finish(outcome);
}

thread_local! {
    /// The dummy `Process` this thread runs, if any.
    static CURRENT: std::cell::RefCell<Option<Weak<Shared>>> = const { std::cell::RefCell::new(None) };
}

impl Drop for Process {
    fn drop(&mut self) {
        // A started, unjoined thread runs on detached, as a process does.
        self.thread.take();
    }
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("daemon", &self.daemon)
            .field("alive", &self.is_alive())
            .field("exitcode", &self.exitcode())
            .finish()
    }
}

/// What [`current_process`], [`parent_process`] and [`active_children`] tell
/// about a thread.
///
/// Python: the `Process` objects those functions return.
#[derive(Debug, Clone)]
pub struct ProcessInfo {
    name: String,
    kind: InfoKind,
}

#[derive(Debug, Clone)]
enum InfoKind {
    /// The calling thread (or the main thread).
    Current,
    /// A thread started by a dummy `Process`.
    Thread(Weak<Shared>),
}

impl ProcessInfo {
    fn thread(s: &Arc<Shared>) -> ProcessInfo {
        ProcessInfo {
            name: s.name.clone(),
            kind: InfoKind::Thread(Arc::downgrade(s)),
        }
    }

    /// The name (`MainProcess` for the main thread, as in Python's dummy).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pid of this process (all threads share it).
    pub fn pid(&self) -> u32 {
        std::process::id()
    }

    /// This process's authkey (threads share it).
    ///
    /// # Errors
    ///
    /// As [`crate::ProcessInfo::authkey`].
    pub fn authkey(&self) -> Result<Vec<u8>> {
        crate::current_process().authkey()
    }

    /// Sets this process's authkey (threads share it).
    ///
    /// # Errors
    ///
    /// As [`crate::ProcessInfo::set_authkey`].
    pub fn set_authkey(&self, key: impl AsRef<[u8]>) -> Result<()> {
        crate::current_process().set_authkey(key)
    }

    /// True while the thread runs (always for the current one).
    pub fn is_alive(&self) -> bool {
        match &self.kind {
            InfoKind::Current => true,
            InfoKind::Thread(w) => w.upgrade().is_some_and(|s| !s.is_done()),
        }
    }

    /// Waits at most `timeout` for the thread to finish; true if it has.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        match &self.kind {
            InfoKind::Current => {
                std::thread::sleep(timeout);
                false
            }
            InfoKind::Thread(w) => w.upgrade().is_none_or(|s| s.wait(Some(timeout))),
        }
    }
}

/// The calling thread: a dummy `Process`'s name inside one, else
/// `MainProcess` (a pool worker's name is its thread's).
///
/// Python: `multiprocessing.dummy.current_process()` (`threading.current_thread()`).
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// let mut p = mp::Process::new(|_: ()| assert_eq!(mp::current_process().name(), "worker"), ());
/// p.set_name("worker");
/// p.start()?;
/// p.join()?;
/// assert_eq!(p.exitcode(), Some(0));
/// assert_eq!(mp::current_process().name(), "MainProcess");
/// # Ok::<(), mp::Error>(())
/// ```
pub fn current_process() -> ProcessInfo {
    let mine = CURRENT.with(|c| c.borrow().clone());
    let name = match mine.as_ref().and_then(Weak::upgrade) {
        Some(s) => s.name.clone(),
        None => match std::thread::current().name() {
            Some("main") | None => crate::current_process().name().to_string(),
            Some(n) => n.to_string(),
        },
    };
    ProcessInfo {
        name,
        kind: InfoKind::Current,
    }
}

/// Threads have no parent process: `None`, as in the main process.
///
/// Python: `multiprocessing.parent_process()`.
pub fn parent_process() -> Option<ProcessInfo> {
    None
}

/// The dummy `Process` threads that are still running.
///
/// Python: `multiprocessing.dummy.active_children()`.
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// let stop = mp::Event::new()?;
/// let s = stop.clone();
/// let mut p = mp::Process::new(move |_: ()| s.wait(), ());
/// p.start()?;
/// assert!(mp::active_children().iter().any(|c| c.name() == p.name()));
/// stop.set();
/// p.join()?;
/// assert!(mp::active_children().iter().all(|c| c.name() != p.name()));
/// # Ok::<(), mp::Error>(())
/// ```
pub fn active_children() -> Vec<ProcessInfo> {
    let mut reg = registry().lock().unpoison();
    reg.retain(|w| w.upgrade().is_some_and(|s| !s.is_done()));
    reg.iter()
        .filter_map(Weak::upgrade)
        .map(|s| ProcessInfo::thread(&s))
        .collect()
}
