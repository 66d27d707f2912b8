//! A Rust server for a Python client: the Python program
//! (`examples/python_interop.py`, standard library only) connects with
//! `multiprocessing.connection.Client`, sends work with `Connection.send()` and
//! reads results with `Connection.recv()`; this program is the `Listener`.
//!
//! Run: `cargo run --example python_interop` (starts the Python script itself).
//!
//! Python equivalent of this side:
//! ```python
//! with Listener(('127.0.0.1', 0), authkey=key) as l:
//!     with l.accept() as conn:
//!         while (item := conn.recv()) is not None:
//!             op, numbers = item
//!             conn.send({'op': op, 'result': ..., 'error': None})
//! ```

use std::net::SocketAddr;
use std::process::Command;

use mp::connection::{Address, Listener};
use multiprocess as mp;
use serde::Serialize;

/// Sent back for each work item; Python sees a `dict`.
#[derive(Serialize)]
struct Reply {
    op: String,
    result: Option<f64>,
    error: Option<String>,
}

/// Sent back at the end; Python sees a `dict`.
#[derive(Serialize)]
struct Summary {
    handled: u32,
    failed: u32,
}

fn compute(op: &str, numbers: &[f64]) -> Result<f64, String> {
    match op {
        "sum" => Ok(numbers.iter().sum()),
        "mean" if numbers.is_empty() => Err("mean of no numbers".into()),
        "mean" => Ok(numbers.iter().sum::<f64>() / numbers.len() as f64),
        "max" => numbers
            .iter()
            .copied()
            .reduce(f64::max)
            .ok_or_else(|| "max of no numbers".into()),
        other => Err(format!("unknown operation {other:?}")),
    }
}

fn main() -> anyhow::Result<()> {
    mp::init();
    // A fresh random authkey, handed to the Python client via its environment.
    let mut key = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut key)?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();

    let listener = Listener::bind("127.0.0.1:0".parse::<SocketAddr>()?, Some(&key))?;
    let Address::Tcp(addr) = listener.address() else {
        unreachable!("bound a TCP address")
    };
    println!("rust: listening on {addr}");

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python_interop.py");
    let mut python = Command::new("python3")
        .arg(script)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .env("MP_AUTHKEY", &hex)
        .spawn()
        .map_err(|e| anyhow::anyhow!("could not start python3 (is it installed?): {e}"))?;

    let conn = listener.accept_timeout(std::time::Duration::from_secs(60))?;
    println!("rust: python client authenticated");
    let (mut handled, mut failed) = (0, 0);
    // `None` from Python ends the loop.
    while let Some((op, numbers)) = conn.recv_pickle::<Option<(String, Vec<f64>)>>()? {
        handled += 1;
        let reply = match compute(&op, &numbers) {
            Ok(r) => Reply {
                op,
                result: Some(r),
                error: None,
            },
            Err(e) => {
                failed += 1;
                Reply {
                    op,
                    result: None,
                    error: Some(e),
                }
            }
        };
        conn.send_pickle(&reply)?;
    }
    conn.send_pickle(&Summary { handled, failed })?;

    let status = python.wait()?;
    anyhow::ensure!(status.success(), "the python client failed: {status}");
    println!("rust: done, {handled} items handled");
    Ok(())
}
