//! The pixel grid below the probe: where delay-and-sum beamforms and where aeration is
//! estimated.
//!
//! Coordinates follow the physics contract: x along the array (0 at its centre), z depth,
//! metres. Images on a grid are stored row-major as (nz, nx): row = depth, column = lateral;
//! pixel (iz, ix) lies at `(x[ix], 0, z[iz])`.

use std::hash::{Hash, Hasher};

use crate::recording::Scan;

/// Errors building a [`Grid`]: each names the axis or scan field and the value at fault.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GridError {
    #[error("grid axis {axis} needs at least one pixel, got {n}")]
    Empty { axis: &'static str, n: usize },
    #[error("grid axis {axis} holds {value} at index {index}, not finite")]
    NotFinite {
        axis: &'static str,
        index: usize,
        value: f64,
    },
    #[error(
        "grid axis {axis} is not strictly increasing at index {index} ({previous} m then {value} m)"
    )]
    NotIncreasing {
        axis: &'static str,
        index: usize,
        previous: f64,
        value: f64,
    },
    #[error("grid depth z must be positive (below the probe), got {value} m")]
    AboveProbe { value: f64 },
    #[error("scan/{field} = {value}: {reason}")]
    Scan {
        field: &'static str,
        value: f64,
        reason: &'static str,
    },
}

/// Pixel centres of a rectilinear image grid, metres.
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    /// Lateral pixel centres (along the array), strictly increasing, m.
    pub x: Vec<f64>,
    /// Depth pixel centres, strictly increasing and positive, m.
    pub z: Vec<f64>,
}

/// The extents of a grid not built yet: (min, max, points) per axis, metres. The counts
/// are whole numbers held as f64, so that any request can be measured before it is built.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GridExtent {
    pub x: (f64, f64, f64),
    pub z: (f64, f64, f64),
}

impl GridExtent {
    /// The extent of a built grid.
    pub fn of(grid: &Grid) -> Self {
        let axis = |v: &[f64]| (v[0], v[v.len() - 1], v.len() as f64);
        GridExtent {
            x: axis(&grid.x),
            z: axis(&grid.z),
        }
    }

    /// Number of pixels, nx nz.
    pub fn pixels(&self) -> f64 {
        self.x.2 * self.z.2
    }
}

/// Default image size (pixels per side) of pleura's lung grid.
pub const DEFAULT_SIZE: usize = 64;
/// Default pixel pitch, m (0.3 mm, about one wavelength at 5 MHz in soft tissue).
pub const DEFAULT_PITCH: f64 = 0.3e-3;
/// Default shallowest depth covered (upper edge of the first row), m.
pub const DEFAULT_Z_MIN: f64 = 2.0e-3;

impl Grid {
    /// Checks and wraps pixel centres: each axis non-empty, finite and strictly increasing,
    /// and every depth below the probe (z > 0; the array lies at z = 0).
    pub fn new(x: Vec<f64>, z: Vec<f64>) -> Result<Self, GridError> {
        for (axis, v) in [("x", &x), ("z", &z)] {
            if v.is_empty() {
                return Err(GridError::Empty { axis, n: 0 });
            }
            for (index, &value) in v.iter().enumerate() {
                if !value.is_finite() {
                    return Err(GridError::NotFinite { axis, index, value });
                }
                if index > 0 && value <= v[index - 1] {
                    return Err(GridError::NotIncreasing {
                        axis,
                        index,
                        previous: v[index - 1],
                        value,
                    });
                }
            }
        }
        if z[0] <= 0.0 {
            return Err(GridError::AboveProbe { value: z[0] });
        }
        Ok(Self { x, z })
    }

    /// `nx` x `nz` pixels of side `pitch` whose edges span x in
    /// [-nx*pitch/2, nx*pitch/2] and z in [z_min, z_min + nz*pitch] (pixel centres half a
    /// pitch inside the edges).
    pub fn uniform(nx: usize, nz: usize, pitch: f64, z_min: f64) -> Result<Self, GridError> {
        if nx == 0 {
            return Err(GridError::Empty { axis: "x", n: nx });
        }
        if nz == 0 {
            return Err(GridError::Empty { axis: "z", n: nz });
        }
        let x0 = -(nx as f64) * pitch / 2.0 + pitch / 2.0;
        let x = (0..nx).map(|i| x0 + i as f64 * pitch).collect();
        let z = (0..nz)
            .map(|i| z_min + pitch / 2.0 + i as f64 * pitch)
            .collect();
        Self::new(x, z)
    }

    /// `nx` by `nz` evenly spaced pixel centres over [x_min, x_max] x [z_min, z_max], both
    /// ends included (an axis of one pixel sits at its minimum); arguments are
    /// (min, max, n) per axis.
    pub fn linspace(x: (f64, f64, usize), z: (f64, f64, usize)) -> Result<Self, GridError> {
        Self::new(linspace(x.0, x.1, x.2), linspace(z.0, z.1, z.2))
    }

    /// The default delay-and-sum grid of a scan: x across the array (first to last
    /// element), z from 2 mm below the array (or the depth of the first recorded sample,
    /// when deeper) to the deepest point the recorded samples reach for an unsteered
    /// pulse-echo (c (t0 + (n_ax - 1) / fs) / 2, earliest transmit) less one wavelength,
    /// half a wavelength laterally and a quarter of a wavelength axially. `scan` is expected
    /// to be valid ([`Scan::validate`], as every recorded or received scan is).
    pub fn default_for(scan: &Scan) -> Result<Self, GridError> {
        let e = Self::default_extent(scan)?;
        if e.pixels() > usize::MAX as f64 {
            return Err(GridError::Scan {
                field: "n_ax",
                value: scan.n_ax as f64,
                reason: "the default grid would have more pixels than memory can index",
            });
        }
        Self::linspace(
            (e.x.0, e.x.1, e.x.2 as usize),
            (e.z.0, e.z.1, e.z.2 as usize),
        )
    }

    /// The extents and point counts of [`Grid::default_for`], computed without building
    /// it, so that a scan asking for an absurd grid is measured rather than allocated.
    pub fn default_extent(scan: &Scan) -> Result<GridExtent, GridError> {
        let lambda = scan.wavelength();
        if !(lambda.is_finite() && lambda > 0.0) {
            return Err(GridError::Scan {
                field: "center_frequency",
                value: scan.center_frequency,
                reason: "no wavelength to size the default grid",
            });
        }
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
        let z_max = scan.sound_speed * t_end / 2.0 - lambda;
        // Start 2 mm below the probe, or at the depth of the first recorded sample when the
        // acquisition starts later (pwi_disk: 9.95 us, 7.4 mm).
        let z_first = scan.sound_speed * t_first / 2.0;
        let z_min = 2e-3_f64.max(z_first).min(z_max / 2.0);
        let nx = (((x_max - x_min) / (lambda / 2.0)).round() + 1.0).max(2.0);
        let nz = (((z_max - z_min) / (lambda / 4.0)).round() + 1.0).max(2.0);
        if !(nx.is_finite() && nz.is_finite()) {
            return Err(GridError::Scan {
                field: "sampling_frequency",
                value: scan.sampling_frequency,
                reason: "the default grid's extent is not finite",
            });
        }
        Ok(GridExtent {
            x: (x_min, x_max, nx),
            z: (z_min, z_max, nz),
        })
    }

    /// pleura's default lung grid: 64 x 64 pixels of 0.3 mm, x in [-9.6, 9.6] mm,
    /// z in [2, 21.2] mm (edges).
    pub fn default_lung() -> Self {
        let pitch = DEFAULT_PITCH;
        let n = DEFAULT_SIZE;
        let x0 = -(n as f64) * pitch / 2.0 + pitch / 2.0;
        Self {
            x: (0..n).map(|i| x0 + i as f64 * pitch).collect(),
            z: (0..n)
                .map(|i| DEFAULT_Z_MIN + pitch / 2.0 + i as f64 * pitch)
                .collect(),
        }
    }

    /// Number of lateral pixels (columns).
    pub fn nx(&self) -> usize {
        self.x.len()
    }

    /// Number of depth pixels (rows).
    pub fn nz(&self) -> usize {
        self.z.len()
    }

    /// Number of pixels.
    pub fn n_pixels(&self) -> usize {
        self.nx() * self.nz()
    }

    /// Mean lateral pixel spacing, m (0 for a single column).
    pub fn dx(&self) -> f64 {
        spacing(&self.x)
    }

    /// Mean depth pixel spacing, m (0 for a single row).
    pub fn dz(&self) -> f64 {
        spacing(&self.z)
    }

    /// Feeds the exact bit patterns of the pixel centres to a hasher.
    pub fn hash_into<H: Hasher>(&self, h: &mut H) {
        for v in self.x.iter().chain(self.z.iter()) {
            v.to_bits().hash(h);
        }
        self.x.len().hash(h);
    }
}

/// `n` evenly spaced values from `min` to `max` inclusive (`[min]` when `n` is 1).
fn linspace(min: f64, max: f64, n: usize) -> Vec<f64> {
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

fn spacing(v: &[f64]) -> f64 {
    if v.len() < 2 {
        0.0
    } else {
        (v[v.len() - 1] - v[0]) / (v.len() - 1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_grid_spans_documented_extent() {
        let g = Grid::default_lung();
        assert_eq!((g.nx(), g.nz()), (64, 64));
        assert!((g.x[0] - (-9.45e-3)).abs() < 1e-12);
        assert!((g.x[63] - 9.45e-3).abs() < 1e-12);
        assert!((g.z[0] - 2.15e-3).abs() < 1e-12);
        assert!((g.z[63] - 21.05e-3).abs() < 1e-12);
        assert_eq!(
            Grid::uniform(64, 64, 0.3e-3, 2e-3).map(|u| u == g).ok(),
            Some(true)
        );
    }

    #[test]
    fn linspace_hits_both_ends() {
        let v = linspace(-12.5e-3, 12.5e-3, 251);
        assert_eq!(v.len(), 251);
        assert_eq!(v[0], -12.5e-3);
        assert_eq!(v[250], 12.5e-3);
        assert!((v[125]).abs() < 1e-15);
        assert!((v[1] - v[0] - 1e-4).abs() < 1e-12);
        assert_eq!(linspace(3e-3, 5e-3, 1), vec![3e-3]);
        let g = Grid::linspace((-1e-3, 1e-3, 3), (2e-3, 4e-3, 5)).expect("grid");
        assert_eq!((g.nx(), g.nz()), (3, 5));
        assert_eq!((g.z[0], g.z[4]), (2e-3, 4e-3));
    }

    #[test]
    fn bad_axes_name_the_value() {
        let e = Grid::new(vec![0.0, 1.0], vec![0.02, 0.01]).unwrap_err();
        assert!(
            e.to_string().contains("axis z") && e.to_string().contains("0.02 m then 0.01 m"),
            "{e}"
        );
        let e = Grid::new(vec![0.0, f64::NAN], vec![0.01]).unwrap_err();
        assert!(e.to_string().contains("axis x holds NaN at index 1"), "{e}");
        let e = Grid::linspace((-1e-3, 1e-3, 0), (1e-3, 2e-3, 4)).unwrap_err();
        assert_eq!(e, GridError::Empty { axis: "x", n: 0 });
        let e = Grid::linspace((-1e-3, 1e-3, 5), (-2e-3, 10e-3, 5)).unwrap_err();
        assert!(e.to_string().contains("got -0.002 m"), "{e}");
    }

    #[test]
    fn rejects_bad_axes() {
        assert!(matches!(
            Grid::new(vec![0.0, 0.0], vec![1e-3]),
            Err(GridError::NotIncreasing {
                axis: "x",
                index: 1,
                ..
            })
        ));
        assert!(matches!(
            Grid::new(vec![0.0], vec![-1e-3]),
            Err(GridError::AboveProbe { .. })
        ));
        assert!(matches!(
            Grid::new(vec![], vec![1e-3]),
            Err(GridError::Empty { axis: "x", .. })
        ));
    }
}
