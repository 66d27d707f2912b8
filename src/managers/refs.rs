//! Reference counting of manager objects across processes (CPython's
//! `Server.incref`/`decref` and `BaseProxy._incref`/`_decref`).
//!
//! # Who holds a reference
//!
//! The server counts, per object, the references held by:
//! * **sessions**: each client process opens one session per manager, on a
//!   connection of its own (the *lifeline*) that it keeps open for its whole
//!   life. The server holds the session's references in a table keyed by
//!   session; when the lifeline closes (the process exited, however it died,
//!   SIGKILL included, since the kernel closes its sockets) the session ends
//!   and every reference it held is released. The process's other (per-thread)
//!   connections attach to the session, so objects they create or read
//!   belong to it.
//! * **transit tokens**: a proxy serialized anywhere but into a manager value
//!   (a `Process` argument, a pool task, a queue item, a pipe message) takes
//!   a fresh reference under a token written into the bytes; the process that
//!   deserializes it claims the token, and the reference becomes its
//!   session's. A token never claimed is released when the sender's session
//!   ends.
//! * **stored values**: a proxy serialized into a value a manager stores (a
//!   dict value, a list item, a queue item, a namespace attribute) is listed
//!   beside the value's bytes ([`Blob`](super::protocol::Blob)); while the server keeps the value,
//!   the value holds one reference to each such object. Reading the value
//!   hands the reader's session references of its own, which the proxies
//!   decoded from it adopt.
//! * **names**: an object registered under a name lives until the manager
//!   shuts down (CPython's typeids registered with a callable).
//!
//! In a process, a proxy and its clones share one reference (an `Arc`); each
//! deserialized proxy holds one of its own. The last one dropped sends
//! `Decref` over the lifeline; the object is freed when its count reaches 0.
//!
//! This module holds the thread-local contexts that carry references through
//! serde, which knows nothing of managers. It sits below the protocol, the
//! client and the server: what it must ask of them (the server's counts, a
//! client session's `Decref`) it reaches through [`ServerRefs`] and
//! [`ClientDecref`], which they hand it.

use crate::util::Unpoison;
use std::cell::{Cell, RefCell};
use std::sync::{Arc, Mutex, OnceLock};

/// A server-side object's number.
pub(crate) type ObjId = u64;

/// The proxies inside a blob (`protocol::Blob`).
#[derive(Default)]
pub(crate) struct BlobRefs {
    /// Objects of the manager this blob was received from that the value
    /// holds proxies to; owned as `owner` says.
    pub(crate) ids: Vec<ObjId>,
    /// Proxies inside a blob encoded here: (server key, id). Only those of
    /// the manager a request goes to are sent, as `ids`.
    pub(crate) embedded: Vec<(u64, ObjId)>,
    /// Who owns the references in `ids`.
    pub(crate) owner: RefOwner,
}

/// Who owns the references a blob lists.
#[derive(Default)]
pub(crate) enum RefOwner {
    /// Nobody: the list is only information.
    #[default]
    Nobody,
    /// The blob itself, in the server process: released when it is dropped.
    Server,
    /// This client process's session with the manager the blob came from:
    /// the references no decoded proxy adopted (`pending`) are released on
    /// drop.
    Client {
        /// The manager's key.
        key: u64,
        /// The session holding the references.
        session: u64,
        /// The references not adopted yet.
        pending: Mutex<Vec<ObjId>>,
        /// How to release one of them.
        decref: ClientDecref,
    },
}

/// Drops one reference of a client session: `(manager key, id, session)`
/// (the client's `decref`, handed over with each answer it decodes).
pub(crate) type ClientDecref = fn(u64, ObjId, u64);

/// The server's reference counts, as the blobs of the server process use them.
pub(crate) trait ServerRefs: Send + Sync {
    /// One reference more to each of `ids` that is alive; those.
    fn incref_alive(&self, ids: &[ObjId]) -> Vec<ObjId>;
    /// One reference less to `id`.
    fn decref(&self, id: ObjId);
}

/// An answer being decoded: its manager, the session the server gave the
/// references in it to, and how to release them.
#[derive(Clone, Copy)]
struct Receiving {
    key: u64,
    session: u64,
    decref: ClientDecref,
}

thread_local! {
    /// While a blob is encoded: the proxies serialized into it.
    static COLLECT: RefCell<Option<Vec<(u64, ObjId)>>> = const { RefCell::new(None) };
    /// While a request is encoded: the key of the manager it goes to.
    static DEST: Cell<Option<u64>> = const { Cell::new(None) };
    /// While an answer is decoded: the manager it comes from, and the
    /// session the server gave the references in it to.
    static RECEIVING: Cell<Option<Receiving>> = const { Cell::new(None) };
    /// While a received blob is decoded: its manager's key, the session, and
    /// the references not adopted yet.
    static ADOPT: RefCell<Option<(u64, u64, Vec<ObjId>)>> = const { RefCell::new(None) };
}

/// The server of this process, in a manager's server process.
static SERVER: OnceLock<Arc<dyn ServerRefs>> = OnceLock::new();

/// Makes `server` the owner of the references that blobs received in this
/// process list (called once, in the server process).
pub(crate) fn install_server(server: Arc<dyn ServerRefs>) {
    let _ = SERVER.set(server);
}

/// Runs its closure when dropped: puts a thread-local context back even when
/// the closure it wraps panics (a `Serialize` of the user's may), so that a
/// later encoding on this thread does not run in a stale context.
struct Restore<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Drop for Restore<F> {
    fn drop(&mut self) {
        if let Some(restore) = self.0.take() {
            restore();
        }
    }
}

/// Runs `f` (an encoding) collecting the proxies serialized in it.
pub(crate) fn collecting<R>(f: impl FnOnce() -> R) -> (R, Vec<(u64, ObjId)>) {
    let saved = COLLECT.with(|c| c.borrow_mut().replace(Vec::new()));
    let _restore = Restore(Some(move || COLLECT.with(|c| *c.borrow_mut() = saved)));
    let out = f();
    let got = COLLECT.with(|c| c.borrow_mut().take());
    (out, got.unwrap_or_default())
}

/// Records a proxy serialized into a blob; false if no blob is being encoded.
pub(crate) fn record(key: u64, id: ObjId) -> bool {
    COLLECT.with(|c| match &mut *c.borrow_mut() {
        Some(v) => {
            v.push((key, id));
            true
        }
        None => false,
    })
}

/// Runs `f` (the encoding of a request to the manager with `key`).
pub(crate) fn sending<R>(key: u64, f: impl FnOnce() -> R) -> R {
    let saved = DEST.with(|d| d.replace(Some(key)));
    let _restore = Restore(Some(move || DEST.with(|d| d.set(saved))));
    f()
}

/// The references a blob lists on the wire: for a blob encoded here, its
/// proxies of the manager the request goes to; otherwise its list.
pub(crate) fn refs_to_send(refs: Option<&BlobRefs>) -> Vec<ObjId> {
    let Some(r) = refs else {
        return Vec::new();
    };
    match DEST.with(Cell::get) {
        Some(key) if !r.embedded.is_empty() => r
            .embedded
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, id)| *id)
            .collect(),
        _ => r.ids.clone(),
    }
}

/// Runs `f` (the decoding of an answer from the manager with `key`, whose
/// references the server gave to `session`; `decref` releases one).
pub(crate) fn receiving<R>(
    key: u64,
    session: u64,
    decref: ClientDecref,
    f: impl FnOnce() -> R,
) -> R {
    let saved = RECEIVING.with(|r| {
        r.replace(Some(Receiving {
            key,
            session,
            decref,
        }))
    });
    let _restore = Restore(Some(move || RECEIVING.with(|r| r.set(saved))));
    f()
}

/// Who owns the references `refs` of a blob just received: this client's
/// session (an answer), the server (a request, in the server process), or
/// nobody. Returns the list the blob keeps and its owner.
pub(crate) fn take_received(refs: Vec<ObjId>) -> (Vec<ObjId>, RefOwner) {
    if let Some(Receiving {
        key,
        session,
        decref,
    }) = RECEIVING.with(Cell::get)
    {
        return (
            Vec::new(),
            RefOwner::Client {
                key,
                session,
                pending: Mutex::new(refs),
                decref,
            },
        );
    }
    match SERVER.get() {
        // Only the objects still alive are held (the sender holds a
        // reference to each while it sends, so that is all of them).
        Some(server) => (server.incref_alive(&refs), RefOwner::Server),
        None => (refs, RefOwner::Nobody),
    }
}

/// Runs `f` (the decoding of a blob with `refs`): the proxies decoded adopt
/// the references the blob brought.
pub(crate) fn adopting<R>(refs: Option<&BlobRefs>, f: impl FnOnce() -> R) -> R {
    let Some(RefOwner::Client {
        key,
        session,
        pending,
        ..
    }) = refs.map(|r| &r.owner)
    else {
        return f();
    };
    let refs = std::mem::take(&mut *pending.lock().unpoison());
    let saved = ADOPT.with(|a| a.borrow_mut().replace((*key, *session, refs)));
    let _restore = Restore(Some(move || {
        let left = ADOPT.with(|a| std::mem::replace(&mut *a.borrow_mut(), saved));
        if let Some((_, _, left)) = left {
            *pending.lock().unpoison() = left;
        }
    }));
    f()
}

/// A proxy of `id` at the manager with `key` being decoded: the session
/// whose reference it adopts, if the blob being decoded brought one.
pub(crate) fn try_adopt(key: u64, id: ObjId) -> Option<u64> {
    ADOPT.with(|a| {
        let mut a = a.borrow_mut();
        let (k, session, refs) = a.as_mut()?;
        if *k != key {
            return None;
        }
        let at = refs.iter().position(|r| *r == id)?;
        refs.swap_remove(at);
        Some(*session)
    })
}

/// A server-held blob was copied: the copy holds references too.
pub(crate) fn server_incref(refs: &[ObjId]) {
    if let Some(server) = SERVER.get() {
        server.incref_alive(refs);
    }
}

/// A blob is dropped: releases the references it owned.
pub(crate) fn release_blob(owner: RefOwner, refs: &[ObjId]) {
    match owner {
        RefOwner::Nobody => {}
        RefOwner::Server => {
            if let Some(server) = SERVER.get() {
                for id in refs {
                    server.decref(*id);
                }
            }
        }
        RefOwner::Client {
            key,
            session,
            pending,
            decref,
        } => {
            for id in pending.into_inner().unpoison() {
                decref(key, id, session);
            }
        }
    }
}
