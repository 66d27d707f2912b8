//! Starting children by running this binary again: CPython's `spawn.py` and
//! `popen_spawn_posix.py`.
//!
//! # The bootstrap protocol
//!
//! 1. The parent makes a Unix socket pair and runs `/proc/self/exe` (the very
//!    image it runs, even if the file on disk was replaced) with its own argv, stdin
//!    on `/dev/null`, and `MULTIPROCESS_CHILD_FD=<n>` naming the child's end, the
//!    only fd it inherits.
//! 2. Without waiting, the parent sends three frames: the build check
//!    (`MPBOOT1\0` + the build fingerprint), the typed [`Bootstrap`] (name,
//!    identity, daemon flag, parent, the function reference), and the encoded
//!    argument with its handles' fds.
//! 3. The child's [`init`] sees the variable, takes the fd, and compares the
//!    fingerprint. On a mismatch it answers `MPWRONGBUILD` and exits; otherwise it
//!    answers [`Report::Started`], runs the target, and exits with the status its
//!    result reports as `main`'s would (1 after a panic, whose
//!    [`Report::Panicked`] it sends first). The parent's authkey comes with the
//!    bootstrap.
//! 4. The parent learns of a child that never started (died early, a binary
//!    without `init()`, another build) from the missing `Started`: by the child's
//!    exit, or after [`set_start_timeout`], when it kills it. Nothing waits forever.
//!
//! The socket stays open for the child's life. Its hang-up tells the child that
//! the parent died (`parent_process().is_alive()`); a spawned daemon child then
//! exits (one of the forkserver has the kernel's parent-death signal instead,
//! see `guard_daemon`).

use crate::util::Unpoison;
use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::connection::Connection;
use crate::context::method::StartMethod;
use crate::error::{Error, Result};
use crate::platform::process::{Signal, kill, kill_self, reap_blocking};
use crate::platform::{fd, spawn as os_spawn};
use crate::reduction::{
    self, CallOutcome, Encoded, ExitStatus, FnRef, PanicInfo, PreparedCall, fingerprint,
};

/// The variable that tells a child which inherited fd leads to its parent.
pub(crate) const CHILD_FD_VAR: &str = "MULTIPROCESS_CHILD_FD";

/// How long a child may take to start by default (exec, reach `init()`,
/// answer) before the parent gives up on it and kills it. Generous: a loaded
/// 2-core machine can take seconds to start a big binary.
pub(crate) const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);

/// The start timeout in force, in milliseconds.
static START_TIMEOUT_MS: AtomicU64 = AtomicU64::new(DEFAULT_START_TIMEOUT.as_millis() as u64);

/// The start timeout in force (see [`set_start_timeout`]).
pub(crate) fn start_timeout() -> Duration {
    Duration::from_millis(START_TIMEOUT_MS.load(Ordering::Relaxed))
}

/// Sets how long a child may take to start (to exec, reach `mp::init()` and
/// answer) before the parent kills it and reports [`Error::Spawn`]. The default
/// is 30 s, generous for a loaded machine. It bounds the wait for a child that
/// hangs before `init()` (a binary that forgot it), so nothing waits forever.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// use std::time::Duration;
/// mp::init();
/// mp::set_start_timeout(Duration::from_secs(60));
/// ```
pub fn set_start_timeout(timeout: Duration) {
    START_TIMEOUT_MS.store(
        timeout.as_millis().min(u64::MAX as u128) as u64,
        Ordering::Relaxed,
    );
}

/// The largest argument sent to a forkserver child before it exists (the
/// three bootstrap frames must fit in the socket's buffer, at least 200 KiB
/// on Linux, since nothing reads them yet).
const PRESEND_MAX: usize = 64 * 1024;

/// The first frame: magic and build fingerprint.
const BOOT_MAGIC: &[u8; 8] = b"MPBOOT1\0";
/// The child's answer when the fingerprints differ.
const WRONG_BUILD: &[u8] = b"MPWRONGBUILD";
/// Exit code of a child that refused to run another build's work.
pub(crate) const EXIT_WRONG_BUILD: i32 = 86;
/// Exit code of a child whose bootstrap failed (parent gone, corrupt frames).
pub(crate) const EXIT_BOOTSTRAP_FAILED: i32 = 87;

/// Set by [`init`]: starting children is allowed.
static INITIALIZED: AtomicBool = AtomicBool::new(false);
/// The next child number of this process (`Process-N`).
static NEXT_CHILD: AtomicU32 = AtomicU32::new(1);
/// Who this process is, when it is a child.
static SELF_INFO: OnceLock<ChildContext> = OnceLock::new();

/// What a child knows of itself and its parent.
pub(crate) struct ChildContext {
    /// Its name (`Process-1:2`).
    pub(crate) name: String,
    /// Its identity (`[1, 2]`).
    pub(crate) identity: Vec<u32>,
    /// Whether it is a daemon.
    pub(crate) daemon: bool,
    /// The parent's pid.
    pub(crate) parent_pid: u32,
    /// The parent's name.
    pub(crate) parent_name: String,
    /// The socket to the parent.
    pub(crate) parent_conn: Connection,
}

/// The typed part of the bootstrap.
#[derive(Debug, Serialize, Deserialize)]
struct Bootstrap {
    /// The child's name.
    name: String,
    /// The child's identity.
    identity: Vec<u32>,
    /// Daemon: exit when the parent dies.
    daemon: bool,
    /// Do not print panics to stderr (pool workers report them instead).
    quiet_panics: bool,
    /// The parent's pid.
    parent_pid: u32,
    /// The parent's name.
    parent_name: String,
    /// What to run.
    target: FnRef,
    /// The child's `current_process().authkey()`: the parent's (Python's
    /// spawn hands the child its parent's key the same way).
    authkey: Vec<u8>,
}

/// What a child tells its parent over the bootstrap socket.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Report {
    /// The build matched and the target is about to run.
    Started,
    /// The target panicked (sent just before exiting with code 1).
    Panicked(PanicInfo),
}

/// This process's authkey, made on first use: Python's
/// `current_process().authkey`. It lives here, with the bootstrap that hands
/// it to a child.
static AUTHKEY: Mutex<Option<Vec<u8>>> = Mutex::new(None);

/// This process's authkey: 32 random bytes in the main process (CPython's
/// `os.urandom(32)`), the parent's in a child.
pub(crate) fn current_authkey() -> Result<Vec<u8>> {
    let mut key = AUTHKEY.lock().unpoison();
    if let Some(k) = key.as_ref() {
        return Ok(k.clone());
    }
    let mut fresh = vec![0u8; 32];
    os_spawn::random_bytes(&mut fresh)?;
    *key = Some(fresh.clone());
    Ok(fresh)
}

/// Sets this process's authkey (a child: its parent's, from the bootstrap).
pub(crate) fn inherit_authkey(key: Vec<u8>) {
    *AUTHKEY.lock().unpoison() = Some(key);
}

/// What [`init`](crate::init) does for the local machinery: marks the process
/// initialized, runs the forkserver or a child's work (never returning
/// then). True when this was the first call, in a process that is neither a
/// child nor the forkserver: the caller may then look further (a remote pool
/// worker, `cluster/entry.rs`). `warm` is run once in the forkserver, so that
/// what it computes is inherited by every child (it comes from above, so
/// that this module does not depend on the pool).
pub(crate) fn init_process(warm: fn()) -> bool {
    if INITIALIZED.swap(true, Ordering::AcqRel) {
        return false;
    }
    // The shared-memory tracker runs here (and never returns), or this child
    // adopts its parent's tracker pipe. First, so that the forkserver (and
    // so every child it forks) knows `init()` ran and may start a tracker.
    crate::shared_memory::tracker::on_init();
    if let Some(var) = std::env::var_os(crate::forkserver::SERVER_VAR) {
        crate::platform::env::remove_var(crate::forkserver::SERVER_VAR);
        crate::forkserver::run_server(
            var,
            crate::forkserver::ChildEntry {
                run: run_child_on,
                failed: bootstrap_failed,
                warm,
            },
        )
    }
    let Some(var) = std::env::var_os(CHILD_FD_VAR) else {
        return true;
    };
    // Our own children get their own value; nobody else should see this one.
    crate::platform::env::remove_var(CHILD_FD_VAR);
    run_child(var)
}

/// Refuses to start children from a process that never called [`init`].
pub(crate) fn check_initialized() -> Result<()> {
    if INITIALIZED.load(Ordering::Acquire) {
        return Ok(());
    }
    if std::env::var_os(CHILD_FD_VAR).is_some() {
        // A child whose main() forgot init(): stop before it forks again.
        eprintln!(
            "multiprocess: this child process reached code that starts processes without \
             calling mp::init(); put mp::init() first in main (or use multiprocess::test_support!() \
             in test binaries)"
        );
        std::process::exit(EXIT_BOOTSTRAP_FAILED);
    }
    Err(Error::Spawn(
        "mp::init() was not called; make it the first line of main (in test binaries, \
         put multiprocess::test_support!() at the top of the file)"
            .into(),
    ))
}

/// This process as a child, if it is one.
pub(crate) fn child_context() -> Option<&'static ChildContext> {
    SELF_INFO.get()
}

/// This process's name: `MainProcess` or the one its parent gave it.
pub(crate) fn current_name() -> &'static str {
    child_context().map_or("MainProcess", |c| c.name.as_str())
}

/// The identity and default name of the next child of this process.
pub(crate) fn next_child_identity(prefix: &str) -> (Vec<u32>, String) {
    let n = NEXT_CHILD.fetch_add(1, Ordering::Relaxed);
    let mut identity = child_context()
        .map(|c| c.identity.clone())
        .unwrap_or_default();
    identity.push(n);
    let digits: Vec<String> = identity.iter().map(u32::to_string).collect();
    (identity, format!("{prefix}-{}", digits.join(":")))
}

/// What to start.
pub(crate) struct StartSpec {
    /// The child's name.
    pub(crate) name: String,
    /// The child's identity.
    pub(crate) identity: Vec<u32>,
    /// Exit when the parent dies.
    pub(crate) daemon: bool,
    /// Report panics instead of printing them.
    pub(crate) quiet_panics: bool,
    /// How to start it.
    pub(crate) method: StartMethod,
    /// The function and its encoded argument.
    pub(crate) call: PreparedCall,
}

/// A started child, seen from the parent.
#[derive(Debug)]
pub(crate) struct Child {
    /// Its pid.
    pub(crate) pid: u32,
    /// Readable once it has exited.
    pub(crate) pidfd: OwnedFd,
    /// The socket to it.
    pub(crate) conn: Connection,
    /// When it was started (for [`set_start_timeout`]).
    pub(crate) started_at: Instant,
}

/// The executable children run: `/proc/self/exe` unless [`set_executable`] chose
/// another.
static EXECUTABLE: OnceLock<std::sync::Mutex<Option<std::path::PathBuf>>> = OnceLock::new();

/// Runs children from `path` instead of this process's own image.
///
/// Only useful for a binary built from the same source (a copy of this very
/// file); any other build is refused at start-up with [`Error::Spawn`].
///
/// Python: `multiprocessing.set_executable(path)`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// mp::init();
/// mp::set_executable(std::env::current_exe().unwrap());
/// mp::reset_executable();
/// ```
pub fn set_executable(path: impl Into<std::path::PathBuf>) {
    let cell = EXECUTABLE.get_or_init(Default::default);
    *cell.lock().unpoison() = Some(path.into());
}

/// Undoes [`set_executable`]: children run `/proc/self/exe` again.
pub fn reset_executable() {
    if let Some(cell) = EXECUTABLE.get() {
        *cell.lock().unpoison() = None;
    }
}

/// The executable children (and the forkserver) run.
pub(crate) fn executable() -> std::path::PathBuf {
    EXECUTABLE
        .get()
        .and_then(|c| c.lock().unpoison().clone())
        .unwrap_or_else(|| "/proc/self/exe".into())
}

/// Starts a child running `spec.call`. Returns once the child is forked and its
/// bootstrap is on the wire; use [`Child::wait_started`] to wait for its answer.
///
/// # Errors
///
/// [`Error::Spawn`] if [`init`] was not called, [`Error::Encode`] if the
/// argument did not serialize (nothing is started), [`Error::Io`] if the fork,
/// exec or the bootstrap write failed.
pub(crate) fn start(spec: StartSpec) -> Result<Child> {
    check_initialized()?;
    let method = spec.method;
    let mut p = prepare(spec)?;
    let theirs = p.theirs.take().expect("a prepared child has its socket");
    let pid = match method {
        StartMethod::Spawn => spawn_one(theirs)?,
        // The server gets `theirs` and closes its copy once the child has it.
        StartMethod::Forkserver => crate::forkserver::start_child(theirs, launch())?,
    };
    finish(p, pid)
}

/// Starts several children at once: under the forkserver in one request
/// for a whole pool (several past `forkserver::MAX_BATCH` children), under
/// spawn one after the other.
/// Either all are started or none is left running: on an error the children
/// started so far are killed and reaped.
///
/// # Errors
///
/// As [`start`].
pub(crate) fn start_many(mut specs: Vec<StartSpec>) -> Result<Vec<Child>> {
    let mut children = Vec::with_capacity(specs.len());
    while !specs.is_empty() {
        let rest = specs.split_off(specs.len().min(crate::forkserver::MAX_BATCH));
        match start_batch(std::mem::replace(&mut specs, rest)) {
            Ok(c) => children.extend(c),
            Err(e) => {
                abandon(children.iter().map(|c: &Child| c.pid));
                return Err(e);
            }
        }
    }
    Ok(children)
}

/// [`start_many`] for at most `forkserver::MAX_BATCH` children.
fn start_batch(specs: Vec<StartSpec>) -> Result<Vec<Child>> {
    check_initialized()?;
    let batched = specs.len() > 1 && specs.iter().all(|s| s.method == StartMethod::Forkserver);
    if !batched {
        let mut children = Vec::with_capacity(specs.len());
        for spec in specs {
            match start(spec) {
                Ok(c) => children.push(c),
                Err(e) => {
                    abandon(children.iter().map(|c| c.pid));
                    return Err(e);
                }
            }
        }
        return Ok(children);
    }
    let mut prepared = specs.into_iter().map(prepare).collect::<Result<Vec<_>>>()?;
    let channels = prepared
        .iter_mut()
        .map(|p| p.theirs.take().expect("a prepared child has its socket"))
        .collect();
    let pids = crate::forkserver::start_children(channels, launch())?;
    let mut children = Vec::with_capacity(pids.len());
    for (i, (p, &pid)) in prepared.into_iter().zip(&pids).enumerate() {
        match finish(p, pid) {
            Ok(c) => children.push(c),
            Err(e) => {
                // `finish` disposed of child `i` itself.
                abandon(pids[..i].iter().chain(&pids[i + 1..]).copied());
                return Err(e);
            }
        }
    }
    Ok(children)
}

/// Kills and reaps children that will not be handed out.
pub(crate) fn abandon(pids: impl Iterator<Item = u32>) {
    for pid in pids {
        kill(pid, Signal::SIGKILL);
        let _ = reap_blocking(pid);
    }
}

/// A child about to be started: its socket, and its bootstrap unless that
/// is already on the wire.
struct Prepared {
    /// The parent's end of the bootstrap socket.
    conn: Connection,
    /// The child's end, until handed to the spawn or the server.
    theirs: Option<OwnedFd>,
    /// The bootstrap and argument, when not sent ahead.
    later: Option<(Bootstrap, Encoded)>,
}

/// Makes a child's socket and bootstrap; sends the bootstrap ahead under the
/// forkserver (see [`PRESEND_MAX`]).
fn prepare(spec: StartSpec) -> Result<Prepared> {
    let PreparedCall { target, payload } = spec.call;
    let payload = payload?;
    let (ours, theirs) = fd::socketpair_stream()?;
    crate::connection::widen_send_buffer(ours.as_fd());
    crate::connection::widen_send_buffer(theirs.as_fd());
    let conn = Connection::from_fd(ours, true, true);
    let boot = Bootstrap {
        name: spec.name,
        identity: spec.identity,
        daemon: spec.daemon,
        quiet_panics: spec.quiet_panics,
        parent_pid: std::process::id(),
        parent_name: current_name().to_string(),
        target,
        authkey: current_authkey()?,
    };
    // A forkserver child can find its work waiting when it first runs, so
    // that it never waits for this process to come back from the server's
    // answer; a spawned child takes far longer to reach `init()` than the
    // writes take. Only when it fits in the socket's buffer, which nobody
    // reads until the child runs.
    let presend = spec.method == StartMethod::Forkserver && payload.bytes.len() <= PRESEND_MAX;
    let later = if presend {
        send_bootstrap(&conn, &boot, &payload)?;
        None
    } else {
        Some((boot, payload))
    };
    Ok(Prepared {
        conn,
        theirs: Some(theirs),
        later,
    })
}

/// Runs the executable as a child whose bootstrap socket is `theirs`.
fn spawn_one(theirs: OwnedFd) -> Result<u32> {
    let (arg0, args) = child_argv();
    // The shared-memory tracker's pipe, when this process has one: the child
    // is part of the same program (see `shared_memory::tracker`).
    let tracker = crate::shared_memory::tracker::inheritable();
    let pid = os_spawn::spawn_child(os_spawn::SpawnSpec {
        exe: &executable(),
        arg0,
        args,
        fd_var: CHILD_FD_VAR,
        channel: theirs.as_fd(),
        extra: tracker
            .as_ref()
            .map(|fd| (fd.as_fd(), crate::shared_memory::tracker::FD_VAR)),
    })?;
    Ok(pid)
}

/// How the forkserver is run and answers.
fn launch() -> crate::forkserver::Launch<'static> {
    crate::forkserver::Launch {
        exe: executable(),
        argv: child_argv(),
        timeout: start_timeout(),
        child_fd_var: CHILD_FD_VAR,
    }
}

/// The child `pid` exists: opens its pidfd and sends its bootstrap if it was
/// not sent ahead. On an error the child is killed and reaped.
fn finish(p: Prepared, pid: u32) -> Result<Child> {
    let pidfd = match fd::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) => {
            abandon(std::iter::once(pid));
            return Err(e.into());
        }
    };
    let child = Child {
        pid,
        pidfd,
        conn: p.conn,
        started_at: Instant::now(),
    };
    let Some((boot, payload)) = p.later else {
        return Ok(child);
    };
    if let Err(e) = send_bootstrap(&child.conn, &boot, &payload) {
        // A child that died at once: its exit status says more than EPIPE.
        kill(pid, Signal::SIGKILL);
        let status = reap_blocking(pid);
        // A child that exited on its own before taking its work is most
        // likely a `main` without `init()` (as when it exits before answering).
        let hint = match status {
            Some(c) if c >= 0 && c != EXIT_WRONG_BUILD => "; is mp::init() the first line of main?",
            _ => "",
        };
        return Err(Error::Spawn(format!(
            "could not send the child its work ({e}); {}{hint}",
            describe_exit(status)
        )));
    }
    Ok(child)
}

/// The argv of a child: this process's own, so that the code before `init()`
/// sees the same command line.
pub(crate) fn child_argv() -> (OsString, Vec<OsString>) {
    let mut args = std::env::args_os();
    let arg0 = args
        .next()
        .unwrap_or_else(|| OsString::from("multiprocess-child"));
    (arg0, args.collect())
}

fn send_bootstrap(conn: &Connection, boot: &Bootstrap, payload: &Encoded) -> Result<()> {
    let mut first = BOOT_MAGIC.to_vec();
    first.extend_from_slice(&fingerprint().to_le_bytes());
    conn.send_frame(&first, &[])?;
    conn.send(boot)?;
    conn.send_frame(&payload.bytes, &payload.fds)
}

/// "exited with code 3" / "was killed by signal SIGKILL (9)".
pub(crate) fn describe_exit(code: Option<i32>) -> String {
    match code {
        Some(c) if c < 0 => format!("it was killed by signal {}", crate::error::signal_name(-c)),
        Some(EXIT_WRONG_BUILD) => "it runs another build of the program".into(),
        Some(c) => format!("it exited with code {c}"),
        None => "its exit status is unknown".into(),
    }
}

impl Child {
    /// Waits for the child's `Started` answer until `deadline` (at most
    /// [`set_start_timeout`] after the start).
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] when the child runs another build, exited before it
    /// answered, or did not answer in time (it is then killed; the caller reaps).
    pub(crate) fn wait_started(&self, deadline: Option<Instant>) -> Result<()> {
        let limit = self.started_at + start_timeout();
        let deadline = Some(deadline.map_or(limit, |d| d.min(limit)));
        match self.conn.recv_frame(deadline) {
            Ok(frame) if frame.bytes == WRONG_BUILD => Err(Error::Spawn(
                "the child runs another build of this program than the parent (was the executable \
                 replaced, or set_executable() pointed at another binary?)"
                    .into(),
            )),
            Ok(frame) => match reduction::decode::<Report>(&frame.bytes, frame.fds)? {
                Report::Started => Ok(()),
                Report::Panicked(p) => Err(Error::Spawn(format!(
                    "the child panicked while starting: {}",
                    p.message
                ))),
            },
            Err(Error::Timeout) if Instant::now() >= limit => {
                kill(self.pid, Signal::SIGKILL);
                Err(Error::Spawn(format!(
                    "the child (pid {}) did not start within {:?}; is mp::init() the first line of main?",
                    self.pid,
                    start_timeout()
                )))
            }
            Err(Error::Timeout) => Err(Error::Timeout),
            Err(Error::Eof) | Err(Error::Decode(_)) | Err(Error::Io(_)) => {
                Err(Error::Spawn(format!(
                    "the child (pid {}) exited before it started its work; is mp::init() the first \
                 line of main?",
                    self.pid
                )))
            }
            Err(e) => Err(e),
        }
    }
}

// ---------------------------------------------------------------------------
// The child side

/// Runs this process as a child and exits.
fn run_child(var: OsString) -> ! {
    match var
        .to_str()
        .and_then(|s| s.parse().ok())
        .map(fd::adopt_inherited)
    {
        Some(Ok(fd)) => run_child_on(fd),
        _ => bootstrap_failed(&format!(
            "{CHILD_FD_VAR}={var:?} does not name an inherited fd"
        )),
    }
}

/// Runs this process as a child whose bootstrap socket is `channel` (spawned,
/// or forked by the forkserver) and exits.
pub(crate) fn run_child_on(channel: OwnedFd) -> ! {
    fd::ignore_sigpipe();
    let conn = Connection::from_fd(channel, true, true);
    let deadline = Some(Instant::now() + DEFAULT_START_TIMEOUT);
    let first = match conn.recv_frame(deadline) {
        Ok(f) => f.bytes,
        Err(e) => bootstrap_failed(&format!("no bootstrap from the parent: {e}")),
    };
    let mut expected = BOOT_MAGIC.to_vec();
    expected.extend_from_slice(&fingerprint().to_le_bytes());
    if first != expected {
        let _ = conn.send_frame(WRONG_BUILD, &[]);
        eprintln!("multiprocess: refusing to run work sent by another build of this program");
        std::process::exit(EXIT_WRONG_BUILD);
    }
    let boot: Bootstrap = conn
        .recv_frame(deadline)
        .and_then(|f| reduction::decode(&f.bytes, f.fds))
        .unwrap_or_else(|e| bootstrap_failed(&format!("bad bootstrap: {e}")));
    let payload = conn
        .recv_frame(deadline)
        .map(|f| Encoded {
            bytes: f.bytes,
            fds: f.fds,
        })
        .unwrap_or_else(|e| bootstrap_failed(&format!("bad argument frame: {e}")));
    let ctx = ChildContext {
        name: boot.name,
        identity: boot.identity,
        daemon: boot.daemon,
        parent_pid: boot.parent_pid,
        parent_name: boot.parent_name,
        parent_conn: conn,
    };
    let ctx = SELF_INFO.get_or_init(|| ctx);
    inherit_authkey(boot.authkey);
    if ctx.daemon {
        guard_daemon(ctx.parent_pid);
    }
    install_panic_hook(ctx.name.clone(), boot.quiet_panics);
    if let Err(e) = ctx.parent_conn.send(&Report::Started) {
        // The parent died while we started: nobody to tell, nothing to say.
        if let Error::Io(io) = &e {
            if matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ) {
                exit_child(EXIT_BOOTSTRAP_FAILED);
            }
        }
        bootstrap_failed(&format!("could not answer the parent: {e}"));
    }
    let code = match boot.target.call(payload) {
        // A `Process` target's `Termination` report; other entry points return
        // nothing to decode and exit 0.
        Ok(CallOutcome::Returned(enc)) => reduction::decode::<ExitStatus>(&enc.bytes, enc.fds)
            .map_or(0, |status| i32::from(status.0)),
        Ok(CallOutcome::Panicked(p)) => {
            let _ = ctx.parent_conn.send(&Report::Panicked(p));
            1
        }
        Ok(CallOutcome::Failed(e)) | Err(e) => {
            eprintln!("Process {}: {e}", ctx.name);
            1
        }
    };
    exit_child(code)
}

/// Set by `cargo llvm-cov` and any LLVM coverage run: children then exit
/// through libc, whose exit handlers write the counts (see [`exit_child`]).
const COVERAGE_VAR: &str = "LLVM_PROFILE_FILE";

/// Flushes stdout and exits with `code`.
///
/// A child of the forkserver ends as CPython's forked children do
/// (`os._exit` once the target returned): libc's exit handlers (any that the
/// code before `init()` registered, copied with the server), the main
/// thread's thread-local destructors and the libraries' destructors do not
/// run. They would cost about 7% of a `Process` start and join, mostly in
/// page faults on the pages they touch. A child with exit duties of ours (it
/// started processes of its own) exits through libc, which runs them, as
/// does one under a coverage run ([`COVERAGE_VAR`] set: LLVM's profile
/// runtime writes its counts from an exit handler). A spawned child, a
/// program of its own, always does.
pub(crate) fn exit_child(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    if crate::forkserver::forked_by_server()
        && !os_spawn::exit_handlers_registered()
        && std::env::var_os(COVERAGE_VAR).is_none()
    {
        os_spawn::exit_now(code);
    }
    std::process::exit(code)
}

fn bootstrap_failed(why: &str) -> ! {
    eprintln!("multiprocess: child start-up failed: {why}");
    exit_child(EXIT_BOOTSTRAP_FAILED)
}

/// Makes a daemon child die with its parent, however the parent dies.
///
/// A child of the forkserver asks the kernel (`PR_SET_PDEATHSIG`): its real
/// parent is the program's thread that started the server, which lives as
/// long as the program does, and no thread of ours is then needed (a thread
/// costs a stack, a malloc arena and their teardown on every pool worker's
/// start and exit). A parent already gone before the `prctl` is seen by the
/// parent pid. A spawned child's real parent is whichever thread started
/// it, which may end long before the program: a watcher thread is used.
fn guard_daemon(parent_pid: u32) {
    if crate::forkserver::forked_by_server()
        && crate::platform::forkserver::die_with_parent().is_ok()
    {
        if std::os::unix::process::parent_id() != parent_pid {
            kill_self();
        }
        return;
    }
    watch_parent();
}

/// A daemon child dies with its parent: a thread waits for the parent's end of
/// the socket to close (the parent exited, however it died) and kills this
/// process. Unlike `PR_SET_PDEATHSIG`, this does not fire when merely the
/// parent's *thread* that started us exits.
fn watch_parent() {
    let spawned = std::thread::Builder::new()
        .name("multiprocess-parent-watch".into())
        .spawn(|| {
            let Some(ctx) = child_context() else { return };
            loop {
                let hung_up = ctx
                    .parent_conn
                    .with_fd(|fd| fd::wait_for(fd, libc::POLLRDHUP, None).unwrap_or(true))
                    .unwrap_or(true);
                if hung_up && ctx.parent_conn.peer_closed() {
                    kill_self();
                }
            }
        });
    if spawned.is_err() {
        bootstrap_failed("could not start the parent-watch thread");
    }
}

/// Prints panics like Python prints a child's traceback (`Process Process-1:`
/// then the panic), and records where they happened for the report.
fn install_panic_hook(name: String, quiet: bool) {
    let default = std::panic::take_hook();
    let capture = std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
    std::panic::set_hook(Box::new(move |info| {
        let location = info.location().map(|l| l.to_string());
        let backtrace = capture.then(|| std::backtrace::Backtrace::force_capture().to_string());
        reduction::record_panic(location, backtrace);
        if !quiet {
            eprintln!("Process {name}:");
            default(info);
        }
    }));
}

/// Dispatches to the child's work before the test harness runs, for test
/// binaries (and any binary whose `main` you do not control).
///
/// Put it once at the top level of each integration-test file that starts
/// processes. It registers a constructor (an `.init_array` entry) that calls
/// [`init`](crate::init) before `main`: in a child it runs the child's work and exits, so the
/// harness never starts there; in the parent it only marks the process
/// initialized.
///
/// # Examples
///
/// ```
/// multiprocess::test_support!();
///
/// // In a test file this function carries `#[test]`.
/// fn child_runs() {
///     let mut p = multiprocess::Process::new(|_: ()| (), ());
///     p.start().unwrap();
///     p.join().unwrap();
///     assert_eq!(p.exitcode(), Some(0));
/// }
/// # fn main() { child_runs() }
/// ```
#[macro_export]
macro_rules! test_support {
    () => {
        // An `.init_array` entry: the loader calls it before `main`.
        #[used]
        #[allow(unsafe_code)]
        #[unsafe(link_section = ".init_array")]
        static __MULTIPROCESS_TEST_SUPPORT: extern "C" fn() = {
            extern "C" fn __multiprocess_test_support() {
                $crate::init();
            }
            __multiprocess_test_support
        };
    };
}
