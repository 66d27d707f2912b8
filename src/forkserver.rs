//! The forkserver start method: CPython's `forkserver.py`, with children that
//! stay the program's own.
//!
//! # How it works
//!
//! 1. At the first child that needs it, a thread of the program
//!    (`multiprocess-forkserver`) runs the binary again, as spawn runs a child,
//!    with `MULTIPROCESS_FORKSERVER=<n>` naming its end of a control socket.
//!    The thread then waits for the server's exit and reaps it.
//! 2. The server's [`init`](crate::init) sees the variable and never returns:
//!    it has run only the code before `init()`. It asks the kernel for SIGKILL
//!    when that thread (so the program) dies, then serves requests one at a
//!    time; end of file on the control socket (the program exited or was
//!    killed) ends it too.
//! 3. A request is the parent's current environment and umask and a count
//!    of children (one for a `Process`, a pool's workers at once), with the
//!    fds: each child's bootstrap socket, then the working directory, stdout
//!    and stderr, and one more when the parent has a shared-memory tracker:
//!    the write end of its pipe, which the child holds as a spawned child
//!    would. The server forks each child with `clone(CLONE_PARENT)`, so it
//!    is the *program's* child (it waits for it, gets its exit code, sends
//!    it signals, exactly as for a spawned child). It announces each pid as
//!    soon as its fork returns, before the next fork, and ends with the
//!    list: one request for a whole pool. A server killed between its forks
//!    leaves no child the program does not know of: the program ends (kills
//!    and reaps) every child announced before the failure.
//!    The server takes the request's environment (when it differs from the
//!    one it holds) and umask before it forks, so the children inherit them.
//! 4. The new process closes the control socket and its siblings' sockets,
//!    takes the directory and streams, and runs the bootstrap protocol of
//!    `spawn.rs` unchanged over its bootstrap socket: the build check, the
//!    `Started` report, the start timeout.
//!
//! A request is sent again to a new server only when it could not be sent
//! (the server had died before): once sent, a child may have been forked
//! with its bootstrap socket, which must never reach a second child.
//!
//! The server refuses to fork (every request gets an error) if the code
//! before `init()` started threads: a fork copies only the calling thread.

use crate::util::Unpoison;
use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::platform::forkserver as os;
use crate::platform::process::{Signal, kill};
use crate::platform::{env, fd, spawn as os_spawn};
use crate::reduction;

/// The variable that tells the server which inherited fd is its control socket.
pub(crate) const SERVER_VAR: &str = "MULTIPROCESS_FORKSERVER";

/// The running server, seen from the program.
struct Server {
    /// Its pid.
    pid: u32,
    /// The control socket.
    conn: Connection,
    /// The executable it runs (a new one is started if that changes).
    exe: PathBuf,
    /// The thread that started it and reaps it; gives its exit code.
    reaper: Reaper,
}

/// The thread that starts a server and reaps it, seen from the program.
///
/// The thread never ends before the program does: it is the real parent of
/// the server *and of every child the server forks* (`CLONE_PARENT`), and
/// the kernel sends a parent-death signal when that thread ends, not the
/// process. The server dies with it (its `PR_SET_PDEATHSIG`), as does each
/// daemon child (see `spawn::guard_daemon`), so a server replaced after it
/// died must not take the daemons it forked along: its thread, once it has
/// reaped it, parks for the rest of the program's life (one parked thread
/// per server ever started, which is one unless a server is killed or
/// replaced for another executable).
struct Reaper {
    /// The server's exit code once the thread has reaped it (a condition
    /// variable, not a channel: waited for from the exit handler too, where
    /// a channel's wait would need this thread's thread-locals).
    code: Arc<(Mutex<Option<Option<i32>>>, Condvar)>,
}

impl Reaper {
    /// Whether the server was reaped (then its pid may be another process's).
    fn is_finished(&self) -> bool {
        self.code.0.lock().unpoison().is_some()
    }

    /// Waits for the server to be reaped; its exit code, if it ran.
    fn join(self) -> Option<i32> {
        let (lock, reaped) = &*self.code;
        let mut code = lock.lock().unpoison();
        loop {
            if let Some(c) = *code {
                return c;
            }
            code = reaped.wait(code).unpoison();
        }
    }
}

/// The server of this process, once started.
static SERVER: Mutex<Option<Server>> = Mutex::new(None);

fn server() -> MutexGuard<'static, Option<Server>> {
    SERVER.lock().unpoison()
}

/// What a child needs of the parent's state at the moment it starts.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    /// The parent's environment, without our own variables.
    env: Vec<(OsString, OsString)>,
    /// The parent's umask.
    umask: u32,
    /// How many children to fork (their bootstrap sockets come first).
    children: u32,
    /// One more fd comes with the request: the shared-memory tracker's pipe.
    tracker: bool,
}

/// The server's process name (`ps`, `/proc/<pid>/comm`), so that it is told
/// apart from the children; each child takes back the program's name.
pub(crate) const SERVER_NAME: &str = "mp-forkserver";

/// The fds that come with every [`Request`] after the children's bootstrap
/// sockets, in this order: the working directory, stdout, stderr (the
/// tracker's pipe, when [`Request::tracker`], follows them).
const SHARED_FDS: usize = 3;

/// The most children one request may ask for (the fds of a request travel in
/// one message, whose limit is 253).
pub(crate) const MAX_BATCH: usize = 64;

/// What `spawn` hands the forkserver (which sits below it): how to run the
/// server and how the child side starts.
pub(crate) struct Launch<'a> {
    /// The executable the server runs.
    pub(crate) exe: PathBuf,
    /// Its argv.
    pub(crate) argv: (OsString, Vec<OsString>),
    /// How long the server may take to answer.
    pub(crate) timeout: Duration,
    /// The child's bootstrap variable, never passed on in an environment.
    pub(crate) child_fd_var: &'a str,
}

/// The child side, as `spawn` provides it.
pub(crate) struct ChildEntry {
    /// Runs the bootstrap protocol over the given socket and exits.
    pub(crate) run: fn(OwnedFd) -> !,
    /// Reports a start-up failure and exits.
    pub(crate) failed: fn(&str) -> !,
    /// Computes, once in the server, what every child would otherwise work
    /// out again after its fork.
    pub(crate) warm: fn(),
}

/// The server's answer.
#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    /// One child forked: its pid, sent at once, before the next fork, so
    /// that a server killed before its last answer leaves no child the
    /// program does not know of. The request's final answer follows.
    Child(u32),
    /// The children's pids, in the order of their sockets (each announced
    /// before by a [`Reply::Child`]).
    Forked(Vec<u32>),
    /// Why no child was made.
    Refused(String),
    /// The children forked before a fork failed, and why it failed.
    Partial(Vec<u32>, String),
}

/// Forks a child from the server (started now if need be) whose bootstrap
/// socket is `channel`; returns its pid. The child is this process's child.
///
/// # Errors
///
/// As [`start_children`].
pub(crate) fn start_child(channel: OwnedFd, launch: Launch<'_>) -> Result<u32> {
    let pids = start_children(vec![channel], launch)?;
    Ok(pids[0])
}

/// Forks one child per bootstrap socket of `channels` (at most
/// [`MAX_BATCH`]) in one request to the server; returns their pids, in the
/// same order. Either all are forked or none is left: children forked before
/// a failure are killed and reaped here.
///
/// # Errors
///
/// [`Error::Spawn`] if the server could not be started, refused (threads
/// before `init()`, fork failure) or died while forking; [`Error::Io`] when
/// out of fds.
pub(crate) fn start_children(channels: Vec<OwnedFd>, launch: Launch<'_>) -> Result<Vec<u32>> {
    let wanted = channels.len();
    if wanted == 0 || wanted > MAX_BATCH {
        return Err(Error::value(format!(
            "a forkserver request forks 1 to {MAX_BATCH} children, not {wanted}"
        )));
    }
    let tracker = crate::shared_memory::tracker::inheritable();
    let request = reduction::encode(&Request {
        env: std::env::vars_os()
            .filter(|(k, _)| {
                k != launch.child_fd_var
                    && k != SERVER_VAR
                    && k != crate::shared_memory::tracker::FD_VAR
            })
            .collect(),
        umask: os::current_umask()?,
        children: wanted as u32,
        tracker: tracker.is_some(),
    })?;
    let mut fds = channels;
    fds.extend([
        os::open_cwd()?,
        std::io::stdout().as_fd().try_clone_to_owned()?,
        std::io::stderr().as_fd().try_clone_to_owned()?,
    ]);
    fds.extend(tracker);
    let exe = launch.exe.clone();
    let mut guard = server();
    // A server that died (killed by someone) is replaced once.
    let mut last = String::new();
    for _ in 0..2 {
        if guard.as_ref().is_none_or(|s| s.exe != exe) {
            let _ = retire(guard.take());
            *guard = Some(start_server(&launch)?);
        }
        let s = guard.as_ref().expect("a server was just started");
        // It died before the request went out (killed by someone): one more
        // try with a new one. Nothing was forked.
        if let Err(e) = s.conn.send_frame(&request.bytes, &fds) {
            last = format!("{e}; {}", describe_exit(retire(guard.take())));
            continue;
        }
        let deadline = Instant::now() + launch.timeout;
        let mut announced = Vec::with_capacity(wanted);
        let failed = loop {
            match answer(s, deadline) {
                Ok(Reply::Child(pid)) if announced.len() < wanted => announced.push(pid),
                // A server that breaks the protocol is not kept: frames of
                // this request may still be on their way.
                Ok(Reply::Child(pid)) => {
                    announced.push(pid);
                    let _ = retire_collecting(guard.take(), &mut announced);
                    break format!("the forkserver announced more than {wanted} children");
                }
                Ok(Reply::Forked(pids)) if pids == announced && pids.len() == wanted => {
                    return Ok(pids);
                }
                Ok(Reply::Forked(pids)) => {
                    let _ = retire_collecting(guard.take(), &mut announced);
                    break format!(
                        "the forkserver forked {} children of {wanted} (announced {})",
                        pids.len(),
                        announced.len()
                    );
                }
                Ok(Reply::Partial(_, why)) => break why,
                Ok(Reply::Refused(why)) => break why,
                // It died with the request: children may have been forked
                // with these sockets, so they are not sent again.
                Err(e @ (Error::Eof | Error::Io(_))) => {
                    let why = describe_exit(retire(guard.take()));
                    break format!(
                        "the forkserver died while starting the child ({e}; {why}); is \
                         mp::init() the first line of main?"
                    );
                }
                Err(Error::Timeout) => {
                    let pid = guard.as_ref().map_or(0, |s| s.pid);
                    let _ = retire_collecting(guard.take(), &mut announced);
                    break format!(
                        "the forkserver (pid {pid}) did not start within {:?}; is mp::init() \
                         the first line of main?",
                        launch.timeout
                    );
                }
                Err(e) => {
                    let _ = retire_collecting(guard.take(), &mut announced);
                    break format!(
                        "the forkserver did not answer ({e}); is mp::init() the first line of \
                         main?"
                    );
                }
            }
        };
        // Every child it announced is ended here, whatever came after.
        discard(&announced);
        return Err(Error::Spawn(failed));
    }
    Err(Error::Spawn(format!(
        "the forkserver did not answer ({last}); is mp::init() the first line of main?"
    )))
}

/// Reads the server's next answer to the request just sent, by `deadline`.
fn answer(s: &Server, deadline: Instant) -> Result<Reply> {
    let frame = s.conn.recv_frame(Some(deadline))?;
    reduction::decode(&frame.bytes, frame.fds)
}

/// Kills and reaps children of a request that failed as a whole.
fn discard(pids: &[u32]) {
    for &pid in pids {
        kill(pid, Signal::SIGKILL);
        let _ = crate::platform::process::reap_blocking(pid);
    }
}

/// Starts a server running `exe`, from a thread that then reaps it.
fn start_server(launch: &Launch<'_>) -> Result<Server> {
    let (ours, theirs) = fd::socketpair_stream()?;
    let (arg0, args) = launch.argv.clone();
    let exe_owned = launch.exe.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let code = Arc::new((Mutex::new(None), Condvar::new()));
    let code_out = Arc::clone(&code);
    std::thread::Builder::new()
        .name("multiprocess-forkserver".into())
        .spawn(move || {
            let started = os_spawn::spawn_child(os_spawn::SpawnSpec {
                exe: &exe_owned,
                arg0,
                args,
                fd_var: SERVER_VAR,
                channel: theirs.as_fd(),
                // The server holds no shared-memory tracker pipe: each
                // request brings the parent's, for the child alone.
                extra: None,
            });
            drop(theirs);
            let pid = started.as_ref().ok().copied();
            let _ = tx.send(started);
            // The server's parent-death signal follows this thread: it lives
            // at least as long as the server does.
            let exit = pid.and_then(crate::platform::process::reap_blocking);
            *code_out.0.lock().unpoison() = Some(exit);
            code_out.1.notify_all();
            // ... and so do the daemons it forked: this thread stays (see
            // `Reaper`).
            if pid.is_some() {
                loop {
                    std::thread::park();
                }
            }
        })?;
    let pid = match rx.recv() {
        Ok(r) => r?,
        Err(_) => return Err(Error::Spawn("the forkserver thread died".into())),
    };
    let reaper = Reaper { code };
    register_exit_handler();
    Ok(Server {
        pid,
        conn: Connection::from_fd(ours, true, true),
        exe: launch.exe.clone(),
        reaper,
    })
}

/// Stops a server: closing the control socket ends it; SIGKILL in case it
/// hangs; its thread reaps it. Its exit code, if it ran.
fn retire(server: Option<Server>) -> Option<i32> {
    let s = server?;
    s.conn.close();
    // Once reaped, its pid may be another process's.
    if !s.reaper.is_finished() {
        kill(s.pid, Signal::SIGKILL);
    }
    s.reaper.join()
}

/// How long a failed request's last announcements are waited for, once
/// the server is killed: its children close their copies of the control
/// socket first thing, so end of file comes at once; a hang guard.
const COLLECT_GUARD: Duration = Duration::from_secs(5);

/// As [`retire`], for a server that failed in the middle of a request
/// while still alive (timed out, answered garbage): killed first, so that
/// it forks no more, then its control socket is read to the end, so that
/// every child it announced (some perhaps after the deadline) is added to
/// `announced`, for the caller to end.
fn retire_collecting(server: Option<Server>, announced: &mut Vec<u32>) -> Option<i32> {
    let s = server?;
    if !s.reaper.is_finished() {
        kill(s.pid, Signal::SIGKILL);
    }
    let guard = Instant::now() + COLLECT_GUARD;
    while let Ok(frame) = s.conn.recv_frame(Some(guard)) {
        if let Ok(Reply::Child(pid)) = reduction::decode(&frame.bytes, frame.fds) {
            announced.push(pid);
        }
    }
    retire(Some(s))
}

/// "it exited with code 0" / "it was killed by signal 9".
fn describe_exit(code: Option<i32>) -> String {
    match code {
        Some(c) if c < 0 => format!("it was killed by signal {}", -c),
        Some(c) => format!("it exited with code {c}"),
        None => "its exit status is unknown".into(),
    }
}

/// At the program's normal exit, stop the server and reap it, so that it is
/// not left as a zombie for whoever inherits it.
fn register_exit_handler() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        extern "C" fn stop_server() {
            // A thread that starts a child right now holds the lock: leave
            // the server to its end-of-file and parent-death signal.
            if let Ok(mut guard) = SERVER.try_lock() {
                let _ = retire(guard.take());
            }
        }
        let _ = os_spawn::at_exit(stop_server);
    });
}

// ---------------------------------------------------------------------------
// The server side

/// Runs this process as the forkserver; exits when the program does.
pub(crate) fn run_server(var: OsString, child: ChildEntry) -> ! {
    let conn = match var
        .to_str()
        .and_then(|s| s.parse().ok())
        .map(fd::adopt_inherited)
    {
        Some(Ok(fd)) => Connection::from_fd(fd, true, true),
        _ => (child.failed)(&format!(
            "{SERVER_VAR}={var:?} does not name an inherited fd"
        )),
    };
    // Dies with the program even after SIGKILL; end of file on `conn` is the
    // second guard (and covers a program that died before this call).
    if let Err(e) = os::die_with_parent() {
        eprintln!("multiprocess: forkserver: PR_SET_PDEATHSIG failed: {e}");
    }
    // The server holds no tracker pipe of its own (see `tracker::forget`).
    crate::shared_memory::tracker::forget();
    // Computed once here (a `stat` of the executable), inherited by every
    // child, which checks its parent's build against it.
    let _ = reduction::fingerprint();
    (child.warm)();
    let threads = os::thread_count().unwrap_or(0);
    let name = os::process_name().unwrap_or_default();
    let _ = os::set_process_name(SERVER_NAME);
    // The environment the server holds, as last taken from a request; none
    // yet (what it was started with need not be what a request brings,
    // even an empty one).
    let mut env_held: Option<Vec<(OsString, OsString)>> = None;
    loop {
        let frame = match conn.recv_frame(None) {
            Ok(f) => f,
            // The program closed the socket, exited or was killed.
            Err(_) => std::process::exit(0),
        };
        let reply = if threads != 1 {
            Reply::Refused(format!(
                "the forkserver cannot fork: the code before mp::init() started threads ({threads} \
                 running); a fork copies only one of them. Move mp::init() first in main or use \
                 the spawn start method"
            ))
        } else {
            serve(&conn, &name, &child, &mut env_held, frame.bytes, frame.fds)
        };
        if conn.send(&reply).is_err() {
            std::process::exit(0);
        }
    }
}

/// Forks the children of a request; in a child, never returns.
///
/// The server takes the request's environment and umask itself before it
/// forks (the children inherit them): the environment is usually the one it
/// already holds (`env_held`), and then costs nothing, where each child would
/// otherwise compare and rebuild it, touching (so copying) pages of its own.
fn serve(
    conn: &Connection,
    name: &str,
    child: &ChildEntry,
    env_held: &mut Option<Vec<(OsString, OsString)>>,
    bytes: Vec<u8>,
    mut fds: Vec<OwnedFd>,
) -> Reply {
    let request = match reduction::decode::<Request>(&bytes, Vec::new()) {
        Ok(r) => r,
        Err(e) => return Reply::Refused(format!("the forkserver got a bad request: {e}")),
    };
    let wanted = request.children as usize;
    let expected = wanted + SHARED_FDS + usize::from(request.tracker);
    if wanted == 0 || wanted > MAX_BATCH || fds.len() != expected {
        return Reply::Refused(format!(
            "the forkserver got a request for {wanted} children with {} fds, not {expected}",
            fds.len()
        ));
    }
    let tracker = if request.tracker { fds.pop() } else { None };
    let shared = fds.split_off(wanted);
    let Ok(shared) = <[OwnedFd; SHARED_FDS]>::try_from(shared) else {
        unreachable!("the count was checked above");
    };
    if env_held.as_ref() != Some(&request.env) {
        env::replace_all(&request.env);
        *env_held = Some(request.env);
    }
    os::set_umask(request.umask);
    let mut channels: Vec<Option<OwnedFd>> = fds.into_iter().map(Some).collect();
    let mut pids = Vec::with_capacity(wanted);
    for i in 0..wanted {
        match os::fork_as_sibling() {
            Ok(Some(pid)) => {
                // The child has its copy; the server keeps none.
                channels[i] = None;
                pids.push(pid);
                // Announced before the next fork (see `Reply::Child`); a
                // program that is gone ends the server.
                if conn.send(&Reply::Child(pid)).is_err() {
                    std::process::exit(0);
                }
                stop_here_if_a_test_asks(i);
            }
            Ok(None) => {
                // A new child often runs at once on the server's CPU: yield
                // it back, so that the server announces this child and forks
                // the next before this one's start-up takes the CPU (pool
                // start-up, 2 workers, medians of 200: the request 345 µs
                // without, 260 µs with; the whole start 7-13% shorter).
                std::thread::yield_now();
                let own = channels[i].take().expect("each socket is forked once");
                // The sockets of the children still to come are theirs alone.
                drop(channels);
                become_child(conn, name, child, own, shared, tracker)
            }
            Err(e) if pids.is_empty() => {
                return Reply::Refused(format!("the forkserver could not fork: {e}"));
            }
            Err(e) => {
                return Reply::Partial(pids, format!("the forkserver could not fork: {e}"));
            }
        }
    }
    Reply::Forked(pids)
}

/// For tests only (tests/start_methods.rs): the variable with which a test
/// makes the server stop itself (SIGSTOP) right after announcing the first
/// child of a request, to be killed there: between a request's forks, where
/// only the announcements tell the program which children exist. A program
/// that sets it gets a server that stops, and starts that fail after the
/// start timeout.
const TEST_STOP_VAR: &str = "MULTIPROCESS_TEST_FORKSERVER_STOP_AFTER_FIRST";

/// Stops this server if the request's environment (which it holds now)
/// carries [`TEST_STOP_VAR`] and `child` is the first of the request.
fn stop_here_if_a_test_asks(child: usize) {
    if child == 0 && std::env::var_os(TEST_STOP_VAR).is_some() {
        kill(std::process::id(), Signal::SIGSTOP);
    }
}

/// Set in a child the server forked, before its bootstrap.
static FORKED_BY_SERVER: AtomicBool = AtomicBool::new(false);

/// Whether this process is a child the forkserver forked: its real parent is
/// then the program's thread that started the server, which lives as long as
/// the program (see [`Reaper`]).
pub(crate) fn forked_by_server() -> bool {
    FORKED_BY_SERVER.load(Ordering::Relaxed)
}

/// The new process: takes the parent's state, then runs the child bootstrap.
fn become_child(
    conn: &Connection,
    name: &str,
    child: &ChildEntry,
    channel: OwnedFd,
    fds: [OwnedFd; SHARED_FDS],
    tracker: Option<OwnedFd>,
) -> ! {
    FORKED_BY_SERVER.store(true, Ordering::Relaxed);
    // The control socket is the server's alone.
    conn.close();
    if let Some(w) = tracker {
        crate::shared_memory::tracker::adopt(w);
    }
    let _ = os::set_process_name(name);
    let [cwd, stdout, stderr] = fds;
    let applied = os::change_dir(cwd.as_fd())
        .and_then(|()| os::take_std_streams(stdout.as_fd(), stderr.as_fd()));
    if let Err(e) = applied {
        (child.failed)(&format!("cannot take the parent's state: {e}"));
    }
    drop((cwd, stdout, stderr));
    (child.run)(channel)
}
