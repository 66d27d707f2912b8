//! Shared memory: an anonymous memfd, mapped shared, passed to other processes
//! as an fd.
//!
//! Nothing is named, so nothing can leak into /dev/shm: the kernel frees the
//! memory when the last process that maps it (or holds its fd) is gone, even if
//! every one of them was killed with SIGKILL. The file is sealed against
//! shrinking and growing, so no peer can truncate it and turn our accesses into
//! SIGBUS.
//!
//! Other processes' writes are reached only through atomics; never through a
//! `&mut` into the mapping.

use std::any::TypeId;
use std::io::{self, IoSlice};
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

/// A mapped shared-memory region.
#[derive(Debug)]
pub(crate) struct ShmRegion {
    /// The memfd: what travels to other processes.
    fd: OwnedFd,
    /// Start of our mapping (page aligned).
    ptr: NonNull<u8>,
    /// Length in bytes (> 0).
    len: usize,
    /// Where the live [`PlainView`] of this mapping starts (it runs to the
    /// end); `usize::MAX` when there is none. Process-local bookkeeping, not
    /// shared memory.
    view_from: AtomicUsize,
    /// Element accesses in progress ([`ShmRegion::element`]): a view waits
    /// for them to end, so that none overlaps it (process-local).
    accessors: AtomicUsize,
}

// SAFETY:
// - the region is plain shared memory; every access through `ShmRegion` is via
//   atomics or explicit copies, which are sound from any thread, or through
//   the one `PlainView` (itself neither `Send` nor `Sync`), while which the
//   others refuse its bytes.
// - the mapping lives until `Drop`, which needs `&mut self`, so no thread can
//   use `ptr` after it is unmapped.
unsafe impl Send for ShmRegion {}
// SAFETY: as for `Send`: `&ShmRegion` gives only atomic or copying access.
unsafe impl Sync for ShmRegion {}

impl ShmRegion {
    /// Creates a zero-filled region of `len` bytes (at least 1).
    ///
    /// # Errors
    ///
    /// `ENOMEM`, `EMFILE` and the like from memfd_create, ftruncate or mmap.
    pub(crate) fn create(len: usize) -> io::Result<ShmRegion> {
        let len = len.max(1);
        let fd = memfd_create(
            c"multiprocess",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )?;
        nix::unistd::ftruncate(&fd, len as libc::off_t)?;
        fcntl(
            &fd,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
            ),
        )?;
        Self::map(fd, len)
    }

    /// Maps a region received from another process.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `fd` is not a sealed memfd of ours (empty or growable), and the
    /// errors of mmap.
    pub(crate) fn from_fd(fd: OwnedFd) -> io::Result<ShmRegion> {
        let st = nix::sys::stat::fstat(&fd)?;
        let seals = fcntl(&fd, FcntlArg::F_GET_SEALS)?;
        let needed = (SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW).bits();
        if st.st_size <= 0 || seals & needed != needed {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a sealed shared-memory region",
            ));
        }
        Self::map(fd, st.st_size as usize)
    }

    /// Creates a zero-filled memfd named `name` (what `/proc/PID/fd` shows) of
    /// `file_len` bytes, sealed like
    /// [`create`](Self::create), and maps only its first `map_len` bytes (at
    /// least 1, at most `file_len`). The rest is sparse: it costs no memory
    /// until written, and is reached with [`write_all_at`] and
    /// [`read_exact_at`], never through the mapping (a queue's spill log).
    ///
    /// # Errors
    ///
    /// As [`create`](Self::create); `EINVAL` when `map_len > file_len`.
    pub(crate) fn create_sparse(
        name: &std::ffi::CStr,
        map_len: usize,
        file_len: u64,
    ) -> io::Result<ShmRegion> {
        let map_len = map_len.max(1);
        if map_len as u64 > file_len || file_len > i64::MAX as u64 {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
        nix::unistd::ftruncate(&fd, file_len as libc::off_t)?;
        fcntl(
            &fd,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
            ),
        )?;
        Self::map(fd, map_len)
    }

    /// Maps the first `map_len` bytes of a region made by
    /// [`create_sparse`](Self::create_sparse) in another process.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `fd` is not a memfd sealed against shrinking and growing
    /// of at least `map_len` bytes, and the errors of mmap.
    pub(crate) fn from_fd_prefix(fd: OwnedFd, map_len: usize) -> io::Result<ShmRegion> {
        let st = nix::sys::stat::fstat(&fd)?;
        let seals = fcntl(&fd, FcntlArg::F_GET_SEALS)?;
        let needed = (SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW).bits();
        if map_len == 0 || st.st_size < map_len as i64 || seals & needed != needed {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a sealed shared-memory region of the expected size",
            ));
        }
        Self::map(fd, map_len)
    }

    /// The file's size in bytes (for a sparse region, more than is mapped).
    pub(crate) fn file_len(&self) -> io::Result<u64> {
        Ok(nix::sys::stat::fstat(&self.fd)?.st_size as u64)
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<ShmRegion> {
        let size = std::num::NonZeroUsize::new(len).ok_or(io::ErrorKind::InvalidInput)?;
        // SAFETY:
        // - a fresh shared mapping chosen by the kernel (no fixed address), so it
        //   overlaps no Rust object.
        // - `fd` is a memfd of exactly `len` bytes, sealed against shrinking, so
        //   every byte of the mapping stays backed (no SIGBUS).
        let ptr = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )?
        };
        Ok(ShmRegion {
            fd,
            ptr: ptr.cast(),
            len,
            view_from: AtomicUsize::new(usize::MAX),
            accessors: AtomicUsize::new(0),
        })
    }

    /// The memfd, for sending to another process.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// A pointer to `offset`, checked to hold `size` bytes aligned to `align`
    /// that no live [`PlainView`] borrows.
    #[inline]
    fn at(&self, offset: usize, size: usize, align: usize) -> *mut u8 {
        // Relaxed: the view is made and dropped by the thread that holds the
        // lock, and only that thread could reach its bytes legitimately.
        assert!(
            size == 0 || offset.saturating_add(size) <= self.view_from.load(Ordering::Relaxed),
            "shared array is borrowed in place by a live lock guard of this process; \
             reach it through that guard until it is dropped"
        );
        self.bounded(offset, size, align)
    }

    /// Runs `f`, an access to the `size` bytes at `offset` that a
    /// [`PlainView`] may cover (an array's element), announced so that no view
    /// is made while it runs: the access counts itself, then checks for a view
    /// (SeqCst both, against `plain_view`'s SeqCst claim then count check), so
    /// either it sees the view and refuses, or the view waits for it to end.
    ///
    /// # Panics
    ///
    /// While a live view of this mapping covers those bytes.
    pub(crate) fn element<R>(&self, offset: usize, size: usize, f: impl FnOnce() -> R) -> R {
        /// Ends the announcement however the access ends.
        struct Announced<'a>(&'a AtomicUsize);
        impl Drop for Announced<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.accessors.fetch_add(1, Ordering::SeqCst);
        let _announced = Announced(&self.accessors);
        assert!(
            size == 0 || offset.saturating_add(size) <= self.view_from.load(Ordering::SeqCst),
            "shared array is borrowed in place by a live lock guard of this process; \
             reach it through that guard until it is dropped"
        );
        f()
    }

    /// A pointer to `offset`, checked to hold `size` bytes aligned to `align`.
    #[inline]
    fn bounded(&self, offset: usize, size: usize, align: usize) -> *mut u8 {
        assert!(
            offset.checked_add(size).is_some_and(|end| end <= self.len) && offset % align == 0,
            "shared-memory access out of bounds or misaligned: offset {offset}, size {size}, region {}",
            self.len
        );
        // SAFETY: `offset + size <= len`, so the result stays inside the mapping.
        unsafe { self.ptr.as_ptr().add(offset) }
    }

    /// The `AtomicU32` at `offset` (4-aligned).
    #[inline]
    pub(crate) fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        let p = self.at(offset, 4, 4);
        // SAFETY:
        // - in bounds and aligned (checked by `at`), inside a mapping that lives
        //   as long as `&self`.
        // - the memory is only ever accessed atomically or by explicit copies,
        //   never through a non-atomic reference.
        unsafe { AtomicU32::from_ptr(p.cast()) }
    }

    /// The `AtomicU64` at `offset` (8-aligned).
    #[inline]
    pub(crate) fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        let p = self.at(offset, 8, 8);
        // SAFETY: as for `atomic_u32`.
        unsafe { AtomicU64::from_ptr(p.cast()) }
    }

    /// The `AtomicU16` at `offset` (2-aligned).
    pub(crate) fn atomic_u16(&self, offset: usize) -> &AtomicU16 {
        let p = self.at(offset, 2, 2);
        // SAFETY: as for `atomic_u32`.
        unsafe { AtomicU16::from_ptr(p.cast()) }
    }

    /// The `AtomicU8` at `offset`.
    pub(crate) fn atomic_u8(&self, offset: usize) -> &AtomicU8 {
        let p = self.at(offset, 1, 1);
        // SAFETY: as for `atomic_u32`.
        unsafe { AtomicU8::from_ptr(p) }
    }
}

impl ShmRegion {
    /// Copies `src` into the region at `offset`.
    ///
    /// The caller's protocol must give it the bytes for the moment (another
    /// process writing them at the same time would leave a mix, never memory
    /// unsafety: these are plain byte copies, no reference is formed).
    pub(crate) fn copy_in(&self, offset: usize, src: &[u8]) {
        let p = self.at(offset, src.len(), 1);
        // SAFETY:
        // - `p..p + src.len()` is inside the mapping (checked by `at`), which
        //   lives as long as `&self`.
        // - `src` is ordinary memory of ours, so it cannot overlap the mapping.
        // - a raw byte copy: no Rust reference into the shared bytes exists.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p, src.len()) }
    }

    /// Copies `dst.len()` bytes at `offset` out of the region (see
    /// [`copy_in`](Self::copy_in) for what a concurrent writer means).
    pub(crate) fn copy_out(&self, offset: usize, dst: &mut [u8]) {
        let p = self.at(offset, dst.len(), 1);
        // SAFETY: as for `copy_in`, in the other direction.
        unsafe { std::ptr::copy_nonoverlapping(p, dst.as_mut_ptr(), dst.len()) }
    }
}

/// True when every bit pattern of `T` is a value: the integers, `f32`, `f64`.
pub(crate) fn is_plain<T: 'static>() -> bool {
    let t = TypeId::of::<T>();
    [
        TypeId::of::<u8>(),
        TypeId::of::<i8>(),
        TypeId::of::<u16>(),
        TypeId::of::<i16>(),
        TypeId::of::<u32>(),
        TypeId::of::<i32>(),
        TypeId::of::<u64>(),
        TypeId::of::<i64>(),
        TypeId::of::<usize>(),
        TypeId::of::<isize>(),
        TypeId::of::<f32>(),
        TypeId::of::<f64>(),
    ]
    .contains(&t)
}

impl ShmRegion {
    /// `len` elements of `T` from `offset` to the end of the mapping, as a
    /// slice to read and write in place. For the holder of the lock that
    /// every locked access to these bytes takes (an `Array`'s guard).
    ///
    /// `None` when `T` is not plain ([`is_plain`]) or this mapping already
    /// has a live view (a second guard of a re-entered `RLock`). While the
    /// view lives, every other access to its bytes through this mapping
    /// (atomics, copies) panics instead of aliasing it.
    ///
    /// # Panics
    ///
    /// When the elements do not fit the mapping or are misaligned.
    pub(crate) fn plain_view<T: Copy + 'static>(
        &self,
        offset: usize,
        len: usize,
    ) -> Option<PlainView<'_, T>> {
        if !is_plain::<T>() {
            return None;
        }
        let size = len.saturating_mul(size_of::<T>());
        let ptr = NonNull::new(self.bounded(offset, size, align_of::<T>()).cast::<T>())?;
        // SeqCst, then the count: see `element`. Accesses already announced
        // end in a few instructions (or refuse, seeing the view), so this
        // wait is short.
        self.view_from
            .compare_exchange(usize::MAX, offset, Ordering::SeqCst, Ordering::SeqCst)
            .ok()?;
        while self.accessors.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
        Some(PlainView {
            region: self,
            ptr,
            len,
        })
    }
}

/// Plain numbers in shared memory, borrowed in place: made by
/// [`ShmRegion::plain_view`], one per mapping at a time.
pub(crate) struct PlainView<'a, T> {
    /// The mapping (its `view_from` names this view).
    region: &'a ShmRegion,
    /// The first element (in bounds and aligned, checked when made).
    ptr: NonNull<T>,
    /// Number of elements.
    len: usize,
}

impl<T> Deref for PlainView<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY:
        // - `ptr..ptr + len` is inside the mapping, aligned for `T` (checked
        //   by `plain_view`), and the mapping outlives `'a`.
        // - `T` is a plain number (checked by `plain_view`): every bit pattern
        //   another process may have written is a valid `T`.
        // - no other reference aliases it: this is the mapping's only view;
        //   element accesses through this mapping (`element`) refuse its
        //   bytes while it lives, and it was made only once those in progress
        //   had ended. Other mappings of the memory (another process, or a
        //   second mapping in this one, e.g. an array sent to itself) reach
        //   it under the lock the view's maker holds or, lock-free (a raw
        //   array), as another process's writer would: they can leave other
        //   numbers, never make a reference dangle or a value invalid (the
        //   documented exception for shared memory, docs/design.md).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> DerefMut for PlainView<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as for `deref`; `&mut self` makes the slice unique within
        // this process.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for PlainView<'_, T> {
    fn drop(&mut self) {
        // Relaxed: see `ShmRegion::at`.
        self.region.view_from.store(usize::MAX, Ordering::Relaxed);
    }
}

impl<T> std::fmt::Debug for PlainView<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainView").field("len", &self.len).finish()
    }
}

impl Drop for ShmRegion {
    fn drop(&mut self) {
        // SAFETY:
        // - `ptr`/`len` are exactly the mapping made in `map`, and `&mut self`
        //   guarantees no reference into it is alive.
        // An error here would mean our own bookkeeping is wrong; nothing to do.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

/// Writes all of `bufs`, in order, at `offset` of the file `fd` (`pwritev`,
/// retrying short writes and `EINTR`).
///
/// # Errors
///
/// `ENOSPC`, `ENOMEM` (no memory for the pages), `EFBIG` past the file's end,
/// and the like.
pub(crate) fn write_all_at(fd: BorrowedFd<'_>, offset: u64, bufs: &[&[u8]]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
    let mut slices = &mut slices[..];
    // Drops leading empty slices, so that nothing to write is no `WriteZero`.
    IoSlice::advance_slices(&mut slices, 0);
    let mut off = offset;
    while !slices.is_empty() {
        match nix::sys::uio::pwritev(fd, slices, off as libc::off_t) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                off += n as u64;
                IoSlice::advance_slices(&mut slices, n);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Fills `buf` from `offset` of the file `fd` (`pread`, retrying short reads
/// and `EINTR`). A hole reads as zeros.
///
/// # Errors
///
/// `UnexpectedEof` past the file's end; the errors of `pread`.
pub(crate) fn read_exact_at(fd: BorrowedFd<'_>, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match nix::sys::uio::pread(fd, &mut buf[done..], (offset + done as u64) as libc::off_t) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => done += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Gives the memory of `len` bytes at `offset` of the file `fd` back to the
/// system (`fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`): whole
/// pages in the range are freed, partial ones zeroed, and the range reads as
/// zeros afterwards. The file keeps its size.
///
/// # Errors
///
/// `EOPNOTSUPP` on a file system without holes (a memfd has them).
pub(crate) fn punch_hole(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    use nix::fcntl::{FallocateFlags, fallocate};
    if len == 0 {
        return Ok(());
    }
    loop {
        match fallocate(
            fd,
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        ) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Bytes of memory the file `fd` holds (`st_blocks`), whatever its size.
#[cfg(test)]
pub(crate) fn allocated_bytes(fd: BorrowedFd<'_>) -> io::Result<u64> {
    Ok(nix::sys::stat::fstat(fd)?.st_blocks as u64 * 512)
}

/// A new sealed memfd holding exactly `bytes`: nobody can change, grow or
/// shrink it afterwards, so a receiver may trust its contents and length.
///
/// # Errors
///
/// `ENOMEM`, `EMFILE`, `ENOSPC` and the like.
pub(crate) fn sealed_bytes(bytes: &[u8]) -> io::Result<OwnedFd> {
    let fd = memfd_create(
        c"multiprocess-item",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )?;
    nix::unistd::ftruncate(&fd, bytes.len() as libc::off_t)?;
    let mut off = 0;
    while off < bytes.len() {
        match nix::sys::uio::pwrite(&fd, &bytes[off..], off as libc::off_t) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => off += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    seal_for_good(fd.as_fd(), SEAL_BUSY_PATIENCE)?;
    Ok(fd)
}

/// How long [`sealed_bytes`] keeps retrying a write seal that the kernel
/// refuses as busy.
const SEAL_BUSY_PATIENCE: Duration = Duration::from_secs(10);

/// Adds the write, shrink, grow and seal seals to `fd`, retrying `EBUSY` for up
/// to `patience`.
///
/// Before it grants `F_SEAL_WRITE` the kernel waits for every page of the file
/// to lose the references it does not expect (a writable mapping, or a pin
/// such as a DMA or `vmsplice` might hold); it gives up with `EBUSY` after
/// about 150 ms. The pages of a memfd just filled with `pwrite` are never
/// mapped nor pinned, but for a moment they still carry references the
/// kernel's own page bookkeeping takes (LRU batches and the like), and on a
/// loaded machine those can outlast the 150 ms: a one-off `EBUSY` there says
/// nothing about the file, so it is retried.
fn seal_for_good(fd: BorrowedFd<'_>, patience: Duration) -> io::Result<()> {
    let start = Instant::now();
    loop {
        match fcntl(
            fd,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_WRITE
                    | SealFlag::F_SEAL_SHRINK
                    | SealFlag::F_SEAL_GROW
                    | SealFlag::F_SEAL_SEAL,
            ),
        ) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            // The kernel has already waited its ~150 ms (or the file is
            // mapped, which would fail at once): a short pause keeps a lasting
            // cause from turning this into a busy loop.
            Err(nix::errno::Errno::EBUSY) if start.elapsed() < patience => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads back a memfd made by [`sealed_bytes`], checking that it is sealed and
/// `expected` bytes long.
///
/// # Errors
///
/// `InvalidData` for an unsealed fd or another length; the errors of `pread`.
pub(crate) fn read_sealed(fd: BorrowedFd<'_>, expected: usize) -> io::Result<Vec<u8>> {
    let st = nix::sys::stat::fstat(fd)?;
    let seals = fcntl(fd, FcntlArg::F_GET_SEALS)?;
    let needed = (SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW).bits();
    if seals & needed != needed || st.st_size < 0 || st.st_size as usize != expected {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "out-of-band item is not a sealed memfd of the announced length",
        ));
    }
    let mut buf = vec![0u8; expected];
    let mut off = 0;
    while off < expected {
        match nix::sys::uio::pread(fd, &mut buf[off..], off as libc::off_t) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => off += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn two_mappings_share_memory() {
        let a = ShmRegion::create(4096).unwrap();
        let b = ShmRegion::from_fd(a.fd().try_clone_to_owned().unwrap()).unwrap();
        a.atomic_u32(8).store(77, Ordering::SeqCst);
        assert_eq!(b.atomic_u32(8).load(Ordering::SeqCst), 77);
        b.atomic_u64(64).store(u64::MAX - 1, Ordering::SeqCst);
        assert_eq!(a.atomic_u64(64).load(Ordering::SeqCst), u64::MAX - 1);
    }

    #[test]
    fn sealed_bytes_round_trip_and_stay_sealed() {
        let fd = sealed_bytes(b"payload").unwrap();
        assert_eq!(read_sealed(fd.as_fd(), 7).unwrap(), b"payload");
        assert!(read_sealed(fd.as_fd(), 8).is_err());
        assert!(nix::unistd::write(&fd, b"x").is_err());
    }

    /// A memfd of one page, sealed against shrinking and growing (so it may
    /// be mapped) but not yet against writing, and a writable shared mapping
    /// of it: what makes the kernel refuse `F_SEAL_WRITE` with `EBUSY`.
    fn mapped_unsealed_memfd() -> (OwnedFd, ShmRegion) {
        let fd = memfd_create(c"t", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).unwrap();
        nix::unistd::ftruncate(&fd, 4096).unwrap();
        fcntl(
            &fd,
            FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW),
        )
        .unwrap();
        let dup = fd.try_clone().unwrap();
        (dup, ShmRegion::map(fd, 4096).unwrap())
    }

    #[test]
    fn write_seal_waits_out_a_busy_file() {
        let (fd, region) = mapped_unsealed_memfd();
        let start = Instant::now();
        let unmapper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(region);
        });
        seal_for_good(fd.as_fd(), Duration::from_secs(30)).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(100));
        unmapper.join().unwrap();
        assert!(nix::unistd::write(&fd, b"x").is_err());
    }

    #[test]
    fn write_seal_gives_up_on_a_lasting_cause() {
        let (fd, _region) = mapped_unsealed_memfd();
        let err = seal_for_good(fd.as_fd(), Duration::from_millis(50)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBUSY));
    }

    #[test]
    fn a_sparse_region_maps_a_prefix_and_gives_pages_back() {
        let r = ShmRegion::create_sparse(c"t", 64, 1 << 40).unwrap();
        assert_eq!(r.len(), 64);
        assert_eq!(r.file_len().unwrap(), 1 << 40);
        let other = ShmRegion::from_fd_prefix(r.fd().try_clone_to_owned().unwrap(), 64).unwrap();
        r.atomic_u32(0).store(5, Ordering::SeqCst);
        assert_eq!(other.atomic_u32(0).load(Ordering::SeqCst), 5);
        assert!(ShmRegion::from_fd_prefix(r.fd().try_clone_to_owned().unwrap(), 0).is_err());
        // Far out in the file: only the pages written cost memory.
        let at = (1 << 39) + 4000;
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        write_all_at(r.fd(), at, &[b"head", &data]).unwrap();
        let held = allocated_bytes(r.fd()).unwrap();
        assert!((100_000..=120_000).contains(&held), "{held}");
        let mut back = vec![0u8; 100_004];
        read_exact_at(other.fd(), at, &mut back).unwrap();
        assert_eq!(&back[..4], b"head");
        assert_eq!(&back[4..], &data[..]);
        punch_hole(r.fd(), at - 4000, 200_000).unwrap();
        // What is left: the mapped page written through the atomic above.
        assert_eq!(allocated_bytes(r.fd()).unwrap(), 4096);
        read_exact_at(r.fd(), at, &mut back).unwrap();
        assert!(back.iter().all(|&b| b == 0));
        assert!(read_exact_at(r.fd(), 1 << 40, &mut back).is_err());
    }

    #[test]
    fn foreign_fds_are_refused() {
        let (r, _w) = crate::platform::fd::pipe().unwrap();
        assert!(ShmRegion::from_fd(r).is_err());
    }

    #[test]
    fn regions_are_not_named() {
        let before = std::fs::read_dir("/dev/shm")
            .map(|d| d.count())
            .unwrap_or(0);
        let r = ShmRegion::create(1 << 20).unwrap();
        assert_eq!(r.len(), 1 << 20);
        let after = std::fs::read_dir("/dev/shm")
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(before, after);
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn out_of_bounds_access_panics() {
        let r = ShmRegion::create(16).unwrap();
        r.atomic_u64(16);
    }

    #[test]
    fn a_plain_view_is_the_memory_and_the_only_way_in() {
        let r = ShmRegion::create(64).unwrap();
        r.atomic_u64(0).store(5, Ordering::Relaxed);
        assert!(r.plain_view::<bool>(8, 2).is_none(), "not plain");
        assert!(r.plain_view::<char>(8, 2).is_none(), "not plain");
        let mut v = r.plain_view::<u64>(8, 7).unwrap();
        v[0] = 42;
        v[6] = 7;
        assert!(r.plain_view::<u64>(8, 7).is_none(), "one view at a time");
        assert_eq!(
            r.atomic_u64(0).load(Ordering::Relaxed),
            5,
            "before the view: free"
        );
        let inside = std::panic::catch_unwind(|| r.atomic_u64(8).load(Ordering::Relaxed));
        assert!(inside.is_err(), "the view's bytes are refused to atomics");
        drop(v);
        assert_eq!(r.atomic_u64(8).load(Ordering::Relaxed), 42);
        assert_eq!(r.atomic_u64(56).load(Ordering::Relaxed), 7);
        assert!(
            r.plain_view::<u64>(8, 7).is_some(),
            "free again after the drop"
        );
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn a_plain_view_past_the_end_panics() {
        let r = ShmRegion::create(16).unwrap();
        let _ = r.plain_view::<u64>(8, 2);
    }
}
