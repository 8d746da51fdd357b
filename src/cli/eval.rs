//! `pleura eval`: metrics of a reconstruction file against the simulated ground truth.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use pleura::eval::files::{evaluate, Recon, Truth};

/// Arguments of `pleura eval`. Table columns: `a_true`/`a_rec`/`|err|`/`cat`: lung mean
/// aeration of truth and reconstruction over the true lung mask, and their categories;
/// `a_pub`/`cat`: the aeration the reconstruction published (over the lung region it found
/// itself) and its category; `ci`: whether its 95 % interval holds `a_true`; `px95`:
/// pixel coverage of mean +- 1.96 std.
#[derive(clap::Args)]
pub struct Args {
    /// The reconstruction file (`pleura/recon/mean`, ...).
    pub recon: PathBuf,
    /// The simulated recording with `pleura/aeration` (default: the recon's `source`).
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into())
}

pub fn run(args: Args) -> Result<()> {
    let recon =
        Recon::read(&args.recon).with_context(|| format!("reading {}", args.recon.display()))?;
    let truth_path = match args.truth {
        Some(p) => p,
        None if !recon.source.is_empty() => PathBuf::from(&recon.source),
        None => bail!(
            "{} names no source recording: pass --truth",
            args.recon.display()
        ),
    };
    let truth =
        Truth::read(&truth_path).with_context(|| format!("reading {}", truth_path.display()))?;
    let s = evaluate(&recon, &truth)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!(
        "{:>5} {:>8} {:>6} {:>7} {:>7} {:>7} {:>5} {:>7} {:>5} {:>6} {:>6} {:>5} {:>8}",
        "frame",
        "PSNR dB",
        "SSIM",
        "a_true",
        "a_rec",
        "|err|",
        "cat",
        "a_pub",
        "cat",
        "ci",
        "px95",
        "NFE",
        "s"
    );
    for f in &s.frames {
        println!(
            "{:>5} {:>8.2} {:>6.3} {:>7.3} {:>7.3} {:>7.3} {:>2}/{:<2} {:>7} {:>5} {:>6} {:>6} {:>5} {:>8}",
            f.frame,
            f.psnr_db,
            f.ssim,
            f.mean_aeration_truth,
            f.mean_aeration_recon,
            f.mean_aeration_abs_error,
            f.category_truth,
            f.category_recon,
            opt(f.published_aeration),
            f.published_category
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            f.mean_ci_covers
                .map(|c| if c { "yes" } else { "no" })
                .unwrap_or("-"),
            opt(f.pixel_coverage_95),
            f.nfe.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
            opt(f.seconds)
        );
    }
    println!(
        "total: PSNR {:.2} dB, SSIM {:.3}, mean-aeration MAE {:.3}, category accuracy {:.3}, published aeration MAE {}, published category accuracy {}, CI coverage {}, pixel coverage {}, NFE/frame {}, s/frame {}",
        s.mean_psnr_db,
        s.mean_ssim,
        s.mean_aeration_mae,
        s.category_accuracy,
        opt(s.published_aeration_mae),
        opt(s.published_category_accuracy),
        opt(s.mean_ci_coverage),
        opt(s.pixel_coverage_95),
        s.nfe_per_frame
            .map(|n| format!("{n:.1}"))
            .unwrap_or_else(|| "-".into()),
        opt(s.seconds_per_frame)
    );
    if !s.failed_frames.is_empty() {
        println!("failed frames (left out): {:?}", s.failed_frames);
    }
    Ok(())
}
