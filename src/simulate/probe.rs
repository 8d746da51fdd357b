//! A simulated linear array and the scans it fires (zea conventions).

use ndarray::Array2;

use crate::grid::Grid;
use crate::operator::pulse::Pulse;
use crate::recording::Scan;

/// A linear array along x, centred at x = 0, elements at z = 0 facing +z.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearProbe {
    pub n_el: usize,
    /// Element pitch, m.
    pub pitch: f64,
    /// Element width, m.
    pub element_width: f64,
    /// Centre frequency, Hz.
    pub center_frequency: f64,
    /// Pulse-echo fractional -6 dB bandwidth.
    pub fractional_bandwidth: f64,
    /// RF sampling frequency, Hz.
    pub sampling_frequency: f64,
    /// Speed of sound, m/s.
    pub sound_speed: f64,
}

/// One transmit of a scan: its wavefront.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Wave {
    /// Plane wave steered by this angle from +z towards +x, rad.
    Plane(f64),
    /// Focused at (x, z), m, z > 0.
    Focused(f64, f64),
    /// Diverging from the virtual source (x, z), m, z < 0.
    Diverging(f64, f64),
}

impl LinearProbe {
    /// pleura's default simulated probe: 64 elements, 0.3 mm pitch (19.2 mm aperture, the
    /// width of the default grid), 0.27 mm elements, 5 MHz, 60 % bandwidth, 20 MHz
    /// sampling, 1540 m/s.
    pub fn default_lung() -> Self {
        Self {
            n_el: 64,
            pitch: 0.3e-3,
            element_width: 0.27e-3,
            center_frequency: 5e6,
            fractional_bandwidth: 0.6,
            sampling_frequency: 20e6,
            sound_speed: 1540.0,
        }
    }

    /// Element x positions, m.
    pub fn element_x(&self) -> Vec<f64> {
        let c = (self.n_el as f64 - 1.0) / 2.0;
        (0..self.n_el)
            .map(|i| (i as f64 - c) * self.pitch)
            .collect()
    }

    /// RF scan of `waves` whose records (from transmit t = 0) cover echoes from every pixel
    /// of `grid` plus the pulse length.
    pub fn scan(&self, waves: &[Wave], grid: &Grid) -> Scan {
        let n_el = self.n_el;
        let n_tx = waves.len();
        let c = self.sound_speed;
        let xe = self.element_x();
        let mut geometry = Array2::zeros((n_el, 3));
        for (e, x) in xe.iter().enumerate() {
            geometry[[e, 0]] = *x;
        }
        let mut t0 = Array2::zeros((n_tx, n_el));
        let mut polar = vec![0.0; n_tx];
        let mut focus = vec![f64::INFINITY; n_tx];
        for (t, w) in waves.iter().enumerate() {
            let delays: Vec<f64> = match *w {
                Wave::Plane(a) => {
                    polar[t] = a;
                    xe.iter().map(|x| x * a.sin() / c).collect()
                }
                Wave::Focused(fx, fz) => {
                    polar[t] = fx.atan2(fz);
                    focus[t] = fx.hypot(fz);
                    xe.iter().map(|x| -(fx - x).hypot(fz) / c).collect()
                }
                Wave::Diverging(vx, vz) => {
                    polar[t] = (-vx).atan2(-vz);
                    focus[t] = -vx.hypot(vz);
                    xe.iter().map(|x| (vx - x).hypot(vz) / c).collect()
                }
            };
            let m = delays.iter().cloned().fold(f64::INFINITY, f64::min);
            for (e, d) in delays.iter().enumerate() {
                t0[[t, e]] = d - m;
            }
        }
        // Longest echo: worst transmit delay + farthest pixel out and back, plus the pulse.
        let far_z = grid.z[grid.nz() - 1];
        let far_x = grid.x[0].abs().max(grid.x[grid.nx() - 1].abs()) + xe[n_el - 1].abs();
        let max_t0 = t0.iter().cloned().fold(0.0, f64::max);
        let pulse = Pulse {
            center_frequency: self.center_frequency,
            fractional_bandwidth: self.fractional_bandwidth,
        };
        let t_max = max_t0 + 2.0 * far_x.hypot(far_z) / c + pulse.half_length();
        let n_ax = (t_max * self.sampling_frequency).ceil() as usize;
        Scan {
            probe_geometry: geometry,
            sampling_frequency: self.sampling_frequency,
            center_frequency: self.center_frequency,
            demodulation_frequency: self.center_frequency,
            sound_speed: c,
            n_ax,
            n_ch: 1,
            initial_times: vec![0.0; n_tx],
            t0_delays: t0,
            tx_apodizations: Array2::ones((n_tx, n_el)),
            polar_angles: polar,
            azimuth_angles: vec![0.0; n_tx],
            focus_distances: focus,
            transmit_origins: Array2::zeros((n_tx, 3)),
            element_width: Some(self.element_width),
            time_to_next_transmit: None,
            fractional_bandwidth: Some(self.fractional_bandwidth),
            tgc_gain_curve: None,
        }
    }

    /// Plane-wave scan at `angles_deg` degrees.
    pub fn plane_wave_scan(&self, angles_deg: &[f64], grid: &Grid) -> Scan {
        let waves: Vec<Wave> = angles_deg
            .iter()
            .map(|a| Wave::Plane(a.to_radians()))
            .collect();
        self.scan(&waves, grid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::TransmitKind;

    #[test]
    fn delays_follow_zea_conventions() {
        let p = LinearProbe::default_lung();
        let g = Grid::default_lung();
        let s = p.scan(
            &[
                Wave::Plane(10f64.to_radians()),
                Wave::Focused(0.0, 15e-3),
                Wave::Diverging(0.0, -10e-3),
            ],
            &g,
        );
        assert_eq!(s.transmit_kind(0), TransmitKind::Plane);
        assert_eq!(s.transmit_kind(1), TransmitKind::Focused);
        assert_eq!(s.transmit_kind(2), TransmitKind::Diverging);
        // Plane wave at +10 deg: the leftmost element fires first, the last after
        // aperture * sin(10 deg) / c.
        let span = 63.0 * 0.3e-3 * 10f64.to_radians().sin() / 1540.0;
        assert!(s.t0_delays[[0, 0]].abs() < 1e-15);
        assert!((s.t0_delays[[0, 63]] - span).abs() < 1e-12);
        // Focused on axis: edges fire first, centre last.
        assert!(s.t0_delays[[1, 0]].abs() < 1e-15 && s.t0_delays[[1, 31]] > 0.0);
        // Diverging: centre first.
        assert!(s.t0_delays[[2, 31]] < 1e-9 && s.t0_delays[[2, 0]] > s.t0_delays[[2, 31]]);
        assert!((s.focus_distances[2] + 10e-3).abs() < 1e-15);
    }
}
