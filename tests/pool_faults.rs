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

/// The sockets among this process's open fds (`/proc/self/fd` links
/// `socket:[inode]`).
fn socket_fds() -> Vec<i32> {
    let mut fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            target.to_str()?.starts_with("socket:").then_some(fd)
        })
        .collect();
    fds.sort_unstable();
    fds
}

/// Run in a pool worker: writes a frame header declaring 1 TiB (CPython's
/// long form: `-1`, then 8 bytes) on the worker's own socket to the parent,
/// as a stray write or a corrupted worker would (having told the test its
/// pid first), and waits to be killed.
fn lie_about_length(tell: mp::Connection) -> u32 {
    // Besides `tell`, the worker's only socket is the one it inherited from
    // the parent at bootstrap (every other fd is close-on-exec).
    let tell_fd = tell.fileno().unwrap();
    let socks: Vec<i32> = socket_fds().into_iter().filter(|&s| s != tell_fd).collect();
    assert_eq!(socks.len(), 1, "the worker's sockets: {socks:?}");
    // Before the lie: the parent kills this process as soon as it reads it.
    tell.send(&std::process::id()).unwrap();
    let mut header = (-1i32).to_be_bytes().to_vec();
    header.extend_from_slice(&(1u64 << 40).to_be_bytes());
    // SAFETY: `socks[0]` is an open fd of this process (listed just above)
    // and `header` is a live buffer of `header.len()` bytes.
    let n = unsafe {
        libc::send(
            socks[0],
            header.as_ptr().cast(),
            header.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    assert_eq!(n, header.len() as isize);
    loop {
        std::thread::park();
    }
}

/// The parent's resident set, in bytes (`VmRSS`).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[test]
fn a_header_declaring_1_tib_costs_the_parent_nothing() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "1 TiB header", || {
        let pool = mp::Pool::new(2).unwrap();
        // Warm up: both workers started, the handler's buffers allocated.
        assert_eq!(pool.map(|x: u64| x * 2, 0..8).unwrap().len(), 8);
        let before = rss_bytes();
        let (rx, tx) = mp::pipe(false).unwrap();
        let liar = pool.apply_async(lie_about_length, tx).unwrap();
        let pid: u32 = match rx.recv() {
            Ok(pid) => pid,
            Err(e) => panic!("the task did not report ({e:?}): {:?}", liar.get()),
        };
        // The parent refuses the header (`MessageTooLarge`: above the 4 GiB
        // limit) before allocating, kills the worker as a protocol breaker,
        // and the task it was running is lost with it.
        match liar.get() {
            Err(mp::Error::WorkerLost { pid: p, exitcode }) => {
                assert_eq!(p, pid);
                assert_eq!(exitcode, Some(-libc::SIGKILL));
            }
            other => panic!("expected WorkerLost, got {other:?}"),
        }
        let after = rss_bytes();
        eprintln!(
            "parent RSS: {} KiB before, {} KiB after the 1 TiB header",
            before / 1024,
            after / 1024
        );
        assert!(
            after <= before + (4 << 20),
            "the parent grew from {before} to {after} bytes"
        );
        // The pool lives on, with a replacement worker.
        assert_eq!(
            pool.map(|x: u64| x + 1, 0..10).unwrap(),
            (1..11).collect::<Vec<_>>()
        );
        let pids = pool.worker_pids();
        assert_eq!(pids.len(), 2);
        assert!(!pids.contains(&pid));
        pool.close();
        pool.join().unwrap();
    });
}

// A task that scribbles on its worker's shared-memory ring (the tasks and
// results the pool moves through shared memory): a clear error for that task,
// a replaced worker, the pool goes on. Ours; CPython's pool has no such ring.

/// Size of a worker's ring region (src/pool/ring.rs: `LEN`), by which the
/// task finds it among its process's memfds.
const RING_LEN: u64 = 4096 + 2 * 128 * 1024;
/// Byte offsets of the ring's control words (src/pool/ring.rs: `ctl`).
const T_TAIL: usize = 64;
const R_HEAD: usize = 256;
const WAITERS: usize = 576;
/// Where the result ring's data starts (`DATA + AREA`).
const R_AREA: usize = 4096 + 128 * 1024;

/// How a task scribbles on its ring.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
enum Scribble {
    /// The result ring's published write index jumps 1 GiB ahead (a
    /// wrapped index).
    WrappedResultIndex,
    /// A result record declaring 2 GiB is published where the next answer
    /// goes (a lying length).
    LyingResultLength,
    /// The task ring's read index, which the worker publishes, is moved.
    MovedTaskIndex,
    /// The word saying parent threads wait in the ring for their own results
    /// is raised, so the worker stops waking the pool's handler.
    RaisedWaiters,
}

/// Maps this process's ring (the one memfd of its size) for writing.
fn map_own_ring() -> *mut u8 {
    let rings: Vec<std::path::PathBuf> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            let is_memfd = target.to_str()?.starts_with("/memfd:");
            let len = std::fs::metadata(e.path()).ok()?.len();
            (is_memfd && len == RING_LEN).then(|| e.path())
        })
        .collect();
    assert_eq!(rings.len(), 1, "the worker's rings: {rings:?}");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&rings[0])
        .unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: a shared mapping of an open memfd of RING_LEN bytes; the
    // pointer is only used through atomics and volatile writes below, inside
    // the mapping, which is never unmapped (the worker is replaced).
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            RING_LEN as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    p.cast()
}

/// Run in a pool worker: scribbles on the worker's ring as asked, then
/// returns normally (its answer must not be believed).
fn scribble(how: Scribble) -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    let base = map_own_ring();
    // SAFETY: the offsets are 4-aligned and inside the RING_LEN mapping.
    let word = |off: usize| unsafe { AtomicU32::from_ptr(base.add(off).cast()) };
    match how {
        Scribble::WrappedResultIndex => {
            word(R_HEAD).fetch_add(0x4000_0000, Ordering::SeqCst);
        }
        Scribble::LyingResultLength => {
            let head = word(R_HEAD).load(Ordering::SeqCst);
            let pos = R_AREA + (head as usize % (128 * 1024));
            word(pos).store(0x8000_0000, Ordering::SeqCst);
            word(pos + 4).store(1, Ordering::SeqCst);
            word(R_HEAD).store(head.wrapping_add(8), Ordering::SeqCst);
        }
        Scribble::MovedTaskIndex => {
            word(T_TAIL).fetch_add(4, Ordering::SeqCst);
        }
        Scribble::RaisedWaiters => {
            word(WAITERS).store(1000, Ordering::SeqCst);
        }
    }
    std::process::id()
}

fn a_scribbled_ring_fails_its_task_and_replaces_the_worker(how: Scribble) {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "scribbled ring", move || {
        let pool = mp::Pool::new(2).unwrap();
        assert_eq!(pool.map(|x: u64| x * 2, 0..8).unwrap().len(), 8);
        let before = pool.worker_pids();
        match pool.apply(scribble, how) {
            Err(mp::Error::Decode(m)) => {
                assert!(m.contains("corrupted its shared-memory ring"), "{m}");
            }
            other => panic!("expected the ring's Decode error, got {other:?}"),
        }
        // The pool is whole again (the worker was replaced before the
        // caller learnt of the loss) and serves work.
        let after = pool.worker_pids();
        assert_eq!(after.len(), 2);
        assert_eq!(
            before.iter().filter(|p| after.contains(p)).count(),
            1,
            "before {before:?}, after {after:?}"
        );
        let out = pool.map(|x: u64| x + 1, 0..100).unwrap();
        assert_eq!(out, (1..101).collect::<Vec<u64>>());
        pool.close();
        pool.join().unwrap();
    });
}

#[test]
fn a_wrapped_result_index_fails_the_task() {
    a_scribbled_ring_fails_its_task_and_replaces_the_worker(Scribble::WrappedResultIndex);
}

#[test]
fn a_lying_result_length_fails_the_task() {
    a_scribbled_ring_fails_its_task_and_replaces_the_worker(Scribble::LyingResultLength);
}

#[test]
fn a_moved_task_index_fails_the_task() {
    a_scribbled_ring_fails_its_task_and_replaces_the_worker(Scribble::MovedTaskIndex);
}

// The waiters word tells the worker whom to wake; the parent keeps its own
// count. A task that raises the shared word only silences the worker's wakes
// of the pool's handler, which still looks at a busy worker's ring now and
// then: every answer comes, none hangs (a review found the hang).
#[test]
fn a_raised_waiters_word_delays_answers_but_loses_none() {
    let _s = common::serial();
    let _leak = LeakCheck::new();
    within(LONG, "raised waiters word", || {
        let pool = mp::Pool::new(1).unwrap();
        let pid = pool.worker_pids()[0];
        // Through the handler (map), not the direct path.
        let got = pool.map(scribble, [Scribble::RaisedWaiters]).unwrap();
        assert_eq!(got, vec![pid]);
        let out = pool.map(|x: u64| x * 3, 0..20).unwrap();
        assert_eq!(out, (0..20).map(|x| x * 3).collect::<Vec<u64>>());
        let r = pool.apply_async(|x: u64| x + 1, 41).unwrap();
        assert_eq!(r.get().unwrap(), 42);
        pool.close();
        pool.join().unwrap();
    });
}
