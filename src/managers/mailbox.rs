//! The fast path of a local manager connection: two one-message mailboxes in
//! shared memory, with the socket kept only to wake a sleeping reader and to
//! tell when the peer is gone.
//!
//! A manager call is a strict ping-pong (one request, one answer, one thread
//! per connection on each side), so each direction holds at most one message.
//! The sender copies it into its slot and marks the slot full; a reader that
//! spins (the usual case: the answer comes within microseconds) sees it with
//! no system call at all. A reader that found nothing for [`SPIN`] marks
//! itself asleep and sleeps in `poll` on the socket; a sender that sees that
//! mark writes one byte to wake it. The mark and the slot are a Dekker pair
//! (store, full fence, load on both sides), so a wake-up is never missed.
//! Messages longer than a slot travel as a sealed memfd passed with the wake
//! byte. The peer's death closes the socket: a sleeping reader wakes to end
//! of file.
//!
//! CPython's managers send every call over a socket (or pipe), two system
//! calls and a wake-up per direction.

use crate::util::Unpoison;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::platform::fd;
use crate::platform::shm::{self, ShmRegion};

/// How long a reader polls before it sleeps. Measured with the
/// `manager_namespace_set_get_us` bench row: a round trip on an idle machine
/// takes a few microseconds, so this covers it with room to spare, and a
/// reader that gets no answer in time (a blocking call) costs only this much
/// CPU before it sleeps.
pub(crate) const SPIN: Duration = Duration::from_micros(50);

/// Bytes of one direction: a 16-byte header and the message.
pub(crate) const SLOT: usize = 64 * 1024;
/// Room for a message in a slot.
const ROOM: usize = SLOT - HEADER;
/// Slot header: state, asleep mark, length (u64).
const HEADER: usize = 16;
const STATE: usize = 0;
const ASLEEP: usize = 4;
const LEN: usize = 8;

/// Slot states.
const EMPTY: u32 = 0;
const FULL: u32 = 1;
/// The reader has claimed the message and is copying it out.
const TAKING: u32 = 2;
/// Flag on the length: the message is in a memfd sent with the wake byte.
const IN_MEMFD: u64 = 1 << 63;

/// Which slot a side writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The client: writes slot 0, reads slot 1.
    Client,
    /// The server: writes slot 1, reads slot 0.
    Server,
}

/// Both mailboxes of a connection, seen from one side.
pub(crate) struct Mailbox {
    region: ShmRegion,
    /// Offset of the slot this side writes.
    tx: usize,
    /// Offset of the slot this side reads.
    rx: usize,
    /// Which side this is.
    side: Side,
    /// Where a message is copied out to (reused, one reader at a time).
    inbox: Mutex<Vec<u8>>,
}

impl Mailbox {
    /// New mailboxes (the client makes them and sends the memfd).
    ///
    /// # Errors
    ///
    /// The errors of creating shared memory.
    pub(crate) fn create() -> io::Result<Mailbox> {
        Ok(Self::with(ShmRegion::create(2 * SLOT)?, Side::Client))
    }

    /// The mailboxes whose memfd the client sent.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `fd` is not a sealed region of the right size.
    pub(crate) fn open(fd: OwnedFd) -> io::Result<Mailbox> {
        let region = ShmRegion::from_fd(fd)?;
        if region.len() != 2 * SLOT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a manager mailbox of the wrong size",
            ));
        }
        Ok(Self::with(region, Side::Server))
    }

    fn with(region: ShmRegion, side: Side) -> Mailbox {
        let (tx, rx) = match side {
            Side::Client => (0, SLOT),
            Side::Server => (SLOT, 0),
        };
        Mailbox {
            region,
            tx,
            rx,
            side,
            inbox: Mutex::new(Vec::new()),
        }
    }

    /// Writes `raw` over this side's outgoing slot, header included, as they
    /// are (at most one slot): for the fuzzer, which plays a peer that writes
    /// anything at all there.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn write_raw_slot(&self, raw: &[u8]) {
        self.region.copy_in(self.tx, &raw[..raw.len().min(SLOT)]);
    }

    /// The memfd, for the upgrade message.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.region.fd()
    }

    /// Posts `payload`; wakes the peer through `sock` if it sleeps.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] if the previous message is still there (the peer broke
    /// the ping-pong), [`Error::Io`] from the wake-up (`EPIPE`: the peer is
    /// gone) or from making a memfd for a long message.
    pub(crate) fn send(&self, sock: BorrowedFd<'_>, payload: &[u8]) -> Result<()> {
        let state = self.region.atomic_u32(self.tx + STATE);
        if state.load(Ordering::Acquire) != EMPTY {
            return Err(Error::value(
                "manager connection: the peer has not taken the previous message",
            ));
        }
        let memfd = if payload.len() <= ROOM {
            self.region.copy_in(self.tx + HEADER, payload);
            self.region
                .atomic_u64(self.tx + LEN)
                .store(payload.len() as u64, Ordering::Relaxed);
            None
        } else {
            self.region
                .atomic_u64(self.tx + LEN)
                .store(payload.len() as u64 | IN_MEMFD, Ordering::Relaxed);
            Some(shm::sealed_bytes(payload)?)
        };
        state.store(FULL, Ordering::Release);
        fence(Ordering::SeqCst);
        let asleep = self
            .region
            .atomic_u32(self.tx + ASLEEP)
            .load(Ordering::Relaxed)
            != 0;
        if asleep || memfd.is_some() {
            let fds: Vec<BorrowedFd<'_>> = memfd.iter().map(|f| f.as_fd()).collect();
            if let Err(e) = fd::send_with_fds(sock, &[io::IoSlice::new(b"!")], &fds) {
                if memfd.is_some() {
                    // Without its memfd a long message never arrives, even
                    // if the reader already claimed the slot.
                    let _ = self.withdraw(Error::Closed);
                    return Err(e.into());
                }
                return self.withdraw(e.into());
            }
        } else if self.side == Side::Server && fd::peer_closed(sock) {
            // An answer to a client already gone must fail as a socket send
            // would: the server then undoes the call (a queue item taken by
            // a dead client's `get` goes back).
            return self.withdraw(Error::Io(io::ErrorKind::BrokenPipe.into()));
        }
        Ok(())
    }

    /// The peer looks gone: takes the posted message back and fails with `e`,
    /// unless the peer took it first (then it was delivered: `Ok`). One
    /// compare-and-swap against the reader's, so an answer is either
    /// delivered or undone, never both.
    fn withdraw(&self, e: Error) -> Result<()> {
        let state = self.region.atomic_u32(self.tx + STATE);
        match state.compare_exchange(FULL, EMPTY, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Err(e),
            Err(_) => Ok(()),
        }
    }

    /// Claims the message in the read slot, if there is one.
    fn try_take(&self) -> bool {
        let state = self.region.atomic_u32(self.rx + STATE);
        state.load(Ordering::Relaxed) == FULL
            && state
                .compare_exchange(FULL, TAKING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Waits for the peer's message and hands it to `f`. With `spin`, looks
    /// for up to [`SPIN`] before it sleeps on `sock`.
    ///
    /// # Errors
    ///
    /// [`Error::Eof`] when the peer closed its end (or this side was closed)
    /// with no message waiting; [`Error::Io`]; [`Error::Decode`] for a long
    /// message whose memfd did not come or does not hold it.
    pub(crate) fn recv<R>(
        &self,
        sock: BorrowedFd<'_>,
        spin: bool,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let state = self.region.atomic_u32(self.rx + STATE);
        let asleep = self.region.atomic_u32(self.rx + ASLEEP);
        let mut memfds = Vec::new();
        let mut taken = false;
        if spin {
            let until = Instant::now() + SPIN;
            let mut polls = 0u32;
            loop {
                if self.try_take() {
                    taken = true;
                    break;
                }
                polls += 1;
                if polls % 256 == 0 {
                    if Instant::now() >= until {
                        break;
                    }
                    // On a busy machine the peer may need this very CPU.
                    std::thread::yield_now();
                }
                std::hint::spin_loop();
            }
        }
        while !taken {
            asleep.store(1, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            if self.try_take() {
                break;
            }
            let open = self.sleep(sock, &mut memfds);
            asleep.store(0, Ordering::Relaxed);
            taken = self.try_take();
            if !taken && !open? {
                return Err(Error::Eof);
            }
        }
        asleep.store(0, Ordering::Relaxed);
        let len = self
            .region
            .atomic_u64(self.rx + LEN)
            .load(Ordering::Relaxed);
        let out = if len & IN_MEMFD != 0 {
            let bytes = self.take_memfd(sock, &mut memfds, len & !IN_MEMFD)?;
            f(&bytes)
        } else {
            let len = usize::try_from(len)
                .ok()
                .filter(|&n| n <= ROOM)
                .ok_or_else(|| Error::decode("manager mailbox: a corrupt length"))?;
            let mut inbox = self.inbox.lock().unpoison();
            inbox.resize(len, 0);
            self.region.copy_out(self.rx + HEADER, &mut inbox);
            state.store(EMPTY, Ordering::Release);
            return Ok(f(&inbox));
        };
        state.store(EMPTY, Ordering::Release);
        Ok(out)
    }

    /// Sleeps until `sock` is readable, then takes the wake bytes (and any
    /// memfd) there. False at end of file.
    fn sleep(&self, sock: BorrowedFd<'_>, memfds: &mut Vec<OwnedFd>) -> Result<bool> {
        fd::wait_for(sock, fd::READABLE, None)?;
        drain(sock, memfds, false)
    }

    /// The bytes of a long message: its memfd came (or comes) with a wake byte.
    fn take_memfd(
        &self,
        sock: BorrowedFd<'_>,
        memfds: &mut Vec<OwnedFd>,
        len: u64,
    ) -> Result<Vec<u8>> {
        while memfds.is_empty() {
            if !drain(sock, memfds, true)? && memfds.is_empty() {
                return Err(Error::decode(
                    "manager mailbox: the peer closed before a long message arrived",
                ));
            }
        }
        if len > crate::connection::DEFAULT_MAX_MESSAGE_LEN {
            return Err(Error::MessageTooLarge {
                len,
                max: crate::connection::DEFAULT_MAX_MESSAGE_LEN,
            });
        }
        let memfd = memfds.remove(0);
        let len = usize::try_from(len).map_err(Error::decode)?;
        shm::read_sealed(memfd.as_fd(), len).map_err(Error::decode)
    }
}

/// Reads the wake bytes waiting on `sock` (blocking for the first one with
/// `block`), keeping any fds that came with them. False at end of file.
fn drain(sock: BorrowedFd<'_>, memfds: &mut Vec<OwnedFd>, block: bool) -> Result<bool> {
    let mut buf = [0u8; 64];
    let mut cmsg = fd::cmsg_buffer();
    let mut nonblocking = !block;
    loop {
        match fd::recv_flags_with(sock, &mut buf, &mut cmsg, memfds, nonblocking)? {
            None => return Ok(true),
            Some(r) if r.len == 0 => return Ok(false),
            Some(r) if r.len < buf.len() => return Ok(true),
            Some(_) => nonblocking = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Mailbox, Mailbox, OwnedFd, OwnedFd) {
        let client = Mailbox::create().unwrap();
        let server = Mailbox::open(client.fd().try_clone_to_owned().unwrap()).unwrap();
        let (a, b) = fd::socketpair_stream().unwrap();
        (client, server, a, b)
    }

    #[test]
    fn messages_go_both_ways_spinning_or_asleep() {
        let (c, s, cs, ss) = pair();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for i in 0..200u32 {
                    let got = s.recv(ss.as_fd(), i % 2 == 0, <[u8]>::to_vec).unwrap();
                    assert_eq!(got, i.to_le_bytes());
                    s.send(ss.as_fd(), &(i + 1).to_le_bytes()).unwrap();
                }
            });
            for i in 0..200u32 {
                c.send(cs.as_fd(), &i.to_le_bytes()).unwrap();
                let got = c.recv(cs.as_fd(), i % 3 == 0, <[u8]>::to_vec).unwrap();
                assert_eq!(got, (i + 1).to_le_bytes());
            }
        });
    }

    #[test]
    fn a_long_message_travels_in_a_memfd() {
        let (c, s, cs, ss) = pair();
        let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        c.send(cs.as_fd(), &big).unwrap();
        assert_eq!(s.recv(ss.as_fd(), false, <[u8]>::to_vec).unwrap(), big);
        s.send(ss.as_fd(), b"ok").unwrap();
        assert_eq!(c.recv(cs.as_fd(), true, <[u8]>::to_vec).unwrap(), b"ok");
    }

    #[test]
    fn a_second_message_before_the_first_is_taken_is_refused() {
        let (c, _s, cs, _ss) = pair();
        c.send(cs.as_fd(), b"one").unwrap();
        assert!(matches!(c.send(cs.as_fd(), b"two"), Err(Error::Value(_))));
    }

    #[test]
    fn a_closed_peer_ends_a_wait() {
        let (c, _s, cs, ss) = pair();
        drop(ss);
        assert!(matches!(c.recv(cs.as_fd(), true, |_| ()), Err(Error::Eof)));
    }

    #[test]
    fn an_answer_taken_by_a_peer_that_then_left_counts_as_delivered() {
        for _ in 0..300 {
            let (c, s, cs, ss) = pair();
            let got = std::thread::scope(|scope| {
                let reader = scope.spawn(move || {
                    let got = c.recv(cs.as_fd(), true, <[u8]>::to_vec);
                    drop(cs);
                    got
                });
                let sent = s.send(ss.as_fd(), b"answer");
                let got = reader.join().unwrap();
                (sent, got)
            });
            match got {
                (Err(e), Ok(_)) => panic!("delivered, yet the send failed: {e:?}"),
                (_, Ok(v)) => assert_eq!(v, b"answer"),
                (Ok(()), Err(e)) => panic!("the send succeeded, yet nothing came: {e:?}"),
                (Err(_), Err(_)) => {}
            }
        }
    }

    #[test]
    fn a_region_of_the_wrong_size_is_refused() {
        let r = ShmRegion::create(100).unwrap();
        assert!(Mailbox::open(r.fd().try_clone_to_owned().unwrap()).is_err());
    }
}
