//! The rectangular (x, z) pixel grid below a linear array.

use super::BeamformError;
use crate::recording::Scan;

/// A rectangular grid of pixels: `x` along the array, `z` depth, metres. Pixel (iz, ix) of
/// an image on this grid lies at (x[ix], 0, z[iz]).
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    x: Vec<f64>,
    z: Vec<f64>,
}

/// `n` evenly spaced values from `min` to `max` inclusive (`[min]` when `n` is 1).
pub fn linspace(min: f64, max: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![min],
        _ => {
            let step = (max - min) / (n - 1) as f64;
            (0..n)
                .map(|i| {
                    if i == n - 1 {
                        max
                    } else {
                        min + step * i as f64
                    }
                })
                .collect()
        }
    }
}

fn check_axis(axis: &'static str, v: &[f64]) -> Result<(), BeamformError> {
    if v.is_empty() {
        return Err(BeamformError::Grid {
            axis,
            reason: "has no points".into(),
        });
    }
    if let Some(bad) = v.iter().find(|a| !a.is_finite()) {
        return Err(BeamformError::Grid {
            axis,
            reason: format!("holds {bad}, not finite"),
        });
    }
    if let Some(w) = v.windows(2).find(|w| w[1] <= w[0]) {
        return Err(BeamformError::Grid {
            axis,
            reason: format!("is not strictly increasing ({} then {})", w[0], w[1]),
        });
    }
    Ok(())
}

impl Grid {
    /// A grid from its axes, each finite and strictly increasing.
    pub fn new(x: Vec<f64>, z: Vec<f64>) -> Result<Self, BeamformError> {
        check_axis("x", &x)?;
        check_axis("z", &z)?;
        Ok(Self { x, z })
    }

    /// `nx` by `nz` evenly spaced points over [x_min, x_max] x [z_min, z_max].
    pub fn linspace(x: (f64, f64, usize), z: (f64, f64, usize)) -> Result<Self, BeamformError> {
        Self::new(linspace(x.0, x.1, x.2), linspace(z.0, z.1, z.2))
    }

    /// The default grid for a scan: x across the array (first to last element), z from
    /// 2 mm below the array to the deepest point the recorded samples reach for an unsteered
    /// pulse-echo (c (t0 + (n_ax - 1) / fs) / 2, earliest transmit), half a wavelength
    /// laterally and a quarter of a wavelength axially.
    pub fn default_for(scan: &Scan) -> Result<Self, BeamformError> {
        let xs = scan.probe_geometry.column(0);
        let x_min = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let x_max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let t_first = scan
            .initial_times
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        let t_end = t_first + (scan.n_ax.max(1) - 1) as f64 / scan.sampling_frequency;
        // One wavelength short of the last sample's depth: echoes from an element beside the
        // pixel travel slightly further than the depth itself.
        let z_max = scan.sound_speed * t_end / 2.0 - scan.wavelength();
        // Start 2 mm below the probe, or at the depth of the first recorded sample when the
        // acquisition starts later (pwi_disk: 9.95 us, 7.4 mm).
        let z_first = scan.sound_speed * t_first / 2.0;
        let z_min = 2e-3_f64.max(z_first).min(z_max / 2.0);
        let lambda = scan.wavelength();
        if !(lambda.is_finite() && lambda > 0.0) {
            return Err(BeamformError::scan(
                "center_frequency",
                scan.center_frequency,
                "no wavelength to size the default grid",
            ));
        }
        let nx = (((x_max - x_min) / (lambda / 2.0)).round() as usize + 1).max(2);
        let nz = (((z_max - z_min) / (lambda / 4.0)).round() as usize + 1).max(2);
        Self::linspace((x_min, x_max, nx), (z_min, z_max, nz))
    }

    /// Lateral positions, m.
    pub fn x(&self) -> &[f64] {
        &self.x
    }

    /// Depths, m.
    pub fn z(&self) -> &[f64] {
        &self.z
    }

    /// Number of columns.
    pub fn nx(&self) -> usize {
        self.x.len()
    }

    /// Number of rows.
    pub fn nz(&self) -> usize {
        self.z.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_hits_both_ends() {
        let v = linspace(-12.5e-3, 12.5e-3, 251);
        assert_eq!(v.len(), 251);
        assert_eq!(v[0], -12.5e-3);
        assert_eq!(v[250], 12.5e-3);
        assert!((v[125]).abs() < 1e-15);
        assert!((v[1] - v[0] - 1e-4).abs() < 1e-12);
    }

    #[test]
    fn bad_axes_name_the_value() {
        let e = Grid::new(vec![0.0, 1.0], vec![0.02, 0.01]).unwrap_err();
        assert!(
            e.to_string().contains("axis z") && e.to_string().contains("0.02 then 0.01"),
            "{e}"
        );
        let e = Grid::new(vec![0.0, f64::NAN], vec![0.01]).unwrap_err();
        assert!(e.to_string().contains("NaN"), "{e}");
        let e = Grid::new(vec![], vec![0.01]).unwrap_err();
        assert!(e.to_string().contains("axis x: has no points"), "{e}");
    }
}
