//! Baseline (a): the delay-and-sum envelope, mapped to [0, 1].
//!
//! DAS has no absolute reflectivity scale, so the envelope is divided by its
//! [`DAS_NORMALISATION_QUANTILE`] quantile over the image and clipped to [0, 1]: the
//! brightest structures (the pleural line, whose aeration is close to 1) map to about 1.

use ndarray::{Array2, ArrayView4};

use crate::beamform::{BeamformError, Beamformer, DasOptions};
use crate::grid::Grid;
use crate::recording::Scan;

/// Quantile of the envelope mapped to aeration 1.
pub const DAS_NORMALISATION_QUANTILE: f64 = 0.99;

/// A DAS beamformer on a reconstruction grid.
pub struct DasBaseline {
    bf: Beamformer,
    nz: usize,
    nx: usize,
}

impl DasBaseline {
    pub fn new(scan: &Scan, grid: &Grid) -> Result<Self, BeamformError> {
        Ok(Self {
            bf: Beamformer::new(scan, grid, &DasOptions::default())?,
            nz: grid.nz(),
            nx: grid.nx(),
        })
    }

    /// The normalised envelope of one frame (n_tx, n_ax, n_el, n_ch), shape (nz, nx).
    pub fn reconstruct(&mut self, frame: ArrayView4<f32>) -> Result<Array2<f32>, BeamformError> {
        let mut env = Array2::<f32>::zeros((self.nz, self.nx));
        self.bf.envelope_into(frame, env.view_mut())?;
        let mut sorted: Vec<f32> = env.iter().copied().collect();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let q = sorted[((sorted.len() - 1) as f64 * DAS_NORMALISATION_QUANTILE).round() as usize];
        Ok(if q > 0.0 {
            env.mapv(|v| (v / q).clamp(0.0, 1.0))
        } else {
            env
        })
    }
}
