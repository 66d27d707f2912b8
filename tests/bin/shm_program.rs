//! A program whose processes tests/shared_memory.rs kills or lets end, to
//! watch the shared-memory tracker clean up after it.
//!
//! `mp-test-shm-program kill`: the parent creates two tracked blocks and a
//! handed-off one, a child creates a third tracked block; it prints
//! `pid <n>` for both processes, `tracked <name>` (three), `handed <name>`,
//! `pipe <inode>` (the tracker's pipe), then `ready`, and waits to be killed.
//!
//! `mp-test-shm-program attach <name> <byte>`: attaches to `name`, writes
//! `<byte>` at offset 0, creates a tracked block of its own (so it has a
//! tracker), prints `tracked <name>`, `ready`, and waits to be killed.
//!
//! `mp-test-shm-program nobody`: drops root for uid 65534, creates a tracked
//! block, prints `uid <n>`, `tracked <name>`, `ready`, and returns without
//! unlinking it.

use std::io::{BufRead, Write};

use mp::shared_memory::SharedMemory;
use multiprocess as mp;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    mp::init();
    let args: Vec<String> = std::env::args().collect();
    let out = std::io::stdout();
    match args.get(1).map(String::as_str) {
        Some("kill") => kill_mode(&mut out.lock())?,
        Some("attach") => {
            let mut theirs = SharedMemory::attach(&args[2])?;
            theirs.write_at(0, &[args[3].parse::<u8>()?])?;
            let ours = SharedMemory::create(None, 64)?;
            let mut o = out.lock();
            writeln!(o, "tracked {}", ours.name())?;
            writeln!(o, "ready")?;
            o.flush()?;
            wait_forever();
        }
        Some("nobody") => {
            drop_root();
            let ours = SharedMemory::create(None, 4096)?;
            let mut o = out.lock();
            // SAFETY: geteuid has no preconditions.
            writeln!(o, "uid {}", unsafe { libc::geteuid() })?;
            writeln!(o, "tracked {}", ours.name())?;
            writeln!(o, "ready")?;
            o.flush()?;
        }
        other => return Err(format!("unknown mode {other:?}").into()),
    }
    Ok(())
}

fn kill_mode(o: &mut impl Write) -> Result<()> {
    let a = SharedMemory::create(None, 4096)?;
    let b = SharedMemory::create(None, 1 << 20)?;
    let handed = SharedMemory::create(None, 64)?;
    handed.untrack();
    let (ours, theirs) = mp::pipe(true)?;
    let mut child = mp::Process::new(
        |conn: mp::Connection| {
            let c = SharedMemory::create(None, 100).unwrap();
            conn.send(&(std::process::id(), c.name().to_owned()))
                .unwrap();
            // Until killed (the parent never answers).
            let _ = conn.recv::<()>();
        },
        theirs,
    );
    child.start()?;
    let (child_pid, c): (u32, String) = ours.recv()?;
    writeln!(o, "pid {}", std::process::id())?;
    writeln!(o, "pid {child_pid}")?;
    for name in [a.name(), b.name(), &c] {
        writeln!(o, "tracked {name}")?;
    }
    writeln!(o, "handed {}", handed.name())?;
    for inode in tracker_pipes() {
        writeln!(o, "pipe {inode}")?;
    }
    writeln!(o, "ready")?;
    o.flush()?;
    wait_forever();
}

/// The pipes this process holds besides stdin, stdout and stderr: the
/// tracker's.
fn tracker_pipes() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| n > 2)
        })
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|t| {
            t.to_str().and_then(|t| {
                t.strip_prefix("pipe:[")?
                    .strip_suffix(']')
                    .map(str::to_owned)
            })
        })
        .collect()
}

/// Blocks until stdin closes or the process is killed.
fn wait_forever() -> ! {
    let mut line = String::new();
    while std::io::stdin()
        .lock()
        .read_line(&mut line)
        .is_ok_and(|n| n > 0)
    {}
    // Stdin closed without a kill: the test is gone; leave as a killed
    // program would (no destructors, no unlink).
    std::process::abort();
}

fn drop_root() {
    // SAFETY: plain credential syscalls on this single-threaded process
    // (nothing started a thread yet).
    unsafe {
        if libc::geteuid() == 0 {
            assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
            assert_eq!(libc::setgid(65534), 0);
            assert_eq!(libc::setuid(65534), 0);
        }
    }
}
