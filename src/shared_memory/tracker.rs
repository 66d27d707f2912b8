//! The resource tracker: unlinks the blocks this program created and did not
//! hand off, when the program is gone, however it ended.
//!
//! CPython's `resource_tracker` design, with its known faults removed:
//!
//! - The tracker is a separate process holding the read end of a pipe; every
//!   process of the program holds the write end (our children inherit it
//!   through [`crate::Process`]'s spawn, under [`FD_VAR`]). When the last
//!   write end closes, at the end of the last process of the program, even
//!   one killed with SIGKILL, the tracker reads end of file, unlinks every
//!   name still registered, and exits.
//! - It is started lazily, by the first tracked [`create`](super::SharedMemory::create)
//!   of a process that has no pipe yet, as this very binary run again with
//!   [`RUN_VAR`] (its `init()` runs the tracker and never returns). It detaches
//!   at once (fork, the first half exits, a new session): it is nobody's
//!   child, so no daemon-children rule, parent-death signal or terminal
//!   Ctrl-C (ignored, as CPython does) reaches it, and no process of ours
//!   has to reap it.
//! - Only blocks created by this program are registered: attaching never
//!   registers (CPython before 3.13 did, and unlinked blocks other programs
//!   still used). `untrack()` or `create_untracked()` hand a block off.
//! - Messages are one `write` each of at most 257 bytes (below `PIPE_BUF`),
//!   so those of many processes never interleave: `R` or `U`, a length byte,
//!   the POSIX name.

use crate::util::Unpoison;
use std::collections::HashSet;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::platform::{env, fd, named_shm, process, spawn as os_spawn};

/// The variable that names the inherited write end in a child.
pub(crate) const FD_VAR: &str = "MULTIPROCESS_SHM_TRACKER_FD";
/// The variable that makes a process the tracker, naming its read end.
const RUN_VAR: &str = "MULTIPROCESS_SHM_TRACKER";

/// Register a name.
const REGISTER: u8 = b'R';
/// Unregister a name.
const UNREGISTER: u8 = b'U';

/// Set by [`on_init`]: this process ran `init()`, so this binary run again
/// goes to the tracker before anything else.
static INIT_RAN: AtomicBool = AtomicBool::new(false);

/// This process's write end of the tracker's pipe, once it has one.
static PIPE: Mutex<Option<OwnedFd>> = Mutex::new(None);

fn pipe_lock() -> std::sync::MutexGuard<'static, Option<OwnedFd>> {
    PIPE.lock().unpoison()
}

/// Called first by `init()`: runs the tracker when this process is one
/// (never returns then), or adopts the pipe a parent passed down.
pub(crate) fn on_init() {
    INIT_RAN.store(true, Ordering::Release);
    if let Some(var) = std::env::var_os(RUN_VAR) {
        env::remove_var(RUN_VAR);
        run(var)
    }
    if let Some(var) = std::env::var_os(FD_VAR) {
        env::remove_var(FD_VAR);
        let adopted = var
            .to_str()
            .and_then(|s| s.parse().ok())
            .map(fd::adopt_inherited);
        // A number that is no pipe (a variable inherited by accident) is
        // ignored: this process then starts its own tracker when it needs one.
        if let Some(Ok(w)) = adopted.filter(|r| r.as_ref().is_ok_and(|w| fd::is_pipe(w.as_fd()))) {
            *pipe_lock() = Some(w);
        }
    }
}

/// A close-on-exec copy of the write end, for a child being started (`None`
/// while this process has no tracker): a spawned child inherits it under
/// [`FD_VAR`], a forkserver child gets it with its request (`SCM_RIGHTS`).
pub(crate) fn inheritable() -> Option<OwnedFd> {
    pipe_lock().as_ref().and_then(|w| w.try_clone().ok())
}

/// Makes `w` this process's write end: a forkserver child takes the one its
/// parent sent with the request, as a spawned child adopts [`FD_VAR`].
pub(crate) fn adopt(w: OwnedFd) {
    *pipe_lock() = Some(w);
}

/// Drops this process's write end, if any: the forkserver holds none, so
/// that the tracker's end of file means "every process of the program is
/// gone" and what it forks is given its parent's pipe, or none.
pub(crate) fn forget() {
    pipe_lock().take();
}

/// Registers `path` (a POSIX shm name): it will be unlinked when the program
/// ends unless [`unregister`]ed. Starts the tracker if this process has none,
/// and a new one if the old one is gone.
///
/// # Errors
///
/// Those of starting the tracker ([`Error::Spawn`](crate::Error::Spawn) when
/// `init()` was not called, I/O errors).
pub(crate) fn register(path: &str) -> crate::Result<()> {
    let msg = message(REGISTER, path)?;
    let mut pipe = pipe_lock();
    if let Some(w) = pipe.as_ref() {
        match send(w, &msg) {
            Ok(()) => return Ok(()),
            // The tracker died (someone killed it): start another.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
            Err(e) => return Err(e.into()),
        }
    }
    let w = start()?;
    send(&w, &msg)?;
    *pipe = Some(w);
    Ok(())
}

/// Unregisters `path` (it was unlinked, or handed off). Nothing to do without
/// a tracker; a tracker that does not know the name ignores it.
pub(crate) fn unregister(path: &str) {
    if let (Ok(msg), Some(w)) = (message(UNREGISTER, path), pipe_lock().as_ref()) {
        // A tracker that is gone has nothing left to forget.
        let _ = send(w, &msg);
    }
}

/// `op`, the length, the name.
fn message(op: u8, path: &str) -> io::Result<Vec<u8>> {
    let len = u8::try_from(path.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "shared memory name too long"))?;
    let mut msg = Vec::with_capacity(path.len() + 2);
    msg.push(op);
    msg.push(len);
    msg.extend_from_slice(path.as_bytes());
    Ok(msg)
}

/// One `write` of the whole message (atomic: below `PIPE_BUF`).
fn send(w: &OwnedFd, msg: &[u8]) -> io::Result<()> {
    match fd::write(w.as_fd(), msg)? {
        n if n == msg.len() => Ok(()),
        _ => Err(io::ErrorKind::WriteZero.into()),
    }
}

/// Starts a tracker and returns the write end of its pipe.
fn start() -> crate::Result<OwnedFd> {
    // The tracker is this binary run again: only safe when its `init()` runs
    // first (it does if ours did).
    if !INIT_RAN.load(Ordering::Acquire) {
        return Err(crate::Error::Spawn(
            "mp::init() was not called; make it the first line of main (in test binaries, \
             put multiprocess::test_support!() at the top of the file): a tracked shared \
             memory block needs it to start its tracker"
                .into(),
        ));
    }
    let (r, w) = fd::pipe()?;
    let exe = std::path::Path::new("/proc/self/exe");
    let pid = os_spawn::spawn_child(os_spawn::SpawnSpec {
        exe,
        arg0: OsString::from("multiprocess-shm-tracker"),
        args: std::env::args_os().skip(1).collect(),
        fd_var: RUN_VAR,
        channel: r.as_fd(),
        extra: None,
    })?;
    drop(r);
    // The process we started forks the tracker and exits at once.
    match process::reap_blocking(pid) {
        Some(0) => Ok(w),
        code => Err(crate::Error::Spawn(format!(
            "the shared-memory tracker did not start (exit code {code:?})"
        ))),
    }
}

/// The tracker's life: detach, collect names until end of file, unlink what
/// is left, exit.
fn run(var: OsString) -> ! {
    fd::ignore_sigpipe();
    let Some(Ok(r)) = var
        .to_str()
        .and_then(|s| s.parse().ok())
        .map(fd::adopt_inherited)
    else {
        eprintln!("multiprocess: {RUN_VAR}={var:?} names no inherited fd");
        std::process::exit(2);
    };
    if let Err(e) = process::detach() {
        eprintln!("multiprocess: the shared-memory tracker could not detach: {e}");
        std::process::exit(1);
    }
    process::ignore_interrupts();
    // Our stdout may be a pipe someone reads to its end: do not keep it open.
    let _ = process::stdout_to_dev_null();
    let names = collect(&r);
    for path in names {
        // Already gone (unlinked by a process outside the program) is fine.
        let _ = named_shm::unlink(&path);
    }
    std::process::exit(0)
}

/// Reads messages until end of file: the names registered and not
/// unregistered.
fn collect(r: &OwnedFd) -> HashSet<String> {
    let mut names = HashSet::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match fd::read(r.as_fd(), &mut buf) {
            Ok(0) => return names,
            Ok(n) => n,
            // Cannot happen on a pipe we own; stopping here still unlinks.
            Err(_) => return names,
        };
        pending.extend_from_slice(&buf[..n]);
        let mut at = 0;
        while let [op, len, rest @ ..] = &pending[at..] {
            let len = usize::from(*len);
            if rest.len() < len {
                break;
            }
            if let Ok(path) = std::str::from_utf8(&rest[..len]) {
                match *op {
                    REGISTER => {
                        names.insert(path.to_owned());
                    }
                    UNREGISTER => {
                        names.remove(path);
                    }
                    _ => {}
                }
            }
            at += 2 + len;
        }
        pending.drain(..at);
    }
}
