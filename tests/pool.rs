//! `Pool`, `AsyncResult`, `IMapIterator`, with real worker processes.
//!
//! Ported from cpython: Lib/test/_test_multiprocessing.py (3.11.7, PSF licence):
//! `_TestPool`, `_TestPoolWorkerErrors`, `_TestPoolWorkerLifetime`,
//! `TestInitializers`. Changes: Python exceptions become `Error` variants
//! (`ValueError` → `Value`, `TimeoutError` → `Timeout`, a remote exception →
//! `Remote`, `MaybeEncodingError` → `Encode`); the `with Pool()` block is a
//! scope (drop = terminate); CPython's timing asserts become lower bounds plus
//! hang guards. Worker faults (SIGKILL, abort, segfault, `exit` mid-task),
//! task timeouts and lazy `imap` go beyond CPython (its pool hangs there).

multiprocess::test_support!();
mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{LONG, LeakCheck, SHORT, ms, within};
use multiprocess as mp;

fn sqr(x: i64) -> i64 {
    x * x
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// A value whose serialization always fails (CPython's unpicklable lambda).
#[derive(Debug)]
struct Unserializable;

impl serde::Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this value refuses to be serialized",
        ))
    }
}

impl<'de> serde::Deserialize<'de> for Unserializable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d).map(|_| Unserializable)
    }
}

/// Yields 0..n but panics when asked for item `fail_at` (CPython's
/// `exception_throwing_generator`).
struct Throwing {
    next: i64,
    n: i64,
    fail_at: i64,
}

impl Iterator for Throwing {
    type Item = i64;
    fn next(&mut self) -> Option<i64> {
        if self.next == self.fail_at {
            panic!("input iterator failed at {}", self.fail_at);
        }
        if self.next >= self.n {
            return None;
        }
        self.next += 1;
        Some(self.next - 1)
    }
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------
// _TestPool

// CPython: _TestPool.test_apply
#[test]
fn apply() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "apply", || {
        let pool = mp::Pool::new(4).unwrap();
        assert_eq!(pool.apply(sqr, 5).unwrap(), 25);
        assert_eq!(
            pool.apply(|(a, b): (i64, i64)| sqr(a + b), (2, 3)).unwrap(),
            25
        );
    });
}

// CPython: _TestPool.test_map, test_starmap, test_map_chunksize, test_map_async, test_starmap_async
#[test]
fn map_and_starmap() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "map", || {
        let pool = mp::Pool::new(4).unwrap();
        let expected: Vec<i64> = (0..10).map(sqr).collect();
        assert_eq!(pool.map(sqr, 0..10).unwrap(), expected);
        let expected: Vec<i64> = (0..100).map(sqr).collect();
        assert_eq!(pool.map_with_chunksize(sqr, 0..100, 20).unwrap(), expected);
        assert_eq!(pool.map_with_chunksize(sqr, 0..100, 1).unwrap(), expected);
        assert_eq!(
            pool.map_with_chunksize(sqr, 0..100, 1000).unwrap(),
            expected
        );
        assert_eq!(
            pool.map_async(sqr, 0..100).unwrap().get().unwrap(),
            expected
        );
        let pairs: Vec<(i64, i64)> = (0..10).map(|i| (i, i + 1)).collect();
        let mul = |(a, b): (i64, i64)| a * b;
        let expected: Vec<i64> = pairs.iter().map(|&(a, b)| a * b).collect();
        assert_eq!(pool.starmap(mul, pairs.clone()).unwrap(), expected);
        assert_eq!(
            pool.starmap_async(mul, pairs).unwrap().get().unwrap(),
            expected
        );
        assert!(matches!(
            pool.map_with_chunksize(sqr, 0..3, 0),
            Err(mp::Error::Value(_))
        ));
    });
}

/// The sizes of the runs of equal pids in `(item, pid)` results: with one task
/// per worker (`maxtasksperchild(1)`), each chunk runs in its own process, so
/// the runs are exactly the chunks.
fn chunk_sizes(results: &[(u32, u32)]) -> Vec<usize> {
    let mut sizes: Vec<usize> = Vec::new();
    let mut pids: Vec<u32> = Vec::new();
    for (i, &(item, pid)) in results.iter().enumerate() {
        assert_eq!(item as usize, i, "results in input order");
        if pids.last() == Some(&pid) {
            *sizes.last_mut().unwrap() += 1;
        } else {
            assert!(!pids.contains(&pid), "one worker per chunk");
            pids.push(pid);
            sizes.push(1);
        }
    }
    sizes
}

fn item_and_pid(x: u32) -> (u32, u32) {
    (x, std::process::id())
}

fn pair_and_pid((x, _y): (u32, u32)) -> (u32, u32) {
    (x, std::process::id())
}

// CPython: _TestPool.test_map_chunksize, test_starmap (chunksize), test_starmap_async
#[test]
fn async_and_starmap_chunksizes() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "chunksizes", || {
        let pool = mp::Pool::builder()
            .processes(2)
            .maxtasksperchild(1)
            .build()
            .unwrap();
        let pairs: Vec<(u32, u32)> = (0..10).map(|i| (i, i + 1)).collect();
        let r = pool
            .map_async_with_chunksize(item_and_pid, 0..10, 3)
            .unwrap();
        assert_eq!(chunk_sizes(&r.get().unwrap()), [3, 3, 3, 1]);
        let r = pool.starmap_with_chunksize(pair_and_pid, pairs.clone(), 4);
        assert_eq!(chunk_sizes(&r.unwrap()), [4, 4, 2]);
        let r = pool
            .starmap_async_with_chunksize(pair_and_pid, pairs.clone(), 10)
            .unwrap();
        assert_eq!(chunk_sizes(&r.get().unwrap()), [10]);
        // Python's default: ceil(17 / (4 * 2)) = 3 items per chunk.
        let r = pool.map_async(item_and_pid, 0..17).unwrap();
        assert_eq!(chunk_sizes(&r.get().unwrap()), [3, 3, 3, 3, 3, 2]);
        let r = pool.starmap_async(pair_and_pid, (0..17).map(|i| (i, 0)));
        assert_eq!(chunk_sizes(&r.unwrap().get().unwrap()), [3, 3, 3, 3, 3, 2]);
        // Deliberately not Python's: its map/starmap (async too) return
        // `[None] * len` for chunksize 0 without running anything (its imap
        // raises ValueError("Chunksize must be 1+, not 0")); ours refuse.
        assert!(matches!(
            pool.map_async_with_chunksize(item_and_pid, 0..3, 0),
            Err(mp::Error::Value(_))
        ));
        assert!(matches!(
            pool.starmap_with_chunksize(pair_and_pid, pairs.clone(), 0),
            Err(mp::Error::Value(_))
        ));
        assert!(matches!(
            pool.starmap_async_with_chunksize(pair_and_pid, pairs, 0),
            Err(mp::Error::Value(_))
        ));
        pool.close();
        pool.join().unwrap();
    });
}

// CPython: _TestPool.test_map_async_callbacks
#[test]
fn map_async_callbacks() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "map_async callbacks", || {
        let pool = mp::Pool::new(2).unwrap();
        let got: Arc<Mutex<Vec<String>>> = Arc::default();
        let (g1, g2) = (got.clone(), got.clone());
        let r = pool
            .map_async_with(
                sqr,
                0..10,
                move |v: &Vec<i64>| g1.lock().unwrap().push(format!("ok {v:?}")),
                move |e: &mp::Error| g2.lock().unwrap().push(format!("err {e}")),
            )
            .unwrap();
        r.wait();
        let expected: Vec<i64> = (0..10).map(sqr).collect();
        assert_eq!(*got.lock().unwrap(), [format!("ok {expected:?}")]);
        got.lock().unwrap().clear();
        let (g1, g2) = (got.clone(), got.clone());
        let r = pool
            .map_async_with(
                |x: i64| if x == 3 { panic!("three") } else { x },
                0..10,
                move |v: &Vec<i64>| g1.lock().unwrap().push(format!("ok {v:?}")),
                move |e: &mp::Error| g2.lock().unwrap().push(format!("err {e}")),
            )
            .unwrap();
        assert!(matches!(r.get(), Err(mp::Error::Remote { .. })));
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("err ") && got[0].contains("three"),
            "{got:?}"
        );
    });
}

// CPython: _TestPool.test_map_unplicklable
#[test]
fn map_unserializable_argument_fails_in_the_caller() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "map unserializable", || {
        let pool = mp::Pool::new(2).unwrap();
        let r = pool.map(
            |_: Unserializable| 1u8,
            vec![Unserializable, Unserializable],
        );
        assert!(matches!(r, Err(mp::Error::Encode(_))), "{r:?}");
        let r = pool.apply_async(|_: Unserializable| 1u8, Unserializable);
        assert!(matches!(r, Err(mp::Error::Encode(_))));
        assert_eq!(pool.apply(sqr, 3).unwrap(), 9);
    });
}

// CPython: _TestPool.test_map_async (empty, chunksize=1), test_empty_iterable
#[test]
fn empty_iterables() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "empty", || {
        let pool = mp::Pool::new(2).unwrap();
        let empty: Vec<i64> = Vec::new();
        assert_eq!(pool.map(sqr, empty.clone()).unwrap(), empty);
        let r = pool.map_async(sqr, empty.clone()).unwrap();
        assert!(r.ready());
        assert_eq!(r.get().unwrap(), empty);
        assert_eq!(pool.imap(sqr, empty.clone()).unwrap().count(), 0);
        assert_eq!(pool.imap_unordered(sqr, empty.clone()).unwrap().count(), 0);
        assert_eq!(
            pool.map_with_chunksize(sqr, empty, 1).unwrap(),
            Vec::<i64>::new()
        );
    });
}

// CPython: _TestPool.test_map_handle_iterable_exception
#[test]
fn map_input_panic_reaches_the_caller() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "map input panic", || {
        let pool = mp::Pool::new(2).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.map(
                sqr,
                Throwing {
                    next: 0,
                    n: 10,
                    fail_at: 3,
                },
            )
        }));
        assert!(r.is_err(), "the iterator's panic reaches map's caller");
        assert_eq!(pool.map(sqr, 0..3).unwrap(), [0, 1, 4]);
    });
}

// CPython: _TestPool.test_imap_handle_iterable_exception,
// test_imap_unordered_handle_iterable_exception
#[test]
fn imap_input_panic_is_raised_at_its_chunk() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "imap input panic", || {
        let pool = mp::Pool::new(2).unwrap();
        for (chunksize, fail_at, yielded) in
            [(1usize, 3i64, 3usize), (2, 3, 2), (4, 7, 4), (4, 8, 8)]
        {
            let mut it = pool
                .imap_with_chunksize(
                    sqr,
                    Throwing {
                        next: 0,
                        n: 20,
                        fail_at,
                    },
                    chunksize,
                )
                .unwrap();
            let mut got = Vec::new();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                for x in it.by_ref() {
                    got.push(x.unwrap());
                }
            }));
            assert!(
                r.is_err(),
                "chunksize {chunksize}: the panic is raised again"
            );
            assert_eq!(
                got,
                (0..yielded as i64).map(sqr).collect::<Vec<_>>(),
                "chunksize {chunksize}"
            );
            let mut it = pool
                .imap_unordered_with_chunksize(
                    sqr,
                    Throwing {
                        next: 0,
                        n: 20,
                        fail_at,
                    },
                    chunksize,
                )
                .unwrap();
            let mut got = Vec::new();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                for x in it.by_ref() {
                    got.push(x.unwrap());
                }
            }));
            assert!(r.is_err());
            got.sort();
            assert_eq!(got, (0..yielded as i64).map(sqr).collect::<Vec<_>>());
        }
    });
}

// CPython: _TestPool.test_async, test_async_timeout
#[test]
fn async_result_and_timeouts() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "async", || {
        let pool = mp::Pool::new(2).unwrap();
        // The task finishes only once `go` is set, so however slowly this
        // thread runs, the result cannot be ready before then.
        let go = mp::Event::new().unwrap();
        let r = pool
            .apply_async(
                |(x, go): (i64, mp::Event)| {
                    assert!(go.wait_timeout(SHORT), "hang guard: go never set");
                    sqr(x)
                },
                (7, go.clone()),
            )
            .unwrap();
        assert!(matches!(r.successful(), Err(mp::Error::Value(_))));
        let start = Instant::now();
        assert!(matches!(r.get_timeout(ms(50)), Err(mp::Error::Timeout)));
        assert!(start.elapsed() >= ms(50));
        assert!(!r.wait_timeout(ms(1)));
        assert!(!r.ready());
        go.set();
        assert_eq!(r.get().unwrap(), 49);
        assert!(r.ready());
        assert!(r.successful().unwrap());
        assert!(
            matches!(r.get(), Err(mp::Error::Value(_))),
            "the value moved out on the first get"
        );
        let r = pool
            .apply_async(|_: ()| -> i64 { panic!("twice") }, ())
            .unwrap();
        assert!(r.wait_timeout(SHORT));
        assert!(!r.successful().unwrap());
        for _ in 0..2 {
            assert!(
                matches!(r.get(), Err(mp::Error::Remote { ref message, .. }) if message == "twice")
            );
        }
    });
}

// CPython: _TestPool.test_imap, test_imap_unordered
#[test]
fn imap_orders_and_unordered_has_the_same_items() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "imap", || {
        let pool = mp::Pool::new(4).unwrap();
        let expected: Vec<i64> = (0..10).map(sqr).collect();
        let got: Vec<i64> = pool.imap(sqr, 0..10).unwrap().map(Result::unwrap).collect();
        assert_eq!(got, expected);
        let mut it = pool.imap(sqr, 0..10).unwrap();
        for e in &expected {
            assert_eq!(it.next().unwrap().unwrap(), *e);
        }
        assert!(it.next().is_none());
        let expected: Vec<i64> = (0..1000).map(sqr).collect();
        let got: Vec<i64> = pool
            .imap_with_chunksize(sqr, 0..1000, 100)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, expected);
        let mut got: Vec<i64> = pool
            .imap_unordered(sqr, 0..1000)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        got.sort();
        assert_eq!(got, expected);
        let mut got: Vec<i64> = pool
            .imap_unordered_with_chunksize(sqr, 0..1000, 53)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        got.sort();
        assert_eq!(got, expected);
        assert!(matches!(
            pool.imap_with_chunksize(sqr, 0..3, 0),
            Err(mp::Error::Value(_))
        ));
    });
}

// CPython: _TestPool.test_make_pool
#[test]
fn make_pool() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "make pool", || {
        assert!(matches!(mp::Pool::new(0), Err(mp::Error::Value(_))));
        let pool = mp::Pool::new(3).unwrap();
        assert_eq!(pool.processes(), 3);
        assert_eq!(pool.worker_pids().len(), 3);
        pool.close();
        pool.join().unwrap();
        assert!(pool.worker_pids().is_empty());
    });
}

// CPython: _TestPool.test_terminate
#[test]
fn terminate_with_ten_thousand_long_tasks_is_prompt() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "terminate", || {
        let pool = mp::Pool::new(4).unwrap();
        let r = pool
            .map_async(|_: u32| sleep_ms(100_000), 0..10_000)
            .unwrap();
        let singles: Vec<_> = (0..1000)
            .map(|_| pool.apply_async(|_: ()| sleep_ms(100_000), ()).unwrap())
            .collect();
        // Hang guard: terminate and join must not wait for the tasks.
        within(SHORT, "terminate() with 11 000 tasks", move || {
            pool.terminate();
            pool.join().unwrap();
        });
        assert!(matches!(r.get(), Err(mp::Error::Closed)));
        assert!(
            singles
                .iter()
                .all(|s| matches!(s.get(), Err(mp::Error::Closed)))
        );
    });
}

// CPython: _TestPool.test_context, test_enter (with Pool() as p: ... → a scope)
#[test]
fn drop_terminates_and_closed_pools_refuse_work() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "drop", || {
        let pending = {
            let pool = mp::Pool::new(2).unwrap();
            assert_eq!(pool.apply(sqr, 4).unwrap(), 16);
            pool.apply_async(|_: ()| sleep_ms(100_000), ()).unwrap()
        };
        assert!(matches!(pending.get(), Err(mp::Error::Closed)));

        let pool = mp::Pool::new(1).unwrap();
        pool.terminate();
        pool.join().unwrap();
        assert!(matches!(pool.map_async(sqr, 0..3), Err(mp::Error::Closed)));
        assert!(matches!(pool.apply(sqr, 1), Err(mp::Error::Closed)));
        assert!(matches!(pool.imap(sqr, 0..3), Err(mp::Error::Closed)));
        pool.terminate(); // idempotent
        pool.close();

        let pool = mp::Pool::new(1).unwrap();
        assert!(
            matches!(pool.join(), Err(mp::Error::Value(_))),
            "join before close"
        );
        pool.close();
        assert!(matches!(pool.apply_async(sqr, 1), Err(mp::Error::Closed)));
        assert!(matches!(pool.map(sqr, 0..2), Err(mp::Error::Closed)));
        assert!(matches!(
            pool.imap_unordered(sqr, 0..2),
            Err(mp::Error::Closed)
        ));
        pool.join().unwrap();
        pool.join().unwrap();
    });
}

// CPython: _TestPool.test_traceback, test_wrapped_exception
#[test]
fn remote_panic_keeps_message_and_location() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "traceback", || {
        let pool = mp::Pool::new(1).unwrap();
        match pool.apply(|x: i64| -> i64 { panic!("bad value {x}") }, 123) {
            Err(mp::Error::Remote {
                process,
                pid,
                message,
                location,
                ..
            }) => {
                assert_eq!(message, "bad value 123");
                assert!(process.starts_with("PoolWorker-"), "{process}");
                assert_eq!(vec![pid], pool.worker_pids());
                assert!(location.is_some_and(|l| l.contains("pool.rs")));
            }
            other => panic!("{other:?}"),
        }
        // The worker survives a panic (no replacement).
        let pids = pool.worker_pids();
        assert_eq!(pool.apply(sqr, 2).unwrap(), 4);
        assert_eq!(pool.worker_pids(), pids);
    });
}

// CPython: _TestPool.test_map_no_failfast
#[test]
fn failing_map_waits_for_all_chunks() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "no failfast", || {
        let pool = mp::Pool::new(2).unwrap();
        let (rx, tx) = mp::pipe(false).unwrap();
        let items: Vec<(u32, mp::Connection)> =
            (0..6).map(|i| (i, tx.try_clone().unwrap())).collect();
        drop(tx);
        let r = pool.map_with_chunksize(
            |(i, done): (u32, mp::Connection)| {
                if i == 0 {
                    panic!("first fails at once");
                }
                sleep_ms(50);
                done.send(&i).unwrap();
            },
            items,
            1,
        );
        assert!(matches!(r, Err(mp::Error::Remote { .. })));
        // Each task sent its number before it returned, so once map has
        // returned all five are already in the pipe: no waiting here.
        let mut seen: Vec<u32> = Vec::new();
        for _ in 0..5 {
            assert!(rx.poll().unwrap(), "a task still ran when map returned");
            seen.push(rx.recv().unwrap());
        }
        seen.sort();
        assert_eq!(
            seen,
            [1, 2, 3, 4, 5],
            "every other task finished before map returned"
        );
        pool.close();
        pool.join().unwrap();
    });
}

// ---------------------------------------------------------------------------
// _TestPoolWorkerErrors

// CPython: _TestPoolWorkerErrors.test_async_error_callback
#[test]
fn async_error_callback() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "error callback", || {
        let pool = mp::Pool::new(2).unwrap();
        let got: Arc<Mutex<Option<String>>> = Arc::default();
        let g = got.clone();
        let ok_called = Arc::new(AtomicBool::new(false));
        let o = ok_called.clone();
        let r = pool
            .apply_async_with(
                |_: ()| -> i64 { panic!("KeyError") },
                (),
                move |_: &i64| o.store(true, Ordering::SeqCst),
                move |e: &mp::Error| *g.lock().unwrap() = Some(e.to_string()),
            )
            .unwrap();
        assert!(matches!(r.get(), Err(mp::Error::Remote { .. })));
        assert!(
            got.lock()
                .unwrap()
                .as_deref()
                .is_some_and(|m| m.contains("KeyError"))
        );
        assert!(!ok_called.load(Ordering::SeqCst));
    });
}

// CPython: _TestPoolWorkerErrors.test_unpickleable_result
#[test]
fn unserializable_result_is_an_encode_error_and_the_worker_survives() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "unserializable result", || {
        let pool = mp::Pool::new(2).unwrap();
        let pids = pool.worker_pids();
        for _ in 0..20 {
            let errors = Arc::new(AtomicUsize::new(0));
            let e = errors.clone();
            let r = pool
                .apply_async_with(
                    |_: ()| Unserializable,
                    (),
                    |_| {},
                    move |_| {
                        e.fetch_add(1, Ordering::SeqCst);
                    },
                )
                .unwrap();
            assert!(
                matches!(r.get(), Err(mp::Error::Encode(_))),
                "{:?}",
                r.get()
            );
            assert_eq!(errors.load(Ordering::SeqCst), 1);
        }
        assert_eq!(pool.worker_pids(), pids, "no worker was lost");
    });
}

// ---------------------------------------------------------------------------
// _TestPoolWorkerLifetime

// CPython: _TestPoolWorkerLifetime.test_pool_worker_lifetime
#[test]
fn maxtasksperchild_replaces_workers() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "worker lifetime", || {
        let pool = mp::Pool::builder()
            .processes(3)
            .maxtasksperchild(10)
            .build()
            .unwrap();
        let first = pool.worker_pids();
        assert_eq!(first.len(), 3);
        let results: Vec<_> = (0..100)
            .map(|i| {
                pool.apply_async(|i: i64| (sqr(i), std::process::id()), i)
                    .unwrap()
            })
            .collect();
        let mut ran_in = std::collections::BTreeSet::new();
        for (i, r) in results.iter().enumerate() {
            let (v, pid) = r.get().unwrap();
            assert_eq!(v, sqr(i as i64));
            ran_in.insert(pid);
        }
        assert!(
            ran_in.len() >= 10,
            "100 tasks at 10 per worker need at least 10 workers: {ran_in:?}"
        );
        assert!(
            ran_in.iter().any(|p| !first.contains(p)),
            "the pids changed"
        );
        // The pool keeps 3 workers: the last retirements are replaced too
        // (polling the pool's view is a hang guard, not synchronisation).
        let deadline = Instant::now() + SHORT;
        while pool.worker_pids().len() != 3 || pool.worker_pids().iter().any(|p| first.contains(p))
        {
            assert!(
                Instant::now() < deadline,
                "the pool did not get back to 3 fresh workers"
            );
            sleep_ms(5);
        }
        pool.close();
        pool.join().unwrap();
    });
}

// CPython: _TestPoolWorkerLifetime.test_pool_worker_lifetime_early_close
#[test]
fn maxtasksperchild_with_early_close() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "early close", || {
        let pool = mp::Pool::builder()
            .processes(3)
            .maxtasksperchild(1)
            .build()
            .unwrap();
        let results: Vec<_> = (0..6)
            .map(|i| {
                pool.apply_async(
                    |(ms, i): (u64, i64)| {
                        sleep_ms(ms);
                        sqr(i)
                    },
                    (10, i),
                )
                .unwrap()
            })
            .collect();
        pool.close();
        pool.join().unwrap();
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r.get().unwrap(), sqr(i as i64));
        }
    });
}

// CPython: _TestPoolWorkerLifetime.test_pool_maxtasksperchild_invalid
#[test]
fn maxtasksperchild_zero_is_invalid() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    assert!(matches!(
        mp::Pool::builder().processes(2).maxtasksperchild(0).build(),
        Err(mp::Error::Value(_))
    ));
}

// ---------------------------------------------------------------------------
// TestInitializers

// CPython: TestInitializers.test_pool_initializer (plus replacements)
#[test]
fn initializer_runs_once_in_every_worker_replacements_included() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "initializer", || {
        // A pool with no task: close + join still waits for the initializer.
        let (rx, tx) = mp::pipe(false).unwrap();
        let pool = mp::Pool::builder()
            .processes(1)
            .initializer(|c: mp::Connection| c.send(&std::process::id()).unwrap(), tx)
            .build()
            .unwrap();
        pool.close();
        pool.join().unwrap();
        let _: u32 = rx.recv().unwrap();
        assert!(
            matches!(rx.recv::<u32>(), Err(mp::Error::Eof)),
            "once per worker"
        );

        // Replacements run it too, before their first task.
        let (rx, tx) = mp::pipe(false).unwrap();
        let pool = mp::Pool::builder()
            .processes(2)
            .maxtasksperchild(1)
            .initializer(|c: mp::Connection| c.send(&std::process::id()).unwrap(), tx)
            .build()
            .unwrap();
        let ran_in: Vec<u32> = pool
            .map_with_chunksize(|_: u8| std::process::id(), 0..4u8, 1)
            .unwrap();
        pool.close();
        pool.join().unwrap();
        let mut inited = Vec::new();
        while let Ok(pid) = rx.recv::<u32>() {
            inited.push(pid);
        }
        for pid in &ran_in {
            assert!(
                inited.contains(pid),
                "worker {pid} ran a task without its initializer ({inited:?})"
            );
        }
        assert!(inited.len() >= 4, "{inited:?}");
    });
}

#[test]
fn panicking_initializer_breaks_the_pool_instead_of_hanging() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "broken initializer", || {
        let pool = mp::Pool::builder()
            .processes(2)
            .initializer(|_: ()| panic!("no database"), ())
            .build()
            .unwrap();
        let r = pool.apply_async(sqr, 3);
        let e = match r {
            Ok(r) => r.get().unwrap_err(),
            Err(e) => e,
        };
        assert!(
            matches!(&e, mp::Error::Remote { message, .. } if message.contains("initializer") && message.contains("no database")),
            "{e:?}"
        );
        pool.close();
        pool.join().unwrap();
    });
}

// ---------------------------------------------------------------------------
// Beyond CPython: callbacks, handles, lazy imap, timeouts

#[test]
fn callbacks_run_on_one_handler_thread_before_get_returns() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "callbacks", || {
        let pool = mp::Pool::new(2).unwrap();
        let threads: Arc<Mutex<Vec<String>>> = Arc::default();
        let results: Vec<_> = (0..20)
            .map(|i| {
                let t = threads.clone();
                let flag = Arc::new(AtomicBool::new(false));
                let f = flag.clone();
                let r = pool
                    .apply_async_with(
                        sqr,
                        i,
                        move |_: &i64| {
                            t.lock()
                                .unwrap()
                                .push(std::thread::current().name().unwrap_or("").to_string());
                            f.store(true, Ordering::SeqCst);
                        },
                        |_| {},
                    )
                    .unwrap();
                (r, flag)
            })
            .collect();
        for (i, (r, flag)) in results.iter().enumerate() {
            assert_eq!(r.get().unwrap(), sqr(i as i64));
            assert!(
                flag.load(Ordering::SeqCst),
                "the callback ran before get() returned"
            );
        }
        let t = threads.lock().unwrap();
        assert_eq!(t.len(), 20);
        assert!(t.iter().all(|n| n == &t[0]) && t[0] != "main");
    });
}

#[test]
fn terminate_from_a_callback_does_not_deadlock() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "terminate in callback", || {
        let pool = Arc::new(mp::Pool::new(1).unwrap());
        let p = pool.clone();
        let r = pool
            .apply_async_with(
                |_: ()| -> u8 { panic!("x") },
                (),
                |_| {},
                move |_| {
                    p.terminate();
                    assert!(matches!(p.join(), Err(mp::Error::Value(_))));
                },
            )
            .unwrap();
        assert!(r.get().is_err());
        pool.join().unwrap();
        drop(pool);
    });
}

// The seed (groupby_apply): a Pipe end travels inside map parameters.
#[test]
fn handles_travel_inside_tasks_and_results() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "handles", || {
        let pool = mp::Pool::new(2).unwrap();
        let (parent, child) = mp::pipe(true).unwrap();
        let params: Vec<(u32, mp::Connection)> =
            (0..4).map(|i| (i, child.try_clone().unwrap())).collect();
        drop(child);
        let out = pool
            .map_with_chunksize(
                |(i, c): (u32, mp::Connection)| {
                    c.send(&format!("worker {i} done")).unwrap();
                    i * 2
                },
                params,
                1,
            )
            .unwrap();
        assert_eq!(out, [0, 2, 4, 6]);
        let mut msgs = Vec::new();
        while let Ok(m) = parent.recv::<String>() {
            msgs.push(m);
        }
        msgs.sort();
        assert_eq!(
            msgs,
            [
                "worker 0 done",
                "worker 1 done",
                "worker 2 done",
                "worker 3 done"
            ]
        );
        // A result may carry a handle back.
        let c: mp::Connection = pool
            .apply(
                |_: ()| {
                    let (a, b) = mp::pipe(true).unwrap();
                    a.send(&"from a worker".to_string()).unwrap();
                    drop(a);
                    b
                },
                (),
            )
            .unwrap();
        assert_eq!(c.recv::<String>().unwrap(), "from a worker");
    });
}

#[test]
fn endless_imap_is_lazy_and_dropping_it_frees_the_pool() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "endless imap", || {
        let pool = mp::Pool::new(2).unwrap();
        let read = Arc::new(AtomicUsize::new(0));
        let r = read.clone();
        let counted = (0u64..).inspect(move |_| {
            r.fetch_add(1, Ordering::SeqCst);
        });
        let mut it = pool.imap(|x: u64| x + 1, counted).unwrap();
        for want in 1..=100u64 {
            assert_eq!(it.next().unwrap().unwrap(), want);
        }
        let after_100 = read.load(Ordering::SeqCst);
        assert!(
            after_100 < 100 + 1000,
            "bounded read-ahead: {after_100} items read for 100 consumed"
        );
        drop(it);
        assert_eq!(
            pool.map(sqr, 0..4).unwrap(),
            [0, 1, 4, 9],
            "the pool serves other work"
        );
        let unordered = pool.imap_unordered(sqr, 0i64..).unwrap();
        assert_eq!(unordered.take(10).count(), 10);
        pool.close();
        pool.join().unwrap();
    });
}

/// Takes `n` results of `f` over `0..` by `imap` in chunks of `chunksize`,
/// checking each against `want` and that the feeder has read at most `bound`
/// items ahead of the consumer.
fn read_ahead_stays_under<F, R>(
    pool: &mp::Pool,
    f: F,
    chunksize: usize,
    n: u64,
    bound: u64,
    want: impl Fn(u64) -> R,
) where
    F: Fn(u64) -> R,
    R: serde::Serialize
        + serde::de::DeserializeOwned
        + PartialEq
        + std::fmt::Debug
        + Send
        + 'static,
{
    let read = Arc::new(AtomicUsize::new(0));
    let r = read.clone();
    let counted = (0u64..).inspect(move |_| {
        r.fetch_add(1, Ordering::SeqCst);
    });
    let mut it = pool.imap_with_chunksize(f, counted, chunksize).unwrap();
    for i in 0..n {
        assert_eq!(it.next().unwrap().unwrap(), want(i));
        let ahead = read.load(Ordering::SeqCst) as u64 - (i + 1);
        assert!(
            ahead <= bound,
            "chunksize {chunksize}: read {ahead} items ahead of the consumer"
        );
    }
}

#[test]
fn imap_feeder_refills_window_after_window_and_stays_bounded() {
    // The feeder sleeps once its read-ahead is full and is woken only when
    // the consumer has drained it to half: consuming many windows' worth
    // must neither hang nor let the feeder run ahead of the bound.
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "imap refills", || {
        let pool = mp::Pool::new(2).unwrap();
        // 256 chunks of 4 items read ahead at most (the read-ahead of
        // small chunks), plus the chunk the feeder reads as it stops.
        read_ahead_stays_under(&pool, |x: u64| x * 3, 4, 4_000, 257 * 4, |i| i * 3);
        // Chunks of 512 items keep the least read-ahead, 32 chunks.
        read_ahead_stays_under(&pool, |x: u64| x * 3, 512, 80_000, 33 * 512, |i| i * 3);
        // Small chunks with big results (20 KB each, more than a ring record)
        // keep the least read-ahead too: the results held stay few.
        let big = |x: u64| vec![x as u8; 20_000];
        read_ahead_stays_under(&pool, big, 1, 400, 33, big);
        pool.close();
        pool.join().unwrap();
    });
}

#[test]
fn imap_next_timeout() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "imap next_timeout", || {
        let pool = mp::Pool::new(1).unwrap();
        // The first item is held until `go` is set: its `next_timeout` times
        // out however slowly this thread runs.
        let go = mp::Event::new().unwrap();
        let mut it = pool
            .imap(
                |(x, go): (u64, Option<mp::Event>)| {
                    if let Some(go) = go {
                        assert!(go.wait_timeout(SHORT), "hang guard: go never set");
                    }
                    x
                },
                vec![(300, Some(go.clone())), (0, None)],
            )
            .unwrap();
        let start = Instant::now();
        assert!(matches!(
            it.next_timeout(ms(20)),
            Some(Err(mp::Error::Timeout))
        ));
        assert!(start.elapsed() >= ms(20));
        go.set();
        assert_eq!(it.next_timeout(SHORT).unwrap().unwrap(), 300);
        assert_eq!(it.next().unwrap().unwrap(), 0);
        assert!(it.next_timeout(ms(1)).is_none());
    });
}

#[test]
fn imap_failed_chunk_yields_one_error_and_goes_on() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "imap error", || {
        let pool = mp::Pool::new(2).unwrap();
        let got: Vec<mp::Result<i64>> = pool
            .imap(|x: i64| if x == 2 { panic!("two") } else { x }, 0..5)
            .unwrap()
            .collect();
        assert_eq!(got.len(), 5);
        assert!(matches!(&got[2], Err(mp::Error::Remote { message, .. }) if message == "two"));
        let ok: Vec<i64> = got.into_iter().filter_map(Result::ok).collect();
        assert_eq!(ok, [0, 1, 3, 4]);
    });
}

#[test]
fn task_timeout_kills_and_replaces_the_worker() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "task timeout", || {
        // Long enough that the quick tasks below never overrun it, even with
        // their worker descheduled for a while on a loaded machine.
        let limit = ms(1000);
        let pool = mp::Pool::builder()
            .processes(2)
            .task_timeout(limit)
            .build()
            .unwrap();
        let pids = pool.worker_pids();
        let start = Instant::now();
        let slow = pool.apply_async(|_: ()| sleep_ms(100_000), ()).unwrap();
        let quick: Vec<_> = (0..10).map(|i| pool.apply_async(sqr, i).unwrap()).collect();
        assert!(matches!(slow.get(), Err(mp::Error::Timeout)));
        assert!(start.elapsed() >= limit);
        // By the time the timeout is reported the worker is gone.
        let slow_pid = pids
            .iter()
            .find(|p| !pool.worker_pids().contains(p))
            .copied();
        assert!(
            slow_pid.is_some_and(|p| !alive(p)),
            "the overrunning worker was killed"
        );
        for (i, q) in quick.iter().enumerate() {
            assert_eq!(q.get().unwrap(), sqr(i as i64));
        }
        assert_eq!(pool.apply(sqr, 9).unwrap(), 81);
        let now = pool.worker_pids();
        assert_eq!(now.len(), 2);
        assert_ne!(now, pids, "the overrunning worker was replaced");
        // A map chunk overrunning fails the map with Timeout.
        let r = pool.map_with_chunksize(|ms: u64| sleep_ms(ms), [0, 100_000, 0], 1);
        assert!(matches!(r, Err(mp::Error::Timeout)));
        pool.close();
        pool.join().unwrap();
    });
}

#[test]
fn per_call_timeout_overrides_the_pool() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "per-call timeout", || {
        let pool = mp::Pool::new(1).unwrap();
        let r = pool
            .apply_async_timeout(|_: ()| sleep_ms(100_000), (), ms(100))
            .unwrap();
        assert!(matches!(r.get(), Err(mp::Error::Timeout)));
        let r = pool
            .apply_async_timeout(
                |x: i64| {
                    sleep_ms(10);
                    x
                },
                5,
                SHORT,
            )
            .unwrap();
        assert_eq!(r.get().unwrap(), 5);
    });
}

#[test]
fn pool_handles_are_send() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<mp::Pool>();
    sync::<mp::Pool>();
    send::<mp::AsyncResult<String>>();
    sync::<mp::AsyncResult<String>>();
    send::<mp::IMapIterator<String>>();
    send::<mp::PoolBuilder>();
}

#[test]
fn a_pool_moves_into_another_thread() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "pool in thread", || {
        let pool = mp::Pool::new(2).unwrap();
        let r = pool.apply_async(sqr, 6).unwrap();
        let h = std::thread::spawn(move || {
            let v = r.get().unwrap();
            (pool.apply(sqr, v).unwrap(), pool)
        });
        let (v, pool) = h.join().unwrap();
        assert_eq!(v, 1296);
        pool.close();
        pool.join().unwrap();
    });
}

#[test]
fn workers_exit_when_the_parent_is_killed() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "parent death", || {
        let (rx, tx) = mp::pipe(false).unwrap();
        let mut parent = mp::Process::new(
            |tx: mp::Connection| {
                let pool = mp::Pool::new(2).unwrap();
                assert_eq!(pool.apply(sqr, 2).unwrap(), 4);
                tx.send(&pool.worker_pids()).unwrap();
                let _busy = pool.apply_async(|_: ()| sleep_ms(100_000), ()).unwrap();
                sleep_ms(100_000);
            },
            tx,
        );
        parent.start().unwrap();
        let workers: Vec<u32> = rx.recv().unwrap();
        assert_eq!(workers.len(), 2);
        parent.kill().unwrap();
        parent.join().unwrap();
        // Hang guard while the orphaned workers notice; polling /proc.
        let deadline = Instant::now() + SHORT;
        while workers.iter().any(|&p| alive(p)) {
            assert!(
                Instant::now() < deadline,
                "workers {workers:?} outlived their parent"
            );
            sleep_ms(10);
        }
    });
}

/// Tasks that can only finish together: each waits at a two-party barrier.
fn meet(b: mp::Barrier) -> bool {
    b.wait_timeout(Duration::from_secs(30)).is_ok()
}

// Regression: after a quick warm-up task, a map of long tasks was prefetched
// onto one worker while the other sat idle (cpu_speedup_2proc measured 1.0).
// Here two tasks that must run at the same time only meet if the pool spreads
// them over both workers.
#[test]
fn long_tasks_are_spread_over_idle_workers() {
    let _s = common::serial();
    let _leaks = LeakCheck::new();
    let pool = mp::Pool::new(2).unwrap();
    assert_eq!(pool.apply(sqr, 3).unwrap(), 9);
    let barrier = mp::Barrier::new(2).unwrap();
    let met = within(LONG, "tasks meeting at a barrier", move || {
        let r = pool.map_with_chunksize(meet, vec![barrier; 4], 1).unwrap();
        pool.close();
        pool.join().unwrap();
        r
    });
    assert_eq!(
        met,
        vec![true; 4],
        "two tasks ran one after the other on the same worker"
    );
}

/// A quick step, or (with a barrier) one that must meet another task.
fn quick_or_meet(b: Option<mp::Barrier>) -> bool {
    b.is_none_or(|b| b.wait_timeout(Duration::from_secs(30)).is_ok())
}

// After a run of quick tasks the pool sends tasks ahead to both workers. When
// the tail of the map holds tasks that must run at the same time, a task sent
// ahead to a worker now stuck at the barrier has to be taken back and run by
// the idle worker, as CPython's shared task queue would have it.
#[test]
fn tasks_sent_ahead_are_taken_back_for_an_idle_worker() {
    let _s = common::serial();
    let _leaks = LeakCheck::new();
    let pool = mp::Pool::new(2).unwrap();
    let barrier = mp::Barrier::new(2).unwrap();
    let met = within(LONG, "tail tasks meeting at a barrier", move || {
        let mut r = Vec::new();
        for _ in 0..5 {
            let mut items = vec![None; 400];
            items.extend(std::iter::repeat_n(Some(barrier.clone()), 6));
            r = pool.map_with_chunksize(quick_or_meet, items, 1).unwrap();
            if r.contains(&false) {
                break;
            }
        }
        pool.close();
        pool.join().unwrap();
        r
    });
    assert_eq!(met.len(), 406);
    assert!(
        met.iter().all(|&m| m),
        "a tail task waited behind a stuck one while a worker was idle"
    );
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
enum Step {
    Quick(u32),
    Hold(mp::Event),
    Big(#[serde(with = "serde_bytes")] Vec<u8>),
}

fn step(s: Step) -> u32 {
    match s {
        Step::Quick(x) => x,
        Step::Hold(e) => u32::from(e.wait_timeout(Duration::from_secs(60))),
        Step::Big(v) => v.len() as u32,
    }
}

// A worker holds a task until the map that follows it is done. The map's tasks
// that were sent ahead to the holding worker must be taken back by the other
// one; otherwise the map would wait for the hold, which waits for the map.
#[test]
fn a_map_finishes_while_one_worker_holds_a_long_task() {
    let _s = common::serial();
    let _leaks = LeakCheck::new();
    let pool = mp::Pool::new(2).unwrap();
    let release = mp::Event::new().unwrap();
    // Both workers learn that `step` is quick, so tasks are sent ahead.
    let warm: Vec<u32> = (0..100).collect();
    let items: Vec<Step> = warm.iter().map(|&x| Step::Quick(x)).collect();
    assert_eq!(pool.map_with_chunksize(step, items, 1).unwrap(), warm);
    let held = pool.apply_async(step, Step::Hold(release.clone())).unwrap();
    let want: Vec<u32> = (0..40).collect();
    let items: Vec<Step> = want.iter().map(|&x| Step::Quick(x)).collect();
    // Submitted at once (default chunksize: 8 chunks of 5).
    let map = pool.map_async(step, items).unwrap();
    let got = map.get_timeout(LONG);
    release.set();
    assert_eq!(held.get_timeout(LONG).unwrap(), 1);
    assert_eq!(got.unwrap(), want);
    pool.close();
    pool.join().unwrap();
}

/// Says it holds `claimed` items, yields `real` (and panics at `panic_at`).
struct Lying {
    next: usize,
    real: usize,
    claimed: usize,
    panic_at: Option<usize>,
}

impl Lying {
    fn new(real: usize, claimed: usize) -> Lying {
        Lying {
            next: 0,
            real,
            claimed,
            panic_at: None,
        }
    }
}

impl Iterator for Lying {
    type Item = i64;
    fn next(&mut self) -> Option<i64> {
        if Some(self.next) == self.panic_at {
            panic!("input iterator failed at {}", self.next);
        }
        if self.next >= self.real {
            return None;
        }
        self.next += 1;
        Some(self.next as i64 - 1)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.claimed.saturating_sub(self.next);
        (left, Some(left))
    }
}

// An input that knows its length is encoded chunk by chunk as it is read. One
// whose size_hint is wrong gets a clear error, never a short or a cut-off
// result, and the pool goes on.
#[test]
fn an_input_with_a_wrong_size_hint_is_an_error() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "wrong size_hint", || {
        let pool = mp::Pool::new(2).unwrap();
        let r = pool.map_with_chunksize(sqr, Lying::new(50, 100), 10);
        assert!(
            matches!(&r, Err(mp::Error::Encode(m)) if m.contains("size_hint")),
            "{r:?}"
        );
        let r = pool.map_with_chunksize(sqr, Lying::new(100, 50), 10);
        assert!(
            matches!(&r, Err(mp::Error::Value(m)) if m.contains("size_hint")),
            "{r:?}"
        );
        let r = pool.map(sqr, Lying::new(3, 0));
        assert!(matches!(&r, Err(mp::Error::Value(_))), "{r:?}");
        let honest = pool
            .map_with_chunksize(sqr, Lying::new(100, 100), 10)
            .unwrap();
        assert_eq!(honest, (0..100).map(|x| x * x).collect::<Vec<i64>>());
        pool.close();
        pool.join().unwrap();
    });
}

// The same input panicking halfway (chunks before it already sent): the panic
// reaches the caller, the chunks already sent finish, and close/join do not
// wait for chunks that never came.
#[test]
fn a_streamed_input_panicking_halfway_reaches_the_caller() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "streamed input panic", || {
        let pool = mp::Pool::new(2).unwrap();
        let mut input = Lying::new(100, 100);
        input.panic_at = Some(37);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.map_with_chunksize(sqr, input, 10)
        }));
        assert!(r.is_err(), "the iterator's panic reaches map's caller");
        assert_eq!(pool.map(sqr, 0..3).unwrap(), [0, 1, 4]);
        pool.close();
        pool.join().unwrap();
    });
}

#[derive(serde::Serialize, serde::Deserialize)]
enum MaybeBad {
    Good(i64),
    Bad(Unserializable),
}

fn good_value(m: MaybeBad) -> i64 {
    match m {
        MaybeBad::Good(x) => x,
        MaybeBad::Bad(_) => -1,
    }
}

// CPython: an item that does not pickle fails the map; the chunks before it
// ran. Here the chunk holding it and the ones after are never sent.
#[test]
fn an_unserializable_item_halfway_fails_the_map() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "unserializable halfway", || {
        let pool = mp::Pool::new(2).unwrap();
        let items = (0..100).map(|i| {
            if i == 55 {
                MaybeBad::Bad(Unserializable)
            } else {
                MaybeBad::Good(i)
            }
        });
        let r = pool.map_with_chunksize(good_value, items, 10);
        assert!(matches!(&r, Err(mp::Error::Encode(_))), "{r:?}");
        let r = pool.map_async(good_value, vec![MaybeBad::Bad(Unserializable)]);
        let r = r.unwrap().get_timeout(LONG);
        assert!(matches!(&r, Err(mp::Error::Encode(_))), "{r:?}");
        assert_eq!(pool.apply(sqr, 4).unwrap(), 16);
        pool.close();
        pool.join().unwrap();
    });
}

// A steal must not be forgotten when the queue empties without filling the
// idle worker (here: the queued task is answered without being sent, as it
// did not encode). Both workers hold; a quick task goes ahead to one of
// them; then the other is released and must take the quick task back.
#[test]
fn a_steal_is_not_lost_when_the_queue_empties_without_sending() {
    let _s = common::serial();
    let _leaks = LeakCheck::new();
    within(LONG, "steal after a failed task", || {
        let pool = mp::Pool::new(2).unwrap();
        let warm: Vec<u32> = (0..100).collect();
        let items: Vec<Step> = warm.iter().map(|&x| Step::Quick(x)).collect();
        assert_eq!(pool.map_with_chunksize(step, items, 1).unwrap(), warm);
        let (e1, e2) = (mp::Event::new().unwrap(), mp::Event::new().unwrap());
        let h1 = pool.apply_async(step, Step::Hold(e1.clone())).unwrap();
        let h2 = pool.apply_async(step, Step::Hold(e2.clone())).unwrap();
        let quick = pool.map_async(step, vec![Step::Quick(7)]).unwrap();
        let bad = pool.map_async(good_value, vec![MaybeBad::Bad(Unserializable)]);
        e2.set();
        let got = quick.get_timeout(LONG);
        e1.set();
        assert_eq!(got.unwrap(), [7]);
        assert_eq!(h1.get_timeout(LONG).unwrap(), 1);
        assert_eq!(h2.get_timeout(LONG).unwrap(), 1);
        assert!(matches!(
            bad.unwrap().get_timeout(LONG),
            Err(mp::Error::Encode(_))
        ));
        pool.close();
        pool.join().unwrap();
    });
}

/// The tasks of `a_deep_window_that_slows_down_is_taken_back`. They carry no
/// handle: a task with an fd goes by the socket and is never sent ahead.
#[derive(serde::Serialize, serde::Deserialize)]
enum Paced {
    /// Returns at once.
    Tiny,
    /// Keeps the CPU for this many µs, then writes a byte to the FIFO at
    /// this path, if any.
    Busy(u64, Option<std::path::PathBuf>),
    /// Waits for a byte from the FIFO at this path (asleep in `open` and
    /// `read`, so that it takes no CPU from the busy worker).
    Hold(std::path::PathBuf),
}

/// Runs a [`Paced`] task; returns the pid of the worker that ran it.
fn paced(p: Paced) -> u32 {
    match p {
        Paced::Tiny => {}
        Paced::Busy(us, file) => {
            let t = Instant::now();
            while t.elapsed() < Duration::from_micros(us) {
                std::hint::spin_loop();
            }
            if let Some(f) = file {
                std::fs::write(f, b"g").unwrap();
            }
        }
        Paced::Hold(f) => {
            // The test's `within` is the hang guard.
            assert_eq!(std::fs::read(f).unwrap(), b"g");
        }
    }
    std::process::id()
}

// A worker whose tasks were tiny gets a deep window of them (up to 256); when
// they turn out to take a millisecond each, the other worker, once idle,
// takes the window back at once (no task of it ever runs the 2 ms that
// stealing otherwise waits for), instead of idling while one worker has 150
// ms of work queued.
#[test]
fn a_deep_window_that_slows_down_is_taken_back() {
    let _s = common::serial();
    let _leaks = LeakCheck::new();
    within(LONG, "a deep window taken back", || {
        let file = std::env::temp_dir().join(format!("mp-deep-window-{}", std::process::id()));
        let _ = std::fs::remove_file(&file);
        nix::unistd::mkfifo(&file, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let pool = mp::Pool::new(2).unwrap();
        // Both workers' last task: 100 µs, not tiny (few tasks sent ahead).
        let warm = (0..20).map(|_| Paced::Busy(100, None));
        pool.map_with_chunksize(paced, warm.collect::<Vec<_>>(), 1)
            .unwrap();
        // One worker holds until the map's first task is done (asleep).
        let hold = pool.apply_async(paced, Paced::Hold(file.clone())).unwrap();
        // The other worker's last task becomes tiny: it gets the deep window.
        // (A map, not `apply`: the handler times the tasks it serves.)
        let tiny = (0..10).map(|_| Paced::Tiny).collect::<Vec<_>>();
        let deep = pool.map_with_chunksize(paced, tiny, 1).unwrap()[9];
        let items: Vec<Paced> = (0..150)
            .map(|i| Paced::Busy(1000, (i == 0).then(|| file.clone())))
            .collect();
        let pids = pool.map_with_chunksize(paced, items, 1).unwrap();
        let held = hold.get_timeout(LONG).unwrap();
        assert_ne!(held, deep, "the hold and the tiny tasks ran on one worker");
        let by_held = pids.iter().filter(|&&p| p == held).count();
        eprintln!("the freed worker ran {by_held} of the 150 slow tasks");
        assert!(
            by_held >= 20,
            "the freed worker ran {by_held} of the 150 slow tasks"
        );
        pool.close();
        pool.join().unwrap();
        std::fs::remove_file(&file).unwrap();
    });
}

// A task too big for the socket buffer, sent ahead to a worker that holds a
// long task, is still half written when the other worker becomes idle: it is
// taken back all the same (its written half is dropped by the holder, whose
// gate refuses it) and runs on the idle worker.
#[test]
fn a_half_written_task_is_taken_back_too() {
    let _s = common::serial();
    let _leaks = LeakCheck::new();
    within(LONG, "half-written task taken back", || {
        let pool = mp::Pool::new(2).unwrap();
        let warm: Vec<u32> = (0..100).collect();
        let items: Vec<Step> = warm.iter().map(|&x| Step::Quick(x)).collect();
        assert_eq!(pool.map_with_chunksize(step, items, 1).unwrap(), warm);
        for round in 0..4 {
            let events = [mp::Event::new().unwrap(), mp::Event::new().unwrap()];
            let holds: Vec<_> = events
                .iter()
                .map(|e| pool.apply_async(step, Step::Hold(e.clone())).unwrap())
                .collect();
            // Goes ahead to one of the holding workers (8 MiB: far more than
            // a socket buffer, 2 MiB at most), behind its hold.
            let big = pool
                .map_async(step, vec![Step::Big(vec![7; 8 << 20])])
                .unwrap();
            let (release, keep) = (round % 2, 1 - round % 2);
            events[release].set();
            let got = big.get_timeout(LONG);
            events[keep].set();
            assert_eq!(got.unwrap(), [8 << 20], "round {round}");
            for h in holds {
                assert_eq!(h.get_timeout(LONG).unwrap(), 1);
            }
        }
        assert_eq!(pool.map(sqr, 0..5).unwrap(), [0, 1, 4, 9, 16]);
        pool.close();
        pool.join().unwrap();
    });
}

// ---------------------------------------------------------------------------
// Beyond CPython: the direct path (a single task placed on an idle worker by
// the submitting thread, its answer taken from the worker's ring by the
// waiting thread; the handler thread serves whatever the waiter does not)

// Results nobody waits for are served by the handler: `close` and `join`
// return, and every result is there afterwards.
#[test]
fn direct_results_without_a_waiter_are_served_by_the_handler() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "direct results without a waiter", || {
        let pool = mp::Pool::new(2).unwrap();
        let rs: Vec<_> = (0..200i64)
            .map(|i| pool.apply_async(sqr, i).unwrap())
            .collect();
        pool.close();
        pool.join().unwrap();
        for (i, r) in rs.iter().enumerate() {
            assert!(r.ready(), "result {i} not served");
            assert_eq!(r.get().unwrap(), (i as i64) * (i as i64));
        }
    });
}

// A waiter that gives up leaves the answer to the handler or a later wait.
#[test]
fn direct_get_timeout_then_get() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "direct get_timeout then get", || {
        let pool = mp::Pool::new(1).unwrap();
        for _ in 0..3 {
            let r = pool
                .apply_async(
                    |x: i64| {
                        sleep_ms(200);
                        x + 1
                    },
                    41,
                )
                .unwrap();
            assert!(matches!(r.get_timeout(ms(20)), Err(mp::Error::Timeout)));
            assert_eq!(r.get().unwrap(), 42);
            // The worker is free again: the next task runs at once.
            assert_eq!(pool.apply(sqr, 9).unwrap(), 81);
        }
        // A task left unwaited after a timed-out wait is served by the handler.
        let r = pool
            .apply_async(
                |x: i64| {
                    sleep_ms(100);
                    x
                },
                7,
            )
            .unwrap();
        assert!(matches!(r.get_timeout(ms(10)), Err(mp::Error::Timeout)));
        pool.close();
        pool.join().unwrap();
        assert!(r.ready());
        assert_eq!(r.get().unwrap(), 7);
    });
}

// Two threads waiting for the same result both see it.
#[test]
fn direct_two_waiters_on_one_result() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "two waiters on one direct result", || {
        let pool = mp::Pool::new(2).unwrap();
        for i in 0..20i64 {
            let r = Arc::new(
                pool.apply_async(
                    |x: i64| {
                        sleep_ms(5);
                        x * 3
                    },
                    i,
                )
                .unwrap(),
            );
            let r2 = r.clone();
            let t = std::thread::spawn(move || {
                r2.wait();
                r2.ready()
            });
            r.wait();
            assert!(t.join().unwrap());
            assert_eq!(r.get().unwrap(), i * 3);
        }
        pool.close();
        pool.join().unwrap();
    });
}

fn slow_plus_one(x: i64) -> i64 {
    // A task that takes a while (a workload, not a synchronization).
    std::thread::sleep(Duration::from_millis(300));
    x + 1
}

fn triple(x: i64) -> i64 {
    x * 3
}

// One worker: the first task goes direct; the second queues behind it (the
// worker is busy and last ran another function, so nothing is sent ahead),
// and the first task's waiter takes its answer from the ring itself. The
// freed worker must still get the queued task: the waiter tells the
// handler, which otherwise sleeps with no deadline (a review found the hang).
#[test]
fn direct_answer_taken_by_its_waiter_frees_the_worker_for_the_queue() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "a task queued behind a direct one", || {
        let pool = mp::Pool::new(1).unwrap();
        assert_eq!(pool.apply(triple, 1).unwrap(), 3);
        for round in 0..3i64 {
            let r1 = pool.apply_async(slow_plus_one, round).unwrap();
            let r2 = pool.apply_async(sqr, round + 5).unwrap();
            assert_eq!(r1.get().unwrap(), round + 1);
            assert_eq!(r2.get().unwrap(), (round + 5) * (round + 5));
            assert_eq!(pool.apply(triple, round).unwrap(), round * 3);
        }
    });
}

// Many threads applying at once: each gets its own answer, whichever path
// (direct or through the handler) each call took.
#[test]
fn direct_apply_from_many_threads() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "apply from many threads", || {
        let pool = Arc::new(mp::Pool::new(2).unwrap());
        let threads: Vec<_> = (0..4i64)
            .map(|t| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    for i in 0..300i64 {
                        let x = t * 1000 + i;
                        assert_eq!(pool.apply(sqr, x).unwrap(), x * x);
                        let r = pool.apply_async(sqr, x + 1).unwrap();
                        assert_eq!(r.get().unwrap(), (x + 1) * (x + 1));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(pool.worker_pids().len(), 2);
        pool.close();
        pool.join().unwrap();
    });
}

// A result too big for the ring goes by the socket: the waiter hands it to
// the handler and still gets it.
#[test]
fn direct_big_result_comes_by_the_socket() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "big direct result", || {
        let pool = mp::Pool::new(2).unwrap();
        for n in [10usize, 100_000, 10, 1 << 20, 10] {
            let v = pool.apply(|n: usize| vec![5u8; n], n).unwrap();
            assert_eq!(v.len(), n);
            assert!(v.iter().all(|&b| b == 5));
        }
        pool.close();
        pool.join().unwrap();
    });
}
