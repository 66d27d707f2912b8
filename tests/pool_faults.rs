//! A worker dying mid-task: the task fails with `WorkerLost`, everything else
//! completes, and the pool replaces the worker. CPython's pool hangs forever
//! here (cpython#66587, bpo-22393); these scenarios are ours, modelled on
//! pebble's `ProcessExpired` and `concurrent.futures`' test_deadlock.py crash
//! cases (a crash while running the function).

multiprocess::test_support!();
mod common;

use common::{LONG, LeakCheck, within};
use multiprocess as mp;

/// How a task dies.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
enum Death {
    /// The parent sends SIGKILL.
    Killed,
    /// `std::process::abort()` (SIGABRT).
    Abort,
    /// A segmentation fault.
    Segfault,
    /// `std::process::exit(3)`.
    Exit,
}

impl Death {
    fn exitcode(self) -> i32 {
        match self {
            Death::Killed => -libc::SIGKILL,
            Death::Abort => -libc::SIGABRT,
            Death::Segfault => -libc::SIGSEGV,
            Death::Exit => 3,
        }
    }
}

/// Tells the parent its pid, then dies as asked.
fn die((how, tell): (Death, mp::Connection)) -> u32 {
    tell.send(&std::process::id()).unwrap();
    match how {
        Death::Killed => loop {
            std::thread::park();
        },
        Death::Abort => std::process::abort(),
        Death::Segfault => {
            // A real SIGSEGV raised in the worker, as a wild pointer would.
            // Reset the handler first: std's stack-overflow handler is there.
            unsafe {
                libc::signal(libc::SIGSEGV, libc::SIG_DFL);
                libc::raise(libc::SIGSEGV);
            }
            unreachable!("SIGSEGV is fatal")
        }
        Death::Exit => std::process::exit(3),
    }
}

fn lost_exactly_that_task(how: Death) {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, &format!("{how:?}"), move || {
        let pool = mp::Pool::new(2).unwrap();
        let before: Vec<_> = (0..20)
            .map(|i| pool.apply_async(|i: u64| i * 3, i).unwrap())
            .collect();
        let (rx, tx) = mp::pipe(false).unwrap();
        let doomed = pool.apply_async(die, (how, tx)).unwrap();
        let pid: u32 = rx.recv().unwrap();
        let after: Vec<_> = (20..40)
            .map(|i| pool.apply_async(|i: u64| i * 3, i).unwrap())
            .collect();
        if let Death::Killed = how {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
        }
        match doomed.get() {
            Err(mp::Error::WorkerLost { pid: p, exitcode }) => {
                assert_eq!(p, pid);
                assert_eq!(exitcode, Some(how.exitcode()));
            }
            other => panic!("expected WorkerLost, got {other:?}"),
        }
        for (i, r) in before.iter().chain(&after).enumerate() {
            assert_eq!(r.get().unwrap(), i as u64 * 3, "task {i}");
        }
        let pids = pool.worker_pids();
        assert_eq!(pids.len(), 2, "a replacement started");
        assert!(!pids.contains(&pid));
        assert_eq!(
            pool.map(|x: u64| x + 1, 0..10).unwrap(),
            (1..11).collect::<Vec<_>>()
        );
        pool.close();
        pool.join().unwrap();
    });
}

#[test]
fn sigkill_mid_task() {
    lost_exactly_that_task(Death::Killed);
}

#[test]
fn abort_mid_task() {
    lost_exactly_that_task(Death::Abort);
}

#[test]
fn segfault_mid_task() {
    lost_exactly_that_task(Death::Segfault);
}

#[test]
fn exit_mid_task() {
    lost_exactly_that_task(Death::Exit);
}

#[test]
fn a_lost_chunk_fails_the_whole_map_and_the_pool_goes_on() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "lost chunk", || {
        let pool = mp::Pool::new(2).unwrap();
        let r = pool.map_with_chunksize(
            |x: i32| {
                if x == 7 {
                    std::process::exit(9);
                }
                x
            },
            0..20,
            2,
        );
        assert!(
            matches!(
                r,
                Err(mp::Error::WorkerLost {
                    exitcode: Some(9),
                    ..
                })
            ),
            "{r:?}"
        );
        assert_eq!(pool.map(|x: i32| -x, 0..4).unwrap(), [0, -1, -2, -3]);
        // imap: only the lost chunk's item is an error.
        let got: Vec<mp::Result<i32>> = pool
            .imap(
                |x: i32| if x == 3 { std::process::exit(4) } else { x },
                0..6,
            )
            .unwrap()
            .collect();
        assert!(matches!(
            got[3],
            Err(mp::Error::WorkerLost {
                exitcode: Some(4),
                ..
            })
        ));
        let ok: Vec<i32> = got.into_iter().filter_map(Result::ok).collect();
        assert_eq!(ok, [0, 1, 2, 4, 5]);
    });
}

#[test]
fn tasks_sent_but_not_started_go_to_another_worker() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "requeue", || {
        // One worker, short tasks: the pool prefetches the next task while one
        // runs. The running task kills its worker; the prefetched one must be
        // run by the replacement, not failed.
        let pool = mp::Pool::new(1).unwrap();
        for round in 0..30 {
            for i in 0..5 {
                assert_eq!(pool.apply(|x: u32| x, i).unwrap(), i);
            }
            let doomed = pool
                .apply_async(|_: ()| -> u32 { std::process::exit(5) }, ())
                .unwrap();
            let next: Vec<_> = (0..5)
                .map(|i| pool.apply_async(|x: u32| x + 100, i).unwrap())
                .collect();
            assert!(
                matches!(
                    doomed.get(),
                    Err(mp::Error::WorkerLost {
                        exitcode: Some(5),
                        ..
                    })
                ),
                "round {round}"
            );
            for (i, r) in next.iter().enumerate() {
                assert_eq!(r.get().unwrap(), i as u32 + 100, "round {round}");
            }
        }
    });
}

#[test]
fn many_deaths_in_a_row_never_hang() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "many deaths", || {
        let pool = mp::Pool::new(2).unwrap();
        let results: Vec<_> = (0..40)
            .map(|i| {
                pool.apply_async(
                    |i: u32| if i % 4 == 0 { std::process::exit(1) } else { i },
                    i,
                )
                .unwrap()
            })
            .collect();
        for (i, r) in results.iter().enumerate() {
            match r.get() {
                Ok(v) => assert_eq!(v as usize, i),
                Err(mp::Error::WorkerLost {
                    exitcode: Some(1), ..
                }) => assert_eq!(i % 4, 0),
                Err(e) => panic!("task {i}: {e:?}"),
            }
        }
        pool.close();
        pool.join().unwrap();
    });
}
