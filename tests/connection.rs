//! Pipes and connections between real processes.
//!
//! Scenarios ported from cpython: Lib/test/_test_multiprocessing.py (3.11,
//! PSF licence): `_TestConnection` (test_connection, test_duplex_false,
//! test_context, test_sendbytes's empty case), `_TestPoll` (test_empty_string,
//! test_strings, test_boundaries, test_dont_merge) and `TestWait`
//! (test_wait, test_wait_timeout, test_wait_integer's sentinel, test_neg_timeout).
//! Changes: Python's `send_bytes(buf, offset, size)` is `send_bytes(&buf[..])`;
//! `recv_bytes_into(buf, offset)` is `recv_bytes_into(&mut buf[offset..])`;
//! OSError for a closed or wrong-direction connection is `Error::Closed` /
//! `Error::Value`; `wait` returns the ready references.
//! Added: a 256 MiB `send_bytes` and a 64 MiB serde value between processes,
//! two processes sending each other big messages at once, EOF when a child
//! dies.

multiprocess::test_support!();
mod common;

use common::{LONG, LeakCheck, SHORT, ms, within};
use mp::connection::wait;
use multiprocess as mp;
use std::time::Instant;

/// The echo child of CPython's `_TestConnection._echo`.
fn echo(conn: mp::Connection) {
    while let Ok(msg) = conn.recv_bytes() {
        conn.send_bytes(&msg).unwrap();
    }
}

// CPython: _TestConnection.test_connection
#[test]
fn echo_round_trips() {
    let _s = common::serial();
    within(SHORT, "echo_round_trips", || {
        let leaks = LeakCheck::new();
        let (conn, child_conn) = mp::pipe(true).unwrap();
        let mut p = mp::Process::new(echo, child_conn);
        p.set_daemon(true);
        p.start().unwrap();

        let seq: Vec<Option<f64>> = vec![Some(1.0), Some(2.25), None];
        conn.send_bytes(&postcard_like(&seq)).unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), postcard_like(&seq));

        let msg = b"hello world".to_vec();
        conn.send_bytes(&msg).unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), msg);

        // recv_bytes_into at an offset returns the count.
        conn.send_bytes(&msg).unwrap();
        let mut buf = vec![0u8; 5 + msg.len() + 3];
        let n = conn.recv_bytes_into(&mut buf[5..]).unwrap();
        assert_eq!(n, msg.len());
        assert_eq!(&buf[5..5 + n], &msg[..]);
        assert_eq!(&buf[..5], &[0; 5]);

        // A too-small buffer: BufferTooShort with the whole message.
        conn.send_bytes(&msg).unwrap();
        let mut small = [0u8; 3];
        match conn.recv_bytes_into(&mut small) {
            Err(mp::Error::BufferTooShort(whole)) => assert_eq!(whole, msg),
            other => panic!("expected BufferTooShort, got {other:?}"),
        }

        // poll: false at once, false after a timeout, true at once with data.
        assert!(!conn.poll().unwrap());
        let start = Instant::now();
        assert!(!conn.poll_timeout(ms(200)).unwrap());
        assert!(start.elapsed() >= ms(200));
        conn.send_bytes(b"x").unwrap();
        assert!(conn.poll_timeout(SHORT).unwrap());
        assert_eq!(conn.recv_bytes().unwrap(), b"x");

        // 16 MiB round trip.
        let big = vec![0x5au8; 16 << 20];
        conn.send_bytes(&big).unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), big);

        // Serde values.
        conn.send(&(1u8, "two".to_string(), vec![3.0f32])).unwrap();
        assert!(matches!(conn.recv_bytes(), Ok(b) if !b.is_empty()));

        // Closing our end ends the echo loop; the child exits.
        conn.close();
        assert!(conn.is_closed());
        assert!(matches!(conn.recv_bytes(), Err(mp::Error::Closed)));
        assert!(matches!(conn.send_bytes(b"x"), Err(mp::Error::Closed)));
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        drop(p);
        leaks.check();
    });
}

/// Stand-in for pickling a value: its Debug text.
fn postcard_like<T: std::fmt::Debug>(v: &T) -> Vec<u8> {
    format!("{v:?}").into_bytes()
}

// CPython: _TestConnection.test_connection (EOF part)
#[test]
fn recv_after_the_peer_exits_is_eof() {
    let _s = common::serial();
    within(SHORT, "recv_after_the_peer_exits_is_eof", || {
        let (conn, child_conn) = mp::pipe(true).unwrap();
        let mut p = mp::Process::new(
            |c: mp::Connection| c.send(&"last words".to_string()).unwrap(),
            child_conn,
        );
        p.start().unwrap();
        p.join().unwrap();
        assert!(conn.poll().unwrap());
        assert_eq!(conn.recv::<String>().unwrap(), "last words");
        // The peer is gone: poll is true (EOF is ready), recv is Eof.
        assert!(conn.poll().unwrap());
        assert!(matches!(conn.recv::<String>(), Err(mp::Error::Eof)));
        assert!(matches!(conn.recv_bytes(), Err(mp::Error::Eof)));
    });
}

// CPython: _TestConnection.test_duplex_false
#[test]
fn simplex_pipes_have_a_direction() {
    let _s = common::serial();
    within(SHORT, "simplex_pipes_have_a_direction", || {
        let (reader, writer) = mp::pipe(false).unwrap();
        assert!(reader.readable() && !reader.writable());
        assert!(writer.writable() && !writer.readable());
        let mut p = mp::Process::new(
            |w: mp::Connection| w.send(&vec![1u32, 2, 3]).unwrap(),
            writer.clone_for_test(),
        );
        p.start().unwrap();
        assert_eq!(reader.recv::<Vec<u32>>().unwrap(), vec![1, 2, 3]);
        p.join().unwrap();
        assert!(matches!(writer.recv::<u8>(), Err(mp::Error::Value(_))));
        assert!(matches!(writer.poll(), Err(mp::Error::Value(_))));
        assert!(matches!(reader.send(&1u8), Err(mp::Error::Value(_))));
        assert!(matches!(reader.send_bytes(b"x"), Err(mp::Error::Value(_))));
    });
}

/// `try_clone` under a name that reads well in the test.
trait CloneForTest {
    fn clone_for_test(&self) -> mp::Connection;
}

impl CloneForTest for mp::Connection {
    fn clone_for_test(&self) -> mp::Connection {
        self.try_clone().unwrap()
    }
}

// CPython: _TestPoll.test_empty_string, test_strings, test_dont_merge
#[test]
fn empty_messages_and_boundaries() {
    let _s = common::serial();
    within(SHORT, "empty_messages_and_boundaries", || {
        let (a, b) = mp::pipe(true).unwrap();
        assert!(!a.poll().unwrap());
        b.send_bytes(b"").unwrap();
        // An empty message is data, and stays ready until read.
        assert!(a.poll().unwrap());
        assert!(a.poll().unwrap());
        assert_eq!(a.recv_bytes().unwrap(), b"");
        assert!(!a.poll().unwrap());

        let strings: [&[u8]; 8] = [b"hello", b"", b"a", b"b", b"", b"bye", b"", b"lop"];
        let mut p = mp::Process::new(
            |c: mp::Connection| {
                for s in [&b"hello"[..], b"", b"a", b"b", b"", b"bye", b"", b"lop"] {
                    c.send_bytes(s).unwrap();
                }
            },
            b,
        );
        p.start().unwrap();
        for s in strings {
            assert!(a.poll_timeout(SHORT).unwrap());
            assert_eq!(a.recv_bytes().unwrap(), s);
        }
        p.join().unwrap();
    });
}

// The bar: a 256 MiB send_bytes and a 64 MiB serde value.
#[test]
fn huge_messages_between_processes() {
    let _s = common::serial();
    within(LONG, "huge_messages_between_processes", || {
        let (conn, child_conn) = mp::pipe(true).unwrap();
        let mut p = mp::Process::new(
            |c: mp::Connection| {
                let bytes = c.recv_bytes().unwrap();
                let sum: u64 = bytes.iter().map(|&b| u64::from(b)).sum();
                c.send(&(bytes.len(), sum)).unwrap();
                drop(bytes);
                let v: Vec<u64> = c.recv().unwrap();
                c.send(&(v.len(), v.iter().sum::<u64>())).unwrap();
            },
            child_conn,
        );
        p.start().unwrap();
        let big: Vec<u8> = (0..(256u32 << 20)).map(|i| (i % 251) as u8).collect();
        let sum: u64 = big.iter().map(|&b| u64::from(b)).sum();
        conn.send_bytes(&big).unwrap();
        drop(big);
        assert_eq!(conn.recv::<(usize, u64)>().unwrap(), (256 << 20, sum));
        let v: Vec<u64> = (0..(8u64 << 20)).collect(); // 64 MiB of u64
        let vsum: u64 = v.iter().sum();
        conn.send(&v).unwrap();
        assert_eq!(conn.recv::<(usize, u64)>().unwrap(), (8 << 20, vsum));
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    });
}

// Two processes send each other big messages at the same time.
#[test]
fn mutual_big_sends_between_processes() {
    let _s = common::serial();
    within(LONG, "mutual_big_sends_between_processes", || {
        let (conn, child_conn) = mp::pipe(true).unwrap();
        let mut p = mp::Process::new(
            |c: mp::Connection| {
                let mine = vec![0xC4u8; 64 << 20];
                c.send_bytes(&mine).unwrap();
                c.send(&vec![7u32; 4 << 20]).unwrap();
                let theirs = c.recv_bytes().unwrap();
                let v: Vec<u32> = c.recv().unwrap();
                assert!(theirs.len() == 64 << 20 && theirs.iter().all(|&b| b == 0x3B));
                assert!(v.len() == 4 << 20 && v.iter().all(|&x| x == 9));
                c.send(&"ok".to_string()).unwrap();
            },
            child_conn,
        );
        p.start().unwrap();
        conn.send_bytes(&vec![0x3Bu8; 64 << 20]).unwrap();
        conn.send(&vec![9u32; 4 << 20]).unwrap();
        let theirs = conn.recv_bytes().unwrap();
        assert_eq!(theirs.len(), 64 << 20);
        assert!(theirs.iter().all(|&b| b == 0xC4));
        let v: Vec<u32> = conn.recv().unwrap();
        assert!(v.len() == 4 << 20 && v.iter().all(|&x| x == 7));
        assert_eq!(conn.recv::<String>().unwrap(), "ok");
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    });
}

/// The send buffer of a socket fd, as the kernel reports it.
fn send_buffer(fd: i32) -> usize {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY:
    // - getsockopt writes at most `len` bytes into `v`, a live c_int, and
    //   `len` into `len`; `fd` is only read.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&raw mut v).cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0, "getsockopt: {}", std::io::Error::last_os_error());
    v as usize
}

// A connection over a Unix socket asks for a 1 MiB send buffer
// (`LOCAL_SEND_BUFFER`): a process that is not root gets it as root does (the
// kernel's cap, wmem_max, binds both), and a message bigger than the buffer
// still crosses whole.
#[test]
fn a_non_root_process_gets_the_pipes_bigger_send_buffer() {
    let _s = common::serial();
    within(
        SHORT,
        "a_non_root_process_gets_the_pipes_bigger_send_buffer",
        || {
            let mut p = mp::Process::new(
                |(): ()| {
                    // SAFETY:
                    // - plain credential syscalls, passing no memory but a
                    //   null list of length 0; the kernel applies them to
                    //   every thread of this child.
                    unsafe {
                        if libc::geteuid() == 0 {
                            assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
                            assert_eq!(libc::setgid(65534), 0);
                            assert_eq!(libc::setuid(65534), 0);
                        }
                        assert_ne!(libc::geteuid(), 0);
                    }
                    let cap: usize = std::fs::read_to_string("/proc/sys/net/core/wmem_max")
                        .unwrap()
                        .trim()
                        .parse()
                        .unwrap();
                    let want = 2 * (1usize << 20).min(cap);
                    let (a, b) = mp::pipe(true).unwrap();
                    for end in [&a, &b] {
                        assert_eq!(send_buffer(end.fileno().unwrap()), want);
                    }
                    // Both ends of a Listener/Client pair on a Unix address.
                    let name = format!("mp-sndbuf-{}", std::process::id());
                    let l = mp::connection::Listener::bind(
                        mp::connection::Address::Abstract(name),
                        None,
                    )
                    .unwrap();
                    let addr = l.address();
                    let client = std::thread::spawn(move || {
                        mp::connection::Client::connect(addr, None).unwrap()
                    });
                    let served = l.accept().unwrap();
                    let client = client.join().unwrap();
                    assert_eq!(send_buffer(served.fileno().unwrap()), want);
                    assert_eq!(send_buffer(client.fileno().unwrap()), want);
                    let big: Vec<u8> = (0..(5u32 << 20)).map(|i| (i % 253) as u8).collect();
                    let want = big.clone();
                    let sender = std::thread::spawn(move || a.send_bytes(&big).unwrap());
                    assert!(b.recv_bytes().unwrap() == want);
                    sender.join().unwrap();
                },
                (),
            );
            p.start().unwrap();
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(0));
        },
    );
}

// A value of the wrong type is a Decode error; the stream goes on.
#[test]
fn wrong_type_from_a_child_is_a_clear_error() {
    let _s = common::serial();
    within(SHORT, "wrong_type_from_a_child_is_a_clear_error", || {
        let (conn, child_conn) = mp::pipe(true).unwrap();
        let mut p = mp::Process::new(
            |c: mp::Connection| {
                c.send(&"a string".to_string()).unwrap();
                c.send(&42u64).unwrap();
            },
            child_conn,
        );
        p.start().unwrap();
        assert!(matches!(conn.recv::<Vec<u64>>(), Err(mp::Error::Decode(_))));
        assert_eq!(conn.recv::<u64>().unwrap(), 42);
        p.join().unwrap();
    });
}

// CPython: TestWait.test_wait
#[test]
fn wait_collects_messages_from_four_children() {
    let _s = common::serial();
    within(LONG, "wait_collects_messages_from_four_children", || {
        let leaks = LeakCheck::new();
        let mut readers = Vec::new();
        let mut procs = Vec::new();
        for i in 0..4u32 {
            let (r, w) = mp::pipe(false).unwrap();
            let mut p = mp::Process::new(
                |(w, i): (mp::Connection, u32)| {
                    for j in 0..10u32 {
                        w.send(&(i, j)).unwrap();
                    }
                },
                (w, i),
            );
            p.start().unwrap();
            readers.push(r);
            procs.push(p);
        }
        let mut got = Vec::new();
        let mut open: Vec<&mp::Connection> = readers.iter().collect();
        while !open.is_empty() {
            for c in wait(&open, None).unwrap() {
                match c.recv::<(u32, u32)>() {
                    Ok(m) => got.push(m),
                    Err(mp::Error::Eof) => open.retain(|o| !std::ptr::eq(*o, c)),
                    Err(e) => panic!("{e}"),
                }
            }
        }
        got.sort_unstable();
        let expected: Vec<(u32, u32)> = (0..4).flat_map(|i| (0..10).map(move |j| (i, j))).collect();
        assert_eq!(got, expected);
        for p in &mut procs {
            p.join().unwrap();
        }
        drop((procs, readers));
        leaks.check();
    });
}

// CPython: TestWait.test_wait_timeout, test_neg_timeout
#[test]
fn wait_times_out_and_zero_timeout_is_immediate() {
    let _s = common::serial();
    let (a, b) = mp::pipe(true).unwrap();
    let start = Instant::now();
    assert!(wait(&[&a], Some(ms(300))).unwrap().is_empty());
    assert!(start.elapsed() >= ms(300));
    let start = Instant::now();
    assert!(
        wait::<mp::Connection>(&[], Some(ms(100)))
            .unwrap()
            .is_empty()
    );
    assert!(start.elapsed() >= ms(100));
    let start = Instant::now();
    assert!(wait(&[&a], Some(ms(0))).unwrap().is_empty());
    assert!(start.elapsed() < SHORT);
    b.send_bytes(b"").unwrap();
    assert_eq!(wait(&[&a], Some(ms(0))).unwrap().len(), 1);
    a.close();
    assert!(matches!(wait(&[&a], Some(ms(0))), Err(mp::Error::Closed)));
}

// CPython: TestWait.test_wait_integer (process sentinels)
#[test]
fn wait_sees_a_process_exit() {
    let _s = common::serial();
    within(SHORT, "wait_sees_a_process_exit", || {
        let (a, b) = mp::pipe(true).unwrap();
        let unstarted = mp::Process::new(|_: ()| (), ());
        assert!(matches!(
            wait(&[&unstarted], Some(ms(0))),
            Err(mp::Error::Value(_))
        ));
        let mut p = mp::Process::new(
            |c: mp::Connection| {
                let _ = c.recv_bytes();
            },
            b,
        );
        p.start().unwrap();
        let objects: [&dyn mp::connection::Waitable; 2] = [&a, &p];
        assert!(wait(&objects, Some(ms(50))).unwrap().is_empty());
        a.send_bytes(b"exit now").unwrap();
        let ready = wait(&objects, None).unwrap();
        // The child's exit both closes its end (a is ready: EOF) and fires the sentinel.
        assert!(!ready.is_empty());
        let ready = wait(&objects[1..], Some(SHORT)).unwrap();
        assert_eq!(ready.len(), 1);
        p.join().unwrap();
        assert!(matches!(a.recv_bytes(), Err(mp::Error::Eof)));
    });
}

// ---------------------------------------------------------------------------
// reduction.send_handle / recv_handle

/// CPython's `_TestConnection._writefd`: writes `data` through the fd it receives.
fn write_through_received_fd((conn, data): (mp::Connection, Vec<u8>)) {
    use std::io::Write;
    let mut f = std::fs::File::from(mp::reduction::recv_handle(&conn).unwrap());
    f.write_all(&data).unwrap();
}

// CPython: _TestConnection.test_fd_transfer
#[test]
fn test_fd_transfer() {
    let _s = common::serial();
    within(SHORT, "test_fd_transfer", || {
        let leaks = LeakCheck::new();
        let path = std::env::temp_dir().join(format!("mp-fd-transfer-{}", std::process::id()));
        let (conn, child_conn) = mp::pipe(true).unwrap();
        let mut p = mp::Process::new(write_through_received_fd, (child_conn, b"foo".to_vec()));
        p.start().unwrap();
        {
            let f = std::fs::File::create(&path).unwrap();
            mp::reduction::send_handle(&conn, &f).unwrap();
        }
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert_eq!(std::fs::read(&path).unwrap(), b"foo");
        std::fs::remove_file(&path).unwrap();
        drop((p, conn));
        leaks.check();
    });
}

// The reverse direction: a child sends the read end of a socket it writes to.
#[test]
fn a_child_sends_an_fd_the_parent_reads_through() {
    let _s = common::serial();
    within(SHORT, "fd from a child", || {
        let leaks = LeakCheck::new();
        let (conn, child_conn) = mp::pipe(true).unwrap();
        let mut p = mp::Process::new(
            |conn: mp::Connection| {
                use std::io::Write;
                let (mut w, r) = std::os::unix::net::UnixStream::pair().unwrap();
                mp::reduction::send_handle(&conn, &r).unwrap();
                drop(r);
                write!(w, "hello from {}", std::process::id()).unwrap();
            },
            child_conn,
        );
        p.start().unwrap();
        let fd = mp::reduction::recv_handle(&conn).unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut text).unwrap();
        assert_eq!(text, format!("hello from {}", p.pid().unwrap()));
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        drop((p, conn));
        leaks.check();
    });
}

// CPython: _TestConnection.test_missing_fd_transfer (RuntimeError there)
#[test]
fn test_missing_fd_transfer() {
    let _s = common::serial();
    let leaks = LeakCheck::new();
    let (a, b) = mp::pipe(true).unwrap();
    a.send_bytes(b"\0").unwrap();
    a.send(&7u32).unwrap();
    // A handle of another kind carries an fd but is no send_handle message.
    a.send(&mp::Lock::new().unwrap()).unwrap();
    for _ in 0..3 {
        assert!(matches!(
            mp::reduction::recv_handle(&b),
            Err(mp::Error::Decode(_))
        ));
    }
    // The connection goes on.
    a.send(&1u8).unwrap();
    assert_eq!(b.recv::<u8>().unwrap(), 1);
    // Not through the read-only end of a one-way pipe.
    let (r, w) = mp::pipe(false).unwrap();
    let (s1, s2) = std::os::unix::net::UnixStream::pair().unwrap();
    assert!(matches!(
        mp::reduction::send_handle(&r, &s1),
        Err(mp::Error::Value(_))
    ));
    drop((a, b, w, r, s1, s2));
    leaks.check();
}

// ---------------------------------------------------------------------------
// wait on anything with an fd (Python: any object with fileno())

// CPython: TestWait.test_wait_socket (a child connects and writes; the parent
// waits on the listening socket, then on the streams, mixed with a Connection)
#[test]
fn wait_on_std_sockets_mixed_with_a_connection() {
    use mp::connection::{Fileno, Waitable};
    use std::io::{Read, Write};
    let _s = common::serial();
    within(SHORT, "wait on sockets", || {
        let leaks = LeakCheck::new();
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (conn, child_conn) = mp::pipe(true).unwrap();
        assert!(wait(&[&server], Some(ms(0))).unwrap().is_empty());
        let mut p = mp::Process::new(
            |(addr, conn): (String, mp::Connection)| {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                // Wait for the go-ahead, so the parent sees a silent stream first.
                conn.recv::<()>().unwrap();
                s.write_all(b"ping").unwrap();
                conn.recv::<()>().unwrap();
                conn.send(&"done").unwrap();
                // Keep the stream open (silent) until the parent has looked.
                conn.recv::<()>().unwrap();
            },
            (server.local_addr().unwrap().to_string(), child_conn),
        );
        p.start().unwrap();
        // The listening socket becomes readable with the pending connection.
        assert_eq!(wait(&[&server], None).unwrap().len(), 1);
        let (mut stream, _) = server.accept().unwrap();
        let objects: [&dyn Waitable; 2] = [&conn, &stream];
        assert!(wait(&objects, Some(ms(50))).unwrap().is_empty());
        conn.send(&()).unwrap();
        let ready = wait(&objects, None).unwrap();
        assert_eq!(ready.len(), 1);
        assert!(std::ptr::addr_eq(ready[0], &stream));
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        conn.send(&()).unwrap();
        // Now the Connection is ready and the stream is not; the stream goes
        // in a Fileno, as any AsFd type can.
        let wrapped = Fileno(stream.try_clone().unwrap());
        let objects: [&dyn Waitable; 2] = [&wrapped, &conn];
        let ready = wait(&objects, None).unwrap();
        assert_eq!(ready.len(), 1);
        assert!(std::ptr::addr_eq(ready[0], &conn));
        assert_eq!(conn.recv::<String>().unwrap(), "done");
        conn.send(&()).unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        // The child's exit closed its end of the stream: readable (EOF).
        assert_eq!(wait(&objects[..1], Some(SHORT)).unwrap().len(), 1);
        drop((p, conn, stream, wrapped, server));
        leaks.check();
    });
}

// A Listener with a pending connection is ready; a closed one is an error.
#[test]
fn wait_on_a_listener_with_a_pending_connection() {
    let _s = common::serial();
    within(SHORT, "wait on a Listener", || {
        let leaks = LeakCheck::new();
        let l = mp::connection::Listener::bind(
            "127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap(),
            None,
        )
        .unwrap();
        assert!(wait(&[&l], Some(ms(0))).unwrap().is_empty());
        let mut p = mp::Process::new(
            |addr: mp::connection::Address| {
                let c = mp::connection::Client::connect(addr, None).unwrap();
                c.send(&42u32).unwrap();
                // Over TCP no fd can travel.
                let (s1, _s2) = std::os::unix::net::UnixStream::pair().unwrap();
                assert!(matches!(
                    mp::reduction::send_handle(&c, &s1),
                    Err(mp::Error::Encode(_))
                ));
            },
            l.address(),
        );
        p.start().unwrap();
        assert_eq!(wait(&[&l], None).unwrap().len(), 1);
        let c = l.accept().unwrap();
        assert_eq!(c.recv::<u32>().unwrap(), 42);
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        l.close();
        assert!(matches!(wait(&[&l], Some(ms(0))), Err(mp::Error::Closed)));
        drop((p, c, l));
        leaks.check();
    });
}

// ---------------------------------------------------------------------------
// Spinning before sleeping (a peer on this machine): nothing lost, nothing
// reordered, timeouts unchanged.

/// Echoes `x + 1` for every `Some((x, work))` until `None`; before the
/// answer it computes for `work` rounds, so some answers come at once (the
/// waiting side's spin finds them) and some late (its spin gives up, it
/// sleeps, then rests and probes).
fn slow_or_quick_echo(conn: mp::Connection) {
    while let Some((x, work)) = conn.recv::<Option<(u64, u64)>>().unwrap() {
        let mut acc = x;
        for i in 0..work {
            acc = std::hint::black_box(acc.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
        std::hint::black_box(acc);
        conn.send(&(x + 1)).unwrap();
    }
}

#[test]
fn ping_pong_quick_and_slow_answers_all_arrive_in_order() {
    let _s = common::serial();
    within(SHORT, "ping_pong_quick_and_slow", || {
        let leaks = LeakCheck::new();
        let (a, b) = mp::pipe(true).unwrap();
        let mut p = mp::Process::new(slow_or_quick_echo, b);
        p.start().unwrap();
        for i in 0..2000u64 {
            // Runs of quick answers, then runs of late ones (a fraction of a ms).
            let work: u64 = if (i / 250) % 2 == 1 { 50_000 } else { 0 };
            a.send(&Some((i, work))).unwrap();
            assert_eq!(a.recv::<u64>().unwrap(), i + 1);
        }
        // A reply that waits in the socket before the receive starts.
        a.send(&Some((7u64, 0u64))).unwrap();
        assert!(a.poll_timeout(SHORT).unwrap());
        assert_eq!(a.recv::<u64>().unwrap(), 8);
        a.send(&None::<(u64, u64)>).unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert!(matches!(a.recv::<u64>(), Err(mp::Error::Eof)));
        drop((p, a));
        leaks.check();
    });
}

#[test]
fn timeouts_are_kept_while_spinning() {
    let _s = common::serial();
    within(SHORT, "timeouts_are_kept_while_spinning", || {
        let (a, b) = mp::pipe(true).unwrap();
        // A live peer that says nothing until told to.
        let mut p = mp::Process::new(
            |c: mp::Connection| {
                let n: u32 = c.recv().unwrap();
                c.send(&(n * 2)).unwrap();
            },
            b,
        );
        p.start().unwrap();
        for t in [1, 5, 50] {
            let start = Instant::now();
            assert!(matches!(
                a.recv_timeout::<u32>(ms(t)),
                Err(mp::Error::Timeout)
            ));
            assert!(start.elapsed() >= ms(t));
            let start = Instant::now();
            assert!(!a.poll_timeout(ms(t)).unwrap());
            assert!(start.elapsed() >= ms(t));
        }
        // poll() does not wait at all.
        assert!(!a.poll().unwrap());
        a.send(&21u32).unwrap();
        assert_eq!(a.recv_timeout::<u32>(SHORT).unwrap(), 42);
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert!(a.poll_timeout(ms(1)).unwrap());
        assert!(matches!(a.recv_timeout::<u32>(ms(1)), Err(mp::Error::Eof)));
    });
}

/// One reader of an end shared with another process: under the shared
/// lock, takes one message at a time until `None`, checks each is whole
/// (`[i; i % 300]` after its index) and adds its index and a count to
/// `seen`.
fn shared_end_reader((conn, lock, seen): (mp::Connection, mp::Lock, mp::Array<u64>)) {
    loop {
        let msg = {
            let _g = lock.lock();
            conn.recv::<Option<(u64, Vec<u8>)>>().unwrap()
        };
        let Some((i, body)) = msg else { return };
        assert_eq!(body, vec![i as u8; (i % 300) as usize], "message {i}");
        let mut s = seen.lock();
        let (sum, count) = (s.get(0), s.get(1));
        s.set(0, sum + i);
        s.set(1, count + 1);
    }
}

#[test]
fn an_end_shared_by_two_readers_hands_each_message_whole_to_one() {
    // CPython's Queue shares a pipe end between its readers the same way
    // (a lock around each recv). A spinning receive looks for a message by
    // reading its header, and must never read past the message it takes:
    // the next one belongs to whichever process takes the lock next.
    let _s = common::serial();
    within(SHORT, "an_end_shared_by_two_readers", || {
        let leaks = LeakCheck::new();
        let (rx, tx) = mp::pipe(false).unwrap();
        let lock = mp::Lock::new().unwrap();
        let seen = mp::Array::<u64>::new(2).unwrap();
        let readers: Vec<mp::Process> = (0..2)
            .map(|_| {
                common::start(
                    shared_end_reader,
                    (rx.try_clone().unwrap(), lock.clone(), seen.clone()),
                )
            })
            .collect();
        drop(rx);
        const N: u64 = 3000;
        for i in 0..N {
            tx.send(&Some((i, vec![i as u8; (i % 300) as usize])))
                .unwrap();
        }
        for _ in &readers {
            tx.send(&None::<(u64, Vec<u8>)>).unwrap();
        }
        for p in readers {
            common::joined_ok(p);
        }
        assert_eq!(seen.to_vec(), [N * (N - 1) / 2, N]);
        drop((tx, lock, seen));
        leaks.check();
    });
}
