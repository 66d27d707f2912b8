//! Every example in `examples/` builds and runs against `mp::dummy`, changed
//! only in its `use` line: `use multiprocess as mp;` becomes
//! `use multiprocess::dummy as mp;`.
//!
//! The test writes each example, so rewritten, into a temporary cargo project
//! (a path dependency on this crate, `Cargo.lock` copied from ours, and our
//! target directory, so no dependency is built again), builds them all with
//! one `cargo build`, runs each, and checks its exit status and key lines.
//!
//! Left out, with the reason:
//! - `processes_vs_threads`: it runs both ways already (it names both
//!   `multiprocess` and `multiprocess::dummy`), so there is no `use` line to change.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::within;

/// Examples that are not rewritten, with the reason.
const EXCLUDED: &[(&str, &str)] = &[(
    "processes_vs_threads",
    "runs both ways by itself: it has no single `use` line to change",
)];

const USE_PROCESSES: &str = "use multiprocess as mp;";
const USE_THREADS: &str = "use multiprocess::dummy as mp;";

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Our target directory: `CARGO_TARGET_TMPDIR` is `<target>/tmp`.
fn target_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent()
        .expect("CARGO_TARGET_TMPDIR has a parent")
        .to_path_buf()
}

/// The examples to run: name -> source with its `use` line rewritten.
fn rewritten_examples() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let dir = manifest_dir().join("examples");
    for entry in std::fs::read_dir(&dir).expect("read examples/") {
        let path = entry.expect("examples/ entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if EXCLUDED.iter().any(|(n, _)| *n == name) {
            continue;
        }
        let src = std::fs::read_to_string(&path).expect("read example");
        assert_eq!(
            src.matches(USE_PROCESSES).count(),
            1,
            "{name}: expected exactly one `{USE_PROCESSES}` line"
        );
        let manifest = format!("{:?}", manifest_dir().display().to_string());
        let src = src
            .replace(USE_PROCESSES, USE_THREADS)
            .replace("env!(\"CARGO_MANIFEST_DIR\")", &manifest);
        out.insert(name, src);
    }
    out
}

fn bin_name(example: &str) -> String {
    format!("dummy_ex_{example}")
}

/// Writes the temporary project; returns its manifest path.
fn write_project(dir: &Path, examples: &BTreeMap<String, String>) -> PathBuf {
    let bins = dir.join("src/bin");
    let _ = std::fs::remove_dir_all(&bins);
    std::fs::create_dir_all(&bins).expect("create project");
    let mut manifest = format!(
        "[package]\nname = \"multiprocess-dummy-examples\"\nversion = \"0.0.0\"\n\
         edition = \"2024\"\npublish = false\n\n[workspace]\n\n[dependencies]\n\
         multiprocess = {{ path = {:?} }}\nanyhow = \"1\"\nserde = {{ version = \"1\", features = [\"derive\"] }}\n\
         indicatif = \"0.18\"\n\
         tokio = {{ version = \"1\", features = [\"rt\", \"macros\", \"time\", \"sync\"] }}\n\
         futures-util = {{ version = \"0.3\", default-features = false, features = [\"std\"] }}\n\n\
         # The examples' own code optimised (as `cargo run --release` would), the\n\
         # dependencies exactly as our dev build has them, so none is rebuilt.\n\
         [profile.dev.package.multiprocess-dummy-examples]\nopt-level = 3\n",
        manifest_dir().display().to_string()
    );
    for (name, src) in examples {
        std::fs::write(bins.join(format!("{}.rs", bin_name(name))), src).expect("write example");
        manifest.push_str(&format!(
            "\n[[bin]]\nname = \"{0}\"\npath = \"src/bin/{0}.rs\"\n",
            bin_name(name)
        ));
    }
    std::fs::write(dir.join("Cargo.toml"), manifest).expect("write Cargo.toml");
    std::fs::copy(manifest_dir().join("Cargo.lock"), dir.join("Cargo.lock")).expect("copy lock");
    dir.join("Cargo.toml")
}

fn cargo_build(manifest: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--offline", "--bins", "--manifest-path"])
        .arg(manifest)
        .env("CARGO_TARGET_DIR", target_dir())
        .stdin(Stdio::null())
        .output()
        .expect("run cargo build");
    assert!(
        out.status.success(),
        "the examples do not build against mp::dummy:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run(example: &str) -> Output {
    let exe = target_dir().join("debug").join(bin_name(example));
    let step = format!("example {example} against mp::dummy");
    within(common::LONG, &step.clone(), move || {
        Command::new(&exe)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", exe.display()))
    })
}

/// The checks for one example's stdout: lines that must appear.
fn expected_lines(example: &str) -> Vec<String> {
    let lines: &[&str] = match example {
        "apply_async_files" => &["finishing data_0", "多进程计算 共消耗"],
        "cluster_map" => &[
            "not under a launcher: a local pool",
            // Threads: one process served it all.
            "sum = 332833500 from 1 workers on 1 hosts",
        ],
        "correlation" => &["| 2540 |", "| 10160 |"],
        // mp::futures::ProcessPoolExecutor becomes the thread executor.
        "executor_as_completed" => &[
            "\"http://www.bbc.co.uk/\" page has 5133 primes",
            "\"http://www.cnn.com/\" page has 13848 primes",
            "\"http://www.foxnews.com/\" page has 33860 primes",
            "\"http://europe.wsj.com/\" page has 49098 primes",
            "\"http://nonexistant-subdomain.python.org/\" generated an exception: ",
            "Name or service not known",
        ],
        "groupby_apply" => &[
            "output:",
            "data process of 1: finished@",
            "{'FL001': {'intercept': ",
            "'FL024': {'intercept': 11.5",
        ],
        "imap_progress" => &[],
        "manager_dict" => &["40 squares, count = 40"],
        "manager_namespace" => &[
            "0 processor started !",
            "rows: 10000, first: Row { a: 0, b: 10000, c: 5000 }",
            "namespace.data still has C == 0 everywhere",
        ],
        "pipe_progress" => &[
            "output:",
            "data process of 1: finished@",
            "40 groups fitted",
        ],
        "process_basics" => &["Square: 100", "Cube: 1000", "Done!"],
        "python_interop" => &["rust: python client authenticated", "rust: done, "],
        "queue_pipeline" => &["100 results, sum of squares = 328350"],
        "semaphore_workers" => &["8 workers, at most 2 at a time: max concurrency observed = "],
        "shared_counter" => &["with the lock:      400000 (0 updates lost)"],
        "tokio_await" => &["1000 futures awaited in ", "the ticker ticked "],
        "shared_memory_python" => &["python sum: 6546966400.0", "rust reads: [", "from rust"],
        other => panic!("no checks for example {other}: add them to expected_lines"),
    };
    lines.iter().map(|s| s.to_string()).collect()
}

/// `imap_progress`'s function, to check its 40 results.
fn imap_progress_func(n: u64) -> u64 {
    (1..=200_000u64).fold(n, |acc, k| {
        acc.wrapping_mul(31).wrapping_add(k * n) % 1_000_003
    })
}

fn check_output(example: &str, out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{example} failed against mp::dummy ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for line in expected_lines(example) {
        assert!(
            stdout.contains(&line),
            "{example}: no {line:?} in its output:\n{stdout}"
        );
    }
    match example {
        "imap_progress" => {
            let got: Vec<u64> = stdout
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            let want: Vec<u64> = (0..40).map(imap_progress_func).collect();
            assert_eq!(got, want, "imap_progress: results in order");
        }
        "semaphore_workers" => {
            let peak: u32 = stdout
                .lines()
                .find_map(|l| l.split("observed = ").nth(1))
                .and_then(|v| v.trim().parse().ok())
                .expect("the peak is printed");
            assert!((1..=2).contains(&peak), "peak concurrency {peak}");
        }
        _ => {}
    }
}

#[test]
fn every_example_runs_against_dummy() {
    let examples = rewritten_examples();
    assert!(examples.len() >= 12, "found only {:?}", examples.keys());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dummy-examples");
    let manifest = write_project(&dir, &examples);
    within(
        std::time::Duration::from_secs(600),
        "cargo build of the examples",
        move || cargo_build(&manifest),
    );
    for name in examples.keys() {
        let out = run(name);
        check_output(name, &out);
    }
}
