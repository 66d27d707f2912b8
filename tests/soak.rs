//! Load: long runs that check results and that memory and fd counts stay
//! flat. Ignored unless the `slow-tests` feature is on:
//!
//! ```text
//! cargo test --release --features slow-tests --test soak -- --nocapture
//! ```
//!
//! Each test prints its time, the parent's resident set (VmRSS) and open fd
//! count before and after; the asserts allow a small bound for allocator
//! and thread-local caches.
//!
//! CPython: _TestProcess (many short processes), _TestConnection
//! (test_spawn_close, large messages), _TestQueue.test_fork (many
//! producers/consumers), _TestPool.test_map / test_imap (at scale).

multiprocess::test_support!();
mod common;

use std::time::{Duration, Instant};

use multiprocess as mp;

/// Growth of the resident set the checks tolerate.
const RSS_SLACK: u64 = 32 << 20;

/// A snapshot of this process's resources.
#[derive(Debug, Clone, Copy)]
struct Usage {
    /// Resident set, bytes.
    rss: u64,
    /// Open fds.
    fds: usize,
}

fn usage() -> Usage {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    Usage {
        rss: kb * 1024,
        fds: std::fs::read_dir("/proc/self/fd").unwrap().count(),
    }
}

/// Prints the figures and asserts that RSS and fds stayed flat.
fn report(what: &str, start: Instant, before: Usage, after: Usage) {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "soak {what}: {:.1} s, RSS {:.1} MiB -> {:.1} MiB, fds {} -> {}",
        start.elapsed().as_secs_f64(),
        mib(before.rss),
        mib(after.rss),
        before.fds,
        after.fds
    );
    assert!(
        after.rss <= before.rss + RSS_SLACK,
        "{what}: RSS grew from {} to {} bytes",
        before.rss,
        after.rss
    );
    assert!(
        after.fds <= before.fds,
        "{what}: fds grew from {} to {}",
        before.fds,
        after.fds
    );
}

#[test]
#[cfg_attr(
    not(feature = "slow-tests"),
    ignore = "soak: run with --features slow-tests"
)]
fn thousand_processes_started_and_joined() {
    let _s = common::serial();
    let leaks = common::LeakCheck::new();
    let run = |n: u32| {
        // Eight at a time, as a program starting workers in a loop would.
        let mut live: Vec<(u32, mp::Process)> = Vec::new();
        for i in 0..n {
            let mut p = mp::Process::new(
                |i: u32| {
                    if i % 2 == 0 {
                        std::process::exit((i % 100) as i32 + 1);
                    }
                },
                i,
            );
            p.start().unwrap();
            live.push((i, p));
            if live.len() == 8 || i == n - 1 {
                for (i, mut p) in live.drain(..) {
                    p.join().unwrap();
                    let want = if i % 2 == 0 { (i % 100) as i32 + 1 } else { 0 };
                    assert_eq!(p.exitcode(), Some(want), "process {i}");
                }
            }
        }
    };
    run(16); // warm-up: first-use allocations are not growth
    let before = usage();
    let start = Instant::now();
    common::within(Duration::from_secs(600), "1,000 processes", move || {
        run(1000)
    });
    report("1000 processes", start, before, usage());
    leaks.check();
}

#[test]
#[cfg_attr(
    not(feature = "slow-tests"),
    ignore = "soak: run with --features slow-tests"
)]
fn ten_gib_through_a_pipe() {
    const MSG: usize = 1 << 20;
    const COUNT: u64 = 10_240;
    let _s = common::serial();
    let leaks = common::LeakCheck::new();
    let (rx, tx) = mp::pipe(false).unwrap();
    let mut p = mp::Process::new(
        |(tx, count): (mp::Connection, u64)| {
            let mut buf = vec![0u8; MSG];
            for i in 0..count {
                buf[..8].copy_from_slice(&i.to_le_bytes());
                buf[MSG - 8..].copy_from_slice(&(!i).to_le_bytes());
                tx.send_bytes(&buf).unwrap();
            }
        },
        (tx, COUNT),
    );
    p.start().unwrap();
    // The first messages warm the buffers up.
    for i in 0..16u64 {
        assert_eq!(rx.recv_bytes().unwrap()[..8], i.to_le_bytes());
    }
    let before = usage();
    let start = Instant::now();
    let received = common::within(Duration::from_secs(900), "10 GiB", move || {
        let mut bytes = 16 * MSG as u64;
        for i in 16..COUNT {
            let m = rx.recv_bytes().unwrap();
            assert_eq!(m.len(), MSG, "message {i}");
            assert_eq!(m[..8], i.to_le_bytes(), "message {i} out of order");
            assert_eq!(m[MSG - 8..], (!i).to_le_bytes(), "message {i} corrupt");
            bytes += m.len() as u64;
        }
        assert!(matches!(rx.recv_bytes(), Err(mp::Error::Eof)));
        bytes
    });
    let secs = start.elapsed().as_secs_f64();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    drop(p);
    assert_eq!(received, 10 << 30);
    println!(
        "soak pipe: {:.2} GiB/s",
        (received - 16 * MSG as u64) as f64 / secs / (1u64 << 30) as f64
    );
    report("10 GiB through a Pipe", start, before, usage());
    leaks.check();
}

#[test]
#[cfg_attr(
    not(feature = "slow-tests"),
    ignore = "soak: run with --features slow-tests"
)]
fn queue_with_8_producers_and_8_consumers_delivers_exactly_once() {
    const PRODUCERS: u64 = 8;
    const CONSUMERS: usize = 8;
    const PER_PRODUCER: u64 = 50_000;
    let _s = common::serial();
    let leaks = common::LeakCheck::new();
    let run = |per: u64| {
        let q = mp::Queue::<Option<u64>>::new().unwrap();
        let results = mp::Queue::<Vec<u64>>::new().unwrap();
        let mut producers = Vec::new();
        for p in 0..PRODUCERS {
            let mut proc = mp::Process::new(
                |(q, p, per): (mp::Queue<Option<u64>>, u64, u64)| {
                    for i in 0..per {
                        q.put(Some(p * per + i)).unwrap();
                    }
                },
                (q.clone(), p, per),
            );
            proc.start().unwrap();
            producers.push(proc);
        }
        let mut consumers = Vec::new();
        for _ in 0..CONSUMERS {
            let mut proc = mp::Process::new(
                |(q, results): (mp::Queue<Option<u64>>, mp::Queue<Vec<u64>>)| {
                    let mut got = Vec::new();
                    while let Some(x) = q.get().unwrap() {
                        got.push(x);
                    }
                    results.put(got).unwrap();
                },
                (q.clone(), results.clone()),
            );
            proc.start().unwrap();
            consumers.push(proc);
        }
        for mut p in producers {
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(0));
        }
        for _ in 0..CONSUMERS {
            q.put(None).unwrap();
        }
        let mut all = Vec::new();
        let mut per_consumer = Vec::new();
        for _ in 0..CONSUMERS {
            let got = results.get_timeout(common::LONG).unwrap();
            per_consumer.push(got.len());
            all.extend(got);
        }
        for mut c in consumers {
            c.join().unwrap();
            assert_eq!(c.exitcode(), Some(0));
        }
        let total = PRODUCERS * per;
        assert_eq!(all.len() as u64, total, "items lost or duplicated");
        all.sort_unstable();
        assert!(all.iter().copied().eq(0..total), "every item exactly once");
        assert!(q.empty());
        per_consumer
    };
    run(100); // warm-up
    let before = usage();
    let start = Instant::now();
    let per_consumer = common::within(Duration::from_secs(600), "queue 8x8", move || {
        run(PER_PRODUCER)
    });
    println!(
        "soak queue: {} items, per consumer {per_consumer:?}",
        PRODUCERS * PER_PRODUCER
    );
    report("Queue 8 producers x 8 consumers", start, before, usage());
    leaks.check();
}

#[test]
#[cfg_attr(
    not(feature = "slow-tests"),
    ignore = "soak: run with --features slow-tests"
)]
fn pool_runs_a_million_small_tasks() {
    const TASKS: u64 = 1_000_000;
    let _s = common::serial();
    let leaks = common::LeakCheck::new();
    let run = |n: u64| {
        let pool = mp::Pool::new(4).unwrap();
        // One task per item (chunksize 1): a million round trips.
        let mut count = 0u64;
        let mut sum = 0u64;
        for r in pool
            .imap_unordered_with_chunksize(|x: u64| x * 2, 0..n, 1)
            .unwrap()
        {
            sum += r.unwrap();
            count += 1;
        }
        assert_eq!(count, n);
        assert_eq!(sum, n * (n - 1));
        // And the chunked form, in order.
        let v = pool.map(|x: u64| x + 1, 0..n).unwrap();
        assert!(v.iter().copied().eq(1..=n));
        pool.close();
        pool.join().unwrap();
    };
    run(1000); // warm-up
    let before = usage();
    let start = Instant::now();
    common::within(
        Duration::from_secs(900),
        "a million pool tasks",
        move || run(TASKS),
    );
    report(
        "Pool 1,000,000 tasks (imap_unordered chunksize 1, then map)",
        start,
        before,
        usage(),
    );
    leaks.check();
}
