//! Pickled messages, for a Python program on the other end of a
//! [`Connection`]: CPython's `Connection.send(obj)` / `recv()` pickle their
//! objects, so these methods do too (with the `serde-pickle` crate).
//!
//! | Python type | Rust type (serde) |
//! |---|---|
//! | `None` | `()` or `Option::None` |
//! | `bool`, `int`, `float`, `str` | `bool`, `i64` (any int type), `f64`, `String` |
//! | `bytes` | `serde_bytes::ByteBuf` (a plain `Vec<u8>` is a list of ints) |
//! | `list` / `tuple` | `Vec<T>` / Rust tuples |
//! | `dict` | `HashMap<K, V>` / `BTreeMap<K, V>`; a struct from a `dict` with `str` keys |
//!
//! We write pickle protocol 3; CPython reads every protocol, and we read all
//! of them (0 to 5), including the protocol 4 that CPython 3.8–3.13 `send`
//! writes. Unlike Python's `pickle.loads`, reading never runs code: a pickle
//! that names a class or function is refused with [`Error::Decode`].

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{deadline_after, Connection};
use crate::error::{Error, Result};

/// Pickles `value` (protocol 3).
pub(crate) fn dumps<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    serde_pickle::to_vec(&value, serde_pickle::SerOptions::new()).map_err(Error::encode)
}

/// Unpickles `bytes` as a `T` (any protocol; no code runs).
pub(crate) fn loads<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_pickle::from_slice(bytes, serde_pickle::DeOptions::new())
        .map_err(|e| Error::decode(format!("not a pickle of the expected type: {e}")))
}

impl Connection {
    /// Sends `value` pickled, as CPython's `Connection.send(obj)` does, so a
    /// Python peer's `recv()` returns it as a Python object.
    ///
    /// Python: `Connection.send(obj)` (the Python side's view of it).
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] if the value has no pickle form (nothing is sent),
    /// [`Error::Closed`], [`Error::Value`] on a read-only end, [`Error::Io`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// use std::collections::BTreeMap;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let (a, b) = mp::pipe(true)?;
    ///     let mut d = BTreeMap::new();
    ///     d.insert("answer".to_string(), (42i64, 1.5f64, true));
    ///     a.send_pickle(&d)?;
    ///     assert_eq!(b.recv_pickle::<BTreeMap<String, (i64, f64, bool)>>()?, d);
    ///     Ok(())
    /// }
    /// ```
    pub fn send_pickle<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        let bytes = dumps(value)?;
        self.send_bytes(&bytes)
    }

    /// Receives one pickled message (from CPython's `Connection.send(obj)`),
    /// blocking until it arrives.
    ///
    /// A message that is not a pickle of a `T` is consumed and reported as
    /// [`Error::Decode`]; the connection stays usable.
    ///
    /// Python: `Connection.recv()`.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] (not a pickle, a pickle of something else, or one
    /// naming a class or function), [`Error::Eof`], [`Error::MessageTooLarge`],
    /// [`Error::Closed`], [`Error::Value`] on a write-only end, [`Error::Io`].
    pub fn recv_pickle<T: DeserializeOwned>(&self) -> Result<T> {
        loads(&self.recv_bytes()?)
    }

    /// Like [`recv_pickle`](Connection::recv_pickle), but gives up with
    /// [`Error::Timeout`] once `timeout` has passed without a message.
    ///
    /// # Errors
    ///
    /// As [`recv_pickle`](Connection::recv_pickle), plus [`Error::Timeout`].
    pub fn recv_pickle_timeout<T: DeserializeOwned>(
        &self,
        timeout: std::time::Duration,
    ) -> Result<T> {
        loads(&self.recv_frame(deadline_after(timeout))?.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    // Bytes from CPython 3.11: `pickle.dumps(obj, protocol=4)` (what
    // `Connection.send` writes, via ForkingPickler's default protocol).
    #[test]
    fn reads_protocol_4_from_cpython() {
        let p = unhex("80049516000000000000005d94284b018c0161944e88473ff8000000000000652e");
        // [1, 'a', None, True, 1.5]
        let v: (i64, String, Option<i64>, bool, f64) = loads(&p).unwrap();
        assert_eq!(v, (1, "a".into(), None, true, 1.5));
    }

    #[test]
    fn round_trip_and_wrong_type() {
        let mut m = HashMap::new();
        m.insert("k".to_string(), vec![1i64, -2, 3]);
        let b = dumps(&m).unwrap();
        assert_eq!(loads::<HashMap<String, Vec<i64>>>(&b).unwrap(), m);
        assert!(matches!(loads::<String>(&b), Err(Error::Decode(_))));
        assert!(matches!(loads::<i64>(b"garbage"), Err(Error::Decode(_))));
    }

    #[test]
    fn globals_are_refused() {
        // pickle.dumps(os.system, protocol=4): names a function (posix.system).
        let p = unhex("80049514000000000000008c05706f736978948c0673797374656d9493942e");
        assert!(matches!(loads::<i64>(&p), Err(Error::Decode(_))));
    }

    #[test]
    fn recv_pickle_timeout_waits_then_reads() {
        let (a, b) = crate::connection::pipe(true).unwrap();
        let d = std::time::Duration::from_millis(20);
        let start = std::time::Instant::now();
        assert!(matches!(
            b.recv_pickle_timeout::<i64>(d),
            Err(Error::Timeout)
        ));
        assert!(start.elapsed() >= d);
        a.send_pickle(&(None::<i64>, "x")).unwrap();
        assert_eq!(
            b.recv_pickle_timeout::<(Option<i64>, String)>(d).unwrap(),
            (None, "x".to_string())
        );
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
