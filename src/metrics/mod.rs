//! The daemon's counters and histograms, rendered in the Prometheus text exposition
//! format (version 0.0.4), and the admin HTTP server that serves them ([`http`]).
//!
//! Everything is a lock-free atomic so the ingest task, the worker thread and the sink
//! update them without contention.

pub mod http;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Why an incoming message was rejected (the `reason` label of
/// `pleura_messages_rejected_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Not a pleura message, wrong part count or header length, unknown kind or dtype.
    Malformed,
    /// A protocol version other than 1.
    Version,
    /// Payload CRC32C mismatch.
    Crc,
    /// Missing, unexpected or invalid HMAC-SHA256 tag.
    Hmac,
    /// A frame of a scan id no scan message announced.
    UnknownScan,
    /// Frame shape or length inconsistent with its header or its scan.
    ShapeMismatch,
    /// Payload shorter or longer than its header says.
    Truncated,
    /// Sequence number lower than one already accepted on the stream.
    OutOfOrder,
    /// Sequence number already accepted on the stream.
    Duplicate,
    /// A scan message whose fields do not make a valid scan.
    BadScan,
    /// A result or status message sent to the ingest socket.
    UnexpectedKind,
}

impl RejectReason {
    /// Every reason, in exposition order.
    pub const ALL: [RejectReason; 11] = [
        RejectReason::Malformed,
        RejectReason::Version,
        RejectReason::Crc,
        RejectReason::Hmac,
        RejectReason::UnknownScan,
        RejectReason::ShapeMismatch,
        RejectReason::Truncated,
        RejectReason::OutOfOrder,
        RejectReason::Duplicate,
        RejectReason::BadScan,
        RejectReason::UnexpectedKind,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::Version => "version",
            RejectReason::Crc => "crc",
            RejectReason::Hmac => "hmac",
            RejectReason::UnknownScan => "unknown_scan",
            RejectReason::ShapeMismatch => "shape_mismatch",
            RejectReason::Truncated => "truncated",
            RejectReason::OutOfOrder => "out_of_order",
            RejectReason::Duplicate => "duplicate",
            RejectReason::BadScan => "bad_scan",
            RejectReason::UnexpectedKind => "unexpected_kind",
        }
    }

    /// Index into [`RejectReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The reason of a protocol decode error.
    pub fn from_label(label: &str) -> RejectReason {
        RejectReason::ALL
            .into_iter()
            .find(|r| r.label() == label)
            .unwrap_or(RejectReason::Malformed)
    }
}

/// Upper bounds of the latency histogram buckets, seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// A Prometheus histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (b, &le) in self.buckets.iter().zip(LATENCY_BUCKETS.iter()) {
            if s <= le {
                b.fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (b, le) in self.buckets.iter().zip(LATENCY_BUCKETS.iter()) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {}", b.load(Relaxed));
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_ns.load(Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// All of the daemon's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Multipart messages read from the ingest socket.
    pub messages_received: AtomicU64,
    /// Bytes in those messages (all parts).
    pub bytes_received: AtomicU64,
    /// Scan messages accepted.
    pub scans_accepted: AtomicU64,
    /// Frames that passed validation.
    pub frames_accepted: AtomicU64,
    rejected: [AtomicU64; RejectReason::ALL.len()],
    /// Accepted frames dropped from the full queue (oldest first) or left in it at shutdown.
    pub frames_dropped: AtomicU64,
    /// Frames the worker finished processing.
    pub frames_processed: AtomicU64,
    /// Frames the processing stage failed on.
    pub frames_failed: AtomicU64,
    /// Result messages published.
    pub results_published: AtomicU64,
    /// Frames written to the recording.
    pub frames_recorded: AtomicU64,
    /// Accepted frames not recorded (recorder queue full, other scan, or write error).
    pub frames_not_recorded: AtomicU64,
    /// Frames waiting in the queue now.
    pub queue_depth: AtomicU64,
    /// Capacity of the queue now.
    pub queue_capacity: AtomicU64,
    /// Acquisition timestamp -> result publication.
    pub latency: Histogram,
    /// Time the stage took per frame.
    pub processing: Histogram,
    /// Configuration reloads applied.
    pub reloads: AtomicU64,
    /// False once shutdown began (served as `/healthz` 503).
    pub healthy: AtomicBool,
    /// Where the processing stage runs (`cpu`, `cuda:0`, ...); changes when a reload
    /// brings a stage on another device.
    device: std::sync::RwLock<String>,
}

impl Metrics {
    /// Fresh metrics of a healthy daemon.
    pub fn new() -> Self {
        let m = Metrics::default();
        m.healthy.store(true, Relaxed);
        m
    }

    /// Counts one rejection.
    pub fn reject(&self, reason: RejectReason) {
        self.rejected[reason.index()].fetch_add(1, Relaxed);
    }

    /// Rejections of one reason so far.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected[reason.index()].load(Relaxed)
    }

    /// All rejections so far.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|r| r.load(Relaxed)).sum()
    }

    /// Records where the processing stage runs.
    pub fn set_device(&self, device: &str) {
        let mut d = self.device.write().unwrap_or_else(|p| p.into_inner());
        device.clone_into(&mut d);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let device = self
            .device
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Relaxed));
        };
        counter(
            &mut out,
            "pleura_messages_received_total",
            "Messages read from the ingest socket.",
            &self.messages_received,
        );
        counter(
            &mut out,
            "pleura_bytes_received_total",
            "Bytes read from the ingest socket.",
            &self.bytes_received,
        );
        counter(
            &mut out,
            "pleura_scans_accepted_total",
            "Scan-parameter messages accepted.",
            &self.scans_accepted,
        );
        counter(
            &mut out,
            "pleura_frames_accepted_total",
            "RF frames that passed validation.",
            &self.frames_accepted,
        );
        let _ = writeln!(
            out,
            "# HELP pleura_messages_rejected_total Messages rejected by validation, by reason."
        );
        let _ = writeln!(out, "# TYPE pleura_messages_rejected_total counter");
        for r in RejectReason::ALL {
            let _ = writeln!(
                out,
                "pleura_messages_rejected_total{{reason=\"{}\"}} {}",
                r.label(),
                self.rejected(r)
            );
        }
        counter(
            &mut out,
            "pleura_frames_dropped_total",
            "Accepted frames dropped from the full queue or left in it at shutdown.",
            &self.frames_dropped,
        );
        counter(
            &mut out,
            "pleura_frames_processed_total",
            "Frames the worker processed.",
            &self.frames_processed,
        );
        counter(
            &mut out,
            "pleura_frames_failed_total",
            "Frames the processing stage failed on.",
            &self.frames_failed,
        );
        counter(
            &mut out,
            "pleura_results_published_total",
            "Result messages published.",
            &self.results_published,
        );
        counter(
            &mut out,
            "pleura_frames_recorded_total",
            "Accepted frames written to the recording.",
            &self.frames_recorded,
        );
        counter(
            &mut out,
            "pleura_frames_not_recorded_total",
            "Accepted frames not written to the recording.",
            &self.frames_not_recorded,
        );
        counter(
            &mut out,
            "pleura_config_reloads_total",
            "Configuration reloads applied (SIGHUP).",
            &self.reloads,
        );
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {v}");
        };
        gauge(
            &mut out,
            "pleura_queue_depth",
            "Frames waiting for the worker.",
            self.queue_depth.load(Relaxed),
        );
        gauge(
            &mut out,
            "pleura_queue_capacity",
            "Capacity of the frame queue.",
            self.queue_capacity.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP pleura_device_info Where the processing stage runs."
        );
        let _ = writeln!(out, "# TYPE pleura_device_info gauge");
        let _ = writeln!(out, "pleura_device_info{{device=\"{device}\"}} 1");
        self.latency.render(
            &mut out,
            "pleura_latency_seconds",
            "Acquisition timestamp to result publication.",
        );
        self.processing.render(
            &mut out,
            "pleura_processing_seconds",
            "Processing stage time per frame.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_format() {
        let m = Metrics::new();
        m.reject(RejectReason::Crc);
        m.reject(RejectReason::Crc);
        m.frames_accepted.fetch_add(3, Relaxed);
        m.latency.observe(Duration::from_millis(3));
        m.latency.observe(Duration::from_millis(30));
        m.set_device("cpu");
        let text = m.render();
        assert!(
            text.contains("pleura_messages_rejected_total{reason=\"crc\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("pleura_messages_rejected_total{reason=\"hmac\"} 0\n"));
        assert!(text.contains("pleura_frames_accepted_total 3\n"));
        assert!(text.contains("pleura_latency_seconds_bucket{le=\"0.002\"} 0\n"));
        assert!(text.contains("pleura_latency_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("pleura_latency_seconds_bucket{le=\"0.05\"} 2\n"));
        assert!(text.contains("pleura_latency_seconds_count 2\n"));
        assert!(
            text.contains("pleura_latency_seconds_sum 0.033\n"),
            "{text}"
        );
        assert!(text.contains("pleura_device_info{device=\"cpu\"} 1\n"));
        assert_eq!(m.rejected_total(), 2);
        for r in RejectReason::ALL {
            assert_eq!(RejectReason::from_label(r.label()), r);
            assert_eq!(RejectReason::ALL[r.index()], r);
        }
    }
}
