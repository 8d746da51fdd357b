//! A tiny lung problem for end-to-end tests: the tiny model of [`pleura::testing`] on its
//! grid written to disk, and short recordings of a known aeration sequence made with the
//! measurement operator of its probe.

use std::path::Path;

use candle_core::Device;
use ndarray::Array2;
use pleura::diffusion::checkpoint::{save_safetensors, write_json};
use pleura::grid::Grid;
use pleura::operator::{MeasurementOperator, OperatorOptions};
use pleura::recording::{Frame, GroundTruthGrid, Recorder, RecorderOptions, SampleType};
use pleura::testing::{self, TINY_SIZE as N};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

/// Writes an untrained [`testing::tiny_model`] for grid `g` into `dir`, its weights drawn
/// with `seed`. The output convolution, zero at initialisation (so every seed would
/// predict eps = 0), gets small seeded weights too, so that models of different seeds
/// differ.
pub fn write_model(dir: &Path, g: &Grid, seed: u64) {
    let model = testing::tiny_model(Some(g), seed);
    testing::perturb_output(&model, seed, 0.05);
    std::fs::create_dir_all(dir).expect("dir");
    write_json(&dir.join("config.json"), &model.spec).expect("config");
    let tensors = model.tensors().expect("tensors");
    save_safetensors(&dir.join("ema.safetensors"), &tensors).expect("save");
}

/// Frame `f` of a sequence: a 0.1 band over a sinusoidal lung moving half a pixel
/// per frame.
pub fn aeration(f: usize) -> Array2<f32> {
    Array2::from_shape_fn((N, N), |(i, j)| {
        let x = (j as f64 + 0.5 * f as f64) / N as f64;
        if i < 3 {
            0.1
        } else {
            (0.7 + 0.2 * (2.0 * std::f64::consts::PI * x).sin()) as f32
        }
    })
}

/// `frames` frames of [`aeration`] with 1 % noise and ground truth on `gt_grid` (zeros
/// when that is not the model grid); frame `nan_frame`, when given, gets a NaN sample.
pub fn write_recording(
    path: &Path,
    g: &Grid,
    gt_grid: &Grid,
    frames: usize,
    nan_frame: Option<usize>,
) {
    let scan = testing::tiny_probe().plane_wave_scan(&[0.0], g);
    let op =
        MeasurementOperator::new(&scan, g, OperatorOptions::default(), &Device::Cpu).expect("op");
    let options = RecorderOptions {
        sample_type: SampleType::Float32,
        ground_truth_grid: Some(GroundTruthGrid {
            grid_x: gt_grid.x.clone(),
            grid_z: gt_grid.z.clone(),
        }),
        ..RecorderOptions::default()
    };
    let mut rec = Recorder::create(path, &scan, options).expect("recorder");
    let mut rng = StdRng::seed_from_u64(3);
    for f in 0..frames {
        let a = aeration(f);
        let mut y = op.forward_array(&a).expect("forward");
        let peak = y.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = Normal::new(0.0, 0.01 * peak as f64).expect("normal");
        y.mapv_inplace(|v| v + d.sample(&mut rng) as f32);
        let frame = Frame {
            data: y,
            sequence_number: f as u64,
            timestamp_ns: f as u64 * 10_000_000,
        };
        let gt = if gt_grid.nx() == N {
            a
        } else {
            Array2::zeros((gt_grid.nz(), gt_grid.nx()))
        };
        rec.append_with_ground_truth(&frame, gt.view())
            .expect("append");
    }
    rec.finish().expect("finish");
    if let Some(bad) = nan_frame {
        // The recorder refuses non-finite samples; corrupt the frame behind its back, as
        // a faulty acquisition would.
        let file = hdf5::File::open_rw(path)
            .and_then(pleura::recording::close_on_exec)
            .expect("reopen");
        file.dataset("tracks/track_0/data/raw_data")
            .and_then(|d| {
                d.write_slice(&ndarray::arr1(&[f32::NAN]), ndarray::s![bad, 0, 5, 2, 0..1])
            })
            .expect("corrupt");
    }
}

/// Gives the recording at `path` a scanner's time-gain compensation in place: a ramp of
/// `db` over its record, every sample multiplied by the curve (float32, as the file keeps
/// it) and the curve written as `tracks/track_0/scan/tgc_gain_curve`. Returns the curve.
pub fn add_tgc(path: &Path, db: f64) -> Vec<f64> {
    let file = hdf5::File::open_rw(path)
        .and_then(pleura::recording::close_on_exec)
        .expect("reopen");
    let raw = file
        .dataset("tracks/track_0/data/raw_data")
        .expect("raw_data");
    let mut data: ndarray::Array5<f32> = raw.read().expect("read raw_data");
    let n_ax = data.shape()[2];
    let curve: Vec<f32> = (0..n_ax)
        .map(|a| 10f64.powf(db * a as f64 / (n_ax - 1) as f64 / 20.0) as f32)
        .collect();
    for (mut sample, g) in data.axis_iter_mut(ndarray::Axis(2)).zip(&curve) {
        sample.mapv_inplace(|v| v * g);
    }
    raw.write(&data).expect("write raw_data");
    file.group("tracks/track_0/scan")
        .and_then(|s| {
            s.new_dataset_builder()
                .with_data(&ndarray::Array1::from(curve.clone()))
                .create("tgc_gain_curve")
        })
        .expect("write tgc_gain_curve");
    curve.iter().map(|g| f64::from(*g)).collect()
}
