//! `pleura simulate`: simulated lung recordings (zea layout + ground truth) or image sets.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use pleura::aeration::category;
use pleura::grid::{Grid, DEFAULT_PITCH, DEFAULT_SIZE, DEFAULT_Z_MIN};
use pleura::recording::Layout;
use pleura::simulate::output::{write_images, write_png, write_recording, SimulationSpec};
use pleura::simulate::probe::LinearProbe;
use pleura::simulate::speckle::{Scatterers, Speckle};

/// Arguments of `pleura simulate`.
#[derive(clap::Args)]
pub struct Args {
    /// Output HDF5 file.
    #[arg(long)]
    pub out: PathBuf,
    /// Number of frames.
    #[arg(long, default_value_t = 8)]
    pub frames: usize,
    /// Random seed (phantom and noise).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Image grid NX,NZ,PITCH_MM,ZMIN_MM: NX x NZ square pixels of PITCH_MM, centred
    /// laterally, from depth ZMIN_MM down.
    #[arg(long, value_name = "NX,NZ,PITCH_MM,ZMIN_MM")]
    pub grid: Option<String>,
    /// Plane-wave steering angles, degrees, comma separated.
    #[arg(long, default_value = "-8,0,8", allow_hyphen_values = true)]
    pub angles: String,
    /// Channel SNR in dB (white Gaussian noise); "inf" for none.
    #[arg(long, default_value = "20")]
    pub snr_db: String,
    /// Number of elements of the simulated linear probe (0.3 mm pitch, 5 MHz).
    #[arg(long, default_value_t = 64)]
    pub elements: usize,
    /// Frame rate, Hz.
    #[arg(long, default_value_t = 20.0)]
    pub frame_rate: f64,
    /// Write only the aeration images (`images`, `grid_x`, `grid_z`) for training the prior.
    #[arg(long)]
    pub images_only: bool,
    /// With --images-only: frames per phantom (consecutive seeds give new phantoms).
    #[arg(long, default_value_t = 16)]
    pub frames_per_seed: usize,
    /// Layout of the recording: "zea" (zea 0.1.x, `tracks/track_0/`) or "legacy" (zea < 0.1.0).
    #[arg(long, default_value = "zea")]
    pub layout: Layout,
    /// Also write each frame's aeration map as a PNG into this folder.
    #[arg(long)]
    pub png: Option<PathBuf>,
    /// What the RF is made of (docs/simulator.md, "Scatterers").
    #[arg(long, value_enum, default_value_t = ScattererKind::Speckle)]
    pub scatterers: ScattererKind,
    /// With --scatterers speckle: scatterers per pixel.
    #[arg(long, default_value_t = Speckle::default().per_pixel)]
    pub per_pixel: usize,
    /// Time-gain compensation of the simulated scanner, dB per cm of depth, applied to the
    /// RF and recorded as `scan/tgc_gain_curve` (0: none).
    #[arg(long, default_value_t = 0.0)]
    pub tgc_db_per_cm: f64,
}

/// `--scatterers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScattererKind {
    /// Sub-resolution scatterers at random positions, zero-mean reflectivity whose
    /// standard deviation is the aeration (tissue speckle).
    Speckle,
    /// One in-phase reflector per pixel, reflectivity equal to the aeration: the
    /// operator's own model (RF that the posterior's RF data term explains exactly).
    Born,
}

/// Parses "NX,NZ,PITCH_MM,ZMIN_MM".
pub fn parse_grid(s: Option<&str>) -> Result<Grid> {
    let Some(s) = s else {
        return Ok(Grid::uniform(
            DEFAULT_SIZE,
            DEFAULT_SIZE,
            DEFAULT_PITCH,
            DEFAULT_Z_MIN,
        )?);
    };
    let v: Vec<&str> = s.split(',').map(str::trim).collect();
    if v.len() != 4 {
        bail!("--grid {s:?}: expected NX,NZ,PITCH_MM,ZMIN_MM");
    }
    let nx: usize = v[0]
        .parse()
        .with_context(|| format!("--grid NX {:?}", v[0]))?;
    let nz: usize = v[1]
        .parse()
        .with_context(|| format!("--grid NZ {:?}", v[1]))?;
    let pitch: f64 = v[2]
        .parse()
        .with_context(|| format!("--grid PITCH_MM {:?}", v[2]))?;
    let zmin: f64 = v[3]
        .parse()
        .with_context(|| format!("--grid ZMIN_MM {:?}", v[3]))?;
    if !(pitch.is_finite() && pitch > 0.0) {
        bail!("--grid PITCH_MM must be positive, got {pitch}");
    }
    Ok(Grid::uniform(nx, nz, pitch * 1e-3, zmin * 1e-3)?)
}

/// Parses a comma-separated list of angles in degrees.
pub fn parse_angles(s: &str) -> Result<Vec<f64>> {
    let v = s
        .split(',')
        .map(|a| {
            let t = a.trim();
            let d: f64 = t
                .parse()
                .with_context(|| format!("--angles: {t:?} is not a number"))?;
            if !(d.is_finite() && d.abs() < 60.0) {
                bail!("--angles: {d} deg is outside (-60, 60)");
            }
            Ok(d)
        })
        .collect::<Result<Vec<_>>>()?;
    if v.is_empty() {
        bail!("--angles is empty");
    }
    Ok(v)
}

pub fn run(args: Args) -> Result<()> {
    let grid = parse_grid(args.grid.as_deref())?;
    let frames = if args.images_only {
        write_images(
            &args.out,
            args.seed,
            args.frames,
            args.frames_per_seed,
            &grid,
        )
        .with_context(|| format!("writing {}", args.out.display()))?
    } else {
        let snr_db = match args.snr_db.trim() {
            "inf" => None,
            s => {
                let v: f64 = s.parse().with_context(|| format!("--snr-db {s:?}"))?;
                if !v.is_finite() {
                    bail!("--snr-db {s:?}: use \"inf\" for noiseless data");
                }
                Some(v)
            }
        };
        if args.elements < 2 {
            bail!("--elements must be at least 2, got {}", args.elements);
        }
        let scatterers = match args.scatterers {
            ScattererKind::Born => Scatterers::Born,
            ScattererKind::Speckle if args.per_pixel == 0 => {
                bail!("--per-pixel must be at least 1, got 0")
            }
            ScattererKind::Speckle => Scatterers::Speckle(Speckle {
                per_pixel: args.per_pixel,
                ..Speckle::default()
            }),
        };
        let spec = SimulationSpec {
            seed: args.seed,
            n_frames: args.frames,
            grid: grid.clone(),
            probe: LinearProbe {
                n_el: args.elements,
                ..LinearProbe::default_lung()
            },
            angles_deg: parse_angles(&args.angles)?,
            snr_db,
            frame_rate: args.frame_rate,
            layout: args.layout,
            scatterers,
            tgc_db_per_cm: args.tgc_db_per_cm,
        };
        let rep = write_recording(&args.out, &spec, &Device::Cpu)
            .with_context(|| format!("writing {}", args.out.display()))?;
        println!(
            "{}: {} frames, {} transmits x {} samples x {} elements, noise sigma {:.3e}",
            args.out.display(),
            rep.frames.len(),
            spec.angles_deg.len(),
            rep.n_ax,
            spec.probe.n_el,
            rep.noise_sigma.first().copied().unwrap_or(0.0)
        );
        rep.frames
    };
    for (i, f) in frames.iter().enumerate().take(8) {
        println!(
            "frame {i}: mean lung aeration {:.3} (category {})",
            f.mean_aeration,
            category(f.mean_aeration)
        );
    }
    if let Some(dir) = &args.png {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (i, f) in frames.iter().enumerate() {
            let p = dir.join(format!("frame_{i:04}.png"));
            write_png(&p, &f.aeration, 4)?;
        }
        println!("{} PNGs in {}", frames.len(), dir.display());
    }
    Ok(())
}
