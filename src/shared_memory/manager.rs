//! [`SharedMemoryManager`]: blocks whose lifetime is the manager's.

use crate::util::Unpoison;
use std::sync::Mutex;

use super::{Item, ShareableList, SharedMemory};
use crate::error::Result;

/// Creates blocks and lists and unlinks all of them at
/// [`shutdown`](Self::shutdown) (or when dropped): one owner for a group of
/// blocks.
///
/// Python: `multiprocessing.managers.SharedMemoryManager`. CPython's runs a
/// server process that records the names; here the manager records them in
/// the process that owns it (the blocks are shared with any process by name,
/// as in CPython), and the program's tracker still unlinks them if this
/// process is killed before its shutdown.
///
/// # Examples
///
/// ```
/// use multiprocess::SharedMemoryManager;
/// use multiprocess::shared_memory::SharedMemory;
/// let smm = SharedMemoryManager::new();
/// let shm = smm.shared_memory(128)?;
/// let list = smm.shareable_list(&[1.into(), "two".into()])?;
/// let name = shm.name().to_owned();
/// smm.shutdown()?; // unlinks both
/// assert!(SharedMemory::attach(&name).is_err());
/// # drop(list);
/// # Ok::<(), multiprocess::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct SharedMemoryManager {
    /// The names of the blocks made and not yet unlinked.
    names: Mutex<Vec<String>>,
}

impl SharedMemoryManager {
    /// A manager with no blocks yet.
    ///
    /// Python: `SharedMemoryManager()` then `start()`.
    ///
    /// # Examples
    ///
    /// ```
    /// let smm = multiprocess::SharedMemoryManager::new();
    /// smm.shutdown()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new() -> SharedMemoryManager {
        SharedMemoryManager::default()
    }

    fn names(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.names.lock().unpoison()
    }

    /// A new block of `size` bytes with a random name, unlinked at shutdown.
    ///
    /// Python: `smm.SharedMemory(size)`.
    ///
    /// # Errors
    ///
    /// As [`SharedMemory::create`].
    ///
    /// # Examples
    ///
    /// ```
    /// let smm = multiprocess::SharedMemoryManager::new();
    /// assert_eq!(smm.shared_memory(10)?.size(), 10);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn shared_memory(&self, size: usize) -> Result<SharedMemory> {
        let shm = SharedMemory::create(None, size)?;
        self.names().push(shm.name().to_owned());
        Ok(shm)
    }

    /// A new list holding `items`, unlinked at shutdown.
    ///
    /// Python: `smm.ShareableList(sequence)`.
    ///
    /// # Errors
    ///
    /// As [`ShareableList::new`].
    ///
    /// # Examples
    ///
    /// ```
    /// let smm = multiprocess::SharedMemoryManager::new();
    /// assert_eq!(smm.shareable_list(&[1.into(), 2.into()])?.len(), 2);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn shareable_list(&self, items: &[Item]) -> Result<ShareableList> {
        let list = ShareableList::new(items)?;
        self.names().push(list.shm().name().to_owned());
        Ok(list)
    }

    /// Unlinks every block made by this manager (those already unlinked by
    /// someone else are skipped). Idempotent.
    ///
    /// Python: `smm.shutdown()`.
    ///
    /// # Errors
    ///
    /// The first error other than "already gone" (the other blocks are
    /// still unlinked).
    ///
    /// # Examples
    ///
    /// ```
    /// let smm = multiprocess::SharedMemoryManager::new();
    /// let shm = smm.shared_memory(8)?;
    /// shm.unlink()?; // gone already: shutdown skips it
    /// smm.shutdown()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn shutdown(&self) -> Result<()> {
        let names = std::mem::take(&mut *self.names());
        let mut first = Ok(());
        for name in names {
            let res = SharedMemory::unlink_name(&name);
            if let Err(e) = res {
                let gone =
                    matches!(&e, crate::Error::Io(io) if io.kind() == std::io::ErrorKind::NotFound);
                if !gone && first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}

impl Drop for SharedMemoryManager {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
