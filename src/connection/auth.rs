//! CPython's authkey handshake (`connection.py`: `deliver_challenge`,
//! `answer_challenge`), both the 3.12+ form and the legacy 3.11 one.
//!
//! The serving side sends `#CHALLENGE#` + a message, the other side answers
//! with an HMAC of that message keyed by the authkey, and the serving side
//! replies `#WELCOME#` or `#FAILURE#`. [`Listener`](super::Listener) and
//! [`Client`](super::Client) run it both ways (mutual authentication): the
//! listener delivers, then answers; the client answers, then delivers.
//!
//! Message forms, told apart by length as CPython 3.12 does:
//!
//! | who | 3.11 (legacy) | 3.12+ (what we send) |
//! |---|---|---|
//! | challenge | 20 random bytes | `{sha256}` + 40 random bytes |
//! | response | raw 16-byte HMAC-MD5 | `{sha256}` + HMAC-SHA256 of the whole challenge message |
//!
//! A 3.11 peer answers our `{sha256}…` challenge with a raw HMAC-MD5 over the
//! whole message (it takes the prefix as part of the random bytes), which we
//! accept, as CPython 3.12 does; a 20-byte challenge from a 3.11 peer gets a raw
//! HMAC-MD5 back. Every handshake read is capped at 256 bytes (CPython's
//! `recv_bytes(256)`), and MACs are compared in constant time.

use std::io::Read;
use std::sync::atomic::Ordering;
use std::time::Instant;

use hmac::{Hmac, KeyInit, Mac, SimpleHmac};

use super::Connection;
use crate::error::{Error, Result};

/// Opens every challenge.
pub(crate) const CHALLENGE: &[u8] = b"#CHALLENGE#";
/// The serving side's answer to a right response.
pub(crate) const WELCOME: &[u8] = b"#WELCOME#";
/// The serving side's answer to a wrong response.
pub(crate) const FAILURE: &[u8] = b"#FAILURE#";

/// Random bytes in a challenge we send (CPython 3.12's `MESSAGE_LENGTH`).
const MESSAGE_LENGTH: usize = 40;
/// The whole challenge message of a 3.11 server (random bytes, no prefix).
const LEGACY_MESSAGE_LENGTH: usize = 20;
/// A raw HMAC-MD5, the response of a 3.11 client.
const MD5_DIGEST_LENGTH: usize = 16;
/// The longest digest name in braces (`sha3_384`).
const MAX_DIGEST_NAME: usize = 8;
/// Every handshake read is refused above this many bytes (CPython's
/// `recv_bytes(256)`), before anything is allocated for it.
pub(crate) const HANDSHAKE_MAX_MESSAGE: u64 = 256;

/// The digest we ask for in the challenges we send (CPython 3.12's default).
const OUR_DIGEST: Digest = Digest::Sha256;

/// The HMAC digests CPython accepts (`_ALLOWED_DIGESTS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Digest {
    /// HMAC-MD5: the only one of 3.11, and what a bare 16-byte response means.
    Md5,
    /// HMAC-SHA256: what 3.12+ asks for.
    Sha256,
    /// HMAC-SHA384.
    Sha384,
    /// HMAC-SHA3-256.
    Sha3_256,
    /// HMAC-SHA3-384.
    Sha3_384,
}

impl Digest {
    /// The name between braces on the wire.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Digest::Md5 => "md5",
            Digest::Sha256 => "sha256",
            Digest::Sha384 => "sha384",
            Digest::Sha3_256 => "sha3_256",
            Digest::Sha3_384 => "sha3_384",
        }
    }

    /// The digest called `name` on the wire, if CPython allows it.
    fn from_name(name: &[u8]) -> Option<Digest> {
        [
            Digest::Md5,
            Digest::Sha256,
            Digest::Sha384,
            Digest::Sha3_256,
            Digest::Sha3_384,
        ]
        .into_iter()
        .find(|d| d.name().as_bytes() == name)
    }

    /// HMAC of `message` keyed by `key`.
    pub(crate) fn mac(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        fn run<M: Mac + KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
            let mut m = <M as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
            m.update(message);
            m.finalize().into_bytes().to_vec()
        }
        match self {
            Digest::Md5 => run::<Hmac<md5::Md5>>(key, message),
            Digest::Sha256 => run::<Hmac<sha2::Sha256>>(key, message),
            Digest::Sha384 => run::<Hmac<sha2::Sha384>>(key, message),
            Digest::Sha3_256 => run::<SimpleHmac<sha3::Sha3_256>>(key, message),
            Digest::Sha3_384 => run::<SimpleHmac<sha3::Sha3_384>>(key, message),
        }
    }

    /// Whether `tag` is the HMAC of `message` keyed by `key`, compared in
    /// constant time (CPython's `hmac.compare_digest`).
    fn verify(self, key: &[u8], message: &[u8], tag: &[u8]) -> bool {
        fn run<M: Mac + KeyInit>(key: &[u8], message: &[u8], tag: &[u8]) -> bool {
            let mut m = <M as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
            m.update(message);
            m.verify_slice(tag).is_ok()
        }
        match self {
            Digest::Md5 => run::<Hmac<md5::Md5>>(key, message, tag),
            Digest::Sha256 => run::<Hmac<sha2::Sha256>>(key, message, tag),
            Digest::Sha384 => run::<Hmac<sha2::Sha384>>(key, message, tag),
            Digest::Sha3_256 => run::<SimpleHmac<sha3::Sha3_256>>(key, message, tag),
            Digest::Sha3_384 => run::<SimpleHmac<sha3::Sha3_384>>(key, message, tag),
        }
    }

    /// The length of this digest's MAC.
    fn len(self) -> usize {
        match self {
            Digest::Md5 => 16,
            Digest::Sha256 | Digest::Sha3_256 => 32,
            Digest::Sha384 | Digest::Sha3_384 => 48,
        }
    }
}

/// Splits a challenge message or a response into its digest and payload
/// (CPython 3.12's `_get_digest_name_and_payload`). `None` means the legacy
/// form: a 20-byte challenge or a 16-byte response, HMAC-MD5 without prefix.
pub(crate) fn digest_and_payload(message: &[u8]) -> Result<(Option<Digest>, &[u8])> {
    if message.len() == LEGACY_MESSAGE_LENGTH || message.len() == MD5_DIGEST_LENGTH {
        return Ok((None, message));
    }
    if message.first() == Some(&b'{') {
        let end = message.len().min(MAX_DIGEST_NAME + 2);
        if let Some(close) = message[1..end].iter().position(|&b| b == b'}') {
            let close = close + 1;
            if let Some(digest) = Digest::from_name(&message[1..close]) {
                return Ok((Some(digest), &message[close + 1..]));
            }
        }
    }
    Err(Error::Authentication(format!(
        "unsupported handshake message of {} bytes: no {{digest}} prefix CPython knows and not a legacy length",
        message.len()
    )))
}

/// The response to a challenge `message` (CPython 3.12's `_create_response`):
/// a raw HMAC-MD5 for a legacy challenge, else `{digest}` + HMAC.
pub(crate) fn create_response(authkey: &[u8], message: &[u8]) -> Result<Vec<u8>> {
    match digest_and_payload(message)?.0 {
        None => Ok(Digest::Md5.mac(authkey, message)),
        Some(digest) => {
            let mut out = format!("{{{}}}", digest.name()).into_bytes();
            out.extend_from_slice(&digest.mac(authkey, message));
            Ok(out)
        }
    }
}

/// Checks a `response` to our challenge `message` (CPython 3.12's
/// `_verify_challenge`): the peer may pick any allowed digest, since the MAC
/// covers our `{digest}` prefix too.
pub(crate) fn verify_response(authkey: &[u8], message: &[u8], response: &[u8]) -> Result<()> {
    let (digest, mac) = digest_and_payload(response)?;
    let digest = digest.unwrap_or(Digest::Md5);
    if mac.len() != digest.len() {
        return Err(Error::Authentication(format!(
            "expected a {} digest of {} bytes, got {} bytes",
            digest.name(),
            digest.len(),
            mac.len()
        )));
    }
    if !digest.verify(authkey, message, mac) {
        return Err(Error::Authentication(
            "digest received was wrong: the peer uses another authkey; give both sides the same key".into(),
        ));
    }
    Ok(())
}

/// Fresh random bytes for a challenge, from the kernel.
fn random_bytes() -> Result<[u8; MESSAGE_LENGTH]> {
    let mut buf = [0u8; MESSAGE_LENGTH];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

/// Restores a connection's message limit when the handshake ends.
struct LimitGuard<'a> {
    /// The connection under handshake.
    conn: &'a Connection,
    /// Its limit before the handshake.
    saved: u64,
}

impl<'a> LimitGuard<'a> {
    /// Caps `conn`'s reads at [`HANDSHAKE_MAX_MESSAGE`] until dropped.
    fn new(conn: &'a Connection) -> LimitGuard<'a> {
        let saved = conn.inner.max_len.load(Ordering::Relaxed);
        conn.set_max_message_len(HANDSHAKE_MAX_MESSAGE.min(saved));
        LimitGuard { conn, saved }
    }
}

impl Drop for LimitGuard<'_> {
    fn drop(&mut self) {
        self.conn.set_max_message_len(self.saved);
    }
}

/// Reads one handshake message (at most 256 bytes). A peer that closes, sends
/// a corrupt frame or an over-long one fails the handshake.
fn recv_handshake(conn: &Connection, deadline: Option<Instant>) -> Result<Vec<u8>> {
    let _limit = LimitGuard::new(conn);
    match conn.recv_frame(deadline) {
        Ok(frame) => Ok(frame.bytes),
        Err(Error::MessageTooLarge { len, max }) => Err(Error::Authentication(format!(
            "handshake message of {len} bytes exceeds the {max} allowed; is the peer a multiprocessing Listener or Client?"
        ))),
        Err(Error::Eof) => Err(Error::Authentication(
            "the peer closed the connection during the authkey handshake".into(),
        )),
        Err(Error::Decode(e)) => Err(Error::Authentication(format!(
            "corrupt handshake message: {e}"
        ))),
        Err(e) => Err(e),
    }
}

/// The serving half: sends a `{sha256}` challenge, checks the answer, replies
/// `#WELCOME#` or `#FAILURE#` (CPython 3.12's `deliver_challenge`).
///
/// `deadline` bounds the wait for the answer (`None`: forever, as CPython).
pub(crate) fn deliver_challenge(
    conn: &Connection,
    authkey: &[u8],
    deadline: Option<Instant>,
) -> Result<()> {
    let mut message = format!("{{{}}}", OUR_DIGEST.name()).into_bytes();
    message.extend_from_slice(&random_bytes()?);
    let mut challenge = CHALLENGE.to_vec();
    challenge.extend_from_slice(&message);
    conn.send_bytes(&challenge)?;
    let response = recv_handshake(conn, deadline)?;
    match verify_response(authkey, &message, &response) {
        Ok(()) => conn.send_bytes(WELCOME),
        Err(e) => {
            // The peer may already be gone; our error is the one to report.
            let _ = conn.send_bytes(FAILURE);
            Err(e)
        }
    }
}

/// The answering half: reads a challenge, sends its HMAC, expects `#WELCOME#`
/// (CPython 3.12's `answer_challenge`; legacy 3.11 challenges get HMAC-MD5).
pub(crate) fn answer_challenge(
    conn: &Connection,
    authkey: &[u8],
    deadline: Option<Instant>,
) -> Result<()> {
    let message = recv_handshake(conn, deadline)?;
    let Some(message) = message.strip_prefix(CHALLENGE) else {
        return Err(Error::Authentication(format!(
            "protocol error: expected a {} message, got {} other bytes; is the peer using an authkey?",
            String::from_utf8_lossy(CHALLENGE),
            message.len()
        )));
    };
    if message.len() < LEGACY_MESSAGE_LENGTH {
        return Err(Error::Authentication(format!(
            "challenge too short: {} bytes",
            message.len()
        )));
    }
    conn.send_bytes(&create_response(authkey, message)?)?;
    let reply = recv_handshake(conn, deadline)?;
    if reply != WELCOME {
        return Err(Error::Authentication(
            "digest sent was rejected: the peer uses another authkey; give both sides the same key"
                .into(),
        ));
    }
    Ok(())
}

/// The listener's side of the mutual handshake: deliver, then answer
/// (CPython's `Listener.accept`).
pub(crate) fn server_handshake(
    conn: &Connection,
    authkey: &[u8],
    deadline: Option<Instant>,
) -> Result<()> {
    deliver_challenge(conn, authkey, deadline)?;
    answer_challenge(conn, authkey, deadline)
}

/// The client's side of the mutual handshake: answer, then deliver
/// (CPython's `Client`).
pub(crate) fn client_handshake(
    conn: &Connection,
    authkey: &[u8],
    deadline: Option<Instant>,
) -> Result<()> {
    answer_challenge(conn, authkey, deadline)?;
    deliver_challenge(conn, authkey, deadline)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::pipe;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // Vectors from CPython 3.11: `hmac.new(key, msg, name).hexdigest()`.
    #[test]
    fn macs_match_python_hmac() {
        let key = b"secret";
        let msg = b"{sha256}0123456789012345678901234567890123456789";
        let cases = [
            (Digest::Md5, "ef311782db3cbcf879cf593ba8490f69"),
            (
                Digest::Sha256,
                "57221c32cd0aa3e90893e11ffda2be7449c1517591a532039a0a1ee16b4b0f5b",
            ),
            (
                Digest::Sha384,
                "c107effaba9d5179a5c468823806e784385157d2643db700d9d6336aa0c45ec795bb0161efb7e79d0e3a6482e6963385",
            ),
            (
                Digest::Sha3_256,
                "6b30964632494b4002e2a61a1b3a90216990f41ba68c99e1a34d8ac69dfacd9f",
            ),
            (
                Digest::Sha3_384,
                "b80c9f2f9c6b444d9703342785dd15cc9939623b590e2d01956d4a971a8ccadaaca1f2a9abe430c9f29e91fca5037838",
            ),
        ];
        for (digest, hex) in cases {
            assert_eq!(digest.mac(key, msg), unhex(hex), "{}", digest.name());
            assert!(digest.verify(key, msg, &unhex(hex)));
        }
        assert_eq!(
            Digest::Sha256.mac(b"", msg),
            unhex("5cabe71c8e9b97137f00ef1ca0164e7e1c5070ab4fbe6ce042bb2b64e4996a13")
        );
    }

    // The 3.12+ response is `{sha256}` + HMAC-SHA256 over the whole message,
    // prefix included; a 20-byte (3.11) challenge gets a raw HMAC-MD5.
    #[test]
    fn responses_in_both_forms() {
        let key = b"secret";
        let msg = b"{sha256}0123456789012345678901234567890123456789";
        let mut modern = b"{sha256}".to_vec();
        modern.extend(unhex(
            "57221c32cd0aa3e90893e11ffda2be7449c1517591a532039a0a1ee16b4b0f5b",
        ));
        assert_eq!(create_response(key, msg).unwrap(), modern);
        verify_response(key, msg, &modern).unwrap();
        let legacy: Vec<u8> = (0u8..20).collect();
        assert_eq!(
            create_response(key, &legacy).unwrap(),
            unhex("7defa9cc46abc3583325d17ccda75190")
        );
        // A 3.11 client answers our {sha256} challenge with a raw HMAC-MD5 of it.
        verify_response(key, msg, &unhex("ef311782db3cbcf879cf593ba8490f69")).unwrap();
        // Wrong MAC, wrong length.
        let mut bad = modern.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(
            verify_response(key, msg, &bad),
            Err(Error::Authentication(_))
        ));
        assert!(matches!(
            verify_response(key, msg, b"{sha256}short"),
            Err(Error::Authentication(_))
        ));
        assert!(matches!(
            verify_response(b"other", msg, &modern),
            Err(Error::Authentication(_))
        ));
    }

    #[test]
    fn legacy_lengths_mean_md5_without_prefix() {
        assert_eq!(
            digest_and_payload(&[7u8; 20]).unwrap(),
            (None, &[7u8; 20][..])
        );
        assert_eq!(
            digest_and_payload(&[7u8; 16]).unwrap(),
            (None, &[7u8; 16][..])
        );
        let (d, p) = digest_and_payload(b"{sha256}abcdefghijklmnopqrstuvwxyz").unwrap();
        assert_eq!(
            (d, p),
            (Some(Digest::Sha256), &b"abcdefghijklmnopqrstuvwxyz"[..])
        );
        assert!(matches!(
            digest_and_payload(b"{sha1}abcdefghijklmnopqrstuvwxyz"),
            Err(Error::Authentication(_))
        ));
        assert!(matches!(
            digest_and_payload(b"no prefix at all, 31 bytes long"),
            Err(Error::Authentication(_))
        ));
        assert!(matches!(
            digest_and_payload(b""),
            Err(Error::Authentication(_))
        ));
    }

    #[test]
    fn handshake_between_our_two_sides() {
        let (a, b) = pipe(true).unwrap();
        let t = std::thread::spawn(move || server_handshake(&a, b"key", None));
        client_handshake(&b, b"key", None).unwrap();
        t.join().unwrap().unwrap();
    }

    #[test]
    fn wrong_key_fails_on_both_sides() {
        let (a, b) = pipe(true).unwrap();
        let t = std::thread::spawn(move || server_handshake(&a, b"key", None));
        assert!(matches!(
            client_handshake(&b, b"other", None),
            Err(Error::Authentication(_))
        ));
        assert!(matches!(t.join().unwrap(), Err(Error::Authentication(_))));
    }

    #[test]
    fn long_handshake_message_is_refused_unread() {
        let (a, b) = pipe(true).unwrap();
        a.send_bytes(&[b'x'; 257]).unwrap();
        let e = answer_challenge(&b, b"key", None).unwrap_err();
        assert!(
            matches!(e, Error::Authentication(ref m) if m.contains("257")),
            "{e}"
        );
        // The limit is restored afterwards.
        assert_eq!(
            b.inner.max_len.load(Ordering::Relaxed),
            super::super::DEFAULT_MAX_MESSAGE_LEN
        );
    }

    #[test]
    fn non_challenge_is_a_protocol_error() {
        let (a, b) = pipe(true).unwrap();
        a.send_bytes(b"hello there").unwrap();
        assert!(matches!(
            answer_challenge(&b, b"key", None),
            Err(Error::Authentication(_))
        ));
    }
}
