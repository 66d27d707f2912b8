//! Named POSIX shared memory (`shm_open` under /dev/shm), as CPython's
//! `multiprocessing.shared_memory` uses it, and the shared mapping of such a
//! block.
//!
//! Unlike the memfds of [`shm`](super::shm), a named block outlives its
//! processes until someone unlinks it, and it cannot be sealed: another
//! process (a CPython one, say) may `ftruncate` it under our mapping, after
//! which touching the lost pages raises SIGBUS, exactly as it does for
//! CPython and numpy. Every process that follows the `SharedMemory` API
//! (ours and CPython's) never resizes a block after creating it.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap, shm_open, shm_unlink};
use nix::sys::stat::Mode;

/// Creates the block `name` (a `/`-prefixed POSIX name) of `size` bytes with
/// permissions `mode`, failing with `EEXIST` if it exists: `O_CREAT | O_EXCL
/// | O_RDWR`, then `ftruncate`. A block whose `ftruncate` fails is unlinked
/// again, so nothing half-made stays behind.
///
/// # Errors
///
/// `EEXIST`, `EACCES`, `EINVAL` (a bad name), `ENOSPC`/`EFBIG` (no room).
pub(crate) fn create(name: &str, size: u64, mode: u32) -> io::Result<OwnedFd> {
    let fd = retry(|| {
        shm_open(
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
    })?;
    let size = i64::try_from(size).map_err(|_| io::Error::from(Errno::EFBIG))?;
    if let Err(e) = retry(|| nix::unistd::ftruncate(&fd, size)) {
        let _ = shm_unlink(name);
        return Err(e);
    }
    Ok(fd)
}

/// Opens the existing block `name` for reading and writing, with its size
/// (`fstat`).
///
/// # Errors
///
/// `ENOENT` when no such block exists, `EACCES`, `EINVAL`.
pub(crate) fn open(name: &str) -> io::Result<(OwnedFd, u64)> {
    let fd = retry(|| shm_open(name, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty()))?;
    let st = nix::sys::stat::fstat(&fd)?;
    Ok((fd, st.st_size.max(0) as u64))
}

/// Removes the name `name`; the memory goes when the last mapping does.
///
/// # Errors
///
/// `ENOENT` when no such block exists, `EACCES`.
pub(crate) fn unlink(name: &str) -> io::Result<()> {
    retry(|| shm_unlink(name))
}

/// Retries `f` on `EINTR`.
fn retry<T>(mut f: impl FnMut() -> nix::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(Errno::EINTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// A read-write shared mapping of a whole named block.
///
/// Another process may write the bytes at any time; see the methods for what
/// that means for each kind of access.
#[derive(Debug)]
pub(crate) struct Mapping {
    /// Start of the mapping (page aligned).
    ptr: NonNull<u8>,
    /// Length in bytes (> 0).
    len: usize,
}

// SAFETY:
// - the mapping is plain shared memory owned by this value; reaching it from
//   another thread is no different from reaching it from another process.
// - shared access (`&Mapping`) only reads (copies and `&[T]` views of plain
//   data); every write and the unmap in `Drop` need `&mut Mapping`: the
//   usual rules of `Vec<u8>`.
unsafe impl Send for Mapping {}
// SAFETY: as for `Send`.
unsafe impl Sync for Mapping {}

mod sealed {
    /// Keeps [`Plain`](super::Plain) to the types listed here.
    pub trait Sealed {}
}

/// A type every bit pattern of which is a valid value, with no padding: the
/// integers and floats. What an in-place view of shared memory may be made
/// of, since another process can write any bits into it. Sealed.
///
/// # Examples
///
/// ```
/// fn total<T: multiprocess::shared_memory::Plain + Into<f64>>(xs: &[T]) -> f64 {
///     xs.iter().map(|&x| x.into()).sum()
/// }
/// assert_eq!(total(&[1.5f32, 2.5]), 4.0);
/// ```
pub trait Plain: sealed::Sealed + Copy + Send + Sync + 'static {}

macro_rules! plain {
    ($($t:ty)*) => {$(
        impl sealed::Sealed for $t {}
        impl Plain for $t {}
    )*};
}

plain!(u8 i8 u16 i16 u32 i32 u64 i64 usize isize f32 f64);

impl Mapping {
    /// Maps the first `len` bytes (at least 1) of `fd`, shared and writable.
    ///
    /// # Errors
    ///
    /// `EINVAL` for `len == 0` ("cannot mmap an empty file", as CPython says);
    /// `ENOMEM`, `EACCES` from mmap.
    pub(crate) fn new(fd: &OwnedFd, len: usize) -> io::Result<Mapping> {
        let size = std::num::NonZeroUsize::new(len).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "cannot mmap an empty file")
        })?;
        // SAFETY:
        // - a fresh shared mapping at an address the kernel picks, so it
        //   overlaps no Rust object.
        // - the file holds `len` bytes (its creator sized it, or fstat said
        //   so); a foreign process shrinking it later is the documented SIGBUS
        //   case of named shared memory, shared with CPython.
        let ptr = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd.as_fd(),
                0,
            )?
        };
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Checks that `offset..offset + n` lies in the mapping.
    fn check(&self, offset: usize, n: usize) -> io::Result<()> {
        match offset.checked_add(n) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{n} bytes at offset {offset} do not fit in a block of {} bytes",
                    self.len
                ),
            )),
        }
    }

    /// Copies `src` into the mapping at `offset`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` when the range does not fit.
    pub(crate) fn copy_in(&mut self, offset: usize, src: &[u8]) -> io::Result<()> {
        self.check(offset, src.len())?;
        // SAFETY:
        // - `offset + src.len() <= len` (checked), so the destination is in
        //   the mapping, which lives as long as `&mut self`.
        // - `&mut self`: no view of this mapping is alive in this process, so
        //   `src` is not one and nothing we hand out sees the bytes change.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(offset), src.len())
        }
        Ok(())
    }

    /// Copies `dst.len()` bytes at `offset` out of the mapping.
    ///
    /// # Errors
    ///
    /// `InvalidInput` when the range does not fit.
    pub(crate) fn copy_out(&self, offset: usize, dst: &mut [u8]) -> io::Result<()> {
        self.check(offset, dst.len())?;
        // SAFETY: as for `copy_in`, in the other direction; `dst` is an
        // exclusive borrow, so it is no view of the mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                dst.as_mut_ptr(),
                dst.len(),
            )
        }
        Ok(())
    }

    /// The whole mapping as `[T]` (its length rounded down to whole `T`s).
    pub(crate) fn view<T: Plain>(&self) -> &[T] {
        // SAFETY:
        // - the mapping is page aligned, so aligned for any `T`, and the
        //   slice covers `len / size_of::<T>()` whole elements inside it.
        // - `T: Plain`: every bit pattern is a valid `T`, so whatever another
        //   process writes, the slice holds valid values.
        // - within this process the borrow of `&self` keeps every write of
        //   ours away (`copy_in` and `view_mut` need `&mut self`). Writers
        //   outside Rust's knowledge (another process, another mapping of the
        //   same block) give stale or torn values (documented on the public
        //   API), never an invalid one.
        unsafe {
            std::slice::from_raw_parts(self.ptr.as_ptr().cast::<T>(), self.len / size_of::<T>())
        }
    }

    /// The whole mapping as `&mut [T]` (see [`view`](Self::view)).
    pub(crate) fn view_mut<T: Plain>(&mut self) -> &mut [T] {
        // SAFETY: as for `view`; `&mut self` makes this the only view of the
        // mapping in this process for its lifetime.
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.as_ptr().cast::<T>(), self.len / size_of::<T>())
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `new`, and
        // `&mut self` means no view of it is alive. An error would mean our
        // bookkeeping is wrong; nothing to do about it here.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}
