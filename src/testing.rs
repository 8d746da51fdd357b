//! Fixtures for the tests and benches, one copy each: a tiny valid scan for the wire and
//! the daemon, simulated linear arrays with their plane waves and pulse for the
//! beamformer, and the tiny lung problem (a 16 x 16 grid, an 8-element probe, an untrained
//! smallest model) for posterior sampling and the end-to-end tests.
//!
//! Plain library code (not `#[cfg(test)]`) so that the integration tests in `tests/` and
//! the `pleura bench` commands use it too. The fixtures panic on failure: they build
//! values known to be valid.

use candle_core::{DType, Device};
use ndarray::{array, Array2};

use crate::beamform::sim::{GaussianPulse, LinearArray, Transmit};
use crate::diffusion::checkpoint::{Model, ModelSpec};
use crate::diffusion::sampler::NoiseRng;
use crate::diffusion::schedule::ScheduleConfig;
use crate::diffusion::unet::UNetConfig;
use crate::grid::Grid;
use crate::recording::Scan;
use crate::simulate::probe::LinearProbe;

/// Centre frequency of [`linear_array`] and [`pulse`], Hz.
pub const CENTER_FREQUENCY: f64 = 5e6;
/// Speed of sound of [`linear_array`], m/s.
pub const SOUND_SPEED: f64 = 1540.0;

/// Side of the tiny model's images and of [`tiny_grid`], pixels.
pub const TINY_SIZE: usize = 16;

/// A small plane-wave scan: 4 elements at 1 mm pitch, 2 transmits (-0.1 and 0.1 rad, all
/// delays zero), 16 RF samples at 20 MHz from 1 us, 0.1 ms between transmits.
pub fn tiny_scan() -> Scan {
    let xs = [-1.5e-3, -0.5e-3, 0.5e-3, 1.5e-3];
    let mut geo = Array2::zeros((4, 3));
    for (i, x) in xs.iter().enumerate() {
        geo[[i, 0]] = *x;
    }
    Scan {
        probe_geometry: geo,
        sampling_frequency: 20e6,
        center_frequency: 5e6,
        demodulation_frequency: 0.0,
        sound_speed: 1540.0,
        n_ax: 16,
        n_ch: 1,
        initial_times: vec![1e-6, 1e-6],
        t0_delays: Array2::zeros((2, 4)),
        tx_apodizations: Array2::ones((2, 4)),
        polar_angles: vec![-0.1, 0.1],
        azimuth_angles: vec![0.0, 0.0],
        focus_distances: vec![f64::INFINITY, f64::INFINITY],
        transmit_origins: Array2::zeros((2, 3)),
        element_width: Some(0.9e-3),
        time_to_next_transmit: Some(array![[1e-4, 1e-4]]),
        fractional_bandwidth: None,
        tgc_gain_curve: None,
    }
}

/// A simulated linear array of `n_el` elements at 0.3 mm pitch, [`CENTER_FREQUENCY`]
/// sampled at 20 MHz, [`SOUND_SPEED`], recording `n_ax` samples from `initial_time` (s)
/// after each transmit.
pub fn linear_array(n_el: usize, n_ax: usize, initial_time: f64) -> LinearArray {
    LinearArray {
        n_el,
        pitch: 0.3e-3,
        center_frequency: CENTER_FREQUENCY,
        sampling_frequency: 20e6,
        sound_speed: SOUND_SPEED,
        n_ax,
        initial_time,
    }
}

/// A plane wave steered `deg` degrees.
pub fn plane_wave(deg: f64) -> Transmit {
    Transmit {
        polar_angle: deg.to_radians(),
        focus_distance: f64::INFINITY,
    }
}

/// The simulated pulse: [`CENTER_FREQUENCY`], 60 % fractional bandwidth.
pub fn pulse() -> GaussianPulse {
    GaussianPulse {
        center_frequency: CENTER_FREQUENCY,
        bandwidth: 0.6,
    }
}

/// The [`TINY_SIZE`]-square grid, 0.3 mm pitch from 3 mm depth.
pub fn tiny_grid() -> Grid {
    Grid::uniform(TINY_SIZE, TINY_SIZE, 0.3e-3, 3e-3).expect("tiny grid")
}

/// An 8-element probe of 0.6 mm pitch (otherwise the simulator's lung probe): its
/// aperture is as wide as [`tiny_grid`], 4.8 mm.
pub fn tiny_probe() -> LinearProbe {
    LinearProbe {
        n_el: 8,
        pitch: 0.6e-3,
        ..LinearProbe::default_lung()
    }
}

/// The spec of an untrained `model`: the default schedule (cosine, T = 1000) and `grid`'s
/// coordinates when given.
pub fn model_spec(model: UNetConfig, grid: Option<&Grid>) -> ModelSpec {
    ModelSpec {
        model,
        schedule: ScheduleConfig::default(),
        grid_x: grid.map(|g| g.x.clone()),
        grid_z: grid.map(|g| g.z.clone()),
    }
}

/// The smallest model ([`UNetConfig::smallest`]) for [`TINY_SIZE`] images on the CPU,
/// untrained, its weights drawn with `seed`. Its output convolution is zero (it predicts
/// eps = 0) until [`perturb_output`].
pub fn tiny_model(grid: Option<&Grid>, seed: u64) -> Model {
    let spec = model_spec(UNetConfig::smallest(TINY_SIZE), grid);
    Model::new(spec, seed, &Device::Cpu).expect("tiny model")
}

/// Draws the weights of `model`'s output convolution (zero at initialisation, so that
/// every seed would predict eps = 0) from N(0, `scale`^2) with `seed`, so that the
/// network's output and Jacobian matter and models of different seeds differ.
pub fn perturb_output(model: &Model, seed: u64, scale: f64) {
    let data = model.varmap.data().lock().expect("model parameters");
    let w = data.get("out.2.weight").expect("output convolution");
    let noise = NoiseRng::new(seed)
        .normal(w.dims(), w.device(), DType::F32)
        .and_then(|n| n * scale)
        .expect("noise");
    w.set(&noise).expect("output weights");
}
