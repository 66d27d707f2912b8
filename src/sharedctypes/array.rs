//! [`Array`]: a [`RawArray`] plus a lock, and its guard, which reaches the
//! elements in place.

use std::cell::OnceCell;
use std::fmt;
use std::ops::{Deref, DerefMut};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{DATA, Guard, RawArray, Scalar, SharedLock, check_typecode, store};
use crate::error::Result;
use crate::platform::shm::{PlainView, is_plain};
use crate::synchronize::{Acquired, RLock};

/// A fixed-length array of scalars in shared memory, with a lock: its own
/// [`RLock`], or the [`Lock`](crate::Lock) or `RLock` it was given
/// ([`with_lock`](Array::with_lock)).
///
/// Python: `multiprocessing.Array(typecode, size_or_initializer)`,
/// `Array(..., lock=some_lock)`. It is a [`RawArray`] plus a lock, as CPython's
/// `SynchronizedArray` wraps a ctypes array.
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
///             g[i] += g[i - 1]; // prefix sum in the child, in place
///         }
///     }, a.clone());
///     p.start()?;
///     p.join()?;
///     assert_eq!(a.to_vec(), vec![1, 3, 6, 10]);
///     Ok(())
/// }
/// ```
pub struct Array<T: Scalar, L: SharedLock = RLock> {
    /// The elements.
    raw: RawArray<T>,
    /// Their lock.
    guard: Guard<L>,
}

impl<T: Scalar, L: SharedLock> Clone for Array<T, L> {
    fn clone(&self) -> Self {
        Array {
            raw: self.raw.clone(),
            guard: self.guard.clone(),
        }
    }
}

impl<T: Scalar> Array<T> {
    /// Creates a zero-filled array of `len` elements (`0`, `0.0`, `false`,
    /// `'\0'`), with its own [`RLock`].
    ///
    /// Python: `Array(typecode, len)`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`](crate::Error::Value) when the size overflows;
    /// [`Error::Io`](crate::Error::Io) when the shared memory cannot be
    /// created (out of memory or fds).
    ///
    /// # Examples
    ///
    /// ```
    /// let a = multiprocess::Array::<f64>::new(3)?;
    /// assert_eq!(a.to_vec(), vec![0.0; 3]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new(len: usize) -> Result<Array<T>> {
        Ok(Array::embedded(RawArray::new(len)?))
    }

    /// [`new`](Array::new), checking that `typecode` is one of CPython's and
    /// names `T`'s C type (the table at [`Value::with_typecode`](super::Value::with_typecode)).
    /// For a literal port of `Array('L', 10)`.
    ///
    /// Python: `Array(typecode, len)`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`](crate::Error::Value) for a code CPython does not know
    /// (`'n'`, `'N'`, `'?'`, ...; CPython: `TypeError('this type has no
    /// size')`) or one of another C type than `T`; else as [`new`](Array::new).
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

    /// Creates an array holding a copy of `items`, with its own [`RLock`].
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
        Ok(Array::embedded(RawArray::from_slice(items)?))
    }

    /// `raw` behind the `RLock` in its own region.
    fn embedded(raw: RawArray<T>) -> Array<T> {
        let guard = Guard::embedded(&raw.region);
        Array { raw, guard }
    }
}

impl<T: Scalar> Array<T> {
    /// An array without a lock: Python's `Array(typecode, len, lock=False)`,
    /// which returns the raw object.
    ///
    /// # Errors
    ///
    /// As [`RawArray::new`].
    ///
    /// # Examples
    ///
    /// ```
    /// let a: multiprocess::RawArray<f64> = multiprocess::Array::new_unlocked(3)?;
    /// assert_eq!(a.len(), 3);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new_unlocked(len: usize) -> Result<RawArray<T>> {
        RawArray::new(len)
    }
}

impl<T: Scalar, L: SharedLock> Array<T, L> {
    /// Creates a zero-filled array of `len` elements guarded by `lock` (a
    /// [`Lock`](crate::Lock) or an [`RLock`]); [`get_lock`](Array::get_lock)
    /// returns that lock. For an initializer, use
    /// [`synchronized`](Array::synchronized) on a
    /// [`RawArray::from_slice`].
    ///
    /// Python: `Array(typecode, len, lock=lock)`.
    ///
    /// # Errors
    ///
    /// As for [`new`](Array::new).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// let lock = mp::RLock::new()?;
    /// let xs = mp::Array::<f64, _>::with_lock(2, lock.clone())?;
    /// let total = mp::Value::with_lock(0.0f64, lock.clone())?;
    /// {
    ///     let _both = lock.lock(); // one lock covers the array and the total
    ///     xs.set(0, 1.5);
    ///     total.set(1.5);
    /// }
    /// assert_eq!((xs.to_vec(), total.get()), (vec![1.5, 0.0], 1.5));
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn with_lock(len: usize, lock: L) -> Result<Array<T, L>> {
        Ok(Array::synchronized(RawArray::new(len)?, lock))
    }

    /// `raw` guarded by `lock`: an [`Array`] on the same memory.
    ///
    /// Python: `multiprocessing.sharedctypes.synchronized(raw, lock)`, and
    /// `Array(typecode, sequence, lock=lock)` as
    /// `Array::synchronized(RawArray::from_slice(&xs)?, lock)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// let a = mp::Array::synchronized(mp::RawArray::from_slice(&[3u8, 1, 2])?, mp::Lock::new()?);
    /// a.lock().sort();
    /// assert_eq!(a.to_vec(), [1, 2, 3]);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn synchronized(raw: RawArray<T>, lock: L) -> Array<T, L> {
        Array {
            raw,
            guard: Guard::given(lock),
        }
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
        self.raw.len()
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
        self.raw.is_empty()
    }

    /// Element `i`, read holding the array's lock (as Python's
    /// `SynchronizedArray` does; for a lock-free read use
    /// [`get_obj`](Array::get_obj)). Inside your own guard, read through the
    /// guard: with a [`Lock`](crate::Lock) this would wait for yourself, as in
    /// Python.
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
        self.raw.offset(i);
        self.guard.with(|| self.raw.get(i))
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
        self.raw.offset(i);
        self.guard.with(|| self.raw.set(i, x));
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
        self.guard.with(|| self.raw.to_vec())
    }

    /// Takes the array's lock and returns a guard that is the array: it
    /// derefs to `[T]` and `&mut [T]`, so slice code (`sort`, `iter_mut`,
    /// `copy_from_slice`, `sum`) runs on it. The lock is held until the guard
    /// is dropped.
    ///
    /// For the numbers (integers, `f32`, `f64`) the slice is the shared
    /// memory itself: nothing is copied, and other processes see each write
    /// once they take the lock. For `bool` and `char` (whose bit patterns are
    /// not all values) it is a local copy, made on first slice use and
    /// written back on drop; [`ArrayGuard::get`]/[`set`](ArrayGuard::set)
    /// reach one element without one.
    ///
    /// Python: `with a.get_lock(): ...` (and numpy's `np.frombuffer(a.get_obj())`
    /// inside it).
    ///
    /// # Panics
    ///
    /// Using two guards of the same array as slices at once on one thread
    /// (a re-entered [`RLock`]) panics, as a second `RefCell::borrow_mut`
    /// does; so does any other access to the array's elements (`a.get(i)`,
    /// a [`RawArray`] of it) by this process while a guard's slice lives.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = multiprocess::Array::from_slice(&[3.0f64, 1.0, 2.0])?;
    /// {
    ///     let mut g = a.lock();
    ///     g.sort_by(f64::total_cmp);           // in place, under the lock
    ///     g.iter_mut().for_each(|x| *x *= 10.0);
    ///     assert_eq!(g.iter().sum::<f64>(), 60.0);
    /// }
    /// assert_eq!(a.to_vec(), vec![10.0, 20.0, 30.0]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn lock(&self) -> ArrayGuard<'_, T, L> {
        let acquired = self.guard.lock.take();
        ArrayGuard {
            array: self,
            view: OnceCell::new(),
            copy: OnceCell::new(),
            dirty: false,
            acquired,
        }
    }

    /// The array's lock: its own [`RLock`], or the lock it was given.
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
    pub fn get_lock(&self) -> L {
        self.guard.lock.clone()
    }

    /// The array without its lock, on the same shared memory.
    ///
    /// Python: `a.get_obj()`.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = multiprocess::Array::from_slice(&[1i64, 2])?;
    /// a.get_obj().set(0, 9);
    /// assert_eq!(a.to_vec(), [9, 2]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get_obj(&self) -> RawArray<T> {
        self.raw.clone()
    }
}

impl<T: Scalar, L: SharedLock> fmt::Debug for Array<T, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("typecode", &T::TYPECODE)
            .field("len", &self.len())
            .field("lock", &self.guard.lock)
            .finish()
    }
}

impl<T: Scalar, L: SharedLock> Serialize for Array<T, L> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (&self.raw, self.guard.wire()).serialize(s)
    }
}

impl<'de, T: Scalar, L: SharedLock> Deserialize<'de> for Array<T, L> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (raw, lock) = <(RawArray<T>, Option<L>)>::deserialize(d)?;
        let guard = Guard::from_wire::<D::Error>(lock, &raw.region)?;
        Ok(Array { raw, guard })
    }
}

/// Holds an [`Array`]'s lock and is the array: `Deref<Target = [T]>` and
/// `DerefMut`. Made by [`Array::lock`]; releases the lock when dropped.
///
/// For numbers the slice is the shared memory, borrowed in place (made on
/// first slice use). For `bool` and `char` it is a local copy, written back
/// on drop if it was borrowed mutably. [`get`](ArrayGuard::get) and
/// [`set`](ArrayGuard::set) reach one element either way.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ArrayGuard<'a, T: Scalar, L: SharedLock = RLock> {
    /// The array.
    array: &'a Array<T, L>,
    /// The elements in place (numbers), made on first slice use.
    view: OnceCell<PlainView<'a, T>>,
    /// The local copy (`bool`, `char`), made on first slice use.
    copy: OnceCell<Vec<T>>,
    /// True once the copy was borrowed mutably: write it back on drop.
    dirty: bool,
    /// How the lock was taken.
    acquired: Acquired,
}

impl<'a, T: Scalar, L: SharedLock> ArrayGuard<'a, T, L> {
    /// Element `i`.
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
        match (self.view.get(), self.copy.get()) {
            (Some(v), _) => v[i],
            (None, Some(c)) => c[i],
            (None, None) => self.array.raw.get(i),
        }
    }

    /// Stores `x` at `i`.
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
        if let Some(v) = self.view.get_mut() {
            v[i] = x;
        } else if let Some(c) = self.copy.get_mut() {
            c[i] = x;
            self.dirty = true;
        } else {
            self.array.raw.set(i, x);
        }
    }

    /// How the lock was taken: [`Acquired::OwnerDied`] when the previous holder
    /// died holding it (the array may then be partly updated).
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

    /// The elements in place, made on first use; `None` for `bool`/`char`.
    fn view(&self) -> Option<&PlainView<'a, T>> {
        if !is_plain::<T>() {
            return None;
        }
        let raw = &self.array.raw;
        Some(
            self.view
                .get_or_init(|| match raw.region.plain_view(DATA, raw.len()) {
                    Some(v) => v,
                    None => panic!(
                        "shared array is already borrowed in place by another guard of this \
                     thread (a re-entered lock); use the first guard"
                    ),
                }),
        )
    }
}

impl<T: Scalar, L: SharedLock> Deref for ArrayGuard<'_, T, L> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self.view() {
            Some(v) => v,
            None => self.copy.get_or_init(|| self.array.raw.to_vec()),
        }
    }
}

impl<T: Scalar, L: SharedLock> DerefMut for ArrayGuard<'_, T, L> {
    fn deref_mut(&mut self) -> &mut [T] {
        if self.view().is_some() {
            if let Some(v) = self.view.get_mut() {
                return v;
            }
        }
        if self.copy.get().is_none() {
            let _ = self.copy.set(self.array.raw.to_vec());
        }
        self.dirty = true;
        match self.copy.get_mut() {
            Some(c) => c,
            None => unreachable!("the copy was just made"),
        }
    }
}

impl<T: Scalar, L: SharedLock> Drop for ArrayGuard<'_, T, L> {
    fn drop(&mut self) {
        // The view goes first: the elements are free again for atomics.
        drop(self.view.take());
        if let (true, Some(c)) = (self.dirty, self.copy.get()) {
            for (i, x) in c.iter().enumerate() {
                store(&self.array.raw.region, DATA + i * T::SIZE, *x);
            }
        }
        self.array.guard.lock.give_back();
    }
}

impl<T: Scalar, L: SharedLock> fmt::Debug for ArrayGuard<'_, T, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArrayGuard")
            .field("array", self.array)
            .field("in_place", &self.view.get().is_some())
            .field("copied", &self.copy.get().is_some())
            .field("acquired", &self.acquired)
            .finish()
    }
}
