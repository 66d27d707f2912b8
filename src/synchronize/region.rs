//! The shared-memory region behind one handle: a small header naming what lives
//! in it, and its serialization (the memfd travels as a handle fd).
//!
//! Header (16 bytes): `magic: u32`, `kind: u32`, 8 bytes the kind may use.
//! A received region is checked (sealed memfd, magic, kind, size) before any
//! view is made of it, so a corrupt message is an error, never a wild access.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Result;
use crate::platform::shm::ShmRegion;
use crate::reduction;

/// "MPSY": the first word of every synchronization region.
const MAGIC: u32 = 0x4D50_5359;

/// Bytes of the header; kinds lay out their state after it.
pub(crate) const HEADER: usize = 16;

/// What a region holds (second header word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Kind {
    /// `Lock`: a `RawLock` at `HEADER`.
    Lock = 1,
    /// `RLock`: an `RLock` core at `HEADER`.
    RLock = 2,
    /// `Semaphore` / `BoundedSemaphore`: a `RawSemLock` at `HEADER`.
    Semaphore = 3,
    /// `Event`: state and waiter words at `HEADER`.
    Event = 4,
    /// `Condition`: an `RLock` core and the condition's counters.
    Condition = 5,
    /// `Barrier`: its mutex, condvar and counters.
    Barrier = 6,
    /// `Value<T>`: an `RLock` core and the value.
    Value = 7,
    /// `Array<T>`: an `RLock` core, the length, and the elements.
    Array = 8,
}

/// Creates a zeroed region of `len` bytes (header included) of `kind`.
///
/// # Errors
///
/// [`Error::Io`](crate::Error::Io) when the memfd or the mapping fails.
pub(crate) fn create(kind: Kind, len: usize) -> Result<Arc<ShmRegion>> {
    let region = ShmRegion::create(len.max(HEADER))?;
    region.atomic_u32(0).store(MAGIC, Ordering::Relaxed);
    region.atomic_u32(4).store(kind as u32, Ordering::Relaxed);
    Ok(Arc::new(region))
}

/// The wire form of a region handle (borrowed, for `Serialize`).
#[derive(Serialize)]
struct WireOut<'a> {
    #[serde(serialize_with = "serialize_region")]
    region: &'a ShmRegion,
    kind: u32,
}

/// The wire form of a region handle (owned, for `Deserialize`).
#[derive(Deserialize)]
struct WireIn {
    #[serde(deserialize_with = "reduction::deserialize_fd")]
    fd: OwnedFd,
    kind: u32,
}

fn serialize_region<S: Serializer>(region: &&ShmRegion, s: S) -> Result<S::Ok, S::Error> {
    reduction::serialize_handle(&region.fd(), s)
}

/// Serializes `region` (its fd travels as a handle).
pub(crate) fn serialize<S: Serializer>(region: &ShmRegion, s: S) -> Result<S::Ok, S::Error> {
    let kind = region.atomic_u32(4).load(Ordering::Relaxed);
    WireOut { region, kind }.serialize(s)
}

/// Takes back a region sent by [`serialize`], checking it holds one of `kinds`
/// and at least `min_len` bytes.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    d: D,
    kinds: &[Kind],
    min_len: usize,
) -> Result<Arc<ShmRegion>, D::Error> {
    let wire = WireIn::deserialize(d)?;
    let region = ShmRegion::from_fd(wire.fd)
        .map_err(|e| D::Error::custom(format!("not a shared-memory handle: {e}")))?;
    let ok = region.len() >= min_len.max(HEADER)
        && region.atomic_u32(0).load(Ordering::Relaxed) == MAGIC
        && region.atomic_u32(4).load(Ordering::Relaxed) == wire.kind
        && kinds.iter().any(|k| *k as u32 == wire.kind);
    if !ok {
        return Err(D::Error::custom(
            "a shared-memory handle of the wrong kind or size (corrupt message)",
        ));
    }
    Ok(Arc::new(region))
}
