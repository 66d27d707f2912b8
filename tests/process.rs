//! `Process` with real child processes.
//!
//! Ported scenarios from cpython: Lib/test/_test_multiprocessing.py (3.11.7,
//! PSF licence): `_TestProcess` and `_TestSubclassingProcess`. Changes: Python's
//! `args` tuple is one serde argument; exceptions are panics; `sys.exit(n)` is
//! `std::process::exit(n)`; children report back over a `Pipe` instead of a
//! queue.

multiprocess::test_support!();
mod common;

use std::time::{Duration, Instant};

use common::*;
use multiprocess as mp;

fn sleeper(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs));
}

// CPython: _TestProcess.test_current
#[test]
fn current_process_in_the_parent() {
    let _g = serial();
    let me = mp::current_process();
    assert_eq!(me.name(), "MainProcess");
    assert_eq!(me.pid(), std::process::id());
    assert!(me.is_alive());
    assert!(mp::parent_process().is_none());
    assert!(mp::cpu_count() >= 1);
}

// CPython: _TestProcess.test_process
#[test]
fn lifecycle_and_what_the_child_sees() {
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
    let got: (i64, String, String, u32, u32, String) =
        within(SHORT, "recv from child", move || parent_end.recv().unwrap());
    assert_eq!(got.0, 7);
    assert_eq!(got.1, "x");
    assert_eq!(got.2, name);
    assert_eq!(Some(got.3), p.pid());
    assert_eq!(got.4, std::process::id());
    assert_eq!(got.5, "MainProcess");
    p.join().unwrap();
    assert!(!p.is_alive());
    assert_eq!(p.exitcode(), Some(0));
    assert!(
        mp::active_children()
            .iter()
            .all(|c| Some(c.pid()) != p.pid())
    );
    drop(p);
    leaks.check();
}

// CPython: _TestSubclassingProcess.test_sys_exit, test_stderr_flush
#[test]
fn exit_codes_follow_python() {
    let _g = serial();
    let mut ok = mp::Process::new(|_: ()| (), ());
    let mut panics = mp::Process::new(|_: ()| panic!("boom in child"), ());
    let mut exits = mp::Process::new(|n: i32| std::process::exit(n), 8);
    let mut aborts = mp::Process::new(|_: ()| std::process::abort(), ());
    for p in [&mut ok, &mut panics, &mut exits, &mut aborts] {
        p.start().unwrap();
    }
    for p in [&mut ok, &mut panics, &mut exits, &mut aborts] {
        p.join().unwrap();
    }
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

// CPython: _TestProcess.test_terminate, test_kill
#[test]
fn terminate_and_kill_give_minus_signal() {
    let _g = serial();
    let mut t = mp::Process::new(sleeper, 60);
    let mut k = mp::Process::new(sleeper, 60);
    t.start().unwrap();
    k.start().unwrap();
    // join(0) on a running process returns at once and it stays alive.
    assert!(!t.join_timeout(Duration::ZERO).unwrap());
    assert!(t.is_alive());
    t.terminate().unwrap();
    k.kill().unwrap();
    within(SHORT, "join terminated", move || {
        t.join().unwrap();
        k.join().unwrap();
        assert_eq!(t.exitcode(), Some(-15));
        assert_eq!(k.exitcode(), Some(-9));
        assert!(!t.is_alive());
        // Signalling an exited process is a no-op.
        t.terminate().unwrap();
        k.kill().unwrap();
    });
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

// CPython: _TestProcess.test_many_processes (100 short, 100 terminated)
#[test]
fn a_hundred_short_and_a_hundred_terminated() {
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

// CPython: _TestProcess.test_recursion, and the `Process-1:2` names
#[test]
fn nested_children_run_depth_first_with_python_names() {
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

// CPython: _TestProcess.test_parent_process (the grandchild sees its parent die)
#[test]
fn a_child_sees_its_parent_die() {
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

#[test]
fn dropping_a_daemon_kills_it_and_dropping_a_child_joins_it() {
    let _g = serial();
    let leaks = LeakCheck::new();
    let mut d = mp::Process::new(sleeper, 3600);
    d.set_daemon(true);
    assert!(d.daemon());
    d.start().unwrap();
    within(SHORT, "drop daemon", move || drop(d));

    let (rx, tx) = mp::pipe(false).unwrap();
    let mut p = mp::Process::new(
        |tx: mp::Connection| {
            std::thread::sleep(ms(100));
            tx.send(&"finished").unwrap();
        },
        tx,
    );
    p.start().unwrap();
    within(SHORT, "drop joins", move || drop(p));
    // The child finished its work before drop returned.
    assert_eq!(rx.recv::<String>().unwrap(), "finished");
    drop(rx);
    leaks.check();
}

#[test]
fn handles_moved_into_a_child_are_closed_in_the_parent() {
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
