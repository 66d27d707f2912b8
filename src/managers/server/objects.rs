//! The objects a manager serves and their operations: CPython's `dict`,
//! `list`, `Namespace`, `Value`, and the `threading`/`queue` types the server
//! holds, each behind its own mutex, so every operation is atomic.

use crate::util::Unpoison;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::serving::{Client, PEER_CHECK};
use crate::managers::custom::ErasedObject;
use crate::managers::protocol::{Blob, Op, Reply, Response, WireError, py_index, py_slice};

/// Why a blocking wait ended.
pub(super) enum Waited<G> {
    /// The condition holds; the guard is held.
    Ready(G),
    /// The deadline passed first; the guard is held.
    TimedOut(G),
    /// The client went away.
    Gone,
}

/// Waits on `cv` until `ready(state)`, the deadline, or the client's departure.
pub(super) fn wait_until<'m, S>(
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
        let (g, res) = cv.wait_timeout(guard, slice).unpoison();
        guard = g;
        if res.timed_out() && !client.alive() {
            return Waited::Gone;
        }
    }
}

/// A dict that keeps insertion order (Python 3.7+), keyed by encoded keys.
#[derive(Default)]
pub(super) struct Dict {
    /// Key → insertion sequence number.
    pub(super) index: HashMap<Blob, u64>,
    /// Sequence number → (key, value), in insertion order.
    pub(super) entries: BTreeMap<u64, (Blob, Blob)>,
    /// The next sequence number.
    pub(super) next: u64,
}

impl Dict {
    pub(super) fn insert(&mut self, k: Blob, v: Blob) -> Option<Blob> {
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

    pub(super) fn pop_last(&mut self) -> Option<(Blob, Blob)> {
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
pub(super) struct LockState {
    /// The connection holding it.
    pub(super) owner: Option<u64>,
    /// Recursion depth (1 for a plain lock).
    pub(super) count: u32,
    /// Condition waiters, in arrival order (tickets).
    pub(super) waiting: VecDeque<u64>,
    /// Tickets notified and not yet woken.
    pub(super) notified: HashSet<u64>,
    /// The next ticket.
    pub(super) next_ticket: u64,
}

/// A `Lock`, `RLock` or `Condition`.
pub(super) struct LockObj {
    /// Owned and re-entrant (RLock, Condition) or not (Lock).
    pub(super) recursive: bool,
    /// The state.
    pub(super) state: Mutex<LockState>,
    /// Signalled on every release and notify.
    pub(super) cv: Condvar,
}

/// A `Semaphore` or `BoundedSemaphore`.
pub(super) struct SemObj {
    /// The counter.
    pub(super) value: Mutex<u32>,
    /// The bound (`BoundedSemaphore`: the initial value).
    pub(super) max: Option<u32>,
    /// Signalled on release.
    pub(super) cv: Condvar,
}

/// Barrier state (threading.Barrier).
pub(super) struct BarrierState {
    /// The number of parties.
    pub(super) parties: u32,
    /// Parties waiting now.
    pub(super) count: u32,
    /// Bumped each time the barrier trips.
    pub(super) generation: u64,
    /// Bumped by `reset()`.
    pub(super) epoch: u64,
    /// Aborted, or a wait timed out.
    pub(super) broken: bool,
}

/// Queue state.
pub(super) struct QueueState {
    /// The items.
    pub(super) items: VecDeque<Blob>,
    /// The bound; 0 for none.
    pub(super) maxsize: usize,
    /// Items put and not yet `task_done()` (JoinableQueue).
    pub(super) unfinished: u64,
}

/// One shared object.
pub(super) enum Object {
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
    /// `Pool`.
    Pool(super::pool::PoolObj),
    /// The result of a pool's `apply_async` or `map_async`.
    PoolResult(super::pool::ResultObj),
}

impl Object {
    pub(super) fn kind_name(&self) -> &'static str {
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
            Object::Pool(_) => "Pool",
            Object::PoolResult(_) => "pool result",
        }
    }
}

pub(super) fn wrong_kind(obj: &Object, op: &Op) -> WireError {
    WireError::Value(format!(
        "{op:?} is not a method of a manager {}",
        obj.kind_name()
    ))
}

pub(super) fn namespace_op(ns: &Mutex<HashMap<String, (String, Blob)>>, op: Op) -> Response {
    let mut ns = ns.lock().unpoison();
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
                if value.tag() == Some(tag) {
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

pub(super) fn dict_op(d: &Mutex<Dict>, op: Op) -> Response {
    let mut d = d.lock().unpoison();
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
            )));
        }
    })
}

fn out_of_range(i: i64, len: usize) -> WireError {
    WireError::Value(format!("list index {i} out of range (length {len})"))
}

pub(super) fn list_op(items: &Mutex<Vec<Blob>>, fixed: bool, op: Op) -> Response {
    let mut l = items.lock().unpoison();
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
            // Refuse what would exhaust the server's memory (Python: MemoryError).
            let bytes: u64 = l.iter().map(|b| b.bytes.len() as u64 + 24).sum();
            let fits = (len as u64).checked_mul(n).is_some_and(|t| t <= 1 << 27)
                && bytes.checked_mul(n).is_some_and(|t| t <= 4 << 30);
            if !fits {
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
            )));
        }
    })
}

pub(super) fn lock_op(l: &LockObj, op: Op, client: &Client<'_>) -> Response {
    let st = l.state.lock().unpoison();
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
                    let mut st = l.state.lock().unpoison();
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

pub(super) fn sem_op(s: &SemObj, op: Op, client: &Client<'_>) -> Response {
    let v = s.value.lock().unpoison();
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

pub(super) fn event_op(flag: &Mutex<bool>, cv: &Condvar, op: Op, client: &Client<'_>) -> Response {
    let mut f = flag.lock().unpoison();
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

pub(super) fn barrier_op(
    st: &Mutex<BarrierState>,
    cv: &Condvar,
    op: Op,
    client: &Client<'_>,
) -> Response {
    let mut s = st.lock().unpoison();
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
                Waited::Gone => st.lock().unpoison(),
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

pub(super) fn queue_op(
    state: &Mutex<QueueState>,
    cv: &Condvar,
    joinable: bool,
    op: Op,
    client: &Client<'_>,
) -> Response {
    let q = state.lock().unpoison();
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

    fn blob<T: serde::Serialize>(v: T) -> Blob {
        Blob::encode(&v).unwrap()
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
}
