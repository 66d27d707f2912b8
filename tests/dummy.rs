//! `mp::dummy`: the API over threads.
//!
//! Ported from `cpython: Lib/test/_test_multiprocessing.py` (PSF licence),
//! whose suites run a third time with `TYPE = 'threads'` against
//! `multiprocessing.dummy`; a representative set of those, grouped by
//! CPython class (`// _TestPool` ...), each test named after the one it
//! ports. Changes: timing assertions keep only lower bounds (the machine is
//! loaded); CPython's `time.sleep` in workers becomes waiting on an `Event`.
//! After them, tests of our own for what threads do differently (captures,
//! panics, globals, `terminate`, timeouts) and the leak check.

mod common;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::{LeakCheck, SHORT, ms, serial, within};
use multiprocess::dummy as mp;

fn sqr(x: i64) -> i64 {
    x * x
}

// ---------------------------------------------------------------------------
// _TestPool

#[test]
fn test_apply() {
    let pool = mp::Pool::new(4).unwrap();
    assert_eq!(pool.apply(sqr, 5).unwrap(), sqr(5));
    assert_eq!(pool.apply(|(x,): (i64,)| sqr(x), (3,)).unwrap(), 9);
}

#[test]
fn test_map() {
    let pool = mp::Pool::new(4).unwrap();
    let want: Vec<i64> = (0..10).map(sqr).collect();
    assert_eq!(pool.map(sqr, 0..10).unwrap(), want);
    let want: Vec<i64> = (0..100).map(sqr).collect();
    assert_eq!(pool.map_with_chunksize(sqr, 0..100, 20).unwrap(), want);
}

#[test]
fn test_starmap() {
    let pool = mp::Pool::new(4).unwrap();
    let pairs: Vec<(i64, i64)> = (0..10).map(|i| (i, i + 1)).collect();
    let want: Vec<i64> = pairs.iter().map(|(a, b)| a * b).collect();
    assert_eq!(
        pool.starmap(|(a, b): (i64, i64)| a * b, pairs.clone())
            .unwrap(),
        want
    );
    assert_eq!(
        pool.starmap_async_with_chunksize(|(a, b): (i64, i64)| a * b, pairs, 3)
            .unwrap()
            .get()
            .unwrap(),
        want
    );
}

#[test]
fn test_map_async() {
    let pool = mp::Pool::new(4).unwrap();
    let want: Vec<i64> = (0..10).map(sqr).collect();
    assert_eq!(pool.map_async(sqr, 0..10).unwrap().get().unwrap(), want);
}

#[test]
fn test_map_async_callbacks() {
    let pool = mp::Pool::new(4).unwrap();
    let call_args = Arc::new(Mutex::new(Vec::<String>::new()));
    let (ok, err) = (call_args.clone(), call_args.clone());
    pool.map_async_with(
        |x: i64| x,
        vec![1i64],
        move |v: &Vec<i64>| ok.lock().unwrap().push(format!("{v:?}")),
        move |e: &mp::Error| err.lock().unwrap().push(e.to_string()),
    )
    .unwrap()
    .wait();
    assert_eq!(call_args.lock().unwrap().as_slice(), ["[1]"]);
    let (ok, err) = (call_args.clone(), call_args.clone());
    let r = pool
        .map_async_with(
            |_: i64| -> i64 { panic!("bad value") },
            vec![1i64],
            move |v: &Vec<i64>| ok.lock().unwrap().push(format!("{v:?}")),
            move |e: &mp::Error| err.lock().unwrap().push(e.to_string()),
        )
        .unwrap();
    r.wait();
    assert!(matches!(r.get(), Err(mp::Error::Remote { .. })));
    let calls = call_args.lock().unwrap();
    assert_eq!(calls.len(), 2);
    assert!(calls[1].contains("bad value"), "{calls:?}");
}

#[test]
fn test_async() {
    let pool = mp::Pool::new(4).unwrap();
    let r = pool.apply_async(sqr, 7).unwrap();
    assert_eq!(r.get().unwrap(), 49);
    assert!(r.ready());
    assert!(r.successful().unwrap());
}

#[test]
fn test_async_timeout() {
    let pool = mp::Pool::new(1).unwrap();
    let gate = mp::Event::new().unwrap();
    let g = gate.clone();
    let r = pool
        .apply_async(
            move |x: i64| {
                g.wait();
                sqr(x)
            },
            6,
        )
        .unwrap();
    let start = Instant::now();
    assert!(matches!(r.get_timeout(ms(100)), Err(mp::Error::Timeout)));
    assert!(start.elapsed() >= ms(100));
    assert!(matches!(r.successful(), Err(mp::Error::Value(_))));
    gate.set();
    assert_eq!(r.get().unwrap(), 36);
}

#[test]
fn test_imap() {
    let pool = mp::Pool::new(4).unwrap();
    let it = pool.imap(sqr, 0..10).unwrap();
    let want: Vec<i64> = (0..10).map(sqr).collect();
    assert_eq!(it.collect::<mp::Result<Vec<_>>>().unwrap(), want);

    let mut it = pool.imap(sqr, 0..10).unwrap();
    for i in 0..10 {
        assert_eq!(it.next().unwrap().unwrap(), i * i);
    }
    assert!(it.next().is_none());

    let it = pool.imap_with_chunksize(sqr, 0..1000, 100).unwrap();
    let want: Vec<i64> = (0..1000).map(sqr).collect();
    assert_eq!(it.collect::<mp::Result<Vec<_>>>().unwrap(), want);
}

#[test]
fn test_imap_unordered() {
    let pool = mp::Pool::new(4).unwrap();
    let mut got: Vec<i64> = pool
        .imap_unordered(sqr, 0..1000)
        .unwrap()
        .collect::<mp::Result<_>>()
        .unwrap();
    got.sort();
    assert_eq!(got, (0..1000).map(sqr).collect::<Vec<_>>());
    let mut got: Vec<i64> = pool
        .imap_unordered_with_chunksize(sqr, 0..1000, 53)
        .unwrap()
        .collect::<mp::Result<_>>()
        .unwrap();
    got.sort();
    assert_eq!(got, (0..1000).map(sqr).collect::<Vec<_>>());
}

#[test]
fn test_make_pool() {
    assert!(matches!(mp::Pool::new(0), Err(mp::Error::Value(_))));
    assert!(matches!(
        mp::Pool::builder().processes(1).maxtasksperchild(0).build(),
        Err(mp::Error::Value(_))
    ));
    let p = mp::Pool::new(3).unwrap();
    assert_eq!(p.processes(), 3);
    p.close();
    p.join().unwrap();
}

#[test]
fn test_terminate() {
    let pool = mp::Pool::new(4).unwrap();
    let stop = mp::Event::new().unwrap();
    let s = stop.clone();
    // 10000 tasks that each wait for `stop` (CPython: time.sleep(0.1) each).
    let r = pool
        .map_async_with_chunksize(move |_: u32| s.wait_timeout(ms(100)), 0..10_000u32, 1)
        .unwrap();
    let start = Instant::now();
    pool.terminate();
    pool.join().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(matches!(r.get(), Err(mp::Error::Closed)));
    stop.set();
}

#[test]
fn test_empty_iterable() {
    let p = mp::Pool::new(1).unwrap();
    assert_eq!(p.map(sqr, Vec::new()).unwrap(), Vec::<i64>::new());
    assert_eq!(p.imap(sqr, Vec::new()).unwrap().count(), 0);
    assert_eq!(p.imap_unordered(sqr, Vec::new()).unwrap().count(), 0);
    assert_eq!(
        p.map_async(sqr, Vec::new()).unwrap().get().unwrap(),
        Vec::<i64>::new()
    );
    p.close();
    p.join().unwrap();
}

#[test]
fn test_traceback() {
    let p = mp::Pool::new(1).unwrap();
    match p.apply(|_: ()| -> i32 { panic!("raised in a thread") }, ()) {
        Err(mp::Error::Remote {
            message,
            location,
            pid,
            ..
        }) => {
            assert_eq!(message, "raised in a thread");
            assert!(location.is_some_and(|l| l.contains("dummy.rs")));
            assert_eq!(pid, std::process::id());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn test_map_no_failfast() {
    // One failing item fails the map; the pool stays usable.
    let p = mp::Pool::new(2).unwrap();
    let r = p.map_with_chunksize(
        |x: i32| if x == 50 { panic!("fifty") } else { x },
        0..100,
        1,
    );
    assert!(matches!(r, Err(mp::Error::Remote { message, .. }) if message == "fifty"));
    assert_eq!(p.map(|x: i32| x + 1, 0..3).unwrap(), [1, 2, 3]);
}

#[test]
fn test_pool_worker_lifetime() {
    let p = mp::Pool::builder()
        .processes(3)
        .maxtasksperchild(10)
        .build()
        .unwrap();
    let results: Vec<_> = (0..100).map(|i| p.apply_async(sqr, i).unwrap()).collect();
    for (j, r) in results.iter().enumerate() {
        assert_eq!(r.get().unwrap(), sqr(j as i64));
    }
    p.close();
    p.join().unwrap();
}

#[test]
fn test_pool_initializer() {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let p = mp::Pool::builder()
        .processes(3)
        .initializer(
            move |step: usize| c.fetch_add(step, Ordering::SeqCst),
            2usize,
        )
        .build()
        .unwrap();
    p.close();
    p.join().unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 6);
}

#[test]
fn test_join_before_close() {
    let p = mp::Pool::new(1).unwrap();
    assert!(matches!(p.join(), Err(mp::Error::Value(_))));
    p.close();
    assert!(matches!(p.apply(sqr, 1), Err(mp::Error::Closed)));
    assert!(matches!(p.imap(sqr, 0..1), Err(mp::Error::Closed)));
    p.join().unwrap();
}

// ---------------------------------------------------------------------------
// _TestQueue

#[test]
fn test_put() {
    let q = mp::Queue::with_maxsize(6).unwrap();
    q.put(1).unwrap();
    q.put(2).unwrap();
    q.put_timeout(3, SHORT).unwrap();
    q.put_nowait(4).unwrap();
    q.put(5).unwrap();
    q.put(6).unwrap();
    assert_eq!(q.qsize(), 6);
    assert!(q.full());
    assert!(matches!(q.put_nowait(7), Err(mp::Error::Full)));
    let start = Instant::now();
    assert!(matches!(q.put_timeout(7, ms(100)), Err(mp::Error::Full)));
    assert!(start.elapsed() >= ms(100));
    for i in 1..=6 {
        assert_eq!(q.get().unwrap(), i);
    }
    assert!(q.empty());
}

#[test]
fn test_get() {
    let q = mp::Queue::new().unwrap();
    assert!(q.empty());
    for i in 1..=5 {
        q.put(i).unwrap();
    }
    assert_eq!(q.get().unwrap(), 1);
    assert_eq!(q.get_timeout(SHORT).unwrap(), 2);
    assert_eq!(q.get_nowait().unwrap(), 3);
    assert_eq!(q.get().unwrap(), 4);
    assert_eq!(q.get().unwrap(), 5);
    assert!(matches!(q.get_nowait(), Err(mp::Error::Empty)));
    let start = Instant::now();
    assert!(matches!(q.get_timeout(ms(100)), Err(mp::Error::Empty)));
    assert!(start.elapsed() >= ms(100));
}

#[test]
fn test_qsize() {
    let q = mp::Queue::new().unwrap();
    assert_eq!(q.qsize(), 0);
    q.put(1).unwrap();
    assert_eq!(q.qsize(), 1);
    q.put(5).unwrap();
    assert_eq!(q.qsize(), 2);
    q.get().unwrap();
    assert_eq!(q.qsize(), 1);
    q.get().unwrap();
    assert_eq!(q.qsize(), 0);
}

#[test]
fn test_task_done() {
    let queue = mp::JoinableQueue::<Option<u32>>::new().unwrap();
    let done = Arc::new(AtomicU32::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (q, d) = (queue.clone(), done.clone());
        let mut p = mp::Process::new(
            move |_: ()| {
                while let Some(x) = q.get().unwrap() {
                    d.fetch_add(x, Ordering::SeqCst);
                    q.task_done().unwrap();
                }
                q.task_done().unwrap();
            },
            (),
        );
        p.start().unwrap();
        workers.push(p);
    }
    for i in 0..10 {
        queue.put(Some(i)).unwrap();
    }
    let q = queue.clone();
    within(SHORT, "JoinableQueue::join", move || q.join());
    assert_eq!(done.load(Ordering::SeqCst), 45);
    for _ in &workers {
        queue.put(None).unwrap();
    }
    for mut p in workers {
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
    assert!(matches!(queue.task_done(), Err(mp::Error::Value(_))));
}

#[test]
fn test_closed_queue() {
    let q = mp::Queue::new().unwrap();
    q.put(1).unwrap();
    q.close();
    assert!(q.is_closed());
    assert!(matches!(q.put(2), Err(mp::Error::Closed)));
    assert!(matches!(q.get(), Err(mp::Error::Closed)));
}

// ---------------------------------------------------------------------------
// _TestLock

#[test]
fn test_lock() {
    let lock = mp::Lock::new().unwrap();
    lock.acquire();
    assert!(!lock.try_acquire());
    lock.release().unwrap();
    assert!(matches!(lock.release(), Err(mp::Error::Value(_))));
}

#[test]
fn test_rlock() {
    let lock = mp::RLock::new().unwrap();
    lock.acquire();
    lock.acquire();
    lock.acquire();
    lock.release().unwrap();
    lock.release().unwrap();
    lock.release().unwrap();
    assert!(matches!(lock.release(), Err(mp::Error::Value(_))));
}

#[test]
fn test_lock_context() {
    let lock = mp::Lock::new().unwrap();
    {
        let _g = lock.lock();
        assert!(lock.is_locked());
    }
    assert!(!lock.is_locked());
}

#[test]
fn test_rlock_not_owner() {
    // threading.RLock: only the owner releases (CPython: RuntimeError).
    let lock = mp::RLock::new().unwrap();
    lock.acquire();
    let l = lock.clone();
    let mut p = mp::Process::new(
        move |_: ()| assert!(matches!(l.release(), Err(mp::Error::Value(_)))),
        (),
    );
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    assert!(lock.is_owned());
    lock.release().unwrap();
}

// ---------------------------------------------------------------------------
// _TestSemaphore

fn check_semaphore(
    acquire: impl Fn() -> bool,
    try_acquire: impl Fn() -> bool,
    value: impl Fn() -> u32,
) {
    assert_eq!(value(), 2);
    assert!(acquire());
    assert_eq!(value(), 1);
    assert!(acquire());
    assert_eq!(value(), 0);
    assert!(!try_acquire());
    assert_eq!(value(), 0);
}

#[test]
fn test_semaphore() {
    let sem = mp::Semaphore::new(2).unwrap();
    check_semaphore(
        || {
            sem.acquire();
            true
        },
        || sem.try_acquire(),
        || sem.get_value(),
    );
    sem.release().unwrap();
    assert_eq!(sem.get_value(), 1);
    sem.release().unwrap();
    assert_eq!(sem.get_value(), 2);
    sem.release().unwrap();
    assert_eq!(sem.get_value(), 3);
}

#[test]
fn test_bounded_semaphore() {
    let sem = mp::BoundedSemaphore::new(2).unwrap();
    check_semaphore(
        || {
            sem.acquire();
            true
        },
        || sem.try_acquire(),
        || sem.get_value(),
    );
    sem.release().unwrap();
    sem.release().unwrap();
    assert!(matches!(sem.release(), Err(mp::Error::Value(_))));
}

#[test]
fn test_semaphore_timeout() {
    let sem = mp::Semaphore::new(0).unwrap();
    assert!(!sem.try_acquire());
    assert!(!sem.acquire_timeout(Duration::ZERO));
    let start = Instant::now();
    assert!(!sem.acquire_timeout(ms(100)));
    assert!(start.elapsed() >= ms(100));
}

// ---------------------------------------------------------------------------
// _TestCondition

/// A worker that waits on `cond` and reports when it has woken.
fn waiter(cond: &mp::Condition, sleeping: &mp::Semaphore, woken: &mp::Semaphore) -> mp::Process {
    let (c, s, w) = (cond.clone(), sleeping.clone(), woken.clone());
    let mut p = mp::Process::new(
        move |_: ()| {
            let _g = c.lock();
            s.release().unwrap();
            assert!(c.wait_timeout(SHORT).unwrap());
            w.release().unwrap();
        },
        (),
    );
    p.start().unwrap();
    p
}

#[test]
fn test_notify() {
    let cond = mp::Condition::new().unwrap();
    let sleeping = mp::Semaphore::new(0).unwrap();
    let woken = mp::Semaphore::new(0).unwrap();
    let mut ps: Vec<_> = (0..2).map(|_| waiter(&cond, &sleeping, &woken)).collect();
    for _ in 0..2 {
        assert!(sleeping.acquire_timeout(SHORT));
    }
    // Both hold the lock until inside wait(): taking it means both wait.
    {
        let _g = cond.lock();
        assert_eq!(woken.get_value(), 0);
        cond.notify().unwrap();
    }
    assert!(woken.acquire_timeout(SHORT));
    {
        let _g = cond.lock();
        cond.notify().unwrap();
    }
    assert!(woken.acquire_timeout(SHORT));
    for p in &mut ps {
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
}

#[test]
fn test_notify_all() {
    let cond = mp::Condition::new().unwrap();
    let sleeping = mp::Semaphore::new(0).unwrap();
    let woken = mp::Semaphore::new(0).unwrap();
    let mut ps: Vec<_> = (0..6).map(|_| waiter(&cond, &sleeping, &woken)).collect();
    for _ in 0..6 {
        assert!(sleeping.acquire_timeout(SHORT));
    }
    {
        let _g = cond.lock();
        cond.notify_all().unwrap();
    }
    for _ in 0..6 {
        assert!(woken.acquire_timeout(SHORT));
    }
    for p in &mut ps {
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
}

#[test]
fn test_notify_n() {
    let cond = mp::Condition::new().unwrap();
    let sleeping = mp::Semaphore::new(0).unwrap();
    let woken = mp::Semaphore::new(0).unwrap();
    let mut ps: Vec<_> = (0..6).map(|_| waiter(&cond, &sleeping, &woken)).collect();
    for _ in 0..6 {
        assert!(sleeping.acquire_timeout(SHORT));
    }
    {
        let _g = cond.lock();
        cond.notify_n(2).unwrap();
    }
    for _ in 0..2 {
        assert!(woken.acquire_timeout(SHORT));
    }
    {
        let _g = cond.lock();
        cond.notify_n(4).unwrap();
    }
    for _ in 0..4 {
        assert!(woken.acquire_timeout(SHORT));
    }
    for p in &mut ps {
        p.join().unwrap();
    }
}

#[test]
fn test_condition_timeout() {
    let cond = mp::Condition::new().unwrap();
    let _g = cond.lock();
    let start = Instant::now();
    assert!(!cond.wait_timeout(ms(100)).unwrap());
    assert!(start.elapsed() >= ms(100));
}

#[test]
fn test_waitfor() {
    let cond = mp::Condition::new().unwrap();
    let state = mp::Value::new(0i32).unwrap();
    let (c, s) = (cond.clone(), state.clone());
    let mut p = mp::Process::new(
        move |_: ()| {
            for _ in 0..4 {
                let _g = c.lock();
                *s.lock() += 1;
                c.notify().unwrap();
            }
        },
        (),
    );
    p.start().unwrap();
    {
        let _g = cond.lock();
        assert!(cond.wait_for(|| state.get() == 4).unwrap());
        assert_eq!(state.get(), 4);
    }
    p.join().unwrap();
    assert!(matches!(cond.wait(), Err(mp::Error::Value(_))));
    assert!(matches!(cond.notify(), Err(mp::Error::Value(_))));
}

// ---------------------------------------------------------------------------
// _TestEvent

#[test]
fn test_event() {
    let event = mp::Event::new().unwrap();
    assert!(!event.is_set());
    assert!(!event.wait_timeout(Duration::ZERO));
    assert!(!event.wait_timeout(ms(100)));
    event.set();
    assert!(event.is_set());
    event.wait();
    assert!(event.wait_timeout(ms(100)));
    event.clear();
    assert!(!event.is_set());
    let e = event.clone();
    let mut p = mp::Process::new(move |_: ()| e.set(), ());
    p.set_daemon(true);
    p.start().unwrap();
    let e = event.clone();
    within(SHORT, "Event::wait", move || e.wait());
    p.join().unwrap();
}

// ---------------------------------------------------------------------------
// _TestBarrier

fn run_parties(n: usize, f: impl Fn() + Send + Sync + 'static) {
    let f = Arc::new(f);
    let mut ps: Vec<mp::Process> = (0..n - 1)
        .map(|_| {
            let f = f.clone();
            let mut p = mp::Process::new(move |_: ()| f(), ());
            p.start().unwrap();
            p
        })
        .collect();
    f();
    for p in &mut ps {
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0), "{:?}", p.panic_error());
    }
}

#[test]
fn test_barrier() {
    const N: usize = 5;
    let b = mp::Barrier::new(N).unwrap();
    let passes = Arc::new(AtomicUsize::new(0));
    let (b2, p2) = (b.clone(), passes.clone());
    run_parties(N, move || {
        for _ in 0..3 {
            b2.wait_timeout(SHORT).unwrap();
            p2.fetch_add(1, Ordering::SeqCst);
        }
    });
    assert_eq!(passes.load(Ordering::SeqCst), 3 * N);
    assert_eq!(b.n_waiting(), 0);
    assert!(!b.is_broken());
}

#[test]
fn test_wait_return() {
    const N: usize = 5;
    let b = mp::Barrier::new(N).unwrap();
    let indices = Arc::new(Mutex::new(Vec::new()));
    let (b2, i2) = (b.clone(), indices.clone());
    run_parties(N, move || {
        let i = b2.wait_timeout(SHORT).unwrap();
        i2.lock().unwrap().push(i);
    });
    let mut got = indices.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, (0..N).collect::<Vec<_>>());
}

#[test]
fn test_action() {
    const N: usize = 5;
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let b = mp::Barrier::builder(N)
        .action(move || r.fetch_add(1, Ordering::SeqCst))
        .build()
        .unwrap();
    let b2 = b.clone();
    run_parties(N, move || {
        b2.wait_timeout(SHORT).unwrap();
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn test_abort() {
    const N: usize = 3;
    let b = mp::Barrier::new(N).unwrap();
    let broken = Arc::new(AtomicUsize::new(0));
    let (b2, br) = (b.clone(), broken.clone());
    // Two parties wait; the third aborts instead of waiting.
    let mut ps: Vec<mp::Process> = (0..2)
        .map(|_| {
            let (b, br) = (b2.clone(), br.clone());
            let mut p = mp::Process::new(
                move |_: ()| {
                    if matches!(b.wait_timeout(SHORT), Err(mp::Error::BrokenBarrier)) {
                        br.fetch_add(1, Ordering::SeqCst);
                    }
                },
                (),
            );
            p.start().unwrap();
            p
        })
        .collect();
    let b3 = b.clone();
    within(SHORT, "two parties waiting", move || {
        while b3.n_waiting() < 2 {
            std::thread::yield_now();
        }
    });
    b.abort();
    for p in &mut ps {
        p.join().unwrap();
    }
    assert_eq!(broken.load(Ordering::SeqCst), 2);
    assert!(b.is_broken());
    assert!(matches!(b.wait(), Err(mp::Error::BrokenBarrier)));
    b.reset();
    assert!(!b.is_broken());
}

#[test]
fn test_barrier_timeout() {
    let b = mp::Barrier::new(2).unwrap();
    let start = Instant::now();
    assert!(matches!(
        b.wait_timeout(ms(100)),
        Err(mp::Error::BrokenBarrier)
    ));
    assert!(start.elapsed() >= ms(100));
    assert!(b.is_broken());
    let d = mp::Barrier::builder(2).timeout(ms(50)).build().unwrap();
    assert!(matches!(d.wait(), Err(mp::Error::BrokenBarrier)));
    assert!(matches!(mp::Barrier::new(0), Err(mp::Error::Value(_))));
}

// ---------------------------------------------------------------------------
// _TestValue, _TestArray

#[test]
fn test_value() {
    let v = mp::Value::with_typecode('i', 5i32).unwrap();
    assert_eq!(v.get(), 5);
    v.set(7);
    *v.lock() += 1;
    assert_eq!(v.get(), 8);
    assert!(mp::Value::with_typecode('l', 5i32).is_err());
    let counter = mp::Value::new(0u64).unwrap();
    let c = counter.clone();
    let pool = mp::Pool::new(4).unwrap();
    pool.map(
        move |_: u32| {
            for _ in 0..1000 {
                *c.lock() += 1;
            }
        },
        0..8,
    )
    .unwrap();
    assert_eq!(counter.get(), 8000);
}

#[test]
fn test_array() {
    let a = mp::Array::<i32>::new(5).unwrap();
    assert_eq!(a.to_vec(), [0; 5]);
    let b = mp::Array::from_slice(&[1, 2, 3]).unwrap();
    b.set(0, 10);
    b.lock().iter_mut().for_each(|x| *x += 1);
    assert_eq!(b.to_vec(), [11, 3, 4]);
    assert_eq!(b.len(), 3);
}

// ---------------------------------------------------------------------------
// _TestManagerRestart-like: the dummy Manager's proxies

#[test]
fn test_manager_proxies() {
    let m = mp::Manager::new().unwrap();
    let d = m.dict::<String, u32>().unwrap();
    let l = m.list::<u32>().unwrap();
    let ns = m.namespace().unwrap();
    let lock = m.lock().unwrap();
    let q = m.queue::<u32>().unwrap();
    let pool = mp::Pool::new(4).unwrap();
    let (d2, l2, lock2, q2) = (d.clone(), l.clone(), lock.clone(), q.clone());
    pool.map(
        move |i: u32| {
            d2.insert(format!("k{i}"), i).unwrap();
            let _g = lock2.lock().unwrap();
            l2.push(i).unwrap();
            q2.put(i).unwrap();
        },
        0..10,
    )
    .unwrap();
    assert_eq!(d.len().unwrap(), 10);
    assert_eq!(d.get(&"k3".into()).unwrap(), Some(3));
    let mut items = l.to_vec().unwrap();
    items.sort();
    assert_eq!(items, (0..10).collect::<Vec<_>>());
    assert_eq!(q.qsize().unwrap(), 10);
    ns.set("x", "hello").unwrap();
    assert_eq!(ns.get::<String>("x").unwrap(), "hello");
    assert!(matches!(ns.get::<u8>("x"), Err(mp::Error::Value(_))));
    assert!(matches!(ns.del("nope"), Err(mp::Error::Key(_))));
    assert!(m.number_of_objects().unwrap() >= 5);
    m.shutdown().unwrap();
    assert_eq!(m.exitcode(), Some(0));
    assert!(matches!(d.len(), Err(mp::Error::Closed)));
    assert!(matches!(q.get_nowait(), Err(mp::Error::Closed)));
    assert!(matches!(lock.acquire(), Err(mp::Error::Closed)));
    assert!(lock.lock().is_err_and(|e| matches!(e, mp::Error::Closed)));
}

// ---------------------------------------------------------------------------
// Threads differ from processes (our own tests)

#[test]
fn thread_pool_is_dummy_pool() {
    let p: multiprocess::ThreadPool = mp::Pool::new(1).unwrap();
    assert_eq!(p.apply(|x: u8| x, 3).unwrap(), 3);
}

#[test]
fn captures_and_unserializable_arguments() {
    // A capturing closure and a channel end: neither could go to a process.
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let (tx, rx) = mpsc::channel::<u32>();
    let mut p = mp::Process::new(
        move |tx: mpsc::Sender<u32>| {
            l.lock().unwrap().push("ran");
            tx.send(42).unwrap();
        },
        tx,
    );
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(rx.recv().unwrap(), 42);
    assert_eq!(*log.lock().unwrap(), ["ran"]);
    // A non-serializable result through the pool.
    let pool = mp::Pool::new(2).unwrap();
    let r = pool.apply(|_: ()| Arc::new(Mutex::new(5)), ()).unwrap();
    assert_eq!(*r.lock().unwrap(), 5);
}

static GLOBAL: AtomicU32 = AtomicU32::new(0);

#[test]
fn a_global_changed_by_a_worker_is_seen() {
    let mut p = mp::Process::new(|v: u32| GLOBAL.store(v, Ordering::SeqCst), 17);
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(GLOBAL.load(Ordering::SeqCst), 17);
}

#[test]
fn a_panic_is_a_remote_error_and_the_pool_survives() {
    let pool = mp::Pool::new(1).unwrap();
    for _ in 0..3 {
        let r = pool.apply(|x: i32| -> i32 { panic!("task {x} failed") }, 9);
        assert!(matches!(r, Err(mp::Error::Remote { message, .. }) if message == "task 9 failed"));
    }
    assert_eq!(pool.worker_pids().len(), 1);
    assert_eq!(pool.apply(|x: i32| x + 1, 1).unwrap(), 2);
    let mut p = mp::Process::new(|_: ()| panic!("in a thread"), ());
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(1));
    assert!(
        matches!(p.panic_error(), Some(mp::Error::Remote { message, .. }) if message == "in a thread")
    );
}

#[test]
fn process_lifecycle_errors() {
    let mut p = mp::Process::new(|_: ()| (), ());
    assert!(matches!(p.join(), Err(mp::Error::Value(_))));
    assert!(p.pid().is_none());
    p.start().unwrap();
    assert!(matches!(p.start(), Err(mp::Error::Value(_))));
    assert_eq!(p.pid(), Some(std::process::id()));
    p.join().unwrap();
    // A thread cannot be terminated or killed: a clear error, no effect.
    assert!(matches!(p.terminate(), Err(mp::Error::Value(_))));
    assert!(matches!(p.kill(), Err(mp::Error::Value(_))));
    p.close().unwrap();
    assert!(matches!(p.join(), Err(mp::Error::Value(_))));
    assert!(mp::parent_process().is_none());
}

#[test]
fn terminate_fails_a_running_task() {
    let pool = mp::Pool::new(1).unwrap();
    let stop = mp::Event::new().unwrap();
    let s = stop.clone();
    let r = pool.apply_async(move |_: ()| s.wait(), ()).unwrap();
    let queued = pool.apply_async(|x: u8| x, 1).unwrap();
    pool.terminate();
    assert!(matches!(r.get(), Err(mp::Error::Closed)));
    assert!(matches!(queued.get(), Err(mp::Error::Closed)));
    stop.set();
    pool.join().unwrap();
}

#[test]
fn a_task_timeout_replaces_the_worker() {
    let pool = mp::Pool::new(1).unwrap();
    let stop = mp::Event::new().unwrap();
    let s = stop.clone();
    let r = pool
        .apply_async_timeout(move |_: ()| s.wait(), (), ms(100))
        .unwrap();
    assert!(matches!(r.get(), Err(mp::Error::Timeout)));
    // The busy thread cannot be killed; a fresh one serves the next task.
    assert_eq!(pool.apply(|x: u8| x * 2, 21).unwrap(), 42);
    stop.set();
    pool.close();
    pool.join().unwrap();
}

#[test]
fn imap_of_an_endless_input_stops_when_dropped() {
    let pool = mp::Pool::new(2).unwrap();
    let first: Vec<u64> = pool
        .imap(|x: u64| x * 2, 0u64..)
        .unwrap()
        .take(5)
        .collect::<mp::Result<_>>()
        .unwrap();
    assert_eq!(first, [0, 2, 4, 6, 8]);
    pool.close();
    pool.join().unwrap();
}

#[test]
fn active_children_and_current_process() {
    let stop = mp::Event::new().unwrap();
    let s = stop.clone();
    let mut p = mp::Process::new(
        move |_: ()| {
            assert_eq!(mp::current_process().name(), "waiter");
            s.wait();
        },
        (),
    );
    p.set_name("waiter");
    p.start().unwrap();
    assert!(mp::active_children().iter().any(|c| c.name() == "waiter"));
    assert!(p.is_alive());
    stop.set();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    assert!(mp::active_children().iter().all(|c| c.name() != "waiter"));
}

#[test]
fn no_fd_or_child_left_behind() {
    let _s = serial();
    let leaks = LeakCheck::new();
    {
        let pool = mp::Pool::new(3).unwrap();
        assert_eq!(pool.map(sqr, 0..100).unwrap().len(), 100);
        let (a, b) = mp::pipe(true).unwrap();
        let mut p = mp::Process::new(move |c: mp::Connection| c.send(&5u8).unwrap(), b);
        p.start().unwrap();
        assert_eq!(a.recv::<u8>().unwrap(), 5);
        p.join().unwrap();
        let m = mp::Manager::new().unwrap();
        m.dict::<u8, u8>().unwrap();
        pool.close();
        pool.join().unwrap();
    }
    leaks.check();
}

#[test]
fn manager_named_lookup_publish_create_and_pool() {
    struct Counter(i64);
    impl mp::SharedObject for Counter {
        type Init = i64;
        type Call = i64;
        type Reply = i64;
        fn new(start: i64) -> Self {
            Counter(start)
        }
        fn call(&mut self, add: i64) -> i64 {
            if add < 0 {
                panic!("negative");
            }
            self.0 += add;
            self.0
        }
    }
    let m = mp::Manager::new().unwrap();
    let c = m.create::<Counter>(10).unwrap();
    let c2 = c.clone();
    let pool = m.pool(2).unwrap();
    let got = pool
        .map(move |x: i64| c2.call(x).unwrap(), vec![1, 1, 1])
        .unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(c.call(0).unwrap(), 13);
    assert!(matches!(c.call(-1), Err(mp::Error::Remote { message, .. }) if message == "negative"));
    assert_eq!(c.call(1).unwrap(), 14);
    let r = pool.apply_async(|x: u8| x * 2, 4).unwrap();
    assert_eq!(r.get().unwrap(), 8);
    assert!(r.successful().unwrap());

    let a = m.named::<mp::DictProxy<String, u8>>("d", ()).unwrap();
    a.insert("k".into(), 1).unwrap();
    let b: mp::DictProxy<String, u8> = m.lookup("d").unwrap();
    assert_eq!(b.get(&"k".into()).unwrap(), Some(1));
    assert!(matches!(
        m.lookup::<mp::LockProxy>("d"),
        Err(mp::Error::Value(_))
    ));
    assert!(matches!(
        m.lookup::<mp::LockProxy>("none"),
        Err(mp::Error::Key(_))
    ));
    m.publish("c", &c).unwrap();
    assert_eq!(
        m.lookup::<mp::ObjectProxy<Counter>>("c")
            .unwrap()
            .call(0)
            .unwrap(),
        14
    );
    let other = mp::Manager::new().unwrap();
    let foreign = other.event().unwrap();
    assert!(matches!(m.publish("e", &foreign), Err(mp::Error::Value(_))));
    let ns = m.namespace_named("ns").unwrap();
    ns.set("x", &1u8).unwrap();
    assert_eq!(m.namespace_named("ns").unwrap().get::<u8>("x").unwrap(), 1);
    pool.close().unwrap();
    pool.join().unwrap();
    m.shutdown().unwrap();
    assert!(matches!(c.call(1), Err(mp::Error::Closed)));
    assert!(matches!(
        m.lookup::<mp::LockProxy>("d"),
        Err(mp::Error::Closed)
    ));
}

#[test]
fn join_from_a_callback_is_refused() {
    let pool = Arc::new(mp::Pool::new(1).unwrap());
    let p2 = pool.clone();
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    pool.close();
    // Closed: no new work; so use a second pool whose callback joins the first.
    let other = mp::Pool::new(1).unwrap();
    let r = other
        .apply_async_with(
            |x: u8| x,
            1,
            move |_: &u8| *s.lock().unwrap() = Some(p2.join().is_ok()),
            |_: &mp::Error| (),
        )
        .unwrap();
    r.get().unwrap();
    // Another pool's worker may join this pool.
    assert_eq!(*seen.lock().unwrap(), Some(true));
    let other = Arc::new(other);
    let o2 = other.clone();
    let own = Arc::new(Mutex::new(None));
    let s = own.clone();
    let gate = mp::Event::new().unwrap();
    let g = gate.clone();
    let r = other
        .apply_async_with(
            move |x: u8| {
                g.wait();
                x
            },
            1,
            move |_: &u8| *s.lock().unwrap() = Some(matches!(o2.join(), Err(mp::Error::Value(_)))),
            |_: &mp::Error| (),
        )
        .unwrap();
    other.close();
    gate.set();
    within(SHORT, "a callback that joins its own pool", move || {
        r.get().unwrap()
    });
    // Its own worker may not: it would wait for itself.
    assert_eq!(*own.lock().unwrap(), Some(true));
    other.join().unwrap();
}

#[test]
fn await_async_result_under_tokio() {
    // `AsyncResult` is a `std::future::Future` on threads too: awaited under
    // a current-thread runtime while the worker threads deliver, the last
    // one held back until the others are in.
    let pool = mp::Pool::new(2).unwrap();
    let gate = mp::Event::new().unwrap();
    let g = gate.clone();
    let held = pool
        .apply_async(
            move |x: i64| {
                g.wait();
                x
            },
            -1,
        )
        .unwrap();
    let rs: Vec<_> = (0..50).map(|i| pool.apply_async(sqr, i).unwrap()).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let got = within(SHORT, "awaiting the results", move || {
        rt.block_on(async move {
            let rest = futures_util::future::join_all(rs).await;
            gate.set();
            (rest, held.await)
        })
    });
    let rest: Vec<i64> = got.0.into_iter().collect::<mp::Result<_>>().unwrap();
    assert_eq!(rest, (0..50).map(sqr).collect::<Vec<_>>());
    assert_eq!(got.1.unwrap(), -1);
}
