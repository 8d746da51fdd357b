//! `pleura sample`: unconditional samples of the diffusion prior.

use std::path::PathBuf;

use anyhow::Context;
use pleura::diffusion::checkpoint::Model;
use pleura::diffusion::sampler::{generate, Method, SampleOptions};

/// Sampling algorithm on the command line.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum MethodArg {
    Ddpm,
    Ddim,
}

/// Sampling options shared by `sample` and `eval-prior`.
#[derive(clap::Args)]
pub struct SamplingArgs {
    /// Sampling steps (respaced, 1..=T).
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Seed of the noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sampling algorithm.
    #[arg(long, value_enum, default_value = "ddim")]
    pub method: MethodArg,
    /// DDIM stochasticity (0: deterministic).
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
    /// Images per batch.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Compute device: cpu, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

impl SamplingArgs {
    pub fn options(&self, n: usize) -> SampleOptions {
        SampleOptions {
            n,
            steps: self.steps,
            method: self.method(),
            seed: self.seed,
            batch: self.batch,
        }
    }

    pub fn method(&self) -> Method {
        match self.method {
            MethodArg::Ddpm => Method::Ddpm,
            MethodArg::Ddim => Method::Ddim { eta: self.eta },
        }
    }
}

/// Arguments of `pleura sample`.
#[derive(clap::Args)]
pub struct Args {
    /// Model: a checkpoint directory or a training output directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Number of images.
    #[arg(long)]
    pub n: usize,
    /// Output HDF5 file (`images` (n, h, w) in [0, 1], grids when known).
    #[arg(long)]
    pub out: PathBuf,
    /// Also write `samples.png` (a grid of up to 64 images) into this directory.
    #[arg(long)]
    pub png: Option<PathBuf>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = pleura::device::select(&args.sampling.device)?;
    let model = Model::load(&args.model, &device)
        .with_context(|| format!("cannot load model {}", args.model.display()))?;
    if let Some(dir) = &args.png {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let bar = indicatif::ProgressBar::new(args.n as u64);
    let images = generate(&model, &args.sampling.options(args.n), &device, |d| {
        bar.set_position(d as u64)
    })?;
    bar.finish_and_clear();
    images.save(&args.out)?;
    if let Some(dir) = &args.png {
        images.save_png_grid(&dir.join("samples.png"), 64)?;
    }
    println!("wrote {} samples to {}", args.n, args.out.display());
    Ok(())
}
