//! `pleura calibrate`: the system's depth gain for the echo data term, fitted on
//! recordings of known aeration (`pleura::posterior::echo`, docs/reconstruction.md,
//! "Echo power").
//!
//! Each recording's frames are beamformed as the posterior stage beamforms them (the
//! configuration's DAS settings) onto the grid of its ground truth (`pleura/aeration`),
//! and `DepthGain::fit` fits `20 log10 c(z) = gain_db + slope_db_per_cm z` to the echo
//! amplitude against the blurred aeration over every frame together. The result is written
//! as a TOML file that `[sampler] calibration` (serve, replay) or `replay --calibration`
//! load.

use std::path::PathBuf;

use anyhow::{bail, Context};
use ndarray::Array2;

use pleura::beamform::Beamformer;
use pleura::config::Config;
use pleura::grid::Grid;
use pleura::pipeline::StageSpec;
use pleura::posterior::echo::{self, Calibration, DepthGain};

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
    /// Configuration whose DAS settings the posterior stage uses.
    #[arg(long, default_value = "config/pleura.toml")]
    pub config: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = if args.config.exists() {
        Config::load(&args.config)?
    } else {
        tracing::warn!(path = %args.config.display(), "no configuration file, using defaults");
        Config::default()
    };
    let das = StageSpec::offline(&config)?.das;
    let mut pairs: Vec<(Array2<f32>, Array2<f32>)> = Vec::new();
    let mut z_all: Option<Vec<f64>> = None;
    let mut frames = 0;
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
            bf.envelope_into(frame.data.view(), env.view_mut())
                .with_context(|| format!("beamforming frame {f} of {}", input.display()))?;
            pairs.push((echo::amplitude(env.view()), echo::smooth(a)));
            frames += 1;
        }
        z_all = Some(truth.grid_z.clone());
    }
    let Some(z) = z_all else {
        bail!("no recordings");
    };
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
    let cal = Calibration {
        depth_gain: fit.gain,
        frame_sd_db: fit.frame_sd_db,
        source: format!(
            "pleura calibrate {} ({frames} frames, {} pixels, rms {:.2} dB)",
            names.join(" "),
            fit.pixels,
            fit.rms_db
        ),
    };
    let text = format!(
        "# The system's depth gain for the echo data term (docs/reconstruction.md, \"Echo power\"):\n\
         # 20 log10 c(z) = gain_db + slope_db_per_cm * z[cm].\n{}",
        toml::to_string(&cal)?
    );
    std::fs::write(&args.out, text)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
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
