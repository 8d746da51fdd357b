//! `pleura calibrate`: the system's depth gain for the echo data term, fitted on
//! recordings of known aeration (`pleura::posterior::echo`, docs/reconstruction.md,
//! "Echo power").
//!
//! Each recording's frames are beamformed as the posterior stage beamforms them (the
//! configuration's DAS settings) onto the grid of its ground truth (`pleura/aeration`),
//! and `DepthGain::fit` fits `20 log10 c(z) = gain_db + slope_db_per_cm z` to the echo
//! amplitude against the blurred aeration over every frame together. Then every frame is
//! reconstructed from its echo power with that gain and the model (the configuration's
//! `[sampler]`), and `echo::Response` fits the truth's lung aeration against the
//! estimate's: the line the echo estimate is corrected by, and the spread its interval
//! takes. The result is written as a TOML file that `[sampler] calibration` (serve,
//! replay) or `replay --calibration` load.

use std::path::PathBuf;

use anyhow::{bail, Context};
use ndarray::Array2;

use pleura::beamform::Beamformer;
use pleura::config::Config;
use pleura::diffusion::checkpoint::Model;
use pleura::grid::Grid;
use pleura::pipeline::StageSpec;
use pleura::posterior::echo::{self, Calibration, DepthGain, Response};
use pleura::posterior::frame::{Echo, FrameOutcome, Reconstructor};
use pleura::posterior::lung::LungRegion;
use pleura::posterior::sampler::PosteriorSampler;

/// Arguments of `pleura calibrate`.
#[derive(clap::Args)]
pub struct Args {
    /// Recordings with ground truth (zea layout, `pleura/aeration`), from the system to
    /// calibrate.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Calibration file to write (TOML).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub stage: super::StageArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = super::config_or_defaults(&args.stage.config)?;
    let das = StageSpec::offline(&config)?.das;
    // Each frame's envelope and truth.
    let mut frames_kept: Vec<(Array2<f32>, Array2<f32>)> = Vec::new();
    let mut z_all: Option<Vec<f64>> = None;
    for input in &args.inputs {
        let rec = pleura::recording::Recording::open(input)
            .with_context(|| format!("cannot open recording {}", input.display()))?;
        let Some(truth) = rec.ground_truth()? else {
            bail!(
                "{} holds no ground truth (pleura/aeration): calibration needs recordings of known aeration",
                input.display()
            );
        };
        if z_all.as_ref().is_some_and(|z| *z != truth.grid_z) {
            bail!(
                "{}: its ground-truth depths differ from the first recording's; calibrate recordings of one grid together",
                input.display()
            );
        }
        let grid = Grid::new(truth.grid_x.clone(), truth.grid_z.clone())?;
        let mut bf = Beamformer::new(rec.scan(), &grid, &das)?;
        for (f, a) in truth.aeration.outer_iter().enumerate() {
            let frame = rec.read_frame(f)?;
            let mut env = Array2::<f32>::zeros((grid.nz(), grid.nx()));
            // As the posterior stage: the echo before the scanner's TGC.
            let rf = rec.scan().undo_tgc(&frame.data);
            bf.envelope_into(rf.view(), env.view_mut())
                .with_context(|| format!("beamforming frame {f} of {}", input.display()))?;
            frames_kept.push((env, a.to_owned()));
        }
        z_all = Some(truth.grid_z.clone());
    }
    let Some(z) = z_all else {
        bail!("no recordings");
    };
    let frames = frames_kept.len();
    let pairs: Vec<(Array2<f32>, Array2<f32>)> = frames_kept
        .iter()
        .map(|(env, a)| (echo::amplitude(env.view()), echo::smooth(a.view())))
        .collect();
    let Some(fit) = DepthGain::fit(pairs.iter().map(|(b, k)| (b.view(), k.view())), &z) else {
        bail!(
            "no pixel of aeration above {} at two depths: nothing to fit the depth gain to",
            echo::FIT_FLOOR
        );
    };
    let names: Vec<String> = args
        .inputs
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut cal = Calibration {
        depth_gain: fit.gain,
        frame_sd_db: fit.frame_sd_db,
        response: None,
        source: format!(
            "pleura calibrate {} ({frames} frames, {} pixels, rms {:.2} dB)",
            names.join(" "),
            fit.pixels,
            fit.rms_db
        ),
    };
    cal.response = response(&args, &config, &cal, &frames_kept, &z)?;
    let text = format!(
        "# The system's depth gain for the echo data term (docs/reconstruction.md, \"Echo power\"):\n\
         # 20 log10 c(z) = gain_db + slope_db_per_cm * z[cm].\n{}",
        toml::to_string(&cal)?
    );
    std::fs::write(&args.out, text)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    if let Some(r) = &cal.response {
        println!(
            "echo response: truth = {:.3} + {:.3} x estimate, sd {:.3} over {} frames \
             (95 % prediction interval +-{:.3} at their mean estimate {:.3})",
            r.intercept,
            r.slope,
            r.sd,
            r.frames,
            r.half_width(r.estimate_mean),
            r.estimate_mean
        );
    } else {
        println!(
            "echo response: not fitted (fewer than {} frames with a lung)",
            echo::MIN_RESPONSE_FRAMES
        );
    }
    println!(
        "depth gain {:.2} dB {:+.3} dB/cm from {frames} frames ({} pixels, rms {:.2} dB, \
         frame-to-frame sd {:.2} dB) -> {}",
        fit.gain.gain_db,
        fit.gain.slope_db_per_cm,
        fit.pixels,
        fit.rms_db,
        fit.frame_sd_db,
        args.out.display()
    );
    Ok(())
}

/// Reconstructs every calibration frame from its echo power with `cal` and fits the
/// truth's lung aeration (the lung region of the truth, as the published aeration's is of
/// the estimate) against the estimate's.
fn response(
    args: &Args,
    config: &Config,
    cal: &Calibration,
    frames: &[(Array2<f32>, Array2<f32>)],
    z: &[f64],
) -> anyhow::Result<Option<Response>> {
    if frames.len() < echo::MIN_RESPONSE_FRAMES {
        return Ok(None);
    }
    let device = pleura::device::select(&args.stage.device)?;
    let model = Model::load(&args.stage.model, &device)
        .with_context(|| format!("cannot load the model {}", args.stage.model.display()))?;
    let sampler = std::sync::Arc::new(PosteriorSampler::new(&model, &device)?);
    let dz = z.get(1).map_or(f64::NAN, |z1| z1 - z[0]);
    let cfg = pleura::posterior::SamplerConfig {
        calibration: None,
        ..config.sampler.clone()
    };
    let mut rec = Reconstructor::new(sampler, cfg, dz)?;
    let mut pairs = Vec::new();
    for (i, (env, truth)) in frames.iter().enumerate() {
        rec.reset();
        let outcome = rec.reconstruct_echo(
            Echo {
                envelope: env.view(),
                z,
            },
            cal,
        );
        let FrameOutcome::Done(e) = outcome else {
            tracing::warn!(
                frame = i,
                "echo reconstruction failed; left out of the response"
            );
            continue;
        };
        if let Some(t) = LungRegion::find(truth.view(), dz).mean(truth.view()) {
            tracing::info!(frame = i, estimate = e.aeration, truth = t, "echo response");
            pairs.push((e.aeration, t));
        }
    }
    Ok(Response::fit(&pairs))
}
