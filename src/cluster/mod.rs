//! Beyond one machine: a [`Pool`](crate::Pool) whose workers run on other
//! machines, started by the launcher the cluster already has (Slurm `srun`,
//! `mpirun`/`mpiexec`, a Kubernetes Indexed Job), or by anything at all.
//!
//! The model is mpi4py.futures: the launcher starts N copies of the same
//! program; rank 0 runs `main`, the other ranks serve tasks. There is no
//! scheduler of our own and no MPI library.
//!
//! | Python / peers | Rust |
//! |---|---|
//! | `mpi4py.MPI.COMM_WORLD.Get_rank()` / `Get_size()` | [`rank()`] ([`Rank`]) |
//! | `mpi4py.futures.MPIPoolExecutor()` under `mpiexec -n N python -m mpi4py.futures` | [`PoolBuilder::cluster`](crate::PoolBuilder::cluster) |
//! | `multiprocessing.managers.BaseManager(address, authkey)` + remote `connect()`; Ray's `ray.util.multiprocessing.Pool(ray_address=...)` | [`PoolBuilder::listen`](crate::PoolBuilder::listen) + `MULTIPROCESS_CONNECT=host:port` |
//!
//! # Environment
//!
//! | variable | meaning |
//! |---|---|
//! | `MULTIPROCESS_CONNECT=host:port` | `mp::init()` makes this process a pool worker of the pool listening there |
//! | `MULTIPROCESS_AUTHKEY` / `MULTIPROCESS_AUTHKEY_FILE` | the authkey (text, or a file's bytes) |
//! | `MULTIPROCESS_MASTER_ADDR=host:port`, or `MASTER_ADDR` (+ `MASTER_PORT`) | rank 0's address (SPMD) |
//! | `MULTIPROCESS_RENDEZVOUS=path` | a file on a shared file system where rank 0 writes its address |
//! | `MULTIPROCESS_WORLD_SIZE` | the job size of a Kubernetes Indexed Job (its `completions`) |
//! | `MULTIPROCESS_CLUSTER_TIMEOUT=seconds` | how long ranks wait for each other (default 60) |
//! | `MULTIPROCESS_SPMD=0` | under a launcher, `mp::init()` does *not* turn ranks above 0 into workers |
//!
//! See docs/cluster.md for launch recipes and the security model.

mod build_id;
pub(crate) mod entry;
mod pool;
pub(crate) mod rendezvous;
pub(crate) mod wire;
pub(crate) mod worker;

pub(crate) use build_id::{build_id, short as short_id};

use std::fmt;

/// Which launcher started this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Launcher {
    /// Open MPI's `mpirun` / `mpiexec` (`OMPI_COMM_WORLD_RANK`, `OMPI_COMM_WORLD_SIZE`).
    OpenMpi,
    /// MPICH / Intel MPI (Hydra) and other PMI launchers (`PMI_RANK`, `PMI_SIZE`).
    Pmi,
    /// Slurm's `srun` (`SLURM_PROCID`, `SLURM_NTASKS`).
    Slurm,
    /// A Kubernetes Indexed Job (`JOB_COMPLETION_INDEX`, with the size in
    /// `MULTIPROCESS_WORLD_SIZE`, which Kubernetes does not set: put the
    /// Job's `completions` there in the manifest).
    Kubernetes,
}

/// This process's place in a job, as its launcher set it.
///
/// Python/mpi4py: `MPI.COMM_WORLD.Get_rank()`, `Get_size()`; PyTorch's
/// `RANK`/`WORLD_SIZE`/`LOCAL_RANK`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rank {
    /// This process's index in the job, `0..size`.
    pub rank: usize,
    /// The number of processes in the job.
    pub size: usize,
    /// The index among the job's processes on this host, when known.
    pub local_rank: Option<usize>,
    /// The number of the job's processes on this host, when known.
    pub local_size: Option<usize>,
    /// This host's name as the launcher gave it, when it did.
    pub host: Option<String>,
    /// The launcher.
    pub launcher: Launcher,
    /// The job's id (Slurm job and step, Open MPI's job id), when known: it
    /// names a default rendezvous and derives a port.
    pub job_id: Option<String>,
}

impl fmt::Display for Rank {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rank {} of {} ({:?})",
            self.rank, self.size, self.launcher
        )
    }
}

impl Rank {
    /// The rank `vars` describe, as [`rank()`] computes it from the
    /// environment; `None` when they name no launcher or are inconsistent
    /// (a rank not below the size, a size of 0, a value that is not a
    /// number).
    ///
    /// Launchers are tried in this order: Open MPI, PMI (MPICH), Slurm,
    /// Kubernetes (so `mpirun` inside a Slurm allocation reports Open MPI's
    /// ranks, which are the processes it started).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiprocess::cluster::{Launcher, Rank};
    /// let r = Rank::from_vars([("SLURM_PROCID", "2"), ("SLURM_NTASKS", "4"), ("SLURM_JOB_ID", "77")]).unwrap();
    /// assert_eq!((r.rank, r.size, r.launcher), (2, 4, Launcher::Slurm));
    /// assert_eq!(Rank::from_vars([("HOME", "/root")]), None);
    /// assert_eq!(Rank::from_vars([("PMI_RANK", "4"), ("PMI_SIZE", "4")]), None);
    /// ```
    pub fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Option<Rank>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let map: std::collections::HashMap<String, String> = vars
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
            .collect();
        detect(&|k: &str| map.get(k).cloned())
    }
}

/// This process's rank and the job's size, as the launcher set them in the
/// environment; `None` outside a launcher.
///
/// Read from Open MPI (`OMPI_COMM_WORLD_RANK`, `OMPI_COMM_WORLD_SIZE`,
/// `OMPI_COMM_WORLD_LOCAL_RANK`/`_SIZE`), MPICH and other PMI launchers
/// (`PMI_RANK`, `PMI_SIZE`, `MPI_LOCALRANKID`, `MPI_LOCALNRANKS`), Slurm
/// (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`, `SLURMD_NODENAME`,
/// `SLURM_JOB_ID`, `SLURM_STEP_ID`) and a Kubernetes Indexed Job
/// (`JOB_COMPLETION_INDEX` with `MULTIPROCESS_WORLD_SIZE`). See
/// [`Rank::from_vars`] for the order.
///
/// Python/mpi4py: `MPI.COMM_WORLD.Get_rank()` / `Get_size()`.
///
/// # Examples
///
/// ```
/// use multiprocess as mp;
/// match mp::cluster::rank() {
///     Some(r) => println!("{r}"),
///     None => println!("not under a launcher"),
/// }
/// ```
pub fn rank() -> Option<Rank> {
    detect(&|k: &str| std::env::var(k).ok())
}

type Get<'a> = &'a dyn Fn(&str) -> Option<String>;

fn num(get: Get<'_>, key: &str) -> Option<usize> {
    get(key)?.trim().parse().ok()
}

fn detect(get: Get<'_>) -> Option<Rank> {
    let found = open_mpi(get)
        .or_else(|| pmi(get))
        .or_else(|| slurm(get))
        .or_else(|| kubernetes(get))?;
    let local_ok = match (found.local_rank, found.local_size) {
        (Some(r), Some(s)) => r < s && s <= found.size,
        _ => true,
    };
    (found.size > 0 && found.rank < found.size && local_ok).then_some(found)
}

fn open_mpi(get: Get<'_>) -> Option<Rank> {
    Some(Rank {
        rank: num(get, "OMPI_COMM_WORLD_RANK")?,
        size: num(get, "OMPI_COMM_WORLD_SIZE")?,
        local_rank: num(get, "OMPI_COMM_WORLD_LOCAL_RANK"),
        local_size: num(get, "OMPI_COMM_WORLD_LOCAL_SIZE"),
        host: get("PMIX_HOSTNAME").or_else(|| get("SLURMD_NODENAME")),
        launcher: Launcher::OpenMpi,
        job_id: get("OMPI_MCA_ess_base_jobid").or_else(|| get("PMIX_NAMESPACE")),
    })
}

fn pmi(get: Get<'_>) -> Option<Rank> {
    Some(Rank {
        rank: num(get, "PMI_RANK")?,
        size: num(get, "PMI_SIZE")?,
        local_rank: num(get, "MPI_LOCALRANKID"),
        local_size: num(get, "MPI_LOCALNRANKS"),
        host: get("SLURMD_NODENAME"),
        launcher: Launcher::Pmi,
        job_id: get("PMI_JOBID").or_else(|| slurm_job(get)),
    })
}

fn slurm_job(get: Get<'_>) -> Option<String> {
    let job = get("SLURM_JOB_ID").or_else(|| get("SLURM_JOBID"))?;
    Some(match get("SLURM_STEP_ID").or_else(|| get("SLURM_STEPID")) {
        Some(step) => format!("{job}.{step}"),
        None => job,
    })
}

fn slurm(get: Get<'_>) -> Option<Rank> {
    let size = num(get, "SLURM_NTASKS").or_else(|| num(get, "SLURM_NPROCS"))?;
    let one_node = num(get, "SLURM_STEP_NUM_NODES")
        .or_else(|| num(get, "SLURM_NNODES"))
        .is_some_and(|n| n == 1);
    Some(Rank {
        rank: num(get, "SLURM_PROCID")?,
        size,
        local_rank: num(get, "SLURM_LOCALID"),
        local_size: one_node.then_some(size),
        host: get("SLURMD_NODENAME"),
        launcher: Launcher::Slurm,
        job_id: slurm_job(get),
    })
}

fn kubernetes(get: Get<'_>) -> Option<Rank> {
    Some(Rank {
        rank: num(get, "JOB_COMPLETION_INDEX")?,
        size: num(get, "MULTIPROCESS_WORLD_SIZE")?,
        local_rank: None,
        local_size: None,
        host: get("HOSTNAME"),
        launcher: Launcher::Kubernetes,
        job_id: get("MULTIPROCESS_JOB_ID"),
    })
}

/// Why a task's argument cannot go to a remote worker.
pub(crate) const NOT_ACROSS_MACHINES_ARG: &str = "the task's argument holds a handle backed by this machine's \
     file descriptors or shared memory (a Value/Array/RawValue/RawArray, a Lock/RLock/Semaphore/\
     BoundedSemaphore/Event/Condition/Barrier, a Queue/SimpleQueue/JoinableQueue, a Connection, \
     SharedMemory), which cannot reach a worker on another machine; use the Manager equivalent \
     (manager.Value/Array/list/dict, manager.Lock/RLock/Semaphore/Event/Condition/Barrier, \
     manager.Queue) or a Listener/Client connection over TCP";

/// Why a task's result cannot come back from a remote worker.
pub(crate) const NOT_ACROSS_MACHINES_RESULT: &str = "the task's result holds a handle backed by the remote \
     machine's file descriptors or shared memory (a Value/Array, a lock, a Queue, a Connection, \
     SharedMemory), which cannot reach the pool on another machine; return plain data, or use \
     the Manager equivalent (manager.Value/Array/list/dict, manager.Lock, manager.Queue)";
