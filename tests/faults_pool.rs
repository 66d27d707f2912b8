//! Fault injection on pool workers: a worker dies of SIGKILL, SIGSEGV, abort
//! or `process::exit` in its initializer, in the middle of a task, or in the
//! middle of sending a big result, at seeded random points, over many rounds.
//!
//! After every round: every submitted task is answered (the victim's task with
//! its result or `Error::WorkerLost`, every other task with its correct
//! result); nothing hangs; the pool replaces the worker and a follow-up `map`
//! works; after `close()`/`join()` no child, zombie, fd or /dev/shm entry is
//! left (LeakCheck).
//!
//! CPython: concurrent.futures test_deadlock.py (a crash while running the
//! function, `test_crash_big_data`: a worker dying while it sends a large
//! result; a crash in the initializer) and cpython#66587 (Pool hangs forever
//! when a worker dies). CPython's `Pool` hangs in all of these.
//!
//! Seed: `MP_FAULT_SEED`; rounds: `MP_FAULT_ROUNDS`, or 10x with
//! `--features slow-tests`. Run with `--nocapture` for the summary lines.

multiprocess::test_support!();
mod common;
mod faults_common;

use common::{LONG, LeakCheck, SHORT, within};
use faults_common::{Fault, Plan, Rng, RoundGuard, Tally, die_now, payload, payload_ok, pid_gone};
use multiprocess as mp;
use serde::{Deserialize, Serialize};

/// Where in a worker's life the fault lands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
enum Phase {
    MidTask,
    MidResult,
}

/// One task: its id, the size of its result, and for the victim task the plan
/// and the phase; `pid` receives the pid of the worker running the victim task.
type TaskArg = (u32, u32, Option<(Plan, Phase)>, mp::Value<u32>);

fn task((id, len, victim, pid): TaskArg) -> serde_bytes::ByteBuf {
    if let Some((plan, phase)) = victim {
        plan.arm();
        pid.set(std::process::id());
        if phase == Phase::MidTask {
            // Work until the fault comes (inside: the timer; outside: the parent).
            faults_common::park_forever();
        }
    }
    serde_bytes::ByteBuf::from(payload(id, len as usize))
}

// Workers killed mid-task or while sending a big result: the task they ran
// fails with WorkerLost (or, if the result got out, succeeds); every other
// task succeeds; the pool replaces the worker.
#[test]
fn pool_worker_faults() {
    let _s = common::serial();
    let mut rng = Rng::for_test("pool_worker_faults");
    let mut tally = Tally::new("pool worker");
    for round in 0..faults_common::rounds(60) {
        let fault = Fault::ALL[round % 4];
        let phase = if rng.chance(1, 2) {
            Phase::MidTask
        } else {
            Phase::MidResult
        };
        let procs = rng.range(2, 4) as usize;
        let ntasks = rng.range(4, 12) as u32;
        let victim_id = rng.below(ntasks as u64) as u32;
        let max_delay = if phase == Phase::MidTask {
            20_000
        } else {
            8_000
        };
        let plan = Plan::new(&mut rng, fault, max_delay);
        let lens: Vec<u32> = (0..ntasks)
            .map(|i| {
                if i == victim_id && phase == Phase::MidResult {
                    rng.range(4 << 20, 16 << 20) as u32
                } else {
                    rng.below(100 << 10) as u32
                }
            })
            .collect();
        let guard = RoundGuard::new("pool worker", round);
        let lost = within(LONG, "pool worker round", move || {
            let leaks = LeakCheck::new();
            let pool = mp::Pool::new(procs).unwrap();
            let pid = mp::Value::new(0u32).unwrap();
            let results: Vec<_> = (0..ntasks)
                .map(|id| {
                    let victim = (id == victim_id).then_some((plan, phase));
                    pool.apply_async(task, (id, lens[id as usize], victim, pid.clone()))
                        .unwrap()
                })
                .collect();
            if !plan.inside {
                faults_common::wait_until(SHORT, "victim task started", || pid.get() != 0);
                // Fault timing, not synchronisation.
                std::thread::sleep(plan.delay());
                let victim = pid.get();
                faults_common::signal_until_dead(victim, fault, || {
                    faults_common::wait_until_or(std::time::Duration::from_millis(100), || {
                        pid_gone(victim)
                    })
                });
            }
            let mut lost = false;
            for (id, r) in results.into_iter().enumerate() {
                let id = id as u32;
                match r.get_timeout(LONG) {
                    Ok(bytes) => {
                        assert_eq!(bytes.len(), lens[id as usize] as usize, "task {id}");
                        assert!(payload_ok(id, &bytes), "task {id}: corrupt result");
                        assert!(
                            id != victim_id || phase == Phase::MidResult,
                            "the victim's mid-task fault went unnoticed"
                        );
                    }
                    Err(mp::Error::WorkerLost { exitcode, .. }) if id == victim_id => {
                        assert_eq!(exitcode, Some(fault.exitcode()), "victim's exit code");
                        lost = true;
                    }
                    Err(e) => panic!("task {id} (victim {victim_id}): {e}"),
                }
            }
            // Follow-up: the pool serves on with a full set of workers.
            assert_eq!(
                pool.map(|x: u32| x * 3, 0..20u32).unwrap(),
                (0..20).map(|x| x * 3).collect::<Vec<_>>()
            );
            faults_common::wait_until(SHORT, "a full set of workers", || {
                pool.worker_pids().len() == procs
            });
            pool.close();
            pool.join().unwrap();
            drop((pool, pid));
            leaks.check();
            lost
        });
        drop(guard);
        let detail = match phase {
            Phase::MidTask => "mid-task",
            Phase::MidResult => "mid-result (4-16 MiB)",
        };
        tally.passed(fault, detail);
        if lost {
            tally.note("the victim's task failed with WorkerLost");
        } else {
            tally.note("the victim's result got out before it died");
        }
    }
}

/// The initializer: the first worker to run it dies of the fault.
fn init_then_maybe_die((count, fault): (mp::Value<u32>, Fault)) {
    let k = {
        let mut g = count.lock();
        *g += 1;
        *g
    };
    if k == 1 {
        die_now(fault);
    }
}

// A worker dies in its initializer (before it ever takes a task): a
// replacement starts and every task is answered with its result.
#[test]
fn pool_initializer_faults() {
    let _s = common::serial();
    let mut rng = Rng::for_test("pool_initializer_faults");
    let mut tally = Tally::new("pool initializer");
    for round in 0..faults_common::rounds(16) {
        let fault = Fault::ALL[round % 4];
        let procs = rng.range(1, 4) as usize;
        let guard = RoundGuard::new("pool initializer", round);
        within(LONG, "pool initializer round", move || {
            let leaks = LeakCheck::new();
            let count = mp::Value::new(0u32).unwrap();
            let pool = mp::Pool::builder()
                .processes(procs)
                .initializer(init_then_maybe_die, (count.clone(), fault))
                .build()
                .unwrap();
            assert_eq!(
                pool.map(|x: u64| x * x, 0..30u64).unwrap(),
                (0..30).map(|x| x * x).collect::<Vec<_>>()
            );
            faults_common::wait_until(SHORT, "the dead worker replaced", || {
                count.get() > procs as u32 && pool.worker_pids().len() == procs
            });
            pool.close();
            pool.join().unwrap();
            drop((pool, count));
            leaks.check();
        });
        drop(guard);
        tally.passed(fault, "in the initializer");
    }
}

// A worker killed from outside right after the pool is built, while it may
// still be starting up: a replacement starts and every task is answered.
#[test]
fn pool_worker_killed_at_start_up() {
    let _s = common::serial();
    let mut rng = Rng::for_test("pool_worker_killed_at_start_up");
    let mut tally = Tally::new("pool worker");
    // Signals only: nothing of ours runs in a worker before its start-up.
    let faults = [Fault::Kill, Fault::Segv, Fault::Abort];
    for round in 0..faults_common::rounds(12) {
        let fault = faults[round % 3];
        let procs = rng.range(1, 4) as usize;
        let delay = rng.below(3_000);
        let guard = RoundGuard::new("pool worker at start-up", round);
        within(LONG, "pool worker at start-up round", move || {
            let leaks = LeakCheck::new();
            let pool = mp::Pool::new(procs).unwrap();
            let results = pool.map_async(|x: u64| x + 1, 0..40u64).unwrap();
            // Fault timing, not synchronisation.
            std::thread::sleep(std::time::Duration::from_micros(delay));
            let victim = pool.worker_pids()[0];
            faults_common::signal_until_dead(victim, fault, || {
                faults_common::wait_until_or(std::time::Duration::from_millis(100), || {
                    pid_gone(victim)
                })
            });
            // A chunk the victim was running fails with WorkerLost; nothing
            // else may fail, and nothing hangs.
            match results.get_timeout(LONG) {
                Ok(v) => assert_eq!(v, (1..=40).collect::<Vec<_>>()),
                Err(mp::Error::WorkerLost { exitcode, .. }) => {
                    assert_eq!(exitcode, Some(fault.exitcode()))
                }
                Err(e) => panic!("map with a worker killed at start-up: {e}"),
            }
            // Wait for the replacement first: a task submitted in the moment
            // between the death and the pool noticing it is failed with
            // WorkerLost (see the ignored test below).
            faults_common::wait_until(SHORT, "the victim replaced", || {
                let pids = pool.worker_pids();
                pids.len() == procs && !pids.contains(&victim)
            });
            assert_eq!(
                pool.map(|x: u64| x * 2, 0..20u64).unwrap(),
                (0..20).map(|x| x * 2).collect::<Vec<_>>()
            );
            pool.close();
            pool.join().unwrap();
            drop(pool);
            leaks.check();
        });
        drop(guard);
        tally.passed(fault, "at start-up, from outside");
    }
}

// A task sent to a worker while the worker is dying (killed, its main thread
// already a zombie, its other threads still exiting, so its socket is still
// open and the send succeeds) must go to the replacement worker: the worker
// never claimed it at its start gate, so it is not the one that was running.
// The window is a few microseconds in real use; this test widens it by
// submitting as soon as /proc shows the worker as a zombie. (Found by
// pool_worker_killed_at_start_up; before the gate, the first task of an idle
// worker was counted as running and failed with WorkerLost.)
#[test]
fn a_task_submitted_just_after_a_worker_died_is_not_lost() {
    let _s = common::serial();
    within(LONG, "task after a worker died", || {
        let leaks = LeakCheck::new();
        for round in 0..50 {
            let pool = mp::Pool::new(1).unwrap();
            assert_eq!(pool.apply(|x: u32| x + 1, 1).unwrap(), 2);
            let victim = pool.worker_pids()[0];
            faults_common::signal_until_dead(victim, Fault::Kill, || {
                faults_common::wait_until_or(std::time::Duration::from_millis(100), || {
                    pid_gone(victim)
                })
            });
            // The worker is dead; this task has not been sent anywhere yet.
            let r = pool.apply(|x: u32| x + 1, 2);
            assert!(
                matches!(r, Ok(3)),
                "round {round}: a task submitted after the worker {victim} died: {r:?}"
            );
            pool.close();
            pool.join().unwrap();
        }
        leaks.check();
    });
}
