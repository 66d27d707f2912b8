//! Start methods: `spawn` and `forkserver`, and the context API.
//!
//! CPython: `_TestStartMethod` (`test_context`, `test_set_get`,
//! `test_get_all`) and the parts of `_TestProcess` each method must pass
//! (exit codes, `kill`/`terminate`, a daemon whose parent dies), run under
//! both methods; `_TestPool` smoke under both. What CPython does not
//! test and we promise: the child gets the parent's environment, working
//! directory and umask at start time, the server is gone after the program
//! exits or is SIGKILLed, and no fd or process is left.

multiprocess::test_support!();
mod common;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use common::{LONG, LeakCheck, SHORT, serial, within};
use mp::StartMethod::{self, Forkserver, Spawn};
use multiprocess as mp;

const METHODS: [StartMethod; 2] = [Spawn, Forkserver];

/// The forkserver's process name (`mp-forkserver`).
const SERVER_NAME: &str = "mp-forkserver";

/// `(pid, comm)` of the children of `parent`, from /proc.
fn children_of(parent: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let ppid = stat[close + 1..].split_whitespace().nth(1);
        if ppid.and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            out.push((pid, comm));
        }
    }
    out
}

/// The pid of this process's forkserver, if it runs one.
fn own_forkserver() -> Option<u32> {
    children_of(std::process::id())
        .into_iter()
        .find(|(_, comm)| comm == SERVER_NAME)
        .map(|(pid, _)| pid)
}

/// Gone, or a zombie of someone else (reparented after its parent died).
fn pid_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z')),
    }
}

/// Sends SIGKILL to `pid`.
fn sigkill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// Polls /proc until `cond` holds (a hang guard loop, not synchronisation).
fn wait_until(guard: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < guard, "hang: {what} not within {guard:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn park_forever() -> ! {
    loop {
        std::thread::park();
    }
}

/// Starts the forkserver of this test process before a leak check, so that
/// its control socket (kept for the program's life) is not counted.
fn warm_forkserver() {
    let mut p = mp::get_context(Forkserver).process(|_: ()| (), ());
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
}

/// Starts `p` and waits for it, within a hang guard; its exit code.
fn run(mut p: mp::Process) -> Option<i32> {
    within(LONG, "run a child", move || {
        p.start().unwrap();
        p.join().unwrap();
        p.exitcode()
    })
}

// ---------------------------------------------------------------------------
// _TestStartMethod: the API

#[test]
fn test_context() {
    assert_eq!("spawn".parse::<StartMethod>().unwrap(), Spawn);
    assert_eq!("forkserver".parse::<StartMethod>().unwrap(), Forkserver);
    assert_eq!(Spawn.to_string(), "spawn");
    assert_eq!(Forkserver.name(), "forkserver");
    for m in METHODS {
        assert_eq!(mp::get_context(m).start_method(), m);
        assert_eq!(m.name().parse::<StartMethod>().unwrap(), m);
    }
    match "nonsense".parse::<StartMethod>() {
        Err(mp::Error::Value(msg)) => {
            assert!(msg.contains("'spawn' and 'forkserver'"), "{msg}")
        }
        other => panic!("expected Error::Value, got {other:?}"),
    }
}

#[test]
fn test_fork_is_refused() {
    match "fork".parse::<StartMethod>() {
        Err(mp::Error::Value(msg)) => {
            for why in ["threads", "locks", "allocator", "forkserver"] {
                assert!(msg.contains(why), "the refusal should mention {why}: {msg}");
            }
        }
        other => panic!("expected Error::Value for fork, got {other:?}"),
    }
}

#[test]
fn test_get_all() {
    let all = mp::get_all_start_methods();
    assert_eq!(all.len(), 2);
    assert!(all.contains(&Spawn) && all.contains(&Forkserver));
    // Nothing in this process calls set_start_method: the default is first.
    assert_eq!(all[0], mp::get_start_method());
}

/// The default is the forkserver (CPython 3.14's POSIX default too), unless
/// `MULTIPROCESS_START_METHOD` names another method.
#[test]
fn test_default_is_forkserver() {
    let expected = match std::env::var(mp::START_METHOD_VAR) {
        Ok(v) => v.parse().unwrap_or(Forkserver),
        Err(_) => Forkserver,
    };
    assert_eq!(mp::get_start_method(), expected);
    assert_eq!(mp::get_all_start_methods()[0], expected);
    // A child started without a method uses the default: under the
    // forkserver it is the server's sibling, so its parent is this process
    // either way, and the server exists once it ran.
    let _g = serial();
    assert_eq!(run(mp::Process::new(|_: ()| (), ())), Some(0));
    if expected == Forkserver {
        assert!(own_forkserver().is_some());
    }
}

/// In a fresh child: set once, same again is fine, another is refused.
fn set_get_child(_: ()) -> ExitCode {
    let first = mp::get_start_method();
    let other = if first == Spawn { Forkserver } else { Spawn };
    mp::set_start_method(other).unwrap();
    assert_eq!(mp::get_start_method(), other);
    mp::set_start_method(other).unwrap();
    match mp::set_start_method(first) {
        Err(mp::Error::Value(msg)) => assert!(msg.contains("already been set"), "{msg}"),
        r => panic!("a second method was accepted: {r:?}"),
    }
    assert_eq!(mp::get_start_method(), other);
    // Children use the method set.
    let mut p = mp::Process::new(|_: ()| (), ());
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    ExitCode::SUCCESS
}

/// In a fresh child: once a child started with the default, another method
/// is refused and the same one accepted.
fn set_after_start_child(_: ()) -> ExitCode {
    let mut p = mp::Process::new(|_: ()| (), ());
    p.start().unwrap();
    p.join().unwrap();
    let used = mp::get_start_method();
    let other = if used == Spawn { Forkserver } else { Spawn };
    assert!(matches!(
        mp::set_start_method(other),
        Err(mp::Error::Value(_))
    ));
    mp::set_start_method(used).unwrap();
    ExitCode::SUCCESS
}

#[test]
fn test_set_get() {
    let _g = serial();
    assert_eq!(run(mp::Process::new(set_get_child, ())), Some(0));
    assert_eq!(run(mp::Process::new(set_after_start_child, ())), Some(0));
}

// ---------------------------------------------------------------------------
// _TestProcess under each start method

#[test]
fn test_process_exitcodes() {
    let _g = serial();
    warm_forkserver();
    let leaks = LeakCheck::new();
    for m in METHODS {
        let ctx = mp::get_context(m);
        assert_eq!(run(ctx.process(|_: ()| (), ())), Some(0), "{m}");
        assert_eq!(
            run(ctx.process(|n: u8| ExitCode::from(n), 3)),
            Some(3),
            "{m}"
        );
        let ok = ctx.process(|_: ()| -> Result<(), String> { Err("no".into()) }, ());
        assert_eq!(run(ok), Some(1), "{m}");
    }
    leaks.check();
}

#[test]
fn test_process_panic() {
    let _g = serial();
    warm_forkserver();
    let leaks = LeakCheck::new();
    for m in METHODS {
        let mut p = mp::get_context(m).process(|_: ()| panic!("boom in child"), ());
        let p = within(LONG, "a panicking child", move || {
            p.start().unwrap();
            p.join().unwrap();
            p
        });
        assert_eq!(p.exitcode(), Some(1), "{m}");
        match p.panic_error() {
            Some(mp::Error::Remote { message, pid, .. }) => {
                assert_eq!(message, "boom in child", "{m}");
                assert_eq!(Some(pid), p.pid());
            }
            other => panic!("{m}: expected a Remote error, got {other:?}"),
        }
    }
    leaks.check();
}

#[test]
fn test_terminate_and_kill() {
    let _g = serial();
    warm_forkserver();
    let leaks = LeakCheck::new();
    for m in METHODS {
        let ctx = mp::get_context(m);
        let codes = within(LONG, "terminate and kill", move || {
            let mut t = ctx.process(|_: ()| park_forever(), ());
            let mut k = ctx.process(|_: ()| park_forever(), ());
            t.start().unwrap();
            k.start().unwrap();
            assert!(t.is_alive() && k.is_alive());
            assert!(!t.join_timeout(Duration::from_millis(50)).unwrap());
            t.terminate().unwrap();
            k.kill().unwrap();
            t.join().unwrap();
            k.join().unwrap();
            (t.exitcode(), k.exitcode())
        });
        assert_eq!(codes, (Some(-15), Some(-9)), "{m}");
    }
    leaks.check();
}

#[test]
fn test_forkserver_children_are_ours() {
    let _g = serial();
    warm_forkserver();
    let leaks = LeakCheck::new();
    let server = own_forkserver().expect("the forkserver is a child of this process");
    let (ours, theirs) = mp::pipe(true).unwrap();
    let mut p = mp::get_context(Forkserver).process(
        |conn: mp::Connection| {
            conn.send(&()).unwrap();
            park_forever()
        },
        theirs,
    );
    within(LONG, "start", move || {
        p.start().unwrap();
        let pid = p.pid().unwrap();
        // Running its target: past the start-up.
        ours.recv::<()>().unwrap();
        // Our child, not the server's, and no longer named as the server
        // (it takes back the name the server had from its exec, as a
        // spawned child has).
        let mine = children_of(std::process::id());
        assert!(
            mine.iter()
                .any(|(c, comm)| *c == pid && comm != SERVER_NAME),
            "{mine:?}"
        );
        assert!(children_of(server).is_empty());
        assert_eq!(mp::active_children().len(), 1);
        p.kill().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(-9));
    });
    leaks.check();
}

/// Changes the environment, directory and umask after a first child started
/// (so after the forkserver started), then checks that a second child sees
/// the new ones. Sends the second child's exit code.
fn state_driver((method, conn): (StartMethod, mp::Connection)) {
    let ctx = mp::get_context(method);
    let mut first = ctx.process(|_: ()| (), ());
    first.start().unwrap();
    first.join().unwrap();
    let dir = std::env::temp_dir().join(format!("mp-start-methods-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    let dir = dir.canonicalize().unwrap();
    // SAFETY: this process's only other thread is the forkserver's (blocked
    // in waitpid); nothing reads the environment while it changes.
    unsafe { std::env::set_var("MP_START_METHODS_PROBE", "changed") };
    std::env::set_current_dir(&dir).unwrap();
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o027));
    let mut second = ctx.process(
        |dir: std::path::PathBuf| -> ExitCode {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let umask = status
                .lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .unwrap();
            if std::env::var("MP_START_METHODS_PROBE").as_deref() != Ok("changed") {
                ExitCode::from(10)
            } else if std::env::current_dir().unwrap() != dir {
                ExitCode::from(11)
            } else if umask.trim() != "0027" {
                ExitCode::from(12)
            } else {
                ExitCode::SUCCESS
            }
        },
        dir.clone(),
    );
    second.start().unwrap();
    second.join().unwrap();
    std::env::set_current_dir("/").unwrap();
    std::fs::remove_dir(&dir).unwrap();
    conn.send(&second.exitcode()).unwrap();
}

#[test]
fn test_child_gets_current_environment_cwd_and_umask() {
    let _g = serial();
    let leaks = LeakCheck::new();
    for m in METHODS {
        let (ours, theirs) = mp::pipe(true).unwrap();
        let driver = mp::Process::new(state_driver, (m, theirs));
        assert_eq!(run(driver), Some(0), "{m}");
        // 10: environment, 11: directory, 12: umask.
        assert_eq!(ours.recv::<Option<i32>>().unwrap(), Some(0), "{m}");
    }
    leaks.check();
}

/// Starts a daemon child and reports its pid and the forkserver's, then waits
/// to be killed.
fn doomed_driver((method, conn): (StartMethod, mp::Connection)) {
    let mut d = mp::get_context(method).process(|_: ()| park_forever(), ());
    d.set_daemon(true);
    d.start().unwrap();
    conn.send(&(d.pid().unwrap(), own_forkserver())).unwrap();
    park_forever()
}

#[test]
fn test_daemon_and_server_die_with_killed_parent() {
    let _g = serial();
    let leaks = LeakCheck::new();
    for m in METHODS {
        let (ours, theirs) = mp::pipe(true).unwrap();
        let mut driver = mp::Process::new(doomed_driver, (m, theirs));
        driver.start().unwrap();
        let (daemon, server) = within(LONG, "the driver's report", move || {
            ours.recv::<(u32, Option<u32>)>().unwrap()
        });
        assert_eq!(server.is_some(), m == Forkserver, "{m}: server {server:?}");
        driver.kill().unwrap();
        driver.join().unwrap();
        assert_eq!(driver.exitcode(), Some(-9));
        wait_until(SHORT, "the daemon's death", || pid_gone(daemon));
        if let Some(server) = server {
            wait_until(SHORT, "the forkserver's death", || pid_gone(server));
        }
    }
    leaks.check();
}

/// Runs one forkserver child, reports the server's pid, and returns (the
/// process exits normally).
fn exiting_driver(conn: mp::Connection) {
    let mut p = mp::get_context(Forkserver).process(|_: ()| (), ());
    p.start().unwrap();
    p.join().unwrap();
    conn.send(&own_forkserver()).unwrap();
}

#[test]
fn test_server_gone_after_program_exits() {
    let _g = serial();
    let leaks = LeakCheck::new();
    let (ours, theirs) = mp::pipe(true).unwrap();
    assert_eq!(run(mp::Process::new(exiting_driver, theirs)), Some(0));
    let server = ours
        .recv::<Option<u32>>()
        .unwrap()
        .expect("a forkserver ran");
    drop(ours);
    // Stopped and reaped by the program's exit handler before it exited.
    assert!(
        !std::path::Path::new(&format!("/proc/{server}")).exists(),
        "the forkserver {server} outlived its program"
    );
    leaks.check();
}

#[test]
fn test_build_check_under_forkserver() {
    let _g = serial();
    warm_forkserver();
    let leaks = LeakCheck::new();
    mp::set_executable(env!("CARGO_BIN_EXE_mp-test-other-build"));
    let mut p = mp::get_context(Forkserver).process(|_: ()| (), ());
    let started = p.start();
    mp::reset_executable();
    let r = started.and_then(|()| within(LONG, "join", move || p.join()));
    match r {
        Err(mp::Error::Spawn(msg)) => assert!(msg.contains("another build"), "{msg}"),
        other => panic!("expected a Spawn error for another build, got {other:?}"),
    }
    // The next child replaces the other build's server with ours.
    warm_forkserver();
    leaks.check();
}

/// Starts a forkserver child of `exe` (a binary other than this one).
fn forkserver_with(exe: &str) -> mp::Result<()> {
    mp::set_executable(exe);
    let mut p = mp::get_context(Forkserver).process(|_: ()| (), ());
    let started = p.start();
    mp::reset_executable();
    started
}

// TestNoForkBomb under forkserver: the server is the binary run again, so a
// `main` without `mp::init()` runs (and exits, or hangs) in the server.
#[test]
fn test_forkserver_start_guards() {
    let _g = serial();
    warm_forkserver();
    let leaks = LeakCheck::new();
    within(LONG, "the forkserver's start guards", || {
        match forkserver_with(env!("CARGO_BIN_EXE_mp-test-no-init")) {
            Err(mp::Error::Spawn(msg)) => {
                assert!(msg.contains("mp::init()"), "{msg}");
                assert!(msg.contains("exited with code 0"), "{msg}");
            }
            other => panic!("expected a Spawn error for a missing init(), got {other:?}"),
        }
        mp::set_start_timeout(Duration::from_millis(1500));
        let hung = forkserver_with(env!("CARGO_BIN_EXE_mp-test-no-init-hang"));
        mp::set_start_timeout(Duration::from_secs(30));
        match hung {
            Err(mp::Error::Spawn(msg)) => assert!(msg.contains("did not start"), "{msg}"),
            other => panic!("expected a Spawn error for a hanging server, got {other:?}"),
        }
    });
    // The next child gets a server of this binary again.
    warm_forkserver();
    leaks.check();
}

// ---------------------------------------------------------------------------
// The shared-memory tracker under both methods

/// The pipes this process holds besides its standard streams: the
/// shared-memory tracker's write end, once it has one, and whatever the
/// test process inherited from its own environment (nothing else in these
/// tests opens a pipe).
fn tracker_pipes() -> Vec<String> {
    let mut pipes: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| n > 2)
        })
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|t| {
            let t = t.to_str()?;
            Some(t.strip_prefix("pipe:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    pipes.sort();
    pipes.dedup();
    pipes
}

/// A child's view of the tracker: the pipes it holds before and after it
/// creates (and unlinks) a tracked block.
fn tracker_child(conn: mp::Connection) {
    let before = tracker_pipes();
    let block = mp::shared_memory::SharedMemory::create(None, 64).unwrap();
    let after = tracker_pipes();
    block.unlink().unwrap();
    conn.send(&(before, after)).unwrap();
}

/// What a child of `method` sees of the tracker: `(before, after)`.
fn tracker_seen_by_child(method: StartMethod) -> (Vec<String>, Vec<String>) {
    let (ours, theirs) = mp::pipe(true).unwrap();
    let mut p = mp::get_context(method).process(tracker_child, theirs);
    p.start().unwrap();
    let seen = ours.recv().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    seen
}

/// Runs in a fresh process without a tracker: a child started then starts
/// its own; once this process has one, a child holds this process's pipe
/// and registers through it. Sends every observation.
fn tracker_driver((method, conn): (StartMethod, mp::Connection)) {
    let none = tracker_pipes();
    let first = tracker_seen_by_child(method);
    let block = mp::shared_memory::SharedMemory::create(None, 64).unwrap();
    let own = tracker_pipes();
    let second = tracker_seen_by_child(method);
    block.unlink().unwrap();
    conn.send(&(none, first, own, second)).unwrap();
}

/// A forkserver child is a spawned one as far as the tracker goes: it holds
/// its parent's pipe (sent with the request), or starts a tracker itself.
#[test]
fn test_child_holds_or_starts_the_tracker() {
    let _g = serial();
    warm_forkserver();
    let leaks = LeakCheck::new();
    for m in METHODS {
        let (ours, theirs) = mp::pipe(true).unwrap();
        // The driver is a fresh process, so it starts without a tracker.
        let driver = mp::get_context(Spawn).process(tracker_driver, (m, theirs));
        assert_eq!(run(driver), Some(0), "{m}");
        type Seen = (Vec<String>, Vec<String>);
        let (none, first, own, second): (Vec<String>, Seen, Vec<String>, Seen) =
            ours.recv().unwrap();
        // Pipes this test process got from whoever ran it are not the tracker's.
        let inherited = tracker_pipes();
        let mine = |v: Vec<String>| -> Vec<String> {
            v.into_iter().filter(|p| !inherited.contains(p)).collect()
        };
        let (none, own) = (mine(none), mine(own));
        let first = (mine(first.0), mine(first.1));
        let second = (mine(second.0), mine(second.1));
        assert!(
            none.is_empty(),
            "{m}: the driver had a pipe at start: {none:?}"
        );
        // The first child had no tracker and started one of its own.
        assert!(first.0.is_empty(), "{m}: {first:?}");
        assert_eq!(first.1.len(), 1, "{m}: {first:?}");
        // The driver's own tracker is another one.
        assert_eq!(own.len(), 1, "{m}: {own:?}");
        assert_ne!(own, first.1, "{m}");
        // The second child holds the driver's pipe and registers through it.
        assert_eq!(second, (own.clone(), own.clone()), "{m}");
    }
    leaks.check();
}

// ---------------------------------------------------------------------------
// _TestPool under each start method (workers replaced by maxtasksperchild too)

#[test]
fn test_pool_under_each_method() {
    let _g = serial();
    warm_forkserver();
    let leaks = LeakCheck::new();
    for m in METHODS {
        within(LONG, "a pool", move || {
            let pool = mp::get_context(m)
                .pool_builder()
                .processes(2)
                .maxtasksperchild(2)
                .build()
                .unwrap();
            let squares = pool.map(|x: u64| x * x, 0..20u64).unwrap();
            assert_eq!(
                squares,
                (0..20u64).map(|x| x * x).collect::<Vec<_>>(),
                "{m}"
            );
            assert_eq!(pool.apply(|x: i32| x - 1, 5).unwrap(), 4, "{m}");
            pool.close();
            pool.join().unwrap();
        });
    }
    leaks.check();
}

// ---------------------------------------------------------------------------
// A pool's workers forked by one forkserver request

/// What a pool worker reports of itself: pid, parent pid, the probe variable.
fn worker_self(_: u64) -> (u32, u32, Option<String>) {
    (
        std::process::id(),
        std::os::unix::process::parent_id(),
        std::env::var("MP_BATCH_PROBE").ok(),
    )
}

/// Under the forkserver: a pool with the probe variable set, then one with it
/// removed. Sends, for each pool, its worker pids, what its tasks saw, and
/// this process's children (which the workers must be).
#[allow(clippy::type_complexity)]
fn batch_driver(conn: mp::Connection) {
    let ctx = mp::get_context(Forkserver);
    let mut seen = Vec::new();
    for value in [Some("batched"), None] {
        // SAFETY: this process's only other threads are the forkserver's
        // (blocked in waitpid) and no pool runs now; nothing reads the
        // environment while it changes.
        match value {
            Some(v) => unsafe { std::env::set_var("MP_BATCH_PROBE", v) },
            None => unsafe { std::env::remove_var("MP_BATCH_PROBE") },
        }
        let pool = ctx.pool_builder().processes(3).build().unwrap();
        let pids = pool.worker_pids();
        // (A worker just forked may still bear the server's name.)
        let children: Vec<u32> = children_of(std::process::id())
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        let reports = pool.map_with_chunksize(worker_self, 0..12u64, 1).unwrap();
        pool.close();
        pool.join().unwrap();
        seen.push((pids, children, reports));
    }
    conn.send(&(std::process::id(), seen)).unwrap();
}

#[test]
fn test_pool_workers_forked_at_once() {
    let _g = serial();
    warm_forkserver();
    let leaks = LeakCheck::new();
    let (ours, theirs) = mp::pipe(true).unwrap();
    assert_eq!(run(mp::Process::new(batch_driver, theirs)), Some(0));
    #[allow(clippy::type_complexity)]
    let (driver, seen): (
        u32,
        Vec<(Vec<u32>, Vec<u32>, Vec<(u32, u32, Option<String>)>)>,
    ) = ours.recv().unwrap();
    drop(ours);
    assert_eq!(seen.len(), 2);
    for ((pids, children, reports), want) in seen.into_iter().zip([Some("batched"), None]) {
        let mut distinct = pids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 3, "{pids:?}");
        // Every worker is the driver's own child.
        for pid in &pids {
            assert!(children.contains(pid), "{pid} not in {children:?}");
        }
        assert_eq!(reports.len(), 12);
        for (pid, ppid, var) in reports {
            assert!(pids.contains(&pid), "{pid} not in {pids:?}");
            assert_eq!(ppid, driver);
            assert_eq!(var.as_deref(), want);
        }
    }
    leaks.check();
}

#[test]
fn test_pool_maxtasksperchild_one_under_forkserver() {
    let _g = serial();
    warm_forkserver();
    let leaks = LeakCheck::new();
    within(LONG, "a pool replacing each worker", || {
        let pool = mp::get_context(Forkserver)
            .pool_builder()
            .processes(2)
            .maxtasksperchild(1)
            .build()
            .unwrap();
        let first = pool.worker_pids();
        let pids = pool
            .map_with_chunksize(|_: u64| std::process::id(), 0..6u64, 1)
            .unwrap();
        pool.close();
        pool.join().unwrap();
        let mut distinct = pids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        // One task per worker: six workers, the two of the batch among them.
        assert_eq!(distinct.len(), 6, "{pids:?}");
        for pid in first {
            assert!(pids.contains(&pid), "{pid} not in {pids:?}");
        }
    });
    leaks.check();
}

#[test]
fn test_forkserver_replaced_after_it_was_killed() {
    let _g = serial();
    warm_forkserver();
    let leaks = LeakCheck::new();
    let old = own_forkserver().expect("a forkserver runs");
    sigkill(old);
    wait_until(SHORT, "the killed forkserver gone", || pid_gone(old));
    within(LONG, "a pool after the server died", || {
        let pool = mp::get_context(Forkserver)
            .pool_builder()
            .processes(2)
            .build()
            .unwrap();
        assert_eq!(pool.apply(|x: i32| x * 3, 5).unwrap(), 15);
        pool.close();
        pool.join().unwrap();
    });
    let new = own_forkserver().expect("a new forkserver runs");
    assert_ne!(new, old);
    leaks.check();
}

/// A daemon that answers each number it gets with the same number.
fn echo_daemon(conn: mp::Connection) {
    while let Ok(x) = conn.recv::<u32>() {
        conn.send(&x).unwrap();
    }
}

/// A daemon dies with the program, not with the server that forked it: its
/// parent-death signal follows the program's forkserver thread, which stays
/// after reaping a killed server. A thread that ended there would take the
/// daemon along (SIGKILL queued as the thread exits, before the echo below).
#[test]
fn test_daemon_outlives_a_replaced_forkserver() {
    let _g = serial();
    warm_forkserver();
    let leaks = LeakCheck::new();
    let ctx = mp::get_context(Forkserver);
    let (ours, theirs) = mp::pipe(true).unwrap();
    let mut d = ctx.process(echo_daemon, theirs);
    d.set_daemon(true);
    within(LONG, "a daemon across a server's replacement", move || {
        d.start().unwrap();
        ours.send(&1u32).unwrap();
        assert_eq!(ours.recv::<u32>().unwrap(), 1);
        let old = own_forkserver().expect("a forkserver runs");
        sigkill(old);
        wait_until(SHORT, "the killed forkserver reaped", || pid_gone(old));
        // The next child needs a new server: the old one is retired.
        let mut p = ctx.process(|_: ()| (), ());
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert_ne!(own_forkserver(), Some(old));
        ours.send(&2u32).unwrap();
        assert_eq!(
            ours.recv::<u32>().unwrap(),
            2,
            "the daemon died with the old server"
        );
        drop(ours);
        d.join().unwrap();
        assert_eq!(d.exitcode(), Some(0));
    });
    leaks.check();
}

/// Where [`mark_exit`] writes: a variable of the child's environment.
const EXIT_MARK_VAR: &str = "MP_TEST_EXIT_MARK";

/// A libc exit handler: writes "ran" where [`EXIT_MARK_VAR`] says.
extern "C" fn mark_exit() {
    if let Some(path) = std::env::var_os(EXIT_MARK_VAR) {
        let _ = std::fs::write(path, b"ran");
    }
}

/// Registers [`mark_exit`], then returns (the child exits 0).
fn registers_exit_handler(_: ()) {
    // SAFETY: `mark_exit` is a plain function of this binary, valid for the
    // whole life of the process, and touches no state of ours.
    assert_eq!(unsafe { libc::atexit(mark_exit) }, 0);
}

/// Sets the child's environment (a mark file per case, `LLVM_PROFILE_FILE`
/// for a coverage run or not), starts one child per case that registers a
/// libc exit handler, and sends back whether each handler ran.
fn exit_handler_driver((cases, dir, conn): (Vec<(StartMethod, bool)>, String, mp::Connection)) {
    let mut ran = Vec::new();
    for (i, (method, coverage)) in cases.into_iter().enumerate() {
        let mark = format!("{dir}/mark-{i}");
        // SAFETY: this driver runs no other thread of its own while the
        // environment changes (its forkserver's thread, if started, only
        // waits for its server).
        unsafe {
            std::env::set_var(EXIT_MARK_VAR, &mark);
            if coverage {
                std::env::set_var("LLVM_PROFILE_FILE", format!("{dir}/cov-%p.profraw"));
            } else {
                std::env::remove_var("LLVM_PROFILE_FILE");
            }
        }
        let mut p = mp::get_context(method).process(registers_exit_handler, ());
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        ran.push(std::fs::read(&mark).is_ok_and(|b| b == b"ran"));
    }
    conn.send(&ran).unwrap();
}

/// A child of the forkserver ends as CPython's forked children do (with
/// `_exit`: libc's exit handlers do not run), except under a coverage run;
/// a spawned child exits through libc, which runs them.
#[test]
fn test_forkserver_child_exits_as_with_os_exit() {
    let _g = serial();
    let leaks = LeakCheck::new();
    let dir = std::env::temp_dir().join(format!("mp-exit-mark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = vec![(Forkserver, false), (Forkserver, true), (Spawn, false)];
    let (ours, theirs) = mp::pipe(true).unwrap();
    let driver = mp::Process::new(
        exit_handler_driver,
        (cases, dir.to_string_lossy().into_owned(), theirs),
    );
    assert_eq!(run(driver), Some(0));
    let ran: Vec<bool> = ours.recv().unwrap();
    drop(ours);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(ran, vec![false, true, true]);
    leaks.check();
}

/// Makes a forkserver stop itself (SIGSTOP) right after announcing the
/// first child of a request (read by the server from the request's
/// environment).
const STOP_AFTER_FIRST: &str = "MULTIPROCESS_TEST_FORKSERVER_STOP_AFTER_FIRST";

/// Whether `pid` is stopped (state `T` in /proc).
fn stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('T'))
    })
}

/// How the server stopped after its first fork is ended in
/// [`stopped_server_driver`].
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
enum Ending {
    /// SIGKILLed by a second thread.
    Killed,
    /// Left stopped until the start timeout (set to [`STOPPED_TIMEOUT`]).
    TimedOut,
}

/// The start timeout of [`Ending::TimedOut`].
const STOPPED_TIMEOUT: Duration = Duration::from_secs(2);

/// Under the forkserver, a pool of three whose server stops after its first
/// fork and is then ended as `ending` says. Sends the pool's error, this
/// process's other children while the server was stopped (the one child
/// forked so far), and this process's children once the error is back (none
/// may be left).
fn stopped_server_driver((ending, conn): (Ending, mp::Connection)) {
    // SAFETY: no other thread of this process runs yet, and none reads the
    // environment while it changes.
    unsafe { std::env::set_var(STOP_AFTER_FIRST, "1") };
    if let Ending::TimedOut = ending {
        mp::set_start_timeout(STOPPED_TIMEOUT);
    }
    let watcher = std::thread::spawn(move || {
        let mut server = 0;
        wait_until(LONG, "the forkserver stopped after its first fork", || {
            server = own_forkserver().filter(|&pid| stopped(pid)).unwrap_or(0);
            server != 0
        });
        let others: Vec<u32> = children_of(std::process::id())
            .into_iter()
            .map(|(pid, _)| pid)
            .filter(|&pid| pid != server)
            .collect();
        if let Ending::Killed = ending {
            sigkill(server);
        }
        others
    });
    let err = mp::get_context(Forkserver)
        .pool_builder()
        .processes(3)
        .build()
        .err();
    let forked = watcher.join().unwrap();
    mp::set_start_timeout(Duration::from_secs(30));
    // SAFETY: the watcher thread has ended; this is the only thread again.
    unsafe { std::env::remove_var(STOP_AFTER_FIRST) };
    let err = err.map(|e| (matches!(e, mp::Error::Spawn(_)), e.to_string()));
    conn.send(&(err, forked, children_of(std::process::id())))
        .unwrap();
}

/// Runs [`stopped_server_driver`] with `ending`; checks the start failed
/// with an `Error::Spawn` saying `why`, after one child was forked, and that
/// no child is left.
fn stopped_server_leaves_no_child(ending: Ending, why: &str) {
    let _g = serial();
    warm_forkserver();
    let leaks = LeakCheck::new();
    let (ours, theirs) = mp::pipe(true).unwrap();
    assert_eq!(
        run(mp::Process::new(stopped_server_driver, (ending, theirs))),
        Some(0)
    );
    #[allow(clippy::type_complexity)]
    let (err, forked, left): (Option<(bool, String)>, Vec<u32>, Vec<(u32, String)>) =
        ours.recv().unwrap();
    drop(ours);
    let (is_spawn, text) = err.expect("the pool's start fails");
    assert!(is_spawn && text.contains(why), "{text}");
    // The server had forked its first child (the one it announced) ...
    assert_eq!(forked.len(), 1, "{forked:?}");
    // ... and it is gone with the server: killed and reaped, no zombie.
    assert!(left.is_empty(), "children left: {left:?}");
    leaks.check();
}

#[test]
fn test_forkserver_killed_between_forks_leaves_no_child() {
    stopped_server_leaves_no_child(Ending::Killed, "forkserver died");
}

#[test]
fn test_forkserver_timed_out_between_forks_leaves_no_child() {
    stopped_server_leaves_no_child(Ending::TimedOut, "did not start within");
}
