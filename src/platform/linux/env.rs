//! The process environment.

/// Removes `key` from this process's environment.
///
/// Called only from `init()`, first thing in a child, before the child's work
/// (or anything of ours) starts a thread.
pub(crate) fn remove_var(key: &str) {
    // SAFETY:
    // - `init()` runs first in `main` (or before it, from the test-support
    //   constructor), when the child has no other thread that could read the
    //   environment concurrently.
    unsafe { std::env::remove_var(key) }
}
