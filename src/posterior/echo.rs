//! The echo-power data term: what tissue speckle leaves of the aeration in the data.
//!
//! Under speckle (sub-resolution scatterers whose reflectivity is zero-mean, with a local
//! amplitude that follows the aeration; docs/physics.md) the RF is linear in a random
//! reflectivity, not in the aeration, and the RF-domain data term cannot explain it
//! (docs/reconstruction.md, "Model error"). What the data carry is their local echo power:
//! the DAS envelope E, its power smoothed over a few speckle cells, `P = G * E^2`, and
//!
//! `sqrt(P(x, z)) ~ c(z) (K a)(x, z)`
//!
//! where `K` blurs by the same Gaussian `G` (the system's resolution is below a pixel) and
//! `c(z)` is the system's depth gain: its gain, the pulse's amplitude, the TGC and the
//! attenuation, `20 log10 c(z) = gain_db + slope_db_per_cm * z[cm]`. A frame's echo power
//! fixes the product of gain and aeration, not each (docs/BENCHMARKS.md, "What the echo
//! power says about the aeration"), so `c(z)` is calibrated once per system, on recordings
//! of known aeration ([`DepthGain::fit`], `pleura calibrate`), and the reconstruction
//! inverts `K` with the prior on the data `sqrt(P) / c(z)` ([`EchoData`]).

use std::path::Path;

use candle_core::{Device, Tensor};
use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};

use super::problem::LinearOperator;
use super::PosteriorError;
use crate::aeration::t95;

/// Standard deviation, in pixels, of the Gaussian that smooths the echo power and that the
/// operator blurs by. On simus RF of 20 phantoms (0.3 mm pixels, 5 MHz, 60 % bandwidth) the
/// lung mean of `sqrt(P / c)` with 1.5 pixels is within 0.9 points of the truth's
/// (docs/BENCHMARKS.md, "What the echo power says about the aeration").
pub const SMOOTHING_PX: f64 = 1.5;

/// Pixels whose blurred aeration is below this take no part in the depth-gain fit: the
/// fit is of logarithms, and the anechoic chest wall (aeration 0.03-0.06, `posterior::lung`)
/// holds speckle of noise, not of tissue.
pub const FIT_FLOOR: f32 = 0.15;

/// DDS proximal variance of the echo data term (the RF term's `lambda` is 1e-4). Measured
/// on the 20 simus frames: 0.1 lets the data decide (lung means within 3.4 points with a
/// calibrated gain); 1e-4 left the prior's answer (0.68-0.71 on every frame).
pub const LAMBDA: f64 = 0.1;

/// Noise of the first echo draw, as a fraction of the data's mean: the speckle left after
/// smoothing (about 13 % of the amplitude for 1.5 pixels) is estimated from the residual
/// by the model-error pass, which this only starts.
pub const NOISE_FRACTION: f64 = 0.05;

/// The normalised Gaussian of standard deviation `sigma` pixels, truncated at 3 sigma.
pub fn gaussian(sigma: f64) -> Vec<f32> {
    let r = (3.0 * sigma).ceil() as i64;
    let w: Vec<f64> = (-r..=r)
        .map(|i| (-((i * i) as f64) / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f64 = w.iter().sum();
    w.iter().map(|v| (v / sum) as f32).collect()
}

/// `a` convolved with the Gaussian of [`SMOOTHING_PX`] along both axes, zero outside.
pub fn smooth(a: ArrayView2<f32>) -> Array2<f32> {
    let g = gaussian(SMOOTHING_PX);
    let r = g.len() / 2;
    let (nz, nx) = a.dim();
    let pass = |src: &Array2<f32>, along_z: bool| {
        Array2::from_shape_fn((nz, nx), |(iz, ix)| {
            let mut s = 0.0f32;
            for (k, w) in g.iter().enumerate() {
                let o = k as isize - r as isize;
                let (jz, jx) = if along_z {
                    (iz as isize + o, ix as isize)
                } else {
                    (iz as isize, ix as isize + o)
                };
                if jz >= 0 && jx >= 0 && (jz as usize) < nz && (jx as usize) < nx {
                    s += w * src[[jz as usize, jx as usize]];
                }
            }
            s
        })
    };
    pass(&pass(&a.to_owned(), true), false)
}

/// The echo amplitude of a DAS envelope (nz, nx): `sqrt(G * E^2)`.
pub fn amplitude(envelope: ArrayView2<f32>) -> Array2<f32> {
    smooth(envelope.mapv(|v| v * v).view()).mapv(|p| p.max(0.0).sqrt())
}

/// The blur `K` of the echo data term: the Gaussian of [`SMOOTHING_PX`] on (nz, nx)
/// images, zero outside. Its matrix is symmetric, so it is its own adjoint.
pub struct Blur {
    shape: (usize, usize),
    kernel: Tensor,
    pad: usize,
}

impl Blur {
    pub fn new(nz: usize, nx: usize, device: &Device) -> Result<Self, PosteriorError> {
        let g = gaussian(SMOOTHING_PX);
        let n = g.len();
        let k: Vec<f32> = (0..n * n).map(|i| g[i / n] * g[i % n]).collect();
        Ok(Self {
            shape: (nz, nx),
            kernel: Tensor::from_vec(k, (1, 1, n, n), device)?,
            pad: n / 2,
        })
    }

    fn blur(&self, x: &Tensor) -> Result<Tensor, PosteriorError> {
        Ok(x.unsqueeze(1)?
            .conv2d(&self.kernel, self.pad, 1, 1, 1)?
            .squeeze(1)?)
    }
}

impl LinearOperator for Blur {
    fn image_shape(&self) -> (usize, usize) {
        self.shape
    }

    fn data_shape(&self) -> Vec<usize> {
        vec![self.shape.0, self.shape.1]
    }

    fn apply(&self, x: &Tensor) -> Result<Tensor, PosteriorError> {
        self.blur(x)
    }

    fn apply_adjoint(&self, y: &Tensor) -> Result<Tensor, PosteriorError> {
        self.blur(y)
    }
}

/// The system's depth gain `c(z)`: `20 log10 c(z) = gain_db + slope_db_per_cm * z[cm]`,
/// the echo amplitude of aeration 1 at depth z in the DAS envelope's units.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepthGain {
    pub gain_db: f64,
    pub slope_db_per_cm: f64,
}

/// A depth-gain fit: the gain, and how well it explains the amplitudes it was fitted to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GainFit {
    pub gain: DepthGain,
    /// Pixels the fit used (blurred aeration above [`FIT_FLOOR`]).
    pub pixels: usize,
    /// Root-mean-square of the log-amplitude residual, dB.
    pub rms_db: f64,
    /// Standard deviation over the frames of each frame's mean residual, dB: how far one
    /// frame's echo level strays from the fitted gain (n - 1 denominator; 0 for one frame).
    pub frame_sd_db: f64,
}

/// The calibration file `pleura calibrate` writes and `[sampler] calibration` names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    pub depth_gain: DepthGain,
    /// [`GainFit::frame_sd_db`] of the fit: it widens each echo estimate's interval.
    #[serde(default)]
    pub frame_sd_db: f64,
    /// How the echo reconstruction's lung aeration answers the truth on the calibration
    /// frames; absent when the calibration ran without a model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Response>,
    /// What it was fitted on (recordings, frames), for people.
    #[serde(default)]
    pub source: String,
}

/// The echo reconstruction's lung aeration against the truth's on the calibration frames:
/// `truth ~ intercept + slope * estimate`, with the residual's standard deviation `sd`
/// (n - 2 denominator). The echo estimate regresses toward the middle (on simus RF,
/// 0.893-0.954 came out as 0.83-0.88 and 0.488 as 0.54-0.55; docs/BENCHMARKS.md), which
/// the samples' spread does not show: the line undoes it, and the interval is the line's
/// 95 % prediction interval for a new estimate ([`Response::half_width`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    pub intercept: f64,
    pub slope: f64,
    pub sd: f64,
    /// Calibration frames it was fitted on.
    pub frames: usize,
    /// Mean of the calibration frames' estimates.
    #[serde(default)]
    pub estimate_mean: f64,
    /// Sum of the squared deviations of the calibration frames' estimates from their mean
    /// (0 in files written before it was kept: the prediction interval then leaves out
    /// the line's slope uncertainty).
    #[serde(default)]
    pub estimate_ss: f64,
}

/// Fewest calibration frames a [`Response`] is fitted from (two parameters and a spread).
pub const MIN_RESPONSE_FRAMES: usize = 4;

impl Response {
    /// Least squares of `truth` on `estimate` over `(estimate, truth)` pairs; `None` with
    /// fewer than [`MIN_RESPONSE_FRAMES`] pairs or estimates that do not vary.
    pub fn fit(pairs: &[(f64, f64)]) -> Option<Self> {
        let n = pairs.len();
        if n < MIN_RESPONSE_FRAMES {
            return None;
        }
        let nf = n as f64;
        let (me, mt) = pairs
            .iter()
            .fold((0.0, 0.0), |(a, b), (e, t)| (a + e / nf, b + t / nf));
        let see: f64 = pairs.iter().map(|(e, _)| (e - me).powi(2)).sum();
        if see <= 1e-12 || see.is_nan() {
            return None;
        }
        let slope = pairs.iter().map(|(e, t)| (e - me) * (t - mt)).sum::<f64>() / see;
        let intercept = mt - slope * me;
        let ss: f64 = pairs
            .iter()
            .map(|(e, t)| (t - intercept - slope * e).powi(2))
            .sum();
        Some(Self {
            intercept,
            slope,
            sd: (ss / (nf - 2.0)).sqrt(),
            frames: n,
            estimate_mean: me,
            estimate_ss: see,
        })
    }

    /// Half-width of the 95 % prediction interval of the truth for a new `estimate`: the
    /// least-squares line's, `t95(n - 2) sd sqrt(1 + 1/n + (estimate - mean)^2 / ss)`
    /// (Student's t, because `sd` is estimated from the n calibration frames; the two
    /// terms after 1, the uncertainty of the line itself).
    pub fn half_width(&self, estimate: f64) -> f64 {
        let n = self.frames as f64;
        let leverage = if self.estimate_ss > 0.0 {
            (estimate - self.estimate_mean).powi(2) / self.estimate_ss
        } else {
            0.0
        };
        t95(n - 2.0) * self.sd * (1.0 + 1.0 / n + leverage).sqrt()
    }

    /// The truth this estimate answers, clipped to [0, 1].
    pub fn correct(&self, estimate: f64) -> f64 {
        (self.intercept + self.slope * estimate).clamp(0.0, 1.0)
    }
}

impl Calibration {
    /// Reads a calibration file; errors name the file.
    pub fn load(path: &Path) -> Result<Self, PosteriorError> {
        let bad = |reason: String| PosteriorError::Config {
            field: "sampler.calibration",
            value: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let c: Calibration = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let g = c.depth_gain;
        if !(g.gain_db.is_finite() && g.slope_db_per_cm.is_finite()) {
            return Err(bad(format!("depth gain {g:?} is not finite")));
        }
        if let Some(r) = &c.response {
            let fine = r.intercept.is_finite()
                && r.slope.is_finite()
                && r.slope > 0.0
                && r.sd.is_finite()
                && r.sd >= 0.0;
            if !fine {
                return Err(bad(format!(
                    "response {r:?}: the slope must be finite and > 0, the sd finite and >= 0"
                )));
            }
        }
        if !(c.frame_sd_db.is_finite() && c.frame_sd_db >= 0.0) {
            return Err(bad(format!(
                "frame_sd_db = {} must be finite, >= 0",
                c.frame_sd_db
            )));
        }
        Ok(c)
    }
}

impl DepthGain {
    /// `c(z)`, amplitude units.
    pub fn at(&self, z: f64) -> f64 {
        10f64.powf((self.gain_db + self.slope_db_per_cm * z * 100.0) / 20.0)
    }

    /// Least-squares fit of `log sqrt(P) - log (K a) = log c(z)` over every pixel of the
    /// given frames whose blurred aeration `K a` is above [`FIT_FLOOR`]: `(amplitude, K a)`
    /// pairs of images (nz, nx) on rows at depths `z` (m). `None` when fewer than two
    /// depths take part.
    pub fn fit<'a>(
        frames: impl IntoIterator<Item = (ArrayView2<'a, f32>, ArrayView2<'a, f32>)>,
        z: &[f64],
    ) -> Option<GainFit> {
        // (depth cm, log ratio dB) per pixel; where each frame's pixels end.
        let mut pts: Vec<(f64, f64)> = Vec::new();
        let mut ends = Vec::new();
        for (amp, ka) in frames {
            for (((iz, _), &b), &k) in amp.indexed_iter().zip(ka.iter()) {
                if k > FIT_FLOOR && b > 0.0 {
                    pts.push((z[iz] * 100.0, 20.0 * (b as f64 / k as f64).log10()));
                }
            }
            ends.push(pts.len());
        }
        let n = pts.len() as f64;
        let (mz, md) = pts
            .iter()
            .fold((0.0, 0.0), |(a, b), (z, d)| (a + z / n, b + d / n));
        let szz: f64 = pts.iter().map(|(z, _)| (z - mz).powi(2)).sum();
        if pts.len() < 2 || szz <= 0.0 {
            return None;
        }
        let slope = pts.iter().map(|(z, d)| (z - mz) * (d - md)).sum::<f64>() / szz;
        let gain_db = md - slope * mz;
        let resid = |(z, d): &(f64, f64)| d - gain_db - slope * z;
        let rms_db = (pts.iter().map(|p| resid(p).powi(2)).sum::<f64>() / n).sqrt();
        let mut offsets = Vec::new();
        let mut start = 0;
        for end in ends {
            if end > start {
                offsets.push(pts[start..end].iter().map(resid).sum::<f64>() / (end - start) as f64);
            }
            start = end;
        }
        let frame_sd_db = super::frame::sd(&offsets);
        Some(GainFit {
            gain: DepthGain {
                gain_db,
                slope_db_per_cm: slope,
            },
            pixels: pts.len(),
            rms_db,
            frame_sd_db,
        })
    }
}

/// One frame's echo data for the reconstruction: the amplitude divided by the depth gain,
/// in aeration units (the image `K a` the prior's image should blur to).
pub struct EchoData {
    pub data: Array2<f32>,
}

impl EchoData {
    /// From the frame's DAS envelope (nz, nx) on rows at depths `z` (m).
    pub fn new(envelope: ArrayView2<f32>, z: &[f64], gain: &DepthGain) -> Self {
        let mut data = amplitude(envelope);
        for (mut row, &zz) in data.rows_mut().into_iter().zip(z) {
            let c = gain.at(zz) as f32;
            row.mapv_inplace(|v| v / c);
        }
        Self { data }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    fn random(nz: usize, nx: usize, seed: u64) -> Array2<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        Array2::from_shape_fn((nz, nx), |_| rng.random::<f32>() - 0.5)
    }

    fn tensor(a: &Array2<f32>) -> Tensor {
        Tensor::from_vec(
            a.iter().copied().collect::<Vec<_>>(),
            (1, a.nrows(), a.ncols()),
            &Device::Cpu,
        )
        .unwrap()
    }

    fn array(t: &Tensor, dim: (usize, usize)) -> Array2<f32> {
        Array2::from_shape_vec(dim, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()).unwrap()
    }

    /// The kernel is the normalised Gaussian (weights against exp(-i^2 / 4.5) by hand).
    #[test]
    fn kernel_is_the_normalised_gaussian() {
        let g = gaussian(1.5);
        assert_eq!(g.len(), 11);
        let raw: Vec<f64> = (-5..=5)
            .map(|i: i32| (-(i * i) as f64 / 4.5).exp())
            .collect();
        let sum: f64 = raw.iter().sum();
        for (a, b) in g.iter().zip(&raw) {
            assert!((*a as f64 - b / sum).abs() < 1e-7);
        }
        assert!((g[5] as f64 - 0.26596).abs() < 1e-4, "centre {}", g[5]);
    }

    /// The operator is its own adjoint, <K x, y> = <x, K y>, and computes what the CPU
    /// smoothing of the data computes.
    #[test]
    fn blur_is_self_adjoint_and_matches_the_data_smoothing() {
        let (nz, nx) = (24, 16);
        let k = Blur::new(nz, nx, &Device::Cpu).unwrap();
        let (x, y) = (random(nz, nx, 1), random(nz, nx, 2));
        let kx = array(&k.apply(&tensor(&x)).unwrap(), (nz, nx));
        let ky = array(&k.apply_adjoint(&tensor(&y)).unwrap(), (nz, nx));
        let dot = |a: &Array2<f32>, b: &Array2<f32>| {
            a.iter()
                .zip(b)
                .map(|(p, q)| *p as f64 * *q as f64)
                .sum::<f64>()
        };
        let (l, r) = (dot(&kx, &y), dot(&x, &ky));
        assert!((l - r).abs() < 1e-5 * l.abs().max(1.0), "{l} {r}");
        let s = smooth(x.view());
        let worst = s
            .iter()
            .zip(&kx)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-5, "{worst}");
    }

    /// The shipped calibration of PyMUST simus loads, response included.
    #[test]
    fn shipped_simus_calibration_loads() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("config/calibrations/pymust-simus.toml");
        let c = Calibration::load(&path).unwrap();
        assert!((c.depth_gain.gain_db - 83.58).abs() < 0.01, "{c:?}");
        let r = c.response.expect("a response");
        assert_eq!(r.frames, 10);
        assert!((r.slope - 1.394).abs() < 0.001, "{r:?}");
        // The prediction interval at the mean estimate: t(0.975, 8) 0.02475 sqrt(1.1).
        assert!(
            (r.half_width(r.estimate_mean) - 0.0599).abs() < 5e-4,
            "{r:?}"
        );
    }

    /// A line put into pairs comes back out of the fit, with the spread of what is left.
    #[test]
    fn response_fit_recovers_a_line() {
        let pairs: Vec<(f64, f64)> = [0.5, 0.55, 0.65, 0.7, 0.8, 0.85]
            .iter()
            .enumerate()
            .map(|(i, e)| (*e, 0.1 + 1.1 * e + if i % 2 == 0 { 0.01 } else { -0.01 }))
            .collect();
        let r = Response::fit(&pairs).unwrap();
        assert!(
            (r.slope - 1.1).abs() < 0.05 && (r.intercept - 0.1).abs() < 0.04,
            "{r:?}"
        );
        // Residuals of +-0.01 about the fitted line: sd = sqrt(6 e^2 / 4) = 0.0122 for
        // e = 0.01 exactly, a little less as the line absorbs part of them.
        assert!(r.sd > 0.008 && r.sd < 0.0123, "{r:?}");
        assert_eq!(r.frames, 6);
        assert_eq!(r.correct(0.9), 1.0);
        // The prediction interval, by hand: mean of the estimates 0.675, their squared
        // deviations 0.09375; t(0.975, 4) = 2.7764 (scipy).
        assert!((r.estimate_mean - 0.675).abs() < 1e-12);
        assert!((r.estimate_ss - 0.09375).abs() < 1e-12);
        let by_hand = |e: f64| {
            2.776_445_105_197_793
                * r.sd
                * (1.0 + 1.0 / 6.0 + (e - 0.675f64).powi(2) / 0.09375).sqrt()
        };
        for e in [0.675, 0.5, 0.95] {
            assert!((r.half_width(e) / by_hand(e) - 1.0).abs() < 4e-4, "{e}");
        }
        assert!(r.half_width(0.95) > r.half_width(0.675));
        assert!(Response::fit(&pairs[..3]).is_none());
        assert!(Response::fit(&[(0.5, 0.4); 5]).is_none());
    }

    /// A depth gain put into amplitudes comes back out of the fit.
    #[test]
    fn fit_recovers_a_depth_gain() {
        let (nz, nx) = (32, 8);
        let z: Vec<f64> = (0..nz).map(|i| 2e-3 + 0.3e-3 * i as f64).collect();
        let truth = DepthGain {
            gain_db: 80.5,
            slope_db_per_cm: -0.65,
        };
        let ka = Array2::from_shape_fn((nz, nx), |(iz, ix)| 0.2 + 0.02 * ((iz + ix) % 30) as f32);
        let amp = Array2::from_shape_fn((nz, nx), |(iz, ix)| ka[[iz, ix]] * truth.at(z[iz]) as f32);
        let fit = DepthGain::fit([(amp.view(), ka.view())], &z).unwrap();
        assert_eq!(fit.pixels, nz * nx);
        assert!((fit.gain.gain_db - 80.5).abs() < 1e-3, "{fit:?}");
        assert!((fit.gain.slope_db_per_cm + 0.65).abs() < 1e-3, "{fit:?}");
        assert!(fit.rms_db < 1e-3);
        // The echo of aeration 1 everywhere is the depth gain: divided by it, the data are
        // 1 wherever the smoothing sees no edge.
        // (The kernel reaches 5 pixels: rows 5.. and column 8 of 16 see no edge.)
        let echo = Array2::from_shape_fn((nz, 16), |(iz, _)| truth.at(z[iz]) as f32);
        let data = EchoData::new(echo.view(), &z, &truth).data;
        for iz in 5..nz - 5 {
            assert!(
                (data[[iz, 8]] - 1.0).abs() < 1e-3,
                "row {iz}: {}",
                data[[iz, 8]]
            );
        }
        assert!(DepthGain::fit([(amp.view(), (&ka * 0.0).view())], &z).is_none());
    }
}
