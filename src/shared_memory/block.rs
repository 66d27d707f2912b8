//! [`SharedMemory`]: a block of POSIX shared memory with a name.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::tracker;
use crate::error::{Error, Result};
use crate::platform::named_shm::{self, Mapping};
use crate::platform::spawn::random_bytes;

pub use crate::platform::named_shm::Plain;

/// CPython's prefix of a random name (`_SHM_NAME_PREFIX`, without its `/`).
const NAME_PREFIX: &str = "psm_";
/// CPython's `_SHM_SAFE_NAME_LENGTH`: a random name, with its `/`, is this
/// long (the shortest limit of the systems CPython supports).
const SAFE_NAME_LENGTH: usize = 14;
/// Longest name glibc's `shm_open` accepts (`NAME_MAX - 1` bytes after the
/// leading slashes).
const MAX_NAME: usize = 254;
/// Permissions of a new block: CPython's default `mode=0o600`.
const MODE: u32 = 0o600;

/// A block of shared memory with a name, which any process (ours, a CPython
/// one, an unrelated program) attaches to by that name.
///
/// Python: `multiprocessing.shared_memory.SharedMemory`. The block lives in
/// /dev/shm under CPython's rules: the same names (`psm_` and 8 random hex
/// digits when none is given), the same size (what `create` asked for; an
/// attach reads it with `fstat`), the same bytes.
///
/// # Ownership
///
/// A block made by [`create`](Self::create) is *tracked*: it is unlinked when
/// this program ends (its last process exits, normally or killed with
/// SIGKILL), unless it was unlinked before or handed off with
/// [`untrack`](Self::untrack) (or made with
/// [`create_untracked`](Self::create_untracked)); CPython 3.13's `track=`.
/// A block [`attach`](Self::attach)ed to is never unlinked by us unless
/// [`unlink`](Self::unlink) is called. Dropping a `SharedMemory` (or
/// [`close`](Self::close)) unmaps it in this process only.
///
/// # Reaching the bytes
///
/// [`read_at`](Self::read_at) and [`write_at`](Self::write_at) copy.
/// [`as_slice`](Self::as_slice), [`as_mut_slice`](Self::as_mut_slice),
/// [`view`](Self::view) and [`view_mut`](Self::view_mut) borrow the mapping
/// in place, as `memoryview`/numpy do in CPython. Within this process the
/// borrow rules hold for this handle (`&self` views, `&mut self` writes).
/// Other processes, and other handles on the same name, are outside them:
/// while you hold a view, they may write the bytes, and you then see old,
/// new or (for elements wider than the hardware writes at once) mixed
/// values. Views exist only for [`Plain`] types (integers and floats), for
/// which every bit pattern is a valid value, so that is never undefined
/// behaviour of the values themselves; coordinate writers with a
/// [`Lock`](crate::Lock) or a protocol, as with numpy arrays in CPython.
///
/// A block is not sealed: a foreign process that shrinks it with `ftruncate`
/// makes our accesses to the lost pages fault (SIGBUS), as CPython's do.
///
/// # Examples
///
/// ```
/// use multiprocess::shared_memory::SharedMemory;
/// let mut shm = SharedMemory::create(None, 10)?;
/// shm.write_at(0, b"hello")?;
/// let other = SharedMemory::attach(shm.name())?; // CPython: SharedMemory(name)
/// assert_eq!(other.size(), 10);
/// assert_eq!(&other.as_slice()?[..5], b"hello");
/// shm.unlink()?;
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct SharedMemory {
    /// The name as CPython's `.name` reports it: as given, or `psm_...`.
    name: String,
    /// The POSIX name handed to `shm_open`: `/` + `name`.
    path: String,
    /// The mapping, until `close`.
    map: Option<Mapping>,
    /// Size in bytes.
    size: usize,
    /// Registered with the tracker by this handle and not yet handed off or
    /// unlinked.
    tracked: AtomicBool,
}

impl SharedMemory {
    /// Creates a new block of `size` bytes, zero-filled, named `name` or, for
    /// `None`, `psm_` and 8 random hex digits (CPython's names). The block is
    /// tracked (see [Ownership](Self#ownership)).
    ///
    /// Python: `SharedMemory(name, create=True, size=size)`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for `size == 0` (CPython: `ValueError("'size' must be
    /// a positive number different from zero")`) or a name `shm_open`
    /// refuses (empty, with a `/` after the leading ones, longer than 254
    /// bytes, with a NUL); [`Error::Io`] of kind `AlreadyExists` when the name
    /// is taken (CPython: `FileExistsError`), of other kinds when the system
    /// has no room; [`Error::Spawn`] when the tracker cannot start (`init()`
    /// was not called).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::shared_memory::SharedMemory;
    /// let shm = SharedMemory::create(None, 10)?;
    /// assert!(shm.name().starts_with("psm_") && shm.name().len() == 12);
    /// assert_eq!(shm.size(), 10);
    /// assert!(SharedMemory::create(None, 0).is_err());
    /// shm.unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn create(name: Option<&str>, size: usize) -> Result<SharedMemory> {
        Self::create_with(name, size, true)
    }

    /// [`create`](Self::create) without tracking: the block outlives this
    /// program until someone unlinks it (a hand-off to another program).
    ///
    /// Python 3.13: `SharedMemory(name, create=True, size=size, track=False)`.
    ///
    /// # Errors
    ///
    /// As [`create`](Self::create), but never [`Error::Spawn`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::shared_memory::SharedMemory;
    /// let shm = SharedMemory::create_untracked(None, 4096)?;
    /// assert!(!shm.is_tracked());
    /// shm.unlink()?; // nobody else will
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn create_untracked(name: Option<&str>, size: usize) -> Result<SharedMemory> {
        Self::create_with(name, size, false)
    }

    fn create_with(name: Option<&str>, size: usize, track: bool) -> Result<SharedMemory> {
        if size == 0 {
            return Err(Error::value(
                "'size' must be a positive number different from zero",
            ));
        }
        let (name, fd) = match name {
            Some(name) => {
                let path = path_of(name)?;
                let fd =
                    named_shm::create(&path, size as u64, MODE).map_err(|e| os_error(e, name))?;
                // Registered once made: a crash between the two leaks this
                // block, where registering first could unlink the block of
                // someone else who holds the name.
                if track {
                    if let Err(e) = tracker::register(&path) {
                        let _ = named_shm::unlink(&path);
                        return Err(e);
                    }
                }
                (name.to_owned(), fd)
            }
            None => loop {
                let name = random_name()?;
                let path = format!("/{name}");
                // A fresh random name is nobody's: registered first, so no
                // crash can leak the block.
                if track {
                    tracker::register(&path)?;
                }
                match named_shm::create(&path, size as u64, MODE) {
                    Ok(fd) => break (name, fd),
                    Err(e) => {
                        if track {
                            tracker::unregister(&path);
                        }
                        if e.kind() != io::ErrorKind::AlreadyExists {
                            return Err(os_error(e, &name));
                        }
                    }
                }
            },
        };
        let path = format!("/{name}");
        let map = match Mapping::new(&fd, size) {
            Ok(m) => m,
            Err(e) => {
                let _ = named_shm::unlink(&path);
                if track {
                    tracker::unregister(&path);
                }
                return Err(e.into());
            }
        };
        Ok(SharedMemory {
            name,
            path,
            map: Some(map),
            size,
            tracked: AtomicBool::new(track),
        })
    }

    /// Attaches to the existing block `name`, whatever made it (a CPython
    /// process, another program). Its size is the block's (`fstat`). Never
    /// tracked: it is unlinked only if [`unlink`](Self::unlink) is called.
    ///
    /// Python: `SharedMemory(name)`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] of kind `NotFound` when no such block exists (CPython:
    /// `FileNotFoundError`), `PermissionDenied`; [`Error::Value`] for a bad
    /// name or an empty block (CPython: `ValueError("cannot mmap an empty
    /// file")`).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::shared_memory::SharedMemory;
    /// let shm = SharedMemory::create(None, 100)?;
    /// let other = SharedMemory::attach(shm.name())?;
    /// assert_eq!(other.size(), 100);
    /// assert!(!other.is_tracked());
    /// shm.unlink()?;
    /// assert!(SharedMemory::attach(shm.name()).is_err());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn attach(name: &str) -> Result<SharedMemory> {
        let path = path_of(name)?;
        let (fd, size) = named_shm::open(&path).map_err(|e| os_error(e, name))?;
        let size = usize::try_from(size).map_err(|_| Error::value("block too large to map"))?;
        if size == 0 {
            return Err(Error::value("cannot mmap an empty file"));
        }
        let map = Mapping::new(&fd, size)?;
        Ok(SharedMemory {
            name: name.to_owned(),
            path,
            map: Some(map),
            size,
            tracked: AtomicBool::new(false),
        })
    }

    /// The block's name, for [`attach`](Self::attach) (here or in CPython).
    ///
    /// Python: `shm.name`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::shared_memory::SharedMemory;
    /// let shm = SharedMemory::create(Some("mp_doc_name"), 1)?;
    /// assert_eq!(shm.name(), "mp_doc_name");
    /// shm.unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Size in bytes: what [`create`](Self::create) asked for, or the block's
    /// size at [`attach`](Self::attach) (Linux rounds nothing).
    ///
    /// Python: `shm.size`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::shared_memory::SharedMemory;
    /// let shm = SharedMemory::create(None, 10)?;
    /// assert_eq!(shm.size(), 10);
    /// shm.unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn size(&self) -> usize {
        self.size
    }

    fn map(&self) -> Result<&Mapping> {
        self.map.as_ref().ok_or(Error::Closed)
    }

    fn map_mut(&mut self) -> Result<&mut Mapping> {
        self.map.as_mut().ok_or(Error::Closed)
    }

    /// Copies `buf.len()` bytes at `offset` into `buf`.
    ///
    /// Python: `buf[:] = shm.buf[offset:offset + len(buf)]`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] (`InvalidInput`) when the range passes the end;
    /// [`Error::Closed`] after [`close`](Self::close).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::shared_memory::SharedMemory;
    /// let mut shm = SharedMemory::create(None, 8)?;
    /// shm.write_at(2, &[7, 8])?;
    /// let mut two = [0u8; 2];
    /// shm.read_at(2, &mut two)?;
    /// assert_eq!(two, [7, 8]);
    /// assert!(shm.read_at(7, &mut two).is_err());
    /// shm.unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        Ok(self.map()?.copy_out(offset, buf)?)
    }

    /// Copies `data` into the block at `offset`.
    ///
    /// Python: `shm.buf[offset:offset + len(data)] = data`.
    ///
    /// # Errors
    ///
    /// As [`read_at`](Self::read_at).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::shared_memory::SharedMemory;
    /// let mut shm = SharedMemory::create(None, 4)?;
    /// shm.write_at(0, b"abcd")?;
    /// assert!(shm.write_at(1, b"abcd").is_err());
    /// assert_eq!(shm.as_slice()?, b"abcd");
    /// shm.unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn write_at(&mut self, offset: usize, data: &[u8]) -> Result<()> {
        Ok(self.map_mut()?.copy_in(offset, data)?)
    }

    /// The whole block, in place (see [Reaching the bytes](Self#reaching-the-bytes)).
    ///
    /// Python: `shm.buf`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after [`close`](Self::close).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::shared_memory::SharedMemory;
    /// let shm = SharedMemory::create(None, 3)?;
    /// assert_eq!(shm.as_slice()?, &[0, 0, 0]);
    /// shm.unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn as_slice(&self) -> Result<&[u8]> {
        Ok(self.map()?.view())
    }

    /// The whole block, in place and writable (see
    /// [Reaching the bytes](Self#reaching-the-bytes)).
    ///
    /// Python: `shm.buf`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after [`close`](Self::close).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::shared_memory::SharedMemory;
    /// let mut shm = SharedMemory::create(None, 3)?;
    /// shm.as_mut_slice()?.copy_from_slice(b"xyz");
    /// assert_eq!(shm.as_slice()?, b"xyz");
    /// shm.unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn as_mut_slice(&mut self) -> Result<&mut [u8]> {
        Ok(self.map_mut()?.view_mut())
    }

    /// The block as a slice of `T` (its size rounded down to whole `T`s), in
    /// place: numpy's `np.ndarray(n, dtype, buffer=shm.buf)`, or
    /// `shm.buf.cast('d')`. The block starts page aligned, so any `T` fits.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after [`close`](Self::close).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::shared_memory::SharedMemory;
    /// let mut shm = SharedMemory::create(None, 3 * 8)?;
    /// shm.view_mut::<f64>()?.copy_from_slice(&[1.0, 2.0, 3.5]);
    /// assert_eq!(shm.view::<f64>()?.iter().sum::<f64>(), 6.5);
    /// shm.unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn view<T: Plain>(&self) -> Result<&[T]> {
        Ok(self.map()?.view())
    }

    /// [`view`](Self::view), writable.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after [`close`](Self::close).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::shared_memory::SharedMemory;
    /// let mut shm = SharedMemory::create(None, 16)?;
    /// shm.view_mut::<u32>()?[3] = 0x0403_0201;
    /// assert_eq!(&shm.as_slice()?[12..], &[1, 2, 3, 4]);
    /// shm.unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn view_mut<T: Plain>(&mut self) -> Result<&mut [T]> {
        Ok(self.map_mut()?.view_mut())
    }

    /// Unmaps the block in this process (the block itself stays). Idempotent;
    /// dropping does the same.
    ///
    /// Python: `shm.close()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::shared_memory::SharedMemory;
    /// let mut shm = SharedMemory::create(None, 8)?;
    /// shm.close();
    /// assert!(matches!(shm.as_slice(), Err(multiprocess::Error::Closed)));
    /// shm.unlink()?; // still possible after close, as in CPython
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn close(&mut self) {
        self.map = None;
    }

    /// Removes the block's name: nobody can attach any more, and the memory
    /// goes when the last process unmaps it. Call it once, from one process,
    /// whichever made the block. Also tells this program's tracker to forget
    /// the name.
    ///
    /// Python: `shm.unlink()`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] of kind `NotFound` when the name is already gone
    /// (CPython: `FileNotFoundError`).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::shared_memory::SharedMemory;
    /// let shm = SharedMemory::create(None, 8)?;
    /// shm.unlink()?;
    /// assert!(shm.unlink().is_err());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn unlink(&self) -> Result<()> {
        self.tracked.store(false, Ordering::Relaxed);
        Self::unlink_name(&self.name)
    }

    /// Unlinks the block `name` and has the tracker forget it: whoever
    /// registered it (this process or another of the program), the name must
    /// not be unlinked again at the end, when it may be someone else's.
    pub(crate) fn unlink_name(name: &str) -> Result<()> {
        let path = path_of(name)?;
        let res = named_shm::unlink(&path).map_err(|e| os_error(e, name));
        tracker::unregister(&path);
        res
    }

    /// Hands the block off: it is no longer unlinked when this program ends.
    /// Someone (another program, a later run) must [`unlink`](Self::unlink)
    /// it.
    ///
    /// Python 3.13: `resource_tracker.unregister(shm._name, "shared_memory")`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::shared_memory::SharedMemory;
    /// let shm = SharedMemory::create(None, 8)?;
    /// shm.untrack();
    /// assert!(!shm.is_tracked());
    /// shm.unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn untrack(&self) {
        self.tracked.store(false, Ordering::Relaxed);
        tracker::unregister(&self.path);
    }

    /// True when this handle created the block tracked and has not unlinked
    /// or handed it off.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::shared_memory::SharedMemory;
    /// let shm = SharedMemory::create(None, 8)?;
    /// assert!(shm.is_tracked());
    /// shm.unlink()?;
    /// assert!(!shm.is_tracked());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn is_tracked(&self) -> bool {
        self.tracked.load(Ordering::Relaxed)
    }
}

/// `psm_` and 8 random hex digits: CPython's `_make_filename()`.
fn random_name() -> Result<String> {
    let mut bytes = [0u8; (SAFE_NAME_LENGTH - 1 - NAME_PREFIX.len()) / 2];
    random_bytes(&mut bytes)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{NAME_PREFIX}{hex}"))
}

/// The POSIX name for `name` (CPython prepends a `/`), checked as glibc's
/// `shm_open` checks it, for a clear error instead of `EINVAL`.
fn path_of(name: &str) -> Result<String> {
    let bare = name.trim_start_matches('/');
    if bare.is_empty() || bare.contains('/') || bare.contains('\0') || bare.len() > MAX_NAME {
        return Err(Error::value(format!(
            "invalid shared memory name {name:?}: it must be 1 to {MAX_NAME} bytes without '/' \
             (after leading ones) or NUL"
        )));
    }
    Ok(format!("/{name}"))
}

/// An OS error naming the block, as CPython's `FileNotFoundError: [Errno 2]
/// No such file or directory: '/name'`.
fn os_error(e: io::Error, name: &str) -> Error {
    Error::Io(io::Error::new(e.kind(), format!("{e}: {name:?}")))
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("name", &self.name)
            .field("size", &self.size)
            .field("tracked", &self.is_tracked())
            .finish()
    }
}

/// Travels by name, as CPython pickles it: the receiver attaches (untracked).
impl Serialize for SharedMemory {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.name.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        SharedMemory::attach(&name).map_err(D::Error::custom)
    }
}
