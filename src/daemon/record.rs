//! Optional recording of accepted raw frames to a zea file, on its own thread so that
//! HDF5 writes never hold up ingest. The ingest task offers each accepted frame without
//! waiting ([`RecordSink::offer`]); frames that do not fit the bounded queue are counted
//! as not recorded. At shutdown the queue is drained, the file flushed and closed.
//!
//! Each frame is written as it was received: its little-endian payload goes into the
//! recording's `raw_data` without being decoded to float32 first (int16 samples stay
//! int16, bit for bit). The recording takes the sample type of the first recorded frame.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::logging::Chain;
use crate::metrics::Metrics;
use crate::protocol::Dtype;
use crate::recording::{Layout, Recorder, RecorderOptions, RecordingError, SampleType};

use super::validate::AcceptedFrame;
use super::Throttle;

/// Why the recorder did not record a frame, or could not create or close its file.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot create the recording {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: RecordingError,
    },
    #[error(
        "frame {sequence} of stream {stream_id:#x}: {dtype} samples, a recording holds int16 or float32"
    )]
    Dtype {
        stream_id: u64,
        sequence: u64,
        dtype: &'static str,
    },
    #[error("frame {sequence} of stream {stream_id:#x}, scan {scan_id}, not recorded")]
    Append {
        stream_id: u64,
        scan_id: u64,
        sequence: u64,
        #[source]
        source: RecordingError,
    },
    #[error("cannot close the recording {path}")]
    Finish {
        path: PathBuf,
        #[source]
        source: RecordingError,
    },
}

/// The recording's sample type for a frame's dtype: the payload's own (the protocol
/// carries int16 or float32 frames; the decoder refuses others).
fn sample_type(frame: &AcceptedFrame) -> Result<SampleType, RecordError> {
    match frame.dtype {
        Dtype::I16 => Ok(SampleType::Int16),
        Dtype::F32 => Ok(SampleType::Float32),
        other => Err(RecordError::Dtype {
            stream_id: frame.stream_id,
            sequence: frame.sequence,
            dtype: other.name(),
        }),
    }
}

/// The ingest side of the recorder.
pub struct RecordSink {
    tx: SyncSender<AcceptedFrame>,
    metrics: Arc<Metrics>,
}

impl RecordSink {
    /// Starts the recorder thread writing to `path` in `layout` with a queue of `capacity`
    /// frames, logging frames it cannot record at most once per `log_interval` (the
    /// `reject_log_interval_ms` it started with; every one is counted).
    pub fn start(
        path: PathBuf,
        layout: Layout,
        capacity: usize,
        log_interval: Duration,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Self, JoinHandle<()>)> {
        let (tx, rx) = sync_channel(capacity.max(1));
        let m = metrics.clone();
        let handle = std::thread::Builder::new()
            .name("pleura-recorder".into())
            .spawn(move || recorder_loop(path, layout, rx, &m, Throttle::new(log_interval)))?;
        Ok((RecordSink { tx, metrics }, handle))
    }

    /// Offers a frame without waiting.
    pub fn offer(&self, frame: &AcceptedFrame) {
        match self.tx.try_send(frame.clone()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.frames_not_recorded.fetch_add(1, Relaxed);
            }
        }
    }
}

fn recorder_loop(
    path: PathBuf,
    layout: Layout,
    rx: Receiver<AcceptedFrame>,
    metrics: &Metrics,
    mut not_recorded: Throttle,
) {
    // A frame not recorded: counted, and logged unless one was logged within the interval.
    let mut lost = |e: RecordError| {
        metrics.frames_not_recorded.fetch_add(1, Relaxed);
        if let Some(left_out) = not_recorded.due(Instant::now()) {
            tracing::error!(
                error = %Chain(&e),
                left_out,
                "frame not recorded ({left_out} more not recorded since the last report)"
            );
        }
    };
    // The recorded (stream id, scan id): scan ids belong to their stream.
    let mut recorder: Option<((u64, u64), Recorder)> = None;
    let mut failed = false;
    let mut warned_other_scan = false;
    for frame in rx {
        if failed {
            metrics.frames_not_recorded.fetch_add(1, Relaxed);
            continue;
        }
        let samples = match sample_type(&frame) {
            Ok(t) => t,
            Err(e) => {
                lost(e);
                continue;
            }
        };
        if recorder.is_none() {
            let options = RecorderOptions {
                sample_type: samples,
                description: format!("recorded live by pleura serve (scan id {})", frame.scan_id),
                layout,
                ..RecorderOptions::default()
            };
            match Recorder::create(&path, &frame.scan, options) {
                Ok(r) => {
                    tracing::info!(path = %path.display(), scan_id = frame.scan_id, "recording started");
                    recorder = Some(((frame.stream_id, frame.scan_id), r));
                }
                Err(source) => {
                    let e = RecordError::Create {
                        path: path.clone(),
                        source,
                    };
                    tracing::error!(error = %Chain(&e), "not recording");
                    failed = true;
                    metrics.frames_not_recorded.fetch_add(1, Relaxed);
                    continue;
                }
            }
        }
        let Some((recorded, rec)) = recorder.as_mut() else {
            continue;
        };
        if (frame.stream_id, frame.scan_id) != *recorded {
            if !warned_other_scan {
                tracing::warn!(
                    recorded_stream = recorded.0,
                    recorded_scan = recorded.1,
                    frame_stream = frame.stream_id,
                    frame_scan = frame.scan_id,
                    "frames of another stream or scan id are not recorded"
                );
                warned_other_scan = true;
            }
            metrics.frames_not_recorded.fetch_add(1, Relaxed);
            continue;
        }
        match rec.append_raw(samples, &frame.payload, frame.sequence, frame.timestamp_ns) {
            Ok(()) => {
                metrics.frames_recorded.fetch_add(1, Relaxed);
            }
            Err(source) => lost(RecordError::Append {
                stream_id: frame.stream_id,
                scan_id: frame.scan_id,
                sequence: frame.sequence,
                source,
            }),
        }
    }
    if let Some((_, rec)) = recorder {
        match rec.finish() {
            Ok(n) => tracing::info!(path = %path.display(), frames = n, "recording closed"),
            Err(source) => {
                let e = RecordError::Finish {
                    path: path.clone(),
                    source,
                };
                tracing::error!(error = %Chain(&e), "recording not closed cleanly");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A log sink the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A run of frames the recorder cannot record is counted frame by frame and logged
    /// once per interval, with how many were left out.
    #[test]
    fn unrecordable_frames_are_logged_once_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let scan = Arc::new(crate::testing::tiny_scan());
        let (tx, rx) = sync_channel(64);
        for sequence in 0..50 {
            tx.send(AcceptedFrame {
                scan_id: 1,
                scan: scan.clone(),
                stream_id: 7,
                sequence,
                timestamp_ns: sequence * 1000,
                dtype: Dtype::F64,
                shape: [1, 1, 1, 1],
                payload: bytes::Bytes::from_static(&[0; 8]),
            })
            .unwrap();
        }
        drop(tx);
        let metrics = Metrics::new();
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            recorder_loop(
                dir.path().join("rec.h5"),
                Layout::Zea,
                rx,
                &metrics,
                Throttle::new(Duration::from_secs(3600)),
            )
        });
        assert_eq!(metrics.frames_not_recorded.load(Relaxed), 50);
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches("frame not recorded").count(), 1, "{text}");
        assert!(text.contains("float64 samples"), "{text}");
    }
}
