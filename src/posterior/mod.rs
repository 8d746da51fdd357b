//! Posterior sampling of aeration images given one frame of channel data: the diffusion
//! prior ([`crate::diffusion`]) combined with the measurement operator
//! ([`crate::operator`]).
//!
//! - [`problem`]: the linear problem `y = A a + n` made scale-free: the operator divided
//!   by its spectral norm (power iteration), the frame by the same factor, the noise level
//!   estimated from the data ([`problem::Measurement`]).
//! - [`sampler`]: the reverse-diffusion loops: DPS (Chung et al. 2022) with ancestral or
//!   DDIM updates over a respaced schedule, and DDS (Chung, Lee & Ye 2023), which replaces
//!   the backpropagation through the network by conjugate-gradient data consistency on
//!   Tweedie's estimate. K samples run as one batch.
//! - [`echo`]: the echo-power data term for data the RF term cannot explain (speckle):
//!   the smoothed DAS echo amplitude over a calibrated depth gain, against a Gaussian blur
//!   of the aeration.
//! - [`frame`]: per-frame reconstruction for sequences: warm start from the previous
//!   frame's estimate with a cold fallback on scene changes, the divergence guard with
//!   restarts, and the summary statistics (mean, per-pixel std, mean aeration with its
//!   95 % interval and category).
//!
//! Method, step-size rule and interval are described in `docs/reconstruction.md`.

pub mod echo;
pub mod frame;
pub mod lung;
pub mod problem;
pub mod sampler;

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Errors of posterior sampling.
#[derive(Debug, thiserror::Error)]
pub enum PosteriorError {
    #[error("invalid sampler setting {field} = {value}: {reason}")]
    Config {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error(
        "the operator's grid is {grid:?} pixels (nz, nx), but the model's U-Net needs sides \
         that are multiples of {multiple}"
    )]
    GridShape {
        /// The U-Net's downsampling factor, 2^(levels - 1).
        multiple: usize,
        grid: (usize, usize),
    },
    #[error("measurement has a non-finite sample at flat index {index}: {value}")]
    NonFiniteMeasurement { index: usize, value: f32 },
    #[error("measurement is all zeros: nothing to reconstruct from")]
    ZeroMeasurement,
    #[error("measurement has shape {got:?}, the operator needs {expected:?}")]
    MeasurementShape {
        got: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("operator has zero norm: it maps every image to zero")]
    ZeroOperator,
    #[error("sampling diverged at step {step}: {reason}")]
    Diverged {
        step: usize,
        reason: String,
        /// Network evaluations per sample the attempt spent before it diverged.
        evaluations: usize,
    },
    #[error("operator: {0}")]
    Operator(#[from] crate::operator::OperatorError),
    #[error("diffusion model: {0}")]
    Diffusion(#[from] crate::diffusion::DiffusionError),
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// The posterior sampling algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// DPS (Chung et al. 2022, Algorithm 1): ancestral (DDPM) steps over the respaced
    /// schedule, each followed by the gradient step on the data residual of Tweedie's
    /// estimate, backpropagated through the network.
    Dps,
    /// DPS guidance with DDIM updates (stochasticity `eta`): the respaced fast variant.
    DdimDps,
    /// Decomposed diffusion sampling (Chung, Lee & Ye 2023): a few conjugate-gradient
    /// steps of data consistency on Tweedie's estimate, then a DDIM update with `eta`;
    /// no backpropagation through the network.
    Dds,
}

impl Method {
    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Method::Dps => "dps",
            Method::DdimDps => "ddim-dps",
            Method::Dds => "dds",
        }
    }

    /// Whether this method differentiates through the network.
    pub fn uses_backprop(self) -> bool {
        matches!(self, Method::Dps | Method::DdimDps)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = PosteriorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dps" => Ok(Method::Dps),
            "ddim-dps" => Ok(Method::DdimDps),
            "dds" => Ok(Method::Dds),
            _ => Err(PosteriorError::Config {
                field: "sampler.method",
                value: s.to_string(),
                reason: "expected dps, ddim-dps or dds".into(),
            }),
        }
    }
}

/// `spread_scale` of the default sampler (DDS, 10 steps, K = 4) with the shipped model,
/// fitted by `scripts/calibrate-interval.sh` on held-out phantom sequences (seeds
/// 6001-6050) and checked on others (7001-7050): docs/BENCHMARKS.md, "Interval coverage".
pub const SPREAD_SCALE_DDS10: f64 = 1.92;

/// `[sampler]` in `config/pleura.toml`: how frames are reconstructed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplerConfig {
    /// The algorithm.
    pub method: Method,
    /// Reverse steps of a cold start, evenly respaced over the model's training steps.
    pub steps: usize,
    /// Posterior samples K per frame, drawn as one batch.
    pub samples: usize,
    /// Seed of the sampling noise of the first frame (frame f uses seed + f).
    pub seed: u64,
    /// DPS step size zeta' on the normalised residual (see [`sampler`]).
    pub zeta: f64,
    /// DDIM stochasticity for `ddim-dps` and `dds` (0: deterministic updates).
    pub eta: f64,
    /// DDS: conjugate-gradient iterations per step.
    pub cg_iterations: usize,
    /// DDS: variance (aeration^2) of the proximal term that keeps the data-consistent
    /// image near Tweedie's estimate: minimise ||y - A a||^2 / sigma^2 + ||a - a0||^2 / lambda.
    pub lambda: f64,
    /// Warm-start frames after the first from the previous frame's estimate.
    pub warm_start: bool,
    /// Fraction of `steps` a warm start runs: the previous estimate is noised to the step
    /// at that fraction of the schedule and denoised from there.
    pub warm_start_fraction: f64,
    /// A frame whose data the previous estimate explains this many times worse (relative
    /// residual) than it explained its own frame is a scene change: start cold.
    pub scene_change_factor: f64,
    /// Restarts (cold, new seed) of a frame after a divergence before it is marked failed.
    pub max_restarts: usize,
    /// Divergence: the relative residual of Tweedie's estimate exceeds this factor, or an
    /// iterate leaves [-`max_abs`, `max_abs`] in model units, or a value is not finite.
    pub divergence_factor: f64,
    /// DPS fit check: a draw in which any sample's final relative residual exceeds this
    /// factor times the noise's (`sigma' sqrt(M) / ||y'||`, see [`problem::Measurement`])
    /// did not sample the posterior; the frame is drawn again, cold, with a new seed and
    /// half the step size `zeta`, within `max_restarts` (the closest draw is published if
    /// none fits). Not applied to DDS, or where the noise level is 0.
    pub fit_factor: f64,
    /// Model error: a frame whose posterior mean leaves a relative residual above this
    /// factor times the noise's (`sigma' sqrt(M) / ||y'||`) holds signal the model does
    /// not explain (another gain, pulse or polarity, speckle, reverberation). That excess
    /// is estimated as model error, added to the noise in quadrature, and the frame is
    /// drawn again under it, so that its samples, and the aeration interval, reflect how
    /// little the data then constrain the image; the frame is published as a poor fit
    /// ([`frame::FrameEstimate::poor_fit`]). Not applied where the noise level is 0.
    pub model_error_factor: f64,
    /// Calibration file of the echo data term (`pleura calibrate`; [`echo::Calibration`]):
    /// the system's depth gain. With it, a frame the RF term does not explain is
    /// reconstructed from its echo power; without it, from the RF draw under model error.
    pub calibration: Option<std::path::PathBuf>,
    /// Largest magnitude of an iterate in model units (images are in [-1, 1]; x_T ~ N(0, I)).
    pub max_abs: f64,
    /// Measurement noise standard deviation in data units; absent: estimated per frame
    /// (see [`problem::Measurement`]).
    pub noise_sigma: Option<f64>,
    /// Power iterations estimating the operator's spectral norm.
    pub power_iterations: usize,
    /// Factor on the samples' spread wherever it is published as uncertainty: the
    /// per-pixel standard deviation and the samples' part of the aeration interval
    /// ([`frame`]). Approximate posterior samplers are under-dispersed; sigma scaling
    /// (Laves et al. 2020, "Well-calibrated regression uncertainty in medical imaging with
    /// deep learning", MIDL) calibrates them with one factor fitted on held-out data
    /// (`scripts/calibrate-interval.sh`). 1: the samples' own spread.
    pub spread_scale: f64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            method: Method::Dds,
            // DDS on the validation sequence (lambda 3e-4, 2 CG iterations): 39.18 dB PSNR
            // with 10 steps, 39.04 dB with 20, 38.61 dB with 50 (docs/BENCHMARKS.md).
            steps: 10,
            samples: 4,
            seed: 0,
            zeta: 1.0,
            eta: 0.85,
            // lambda and cg_iterations tuned on the held-out validation sequence (seed
            // 3001; docs/BENCHMARKS.md, "Posterior sampling"), 10 DDS steps: lambda 0.05 (and
            // 0.2, 0.01) gave 37.5 dB PSNR with the K samples collapsed (interval width ~1e-5,
            // missing the truth; 0.3-0.7 % pixel coverage); 1e-4 gave 38.6 dB, SSIM 0.964, an
            // interval holding the truth and 61 % pixel coverage; 3e-4 39.2 dB, SSIM 0.962,
            // 25 % pixel coverage; 3e-5 27.2 dB. 2 CG iterations gave the same image as 5
            // (38.62 dB both) at 40 % of the operator applications.
            cg_iterations: 2,
            lambda: 1e-4,
            warm_start: true,
            warm_start_fraction: 0.3,
            scene_change_factor: 2.0,
            max_restarts: 2,
            divergence_factor: 10.0,
            // Full DPS at zeta 72 on a consolidated lung (seed 1003), before the step was
            // held: every sample ended at 4.3-4.4 times the noise's residual; the redraw
            // at 36 that fitted, 1.008 (docs/BENCHMARKS.md, "Larger zeta").
            fit_factor: 2.0,
            // pleura's own RF (testdata/lung_sequence.zea.h5, 20 dB SNR): the default
            // sampler's mean leaves 0.993-0.997 of the noise's residual; PyMUST simus RF of
            // the same kind of phantom (docs/BENCHMARKS.md, "Independent simulator"): 10.
            model_error_factor: 2.0,
            calibration: None,
            max_abs: 50.0,
            noise_sigma: None,
            power_iterations: 30,
            spread_scale: SPREAD_SCALE_DDS10,
        }
    }
}

impl SamplerConfig {
    /// Checks every field against its documented range.
    pub fn validate(&self) -> Result<(), PosteriorError> {
        let bad = |field: &'static str, value: String, reason: &str| {
            Err(PosteriorError::Config {
                field,
                value,
                reason: reason.into(),
            })
        };
        if self.steps == 0 {
            return bad("sampler.steps", "0".into(), "must be >= 1");
        }
        if self.samples == 0 {
            return bad("sampler.samples", "0".into(), "must be >= 1");
        }
        if !(self.zeta.is_finite() && self.zeta >= 0.0) {
            return bad(
                "sampler.zeta",
                self.zeta.to_string(),
                "must be finite, >= 0",
            );
        }
        if !(0.0..=1.0).contains(&self.eta) {
            return bad("sampler.eta", self.eta.to_string(), "must be in [0, 1]");
        }
        if !(self.lambda.is_finite() && self.lambda > 0.0) {
            return bad("sampler.lambda", self.lambda.to_string(), "must be > 0");
        }
        if !(self.warm_start_fraction > 0.0 && self.warm_start_fraction <= 1.0) {
            return bad(
                "sampler.warm_start_fraction",
                self.warm_start_fraction.to_string(),
                "must be in (0, 1]",
            );
        }
        if !(self.scene_change_factor.is_finite() && self.scene_change_factor >= 1.0) {
            return bad(
                "sampler.scene_change_factor",
                self.scene_change_factor.to_string(),
                "must be finite, >= 1",
            );
        }
        if !(self.divergence_factor.is_finite() && self.divergence_factor > 1.0) {
            return bad(
                "sampler.divergence_factor",
                self.divergence_factor.to_string(),
                "must be finite, > 1",
            );
        }
        if !(self.fit_factor.is_finite() && self.fit_factor > 1.0) {
            return bad(
                "sampler.fit_factor",
                self.fit_factor.to_string(),
                "must be finite, > 1",
            );
        }
        if !(self.model_error_factor.is_finite() && self.model_error_factor > 1.0) {
            return bad(
                "sampler.model_error_factor",
                self.model_error_factor.to_string(),
                "must be finite, > 1",
            );
        }
        if !(self.max_abs.is_finite() && self.max_abs > 1.0) {
            return bad("sampler.max_abs", self.max_abs.to_string(), "must be > 1");
        }
        if let Some(s) = self.noise_sigma {
            if !(s.is_finite() && s >= 0.0) {
                return bad("sampler.noise_sigma", s.to_string(), "must be finite, >= 0");
            }
        }
        if self.power_iterations == 0 {
            return bad("sampler.power_iterations", "0".into(), "must be >= 1");
        }
        if !(self.spread_scale.is_finite() && self.spread_scale > 0.0) {
            return bad(
                "sampler.spread_scale",
                self.spread_scale.to_string(),
                "must be finite, > 0",
            );
        }
        Ok(())
    }
}
