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

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Connection, deadline_after};
use crate::error::{Error, Result};

/// Pickles `value` (protocol 3).
pub(crate) fn dumps<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    serde_pickle::to_vec(&value, serde_pickle::SerOptions::new()).map_err(Error::encode)
}

/// Unpickles `bytes` as a `T` (any protocol; no code runs).
///
/// The nesting depth is checked first ([`MAX_NESTING`]): serde-pickle recurses
/// once per level, so a hostile peer's 20 000-deep list would otherwise
/// overflow the stack and abort the process.
pub(crate) fn loads<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let depth = nesting_depth(bytes)?;
    if depth > MAX_NESTING {
        return Err(Error::decode(format!(
            "pickle nested {depth} levels deep; at most {MAX_NESTING} are accepted"
        )));
    }
    serde_pickle::from_slice(bytes, serde_pickle::DeOptions::new())
        .map_err(|e| Error::decode(format!("not a pickle of the expected type: {e}")))
}

/// The deepest nesting of containers a received pickle may have. Python's own
/// pickler stops near 1000 (its recursion limit); serde_json's reader stops at
/// 128. 256 levels fit a 2 MiB thread stack in a debug build with room to spare.
pub(crate) const MAX_NESTING: usize = 256;

/// One entry of the simulated unpickler stack.
#[derive(Clone, Copy)]
enum Slot {
    /// A `MARK`.
    Mark,
    /// An object: an index into the arena.
    Obj(usize),
}

/// The nesting depth of the object a pickle builds, found without building it:
/// the opcodes are run on a model in which every object is a node with child
/// edges (memo references share nodes, as in the real unpickler), then the
/// depth is measured iteratively.
///
/// # Errors
///
/// [`Error::Decode`] for a truncated or malformed opcode stream, an unknown
/// opcode, or a recursive structure.
fn nesting_depth(bytes: &[u8]) -> Result<usize> {
    let bad = |what: &str| Error::decode(format!("malformed pickle: {what}"));
    let mut children: Vec<Vec<usize>> = Vec::new();
    let mut stack: Vec<Slot> = Vec::new();
    let mut memo: std::collections::HashMap<u64, Slot> = std::collections::HashMap::new();
    let mut pos = 0usize;
    let take = |pos: &mut usize, n: usize| -> Result<&[u8]> {
        let end = pos
            .checked_add(n)
            .filter(|e| *e <= bytes.len())
            .ok_or_else(|| bad("truncated"))?;
        let out = &bytes[*pos..end];
        *pos = end;
        Ok(out)
    };
    let line = |pos: &mut usize| -> Result<&[u8]> {
        let rest = &bytes[*pos..];
        let n = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| bad("unterminated line"))?;
        *pos += n + 1;
        Ok(&rest[..n])
    };
    let le = |b: &[u8]| {
        b.iter()
            .rev()
            .fold(0u64, |acc, x| (acc << 8) | u64::from(*x))
    };
    fn new_node(children: &mut Vec<Vec<usize>>, kids: Vec<usize>) -> usize {
        children.push(kids);
        children.len() - 1
    }
    fn pop(stack: &mut Vec<Slot>) -> Result<usize> {
        match stack.pop() {
            Some(Slot::Obj(o)) => Ok(o),
            _ => Err(Error::decode("malformed pickle: stack underflow")),
        }
    }
    fn pop_to_mark(stack: &mut Vec<Slot>) -> Result<Vec<usize>> {
        let mut items = Vec::new();
        loop {
            match stack.pop() {
                Some(Slot::Obj(o)) => items.push(o),
                Some(Slot::Mark) => return Ok(items),
                None => return Err(Error::decode("malformed pickle: no mark")),
            }
        }
    }
    let result = loop {
        let op = *take(&mut pos, 1)?.first().ok_or_else(|| bad("truncated"))?;
        match op {
            b'.' => break pop(&mut stack)?,
            b'(' => stack.push(Slot::Mark),
            b'0' => {
                stack.pop();
            }
            b'1' => {
                pop_to_mark(&mut stack)?;
            }
            b'2' => {
                let top = *stack.last().ok_or_else(|| bad("stack underflow"))?;
                stack.push(top);
            }
            // Scalars and other leaves, with their arguments skipped.
            b'N' | 0x88 | 0x89 => stack.push(Slot::Obj(new_node(&mut children, Vec::new()))),
            b'F' | b'I' | b'L' | b'S' | b'V' | b'P' => {
                line(&mut pos)?;
                stack.push(Slot::Obj(new_node(&mut children, Vec::new())));
            }
            b'J' => {
                take(&mut pos, 4)?;
                stack.push(Slot::Obj(new_node(&mut children, Vec::new())));
            }
            b'K' | 0x82 => {
                take(&mut pos, 1)?;
                stack.push(Slot::Obj(new_node(&mut children, Vec::new())));
            }
            b'M' | 0x83 => {
                take(&mut pos, 2)?;
                stack.push(Slot::Obj(new_node(&mut children, Vec::new())));
            }
            0x84 => {
                take(&mut pos, 4)?;
                stack.push(Slot::Obj(new_node(&mut children, Vec::new())));
            }
            b'G' => {
                take(&mut pos, 8)?;
                stack.push(Slot::Obj(new_node(&mut children, Vec::new())));
            }
            b'U' | b'C' | 0x8c | 0x8a => {
                let n = le(take(&mut pos, 1)?) as usize;
                take(&mut pos, n)?;
                stack.push(Slot::Obj(new_node(&mut children, Vec::new())));
            }
            b'T' | b'X' | b'B' | 0x8b => {
                let n = le(take(&mut pos, 4)?) as usize;
                take(&mut pos, n)?;
                stack.push(Slot::Obj(new_node(&mut children, Vec::new())));
            }
            0x8d | 0x8e | 0x96 => {
                let n = usize::try_from(le(take(&mut pos, 8)?)).map_err(|_| bad("length"))?;
                take(&mut pos, n)?;
                stack.push(Slot::Obj(new_node(&mut children, Vec::new())));
            }
            b'c' => {
                line(&mut pos)?;
                line(&mut pos)?;
                stack.push(Slot::Obj(new_node(&mut children, Vec::new())));
            }
            0x97 => stack.push(Slot::Obj(new_node(&mut children, Vec::new()))),
            0x98 => {}
            // Framing and protocol markers.
            0x80 => {
                take(&mut pos, 1)?;
            }
            0x95 => {
                take(&mut pos, 8)?;
            }
            // Containers.
            b']' | b'}' | b')' | 0x8f => stack.push(Slot::Obj(new_node(&mut children, Vec::new()))),
            b'l' | b't' | b'd' | 0x91 | b'i' | b'o' => {
                if op == b'i' {
                    line(&mut pos)?;
                    line(&mut pos)?;
                }
                let items = pop_to_mark(&mut stack)?;
                stack.push(Slot::Obj(new_node(&mut children, items)));
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(pop(&mut stack)?);
                }
                stack.push(Slot::Obj(new_node(&mut children, items)));
            }
            // Two objects in, one out: REDUCE, NEWOBJ, STACK_GLOBAL; BINPERSID: one.
            b'R' | 0x81 | 0x93 => {
                let a = pop(&mut stack)?;
                let b = pop(&mut stack)?;
                stack.push(Slot::Obj(new_node(&mut children, vec![a, b])));
            }
            0x92 => {
                let a = pop(&mut stack)?;
                let b = pop(&mut stack)?;
                let c = pop(&mut stack)?;
                stack.push(Slot::Obj(new_node(&mut children, vec![a, b, c])));
            }
            b'Q' => {
                pop(&mut stack)?;
                stack.push(Slot::Obj(new_node(&mut children, Vec::new())));
            }
            // Mutations of the container below: APPEND, SETITEM, BUILD; and the
            // mark forms APPENDS, SETITEMS, ADDITEMS.
            b'a' | b'b' => {
                let item = pop(&mut stack)?;
                let target = *stack.last().ok_or_else(|| bad("stack underflow"))?;
                let Slot::Obj(t) = target else {
                    return Err(bad("append to a mark"));
                };
                children[t].push(item);
            }
            b's' => {
                let v = pop(&mut stack)?;
                let k = pop(&mut stack)?;
                let Some(Slot::Obj(t)) = stack.last().copied() else {
                    return Err(bad("setitem"));
                };
                children[t].extend([k, v]);
            }
            b'e' | b'u' | 0x90 => {
                let items = pop_to_mark(&mut stack)?;
                let Some(Slot::Obj(t)) = stack.last().copied() else {
                    return Err(bad("appends"));
                };
                children[t].extend(items);
            }
            // The memo.
            b'p' => {
                let key = line(&mut pos)?;
                let top = *stack.last().ok_or_else(|| bad("stack underflow"))?;
                memo.insert(
                    u64::from(crate::reduction::fnv1a(key) as u32) | 1 << 40,
                    top,
                );
            }
            b'q' | b'r' | 0x94 => {
                let key = match op {
                    b'q' => le(take(&mut pos, 1)?),
                    b'r' => le(take(&mut pos, 4)?),
                    _ => memo.len() as u64,
                };
                let top = *stack.last().ok_or_else(|| bad("stack underflow"))?;
                memo.insert(key, top);
            }
            b'g' | b'h' | b'j' => {
                let key = match op {
                    b'g' => u64::from(crate::reduction::fnv1a(line(&mut pos)?) as u32) | 1 << 40,
                    b'h' => le(take(&mut pos, 1)?),
                    _ => le(take(&mut pos, 4)?),
                };
                stack.push(*memo.get(&key).ok_or_else(|| bad("memo key missing"))?);
            }
            other => {
                return Err(Error::decode(format!(
                    "malformed pickle: unknown opcode 0x{other:02x}"
                )));
            }
        }
    };
    depth_of(&children, result)
}

/// The depth of the graph below `root` (a leaf is 0), iteratively, refusing
/// cycles.
fn depth_of(children: &[Vec<usize>], root: usize) -> Result<usize> {
    const UNSEEN: usize = usize::MAX;
    const ON_PATH: usize = usize::MAX - 1;
    let mut depth = vec![UNSEEN; children.len()];
    let mut work = vec![(root, 0usize)];
    while let Some(&mut (node, ref mut next)) = work.last_mut() {
        if *next == 0 {
            depth[node] = ON_PATH;
        }
        if let Some(&child) = children[node].get(*next) {
            *next += 1;
            match depth[child] {
                UNSEEN => work.push((child, 0)),
                ON_PATH => return Err(Error::decode("pickle holds a recursive structure")),
                _ => {}
            }
        } else {
            let d = children[node]
                .iter()
                .map(|c| depth[*c] + 1)
                .max()
                .unwrap_or(0);
            depth[node] = d;
            work.pop();
        }
    }
    Ok(depth[root])
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
    #[test]
    fn nesting_is_measured_and_bounded() {
        use super::*;
        let shallow = dumps(&vec![vec![vec![1i64]]]).unwrap();
        assert_eq!(nesting_depth(&shallow).unwrap(), 3);
        let mut deep = vec![0x80, 2];
        deep.extend(std::iter::repeat_n(b']', 20_000));
        deep.extend(std::iter::repeat_n(b'a', 19_999));
        deep.push(b'.');
        assert_eq!(nesting_depth(&deep).unwrap(), 19_999);
        assert!(
            matches!(loads::<serde_pickle::Value>(&deep), Err(Error::Decode(m)) if m.contains("nested"))
        );
        // Depth through the memo: one list appended into itself is a cycle.
        let cyclic = [0x80, 2, b']', b'q', 0, b'h', 0, b'a', b'.'];
        assert!(matches!(nesting_depth(&cyclic), Err(Error::Decode(m)) if m.contains("recursive")));
        // Python's own pickles of ordinary data pass.
        let ok: std::collections::BTreeMap<String, (i64, Vec<String>)> =
            [("k".to_string(), (1, vec!["a".to_string()]))]
                .into_iter()
                .collect();
        let p = dumps(&ok).unwrap();
        assert_eq!(
            loads::<std::collections::BTreeMap<String, (i64, Vec<String>)>>(&p).unwrap(),
            ok
        );
    }

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
