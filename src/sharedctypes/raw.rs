//! [`RawValue`] and [`RawArray`]: shared scalars without a lock.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{DATA, Scalar, attach, create, load, load_scalar, store, store_scalar};
use crate::error::Result;
use crate::platform::shm::ShmRegion;
use crate::synchronize::region::{self, Kind};

/// One scalar in shared memory, with no lock.
///
/// Python: `multiprocessing.RawValue(typecode, value)`, and
/// `Value(typecode, value, lock=False)` ([`Value::new_unlocked`](crate::Value::new_unlocked)). Each
/// [`get`](Self::get) and [`set`](Self::set) is one atomic access, so a
/// value never tears; a read-modify-write (`v.set(v.get() + 1)`) from two
/// processes can lose updates: that is what [`Value`](crate::Value)'s lock is for.
///
/// # Examples
///
/// ```
/// let v = multiprocess::RawValue::new(1.5f64)?;
/// v.set(v.get() * 2.0);
/// assert_eq!(v.get(), 3.0);
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct RawValue<T: Scalar> {
    /// Header, an `RLock` at `HEADER` (a `Value`'s own lock), the typecode,
    /// the value at `DATA`.
    pub(super) region: Arc<ShmRegion>,
    _t: PhantomData<T>,
}

impl<T: Scalar> Clone for RawValue<T> {
    fn clone(&self) -> Self {
        RawValue {
            region: self.region.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: Scalar> RawValue<T> {
    /// Creates a shared value holding `x`.
    ///
    /// Python: `RawValue(typecode, x)`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) when no shared memory can be created.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiprocess::RawValue::new(7u16)?.get(), 7);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new(x: T) -> Result<RawValue<T>> {
        let region = create::<T>(Kind::Value, 1)?;
        store_scalar(&region, DATA, x);
        Ok(RawValue {
            region,
            _t: PhantomData,
        })
    }

    /// The current value (one atomic read).
    ///
    /// Python: `v.value`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(multiprocess::RawValue::new(true)?.get());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get(&self) -> T {
        load_scalar(&self.region, DATA)
    }

    /// Stores `x` (one atomic write).
    ///
    /// Python: `v.value = x`.
    ///
    /// # Examples
    ///
    /// ```
    /// let v = multiprocess::RawValue::new('a')?;
    /// v.set('é');
    /// assert_eq!(v.get(), 'é');
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn set(&self, x: T) {
        store_scalar(&self.region, DATA, x);
    }
}

impl<T: Scalar> fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawValue")
            .field("typecode", &T::TYPECODE)
            .field("value", &self.get())
            .finish()
    }
}

impl<T: Scalar> Serialize for RawValue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        region::serialize(&self.region, s)
    }
}

impl<'de, T: Scalar> Deserialize<'de> for RawValue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (region, _) = attach::<T, D>(d, Kind::Value)?;
        Ok(RawValue {
            region,
            _t: PhantomData,
        })
    }
}

/// A fixed-length array of scalars in shared memory, with no lock.
///
/// Python: `multiprocessing.RawArray(typecode, size_or_initializer)`, and
/// `Array(typecode, ..., lock=False)` ([`Array::new_unlocked`](crate::Array::new_unlocked)). Each element
/// access is one atomic access; nothing orders accesses to several elements.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// fn main() -> mp::Result<()> {
///     mp::init();
///     let a = mp::RawArray::<i64>::new(4)?;
///     let mut p = mp::Process::new(|a: mp::RawArray<i64>| {
///         for i in 0..a.len() {
///             a.set(i, i as i64 * 10); // each child owns its elements
///         }
///     }, a.clone());
///     p.start()?;
///     p.join()?;
///     assert_eq!(a.to_vec(), [0, 10, 20, 30]);
///     Ok(())
/// }
/// ```
pub struct RawArray<T: Scalar> {
    /// Header, an `RLock` at `HEADER` (an `Array`'s own lock), the typecode,
    /// the length, the elements from `DATA`.
    pub(super) region: Arc<ShmRegion>,
    /// Number of elements.
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Scalar> Clone for RawArray<T> {
    fn clone(&self) -> Self {
        RawArray {
            region: self.region.clone(),
            len: self.len,
            _t: PhantomData,
        }
    }
}

impl<T: Scalar> RawArray<T> {
    /// Creates a zero-filled array of `len` elements.
    ///
    /// Python: `RawArray(typecode, len)`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`](crate::Error::Value) when the size overflows; [`Error::Io`](crate::Error::Io) when no shared
    /// memory can be created.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiprocess::RawArray::<u8>::new(3)?.to_vec(), [0, 0, 0]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new(len: usize) -> Result<RawArray<T>> {
        let region = create::<T>(Kind::Array, len)?;
        Ok(RawArray::of(region, len))
    }

    /// Creates an array holding a copy of `items`.
    ///
    /// Python: `RawArray(typecode, sequence)`.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    ///
    /// # Examples
    ///
    /// ```
    /// let a = multiprocess::RawArray::from_slice(&[1.5f32, 2.5])?;
    /// assert_eq!(a.get(1), 2.5);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn from_slice(items: &[T]) -> Result<RawArray<T>> {
        let a = RawArray::new(items.len())?;
        for (i, x) in items.iter().enumerate() {
            store(&a.region, DATA + i * T::SIZE, *x);
        }
        Ok(a)
    }

    fn of(region: Arc<ShmRegion>, len: usize) -> RawArray<T> {
        RawArray {
            region,
            len,
            _t: PhantomData,
        }
    }

    /// Number of elements.
    ///
    /// Python: `len(a)`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiprocess::RawArray::<u64>::new(2)?.len(), 2);
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
    /// assert!(multiprocess::RawArray::<u64>::new(0)?.is_empty());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where element `i` is.
    ///
    /// # Panics
    ///
    /// When `i >= len()`.
    pub(super) fn offset(&self, i: usize) -> usize {
        assert!(
            i < self.len,
            "index {i} out of range for a shared array of length {}",
            self.len
        );
        DATA + i * T::SIZE
    }

    /// Element `i` (one atomic read).
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
    /// assert_eq!(multiprocess::RawArray::from_slice(&[4i8, 5])?.get(0), 4);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get(&self, i: usize) -> T {
        load(&self.region, self.offset(i))
    }

    /// Stores `x` at `i` (one atomic write).
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
    /// let a = multiprocess::RawArray::<i32>::new(2)?;
    /// a.set(1, -3);
    /// assert_eq!(a.to_vec(), [0, -3]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn set(&self, i: usize, x: T) {
        store(&self.region, self.offset(i), x);
    }

    /// A copy of every element (each read atomically, the whole not a
    /// snapshot).
    ///
    /// Python: `a[:]`.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = multiprocess::RawArray::from_slice(&[true, false])?;
    /// assert_eq!(a.to_vec(), [true, false]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn to_vec(&self) -> Vec<T> {
        (0..self.len)
            .map(|i| load(&self.region, DATA + i * T::SIZE))
            .collect()
    }
}

impl<T: Scalar> fmt::Debug for RawArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawArray")
            .field("typecode", &T::TYPECODE)
            .field("len", &self.len)
            .finish()
    }
}

impl<T: Scalar> Serialize for RawArray<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        region::serialize(&self.region, s)
    }
}

impl<'de, T: Scalar> Deserialize<'de> for RawArray<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (region, len) = attach::<T, D>(d, Kind::Array)?;
        Ok(RawArray::of(region, len))
    }
}

/// A typecode check for the raw constructors (the table at
/// [`Value::with_typecode`](crate::Value::with_typecode)).
impl<T: Scalar> RawValue<T> {
    /// [`new`](Self::new), checking that `typecode` is CPython's for `T`.
    ///
    /// Python: `RawValue(typecode, x)`.
    ///
    /// # Errors
    ///
    /// As [`Value::with_typecode`](crate::Value::with_typecode).
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(multiprocess::RawValue::with_typecode('d', 1.0f64).is_ok());
    /// assert!(multiprocess::RawValue::with_typecode('f', 1.0f64).is_err());
    /// ```
    pub fn with_typecode(typecode: char, x: T) -> Result<RawValue<T>> {
        super::check_typecode::<T>(typecode)?;
        RawValue::new(x)
    }
}

impl<T: Scalar> RawArray<T> {
    /// [`new`](Self::new), checking that `typecode` is CPython's for `T`.
    ///
    /// Python: `RawArray(typecode, len)`.
    ///
    /// # Errors
    ///
    /// As [`Array::with_typecode`](crate::Array::with_typecode).
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(multiprocess::RawArray::<i32>::with_typecode('i', 2).is_ok());
    /// assert!(multiprocess::RawArray::<i32>::with_typecode('x', 2).is_err());
    /// ```
    pub fn with_typecode(typecode: char, len: usize) -> Result<RawArray<T>> {
        super::check_typecode::<T>(typecode)?;
        RawArray::new(len)
    }
}
