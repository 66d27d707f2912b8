//! Python's `multiprocessing.sharedctypes`: plain values and arrays in OS shared
//! memory, each with its own lock.
//!
//! | Python | Rust |
//! |---|---|
//! | `Value('q', 0)` | [`Value::new`]`(0i64)` |
//! | `v.value` / `v.value = x` | [`Value::get`] / [`Value::set`] |
//! | `with v.get_lock(): v.value += 1` | `{ let mut g = v.lock(); *g += 1; }` |
//! | `v.get_lock()` | [`Value::get_lock`] |
//! | `Array('d', 10)` / `Array('i', [1, 2])` | [`Array::new`]`(10)` / [`Array::from_slice`]`(&[1, 2])` |
//! | `len(a)`, `a[i]`, `a[i] = x`, `a[:]` | [`Array::len`], [`Array::get`], [`Array::set`], [`Array::to_vec`] |
//! | `with a.get_lock(): a[0] = 1.0` | `{ let mut g = a.lock(); g[0] = 1.0; }` |
//! | typecodes `c u b B h H i I l L q Q f d` | `u8 char i8 u8 i16 u16 i32 u32 i64 u64 i64 u64 f32 f64` ([`Scalar`]) |
//! | `Value('l', x)` / `Array('l', n)`, the code checked | [`Value::with_typecode`]`('l', x)` / [`Array::with_typecode`]`('l', n)` |
//! | `ctypes.c_bool`, `c_ssize_t`, `c_size_t` (no typecode) | `bool`, `isize`, `usize` |
//! | `RawValue('d', x)`, `Value('d', x, lock=False)` | [`RawValue::new`]`(x)`, [`Value::new_unlocked`]`(x)` |
//! | `RawArray('d', n)`, `Array('d', n, lock=False)` | [`RawArray::new`]`(n)`, [`Array::new_unlocked`]`(n)` |
//! | `v.get_obj()`, `a.get_obj()` | [`Value::get_obj`], [`Array::get_obj`] |
//!
//! # How the memory is reached
//!
//! No `&T` or `&mut T` ever points into the mapping (another process may write
//! it at any time). Every element is read and written with a relaxed atomic of
//! its own size, so a read never tears. `get` reads without the lock (a
//! snapshot of one element); `set`, `to_vec` and the guards take the lock, as
//! Python's `Synchronized` wrappers do.
//!
//! A guard works on a **local copy**: [`ValueGuard`] reads the value when made
//! and writes it back when dropped, if it changed. [`ArrayGuard`] copies the
//! whole array the first time it is used as a slice (`g[0]`, `g.iter()`,
//! `g.copy_from_slice(..)`) and writes it all back on drop if it was mutably
//! borrowed: O(len) once per guard. Its [`get`](ArrayGuard::get) and
//! [`set`](ArrayGuard::set) touch one element and copy nothing, so prefer them
//! for a few elements of a big array. Since the write-back happens on drop, a
//! process killed inside a `Value` guard leaves the old value (never half an
//! update); the next locker takes the lock over ([`Acquired::OwnerDied`]).

use std::cell::OnceCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::platform::shm::ShmRegion;
use crate::synchronize::lock::RawRLock;
use crate::synchronize::region::{self, HEADER, Kind};
use crate::synchronize::{Acquired, RLock};

mod raw;
pub use raw::{RawArray, RawValue};

/// Where the element type's code is stored (`u32`).
const TYPECODE: usize = HEADER + RawRLock::SIZE;
/// Where an array's length is stored (`u64`).
const LEN: usize = TYPECODE + 8;
/// Where the data starts (8-aligned).
const DATA: usize = 64;
const _: () = assert!(LEN + 8 <= DATA && DATA % 8 == 0);

mod sealed {
    pub trait Sealed {}
}

/// A plain scalar that can live in shared memory: the integers, `f32`, `f64`,
/// `bool` and `char` (the C types behind Python's ctypes typecodes). Sealed:
/// every value of such a type is valid for any bits read back (a `char` reads
/// bits that are no Unicode scalar value as U+FFFD), and each has an atomic
/// of its size.
///
/// # Examples
///
/// ```
/// fn zeroed<T: multiprocess::Scalar>(n: usize) -> multiprocess::Result<multiprocess::Array<T>> {
///     multiprocess::Array::new(n)
/// }
/// assert_eq!(zeroed::<bool>(3)?.to_vec(), vec![false; 3]);
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub trait Scalar: sealed::Sealed + Copy + PartialEq + fmt::Debug + Send + Sync + 'static {
    /// The type's code, stored with the shared memory and shown by `Debug`:
    /// Python's typecode where one names exactly this type (`'q'` for `i64`,
    /// `'d'` for `f64`, `'u'` for `char`, ...); `'n'`, `'N'` and `'?'` for
    /// `isize`, `usize` and `bool`, which CPython reaches only through ctypes
    /// types (`c_ssize_t`, `c_size_t`, `c_bool`), not typecodes.
    const TYPECODE: char;
    /// Size in bytes: 1, 2, 4 or 8.
    #[doc(hidden)]
    const SIZE: usize;
    /// The bits, zero-extended.
    #[doc(hidden)]
    fn to_bits(self) -> u64;
    /// Back from the bits (the low `SIZE` bytes).
    #[doc(hidden)]
    fn from_bits(bits: u64) -> Self;
}

macro_rules! int_scalar {
    ($($t:ty => $u:ty, $code:literal;)*) => {$(
        impl sealed::Sealed for $t {}
        impl Scalar for $t {
            const TYPECODE: char = $code;
            const SIZE: usize = std::mem::size_of::<$t>();
            fn to_bits(self) -> u64 {
                self as $u as u64
            }
            fn from_bits(bits: u64) -> Self {
                bits as $u as $t
            }
        }
    )*};
}

int_scalar! {
    i8 => u8, 'b'; u8 => u8, 'B'; i16 => u16, 'h'; u16 => u16, 'H';
    i32 => u32, 'i'; u32 => u32, 'I'; i64 => u64, 'q'; u64 => u64, 'Q';
    isize => usize, 'n'; usize => usize, 'N';
}

impl sealed::Sealed for f32 {}
impl Scalar for f32 {
    const TYPECODE: char = 'f';
    const SIZE: usize = 4;
    fn to_bits(self) -> u64 {
        u64::from(f32::to_bits(self))
    }
    fn from_bits(bits: u64) -> Self {
        f32::from_bits(bits as u32)
    }
}

impl sealed::Sealed for f64 {}
impl Scalar for f64 {
    const TYPECODE: char = 'd';
    const SIZE: usize = 8;
    fn to_bits(self) -> u64 {
        f64::to_bits(self)
    }
    fn from_bits(bits: u64) -> Self {
        f64::from_bits(bits)
    }
}

impl sealed::Sealed for bool {}
impl Scalar for bool {
    const TYPECODE: char = '?';
    const SIZE: usize = 1;
    fn to_bits(self) -> u64 {
        u64::from(self)
    }
    fn from_bits(bits: u64) -> Self {
        // Any nonzero byte (another process may write any) reads as true.
        bits & 0xff != 0
    }
}

impl sealed::Sealed for char {}
impl Scalar for char {
    const TYPECODE: char = 'u';
    const SIZE: usize = 4;
    fn to_bits(self) -> u64 {
        u64::from(u32::from(self))
    }
    fn from_bits(bits: u64) -> Self {
        // Another process may write any bits: no surrogate or out-of-range
        // value ever becomes a `char`.
        char::from_u32(bits as u32).unwrap_or(char::REPLACEMENT_CHARACTER)
    }
}

/// CPython's `multiprocessing.sharedctypes.typecode_to_type` on 64-bit Linux:
/// each typecode, its C type, its size, and the `Scalar::TYPECODE`s of the
/// Rust types of that layout.
const TYPECODES: [(char, &str, usize, &[char]); 14] = [
    ('c', "c_char", 1, &['B']),
    ('u', "c_wchar", 4, &['u']),
    ('b', "c_byte", 1, &['b']),
    ('B', "c_ubyte", 1, &['B']),
    ('h', "c_short", 2, &['h']),
    ('H', "c_ushort", 2, &['H']),
    ('i', "c_int", 4, &['i']),
    ('I', "c_uint", 4, &['I']),
    ('l', "c_long", 8, &['q', 'n']),
    ('L', "c_ulong", 8, &['Q', 'N']),
    ('q', "c_longlong", 8, &['q', 'n']),
    ('Q', "c_ulonglong", 8, &['Q', 'N']),
    ('f', "c_float", 4, &['f']),
    ('d', "c_double", 8, &['d']),
];

/// The Rust type whose `TYPECODE` is `code`, for messages.
fn rust_name(code: char) -> &'static str {
    match code {
        'b' => "i8",
        'B' => "u8",
        'h' => "i16",
        'H' => "u16",
        'i' => "i32",
        'I' => "u32",
        'q' => "i64",
        'Q' => "u64",
        'n' => "isize",
        'N' => "usize",
        'f' => "f32",
        'd' => "f64",
        'u' => "char",
        _ => "bool",
    }
}

/// Checks that `typecode` is one of CPython's and names the layout of `T`.
pub(crate) fn check_typecode<T: Scalar>(typecode: char) -> Result<()> {
    let Some((_, ctype, size, types)) = TYPECODES.iter().find(|t| t.0 == typecode) else {
        // CPython: TypeError('this type has no size') from ctypes.sizeof(code).
        return Err(Error::value(format!(
            "this type has no size: {typecode:?} is not a typecode of multiprocessing.sharedctypes \
             (c u b B h H i I l L q Q f d)"
        )));
    };
    if types.contains(&T::TYPECODE) {
        return Ok(());
    }
    let fits: Vec<&str> = types.iter().map(|c| rust_name(*c)).collect();
    Err(Error::value(format!(
        "typecode {typecode:?} is ctypes.{ctype} ({size} bytes): use {}, not {}",
        fits.join(" or "),
        std::any::type_name::<T>()
    )))
}

/// Reads element `T` at `offset` with a relaxed atomic of its size. Relaxed:
/// a single element needs no ordering of its own; the lock orders the rest.
fn load<T: Scalar>(region: &ShmRegion, offset: usize) -> T {
    let bits = match T::SIZE {
        1 => u64::from(region.atomic_u8(offset).load(Ordering::Relaxed)),
        2 => u64::from(region.atomic_u16(offset).load(Ordering::Relaxed)),
        4 => u64::from(region.atomic_u32(offset).load(Ordering::Relaxed)),
        _ => region.atomic_u64(offset).load(Ordering::Relaxed),
    };
    T::from_bits(bits)
}

/// Writes element `T` at `offset` (see [`load`]).
fn store<T: Scalar>(region: &ShmRegion, offset: usize, x: T) {
    let bits = x.to_bits();
    match T::SIZE {
        1 => region
            .atomic_u8(offset)
            .store(bits as u8, Ordering::Relaxed),
        2 => region
            .atomic_u16(offset)
            .store(bits as u16, Ordering::Relaxed),
        4 => region
            .atomic_u32(offset)
            .store(bits as u32, Ordering::Relaxed),
        _ => region.atomic_u64(offset).store(bits, Ordering::Relaxed),
    }
}

/// A region of `kind` for `len` elements of `T`, its lock initialised.
fn create<T: Scalar>(kind: Kind, len: usize) -> Result<(Arc<ShmRegion>, RawRLock)> {
    let bytes = len
        .checked_mul(T::SIZE)
        .and_then(|b| b.checked_add(DATA))
        .ok_or_else(|| Error::value(format!("an array of {len} elements is too large")))?;
    let region = region::create(kind, bytes)?;
    let lock = RawRLock::init(region.clone(), HEADER);
    region
        .atomic_u32(TYPECODE)
        .store(T::TYPECODE as u32, Ordering::Relaxed);
    region.atomic_u64(LEN).store(len as u64, Ordering::Relaxed);
    Ok((region, lock))
}

/// Takes back a region sent by a `Value<T>`/`Array<T>`, checking its kind,
/// element type and length.
fn attach<'de, T: Scalar, D: Deserializer<'de>>(
    d: D,
    kind: Kind,
) -> std::result::Result<(Arc<ShmRegion>, RawRLock, usize), D::Error> {
    let region = region::deserialize(d, &[kind], DATA)?;
    let code = region.atomic_u32(TYPECODE).load(Ordering::Relaxed);
    let len = region.atomic_u64(LEN).load(Ordering::Relaxed);
    let fits = usize::try_from(len)
        .ok()
        .and_then(|l| l.checked_mul(T::SIZE))
        .and_then(|b| b.checked_add(DATA))
        .is_some_and(|b| b <= region.len());
    if code != T::TYPECODE as u32 || !fits {
        return Err(D::Error::custom(format!(
            "a shared value of another element type or size than `{}` (corrupt message)",
            std::any::type_name::<T>()
        )));
    }
    let lock = RawRLock::attach(region.clone(), HEADER);
    Ok((region, lock, len as usize))
}

fn take(lock: &RawRLock) -> Acquired {
    match lock.acquire_deadline(None) {
        Some(a) => a,
        None => unreachable!("an acquire without deadline returned without the lock"),
    }
}

// ---------------------------------------------------------------------------
// Value

/// One scalar in shared memory, with its own [`RLock`].
///
/// Python: `multiprocessing.Value(typecode, value)` (with the default
/// `lock=True`: a new `RLock`).
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let v = mp::Value::new(0i64)?;
///     let mut p = mp::Process::new(|v: mp::Value<i64>| {
///         for _ in 0..1000 {
///             *v.lock() += 1; // the read-modify-write holds the lock
///         }
///     }, v.clone());
///     p.start()?;
///     for _ in 0..1000 {
///         let mut g = v.lock();
///         *g += 1;
///     }
///     p.join()?;
///     assert_eq!(v.get(), 2000);
///     Ok(())
/// }
/// ```
pub struct Value<T: Scalar> {
    /// Header, lock at `HEADER`, typecode, the value at `DATA`.
    region: Arc<ShmRegion>,
    /// The value's lock.
    lock: RawRLock,
    /// The element type.
    _t: PhantomData<T>,
}

impl<T: Scalar> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            region: self.region.clone(),
            lock: self.lock.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: Scalar> Value<T> {
    /// Creates a shared value holding `x`.
    ///
    /// Python: `Value(typecode, x)`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when no shared memory can be created.
    ///
    /// # Examples
    ///
    /// ```
    /// let v = multiprocess::Value::new(2.5f64)?;
    /// assert_eq!(v.get(), 2.5);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new(x: T) -> Result<Value<T>> {
        let (region, lock) = create::<T>(Kind::Value, 1)?;
        store(&region, DATA, x);
        Ok(Value {
            region,
            lock,
            _t: PhantomData,
        })
    }

    /// [`new`](Value::new), checking that `typecode` is one of CPython's
    /// (`c u b B h H i I l L q Q f d`) and names `T`'s C type on 64-bit Linux:
    /// `'c'` `u8`, `'u'` `char` (`wchar_t`, 4 bytes), `'b'` `i8`, `'B'` `u8`,
    /// `'h'` `i16`, `'H'` `u16`, `'i'` `i32`, `'I'` `u32`, `'l'`/`'q'` `i64`
    /// (or `isize`), `'L'`/`'Q'` `u64` (or `usize`), `'f'` `f32`, `'d'` `f64`.
    /// For a literal port of `Value('l', 0)`.
    ///
    /// Python: `Value(typecode, x)`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for a code CPython does not know (`'n'`, `'?'`, ...;
    /// CPython raises `TypeError('this type has no size')`, whose text the
    /// message starts with) or one of another C type than `T`; [`Error::Io`]
    /// when no shared memory can be created.
    ///
    /// # Examples
    ///
    /// ```
    /// let v = multiprocess::Value::with_typecode('l', 5i64)?;
    /// assert_eq!(v.get(), 5);
    /// assert!(multiprocess::Value::with_typecode('l', 5i32).is_err()); // C long is 8 bytes
    /// assert!(multiprocess::Value::with_typecode('n', 5isize).is_err()); // not a typecode
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn with_typecode(typecode: char, x: T) -> Result<Value<T>> {
        check_typecode::<T>(typecode)?;
        Value::new(x)
    }

    /// The current value. Lock-free: one atomic read (it sees a write-back of
    /// a guard either whole or not at all).
    ///
    /// Python: `v.value`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiprocess::Value::new(7u8)?.get(), 7);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get(&self) -> T {
        load(&self.region, DATA)
    }

    /// Stores `x`, holding the value's lock (so it is not lost under another
    /// process's guard). Inside your own guard, write through the guard.
    ///
    /// Python: `v.value = x`.
    ///
    /// # Examples
    ///
    /// ```
    /// let v = multiprocess::Value::new(false)?;
    /// v.set(true);
    /// assert!(v.get());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn set(&self, x: T) {
        take(&self.lock);
        store(&self.region, DATA, x);
        // We hold it: release cannot fail.
        let _ = self.lock.release();
    }

    /// Takes the value's lock and returns a guard through which to read and
    /// write it; the new value is stored when the guard is dropped.
    ///
    /// Python: `with v.get_lock(): v.value += 1`.
    ///
    /// # Examples
    ///
    /// ```
    /// let v = multiprocess::Value::new(1i32)?;
    /// {
    ///     let mut g = v.lock();
    ///     *g *= 10;
    /// }
    /// assert_eq!(v.get(), 10);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn lock(&self) -> ValueGuard<'_, T> {
        let acquired = take(&self.lock);
        let orig = self.get();
        ValueGuard {
            value: self,
            orig,
            cur: orig,
            acquired,
        }
    }

    /// The value's lock, as an [`RLock`] handle.
    ///
    /// Python: `v.get_lock()`.
    ///
    /// # Examples
    ///
    /// ```
    /// let v = multiprocess::Value::new(0u32)?;
    /// let lock = v.get_lock();
    /// let _g = v.lock();
    /// assert!(lock.is_owned());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get_lock(&self) -> RLock {
        RLock::from_raw(self.lock.clone())
    }
}

impl<T: Scalar> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value")
            .field("typecode", &T::TYPECODE)
            .field("lock", &self.lock)
            .finish()
    }
}

impl<T: Scalar> Serialize for Value<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        region::serialize(&self.region, s)
    }
}

impl<'de, T: Scalar> Deserialize<'de> for Value<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (region, lock, _) = attach::<T, D>(d, Kind::Value)?;
        Ok(Value {
            region,
            lock,
            _t: PhantomData,
        })
    }
}

/// Holds a [`Value`]'s lock and a local copy of the value; writes the copy
/// back (if changed) and releases the lock when dropped. Made by
/// [`Value::lock`].
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ValueGuard<'a, T: Scalar> {
    /// The value.
    value: &'a Value<T>,
    /// What it held when the guard was made.
    orig: T,
    /// The local copy, read and written through `Deref`.
    cur: T,
    /// How the lock was taken.
    acquired: Acquired,
}

impl<T: Scalar> ValueGuard<'_, T> {
    /// How the lock was taken: [`Acquired::OwnerDied`] when the previous holder
    /// died holding it (the value is then the last one written back).
    ///
    /// # Examples
    ///
    /// ```
    /// let v = multiprocess::Value::new(0i64)?;
    /// assert!(!v.lock().acquired().owner_died());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn acquired(&self) -> Acquired {
        self.acquired
    }
}

impl<T: Scalar> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.cur
    }
}

impl<T: Scalar> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.cur
    }
}

impl<T: Scalar> Drop for ValueGuard<'_, T> {
    fn drop(&mut self) {
        if self.cur.to_bits() != self.orig.to_bits() {
            store(&self.value.region, DATA, self.cur);
        }
        let _ = self.value.lock.release();
    }
}

impl<T: Scalar> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueGuard")
            .field("value", self.value)
            .field("acquired", &self.acquired)
            .finish()
    }
}

// ---------------------------------------------------------------------------
// Array

/// A fixed-length array of scalars in shared memory, with its own [`RLock`].
///
/// Python: `multiprocessing.Array(typecode, size_or_initializer)`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let a = mp::Array::from_slice(&[1i32, 2, 3, 4])?;
///     let mut p = mp::Process::new(|a: mp::Array<i32>| {
///         let mut g = a.lock();
///         for i in 1..g.len() {
///             g[i] += g[i - 1]; // prefix sum in the child
///         }
///     }, a.clone());
///     p.start()?;
///     p.join()?;
///     assert_eq!(a.to_vec(), vec![1, 3, 6, 10]);
///     Ok(())
/// }
/// ```
pub struct Array<T: Scalar> {
    /// Header, lock at `HEADER`, typecode, length, elements from `DATA`.
    region: Arc<ShmRegion>,
    /// The array's lock.
    lock: RawRLock,
    /// Number of elements.
    len: usize,
    /// The element type.
    _t: PhantomData<T>,
}

impl<T: Scalar> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array {
            region: self.region.clone(),
            lock: self.lock.clone(),
            len: self.len,
            _t: PhantomData,
        }
    }
}

impl<T: Scalar> Array<T> {
    /// Creates a zero-filled array of `len` elements (`0`, `0.0`, `false`, `'\0'`).
    ///
    /// Python: `Array(typecode, len)`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when the size overflows; [`Error::Io`] when the shared
    /// memory cannot be created (out of memory or fds).
    ///
    /// # Examples
    ///
    /// ```
    /// let a = multiprocess::Array::<f64>::new(3)?;
    /// assert_eq!(a.to_vec(), vec![0.0; 3]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new(len: usize) -> Result<Array<T>> {
        // A fresh memfd is zero-filled, and zero bits are 0, 0.0, false and '\0'.
        let (region, lock) = create::<T>(Kind::Array, len)?;
        Ok(Array {
            region,
            lock,
            len,
            _t: PhantomData,
        })
    }

    /// [`new`](Array::new), checking that `typecode` is one of CPython's and
    /// names `T`'s C type (the table at [`Value::with_typecode`]). For a
    /// literal port of `Array('L', 10)`.
    ///
    /// Python: `Array(typecode, len)`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for a code CPython does not know (`'n'`, `'N'`, `'?'`,
    /// ...; CPython: `TypeError('this type has no size')`) or one of another C
    /// type than `T`; else as [`new`](Array::new).
    ///
    /// # Examples
    ///
    /// ```
    /// let a = multiprocess::Array::<u64>::with_typecode('L', 3)?;
    /// assert_eq!(a.to_vec(), [0, 0, 0]);
    /// let text = multiprocess::Array::<char>::with_typecode('u', 2)?;
    /// text.set(0, 'é');
    /// assert_eq!(text.get(0), 'é');
    /// assert!(multiprocess::Array::<bool>::with_typecode('?', 3).is_err());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn with_typecode(typecode: char, len: usize) -> Result<Array<T>> {
        check_typecode::<T>(typecode)?;
        Array::new(len)
    }

    /// Creates an array holding a copy of `items`.
    ///
    /// Python: `Array(typecode, sequence)`.
    ///
    /// # Errors
    ///
    /// As for [`new`](Array::new).
    ///
    /// # Examples
    ///
    /// ```
    /// let a = multiprocess::Array::from_slice(&[1u16, 2, 3])?;
    /// assert_eq!(a.len(), 3);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn from_slice(items: &[T]) -> Result<Array<T>> {
        let a = Array::new(items.len())?;
        for (i, x) in items.iter().enumerate() {
            store(&a.region, DATA + i * T::SIZE, *x);
        }
        Ok(a)
    }

    /// Number of elements.
    ///
    /// Python: `len(a)`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiprocess::Array::<u8>::new(5)?.len(), 5);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the array has no elements.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(multiprocess::Array::<u8>::new(0)?.is_empty());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn offset(&self, i: usize) -> usize {
        assert!(
            i < self.len,
            "index {i} out of range for a shared array of length {}",
            self.len
        );
        DATA + i * T::SIZE
    }

    /// Element `i`. Lock-free: one atomic read.
    ///
    /// Python: `a[i]`.
    ///
    /// # Panics
    ///
    /// When `i >= len()` (Python: `IndexError`).
    ///
    /// # Examples
    ///
    /// ```
    /// let a = multiprocess::Array::from_slice(&[5i64, 6])?;
    /// assert_eq!(a.get(1), 6);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get(&self, i: usize) -> T {
        load(&self.region, self.offset(i))
    }

    /// Stores `x` at `i`, holding the array's lock.
    ///
    /// Python: `a[i] = x`.
    ///
    /// # Panics
    ///
    /// When `i >= len()` (Python: `IndexError`).
    ///
    /// # Examples
    ///
    /// ```
    /// let a = multiprocess::Array::<f32>::new(2)?;
    /// a.set(0, 1.5);
    /// assert_eq!(a.to_vec(), vec![1.5, 0.0]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn set(&self, i: usize, x: T) {
        let at = self.offset(i);
        take(&self.lock);
        store(&self.region, at, x);
        let _ = self.lock.release();
    }

    /// A copy of every element, taken under the lock (a consistent snapshot).
    ///
    /// Python: `a[:]`.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = multiprocess::Array::from_slice(&[true, false])?;
    /// assert_eq!(a.to_vec(), vec![true, false]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn to_vec(&self) -> Vec<T> {
        take(&self.lock);
        let v = self.read_all();
        let _ = self.lock.release();
        v
    }

    fn read_all(&self) -> Vec<T> {
        (0..self.len)
            .map(|i| load(&self.region, DATA + i * T::SIZE))
            .collect()
    }

    /// Takes the array's lock and returns a guard to read and write it.
    ///
    /// Python: `with a.get_lock(): ...`.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = multiprocess::Array::<f64>::new(4)?;
    /// {
    ///     let mut g = a.lock();
    ///     g[0] = 1.0;          // copies the array once, written back on drop
    ///     g.set(3, 4.0);       // one element, no copy needed
    /// }
    /// assert_eq!(a.to_vec(), vec![1.0, 0.0, 0.0, 4.0]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn lock(&self) -> ArrayGuard<'_, T> {
        let acquired = take(&self.lock);
        ArrayGuard {
            array: self,
            copy: OnceCell::new(),
            dirty: false,
            acquired,
        }
    }

    /// The array's lock, as an [`RLock`] handle.
    ///
    /// Python: `a.get_lock()`.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = multiprocess::Array::<i8>::new(1)?;
    /// assert!(a.get_lock().try_acquire());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get_lock(&self) -> RLock {
        RLock::from_raw(self.lock.clone())
    }
}

impl<T: Scalar> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("typecode", &T::TYPECODE)
            .field("len", &self.len)
            .field("lock", &self.lock)
            .finish()
    }
}

impl<T: Scalar> Serialize for Array<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        region::serialize(&self.region, s)
    }
}

impl<'de, T: Scalar> Deserialize<'de> for Array<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (region, lock, len) = attach::<T, D>(d, Kind::Array)?;
        Ok(Array {
            region,
            lock,
            len,
            _t: PhantomData,
        })
    }
}

/// Holds an [`Array`]'s lock. Made by [`Array::lock`].
///
/// [`get`](ArrayGuard::get) and [`set`](ArrayGuard::set) reach one element of
/// shared memory directly. Using the guard as a slice (`g[i]`, `g.iter()`,
/// `g[i] = x`) first copies the whole array into a local buffer (once per
/// guard); if the slice was borrowed mutably, the buffer is written back when
/// the guard is dropped, before the lock is released.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ArrayGuard<'a, T: Scalar> {
    /// The array.
    array: &'a Array<T>,
    /// The local copy, made on first slice access.
    copy: OnceCell<Vec<T>>,
    /// True once the copy was borrowed mutably: write it back on drop.
    dirty: bool,
    /// How the lock was taken.
    acquired: Acquired,
}

impl<T: Scalar> ArrayGuard<'_, T> {
    /// Element `i` (from the local copy if one was made).
    ///
    /// # Panics
    ///
    /// When `i >= len()`.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = multiprocess::Array::from_slice(&[3u32, 4])?;
    /// assert_eq!(a.lock().get(1), 4);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get(&self, i: usize) -> T {
        match self.copy.get() {
            Some(c) => c[i],
            None => self.array.get(i),
        }
    }

    /// Stores `x` at `i` (into the local copy if one was made).
    ///
    /// # Panics
    ///
    /// When `i >= len()`.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = multiprocess::Array::<u32>::new(2)?;
    /// a.lock().set(1, 9);
    /// assert_eq!(a.get(1), 9);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn set(&mut self, i: usize, x: T) {
        match self.copy.get_mut() {
            Some(c) => {
                c[i] = x;
                self.dirty = true;
            }
            None => store(&self.array.region, self.array.offset(i), x),
        }
    }

    /// How the lock was taken: [`Acquired::OwnerDied`] when the previous holder
    /// died holding it (the array may then be partly written back).
    ///
    /// # Examples
    ///
    /// ```
    /// let a = multiprocess::Array::<u8>::new(1)?;
    /// assert_eq!(a.lock().acquired(), multiprocess::Acquired::Clean);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn acquired(&self) -> Acquired {
        self.acquired
    }
}

impl<T: Scalar> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.copy.get_or_init(|| self.array.read_all())
    }
}

impl<T: Scalar> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        if self.copy.get().is_none() {
            let _ = self.copy.set(self.array.read_all());
        }
        self.dirty = true;
        match self.copy.get_mut() {
            Some(c) => c,
            None => unreachable!("the copy was just made"),
        }
    }
}

impl<T: Scalar> Drop for ArrayGuard<'_, T> {
    fn drop(&mut self) {
        if let (true, Some(c)) = (self.dirty, self.copy.get()) {
            for (i, x) in c.iter().enumerate() {
                store(&self.array.region, DATA + i * T::SIZE, *x);
            }
        }
        let _ = self.array.lock.release();
    }
}

impl<T: Scalar> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArrayGuard")
            .field("array", self.array)
            .field("copied", &self.copy.get().is_some())
            .field("acquired", &self.acquired)
            .finish()
    }
}
