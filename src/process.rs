//! Python's `multiprocessing.process`: the `Process` object and the module
//! functions about processes.
//!
//! | Python | Rust |
//! |---|---|
//! | `Process(target=f, args=(a,))` | [`Process::new`]`(f, a)` |
//! | `p.start()`, `p.join(timeout)` | [`Process::start`], [`Process::join`], [`Process::join_timeout`] |
//! | `p.is_alive()`, `p.exitcode`, `p.pid`, `p.name`, `p.daemon` | same names, as methods |
//! | `p.terminate()`, `p.kill()` | [`Process::terminate`], [`Process::kill`] |
//! | `p.close()` | [`Process::close`] |
//! | `current_process().authkey` | [`ProcessInfo::authkey`], [`ProcessInfo::set_authkey`] |
//! | `current_process()`, `parent_process()`, `active_children()`, `cpu_count()` | same names |

use crate::util::Unpoison;
use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::process::Termination;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::connection::Waitable;
use crate::connection::sealed::{BorrowedFdHolder, Sealed};
use crate::error::{Error, Result};
use crate::platform::fd;
use crate::platform::process::{Signal, kill as send_signal, reap};
use crate::reduction::{self, PanicInfo, PreparedCall, assert_zero_sized};
use crate::spawn::{self, Child, Report, StartSpec};
use crate::util::deadline_after;

/// Exit status of a child in Python's convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// Still running.
    Running,
    /// Exited: `n` for `exit(n)`, `-SIG` when killed by a signal.
    Code(i32),
}

/// What the parent, and `active_children()`, share about one started child.
#[derive(Debug)]
struct Shared {
    /// Its pid (reaped at most once, under `exit`'s lock).
    pid: u32,
    /// Its name.
    name: String,
    /// Its daemon flag: terminated, not joined, when this process exits.
    daemon: bool,
    /// Readable once the child has exited.
    pidfd: OwnedFd,
    /// Filled when reaped.
    exit: Mutex<Exit>,
}

impl Shared {
    /// Reaps the child if it has exited, without blocking.
    fn try_reap(&self) -> Exit {
        let mut exit = self.exit.lock().unpoison();
        if *exit == Exit::Running {
            if let Some(code) = reap(self.pid, false) {
                *exit = Exit::Code(code);
            }
        }
        *exit
    }

    fn exitcode(&self) -> Option<i32> {
        match self.try_reap() {
            Exit::Running => None,
            Exit::Code(c) => Some(c),
        }
    }

    /// Sends `sig` unless the child has been reaped; true if sent.
    fn signal(&self, sig: Signal) -> bool {
        // Under the exit lock, so the pid cannot be reaped (and reused) meanwhile.
        let exit = self.exit.lock().unpoison();
        if *exit != Exit::Running {
            return false;
        }
        send_signal(self.pid, sig);
        true
    }

    /// Waits until the child has exited (or `deadline` passes), then reaps it.
    fn wait_exit(&self, deadline: Option<Instant>) -> Exit {
        if self.try_reap() == Exit::Running {
            let _ = fd::wait_for(self.pidfd.as_fd(), fd::READABLE, deadline);
        }
        self.try_reap()
    }
}

/// The children of this process that have not been reaped: Python's
/// `process._children`.
struct Registry {
    /// Every started child, while its `Process` or an orphan entry holds it.
    children: Vec<Weak<Shared>>,
    /// Children whose `Process` was dropped while they ran. Kept so that their
    /// bootstrap socket stays open (a daemon would take its closing for its
    /// parent's death) and so that they are reaped, and waited for at exit.
    orphans: Vec<Running>,
}

/// The children started by this process that may still run.
static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    children: Vec::new(),
    orphans: Vec::new(),
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unpoison()
}

impl Registry {
    /// Forgets the children that have exited, reaping them (Python's
    /// `process._cleanup()`, run by `start()` and `active_children()`): a
    /// dropped handle's child is no zombie for longer than the next call.
    fn cleanup(&mut self) {
        self.orphans
            .retain(|r| r.shared.try_reap() == Exit::Running);
        self.children
            .retain(|w| w.upgrade().is_some_and(|s| s.try_reap() == Exit::Running));
    }
}

/// How long a daemon child gets to exit after SIGTERM at this process's exit
/// before it is killed: it would die anyway once we are gone (its
/// parent-death signal, or its watch on the bootstrap socket when spawned),
/// so nothing is gained by waiting longer.
const DAEMON_EXIT_GRACE: Duration = Duration::from_secs(5);

/// Python's `util._exit_function` for children: at this process's normal exit
/// the daemon children get SIGTERM and every child is waited for. Registered
/// with libc's `atexit` at the first start, so it runs after `main` returns
/// and on `std::process::exit`, in children (exiting through it) as in the
/// main process. Children already reaped are not touched; pool workers and
/// manager servers are not `Process` objects and keep their own clean-up.
extern "C" fn exit_handler() {
    // A panic must not unwind into libc.
    let _ = std::panic::catch_unwind(finish_children);
}

fn finish_children() {
    let (children, orphans) = {
        let mut reg = registry();
        let children: Vec<Arc<Shared>> =
            reg.children.drain(..).filter_map(|w| w.upgrade()).collect();
        (children, std::mem::take(&mut reg.orphans))
    };
    for s in children.iter().filter(|s| s.daemon) {
        s.signal(Signal::SIGTERM);
    }
    let grace = deadline_after(DAEMON_EXIT_GRACE);
    // Orphans first: their start-up timeout bounds a child that never started.
    for r in &orphans {
        r.wait_at_exit(if r.shared.daemon { grace } else { None });
    }
    for s in &children {
        let deadline = if s.daemon { grace } else { None };
        if s.wait_exit(deadline) == Exit::Running && s.signal(Signal::SIGKILL) {
            s.wait_exit(None);
        }
    }
}

/// Registers [`exit_handler`] once, at the first start of a child.
fn register_exit_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Err(e) = crate::platform::spawn::at_exit(exit_handler) {
            eprintln!("multiprocess: children will not be waited for at exit: {e}");
        }
    });
}

use crate::spawn::{current_authkey, inherit_authkey};

/// Where a started child stands in its start-up.
#[derive(Debug)]
enum Startup {
    /// Waiting for its `Started` answer.
    Pending,
    /// Running its target.
    Confirmed,
    /// It never ran its target; why.
    Failed(String),
    /// It did not answer within the start timeout, so we killed it; why.
    TimedOut(String),
}

/// A started child: the handle `Process` keeps.
#[derive(Debug)]
struct Running {
    /// Shared with the registry.
    shared: Arc<Shared>,
    /// The bootstrap socket (start-up answer, panic report, parent liveness)
    /// and a second pidfd; released once the child is reaped, so that a
    /// joined `Process` holds one fd (the pidfd in `shared`).
    child: Option<Child>,
    /// How far the start-up got.
    startup: Startup,
    /// The panic the child reported, if any.
    panic: Option<PanicInfo>,
    /// We sent it SIGTERM/SIGKILL: dying before it answered is then no start-up
    /// failure (Python: `terminate()` right after `start()` is fine).
    signalled: bool,
}

/// A child process running a function, like a thread but with its own memory.
///
/// The target is a non-capturing closure or `fn` item taking one serde
/// argument (a tuple for several); a capturing closure does not compile. The
/// child is this binary run again: `mp::init()` at the top of `main` sends it
/// straight to the target.
///
/// Python: `multiprocessing.Process`.
///
/// # Differences from Python
///
/// * `join()` returns `Err(Error::Spawn)` for a child that never got to run its
///   target (it died during start-up, another build, or `init()` missing);
///   otherwise, as in Python, it returns `Ok(())` whatever the exit code.
/// * A panic in the child gives exit code 1 and prints `Process <name>:` and the
///   panic to the child's stderr, like Python's traceback; [`Process::panic_error`]
///   hands it to the parent as an [`Error::Remote`].
/// * Daemon children die with their parent even when it is killed with SIGKILL.
///   Daemons may start children of their own.
///
/// # Lifetime
///
/// Dropping a `Process` neither waits nor kills, as in Python and as with
/// `std::thread::JoinHandle`: the child runs on, and is reaped by a later
/// [`start`](Process::start) or [`active_children`] once it has exited. When
/// this program exits normally (return from `main`, or `std::process::exit`),
/// it waits for its non-daemon children and terminates (SIGTERM) its daemon
/// children, as CPython's exit handler does; a child that started children of
/// its own does the same when its target returns.
///
/// The target's result is treated as `main`'s (std's
/// [`Termination`](std::process::Termination)): `()` exits 0; `Err(e)` prints
/// `Error: {e:?}` on the child's stderr and exits 1; an
/// [`ExitCode`](std::process::ExitCode) exits with it. A joined `Process`
/// holds one fd (its pidfd); [`close`](Process::close) releases it.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let mut p = mp::Process::new(|(a, b): (i64, String)| println!("{b}: {}", a * 6), (7, "x".to_string()));
///     p.start()?;
///     p.join()?;
///     assert_eq!(p.exitcode(), Some(0));
///     Ok(())
/// }
/// ```
pub struct Process {
    /// `Process-N`, or what `set_name` gave.
    name: String,
    /// `[.., N]`: the parent's identity plus this child's number.
    identity: Vec<u32>,
    /// Terminated at the parent's exit (not joined); dies with the parent.
    daemon: bool,
    /// The target and its encoded argument, until `start()` sends them.
    call: Option<PreparedCall>,
    /// Set by `start()`.
    running: Option<Running>,
    /// Set by `close()`: what stays readable afterwards.
    closed: Option<Closed>,
    /// The start method of a `Process` made from a [`Context`](crate::Context);
    /// `None`: the global one at `start()`.
    method: Option<crate::context::method::StartMethod>,
}

/// What a closed `Process` remembers.
#[derive(Debug)]
struct Closed {
    /// The pid it had, if it was started.
    pid: Option<u32>,
    /// Its exit code, if it was started.
    exitcode: Option<i32>,
    /// The panic that ended it, if any.
    panic: Option<PanicInfo>,
}

/// The error of a method called after [`Process::close`] (Python's message).
fn closed_error() -> Error {
    Error::value("process object is closed")
}

impl Process {
    /// Prepares a process that will run `target(arg)`.
    ///
    /// `arg` is encoded at once and dropped: handles inside it (connections,
    /// queues) are closed in this process once the child has its copy, so the
    /// child's peer sees end of file when the child exits. An argument that fails
    /// to encode makes `start()` fail; nothing is started then.
    ///
    /// Python: `Process(target=target, args=(arg,))`.
    ///
    /// # Examples
    ///
    /// The target's result is its exit status, as `main`'s is:
    ///
    /// ```
    /// use multiprocess as mp;
    /// use std::process::ExitCode;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let mut fails = mp::Process::new(|_: ()| -> Result<(), String> { Err("no".into()) }, ());
    ///     let mut code = mp::Process::new(|n: u8| ExitCode::from(n), 3);
    ///     fails.start()?;
    ///     code.start()?;
    ///     fails.join()?;
    ///     code.join()?;
    ///     assert_eq!(fails.exitcode(), Some(1)); // and `Error: "no"` on its stderr
    ///     assert_eq!(code.exitcode(), Some(3));
    ///     Ok(())
    /// }
    /// ```
    ///
    /// ```compile_fail
    /// use multiprocess as mp;
    /// let greeting = String::from("hi");
    /// // error: a multiprocess target must not capture variables
    /// let p = mp::Process::new(move |_: ()| println!("{greeting}"), ());
    /// ```
    pub fn new<F, A, R>(target: F, arg: A) -> Process
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Termination,
    {
        assert_zero_sized::<F>();
        let (identity, name) = spawn::next_child_identity("Process");
        Process {
            name,
            identity,
            daemon: spawn::child_context().is_some_and(|c| c.daemon),
            call: Some(PreparedCall::main(target, arg)),
            running: None,
            closed: None,
            method: None,
        }
    }

    /// This process, started with `method` whatever the global one is.
    pub(crate) fn with_start_method(
        mut self,
        method: crate::context::method::StartMethod,
    ) -> Process {
        self.method = Some(method);
        self
    }

    /// Renames the process (before or after `start()`; the child sees the name it
    /// had at start).
    pub fn set_name(&mut self, name: impl Into<String>) {
        self.name = name.into();
    }

    /// Makes the process a daemon (or not). At this process's normal exit a
    /// daemon child still running gets SIGTERM instead of being waited for,
    /// and it dies with this process however it dies, even by SIGKILL.
    /// The default is the creating process's own flag.
    ///
    /// A daemon started by the forkserver (the default start method) dies
    /// with its parent by the kernel's parent-death signal, which the kernel
    /// drops when the daemon changes its user or group ids (`setuid`): one
    /// that drops privileges should watch `parent_process()` itself, or be
    /// started with the spawn method, whose daemons watch their parent's
    /// socket.
    ///
    /// # Panics
    ///
    /// After `start()`, like Python's `AssertionError('process has already started')`.
    pub fn set_daemon(&mut self, daemon: bool) {
        assert!(
            self.running.is_none(),
            "set_daemon() must be called before start()"
        );
        self.daemon = daemon;
    }

    /// The name: `Process-N` by default (`Process-1:2` for a child's child).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The daemon flag.
    pub fn daemon(&self) -> bool {
        self.daemon
    }

    /// The child's pid, once started.
    pub fn pid(&self) -> Option<u32> {
        match (&self.running, &self.closed) {
            (Some(r), _) => Some(r.shared.pid),
            (None, Some(c)) => c.pid,
            (None, None) => None,
        }
    }

    /// Starts the child. Returns as soon as the child is forked and its work is
    /// on the way; use `join` to wait for it.
    ///
    /// Python: `Process.start()`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when started twice, [`Error::Encode`] when the argument
    /// did not serialize, [`Error::Spawn`] when `mp::init()` was never called or
    /// the child died before it could be handed its work, [`Error::Io`] when the
    /// fork or exec failed (fd or process limits).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let mut p = mp::Process::new(|_: ()| (), ());
    ///     p.start()?;
    ///     assert!(matches!(p.start(), Err(mp::Error::Value(_))));
    ///     p.join()
    /// }
    /// ```
    pub fn start(&mut self) -> Result<()> {
        if self.closed.is_some() {
            return Err(closed_error());
        }
        let Some(call) = self.call.take() else {
            return Err(Error::value("cannot start a process twice"));
        };
        // Python's `_cleanup()`: reap the children that have exited since.
        registry().cleanup();
        let child = spawn::start(StartSpec {
            name: self.name.clone(),
            identity: self.identity.clone(),
            daemon: self.daemon,
            quiet_panics: false,
            method: crate::context::method::method_for_start(self.method),
            call,
        })?;
        let shared = Arc::new(Shared {
            pid: child.pid,
            name: self.name.clone(),
            daemon: self.daemon,
            pidfd: child.pidfd.try_clone()?,
            exit: Mutex::new(Exit::Running),
        });
        register(&shared);
        self.running = Some(Running {
            shared,
            child: Some(child),
            startup: Startup::Pending,
            panic: None,
            signalled: false,
        });
        Ok(())
    }

    fn running(&mut self, what: &str) -> Result<&mut Running> {
        if self.closed.is_some() {
            return Err(closed_error());
        }
        self.running
            .as_mut()
            .ok_or_else(|| Error::value(format!("can only {what} a started process")))
    }

    /// Waits for the child to exit.
    ///
    /// Python: `Process.join()`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] before `start()`; [`Error::Spawn`] when the child never
    /// ran its target (see the type's docs).
    pub fn join(&mut self) -> Result<()> {
        self.join_deadline(None).map(drop)
    }

    /// Waits up to `timeout` for the child to exit; true if it has.
    /// `join_timeout(Duration::ZERO)` only checks.
    ///
    /// Python: `Process.join(timeout)` followed by `exitcode is not None`.
    ///
    /// # Errors
    ///
    /// As [`join`](Process::join).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// use std::time::Duration;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let mut p = mp::Process::new(|_: ()| std::thread::sleep(Duration::from_secs(30)), ());
    ///     p.start()?;
    ///     assert!(!p.join_timeout(Duration::ZERO)?);
    ///     p.terminate()?;
    ///     assert!(p.join_timeout(Duration::from_secs(10))?);
    ///     assert_eq!(p.exitcode(), Some(-15));
    ///     Ok(())
    /// }
    /// ```
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<bool> {
        self.join_deadline(deadline_after(timeout))
    }

    fn join_deadline(&mut self, deadline: Option<Instant>) -> Result<bool> {
        self.running("join")?.join_deadline(deadline)
    }

    /// True from `start()` until the child has exited (and been reaped).
    ///
    /// Python: `Process.is_alive()`.
    pub fn is_alive(&self) -> bool {
        self.running
            .as_ref()
            .is_some_and(|r| r.shared.try_reap() == Exit::Running)
    }

    /// Releases the OS resources of an exited child (its pidfd); the pid, the
    /// exit code and the panic stay readable. Closing twice, or before
    /// `start()`, is fine; afterwards `start`, `join`, `terminate` and `kill`
    /// fail with [`Error::Value`] ("process object is closed").
    ///
    /// Python: `Process.close()`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] while the child is still running (join or terminate it
    /// first), as Python's `ValueError`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let mut p = mp::Process::new(|_: ()| (), ());
    ///     p.start()?;
    ///     p.join()?;
    ///     p.close()?;
    ///     assert_eq!(p.exitcode(), Some(0));
    ///     assert!(matches!(p.join(), Err(mp::Error::Value(_))));
    ///     Ok(())
    /// }
    /// ```
    pub fn close(&mut self) -> Result<()> {
        if let Some(r) = self.running.as_mut() {
            if r.shared.try_reap() == Exit::Running {
                return Err(Error::value(
                    "cannot close a process while it is still running; join() or terminate() it first",
                ));
            }
            r.drain_reports();
        }
        if self.closed.is_none() {
            let r = self.running.take();
            self.call = None;
            self.closed = Some(Closed {
                pid: r.as_ref().map(|r| r.shared.pid),
                exitcode: r.as_ref().and_then(|r| r.shared.exitcode()),
                panic: r.and_then(|r| r.panic),
            });
        }
        Ok(())
    }

    /// The exit code: `None` before start and while running; `0` after a normal
    /// return; `1` after a panic; `n` after `std::process::exit(n)`; `-SIG` when
    /// killed by signal `SIG` (`-15` after `terminate()`, `-9` after `kill()`).
    ///
    /// Python: `Process.exitcode`.
    pub fn exitcode(&self) -> Option<i32> {
        match (&self.running, &self.closed) {
            (Some(r), _) => r.shared.exitcode(),
            (None, Some(c)) => c.exitcode,
            (None, None) => None,
        }
    }

    /// The panic that ended the child, as an [`Error::Remote`] with its message
    /// and location, once the child has exited after a panic.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let mut p = mp::Process::new(|_: ()| panic!("boom"), ());
    ///     p.start()?;
    ///     p.join()?;
    ///     assert_eq!(p.exitcode(), Some(1));
    ///     assert!(p.panic_error().unwrap().to_string().contains("boom"));
    ///     Ok(())
    /// }
    /// ```
    pub fn panic_error(&self) -> Option<Error> {
        let p = match (&self.running, &self.closed) {
            (Some(r), _) => r.panic.clone()?,
            (None, Some(c)) => c.panic.clone()?,
            (None, None) => return None,
        };
        Some(p.into_error(self.name.clone(), self.pid()?))
    }

    /// Sends SIGTERM (a no-op if the child already exited).
    ///
    /// Python: `Process.terminate()`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] before `start()`.
    pub fn terminate(&mut self) -> Result<()> {
        self.signal(Signal::SIGTERM)
    }

    /// Sends SIGKILL (a no-op if the child already exited).
    ///
    /// Python: `Process.kill()`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] before `start()`.
    pub fn kill(&mut self) -> Result<()> {
        self.signal(Signal::SIGKILL)
    }

    fn signal(&mut self, sig: Signal) -> Result<()> {
        let r = self.running("signal")?;
        if r.shared.signal(sig) {
            r.signalled = true;
        }
        Ok(())
    }

    /// This process as a [`ProcessInfo`] (`None` before start).
    pub fn info(&self) -> Option<ProcessInfo> {
        self.running.as_ref().map(|r| ProcessInfo::child(&r.shared))
    }

    /// The pidfd, readable once the child has exited (`None` before start):
    /// the sentinel that `connection::wait` polls.
    pub(crate) fn sentinel_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.running.as_ref().map(|r| r.shared.pidfd.as_fd())
    }
}

impl Running {
    /// At exit: waits for the child to exit (until `deadline`), killing it if
    /// it never answered within the start timeout, as `join` would. Decodes
    /// nothing: libc has destroyed this thread's thread-locals by now, and
    /// decoding uses one.
    fn wait_at_exit(&self, deadline: Option<Instant>) {
        if let (Startup::Pending, Some(child)) = (&self.startup, &self.child) {
            let limit = child.started_at + spawn::start_timeout();
            let until = Some(deadline.map_or(limit, |d| d.min(limit)));
            // Any answer (or its end of file) means the start-up is over.
            let ready = child.conn.with_fd(|conn| {
                fd::poll(
                    &[
                        (self.shared.pidfd.as_fd(), fd::READABLE),
                        (conn, fd::READABLE),
                    ],
                    until,
                )
            });
            let silent = matches!(ready, Ok(Ok(events)) if events.iter().all(|&e| e == 0));
            if silent && Instant::now() >= limit {
                self.shared.signal(Signal::SIGKILL);
            }
        }
        self.shared.wait_exit(deadline);
    }

    /// Waits until the child has exited or `deadline` passes; true if it has.
    /// After the exit, reads its reports and releases all but the pidfd.
    fn join_deadline(&mut self, deadline: Option<Instant>) -> Result<bool> {
        let r = self;
        loop {
            if r.shared.try_reap() != Exit::Running {
                r.drain_reports();
                r.child = None;
                return match &r.startup {
                    Startup::Confirmed => Ok(true),
                    // Killed by us before it answered: no start-up failure.
                    Startup::Pending | Startup::Failed(_) if r.signalled => Ok(true),
                    Startup::TimedOut(why) => Err(Error::Spawn(why.clone())),
                    // Killed from outside during start-up: say so, not "init()?".
                    Startup::Pending | Startup::Failed(_)
                        if r.shared.exitcode().is_some_and(|c| c < 0) =>
                    {
                        let why = format!(
                            "the child (pid {}) died before it started its work: {}",
                            r.shared.pid,
                            spawn::describe_exit(r.shared.exitcode())
                        );
                        r.startup = Startup::Failed(why.clone());
                        Err(Error::Spawn(why))
                    }
                    Startup::Failed(why) => Err(Error::Spawn(why.clone())),
                    Startup::Pending => {
                        let why = format!(
                            "the child (pid {}) exited before it started its work ({}); is mp::init() \
                             the first line of main?",
                            r.shared.pid,
                            spawn::describe_exit(r.shared.exitcode())
                        );
                        r.startup = Startup::Failed(why.clone());
                        Err(Error::Spawn(why))
                    }
                };
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            r.wait_event(deadline)?;
        }
    }

    /// Waits until the child exits, answers, or `deadline` passes.
    fn wait_event(&mut self, deadline: Option<Instant>) -> Result<()> {
        let Some(child) = self
            .child
            .as_ref()
            .filter(|_| matches!(self.startup, Startup::Pending))
        else {
            fd::wait_for(self.shared.pidfd.as_fd(), fd::READABLE, deadline)?;
            return Ok(());
        };
        let limit = child.started_at + spawn::start_timeout();
        let until = Some(deadline.map_or(limit, |d| d.min(limit)));
        // Only the exit ends a join: the start-up answer is read after it
        // (`drain_reports`), or at the start timeout, so that a short child
        // costs this thread one wake-up, not one for `Started` and one for
        // the exit.
        if fd::wait_for(self.shared.pidfd.as_fd(), fd::READABLE, until)? || Instant::now() < limit {
            return Ok(());
        }
        let answered = child
            .conn
            .with_fd(|conn| fd::wait_for(conn, fd::READABLE, Some(Instant::now())))??;
        if answered {
            self.read_startup_answer();
        } else {
            // Nothing within the start timeout: kill it, the exit ends the wait.
            match child.wait_started(Some(Instant::now())) {
                Ok(()) => self.startup = Startup::Confirmed,
                Err(e) => self.startup = Startup::TimedOut(e.to_string()),
            }
            send_signal(self.shared.pid, Signal::SIGKILL);
        }
        Ok(())
    }

    fn read_startup_answer(&mut self) {
        let Some(child) = self.child.as_ref() else {
            return;
        };
        match child.wait_started(Some(Instant::now())) {
            Ok(()) => self.startup = Startup::Confirmed,
            Err(Error::Timeout) => {}
            Err(Error::Spawn(why)) => self.startup = Startup::Failed(why),
            Err(e) => self.startup = Startup::Failed(e.to_string()),
        }
    }

    /// After exit: reads what the child said (its start-up answer, a panic).
    fn drain_reports(&mut self) {
        if matches!(self.startup, Startup::Pending) {
            self.read_startup_answer();
        }
        let Some(child) = self.child.as_ref() else {
            return;
        };
        if matches!(self.startup, Startup::Confirmed) && self.panic.is_none() {
            if let Ok(frame) = child.conn.recv_frame(Some(Instant::now())) {
                if let Ok(Report::Panicked(p)) =
                    reduction::decode::<Report>(&frame.bytes, frame.fds)
                {
                    self.panic = Some(p);
                }
            }
        }
    }
}

impl Drop for Process {
    /// Neither waits nor kills, as in Python: a child still running is handed
    /// to the registry, which keeps its bootstrap socket open, reaps it once it
    /// has exited, and waits for it (daemon: terminates it) at this process's
    /// exit.
    fn drop(&mut self) {
        let Some(r) = self.running.take() else {
            return;
        };
        if r.shared.try_reap() == Exit::Running {
            registry().orphans.push(r);
        }
    }
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match &self.running {
            None if self.closed.is_some() => "closed",
            None => "initial",
            Some(r) if r.shared.try_reap() == Exit::Running => "started",
            Some(_) => "stopped",
        };
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.pid())
            .field("daemon", &self.daemon)
            .field("status", &status)
            .field("exitcode", &self.exitcode())
            .finish()
    }
}

fn register(shared: &Arc<Shared>) {
    register_exit_handler();
    registry().children.push(Arc::downgrade(shared));
}

/// Which process a [`ProcessInfo`] describes.
#[derive(Debug, Clone)]
enum InfoKind {
    /// The calling process.
    Current,
    /// The calling process's parent.
    Parent,
    /// A child of the calling process.
    Child(Weak<Shared>),
}

/// A snapshot of a process's name and pid, with a live `is_alive()`.
///
/// Python: what `current_process()`, `parent_process()` and `active_children()`
/// return.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() {
///     mp::init();
///     let me = mp::current_process();
///     assert_eq!(me.name(), "MainProcess");
///     assert_eq!(me.pid(), std::process::id());
///     assert!(me.is_alive());
///     assert!(mp::parent_process().is_none());
/// }
/// ```
#[derive(Debug, Clone)]
pub struct ProcessInfo {
    /// The name.
    name: String,
    /// The pid.
    pid: u32,
    /// Whose info this is.
    kind: InfoKind,
}

impl ProcessInfo {
    fn child(shared: &Arc<Shared>) -> ProcessInfo {
        ProcessInfo {
            name: shared.name.clone(),
            pid: shared.pid,
            kind: InfoKind::Child(Arc::downgrade(shared)),
        }
    }

    /// The process's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The authentication key (Python's `current_process().authkey`): 32
    /// random bytes made at the main process's first use, inherited by every
    /// child from its parent at start. [`Manager::new`](crate::Manager::new)
    /// uses it as the server's key, as Python's `BaseManager(authkey=None)`
    /// does. Known only for the current process.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for another process than the current one (Python's
    /// `parent_process()` has no authkey either); [`Error::Io`] if the kernel
    /// refused random bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let key = mp::current_process().authkey()?;
    ///     assert_eq!(key.len(), 32);
    ///     let mut p = mp::Process::new(
    ///         |key: Vec<u8>| assert_eq!(mp::current_process().authkey().unwrap(), key),
    ///         key,
    ///     );
    ///     p.start()?;
    ///     p.join()?;
    ///     assert_eq!(p.exitcode(), Some(0));
    ///     Ok(())
    /// }
    /// ```
    pub fn authkey(&self) -> Result<Vec<u8>> {
        match self.kind {
            InfoKind::Current => current_authkey(),
            _ => Err(Error::value("only the current process's authkey is known")),
        }
    }

    /// Replaces the current process's authkey (Python's
    /// `current_process().authkey = key`); children started afterwards inherit
    /// the new key.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for another process than the current one.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     mp::current_process().set_authkey(b"secret")?;
    ///     assert_eq!(mp::current_process().authkey()?, b"secret");
    ///     Ok(())
    /// }
    /// ```
    pub fn set_authkey(&self, key: impl AsRef<[u8]>) -> Result<()> {
        match self.kind {
            InfoKind::Current => {
                inherit_authkey(key.as_ref().to_vec());
                Ok(())
            }
            _ => Err(Error::value(
                "only the current process's authkey can be set",
            )),
        }
    }

    /// Whether the process is still running. For the parent (seen from a child)
    /// this turns false as soon as the parent has died, however it died.
    pub fn is_alive(&self) -> bool {
        match &self.kind {
            InfoKind::Current => true,
            InfoKind::Parent => {
                spawn::child_context().is_some_and(|c| !c.parent_conn.peer_closed())
            }
            InfoKind::Child(w) => w.upgrade().is_some_and(|s| s.try_reap() == Exit::Running),
        }
    }

    /// Waits up to `timeout` for the process to end; true if it has. For the
    /// current process this just sleeps out the timeout and returns false.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        let deadline = deadline_after(timeout);
        match &self.kind {
            InfoKind::Current => {
                std::thread::sleep(timeout);
                false
            }
            InfoKind::Parent => spawn::child_context().is_some_and(|c| {
                c.parent_conn
                    .with_fd(|fd| fd::wait_for(fd, libc::POLLRDHUP, deadline).unwrap_or(true))
                    .unwrap_or(true)
                    && c.parent_conn.peer_closed()
            }),
            InfoKind::Child(w) => match w.upgrade() {
                None => true,
                Some(s) => {
                    let _ = fd::wait_for(s.pidfd.as_fd(), fd::READABLE, deadline);
                    s.try_reap() != Exit::Running
                }
            },
        }
    }
}

/// This process: `MainProcess` in the parent, the name its parent gave it in a
/// child.
///
/// Python: `multiprocessing.current_process()`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let mut p = mp::Process::new(|_: ()| assert_eq!(mp::current_process().name(), "worker"), ());
///     p.set_name("worker");
///     p.start()?;
///     p.join()?;
///     assert_eq!(p.exitcode(), Some(0));
///     Ok(())
/// }
/// ```
pub fn current_process() -> ProcessInfo {
    ProcessInfo {
        name: spawn::current_name().to_string(),
        pid: std::process::id(),
        kind: InfoKind::Current,
    }
}

/// The process that started this one, or `None` in the main process.
///
/// Python: `multiprocessing.parent_process()`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     assert!(mp::parent_process().is_none());
///     let mut p = mp::Process::new(|me: u32| {
///         let parent = mp::parent_process().unwrap();
///         assert_eq!(parent.pid(), me);
///         assert_eq!(parent.name(), "MainProcess");
///         assert!(parent.is_alive());
///     }, std::process::id());
///     p.start()?;
///     p.join()?;
///     assert_eq!(p.exitcode(), Some(0));
///     Ok(())
/// }
/// ```
pub fn parent_process() -> Option<ProcessInfo> {
    spawn::child_context().map(|c| ProcessInfo {
        name: c.parent_name.clone(),
        pid: c.parent_pid,
        kind: InfoKind::Parent,
    })
}

/// The children of this process that are still running (reaping those that
/// have exited).
///
/// Python: `multiprocessing.active_children()`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let mut p = mp::Process::new(|_: ()| std::thread::sleep(std::time::Duration::from_secs(30)), ());
///     p.start()?;
///     assert!(mp::active_children().iter().any(|c| Some(c.pid()) == p.pid()));
///     p.kill()?;
///     p.join()?;
///     assert!(mp::active_children().iter().all(|c| Some(c.pid()) != p.pid()));
///     Ok(())
/// }
/// ```
pub fn active_children() -> Vec<ProcessInfo> {
    let mut reg = registry();
    reg.cleanup();
    reg.children
        .iter()
        .filter_map(Weak::upgrade)
        .map(|s| ProcessInfo::child(&s))
        .collect()
}

/// The number of CPUs this process may run on (at least 1): its affinity
/// mask, capped by a cgroup CPU quota (std's `available_parallelism`).
///
/// Python: `multiprocessing.cpu_count()`, which is `os.cpu_count()`: every
/// online CPU of the machine, whatever the affinity or quota, so the numbers
/// differ on a pinned or CPU-limited process. Python 3.13's
/// `os.process_cpu_count()` (its `Pool()` default) counts the affinity mask
/// but not the cgroup quota.
///
/// # Examples
///
/// ```
/// assert!(multiprocess::cpu_count() >= 1);
/// ```
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A started process is ready for `connection::wait` once it has exited (its
/// pidfd polls readable): Python's `Process.sentinel`.
impl Sealed for Process {
    fn source(&self) -> Result<Option<BorrowedFdHolder<'_>>> {
        let fd = self.sentinel_fd().ok_or_else(|| {
            Error::value("process not started: a sentinel exists only after start()")
        })?;
        Ok(Some(BorrowedFdHolder::Borrowed(fd)))
    }
}
impl Waitable for Process {}
