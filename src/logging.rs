//! Logging through `tracing`: human-readable lines by default, JSON lines on request,
//! filtered by `RUST_LOG`-style directives (e.g. `info,pleura::beamform=debug`).

use tracing_subscriber::{fmt, EnvFilter};

/// Output format of the log lines (on standard error).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global subscriber. `filter` overrides `RUST_LOG`; with neither, `info`.
/// Calling it twice is harmless (the second call keeps the first subscriber).
pub fn init(filter: Option<&str>, format: LogFormat) {
    let filter = match filter {
        Some(f) => EnvFilter::new(f),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
