//! Starting a child: the current binary run again, with one inherited socket.
//!
//! `posix_spawn` (a `vfork`-style clone in glibc, so the parent's page tables
//! are not copied) with two file actions: stdin from `/dev/null`, and a
//! `dup2(fd, fd)` of the child's socket, which clears close-on-exec on that fd in
//! the child only (POSIX 2024; glibc since 2.29). The parent's copy stays
//! close-on-exec, so a child started at the same moment by another thread never
//! inherits it.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// What to run: the executable, argv, and the environment variable that tells
/// the child which inherited fd is its channel to the parent.
pub(crate) struct SpawnSpec<'a> {
    /// The file to execute (normally `/proc/self/exe`).
    pub(crate) exe: &'a Path,
    /// `argv[0]` as the parent was started with it.
    pub(crate) arg0: OsString,
    /// The remaining arguments (the parent's own, so code before `init()` sees
    /// the same command line).
    pub(crate) args: Vec<OsString>,
    /// The variable that carries the fd number to the child.
    pub(crate) fd_var: &'a str,
    /// The child's end of the channel; inherited under its own number.
    pub(crate) channel: BorrowedFd<'a>,
    /// One more fd to inherit under its own number, and the variable that
    /// names it (the shared-memory tracker's pipe).
    pub(crate) extra: Option<(BorrowedFd<'a>, &'a str)>,
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "argument holds a NUL byte"))
}

/// A null-terminated array of pointers into `strings`.
fn pointers(strings: &[CString]) -> Vec<*mut libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr() as *mut libc::c_char)
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect()
}

/// Turns a posix_spawn* return code into an `io::Result`.
fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Starts `spec` with stdin on `/dev/null` and stdout/stderr inherited, the
/// signal mask cleared and `SIGPIPE` at its default (as std's `Command` does).
/// Returns the child's pid; the caller reaps it.
pub(crate) fn spawn_child(spec: SpawnSpec<'_>) -> io::Result<u32> {
    let raw = spec.channel.as_raw_fd();
    let exe = cstring(spec.exe.as_os_str())?;
    let mut argv = vec![cstring(&spec.arg0)?];
    for a in &spec.args {
        argv.push(cstring(a)?);
    }
    let mut envp = Vec::new();
    for (k, v) in std::env::vars_os() {
        if k != spec.fd_var && spec.extra.is_none_or(|(_, var)| k != var) {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            envp.push(cstring(OsStr::from_bytes(&kv))?);
        }
    }
    envp.push(cstring(OsStr::new(&format!("{}={raw}", spec.fd_var)))?);
    if let Some((fd, var)) = spec.extra {
        envp.push(cstring(OsStr::new(&format!("{var}={}", fd.as_raw_fd())))?);
    }
    let argv_p = pointers(&argv);
    let envp_p = pointers(&envp);
    let mut actions = FileActions::new()?;
    actions.open_dev_null_as_stdin()?;
    actions.inherit(raw)?;
    if let Some((fd, _)) = spec.extra {
        actions.inherit(fd.as_raw_fd())?;
    }
    let mut attr = SpawnAttr::new()?;
    attr.reset_signals()?;
    let mut pid: libc::pid_t = 0;
    // SAFETY:
    // - `exe`, and every pointer in `argv_p`/`envp_p`, point to NUL-terminated
    //   strings owned by `exe`/`argv`/`envp`, alive until the call returns; both
    //   arrays end with a null pointer.
    // - `actions` and `attr` are initialized (their constructors checked it) and
    //   live until after the call.
    let rc = unsafe {
        libc::posix_spawn(
            &mut pid,
            exe.as_ptr(),
            &actions.0,
            &attr.0,
            argv_p.as_ptr(),
            envp_p.as_ptr(),
        )
    };
    check(rc)?;
    Ok(pid as u32)
}

/// `posix_spawn_file_actions_t`, destroyed on drop.
struct FileActions(libc::posix_spawn_file_actions_t);

impl FileActions {
    fn new() -> io::Result<Self> {
        // SAFETY: a zeroed struct is a valid argument for `_init`, which fills it in.
        let mut fa: libc::posix_spawn_file_actions_t = unsafe { std::mem::zeroed() };
        // SAFETY: `fa` is a valid, writable posix_spawn_file_actions_t.
        check(unsafe { libc::posix_spawn_file_actions_init(&mut fa) })?;
        Ok(FileActions(fa))
    }

    fn open_dev_null_as_stdin(&mut self) -> io::Result<()> {
        // SAFETY: `self.0` is initialized; the path is a NUL-terminated literal
        // (glibc copies it).
        check(unsafe {
            libc::posix_spawn_file_actions_addopen(
                &mut self.0,
                0,
                c"/dev/null".as_ptr(),
                libc::O_RDONLY,
                0,
            )
        })
    }

    /// `dup2(fd, fd)` in the child: clears close-on-exec there.
    fn inherit(&mut self, fd: libc::c_int) -> io::Result<()> {
        // SAFETY: `self.0` is initialized; `fd` is a number, checked by the child.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut self.0, fd, fd) })
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialized in `new`, destroyed once.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

/// `posix_spawnattr_t`, destroyed on drop.
struct SpawnAttr(libc::posix_spawnattr_t);

impl SpawnAttr {
    fn new() -> io::Result<Self> {
        // SAFETY: a zeroed struct is a valid argument for `_init`, which fills it in.
        let mut attr: libc::posix_spawnattr_t = unsafe { std::mem::zeroed() };
        // SAFETY: `attr` is a valid, writable posix_spawnattr_t.
        check(unsafe { libc::posix_spawnattr_init(&mut attr) })?;
        Ok(SpawnAttr(attr))
    }

    /// Empty signal mask, `SIGPIPE` back to its default.
    fn reset_signals(&mut self) -> io::Result<()> {
        // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialize it.
        let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut default: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid sigset_t pointers, initialized attr.
        unsafe {
            libc::sigemptyset(&mut empty);
            libc::sigemptyset(&mut default);
            libc::sigaddset(&mut default, libc::SIGPIPE);
            check(libc::posix_spawnattr_setsigmask(&mut self.0, &empty))?;
            check(libc::posix_spawnattr_setsigdefault(&mut self.0, &default))?;
            check(libc::posix_spawnattr_setflags(
                &mut self.0,
                (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short,
            ))
        }
    }
}

impl Drop for SpawnAttr {
    fn drop(&mut self) {
        // SAFETY: initialized in `new`, destroyed once.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

/// Has libc call `f` when this process exits normally: after `main` returns
/// or `std::process::exit` (both end in libc's `exit`), not after a signal or
/// `_exit`. Handlers run in the reverse order of registration.
pub(crate) fn at_exit(f: extern "C" fn()) -> io::Result<()> {
    // Set before the call: a handler that may be registered must be run.
    EXIT_HANDLERS.store(true, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: `f` is a plain `extern "C" fn()` with no captured state, valid
    // for the whole life of the process (a function item of this binary).
    let rc = unsafe { libc::atexit(f) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::other("atexit() refused the exit handler"))
    }
}

/// Whether [`at_exit`] registered a handler in this process.
static EXIT_HANDLERS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process has exit handlers of ours, which only libc's `exit`
/// runs (see [`exit_now`]).
pub(crate) fn exit_handlers_registered() -> bool {
    EXIT_HANDLERS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Ends this process with `code` at once (`_exit`), after flushing C's stdio
/// buffers: libc's exit handlers and the libraries' destructors do not run.
/// The caller flushes Rust's streams and runs its own exit duties first.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: fflush(NULL) flushes every open C stream and touches no
    // memory of ours; _exit ends the process without returning.
    unsafe {
        libc::fflush(std::ptr::null_mut());
        libc::_exit(code)
    }
}

/// Fills `buf` from the kernel's random source (`getrandom(2)`; blocks only
/// before the entropy pool is first initialized, early at boot).
pub(crate) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is a valid, writable buffer of `rest.len()` bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(())
}
