//! `SimpleQueue`: put, get, empty and close, no size and no
//! feeder (CPython's `multiprocessing.SimpleQueue`).

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Queue;
use crate::error::Result;

/// The small queue: unbounded, blocking `put`/`get`, `empty`, `close`.
///
/// It shares [`Queue`]'s lock-free transport (each item one datagram), so it
/// needs none of CPython's locks around its pipe.
///
/// Python: `multiprocessing.SimpleQueue`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let sq = mp::SimpleQueue::new()?;
///     assert!(sq.empty());
///     sq.put(vec![1, 2])?;
///     assert!(!sq.empty());
///     assert_eq!(sq.get()?, vec![1, 2]);
///     sq.close();
///     sq.close();
///     assert!(matches!(sq.get(), Err(mp::Error::Closed)));
///     Ok(())
/// }
/// ```
pub struct SimpleQueue<T> {
    /// An unbounded queue.
    queue: Queue<T>,
}

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue {
            queue: self.queue.clone(),
        }
    }
}

impl<T: Serialize + DeserializeOwned> SimpleQueue<T> {
    /// Creates a simple queue.
    ///
    /// Python: `multiprocessing.SimpleQueue()`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) when out of fds or memory.
    pub fn new() -> Result<Self> {
        Ok(SimpleQueue {
            queue: Queue::new()?,
        })
    }

    /// Puts `item` (see [`Queue::put`]).
    ///
    /// Python: `SimpleQueue.put(obj)`.
    ///
    /// # Errors
    ///
    /// As [`Queue::put`].
    pub fn put(&self, item: T) -> Result<()> {
        self.queue.put(item)
    }

    /// Takes the next item, blocking (see [`Queue::get`]).
    ///
    /// Python: `SimpleQueue.get()`.
    ///
    /// # Errors
    ///
    /// As [`Queue::get`].
    pub fn get(&self) -> Result<T> {
        self.queue.get()
    }

    /// True if no item is ready now (see [`Queue::empty`]).
    ///
    /// Python: `SimpleQueue.empty()`.
    pub fn empty(&self) -> bool {
        self.queue.empty()
    }

    /// Closes this queue object; closing twice is fine.
    ///
    /// Python: `SimpleQueue.close()`.
    pub fn close(&self) {
        self.queue.close()
    }
}

impl<T> fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SimpleQueue").field(&self.queue).finish()
    }
}

impl<T> Serialize for SimpleQueue<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.queue.serialize(serializer)
    }
}

impl<'de, T: Serialize + DeserializeOwned> Deserialize<'de> for SimpleQueue<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(SimpleQueue {
            queue: Queue::deserialize(deserializer)?,
        })
    }
}
