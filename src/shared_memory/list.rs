//! [`ShareableList`]: CPython's fixed-length list in a named block, in its
//! exact layout.
//!
//! The block, all integers native (little-endian, 8 bytes):
//!
//! | bytes | what |
//! |---|---|
//! | 8 | the number of items `n` |
//! | `(n + 1) * 8` | each item's offset in the data area, then the area's size |
//! | the data area | the items, each in an 8-byte slot or an `8 * k`-byte string slot |
//! | `n * 8` | each item's `struct` format, NUL-padded: `q`, `d`, `xxxxxxx?` (bool), `xxxxxx?x` (None), `<k>s` |
//! | `n` | each item's back-transform code: 0 number or bool, 1 str, 2 bytes, 3 None |

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::SharedMemory;
use crate::error::{Error, Result};

/// CPython's `_alignment`: slot sizes are multiples of it.
const ALIGN: usize = 8;
/// Back-transform codes (`_back_transforms_mapping`).
const CODE_PLAIN: u8 = 0;
const CODE_STR: u8 = 1;
const CODE_BYTES: u8 = 2;
const CODE_NONE: u8 = 3;
/// The formats of the fixed-size items.
const FMT_INT: &str = "q";
const FMT_FLOAT: &str = "d";
const FMT_BOOL: &str = "xxxxxxx?";
const FMT_NONE: &str = "xxxxxx?x";

/// One item of a [`ShareableList`]: the types CPython's can hold.
///
/// # Examples
///
/// ```
/// use multiprocess::shared_memory::Item;
/// assert_eq!(Item::from(3), Item::Int(3));
/// assert_eq!(Item::from("hi"), Item::Str("hi".into()));
/// assert_eq!(Item::from(None::<i64>), Item::None);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// Python `int` (format `q`: a 64-bit signed integer).
    Int(i64),
    /// Python `float` (format `d`).
    Float(f64),
    /// Python `bool` (format `xxxxxxx?`).
    Bool(bool),
    /// Python `str`, UTF-8 (format `<k>s`). Trailing NULs are lost, as in
    /// CPython.
    Str(String),
    /// Python `bytes` (format `<k>s`). Trailing NULs are lost, as in CPython.
    Bytes(Vec<u8>),
    /// Python `None` (format `xxxxxx?x`).
    None,
}

impl From<i64> for Item {
    fn from(x: i64) -> Self {
        Item::Int(x)
    }
}
impl From<i32> for Item {
    fn from(x: i32) -> Self {
        Item::Int(x.into())
    }
}
impl From<f64> for Item {
    fn from(x: f64) -> Self {
        Item::Float(x)
    }
}
impl From<bool> for Item {
    fn from(x: bool) -> Self {
        Item::Bool(x)
    }
}
impl From<&str> for Item {
    fn from(x: &str) -> Self {
        Item::Str(x.to_owned())
    }
}
impl From<String> for Item {
    fn from(x: String) -> Self {
        Item::Str(x)
    }
}
impl From<&[u8]> for Item {
    fn from(x: &[u8]) -> Self {
        Item::Bytes(x.to_vec())
    }
}
impl From<Vec<u8>> for Item {
    fn from(x: Vec<u8>) -> Self {
        Item::Bytes(x)
    }
}
impl<T: Into<Item>> From<Option<T>> for Item {
    fn from(x: Option<T>) -> Self {
        x.map_or(Item::None, Into::into)
    }
}

impl Item {
    /// The format a new list gives the item, and its slot size.
    fn new_format(&self) -> (String, usize) {
        match self {
            Item::Str(s) => string_format(s.len()),
            Item::Bytes(b) => string_format(b.len()),
            _ => (self.fixed_format().to_owned(), ALIGN),
        }
    }

    /// The format of an item of a fixed size (not a string).
    fn fixed_format(&self) -> &'static str {
        match self {
            Item::Int(_) => FMT_INT,
            Item::Float(_) => FMT_FLOAT,
            Item::Bool(_) => FMT_BOOL,
            _ => FMT_NONE,
        }
    }

    fn code(&self) -> u8 {
        match self {
            Item::Str(_) => CODE_STR,
            Item::Bytes(_) => CODE_BYTES,
            Item::None => CODE_NONE,
            _ => CODE_PLAIN,
        }
    }

    /// The packed bytes (a string's without its NUL padding).
    fn packed(&self) -> Vec<u8> {
        match self {
            Item::Int(x) => x.to_ne_bytes().to_vec(),
            Item::Float(x) => x.to_ne_bytes().to_vec(),
            Item::Bool(b) => [0, 0, 0, 0, 0, 0, 0, u8::from(*b)].to_vec(),
            Item::None => [0u8; 8].to_vec(),
            Item::Str(s) => s.as_bytes().to_vec(),
            Item::Bytes(b) => b.clone(),
        }
    }
}

/// `<k>s` for a string of `len` bytes: the smallest multiple of 8 above it
/// (CPython counts characters here and can silently truncate non-ASCII
/// text; we count bytes, which is the same for ASCII and always fits).
fn string_format(len: usize) -> (String, usize) {
    let k = ALIGN * (len / ALIGN + 1);
    (format!("{k}s"), k)
}

/// A fixed-length list of ints, floats, bools, strings, bytes and `None` in
/// a named shared-memory block, in CPython's layout: a list made here is
/// read and written by `ShareableList(name=...)` in CPython, and the other
/// way round.
///
/// Python: `multiprocessing.shared_memory.ShareableList`. Items may change
/// type in place ([`set`](Self::set)); a string or bytes item must fit the
/// slot it was given at creation.
///
/// # Examples
///
/// ```
/// use multiprocess::shared_memory::{Item, ShareableList};
/// let mut l = ShareableList::new(&[1.into(), 2.5.into(), "howdy".into(), Item::None])?;
/// assert_eq!(l.get(2)?, Item::Str("howdy".into()));
/// l.set(0, "x".into())?; // an int slot takes a short string
/// let other = ShareableList::attach(l.shm().name())?;
/// assert_eq!(other.get(0)?, Item::Str("x".into()));
/// assert_eq!(other.format()?, "8sd8sxxxxxx?x");
/// l.shm().unlink()?;
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct ShareableList {
    /// The block.
    shm: SharedMemory,
    /// Number of items.
    len: usize,
    /// Each item's offset in the data area, then the area's size.
    offsets: Vec<usize>,
}

impl ShareableList {
    /// Creates a list holding `items` in a new tracked block with a random
    /// name.
    ///
    /// Python: `ShareableList(sequence)`.
    ///
    /// # Errors
    ///
    /// As [`SharedMemory::create`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::shared_memory::{Item, ShareableList};
    /// let l = ShareableList::new(&[Item::Int(-7), Item::Bool(true)])?;
    /// assert_eq!(l.to_vec()?, [Item::Int(-7), Item::Bool(true)]);
    /// l.shm().unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new(items: &[Item]) -> Result<ShareableList> {
        Self::create(None, items)
    }

    /// Creates a list holding `items` in a new tracked block named `name`
    /// (random for `None`).
    ///
    /// Python: `ShareableList(sequence, name=name)`.
    ///
    /// # Errors
    ///
    /// As [`SharedMemory::create`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::shared_memory::ShareableList;
    /// let l = ShareableList::create(Some("mp_doc_list"), &[1.into()])?;
    /// assert_eq!(l.shm().name(), "mp_doc_list");
    /// l.shm().unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn create(name: Option<&str>, items: &[Item]) -> Result<ShareableList> {
        let formats: Vec<(String, usize)> = items.iter().map(Item::new_format).collect();
        let mut offsets = vec![0usize];
        for (_, slot) in &formats {
            offsets.push(offsets[offsets.len() - 1] + slot);
        }
        let n = items.len();
        let data = offsets[n];
        let size = 8 + (n + 1) * 8 + data + n * 8 + n;
        let mut shm = SharedMemory::create(name, size)?;
        let mut header = Vec::with_capacity((n + 2) * 8);
        header.extend_from_slice(&(n as i64).to_ne_bytes());
        for off in &offsets {
            header.extend_from_slice(&(*off as i64).to_ne_bytes());
        }
        shm.write_at(0, &header)?;
        let mut list = ShareableList {
            shm,
            len: n,
            offsets,
        };
        for (i, (item, (fmt, _))) in items.iter().zip(&formats).enumerate() {
            list.store(i, item, fmt)?;
        }
        Ok(list)
    }

    /// Attaches to the list in block `name` (made here or by CPython),
    /// checking its layout.
    ///
    /// Python: `ShareableList(name=name)`.
    ///
    /// # Errors
    ///
    /// As [`SharedMemory::attach`]; [`Error::Decode`] when the block does not
    /// hold a list's layout.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::shared_memory::{SharedMemory, ShareableList};
    /// let l = ShareableList::new(&["a".into()])?;
    /// assert_eq!(ShareableList::attach(l.shm().name())?.len(), 1);
    /// let junk = SharedMemory::create(None, 8)?;
    /// assert!(matches!(ShareableList::attach(junk.name()), Err(multiprocess::Error::Decode(_))));
    /// junk.unlink()?;
    /// l.shm().unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn attach(name: &str) -> Result<ShareableList> {
        let shm = SharedMemory::attach(name)?;
        Self::from_shm(shm)
    }

    fn from_shm(shm: SharedMemory) -> Result<ShareableList> {
        let size = shm.size();
        let bad = |what: &str| Error::Decode(format!("not a ShareableList: {what}"));
        let n = read_i64(&shm, 0).map_err(|_| bad("too small"))?;
        let n = usize::try_from(n).map_err(|_| bad("negative length"))?;
        let header = n
            .checked_add(2)
            .and_then(|k| k.checked_mul(8))
            .filter(|&h| h <= size)
            .ok_or_else(|| bad("length past the block"))?;
        let mut offsets = Vec::with_capacity(n + 1);
        for i in 0..=n {
            let off = read_i64(&shm, 8 + 8 * i)?;
            let off = usize::try_from(off).map_err(|_| bad("negative offset"))?;
            if offsets.last().is_some_and(|&prev| off < prev + ALIGN) {
                return Err(bad("offsets out of order"));
            }
            offsets.push(off);
        }
        let end = header
            .checked_add(offsets[n])
            .and_then(|e| e.checked_add(n * 9))
            .filter(|&e| e <= size);
        if end.is_none() {
            return Err(bad("items past the block"));
        }
        Ok(ShareableList {
            shm,
            len: n,
            offsets,
        })
    }

    /// The block, for its name (to attach elsewhere) and to unlink it.
    ///
    /// Python: `l.shm`.
    ///
    /// # Examples
    ///
    /// ```
    /// let l = multiprocess::shared_memory::ShareableList::new(&[])?;
    /// assert_eq!(l.shm().size(), 16); // the length and one offset
    /// l.shm().unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn shm(&self) -> &SharedMemory {
        &self.shm
    }

    /// Number of items.
    ///
    /// Python: `len(l)`.
    ///
    /// # Examples
    ///
    /// ```
    /// let l = multiprocess::shared_memory::ShareableList::new(&[1.into(), 2.into()])?;
    /// assert_eq!(l.len(), 2);
    /// l.shm().unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a list of no items.
    ///
    /// # Examples
    ///
    /// ```
    /// let l = multiprocess::shared_memory::ShareableList::new(&[])?;
    /// assert!(l.is_empty());
    /// l.shm().unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn data_start(&self) -> usize {
        (self.len + 2) * 8
    }

    fn formats_start(&self) -> usize {
        self.data_start() + self.offsets[self.len]
    }

    fn codes_start(&self) -> usize {
        self.formats_start() + self.len * 8
    }

    fn check_index(&self, i: usize) -> Result<()> {
        if i < self.len {
            Ok(())
        } else {
            Err(Error::value(format!(
                "index {i} out of range for a ShareableList of {} items",
                self.len
            )))
        }
    }

    /// Item `i`'s format, as stored.
    fn format_of(&self, i: usize) -> Result<String> {
        let mut raw = [0u8; 8];
        self.shm.read_at(self.formats_start() + i * 8, &mut raw)?;
        let end = raw.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        String::from_utf8(raw[..end].to_vec())
            .map_err(|_| Error::Decode(format!("item {i}'s format is not text")))
    }

    /// Item `i`.
    ///
    /// Python: `l[i]` (an `IndexError` there, [`Error::Value`] here).
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for `i >= len()`; [`Error::Decode`] for an item
    /// whose stored format or text is not one a list writes.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::shared_memory::{Item, ShareableList};
    /// let l = ShareableList::new(&[b"ab\0".as_slice().into()])?;
    /// assert_eq!(l.get(0)?, Item::Bytes(b"ab".to_vec())); // trailing NULs go, as in CPython
    /// assert!(l.get(1).is_err());
    /// l.shm().unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get(&self, i: usize) -> Result<Item> {
        self.check_index(i)?;
        let fmt = self.format_of(i)?;
        let mut code = [0u8; 1];
        self.shm.read_at(self.codes_start() + i, &mut code)?;
        let at = self.data_start() + self.offsets[i];
        let bad = || Error::Decode(format!("item {i} has the unknown format {fmt:?}"));
        let mut eight = [0u8; 8];
        match fmt.as_str() {
            FMT_INT => {
                self.shm.read_at(at, &mut eight)?;
                Ok(Item::Int(i64::from_ne_bytes(eight)))
            }
            FMT_FLOAT => {
                self.shm.read_at(at, &mut eight)?;
                Ok(Item::Float(f64::from_ne_bytes(eight)))
            }
            FMT_BOOL => {
                self.shm.read_at(at, &mut eight)?;
                Ok(Item::Bool(eight[7] != 0))
            }
            FMT_NONE => Ok(Item::None),
            s => {
                let k: usize = s
                    .strip_suffix('s')
                    .and_then(|k| k.parse().ok())
                    .ok_or_else(bad)?;
                let mut raw = vec![0u8; k];
                self.shm.read_at(at, &mut raw)?;
                let end = raw.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
                raw.truncate(end);
                match code[0] {
                    CODE_STR => String::from_utf8(raw)
                        .map(Item::Str)
                        .map_err(|_| Error::Decode(format!("item {i} is not UTF-8 text"))),
                    _ => Ok(Item::Bytes(raw)),
                }
            }
        }
    }

    /// Stores `item` at `i`, as CPython's `l[i] = item`: a string or bytes
    /// must fit the slot (8 bytes, or the string slot made at creation).
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for `i >= len()`, or a string or bytes longer than
    /// the slot (CPython: `ValueError("bytes/str item exceeds available
    /// storage")`).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::shared_memory::{Item, ShareableList};
    /// let mut l = ShareableList::new(&[Item::Int(1)])?;
    /// l.set(0, Item::Float(0.5))?;
    /// assert_eq!(l.get(0)?, Item::Float(0.5));
    /// assert!(l.set(0, "far too long for 8 bytes".into()).is_err());
    /// l.shm().unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn set(&mut self, i: usize, item: Item) -> Result<()> {
        self.check_index(i)?;
        let fmt = match &item {
            Item::Str(_) | Item::Bytes(_) => {
                let slot = self.offsets[i + 1] - self.offsets[i];
                if item.packed().len() > slot {
                    return Err(Error::value("bytes/str item exceeds available storage"));
                }
                let current = self.format_of(i)?;
                if current.ends_with('s') {
                    current
                } else {
                    format!("{slot}s")
                }
            }
            _ => item.fixed_format().to_owned(),
        };
        self.store(i, &item, &fmt)
    }

    /// Writes item `i`'s format, code and value.
    fn store(&mut self, i: usize, item: &Item, fmt: &str) -> Result<()> {
        let mut fmt_bytes = [0u8; 8];
        fmt_bytes[..fmt.len()].copy_from_slice(fmt.as_bytes());
        let (formats, codes) = (self.formats_start(), self.codes_start());
        self.shm.write_at(formats + i * 8, &fmt_bytes)?;
        self.shm.write_at(codes + i, &[item.code()])?;
        let mut value = item.packed();
        if let Some(k) = fmt.strip_suffix('s').and_then(|k| k.parse::<usize>().ok()) {
            value.resize(k, 0); // `struct` pads an `s` field with NULs
        }
        let at = self.data_start() + self.offsets[i];
        self.shm.write_at(at, &value)
    }

    /// Every item, in order.
    ///
    /// Python: `list(l)`.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::shared_memory::{Item, ShareableList};
    /// let l = ShareableList::new(&[Item::None, Item::Float(1.0)])?;
    /// assert_eq!(l.to_vec()?, [Item::None, Item::Float(1.0)]);
    /// l.shm().unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn to_vec(&self) -> Result<Vec<Item>> {
        (0..self.len).map(|i| self.get(i)).collect()
    }

    /// The `struct` format of all items, joined.
    ///
    /// Python: `l.format`.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] for a format that is not text.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::shared_memory::{Item, ShareableList};
    /// let l = ShareableList::new(&[1.into(), 2.0.into(), true.into(), "abc".into(), Item::None])?;
    /// assert_eq!(l.format()?, "qdxxxxxxx?8sxxxxxx?x");
    /// l.shm().unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn format(&self) -> Result<String> {
        (0..self.len).map(|i| self.format_of(i)).collect()
    }

    /// How many items equal `item`.
    ///
    /// Python: `l.count(item)`.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::shared_memory::ShareableList;
    /// let l = ShareableList::new(&[1.into(), 2.into(), 1.into()])?;
    /// assert_eq!(l.count(&1.into())?, 2);
    /// l.shm().unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn count(&self, item: &Item) -> Result<usize> {
        Ok(self.to_vec()?.iter().filter(|x| *x == item).count())
    }

    /// The position of the first item equal to `item`.
    ///
    /// Python: `l.index(item)`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when no item is equal (CPython: `ValueError`); as
    /// [`get`](Self::get).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::shared_memory::ShareableList;
    /// let l = ShareableList::new(&["a".into(), "b".into()])?;
    /// assert_eq!(l.index(&"b".into())?, 1);
    /// assert!(l.index(&"c".into()).is_err());
    /// l.shm().unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn index(&self, item: &Item) -> Result<usize> {
        self.to_vec()?
            .iter()
            .position(|x| x == item)
            .ok_or_else(|| Error::value(format!("{item:?} not in this container")))
    }
}

fn read_i64(shm: &SharedMemory, at: usize) -> Result<i64> {
    let mut b = [0u8; 8];
    shm.read_at(at, &mut b)?;
    Ok(i64::from_ne_bytes(b))
}

impl fmt::Debug for ShareableList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShareableList")
            .field("len", &self.len)
            .field("name", &self.shm.name())
            .finish()
    }
}

/// Travels by name, as CPython pickles it: the receiver attaches.
impl Serialize for ShareableList {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.shm.name().serialize(s)
    }
}

impl<'de> Deserialize<'de> for ShareableList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        ShareableList::attach(&name).map_err(D::Error::custom)
    }
}
