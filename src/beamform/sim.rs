//! Linear-array scans and analytic pulse-echo RF of point scatterers, for tests and
//! benchmarks of the beamformer with known ground truth.
//!
//! The RF is a Huygens superposition: every firing element j emits the pulse at its t0
//! delay, every scatterer re-emits what reaches it, every receiving element r records
//! sum_j a_j p(t - t0_j - (|s - e_j| + |s - e_r|) / c). No wavefront model is assumed, so
//! it checks the beamformer's transmit-delay model independently.

use ndarray::{Array2, Array4};

use crate::recording::Scan;

/// A transmit of a linear array: steering angle and focus distance from the array centre
/// (`f64::INFINITY` plane wave, > 0 focused, < 0 diverging from a virtual source behind).
#[derive(Clone, Copy, Debug)]
pub struct Transmit {
    pub polar_angle: f64,
    pub focus_distance: f64,
}

/// Geometry and sampling of a simulated linear array.
#[derive(Clone, Copy, Debug)]
pub struct LinearArray {
    pub n_el: usize,
    pub pitch: f64,
    pub center_frequency: f64,
    pub sampling_frequency: f64,
    pub sound_speed: f64,
    pub n_ax: usize,
    pub initial_time: f64,
}

/// The zea scan of `array` firing `transmits`, RF (n_ch = 1) demodulated at the centre
/// frequency. t0 delays are shifted so the first element fires at 0: plane wave
/// (x_e sin a) / c; focused at F (direction a): (max |F - e| - |F - e|) / c; diverging from
/// V = -|d| (sin a, cos a): (|e - V| - min |e - V|) / c.
pub fn linear_array_scan(array: &LinearArray, transmits: &[Transmit]) -> Scan {
    let n = array.n_el;
    let c = array.sound_speed;
    let xe: Vec<f64> = (0..n)
        .map(|i| (i as f64 - (n as f64 - 1.0) / 2.0) * array.pitch)
        .collect();
    let mut probe_geometry = Array2::zeros((n, 3));
    for (i, &x) in xe.iter().enumerate() {
        probe_geometry[[i, 0]] = x;
    }
    let n_tx = transmits.len();
    let mut t0_delays = Array2::zeros((n_tx, n));
    for (k, t) in transmits.iter().enumerate() {
        let (s, co) = t.polar_angle.sin_cos();
        let d: Vec<f64> = if !t.focus_distance.is_finite() {
            xe.iter().map(|x| x * s / c).collect()
        } else {
            let (fx, fz) = (t.focus_distance * s, t.focus_distance * co);
            let dist: Vec<f64> = xe.iter().map(|x| (fx - x).hypot(fz)).collect();
            if t.focus_distance > 0.0 {
                dist.iter().map(|r| -r / c).collect()
            } else {
                dist.iter().map(|r| r / c).collect()
            }
        };
        let m = d.iter().copied().fold(f64::INFINITY, f64::min);
        for e in 0..n {
            t0_delays[[k, e]] = d[e] - m;
        }
    }
    Scan {
        probe_geometry,
        sampling_frequency: array.sampling_frequency,
        center_frequency: array.center_frequency,
        demodulation_frequency: array.center_frequency,
        sound_speed: c,
        n_ax: array.n_ax,
        n_ch: 1,
        initial_times: vec![array.initial_time; n_tx],
        t0_delays,
        tx_apodizations: Array2::ones((n_tx, n)),
        polar_angles: transmits.iter().map(|t| t.polar_angle).collect(),
        azimuth_angles: vec![0.0; n_tx],
        focus_distances: transmits.iter().map(|t| t.focus_distance).collect(),
        transmit_origins: Array2::zeros((n_tx, 3)),
        element_width: Some(array.pitch * 0.9),
        time_to_next_transmit: None,
        fractional_bandwidth: None,
        tgc_gain_curve: None,
    }
}

/// A Gaussian-modulated sinusoid exp(-t^2 / (2 sigma^2)) cos(2 pi fc t) with -6 dB
/// fractional bandwidth `bandwidth`: sigma = sqrt(2 ln 2) / (pi bandwidth fc).
#[derive(Clone, Copy, Debug)]
pub struct GaussianPulse {
    pub center_frequency: f64,
    pub bandwidth: f64,
}

impl GaussianPulse {
    /// The envelope's standard deviation, s.
    pub fn sigma(&self) -> f64 {
        (2.0 * std::f64::consts::LN_2).sqrt()
            / (std::f64::consts::PI * self.bandwidth * self.center_frequency)
    }

    /// The pulse at time `t`.
    pub fn at(&self, t: f64) -> f64 {
        let s = self.sigma();
        (-t * t / (2.0 * s * s)).exp()
            * (2.0 * std::f64::consts::PI * self.center_frequency * t).cos()
    }
}

/// A point scatterer at (x, z) with reflectivity `amplitude`.
#[derive(Clone, Copy, Debug)]
pub struct Scatterer {
    pub x: f64,
    pub z: f64,
    pub amplitude: f64,
}

/// One frame of RF, shape (n_tx, n_ax, n_el, 1), of `scatterers` seen by `scan` (x-z plane,
/// elements at their `probe_geometry`), divided by the number of firing elements.
pub fn simulate_rf(scan: &Scan, scatterers: &[Scatterer], pulse: &GaussianPulse) -> Array4<f32> {
    let (n_tx, n_el, n_ax) = (scan.n_tx(), scan.n_el(), scan.n_ax);
    let fs = scan.sampling_frequency;
    let c = scan.sound_speed;
    let half = (5.0 * pulse.sigma() * fs).ceil() as i64;
    let mut rf = Array4::<f64>::zeros((n_tx, n_ax, n_el, 1));
    let pg = &scan.probe_geometry;
    for k in 0..n_tx {
        let firing: Vec<usize> = (0..n_el)
            .filter(|&j| scan.tx_apodizations[[k, j]] != 0.0)
            .collect();
        let norm = 1.0 / firing.len().max(1) as f64;
        for s in scatterers {
            let dist: Vec<f64> = (0..n_el)
                .map(|e| (s.x - pg[[e, 0]]).hypot(s.z - pg[[e, 2]]))
                .collect();
            for &j in &firing {
                let a = s.amplitude * scan.tx_apodizations[[k, j]] * norm;
                let t_tx = scan.t0_delays[[k, j]] + dist[j] / c;
                for r in 0..n_el {
                    let t = t_tx + dist[r] / c;
                    let centre = ((t - scan.initial_times[k]) * fs).round() as i64;
                    for n in (centre - half).max(0)..(centre + half + 1).min(n_ax as i64) {
                        let tn = scan.initial_times[k] + n as f64 / fs;
                        rf[[k, n as usize, r, 0]] += a * pulse.at(tn - t);
                    }
                }
            }
        }
    }
    rf.mapv(|v| v as f32)
}
