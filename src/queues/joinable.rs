//! `JoinableQueue`: a [`Queue`] that counts unfinished tasks
//! (CPython's `multiprocessing.JoinableQueue`).

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Queue, layout, task_done_word};
use crate::connection::deadline_after;
use crate::error::{Error, Result};
use crate::platform::futex;

/// A [`Queue`] that also counts unfinished tasks: consumers call
/// [`task_done`](JoinableQueue::task_done) for each item they got, and
/// [`join`](JoinableQueue::join) waits until every item put has been done.
///
/// Python: `multiprocessing.JoinableQueue`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let jq = mp::JoinableQueue::<u32>::new()?;
///     let mut worker = mp::Process::new(
///         |jq: mp::JoinableQueue<u32>| {
///             for _ in 0..3 {
///                 let _n = jq.get().unwrap();
///                 jq.task_done().unwrap();
///             }
///         },
///         jq.clone(),
///     );
///     worker.start()?;
///     for n in 0..3 {
///         jq.put(n)?;
///     }
///     jq.join(); // all three are done
///     assert!(matches!(jq.task_done(), Err(mp::Error::Value(_))));
///     worker.join()
/// }
/// ```
pub struct JoinableQueue<T> {
    /// The queue, created with task counting on.
    queue: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue {
            queue: self.queue.clone(),
        }
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// Creates an unbounded joinable queue.
    ///
    /// Python: `multiprocessing.JoinableQueue()`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when out of fds or memory.
    pub fn new() -> Result<Self> {
        Ok(JoinableQueue {
            queue: Queue::create(0, true)?,
        })
    }

    /// Creates a joinable queue of at most `maxsize` items (0: unbounded).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when out of fds or memory.
    pub fn with_maxsize(maxsize: usize) -> Result<Self> {
        Ok(JoinableQueue {
            queue: Queue::create(maxsize.min(i32::MAX as usize) as u32, true)?,
        })
    }

    /// [`Queue::put`]; the item also counts as an unfinished task.
    ///
    /// # Errors
    ///
    /// As [`Queue::put`].
    pub fn put(&self, item: T) -> Result<()> {
        self.queue.put(item)
    }

    /// [`Queue::put_timeout`], counting the task.
    ///
    /// # Errors
    ///
    /// As [`Queue::put_timeout`].
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<()> {
        self.queue.put_timeout(item, timeout)
    }

    /// [`Queue::put_nowait`], counting the task.
    ///
    /// # Errors
    ///
    /// As [`Queue::put_nowait`].
    pub fn put_nowait(&self, item: T) -> Result<()> {
        self.queue.put_nowait(item)
    }

    /// [`Queue::get`].
    ///
    /// # Errors
    ///
    /// As [`Queue::get`].
    pub fn get(&self) -> Result<T> {
        self.queue.get()
    }

    /// [`Queue::get_timeout`].
    ///
    /// # Errors
    ///
    /// As [`Queue::get_timeout`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.queue.get_timeout(timeout)
    }

    /// [`Queue::get_nowait`].
    ///
    /// # Errors
    ///
    /// As [`Queue::get_nowait`].
    pub fn get_nowait(&self) -> Result<T> {
        self.queue.get_nowait()
    }

    /// [`Queue::qsize`].
    pub fn qsize(&self) -> usize {
        self.queue.qsize()
    }

    /// [`Queue::empty`].
    pub fn empty(&self) -> bool {
        self.queue.empty()
    }

    /// [`Queue::full`].
    pub fn full(&self) -> bool {
        self.queue.full()
    }

    /// [`Queue::close`].
    pub fn close(&self) {
        self.queue.close()
    }

    /// [`Queue::maxsize`].
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiprocess::JoinableQueue::<u8>::with_maxsize(3)?;
    /// assert_eq!(q.maxsize(), 3);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn maxsize(&self) -> usize {
        self.queue.maxsize()
    }

    /// [`Queue::is_closed`].
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiprocess::JoinableQueue::<u8>::new()?;
    /// q.close();
    /// assert!(q.is_closed());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// Marks one item got from the queue as done; when the last unfinished item
    /// is done, every `join` returns.
    ///
    /// Python: `JoinableQueue.task_done()`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when called more times than items were put,
    /// [`Error::Closed`].
    pub fn task_done(&self) -> Result<()> {
        let h = self.queue.handles()?;
        if task_done_word(h.word(layout::UNFINISHED)) {
            Ok(())
        } else {
            Err(Error::value(
                "task_done() called too many times: more than items were put",
            ))
        }
    }

    /// Blocks until every item put (by any process) has been marked done. On a
    /// closed queue it returns at once.
    ///
    /// Python: `JoinableQueue.join()`.
    pub fn join(&self) {
        self.join_deadline(None);
    }

    /// Like [`join`](JoinableQueue::join), giving up after `timeout`; true if
    /// every task was done.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.join_deadline(deadline_after(timeout))
    }

    fn join_deadline(&self, deadline: Option<Instant>) -> bool {
        let Ok(h) = self.queue.handles() else {
            return true;
        };
        let word = h.word(layout::UNFINISHED);
        loop {
            let v = word.load(Ordering::Acquire);
            if v == 0 {
                return true;
            }
            if !futex::wait(word, v, deadline) && word.load(Ordering::Acquire) != 0 {
                return false;
            }
        }
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JoinableQueue").field(&self.queue).finish()
    }
}

impl<T> Serialize for JoinableQueue<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.queue.serialize(serializer)
    }
}

impl<'de, T: Serialize + DeserializeOwned> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let queue = Queue::<T>::deserialize(deserializer)?;
        if !queue.inner.joinable {
            return Err(D::Error::custom("expected a JoinableQueue, got a Queue"));
        }
        Ok(JoinableQueue { queue })
    }
}
