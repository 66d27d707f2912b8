use multiprocess as mp;
use std::time::Instant;
fn main() -> mp::Result<()> {
    mp::init();
    let t = Instant::now();
    let pool = mp::Pool::new(2)?;
    pool.apply(|x: u32| x, 1)?;
    println!("pool_startup_ms {:.2}", t.elapsed().as_secs_f64() * 1e3);
    let _ = pool.apply(|x: u32| x, 1)?;
    let n = 20_000;
    let t = Instant::now();
    for i in 0..n {
        let _ = pool.apply(|x: u32| x, i)?;
    }
    println!(
        "pool_apply_roundtrip_us {:.2}",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    let n = 2_000_000u64;
    let t = Instant::now();
    let r = pool.map(|x: u64| x * x, 0..n)?;
    assert_eq!(r.len() as u64, n);
    println!(
        "pool_map_tasks_per_s {:.0}",
        n as f64 / t.elapsed().as_secs_f64()
    );
    let n = 200_000u64;
    let t = Instant::now();
    let r = pool.map_with_chunksize(|x: u64| x * x, 0..n, 1)?;
    assert_eq!(r.len() as u64, n);
    println!(
        "pool_map_chunksize1_tasks_per_s {:.0}",
        n as f64 / t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let s: u64 = pool.imap(|x: u64| x * x, 0..n)?.map(|r| r.unwrap()).sum();
    assert!(s > 0);
    println!(
        "pool_imap_tasks_per_s {:.0}",
        n as f64 / t.elapsed().as_secs_f64()
    );
    fn burn(n: u64) -> u64 {
        let mut x = n;
        for i in 0..30_000_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        }
        x
    }
    let t = Instant::now();
    let serial: Vec<u64> = (0..8).map(burn).collect();
    let ts = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let par = pool.map_with_chunksize(burn, 0..8u64, 1)?;
    let tp = t.elapsed().as_secs_f64();
    assert_eq!(serial, par);
    println!("cpu_speedup_2proc {:.2}", ts / tp);
    Ok(())
}
