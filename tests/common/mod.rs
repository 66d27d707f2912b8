//! Helpers shared by the integration tests: hang guards and the leak check.
//!
//! Modelled on crossbeam's `ms()` and CPython's `support.SHORT_TIMEOUT` and
//! dangling-process check.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::mpsc;
use std::time::Duration;

/// A short hang guard: an operation that should be quick on an idle machine.
pub const SHORT: Duration = Duration::from_secs(30);
/// A long hang guard, for work that starts many processes on a loaded machine.
pub const LONG: Duration = Duration::from_secs(120);

/// `Duration::from_millis`.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Runs `f` on a thread and fails the test, naming `step`, if it does not
/// finish within `guard`: a hang becomes a failure instead of a stuck CI run.
pub fn within<T: Send + 'static>(
    guard: Duration,
    step: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(guard) {
        Ok(v) => {
            let _ = handle.join();
            v
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("hang: `{step}` did not finish within {guard:?}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => unreachable!("the thread sent nothing but returned"),
        },
    }
}

/// The fds of this process.
pub fn open_fds() -> BTreeSet<String> {
    // The listing's own fd (whatever number it got this time) is not one of
    // ours: it links to this very directory.
    let own_dir = format!("/proc/{}/fd", std::process::id());
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    std::fs::read_link(e.path()).map_or(true, |t| t.to_str() != Some(&own_dir))
                })
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Entries in /dev/shm.
pub fn shm_entries() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Children of this process (running or zombie), from /proc; the forkserver
/// (named `mp-forkserver`, kept for the program's life) is not counted.
pub fn child_pids() -> Vec<(u32, char)> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) S ppid ..." — comm may hold spaces, so split after ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        if stat.contains("(mp-forkserver)") {
            continue;
        }
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid: u32 = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if ppid == me {
            out.push((pid, state));
        }
    }
    out
}

/// Asserts on drop that no fd, /dev/shm entry or child (running or zombie)
/// was added since `new()`. Tests in one binary run on parallel threads, so a
/// test that uses it must hold [`serial`] for its whole body.
pub struct LeakCheck {
    fds: BTreeSet<String>,
    shm: BTreeSet<String>,
}

/// Under the forkserver start method (`MULTIPROCESS_START_METHOD=forkserver`),
/// starts this test binary's forkserver once, so that its control socket and
/// the server itself (kept for the program's life) predate every leak check.
fn start_forkserver_first() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if multiprocess::get_start_method() != multiprocess::StartMethod::Forkserver {
            return;
        }
        let mut p = multiprocess::Process::new(|_: ()| (), ());
        // A binary without `test_support!()` starts no process: nothing to do.
        if p.start().is_ok() {
            let _ = p.join();
        }
    });
}

impl LeakCheck {
    pub fn new() -> Self {
        start_forkserver_first();
        LeakCheck {
            fds: open_fds(),
            shm: shm_entries(),
        }
    }

    /// Checks now, waiting up to a guard for children to be reaped.
    pub fn check(&self) {
        let deadline = std::time::Instant::now() + SHORT;
        loop {
            let kids = child_pids();
            let fds: BTreeSet<String> = open_fds().difference(&self.fds).cloned().collect();
            let shm: BTreeSet<String> = shm_entries().difference(&self.shm).cloned().collect();
            if kids.is_empty() && fds.is_empty() && shm.is_empty() {
                return;
            }
            if std::time::Instant::now() > deadline {
                let fd_targets: Vec<String> = fds
                    .iter()
                    .map(|f| {
                        format!(
                            "{f} -> {:?}",
                            std::fs::read_link(format!("/proc/self/fd/{f}")).ok()
                        )
                    })
                    .collect();
                panic!(
                    "leak: children {kids:?}, new fds {fd_targets:?}, new /dev/shm entries {shm:?}"
                );
            }
            // Polling a /proc snapshot: a hang guard, not synchronisation.
            std::thread::sleep(ms(20));
        }
    }
}

impl Drop for LeakCheck {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.check();
        }
    }
}

/// A process-wide lock for the tests of one file: any test that starts
/// processes in a file that uses [`LeakCheck`] must hold it, or the check sees
/// its children.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts `f(arg)` in a child process.
pub fn start<F, A, R>(f: F, arg: A) -> multiprocess::Process
where
    F: Fn(A) -> R + Copy + Send + 'static,
    A: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    R: std::process::Termination,
{
    let mut p = multiprocess::Process::new(f, arg);
    p.start().expect("start");
    p
}

/// Joins `p` and asserts it exited 0 (its assertions held).
pub fn joined_ok(mut p: multiprocess::Process) {
    p.join().expect("join");
    assert_eq!(p.exitcode(), Some(0), "the child failed an assertion");
}
