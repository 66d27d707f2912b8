//! The raw OS mechanisms under the crate, measured in the same run: what a
//! `multiprocess` row would cost with no layer on top. Rows named `baseline_*`;
//! CPython does not run them.
//!
//! The forked children here run only `read`, `write`, futex syscalls, atomics
//! and `_exit` (async-signal-safe), so forking this (possibly multi-threaded)
//! bench process is sound; every buffer they touch is allocated before the fork.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};

use crate::{Better, Cfg, EXIT_AT_ONCE, Side, Workload};

/// This area's rows.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "baseline_fork_exec_wait_ms",
        better: Better::Lower,
        side: Side::Baseline,
        count: 50,
        quick_count: 10,
        baseline: None,
        what: "bare fork + exec of this bench binary (exits at once) + waitpid",
        run: baseline_fork_exec_wait_ms,
    },
    Workload {
        name: "baseline_fork_wait_ms",
        better: Better::Lower,
        side: Side::Baseline,
        count: 200,
        quick_count: 20,
        baseline: None,
        what: "bare fork of this bench process (the child _exits at once) + waitpid",
        run: baseline_fork_wait_ms,
    },
    Workload {
        name: "baseline_posix_spawn_wait_ms",
        better: Better::Lower,
        side: Side::Baseline,
        count: 50,
        quick_count: 10,
        baseline: None,
        what: "the same through std::process::Command (posix_spawn, vfork-style)",
        run: baseline_posix_spawn_wait_ms,
    },
    Workload {
        name: "baseline_pipe_pingpong_us",
        better: Better::Lower,
        side: Side::Baseline,
        count: 20_000,
        quick_count: 2_000,
        baseline: None,
        what: "8 bytes bounced over a bare Unix socketpair between two processes",
        run: baseline_pipe_pingpong_us,
    },
    Workload {
        name: "baseline_pipe_throughput_mb_per_s",
        better: Better::Higher,
        side: Side::Baseline,
        count: 256,
        quick_count: 25,
        baseline: None,
        what: "n MiB written in 1 MiB write()s to a bare socketpair, read by the parent",
        run: baseline_pipe_throughput_mb_per_s,
    },
    Workload {
        name: "baseline_futex_lock_ns",
        better: Better::Lower,
        side: Side::Baseline,
        count: 10_000_000,
        quick_count: 1_000_000,
        baseline: None,
        what: "uncontended lock+unlock of a bare futex word in shared memory",
        run: baseline_futex_lock_ns,
    },
    Workload {
        name: "baseline_futex_contended_ops_per_s",
        better: Better::Higher,
        side: Side::Baseline,
        // More than the crate row's 100_000: at that count one process often
        // finishes before the other is even scheduled on a loaded machine.
        count: 2_000_000,
        quick_count: 200_000,
        baseline: None,
        what: "2 processes x n increments under a bare futex lock, in shared memory",
        run: baseline_futex_contended_ops_per_s,
    },
];

// ------------------------------------------------------------ fork + exec

/// Forks, runs `child` in the child (which must only make async-signal-safe
/// calls and should end the child itself; returning exits with 1), and returns
/// the pid.
fn fork_child(child: impl FnOnce()) -> Result<libc::pid_t> {
    // SAFETY: the child runs `child`, which only makes async-signal-safe calls
    // (documented at the module top) and ends in `_exit` or `execv`.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()).context("fork"),
        0 => {
            child();
            exit_child(false)
        }
        pid => Ok(pid),
    }
}

/// Waits for `pid` and checks it exited 0.
fn wait_ok(pid: libc::pid_t) -> Result<()> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer; `pid` is our unreaped child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e).context("waitpid");
        }
    }
    ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "baseline child {pid} ended with status {status:#x}"
    );
    Ok(())
}

/// Bare `fork()`, `execv("/proc/self/exe", [argv0, "--baseline-exit"])` (the
/// binary's `main` calls `multiprocess::init()`, sees the flag and exits 0),
/// `waitpid()`; one untimed warm-up, then the mean of `cfg.n` in ms.
pub fn baseline_fork_exec_wait_ms(cfg: &Cfg) -> Result<Option<f64>> {
    let exe = CString::new("/proc/self/exe")?;
    let arg0 = CString::new(
        std::env::args()
            .next()
            .unwrap_or_else(|| "vs_python".into()),
    )?;
    let flag = CString::new(EXIT_AT_ONCE)?;
    let argv = [arg0.as_ptr(), flag.as_ptr(), std::ptr::null()];
    let once = || -> Result<()> {
        let pid = fork_child(|| {
            // SAFETY: `exe` and `argv` are NUL-terminated and outlive the call
            // (allocated before the fork); execv and _exit are async-signal-safe.
            unsafe {
                libc::execv(exe.as_ptr(), argv.as_ptr());
                libc::_exit(127)
            }
        })?;
        wait_ok(pid)
    };
    once()?;
    let t0 = Instant::now();
    for _ in 0..cfg.n {
        once()?;
    }
    Ok(Some(t0.elapsed().as_secs_f64() * 1e3 / cfg.n as f64))
}

/// Bare `fork()` of this bench process, the child `_exit(0)` at once,
/// `waitpid()`: the kernel's part of a forkserver start (the server is a
/// smaller process than this one, so its fork is cheaper still). One untimed
/// warm-up, then the mean of `cfg.n` in ms.
pub fn baseline_fork_wait_ms(cfg: &Cfg) -> Result<Option<f64>> {
    let once = || -> Result<()> {
        let pid = fork_child(|| exit_child(true))?;
        wait_ok(pid)
    };
    once()?;
    let t0 = Instant::now();
    for _ in 0..cfg.n {
        once()?;
    }
    Ok(Some(t0.elapsed().as_secs_f64() * 1e3 / cfg.n as f64))
}

/// The same child through `std::process::Command` (stdin on /dev/null), which
/// uses `posix_spawn` (a vfork-style clone) when it can.
pub fn baseline_posix_spawn_wait_ms(cfg: &Cfg) -> Result<Option<f64>> {
    let once = || -> Result<()> {
        let st = std::process::Command::new("/proc/self/exe")
            .arg(EXIT_AT_ONCE)
            .stdin(std::process::Stdio::null())
            .status()?;
        ensure!(st.success(), "posix_spawn baseline child: {st}");
        Ok(())
    };
    once()?;
    let t0 = Instant::now();
    for _ in 0..cfg.n {
        once()?;
    }
    Ok(Some(t0.elapsed().as_secs_f64() * 1e3 / cfg.n as f64))
}

// ------------------------------------------------------------- socketpair

/// A connected `AF_UNIX` stream socketpair (what `mp::pipe(true)` uses).
fn socketpair() -> Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

/// Reads exactly `buf.len()` bytes; false on EOF or error. Async-signal-safe.
fn read_full(fd: i32, buf: &mut [u8]) -> bool {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: the range `buf[got..]` is valid, writable memory.
        let r = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        if r > 0 {
            got += r as usize;
        } else if r == 0
            || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
        {
            return false;
        }
    }
    true
}

/// Writes all of `buf`; false on error. Async-signal-safe.
fn write_full(fd: i32, buf: &[u8]) -> bool {
    let mut put = 0;
    while put < buf.len() {
        // SAFETY: the range `buf[put..]` is valid, readable memory.
        let r = unsafe { libc::write(fd, buf[put..].as_ptr().cast(), buf.len() - put) };
        if r > 0 {
            put += r as usize;
        } else if r == 0
            || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
        {
            return false;
        }
    }
    true
}

/// Ends a forked child.
fn exit_child(ok: bool) -> ! {
    // SAFETY: _exit is async-signal-safe and skips the parent's atexit work.
    unsafe { libc::_exit(if ok { 0 } else { 1 }) }
}

/// A forked child echoes each 8-byte little-endian `x` as `x + 1` over a bare
/// socketpair until EOF. 100 untimed rounds, then `cfg.n` timed ones, each
/// answer checked. µs per round trip.
pub fn baseline_pipe_pingpong_us(cfg: &Cfg) -> Result<Option<f64>> {
    let (a, b) = socketpair()?;
    let (fa, fb) = (a.as_raw_fd(), b.as_raw_fd());
    let pid = fork_child(|| {
        // SAFETY: closing the parent's end, an fd this child owns a copy of.
        unsafe { libc::close(fa) };
        let mut m = [0u8; 8];
        while read_full(fb, &mut m) {
            m = (u64::from_le_bytes(m) + 1).to_le_bytes();
            if !write_full(fb, &m) {
                exit_child(false);
            }
        }
        exit_child(true)
    })?;
    drop(b);
    let round = |i: u64| -> Result<()> {
        let mut m = [0u8; 8];
        ensure!(
            write_full(fa, &i.to_le_bytes()) && read_full(fa, &mut m),
            "socketpair echo broke"
        );
        ensure!(u64::from_le_bytes(m) == i + 1, "socketpair echo wrong");
        Ok(())
    };
    for i in 0..100 {
        round(i)?;
    }
    let t0 = Instant::now();
    for i in 0..cfg.n {
        round(i)?;
    }
    let dt = t0.elapsed();
    drop(a);
    wait_ok(pid)?;
    Ok(Some(dt.as_secs_f64() * 1e6 / cfg.n as f64))
}

/// A forked child writes 1 ready byte, reads 1 go byte, then writes `cfg.n`
/// 1 MiB buffers (index in the first 8 bytes) to a bare socketpair; the parent
/// starts the clock at go and reads them into one 1 MiB buffer, checking each
/// index. MiB per second.
pub fn baseline_pipe_throughput_mb_per_s(cfg: &Cfg) -> Result<Option<f64>> {
    const MIB: usize = 1 << 20;
    let n = cfg.n;
    let (a, b) = socketpair()?;
    let (fa, fb) = (a.as_raw_fd(), b.as_raw_fd());
    let mut buf = vec![0u8; MIB];
    let pid = fork_child(|| {
        // SAFETY: closing the parent's end, an fd this child owns a copy of.
        unsafe { libc::close(fa) };
        let mut go = [0u8; 1];
        if !write_full(fb, b"r") || !read_full(fb, &mut go) {
            exit_child(false);
        }
        for i in 0..n {
            buf[..8].copy_from_slice(&i.to_le_bytes());
            if !write_full(fb, &buf) {
                exit_child(false);
            }
        }
        exit_child(true)
    })?;
    drop(b);
    let mut ready = [0u8; 1];
    ensure!(read_full(fa, &mut ready), "socketpair sender not ready");
    let t0 = Instant::now();
    ensure!(write_full(fa, b"g"), "socketpair go");
    for i in 0..n {
        ensure!(read_full(fa, &mut buf), "socketpair copy broke at {i}");
        ensure!(
            buf[..8] == i.to_le_bytes(),
            "socketpair copy: message {i} wrong"
        );
    }
    let dt = t0.elapsed();
    wait_ok(pid)?;
    Ok(Some(n as f64 / dt.as_secs_f64()))
}

// ------------------------------------------------------------------ futex

/// One shared page: the lock word, a "go" word and a counter.
#[repr(C)]
struct SharedPage {
    lock: AtomicU32,
    go: AtomicU32,
    ready: AtomicU32,
    counter: AtomicU64,
}

/// An anonymous `MAP_SHARED` mapping holding a zeroed [`SharedPage`]; forked
/// children share it.
struct Shared(*mut SharedPage);

impl Shared {
    fn new() -> Result<Shared> {
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            bail!("mmap: {}", std::io::Error::last_os_error());
        }
        Ok(Shared(p.cast()))
    }

    fn page(&self) -> &SharedPage {
        // SAFETY: the mapping is page-aligned, zero-filled (a valid
        // SharedPage: all atomics) and lives until drop; only atomics touch it.
        unsafe { &*self.0 }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new(), no longer borrowed.
        unsafe { libc::munmap(self.0.cast(), 4096) };
    }
}

/// `futex(word, op, val)` on a shared (not private) futex.
fn futex(word: &AtomicU32, op: i32, val: u32) {
    // SAFETY: `word` is a valid, aligned u32; no timeout, no second word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op,
            val,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// std's futex mutex (0 unlocked, 1 locked, 2 contended), without the private
/// flag so it works across processes.
fn lock(word: &AtomicU32) {
    if word
        .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
    {
        return;
    }
    for _ in 0..100 {
        if word.load(Ordering::Relaxed) == 0
            && word
                .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            return;
        }
        std::hint::spin_loop();
    }
    while word.swap(2, Ordering::Acquire) != 0 {
        futex(word, libc::FUTEX_WAIT, 2);
    }
}

fn unlock(word: &AtomicU32) {
    if word.swap(0, Ordering::Release) == 2 {
        futex(word, libc::FUTEX_WAKE, 1);
    }
}

/// `cfg.n` uncontended lock+unlock pairs of a bare futex lock word in a shared
/// mapping (the fast path: a CAS and a swap, no syscall), each around an
/// increment checked at the end. ns per pair.
pub fn baseline_futex_lock_ns(cfg: &Cfg) -> Result<Option<f64>> {
    let shared = Shared::new()?;
    let page = shared.page();
    for _ in 0..1000 {
        lock(&page.lock);
        unlock(&page.lock);
    }
    let t0 = Instant::now();
    for _ in 0..cfg.n {
        lock(std::hint::black_box(&page.lock));
        page.counter
            .store(page.counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        unlock(&page.lock);
    }
    let dt = t0.elapsed();
    ensure!(
        page.counter.load(Ordering::Relaxed) == cfg.n,
        "futex baseline count"
    );
    Ok(Some(dt.as_secs_f64() * 1e9 / cfg.n as f64))
}

/// Two forked children wait for "go" (a futex word), then each does `cfg.n`
/// increments of a shared counter under the bare futex lock; the parent starts
/// the clock at go, reaps both, and checks the count is exactly `2n`.
/// Increments per second.
pub fn baseline_futex_contended_ops_per_s(cfg: &Cfg) -> Result<Option<f64>> {
    let shared = Shared::new()?;
    let page = shared.page();
    let n = cfg.n;
    let mut pids = Vec::new();
    for _ in 0..2 {
        pids.push(fork_child(|| {
            page.ready.fetch_add(1, Ordering::AcqRel);
            futex(&page.ready, libc::FUTEX_WAKE, 1);
            while page.go.load(Ordering::Acquire) == 0 {
                futex(&page.go, libc::FUTEX_WAIT, 0);
            }
            for _ in 0..n {
                lock(&page.lock);
                // Plain load + store: only correct under the lock.
                page.counter
                    .store(page.counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                unlock(&page.lock);
            }
            exit_child(true)
        })?);
    }
    loop {
        let r = page.ready.load(Ordering::Acquire);
        if r == 2 {
            break;
        }
        futex(&page.ready, libc::FUTEX_WAIT, r);
    }
    let t0 = Instant::now();
    page.go.store(1, Ordering::Release);
    futex(&page.go, libc::FUTEX_WAKE, i32::MAX as u32);
    for pid in pids {
        wait_ok(pid)?;
    }
    let dt = t0.elapsed();
    let got = page.counter.load(Ordering::Acquire);
    ensure!(got == 2 * n, "futex contended count {got} != {}", 2 * n);
    Ok(Some(2.0 * n as f64 / dt.as_secs_f64()))
}
