//! `pleura eval-prior`: memorisation check and aeration statistics of the prior.

use std::path::PathBuf;

use anyhow::Context;
use pleura::diffusion::checkpoint::Model;
use pleura::diffusion::data::ImageSet;
use pleura::diffusion::eval::{evaluate, Summary, QUANTILE_LEVELS};
use pleura::diffusion::sampler::generate;

/// Arguments of `pleura eval-prior`.
#[derive(clap::Args)]
pub struct Args {
    /// Model: a checkpoint directory or a training output directory.
    #[arg(long)]
    pub model: PathBuf,
    /// The training images (HDF5 `images`).
    #[arg(long)]
    pub data: PathBuf,
    /// Number of images to generate.
    #[arg(long, default_value_t = 64)]
    pub n: usize,
    /// Use these already generated images (HDF5 `images`) instead of sampling.
    #[arg(long)]
    pub samples: Option<PathBuf>,
    /// Average-pooling block of the feature space (pixels).
    #[arg(long, default_value_t = 4)]
    pub pool: usize,
    /// Also write the full report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub sampling: super::sample::SamplingArgs,
}

fn row(name: &str, s: &Summary) -> String {
    let q: Vec<String> = s.quantiles.iter().map(|v| format!("{v:.4}")).collect();
    format!("{name:<16} {:>5} {:>8.4}  {}", s.n, s.mean, q.join(" "))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let train = ImageSet::load(&args.data)?;
    let generated = match &args.samples {
        Some(p) => ImageSet::load(p)?,
        None => {
            let device = pleura::device::select(&args.sampling.device)?;
            let model = Model::load(&args.model, &device)
                .with_context(|| format!("cannot load model {}", args.model.display()))?;
            generate(&model, &args.sampling.options(args.n), &device, |_| {})?
        }
    };
    let r = evaluate(&train, &generated, args.pool)?;
    println!(
        "nearest-training-image distance (RMS of {p}x{p}-pooled aeration), {} generated vs {} training images",
        r.n_generated,
        r.n_train,
        p = r.pool
    );
    let levels: Vec<String> = QUANTILE_LEVELS
        .iter()
        .map(|q| format!("q{:<5}", (q * 100.0).round()))
        .collect();
    println!(
        "{:<16} {:>5} {:>8}  {}",
        "set",
        "n",
        "mean",
        levels.join(" ")
    );
    println!("{}", row("generated", &r.nearest));
    for (name, s) in &r.nearest_by_category {
        println!("{}", row(&format!("  aeration {name}"), s));
    }
    println!("{}", row("train baseline", &r.train_baseline));
    println!(
        "histogram of generated distances (bin edges {:.4}..{:.4}): {:?}",
        r.nearest.edges[0],
        r.nearest.edges[r.nearest.edges.len() - 1],
        r.nearest.counts
    );
    let (t, g) = (&r.train_aeration, &r.generated_aeration);
    println!(
        "mean aeration     train {:.4} (sd {:.4})  generated {:.4} (sd {:.4})",
        t.mean, t.std, g.mean, g.std
    );
    println!(
        "category fraction train {:.3}/{:.3}/{:.3}  generated {:.3}/{:.3}/{:.3}  (0-60/60-85/85-100 %)",
        t.fractions[0], t.fractions[1], t.fractions[2], g.fractions[0], g.fractions[1], g.fractions[2]
    );
    println!("KS statistic of mean aeration: {:.4}", r.aeration_ks);
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&r)?)
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}
