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

/// Makes glibc's malloc keep memory it gets back instead of returning it to
/// the kernel at once: blocks up to 16 MiB come from the heap (not a fresh
/// `mmap` each), and the heap is trimmed only above 32 MiB free.
///
/// For pool workers, which allocate and free buffers of the same size for
/// every chunk: without this each 200 KB buffer is a new mapping whose pages
/// all fault in again (on a VM, 2 to 3 µs a page: a third of a `map`'s time).
/// Elsewhere (musl) nothing changes.
pub(crate) fn keep_freed_memory() {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt only sets glibc tuning parameters; any value is
        // valid and it touches no memory of ours. Called by a worker before
        // its first task.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 16 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20);
        }
    }
}

/// Replaces this process's whole environment by `vars`, touching only the
/// variables that differ.
///
/// Called only by the forkserver before it forks children with the
/// program's current environment; the server is single-threaded (it refuses
/// to fork otherwise).
pub(crate) fn replace_all(vars: &[(std::ffi::OsString, std::ffi::OsString)]) {
    let wanted: std::collections::HashMap<_, _> = vars
        .iter()
        .map(|(k, v)| (k.as_os_str(), v.as_os_str()))
        .collect();
    let old: Vec<_> = std::env::vars_os().collect();
    for (k, _) in old
        .iter()
        .filter(|(k, _)| !wanted.contains_key(k.as_os_str()))
    {
        // SAFETY:
        // - only the forkserver runs this, and only while it is the only
        //   thread of its process, so nothing reads the environment
        //   concurrently.
        unsafe { std::env::remove_var(k) };
    }
    let current: std::collections::HashMap<_, _> = old
        .iter()
        .map(|(k, v)| (k.as_os_str(), v.as_os_str()))
        .collect();
    for (k, v) in vars {
        if current.get(k.as_os_str()) != Some(&v.as_os_str()) {
            // SAFETY: as above.
            unsafe { std::env::set_var(k, v) };
        }
    }
}
