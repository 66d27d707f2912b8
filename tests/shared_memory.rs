//! `multiprocessing.shared_memory` across real processes, a real CPython, and
//! a program killed with SIGKILL.
//!
//! Ported from cpython: Lib/test/_test_multiprocessing.py (3.13, PSF licence):
//! _TestSharedMemory, processes only; tests named `test_...` after the one
//! they port. Changes: `IndexError`/`TypeError` become `Error::Value`;
//! `test_shared_memory_recreate` (a patched `_make_filename`) and the
//! SharedMemoryServer tests (no server process here) are not ported;
//! `test_shared_memory_cleaned_after_process_termination` kills every process
//! of a program, not one. The interop, attach-only and unprivileged tests are
//! ours.

#![allow(non_snake_case)] // test names keep CPython's (`test_shared_memory_ShareableList_basics`)

multiprocess::test_support!();
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{LONG, LeakCheck, SHORT, joined_ok, serial, shm_entries, start, within};
use mp::shared_memory::{Item, ShareableList, SharedMemory};
use multiprocess as mp;

/// Starts this process's tracker (a pipe fd that stays) before a leak check
/// takes its snapshot, and holds the file's lock.
fn checked() -> (std::sync::MutexGuard<'static, ()>, LeakCheck) {
    let s = serial();
    SharedMemory::create(None, 1).unwrap().unlink().unwrap();
    (s, LeakCheck::new())
}

fn exists(name: &str) -> bool {
    std::path::Path::new("/dev/shm").join(name).exists()
}

/// Runs `python3 -c script args...` and returns its stdout, asserting it
/// exited 0.
fn python(script: &str, args: &[&str]) -> String {
    let script = script.to_owned();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    within(LONG, "python3", move || {
        let out = Command::new("python3")
            .arg("-c")
            .arg(&script)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("python3 must be on PATH");
        assert!(
            out.status.success(),
            "python3 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    })
}

/// CPython before 3.13 registers a block it merely attaches to with its
/// resource tracker, which unlinks it when Python exits: the scripts hand
/// every block back with this (3.13's `track=False`).
const PY_PRELUDE: &str = "
import sys
from multiprocessing import shared_memory, resource_tracker
def untrack(shm):
    resource_tracker.unregister(shm._name, 'shared_memory')
";

// _TestSharedMemory

#[test]
fn test_shared_memory_basics() {
    let (_s, _leaks) = checked();
    let name = format!("test01_tsmb_{}", std::process::id());
    let mut sms = SharedMemory::create(Some(&name), 512).unwrap();
    assert_eq!(sms.name(), name);
    assert_eq!(sms.size(), 512);
    assert!(sms.size() >= 512);
    sms.as_mut_slice().unwrap()[0] = 42;
    assert_eq!(sms.as_slice().unwrap()[0], 42);
    // Another handle on the same name sees the same bytes.
    let mut also = SharedMemory::attach(&name).unwrap();
    assert_eq!(also.as_slice().unwrap()[0], 42);
    assert_eq!(also.size(), 512);
    also.close();
    // A name that exists cannot be created again (FileExistsError).
    let err = SharedMemory::create(Some(&name), 512).unwrap_err();
    assert!(matches!(&err, mp::Error::Io(e) if e.kind() == std::io::ErrorKind::AlreadyExists));
    // The leading '/' is CPython's business: `name` is as given.
    let slash = SharedMemory::attach(&format!("/{name}")).unwrap();
    assert_eq!(slash.name(), format!("/{name}"));
    assert_eq!(slash.as_slice().unwrap()[0], 42);
    // A random name is `psm_` and 8 hex digits.
    let rand = SharedMemory::create(None, 10).unwrap();
    assert_eq!(rand.name().len(), 12);
    assert!(rand.name().starts_with("psm_"));
    assert!(rand.name()[4..].chars().all(|c| c.is_ascii_hexdigit()));
    rand.unlink().unwrap();
    sms.close();
    assert!(matches!(sms.as_slice(), Err(mp::Error::Closed)));
    sms.unlink().unwrap();
    let err = SharedMemory::attach(&name).unwrap_err();
    assert!(matches!(&err, mp::Error::Io(e) if e.kind() == std::io::ErrorKind::NotFound));
    let err = sms.unlink().unwrap_err();
    assert!(matches!(&err, mp::Error::Io(e) if e.kind() == std::io::ErrorKind::NotFound));
}

#[test]
fn test_shared_memory_name_with_embedded_null() {
    let (_s, _leaks) = checked();
    for bad in ["a\0b", "", "/", "a/b", &"x".repeat(255)] {
        let err = SharedMemory::create(Some(bad), 8).unwrap_err();
        assert!(matches!(err, mp::Error::Value(_)), "{bad:?}: {err:?}");
        assert!(matches!(
            SharedMemory::attach(bad),
            Err(mp::Error::Value(_))
        ));
    }
}

#[test]
fn test_invalid_shared_memory_creation() {
    let (_s, _leaks) = checked();
    let err = SharedMemory::create(None, 0).unwrap_err();
    assert!(
        matches!(&err, mp::Error::Value(m) if m == "'size' must be a positive number different from zero")
    );
    // An empty block (made outside the API) cannot be attached to.
    let name = format!("mp_empty_{}", std::process::id());
    std::fs::File::create(format!("/dev/shm/{name}")).unwrap();
    let err = SharedMemory::attach(&name).unwrap_err();
    std::fs::remove_file(format!("/dev/shm/{name}")).unwrap();
    assert!(matches!(&err, mp::Error::Value(m) if m == "cannot mmap an empty file"));
}

#[test]
fn test_shared_memory_pickle_unpickle() {
    let (_s, _leaks) = checked();
    let mut sms = SharedMemory::create(None, 512).unwrap();
    sms.write_at(0, b"pickle").unwrap();
    let bytes = postcard::to_stdvec(&sms).unwrap();
    let mut back: SharedMemory = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back.name(), sms.name());
    assert_eq!(&back.as_slice().unwrap()[..6], b"pickle");
    back.write_at(0, b"P").unwrap();
    assert_eq!(sms.as_slice().unwrap()[0], b'P');
    assert!(!back.is_tracked());
    sms.unlink().unwrap();
    // A dead object: the name no longer attaches.
    assert!(postcard::from_bytes::<SharedMemory>(&bytes).is_err());
}

#[test]
fn test_shared_memory_across_processes() {
    let (_s, _leaks) = checked();
    let sms = SharedMemory::create(None, 512).unwrap();
    let name = sms.name().to_owned();
    // The child attaches by name, writes, and exits (never unlinking).
    let p = start(
        |name: String| {
            let mut shm = SharedMemory::attach(&name).unwrap();
            shm.write_at(0, b"howdy").unwrap();
        },
        name.clone(),
    );
    within(SHORT, "child", move || joined_ok(p));
    assert_eq!(&sms.as_slice().unwrap()[..5], b"howdy");
    assert!(exists(&name), "a process that attached unlinked the block");
    sms.unlink().unwrap();
}

#[test]
fn test_shared_memory_SharedMemoryManager_basics() {
    let (_s, _leaks) = checked();
    let smm = mp::SharedMemoryManager::new();
    let doppleganger_list0 = smm.shareable_list(&vec![Item::Int(0); 10]).unwrap();
    let doppleganger_shm0 = smm.shared_memory(32).unwrap();
    let names = [
        doppleganger_list0.shm().name().to_owned(),
        doppleganger_shm0.name().to_owned(),
    ];
    assert!(names.iter().all(|n| exists(n)));
    let held = ShareableList::attach(&names[0]).unwrap();
    assert_eq!(held.len(), 10);
    smm.shutdown().unwrap();
    assert!(names.iter().all(|n| !exists(n)));
    smm.shutdown().unwrap();
    // Dropping a manager shuts it down too.
    let name = {
        let smm = mp::SharedMemoryManager::new();
        smm.shared_memory(8).unwrap().name().to_owned()
    };
    assert!(!exists(&name));
}

#[test]
fn test_shared_memory_ShareableList_basics() {
    let (_s, _leaks) = checked();
    let items: Vec<Item> = vec![
        "howdy".into(),
        b"HoWdY".as_slice().into(),
        (-273.154).into(),
        100.into(),
        Item::None,
        true.into(),
        42.into(),
    ];
    let mut sl = ShareableList::new(&items).unwrap();
    assert_eq!(sl.format().unwrap(), "8s8sdqxxxxxx?xxxxxxxx?q");
    assert_eq!(sl.len(), 7);
    assert_eq!(sl.to_vec().unwrap(), items);
    assert_eq!(sl.index(&"howdy".into()).unwrap(), 0);
    assert_eq!(sl.index(&42.into()).unwrap(), 6);
    assert!(sl.index(&"nope".into()).is_err());
    assert_eq!(sl.count(&"howdy".into()).unwrap(), 1);
    // Exercise changes in place, of another type.
    sl.set(3, 42.into()).unwrap();
    assert_eq!(sl.get(3).unwrap(), Item::Int(42));
    assert_eq!(sl.count(&42.into()).unwrap(), 2);
    sl.set(4, "some".into()).unwrap(); // a None slot takes a short str
    assert_eq!(sl.format().unwrap(), "8s8sdq8sxxxxxxx?q");
    sl.set(0, "encodés".into()).unwrap();
    assert_eq!(sl.get(0).unwrap(), Item::Str("encodés".into()));
    assert_eq!(sl.format().unwrap(), "8s8sdq8sxxxxxxx?q");
    let err = sl.set(0, "exceeds available storage".into()).unwrap_err();
    assert!(matches!(&err, mp::Error::Value(m) if m == "bytes/str item exceeds available storage"));
    assert_eq!(sl.get(0).unwrap(), Item::Str("encodés".into()));
    sl.set(1, b"123456789".as_slice().into()).unwrap_err();
    sl.set(2, 1.5.into()).unwrap();
    assert_eq!(sl.get(2).unwrap(), Item::Float(1.5));
    assert!(matches!(sl.get(7), Err(mp::Error::Value(_))));
    assert!(matches!(sl.set(7, 1.into()), Err(mp::Error::Value(_))));
    // Another handle sees every change.
    let other = ShareableList::attach(sl.shm().name()).unwrap();
    assert_eq!(other.to_vec().unwrap(), sl.to_vec().unwrap());
    sl.shm().unlink().unwrap();
    // An empty list.
    let empty = ShareableList::new(&[]).unwrap();
    assert_eq!(empty.len(), 0);
    assert_eq!(empty.format().unwrap(), "");
    empty.shm().unlink().unwrap();
}

#[test]
fn test_shared_memory_ShareableList_pickling() {
    let (_s, _leaks) = checked();
    let sl = ShareableList::new(&[0.into(), 1.into(), 2.into()]).unwrap();
    let bytes = postcard::to_stdvec(&sl).unwrap();
    let mut back: ShareableList = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back.to_vec().unwrap(), sl.to_vec().unwrap());
    back.set(0, "~".into()).unwrap();
    assert_eq!(sl.get(0).unwrap(), Item::Str("~".into()));
    sl.shm().unlink().unwrap();
    assert!(postcard::from_bytes::<ShareableList>(&bytes).is_err());
}

#[test]
fn test_shared_memory_untracking() {
    let (_s, _leaks) = checked();
    // A program that creates a block, hands it off and ends: the block
    // outlives it (3.13's track=False; here the kill mode's `handed` block).
    let lines = run_program(&["kill"], true);
    let handed = value_of(&lines, "handed")[0].clone();
    let tracked = value_of(&lines, "tracked");
    wait_gone(&tracked, Duration::from_secs(2));
    assert!(exists(&handed));
    SharedMemory::attach(&handed).unwrap().unlink().unwrap();
}

#[test]
fn test_shared_memory_tracking() {
    let (_s, _leaks) = checked();
    // A block created and not handed off is unlinked when the program ends,
    // here normally (the `nobody` mode returns from main).
    let lines = run_program(&["nobody"], false);
    wait_gone(&value_of(&lines, "tracked"), Duration::from_secs(2));
}

/// CPython: test_shared_memory_cleaned_after_process_termination. Every
/// process of the program is killed with SIGKILL: the three tracked blocks
/// are gone within 2 s, the handed-off one stays, the tracker exits.
#[test]
fn test_shared_memory_cleaned_after_process_termination() {
    let (_s, _leaks) = checked();
    let lines = run_program(&["kill"], true);
    let tracked = value_of(&lines, "tracked");
    let handed = value_of(&lines, "handed")[0].clone();
    assert_eq!(tracked.len(), 3);
    wait_gone(&tracked, Duration::from_secs(2));
    assert!(exists(&handed));
    SharedMemory::attach(&handed).unwrap().unlink().unwrap();
    // The tracker, the last holder of its pipe, is gone too.
    let ours = own_pipes();
    let pipes: Vec<String> = value_of(&lines, "pipe")
        .into_iter()
        .filter(|p| !ours.contains(p))
        .collect();
    assert!(!pipes.is_empty());
    let deadline = Instant::now() + SHORT;
    while pipes.iter().any(|p| pipe_held(p)) {
        assert!(
            Instant::now() < deadline,
            "the tracker outlived the program"
        );
        std::thread::sleep(common::ms(20));
    }
}

#[test]
fn attach_only_never_unlinks() {
    let (_s, _leaks) = checked();
    let sms = SharedMemory::create(None, 16).unwrap();
    // Another program attaches (and has a tracker for a block of its own);
    // killing it unlinks its block, never ours.
    let lines = run_program(&["attach", sms.name(), "7"], true);
    wait_gone(&value_of(&lines, "tracked"), Duration::from_secs(2));
    assert!(exists(sms.name()));
    assert_eq!(sms.as_slice().unwrap()[0], 7);
    sms.unlink().unwrap();
}

/// The unprivileged path: a program running as `nobody` creates a tracked
/// block (its tracker runs as `nobody` too) and the block is unlinked when it
/// ends.
#[test]
fn unprivileged_program_is_cleaned_up() {
    let (_s, _leaks) = checked();
    let lines = run_program(&["nobody"], false);
    let uid: u32 = value_of(&lines, "uid")[0].parse().unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(uid, 65534);
    }
    wait_gone(&value_of(&lines, "tracked"), Duration::from_secs(2));
}

/// Runs the helper program with `args` until it prints `ready`; then with
/// `kill`, checks that the blocks it lists exist and SIGKILLs every process it
/// lists (`pid` lines) and reaps it; otherwise waits for it to exit 0.
/// Returns its lines.
fn run_program(args: &[&str], kill: bool) -> Vec<String> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    within(LONG, "the helper program", move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mp-test-shm-program"))
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = Vec::new();
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            if line == "ready" {
                break;
            }
            lines.push(line);
        }
        assert!(!lines.is_empty(), "the program printed nothing");
        // (A program that is not killed may already be gone.)
        if kill {
            for name in value_of(&lines, "tracked")
                .iter()
                .chain(&value_of(&lines, "handed"))
            {
                assert!(
                    exists(name),
                    "{name} is not in /dev/shm while the program runs"
                );
            }
        }
        if kill {
            let mut pids: Vec<i32> = value_of(&lines, "pid")
                .iter()
                .map(|p| p.parse().unwrap())
                .collect();
            if pids.is_empty() {
                pids.push(child.id() as i32);
            }
            for pid in pids {
                // SAFETY: a plain kill(2) of a process of the helper program.
                assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
            }
            let status = child.wait().unwrap();
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(libc::SIGKILL)
            );
        } else {
            assert!(child.wait().unwrap().success());
        }
        lines
    })
}

/// The values of the lines `key value`.
fn value_of(lines: &[String], key: &str) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix(' ').map(str::to_owned))
        .collect()
}

/// Waits up to `limit` for `names` to leave /dev/shm; fails the test if not.
fn wait_gone(names: &[String], limit: Duration) {
    assert!(!names.is_empty());
    let deadline = Instant::now() + limit;
    loop {
        let entries = shm_entries();
        let left: Vec<&String> = names.iter().filter(|n| entries.contains(*n)).collect();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still in /dev/shm after {limit:?}: {left:?}"
        );
        // Polling /dev/shm against a deadline: what the test measures.
        std::thread::sleep(common::ms(10));
    }
}

/// The pipe inodes this process holds.
fn own_pipes() -> Vec<String> {
    pipes_of("self")
}

fn pipes_of(pid: &str) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|t| {
            t.to_str().and_then(|t| {
                t.strip_prefix("pipe:[")?
                    .strip_suffix(']')
                    .map(str::to_owned)
            })
        })
        .collect()
}

/// True while any process holds the pipe `inode`.
fn pipe_held(inode: &str) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .any(|e| {
            pipes_of(&e.file_name().to_string_lossy())
                .iter()
                .any(|p| p == inode)
        })
}

// Interop with the local python3

#[test]
fn python_attaches_to_our_block() {
    let (_s, _leaks) = checked();
    let mut shm = SharedMemory::create(None, 8 * 1000).unwrap();
    for (i, x) in shm.view_mut::<f64>().unwrap().iter_mut().enumerate() {
        *x = i as f64 * 0.5;
    }
    let script = format!(
        "{PY_PRELUDE}
shm = shared_memory.SharedMemory(sys.argv[1])
untrack(shm)
print(shm.size, sum(shm.buf.cast('d')))
shm.buf[0:8] = memoryview(bytearray(8)).cast('B')
shm.buf[8:16] = __import__('struct').pack('d', -1.25)
shm.close()
"
    );
    let out = python(&script, &[shm.name()]);
    assert_eq!(out.trim(), "8000 249750.0");
    assert_eq!(shm.view::<f64>().unwrap()[1], -1.25);
    assert!(exists(shm.name()), "python unlinked our block");
    shm.unlink().unwrap();
}

#[test]
fn we_attach_to_a_python_block() {
    let (_s, _leaks) = checked();
    let script = format!(
        "{PY_PRELUDE}
shm = shared_memory.SharedMemory(create=True, size=10)
untrack(shm)
shm.buf[:10] = b'0123456789'
print(shm.name)
shm.close()
"
    );
    let name = python(&script, &[]).trim().to_owned();
    let mut shm = SharedMemory::attach(&name).unwrap();
    assert_eq!(shm.size(), 10);
    assert_eq!(shm.as_slice().unwrap(), b"0123456789");
    shm.write_at(0, b"ab").unwrap();
    let back = python(
        &format!(
            "{PY_PRELUDE}
shm = shared_memory.SharedMemory(sys.argv[1])
untrack(shm)
print(bytes(shm.buf[:10]).decode())
shm.close()
shm.unlink()
"
        ),
        &[&name],
    );
    assert_eq!(back.trim(), "ab23456789");
    assert!(!exists(&name));
}

/// The items both sides exchange: every type a ShareableList holds.
fn interop_items() -> Vec<Item> {
    vec![
        Item::Int(-7),
        Item::Int(i64::MAX),
        Item::Float(2.5),
        Item::Bool(true),
        Item::Bool(false),
        Item::Str("héllo".into()),
        Item::Str("a longer string of text".into()),
        Item::Bytes(b"ab\x00c".to_vec()),
        Item::None,
    ]
}

const PY_ITEMS: &str =
    "[-7, 2**63 - 1, 2.5, True, False, 'héllo', 'a longer string of text', b'ab\\x00c', None]";

#[test]
fn python_reads_and_writes_our_shareable_list() {
    let (_s, _leaks) = checked();
    let sl = ShareableList::new(&interop_items()).unwrap();
    let format = sl.format().unwrap();
    let script = format!(
        "{PY_PRELUDE}
sl = shared_memory.ShareableList(name=sys.argv[1])
untrack(sl.shm)
assert list(sl) == {PY_ITEMS}, list(sl)
print(sl.format)
sl[0] = 'py'
sl[2] = None
sl[3] = 12345
sl[5] = b'xy'
sl[8] = 0.125
sl.shm.close()
"
    );
    let out = python(&script, &[sl.shm().name()]);
    assert_eq!(out.trim(), format);
    let mut want = interop_items();
    want[0] = Item::Str("py".into());
    want[2] = Item::None;
    want[3] = Item::Int(12345);
    want[5] = Item::Bytes(b"xy".to_vec());
    want[8] = Item::Float(0.125);
    assert_eq!(sl.to_vec().unwrap(), want);
    sl.shm().unlink().unwrap();
}

#[test]
fn we_read_and_write_a_python_shareable_list() {
    let (_s, _leaks) = checked();
    let script = format!(
        "{PY_PRELUDE}
sl = shared_memory.ShareableList({PY_ITEMS})
untrack(sl.shm)
print(sl.shm.name)
print(sl.format)
sl.shm.close()
"
    );
    let out = python(&script, &[]);
    let mut lines = out.lines();
    let (name, format) = (lines.next().unwrap(), lines.next().unwrap());
    let mut sl = ShareableList::attach(name).unwrap();
    assert_eq!(sl.format().unwrap(), format);
    assert_eq!(sl.to_vec().unwrap(), interop_items());
    sl.set(0, "rust".into()).unwrap();
    sl.set(1, Item::None).unwrap();
    sl.set(2, false.into()).unwrap();
    sl.set(6, b"raw bytes".as_slice().into()).unwrap();
    sl.set(8, (-3).into()).unwrap();
    let back = python(
        &format!(
            "{PY_PRELUDE}
sl = shared_memory.ShareableList(name=sys.argv[1])
untrack(sl.shm)
print(repr(list(sl)))
sl.shm.close()
"
        ),
        &[name],
    );
    assert_eq!(
        back.trim(),
        "['rust', None, False, True, False, 'héllo', b'raw bytes', b'ab\\x00c', -3]"
    );
    sl.shm().unlink().unwrap();
}
