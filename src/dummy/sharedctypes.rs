//! `Value` and `Array`: a value or an array behind a lock, as the process
//! versions, but in this process's memory (threads share it anyway; these
//! types exist so that a program written for processes runs unchanged).
//!
//! Python's dummy `Value` is a plain object without a lock; ours keeps the
//! lock, so `*v.lock() += 1` stays correct when run either way.

use crate::util::Unpoison;
use std::cell::OnceCell;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use super::lock::{Lock, RLock};
use crate::error::Result;
use crate::sharedctypes::check_typecode;
use crate::{Acquired, Scalar};

/// A lock that guards a [`Value`] or an [`Array`]: [`RLock`] (the default)
/// or [`Lock`]. Sealed.
///
/// Python: the `lock=` argument of `Value` and `Array`; the process version
/// is [`crate::SharedLock`].
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// fn zero<L: mp::SharedLock>(v: &mp::Value<i64, L>) {
///     *v.lock() = 0;
/// }
/// let a = mp::Value::with_lock(5i64, mp::Lock::new()?)?;
/// zero(&a);
/// assert_eq!(a.get(), 0);
/// # Ok::<(), mp::Error>(())
/// ```
pub trait SharedLock: lock_sealed::Sealed + Clone + fmt::Debug + Send + Sync + 'static {}

mod lock_sealed {
    use crate::Acquired;

    pub trait Sealed {
        /// Takes the lock, blocking.
        fn take(&self) -> Acquired;
        /// Releases what [`take`](Sealed::take) took.
        fn give_back(&self);
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
}

impl SharedLock for Lock {}
impl lock_sealed::Sealed for Lock {
    fn take(&self) -> Acquired {
        self.acquire_checked()
    }
    fn give_back(&self) {
        // Err only if another thread released it meanwhile (no owner).
        let _ = self.release();
    }
}

/// Releases a lock [`take`](lock_sealed::Sealed::take)n, when dropped.
struct Held<'a, L: SharedLock> {
    /// The lock.
    lock: &'a L,
    /// How it was taken.
    acquired: Acquired,
}

impl<'a, L: SharedLock> Held<'a, L> {
    fn take(lock: &'a L) -> Held<'a, L> {
        let acquired = lock.take();
        Held { lock, acquired }
    }
}

impl<L: SharedLock> Drop for Held<'_, L> {
    fn drop(&mut self) {
        self.lock.give_back();
    }
}

/// A value shared between threads, with its own lock or a given one.
///
/// Python: `multiprocessing.dummy.Value` (a `Value` with `get_lock()`).
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// let v = mp::Value::new(0i64)?;
/// *v.lock() += 5;
/// v.set(v.get() * 2);
/// assert_eq!(v.get(), 10);
/// # Ok::<(), mp::Error>(())
/// ```
pub struct Value<T, L: SharedLock = RLock> {
    data: Arc<Mutex<T>>,
    lock: L,
}

impl<T, L: SharedLock> Clone for Value<T, L> {
    fn clone(&self) -> Self {
        Value {
            data: self.data.clone(),
            lock: self.lock.clone(),
        }
    }
}

impl<T: Copy> Value<T> {
    /// A value holding `x`. Any `Copy` type will do (threads need no shared
    /// memory layout).
    ///
    /// # Errors
    ///
    /// None in practice (the `Result` keeps the process version's signature).
    pub fn new(x: T) -> Result<Value<T>> {
        Ok(Value {
            data: Arc::new(Mutex::new(x)),
            lock: RLock::new()?,
        })
    }

    /// [`new`](Value::new), checking a CPython typecode against `T`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Value`] for an unknown typecode or one of another size,
    /// as the process version.
    pub fn with_typecode(typecode: char, x: T) -> Result<Value<T>>
    where
        T: Scalar,
    {
        check_typecode::<T>(typecode)?;
        Value::new(x)
    }
}

impl<T: Copy, L: SharedLock> Value<T, L> {
    /// A value holding `x`, guarded by `lock` (a [`Lock`] or an [`RLock`]),
    /// which [`get_lock`](Value::get_lock) returns.
    ///
    /// Python: `Value(typecode, x, lock=lock)`.
    ///
    /// # Errors
    ///
    /// None in practice.
    pub fn with_lock(x: T, lock: L) -> Result<Value<T, L>> {
        Ok(Value {
            data: Arc::new(Mutex::new(x)),
            lock,
        })
    }

    /// The current value (without the lock).
    pub fn get(&self) -> T {
        *self.data.lock().unpoison()
    }

    /// Stores `x`, holding the value's lock.
    pub fn set(&self, x: T) {
        let _g = Held::take(&self.lock);
        *self.data.lock().unpoison() = x;
    }

    /// Takes the lock; the guard reads and writes the value, written back
    /// when dropped (`with v.get_lock(): v.value += 1`).
    pub fn lock(&self) -> ValueGuard<'_, T, L> {
        let guard = Held::take(&self.lock);
        let cur = self.get();
        ValueGuard {
            value: self,
            cur,
            guard,
        }
    }

    /// The value's lock: its own, or the one it was given.
    pub fn get_lock(&self) -> L {
        self.lock.clone()
    }
}

impl<T: Copy + fmt::Debug, L: SharedLock> fmt::Debug for Value<T, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value").field("value", &self.get()).finish()
    }
}

/// A [`Value`]'s lock held, with the value to read and write.
pub struct ValueGuard<'a, T: Copy, L: SharedLock = RLock> {
    value: &'a Value<T, L>,
    cur: T,
    guard: Held<'a, L>,
}

impl<T: Copy, L: SharedLock> ValueGuard<'_, T, L> {
    /// How the lock was taken.
    pub fn acquired(&self) -> Acquired {
        self.guard.acquired
    }
}

impl<T: Copy, L: SharedLock> Deref for ValueGuard<'_, T, L> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.cur
    }
}

impl<T: Copy, L: SharedLock> DerefMut for ValueGuard<'_, T, L> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.cur
    }
}

impl<T: Copy, L: SharedLock> Drop for ValueGuard<'_, T, L> {
    fn drop(&mut self) {
        // Still under the lock: the field `guard` is dropped after this.
        *self.value.data.lock().unpoison() = self.cur;
    }
}

impl<T: Copy + fmt::Debug, L: SharedLock> fmt::Debug for ValueGuard<'_, T, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueGuard")
            .field("value", &self.cur)
            .finish()
    }
}

/// A fixed-length array shared between threads, with its own lock or a
/// given one.
///
/// Python: `multiprocessing.dummy.Array`.
///
/// # Examples
///
/// ```
/// use multiprocess::dummy as mp;
/// let a = mp::Array::from_slice(&[1u32, 2, 3])?;
/// a.set(0, 10);
/// a.lock().iter_mut().for_each(|x| *x *= 2);
/// assert_eq!(a.to_vec(), [20, 4, 6]);
/// # Ok::<(), mp::Error>(())
/// ```
pub struct Array<T, L: SharedLock = RLock> {
    data: Arc<Mutex<Vec<T>>>,
    lock: L,
}

impl<T, L: SharedLock> Clone for Array<T, L> {
    fn clone(&self) -> Self {
        Array {
            data: self.data.clone(),
            lock: self.lock.clone(),
        }
    }
}

impl<T: Copy + Default> Array<T> {
    /// `len` elements, all `T::default()` (zero).
    ///
    /// # Errors
    ///
    /// None in practice.
    pub fn new(len: usize) -> Result<Array<T>> {
        Array::from_vec(vec![T::default(); len])
    }

    /// [`new`](Array::new), checking a CPython typecode against `T`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Value`] as [`Value::with_typecode`].
    pub fn with_typecode(typecode: char, len: usize) -> Result<Array<T>>
    where
        T: Scalar,
    {
        check_typecode::<T>(typecode)?;
        Array::new(len)
    }
}

impl<T: Copy> Array<T> {
    fn from_vec(v: Vec<T>) -> Result<Array<T>> {
        Ok(Array {
            data: Arc::new(Mutex::new(v)),
            lock: RLock::new()?,
        })
    }

    /// An array holding a copy of `items`.
    ///
    /// # Errors
    ///
    /// None in practice.
    pub fn from_slice(items: &[T]) -> Result<Array<T>> {
        Array::from_vec(items.to_vec())
    }
}

impl<T: Copy + Default, L: SharedLock> Array<T, L> {
    /// `len` zero elements, guarded by `lock` (a [`Lock`] or an [`RLock`]),
    /// which [`get_lock`](Array::get_lock) returns.
    ///
    /// Python: `Array(typecode, len, lock=lock)`.
    ///
    /// # Errors
    ///
    /// None in practice.
    pub fn with_lock(len: usize, lock: L) -> Result<Array<T, L>> {
        Ok(Array {
            data: Arc::new(Mutex::new(vec![T::default(); len])),
            lock,
        })
    }
}

impl<T: Copy, L: SharedLock> Array<T, L> {
    /// The number of elements.
    pub fn len(&self) -> usize {
        self.data.lock().unpoison().len()
    }

    /// True for an empty array.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` (without the lock).
    ///
    /// # Panics
    ///
    /// When `i >= len()` (Python: `IndexError`).
    pub fn get(&self, i: usize) -> T {
        self.data.lock().unpoison()[i]
    }

    /// Stores `x` at `i`, holding the array's lock.
    ///
    /// # Panics
    ///
    /// When `i >= len()`.
    pub fn set(&self, i: usize, x: T) {
        let _g = Held::take(&self.lock);
        self.data.lock().unpoison()[i] = x;
    }

    /// A copy of all elements.
    pub fn to_vec(&self) -> Vec<T> {
        self.data.lock().unpoison().clone()
    }

    /// Takes the lock; the guard reads and writes elements (a slice copy is
    /// made on first slice use and written back when dropped).
    pub fn lock(&self) -> ArrayGuard<'_, T, L> {
        let guard = Held::take(&self.lock);
        ArrayGuard {
            array: self,
            copy: OnceCell::new(),
            dirty: false,
            guard,
        }
    }

    /// The array's lock: its own, or the one it was given.
    pub fn get_lock(&self) -> L {
        self.lock.clone()
    }
}

impl<T: Copy + fmt::Debug, L: SharedLock> fmt::Debug for Array<T, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("items", &self.to_vec())
            .finish()
    }
}

/// An [`Array`]'s lock held, with its elements to read and write.
pub struct ArrayGuard<'a, T: Copy, L: SharedLock = RLock> {
    array: &'a Array<T, L>,
    copy: OnceCell<Vec<T>>,
    dirty: bool,
    guard: Held<'a, L>,
}

impl<T: Copy, L: SharedLock> ArrayGuard<'_, T, L> {
    /// Element `i`.
    ///
    /// # Panics
    ///
    /// When `i >= len()`.
    pub fn get(&self, i: usize) -> T {
        match self.copy.get() {
            Some(c) => c[i],
            None => self.array.get(i),
        }
    }

    /// Stores `x` at `i`.
    ///
    /// # Panics
    ///
    /// When `i >= len()`.
    pub fn set(&mut self, i: usize, x: T) {
        match self.copy.get_mut() {
            Some(c) => {
                c[i] = x;
                self.dirty = true;
            }
            None => self.array.data.lock().unpoison()[i] = x,
        }
    }

    /// How the lock was taken.
    pub fn acquired(&self) -> Acquired {
        self.guard.acquired
    }
}

impl<T: Copy, L: SharedLock> Deref for ArrayGuard<'_, T, L> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.copy.get_or_init(|| self.array.to_vec())
    }
}

impl<T: Copy, L: SharedLock> DerefMut for ArrayGuard<'_, T, L> {
    fn deref_mut(&mut self) -> &mut [T] {
        let array = self.array;
        self.dirty = true;
        self.copy.get_or_init(|| array.to_vec());
        match self.copy.get_mut() {
            Some(c) => c,
            None => unreachable!("the copy was just made"),
        }
    }
}

impl<T: Copy, L: SharedLock> Drop for ArrayGuard<'_, T, L> {
    fn drop(&mut self) {
        if let (true, Some(c)) = (self.dirty, self.copy.take()) {
            *self.array.data.lock().unpoison() = c;
        }
    }
}

impl<T: Copy + fmt::Debug, L: SharedLock> fmt::Debug for ArrayGuard<'_, T, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArrayGuard")
            .field("copied", &self.copy.get().is_some())
            .finish()
    }
}
