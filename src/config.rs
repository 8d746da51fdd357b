//! The daemon's configuration file (`config/pleura.toml`).
//!
//! Parsed with serde; every table rejects unknown keys, so a typo is an error that names
//! the key instead of a silently ignored setting. Every field has a default, so an empty
//! file is a valid configuration; `config/pleura.toml` documents each field.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::logging::LogFormat;

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
}

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub log: LogConfig,
    /// `[sampler]`: posterior sampling of each frame.
    pub sampler: crate::posterior::SamplerConfig,
}

/// `[log]`: logging.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// RUST_LOG-style filter; `RUST_LOG` in the environment wins when this is absent.
    pub filter: Option<String>,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Config {
    /// Parses a configuration from TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })
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

    #[test]
    fn shipped_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pleura.toml");
        let cfg = Config::load(&path).expect("config/pleura.toml must parse");
        assert_eq!(cfg.log.format, LogFormat::Text);
        assert_eq!(cfg.sampler, crate::posterior::SamplerConfig::default());
        cfg.sampler
            .validate()
            .expect("shipped sampler settings are valid");
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
}
