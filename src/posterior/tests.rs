//! Posterior sampling on a tiny model (16 x 16 images, 8 base channels) and tiny grids.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use ndarray::Array2;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use super::frame::{interval, quantile, FrameOutcome, Reconstructor, StartKind};
use super::problem::{
    mad_sigma, LinearOperator, Measurement, NoiseSource, NormalizedOperator, MAD_TO_SIGMA,
};
use super::sampler::{PosteriorSampler, Start, MAX_GUIDANCE_GAIN, MIN_GUIDED_ABAR};
use super::*;
use crate::diffusion::checkpoint::Model;
use crate::diffusion::schedule::{ScheduleConfig, ScheduleKind};
use crate::grid::Grid;
use crate::operator::{l2, MeasurementOperator, OperatorOptions};
use crate::simulate::probe::LinearProbe;
use crate::testing;

const N: usize = testing::TINY_SIZE;

/// A tiny prior. The U-Net's output convolution is zero at initialisation (eps = 0: the
/// flat prior); `perturb` makes it random so that the network's Jacobian matters.
fn tiny_model(perturb: bool) -> Model {
    let model = testing::tiny_model(None, 3);
    if perturb {
        testing::perturb_output(&model, 11, 0.05);
    }
    model
}

/// A posterior sampler over [`tiny_model`], shareable with a [`Reconstructor`].
fn tiny_sampler(perturb: bool) -> Arc<PosteriorSampler> {
    let model = tiny_model(perturb);
    Arc::new(PosteriorSampler::new(&model, &Device::Cpu).expect("sampler"))
}

/// Fully observed: A = identity on n x n images.
struct Identity(usize);

impl LinearOperator for Identity {
    fn image_shape(&self) -> (usize, usize) {
        (self.0, self.0)
    }
    fn data_shape(&self) -> Vec<usize> {
        vec![self.0, self.0]
    }
    fn apply(&self, x: &Tensor) -> Result<Tensor, PosteriorError> {
        Ok(x.clone())
    }
    fn apply_adjoint(&self, y: &Tensor) -> Result<Tensor, PosteriorError> {
        Ok(y.clone())
    }
}

/// A smooth aeration image in [0.2, 0.8], shifted laterally by `shift` pixels.
fn truth(shift: f64) -> Array2<f32> {
    Array2::from_shape_fn((N, N), |(i, j)| {
        let x = (j as f64 + shift) / N as f64;
        let z = i as f64 / N as f64;
        (0.5 + 0.3 * (2.0 * std::f64::consts::PI * x).sin() * (std::f64::consts::PI * z).cos())
            as f32
    })
}

fn flat(a: &Array2<f32>) -> Vec<f32> {
    a.iter().copied().collect()
}

fn identity_problem(a: &Array2<f32>) -> (NormalizedOperator, Measurement) {
    let dev = Device::Cpu;
    let op = NormalizedOperator::new(Arc::new(Identity(N)), 5, &dev).expect("op");
    assert!(
        (op.norm() - 1.0).abs() < 1e-4,
        "identity norm {}",
        op.norm()
    );
    let m = Measurement::new(&op, &flat(a), &[N, N], Some(0.0), &dev).expect("meas");
    (op, m)
}

fn ultrasound_op() -> (Arc<MeasurementOperator>, Grid) {
    let grid = testing::tiny_grid();
    let scan = testing::tiny_probe().plane_wave_scan(&[0.0], &grid);
    let op = MeasurementOperator::new(&scan, &grid, OperatorOptions::default(), &Device::Cpu)
        .expect("operator");
    (Arc::new(op), grid)
}

fn cfg(method: Method, steps: usize, samples: usize) -> SamplerConfig {
    SamplerConfig {
        method,
        steps,
        samples,
        noise_sigma: Some(0.0),
        ..SamplerConfig::default()
    }
}

fn max_abs_diff(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn mean_abs_diff(a: &Array2<f32>, b: &Array2<f32>) -> f64 {
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs() as f64)
        .sum::<f64>()
        / a.len() as f64
}

fn done(o: FrameOutcome) -> Box<frame::FrameEstimate> {
    match o {
        FrameOutcome::Done(e) => e,
        FrameOutcome::Failed { reason, .. } => panic!("frame failed: {reason}"),
    }
}

#[test]
fn mad_constant_is_inverse_normal_quartile() {
    // Phi(1 / MAD_TO_SIGMA) must be 3/4: integrate the normal density by Simpson's rule.
    let b = 1.0 / MAD_TO_SIGMA;
    let n = 2000;
    let h = b / n as f64;
    let pdf = |x: f64| (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let mut s = pdf(0.0) + pdf(b);
    for i in 1..n {
        s += pdf(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
    }
    let phi = 0.5 + s * h / 3.0;
    assert!((phi - 0.75).abs() < 1e-12, "Phi = {phi}");
    // The estimator on a large normal sample.
    let mut rng = StdRng::seed_from_u64(1);
    let d = Normal::new(3.0, 2.5).expect("normal");
    let v: Vec<f32> = (0..20000).map(|_| d.sample(&mut rng) as f32).collect();
    let s = mad_sigma(&v);
    assert!((s - 2.5).abs() < 0.05, "mad sigma {s}");
}

#[test]
fn interval_rules() {
    // K = 4: mean +- 1.96 sd (numpy: np.std(v, ddof=1) = 0.12909944...).
    let v = [0.5, 0.6, 0.7, 0.8];
    let (m, ci) = interval(&v, 1.0, 0.0);
    let sd = 0.129_099_444_873_580_56;
    assert!((m - 0.65).abs() < 1e-12);
    assert!((ci[0] - (0.65 - crate::aeration::Z95 * sd)).abs() < 1e-12);
    assert!((ci[1] - (0.65 + crate::aeration::Z95 * sd)).abs() < 1e-12);
    // K = 41: empirical quantiles (numpy: np.quantile(np.arange(41) / 100, [.025, .975])
    // = [0.01, 0.39]).
    let v: Vec<f64> = (0..41).map(|i| i as f64 / 100.0).collect();
    let (_, ci) = interval(&v, 1.0, 0.0);
    assert!(
        (ci[0] - 0.01).abs() < 1e-12 && (ci[1] - 0.39).abs() < 1e-12,
        "{ci:?}"
    );
    assert!((quantile(&[0.0, 1.0], 0.25) - 0.25).abs() < 1e-15);
    // Clipped to [0, 1].
    let (_, ci) = interval(&[0.95, 1.0, 0.9, 1.0], 1.0, 0.0);
    assert_eq!(ci[1], 1.0);
    // Identical samples: the boundary alone, +- 1.96 x 0.01 (Z95 = 1.959964).
    let (m, ci) = interval(&[0.5; 4], 1.0, 0.01);
    assert!((m - 0.5).abs() < 1e-12);
    assert!(
        (ci[0] - 0.480_400_36).abs() < 1e-8 && (ci[1] - 0.519_599_64).abs() < 1e-8,
        "{ci:?}"
    );
    // Both: each side the root sum of squares, 1.96 x sqrt(sd^2 + 0.01^2).
    let (_, ci) = interval(&[0.5, 0.6, 0.7, 0.8], 1.0, 0.01);
    let half = crate::aeration::Z95 * (sd * sd + 0.01 * 0.01).sqrt();
    assert!((ci[1] - (0.65 + half)).abs() < 1e-12, "{ci:?}");
    // The spread scale multiplies the samples' part only: 1.96 x sqrt((2 sd)^2 + 0.01^2).
    let (_, ci) = interval(&[0.5, 0.6, 0.7, 0.8], 2.0, 0.01);
    let half = crate::aeration::Z95 * (4.0 * sd * sd + 0.01 * 0.01).sqrt();
    assert!((ci[0] - (0.65 - half)).abs() < 1e-12, "{ci:?}");
    // Quantiles: each side joined on its own (sides 0.19 below, 0.19 above the mean 0.2).
    let v: Vec<f64> = (0..41).map(|i| i as f64 / 100.0).collect();
    let (_, ci) = interval(&v, 1.0, 0.02);
    let side = 0.19f64.hypot(crate::aeration::Z95 * 0.02);
    assert!(
        (ci[0] - (0.2 - side)).abs() < 1e-9 && (ci[1] - (0.2 + side)).abs() < 1e-9,
        "{ci:?}"
    );
}

/// Two samples of one column (wall, line, lung) computed by hand: the lung starts below
/// the line (the parabola through 0.1, 0.9, 0.7 peaks 0.3 rows under the line's pixel);
/// the samples' lung means 0.68 and 0.72; the boundary moves the mean from 0.7 (one row
/// deeper) to (0.9 + 5 x 0.7) / 6 (one row shallower); the spread scale multiplies the
/// per-pixel std and the samples' part of the interval.
#[test]
fn summary_scales_the_spread_and_adds_the_boundary() {
    let column = |lung: f32| {
        let mut v = vec![0.1f32, 0.1, 0.9];
        v.extend([lung; 5]);
        v
    };
    let mut v = column(0.68);
    v.extend(column(0.72));
    let samples = Tensor::from_vec(v, (2, 8, 1), &Device::Cpu).expect("samples");
    let st = frame::summarize(&samples, 0.3e-3, 3.0).expect("stats");
    assert!((st.lung_fraction - 5.0 / 8.0).abs() < 1e-12);
    assert!((st.sample_aerations[0] - 0.68).abs() < 1e-6);
    assert!((st.sample_aerations[1] - 0.72).abs() < 1e-6);
    assert!((st.aeration - 0.7).abs() < 1e-6);
    let boundary = frame::BOUNDARY_SD_ROWS * ((0.9 + 5.0 * 0.7) / 6.0 - 0.7) / 2.0;
    assert!(
        (st.boundary_sd - boundary).abs() < 1e-6,
        "{}",
        st.boundary_sd
    );
    let sd = 0.04 / 2f64.sqrt();
    assert!((frame::sd(&st.sample_aerations) - sd).abs() < 1e-6);
    let half = crate::aeration::Z95 * (3.0 * sd).hypot(boundary);
    assert!((st.ci[1] - 0.7 - half).abs() < 1e-6, "{:?}", st.ci);
    assert!((st.std[[5, 0]] as f64 - 3.0 * sd).abs() < 1e-6);
    assert_eq!(st.std[[0, 0]], 0.0);
}

#[test]
fn fully_observed_noise_free_converges_to_truth() {
    let ps = tiny_sampler(false);
    let a = truth(0.0);
    let (op, meas) = identity_problem(&a);
    // DDS: CG data consistency solves the identity exactly at every step.
    let mut rec = Reconstructor::new(ps.clone(), cfg(Method::Dds, 10, 3), 0.3e-3).expect("rec");
    let est = done(rec.reconstruct(&op, &flat(&a), &[N, N]));
    assert!(
        max_abs_diff(&est.mean, &a) < 1e-4,
        "dds error {}",
        max_abs_diff(&est.mean, &a)
    );
    assert!(est.std.iter().all(|s| *s < 1e-4));
    assert!(est.residual < 1e-4);
    // DPS (ancestral) and DDIM-DPS: gradient guidance through the network.
    for method in [Method::Dps, Method::DdimDps] {
        // With the flat prior (eps = 0) DPS is normalised gradient descent with a fixed
        // step: it approaches the truth steadily but does not land on it in 50 steps.
        let c = SamplerConfig {
            zeta: 5.0,
            ..cfg(method, 50, 2)
        };
        let d = ps.draw(&c, &op, &meas, &Start::Cold, 4).expect("draw");
        let t = &d.trajectory;
        assert!(t[t.len() - 1] < 0.5 * t[0], "{method}: residual {t:?}");
        let est = frame::summarize(&d.samples, 0.3e-3, 1.0).expect("stats");
        let err = mean_abs_diff(&est.mean, &a);
        assert!(err < 0.05, "{method}: mean abs error {err}");
    }
}

#[test]
fn residual_falls_along_trajectory_on_ultrasound_operator() {
    let ps = tiny_sampler(true);
    let (us, _) = ultrasound_op();
    let op = NormalizedOperator::new(us.clone(), 10, &Device::Cpu).expect("norm");
    let a = truth(0.0);
    let y = us.forward_array(&a).expect("forward");
    let meas = Measurement::from_frame(&op, &y, Some(0.0), &Device::Cpu).expect("meas");
    for (method, steps, drop) in [(Method::Dds, 10, 0.5), (Method::DdimDps, 20, 0.85)] {
        let c = SamplerConfig {
            zeta: 2.0,
            cg_iterations: 2,
            ..cfg(method, steps, 2)
        };
        let d = ps.draw(&c, &op, &meas, &Start::Cold, 5).expect("draw");
        let t = &d.trajectory;
        assert_eq!(t.len(), steps);
        let q = steps / 4;
        let head = t[..q].iter().sum::<f64>() / q as f64;
        let tail = t[steps - q..].iter().sum::<f64>() / q as f64;
        assert!(
            tail < drop * head,
            "{method}: residual {head} -> {tail}: {t:?}"
        );
        assert!(
            d.residuals.iter().all(|r| *r < 0.9),
            "{method}: {:?}",
            d.residuals
        );
    }
}

#[test]
fn noise_is_estimated_from_pre_echo_samples() {
    let (us, _) = ultrasound_op();
    let op = NormalizedOperator::new(us.clone(), 10, &Device::Cpu).expect("norm");
    let a = truth(0.0);
    let mut y = us.forward_array(&a).expect("forward");
    let peak = y.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let sigma = 0.01 * peak as f64;
    let mut rng = StdRng::seed_from_u64(2);
    let d = Normal::new(0.0, sigma).expect("normal");
    y.mapv_inplace(|v| v + d.sample(&mut rng) as f32);
    let meas = Measurement::from_frame(&op, &y, None, &Device::Cpu).expect("meas");
    assert_eq!(meas.noise_source, NoiseSource::PreEcho);
    assert!(
        (meas.sigma_data / sigma - 1.0).abs() < 0.1,
        "estimated {} true {sigma}",
        meas.sigma_data
    );
    // The MAD of all samples is inflated by the echoes.
    let all: Vec<f32> = y.iter().copied().collect();
    assert!(mad_sigma(&all) > 1.2 * sigma);
}

#[test]
fn warm_start_from_previous_frame_needs_fewer_steps() {
    let ps = tiny_sampler(true);
    let (us, _) = ultrasound_op();
    let op = NormalizedOperator::new(us.clone(), 10, &Device::Cpu).expect("norm");
    let prev = truth(0.0);
    let cur = truth(0.5);
    let y = us.forward_array(&cur).expect("forward");
    let meas = Measurement::from_frame(&op, &y, Some(0.0), &Device::Cpu).expect("meas");
    let c = SamplerConfig {
        cg_iterations: 2,
        ..cfg(Method::Dds, 20, 2)
    };
    let cold = ps.draw(&c, &op, &meas, &Start::Cold, 1).expect("cold");
    let warm_cfg = SamplerConfig {
        warm_start_fraction: 0.25,
        ..c.clone()
    };
    let prev_t = Tensor::from_vec(flat(&prev), (N, N), &Device::Cpu).expect("t");
    let warm = ps
        .draw(&warm_cfg, &op, &meas, &Start::Warm(prev_t), 1)
        .expect("warm");
    assert_eq!(cold.nfe, 20);
    assert_eq!(warm.nfe, 5);
    let rc = cold.residuals.iter().sum::<f64>() / 2.0;
    let rw = warm.residuals.iter().sum::<f64>() / 2.0;
    let short = SamplerConfig {
        steps: 5,
        ..c.clone()
    };
    let cold5 = ps.draw(&short, &op, &meas, &Start::Cold, 1).expect("cold5");
    let rc5 = cold5.residuals.iter().sum::<f64>() / 2.0;
    // 5 warm steps reach the residual of 20 cold ones, well below that of 5 cold ones.
    assert!(
        rw < 1.5 * rc && rw < 0.6 * rc5,
        "warm {rw}, cold 20 {rc}, cold 5 {rc5}"
    );

    // The reconstructor warm-starts the second frame of a noisy sequence (noise estimated
    // from the data), and starts cold after a scene change (an empty-lung frame).
    let noisy_cfg = SamplerConfig {
        noise_sigma: None,
        ..warm_cfg
    };
    let mut rec = Reconstructor::new(ps.clone(), noisy_cfg, 0.3e-3).expect("rec");
    let mut rng = StdRng::seed_from_u64(9);
    let mut noisy = |a: &Array2<f32>| {
        let mut y = us.forward_array(a).expect("forward");
        let peak = y.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = Normal::new(0.0, 0.02 * peak as f64).expect("normal");
        y.mapv_inplace(|v| v + d.sample(&mut rng) as f32);
        y
    };
    let y0 = noisy(&prev);
    let e0 = done(rec.reconstruct(&op, &flat_data(&y0), &data_shape(&y0)));
    assert_eq!(e0.start, StartKind::Cold);
    assert_eq!(e0.noise_source, NoiseSource::PreEcho);
    let y = noisy(&cur);
    let e1 = done(rec.reconstruct(&op, &flat_data(&y), &data_shape(&y)));
    assert_eq!(e1.start, StartKind::Warm);
    assert_eq!(e1.nfe, 5);
    let other = Array2::from_shape_fn((N, N), |(i, _)| if i < 3 { 0.9 } else { 0.02 });
    let y2 = noisy(&other);
    let e2 = done(rec.reconstruct(&op, &flat_data(&y2), &data_shape(&y2)));
    assert_eq!(e2.start, StartKind::SceneChange);
    assert_eq!(e2.nfe, 20);
}

fn flat_data(y: &ndarray::Array4<f32>) -> Vec<f32> {
    y.iter().copied().collect()
}

fn data_shape(y: &ndarray::Array4<f32>) -> Vec<usize> {
    y.shape().to_vec()
}

#[test]
fn reproducible_for_a_seed() {
    let ps = tiny_sampler(true);
    let a = truth(0.0);
    let (op, meas) = identity_problem(&a);
    let c = SamplerConfig {
        zeta: 0.3,
        ..cfg(Method::DdimDps, 8, 2)
    };
    let get = |seed| {
        ps.draw(&c, &op, &meas, &Start::Cold, seed)
            .expect("draw")
            .samples
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("vec")
    };
    assert_eq!(get(7), get(7));
    assert_ne!(get(7), get(8));
}

#[test]
fn nan_measurement_is_rejected_up_front() {
    let ps = tiny_sampler(false);
    let a = truth(0.0);
    let (op, _) = identity_problem(&a);
    let mut data = flat(&a);
    data[37] = f32::NAN;
    let mut rec = Reconstructor::new(ps.clone(), cfg(Method::Dds, 5, 2), 0.3e-3).expect("rec");
    match rec.reconstruct(&op, &data, &[N, N]) {
        FrameOutcome::Failed { reason, attempts } => {
            assert!(
                reason.contains("non-finite") && reason.contains("37"),
                "{reason}"
            );
            assert_eq!(attempts, 0);
        }
        FrameOutcome::Done(_) => panic!("NaN data must not give an estimate"),
    }
    assert!(matches!(
        Measurement::new(&op, &vec![0.0; N * N], &[N, N], None, &Device::Cpu),
        Err(PosteriorError::ZeroMeasurement)
    ));
    assert!(matches!(
        Measurement::new(&op, &flat(&a), &[N, N + 1], None, &Device::Cpu),
        Err(PosteriorError::MeasurementShape { .. })
    ));
}

#[test]
fn nan_in_iterate_restarts_the_frame() {
    let ps = tiny_sampler(false);
    let a = truth(0.0);
    let (op, _) = identity_problem(&a);
    let mut rec = Reconstructor::new(ps.clone(), cfg(Method::Dds, 5, 2), 0.3e-3).expect("rec");
    ps.inject_nan.store(1, Ordering::SeqCst);
    let est = done(rec.reconstruct(&op, &flat(&a), &[N, N]));
    assert_eq!(est.restarts, 1);
    // The poisoned start is caught before the first network evaluation: the frame's
    // evaluations are the restart's 5, not 5 more for the attempt that never ran.
    assert_eq!(est.nfe, 5);
    assert!(est.mean.iter().all(|v| v.is_finite()));
    assert!(max_abs_diff(&est.mean, &a) < 1e-4);
    // Every attempt poisoned: the frame fails, nothing is published, the next frame
    // starts cold and succeeds.
    ps.inject_nan.store(3, Ordering::SeqCst);
    match rec.reconstruct(&op, &flat(&a), &[N, N]) {
        FrameOutcome::Failed { reason, attempts } => {
            assert_eq!(attempts, 3);
            assert!(reason.contains("non-finite"), "{reason}");
        }
        FrameOutcome::Done(_) => panic!("poisoned frame must fail"),
    }
    let est = done(rec.reconstruct(&op, &flat(&a), &[N, N]));
    assert_eq!((est.start, est.restarts), (StartKind::Cold, 0));
}

/// A cold start's first step is not guided: x_T is pure noise, and the gradient through
/// Tweedie's estimate of it is amplified by 1 / sqrt(abar_T) (2e4 on the 1000-step cosine
/// schedule) onto the few pixels a trained network does not clip; full DPS with zeta 12
/// threw those past `max_abs` in 5 of 6 attempts. With the shipped model on a phantom,
/// fully observed: the iterate after the first step is the same with and without
/// guidance, and the steps after it differ.
#[test]
fn first_step_of_a_cold_start_is_unguided() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/model");
    let model = Model::load(&dir, &Device::Cpu).expect("shipped model");
    let ps = PosteriorSampler::new(&model, &Device::Cpu).expect("sampler");
    let g = Grid::default_lung();
    let (_, frames) = crate::simulate::phantom::sequence(1001, &g, 1);
    let a = &frames[0].aeration;
    let n = a.nrows();
    let op = NormalizedOperator::new(Arc::new(Identity(n)), 5, &Device::Cpu).expect("op");
    let meas = Measurement::new(&op, &flat(a), &[n, n], Some(0.0), &Device::Cpu).expect("y");
    for method in [Method::Dps, Method::DdimDps] {
        // Three respaced steps: t = 999 (abar 2.4e-9), then two with usable estimates.
        let draw = |zeta: f64| {
            let c = SamplerConfig {
                zeta,
                max_abs: 1e6,
                divergence_factor: 1e6,
                ..cfg(method, 3, 1)
            };
            ps.draw(&c, &op, &meas, &Start::Cold, 7)
                .expect("draw")
                .trajectory
        };
        let (f, g) = (draw(0.0), draw(12.0));
        assert_eq!(
            f[1], g[1],
            "{method}: the first step was guided: {f:?} {g:?}"
        );
        assert!(
            g[2] < f[2],
            "{method}: guidance after the first step: {f:?} {g:?}"
        );
    }
}

/// `MIN_GUIDED_ABAR` is the last abar of Ho et al.'s linear schedule, recomputed here
/// without the schedule code, and it leaves exactly the first 5 steps of the 1000-step
/// cosine schedule unguided (abar 2.4e-9 .. 3.9e-5; the 6th has 6.1e-5).
#[test]
fn guidance_threshold_is_the_reference_schedules_last_abar() {
    let last = (0..1000).fold(1.0f64, |ab, i| {
        ab * (1.0 - (1e-4 + (0.02 - 1e-4) * i as f64 / 999.0))
    });
    assert!((last - 4.0358e-5).abs() < 1e-9, "{last}");
    assert!(
        (MIN_GUIDED_ABAR - last).abs() / last < 1e-4,
        "{MIN_GUIDED_ABAR} vs {last}"
    );
    assert!((1.0 / last.sqrt() - 157.4).abs() < 0.1);
    let cosine = crate::diffusion::schedule::Schedule::new(&ScheduleConfig {
        kind: ScheduleKind::Cosine,
        steps: 1000,
    })
    .expect("schedule");
    let unguided: Vec<usize> = (0..1000)
        .filter(|&i| cosine.alphas_cumprod[i] < MIN_GUIDED_ABAR)
        .collect();
    assert_eq!(unguided, vec![995, 996, 997, 998, 999]);
}

/// A DPS draw whose samples end far above the noise's residual is drawn again with half
/// the step size; DDS, and a draw within `fit_factor` of the noise floor, are published
/// as drawn.
#[test]
fn dps_draw_that_does_not_fit_is_redrawn_with_half_the_step() {
    let ps = tiny_sampler(true);
    let a = truth(0.0);
    let (op, _) = identity_problem(&a);
    // Noise 1e-6 of the data: 10 steps of the tiny model end orders of magnitude above
    // the residual that noise leaves.
    // (The model-error pass, which such a fit would also start, is tested below.)
    let base = SamplerConfig {
        zeta: 4.0,
        max_restarts: 1,
        noise_sigma: Some(1e-6),
        model_error_factor: 1e12,
        ..cfg(Method::Dps, 10, 2)
    };
    let mut rec = Reconstructor::new(ps.clone(), base.clone(), 0.3e-3).expect("rec");
    let est = done(rec.reconstruct(&op, &flat(&a), &[N, N]));
    assert_eq!(est.restarts, 1);
    assert_eq!(est.nfe, 20, "both attempts count");
    assert!(
        est.zeta == Some(4.0) || est.zeta == Some(2.0),
        "zeta {:?}",
        est.zeta
    );
    assert!(est.residual > 1e-3, "residual {}", est.residual);

    let lenient = SamplerConfig {
        fit_factor: 1e12,
        ..base.clone()
    };
    let mut rec = Reconstructor::new(ps.clone(), lenient, 0.3e-3).expect("rec");
    let est = done(rec.reconstruct(&op, &flat(&a), &[N, N]));
    assert_eq!((est.restarts, est.nfe, est.zeta), (0, 10, Some(4.0)));

    // A proximal weight of about 1 keeps DDS's estimate halfway to the data: far above
    // the noise floor too.
    let dds = SamplerConfig {
        method: Method::Dds,
        lambda: 1e-12,
        ..base
    };
    let mut rec = Reconstructor::new(ps.clone(), dds, 0.3e-3).expect("rec");
    let est = done(rec.reconstruct(&op, &flat(&a), &[N, N]));
    assert_eq!((est.restarts, est.nfe, est.zeta), (0, 10, None));
}

/// Data the model explains to their noise are published as drawn; data it cannot explain
/// (the echo of the same image with the opposite polarity and 30 times the gain) leave a
/// residual far above the noise's, are drawn again with the excess counted as noise, and
/// are published as a poor fit whose samples spread wider.
#[test]
fn data_the_model_cannot_explain_are_a_poor_fit_with_a_wider_interval() {
    let ps = tiny_sampler(true);
    let (us, _) = ultrasound_op();
    let op = NormalizedOperator::new(us.clone(), 10, &Device::Cpu).expect("norm");
    let clean = us.forward_array(&truth(0.0)).expect("forward");
    let peak = clean.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let mut rng = StdRng::seed_from_u64(5);
    let d = Normal::new(0.0, 0.02 * peak as f64).expect("normal");
    let noise = clean.mapv(|_| d.sample(&mut rng) as f32);
    let c = SamplerConfig {
        noise_sigma: None,
        ..cfg(Method::Dds, 10, 4)
    };
    let reconstruct = |y: &ndarray::Array4<f32>| {
        let mut rec = Reconstructor::new(ps.clone(), c.clone(), 0.3e-3).expect("rec");
        done(rec.reconstruct(&op, &flat_data(y), &data_shape(y)))
    };

    let fit = reconstruct(&(&clean + &noise));
    assert!(!fit.poor_fit);
    assert_eq!((fit.model_error, fit.restarts, fit.nfe), (0.0, 0, 10));
    assert!(
        fit.misfit > 0.5 && fit.misfit < 2.0,
        "misfit {}",
        fit.misfit
    );

    let flipped = clean.mapv(|v| -30.0 * v) + &noise;
    let poor = reconstruct(&flipped);
    assert!(poor.poor_fit);
    assert_eq!((poor.restarts, poor.nfe), (1, 20), "both draws count");
    // Nothing of the flipped echo is explained: the residual is the data's norm, and the
    // model error their RMS. (Measured: misfit 1.59 for the fitting data, 362 for these;
    // the interval 0.050 wide for the fitting data, 0.172 for these.)
    let n = flipped.len() as f64;
    let rms = (flipped.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / n).sqrt();
    let floor = poor.noise_sigma * n.sqrt() / (rms * n.sqrt());
    assert!(
        (poor.misfit * floor - 1.0).abs() < 0.05,
        "relative residual of the first draw {}",
        poor.misfit * floor
    );
    assert!(
        (poor.model_error / rms - 1.0).abs() < 0.05,
        "model error {} against the data's RMS {rms}",
        poor.model_error
    );
    let width = |e: &frame::FrameEstimate| e.aeration_ci[1] - e.aeration_ci[0];
    assert!(
        width(&poor) > 2.5 * width(&fit),
        "interval {:?} against {:?} of the fitting data",
        poor.aeration_ci,
        fit.aeration_ci
    );
}

/// With a calibration loaded, a frame the RF term cannot explain is reconstructed from its
/// echo power: the envelope of aeration `a` is `c(z) K a` for the calibrated depth gain, so
/// the echo draw explains it, and the estimate says which data term it fitted. Without the
/// envelope the RF draw under model error is published, as without a calibration. A
/// calibration file that does not parse is refused, naming the file.
#[test]
fn a_poor_fit_is_reconstructed_from_the_echo_power_with_a_calibration() {
    let ps = tiny_sampler(true);
    let (us, grid) = ultrasound_op();
    let op = NormalizedOperator::new(us.clone(), 10, &Device::Cpu).expect("norm");
    let a = truth(0.0);
    let flipped = us.forward_array(&a).expect("forward").mapv(|v| -30.0 * v);
    let mut rng = StdRng::seed_from_u64(8);
    let d = Normal::new(0.0, 1e-3).expect("normal");
    let flipped = flipped.mapv(|v| v + d.sample(&mut rng) as f32);
    let gain = echo::DepthGain {
        gain_db: 40.0,
        slope_db_per_cm: -3.0,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("calibration.toml");
    let cal = echo::Calibration {
        depth_gain: gain,
        frame_sd_db: 0.0,
        response: None,
        source: "test".into(),
    };
    std::fs::write(&path, toml::to_string(&cal).expect("toml")).expect("write");
    let c = SamplerConfig {
        noise_sigma: None,
        calibration: Some(path.clone()),
        ..cfg(Method::Dds, 10, 4)
    };
    let blurred = echo::smooth(a.view());
    let envelope = Array2::from_shape_fn((N, N), |(iz, ix)| {
        blurred[[iz, ix]] * gain.at(grid.z[iz]) as f32
    });
    let echo_in = frame::Echo {
        envelope: envelope.view(),
        z: &grid.z,
    };
    let mut rec = Reconstructor::new(ps.clone(), c.clone(), 0.3e-3).expect("rec");
    let e = done(rec.reconstruct_frame(
        &op,
        &flat_data(&flipped),
        &data_shape(&flipped),
        Some(echo_in),
    ));
    assert!(e.poor_fit && e.misfit > 10.0, "misfit {}", e.misfit);
    assert_eq!(e.data_term, frame::DataTerm::Echo);
    assert!(e.residual < 0.2, "echo residual {}", e.residual);
    assert_eq!(e.nfe % 10, 0);
    assert!(e.nfe >= 20, "an RF draw and an echo draw: nfe {}", e.nfe);

    // A calibration with a response maps the same estimate through its line and widens
    // the interval by its spread.
    let line = echo::Response {
        intercept: 0.1,
        slope: 1.2,
        sd: 0.05,
        frames: 10,
        estimate_mean: 0.6,
        estimate_ss: 0.2,
    };
    let with_line = dir.path().join("line.toml");
    let cal_line = echo::Calibration {
        response: Some(line),
        ..cal.clone()
    };
    std::fs::write(&with_line, toml::to_string(&cal_line).expect("toml")).expect("write");
    let mut rec = Reconstructor::new(
        ps.clone(),
        SamplerConfig {
            calibration: Some(with_line),
            ..c.clone()
        },
        0.3e-3,
    )
    .expect("rec");
    let l = done(rec.reconstruct_frame(
        &op,
        &flat_data(&flipped),
        &data_shape(&flipped),
        Some(echo_in),
    ));
    assert!(
        (l.aeration - line.correct(e.aeration)).abs() < 1e-9,
        "{} against {}",
        l.aeration,
        e.aeration
    );
    assert!(
        l.aeration_ci[1] - l.aeration_ci[0] >= 2.0 * line.half_width(e.aeration) - 1e-9,
        "{:?}",
        l.aeration_ci
    );
    assert_eq!(l.category, crate::aeration::category(l.aeration));

    let mut rec = Reconstructor::new(ps.clone(), c.clone(), 0.3e-3).expect("rec");
    let e = done(rec.reconstruct(&op, &flat_data(&flipped), &data_shape(&flipped)));
    assert_eq!(e.data_term, frame::DataTerm::Rf);
    assert!(e.poor_fit && e.model_error > 0.0);

    std::fs::write(&path, "depth_gain = 3").expect("write");
    let err = Reconstructor::new(ps.clone(), c, 0.3e-3)
        .err()
        .expect("a bad calibration is refused");
    assert!(
        err.to_string().contains("sampler.calibration")
            && err.to_string().contains("calibration.toml"),
        "{err}"
    );
}

/// `MAX_GUIDANCE_GAIN` is `1 / L` for the objective `||y' - A' (x + 1) / 2||^2 / 2` in
/// model units on an ultrasound operator: L measured by power iteration on differences
/// of its gradient, taken by autograd.
#[test]
fn guidance_gain_is_the_inverse_lipschitz_constant() {
    let (us, _) = ultrasound_op();
    let op = NormalizedOperator::new(us.clone(), 30, &Device::Cpu).expect("norm");
    let y = us.forward_array(&truth(0.0)).expect("forward");
    let meas = Measurement::from_frame(&op, &y, Some(0.0), &Device::Cpu).expect("meas");
    let grad = |x: &Tensor| -> Tensor {
        let v = candle_core::Var::from_tensor(x).expect("var");
        let a = super::sampler::to_aeration(v.as_tensor()).expect("a");
        let r = meas
            .y
            .broadcast_sub(&op.forward(&a).expect("A"))
            .expect("r");
        let f = (r.sqr().expect("sq").sum_all().expect("sum") * 0.5).expect("f");
        let g = f.backward().expect("backward");
        g.get(v.as_tensor()).expect("gradient").clone()
    };
    let x0 = Tensor::zeros((1, N, N), DType::F32, &Device::Cpu).expect("x0");
    let g0 = grad(&x0);
    let mut v = crate::diffusion::sampler::NoiseRng::new(3)
        .normal(&[1, N, N], &Device::Cpu, DType::F32)
        .expect("v");
    let mut l = 0.0;
    for _ in 0..60 {
        v = (&v / l2(&v).expect("norm")).expect("unit");
        let hv = (grad(&(&x0 + &v).expect("x")) - &g0).expect("hv");
        l = l2(&hv).expect("norm");
        v = hv;
    }
    // 0.261 here: the operator's norm comes from 30 power iterations, which approach it
    // from below, so ||A'|| is about 1.02.
    assert!((l - 0.25).abs() < 0.0125, "L = {l}");
    assert!(
        (MAX_GUIDANCE_GAIN * l - 1.0).abs() < 0.05,
        "1/L = {}",
        1.0 / l
    );
}

/// An absurd zeta is held to the stable step, [`MAX_GUIDANCE_GAIN`] times `||r||`: the
/// residual falls step by step as with a tuned zeta instead of overshooting the data.
/// Before the hold, zeta 1e6 on the tiny model diverged past `divergence_factor` on
/// every attempt.
#[test]
fn dps_step_is_held_to_the_stable_gain() {
    let ps = tiny_sampler(true);
    let a = truth(0.0);
    let (op, meas) = identity_problem(&a);
    let draw = |zeta: f64| {
        let c = SamplerConfig {
            zeta,
            ..cfg(Method::Dps, 50, 2)
        };
        ps.draw(&c, &op, &meas, &Start::Cold, 5).expect("draw")
    };
    let held = draw(1e6);
    assert!(held.capped_steps > 40, "held {} times", held.capped_steps);
    let t = &held.trajectory;
    assert!(
        t[25..].windows(2).all(|w| w[1] < w[0]),
        "residual does not fall: {t:?}"
    );
    assert!(
        held.residuals.iter().all(|r| *r < 0.25 * t[0]),
        "residuals {:?} from {}",
        held.residuals,
        t[0]
    );
    let free = draw(1.0);
    assert_eq!(free.capped_steps, 0);
}

/// A frame whose every attempt diverges (here: the starting noise already exceeds
/// `max_abs`) is marked failed after `max_restarts` restarts, with the reason.
#[test]
fn frame_that_keeps_diverging_is_failed() {
    let ps = tiny_sampler(true);
    let a = truth(0.0);
    let (op, _) = identity_problem(&a);
    let c = SamplerConfig {
        zeta: 1.0,
        max_abs: 1.01,
        max_restarts: 1,
        ..cfg(Method::Dps, 10, 2)
    };
    let mut rec = Reconstructor::new(ps.clone(), c, 0.3e-3).expect("rec");
    match rec.reconstruct(&op, &flat(&a), &[N, N]) {
        FrameOutcome::Failed { reason, attempts } => {
            assert_eq!(attempts, 2);
            assert!(reason.contains("diverged"), "{reason}");
            assert!(reason.contains("exceeds 1.01"), "{reason}");
        }
        FrameOutcome::Done(e) => panic!("every iterate diverges, got {}", e.residual),
    }
}

#[test]
fn grid_mismatch_and_bad_config_are_errors() {
    let ps = tiny_sampler(false);
    let probe = LinearProbe {
        n_el: 8,
        ..LinearProbe::default_lung()
    };
    // The tiny U-Net halves once: any even sides serve, an odd one does not.
    let grid = Grid::uniform(7, 8, 0.3e-3, 3e-3).expect("grid");
    let scan = probe.plane_wave_scan(&[0.0], &grid);
    let us = MeasurementOperator::new(&scan, &grid, OperatorOptions::default(), &Device::Cpu)
        .expect("op");
    let op = NormalizedOperator::new(Arc::new(us), 5, &Device::Cpu).expect("norm");
    assert_eq!(ps.multiple(), 2);
    assert!(matches!(
        ps.check_operator(&op),
        Err(PosteriorError::GridShape {
            multiple: 2,
            grid: (8, 7)
        })
    ));
    let bad = SamplerConfig {
        eta: 1.5,
        ..SamplerConfig::default()
    };
    let err = Reconstructor::new(ps.clone(), bad, 0.3e-3)
        .err()
        .expect("eta 1.5 rejected");
    assert!(err.to_string().contains("sampler.eta"), "{err}");
    let bad = SamplerConfig {
        spread_scale: 0.0,
        ..SamplerConfig::default()
    };
    let err = Reconstructor::new(ps.clone(), bad, 0.3e-3)
        .err()
        .expect("spread_scale 0 rejected");
    assert!(
        err.to_string().contains("sampler.spread_scale = 0"),
        "{err}"
    );
    let bad = SamplerConfig {
        fit_factor: 1.0,
        ..SamplerConfig::default()
    };
    let err = Reconstructor::new(ps.clone(), bad, 0.3e-3)
        .err()
        .expect("fit_factor 1 rejected");
    assert!(err.to_string().contains("sampler.fit_factor = 1"), "{err}");
    assert!("dps".parse::<Method>().is_ok());
    assert!("ddpm".parse::<Method>().is_err());
}

#[test]
fn reconstructor_can_move_into_a_pipeline_stage() {
    fn assert_send<T: Send>() {}
    assert_send::<Reconstructor>();
    assert_send::<Arc<PosteriorSampler>>();
}
