//! Baseline (a): the delay-and-sum envelope, mapped to [0, 1].
//!
//! The envelope is the daemon's DAS stage's ([`crate::pipeline::build`], Hann apodization,
//! f-number 1.5) on the reconstruction grid. DAS has no absolute reflectivity scale, so the
//! envelope is divided by its [`DAS_NORMALISATION_QUANTILE`] quantile over the image and
//! clipped to [0, 1]: the brightest structures (the pleural line, whose aeration is close
//! to 1) map to about 1.

use std::sync::Arc;

use ndarray::{Array2, Array4};

use crate::config::{Config, StageKind};
use crate::grid::Grid;
use crate::pipeline::{self, FrameInput, Output, PipelineError, Stage, StageSpec};
use crate::recording::Scan;

/// Quantile of the envelope mapped to aeration 1.
pub const DAS_NORMALISATION_QUANTILE: f64 = 0.99;

/// The DAS stage on a reconstruction grid.
pub struct DasBaseline {
    stage: Box<dyn Stage>,
    scan: Arc<Scan>,
}

impl DasBaseline {
    pub fn new(scan: &Scan, grid: &Grid) -> Result<Self, PipelineError> {
        let spec = StageSpec {
            kind: StageKind::Das,
            das_grid: Some(grid.clone()),
            ..StageSpec::offline(&Config::default())?
        };
        let mut stage = pipeline::build(&spec)?;
        let scan = Arc::new(scan.clone());
        stage.prepare(0, &scan)?;
        Ok(Self { stage, scan })
    }

    /// The normalised envelope of frame `sequence` (n_tx, n_ax, n_el, n_ch), shape
    /// (nz, nx).
    pub fn reconstruct(
        &mut self,
        sequence: u64,
        frame: &Array4<f32>,
    ) -> Result<Array2<f32>, PipelineError> {
        let output = self.stage.process(&FrameInput {
            scan_id: 0,
            scan: &self.scan,
            sequence,
            timestamp_ns: 0,
            data: frame,
        })?;
        let Output::Das(image) = output else {
            unreachable!("the DAS stage gives DAS images")
        };
        let env = image.envelope;
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
