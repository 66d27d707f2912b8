//! Python's `multiprocessing.queues`: FIFO queues shared by any number of
//! processes.
//!
//! | Python | Rust |
//! |---|---|
//! | `Queue(maxsize=0)` | [`Queue::new`], [`Queue::with_maxsize`] |
//! | `put(obj)`, `put(obj, timeout=t)`, `put_nowait(obj)` | [`Queue::put`], [`Queue::put_timeout`], [`Queue::put_nowait`] |
//! | `get()`, `get(timeout=t)`, `get_nowait()` | [`Queue::get`], [`Queue::get_timeout`], [`Queue::get_nowait`] |
//! | `qsize()`, `empty()`, `full()`, `close()` | same names |
//! | `join_thread()`, `cancel_join_thread()` | not needed: there is no feeder thread |
//! | `JoinableQueue` (`task_done()`, `join()`) | [`JoinableQueue`] |
//! | `SimpleQueue` | [`SimpleQueue`] |
//!
//! # How it works
//!
//! A queue is one memfd that every holder (in every process) maps: a small
//! counter block, a 4 MiB *ring* (`ring.rs`) and, after it, a sparse *spill
//! log* (`spill.rs`, never mapped); plus one `AF_UNIX` `SOCK_SEQPACKET`
//! socket pair for items that carry handles. Items are encoded and placed,
//! under the queue's lock (a `RawLock`, which a waiter takes over from a dead
//! holder):
//!
//! * **in the ring**, an item without handles of up to 64 KiB, while the
//!   spill log is empty and the ring has room: the lock, a copy into the
//!   mapping, the unlock, a counter bump, and a `FUTEX_WAKE` only when a
//!   consumer sleeps. No system call per item: this is the fast path;
//! * **in the spill log** otherwise (the ring is full, or the item is
//!   larger): records packed in the memfd with `pwritev`, each costing its
//!   encoded size plus a byte or two. Once the log holds anything every new
//!   item goes to it until it drains, so every item in the ring is older than
//!   every item in the log;
//! * **in the socket**, an item with handles (connections, other queues,
//!   locks): its fds must travel as `SCM_RIGHTS`. It is sent as one datagram
//!   and a *placeholder* is put in the ring, both under the lock, so
//!   placeholders and datagrams are in the same order and the item keeps its
//!   place among the others. While the log holds items (the placeholder
//!   would pass them) or the ring is full, it waits.
//!
//! A consumer takes, under the lock, the ring's oldest record (an item, or a
//! placeholder: then the socket's next datagram), else the log's. So the
//! items of one producer are got in the order it put them. Consumers do not
//! sleep in the socket: they watch a shared counter that every `put` bumps
//! after placing its item, spin on it briefly, and sleep on it with a futex.
//! Memory behind the ring's and the log's tails is given back page by page
//! (`FALLOC_FL_PUNCH_HOLE`) as items are taken.
//!
//! So:
//!
//! * an unbounded queue's `put` never waits for a consumer, whatever the
//!   socket limits (no `SO_SNDBUFFORCE`, no privilege), and memory follows
//!   what waits;
//! * a consumer killed while it waits in `get` takes nothing with it, one
//!   killed in the middle of a `get` takes at most that one item (the ring's
//!   and the log's tails move past a record only once it is copied out, a
//!   placeholder only once its datagram is received), and the others go on
//!   (CPython's queue stays locked when a reader dies holding its lock);
//! * there is no feeder thread: `put` returns once the item is in the shared
//!   memory or in the kernel, so a producer may exit at once (CPython's
//!   "joining processes that use queues" deadlock cannot happen).
//!
//! An item with handles whose encoding exceeds 64 KiB travels out of band:
//! its bytes go into a sealed memfd whose fd rides in the datagram.
//!
//! # Capacity
//!
//! Unbounded means unbounded: items wait in the ring, then in the spill log,
//! in memory (a memfd: the kernel frees it with the queue's last holder). The
//! only exception is an item carrying handles: the kernel must hold its fds,
//! so it waits until the log has drained and the ring and the socket have
//! room (`put_nowait` and `put_timeout` give [`Error::Full`]).

use std::cell::RefCell;
use std::fmt;
use std::io::IoSlice;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::connection::spin::Spin;
use crate::connection::{DEFAULT_MAX_MESSAGE_LEN, deadline_after};
use crate::error::{Error, Result};
use crate::platform::fd;
use crate::platform::futex;
use crate::platform::shm::{self, ShmRegion};
use crate::reduction;
use crate::synchronize::raw::RawLock;

mod joinable;
mod ring;
mod simple;
mod spill;
pub use joinable::JoinableQueue;
use ring::{Next, Ring};
pub use simple::SimpleQueue;
use spill::{Log, Record};

/// Encoded items up to this many bytes travel inside their datagram; larger
/// ones go out of band in a sealed memfd.
pub(crate) const INLINE_MAX: usize = 64 * 1024;

/// The name of a queue's memfd (counters and spill log), as
/// `/proc/PID/fd` shows it: `/memfd:multiprocess-queue (deleted)`.
const MEMFD_NAME: &std::ffi::CStr = c"multiprocess-queue";

/// How long a `get` sleeps before it looks again by itself: a producer killed
/// between placing an item and announcing it would otherwise leave a sleeping
/// consumer beside a waiting item until the next `put`.
const GET_RECHECK_SLICE: Duration = Duration::from_millis(100);

/// How long a `put` of an item with handles waits between tries while the
/// spill log drains, the ring is full or the socket is (see
/// `send_with_handles`).
const HANDLES_WAIT_SLICE: Duration = Duration::from_millis(2);

/// How long a `get` that finds the queue empty watches the shared item
/// counter before it sleeps in the kernel. A reply that comes within this
/// time (a ping-pong between processes) then costs no sleep and wake-up, which
/// on a virtual machine with idle CPUs is the larger part of the latency;
/// measured with the ping-pong benchmark (queue_pingpong_us), where 50 µs
/// covers one hop with room to spare.
const SPIN_FOR: Duration = Duration::from_micros(50);

/// First byte of a datagram: the item's bytes follow.
const KIND_INLINE: u8 = 1;
/// First byte of a datagram: a u64 (LE) length follows; the first fd is a
/// sealed memfd holding that many bytes of item.
const KIND_OUT_OF_BAND: u8 = 2;

/// Shared counter block: byte offsets of its `AtomicU32`s.
mod layout {
    use crate::synchronize::raw::RawLock;

    /// Items put (or being put) and not yet taken: `qsize()`, and the word
    /// bounded `put`s wait on.
    pub(super) const LEN: usize = 0;
    /// Items put and not yet marked done (JoinableQueue); `join` waits on it.
    pub(super) const UNFINISHED: usize = 4;
    /// `put`s waiting for room, so `get` skips the wake syscall when none are.
    pub(super) const PUT_WAITERS: usize = 8;
    /// Non-zero while `get`s may be asleep on [`SEQ`]: each sets it to 1
    /// before it sleeps, and the first `put` after that swaps it to 0 and wakes
    /// them all, so a burst of `put`s pays one wake, not one each (a woken
    /// consumer takes tens of microseconds to run on a virtual machine).
    pub(super) const GET_WAITERS: usize = 12;
    /// Bounded queues: [`IN_FLIGHT_SLOTS`] words, each 0 or the pid of a
    /// producer between taking a slot (`LEN`) and sending its item. A `put`
    /// that finds the queue full gives back the slots of dead producers.
    pub(super) const IN_FLIGHT: usize = 16;
    /// How many in-flight producers are recorded (more go unrecorded).
    pub(super) const IN_FLIGHT_SLOTS: usize = 12;
    /// Bumped by every `put` after its item is placed (ring, log or
    /// socket); sleeping `get`s wait for it to change.
    pub(super) const SEQ: usize = 64;
    /// Datagrams in the socket, raised before each send and lowered after
    /// each receive, both under the lock: 0 means the socket is empty. A
    /// process killed between its update and its send or receive leaves it
    /// one high, until a `get` finds the queue empty under the lock and puts
    /// it right.
    pub(super) const IN_SOCKET: usize = 68;
    /// The queue's lock, over the ring, the spill log and the socket's
    /// senders and receivers (a `RawLock`, 8-aligned).
    pub(super) const LOCK: usize = 72;
    /// The ring's `HEAD`, `TAIL`, `PUNCHED` (u64 each).
    pub(super) const RING: usize = LOCK + RawLock::SIZE;
    /// The spill log's `HEAD`, `TAIL`, `PUNCHED` (u64 each).
    pub(super) const LOG: usize = RING + 24;
    /// Size of the counter block (the ring follows in the next page).
    pub(super) const SIZE: usize = LOG + 24;
    /// Bytes of the memfd every holder maps: the counter page and the ring
    /// (the spill log follows, never mapped).
    pub(super) const MAP_LEN: usize = super::ring::RING_END;
    const _: () = assert!(IN_FLIGHT + 4 * IN_FLIGHT_SLOTS <= SEQ);
    const _: () = assert!(LOCK % 8 == 0 && RING % 8 == 0);
    const _: () = assert!(LOG + 24 <= SIZE && SIZE <= super::ring::RING_START);
}

/// How long a `put` on a full bounded queue sleeps before it checks for
/// slots held by dead producers (as the locks check for a dead holder).
const RECLAIM_SLICE: Duration = Duration::from_millis(100);

/// The fds and shared memory behind a queue.
struct Handles {
    /// Send end of the socket pair.
    tx: OwnedFd,
    /// Receive end of the socket pair.
    rx: OwnedFd,
    /// The counter block (see [`layout`]) and the ring, followed in its
    /// memfd by the spill log.
    shm: Arc<ShmRegion>,
    /// The queue's lock, in the counter block.
    lock: RawLock,
}

/// What a `get` took.
enum Taken {
    /// A datagram from the socket, in the thread's receive buffer.
    Datagram(fd::Received),
    /// A record from the ring or the spill log.
    Record(Record),
    /// An item taken but lost (received without its fds, or a corrupt spill
    /// log dropped): its slot is given back like any other, then the `get`
    /// gives this error.
    Lost(Error),
}

impl Handles {
    /// Handles over a socket pair and a queue memfd (fresh or received).
    fn new(tx: OwnedFd, rx: OwnedFd, shm: ShmRegion) -> Handles {
        let shm = Arc::new(shm);
        let lock = RawLock::attach(shm.clone(), layout::LOCK);
        Handles { tx, rx, shm, lock }
    }

    fn word(&self, offset: usize) -> &AtomicU32 {
        self.shm.atomic_u32(offset)
    }

    fn log(&self) -> Log<'_> {
        Log::new(&self.shm, &self.lock, layout::LOG)
    }

    fn ring(&self) -> Ring<'_> {
        Ring::new(&self.shm, layout::RING)
    }

    /// Tries to send one datagram without waiting, counting it in
    /// `IN_SOCKET` first. With the lock held (`_held`).
    fn try_send(
        &self,
        _held: &spill::Locked<'_, '_>,
        bufs: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
    ) -> Result<Sent> {
        let in_socket = self.word(layout::IN_SOCKET);
        in_socket.fetch_add(1, Ordering::AcqRel);
        let sent = match fd::try_send_with_fds(self.tx.as_fd(), bufs, fds) {
            Ok(Some(_)) => return Ok(Sent::Yes),
            Ok(None) => Ok(Sent::NoRoom),
            // Larger than the socket buffer as one datagram.
            Err(e) if fd::is_too_big(&e) => Ok(Sent::TooBig),
            Err(e) => Err(e.into()),
        };
        saturating_dec(in_socket);
        sent
    }

    /// Receives one datagram if one is there. With the lock held (`_held`).
    fn try_recv(
        &self,
        _held: &spill::Locked<'_, '_>,
        bufs: &mut RecvBufs,
        fds: &mut Vec<OwnedFd>,
    ) -> Result<Option<Taken>> {
        let got = fd::recv_flags_with(self.rx.as_fd(), &mut bufs.data, &mut bufs.cmsg, fds, true);
        match got {
            Ok(None) => Ok(None),
            Ok(Some(r)) => {
                saturating_dec(self.word(layout::IN_SOCKET));
                Ok(Some(Taken::Datagram(r)))
            }
            // The datagram was consumed without its fds: it is out of the
            // socket, so counted out, and lost.
            Err(e) if fd::is_fds_truncated(&e) => {
                saturating_dec(self.word(layout::IN_SOCKET));
                Ok(Some(Taken::Lost(Error::Io(std::io::Error::other(
                    format!("queue item lost: {e}"),
                )))))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Announces a placed item: bumps `SEQ` and wakes sleeping `get`s.
    fn announce(&self) {
        let seq = self.word(layout::SEQ);
        let waiters = self.word(layout::GET_WAITERS);
        // SeqCst with the load below, against the `get` side's store to
        // GET_WAITERS then futex wait on SEQ (Dekker): either we see the
        // sleeper, or its futex sees the new SEQ and does not sleep. Only
        // the `put` that swaps the word to 0 wakes: the sleepers it wakes
        // raise it again if they sleep again.
        seq.fetch_add(1, Ordering::SeqCst);
        if waiters.load(Ordering::SeqCst) > 0 && waiters.swap(0, Ordering::SeqCst) > 0 {
            futex::wake_all(seq);
        }
    }
}

/// How a non-waiting send went.
enum Sent {
    /// The datagram is in the socket.
    Yes,
    /// The socket buffer is full.
    NoRoom,
    /// The datagram can never fit the socket buffer.
    TooBig,
}

/// Decrements a counter, never below zero.
fn saturating_dec(word: &AtomicU32) {
    let _ = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1));
}

/// What every clone of a queue object in this process shares.
struct Inner {
    /// The fds and counters; released when the last clone is dropped, so
    /// `close()` on one thread never pulls an fd from under a call running on
    /// another (and the hot path takes no lock).
    handles: Handles,
    /// Set by `close()`.
    closed: AtomicBool,
    /// 0: unbounded.
    maxsize: u32,
    /// Count unfinished tasks (JoinableQueue).
    joinable: bool,
    /// How long this process's `get`s watch the counter before they sleep:
    /// [`SPIN_FOR`] at most, less after misses, none while the CPUs are
    /// contended (the `Connection`'s policy, `connection/spin.rs`).
    spin: Spin,
}

/// A FIFO queue between processes: any number of producers and consumers,
/// each item delivered exactly once.
///
/// `Queue<T>` is `Clone` (a clone is the same queue object, as when Python
/// code shares one queue between threads) and serde-serializable: pass it to a
/// child as (part of) the target's argument, or send it over a
/// [`Connection`](crate::Connection) or another queue.
///
/// # What `put` guarantees
///
/// When `put` returns `Ok`, the item is in the queue's shared memory (its
/// ring or its spill log; see the module docs) or, if it carries handles, in
/// the kernel's buffer of the queue's socket. It no longer depends on the producing process: that process may
/// exit, or be killed, at once, and the item is still delivered to a later
/// `get` in any process that holds the queue. Items put by one process (or
/// one thread) are got in the order they were put; items from different
/// producers interleave in the order their `put`s completed. There is no
/// feeder thread and nothing to flush.
///
/// An unbounded queue's `put` never waits and never fails for lack of room
/// (`put_nowait` never gives [`Error::Full`]), whatever the socket limits:
/// items wait in shared memory, which costs about their encoded size and is
/// given back as they are taken. The exception is an item carrying handles
/// (a [`Connection`](crate::Connection), a queue, a lock): its fds must
/// travel in the socket, so behind a backlog that filled the 4 MiB ring and
/// spilled, it waits until that backlog has been taken (and for room in the
/// socket).
///
/// Python: `multiprocessing.Queue`.
///
/// # Differences from Python
///
/// * `put` encodes and sends at once: an item that fails to encode is an
///   [`Error::Encode`] from `put` (Python prints it from the feeder thread), and
///   nothing is queued.
/// * `get` on a closed queue, like `put`, is [`Error::Closed`]. `close` is local
///   to this queue object and its clones; other processes' handles work on.
/// * An item carrying handles, put behind a backlog that filled the ring and
///   spilled (or into a full socket), waits for it to be taken, even on an
///   unbounded queue. Python does not wait there: it pickles a handle as a reference
///   the receiver fetches from the sending process (its resource sharer),
///   which must then still be alive; here the fds travel with the item.
/// * `qsize()` is exact for completed operations (a shared counter), but a
///   process killed in the middle of a `put` or `get` can leave it one off.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let q = mp::Queue::<String>::new()?;
///     let mut p = mp::Process::new(
///         |q: mp::Queue<String>| q.put("hello from the child".to_string()).unwrap(),
///         q.clone(),
///     );
///     p.start()?;
///     assert_eq!(q.get()?, "hello from the child");
///     p.join()
/// }
/// ```
pub struct Queue<T> {
    /// Shared by clones.
    inner: Arc<Inner>,
    /// Items are encoded, never stored: the queue is `Send + Sync` for any `T`.
    _items: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            inner: self.inner.clone(),
            _items: PhantomData,
        }
    }
}

/// Per-thread receive buffers, reused by every `get` of a thread.
struct RecvBufs {
    /// Inline datagrams (with room to spot an oversized one).
    data: Vec<u8>,
    /// Control messages (fds).
    cmsg: Vec<u8>,
}

thread_local! {
    static RECV_BUFS: RefCell<RecvBufs> = RefCell::new(RecvBufs {
        data: vec![0u8; INLINE_MAX + 16],
        cmsg: fd::cmsg_buffer(),
    });
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Creates an unbounded queue: `put` never waits for room and never
    /// gives [`Error::Full`], however many items wait (see the type's docs
    /// for the one exception, items carrying handles).
    ///
    /// Python: `multiprocessing.Queue()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let q = mp::Queue::<u32>::new()?;
    ///     // Far more than any socket buffer holds, with nobody reading.
    ///     for i in 0..100_000 {
    ///         q.put_nowait(i)?;
    ///     }
    ///     assert_eq!(q.qsize(), 100_000);
    ///     assert_eq!(q.get()?, 0);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when out of fds or memory.
    pub fn new() -> Result<Self> {
        Self::create(0, false)
    }

    /// Creates a queue holding at most `maxsize` items: `put` blocks while it is
    /// full. `maxsize == 0` means unbounded, as in Python.
    ///
    /// Python: `multiprocessing.Queue(maxsize)`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when out of fds or memory.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let q = mp::Queue::with_maxsize(1)?;
    ///     q.put(1u8)?;
    ///     assert!(q.full());
    ///     assert!(matches!(q.put_nowait(2), Err(mp::Error::Full)));
    ///     Ok(())
    /// }
    /// ```
    pub fn with_maxsize(maxsize: usize) -> Result<Self> {
        Self::create(maxsize.min(i32::MAX as usize) as u32, false)
    }

    pub(crate) fn create(maxsize: u32, joinable: bool) -> Result<Self> {
        let (tx, rx) = fd::socketpair_seqpacket()?;
        // One memfd: the counter page and the ring mapped, the spill log
        // after them; sparse.
        let shm = ShmRegion::create_sparse(MEMFD_NAME, layout::MAP_LEN, spill::LOG_END)?;
        let h = Handles::new(tx, rx, shm);
        RawLock::init(h.shm.clone(), layout::LOCK);
        h.log().init();
        h.ring().init();
        Ok(Self::from_handles(h, maxsize, joinable))
    }

    fn from_handles(h: Handles, maxsize: u32, joinable: bool) -> Self {
        Queue {
            inner: Arc::new(Inner {
                handles: h,
                closed: AtomicBool::new(false),
                maxsize,
                joinable,
                spin: Spin::new(true),
            }),
            _items: PhantomData,
        }
    }

    /// Puts `item`, blocking while a bounded queue is full. An unbounded
    /// queue never blocks here, except for an item carrying handles behind
    /// spilled items (see the type's docs).
    ///
    /// See the type's docs for what a successful return guarantees.
    ///
    /// Python: `Queue.put(obj)`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `close()`, [`Error::Encode`] if the item does not
    /// serialize, [`Error::MessageTooLarge`] if it encodes to more than 4 GiB
    /// (nothing is queued), [`Error::Io`].
    pub fn put(&self, item: T) -> Result<()> {
        self.put_deadline(&item, None)
    }

    /// Puts `item`, waiting at most `timeout` for room.
    ///
    /// Python: `Queue.put(obj, timeout=t)`.
    ///
    /// # Errors
    ///
    /// [`Error::Full`] when there was no room in time, and as [`put`](Queue::put).
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<()> {
        match deadline_after(timeout) {
            Some(d) => self.put_deadline(&item, Some(d)),
            None => self.put_deadline(&item, None),
        }
    }

    /// Puts `item` only if there is room now.
    ///
    /// Python: `Queue.put_nowait(obj)`.
    ///
    /// # Errors
    ///
    /// [`Error::Full`] when full, and as [`put`](Queue::put).
    pub fn put_nowait(&self, item: T) -> Result<()> {
        self.put_deadline(&item, Some(Instant::now()))
    }

    /// Takes the next item, blocking until there is one.
    ///
    /// Python: `Queue.get()`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `close()`; [`Error::Decode`] for an item of
    /// another type, or a corrupt one (the item is consumed); [`Error::Io`],
    /// which says "queue item lost" when an item was taken but could not be
    /// received whole (its handles did not fit: this process at its fd
    /// limit). A lost or corrupt item counts as got (its slot is free).
    pub fn get(&self) -> Result<T> {
        self.get_deadline(None)
    }

    /// Takes the next item, waiting at most `timeout` for one.
    ///
    /// Python: `Queue.get(timeout=t)`.
    ///
    /// # Errors
    ///
    /// [`Error::Empty`] when nothing came in time, and as [`get`](Queue::get).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// use std::time::Duration;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let q = mp::Queue::<i32>::new()?;
    ///     assert!(matches!(q.get_timeout(Duration::from_millis(20)), Err(mp::Error::Empty)));
    ///     q.put(5)?;
    ///     assert_eq!(q.get_timeout(Duration::from_millis(20))?, 5);
    ///     Ok(())
    /// }
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_deadline(deadline_after(timeout))
    }

    /// Takes the next item if there is one now.
    ///
    /// Python: `Queue.get_nowait()`.
    ///
    /// # Errors
    ///
    /// [`Error::Empty`] when empty, and as [`get`](Queue::get).
    pub fn get_nowait(&self) -> Result<T> {
        self.get_deadline(Some(Instant::now()))
    }

    /// The number of items put and not yet taken, across all processes.
    /// Returns 0 after `close()`.
    ///
    /// Python: `Queue.qsize()`.
    pub fn qsize(&self) -> usize {
        self.handles()
            .map(|h| h.word(layout::LEN).load(Ordering::Acquire) as usize)
            .unwrap_or(0)
    }

    /// True if no item is ready to be taken now. An item a `put` in this
    /// process has returned for is seen at once. True after `close()`.
    ///
    /// Python: `Queue.empty()`.
    pub fn empty(&self) -> bool {
        match self.handles() {
            Ok(h) => {
                h.ring().is_empty()
                    && h.log().is_empty()
                    && !fd::wait_for(h.rx.as_fd(), fd::READABLE, Some(Instant::now()))
                        .unwrap_or(false)
            }
            Err(_) => true,
        }
    }

    /// True if a bounded queue holds `maxsize` items (never for an unbounded
    /// queue).
    ///
    /// Python: `Queue.full()`.
    pub fn full(&self) -> bool {
        self.inner.maxsize != 0 && self.qsize() >= self.inner.maxsize as usize
    }

    /// The `maxsize` given at creation (0: unbounded).
    pub fn maxsize(&self) -> usize {
        self.inner.maxsize as usize
    }

    /// Closes this queue object (and its clones in this process): later calls
    /// give [`Error::Closed`]. Items already put stay in the queue for other
    /// processes' handles; nothing needs flushing. Closing twice is fine. A
    /// `get` already blocked on another thread is not interrupted. The fds are
    /// released when the last clone of this object is dropped.
    ///
    /// Python: `Queue.close()`.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
    }

    /// True after [`close`](Queue::close).
    pub fn is_closed(&self) -> bool {
        self.handles().is_err()
    }

    #[inline]
    fn handles(&self) -> Result<&Handles> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(&self.inner.handles)
    }

    /// The one body of every `put`: `deadline` `None` blocks, a past deadline
    /// does not wait.
    pub(crate) fn put_deadline(&self, item: &T, deadline: Option<Instant>) -> Result<()> {
        let h = self.handles()?;
        // Encode first: an item that cannot be encoded changes nothing
        // (CPython bpo-30414 left its size off by one).
        let enc = reduction::encode(item)?;
        // A `get` refuses longer ones (a spill log record, or an out-of-band
        // item): refuse it here, before it takes a slot or any memory.
        check_item_len(enc.bytes.len(), DEFAULT_MAX_MESSAGE_LEN)?;
        // A large item with handles is copied into its memfd before a slot
        // is taken: a producer killed during that copy (milliseconds for a
        // big item) then holds no slot, so a bounded queue keeps its
        // capacity. What is left is the time between `reserve` and the
        // placement (for a big item in the spill log, its copy).
        let out_of_band = match !enc.fds.is_empty() && enc.bytes.len() > INLINE_MAX {
            true => Some(out_of_band_copy(&enc, enc.fds.len())?),
            false => None,
        };
        let in_flight = self.reserve(h, deadline)?;
        if self.inner.joinable {
            h.word(layout::UNFINISHED).fetch_add(1, Ordering::AcqRel);
        }
        let sent = place_item(h, &enc, out_of_band, deadline);
        match sent {
            Ok(()) => h.announce(),
            Err(_) => {
                if self.inner.joinable {
                    task_done_word(h.word(layout::UNFINISHED));
                }
                self.release(h);
            }
        }
        // Last: dying before this is taken for dying before the send, and the
        // slot is given back (an undercount, which heals once the queue is
        // drained, rather than a slot lost for good).
        if let Some(entry) = in_flight {
            entry.store(0, Ordering::Release);
        }
        sent
    }

    /// Takes a slot: bounded queues wait for room until `deadline`. For a
    /// bounded queue, returns the in-flight record to clear once the item is
    /// sent (`None` when all records were busy).
    fn reserve<'h>(
        &self,
        h: &'h Handles,
        deadline: Option<Instant>,
    ) -> Result<Option<&'h AtomicU32>> {
        let len = h.word(layout::LEN);
        let max = self.inner.maxsize;
        if max == 0 {
            len.fetch_add(1, Ordering::AcqRel);
            return Ok(None);
        }
        let waiters = h.word(layout::PUT_WAITERS);
        let me = std::process::id();
        loop {
            let cur = len.load(Ordering::Acquire);
            if cur < max {
                // Record ourselves before taking the slot, so that a death
                // between here and the send gives the slot back.
                let entry = claim_in_flight(h, me);
                if len
                    .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Ok(entry);
                }
                if let Some(e) = entry {
                    e.store(0, Ordering::Release);
                }
                continue;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                if self.reclaim_dead(h, me) {
                    continue;
                }
                return Err(Error::Full);
            }
            // Announce ourselves before re-checking in the futex: a `get` that
            // frees a slot after our load sees the waiter and wakes us.
            let slice_end = Instant::now() + RECLAIM_SLICE;
            let until = deadline.map_or(slice_end, |d| d.min(slice_end));
            waiters.fetch_add(1, Ordering::SeqCst);
            let woke = futex::wait(len, cur, Some(until));
            waiters.fetch_sub(1, Ordering::SeqCst);
            if !woke {
                // A slice (or the deadline) ran out with the queue full: give
                // back slots of producers that died before sending.
                self.reclaim_dead(h, me);
            }
        }
    }

    /// Gives back the slots of producers recorded in flight that have died
    /// (a queue full because of them would stay full forever). True if any
    /// slot was given back.
    fn reclaim_dead(&self, h: &Handles, me: u32) -> bool {
        let mut freed = false;
        for i in 0..layout::IN_FLIGHT_SLOTS {
            let entry = h.word(layout::IN_FLIGHT + 4 * i);
            let pid = entry.load(Ordering::Acquire);
            if pid == 0 || pid == me || !crate::synchronize::raw::process_is_dead(pid) {
                continue;
            }
            if entry
                .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.release(h);
                freed = true;
            }
        }
        freed
    }

    /// Gives a slot back (after a `get`, or a failed `put`).
    fn release(&self, h: &Handles) {
        let len = h.word(layout::LEN);
        // Saturating: a producer killed between reserve and send leaves the
        // counter one high, never below zero.
        let _ = len.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1));
        if self.inner.maxsize != 0 && h.word(layout::PUT_WAITERS).load(Ordering::SeqCst) > 0 {
            futex::wake(len, 1);
        }
    }

    /// Sends `dgram` with `fds` as one raw datagram, as if a peer had put
    /// it (how `crate::__fuzz` feeds corrupt items to a real `get`).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn inject_datagram(&self, dgram: &[u8], fds: &[OwnedFd]) -> Result<()> {
        let h = self.handles()?;
        let fds: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
        let log = h.log();
        let held = log.lock_wait();
        h.word(layout::IN_SOCKET).fetch_add(1, Ordering::AcqRel);
        fd::send_with_fds(h.tx.as_fd(), &[IoSlice::new(dgram)], &fds)?;
        // No room: the datagram is found as one whose producer died.
        let _ = h.ring().push_handles_locked(&held);
        drop(held);
        h.word(layout::LEN).fetch_add(1, Ordering::AcqRel);
        h.announce();
        Ok(())
    }

    /// The one body of every `get`.
    pub(crate) fn get_deadline(&self, deadline: Option<Instant>) -> Result<T> {
        let h = self.handles()?;
        let seq = h.word(layout::SEQ);
        let waiters = h.word(layout::GET_WAITERS);
        let mut spin = SpinPhase::NotYet;
        RECV_BUFS.with(|bufs| {
            let mut bufs = bufs.borrow_mut();
            let mut fds = Vec::new();
            let got = loop {
                // Read before looking: an item placed after this changes it,
                // so the futex below does not sleep through it.
                let seen = seq.load(Ordering::SeqCst);
                if let Some(t) = self.try_take(h, &mut bufs, &mut fds, deadline)? {
                    break t;
                }
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    return Err(Error::Empty);
                }
                // Briefly, watch the counter without sleeping: a reply that
                // comes within SPIN_FOR then costs no sleep and wake-up.
                if let SpinPhase::NotYet = spin {
                    spin = SpinPhase::begin(&self.inner.spin, now, deadline);
                }
                if spin.watch(&self.inner.spin, seq, seen, now) {
                    continue;
                }
                // Several consumers may wake for one item: the losers find
                // nothing and sleep again.
                let slice_end = now + GET_RECHECK_SLICE;
                let until = deadline.map_or(slice_end, |d| d.min(slice_end));
                // Not cleared after: the waking `put` did (a slice that ran
                // out leaves it set: one needless wake later).
                waiters.store(1, Ordering::SeqCst);
                futex::wait(seq, seen, Some(until));
            };
            self.release(h);
            match got {
                Taken::Datagram(r) if r.truncated => Err(Error::decode(format!(
                    "queue item datagram larger than {} bytes: not one of ours",
                    bufs.data.len()
                ))),
                Taken::Datagram(r) => decode_item(&bufs.data[..r.len], fds),
                Taken::Record(Record::InScratch { start, len }) => {
                    reduction::decode(&bufs.data[start..start + len], Vec::new())
                }
                Taken::Record(Record::Owned(v)) => reduction::decode(&v, Vec::new()),
                Taken::Lost(e) => Err(e),
            }
        })
    }

    /// Takes the next item if one is there: the ring's oldest record (an
    /// item, or a placeholder for the socket's next datagram), else the
    /// spill log's (waiting for the lock until `deadline`).
    fn try_take(
        &self,
        h: &Handles,
        bufs: &mut RecvBufs,
        fds: &mut Vec<OwnedFd>,
        deadline: Option<Instant>,
    ) -> Result<Option<Taken>> {
        let in_socket = h.word(layout::IN_SOCKET);
        let (ring, log) = (h.ring(), h.log());
        // Without the lock or a system call: an empty queue's spin.
        if ring.is_empty() && log.is_empty() && in_socket.load(Ordering::Acquire) == 0 {
            return Ok(None);
        }
        let Some(held) = log.lock(deadline) else {
            return Ok(None);
        };
        // The ring first: an item went to the log only while the ring was
        // full or the log not empty, so every item in the ring is older than
        // every item in the log.
        loop {
            match ring.take_locked(&held, &mut bufs.data) {
                Ok(Some(Next::Item(len))) => {
                    return Ok(Some(Taken::Record(Record::InScratch { start: 0, len })));
                }
                Ok(Some(Next::Handles { next })) => {
                    // Received before the placeholder is skipped: dying in
                    // between loses this one item (the next taker finds the
                    // placeholder stale), never a later one.
                    let got = h.try_recv(&held, bufs, fds)?;
                    ring.skip_locked(&held, next);
                    if got.is_some() {
                        return Ok(got);
                    }
                    // Stale: its datagram went to a consumer that died.
                }
                Ok(None) => break,
                // The ring was dropped: at least its first record is lost.
                Err(e) => return Ok(Some(Taken::Lost(e))),
            }
        }
        match log.take_locked(&held, &mut bufs.data) {
            Ok(Some(r)) => return Ok(Some(Taken::Record(r))),
            Ok(None) => {}
            // The log was dropped: at least its first record is lost.
            Err(e @ Error::Decode(_)) => return Ok(Some(Taken::Lost(e))),
            Err(e) => return Err(e),
        }
        // Ring and log empty: a datagram still in the socket lost its
        // placeholder (its producer died between sending it and writing the
        // placeholder). Producers send only under the lock, so none is
        // between the two now; an empty socket means IN_SOCKET is stale.
        if in_socket.load(Ordering::Acquire) > 0 {
            let got = h.try_recv(&held, bufs, fds)?;
            if got.is_none() {
                in_socket.store(0, Ordering::Release);
            }
            return Ok(got);
        }
        Ok(None)
    }
}

/// `Ok` if an encoded item of `len` bytes is within `max` (what a `get`
/// accepts), else [`Error::MessageTooLarge`].
fn check_item_len(len: usize, max: u64) -> Result<()> {
    let len = len as u64;
    if len > max {
        return Err(Error::MessageTooLarge { len, max });
    }
    Ok(())
}

/// Takes a free in-flight record of a bounded queue for `pid` (`None` when
/// all are busy: this put then goes unrecorded).
fn claim_in_flight(h: &Handles, pid: u32) -> Option<&AtomicU32> {
    (0..layout::IN_FLIGHT_SLOTS)
        .map(|i| h.word(layout::IN_FLIGHT + 4 * i))
        .find(|e| {
            e.compare_exchange(0, pid, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })
}

/// Where one `get` stands with its spin.
#[derive(Clone, Copy)]
enum SpinPhase {
    /// Not needed yet (the first look may find an item).
    NotYet,
    /// Watching the counter until `until`.
    Spinning {
        /// When the spin ends.
        until: Instant,
        /// The budget it was given.
        budget: Duration,
        /// The caller's deadline comes before the budget's end.
        cut_short: bool,
        /// Its outcome has been reported to the policy.
        reported: bool,
    },
    /// Over, or not allowed: sleep.
    Over,
}

impl SpinPhase {
    /// Starts this `get`'s spin, if the policy allows one now.
    fn begin(policy: &Spin, now: Instant, deadline: Option<Instant>) -> SpinPhase {
        match policy.begin().map(|b| b.min(SPIN_FOR)) {
            Some(budget) => {
                let full = now + budget;
                SpinPhase::Spinning {
                    until: deadline.map_or(full, |d| d.min(full)),
                    budget,
                    cut_short: deadline.is_some_and(|d| d < full),
                    reported: false,
                }
            }
            None => SpinPhase::Over,
        }
    }

    /// Spins while the spin lasts: true to look again (the counter moved, or
    /// may have), false to sleep. Reports the outcome to `policy` once.
    fn watch(&mut self, policy: &Spin, seq: &AtomicU32, seen: u32, now: Instant) -> bool {
        let SpinPhase::Spinning {
            until,
            budget,
            cut_short,
            ref mut reported,
        } = *self
        else {
            return false;
        };
        if now >= until {
            if !*reported {
                policy.end(false, budget, cut_short);
            }
            *self = SpinPhase::Over;
            return false;
        }
        if spin_while_unchanged(seq, seen, until) && !*reported {
            *reported = true;
            policy.end(true, budget, cut_short);
        }
        true
    }
}

/// Watches `seq` while it still reads `seen` (no item placed since), until
/// `until`; true if it changed. Only a hint: the next look decides.
#[inline]
fn spin_while_unchanged(seq: &AtomicU32, seen: u32, until: Instant) -> bool {
    loop {
        for _ in 0..64 {
            // Relaxed: the value only decides how long to spin.
            if seq.load(Ordering::Relaxed) != seen {
                return true;
            }
            std::hint::spin_loop();
        }
        if Instant::now() >= until {
            return false;
        }
    }
}

/// Places one encoded item: in the ring while the spill log is empty and
/// the ring has room, else in the spill log; items with handles in the
/// socket, behind a placeholder in the ring (see the module docs).
/// `out_of_band`: the bytes of a large item with handles, already in a
/// sealed memfd.
fn place_item(
    h: &Handles,
    enc: &reduction::Encoded,
    out_of_band: Option<OwnedFd>,
    deadline: Option<Instant>,
) -> Result<()> {
    if !enc.fds.is_empty() {
        return send_with_handles(h, enc, out_of_band, deadline);
    }
    let log = h.log();
    let held = log.lock_wait();
    if enc.bytes.len() <= ring::ITEM_MAX
        && log.is_empty()
        && h.ring().push_locked(&held, &enc.bytes)
    {
        return Ok(());
    }
    log.append_locked(&held, &enc.bytes)
}

/// Sends an item carrying handles: one datagram with its fds, inline or
/// (over 64 KiB, or too big for the socket buffer) out of band, and its
/// placeholder in the ring, both under the lock so that placeholders and
/// datagrams are in the same order. It waits, until `deadline`, while the
/// spill log holds items (a placeholder in the ring now would pass them), the
/// ring is full, or the socket is.
fn send_with_handles(
    h: &Handles,
    enc: &reduction::Encoded,
    mut out_of_band: Option<OwnedFd>,
    deadline: Option<Instant>,
) -> Result<()> {
    let item_fds: Vec<BorrowedFd<'_>> = enc.fds.iter().map(|f| f.as_fd()).collect();
    loop {
        let sent = {
            let (ring, log) = (h.ring(), h.log());
            let held = log.lock_wait();
            if log.is_empty() && ring.has_room_locked(&held, 0) {
                let sent = match &out_of_band {
                    None => {
                        let kind = [KIND_INLINE];
                        let bufs = [IoSlice::new(&kind), IoSlice::new(&enc.bytes)];
                        h.try_send(&held, &bufs, &item_fds)?
                    }
                    Some(memfd) => {
                        let mut fds = Vec::with_capacity(item_fds.len() + 1);
                        fds.push(memfd.as_fd());
                        fds.extend(item_fds.iter().copied());
                        let mut head = [0u8; 9];
                        head[0] = KIND_OUT_OF_BAND;
                        head[1..].copy_from_slice(&(enc.bytes.len() as u64).to_le_bytes());
                        h.try_send(&held, &[IoSlice::new(&head)], &fds)?
                    }
                };
                if let Sent::Yes = sent {
                    // Room was checked under this same hold.
                    let _ = ring.push_handles_locked(&held);
                    return Ok(());
                }
                Some(sent)
            } else {
                None
            }
        };
        match sent {
            Some(Sent::TooBig) if out_of_band.is_none() => {
                out_of_band = Some(out_of_band_copy(enc, item_fds.len())?);
                continue;
            }
            Some(Sent::TooBig) => return Err(Error::Io(fd::too_big())),
            _ => {}
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Err(Error::Full);
        }
        let until = deadline.map_or(now + HANDLES_WAIT_SLICE, |d| {
            d.min(now + HANDLES_WAIT_SLICE)
        });
        if let Some(Sent::NoRoom) = sent {
            // POLLOUT on a datagram socket means "no more than a quarter of
            // the buffer is used", while a send succeeds whenever the item
            // fits: waiting for it alone could wait forever with room there.
            // So in slices, and the retry above tells the truth.
            fd::wait_for(h.tx.as_fd(), fd::WRITABLE, Some(until))?;
        } else {
            // Rare (handles put behind a backlog that filled the ring and
            // spilled): look again soon.
            std::thread::sleep(until.saturating_duration_since(now));
        }
    }
}

/// The sealed memfd for an item with handles sent out of band.
fn out_of_band_copy(enc: &reduction::Encoded, handles: usize) -> Result<OwnedFd> {
    if handles + 1 > fd::MAX_FDS_PER_MESSAGE {
        return Err(Error::encode(format!(
            "a large queue item can carry at most {} handles",
            fd::MAX_FDS_PER_MESSAGE - 1
        )));
    }
    Ok(shm::sealed_bytes(&enc.bytes)?)
}

/// Decodes one received datagram.
fn decode_item<T: DeserializeOwned>(dgram: &[u8], mut fds: Vec<OwnedFd>) -> Result<T> {
    match dgram.first() {
        Some(&KIND_INLINE) => reduction::decode(&dgram[1..], fds),
        Some(&KIND_OUT_OF_BAND) if dgram.len() == 9 && !fds.is_empty() => {
            let len = u64::from_le_bytes(dgram[1..9].try_into().expect("8 bytes"));
            let memfd = fds.remove(0);
            // A sparse memfd costs its sender nothing: refuse before allocating.
            if len > DEFAULT_MAX_MESSAGE_LEN {
                return Err(Error::MessageTooLarge {
                    len,
                    max: DEFAULT_MAX_MESSAGE_LEN,
                });
            }
            let len = usize::try_from(len)
                .map_err(|_| Error::decode("out-of-band queue item too large"))?;
            let bytes = shm::read_sealed(memfd.as_fd(), len)
                .map_err(|e| Error::decode(format!("out-of-band queue item: {e}")))?;
            reduction::decode(&bytes, fds)
        }
        _ => Err(Error::decode(format!(
            "corrupt queue item ({} bytes, {} fds)",
            dgram.len(),
            fds.len()
        ))),
    }
}

/// Marks one task done on `word`; false if none was pending.
fn task_done_word(word: &AtomicU32) -> bool {
    match word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1)) {
        Ok(1) => {
            futex::wake_all(word);
            true
        }
        Ok(_) => true,
        Err(_) => false,
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field(
                "len",
                &self.inner.handles.word(layout::LEN).load(Ordering::Relaxed),
            )
            .field("ring_bytes", &self.inner.handles.ring().waiting_bytes())
            .field("spilled_bytes", &self.inner.handles.log().waiting_bytes())
            .field("maxsize", &self.inner.maxsize)
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish()
    }
}

/// The wire form of a queue inside a sent value.
#[derive(Serialize, Deserialize)]
struct WireQueue {
    #[serde(
        serialize_with = "reduction::serialize_handle",
        deserialize_with = "reduction::deserialize_fd"
    )]
    tx: OwnedFd,
    #[serde(
        serialize_with = "reduction::serialize_handle",
        deserialize_with = "reduction::deserialize_fd"
    )]
    rx: OwnedFd,
    #[serde(
        serialize_with = "reduction::serialize_handle",
        deserialize_with = "reduction::deserialize_fd"
    )]
    shm: OwnedFd,
    maxsize: u32,
    joinable: bool,
}

impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(S::Error::custom("cannot send a closed queue"));
        }
        let h = &self.inner.handles;
        let dup = |fd: BorrowedFd<'_>| fd.try_clone_to_owned().map_err(S::Error::custom);
        WireQueue {
            tx: dup(h.tx.as_fd())?,
            rx: dup(h.rx.as_fd())?,
            shm: dup(h.shm.fd())?,
            maxsize: self.inner.maxsize,
            joinable: self.inner.joinable,
        }
        .serialize(serializer)
    }
}

impl<'de, T: Serialize + DeserializeOwned> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let w = WireQueue::deserialize(deserializer)?;
        let shm = ShmRegion::from_fd_prefix(w.shm, layout::MAP_LEN).map_err(D::Error::custom)?;
        if shm.file_len().map_err(D::Error::custom)? < spill::LOG_END {
            return Err(D::Error::custom("queue memory too small for its spill log"));
        }
        Ok(Queue::from_handles(
            Handles::new(w.tx, w.rx, shm),
            w.maxsize,
            w.joinable,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_get_spin_ends_at_its_deadline_and_sees_a_new_item() {
        let seq = AtomicU32::new(5);
        let policy = Spin::new(true);
        let now = Instant::now();
        // A deadline of now: no time to spin, so sleep (or give up) at once.
        let mut phase = SpinPhase::begin(&policy, now, Some(now));
        assert!(!phase.watch(&policy, &seq, 5, Instant::now()));
        assert!(matches!(phase, SpinPhase::Over));
        // Without a deadline: a moved counter is seen (look again); an
        // unmoved one is watched until the spin ends, then sleep.
        let mut phase = SpinPhase::begin(&policy, Instant::now(), None);
        if let SpinPhase::Spinning { budget, .. } = phase {
            assert!(budget <= SPIN_FOR);
            seq.store(6, Ordering::Relaxed);
            assert!(phase.watch(&policy, &seq, 5, Instant::now()));
            let t0 = Instant::now();
            while phase.watch(&policy, &seq, 6, Instant::now()) {}
            assert!(t0.elapsed() <= SPIN_FOR + Duration::from_secs(5));
        }
        assert!(!phase.watch(&policy, &seq, 6, Instant::now()));
    }

    #[test]
    fn items_round_trip_in_order() {
        let q = Queue::<(u32, String)>::new().unwrap();
        for i in 0..100 {
            q.put((i, format!("item {i}"))).unwrap();
        }
        assert_eq!(q.qsize(), 100);
        for i in 0..100 {
            assert_eq!(q.get().unwrap(), (i, format!("item {i}")));
        }
        assert!(q.empty());
        assert_eq!(q.qsize(), 0);
    }

    #[test]
    fn big_items_go_out_of_band() {
        let q = Queue::<Vec<u8>>::new().unwrap();
        let big: Vec<u8> = (0..(3 * INLINE_MAX)).map(|i| (i % 251) as u8).collect();
        q.put(big.clone()).unwrap();
        q.put(vec![7]).unwrap();
        assert_eq!(q.get().unwrap(), big);
        assert_eq!(q.get().unwrap(), vec![7]);
    }

    #[test]
    fn bounded_put_reports_full() {
        let q = Queue::<u8>::with_maxsize(2).unwrap();
        q.put(1).unwrap();
        q.put(2).unwrap();
        assert!(q.full());
        assert!(matches!(q.put_nowait(3), Err(Error::Full)));
        assert_eq!(q.get().unwrap(), 1);
        q.put_nowait(3).unwrap();
    }

    #[test]
    fn wrong_type_is_a_decode_error() {
        let q = Queue::<String>::new().unwrap();
        q.put("x".into()).unwrap();
        let other: Queue<u64> = Queue {
            inner: q.inner.clone(),
            _items: PhantomData,
        };
        assert!(matches!(other.get(), Err(Error::Decode(_))));
        assert_eq!(q.qsize(), 0);
    }

    #[test]
    fn item_len_check_refuses_past_the_limit() {
        check_item_len(10, 10).unwrap();
        assert!(matches!(
            check_item_len(11, 10),
            Err(Error::MessageTooLarge { len: 11, max: 10 })
        ));
        // What `put` checks against: what a `get` accepts.
        let too_long = DEFAULT_MAX_MESSAGE_LEN as usize + 1;
        assert!(matches!(
            check_item_len(too_long, DEFAULT_MAX_MESSAGE_LEN),
            Err(Error::MessageTooLarge { .. })
        ));
    }

    #[test]
    fn a_corrupt_spill_log_gives_its_slot_back() {
        let q = Queue::<Vec<u8>>::with_maxsize(1).unwrap();
        // Over INLINE_MAX: the item goes to the spill log.
        q.put(vec![1; 2 * INLINE_MAX]).unwrap();
        let h = q.handles().unwrap();
        assert!(!h.log().is_empty());
        // Its length header now claims more than the log holds.
        shm::write_all_at(h.shm.fd(), spill::LOG_START, &[&[0xff; 9][..], &[0x01]]).unwrap();
        assert!(matches!(q.get_nowait(), Err(Error::Decode(_))));
        assert_eq!(q.qsize(), 0);
        q.put_nowait(vec![2]).unwrap();
        assert_eq!(q.get().unwrap(), vec![2]);
    }

    #[test]
    fn task_done_counts() {
        let jq = JoinableQueue::<u8>::new().unwrap();
        jq.put(1).unwrap();
        assert!(!jq.join_timeout(Duration::from_millis(10)));
        jq.get().unwrap();
        jq.task_done().unwrap();
        assert!(jq.join_timeout(Duration::from_millis(10)));
        assert!(matches!(jq.task_done(), Err(Error::Value(_))));
    }
}
