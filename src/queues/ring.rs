//! The ring: where a queue's small items wait, copied through shared memory
//! with no system call.
//!
//! The ring is [`RING_LEN`] bytes of the queue's memfd, right after the
//! counter page, and mapped by every holder with it. Records are packed one
//! after the other: a `u32` header (little-endian) and, for an item, its
//! encoded bytes, padded to 4 bytes, so a header never straddles the ring's
//! end. A header is one of
//!
//! * `0..=`[`ITEM_MAX`]: an item of that many bytes follows;
//! * [`HANDLES`]: a *placeholder*: the item carries handles, so it travels as
//!   a datagram in the queue's socket (its fds must ride `SCM_RIGHTS`); the
//!   placeholder keeps its place among the items of the ring;
//! * [`WRAP`]: nothing more before the ring's end: the next record is at its
//!   start.
//!
//! Two monotonic byte counts in the counter block delimit the waiting
//! records, as for the spill log: `HEAD` (where the next record goes) and
//! `TAIL` (the oldest one); a count's place in the ring is the count modulo
//! [`RING_LEN`]. Everything happens under the queue's lock (the spill log's
//! [`RawLock`](crate::synchronize::raw::RawLock), which a waiter takes over
//! from a dead holder), in the spill log's order, so the ring is whole
//! wherever a process is killed: a producer writes its record past `HEAD` and
//! only then moves `HEAD` over it; a consumer copies a record out and only
//! then moves `TAIL` past it. Whole pages behind `TAIL` are given back
//! (`FALLOC_FL_PUNCH_HOLE`) as the tail crosses them, so a drained ring holds
//! less than a page; `PUNCHED` says how far that has gone.

use std::sync::atomic::{AtomicU64, Ordering};

use super::spill::Locked;
use crate::error::{Error, Result};
use crate::platform::shm::{self, ShmRegion};

/// Where the ring starts in the queue's memfd (and in its mapping): the page
/// after the counter block, so punching never touches the counters.
pub(super) const RING_START: usize = 4096;

/// The ring's size: 4 MiB of waiting records (about 200,000 small
/// integers, a 20-byte record each) before the spill log takes over, so a
/// producer may run that far ahead of its consumers at memory speed. Only
/// what waits costs memory (pages behind the tail are given back); the rest
/// is address space.
pub(super) const RING_LEN: usize = 4 << 20;

/// Where the ring ends in the memfd (where the spill log starts).
pub(super) const RING_END: usize = RING_START + RING_LEN;

/// The largest item kept in the ring; larger ones go to the spill log.
pub(super) const ITEM_MAX: usize = 64 * 1024;

/// Header of a placeholder for an item in the socket.
const HANDLES: u32 = u32::MAX - 1;

/// Header of the filler before the ring's end.
const WRAP: u32 = u32::MAX;

/// Page size used to round punched ranges.
const PAGE: u64 = 4096;

/// Pages behind the tail are given back once this much has piled up, or
/// whenever the ring is drained.
const PUNCH_CHUNK: u64 = 64 * 1024;

const _: () = assert!(RING_LEN % PAGE as usize == 0 && ITEM_MAX + 8 < RING_LEN);
const _: () = assert!(RING_END as u64 == super::spill::LOG_START);

/// What [`Ring::take_locked`] found at the tail.
pub(super) enum Next {
    /// An item of this many bytes, copied to the start of the scratch buffer;
    /// the ring has moved past it.
    Item(usize),
    /// A placeholder: the item is the next datagram in the socket. The ring
    /// has not moved: [`Ring::skip_locked`] with `next` once it is received.
    Handles {
        /// `TAIL` past the placeholder.
        next: u64,
    },
}

/// A view of a queue's ring: its offsets in the counter block and the mapped
/// bytes.
pub(super) struct Ring<'h> {
    /// The queue's memfd: counter block and ring mapped.
    shm: &'h ShmRegion,
    /// Offset of `HEAD` in the counter block (`TAIL` and `PUNCHED` follow).
    at: usize,
}

/// Bytes a record with `len` bytes of item takes (header and padding).
fn record_len(len: usize) -> u64 {
    4 + len.next_multiple_of(4) as u64
}

impl<'h> Ring<'h> {
    /// The ring whose `HEAD`, `TAIL` and `PUNCHED` words (u64, 8-aligned)
    /// start at `at` of `shm`'s counter block.
    pub(super) fn new(shm: &'h ShmRegion, at: usize) -> Ring<'h> {
        Ring { shm, at }
    }

    /// Writes a fresh, empty ring's offsets (at queue creation).
    pub(super) fn init(&self) {
        self.head().store(0, Ordering::Relaxed);
        self.tail().store(0, Ordering::Relaxed);
        self.punched().store(0, Ordering::Relaxed);
    }

    fn head(&self) -> &AtomicU64 {
        self.shm.atomic_u64(self.at)
    }

    fn tail(&self) -> &AtomicU64 {
        self.shm.atomic_u64(self.at + 8)
    }

    fn punched(&self) -> &AtomicU64 {
        self.shm.atomic_u64(self.at + 16)
    }

    /// True if every record put has been taken. Without the lock: `HEAD` is
    /// read first, so a record this thread put before the call is seen.
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        let head = self.head().load(Ordering::Acquire);
        self.tail().load(Ordering::Acquire) == head
    }

    /// Bytes of records waiting (a snapshot).
    pub(super) fn waiting_bytes(&self) -> u64 {
        let head = self.head().load(Ordering::Acquire);
        head.saturating_sub(self.tail().load(Ordering::Acquire))
    }

    /// Where the next record of `need` bytes goes, with the lock held:
    /// `(HEAD, where it is written, HEAD after it)`, or `None` when the ring
    /// has no room for it. A record that would cross the ring's end goes to
    /// its start, behind a [`WRAP`] filler.
    fn room(&self, need: u64) -> Option<(u64, u64, u64)> {
        let head = self.head().load(Ordering::Relaxed);
        let tail = self.tail().load(Ordering::Relaxed);
        let used = head.checked_sub(tail).filter(|&u| u <= RING_LEN as u64)?;
        let to_end = RING_LEN as u64 - head % RING_LEN as u64;
        let (at, end) = if need <= to_end {
            (head, head + need)
        } else {
            (head + to_end, head + to_end + need)
        };
        (end - tail <= RING_LEN as u64 && used <= RING_LEN as u64).then_some((head, at, end))
    }

    /// File-relative mapping offset of ring count `pos`.
    fn offset(pos: u64) -> usize {
        RING_START + (pos % RING_LEN as u64) as usize
    }

    /// True if a record of `len` bytes of item (or a placeholder: 0) fits now.
    pub(super) fn has_room_locked(&self, _held: &Locked<'_, '_>, len: usize) -> bool {
        self.room(record_len(len)).is_some()
    }

    /// Puts an item's bytes (at most [`ITEM_MAX`]), with the lock held
    /// (`_held`). False when the ring has no room for it.
    pub(super) fn push_locked(&self, _held: &Locked<'_, '_>, bytes: &[u8]) -> bool {
        debug_assert!(bytes.len() <= ITEM_MAX);
        self.push(bytes.len() as u32, bytes)
    }

    /// Puts a placeholder for an item just sent in the socket, with the lock
    /// held. False when the ring has no room (the caller checked first).
    pub(super) fn push_handles_locked(&self, _held: &Locked<'_, '_>) -> bool {
        self.push(HANDLES, &[])
    }

    fn push(&self, header: u32, bytes: &[u8]) -> bool {
        let Some((head, at, end)) = self.room(record_len(bytes.len())) else {
            return false;
        };
        if at != head {
            self.shm.copy_in(Self::offset(head), &WRAP.to_le_bytes());
        }
        let off = Self::offset(at);
        self.shm.copy_in(off, &header.to_le_bytes());
        self.shm.copy_in(off + 4, bytes);
        // Release: a consumer that sees the new HEAD sees the record's bytes.
        self.head().store(end, Ordering::Release);
        true
    }

    /// Takes the oldest record, with the lock held. An item is copied to the
    /// start of `scratch` (at least [`ITEM_MAX`] bytes). `None` when the ring
    /// is empty.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] for a record that cannot be one of ours (a length
    /// past `HEAD`, or an unknown header): the ring is then dropped whole, as
    /// no record boundary after it can be trusted.
    pub(super) fn take_locked(
        &self,
        held: &Locked<'_, '_>,
        scratch: &mut [u8],
    ) -> Result<Option<Next>> {
        let head = self.head().load(Ordering::Acquire);
        let mut tail = self.tail().load(Ordering::Relaxed);
        loop {
            if tail >= head || head - tail > RING_LEN as u64 {
                if tail != head {
                    return Err(self.drop_all(held, tail, head));
                }
                return Ok(None);
            }
            let off = Self::offset(tail);
            let mut hdr = [0u8; 4];
            self.shm.copy_out(off, &mut hdr);
            let hdr = u32::from_le_bytes(hdr);
            let to_end = RING_LEN as u64 - tail % RING_LEN as u64;
            let avail = head - tail;
            match hdr {
                WRAP if to_end <= avail => {
                    tail += to_end;
                    continue;
                }
                HANDLES if avail >= 4 => return Ok(Some(Next::Handles { next: tail + 4 })),
                len if (len as usize) <= ITEM_MAX
                    && (len as usize) <= scratch.len()
                    && record_len(len as usize) <= avail.min(to_end) =>
                {
                    let len = len as usize;
                    self.shm.copy_out(off + 4, &mut scratch[..len]);
                    self.skip_locked(held, tail + record_len(len));
                    return Ok(Some(Next::Item(len)));
                }
                _ => return Err(self.drop_all(held, tail, head)),
            }
        }
    }

    /// Drops every waiting record (a corrupt ring) and says so.
    fn drop_all(&self, held: &Locked<'_, '_>, tail: u64, head: u64) -> Error {
        self.skip_locked(held, head);
        Error::decode(format!(
            "corrupt queue ring at {tail}: {} bytes dropped",
            head.wrapping_sub(tail)
        ))
    }

    /// Moves `TAIL` to `new_tail` (records before it are taken), then gives
    /// back the whole pages behind it: once [`PUNCH_CHUNK`] has piled up, or
    /// whenever the ring is drained.
    pub(super) fn skip_locked(&self, _held: &Locked<'_, '_>, new_tail: u64) {
        self.tail().store(new_tail, Ordering::Release);
        let head = self.head().load(Ordering::Relaxed);
        let drained = new_tail == head;
        let whole = new_tail / PAGE * PAGE;
        let punched = self.punched().load(Ordering::Relaxed);
        if whole > punched && (drained || whole - punched >= PUNCH_CHUNK) {
            // Count `x` shares its place with `x + RING_LEN`: below
            // `head - RING_LEN`, that is a waiting record written since (the
            // tail passed `x` a while ago), whose page must stay.
            let from = punched.max((head.saturating_sub(RING_LEN as u64)).next_multiple_of(PAGE));
            // Memory only: a failure leaves pages allocated, never the ring
            // wrong, and the next punch covers the range again.
            if from >= whole || self.punch(from, whole).is_ok() {
                self.punched().store(whole, Ordering::Relaxed);
            }
        }
    }

    /// Gives back ring counts `from..to` (page-aligned, at most the ring),
    /// in one or two ranges of the file.
    fn punch(&self, from: u64, to: u64) -> std::io::Result<()> {
        let ring = RING_LEN as u64;
        let start = from % ring;
        let len = to - from;
        let first = len.min(ring - start);
        let fd = self.shm.fd();
        shm::punch_hole(fd, RING_START as u64 + start, first)?;
        if len > first {
            shm::punch_hole(fd, RING_START as u64, len - first)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::spill::{LOG_END, Log};
    use super::*;
    use crate::synchronize::raw::RawLock;
    use std::sync::Arc;

    /// Where the tests' lock and log counters go (the ring's are at 0).
    const LOCK_AT: usize = 32;
    const LOG_AT: usize = LOCK_AT + RawLock::SIZE;

    fn region() -> (Arc<ShmRegion>, RawLock) {
        let shm = Arc::new(ShmRegion::create_sparse(c"t", RING_END, LOG_END).unwrap());
        let lock = RawLock::init(shm.clone(), LOCK_AT);
        (shm, lock)
    }

    fn take(ring: &Ring<'_>, log: &Log<'_>, scratch: &mut [u8]) -> Option<Vec<u8>> {
        let held = log.lock(None).unwrap();
        match ring.take_locked(&held, scratch).unwrap()? {
            Next::Item(len) => Some(scratch[..len].to_vec()),
            Next::Handles { next } => {
                ring.skip_locked(&held, next);
                Some(b"<handles>".to_vec())
            }
        }
    }

    #[test]
    fn records_wrap_around_in_order_and_pages_are_given_back() {
        let (shm, lock) = region();
        let log = Log::new(&shm, &lock, LOG_AT);
        let ring = Ring::new(&shm, 0);
        ring.init();
        let mut scratch = vec![0u8; ITEM_MAX];
        // Items of every length around the padding, several times round.
        let mut next_put = 0u32;
        let mut next_get = 0u32;
        let item = |i: u32| vec![i as u8; (i % 37) as usize * 100 + (i % 5) as usize];
        while ring.head().load(Ordering::Relaxed) <= 2 * RING_LEN as u64 {
            {
                let held = log.lock(None).unwrap();
                while next_put < next_get + 500 && ring.push_locked(&held, &item(next_put)) {
                    next_put += 1;
                }
                if next_put % 7 == 0 {
                    assert!(ring.push_handles_locked(&held));
                }
            }
            while let Some(got) = take(&ring, &log, &mut scratch) {
                if got == b"<handles>" {
                    continue;
                }
                assert_eq!(got, item(next_get), "item {next_get}");
                next_get += 1;
            }
        }
        assert!(next_get > 2 * RING_LEN as u32 / 4000);
        assert!(ring.is_empty());
        // The counter page, and at most the page the tail is in.
        assert!(shm::allocated_bytes(shm.fd()).unwrap() <= 2 * PAGE);
    }

    // Kept full: the producer fills every byte the consumer frees, for
    // several turns of the ring, so the pages behind the tail are given back
    // while newer records already share their places.
    #[test]
    fn a_ring_kept_full_gives_back_only_what_no_record_uses() {
        let (shm, lock) = region();
        let log = Log::new(&shm, &lock, LOG_AT);
        let ring = Ring::new(&shm, 0);
        ring.init();
        let item = |i: u32| {
            let mut v = vec![(i % 251) as u8; 10 + (i % 29) as usize];
            v[..4].copy_from_slice(&i.to_le_bytes());
            v
        };
        let mut scratch = vec![0u8; ITEM_MAX];
        let (mut next_put, mut next_get) = (0u32, 0u32);
        while ring.head().load(Ordering::Relaxed) < 3 * RING_LEN as u64 {
            {
                let held = log.lock(None).unwrap();
                while ring.push_locked(&held, &item(next_put)) {
                    next_put += 1;
                }
            }
            for _ in 0..50 {
                assert_eq!(
                    take(&ring, &log, &mut scratch).unwrap(),
                    item(next_get),
                    "item {next_get}"
                );
                next_get += 1;
            }
        }
        while next_get < next_put {
            assert_eq!(take(&ring, &log, &mut scratch).unwrap(), item(next_get));
            next_get += 1;
        }
        assert!(take(&ring, &log, &mut scratch).is_none());
        assert!(shm::allocated_bytes(shm.fd()).unwrap() <= 2 * PAGE);
    }

    #[test]
    fn a_full_ring_refuses_and_takes_again_once_drained() {
        let (shm, lock) = region();
        let log = Log::new(&shm, &lock, LOG_AT);
        let ring = Ring::new(&shm, 0);
        ring.init();
        let item = vec![5u8; 1000];
        let held = log.lock(None).unwrap();
        let mut n = 0;
        while ring.push_locked(&held, &item) {
            n += 1;
        }
        assert_eq!(n, RING_LEN / 1004);
        assert_eq!(ring.has_room_locked(&held, 0), RING_LEN - n * 1004 >= 4);
        drop(held);
        let mut scratch = vec![0u8; ITEM_MAX];
        for _ in 0..n {
            assert_eq!(take(&ring, &log, &mut scratch).unwrap(), item);
        }
        assert!(take(&ring, &log, &mut scratch).is_none());
        let held = log.lock(None).unwrap();
        assert!(ring.push_locked(&held, &item));
    }

    // A process killed holding the lock in the middle of writing a record
    // (past HEAD) or of copying one out (TAIL not moved): the next holder
    // takes the lock over and finds the ring whole.
    #[test]
    fn a_holder_killed_mid_record_leaves_the_ring_whole() {
        const DEAD_PID: u32 = (1 << 22) - 1;
        let (shm, lock) = region();
        let log = Log::new(&shm, &lock, LOG_AT);
        let ring = Ring::new(&shm, 0);
        ring.init();
        {
            let held = log.lock(None).unwrap();
            assert!(ring.push_locked(&held, b"first"));
        }
        // A producer died after writing part of a record past HEAD.
        let head = ring.head().load(Ordering::Relaxed);
        shm.copy_in(Ring::offset(head), &[9, 0, 0, 0, b'h']);
        shm.atomic_u32(32).store(DEAD_PID, Ordering::Relaxed);
        {
            let held = log.lock(None).unwrap();
            assert!(ring.push_locked(&held, b"second"));
        }
        assert_eq!(lock.recoveries(), 1);
        // A consumer died while copying "first" out.
        shm.atomic_u32(32).store(DEAD_PID, Ordering::Relaxed);
        let mut scratch = vec![0u8; ITEM_MAX];
        assert_eq!(take(&ring, &log, &mut scratch).unwrap(), b"first");
        assert_eq!(lock.recoveries(), 2);
        assert_eq!(take(&ring, &log, &mut scratch).unwrap(), b"second");
        assert!(take(&ring, &log, &mut scratch).is_none());
    }

    #[test]
    fn a_corrupt_header_drops_the_ring_with_an_error() {
        let (shm, lock) = region();
        let log = Log::new(&shm, &lock, LOG_AT);
        let ring = Ring::new(&shm, 0);
        ring.init();
        let held = log.lock(None).unwrap();
        assert!(ring.push_locked(&held, b"ok"));
        assert!(ring.push_locked(&held, b"ok too"));
        shm.copy_in(RING_START, &0x7000_0000u32.to_le_bytes());
        let mut scratch = vec![0u8; ITEM_MAX];
        assert!(matches!(
            ring.take_locked(&held, &mut scratch),
            Err(Error::Decode(_))
        ));
        assert!(ring.take_locked(&held, &mut scratch).unwrap().is_none());
        assert!(ring.push_locked(&held, b"next"));
        assert!(matches!(
            ring.take_locked(&held, &mut scratch).unwrap(),
            Some(Next::Item(4))
        ));
        assert_eq!(&scratch[..4], b"next");
    }
}
