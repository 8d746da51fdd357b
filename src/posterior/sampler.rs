//! The reverse-diffusion loops of posterior sampling.
//!
//! Images are aeration `a` in [0, 1]; the network works on `x = 2 a - 1`. At reverse step
//! `i` (respaced schedule, `abar_i`):
//!
//! 1. Tweedie's estimate `x0_hat(x_i) = (x_i - sqrt(1 - abar_i) eps_theta(x_i, t_i)) / sqrt(abar_i)`.
//! 2. Data consistency, by method:
//!    - **DPS** (Chung et al. 2022, Algorithm 1): the unconditional update
//!      `x'_{i-1}` (ancestral for `dps`, DDIM with `eta` for `ddim-dps`, both from the
//!      clipped `x0_hat`) followed by the gradient step
//!      `x_{i-1} = x'_{i-1} - zeta' w grad_{x_i} ||y' - A' a0_hat(x_i)||`, the gradient taken
//!      through the network by candle autograd.
//!    - **DDS** (Chung, Lee & Ye 2023): `cg_iterations` conjugate-gradient steps from
//!      `a0_hat` on `||y' - A' a||^2 / sigma'^2 + ||a - a0_hat||^2 / lambda`, then the DDIM
//!      update with `eta` from the data-consistent estimate and the network's noise.
//!
//! # Step-size rule (DPS)
//!
//! The paper writes the step as `zeta_i grad ||y - A x0_hat||^2` with
//! `zeta_i = zeta' / ||y - A x0_hat||`; the reference implementation
//! (`DPS2022/diffusion-posterior-sampling`, `guided_diffusion/condition_methods.py`)
//! instead takes the gradient of the *unsquared* norm with a plain `scale`. The two are
//! the same direction and differ by the factor 2 (`grad ||r|| = grad ||r||^2 / (2 ||r||)`);
//! we use the reference code's form, the gradient of `||r||`, with `zeta'` the plain scale,
//! on the problem normalised by the operator's spectral norm ([`super::problem`]). Reason:
//! our channel data come in arbitrary units and the operator's gain varies with probe,
//! transmits and grid; the gradient of the unsquared, normalised residual is invariant to
//! both (it is `J^T A'^T r / ||r||`, with `||A'|| = 1`), so one `zeta'` serves every
//! recording, where a step on the squared norm would need retuning by `||A||^2` times the
//! data amplitude.
//!
//! The step `zeta' w` (with the discrepancy weight `w` below) is held to at most
//! [`MAX_GUIDANCE_GAIN`]` ||r||` per sample (our addition). As a step on
//! `grad ||r||^2 / 2` it is `zeta' w / ||r||`, which grows as the residual falls, up to
//! `0.385 zeta' / ||n||` at `||r|| = sqrt(3) ||n||` (the largest `w / ||r||`;
//! `||n|| = sigma' sqrt(M)` is the noise's norm). Where that exceeds `2 / L = 8` (`L = 1/4`
//! the norm of the objective's Hessian, Tweedie's Jacobian taken as the identity, as at
//! the last steps) gradient descent overshoots the data along the operator's strongest
//! directions instead of settling on it. The hold is `1 / L = 4`, the step that lands on
//! the linearised minimiser along those directions. The peak is high where the noise is
//! small in the operator's units, as on a weak echo; the frame that failed without the
//! hold and fits with it is in docs/reconstruction.md ("Step-size rule").
//!
//! No guidance is applied at steps whose `abar_i` is below [`MIN_GUIDED_ABAR`], the last
//! `abar` of the reference code's schedule (Ho et al. 2020's linear betas, 1e-4 to 0.02
//! over 1000 steps, which DPS2022 samples with): there Tweedie's Jacobian
//! `1 / sqrt(abar_i)` exceeds the 157 the reference code ever guides through. On the
//! 1000-step cosine schedule (last beta clipped at 0.999) that leaves the first 5 steps of
//! a cold start unguided (abar 2.4e-9 to 3.9e-5, gain 2e4 to 160); on a respaced schedule
//! of a few dozen steps, only the first. x_T is pure noise, so Tweedie's estimate of it
//! says nothing about the image, and the amplified gradient throws the few pixels a
//! trained network leaves unclipped far out: full DPS with zeta' = 12 guided at T exceeded
//! `max_abs` = 50 in 5 of 6 attempts; zeta' = 48 guided from t = 998 on did so at t = 996
//! (gain 214) in 3 of 3, and guided from t = 994 on, at t = 992 (gain 92) in 1 of 2. The
//! excursions are transient (the following steps damp them), so the larger step sizes
//! full DPS is tuned to run with a larger `max_abs` (config/pleura.toml).
//!
//! The estimated noise enters DPS through the weight
//! `w = max(0, 1 - M sigma'^2 / ||r||^2)` (Morozov's discrepancy principle, our addition):
//! the guidance fades as the residual approaches the norm that noise alone leaves
//! (`sigma' sqrt(M)`), so the sampler does not fit the noise. In DDS it sets the weight of
//! the data term, `1 / sigma'^2`.

#[cfg(test)]
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;

use super::problem::{Measurement, NormalizedOperator};
use super::{Method, PosteriorError, SamplerConfig};
use crate::diffusion::checkpoint::Model;
use crate::diffusion::sampler::{NoiseRng, Sampler};
use crate::diffusion::schedule::Schedule;
use crate::diffusion::unet::UNet;

/// The smallest `abar_i` at which DPS guides: the last `abar` of the linear schedule of
/// Ho et al. 2020 (betas 1e-4 to 0.02 over 1000 steps), the schedule of the DPS reference
/// code (`DPS2022/diffusion-posterior-sampling`, `configs/diffusion_config.yaml`), where
/// Tweedie's gain `1 / sqrt(abar)` is 157.
pub const MIN_GUIDED_ABAR: f64 = 4.0358e-5;

/// The largest DPS step on `grad ||r||^2 / 2`, i.e. the largest `zeta' w / ||r||`:
/// `1 / L`, where `L = 1/4` is the norm of that objective's Hessian `A'^T A' / 4` in model
/// units (`a = (x + 1) / 2`, `||A'|| = 1`, Tweedie's Jacobian taken as the identity, as
/// at the last steps where `abar -> 1`). Gradient descent is stable below `2 / L`.
pub const MAX_GUIDANCE_GAIN: f64 = 4.0;

/// Where a draw starts.
pub enum Start {
    /// From pure noise at the last step of the respaced schedule.
    Cold,
    /// From this aeration image (nz, nx) noised to the step at `warm_start_fraction` of
    /// the schedule (SDEdit-style; sequential posterior sampling warm start).
    Warm(Tensor),
}

/// The result of one batch of K posterior draws.
pub struct Draw {
    /// Aeration samples (K, nz, nx) in [0, 1].
    pub samples: Tensor,
    /// Final relative residual ||y' - A' a_k|| / ||y'|| per sample.
    pub residuals: Vec<f64>,
    /// Mean relative residual of the (data-consistent, clipped) x0 estimate at each step
    /// run, in order.
    pub trajectory: Vec<f64>,
    /// Sample-steps of a DPS draw at which [`MAX_GUIDANCE_GAIN`] held the step (0 for DDS).
    pub capped_steps: usize,
    /// Network evaluations per sample (each also backpropagated for DPS).
    pub nfe: usize,
    /// Respaced step index the draw started from.
    pub start_step: usize,
}

/// Posterior sampler: a frozen copy of the prior network and its training schedule.
pub struct PosteriorSampler {
    pub(crate) unet: UNet,
    base: Schedule,
    device: Device,
    /// The U-Net's downsampling factor: image sides must be multiples of it.
    multiple: usize,
    /// Test hook: the next this-many draws get a NaN written into their first iterate.
    #[cfg(test)]
    pub(crate) inject_nan: AtomicUsize,
}

/// Floor of CG denominators (f32), so an exactly solved sample stops moving.
const CG_TINY: f64 = 1e-30;

impl PosteriorSampler {
    /// A sampler over `model`; its parameters are copied as constants, so backpropagation
    /// computes gradients for the input only.
    pub fn new(model: &Model, device: &Device) -> Result<Self, PosteriorError> {
        let tensors = model
            .tensors()?
            .into_iter()
            .map(|(k, v)| Ok((k, v.detach().to_device(device)?)))
            .collect::<Result<std::collections::HashMap<_, _>, candle_core::Error>>()?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let unet = UNet::new(&model.spec.model, vb)?;
        if model.spec.model.in_channels != 1 {
            return Err(PosteriorError::Config {
                field: "model.in_channels",
                value: model.spec.model.in_channels.to_string(),
                reason: "aeration images have one channel".into(),
            });
        }
        Ok(Self {
            multiple: 1 << (model.spec.model.channel_mult.len().max(1) - 1),
            unet,
            base: model.schedule.clone(),
            device: device.clone(),
            #[cfg(test)]
            inject_nan: AtomicUsize::new(0),
        })
    }

    /// The U-Net's downsampling factor, 2^(levels - 1): the sampler runs the network,
    /// which is convolutional (docs/reconstruction.md, "Any linear-array scan"), on any
    /// image whose sides are multiples of it.
    pub fn multiple(&self) -> usize {
        self.multiple
    }

    /// The computing device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Checks that the network can run on the operator's grid (sides multiples of
    /// [`PosteriorSampler::multiple`]).
    pub fn check_operator(&self, op: &NormalizedOperator) -> Result<(), PosteriorError> {
        let (nz, nx) = op.image_shape();
        if nz % self.multiple != 0 || nx % self.multiple != 0 || nz == 0 || nx == 0 {
            return Err(PosteriorError::GridShape {
                multiple: self.multiple,
                grid: (nz, nx),
            });
        }
        Ok(())
    }

    /// Draws `cfg.samples` posterior samples in one batch with noise from `seed`.
    pub fn draw(
        &self,
        cfg: &SamplerConfig,
        op: &NormalizedOperator,
        meas: &Measurement,
        start: &Start,
        seed: u64,
    ) -> Result<Draw, PosteriorError> {
        cfg.validate()?;
        self.check_operator(op)?;
        if cfg.steps > self.base.len() {
            return Err(PosteriorError::Config {
                field: "sampler.steps",
                value: cfg.steps.to_string(),
                reason: format!("the model was trained with {} steps", self.base.len()),
            });
        }
        let sampler = Sampler::new(&self.unet, &self.base, cfg.steps, &self.device, DType::F32)?;
        let s = sampler.num_steps();
        let k = cfg.samples;
        let (h, w) = op.image_shape();
        let shape = [k, 1, h, w];
        let mut rng = NoiseRng::new(seed);
        let (mut x, start_step) = match start {
            Start::Cold => (rng.normal(&shape, &self.device, DType::F32)?, s - 1),
            Start::Warm(prev) => {
                let i0 = ((cfg.warm_start_fraction * s as f64).ceil() as usize).clamp(1, s) - 1;
                let ac = sampler.schedule().alphas_cumprod[i0];
                let x0 = to_model(prev)?
                    .reshape((1, 1, h, w))?
                    .broadcast_as(&shape)?;
                let z = rng.normal(&shape, &self.device, DType::F32)?;
                (((x0 * ac.sqrt())? + (z * (1.0 - ac).sqrt())?)?, i0)
            }
        };
        #[cfg(test)]
        if self
            .inject_nan
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            let mut v = x.flatten_all()?.to_vec1::<f32>()?;
            v[0] = f32::NAN;
            x = Tensor::from_vec(v, &shape, &self.device)?;
        }
        let rho = meas.sigma * meas.sigma / cfg.lambda;
        let noise_norm = meas.noise_norm();
        let mut trajectory = Vec::with_capacity(start_step + 1);
        // Sample-steps at which MAX_GUIDANCE_GAIN held the DPS step, summed on the device.
        let mut capped = Tensor::zeros((), DType::F32, &self.device)?;
        guard(&x, cfg, start_step, 0)?;
        for i in (0..=start_step).rev() {
            let noise = if i > 0 {
                rng.normal(&shape, &self.device, DType::F32)?
            } else {
                x.zeros_like()?
            };
            let (next, rel_res) = match cfg.method {
                Method::Dps | Method::DdimDps => {
                    let xv = Var::from_tensor(&x)?;
                    let eps = sampler.predict_eps(xv.as_tensor(), i)?;
                    // Clipped before the residual, as the reference code's
                    // `pred_xstart`: saturated pixels get no gradient.
                    let x0 = sampler
                        .predict_x0(xv.as_tensor(), &eps, i)?
                        .clamp(-1.0, 1.0)?;
                    let a = to_aeration(&x0.squeeze(1)?)?;
                    let r = meas.y.broadcast_sub(&op.forward(&a)?)?;
                    let norms = r.sqr()?.flatten_from(1)?.sum(1)?.sqrt()?;
                    let grads = norms.sum_all()?.backward()?;
                    let g = grads
                        .get(xv.as_tensor())
                        .ok_or_else(|| PosteriorError::Diverged {
                            step: i,
                            reason: "no gradient reached the iterate".into(),
                            evaluations: start_step - i + 1,
                        })?
                        .clone();
                    // Discrepancy weight per sample (see the module documentation),
                    // max(0, 1 - M sigma'^2 / ||r||^2), 0 where ||r|| = 0; on the device.
                    let norms = norms.detach();
                    let n2 = norms.sqr()?;
                    let positive = n2.gt(0.0)?;
                    let safe = positive.where_cond(&n2, &n2.ones_like()?)?;
                    let w = (safe.recip()? * (noise_norm * noise_norm))?
                        .affine(-1.0, 1.0)?
                        .relu()?;
                    let w = positive.where_cond(&w, &w.zeros_like()?)?;
                    // The step on the gradient of ||r||, zeta' w, held to at most
                    // MAX_GUIDANCE_GAIN ||r|| (see the module documentation).
                    let stable = (&norms * MAX_GUIDANCE_GAIN)?;
                    let step = (w * cfg.zeta)?;
                    let held = step.gt(&stable)?;
                    let wt = held.where_cond(&stable, &step)?.reshape((k, 1, 1, 1))?;
                    let x0c = x0.detach();
                    let x_prev = x.detach();
                    let base = match cfg.method {
                        Method::Dps => sampler.ddpm_step(&x_prev, &x0c, i, &noise)?,
                        _ => {
                            let e = sampler.eps_from_x0(&x_prev, &x0c, i)?;
                            sampler.ddim_step(&x0c, &e, i, cfg.eta, &noise)?
                        }
                    };
                    // No guidance where Tweedie's estimate amplifies it beyond the
                    // reference code's range (see the module documentation).
                    let next = if sampler.schedule().alphas_cumprod[i] < MIN_GUIDED_ABAR {
                        base
                    } else {
                        capped = (capped + held.to_dtype(DType::F32)?.sum_all()?)?;
                        (base - g.broadcast_mul(&wt)?)?
                    };
                    // The residual of the clipped estimate is `norms` already.
                    (next, (norms / meas.y_norm)?)
                }
                Method::Dds => {
                    let eps = sampler.predict_eps(&x, i)?;
                    let x0 = sampler.predict_x0(&x, &eps, i)?.clamp(-1.0, 1.0)?;
                    let a0 = to_aeration(&x0.squeeze(1)?)?;
                    let a = conjugate_gradient(op, meas, &a0, rho, cfg.cg_iterations)?
                        .clamp(0.0, 1.0)?;
                    let x0_dc = to_model(&a)?.unsqueeze(1)?;
                    let res = meas
                        .y
                        .broadcast_sub(&op.forward(&a)?)?
                        .sqr()?
                        .flatten_from(1)?
                        .sum(1)?
                        .sqrt()?;
                    (
                        sampler.ddim_step(&x0_dc, &eps, i, cfg.eta, &noise)?,
                        (res / meas.y_norm)?,
                    )
                }
            };
            // One device-to-host read per step: the K relative residuals of this step's
            // estimate, then the squared norm and largest magnitude of the next iterate.
            let checks = Tensor::cat(
                &[
                    rel_res,
                    next.sqr()?.sum_all()?.reshape(1)?,
                    next.abs()?.max_all()?.reshape(1)?,
                ],
                0,
            )?
            .to_vec1::<f32>()?;
            let res: Vec<f64> = checks[..k].iter().map(|r| *r as f64).collect();
            let mean_res = res.iter().sum::<f64>() / res.len() as f64;
            if !mean_res.is_finite() || res.iter().any(|r| *r > cfg.divergence_factor) {
                return Err(PosteriorError::Diverged {
                    step: i,
                    reason: format!(
                        "relative residual {mean_res:.3e} (limit {})",
                        cfg.divergence_factor
                    ),
                    evaluations: start_step - i + 1,
                });
            }
            check_iterate(
                checks[k],
                checks[k + 1] as f64,
                cfg,
                i.saturating_sub(1),
                start_step - i + 1,
            )?;
            trajectory.push(mean_res);
            x = next;
        }
        let samples = to_aeration(&x.squeeze(1)?)?.clamp(0.0, 1.0)?;
        let residuals = meas.relative_residuals(op, &samples)?;
        Ok(Draw {
            samples,
            residuals,
            trajectory,
            capped_steps: capped.to_scalar::<f32>()? as usize,
            nfe: start_step + 1,
            start_step,
        })
    }
}

/// Rejects an iterate with a non-finite value or a magnitude beyond `cfg.max_abs`, found
/// after `evaluations` network evaluations.
fn guard(
    x: &Tensor,
    cfg: &SamplerConfig,
    step: usize,
    evaluations: usize,
) -> Result<(), PosteriorError> {
    let sq = x.sqr()?.sum_all()?.to_scalar::<f32>()?;
    let m = x.abs()?.max_all()?.to_scalar::<f32>()? as f64;
    check_iterate(sq, m, cfg, step, evaluations)
}

/// The test of [`guard`] on an iterate's squared norm `sq` and largest magnitude `m`.
fn check_iterate(
    sq: f32,
    m: f64,
    cfg: &SamplerConfig,
    step: usize,
    evaluations: usize,
) -> Result<(), PosteriorError> {
    if !sq.is_finite() {
        return Err(PosteriorError::Diverged {
            step,
            reason: "iterate has a non-finite value".into(),
            evaluations,
        });
    }
    if m > cfg.max_abs {
        return Err(PosteriorError::Diverged {
            step,
            reason: format!("iterate magnitude {m:.3e} exceeds {}", cfg.max_abs),
            evaluations,
        });
    }
    Ok(())
}

/// Aeration -> model units: x = 2 a - 1.
pub fn to_model(a: &Tensor) -> candle_core::Result<Tensor> {
    (a * 2.0)? - 1.0
}

/// Model units -> aeration: a = (x + 1) / 2.
pub fn to_aeration(x: &Tensor) -> candle_core::Result<Tensor> {
    (x + 1.0)? * 0.5
}

/// Per-sample inner products of (b, nz, nx) tensors, shape (b, 1, 1).
fn dots(u: &Tensor, v: &Tensor) -> candle_core::Result<Tensor> {
    (u * v)?.sum_keepdim(1)?.sum_keepdim(2)
}

/// `iterations` conjugate-gradient steps, from `a0`, on the normal equations of
/// `||y' - A' a||^2 + rho ||a - a0||^2`: `(A'^T A' + rho I) a = A'^T y' + rho a0`,
/// independently for each image of the batch (b, nz, nx).
pub fn conjugate_gradient(
    op: &NormalizedOperator,
    meas: &Measurement,
    a0: &Tensor,
    rho: f64,
    iterations: usize,
) -> Result<Tensor, PosteriorError> {
    let normal = |p: &Tensor| -> Result<Tensor, PosteriorError> {
        Ok((op.adjoint(&op.forward(p)?)? + (p * rho)?)?)
    };
    let aty = op.adjoint(&meas.y)?.broadcast_as(a0.shape())?;
    // Right-hand side minus the normal operator at a0: the rho terms cancel.
    let mut a = a0.clone();
    let mut r = (aty - op.adjoint(&op.forward(a0)?)?)?;
    let mut p = r.clone();
    let mut rr = dots(&r, &r)?;
    for _ in 0..iterations {
        let mp = normal(&p)?;
        let alpha = rr.broadcast_div(&(dots(&p, &mp)? + CG_TINY)?)?;
        a = (a + p.broadcast_mul(&alpha)?)?;
        r = (r - mp.broadcast_mul(&alpha)?)?;
        let rr_new = dots(&r, &r)?;
        let beta = rr_new.broadcast_div(&(&rr + CG_TINY)?)?;
        p = (&r + p.broadcast_mul(&beta)?)?;
        rr = rr_new;
    }
    Ok(a)
}
