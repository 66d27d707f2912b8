//! Queue and Pipe workloads (issue 5), the same work as the CPython functions
//! of the same names.

use anyhow::{Result, ensure};
use multiprocess as mp;
use std::time::Instant;

use crate::{Better, Cfg, Side, Workload};

/// One message of `pipe_throughput_mb_per_s`.
const MIB: usize = 1 << 20;

/// This area's rows.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "queue_pingpong_us",
        better: Better::Lower,
        side: Side::Both,
        count: 10_000,
        quick_count: 1_000,
        baseline: None,
        what: "small int bounced over two Queues, per round trip",
        run: queue_pingpong_us,
    },
    Workload {
        name: "queue_throughput_msgs_per_s",
        better: Better::Higher,
        side: Side::Both,
        count: 200_000,
        quick_count: 20_000,
        baseline: None,
        what: "one producer process puts n small ints, the parent gets them",
        run: queue_throughput_msgs_per_s,
    },
    Workload {
        name: "pipe_pingpong_us",
        better: Better::Lower,
        side: Side::Both,
        count: 20_000,
        quick_count: 2_000,
        baseline: Some("baseline_pipe_pingpong_us"),
        what: "small int bounced over a duplex Pipe (send/recv), per round trip",
        run: pipe_pingpong_us,
    },
    Workload {
        name: "pipe_throughput_mb_per_s",
        better: Better::Higher,
        side: Side::Both,
        count: 256,
        quick_count: 25,
        baseline: Some("baseline_pipe_throughput_mb_per_s"),
        what: "n MiB as 1 MiB send_bytes/recv_bytes, child to parent",
        run: pipe_throughput_mb_per_s,
    },
];

/// Queues `inq` and `outq` (`Queue<Option<i64>>`/`Queue<i64>`); a child loops
/// `inq.get()`: `Some(x)` → `outq.put(x + 1)`, `None` → return. The parent does
/// 100 untimed rounds, then times `cfg.n` rounds of `inq.put(Some(i))`,
/// `outq.get()` (check it is `i + 1`); then puts `None` and joins (exit 0).
/// Return µs per round trip.
///
/// CPython: `queue_pingpong_us`.
pub fn queue_pingpong_us(cfg: &Cfg) -> Result<Option<f64>> {
    const WARMUP: i64 = 100;
    let inq = mp::Queue::<Option<i64>>::new()?;
    let outq = mp::Queue::<i64>::new()?;
    let mut child = mp::Process::new(
        |(inq, outq): (mp::Queue<Option<i64>>, mp::Queue<i64>)| {
            while let Some(x) = inq.get().expect("get") {
                outq.put(x + 1).expect("put");
            }
        },
        (inq.clone(), outq.clone()),
    );
    child.start()?;
    let mut t0 = Instant::now();
    for i in 0..WARMUP + cfg.n as i64 {
        if i == WARMUP {
            t0 = Instant::now();
        }
        inq.put(Some(i))?;
        let got = outq.get()?;
        ensure!(
            got == i + 1,
            "queue_pingpong: got {got}, expected {}",
            i + 1
        );
    }
    let secs = t0.elapsed().as_secs_f64();
    inq.put(None)?;
    child.join()?;
    ensure!(
        child.exitcode() == Some(0),
        "queue_pingpong: exit code {:?}",
        child.exitcode()
    );
    Ok(Some(secs * 1e6 / cfg.n as f64))
}

/// Queues `q: Queue<i64>` and `go`; a child puts `-1` (ready) on `q`, waits
/// for one item on `go`, then puts `0..n` on `q`. The parent gets the `-1`,
/// starts the clock, puts on `go`, gets `cfg.n` items summing them, stops the
/// clock, joins (exit 0) and checks the sum is `(n-1)n/2`. Return
/// `n / seconds`.
///
/// CPython: `queue_throughput_msgs_per_s`.
pub fn queue_throughput_msgs_per_s(cfg: &Cfg) -> Result<Option<f64>> {
    let q = mp::Queue::<i64>::new()?;
    let go = mp::Queue::<u8>::new()?;
    let n = cfg.n as i64;
    let mut child = mp::Process::new(
        |(q, go, n): (mp::Queue<i64>, mp::Queue<u8>, i64)| {
            q.put(-1).expect("ready");
            go.get().expect("go");
            for i in 0..n {
                q.put(i).expect("put");
            }
        },
        (q.clone(), go.clone(), n),
    );
    child.start()?;
    ensure!(q.get()? == -1, "queue_throughput: no ready");
    let t0 = Instant::now();
    go.put(1)?;
    let mut sum = 0i64;
    for _ in 0..n {
        sum += q.get()?;
    }
    let secs = t0.elapsed().as_secs_f64();
    child.join()?;
    ensure!(
        child.exitcode() == Some(0),
        "queue_throughput: exit code {:?}",
        child.exitcode()
    );
    ensure!(
        sum == (n - 1) * n / 2,
        "queue_throughput: sum {sum}, expected {}",
        (n - 1) * n / 2
    );
    Ok(Some(n as f64 / secs))
}

/// The child of `pipe_pingpong_us`: answers `Some(x)` with `x + 1` until `None`.
fn pipe_echo(conn: mp::Connection) {
    while let Some(x) = conn.recv::<Option<u64>>().expect("pipe_echo: recv") {
        conn.send(&(x + 1)).expect("pipe_echo: send");
    }
}

/// A duplex `pipe(true)`; a child echoes `x + 1` for every `Some(x)` until
/// `None`. 100 untimed rounds, then `cfg.n` timed rounds of `send(&Some(i))`,
/// `recv::<u64>()` (checked to be `i + 1`). Return µs per round trip.
///
/// CPython: `a.send(i); a.recv()` with `pipe_echo` in vs_python.py.
pub fn pipe_pingpong_us(cfg: &Cfg) -> Result<Option<f64>> {
    let (a, b) = mp::pipe(true)?;
    let mut p = mp::Process::new(pipe_echo, b);
    p.start()?;
    let round = |i: u64| -> Result<()> {
        a.send(&Some(i))?;
        let r: u64 = a.recv()?;
        ensure!(r == i + 1, "pipe echo {r} != {}", i + 1);
        Ok(())
    };
    for i in 0..100 {
        round(i)?;
    }
    let t0 = Instant::now();
    for i in 0..cfg.n {
        round(i)?;
    }
    let dt = t0.elapsed();
    a.send(&None::<u64>)?;
    p.join()?;
    ensure!(
        p.exitcode() == Some(0),
        "pipe echo exit code {:?}",
        p.exitcode()
    );
    Ok(Some(dt.as_secs_f64() * 1e6 / cfg.n as f64))
}

/// The child of `pipe_throughput_mb_per_s`: says ready, waits for go, sends
/// `n` 1 MiB messages whose first 8 bytes are their index.
fn pipe_sender((conn, n): (mp::Connection, u64)) {
    let mut buf = vec![0u8; MIB];
    conn.send(&String::from("ready"))
        .expect("pipe_sender: send ready");
    assert_eq!(conn.recv::<String>().expect("pipe_sender: recv go"), "go");
    for i in 0..n {
        buf[..8].copy_from_slice(&i.to_le_bytes());
        conn.send_bytes(&buf).expect("pipe_sender: send_bytes");
    }
}

/// A duplex `pipe(true)`; a child sends "ready", waits for "go", then sends
/// `cfg.n` messages of 1 MiB with `send_bytes`, each starting with its index.
/// The parent receives "ready", starts the clock, sends "go", `recv_bytes()`
/// `n` times checking each length and index, stops the clock, joins (exit 0).
/// Return MiB per second.
///
/// CPython: `pipe_throughput_mb_per_s` (`send_bytes`/`recv_bytes`).
pub fn pipe_throughput_mb_per_s(cfg: &Cfg) -> Result<Option<f64>> {
    let (a, b) = mp::pipe(true)?;
    let mut p = mp::Process::new(pipe_sender, (b, cfg.n));
    p.start()?;
    ensure!(a.recv::<String>()? == "ready", "pipe sender not ready");
    let t0 = Instant::now();
    a.send(&String::from("go"))?;
    let mut total = 0usize;
    for i in 0..cfg.n {
        let m = a.recv_bytes()?;
        ensure!(
            m.len() == MIB && m[..8] == i.to_le_bytes(),
            "pipe_throughput: message {i} wrong ({} bytes)",
            m.len()
        );
        total += m.len();
    }
    let dt = t0.elapsed();
    p.join()?;
    ensure!(
        p.exitcode() == Some(0),
        "pipe sender exit code {:?}",
        p.exitcode()
    );
    ensure!(
        total == cfg.n as usize * MIB,
        "pipe_throughput: byte count {total}"
    );
    Ok(Some(total as f64 / MIB as f64 / dt.as_secs_f64()))
}
