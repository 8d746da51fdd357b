//! The linear inverse problem of one frame, made scale-free.
//!
//! Channel data come in arbitrary units (int16 ADC counts, simulator units) and the
//! operator's gain depends on probe, transmits and grid. Both are divided by the
//! operator's spectral norm `||A||_2` (estimated by power iteration on `A^T A`), so the
//! normalised operator `A' = A / ||A||` has norm 1 and step sizes mean the same on every
//! recording. The noise standard deviation is estimated from each frame and carried in
//! the same normalised units.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use ndarray::Array4;

use super::PosteriorError;
use crate::operator::{l2, power_iteration, MeasurementOperator};

/// A linear map from aeration images (b, nz, nx) to data (b, ...), with its adjoint.
/// Implementations must be differentiable by candle autograd in `forward` (DPS
/// backpropagates through it).
pub trait LinearOperator: Send + Sync {
    /// Image shape (nz, nx).
    fn image_shape(&self) -> (usize, usize);
    /// Data shape of one frame (without the batch dimension).
    fn data_shape(&self) -> Vec<usize>;
    /// A x for a batch of images (b, nz, nx) -> (b, data_shape...).
    fn apply(&self, x: &Tensor) -> Result<Tensor, PosteriorError>;
    /// A^T y for a batch of data (b, data_shape...) -> (b, nz, nx).
    fn apply_adjoint(&self, y: &Tensor) -> Result<Tensor, PosteriorError>;
    /// Per data sample (flattened, one frame): whether no echo from any pixel of the grid
    /// can have arrived yet, so the sample holds noise only; `None` when the operator has
    /// no notion of time.
    fn echo_free_samples(&self) -> Result<Option<Vec<bool>>, PosteriorError> {
        Ok(None)
    }
}

/// Relative magnitude below which the response to a uniform image counts as no echo.
const ECHO_THRESHOLD: f32 = 1e-3;

impl LinearOperator for MeasurementOperator {
    fn image_shape(&self) -> (usize, usize) {
        MeasurementOperator::image_shape(self)
    }

    fn data_shape(&self) -> Vec<usize> {
        let (t, a, e, c) = MeasurementOperator::data_shape(self);
        vec![t, a, e, c]
    }

    fn apply(&self, x: &Tensor) -> Result<Tensor, PosteriorError> {
        Ok(self.forward(x)?)
    }

    fn apply_adjoint(&self, y: &Tensor) -> Result<Tensor, PosteriorError> {
        Ok(self.adjoint(y)?)
    }

    /// Samples of each (transmit, element, channel) trace before the first one that the
    /// echo of a uniform image reaches (|A 1| above 1e-3 of its maximum): the pulse's
    /// leading edge is inside A, so these samples precede every echo from the grid.
    fn echo_free_samples(&self) -> Result<Option<Vec<bool>>, PosteriorError> {
        let (nz, nx) = MeasurementOperator::image_shape(self);
        let ones = Tensor::ones((1, nz, nx), DType::F32, self.device())?;
        let r = self
            .forward(&ones)?
            .abs()?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let (n_tx, n_ax, n_el, n_ch) = MeasurementOperator::data_shape(self);
        let peak = r.iter().copied().fold(0.0f32, f32::max);
        let mut mask = vec![false; r.len()];
        if peak <= 0.0 {
            return Ok(Some(mask));
        }
        let at = |t: usize, a: usize, e: usize, c: usize| ((t * n_ax + a) * n_el + e) * n_ch + c;
        for t in 0..n_tx {
            for e in 0..n_el {
                // One echo-free prefix per element, shared by its channels (I and Q).
                let first = (0..n_ax)
                    .find(|&a| (0..n_ch).any(|c| r[at(t, a, e, c)] > ECHO_THRESHOLD * peak))
                    .unwrap_or(n_ax);
                for a in 0..first {
                    for c in 0..n_ch {
                        mask[at(t, a, e, c)] = true;
                    }
                }
            }
        }
        Ok(Some(mask))
    }
}

/// An operator divided by its spectral norm, with its echo-free samples.
pub struct NormalizedOperator {
    op: Arc<dyn LinearOperator>,
    norm: f64,
    echo_free: Option<Vec<bool>>,
}

impl NormalizedOperator {
    /// Estimates `||A||_2` by `iterations` power iterations on `A^T A` from a seeded
    /// random start (deterministic).
    pub fn new(
        op: Arc<dyn LinearOperator>,
        iterations: usize,
        device: &Device,
    ) -> Result<Self, PosteriorError> {
        let (nz, nx) = op.image_shape();
        let norm2 = power_iteration(&[1, nz, nx], device, iterations, |v| {
            op.apply_adjoint(&op.apply(v)?)
        })?;
        if !(norm2.is_finite() && norm2 > 0.0) {
            return Err(PosteriorError::ZeroOperator);
        }
        let echo_free = op.echo_free_samples()?;
        Ok(Self {
            op,
            norm: norm2.sqrt(),
            echo_free,
        })
    }

    /// The spectral norm of the underlying operator (power-iteration estimate).
    pub fn norm(&self) -> f64 {
        self.norm
    }

    /// The underlying operator.
    pub fn inner(&self) -> &Arc<dyn LinearOperator> {
        &self.op
    }

    /// Image shape (nz, nx).
    pub fn image_shape(&self) -> (usize, usize) {
        self.op.image_shape()
    }

    /// A' a = A a / ||A|| for aeration images (b, nz, nx).
    pub fn forward(&self, a: &Tensor) -> Result<Tensor, PosteriorError> {
        Ok((self.op.apply(a)? * (1.0 / self.norm))?)
    }

    /// A'^T r.
    pub fn adjoint(&self, r: &Tensor) -> Result<Tensor, PosteriorError> {
        Ok((self.op.apply_adjoint(r)? * (1.0 / self.norm))?)
    }
}

/// Where a noise estimate came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoiseSource {
    /// Given in the configuration.
    Configured,
    /// Robust (MAD) estimate over the samples recorded before the first echo.
    PreEcho,
    /// Robust (MAD) estimate over all samples: an upper bound, used when fewer than
    /// [`MIN_NOISE_SAMPLES`] echo-free samples exist.
    AllSamples,
}

impl NoiseSource {
    pub fn name(self) -> &'static str {
        match self {
            NoiseSource::Configured => "configured",
            NoiseSource::PreEcho => "pre-echo",
            NoiseSource::AllSamples => "all-samples",
        }
    }
}

/// Fewest echo-free samples a pre-echo noise estimate is made from.
pub const MIN_NOISE_SAMPLES: usize = 64;

/// MAD to standard deviation of a normal distribution: 1 / Phi^-1(3/4)
/// (Phi^-1(0.75) = 0.674489750196...).
pub const MAD_TO_SIGMA: f64 = 1.482_602_218_505_602;

/// Robust standard deviation: 1.4826 median(|v - median(v)|); 0 for an empty slice.
pub fn mad_sigma(values: &[f32]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v: Vec<f64> = values.iter().map(|x| *x as f64).collect();
    let med = median(&mut v);
    let mut dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
    MAD_TO_SIGMA * median(&mut dev)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// One frame's data in normalised units with its noise level.
#[derive(Clone)]
pub struct Measurement {
    /// y' = y / ||A||, shape (1, data_shape...).
    pub y: Tensor,
    /// ||y'||.
    pub y_norm: f64,
    /// Noise standard deviation per sample in normalised units (with any model error
    /// counted as noise, [`Measurement::with_model_error`]).
    pub sigma: f64,
    /// The measured (or configured) noise standard deviation per sample in data units.
    pub sigma_data: f64,
    pub noise_source: NoiseSource,
    /// Number of data samples M.
    pub n_samples: usize,
}

impl Measurement {
    /// Validates one frame (finite, not all zero, of the operator's shape), estimates its
    /// noise (the configured value when given, else the MAD of the echo-free samples) and
    /// normalises it.
    pub fn new(
        op: &NormalizedOperator,
        data: &[f32],
        shape: &[usize],
        noise_sigma: Option<f64>,
        device: &Device,
    ) -> Result<Self, PosteriorError> {
        let expected = op.op.data_shape();
        if shape != expected.as_slice() || data.len() != expected.iter().product::<usize>() {
            return Err(PosteriorError::MeasurementShape {
                got: shape.to_vec(),
                expected,
            });
        }
        if let Some((index, value)) = data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(PosteriorError::NonFiniteMeasurement {
                index,
                value: *value,
            });
        }
        if data.iter().all(|v| *v == 0.0) {
            return Err(PosteriorError::ZeroMeasurement);
        }
        let (sigma_data, noise_source) = match noise_sigma {
            Some(s) => (s, NoiseSource::Configured),
            None => {
                let quiet: Vec<f32> = match &op.echo_free {
                    Some(mask) => data
                        .iter()
                        .zip(mask)
                        .filter(|(_, m)| **m)
                        .map(|(v, _)| *v)
                        .collect(),
                    None => Vec::new(),
                };
                if quiet.len() >= MIN_NOISE_SAMPLES {
                    (mad_sigma(&quiet), NoiseSource::PreEcho)
                } else {
                    (mad_sigma(data), NoiseSource::AllSamples)
                }
            }
        };
        let mut dims = vec![1];
        dims.extend_from_slice(shape);
        let y = (Tensor::from_vec(data.to_vec(), dims, device)? * (1.0 / op.norm))?;
        let y_norm = l2(&y)?;
        Ok(Self {
            y,
            y_norm,
            sigma: sigma_data / op.norm,
            sigma_data,
            noise_source,
            n_samples: data.len(),
        })
    }

    /// As [`Measurement::new`] for a zea frame (n_tx, n_ax, n_el, n_ch).
    pub fn from_frame(
        op: &NormalizedOperator,
        frame: &Array4<f32>,
        noise_sigma: Option<f64>,
        device: &Device,
    ) -> Result<Self, PosteriorError> {
        let data: Vec<f32> = frame.iter().copied().collect();
        let (t, a, e, c) = frame.dim();
        Self::new(op, &data, &[t, a, e, c], noise_sigma, device)
    }

    /// Norm of the residual expected from noise alone: sigma' sqrt(M).
    pub fn noise_norm(&self) -> f64 {
        self.sigma * (self.n_samples as f64).sqrt()
    }

    /// The relative residual noise alone leaves: sigma' sqrt(M) / ||y'||.
    pub fn noise_floor(&self) -> f64 {
        self.noise_norm() / self.y_norm
    }

    /// Model error per sample (normalised units) of an estimate leaving the relative
    /// residual `residual`: what the residual holds beyond the noise,
    /// `sqrt(max(0, residual^2 ||y'||^2 / M - sigma'^2))`.
    pub fn model_error(&self, residual: f64) -> f64 {
        let per_sample = residual * self.y_norm / (self.n_samples as f64).sqrt();
        (per_sample * per_sample - self.sigma * self.sigma)
            .max(0.0)
            .sqrt()
    }

    /// This measurement with `model_error` (normalised units per sample) counted as noise:
    /// sigma'^2 + model_error^2 (the data term then weighs the data by what the model can
    /// explain of them).
    pub fn with_model_error(&self, model_error: f64) -> Self {
        Self {
            sigma: self.sigma.hypot(model_error),
            ..self.clone()
        }
    }

    /// Per image of a batch of aeration images (b, nz, nx): ||y' - A' a|| / ||y'||.
    pub fn relative_residuals(
        &self,
        op: &NormalizedOperator,
        a: &Tensor,
    ) -> Result<Vec<f64>, PosteriorError> {
        let r = self.y.broadcast_sub(&op.forward(a)?)?;
        let n = r.sqr()?.flatten_from(1)?.sum(1)?.sqrt()?.to_vec1::<f32>()?;
        Ok(n.iter().map(|v| *v as f64 / self.y_norm).collect())
    }
}
