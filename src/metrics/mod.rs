//! The daemon's counters and histograms, rendered in the Prometheus text exposition
//! format (version 0.0.4), and the admin HTTP server that serves them ([`http`]).
//!
//! Everything is a lock-free atomic so the ingest task, the worker thread and the sink
//! update them without contention.

pub mod http;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::posterior::echo::Calibration;

/// Writes one gauge of the Prometheus text exposition: its help, type and value.
fn gauge(out: &mut String, name: &str, help: &str, v: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    let _ = writeln!(out, "{name} {v}");
}

/// Why an incoming message was rejected (the `reason` label of
/// `pleura_messages_rejected_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Not a pleura message, wrong part count or header length, unknown kind or dtype.
    Malformed,
    /// A protocol version other than this daemon's (2).
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
    /// A scan message of an epoch below its stream's current one, or of the current
    /// epoch with other parameters: a replayed or forged announcement.
    StaleScan,
    /// A frame sequence number or scan epoch further ahead of its stream's than
    /// `[daemon] max_sequence_jump`.
    SequenceJump,
}

impl RejectReason {
    /// Every reason, in exposition order.
    pub const ALL: [RejectReason; 13] = [
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
        RejectReason::StaleScan,
        RejectReason::SequenceJump,
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
            RejectReason::StaleScan => "stale_scan",
            RejectReason::SequenceJump => "sequence_jump",
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

/// The daemon's bounded per-scan tables (the `table` label of `pleura_state_entries` and
/// `pleura_state_evictions_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateTable {
    /// Publishing streams tracked (`[daemon] max_streams`).
    Streams,
    /// Scans remembered, over all streams (`max_scans_per_stream` each).
    Scans,
    /// Measurement operators held by the stage (`max_operators`).
    Operators,
    /// Streams the live view keeps the latest result and trend of (`max_streams`).
    LiveStreams,
}

impl StateTable {
    pub const ALL: [StateTable; 4] = [
        StateTable::Streams,
        StateTable::Scans,
        StateTable::Operators,
        StateTable::LiveStreams,
    ];

    pub fn label(self) -> &'static str {
        match self {
            StateTable::Streams => "streams",
            StateTable::Scans => "scans",
            StateTable::Operators => "operators",
            StateTable::LiveStreams => "live_streams",
        }
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
    /// Frames published as a poor fit: the model does not explain their data
    /// ([`crate::posterior::frame::FrameEstimate::poor_fit`]).
    pub frames_poor_fit: AtomicU64,
    /// The last posterior frame's misfit (its residual over the noise's), as f64 bits;
    /// NaN before any.
    misfit: AtomicU64,
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
    /// Configuration reloads refused (the previous configuration stayed in force).
    pub reload_failures: AtomicU64,
    /// Entries of each bounded per-scan table now, by [`StateTable`].
    state_entries: [AtomicU64; StateTable::ALL.len()],
    /// Entries dropped from each table to stay within its bound.
    state_evictions: [AtomicU64; StateTable::ALL.len()],
    /// Ingest connections the transport closed: oversized frames or messages, handshakes
    /// that failed or timed out, peers of an incompatible socket type.
    pub ingest_errors: AtomicU64,
    /// Connections of consumers the publish socket refused (`max_connections`) or whose
    /// handshake failed or timed out.
    pub consumer_errors: AtomicU64,
    /// The memory the configured bounds allow the daemon beyond its base, bytes
    /// (`crate::daemon::memory_budget`).
    pub memory_budget: AtomicU64,
    /// False once shutdown began (served as `/healthz` 503).
    pub healthy: AtomicBool,
    /// Where the processing stage runs (`cpu`, `cuda:0`, ...); changes when a reload
    /// brings a stage on another device.
    device: std::sync::RwLock<String>,
    /// The echo data term's calibration the stage in use loaded (`[sampler] calibration`).
    calibration: std::sync::RwLock<Option<Calibration>>,
    /// The configuration in force, as `/status` reports it.
    in_force: std::sync::RwLock<serde_json::Value>,
    /// The outcome of the last configuration reload (null before any).
    last_reload: std::sync::RwLock<serde_json::Value>,
}

impl Metrics {
    /// Fresh metrics of a healthy daemon.
    pub fn new() -> Self {
        let m = Metrics::default();
        m.healthy.store(true, Relaxed);
        m.misfit.store(f64::NAN.to_bits(), Relaxed);
        m
    }

    /// Counts a posterior frame's fit: its misfit, and whether it was a poor fit.
    pub fn fit(&self, misfit: f64, poor: bool) {
        self.misfit.store(misfit.to_bits(), Relaxed);
        if poor {
            self.frames_poor_fit.fetch_add(1, Relaxed);
        }
    }

    /// The last posterior frame's misfit (NaN before any).
    pub fn misfit(&self) -> f64 {
        f64::from_bits(self.misfit.load(Relaxed))
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

    /// Sets the entries of a table now.
    pub fn set_entries(&self, table: StateTable, n: u64) {
        self.state_entries[table as usize].store(n, Relaxed);
    }

    /// Counts `n` evictions from a table.
    pub fn evicted(&self, table: StateTable, n: u64) {
        self.state_evictions[table as usize].fetch_add(n, Relaxed);
    }

    /// Evictions from a table so far.
    pub fn evictions(&self, table: StateTable) -> u64 {
        self.state_evictions[table as usize].load(Relaxed)
    }

    /// Entries of a table now.
    pub fn entries(&self, table: StateTable) -> u64 {
        self.state_entries[table as usize].load(Relaxed)
    }

    /// Records the configuration in force (after the start and every applied reload).
    pub fn set_in_force(&self, description: serde_json::Value) {
        *self.in_force.write().unwrap_or_else(|p| p.into_inner()) = description;
    }

    /// Counts a refused reload and records why (what `/status` reports).
    pub fn reload_refused(&self, error: &str) {
        self.reload_failures.fetch_add(1, Relaxed);
        self.set_last_reload(Some(error));
    }

    /// Records a reload's outcome: None when it was applied, else why it was refused.
    pub fn set_last_reload(&self, refused: Option<&str>) {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let value = match refused {
            None => serde_json::json!({ "applied": true, "at_unix_s": at }),
            Some(error) => serde_json::json!({ "applied": false, "at_unix_s": at, "error": error }),
        };
        *self.last_reload.write().unwrap_or_else(|p| p.into_inner()) = value;
    }

    /// The daemon's counters as a JSON object (the status message's body; `/status` adds
    /// what is in force).
    pub fn status_json(&self, state: &str) -> serde_json::Value {
        let rejected: serde_json::Map<String, serde_json::Value> = RejectReason::ALL
            .iter()
            .map(|r| (r.label().to_string(), self.rejected(*r).into()))
            .collect();
        let evicted: serde_json::Map<String, serde_json::Value> = StateTable::ALL
            .iter()
            .map(|t| (t.label().to_string(), self.evictions(*t).into()))
            .collect();
        serde_json::json!({
            "state": state,
            "messages_received": self.messages_received.load(Relaxed),
            "scans_accepted": self.scans_accepted.load(Relaxed),
            "frames_accepted": self.frames_accepted.load(Relaxed),
            "frames_dropped": self.frames_dropped.load(Relaxed),
            "frames_processed": self.frames_processed.load(Relaxed),
            "frames_failed": self.frames_failed.load(Relaxed),
            "frames_poor_fit": self.frames_poor_fit.load(Relaxed),
            "misfit": finite_or_null(self.misfit()),
            "results_published": self.results_published.load(Relaxed),
            "queue_depth": self.queue_depth.load(Relaxed),
            "rejected": rejected,
            "evicted": evicted,
            "ingest_errors": self.ingest_errors.load(Relaxed),
            "consumer_errors": self.consumer_errors.load(Relaxed),
            "reloads": self.reloads.load(Relaxed),
            "reload_failures": self.reload_failures.load(Relaxed),
        })
    }

    /// `/status`: the counters, the configuration in force and the last reload's outcome.
    pub fn status_report(&self) -> serde_json::Value {
        let state = if self.healthy.load(Relaxed) {
            "running"
        } else {
            "stopping"
        };
        let mut v = self.status_json(state);
        let read = |l: &std::sync::RwLock<serde_json::Value>| {
            l.read().unwrap_or_else(|p| p.into_inner()).clone()
        };
        v["in_force"] = read(&self.in_force);
        v["last_reload"] = read(&self.last_reload);
        v["resident_memory_bytes"] = resident_bytes().into();
        v["memory_budget_bytes"] = self.memory_budget.load(Relaxed).into();
        v
    }

    /// Records the echo data term's calibration of the stage in use (None: none loaded).
    pub fn set_calibration(&self, calibration: Option<&Calibration>) {
        *self.calibration.write().unwrap_or_else(|p| p.into_inner()) = calibration.cloned();
    }

    /// Records where the processing stage runs.
    pub fn set_device(&self, device: &str) {
        let mut d = self.device.write().unwrap_or_else(|p| p.into_inner());
        device.clone_into(&mut d);
    }

    /// The calibration gauges: whether one is loaded, and what it holds when it is.
    fn render_calibration(&self, out: &mut String) {
        let calibration = self
            .calibration
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        gauge(
            out,
            "pleura_calibration_loaded",
            "Whether an echo-power calibration ([sampler] calibration) is loaded: 1 or 0.",
            f64::from(u8::from(calibration.is_some())),
        );
        let Some(c) = calibration else {
            return;
        };
        gauge(
            out,
            "pleura_calibration_gain_db",
            "Calibrated echo amplitude of aeration 1 at depth 0, dB of the DAS envelope's units.",
            c.depth_gain.gain_db,
        );
        gauge(
            out,
            "pleura_calibration_slope_db_per_cm",
            "Calibrated depth gain slope (TGC and attenuation), dB/cm.",
            c.depth_gain.slope_db_per_cm,
        );
        gauge(
            out,
            "pleura_calibration_frame_sd_db",
            "Frame-to-frame spread of the echo level about the calibrated gain, dB.",
            c.frame_sd_db,
        );
        if let Some(r) = c.response {
            gauge(
                out,
                "pleura_calibration_response_sd",
                "Residual spread of the truth's lung aeration about the calibrated response line.",
                r.sd,
            );
        }
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
            "pleura_frames_poor_fit_total",
            "Frames published as a poor fit: the residual exceeded model_error_factor times the noise's.",
            &self.frames_poor_fit,
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
        counter(
            &mut out,
            "pleura_config_reload_failures_total",
            "Configuration reloads refused; the previous configuration stayed in force.",
            &self.reload_failures,
        );
        counter(
            &mut out,
            "pleura_ingest_errors_total",
            "Ingest connections closed by the transport (oversized frame, failed or slow handshake).",
            &self.ingest_errors,
        );
        counter(
            &mut out,
            "pleura_consumer_errors_total",
            "Publish-socket connections refused (max_connections) or failed in the handshake.",
            &self.consumer_errors,
        );
        for (name, kind, help, values) in [
            (
                "pleura_state_entries",
                "gauge",
                "Entries of the daemon's bounded per-scan tables.",
                &self.state_entries,
            ),
            (
                "pleura_state_evictions_total",
                "counter",
                "Entries dropped from the bounded per-scan tables (least recently used first).",
                &self.state_evictions,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for t in StateTable::ALL {
                let _ = writeln!(
                    out,
                    "{name}{{table=\"{}\"}} {}",
                    t.label(),
                    values[t as usize].load(Relaxed)
                );
            }
        }
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
        gauge(
            &mut out,
            "pleura_memory_budget_bytes",
            "Memory the configured bounds allow beyond the daemon's base.",
            self.memory_budget.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP pleura_misfit The last posterior frame's data residual over the noise's (1: the model explains the data)."
        );
        let _ = writeln!(out, "# TYPE pleura_misfit gauge");
        let _ = writeln!(out, "pleura_misfit {}", self.misfit());
        if let Some(rss) = resident_bytes() {
            gauge(
                &mut out,
                "pleura_resident_memory_bytes",
                "Resident set size of the daemon process.",
                rss,
            );
        }
        let _ = writeln!(
            out,
            "# HELP pleura_device_info Where the processing stage runs."
        );
        let _ = writeln!(out, "# TYPE pleura_device_info gauge");
        let _ = writeln!(out, "pleura_device_info{{device=\"{device}\"}} 1");
        self.render_calibration(&mut out);
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

/// `v` as JSON, null when not finite.
fn finite_or_null(v: f64) -> serde_json::Value {
    if v.is_finite() {
        v.into()
    } else {
        serde_json::Value::Null
    }
}

/// This process's resident set size, bytes (Linux `/proc/self/statm`); None elsewhere.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
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
        m.set_entries(StateTable::Scans, 7);
        m.evicted(StateTable::Operators, 2);
        let text = m.render();
        assert!(
            text.contains("pleura_state_entries{table=\"scans\"} 7\n"),
            "{text}"
        );
        assert!(text.contains("pleura_state_evictions_total{table=\"operators\"} 2\n"));
        assert!(text.contains("pleura_state_evictions_total{table=\"streams\"} 0\n"));
        let rss = resident_bytes().expect("Linux has /proc/self/statm");
        assert!(rss > 1 << 20, "resident {rss} bytes");
        assert_eq!(m.rejected_total(), 2);
        for r in RejectReason::ALL {
            assert_eq!(RejectReason::from_label(r.label()), r);
            assert_eq!(RejectReason::ALL[r.index()], r);
        }
    }
}
