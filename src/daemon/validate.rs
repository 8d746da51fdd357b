//! Validation of every incoming message: protocol decoding (HMAC, version, CRC32C,
//! lengths), then the daemon's own checks, per publishing stream: scan epochs (a replayed
//! scan announcement is refused), the caps on what a scan may make the stage build, known
//! scan ids, frame shapes against their scan, and sequence numbers. Every table it keeps
//! is bounded: at most `max_streams` streams and `max_scans_per_stream` scans each, the
//! least recently used forgotten first (streams that never sent a frame before those
//! that did) and counted. Pure and synchronous, so it is tested
//! without sockets.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::DaemonConfig;
use crate::metrics::RejectReason;
use crate::pipeline::{ScanCheck, ScanRefused};
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
    #[error("scan message {scan_id}: body of {bytes} bytes, over [daemon] max_scan_bytes = {cap}")]
    ScanTooLarge {
        scan_id: u64,
        bytes: usize,
        cap: usize,
    },
    #[error("scan message {scan_id}: refused before building anything: {source}")]
    OverCap { scan_id: u64, source: ScanRefused },
    #[error(
        "scan message {scan_id} of stream {stream_id:#x}: epoch {epoch} {why} (current epoch {current})"
    )]
    StaleScan {
        stream_id: u64,
        scan_id: u64,
        epoch: u32,
        current: u32,
        why: &'static str,
    },
    #[error(
        "{what} {value} of stream {stream_id:#x} jumps ahead of {last} by more than [daemon] max_sequence_jump = {max}"
    )]
    SequenceJump {
        stream_id: u64,
        what: &'static str,
        value: u64,
        last: u64,
        max: u64,
    },
    #[error("frame {sequence} of stream {stream_id:#x}: unknown scan id {scan_id} (not announced by this stream)")]
    UnknownScan {
        stream_id: u64,
        scan_id: u64,
        sequence: u64,
    },
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
            Reject::BadScan { .. } | Reject::ScanTooLarge { .. } | Reject::OverCap { .. } => {
                RejectReason::BadScan
            }
            Reject::StaleScan { .. } => RejectReason::StaleScan,
            Reject::SequenceJump { .. } => RejectReason::SequenceJump,
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
        stream_id: u64,
        scan_id: u64,
        scan: Arc<Scan>,
        changed: bool,
    },
    Frame(AcceptedFrame),
}

/// The validator's bounds (`[daemon]` settings of the same names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub max_streams: usize,
    pub max_scans_per_stream: usize,
    pub max_scan_bytes: usize,
    pub max_sequence_jump: u64,
}

impl Bounds {
    pub fn from_config(c: &DaemonConfig) -> Self {
        Bounds {
            max_streams: c.max_streams.max(1),
            max_scans_per_stream: c.max_scans_per_stream.max(1),
            max_scan_bytes: c.max_scan_bytes,
            max_sequence_jump: c.max_sequence_jump,
        }
    }
}

/// Sequence state of a stream's frames: the highest accepted sequence number and a
/// bitmap of the [`WINDOW`] numbers below it (bit i set = `last - i` accepted), as in
/// the IPsec anti-replay window (RFC 4303, section 3.4.3).
#[derive(Clone, Copy, Debug)]
struct Window {
    last: u64,
    seen: u64,
}

/// What the validator knows of one publishing stream.
#[derive(Debug)]
struct Stream {
    id: u64,
    /// The current scan epoch and the scan id announced under it.
    epoch: u32,
    epoch_scan: u64,
    /// The stream's scans, most recently used first.
    scans: Vec<(u64, Arc<Scan>)>,
    /// None until the stream's first frame.
    frames: Option<Window>,
}

impl Stream {
    fn scan(&self, scan_id: u64) -> Option<usize> {
        self.scans.iter().position(|(id, _)| *id == scan_id)
    }
}

/// Entries dropped from the validator's tables since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Evictions {
    pub streams: u64,
    pub scans: u64,
}

/// The daemon's validator: per-stream scans, epochs and sequence windows.
pub struct Validator {
    key: Option<Key>,
    bounds: Bounds,
    check: ScanCheck,
    /// Most recently used first.
    streams: VecDeque<Stream>,
    evictions: Evictions,
}

impl Validator {
    /// A validator requiring signatures with `key` when given, within `bounds`, refusing
    /// scans over the caps of `check`.
    pub fn new(key: Option<Key>, bounds: Bounds, check: ScanCheck) -> Self {
        Validator {
            key,
            bounds,
            check,
            streams: VecDeque::new(),
            evictions: Evictions::default(),
        }
    }

    /// Replaces the key (configuration reload).
    pub fn set_key(&mut self, key: Option<Key>) {
        self.key = key;
    }

    /// Changes the bounds, forgetting what no longer fits (configuration reload).
    pub fn set_bounds(&mut self, bounds: Bounds) {
        self.bounds = bounds;
        while self.streams.len() > bounds.max_streams {
            self.drop_stream();
        }
        for s in self.streams.iter_mut() {
            while s.scans.len() > bounds.max_scans_per_stream {
                s.scans.pop();
                self.evictions.scans += 1;
            }
        }
    }

    /// Replaces the caps (a reloaded stage), forgetting the known scans over the new ones:
    /// their frames are `unknown_scan` until they are announced again.
    pub fn set_check(&mut self, check: ScanCheck) {
        if check == self.check {
            return;
        }
        for s in self.streams.iter_mut() {
            let before = s.scans.len();
            s.scans.retain(|(id, scan)| match check.check(scan) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(stream_id = s.id, scan_id = id, "scan forgotten: {e}");
                    false
                }
            });
            self.evictions.scans += (before - s.scans.len()) as u64;
        }
        self.check = check;
    }

    /// The parameters of a known scan of a stream.
    pub fn scan(&self, stream_id: u64, scan_id: u64) -> Option<&Arc<Scan>> {
        let s = self.streams.iter().find(|s| s.id == stream_id)?;
        s.scan(scan_id).map(|i| &s.scans[i].1)
    }

    /// Streams tracked and scans remembered now.
    pub fn sizes(&self) -> (usize, usize) {
        let scans = self.streams.iter().map(|s| s.scans.len()).sum();
        (self.streams.len(), scans)
    }

    /// Entries dropped to stay within the bounds so far.
    pub fn evictions(&self) -> Evictions {
        self.evictions
    }

    /// Forgets one stream to make room: the least recently used of those that never sent
    /// an accepted frame, else the least recently used. Announcements alone (a flood of
    /// scan messages, replayed or forged) thus never push out a stream whose frames are
    /// flowing.
    fn drop_stream(&mut self) {
        let pos = self
            .streams
            .iter()
            .rposition(|s| s.frames.is_none())
            .unwrap_or(self.streams.len().saturating_sub(1));
        if let Some(s) = self.streams.remove(pos) {
            self.evictions.streams += 1;
            self.evictions.scans += s.scans.len() as u64;
        }
    }

    /// Moves stream `pos` to the front (most recently used).
    fn touch(&mut self, pos: usize) {
        if pos != 0 {
            if let Some(s) = self.streams.remove(pos) {
                self.streams.push_front(s);
            }
        }
    }

    /// Validates one multipart message.
    pub fn check(&mut self, parts: &[Bytes]) -> Result<Accepted, Reject> {
        let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_ref()).collect();
        let auth = match &self.key {
            Some(k) => Auth::Required(k),
            None => Auth::None,
        };
        match protocol::decode(&refs, auth)? {
            Message::Scan(msg) => self.scan_message(msg, refs[1].len()),
            Message::Frame(f) => {
                let h = f.header;
                let unknown = || Reject::UnknownScan {
                    stream_id: h.stream_id,
                    scan_id: h.scan_id,
                    sequence: h.sequence,
                };
                let pos = self
                    .streams
                    .iter()
                    .position(|s| s.id == h.stream_id)
                    .ok_or_else(unknown)?;
                let jump = self.bounds.max_sequence_jump;
                let stream = &mut self.streams[pos];
                let i = stream.scan(h.scan_id).ok_or_else(unknown)?;
                let scan = stream.scans[i].1.clone();
                let expected = wire::frame_shape(&scan);
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
                stream.frames = Some(sequence(stream.id, stream.frames, h.sequence, jump)?);
                if i != 0 {
                    let entry = stream.scans.remove(i);
                    stream.scans.insert(0, entry);
                }
                self.touch(pos);
                // Part 1 is the payload (decode checked the part count).
                Ok(Accepted::Frame(AcceptedFrame {
                    scan_id: h.scan_id,
                    scan,
                    stream_id: h.stream_id,
                    sequence: h.sequence,
                    timestamp_ns: h.timestamp_ns,
                    dtype: h.dtype,
                    shape: expected,
                    payload: parts[1].clone(),
                }))
            }
            Message::Result(_) => Err(Reject::UnexpectedKind { kind: "result" }),
            Message::Status(_) => Err(Reject::UnexpectedKind { kind: "status" }),
        }
    }

    /// A scan announcement: its fields make a valid scan within the caps, and its epoch
    /// is the stream's current one repeating the same scan, or a newer one within the
    /// jump bound.
    fn scan_message(
        &mut self,
        msg: protocol::ScanMessage,
        body_len: usize,
    ) -> Result<Accepted, Reject> {
        let (stream_id, scan_id, epoch) = (msg.stream_id, msg.scan_id, msg.epoch);
        if body_len > self.bounds.max_scan_bytes {
            return Err(Reject::ScanTooLarge {
                scan_id,
                bytes: body_len,
                cap: self.bounds.max_scan_bytes,
            });
        }
        let scan = wire::scan_from_fields(&msg.fields)
            .map_err(|source| Reject::BadScan { scan_id, source })?;
        let pos = self.streams.iter().position(|s| s.id == stream_id);
        // The caps cost up to O(grid pixels): a repetition of the current announcement,
        // or one the epochs refuse anyway, is settled without them.
        let settled = pos.is_some_and(|p| {
            let s = &self.streams[p];
            epoch < s.epoch
                || (epoch == s.epoch
                    && (scan_id != s.epoch_scan
                        || s.scan(scan_id).is_some_and(|i| *s.scans[i].1 == scan)))
        });
        if !settled {
            self.check
                .check(&scan)
                .map_err(|source| Reject::OverCap { scan_id, source })?;
        }
        let Some(pos) = pos else {
            if self.streams.len() >= self.bounds.max_streams {
                self.drop_stream();
            }
            let scan = Arc::new(scan);
            self.streams.push_front(Stream {
                id: stream_id,
                epoch,
                epoch_scan: scan_id,
                scans: vec![(scan_id, scan.clone())],
                frames: None,
            });
            return Ok(Accepted::Scan {
                stream_id,
                scan_id,
                scan,
                changed: true,
            });
        };
        let max_scans = self.bounds.max_scans_per_stream;
        let jump = self.bounds.max_sequence_jump;
        let stream = &mut self.streams[pos];
        let stale = |why| Reject::StaleScan {
            stream_id,
            scan_id,
            epoch,
            current: stream.epoch,
            why,
        };
        let known = stream.scan(scan_id);
        let (scan, changed) = match epoch.cmp(&stream.epoch) {
            std::cmp::Ordering::Less => return Err(stale("is older than the stream's")),
            std::cmp::Ordering::Equal if scan_id != stream.epoch_scan => {
                return Err(stale("announced another scan id"))
            }
            std::cmp::Ordering::Equal => match known {
                Some(i) if *stream.scans[i].1 == scan => (stream.scans[i].1.clone(), false),
                Some(_) => return Err(stale("announced other parameters")),
                // Forgotten since (a smaller bound after a reload): announced again.
                None => (Arc::new(scan), true),
            },
            std::cmp::Ordering::Greater => {
                if u64::from(epoch - stream.epoch) > jump {
                    return Err(Reject::SequenceJump {
                        stream_id,
                        what: "scan epoch",
                        value: epoch.into(),
                        last: stream.epoch.into(),
                        max: jump,
                    });
                }
                match known {
                    Some(i) if *stream.scans[i].1 == scan => (stream.scans[i].1.clone(), false),
                    _ => (Arc::new(scan), true),
                }
            }
        };
        stream.epoch = epoch;
        stream.epoch_scan = scan_id;
        if let Some(i) = stream.scan(scan_id) {
            stream.scans.remove(i);
        }
        stream.scans.insert(0, (scan_id, scan.clone()));
        let mut evicted = 0;
        while stream.scans.len() > max_scans {
            stream.scans.pop();
            evicted += 1;
        }
        self.evictions.scans += evicted;
        self.touch(pos);
        Ok(Accepted::Scan {
            stream_id,
            scan_id,
            scan,
            changed,
        })
    }
}

/// Checks a frame's sequence number against its stream's window and returns the window
/// with it recorded: a number already accepted is a duplicate, a lower one out of order,
/// one further ahead than `jump` refused; the first frame of a stream starts it anywhere.
fn sequence(stream_id: u64, window: Option<Window>, seq: u64, jump: u64) -> Result<Window, Reject> {
    let Some(w) = window else {
        return Ok(Window { last: seq, seen: 1 });
    };
    if seq > w.last {
        let shift = seq - w.last;
        if shift > jump {
            return Err(Reject::SequenceJump {
                stream_id,
                what: "frame sequence",
                value: seq,
                last: w.last,
                max: jump,
            });
        }
        let seen = if shift >= WINDOW {
            1
        } else {
            (w.seen << shift) | 1
        };
        return Ok(Window { last: seq, seen });
    }
    let back = w.last - seq;
    if back < WINDOW && w.seen & (1 << back) != 0 {
        return Err(Reject::Duplicate {
            stream_id,
            sequence: seq,
        });
    }
    Err(Reject::OutOfOrder {
        stream_id,
        sequence: seq,
        last: w.last,
    })
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
    use crate::beamform::DasOptions;
    use crate::pipeline::ScanLimits;
    use crate::protocol::{encode_frame, encode_scan, FrameHeader, ScanMessage};
    use crate::testing::tiny_scan;

    fn parts(v: Vec<Vec<u8>>) -> Vec<Bytes> {
        v.into_iter().map(Bytes::from).collect()
    }

    fn scan_of(
        stream: u64,
        scan_id: u64,
        epoch: u32,
        scan: &Scan,
        key: Option<&Key>,
    ) -> Vec<Bytes> {
        parts(encode_scan(
            &ScanMessage {
                stream_id: stream,
                scan_id,
                epoch,
                fields: wire::scan_to_fields(scan),
            },
            key,
        ))
    }

    fn scan_msg(key: Option<&Key>) -> Vec<Bytes> {
        scan_of(1, 5, 0, &tiny_scan(), key)
    }

    fn frame_of(
        stream: u64,
        scan_id: u64,
        seq: u64,
        shape: [u32; 4],
        key: Option<&Key>,
    ) -> Vec<Bytes> {
        let n: u32 = shape.iter().product();
        let payload: Vec<u8> = (0..n * 2).map(|i| i as u8).collect();
        let h = FrameHeader::for_payload(stream, scan_id, seq, 0, Dtype::I16, shape, &payload);
        parts(encode_frame(&h, &payload, key))
    }

    fn frame(stream: u64, seq: u64, shape: [u32; 4], key: Option<&Key>) -> Vec<Bytes> {
        frame_of(stream, 5, seq, shape, key)
    }

    const SHAPE: [u32; 4] = [2, 16, 4, 1];

    /// The shipped defaults' bounds and the DAS stage's caps on each scan's default grid.
    fn validator(key: Option<Key>, max_streams: usize) -> Validator {
        let config = DaemonConfig {
            max_streams,
            ..DaemonConfig::default()
        };
        let check = ScanCheck::imaging(
            ScanLimits::from_config(&config),
            None,
            DasOptions::default(),
            false,
        );
        Validator::new(key, Bounds::from_config(&config), check)
    }

    fn reason(v: &mut Validator, m: &[Bytes]) -> Option<RejectReason> {
        v.check(m).err().map(|e| e.reason())
    }

    #[test]
    fn scan_then_frames_with_sequence_rules() {
        let mut v = validator(None, 2);
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
        // Scan ids belong to their stream: stream 2 has announced none.
        assert_eq!(
            reason(&mut v, &frame(2, 0, SHAPE, None)),
            Some(RejectReason::UnknownScan)
        );
        // A restarted publisher (new stream id) announces its scan and starts anywhere.
        assert!(v.check(&scan_of(2, 5, 0, &tiny_scan(), None)).is_ok());
        assert!(v.check(&frame(2, 0, SHAPE, None)).is_ok());
        assert!(v.check(&frame(1, 13, SHAPE, None)).is_ok());
        // A third stream evicts the least recently used (2), which must announce again.
        assert!(v.check(&scan_of(3, 5, 0, &tiny_scan(), None)).is_ok());
        assert_eq!(
            v.evictions(),
            Evictions {
                streams: 1,
                scans: 1
            }
        );
        assert_eq!(
            reason(&mut v, &frame(2, 1, SHAPE, None)),
            Some(RejectReason::UnknownScan)
        );
        // Jumps within max_sequence_jump are accepted and clear the window.
        assert!(v.check(&frame(1, 1013, SHAPE, None)).is_ok());
        assert_eq!(
            reason(&mut v, &frame(1, 1012, SHAPE, None)),
            Some(RejectReason::OutOfOrder)
        );
    }

    #[test]
    fn key_demands_signatures() {
        let key = Key::new(&[3u8; 32]).unwrap();
        let mut v = validator(Some(key.clone()), 4);
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
        let mut v = validator(None, 4);
        let mut fields = wire::scan_to_fields(&tiny_scan());
        fields.retain(|f| f.name != "t0_delays");
        let msg = parts(encode_scan(
            &ScanMessage {
                stream_id: 1,
                scan_id: 5,
                epoch: 0,
                fields,
            },
            None,
        ));
        let err = v.check(&msg).unwrap_err();
        assert_eq!(err.reason(), RejectReason::BadScan);
        assert!(err.to_string().contains("t0_delays"), "{err}");
        assert!(v.scan(1, 5).is_none());
    }

    /// Issue 23, case 2: a valid two-element scan sampled at 1 mHz (and at 200 Hz) would
    /// make the DAS stage's default grid billions of pixels deep; it is refused as a bad
    /// scan naming the cap, before anything is built, and not remembered.
    #[test]
    fn scan_bombs_are_refused_naming_the_cap() {
        let mut v = validator(None, 4);
        for fs in [1e-3, 200.0] {
            let mut scan = tiny_scan();
            scan.probe_geometry = scan.probe_geometry.slice(ndarray::s![..2, ..]).to_owned();
            scan.t0_delays = ndarray::Array2::zeros((2, 2));
            scan.tx_apodizations = ndarray::Array2::ones((2, 2));
            scan.n_ax = 64;
            scan.sampling_frequency = fs;
            scan.validate().expect("a valid scan");
            let err = v.check(&scan_of(1, 5, 0, &scan, None)).unwrap_err();
            assert_eq!(err.reason(), RejectReason::BadScan, "{err}");
            let text = err.to_string();
            assert!(
                text.contains("max_grid_pixels = 1048576")
                    && text.contains(&format!("sampling_frequency {fs} Hz")),
                "{text}"
            );
            assert!(v.scan(1, 5).is_none());
        }
        // A body over max_scan_bytes is refused before its fields are made a scan.
        let mut big = tiny_scan();
        big.time_to_next_transmit = Some(ndarray::Array2::zeros((200_000, 2)));
        let err = v.check(&scan_of(1, 5, 0, &big, None)).unwrap_err();
        assert_eq!(err.reason(), RejectReason::BadScan);
        assert!(
            err.to_string().contains("max_scan_bytes = 2097152"),
            "{err}"
        );
    }

    /// Issue 23, case 4: a replayed (older) scan announcement, another stream reusing a
    /// scan id, and a frame 2^63 ahead do not disturb a stream.
    #[test]
    fn scans_and_streams_cannot_be_hijacked() {
        let key = Key::new(&[9u8; 32]).unwrap();
        let mut v = validator(Some(key.clone()), 4);
        let old = tiny_scan();
        let mut new = tiny_scan();
        new.n_ax = 32;
        let recorded = scan_of(1, 5, 0, &old, Some(&key));
        assert!(v.check(&recorded).is_ok());
        assert!(v.check(&scan_of(1, 5, 1, &new, Some(&key))).is_ok());
        let new_shape = [2, 32, 4, 1];
        assert!(v.check(&frame(1, 0, new_shape, Some(&key))).is_ok());
        // The recorded, validly signed announcement of epoch 0 comes back: refused.
        let err = v.check(&recorded).unwrap_err();
        assert_eq!(err.reason(), RejectReason::StaleScan, "{err}");
        assert_eq!(v.scan(1, 5).unwrap().n_ax, 32);
        assert!(v.check(&frame(1, 1, new_shape, Some(&key))).is_ok());
        // The current epoch with other parameters, or another scan id, is refused too.
        for msg in [
            scan_of(1, 5, 1, &old, Some(&key)),
            scan_of(1, 6, 1, &new, Some(&key)),
        ] {
            assert_eq!(reason(&mut v, &msg), Some(RejectReason::StaleScan));
        }
        // Repeating the current announcement is harmless.
        assert!(matches!(
            v.check(&scan_of(1, 5, 1, &new, Some(&key))),
            Ok(Accepted::Scan { changed: false, .. })
        ));
        // Stream 2 announcing scan id 5 with other parameters leaves stream 1's alone.
        assert!(v.check(&scan_of(2, 5, 0, &old, Some(&key))).is_ok());
        assert!(v.check(&frame(1, 2, new_shape, Some(&key))).is_ok());
        assert!(v.check(&frame(2, 0, SHAPE, Some(&key))).is_ok());
        // A frame (or an epoch) far ahead is refused and does not lock the stream out.
        let mut v = validator(None, 4);
        assert!(v.check(&scan_msg(None)).is_ok());
        assert!(v.check(&frame(1, 100, SHAPE, None)).is_ok());
        let err = v.check(&frame(1, 1 << 63, SHAPE, None)).unwrap_err();
        assert_eq!(err.reason(), RejectReason::SequenceJump, "{err}");
        assert!(
            err.to_string().contains("max_sequence_jump = 1048576"),
            "{err}"
        );
        assert!(v.check(&frame(1, 101, SHAPE, None)).is_ok());
        assert!(v.check(&frame(1, 101 + (1 << 20), SHAPE, None)).is_ok());
        assert_eq!(
            reason(&mut v, &scan_of(1, 5, u32::MAX, &tiny_scan(), None)),
            Some(RejectReason::SequenceJump)
        );
        assert!(v.check(&scan_of(1, 5, 1, &tiny_scan(), None)).is_ok());
    }

    /// Issue 23, case 3: 10,000 distinct streams and scan ids leave at most max_streams x
    /// max_scans_per_stream scans, the rest counted as evicted.
    #[test]
    fn tables_stay_within_their_bounds() {
        let mut v = validator(None, 16);
        for i in 0..10_000u64 {
            assert!(v.check(&scan_of(100 + i, i, 0, &tiny_scan(), None)).is_ok());
            assert!(v
                .check(&scan_of(7, i, i as u32 + 1, &tiny_scan(), None))
                .is_ok());
        }
        let (streams, scans) = v.sizes();
        assert_eq!((streams, scans), (16, 15 + 4));
        // A stream whose frames flow outlives a flood of announcements of new streams,
        // though it is the least recently used.
        assert!(v.check(&scan_of(8, 5, 0, &tiny_scan(), None)).is_ok());
        assert!(v.check(&frame(8, 0, SHAPE, None)).is_ok());
        for i in 0..100u64 {
            assert!(v
                .check(&scan_of(20_000 + i, 5, 0, &tiny_scan(), None))
                .is_ok());
        }
        assert!(v.check(&frame(8, 1, SHAPE, None)).is_ok());
        assert!(v.scan(8, 5).is_some());
        // Stream 7 never sent a frame: the flood pushed it out too, with its four scans.
        assert_eq!(v.sizes(), (16, 16));
        let e = v.evictions();
        assert_eq!(e.streams, 10_000 + 1 - 16 + 101);
        assert_eq!(e.scans, 20_000 + 101 - 16);
        v.set_bounds(Bounds {
            max_streams: 2,
            max_scans_per_stream: 1,
            ..Bounds::from_config(&DaemonConfig::default())
        });
        assert_eq!(v.sizes(), (2, 2));
        assert_eq!(v.evictions().scans, 20_000 + 101 - 2);
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
