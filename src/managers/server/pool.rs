//! The server's side of `Manager().Pool()`: an `mp::Pool` of the server
//! process, fed [`RawTask`]s, and the results of its async calls, kept as
//! objects of their own.

use crate::util::Unpoison;
use std::sync::Mutex;
use std::time::Instant;

use super::serving::{Client, PEER_CHECK};
use crate::managers::pool::{RawResult, RawTask, run_task};
use crate::managers::protocol::{Blob, Op, Reply, Response, WireError};
use crate::pool::{AsyncResult, Pool};
use crate::reduction::FnRef;

/// A pool in the server.
pub(crate) struct PoolObj {
    /// The pool; dropping it terminates the workers.
    pool: Pool,
}

/// A submitted call's result, waited for.
enum Pending {
    /// An `apply_async`.
    One(AsyncResult<RawResult>),
    /// A `map_async`.
    Many(AsyncResult<Vec<RawResult>>),
}

impl Pending {
    fn wait_timeout(&self, d: std::time::Duration) -> bool {
        match self {
            Pending::One(r) => r.wait_timeout(d),
            Pending::Many(r) => r.wait_timeout(d),
        }
    }
}

/// The result of an `apply_async` or `map_async`, as an object.
pub(crate) struct ResultObj {
    /// The pool's result.
    pending: Pending,
    /// Once taken from the pool: the values, or the error (every `get`
    /// answers the same).
    done: Mutex<Option<Result<Vec<Blob>, WireError>>>,
    /// The arguments, kept while the tasks run: they hold the references to
    /// the proxies inside them.
    _args: Vec<Blob>,
}

/// Starts a pool of `processes` workers in this (the server) process.
pub(crate) fn new_pool(processes: u32) -> Result<PoolObj, WireError> {
    Pool::new(processes as usize)
        .map(|pool| PoolObj { pool })
        .map_err(WireError::from_error)
}

/// A task for `f(arg)`.
fn task(func: FnRef, arg: &Blob) -> RawTask {
    RawTask {
        func,
        arg: arg.bytes.clone(),
    }
}

/// The value or error of one task.
fn outcome(r: RawResult) -> Result<Blob, WireError> {
    match r {
        RawResult::Returned(bytes) => Ok(Blob::plain(bytes)),
        RawResult::Failed(m) => Err(WireError::Decode(m)),
        RawResult::Panicked(r) => Err(WireError::Remote(r)),
    }
}

/// Waits for `pending` until `deadline`, while the client is there: whether
/// it is ready.
fn wait(pending: &Pending, deadline: Option<Instant>, client: &Client<'_>) -> Response {
    loop {
        let now = Instant::now();
        let slice = match deadline {
            Some(d) if d <= now => {
                return Ok(Reply::Bool(pending.wait_timeout(Default::default())));
            }
            Some(d) => (d - now).min(PEER_CHECK),
            None => PEER_CHECK,
        };
        if pending.wait_timeout(slice) {
            return Ok(Reply::Bool(true));
        }
        if !client.alive() {
            return Err(WireError::Closed);
        }
    }
}

/// The values of a ready result (taken from the pool the first time).
fn values(r: &ResultObj) -> Result<Vec<Blob>, WireError> {
    let mut done = r.done.lock().unpoison();
    if let Some(v) = &*done {
        return v.clone();
    }
    let got = match &r.pending {
        Pending::One(a) => a
            .get()
            .map_err(WireError::from_error)
            .and_then(outcome)
            .map(|b| vec![b]),
        Pending::Many(a) => a
            .get()
            .map_err(WireError::from_error)
            .and_then(|rs| rs.into_iter().map(outcome).collect()),
    };
    *done = Some(got.clone());
    got
}

/// The answer for the values of `r`.
fn answer(r: &ResultObj, values: Vec<Blob>) -> Reply {
    match (&r.pending, values.len()) {
        (Pending::One(_), 1) => Reply::Value(values.into_iter().next().expect("one value")),
        _ => Reply::Values(values),
    }
}

/// A method of a pool (the async ones are [`submit`]).
pub(crate) fn pool_op(p: &PoolObj, op: Op, client: &Client<'_>) -> Response {
    match op {
        Op::PoolApply(func, arg) => {
            let r = p
                .pool
                .apply_async(run_task, task(func, &arg))
                .map_err(WireError::from_error)?;
            let obj = ResultObj {
                pending: Pending::One(r),
                done: Mutex::new(None),
                _args: vec![arg],
            };
            match wait(&obj.pending, None, client)? {
                Reply::Bool(true) => Ok(answer(&obj, values(&obj)?)),
                _ => Err(WireError::Closed),
            }
        }
        Op::PoolMap(func, args) => {
            let tasks: Vec<RawTask> = args.iter().map(|a| task(func, a)).collect();
            let r = p
                .pool
                .map_async(run_task, tasks)
                .map_err(WireError::from_error)?;
            let obj = ResultObj {
                pending: Pending::Many(r),
                done: Mutex::new(None),
                _args: args,
            };
            match wait(&obj.pending, None, client)? {
                Reply::Bool(true) => Ok(Reply::Values(values(&obj)?)),
                _ => Err(WireError::Closed),
            }
        }
        Op::PoolClose => {
            p.pool.close();
            Ok(Reply::Unit)
        }
        Op::PoolTerminate => {
            p.pool.terminate();
            Ok(Reply::Unit)
        }
        Op::PoolJoin => p
            .pool
            .join()
            .map(|()| Reply::Unit)
            .map_err(WireError::from_error),
        op => Err(WireError::Value(format!(
            "{op:?} is not a method of a manager Pool"
        ))),
    }
}

/// Submits an `apply_async` or `map_async`: the result object to register.
pub(crate) fn submit(p: &PoolObj, op: Op) -> Result<ResultObj, WireError> {
    let (pending, args) = match op {
        Op::PoolApplyAsync(func, arg) => (
            Pending::One(
                p.pool
                    .apply_async(run_task, task(func, &arg))
                    .map_err(WireError::from_error)?,
            ),
            vec![arg],
        ),
        Op::PoolMapAsync(func, args) => {
            let tasks: Vec<RawTask> = args.iter().map(|a| task(func, a)).collect();
            (
                Pending::Many(
                    p.pool
                        .map_async(run_task, tasks)
                        .map_err(WireError::from_error)?,
                ),
                args,
            )
        }
        op => {
            return Err(WireError::Value(format!(
                "{op:?} is not a method of a manager Pool"
            )));
        }
    };
    Ok(ResultObj {
        pending,
        done: Mutex::new(None),
        _args: args,
    })
}

/// A method of a pool's result.
pub(crate) fn result_op(r: &ResultObj, op: Op, client: &Client<'_>) -> Response {
    match op {
        Op::ResultGet(w) => match wait(&r.pending, w.deadline(), client)? {
            Reply::Bool(true) => Ok(answer(r, values(r)?)),
            _ => Err(WireError::Timeout),
        },
        Op::ResultWait(w) => wait(&r.pending, w.deadline(), client),
        Op::ResultReady => Ok(Reply::Bool(
            r.done.lock().unpoison().is_some() || r.pending.wait_timeout(Default::default()),
        )),
        Op::ResultSuccessful => {
            if r.done.lock().unpoison().is_none() && !r.pending.wait_timeout(Default::default()) {
                return Err(WireError::Value(
                    "the result is not ready; wait() for it first".into(),
                ));
            }
            Ok(Reply::Bool(values(r).is_ok()))
        }
        op => Err(WireError::Value(format!(
            "{op:?} is not a method of a manager pool result"
        ))),
    }
}
