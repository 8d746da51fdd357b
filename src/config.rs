//! The daemon's configuration file (`config/pleura.toml`).
//!
//! Parsed with serde; every table rejects unknown keys, so a typo is an error that names
//! the key instead of a silently ignored setting. Every field has a default, so an empty
//! file is a valid configuration; `config/pleura.toml` documents each field.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::logging::LogConfig;

/// Errors loading a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("[{table}] {key} = {value}: {rule}")]
    Value {
        table: &'static str,
        key: &'static str,
        value: String,
        rule: &'static str,
    },
}

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[log]`: logging.
    pub log: LogConfig,
    pub daemon: DaemonConfig,
    /// `[sampler]`: posterior sampling of each frame.
    pub sampler: crate::posterior::SamplerConfig,
}

/// Where the daemon's ingest socket attaches.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IngestMode {
    /// Connect to the scanner bridge's PUB socket (reconnects when it restarts).
    #[default]
    Connect,
    /// Bind, and let bridges connect.
    Bind,
}

/// The per-frame processing stage of the daemon's worker.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StageKind {
    /// Delay-and-sum beamforming: envelope image and B-mode.
    #[default]
    Das,
    /// Posterior sampling of the aeration image (the per-frame pipeline of `pleura replay`).
    Posterior,
    /// No processing: results carry sequence number and latency only.
    None,
}

/// `[daemon]`: `pleura serve` (see `config/pleura.toml` for each field).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    pub ingest: String,
    pub ingest_mode: IngestMode,
    pub publish: String,
    pub admin: String,
    pub key_file: Option<PathBuf>,
    pub queue_capacity: usize,
    pub stage: StageKind,
    pub das_f_number: f64,
    pub bmode_dynamic_range_db: f64,
    pub das_grid_x: Option<(f64, f64, usize)>,
    pub das_grid_z: Option<(f64, f64, usize)>,
    pub status_interval_ms: u64,
    pub shutdown_deadline_ms: u64,
    pub reject_log_interval_ms: u64,
    pub max_streams: usize,
    /// Largest ZMTP frame, and largest multipart message, the ingest accepts, bytes:
    /// enforced while the frame header is read, before anything is allocated for it.
    pub max_message_bytes: usize,
    /// Time a new ingest connection has to finish the ZMTP handshake, milliseconds.
    pub handshake_timeout_ms: u64,
    /// Most connections each bound ZMTP socket (the ingest in bind mode, the publish
    /// socket) holds at once, those still in the handshake included.
    pub max_connections: usize,
    /// Messages queued for one consumer of the publish socket that does not keep up;
    /// beyond them its messages are dropped.
    pub publish_queue: usize,
    /// Scan ids remembered per stream (least recently used forgotten first).
    pub max_scans_per_stream: usize,
    /// Largest accepted scan message body, bytes.
    pub max_scan_bytes: usize,
    /// Largest forward jump of a stream's frame sequence number or scan epoch.
    pub max_sequence_jump: u64,
    /// Largest image grid (pixels) a scan may make the stage build.
    pub max_grid_pixels: usize,
    /// Largest DAS plan (taps) a scan may make the stage build.
    pub max_das_taps: u64,
    /// Largest measurement operator (bytes of tables and working buffers) a scan may make
    /// the stage build.
    pub max_operator_bytes: u64,
    /// Measurement operators kept for scans seen before (least recently used dropped).
    pub max_operators: usize,
    pub record: Option<PathBuf>,
    pub record_queue: usize,
    /// zea layout of the recording: 0.1.x (`zea`) or before 0.1.0 (`legacy`).
    pub record_layout: crate::recording::Layout,
    /// Model directory of the `posterior` stage.
    pub model: PathBuf,
    /// Compute device of the `posterior` stage: `cpu`, `cuda:N` or `auto`.
    pub device: String,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            ingest: "tcp://127.0.0.1:5555".into(),
            ingest_mode: IngestMode::Connect,
            publish: "tcp://127.0.0.1:5556".into(),
            admin: "127.0.0.1:9464".into(),
            key_file: None,
            queue_capacity: 2,
            stage: StageKind::Das,
            das_f_number: 1.5,
            bmode_dynamic_range_db: 40.0,
            das_grid_x: None,
            das_grid_z: None,
            status_interval_ms: 1000,
            shutdown_deadline_ms: 5000,
            reject_log_interval_ms: 1000,
            max_streams: 16,
            max_message_bytes: 64 << 20,
            handshake_timeout_ms: 5000,
            max_connections: 64,
            publish_queue: 64,
            max_scans_per_stream: 4,
            max_scan_bytes: 2 << 20,
            max_sequence_jump: 1 << 20,
            max_grid_pixels: 1 << 20,
            max_das_taps: 32 << 20,
            max_operator_bytes: 512 << 20,
            max_operators: crate::pipeline::posterior::DEFAULT_MAX_OPERATORS,
            record: None,
            record_queue: 256,
            record_layout: crate::recording::Layout::Zea,
            model: PathBuf::from("testdata/model"),
            device: "auto".into(),
        }
    }
}

/// Shortest accepted status interval: at most 100 status messages a second.
pub const MIN_STATUS_INTERVAL_MS: u64 = 10;

impl DaemonConfig {
    /// Checks the values no type can: counts and caps that must be positive, the status
    /// interval's floor. A value that would otherwise be clamped is refused with its name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let value = |key: &'static str, value: String, rule: &'static str| ConfigError::Value {
            table: "daemon",
            key,
            value,
            rule,
        };
        let positive: [(&'static str, u64); 14] = [
            ("queue_capacity", self.queue_capacity as u64),
            ("max_streams", self.max_streams as u64),
            ("max_message_bytes", self.max_message_bytes as u64),
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("max_connections", self.max_connections as u64),
            ("publish_queue", self.publish_queue as u64),
            ("max_scans_per_stream", self.max_scans_per_stream as u64),
            ("max_scan_bytes", self.max_scan_bytes as u64),
            ("max_sequence_jump", self.max_sequence_jump),
            ("max_grid_pixels", self.max_grid_pixels as u64),
            ("max_das_taps", self.max_das_taps),
            ("max_operator_bytes", self.max_operator_bytes),
            ("max_operators", self.max_operators as u64),
            ("record_queue", self.record_queue as u64),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(value(key, v.to_string(), "must be at least 1"));
            }
        }
        let set =
            |a: &Option<(f64, f64, usize)>| a.map_or("unset".to_string(), |v| format!("{v:?}"));
        if self.das_grid_x.is_some() != self.das_grid_z.is_some() {
            return Err(value(
                "das_grid_x",
                format!(
                    "{} with das_grid_z {}",
                    set(&self.das_grid_x),
                    set(&self.das_grid_z)
                ),
                "das_grid_x and das_grid_z go together",
            ));
        }
        if self.status_interval_ms < MIN_STATUS_INTERVAL_MS {
            return Err(value(
                "status_interval_ms",
                self.status_interval_ms.to_string(),
                "must be at least 10 (100 status messages a second)",
            ));
        }
        Ok(())
    }
}

impl Config {
    /// Parses and validates a configuration from TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })?;
        config.daemon.validate().map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(config)
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::LogFormat;

    #[test]
    fn shipped_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pleura.toml");
        let cfg = Config::load(&path).expect("config/pleura.toml must parse");
        assert_eq!(cfg.log.format, LogFormat::Text);
        assert_eq!(
            cfg.daemon,
            DaemonConfig::default(),
            "the toml documents the defaults"
        );
        assert_eq!(cfg.sampler, crate::posterior::SamplerConfig::default());
        cfg.sampler
            .validate()
            .expect("shipped sampler settings are valid");
    }

    /// The sampler settings of the preset `config/NAME`, which must leave the daemon's
    /// defaults alone and validate.
    fn preset_sampler(name: &str) -> crate::posterior::SamplerConfig {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config")
            .join(name);
        let cfg = Config::load(&path).unwrap_or_else(|e| panic!("config/{name}: {e}"));
        assert_eq!(cfg.daemon, DaemonConfig::default());
        cfg.sampler
            .validate()
            .expect("preset sampler settings are valid");
        cfg.sampler
    }

    /// The full-DPS preset changes the sampler's method, steps, step size, sample count and
    /// divergence bound, and nothing else.
    #[test]
    fn full_dps_preset_parses() {
        let expected = crate::posterior::SamplerConfig {
            method: crate::posterior::Method::Dps,
            steps: 1000,
            zeta: 72.0,
            samples: 8,
            max_abs: 1000.0,
            ..Default::default()
        };
        assert_eq!(preset_sampler("full-dps.toml"), expected);
    }

    /// The DDS-50 preset changes the sampler's method, steps, lambda and eta, and nothing
    /// else.
    #[test]
    fn dds_50_preset_parses() {
        let expected = crate::posterior::SamplerConfig {
            method: crate::posterior::Method::Dds,
            steps: 50,
            lambda: 7e-5,
            eta: 1.0,
            samples: 8,
            ..Default::default()
        };
        assert_eq!(preset_sampler("dds-50.toml"), expected);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("[log]\nfiltr = \"debug\"\n", Path::new("x.toml"))
            .expect_err("typo must be rejected");
        let msg = err.to_string();
        assert!(msg.contains("filtr"), "error must name the key: {msg}");
        let err = Config::from_toml("[logg]\n", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("logg"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let err = Config::from_toml("[log]\nformat = \"xml\"\n", Path::new("x.toml"))
            .expect_err("bad enum must be rejected");
        assert!(err.to_string().contains("xml"), "{err}");
    }

    /// Counts that used to be clamped to 1 in silence, and a status interval that sent
    /// status messages as fast as the socket took them, are refused with their name.
    #[test]
    fn zero_counts_and_intervals_are_named() {
        for (key, value, rule) in [
            ("queue_capacity", "0", "at least 1"),
            ("max_streams", "0", "at least 1"),
            ("max_scans_per_stream", "0", "at least 1"),
            ("max_operators", "0", "at least 1"),
            ("status_interval_ms", "0", "at least 10"),
            ("status_interval_ms", "9", "at least 10"),
        ] {
            let text = format!("[daemon]\n{key} = {value}\n");
            let err = Config::from_toml(&text, Path::new("x.toml"))
                .expect_err("must be refused")
                .to_string();
            assert!(
                err.contains(&format!("[daemon] {key} = {value}")) && err.contains(rule),
                "{err}"
            );
        }
        let ok = Config::from_toml("[daemon]\nstatus_interval_ms = 10\n", Path::new("x.toml"));
        assert_eq!(ok.unwrap().daemon.status_interval_ms, 10);
    }
}
