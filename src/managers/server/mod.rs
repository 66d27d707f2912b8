//! The manager's server: the objects, and one thread per client connection.
//!
//! CPython's `managers.Server`: `id_to_obj`, `serve_client` (a thread per
//! connection), `handle_request`. Every method is one atomic operation under the
//! object's own mutex. A blocking method (lock acquire, queue get, event wait,
//! condition wait, barrier wait, queue join) blocks only the thread serving that
//! client, waking every [`PEER_CHECK`](serving::PEER_CHECK) to see whether the client is still there.
//!
//! # A client that goes away
//!
//! A connection ends (end of file) when its client thread or process ends,
//! however it dies. Then:
//! * an `RLock` or a `Condition`'s lock it held is released (only its owner
//!   could release it, so nobody else ever could);
//! * a blocked call it was waiting in is abandoned without taking anything: no
//!   lock is taken, no item is removed, no semaphore count is used;
//! * a call that completed but whose answer could not be delivered is undone
//!   (a taken `Lock`/semaphore is released, a got item goes back to the front);
//! * a `Barrier` it was waiting at is broken (the others get
//!   `Error::BrokenBarrier` instead of waiting for a party that will never come);
//! * a `Lock` it acquired and *returned from* stays locked: a `Lock` has no owner
//!   and may be released by another process (CPython's `test_lock` releases in
//!   the parent a lock taken by a child that has exited), as in Python.

use crate::util::Unpoison;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::reduction::{self, CallOutcome, Encoded};

mod objects;
mod pool;
mod serving;

use super::channel::Channel;
use super::custom;
use super::protocol::{Blob, Kind, ObjId, Op, Reply, Request, Response, Spec, WireError};
use super::refs::ServerRefs;
use serving::Client;

use objects::{
    BarrierState, Dict, LockObj, LockState, Object, QueueState, SemObj, barrier_op, dict_op,
    event_op, list_op, lock_op, namespace_op, queue_op, sem_op, wrong_kind,
};

/// A registered object: the proxy type's tag and name, and the object.
struct Entry {
    /// `type_tag` of the proxy type that created it.
    tag: u64,
    /// That type's name.
    type_name: String,
    /// The object.
    object: Arc<Object>,
}

/// What to undo when an answer could not be delivered.
enum Undo {
    /// Nothing.
    None,
    /// Release the lock or semaphore just taken.
    Release(Arc<Object>),
    /// Put the item just got back at the front.
    Requeue(Arc<Object>),
}

/// Who references which object (see `refs.rs`). Lock order: this, then
/// `objects`; an object is dropped only after both are released (dropping
/// it drops its values, which release their own references).
#[derive(Default)]
struct RefState {
    /// Id → references (from every holder); an object is alive while listed.
    counts: HashMap<ObjId, u64>,
    /// Session → (id → references it holds).
    sessions: HashMap<u64, HashMap<ObjId, u64>>,
    /// Token → (session that sent it, id): references in transit.
    transit: HashMap<u64, (u64, ObjId)>,
    /// The last session number given.
    last_session: u64,
    /// The last token given.
    last_token: u64,
}

/// The session of one connection.
#[derive(Default)]
pub(crate) struct ConnRefs {
    /// The session its references go to.
    session: Option<u64>,
    /// The session it is the lifeline of (ended when it closes).
    owned: Option<u64>,
}

impl ConnRefs {
    /// The connection's session; a connection that attached to none (a raw
    /// client) gets one of its own, ended with it.
    fn session(&mut self, server: &Server) -> u64 {
        if let Some(s) = self.session {
            return s;
        }
        let s = server.open_session();
        self.session = Some(s);
        self.owned = Some(s);
        s
    }
}

/// The server: every object, by id and by name.
pub(crate) struct Server {
    /// Who references what.
    refs: Mutex<RefState>,
    /// Id → object.
    objects: Mutex<HashMap<ObjId, Entry>>,
    /// Name → id.
    names: Mutex<HashMap<String, ObjId>>,
    /// The next object id.
    next_id: AtomicU64,
    /// The next connection id.
    next_client: AtomicU64,
    /// This process's name, for `Error::Remote`.
    process: String,
}

type Handled = (Response, Undo);

/// The error for an object that no longer exists.
fn freed(id: ObjId) -> WireError {
    WireError::Value(format!(
        "the manager's object #{id} was freed: no proxy to it was left (keep a proxy \
         to an object while it is in use, in some process)"
    ))
}

/// Calls `f` with every object id the values of an answer hold a reference
/// to (the references `hand_over` gives the session).
fn each_answer_ref(response: &Response, mut f: impl FnMut(ObjId)) {
    let Ok(reply) = response else {
        return;
    };
    let mut blob = |b: &Blob| b.ids().iter().for_each(|id| f(*id));
    match reply {
        Reply::Value(b) | Reply::Maybe(Some(b)) => blob(b),
        Reply::Values(bs) => bs.iter().for_each(&mut blob),
        Reply::Pairs(ps) => ps.iter().for_each(|(k, v)| {
            blob(k);
            blob(v);
        }),
        Reply::MaybePair(Some((k, v))) => {
            blob(k);
            blob(v);
        }
        _ => {}
    }
}

/// Where this server's session numbers start: random, so that a proxy of an
/// earlier server at the same address (same manager key) never names a
/// session of this one, and its drop sends this server no decref.
fn first_session() -> u64 {
    let mut bytes = [0u8; 8];
    // Without randomness, a time-based start still differs between servers.
    if crate::platform::spawn::random_bytes(&mut bytes).is_err() {
        bytes = crate::platform::fd::monotonic_ns().to_le_bytes();
    }
    // Below 2^62, so counting up never wraps; never 0.
    (u64::from_le_bytes(bytes) >> 2).max(1)
}

impl Server {
    /// An empty server.
    pub(crate) fn new() -> Arc<Server> {
        Arc::new(Server {
            refs: Mutex::new(RefState {
                last_session: first_session(),
                ..RefState::default()
            }),
            objects: Mutex::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            next_client: AtomicU64::new(1),
            process: crate::spawn::current_name().to_string(),
        })
    }

    /// Serves one client connection until it ends, then releases what the
    /// client held. Returns true if the client asked the server to shut down
    /// (the answer has been sent).
    pub(crate) fn serve_connection(&self, conn: &Channel) -> bool {
        let client = Client {
            id: self.next_client.fetch_add(1, Ordering::Relaxed),
            conn: Some(conn),
        };
        let mut held: HashSet<ObjId> = HashSet::new();
        let mut refs = ConnRefs::default();
        let mut shutdown = false;
        while let Ok(request) = conn.recv(true, |frame| postcard::from_bytes::<Request>(frame)) {
            // A call's answer gives the session references (`hand_over`).
            let hands_over = matches!(
                &request,
                Ok(Request::Call(_, op))
                    if !matches!(op, Op::PoolApplyAsync(..) | Op::PoolMapAsync(..))
            );
            let (response, undo) = match request {
                Ok(Request::Shutdown) => {
                    shutdown = true;
                    (Ok(Reply::Unit), Undo::None)
                }
                Ok(req) => self.handle(req, &client, &mut held, &mut refs),
                Err(e) => (
                    Err(WireError::Decode(format!("corrupt manager request: {e}"))),
                    Undo::None,
                ),
            };
            let sent = match postcard::to_stdvec(&response) {
                Ok(bytes) => conn.send(&bytes).is_ok(),
                Err(_) => false,
            };
            if !sent {
                self.undo(undo, &response, &client);
                if let (true, Some(session)) = (hands_over, refs.session) {
                    self.take_back_answer(session, &response);
                }
                break;
            }
            if shutdown {
                break;
            }
        }
        self.client_gone(&client, held);
        if let Some(s) = refs.owned {
            self.end_session(s);
        }
        shutdown
    }

    /// Serves one request in-process (unit tests).
    #[cfg(test)]
    pub(crate) fn handle_local(&self, client_id: u64, req: Request) -> Response {
        let client = Client {
            id: client_id,
            conn: None,
        };
        self.handle(req, &client, &mut HashSet::new(), &mut ConnRefs::default())
            .0
    }

    // --- references (see `refs.rs`)

    /// Opens a session; its number.
    fn open_session(&self) -> u64 {
        let mut r = self.refs.lock().unpoison();
        r.last_session += 1;
        let s = r.last_session;
        r.sessions.insert(s, HashMap::new());
        s
    }

    /// Ends a session: releases its references and its unclaimed transit
    /// references.
    fn end_session(&self, s: u64) {
        let mut dead = Vec::new();
        {
            let mut r = self.refs.lock().unpoison();
            let mut ids: Vec<ObjId> = Vec::new();
            if let Some(held) = r.sessions.remove(&s) {
                for (id, n) in held {
                    ids.extend(std::iter::repeat_n(id, n as usize));
                }
            }
            let tokens: Vec<u64> = r
                .transit
                .iter()
                .filter(|(_, (from, _))| *from == s)
                .map(|(t, _)| *t)
                .collect();
            for t in tokens {
                if let Some((_, id)) = r.transit.remove(&t) {
                    ids.push(id);
                }
            }
            for id in ids {
                self.decref_locked(&mut r, id, &mut dead);
            }
        }
        drop(dead);
    }

    /// One reference less to `id`, with the refs lock held; a freed object
    /// goes to `dead`, to be dropped once the locks are released.
    fn decref_locked(&self, r: &mut RefState, id: ObjId, dead: &mut Vec<Entry>) {
        let Some(n) = r.counts.get_mut(&id) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            r.counts.remove(&id);
            if let Some(e) = self.objects.lock().unpoison().remove(&id) {
                dead.push(e);
            }
        }
    }

    /// One reference less to `id` (a stored value that held a proxy to it
    /// was dropped); frees the object at zero.
    pub(crate) fn decref(&self, id: ObjId) {
        let mut dead = Vec::new();
        self.decref_locked(&mut self.refs.lock().unpoison(), id, &mut dead);
        drop(dead);
    }

    /// One reference more to each of `ids` that is alive; those.
    pub(crate) fn incref_alive(&self, ids: &[ObjId]) -> Vec<ObjId> {
        let mut r = self.refs.lock().unpoison();
        ids.iter()
            .copied()
            .filter(|id| match r.counts.get_mut(id) {
                Some(n) => {
                    *n += 1;
                    true
                }
                None => false,
            })
            .collect()
    }

    /// Gives session `s` a reference to `id` (a new object: `fresh`, counted
    /// from 0).
    fn give(&self, s: u64, id: ObjId, fresh: bool) -> Result<(), WireError> {
        let mut dead = Vec::new();
        let out = {
            let mut r = self.refs.lock().unpoison();
            if fresh {
                r.counts.insert(id, 0);
            }
            if !r.sessions.contains_key(&s) {
                // The client's process is gone: nobody will use it.
                if fresh {
                    r.counts.remove(&id);
                    if let Some(e) = self.objects.lock().unpoison().remove(&id) {
                        dead.push(e);
                    }
                }
                Err(WireError::Closed)
            } else {
                match r.counts.get_mut(&id) {
                    Some(n) => {
                        *n += 1;
                        *r.sessions
                            .get_mut(&s)
                            .expect("checked above")
                            .entry(id)
                            .or_insert(0) += 1;
                        Ok(())
                    }
                    None => Err(freed(id)),
                }
            }
        };
        drop(dead);
        out
    }

    /// Session `s` drops a reference to `id`.
    fn take_back(&self, s: u64, id: ObjId) -> Result<(), WireError> {
        let mut dead = Vec::new();
        let out = {
            let mut r = self.refs.lock().unpoison();
            let held = r.sessions.get_mut(&s).and_then(|m| {
                let n = m.get_mut(&id)?;
                *n -= 1;
                if *n == 0 {
                    m.remove(&id);
                }
                Some(())
            });
            match held {
                Some(()) => {
                    self.decref_locked(&mut r, id, &mut dead);
                    Ok(())
                }
                None => Err(WireError::Value(format!(
                    "this process holds no reference to the manager's object #{id}"
                ))),
            }
        };
        drop(dead);
        out
    }

    /// A transit reference to `id` from session `s`: its token.
    fn transit(&self, s: u64, id: ObjId) -> Result<u64, WireError> {
        let mut r = self.refs.lock().unpoison();
        match r.counts.get_mut(&id) {
            Some(n) => *n += 1,
            None => return Err(freed(id)),
        }
        r.last_token += 1;
        let token = r.last_token;
        r.transit.insert(token, (s, id));
        Ok(token)
    }

    /// Session `s` claims transit token `token` for `id`, or (claimed
    /// already: the same bytes decoded twice) takes a new reference.
    fn claim(&self, s: u64, token: u64, id: ObjId) -> Result<(), WireError> {
        {
            let mut r = self.refs.lock().unpoison();
            if r.sessions.contains_key(&s) && r.transit.get(&token).is_some_and(|t| t.1 == id) {
                r.transit.remove(&token);
                *r.sessions
                    .get_mut(&s)
                    .expect("checked above")
                    .entry(id)
                    .or_insert(0) += 1;
                return Ok(());
            }
        }
        self.give(s, id, false)
    }

    /// Gives session `s` the references the values of an answer hold
    /// (dropping the answer then releases the values' own).
    fn hand_over(&self, s: u64, response: &Response) {
        // Alive: the blob holds each.
        each_answer_ref(response, |id| {
            let _ = self.give(s, id, false);
        });
    }

    /// Takes back what [`hand_over`](Self::hand_over) gave for an answer
    /// that never reached the client.
    fn take_back_answer(&self, s: u64, response: &Response) {
        each_answer_ref(response, |id| {
            let _ = self.take_back(s, id);
        });
    }

    /// Releases the RLocks and Conditions a departed client held.
    fn client_gone(&self, client: &Client<'_>, held: HashSet<ObjId>) {
        for id in held {
            let Some(obj) = self.object(id).ok() else {
                continue;
            };
            if let Object::Lock(l) = &*obj {
                let mut st = l.state.lock().unpoison();
                if st.owner == Some(client.id) {
                    st.owner = None;
                    st.count = 0;
                    l.cv.notify_all();
                }
            }
        }
    }

    /// Undoes a completed call whose answer was lost.
    fn undo(&self, undo: Undo, response: &Response, client: &Client<'_>) {
        match undo {
            Undo::None => {}
            Undo::Release(obj) => match &*obj {
                Object::Lock(l) => {
                    let mut st = l.state.lock().unpoison();
                    if st.owner == Some(client.id) || !l.recursive {
                        st.count = st.count.saturating_sub(1);
                        if st.count == 0 {
                            st.owner = None;
                        }
                        l.cv.notify_all();
                    }
                }
                Object::Semaphore(s) => {
                    *s.value.lock().unpoison() += 1;
                    s.cv.notify_all();
                }
                _ => {}
            },
            Undo::Requeue(obj) => {
                if let (Object::Queue { state, cv, .. }, Ok(Reply::Value(item))) = (&*obj, response)
                {
                    state.lock().unpoison().items.push_front(item.clone());
                    cv.notify_all();
                }
            }
        }
    }

    fn object(&self, id: ObjId) -> Result<Arc<Object>, WireError> {
        if id != 0 && id < self.next_id.load(Ordering::Relaxed) {
            return self
                .objects
                .lock()
                .unpoison()
                .get(&id)
                .map(|e| e.object.clone())
                .ok_or_else(|| freed(id));
        }
        self.objects
            .lock()
            .unpoison()
            .get(&id)
            .map(|e| e.object.clone())
            .ok_or_else(|| {
                WireError::Value(format!(
                    "the manager has no object #{id}; the proxy belongs to another manager"
                ))
            })
    }

    fn create(&self, spec: Spec) -> Result<ObjId, WireError> {
        let object = match spec.kind {
            Kind::Namespace => Object::Namespace(Mutex::new(HashMap::new())),
            Kind::Dict(items) => {
                let mut d = Dict::default();
                for (k, v) in items {
                    d.insert(k, v);
                }
                Object::Dict(Mutex::new(d))
            }
            Kind::List(items) => Object::List {
                items: Mutex::new(items),
                fixed: false,
            },
            Kind::Array(items) => Object::List {
                items: Mutex::new(items),
                fixed: true,
            },
            Kind::Value(v) => Object::Value(Mutex::new(v)),
            Kind::Lock | Kind::RLock | Kind::Condition => Object::Lock(LockObj {
                recursive: !matches!(spec.kind, Kind::Lock),
                state: Mutex::new(LockState::default()),
                cv: Condvar::new(),
            }),
            Kind::Semaphore(n) => Object::Semaphore(SemObj {
                value: Mutex::new(n),
                max: None,
                cv: Condvar::new(),
            }),
            Kind::BoundedSemaphore(n) => Object::Semaphore(SemObj {
                value: Mutex::new(n),
                max: Some(n),
                cv: Condvar::new(),
            }),
            Kind::Event => Object::Event(Mutex::new(false), Condvar::new()),
            Kind::Barrier(parties) => {
                if parties == 0 {
                    return Err(WireError::Value(
                        "a Barrier needs at least one party".into(),
                    ));
                }
                Object::Barrier(
                    Mutex::new(BarrierState {
                        parties,
                        count: 0,
                        generation: 0,
                        epoch: 0,
                        broken: false,
                    }),
                    Condvar::new(),
                )
            }
            Kind::Queue { maxsize, joinable } => Object::Queue {
                state: Mutex::new(QueueState {
                    items: VecDeque::new(),
                    maxsize,
                    unfinished: 0,
                }),
                cv: Condvar::new(),
                joinable,
            },
            Kind::Pool(processes) => Object::Pool(pool::new_pool(processes)?),
            Kind::Custom { ctor, mut init } => {
                let outcome = ctor.call(Encoded {
                    bytes: std::mem::take(&mut init.bytes),
                    fds: Vec::new(),
                });
                match outcome {
                    Ok(CallOutcome::Returned(_)) => match custom::take_constructed() {
                        Some(obj) => Object::Custom(Mutex::new(obj)),
                        None => {
                            return Err(WireError::Value("the constructor made no object".into()));
                        }
                    },
                    Ok(CallOutcome::Panicked(p)) => return Err(self.remote(p)),
                    Ok(CallOutcome::Failed(e)) | Err(e) => {
                        return Err(WireError::Decode(e.to_string()));
                    }
                }
            }
        };
        Ok(self.insert(object, spec.tag, spec.type_name))
    }

    /// Registers a new object; its id.
    fn insert(&self, object: Object, tag: u64, type_name: String) -> ObjId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            tag,
            type_name,
            object: Arc::new(object),
        };
        self.objects.lock().unpoison().insert(id, entry);
        id
    }

    /// A pool's `apply_async`/`map_async`: the result is an object of its
    /// own, referenced by the caller's session.
    fn submit(&self, obj: &Object, op: Op, s: u64) -> Response {
        let Object::Pool(p) = obj else {
            return Err(wrong_kind(obj, &op));
        };
        let result = pool::submit(p, op)?;
        let id = self.insert(Object::PoolResult(result), 0, "pool result".into());
        self.give(s, id, true).map(|()| Reply::Id(id))
    }

    fn remote(&self, p: reduction::PanicInfo) -> WireError {
        WireError::Remote(p.into_remote(self.process.clone(), std::process::id()))
    }

    fn lookup(&self, name: &str, tag: u64, type_name: &str) -> Result<ObjId, WireError> {
        let id = self
            .names
            .lock()
            .unpoison()
            .get(name)
            .copied()
            .ok_or_else(|| WireError::Key(format!("no shared object is registered as {name:?}")))?;
        let objects = self.objects.lock().unpoison();
        let entry = objects
            .get(&id)
            .ok_or_else(|| WireError::Key(name.to_string()))?;
        if entry.tag != tag {
            return Err(WireError::Value(format!(
                "the shared object {name:?} is a {}, not a {type_name}",
                entry.type_name
            )));
        }
        Ok(id)
    }

    fn handle(
        &self,
        req: Request,
        client: &Client<'_>,
        held: &mut HashSet<ObjId>,
        refs: &mut ConnRefs,
    ) -> Handled {
        let result = match req {
            Request::Create(spec) => {
                let s = refs.session(self);
                self.create(spec)
                    .and_then(|id| self.give(s, id, true).map(|()| Reply::Id(id)))
            }
            Request::CreateNamed(name, spec) => {
                let s = refs.session(self);
                // One lock over lookup-or-create, so two processes asking for the
                // same name get the same object.
                let mut names = self.names.lock().unpoison();
                let found = match names.get(&name).copied() {
                    Some(_) => {
                        drop(names);
                        self.lookup(&name, spec.tag, &spec.type_name)
                            .map(|id| (id, false))
                    }
                    None => self.create(spec).map(|id| {
                        // The name holds one reference, for the server's life.
                        self.refs.lock().unpoison().counts.insert(id, 1);
                        names.insert(name, id);
                        (id, true)
                    }),
                };
                found.and_then(|(id, _)| self.give(s, id, false).map(|()| Reply::Id(id)))
            }
            Request::Publish { name, id } => self.publish(name, id),
            Request::Lookup {
                name,
                tag,
                type_name,
            } => {
                let s = refs.session(self);
                self.lookup(&name, tag, &type_name)
                    .and_then(|id| self.give(s, id, false).map(|()| Reply::Id(id)))
            }
            Request::NumberOfObjects => {
                Ok(Reply::Count(self.objects.lock().unpoison().len() as u64))
            }
            Request::Shutdown => Ok(Reply::Unit),
            Request::OpenSession => {
                if let Some(old) = refs.owned.take() {
                    self.end_session(old);
                }
                let s = self.open_session();
                refs.session = Some(s);
                refs.owned = Some(s);
                Ok(Reply::Id(s))
            }
            Request::Attach(s) => {
                if self.refs.lock().unpoison().sessions.contains_key(&s) {
                    refs.session = Some(s);
                    Ok(Reply::Unit)
                } else {
                    Err(WireError::Closed)
                }
            }
            Request::Incref(id) => {
                let s = refs.session(self);
                self.give(s, id, false).map(|()| Reply::Unit)
            }
            Request::Decref(id) => {
                let s = refs.session(self);
                self.take_back(s, id).map(|()| Reply::Unit)
            }
            Request::Transit(id) => {
                let s = refs.session(self);
                self.transit(s, id).map(Reply::Id)
            }
            Request::Claim { token, id } => {
                let s = refs.session(self);
                self.claim(s, token, id).map(|()| Reply::Unit)
            }
            Request::Call(id, op @ (Op::PoolApplyAsync(..) | Op::PoolMapAsync(..))) => {
                let s = refs.session(self);
                self.object(id).and_then(|obj| self.submit(&obj, op, s))
            }
            Request::Call(id, op) => {
                let obj = match self.object(id) {
                    Ok(o) => o,
                    Err(e) => return (Err(e), Undo::None),
                };
                let handled = self.call(id, obj, op, client, held);
                let s = refs.session(self);
                self.hand_over(s, &handled.0);
                return handled;
            }
        };
        (result, Undo::None)
    }

    /// Registers `id` as `name`: the name holds a reference to it, and drops
    /// the one it held to the object registered before.
    fn publish(&self, name: String, id: ObjId) -> Response {
        if self.incref_alive(&[id]).is_empty() {
            return Err(freed(id));
        }
        let old = self.names.lock().unpoison().insert(name, id);
        if let Some(old) = old {
            self.decref(old);
        }
        Ok(Reply::Unit)
    }

    fn call(
        &self,
        id: ObjId,
        obj: Arc<Object>,
        op: Op,
        client: &Client<'_>,
        held: &mut HashSet<ObjId>,
    ) -> Handled {
        let result = match (&*obj, op) {
            (Object::Namespace(ns), op) => namespace_op(ns, op),
            (Object::Dict(d), op) => dict_op(d, op),
            (Object::List { items, fixed }, op) => list_op(items, *fixed, op),
            (Object::Value(v), Op::ValueGet) => Ok(Reply::Value(v.lock().unpoison().clone())),
            (Object::Value(v), Op::ValueSet(x)) => {
                *v.lock().unpoison() = x;
                Ok(Reply::Unit)
            }
            (Object::Lock(l), op) => {
                let r = lock_op(l, op, client);
                if let Ok(Reply::Bool(true)) = r {
                    if l.recursive {
                        held.insert(id);
                    }
                    return (r, Undo::Release(obj.clone()));
                }
                r
            }
            (Object::Semaphore(s), op) => {
                let r = sem_op(s, op, client);
                if let Ok(Reply::Bool(true)) = r {
                    return (r, Undo::Release(obj.clone()));
                }
                r
            }
            (Object::Event(flag, cv), op) => event_op(flag, cv, op, client),
            (Object::Barrier(st, cv), op) => barrier_op(st, cv, op, client),
            (
                Object::Queue {
                    state,
                    cv,
                    joinable,
                },
                op,
            ) => {
                let is_get = matches!(op, Op::QueueGet(_));
                let r = queue_op(state, cv, *joinable, op, client);
                if is_get && r.is_ok() {
                    return (r, Undo::Requeue(obj.clone()));
                }
                r
            }
            (Object::Pool(p), op) => pool::pool_op(p, op, client),
            (Object::PoolResult(r), op) => pool::result_op(r, op, client),
            (Object::Custom(o), Op::Custom(call)) => {
                let mut o = o.lock().unpoison();
                match reduction::catch(|| o.dispatch(&call)) {
                    Ok(Ok(bytes)) => Ok(Reply::Value(bytes)),
                    Ok(Err(e)) => Err(WireError::Decode(e.to_string())),
                    Err(p) => Err(self.remote(p)),
                }
            }
            (obj, op) => Err(wrong_kind(obj, &op)),
        };
        (result, Undo::None)
    }
}

/// The blobs of the server process hold their references through this.
impl ServerRefs for Server {
    fn incref_alive(&self, ids: &[ObjId]) -> Vec<ObjId> {
        Server::incref_alive(self, ids)
    }

    fn decref(&self, id: ObjId) {
        Server::decref(self, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::managers::protocol::{Blob, Wait};
    use std::time::{Duration, Instant};

    fn spec(kind: Kind) -> Request {
        Request::Create(Spec {
            kind,
            tag: 1,
            type_name: "test".into(),
        })
    }

    fn create(s: &Server, kind: Kind) -> ObjId {
        match s.handle_local(1, spec(kind)) {
            Ok(Reply::Id(id)) => id,
            other => panic!("{other:?}"),
        }
    }

    fn call(s: &Server, client: u64, id: ObjId, op: Op) -> Response {
        s.handle_local(client, Request::Call(id, op))
    }

    fn blob<T: serde::Serialize>(v: T) -> Blob {
        Blob::encode(&v).unwrap()
    }

    #[test]
    fn namespace_checks_the_type_tag() {
        let s = Server::new();
        let ns = create(&s, Kind::Namespace);
        let tag = crate::reduction::type_tag::<u32>();
        assert!(matches!(
            call(&s, 1, ns, Op::NsGet("x".into(), tag, "u32".into())),
            Err(WireError::Key(_))
        ));
        call(&s, 1, ns, Op::NsSet("x".into(), "u32".into(), blob(5u32))).unwrap();
        match call(&s, 1, ns, Op::NsGet("x".into(), tag, "u32".into())) {
            Ok(Reply::Value(b)) => assert_eq!(b.decode::<u32>().unwrap(), 5),
            other => panic!("{other:?}"),
        }
        let other = crate::reduction::type_tag::<i64>();
        match call(&s, 1, ns, Op::NsGet("x".into(), other, "i64".into())) {
            Err(WireError::Value(m)) => assert!(m.contains("holds a u32, not a i64"), "{m}"),
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn an_op_of_another_kind_is_refused() {
        let s = Server::new();
        let d = create(&s, Kind::Dict(Vec::new()));
        assert!(matches!(
            call(&s, 1, d, Op::ListLen),
            Err(WireError::Value(_))
        ));
        assert!(matches!(
            call(&s, 1, 999, Op::ListLen),
            Err(WireError::Value(_))
        ));
        let a = create(&s, Kind::Array(vec![blob(1u8)]));
        assert!(matches!(
            call(&s, 1, a, Op::ListPush(blob(2u8))),
            Err(WireError::Value(_))
        ));
    }

    #[test]
    fn rlock_ownership_is_per_client() {
        let s = Server::new();
        let r = create(&s, Kind::RLock);
        assert!(matches!(
            call(&s, 1, r, Op::Acquire(Wait::No)),
            Ok(Reply::Bool(true))
        ));
        assert!(matches!(
            call(&s, 1, r, Op::Acquire(Wait::No)),
            Ok(Reply::Bool(true))
        ));
        assert!(matches!(
            call(&s, 2, r, Op::Acquire(Wait::No)),
            Ok(Reply::Bool(false))
        ));
        assert!(matches!(
            call(&s, 2, r, Op::Release),
            Err(WireError::Value(_))
        ));
        call(&s, 1, r, Op::Release).unwrap();
        call(&s, 1, r, Op::Release).unwrap();
        assert!(matches!(
            call(&s, 2, r, Op::Acquire(Wait::No)),
            Ok(Reply::Bool(true))
        ));
        // A plain Lock: anyone may release.
        let l = create(&s, Kind::Lock);
        assert!(matches!(
            call(&s, 1, l, Op::Acquire(Wait::No)),
            Ok(Reply::Bool(true))
        ));
        call(&s, 2, l, Op::Release).unwrap();
        assert!(matches!(
            call(&s, 2, l, Op::Release),
            Err(WireError::Value(_))
        ));
    }

    #[test]
    fn condition_wait_times_out_and_takes_the_lock_back() {
        let s = Server::new();
        let c = create(&s, Kind::Condition);
        let wait = Wait::For(Duration::from_millis(10));
        assert!(matches!(
            call(&s, 1, c, Op::CondWait(wait)),
            Err(WireError::Value(_))
        ));
        call(&s, 1, c, Op::Acquire(Wait::Forever)).unwrap();
        let start = Instant::now();
        assert!(matches!(
            call(&s, 1, c, Op::CondWait(wait)),
            Ok(Reply::Bool(false))
        ));
        assert!(start.elapsed() >= Duration::from_millis(10));
        // Held again by client 1.
        assert!(matches!(
            call(&s, 2, c, Op::Acquire(Wait::No)),
            Ok(Reply::Bool(false))
        ));
        call(&s, 1, c, Op::Release).unwrap();
    }

    #[test]
    fn condition_notify_wakes_a_waiter_on_another_thread() {
        let s = Server::new();
        let c = create(&s, Kind::Condition);
        call(&s, 1, c, Op::Acquire(Wait::Forever)).unwrap();
        std::thread::scope(|scope| {
            let waiter =
                scope.spawn(|| call(&s, 1, c, Op::CondWait(Wait::For(Duration::from_secs(30)))));
            // Client 2 gets the lock once the waiter released it in wait().
            call(&s, 2, c, Op::Acquire(Wait::Forever)).unwrap();
            call(&s, 2, c, Op::CondNotify(1)).unwrap();
            call(&s, 2, c, Op::Release).unwrap();
            assert!(matches!(waiter.join().unwrap(), Ok(Reply::Bool(true))));
        });
        call(&s, 1, c, Op::Release).unwrap();
    }

    #[test]
    fn queue_bounds_and_tasks() {
        let s = Server::new();
        let q = create(
            &s,
            Kind::Queue {
                maxsize: 1,
                joinable: true,
            },
        );
        call(&s, 1, q, Op::QueuePut(blob(1u8), Wait::No)).unwrap();
        assert!(matches!(
            call(&s, 1, q, Op::QueuePut(blob(2u8), Wait::No)),
            Err(WireError::Full)
        ));
        assert!(matches!(
            call(&s, 1, q, Op::QueueJoin(Wait::No)),
            Ok(Reply::Bool(false))
        ));
        assert!(matches!(
            call(&s, 1, q, Op::QueueGet(Wait::No)),
            Ok(Reply::Value(_))
        ));
        assert!(matches!(
            call(&s, 1, q, Op::QueueGet(Wait::No)),
            Err(WireError::Empty)
        ));
        call(&s, 1, q, Op::QueueTaskDone).unwrap();
        assert!(matches!(
            call(&s, 1, q, Op::QueueTaskDone),
            Err(WireError::Value(_))
        ));
        assert!(matches!(
            call(&s, 1, q, Op::QueueJoin(Wait::No)),
            Ok(Reply::Bool(true))
        ));
        let plain = create(
            &s,
            Kind::Queue {
                maxsize: 0,
                joinable: false,
            },
        );
        assert!(matches!(
            call(&s, 1, plain, Op::QueueTaskDone),
            Err(WireError::Value(_))
        ));
    }

    #[test]
    fn barrier_trips_breaks_and_resets() {
        let s = Server::new();
        assert!(matches!(
            s.handle_local(1, spec(Kind::Barrier(0))),
            Err(WireError::Value(_))
        ));
        let b = create(&s, Kind::Barrier(2));
        std::thread::scope(|scope| {
            let other = scope.spawn(|| call(&s, 2, b, Op::BarrierWait(Wait::Forever)));
            let mine = call(&s, 1, b, Op::BarrierWait(Wait::Forever));
            let mut got = vec![mine, other.join().unwrap()]
                .into_iter()
                .map(|r| match r {
                    Ok(Reply::Count(n)) => n,
                    r => panic!("{r:?}"),
                })
                .collect::<Vec<_>>();
            got.sort();
            assert_eq!(got, vec![0, 1]);
        });
        let short = Wait::For(Duration::from_millis(5));
        assert!(matches!(
            call(&s, 1, b, Op::BarrierWait(short)),
            Err(WireError::BrokenBarrier)
        ));
        assert!(matches!(
            call(&s, 1, b, Op::BarrierBroken),
            Ok(Reply::Bool(true))
        ));
        assert!(matches!(
            call(&s, 1, b, Op::BarrierNWaiting),
            Ok(Reply::Count(0))
        ));
        call(&s, 1, b, Op::BarrierReset).unwrap();
        assert!(matches!(
            call(&s, 1, b, Op::BarrierBroken),
            Ok(Reply::Bool(false))
        ));
    }

    fn count(s: &Server) -> usize {
        s.objects.lock().unpoison().len()
    }

    /// A new Event object in `s`.
    fn create_event(s: &Server) -> Result<ObjId, WireError> {
        s.create(Spec {
            kind: Kind::Event,
            tag: 1,
            type_name: "E".into(),
        })
    }

    #[test]
    fn references_of_sessions_tokens_and_values() {
        let s = Server::new();
        let a = s.open_session();
        let b = s.open_session();
        let id = create_event(&s).unwrap();
        s.give(a, id, true).unwrap();
        // A transit reference outlives the sender's own.
        let token = s.transit(a, id).unwrap();
        s.take_back(a, id).unwrap();
        assert_eq!(count(&s), 1);
        assert!(matches!(s.take_back(a, id), Err(WireError::Value(_))));
        s.claim(b, token, id).unwrap();
        // Claimed twice (the same bytes decoded again): a fresh reference.
        s.claim(b, token, id).unwrap();
        s.take_back(b, id).unwrap();
        assert_eq!(count(&s), 1);
        // A value holding it keeps it when the session ends.
        assert_eq!(s.incref_alive(&[id, 999]), vec![id]);
        s.end_session(b);
        assert_eq!(count(&s), 1);
        s.decref(id);
        assert_eq!(count(&s), 0);
        assert!(matches!(s.give(a, id, false), Err(WireError::Value(_))));
        assert!(matches!(s.transit(a, id), Err(WireError::Value(_))));
    }

    #[test]
    fn an_unclaimed_transit_reference_goes_with_its_sender() {
        let s = Server::new();
        let a = s.open_session();
        let id = create_event(&s).unwrap();
        s.give(a, id, true).unwrap();
        s.transit(a, id).unwrap();
        s.take_back(a, id).unwrap();
        assert_eq!(count(&s), 1);
        s.end_session(a);
        assert_eq!(count(&s), 0);
        // A session that ended gets nothing: a new object goes at once.
        let id = create_event(&s).unwrap();
        assert!(matches!(s.give(a, id, true), Err(WireError::Closed)));
        assert_eq!(count(&s), 0);
    }

    #[test]
    fn named_objects_are_created_once() {
        let s = Server::new();
        let named = |tag: u64| {
            s.handle_local(
                1,
                Request::CreateNamed(
                    "n".into(),
                    Spec {
                        kind: Kind::Event,
                        tag,
                        type_name: "E".into(),
                    },
                ),
            )
        };
        let a = named(7);
        let b = named(7);
        assert!(matches!((a, b), (Ok(Reply::Id(x)), Ok(Reply::Id(y))) if x == y));
        assert!(matches!(named(8), Err(WireError::Value(_))));
        assert!(matches!(
            s.handle_local(1, Request::NumberOfObjects),
            Ok(Reply::Count(1))
        ));
    }
}
