//! Classical reconstructions of aeration from channel data, baselines for the diffusion
//! posterior sampler: regularised least squares with the measurement operator A.
//!
//! - Tikhonov: min ||A x - y||^2 + lambda ||x||^2 by conjugate gradients on the normal
//!   equations, lambda by Morozov's discrepancy principle (||A x - y||^2 = M sigma^2 for M
//!   data samples) with sigma estimated from the data's out-of-band spectrum
//!   ([`estimate_noise_sigma`]); when the data leave no band free of echoes (bandpass
//!   sampled RF) lambda falls back to [`TIKHONOV_FALLBACK_FRACTION`] ||A||^2.
//! - Total variation: min 1/2 ||A x - y||^2 + lambda TV(x), 0 <= x <= 1, by FISTA (Beck &
//!   Teboulle 2009) with the constrained TV prox of [`tv::prox_tv_box`];
//!   lambda = [`TV_FRACTION`] ||A^T y||_inf.
//!
//! Neither rule looks at the ground truth. Results are projected onto [0, 1].

pub mod das;
pub mod tv;

use candle_core::{DType, Tensor};
use ndarray::{Array2, Array4};
use num_complex::Complex;
use rustfft::FftPlanner;

use crate::operator::{MeasurementOperator, OperatorError};
use crate::recording::Scan;

/// Relative Tikhonov weight used when the noise level cannot be estimated.
pub const TIKHONOV_FALLBACK_FRACTION: f64 = 1e-3;
/// TV weight as a fraction of ||A^T y||_inf: a fixed rule of thumb (2 %), set once and
/// not tuned against any ground truth.
pub const TV_FRACTION: f64 = 0.02;
/// Pulse spectrum level below which a frequency bin counts as echo-free (-60 dB).
const OUT_OF_BAND_LEVEL: f64 = 1e-3;
/// Fewest echo-free bins (fraction of all) to trust a noise estimate.
const MIN_OUT_OF_BAND_FRACTION: f64 = 0.05;

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error(transparent)]
    Operator(#[from] OperatorError),
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Estimates the standard deviation of white noise on the channel data (per real
/// component) from frequency bins where the probe's pulse carries less than -60 dB:
/// Hann-windowed periodograms of every channel, whose median over those bins is
/// ln 2 times the noise power for Gaussian noise. `None` when fewer than 5 % of bins are
/// echo-free (e.g. bandpass-sampled RF).
pub fn estimate_noise_sigma(op: &MeasurementOperator, scan: &Scan, y: &Array4<f32>) -> Option<f64> {
    let (n_tx, n_ax, n_el, n_ch) = y.dim();
    if n_ax < 16 {
        return None;
    }
    let fs = scan.sampling_frequency;
    let pulse = op.pulse();
    let sig = pulse.sigma();
    // Bins whose offset from every pulse centre exceeds the -60 dB half width.
    let cut =
        (OUT_OF_BAND_LEVEL.ln().abs() / (2.0 * std::f64::consts::PI.powi(2) * sig * sig)).sqrt();
    let centres: Vec<f64> = if n_ch == 1 {
        vec![pulse.center_frequency, -pulse.center_frequency]
    } else {
        vec![pulse.center_frequency - scan.demodulation_frequency]
    };
    let free: Vec<usize> = (0..n_ax)
        .filter(|&k| {
            if n_ch == 1 && (k == 0 || 2 * k == n_ax) {
                return false;
            }
            let f0 = k as f64 * fs / n_ax as f64;
            // All aliases of the bin within a few sampling periods.
            (-3..=3).all(|m| {
                let f = f0 + m as f64 * fs;
                centres.iter().all(|c| (f - c).abs() > cut)
            })
        })
        .collect();
    if (free.len() as f64) < MIN_OUT_OF_BAND_FRACTION * n_ax as f64 {
        return None;
    }
    let window: Vec<f64> = (0..n_ax)
        .map(|n| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / n_ax as f64).cos())
        .collect();
    let w2: f64 = window.iter().map(|w| w * w).sum();
    let fft = FftPlanner::<f64>::new().plan_fft_forward(n_ax);
    let mut powers = Vec::with_capacity(n_tx * n_el * free.len());
    let mut buf = vec![Complex::new(0.0, 0.0); n_ax];
    for t in 0..n_tx {
        for e in 0..n_el {
            for (n, b) in buf.iter_mut().enumerate() {
                let im = if n_ch == 2 {
                    y[[t, n, e, 1]] as f64
                } else {
                    0.0
                };
                *b = Complex::new(y[[t, n, e, 0]] as f64, im) * window[n];
            }
            fft.process(&mut buf);
            powers.extend(free.iter().map(|&k| buf[k].norm_sqr()));
        }
    }
    powers.sort_by(|a, b| a.total_cmp(b));
    let median = powers[powers.len() / 2];
    // E|X_k|^2 = (components) sigma^2 sum w^2; median of an exponential = ln 2 x mean.
    let components = if n_ch == 2 { 2.0 } else { 1.0 };
    Some((median / (std::f64::consts::LN_2 * components * w2)).sqrt())
}

fn dot(a: &Tensor, b: &Tensor) -> Result<f64, BaselineError> {
    Ok((a * b)?
        .sum_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?)
}

fn to_array(op: &MeasurementOperator, x: &Tensor) -> Result<Array2<f32>, BaselineError> {
    let v = x.flatten_all()?.to_vec1::<f32>()?;
    Array2::from_shape_vec(op.image_shape(), v)
        .map_err(|_| OperatorError::Layout { what: "image" }.into())
}

/// Solves (A^T A + lambda I) x = A^T y by `iters` conjugate-gradient steps from `x0`
/// (unconstrained, not projected).
pub fn tikhonov_cg(
    op: &MeasurementOperator,
    y: &Tensor,
    lambda: f64,
    x0: Option<&Tensor>,
    iters: usize,
) -> Result<Tensor, BaselineError> {
    let (nz, nx) = op.image_shape();
    let normal = |v: &Tensor| -> Result<Tensor, BaselineError> {
        Ok((op.adjoint(&op.forward(v)?)? + (v * lambda)?)?)
    };
    let aty = op.adjoint(y)?;
    let mut x = match x0 {
        Some(x) => x.clone(),
        None => Tensor::zeros((nz, nx), DType::F32, op.device())?,
    };
    let mut r = (&aty - normal(&x)?)?;
    let mut p = r.clone();
    let mut rr = dot(&r, &r)?;
    let stop = 1e-12 * dot(&aty, &aty)?;
    for _ in 0..iters {
        if rr <= stop {
            break;
        }
        let ap = normal(&p)?;
        let alpha = rr / dot(&p, &ap)?;
        x = (x + (&p * alpha)?)?;
        r = (r - (ap * alpha)?)?;
        let rr_new = dot(&r, &r)?;
        p = (&r + (p * (rr_new / rr))?)?;
        rr = rr_new;
    }
    Ok(x)
}

/// The outcome of a baseline reconstruction.
#[derive(Clone, Debug)]
pub struct BaselineResult {
    /// Aeration estimate in [0, 1], (nz, nx).
    pub image: Array2<f32>,
    /// Regularisation weight used.
    pub lambda: f64,
    /// Noise level estimated from the data, when available.
    pub noise_sigma: Option<f64>,
}

/// CG steps per Tikhonov solve.
const CG_ITERS: usize = 30;
/// Bisection steps on log10(lambda) for the discrepancy principle.
const DISCREPANCY_STEPS: usize = 10;

/// Tikhonov reconstruction with lambda from the discrepancy principle (see module docs).
pub fn tikhonov(
    op: &MeasurementOperator,
    scan: &Scan,
    y: &Array4<f32>,
    norm_sq: f64,
) -> Result<BaselineResult, BaselineError> {
    let yt = op.data_tensor(y)?;
    let sigma = estimate_noise_sigma(op, scan, y);
    let (lambda, x) = match sigma {
        None => {
            let lambda = TIKHONOV_FALLBACK_FRACTION * norm_sq;
            (lambda, tikhonov_cg(op, &yt, lambda, None, CG_ITERS)?)
        }
        Some(s) => {
            let target = y.len() as f64 * s * s;
            // Residual grows with lambda: bisect log10(lambda / ||A||^2) in [-9, 0],
            // each solve warm-started from the previous one.
            let (mut lo, mut hi) = (-9.0f64, 0.0f64);
            let mut mid = 0.5 * (lo + hi);
            let mut x = tikhonov_cg(op, &yt, 10f64.powf(mid) * norm_sq, None, CG_ITERS)?;
            for _ in 0..DISCREPANCY_STEPS {
                let res = (op.forward(&x)? - &yt)?;
                if dot(&res, &res)? > target {
                    hi = mid;
                } else {
                    lo = mid;
                }
                mid = 0.5 * (lo + hi);
                x = tikhonov_cg(op, &yt, 10f64.powf(mid) * norm_sq, Some(&x), CG_ITERS)?;
            }
            (10f64.powf(mid) * norm_sq, x)
        }
    };
    Ok(BaselineResult {
        image: to_array(op, &x)?.mapv(|v| v.clamp(0.0, 1.0)),
        lambda,
        noise_sigma: sigma,
    })
}

/// FISTA iterations of the TV reconstruction and FGP iterations per prox.
const FISTA_ITERS: usize = 100;
const PROX_ITERS: usize = 20;

/// Total-variation reconstruction (see module docs).
pub fn total_variation(
    op: &MeasurementOperator,
    y: &Array4<f32>,
    norm_sq: f64,
) -> Result<BaselineResult, BaselineError> {
    let yt = op.data_tensor(y)?;
    let aty = op.adjoint(&yt)?;
    let aty_inf = aty
        .abs()?
        .max_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    let lambda = TV_FRACTION * aty_inf;
    let step = 1.0 / norm_sq;
    let (nz, nx) = op.image_shape();
    let mut x = Array2::<f64>::zeros((nz, nx));
    let mut z = x.clone();
    let mut t = 1.0f64;
    for _ in 0..FISTA_ITERS {
        let zt = op.image_tensor(&z.mapv(|v| v as f32))?;
        let grad = op.adjoint(&(op.forward(&zt)? - &yt)?)?;
        let g = to_array(op, &grad)?.mapv(|v| v as f64);
        let b = &z - &(g * step);
        let nx_ = tv::prox_tv_box(&b, lambda * step, 0.0, 1.0, PROX_ITERS);
        let nt = (1.0 + (1.0 + 4.0 * t * t).sqrt()) / 2.0;
        z = &nx_ + &((&nx_ - &x) * ((t - 1.0) / nt));
        x = nx_;
        t = nt;
    }
    Ok(BaselineResult {
        image: x.mapv(|v| v as f32),
        lambda,
        noise_sigma: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::psnr;
    use crate::grid::Grid;
    use crate::operator::OperatorOptions;
    use crate::simulate::phantom::sequence;
    use crate::simulate::probe::LinearProbe;
    use candle_core::Device;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};

    fn setup() -> (Scan, MeasurementOperator, Array2<f32>, Array4<f32>) {
        let probe = LinearProbe {
            n_el: 24,
            pitch: 0.6e-3,
            element_width: 0.55e-3,
            ..LinearProbe::default_lung()
        };
        let grid = Grid::uniform(16, 16, 0.9e-3, 2e-3).expect("grid");
        let scan = probe.plane_wave_scan(&[-8.0, 0.0, 8.0], &grid);
        let op = MeasurementOperator::new(&scan, &grid, OperatorOptions::default(), &Device::Cpu)
            .expect("op");
        let (_, frames) = sequence(3, &grid, 1);
        let x = frames[0].aeration.clone();
        let y = op.forward_array(&x).expect("forward");
        (scan, op, x, y)
    }

    fn add_noise(y: &Array4<f32>, sigma: f64, seed: u64) -> Array4<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        y.mapv(|v| {
            v + {
                let n: f64 = StandardNormal.sample(&mut rng);
                (sigma * n) as f32
            }
        })
    }

    #[test]
    fn noise_estimate_recovers_sigma() {
        let (scan, op, _, y) = setup();
        let rms = (y.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / y.len() as f64).sqrt();
        for rel in [0.05, 0.3] {
            let sigma = rel * rms;
            let est = estimate_noise_sigma(&op, &scan, &add_noise(&y, sigma, 1)).expect("estimate");
            assert!(
                (est / sigma - 1.0).abs() < 0.1,
                "sigma {sigma}, estimate {est}"
            );
        }
        // Bandpass sampling (fs < 2 fc) leaves no echo-free band.
        let mut bp = scan.clone();
        bp.sampling_frequency = 6.67e6;
        assert_eq!(estimate_noise_sigma(&op, &bp, &y), None);
    }

    #[test]
    fn power_iteration_bounds_rayleigh_quotients() {
        let (_, op, x, _) = setup();
        let l = op.norm_sq(30).expect("norm");
        let xt = op.image_tensor(&x).expect("x");
        let ax = op.forward(&xt).expect("ax");
        let q = dot(&ax, &ax).expect("dot") / dot(&xt, &xt).expect("dot");
        assert!(
            q <= l * 1.0001 && q > 0.0,
            "Rayleigh quotient {q} vs ||A||^2 {l}"
        );
    }

    #[test]
    fn regularised_reconstructions_beat_a_flat_guess() {
        let (scan, op, x, y) = setup();
        let rms = (y.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / y.len() as f64).sqrt();
        let y = add_noise(&y, 0.1 * rms, 2);
        let l = op.norm_sq(30).expect("norm");
        let flat = Array2::from_elem(x.dim(), x.mean().unwrap_or(0.0));
        let base = psnr(x.view(), flat.view(), 1.0);
        let tik = tikhonov(&op, &scan, &y, l).expect("tikhonov");
        assert!(tik.noise_sigma.is_some());
        let tv = total_variation(&op, &y, l).expect("tv");
        for (name, r) in [("tikhonov", &tik), ("tv", &tv)] {
            assert!(r.image.iter().all(|v| (0.0..=1.0).contains(v)));
            let p = psnr(x.view(), r.image.view(), 1.0);
            assert!(p > base + 1.0, "{name}: PSNR {p} dB vs flat {base} dB");
        }
    }
}
