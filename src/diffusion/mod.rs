//! The diffusion prior over lung aeration images: noise schedules ([`schedule`]), the
//! epsilon-predicting U-Net ([`unet`]), unconditional DDPM/DDIM sampling with the per-step
//! pieces that posterior sampling builds on ([`sampler`]), image data sets ([`data`]),
//! model checkpoints ([`checkpoint`]) and the memorisation check ([`eval`]).
//!
//! Images hold aeration in [0, 1]; the model works on `2 a - 1` in [-1, 1]
//! ([`data::to_model`], [`data::from_model`]).

pub mod checkpoint;
pub mod data;
pub mod eval;
pub mod sampler;
pub mod schedule;
pub mod unet;

use std::path::PathBuf;

/// Errors of the diffusion prior and its training.
#[derive(Debug, thiserror::Error)]
pub enum DiffusionError {
    #[error("invalid {field} = {value}: {reason}")]
    Config {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("a parameter store lock was poisoned by a panic")]
    Poisoned,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: HDF5 error: {source}")]
    Hdf5 { path: PathBuf, source: hdf5::Error },
    #[error("{path}: {reason}")]
    Data { path: PathBuf, reason: String },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl DiffusionError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
    pub(crate) fn hdf5(path: impl Into<PathBuf>) -> impl FnOnce(hdf5::Error) -> Self {
        let path = path.into();
        move |source| Self::Hdf5 { path, source }
    }
}
