//! The proxies of the containers: `Namespace`, `dict`, `list`, `Value`,
//! `Array` (as src/managers/proxy.rs for the process manager). Values are
//! kept encoded, as the server keeps them: every read is a copy.

use crate::util::Unpoison;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::alive::{Alive, decode, encode};
use crate::error::{Error, Result};

// ---------------------------------------------------------------------------
// Namespace

/// Named values of any serde type.
///
/// Python: `Manager().Namespace()`.
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// let m = mp::Manager::new()?;
/// let ns = m.namespace()?;
/// ns.set("x", &3u8)?;
/// assert_eq!(ns.get::<u8>("x")?, 3);
/// assert!(matches!(ns.get::<String>("x"), Err(mp::Error::Value(_))));
/// assert!(matches!(ns.get::<u8>("y"), Err(mp::Error::Key(_))));
/// # Ok::<(), mp::Error>(())
/// ```
#[derive(Clone)]
pub struct Namespace {
    pub(super) alive: Alive,
    pub(super) attrs: Arc<Mutex<Attrs>>,
}

impl Namespace {
    /// Sets attribute `name` to `value`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Closed`].
    pub fn set<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<()> {
        self.alive.check()?;
        let bytes = encode(value)?;
        self.attrs
            .lock()
            .unpoison()
            .insert(name.to_string(), (std::any::type_name::<T>(), bytes));
        Ok(())
    }

    /// A copy of attribute `name`.
    ///
    /// # Errors
    ///
    /// [`Error::Key`] when missing, [`Error::Value`] when it holds another
    /// type, [`Error::Closed`].
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        self.alive.check()?;
        let attrs = self.attrs.lock().unpoison();
        let (stored, bytes) = attrs
            .get(name)
            .ok_or_else(|| Error::Key(format!("the namespace has no attribute {name:?}")))?;
        let wanted = std::any::type_name::<T>();
        if !same_type(stored, wanted) {
            return Err(Error::value(format!(
                "namespace attribute {name:?} holds a {stored}, not a {wanted}"
            )));
        }
        decode(bytes)
    }

    /// True if attribute `name` exists.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn has(&self, name: &str) -> Result<bool> {
        self.alive.check()?;
        Ok(self.attrs.lock().unpoison().contains_key(name))
    }

    /// Deletes attribute `name`.
    ///
    /// # Errors
    ///
    /// [`Error::Key`] when missing, [`Error::Closed`].
    pub fn del(&self, name: &str) -> Result<()> {
        self.alive.check()?;
        match self.attrs.lock().unpoison().remove(name) {
            Some(_) => Ok(()),
            None => Err(Error::Key(format!(
                "the namespace has no attribute {name:?}"
            ))),
        }
    }

    /// The attribute names, sorted.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn names(&self) -> Result<Vec<String>> {
        self.alive.check()?;
        let mut names: Vec<String> = self.attrs.lock().unpoison().keys().cloned().collect();
        names.sort();
        Ok(names)
    }
}

/// A namespace's attributes: name -> (the type set, the encoded value).
type Attrs = HashMap<String, (&'static str, Vec<u8>)>;

/// True if a value set as `stored` reads back as `wanted`: the same type, or
/// a borrowed form and its owned one (`str`/`String`, `[T]`/`Vec<T>`).
fn same_type(stored: &str, wanted: &str) -> bool {
    let owned = |t: &str| match t {
        "str" => "alloc::string::String".to_string(),
        t if t.starts_with('[') && t.ends_with(']') => {
            format!("alloc::vec::Vec<{}>", &t[1..t.len() - 1])
        }
        t => t.to_string(),
    };
    owned(stored) == owned(wanted)
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Namespace")
            .field("names", &self.attrs.lock().unpoison().len())
            .finish()
    }
}

// ---------------------------------------------------------------------------
// DictProxy

/// An insertion-ordered dict of encoded keys and values, as the server's.
#[derive(Debug, Default)]
pub(super) struct Dict {
    pub(super) entries: BTreeMap<u64, (Vec<u8>, Vec<u8>)>,
    pub(super) index: HashMap<Vec<u8>, u64>,
    pub(super) next: u64,
}

impl Dict {
    pub(super) fn insert(&mut self, k: Vec<u8>, v: Vec<u8>) -> Option<Vec<u8>> {
        if let Some(seq) = self.index.get(&k) {
            let slot = self.entries.get_mut(seq)?;
            return Some(std::mem::replace(&mut slot.1, v));
        }
        self.index.insert(k.clone(), self.next);
        self.entries.insert(self.next, (k, v));
        self.next += 1;
        None
    }

    fn get(&self, k: &[u8]) -> Option<&Vec<u8>> {
        self.index
            .get(k)
            .and_then(|s| self.entries.get(s))
            .map(|e| &e.1)
    }

    fn remove(&mut self, k: &[u8]) -> Option<Vec<u8>> {
        let seq = self.index.remove(k)?;
        self.entries.remove(&seq).map(|e| e.1)
    }
}

/// A shared dict; every value read is a copy.
///
/// Python: `Manager().dict()`.
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// let m = mp::Manager::new()?;
/// let d = m.dict_from([(1u8, "one".to_string())])?;
/// d.insert(2, "two".into())?;
/// assert_eq!(d.items()?, [(1, "one".to_string()), (2, "two".to_string())]);
/// # Ok::<(), mp::Error>(())
/// ```
pub struct DictProxy<K, V> {
    pub(super) alive: Alive,
    pub(super) dict: Arc<Mutex<Dict>>,
    pub(super) _type: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for DictProxy<K, V> {
    fn clone(&self) -> Self {
        DictProxy {
            alive: self.alive.clone(),
            dict: self.dict.clone(),
            _type: PhantomData,
        }
    }
}

impl<K, V> fmt::Debug for DictProxy<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DictProxy")
            .field("len", &self.dict.lock().unpoison().index.len())
            .finish()
    }
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> DictProxy<K, V> {
    fn with<R>(&self, f: impl FnOnce(&mut Dict) -> Result<R>) -> Result<R> {
        self.alive.check()?;
        f(&mut self.dict.lock().unpoison())
    }

    /// Sets `k` to `v`; the previous value, if any.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Decode`], [`Error::Closed`].
    pub fn insert(&self, k: K, v: V) -> Result<Option<V>> {
        let (k, v) = (encode(&k)?, encode(&v)?);
        self.with(|d| d.insert(k, v).map(|old| decode(&old)).transpose())
    }

    /// A copy of the value at `k`.
    ///
    /// # Errors
    ///
    /// As [`insert`](DictProxy::insert).
    pub fn get(&self, k: &K) -> Result<Option<V>> {
        let k = encode(k)?;
        self.with(|d| d.get(&k).map(|v| decode(v)).transpose())
    }

    /// Removes `k`; its value, if any.
    ///
    /// # Errors
    ///
    /// As [`insert`](DictProxy::insert).
    pub fn remove(&self, k: &K) -> Result<Option<V>> {
        let k = encode(k)?;
        self.with(|d| d.remove(&k).map(|v| decode(&v)).transpose())
    }

    /// The number of entries.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn len(&self) -> Result<usize> {
        self.with(|d| Ok(d.index.len()))
    }

    /// True when empty.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// True if `k` is present.
    ///
    /// # Errors
    ///
    /// As [`insert`](DictProxy::insert).
    pub fn contains_key(&self, k: &K) -> Result<bool> {
        let k = encode(k)?;
        self.with(|d| Ok(d.index.contains_key(&k)))
    }

    /// The keys, in insertion order.
    ///
    /// # Errors
    ///
    /// As [`insert`](DictProxy::insert).
    pub fn keys(&self) -> Result<Vec<K>> {
        self.with(|d| d.entries.values().map(|(k, _)| decode(k)).collect())
    }

    /// The values, in insertion order.
    ///
    /// # Errors
    ///
    /// As [`insert`](DictProxy::insert).
    pub fn values(&self) -> Result<Vec<V>> {
        self.with(|d| d.entries.values().map(|(_, v)| decode(v)).collect())
    }

    /// The entries, in insertion order.
    ///
    /// # Errors
    ///
    /// As [`insert`](DictProxy::insert).
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        self.with(|d| {
            d.entries
                .values()
                .map(|(k, v)| Ok((decode(k)?, decode(v)?)))
                .collect()
        })
    }

    /// Removes every entry.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn clear(&self) -> Result<()> {
        self.with(|d| {
            *d = Dict::default();
            Ok(())
        })
    }

    /// Removes and returns the last entry inserted.
    ///
    /// # Errors
    ///
    /// As [`insert`](DictProxy::insert).
    pub fn pop_item(&self) -> Result<Option<(K, V)>> {
        self.with(|d| {
            let Some((_, (k, v))) = d.entries.pop_last() else {
                return Ok(None);
            };
            d.index.remove(&k);
            Ok(Some((decode(&k)?, decode(&v)?)))
        })
    }

    /// The value at `k`, inserting `default` first if missing.
    ///
    /// # Errors
    ///
    /// As [`insert`](DictProxy::insert).
    pub fn set_default(&self, k: K, default: V) -> Result<V> {
        let (k, v) = (encode(&k)?, encode(&default)?);
        self.with(|d| match d.get(&k) {
            Some(existing) => decode(existing),
            None => {
                d.insert(k, v);
                Ok(default)
            }
        })
    }

    /// Inserts every pair.
    ///
    /// # Errors
    ///
    /// As [`insert`](DictProxy::insert).
    pub fn update(&self, items: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        let items: Vec<(Vec<u8>, Vec<u8>)> = items
            .into_iter()
            .map(|(k, v)| Ok((encode(&k)?, encode(&v)?)))
            .collect::<Result<_>>()?;
        self.with(|d| {
            for (k, v) in items {
                d.insert(k, v);
            }
            Ok(())
        })
    }
}

// ---------------------------------------------------------------------------
// ListProxy and ArrayProxy

/// A list of encoded items, as the server's; `fixed` for an array.
#[derive(Debug, Clone)]
pub(super) struct List {
    pub(super) alive: Alive,
    pub(super) items: Arc<Mutex<Vec<Vec<u8>>>>,
    pub(super) fixed: bool,
}

fn out_of_range(i: i64, len: usize) -> Error {
    Error::value(format!("list index {i} out of range (length {len})"))
}

/// Python's index: negative counts from the end.
fn py_index(i: i64, len: usize) -> Option<usize> {
    let len = i64::try_from(len).ok()?;
    let at = if i < 0 { i + len } else { i };
    (0..len).contains(&at).then_some(at as usize)
}

/// Python's slice bounds, clamped.
fn py_slice(a: i64, b: i64, len: usize) -> std::ops::Range<usize> {
    let n = i64::try_from(len).unwrap_or(i64::MAX);
    let clamp = |i: i64| (if i < 0 { (i + n).max(0) } else { i.min(n) }) as usize;
    let (a, b) = (clamp(a), clamp(b));
    a..b.max(a)
}

fn index(i: impl TryInto<i64>) -> Result<i64> {
    i.try_into()
        .map_err(|_| Error::value("list index out of range (it does not fit in an i64)"))
}

impl List {
    pub(super) fn new(alive: &Alive, items: Vec<Vec<u8>>, fixed: bool) -> List {
        List {
            alive: alive.clone(),
            items: Arc::new(Mutex::new(items)),
            fixed,
        }
    }

    fn with<R>(
        &self,
        resizes: Option<&str>,
        f: impl FnOnce(&mut Vec<Vec<u8>>) -> Result<R>,
    ) -> Result<R> {
        self.alive.check()?;
        if let (true, Some(op)) = (self.fixed, resizes) {
            return Err(Error::value(format!(
                "{op}: a manager Array has a fixed length"
            )));
        }
        f(&mut self.items.lock().unpoison())
    }

    fn get<T: DeserializeOwned>(&self, i: i64) -> Result<T> {
        self.with(None, |l| {
            let at = py_index(i, l.len()).ok_or_else(|| out_of_range(i, l.len()))?;
            decode(&l[at])
        })
    }

    fn set<T: Serialize>(&self, i: i64, x: &T) -> Result<()> {
        let x = encode(x)?;
        self.with(None, |l| {
            let at = py_index(i, l.len()).ok_or_else(|| out_of_range(i, l.len()))?;
            l[at] = x;
            Ok(())
        })
    }

    fn len(&self) -> Result<usize> {
        self.with(None, |l| Ok(l.len()))
    }

    fn slice<T: DeserializeOwned>(&self, a: i64, b: i64) -> Result<Vec<T>> {
        self.with(None, |l| {
            let r = py_slice(a, b, l.len());
            l[r].iter().map(|x| decode(x)).collect()
        })
    }
}

macro_rules! list_boilerplate {
    ($name:ident) => {
        impl<T> Clone for $name<T> {
            fn clone(&self) -> Self {
                $name {
                    list: self.list.clone(),
                    _type: PhantomData,
                }
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("len", &self.list.items.lock().unpoison().len())
                    .finish()
            }
        }
    };
}

/// A shared list; every item read is a copy.
///
/// Python: `Manager().list()`.
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// let m = mp::Manager::new()?;
/// let l = m.list_from([1, 2, 3])?;
/// l.push(4)?;
/// assert_eq!(l.get(-1)?, 4);
/// assert_eq!(l.slice(1, 3)?, [2, 3]);
/// assert!(matches!(l.get(9), Err(mp::Error::Value(_))));
/// # Ok::<(), mp::Error>(())
/// ```
pub struct ListProxy<T> {
    pub(super) list: List,
    pub(super) _type: PhantomData<fn() -> T>,
}

list_boilerplate!(ListProxy);

impl<T: Serialize + DeserializeOwned> ListProxy<T> {
    /// Appends `x`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Closed`].
    pub fn push(&self, x: T) -> Result<()> {
        let x = encode(&x)?;
        self.list.with(Some("push"), |l| {
            l.push(x);
            Ok(())
        })
    }

    /// A copy of item `i` (negative counts from the end).
    ///
    /// # Errors
    ///
    /// [`Error::Value`] out of range, [`Error::Decode`], [`Error::Closed`].
    pub fn get(&self, i: impl TryInto<i64>) -> Result<T> {
        self.list.get(index(i)?)
    }

    /// Sets item `i`.
    ///
    /// # Errors
    ///
    /// As [`get`](ListProxy::get).
    pub fn set(&self, i: impl TryInto<i64>, x: T) -> Result<()> {
        self.list.set(index(i)?, &x)
    }

    /// The number of items.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn len(&self) -> Result<usize> {
        self.list.len()
    }

    /// True when empty.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Removes and returns the last item.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when empty, [`Error::Closed`].
    pub fn pop(&self) -> Result<T> {
        self.list.with(Some("pop"), |l| match l.pop() {
            Some(x) => decode(&x),
            None => Err(Error::value("pop from an empty list")),
        })
    }

    /// Removes and returns item `i`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when empty or out of range, [`Error::Closed`].
    pub fn pop_at(&self, i: impl TryInto<i64>) -> Result<T> {
        let i = index(i)?;
        self.list.with(Some("pop"), |l| {
            if l.is_empty() {
                return Err(Error::value("pop from an empty list"));
            }
            let at = py_index(i, l.len()).ok_or_else(|| out_of_range(i, l.len()))?;
            decode(&l.remove(at))
        })
    }

    /// Appends every item.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Closed`].
    pub fn extend(&self, items: impl IntoIterator<Item = T>) -> Result<()> {
        let items: Vec<Vec<u8>> = items
            .into_iter()
            .map(|x| encode(&x))
            .collect::<Result<_>>()?;
        self.list.with(Some("extend"), |l| {
            l.extend(items);
            Ok(())
        })
    }

    /// The items one by one (each read when reached).
    pub fn iter(&self) -> impl Iterator<Item = Result<T>> + '_ {
        let mut next = 0i64;
        let mut done = false;
        std::iter::from_fn(move || {
            if done {
                return None;
            }
            match self.list.slice::<T>(next, next.saturating_add(1)) {
                Ok(mut v) if v.len() == 1 => {
                    next += 1;
                    v.pop().map(Ok)
                }
                Ok(_) => {
                    done = true;
                    None
                }
                Err(e) => {
                    done = true;
                    Some(Err(e))
                }
            }
        })
    }

    /// A copy of all items.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`], [`Error::Closed`].
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.list.slice(0, i64::MAX)
    }

    /// A copy of items `start..stop` (Python's slice bounds).
    ///
    /// # Errors
    ///
    /// As [`to_vec`](ListProxy::to_vec).
    pub fn slice(&self, start: impl TryInto<i64>, stop: impl TryInto<i64>) -> Result<Vec<T>> {
        self.list.slice(index(start)?, index(stop)?)
    }

    /// Inserts `x` before `i` (clamped, as Python's).
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Closed`].
    pub fn insert(&self, i: impl TryInto<i64>, x: T) -> Result<()> {
        let (i, x) = (index(i)?, encode(&x)?);
        self.list.with(Some("insert"), |l| {
            let at = py_slice(i, i64::MAX, l.len()).start;
            l.insert(at, x);
            Ok(())
        })
    }

    /// Removes the first item equal to `x`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] if none is, [`Error::Closed`].
    pub fn remove(&self, x: &T) -> Result<()> {
        let x = encode(x)?;
        self.list
            .with(Some("remove"), |l| match l.iter().position(|y| *y == x) {
                Some(at) => {
                    l.remove(at);
                    Ok(())
                }
                None => Err(Error::value("list.remove(x): x not in list")),
            })
    }

    /// The index of the first item equal to `x`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] if none is, [`Error::Closed`].
    pub fn index(&self, x: &T) -> Result<usize> {
        let x = encode(x)?;
        self.list.with(None, |l| {
            l.iter()
                .position(|y| *y == x)
                .ok_or_else(|| Error::value("list.index(x): x not in list"))
        })
    }

    /// How many items equal `x`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Closed`].
    pub fn count(&self, x: &T) -> Result<usize> {
        let x = encode(x)?;
        self.list
            .with(None, |l| Ok(l.iter().filter(|y| **y == x).count()))
    }

    /// Reverses the list in place.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn reverse(&self) -> Result<()> {
        self.list.with(None, |l| {
            l.reverse();
            Ok(())
        })
    }

    /// Removes every item.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn clear(&self) -> Result<()> {
        self.list.with(Some("clear"), |l| {
            l.clear();
            Ok(())
        })
    }

    /// Repeats the items `n` times in place (`l *= n`).
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when the result would be too long, [`Error::Closed`].
    pub fn repeat(&self, n: usize) -> Result<()> {
        self.list.with(Some("repeat"), |l| {
            let bytes: usize = l.iter().map(|b| b.len() + 24).sum();
            let fits = l.len().checked_mul(n).is_some_and(|t| t <= 1 << 27)
                && bytes.checked_mul(n).is_some_and(|t| t <= 4 << 30);
            if !fits {
                return Err(Error::value(format!(
                    "list *= {n}: the result would be too long"
                )));
            }
            let once = std::mem::take(l);
            for _ in 0..n {
                l.extend(once.iter().cloned());
            }
            Ok(())
        })
    }
}

/// A shared value; every read is a copy.
///
/// Python: `Manager().Value(typecode, value)`.
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// let m = mp::Manager::new()?;
/// let v = m.value(String::from("a"))?;
/// v.set("b".into())?;
/// assert_eq!(v.get()?, "b");
/// # Ok::<(), mp::Error>(())
/// ```
pub struct ValueProxy<T> {
    pub(super) alive: Alive,
    pub(super) cell: Arc<Mutex<Vec<u8>>>,
    pub(super) _type: PhantomData<fn() -> T>,
}

impl<T> Clone for ValueProxy<T> {
    fn clone(&self) -> Self {
        ValueProxy {
            alive: self.alive.clone(),
            cell: self.cell.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> fmt::Debug for ValueProxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueProxy").finish_non_exhaustive()
    }
}

impl<T: Serialize + DeserializeOwned> ValueProxy<T> {
    /// A copy of the value.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`], [`Error::Closed`].
    pub fn get(&self) -> Result<T> {
        self.alive.check()?;
        decode(&self.cell.lock().unpoison())
    }

    /// Sets the value.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Closed`].
    pub fn set(&self, x: T) -> Result<()> {
        self.alive.check()?;
        *self.cell.lock().unpoison() = encode(&x)?;
        Ok(())
    }
}

/// A shared fixed-length array; every item read is a copy.
///
/// Python: `Manager().Array(typecode, items)`.
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// let m = mp::Manager::new()?;
/// let a = m.array(vec![0u32; 3])?;
/// a.set(-1, 7)?;
/// assert_eq!(a.to_vec()?, [0, 0, 7]);
/// # Ok::<(), mp::Error>(())
/// ```
pub struct ArrayProxy<T> {
    pub(super) list: List,
    pub(super) _type: PhantomData<fn() -> T>,
}

list_boilerplate!(ArrayProxy);

impl<T: Serialize + DeserializeOwned> ArrayProxy<T> {
    /// The number of items.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn len(&self) -> Result<usize> {
        self.list.len()
    }

    /// True when empty.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// A copy of item `i` (negative counts from the end).
    ///
    /// # Errors
    ///
    /// [`Error::Value`] out of range, [`Error::Decode`], [`Error::Closed`].
    pub fn get(&self, i: impl TryInto<i64>) -> Result<T> {
        self.list.get(index(i)?)
    }

    /// Sets item `i`.
    ///
    /// # Errors
    ///
    /// As [`get`](ArrayProxy::get).
    pub fn set(&self, i: impl TryInto<i64>, x: T) -> Result<()> {
        self.list.set(index(i)?, &x)
    }

    /// A copy of all items.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`], [`Error::Closed`].
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.list.slice(0, i64::MAX)
    }
}
