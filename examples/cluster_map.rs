//! A map served by the other ranks of a job: the same program on a laptop
//! (local workers) and under a launcher (the other ranks are the workers).
//!
//! ```text
//! cargo run --example cluster_map                       # local workers
//! mpirun -n 4 target/debug/examples/cluster_map         # 3 remote workers
//! srun -n 4 target/release/examples/cluster_map         # Slurm (docs/cluster.md)
//! ```
//!
//! Prints, last, `sum = 332833500 from 3 workers on 1 hosts`: the sum of the
//! squares of 0..1000 and how many worker processes on how many hosts served
//! the map.

use multiprocess as mp;
use std::collections::BTreeSet;

/// One item: its square, and who computed it. Each item stands for real work
/// (200 µs of waiting, as on a disk or a service): a map of instant items can
/// be over before the last worker of a fresh pool has started, and the count
/// of workers below would then say 2.
fn square_where(x: u64) -> (u64, String, u32) {
    std::thread::sleep(std::time::Duration::from_micros(200));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    (x * x, host, std::process::id())
}

fn main() -> anyhow::Result<()> {
    mp::init();
    match mp::cluster::rank() {
        Some(r) => println!("{r}: building the cluster pool"),
        None => println!("not under a launcher: a local pool"),
    }
    let pool = mp::Pool::builder().processes(3).cluster()?;
    let out = pool.map_with_chunksize(square_where, 0..1000u64, 10)?;
    let sum: u64 = out.iter().map(|(v, _, _)| v).sum();
    let workers: BTreeSet<(&str, u32)> = out.iter().map(|(_, h, p)| (h.as_str(), *p)).collect();
    let hosts: BTreeSet<&str> = out.iter().map(|(_, h, _)| h.as_str()).collect();
    pool.close();
    pool.join()?;
    println!(
        "sum = {sum} from {} workers on {} hosts",
        workers.len(),
        hosts.len()
    );
    Ok(())
}
