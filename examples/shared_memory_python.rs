//! Shared memory with CPython, both ways, by name.
//!
//! 1. Rust creates a 100 MB block of float64, fills it, and starts `python3`
//!    on examples/shared_memory_python.py, which attaches by name and sums it
//!    (numpy if installed, `memoryview.cast('d')` if not); both print the
//!    same sum.
//! 2. Python creates a `ShareableList`; Rust attaches, reads and writes it;
//!    Python prints what it now holds.
//!
//! ```text
//! cargo run --release --example shared_memory_python
//! ```

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use mp::shared_memory::{Item, ShareableList, SharedMemory};
use multiprocess as mp;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/shared_memory_python.py"
);

fn main() -> anyhow::Result<()> {
    mp::init();
    rust_creates_python_sums()?;
    python_creates_rust_edits()?;
    Ok(())
}

fn rust_creates_python_sums() -> anyhow::Result<()> {
    let n = 100 * 1024 * 1024 / 8;
    let mut shm = SharedMemory::create(None, n * 8)?;
    // Small integers: every partial sum is exact, so numpy's pairwise sum and
    // a plain loop agree to the last bit.
    for (i, x) in shm.view_mut::<f64>()?.iter_mut().enumerate() {
        *x = (i % 1000) as f64;
    }
    let total: f64 = shm.view::<f64>()?.iter().sum();
    println!(
        "rust sum:   {total:.1} ({} bytes in {})",
        shm.size(),
        shm.name()
    );
    let out = Command::new("python3")
        .args([SCRIPT, "sum", shm.name()])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout)?;
    print!("{line}");
    anyhow::ensure!(
        line.starts_with(&format!("python sum: {total:.1} ")),
        "the sums differ"
    );
    shm.unlink()?;
    Ok(())
}

fn python_creates_rust_edits() -> anyhow::Result<()> {
    let mut py = Command::new("python3")
        .args([SCRIPT, "list"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(py.stdout.take().expect("piped")).lines();
    let name = lines.next().transpose()?.unwrap_or_default();
    let mut list = ShareableList::attach(&name)?;
    println!(
        "rust reads: {:?} (format {})",
        list.to_vec()?,
        list.format()?
    );
    list.set(0, Item::Int(-1))?;
    list.set(3, "from rust".into())?; // fits the 16-byte slot
    list.set(5, Item::Float(0.5))?;
    drop(list);
    writeln!(py.stdin.take().expect("piped"))?;
    if let Some(line) = lines.next().transpose()? {
        println!("{line}");
    }
    anyhow::ensure!(py.wait()?.success(), "python3 failed");
    Ok(())
}
