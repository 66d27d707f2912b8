//! Parent death and Ctrl-C.
//!
//! * A child plays the parent: it starts a daemon child, a non-daemon child, a
//!   Manager and a Pool (its workers busy in a task), reports their pids, and
//!   is killed with SIGKILL. The daemon child, the manager server and the pool
//!   workers exit within a second or two; the non-daemon child lives on (as in
//!   Python) and is killed by the test.
//! * A child program in its own process group runs a `Pool::map` and gets
//!   SIGINT on its whole group (what Ctrl-C in a terminal does): the program
//!   ends promptly, no worker or server is left, and stderr holds no storm of
//!   panic messages (CPython's KeyboardInterrupt-in-Pool problem: one
//!   traceback per worker, or a hang).
//!
//! CPython: `_TestProcess.test_parent_process` (a daemon's parent dies),
//! `TestResourceTracker`, bpo-8296 / bpo-36368 (Ctrl-C with a Pool or a
//! Manager).

multiprocess::test_support!();
mod common;
mod faults_common;

use common::{LONG, LeakCheck, SHORT, within};
use faults_common::{park_forever, pid_gone, wait_until};
use multiprocess as mp;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// The pids a stand-in parent reports.
type Pids = (u32, u32, u32, Vec<u32>);

fn stand_in_parent(conn: mp::Connection) {
    let mut daemon = mp::Process::new(|_: ()| park_forever(), ());
    daemon.set_daemon(true);
    daemon.start().unwrap();
    let mut plain = mp::Process::new(|_: ()| park_forever(), ());
    plain.start().unwrap();
    let m = mp::Manager::new().unwrap();
    let pool = mp::Pool::new(2).unwrap();
    assert_eq!(pool.map(|x: u8| x, 0..4u8).unwrap(), vec![0, 1, 2, 3]);
    // Keep one worker busy in a task when the parent dies.
    let busy = pool
        .apply_async(
            |_: ()| -> u8 {
                park_forever();
            },
            (),
        )
        .unwrap();
    let pids: Pids = (
        daemon.pid().unwrap(),
        plain.pid().unwrap(),
        m.pid().unwrap(),
        pool.worker_pids(),
    );
    conn.send(&pids).unwrap();
    let _ = busy.get();
    park_forever();
}

// The parent is killed with SIGKILL: its daemon child, its manager server and
// its pool workers exit; its non-daemon child survives.
#[test]
fn daemons_manager_and_pool_workers_exit_when_the_parent_is_killed() {
    let _s = common::serial();
    let _leaks = LeakCheck::new();
    within(LONG, "parent killed", || {
        let (ours, theirs) = mp::pipe(true).unwrap();
        let mut parent = mp::Process::new(stand_in_parent, theirs);
        parent.start().unwrap();
        let (daemon, plain, server, workers): Pids = ours.recv().unwrap();
        assert_eq!(workers.len(), 2);
        parent.kill().unwrap();
        parent.join().unwrap();
        assert_eq!(parent.exitcode(), Some(-9));
        let killed = Instant::now();
        let mut orphans = vec![("daemon child", daemon), ("manager server", server)];
        orphans.extend(workers.iter().map(|&w| ("pool worker", w)));
        // Each must exit; how fast depends on the machine's load, so only a
        // hang guard bounds it (the time is printed, not asserted).
        for &(what, pid) in &orphans {
            wait_until(SHORT, &format!("{what} {pid} exits"), || pid_gone(pid));
        }
        let took = killed.elapsed();
        println!(
            "faults: parent death: daemon child, manager server and {} pool workers gone {took:?} after SIGKILL",
            workers.len()
        );
        // A non-daemon child outlives its parent, as in Python.
        assert!(!pid_gone(plain), "the non-daemon child survives its parent");
        kill(Pid::from_raw(plain as i32), Signal::SIGKILL).unwrap();
        wait_until(SHORT, "the non-daemon child is gone", || pid_gone(plain));
    });
}

/// What the program in its own process group reports once its pool runs.
type Started = (i32, Vec<u32>, u32);

fn program((conn, stderr_path): (mp::Connection, String)) {
    // A program started from a terminal has SIGINT at its default action; this
    // test process may not (a shell ignores SIGINT in the background jobs it
    // starts, and the ignore is inherited), so restore it as a terminal would.
    // SAFETY: SIG_DFL installs no handler code.
    unsafe { nix::sys::signal::signal(Signal::SIGINT, nix::sys::signal::SigHandler::SigDfl) }
        .unwrap();
    nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0)).unwrap();
    let f = std::fs::File::create(&stderr_path).unwrap();
    nix::unistd::dup2_stderr(&f).unwrap();
    let m = mp::Manager::new().unwrap();
    let pool = mp::Pool::new(4).unwrap();
    let r = pool
        .map_async(
            |x: u64| {
                std::thread::sleep(Duration::from_millis(20)); // a task's work
                x
            },
            0..2_000u64,
        )
        .unwrap();
    let started: Started = (
        nix::unistd::getpgrp().as_raw(),
        pool.worker_pids(),
        m.pid().unwrap(),
    );
    conn.send(&started).unwrap();
    let _ = r.get();
    unreachable!("SIGINT ends the program first");
}

// Ctrl-C (SIGINT to the process group) while a pool runs: the program ends
// promptly, no worker or manager server is left, and stderr stays quiet.
#[test]
fn ctrl_c_while_a_pool_runs_ends_the_program_cleanly() {
    sigint_while_a_pool_runs(true);
}

// SIGINT to the program's process only (`kill -INT <pid>`): it dies, and its
// workers and manager server, which did not get the signal, exit because
// their parent died.
#[test]
fn sigint_to_the_parent_alone_ends_its_workers_too() {
    sigint_while_a_pool_runs(false);
}

fn sigint_while_a_pool_runs(whole_group: bool) {
    let _s = common::serial();
    let _leaks = LeakCheck::new();
    within(LONG, "ctrl-c", move || {
        let path = std::env::temp_dir().join(format!(
            "mp-faults-sigint-{}-{whole_group}",
            std::process::id()
        ));
        let (ours, theirs) = mp::pipe(true).unwrap();
        let mut prog = mp::Process::new(program, (theirs, path.to_string_lossy().into_owned()));
        prog.start().unwrap();
        let (pgid, workers, server): Started = ours.recv().unwrap();
        assert_eq!(pgid as u32, prog.pid().unwrap(), "its own process group");
        let sent = Instant::now();
        let target = if whole_group { -pgid } else { pgid };
        kill(Pid::from_raw(target), Signal::SIGINT).unwrap();
        prog.join().unwrap();
        let code = prog.exitcode();
        for &pid in workers.iter().chain([&server]) {
            wait_until(SHORT, &format!("{pid} exits"), || pid_gone(pid));
        }
        let took = sent.elapsed();
        let stderr = std::fs::read_to_string(&path).unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        let lines = stderr.lines().count();
        println!(
            "faults: SIGINT to the {}: program exit code {code:?}, {} workers and the manager server gone {took:?} after it, {lines} stderr lines",
            if whole_group {
                "process group (ctrl-c)"
            } else {
                "parent alone"
            },
            workers.len()
        );
        if lines > 0 {
            println!("faults: stderr of the program:\n{stderr}");
        }
        assert_eq!(code, Some(-libc::SIGINT), "the program dies of SIGINT");
        assert_eq!(
            lines, 0,
            "the program and its workers print nothing:\n{stderr}"
        );
    });
}
