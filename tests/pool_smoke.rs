multiprocess::test_support!();
mod common;
use multiprocess as mp;
use std::time::Duration;

#[test]
fn smoke() {
    let _g = common::serial();
    let _leak = common::LeakCheck::new();
    let pool = mp::Pool::new(2).unwrap();
    assert_eq!(pool.apply(|x: i32| x * x, 5).unwrap(), 25);
    assert_eq!(
        pool.map(|x: u64| x * 2, 0..100).unwrap(),
        (0..100).map(|x| x * 2).collect::<Vec<_>>()
    );
    assert_eq!(
        pool.map_with_chunksize(|x: u64| x * 2, 0..1000, 1)
            .unwrap()
            .len(),
        1000
    );
    let v: Vec<u64> = pool
        .imap(|x: u64| x + 1, 0u64..)
        .unwrap()
        .take(100)
        .collect::<mp::Result<_>>()
        .unwrap();
    assert_eq!(v, (1..101).collect::<Vec<_>>());
    let r = pool
        .apply_async(|_: ()| -> u8 { panic!("boom") }, ())
        .unwrap();
    assert!(
        matches!(r.get(), Err(mp::Error::Remote { .. })),
        "{:?}",
        r.get()
    );
    let r = pool
        .apply_async(|_: ()| -> u8 { std::process::exit(3) }, ())
        .unwrap();
    let e = r.get();
    assert!(
        matches!(
            e,
            Err(mp::Error::WorkerLost {
                exitcode: Some(3),
                ..
            })
        ),
        "{e:?}"
    );
    let r = pool
        .apply_async_timeout(
            |_: ()| std::thread::sleep(Duration::from_secs(100)),
            (),
            Duration::from_millis(100),
        )
        .unwrap();
    assert!(matches!(r.get(), Err(mp::Error::Timeout)));
    assert_eq!(pool.apply(|x: i32| x * x, 6).unwrap(), 36);
    pool.close();
    pool.join().unwrap();
}
