//! `mp::futures`: `ProcessPoolExecutor`, `Future`, `wait`, `as_completed`,
//! with real worker processes.
//!
//! Ported from cpython: Lib/test/test_concurrent_futures/ (3.13.0, PSF
//! licence), the process-pool scenarios, grouped by CPython class in section
//! comments and named after the test they port. Changes: Python exceptions
//! become `Error` variants (`CancelledError` → `Cancelled`, `TimeoutError` →
//! `Timeout`, a remote exception → `Remote`, `RuntimeError` after shutdown →
//! `Closed`, `BrokenProcessPool` → `WorkerLost` for that one future, the
//! executor lives on); CPython's `time.sleep` tasks that only keep a future
//! unfinished become tasks blocked on a pipe that the test releases (no sleep
//! as synchronisation). Beyond CPython at the end: a SIGKILL while futures are
//! awaited under tokio, `cancel_running`, per-task timeouts, memory recycling.

multiprocess::test_support!();
mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{LONG, LeakCheck, ms, within};
use mp::futures::{MapOptions, ProcessPoolExecutor, ReturnWhen, as_completed, wait};
use multiprocess as mp;

/// Runs a test body with the leak check, one test at a time, under a guard.
fn run(name: &str, body: impl FnOnce() + Send + 'static) {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, name, body);
}

fn mul((a, b): (i64, i64)) -> i64 {
    a * b
}

/// Tells the parent it started (with its pid), then blocks until the test
/// sends a byte (CPython's `event.wait` / long sleep).
fn started_then_blocked((tell, wait): (mp::Connection, mp::Connection)) -> i64 {
    tell.send(&std::process::id()).unwrap();
    i64::from(wait.recv::<u8>().unwrap())
}

fn divide((a, b): (i64, i64)) -> i64 {
    if b == 0 {
        panic!("division by zero");
    }
    a / b
}

fn pid(_: ()) -> u32 {
    std::process::id()
}

fn sleep_ms(n: u64) -> u64 {
    std::thread::sleep(ms(n));
    n
}

/// A future running on a worker (it has told so), blocked until `release`
/// is sent to.
fn submit_blocked(ex: &ProcessPoolExecutor) -> (mp::futures::Future<i64>, mp::Connection) {
    let (tell_rx, tell) = mp::pipe(false).unwrap();
    let (wait_rx, release) = mp::pipe(false).unwrap();
    let f = ex.submit(started_then_blocked, (tell, wait_rx)).unwrap();
    let _pid: u32 = tell_rx.recv().unwrap();
    (f, release)
}

/// A future cancelled before it ran (CPython's `CANCELLED_FUTURE`): on an
/// executor of its own whose one worker is kept busy, so it waits and is
/// cancelled.
fn cancelled_future() -> mp::futures::Future<i64> {
    let ex = ProcessPoolExecutor::new(1).unwrap();
    let (busy, release) = submit_blocked(&ex);
    let f = ex.submit(mul, (1, 1)).unwrap();
    assert!(f.cancel());
    release.send(&1u8).unwrap();
    assert_eq!(busy.result().unwrap(), 1);
    f
}

// ---------------------------------------------------------------------------
// ExecutorTest

#[test]
fn test_submit() {
    run("test_submit", || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let f = ex.submit(|(b, e): (u64, u32)| b.pow(e), (2, 8)).unwrap();
        assert_eq!(f.result().unwrap(), 256);
    });
}

#[test]
fn test_map() {
    run("test_map", || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let items: Vec<(i64, i64)> = (0..10).map(|i| (i, i + 1)).collect();
        let got: Vec<i64> = ex
            .map(mul, items.clone())
            .unwrap()
            .collect::<mp::Result<_>>()
            .unwrap();
        let want: Vec<i64> = items.iter().map(|&(a, b)| a * b).collect();
        assert_eq!(got, want);
    });
}

#[test]
fn test_map_exception() {
    run("test_map_exception", || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let mut it = ex.map(divide, [(1, 1), (1, 0), (2, 1)]).unwrap();
        assert_eq!(it.next().unwrap().unwrap(), 1);
        match it.next() {
            Some(Err(mp::Error::Remote { message, .. })) => {
                assert_eq!(message, "division by zero")
            }
            other => panic!("expected the remote panic, got {other:?}"),
        }
        // Python's generator ends with the raise.
        assert!(it.next().is_none());
    });
}

#[test]
fn test_map_timeout() {
    run("test_map_timeout", || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let t0 = Instant::now();
        let mut it = ex
            .map_with(
                sleep_ms,
                [0u64, 0, 600_000],
                MapOptions::new().timeout(ms(300)),
            )
            .unwrap();
        let mut results = Vec::new();
        let err = loop {
            match it.next() {
                Some(Ok(v)) => results.push(v),
                Some(Err(e)) => break e,
                None => panic!("the map ended without the timeout"),
            }
        };
        assert_eq!(results, [0, 0]);
        assert!(matches!(err, mp::Error::Timeout), "{err:?}");
        assert!(t0.elapsed() >= ms(300));
        assert!(it.next().is_none());
        // The ten-minute task would hold shutdown: stop the workers.
        ex.terminate_workers();
    });
}

#[test]
fn test_max_workers_negative() {
    // Python: ValueError for max_workers <= 0.
    run("test_max_workers_negative", || {
        assert!(matches!(
            ProcessPoolExecutor::new(0),
            Err(mp::Error::Value(_))
        ));
    });
}

#[test]
fn test_shutdown_race_issue12456() {
    // Submits and shuts down at once: no hang, every future answered.
    run("test_shutdown_race_issue12456", || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let fs: Vec<_> = (0..20).map(|i| ex.submit(mul, (i, 2)).unwrap()).collect();
        ex.shutdown(true, false);
        for (i, f) in fs.iter().enumerate() {
            assert_eq!(f.result().unwrap(), i as i64 * 2);
        }
    });
}

// ---------------------------------------------------------------------------
// ProcessPoolExecutorTest

#[test]
fn test_killed_child() {
    // Python: the executor is broken (BrokenProcessPool). Ours: only that
    // future fails with WorkerLost; the executor replaces the worker.
    run("test_killed_child", || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let f = ex
            .submit(|code: i32| -> i32 { std::process::exit(code) }, 1)
            .unwrap();
        match f.result() {
            Err(mp::Error::WorkerLost { exitcode, .. }) => assert_eq!(exitcode, Some(1)),
            other => panic!("expected WorkerLost, got {other:?}"),
        }
        assert_eq!(ex.submit(mul, (6, 7)).unwrap().result().unwrap(), 42);
        assert_eq!(ex.worker_pids().len(), 2);
    });
}

#[test]
fn test_map_chunksize() {
    run("test_map_chunksize", || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let want: Vec<i64> = (0..40).map(|i| i * 2).collect();
        for chunksize in [1, 2, 5, 40, 100] {
            let got: Vec<i64> = ex
                .map_with(
                    |x: i64| x * 2,
                    0..40,
                    MapOptions::new().chunksize(chunksize),
                )
                .unwrap()
                .collect::<mp::Result<_>>()
                .unwrap();
            assert_eq!(got, want, "chunksize {chunksize}");
        }
        assert!(matches!(
            ex.map_with(|x: i64| x, 0..4, MapOptions::new().chunksize(0)),
            Err(mp::Error::Value(_))
        ));
    });
}

#[test]
fn test_map_buffersize() {
    // Python 3.14: buffersize bounds the read-ahead, so an endless input works.
    run("test_map_buffersize", || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        assert!(matches!(
            ex.map_with(|x: u64| x, 0u64.., MapOptions::new().buffersize(0)),
            Err(mp::Error::Value(_))
        ));
        for buffersize in [1, 2, 16] {
            let got: Vec<u64> = ex
                .map_with(
                    |x: u64| x * 3,
                    0u64..,
                    MapOptions::new().buffersize(buffersize),
                )
                .unwrap()
                .take(50)
                .collect::<mp::Result<_>>()
                .unwrap();
            assert_eq!(got, (0..50).map(|x| x * 3).collect::<Vec<_>>());
        }
    });
}

#[test]
fn test_map_buffersize_reads_ahead_at_most_buffersize() {
    // The input is read at most `buffersize` tasks ahead of the consumer.
    run("test_map_buffersize_reads_ahead", || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let (tx, rx) = mpsc::channel::<u64>();
        let input = (0u64..).inspect(move |i| {
            let _ = tx.send(*i);
        });
        let mut it = ex
            .map_with(|x: u64| x, input, MapOptions::new().buffersize(3))
            .unwrap();
        for want in 0..10 {
            assert_eq!(it.next().unwrap().unwrap(), want);
        }
        drop(it);
        let read: Vec<u64> = rx.iter().collect();
        // 10 consumed + at most 3 ahead (+1 read by the feeder as it stops).
        assert!(read.len() <= 14, "read {} items", read.len());
    });
}

#[test]
fn test_max_tasks_per_child() {
    run("test_max_tasks_per_child", || {
        let ex = ProcessPoolExecutor::builder()
            .max_workers(1)
            .max_tasks_per_child(3)
            .build()
            .unwrap();
        let p1 = ex.submit(pid, ()).unwrap().result().unwrap();
        assert_eq!(ex.submit(pid, ()).unwrap().result().unwrap(), p1);
        assert_eq!(ex.submit(pid, ()).unwrap().result().unwrap(), p1);
        let p2 = ex.submit(pid, ()).unwrap().result().unwrap();
        assert_ne!(p1, p2, "the worker was replaced after three tasks");
        assert!(matches!(
            ProcessPoolExecutor::builder()
                .max_tasks_per_child(0)
                .build(),
            Err(mp::Error::Value(_))
        ));
    });
}

#[test]
fn test_max_tasks_early_shutdown() {
    run("test_max_tasks_early_shutdown", || {
        let ex = ProcessPoolExecutor::builder()
            .max_workers(3)
            .max_tasks_per_child(1)
            .build()
            .unwrap();
        let fs: Vec<_> = (0..6).map(|i| ex.submit(mul, (i, i)).unwrap()).collect();
        ex.shutdown(true, false);
        for (i, f) in fs.iter().enumerate() {
            assert_eq!(f.result().unwrap(), (i * i) as i64);
        }
    });
}

// ---------------------------------------------------------------------------
// InitializerMixin (test_init.py)

/// Set by the workers' initializer.
static INITIALIZED: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

#[test]
fn test_initializer() {
    run("test_initializer", || {
        let ex = ProcessPoolExecutor::builder()
            .max_workers(2)
            .initializer(|v: u32| INITIALIZED.set(v).unwrap(), 7)
            .build()
            .unwrap();
        for _ in 0..4 {
            let v = ex.submit(|_: ()| INITIALIZED.get().copied(), ()).unwrap();
            assert_eq!(v.result().unwrap(), Some(7));
        }
        // Not in this process: only the workers ran the initializer.
        assert_eq!(INITIALIZED.get(), None);
    });
}

#[test]
fn test_initializer_fails() {
    // FailingInitializerMixin: every future fails (Python: BrokenProcessPool).
    run("test_initializer_fails", || {
        let built = ProcessPoolExecutor::builder()
            .max_workers(1)
            .initializer(|_: ()| panic!("init failed"), ())
            .build();
        let ex = built.unwrap();
        let err = match ex.submit(mul, (1, 2)) {
            Ok(f) => f.result().unwrap_err(),
            Err(e) => e,
        };
        assert!(err.to_string().contains("init failed"), "{err}");
        assert!(matches!(err, mp::Error::Remote { .. }), "{err:?}");
    });
}

// ---------------------------------------------------------------------------
// ProcessPoolShutdownTest

#[test]
fn test_run_after_shutdown() {
    run("test_run_after_shutdown", || {
        let ex = ProcessPoolExecutor::new(1).unwrap();
        ex.shutdown(true, false);
        assert!(matches!(ex.submit(mul, (2, 5)), Err(mp::Error::Closed)));
        assert!(matches!(ex.map(|x: u8| x, 0..2), Err(mp::Error::Closed)));
    });
}

#[test]
fn test_hang_issue12364() {
    run("test_hang_issue12364", || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let fs: Vec<_> = (0..50).map(|_| ex.submit(sleep_ms, 10).unwrap()).collect();
        ex.shutdown(true, false);
        for f in &fs {
            assert_eq!(f.result().unwrap(), 10);
        }
    });
}

#[test]
fn test_cancel_futures() {
    run("test_cancel_futures", || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let fs: Vec<_> = (0..50).map(|_| ex.submit(sleep_ms, 100).unwrap()).collect();
        ex.shutdown(true, true);
        let cancelled = fs.iter().filter(|f| f.cancelled()).count();
        // Python: at least 35 of 50 (its call queue holds a few more).
        assert!(cancelled >= 35, "only {cancelled} cancelled");
        for f in fs.iter().filter(|f| !f.cancelled()) {
            assert!(f.done());
            assert_eq!(f.result().unwrap(), 100);
        }
        for f in fs.iter().filter(|f| f.cancelled()) {
            assert!(matches!(f.result(), Err(mp::Error::Cancelled)));
        }
    });
}

#[test]
fn test_cancel_futures_wait_false() {
    run("test_cancel_futures_wait_false", || {
        let ex = ProcessPoolExecutor::new(1).unwrap();
        let (busy, release) = submit_blocked(&ex);
        let queued: Vec<_> = (0..5).map(|i| ex.submit(mul, (i, 1)).unwrap()).collect();
        let t0 = Instant::now();
        ex.shutdown(false, true);
        assert!(
            t0.elapsed() < ms(5_000),
            "shutdown(wait=false) returned at once"
        );
        assert!(queued.iter().all(|f| f.cancelled()));
        release.send(&9u8).unwrap();
        assert_eq!(busy.result().unwrap(), 9);
        drop(ex);
    });
}

#[test]
fn test_processes_terminate() {
    run("test_processes_terminate", || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let pids = ex.worker_pids();
        assert_eq!(pids.len(), 2);
        ex.submit(mul, (1, 1)).unwrap().result().unwrap();
        ex.shutdown(true, false);
        assert!(ex.worker_pids().is_empty());
        for p in pids {
            // Reaped: no such process (ESRCH).
            let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p as i32), None);
            assert_eq!(gone, Err(nix::errno::Errno::ESRCH), "worker {p}");
        }
    });
}

#[test]
fn test_context_manager_shutdown() {
    // Leaving `with` is shutdown(wait=True): dropping the executor.
    run("test_context_manager_shutdown", || {
        let f = {
            let ex = ProcessPoolExecutor::new(2).unwrap();
            ex.submit(sleep_ms, 50).unwrap()
        };
        assert!(f.done());
        assert_eq!(f.result().unwrap(), 50);
    });
}

#[test]
fn test_del_shutdown() {
    run("test_del_shutdown", || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let fs: Vec<_> = (0..4).map(|_| ex.submit(sleep_ms, 20).unwrap()).collect();
        drop(ex);
        assert!(fs.iter().all(|f| f.done()));
        for f in fs {
            assert_eq!(f.result().unwrap(), 20);
        }
    });
}

#[test]
fn test_shutdown_no_wait() {
    run("test_shutdown_no_wait", || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let fs: Vec<_> = (0..4).map(|i| ex.submit(mul, (i, 3)).unwrap()).collect();
        ex.shutdown(false, false);
        for (i, f) in fs.iter().enumerate() {
            assert_eq!(f.result().unwrap(), i as i64 * 3);
        }
    });
}

// ---------------------------------------------------------------------------
// WaitTests

#[test]
fn test_first_completed() {
    run("test_first_completed", || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let f1 = ex.submit(mul, (21, 2)).unwrap();
        let (f2, release) = submit_blocked(&ex);
        let r = wait([&f1, &f2], None, ReturnWhen::FirstCompleted);
        assert_eq!(r.done.len(), 1);
        assert!(std::ptr::eq(r.done[0], &f1));
        assert_eq!(r.not_done.len(), 1);
        assert!(std::ptr::eq(r.not_done[0], &f2));
        assert_eq!(f1.result().unwrap(), 42);
        release.send(&0u8).unwrap();
        f2.result().unwrap();
    });
}

#[test]
fn test_first_completed_some_already_completed() {
    run("test_first_completed_some_already_completed", || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let (f1, release) = submit_blocked(&ex);
        let ok = ex.submit(mul, (2, 3)).unwrap();
        let r = wait([&f1, &ok], None, ReturnWhen::FirstCompleted);
        assert_eq!(r.done.len(), 1);
        assert!(std::ptr::eq(r.done[0], &ok));
        assert_eq!(r.not_done.len(), 1);
        assert!(std::ptr::eq(r.not_done[0], &f1));
        let c = ex.submit(mul, (0, 0)).unwrap();
        c.result().unwrap();
        // Already-done futures make it return at once.
        let r = wait([&f1, &c], None, ReturnWhen::FirstCompleted);
        assert_eq!(r.done.len(), 1);
        release.send(&0u8).unwrap();
        f1.result().unwrap();
    });
}

#[test]
fn test_first_exception() {
    run("test_first_exception", || {
        let ex = ProcessPoolExecutor::new(3).unwrap();
        let f1 = ex.submit(mul, (2, 21)).unwrap();
        let f2 = ex.submit(divide, (1, 0)).unwrap();
        let (f3, release) = submit_blocked(&ex);
        f1.result_timeout(LONG).unwrap();
        let r = wait([&f1, &f2, &f3], None, ReturnWhen::FirstException);
        assert_eq!(r.done.len(), 2);
        assert!(r.done.iter().any(|f| std::ptr::eq(*f, &f2)));
        assert_eq!(r.not_done.len(), 1);
        assert!(std::ptr::eq(r.not_done[0], &f3));
        release.send(&0u8).unwrap();
        f3.result().unwrap();
    });
}

#[test]
fn test_first_exception_some_already_complete() {
    run("test_first_exception_some_already_complete", || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let failed = ex.submit(divide, (21, 0)).unwrap();
        let cancelled = cancelled_future();
        let (blocked_f, release) = submit_blocked(&ex);
        assert!(failed.result().is_err());
        let r = wait(
            [&failed, &cancelled, &blocked_f],
            None,
            ReturnWhen::FirstException,
        );
        assert_eq!(r.done.len(), 2);
        assert_eq!(r.not_done.len(), 1);
        assert!(std::ptr::eq(r.not_done[0], &blocked_f));
        release.send(&0u8).unwrap();
        blocked_f.result().unwrap();
    });
}

#[test]
fn test_first_exception_one_already_failed() {
    run("test_first_exception_one_already_failed", || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let (f1, release) = submit_blocked(&ex);
        let failed = ex.submit(divide, (1, 0)).unwrap();
        assert!(failed.result().is_err());
        let r = wait([&failed, &f1], None, ReturnWhen::FirstException);
        assert_eq!(r.done.len(), 1);
        assert!(std::ptr::eq(r.done[0], &failed));
        assert!(std::ptr::eq(r.not_done[0], &f1));
        release.send(&0u8).unwrap();
        f1.result().unwrap();
    });
}

#[test]
fn test_all_completed() {
    run("test_all_completed", || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let f1 = ex.submit(divide, (2, 0)).unwrap();
        let f2 = ex.submit(mul, (2, 21)).unwrap();
        let c = cancelled_future();
        let r = wait([&f1, &f2, &c], None, ReturnWhen::AllCompleted);
        assert_eq!(r.done.len(), 3);
        assert!(r.not_done.is_empty());
        assert!(matches!(f1.result(), Err(mp::Error::Remote { .. })));
        assert_eq!(f2.result().unwrap(), 42);
        assert!(matches!(c.result(), Err(mp::Error::Cancelled)));
    });
}

#[test]
fn test_timeout() {
    run("test_timeout", || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let ok = ex.submit(mul, (1, 1)).unwrap();
        let (f, release) = submit_blocked(&ex);
        ok.result_timeout(LONG).unwrap();
        let t0 = Instant::now();
        let r = wait([&ok, &f], Some(ms(200)), ReturnWhen::AllCompleted);
        assert!(t0.elapsed() >= ms(200));
        assert_eq!(r.done.len(), 1);
        assert!(std::ptr::eq(r.not_done[0], &f));
        release.send(&0u8).unwrap();
        f.result().unwrap();
    });
}

// ---------------------------------------------------------------------------
// AsCompletedTests

#[test]
fn test_no_timeout() {
    run("test_no_timeout", || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let c = cancelled_future();
        let fs: Vec<_> = (0..5).map(|i| ex.submit(mul, (i, 10)).unwrap()).collect();
        let all: Vec<&mp::futures::Future<i64>> = std::iter::once(&c).chain(&fs).collect();
        let mut seen = 0;
        let mut sum = 0;
        for f in as_completed(all.iter().copied(), None) {
            let f = f.unwrap();
            assert!(f.done());
            seen += 1;
            if !f.cancelled() {
                sum += f.result().unwrap();
            }
        }
        assert_eq!(seen, 6);
        assert_eq!(sum, 100);
    });
}

#[test]
fn test_future_times_out() {
    run("test_future_times_out", || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let ok = ex.submit(mul, (2, 2)).unwrap();
        ok.result_timeout(LONG).unwrap();
        let (f, release) = submit_blocked(&ex);
        let mut it = as_completed([&ok, &f], Some(ms(100)));
        assert!(std::ptr::eq(it.next().unwrap().unwrap(), &ok));
        assert!(matches!(it.next(), Some(Err(mp::Error::Timeout))));
        assert!(it.next().is_none());
        release.send(&0u8).unwrap();
        f.result().unwrap();
    });
}

#[test]
fn test_zero_timeout() {
    run("test_zero_timeout", || {
        let ex = ProcessPoolExecutor::new(1).unwrap();
        let done = ex.submit(mul, (3, 3)).unwrap();
        done.result_timeout(LONG).unwrap();
        let (f, release) = submit_blocked(&ex);
        let got: Vec<_> = as_completed([&done, &f], Some(Duration::ZERO)).collect();
        assert_eq!(got.len(), 2);
        assert!(std::ptr::eq(*got[0].as_ref().unwrap(), &done));
        assert!(matches!(got[1], Err(mp::Error::Timeout)));
        release.send(&0u8).unwrap();
        f.result().unwrap();
    });
}

#[test]
fn test_duplicate_futures() {
    run("test_duplicate_futures", || {
        let ex = ProcessPoolExecutor::new(1).unwrap();
        let f = ex.submit(mul, (4, 4)).unwrap();
        let n = as_completed([&f, &f, &f], None).count();
        assert_eq!(n, 1);
    });
}

// ---------------------------------------------------------------------------
// FutureTests (on executor futures rather than hand-made ones)

#[test]
fn test_done_callback_with_result() {
    run("test_done_callback_with_result", || {
        let ex = ProcessPoolExecutor::new(1).unwrap();
        let (tx, rx) = mpsc::channel();
        let f = ex.submit(mul, (5, 1)).unwrap();
        f.add_done_callback(move |f| tx.send(f.result().unwrap()).unwrap());
        assert_eq!(rx.recv_timeout(LONG).unwrap(), 5);
    });
}

#[test]
fn test_done_callback_with_exception() {
    run("test_done_callback_with_exception", || {
        let ex = ProcessPoolExecutor::new(1).unwrap();
        let (tx, rx) = mpsc::channel();
        let f = ex.submit(divide, (5, 0)).unwrap();
        f.add_done_callback(move |f| tx.send(f.result().unwrap_err().to_string()).unwrap());
        assert!(rx.recv_timeout(LONG).unwrap().contains("division by zero"));
    });
}

#[test]
fn test_done_callback_with_cancel() {
    run("test_done_callback_with_cancel", || {
        let ex = ProcessPoolExecutor::new(1).unwrap();
        let (busy, release) = submit_blocked(&ex);
        let f = ex.submit(mul, (1, 1)).unwrap();
        let (tx, rx) = mpsc::channel();
        f.add_done_callback(move |f| tx.send(f.cancelled()).unwrap());
        assert!(f.cancel());
        assert!(rx.recv_timeout(LONG).unwrap());
        release.send(&0u8).unwrap();
        busy.result().unwrap();
    });
}

#[test]
fn test_done_callback_raises() {
    // A panicking callback does not stop the others or the executor.
    run("test_done_callback_raises", || {
        let ex = ProcessPoolExecutor::new(1).unwrap();
        let (busy, release) = submit_blocked(&ex);
        let (tx, rx) = mpsc::channel();
        busy.add_done_callback(|_| panic!("doh!"));
        busy.add_done_callback(move |f| tx.send(f.done()).unwrap());
        release.send(&0u8).unwrap();
        assert!(rx.recv_timeout(LONG).unwrap());
        assert_eq!(ex.submit(mul, (2, 2)).unwrap().result().unwrap(), 4);
    });
}

#[test]
fn test_done_callback_already_successful() {
    run("test_done_callback_already_successful", || {
        let ex = ProcessPoolExecutor::new(1).unwrap();
        let f = ex.submit(mul, (3, 1)).unwrap();
        let (tx, rx) = mpsc::channel();
        assert_eq!(wait([&f], None, ReturnWhen::AllCompleted).done.len(), 1);
        // Runs at once, on this thread.
        let here = std::thread::current().id();
        f.add_done_callback(move |f| {
            tx.send((f.result().unwrap(), std::thread::current().id()))
                .unwrap()
        });
        let (v, thread) = rx.try_recv().unwrap();
        assert_eq!(v, 3);
        assert_eq!(thread, here);
    });
}

#[test]
fn test_done_callback_already_failed() {
    run("test_done_callback_already_failed", || {
        let ex = ProcessPoolExecutor::new(1).unwrap();
        let f = ex.submit(divide, (3, 0)).unwrap();
        assert!(f.result().is_err());
        let (tx, rx) = mpsc::channel();
        f.add_done_callback(move |f| tx.send(f.result().is_err()).unwrap());
        assert!(rx.try_recv().unwrap());
    });
}

#[test]
fn test_done_callback_already_cancelled() {
    run("test_done_callback_already_cancelled", || {
        let c = cancelled_future();
        let (tx, rx) = mpsc::channel();
        c.add_done_callback(move |f| tx.send(f.cancelled()).unwrap());
        assert!(rx.try_recv().unwrap());
    });
}

#[test]
fn test_cancel() {
    run("test_cancel", || {
        let ex = ProcessPoolExecutor::new(1).unwrap();
        let (tell_rx, tell) = mp::pipe(false).unwrap();
        let (wait_rx, release) = mp::pipe(false).unwrap();
        let running = ex.submit(started_then_blocked, (tell, wait_rx)).unwrap();
        let _pid: u32 = tell_rx.recv().unwrap();
        let pending = ex.submit(mul, (1, 1)).unwrap();
        assert!(running.running());
        assert!(!running.cancel(), "a running future is not cancelled");
        assert!(!pending.running());
        assert!(pending.cancel());
        assert!(pending.cancel(), "cancelling twice is true");
        assert!(pending.cancelled() && pending.done());
        release.send(&4u8).unwrap();
        assert_eq!(running.result().unwrap(), 4);
        assert!(!running.cancel(), "a finished future is not cancelled");
        assert!(!running.cancelled());
        assert!(matches!(pending.result(), Err(mp::Error::Cancelled)));
    });
}

#[test]
fn test_result_with_timeout() {
    run("test_result_with_timeout", || {
        let ex = ProcessPoolExecutor::new(1).unwrap();
        let (f, release) = submit_blocked(&ex);
        assert!(matches!(f.result_timeout(ms(50)), Err(mp::Error::Timeout)));
        assert!(!f.done());
        release.send(&3u8).unwrap();
        assert_eq!(f.result_timeout(LONG).unwrap(), 3);
        // The value moved out; a second call says so.
        assert!(matches!(f.result(), Err(mp::Error::Value(_))));
    });
}

// ---------------------------------------------------------------------------
// Beyond CPython

/// Awaited under a current-thread tokio runtime: one worker is SIGKILLed
/// mid-task; that future gives WorkerLost, the others complete.
#[test]
fn await_under_tokio_while_a_worker_is_killed() {
    run("await_under_tokio", || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let (tell_rx, tell) = mp::pipe(false).unwrap();
        let (wait_rx, _keep) = mp::pipe(false).unwrap();
        let doomed = ex.submit(started_then_blocked, (tell, wait_rx)).unwrap();
        let pid: u32 = tell_rx.recv().unwrap();
        let others: Vec<_> = (0..200).map(|i| ex.submit(mul, (i, 2)).unwrap()).collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let (lost, rest) = rt.block_on(async move {
            let killer = async move {
                tokio::task::yield_now().await;
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .unwrap();
            };
            let (_, lost, rest) =
                futures_util::future::join3(killer, doomed, futures_util::future::join_all(others))
                    .await;
            (lost, rest)
        });
        match lost {
            Err(mp::Error::WorkerLost { pid: p, exitcode }) => {
                assert_eq!(p, pid);
                assert_eq!(exitcode, Some(-libc::SIGKILL));
            }
            other => panic!("expected WorkerLost, got {other:?}"),
        }
        let rest: Vec<i64> = rest.into_iter().collect::<mp::Result<_>>().unwrap();
        assert_eq!(rest, (0..200).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(ex.worker_pids().len(), 2);
    });
}

#[test]
fn await_async_result_under_tokio() {
    run("await_async_result", || {
        let pool = mp::Pool::new(2).unwrap();
        let rs: Vec<_> = (0..50)
            .map(|i| pool.apply_async(mul, (i, 3)).unwrap())
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let got = rt.block_on(futures_util::future::join_all(rs));
        let got: Vec<i64> = got.into_iter().collect::<mp::Result<_>>().unwrap();
        assert_eq!(got, (0..50).map(|i| i * 3).collect::<Vec<_>>());
    });
}

#[test]
fn cancel_running_kills_and_replaces_the_worker() {
    run("cancel_running", || {
        let ex = ProcessPoolExecutor::new(1).unwrap();
        let (tell_rx, tell) = mp::pipe(false).unwrap();
        let (wait_rx, _keep) = mp::pipe(false).unwrap();
        let f = ex.submit(started_then_blocked, (tell, wait_rx)).unwrap();
        let queued = ex.submit(mul, (6, 7)).unwrap();
        let pid: u32 = tell_rx.recv().unwrap();
        assert!(f.running());
        assert!(f.cancel_running());
        assert!(f.cancelled() && f.done());
        assert!(matches!(f.result(), Err(mp::Error::Cancelled)));
        // The task queued behind it runs on the replacement.
        assert_eq!(queued.result().unwrap(), 42);
        let now = ex.submit(pid_of_worker, ()).unwrap().result().unwrap();
        assert_ne!(now, pid);
        assert!(!ex.worker_pids().contains(&pid));
        // Done futures are not cancelled.
        assert!(!queued.cancel_running());
    });
}

fn pid_of_worker(_: ()) -> u32 {
    std::process::id()
}

#[test]
fn per_task_timeout_kills_and_replaces_the_worker() {
    run("per_task_timeout", || {
        let ex = ProcessPoolExecutor::new(2).unwrap();
        let (tell_rx, tell) = mp::pipe(false).unwrap();
        let (wait_rx, _keep) = mp::pipe(false).unwrap();
        let t0 = Instant::now();
        let f = ex
            .submit_with_timeout(started_then_blocked, (tell, wait_rx), ms(200))
            .unwrap();
        let pid: u32 = tell_rx.recv().unwrap();
        let others: Vec<_> = (0..20).map(|i| ex.submit(mul, (i, i)).unwrap()).collect();
        assert!(matches!(f.result(), Err(mp::Error::Timeout)));
        assert!(t0.elapsed() >= ms(200));
        assert!(!ex.worker_pids().contains(&pid), "the worker was replaced");
        for (i, o) in others.iter().enumerate() {
            assert_eq!(o.result().unwrap(), (i * i) as i64);
        }
        // A quick task under a timeout is unaffected.
        let quick = ex.submit_with_timeout(mul, (3, 3), LONG).unwrap();
        assert_eq!(quick.result().unwrap(), 9);
    });
}

/// Leaks `mib` MiB of touched memory, returns the worker's pid.
fn leak_mib(mib: usize) -> u32 {
    let v = vec![1u8; mib << 20];
    std::mem::forget(v);
    std::process::id()
}

#[test]
fn max_memory_per_child_replaces_a_worker_left_above_the_limit() {
    run("max_memory_per_child", || {
        let ex = ProcessPoolExecutor::builder()
            .max_workers(1)
            .max_memory_per_child(96 << 20)
            .build()
            .unwrap();
        let p1 = ex.submit(pid_of_worker, ()).unwrap().result().unwrap();
        // Below the limit: the same worker goes on.
        assert_eq!(ex.submit(leak_mib, 8).unwrap().result().unwrap(), p1);
        assert_eq!(ex.submit(pid_of_worker, ()).unwrap().result().unwrap(), p1);
        // Above it: the task's result comes back, then the worker is replaced.
        assert_eq!(ex.submit(leak_mib, 160).unwrap().result().unwrap(), p1);
        let p2 = ex.submit(pid_of_worker, ()).unwrap().result().unwrap();
        assert_ne!(p1, p2);
        assert_eq!(ex.submit(pid_of_worker, ()).unwrap().result().unwrap(), p2);
    });
}

#[test]
fn future_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<mp::futures::Future<Vec<u8>>>();
    check::<ProcessPoolExecutor>();
}
