//! Optional recording of accepted raw frames to a zea file, on its own thread so that
//! HDF5 writes never hold up ingest. The ingest task offers each accepted frame without
//! waiting ([`RecordSink::offer`]); frames that do not fit the bounded queue are counted
//! as not recorded. At shutdown the queue is drained, the file flushed and closed.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::metrics::Metrics;
use crate::protocol::Dtype;
use crate::recording::{Frame, Layout, Recorder, RecorderOptions, RecordingError, SampleType};
use crate::wire;

use super::validate::AcceptedFrame;

/// The ingest side of the recorder.
pub struct RecordSink {
    tx: SyncSender<AcceptedFrame>,
    metrics: Arc<Metrics>,
}

impl RecordSink {
    /// Starts the recorder thread writing to `path` in `layout` with a queue of `capacity`
    /// frames.
    pub fn start(
        path: PathBuf,
        layout: Layout,
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Self, JoinHandle<()>)> {
        let (tx, rx) = sync_channel(capacity.max(1));
        let m = metrics.clone();
        let handle = std::thread::Builder::new()
            .name("pleura-recorder".into())
            .spawn(move || recorder_loop(path, layout, rx, &m))?;
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

fn recorder_loop(path: PathBuf, layout: Layout, rx: Receiver<AcceptedFrame>, metrics: &Metrics) {
    // The recorded (stream id, scan id): scan ids belong to their stream.
    let mut recorder: Option<((u64, u64), Recorder)> = None;
    let mut failed = false;
    let mut warned_other_scan = false;
    for frame in rx {
        if failed {
            metrics.frames_not_recorded.fetch_add(1, Relaxed);
            continue;
        }
        if recorder.is_none() {
            let options = RecorderOptions {
                sample_type: match frame.dtype {
                    Dtype::I16 => SampleType::Int16,
                    _ => SampleType::Float32,
                },
                description: format!("recorded live by pleura serve (scan id {})", frame.scan_id),
                layout,
                ..RecorderOptions::default()
            };
            match Recorder::create(&path, &frame.scan, options) {
                Ok(r) => {
                    tracing::info!(path = %path.display(), scan_id = frame.scan_id, "recording started");
                    recorder = Some(((frame.stream_id, frame.scan_id), r));
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot create the recording; not recording");
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
        let appended = wire::payload_to_array(&frame.payload, frame.dtype, frame.shape)
            .map_err(|e| e.to_string())
            .and_then(|data| {
                rec.append(&Frame {
                    data,
                    sequence_number: frame.sequence,
                    timestamp_ns: frame.timestamp_ns,
                })
                .map_err(|e: RecordingError| e.to_string())
            });
        match appended {
            Ok(()) => {
                metrics.frames_recorded.fetch_add(1, Relaxed);
            }
            Err(e) => {
                tracing::error!(sequence = frame.sequence, error = %e, "frame not recorded");
                metrics.frames_not_recorded.fetch_add(1, Relaxed);
            }
        }
    }
    if let Some((_, rec)) = recorder {
        match rec.finish() {
            Ok(n) => tracing::info!(path = %path.display(), frames = n, "recording closed"),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot close the recording")
            }
        }
    }
}
