//! The build id a remote worker must share with its pool: a SHA-256 of the
//! executable's contents. Across machines the binary is a copy (another inode,
//! another mtime), so the start-up fingerprint of local children, which looks
//! at the file's identity, cannot be used; the contents can.

use std::io::Read;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// SHA-256 of `/proc/self/exe`, computed once per process (a few hundred
/// milliseconds for a large debug binary); all zeros if the file cannot be
/// read, which then matches no real build.
pub(crate) fn build_id() -> [u8; 32] {
    static ID: OnceLock<[u8; 32]> = OnceLock::new();
    *ID.get_or_init(|| hash_file("/proc/self/exe").unwrap_or([0; 32]))
}

fn hash_file(path: &str) -> std::io::Result<[u8; 32]> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&h.finalize());
    Ok(out)
}

/// The first bytes of a build id in hex, for messages.
pub(crate) fn short(id: &[u8]) -> String {
    id.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_id_is_stable_and_not_zero() {
        assert_eq!(build_id(), build_id());
        assert_ne!(build_id(), [0; 32]);
        assert_eq!(short(&[0xab, 0x01, 2, 3, 4, 5, 6]), "ab0102030405");
    }
}
