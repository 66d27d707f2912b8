//! `Queue`, `JoinableQueue` and `SimpleQueue` on a std `Mutex` and `Condvar`:
//! Python's `queue.Queue`, which `multiprocessing.dummy` uses.
//!
//! Items are moved, not serialized: any `Send` type goes through.

use crate::util::Unpoison;
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::wait_until;
use crate::error::{Error, Result};
use crate::util::deadline_after;

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    /// Items put and not yet marked done (`JoinableQueue`).
    unfinished: usize,
    closed: bool,
}

#[derive(Debug)]
struct Inner<T> {
    state: Mutex<State<T>>,
    not_empty: Condvar,
    not_full: Condvar,
    all_done: Condvar,
    maxsize: usize,
}

/// A FIFO queue between threads, bounded or not.
///
/// Python: `multiprocessing.dummy.Queue` (`queue.Queue`).
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// let q = mp::Queue::with_maxsize(1)?;
/// q.put(vec![1, 2])?;
/// assert!(matches!(q.put_nowait(vec![3]), Err(mp::Error::Full)));
/// assert_eq!(q.get()?, [1, 2]);
/// assert!(matches!(q.get_nowait(), Err(mp::Error::Empty)));
/// # Ok::<(), mp::Error>(())
/// ```
pub struct Queue<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Queue<T> {
    /// An unbounded queue.
    ///
    /// # Errors
    ///
    /// None in practice (the `Result` keeps the process version's signature).
    pub fn new() -> Result<Self> {
        Self::with_maxsize(0)
    }

    /// A queue holding at most `maxsize` items (0: unbounded): `put` blocks
    /// while it is full.
    ///
    /// # Errors
    ///
    /// None in practice.
    pub fn with_maxsize(maxsize: usize) -> Result<Self> {
        Ok(Queue {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    items: VecDeque::new(),
                    unfinished: 0,
                    closed: false,
                }),
                not_empty: Condvar::new(),
                not_full: Condvar::new(),
                all_done: Condvar::new(),
                maxsize: maxsize.min(i32::MAX as usize),
            }),
        })
    }

    /// Puts `item`, blocking while a bounded queue is full.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `close()`.
    pub fn put(&self, item: T) -> Result<()> {
        self.put_deadline(item, None)
    }

    /// Puts `item`, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// [`Error::Full`] if no room came in time, [`Error::Closed`].
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<()> {
        self.put_deadline(item, deadline_after(timeout))
    }

    /// Puts `item` only if there is room now.
    ///
    /// # Errors
    ///
    /// [`Error::Full`] when full, [`Error::Closed`].
    pub fn put_nowait(&self, item: T) -> Result<()> {
        self.put_deadline(item, Some(Instant::now()))
    }

    fn put_deadline(&self, item: T, deadline: Option<Instant>) -> Result<()> {
        let inner = &*self.inner;
        let max = inner.maxsize;
        let (mut g, room) = wait_until(
            &inner.not_full,
            inner.state.lock().unpoison(),
            deadline,
            |s| s.closed || max == 0 || s.items.len() < max,
        );
        if g.closed {
            return Err(Error::Closed);
        }
        if !room {
            return Err(Error::Full);
        }
        g.items.push_back(item);
        g.unfinished += 1;
        drop(g);
        inner.not_empty.notify_one();
        Ok(())
    }

    /// Takes the next item, blocking until there is one.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `close()`.
    pub fn get(&self) -> Result<T> {
        self.get_deadline(None)
    }

    /// Takes the next item, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Empty`] if none came in time, [`Error::Closed`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_deadline(deadline_after(timeout))
    }

    /// Takes the next item if there is one now.
    ///
    /// # Errors
    ///
    /// [`Error::Empty`] when empty, [`Error::Closed`].
    pub fn get_nowait(&self) -> Result<T> {
        self.get_deadline(Some(Instant::now()))
    }

    fn get_deadline(&self, deadline: Option<Instant>) -> Result<T> {
        let inner = &*self.inner;
        if inner.state.lock().unpoison().closed {
            return Err(Error::Closed);
        }
        let (mut g, ready) = wait_until(
            &inner.not_empty,
            inner.state.lock().unpoison(),
            deadline,
            |s| !s.items.is_empty(),
        );
        if !ready {
            return Err(Error::Empty);
        }
        let item = g.items.pop_front().ok_or(Error::Empty)?;
        drop(g);
        inner.not_full.notify_one();
        Ok(item)
    }

    /// The number of items in the queue; 0 after `close()`.
    pub fn qsize(&self) -> usize {
        let g = self.inner.state.lock().unpoison();
        if g.closed { 0 } else { g.items.len() }
    }

    /// True if no item is ready now; true after `close()`.
    pub fn empty(&self) -> bool {
        self.qsize() == 0
    }

    /// True if a bounded queue holds `maxsize` items.
    pub fn full(&self) -> bool {
        self.inner.maxsize != 0 && self.qsize() >= self.inner.maxsize
    }

    /// The `maxsize` given at creation (0: unbounded).
    pub fn maxsize(&self) -> usize {
        self.inner.maxsize
    }

    /// Closes the queue (all its clones: they are in this process): later
    /// calls give [`Error::Closed`]. A `get` already blocked is not
    /// interrupted.
    pub fn close(&self) {
        self.inner.state.lock().unpoison().closed = true;
        // Wake blocked putters, which would otherwise wait for room forever.
        self.inner.not_full.notify_all();
    }

    /// True after [`close`](Queue::close).
    pub fn is_closed(&self) -> bool {
        self.inner.state.lock().unpoison().closed
    }

    fn task_done(&self) -> Result<()> {
        let mut g = self.inner.state.lock().unpoison();
        if g.closed {
            return Err(Error::Closed);
        }
        if g.unfinished == 0 {
            return Err(Error::value(
                "task_done() called too many times: more than items were put",
            ));
        }
        g.unfinished -= 1;
        if g.unfinished == 0 {
            self.inner.all_done.notify_all();
        }
        Ok(())
    }

    fn join_deadline(&self, deadline: Option<Instant>) -> bool {
        let inner = &*self.inner;
        wait_until(
            &inner.all_done,
            inner.state.lock().unpoison(),
            deadline,
            |s| s.unfinished == 0,
        )
        .1
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("qsize", &self.qsize())
            .field("maxsize", &self.inner.maxsize)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// A [`Queue`] that counts unfinished items: `task_done()` per item got,
/// `join()` until all are done.
///
/// Python: `multiprocessing.dummy.JoinableQueue` (`queue.Queue`).
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// let q = mp::JoinableQueue::new()?;
/// q.put(1)?;
/// assert_eq!(q.get()?, 1);
/// q.task_done()?;
/// q.join();
/// assert!(matches!(q.task_done(), Err(mp::Error::Value(_))));
/// # Ok::<(), mp::Error>(())
/// ```
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue {
            queue: self.queue.clone(),
        }
    }
}

impl<T> JoinableQueue<T> {
    /// An unbounded joinable queue.
    ///
    /// # Errors
    ///
    /// None in practice.
    pub fn new() -> Result<Self> {
        Ok(JoinableQueue {
            queue: Queue::new()?,
        })
    }

    /// A joinable queue holding at most `maxsize` items (0: unbounded).
    ///
    /// # Errors
    ///
    /// None in practice.
    pub fn with_maxsize(maxsize: usize) -> Result<Self> {
        Ok(JoinableQueue {
            queue: Queue::with_maxsize(maxsize)?,
        })
    }

    /// As [`Queue::put`].
    ///
    /// # Errors
    ///
    /// As [`Queue::put`].
    pub fn put(&self, item: T) -> Result<()> {
        self.queue.put(item)
    }

    /// As [`Queue::put_timeout`].
    ///
    /// # Errors
    ///
    /// As [`Queue::put_timeout`].
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<()> {
        self.queue.put_timeout(item, timeout)
    }

    /// As [`Queue::put_nowait`].
    ///
    /// # Errors
    ///
    /// As [`Queue::put_nowait`].
    pub fn put_nowait(&self, item: T) -> Result<()> {
        self.queue.put_nowait(item)
    }

    /// As [`Queue::get`].
    ///
    /// # Errors
    ///
    /// As [`Queue::get`].
    pub fn get(&self) -> Result<T> {
        self.queue.get()
    }

    /// As [`Queue::get_timeout`].
    ///
    /// # Errors
    ///
    /// As [`Queue::get_timeout`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.queue.get_timeout(timeout)
    }

    /// As [`Queue::get_nowait`].
    ///
    /// # Errors
    ///
    /// As [`Queue::get_nowait`].
    pub fn get_nowait(&self) -> Result<T> {
        self.queue.get_nowait()
    }

    /// As [`Queue::qsize`].
    pub fn qsize(&self) -> usize {
        self.queue.qsize()
    }

    /// As [`Queue::empty`].
    pub fn empty(&self) -> bool {
        self.queue.empty()
    }

    /// As [`Queue::full`].
    pub fn full(&self) -> bool {
        self.queue.full()
    }

    /// As [`Queue::close`].
    pub fn close(&self) {
        self.queue.close()
    }

    /// As [`Queue::maxsize`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::dummy as mp;
    /// let q = mp::JoinableQueue::<u8>::with_maxsize(3)?;
    /// assert_eq!(q.maxsize(), 3);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn maxsize(&self) -> usize {
        self.queue.maxsize()
    }

    /// As [`Queue::is_closed`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::dummy as mp;
    /// let q = mp::JoinableQueue::<u8>::new()?;
    /// q.close();
    /// assert!(q.is_closed());
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// Marks one item got as done.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when called more often than items were put,
    /// [`Error::Closed`] after `close()`.
    pub fn task_done(&self) -> Result<()> {
        self.queue.task_done()
    }

    /// Blocks until every item put has been marked done.
    pub fn join(&self) {
        self.queue.join_deadline(None);
    }

    /// [`join`](JoinableQueue::join) for at most `timeout`; true if all done.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.queue.join_deadline(deadline_after(timeout))
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JoinableQueue").field(&self.queue).finish()
    }
}

/// An unbounded queue with only `put`, `get`, `empty` and `close`.
///
/// Python: `multiprocessing.SimpleQueue` (`queue.SimpleQueue` in threads).
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// let q = mp::SimpleQueue::new()?;
/// q.put("x")?;
/// assert_eq!(q.get()?, "x");
/// assert!(q.empty());
/// # Ok::<(), mp::Error>(())
/// ```
pub struct SimpleQueue<T> {
    queue: Queue<T>,
}

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue {
            queue: self.queue.clone(),
        }
    }
}

impl<T> SimpleQueue<T> {
    /// A new queue.
    ///
    /// # Errors
    ///
    /// None in practice.
    pub fn new() -> Result<Self> {
        Ok(SimpleQueue {
            queue: Queue::new()?,
        })
    }

    /// Puts `item`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `close()`.
    pub fn put(&self, item: T) -> Result<()> {
        self.queue.put(item)
    }

    /// Takes the next item, blocking until there is one.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `close()`.
    pub fn get(&self) -> Result<T> {
        self.queue.get()
    }

    /// True if no item is ready now.
    pub fn empty(&self) -> bool {
        self.queue.empty()
    }

    /// Closes the queue; closing twice is fine.
    pub fn close(&self) {
        self.queue.close()
    }
}

impl<T> fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SimpleQueue").field(&self.queue).finish()
    }
}
