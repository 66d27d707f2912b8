//! CPython's wire format for `Connection` messages (`connection.py`,
//! `_send_bytes` / `_recv_bytes`): a 4-byte big-endian signed length, then the
//! payload; a payload over `0x7fffffff` bytes is announced as `-1` followed by an
//! 8-byte big-endian unsigned length (CPython 3.8+).

/// Payloads up to this size go out in one `send` together with their header
/// (CPython does the same below 16 KiB, to dodge Nagle on TCP).
pub(crate) const SMALL_MESSAGE: usize = 16 * 1024;

/// The largest length the 4-byte form carries.
const SHORT_MAX: usize = i32::MAX as usize;

/// The header for a payload of `len` bytes: the bytes and how many of them count.
pub(crate) fn encode_header(len: usize) -> ([u8; 12], usize) {
    let mut h = [0u8; 12];
    if len <= SHORT_MAX {
        h[..4].copy_from_slice(&(len as i32).to_be_bytes());
        (h, 4)
    } else {
        h[..4].copy_from_slice(&(-1i32).to_be_bytes());
        h[4..].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 12)
    }
}

/// What the first four header bytes say.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ShortHeader {
    /// The payload length.
    Len(u64),
    /// An 8-byte length follows.
    Long,
    /// A negative length other than -1: the stream is corrupt.
    Invalid(i32),
}

/// Reads the 4-byte form.
pub(crate) fn decode_short(h: [u8; 4]) -> ShortHeader {
    match i32::from_be_bytes(h) {
        -1 => ShortHeader::Long,
        n if n < 0 => ShortHeader::Invalid(n),
        n => ShortHeader::Len(n as u64),
    }
}

/// Reads the 8-byte length of the long form.
pub(crate) fn decode_long(h: [u8; 8]) -> u64 {
    u64::from_be_bytes(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_form_is_big_endian_i32() {
        let (h, n) = encode_header(0x0102_0304);
        assert_eq!(&h[..n], &[1, 2, 3, 4]);
        assert_eq!(decode_short([1, 2, 3, 4]), ShortHeader::Len(0x0102_0304));
        assert_eq!(decode_short([0, 0, 0, 0]), ShortHeader::Len(0));
    }

    #[test]
    fn long_form_above_2_gib() {
        let (h, n) = encode_header(0x8000_0000);
        assert_eq!(n, 12);
        assert_eq!(&h[..4], &[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(decode_short([0xff; 4]), ShortHeader::Long);
        assert_eq!(decode_long(h[4..12].try_into().unwrap()), 0x8000_0000);
        let (_, n) = encode_header(i32::MAX as usize);
        assert_eq!(n, 4);
    }

    #[test]
    fn other_negative_lengths_are_invalid() {
        assert_eq!(decode_short((-2i32).to_be_bytes()), ShortHeader::Invalid(-2));
    }
}
