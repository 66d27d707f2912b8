//! How the ranks of an SPMD job find rank 0, and which key they share.
//!
//! Rank 0's address, first found wins:
//!
//! 1. `MULTIPROCESS_MASTER_ADDR=host:port`;
//! 2. `MASTER_ADDR` with `MASTER_PORT` (PyTorch's names; without a port, the
//!    job's derived port);
//! 3. `MULTIPROCESS_RENDEZVOUS=path`: rank 0 listens on a free port and writes
//!    `job-id\nhost:port\n` there (a shared file system); the others wait for
//!    the file;
//! 4. under Slurm, on several nodes: the first host of `SLURM_STEP_NODELIST`
//!    (or `SLURM_JOB_NODELIST`) and a port in 20000..40000 derived from the job
//!    id;
//! 5. every rank on this host (`local_size == size`): a rendezvous file in the
//!    temporary directory named after the job id, rank 0 on `127.0.0.1`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::Rank;
use crate::error::{Error, Result};

/// The default of `MULTIPROCESS_CLUSTER_TIMEOUT`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long ranks wait for each other: `MULTIPROCESS_CLUSTER_TIMEOUT`
/// seconds, default 60.
pub(crate) fn timeout() -> Duration {
    std::env::var("MULTIPROCESS_CLUSTER_TIMEOUT")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs_f64)
}

/// Where rank 0 is to be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Meeting {
    /// A fixed `host:port`; rank 0 listens on all interfaces at that port.
    Addr(String),
    /// A file rank 0 writes its address to; `local`: every rank is on this
    /// host, so rank 0 listens on loopback only.
    File { path: PathBuf, local: bool },
}

/// Where the ranks of `rank`'s job meet.
///
/// # Errors
///
/// [`Error::Value`] when nothing says (several hosts and no address, no file,
/// not Slurm).
pub(crate) fn meeting(rank: &Rank, get: &dyn Fn(&str) -> Option<String>) -> Result<Meeting> {
    if let Some(a) = get("MULTIPROCESS_MASTER_ADDR") {
        return Ok(Meeting::Addr(a));
    }
    if let Some(host) = get("MASTER_ADDR") {
        let port = match get("MASTER_PORT") {
            Some(p) => p,
            None => derived_port(rank).to_string(),
        };
        return Ok(Meeting::Addr(format!("{host}:{port}")));
    }
    if let Some(p) = get("MULTIPROCESS_RENDEZVOUS") {
        return Ok(Meeting::File {
            path: PathBuf::from(p),
            local: false,
        });
    }
    let local = rank.local_size == Some(rank.size);
    if !local && let Some(list) = get("SLURM_STEP_NODELIST").or_else(|| get("SLURM_JOB_NODELIST")) {
        if let Some(host) = first_host(&list) {
            return Ok(Meeting::Addr(format!("{host}:{}", derived_port(rank))));
        }
    }
    if local && let Some(job) = &rank.job_id {
        let name: String = job
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        return Ok(Meeting::File {
            path: std::env::temp_dir().join(format!("multiprocess-rendezvous-{name}.addr")),
            local: true,
        });
    }
    Err(Error::value(format!(
        "{rank}: rank 0's address is unknown; set MULTIPROCESS_MASTER_ADDR=host:port \
         (or MASTER_ADDR and MASTER_PORT), or MULTIPROCESS_RENDEZVOUS=<file on a shared file system>"
    )))
}

/// A port in 20000..40000 derived from the job id (FNV-1a), the same in
/// every rank.
pub(crate) fn derived_port(rank: &Rank) -> u16 {
    let id = rank.job_id.as_deref().unwrap_or("multiprocess");
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    20000 + (h % 20000) as u16
}

/// The first host of a Slurm host list: `node[03-05,9],gpu1` gives `node03`.
pub(crate) fn first_host(list: &str) -> Option<String> {
    let list = list.trim();
    let end = list.find([',', '[']).unwrap_or(list.len());
    let prefix = &list[..end];
    if list[end..].starts_with('[') {
        let inner = &list[end + 1..];
        let first = inner.split([',', '-', ']']).next()?;
        let suffix_start = inner.find(']').map(|i| end + 1 + i + 1)?;
        let suffix: String = list[suffix_start..]
            .chars()
            .take_while(|c| *c != ',')
            .collect();
        return Some(format!("{prefix}{first}{suffix}"));
    }
    (!prefix.is_empty()).then(|| prefix.to_string())
}

/// The key of an SPMD job: `MULTIPROCESS_AUTHKEY`/`_FILE` when set, else one
/// derived from the job id (not a secret: anyone who knows the job id can
/// compute it; set a key on a network you do not trust).
pub(crate) fn spmd_authkey(rank: &Rank) -> Result<Vec<u8>> {
    if let Some(k) = authkey_from_env()? {
        return Ok(k);
    }
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"multiprocess-spmd-authkey\0");
    h.update(rank.job_id.as_deref().unwrap_or("").as_bytes());
    h.update(rank.size.to_le_bytes());
    Ok(h.finalize().to_vec())
}

/// `MULTIPROCESS_AUTHKEY` (its bytes) or the contents of the file
/// `MULTIPROCESS_AUTHKEY_FILE` (one trailing newline dropped).
///
/// # Errors
///
/// [`Error::Io`] when the file cannot be read.
pub(crate) fn authkey_from_env() -> Result<Option<Vec<u8>>> {
    if let Some(k) = std::env::var_os("MULTIPROCESS_AUTHKEY") {
        use std::os::unix::ffi::OsStringExt;
        return Ok(Some(k.into_vec()));
    }
    if let Some(p) = std::env::var_os("MULTIPROCESS_AUTHKEY_FILE") {
        let mut k = std::fs::read(&p).map_err(|e| {
            Error::Io(std::io::Error::new(
                e.kind(),
                format!(
                    "MULTIPROCESS_AUTHKEY_FILE {}: {e}",
                    PathBuf::from(&p).display()
                ),
            ))
        })?;
        if k.last() == Some(&b'\n') {
            k.pop();
        }
        return Ok(Some(k));
    }
    Ok(None)
}

/// Rank 0: writes `job\naddr\n` to `path` (a temporary file renamed into
/// place, so a reader never sees half of it).
pub(crate) fn publish(path: &std::path::Path, job: &str, addr: &str) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, format!("{job}\n{addr}\n"))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::from(e)
    })
}

/// Ranks above 0: waits until `path` names rank 0's address for `job`.
///
/// # Errors
///
/// [`Error::Timeout`] past `deadline`.
pub(crate) fn wait_published(
    path: &std::path::Path,
    job: &str,
    deadline: Instant,
) -> Result<String> {
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            let mut lines = text.lines();
            if lines.next() == Some(job)
                && let Some(addr) = lines.next()
            {
                return Ok(addr.to_string());
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout);
        }
        // Polling a file another machine writes: nothing to wait on.
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_host_of_slurm_lists() {
        assert_eq!(first_host("node[03-05,9],gpu1").as_deref(), Some("node03"));
        assert_eq!(first_host("a,b").as_deref(), Some("a"));
        assert_eq!(first_host("single").as_deref(), Some("single"));
        assert_eq!(first_host(""), None);
    }
}
