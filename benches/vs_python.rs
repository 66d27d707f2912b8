//! `cargo bench --bench vs_python`: this crate and CPython's `multiprocessing`
//! side by side, in one run, on the same machine.
//!
//! Every workload of issue 3 runs here with `multiprocess` and, alternating
//! repeat by repeat, with `benches/python/vs_python.py` under CPython's spawn
//! and fork start methods, given the same count. Beside them, rows named
//! `baseline_*` measure the raw OS mechanism (fork+exec+wait, a socketpair
//! ping-pong and copy, a futex lock) so the reader sees how close the crate is
//! to the limit. A workload whose feature the crate does not have yet is
//! reported as `missing` (null in the JSON), never skipped.
//!
//! ```text
//! cargo bench --bench vs_python -- [--quick] [--json FILE] [--chart FILE]
//!                                  [--repeats N] [--chart-from JSON] [--list] [FILTER ...]
//! ```
//!
//! The workloads live in one module per area (`benches/vs_python/*.rs`); each is
//! one function `fn(&Cfg) -> Result<Option<f64>>`. See docs/benchmarks.md.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

#[path = "vs_python/baseline.rs"]
mod baseline;
#[path = "vs_python/chart.rs"]
mod chart;
#[path = "vs_python/cluster.rs"]
mod cluster;
#[path = "vs_python/futures.rs"]
mod futures;
#[path = "vs_python/managers.rs"]
mod managers;
#[path = "vs_python/pool.rs"]
mod pool;
#[path = "vs_python/process.rs"]
mod process;
#[path = "vs_python/queues.rs"]
mod queues;
#[path = "vs_python/shm.rs"]
mod shm;
#[path = "vs_python/sync.rs"]
mod sync;

/// The argument that makes this binary exit at once (the child of
/// `baseline_fork_exec_wait_ms`).
pub const EXIT_AT_ONCE: &str = "--baseline-exit";

/// The CPython side.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python/vs_python.py");

/// How long one run of one workload (one side) may take before the bench
/// gives up on it as hung.
const HANG_GUARD: Duration = Duration::from_secs(300);

/// Which way a figure is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// Latencies: `_ms`, `_us`, `_ns`.
    Lower,
    /// Rates and speedups: `_per_s`, `cpu_speedup_2proc`.
    Higher,
}

/// Who runs a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// This crate and CPython (both start methods).
    Both,
    /// The raw OS mechanism only (a `baseline_*` row).
    Baseline,
    /// This crate only: CPython has no such thing (a pool whose workers
    /// connect over TCP); compared with its `baseline` row instead.
    Ours,
}

/// What one run of a workload is given.
#[derive(Clone, Copy, Debug)]
pub struct Cfg {
    /// `--quick` was given.
    pub quick: bool,
    /// The workload's count for this run (its `count` or `quick_count`); the
    /// CPython side is passed the same number.
    pub n: u64,
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    /// The name, the same in the JSON, the table and the Python script.
    pub name: &'static str,
    /// Which way is better.
    pub better: Better,
    /// Who runs it.
    pub side: Side,
    /// Items, rounds or MiB in a full run.
    pub count: u64,
    /// The same with `--quick` (about 10x fewer).
    pub quick_count: u64,
    /// The `baseline_*` row this one is compared with, if any.
    pub baseline: Option<&'static str>,
    /// One line for the legend.
    pub what: &'static str,
    /// Runs it once with this crate (or the bare OS): the figure, or `None`
    /// while the crate lacks the feature.
    pub run: fn(&Cfg) -> Result<Option<f64>>,
}

/// Every workload, in table order.
fn all_workloads() -> Vec<Workload> {
    let mut all = Vec::new();
    all.extend_from_slice(process::WORKLOADS);
    all.extend_from_slice(pool::WORKLOADS);
    all.extend_from_slice(futures::WORKLOADS);
    all.extend_from_slice(cluster::WORKLOADS);
    all.extend_from_slice(queues::WORKLOADS);
    all.extend_from_slice(sync::WORKLOADS);
    all.extend_from_slice(managers::WORKLOADS);
    all.extend_from_slice(shm::WORKLOADS);
    all.extend_from_slice(baseline::WORKLOADS);
    all
}

/// The command line.
#[derive(Debug, Default)]
struct Args {
    quick: bool,
    json: Option<PathBuf>,
    chart: Option<PathBuf>,
    chart_from: Option<PathBuf>,
    repeats: Option<usize>,
    list: bool,
    filters: Vec<String>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut path = |what: &str| {
            it.next()
                .map(PathBuf::from)
                .with_context(|| format!("{what} needs a value"))
        };
        match a.as_str() {
            "--quick" => args.quick = true,
            "--json" => args.json = Some(path("--json")?),
            "--chart" => args.chart = Some(path("--chart")?),
            "--chart-from" => args.chart_from = Some(path("--chart-from")?),
            "--repeats" => {
                let n: usize = path("--repeats")?
                    .to_string_lossy()
                    .parse()
                    .context("--repeats takes a number")?;
                ensure!(n >= 1, "--repeats must be at least 1");
                args.repeats = Some(n);
            }
            "--list" => args.list = true,
            // cargo bench passes --bench to harness = false targets.
            "--bench" => {}
            "-h" | "--help" => {
                println!(
                    "usage: cargo bench --bench vs_python -- [--quick] [--json FILE] [--chart FILE] \
                     [--repeats N] [--chart-from JSON] [--list] [FILTER ...]\n\
                     FILTER: run only workloads whose name contains one of these strings"
                );
                std::process::exit(0);
            }
            s if s.starts_with('-') => bail!("unknown option {s} (try --help)"),
            s => args.filters.push(s.to_string()),
        }
    }
    Ok(args)
}

fn main() -> Result<()> {
    multiprocess::init();
    if std::env::args().nth(1).as_deref() == Some(EXIT_AT_ONCE) {
        std::process::exit(0);
    }
    if std::env::args().len() == 1 {
        // `cargo test --benches` / `--all-targets` runs harness = false benches
        // with no arguments (`cargo bench` passes `--bench`).
        return smoke();
    }
    let args = parse_args()?;
    if let Some(from) = &args.chart_from {
        let out = args
            .chart
            .clone()
            .unwrap_or_else(|| from.with_extension("png"));
        let doc: Value = serde_json::from_slice(
            &std::fs::read(from).with_context(|| format!("reading {}", from.display()))?,
        )?;
        chart::draw(&doc, &out)?;
        eprintln!("chart written to {}", out.display());
        return Ok(());
    }
    let workloads: Vec<Workload> = all_workloads()
        .into_iter()
        .filter(|w| {
            args.filters.is_empty() || args.filters.iter().any(|f| w.name.contains(f.as_str()))
        })
        .collect();
    if args.list {
        for w in &workloads {
            println!("{:<36} {}", w.name, w.what);
        }
        return Ok(());
    }
    ensure!(
        !workloads.is_empty(),
        "no workload matches {:?} (try --list)",
        args.filters
    );
    let repeats = args.repeats.unwrap_or(if args.quick { 3 } else { 5 });
    let doc = run(&workloads, args.quick, repeats)?;
    let rows: Vec<Workload> = all_workloads()
        .into_iter()
        .filter(|w| {
            doc["workloads"]
                .as_array()
                .is_some_and(|a| a.iter().any(|n| n == w.name))
        })
        .collect();
    print_table(&doc, &rows);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("figures written to {}", path.display());
    }
    if let Some(path) = &args.chart {
        chart::draw(&doc, path)?;
        eprintln!("chart written to {}", path.display());
    }
    Ok(())
}

// ------------------------------------------------------------------ running

/// Without any argument (under `cargo test`): every workload once on the
/// crate's side with its quick count, checks included, no CPython and no
/// table. Measures nothing worth keeping; proves the bench still works.
fn smoke() -> Result<()> {
    eprintln!(
        "vs_python: no arguments, so a smoke run (use `cargo bench --bench vs_python` to measure)"
    );
    for w in all_workloads() {
        let figure = (w.run)(&Cfg {
            quick: true,
            n: w.quick_count,
        })
        .with_context(|| format!("{} failed", w.name))?;
        eprintln!("  {:<36} {}", w.name, fmt(figure));
    }
    Ok(())
}

/// One thing measured in a workload's rotation: a column of its row.
#[derive(Clone, Copy)]
enum Slot {
    /// The crate (or, on a `baseline_*` row, the bare mechanism).
    Ours(Workload),
    /// CPython with this start method.
    Python(&'static str),
    /// The row's OS baseline, measured in the same rotation so that both see
    /// the same machine conditions.
    Bare(Workload),
}

impl Slot {
    /// The implementation key in the JSON's `results`, and the row name.
    fn key(&self, w: &Workload) -> (&'static str, &'static str) {
        match self {
            Slot::Ours(x) if x.side == Side::Baseline => ("os_baseline", x.name),
            Slot::Ours(x) => ("multiprocess", x.name),
            Slot::Python("spawn") => ("cpython_spawn", w.name),
            Slot::Python("forkserver") => ("cpython_forkserver", w.name),
            Slot::Python(_) => ("cpython_fork", w.name),
            Slot::Bare(b) => ("os_baseline", b.name),
        }
    }

    fn measure(&self, w: &Workload, quick: bool) -> Result<Option<f64>> {
        let cfg = |x: &Workload| Cfg {
            quick,
            n: if quick { x.quick_count } else { x.count },
        };
        match self {
            Slot::Ours(x) | Slot::Bare(x) => {
                Watchdog::arm(x.name);
                let f = (x.run)(&cfg(x)).with_context(|| format!("{} failed", x.name))?;
                Watchdog::disarm();
                Ok(f)
            }
            Slot::Python(method) => Ok(Some(run_python(w.name, method, &cfg(w))?)),
        }
    }
}

fn run(workloads: &[Workload], quick: bool, repeats: usize) -> Result<Value> {
    let started_unix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let t_start = Instant::now();
    let python = python_version()?;
    Watchdog::start();
    let run_load = Load::now();
    let all = all_workloads();
    let find = |name: &str| all.iter().find(|x| x.name == name).copied();
    // Every row shown: the selected ones plus the baselines they compare with.
    let mut rows: Vec<Workload> = workloads.to_vec();
    for w in workloads {
        if let Some(b) = w.baseline.and_then(find) {
            if !rows.iter().any(|x| x.name == b.name) {
                rows.push(b);
            }
        }
    }
    rows.sort_by_key(|x| all.iter().position(|a| a.name == x.name));
    let mut samples: BTreeMap<&str, BTreeMap<&str, Vec<Option<f64>>>> = BTreeMap::new();
    let mut loads = BTreeMap::new();
    for w in workloads {
        if w.side == Side::Baseline && loads.contains_key(w.name) {
            continue; // already measured beside the row it serves
        }
        let mut slots = vec![Slot::Ours(*w)];
        if w.side == Side::Both {
            slots.extend([Slot::Python("spawn"), Slot::Python("fork")]);
            if is_start_method_row(w.name) {
                slots.push(Slot::Python("forkserver"));
            }
        }
        let bare = w.baseline.and_then(find);
        slots.extend(bare.map(Slot::Bare));
        eprint!(
            "{:<36} n={:<8}",
            w.name,
            if quick { w.quick_count } else { w.count }
        );
        let load = Load::now();
        for r in 0..repeats {
            for k in 0..slots.len() {
                let slot = slots[(k + r) % slots.len()];
                let figure = slot.measure(w, quick)?;
                let (imp, name) = slot.key(w);
                samples
                    .entry(imp)
                    .or_default()
                    .entry(name)
                    .or_default()
                    .push(figure);
            }
            eprint!(".");
        }
        let load = load.until_now();
        eprintln!(
            " {:.1}s, other load {:.2} cores",
            load.wall_s, load.foreign_cores
        );
        loads.insert(w.name, load.to_json());
        if let Some(b) = bare {
            loads.insert(b.name, load.to_json());
        }
    }
    let total = run_load.until_now();
    let results: BTreeMap<&str, BTreeMap<&str, Value>> = samples
        .iter()
        .map(|(imp, rows)| {
            let medians = rows
                .iter()
                .map(|(name, s)| (*name, median(s).map_or(Value::Null, |v| json!(v))));
            (*imp, medians.collect())
        })
        .collect();
    let count = |x: &Workload| json!(if quick { x.quick_count } else { x.count });
    let better = |x: &Workload| {
        json!(if x.better == Better::Lower {
            "lower"
        } else {
            "higher"
        })
    };
    Ok(json!({
        "machine": machine_info(&python, &total),
        "quick": quick,
        "repeats": repeats,
        "started_unix": started_unix,
        "duration_s": t_start.elapsed().as_secs_f64(),
        "results": results,
        "workloads": rows.iter().map(|w| w.name).collect::<Vec<_>>(),
        "counts": rows.iter().map(|w| (w.name, count(w))).collect::<BTreeMap<_, _>>(),
        "better": rows.iter().map(|w| (w.name, better(w))).collect::<BTreeMap<_, _>>(),
        "baseline_of": rows.iter().filter_map(|w| w.baseline.map(|b| (w.name, b))).collect::<BTreeMap<_, _>>(),
        "load": loads,
        "samples": samples,
    }))
}

/// The median of the samples; `None` when the feature is missing (every
/// sample is `None`).
fn median(samples: &[Option<f64>]) -> Option<f64> {
    let mut v: Vec<f64> = samples.iter().flatten().copied().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

fn python_version() -> Result<String> {
    let out = Command::new("python3")
        .arg("--version")
        .output()
        .context("python3 is not on PATH: the CPython columns need it")?;
    ensure!(out.status.success(), "python3 --version failed");
    Ok(String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("Python ")
        .to_string())
}

/// The rows that start processes (`spawn_join_ms`, `pool_startup_ms` and
/// their `[method]` variants), which CPython's forkserver runs too.
fn is_start_method_row(name: &str) -> bool {
    let base = python_name(name);
    base == "spawn_join_ms" || base == "pool_startup_ms"
}

/// The CPython workload of a row: `spawn_join_ms[forkserver]` is CPython's
/// `spawn_join_ms` (its start methods are the columns).
fn python_name(name: &str) -> &str {
    name.split_once('[').map_or(name, |(base, _)| base)
}

/// Runs one workload once in CPython and returns its figure, after checking
/// that the script ran the same count and that its own checks passed.
fn run_python(name: &str, method: &str, cfg: &Cfg) -> Result<f64> {
    let name = python_name(name);
    let mut cmd = Command::new("python3");
    cmd.arg(SCRIPT)
        .args(["--start-method", method, "--count", &cfg.n.to_string()]);
    if cfg.quick {
        cmd.arg("--quick");
    }
    cmd.arg(name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Its own process group, so a hung run can be killed with its children.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd.spawn().context("starting python3")?;
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(HANG_GUARD) {
        Ok(out) => out?,
        Err(_) => {
            // The group we made above: the script and its workers.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = rx.recv();
            bail!("{name} (CPython {method}) hung for {HANG_GUARD:?}; killed");
        }
    };
    if !out.status.success() {
        bail!(
            "{name} (CPython {method}) failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let doc: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{name} (CPython {method}): bad JSON"))?;
    let ran = doc["counts"][name].as_u64();
    ensure!(
        ran == Some(cfg.n),
        "{name} (CPython {method}) ran count {ran:?}, expected {}",
        cfg.n
    );
    doc["results"][name]
        .as_f64()
        .with_context(|| format!("{name} (CPython {method}): no figure in {doc}"))
}

// ----------------------------------------------------------------- watchdog

/// Turns a hang of the crate's side into a loud failure instead of a stuck run.
struct Watchdog;

/// The deadline of the running workload, in ms since `WATCH_EPOCH`; 0 = idle.
static WATCH_DEADLINE: AtomicU64 = AtomicU64::new(0);
static WATCH_EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
static WATCH_NAME: std::sync::Mutex<&str> = std::sync::Mutex::new("");

impl Watchdog {
    fn now_ms() -> u64 {
        WATCH_EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
    }

    fn start() {
        Self::now_ms();
        std::thread::spawn(|| {
            loop {
                std::thread::sleep(Duration::from_millis(500));
                let d = WATCH_DEADLINE.load(Ordering::Acquire);
                if d != 0 && Self::now_ms() > d {
                    let name = *WATCH_NAME.lock().unwrap_or_else(|e| e.into_inner());
                    eprintln!(
                        "\nvs_python: {name} (multiprocess) hung for {HANG_GUARD:?}; aborting the bench"
                    );
                    std::process::exit(2);
                }
            }
        });
    }

    fn arm(name: &'static str) {
        *WATCH_NAME.lock().unwrap_or_else(|e| e.into_inner()) = name;
        WATCH_DEADLINE.store(
            Self::now_ms() + HANG_GUARD.as_millis() as u64,
            Ordering::Release,
        );
    }

    fn disarm() {
        WATCH_DEADLINE.store(0, Ordering::Release);
    }
}

// --------------------------------------------------------------------- load

/// A snapshot of the machine's CPU accounting.
struct Load {
    at: Instant,
    loadavg: String,
    /// Busy and total jiffies of all CPUs (/proc/stat).
    busy: u64,
    total: u64,
    /// CPU time of this process and its reaped children (getrusage), seconds.
    own_s: f64,
}

/// The load between two snapshots.
struct LoadDelta {
    wall_s: f64,
    loadavg_before: String,
    loadavg_after: String,
    /// CPUs kept busy on average, by anything.
    busy_cores: f64,
    /// CPUs kept busy on average by this bench and the processes it started.
    own_cores: f64,
    /// The rest: other processes on the machine.
    foreign_cores: f64,
}

impl Load {
    fn now() -> Load {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest is inside user).
        let get = |i: usize| cpu.get(i).copied().unwrap_or(0);
        let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
        let total = busy + get(3) + get(4);
        let own_s = rusage_s(libc::RUSAGE_SELF) + rusage_s(libc::RUSAGE_CHILDREN);
        Load {
            at: Instant::now(),
            loadavg: std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
                .to_string(),
            busy,
            total,
            own_s,
        }
    }

    fn until_now(&self) -> LoadDelta {
        let now = Load::now();
        let wall_s = now.at.duration_since(self.at).as_secs_f64();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let total = (now.total - self.total).max(1) as f64;
        let busy_cores = (now.busy - self.busy) as f64 / total * cores;
        let own_cores = (now.own_s - self.own_s) / wall_s.max(1e-9);
        LoadDelta {
            wall_s,
            loadavg_before: self.loadavg.clone(),
            loadavg_after: now.loadavg,
            busy_cores,
            own_cores,
            foreign_cores: (busy_cores - own_cores).max(0.0),
        }
    }
}

impl LoadDelta {
    fn to_json(&self) -> Value {
        json!({
            "wall_s": self.wall_s,
            "loadavg_before": self.loadavg_before,
            "loadavg_after": self.loadavg_after,
            "busy_cores": self.busy_cores,
            "own_cores": self.own_cores,
            "foreign_cores": self.foreign_cores,
        })
    }
}

/// CPU seconds (user + system) of `who` (`RUSAGE_SELF` or `RUSAGE_CHILDREN`).
fn rusage_s(who: i32) -> f64 {
    // SAFETY: getrusage fills the zeroed struct we own; rusage is plain data.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(who, &mut u) != 0 {
            return 0.0;
        }
        u
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn machine_info(python: &str, total: &LoadDelta) -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
    };
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|x| x.parse::<u64>().ok())
        });
    let cmd = |prog: &str, args: &[&str]| {
        Command::new(prog)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    json!({
        "cpu_model": field("model name"),
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "virtualized": field("flags").is_some_and(|f| f.split_whitespace().any(|x| x == "hypervisor")),
        "mem_total_kib": mem_kib,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string()),
        "python": python,
        "rustc": cmd("rustc", &["--version"]),
        "git_commit": cmd("git", &["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short", "HEAD"]),
        "load": total.to_json(),
    })
}

// -------------------------------------------------------------------- table

/// `ours` relative to `theirs`, so that more than 1 means `multiprocess` is better.
pub fn ratio(better: Better, ours: f64, theirs: f64) -> f64 {
    match better {
        Better::Lower => theirs / ours,
        Better::Higher => ours / theirs,
    }
}

/// A figure with 4 significant digits, or `missing`.
fn fmt(v: Option<f64>) -> String {
    match v {
        None => "missing".into(),
        Some(0.0) => "0".into(),
        Some(v) => {
            let digits = (3 - v.abs().log10().floor() as i32).max(0) as usize;
            format!("{v:.digits$}")
        }
    }
}

fn print_table(doc: &Value, workloads: &[Workload]) {
    let res = |imp: &str, w: &str| doc["results"][imp][w].as_f64();
    println!();
    println!(
        "{:<34} {:>6} {:>13} {:>13} {:>13} {:>13} {:>8} {:>6}",
        "workload",
        "better",
        "multiprocess",
        "CPython spawn",
        "CPython fork",
        "CPython fsrv",
        "ratio",
        "load"
    );
    for w in workloads {
        let better = if w.better == Better::Lower {
            "lower"
        } else {
            "higher"
        };
        let load = doc["load"][w.name]["foreign_cores"].as_f64().unwrap_or(0.0);
        if w.side == Side::Baseline {
            let v = res("os_baseline", w.name);
            println!(
                "{:<34} {better:>6} {:>13} {:>13} {:>13} {:>13} {:>8} {load:>6.2}",
                w.name,
                fmt(v),
                "-",
                "-",
                "-",
                "-"
            );
            continue;
        }
        let ours = res("multiprocess", w.name);
        let (sp, fk) = (res("cpython_spawn", w.name), res("cpython_fork", w.name));
        let fs = res("cpython_forkserver", w.name);
        // Against the best of CPython's start methods measured on this row.
        let best = [sp, fk, fs]
            .into_iter()
            .flatten()
            .reduce(|a, b| match w.better {
                Better::Lower => a.min(b),
                Better::Higher => a.max(b),
            });
        let r = match (ours, best) {
            (Some(o), Some(t)) => format!("{:.2}x", ratio(w.better, o, t)),
            _ => "-".into(),
        };
        let fs = if fs.is_some() { fmt(fs) } else { "-".into() };
        // A row CPython has no twin of: its columns are empty, not missing.
        let (sp, fk) = if w.side == Side::Ours {
            ("-".to_string(), "-".to_string())
        } else {
            (fmt(sp), fmt(fk))
        };
        println!(
            "{:<34} {better:>6} {:>13} {sp:>13} {fk:>13} {fs:>13} {r:>8} {load:>6.2}",
            w.name,
            fmt(ours),
        );
    }
    println!(
        "\nratio: multiprocess against the best CPython start method of the row; > 1 means multiprocess is better.\n\
         load: CPU cores kept busy by other processes during the row (from /proc/stat minus this bench's own)."
    );
    let mut header = false;
    for w in workloads {
        let Some(b) = w.baseline else { continue };
        let (Some(ours), Some(bare)) = (res("multiprocess", w.name), res("os_baseline", b)) else {
            continue;
        };
        if !header {
            println!(
                "\nagainst the baseline row measured in this run (the bare OS mechanism; local workers for cluster_*):"
            );
            header = true;
        }
        match w.better {
            Better::Lower => println!(
                "  {:<32} takes {:>5.2}x the time of {b}",
                w.name,
                ours / bare
            ),
            Better::Higher => println!(
                "  {:<32} reaches {:>4.0}% of {b}",
                w.name,
                ours / bare * 100.0
            ),
        }
    }
    let m = &doc["machine"];
    println!(
        "\nmachine: {} x {}, kernel {}, Python {}; loadavg {} -> {}; other load {:.2} cores on average; {:.0} s",
        m["cores"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
        m["python"].as_str().unwrap_or("?"),
        m["load"]["loadavg_before"].as_str().unwrap_or("?"),
        m["load"]["loadavg_after"].as_str().unwrap_or("?"),
        m["load"]["foreign_cores"].as_f64().unwrap_or(0.0),
        doc["duration_s"].as_f64().unwrap_or(0.0),
    );
}
