//! Training of the diffusion prior: the simple DDPM objective (Ho et al. 2020, eq. 14:
//! `|| eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t) ||^2`, t uniform),
//! AdamW with warm-up and global-norm clipping ([`adamw`]), an exponential moving average
//! of the weights, atomic checkpoints and bit-exact resumption.
//!
//! Determinism: the order of the training images in epoch `e` is a shuffle seeded by
//! `(seed, e)`, and step `s` draws its timesteps, noise and dropout masks from a generator
//! seeded by `(seed, s)`. The whole random state of a run is therefore its seed and step
//! count, which the checkpoint stores with the optimiser moments; a resumed run repeats the
//! uninterrupted one exactly.
//!
//! Precision: weights, optimiser state and EMA are f32. With `precision = "bf16"` the
//! U-Net's activations are bf16 (mixed precision, for CUDA); `"auto"` picks bf16 on CUDA
//! and f32 on the CPU, where bf16 brings no speed.

pub mod adamw;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::diffusion::checkpoint::{self, Model, ModelSpec};
use crate::diffusion::data::ImageSet;
use crate::diffusion::sampler::{Method, NoiseRng, Sampler};
use crate::diffusion::schedule::ScheduleConfig;
use crate::diffusion::unet::UNetConfig;
use crate::diffusion::DiffusionError;
use adamw::{AdamW, AdamWConfig};

/// Activation precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// bf16 on CUDA, f32 on the CPU.
    Auto,
    F32,
    Bf16,
}

/// `[train]`: the optimisation run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainParams {
    /// Total optimiser steps of the run.
    pub steps: u64,
    /// Images per step.
    pub batch_size: usize,
    /// Seed of initialisation, data order and noise.
    pub seed: u64,
    /// EMA decay per step: `ema = rate ema + (1 - rate) w`.
    pub ema_rate: f64,
    /// Write a checkpoint every this many steps (and at the end).
    pub checkpoint_every: u64,
    /// Write a PNG grid of EMA samples every this many steps (0: never).
    pub sample_every: u64,
    /// Images in the sample grid.
    pub sample_count: usize,
    /// DDIM steps for the sample grid.
    pub sample_steps: usize,
    pub precision: Precision,
    pub optimizer: AdamWConfig,
}

impl Default for TrainParams {
    /// EMA 0.999 rather than improved-diffusion's 0.9999: runs here are thousands of
    /// steps, not hundreds of thousands, and the average must forget the initialisation.
    fn default() -> Self {
        Self {
            steps: 2000,
            batch_size: 16,
            seed: 0,
            ema_rate: 0.999,
            checkpoint_every: 500,
            sample_every: 500,
            sample_count: 16,
            sample_steps: 25,
            precision: Precision::Auto,
            optimizer: AdamWConfig::default(),
        }
    }
}

/// A training configuration file (TOML): `[model]`, `[schedule]`, `[train]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub model: UNetConfig,
    pub schedule: ScheduleConfig,
    pub train: TrainParams,
}

impl TrainConfig {
    /// Reads a TOML configuration; unknown keys are errors naming the key.
    pub fn load(path: &Path) -> Result<Self, DiffusionError> {
        let text = std::fs::read_to_string(path).map_err(DiffusionError::io(path))?;
        toml::from_str(&text).map_err(|e| DiffusionError::Data {
            path: path.to_path_buf(),
            reason: format!("invalid training configuration: {e}"),
        })
    }

    fn validate(&self) -> Result<(), DiffusionError> {
        self.model.validate()?;
        let t = &self.train;
        let bad = |field: &'static str, value: String, reason: &str| {
            Err(DiffusionError::Config {
                field,
                value,
                reason: reason.into(),
            })
        };
        if t.batch_size == 0 {
            return bad("train.batch_size", "0".into(), "must be >= 1");
        }
        if !(0.0..1.0).contains(&t.ema_rate) {
            return bad(
                "train.ema_rate",
                t.ema_rate.to_string(),
                "must be in [0, 1)",
            );
        }
        if t.checkpoint_every == 0 {
            return bad("train.checkpoint_every", "0".into(), "must be >= 1");
        }
        if t.sample_steps == 0 || t.sample_steps > self.schedule.steps {
            return bad(
                "train.sample_steps",
                t.sample_steps.to_string(),
                "must be in 1..=schedule.steps",
            );
        }
        if t.optimizer.lr.is_nan() || t.optimizer.lr <= 0.0 {
            return bad(
                "train.optimizer.lr",
                t.optimizer.lr.to_string(),
                "must be > 0",
            );
        }
        Ok(())
    }
}

/// Mutable state of a run, saved as `state.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainState {
    /// Steps done.
    pub step: u64,
    /// Images consumed (`step * batch_size`): position in the seeded data order.
    pub data_pos: u64,
    /// Optimiser updates done.
    pub adam_t: u64,
    /// Seed of the run (with `step`, the whole random state).
    pub seed: u64,
}

/// One line of `loss.jsonl`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
}

fn mix(a: u64, b: u64) -> u64 {
    // SplitMix64 finaliser of a combination: decorrelates seeds of nearby (seed, index).
    let mut z = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_add(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A training run.
pub struct Trainer {
    pub cfg: TrainConfig,
    pub out: PathBuf,
    pub data: ImageSet,
    pub model: Model,
    pub ema: Model,
    pub opt: AdamW,
    pub state: TrainState,
    device: Device,
    compute: DType,
    epoch_cache: Option<(u64, Vec<usize>)>,
}

impl Trainer {
    /// Validates everything (configuration, data, output directory) and builds the run,
    /// from scratch or, with `resume`, from the latest checkpoint in `out` (whose
    /// configuration then wins; `steps` still sets the total).
    pub fn new(
        data: &Path,
        out: &Path,
        cfg: TrainConfig,
        resume: bool,
        device: &Device,
    ) -> Result<Self, DiffusionError> {
        let mut cfg = cfg;
        let has_ckpt = out.join("latest").exists();
        let mut resume_from = None;
        if resume && has_ckpt {
            let ck = checkpoint::resolve(out)?;
            let mut saved: TrainConfig = checkpoint::read_json(&ck.join("train.json"))?;
            saved.train.steps = cfg.train.steps;
            cfg = saved;
            resume_from = Some(ck);
        } else if has_ckpt {
            return Err(DiffusionError::Data {
                path: out.to_path_buf(),
                reason: "already holds a training run; pass --resume to continue it or choose another directory".into(),
            });
        }
        cfg.validate()?;
        let images = ImageSet::load(data)?;
        let m = &cfg.model;
        if images.h != m.image_size || images.w != m.image_size || m.in_channels != 1 {
            return Err(DiffusionError::Data {
                path: data.to_path_buf(),
                reason: format!(
                    "images are {}x{} but the model takes {}x{} with {} channel(s); set model.image_size",
                    images.h, images.w, m.image_size, m.image_size, m.in_channels
                ),
            });
        }
        std::fs::create_dir_all(out).map_err(DiffusionError::io(out))?;
        let probe = out.join(".write-test");
        std::fs::write(&probe, b"").map_err(DiffusionError::io(&probe))?;
        std::fs::remove_file(&probe).map_err(DiffusionError::io(&probe))?;

        let spec = ModelSpec {
            model: cfg.model.clone(),
            schedule: cfg.schedule,
            grid_x: images.grid_x.clone(),
            grid_z: images.grid_z.clone(),
        };
        let model = Model::new(spec.clone(), cfg.train.seed, device)?;
        let ema = Model::new(spec, cfg.train.seed, device)?;
        let params: HashMap<String, Var> = model
            .varmap
            .data()
            .lock()
            .map_err(|_| DiffusionError::Poisoned)?
            .clone();
        let opt = AdamW::new(cfg.train.optimizer, params)?;
        let compute = match (cfg.train.precision, device.is_cuda()) {
            (Precision::Bf16, _) | (Precision::Auto, true) => DType::BF16,
            _ => DType::F32,
        };
        let mut tr = Self {
            state: TrainState {
                step: 0,
                data_pos: 0,
                adam_t: 0,
                seed: cfg.train.seed,
            },
            cfg,
            out: out.to_path_buf(),
            data: images,
            model,
            ema,
            opt,
            device: device.clone(),
            compute,
            epoch_cache: None,
        };
        if let Some(ck) = resume_from {
            tr.restore(&ck)?;
        } else {
            tr.truncate_log(0)?;
        }
        tracing::info!(
            params = crate::diffusion::unet::param_count(&tr.model.varmap),
            images = tr.data.n,
            precision = ?tr.compute,
            step = tr.state.step,
            "training set up"
        );
        Ok(tr)
    }

    fn restore(&mut self, ck: &Path) -> Result<(), DiffusionError> {
        let state: TrainState = checkpoint::read_json(&ck.join("state.json"))?;
        let w = ck.join("model.safetensors");
        self.model
            .set_tensors(&checkpoint::load_safetensors(&w, &self.device)?, &w)?;
        let e = ck.join("ema.safetensors");
        self.ema
            .set_tensors(&checkpoint::load_safetensors(&e, &self.device)?, &e)?;
        let o = ck.join("optimizer.safetensors");
        self.opt.restore(
            state.adam_t,
            &checkpoint::load_safetensors(&o, &self.device)?,
            &o,
        )?;
        self.truncate_log(state.step)?;
        tracing::info!(step = state.step, checkpoint = %ck.display(), "resumed");
        self.state = state;
        Ok(())
    }

    /// Keeps the lines of `loss.jsonl` up to `step` (a resumed run rewrites the rest).
    fn truncate_log(&self, step: u64) -> Result<(), DiffusionError> {
        let path = self.out.join("loss.jsonl");
        let kept: String = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .filter(|l| {
                    serde_json::from_str::<StepStats>(l)
                        .map(|s| s.step <= step)
                        .unwrap_or(false)
                })
                .map(|l| format!("{l}\n"))
                .collect(),
            Err(_) => String::new(),
        };
        std::fs::write(&path, kept).map_err(DiffusionError::io(&path))
    }

    /// Index of the training image at position `pos` of the seeded data order.
    fn data_index(&mut self, pos: u64) -> usize {
        let n = self.data.n as u64;
        let epoch = pos / n;
        if self.epoch_cache.as_ref().map(|c| c.0) != Some(epoch) {
            let mut perm: Vec<usize> = (0..self.data.n).collect();
            perm.shuffle(&mut StdRng::seed_from_u64(mix(
                mix(self.state.seed, 0xDA7A),
                epoch,
            )));
            self.epoch_cache = Some((epoch, perm));
        }
        match &self.epoch_cache {
            Some((_, perm)) => perm[(pos % n) as usize],
            None => 0,
        }
    }

    /// The simple loss on images `idx` with timesteps and noise drawn from `rng`.
    fn loss(&self, idx: &[usize], rng: &mut StdRng, train: bool) -> Result<Tensor, DiffusionError> {
        let b = idx.len();
        let x0 = self.data.batch(idx, &self.device)?;
        let sched = &self.model.schedule;
        let ts: Vec<usize> = (0..b).map(|_| rng.random_range(0..sched.len())).collect();
        let mut noise = NoiseRng::new(rng.random());
        let eps = noise.normal(x0.dims(), &self.device, DType::F32)?;
        let (ca, cb): (Vec<f32>, Vec<f32>) = ts
            .iter()
            .map(|&t| {
                let (a, s) = sched.q_sample_coefs(t);
                (a as f32, s as f32)
            })
            .unzip();
        let ca = Tensor::from_vec(ca, (b, 1, 1, 1), &self.device)?;
        let cb = Tensor::from_vec(cb, (b, 1, 1, 1), &self.device)?;
        let xt = (x0.broadcast_mul(&ca)? + eps.broadcast_mul(&cb)?)?;
        let tt = Tensor::from_vec(
            ts.iter().map(|&t| t as f32).collect::<Vec<_>>(),
            b,
            &self.device,
        )?;
        let mut drop_rng = StdRng::seed_from_u64(rng.random());
        let pred = self.model.unet.forward_train(
            &xt.to_dtype(self.compute)?,
            &tt,
            if train { Some(&mut drop_rng) } else { None },
        )?;
        Ok((pred.to_dtype(DType::F32)? - eps)?.sqr()?.mean_all()?)
    }

    /// The loss of the current weights on the first `b` training images with timesteps and
    /// noise drawn from `seed`: a fixed yardstick of progress.
    pub fn eval_loss(&self, b: usize, seed: u64) -> Result<f64, DiffusionError> {
        let idx: Vec<usize> = (0..b.min(self.data.n)).collect();
        let mut rng = StdRng::seed_from_u64(seed);
        Ok(self.loss(&idx, &mut rng, false)?.to_scalar::<f32>()? as f64)
    }

    /// One optimisation step; appends it to `loss.jsonl`.
    pub fn step(&mut self) -> Result<StepStats, DiffusionError> {
        let b = self.cfg.train.batch_size;
        let idx: Vec<usize> = (0..b as u64)
            .map(|k| self.data_index(self.state.data_pos + k))
            .collect();
        let mut rng = StdRng::seed_from_u64(mix(self.state.seed, self.state.step));
        let loss = self.loss(&idx, &mut rng, true)?;
        let grads = loss.backward()?;
        let upd = self.opt.step(&grads)?;
        self.update_ema()?;
        self.state.step += 1;
        self.state.data_pos += b as u64;
        self.state.adam_t = self.opt.t;
        let stats = StepStats {
            step: self.state.step,
            loss: loss.to_scalar::<f32>()? as f64,
            lr: upd.lr,
            grad_norm: upd.grad_norm,
        };
        let path = self.out.join("loss.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(DiffusionError::io(&path))?;
        let line = serde_json::to_string(&stats).map_err(|source| DiffusionError::Json {
            path: path.clone(),
            source,
        })?;
        writeln!(f, "{line}").map_err(DiffusionError::io(&path))?;
        Ok(stats)
    }

    fn update_ema(&self) -> Result<(), DiffusionError> {
        let r = self.cfg.train.ema_rate;
        let w = self
            .model
            .varmap
            .data()
            .lock()
            .map_err(|_| DiffusionError::Poisoned)?;
        let e = self
            .ema
            .varmap
            .data()
            .lock()
            .map_err(|_| DiffusionError::Poisoned)?;
        for (name, ev) in e.iter() {
            if let Some(wv) = w.get(name) {
                ev.set(&((ev.as_tensor() * r)? + (wv.as_tensor() * (1.0 - r))?)?)?;
            }
        }
        Ok(())
    }

    /// Writes a checkpoint of the current state (atomically, see [`checkpoint`]).
    pub fn save_checkpoint(&self) -> Result<PathBuf, DiffusionError> {
        checkpoint::write_checkpoint(&self.out, self.state.step, |dir| {
            checkpoint::write_json(&dir.join("config.json"), &self.model.spec)?;
            checkpoint::write_json(&dir.join("train.json"), &self.cfg)?;
            checkpoint::write_json(&dir.join("state.json"), &self.state)?;
            checkpoint::save_safetensors(&dir.join("model.safetensors"), &self.model.tensors()?)?;
            checkpoint::save_safetensors(&dir.join("ema.safetensors"), &self.ema.tensors()?)?;
            checkpoint::save_safetensors(
                &dir.join("optimizer.safetensors"),
                &self.opt.state_tensors(),
            )
        })
    }

    /// Writes `samples/step-<step>.png`: a grid of DDIM samples of the EMA model.
    pub fn save_samples(&self) -> Result<PathBuf, DiffusionError> {
        let p = &self.cfg.train;
        let sampler = Sampler::new(
            &self.ema.unet,
            &self.ema.schedule,
            p.sample_steps,
            &self.device,
            DType::F32,
        )?;
        let mut rng = NoiseRng::new(mix(p.seed, 0x5A3B1E));
        let x = sampler.sample(p.sample_count, Method::Ddim { eta: 0.0 }, &mut rng, |_| {})?;
        let dir = self.out.join("samples");
        std::fs::create_dir_all(&dir).map_err(DiffusionError::io(&dir))?;
        let path = dir.join(format!("step-{:08}.png", self.state.step));
        ImageSet::from_model_tensor(&x)?.save_png_grid(&path, p.sample_count)?;
        Ok(path)
    }

    /// Trains up to `cfg.train.steps`, checkpointing and sampling on schedule; `on_step`
    /// sees every step.
    pub fn run(&mut self, mut on_step: impl FnMut(&StepStats)) -> Result<(), DiffusionError> {
        let p = self.cfg.train.clone();
        while self.state.step < p.steps {
            let s = self.step()?;
            on_step(&s);
            if s.step % p.checkpoint_every == 0 || s.step == p.steps {
                self.save_checkpoint()?;
            }
            if p.sample_every > 0 && (s.step % p.sample_every == 0 || s.step == p.steps) {
                self.save_samples()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_is_the_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/train-prior.toml");
        assert_eq!(TrainConfig::load(&path).unwrap(), TrainConfig::default());
        let err = toml::from_str::<TrainConfig>("[train]\nbatch = 3\n").unwrap_err();
        assert!(err.to_string().contains("batch"), "{err}");
    }

    #[test]
    fn seeds_of_nearby_indices_differ() {
        assert_ne!(mix(0, 0), mix(0, 1));
        assert_ne!(mix(0, 1), mix(1, 0));
    }
}
