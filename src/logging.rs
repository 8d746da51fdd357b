//! Logging through `tracing`: human-readable lines by default, JSON lines on request,
//! filtered by `RUST_LOG`-style directives (e.g. `info,pleura::beamform=debug`).

use tracing_subscriber::{fmt, EnvFilter};

/// The logging flags every binary takes (`--log`, `--log-format`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct LogArgs {
    /// Log filter (RUST_LOG syntax, e.g. "debug" or "info,pleura::beamform=debug");
    /// overrides `[log] filter` of a configuration file and RUST_LOG.
    #[arg(long = "log", global = true)]
    pub filter: Option<String>,
    /// Log line format on stderr [default: `[log] format` of a configuration file, else text].
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
}

impl LogArgs {
    /// Installs the global subscriber: the flags win over `config` (a configuration
    /// file's `[log]`), which wins over RUST_LOG and the defaults (`info`, text).
    pub fn init(&self, config: Option<&LogConfig>) {
        let filter = self
            .filter
            .as_deref()
            .or_else(|| config.and_then(|c| c.filter.as_deref()));
        let format = self
            .log_format
            .or_else(|| config.map(|c| c.format))
            .unwrap_or_default();
        init(filter, format);
    }
}

/// `[log]` of the daemon's configuration file (`config/pleura.toml`).
#[derive(Clone, Debug, Default, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// RUST_LOG-style filter; `RUST_LOG` in the environment wins when this is absent.
    pub filter: Option<String>,
    /// `text` or `json`.
    pub format: LogFormat,
}

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

/// An error with its chain of sources, for a log field: `error: cause: root cause`. (The
/// JSON format writes only an error's own message, so the chain goes in the text.)
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}
