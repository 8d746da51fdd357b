//! `pleura reconstruct-baseline`: classical reconstructions of a recording into a
//! reconstruction file (see `pleura::eval::files`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Device;
use ndarray::{Array1, Array3};
use pleura::baseline::das::DasBaseline;
use pleura::baseline::{tikhonov, total_variation};
use pleura::eval::files::Recon;
use pleura::grid::Grid;
use pleura::operator::{MeasurementOperator, OperatorOptions};
use pleura::recording::Recording;

/// Baseline methods.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Method {
    /// Delay-and-sum envelope normalised to [0, 1].
    Das,
    /// Tikhonov-regularised least squares, lambda by the discrepancy principle.
    Tikhonov,
    /// Total-variation-regularised least squares (FISTA).
    Tv,
}

/// Arguments of `pleura reconstruct-baseline`.
#[derive(clap::Args)]
pub struct Args {
    /// The recording (zea layout).
    pub input: PathBuf,
    #[arg(long, value_enum)]
    pub method: Method,
    /// Output reconstruction file.
    #[arg(long)]
    pub out: PathBuf,
    /// Image grid NX,NZ,PITCH_MM,ZMIN_MM (default: the recording's ground-truth grid,
    /// else pleura's default 64 x 64 grid).
    #[arg(long, value_name = "NX,NZ,PITCH_MM,ZMIN_MM")]
    pub grid: Option<String>,
    /// Reconstruct only the first N frames.
    #[arg(long)]
    pub frames: Option<usize>,
}

pub fn run(args: Args) -> Result<()> {
    let rec = Recording::open(&args.input)
        .with_context(|| format!("opening {}", args.input.display()))?;
    let grid = match (&args.grid, rec.ground_truth_grid()) {
        (Some(g), _) => super::simulate::parse_grid(Some(g))?,
        (None, Some((x, z))) => Grid::new(x.to_vec(), z.to_vec())?,
        (None, None) => super::simulate::parse_grid(None)?,
    };
    let n = args.frames.unwrap_or(rec.n_frames()).min(rec.n_frames());
    let scan = rec.scan().clone();
    let mut out = Array3::<f32>::zeros((n, grid.nz(), grid.nx()));
    let mut latency_ms = Array1::<f64>::zeros(n);
    let started = std::time::Instant::now();
    match args.method {
        Method::Das => {
            let mut das = DasBaseline::new(&scan, &grid)?;
            for i in 0..n {
                let t0 = std::time::Instant::now();
                let f = rec.read_frame(i)?;
                out.index_axis_mut(ndarray::Axis(0), i)
                    .assign(&das.reconstruct(f.sequence_number, &f.data)?);
                latency_ms[i] = t0.elapsed().as_secs_f64() * 1e3;
            }
        }
        Method::Tikhonov | Method::Tv => {
            let op =
                MeasurementOperator::new(&scan, &grid, OperatorOptions::default(), &Device::Cpu)?;
            let norm_sq = op.norm_sq(30)?;
            for i in 0..n {
                let t0 = std::time::Instant::now();
                let f = rec.read_frame(i)?;
                let r = match args.method {
                    Method::Tikhonov => tikhonov(&op, &scan, &f.data, norm_sq)?,
                    _ => total_variation(&op, &f.data, norm_sq)?,
                };
                tracing::info!(frame = i, lambda = r.lambda, noise_sigma = ?r.noise_sigma, "reconstructed");
                out.index_axis_mut(ndarray::Axis(0), i).assign(&r.image);
                latency_ms[i] = t0.elapsed().as_secs_f64() * 1e3;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let recon = Recon {
        mean: out,
        std: None,
        aeration_ci: None,
        aeration: None,
        nfe: None,
        latency_ms: Some(latency_ms),
        grid,
        method: format!("{:?}", args.method).to_lowercase(),
        source: args.input.display().to_string(),
    };
    recon
        .write(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "{}: {n} frames by {} in {secs:.1} s ({:.2} s/frame)",
        args.out.display(),
        recon.method,
        secs / n.max(1) as f64
    );
    Ok(())
}
