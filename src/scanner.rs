//! The virtual scanner behind `pleura-bridge play`: replays a zea recording through the
//! bridge's publisher at the recording's frame rate, injecting faults.
//!
//! It lives in the `pleura` package (binary `pleura-bridge`, `src/bin/pleura-bridge.rs`)
//! rather than in `firmware-bridge/` because it reads recordings, which needs pleura's
//! HDF5 reader; the `pleura_bridge` crate stays free of HDF5 so firmware can link it
//! alone.
//!
//! Faults (each drawn independently per frame from a seeded generator, each logged):
//! - `drop=P`: the frame is not sent (its sequence number is skipped);
//! - `corrupt=P`: one payload byte is flipped after the CRC (or signature) was computed;
//! - `truncate=P`: the payload is cut short after the header was written;
//! - `reorder=P`: the frame is held back and sent after the next one;
//! - `duplicate=P`: the frame is sent twice;
//! - `stall=MS` (with probability `stall_p=P`, default 0.05): sending pauses MS ms first.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use pleura_bridge::publisher::{now_ns, BridgeError, Mode, Publisher};

use crate::protocol::{self, Dtype, Key, KeyError};
use crate::recording::{Recording, RecordingError, SampleType};
use crate::wire;

/// Errors of the virtual scanner.
#[derive(Debug, thiserror::Error)]
pub enum ScannerError {
    #[error(transparent)]
    Recording(#[from] RecordingError),
    #[error(transparent)]
    Bridge(#[from] BridgeError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("--fault {spec:?}: {why}")]
    FaultSpec { spec: String, why: String },
    #[error("{path}: no frame rate: the recording has no scan/time_to_next_transmit; pass --fps")]
    NoFrameRate { path: PathBuf },
    #[error("--fps {0} must be finite and positive")]
    Fps(f64),
    #[error("{path} holds no frames")]
    Empty { path: PathBuf },
}

/// Fault probabilities (0..=1) and stall length.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    pub drop: f64,
    pub corrupt: f64,
    pub truncate: f64,
    pub reorder: f64,
    pub duplicate: f64,
    pub stall: Duration,
    pub stall_p: f64,
}

impl Faults {
    /// Parses `drop=P,corrupt=P,truncate=P,reorder=P,duplicate=P,stall=MS,stall_p=P`
    /// (any subset, any order).
    pub fn parse(spec: &str) -> Result<Self, ScannerError> {
        let err = |why: String| ScannerError::FaultSpec {
            spec: spec.to_string(),
            why,
        };
        let mut f = Faults {
            stall_p: 0.05,
            ..Faults::default()
        };
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| err(format!("{item:?} is not key=value")))?;
            let x: f64 = v
                .parse()
                .map_err(|_| err(format!("{k}: {v:?} is not a number")))?;
            if k == "stall" {
                if !(x.is_finite() && x >= 0.0) {
                    return Err(err(format!("stall: {x} ms is not a duration")));
                }
                f.stall = Duration::from_secs_f64(x / 1000.0);
                continue;
            }
            if !(0.0..=1.0).contains(&x) {
                return Err(err(format!("{k}: probability {x} is not in [0, 1]")));
            }
            match k {
                "drop" => f.drop = x,
                "corrupt" => f.corrupt = x,
                "truncate" => f.truncate = x,
                "reorder" => f.reorder = x,
                "duplicate" => f.duplicate = x,
                "stall_p" => f.stall_p = x,
                other => return Err(err(format!("unknown fault {other:?}"))),
            }
        }
        Ok(f)
    }
}

/// What `play` does.
#[derive(Clone, Debug)]
pub struct PlayOptions {
    pub recording: PathBuf,
    pub endpoint: String,
    pub mode: Mode,
    pub key_file: Option<PathBuf>,
    /// Frame rate; None: from `time_to_next_transmit`.
    pub fps: Option<f64>,
    /// Start over at the end (sequence numbers keep increasing).
    pub looped: bool,
    /// Stop after this many frames (counting repetitions); None: the whole recording once,
    /// or forever with `looped`.
    pub max_frames: Option<u64>,
    pub faults: Faults,
    pub seed: u64,
    /// How long to wait for a subscriber before the first frame.
    pub wait_subscriber: Duration,
    /// Scan id announced.
    pub scan_id: u64,
}

/// Counts of what was played.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PlayReport {
    /// Frames taken from the recording (each consumes a sequence number).
    pub frames: u64,
    /// Frame messages sent intact (duplicates included).
    pub sent_intact: u64,
    pub dropped: u64,
    pub corrupted: u64,
    pub truncated: u64,
    pub reordered: u64,
    pub duplicated: u64,
    pub stalls: u64,
}

/// Frame period of each frame of a recording, s.
pub fn frame_periods(rec: &Recording, fps: Option<f64>) -> Result<Vec<f64>, ScannerError> {
    if let Some(f) = fps {
        if !(f.is_finite() && f > 0.0) {
            return Err(ScannerError::Fps(f));
        }
        return Ok(vec![1.0 / f; rec.n_frames()]);
    }
    let t = rec
        .scan()
        .time_to_next_transmit
        .as_ref()
        .ok_or_else(|| ScannerError::NoFrameRate {
            path: rec.path().to_path_buf(),
        })?;
    // One row per frame (zea); a single row applies to every frame.
    Ok((0..rec.n_frames())
        .map(|i| t.row(i.min(t.nrows().saturating_sub(1))).sum())
        .collect())
}

/// A frame's samples as a wire payload in the recording's own sample type (int16
/// samples, which the reader converted to f32 exactly, are restored bit for bit).
pub fn encode_payload(data: &ndarray::Array4<f32>, sample_type: SampleType) -> (Dtype, Vec<u8>) {
    match sample_type {
        SampleType::Int16 => {
            let mut out = Vec::with_capacity(data.len() * 2);
            for v in data.iter() {
                // The reader converted int16 samples to f32 exactly; this restores them.
                out.extend_from_slice(
                    &(v.round().clamp(i16::MIN as f32, i16::MAX as f32) as i16).to_le_bytes(),
                );
            }
            (Dtype::I16, out)
        }
        SampleType::Float32 => (Dtype::F32, wire::array_to_payload(data)),
    }
}

/// Plays a recording; returns what was sent.
pub fn play(opts: &PlayOptions) -> Result<PlayReport, ScannerError> {
    let rec = Recording::open(&opts.recording)?;
    if rec.n_frames() == 0 {
        return Err(ScannerError::Empty {
            path: opts.recording.clone(),
        });
    }
    let periods = frame_periods(&rec, opts.fps)?;
    let key = opts.key_file.as_deref().map(Key::from_file).transpose()?;
    let mut publisher = Publisher::open(&opts.endpoint, opts.mode, key, Duration::from_secs(30))?;
    tracing::info!(
        endpoint = publisher.endpoint(),
        stream_id = publisher.stream_id(),
        frames = rec.n_frames(),
        "virtual scanner ready"
    );
    if !publisher.wait_for_subscriber(opts.wait_subscriber) {
        tracing::warn!("no subscriber yet; playing anyway");
    }
    let shape = wire::frame_shape(rec.scan()).map(|d| d as u32);
    publisher.publish_scan(opts.scan_id, wire::scan_to_fields(rec.scan()))?;
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut report = PlayReport::default();
    let mut held: Option<Vec<Vec<u8>>> = None;
    let start = Instant::now();
    let mut due = 0.0f64;
    let mut seq: u64 = 0;
    'outer: loop {
        for (i, period) in periods.iter().enumerate() {
            if opts.max_frames.is_some_and(|m| seq >= m) {
                break 'outer;
            }
            let target = start + Duration::from_secs_f64(due);
            let now = Instant::now();
            if target > now {
                std::thread::sleep(target - now);
            }
            due += period;
            let frame = rec.read_frame(i)?;
            let (dtype, payload) = encode_payload(&frame.data, rec.sample_type());
            let f = &opts.faults;
            report.frames += 1;
            let this_seq = seq;
            seq += 1;
            if f.stall > Duration::ZERO && rng.random_bool(f.stall_p) {
                tracing::info!(
                    fault = "stall",
                    sequence = this_seq,
                    ms = f.stall.as_millis() as u64,
                    "fault injected"
                );
                report.stalls += 1;
                std::thread::sleep(f.stall);
            }
            if rng.random_bool(f.drop) {
                tracing::info!(fault = "drop", sequence = this_seq, "fault injected");
                report.dropped += 1;
                continue;
            }
            let header =
                publisher.frame_header(opts.scan_id, this_seq, now_ns(), dtype, shape, &payload)?;
            let mut parts = protocol::encode_frame(&header, &payload, publisher.key());
            let mut intact = true;
            if rng.random_bool(f.corrupt) && !parts[1].is_empty() {
                let at = rng.random_range(0..parts[1].len());
                parts[1][at] ^= 1 << rng.random_range(0..8);
                tracing::info!(
                    fault = "corrupt",
                    sequence = this_seq,
                    byte = at,
                    "fault injected"
                );
                report.corrupted += 1;
                intact = false;
            }
            if rng.random_bool(f.truncate) {
                let len = parts[1].len();
                let keep = rng.random_range(0..len.max(1));
                parts[1].truncate(keep);
                tracing::info!(
                    fault = "truncate",
                    sequence = this_seq,
                    kept = keep,
                    of = len,
                    "fault injected"
                );
                report.truncated += 1;
                intact = false;
            }
            let duplicate = rng.random_bool(f.duplicate);
            let reorder = held.is_none() && rng.random_bool(f.reorder);
            publisher.repeat_scan_if_due()?;
            if reorder {
                tracing::info!(
                    fault = "reorder",
                    sequence = this_seq,
                    "fault injected: held back one frame"
                );
                report.reordered += 1;
                held = Some(parts);
                continue;
            }
            publisher.send_raw(parts.clone())?;
            if intact {
                report.sent_intact += 1;
            }
            if duplicate {
                tracing::info!(fault = "duplicate", sequence = this_seq, "fault injected");
                report.duplicated += 1;
                publisher.send_raw(parts)?;
            }
            if let Some(late) = held.take() {
                publisher.send_raw(late)?;
            }
        }
        if !opts.looped {
            break;
        }
    }
    if let Some(late) = held.take() {
        publisher.send_raw(late)?;
    }
    let pending = publisher.flush(Duration::from_secs(5));
    if pending > 0 {
        tracing::warn!(pending, "messages still queued at exit");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_spec() {
        let f = Faults::parse("drop=0.1, corrupt=0.2,stall=15,stall_p=0.5,duplicate=1").unwrap();
        assert_eq!(f.drop, 0.1);
        assert_eq!(f.corrupt, 0.2);
        assert_eq!(f.stall, Duration::from_millis(15));
        assert_eq!(f.stall_p, 0.5);
        assert_eq!(f.duplicate, 1.0);
        assert_eq!(Faults::parse("").unwrap().stall_p, 0.05);
        for bad in ["drop", "drop=2", "jitter=0.1", "drop=x", "stall=-1"] {
            let e = Faults::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad.split('=').next().unwrap()), "{bad}: {e}");
        }
    }
}
