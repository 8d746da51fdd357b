//! Unconditional sampling: ancestral DDPM and DDIM over a respaced schedule, with every
//! per-step piece public so that posterior sampling (DPS) can interleave its guidance:
//!
//! - [`Sampler::predict_eps`]: `eps_theta(x_t, t)`;
//! - [`Sampler::predict_x0`]: Tweedie's estimate `x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)`
//!   (differentiable with respect to `x_t`);
//! - [`Sampler::ddpm_step`]: a draw from `q(x_{t-1} | x_t, x0_hat)` (Ho et al. 2020 eq. 6-7);
//! - [`Sampler::ddim_step`]: the DDIM update with stochasticity `eta` (Song et al. 2021 eq. 12).
//!
//! Step `i` runs from `num_steps() - 1` down to 0. Noise comes from a seeded host
//! generator ([`NoiseRng`]) and is moved to the device, so a seed gives the same samples on
//! every run and device of the same precision.

use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use super::schedule::{even_timesteps, Schedule};
use super::unet::UNet;
use super::DiffusionError;

/// Seeded standard-normal noise generated on the host.
pub struct NoiseRng(StdRng);

impl NoiseRng {
    pub fn new(seed: u64) -> Self {
        Self(StdRng::seed_from_u64(seed))
    }

    /// A tensor of i.i.d. N(0, 1) values of this shape on `device` in `dtype`.
    pub fn normal(
        &mut self,
        shape: &[usize],
        device: &Device,
        dtype: DType,
    ) -> candle_core::Result<Tensor> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut self.0)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)
    }

    /// The underlying generator (for drawing timesteps and such).
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.0
    }
}

/// The sampling algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Ancestral sampling from the posterior with variance `posterior_variance`
    /// (Ho et al.'s `sigma_t^2 = beta~_t`, "fixed small").
    Ddpm,
    /// DDIM with this `eta` (0: deterministic).
    Ddim { eta: f64 },
}

/// A sampler: a model and a (respaced) schedule.
pub struct Sampler<'a> {
    model: &'a UNet,
    schedule: Schedule,
    device: Device,
    dtype: DType,
}

impl<'a> Sampler<'a> {
    /// Samples with `steps` evenly spaced steps (1..=T) of the training schedule `base`,
    /// computing in `dtype` on `device`.
    pub fn new(
        model: &'a UNet,
        base: &Schedule,
        steps: usize,
        device: &Device,
        dtype: DType,
    ) -> Result<Self, DiffusionError> {
        if steps == 0 || steps > base.len() {
            return Err(DiffusionError::Config {
                field: "steps",
                value: steps.to_string(),
                reason: format!("must be in 1..={}", base.len()),
            });
        }
        let schedule = base.respace(&even_timesteps(base.len(), steps)?)?;
        Ok(Self {
            model,
            schedule,
            device: device.clone(),
            dtype,
        })
    }

    /// As [`Sampler::new`] with an explicit respaced schedule.
    pub fn with_schedule(
        model: &'a UNet,
        schedule: Schedule,
        device: &Device,
        dtype: DType,
    ) -> Self {
        Self {
            model,
            schedule,
            device: device.clone(),
            dtype,
        }
    }

    /// Number of sampling steps.
    pub fn num_steps(&self) -> usize {
        self.schedule.len()
    }

    /// The respaced schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The model.
    pub fn model(&self) -> &UNet {
        self.model
    }

    /// The computing device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `eps_theta(x_t, t_i)` for sampling step `i` (the model sees the original timestep).
    pub fn predict_eps(&self, x_t: &Tensor, i: usize) -> candle_core::Result<Tensor> {
        let b = x_t.dim(0)?;
        let t = Tensor::full(self.schedule.timesteps[i] as f32, b, &self.device)?;
        self.model.forward(x_t, &t)
    }

    /// Tweedie's estimate of x_0 from `x_t` and a noise prediction at step `i` (unclipped).
    pub fn predict_x0(&self, x_t: &Tensor, eps: &Tensor, i: usize) -> candle_core::Result<Tensor> {
        let ac = self.schedule.alphas_cumprod[i];
        (x_t * (1.0 / ac.sqrt()))? - (eps * ((1.0 - ac) / ac).sqrt())?
    }

    /// The noise implied by `x_t` and an estimate `x0` at step `i`.
    pub fn eps_from_x0(&self, x_t: &Tensor, x0: &Tensor, i: usize) -> candle_core::Result<Tensor> {
        let ac = self.schedule.alphas_cumprod[i];
        ((x_t * (1.0 / ac.sqrt()))? - x0)? * (1.0 / (1.0 / ac - 1.0).sqrt())
    }

    /// One ancestral step: mean of `q(x_{i-1} | x_i, x0)` plus `exp(log_var / 2) noise`
    /// (`noise` ignored at `i = 0`, where the mean is returned).
    pub fn ddpm_step(
        &self,
        x_t: &Tensor,
        x0: &Tensor,
        i: usize,
        noise: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let s = &self.schedule;
        let mean = ((x0 * s.posterior_mean_coef1[i])? + (x_t * s.posterior_mean_coef2[i])?)?;
        if i == 0 {
            return Ok(mean);
        }
        mean + (noise * (0.5 * s.posterior_log_variance_clipped[i]).exp())?
    }

    /// One DDIM step with stochasticity `eta`, from `x0` and the noise `eps` consistent with
    /// it (`noise` ignored at `i = 0` or `eta = 0`).
    pub fn ddim_step(
        &self,
        x0: &Tensor,
        eps: &Tensor,
        i: usize,
        eta: f64,
        noise: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let s = &self.schedule;
        let (ac, acp) = (s.alphas_cumprod[i], s.alphas_cumprod_prev[i]);
        let sigma = eta * ((1.0 - acp) / (1.0 - ac)).sqrt() * (1.0 - ac / acp).sqrt();
        let mean = ((x0 * acp.sqrt())? + (eps * (1.0 - acp - sigma * sigma).max(0.0).sqrt())?)?;
        if i == 0 || sigma == 0.0 {
            return Ok(mean);
        }
        mean + (noise * sigma)?
    }

    /// Draws `n` images (n, C, H, W) in model space [-1, 1], starting from `x_T ~ N(0, I)`,
    /// clipping each x0 estimate to [-1, 1]. `progress` is called after each step.
    pub fn sample(
        &self,
        n: usize,
        method: Method,
        rng: &mut NoiseRng,
        mut progress: impl FnMut(usize),
    ) -> candle_core::Result<Tensor> {
        let cfg = self.model.config();
        let shape = [n, cfg.in_channels, cfg.image_size, cfg.image_size];
        let mut x = rng.normal(&shape, &self.device, self.dtype)?;
        for i in (0..self.num_steps()).rev() {
            let eps = self.predict_eps(&x, i)?;
            let x0 = self.predict_x0(&x, &eps, i)?.clamp(-1.0, 1.0)?;
            let noise = if i > 0 {
                rng.normal(&shape, &self.device, self.dtype)?
            } else {
                x.zeros_like()?
            };
            x = match method {
                Method::Ddpm => self.ddpm_step(&x, &x0, i, &noise)?,
                Method::Ddim { eta } => {
                    let eps = self.eps_from_x0(&x, &x0, i)?;
                    self.ddim_step(&x0, &eps, i, eta, &noise)?
                }
            };
            progress(self.num_steps() - i);
        }
        x.clamp(-1.0, 1.0)
    }
}

/// What [`generate`] draws.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleOptions {
    /// Number of images.
    pub n: usize,
    /// Respaced sampling steps (1..=T).
    pub steps: usize,
    pub method: Method,
    /// Seed of the noise (one generator across batches, so the images depend on `batch`).
    pub seed: u64,
    /// Images per batch.
    pub batch: usize,
}

/// Draws images in aeration units [0, 1] from a loaded model. The grids of the model's
/// training data are carried over. `progress(done_images)` is called after each batch.
pub fn generate(
    model: &super::checkpoint::Model,
    opts: &SampleOptions,
    device: &Device,
    mut progress: impl FnMut(usize),
) -> Result<super::data::ImageSet, DiffusionError> {
    let SampleOptions {
        n,
        steps,
        method,
        seed,
        batch,
    } = *opts;
    if batch == 0 || n == 0 {
        return Err(DiffusionError::Config {
            field: "n/batch",
            value: format!("{n}/{batch}"),
            reason: "must be >= 1".into(),
        });
    }
    let sampler = Sampler::new(&model.unet, &model.schedule, steps, device, DType::F32)?;
    let mut rng = NoiseRng::new(seed);
    let mut data = Vec::new();
    let mut done = 0;
    let (mut h, mut w) = (0, 0);
    while done < n {
        let b = batch.min(n - done);
        let x = sampler.sample(b, method, &mut rng, |_| {})?;
        let set = super::data::ImageSet::from_model_tensor(&x)?;
        (h, w) = (set.h, set.w);
        data.extend(set.data);
        done += b;
        progress(done);
    }
    Ok(super::data::ImageSet {
        n,
        h,
        w,
        data,
        grid_x: model.spec.grid_x.clone(),
        grid_z: model.spec.grid_z.clone(),
    })
}
