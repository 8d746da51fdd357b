//! `pleura beamform`: delay-and-sum every frame of a recording to envelope and B-mode,
//! with the daemon's DAS stage ([`pleura::pipeline::DasStage`], built by
//! [`pleura::pipeline::build`]): each frame's B-mode is log-compressed against its own
//! maximum, as the daemon publishes it. A frame the stage fails on (non-finite samples)
//! is a failed row (`failed`, `failed_reason`) with a zero image.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use hdf5::types::VarLenUnicode;
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{s, Array2};
use pleura::beamform::{Apodization, BeamformError, DasOptions};
use pleura::config::{Config, StageKind};
use pleura::grid::Grid;
use pleura::logging::Chain;
use pleura::pipeline::{self, FrameInput, Output, PipelineError, StageSpec};
use pleura::render::gray_png;

/// Receive apodization names on the command line.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ApodizationArg {
    Hann,
    /// Tukey window, half of the aperture flat (alpha 0.5).
    Tukey,
    Rect,
}

/// Arguments of `pleura beamform`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub recording: super::RecordingArgs,
    /// Output HDF5: envelope, bmode, grid_x, grid_z, failed, failed_reason.
    #[arg(long)]
    pub out: PathBuf,
    /// Lateral grid MIN,MAX,N in metres (default: across the array, half-wavelength step).
    #[arg(long, value_name = "MIN,MAX,N", allow_hyphen_values = true)]
    pub grid_x: Option<String>,
    /// Depth grid MIN,MAX,N in metres, MIN > 0 (below the array; default: 2 mm, or the
    /// first recorded sample's depth, to the deepest recorded depth, quarter-wavelength
    /// step).
    #[arg(long, value_name = "MIN,MAX,N", allow_hyphen_values = true)]
    pub grid_z: Option<String>,
    /// Receive f-number (dynamic aperture width = depth / f-number).
    #[arg(long, default_value_t = 1.5)]
    pub f_number: f64,
    /// Receive apodization across the aperture.
    #[arg(long, value_enum, default_value_t = ApodizationArg::Hann)]
    pub apodization: ApodizationArg,
    /// Dynamic range of the B-mode, dB.
    #[arg(long, default_value_t = 60.0)]
    pub dynamic_range: f64,
    /// Also write one grey-level PNG per frame into this directory.
    #[arg(long)]
    pub png: Option<PathBuf>,
}

/// Parses "MIN,MAX,N".
fn parse_axis(flag: &str, v: &str) -> Result<(f64, f64, usize)> {
    let parts: Vec<&str> = v.split(',').map(str::trim).collect();
    if parts.len() != 3 {
        bail!("{flag} {v:?}: expected MIN,MAX,N");
    }
    let min: f64 = parts[0]
        .parse()
        .with_context(|| format!("{flag} MIN {:?}", parts[0]))?;
    let max: f64 = parts[1]
        .parse()
        .with_context(|| format!("{flag} MAX {:?}", parts[1]))?;
    let n: usize = parts[2]
        .parse()
        .with_context(|| format!("{flag} N {:?}", parts[2]))?;
    if n < 1 {
        bail!("{flag} N = 0: at least one point is needed");
    }
    Ok((min, max, n))
}

fn write_png(path: &Path, image: &Array2<u8>) -> Result<()> {
    let (h, w) = image.dim();
    let data = image.as_standard_layout();
    let png = gray_png(
        w as u32,
        h as u32,
        data.as_slice().context("contiguous image")?,
    )?;
    std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
}

pub fn run(args: Args) -> Result<()> {
    let rec = args.recording.open()?;
    let scan = Arc::new(rec.scan().clone());
    // A grid flag replaces that axis of the scan's default grid.
    let das_grid = match (&args.grid_x, &args.grid_z) {
        (None, None) => None,
        (x, z) => {
            let default = Grid::default_for(&scan)?;
            let x = match x {
                Some(v) => parse_axis("--grid-x", v)?,
                None => (default.x[0], default.x[default.nx() - 1], default.nx()),
            };
            let z = match z {
                Some(v) => parse_axis("--grid-z", v)?,
                None => (default.z[0], default.z[default.nz() - 1], default.nz()),
            };
            Some(Grid::linspace(x, z)?)
        }
    };
    if !(args.dynamic_range.is_finite() && args.dynamic_range > 0.0) {
        return Err(BeamformError::DynamicRange(args.dynamic_range)).context("--dynamic-range");
    }
    // The daemon's DAS stage, built by the same builder, with this command's settings.
    let spec = StageSpec {
        kind: StageKind::Das,
        das: DasOptions {
            f_number: args.f_number,
            apodization: match args.apodization {
                ApodizationArg::Hann => Apodization::Hann,
                ApodizationArg::Tukey => Apodization::Tukey(0.5),
                ApodizationArg::Rect => Apodization::Rect,
            },
        },
        das_grid,
        dynamic_range_db: args.dynamic_range,
        ..StageSpec::offline(&Config::default())?
    };
    let mut stage = pipeline::build(&spec)?;
    stage.prepare(0, &scan)?;
    let grid = stage
        .grid()
        .context("the DAS stage has a grid once prepared")?;
    let (nz, nx, n_frames) = (grid.nz(), grid.nx(), rec.n_frames());
    tracing::info!(input = %args.recording.input.display(), n_frames, nx, nz, "beamforming");

    let out = hdf5::File::create(&args.out)
        .and_then(pleura::recording::close_on_exec)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let env_ds = out
        .new_dataset::<f32>()
        .shape([n_frames, nz, nx])
        .create("envelope")?;
    let bmode_ds = out
        .new_dataset::<u8>()
        .shape([n_frames, nz, nx])
        .create("bmode")?;
    out.new_dataset::<f64>()
        .shape([nx])
        .create("grid_x")?
        .write_raw(&grid.x)?;
    out.new_dataset::<f64>()
        .shape([nz])
        .create("grid_z")?
        .write_raw(&grid.z)?;
    if let Some(dir) = &args.png {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }

    let bar = ProgressBar::new(n_frames as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} frames ({per_sec}, eta {eta})")?
            .progress_chars("=> "),
    );
    bar.set_message("beamforming");
    let mut failed = vec![0u8; n_frames];
    let mut reasons = vec![String::new(); n_frames];
    // The next frames are read (HDF5, inflate, int16 -> float32) on another thread while
    // this one beamforms and writes; two wait at most.
    let (frames_tx, frames_rx) = std::sync::mpsc::sync_channel(2);
    let rec = &rec;
    std::thread::scope(|scope| -> Result<()> {
        scope.spawn(move || {
            for i in 0..n_frames {
                if frames_tx.send(rec.read_frame(i)).is_err() {
                    break;
                }
            }
        });
        for (i, frame) in frames_rx.iter().enumerate() {
            let frame = frame.with_context(|| format!("reading frame {i}"))?;
            let output = stage.process(&FrameInput::recorded(&scan, &frame));
            let image = match output {
                Ok(Output::Das(image)) => Some(image),
                Ok(other) => bail!("the DAS stage gave {other:?}"),
                // What the daemon publishes as the reason; the frame's row stays zero.
                Err(e @ PipelineError::Frame { .. }) => {
                    let reason = Chain(&e).to_string();
                    bar.suspend(|| tracing::warn!("frame {i} skipped: {reason}"));
                    failed[i] = 1;
                    reasons[i] = reason;
                    None
                }
                Err(e) => return Err(e).with_context(|| format!("frame {i}")),
            };
            if let Some(image) = &image {
                env_ds.write_slice(&image.envelope, s![i, .., ..])?;
                bmode_ds.write_slice(&image.bmode, s![i, .., ..])?;
            }
            if let Some(dir) = &args.png {
                let black = Array2::<u8>::zeros((nz, nx));
                let b = image.as_ref().map_or(&black, |d| &d.bmode);
                write_png(&dir.join(format!("frame_{i:05}.png")), b)?;
            }
            bar.inc(1);
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    out.new_dataset::<u8>()
        .shape([n_frames])
        .create("failed")?
        .write_raw(failed.as_slice())?;
    let reasons: Vec<VarLenUnicode> = reasons
        .iter()
        .map(|r| r.parse::<VarLenUnicode>())
        .collect::<Result<_, _>>()
        .context("a failure reason is not valid HDF5 text")?;
    out.new_dataset::<VarLenUnicode>()
        .shape([n_frames])
        .create("failed_reason")?
        .write_raw(&reasons)?;
    let n_failed = failed.iter().filter(|&&f| f != 0).count();
    if n_failed == n_frames {
        bail!("all {n_frames} frames failed (non-finite samples); no B-mode written");
    }
    let attr = |name: &str, v: f64| -> Result<()> {
        out.new_attr::<f64>().create(name)?.write_scalar(&v)?;
        Ok(())
    };
    attr("f_number", args.f_number)?;
    attr("dynamic_range_db", args.dynamic_range)?;
    println!(
        "{}: {n_frames} frames ({n_failed} failed) beamformed on {nx} x {nz} pixels -> {}",
        args.recording.input.display(),
        args.out.display()
    );
    Ok(())
}
