//! The DAS stage: delay-and-sum beamforming of every frame to its envelope and B-mode, on
//! a fixed grid or each scan's default one. `pleura beamform` and the daemon's `das` stage
//! are this stage.

use std::sync::Arc;

use ndarray::Array2;

use super::{
    DasImage, FrameError, FrameInput, Output, PipelineError, ScanCheck, ScanError, ScanLimits,
    Stage,
};
use crate::beamform::{bmode, Beamformer, DasOptions};
use crate::grid::{Grid, GridExtent};
use crate::recording::Scan;

const STAGE: &str = "das";

/// Delay-and-sum beamforming: envelope and B-mode of every frame.
pub struct DasStage {
    options: DasOptions,
    /// Fixed grid; None: the scan's default.
    grid: Option<Arc<Grid>>,
    dynamic_range_db: f64,
    /// Caps checked before a plan is built (None: none, offline).
    limits: Option<ScanLimits>,
    /// The scan the beamformer was planned for, the beamformer and its grid.
    planned: Option<(Arc<Scan>, Beamformer, Arc<Grid>)>,
}

impl DasStage {
    /// A stage with these beamforming options, grid (None: each scan's default grid),
    /// B-mode dynamic range (dB) and caps (None: none), built by [`super::build`].
    pub(super) fn new(
        options: DasOptions,
        grid: Option<Grid>,
        dynamic_range_db: f64,
        limits: Option<ScanLimits>,
    ) -> Self {
        DasStage {
            options,
            grid: grid.map(Arc::new),
            dynamic_range_db,
            limits,
            planned: None,
        }
    }

    fn plan(&mut self, scan: &Arc<Scan>) -> Result<(), ScanError> {
        let current =
            matches!(&self.planned, Some((s, ..)) if Arc::ptr_eq(s, scan) || **s == **scan);
        if current {
            return Ok(());
        }
        // The daemon's validator checks scans too; this holds for frames queued across a
        // reload.
        if let Some(limits) = self.limits {
            self.scan_check(limits).check(scan)?;
        }
        let grid = match &self.grid {
            Some(g) => g.clone(),
            None => Arc::new(Grid::default_for(scan)?),
        };
        let bf = Beamformer::new(scan, &grid, &self.options)?;
        tracing::debug!(nx = grid.nx(), nz = grid.nz(), "DAS plan built");
        self.planned = Some((scan.clone(), bf, grid));
        Ok(())
    }
}

impl Stage for DasStage {
    fn name(&self) -> &'static str {
        STAGE
    }

    fn scan_check(&self, limits: ScanLimits) -> ScanCheck {
        let grid = self.grid.as_deref().map(GridExtent::of);
        ScanCheck::imaging(limits, grid, self.options, false)
    }

    fn device(&self) -> String {
        "cpu".into()
    }

    fn prepare(&mut self, scan_id: u64, scan: &Arc<Scan>) -> Result<(), PipelineError> {
        self.plan(scan).map_err(|e| e.of(scan_id, STAGE))
    }

    fn grid(&self) -> Option<Arc<Grid>> {
        self.planned.as_ref().map(|(_, _, grid)| grid.clone())
    }

    fn process(&mut self, frame: &FrameInput<'_>) -> Result<Output, PipelineError> {
        self.prepare(frame.scan_id, frame.scan)?;
        let Some((_, bf, grid)) = self.planned.as_mut() else {
            unreachable!("plan() leaves a beamformer")
        };
        let failed = |e: crate::beamform::BeamformError| PipelineError::Frame {
            sequence: frame.sequence,
            stage: STAGE,
            source: FrameError::Beamform(e),
        };
        let mut envelope = Array2::<f32>::zeros((grid.nz(), grid.nx()));
        bf.envelope_into(frame.data.view(), envelope.view_mut())
            .map_err(failed)?;
        // A frame without signal has a zero envelope: shown black rather than rejected.
        let max = bmode::max_of(envelope.view());
        let reference = if max > 0.0 { max } else { 1.0 };
        let bmode = bmode::log_compress(envelope.view(), reference, self.dynamic_range_db)
            .map_err(failed)?;
        Ok(Output::Das(DasImage {
            envelope,
            bmode,
            grid: grid.clone(),
        }))
    }
}
