//! Writing simulated sequences: zea recordings with ground truth, image sets for training
//! the prior, and PNG pictures.

use std::path::{Path, PathBuf};
use std::time::Duration;

use candle_core::Device;
use ndarray::{Array1, Array2, Array3};

use super::phantom::{sequence, PhantomFrame};
use super::probe::LinearProbe;
use super::speckle::{ScattererField, Scatterers};
use crate::grid::{Grid, GridError};
use crate::operator::{MeasurementOperator, OperatorError, OperatorOptions};
use crate::recording::{
    close_on_exec, write_string_attr, Compression, Frame, GroundTruthGrid, Layout, Recorder,
    RecorderOptions, RecordingError, SampleType,
};

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error(transparent)]
    Operator(#[from] OperatorError),
    #[error(transparent)]
    Recording(#[from] RecordingError),
    #[error("the speckle lattice: {0}")]
    Lattice(#[from] GridError),
    #[error("{path}: {what}: {source}")]
    Hdf5 {
        path: PathBuf,
        what: &'static str,
        source: hdf5::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: PNG encoding: {source}")]
    Png {
        path: PathBuf,
        source: png::EncodingError,
    },
    #[error("option {field} is invalid: {value}")]
    Option { field: &'static str, value: String },
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimulationSpec {
    pub seed: u64,
    pub n_frames: usize,
    pub grid: Grid,
    pub probe: LinearProbe,
    /// Plane-wave steering angles, degrees.
    pub angles_deg: Vec<f64>,
    /// Channel SNR, dB; `None` for noiseless data.
    pub snr_db: Option<f64>,
    /// Frame rate, Hz (timestamps and time_to_next_transmit).
    pub frame_rate: f64,
    /// The zea layout written.
    pub layout: Layout,
    /// What the RF is made of: speckle (the default of `pleura simulate`) or the
    /// operator's own one reflector per pixel.
    pub scatterers: Scatterers,
    /// Time-gain compensation the simulated scanner applies, dB per cm of depth (two-way
    /// travel time times half the sound speed, from the first transmit's first sample);
    /// 0 for none. The curve is written as `scan/tgc_gain_curve`.
    pub tgc_db_per_cm: f64,
}

/// What a simulation wrote.
#[derive(Clone, Debug)]
pub struct SimulationReport {
    pub frames: Vec<PhantomFrame>,
    /// Noise standard deviation of each frame.
    pub noise_sigma: Vec<f64>,
    pub n_ax: usize,
}

fn h5<T>(path: &Path, what: &'static str, r: hdf5::Result<T>) -> Result<T, SimulateError> {
    r.map_err(|source| SimulateError::Hdf5 {
        path: path.to_path_buf(),
        what,
        source,
    })
}

/// Simulates a recording and writes it to `path` in the zea layout (float32 RF), with the
/// ground truth under `pleura/`: `aeration` and the grid (through the [`Recorder`]), plus
/// `lung_mask` (n_frames, nz, nx) uint8 and `mean_aeration` (n_frames) float64.
pub fn write_recording(
    path: &Path,
    spec: &SimulationSpec,
    device: &Device,
) -> Result<SimulationReport, SimulateError> {
    if spec.n_frames == 0 {
        return Err(SimulateError::Option {
            field: "frames",
            value: "0".into(),
        });
    }
    if spec.angles_deg.is_empty() {
        return Err(SimulateError::Option {
            field: "angles",
            value: "none".into(),
        });
    }
    if !(spec.frame_rate.is_finite() && spec.frame_rate > 0.0) {
        return Err(SimulateError::Option {
            field: "frame_rate",
            value: spec.frame_rate.to_string(),
        });
    }
    // Speckle's scatterers lie on a lattice finer than the image grid: the records cover
    // its deepest cells too.
    let field = match spec.scatterers {
        Scatterers::Born => None,
        Scatterers::Speckle(s) => Some(ScattererField::draw(&spec.grid, s, spec.seed)?),
    };
    if !(spec.tgc_db_per_cm.is_finite() && spec.tgc_db_per_cm >= 0.0) {
        return Err(SimulateError::Option {
            field: "tgc_db_per_cm",
            value: spec.tgc_db_per_cm.to_string(),
        });
    }
    let source_grid = field.as_ref().map_or(&spec.grid, |f| &f.lattice);
    let mut scan = spec.probe.plane_wave_scan(&spec.angles_deg, source_grid);
    let n_tx = scan.n_tx();
    let period = 1.0 / spec.frame_rate;
    scan.time_to_next_transmit = Some(Array2::from_elem(
        (spec.n_frames, n_tx),
        period / n_tx as f64,
    ));
    let op = MeasurementOperator::new(&scan, source_grid, OperatorOptions::default(), device)?;
    let (_, frames) = sequence(spec.seed, &spec.grid, spec.n_frames);
    let mut data = match &field {
        None => super::channel_data(
            &op,
            frames.iter().map(|f| &f.aeration),
            spec.snr_db,
            spec.seed,
        )?,
        Some(field) => {
            let reflectivity: Vec<Array2<f32>> = frames
                .iter()
                .map(|f| field.reflectivity(&f.aeration))
                .collect();
            super::channel_data(&op, &reflectivity, spec.snr_db, spec.seed)?
        }
    };
    if spec.tgc_db_per_cm > 0.0 {
        let curve: Vec<f64> = (0..scan.n_ax)
            .map(|a| {
                let t = scan.initial_times[0] + a as f64 / scan.sampling_frequency;
                let depth_cm = t * scan.sound_speed / 2.0 * 100.0;
                10f64.powf(spec.tgc_db_per_cm * depth_cm / 20.0)
            })
            .collect();
        for (y, _) in &mut data {
            for (mut sample, g) in y.axis_iter_mut(ndarray::Axis(1)).zip(&curve) {
                // The gain the file's float32 curve says, so that dividing by it undoes it.
                let g = *g as f32;
                sample.mapv_inplace(|v| v * g);
            }
        }
        scan.tgc_gain_curve = Some(curve);
    }
    let options = RecorderOptions {
        sample_type: SampleType::Float32,
        flush_every: Duration::from_secs(5),
        compression: Compression::Deflate(4),
        layout: spec.layout,
        probe_name: format!("pleura-sim-linear-{}", spec.probe.n_el),
        us_machine: "pleura simulate".into(),
        description: format!(
            "Simulated lung phantom, seed {}, {} frames, plane waves at {:?} deg, SNR {} ({}, docs/simulator.md)",
            spec.seed,
            spec.n_frames,
            spec.angles_deg,
            spec.snr_db.map(|s| format!("{s} dB")).unwrap_or_else(|| "none".into()),
            spec.scatterers.describe()
        ),
        ground_truth_grid: Some(GroundTruthGrid {
            grid_x: spec.grid.x.clone(),
            grid_z: spec.grid.z.clone(),
        }),
    };
    let mut rec = Recorder::create(path, &scan, options)?;
    for (i, ((y, _), f)) in data.iter().zip(&frames).enumerate() {
        let frame = Frame {
            data: y.clone(),
            sequence_number: i as u64,
            timestamp_ns: (i as f64 * period * 1e9).round() as u64,
        };
        rec.append_with_ground_truth(&frame, f.aeration.view())?;
    }
    rec.finish()?;
    let (nz, nx) = (spec.grid.nz(), spec.grid.nx());
    let mask = Array3::from_shape_fn((frames.len(), nz, nx), |(i, z, x)| {
        frames[i].lung_mask[[z, x]] as u8
    });
    let means = Array1::from_iter(frames.iter().map(|f| f.mean_aeration));
    let file = h5(
        path,
        "reopen",
        hdf5::File::open_rw(path).and_then(close_on_exec),
    )?;
    let g = h5(path, "pleura group", file.group("pleura"))?;
    h5(
        path,
        "pleura/lung_mask",
        g.new_dataset_builder()
            .with_data(&mask)
            .create("lung_mask")
            .map(|_| ()),
    )?;
    h5(
        path,
        "pleura/mean_aeration",
        g.new_dataset_builder()
            .with_data(&means)
            .create("mean_aeration")
            .map(|_| ()),
    )?;
    write_string_attr(
        &g,
        "scatterers",
        &spec.scatterers.describe(),
        "pleura/scatterers",
    )?;
    Ok(SimulationReport {
        noise_sigma: data.iter().map(|(_, s)| *s).collect(),
        n_ax: scan.n_ax,
        frames,
    })
}

/// Writes `n_frames` phantom images only (for training the prior): dataset `images`
/// (n, nz, nx) float32 in [0, 1], `grid_x` (nx) and `grid_z` (nz) float64 in metres (also
/// as attributes of `images`), `mean_aeration` (n) and `lung_mask` (n, nz, nx) uint8.
/// Frames come from consecutive seeds `seed`, `seed + 1`, ... in groups of
/// `frames_per_seed` (breathing sequences), so the set covers many phantoms.
pub fn write_images(
    path: &Path,
    seed: u64,
    n_frames: usize,
    frames_per_seed: usize,
    grid: &Grid,
) -> Result<Vec<PhantomFrame>, SimulateError> {
    if frames_per_seed == 0 {
        return Err(SimulateError::Option {
            field: "frames_per_seed",
            value: "0".into(),
        });
    }
    let mut frames = Vec::with_capacity(n_frames);
    let mut s = seed;
    while frames.len() < n_frames {
        let k = frames_per_seed.min(n_frames - frames.len());
        frames.extend(sequence(s, grid, k).1);
        s += 1;
    }
    let (nz, nx) = (grid.nz(), grid.nx());
    let images = Array3::from_shape_fn((n_frames, nz, nx), |(i, z, x)| frames[i].aeration[[z, x]]);
    let mask = Array3::from_shape_fn((n_frames, nz, nx), |(i, z, x)| {
        frames[i].lung_mask[[z, x]] as u8
    });
    let means = Array1::from_iter(frames.iter().map(|f| f.mean_aeration));
    let gx = Array1::from(grid.x.clone());
    let gz = Array1::from(grid.z.clone());
    let f = h5(
        path,
        "create",
        hdf5::File::create(path).and_then(close_on_exec),
    )?;
    let ds = h5(
        path,
        "images",
        f.new_dataset_builder().with_data(&images).create("images"),
    )?;
    h5(
        path,
        "images grid_x attribute",
        ds.new_attr_builder()
            .with_data(&gx)
            .create("grid_x")
            .map(|_| ()),
    )?;
    h5(
        path,
        "images grid_z attribute",
        ds.new_attr_builder()
            .with_data(&gz)
            .create("grid_z")
            .map(|_| ()),
    )?;
    h5(
        path,
        "grid_x",
        f.new_dataset_builder()
            .with_data(&gx)
            .create("grid_x")
            .map(|_| ()),
    )?;
    h5(
        path,
        "grid_z",
        f.new_dataset_builder()
            .with_data(&gz)
            .create("grid_z")
            .map(|_| ()),
    )?;
    h5(
        path,
        "mean_aeration",
        f.new_dataset_builder()
            .with_data(&means)
            .create("mean_aeration")
            .map(|_| ()),
    )?;
    h5(
        path,
        "lung_mask",
        f.new_dataset_builder()
            .with_data(&mask)
            .create("lung_mask")
            .map(|_| ()),
    )?;
    write_string_attr(
        &f,
        "description",
        "pleura simulated lung aeration phantoms (docs/simulator.md)",
        "description",
    )?;
    Ok(frames)
}

/// Writes an image with values in [0, 1] as an 8-bit grey PNG, each pixel repeated
/// `scale` x `scale` times.
pub fn write_png(path: &Path, img: &Array2<f32>, scale: usize) -> Result<(), SimulateError> {
    let scale = scale.max(1);
    let (nz, nx) = img.dim();
    let (h, w) = (nz * scale, nx * scale);
    let mut buf = Vec::with_capacity(h * w);
    for r in 0..h {
        for c in 0..w {
            buf.push((img[[r / scale, c / scale]].clamp(0.0, 1.0) * 255.0).round() as u8);
        }
    }
    let io = |source| SimulateError::Io {
        path: path.to_path_buf(),
        source,
    };
    let pngerr = |source| SimulateError::Png {
        path: path.to_path_buf(),
        source,
    };
    let png = crate::render::gray_png(w as u32, h as u32, &buf).map_err(pngerr)?;
    std::fs::write(path, png).map_err(io)
}
