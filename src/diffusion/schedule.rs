//! Noise schedules of the diffusion prior, computed in f64 on the host.
//!
//! Conventions follow DDPM (Ho et al. 2020, "Denoising Diffusion Probabilistic Models") and
//! improved DDPM (Nichol & Dhariwal 2021, "Improved Denoising Diffusion Probabilistic
//! Models", reference code `openai/improved-diffusion`, `gaussian_diffusion.py` and
//! `respace.py`): step indices `t = 0..T-1`, `beta_t` the variance added at step `t`,
//! `alpha_bar_t = prod_{s<=t} (1 - beta_s)`.

use serde::{Deserialize, Serialize};

use super::DiffusionError;

/// The beta schedule family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Ho et al. 2020: betas linear from 1e-4 to 0.02 over T = 1000 steps; for other T both
    /// ends are scaled by 1000/T (improved-diffusion `get_named_beta_schedule("linear")`).
    Linear,
    /// Nichol & Dhariwal 2021 eq. 17: `alpha_bar(t) = cos^2(((t/T + s)/(1 + s)) pi/2)`,
    /// s = 0.008, betas clipped at 0.999.
    Cosine,
}

/// What defines a schedule: its family and its number of steps T.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    pub kind: ScheduleKind,
    /// Number of diffusion steps T of the training process.
    pub steps: usize,
}

impl Default for ScheduleConfig {
    /// Cosine with T = 1000 (Nichol & Dhariwal 2021, Table/section 3.2 defaults).
    fn default() -> Self {
        Self {
            kind: ScheduleKind::Cosine,
            steps: 1000,
        }
    }
}

/// Linear schedule start beta for T = 1000 (Ho et al. 2020, section 4).
pub const LINEAR_BETA_START: f64 = 1e-4;
/// Linear schedule end beta for T = 1000 (Ho et al. 2020, section 4).
pub const LINEAR_BETA_END: f64 = 0.02;
/// Cosine schedule offset s (Nichol & Dhariwal 2021, section 3.2).
pub const COSINE_S: f64 = 0.008;
/// Largest beta of the cosine schedule (Nichol & Dhariwal 2021, section 3.2).
pub const COSINE_MAX_BETA: f64 = 0.999;

/// A discrete diffusion process: betas and every derived quantity used by training and
/// sampling. `timesteps[i]` is the index in the original (training) process that step `i`
/// of this (possibly respaced) process corresponds to: the model is always called with
/// `timesteps[i]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub betas: Vec<f64>,
    pub alphas_cumprod: Vec<f64>,
    pub alphas_cumprod_prev: Vec<f64>,
    pub timesteps: Vec<usize>,
    /// Variance of q(x_{t-1} | x_t, x_0): `beta_t (1 - abar_{t-1}) / (1 - abar_t)`.
    pub posterior_variance: Vec<f64>,
    /// log of the posterior variance with the t = 0 entry (which is 0) replaced by the t = 1
    /// entry, as improved-diffusion's `posterior_log_variance_clipped`.
    pub posterior_log_variance_clipped: Vec<f64>,
    /// Coefficient of x_0 in the posterior mean: `beta_t sqrt(abar_{t-1}) / (1 - abar_t)`.
    pub posterior_mean_coef1: Vec<f64>,
    /// Coefficient of x_t in the posterior mean: `(1 - abar_{t-1}) sqrt(alpha_t) / (1 - abar_t)`.
    pub posterior_mean_coef2: Vec<f64>,
}

impl Schedule {
    /// Builds the training schedule of a configuration.
    pub fn new(cfg: &ScheduleConfig) -> Result<Self, DiffusionError> {
        let t = cfg.steps;
        if t < 2 {
            return Err(DiffusionError::Config {
                field: "schedule.steps",
                value: t.to_string(),
                reason: "need at least 2 diffusion steps".into(),
            });
        }
        let betas = match cfg.kind {
            ScheduleKind::Linear => {
                let scale = 1000.0 / t as f64;
                let (b0, b1) = (scale * LINEAR_BETA_START, scale * LINEAR_BETA_END);
                if b1 >= 1.0 {
                    return Err(DiffusionError::Config {
                        field: "schedule.steps",
                        value: t.to_string(),
                        reason: format!("linear schedule scaled to T={t} has beta_end {b1} >= 1"),
                    });
                }
                // numpy.linspace(b0, b1, T).
                (0..t)
                    .map(|i| b0 + (b1 - b0) * i as f64 / (t - 1) as f64)
                    .collect()
            }
            ScheduleKind::Cosine => {
                let f = |u: f64| {
                    ((u + COSINE_S) / (1.0 + COSINE_S) * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                (0..t)
                    .map(|i| {
                        let (u0, u1) = (i as f64 / t as f64, (i + 1) as f64 / t as f64);
                        (1.0 - f(u1) / f(u0)).min(COSINE_MAX_BETA)
                    })
                    .collect()
            }
        };
        Ok(Self::from_betas(betas, (0..t).collect()))
    }

    /// Builds every derived quantity from betas.
    pub fn from_betas(betas: Vec<f64>, timesteps: Vec<usize>) -> Self {
        let n = betas.len();
        let mut alphas_cumprod = Vec::with_capacity(n);
        let mut acc = 1.0;
        for b in &betas {
            acc *= 1.0 - b;
            alphas_cumprod.push(acc);
        }
        let alphas_cumprod_prev: Vec<f64> = std::iter::once(1.0)
            .chain(alphas_cumprod[..n - 1].iter().copied())
            .collect();
        let mut posterior_variance = Vec::with_capacity(n);
        let mut coef1 = Vec::with_capacity(n);
        let mut coef2 = Vec::with_capacity(n);
        for i in 0..n {
            let (b, ac, acp) = (betas[i], alphas_cumprod[i], alphas_cumprod_prev[i]);
            posterior_variance.push(b * (1.0 - acp) / (1.0 - ac));
            coef1.push(b * acp.sqrt() / (1.0 - ac));
            coef2.push((1.0 - acp) * (1.0 - b).sqrt() / (1.0 - ac));
        }
        let first = if n > 1 {
            posterior_variance[1]
        } else {
            betas[0]
        };
        let posterior_log_variance_clipped = std::iter::once(first)
            .chain(posterior_variance[1..].iter().copied())
            .map(f64::ln)
            .collect();
        Self {
            betas,
            alphas_cumprod,
            alphas_cumprod_prev,
            timesteps,
            posterior_variance,
            posterior_log_variance_clipped,
            posterior_mean_coef1: coef1,
            posterior_mean_coef2: coef2,
        }
    }

    /// Number of steps of this process.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    /// Always false: a schedule has at least one step.
    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    /// The process restricted to the given steps of this one (sorted, deduplicated, each
    /// `< len()`), with betas recomputed so that alpha-bar at the kept steps is unchanged:
    /// `beta'_i = 1 - abar_{k_i} / abar_{k_{i-1}}` (improved-diffusion `SpacedDiffusion`).
    pub fn respace(&self, use_steps: &[usize]) -> Result<Self, DiffusionError> {
        let mut steps = use_steps.to_vec();
        steps.sort_unstable();
        steps.dedup();
        if steps.is_empty() || steps[steps.len() - 1] >= self.len() {
            return Err(DiffusionError::Config {
                field: "respace steps",
                value: format!("{use_steps:?}"),
                reason: format!("need a non-empty subset of 0..{}", self.len()),
            });
        }
        let mut last = 1.0;
        let mut betas = Vec::with_capacity(steps.len());
        let mut map = Vec::with_capacity(steps.len());
        for &k in &steps {
            let ac = self.alphas_cumprod[k];
            betas.push(1.0 - ac / last);
            last = ac;
            map.push(self.timesteps[k]);
        }
        Ok(Self::from_betas(betas, map))
    }

    /// Samples of `q(x_t | x_0)`: `sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`, as the two
    /// coefficients for step `t`.
    pub fn q_sample_coefs(&self, t: usize) -> (f64, f64) {
        let ac = self.alphas_cumprod[t];
        (ac.sqrt(), (1.0 - ac).sqrt())
    }
}

/// Which steps of a `num_timesteps` process to keep, with improved-diffusion's
/// `space_timesteps` semantics: the process is split into `section_counts.len()` equal
/// sections (the first `num_timesteps % len` get one extra step) and `section_counts[i]`
/// steps are taken evenly (rounding half to even, as Python's `round`) from section `i`.
pub fn space_timesteps(
    num_timesteps: usize,
    section_counts: &[usize],
) -> Result<Vec<usize>, DiffusionError> {
    let bad = |reason: String| DiffusionError::Config {
        field: "section_counts",
        value: format!("{section_counts:?}"),
        reason,
    };
    if section_counts.is_empty() || section_counts.len() > num_timesteps {
        return Err(bad(format!("need 1..={num_timesteps} sections")));
    }
    let size_per = num_timesteps / section_counts.len();
    let extra = num_timesteps % section_counts.len();
    let mut start = 0;
    let mut all = Vec::new();
    for (i, &count) in section_counts.iter().enumerate() {
        let size = size_per + usize::from(i < extra);
        if size < count {
            return Err(bad(format!(
                "cannot take {count} steps from a section of {size}"
            )));
        }
        let stride = if count <= 1 {
            1.0
        } else {
            (size - 1) as f64 / (count - 1) as f64
        };
        let mut cur = 0.0f64;
        for _ in 0..count {
            all.push(start + cur.round_ties_even() as usize);
            cur += stride;
        }
        start += size;
    }
    all.sort_unstable();
    all.dedup();
    Ok(all)
}

/// The `"ddimN"` spacing of improved-diffusion: `range(0, T, stride)` for the smallest
/// stride that gives exactly `count` steps.
pub fn ddim_timesteps(num_timesteps: usize, count: usize) -> Result<Vec<usize>, DiffusionError> {
    for stride in 1..num_timesteps {
        if num_timesteps.div_ceil(stride) == count {
            return Ok((0..num_timesteps).step_by(stride).collect());
        }
    }
    Err(DiffusionError::Config {
        field: "ddim steps",
        value: count.to_string(),
        reason: format!("no integer stride gives exactly {count} of {num_timesteps} steps"),
    })
}

/// `count` steps of a `num_timesteps` process, evenly spread: [`space_timesteps`] with one
/// section (always possible for `1 <= count <= num_timesteps`).
pub fn even_timesteps(num_timesteps: usize, count: usize) -> Result<Vec<usize>, DiffusionError> {
    space_timesteps(num_timesteps, &[count])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_matches_ho_endpoints() {
        let s = Schedule::new(&ScheduleConfig {
            kind: ScheduleKind::Linear,
            steps: 1000,
        })
        .unwrap();
        assert!((s.betas[0] - 1e-4).abs() < 1e-15);
        assert!((s.betas[999] - 0.02).abs() < 1e-15);
        // Ho et al. report alpha-bar_T ~ 4.04e-5 for this schedule (L_T ~ 1e-5 bits/dim).
        assert!(
            (s.alphas_cumprod[999] - 4.035e-5).abs() < 1e-7,
            "{}",
            s.alphas_cumprod[999]
        );
    }

    #[test]
    fn respacing_keeps_alpha_bar() {
        let s = Schedule::new(&ScheduleConfig::default()).unwrap();
        let keep = even_timesteps(1000, 50).unwrap();
        let r = s.respace(&keep).unwrap();
        for (i, &k) in keep.iter().enumerate() {
            assert!((r.alphas_cumprod[i] - s.alphas_cumprod[k]).abs() < 1e-12);
        }
        assert_eq!(r.timesteps, keep);
        assert!(space_timesteps(10, &[11]).is_err());
        assert!(ddim_timesteps(1000, 999).is_err());
        assert_eq!(ddim_timesteps(1000, 10).unwrap()[1], 100);
    }
}
