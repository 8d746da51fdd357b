//! Validation of every incoming message: protocol decoding (version, CRC32C, HMAC,
//! lengths), then the daemon's own checks (known scan id, frame shape against the scan,
//! sequence order per publishing stream). Pure and synchronous, so it is tested without
//! sockets.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::metrics::RejectReason;
use crate::protocol::{self, Auth, DecodeError, Dtype, Key, Message};
use crate::recording::Scan;
use crate::wire::{self, WireError};

/// Width of the window of recent sequence numbers remembered per stream.
const WINDOW: u64 = 64;

/// Why a message was rejected.
#[derive(Debug, thiserror::Error)]
pub enum Reject {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("scan message {scan_id}: {source}")]
    BadScan { scan_id: u64, source: WireError },
    #[error("frame {sequence}: unknown scan id {scan_id}")]
    UnknownScan { scan_id: u64, sequence: u64 },
    #[error("frame {sequence}: shape {found:?} does not match scan {scan_id}, which implies {expected:?}")]
    Shape {
        scan_id: u64,
        sequence: u64,
        found: [u32; 4],
        expected: [usize; 4],
    },
    #[error("frame {sequence} of stream {stream_id:#x}: already accepted")]
    Duplicate { stream_id: u64, sequence: u64 },
    #[error("frame {sequence} of stream {stream_id:#x}: older than the last accepted, {last}")]
    OutOfOrder {
        stream_id: u64,
        sequence: u64,
        last: u64,
    },
    #[error("a {kind} message on the ingest socket (only scan and frame messages go there)")]
    UnexpectedKind { kind: &'static str },
}

impl Reject {
    /// The counter this rejection goes to.
    pub fn reason(&self) -> RejectReason {
        match self {
            Reject::Decode(e) => RejectReason::from_label(e.reason()),
            Reject::BadScan { .. } => RejectReason::BadScan,
            Reject::UnknownScan { .. } => RejectReason::UnknownScan,
            Reject::Shape { .. } => RejectReason::ShapeMismatch,
            Reject::Duplicate { .. } => RejectReason::Duplicate,
            Reject::OutOfOrder { .. } => RejectReason::OutOfOrder,
            Reject::UnexpectedKind { .. } => RejectReason::UnexpectedKind,
        }
    }
}

/// A frame that passed validation. The payload is the received part, not a copy.
#[derive(Clone, Debug)]
pub struct AcceptedFrame {
    pub scan_id: u64,
    pub scan: Arc<Scan>,
    pub stream_id: u64,
    pub sequence: u64,
    /// Acquisition time, ns since the UNIX epoch (from the scanner).
    pub timestamp_ns: u64,
    pub dtype: Dtype,
    pub shape: [usize; 4],
    pub payload: Bytes,
}

/// What an accepted message was.
#[derive(Debug)]
pub enum Accepted {
    /// A scan message; `changed` is false when it repeats the parameters already known.
    Scan {
        scan_id: u64,
        scan: Arc<Scan>,
        changed: bool,
    },
    Frame(AcceptedFrame),
}

/// Sequence state of one publishing stream: the highest accepted sequence number and a
/// bitmap of the [`WINDOW`] numbers below it (bit i set = `last - i` accepted), as in
/// the IPsec anti-replay window (RFC 4303, section 3.4.3).
#[derive(Clone, Copy, Debug)]
struct Window {
    last: u64,
    seen: u64,
}

/// The daemon's validator: known scans and per-stream sequence windows.
pub struct Validator {
    key: Option<Key>,
    scans: HashMap<u64, Arc<Scan>>,
    streams: VecDeque<(u64, Window)>,
    max_streams: usize,
}

impl Validator {
    /// A validator requiring signatures with `key` when given, tracking at most
    /// `max_streams` publishing streams (least recently used forgotten first).
    pub fn new(key: Option<Key>, max_streams: usize) -> Self {
        Validator {
            key,
            scans: HashMap::new(),
            streams: VecDeque::new(),
            max_streams: max_streams.max(1),
        }
    }

    /// Replaces the key (configuration reload).
    pub fn set_key(&mut self, key: Option<Key>) {
        self.key = key;
    }

    /// Changes how many streams are tracked.
    pub fn set_max_streams(&mut self, n: usize) {
        self.max_streams = n.max(1);
        self.streams.truncate(self.max_streams);
    }

    /// The parameters of a known scan.
    pub fn scan(&self, scan_id: u64) -> Option<&Arc<Scan>> {
        self.scans.get(&scan_id)
    }

    /// Validates one multipart message.
    pub fn check(&mut self, parts: &[Bytes]) -> Result<Accepted, Reject> {
        let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_ref()).collect();
        let auth = match &self.key {
            Some(k) => Auth::Required(k),
            None => Auth::None,
        };
        match protocol::decode(&refs, auth)? {
            Message::Scan(msg) => {
                let scan =
                    wire::scan_from_fields(&msg.fields).map_err(|source| Reject::BadScan {
                        scan_id: msg.scan_id,
                        source,
                    })?;
                let changed = self.scans.get(&msg.scan_id).is_none_or(|old| **old != scan);
                let scan = if changed {
                    let scan = Arc::new(scan);
                    self.scans.insert(msg.scan_id, scan.clone());
                    scan
                } else {
                    self.scans[&msg.scan_id].clone()
                };
                Ok(Accepted::Scan {
                    scan_id: msg.scan_id,
                    scan,
                    changed,
                })
            }
            Message::Frame(f) => {
                let h = f.header;
                let scan = self.scans.get(&h.scan_id).ok_or(Reject::UnknownScan {
                    scan_id: h.scan_id,
                    sequence: h.sequence,
                })?;
                let expected = wire::frame_shape(scan);
                if h.shape
                    .iter()
                    .zip(expected.iter())
                    .any(|(&a, &b)| a as usize != b)
                {
                    return Err(Reject::Shape {
                        scan_id: h.scan_id,
                        sequence: h.sequence,
                        found: h.shape,
                        expected,
                    });
                }
                let scan = scan.clone();
                self.sequence(h.stream_id, h.sequence)?;
                // Part 1 is the payload (decode checked the part count).
                let payload = parts[1].clone();
                Ok(Accepted::Frame(AcceptedFrame {
                    scan_id: h.scan_id,
                    scan,
                    stream_id: h.stream_id,
                    sequence: h.sequence,
                    timestamp_ns: h.timestamp_ns,
                    dtype: h.dtype,
                    shape: expected,
                    payload,
                }))
            }
            Message::Result(_) => Err(Reject::UnexpectedKind { kind: "result" }),
            Message::Status(_) => Err(Reject::UnexpectedKind { kind: "status" }),
        }
    }

    /// Checks and records a sequence number of a stream.
    fn sequence(&mut self, stream_id: u64, seq: u64) -> Result<(), Reject> {
        let pos = self.streams.iter().position(|(id, _)| *id == stream_id);
        let Some(pos) = pos else {
            // A new stream (a publisher that started or restarted): its first frame.
            if self.streams.len() >= self.max_streams {
                self.streams.pop_back();
            }
            self.streams
                .push_front((stream_id, Window { last: seq, seen: 1 }));
            return Ok(());
        };
        let w = &mut self.streams[pos].1;
        if seq > w.last {
            let shift = seq - w.last;
            w.seen = if shift >= WINDOW {
                1
            } else {
                (w.seen << shift) | 1
            };
            w.last = seq;
        } else {
            let back = w.last - seq;
            if back < WINDOW && w.seen & (1 << back) != 0 {
                return Err(Reject::Duplicate {
                    stream_id,
                    sequence: seq,
                });
            }
            return Err(Reject::OutOfOrder {
                stream_id,
                sequence: seq,
                last: w.last,
            });
        }
        // Most recently used first.
        if pos != 0 {
            if let Some(entry) = self.streams.remove(pos) {
                self.streams.push_front(entry);
            }
        }
        Ok(())
    }
}

/// Logs rejections at most once per interval and reason, with the count suppressed since.
pub struct RejectLog {
    interval: Duration,
    last: HashMap<RejectReason, (Instant, u64)>,
}

impl RejectLog {
    pub fn new(interval: Duration) -> Self {
        RejectLog {
            interval,
            last: HashMap::new(),
        }
    }

    /// Changes the interval (configuration reload).
    pub fn set_interval(&mut self, interval: Duration) {
        self.interval = interval;
    }

    /// Records a rejection and logs it unless one of its reason was logged recently.
    pub fn note(&mut self, reject: &Reject, now: Instant) {
        let reason = reject.reason();
        match self.last.get_mut(&reason) {
            Some((at, suppressed)) if now.duration_since(*at) < self.interval => {
                *suppressed += 1;
            }
            Some((at, suppressed)) => {
                tracing::warn!(
                    reason = reason.label(),
                    suppressed = *suppressed,
                    "rejected message: {reject} ({suppressed} more of this reason since the last report)"
                );
                *at = now;
                *suppressed = 0;
            }
            None => {
                tracing::warn!(reason = reason.label(), "rejected message: {reject}");
                self.last.insert(reason, (now, 0));
            }
        }
    }

    /// Rejections of a reason not logged since its last report.
    pub fn suppressed(&self, reason: RejectReason) -> u64 {
        self.last.get(&reason).map_or(0, |(_, n)| *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{encode_frame, encode_scan, FrameHeader, ScanMessage};
    use crate::wire::tests::tiny_scan;

    fn parts(v: Vec<Vec<u8>>) -> Vec<Bytes> {
        v.into_iter().map(Bytes::from).collect()
    }

    fn scan_msg(key: Option<&Key>) -> Vec<Bytes> {
        parts(encode_scan(
            &ScanMessage {
                stream_id: 1,
                scan_id: 5,
                fields: wire::scan_to_fields(&tiny_scan()),
            },
            key,
        ))
    }

    fn frame(stream: u64, seq: u64, shape: [u32; 4], key: Option<&Key>) -> Vec<Bytes> {
        let n: u32 = shape.iter().product();
        let payload: Vec<u8> = (0..n * 2).map(|i| i as u8).collect();
        let h = FrameHeader::for_payload(stream, 5, seq, 0, Dtype::I16, shape, &payload);
        parts(encode_frame(&h, &payload, key))
    }

    const SHAPE: [u32; 4] = [2, 16, 4, 1];

    #[test]
    fn scan_then_frames_with_sequence_rules() {
        let mut v = Validator::new(None, 2);
        let reason = |v: &mut Validator, m: &[Bytes]| v.check(m).err().map(|e| e.reason());
        assert_eq!(
            reason(&mut v, &frame(1, 0, SHAPE, None)),
            Some(RejectReason::UnknownScan)
        );
        assert!(matches!(
            v.check(&scan_msg(None)),
            Ok(Accepted::Scan { changed: true, .. })
        ));
        assert!(matches!(
            v.check(&scan_msg(None)),
            Ok(Accepted::Scan { changed: false, .. })
        ));
        assert_eq!(
            reason(&mut v, &frame(1, 0, [2, 16, 4, 2], None)),
            Some(RejectReason::ShapeMismatch)
        );
        let Ok(Accepted::Frame(f)) = v.check(&frame(1, 10, SHAPE, None)) else {
            panic!("valid frame rejected")
        };
        assert_eq!(
            (f.sequence, f.shape, f.payload.len()),
            (10, [2, 16, 4, 1], 256)
        );
        assert_eq!(
            reason(&mut v, &frame(1, 10, SHAPE, None)),
            Some(RejectReason::Duplicate)
        );
        assert!(v.check(&frame(1, 12, SHAPE, None)).is_ok());
        assert_eq!(
            reason(&mut v, &frame(1, 11, SHAPE, None)),
            Some(RejectReason::OutOfOrder)
        );
        assert_eq!(
            reason(&mut v, &frame(1, 10, SHAPE, None)),
            Some(RejectReason::Duplicate)
        );
        assert_eq!(
            reason(&mut v, &frame(1, 3, SHAPE, None)),
            Some(RejectReason::OutOfOrder)
        );
        // A restarted publisher (new stream id) starts over at 0.
        assert!(v.check(&frame(2, 0, SHAPE, None)).is_ok());
        assert!(v.check(&frame(1, 13, SHAPE, None)).is_ok());
        // A third stream evicts the least recently used (2), which then counts as new.
        assert!(v.check(&frame(3, 0, SHAPE, None)).is_ok());
        assert!(v.check(&frame(2, 0, SHAPE, None)).is_ok());
        // Far jumps forward are accepted and clear the window.
        assert!(v.check(&frame(2, 1000, SHAPE, None)).is_ok());
        assert_eq!(
            reason(&mut v, &frame(2, 999, SHAPE, None)),
            Some(RejectReason::OutOfOrder)
        );
        assert_eq!(
            reason(&mut v, &frame(2, 1, SHAPE, None)),
            Some(RejectReason::OutOfOrder)
        );
    }

    #[test]
    fn key_demands_signatures() {
        let key = Key::new(&[3u8; 32]).unwrap();
        let mut v = Validator::new(Some(key.clone()), 4);
        assert_eq!(
            v.check(&scan_msg(None)).unwrap_err().reason(),
            RejectReason::Hmac
        );
        assert!(v.check(&scan_msg(Some(&key))).is_ok());
        assert_eq!(
            v.check(&frame(1, 0, SHAPE, None)).unwrap_err().reason(),
            RejectReason::Hmac
        );
        let mut tampered = frame(1, 0, SHAPE, Some(&key));
        let mut p = tampered[1].to_vec();
        p[0] ^= 0xff;
        tampered[1] = Bytes::from(p);
        assert_eq!(v.check(&tampered).unwrap_err().reason(), RejectReason::Hmac);
        assert!(v.check(&frame(1, 0, SHAPE, Some(&key))).is_ok());
        v.set_key(None);
        assert_eq!(
            v.check(&frame(1, 1, SHAPE, Some(&key)))
                .unwrap_err()
                .reason(),
            RejectReason::Hmac
        );
        assert!(v.check(&frame(1, 1, SHAPE, None)).is_ok());
    }

    #[test]
    fn bad_scans_are_rejected() {
        let mut v = Validator::new(None, 4);
        let mut fields = wire::scan_to_fields(&tiny_scan());
        fields.retain(|f| f.name != "t0_delays");
        let msg = parts(encode_scan(
            &ScanMessage {
                stream_id: 1,
                scan_id: 5,
                fields,
            },
            None,
        ));
        let err = v.check(&msg).unwrap_err();
        assert_eq!(err.reason(), RejectReason::BadScan);
        assert!(err.to_string().contains("t0_delays"), "{err}");
        assert!(v.scan(5).is_none());
    }

    #[test]
    fn reject_log_rate_limits() {
        let mut log = RejectLog::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let r = Reject::UnexpectedKind { kind: "status" };
        log.note(&r, t0);
        log.note(&r, t0 + Duration::from_millis(10));
        log.note(&r, t0 + Duration::from_millis(20));
        assert_eq!(log.suppressed(RejectReason::UnexpectedKind), 2);
        log.note(&r, t0 + Duration::from_millis(1500));
        assert_eq!(log.suppressed(RejectReason::UnexpectedKind), 0);
    }
}
