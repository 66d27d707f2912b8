//! A program whose exit the `Process` tests watch from outside (tests/process.rs
//! runs it as a real subprocess): what happens to the children it started when
//! it returns from `main` or calls `std::process::exit`.
//!
//! `mp-test-exit-children MODE DIR`:
//! * `non-daemon-return` / `non-daemon-exit`: starts 8 non-daemon children that
//!   each sleep 300 ms and then create `DIR/child-<i>`, dropping every handle;
//!   prints the time the 8 starts took (`starts_ms=<n>`); then returns from
//!   `main` (or calls `std::process::exit(0)`).
//! * `daemon`: starts a daemon child that would sleep for an hour, writes its
//!   pid to `DIR/daemon-pid`, and returns from `main`.
//! * `targets`: runs a target returning `Err(..)` and one returning an
//!   `ExitCode`, and prints their exit codes (`err=<n> exitcode=<n>`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use multiprocess as mp;

/// The error a target returns; its `Debug` form is what the child prints.
#[derive(Debug)]
struct TargetFailed {
    #[allow(dead_code)] // Read through `Debug` only.
    reason: &'static str,
}

fn sleep_then_mark((dir, i): (PathBuf, u32)) -> std::io::Result<()> {
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(dir.join(format!("child-{i}")), format!("{i}\n"))
}

fn main() -> mp::Result<()> {
    mp::init();
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(dir)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: mp-test-exit-children MODE DIR");
        std::process::exit(2);
    };
    let dir = PathBuf::from(dir);
    match mode.as_str() {
        "non-daemon-return" | "non-daemon-exit" => {
            let t0 = Instant::now();
            for i in 0..8 {
                // The handle is dropped at once: no wait here.
                mp::Process::new(sleep_then_mark, (dir.clone(), i)).start()?;
            }
            println!("starts_ms={}", t0.elapsed().as_millis());
            if mode == "non-daemon-exit" {
                std::process::exit(0);
            }
        }
        "daemon" => {
            let mut d = mp::Process::new(|_: ()| std::thread::sleep(Duration::from_secs(3600)), ());
            d.set_daemon(true);
            d.start()?;
            let pid = d.pid().expect("started");
            std::fs::write(dir.join("daemon-pid"), pid.to_string())?;
        }
        "targets" => {
            let mut err = mp::Process::new(
                |_: ()| -> Result<(), TargetFailed> {
                    Err(TargetFailed {
                        reason: "the target gave up",
                    })
                },
                (),
            );
            let mut code = mp::Process::new(|n: u8| ExitCode::from(n), 7);
            err.start()?;
            code.start()?;
            err.join()?;
            code.join()?;
            println!("err={:?} exitcode={:?}", err.exitcode(), code.exitcode());
        }
        other => {
            eprintln!("unknown mode {other}");
            std::process::exit(2);
        }
    }
    Ok(())
}
