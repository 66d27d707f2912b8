//! Start-up guards: another build, a binary that forgot `mp::init()`, and one
//! that hangs before it. None of them may hang the parent.
//!
//! CPython: `TestNoForkBomb` (a script without the `__main__` guard fails
//! instead of recursing). Each case here uses `set_executable`, which is
//! process-wide, so the cases run one after another in one test.

multiprocess::test_support!();
mod common;

use common::*;
use multiprocess as mp;

fn run_with(exe: &str) -> (mp::Result<()>, Option<i32>) {
    mp::set_executable(exe);
    // Spawn's guards (a child process that starts and fails); the forkserver's
    // are in tests/start_methods.rs.
    let mut p = mp::get_context(mp::StartMethod::Spawn).process(|x: u32| assert_eq!(x, 1), 1u32);
    let started = p.start();
    mp::reset_executable();
    if let Err(e) = started {
        return (Err(e), None);
    }
    within(LONG, "join a child that cannot start", move || {
        let r = p.join();
        (r, p.exitcode())
    })
}

#[test]
fn children_that_cannot_start_give_clear_errors() {
    let _g = serial();
    let leaks = LeakCheck::new();

    // Another build refuses the work.
    let (r, code) = run_with(env!("CARGO_BIN_EXE_mp-test-other-build"));
    // (If it has answered and exited before the parent wrote all of the
    // work, `start()` fails instead, with the same words.)
    match r {
        Err(mp::Error::Spawn(msg)) => {
            assert!(msg.contains("another build"), "{msg}");
            assert!(code == Some(86) || code.is_none(), "{code:?} {msg}");
        }
        other => panic!("expected a Spawn error for another build, got {other:?}"),
    }

    // A binary without init(): its main runs and exits without answering.
    // Usually `start()` succeeds and `join()` reports it; when the child is
    // gone before the parent has written its work, `start()` itself fails
    // (EPIPE) and reaps it, with the same hint and the exit code in the text.
    let (r, code) = run_with(env!("CARGO_BIN_EXE_mp-test-no-init"));
    match r {
        Err(mp::Error::Spawn(msg)) => {
            assert!(msg.contains("mp::init()"), "{msg}");
            assert!(
                code == Some(0) || (code.is_none() && msg.contains("exited with code 0")),
                "{code:?} {msg}"
            );
        }
        other => panic!("expected a Spawn error for a missing init(), got {other:?}"),
    }

    // A binary without init() that hangs: killed after the start timeout.
    mp::set_start_timeout(ms(1500));
    let (r, code) = run_with(env!("CARGO_BIN_EXE_mp-test-no-init-hang"));
    mp::set_start_timeout(std::time::Duration::from_secs(30));
    match r {
        Err(mp::Error::Spawn(msg)) => assert!(msg.contains("did not start"), "{msg}"),
        other => panic!("expected a Spawn error for a hanging child, got {other:?}"),
    }
    assert_eq!(code, Some(-9));

    // And the normal case still works afterwards.
    let mut p = mp::Process::new(|x: u32| assert_eq!(x, 1), 1u32);
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    drop(p);
    leaks.check();
}
