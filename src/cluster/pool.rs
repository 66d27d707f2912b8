//! The public face of remote workers on [`PoolBuilder`] and [`Pool`]
//! (`listen`, `cluster`, `listen_address`); the relays that serve them are in
//! `pool/remote.rs`. Here, above both `pool` and `cluster`, so that neither
//! depends on the other's top.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::rendezvous::{self, Meeting};
use super::{NOT_ACROSS_MACHINES_ARG, wire};
use crate::error::{Error, Result};
use crate::pool::remote::RemoteSpec;
use crate::pool::{Pool, PoolBuilder};

impl PoolBuilder {
    /// Builds a pool whose workers connect over TCP: it listens on `addr`,
    /// and any process of this same program started (by anything, anywhere)
    /// with `MULTIPROCESS_CONNECT=host:port` and the authkey in
    /// `MULTIPROCESS_AUTHKEY` (or a file named by `MULTIPROCESS_AUTHKEY_FILE`)
    /// becomes one of its workers in `mp::init()`.
    ///
    /// [`processes`](PoolBuilder::processes) is the most workers served at
    /// once (default [`cpu_count`](crate::cpu_count)); workers may join and
    /// leave while the pool runs. Tasks wait until a worker has joined. A
    /// worker that leaves or is lost fails only the task it was running, with
    /// [`Error::WorkerLost`] (the pid is the pool's local relay for that
    /// worker); its other tasks go to other workers.
    ///
    /// Every connection passes CPython's HMAC handshake both ways, and the
    /// worker's executable must have the same contents as this one (a SHA-256
    /// is compared); a worker with another key or build is refused, with a
    /// message on both sides. A task whose argument holds shared memory, an OS
    /// lock, a queue or a connection fails with [`Error::Encode`] naming the
    /// Manager equivalent.
    ///
    /// Beyond Python (Ray's `Pool(ray_address=...)`, dask's workers joining
    /// a scheduler).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `addr` cannot be bound; [`Error::Encode`] when the
    /// initializer's argument holds fds; as [`build`](PoolBuilder::build).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let pool = mp::Pool::builder().processes(2).listen("127.0.0.1:0", b"secret")?;
    ///     let addr = pool.listen_address().unwrap();
    ///     // Start workers: MULTIPROCESS_CONNECT=<addr> MULTIPROCESS_AUTHKEY=secret ./this-program
    ///     assert_eq!(addr.ip().to_string(), "127.0.0.1");
    ///     Ok(())
    /// }
    /// ```
    pub fn listen(self, addr: impl ToSocketAddrs, authkey: impl AsRef<[u8]>) -> Result<Pool> {
        let listener = TcpListener::bind(addr)?;
        self.listen_on(listener, authkey.as_ref().to_vec())
    }

    fn listen_on(self, listener: TcpListener, authkey: Vec<u8>) -> Result<Pool> {
        if self.init_carries_fds() {
            return Err(Error::Encode(format!(
                "the initializer's argument cannot go to remote workers: {NOT_ACROSS_MACHINES_ARG}"
            )));
        }
        let spec = RemoteSpec::new(listener, authkey)?;
        self.build_with(Some(spec))
    }

    /// SPMD: in rank 0 of a job started by a launcher (see
    /// [`cluster::rank`](crate::cluster::rank)), a pool whose workers are the
    /// other ranks (their `mp::init()` made them workers); waits until every
    /// rank has joined, at most `MULTIPROCESS_CLUSTER_TIMEOUT` seconds
    /// (default 60; see [`cluster_timeout`](PoolBuilder::cluster_timeout)).
    /// Outside a launcher, or in a job of one process, the pool of local
    /// workers [`build`](PoolBuilder::build) gives: the same program runs on a
    /// laptop and on a cluster.
    ///
    /// How the ranks find rank 0 and which key they share: docs/cluster.md.
    ///
    /// Python/mpi4py: `MPIPoolExecutor()` under `mpiexec -n N python -m mpi4py.futures`.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] naming the ranks that did not join in time;
    /// [`Error::Value`] when rank 0's address cannot be found, or in a rank
    /// above 0 (started with `MULTIPROCESS_SPMD=0`); as
    /// [`listen`](PoolBuilder::listen).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// fn main() -> mp::Result<()> {
    ///     mp::init();
    ///     let pool = mp::Pool::builder().processes(2).cluster()?;
    ///     let sum: u64 = pool.map(|x: u64| x * x, 0..100)?.into_iter().sum();
    ///     assert_eq!(sum, 328350);
    ///     Ok(())
    /// }
    /// ```
    pub fn cluster(self) -> Result<Pool> {
        self.cluster_timeout(rendezvous::timeout())
    }

    /// [`cluster`](PoolBuilder::cluster), waiting at most `timeout` for the
    /// other ranks.
    ///
    /// # Errors
    ///
    /// As [`cluster`](PoolBuilder::cluster).
    pub fn cluster_timeout(self, timeout: Duration) -> Result<Pool> {
        let deadline = Instant::now() + timeout;
        let Some(rank) = super::rank().filter(|r| r.size > 1) else {
            return self.build();
        };
        if rank.rank != 0 {
            return Err(Error::value(format!(
                "{rank}: only rank 0 builds the cluster pool (the other ranks serve it from mp::init(); \
                 MULTIPROCESS_SPMD=0 turned that off)"
            )));
        }
        let key = rendezvous::spmd_authkey(&rank)?;
        let get = |k: &str| std::env::var(k).ok();
        let (listener, file) = match rendezvous::meeting(&rank, &get)? {
            Meeting::Addr(a) => {
                let port = a
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .ok_or_else(|| Error::value(format!("{a}: rank 0's address needs a port")))?;
                (TcpListener::bind(("0.0.0.0", port))?, None)
            }
            Meeting::File { path, local } => {
                let l = TcpListener::bind(if local { "127.0.0.1:0" } else { "0.0.0.0:0" })?;
                let host = if local {
                    "127.0.0.1".to_string()
                } else {
                    std::env::var("MULTIPROCESS_ADVERTISE_ADDR")
                        .unwrap_or_else(|_| wire::hostname())
                };
                let addr = format!("{host}:{}", l.local_addr()?.port());
                rendezvous::publish(&path, rank.job_id.as_deref().unwrap_or(""), &addr)?;
                (l, Some(path))
            }
        };
        let built = self
            .processes(rank.size - 1)
            .listen_on(listener, key)
            .and_then(|pool| {
                pool.wait_for_ranks(rank.size, deadline, timeout)
                    .map(|()| pool)
            });
        if let Some(path) = file {
            let _ = std::fs::remove_file(path);
        }
        built
    }
}

impl Pool {
    /// Where a listening pool ([`PoolBuilder::listen`],
    /// [`PoolBuilder::cluster`]) accepts workers, with the real port for a
    /// port 0; `None` for a pool of local workers.
    ///
    /// Beyond Python.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess as mp;
    /// mp::init();
    /// let local = mp::Pool::new(1).unwrap();
    /// assert_eq!(local.listen_address(), None);
    /// ```
    pub fn listen_address(&self) -> Option<SocketAddr> {
        self.remote().map(RemoteSpec::address)
    }

    /// Waits until ranks `1..size` have joined.
    fn wait_for_ranks(&self, size: usize, deadline: Instant, timeout: Duration) -> Result<()> {
        match self.remote() {
            Some(spec) => spec.wait_for_ranks(size, deadline, timeout),
            None => Ok(()),
        }
    }
}
