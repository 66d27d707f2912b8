//! Synchronization primitives across real processes.
//!
//! Ported from cpython: Lib/test/_test_multiprocessing.py (3.11, PSF licence):
//! _TestLock, _TestSemaphore, _TestCondition, _TestEvent, _TestBarrier, run with
//! processes only (the thread and manager mixins do not apply). Changes: Python's
//! `time.sleep(DELTA)` checks that "nobody else woke" become bounded negative
//! checks (`acquire_timeout` returning false), timings are lower bounds only, and
//! the dead-holder, nesting and leak tests are ours (beyond CPython).

multiprocess::test_support!();
mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{LONG, LeakCheck, SHORT, joined_ok, ms, serial, start, within};
use multiprocess as mp;
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------
// Lock

// CPython: _TestLock.test_lock
#[test]
fn lock() {
    let l = mp::Lock::new().unwrap();
    l.acquire();
    assert!(!l.try_acquire());
    assert!(l.release().is_ok());
    assert!(matches!(l.release(), Err(mp::Error::Value(_))));
    {
        let _g = l.lock();
        assert!(l.is_locked());
    }
    assert!(!l.is_locked());
}

// CPython: _TestLock.test_lock_context
#[test]
fn lock_guard_releases_on_drop() {
    let l = mp::Lock::new().unwrap();
    let g = l.lock();
    assert_eq!(g.acquired(), mp::Acquired::Clean);
    assert!(!l.try_acquire());
    drop(g);
    assert!(l.try_acquire());
}

#[test]
fn lock_debug_shows_state() {
    let l = mp::Lock::new().unwrap();
    assert_eq!(format!("{l:?}"), "Lock { locked: false, owner: None }");
    l.acquire();
    assert_eq!(
        format!("{l:?}"),
        format!(
            "Lock {{ locked: true, owner: Some(pid {}) }}",
            std::process::id()
        )
    );
}

#[test]
fn lock_acquire_timeout_is_a_lower_bound() {
    let l = mp::Lock::new().unwrap();
    l.acquire();
    let t0 = Instant::now();
    assert!(!l.acquire_timeout(ms(100)));
    assert!(t0.elapsed() >= ms(100));
}

// Python probed: another process may release a Lock.
#[test]
fn lock_released_by_another_process() {
    let _s = serial();
    let l = mp::Lock::new().unwrap();
    l.acquire();
    joined_ok(start(
        |l: mp::Lock| {
            assert!(l.is_locked());
            l.release().unwrap();
        },
        l.clone(),
    ));
    assert!(!l.is_locked());
    // Not a false "owner died": the acquirer is alive and the lock was released.
    assert_eq!(l.acquire_checked(), mp::Acquired::Clean);
    assert_eq!(l.recoveries(), 0);
}

#[test]
fn a_child_blocks_until_the_parent_releases() {
    let _s = serial();
    let l = mp::Lock::new().unwrap();
    let done = mp::Event::new().unwrap();
    l.acquire();
    let p = start(
        |(l, done): (mp::Lock, mp::Event)| {
            l.acquire();
            done.set();
            l.release().unwrap();
        },
        (l.clone(), done.clone()),
    );
    // The child cannot get past the lock while we hold it.
    assert!(!done.wait_timeout(ms(100)));
    l.release().unwrap();
    assert!(done.wait_timeout(LONG));
    joined_ok(p);
}

/// Three processes meet at a barrier and add to a `Value` under its lock as
/// fast as they can; then they add to a plain value under one `Lock`, every
/// 500th addition holding it for 300 µs of work, so that waiters pass from the
/// spin through the short first sleep into the fenced sleep of the plain
/// release (`synchronize::raw`). No addition is lost, and no waiter's sleep ran
/// out its 100 ms slice to find the lock free: a lost wake costs that much,
/// not a hang, so only this count shows one.
#[test]
fn lock_waiters_are_woken_and_no_update_is_lost() {
    const ADDS: u64 = 20_000;
    type Args = (
        mp::Lock,
        mp::RawValue<u64>,
        mp::Value<u64>,
        mp::Barrier,
        mp::Queue<u64>,
    );
    let _s = serial();
    let lock = mp::Lock::new().unwrap();
    let plain = mp::RawValue::new(0u64).unwrap();
    let value = mp::Value::new(0u64).unwrap();
    let barrier = mp::Barrier::new(3).unwrap();
    let missed = mp::Queue::<u64>::new().unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| {
            start(
                |(lock, plain, value, barrier, missed): Args| {
                    barrier.wait().unwrap();
                    for _ in 0..ADDS {
                        *value.lock() += 1;
                    }
                    barrier.wait().unwrap();
                    for i in 0..ADDS {
                        let _g = lock.lock();
                        plain.set(plain.get() + 1);
                        if i % 500 == 0 {
                            let t = Instant::now();
                            while t.elapsed() < Duration::from_micros(300) {
                                std::hint::spin_loop();
                            }
                        }
                    }
                    missed.put(mp::__missed_lock_wakes()).unwrap();
                },
                (
                    lock.clone(),
                    plain.clone(),
                    value.clone(),
                    barrier.clone(),
                    missed.clone(),
                ),
            )
        })
        .collect();
    let lost: Vec<u64> = (0..3).map(|_| missed.get_timeout(LONG).unwrap()).collect();
    for p in children {
        joined_ok(p);
    }
    assert_eq!(value.get(), 3 * ADDS);
    assert_eq!(plain.get(), 3 * ADDS);
    assert_eq!(lost, [0, 0, 0], "wakes missed by each child's lock waiters");
    assert!(!lock.is_locked());
    assert_eq!(lock.recoveries(), 0);
}

/// A child that takes the lock, says so, and blocks forever.
fn hold_forever(l: &mp::Lock, held: &mp::Event, never: &mp::Event) {
    l.acquire();
    held.set();
    never.wait();
}

#[test]
fn a_dead_holder_of_a_lock_is_taken_over() {
    let _s = serial();
    let l = mp::Lock::new().unwrap();
    let held = mp::Event::new().unwrap();
    let never = mp::Event::new().unwrap();
    let mut p = start(
        |(l, held, never): (mp::Lock, mp::Event, mp::Event)| hold_forever(&l, &held, &never),
        (l.clone(), held.clone(), never.clone()),
    );
    assert!(held.wait_timeout(LONG));
    let pid = p.pid().unwrap();
    assert_eq!(l.owner(), Some(pid));
    p.kill().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(-9));
    let l2 = l.clone();
    let how = within(SHORT, "take over a dead holder's lock", move || {
        l2.acquire_checked()
    });
    assert_eq!(how, mp::Acquired::OwnerDied { pid });
    assert_eq!(l.recoveries(), 1);
    assert_eq!(l.owner(), Some(std::process::id()));
    l.release().unwrap();
    assert_eq!(l.acquire_checked(), mp::Acquired::Clean);
}

#[test]
fn a_waiter_blocked_before_the_holder_dies_takes_over() {
    let _s = serial();
    let l = mp::Lock::new().unwrap();
    let held = mp::Event::new().unwrap();
    let never = mp::Event::new().unwrap();
    let mut p = start(
        |(l, held, never): (mp::Lock, mp::Event, mp::Event)| hold_forever(&l, &held, &never),
        (l.clone(), held.clone(), never.clone()),
    );
    assert!(held.wait_timeout(LONG));
    let pid = p.pid().unwrap();
    // A second child waits on the lock, then reports how it got it.
    let got = mp::Value::new(0u32).unwrap();
    let waiter = start(
        |(l, got): (mp::Lock, mp::Value<u32>)| {
            if let mp::Acquired::OwnerDied { pid } = l.acquire_checked() {
                got.set(pid);
            }
            l.release().unwrap();
        },
        (l.clone(), got.clone()),
    );
    p.kill().unwrap();
    p.join().unwrap();
    joined_ok(waiter);
    assert_eq!(got.get(), pid);
    assert_eq!(l.recoveries(), 1);
}

#[test]
fn a_dead_holder_of_an_rlock_is_taken_over() {
    let _s = serial();
    let r = mp::RLock::new().unwrap();
    let held = mp::Event::new().unwrap();
    let never = mp::Event::new().unwrap();
    let mut p = start(
        |(r, held, never): (mp::RLock, mp::Event, mp::Event)| {
            r.acquire();
            r.acquire();
            held.set();
            never.wait();
        },
        (r.clone(), held.clone(), never.clone()),
    );
    assert!(held.wait_timeout(LONG));
    let pid = p.pid().unwrap();
    p.kill().unwrap();
    p.join().unwrap();
    let r2 = r.clone();
    let (how, owned, released, again) =
        within(SHORT, "take over a dead holder's rlock", move || {
            let how = r2.acquire_checked();
            let owned = r2.is_owned();
            // The dead owner's two levels are gone: one release frees it.
            let released = r2.release().is_ok();
            let again = matches!(r2.release(), Err(mp::Error::Value(_)));
            (how, owned, released, again)
        });
    assert_eq!(how, mp::Acquired::OwnerDied { pid });
    assert!(owned && released && again);
    assert_eq!(r.owner(), None);
    assert_eq!(r.recoveries(), 1);
}

// ---------------------------------------------------------------------------
// RLock

// CPython: _TestLock.test_rlock
#[test]
fn rlock() {
    let r = mp::RLock::new().unwrap();
    r.acquire();
    r.acquire();
    r.acquire();
    r.release().unwrap();
    r.release().unwrap();
    r.release().unwrap();
    assert!(matches!(r.release(), Err(mp::Error::Value(_))));
}

#[test]
fn rlock_is_owned_by_one_thread() {
    let r = mp::RLock::new().unwrap();
    r.acquire();
    let r2 = r.clone();
    let other = std::thread::spawn(move || {
        (
            r2.try_acquire(),
            matches!(r2.release(), Err(mp::Error::Value(_))),
        )
    })
    .join()
    .unwrap();
    assert_eq!(other, (false, true));
    r.release().unwrap();
}

#[test]
fn rlock_release_by_another_process_is_an_error() {
    let _s = serial();
    let r = mp::RLock::new().unwrap();
    r.acquire();
    joined_ok(start(
        |r: mp::RLock| {
            assert!(!r.is_owned());
            assert!(!r.try_acquire());
            assert!(matches!(r.release(), Err(mp::Error::Value(_))));
        },
        r.clone(),
    ));
    assert!(r.is_owned());
    r.release().unwrap();
}

// ---------------------------------------------------------------------------
// Semaphore

fn semaphore_sequence(
    acquire: impl Fn() -> bool,
    release: impl Fn() -> mp::Result<()>,
    value: impl Fn() -> u32,
) {
    assert_eq!(value(), 2);
    assert!(acquire());
    assert_eq!(value(), 1);
    assert!(acquire());
    assert_eq!(value(), 0);
    assert!(!acquire());
    assert_eq!(value(), 0);
    release().unwrap();
    assert_eq!(value(), 1);
    release().unwrap();
    assert_eq!(value(), 2);
}

// CPython: _TestSemaphore.test_semaphore
#[test]
fn semaphore() {
    let s = mp::Semaphore::new(2).unwrap();
    semaphore_sequence(|| s.try_acquire(), || s.release(), || s.get_value());
    // Unbounded: further releases go on counting.
    s.release().unwrap();
    assert_eq!(s.get_value(), 3);
    s.release().unwrap();
    assert_eq!(s.get_value(), 4);
    assert_eq!(format!("{s:?}"), "Semaphore { value: 4 }");
}

// CPython: _TestSemaphore.test_bounded_semaphore
#[test]
fn bounded_semaphore() {
    let s = mp::BoundedSemaphore::new(2).unwrap();
    semaphore_sequence(|| s.try_acquire(), || s.release(), || s.get_value());
    assert!(matches!(s.release(), Err(mp::Error::Value(_))));
    assert_eq!(s.get_value(), 2);
    assert_eq!(
        format!("{s:?}"),
        "BoundedSemaphore { value: 2, maxvalue: 2 }"
    );
}

// CPython: _TestSemaphore.test_timeout
#[test]
fn semaphore_timeout() {
    let s = mp::Semaphore::new(0).unwrap();
    let t0 = Instant::now();
    assert!(!s.try_acquire());
    assert!(!s.acquire_timeout(Duration::ZERO));
    assert!(t0.elapsed() < SHORT);
    let t0 = Instant::now();
    assert!(!s.acquire_timeout(ms(200)));
    assert!(t0.elapsed() >= ms(200));
}

#[test]
fn semaphore_out_of_range_is_an_error() {
    assert!(matches!(
        mp::Semaphore::new(u32::MAX),
        Err(mp::Error::Value(_))
    ));
    let s = mp::Semaphore::new(i32::MAX as u32).unwrap();
    assert!(matches!(s.release(), Err(mp::Error::Value(_))));
}

#[test]
fn semaphore_counts_across_processes() {
    let _s = serial();
    let s = mp::Semaphore::new(0).unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| start(|s: mp::Semaphore| s.acquire(), s.clone()))
        .collect();
    for _ in 0..3 {
        s.release().unwrap();
    }
    for p in children {
        joined_ok(p);
    }
    assert_eq!(s.get_value(), 0);
}

// ---------------------------------------------------------------------------
// Event

// CPython: _TestEvent.test_event
#[test]
fn event() {
    let _s = serial();
    let e = mp::Event::new().unwrap();
    assert!(!e.is_set());
    assert!(!e.wait_timeout(Duration::ZERO));
    let t0 = Instant::now();
    assert!(!e.wait_timeout(ms(100)));
    assert!(t0.elapsed() >= ms(100));
    assert_eq!(format!("{e:?}"), "Event { set: false }");
    e.set();
    assert!(e.is_set());
    e.wait();
    assert!(e.wait_timeout(ms(100)));
    assert_eq!(format!("{e:?}"), "Event { set: true }");
    e.clear();
    assert!(!e.is_set());
    // A child setting it wakes a blocked wait here.
    let p = start(|e: mp::Event| e.set(), e.clone());
    let e2 = e.clone();
    within(SHORT, "event set by a child", move || e2.wait());
    assert!(e.is_set());
    joined_ok(p);
}

#[test]
fn event_wakes_every_waiting_process() {
    let _s = serial();
    let e = mp::Event::new().unwrap();
    let woke = mp::Semaphore::new(0).unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| {
            start(
                |(e, woke): (mp::Event, mp::Semaphore)| {
                    assert!(e.wait_timeout(LONG));
                    woke.release().unwrap();
                },
                (e.clone(), woke.clone()),
            )
        })
        .collect();
    e.set();
    for p in children {
        joined_ok(p);
    }
    assert_eq!(woke.get_value(), 3);
}

/// The child of `event_ping_pong_quick_and_slow_loses_no_round`: `rounds`
/// times, waits for `ping`, clears it and sets `pong`; in runs of rounds it
/// computes a while first, so the parent's spin sometimes finds `pong` and
/// sometimes gives up and sleeps.
fn event_echo((ping, pong, rounds): (mp::Event, mp::Event, u64)) {
    for i in 0..rounds {
        assert!(ping.wait_timeout(LONG), "round {i}: no ping");
        ping.clear();
        if (i / 200) % 2 == 1 {
            let mut acc = i;
            for k in 0..50_000u64 {
                acc = std::hint::black_box(acc.wrapping_mul(6364136223846793005).wrapping_add(k));
            }
            std::hint::black_box(acc);
        }
        pong.set();
    }
}

#[test]
fn event_ping_pong_quick_and_slow_loses_no_round() {
    // A waiter watches the flag before it sleeps, for a budget that shrinks
    // after misses: every set must still be seen, spinning or asleep.
    let _s = serial();
    within(SHORT, "event_ping_pong", || {
        let leaks = LeakCheck::new();
        let (ping, pong) = (mp::Event::new().unwrap(), mp::Event::new().unwrap());
        const ROUNDS: u64 = 1000;
        let p = start(event_echo, (ping.clone(), pong.clone(), ROUNDS));
        for i in 0..ROUNDS {
            ping.set();
            assert!(pong.wait_timeout(LONG), "round {i}: no pong");
            pong.clear();
        }
        joined_ok(p);
        assert!(!ping.is_set() && !pong.is_set());
        drop((ping, pong));
        leaks.check();
    });
}

// ---------------------------------------------------------------------------
// Condition

/// CPython's `_TestCondition.f`: report sleeping, wait, report woken.
fn cond_sleeper(
    (cond, sleeping, woken, timeout_ms): (mp::Condition, mp::Semaphore, mp::Semaphore, u64),
) {
    let _g = cond.lock();
    sleeping.release().unwrap();
    if timeout_ms == 0 {
        assert!(cond.wait().unwrap());
    } else {
        cond.wait_timeout(ms(timeout_ms)).unwrap();
    }
    woken.release().unwrap();
}

fn start_sleepers(
    n: usize,
    cond: &mp::Condition,
    sleeping: &mp::Semaphore,
    woken: &mp::Semaphore,
    timeout_ms: u64,
) -> Vec<mp::Process> {
    let children: Vec<_> = (0..n)
        .map(|_| {
            start(
                cond_sleeper,
                (cond.clone(), sleeping.clone(), woken.clone(), timeout_ms),
            )
        })
        .collect();
    // Each child reports "sleeping" under the lock, just before its wait
    // registers (also under the lock): once we take the lock, all are waiting.
    for _ in 0..n {
        assert!(sleeping.acquire_timeout(LONG));
    }
    children
}

// CPython: _TestCondition.test_notify
#[test]
fn condition_notify_wakes_exactly_one() {
    let _s = serial();
    let cond = mp::Condition::new().unwrap();
    let sleeping = mp::Semaphore::new(0).unwrap();
    let woken = mp::Semaphore::new(0).unwrap();
    let children = start_sleepers(2, &cond, &sleeping, &woken, 0);
    assert_eq!(woken.get_value(), 0);
    {
        let _g = cond.lock();
        cond.notify().unwrap();
    }
    assert!(woken.acquire_timeout(LONG));
    // The other stays asleep.
    assert!(!woken.acquire_timeout(ms(300)));
    {
        let _g = cond.lock();
        cond.notify().unwrap();
    }
    assert!(woken.acquire_timeout(LONG));
    for p in children {
        joined_ok(p);
    }
}

// CPython: _TestCondition.test_notify_all
#[test]
fn condition_notify_all_ignores_timed_out_sleepers() {
    let _s = serial();
    let cond = mp::Condition::new().unwrap();
    let sleeping = mp::Semaphore::new(0).unwrap();
    let woken = mp::Semaphore::new(0).unwrap();
    // Three sleepers that time out on their own.
    let timed = start_sleepers(3, &cond, &sleeping, &woken, 50);
    for _ in 0..3 {
        assert!(woken.acquire_timeout(LONG));
    }
    for p in timed {
        joined_ok(p);
    }
    // Three without timeout: notify_all wakes them all, and only them.
    let children = start_sleepers(3, &cond, &sleeping, &woken, 0);
    assert_eq!(woken.get_value(), 0);
    {
        let _g = cond.lock();
        cond.notify_all().unwrap();
    }
    for _ in 0..3 {
        assert!(woken.acquire_timeout(LONG));
    }
    for p in children {
        joined_ok(p);
    }
    assert_eq!(woken.get_value(), 0);
}

// CPython: _TestCondition.test_notify_n
#[test]
fn condition_notify_n_wakes_n() {
    let _s = serial();
    let cond = mp::Condition::new().unwrap();
    let sleeping = mp::Semaphore::new(0).unwrap();
    let woken = mp::Semaphore::new(0).unwrap();
    let children = start_sleepers(6, &cond, &sleeping, &woken, 0);
    {
        let _g = cond.lock();
        cond.notify_n(2).unwrap();
    }
    assert!(woken.acquire_timeout(LONG));
    assert!(woken.acquire_timeout(LONG));
    assert!(!woken.acquire_timeout(ms(300)));
    {
        let _g = cond.lock();
        cond.notify_n(4).unwrap();
    }
    for _ in 0..4 {
        assert!(woken.acquire_timeout(LONG));
    }
    // Extra notifies are harmless.
    {
        let _g = cond.lock();
        cond.notify().unwrap();
        cond.notify_n(3).unwrap();
    }
    for p in children {
        joined_ok(p);
    }
    assert_eq!(woken.get_value(), 0);
}

// CPython: _TestCondition.test_timeout
#[test]
fn condition_wait_timeout() {
    let cond = mp::Condition::new().unwrap();
    let _g = cond.lock();
    let t0 = Instant::now();
    assert!(!cond.wait_timeout(ms(100)).unwrap());
    assert!(t0.elapsed() >= ms(100));
    assert!(!cond.wait_timeout(Duration::ZERO).unwrap());
    // The lock is held again after the wait.
    assert!(cond.get_lock().is_owned());
}

// CPython: _TestCondition.test_waitfor, test_waitfor_timeout
#[test]
fn condition_wait_for() {
    let _s = serial();
    let cond = mp::Condition::new().unwrap();
    let state = mp::Value::new(0i32).unwrap();
    let p = start(
        |(cond, state): (mp::Condition, mp::Value<i32>)| {
            for i in 1..=5 {
                let _g = cond.lock();
                state.set(i);
                cond.notify().unwrap();
            }
        },
        (cond.clone(), state.clone()),
    );
    {
        let _g = cond.lock();
        assert!(cond.wait_for(|| state.get() == 5).unwrap());
        assert_eq!(state.get(), 5);
    }
    joined_ok(p);
    let _g = cond.lock();
    let t0 = Instant::now();
    assert!(!cond.wait_for_timeout(|| state.get() == 6, ms(100)).unwrap());
    assert!(t0.elapsed() >= ms(100));
}

// CPython: _TestCondition (AssertionError('must acquire() condition before using wait()'))
#[test]
fn condition_needs_its_lock() {
    let cond = mp::Condition::new().unwrap();
    assert!(matches!(
        cond.wait_timeout(ms(10)),
        Err(mp::Error::Value(_))
    ));
    assert!(matches!(cond.wait_for(|| false), Err(mp::Error::Value(_))));
    // As CPython: a predicate already true needs no wait, so no lock.
    assert!(cond.wait_for(|| true).unwrap());
    assert!(matches!(cond.notify(), Err(mp::Error::Value(_))));
    assert!(matches!(cond.notify_all(), Err(mp::Error::Value(_))));
    assert!(matches!(cond.release(), Err(mp::Error::Value(_))));
    // Held recursively: wait releases every level and restores them.
    let lock = mp::RLock::new().unwrap();
    let c = mp::Condition::with_lock(lock.clone()).unwrap();
    c.acquire();
    c.acquire();
    assert!(!c.wait_timeout(ms(10)).unwrap());
    c.release().unwrap();
    c.release().unwrap();
    assert!(c.release().is_err());
}

// ---------------------------------------------------------------------------
// Barrier

const PARTIES: usize = 5;
const PASSES: usize = 3;

/// One party: `PASSES` waits, recording each index at `[pass * PARTIES + id]`.
fn barrier_party((b, indices, id): (mp::Barrier, mp::Array<i64>, usize)) {
    for pass in 0..PASSES {
        let i = b.wait_timeout(LONG).unwrap();
        indices.set(pass * PARTIES + id, i as i64);
    }
}

// CPython: _TestBarrier.test_barrier, test_wait_return, test_barrier_10
#[test]
fn barrier_indices_are_distinct_every_pass() {
    let _s = serial();
    let b = mp::Barrier::new(PARTIES).unwrap();
    assert_eq!(b.parties(), PARTIES);
    let indices = mp::Array::<i64>::from_slice(&[-1; PARTIES * PASSES]).unwrap();
    let children: Vec<_> = (1..PARTIES)
        .map(|id| start(barrier_party, (b.clone(), indices.clone(), id)))
        .collect();
    barrier_party((b.clone(), indices.clone(), 0));
    for p in children {
        joined_ok(p);
    }
    let all = indices.to_vec();
    for pass in 0..PASSES {
        let mut got: Vec<i64> = all[pass * PARTIES..(pass + 1) * PARTIES].to_vec();
        got.sort();
        assert_eq!(got, (0..PARTIES as i64).collect::<Vec<_>>(), "pass {pass}");
    }
    assert_eq!(b.n_waiting(), 0);
    assert!(!b.is_broken());
}

// CPython: _TestBarrier.test_abort
#[test]
fn barrier_abort_breaks_every_waiter() {
    let _s = serial();
    let b = mp::Barrier::new(3).unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            start(
                |b: mp::Barrier| {
                    assert!(matches!(
                        b.wait_timeout(LONG),
                        Err(mp::Error::BrokenBarrier)
                    ))
                },
                b.clone(),
            )
        })
        .collect();
    within(SHORT, "two parties waiting", {
        let b = b.clone();
        move || {
            while b.n_waiting() < 2 {
                std::thread::yield_now();
            }
        }
    });
    b.abort();
    for p in children {
        joined_ok(p);
    }
    assert!(b.is_broken());
    assert!(matches!(b.wait(), Err(mp::Error::BrokenBarrier)));
    // CPython: _TestBarrier.test_abort_and_reset
    b.reset();
    assert!(!b.is_broken());
    let p = start(
        |b: mp::Barrier| assert!(b.wait_timeout(LONG).is_ok()),
        b.clone(),
    );
    let q = start(
        |b: mp::Barrier| assert!(b.wait_timeout(LONG).is_ok()),
        b.clone(),
    );
    assert!(b.wait_timeout(LONG).is_ok());
    joined_ok(p);
    joined_ok(q);
}

// CPython: _TestBarrier.test_reset
#[test]
fn barrier_reset_breaks_waiters_then_works() {
    let _s = serial();
    let b = mp::Barrier::new(3).unwrap();
    let p = start(
        |b: mp::Barrier| {
            assert!(matches!(
                b.wait_timeout(LONG),
                Err(mp::Error::BrokenBarrier)
            ))
        },
        b.clone(),
    );
    within(SHORT, "one party waiting", {
        let b = b.clone();
        move || {
            while b.n_waiting() < 1 {
                std::thread::yield_now();
            }
        }
    });
    b.reset();
    joined_ok(p);
    assert!(!b.is_broken());
    assert_eq!(b.n_waiting(), 0);
    let children: Vec<_> = (0..2)
        .map(|_| {
            start(
                |b: mp::Barrier| assert!(b.wait_timeout(LONG).is_ok()),
                b.clone(),
            )
        })
        .collect();
    assert!(b.wait_timeout(LONG).is_ok());
    for p in children {
        joined_ok(p);
    }
}

// CPython: _TestBarrier.test_timeout
#[test]
fn barrier_timeout_breaks_it_for_everyone() {
    let _s = serial();
    let b = mp::Barrier::new(3).unwrap();
    let p = start(
        |b: mp::Barrier| {
            assert!(matches!(
                b.wait_timeout(LONG),
                Err(mp::Error::BrokenBarrier)
            ))
        },
        b.clone(),
    );
    within(SHORT, "one party waiting", {
        let b = b.clone();
        move || {
            while b.n_waiting() < 1 {
                std::thread::yield_now();
            }
        }
    });
    let t0 = Instant::now();
    assert!(matches!(
        b.wait_timeout(ms(100)),
        Err(mp::Error::BrokenBarrier)
    ));
    assert!(t0.elapsed() >= ms(100));
    joined_ok(p);
    assert!(b.is_broken());
}

// CPython: _TestBarrier.test_single_thread
#[test]
fn one_party_barrier_never_blocks() {
    let b = mp::Barrier::new(1).unwrap();
    for _ in 0..1000 {
        assert_eq!(b.wait().unwrap(), 0);
    }
    assert!(matches!(mp::Barrier::new(0), Err(mp::Error::Value(_))));
    assert_eq!(
        format!("{b:?}"),
        "Barrier { parties: 1, n_waiting: 0, broken: false }"
    );
}

/// Each party's handle on the count of action runs: the action is a
/// non-capturing fn, so what it touches lives in a static of the program.
static TRIPS: OnceLock<mp::Value<u32>> = OnceLock::new();

/// The action of `barrier_action_runs_once_per_pass_before_release`.
fn count_trip() {
    let trips = TRIPS.get().expect("every party sets TRIPS before waiting");
    *trips.lock() += 1;
}

/// One party of the action test: after pass `k`, the action ran `k + 1` times.
fn action_party((b, trips): (mp::Barrier, mp::Value<u32>)) {
    let _ = TRIPS.set(trips);
    for pass in 0..PASSES as u32 {
        b.wait_timeout(LONG).unwrap();
        assert_eq!(TRIPS.get().unwrap().get(), pass + 1);
    }
}

// CPython: _TestBarrier.test_action
#[test]
fn barrier_action_runs_once_per_pass_before_release() {
    let _s = serial();
    let trips = mp::Value::new(0u32).unwrap();
    // This process's party keeps its handle in the static: it is set before
    // the leak check starts counting.
    TRIPS.set(trips.clone()).unwrap();
    let leaks = LeakCheck::new();
    let b = mp::Barrier::builder(4).action(count_trip).build().unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| start(action_party, (b.clone(), trips.clone())))
        .collect();
    action_party((b.clone(), trips.clone()));
    for p in children {
        joined_ok(p);
    }
    assert_eq!(trips.get(), PASSES as u32);
    assert!(!b.is_broken());
    drop((b, trips));
    leaks.check();
}

// CPython: threading's BarrierTests.test_action_exception (the action raises)
#[test]
fn barrier_panicking_action_breaks_it() {
    let _s = serial();
    // One party: the action always runs in this process.
    let b = mp::Barrier::builder(1)
        .action(|| panic!("action failed"))
        .build()
        .unwrap();
    match b.wait() {
        Err(mp::Error::Remote { message, pid, .. }) => {
            assert_eq!(message, "action failed");
            assert_eq!(pid, std::process::id());
        }
        other => panic!("expected the action's panic, got {other:?}"),
    }
    assert!(b.is_broken());
    assert!(matches!(b.wait(), Err(mp::Error::BrokenBarrier)));
    // Two parties: whichever arrives last runs it and gets the panic; the
    // other is released with BrokenBarrier.
    let b = mp::Barrier::builder(2)
        .action(|| panic!("action failed"))
        .build()
        .unwrap();
    let remote = mp::Value::new(0u32).unwrap();
    let p = start(
        |(b, remote): (mp::Barrier, mp::Value<u32>)| match b.wait_timeout(LONG) {
            Err(mp::Error::Remote { message, .. }) if message == "action failed" => {
                *remote.lock() += 1
            }
            Err(mp::Error::BrokenBarrier) => {}
            other => panic!("unexpected {other:?}"),
        },
        (b.clone(), remote.clone()),
    );
    match b.wait_timeout(LONG) {
        Err(mp::Error::Remote { message, .. }) if message == "action failed" => *remote.lock() += 1,
        Err(mp::Error::BrokenBarrier) => {}
        other => panic!("unexpected {other:?}"),
    }
    joined_ok(p);
    assert_eq!(remote.get(), 1, "exactly one party ran the action");
    assert!(b.is_broken());
}

/// One party of CPython's `_test_abort_and_reset_f`; `results[k]` counts
/// CPython's `results{k+1}`.
fn abort_and_reset_party((b, b2, results): (mp::Barrier, mp::Barrier, mp::Array<u32>)) {
    let bump = |k: usize| {
        let mut g = results.lock();
        g[k] += 1;
    };
    let n = b.parties();
    match b.wait() {
        Ok(i) if i == n / 2 => b.abort(),
        Ok(_) => match b.wait() {
            Ok(_) => bump(0),
            Err(mp::Error::BrokenBarrier) => bump(1),
            Err(e) => panic!("{e}"),
        },
        Err(mp::Error::BrokenBarrier) => bump(1),
        Err(e) => panic!("{e}"),
    }
    // Synchronize and reset: first so that everyone has left the barrier,
    // after so that no one enters it before the reset.
    if b2.wait().unwrap() == n / 2 {
        b.reset();
    }
    b2.wait().unwrap();
    b.wait().unwrap();
    bump(2);
}

// CPython: _TestBarrier.test_abort_and_reset (its barrier has the default
// timeout of the test class, as here)
#[test]
fn barrier_abort_and_reset_with_many_parties() {
    let _s = serial();
    let b = mp::Barrier::builder(PARTIES).timeout(LONG).build().unwrap();
    let b2 = mp::Barrier::builder(PARTIES).timeout(LONG).build().unwrap();
    let results = mp::Array::<u32>::new(3).unwrap();
    let children: Vec<_> = (1..PARTIES)
        .map(|_| {
            start(
                abort_and_reset_party,
                (b.clone(), b2.clone(), results.clone()),
            )
        })
        .collect();
    abort_and_reset_party((b.clone(), b2.clone(), results.clone()));
    for p in children {
        joined_ok(p);
    }
    assert_eq!(results.to_vec(), [0, PARTIES as u32 - 1, PARTIES as u32]);
    assert!(!b.is_broken());
}

// CPython: _TestBarrier.test_default_timeout
#[test]
fn barrier_default_timeout_breaks_it_for_everyone() {
    let _s = serial();
    // Three parties, two come: both give up after the default timeout.
    let b = mp::Barrier::builder(3).timeout(ms(200)).build().unwrap();
    // Before the start: a forkserver child can be waiting (its timeout
    // running) before `start` returns, and breaks the barrier 200 ms later.
    let t0 = Instant::now();
    let p = start(
        |b: mp::Barrier| assert!(matches!(b.wait(), Err(mp::Error::BrokenBarrier))),
        b.clone(),
    );
    assert!(matches!(b.wait(), Err(mp::Error::BrokenBarrier)));
    assert!(t0.elapsed() >= ms(200));
    joined_ok(p);
    assert!(b.is_broken());
    // An explicit timeout replaces the default: a zero default would break
    // this pass at once, the explicit LONG lets both parties meet.
    let b = mp::Barrier::builder(2)
        .timeout(Duration::ZERO)
        .build()
        .unwrap();
    let p = start(
        |b: mp::Barrier| assert!(b.wait_timeout(LONG).is_ok()),
        b.clone(),
    );
    assert!(b.wait_timeout(LONG).is_ok());
    joined_ok(p);
    assert!(!b.is_broken());
    assert!(matches!(b.wait(), Err(mp::Error::BrokenBarrier)));
}

// CPython: _TestBarrier.test_thousand
#[test]
fn barrier_thousand_passes_keep_order() {
    let _s = serial();
    const N: usize = 3;
    const ROUNDS: u32 = 1000;
    let b = mp::Barrier::new(N).unwrap();
    let lock = mp::Lock::new().unwrap();
    let (rx, tx) = mp::pipe(false).unwrap();
    let children: Vec<_> = (0..N)
        .map(|_| {
            start(
                |(b, tx, lock): (mp::Barrier, mp::Connection, mp::Lock)| {
                    for i in 0..ROUNDS {
                        b.wait_timeout(LONG).unwrap();
                        let _g = lock.lock();
                        tx.send(&i).unwrap();
                    }
                },
                (b.clone(), tx.try_clone().unwrap(), lock.clone()),
            )
        })
        .collect();
    drop(tx);
    within(LONG, "a thousand passes", move || {
        for i in 0..ROUNDS {
            for _ in 0..N {
                assert_eq!(rx.recv::<u32>().unwrap(), i);
            }
        }
    });
    for p in children {
        joined_ok(p);
    }
}

// ---------------------------------------------------------------------------
// Handles

/// Handles nested in a user's struct.
#[derive(Serialize, Deserialize)]
struct Shared {
    lock: mp::Lock,
    counter: mp::Value<u64>,
    done: mp::Event,
    sem: mp::BoundedSemaphore,
    cond: mp::Condition,
    barrier: mp::Barrier,
    rlock: mp::RLock,
}

#[test]
fn handles_nested_in_a_struct_reach_a_child() {
    let _s = serial();
    let shared = Shared {
        lock: mp::Lock::new().unwrap(),
        counter: mp::Value::new(0).unwrap(),
        done: mp::Event::new().unwrap(),
        sem: mp::BoundedSemaphore::new(1).unwrap(),
        cond: mp::Condition::new().unwrap(),
        barrier: mp::Barrier::new(2).unwrap(),
        rlock: mp::RLock::new().unwrap(),
    };
    let copy = Shared {
        lock: shared.lock.clone(),
        counter: shared.counter.clone(),
        done: shared.done.clone(),
        sem: shared.sem.clone(),
        cond: shared.cond.clone(),
        barrier: shared.barrier.clone(),
        rlock: shared.rlock.clone(),
    };
    let p = start(
        |s: Shared| {
            {
                let _g = s.lock.lock();
                *s.counter.lock() += 41;
            }
            s.sem.acquire();
            s.rlock.acquire();
            s.barrier.wait_timeout(LONG).unwrap();
            s.done.set();
        },
        copy,
    );
    shared.barrier.wait_timeout(LONG).unwrap();
    assert!(shared.done.wait_timeout(LONG));
    joined_ok(p);
    assert_eq!(shared.counter.get(), 41);
    assert_eq!(shared.sem.get_value(), 0);
    // The child exited holding the RLock: taken over, reported.
    assert!(shared.rlock.acquire_checked().owner_died());
}

#[test]
fn handles_travel_over_a_connection() {
    let _s = serial();
    let (here, there) = mp::pipe(true).unwrap();
    let p = start(
        |conn: mp::Connection| {
            let (lock, e): (mp::Lock, mp::Event) = conn.recv().unwrap();
            lock.release().unwrap();
            e.set();
        },
        there,
    );
    let lock = mp::Lock::new().unwrap();
    let e = mp::Event::new().unwrap();
    lock.acquire();
    here.send(&(lock.clone(), e.clone())).unwrap();
    assert!(e.wait_timeout(LONG));
    assert!(!lock.is_locked());
    joined_ok(p);
}

// Beyond CPython: named semaphores leak into /dev/shm when processes are
// killed; ours are anonymous memfds.
#[test]
fn nothing_leaks_when_children_are_killed() {
    let _s = serial();
    let leaks = LeakCheck::new();
    {
        let l = mp::Lock::new().unwrap();
        let r = mp::RLock::new().unwrap();
        let s = mp::Semaphore::new(0).unwrap();
        let held = mp::Event::new().unwrap();
        let never = mp::Event::new().unwrap();
        let c = mp::Condition::new().unwrap();
        let b = mp::Barrier::new(3).unwrap();
        let v = mp::Value::new(0i64).unwrap();
        let a = mp::Array::<f64>::new(1 << 16).unwrap();
        let children: Vec<_> = (0..2)
            .map(|_| {
                start(
                    |(l, r, s, held, never, c, b, v, a): (
                        mp::Lock,
                        mp::RLock,
                        mp::Semaphore,
                        mp::Event,
                        mp::Event,
                        mp::Condition,
                        mp::Barrier,
                        mp::Value<i64>,
                        mp::Array<f64>,
                    )| {
                        *v.lock() += 1;
                        a.set(0, 1.0);
                        let _c = c.lock();
                        drop(_c);
                        if l.try_acquire() {
                            r.acquire();
                        }
                        s.release().unwrap();
                        held.set();
                        let _ = b.wait();
                        never.wait();
                    },
                    (
                        l.clone(),
                        r.clone(),
                        s.clone(),
                        held.clone(),
                        never.clone(),
                        c.clone(),
                        b.clone(),
                        v.clone(),
                        a.clone(),
                    ),
                )
            })
            .collect();
        assert!(s.acquire_timeout(LONG));
        assert!(s.acquire_timeout(LONG));
        for mut p in children {
            p.kill().unwrap();
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(-9));
        }
        assert_eq!(v.get(), 2);
        assert!(l.acquire_checked().owner_died());
    }
    leaks.check();
}
