//! Processes versus threads, side by side: the same API (`multiprocess` and
//! `multiprocess::dummy`), run both ways, one difference per subcommand.
//!
//! ```text
//! cargo run --example processes_vs_threads            # all sections, and the PNG
//! cargo run --example processes_vs_threads -- global  # one section
//! ```
//!
//! Sections: `global`, `crash`, `memory`, `cost`, `speedup`, `send`. The
//! guide `docs/processes-vs-threads.md` pastes this program's output; `cost`
//! also draws `docs/processes-vs-threads.png`.

use std::io::{Read, Seek, Write};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Result, anyhow};
use multiprocess as mp;
use multiprocess::dummy as th;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// A section of the guide: its subcommand and the function that runs it.
type Section = (&'static str, fn() -> Result<()>);

const SECTIONS: &[Section] = &[
    ("global", global),
    ("crash", crash),
    ("memory", memory),
    ("cost", cost),
    ("speedup", speedup),
    ("send", send),
];

fn main() -> Result<()> {
    mp::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => {
            for (name, run) in SECTIONS {
                println!("=== {name} ===");
                run()?;
                println!();
            }
            Ok(())
        }
        // The child the `crash` section starts, to show a thread taking its
        // whole program down without taking this one with it.
        Some("crash-thread") => crash_thread(args.get(1).map_or("abort", String::as_str)),
        Some(name) => match SECTIONS.iter().find(|(n, _)| *n == name) {
            Some((_, run)) => run(),
            None => Err(anyhow!(
                "unknown section {name:?}; one of: {}",
                SECTIONS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        },
    }
}

// ---------------------------------------------------------------------------
// A global changed by a worker

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn bump(_: ()) {
    let now = COUNTER.fetch_add(1, Ordering::SeqCst) + 1;
    println!("  worker: COUNTER is now {now}");
}

fn global() -> Result<()> {
    COUNTER.store(0, Ordering::SeqCst);
    let mut p = mp::Process::new(bump, ());
    p.start()?;
    p.join()?;
    println!(
        "process: the parent sees COUNTER = {}",
        COUNTER.load(Ordering::SeqCst)
    );

    let mut t = th::Process::new(bump, ());
    t.start()?;
    t.join()?;
    println!(
        "thread:  the parent sees COUNTER = {}",
        COUNTER.load(Ordering::SeqCst)
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// A worker that panics, aborts or segfaults

fn crash() -> Result<()> {
    let panics = |_: ()| -> u32 { panic!("bad input") };
    let aborts = |_: ()| -> u32 { std::process::abort() };
    let segfaults = |_: ()| -> u32 { segfault() };

    let pool = mp::Pool::new(1)?;
    println!("process pool:");
    for (what, r) in [
        ("panics", pool.apply(panics, ())),
        ("aborts", pool.apply(aborts, ())),
        ("segfaults", pool.apply(segfaults, ())),
    ] {
        println!("  a task that {what:<9} -> {}", short(&r));
    }
    println!(
        "  and the pool still works: 6 * 7 = {}",
        pool.apply(|x: u32| x * 7, 6)?
    );

    let pool = th::Pool::new(1)?;
    println!("thread pool:");
    println!(
        "  a task that panics    -> {}",
        short(&pool.apply(panics, ()))
    );
    // The panic unwound through a lock the task held: that lock is poisoned.
    let shared = Arc::new(Mutex::new(0u32));
    let s = shared.clone();
    let r = pool.apply(
        move |_: ()| {
            let mut g = s.lock().unwrap();
            *g += 1;
            panic!("panicked while holding the lock");
        },
        (),
    );
    println!("  a task that panics holding a Mutex -> {}", short(&r));
    println!("  the Mutex is now poisoned: {}", shared.lock().is_err());
    for what in ["abort", "segfault"] {
        let exe = std::env::current_exe()?;
        let out = Command::new(exe).args(["crash-thread", what]).output()?;
        let last = String::from_utf8_lossy(&out.stdout);
        println!(
            "  a task that {what}s -> the whole program dies: {} (its last words: {:?})",
            out.status,
            last.lines().last().unwrap_or("")
        );
    }
    Ok(())
}

fn short<T: std::fmt::Debug>(r: &mp::Result<T>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(mp::Error::Remote { message, .. }) => format!("Err(Remote {{ message: {message:?} }})"),
        Err(e @ mp::Error::WorkerLost { .. }) => format!("Err(WorkerLost: {e})"),
        Err(e) => format!("Err({e})"),
    }
}

/// A SIGSEGV, as a bad pointer would raise, without `unsafe`. Rust's runtime
/// handles the first one (its stack-overflow check), finds no overflow and
/// restores the default action; the second one ends the process, as a real
/// fault does when it is retried.
fn segfault() -> ! {
    loop {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSEGV);
    }
}

/// In a child process: a thread pool whose task aborts or segfaults.
fn crash_thread(what: &str) -> Result<()> {
    let pool = th::Pool::new(1)?;
    println!("before the task");
    std::io::stdout().flush()?;
    let what = what.to_string();
    let r = pool.apply(
        move |_: ()| {
            if what == "abort" {
                std::process::abort();
            }
            segfault();
        },
        (),
    );
    println!("after the task: {r:?}"); // never printed
    Ok(())
}

// ---------------------------------------------------------------------------
// Memory: shared by default, or by choice

fn double_all(v: &mut [u32]) {
    v.iter_mut().for_each(|x| *x *= 2);
}

fn memory() -> Result<()> {
    // Processes: the argument is a copy; sharing is a choice (Array, Value, Manager).
    let data = vec![1u32, 2, 3];
    let mut p = mp::Process::new(|mut v: Vec<u32>| double_all(&mut v), data.clone());
    p.start()?;
    p.join()?;
    println!("process, plain Vec:   parent still has {data:?}");
    let shared = mp::Array::from_slice(&data)?;
    let mut p = mp::Process::new(
        |a: mp::Array<u32>| double_all(&mut a.lock()),
        shared.clone(),
    );
    p.start()?;
    p.join()?;
    println!("process, mp::Array:   parent sees {:?}", shared.to_vec());

    // Threads: one address space; anything reachable is shared.
    let data = Arc::new(Mutex::new(vec![1u32, 2, 3]));
    let d = data.clone();
    let mut t = th::Process::new(move |_: ()| double_all(&mut d.lock().unwrap()), ());
    t.start()?;
    t.join()?;
    println!(
        "thread, Arc<Mutex<Vec>>: parent sees {:?}",
        data.lock().unwrap()
    );
    let shared = th::Array::from_slice(&[1u32, 2, 3])?;
    let mut t = th::Process::new(
        |a: th::Array<u32>| double_all(&mut a.lock()),
        shared.clone(),
    );
    t.start()?;
    t.join()?;
    println!("thread, dummy::Array:    parent sees {:?}", shared.to_vec());
    Ok(())
}

// ---------------------------------------------------------------------------
// Cost: start-up and message latency

const STARTS: u32 = 20;
const ROUND_TRIPS: u32 = 2000;

/// Mean microseconds of `f` over `n` runs.
fn mean_us(n: u32, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let t = Instant::now();
    for _ in 0..n {
        f()?;
    }
    Ok(t.elapsed().as_secs_f64() * 1e6 / f64::from(n))
}

fn echo((inq, outq): (mp::Queue<u64>, mp::Queue<u64>)) {
    while let Ok(x) = inq.get() {
        if x == u64::MAX || outq.put(x).is_err() {
            break;
        }
    }
}

fn echo_threads((inq, outq): (th::Queue<u64>, th::Queue<u64>)) {
    while let Ok(x) = inq.get() {
        if x == u64::MAX || outq.put(x).is_err() {
            break;
        }
    }
}

fn echo_pipe(conn: mp::Connection) {
    while let Ok(x) = conn.recv::<u64>() {
        if x == u64::MAX || conn.send(&x).is_err() {
            break;
        }
    }
}

/// The figures of the `cost` section: (what, processes µs, threads µs).
fn measure_cost() -> Result<Vec<(&'static str, f64, f64)>> {
    let start_p = mean_us(STARTS, || {
        let mut p = mp::Process::new(|_: ()| (), ());
        p.start()?;
        Ok(p.join()?)
    })?;
    let start_t = mean_us(STARTS, || {
        let mut t = th::Process::new(|_: ()| (), ());
        t.start()?;
        Ok(t.join()?)
    })?;

    let (inq, outq) = (mp::Queue::new()?, mp::Queue::new()?);
    let mut p = mp::Process::new(echo, (inq.clone(), outq.clone()));
    p.start()?;
    let queue_p = mean_us(ROUND_TRIPS, || {
        inq.put(7)?;
        Ok(outq.get().map(drop)?)
    })?;
    inq.put(u64::MAX)?;
    p.join()?;

    let (inq, outq) = (th::Queue::new()?, th::Queue::new()?);
    let mut t = th::Process::new(echo_threads, (inq.clone(), outq.clone()));
    t.start()?;
    let queue_t = mean_us(ROUND_TRIPS, || {
        inq.put(7)?;
        Ok(outq.get().map(drop)?)
    })?;
    inq.put(u64::MAX)?;
    t.join()?;

    let mut pipe_us = Vec::new();
    for threads in [false, true] {
        let (a, b) = mp::pipe(true)?;
        let mut w: Box<dyn FnMut() -> Result<()>> = if threads {
            let mut t = th::Process::new(echo_pipe, b);
            t.start()?;
            Box::new(move || Ok(t.join()?))
        } else {
            let mut p = mp::Process::new(echo_pipe, b);
            p.start()?;
            Box::new(move || Ok(p.join()?))
        };
        pipe_us.push(mean_us(ROUND_TRIPS, || {
            a.send(&7u64)?;
            Ok(a.recv::<u64>().map(drop)?)
        })?);
        a.send(&u64::MAX)?;
        w()?;
    }
    Ok(vec![
        ("start + join one worker", start_p, start_t),
        ("Queue round trip", queue_p, queue_t),
        ("pipe round trip", pipe_us[0], pipe_us[1]),
    ])
}

fn cost() -> Result<()> {
    let rows = measure_cost()?;
    println!(
        "| mean of {STARTS} starts / {ROUND_TRIPS} round trips | processes | threads | ratio |"
    );
    println!("|---|---:|---:|---:|");
    for (what, p, t) in &rows {
        println!("| {what} | {p:.1} µs | {t:.1} µs | {:.0}x |", p / t);
    }
    let png = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/processes-vs-threads.png");
    draw_cost(&rows, &png)?;
    println!("chart: docs/processes-vs-threads.png");
    Ok(())
}

const FONT: &[u8] = include_bytes!("../benches/vs_python/DejaVuSans-subset.ttf");
const PROC: RGBColor = RGBColor(70, 110, 190);
const THREAD: RGBColor = RGBColor(235, 140, 40);

/// Horizontal bars, processes and threads per row, on a log axis of µs.
fn draw_cost(rows: &[(&str, f64, f64)], path: &Path) -> Result<()> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| anyhow!("the embedded chart font did not load"))?;
    let all: Vec<f64> = rows.iter().flat_map(|r| [r.1, r.2]).collect();
    let lo = all.iter().copied().fold(f64::MAX, f64::min) / 3.0;
    let hi = all.iter().copied().fold(0.0, f64::max) * 6.0;
    let n = rows.len() as f64;
    let root = BitMapBackend::new(path, (1000, 130 + 70 * rows.len() as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Processes vs threads: the cost of starting a worker and of one message",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(220)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..n + 0.8)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc("microseconds (log scale), less is better")
        .label_style(("sans-serif", 14))
        .draw()?;
    for (i, (what, p, t)) in rows.iter().enumerate() {
        let y = n - 1.0 - i as f64;
        let (px, py) = chart.backend_coord(&(lo, y + 0.5));
        root.draw(&Text::new(
            what.to_string(),
            (px - 8, py),
            TextStyle::from(("sans-serif", 14).into_font())
                .pos(Pos::new(HPos::Right, VPos::Center)),
        ))?;
        for (k, (v, color)) in [(*p, PROC), (*t, THREAD)].into_iter().enumerate() {
            let (y0, y1) = (y + 0.52 - 0.4 * k as f64, y + 0.88 - 0.4 * k as f64);
            chart.draw_series(std::iter::once(Rectangle::new(
                [(lo, y0), (v, y1)],
                color.filled(),
            )))?;
            let (qx, qy) = chart.backend_coord(&(v, (y0 + y1) / 2.0));
            root.draw(&Text::new(
                format!("{v:.1} µs").replace('µ', "u"),
                (qx + 4, qy),
                TextStyle::from(("sans-serif", 12).into_font())
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            ))?;
        }
    }
    for (label, color) in [
        ("processes (multiprocess)", PROC),
        ("threads (multiprocess::dummy)", THREAD),
    ] {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(lo, 0.0), (lo, 0.0)],
                color.filled(),
            )))?
            .label(label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(())
}

// ---------------------------------------------------------------------------
// CPU-bound speed-up

/// A pure CPU task: the number of primes below `n`, by trial division.
fn count_primes(n: u64) -> u64 {
    (2..n)
        .filter(|&k| (2..).take_while(|d| d * d <= k).all(|d| k % d != 0))
        .count() as u64
}

const TASKS: u64 = 16;
const LIMIT: u64 = 60_000;

fn speedup() -> Result<()> {
    let workers = mp::cpu_count();
    let t = Instant::now();
    let serial: Vec<u64> = (0..TASKS).map(|i| count_primes(LIMIT + i)).collect();
    let serial_s = t.elapsed().as_secs_f64();

    let pool = mp::Pool::new(workers)?;
    let t = Instant::now();
    let procs = pool.map_with_chunksize(|i: u64| count_primes(LIMIT + i), 0..TASKS, 1)?;
    let procs_s = t.elapsed().as_secs_f64();
    drop(pool);

    let pool = th::Pool::new(workers)?;
    let t = Instant::now();
    let threads = pool.map_with_chunksize(|i: u64| count_primes(LIMIT + i), 0..TASKS, 1)?;
    let threads_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(procs == serial && threads == serial, "the results disagree");

    println!("{TASKS} tasks (primes below {LIMIT}), {workers} workers:");
    println!("| run | seconds | speed-up |");
    println!("|---|---:|---:|");
    println!("| serial | {serial_s:.2} | 1.00x |");
    println!(
        "| {workers} processes | {procs_s:.2} | {:.2}x |",
        serial_s / procs_s
    );
    println!(
        "| {workers} threads | {threads_s:.2} | {:.2}x |",
        serial_s / threads_s
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// What can be sent

fn send() -> Result<()> {
    // 1. A closure that captures: threads yes; processes refuse it at compile
    //    time ("a multiprocess target must not capture variables").
    let greeting = String::from("hello from a captured String");
    let mut t = th::Process::new(move |_: ()| println!("thread, capture: {greeting}"), ());
    t.start()?;
    t.join()?;
    let mut p = mp::Process::new(
        |g: String| println!("process, argument: {g}"),
        "hello, sent as an argument".to_string(),
    );
    p.start()?;
    p.join()?;

    // 2. A file descriptor: a thread takes the File itself; a process gets a
    //    duplicate of the fd over a Connection (SCM_RIGHTS).
    let mut file = tempfile_with("the same open file")?;
    let f2 = file.try_clone()?;
    let mut t = th::Process::new(
        move |mut f: std::fs::File| {
            let mut s = String::new();
            f.read_to_string(&mut s)
                .map(|_| println!("thread, moved File: read {s:?}"))
        },
        f2,
    );
    t.start()?;
    t.join()?;
    file.rewind()?;
    let (a, b) = mp::pipe(true)?;
    let mut p = mp::Process::new(
        |conn: mp::Connection| {
            let fd = mp::reduction::recv_handle(&conn).expect("an fd");
            let mut s = String::new();
            std::fs::File::from(fd)
                .read_to_string(&mut s)
                .expect("read");
            println!("process, fd sent with send_handle: read {s:?}");
        },
        b,
    );
    p.start()?;
    mp::reduction::send_handle(&a, &file)?;
    p.join()?;

    // 3. A reference: threads can borrow (scoped threads); a process cannot
    //    (an address means nothing in another process): `&T` is not
    //    `DeserializeOwned`, so `mp::Process::new(f, &v)` does not compile.
    let v = vec![1, 2, 3];
    let sum = std::thread::scope(|s| s.spawn(|| v.iter().sum::<i32>()).join());
    println!(
        "thread, borrowed &Vec: sum = {:?}",
        sum.map_err(|_| anyhow!("panicked"))?
    );
    let mut p = mp::Process::new(
        |v: Vec<i32>| println!("process, copied Vec: sum = {}", v.iter().sum::<i32>()),
        v.clone(),
    );
    p.start()?;
    p.join()?;
    Ok(())
}

/// A new unlinked temporary file holding `text`, positioned at its start.
fn tempfile_with(text: &str) -> Result<std::fs::File> {
    let path = std::env::temp_dir().join(format!("pvt-{}.txt", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    f.write_all(text.as_bytes())?;
    f.rewind()?;
    Ok(f)
}
