//! The one reader of CPython's framing (see `framing.rs`), free of I/O: bytes
//! and fds go in, frames (or frame errors) come out. Every transport that
//! reads frames (a [`Connection`](super::Connection)'s blocking or draining
//! reads, the pool parent's non-blocking sockets) only moves bytes into it.
//!
//! Two ways in:
//! - [`FrameReader::read_with`]: the reader hands the transport a buffer and
//!   how many bytes it may append, never past the end of the frame being
//!   read. A socket read this way gets each frame's fds with that frame (a
//!   sender attaches them to the first byte of the frame's header).
//! - [`FrameReader::push`]: bytes read elsewhere, any amount, across frame
//!   boundaries (the pool parent reads 64 KiB at a time; the fuzz target
//!   pushes its input). Fds pushed with them go to the frame being read when
//!   the push starts; a transport reading across boundaries keeps its own fds
//!   and matches them by the count each message declares.
//!
//! Safety against a lying peer, whatever the transport: a declared length
//! above the limit is refused at the header ([`Error::MessageTooLarge`],
//! before a byte of payload is stored; the payload is then skipped as it
//! arrives), and a payload buffer grows only as bytes arrive (64 KiB first,
//! then at most doubling), so a header declaring 1 TiB costs nothing.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

use super::framing::{self, ShortHeader};
use crate::error::{Error, Result};

/// A frame as it came off the wire: payload bytes and the fds that rode with it.
#[derive(Debug)]
pub(crate) struct Frame {
    /// The payload.
    pub(crate) bytes: Vec<u8>,
    /// Fds received with the frame (sockets only).
    pub(crate) fds: Vec<OwnedFd>,
}

/// Most bytes one step of a payload takes.
const PAYLOAD_STEP: usize = 16 << 20;

/// Room made for a payload before its first bytes arrive; after that the
/// buffer at most doubles per step, so a lying header costs no more memory
/// than twice the bytes really sent.
const PAYLOAD_FIRST: usize = 64 << 10;

/// Most bytes of a refused payload discarded per step.
const SKIP_STEP: usize = 64 << 10;

/// Where the frame being read stands.
#[derive(Debug)]
enum Stage {
    /// Reading the header: `buf` holds the bytes so far, of `need` (4, or 12
    /// for the long form).
    Header {
        /// The header bytes so far.
        buf: Vec<u8>,
        /// How many the header has.
        need: usize,
    },
    /// Reading a payload of `len` bytes into `buf`.
    Payload {
        /// The bytes so far.
        buf: Vec<u8>,
        /// The declared length.
        len: usize,
    },
    /// Throwing away the payload of a frame refused as too large.
    Skip {
        /// Bytes still to discard.
        left: u64,
        /// Where they land before being dropped.
        scratch: Vec<u8>,
    },
}

impl Stage {
    fn header() -> Stage {
        Stage::Header {
            buf: Vec::with_capacity(12),
            need: 4,
        }
    }
}

/// A CPython frame parser: see the module doc.
#[derive(Debug)]
pub(crate) struct FrameReader {
    /// Largest declared length accepted.
    max: u64,
    /// Frames (or frame errors) completed but not yet handed out.
    ready: VecDeque<Result<Frame>>,
    /// The frame being read.
    stage: Stage,
    /// Fds received while reading the current frame.
    fds: Vec<OwnedFd>,
    /// The peer closed (or the transport failed).
    eof: bool,
    /// The stream cannot be resynchronised (a corrupt header): why.
    broken: Option<String>,
}

impl FrameReader {
    /// A reader at a frame boundary, refusing declared lengths above `max`.
    pub(crate) fn new(max: u64) -> FrameReader {
        FrameReader {
            max,
            ready: VecDeque::new(),
            stage: Stage::header(),
            fds: Vec::new(),
            eof: false,
            broken: None,
        }
    }

    /// Changes the limit for the headers still to come.
    pub(crate) fn set_max(&mut self, max: u64) {
        self.max = max;
    }

    /// Something to hand out without reading.
    pub(crate) fn has_news(&self) -> bool {
        !self.ready.is_empty() || self.finished()
    }

    /// No more bytes will ever be taken: end of file, or a corrupt header.
    pub(crate) fn finished(&self) -> bool {
        self.eof || self.broken.is_some()
    }

    /// No byte of the next frame has been taken yet.
    pub(crate) fn at_frame_start(&self) -> bool {
        matches!(&self.stage, Stage::Header { buf, .. } if buf.is_empty())
    }

    /// A frame error is waiting to be handed out, or the stream is broken.
    pub(crate) fn failed(&self) -> bool {
        self.broken.is_some() || self.ready.iter().any(Result::is_err)
    }

    /// The next completed frame or frame error, if any (not end of file).
    pub(crate) fn pop(&mut self) -> Option<Result<Frame>> {
        self.ready.pop_front()
    }

    /// The next result for a receiver, if one is decided without reading:
    /// a completed frame or frame error, then (for good) the corrupt-header
    /// error or [`Error::Eof`].
    pub(crate) fn next_frame(&mut self) -> Option<Result<Frame>> {
        if let Some(r) = self.ready.pop_front() {
            return Some(r);
        }
        if let Some(why) = &self.broken {
            return Some(Err(Error::decode(why)));
        }
        if self.eof {
            return Some(Err(Error::Eof));
        }
        None
    }

    /// The transport failed: `err` is handed out after the frames already
    /// complete, and nothing more is read.
    pub(crate) fn fail(&mut self, err: Error) {
        self.ready.push_back(Err(err));
        self.eof = true;
    }

    /// The peer closed. Mid-frame, that frame is a "truncated" decode error.
    pub(crate) fn end_of_file(&mut self) {
        if !self.eof && self.broken.is_none() && !self.at_frame_start() {
            self.ready.push_back(Err(Error::decode(
                "truncated frame: the peer closed mid-message",
            )));
            self.stage = Stage::header();
            self.fds.clear();
        }
        self.eof = true;
    }

    /// One read by the transport: `read(buf, want, fds)` appends at most
    /// `want` bytes to `buf` (never past the frame being read) and any fds
    /// that came to `fds`, and returns how many bytes (`Some(0)`: end of
    /// file) or `None` when nothing was there. Completed frames go to the
    /// queue. Once [`finished`](Self::finished), reads nothing and returns
    /// `Some(0)`.
    ///
    /// # Errors
    ///
    /// The transport's error, as it returned it; the reader is unchanged.
    pub(crate) fn read_with<E>(
        &mut self,
        read: impl FnOnce(
            &mut Vec<u8>,
            usize,
            &mut Vec<OwnedFd>,
        ) -> std::result::Result<Option<usize>, E>,
    ) -> std::result::Result<Option<usize>, E> {
        if self.finished() {
            return Ok(Some(0));
        }
        let fds = &mut self.fds;
        let n = match &mut self.stage {
            Stage::Header { buf, need } => {
                let want = *need - buf.len();
                read(buf, want, fds)?
            }
            Stage::Payload { buf, len } => {
                // Grow with the bytes that arrive (doubling), not with the
                // claim: a lying header costs at most twice what was sent.
                let want = (*len - buf.len())
                    .min(buf.len().max(PAYLOAD_FIRST))
                    .min(PAYLOAD_STEP);
                read(buf, want, fds)?
            }
            Stage::Skip { left, scratch } => {
                let want = (*left).min(SKIP_STEP as u64) as usize;
                scratch.clear();
                let n = read(scratch, want, fds)?;
                if let Some(n) = n {
                    *left -= n.min(want) as u64;
                }
                fds.clear();
                n
            }
        };
        match n {
            Some(0) => self.end_of_file(),
            Some(_) => self.advance(),
            None => {}
        }
        Ok(n)
    }

    /// Takes all of `bytes` (and `fds`, given to the frame being read now),
    /// completing as many frames as they hold. Bytes after a corrupt header
    /// or end of file are dropped.
    pub(crate) fn push(&mut self, mut bytes: &[u8], fds: Vec<OwnedFd>) {
        if self.finished() {
            return;
        }
        self.fds.extend(fds);
        while !bytes.is_empty() && !self.finished() {
            let step = self.read_with(|buf, want, _| {
                let n = want.min(bytes.len());
                buf.extend_from_slice(&bytes[..n]);
                Ok::<_, std::convert::Infallible>(Some(n))
            });
            let Ok(Some(n)) = step else { break };
            bytes = &bytes[n..];
        }
    }

    /// Bytes of memory held for the frame being read (its buffer's
    /// capacity), for the fuzz target's memory bound.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn held_bytes(&self) -> usize {
        match &self.stage {
            Stage::Header { buf, .. } | Stage::Payload { buf, .. } => buf.capacity(),
            Stage::Skip { scratch, .. } => scratch.capacity(),
        }
    }

    /// The most memory a reader may hold after taking `fed` bytes of a
    /// frame: twice them, plus the first payload room and a skip step.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn memory_bound(fed: usize) -> usize {
        2 * fed + PAYLOAD_FIRST + SKIP_STEP
    }

    /// Moves to the next stage once the current one is complete.
    fn advance(&mut self) {
        match &mut self.stage {
            Stage::Header { buf, need } if buf.len() == *need => {
                let len = if *need == 4 {
                    let short: [u8; 4] = buf[..4].try_into().expect("4 bytes");
                    match framing::decode_short(short) {
                        ShortHeader::Len(n) => n,
                        ShortHeader::Long => {
                            *need = 12;
                            return;
                        }
                        ShortHeader::Invalid(n) => {
                            let why = format!(
                                "corrupt frame: negative length {n}; the stream cannot be \
                                 read further, close the connection"
                            );
                            self.ready.push_back(Err(Error::decode(&why)));
                            self.broken = Some(why);
                            self.fds.clear();
                            return;
                        }
                    }
                } else {
                    framing::decode_long(buf[4..12].try_into().expect("8 bytes"))
                };
                self.start_payload(len);
            }
            Stage::Payload { buf, len } if buf.len() == *len => {
                let bytes = std::mem::take(buf);
                self.complete(bytes);
            }
            Stage::Skip { left: 0, .. } => self.stage = Stage::header(),
            _ => {}
        }
    }

    /// The header declared `len`: refuse it, or make (bounded) room for it.
    fn start_payload(&mut self, len: u64) {
        if len > self.max {
            self.ready
                .push_back(Err(Error::MessageTooLarge { len, max: self.max }));
            self.fds.clear();
            self.stage = Stage::Skip {
                left: len,
                scratch: Vec::new(),
            };
        } else if len == 0 {
            self.complete(Vec::new());
        } else {
            let len = len as usize;
            self.stage = Stage::Payload {
                buf: Vec::with_capacity(len.min(PAYLOAD_FIRST)),
                len,
            };
        }
    }

    /// Queues a finished frame and starts the next.
    fn complete(&mut self, bytes: Vec<u8>) {
        let fds = std::mem::take(&mut self.fds);
        self.ready.push_back(Ok(Frame { bytes, fds }));
        self.stage = Stage::header();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payload: &[u8]) -> Vec<u8> {
        let (h, n) = framing::encode_header(payload.len());
        let mut v = h[..n].to_vec();
        v.extend_from_slice(payload);
        v
    }

    fn payloads(r: &mut FrameReader) -> Vec<Result<Vec<u8>>> {
        std::iter::from_fn(|| r.pop())
            .map(|f| f.map(|f| f.bytes))
            .collect()
    }

    #[test]
    fn frames_split_anywhere_come_out_whole() {
        let mut stream = framed(b"hello");
        stream.extend(framed(b""));
        stream.extend(framed(&[7; 70_000]));
        for cut in [1, 3, 4, 5, 9, 100, stream.len()] {
            let mut r = FrameReader::new(1 << 20);
            for part in stream.chunks(cut) {
                r.push(part, Vec::new());
            }
            let got = payloads(&mut r);
            assert_eq!(got.len(), 3, "cut {cut}");
            assert_eq!(got[0].as_deref().unwrap(), b"hello");
            assert_eq!(got[1].as_deref().unwrap(), b"");
            assert_eq!(got[2].as_deref().unwrap(), &[7; 70_000][..]);
            assert!(r.at_frame_start());
        }
    }

    #[test]
    fn long_form_header_is_read() {
        let mut stream = (-1i32).to_be_bytes().to_vec();
        stream.extend_from_slice(&3u64.to_be_bytes());
        stream.extend_from_slice(b"abc");
        let mut r = FrameReader::new(10);
        r.push(&stream, Vec::new());
        assert_eq!(payloads(&mut r)[0].as_deref().unwrap(), b"abc");
    }

    #[test]
    fn a_lying_header_is_refused_at_the_header_and_skipped() {
        let mut r = FrameReader::new(4 << 30);
        let mut stream = (-1i32).to_be_bytes().to_vec();
        stream.extend_from_slice(&(1u64 << 40).to_be_bytes());
        r.push(&stream, Vec::new());
        assert!(r.failed());
        let got = payloads(&mut r);
        assert!(
            matches!(got[..], [Err(Error::MessageTooLarge { len, max })] if len == 1 << 40 && max == 4 << 30),
            "{got:?}"
        );
        // The skipped payload keeps no memory.
        r.push(&[0; 100_000], Vec::new());
        match &r.stage {
            Stage::Skip { left, scratch } => {
                assert_eq!(*left, (1 << 40) - 100_000);
                assert!(scratch.capacity() <= SKIP_STEP);
            }
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn an_oversized_frame_is_skipped_and_the_stream_goes_on() {
        let mut r = FrameReader::new(4);
        let mut stream = framed(b"too long");
        stream.extend(framed(b"ok"));
        r.push(&stream, Vec::new());
        let got = payloads(&mut r);
        assert!(matches!(
            got[0],
            Err(Error::MessageTooLarge { len: 8, max: 4 })
        ));
        assert_eq!(got[1].as_deref().unwrap(), b"ok");
    }

    #[test]
    fn a_payload_grows_with_the_bytes_not_the_claim() {
        let mut r = FrameReader::new(u64::MAX);
        let mut stream = (i32::MAX).to_be_bytes().to_vec();
        stream.extend_from_slice(&[1; 1000]);
        r.push(&stream, Vec::new());
        match &r.stage {
            Stage::Payload { buf, len } => {
                assert_eq!(*len, i32::MAX as usize);
                assert_eq!(buf.len(), 1000);
                assert!(buf.capacity() <= PAYLOAD_FIRST);
            }
            s => panic!("{s:?}"),
        }
        r.end_of_file();
        assert!(
            matches!(r.next_frame(), Some(Err(Error::Decode(m))) if m.starts_with("truncated"))
        );
        assert!(matches!(r.next_frame(), Some(Err(Error::Eof))));
    }

    #[test]
    fn a_negative_length_breaks_the_stream_for_good() {
        let mut r = FrameReader::new(100);
        r.push(&(-2i32).to_be_bytes(), Vec::new());
        r.push(&framed(b"later"), Vec::new());
        for _ in 0..3 {
            assert!(
                matches!(r.next_frame(), Some(Err(Error::Decode(m))) if m.contains("negative length -2"))
            );
        }
    }

    #[test]
    fn read_with_never_asks_past_the_frame() {
        let stream = [framed(b"first"), framed(b"second")].concat();
        let mut r = FrameReader::new(100);
        let mut off = 0;
        let mut asked = Vec::new();
        while off < stream.len() {
            r.read_with(|buf, want, _| {
                asked.push(want);
                let n = want.min(stream.len() - off);
                buf.extend_from_slice(&stream[off..off + n]);
                off += n;
                Ok::<_, ()>(Some(n))
            })
            .unwrap();
        }
        assert_eq!(asked, [4, 5, 4, 6]);
        assert_eq!(payloads(&mut r).len(), 2);
    }

    #[test]
    fn fds_go_to_the_frame_being_read() {
        let (a, b) = crate::platform::fd::socketpair_stream().unwrap();
        let mut r = FrameReader::new(100);
        let stream = framed(b"x");
        r.push(&stream[..2], vec![a, b]);
        r.push(&stream[2..], Vec::new());
        r.push(&framed(b"y"), Vec::new());
        let first = r.pop().unwrap().unwrap();
        let second = r.pop().unwrap().unwrap();
        assert_eq!((first.fds.len(), second.fds.len()), (2, 0));
    }
}
