//! The spill log: where a queue's items wait once its ring (`ring.rs`) is
//! full, and items over the ring's limit, so that `put` never waits for a
//! consumer.
//!
//! The log lives in the queue's own memfd, after the counter block: the file
//! is made huge and sparse at creation ([`LOG_END`]), so every holder already
//! has it, and it costs nothing until an item spills. It is never mapped;
//! records are copied in and out with `pwritev`/`pread`.
//!
//! A record is the item's encoded bytes behind their length (LEB128, one byte
//! below 128), packed one after the other, so a waiting item costs its size,
//! not a page. Two byte offsets in the counter block delimit the waiting
//! records: `HEAD` (where the next record goes) and `TAIL` (the oldest one).
//! Both only grow. Everything happens under the queue's [`RawLock`] (which a
//! waiter takes over from a dead holder), and in an order that leaves the log
//! whole wherever a process is killed:
//!
//! * a producer writes its record past `HEAD` and only then moves `HEAD` over
//!   it: dying before that leaves bytes nobody reads, overwritten by the next
//!   record;
//! * a consumer copies a record out and only then moves `TAIL` past it: dying
//!   before that leaves the record for the next consumer;
//! * memory behind `TAIL` is given back in whole pages
//!   (`FALLOC_FL_PUNCH_HOLE`) by whoever holds the lock next; `PUNCHED` says
//!   how far that has been done, so a consumer killed before its punch only
//!   delays it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::connection::DEFAULT_MAX_MESSAGE_LEN;
use crate::error::{Error, Result};
use crate::platform::shm::{self, ShmRegion};
use crate::synchronize::raw::{RawLock, Spin};

/// Where the log starts in the queue's memfd: after the counter page (4 KiB)
/// and the ring (4 MiB), so punching holes never touches either (`ring.rs`
/// checks that the two meet).
pub(super) const LOG_START: u64 = 4096 + (4 << 20);

/// Where the log ends: 2^60 bytes of records over a queue's life (the file is
/// sparse, so only the waiting ones cost memory).
pub(super) const LOG_END: u64 = LOG_START + (1 << 60);

/// Bytes read at once when a record is taken: its length and, for a small
/// item, all of it in one `pread`.
const READ_AHEAD: usize = 4096;

/// Memory behind `TAIL` is given back once this much has piled up (or when
/// the log drains).
const PUNCH_CHUNK: u64 = 64 * 1024;

/// Page size used to round punched ranges (the kernel frees whole pages).
const PAGE: u64 = 4096;

/// A record taken out of the log.
pub(super) enum Record {
    /// The item's bytes are `scratch[start..start + len]` of the buffer given
    /// to [`Log::take_locked`].
    InScratch {
        /// Offset in the scratch buffer.
        start: usize,
        /// Length.
        len: usize,
    },
    /// An item larger than the read-ahead, copied into its own buffer.
    Owned(Vec<u8>),
}

/// A view of a queue's spill log: its offsets in the counter block, its lock,
/// and the memfd the records live in.
pub(super) struct Log<'h> {
    /// The queue's memfd: counter block mapped, log after it.
    shm: &'h ShmRegion,
    /// Guards every change of the log.
    lock: &'h RawLock,
    /// Offset of `HEAD` in the counter block (`TAIL` and `PUNCHED` follow).
    at: usize,
}

/// Holds the log's lock; releases it when dropped (also on unwind).
pub(super) struct Locked<'l, 'h> {
    log: &'l Log<'h>,
}

impl Drop for Locked<'_, '_> {
    fn drop(&mut self) {
        // Err only if the lock was not held: a waiter took it over from a
        // holder it wrongly judged dead, which needs our pid to be reused.
        let _ = self.log.lock.release();
    }
}

impl<'h> Log<'h> {
    /// The log whose `HEAD`, `TAIL` and `PUNCHED` words (u64, 8-aligned) start
    /// at `at` of `shm`'s counter block.
    pub(super) fn new(shm: &'h ShmRegion, lock: &'h RawLock, at: usize) -> Log<'h> {
        Log { shm, lock, at }
    }

    /// Writes a fresh, empty log's offsets (at queue creation).
    pub(super) fn init(&self) {
        self.head().store(LOG_START, Ordering::Relaxed);
        self.tail().store(LOG_START, Ordering::Relaxed);
        self.punched().store(LOG_START, Ordering::Relaxed);
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

    /// True if every record appended has been taken. Without the lock:
    /// `HEAD` is read first, so a record this thread appended before the
    /// call is seen (as waiting, or as taken). Only records that other
    /// producers append meanwhile can be missed.
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

    /// Takes the lock, waiting until `deadline` (`None`: as long as it takes,
    /// which is as long as a holder copies one record, or the ~100 ms in which
    /// a dead holder is found). `None` when the deadline passed first.
    pub(super) fn lock(&self, deadline: Option<Instant>) -> Option<Locked<'_, 'h>> {
        // A dead holder left the log whole (see the module docs): nothing to
        // repair, so `OwnerDied` is as good as `Clean`.
        self.lock.acquire_with(deadline, Spin::Eager)?;
        Some(Locked { log: self })
    }

    /// Takes the lock and appends one record holding `bytes`.
    #[cfg(test)]
    pub(super) fn append(&self, bytes: &[u8]) -> Result<()> {
        let held = self.lock_wait();
        self.append_locked(&held, bytes)
    }

    /// Takes the lock, waiting as long as it takes (as for `lock(None)`).
    pub(super) fn lock_wait(&self) -> Locked<'_, 'h> {
        // `None` only when a deadline passed; there is none.
        let _ = self.lock.acquire_with(None, Spin::Eager);
        Locked { log: self }
    }

    /// Appends one record holding `bytes`, with the lock held (`_held`).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the system has no memory for it (`ENOSPC`/`ENOMEM`
    /// from the memfd), or in the unreachable case of a log past
    /// [`LOG_END`]. Nothing is appended then.
    pub(super) fn append_locked(&self, _held: &Locked<'_, '_>, bytes: &[u8]) -> Result<()> {
        let mut len_buf = [0u8; 10];
        let n = encode_len(bytes.len() as u64, &mut len_buf);
        let head = self.head().load(Ordering::Relaxed);
        let end = head + n as u64 + bytes.len() as u64;
        if end > LOG_END {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "queue spill log exhausted (2^60 bytes over the queue's life)",
            )));
        }
        shm::write_all_at(self.shm.fd(), head, &[&len_buf[..n], bytes])?;
        // Release: a consumer that sees the new HEAD sees the record's bytes.
        self.head().store(end, Ordering::Release);
        Ok(())
    }

    /// Takes the oldest record, with the lock held (`_held`). `scratch` (at
    /// least [`READ_AHEAD`] bytes) receives small records. `None` when the log
    /// is empty.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] for a record that cannot be one of ours (a length
    /// past `HEAD` or above the message limit): the log is then dropped whole,
    /// as no record boundary after it can be trusted. [`Error::Io`] from
    /// `pread` (the record stays).
    pub(super) fn take_locked(
        &self,
        _held: &Locked<'_, '_>,
        scratch: &mut [u8],
    ) -> Result<Option<Record>> {
        let head = self.head().load(Ordering::Acquire);
        let tail = self.tail().load(Ordering::Relaxed);
        if tail >= head {
            return Ok(None);
        }
        let avail = head - tail;
        let first = (avail as usize).min(READ_AHEAD).min(scratch.len());
        shm::read_exact_at(self.shm.fd(), tail, &mut scratch[..first])?;
        let Some((len, hdr)) = decode_len(&scratch[..first])
            .filter(|&(len, hdr)| len <= avail - hdr as u64 && len <= DEFAULT_MAX_MESSAGE_LEN)
        else {
            self.advance(tail, head, head);
            return Err(Error::decode(format!(
                "corrupt queue spill log at offset {tail}: {avail} bytes dropped"
            )));
        };
        let len = len as usize;
        let record = if hdr + len <= first {
            Record::InScratch { start: hdr, len }
        } else {
            let mut v = vec![0u8; len];
            let have = first - hdr;
            v[..have].copy_from_slice(&scratch[hdr..first]);
            shm::read_exact_at(self.shm.fd(), tail + first as u64, &mut v[have..])?;
            Record::Owned(v)
        };
        self.advance(tail, tail + (hdr + len) as u64, head);
        Ok(Some(record))
    }

    /// Moves `TAIL` from `tail` to `new_tail` (a record is copied out), then
    /// gives back the pages behind it: every whole page once [`PUNCH_CHUNK`]
    /// has piled up, and the last, partial one too when the log is drained
    /// (`new_tail == head`; the next record's write brings a fresh page).
    fn advance(&self, tail: u64, new_tail: u64, head: u64) {
        debug_assert!(tail <= new_tail && new_tail <= head);
        self.tail().store(new_tail, Ordering::Release);
        let punched = self.punched().load(Ordering::Relaxed);
        let whole = new_tail / PAGE * PAGE;
        let drained = new_tail == head;
        let upto = if drained {
            new_tail.div_ceil(PAGE) * PAGE
        } else {
            whole
        };
        if upto > punched && (drained || upto - punched >= PUNCH_CHUNK) {
            // Memory only: a failure leaves pages allocated, never the log
            // wrong, and the next punch covers the range again.
            if shm::punch_hole(self.shm.fd(), punched, upto - punched).is_ok() {
                // From the last whole page: a drained log's partial page is
                // written again by the next record, so it is punched again.
                self.punched().store(whole, Ordering::Relaxed);
            }
        }
    }
}

/// Writes `v` as LEB128 into `out`; returns the bytes used (1 to 10).
fn encode_len(mut v: u64, out: &mut [u8; 10]) -> usize {
    let mut i = 0;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out[i] = byte;
            return i + 1;
        }
        out[i] = byte | 0x80;
        i += 1;
    }
}

/// Reads a LEB128 length at the start of `bytes`: `(value, bytes used)`, or
/// `None` if it is cut short or longer than 10 bytes.
fn decode_len(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f).checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn lengths_round_trip() {
        let mut buf = [0u8; 10];
        for v in [0, 1, 127, 128, 300, 1 << 20, u64::MAX] {
            let n = encode_len(v, &mut buf);
            assert_eq!(decode_len(&buf[..n]), Some((v, n)));
            assert_eq!(decode_len(&buf[..n - 1]), None);
        }
        assert_eq!(encode_len(127, &mut buf), 1);
        assert_eq!(decode_len(&[0xff; 11]), None);
    }

    fn log_region() -> (Arc<ShmRegion>, RawLock) {
        let shm = Arc::new(ShmRegion::create_sparse(c"t", 32 + RawLock::SIZE, LOG_END).unwrap());
        let lock = RawLock::init(shm.clone(), 32);
        (shm, lock)
    }

    #[test]
    fn records_come_back_in_order_and_memory_is_given_back() {
        let (shm, lock) = log_region();
        let log = Log::new(&shm, &lock, 0);
        log.init();
        assert!(log.is_empty());
        let big = vec![9u8; 300_000];
        for i in 0..1000u32 {
            log.append(&i.to_le_bytes()).unwrap();
        }
        log.append(&big).unwrap();
        assert!(!log.is_empty());
        assert_eq!(log.waiting_bytes(), 1000 * 5 + 3 + 300_000);
        let held = shm::allocated_bytes(shm.fd()).unwrap();
        assert!(held <= 320 * 1024, "{held}");
        let mut scratch = vec![0u8; READ_AHEAD];
        for i in 0..1000u32 {
            let g = log.lock(None).unwrap();
            match log.take_locked(&g, &mut scratch).unwrap() {
                Some(Record::InScratch { start, len }) => {
                    assert_eq!(&scratch[start..start + len], &i.to_le_bytes())
                }
                _ => panic!("record {i} missing"),
            }
        }
        let g = log.lock(None).unwrap();
        match log.take_locked(&g, &mut scratch).unwrap() {
            Some(Record::Owned(v)) => assert_eq!(v, big),
            _ => panic!("big record missing"),
        }
        assert!(log.take_locked(&g, &mut scratch).unwrap().is_none());
        drop(g);
        assert!(log.is_empty());
        // What is left: the counter page (the lock and the offsets).
        assert_eq!(shm::allocated_bytes(shm.fd()).unwrap(), PAGE);
    }

    /// A pid above any `pid_max`: a holder that is certainly dead.
    const DEAD_PID: u32 = (1 << 22) - 1;

    fn take_bytes(log: &Log<'_>, scratch: &mut [u8]) -> Option<Vec<u8>> {
        let g = log.lock(None).unwrap();
        match log.take_locked(&g, scratch).unwrap()? {
            Record::InScratch { start, len } => Some(scratch[start..start + len].to_vec()),
            Record::Owned(v) => Some(v),
        }
    }

    // A process killed holding the lock, in the middle of writing a record
    // (bytes past HEAD) or of copying one out (TAIL not moved): the next
    // taker of the lock finds it dead, takes over, and the log is whole.
    #[test]
    fn a_holder_killed_mid_record_leaves_the_log_whole() {
        let (shm, lock) = log_region();
        let log = Log::new(&shm, &lock, 0);
        log.init();
        log.append(b"first").unwrap();
        // A producer died after writing part of a record past HEAD.
        let head = log.head().load(Ordering::Relaxed);
        shm::write_all_at(shm.fd(), head, &[&[50, b'h', b'a', b'l', b'f']]).unwrap();
        shm.atomic_u32(32).store(DEAD_PID, Ordering::Relaxed);
        log.append(b"second").unwrap();
        assert_eq!(lock.recoveries(), 1);
        // A consumer died while copying "first" out: TAIL did not move.
        shm.atomic_u32(32).store(DEAD_PID, Ordering::Relaxed);
        let mut scratch = vec![0u8; READ_AHEAD];
        assert_eq!(take_bytes(&log, &mut scratch).unwrap(), b"first");
        assert_eq!(lock.recoveries(), 2);
        assert_eq!(take_bytes(&log, &mut scratch).unwrap(), b"second");
        assert!(take_bytes(&log, &mut scratch).is_none());
        assert!(log.is_empty());
    }

    #[test]
    fn a_corrupt_length_drops_the_log_with_an_error() {
        let (shm, lock) = log_region();
        let log = Log::new(&shm, &lock, 0);
        log.init();
        log.append(b"ok").unwrap();
        // A length far past HEAD, as a peer scribbling on the memfd would.
        shm::write_all_at(shm.fd(), LOG_START, &[&[0xff, 0x7f]]).unwrap();
        let mut scratch = vec![0u8; READ_AHEAD];
        let g = log.lock(None).unwrap();
        assert!(matches!(
            log.take_locked(&g, &mut scratch),
            Err(Error::Decode(_))
        ));
        assert!(log.take_locked(&g, &mut scratch).unwrap().is_none());
        drop(g);
        log.append(b"next").unwrap();
        let g = log.lock(None).unwrap();
        assert!(matches!(
            log.take_locked(&g, &mut scratch).unwrap(),
            Some(Record::InScratch { len: 4, .. })
        ));
    }
}
