//! `mp::cluster`: rank detection, pools whose workers connect over TCP
//! (`listen`, `cluster`), their checks (authkey, build), lost workers, and
//! real launchers (`mpirun`) and networks (`ip netns`).
//!
//! Workers are this test binary started again with `MULTIPROCESS_CONNECT`:
//! `test_support!()` runs `mp::init()` before the harness, which makes them
//! workers.

multiprocess::test_support!();

mod common;

use common::{LONG, LeakCheck, SHORT, serial, within};
use mp::cluster::{Launcher, Rank};
use multiprocess as mp;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};

// ---------------------------------------------------------------------------
// Environment detection

#[test]
fn rank_open_mpi() {
    let r = Rank::from_vars([
        ("OMPI_COMM_WORLD_RANK", "3"),
        ("OMPI_COMM_WORLD_SIZE", "4"),
        ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
        ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
        ("OMPI_MCA_ess_base_jobid", "793903105"),
        ("PMIX_HOSTNAME", "node7"),
    ])
    .unwrap();
    assert_eq!((r.rank, r.size, r.launcher), (3, 4, Launcher::OpenMpi));
    assert_eq!((r.local_rank, r.local_size), (Some(1), Some(2)));
    assert_eq!(r.host.as_deref(), Some("node7"));
    assert_eq!(r.job_id.as_deref(), Some("793903105"));
}

#[test]
fn rank_pmi() {
    let r = Rank::from_vars([
        ("PMI_RANK", "0"),
        ("PMI_SIZE", "8"),
        ("MPI_LOCALRANKID", "0"),
        ("MPI_LOCALNRANKS", "4"),
    ])
    .unwrap();
    assert_eq!((r.rank, r.size, r.launcher), (0, 8, Launcher::Pmi));
    assert_eq!(r.local_size, Some(4));
}

#[test]
fn rank_slurm() {
    let r = Rank::from_vars([
        ("SLURM_PROCID", "5"),
        ("SLURM_NTASKS", "6"),
        ("SLURM_LOCALID", "2"),
        ("SLURM_JOB_ID", "4242"),
        ("SLURM_STEP_ID", "0"),
        ("SLURM_STEP_NUM_NODES", "2"),
        ("SLURM_STEP_NODELIST", "node[03-04]"),
        ("SLURMD_NODENAME", "node04"),
    ])
    .unwrap();
    assert_eq!((r.rank, r.size, r.launcher), (5, 6, Launcher::Slurm));
    assert_eq!((r.local_rank, r.local_size), (Some(2), None));
    assert_eq!(r.job_id.as_deref(), Some("4242.0"));
    assert_eq!(r.host.as_deref(), Some("node04"));
    // One node: every task is local.
    let one = Rank::from_vars([
        ("SLURM_PROCID", "0"),
        ("SLURM_NPROCS", "3"),
        ("SLURM_NNODES", "1"),
    ])
    .unwrap();
    assert_eq!((one.size, one.local_size), (3, Some(3)));
}

#[test]
fn rank_kubernetes_indexed_job() {
    let r = Rank::from_vars([
        ("JOB_COMPLETION_INDEX", "2"),
        ("MULTIPROCESS_WORLD_SIZE", "4"),
        ("HOSTNAME", "cluster-map-2"),
    ])
    .unwrap();
    assert_eq!((r.rank, r.size, r.launcher), (2, 4, Launcher::Kubernetes));
    assert_eq!(r.host.as_deref(), Some("cluster-map-2"));
    // The index alone gives no size: not a rank.
    assert_eq!(Rank::from_vars([("JOB_COMPLETION_INDEX", "2")]), None);
}

#[test]
fn rank_none_outside_a_launcher_or_inconsistent() {
    assert_eq!(Rank::from_vars([("PATH", "/usr/bin")]), None);
    assert_eq!(Rank::from_vars::<&str, &str>([]), None);
    assert_eq!(
        Rank::from_vars([("OMPI_COMM_WORLD_RANK", "4"), ("OMPI_COMM_WORLD_SIZE", "4")]),
        None
    );
    assert_eq!(
        Rank::from_vars([("SLURM_PROCID", "x"), ("SLURM_NTASKS", "4")]),
        None
    );
    assert_eq!(
        Rank::from_vars([("PMI_RANK", "0"), ("PMI_SIZE", "0")]),
        None
    );
    // Open MPI wins over the Slurm allocation it runs in.
    let r = Rank::from_vars([
        ("OMPI_COMM_WORLD_RANK", "1"),
        ("OMPI_COMM_WORLD_SIZE", "2"),
        ("SLURM_PROCID", "0"),
        ("SLURM_NTASKS", "1"),
    ])
    .unwrap();
    assert_eq!((r.rank, r.launcher), (1, Launcher::OpenMpi));
}

#[test]
fn rank_of_this_test_process_is_none() {
    // The test harness runs outside any launcher (CI included).
    if std::env::var_os("OMPI_COMM_WORLD_RANK").is_none()
        && std::env::var_os("SLURM_PROCID").is_none()
        && std::env::var_os("PMI_RANK").is_none()
    {
        assert_eq!(mp::cluster::rank(), None);
    }
}

// ---------------------------------------------------------------------------
// Helpers: remote workers as plain child processes

/// A remote worker process: killed and reaped on drop.
struct Worker(Option<Child>);

impl Worker {
    /// This test binary, told to connect to `addr` with `key`.
    fn start(addr: SocketAddr, key: &str) -> Worker {
        Worker::start_program(std::env::current_exe().unwrap(), &[], addr, key, "30")
    }

    /// `program` (with `prefix` before it, e.g. `ip netns exec ns`) as a
    /// worker of `addr`.
    /// `timeout`: how long it tries to reach the pool, in seconds.
    fn start_program(
        program: PathBuf,
        prefix: &[&str],
        addr: SocketAddr,
        key: &str,
        timeout: &str,
    ) -> Worker {
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        let child = cmd
            .env("MULTIPROCESS_CONNECT", addr.to_string())
            .env("MULTIPROCESS_AUTHKEY", key)
            .env("MULTIPROCESS_CLUSTER_TIMEOUT", timeout)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a worker");
        Worker(Some(child))
    }

    fn pid(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Waits for it to exit: its status and stderr.
    fn finish(mut self) -> (ExitStatus, String) {
        let child = self.0.take().unwrap();
        let out: Output = within(SHORT, "a worker exits", move || {
            child.wait_with_output().unwrap()
        });
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

const KEY: &str = "cluster-test-key";

fn local_pool(slots: usize) -> (mp::Pool, SocketAddr) {
    let pool = mp::Pool::builder()
        .processes(slots)
        .listen("127.0.0.1:0", KEY)
        .unwrap();
    let addr = pool.listen_address().unwrap();
    (pool, addr)
}

fn square_pid(x: u64) -> (u64, u32) {
    (x * x, std::process::id())
}

// ---------------------------------------------------------------------------
// listen: workers started by anything

#[test]
fn listen_workers_serve_a_map() {
    let _s = serial();
    let leaks = LeakCheck::new();
    within(LONG, "a map served by two remote workers", || {
        let (pool, addr) = local_pool(2);
        let w1 = Worker::start(addr, KEY);
        let w2 = Worker::start(addr, KEY);
        let out = pool.map_with_chunksize(square_pid, 0..200u64, 5).unwrap();
        let squares: Vec<u64> = out.iter().map(|(v, _)| *v).collect();
        assert_eq!(squares, (0..200u64).map(|x| x * x).collect::<Vec<_>>());
        let pids: BTreeSet<u32> = out.iter().map(|(_, p)| *p).collect();
        let workers: BTreeSet<u32> = [w1.pid(), w2.pid()].into();
        assert!(
            pids.is_subset(&workers),
            "{pids:?} not served by {workers:?}"
        );
        assert!(!pids.contains(&std::process::id()));
        // A panic in a remote task comes back as it does from a local worker.
        match pool.apply(|_: ()| -> u8 { panic!("remote boom") }, ()) {
            Err(mp::Error::Remote { message, .. }) => assert_eq!(message, "remote boom"),
            other => panic!("{other:?}"),
        }
        pool.close();
        pool.join().unwrap();
        // The pool hung up: both workers end, with 0.
        for w in [w1, w2] {
            let (st, err) = w.finish();
            assert_eq!(st.code(), Some(0), "{err}");
        }
    });
    leaks.check();
}

#[test]
fn listen_initializer_runs_in_remote_workers() {
    let _s = serial();
    let leaks = LeakCheck::new();
    within(LONG, "an initializer in a remote worker", || {
        static INIT_ARG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        fn set_env(v: String) {
            let _ = INIT_ARG.set(v);
        }
        let pool = mp::Pool::builder()
            .processes(1)
            .initializer(set_env, "from-init".to_string())
            .listen("127.0.0.1:0", KEY)
            .unwrap();
        let w = Worker::start(pool.listen_address().unwrap(), KEY);
        let got = pool
            .apply(|_: ()| INIT_ARG.get().cloned().unwrap_or_default(), ())
            .unwrap();
        assert_eq!(got, "from-init");
        drop(pool);
        let (st, _) = w.finish();
        assert_eq!(st.code(), Some(0));
    });
    leaks.check();
}

/// Not a test on its own: the pool side of
/// `listen_refuses_wrong_key_and_other_build`, which runs it (`--ignored`) in
/// a child of this test binary so that its stderr can be read.
#[test]
#[ignore = "run by listen_refuses_wrong_key_and_other_build"]
fn helper_listen_pool() {
    let key = std::env::var("CLUSTER_HELPER_KEY")
        .expect("run by listen_refuses_wrong_key_and_other_build");
    let pool = mp::Pool::builder()
        .processes(1)
        .listen("127.0.0.1:0", key)
        .unwrap();
    println!("ADDR {}", pool.listen_address().unwrap());
    let mut rest = String::new();
    let _ = std::io::stdin().read_to_string(&mut rest);
    // A good worker still gets in after the refused ones.
    if let Some(line) = rest.lines().find(|l| l.starts_with("EXPECT ")) {
        let n: u64 = line[7..].trim().parse().unwrap();
        assert_eq!(pool.apply(|x: u64| x + 1, n).unwrap(), n + 1);
    }
    pool.close();
    pool.join().unwrap();
}

#[test]
fn listen_refuses_wrong_key_and_other_build() {
    let _s = serial();
    let leaks = LeakCheck::new();
    within(LONG, "refusals", || {
        let mut helper = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "helper_listen_pool",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CLUSTER_HELPER_KEY", KEY)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(helper.stdout.take().unwrap()).lines();
        let addr: SocketAddr = loop {
            let line = lines
                .next()
                .expect("the helper printed its address")
                .unwrap();
            // The harness prints "test helper_listen_pool ... " before it.
            if let Some((_, a)) = line.split_once("ADDR ") {
                break a.parse().unwrap();
            }
        };
        // Another key: refused by the handshake, on both sides.
        let (st, err) = Worker::start(addr, "not-the-key").finish();
        assert_eq!(st.code(), Some(3), "{err}");
        assert!(
            err.contains("refused this worker") && err.contains("authentication"),
            "{err}"
        );
        // Another build: refused by the build check.
        let other = PathBuf::from(env!("CARGO_BIN_EXE_mp-test-other-build"));
        let (st, err) = Worker::start_program(other, &[], addr, KEY, "30").finish();
        assert_eq!(st.code(), Some(3), "{err}");
        assert!(err.contains("another build"), "{err}");
        // No key at all: the worker says what is missing, without connecting.
        let out = Command::new(std::env::current_exe().unwrap())
            .env("MULTIPROCESS_CONNECT", addr.to_string())
            .env_remove("MULTIPROCESS_AUTHKEY")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert!(String::from_utf8_lossy(&out.stderr).contains("MULTIPROCESS_AUTHKEY"));
        // A good worker still joins.
        let good = Worker::start(addr, KEY);
        let mut stdin = helper.stdin.take().unwrap();
        std::io::Write::write_all(&mut stdin, b"EXPECT 41\n").unwrap();
        drop(stdin);
        let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
        let mut pool_err = String::new();
        helper
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut pool_err)
            .unwrap();
        let st = helper.wait().unwrap();
        assert!(st.success(), "{rest:?} {pool_err}");
        assert!(
            pool_err.contains("pool refused a worker from 127.0.0.1")
                && pool_err.contains("another authkey"),
            "{pool_err}"
        );
        assert!(pool_err.contains("another build"), "{pool_err}");
        let (st, _) = good.finish();
        assert_eq!(st.code(), Some(0));
    });
    leaks.check();
}

#[test]
fn worker_killed_mid_map_fails_only_its_chunk() {
    let _s = serial();
    let leaks = LeakCheck::new();
    within(LONG, "a remote worker killed mid-map", || {
        let (pool, addr) = local_pool(2);
        let w1 = Worker::start(addr, KEY);
        let w2 = Worker::start(addr, KEY);
        fn step(x: u64) -> (u64, u32) {
            if x == 20 {
                // SIGKILL this worker in the middle of its task.
                let _ = std::process::Command::new("kill")
                    .args(["-9", &std::process::id().to_string()])
                    .status();
                std::thread::sleep(std::time::Duration::from_secs(30));
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
            (x * 3, std::process::id())
        }
        let results: Vec<mp::Result<(u64, u32)>> = pool
            .imap_with_chunksize(step, 0..60u64, 1)
            .unwrap()
            .collect();
        assert_eq!(results.len(), 60);
        for (x, r) in results.iter().enumerate() {
            match r {
                Ok((v, _)) => assert_eq!(*v, x as u64 * 3),
                Err(mp::Error::WorkerLost { .. }) => assert_eq!(x, 20, "only item 20 is lost"),
                Err(e) => panic!("item {x}: {e:?}"),
            }
        }
        assert!(matches!(results[20], Err(mp::Error::WorkerLost { .. })));
        drop(pool);
        let (s1, _) = w1.finish();
        let (s2, _) = w2.finish();
        use std::os::unix::process::ExitStatusExt;
        let killed = [s1, s2].iter().filter(|s| s.signal() == Some(9)).count();
        assert_eq!(killed, 1, "{s1:?} {s2:?}");
    });
    leaks.check();
}

#[test]
fn workers_join_and_leave_while_running() {
    let _s = serial();
    let leaks = LeakCheck::new();
    within(LONG, "join and leave", || {
        let (pool, addr) = local_pool(3);
        let w1 = Worker::start(addr, KEY);
        fn slow(x: u64) -> (u64, u32) {
            std::thread::sleep(std::time::Duration::from_millis(10));
            (x + 1000, std::process::id())
        }
        let mut it = pool.imap_with_chunksize(slow, 0..80u64, 1).unwrap();
        let mut got = Vec::new();
        let mut w2 = None;
        let mut left = false;
        for (i, r) in it.by_ref().enumerate() {
            got.push(r);
            if i == 10 {
                w2 = Some(Worker::start(addr, KEY));
            }
            // Once the second worker served something, the first leaves.
            let w2_served = w2
                .as_ref()
                .is_some_and(|w| got.iter().any(|r| matches!(r, Ok((_, p)) if *p == w.pid())));
            if w2_served && !left {
                w1.signal("-KILL");
                left = true;
            }
        }
        assert!(left, "the second worker never served");
        let w2 = w2.unwrap();
        let mut lost = 0;
        for (x, r) in got.iter().enumerate() {
            match r {
                Ok((v, _)) => assert_eq!(*v, x as u64 + 1000),
                Err(mp::Error::WorkerLost { .. }) => lost += 1,
                Err(e) => panic!("item {x}: {e:?}"),
            }
        }
        assert!(lost <= 1, "{lost} tasks lost to one leaving worker");
        // After the leave, the joined worker serves alone.
        let (_, pid) = pool.apply(slow, 1).unwrap();
        assert_eq!(pid, w2.pid());
        pool.close();
        pool.join().unwrap();
        let (st, _) = w2.finish();
        assert_eq!(st.code(), Some(0));
        let (st, _) = w1.finish();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(9));
    });
    leaks.check();
}

#[test]
fn shared_memory_and_locks_cannot_go_remote() {
    let _s = serial();
    let leaks = LeakCheck::new();
    within(LONG, "fd-backed arguments to a remote worker", || {
        let (pool, addr) = local_pool(1);
        let w = Worker::start(addr, KEY);
        let v = mp::Value::new(5i32).unwrap();
        match pool.apply(|_: mp::Value<i32>| 0u8, v) {
            Err(mp::Error::Encode(m)) => assert!(m.contains("manager.Value"), "{m}"),
            other => panic!("{other:?}"),
        }
        let lock = mp::Lock::new().unwrap();
        match pool.apply(|_: mp::Lock| 0u8, lock) {
            Err(mp::Error::Encode(m)) => assert!(m.contains("manager.Lock"), "{m}"),
            other => panic!("{other:?}"),
        }
        // Plain data still goes.
        assert_eq!(pool.apply(|x: i32| x * 2, 21).unwrap(), 42);
        drop(pool);
        let (st, _) = w.finish();
        assert_eq!(st.code(), Some(0));
    });
    leaks.check();
}

// ---------------------------------------------------------------------------
// SPMD under a launcher

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name)
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[test]
fn mpirun_cluster_map_is_served_by_three_ranks() {
    let _s = serial();
    if !have("mpirun") {
        // CI installs it (.ci/run): there, a skip would hide the test.
        assert!(
            std::env::var_os("CI").is_none(),
            "mpirun is missing under CI (.ci/run installs openmpi-bin)"
        );
        println!("skipped: mpirun is not installed (apt-get install openmpi-bin)");
        return;
    }
    let out = within(LONG, "mpirun -n 4 cluster_map", || {
        Command::new("mpirun")
            .args(["--oversubscribe", "-n", "4"])
            .arg(example("cluster_map"))
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .output()
            .unwrap()
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().last(),
        Some("sum = 332833500 from 3 workers on 1 hosts"),
        "{stdout}"
    );
}

#[test]
fn cluster_names_the_ranks_that_never_came() {
    let _s = serial();
    let job = format!("test-missing-{}", std::process::id());
    let out = within(LONG, "rank 0 alone", move || {
        Command::new(example("cluster_map"))
            .env("OMPI_COMM_WORLD_RANK", "0")
            .env("OMPI_COMM_WORLD_SIZE", "3")
            .env("OMPI_COMM_WORLD_LOCAL_RANK", "0")
            .env("OMPI_COMM_WORLD_LOCAL_SIZE", "3")
            .env("OMPI_MCA_ess_base_jobid", &job)
            .env("MULTIPROCESS_CLUSTER_TIMEOUT", "1")
            .output()
            .unwrap()
    });
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("rank(s) 1, 2 of 3 did not join"), "{err}");
    let file = std::env::temp_dir().join(format!(
        "multiprocess-rendezvous-test_missing_{}.addr",
        std::process::id()
    ));
    assert!(!file.exists(), "the rendezvous file is removed");
}

#[test]
fn cluster_outside_a_launcher_is_a_local_pool() {
    let _s = serial();
    let out = within(LONG, "cluster_map without a launcher", || {
        Command::new(example("cluster_map")).output().unwrap()
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("not under a launcher"));
    assert_eq!(
        stdout.lines().last(),
        Some("sum = 332833500 from 3 workers on 1 hosts")
    );
}

// ---------------------------------------------------------------------------
// Across a network: workers in their own network namespaces

/// Network namespaces and veth pairs of one test, removed on drop (also when
/// the test fails).
struct Netns {
    names: Vec<String>,
    links: Vec<String>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Netns {
    fn drop(&mut self) {
        for l in &self.links {
            let _ = Command::new("ip").args(["link", "del", l]).output();
        }
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

#[test]
fn workers_in_other_network_namespaces_reach_the_pool_over_veth() {
    let _s = serial();
    // The effective uid, from /proc (the tests do not depend on libc).
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    if !root {
        println!("skipped: creating network namespaces needs root (CI runs as root)");
        return;
    }
    if !have("ip") {
        assert!(
            std::env::var_os("CI").is_none(),
            "`ip` is missing under CI (.ci/run installs iproute2)"
        );
        println!("skipped: `ip` (iproute2) is not installed");
        return;
    }
    let leaks = LeakCheck::new();
    let tag = std::process::id() % 10000;
    let subnet = 100 + (std::process::id() % 100);
    let mut net = Netns {
        names: Vec::new(),
        links: Vec::new(),
    };
    for i in 1..=2u32 {
        let ns = format!("mpt{tag}n{i}");
        let host_if = format!("mpt{tag}h{i}");
        let ns_if = format!("mpt{tag}w{i}");
        ip(&["netns", "add", &ns]);
        net.names.push(ns.clone());
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        net.links.push(host_if.clone());
        ip(&["link", "set", &ns_if, "netns", &ns]);
        ip(&[
            "addr",
            "add",
            &format!("10.{subnet}.{i}.1/24"),
            "dev",
            &host_if,
        ]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&[
            "netns",
            "exec",
            &ns,
            "ip",
            "addr",
            "add",
            &format!("10.{subnet}.{i}.2/24"),
            "dev",
            &ns_if,
        ]);
        ip(&["netns", "exec", &ns, "ip", "link", "set", &ns_if, "up"]);
        ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
    }
    let names = net.names.clone();
    within(LONG, "a map over veth", move || {
        // The pool listens on every interface; each worker only has a route to
        // its own veth peer's address.
        let pool = mp::Pool::builder()
            .processes(2)
            .listen("0.0.0.0:0", KEY)
            .unwrap();
        let port = pool.listen_address().unwrap().port();
        let exe = std::env::current_exe().unwrap();
        let workers: Vec<Worker> = (1..=2u32)
            .map(|i| {
                let addr: SocketAddr = format!("10.{subnet}.{i}.1:{port}").parse().unwrap();
                let ns = names[i as usize - 1].as_str();
                Worker::start_program(exe.clone(), &["ip", "netns", "exec", ns], addr, KEY, "30")
            })
            .collect();
        // A worker in a namespace cannot reach the pool's loopback.
        let lo: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let (st, err) = Worker::start_program(
            exe.clone(),
            &["ip", "netns", "exec", &names[0]],
            lo,
            KEY,
            "1",
        )
        .finish();
        assert_eq!(st.code(), Some(4), "{err}");
        let out = pool.map_with_chunksize(square_pid, 0..300u64, 5).unwrap();
        let sum: u64 = out.iter().map(|(v, _)| v).sum();
        assert_eq!(sum, (0..300u64).map(|x| x * x).sum::<u64>());
        let pids: BTreeSet<u32> = out.iter().map(|(_, p)| *p).collect();
        assert!(!pids.contains(&std::process::id()));
        pool.close();
        pool.join().unwrap();
        for w in workers {
            let (st, err) = w.finish();
            assert_eq!(st.code(), Some(0), "{err}");
        }
    });
    drop(net);
    leaks.check();
}

/// Starts `size` copies of examples/cluster_map with `env(rank)` as their
/// environment (a launcher by hand) and returns rank 0's stdout; every copy
/// must exit 0.
fn launch_by_hand(size: usize, env: impl Fn(usize) -> Vec<(String, String)>) -> String {
    let mut ranks: Vec<Child> = (0..size)
        .rev() // the workers first: they wait for rank 0
        .map(|r| {
            Command::new(example("cluster_map"))
                .envs(env(r))
                .env("MULTIPROCESS_CLUSTER_TIMEOUT", "60")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    ranks.reverse();
    let outs: Vec<Output> = within(LONG, "ranks started by hand", move || {
        ranks
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect()
    });
    for (r, o) in outs.iter().enumerate() {
        assert!(
            o.status.success(),
            "rank {r}: {:?} {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
    }
    String::from_utf8_lossy(&outs[0].stdout).into_owned()
}

fn vars(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[test]
fn spmd_meets_at_master_addr() {
    let _s = serial();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let stdout = launch_by_hand(3, |r| {
        vars(&[
            ("PMI_RANK", r.to_string()),
            ("PMI_SIZE", "3".into()),
            ("MULTIPROCESS_MASTER_ADDR", format!("127.0.0.1:{port}")),
            ("MULTIPROCESS_AUTHKEY", "by-hand".into()),
        ])
    });
    assert!(stdout.contains("rank 0 of 3 (Pmi)"), "{stdout}");
    assert_eq!(
        stdout.lines().last(),
        Some("sum = 332833500 from 2 workers on 1 hosts")
    );
}

#[test]
fn spmd_slurm_meets_at_the_first_node_of_the_step() {
    let _s = serial();
    let job = format!("9{}", std::process::id());
    // Two "nodes", both this machine: not all local, so the ranks meet at the
    // first host of the node list on the port derived from the job id.
    let stdout = launch_by_hand(3, |r| {
        vars(&[
            ("SLURM_PROCID", r.to_string()),
            ("SLURM_NTASKS", "3".into()),
            ("SLURM_JOB_ID", job.clone()),
            ("SLURM_STEP_ID", "0".into()),
            ("SLURM_STEP_NUM_NODES", "2".into()),
            ("SLURM_STEP_NODELIST", "localhost,localhost".into()),
        ])
    });
    assert!(stdout.contains("rank 0 of 3 (Slurm)"), "{stdout}");
    assert_eq!(
        stdout.lines().last(),
        Some("sum = 332833500 from 2 workers on 1 hosts")
    );
}

#[test]
fn spmd_meets_through_a_rendezvous_file() {
    let _s = serial();
    let file = std::env::temp_dir().join(format!("mp-cluster-test-{}.addr", std::process::id()));
    let path = file.to_string_lossy().into_owned();
    let stdout = launch_by_hand(3, |r| {
        vars(&[
            ("OMPI_COMM_WORLD_RANK", r.to_string()),
            ("OMPI_COMM_WORLD_SIZE", "3".into()),
            (
                "OMPI_MCA_ess_base_jobid",
                format!("rdv{}", std::process::id()),
            ),
            ("MULTIPROCESS_RENDEZVOUS", path.clone()),
            ("MULTIPROCESS_ADVERTISE_ADDR", "127.0.0.1".into()),
        ])
    });
    assert_eq!(
        stdout.lines().last(),
        Some("sum = 332833500 from 2 workers on 1 hosts")
    );
    assert!(!file.exists(), "rank 0 removes the rendezvous file");
}
