//! Wire compatibility with CPython: a real `python3` as the peer of our
//! `Listener` and `Client`, with right and wrong authkeys, bytes and pickles
//! both ways, big messages, a peer that disconnects mid-message, and bad input
//! from a raw socket (garbage, truncated frames, huge declared lengths).
//!
//! Scenarios ported from `cpython: Lib/test/_test_multiprocessing.py`
//! (PSF licence), changed so that one side is Rust and the other CPython:
//! // CPython: _TestListenerClient.test_listener_client
//! // CPython: _TestListener.test_abstract_socket
//! // CPython: _TestConnection.test_connection (send_bytes / send / big messages)
//! // CPython: _TestConnection.test_missing_fd_transfer (bad frames: our own)
//! // CPython: OtherTest.test_deliver_challenge_auth_failure
//! // CPython: OtherTest.test_answer_challenge_auth_failure
//! // CPython: ChallengeResponseTest (3.12: legacy and {sha256} forms)

multiprocess::test_support!();
mod common;

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::{serial, within, LeakCheck, LONG, SHORT};
use mp::connection::{Address, Client, Listener};
use multiprocess as mp;
use serde_bytes::ByteBuf;

/// Helpers every Python snippet starts with: `addr(arg)` turns our
/// address argument into a Python one, `KEY` is the authkey from argv[2].
const PRELUDE: &str = r#"
import sys, struct, socket, hmac, os
from multiprocessing.connection import Client, Listener, Connection, AuthenticationError
def addr(s):
    kind, _, rest = s.partition(':')
    if kind == 'tcp':
        host, _, port = rest.rpartition(':')
        return (host, int(port))
    if kind == 'abs':
        return '\0' + rest
    return rest
def fmt_addr(a):
    if isinstance(a, tuple):
        return 'tcp:%s:%d' % a
    if isinstance(a, bytes) or a.startswith('\0'):
        a = a.decode() if isinstance(a, bytes) else a
        return 'abs:' + a[1:]
    return 'unix:' + a
ADDR = addr(sys.argv[1])
KEY = bytes.fromhex(sys.argv[2])
def raw_socket():
    if isinstance(ADDR, tuple):
        return socket.create_connection(ADDR)
    s = socket.socket(socket.AF_UNIX)
    s.connect(ADDR)
    return s
"#;

/// Our address as the snippets' first argument.
fn py_addr(a: &Address) -> String {
    match a {
        Address::Tcp(s) => format!("tcp:{}:{}", s.ip(), s.port()),
        Address::Unix(p) => format!("unix:{}", p.display()),
        Address::Abstract(n) => format!("abs:{n}"),
    }
}

/// The snippets' address argument back as ours.
fn parse_py_addr(s: &str) -> Address {
    let (kind, rest) = s.trim().split_once(':').expect("kind:address");
    match kind {
        "tcp" => Address::Tcp(rest.parse().expect("host:port")),
        "abs" => Address::Abstract(rest.to_string()),
        _ => Address::Unix(PathBuf::from(rest)),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Starts `python3 -c PRELUDE+body addr key`.
fn python(body: &str, addr: &str, key: &[u8]) -> Child {
    Command::new("python3")
        .arg("-c")
        .arg(format!("{PRELUDE}\n{body}"))
        .arg(addr)
        .arg(hex(key))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 must be on PATH for the interop tests")
}

/// Waits for a snippet: its exit code, stdout and stderr.
fn finish(child: Child) -> (i32, String, String) {
    within(LONG, "python3 to exit", move || {
        let out = child.wait_with_output().expect("wait for python3");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
}

/// Reads the address a Python listener prints first (byte by byte, so that
/// nothing after the first line is taken from the pipe).
fn read_address(child: &mut Child) -> Address {
    let stdout = child.stdout.take().expect("piped stdout");
    let (line, stdout) = within(SHORT, "python3 to print its address", move || {
        let mut stdout = stdout;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte).expect("read python's stdout") == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        (String::from_utf8_lossy(&line).into_owned(), stdout)
    });
    child.stdout = Some(stdout);
    assert!(!line.is_empty(), "python3 printed no address");
    parse_py_addr(&line)
}

fn tcp_any() -> Address {
    Address::Tcp("127.0.0.1:0".parse::<SocketAddr>().unwrap())
}

/// Peak resident memory of this process so far, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A Python client with the right key, bytes both ways, on each address kind.
fn python_client_bytes(address: Address) {
    let _s = serial();
    let _leaks = LeakCheck::new();
    let key = b"right key".to_vec();
    let l = Listener::bind(address, Some(&key)).unwrap();
    let child = python(
        r#"
c = Client(ADDR, authkey=KEY)
c.send_bytes(b'from python')
assert c.recv_bytes() == b'from rust', 'wrong reply'
c.send_bytes(b'')
c.close()
"#,
        &py_addr(&l.address()),
        &key,
    );
    let conn = l.accept_timeout(LONG).unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"from python");
    conn.send_bytes(b"from rust").unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"");
    assert!(matches!(conn.recv_bytes(), Err(mp::Error::Eof)));
    let (code, _, err) = finish(child);
    assert_eq!(code, 0, "python3 failed: {err}");
}

#[test]
fn python_client_tcp_right_key_bytes_both_ways() {
    python_client_bytes(tcp_any());
}

#[test]
fn python_client_unix_path() {
    let path = std::env::temp_dir().join(format!("mp-interop-{}.sock", std::process::id()));
    python_client_bytes(Address::Unix(path.clone()));
    assert!(
        !path.exists(),
        "the socket file is removed with the listener"
    );
}

#[test]
fn python_client_abstract_name() {
    python_client_bytes(Address::Abstract(format!(
        "mp-interop-{}",
        std::process::id()
    )));
}

// CPython: OtherTest.test_deliver_challenge_auth_failure
#[test]
fn python_client_wrong_key_fails_on_both_sides() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    let l = Listener::bind(tcp_any(), Some(b"right key".as_slice())).unwrap();
    let child = python(
        r#"
try:
    c = Client(ADDR, authkey=KEY)
except AuthenticationError as e:
    print(e)
    sys.exit(3)
c.send_bytes(b'payload that must not be read')
sys.exit(0)
"#,
        &py_addr(&l.address()),
        b"wrong key",
    );
    let r = l.accept_timeout(LONG);
    assert!(
        matches!(r, Err(mp::Error::Authentication(ref m)) if m.contains("digest")),
        "{r:?}"
    );
    let (code, out, err) = finish(child);
    assert_eq!(
        code, 3,
        "python3 should raise AuthenticationError: {out} {err}"
    );
    assert!(out.contains("digest sent was rejected"), "{out}");
    // The listener goes on serving.
    let child = python(
        "c = Client(ADDR, authkey=KEY); c.send_bytes(b'ok')",
        &py_addr(&l.address()),
        b"right key",
    );
    assert_eq!(l.accept_timeout(LONG).unwrap().recv_bytes().unwrap(), b"ok");
    assert_eq!(finish(child).0, 0);
}

/// A Python listener printing its address, then serving one connection.
const PY_LISTENER: &str = r#"
l = Listener(ADDR, authkey=KEY)
print(fmt_addr(l.address), flush=True)
try:
    c = l.accept()
except AuthenticationError as e:
    print(e, flush=True)
    sys.exit(3)
c.send_bytes(c.recv_bytes() + b' and back')
assert c.recv() == {'n': [1, 2, 3]}
c.send(('done', None))
c.close()
l.close()
"#;

#[test]
fn rust_client_python_listener_right_key() {
    for address in [
        "tcp:127.0.0.1:0".to_string(),
        format!("abs:mp-pylistener-{}", std::process::id()),
    ] {
        let _s = serial();
        let _leaks = LeakCheck::new();
        let mut child = python(PY_LISTENER, &address, b"shared");
        let addr = read_address(&mut child);
        let conn = Client::connect_timeout(addr, Some(b"shared".as_slice()), LONG).unwrap();
        conn.send_bytes(b"there").unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), b"there and back");
        let mut m = HashMap::new();
        m.insert("n".to_string(), vec![1i64, 2, 3]);
        conn.send_pickle(&m).unwrap();
        assert_eq!(
            conn.recv_pickle::<(String, Option<i64>)>().unwrap(),
            ("done".to_string(), None)
        );
        assert!(matches!(conn.recv_bytes(), Err(mp::Error::Eof)));
        drop(conn);
        let (code, _, err) = finish(child);
        assert_eq!(code, 0, "python3 failed: {err}");
    }
}

// CPython: OtherTest.test_answer_challenge_auth_failure
#[test]
fn rust_client_python_listener_wrong_key_fails_on_both_sides() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    let mut child = python(PY_LISTENER, "tcp:127.0.0.1:0", b"shared");
    let addr = read_address(&mut child);
    let r = Client::connect_timeout(addr, Some(b"not shared".as_slice()), LONG);
    assert!(
        matches!(r, Err(mp::Error::Authentication(ref m)) if m.contains("rejected")),
        "{r:?}"
    );
    let (code, out, err) = finish(child);
    assert_eq!(
        code, 3,
        "python3 should raise AuthenticationError: {out} {err}"
    );
    assert!(out.contains("digest received was wrong"), "{out}");
}

/// Values of every type the issue names, as Python builds them.
type Mixed = (
    (),
    bool,
    i64,
    i64,
    f64,
    String,
    ByteBuf,
    Vec<i64>,
    (i64, String),
    HashMap<String, Vec<i64>>,
);

#[test]
fn pickles_both_ways() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    let l = Listener::bind(tcp_any(), Some(b"k".as_slice())).unwrap();
    let child = python(
        r#"
c = Client(ADDR, authkey=KEY)
c.send((None, True, 7, -2**40, 1.5, 'h\u00e9llo \u4e16\u754c', b'\x00\xff', [1, 2], (3, 'x'), {'a': [1], 'b': []}))
got = c.recv()
want = (None, False, 8, -2**40 + 1, 3.0, 'H\u00c9LLO \u4e16\u754c', b'\xff\x00', [1, 2, 3], (4, 'xx'), {'a': [1, 1]})
assert got == want, repr(got)
assert type(got[8]) is tuple and type(got[7]) is list and type(got[6]) is bytes, repr(got)
c.send({'nested': {'deep': [[], [1.25]]}})
c.close()
"#,
        &py_addr(&l.address()),
        b"k",
    );
    let conn = l.accept_timeout(LONG).unwrap();
    let v: Mixed = conn.recv_pickle().unwrap();
    assert!(v.1);
    assert_eq!((v.2, v.3, v.4), (7, -(1i64 << 40), 1.5));
    assert_eq!(v.5, "héllo 世界");
    assert_eq!(v.6.as_slice(), b"\x00\xff");
    assert_eq!(
        (v.7.clone(), v.8.clone()),
        (vec![1, 2], (3, "x".to_string()))
    );
    assert_eq!(v.9.get("a"), Some(&vec![1]));
    let mut back = v.clone();
    back.1 = false;
    back.2 += 1;
    back.3 += 1;
    back.4 *= 2.0;
    back.5 = back.5.to_uppercase();
    back.6 = ByteBuf::from(vec![0xff, 0]);
    back.7.push(3);
    back.8 = (4, "xx".into());
    back.9 = HashMap::from([("a".to_string(), vec![1, 1])]);
    conn.send_pickle(&back).unwrap();
    type Nested = HashMap<String, HashMap<String, Vec<Vec<f64>>>>;
    let nested: Nested = conn.recv_pickle().unwrap();
    assert_eq!(nested["nested"]["deep"], vec![vec![], vec![1.25]]);
    let (code, _, err) = finish(child);
    assert_eq!(code, 0, "python3 failed: {err}");
}

#[test]
fn a_pickle_of_another_type_is_a_decode_error_and_the_stream_goes_on() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    let l = Listener::bind(tcp_any(), None).unwrap();
    let child = python(
        "c = Client(ADDR); c.send('text'); c.send(os.getpid); c.send(5); c.recv_bytes()",
        &py_addr(&l.address()),
        b"",
    );
    let conn = l.accept_timeout(LONG).unwrap();
    assert!(matches!(
        conn.recv_pickle::<i64>(),
        Err(mp::Error::Decode(_))
    ));
    // A pickled function names a global: refused, never run.
    assert!(matches!(
        conn.recv_pickle::<i64>(),
        Err(mp::Error::Decode(_))
    ));
    assert_eq!(conn.recv_pickle::<i64>().unwrap(), 5);
    conn.send_bytes(b"bye").unwrap();
    assert_eq!(finish(child).0, 0);
}

// CPython: _TestConnection.test_connection (a big message), 64 MiB each way.
#[test]
fn big_messages_both_ways() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    let l = Listener::bind(tcp_any(), Some(b"big".as_slice())).unwrap();
    let child = python(
        r#"
c = Client(ADDR, authkey=KEY)
blob = bytes(range(256)) * (64 * 1024 * 1024 // 256)
c.send_bytes(blob)
back = c.recv_bytes()
assert back == blob[::-1], 'echo differs'
c.close()
"#,
        &py_addr(&l.address()),
        b"big",
    );
    let conn = l.accept_timeout(LONG).unwrap();
    let got = within(LONG, "receive 64 MiB", move || {
        let got = conn.recv_bytes().unwrap();
        (conn, got)
    });
    let (conn, mut got) = got;
    assert_eq!(got.len(), 64 << 20);
    assert!(got.iter().enumerate().all(|(i, &b)| b == i as u8));
    got.reverse();
    within(LONG, "send 64 MiB", move || conn.send_bytes(&got).unwrap());
    let (code, _, err) = finish(child);
    assert_eq!(code, 0, "python3 failed: {err}");
}

#[test]
fn python_client_disconnecting_mid_message_is_a_clear_error() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    let l = Listener::bind(tcp_any(), Some(b"k".as_slice())).unwrap();
    let child = python(
        r#"
c = Client(ADDR, authkey=KEY)
c._send(struct.pack('!i', 1000) + b'x' * 10)
c.close()
"#,
        &py_addr(&l.address()),
        b"k",
    );
    let conn = l.accept_timeout(LONG).unwrap();
    let r = within(SHORT, "recv from a peer gone mid-message", move || {
        conn.recv_bytes()
    });
    assert!(
        matches!(r, Err(mp::Error::Decode(ref m)) if m.contains("truncated")),
        "{r:?}"
    );
    assert_eq!(finish(child).0, 0);
}

/// Sends `payload` over a raw Python socket and returns what our side got.
fn raw_peer(l: &Listener, payload: &str) -> mp::Result<Vec<u8>> {
    let child = python(
        &format!("s = raw_socket()\ns.sendall({payload})\ns.close()"),
        &py_addr(&l.address()),
        b"",
    );
    let r = l
        .accept_timeout(LONG)
        .and_then(|c| within(SHORT, "recv a bad frame", move || c.recv_bytes()));
    assert_eq!(finish(child).0, 0);
    r
}

#[test]
fn garbage_and_truncated_frames_from_a_raw_socket() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    let l = Listener::bind(tcp_any(), None).unwrap();
    // A negative length other than -1.
    let r = raw_peer(&l, r"struct.pack('!i', -5) + b'junk'");
    assert!(
        matches!(r, Err(mp::Error::Decode(ref m)) if m.contains("negative length")),
        "{r:?}"
    );
    // A header cut short, then a long-form header cut short.
    assert!(matches!(
        raw_peer(&l, "b'\\x00\\x00'"),
        Err(mp::Error::Decode(_))
    ));
    assert!(matches!(
        raw_peer(&l, r"struct.pack('!i', -1) + b'\x00\x00'"),
        Err(mp::Error::Decode(_))
    ));
    // Fewer bytes than declared.
    let r = raw_peer(&l, r"struct.pack('!i', 100) + b'only this'");
    assert!(
        matches!(r, Err(mp::Error::Decode(ref m)) if m.contains("truncated")),
        "{r:?}"
    );
    // The long form (-1, then 8 bytes) for a small payload is valid, as in CPython.
    assert_eq!(
        raw_peer(
            &l,
            r"struct.pack('!i', -1) + struct.pack('!Q', 5) + b'hello'"
        )
        .unwrap(),
        b"hello"
    );
}

#[test]
fn huge_declared_lengths_do_not_exhaust_memory() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    let l = Listener::bind(tcp_any(), None).unwrap();
    // Beyond the limit: refused before anything is allocated.
    let r = raw_peer(&l, r"struct.pack('!i', -1) + struct.pack('!Q', 1 << 62)");
    assert!(
        matches!(r, Err(mp::Error::MessageTooLarge { len, .. }) if len == 1 << 62),
        "{r:?}"
    );
    // Within the default limit (2 GiB - 1 declared) but only 1 MiB sent: memory
    // grows with the bytes that arrive, not with the declared length.
    let before = peak_rss_kib();
    let r = raw_peer(&l, r"struct.pack('!i', 0x7fffffff) + b'x' * (1 << 20)");
    assert!(
        matches!(r, Err(mp::Error::Decode(ref m)) if m.contains("truncated")),
        "{r:?}"
    );
    let grown = peak_rss_kib().saturating_sub(before);
    assert!(
        grown < 64 * 1024,
        "peak RSS grew by {grown} KiB for a lying 2 GiB header"
    );
    // A listener's own limit reaches its connections.
    l.set_max_message_len(1024);
    let r = raw_peer(&l, r"struct.pack('!i', 2048) + b'x' * 2048");
    assert!(
        matches!(
            r,
            Err(mp::Error::MessageTooLarge {
                len: 2048,
                max: 1024
            })
        ),
        "{r:?}"
    );
}

#[test]
fn bad_handshakes_from_a_raw_socket_are_authentication_errors() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    let l = Listener::bind(tcp_any(), Some(b"k".as_slice())).unwrap();
    for (payload, needle) in [
        // An HTTP request: its first 4 bytes declare a ~1 GiB frame.
        (r"b'GET / HTTP/1.1\r\nHost: x\r\n\r\n'", "exceeds the 256"),
        // A well-framed but wrong answer.
        (
            r"struct.pack('!i', 3) + b'abc'",
            "unsupported handshake message",
        ),
        // Nothing at all.
        ("b''", "closed the connection"),
    ] {
        let child = python(
            &format!(
                "s = raw_socket()\nassert s.recv(4)\ntry:\n    s.sendall({payload})\n    s.shutdown(socket.SHUT_WR)\n    s.recv(1024)\nexcept OSError:\n    pass\ns.close()"
            ),
            &py_addr(&l.address()),
            b"",
        );
        let r = l.accept_timeout(LONG);
        assert!(
            matches!(r, Err(mp::Error::Authentication(ref m)) if m.contains(needle)),
            "{payload}: {r:?}"
        );
        let (code, _, err) = finish(child);
        assert_eq!(code, 0, "{err}");
    }
}

/// CPython 3.12's handshake written out in Python (this machine's CPython is
/// 3.11, which speaks only the legacy form): a `{sha256}` client and server.
const PY_MODERN: &str = r#"
def modern_answer(c):
    m = c.recv_bytes(256)
    assert m.startswith(b'#CHALLENGE#{sha256}') and len(m) == 11 + 8 + 40, m
    m = m[11:]
    c.send_bytes(b'{sha256}' + hmac.new(KEY, m, 'sha256').digest())
    return c.recv_bytes(256)
def modern_deliver(c):
    m = b'{sha256}' + os.urandom(40)
    c.send_bytes(b'#CHALLENGE#' + m)
    r = c.recv_bytes(256)
    ok = r.startswith(b'{sha256}') and hmac.compare_digest(r[8:], hmac.new(KEY, m, 'sha256').digest())
    c.send_bytes(b'#WELCOME#' if ok else b'#FAILURE#')
    return ok
"#;

#[test]
fn sha256_handshake_with_a_python_312_style_peer() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    // Python as the client: answers our {sha256} challenge, then checks that
    // we answer its own with {sha256} + HMAC-SHA256.
    let l = Listener::bind(tcp_any(), Some(b"modern".as_slice())).unwrap();
    let child = python(
        &format!(
            "{PY_MODERN}\ns = raw_socket()\nc = Connection(s.detach())\nassert modern_answer(c) == b'#WELCOME#'\nassert modern_deliver(c)\nc.send_bytes(b'in')\n"
        ),
        &py_addr(&l.address()),
        b"modern",
    );
    let conn = l.accept_timeout(LONG).unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"in");
    let (code, _, err) = finish(child);
    assert_eq!(code, 0, "python3 failed: {err}");

    // Python as the listener: delivers a {sha256} challenge, then answers ours.
    let mut child = python(
        &format!(
            "{PY_MODERN}\nl = Listener(ADDR)\nprint(fmt_addr(l.address), flush=True)\nc = l.accept()\nassert modern_deliver(c)\nassert modern_answer(c) == b'#WELCOME#'\nc.send_bytes(b'out')\n"
        ),
        "tcp:127.0.0.1:0",
        b"modern",
    );
    let addr = read_address(&mut child);
    let conn = Client::connect_timeout(addr, Some(b"modern".as_slice()), LONG).unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"out");
    let (code, _, err) = finish(child);
    assert_eq!(code, 0, "python3 failed: {err}");

    // And a wrong key in the modern form is refused on both sides.
    let child = python(
        &format!(
            "{PY_MODERN}\ns = raw_socket()\nc = Connection(s.detach())\nsys.exit(0 if modern_answer(c) == b'#FAILURE#' else 1)\n"
        ),
        &py_addr(&l.address()),
        b"stale",
    );
    assert!(matches!(
        l.accept_timeout(LONG),
        Err(mp::Error::Authentication(_))
    ));
    assert_eq!(finish(child).0, 0);
}

#[test]
fn python_stdout_reader_drains() {
    // The reader helper hands stdout back intact for later lines.
    let _s = serial();
    let mut child = python(
        "print('abs:x', flush=True)\nprint('second')",
        "tcp:127.0.0.1:0",
        b"",
    );
    assert_eq!(read_address(&mut child), Address::Abstract("x".into()));
    let mut rest = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut rest)
        .unwrap();
    assert_eq!(rest, "second\n");
    assert_eq!(finish(child).0, 0);
}
