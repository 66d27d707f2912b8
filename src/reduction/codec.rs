//! The value codec: postcard bytes in a typed envelope, handles' fds on the
//! side.
//!
//! Values travel as postcard bytes inside a small envelope that names the
//! value's type, so a decode as another type is an error, never garbage. A
//! handle's `Serialize` dups its fd into the side list of the current
//! [`encode`] (`serialize_fd`); `deserialize_fd` takes it back out of the
//! current [`decode`]'s.

use std::any::type_name;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use serde::de::{DeserializeOwned, Error as _};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// First byte of a typed message: tells our envelopes from pickles (0x80) and
/// from stray bytes.
const ENVELOPE_MAGIC: u8 = 0xA7;
/// Magic byte, fd count (u8), type tag (u64 LE).
const ENVELOPE_HEADER: usize = 1 + 1 + 8;
/// Room a new message starts with: a small value, a pool task's trailer
/// included, fits without a reallocation (growing from the bare header took
/// a `calloc` and two `realloc`s per task of a chunksize-1 `map`).
const FIRST_CAPACITY: usize = 64;

/// A message buffer holding a blank envelope header.
fn new_message() -> Vec<u8> {
    let mut bytes = Vec::with_capacity(FIRST_CAPACITY);
    bytes.resize(ENVELOPE_HEADER, 0);
    bytes
}

/// An encoded value: its bytes and the fds its handles refer to, in order.
#[derive(Debug, Default)]
pub(crate) struct Encoded {
    /// The envelope and the postcard bytes.
    pub(crate) bytes: Vec<u8>,
    /// Duplicates of the fds of the handles inside the value.
    pub(crate) fds: Vec<OwnedFd>,
}

thread_local! {
    /// While encoding: where handles put the fds they carry (a stack, since a
    /// handle's serialization may itself encode).
    static FDS_OUT: RefCell<Vec<Vec<OwnedFd>>> = const { RefCell::new(Vec::new()) };
    /// While decoding: the fds that came with the message; a handle takes its own.
    static FDS_IN: RefCell<Vec<Vec<Option<OwnedFd>>>> = const { RefCell::new(Vec::new()) };
}

/// A stable 64-bit tag for `T`: FNV-1a of its type name, normalized so that the
/// borrowed and owned forms serde encodes alike agree (`&str` and `String`,
/// `&[T]` and `Vec<T>`, `&T` and `T`). Parent and child are the same build, so
/// they agree on the names.
pub(crate) fn type_tag<T: ?Sized>() -> u64 {
    let name = type_name::<T>();
    if name.bytes().any(|b| b == b'&' || b == b'[') || name.contains("str") {
        fnv1a(normalize_type_name(name).as_bytes())
    } else {
        fnv1a(name.as_bytes())
    }
}

/// Rewrites a type name into its owned serde-equivalent form.
fn normalize_type_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 16);
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &name[i..];
        if let Some(r) = rest.strip_prefix("&mut ") {
            i = name.len() - r.len();
        } else if rest.starts_with('&') {
            i += 1;
        } else if rest.starts_with('[') {
            // A slice `[T]` encodes like `Vec<T>`; an array `[T; N]` does not.
            let end = matching_bracket(rest);
            let inner = &rest[1..end];
            if top_level_semicolon(inner) {
                out.push('[');
                out.push_str(&normalize_type_name(inner));
                out.push(']');
            } else {
                out.push_str("alloc::vec::Vec<");
                out.push_str(&normalize_type_name(inner));
                out.push('>');
            }
            i += end + 1;
        } else if is_str_token(name, i) {
            out.push_str("alloc::string::String");
            i += 3;
        } else {
            out.push(rest.chars().next().unwrap_or(' '));
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    out
}

/// Index of the `]` closing the `[` at the start of `s` (or its end).
fn matching_bracket(s: &str) -> usize {
    let mut depth = 0usize;
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'[' | b'<' | b'(' => depth += 1,
            b']' | b'>' | b')' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    s.len().saturating_sub(1)
}

fn top_level_semicolon(s: &str) -> bool {
    let mut depth = 0i32;
    s.bytes().any(|b| {
        match b {
            b'[' | b'<' | b'(' => depth += 1,
            b']' | b'>' | b')' => depth -= 1,
            _ => {}
        }
        b == b';' && depth == 0
    })
}

/// Whether the primitive `str` stands at `i` (not part of a longer name).
fn is_str_token(name: &str, i: usize) -> bool {
    let b = name.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    name[i..].starts_with("str")
        && (i == 0 || !ident(b[i - 1]))
        && b.get(i + 3).is_none_or(|c| !ident(*c))
}

/// FNV-1a, 64 bit.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Encodes `value` with its type tag, collecting the fds of any handles inside.
///
/// # Errors
///
/// [`Error::Encode`] when serde fails (a `Serialize` impl errors, a map with a
/// non-string key shape postcard cannot express, more than 253 handles).
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Encoded> {
    let scope = FdsOut::enter();
    let result = append_postcard(value, new_message());
    let fds = scope.finish();
    let bytes = result.map_err(|e| Error::encode(format!("{} ({e})", type_name::<T>())))?;
    seal_envelope::<T>(bytes, fds)
}

/// Encodes the next `len` items of `items` as a `Vec<A>`, without collecting
/// them first (a `map` streams its chunks straight from the input).
///
/// # Errors
///
/// [`Error::Encode`] if an item does not serialize or `items` ends early (an
/// iterator whose `size_hint` promised more).
pub(crate) fn encode_seq<A: Serialize>(
    items: &mut impl Iterator<Item = A>,
    len: usize,
) -> Result<Encoded> {
    let scope = FdsOut::enter();
    let seq = SeqFrom {
        items: RefCell::new(items),
        len,
        ended_early: std::cell::Cell::new(false),
    };
    let result = append_postcard(&seq, new_message());
    let fds = scope.finish();
    if seq.ended_early.get() {
        // postcard keeps no message of its own errors: say it here.
        return Err(Error::encode(
            "the input ended before the length its size_hint promised",
        ));
    }
    let bytes = result.map_err(|e| Error::encode(format!("{} ({e})", type_name::<Vec<A>>())))?;
    seal_envelope::<Vec<A>>(bytes, fds)
}

/// The next `len` items of an iterator, serialized as a sequence.
struct SeqFrom<'a, I> {
    items: RefCell<&'a mut I>,
    len: usize,
    /// The iterator ran out first.
    ended_early: std::cell::Cell<bool>,
}

impl<I> Serialize for SeqFrom<'_, I>
where
    I: Iterator,
    I::Item: Serialize,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut items = self.items.borrow_mut();
        let mut seq = serializer.serialize_seq(Some(self.len))?;
        for _ in 0..self.len {
            let Some(item) = items.next() else {
                self.ended_early.set(true);
                return Err(S::Error::custom(
                    "the input ended before the length its size_hint promised",
                ));
            };
            seq.serialize_element(&item)?;
        }
        seq.end()
    }
}

/// Serializes `value` with postcard onto the end of `buf`.
///
/// postcard's own `to_extend` feeds the `Vec` through `Extend`, one call per
/// varint; pushing straight into the `Vec` encodes a long sequence of numbers
/// several times faster (a `map` chunk of 25 000 `u64`s: 340 µs before).
pub(crate) fn append_postcard<T: Serialize + ?Sized>(
    value: &T,
    buf: Vec<u8>,
) -> postcard::Result<Vec<u8>> {
    postcard::serialize_with_flavor(value, VecFlavor(buf))
}

/// A postcard output that appends to a `Vec`.
struct VecFlavor(Vec<u8>);

impl postcard::ser_flavors::Flavor for VecFlavor {
    type Output = Vec<u8>;

    #[inline(always)]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    #[inline(always)]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        // A varint is at most 10 bytes: copying it in a loop beats a call to
        // memcpy per number.
        if data.len() <= 16 {
            self.0.reserve(data.len());
            for &b in data {
                self.0.push(b);
            }
        } else {
            self.0.extend_from_slice(data);
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// The number of fds an encoded message says it carries (so a receiver can take
/// exactly those from the ones that arrived).
pub(crate) fn declared_fds(bytes: &[u8]) -> usize {
    if bytes.len() >= ENVELOPE_HEADER && bytes[0] == ENVELOPE_MAGIC {
        bytes[1] as usize
    } else {
        0
    }
}

/// Decodes a `T` that [`encode`] made, handing the message's fds to its handles.
///
/// # Errors
///
/// [`Error::Decode`] when the bytes are not an envelope, name another type,
/// are truncated or corrupt, leave bytes over, or the fds do not match.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<T> {
    let body = open_envelope::<T>(bytes, fds.len())?;
    let scope = FdsIn::enter(fds);
    let result = postcard::take_from_bytes::<T>(body);
    drop(scope);
    match result {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(left_over::<T>(rest.len())),
        Err(e) => Err(Error::decode(format!("{} ({e})", type_name::<T>()))),
    }
}

/// The error for `n` bytes after a decoded `T`.
fn left_over<T: ?Sized>(n: usize) -> Error {
    Error::decode(format!(
        "{n} bytes left over after a {}: corrupt message or wrong type",
        type_name::<T>()
    ))
}

/// Checks that a streaming decode of a `T` used every byte.
fn all_read<'de, T: ?Sized>(
    de: postcard::Deserializer<'de, postcard::de_flavors::Slice<'de>>,
) -> Result<()> {
    match de.finalize() {
        Ok([]) => Ok(()),
        Ok(rest) => Err(left_over::<T>(rest.len())),
        Err(e) => Err(Error::decode(e)),
    }
}

/// Decodes an encoded `Vec<T>` onto the end of `out`, with no `Vec` of its
/// own (a `map` puts each chunk's results straight into the final list). On
/// error `out` is as it was.
///
/// # Errors
///
/// As [`decode`] of a `Vec<T>`.
pub(crate) fn decode_extend<T: DeserializeOwned>(
    bytes: &[u8],
    fds: Vec<OwnedFd>,
    out: &mut Vec<T>,
) -> Result<()> {
    let body = open_envelope::<Vec<T>>(bytes, fds.len())?;
    let _scope = FdsIn::enter(fds);
    let before = out.len();
    let mut de = postcard::Deserializer::from_bytes(body);
    let result = match Deserializer::deserialize_seq(&mut de, ExtendVec(out)) {
        Ok(()) => all_read::<Vec<T>>(de),
        Err(e) => Err(Error::decode(format!("{} ({e})", type_name::<Vec<T>>()))),
    };
    if result.is_err() {
        out.truncate(before);
    }
    result
}

/// The visitor of [`decode_extend`].
struct ExtendVec<'a, T>(&'a mut Vec<T>);

impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ExtendVec<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<S: serde::de::SeqAccess<'de>>(
        self,
        mut seq: S,
    ) -> std::result::Result<(), S::Error> {
        while let Some(item) = seq.next_element::<T>()? {
            self.0.push(item);
        }
        Ok(())
    }
}

/// Checks that `bytes` is an envelope holding a `T` with `fds` handles' fds;
/// the postcard bytes.
fn open_envelope<T: ?Sized>(bytes: &[u8], fds: usize) -> Result<&[u8]> {
    if bytes.len() < ENVELOPE_HEADER || bytes[0] != ENVELOPE_MAGIC {
        return Err(Error::decode(format!(
            "expected a {} but the message is not one of ours ({} bytes)",
            type_name::<T>(),
            bytes.len()
        )));
    }
    if bytes[1] as usize != fds {
        return Err(Error::decode(format!(
            "the message declares {} handles but {fds} arrived",
            bytes[1],
        )));
    }
    let tag = u64::from_le_bytes(bytes[2..ENVELOPE_HEADER].try_into().expect("8 bytes"));
    if tag != type_tag::<T>() {
        return Err(Error::decode(format!(
            "type mismatch: expected a {}, the message holds another type",
            type_name::<T>()
        )));
    }
    Ok(&bytes[ENVELOPE_HEADER..])
}

/// While alive, the fds a decode hands to handles (popped on drop, also when
/// a panic unwinds through the decode).
struct FdsIn;

impl FdsIn {
    fn enter(fds: Vec<OwnedFd>) -> FdsIn {
        FDS_IN.with(|s| s.borrow_mut().push(fds.into_iter().map(Some).collect()));
        FdsIn
    }
}

impl Drop for FdsIn {
    fn drop(&mut self) {
        FDS_IN.with(|s| s.borrow_mut().pop());
    }
}

/// While alive, where an encode's handles put their fds.
struct FdsOut;

impl FdsOut {
    fn enter() -> FdsOut {
        FDS_OUT.with(|s| s.borrow_mut().push(Vec::new()));
        FdsOut
    }

    /// The fds collected.
    fn finish(self) -> Vec<OwnedFd> {
        std::mem::forget(self);
        FDS_OUT.with(|s| s.borrow_mut().pop().unwrap_or_default())
    }
}

impl Drop for FdsOut {
    fn drop(&mut self) {
        FDS_OUT.with(|s| s.borrow_mut().pop());
    }
}

/// Fills in the envelope header of `bytes` (its first [`ENVELOPE_HEADER`]
/// bytes) for a `T` with `fds`.
fn seal_envelope<T: ?Sized>(bytes: Vec<u8>, fds: Vec<OwnedFd>) -> Result<Encoded> {
    if fds.len() > crate::platform::fd::MAX_FDS_PER_MESSAGE {
        return Err(Error::encode(format!(
            "a message can carry at most {} handles, this one has {}",
            crate::platform::fd::MAX_FDS_PER_MESSAGE,
            fds.len()
        )));
    }
    let mut bytes = bytes;
    bytes[0] = ENVELOPE_MAGIC;
    bytes[1] = fds.len() as u8;
    bytes[2..ENVELOPE_HEADER].copy_from_slice(&type_tag::<T>().to_le_bytes());
    Ok(Encoded { bytes, fds })
}

/// Runs `f` over the items of an encoded `Vec<A>` as they are decoded, and
/// encodes each result as soon as it is made, into one encoded `Vec<R>`.
///
/// Neither the items nor the results are ever held as a `Vec`: for a `map`
/// chunk of 25 000 numbers that saves two fresh 200 KB allocations per chunk,
/// and on a VM the page faults of fresh memory cost more than the numbers.
///
/// # Errors
///
/// [`Error::Decode`] for a payload that is not a `Vec<A>`; [`Error::Encode`]
/// for a result that does not serialize. A panic in `f` unwinds to the caller.
pub(crate) fn map_encoded<A, R>(payload: Payload, f: impl Fn(A) -> R) -> Result<Encoded>
where
    A: DeserializeOwned,
    R: Serialize,
{
    let Encoded { bytes, fds } = payload;
    let body = open_envelope::<Vec<A>>(&bytes, fds.len())?;
    let _fds_in = FdsIn::enter(fds);
    let fds_out = FdsOut::enter();
    // Results are about as long as the items; a little more spares a copy.
    let mut out = Vec::with_capacity(ENVELOPE_HEADER + body.len() + body.len() / 4 + 16);
    out.resize(ENVELOPE_HEADER, 0);
    let mut ser = postcard::Serializer {
        output: VecFlavor(out),
    };
    let mut encode_error = None;
    let mut de = postcard::Deserializer::from_bytes(body);
    let visited = Deserializer::deserialize_seq(
        &mut de,
        MapItems {
            f: &f,
            ser: &mut ser,
            encode_error: &mut encode_error,
            items: PhantomData,
        },
    );
    if let Some(e) = encode_error {
        return Err(Error::encode(format!("{} ({e})", type_name::<R>())));
    }
    visited.map_err(|e| Error::decode(format!("{} ({e})", type_name::<Vec<A>>())))?;
    all_read::<Vec<A>>(de)?;
    seal_envelope::<Vec<R>>(ser.output.0, fds_out.finish())
}

/// The visitor of [`map_encoded`]: each item through `f`, each result
/// serialized after the sequence's length.
struct MapItems<'a, F, A, R> {
    f: &'a F,
    ser: &'a mut postcard::Serializer<VecFlavor>,
    /// Set when a result failed to serialize (the visit then stops with a
    /// decode-side error that the caller replaces).
    encode_error: &'a mut Option<postcard::Error>,
    items: PhantomData<fn(A) -> R>,
}

impl<'de, F, A, R> serde::de::Visitor<'de> for MapItems<'_, F, A, R>
where
    F: Fn(A) -> R,
    A: Deserialize<'de>,
    R: Serialize,
{
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a sequence of items")
    }

    fn visit_seq<S: serde::de::SeqAccess<'de>>(
        self,
        mut seq: S,
    ) -> std::result::Result<(), S::Error> {
        let len = seq
            .size_hint()
            .ok_or_else(|| S::Error::custom("a sequence longer than the message"))?;
        let mut fail = |e| {
            *self.encode_error = Some(e);
            S::Error::custom("a result did not encode")
        };
        // postcard writes a sequence's length as a varint, like a usize.
        len.serialize(&mut *self.ser).map_err(&mut fail)?;
        let mut done = 0;
        while let Some(item) = seq.next_element::<A>()? {
            (self.f)(item)
                .serialize(&mut *self.ser)
                .map_err(&mut fail)?;
            done += 1;
        }
        if done != len {
            return Err(S::Error::custom("a sequence shorter than its length"));
        }
        Ok(())
    }
}

/// Serializes a handle's fd: dups it into the current [`encode`]'s side list and
/// writes its index.
///
/// # Errors
///
/// Outside an [`encode`] (for example `serde_json::to_string(&lock)`) this fails:
/// an fd can only travel over a channel that carries fds.
pub(crate) fn serialize_fd<S: Serializer>(
    fd: BorrowedFd<'_>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let index = FDS_OUT.with(|s| -> std::result::Result<u32, String> {
        let mut stack = s.borrow_mut();
        let Some(list) = stack.last_mut() else {
            return Err(
                "a multiprocess handle can only be sent to another process of this \
                        program (as a target argument, a task, a queue item or over a Connection)"
                    .into(),
            );
        };
        let dup = fd
            .try_clone_to_owned()
            .map_err(|e| format!("could not duplicate a handle: {e}"))?;
        list.push(dup);
        Ok((list.len() - 1) as u32)
    });
    match index {
        Ok(i) => serializer.serialize_u32(i),
        Err(msg) => Err(S::Error::custom(msg)),
    }
}

/// Takes back the fd that [`serialize_fd`] sent.
///
/// # Errors
///
/// Fails outside a [`decode`], for an index out of range, or for an fd already
/// taken (a corrupt message).
pub(crate) fn deserialize_fd<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<OwnedFd, D::Error> {
    let index = u32::deserialize(deserializer)? as usize;
    FDS_IN.with(|s| {
        let mut stack = s.borrow_mut();
        let list = stack.last_mut().ok_or_else(|| {
            D::Error::custom("a handle can only be received from a multiprocess channel")
        })?;
        list.get_mut(index)
            .and_then(Option::take)
            .ok_or_else(|| D::Error::custom(format!("handle #{index} is missing from the message")))
    })
}

/// Lets `BorrowedFd`-holding handles serialize through [`serialize_fd`].
pub(crate) fn serialize_handle<S: Serializer>(
    fd: &impl AsFd,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serialize_fd(fd.as_fd(), serializer)
}

/// What a trampoline gets: the encoded argument and its fds.
pub(crate) type Payload = Encoded;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_check_their_type() {
        let enc = encode(&(7i64, "x".to_string())).unwrap();
        let back: (i64, String) = decode(&enc.bytes, Vec::new()).unwrap();
        assert_eq!(back, (7, "x".to_string()));
        let wrong = decode::<String>(&enc.bytes, Vec::new());
        assert!(matches!(wrong, Err(Error::Decode(m)) if m.contains("type mismatch")));
    }

    #[test]
    fn borrowed_and_owned_forms_share_a_tag() {
        assert_eq!(type_tag::<&str>(), type_tag::<String>());
        assert_eq!(
            type_tag::<(&str, u32, &[u8])>(),
            type_tag::<(String, u32, Vec<u8>)>()
        );
        assert_eq!(type_tag::<&Vec<&str>>(), type_tag::<Vec<String>>());
        assert_ne!(type_tag::<[u8; 4]>(), type_tag::<Vec<u8>>());
        assert_ne!(type_tag::<u32>(), type_tag::<i32>());
        let enc = encode(&("hi", [1u8, 2].as_slice())).unwrap();
        let back: (String, Vec<u8>) = decode(&enc.bytes, Vec::new()).unwrap();
        assert_eq!(back, ("hi".to_string(), vec![1, 2]));
    }

    #[test]
    fn truncated_and_garbage_messages_are_errors() {
        let enc = encode(&vec![1u32, 2, 3, 4]).unwrap();
        for cut in 0..enc.bytes.len() {
            assert!(
                decode::<Vec<u32>>(&enc.bytes[..cut], Vec::new()).is_err(),
                "cut at {cut}"
            );
        }
        assert!(decode::<u8>(b"\x80\x04garbage", Vec::new()).is_err());
    }

    #[test]
    fn handles_refuse_plain_serialization() {
        struct H(OwnedFd);
        impl Serialize for H {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                serialize_handle(&self.0, s)
            }
        }
        let (a, _b) = crate::platform::fd::pipe().unwrap();
        let h = H(a);
        assert!(postcard::to_stdvec(&h).is_err());
        let enc = encode(&h).unwrap();
        assert_eq!(enc.fds.len(), 1);
        assert_eq!(enc.bytes[1], 1, "the envelope counts the handle");
    }
}
