//! Port of the seed program "multiprocessing 多线程 / 进程": `print_square` and
//! `print_cube` run in two processes, then the parent prints `Done!`.
//!
//! Python original:
//! ```python
//! p1 = multiprocessing.Process(target=print_square, args=(10, ))
//! p2 = multiprocessing.Process(target=print_cube, args=(10, ))
//! p1.start(); p2.start(); p1.join(); p2.join()
//! print("Done!")
//! ```

use multiprocess as mp;

fn print_cube(num: i64) {
    println!("Cube: {}", num * num * num);
}

fn print_square(num: i64) {
    println!("Square: {}", num * num);
}

fn main() -> anyhow::Result<()> {
    mp::init();
    // creating processes
    let mut p1 = mp::Process::new(print_square, 10);
    let mut p2 = mp::Process::new(print_cube, 10);

    // starting process 1&2
    p1.start()?;
    p2.start()?;

    // wait until process 1&2 is finished
    p1.join()?;
    p2.join()?;

    // both processes finished
    println!("Done!");
    Ok(())
}
