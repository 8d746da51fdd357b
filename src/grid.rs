//! The reconstruction grid: pixel centres below the probe where aeration is estimated.
//!
//! Coordinates follow the physics contract: x along the array (0 at its centre), z depth,
//! metres. Images on a grid are stored row-major as (nz, nx): row = depth, column = lateral.

use std::hash::{Hash, Hasher};

/// Errors building a [`Grid`].
#[derive(Debug, thiserror::Error)]
pub enum GridError {
    #[error("grid axis {axis} needs at least one pixel, got {n}")]
    Empty { axis: &'static str, n: usize },
    #[error(
        "grid axis {axis} is not finite and strictly increasing at index {index} (value {value} m)"
    )]
    NotIncreasing {
        axis: &'static str,
        index: usize,
        value: f64,
    },
    #[error("grid depth z must be positive (below the probe), got {value} m")]
    AboveProbe { value: f64 },
}

/// Pixel centres of a rectilinear image grid, metres.
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    /// Lateral pixel centres (along the array), strictly increasing, m.
    pub x: Vec<f64>,
    /// Depth pixel centres, strictly increasing and positive, m.
    pub z: Vec<f64>,
}

/// Default image size (pixels per side) of pleura's lung grid.
pub const DEFAULT_SIZE: usize = 64;
/// Default pixel pitch, m (0.3 mm, about one wavelength at 5 MHz in soft tissue).
pub const DEFAULT_PITCH: f64 = 0.3e-3;
/// Default shallowest depth covered (upper edge of the first row), m.
pub const DEFAULT_Z_MIN: f64 = 2.0e-3;

impl Grid {
    /// Checks and wraps pixel centres.
    pub fn new(x: Vec<f64>, z: Vec<f64>) -> Result<Self, GridError> {
        for (axis, v) in [("x", &x), ("z", &z)] {
            if v.is_empty() {
                return Err(GridError::Empty { axis, n: 0 });
            }
            for (i, w) in v.iter().enumerate() {
                let ok = w.is_finite() && (i == 0 || *w > v[i - 1]);
                if !ok {
                    return Err(GridError::NotIncreasing {
                        axis,
                        index: i,
                        value: *w,
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
