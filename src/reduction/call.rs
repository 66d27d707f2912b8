//! Functions across processes: `FnRef` (a trampoline's offset from a known
//! function of this binary), the trampolines, panics caught in a child, and the
//! build fingerprint a `FnRef` is checked against.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::codec::{Encoded, Payload, decode, encode, fnv1a, map_encoded};
use crate::error::{Error, RemoteError, Result};

/// Compile-time check that a target captures nothing.
struct AssertZeroSized<F>(PhantomData<F>);

impl<F> AssertZeroSized<F> {
    const OK: () = assert!(
        std::mem::size_of::<F>() == 0,
        "a multiprocess target must not capture variables: processes share no memory. \
         Pass the data as the argument instead (use a tuple for several), and pass a \
         non-capturing closure or a fn item, not a fn pointer"
    );
}

/// Fails to compile unless `F` is zero-sized (a non-capturing closure or `fn` item).
pub(crate) const fn assert_zero_sized<F>() {
    let () = AssertZeroSized::<F>::OK;
}

/// Rebuilds a zero-sized function value.
fn conjure<F>() -> F {
    assert_zero_sized::<F>();
    // SAFETY:
    // - `F` is zero-sized (checked at compile time above): it has no bytes, so
    //   no bit pattern can be invalid, and a closure type is inhabited.
    // - a non-capturing closure or fn item has no state, so this value behaves
    //   exactly like the one the parent held.
    #[allow(unsafe_code)]
    unsafe {
        std::mem::zeroed::<F>()
    }
}

/// How a call ended, seen from inside the child.
pub(crate) enum CallOutcome {
    /// The function returned; its encoded result (empty when discarded).
    Returned(Encoded),
    /// The argument did not decode, or the result did not encode.
    Failed(Error),
    /// The function panicked.
    Panicked(PanicInfo),
}

/// A monomorphised entry point: decodes the argument, runs the function, encodes
/// (or drops) the result.
pub(crate) type Trampoline = fn(Payload) -> CallOutcome;

/// A panic caught in a child, on its way to the parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PanicInfo {
    /// The panic message.
    pub(crate) message: String,
    /// `file:line:col`.
    pub(crate) location: Option<String>,
    /// Rendered backtrace when `RUST_BACKTRACE` is set.
    pub(crate) backtrace: Option<String>,
}

impl PanicInfo {
    /// This panic, attributed to process `process` with `pid`: the one place
    /// a caught panic becomes a remote error.
    pub(crate) fn into_remote(self, process: String, pid: u32) -> RemoteError {
        RemoteError {
            process,
            pid,
            message: self.message,
            location: self.location,
            backtrace: self.backtrace,
        }
    }

    /// The parent-side error for this panic in process `process` with `pid`.
    pub(crate) fn into_error(self, process: String, pid: u32) -> Error {
        self.into_remote(process, pid).into()
    }
}

thread_local! {
    /// Location and backtrace of the last panic on this thread, recorded by the
    /// hook that `spawn` installs in children.
    static LAST_PANIC: RefCell<Option<(Option<String>, Option<String>)>> = const { RefCell::new(None) };
}

/// Records where a panic happened; called from the child's panic hook.
pub(crate) fn record_panic(location: Option<String>, backtrace: Option<String>) {
    LAST_PANIC.with(|p| *p.borrow_mut() = Some((location, backtrace)));
}

/// Runs `f` under `catch_unwind`, turning a panic into a [`PanicInfo`].
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> std::result::Result<R, PanicInfo> {
    LAST_PANIC.with(|p| *p.borrow_mut() = None);
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let message = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "Box<dyn Any>".to_string()
        };
        let (location, backtrace) = LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_default();
        PanicInfo {
            message,
            location,
            backtrace,
        }
    })
}

/// The trampoline for a pool initializer: the result is dropped.
fn call_discard<F, A, R>(payload: Payload) -> CallOutcome
where
    F: Fn(A) -> R,
    A: DeserializeOwned,
{
    let arg: A = match decode(&payload.bytes, payload.fds) {
        Ok(a) => a,
        Err(e) => return CallOutcome::Failed(e),
    };
    let f = conjure::<F>();
    match catch(move || drop(f(arg))) {
        Ok(()) => CallOutcome::Returned(Encoded::default()),
        Err(p) => CallOutcome::Panicked(p),
    }
}

/// How a `Process` target's result asked its process to exit: std's
/// [`Termination`](std::process::Termination) report, as `main`'s result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExitStatus(pub(crate) u8);

/// The trampoline for a `Process` target: its result is reported as `main`'s
/// is (`Err(e)` prints `Error: {e:?}` and gives 1, an `ExitCode` gives itself).
fn call_main<F, A, R>(payload: Payload) -> CallOutcome
where
    F: Fn(A) -> R,
    A: DeserializeOwned,
    R: std::process::Termination,
{
    let arg: A = match decode(&payload.bytes, payload.fds) {
        Ok(a) => a,
        Err(e) => return CallOutcome::Failed(e),
    };
    let f = conjure::<F>();
    match catch(move || f(arg).report()) {
        // `ExitCode` shows no number, but compares: on Unix it is one byte.
        Ok(code) => match encode(&ExitStatus(
            (0..=u8::MAX)
                .find(|n| std::process::ExitCode::from(*n) == code)
                .unwrap_or(1),
        )) {
            Ok(enc) => CallOutcome::Returned(enc),
            Err(e) => CallOutcome::Failed(e),
        },
        Err(p) => CallOutcome::Panicked(p),
    }
}

/// The trampoline for a task whose result goes back to the parent.
fn call_encode<F, A, R>(payload: Payload) -> CallOutcome
where
    F: Fn(A) -> R,
    A: DeserializeOwned,
    R: Serialize,
{
    let arg: A = match decode(&payload.bytes, payload.fds) {
        Ok(a) => a,
        Err(e) => return CallOutcome::Failed(e),
    };
    let f = conjure::<F>();
    match catch(move || f(arg)) {
        Ok(r) => match encode(&r) {
            Ok(enc) => CallOutcome::Returned(enc),
            Err(e) => CallOutcome::Failed(e),
        },
        Err(p) => CallOutcome::Panicked(p),
    }
}

/// The trampoline for a chunk of a `map`: the function over each item in order;
/// the first panic fails the whole chunk (as Python fails the chunk).
fn call_chunk<F, A, R>(payload: Payload) -> CallOutcome
where
    F: Fn(A) -> R,
    A: DeserializeOwned,
    R: Serialize,
{
    let f = conjure::<F>();
    match catch(move || map_encoded::<A, R>(payload, f)) {
        Ok(Ok(enc)) => CallOutcome::Returned(enc),
        Ok(Err(e)) => CallOutcome::Failed(e),
        Err(p) => CallOutcome::Panicked(p),
    }
}

/// A reference to a trampoline that another process of the same build can call.
///
/// `offset` is the trampoline's distance from [`anchor`]; ASLR moves the whole
/// image by one delta, so the distance is the same in every process of this
/// binary. `check` guards against a corrupt offset: it is a keyed hash of the
/// offset, and the child refuses any pair that does not match before it jumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FnRef {
    /// Trampoline address minus `anchor`'s.
    offset: i64,
    /// `fnv1a(build fingerprint ++ offset)`.
    check: u64,
}

/// The known function all offsets are taken from.
#[inline(never)]
pub(crate) fn anchor() -> usize {
    anchor as fn() -> usize as usize
}

/// The build fingerprint of this process: identity of the executable image and
/// the layout of this crate's code in it.
pub(crate) fn fingerprint() -> u64 {
    static FP: OnceLock<u64> = OnceLock::new();
    *FP.get_or_init(|| {
        use std::os::unix::fs::MetadataExt;
        let mut key = Vec::with_capacity(48);
        if let Ok(m) = std::fs::metadata("/proc/self/exe") {
            for v in [
                m.dev(),
                m.ino(),
                m.size(),
                m.mtime() as u64,
                m.mtime_nsec() as u64,
            ] {
                key.extend_from_slice(&v.to_le_bytes());
            }
        }
        let layout = (fingerprint as fn() -> u64 as usize).wrapping_sub(anchor());
        key.extend_from_slice(&layout.to_le_bytes());
        fnv1a(&key)
    })
}

impl FnRef {
    fn from_trampoline(t: Trampoline) -> Self {
        let offset = (t as usize as i64).wrapping_sub(anchor() as i64);
        FnRef {
            offset,
            check: Self::checksum(offset),
        }
    }

    fn checksum(offset: i64) -> u64 {
        // On the stack: checked for every task a worker runs.
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&fingerprint().to_le_bytes());
        key[8..].copy_from_slice(&offset.to_le_bytes());
        fnv1a(&key)
    }

    /// Refers to the trampoline that runs `F` and drops its result.
    pub(crate) fn discard<F, A, R>(_f: F) -> Self
    where
        F: Fn(A) -> R,
        A: DeserializeOwned,
    {
        assert_zero_sized::<F>();
        Self::from_trampoline(call_discard::<F, A, R>)
    }

    /// Refers to the trampoline that runs `F` as a process's `main`.
    pub(crate) fn main<F, A, R>(_f: F) -> Self
    where
        F: Fn(A) -> R,
        A: DeserializeOwned,
        R: std::process::Termination,
    {
        assert_zero_sized::<F>();
        Self::from_trampoline(call_main::<F, A, R>)
    }

    /// Refers to the trampoline that runs `F` and encodes its result.
    pub(crate) fn returning<F, A, R>(_f: F) -> Self
    where
        F: Fn(A) -> R,
        A: DeserializeOwned,
        R: Serialize,
    {
        assert_zero_sized::<F>();
        Self::from_trampoline(call_encode::<F, A, R>)
    }

    /// Refers to the trampoline that maps `F` over a chunk of items.
    pub(crate) fn chunk<F, A, R>(_f: F) -> Self
    where
        F: Fn(A) -> R,
        A: DeserializeOwned,
        R: Serialize,
    {
        assert_zero_sized::<F>();
        Self::from_trampoline(call_chunk::<F, A, R>)
    }

    /// Refers to a crate-internal entry point (a pool worker loop, a manager server).
    pub(crate) fn internal(t: Trampoline) -> Self {
        Self::from_trampoline(t)
    }

    /// Calls the trampoline in this process.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] if the reference fails its check (a corrupt message or
    /// another build): nothing is called then.
    pub(crate) fn call(&self, payload: Payload) -> Result<CallOutcome> {
        if self.check != Self::checksum(self.offset) {
            return Err(Error::decode(
                "a function reference failed its integrity check",
            ));
        }
        let addr = (anchor() as i64).wrapping_add(self.offset) as usize;
        // SAFETY:
        // - `check` matched, so this offset was made by `from_trampoline` in a
        //   process whose build fingerprint equals ours: the same binary image.
        // - in the same image every function keeps its distance from `anchor`
        //   (ASLR shifts the image as a whole), so `addr` is the address of that
        //   very `Trampoline` in this process.
        #[allow(unsafe_code)]
        let trampoline = unsafe { std::mem::transmute::<usize, Trampoline>(addr) };
        Ok(trampoline(payload))
    }
}

/// A value paired with its type, for call sites that carry a `FnRef` and an
/// encoded argument together.
#[derive(Debug)]
pub(crate) struct PreparedCall {
    /// What to run.
    pub(crate) target: FnRef,
    /// Its encoded argument, or the error encoding it gave.
    pub(crate) payload: Result<Encoded>,
}

impl PreparedCall {
    /// Prepares `F(arg)` run as a process's `main` (see [`FnRef::main`]);
    /// encoding happens now, so the caller keeps no copy of `arg`.
    pub(crate) fn main<F, A, R>(f: F, arg: A) -> Self
    where
        F: Fn(A) -> R,
        A: Serialize + DeserializeOwned,
        R: std::process::Termination,
    {
        PreparedCall {
            target: FnRef::main(f),
            payload: encode(&arg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fn_refs_call_back_into_this_binary() {
        let r = FnRef::returning(|(a, b): (i32, i32)| a * b);
        let out = r.call(encode(&(6, 7)).unwrap()).unwrap();
        let CallOutcome::Returned(enc) = out else {
            panic!("expected a result")
        };
        assert_eq!(decode::<i32>(&enc.bytes, Vec::new()).unwrap(), 42);
    }

    #[test]
    fn corrupt_fn_refs_are_refused() {
        let mut r = FnRef::discard(|_: ()| ());
        r.offset += 16;
        assert!(matches!(
            r.call(encode(&()).unwrap()),
            Err(Error::Decode(_))
        ));
    }

    #[test]
    fn panics_are_caught_with_their_message() {
        let r = FnRef::returning(|x: u8| if x > 1 { panic!("too big: {x}") } else { x });
        match r.call(encode(&5u8).unwrap()).unwrap() {
            CallOutcome::Panicked(p) => assert_eq!(p.message, "too big: 5"),
            _ => panic!("expected a panic"),
        }
    }
}
