//! Bad input: every decoder that reads bytes another process wrote, fed
//! corrupt bytes through the fuzz entry points (`multiprocess::__fuzz`), and
//! the message-length limits checked against memory use.
//!
//! `tests/corpus/<target>/<file>` is replayed through the entry point of the
//! same name. A file named `<expect>--<what>` was made by hand (see
//! `write_hand_made_corpus`) and its outcome must be `<expect>`: `ok`,
//! `decode`, `too-large`, `auth`, `short` (`BufferTooShort`). Other files
//! (hash names) are the fuzzers' minimized corpus: they must give a
//! documented outcome (a value or one of the listed error variants), never a
//! panic or a hang.
//!
//! CPython: _TestConnection.test_connection (bad lengths), test_bad_protocol
//! (not a pickle), _TestListenerClient's authkey failures
//! (test_multiprocessing's `AuthenticationError` cases).

multiprocess::test_support!();
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mp::__fuzz as fz;
use mp::Error;
use multiprocess as mp;

/// Every target and the entry point the replay uses.
const TARGETS: &[&str] = &[
    "connection_frames",
    "envelope",
    "handshake",
    "pickle",
    "queue_item",
    "manager_request",
    "manager_reply",
    "manager_channel",
    "manager_mailbox",
    "pool_task",
    "pool_result",
];

/// What a file's name says its outcome is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Success (for streams: every frame decoded, then end of file).
    Ok,
    /// `Error::Decode`.
    Decode,
    /// `Error::MessageTooLarge`.
    TooLarge,
    /// `Error::Authentication`.
    Auth,
    /// `Error::BufferTooShort`.
    Short,
    /// `Error::Eof`.
    Eof,
    /// Fuzzer output: any documented outcome.
    Any,
}

fn expect_of(name: &str) -> Expect {
    match name.split_once("--").map(|(e, _)| e) {
        Some("ok") => Expect::Ok,
        Some("decode") => Expect::Decode,
        Some("too-large") => Expect::TooLarge,
        Some("auth") => Expect::Auth,
        Some("short") => Expect::Short,
        Some("eof") => Expect::Eof,
        _ => Expect::Any,
    }
}

fn matches_expect(e: &Error, want: Expect) -> bool {
    match want {
        Expect::Decode => matches!(e, Error::Decode(_)),
        Expect::TooLarge => matches!(e, Error::MessageTooLarge { .. }),
        Expect::Auth => matches!(e, Error::Authentication(_)),
        Expect::Short => matches!(e, Error::BufferTooShort(_)),
        Expect::Eof => matches!(e, Error::Eof),
        Expect::Ok | Expect::Any => false,
    }
}

/// Checks one stream of outcomes (frames, manager channel): the first error
/// is the expected one; every error is one the reader documents.
fn check_stream(name: &str, outcomes: &[fz::Outcome], want: Expect, allowed: fn(&Error) -> bool) {
    for r in outcomes {
        if let Err(e) = r {
            assert!(allowed(e), "{name}: undocumented error {e:?}");
        }
    }
    let first_err = outcomes.iter().find_map(|r| r.as_ref().err());
    match want {
        Expect::Any => {}
        Expect::Ok => assert!(
            matches!(first_err, None | Some(Error::Eof)),
            "{name}: expected clean frames then EOF, got {outcomes:?}"
        ),
        _ => {
            let e =
                first_err.unwrap_or_else(|| panic!("{name}: expected an error, got {outcomes:?}"));
            assert!(
                matches_expect(e, want),
                "{name}: expected {want:?}, got {e:?}"
            );
        }
    }
}

/// Checks a single outcome against the expectation and the allowed variants.
fn check_one<T: std::fmt::Debug>(
    name: &str,
    r: &mp::Result<T>,
    want: Expect,
    allowed: fn(&Error) -> bool,
) {
    if let Err(e) = r {
        assert!(allowed(e), "{name}: undocumented error {e:?}");
    }
    match (want, r) {
        (Expect::Any, _) | (Expect::Ok, Ok(_)) => {}
        (Expect::Ok, Err(e)) => panic!("{name}: expected success, got {e:?}"),
        (_, Ok(v)) => panic!("{name}: expected {want:?}, got Ok({v:?})"),
        (_, Err(e)) => assert!(
            matches_expect(e, want),
            "{name}: expected {want:?}, got {e:?}"
        ),
    }
}

/// Runs one corpus file through its target's entry point and checks it.
fn replay(target: &str, name: &str, data: &[u8]) {
    let want = expect_of(name);
    match target {
        "connection_frames" => check_stream(name, &fz::connection_frames(data), want, |e| {
            matches!(
                e,
                Error::Decode(_)
                    | Error::MessageTooLarge { .. }
                    | Error::Eof
                    | Error::BufferTooShort(_)
            )
        }),
        "manager_channel" => check_stream(name, &fz::manager_channel(data), want, |e| {
            matches!(
                e,
                Error::Decode(_) | Error::MessageTooLarge { .. } | Error::Eof
            )
        }),
        "manager_mailbox" => check_one(name, &fz::manager_mailbox(data), want, |e| {
            matches!(
                e,
                Error::Decode(_) | Error::MessageTooLarge { .. } | Error::Eof
            )
        }),
        "envelope" => check_one(name, &fz::envelope(data), want, |e| {
            matches!(e, Error::Decode(_))
        }),
        "handshake" => {
            let r = fz::handshake(data);
            // No input knows the HMAC of our fresh random challenge.
            assert!(r.is_err(), "{name}: a fuzz peer passed the handshake");
            check_one(name, &r, want, |e| matches!(e, Error::Authentication(_)))
        }
        "pickle" => check_one(name, &fz::pickle(data), want, |e| {
            matches!(e, Error::Decode(_))
        }),
        "queue_item" => check_one(name, &fz::queue_item(data), want, |e| {
            // Io: a datagram the socket refuses to send (EMSGSIZE).
            matches!(
                e,
                Error::Decode(_) | Error::MessageTooLarge { .. } | Error::Io(_)
            )
        }),
        "manager_request" => check_one(name, &fz::manager_request(data), want, |e| {
            matches!(e, Error::Decode(_))
        }),
        "manager_reply" => check_one(name, &fz::manager_reply(data), want, |e| {
            matches!(e, Error::Decode(_))
        }),
        "pool_task" => check_one(name, &fz::pool_task(data), want, |e| {
            matches!(e, Error::Decode(_))
        }),
        "pool_result" => check_one(name, &fz::pool_result(data), want, |e| {
            matches!(e, Error::Decode(_))
        }),
        other => panic!("unknown target {other}"),
    }
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn files_of(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir().join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn corpus_replays_without_panic_or_hang() {
    let _s = common::serial();
    let leaks = common::LeakCheck::new();
    let mut total = 0;
    for target in TARGETS {
        let files = files_of(target);
        assert!(!files.is_empty(), "no corpus for {target}");
        let hand_made = files.iter().filter(|(n, _)| n.contains("--")).count();
        assert!(hand_made > 0, "no hand-made cases for {target}");
        total += files.len();
        let target = target.to_string();
        common::within(common::LONG, &format!("replay {target}"), move || {
            for (name, data) in files {
                replay(&target, &name, &data);
            }
        });
    }
    assert!(total > 100, "only {total} corpus files");
    leaks.check();
}

// ---------------------------------------------------------------------------
// Exact outcomes and resource limits.

/// Selector of `connection_frames`: a socket (0) or a pipe (1), `recv_bytes`,
/// and a message limit: 0 = the default 4 GiB, 3 = 4096 bytes.
fn frames_sel(pipe: bool, limit: u8) -> u8 {
    u8::from(pipe) | (limit << 3)
}

/// The long-form header (`-1`, then 8 bytes) declaring `len`.
fn long_header(len: u64) -> Vec<u8> {
    let mut v = (-1i32).to_be_bytes().to_vec();
    v.extend_from_slice(&len.to_be_bytes());
    v
}

/// The peak resident set of this process (`VmHWM`), in bytes.
fn vm_hwm() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[test]
fn declared_length_of_2_pow_62_is_refused_before_allocation() {
    let _s = common::serial();
    let before = vm_hwm();
    for pipe in [false, true] {
        let mut input = vec![frames_sel(pipe, 0)];
        input.extend(long_header(1 << 62));
        input.extend_from_slice(b"a few bytes of the claimed payload");
        let out = fz::connection_frames(&input);
        assert!(
            matches!(out[0], Err(Error::MessageTooLarge { len, max }) if len == 1 << 62 && max == 4 << 30),
            "{out:?}"
        );
        // The rest of the refused frame is skipped; the peer then closed.
        assert!(
            matches!(out[1], Err(Error::Decode(ref m)) if m.contains("truncated")),
            "{out:?}"
        );
        assert!(matches!(out[2], Err(Error::Eof)), "{out:?}");
    }
    // The manager's own reader.
    let mut input = vec![0u8];
    input.extend(long_header(1 << 62));
    let out = fz::manager_channel(&input);
    assert!(
        matches!(out[0], Err(Error::MessageTooLarge { len, .. }) if len == 1 << 62),
        "{out:?}"
    );
    // A queue item whose out-of-band memfd is announced as 2^62 bytes.
    let mut dgram = vec![2u8];
    dgram.extend_from_slice(&(1u64 << 62).to_le_bytes());
    let r = fz::queue_item(&fz::queue_input(2 << 2, &dgram, b"tiny"));
    assert!(
        matches!(r, Err(Error::MessageTooLarge { len, .. }) if len == 1 << 62),
        "{r:?}"
    );
    // The handshake reads at most 256 bytes.
    let mut input = vec![0u8];
    input.extend(long_header(1 << 62));
    let r = fz::handshake(&input);
    assert!(
        matches!(r, Err(Error::Authentication(ref m)) if m.contains("exceeds")),
        "{r:?}"
    );
    let grown = vm_hwm().saturating_sub(before);
    assert!(grown < 8 << 20, "peak RSS grew by {grown} bytes");
}

#[test]
fn max_plus_one_is_refused_and_max_is_accepted() {
    // A 4096-byte limit: 4097 is refused, 4096 accepted (and then found
    // truncated, since the peer sends less).
    for pipe in [false, true] {
        let mut input = vec![frames_sel(pipe, 3)];
        input.extend_from_slice(&4097i32.to_be_bytes());
        input.extend_from_slice(&[7u8; 4097]);
        input.extend_from_slice(&4096i32.to_be_bytes());
        input.extend_from_slice(&[7u8; 4096]);
        input.extend_from_slice(&4096i32.to_be_bytes());
        input.extend_from_slice(&[7u8; 10]);
        let out = fz::connection_frames(&input);
        assert!(
            matches!(
                out[0],
                Err(Error::MessageTooLarge {
                    len: 4097,
                    max: 4096
                })
            ),
            "{out:?}"
        );
        assert!(matches!(out[1], Ok(4096)), "{out:?}");
        assert!(
            matches!(out[2], Err(Error::Decode(ref m)) if m.contains("truncated")),
            "{out:?}"
        );
        assert!(matches!(out[3], Err(Error::Eof)), "{out:?}");
    }
    // The default limit plus one, in the long form (the payload never comes).
    let mut input = vec![frames_sel(false, 0)];
    input.extend(long_header((4 << 30) + 1));
    let out = fz::connection_frames(&input);
    assert!(
        matches!(out[0], Err(Error::MessageTooLarge { len, max }) if len == (4 << 30) + 1 && max == 4 << 30),
        "{out:?}"
    );
    let mut input = vec![0u8];
    input.extend(long_header((4 << 30) + 1));
    assert!(matches!(
        fz::manager_channel(&input)[0],
        Err(Error::MessageTooLarge { .. })
    ));
    let mut dgram = vec![2u8];
    dgram.extend_from_slice(&((4u64 << 30) + 1).to_le_bytes());
    let r = fz::queue_item(&fz::queue_input(2 << 2, &dgram, b"tiny"));
    assert!(
        matches!(r, Err(Error::MessageTooLarge { len, max }) if len == (4 << 30) + 1 && max == 4 << 30),
        "{r:?}"
    );
    // Handshake: 257 bytes refused, 256 read (and found not to be a response).
    let mut input = vec![0u8];
    input.extend(fz::frame(&[b'x'; 257]));
    assert!(
        matches!(fz::handshake(&input), Err(Error::Authentication(ref m)) if m.contains("257"))
    );
    let mut input = vec![0u8];
    input.extend(fz::frame(&[b'x'; 256]));
    assert!(
        matches!(fz::handshake(&input), Err(Error::Authentication(ref m)) if m.contains("unsupported"))
    );
}

#[test]
fn lying_headers_cost_no_memory() {
    // Headers that pass the limit (2 GiB - 1 bytes each) followed by a few
    // bytes: the readers grow their buffers with the bytes that really
    // arrive, not with the claim.
    let _s = common::serial();
    let before = vm_hwm();
    for round in 0..20u8 {
        for pipe in [false, true] {
            let mut input = vec![frames_sel(pipe, 0)];
            input.extend_from_slice(&i32::MAX.to_be_bytes());
            input.extend_from_slice(&[round; 1000]);
            let out = fz::connection_frames(&input);
            assert!(
                matches!(out[0], Err(Error::Decode(ref m)) if m.contains("truncated")),
                "{out:?}"
            );
        }
        let mut input = vec![0u8];
        input.extend_from_slice(&i32::MAX.to_be_bytes());
        input.extend_from_slice(&[round; 1000]);
        let out = fz::manager_channel(&input);
        assert!(
            matches!(out[0], Err(Error::Decode(ref m)) if m.contains("truncated")),
            "{out:?}"
        );
    }
    let grown = vm_hwm().saturating_sub(before);
    assert!(grown < 8 << 20, "peak RSS grew by {grown} bytes");
}

#[test]
fn handles_without_their_fds_are_decode_errors() {
    let (a, b) = mp::pipe(true).unwrap();
    let mut env = fz::encode_envelope(&a).unwrap();
    drop((a, b));
    assert_eq!(env[1], 1, "one fd declared");
    // Selector 8: decode as a Connection, with no fds.
    let mut input = vec![8u8];
    input.extend_from_slice(&env);
    let r = fz::envelope(&input);
    assert!(
        matches!(r, Err(Error::Decode(ref m)) if m.contains("declares 1 handles but 0")),
        "{r:?}"
    );
    // Declares none (the count lies the other way): the handle finds no fd.
    env[1] = 0;
    let mut input = vec![8u8];
    input.extend_from_slice(&env);
    let r = fz::envelope(&input);
    assert!(matches!(r, Err(Error::Decode(_))), "{r:?}");
    // Three fds arrive for a message that declares none.
    let mut input = vec![(3 << 4) | 8u8];
    input.extend_from_slice(&env);
    assert!(
        matches!(fz::envelope(&input), Err(Error::Decode(ref m)) if m.contains("declares 0 handles but 3"))
    );
}

#[test]
fn pickles_naming_code_are_refused() {
    // pickle.dumps(os.system, protocol=4) and a protocol-2 REDUCE of
    // builtins.eval('1+1'): a Python unpickler would import and call them.
    let system = unhex("80049514000000000000008c05706f736978948c0673797374656d9493942e");
    let eval = b"\x80\x02cbuiltins\neval\nq\x00X\x03\x00\x00\x001+1q\x01\x85q\x02Rq\x03.".to_vec();
    for p in [system, eval] {
        for sel in 0..fz::PICKLE_TYPES {
            let mut input = vec![sel];
            input.extend_from_slice(&p);
            assert!(matches!(fz::pickle(&input), Err(Error::Decode(_))));
        }
    }
}

#[test]
fn handshake_garbage_replies_fail_authentication() {
    // The client side gets a proper challenge, answers it, then reads
    // #FAILURE#, or garbage, or nothing.
    let mut challenge = b"#CHALLENGE#{sha256}".to_vec();
    challenge.extend_from_slice(&[0x5a; 40]);
    for reply in [&b"#FAILURE#"[..], b"#WELCOME#x", b"", b"\xff\xff\xff\xfe"] {
        let mut input = vec![1u8];
        input.extend(fz::frame(&challenge));
        if reply.starts_with(b"\xff") {
            input.extend_from_slice(reply);
        } else if !reply.is_empty() {
            input.extend(fz::frame(reply));
        }
        let r = fz::handshake(&input);
        assert!(
            matches!(r, Err(Error::Authentication(_))),
            "{reply:?}: {r:?}"
        );
    }
    // #WELCOME#, then the peer cannot answer our challenge.
    let mut input = vec![1u8];
    input.extend(fz::frame(&challenge));
    input.extend(fz::frame(b"#WELCOME#"));
    input.extend(fz::frame(b"{sha256}0123456789abcdef0123456789abcdef"));
    let r = fz::handshake(&input);
    assert!(
        matches!(r, Err(Error::Authentication(ref m)) if m.contains("digest")),
        "{r:?}"
    );
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

// ---------------------------------------------------------------------------
// The hand-made corpus.

/// Writes the hand-made files of `tests/corpus/`. Run after changing a case:
/// `cargo test --test bad_input -- --ignored write_hand_made_corpus`.
#[test]
#[ignore = "writes tests/corpus; run by hand after changing a case"]
fn write_hand_made_corpus() {
    for (target, name, bytes) in hand_made() {
        let dir = corpus_dir().join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// The committed hand-made files (names with `--`) are exactly what
/// [`hand_made`] produces: same names per target, same bytes. A case changed,
/// added or removed in the code without rerunning `write_hand_made_corpus`
/// (or a file edited or left behind in `tests/corpus`) fails here, so the
/// replay above always checks the cases this file describes.
#[test]
fn hand_made_corpus_matches_the_code() {
    let mut want: BTreeMap<(String, String), Vec<u8>> = BTreeMap::new();
    for (target, name, bytes) in hand_made() {
        assert!(
            name.contains("--"),
            "{target}/{name}: hand-made names contain `--`"
        );
        let dup = want.insert((target.to_string(), name.clone()), bytes);
        assert!(
            dup.is_none(),
            "{target}/{name}: two hand-made cases with one name"
        );
    }
    let mut have: BTreeMap<(String, String), Vec<u8>> = BTreeMap::new();
    for target in TARGETS {
        for (name, bytes) in files_of(target) {
            if name.contains("--") {
                have.insert((target.to_string(), name), bytes);
            }
        }
    }
    let missing: Vec<_> = want.keys().filter(|k| !have.contains_key(*k)).collect();
    let stale: Vec<_> = have.keys().filter(|k| !want.contains_key(*k)).collect();
    let differ: Vec<_> = want
        .iter()
        .filter(|(k, b)| have.get(*k).is_some_and(|h| h != *b))
        .map(|(k, _)| k)
        .collect();
    let fix = "run `cargo test --test bad_input -- --ignored write_hand_made_corpus` \
               (and delete the stale files)";
    assert!(
        missing.is_empty() && stale.is_empty() && differ.is_empty(),
        "hand-made corpus out of date: not in tests/corpus {missing:?}; \
         in tests/corpus but not in hand_made() {stale:?}; bytes differ {differ:?}; {fix}"
    );
    assert_eq!(have.len(), want.len());
}

/// `(target, file name, bytes)` of every hand-made case.
fn hand_made() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut v: Vec<(&'static str, String, Vec<u8>)> = Vec::new();
    let mut add =
        |t: &'static str, name: &str, bytes: Vec<u8>| v.push((t, name.to_string(), bytes));
    let cat = |parts: &[&[u8]]| parts.concat();
    let be = |n: i32| n.to_be_bytes().to_vec();

    // --- connection_frames: selector, then the stream.
    let t = "connection_frames";
    for (pipe, tag) in [(false, ""), (true, "-pipe")] {
        let s = frames_sel(pipe, 0);
        add(
            t,
            &format!("decode--negative-length{tag}"),
            cat(&[&[s], &be(-7), b"more"]),
        );
        add(
            t,
            &format!("decode--i32-min-length{tag}"),
            cat(&[&[s], &be(i32::MIN)]),
        );
        add(
            t,
            &format!("decode--truncated-payload{tag}"),
            cat(&[&[s], &be(100), b"only ten b"]),
        );
        add(t, &format!("decode--truncated-header{tag}"), vec![s, 0, 0]);
        add(
            t,
            &format!("decode--truncated-long-header{tag}"),
            cat(&[&[s], &be(-1), &[0, 0, 0]]),
        );
        add(
            t,
            &format!("too-large--2pow62{tag}"),
            cat(&[&[s], &long_header(1 << 62), b"xx"]),
        );
        add(
            t,
            &format!("too-large--u64-max{tag}"),
            cat(&[&[s], &long_header(u64::MAX)]),
        );
        add(
            t,
            &format!("too-large--default-max-plus-1{tag}"),
            cat(&[&[s], &long_header((4 << 30) + 1)]),
        );
        add(
            t,
            &format!("decode--2gib-claimed-10-sent{tag}"),
            cat(&[&[s], &be(i32::MAX), &[1; 10]]),
        );
        add(
            t,
            &format!("ok--frames{tag}"),
            cat(&[
                &[s],
                &fz::frame(b"hello"),
                &fz::frame(b""),
                &long_header(2),
                b"hi",
            ]),
        );
    }
    let s = frames_sel(false, 3);
    add(
        t,
        "too-large--4096-max-plus-1",
        cat(&[&[s], &be(4097), &[0; 4097], &fz::frame(b"next")]),
    );
    add(
        t,
        "too-large--zero-limit",
        cat(&[&[frames_sel(false, 1)], &fz::frame(b"x")]),
    );
    // Typed receives: recv::<Vec<u8>> (selector bits 1..2 = 1).
    let typed = 1 << 1;
    add(
        t,
        "decode--typed-not-an-envelope",
        cat(&[&[typed], &fz::frame(b"hello")]),
    );
    add(
        t,
        "decode--typed-wrong-type-tag",
        cat(&[
            &[typed],
            &fz::frame(&fz::encode_envelope("a string").unwrap()),
        ]),
    );
    let mut lying = fz::encode_envelope(&vec![1u8, 2, 3]).unwrap();
    lying[1] = 3;
    add(
        t,
        "decode--typed-fd-count-lies",
        cat(&[&[typed], &fz::frame(&lying)]),
    );
    add(
        t,
        "ok--typed-vec",
        cat(&[
            &[typed],
            &fz::frame(&fz::encode_envelope(&vec![1u8, 2, 3]).unwrap()),
        ]),
    );
    add(
        t,
        "short--100-bytes-into-64",
        cat(&[&[3 << 1], &fz::frame(&[1; 100])]),
    );

    // --- envelope: selector (type | fds << 4), then the message.
    let t = "envelope";
    let env = |sel: u8, bytes: Vec<u8>| cat(&[&[sel], &bytes]);
    add(t, "decode--empty", vec![0]);
    add(
        t,
        "decode--bad-magic",
        env(0, vec![0x80, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
    );
    add(t, "decode--header-only-9-bytes", env(0, vec![0xA7; 9]));
    add(
        t,
        "decode--wrong-type-tag",
        env(0, fz::encode_envelope("text").unwrap()),
    );
    let mut trailing = fz::encode_envelope(&7u64).unwrap();
    trailing.push(0);
    add(t, "decode--trailing-byte", env(0, trailing));
    add(t, "ok--u64", env(0, fz::encode_envelope(&7u64).unwrap()));
    let mut huge_vec = fz::encode_envelope(&Vec::<u8>::new()).unwrap();
    huge_vec.truncate(10);
    huge_vec.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f]);
    add(t, "decode--vec-length-2pow62", env(2, huge_vec));
    let mut bad_utf8 = fz::encode_envelope("ab").unwrap();
    let n = bad_utf8.len();
    bad_utf8[n - 1] = 0xff;
    add(t, "decode--string-invalid-utf8", env(1, bad_utf8));
    let mut bad_char = fz::encode_envelope(&'a').unwrap();
    bad_char.truncate(10);
    bad_char.extend_from_slice(&[3, 0xed, 0xa0, 0x80]); // a surrogate, UTF-8-encoded
    add(t, "decode--char-surrogate", env(7, bad_char));
    let mut variant = fz::encode_envelope(&7u64).unwrap();
    variant.truncate(10);
    add(t, "decode--enum-truncated", env(5, variant.clone()));
    let handle = {
        let (a, _b) = mp::pipe(true).unwrap();
        fz::encode_envelope(&a).unwrap()
    };
    add(
        t,
        "decode--connection-fd-declared-none-arrived",
        env(8, handle.clone()),
    );
    add(
        t,
        "ok--connection-with-its-fd",
        env((1 << 4) | 8, handle.clone()),
    );
    let mut no_fd = handle.clone();
    no_fd[1] = 0;
    add(
        t,
        "decode--connection-declares-0-fds",
        env(8, no_fd.clone()),
    );
    add(
        t,
        "decode--fd-count-lies-15-arrive",
        env((15 << 4) | 8, no_fd),
    );
    let mut index = handle.clone();
    index[10] = 5; // the fd index: 5, of 1
    add(
        t,
        "decode--connection-fd-index-out-of-range",
        env((1 << 4) | 8, index),
    );
    {
        let lock = mp::Lock::new().unwrap();
        let bytes = fz::encode_envelope(&lock).unwrap();
        // fd 0 of some_fds is a 64-byte region of zeros, not a lock's.
        add(
            t,
            "decode--lock-on-foreign-region",
            env((1 << 4) | 9, bytes.clone()),
        );
        add(
            t,
            "decode--lock-on-a-socket",
            env((2 << 4) | 9, {
                let mut b = bytes;
                b[10] = 1; // take fd #1, the socket
                b[1] = 2;
                b
            }),
        );
    }

    // --- handshake: selector (0 serve, 1 client), then the peer's stream.
    let t = "handshake";
    let mut challenge = b"#CHALLENGE#{sha256}".to_vec();
    challenge.extend_from_slice(&[0x5a; 40]);
    add(t, "auth--server-peer-closes", vec![0]);
    add(
        t,
        "auth--server-garbage-response",
        cat(&[&[0], &fz::frame(b"hello there")]),
    );
    add(
        t,
        "auth--server-response-257-bytes",
        cat(&[&[0], &fz::frame(&[b'{'; 257])]),
    );
    add(
        t,
        "auth--server-length-2pow62",
        cat(&[&[0], &long_header(1 << 62)]),
    );
    add(t, "auth--server-negative-length", cat(&[&[0], &be(-2)]));
    add(
        t,
        "auth--server-truncated-response",
        cat(&[&[0], &be(40), b"{sha256}"]),
    );
    let mut wrong = b"{sha256}".to_vec();
    wrong.extend_from_slice(&[0; 32]);
    add(
        t,
        "auth--server-wrong-sha256-mac",
        cat(&[&[0], &fz::frame(&wrong)]),
    );
    add(
        t,
        "auth--server-wrong-legacy-md5",
        cat(&[&[0], &fz::frame(&[0; 16])]),
    );
    add(
        t,
        "auth--server-short-sha256-mac",
        cat(&[&[0], &fz::frame(b"{sha256}abc")]),
    );
    add(
        t,
        "auth--server-unknown-digest",
        cat(&[&[0], &fz::frame(b"{sha1}0123456789abcdefghij")]),
    );
    add(
        t,
        "auth--server-unclosed-brace",
        cat(&[&[0], &fz::frame(b"{sha256_and_more_and_more")]),
    );
    add(
        t,
        "auth--client-no-challenge-prefix",
        cat(&[&[1], &fz::frame(b"#WELCOME#")]),
    );
    add(
        t,
        "auth--client-challenge-too-short",
        cat(&[&[1], &fz::frame(b"#CHALLENGE#abc")]),
    );
    add(
        t,
        "auth--client-unknown-digest",
        cat(&[
            &[1],
            &fz::frame(b"#CHALLENGE#{whirlpool}0123456789012345678901234567890123456789"),
        ]),
    );
    add(
        t,
        "auth--client-failure-reply",
        cat(&[&[1], &fz::frame(&challenge), &fz::frame(b"#FAILURE#")]),
    );
    add(
        t,
        "auth--client-garbage-reply",
        cat(&[&[1], &fz::frame(&challenge), &fz::frame(&[0xff; 200])]),
    );
    add(
        t,
        "auth--client-reply-too-long",
        cat(&[&[1], &fz::frame(&challenge), &fz::frame(&[b'#'; 300])]),
    );
    add(
        t,
        "auth--client-welcome-then-eof",
        cat(&[&[1], &fz::frame(&challenge), &fz::frame(b"#WELCOME#")]),
    );
    add(
        t,
        "auth--client-legacy-challenge-then-garbage",
        cat(&[
            &[1],
            &fz::frame(&cat(&[b"#CHALLENGE#", &[7; 20]])),
            &fz::frame(b"#WELCOME#"),
            &fz::frame(&[9; 16]),
        ]),
    );

    // --- pickle: selector (type), then the pickle.
    let t = "pickle";
    let pk = |sel: u8, bytes: &[u8]| cat(&[&[sel], bytes]);
    add(
        t,
        "decode--global-posix-system",
        pk(
            0,
            &unhex("80049514000000000000008c05706f736978948c0673797374656d9493942e"),
        ),
    );
    add(
        t,
        "decode--reduce-builtins-eval",
        pk(
            0,
            b"\x80\x02cbuiltins\neval\nq\x00X\x03\x00\x00\x001+1q\x01\x85q\x02Rq\x03.",
        ),
    );
    add(
        t,
        "decode--protocol0-global-os-system",
        pk(1, b"cos\nsystem\n(S'echo hi'\ntR."),
    );
    add(
        t,
        "decode--truncated",
        pk(2, &unhex("80049516000000000000005d94284b01")),
    );
    add(t, "decode--empty", pk(0, b""));
    add(t, "decode--stop-on-empty-stack", pk(0, b"."));
    add(
        t,
        "decode--binbytes8-length-2pow62",
        pk(
            0,
            &cat(&[b"\x80\x04\x8e", &(1u64 << 62).to_le_bytes(), b"."]),
        ),
    );
    add(
        t,
        "decode--binunicode-length-4gib",
        pk(1, &cat(&[b"\x80\x03X", &u32::MAX.to_le_bytes(), b"ab."])),
    );
    add(
        t,
        "ok--frame-length-2pow62-is-only-a-hint",
        pk(
            0,
            &cat(&[b"\x80\x04\x95", &(1u64 << 62).to_le_bytes(), b"K\x01."]),
        ),
    );
    add(t, "decode--memo-get-missing", pk(0, b"\x80\x02h\x05."));
    add(
        t,
        "decode--long4-length-huge",
        pk(
            0,
            &cat(&[b"\x80\x02\x8b", &i32::MAX.to_le_bytes(), b"\x01."]),
        ),
    );
    add(t, "decode--bad-opcode", pk(0, b"\x80\x04\xff."));
    add(
        t,
        "decode--wrong-type",
        pk(
            1,
            &unhex("80049516000000000000005d94284b018c0161944e88473ff8000000000000652e"),
        ),
    );
    add(
        t,
        "ok--protocol4-tuple",
        pk(3, &fz::dumps(&(Some(5i64), "x")).unwrap()),
    );
    add(
        t,
        "ok--nested-list",
        pk(5, &fz::dumps(&vec![vec!["a".to_string()]]).unwrap()),
    );
    add(
        t,
        "decode--deep-nesting-2000",
        pk(5, &cat(&[b"\x80\x02", &[b']'; 2000], &[b'a'; 1999], b"."])),
    );
    // 20 000 levels overflowed serde-pickle's recursion (a stack overflow that
    // aborted the process) until the nesting check came first.
    add(
        t,
        "decode--deep-nesting-20000",
        pk(
            5,
            &cat(&[b"\x80\x02", &[b']'; 20_000], &[b'a'; 19_999], b"."]),
        ),
    );
    add(
        t,
        "decode--cycle-through-memo",
        pk(0, b"\x80\x02]q\x00h\x00a."),
    );

    // --- queue_item: selector (type | fds << 2), datagram length, datagram, memfd tail.
    let t = "queue_item";
    let inline = |bytes: &[u8]| cat(&[&[1], bytes]);
    let oob = |len: u64| cat(&[&[2], &len.to_le_bytes()]);
    add(t, "decode--empty-datagram", fz::queue_input(0, b"", b""));
    add(
        t,
        "decode--unknown-kind",
        fz::queue_input(0, &[9, 1, 2, 3], b""),
    );
    add(
        t,
        "decode--inline-not-an-envelope",
        fz::queue_input(0, &inline(b"hello"), b""),
    );
    add(
        t,
        "decode--inline-wrong-type",
        fz::queue_input(0, &inline(&fz::encode_envelope("s").unwrap()), b""),
    );
    add(
        t,
        "ok--inline-u64",
        fz::queue_input(0, &inline(&fz::encode_envelope(&5u64).unwrap()), b""),
    );
    let mut lies = fz::encode_envelope(&5u64).unwrap();
    lies[1] = 2;
    add(
        t,
        "decode--inline-fd-count-lies",
        fz::queue_input(0, &inline(&lies), b""),
    );
    add(
        t,
        "decode--inline-3-unannounced-fds",
        fz::queue_input(1 << 2, &inline(&fz::encode_envelope(&5u64).unwrap()), b""),
    );
    add(
        t,
        "decode--oob-without-memfd",
        fz::queue_input(0, &oob(5), b""),
    );
    add(
        t,
        "decode--oob-short-header",
        fz::queue_input(2 << 2, &[2, 0, 0], b"tail"),
    );
    add(
        t,
        "decode--oob-length-mismatch",
        fz::queue_input(2 << 2, &oob(11), b"ten bytes!"),
    );
    add(
        t,
        "decode--oob-unsealed-memfd",
        fz::queue_input(3 << 2, &oob(10), b"ten bytes!"),
    );
    add(
        t,
        "decode--oob-socket-instead-of-memfd",
        fz::queue_input(1 << 2, &oob(10), b""),
    );
    add(
        t,
        "too-large--oob-2pow62",
        fz::queue_input(2 << 2, &oob(1 << 62), b"tail"),
    );
    add(
        t,
        "too-large--oob-max-plus-1",
        fz::queue_input(2 << 2, &oob((4 << 30) + 1), b"tail"),
    );
    add(
        t,
        "ok--oob-u64",
        fz::queue_input(
            2 << 2,
            &oob(fz::encode_envelope(&5u64).unwrap().len() as u64),
            &fz::encode_envelope(&5u64).unwrap(),
        ),
    );
    add(
        t,
        "decode--oob-memfd-not-an-envelope",
        fz::queue_input(2 << 2, &oob(12), b"not envelope"),
    );
    add(
        t,
        "decode--connection-without-fd",
        fz::queue_input(3, &inline(&no_fd_conn()), b""),
    );
    add(
        t,
        "decode--datagram-64k-garbage",
        fz::queue_input(0, &inline(&[0xA7; 65_000]), b""),
    );

    // --- manager_request / manager_reply: postcard payloads.
    for (t, ok) in [("manager_request", [0u8, 1]), ("manager_reply", [2, 3])] {
        add(t, "ok--sample-a", fz::manager_sample(ok[0]));
        add(t, "ok--sample-b", fz::manager_sample(ok[1]));
        add(t, "decode--empty", Vec::new());
        add(t, "decode--variant-200", vec![200, 1]);
        let mut cut = fz::manager_sample(ok[1]);
        cut.truncate(cut.len() - 2);
        add(t, "decode--truncated", cut);
        add(t, "decode--varint-overlong", vec![0xff; 12]);
    }
    // Request::Lookup { name: <2^62 bytes> }: a length, not an allocation.
    add(
        "manager_request",
        "decode--name-length-2pow62",
        vec![3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f],
    );
    // Reply::Values(<2^62 blobs>).
    add(
        "manager_reply",
        "decode--vec-length-2pow62",
        vec![0, 6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f],
    );

    // --- manager_channel: selector (0 requests, 1 replies, 2 spin), then frames.
    let t = "manager_channel";
    add(
        t,
        "ok--two-requests",
        cat(&[
            &[0],
            &fz::frame(&fz::manager_sample(0)),
            &fz::frame(&fz::manager_sample(1)),
        ]),
    );
    add(
        t,
        "ok--two-replies-spinning",
        cat(&[
            &[3],
            &fz::frame(&fz::manager_sample(2)),
            &fz::frame(&fz::manager_sample(3)),
        ]),
    );
    add(
        t,
        "decode--garbage-request-frame",
        cat(&[&[0], &fz::frame(&[200, 1, 2])]),
    );
    add(t, "decode--negative-length", cat(&[&[0], &be(-5)]));
    add(t, "decode--truncated", cat(&[&[0], &be(50), b"short"]));
    add(
        t,
        "decode--2gib-claimed-10-sent",
        cat(&[&[1], &be(i32::MAX), &[0; 10]]),
    );
    add(t, "too-large--2pow62", cat(&[&[0], &long_header(1 << 62)]));
    add(
        t,
        "too-large--default-max-plus-1",
        cat(&[&[1], &long_header((4 << 30) + 1)]),
    );

    // --- manager_mailbox: selector (1 memfd, 2 spin), then the slot: state
    // (u32 LE, 1 full), asleep (u32), length (u64 LE, bit 63 in the memfd),
    // the message; past 64 KiB, the memfd's bytes.
    let t = "manager_mailbox";
    let slot = |state: u32, len: u64, body: &[u8]| {
        cat(&[
            &state.to_le_bytes(),
            &0u32.to_le_bytes(),
            &len.to_le_bytes(),
            body,
        ])
    };
    let req = fz::manager_sample(0);
    add(
        t,
        "ok--a-request",
        cat(&[&[0], &slot(1, req.len() as u64, &req)]),
    );
    add(
        t,
        "ok--a-request-spinning",
        cat(&[&[2], &slot(1, req.len() as u64, &req)]),
    );
    let mut long = slot(1, (1 << 63) | req.len() as u64, &[]);
    long.resize(64 * 1024, 0);
    add(t, "ok--a-request-in-a-memfd", cat(&[&[1], &long, &req]));
    add(t, "eof--an-empty-slot", cat(&[&[0], &slot(0, 5, b"hello")]));
    add(
        t,
        "eof--a-garbage-state",
        cat(&[&[2], &slot(7, 5, b"hello")]),
    );
    add(t, "eof--nothing-written", vec![0]);
    add(
        t,
        "decode--length-past-the-slot",
        cat(&[&[0], &slot(1, 70_000, b"x")]),
    );
    add(
        t,
        "decode--in-a-memfd-that-never-came",
        cat(&[&[0], &slot(1, (1 << 63) | 10, b"")]),
    );
    add(
        t,
        "decode--a-memfd-of-another-length",
        cat(&[&[1], &slot(1, (1 << 63) | 1000, b""), b"short"]),
    );
    add(
        t,
        "too-large--a-memfd-claiming-2pow62",
        cat(&[&[1], &slot(1, (1 << 63) | (1 << 62), b"")]),
    );
    add(
        t,
        "decode--a-garbage-request",
        cat(&[&[0], &slot(1, 3, &[200, 1, 2])]),
    );

    // --- pool_task / pool_result: body ++ postcard(trailer) ++ seq (u32) ++ [len].
    let items = fz::encode_envelope(&vec![1u64, 2, 3]).unwrap();
    let five = fz::encode_envelope(&5u64).unwrap();
    for t in ["pool_task", "pool_result"] {
        add(t, "decode--empty", Vec::new());
        add(t, "decode--one-byte", vec![0]);
        add(
            t,
            "decode--trailer-longer-than-frame",
            vec![0, 0, 0, 0, 0, 200],
        );
        add(
            t,
            "decode--trailer-garbage",
            vec![0xff, 0xff, 0xff, 0, 0, 0, 0, 3],
        );
    }
    add("pool_task", "ok--chunk-of-three", fz::pool_frame(2, &items));
    add(
        "pool_task",
        "ok--garbage-body-is-reported-in-the-value",
        fz::pool_frame(2, b"junk"),
    );
    add("pool_result", "ok--done-5", fz::pool_frame(0, &five));
    add("pool_result", "ok--ready", fz::pool_frame(1, b""));
    let mut cut = fz::pool_frame(0, &five);
    let n = cut.len();
    cut[n - 1] = 40; // the trailer claims 40 bytes
    add("pool_result", "decode--trailer-length-lies", cut);
    v
}

/// The envelope of a `Connection` whose fd count and index say "no fd".
fn no_fd_conn() -> Vec<u8> {
    let (a, _b) = mp::pipe(true).unwrap();
    let mut bytes = fz::encode_envelope(&a).unwrap();
    bytes[1] = 0;
    bytes
}
