//! `Process` with real child processes.
//!
//! Ported scenarios from cpython: Lib/test/_test_multiprocessing.py (3.11.7,
//! PSF licence): `_TestProcess` and `_TestSubclassingProcess`. Ported tests
//! carry the CPython test's name (`test_current`, ...); the others say what
//! they check. Changes: Python's `args` tuple is one serde argument;
//! exceptions are panics (or an `Err` the target returns); `sys.exit(n)` is
//! `std::process::exit(n)`; children report back over a `Pipe` instead of a
//! queue.
//!
//! `_TestProcess` tests not ported, and why:
//! * `test_args_argument`: Python's `args` as a list or a tuple; ours is one
//!   serde argument, its type checked at compile time.
//! * `test_set_executable`: covered by tests/spawn_guard.rs (another build is
//!   refused; the same build runs).
//! * `test_process_mainthread_native_id`: thread ids are the OS's; a child is
//!   another process, so its main thread differs by construction.
//! * `test_wait_for_threads`: a Rust process ends when `main` (for a child, the
//!   target) returns, without waiting for other threads, as std documents; we
//!   keep Rust's rule (docs/porting.md).
//! * `test_error_on_stdio_flush_1/2`: about Python replacing `sys.stdout` by
//!   `None` or a closed stream; Rust's stdout cannot be replaced.
//! * `test_forkserver_sigint`, `test_forkserver_sigkill`: there is no
//!   forkserver (one start method: spawn).

multiprocess::test_support!();
mod common;

use std::time::{Duration, Instant};

use common::*;
use multiprocess as mp;

fn sleeper(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs));
}

// _TestProcess

#[test]
fn test_current() {
    let _g = serial();
    let me = mp::current_process();
    assert_eq!(me.name(), "MainProcess");
    assert_eq!(me.pid(), std::process::id());
    assert!(me.is_alive());
    assert!(mp::parent_process().is_none());
    // os.urandom(32) in CPython; the same key on every call.
    let key = me.authkey().unwrap();
    assert_eq!(key.len(), 32);
    assert_eq!(mp::current_process().authkey().unwrap(), key);
    assert!(matches!(
        mp::parent_process().map(|p| p.authkey()),
        None | Some(Err(mp::Error::Value(_)))
    ));
}

// `current_process().authkey = key` in Python: children started afterwards
// inherit the new key.
#[test]
fn set_authkey_reaches_later_children() {
    let _g = serial();
    let me = mp::current_process();
    let old = me.authkey().unwrap();
    me.set_authkey(b"a key of our own").unwrap();
    let (rx, tx) = mp::pipe(false).unwrap();
    let mut p = mp::Process::new(
        |tx: mp::Connection| tx.send(&mp::current_process().authkey().unwrap()).unwrap(),
        tx,
    );
    p.start().unwrap();
    let got: Vec<u8> = within(SHORT, "recv key", move || rx.recv().unwrap());
    p.join().unwrap();
    me.set_authkey(&old).unwrap();
    assert_eq!(got, b"a key of our own");
    assert_eq!(mp::current_process().authkey().unwrap(), old);
}

// Python's BaseManager(authkey=None) serves with current_process().authkey, so
// that key (and only a right key) connects; a child, which inherited the key,
// may connect too.
#[test]
fn manager_new_serves_with_the_process_authkey() {
    let _g = serial();
    let m = mp::Manager::new().unwrap();
    let key = mp::current_process().authkey().unwrap();
    let client = mp::Manager::connect(m.address(), &key).unwrap();
    drop(client);
    assert!(matches!(
        mp::Manager::connect(m.address(), b"another key"),
        Err(mp::Error::Authentication(_))
    ));
    let mut p = mp::Process::new(
        |addr: mp::connection::Address| -> mp::Result<()> {
            mp::Manager::connect(addr, mp::current_process().authkey()?).map(drop)
        },
        m.address(),
    );
    p.start().unwrap();
    within(SHORT, "join", move || {
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    });
    m.shutdown().unwrap();
}

#[test]
fn test_cpu_count() {
    let n = mp::cpu_count();
    assert!(n >= 1);
    assert!(n <= std::thread::available_parallelism().unwrap().get());
}

#[test]
fn test_daemon_argument() {
    let _g = serial();
    // By default a process takes the creating process's daemon flag.
    let mut p0 = mp::Process::new(|_: ()| (), ());
    assert!(!p0.daemon());
    p0.set_daemon(true);
    assert!(p0.daemon());
    p0.set_daemon(false);
    assert!(!p0.daemon());
    // Inside a daemon child, a new Process is a daemon by default.
    let (rx, tx) = mp::pipe(false).unwrap();
    let mut d = mp::Process::new(
        |tx: mp::Connection| {
            let inner = mp::Process::new(|_: ()| (), ());
            tx.send(&inner.daemon()).unwrap();
        },
        tx,
    );
    d.set_daemon(true);
    d.start().unwrap();
    assert!(within(
        SHORT,
        "daemon flag of a daemon's child",
        move || { rx.recv::<bool>().unwrap() }
    ));
    d.join().unwrap();
    assert_eq!(d.exitcode(), Some(0));
}

#[test]
fn test_process() {
    let _g = serial();
    let leaks = LeakCheck::new();
    let (parent_end, child_end) = mp::pipe(true).unwrap();
    let mut p = mp::Process::new(
        |(conn, n, s): (mp::Connection, i64, String)| {
            let me = mp::current_process();
            let parent = mp::parent_process().expect("a child has a parent");
            conn.send(&(
                n,
                s,
                me.name().to_string(),
                me.pid(),
                parent.pid(),
                parent.name().to_string(),
            ))
            .unwrap();
            // The child inherits its parent's authkey.
            conn.send(&me.authkey().unwrap()).unwrap();
            // Alive until the parent has looked for it among its children: a
            // fast start (the forkserver) could otherwise be over by then.
            let () = conn.recv().unwrap();
        },
        (child_end, 7i64, "x".to_string()),
    );
    assert!(!p.is_alive());
    assert_eq!(p.exitcode(), None);
    assert_eq!(p.pid(), None);
    let name = p.name().to_string();
    assert!(name.starts_with("Process-"), "{name}");
    p.start().unwrap();
    assert!(p.pid().is_some());
    assert!(
        mp::active_children()
            .iter()
            .any(|c| Some(c.pid()) == p.pid())
    );
    type Seen = (i64, String, String, u32, u32, String);
    let (got, key, parent_end): (Seen, Vec<u8>, mp::Connection) =
        within(SHORT, "recv from child", move || {
            let got = parent_end.recv().unwrap();
            let key = parent_end.recv().unwrap();
            (got, key, parent_end)
        });
    assert_eq!(key, mp::current_process().authkey().unwrap());
    assert_eq!(got.0, 7);
    assert_eq!(got.1, "x");
    assert_eq!(got.2, name);
    assert_eq!(Some(got.3), p.pid());
    assert_eq!(got.4, std::process::id());
    assert_eq!(got.5, "MainProcess");
    parent_end.send(&()).unwrap();
    p.join().unwrap();
    assert!(!p.is_alive());
    assert_eq!(p.exitcode(), Some(0));
    assert!(
        mp::active_children()
            .iter()
            .all(|c| Some(c.pid()) != p.pid())
    );
    drop((p, parent_end));
    leaks.check();
}

#[test]
fn test_parent_process_attributes() {
    let _g = serial();
    assert!(mp::parent_process().is_none());
    let (rx, tx) = mp::pipe(false).unwrap();
    let mut p = mp::Process::new(
        |tx: mp::Connection| {
            let parent = mp::parent_process().unwrap();
            tx.send(&(parent.pid(), parent.name().to_string())).unwrap();
        },
        tx,
    );
    p.start().unwrap();
    p.join().unwrap();
    let (pid, name): (u32, String) = within(SHORT, "recv", move || rx.recv().unwrap());
    assert_eq!(pid, mp::current_process().pid());
    assert_eq!(pid, std::process::id());
    assert_eq!(name, mp::current_process().name());
}

// The number of fds in a child does not grow with the number of children
// running.
#[test]
fn test_child_fd_inflation() {
    let _g = serial();
    const N: usize = 5;
    let evt = mp::Event::new().unwrap();
    let q: mp::Queue<usize> = mp::Queue::new().unwrap();
    let mut procs: Vec<mp::Process> = (0..N)
        .map(|_| {
            mp::Process::new(
                |(evt, q): (mp::Event, mp::Queue<usize>)| {
                    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
                    q.put(fds).unwrap();
                    assert!(evt.wait_timeout(Duration::from_secs(60)));
                },
                (evt.clone(), q.clone()),
            )
        })
        .collect();
    for p in &mut procs {
        p.start().unwrap();
    }
    let counts: Vec<usize> = within(LONG, "fd counts", {
        let q = q.clone();
        move || (0..N).map(|_| q.get().unwrap()).collect()
    });
    evt.set();
    within(LONG, "join", move || {
        for p in &mut procs {
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(0));
        }
    });
    assert!(counts.iter().all(|&c| c == counts[0]), "{counts:?}");
}

// CPython: _TestSubclassingProcess.test_sys_exit, test_stderr_flush
#[test]
fn exit_codes_follow_python() {
    let _g = serial();
    let mut ok = mp::Process::new(|_: ()| (), ());
    let mut panics = mp::Process::new(|_: ()| panic!("boom in child"), ());
    let mut exits = mp::Process::new(|n: i32| std::process::exit(n), 8);
    let mut aborts = mp::Process::new(|_: ()| std::process::abort(), ());
    // A target's result is treated as main's (std's Termination).
    let mut errs = mp::Process::new(|_: ()| -> Result<(), String> { Err("no".into()) }, ());
    let mut oks = mp::Process::new(|_: ()| -> Result<(), String> { Ok(()) }, ());
    let mut code = mp::Process::new(|n: u8| std::process::ExitCode::from(n), 9);
    let mut all = [
        &mut ok,
        &mut panics,
        &mut exits,
        &mut aborts,
        &mut errs,
        &mut oks,
        &mut code,
    ];
    for p in all.iter_mut() {
        p.start().unwrap();
    }
    for p in all.iter_mut() {
        p.join().unwrap();
    }
    assert_eq!(errs.exitcode(), Some(1));
    assert!(errs.panic_error().is_none());
    assert_eq!(oks.exitcode(), Some(0));
    assert_eq!(code.exitcode(), Some(9));
    assert_eq!(ok.exitcode(), Some(0));
    assert!(ok.panic_error().is_none());
    assert_eq!(panics.exitcode(), Some(1));
    match panics.panic_error() {
        Some(mp::Error::Remote {
            message,
            location,
            process,
            ..
        }) => {
            assert_eq!(message, "boom in child");
            assert!(location.unwrap().contains("tests/process.rs"));
            assert_eq!(process, panics.name());
        }
        other => panic!("expected a Remote error, got {other:?}"),
    }
    assert_eq!(exits.exitcode(), Some(8));
    assert_eq!(aborts.exitcode(), Some(-6));
}

/// CPython's `_kill_process(meth)`: a daemon sleeper, signalled by `meth`;
/// its exit code.
fn kill_process(meth: fn(&mut mp::Process) -> mp::Result<()>) -> Option<i32> {
    let mut p = mp::Process::new(sleeper, 100);
    p.set_daemon(true);
    p.start().unwrap();
    assert!(p.is_alive());
    assert!(
        mp::active_children()
            .iter()
            .any(|c| Some(c.pid()) == p.pid())
    );
    assert_eq!(p.exitcode(), None);
    // join(0) on a running process returns at once and it stays alive.
    let t0 = Instant::now();
    assert!(!p.join_timeout(Duration::ZERO).unwrap());
    assert!(t0.elapsed() < SHORT);
    assert!(p.is_alive());
    meth(&mut p).unwrap();
    within(SHORT, "join a signalled process", move || {
        p.join().unwrap();
        assert!(!p.is_alive());
        assert!(
            mp::active_children()
                .iter()
                .all(|c| Some(c.pid()) != p.pid())
        );
        // Joining again, and signalling an exited process, are no-ops.
        p.join().unwrap();
        meth(&mut p).unwrap();
        p.exitcode()
    })
}

#[test]
fn test_terminate() {
    let _g = serial();
    assert_eq!(kill_process(mp::Process::terminate), Some(-15));
}

#[test]
fn test_kill() {
    let _g = serial();
    assert_eq!(kill_process(mp::Process::kill), Some(-9));
}

#[test]
fn test_active_children() {
    let _g = serial();
    let mut p = mp::Process::new(sleeper, 60);
    assert!(mp::active_children().is_empty());
    p.set_daemon(true);
    p.start().unwrap();
    assert!(
        mp::active_children()
            .iter()
            .any(|c| Some(c.pid()) == p.pid())
    );
    p.terminate().unwrap();
    within(SHORT, "join", move || {
        p.join().unwrap();
        assert!(
            mp::active_children()
                .iter()
                .all(|c| Some(c.pid()) != p.pid())
        );
    });
}

#[test]
fn test_sentinel() {
    let _g = serial();
    let p0 = mp::Process::new(|_: ()| (), ());
    // No sentinel before start: Python's ValueError.
    assert!(matches!(
        mp::connection::wait(&[&p0], Some(Duration::ZERO)),
        Err(mp::Error::Value(_))
    ));
    let e = mp::Event::new().unwrap();
    let mut p = mp::Process::new(
        |e: mp::Event| assert!(e.wait_timeout(Duration::from_secs(60))),
        e.clone(),
    );
    p.start().unwrap();
    assert!(
        mp::connection::wait(&[&p], Some(Duration::ZERO))
            .unwrap()
            .is_empty()
    );
    e.set();
    within(SHORT, "sentinel turns ready", move || {
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert_eq!(mp::connection::wait(&[&p], Some(SHORT)).unwrap().len(), 1);
    });
}

#[test]
fn test_close() {
    let _g = serial();
    let leaks = LeakCheck::new();
    let (rx, tx) = mp::pipe(false).unwrap();
    let mut p = mp::Process::new(
        |rx: mp::Connection| {
            rx.recv::<()>().unwrap();
            std::process::exit(0)
        },
        rx,
    );
    p.set_daemon(true);
    p.start().unwrap();
    assert!(p.is_alive());
    // Still running: cannot close.
    assert!(matches!(p.close(), Err(mp::Error::Value(m)) if m.contains("still running")));
    tx.send(&()).unwrap();
    let mut p = within(SHORT, "join", move || {
        p.join().unwrap();
        p
    });
    assert!(!p.is_alive());
    assert_eq!(p.exitcode(), Some(0));
    let pid = p.pid();
    p.close().unwrap();
    let closed = |r: mp::Result<()>| matches!(r, Err(mp::Error::Value(m)) if m.contains("closed"));
    assert!(closed(p.join()));
    assert!(closed(p.terminate()));
    assert!(closed(p.kill()));
    assert!(closed(p.start()));
    assert!(matches!(p.join_timeout(ms(1)), Err(mp::Error::Value(_))));
    // Unlike Python (ValueError), these keep answering after close.
    assert!(!p.is_alive());
    assert_eq!(p.exitcode(), Some(0));
    assert_eq!(p.pid(), pid);
    assert!(format!("{p:?}").contains("closed"));
    // Closing twice is fine, and so is closing a process never started.
    p.close().unwrap();
    mp::Process::new(|_: ()| (), ()).close().unwrap();
    drop((p, tx));
    leaks.check();
}

#[test]
fn misuse_is_an_error() {
    let _g = serial();
    let mut p = mp::Process::new(|_: ()| (), ());
    assert!(matches!(p.join(), Err(mp::Error::Value(_))));
    assert!(matches!(p.terminate(), Err(mp::Error::Value(_))));
    assert!(matches!(p.join_timeout(ms(1)), Err(mp::Error::Value(_))));
    p.start().unwrap();
    assert!(matches!(p.start(), Err(mp::Error::Value(m)) if m.contains("twice")));
    p.join().unwrap();
}

#[test]
fn join_timeout_waits_at_least_the_timeout() {
    let _g = serial();
    let mut p = mp::Process::new(sleeper, 60);
    p.start().unwrap();
    let start = Instant::now();
    assert!(!p.join_timeout(ms(200)).unwrap());
    assert!(start.elapsed() >= ms(200));
    p.kill().unwrap();
    assert!(p.join_timeout(SHORT).unwrap());
}

/// A value whose serialization always fails.
struct Unserializable;
impl serde::Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this value refuses to serialize"))
    }
}
impl<'de> serde::Deserialize<'de> for Unserializable {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Ok(Unserializable)
    }
}

#[test]
fn an_argument_that_fails_to_serialize_fails_start() {
    let _g = serial();
    let leaks = LeakCheck::new();
    let mut p = mp::Process::new(|_: Unserializable| (), Unserializable);
    match p.start() {
        Err(mp::Error::Encode(msg)) => assert!(msg.contains("Unserializable"), "{msg}"),
        other => panic!("expected an Encode error, got {other:?}"),
    }
    assert_eq!(p.pid(), None);
    drop(p);
    leaks.check();
}

// 100 short, 100 terminated (CPython: 100 with fork, 5 with spawn).
#[test]
fn test_many_processes() {
    let _g = serial();
    let leaks = LeakCheck::new();
    within(LONG, "200 children", || {
        let mut short: Vec<mp::Process> =
            (0..100).map(|_| mp::Process::new(|_: ()| (), ())).collect();
        for p in &mut short {
            p.start().unwrap();
        }
        for p in &mut short {
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(0));
        }
        let mut long: Vec<mp::Process> = (0..100).map(|_| mp::Process::new(sleeper, 60)).collect();
        for p in &mut long {
            p.start().unwrap();
        }
        for p in &mut long {
            p.terminate().unwrap();
        }
        for p in &mut long {
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(-15));
        }
    });
    leaks.check();
}

#[test]
fn two_hundred_children_in_a_row_leave_no_zombie_and_no_fd() {
    let _g = serial();
    let leaks = LeakCheck::new();
    within(LONG, "200 sequential children", || {
        for i in 0..200u32 {
            let mut p = mp::Process::new(|i: u32| assert!(i < 200), i);
            p.start().unwrap();
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(0));
        }
    });
    assert!(child_pids().is_empty());
    leaks.check();
}

// And the `Process-1:2` names.
#[test]
fn test_recursion() {
    let _g = serial();
    fn node((conn, depth): (mp::Connection, u32)) {
        conn.send(&(mp::current_process().name().to_string(), depth))
            .unwrap();
        if depth < 2 {
            for _ in 0..2 {
                let mut child = mp::Process::new(node, (conn.try_clone().unwrap(), depth + 1));
                child.start().unwrap();
                child.join().unwrap();
                assert_eq!(child.exitcode(), Some(0));
            }
        }
    }
    let (rx, tx) = mp::pipe(false).unwrap();
    let mut root = mp::Process::new(node, (tx, 0));
    root.start().unwrap();
    let root_name = root.name().to_string();
    let n: String = root_name.trim_start_matches("Process-").to_string();
    within(LONG, "nested children", move || {
        root.join().unwrap();
        assert_eq!(root.exitcode(), Some(0));
    });
    let mut got = Vec::new();
    while rx.poll().unwrap() {
        match rx.recv::<(String, u32)>() {
            Ok(m) => got.push(m),
            Err(mp::Error::Eof) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let expect: Vec<(String, u32)> = vec![
        (format!("Process-{n}"), 0),
        (format!("Process-{n}:1"), 1),
        (format!("Process-{n}:1:1"), 2),
        (format!("Process-{n}:1:2"), 2),
        (format!("Process-{n}:2"), 1),
        (format!("Process-{n}:2:1"), 2),
        (format!("Process-{n}:2:2"), 2),
    ];
    assert_eq!(got, expect);
}

#[test]
fn set_name_reaches_the_child() {
    let _g = serial();
    let (rx, tx) = mp::pipe(false).unwrap();
    let mut p = mp::Process::new(
        |tx: mp::Connection| tx.send(&mp::current_process().name().to_string()).unwrap(),
        tx,
    );
    p.set_name("worker-1");
    assert_eq!(p.name(), "worker-1");
    p.start().unwrap();
    assert_eq!(
        within(SHORT, "recv name", move || rx.recv::<String>().unwrap()),
        "worker-1"
    );
    p.join().unwrap();
}

#[test]
fn the_childs_stdin_is_dev_null() {
    let _g = serial();
    let mut p = mp::Process::new(
        |_: ()| {
            use std::io::Read;
            let mut buf = Vec::new();
            let n = std::io::stdin().read_to_end(&mut buf).unwrap();
            std::process::exit(if n == 0 { 0 } else { 3 });
        },
        (),
    );
    p.start().unwrap();
    within(SHORT, "join stdin reader", move || {
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    });
}

// The grandchild sees its parent die.
#[test]
fn test_parent_process() {
    let _g = serial();
    let (rx, tx) = mp::pipe(false).unwrap();
    let mut middle = mp::Process::new(
        |tx: mp::Connection| {
            let mut grandchild = mp::Process::new(
                |tx: mp::Connection| {
                    let parent = mp::parent_process().unwrap();
                    tx.send(&("grandchild", std::process::id(), parent.is_alive()))
                        .unwrap();
                    // Returns once the parent is gone (the test kills it).
                    let dead = parent.join_timeout(Duration::from_secs(60));
                    tx.send(&(
                        "parent-dead",
                        std::process::id(),
                        dead && !parent.is_alive(),
                    ))
                    .unwrap();
                },
                tx,
            );
            grandchild.set_daemon(false);
            grandchild.start().unwrap();
            std::thread::sleep(Duration::from_secs(60));
        },
        tx,
    );
    middle.start().unwrap();
    let (tag, _pid, alive): (String, u32, bool) = within(SHORT, "grandchild hello", {
        let rx = rx.try_clone().unwrap();
        move || rx.recv().unwrap()
    });
    assert_eq!(tag, "grandchild");
    assert!(alive);
    middle.kill().unwrap();
    middle.join().unwrap();
    let (tag, _pid, dead): (String, u32, bool) =
        within(SHORT, "grandchild sees death", move || rx.recv().unwrap());
    assert_eq!(tag, "parent-dead");
    assert!(dead);
}

fn pid_exists(pid: u32) -> bool {
    // A zombie still has a /proc entry; count only live, unreaped-or-not states.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn daemon_children_die_with_a_sigkilled_parent() {
    let _g = serial();
    let (rx, tx) = mp::pipe(false).unwrap();
    let mut middle = mp::Process::new(
        |tx: mp::Connection| {
            let mut daemon =
                mp::Process::new(|_: ()| std::thread::sleep(Duration::from_secs(3600)), ());
            daemon.set_daemon(true);
            daemon.start().unwrap();
            tx.send(&daemon.pid().unwrap()).unwrap();
            // A dropped handle changes nothing: the registry keeps the
            // daemon's socket, whose hang-up at our death it waits for.
            drop(daemon);
            std::thread::sleep(Duration::from_secs(3600));
        },
        tx,
    );
    middle.start().unwrap();
    let daemon_pid: u32 = within(SHORT, "daemon pid", move || rx.recv().unwrap());
    assert!(pid_exists(daemon_pid));
    middle.kill().unwrap();
    middle.join().unwrap();
    within(
        SHORT,
        "daemon exits after its parent's SIGKILL",
        move || {
            while pid_exists(daemon_pid) {
                std::thread::sleep(ms(10));
            }
        },
    );
}

/// Waits (hang-guarded) until `pid` is no longer among `active_children()`,
/// which reaps it.
fn wait_until_reaped(pid: u32) {
    within(SHORT, "the child is reaped", move || {
        // Polling a child's exit from outside its handle: a hang guard.
        while mp::active_children().iter().any(|c| c.pid() == pid) {
            std::thread::sleep(ms(10));
        }
    });
}

// Python (and std::thread::JoinHandle): dropping the handle neither waits nor
// kills; the child runs on, stays in active_children() and is reaped later.
#[test]
fn dropping_a_handle_neither_waits_nor_kills() {
    let _g = serial();
    let leaks = LeakCheck::new();
    for daemon in [false, true] {
        let (parent_end, child_end) = mp::pipe(true).unwrap();
        let mut p = mp::Process::new(
            |conn: mp::Connection| {
                // Runs until the parent asks, long after its handle is gone.
                let n: u32 = conn.recv().unwrap();
                conn.send(&(n + 1)).unwrap();
            },
            child_end,
        );
        p.set_daemon(daemon);
        p.start().unwrap();
        let pid = p.pid().unwrap();
        let t0 = Instant::now();
        drop(p);
        assert!(t0.elapsed() < SHORT);
        assert!(pid_exists(pid), "daemon={daemon}");
        assert!(mp::active_children().iter().any(|c| c.pid() == pid));
        let reply = within(SHORT, "the orphaned child answers", move || {
            parent_end.send(&41u32).unwrap();
            parent_end.recv::<u32>().unwrap()
        });
        assert_eq!(reply, 42, "daemon={daemon}");
        wait_until_reaped(pid);
    }
    leaks.check();
}

// The exit rule applies to a child too: a child that returns from its target
// waits for the non-daemon grandchildren it started and dropped.
#[test]
fn a_child_waits_for_its_children_at_exit() {
    let _g = serial();
    let leaks = LeakCheck::new();
    let (rx, tx) = mp::pipe(false).unwrap();
    let mut p = mp::Process::new(
        |tx: mp::Connection| {
            for i in 0..2u32 {
                let mut g = mp::Process::new(
                    |(tx, i): (mp::Connection, u32)| {
                        std::thread::sleep(Duration::from_millis(200));
                        tx.send(&i).unwrap();
                    },
                    (tx.try_clone().unwrap(), i),
                );
                g.set_daemon(false);
                g.start().unwrap();
            }
        },
        tx,
    );
    p.start().unwrap();
    let got = within(LONG, "join the child", move || {
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        // Both grandchildren finished before the child's exit: their messages
        // are there without waiting, then end of file (no writer is left).
        let mut got = Vec::new();
        while rx.poll().unwrap() {
            match rx.recv::<u32>() {
                Ok(i) => got.push(i),
                Err(mp::Error::Eof) => break,
                Err(e) => panic!("{e}"),
            }
        }
        got.sort();
        got
    });
    assert_eq!(got, vec![0, 1]);
    leaks.check();
}

// `close()` releases the handle's fds; a joined Process holds at most one.
#[test]
fn a_joined_process_holds_at_most_one_fd() {
    let _g = serial();
    let before = open_fds();
    let mut p = mp::Process::new(|_: ()| (), ());
    p.start().unwrap();
    within(SHORT, "join", move || {
        p.join().unwrap();
        let held = open_fds().difference(&before).count();
        assert!(held <= 1, "a joined Process holds {held} fds");
        p.close().unwrap();
        assert_eq!(open_fds().difference(&before).count(), 0);
    });
}

/// Runs `tests/bin/exit_children.rs` in `mode` with a fresh directory; its
/// output and the directory.
fn run_exit_children(mode: &str) -> (std::process::Output, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "mp-exit-children-{}-{mode}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = env!("CARGO_BIN_EXE_mp-test-exit-children");
    let out = within(LONG, "the program exits", {
        let dir = dir.clone();
        let mode = mode.to_string();
        move || {
            std::process::Command::new(exe)
                .arg(&mode)
                .arg(&dir)
                .output()
                .unwrap()
        }
    });
    (out, dir)
}

// Python's exit handler joins the non-daemon children: eight starts whose
// handles are dropped at once take far less than one child's 300 ms sleep
// each (sequential joins would take 2.4 s), and the program's exit, by
// return from main or by std::process::exit, waits for all eight.
#[test]
fn the_programs_exit_waits_for_its_non_daemon_children() {
    let _g = serial();
    for mode in ["non-daemon-return", "non-daemon-exit"] {
        let (out, dir) = run_exit_children(mode);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{mode}: {out:?}");
        let starts_ms: u64 = stdout
            .trim()
            .strip_prefix("starts_ms=")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{mode}: unexpected output {stdout:?}"));
        assert!(starts_ms < 1000, "{mode}: 8 starts took {starts_ms} ms");
        let mut done: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect();
        done.sort();
        let expect: Vec<String> = (0..8).map(|i| format!("{i}\n")).collect();
        assert_eq!(done, expect, "{mode}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

// Python's exit handler terminates the daemon children: a program that
// returns from main with a daemon that would sleep an hour exits at once, and
// the daemon is gone (terminated and reaped before the program ended).
#[test]
fn the_programs_exit_terminates_its_daemon_children() {
    let _g = serial();
    let t0 = Instant::now();
    let (out, dir) = run_exit_children("daemon");
    assert!(out.status.success(), "{out:?}");
    assert!(t0.elapsed() < SHORT);
    let pid: u32 = std::fs::read_to_string(dir.join("daemon-pid"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        !pid_exists(pid),
        "the daemon child {pid} outlived its parent"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

// A target's result is treated as main's: `Err(e)` exits 1 and prints
// `Error: {e:?}` on the child's stderr; an `ExitCode` exits with it.
#[test]
fn a_target_returning_err_exits_1_and_prints_it() {
    let _g = serial();
    let (out, dir) = run_exit_children("targets");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "err=Some(1) exitcode=Some(7)"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l == r#"Error: TargetFailed { reason: "the target gave up" }"#),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

// The parent keeps no reference to the target's argument once the child runs
// (CPython: the target and its args are released at start). Here a
// connection moved into the child is closed in the parent.
#[test]
fn test_lose_target_ref() {
    let _g = serial();
    let (a, b) = mp::pipe(true).unwrap();
    let mut p = mp::Process::new(|b: mp::Connection| b.send(&1u8).unwrap(), b);
    p.start().unwrap();
    within(SHORT, "eof after the child exits", move || {
        assert_eq!(a.recv::<u8>().unwrap(), 1);
        // The parent kept no copy of `b`, so the child's exit closes the last one.
        assert!(matches!(a.recv::<u8>(), Err(mp::Error::Eof)));
    });
    p.join().unwrap();
}

#[test]
fn debug_shows_state() {
    let _g = serial();
    let mut p = mp::Process::new(|_: ()| (), ());
    assert!(format!("{p:?}").contains("initial"));
    p.start().unwrap();
    p.join().unwrap();
    let s = format!("{p:?}");
    assert!(
        s.contains("stopped") && s.contains("exitcode: Some(0)"),
        "{s}"
    );
}

// CPython: _TestSubclassingProcess.test_subclassing (the upper-case echo server)
#[test]
fn upper_case_echo_server() {
    let _g = serial();
    let (parent_end, child_end) = mp::pipe(true).unwrap();
    let mut p = mp::Process::new(
        |conn: mp::Connection| {
            while let Ok(s) = conn.recv::<String>() {
                conn.send(&s.to_uppercase()).unwrap();
            }
        },
        child_end,
    );
    p.start().unwrap();
    within(SHORT, "echo", move || {
        for word in ["hello", "world", ""] {
            parent_end.send(&word).unwrap();
            assert_eq!(parent_end.recv::<String>().unwrap(), word.to_uppercase());
        }
        // Closing our end ends the child's loop with Eof, and it exits 0.
        parent_end.close();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    });
}

#[test]
fn a_child_killed_from_outside_during_start_up_names_the_signal() {
    let _g = serial();
    let mut p = mp::Process::new(sleeper, 60);
    p.start().unwrap();
    // Not p.kill(): an outside killer, as the OOM killer would be.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(p.pid().unwrap() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    match within(SHORT, "join killed child", move || (p.join(), p.exitcode())) {
        // Killed before it answered: the error says how it died.
        (Err(mp::Error::Spawn(msg)), code) => {
            assert!(msg.contains("SIGKILL"), "{msg}");
            assert!(!msg.contains("mp::init()"), "{msg}");
            assert_eq!(code, Some(-9));
        }
        // Killed after it answered: an ordinary exit code.
        (Ok(()), code) => assert_eq!(code, Some(-9)),
        (other, _) => panic!("unexpected {other:?}"),
    }
}
