//! `pleura replay`: reconstruct every frame of a recording offline by posterior sampling
//! and write the results (and optionally one PNG panel per frame and the aeration trend,
//! rendered by [`pleura::render`]).
//!
//! The stage is the daemon's `posterior` stage, built by the same [`pleura::pipeline::build`]
//! from the configuration's `[daemon]` and `[sampler]` (this command's flags override the
//! model, device and sampler settings): DAS beamforming onto the scan's grid
//! (`pleura::pipeline::posterior::ScanGrid`: the model's grid when the scan fits it; shown as
//! B-mode and stored as `recon/das`), posterior sampling (`pleura::posterior`), summary
//! statistics. A frame the stage fails on is a failed row with the reason the daemon
//! publishes for it.
//! Output datasets (F frames, nz x nx grid), under `pleura/` (`recon/` below stands for
//! `pleura/recon/`):
//! `recon/mean`, `recon/std` (F, nz, nx) float32 (NaN for failed frames);
//! `recon/aeration` (F) float64, the lung's mean aeration; `recon/aeration_ci` (F, 2)
//! float64; `recon/lung_fraction` (F) float64 (pixels in the lung region, 0: no pleural line);
//! `recon/aeration_sd` (F) float64 (the samples' spread of the lung mean, unscaled) and
//! `recon/boundary_sd` (F) float64 (its uncertainty from the lung boundary), the two parts
//! of the interval (`pleura::posterior::frame`);
//! `recon/category` (F) uint8 (0: < 60 %, 1: 60-85 %, 2: >= 85 %, 255: failed);
//! `recon/das` (F, nz, nx) float32 (envelope / its frame maximum, in [0, 1]);
//! `recon/latency_ms` (F) float64 (DAS + sampling of the frame);
//! `recon/residual` (F) float64 (relative data residual of the mean);
//! `recon/noise_sigma` (F) float64 (data units); `recon/misfit` (F) float64 (the residual
//! over the noise's), `recon/model_error` (F) float64 (data units) and `recon/poor_fit` (F)
//! uint8 (1: the operator did not explain the data; docs/reconstruction.md, "Model error"),
//! `recon/data_term` (F) strings (rf / echo: what the estimate fitted, "Echo power");
//! `recon/nfe` (F) uint32;
//! `recon/start` (F) strings (cold / warm / scene-change); `recon/restarts` (F) uint32;
//! `recon/zeta` (F) float64 (the DPS step size of the draw published, halved per redraw
//! of samples that did not fit the data; NaN for DDS and failed frames);
//! `recon/failed` (F) uint8 and `recon/failed_reason` (F) strings (empty when not failed);
//! `recon/grid_x` (nx), `recon/grid_z` (nz) float64, m.
//! Attributes (of `pleura/recon`): `method`, `source`, `model`, `model_sha256`, `sampler` (the sampler
//! settings as JSON), `operator_norm`, `device`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use ndarray::{Array1, Array2, Array3};
use sha2::{Digest, Sha256};

use pleura::config::StageKind;
use pleura::diffusion::checkpoint;
use pleura::eval::files::{ReconWriter, Truth};
use pleura::grid::Grid;
use pleura::logging::Chain;
use pleura::pipeline::{self, FrameInput, StageSpec};
use pleura::posterior::frame::{DataTerm, FrameOutcome};
use pleura::posterior::Method;
use pleura::render::{
    self, Estimate, FrameLabel, PanelInput, PoorFit, Reconstruction, TrendPoint, TrendValue,
};

/// Arguments of `pleura replay`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub recording: super::RecordingArgs,
    /// Output HDF5 file (replaced).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub stage: super::StageArgs,
    /// Sampler: dps, ddim-dps or dds.
    #[arg(long)]
    pub sampler: Option<Method>,
    /// Reverse steps of a cold start.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Calibration file of the echo data term (`pleura calibrate`); overrides
    /// `[sampler] calibration`.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Posterior samples per frame.
    #[arg(long)]
    pub samples: Option<usize>,
    /// Seed of the sampling noise.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write one PNG panel per frame into this directory (B-mode | reconstruction |
    /// uncertainty | ground truth when the file has it, with axes, colour bars and the
    /// published aeration) and the aeration trend of the replay, `aeration.png`.
    #[arg(long)]
    pub png: Option<PathBuf>,
    /// Reconstruct at most this many frames (from the first).
    #[arg(long)]
    pub max_frames: Option<usize>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = super::config_or_defaults(&args.stage.config)?;
    let mut cfg = config.sampler.clone();
    if let Some(m) = args.sampler {
        cfg.method = m;
    }
    if let Some(s) = args.steps {
        cfg.steps = s;
    }
    if let Some(path) = &args.calibration {
        cfg.calibration = Some(path.clone());
    }
    if let Some(k) = args.samples {
        cfg.samples = k;
    }
    if let Some(s) = args.seed {
        cfg.seed = s;
    }
    cfg.validate()?;

    let model_hash = model_sha256(&args.stage.model)?;
    let rec = args.recording.open()?;
    let spec = StageSpec {
        kind: StageKind::Posterior,
        model: args.stage.model.clone(),
        device: args.stage.device.clone(),
        sampler: cfg.clone(),
        ..StageSpec::offline(&config)?
    };
    let mut stage = pipeline::build(&spec)?;
    let scan = Arc::new(rec.scan().clone());
    stage.prepare(0, &scan).with_context(|| {
        format!(
            "{} cannot be reconstructed on a grid for the model",
            args.recording.input.display()
        )
    })?;
    let grid = stage
        .grid()
        .context("the posterior stage gave no grid for the scan it prepared")?;
    let mut operator_norm = f64::NAN;

    let truth_ok = rec
        .ground_truth_grid()
        .is_some_and(|(x, z)| same_axis(x, &grid.x) && same_axis(z, &grid.z));
    if rec.has_ground_truth() && !truth_ok {
        tracing::warn!("ground truth is on another grid: PNG panels omit it");
    }
    let n = args
        .max_frames
        .map_or(rec.n_frames(), |m| m.min(rec.n_frames()));
    if let Some(dir) = &args.png {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // The truth's lung mean aeration per frame, for the trend, as `pleura eval` scores it.
    let truth_aeration: Vec<f64> = if args.png.is_some() && truth_ok {
        let truth = Truth::read(&args.recording.input)?;
        (0..n)
            .map_while(|i| pleura::eval::truth_lung_aeration(&truth, i))
            .collect()
    } else {
        Vec::new()
    };
    let mut trend = Vec::with_capacity(n);
    let mut first_timestamp = None;
    let (nz, nx) = (grid.nz(), grid.nx());
    let mut out = Output::new(n, nz, nx);
    let bar = indicatif::ProgressBar::new(n as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} frames {per_sec} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    for f in 0..n {
        let t0 = Instant::now();
        let frame = rec.read_frame(f)?;
        let output = stage.process(&FrameInput::recorded(&scan, &frame));
        let result = match output {
            Ok(pipeline::Output::Posterior(p)) => p,
            Ok(other) => anyhow::bail!("the posterior stage gave {other:?}"),
            // What the daemon publishes as the reason (the stage's typed error, whole).
            Err(e) => pleura::pipeline::posterior::PosteriorFrame {
                das: Array2::zeros((nz, nx)),
                outcome: FrameOutcome::Failed {
                    reason: Chain(&e).to_string(),
                    attempts: 0,
                },
                grid: grid.clone(),
                operator_norm: f64::NAN,
            },
        };
        let latency = t0.elapsed().as_secs_f64() * 1e3;
        out.das
            .index_axis_mut(ndarray::Axis(0), f)
            .assign(&result.das);
        out.latency_ms[f] = latency;
        if result.operator_norm.is_finite() {
            operator_norm = result.operator_norm;
        }
        match &result.outcome {
            FrameOutcome::Done(e) => {
                out.mean.index_axis_mut(ndarray::Axis(0), f).assign(&e.mean);
                out.std.index_axis_mut(ndarray::Axis(0), f).assign(&e.std);
                out.aeration[f] = e.aeration;
                out.lung_fraction[f] = e.lung_fraction;
                out.aeration_sd[f] = e.aeration_sd;
                out.boundary_sd[f] = e.boundary_sd;
                out.ci[[f, 0]] = e.aeration_ci[0];
                out.ci[[f, 1]] = e.aeration_ci[1];
                out.category[f] = e.category;
                out.residual[f] = e.residual;
                out.noise_sigma[f] = e.noise_sigma;
                out.misfit[f] = e.misfit;
                out.model_error[f] = e.model_error;
                out.poor_fit[f] = e.poor_fit as u8;
                out.data_term[f] = e.data_term.name().to_string();
                out.nfe[f] = e.nfe as u32;
                out.restarts[f] = e.restarts as u32;
                out.zeta[f] = e.zeta.unwrap_or(f64::NAN);
                out.start[f] = e.start.name().to_string();
                bar.set_message(format!(
                    "aeration {:.0} % [{:.0}, {:.0}]",
                    100.0 * e.aeration,
                    100.0 * e.aeration_ci[0],
                    100.0 * e.aeration_ci[1]
                ));
            }
            FrameOutcome::Failed { reason, attempts } => {
                tracing::error!(frame = f, attempts, %reason, "frame failed");
                out.failed[f] = 1;
                out.reason[f] = reason.clone();
                out.restarts[f] = attempts.saturating_sub(1) as u32;
            }
        }
        if let Some(dir) = &args.png {
            let t0 = *first_timestamp.get_or_insert(frame.timestamp_ns);
            let gt = if truth_ok {
                rec.read_ground_truth_frame(f)?
            } else {
                None
            };
            let (reconstruction, value) = match &result.outcome {
                FrameOutcome::Done(e) => (
                    Reconstruction::Estimate(Estimate {
                        mean: e.mean.view(),
                        std: e.std.view(),
                        aeration: e.aeration,
                        ci: e.aeration_ci,
                        category: e.category,
                        poor_fit: e.poor_fit.then_some(PoorFit {
                            misfit: e.misfit,
                            echo: e.data_term == DataTerm::Echo,
                        }),
                    }),
                    TrendValue::Estimate {
                        aeration: e.aeration,
                        ci: e.aeration_ci,
                    },
                ),
                FrameOutcome::Failed { reason, .. } => {
                    (Reconstruction::Failed(reason.as_str()), TrendValue::Failed)
                }
            };
            let png = render::panel_png(&PanelInput {
                grid_x: &grid.x,
                grid_z: &grid.z,
                envelope: Some(result.das.view()),
                reconstruction,
                truth: gt.as_ref().map(|t| t.view()),
                label: FrameLabel {
                    stream: None,
                    frame: f as u64,
                    time_s: frame.timestamp_ns.saturating_sub(t0) as f64 * 1e-9,
                },
            })?;
            render::write_png(&dir.join(format!("frame_{f:05}.png")), &png)?;
            trend.push(TrendPoint {
                frame: f as u64,
                timestamp_ns: frame.timestamp_ns,
                value,
                truth: truth_aeration.get(f).copied(),
            });
        }
        bar.inc(1);
    }
    bar.finish();
    if let Some(dir) = &args.png {
        let name = args.recording.input.file_name().map_or_else(
            || args.recording.input.display().to_string(),
            |s| s.to_string_lossy().into(),
        );
        let png = render::trend_png(&trend, &format!("Lung aeration, {name}"))?;
        render::write_png(&dir.join("aeration.png"), &png)?;
    }

    let attrs = Attrs {
        method: format!("posterior sampling ({})", cfg.method),
        source: args.recording.input.display().to_string(),
        model: args.stage.model.display().to_string(),
        model_sha256: model_hash,
        sampler: serde_json::to_string(&cfg)?,
        calibration: match stage.calibration() {
            Some((_, c)) => serde_json::to_string(c)?,
            None => String::new(),
        },
        operator_norm,
        device: stage.device(),
    };
    out.write(&args.out, &grid, &attrs)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let failed = out.failed.iter().filter(|v| **v != 0).count();
    let poor = out.poor_fit.iter().filter(|v| **v != 0).count();
    let total_ms: f64 = out.latency_ms.iter().sum();
    println!(
        "{n} frames ({failed} failed, {poor} poor fits) in {:.1} s, {:.2} frames/s, {} -> {}",
        total_ms / 1e3,
        n as f64 / (total_ms / 1e3).max(1e-9),
        args.recording.input.display(),
        args.out.display()
    );
    Ok(())
}

/// Same pixel centres to 1 nm (grids read back from JSON may differ in the last bit).
fn same_axis(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(u, v)| (u - v).abs() < 1e-9)
}

/// SHA-256 of the model's `config.json` followed by its weights file.
fn model_sha256(dir: &Path) -> anyhow::Result<String> {
    let ckpt = checkpoint::resolve(dir)?;
    let mut h = Sha256::new();
    for name in ["config.json", "ema.safetensors", "model.safetensors"] {
        let p = ckpt.join(name);
        if p.exists() {
            let bytes =
                std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
            h.update(&bytes);
            if name != "config.json" {
                break;
            }
        }
    }
    Ok(h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>())
}

struct Attrs {
    method: String,
    source: String,
    model: String,
    model_sha256: String,
    sampler: String,
    /// The echo-power calibration in force (JSON), empty without one.
    calibration: String,
    operator_norm: f64,
    device: String,
}

struct Output {
    mean: Array3<f32>,
    std: Array3<f32>,
    das: Array3<f32>,
    aeration: Array1<f64>,
    lung_fraction: Array1<f64>,
    aeration_sd: Array1<f64>,
    boundary_sd: Array1<f64>,
    ci: Array2<f64>,
    category: Array1<u8>,
    latency_ms: Array1<f64>,
    residual: Array1<f64>,
    noise_sigma: Array1<f64>,
    misfit: Array1<f64>,
    model_error: Array1<f64>,
    poor_fit: Array1<u8>,
    data_term: Vec<String>,
    nfe: Array1<u32>,
    restarts: Array1<u32>,
    zeta: Array1<f64>,
    failed: Array1<u8>,
    start: Vec<String>,
    reason: Vec<String>,
}

impl Output {
    fn new(n: usize, nz: usize, nx: usize) -> Self {
        Self {
            mean: Array3::from_elem((n, nz, nx), f32::NAN),
            std: Array3::from_elem((n, nz, nx), f32::NAN),
            das: Array3::zeros((n, nz, nx)),
            aeration: Array1::from_elem(n, f64::NAN),
            lung_fraction: Array1::from_elem(n, f64::NAN),
            aeration_sd: Array1::from_elem(n, f64::NAN),
            boundary_sd: Array1::from_elem(n, f64::NAN),
            ci: Array2::from_elem((n, 2), f64::NAN),
            category: Array1::from_elem(n, u8::MAX),
            latency_ms: Array1::zeros(n),
            residual: Array1::from_elem(n, f64::NAN),
            noise_sigma: Array1::from_elem(n, f64::NAN),
            misfit: Array1::from_elem(n, f64::NAN),
            model_error: Array1::from_elem(n, f64::NAN),
            poor_fit: Array1::zeros(n),
            data_term: vec![String::new(); n],
            nfe: Array1::zeros(n),
            restarts: Array1::zeros(n),
            zeta: Array1::from_elem(n, f64::NAN),
            failed: Array1::zeros(n),
            start: vec![String::new(); n],
            reason: vec![String::new(); n],
        }
    }

    fn write(&self, path: &Path, grid: &Grid, attrs: &Attrs) -> anyhow::Result<()> {
        let w = ReconWriter::create(path)?;
        w.dataset("mean", &self.mean)?;
        w.dataset("std", &self.std)?;
        w.dataset("das", &self.das)?;
        w.dataset("aeration_ci", &self.ci)?;
        for (name, v) in [
            ("aeration", &self.aeration),
            ("lung_fraction", &self.lung_fraction),
            ("aeration_sd", &self.aeration_sd),
            ("boundary_sd", &self.boundary_sd),
            ("latency_ms", &self.latency_ms),
            ("residual", &self.residual),
            ("noise_sigma", &self.noise_sigma),
            ("misfit", &self.misfit),
            ("model_error", &self.model_error),
            ("zeta", &self.zeta),
        ] {
            w.dataset(name, v)?;
        }
        w.dataset("category", &self.category)?;
        w.dataset("failed", &self.failed)?;
        w.dataset("poor_fit", &self.poor_fit)?;
        w.dataset("nfe", &self.nfe)?;
        w.dataset("restarts", &self.restarts)?;
        w.strings("start", &self.start)?;
        w.strings("data_term", &self.data_term)?;
        w.strings("failed_reason", &self.reason)?;
        for (name, value) in [
            ("method", &attrs.method),
            ("source", &attrs.source),
            ("model", &attrs.model),
            ("model_sha256", &attrs.model_sha256),
            ("sampler", &attrs.sampler),
            ("calibration", &attrs.calibration),
            ("device", &attrs.device),
        ] {
            w.attr(name, value)?;
        }
        w.attr_f64("operator_norm", attrs.operator_norm)?;
        w.finish(grid, &self.mean, Some(&self.das), &attrs.method)?;
        Ok(())
    }
}
