//! The scanner-side publisher: a ZeroMQ PUB socket speaking the wire protocol.
//!
//! Usable from plain synchronous code (and through the C ABI, [`crate::ffi`]): each
//! [`Publisher`] owns a small tokio runtime (one worker thread) on which the pure-Rust
//! `zeromq` socket runs; the methods block until the message is queued on the socket.
//!
//! The publisher takes care of the protocol's duties: it picks a random stream id at
//! open, computes CRC32C, signs with the key when one is given, numbers its scan
//! announcements (the scan epoch: one more at every [`Publisher::publish_scan`]), and
//! repeats the last scan message as it was, same epoch, at least every [`SCAN_REPEAT`]
//! (before the next frame) so a late subscriber learns the scan.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use zeromq::{PubSocket, Socket, SocketEvent, SocketSend, ZmqMessage};

use crate::protocol::{self, Dtype, Field, FrameHeader, Key, ScanMessage};

/// How often the last scan message is repeated while frames flow.
pub const SCAN_REPEAT: Duration = Duration::from_secs(1);
/// Time given to a new subscriber's subscription to reach the PUB socket after its
/// connection is established (ZeroMQ's "slow joiner"; see [`Publisher::wait_for_subscriber`]).
const SUBSCRIPTION_GRACE: Duration = Duration::from_millis(100);
/// How long closing waits for queued messages to be written (as ZeroMQ's `ZMQ_LINGER`).
pub const LINGER: Duration = Duration::from_secs(2);

/// Part 0 of an outgoing message, holding a token while the socket holds the message:
/// the number of live tokens is the number of messages not yet written (or dropped).
struct Tracked {
    bytes: Vec<u8>,
    _token: Arc<()>,
}

impl AsRef<[u8]> for Tracked {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Errors of the publisher.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("cannot start the bridge's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot {action} {endpoint}: {message}")]
    Endpoint {
        action: &'static str,
        endpoint: String,
        message: String,
    },
    #[error("connecting to {endpoint} timed out after {timeout:?}")]
    ConnectTimeout { endpoint: String, timeout: Duration },
    #[error("invalid scan field: {0}")]
    Field(String),
    #[error("frame shape {shape:?} of {dtype} needs {needed} bytes, payload has {len}")]
    Payload {
        shape: [u32; 4],
        dtype: &'static str,
        needed: u64,
        len: usize,
    },
    #[error("no scan published yet: publish the scan parameters before frames")]
    NoScan,
    #[error("this stream announced {} scans, all its epochs: open a new publisher (stream)", u64::from(u32::MAX) + 1)]
    EpochsExhausted,
    #[error("send failed: {0}")]
    Send(String),
}

/// Whether the publisher binds its endpoint or connects to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Bind,
    Connect,
}

/// A scanner-side PUB socket.
pub struct Publisher {
    socket: PubSocket,
    runtime: tokio::runtime::Runtime,
    events: futures::channel::mpsc::Receiver<SocketEvent>,
    key: Option<Key>,
    stream_id: u64,
    endpoint: String,
    last_scan: Option<(Vec<Bytes>, Instant)>,
    /// The epoch of the next scan announcement; None once every epoch was used.
    next_epoch: Option<u32>,
    inflight: Arc<()>,
}

/// A random stream id: std's `RandomState` is seeded from the OS's randomness per
/// process, mixed with the clock so two publishers in one process differ too.
fn random_stream_id() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// Now, ns since the UNIX epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64)
}

impl Publisher {
    /// Opens a PUB socket bound to or connected to `endpoint` (e.g. `tcp://127.0.0.1:5555`;
    /// binding port 0 picks a free port, see [`Publisher::endpoint`]). With a key every
    /// message is signed. Connecting waits at most `connect_timeout` for the peer.
    pub fn open(
        endpoint: &str,
        mode: Mode,
        key: Option<Key>,
        connect_timeout: Duration,
    ) -> Result<Self, BridgeError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pleura-bridge")
            .enable_all()
            .build()
            .map_err(BridgeError::Runtime)?;
        let (socket, events, resolved) = runtime.block_on(async {
            let mut socket = PubSocket::new();
            let events = socket.monitor();
            let resolved = match mode {
                Mode::Bind => socket
                    .bind(endpoint)
                    .await
                    .map(|e| e.to_string())
                    .map_err(|e| BridgeError::Endpoint {
                        action: "bind",
                        endpoint: endpoint.to_string(),
                        message: e.to_string(),
                    })?,
                Mode::Connect => {
                    match tokio::time::timeout(connect_timeout, socket.connect(endpoint)).await {
                        Err(_) => {
                            return Err(BridgeError::ConnectTimeout {
                                endpoint: endpoint.to_string(),
                                timeout: connect_timeout,
                            })
                        }
                        Ok(Err(e)) => {
                            return Err(BridgeError::Endpoint {
                                action: "connect to",
                                endpoint: endpoint.to_string(),
                                message: e.to_string(),
                            })
                        }
                        Ok(Ok(())) => endpoint.to_string(),
                    }
                }
            };
            Ok((socket, events, resolved))
        })?;
        Ok(Publisher {
            socket,
            runtime,
            events,
            key,
            stream_id: random_stream_id(),
            endpoint: resolved,
            last_scan: None,
            next_epoch: Some(0),
            inflight: Arc::new(()),
        })
    }

    /// The endpoint, with the port resolved when bound to port 0.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// This session's stream id.
    pub fn stream_id(&self) -> u64 {
        self.stream_id
    }

    /// Waits until a subscriber has connected (or had connected before), then a short
    /// grace period for its subscription to arrive; false on timeout. PUB sockets drop
    /// what they send while nobody subscribes, so call this before the first frame when
    /// the first frames matter.
    pub fn wait_for_subscriber(&mut self, timeout: Duration) -> bool {
        let events = &mut self.events;
        let got = self.runtime.block_on(async {
            tokio::time::timeout(timeout, async {
                use futures::StreamExt;
                while let Some(ev) = events.next().await {
                    if matches!(ev, SocketEvent::Accepted(..) | SocketEvent::Connected(..)) {
                        return true;
                    }
                }
                false
            })
            .await
            .unwrap_or(false)
        });
        if got {
            std::thread::sleep(SUBSCRIPTION_GRACE);
        }
        got
    }

    fn send(&mut self, mut parts: Vec<Bytes>) -> Result<(), BridgeError> {
        if let Some(first) = parts.first_mut() {
            *first = Bytes::from_owner(Tracked {
                bytes: first.to_vec(),
                _token: self.inflight.clone(),
            });
        }
        let msg = ZmqMessage::try_from(parts).map_err(|e| BridgeError::Send(e.to_string()))?;
        let socket = &mut self.socket;
        self.runtime
            .block_on(socket.send(msg))
            .map_err(|e| BridgeError::Send(e.to_string()))
    }

    /// Sends an already encoded message as it is (no CRC or signature added): for fault
    /// injection and for relaying.
    pub fn send_raw(&mut self, parts: Vec<Vec<u8>>) -> Result<(), BridgeError> {
        self.send(parts.into_iter().map(Bytes::from).collect())
    }

    /// Publishes the scan parameters under `scan_id` as the stream's next scan epoch (and
    /// remembers the message for repetition).
    pub fn publish_scan(&mut self, scan_id: u64, fields: Vec<Field>) -> Result<(), BridgeError> {
        let epoch = self.next_epoch.ok_or(BridgeError::EpochsExhausted)?;
        for f in &fields {
            f.check().map_err(BridgeError::Field)?;
        }
        if fields.len() > protocol::MAX_FIELDS {
            return Err(BridgeError::Field(format!(
                "{} fields, at most {}",
                fields.len(),
                protocol::MAX_FIELDS
            )));
        }
        let msg = ScanMessage {
            stream_id: self.stream_id,
            scan_id,
            epoch,
            fields,
        };
        self.next_epoch = epoch.checked_add(1);
        let parts: Vec<Bytes> = protocol::encode_scan(&msg, self.key.as_ref())
            .into_iter()
            .map(Bytes::from)
            .collect();
        self.last_scan = Some((parts.clone(), Instant::now()));
        self.send(parts)
    }

    /// Re-sends the last scan message when [`SCAN_REPEAT`] has passed since it was sent;
    /// [`BridgeError::NoScan`] when no scan was published yet.
    pub fn repeat_scan_if_due(&mut self) -> Result<(), BridgeError> {
        match &self.last_scan {
            None => Err(BridgeError::NoScan),
            Some((parts, at)) if at.elapsed() >= SCAN_REPEAT => {
                let parts = parts.clone();
                self.last_scan = Some((parts.clone(), Instant::now()));
                self.send(parts)
            }
            Some(_) => Ok(()),
        }
    }

    /// The header of a frame, checked against its payload length.
    pub fn frame_header(
        &self,
        scan_id: u64,
        sequence: u64,
        timestamp_ns: u64,
        dtype: Dtype,
        shape: [u32; 4],
        payload: &[u8],
    ) -> Result<FrameHeader, BridgeError> {
        let h = FrameHeader::for_payload(
            self.stream_id,
            scan_id,
            sequence,
            timestamp_ns,
            dtype,
            shape,
            payload,
        );
        if h.shape_bytes() != Some(payload.len() as u64) {
            return Err(BridgeError::Payload {
                shape,
                dtype: dtype.name(),
                needed: h.shape_bytes().unwrap_or(u64::MAX),
                len: payload.len(),
            });
        }
        Ok(h)
    }

    /// Publishes one frame, copying the payload (little-endian samples, C order over
    /// (n_tx, n_ax, n_el, n_ch)).
    pub fn publish_frame(
        &mut self,
        scan_id: u64,
        sequence: u64,
        timestamp_ns: u64,
        dtype: Dtype,
        shape: [u32; 4],
        payload: &[u8],
    ) -> Result<(), BridgeError> {
        self.publish_frame_bytes(
            scan_id,
            sequence,
            timestamp_ns,
            dtype,
            shape,
            Bytes::copy_from_slice(payload),
        )
    }

    /// Publishes one frame without copying the payload: the socket keeps `payload` (a
    /// [`Bytes`], e.g. `Bytes::from_owner` over a driver buffer) until it is written.
    pub fn publish_frame_bytes(
        &mut self,
        scan_id: u64,
        sequence: u64,
        timestamp_ns: u64,
        dtype: Dtype,
        shape: [u32; 4],
        payload: Bytes,
    ) -> Result<(), BridgeError> {
        self.repeat_scan_if_due()?;
        let h = self.frame_header(scan_id, sequence, timestamp_ns, dtype, shape, &payload)?;
        let (header, tag) = protocol::frame_envelope(&h, &payload, self.key.as_ref());
        let mut parts = vec![Bytes::copy_from_slice(&header), payload];
        if let Some(tag) = tag {
            parts.push(Bytes::copy_from_slice(&tag));
        }
        self.send(parts)
    }

    /// Messages queued on the socket and not yet written.
    pub fn pending(&self) -> usize {
        Arc::strong_count(&self.inflight) - 1
    }

    /// Waits until every queued message is written, at most `linger`; returns how many
    /// were still pending.
    pub fn flush(&self, linger: Duration) -> usize {
        let t0 = Instant::now();
        while self.pending() > 0 && t0.elapsed() < linger {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.pending()
    }

    /// The key messages are signed with, if any.
    pub fn key(&self) -> Option<&Key> {
        self.key.as_ref()
    }
}

impl Drop for Publisher {
    /// Closing lingers up to [`LINGER`] for queued messages.
    fn drop(&mut self) {
        self.flush(LINGER);
    }
}
