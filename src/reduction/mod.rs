//! Python's `multiprocessing.reduction`: how values and functions cross to another
//! process.
//!
//! * **Values** travel as postcard bytes inside a small envelope that names the
//!   value's type, so a decode as another type is an error, never garbage.
//! * **Handles** (locks, shared values, connections, queues) are file descriptors
//!   underneath. While a value is encoded for a channel that can carry fds, a
//!   handle's `Serialize` dups its fd into a side list (`serialize_fd`); the list
//!   rides with the bytes as `SCM_RIGHTS`, and `deserialize_fd` takes it back
//!   out on the other side. Outside such an encode a handle refuses to serialize
//!   (CPython's `assert_spawning`), so no fd number ever dangles in a byte stream.
//! * **Functions** are zero-sized types (non-capturing closures and `fn` items).
//!   What travels is the offset of a monomorphised trampoline from a known
//!   function of this binary (`FnRef`); the child, running the same binary
//!   (checked at start-up), adds its own address of that function back.
//!
//! | Python | Rust |
//! |---|---|
//! | `ForkingPickler.dumps` / `loads` | `encode` / `decode` (crate-internal) |
//! | `reduction.send_handle(conn, fd, pid)` / `recv_handle(conn)` | [`send_handle`]`(&conn, fd)` / [`recv_handle`]`(&conn)` (any fd); or a handle inside any sent value |
//! | `context.assert_spawning` | a handle serialized outside `encode` is an error |

//!
//! Files: `codec.rs` (values and handles' fds), `call.rs` (functions),
//! `handles.rs` (`send_handle`/`recv_handle`, which sit above `connection`:
//! the codec is below it).

mod call;
mod codec;
mod handles;

pub(crate) use call::{
    CallOutcome, ExitStatus, FnRef, PanicInfo, PreparedCall, assert_zero_sized, catch, fingerprint,
    record_panic,
};
pub(crate) use codec::{
    Encoded, Payload, append_postcard, declared_fds, decode, decode_extend, deserialize_fd, encode,
    encode_seq, fnv1a, serialize_handle, type_tag,
};
pub use handles::{recv_handle, send_handle};
