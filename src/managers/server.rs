//! The manager's server: the objects, and one thread per client connection.
//!
//! CPython's `managers.Server`: `id_to_obj`, `serve_client` (a thread per
//! connection), `handle_request`. Every method is one atomic operation under the
//! object's own mutex. A blocking method (lock acquire, queue get, event wait,
//! condition wait, barrier wait, queue join) blocks only the thread serving that
//! client, waking every [`PEER_CHECK`] to see whether the client is still there.
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

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::reduction::{self, CallOutcome, Encoded};

use super::channel::Channel;
use super::custom::{self, ErasedObject};
use super::protocol::{
    py_index, py_slice, Blob, Kind, ObjId, Op, Reply, Request, Response, Spec, WireError,
};

/// How often a thread blocked for a client checks that the client is still there.
pub(crate) const PEER_CHECK: Duration = Duration::from_millis(50);

/// Locks a mutex, ignoring poisoning (a user method's panic is caught inside the
/// lock, so poisoning only follows a bug of ours; the state is still usable).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A connection being served.
pub(crate) struct Client<'a> {
    /// Its number (lock ownership).
    id: u64,
    /// The connection, to see whether the peer has gone while we block.
    conn: Option<&'a Channel>,
}

impl Client<'_> {
    /// False once the peer closed its end.
    fn alive(&self) -> bool {
        self.conn.is_none_or(|c| !c.peer_closed())
    }
}

/// Why a blocking wait ended.
enum Waited<G> {
    /// The condition holds; the guard is held.
    Ready(G),
    /// The deadline passed first; the guard is held.
    TimedOut(G),
    /// The client went away.
    Gone,
}

/// Waits on `cv` until `ready(state)`, the deadline, or the client's departure.
fn wait_until<'m, S>(
    cv: &Condvar,
    mut guard: MutexGuard<'m, S>,
    deadline: Option<Instant>,
    client: &Client<'_>,
    mut ready: impl FnMut(&mut S) -> bool,
) -> Waited<MutexGuard<'m, S>> {
    loop {
        if ready(&mut guard) {
            return Waited::Ready(guard);
        }
        let now = Instant::now();
        let slice = match deadline {
            Some(d) if d <= now => return Waited::TimedOut(guard),
            Some(d) => (d - now).min(PEER_CHECK),
            None => PEER_CHECK,
        };
        let (g, res) = cv
            .wait_timeout(guard, slice)
            .unwrap_or_else(|e| e.into_inner());
        guard = g;
        if res.timed_out() && !client.alive() {
            return Waited::Gone;
        }
    }
}

/// A dict that keeps insertion order (Python 3.7+), keyed by encoded keys.
#[derive(Default)]
struct Dict {
    /// Key → insertion sequence number.
    index: HashMap<Blob, u64>,
    /// Sequence number → (key, value), in insertion order.
    entries: BTreeMap<u64, (Blob, Blob)>,
    /// The next sequence number.
    next: u64,
}

impl Dict {
    fn insert(&mut self, k: Blob, v: Blob) -> Option<Blob> {
        if let Some(seq) = self.index.get(&k) {
            let slot = self.entries.get_mut(seq).expect("index and entries agree");
            return Some(std::mem::replace(&mut slot.1, v));
        }
        let seq = self.next;
        self.next += 1;
        self.index.insert(k.clone(), seq);
        self.entries.insert(seq, (k, v));
        None
    }

    fn get(&self, k: &Blob) -> Option<&Blob> {
        self.index.get(k).map(|seq| &self.entries[seq].1)
    }

    fn remove(&mut self, k: &Blob) -> Option<Blob> {
        let seq = self.index.remove(k)?;
        self.entries.remove(&seq).map(|(_, v)| v)
    }

    fn pop_last(&mut self) -> Option<(Blob, Blob)> {
        let (_, (k, v)) = self.entries.pop_last()?;
        self.index.remove(&k);
        Some((k, v))
    }

    fn clear(&mut self) {
        self.index.clear();
        self.entries.clear();
    }
}

/// State of a `Lock`, `RLock` or `Condition` (an RLock plus its waiters).
#[derive(Default)]
struct LockState {
    /// The connection holding it.
    owner: Option<u64>,
    /// Recursion depth (1 for a plain lock).
    count: u32,
    /// Condition waiters, in arrival order (tickets).
    waiting: VecDeque<u64>,
    /// Tickets notified and not yet woken.
    notified: HashSet<u64>,
    /// The next ticket.
    next_ticket: u64,
}

/// A `Lock`, `RLock` or `Condition`.
struct LockObj {
    /// Owned and re-entrant (RLock, Condition) or not (Lock).
    recursive: bool,
    /// The state.
    state: Mutex<LockState>,
    /// Signalled on every release and notify.
    cv: Condvar,
}

/// A `Semaphore` or `BoundedSemaphore`.
struct SemObj {
    /// The counter.
    value: Mutex<u32>,
    /// The bound (`BoundedSemaphore`: the initial value).
    max: Option<u32>,
    /// Signalled on release.
    cv: Condvar,
}

/// Barrier state (threading.Barrier).
struct BarrierState {
    /// The number of parties.
    parties: u32,
    /// Parties waiting now.
    count: u32,
    /// Bumped each time the barrier trips.
    generation: u64,
    /// Bumped by `reset()`.
    epoch: u64,
    /// Aborted, or a wait timed out.
    broken: bool,
}

/// Queue state.
struct QueueState {
    /// The items.
    items: VecDeque<Blob>,
    /// The bound; 0 for none.
    maxsize: usize,
    /// Items put and not yet `task_done()` (JoinableQueue).
    unfinished: u64,
}

/// One shared object.
enum Object {
    /// `Namespace`: name → (type name, value).
    Namespace(Mutex<HashMap<String, (String, Blob)>>),
    /// `dict`.
    Dict(Mutex<Dict>),
    /// `list`, and `Array` (fixed length).
    List {
        /// The items.
        items: Mutex<Vec<Blob>>,
        /// An Array: no growing or shrinking.
        fixed: bool,
    },
    /// `Value`.
    Value(Mutex<Blob>),
    /// `Lock`, `RLock`, `Condition`.
    Lock(LockObj),
    /// `Semaphore`, `BoundedSemaphore`.
    Semaphore(SemObj),
    /// `Event`.
    Event(Mutex<bool>, Condvar),
    /// `Barrier`.
    Barrier(Mutex<BarrierState>, Condvar),
    /// `Queue`, `JoinableQueue`.
    Queue {
        /// The state.
        state: Mutex<QueueState>,
        /// Signalled on every change.
        cv: Condvar,
        /// Counts unfinished tasks.
        joinable: bool,
    },
    /// A user type.
    Custom(Mutex<Box<dyn ErasedObject>>),
}

impl Object {
    fn kind_name(&self) -> &'static str {
        match self {
            Object::Namespace(_) => "Namespace",
            Object::Dict(_) => "dict",
            Object::List { fixed: false, .. } => "list",
            Object::List { fixed: true, .. } => "Array",
            Object::Value(_) => "Value",
            Object::Lock(l) if l.recursive => "RLock or Condition",
            Object::Lock(_) => "Lock",
            Object::Semaphore(_) => "Semaphore",
            Object::Event(..) => "Event",
            Object::Barrier(..) => "Barrier",
            Object::Queue { .. } => "Queue",
            Object::Custom(_) => "custom object",
        }
    }
}

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

/// The server: every object, by id and by name.
pub(crate) struct Server {
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

fn wrong_kind(obj: &Object, op: &Op) -> WireError {
    WireError::Value(format!(
        "{op:?} is not a method of a manager {}",
        obj.kind_name()
    ))
}

impl Server {
    /// An empty server.
    pub(crate) fn new() -> Arc<Server> {
        Arc::new(Server {
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
        let mut shutdown = false;
        while let Ok(request) = conn.recv(true, |frame| postcard::from_bytes::<Request>(frame)) {
            let (response, undo) = match request {
                Ok(Request::Shutdown) => {
                    shutdown = true;
                    (Ok(Reply::Unit), Undo::None)
                }
                Ok(req) => self.handle(req, &client, &mut held),
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
                break;
            }
            if shutdown {
                break;
            }
        }
        self.client_gone(&client, held);
        shutdown
    }

    /// Serves one request in-process (unit tests).
    #[cfg(test)]
    pub(crate) fn handle_local(&self, client_id: u64, req: Request) -> Response {
        let client = Client {
            id: client_id,
            conn: None,
        };
        self.handle(req, &client, &mut HashSet::new()).0
    }

    /// Releases the RLocks and Conditions a departed client held.
    fn client_gone(&self, client: &Client<'_>, held: HashSet<ObjId>) {
        for id in held {
            let Some(obj) = self.object(id).ok() else {
                continue;
            };
            if let Object::Lock(l) = &*obj {
                let mut st = lock(&l.state);
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
                    let mut st = lock(&l.state);
                    if st.owner == Some(client.id) || !l.recursive {
                        st.count = st.count.saturating_sub(1);
                        if st.count == 0 {
                            st.owner = None;
                        }
                        l.cv.notify_all();
                    }
                }
                Object::Semaphore(s) => {
                    *lock(&s.value) += 1;
                    s.cv.notify_all();
                }
                _ => {}
            },
            Undo::Requeue(obj) => {
                if let (Object::Queue { state, cv, .. }, Ok(Reply::Value(item))) = (&*obj, response)
                {
                    lock(state).items.push_front(item.clone());
                    cv.notify_all();
                }
            }
        }
    }

    fn object(&self, id: ObjId) -> Result<Arc<Object>, WireError> {
        lock(&self.objects)
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
            Kind::Custom { ctor, init } => {
                let outcome = ctor.call(Encoded {
                    bytes: init.0,
                    fds: Vec::new(),
                });
                match outcome {
                    Ok(CallOutcome::Returned(_)) => match custom::take_constructed() {
                        Some(obj) => Object::Custom(Mutex::new(obj)),
                        None => {
                            return Err(WireError::Value("the constructor made no object".into()))
                        }
                    },
                    Ok(CallOutcome::Panicked(p)) => return Err(self.remote(p)),
                    Ok(CallOutcome::Failed(e)) | Err(e) => {
                        return Err(WireError::Decode(e.to_string()))
                    }
                }
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            tag: spec.tag,
            type_name: spec.type_name,
            object: Arc::new(object),
        };
        lock(&self.objects).insert(id, entry);
        Ok(id)
    }

    fn remote(&self, p: reduction::PanicInfo) -> WireError {
        WireError::Remote {
            process: self.process.clone(),
            pid: std::process::id(),
            message: p.message,
            location: p.location,
            backtrace: p.backtrace,
        }
    }

    fn lookup(&self, name: &str, tag: u64, type_name: &str) -> Result<ObjId, WireError> {
        let id = lock(&self.names)
            .get(name)
            .copied()
            .ok_or_else(|| WireError::Key(format!("no shared object is registered as {name:?}")))?;
        let objects = lock(&self.objects);
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

    fn handle(&self, req: Request, client: &Client<'_>, held: &mut HashSet<ObjId>) -> Handled {
        let result = match req {
            Request::Create(spec) => self.create(spec).map(Reply::Id),
            Request::CreateNamed(name, spec) => {
                // One lock over lookup-or-create, so two processes asking for the
                // same name get the same object.
                let mut names = lock(&self.names);
                match names.get(&name).copied() {
                    Some(_) => {
                        drop(names);
                        self.lookup(&name, spec.tag, &spec.type_name).map(Reply::Id)
                    }
                    None => self.create(spec).map(|id| {
                        names.insert(name, id);
                        Reply::Id(id)
                    }),
                }
            }
            Request::Publish { name, id } => self.object(id).map(|_| {
                lock(&self.names).insert(name, id);
                Reply::Unit
            }),
            Request::Lookup {
                name,
                tag,
                type_name,
            } => self.lookup(&name, tag, &type_name).map(Reply::Id),
            Request::NumberOfObjects => Ok(Reply::Count(lock(&self.objects).len() as u64)),
            Request::Shutdown => Ok(Reply::Unit),
            Request::Call(id, op) => {
                let obj = match self.object(id) {
                    Ok(o) => o,
                    Err(e) => return (Err(e), Undo::None),
                };
                return self.call(id, obj, op, client, held);
            }
        };
        (result, Undo::None)
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
            (Object::Value(v), Op::ValueGet) => Ok(Reply::Value(lock(v).clone())),
            (Object::Value(v), Op::ValueSet(x)) => {
                *lock(v) = x;
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
            (Object::Custom(o), Op::Custom(call)) => {
                let mut o = lock(o);
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

fn namespace_op(ns: &Mutex<HashMap<String, (String, Blob)>>, op: Op) -> Response {
    let mut ns = lock(ns);
    match op {
        Op::NsSet(name, type_name, value) => {
            ns.insert(name, (type_name, value));
            Ok(Reply::Unit)
        }
        Op::NsGet(name, tag, type_name) => match ns.get(&name) {
            None => Err(WireError::Key(format!(
                "the namespace has no attribute {name:?}"
            ))),
            Some((stored, value)) => {
                if value.0.len() >= 10 && value.0[2..10] == tag.to_le_bytes() {
                    Ok(Reply::Value(value.clone()))
                } else {
                    Err(WireError::Value(format!(
                        "namespace attribute {name:?} holds a {stored}, not a {type_name}"
                    )))
                }
            }
        },
        Op::NsHas(name) => Ok(Reply::Bool(ns.contains_key(&name))),
        Op::NsDel(name) => match ns.remove(&name) {
            Some(_) => Ok(Reply::Unit),
            None => Err(WireError::Key(format!(
                "the namespace has no attribute {name:?}"
            ))),
        },
        Op::NsNames => {
            let mut names: Vec<String> = ns.keys().cloned().collect();
            names.sort();
            Ok(Reply::Names(names))
        }
        op => Err(WireError::Value(format!(
            "{op:?} is not a method of a manager Namespace"
        ))),
    }
}

fn dict_op(d: &Mutex<Dict>, op: Op) -> Response {
    let mut d = lock(d);
    Ok(match op {
        Op::DictInsert(k, v) => Reply::Maybe(d.insert(k, v)),
        Op::DictGet(k) => Reply::Maybe(d.get(&k).cloned()),
        Op::DictRemove(k) => Reply::Maybe(d.remove(&k)),
        Op::DictLen => Reply::Count(d.index.len() as u64),
        Op::DictContains(k) => Reply::Bool(d.index.contains_key(&k)),
        Op::DictKeys => Reply::Values(d.entries.values().map(|(k, _)| k.clone()).collect()),
        Op::DictValues => Reply::Values(d.entries.values().map(|(_, v)| v.clone()).collect()),
        Op::DictItems => Reply::Pairs(d.entries.values().cloned().collect()),
        Op::DictClear => {
            d.clear();
            Reply::Unit
        }
        Op::DictPopItem => Reply::MaybePair(d.pop_last()),
        Op::DictSetDefault(k, v) => match d.get(&k) {
            Some(existing) => Reply::Value(existing.clone()),
            None => {
                d.insert(k, v.clone());
                Reply::Value(v)
            }
        },
        Op::DictUpdate(items) => {
            for (k, v) in items {
                d.insert(k, v);
            }
            Reply::Unit
        }
        op => {
            return Err(WireError::Value(format!(
                "{op:?} is not a method of a manager dict"
            )))
        }
    })
}

fn out_of_range(i: i64, len: usize) -> WireError {
    WireError::Value(format!("list index {i} out of range (length {len})"))
}

fn list_op(items: &Mutex<Vec<Blob>>, fixed: bool, op: Op) -> Response {
    let mut l = lock(items);
    let resizes = matches!(
        op,
        Op::ListPush(_)
            | Op::ListPop(_)
            | Op::ListExtend(_)
            | Op::ListInsert(..)
            | Op::ListRemove(_)
            | Op::ListClear
            | Op::ListRepeat(_)
    );
    if fixed && resizes {
        return Err(WireError::Value(format!(
            "{op:?}: a manager Array has a fixed length"
        )));
    }
    let len = l.len();
    Ok(match op {
        Op::ListPush(x) => {
            l.push(x);
            Reply::Unit
        }
        Op::ListGet(i) => {
            Reply::Value(l[py_index(i, len).ok_or_else(|| out_of_range(i, len))?].clone())
        }
        Op::ListSet(i, x) => {
            let at = py_index(i, len).ok_or_else(|| out_of_range(i, len))?;
            l[at] = x;
            Reply::Unit
        }
        Op::ListLen => Reply::Count(len as u64),
        Op::ListPop(i) => {
            if len == 0 {
                return Err(WireError::Value("pop from an empty list".into()));
            }
            let at = match i {
                None => len - 1,
                Some(i) => py_index(i, len).ok_or_else(|| out_of_range(i, len))?,
            };
            Reply::Value(l.remove(at))
        }
        Op::ListExtend(xs) => {
            l.extend(xs);
            Reply::Unit
        }
        Op::ListToVec => Reply::Values(l.clone()),
        Op::ListSlice(a, b) => Reply::Values(l[py_slice(a, b, len)].to_vec()),
        Op::ListInsert(i, x) => {
            // Python's insert clamps the index instead of failing.
            let at = py_slice(i, i64::MAX, len).start;
            l.insert(at, x);
            Reply::Unit
        }
        Op::ListRemove(x) => match l.iter().position(|y| *y == x) {
            Some(at) => {
                l.remove(at);
                Reply::Unit
            }
            None => return Err(WireError::Value("list.remove(x): x not in list".into())),
        },
        Op::ListIndex(x) => match l.iter().position(|y| *y == x) {
            Some(at) => Reply::Count(at as u64),
            None => return Err(WireError::Value("list.index(x): x not in list".into())),
        },
        Op::ListCount(x) => Reply::Count(l.iter().filter(|y| **y == x).count() as u64),
        Op::ListReverse => {
            l.reverse();
            Reply::Unit
        }
        Op::ListClear => {
            l.clear();
            Reply::Unit
        }
        Op::ListRepeat(n) => {
            let total = (len as u64)
                .checked_mul(n)
                .filter(|t| *t <= u32::MAX as u64);
            if total.is_none() {
                return Err(WireError::Value(format!(
                    "list *= {n}: the result would be too long"
                )));
            }
            let once = l.clone();
            l.clear();
            for _ in 0..n {
                l.extend(once.iter().cloned());
            }
            Reply::Unit
        }
        op => {
            return Err(WireError::Value(format!(
                "{op:?} is not a method of a manager list"
            )))
        }
    })
}

fn lock_op(l: &LockObj, op: Op, client: &Client<'_>) -> Response {
    let st = lock(&l.state);
    match op {
        Op::Acquire(wait) => {
            let mut st = st;
            if l.recursive && st.owner == Some(client.id) {
                st.count += 1;
                return Ok(Reply::Bool(true));
            }
            match wait_until(&l.cv, st, wait.deadline(), client, |s| s.count == 0) {
                Waited::Ready(mut st) => {
                    st.owner = Some(client.id);
                    st.count = 1;
                    Ok(Reply::Bool(true))
                }
                Waited::TimedOut(_) => Ok(Reply::Bool(false)),
                Waited::Gone => Err(WireError::Closed),
            }
        }
        Op::Release => {
            let mut st = st;
            if st.count == 0 {
                return Err(WireError::Value("release unlocked lock".into()));
            }
            if l.recursive && st.owner != Some(client.id) {
                return Err(WireError::Value(
                    "cannot release un-acquired lock: another thread or process owns it".into(),
                ));
            }
            st.count -= 1;
            if st.count == 0 {
                st.owner = None;
                l.cv.notify_all();
            }
            Ok(Reply::Unit)
        }
        Op::CondWait(wait) => {
            let mut st = st;
            if st.owner != Some(client.id) {
                return Err(WireError::Value(
                    "cannot wait on un-acquired lock; acquire the condition first".into(),
                ));
            }
            let saved = st.count;
            st.owner = None;
            st.count = 0;
            let ticket = st.next_ticket;
            st.next_ticket += 1;
            st.waiting.push_back(ticket);
            l.cv.notify_all();
            let (st, notified) = match wait_until(&l.cv, st, wait.deadline(), client, |s| {
                s.notified.remove(&ticket)
            }) {
                Waited::Ready(st) => (st, true),
                Waited::TimedOut(mut st) => {
                    st.waiting.retain(|t| *t != ticket);
                    (st, false)
                }
                Waited::Gone => {
                    let mut st = lock(&l.state);
                    st.waiting.retain(|t| *t != ticket);
                    st.notified.remove(&ticket);
                    return Err(WireError::Closed);
                }
            };
            // Take the lock back, however long it takes (Python's wait does too).
            match wait_until(&l.cv, st, None, client, |s| s.count == 0) {
                Waited::Ready(mut st) | Waited::TimedOut(mut st) => {
                    st.owner = Some(client.id);
                    st.count = saved;
                    Ok(Reply::Bool(notified))
                }
                Waited::Gone => Err(WireError::Closed),
            }
        }
        Op::CondNotify(_) | Op::CondNotifyAll => {
            let mut st = st;
            if st.owner != Some(client.id) {
                return Err(WireError::Value(
                    "cannot notify on un-acquired lock; acquire the condition first".into(),
                ));
            }
            let n = match op {
                Op::CondNotify(n) => n as usize,
                _ => usize::MAX,
            };
            let k = n.min(st.waiting.len());
            let woken: Vec<u64> = st.waiting.drain(..k).collect();
            st.notified.extend(woken);
            l.cv.notify_all();
            Ok(Reply::Unit)
        }
        op => Err(WireError::Value(format!(
            "{op:?} is not a method of a manager lock or condition"
        ))),
    }
}

fn sem_op(s: &SemObj, op: Op, client: &Client<'_>) -> Response {
    let v = lock(&s.value);
    match op {
        Op::Acquire(wait) => match wait_until(&s.cv, v, wait.deadline(), client, |v| *v > 0) {
            Waited::Ready(mut v) => {
                *v -= 1;
                Ok(Reply::Bool(true))
            }
            Waited::TimedOut(_) => Ok(Reply::Bool(false)),
            Waited::Gone => Err(WireError::Closed),
        },
        Op::Release => {
            let mut v = v;
            if s.max.is_some_and(|m| *v >= m) {
                return Err(WireError::Value("semaphore released too many times".into()));
            }
            *v = v
                .checked_add(1)
                .ok_or_else(|| WireError::Value("semaphore value overflow".into()))?;
            s.cv.notify_all();
            Ok(Reply::Unit)
        }
        Op::SemValue => Ok(Reply::Count(u64::from(*v))),
        op => Err(WireError::Value(format!(
            "{op:?} is not a method of a manager Semaphore"
        ))),
    }
}

fn event_op(flag: &Mutex<bool>, cv: &Condvar, op: Op, client: &Client<'_>) -> Response {
    let mut f = lock(flag);
    match op {
        Op::EventSet => {
            *f = true;
            cv.notify_all();
            Ok(Reply::Unit)
        }
        Op::EventClear => {
            *f = false;
            Ok(Reply::Unit)
        }
        Op::EventIsSet => Ok(Reply::Bool(*f)),
        Op::EventWait(wait) => match wait_until(cv, f, wait.deadline(), client, |f| *f) {
            Waited::Ready(_) => Ok(Reply::Bool(true)),
            Waited::TimedOut(_) => Ok(Reply::Bool(false)),
            Waited::Gone => Err(WireError::Closed),
        },
        op => Err(WireError::Value(format!(
            "{op:?} is not a method of a manager Event"
        ))),
    }
}

fn barrier_op(st: &Mutex<BarrierState>, cv: &Condvar, op: Op, client: &Client<'_>) -> Response {
    let mut s = lock(st);
    match op {
        Op::BarrierWait(wait) => {
            if s.broken {
                return Err(WireError::BrokenBarrier);
            }
            let index = s.count;
            s.count += 1;
            if s.count == s.parties {
                s.count = 0;
                s.generation += 1;
                cv.notify_all();
                return Ok(Reply::Count(u64::from(index)));
            }
            let (generation, epoch) = (s.generation, s.epoch);
            let outcome = wait_until(cv, s, wait.deadline(), client, |s| {
                s.generation != generation || s.epoch != epoch || s.broken
            });
            let mut s = match outcome {
                Waited::Ready(s) => s,
                Waited::TimedOut(s) => s,
                Waited::Gone => lock(st),
            };
            if s.generation != generation {
                // Passed (perhaps just before a reset or abort).
                return Ok(Reply::Count(u64::from(index)));
            }
            if s.epoch == epoch && !s.broken {
                // Timed out or the client left: that breaks the barrier, as a
                // timeout does in Python.
                s.broken = true;
                s.count = s.count.saturating_sub(1);
                cv.notify_all();
            } else if s.epoch == epoch {
                s.count = s.count.saturating_sub(1);
            }
            Err(WireError::BrokenBarrier)
        }
        Op::BarrierAbort => {
            s.broken = true;
            cv.notify_all();
            Ok(Reply::Unit)
        }
        Op::BarrierReset => {
            s.epoch += 1;
            s.count = 0;
            s.broken = false;
            cv.notify_all();
            Ok(Reply::Unit)
        }
        Op::BarrierParties => Ok(Reply::Count(u64::from(s.parties))),
        Op::BarrierNWaiting => Ok(Reply::Count(u64::from(s.count))),
        Op::BarrierBroken => Ok(Reply::Bool(s.broken)),
        op => Err(WireError::Value(format!(
            "{op:?} is not a method of a manager Barrier"
        ))),
    }
}

fn queue_op(
    state: &Mutex<QueueState>,
    cv: &Condvar,
    joinable: bool,
    op: Op,
    client: &Client<'_>,
) -> Response {
    let q = lock(state);
    match op {
        Op::QueuePut(item, wait) => {
            let room = |q: &mut QueueState| q.maxsize == 0 || q.items.len() < q.maxsize;
            match wait_until(cv, q, wait.deadline(), client, room) {
                Waited::Ready(mut q) => {
                    q.items.push_back(item);
                    q.unfinished += 1;
                    cv.notify_all();
                    Ok(Reply::Unit)
                }
                Waited::TimedOut(_) => Err(WireError::Full),
                Waited::Gone => Err(WireError::Closed),
            }
        }
        Op::QueueGet(wait) => {
            match wait_until(cv, q, wait.deadline(), client, |q| !q.items.is_empty()) {
                Waited::Ready(mut q) => {
                    let item = q.items.pop_front().expect("checked non-empty");
                    cv.notify_all();
                    Ok(Reply::Value(item))
                }
                Waited::TimedOut(_) => Err(WireError::Empty),
                Waited::Gone => Err(WireError::Closed),
            }
        }
        Op::QueueSize => Ok(Reply::Count(q.items.len() as u64)),
        Op::QueueEmpty => Ok(Reply::Bool(q.items.is_empty())),
        Op::QueueFull => Ok(Reply::Bool(q.maxsize > 0 && q.items.len() >= q.maxsize)),
        Op::QueueTaskDone if joinable => {
            let mut q = q;
            if q.unfinished == 0 {
                return Err(WireError::Value("task_done() called too many times".into()));
            }
            q.unfinished -= 1;
            if q.unfinished == 0 {
                cv.notify_all();
            }
            Ok(Reply::Unit)
        }
        Op::QueueJoin(wait) if joinable => {
            match wait_until(cv, q, wait.deadline(), client, |q| q.unfinished == 0) {
                Waited::Ready(_) => Ok(Reply::Bool(true)),
                Waited::TimedOut(_) => Ok(Reply::Bool(false)),
                Waited::Gone => Err(WireError::Closed),
            }
        }
        op => Err(WireError::Value(format!(
            "{op:?} is not a method of a manager Queue"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::managers::protocol::Wait;

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

    #[test]
    fn dict_keeps_insertion_order_across_removals() {
        let mut d = Dict::default();
        for k in [3u8, 1, 2] {
            d.insert(blob(k), blob(()));
        }
        d.remove(&blob(1u8));
        d.insert(blob(1u8), blob(()));
        let keys: Vec<u8> = d
            .entries
            .values()
            .map(|(k, _)| k.decode().unwrap())
            .collect();
        assert_eq!(keys, vec![3, 2, 1]);
        assert_eq!(
            d.pop_last().map(|(k, _)| k.decode::<u8>().unwrap()),
            Some(1)
        );
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
