//! Python's `multiprocessing.shared_memory`: blocks of shared memory with a
//! name, wire-compatible with CPython's.
//!
//! | Python | Rust |
//! |---|---|
//! | `SharedMemory(create=True, size=n)` | [`SharedMemory::create`]`(None, n)` |
//! | `SharedMemory(name, create=True, size=n, track=False)` (3.13) | [`SharedMemory::create_untracked`]`(Some(name), n)` |
//! | `SharedMemory(name)` | [`SharedMemory::attach`]`(name)` |
//! | `shm.name`, `shm.size` | [`SharedMemory::name`], [`SharedMemory::size`] |
//! | `shm.buf` | [`SharedMemory::as_slice`], [`as_mut_slice`](SharedMemory::as_mut_slice), [`view`](SharedMemory::view)`::<f64>()`, [`read_at`](SharedMemory::read_at), [`write_at`](SharedMemory::write_at) |
//! | `shm.close()`, `shm.unlink()` | [`SharedMemory::close`], [`SharedMemory::unlink`] |
//! | `resource_tracker.unregister(shm._name, "shared_memory")` | [`SharedMemory::untrack`] |
//! | `ShareableList([1, 2.0, "a", b"b", None, True])` | [`ShareableList::new`]`(&[1.into(), 2.0.into(), "a".into(), ...])` |
//! | `ShareableList(name=name)` | [`ShareableList::attach`] |
//! | `SharedMemoryManager` | [`SharedMemoryManager`] |
//!
//! A block made by [`SharedMemory::create`] is unlinked when the program
//! ends, even if all its processes are killed, unless handed off; a block
//! attached to is never unlinked unless asked. See
//! [Ownership](SharedMemory#ownership).
//!
//! # Examples
//!
//! A child sums an array the parent filled, in place (a `SharedMemory`
//! travels to the child by name, as CPython pickles it):
//!
//! ```
//! use multiprocess as mp;
//! use mp::shared_memory::SharedMemory;
//!
//! fn main() -> mp::Result<()> {
//!     mp::init();
//!     let mut shm = SharedMemory::create(None, 1000 * 8)?;
//!     for (i, x) in shm.view_mut::<f64>()?.iter_mut().enumerate() {
//!         *x = i as f64;
//!     }
//!     let (ours, theirs) = mp::pipe(true)?;
//!     let mut p = mp::Process::new(|(shm, conn): (SharedMemory, mp::Connection)| {
//!         let sum: f64 = shm.view::<f64>().unwrap().iter().sum();
//!         conn.send(&sum).unwrap();
//!     }, (SharedMemory::attach(shm.name())?, theirs));
//!     p.start()?;
//!     assert_eq!(ours.recv::<f64>()?, 499_500.0);
//!     p.join()?;
//!     shm.unlink()
//! }
//! ```

mod block;
mod list;
mod manager;
pub(crate) mod tracker;

pub use block::{Plain, SharedMemory};
pub use list::{Item, ShareableList};
pub use manager::SharedMemoryManager;
