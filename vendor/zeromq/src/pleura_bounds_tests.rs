// pleura patch: tests of SocketOptions::max_peers and SocketOptions::max_subscriptions,
// with real sockets on loopback TCP and raw ZMTP peers (no dev-dependencies).

use crate::transport::peer_slot::PeerSlot;
use crate::{
    async_rt, MultiPeerBackend, PubSocket, Socket, SocketEvent, SocketOptions, SocketRecv,
    SocketSend, SubSocket, XPubSocket, ZmqError, ZmqMessage,
};

use futures::channel::mpsc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A ZMTP 3.0 greeting, NULL mechanism, as client.
fn greeting() -> Vec<u8> {
    let mut g = vec![0u8; 64];
    g[0] = 0xFF;
    g[9] = 0x7F;
    g[10] = 3;
    g[12..16].copy_from_slice(b"NULL");
    g
}

/// A READY command announcing `socket_type`.
fn ready(socket_type: &str) -> Vec<u8> {
    let mut body = vec![5];
    body.extend_from_slice(b"READY");
    body.push(11);
    body.extend_from_slice(b"Socket-Type");
    body.extend_from_slice(&(socket_type.len() as u32).to_be_bytes());
    body.extend_from_slice(socket_type.as_bytes());
    let mut frame = vec![0x04, body.len() as u8];
    frame.extend_from_slice(&body);
    frame
}

/// A one-part message in a short frame.
fn short_message(body: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x00, body.len() as u8];
    frame.extend_from_slice(body);
    frame
}

fn subscribe(topic: &[u8]) -> Vec<u8> {
    short_message(&[&[1], topic].concat())
}

fn unsubscribe(topic: &[u8]) -> Vec<u8> {
    short_message(&[&[0], topic].concat())
}

fn tcp_addr(endpoint: &crate::Endpoint) -> String {
    endpoint
        .to_string()
        .trim_start_matches("tcp://")
        .to_string()
}

async fn raw(endpoint: &crate::Endpoint, send: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(tcp_addr(endpoint)).await.unwrap();
    if !send.is_empty() {
        s.write_all(send).await.unwrap();
    }
    s
}

/// Whether the other side closed (end of stream or reset) within `within`, discarding
/// what it sends.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match async_rt::task::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

fn held(backend: &Arc<dyn MultiPeerBackend>) -> usize {
    backend.socket_options().peers_held.load(Ordering::Acquire)
}

/// Waits until `held(backend) == n`.
async fn wait_held(backend: &Arc<dyn MultiPeerBackend>, n: usize, what: &str) {
    let t0 = Instant::now();
    while held(backend) != n {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{what}: {} slots held, expected {n}",
            held(backend)
        );
        async_rt::task::sleep(Duration::from_millis(5)).await;
    }
}

fn refusals(events: &mut mpsc::Receiver<SocketEvent>, max: usize) -> usize {
    let mut n = 0;
    while let Ok(ev) = events.try_recv() {
        if let SocketEvent::AcceptFailed(ZmqError::PeerLimit(m)) = ev {
            assert_eq!(m, max);
            n += 1;
        }
    }
    n
}

/// Runs `sub.recv()` in a task (the SUB socket notices a peer's decode error or end of
/// stream only while it is received from); messages come out of the channel.
fn receiving(mut sub: SubSocket) -> mpsc::UnboundedReceiver<ZmqMessage> {
    let (tx, rx) = mpsc::unbounded();
    async_rt::task::spawn(async move {
        loop {
            match sub.recv().await {
                Ok(m) => {
                    if tx.unbounded_send(m).is_err() {
                        break;
                    }
                }
                Err(_) => {
                    if tx.is_closed() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

#[test]
fn peer_slots_are_counted_and_freed_on_drop() {
    let options = Arc::new(SocketOptions::default());
    assert!(matches!(PeerSlot::acquire(&options), Ok(None)));

    let mut options = SocketOptions::default();
    options.max_peers(2);
    let options = Arc::new(options);
    let a = PeerSlot::acquire(&options).unwrap().unwrap();
    let b = PeerSlot::acquire(&options).unwrap().unwrap();
    assert!(matches!(PeerSlot::acquire(&options), Err(2)));
    assert_eq!(options.peers_held.load(Ordering::Acquire), 2);
    drop(a);
    let c = PeerSlot::acquire(&options).unwrap().unwrap();
    assert!(PeerSlot::acquire(&options).is_err());
    drop((b, c));
    assert_eq!(options.peers_held.load(Ordering::Acquire), 0);
}

#[async_rt::test]
async fn connections_beyond_max_peers_are_closed_at_once_and_reported() {
    let mut options = SocketOptions::default();
    options
        .max_peers(3)
        .handshake_timeout(Duration::from_millis(1500));
    let mut sub = SubSocket::with_options(options);
    let mut events = sub.monitor();
    let endpoint = sub.bind("tcp://127.0.0.1:0").await.unwrap();
    let backend = sub.backend();
    sub.subscribe("").await.unwrap();

    // Ten connections that send their greeting and nothing more.
    let mut conns = Vec::new();
    for _ in 0..10 {
        conns.push(raw(&endpoint, &greeting()).await);
    }
    wait_held(&backend, 3, "three in the handshake").await;
    async_rt::task::sleep(Duration::from_millis(100)).await;
    let mut open = 0;
    for s in &mut conns {
        if !closed_within(s, Duration::from_millis(20)).await {
            open += 1;
        }
    }
    assert_eq!(open, 3, "connections left open");
    assert_eq!(held(&backend), 3);
    assert_eq!(refusals(&mut events, 3), 7);

    // The handshake timeout frees the slots; a valid publisher is then served.
    for s in &mut conns {
        assert!(closed_within(s, Duration::from_secs(3)).await);
    }
    wait_held(&backend, 0, "after the handshake timeout").await;
    let mut publisher = PubSocket::new();
    publisher.connect(&endpoint.to_string()).await.unwrap();
    wait_held(&backend, 1, "the publisher").await;
    let mut received = receiving(sub);
    let t0 = Instant::now();
    let message = loop {
        publisher.send(ZmqMessage::from("frame")).await.unwrap();
        if let Ok(m) = received.try_recv() {
            break m;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "nothing received");
        async_rt::task::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(message.get(0).unwrap().as_ref(), b"frame");
    drop(publisher);
    wait_held(&backend, 0, "the publisher gone").await;
}

#[async_rt::test]
async fn every_way_a_connection_ends_frees_its_slot() {
    let mut options = SocketOptions::default();
    options
        .max_peers(1)
        .max_message_size(1024)
        .handshake_timeout(Duration::from_millis(1000));
    let mut sub = SubSocket::with_options(options);
    let mut events = sub.monitor();
    let endpoint = sub.bind("tcp://127.0.0.1:0").await.unwrap();
    let backend = sub.backend();
    sub.subscribe("").await.unwrap();
    let mut received = receiving(sub);

    let handshaken = [greeting(), ready("PUB")].concat();
    let huge_header = [&[0x02u8][..], &(1u64 << 40).to_be_bytes()].concat();
    let steps: [(&str, Vec<u8>, bool); 5] = [
        ("a bad greeting", vec![0xAB; 64], false),
        (
            "an incompatible peer (PUSH)",
            [greeting(), ready("PUSH")].concat(),
            false,
        ),
        ("a silent peer (handshake timeout)", vec![], false),
        ("a frame over max_message_size", handshaken.clone(), true),
        ("a peer that hangs up", handshaken.clone(), true),
    ];
    for (what, send, after_handshake) in steps {
        let mut s = raw(&endpoint, &[]).await;
        wait_held(&backend, 1, what).await;
        // The one slot is taken: another connection is refused at once.
        let mut other = raw(&endpoint, &greeting()).await;
        assert!(
            closed_within(&mut other, Duration::from_secs(1)).await,
            "{what}: a second connection was not refused"
        );
        s.write_all(&send).await.unwrap();
        if after_handshake {
            // Past the handshake it stays open until it ends it.
            assert!(
                !closed_within(&mut s, Duration::from_millis(500)).await,
                "{what}"
            );
            if what.contains("max_message_size") {
                s.write_all(&huge_header).await.unwrap();
                assert!(
                    closed_within(&mut s, Duration::from_secs(2)).await,
                    "{what}"
                );
            } else {
                drop(s);
            }
        } else {
            assert!(
                closed_within(&mut s, Duration::from_secs(2)).await,
                "{what}"
            );
        }
        wait_held(&backend, 0, what).await;
    }
    assert_eq!(refusals(&mut events, 1), 5);

    // A valid publisher still gets its message through, and frees its slot when dropped.
    let mut publisher = PubSocket::new();
    publisher.connect(&endpoint.to_string()).await.unwrap();
    let t0 = Instant::now();
    loop {
        publisher.send(ZmqMessage::from("frame")).await.unwrap();
        if received.try_recv().is_ok() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "nothing received");
        async_rt::task::sleep(Duration::from_millis(20)).await;
    }
    drop(publisher);
    wait_held(&backend, 0, "the publisher gone").await;
}

#[async_rt::test]
async fn no_limit_by_default_and_connections_made_are_not_counted() {
    let mut sub = SubSocket::new();
    let endpoint = sub.bind("tcp://127.0.0.1:0").await.unwrap();
    let mut conns = Vec::new();
    for _ in 0..20 {
        conns.push(raw(&endpoint, &greeting()).await);
    }
    async_rt::task::sleep(Duration::from_millis(200)).await;
    for s in &mut conns {
        assert!(!closed_within(s, Duration::from_millis(10)).await);
    }
    drop(sub);

    // max_peers(1) on a socket that connects to two publishers: both are served.
    let mut options = SocketOptions::default();
    options.max_peers(1);
    let mut sub = SubSocket::with_options(options);
    let mut publishers = Vec::new();
    for _ in 0..2 {
        let mut p = PubSocket::new();
        let endpoint = p.bind("tcp://127.0.0.1:0").await.unwrap();
        sub.connect(&endpoint.to_string()).await.unwrap();
        publishers.push(p);
    }
    sub.subscribe("").await.unwrap();
    let mut received = receiving(sub);
    let mut seen = [false; 2];
    let t0 = Instant::now();
    while seen != [true, true] {
        for (i, p) in publishers.iter_mut().enumerate() {
            p.send(ZmqMessage::from(format!("from {i}"))).await.unwrap();
        }
        async_rt::task::sleep(Duration::from_millis(20)).await;
        while let Ok(m) = received.try_recv() {
            let text = String::try_from(m).unwrap();
            seen[text
                .strip_prefix("from ")
                .unwrap()
                .parse::<usize>()
                .unwrap()] = true;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "seen {seen:?}");
    }
}

async fn subscriptions_of(publisher: &PubSocket) -> Vec<usize> {
    let mut lens = Vec::new();
    let mut iter = publisher.backend.subscribers.begin_async().await;
    while let Some(entry) = iter {
        lens.push(entry.subscriptions.len());
        iter = entry.next_async().await;
    }
    lens
}

/// Waits until the publisher's subscribers hold `expected` subscriptions each.
async fn wait_subscriptions(publisher: &PubSocket, expected: &[usize], what: &str) {
    let t0 = Instant::now();
    loop {
        let mut lens = subscriptions_of(publisher).await;
        lens.sort_unstable();
        if lens == expected {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{what}: subscriptions {lens:?}, expected {expected:?}"
        );
        async_rt::task::sleep(Duration::from_millis(5)).await;
    }
}

#[async_rt::test]
async fn pub_disconnects_a_peer_over_max_subscriptions() {
    let mut options = SocketOptions::default();
    options.max_subscriptions(3).max_peers(4);
    let mut publisher = PubSocket::with_options(options);
    let mut events = publisher.monitor();
    let endpoint = publisher.bind("tcp://127.0.0.1:0").await.unwrap();
    let backend = publisher.backend();

    // A normal subscriber alongside.
    let mut consumer = SubSocket::new();
    consumer.connect(&endpoint.to_string()).await.unwrap();
    consumer.subscribe("t").await.unwrap();
    wait_subscriptions(&publisher, &[1], "the consumer").await;

    let mut s = raw(&endpoint, &[greeting(), ready("SUB")].concat()).await;
    for topic in [&b"a"[..], b"b", b"c"] {
        s.write_all(&subscribe(topic)).await.unwrap();
    }
    wait_subscriptions(&publisher, &[1, 3], "three subscriptions").await;
    // Unsubscribing frees one: a fourth distinct topic fits again.
    s.write_all(&unsubscribe(b"b")).await.unwrap();
    wait_subscriptions(&publisher, &[1, 2], "one unsubscribed").await;
    s.write_all(&subscribe(b"d")).await.unwrap();
    wait_subscriptions(&publisher, &[1, 3], "a new one after it").await;
    assert!(!closed_within(&mut s, Duration::from_millis(200)).await);
    assert_eq!(held(&backend), 2);

    // One more (a duplicate counts too): disconnected; the consumer stays.
    s.write_all(&subscribe(b"a")).await.unwrap();
    assert!(
        closed_within(&mut s, Duration::from_secs(2)).await,
        "not disconnected"
    );
    wait_subscriptions(&publisher, &[1], "the peer over the bound").await;
    wait_held(&backend, 1, "the peer over the bound").await;
    let mut disconnected = false;
    while let Ok(ev) = events.try_recv() {
        disconnected |= matches!(ev, SocketEvent::Disconnected(_));
    }
    assert!(disconnected, "no Disconnected event");

    // A flood of identical SUBSCRIBEs is cut at the bound as well.
    let mut s = raw(&endpoint, &[greeting(), ready("SUB")].concat()).await;
    let flood: Vec<u8> = (0..10_000).flat_map(|_| subscribe(b"")).collect();
    let _ = s.write_all(&flood).await;
    assert!(
        closed_within(&mut s, Duration::from_secs(2)).await,
        "flood not cut"
    );
    wait_subscriptions(&publisher, &[1], "after the flood").await;

    let mut received = receiving(consumer);
    let t0 = Instant::now();
    loop {
        publisher.send(ZmqMessage::from("topic")).await.unwrap();
        async_rt::task::sleep(Duration::from_millis(20)).await;
        if let Ok(m) = received.try_recv() {
            assert_eq!(m.get(0).unwrap().as_ref(), b"topic");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the consumer got nothing"
        );
    }
}

#[async_rt::test]
async fn pub_without_max_subscriptions_is_unbounded() {
    let mut publisher = PubSocket::new();
    let endpoint = publisher.bind("tcp://127.0.0.1:0").await.unwrap();
    let mut s = raw(&endpoint, &[greeting(), ready("SUB")].concat()).await;
    let many: Vec<u8> = (0..2000).flat_map(|_| subscribe(b"x")).collect();
    s.write_all(&many).await.unwrap();
    wait_subscriptions(&publisher, &[2000], "2000 subscriptions").await;
    assert!(!closed_within(&mut s, Duration::from_millis(100)).await);
}

#[async_rt::test]
async fn xpub_disconnects_a_peer_over_max_subscriptions() {
    let mut options = SocketOptions::default();
    options.max_subscriptions(1);
    let mut xpub = XPubSocket::with_options(options);
    let endpoint = xpub.bind("tcp://127.0.0.1:0").await.unwrap();
    let mut s = raw(&endpoint, &[greeting(), ready("SUB")].concat()).await;
    s.write_all(&subscribe(b"a")).await.unwrap();
    s.write_all(&subscribe(b"b")).await.unwrap();
    let first = async_rt::task::timeout(Duration::from_secs(5), xpub.recv())
        .await
        .expect("the first subscription")
        .unwrap();
    assert_eq!(first.get(0).unwrap().as_ref(), b"\x01a");
    // The second is refused: not exposed, and the peer is disconnected.
    let second = async_rt::task::timeout(Duration::from_millis(300), xpub.recv()).await;
    assert!(second.is_err(), "{second:?}");
    assert!(closed_within(&mut s, Duration::from_secs(2)).await);
}

#[cfg(all(feature = "ipc-transport", target_family = "unix"))]
#[async_rt::test]
async fn ipc_connections_beyond_max_peers_are_closed_at_once() {
    use tokio::net::UnixStream;

    let path = std::env::temp_dir().join(format!("z-mp-{}.sock", uuid::Uuid::new_v4()));
    let mut options = SocketOptions::default();
    options.max_peers(1);
    let mut sub = SubSocket::with_options(options);
    let mut events = sub.monitor();
    sub.bind(&format!("ipc://{}", path.display()))
        .await
        .unwrap();
    let backend = sub.backend();

    let mut first = UnixStream::connect(&path).await.unwrap();
    first.write_all(&greeting()).await.unwrap();
    wait_held(&backend, 1, "the first").await;
    let mut second = UnixStream::connect(&path).await.unwrap();
    let mut buf = [0u8; 1024];
    let read = async_rt::task::timeout(Duration::from_secs(2), second.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    assert_eq!(refusals(&mut events, 1), 1);
    drop(first);
    wait_held(&backend, 0, "the first gone").await;
    let _third = UnixStream::connect(&path).await.unwrap();
    wait_held(&backend, 1, "the third").await;
    drop(sub);
}

/// Bytes a raw peer reads until `quiet` passes without any.
async fn drain(s: &mut TcpStream, quiet: Duration) -> usize {
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0;
    loop {
        match async_rt::task::timeout(quiet, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => total += n,
            _ => return total,
        }
    }
}

/// A subscriber that does not read holds at most `send_queue` messages (plus what the
/// kernel's socket buffers took): of 2,000 messages of 64 KiB (125 MiB) published while it
/// stalls, it later reads a small part; without the bound it would read them all.
#[async_rt::test]
async fn pub_drops_beyond_send_queue_for_a_stalled_subscriber() {
    let mut options = SocketOptions::default();
    options.send_queue(16);
    let mut publisher = PubSocket::with_options(options);
    let endpoint = publisher.bind("tcp://127.0.0.1:0").await.unwrap();
    let mut s = raw(&endpoint, &[greeting(), ready("SUB"), subscribe(b"")].concat()).await;
    wait_subscriptions(&publisher, &[1], "the stalled subscriber").await;
    let body = bytes::Bytes::from(vec![7u8; 64 << 10]);
    for _ in 0..2000 {
        publisher.send(ZmqMessage::from(body.clone())).await.unwrap();
        // Let the fan-out task move each message to the subscriber's queue.
        tokio::task::yield_now().await;
    }
    async_rt::task::sleep(Duration::from_millis(300)).await;
    let read = drain(&mut s, Duration::from_millis(500)).await;
    let sent = 2000 * (64 << 10);
    assert!(read > 16 * (64 << 10), "read {read} bytes: the first messages must arrive");
    assert!(read < sent / 4, "read {read} of {sent} bytes: the queue was not bounded");
}
