//! Python's `multiprocessing.process`: the `Process` object and the module
//! functions about processes.
//!
//! | Python | Rust |
//! |---|---|
//! | `Process(target=f, args=(a,))` | [`Process::new`]`(f, a)` |
//! | `p.start()`, `p.join(timeout)` | [`Process::start`], [`Process::join`], [`Process::join_timeout`] |
//! | `p.is_alive()`, `p.exitcode`, `p.pid`, `p.name`, `p.daemon` | same names, as methods |
//! | `p.terminate()`, `p.kill()` | [`Process::terminate`], [`Process::kill`] |
//! | `current_process()`, `parent_process()`, `active_children()`, `cpu_count()` | same names |

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill as send_signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::connection::deadline_after;
use crate::error::{Error, Result};
use crate::platform::fd;
use crate::reduction::{self, PanicInfo, PreparedCall, assert_zero_sized};
use crate::spawn::{self, Child, Report, StartSpec};

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
    /// Readable once the child has exited.
    pidfd: OwnedFd,
    /// Filled when reaped.
    exit: Mutex<Exit>,
}

impl Shared {
    /// Reaps the child if it has exited, without blocking.
    fn try_reap(&self) -> Exit {
        let mut exit = self.exit.lock().unwrap_or_else(|e| e.into_inner());
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
}

/// The children started by this process that may still run.
static REGISTRY: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

/// Reaps `pid`; `None` if it is still running (when not blocking).
fn reap(pid: u32, block: bool) -> Option<i32> {
    let flags = if block {
        None
    } else {
        Some(WaitPidFlag::WNOHANG)
    };
    loop {
        match waitpid(Pid::from_raw(pid as i32), flags) {
            Ok(WaitStatus::Exited(_, code)) => return Some(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Some(-(sig as i32)),
            Ok(WaitStatus::StillAlive) => return None,
            Ok(_) => {
                if !block {
                    return None;
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            // Reaped behind our back (a `waitpid(-1)` elsewhere): gone, status lost.
            Err(_) => return Some(255),
        }
    }
}

/// Waits for `pid` to exit and reaps it; its exit code in Python's convention.
pub(crate) fn reap_blocking(pid: u32) -> Option<i32> {
    reap(pid, true)
}

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
    /// The bootstrap socket (start-up answer, panic report, parent liveness).
    child: Child,
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
    /// Exit when the parent dies; killed when dropped.
    daemon: bool,
    /// The target and its encoded argument, until `start()` sends them.
    call: Option<PreparedCall>,
    /// Set by `start()`.
    running: Option<Running>,
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
    {
        assert_zero_sized::<F>();
        let (identity, name) = spawn::next_child_identity("Process");
        Process {
            name,
            identity,
            daemon: spawn::child_context().is_some_and(|c| c.daemon),
            call: Some(PreparedCall::discard(target, arg)),
            running: None,
        }
    }

    /// Renames the process (before or after `start()`; the child sees the name it
    /// had at start).
    pub fn set_name(&mut self, name: impl Into<String>) {
        self.name = name.into();
    }

    /// Makes the process a daemon (or not). A daemon is killed when its
    /// `Process` is dropped and exits when its parent dies, even by SIGKILL.
    /// The default is the creating process's own flag.
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
        self.running.as_ref().map(|r| r.shared.pid)
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
        let Some(call) = self.call.take() else {
            return Err(Error::value("cannot start a process twice"));
        };
        let child = spawn::start(StartSpec {
            name: self.name.clone(),
            identity: self.identity.clone(),
            daemon: self.daemon,
            quiet_panics: false,
            call,
        })?;
        let shared = Arc::new(Shared {
            pid: child.pid,
            name: self.name.clone(),
            pidfd: child.pidfd.try_clone()?,
            exit: Mutex::new(Exit::Running),
        });
        register(&shared);
        self.running = Some(Running {
            shared,
            child,
            startup: Startup::Pending,
            panic: None,
            signalled: false,
        });
        Ok(())
    }

    fn running(&mut self, what: &str) -> Result<&mut Running> {
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
        let r = self.running("join")?;
        loop {
            if r.shared.try_reap() != Exit::Running {
                r.drain_reports();
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

    /// True from `start()` until the child has exited (and been reaped).
    ///
    /// Python: `Process.is_alive()`.
    pub fn is_alive(&self) -> bool {
        self.running
            .as_ref()
            .is_some_and(|r| r.shared.try_reap() == Exit::Running)
    }

    /// The exit code: `None` before start and while running; `0` after a normal
    /// return; `1` after a panic; `n` after `std::process::exit(n)`; `-SIG` when
    /// killed by signal `SIG` (`-15` after `terminate()`, `-9` after `kill()`).
    ///
    /// Python: `Process.exitcode`.
    pub fn exitcode(&self) -> Option<i32> {
        self.running.as_ref().and_then(|r| r.shared.exitcode())
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
        let r = self.running.as_ref()?;
        let p = r.panic.clone()?;
        Some(p.into_error(self.name.clone(), r.shared.pid))
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
        // Under the exit lock, so the pid cannot be reaped (and reused) meanwhile.
        let exit = r.shared.exit.lock().unwrap_or_else(|e| e.into_inner());
        if *exit == Exit::Running {
            let _ = send_signal(Pid::from_raw(r.shared.pid as i32), sig);
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
    /// Waits until the child exits, answers, or `deadline` passes.
    fn wait_event(&mut self, deadline: Option<Instant>) -> Result<()> {
        if !matches!(self.startup, Startup::Pending) {
            fd::wait_for(self.shared.pidfd.as_fd(), fd::READABLE, deadline)?;
            return Ok(());
        }
        let limit = self.child.started_at + spawn::start_timeout();
        let until = Some(deadline.map_or(limit, |d| d.min(limit)));
        let events = self.child.conn.with_fd(|conn| {
            fd::poll(
                &[
                    (self.shared.pidfd.as_fd(), fd::READABLE),
                    (conn, fd::READABLE),
                ],
                until,
            )
        })??;
        if events[1] != 0 {
            self.read_startup_answer();
        } else if events[0] == 0 && Instant::now() >= limit {
            // Nothing within the start timeout: kill it, the exit ends the wait.
            match self.child.wait_started(Some(Instant::now())) {
                Ok(()) => self.startup = Startup::Confirmed,
                Err(e) => self.startup = Startup::TimedOut(e.to_string()),
            }
            let _ = send_signal(Pid::from_raw(self.shared.pid as i32), Signal::SIGKILL);
        }
        Ok(())
    }

    fn read_startup_answer(&mut self) {
        match self.child.wait_started(Some(Instant::now())) {
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
        if matches!(self.startup, Startup::Confirmed) && self.panic.is_none() {
            if let Ok(frame) = self.child.conn.recv_frame(Some(Instant::now())) {
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
    /// A started daemon is killed and reaped; a started non-daemon is joined
    /// (Python joins non-daemon children at exit).
    fn drop(&mut self) {
        let Some(r) = self.running.as_ref() else {
            return;
        };
        if r.shared.try_reap() != Exit::Running {
            return;
        }
        if self.daemon {
            let _ = self.kill();
        }
        let _ = self.join();
    }
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match &self.running {
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
    let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    reg.retain(|w| w.strong_count() > 0);
    reg.push(Arc::downgrade(shared));
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
    let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let mut alive = Vec::new();
    reg.retain(|w| match w.upgrade() {
        Some(s) if s.try_reap() == Exit::Running => {
            alive.push(ProcessInfo::child(&s));
            true
        }
        _ => false,
    });
    alive
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
