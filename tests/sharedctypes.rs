//! `Value` and `Array` across real processes.
//!
//! Ported from cpython: Lib/test/_test_multiprocessing.py (3.11, PSF licence):
//! _TestValue, _TestArray, _TestSharedCTypes, processes only. Changes: typecodes
//! become Rust types, `get_lock()` contexts become guards, `lock=False` and
//! `RawValue`/`RawArray` are the `RawValue`/`RawArray` types; the locked-counter
//! race, the 64 MiB array, the dead-holder test and the typecode table checked
//! against the local python3 are ours.

multiprocess::test_support!();
mod common;

use common::{LONG, LeakCheck, SHORT, joined_ok, serial, start, within};
use multiprocess as mp;
use serde::{Deserialize, Serialize};

/// The values of CPython's test_value: ('i', 25, 30), ('d', 3.625, -4.25),
/// ('h', -232, 234), ('q', 2**33, 2**34), plus bool and u8 (for 'c').
#[derive(Serialize, Deserialize)]
struct Values {
    i: mp::Value<i32>,
    d: mp::Value<f64>,
    h: mp::Value<i16>,
    q: mp::Value<i64>,
    b: mp::Value<bool>,
    c: mp::Value<u8>,
}

// _TestValue

// CPython: _TestValue.test_value
#[test]
fn test_value() {
    let _s = serial();
    let v = Values {
        i: mp::Value::new(25).unwrap(),
        d: mp::Value::new(3.625).unwrap(),
        h: mp::Value::new(-232).unwrap(),
        q: mp::Value::new(1 << 33).unwrap(),
        b: mp::Value::new(false).unwrap(),
        c: mp::Value::new(b'x').unwrap(),
    };
    assert_eq!(
        (
            v.i.get(),
            v.d.get(),
            v.h.get(),
            v.q.get(),
            v.b.get(),
            v.c.get()
        ),
        (25, 3.625, -232, 1 << 33, false, b'x')
    );
    let copy = Values {
        i: v.i.clone(),
        d: v.d.clone(),
        h: v.h.clone(),
        q: v.q.clone(),
        b: v.b.clone(),
        c: v.c.clone(),
    };
    joined_ok(start(
        |v: Values| {
            v.i.set(30);
            v.d.set(-4.25);
            v.h.set(234);
            v.q.set(1 << 34);
            v.b.set(true);
            v.c.set(b'y');
        },
        copy,
    ));
    assert_eq!(
        (
            v.i.get(),
            v.d.get(),
            v.h.get(),
            v.q.get(),
            v.b.get(),
            v.c.get()
        ),
        (30, -4.25, 234, 1 << 34, true, b'y')
    );
}

// Ours: a Value's own lock is an RLock, one per Value.
#[test]
fn value_get_lock_is_its_own_rlock() {
    let _s = serial();
    let v = mp::Value::new(0i64).unwrap();
    let lock = v.get_lock();
    assert!(lock.try_acquire());
    assert!(lock.is_owned());
    // Re-entrant: set() inside the held lock does not deadlock.
    v.set(5);
    lock.release().unwrap();
    assert_eq!(v.get(), 5);
    assert!(lock.release().is_err());
    let other = mp::Value::new(0i64).unwrap();
    assert!(other.get_lock().try_acquire());
    assert!(lock.try_acquire(), "each Value has a lock of its own");
}

#[test]
fn value_debug_hides_the_value() {
    let _s = serial();
    let v = mp::Value::new(1234567i64).unwrap();
    let s = format!("{v:?}");
    assert!(s.starts_with("Value { typecode: 'q', lock: RLock"), "{s}");
    assert!(!s.contains("1234567"), "{s}");
}

const WORKERS: usize = 4;
const INCREMENTS: u64 = 2000;

// The classic race, in its locked form: no update is lost.
#[test]
fn locked_increments_from_many_processes_are_exact() {
    let _s = serial();
    let v = mp::Value::new(0u64).unwrap();
    let children: Vec<_> = (0..WORKERS)
        .map(|_| {
            start(
                |v: mp::Value<u64>| {
                    for _ in 0..INCREMENTS {
                        let mut g = v.lock();
                        *g += 1;
                    }
                },
                v.clone(),
            )
        })
        .collect();
    for p in children {
        joined_ok(p);
    }
    assert_eq!(v.get(), WORKERS as u64 * INCREMENTS);
}

#[test]
fn a_guard_writes_back_only_what_changed() {
    let _s = serial();
    let v = mp::Value::new(1i32).unwrap();
    {
        let g = v.lock();
        assert_eq!(*g, 1);
        // set() inside the guard (same thread: re-entrant) survives the drop of
        // an unchanged guard.
        v.set(2);
    }
    assert_eq!(v.get(), 2);
    {
        let mut g = v.lock();
        *g += 40;
        assert_eq!(v.get(), 2, "written back on drop, not before");
    }
    assert_eq!(v.get(), 42);
}

#[test]
fn a_dead_holder_of_a_value_lock_is_taken_over() {
    let _s = serial();
    let v = mp::Value::new(7i64).unwrap();
    let held = mp::Event::new().unwrap();
    let never = mp::Event::new().unwrap();
    let mut p = start(
        |(v, held, never): (mp::Value<i64>, mp::Event, mp::Event)| {
            let mut g = v.lock();
            *g = 1000; // never written back: the process dies first
            held.set();
            never.wait();
        },
        (v.clone(), held.clone(), never.clone()),
    );
    assert!(held.wait_timeout(LONG));
    let pid = p.pid().unwrap();
    p.kill().unwrap();
    p.join().unwrap();
    let v2 = v.clone();
    let (how, seen) = within(SHORT, "take over a dead holder's value lock", move || {
        let mut g = v2.lock();
        let seen = *g;
        *g += 1;
        (g.acquired(), seen)
    });
    assert_eq!(how, mp::Acquired::OwnerDied { pid });
    assert_eq!(
        seen, 7,
        "a killed guard leaves the old value, never half an update"
    );
    assert_eq!(v.get(), 8);
    assert_eq!(v.get_lock().recoveries(), 1);
}

// ---------------------------------------------------------------------------
// Array

// _TestArray

// CPython: _TestArray.test_array (prefix sum in a child)
#[test]
fn test_array() {
    let _s = serial();
    let seq = [681i32, -564, 321, 54, 7, 993, 421];
    let a = mp::Array::from_slice(&seq).unwrap();
    assert_eq!(a.len(), seq.len());
    assert_eq!(a.get(0), seq[0]);
    assert_eq!(a.to_vec(), seq.to_vec());
    joined_ok(start(
        |a: mp::Array<i32>| {
            let mut g = a.lock();
            for i in 1..g.len() {
                g[i] += g[i - 1];
            }
        },
        a.clone(),
    ));
    let mut expected = seq.to_vec();
    for i in 1..expected.len() {
        expected[i] += expected[i - 1];
    }
    assert_eq!(a.to_vec(), expected);
}

// CPython: _TestArray.test_array_from_size
#[test]
fn test_array_from_size() {
    let _s = serial();
    for size in [0usize, 1, 10] {
        let a = mp::Array::<i32>::new(size).unwrap();
        assert_eq!(a.len(), size);
        assert_eq!(a.to_vec(), vec![0; size]);
        assert_eq!(a.is_empty(), size == 0);
    }
    assert_eq!(mp::Array::<f64>::new(3).unwrap().to_vec(), vec![0.0; 3]);
    assert_eq!(mp::Array::<bool>::new(2).unwrap().to_vec(), vec![false; 2]);
}

// Ours: the guard of an Array, one element and the whole slice.
#[test]
fn array_lock_and_guard_access() {
    let _s = serial();
    let a = mp::Array::<f64>::new(4).unwrap();
    {
        let mut g = a.lock();
        g.set(1, 2.0); // one element, no view made
        assert_eq!(g.get(1), 2.0);
        g[0] = 1.0; // the shared memory itself, in place
        assert_eq!(g.get(0), 1.0);
        g.set(3, 4.0); // through the view now
        assert_eq!(g.to_vec(), vec![1.0, 2.0, 0.0, 4.0]);
        assert!(a.get_lock().is_owned());
    }
    assert_eq!(a.to_vec(), vec![1.0, 2.0, 0.0, 4.0]);
    {
        let g = a.lock();
        assert_eq!(g.iter().sum::<f64>(), 7.0);
    }
    a.set(2, 3.0);
    assert_eq!(a.to_vec(), vec![1.0, 2.0, 3.0, 4.0]);
    let s = format!("{a:?}");
    assert!(
        s.starts_with("Array { typecode: 'd', len: 4, lock: RLock"),
        "{s}"
    );
}

// Ours: while a guard's slice is the shared memory, any other access to the
// elements by this process is refused (a panic, as a second
// RefCell::borrow_mut), and the lock is left as it was.
#[test]
fn array_elements_borrowed_in_place_refuse_other_access() {
    let _s = serial();
    let a = mp::Array::from_slice(&[1i32, 2, 3]).unwrap();
    let raw = a.get_obj();
    {
        let mut g = a.lock();
        g[0] = 10;
        let by_get = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| a.get(1)));
        assert!(by_get.is_err());
        let by_raw = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| raw.set(1, 0)));
        assert!(by_raw.is_err());
        let second = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| a.lock()[0]));
        assert!(second.is_err());
        assert_eq!(*g, [10, 2, 3]);
    }
    // The guard's release left the lock free, the data whole.
    assert!(!a.get_lock().is_owned());
    assert_eq!(raw.to_vec(), [10, 2, 3]);
    assert!(a.get_lock().try_acquire());
    a.get_lock().release().unwrap();
    // A re-entered guard that only uses get/set needs no second view.
    let g = a.lock();
    let mut inner = a.lock();
    inner.set(2, 30);
    drop(inner);
    assert_eq!(g.get(2), 30);
}

#[test]
#[should_panic(expected = "out of range")]
fn array_index_out_of_range_panics() {
    let _s = serial();
    let a = mp::Array::<u8>::new(2).unwrap();
    a.get(2);
}

#[test]
fn array_elements_set_by_children_are_seen() {
    let _s = serial();
    let a = mp::Array::<u64>::new(WORKERS).unwrap();
    let children: Vec<_> = (0..WORKERS)
        .map(|i| {
            start(
                |(a, i): (mp::Array<u64>, usize)| a.set(i, (i as u64 + 1) * 11),
                (a.clone(), i),
            )
        })
        .collect();
    for p in children {
        joined_ok(p);
    }
    assert_eq!(a.to_vec(), vec![11, 22, 33, 44]);
}

// Beyond CPython's tests: an array over many MiB.
#[test]
fn a_64_mib_array_is_shared() {
    let _s = serial();
    const N: usize = (64 << 20) / 8;
    let a = mp::Array::<u64>::new(N).unwrap();
    joined_ok(start(
        |a: mp::Array<u64>| {
            let mut g = a.lock();
            for (i, x) in g.iter_mut().enumerate() {
                *x = i as u64 * 3;
            }
        },
        a.clone(),
    ));
    assert_eq!(a.len(), N);
    assert_eq!(a.get(N - 1), (N as u64 - 1) * 3);
    let v = a.to_vec();
    let sum: u64 = v.iter().sum();
    assert_eq!(sum, 3 * (N as u64) * (N as u64 - 1) / 2);
}

// ---------------------------------------------------------------------------
// Typecodes (CPython: multiprocessing.sharedctypes.typecode_to_type)

/// `typecode` is accepted for `T`, whose size is CPython's `ctypes.sizeof`
/// of that typecode on 64-bit Linux, and the value and array work.
fn accepts<T: mp::Scalar>(typecode: char, size: usize, x: T) {
    assert_eq!(std::mem::size_of::<T>(), size, "typecode {typecode:?}");
    let v = mp::Value::with_typecode(typecode, x).unwrap();
    assert_eq!(v.get(), x);
    let a = mp::Array::<T>::with_typecode(typecode, 3).unwrap();
    a.set(2, x);
    assert_eq!(a.get(2), x);
}

/// `typecode` is refused for `T` (another C type) with `Error::Value`.
fn refuses<T: mp::Scalar>(typecode: char, x: T) {
    let e = mp::Value::with_typecode(typecode, x).unwrap_err();
    assert!(matches!(e, mp::Error::Value(_)), "{typecode:?}: {e}");
    let e = mp::Array::<T>::with_typecode(typecode, 3).unwrap_err();
    assert!(matches!(e, mp::Error::Value(_)), "{typecode:?}: {e}");
}

// CPython: sharedctypes.typecode_to_type; sizes are ctypes.sizeof on x86-64 Linux
#[test]
fn every_cpython_typecode_has_its_size() {
    let _s = serial();
    accepts('c', 1, b'x');
    accepts('u', 4, 'ü');
    accepts('b', 1, -5i8);
    accepts('B', 1, 250u8);
    accepts('h', 2, -300i16);
    accepts('H', 2, 60_000u16);
    accepts('i', 4, -70_000i32);
    accepts('I', 4, 4_000_000_000u32);
    accepts('l', 8, -(1i64 << 40));
    accepts('l', 8, -7isize);
    accepts('L', 8, 1u64 << 63);
    accepts('L', 8, 7usize);
    accepts('q', 8, i64::MIN);
    accepts('Q', 8, u64::MAX);
    accepts('f', 4, 1.5f32);
    accepts('d', 8, -2.25f64);
    // A typecode of another C type than the Rust one.
    refuses('l', 1i32);
    refuses('i', 1i64);
    refuses('c', 1i8);
    refuses('u', 1u32);
    refuses('f', 1.0f64);
    refuses('B', 'x');
}

// CPython 3.11: Array('n', 3) -> TypeError('this type has no size')
#[test]
fn non_cpython_typecodes_are_refused() {
    let _s = serial();
    for (code, e) in [
        ('n', mp::Value::with_typecode('n', 1isize).map(drop)),
        ('N', mp::Value::with_typecode('N', 1usize).map(drop)),
        ('?', mp::Value::with_typecode('?', true).map(drop)),
        ('x', mp::Array::<u8>::with_typecode('x', 3).map(drop)),
    ] {
        match e {
            Err(mp::Error::Value(m)) => {
                assert!(m.starts_with("this type has no size"), "{code:?}: {m}")
            }
            other => panic!("{code:?}: {other:?}"),
        }
    }
    // The Rust types still work without a typecode (ctypes.c_ssize_t,
    // c_size_t, c_bool in CPython).
    assert_eq!(mp::Value::new(-1isize).unwrap().get(), -1);
    assert_eq!(
        mp::Array::from_slice(&[true, false]).unwrap().to_vec(),
        [true, false]
    );
}

// 'u' (wchar_t) as `char`, written by a child; bits that are no Unicode
// scalar value (another process may write any) read as U+FFFD.
#[test]
fn a_wchar_array_crosses_processes() {
    assert_eq!(<char as mp::Scalar>::from_bits(0xD800), '\u{FFFD}');
    assert_eq!(<char as mp::Scalar>::from_bits(0x11_0000), '\u{FFFD}');
    assert_eq!(<char as mp::Scalar>::from_bits(0x20AC), '€');
    let _s = serial();
    let a = mp::Array::<char>::with_typecode('u', 4).unwrap();
    joined_ok(start(
        |a: mp::Array<char>| {
            for (i, c) in "héé€".chars().enumerate() {
                a.set(i, c);
            }
        },
        a.clone(),
    ));
    assert_eq!(a.to_vec().into_iter().collect::<String>(), "héé€");
}

/// The sizes a typecode is accepted with, over every size of Rust scalar.
fn accepted_sizes(code: char) -> Vec<usize> {
    let tries = [
        (1, mp::Value::with_typecode(code, 0u8).is_ok()),
        (1, mp::Value::with_typecode(code, 0i8).is_ok()),
        (2, mp::Value::with_typecode(code, 0u16).is_ok()),
        (2, mp::Value::with_typecode(code, 0i16).is_ok()),
        (4, mp::Value::with_typecode(code, 0u32).is_ok()),
        (4, mp::Value::with_typecode(code, 0i32).is_ok()),
        (4, mp::Value::with_typecode(code, 0f32).is_ok()),
        (4, mp::Value::with_typecode(code, 'a').is_ok()),
        (8, mp::Value::with_typecode(code, 0u64).is_ok()),
        (8, mp::Value::with_typecode(code, 0i64).is_ok()),
        (8, mp::Value::with_typecode(code, 0f64).is_ok()),
        (1, mp::Value::with_typecode(code, false).is_ok()),
    ];
    let mut sizes: Vec<usize> = tries.iter().filter(|t| t.1).map(|t| t.0).collect();
    sizes.dedup();
    sizes
}

// The typecode table checked against the local python3: the same codes, each
// with ctypes.sizeof of its type, every other code refused with CPython's
// message.
#[test]
fn typecodes_match_the_local_python3() {
    let _s = serial();
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import ctypes\n\
             from multiprocessing.sharedctypes import typecode_to_type as t\n\
             print(' '.join('%s:%d' % (k, ctypes.sizeof(v)) for k, v in sorted(t.items())))\n\
             try:\n    __import__('multiprocessing').RawValue('n', 0)\n\
             except TypeError as e:\n    print(e)",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("python3 must be on PATH");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let table: Vec<(char, usize)> = lines
        .next()
        .unwrap()
        .split(' ')
        .map(|kv| {
            let (k, v) = kv.split_once(':').unwrap();
            (k.chars().next().unwrap(), v.parse().unwrap())
        })
        .collect();
    assert_eq!(table.len(), 14);
    let message = lines.next().unwrap();
    for code in (0u8..128).map(char::from).filter(|c| c.is_ascii_graphic()) {
        match table.iter().find(|t| t.0 == code) {
            Some(&(_, size)) => assert_eq!(accepted_sizes(code), [size], "{code:?}"),
            None => {
                assert!(accepted_sizes(code).is_empty(), "{code:?}");
                let e = mp::RawArray::<u8>::with_typecode(code, 1).unwrap_err();
                assert!(
                    matches!(&e, mp::Error::Value(m) if m.starts_with(message)),
                    "{code:?}: {e}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// RawValue, RawArray, lock=False, get_obj

// CPython: _TestValue.test_rawvalue (test_value with raw=True)
#[test]
fn test_rawvalue() {
    let _s = serial();
    let i = mp::RawValue::new(25i32).unwrap();
    let d = mp::Value::<f64>::new_unlocked(3.625).unwrap();
    let c = mp::RawValue::with_typecode('c', b'x').unwrap();
    joined_ok(start(
        |(i, d, c): (mp::RawValue<i32>, mp::RawValue<f64>, mp::RawValue<u8>)| {
            assert_eq!((i.get(), d.get(), c.get()), (25, 3.625, b'x'));
            i.set(30);
            d.set(-4.25);
            c.set(b'y');
        },
        (i.clone(), d.clone(), c.clone()),
    ));
    assert_eq!((i.get(), d.get(), c.get()), (30, -4.25, b'y'));
}

// CPython: _TestArray.test_rawarray (test_array with raw=True)
#[test]
fn test_rawarray() {
    let _s = serial();
    let seq = [681i32, -1, 0, 5, 10, 11, 22];
    let a = mp::RawArray::from_slice(&seq).unwrap();
    let b = mp::Array::<i32>::new_unlocked(seq.len()).unwrap();
    assert_eq!(b.to_vec(), [0; 7]);
    joined_ok(start(
        |(a, b): (mp::RawArray<i32>, mp::RawArray<i32>)| {
            for i in 1..a.len() {
                a.set(i, a.get(i) + a.get(i - 1));
                b.set(i, 1);
            }
        },
        (a.clone(), b.clone()),
    ));
    let mut want = seq;
    for i in 1..want.len() {
        want[i] += want[i - 1];
    }
    assert_eq!(a.to_vec(), want);
    assert_eq!(b.to_vec(), [0, 1, 1, 1, 1, 1, 1]);
    assert_eq!(mp::RawArray::<u8>::new(0).unwrap().len(), 0);
}

// CPython: _TestValue.test_getobj_getlock and _TestArray.test_getobj_getlock_obj
// (a lock=False object has no get_lock: here RawValue/RawArray have none)
#[test]
fn get_obj_reaches_the_same_memory_without_the_lock() {
    let _s = serial();
    let v = mp::Value::new(5i64).unwrap();
    let raw = v.get_obj();
    raw.set(6);
    assert_eq!(v.get(), 6);
    // The raw object does not wait for the lock (that is the point).
    let g = v.lock();
    raw.set(7);
    drop(g);
    assert_eq!(v.get(), 7);
    let a = mp::Array::from_slice(&[1u16, 2, 3]).unwrap();
    let ra = a.get_obj();
    assert_eq!(ra.len(), 3);
    ra.set(2, 30);
    assert_eq!(a.to_vec(), [1, 2, 30]);
    // A raw view sent to a child is the same memory too.
    joined_ok(start(|ra: mp::RawArray<u16>| ra.set(0, 10), ra));
    assert_eq!(a.get(0), 10);
}

// ---------------------------------------------------------------------------
// _TestValue / _TestArray: get_lock, get_obj, lock=some_lock

// CPython: _TestValue.test_getobj_getlock
#[test]
fn test_getobj_getlock() {
    let _s = serial();
    // val1 = Value('i', 5): its own RLock.
    let val1 = mp::Value::new(5i32).unwrap();
    let lock1: mp::RLock = val1.get_lock();
    let obj1 = val1.get_obj();
    assert_eq!(obj1.get(), 5);
    assert!(lock1.try_acquire() && lock1.is_owned());
    lock1.release().unwrap();
    // val3 = Value('i', 5, lock=lock): get_lock() is that very lock.
    let lock = mp::Lock::new().unwrap();
    let val3 = mp::Value::with_lock(5i32, lock.clone()).unwrap();
    let lock3: mp::Lock = val3.get_lock();
    let obj3 = val3.get_obj();
    lock.acquire();
    assert!(lock3.is_locked() && !lock3.try_acquire(), "lock3 is lock");
    obj3.set(6); // the raw object ignores the lock
    lock3.release().unwrap();
    assert!(!lock.is_locked());
    assert_eq!(val3.get(), 6);
    // An RLock given works the same way.
    let r = mp::RLock::new().unwrap();
    let val4 = mp::Value::with_lock(1u8, r.clone()).unwrap();
    let _g = val4.lock();
    assert!(r.is_owned());
    // Value('i', 5, lock=False) and RawValue have neither get_lock nor
    // get_obj: here they are RawValue, which has no such methods (a compile
    // error, as CPython's AttributeError); lock='navalue' does not compile.
    let raw: mp::RawValue<i32> = mp::Value::new_unlocked(5).unwrap();
    assert_eq!(raw.get(), 5);
}

// CPython: _TestArray.test_getobj_getlock_obj
#[test]
fn test_getobj_getlock_obj() {
    let _s = serial();
    let arr1 = mp::Array::<i32>::new(10).unwrap();
    let lock1: mp::RLock = arr1.get_lock();
    let obj1 = arr1.get_obj();
    assert_eq!(obj1.len(), 10);
    assert!(lock1.try_acquire());
    lock1.release().unwrap();
    // Array('i', range(10), lock=lock)
    let lock = mp::Lock::new().unwrap();
    let items: Vec<i32> = (0..10).collect();
    let arr3 = mp::Array::synchronized(mp::RawArray::from_slice(&items).unwrap(), lock.clone());
    let lock3: mp::Lock = arr3.get_lock();
    {
        let g = arr3.lock();
        assert!(lock.is_locked() && lock3.is_locked());
        assert_eq!(g.iter().sum::<i32>(), 45);
    }
    assert!(!lock.is_locked());
    let arr5 = mp::Array::<f64, mp::RLock>::with_lock(3, mp::RLock::new().unwrap()).unwrap();
    assert_eq!(arr5.to_vec(), [0.0; 3]);
    // Array('i', range(10), lock=False) is a RawArray: no get_lock, no get_obj.
    let raw: mp::RawArray<i32> = mp::Array::new_unlocked(10).unwrap();
    assert_eq!(raw.len(), 10);
}

/// Two values given one lock, as CPython's `Value('i', 0, lock=lock)` twice.
#[derive(Serialize, Deserialize, Clone)]
struct Pair<L: mp::SharedLock> {
    #[serde(bound = "")]
    a: mp::Value<u64, L>,
    #[serde(bound = "")]
    b: mp::Value<u64, L>,
}

const ROUNDS: u64 = 500;

/// Each round takes the pair's lock through `a` or through `b` (alternately)
/// and, holding it, checks `a == b` and adds one to both through the raw
/// objects: if the two guards did not exclude each other the check or the
/// final count would fail.
fn bump_both<L: mp::SharedLock>(p: Pair<L>) {
    let (ra, rb) = (p.a.get_obj(), p.b.get_obj());
    for i in 0..ROUNDS {
        let _g = if i % 2 == 0 { p.a.lock() } else { p.b.lock() };
        let (x, y) = (ra.get(), rb.get());
        assert_eq!(x, y, "a and b seen apart under their common lock");
        ra.set(x + 1);
        rb.set(y + 1);
    }
}

/// `new_lock` runs under `serial()`, after the leak check's snapshot.
fn shared_lock_race<L: mp::SharedLock>(new_lock: fn() -> mp::Result<L>) {
    let _s = serial();
    let _leaks = LeakCheck::new();
    let lock = new_lock().unwrap();
    let pair = Pair {
        a: mp::Value::with_lock(0u64, lock.clone()).unwrap(),
        b: mp::Value::with_lock(0u64, lock).unwrap(),
    };
    let children: Vec<_> = (0..WORKERS)
        .map(|_| start(bump_both::<L>, pair.clone()))
        .collect();
    bump_both(pair.clone());
    for p in children {
        joined_ok(p);
    }
    let total = (WORKERS as u64 + 1) * ROUNDS;
    assert_eq!((pair.a.get(), pair.b.get()), (total, total));
}

// Ours: values given one Lock exclude each other across processes (the lock
// travels with each value to the children).
#[test]
fn values_sharing_a_lock_exclude_each_other_across_processes() {
    shared_lock_race(mp::Lock::new);
}

// Ours: the same with an RLock given.
#[test]
fn values_sharing_an_rlock_exclude_each_other_across_processes() {
    shared_lock_race(mp::RLock::new);
}

// Ours: a Value sent to a child carries the lock it was given: the child sees
// the parent holding it.
#[test]
fn a_given_lock_travels_with_the_value() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    let lock = mp::Lock::new().unwrap();
    let v = mp::Value::with_lock(1i64, lock.clone()).unwrap();
    let a = mp::Array::<i16, mp::Lock>::with_lock(2, lock.clone()).unwrap();
    lock.acquire();
    joined_ok(start(
        |(v, a): (mp::Value<i64, mp::Lock>, mp::Array<i16, mp::Lock>)| {
            assert!(v.get_lock().is_locked());
            assert!(!a.get_lock().try_acquire());
            assert_eq!(v.get(), 1);
        },
        (v.clone(), a.clone()),
    ));
    lock.release().unwrap();
    // And the child's guard holds the parent's lock.
    let held = mp::Event::new().unwrap();
    let go = mp::Event::new().unwrap();
    let p = start(
        |(v, held, go): (mp::Value<i64, mp::Lock>, mp::Event, mp::Event)| {
            let mut g = v.lock();
            held.set();
            go.wait();
            *g = 2;
        },
        (v.clone(), held.clone(), go.clone()),
    );
    assert!(held.wait_timeout(LONG));
    assert!(!lock.try_acquire(), "the child holds the value's lock");
    go.set();
    joined_ok(p);
    assert_eq!(v.get(), 2);
    assert!(lock.try_acquire());
    lock.release().unwrap();
}

// Ours: a value received as another lock kind than it was sent with is a
// decode error, never a value behind the wrong lock.
#[test]
fn a_value_received_with_another_lock_kind_is_refused() {
    let _s = serial();
    let (tx, rx) = mp::pipe(true).unwrap();
    let own = mp::Value::new(1i32).unwrap();
    tx.send(&own).unwrap();
    let r: mp::Result<mp::Value<i32, mp::Lock>> = rx.recv();
    assert!(matches!(&r, Err(mp::Error::Decode(_))), "{r:?}");
    let given = mp::Array::<u8, mp::Lock>::with_lock(1, mp::Lock::new().unwrap()).unwrap();
    tx.send(&given).unwrap();
    let r: mp::Result<mp::Array<u8>> = rx.recv();
    assert!(matches!(&r, Err(mp::Error::Decode(_))), "{r:?}");
    // The right kinds go through.
    tx.send(&given).unwrap();
    let back: mp::Array<u8, mp::Lock> = rx.recv().unwrap();
    back.set(0, 9);
    assert_eq!(given.get(0), 9);
}

// ---------------------------------------------------------------------------
// The in-place guard across processes

const ELEMS: usize = 1000;

fn bump_every_element(a: mp::Array<i64>) {
    for _ in 0..ROUNDS {
        let mut g = a.lock();
        g.iter_mut().for_each(|x| *x += 1);
    }
}

// Ours: processes adding one to every element under the guard, in place: the
// exact total in every element.
#[test]
fn in_place_increments_from_many_processes_are_exact() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    let a = mp::Array::<i64>::new(ELEMS).unwrap();
    let children: Vec<_> = (0..WORKERS)
        .map(|_| start(bump_every_element, a.clone()))
        .collect();
    bump_every_element(a.clone());
    for p in children {
        joined_ok(p);
    }
    let want = (WORKERS as i64 + 1) * ROUNDS as i64;
    assert_eq!(a.to_vec(), vec![want; ELEMS]);
}

// Ours: slice code in a child on the shared memory: sort, copy_from_slice,
// and a given Lock.
#[test]
fn a_child_sorts_an_array_in_place() {
    let _s = serial();
    let xs: Vec<f64> = (0..100).map(|i| ((i * 37) % 100) as f64).collect();
    let a = mp::Array::synchronized(
        mp::RawArray::from_slice(&xs).unwrap(),
        mp::Lock::new().unwrap(),
    );
    let top = mp::Array::<f64, mp::Lock>::with_lock(3, a.get_lock()).unwrap();
    joined_ok(start(
        |(a, top): (mp::Array<f64, mp::Lock>, mp::Array<f64, mp::Lock>)| {
            let mut g = a.lock();
            g.sort_by(f64::total_cmp);
            let best: Vec<f64> = g[g.len() - 3..].to_vec();
            // `top` shares `a`'s lock, which this guard holds: its raw object.
            top.get_obj().set(0, best[0]);
            top.get_obj().set(1, best[1]);
            top.get_obj().set(2, best[2]);
        },
        (a.clone(), top.clone()),
    ));
    let want: Vec<f64> = (0..100).map(f64::from).collect();
    assert_eq!(a.to_vec(), want);
    assert_eq!(top.to_vec(), [97.0, 98.0, 99.0]);
    let mut g = top.lock();
    g.copy_from_slice(&[1.0, 2.0, 3.0]);
    drop(g);
    assert_eq!(top.to_vec(), [1.0, 2.0, 3.0]);
}

// ---------------------------------------------------------------------------
// _TestSharedCTypes

/// `string.value *= 2` on a NUL-terminated byte array.
fn double_string(bytes: &[u8]) -> Vec<u8> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let mut s = bytes[..end].repeat(2);
    s.resize(bytes.len(), 0);
    s
}

fn hello(n: usize) -> Vec<u8> {
    let mut s = b"hello".to_vec();
    s.resize(n, 0);
    s
}

/// CPython's x, y, z, arr and string of test_sharedctypes (`foo`, a ctypes
/// Structure, has no equivalent).
type RawSet = (
    mp::RawValue<i32>,
    mp::RawValue<f64>,
    mp::RawValue<i64>,
    mp::RawArray<f64>,
    mp::RawArray<u8>,
);

// CPython: _TestSharedCTypes.test_sharedctypes (lock=False)
#[test]
fn test_sharedctypes() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    let set: RawSet = (
        mp::RawValue::with_typecode('i', 7).unwrap(),
        mp::RawValue::new(1.0 / 3.0).unwrap(),
        mp::RawValue::new(1i64 << 33).unwrap(),
        mp::RawArray::from_slice(&(0..10).map(f64::from).collect::<Vec<_>>()).unwrap(),
        mp::RawArray::from_slice(&hello(20)).unwrap(),
    );
    joined_ok(start(
        |(x, y, z, arr, string): RawSet| {
            x.set(x.get() * 2);
            y.set(y.get() * 2.0);
            z.set(z.get() * 2);
            for i in 0..arr.len() {
                arr.set(i, arr.get(i) * 2.0);
            }
            for (i, b) in double_string(&string.to_vec()).into_iter().enumerate() {
                string.set(i, b);
            }
        },
        set.clone(),
    ));
    let (x, y, z, arr, string) = set;
    assert_eq!(x.get(), 14);
    assert!((y.get() - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(z.get(), 1 << 34);
    assert_eq!(
        arr.to_vec(),
        (0..10).map(|i| f64::from(i * 2)).collect::<Vec<_>>()
    );
    assert_eq!(&string.to_vec()[..11], b"hellohello\0");
}

type LockedSet<L> = (
    mp::Value<i32, L>,
    mp::Value<f64, L>,
    mp::Value<i64, L>,
    mp::Array<f64, L>,
    mp::Array<u8, L>,
);

fn double_locked<L: mp::SharedLock>((x, y, z, arr, string): LockedSet<L>) {
    *x.lock() *= 2;
    *y.lock() *= 2.0;
    *z.lock() *= 2;
    arr.lock().iter_mut().for_each(|v| *v *= 2.0);
    let mut g = string.lock();
    let doubled = double_string(&g);
    g.copy_from_slice(&doubled);
}

fn check_doubled<L: mp::SharedLock>((x, y, z, arr, string): LockedSet<L>) {
    assert_eq!(x.get(), 14);
    assert!((y.get() - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(z.get(), 1 << 34);
    assert_eq!(
        arr.to_vec(),
        (0..10).map(|i| f64::from(i * 2)).collect::<Vec<_>>()
    );
    assert_eq!(&string.to_vec()[..11], b"hellohello\0");
}

// CPython: _TestSharedCTypes.test_synchronize (test_sharedctypes with
// lock=True: each object its own RLock)
#[test]
fn test_synchronize() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    let items: Vec<f64> = (0..10).map(f64::from).collect();
    let set: LockedSet<mp::RLock> = (
        mp::Value::with_typecode('i', 7).unwrap(),
        mp::Value::new(1.0 / 3.0).unwrap(),
        mp::Value::new(1i64 << 33).unwrap(),
        mp::Array::from_slice(&items).unwrap(),
        mp::Array::from_slice(&hello(20)).unwrap(),
    );
    joined_ok(start(double_locked::<mp::RLock>, set.clone()));
    check_doubled(set);
    // And with one Lock given to all of them (lock=some_lock).
    let lock = mp::Lock::new().unwrap();
    let set: LockedSet<mp::Lock> = (
        mp::Value::with_lock(7, lock.clone()).unwrap(),
        mp::Value::with_lock(1.0 / 3.0, lock.clone()).unwrap(),
        mp::Value::with_lock(1i64 << 33, lock.clone()).unwrap(),
        mp::Array::synchronized(mp::RawArray::from_slice(&items).unwrap(), lock.clone()),
        mp::Array::synchronized(mp::RawArray::from_slice(&hello(20)).unwrap(), lock.clone()),
    );
    joined_ok(start(double_locked::<mp::Lock>, set.clone()));
    check_doubled(set);
    assert!(!lock.is_locked());
}

// CPython: _TestSharedCTypes.test_copy (sharedctypes.copy(obj): a new object
// with the same contents, here made from a snapshot; _Foo becomes scalars)
#[test]
fn test_copy() {
    let _s = serial();
    let x = mp::RawValue::new(2i32).unwrap();
    let y = mp::Value::new(5.0f64).unwrap();
    let z = mp::RawArray::from_slice(&[1i64 << 33]).unwrap();
    let (bx, by, bz) = (
        mp::RawValue::new(x.get()).unwrap(),
        mp::Value::new(y.get()).unwrap(),
        mp::RawArray::from_slice(&z.to_vec()).unwrap(),
    );
    x.set(0);
    y.set(0.0);
    z.set(0, 0);
    assert_eq!(bx.get(), 2);
    assert_eq!(by.get(), 5.0);
    assert_eq!(bz.to_vec(), [1 << 33]);
}
