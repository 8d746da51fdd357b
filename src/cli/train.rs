//! `pleura train`: train the diffusion prior on simulated aeration images.

use std::path::PathBuf;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use pleura::train::{TrainConfig, Trainer};

/// Arguments of `pleura train`.
#[derive(clap::Args)]
pub struct Args {
    /// HDF5 file with `images` (n, h, w) float32 in [0, 1].
    #[arg(long)]
    pub data: PathBuf,
    /// Output directory: checkpoints, `loss.jsonl`, `samples/`.
    #[arg(long)]
    pub out: PathBuf,
    /// Training configuration (TOML with [model], [schedule], [train]; see
    /// config/train-prior.toml). Defaults to the built-in reference configuration.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Total optimiser steps (overrides train.steps).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Images per step (overrides train.batch_size; ignored with --resume).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Continue the run in --out from its latest checkpoint (a new run when there is none).
    #[arg(long)]
    pub resume: bool,
    /// Compute device: cpu, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg = match &args.config {
        Some(p) => TrainConfig::load(p)?,
        None => TrainConfig::default(),
    };
    if let Some(s) = args.steps {
        cfg.train.steps = s;
    }
    if let Some(b) = args.batch {
        if args.resume {
            tracing::warn!("--batch is ignored with --resume: the run keeps its batch size");
        }
        cfg.train.batch_size = b;
    }
    let device = pleura::device::select(&args.device)?;
    let mut trainer = Trainer::new(&args.data, &args.out, cfg, args.resume, &device)
        .with_context(|| format!("cannot start training on {}", args.data.display()))?;
    let total = trainer.cfg.train.steps;
    let bar = ProgressBar::new(total).with_position(trainer.state.step);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta} {msg}")
            .context("progress bar template")?,
    );
    let start = std::time::Instant::now();
    let first = trainer.state.step;
    let mut last = None;
    trainer.run(|s| {
        bar.set_position(s.step);
        bar.set_message(format!(
            "loss {:.4} lr {:.2e} |g| {:.3}",
            s.loss, s.lr, s.grad_norm
        ));
        last = Some(*s);
    })?;
    bar.finish();
    let secs = start.elapsed().as_secs_f64();
    let done = trainer.state.step - first;
    println!(
        "trained {done} steps in {secs:.1} s ({:.2} steps/s); step {} loss {}; checkpoint in {}",
        done as f64 / secs.max(1e-9),
        trainer.state.step,
        last.map(|s| format!("{:.5}", s.loss))
            .unwrap_or_else(|| "-".into()),
        args.out.display()
    );
    Ok(())
}
