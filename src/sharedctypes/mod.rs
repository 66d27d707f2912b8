//! Python's `multiprocessing.sharedctypes`: plain values and arrays in OS shared
//! memory, each with its own lock or a given one.
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
//! | `Value('d', x, lock=lock)`, `Array('d', n, lock=lock)` | [`Value::with_lock`]`(x, lock)`, [`Array::with_lock`]`(n, lock)` ([`SharedLock`]: [`Lock`] or [`RLock`]) |
//! | `sharedctypes.synchronized(raw, lock)` | [`Value::synchronized`], [`Array::synchronized`] |
//!
//! # How the memory is reached
//!
//! A [`Value`] is a [`RawValue`] plus a lock, an [`Array`] a [`RawArray`]
//! plus a lock (CPython's `Synchronized` wrappers). The lock is the `RLock`
//! kept in the object's own memory, or a [`Lock`] or `RLock` given to
//! `with_lock`; a given lock travels with the object when it is sent.
//!
//! Every element is read and written with a relaxed atomic of its own size,
//! so a read never tears. `Value::get` reads without the lock (a snapshot of
//! one element); `set`, `Array::get`, `to_vec` and the guards take the lock,
//! as Python's `Synchronized` wrappers do.
//!
//! [`ValueGuard`] works on a local copy: it reads the value when made and
//! writes it back when dropped, if it changed, so a process killed inside a
//! `Value` guard leaves the old value (never half an update); the next locker
//! takes the lock over ([`Acquired::OwnerDied`]). [`ArrayGuard`] derefs to the
//! elements themselves for numbers (integers, `f32`, `f64`): a `&mut [T]`
//! into the shared memory, made on first slice use, while the lock is held
//! (the one place a reference points into a mapping; see `PlainView` in
//! `platform::shm`). For `bool` and `char`, whose bit patterns are not all
//! values, it is a local copy written back on drop.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::platform::shm::ShmRegion;
use crate::synchronize::lock::RawRLock;
use crate::synchronize::region::{self, HEADER, Kind};
use crate::synchronize::{Acquired, Lock, RLock};

mod array;
mod raw;
pub use array::{Array, ArrayGuard};
pub use raw::{RawArray, RawValue};

/// Where the element type's code is stored (`u32`).
const TYPECODE: usize = HEADER + RawRLock::SIZE;
/// Where an array's length is stored (`u64`).
const LEN: usize = TYPECODE + 8;
/// Where the data starts (8-aligned).
const DATA: usize = LEN + 8;
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
/// Announced to the region (`element`), so no in-place view overlaps it.
fn load<T: Scalar>(region: &ShmRegion, offset: usize) -> T {
    T::from_bits(region.element(offset, T::SIZE, || read_bits::<T>(region, offset)))
}

/// Writes element `T` at `offset` (see [`load`]).
fn store<T: Scalar>(region: &ShmRegion, offset: usize, x: T) {
    region.element(offset, T::SIZE, || {
        write_bits::<T>(region, offset, x.to_bits())
    });
}

/// Reads a value's scalar at `offset`, unannounced: only an array's region is
/// ever viewed in place, so a value's needs none of `element`'s two locked
/// instructions, which were most of a `Value` access under its lock.
fn load_scalar<T: Scalar>(region: &ShmRegion, offset: usize) -> T {
    T::from_bits(read_bits::<T>(region, offset))
}

/// Writes a value's scalar at `offset` (see [`load_scalar`]).
fn store_scalar<T: Scalar>(region: &ShmRegion, offset: usize, x: T) {
    write_bits::<T>(region, offset, x.to_bits());
}

/// The bits of the `T` at `offset`, read with a relaxed atomic of its size.
#[inline]
fn read_bits<T: Scalar>(region: &ShmRegion, offset: usize) -> u64 {
    match T::SIZE {
        1 => u64::from(region.atomic_u8(offset).load(Ordering::Relaxed)),
        2 => u64::from(region.atomic_u16(offset).load(Ordering::Relaxed)),
        4 => u64::from(region.atomic_u32(offset).load(Ordering::Relaxed)),
        _ => region.atomic_u64(offset).load(Ordering::Relaxed),
    }
}

/// Writes `bits` as the `T` at `offset` with a relaxed atomic of its size.
#[inline]
fn write_bits<T: Scalar>(region: &ShmRegion, offset: usize, bits: u64) {
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

/// A region of `kind` for `len` elements of `T`, its own `RLock` initialised
/// (used when no lock is given).
fn create<T: Scalar>(kind: Kind, len: usize) -> Result<Arc<ShmRegion>> {
    let bytes = len
        .checked_mul(T::SIZE)
        .and_then(|b| b.checked_add(DATA))
        .ok_or_else(|| Error::value(format!("an array of {len} elements is too large")))?;
    let region = region::create(kind, bytes)?;
    RawRLock::init(region.clone(), HEADER);
    region
        .atomic_u32(TYPECODE)
        .store(T::TYPECODE as u32, Ordering::Relaxed);
    region.atomic_u64(LEN).store(len as u64, Ordering::Relaxed);
    Ok(region)
}

/// Takes back a region sent by a `RawValue<T>`/`RawArray<T>`, checking its
/// kind, element type and length.
fn attach<'de, T: Scalar, D: Deserializer<'de>>(
    d: D,
    kind: Kind,
) -> std::result::Result<(Arc<ShmRegion>, usize), D::Error> {
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
    Ok((region, len as usize))
}

// ---------------------------------------------------------------------------
// The lock of a Value or Array

/// A lock that guards a [`Value`] or an [`Array`]: [`RLock`] (the default, as
/// in Python) or [`Lock`]. Sealed.
///
/// Python: the `lock=` argument of `Value(typecode, x, lock=...)` and
/// `Array(...)`, which takes either kind; `get_lock()` returns that very lock,
/// so several values given one lock exclude each other, in every process.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn zero<L: mp::SharedLock>(v: &mp::Value<i64, L>) {
///     *v.lock() = 0; // the same code for either kind of lock
/// }
/// let a = mp::Value::with_lock(5i64, mp::Lock::new()?)?;
/// let b = mp::Value::new(6i64)?;
/// zero(&a);
/// zero(&b);
/// assert_eq!((a.get(), b.get()), (0, 0));
/// # Ok::<(), mp::Error>(())
/// ```
pub trait SharedLock:
    lock_sealed::Sealed + Clone + fmt::Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
}

mod lock_sealed {
    use crate::synchronize::{Acquired, RLock};

    pub trait Sealed: Sized {
        /// Takes the lock, blocking.
        fn take(&self) -> Acquired;
        /// Releases what [`take`](Sealed::take) took.
        fn give_back(&self);
        /// `own`, the `RLock` embedded in every value's region, as `Self`:
        /// only an `RLock` can be it.
        fn own(own: RLock) -> Option<Self>;
    }
}

impl SharedLock for RLock {}
impl lock_sealed::Sealed for RLock {
    fn take(&self) -> Acquired {
        self.acquire_checked()
    }
    fn give_back(&self) {
        // Taken by `take` on this thread: the release cannot fail.
        let _ = self.release();
    }
    fn own(own: RLock) -> Option<RLock> {
        Some(own)
    }
}

impl SharedLock for Lock {}
impl lock_sealed::Sealed for Lock {
    fn take(&self) -> Acquired {
        self.acquire_checked()
    }
    fn give_back(&self) {
        // Err only if someone else released it meanwhile (a Lock has no
        // owner); it is free either way.
        let _ = self.release();
    }
    fn own(_: RLock) -> Option<Lock> {
        None
    }
}

/// A value's or array's lock, and whether it is the `RLock` embedded in the
/// object's own region (then it does not travel separately).
#[derive(Clone)]
struct Guard<L> {
    /// The lock.
    lock: L,
    /// True for the embedded `RLock` (no lock given).
    own: bool,
}

impl Guard<RLock> {
    /// The object's own `RLock`, at `HEADER` of its region.
    fn embedded(region: &Arc<ShmRegion>) -> Guard<RLock> {
        Guard {
            lock: RLock::from_raw(RawRLock::attach(region.clone(), HEADER)),
            own: true,
        }
    }
}

impl<L: SharedLock> Guard<L> {
    /// The object's own `RLock` as `L` (`None` unless `L` is `RLock`).
    fn own(region: &Arc<ShmRegion>) -> Option<Guard<L>> {
        Some(Guard {
            lock: L::own(Guard::embedded(region).lock)?,
            own: true,
        })
    }

    /// A given lock.
    fn given(lock: L) -> Guard<L> {
        Guard { lock, own: false }
    }

    /// The wire form: the given lock, or `None` for the embedded one.
    fn wire(&self) -> Option<&L> {
        (!self.own).then_some(&self.lock)
    }

    /// Back from [`wire`](Self::wire), for the object whose region is `region`.
    fn from_wire<E: serde::de::Error>(
        lock: Option<L>,
        region: &Arc<ShmRegion>,
    ) -> std::result::Result<Guard<L>, E> {
        match lock {
            Some(l) => Ok(Guard::given(l)),
            None => Guard::own(region).ok_or_else(|| {
                E::custom("a shared value sent without the Lock it was given (corrupt message)")
            }),
        }
    }

    /// Runs `f` holding the lock (released on unwind too: `f` panics on a
    /// bad index or an element borrowed in place).
    fn with<R>(&self, f: impl FnOnce() -> R) -> R {
        self.lock.take();
        let _release = GiveBack(&self.lock);
        f()
    }
}

/// Releases a lock [`take`](lock_sealed::Sealed::take)n, when dropped.
struct GiveBack<'a, L: SharedLock>(&'a L);

impl<L: SharedLock> Drop for GiveBack<'_, L> {
    fn drop(&mut self) {
        self.0.give_back();
    }
}

// ---------------------------------------------------------------------------
// Value

/// One scalar in shared memory, with a lock: its own [`RLock`], or the
/// [`Lock`] or `RLock` it was given ([`with_lock`](Value::with_lock)).
///
/// Python: `multiprocessing.Value(typecode, value)` (with the default
/// `lock=True`: a new `RLock`), `Value(typecode, value, lock=some_lock)`.
/// It is a [`RawValue`] plus a lock, as CPython's `Synchronized` wraps a ctypes
/// object.
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
pub struct Value<T: Scalar, L: SharedLock = RLock> {
    /// The value itself.
    raw: RawValue<T>,
    /// Its lock.
    guard: Guard<L>,
}

impl<T: Scalar, L: SharedLock> Clone for Value<T, L> {
    fn clone(&self) -> Self {
        Value {
            raw: self.raw.clone(),
            guard: self.guard.clone(),
        }
    }
}

impl<T: Scalar> Value<T> {
    /// Creates a shared value holding `x`, with its own [`RLock`].
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
        let raw = RawValue::new(x)?;
        let guard = Guard::embedded(&raw.region);
        Ok(Value { raw, guard })
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
}

impl<T: Scalar> Value<T> {
    /// A shared value without a lock: Python's `Value(typecode, x,
    /// lock=False)`, which returns the raw object.
    ///
    /// # Errors
    ///
    /// As [`RawValue::new`].
    ///
    /// # Examples
    ///
    /// ```
    /// let v: multiprocess::RawValue<i32> = multiprocess::Value::new_unlocked(5)?;
    /// assert_eq!(v.get(), 5);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new_unlocked(x: T) -> Result<RawValue<T>> {
        RawValue::new(x)
    }
}

impl<T: Scalar, L: SharedLock> Value<T, L> {
    /// Creates a shared value holding `x`, guarded by `lock` (a [`Lock`] or an
    /// [`RLock`]); [`get_lock`](Value::get_lock) returns that lock. Values and
    /// arrays given the same lock exclude each other in every process.
    ///
    /// Python: `Value(typecode, x, lock=lock)`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when no shared memory can be created.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// let lock = mp::Lock::new()?;
    /// let hits = mp::Value::with_lock(0u64, lock.clone())?;
    /// let misses = mp::Value::with_lock(0u64, lock.clone())?;
    /// {
    ///     let mut h = hits.lock(); // takes `lock`
    ///     assert!(lock.is_locked());
    ///     *h += 1;
    /// }
    /// misses.set(2);
    /// assert_eq!((hits.get(), misses.get()), (1, 2));
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn with_lock(x: T, lock: L) -> Result<Value<T, L>> {
        Ok(Value::synchronized(RawValue::new(x)?, lock))
    }

    /// `raw` guarded by `lock`: a [`Value`] on the same memory.
    ///
    /// Python: `multiprocessing.sharedctypes.synchronized(raw, lock)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// let raw = mp::RawValue::new(1i32)?;
    /// let v = mp::Value::synchronized(raw.clone(), mp::RLock::new()?);
    /// v.set(2);
    /// assert_eq!(raw.get(), 2);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn synchronized(raw: RawValue<T>, lock: L) -> Value<T, L> {
        Value {
            raw,
            guard: Guard::given(lock),
        }
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
        self.raw.get()
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
        self.guard.with(|| self.raw.set(x));
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
    pub fn lock(&self) -> ValueGuard<'_, T, L> {
        let acquired = self.guard.lock.take();
        let orig = self.get();
        ValueGuard {
            value: self,
            orig,
            cur: orig,
            acquired,
        }
    }

    /// The value's lock: its own [`RLock`], or the lock it was given.
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
    pub fn get_lock(&self) -> L {
        self.guard.lock.clone()
    }

    /// The value without its lock, on the same shared memory.
    ///
    /// Python: `v.get_obj()`.
    ///
    /// # Examples
    ///
    /// ```
    /// let v = multiprocess::Value::new(1u8)?;
    /// v.get_obj().set(2);
    /// assert_eq!(v.get(), 2);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get_obj(&self) -> RawValue<T> {
        self.raw.clone()
    }
}

impl<T: Scalar, L: SharedLock> fmt::Debug for Value<T, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value")
            .field("typecode", &T::TYPECODE)
            .field("lock", &self.guard.lock)
            .finish()
    }
}

impl<T: Scalar, L: SharedLock> Serialize for Value<T, L> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (&self.raw, self.guard.wire()).serialize(s)
    }
}

impl<'de, T: Scalar, L: SharedLock> Deserialize<'de> for Value<T, L> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (raw, lock) = <(RawValue<T>, Option<L>)>::deserialize(d)?;
        let guard = Guard::from_wire::<D::Error>(lock, &raw.region)?;
        Ok(Value { raw, guard })
    }
}

/// Holds a [`Value`]'s lock and a local copy of the value; writes the copy
/// back (if changed) and releases the lock when dropped. Made by
/// [`Value::lock`].
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ValueGuard<'a, T: Scalar, L: SharedLock = RLock> {
    /// The value.
    value: &'a Value<T, L>,
    /// What it held when the guard was made.
    orig: T,
    /// The local copy, read and written through `Deref`.
    cur: T,
    /// How the lock was taken.
    acquired: Acquired,
}

impl<T: Scalar, L: SharedLock> ValueGuard<'_, T, L> {
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

impl<T: Scalar, L: SharedLock> Deref for ValueGuard<'_, T, L> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.cur
    }
}

impl<T: Scalar, L: SharedLock> DerefMut for ValueGuard<'_, T, L> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.cur
    }
}

impl<T: Scalar, L: SharedLock> Drop for ValueGuard<'_, T, L> {
    fn drop(&mut self) {
        if self.cur.to_bits() != self.orig.to_bits() {
            self.value.raw.set(self.cur);
        }
        self.value.guard.lock.give_back();
    }
}

impl<T: Scalar, L: SharedLock> fmt::Debug for ValueGuard<'_, T, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueGuard")
            .field("value", self.value)
            .field("acquired", &self.acquired)
            .finish()
    }
}
