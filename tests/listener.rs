//! `connection::Listener` and `Client` between Rust processes: TCP, Unix
//! paths and abstract names, authkeys, closing, addresses in use, timeouts, and
//! a client in a child process.
//!
//! Scenarios ported from `cpython: Lib/test/_test_multiprocessing.py`
//! (PSF licence), with a Rust program on both ends:
//! // CPython: _TestListenerClient.test_listener_client
//! // CPython: _TestListenerClient.test_issue14725 (accept after a client left)
//! // CPython: _TestListener.test_multiple_bind
//! // CPython: _TestListener.test_context (closed listener: accept fails)
//! // CPython: _TestListener.test_abstract_socket
//! // CPython: OtherTest.test_deliver_challenge_auth_failure / test_answer_challenge_auth_failure

multiprocess::test_support!();
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use common::{ms, serial, within, LeakCheck, LONG, SHORT};
use mp::connection::{Address, Client, Listener};
use multiprocess as mp;

fn tcp_any() -> Address {
    Address::Tcp("127.0.0.1:0".parse::<SocketAddr>().unwrap())
}

fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "mp-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// One round trip through a listener at `address`, with and without a key.
fn round_trip(address: Address) {
    for key in [Some(b"secret".to_vec()), None] {
        let l = Listener::bind(address.clone(), key.as_deref()).unwrap();
        let addr = l.address();
        let k2 = key.clone();
        let client = std::thread::spawn(move || {
            let c = Client::connect_timeout(addr, k2.as_deref(), LONG).unwrap();
            c.send_bytes(b"ping").unwrap();
            c.send(&(1u8, "two".to_string())).unwrap();
            c.recv_bytes().unwrap()
        });
        let conn = within(LONG, "accept", move || {
            let conn = l.accept().unwrap();
            (l, conn)
        })
        .1;
        assert_eq!(conn.recv_bytes().unwrap(), b"ping");
        assert_eq!(conn.recv::<(u8, String)>().unwrap(), (1, "two".to_string()));
        conn.send_bytes(b"pong").unwrap();
        assert_eq!(client.join().unwrap(), b"pong");
    }
}

// CPython: _TestListenerClient.test_listener_client
#[test]
fn tcp_round_trip() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    round_trip(tcp_any());
}

#[test]
fn unix_path_round_trip_and_cleanup() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    let path = std::env::temp_dir().join(format!("{}.sock", unique("path")));
    round_trip(Address::Unix(path.clone()));
    assert!(!path.exists(), "the listener removes its socket file");
}

// CPython: _TestListener.test_abstract_socket
#[test]
fn abstract_round_trip() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    round_trip(Address::Abstract(unique("abs")));
}

// CPython: _TestListener.test_multiple_bind
#[test]
fn address_in_use_is_an_error() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    let l = Listener::bind(tcp_any(), None).unwrap();
    let r = Listener::bind(l.address(), None);
    assert!(
        matches!(r, Err(mp::Error::Io(ref e)) if e.kind() == std::io::ErrorKind::AddrInUse),
        "{r:?}"
    );

    let name = Address::Abstract(unique("inuse"));
    let a = Listener::bind(name.clone(), None).unwrap();
    assert!(matches!(
        Listener::bind(name.clone(), None),
        Err(mp::Error::Io(_))
    ));
    drop(a);
    // Free again once the first listener is gone.
    drop(Listener::bind(name, None).unwrap());

    let path = std::env::temp_dir().join(format!("{}.sock", unique("inuse")));
    let p = Listener::bind(path.clone(), None).unwrap();
    assert!(matches!(
        Listener::bind(path.clone(), None),
        Err(mp::Error::Io(_))
    ));
    drop(p);
    assert!(!path.exists());
}

// CPython: _TestListener.test_context
#[test]
fn accept_after_close_is_an_error_and_close_wakes_accept() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    for address in [tcp_any(), Address::Abstract(unique("close"))] {
        let l = Listener::bind(address, None).unwrap();
        let addr = l.address();
        l.close();
        l.close();
        assert!(l.is_closed());
        assert!(matches!(l.accept(), Err(mp::Error::Closed)));
        assert!(matches!(l.accept_timeout(ms(10)), Err(mp::Error::Closed)));
        // Nobody listens there any more.
        assert!(matches!(Client::connect(addr, None), Err(mp::Error::Io(_))));

        // A thread blocked in accept is woken by close from another thread.
        let l = Arc::new(Listener::bind(tcp_any(), None).unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let l2 = Arc::clone(&l);
        let t = std::thread::spawn(move || {
            tx.send(()).unwrap();
            l2.accept().map(|_| ())
        });
        rx.recv().unwrap();
        l.close();
        let r = within(SHORT, "accept woken by close", move || t.join().unwrap());
        assert!(matches!(r, Err(mp::Error::Closed)), "{r:?}");
    }
}

#[test]
fn wrong_key_fails_on_both_sides_and_the_listener_goes_on() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    let l = Arc::new(
        Listener::bind(Address::Abstract(unique("key")), Some(b"right".as_slice())).unwrap(),
    );
    let addr = l.address();
    let l2 = Arc::clone(&l);
    let server = std::thread::spawn(move || l2.accept_timeout(LONG).map(|_| ()));
    let r = Client::connect_timeout(addr.clone(), Some(b"wrong".as_slice()), LONG);
    assert!(
        matches!(r, Err(mp::Error::Authentication(ref m)) if m.contains("rejected")),
        "{r:?}"
    );
    let r = server.join().unwrap();
    assert!(
        matches!(r, Err(mp::Error::Authentication(ref m)) if m.contains("wrong")),
        "{r:?}"
    );

    // A client without a key sends a message straight away: the listener takes
    // it as a (bad) handshake answer and never returns it as data.
    let l2 = Arc::clone(&l);
    let server = std::thread::spawn(move || l2.accept_timeout(LONG).map(|_| ()));
    let c = Client::connect(addr.clone(), None).unwrap();
    c.send_bytes(b"sneaky payload").unwrap();
    assert!(matches!(
        server.join().unwrap(),
        Err(mp::Error::Authentication(_))
    ));
    drop(c);

    // The right key still gets in.
    let l2 = Arc::clone(&l);
    let server = std::thread::spawn(move || l2.accept_timeout(LONG).and_then(|c| c.recv_bytes()));
    let c = Client::connect_timeout(addr, Some(b"right".as_slice()), LONG).unwrap();
    c.send_bytes(b"hello").unwrap();
    assert_eq!(server.join().unwrap().unwrap(), b"hello");
}

#[test]
fn timeouts_are_bounded() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    let l = Listener::bind(tcp_any(), None).unwrap();
    let start = Instant::now();
    assert!(matches!(l.accept_timeout(ms(50)), Err(mp::Error::Timeout)));
    assert!(start.elapsed() >= ms(50));

    // A client expecting a challenge from a listener without a key times out
    // instead of hanging.
    let addr = l.address();
    let start = Instant::now();
    let r = within(SHORT, "connect_timeout", move || {
        Client::connect_timeout(addr, Some(b"k".as_slice()), ms(100))
    });
    assert!(matches!(r, Err(mp::Error::Timeout)), "{r:?}");
    assert!(start.elapsed() >= ms(100));
    drop(l.accept_timeout(LONG).unwrap());

    // A silent client cannot hold accept_timeout past its deadline.
    let k = Listener::bind(tcp_any(), Some(b"k".as_slice())).unwrap();
    let silent = Client::connect(k.address(), None).unwrap();
    let start = Instant::now();
    assert!(matches!(k.accept_timeout(ms(100)), Err(mp::Error::Timeout)));
    assert!(start.elapsed() >= ms(100));
    drop(silent);
}

#[test]
fn last_accepted_names_the_peer() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    let l = Listener::bind(tcp_any(), None).unwrap();
    assert_eq!(l.last_accepted(), None);
    let c = Client::connect(l.address(), None).unwrap();
    let _conn = l.accept_timeout(LONG).unwrap();
    match l.last_accepted() {
        Some(Address::Tcp(peer)) => {
            assert_eq!(peer.ip(), "127.0.0.1".parse::<std::net::IpAddr>().unwrap())
        }
        other => panic!("{other:?}"),
    }
    drop(c);
}

#[test]
fn many_clients_one_listener() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    let l = Listener::bind(Address::Abstract(unique("many")), Some(b"k".as_slice())).unwrap();
    let clients: Vec<_> = (0..4u32)
        .map(|i| {
            let addr = l.address();
            std::thread::spawn(move || {
                let c = Client::connect_timeout(addr, Some(b"k".as_slice()), LONG).unwrap();
                c.send(&i).unwrap();
                c.recv::<u32>().unwrap()
            })
        })
        .collect();
    for _ in 0..4 {
        let conn = l.accept_timeout(LONG).unwrap();
        let i: u32 = conn.recv().unwrap();
        conn.send(&(i * 10)).unwrap();
    }
    let mut got: Vec<u32> = clients.into_iter().map(|t| t.join().unwrap()).collect();
    got.sort();
    assert_eq!(got, vec![0, 10, 20, 30]);
}

#[test]
fn handles_travel_over_an_accepted_unix_connection() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    let l = Listener::bind(Address::Abstract(unique("fds")), None).unwrap();
    let c = Client::connect(l.address(), None).unwrap();
    let conn = l.accept_timeout(LONG).unwrap();
    let (a, b) = mp::pipe(true).unwrap();
    c.send(&a).unwrap();
    drop(a);
    let a2: mp::Connection = conn.recv().unwrap();
    a2.send_bytes(b"through a passed fd").unwrap();
    assert_eq!(b.recv_bytes().unwrap(), b"through a passed fd");
}

fn child_client((addr, key): (Address, Vec<u8>)) {
    let c = match Client::connect(addr, Some(&key)) {
        Ok(c) => c,
        // Exit code 3 tells the parent the child saw the authentication error.
        Err(mp::Error::Authentication(_)) => std::process::exit(3),
        Err(e) => panic!("child could not connect: {e}"),
    };
    c.send(&(
        mp::current_process().pid(),
        "hello from the child".to_string(),
    ))
    .unwrap();
    let reply: String = c.recv().unwrap();
    assert_eq!(reply, "welcome");
}

#[test]
fn a_client_in_a_child_process() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    for address in [tcp_any(), Address::Abstract(unique("child"))] {
        let key = b"family secret".to_vec();
        let l = Listener::bind(address, Some(&key)).unwrap();
        let mut p = mp::Process::new(child_client, (l.address(), key));
        p.start().unwrap();
        let conn = l.accept_timeout(LONG).unwrap();
        let (pid, text): (u32, String) = conn.recv().unwrap();
        assert_eq!(Some(pid), p.pid());
        assert_eq!(text, "hello from the child");
        conn.send(&"welcome".to_string()).unwrap();
        let p = within(LONG, "join the child", move || {
            p.join().unwrap();
            p
        });
        assert_eq!(p.exitcode(), Some(0));
        // A child with the wrong key fails its connect (exit 3),
        // and the listener reports the failure too.
        let mut bad = mp::Process::new(child_client, (l.address(), b"guess".to_vec()));
        bad.start().unwrap();
        assert!(matches!(
            l.accept_timeout(LONG),
            Err(mp::Error::Authentication(_))
        ));
        let bad = within(LONG, "join the rejected child", move || {
            bad.join().unwrap();
            bad
        });
        assert_eq!(bad.exitcode(), Some(3));
    }
}

#[test]
fn a_handle_cannot_cross_tcp_and_the_stream_goes_on() {
    let _s = serial();
    let _leaks = LeakCheck::new();
    let l = Listener::bind(tcp_any(), None).unwrap();
    let c = Client::connect(l.address(), None).unwrap();
    let conn = l.accept_timeout(LONG).unwrap();
    let (a, _b) = mp::pipe(true).unwrap();
    // TCP carries no file descriptors: an error, and nothing is sent.
    let r = c.send(&a);
    assert!(
        matches!(r, Err(mp::Error::Encode(ref m)) if m.contains("TCP")),
        "{r:?}"
    );
    c.send_bytes(b"still in step").unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"still in step");
}
