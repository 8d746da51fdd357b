//! Typed errors of the beamformer: each names the field and the value at fault.

use crate::grid::GridError;

/// Why a beamforming plan could not be built or a frame could not be beamformed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BeamformError {
    /// The receive f-number must be a positive finite number.
    #[error("f-number must be > 0 and finite, got {0}")]
    FNumber(f64),
    /// The Tukey apodization taper fraction must lie in [0, 1].
    #[error("Tukey apodization alpha must lie in [0, 1], got {0}")]
    TukeyAlpha(f64),
    /// The dynamic range of a log compression must be positive.
    #[error("dynamic range must be > 0 dB and finite, got {0} dB")]
    DynamicRange(f64),
    /// The normalisation reference of a B-mode must be positive.
    #[error("B-mode reference maximum must be > 0 and finite, got {0}")]
    ReferenceMax(f32),
    /// The grid cannot be built: an axis empty, not finite or not strictly increasing, a
    /// depth not below the probe, or a scan that gives no default grid.
    #[error(transparent)]
    Grid(#[from] GridError),
    /// A grid point lies where the scan sees nothing.
    #[error("grid {axis} = {value} m is outside the field of view: {reason}")]
    OutsideFieldOfView {
        axis: &'static str,
        value: f64,
        reason: String,
    },
    /// A scan parameter cannot be beamformed (non-positive frequency, wrong array shape ...).
    #[error("scan/{field} = {value}: {reason}")]
    Scan {
        field: &'static str,
        value: String,
        reason: String,
    },
    /// An output buffer's dimensions differ from the plan's grid.
    #[error("output buffer is (nz, nx) = {got:?}, the grid's is {expected:?}")]
    OutputShape {
        expected: (usize, usize),
        got: (usize, usize),
    },
    /// A frame's dimensions differ from the scan the plan was built for.
    #[error(
        "frame dimensions (n_tx, n_ax, n_el, n_ch) = {got:?} do not match the scan's {expected:?}"
    )]
    FrameShape {
        expected: [usize; 4],
        got: [usize; 4],
    },
    /// A frame holds a NaN or infinite sample.
    #[error("frame sample (tx {tx}, ax {ax}, el {el}, ch {ch}) is {value}, not finite")]
    NonFinite {
        tx: usize,
        ax: usize,
        el: usize,
        ch: usize,
        value: f32,
    },
}

impl BeamformError {
    pub(crate) fn scan(
        field: &'static str,
        value: impl std::fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Self::Scan {
            field,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}
