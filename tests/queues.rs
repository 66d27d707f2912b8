//! Queues between real processes.
//!
//! Ported from cpython: Lib/test/_test_multiprocessing.py (3.11, PSF
//! licence), one function per CPython test, named after it, in sections by
//! CPython class: `_TestQueue` (test_put, test_get, test_fork, test_qsize,
//! test_task_done, test_no_import_lock_contention, test_timeout,
//! test_queue_feeder_donot_stop_onexc, test_queue_feeder_on_queue_feeder_error,
//! test_closed_queue_put_get_exceptions) and `TestSimpleQueue` (test_empty,
//! test_close, test_closed). Changes: Python's `put(x, False)` /
//! `put(x, True, t)` are `put_nowait` / `put_timeout`; a closed queue gives
//! `Error::Closed` (Python: ValueError); an unserializable item makes `put`
//! fail (Python prints it from the feeder thread); no `time.sleep(DELTA)`
//! before looking at a queue (there is no feeder thread to wait for).
//!
//! Added: an unbounded queue really is unbounded (a million small items and
//! 2 GiB of 1 MiB items put before any consumer, by a non-root process with
//! default socket limits, memory measured and given back), producers that
//! exit at once, consumers asleep before producers spill, bounded queues
//! larger than a socket holds, items with handles behind a spilled backlog,
//! many producers × many consumers exactly once, a consumer killed while
//! blocked in `get`, big items, queues passed to grandchildren and over
//! connections.

multiprocess::test_support!();
mod common;

use common::{LONG, LeakCheck, SHORT, ms, within};
use multiprocess as mp;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// _TestQueue

/// CPython's `_test_put` child: waits, then takes the six items.
fn take_six((q, child_can_start, parent_can_continue): (mp::Queue<i32>, mp::Event, mp::Event)) {
    child_can_start.wait();
    for i in 1..=6 {
        assert_eq!(q.get().unwrap(), i);
    }
    parent_can_continue.set();
}

#[test]
fn test_put() {
    let _s = common::serial();
    within(SHORT, "test_put", || {
        const MAXSIZE: usize = 6;
        let q = mp::Queue::<i32>::with_maxsize(MAXSIZE).unwrap();
        let child_can_start = mp::Event::new().unwrap();
        let parent_can_continue = mp::Event::new().unwrap();
        let mut p = mp::Process::new(
            take_six,
            (
                q.clone(),
                child_can_start.clone(),
                parent_can_continue.clone(),
            ),
        );
        p.set_daemon(true);
        p.start().unwrap();
        assert!(q.empty());
        assert!(!q.full());
        q.put(1).unwrap();
        q.put(2).unwrap();
        q.put_timeout(3, Duration::MAX).unwrap();
        q.put_nowait(4).unwrap();
        q.put_nowait(5).unwrap();
        q.put_nowait(6).unwrap();
        assert!(!q.empty());
        assert!(q.full());
        assert_eq!(q.qsize(), MAXSIZE);
        let t = Instant::now();
        assert!(matches!(q.put_nowait(7), Err(mp::Error::Full)));
        assert!(t.elapsed() < SHORT);
        // TIMEOUT1..3 of CPython: 0.1, 0.1, 0.2 s (lower bounds only).
        for timeout in [ms(100), ms(200)] {
            let t = Instant::now();
            assert!(matches!(q.put_timeout(7, timeout), Err(mp::Error::Full)));
            assert!(t.elapsed() >= timeout);
        }
        child_can_start.set();
        parent_can_continue.wait();
        assert!(q.empty());
        assert!(!q.full());
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    });
}

/// CPython's `_test_get` child.
fn put_two_to_five(
    (q, child_can_start, parent_can_continue): (mp::Queue<i32>, mp::Event, mp::Event),
) {
    child_can_start.wait();
    for i in 2..=5 {
        q.put(i).unwrap();
    }
    parent_can_continue.set();
}

#[test]
fn test_get() {
    let _s = common::serial();
    within(SHORT, "test_get", || {
        let q = mp::Queue::<i32>::new().unwrap();
        let child_can_start = mp::Event::new().unwrap();
        let parent_can_continue = mp::Event::new().unwrap();
        let mut p = mp::Process::new(
            put_two_to_five,
            (
                q.clone(),
                child_can_start.clone(),
                parent_can_continue.clone(),
            ),
        );
        p.set_daemon(true);
        p.start().unwrap();
        assert!(q.empty());
        child_can_start.set();
        parent_can_continue.wait();
        // No sleep needed: a `put` that returned is visible at once.
        assert!(!q.empty());
        assert_eq!(q.get().unwrap(), 2);
        assert_eq!(q.get_timeout(Duration::MAX).unwrap(), 3);
        assert_eq!(q.get_timeout(ms(1000)).unwrap(), 4);
        assert_eq!(q.get_nowait().unwrap(), 5);
        assert!(q.empty());
        assert!(matches!(q.get_nowait(), Err(mp::Error::Empty)));
        for timeout in [ms(100), ms(200)] {
            let t = Instant::now();
            assert!(matches!(q.get_timeout(timeout), Err(mp::Error::Empty)));
            assert!(t.elapsed() >= timeout);
        }
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    });
}

#[test]
fn test_fork() {
    let _s = common::serial();
    within(SHORT, "test_fork", || {
        let leaks = LeakCheck::new();
        let q = mp::Queue::<u32>::new().unwrap();
        for i in 0..10 {
            q.put(i).unwrap();
        }
        let mut p = mp::Process::new(
            |q: mp::Queue<u32>| {
                for i in 10..20 {
                    q.put(i).unwrap();
                }
            },
            q.clone(),
        );
        p.set_daemon(true);
        p.start().unwrap();
        let got: Vec<u32> = (0..20).map(|_| q.get().unwrap()).collect();
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        assert!(matches!(q.get_nowait(), Err(mp::Error::Empty)));
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        drop((q, p));
        leaks.check();
    });
}

#[test]
fn test_qsize() {
    let _s = common::serial();
    let q = mp::Queue::<u8>::new().unwrap();
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

// (CPython's test_task_done; the workers also report what they did.)
#[test]
fn test_task_done() {
    let _s = common::serial();
    within(LONG, "test_task_done", || {
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
            w.set_daemon(true);
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

// CPython checks that a module using a queue at import time does not
// deadlock on the import lock (Issue #22853). Rust has no import lock; the
// nearest thing is a process-wide one-time initializer, whose lock is held
// while it runs: a queue used inside one works.
#[test]
fn test_no_import_lock_contention() {
    let _s = common::serial();
    static KNOCK: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let got = KNOCK.get_or_init(|| {
        let q = mp::Queue::<String>::new().unwrap();
        q.put("knock knock".to_string()).unwrap();
        let got = q.get_timeout(Duration::from_secs(3)).unwrap();
        q.close();
        got
    });
    assert_eq!(got, "knock knock");
}

#[test]
fn test_timeout() {
    let _s = common::serial();
    let q = mp::Queue::<u8>::new().unwrap();
    let start = Instant::now();
    assert!(matches!(q.get_timeout(ms(200)), Err(mp::Error::Empty)));
    assert!(start.elapsed() >= ms(100));
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

// bpo-30414 / bpo-33078: an item that cannot be serialized leaves the queue
// working and its size right. We differ on purpose: `put` returns the error
// (Python prints it from the feeder thread and `put` "succeeds").
#[test]
fn test_queue_feeder_donot_stop_onexc() {
    let _s = common::serial();
    within(SHORT, "test_queue_feeder_donot_stop_onexc", || {
        let q = mp::Queue::<Fragile>::new().unwrap();
        assert!(matches!(q.put(Fragile(true)), Err(mp::Error::Encode(_))));
        q.put(Fragile(false)).unwrap();
        assert_eq!(q.get_timeout(SHORT).unwrap(), Fragile(false));

        let q = mp::Queue::<Fragile>::with_maxsize(1).unwrap();
        assert!(matches!(q.put(Fragile(true)), Err(mp::Error::Encode(_))));
        q.put(Fragile(false)).unwrap();
        assert_eq!(q.qsize(), 1);
        assert_eq!(q.get_timeout(SHORT).unwrap(), Fragile(false));
        assert!(q.empty());

        let jq = mp::JoinableQueue::<Fragile>::new().unwrap();
        assert!(jq.put(Fragile(true)).is_err());
        assert!(jq.join_timeout(ms(0)));
    });
}

// bpo-30006: Python lets a `Queue` subclass see the feeder's serialization
// error in `_on_queue_feeder_error(e, obj)`. There is no feeder here: the
// caller of `put` gets the error itself, naming the item's type.
#[test]
fn test_queue_feeder_on_queue_feeder_error() {
    let _s = common::serial();
    let q = mp::Queue::<Fragile>::new().unwrap();
    match q.put(Fragile(true)) {
        Err(mp::Error::Encode(msg)) => assert!(msg.contains("Fragile"), "{msg}"),
        other => panic!("expected Encode, got {other:?}"),
    }
    q.put(Fragile(false)).unwrap();
    assert_eq!(q.get_timeout(SHORT).unwrap(), Fragile(false));
}

#[test]
fn test_closed_queue_put_get_exceptions() {
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

// ---------------------------------------------------------------------------
// TestSimpleQueue

/// CPython's `_test_empty` child.
fn report_empty(
    (sq, child_can_start, parent_can_continue): (mp::SimpleQueue<bool>, mp::Event, mp::Event),
) {
    child_can_start.wait();
    // Issue 30301: `empty()` works in a spawned child.
    let first = sq.empty();
    sq.put(first).unwrap();
    let second = sq.empty();
    sq.put(second).unwrap();
    parent_can_continue.set();
}

#[test]
fn test_empty() {
    let _s = common::serial();
    within(SHORT, "test_empty", || {
        let sq = mp::SimpleQueue::<bool>::new().unwrap();
        let child_can_start = mp::Event::new().unwrap();
        let parent_can_continue = mp::Event::new().unwrap();
        let mut p = mp::Process::new(
            report_empty,
            (
                sq.clone(),
                child_can_start.clone(),
                parent_can_continue.clone(),
            ),
        );
        p.set_daemon(true);
        p.start().unwrap();
        assert!(sq.empty());
        child_can_start.set();
        parent_can_continue.wait();
        assert!(!sq.empty());
        assert!(sq.get().unwrap());
        assert!(!sq.get().unwrap());
        assert!(sq.empty());
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    });
}

#[test]
fn test_close() {
    let _s = common::serial();
    let sq = mp::SimpleQueue::<u8>::new().unwrap();
    sq.close();
    // Closing twice does not fail.
    sq.close();
}

// CPython checks its private reader and writer are closed; here, the queue
// object refuses to be used.
#[test]
fn test_closed() {
    let _s = common::serial();
    let sq = mp::SimpleQueue::<u8>::new().unwrap();
    sq.put(1).unwrap();
    sq.close();
    assert!(matches!(sq.put(2), Err(mp::Error::Closed)));
    assert!(matches!(sq.get(), Err(mp::Error::Closed)));
    assert!(sq.empty());
}

// ---------------------------------------------------------------------------
// Unbounded means unbounded

/// The uid of `nobody`.
const NOBODY: u32 = 65534;

/// Drops root (if we have it) for `nobody`, keeping the process readable in
/// /proc (as the lock's dead-holder check needs). True if the process now
/// runs as a non-root user, so no `SO_SNDBUFFORCE` and no raised limits.
fn become_nobody() -> bool {
    if euid() == 0 {
        // SAFETY: plain syscalls on this process's credentials, made by a
        // child whose only thread here is the one running this target (the
        // kernel applies setuid to every thread anyway); no memory is passed
        // but a null list of length 0.
        unsafe {
            assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
            assert_eq!(libc::setgid(NOBODY), 0);
            assert_eq!(libc::setuid(NOBODY), 0);
            // A setuid makes the process undumpable, which hides its /proc
            // entries from other users.
            assert_eq!(libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0), 0);
        }
    }
    euid() != 0
}

/// This process's effective uid.
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The memfds of queues this process holds (`/proc/self/fd` entries naming
/// `memfd:multiprocess-queue`), by fd.
fn queue_memfds() -> BTreeMap<String, PathBuf> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|t| t.to_string_lossy().starts_with("/memfd:multiprocess-queue"))
        })
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect()
}

/// Creates a queue and returns it with the path of its memfd.
fn queue_and_memfd<T: Serialize + serde::de::DeserializeOwned>() -> (mp::Queue<T>, PathBuf) {
    let before = queue_memfds();
    let q = mp::Queue::<T>::new().unwrap();
    let mut new: Vec<PathBuf> = queue_memfds()
        .into_iter()
        .filter(|(fd, _)| !before.contains_key(fd))
        .map(|(_, p)| p)
        .collect();
    assert_eq!(new.len(), 1, "one new queue memfd");
    (q, new.pop().unwrap())
}

/// Bytes of memory a file holds.
fn allocated(path: &PathBuf) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// This process's resident memory, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// The size of `v` as the crate encodes it (a queue item's bytes): what a
/// pipe carries for it.
fn encoded_len<T: Serialize + Sync>(v: &T) -> u64 {
    let (a, b) = mp::pipe(true).unwrap();
    // Sent from another thread: a big value does not fit the socket buffer.
    std::thread::scope(|s| {
        s.spawn(|| a.send(v).unwrap());
        b.recv_bytes().unwrap().len() as u64
    })
}

/// What the memfd may hold for `waiting` bytes of encoded items: 1.5x, plus
/// the counter page and the chunk not yet given back (64 KiB) and a page.
fn budget(waiting: u64) -> u64 {
    waiting * 3 / 2 + 4096 + 64 * 1024 + 4096
}

/// A producer for the unbounded tests: turns into `nobody`, puts `n` items
/// made by `make` with `put_nowait` (which fails with `Full` if it would have
/// to wait), reports its uid and how long the puts took, and exits.
fn produce<T: Serialize + serde::de::DeserializeOwned>(
    q: &mp::Queue<T>,
    report: &mp::Queue<(bool, u64)>,
    n: u64,
    make: impl Fn(u64) -> T,
) {
    let non_root = become_nobody();
    let t = Instant::now();
    for i in 0..n {
        q.put_nowait(make(i))
            .unwrap_or_else(|e| panic!("put {i} of {n}: {e}"));
    }
    report
        .put((non_root, t.elapsed().as_micros() as u64))
        .unwrap();
}

type Small = [u8; 8];
const MILLION: u64 = 1_000_000;

// A million small items put into `Queue::new()` by a non-root process with
// default socket limits before any consumer exists; the producer exits;
// a consumer started afterwards takes them all, in order. The memory they
// take (the queue's memfd, and this process) stays within 1.5x their encoded
// size, and is given back as they are taken.
#[test]
fn a_million_small_items_wait_for_a_consumer() {
    let _s = common::serial();
    within(LONG, "a_million_small_items_wait_for_a_consumer", || {
        let leaks = LeakCheck::new();
        let (q, memfd) = queue_and_memfd::<Small>();
        let report = mp::Queue::<(bool, u64)>::new().unwrap();
        let encoded = MILLION * encoded_len(&[0u8; 8]);
        let rss_before = rss();
        let mut producer = mp::Process::new(
            |(q, report): (mp::Queue<Small>, mp::Queue<(bool, u64)>)| {
                produce(&q, &report, MILLION, |i| i.to_le_bytes())
            },
            (q.clone(), report.clone()),
        );
        producer.start().unwrap();
        // The producer exits with no consumer alive.
        assert!(
            producer.join_timeout(LONG).unwrap(),
            "the producer did not exit"
        );
        assert_eq!(producer.exitcode(), Some(0));
        let (non_root, micros) = report.get().unwrap();
        assert!(non_root, "the producer ran as root");
        eprintln!("1M small puts by a non-root process: {} ms", micros / 1000);
        assert_eq!(q.qsize(), MILLION as usize);
        let held = allocated(&memfd) + rss().saturating_sub(rss_before);
        eprintln!("held {held} bytes for {encoded} encoded");
        assert!(held <= budget(encoded), "{held} bytes held for {encoded}");
        assert!(
            held >= encoded / 2,
            "the items are not in the queue's memory"
        );

        let (ack, go) = (
            mp::Queue::<u8>::new().unwrap(),
            mp::Queue::<u8>::new().unwrap(),
        );
        let mut consumer = mp::Process::new(
            |(q, ack, go): (mp::Queue<Small>, mp::Queue<u8>, mp::Queue<u8>)| {
                assert!(become_nobody());
                for i in 0..MILLION {
                    assert_eq!(q.get().unwrap(), i.to_le_bytes(), "item {i}");
                    if i == MILLION / 2 {
                        ack.put(1).unwrap();
                        go.get().unwrap();
                    }
                }
                assert!(matches!(q.get_nowait(), Err(mp::Error::Empty)));
            },
            (q.clone(), ack.clone(), go.clone()),
        );
        consumer.start().unwrap();
        ack.get().unwrap();
        let half = allocated(&memfd);
        assert!(
            half <= budget(encoded / 2),
            "{half} bytes held for half of {encoded}"
        );
        go.put(1).unwrap();
        consumer.join().unwrap();
        assert_eq!(consumer.exitcode(), Some(0));
        // The counter page, and at most the ring page its tail is in (the
        // ring gives back whole pages only: see src/queues/ring.rs).
        let end = allocated(&memfd);
        assert!(end <= 2 * 4096, "{end} bytes held by an empty queue");
        assert_eq!(q.qsize(), 0);
        drop((q, report, ack, go, producer, consumer));
        leaks.check();
    });
}

const MIB: usize = 1 << 20;

/// Item `i` of the 2 GiB test: 1 MiB, its index first, then `i % 251`.
fn mib_item(i: u64) -> ByteBuf {
    let mut v = vec![(i % 251) as u8; MIB];
    v[..8].copy_from_slice(&i.to_le_bytes());
    ByteBuf::from(v)
}

// 2 GiB in 1 MiB items, put into `Queue::new()` by a non-root process before
// any consumer exists; a consumer in another process takes them all, in
// order, intact; memory within 1.5x, given back as they are taken.
#[test]
fn two_gib_of_big_items_wait_for_a_consumer() {
    let _s = common::serial();
    within(LONG, "two_gib_of_big_items_wait_for_a_consumer", || {
        const N: u64 = 2048;
        let leaks = LeakCheck::new();
        let (q, memfd) = queue_and_memfd::<ByteBuf>();
        let report = mp::Queue::<(bool, u64)>::new().unwrap();
        let encoded = N * encoded_len(&mib_item(0));
        let rss_before = rss();
        let mut producer = mp::Process::new(
            |(q, report): (mp::Queue<ByteBuf>, mp::Queue<(bool, u64)>)| {
                produce(&q, &report, N, mib_item)
            },
            (q.clone(), report.clone()),
        );
        producer.start().unwrap();
        assert!(
            producer.join_timeout(LONG).unwrap(),
            "the producer did not exit"
        );
        assert_eq!(producer.exitcode(), Some(0));
        let (non_root, micros) = report.get().unwrap();
        assert!(non_root, "the producer ran as root");
        eprintln!(
            "2 GiB of 1 MiB puts by a non-root process: {} ms",
            micros / 1000
        );
        assert_eq!(q.qsize(), N as usize);
        let held = allocated(&memfd) + rss().saturating_sub(rss_before);
        eprintln!("held {held} bytes for {encoded} encoded");
        assert!(held <= budget(encoded), "{held} bytes held for {encoded}");
        assert!(
            held >= encoded / 2,
            "the items are not in the queue's memory"
        );

        let (ack, go) = (
            mp::Queue::<u8>::new().unwrap(),
            mp::Queue::<u8>::new().unwrap(),
        );
        let mut consumer = mp::Process::new(
            |(q, ack, go): (mp::Queue<ByteBuf>, mp::Queue<u8>, mp::Queue<u8>)| {
                assert!(become_nobody());
                for i in 0..N {
                    let got = q.get().unwrap();
                    assert!(got == mib_item(i), "item {i} differs");
                    if i == N / 2 {
                        ack.put(1).unwrap();
                        go.get().unwrap();
                    }
                }
                assert!(matches!(q.get_nowait(), Err(mp::Error::Empty)));
            },
            (q.clone(), ack.clone(), go.clone()),
        );
        consumer.start().unwrap();
        ack.get().unwrap();
        let half = allocated(&memfd);
        assert!(
            half <= budget(encoded / 2),
            "{half} bytes held for half of {encoded}"
        );
        go.put(1).unwrap();
        consumer.join().unwrap();
        assert_eq!(consumer.exitcode(), Some(0));
        let end = allocated(&memfd);
        assert!(end <= 4096, "{end} bytes held by an empty queue");
        drop((q, report, ack, go, producer, consumer));
        leaks.check();
    });
}

// A producer puts 100 000 items and exits at once: its exit waits for no
// consumer (none exists until it has exited), and a consumer started
// afterwards gets every item, in order.
#[test]
fn a_producer_of_100_000_items_exits_at_once() {
    let _s = common::serial();
    within(LONG, "a_producer_of_100_000_items_exits_at_once", || {
        const N: u32 = 100_000;
        let q = mp::Queue::<u32>::new().unwrap();
        let last_put = mp::Event::new().unwrap();
        let mut producer = mp::Process::new(
            |(q, last_put): (mp::Queue<u32>, mp::Event)| {
                for i in 0..N {
                    q.put(i).unwrap();
                }
                last_put.set();
            },
            (q.clone(), last_put.clone()),
        );
        producer.start().unwrap();
        last_put.wait();
        let t = Instant::now();
        assert!(
            producer.join_timeout(Duration::from_secs(10)).unwrap(),
            "a producer with {N} items waiting did not exit"
        );
        eprintln!("exit after the last put: {} ms", t.elapsed().as_millis());
        assert_eq!(producer.exitcode(), Some(0));
        assert_eq!(q.qsize(), N as usize);
        let mut consumer = mp::Process::new(
            |q: mp::Queue<u32>| {
                for i in 0..N {
                    assert_eq!(q.get().unwrap(), i);
                }
            },
            q.clone(),
        );
        consumer.start().unwrap();
        consumer.join().unwrap();
        assert_eq!(consumer.exitcode(), Some(0));
        assert!(q.empty());
    });
}

/// A consumer that reports its pid, then takes items until `None`, and
/// reports what it took.
fn collect((q, ready, results): (mp::Queue<Option<u32>>, mp::Queue<u32>, mp::Queue<Vec<u32>>)) {
    ready.put(std::process::id()).unwrap();
    let mut got = Vec::new();
    while let Some(n) = q.get().unwrap() {
        got.push(n);
    }
    results.put(got).unwrap();
}

// Consumers asleep in `get` before a producer spills past the socket are
// woken for items in the spill log, not only for those in the socket.
#[test]
fn consumers_asleep_before_a_spill_get_every_item() {
    let _s = common::serial();
    within(
        LONG,
        "consumers_asleep_before_a_spill_get_every_item",
        || {
            const N: u32 = 20_000;
            let q = mp::Queue::<Option<u32>>::new().unwrap();
            let ready = mp::Queue::<u32>::new().unwrap();
            let results = mp::Queue::<Vec<u32>>::new().unwrap();
            let mut consumers: Vec<mp::Process> = (0..2)
                .map(|_| mp::Process::new(collect, (q.clone(), ready.clone(), results.clone())))
                .collect();
            for c in &mut consumers {
                c.set_daemon(true);
                c.start().unwrap();
            }
            for _ in 0..2 {
                wait_until_sleeping(ready.get().unwrap());
            }
            for i in 0..N {
                q.put_nowait(Some(i)).unwrap();
            }
            q.put(None).unwrap();
            q.put(None).unwrap();
            let mut all = Vec::new();
            for _ in 0..2 {
                let got = results.get().unwrap();
                assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order");
                all.extend(got);
            }
            all.sort_unstable();
            assert_eq!(all, (0..N).collect::<Vec<_>>());
            for c in &mut consumers {
                c.join().unwrap();
                assert_eq!(c.exitcode(), Some(0));
            }
        },
    );
}

/// Echoes each item's index back until an empty item.
fn echo_index((q, back): (mp::Queue<ByteBuf>, mp::Queue<u64>)) {
    loop {
        let item = q.get().unwrap();
        if item.is_empty() {
            return;
        }
        back.put(u64::from_le_bytes(item[..8].try_into().unwrap()))
            .unwrap();
    }
}

// A consumer asleep in `get` is woken by an item that goes to the spill log
// (items over 64 KiB always do), at once: 100 round trips take far less than
// the 100 ms a sleeping `get` waits before it looks again by itself (which
// would make them last 10 s).
#[test]
fn a_consumer_asleep_is_woken_by_an_item_in_the_spill_log() {
    let _s = common::serial();
    within(
        LONG,
        "a_consumer_asleep_is_woken_by_an_item_in_the_spill_log",
        || {
            let q = mp::Queue::<ByteBuf>::new().unwrap();
            let back = mp::Queue::<u64>::new().unwrap();
            let mut p = mp::Process::new(echo_index, (q.clone(), back.clone()));
            p.set_daemon(true);
            p.start().unwrap();
            let big = |i: u64| {
                let mut v = vec![0u8; 100 * 1024];
                v[..8].copy_from_slice(&i.to_le_bytes());
                ByteBuf::from(v)
            };
            q.put(big(0)).unwrap();
            assert_eq!(back.get().unwrap(), 0);
            let t = Instant::now();
            for i in 1..=100 {
                wait_until_sleeping(p.pid().unwrap());
                q.put(big(i)).unwrap();
                assert_eq!(back.get().unwrap(), i);
            }
            let took = t.elapsed();
            assert!(took < Duration::from_secs(5), "100 wake-ups took {took:?}");
            q.put(ByteBuf::new()).unwrap();
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(0));
        },
    );
}

// A bounded queue whose maxsize is far above what a socket holds takes
// maxsize items without waiting, then reports Full.
#[test]
fn a_large_bounded_queue_does_not_wait_for_socket_room() {
    let _s = common::serial();
    within(
        LONG,
        "a_large_bounded_queue_does_not_wait_for_socket_room",
        || {
            const MAX: usize = 50_000;
            let q = mp::Queue::<u64>::with_maxsize(MAX).unwrap();
            for i in 0..MAX as u64 {
                q.put_nowait(i).unwrap_or_else(|e| panic!("put {i}: {e}"));
            }
            assert!(q.full());
            assert!(matches!(q.put_nowait(0), Err(mp::Error::Full)));
            for i in 0..MAX as u64 {
                assert_eq!(q.get_nowait().unwrap(), i);
            }
            assert!(q.empty());
        },
    );
}

// JoinableQueue and SimpleQueue are unbounded the same way: a backlog far
// past the socket, then a worker in another process takes it; `join` waits
// for every task, spilled ones included.
#[test]
fn joinable_and_simple_queues_spill_too() {
    let _s = common::serial();
    within(LONG, "joinable_and_simple_queues_spill_too", || {
        const N: u32 = 5_000;
        let jq = mp::JoinableQueue::<u32>::new().unwrap();
        let sq = mp::SimpleQueue::<u32>::new().unwrap();
        for i in 0..N {
            jq.put_nowait(i).unwrap();
            sq.put(i).unwrap();
        }
        assert_eq!(jq.qsize(), N as usize);
        assert!(!jq.join_timeout(ms(10)));
        let mut worker = mp::Process::new(
            |(jq, sq): (mp::JoinableQueue<u32>, mp::SimpleQueue<u32>)| {
                for i in 0..N {
                    assert_eq!(jq.get().unwrap(), i);
                    jq.task_done().unwrap();
                    assert_eq!(sq.get().unwrap(), i);
                }
                assert!(sq.empty());
            },
            (jq.clone(), sq.clone()),
        );
        worker.set_daemon(true);
        worker.start().unwrap();
        jq.join();
        assert!(matches!(jq.task_done(), Err(mp::Error::Value(_))));
        worker.join().unwrap();
        assert_eq!(worker.exitcode(), Some(0));
        assert!(jq.empty() && sq.empty());
    });
}

/// Small items and items carrying a handle.
#[derive(Serialize, Deserialize)]
enum Mixed {
    N(u32),
    /// An item of 8 KiB: 1,000 of them fill the ring and spill.
    Padded(u32, ByteBuf),
    Conn(mp::Connection),
}

// Items carrying handles travel in the socket (their fds must), behind a
// placeholder in the ring: behind a backlog that filled the ring and spilled
// they wait until it has drained, so one producer's items stay in order.
// `put_nowait`/`put_timeout` report `Full` meanwhile.
#[test]
fn items_with_handles_wait_behind_a_spilled_backlog() {
    let _s = common::serial();
    within(
        LONG,
        "items_with_handles_wait_behind_a_spilled_backlog",
        || {
            let leaks = LeakCheck::new();
            let q = mp::Queue::<Mixed>::new().unwrap();
            // With nothing waiting, a handle goes at once.
            let (a, b) = mp::pipe(true).unwrap();
            q.put_nowait(Mixed::Conn(b)).unwrap();
            let Mixed::Conn(b) = q.get().unwrap() else {
                panic!("expected the connection")
            };
            a.send(&1u8).unwrap();
            assert_eq!(b.recv::<u8>().unwrap(), 1);
            // A backlog that spills past the ring (4 MiB).
            for i in 0..1000 {
                q.put_nowait(Mixed::Padded(i, ByteBuf::from(vec![i as u8; 8192])))
                    .unwrap();
            }
            let (c, d) = mp::pipe(true).unwrap();
            let Err(mp::Error::Full) = q.put_nowait(Mixed::Conn(d.try_clone().unwrap())) else {
                panic!("a handle overtook a spilled backlog")
            };
            assert!(matches!(
                q.put_timeout(Mixed::Conn(d.try_clone().unwrap()), ms(50)),
                Err(mp::Error::Full)
            ));
            // A consumer drains the backlog; the blocked put then goes through,
            // after every earlier item.
            let mut consumer = mp::Process::new(
                |q: mp::Queue<Mixed>| {
                    for i in 0..1000 {
                        assert!(matches!(q.get().unwrap(), Mixed::Padded(n, b)
                            if n == i && b.len() == 8192 && b[0] == i as u8));
                    }
                    let Mixed::Conn(d) = q.get().unwrap() else {
                        panic!("expected the connection last")
                    };
                    d.send(&"through the queue".to_string()).unwrap();
                },
                q.clone(),
            );
            consumer.start().unwrap();
            q.put(Mixed::Conn(d)).unwrap();
            assert_eq!(c.recv::<String>().unwrap(), "through the queue");
            consumer.join().unwrap();
            assert_eq!(consumer.exitcode(), Some(0));
            assert!(q.empty());
            drop((q, a, b, c, consumer));
            leaks.check();
        },
    );
}

/// One producer's item in `items_with_and_without_handles_keep_each_producers_order`.
#[derive(Serialize, Deserialize)]
struct OneProducersItem {
    from: u32,
    i: u32,
    conn: Option<mp::Connection>,
}

// Small items (in the ring) and items carrying a connection (in the socket,
// behind a placeholder in the ring) interleaved, from two producer processes
// at once: each producer's items are got in the order it put them, and every
// connection arrives with its own item and works.
#[test]
fn items_with_and_without_handles_keep_each_producers_order() {
    const N: u32 = 300;
    let _s = common::serial();
    within(
        LONG,
        "items_with_and_without_handles_keep_each_producers_order",
        || {
            let leaks = LeakCheck::new();
            let q = mp::Queue::<OneProducersItem>::new().unwrap();
            let mut producers: Vec<mp::Process> = (0..2u32)
                .map(|from| {
                    mp::Process::new(
                        |(q, from): (mp::Queue<OneProducersItem>, u32)| {
                            for i in 0..N {
                                let conn = (i % 3 == 0).then(|| {
                                    let (a, b) = mp::pipe(true).unwrap();
                                    a.send(&(from, i)).unwrap();
                                    b
                                });
                                q.put(OneProducersItem { from, i, conn }).unwrap();
                            }
                        },
                        (q.clone(), from),
                    )
                })
                .collect();
            for p in &mut producers {
                p.start().unwrap();
            }
            let mut next = [0u32; 2];
            for _ in 0..2 * N {
                let t = q.get().unwrap();
                assert_eq!(t.i, next[t.from as usize], "producer {}", t.from);
                next[t.from as usize] += 1;
                assert_eq!(t.conn.is_some(), t.i % 3 == 0, "item {}", t.i);
                if let Some(c) = t.conn {
                    assert_eq!(c.recv::<(u32, u32)>().unwrap(), (t.from, t.i));
                }
            }
            assert_eq!(next, [N, N]);
            for p in &mut producers {
                p.join().unwrap();
                assert_eq!(p.exitcode(), Some(0));
            }
            assert!(q.empty());
            assert_eq!(q.qsize(), 0);
            drop((q, producers));
            leaks.check();
        },
    );
}

// A consumer SIGKILLed while it takes items as fast as it can (so most
// likely holding the queue's lock, in the middle of a copy out of the ring or
// the spill log): the lock is taken over, nothing is got twice, and at most
// the item it was taking and the one it had not reported yet are missing.
#[test]
fn a_consumer_killed_while_taking_items_loses_at_most_one() {
    const N: u32 = 600;
    let _s = common::serial();
    within(
        LONG,
        "a_consumer_killed_while_taking_items_loses_at_most_one",
        || {
            let leaks = LeakCheck::new();
            // 16 KiB items: the first 250 or so in the ring, the rest spilled.
            let q = mp::Queue::<(u32, ByteBuf)>::new().unwrap();
            for i in 0..N {
                q.put((i, ByteBuf::from(vec![i as u8; 16 * 1024]))).unwrap();
            }
            let (mine, theirs) = mp::pipe(true).unwrap();
            let mut victim = mp::Process::new(
                |(q, report): (mp::Queue<(u32, ByteBuf)>, mp::Connection)| loop {
                    let (i, b) = q.get().unwrap();
                    assert!(b.len() == 16 * 1024 && b.iter().all(|&x| x == i as u8));
                    report.send(&i).unwrap();
                },
                (q.clone(), theirs),
            );
            victim.start().unwrap();
            // Kill it in the middle of its run.
            let mut reported = Vec::new();
            while reported.len() < (N / 2) as usize {
                reported.push(mine.recv::<u32>().unwrap());
            }
            victim.kill().unwrap();
            victim.join().unwrap();
            assert_eq!(victim.exitcode(), Some(-9));
            while mine.poll().unwrap() {
                match mine.recv::<u32>() {
                    Ok(i) => reported.push(i),
                    Err(_) => break,
                }
            }
            // The rest, in order, by this process.
            let mut got = Vec::new();
            loop {
                match q.get_timeout(ms(200)) {
                    Ok((i, b)) => {
                        assert!(b.len() == 16 * 1024 && b.iter().all(|&x| x == i as u8));
                        got.push(i);
                    }
                    Err(mp::Error::Empty) => break,
                    Err(e) => panic!("get after the kill: {e}"),
                }
            }
            assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order");
            let mut all: Vec<u32> = reported.iter().chain(&got).copied().collect();
            all.sort_unstable();
            let before = all.len();
            all.dedup();
            assert_eq!(all.len(), before, "an item was got twice");
            assert!(all.len() + 2 >= N as usize, "{} of {N} items", all.len());
            // The queue works on.
            q.put((7, ByteBuf::from(vec![7u8; 16 * 1024]))).unwrap();
            assert_eq!(q.get_timeout(LONG).unwrap().0, 7);
            drop((q, mine, victim));
            leaks.check();
        },
    );
}

// An item with handles put into a socket that is nearly, not quite, full
// goes through once a `get` makes room. (On a datagram socket POLLOUT fires
// only with the buffer at most a quarter used, while a send succeeds below
// full: a producer that waited for POLLOUT alone stayed blocked here.)
#[test]
fn an_item_with_handles_goes_when_one_slot_frees() {
    const PRODUCER: &str = "handle-producer";
    let _s = common::serial();
    within(
        SHORT,
        "an_item_with_handles_goes_when_one_slot_frees",
        || {
            let leaks = LeakCheck::new();
            let q = mp::Queue::<mp::Connection>::new().unwrap();
            // Fill the socket with handles (they never spill to shared memory).
            let mut kept = Vec::new();
            loop {
                let (a, b) = mp::pipe(true).unwrap();
                match q.put_nowait(b) {
                    Ok(()) => kept.push(a),
                    Err(mp::Error::Full) => break,
                    Err(e) => panic!("put_nowait: {e}"),
                }
                assert!(kept.len() < 100_000, "the socket never filled");
            }
            let n = kept.len();
            let (a, b) = mp::pipe(true).unwrap();
            kept.push(a);
            let producer = {
                let q = q.clone();
                std::thread::Builder::new()
                    .name(PRODUCER.into())
                    .spawn(move || q.put(b))
                    .unwrap()
            };
            // Once the producer sleeps (its put found no room), one item out:
            // the socket is still far above a quarter used.
            while !thread_sleeps(PRODUCER) {
                std::thread::yield_now();
            }
            let first = q.get().unwrap();
            producer.join().unwrap().unwrap();
            // Every connection arrived, paired with its kept end, in order.
            let mut got = vec![first];
            for _ in 0..n {
                got.push(q.get().unwrap());
            }
            assert!(q.empty());
            for (i, (mine, theirs)) in kept.iter().zip(&got).enumerate() {
                mine.send(&(i as u32)).unwrap();
                assert_eq!(theirs.recv::<u32>().unwrap(), i as u32);
            }
            drop((q, kept, got));
            leaks.check();
        },
    );
}

// A `get` at the fd limit takes an item carrying handles without them
// (MSG_CTRUNC): the item is lost, and the error says so; its slot is given
// back, so a bounded queue keeps its capacity.
#[test]
fn an_item_received_without_its_handles_is_lost_but_its_slot_freed() {
    let _s = common::serial();
    within(
        SHORT,
        "an_item_received_without_its_handles_is_lost_but_its_slot_freed",
        || {
            let leaks = LeakCheck::new();
            let q = mp::Queue::<Mixed>::with_maxsize(1).unwrap();
            let ready = mp::Event::new().unwrap();
            let go = mp::Event::new().unwrap();
            let mut child = mp::Process::new(
                |(q, ready, go): (mp::Queue<Mixed>, mp::Event, mp::Event)| {
                    ready.set();
                    go.wait();
                    // No fd free: the connection cannot be received.
                    match q.get() {
                        Err(mp::Error::Io(e)) if e.to_string().contains("queue item lost") => {}
                        Err(e) => panic!("expected the item lost, got {e}"),
                        Ok(_) => panic!("expected the item lost, got it"),
                    }
                    assert_eq!(q.qsize(), 0);
                    q.put_nowait(Mixed::N(7)).unwrap();
                },
                (q.clone(), ready.clone(), go.clone()),
            );
            child.start().unwrap();
            ready.wait();
            let pid = child.pid().unwrap();
            // Fds are allocated lowest first: a limit of the lowest free fd
            // leaves the child none to receive into.
            let open: BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
                .collect();
            let lowest_free = (0..).find(|n| !open.contains(n)).unwrap();
            let limit = format!("--nofile={lowest_free}");
            let status = std::process::Command::new("prlimit")
                .args(["--pid", &pid.to_string(), &limit])
                .status()
                .unwrap();
            assert!(status.success());
            let (a, b) = mp::pipe(true).unwrap();
            q.put(Mixed::Conn(b)).unwrap();
            go.set();
            child.join().unwrap();
            assert_eq!(child.exitcode(), Some(0));
            assert!(matches!(q.get_nowait(), Ok(Mixed::N(7))));
            assert!(q.empty());
            drop((q, a, child, ready, go));
            leaks.check();
        },
    );
}

/// True if a thread of this process named `name` is asleep in the kernel.
fn thread_sleeps(name: &str) -> bool {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return false;
    };
    tasks.flatten().any(|t| {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // "tid (comm) state ...": comm may hold spaces, so split at the last ')'.
        stat.rsplit_once(')').is_some_and(|(head, tail)| {
            head.ends_with(&format!("({name}")) && tail.trim_start().starts_with('S')
        })
    })
}

// ---------------------------------------------------------------------------
// More processes, deaths, big items, handles

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
