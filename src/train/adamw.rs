//! AdamW (Loshchilov & Hutter 2019) over named parameters, with its moments exposed so
//! that they can be checkpointed (candle-nn's `AdamW` keeps them private), global-norm
//! gradient clipping and a linear learning-rate warm-up.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::diffusion::DiffusionError;

/// Hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    /// Peak learning rate.
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Steps of linear warm-up from lr/warmup_steps to lr (0: none).
    pub warmup_steps: u64,
    /// Clip gradients to this global L2 norm (0: no clipping).
    pub grad_clip: f64,
}

impl Default for AdamWConfig {
    /// improved-diffusion trains with AdamW, lr 1e-4, no weight decay, PyTorch's betas
    /// (0.9, 0.999) and eps 1e-8; a small model trained briefly benefits from lr 2e-4.
    /// Clipping at norm 1 and 100 warm-up steps follow common DDPM practice.
    fn default() -> Self {
        Self {
            lr: 2e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            warmup_steps: 100,
            grad_clip: 1.0,
        }
    }
}

/// The optimiser state: per-parameter first and second moments and the step count.
pub struct AdamW {
    pub cfg: AdamWConfig,
    params: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Updates done so far.
    pub t: u64,
}

/// What one update did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UpdateStats {
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

impl AdamW {
    /// An optimiser over named parameters (kept in name order) with zero moments.
    pub fn new(cfg: AdamWConfig, params: HashMap<String, Var>) -> Result<Self, DiffusionError> {
        let mut params: Vec<(String, Var)> = params.into_iter().collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let m = params
            .iter()
            .map(|(_, p)| p.zeros_like())
            .collect::<Result<Vec<_>, _>>()?;
        let v = params
            .iter()
            .map(|(_, p)| p.zeros_like())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            cfg,
            params,
            m,
            v,
            t: 0,
        })
    }

    /// Learning rate of update number `t` (1-based).
    pub fn lr_at(&self, t: u64) -> f64 {
        if self.cfg.warmup_steps == 0 {
            self.cfg.lr
        } else {
            self.cfg.lr * (t as f64 / self.cfg.warmup_steps as f64).min(1.0)
        }
    }

    /// One update from the gradients in `grads` (a parameter without gradient is left as is).
    pub fn step(&mut self, grads: &GradStore) -> Result<UpdateStats, DiffusionError> {
        let mut sq = 0.0f64;
        let gs: Vec<Option<Tensor>> = self
            .params
            .iter()
            .map(|(_, p)| grads.get(p).cloned())
            .collect();
        for g in gs.iter().flatten() {
            sq += g
                .to_dtype(candle_core::DType::F64)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()?;
        }
        let grad_norm = sq.sqrt();
        let scale = if self.cfg.grad_clip > 0.0 && grad_norm > self.cfg.grad_clip {
            self.cfg.grad_clip / (grad_norm + 1e-6)
        } else {
            1.0
        };
        self.t += 1;
        let lr = self.lr_at(self.t);
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let bc1 = 1.0 - b1.powi(self.t as i32);
        let bc2 = 1.0 - b2.powi(self.t as i32);
        for (k, g) in gs.into_iter().enumerate() {
            let Some(g) = g else { continue };
            let g = (g * scale)?;
            let p = &self.params[k].1;
            self.m[k] = ((&self.m[k] * b1)? + (&g * (1.0 - b1))?)?;
            self.v[k] = ((&self.v[k] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let mhat = (&self.m[k] * (1.0 / bc1))?;
            let denom = ((&self.v[k] * (1.0 / bc2))?.sqrt()? + self.cfg.eps)?;
            let upd = (mhat / denom)?;
            let decayed = (p.as_tensor() * (1.0 - lr * self.cfg.weight_decay))?;
            p.set(&(decayed - (upd * lr)?)?)?;
        }
        Ok(UpdateStats { lr, grad_norm })
    }

    /// The moments as named tensors (`m.<param>`, `v.<param>`).
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (k, (name, _)) in self.params.iter().enumerate() {
            out.insert(format!("m.{name}"), self.m[k].clone());
            out.insert(format!("v.{name}"), self.v[k].clone());
        }
        out
    }

    /// Restores the moments saved by [`AdamW::state_tensors`] and the update count.
    pub fn restore(
        &mut self,
        t: u64,
        tensors: &HashMap<String, Tensor>,
        origin: &std::path::Path,
    ) -> Result<(), DiffusionError> {
        for (k, (name, p)) in self.params.iter().enumerate() {
            for (prefix, slot) in [("m", &mut self.m[k]), ("v", &mut self.v[k])] {
                let key = format!("{prefix}.{name}");
                let x = tensors.get(&key).ok_or_else(|| DiffusionError::Data {
                    path: origin.to_path_buf(),
                    reason: format!("optimiser state `{key}` missing"),
                })?;
                if x.dims() != p.dims() {
                    return Err(DiffusionError::Data {
                        path: origin.to_path_buf(),
                        reason: format!(
                            "optimiser state `{key}` has shape {:?}, parameter has {:?}",
                            x.dims(),
                            p.dims()
                        ),
                    });
                }
                *slot = x.to_dtype(p.dtype())?.to_device(p.device())?;
            }
        }
        self.t = t;
        Ok(())
    }
}
