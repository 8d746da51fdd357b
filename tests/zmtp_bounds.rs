//! The ingest and publish sockets against hostile ZMTP peers before any pleura
//! authentication: frame headers announcing huge lengths (during and after the
//! handshake), messages above `[daemon] max_message_bytes`, connections that never finish
//! the handshake (`[daemon] handshake_timeout_ms`), more connections than
//! `[daemon] max_connections`, and a flood of subscriptions on the publish socket. Each
//! test runs a real `pleura serve` (ingest bound on a free loopback port, stage "none")
//! and talks raw TCP to it, then checks that a valid publisher (or consumer) is still
//! served.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::served::{self, Served};
use pleura::protocol::Dtype;
use pleura::testing::tiny_scan;
use pleura::wire;
use pleura_bridge::publisher::{now_ns, Mode, Publisher};

/// Starts [`served::serve`] with stage "none", a queue of 16 and `extra` lines in
/// `[daemon]`.
fn serve(dir: &Path, extra: &str) -> Served {
    served::serve(
        dir,
        &format!("stage = \"none\"\nqueue_capacity = 16\n{extra}"),
    )
}

/// A ZMTP 3.0 greeting of the NULL mechanism, as client (as-server 0).
fn greeting() -> [u8; 64] {
    let mut g = [0u8; 64];
    g[0] = 0xFF; // signature: 0xFF, 8 bytes of padding, 0x7F
    g[9] = 0x7F;
    g[10] = 3; // version 3.0
    g[11] = 0;
    g[12..16].copy_from_slice(b"NULL"); // mechanism, zero-padded to 20 bytes
    g // as-server (byte 32) 0, 31 bytes of filler
}

/// A READY command announcing a PUB socket (short command frame).
fn ready_pub() -> Vec<u8> {
    let mut body = vec![5];
    body.extend_from_slice(b"READY");
    body.push(11);
    body.extend_from_slice(b"Socket-Type");
    body.extend_from_slice(&3u32.to_be_bytes());
    body.extend_from_slice(b"PUB");
    let mut frame = vec![0x04, body.len() as u8];
    frame.extend_from_slice(&body);
    frame
}

/// The header of a long frame: flags (0x02 long, | 0x04 command, | 0x01 more) and the
/// 8-byte big-endian length.
fn long_header(flags: u8, len: u64) -> Vec<u8> {
    let mut h = vec![flags];
    h.extend_from_slice(&len.to_be_bytes());
    h
}

/// A raw TCP connection to the ingest socket.
fn connect(d: &Served) -> TcpStream {
    connect_to(&d.ingest)
}

fn connect_to(endpoint: &str) -> TcpStream {
    let s = TcpStream::connect(endpoint.trim_start_matches("tcp://")).expect("connect");
    s.set_nodelay(true).unwrap();
    s
}

/// Connects, sends the greeting and the READY command of a PUB peer.
fn handshaken(d: &Served) -> TcpStream {
    let mut s = connect(d);
    s.write_all(&greeting()).unwrap();
    s.write_all(&ready_pub()).unwrap();
    s
}

/// Writes what it can: the daemon may close the connection (and reset it) while the rest
/// is still being sent.
fn write_lenient(s: &mut TcpStream, bytes: &[u8]) {
    let _ = s.write_all(bytes);
}

/// Reads (and discards what the daemon sends: its greeting, READY and subscription) until
/// the daemon closes the connection: Some(time it took) on end of stream or a reset,
/// None when the connection is still open after `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.saturating_sub(t0.elapsed());
        if left.is_zero() {
            return None;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Some(t0.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Some(t0.elapsed()), // reset by the daemon
        }
    }
}

fn assert_closed(s: &mut TcpStream, what: &str, d: &Served) {
    assert!(
        closed_within(s, Duration::from_secs(5)).is_some(),
        "{what}: the daemon kept the connection open; log:\n{}",
        d.log_text()
    );
}

/// A valid publisher (the bridge's) connects and sends a scan and `n` frames; they are
/// all accepted.
fn valid_publisher_is_served(d: &Served, n: u64) {
    let before = d.metric("pleura_frames_accepted_total");
    let mut p = Publisher::open(&d.ingest, Mode::Connect, None, Duration::from_secs(10))
        .expect("publisher connects");
    assert!(p.wait_for_subscriber(Duration::from_secs(10)));
    let scan = tiny_scan();
    p.publish_scan(3, wire::scan_to_fields(&scan)).unwrap();
    let shape = wire::frame_shape(&scan).map(|n| n as u32);
    let payload = vec![0u8; shape.iter().product::<u32>() as usize * 2];
    for seq in 0..n {
        p.publish_frame(3, seq, now_ns(), Dtype::I16, shape, &payload)
            .unwrap();
    }
    assert_eq!(p.flush(Duration::from_secs(5)), 0);
    d.wait_metric(
        "pleura_frames_accepted_total",
        before + n as f64,
        Duration::from_secs(10),
    );
}

/// Frame headers announcing 2^40 and 2^32 bytes, during the handshake (a long command in
/// place of READY, on the ingest and on the publish socket) and after it (a long message):
/// the daemon refuses them before allocating, closes those connections, stays alive and
/// small, and still serves a valid publisher. Before the vendored zeromq patch the first one aborted the daemon
/// ("memory allocation of 1099511693321 bytes failed").
#[test]
fn huge_frame_lengths_are_refused_without_allocating() {
    let dir = common::tempdir();
    let mut d = serve(dir.path(), "");

    let mut s = connect(&d);
    s.write_all(&greeting()).unwrap();
    write_lenient(&mut s, &long_header(0x06, 1 << 40));
    assert_closed(&mut s, "long command of 2^40 bytes", &d);
    d.assert_healthy("long command of 2^40 bytes");

    for (what, len) in [
        ("long message of 2^40 bytes", 1u64 << 40),
        ("long message of 2^32 bytes", 1u64 << 32),
    ] {
        let mut s = handshaken(&d);
        write_lenient(&mut s, &long_header(0x02, len));
        assert_closed(&mut s, what, &d);
        d.assert_healthy(what);
    }

    // The publish socket is reachable before authentication as well.
    let mut s = connect_to(&d.publish);
    s.write_all(&greeting()).unwrap();
    write_lenient(&mut s, &long_header(0x06, 1 << 40));
    assert_closed(
        &mut s,
        "long command of 2^40 bytes to the publish socket",
        &d,
    );
    d.assert_healthy("long command of 2^40 bytes to the publish socket");

    valid_publisher_is_served(&d, 3);
    d.assert_healthy("after the valid publisher");
    assert!(
        d.metric("pleura_ingest_errors_total") >= 2.0,
        "the two refused messages after the handshake are counted: {:?}",
        d.metrics()
    );
}

/// 50 connections that never send their greeting are all closed once
/// `handshake_timeout_ms` (500 ms) has passed, and a valid publisher is still served.
#[test]
fn silent_connections_are_closed_after_the_handshake_timeout() {
    let dir = common::tempdir();
    let mut d = serve(dir.path(), "handshake_timeout_ms = 500");
    let t0 = Instant::now();
    let mut conns: Vec<TcpStream> = (0..50).map(|_| connect(&d)).collect();
    for (i, s) in conns.iter_mut().enumerate() {
        let left = Duration::from_millis(2500).saturating_sub(t0.elapsed());
        assert!(
            closed_within(s, left).is_some(),
            "silent connection {i} still open {:?} after it was made",
            t0.elapsed()
        );
    }
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "closed too early: {took:?}"
    );
    d.assert_healthy("after the silent connections");
    valid_publisher_is_served(&d, 3);
}

/// With `max_message_bytes` = 1 MiB: one 2 MiB part, and two parts of 600 KiB in one
/// message, are refused and their connections closed; a 900 KiB message goes through to
/// validation (counted, rejected as malformed) on a connection that stays open; a valid
/// publisher is served.
#[test]
fn messages_above_max_message_bytes_are_refused() {
    let dir = common::tempdir();
    let mut d = serve(dir.path(), "max_message_bytes = 1048576");

    let mut s = handshaken(&d);
    let mut msg = long_header(0x02, 2 << 20);
    msg.resize(msg.len() + (2 << 20), 0xAB);
    write_lenient(&mut s, &msg);
    assert_closed(&mut s, "a 2 MiB part", &d);
    d.assert_healthy("a 2 MiB part");

    let mut s = handshaken(&d);
    let part = vec![0xCD; 600 << 10];
    let mut msg = long_header(0x03, part.len() as u64); // more
    msg.extend_from_slice(&part);
    msg.extend_from_slice(&long_header(0x02, part.len() as u64)); // last
    msg.extend_from_slice(&part);
    write_lenient(&mut s, &msg);
    assert_closed(&mut s, "two 600 KiB parts", &d);
    d.assert_healthy("two 600 KiB parts");

    let received = d.metric("pleura_messages_received_total");
    let mut s = handshaken(&d);
    let mut msg = long_header(0x02, 900 << 10);
    msg.resize(msg.len() + (900 << 10), 0xEF);
    s.write_all(&msg).unwrap();
    d.wait_metric(
        "pleura_messages_received_total",
        received + 1.0,
        Duration::from_secs(10),
    );
    assert_eq!(
        closed_within(&mut s, Duration::from_millis(500)),
        None,
        "a message below the limit keeps its connection open"
    );
    d.assert_healthy("a 900 KiB message");
    valid_publisher_is_served(&d, 3);
}

/// With `max_connections` = 8: of 30 connections that send only their greeting, to the
/// ingest socket and to the publish socket, 8 stay open (in the handshake) and the daemon
/// closes the 22 others at once, counting the refused ingest ones in
/// `pleura_ingest_errors_total`; the handshake timeout then frees the slots and a valid
/// publisher is served.
#[test]
fn connections_beyond_max_connections_are_refused() {
    let dir = common::tempdir();
    let mut d = serve(
        dir.path(),
        "max_connections = 8\nhandshake_timeout_ms = 3000",
    );
    for (socket, endpoint) in [("ingest", d.ingest.clone()), ("publish", d.publish.clone())] {
        let errors = d.metric("pleura_ingest_errors_total");
        let t0 = Instant::now();
        let mut conns: Vec<TcpStream> = (0..30)
            .map(|_| {
                let mut s = connect_to(&endpoint);
                s.write_all(&greeting()).unwrap();
                s
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let mut open = 0;
        for s in &mut conns {
            if closed_within(s, Duration::from_millis(50)).is_none() {
                open += 1;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_millis(2500),
            "{socket}: too slow to tell before the handshake timeout: {:?}",
            t0.elapsed()
        );
        assert_eq!(
            open,
            8,
            "{socket}: connections left open; log:\n{}",
            d.log_text()
        );
        if socket == "ingest" {
            d.wait_metric(
                "pleura_ingest_errors_total",
                errors + 22.0,
                Duration::from_secs(5),
            );
        }
        d.assert_healthy(&format!("{socket}: 30 connections"));

        // The 8 held ones are closed at the handshake timeout, which frees their slots.
        for (i, s) in conns.iter_mut().enumerate() {
            assert!(
                closed_within(s, Duration::from_secs(6)).is_some(),
                "{socket}: connection {i} still open {:?} after it was made",
                t0.elapsed()
            );
        }
        if socket == "ingest" {
            d.wait_metric(
                "pleura_ingest_errors_total",
                errors + 30.0,
                Duration::from_secs(5),
            );
        }
    }
    valid_publisher_is_served(&d, 3);
    d.assert_healthy("after the valid publisher");
}

/// A consumer that receives one status message from the publish socket (pyzmq's SUB):
/// prints "status".
const STATUS_CONSUMER: &str = r#"
import sys, zmq
ctx = zmq.Context()
sub = ctx.socket(zmq.SUB)
sub.setsockopt(zmq.SUBSCRIBE, b"PLRA\x02\x00\x04\x00")   # status messages
sub.connect(sys.argv[1])
poller = zmq.Poller(); poller.register(sub, zmq.POLLIN)
if not poller.poll(10000):
    raise SystemExit("no status message for 10 s")
sub.recv_multipart()
print("status")
"#;

/// A raw SUB peer on the publish socket sends 10,000 SUBSCRIBE messages (distinct
/// 100-byte prefixes): the daemon disconnects it once it holds 1024 (staying small), and a
/// normal consumer still receives status messages.
#[test]
fn a_subscription_flood_on_the_publish_socket_is_cut() {
    let dir = common::tempdir();
    let mut d = serve(dir.path(), "status_interval_ms = 100");

    let subscribe = |i: usize| {
        let mut body = vec![1u8];
        body.extend_from_slice(format!("{i:0100}").as_bytes());
        let mut frame = vec![0x00, body.len() as u8];
        frame.extend_from_slice(&body);
        frame
    };
    let mut ready_sub = ready_pub();
    let at = ready_sub.len() - 3;
    ready_sub.splice(at.., *b"SUB");
    let mut s = connect_to(&d.publish);
    s.write_all(&greeting()).unwrap();
    s.write_all(&ready_sub).unwrap();
    // Up to the bound the peer is served ...
    let below: Vec<u8> = (0..1000).flat_map(subscribe).collect();
    s.write_all(&below).unwrap();
    assert_eq!(
        closed_within(&mut s, Duration::from_millis(500)),
        None,
        "1000 subscriptions are within the bound"
    );
    // ... past it, disconnected.
    let rest: Vec<u8> = (1000..10_000).flat_map(subscribe).collect();
    write_lenient(&mut s, &rest);
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).is_some(),
        "the peer of 10,000 subscriptions was kept; log:\n{}",
        d.log_text()
    );
    d.assert_healthy("10,000 subscriptions");

    let out = common::run_python(STATUS_CONSUMER, &[&d.publish]);
    assert_eq!(out.trim(), "status");
    d.assert_healthy("after the consumer");
}

/// Zero for any transport bound is refused at start, naming the key and the value.
#[test]
fn zero_bounds_are_refused_at_start() {
    for key in [
        "max_message_bytes",
        "handshake_timeout_ms",
        "max_connections",
    ] {
        let dir = common::tempdir();
        let extra = format!("stage = \"none\"\n{key} = 0");
        let config = served::write_config(dir.path(), &extra, "");
        let out = common::pleura()
            .args(["serve", "--config"])
            .arg(&config)
            .output()
            .expect("run pleura serve");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{key} = 0 was accepted: {stderr}");
        assert!(
            stderr.contains(&format!("{key} = 0")),
            "the error names {key}: {stderr}"
        );
    }
}
