//! `mp::init()`: the local machinery first (`spawn::init_process`: the
//! forkserver, a child's work), then, in a process that is neither, the
//! remote pool worker (`MULTIPROCESS_CONNECT`, or a launcher's rank above 0).
//! It lives above both so that `spawn` never depends on the pool.

/// Call this first in `main`. In a child process it runs the child's work and
/// exits, so the rest of `main` never runs there; in the parent it returns at
/// once.
///
/// Code before `init()` runs again in every child, so keep it first.
///
/// A process started with `MULTIPROCESS_CONNECT=host:port`, or by a launcher
/// (`mpirun`, `srun`, a Kubernetes Indexed Job) as a rank above 0, becomes a
/// remote pool worker here and never returns either (docs/cluster.md;
/// `MULTIPROCESS_SPMD=0` turns the second off).
///
/// Python: the `if __name__ == '__main__':` guard, and `freeze_support()`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() {
///     mp::init();
///     let mut p = mp::Process::new(|x: u32| assert_eq!(x, 7), 7);
///     p.start().unwrap();
///     p.join().unwrap();
///     assert_eq!(p.exitcode(), Some(0));
/// }
/// ```
pub fn init() {
    if crate::spawn::init_process(crate::pool::warm_fork_image) {
        // Not our child: maybe a remote pool worker, which never returns.
        super::worker::divert();
    }
}
