//! Queues between real processes.
//!
//! Scenarios ported from cpython: Lib/test/_test_multiprocessing.py (3.11,
//! PSF licence): `_TestQueue` (test_put, test_get, test_fork, test_qsize,
//! test_task_done, test_no_import_lock's unpicklable item, test_closed_queue)
//! and `TestSimpleQueue` (test_empty, test_close). Changes: Python's
//! `put(x, False)` / `put(x, True, t)` are `put_nowait` / `put_timeout`; a
//! closed queue gives `Error::Closed` (Python: ValueError); an unserializable
//! item makes `put` fail (Python prints it from the feeder thread).
//! Added: many producers × many consumers exactly once, a consumer killed while
//! blocked in `get`, big items, producers that exit at once, 10 000 items put
//! before any consumer, queues passed to grandchildren and over connections.

multiprocess::test_support!();
mod common;

use common::{LONG, LeakCheck, SHORT, ms, within};
use multiprocess as mp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Instant;

// CPython: _TestQueue.test_put
#[test]
fn put_on_a_full_queue() {
    let _s = common::serial();
    within(SHORT, "put_on_a_full_queue", || {
        let q = mp::Queue::<i32>::with_maxsize(6).unwrap();
        for i in 0..6 {
            assert!(!q.full());
            q.put(i).unwrap();
        }
        assert!(q.full());
        assert_eq!(q.qsize(), 6);
        assert!(matches!(q.put_nowait(7), Err(mp::Error::Full)));
        let start = Instant::now();
        assert!(matches!(q.put_timeout(7, ms(200)), Err(mp::Error::Full)));
        assert!(start.elapsed() >= ms(200));
        // A child takes one: the blocked put goes through.
        let mut p = mp::Process::new(
            |q: mp::Queue<i32>| assert_eq!(q.get().unwrap(), 0),
            q.clone(),
        );
        p.start().unwrap();
        q.put(6).unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert_eq!(
            (1..=6).map(|_| q.get().unwrap()).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5, 6]
        );
        assert!(q.empty());
    });
}

// CPython: _TestQueue.test_get
#[test]
fn get_on_an_empty_queue() {
    let _s = common::serial();
    within(SHORT, "get_on_an_empty_queue", || {
        let q = mp::Queue::<String>::new().unwrap();
        assert!(q.empty());
        assert!(matches!(q.get_nowait(), Err(mp::Error::Empty)));
        let start = Instant::now();
        assert!(matches!(q.get_timeout(ms(200)), Err(mp::Error::Empty)));
        assert!(start.elapsed() >= ms(200));
        let mut p = mp::Process::new(
            |q: mp::Queue<String>| q.put("from child".to_string()).unwrap(),
            q.clone(),
        );
        p.start().unwrap();
        assert_eq!(q.get_timeout(SHORT).unwrap(), "from child");
        p.join().unwrap();
    });
}

// CPython: _TestQueue.test_fork (queue used before the child starts; FIFO)
#[test]
fn items_from_a_child_arrive_in_order() {
    let _s = common::serial();
    within(SHORT, "items_from_a_child_arrive_in_order", || {
        let leaks = LeakCheck::new();
        let q = mp::Queue::<u32>::new().unwrap();
        q.put(1000).unwrap();
        assert_eq!(q.get().unwrap(), 1000);
        let mut p = mp::Process::new(
            |q: mp::Queue<u32>| {
                for i in 0..20 {
                    q.put(i).unwrap();
                }
            },
            q.clone(),
        );
        p.start().unwrap();
        let got: Vec<u32> = (0..20).map(|_| q.get().unwrap()).collect();
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        p.join().unwrap();
        drop((q, p));
        leaks.check();
    });
}

// CPython: _TestQueue.test_qsize
#[test]
fn qsize_tracks_puts_and_gets() {
    let _s = common::serial();
    let q = mp::Queue::<u8>::new().unwrap();
    assert_eq!(q.qsize(), 0);
    q.put(1).unwrap();
    assert_eq!(q.qsize(), 1);
    q.put(2).unwrap();
    assert_eq!(q.qsize(), 2);
    q.get().unwrap();
    assert_eq!(q.qsize(), 1);
    q.get().unwrap();
    assert_eq!(q.qsize(), 0);
}

// CPython: _TestQueue.test_task_done
#[test]
fn joinable_queue_join_waits_for_all_tasks() {
    let _s = common::serial();
    within(LONG, "joinable_queue_join_waits_for_all_tasks", || {
        let jq = mp::JoinableQueue::<Option<u32>>::new().unwrap();
        let done = mp::Queue::<u32>::new().unwrap();
        let mut workers: Vec<mp::Process> = (0..4)
            .map(|_| {
                mp::Process::new(
                    |(jq, done): (mp::JoinableQueue<Option<u32>>, mp::Queue<u32>)| {
                        while let Some(n) = jq.get().unwrap() {
                            done.put(n).unwrap();
                            jq.task_done().unwrap();
                        }
                        jq.task_done().unwrap();
                    },
                    (jq.clone(), done.clone()),
                )
            })
            .collect();
        for w in &mut workers {
            w.start().unwrap();
        }
        for n in 0..10 {
            jq.put(Some(n)).unwrap();
        }
        jq.join();
        // Every task was marked done only after its result was queued.
        assert_eq!(done.qsize(), 10);
        let got: BTreeSet<u32> = (0..10).map(|_| done.get().unwrap()).collect();
        assert_eq!(got, (0..10).collect());
        for _ in &workers {
            jq.put(None).unwrap();
        }
        jq.join();
        for w in &mut workers {
            w.join().unwrap();
            assert_eq!(w.exitcode(), Some(0));
        }
        assert!(matches!(jq.task_done(), Err(mp::Error::Value(_))));
    });
}

/// An item whose serialization fails on demand.
#[derive(Debug, PartialEq, Deserialize)]
struct Fragile(bool);

impl Serialize for Fragile {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 {
            Err(serde::ser::Error::custom("refusing to serialize"))
        } else {
            s.serialize_newtype_struct("Fragile", &self.0)
        }
    }
}

// CPython: _TestQueue.test_no_import_lock / bpo-30414 (unpicklable item)
#[test]
fn an_unserializable_item_does_not_break_the_queue() {
    let _s = common::serial();
    let q = mp::Queue::<Fragile>::with_maxsize(2).unwrap();
    assert!(matches!(q.put(Fragile(true)), Err(mp::Error::Encode(_))));
    assert_eq!(q.qsize(), 0);
    assert!(q.empty());
    q.put(Fragile(false)).unwrap();
    q.put(Fragile(false)).unwrap();
    assert!(q.full());
    assert_eq!(q.get().unwrap(), Fragile(false));
    let jq = mp::JoinableQueue::<Fragile>::new().unwrap();
    assert!(jq.put(Fragile(true)).is_err());
    assert!(jq.join_timeout(ms(0)));
}

// CPython: _TestQueue.test_closed_queue_put_get_exceptions
#[test]
fn closed_queues_refuse_put_and_get() {
    let _s = common::serial();
    let q = mp::Queue::<u8>::new().unwrap();
    q.put(1).unwrap();
    q.close();
    q.close();
    assert!(matches!(q.put(2), Err(mp::Error::Closed)));
    assert!(matches!(q.get(), Err(mp::Error::Closed)));
    assert!(matches!(q.get_nowait(), Err(mp::Error::Closed)));
    let jq = mp::JoinableQueue::<u8>::new().unwrap();
    jq.close();
    assert!(matches!(jq.put(2), Err(mp::Error::Closed)));
    assert!(matches!(jq.get(), Err(mp::Error::Closed)));
    assert!(matches!(jq.task_done(), Err(mp::Error::Closed)));
}

// Closing our handle leaves the queue working for other processes' handles.
#[test]
fn close_is_local_to_the_handle() {
    let _s = common::serial();
    within(SHORT, "close_is_local_to_the_handle", || {
        let q = mp::Queue::<u8>::new().unwrap();
        let out = mp::Queue::<u8>::new().unwrap();
        q.put(7).unwrap();
        let mut p = mp::Process::new(
            |(q, out): (mp::Queue<u8>, mp::Queue<u8>)| out.put(q.get().unwrap()).unwrap(),
            (q.clone(), out.clone()),
        );
        q.close();
        p.start().unwrap();
        assert_eq!(out.get().unwrap(), 7);
        p.join().unwrap();
    });
}

// CPython: TestSimpleQueue.test_empty / test_close
#[test]
fn simple_queue_empty_across_processes_and_close_twice() {
    let _s = common::serial();
    within(SHORT, "simple_queue", || {
        let sq = mp::SimpleQueue::<String>::new().unwrap();
        let ack = mp::SimpleQueue::<bool>::new().unwrap();
        assert!(sq.empty());
        let mut p = mp::Process::new(
            |(sq, ack): (mp::SimpleQueue<String>, mp::SimpleQueue<bool>)| {
                // The parent's put is visible here, and empty again after get.
                let was_empty = sq.empty();
                let item = sq.get().unwrap();
                ack.put(!was_empty && item == "x" && sq.empty()).unwrap();
                sq.put("reply".to_string()).unwrap();
            },
            (sq.clone(), ack.clone()),
        );
        sq.put("x".to_string()).unwrap();
        p.start().unwrap();
        assert!(ack.get().unwrap());
        p.join().unwrap();
        assert!(!sq.empty());
        assert_eq!(sq.get().unwrap(), "reply");
        assert!(sq.empty());
        sq.close();
        sq.close();
        assert!(matches!(sq.put("y".into()), Err(mp::Error::Closed)));
    });
}

/// Items tagged (producer, sequence number), `None` to stop.
type Tagged = mp::Queue<Option<(u32, u32)>>;

// 8 producers × 8 consumers: every item exactly once, FIFO per producer.
#[test]
fn many_producers_many_consumers_exactly_once() {
    let _s = common::serial();
    within(LONG, "many_producers_many_consumers_exactly_once", || {
        let leaks = LeakCheck::new();
        const PRODUCERS: u32 = 8;
        const CONSUMERS: u32 = 8;
        const PER: u32 = 2_000;
        let q = mp::Queue::<Option<(u32, u32)>>::with_maxsize(500).unwrap();
        let results = mp::Queue::<Vec<(u32, u32)>>::new().unwrap();
        let mut procs = Vec::new();
        for c in 0..CONSUMERS {
            let mut p = mp::Process::new(
                |(q, results): (Tagged, mp::Queue<Vec<(u32, u32)>>)| {
                    let mut got = Vec::new();
                    while let Some(item) = q.get().unwrap() {
                        got.push(item);
                    }
                    results.put(got).unwrap();
                },
                (q.clone(), results.clone()),
            );
            p.set_name(format!("consumer-{c}"));
            p.start().unwrap();
            procs.push(p);
        }
        let mut producers = Vec::new();
        for id in 0..PRODUCERS {
            let mut p = mp::Process::new(
                |(q, id): (mp::Queue<Option<(u32, u32)>>, u32)| {
                    for seq in 0..PER {
                        q.put(Some((id, seq))).unwrap();
                    }
                },
                (q.clone(), id),
            );
            p.start().unwrap();
            producers.push(p);
        }
        for p in &mut producers {
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(0));
        }
        for _ in 0..CONSUMERS {
            q.put(None).unwrap();
        }
        let mut all = Vec::new();
        for _ in 0..CONSUMERS {
            let got = results.get().unwrap();
            // FIFO per producer, as seen by each consumer.
            let mut last = vec![None; PRODUCERS as usize];
            for &(id, seq) in &got {
                let prev = last[id as usize].replace(seq);
                assert!(prev.is_none_or(|p| p < seq), "producer {id} out of order");
            }
            all.extend(got);
        }
        for p in &mut procs {
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(0));
        }
        assert_eq!(all.len(), (PRODUCERS * PER) as usize);
        let unique: BTreeSet<(u32, u32)> = all.into_iter().collect();
        assert_eq!(unique.len(), (PRODUCERS * PER) as usize);
        assert_eq!(q.qsize(), 0);
        drop((q, results, procs, producers));
        leaks.check();
    });
}

/// Waits until `pid` sleeps in the kernel (state `S`): a hang-guarded look at
/// /proc, not a sleep.
fn wait_until_sleeping(pid: u32) {
    let deadline = Instant::now() + SHORT;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.trim_start().chars().next());
        if state == Some('S') {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} never blocked");
        std::thread::yield_now();
    }
}

// A consumer SIGKILLed while blocked in get: nothing lost, nothing wedged.
#[test]
fn a_consumer_killed_in_get_wedges_nothing() {
    let _s = common::serial();
    within(LONG, "a_consumer_killed_in_get_wedges_nothing", || {
        let q = mp::Queue::<Option<u32>>::new().unwrap();
        let ready = mp::Queue::<u32>::new().unwrap();
        let results = mp::Queue::<Vec<u32>>::new().unwrap();
        let mut victim = mp::Process::new(
            |(q, ready): (mp::Queue<Option<u32>>, mp::Queue<u32>)| {
                ready.put(std::process::id()).unwrap();
                let _ = q.get();
                unreachable!("the victim is killed before any item is put");
            },
            (q.clone(), ready.clone()),
        );
        victim.start().unwrap();
        let pid = ready.get().unwrap();
        wait_until_sleeping(pid);
        victim.kill().unwrap();
        victim.join().unwrap();
        assert_eq!(victim.exitcode(), Some(-9));
        let mut consumers: Vec<mp::Process> = (0..2)
            .map(|_| {
                mp::Process::new(
                    |(q, results): (mp::Queue<Option<u32>>, mp::Queue<Vec<u32>>)| {
                        let mut got = Vec::new();
                        while let Some(n) = q.get().unwrap() {
                            got.push(n);
                        }
                        results.put(got).unwrap();
                    },
                    (q.clone(), results.clone()),
                )
            })
            .collect();
        for c in &mut consumers {
            c.start().unwrap();
        }
        for n in 0..1000 {
            q.put(Some(n)).unwrap();
        }
        q.put(None).unwrap();
        q.put(None).unwrap();
        let mut all: Vec<u32> = results.get().unwrap();
        all.extend(results.get().unwrap());
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        for c in &mut consumers {
            c.join().unwrap();
            assert_eq!(c.exitcode(), Some(0));
        }
    });
}

// Items far larger than any socket buffer, both ways.
#[test]
fn big_items_cross_processes() {
    let _s = common::serial();
    within(LONG, "big_items_cross_processes", || {
        let leaks = LeakCheck::new();
        let q = mp::Queue::<Vec<u8>>::new().unwrap();
        let back = mp::Queue::<(usize, u64)>::new().unwrap();
        let mut p = mp::Process::new(
            |(q, back): (mp::Queue<Vec<u8>>, mp::Queue<(usize, u64)>)| {
                let v = q.get().unwrap();
                let sum = v.iter().map(|&b| u64::from(b)).sum();
                back.put((v.len(), sum)).unwrap();
                q.put(vec![3u8; 32 << 20]).unwrap();
            },
            (q.clone(), back.clone()),
        );
        p.start().unwrap();
        let big: Vec<u8> = (0..(32u32 << 20)).map(|i| (i % 255) as u8).collect();
        let expected: u64 = big.iter().map(|&b| u64::from(b)).sum();
        q.put(big).unwrap();
        assert_eq!(back.get().unwrap(), (32 << 20, expected));
        let reply = q.get().unwrap();
        assert_eq!(reply.len(), 32 << 20);
        assert!(reply.iter().all(|&b| b == 3));
        p.join().unwrap();
        drop((q, back, p));
        leaks.check();
    });
}

// CPython's "joining processes that use queues" deadlock: the child puts many
// items (more than a pipe holds) and exits at once; the parent joins it before
// reading anything.
#[test]
fn producers_may_exit_at_once() {
    let _s = common::serial();
    within(LONG, "producers_may_exit_at_once", || {
        let q = mp::Queue::<Vec<u8>>::new().unwrap();
        let mut p = mp::Process::new(
            |q: mp::Queue<Vec<u8>>| {
                for i in 0..200u32 {
                    q.put(vec![i as u8; 4096]).unwrap();
                }
                q.put(vec![0xEE; 1 << 20]).unwrap();
                std::process::exit(0);
            },
            q.clone(),
        );
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert_eq!(q.qsize(), 201);
        for i in 0..200u32 {
            assert_eq!(q.get().unwrap(), vec![i as u8; 4096]);
        }
        assert_eq!(q.get().unwrap(), vec![0xEE; 1 << 20]);
    });
}

// An unbounded queue takes 10 000 items before any consumer exists.
#[test]
fn ten_thousand_items_before_any_consumer() {
    let _s = common::serial();
    within(LONG, "ten_thousand_items_before_any_consumer", || {
        let q = mp::Queue::<u64>::new().unwrap();
        for i in 0..10_000 {
            q.put_nowait(i).unwrap();
        }
        assert_eq!(q.qsize(), 10_000);
        let mut p = mp::Process::new(
            |q: mp::Queue<u64>| {
                for i in 0..10_000 {
                    assert_eq!(q.get().unwrap(), i);
                }
            },
            q.clone(),
        );
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert!(q.empty());
    });
}

// Queues reach grandchildren, and travel over connections and inside queues.
#[test]
fn queues_travel_to_grandchildren_and_over_channels() {
    let _s = common::serial();
    within(LONG, "queues_travel", || {
        let q = mp::Queue::<String>::new().unwrap();
        let mut child = mp::Process::new(
            |q: mp::Queue<String>| {
                let mut grandchild = mp::Process::new(
                    |q: mp::Queue<String>| {
                        q.put(format!("grandchild {}", std::process::id())).unwrap()
                    },
                    q.clone(),
                );
                grandchild.start().unwrap();
                grandchild.join().unwrap();
                q.put("child".to_string()).unwrap();
            },
            q.clone(),
        );
        child.start().unwrap();
        assert!(q.get().unwrap().starts_with("grandchild "));
        assert_eq!(q.get().unwrap(), "child");
        child.join().unwrap();

        let (a, b) = mp::pipe(true).unwrap();
        a.send(&q).unwrap();
        let q2: mp::Queue<String> = b.recv().unwrap();
        q2.put("via pipe".into()).unwrap();
        assert_eq!(q.get().unwrap(), "via pipe");

        let carrier = mp::Queue::<mp::Queue<String>>::new().unwrap();
        carrier.put(q.clone()).unwrap();
        let q3 = carrier.get().unwrap();
        q3.put("via queue".into()).unwrap();
        assert_eq!(q.get().unwrap(), "via queue");
    });
}

// A bounded put blocked in one process is released by a get in another.
#[test]
fn bounded_put_unblocks_across_processes() {
    let _s = common::serial();
    within(LONG, "bounded_put_unblocks_across_processes", || {
        let q = mp::Queue::<u32>::with_maxsize(3).unwrap();
        let mut producer = mp::Process::new(
            |q: mp::Queue<u32>| {
                for i in 0..100 {
                    q.put(i).unwrap();
                    assert!(q.qsize() <= 3);
                }
            },
            q.clone(),
        );
        producer.start().unwrap();
        let got: Vec<u32> = (0..100).map(|_| q.get().unwrap()).collect();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        producer.join().unwrap();
        assert_eq!(producer.exitcode(), Some(0));
    });
}
