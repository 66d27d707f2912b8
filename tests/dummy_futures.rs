//! `mp::dummy::futures`: `ThreadPoolExecutor` (also named
//! `ProcessPoolExecutor`), `Future`, `wait`, `as_completed`, on threads.
//!
//! The scenarios of tests/futures.rs, from cpython:
//! Lib/test/test_concurrent_futures/ (3.13.0, PSF licence), run against the
//! thread executor (CPython runs them for `ThreadPoolExecutor` too), grouped
//! by CPython class in section comments and named after the test they port.
//! Changes as there (`CancelledError` → `Cancelled`, `TimeoutError` →
//! `Timeout`, a raised exception → `Remote`, `RuntimeError` after shutdown
//! → `Closed`; tasks that only keep a future unfinished block on a channel
//! the test releases). Where threads differ from processes, the test says
//! so: a worker is told apart by its thread id, not its pid; `cancel_running`
//! asks instead of killing; `max_memory_per_child` is refused.

mod common;

use std::sync::mpsc;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use common::{LONG, LeakCheck, ms, within};
use mp::futures::{
    MapOptions, ProcessPoolExecutor, ReturnWhen, ThreadPoolExecutor, as_completed, wait,
};
use multiprocess::dummy as mp;

/// Runs a test body with the leak check, one test at a time, under a guard.
fn run(name: &str, body: impl FnOnce() + Send + 'static) {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, name, body);
}

fn mul((a, b): (i64, i64)) -> i64 {
    a * b
}

fn divide((a, b): (i64, i64)) -> i64 {
    if b == 0 {
        panic!("division by zero");
    }
    a / b
}

fn sleep_ms(n: u64) -> u64 {
    std::thread::sleep(ms(n));
    n
}

fn thread_id(_: ()) -> ThreadId {
    std::thread::current().id()
}

/// A future running on a worker (it has told so), blocked until a value is
/// sent on the returned sender; it returns that value.
fn submit_blocked(ex: &ThreadPoolExecutor) -> (mp::futures::Future<i64>, mpsc::Sender<i64>) {
    let (started_tx, started) = mpsc::channel();
    let (release, wait) = mpsc::channel::<i64>();
    let f = ex
        .submit(
            move |_: ()| {
                started_tx.send(()).unwrap();
                wait.recv().unwrap_or(-1)
            },
            (),
        )
        .unwrap();
    started.recv_timeout(LONG).unwrap();
    (f, release)
}

/// A future cancelled before it ran (CPython's `CANCELLED_FUTURE`): on an
/// executor of its own whose one worker is kept busy, so it waits and is
/// cancelled.
fn cancelled_future() -> mp::futures::Future<i64> {
    let ex = ThreadPoolExecutor::new(1).unwrap();
    let (busy, release) = submit_blocked(&ex);
    let f = ex.submit(mul, (1, 1)).unwrap();
    assert!(f.cancel());
    release.send(1).unwrap();
    assert_eq!(busy.result().unwrap(), 1);
    f
}

// ---------------------------------------------------------------------------
// ExecutorTest

#[test]
fn test_submit() {
    run("test_submit", || {
        let ex = ThreadPoolExecutor::new(2).unwrap();
        let f = ex.submit(|(b, e): (u64, u32)| b.pow(e), (2, 8)).unwrap();
        assert_eq!(f.result().unwrap(), 256);
        // A thread's task may capture (a process's may not).
        let base = String::from("abc");
        let g = ex.submit(move |n: usize| base.repeat(n), 2).unwrap();
        assert_eq!(g.result().unwrap(), "abcabc");
    });
}

#[test]
fn test_map() {
    run("test_map", || {
        let ex = ThreadPoolExecutor::new(2).unwrap();
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
        let ex = ThreadPoolExecutor::new(2).unwrap();
        let mut it = ex.map(divide, [(1, 1), (1, 0), (2, 1)]).unwrap();
        assert_eq!(it.next().unwrap().unwrap(), 1);
        match it.next() {
            Some(Err(mp::Error::Remote { message, .. })) => {
                assert_eq!(message, "division by zero")
            }
            other => panic!("expected the panic as Remote, got {other:?}"),
        }
        assert!(it.next().is_none());
    });
}

#[test]
fn test_map_timeout() {
    run("test_map_timeout", || {
        let ex = ThreadPoolExecutor::new(2).unwrap();
        let (release, wait) = mpsc::channel::<()>();
        let wait = std::sync::Mutex::new(wait);
        let t0 = Instant::now();
        let mut it = ex
            .map_with(
                move |x: u64| {
                    if x == 2 {
                        // Held until the test lets go (CPython: a long sleep).
                        let _ = wait.lock().unwrap().recv();
                    }
                    x
                },
                [0u64, 1, 2],
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
        assert_eq!(results, [0, 1]);
        assert!(matches!(err, mp::Error::Timeout), "{err:?}");
        assert!(t0.elapsed() >= ms(300));
        assert!(it.next().is_none());
        release.send(()).unwrap();
    });
}

#[test]
fn test_max_workers_negative() {
    run("test_max_workers_negative", || {
        assert!(matches!(
            ThreadPoolExecutor::new(0),
            Err(mp::Error::Value(_))
        ));
    });
}

#[test]
fn test_shutdown_race_issue12456() {
    run("test_shutdown_race_issue12456", || {
        let ex = ThreadPoolExecutor::new(2).unwrap();
        let fs: Vec<_> = (0..20).map(|i| ex.submit(mul, (i, 2)).unwrap()).collect();
        ex.shutdown(true, false);
        for (i, f) in fs.iter().enumerate() {
            assert_eq!(f.result().unwrap(), i as i64 * 2);
        }
    });
}

// ---------------------------------------------------------------------------
// ThreadPoolExecutorTest (and the process tests that apply to threads)

#[test]
fn test_map_chunksize() {
    run("test_map_chunksize", || {
        let ex = ThreadPoolExecutor::new(2).unwrap();
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
    run("test_map_buffersize", || {
        let ex = ThreadPoolExecutor::new(2).unwrap();
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
    run("test_map_buffersize_reads_ahead", || {
        let ex = ThreadPoolExecutor::new(2).unwrap();
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
    // Threads: the worker is told apart by its thread id, not a pid.
    run("test_max_tasks_per_child", || {
        let ex = ThreadPoolExecutor::builder()
            .max_workers(1)
            .max_tasks_per_child(3)
            .build()
            .unwrap();
        let t1 = ex.submit(thread_id, ()).unwrap().result().unwrap();
        assert_eq!(ex.submit(thread_id, ()).unwrap().result().unwrap(), t1);
        assert_eq!(ex.submit(thread_id, ()).unwrap().result().unwrap(), t1);
        let t2 = ex.submit(thread_id, ()).unwrap().result().unwrap();
        assert_ne!(t1, t2, "the worker was replaced after three tasks");
        assert!(matches!(
            ThreadPoolExecutor::builder().max_tasks_per_child(0).build(),
            Err(mp::Error::Value(_))
        ));
    });
}

#[test]
fn test_max_tasks_early_shutdown() {
    run("test_max_tasks_early_shutdown", || {
        let ex = ThreadPoolExecutor::builder()
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

thread_local! {
    /// Set by the workers' initializer, on each worker thread.
    static INITIALIZED: std::cell::Cell<Option<u32>> = const { std::cell::Cell::new(None) };
}

#[test]
fn test_initializer() {
    run("test_initializer", || {
        let ex = ThreadPoolExecutor::builder()
            .max_workers(2)
            .initializer(|v: u32| INITIALIZED.with(|i| i.set(Some(v))), 7)
            .build()
            .unwrap();
        for _ in 0..4 {
            let v = ex
                .submit(|_: ()| INITIALIZED.with(|i| i.get()), ())
                .unwrap();
            assert_eq!(v.result().unwrap(), Some(7));
        }
        // Not on this thread: only the workers ran the initializer.
        assert_eq!(INITIALIZED.with(|i| i.get()), None);
    });
}

#[test]
fn test_initializer_fails() {
    // FailingInitializerMixin: every future fails (Python: BrokenThreadPool).
    run("test_initializer_fails", || {
        let ex = ThreadPoolExecutor::builder()
            .max_workers(1)
            .initializer(|_: ()| panic!("init failed"), ())
            .build()
            .unwrap();
        for _ in 0..3 {
            let err = match ex.submit(mul, (1, 2)) {
                Ok(f) => f.result().unwrap_err(),
                Err(e) => e,
            };
            assert!(err.to_string().contains("init failed"), "{err}");
            assert!(matches!(err, mp::Error::Remote { .. }), "{err:?}");
        }
        // Once it is known to be broken, submit says so at once.
        assert!(matches!(
            ex.submit(mul, (1, 2)),
            Err(mp::Error::Remote { .. })
        ));
        assert!(matches!(
            ex.map(|x: u8| x, 0..2),
            Err(mp::Error::Remote { .. })
        ));
    });
}

// ---------------------------------------------------------------------------
// ThreadPoolShutdownTest

#[test]
fn test_run_after_shutdown() {
    run("test_run_after_shutdown", || {
        let ex = ThreadPoolExecutor::new(1).unwrap();
        ex.shutdown(true, false);
        assert!(matches!(ex.submit(mul, (2, 5)), Err(mp::Error::Closed)));
        assert!(matches!(ex.map(|x: u8| x, 0..2), Err(mp::Error::Closed)));
    });
}

#[test]
fn test_hang_issue12364() {
    run("test_hang_issue12364", || {
        let ex = ThreadPoolExecutor::new(2).unwrap();
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
        let ex = ThreadPoolExecutor::new(2).unwrap();
        let fs: Vec<_> = (0..50).map(|_| ex.submit(sleep_ms, 100).unwrap()).collect();
        ex.shutdown(true, true);
        let cancelled = fs.iter().filter(|f| f.cancelled()).count();
        // Python: at least 35 of 50; a thread takes only the one it runs.
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
        let ex = ThreadPoolExecutor::new(1).unwrap();
        let (busy, release) = submit_blocked(&ex);
        let queued: Vec<_> = (0..5).map(|i| ex.submit(mul, (i, 1)).unwrap()).collect();
        let t0 = Instant::now();
        ex.shutdown(false, true);
        assert!(
            t0.elapsed() < ms(5_000),
            "shutdown(wait=false) returned at once"
        );
        assert!(queued.iter().all(|f| f.cancelled()));
        release.send(9).unwrap();
        assert_eq!(busy.result().unwrap(), 9);
        drop(ex);
    });
}

#[test]
fn test_threads_terminate() {
    // The threads' twin of test_processes_terminate: after shutdown no
    // worker is alive.
    run("test_threads_terminate", || {
        let ex = ThreadPoolExecutor::new(2).unwrap();
        assert_eq!(ex.worker_pids(), [std::process::id(); 2]);
        ex.submit(mul, (1, 1)).unwrap().result().unwrap();
        ex.shutdown(true, false);
        assert!(ex.worker_pids().is_empty());
    });
}

#[test]
fn test_context_manager_shutdown() {
    run("test_context_manager_shutdown", || {
        let f = {
            let ex = ThreadPoolExecutor::new(2).unwrap();
            ex.submit(sleep_ms, 50).unwrap()
        };
        assert!(f.done());
        assert_eq!(f.result().unwrap(), 50);
    });
}

#[test]
fn test_del_shutdown() {
    run("test_del_shutdown", || {
        let ex = ThreadPoolExecutor::new(2).unwrap();
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
        let ex = ThreadPoolExecutor::new(2).unwrap();
        let fs: Vec<_> = (0..4).map(|i| ex.submit(mul, (i, 3)).unwrap()).collect();
        ex.shutdown(false, false);
        for (i, f) in fs.iter().enumerate() {
            assert_eq!(f.result().unwrap(), i as i64 * 3);
        }
    });
}

#[test]
fn test_terminate_workers() {
    // Python 3.14's terminate_workers: the unfinished futures fail at once;
    // the busy thread (which cannot be killed) exits when its task returns.
    run("test_terminate_workers", || {
        let ex = ThreadPoolExecutor::new(1).unwrap();
        let (busy, release) = submit_blocked(&ex);
        let queued = ex.submit(mul, (2, 2)).unwrap();
        ex.terminate_workers();
        assert!(matches!(busy.result(), Err(mp::Error::Closed)));
        assert!(matches!(queued.result(), Err(mp::Error::Closed)));
        assert!(matches!(ex.submit(mul, (1, 1)), Err(mp::Error::Closed)));
        release.send(1).unwrap();
        drop(ex); // joins the thread once its task returned
    });
}

// ---------------------------------------------------------------------------
// WaitTests

#[test]
fn test_first_completed() {
    run("test_first_completed", || {
        let ex = ThreadPoolExecutor::new(2).unwrap();
        let f1 = ex.submit(mul, (21, 2)).unwrap();
        let (f2, release) = submit_blocked(&ex);
        let r = wait([&f1, &f2], None, ReturnWhen::FirstCompleted);
        assert_eq!(r.done.len(), 1);
        assert!(std::ptr::eq(r.done[0], &f1));
        assert_eq!(r.not_done.len(), 1);
        assert!(std::ptr::eq(r.not_done[0], &f2));
        assert_eq!(f1.result().unwrap(), 42);
        release.send(0).unwrap();
        f2.result().unwrap();
    });
}

#[test]
fn test_first_exception() {
    run("test_first_exception", || {
        let ex = ThreadPoolExecutor::new(2).unwrap();
        let (blocked_f, release) = submit_blocked(&ex);
        let failing = ex.submit(divide, (1, 0)).unwrap();
        let r = wait([&blocked_f, &failing], None, ReturnWhen::FirstException);
        assert_eq!(r.done.len(), 1);
        assert!(std::ptr::eq(r.done[0], &failing));
        assert!(std::ptr::eq(r.not_done[0], &blocked_f));
        release.send(0).unwrap();
        blocked_f.result().unwrap();
    });
}

#[test]
fn test_first_exception_one_already_failed() {
    run("test_first_exception_one_already_failed", || {
        let ex = ThreadPoolExecutor::new(2).unwrap();
        let (f1, release) = submit_blocked(&ex);
        let failed = ex.submit(divide, (1, 0)).unwrap();
        assert!(failed.result().is_err());
        let r = wait([&failed, &f1], None, ReturnWhen::FirstException);
        assert_eq!(r.done.len(), 1);
        assert!(std::ptr::eq(r.done[0], &failed));
        assert!(std::ptr::eq(r.not_done[0], &f1));
        release.send(0).unwrap();
        f1.result().unwrap();
    });
}

#[test]
fn test_all_completed() {
    run("test_all_completed", || {
        let ex = ThreadPoolExecutor::new(2).unwrap();
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
        let ex = ThreadPoolExecutor::new(2).unwrap();
        let ok = ex.submit(mul, (1, 1)).unwrap();
        let (f, release) = submit_blocked(&ex);
        ok.result_timeout(LONG).unwrap();
        let t0 = Instant::now();
        let r = wait([&ok, &f], Some(ms(200)), ReturnWhen::AllCompleted);
        assert!(t0.elapsed() >= ms(200));
        assert_eq!(r.done.len(), 1);
        assert!(std::ptr::eq(r.not_done[0], &f));
        release.send(0).unwrap();
        f.result().unwrap();
    });
}

// ---------------------------------------------------------------------------
// AsCompletedTests

#[test]
fn test_no_timeout() {
    run("test_no_timeout", || {
        let ex = ThreadPoolExecutor::new(2).unwrap();
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
        let ex = ThreadPoolExecutor::new(2).unwrap();
        let ok = ex.submit(mul, (2, 2)).unwrap();
        ok.result_timeout(LONG).unwrap();
        let (f, release) = submit_blocked(&ex);
        let mut it = as_completed([&ok, &f], Some(ms(100)));
        assert!(std::ptr::eq(it.next().unwrap().unwrap(), &ok));
        assert!(matches!(it.next(), Some(Err(mp::Error::Timeout))));
        assert!(it.next().is_none());
        release.send(0).unwrap();
        f.result().unwrap();
    });
}

#[test]
fn test_zero_timeout() {
    run("test_zero_timeout", || {
        let ex = ThreadPoolExecutor::new(1).unwrap();
        let done = ex.submit(mul, (3, 3)).unwrap();
        done.result_timeout(LONG).unwrap();
        let (f, release) = submit_blocked(&ex);
        let got: Vec<_> = as_completed([&done, &f], Some(Duration::ZERO)).collect();
        assert_eq!(got.len(), 2);
        assert!(std::ptr::eq(*got[0].as_ref().unwrap(), &done));
        assert!(matches!(got[1], Err(mp::Error::Timeout)));
        release.send(0).unwrap();
        f.result().unwrap();
    });
}

#[test]
fn test_duplicate_futures() {
    run("test_duplicate_futures", || {
        let ex = ThreadPoolExecutor::new(1).unwrap();
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
        let ex = ThreadPoolExecutor::new(1).unwrap();
        let (tx, rx) = mpsc::channel();
        let f = ex.submit(mul, (5, 1)).unwrap();
        f.add_done_callback(move |f| tx.send(f.result().unwrap()).unwrap());
        assert_eq!(rx.recv_timeout(LONG).unwrap(), 5);
    });
}

#[test]
fn test_done_callback_with_exception() {
    run("test_done_callback_with_exception", || {
        let ex = ThreadPoolExecutor::new(1).unwrap();
        let (tx, rx) = mpsc::channel();
        let f = ex.submit(divide, (5, 0)).unwrap();
        f.add_done_callback(move |f| tx.send(f.result().unwrap_err().to_string()).unwrap());
        assert!(rx.recv_timeout(LONG).unwrap().contains("division by zero"));
    });
}

#[test]
fn test_done_callback_with_cancel() {
    run("test_done_callback_with_cancel", || {
        let ex = ThreadPoolExecutor::new(1).unwrap();
        let (busy, release) = submit_blocked(&ex);
        let f = ex.submit(mul, (1, 1)).unwrap();
        let (tx, rx) = mpsc::channel();
        f.add_done_callback(move |f| tx.send(f.cancelled()).unwrap());
        assert!(f.cancel());
        assert!(rx.recv_timeout(LONG).unwrap());
        release.send(0).unwrap();
        busy.result().unwrap();
    });
}

#[test]
fn test_done_callback_raises() {
    run("test_done_callback_raises", || {
        let ex = ThreadPoolExecutor::new(1).unwrap();
        let (busy, release) = submit_blocked(&ex);
        let (tx, rx) = mpsc::channel();
        busy.add_done_callback(|_| panic!("doh!"));
        busy.add_done_callback(move |f| tx.send(f.done()).unwrap());
        release.send(0).unwrap();
        assert!(rx.recv_timeout(LONG).unwrap());
        assert_eq!(ex.submit(mul, (2, 2)).unwrap().result().unwrap(), 4);
    });
}

#[test]
fn test_done_callback_already_successful() {
    run("test_done_callback_already_successful", || {
        let ex = ThreadPoolExecutor::new(1).unwrap();
        let f = ex.submit(mul, (3, 1)).unwrap();
        let (tx, rx) = mpsc::channel();
        assert_eq!(wait([&f], None, ReturnWhen::AllCompleted).done.len(), 1);
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
        let ex = ThreadPoolExecutor::new(1).unwrap();
        let (running, release) = submit_blocked(&ex);
        let pending = ex.submit(mul, (1, 1)).unwrap();
        assert!(running.running());
        assert!(!running.cancel(), "a running future is not cancelled");
        assert!(!pending.running());
        assert!(pending.cancel());
        assert!(pending.cancel(), "cancelling twice is true");
        assert!(pending.cancelled() && pending.done());
        release.send(4).unwrap();
        assert_eq!(running.result().unwrap(), 4);
        assert!(!running.cancel(), "a finished future is not cancelled");
        assert!(!running.cancelled());
        assert!(matches!(pending.result(), Err(mp::Error::Cancelled)));
    });
}

#[test]
fn test_result_with_timeout() {
    run("test_result_with_timeout", || {
        let ex = ThreadPoolExecutor::new(1).unwrap();
        let (f, release) = submit_blocked(&ex);
        assert!(matches!(f.result_timeout(ms(50)), Err(mp::Error::Timeout)));
        assert!(!f.done());
        release.send(3).unwrap();
        assert_eq!(f.result_timeout(LONG).unwrap(), 3);
        assert!(matches!(f.result(), Err(mp::Error::Value(_))));
    });
}

// ---------------------------------------------------------------------------
// Beyond CPython, and where threads differ

/// Awaited under a current-thread tokio runtime: one task panics; that
/// future gives its Remote error, the others complete (the worker threads
/// wake the runtime).
#[test]
fn await_under_tokio_while_a_task_panics() {
    run("await_under_tokio", || {
        let ex = ThreadPoolExecutor::new(2).unwrap();
        let (doomed, release) = submit_blocked(&ex);
        let failing = ex.submit(divide, (1, 0)).unwrap();
        let others: Vec<_> = (0..200).map(|i| ex.submit(mul, (i, 2)).unwrap()).collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (blocked, failed, rest) = rt.block_on(async move {
            let releaser = async move {
                tokio::task::yield_now().await;
                release.send(5).unwrap();
            };
            let (_, blocked, failed, rest) = futures_util::future::join4(
                releaser,
                doomed,
                failing,
                futures_util::future::join_all(others),
            )
            .await;
            (blocked, failed, rest)
        });
        assert_eq!(blocked.unwrap(), 5);
        assert!(
            matches!(&failed, Err(mp::Error::Remote { message, .. }) if message == "division by zero"),
            "{failed:?}"
        );
        let rest: Vec<i64> = rest.into_iter().collect::<mp::Result<_>>().unwrap();
        assert_eq!(rest, (0..200).map(|i| i * 2).collect::<Vec<_>>());
    });
}

#[test]
fn cancel_running_asks_the_task_and_replaces_the_worker() {
    // A thread cannot be killed: the task is asked (cancel_requested) and
    // a fresh worker runs what is queued behind it.
    run("cancel_running_asks", || {
        let ex = ThreadPoolExecutor::new(1).unwrap();
        let (started_tx, started) = mpsc::channel();
        let (saw_tx, saw) = mpsc::channel();
        let f = ex
            .submit(
                move |_: ()| {
                    started_tx.send(std::thread::current().id()).unwrap();
                    // Polls between slices of work, as a cooperative task does.
                    while !mp::futures::cancel_requested() {
                        std::thread::yield_now();
                    }
                    saw_tx.send(()).unwrap();
                    7i64
                },
                (),
            )
            .unwrap();
        let queued = ex.submit(|_: ()| std::thread::current().id(), ()).unwrap();
        let busy_thread = started.recv_timeout(LONG).unwrap();
        assert!(!mp::futures::cancel_requested(), "not on this thread");
        assert!(f.running());
        assert!(f.cancel_running());
        assert!(f.cancelled() && f.done());
        assert!(matches!(f.result(), Err(mp::Error::Cancelled)));
        saw.recv_timeout(LONG).unwrap();
        // The queued task ran on another thread than the cancelled one.
        assert_ne!(queued.result().unwrap(), busy_thread);
        // Done futures are not cancelled again.
        assert!(!queued.cancel_running());
        assert!(f.cancel_running(), "already cancelled: true, as cancel()");
        ex.shutdown(true, false);
        assert!(ex.worker_pids().is_empty());
    });
}

#[test]
fn cancel_running_an_uncooperative_task_keeps_capacity() {
    // A task that never looks runs to its end, but the future is cancelled
    // at once and the executor keeps one free worker meanwhile.
    run("cancel_running_uncooperative", || {
        let ex = ThreadPoolExecutor::new(1).unwrap();
        let (f, release) = submit_blocked(&ex);
        assert!(f.cancel_running());
        assert!(matches!(f.result(), Err(mp::Error::Cancelled)));
        // Runs on the replacement while the cancelled task still blocks.
        assert_eq!(ex.submit(mul, (6, 7)).unwrap().result().unwrap(), 42);
        for _ in 0..10 {
            ex.submit(mul, (1, 1)).unwrap().result().unwrap();
        }
        assert_eq!(
            ex.worker_pids().len(),
            2,
            "the busy one and its replacement"
        );
        release.send(1).unwrap();
        // Its thread retires once the task returns: back to one worker.
        ex.shutdown(true, false);
        assert!(ex.worker_pids().is_empty());
        assert!(matches!(f.result(), Err(mp::Error::Cancelled)));
    });
}

#[test]
fn cancel_running_a_pending_task_is_cancel() {
    run("cancel_running_pending", || {
        let ex = ThreadPoolExecutor::new(1).unwrap();
        let (busy, release) = submit_blocked(&ex);
        let pending = ex.submit(mul, (1, 1)).unwrap();
        assert!(pending.cancel_running());
        assert!(matches!(pending.result(), Err(mp::Error::Cancelled)));
        release.send(2).unwrap();
        assert_eq!(busy.result().unwrap(), 2);
        // No replacement was started for a task that never ran.
        assert_eq!(ex.worker_pids().len(), 1);
    });
}

#[test]
fn per_task_timeout_fails_the_future_and_replaces_the_worker() {
    run("per_task_timeout", || {
        let ex = ThreadPoolExecutor::new(2).unwrap();
        let (started_tx, started) = mpsc::channel();
        let (release, wait) = mpsc::channel::<()>();
        let t0 = Instant::now();
        let f = ex
            .submit_with_timeout(
                move |_: ()| {
                    started_tx.send(()).unwrap();
                    let _ = wait.recv();
                    1i64
                },
                (),
                ms(200),
            )
            .unwrap();
        started.recv_timeout(LONG).unwrap();
        let others: Vec<_> = (0..20).map(|i| ex.submit(mul, (i, i)).unwrap()).collect();
        assert!(matches!(f.result(), Err(mp::Error::Timeout)));
        assert!(t0.elapsed() >= ms(200));
        for (i, o) in others.iter().enumerate() {
            assert_eq!(o.result().unwrap(), (i * i) as i64);
        }
        let quick = ex.submit_with_timeout(mul, (3, 3), LONG).unwrap();
        assert_eq!(quick.result().unwrap(), 9);
        // The executor kept two free workers while the timed-out task still
        // blocks: two tasks meet at a barrier (with one, they would not).
        both_workers_free(&ex);
        release.send(()).unwrap();
        // The overrunning thread retires once its task returns.
        ex.shutdown(true, false);
        assert!(ex.worker_pids().is_empty());
    });
}

/// Asserts that two tasks of `ex` run at the same time: they meet at a
/// barrier (a `Barrier` timeout, not a hang, if they cannot).
fn both_workers_free(ex: &ThreadPoolExecutor) {
    let meet = mp::Barrier::new(2).unwrap();
    let both: Vec<_> = (0..2)
        .map(|_| {
            let m = meet.clone();
            ex.submit(move |_: ()| m.wait_timeout(LONG).is_ok(), ())
                .unwrap()
        })
        .collect();
    for b in both {
        assert!(b.result().unwrap(), "two workers ran at once");
    }
}

#[test]
fn max_memory_per_child_is_refused() {
    run("max_memory_per_child", || {
        let built = ThreadPoolExecutor::builder()
            .max_workers(1)
            .max_memory_per_child(96 << 20)
            .build();
        match built {
            Err(mp::Error::Value(msg)) => assert!(msg.contains("threads"), "{msg}"),
            other => panic!("expected Error::Value, got {other:?}"),
        }
    });
}

#[test]
fn process_pool_executor_is_the_thread_executor() {
    // The name a program written for processes uses: the same type.
    run("alias", || {
        let ex: ThreadPoolExecutor = ProcessPoolExecutor::new(1).unwrap();
        let here = std::process::id();
        assert_eq!(
            ex.submit(|_: ()| std::process::id(), ())
                .unwrap()
                .result()
                .unwrap(),
            here,
            "a thread of this process"
        );
        assert_eq!(ex.max_workers(), 1);
    });
}

#[test]
fn future_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<mp::futures::Future<Vec<u8>>>();
    check::<ThreadPoolExecutor>();
}
