//! What every proxy of one dummy manager shares (whether the manager is
//! still running, its object count and names), and the value codec: below
//! the manager and its proxies alike.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

pub(super) fn encode<T: Serialize + ?Sized>(x: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(x).map_err(Error::encode)
}

pub(super) fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    postcard::from_bytes(b).map_err(Error::decode)
}

/// What every proxy of one manager shares: whether it is still running.
#[derive(Clone)]
pub(super) struct Alive {
    pub(super) running: Arc<AtomicBool>,
    pub(super) objects: Arc<AtomicUsize>,
    /// The names of `named`/`publish`: a clone of the proxy, type-erased.
    pub(super) names: Arc<Mutex<HashMap<String, Named>>>,
}

/// A named proxy: the proxy (a clone) and its type's name, for errors.
pub(super) struct Named {
    pub(super) proxy: Box<dyn Any + Send + Sync>,
    pub(super) type_name: &'static str,
}

impl fmt::Debug for Alive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("running", &self.running.load(Ordering::Relaxed))
            .field("objects", &self.objects.load(Ordering::Relaxed))
            .finish()
    }
}

impl Alive {
    pub(super) fn check(&self) -> Result<()> {
        if self.running.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(Error::Closed)
        }
    }
}
