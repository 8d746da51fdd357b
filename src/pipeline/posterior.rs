//! The reconstruction stage: DAS for display, then posterior sampling of the aeration
//! image ([`crate::posterior`]) on the model's grid. `pleura replay` and the daemon's
//! `posterior` stage are this stage, built by [`super::build`], so a recording replayed
//! offline and the same frames streamed live give the same numbers.
//!
//! Per scan (rebuilt when the scan changes): the check that the scan can image the grid,
//! the measurement operator normalised by its spectral norm (from an
//! [`OperatorCache`], so a scan seen before costs nothing), and the DAS plan on the same
//! grid. A new scan also starts the sequence afresh (the next frame starts cold).

use std::sync::Arc;

use candle_core::Device;
use ndarray::Array2;

use super::{
    CacheCount, FrameInput, Output, PipelineError, ScanCheck, ScanError, ScanLimits, Stage,
    StageSpec,
};
use crate::beamform::{self, Beamformer, DasOptions};
use crate::diffusion::checkpoint::Model;
use crate::grid::{Grid, GridExtent, DEFAULT_PITCH, DEFAULT_Z_MIN};
use crate::operator::{OperatorCache, OperatorOptions};
use crate::posterior::frame::{FrameOutcome, Reconstructor};
use crate::posterior::problem::{LinearOperator, NormalizedOperator};
use crate::posterior::sampler::PosteriorSampler;
use crate::posterior::SamplerConfig;
use crate::recording::Scan;

const STAGE: &str = "posterior";
/// Operators a stage keeps unless told otherwise (`[daemon] max_operators`'s default).
pub const DEFAULT_MAX_OPERATORS: usize = 4;

/// One reconstructed frame.
#[derive(Clone, Debug)]
pub struct PosteriorFrame {
    /// DAS envelope on the reconstruction grid divided by its maximum, in [0, 1]
    /// (all zeros when beamforming failed).
    pub das: Array2<f32>,
    /// The estimate, or why the frame failed (non-finite data, divergence, beamforming).
    pub outcome: FrameOutcome,
    /// The reconstruction grid.
    pub grid: Arc<Grid>,
    /// The spectral norm of the scan's measurement operator.
    pub operator_norm: f64,
}

impl PosteriorFrame {
    /// Why the frame failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        match &self.outcome {
            FrameOutcome::Done(_) => None,
            FrameOutcome::Failed { reason, .. } => Some(reason),
        }
    }
}

/// Why a grid cannot be imaged from a scan.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FitError {
    #[error(
        "the grid does not fit the probe: grid x spans [{:.2}, {:.2}] mm but the probe's \
         aperture is [{:.2}, {:.2}] mm (elements +- one pitch)",
        grid.0 * 1e3, grid.1 * 1e3, aperture.0 * 1e3, aperture.1 * 1e3
    )]
    Aperture {
        /// The grid's lateral span, m.
        grid: (f64, f64),
        /// The elements' span widened by one pitch on each side, m.
        aperture: (f64, f64),
    },
    #[error(
        "the grid does not fit the recording: transmit {transmit} records echoes down to \
         {:.2} mm but the grid reaches {:.2} mm",
        recorded * 1e3, grid * 1e3
    )]
    Depth {
        transmit: usize,
        /// The depth of the last sample's echo straight below, m.
        recorded: f64,
        /// The grid's deepest row, m.
        grid: f64,
    },
}

struct Planned {
    scan: Arc<Scan>,
    op: NormalizedOperator,
    das: Beamformer,
}

/// Posterior sampling of every frame on a model's grid.
pub struct PosteriorStage {
    sampler: Arc<PosteriorSampler>,
    recon: Reconstructor,
    grid: Arc<Grid>,
    das_options: DasOptions,
    device: Device,
    operators: OperatorCache,
    /// Caps checked before the operator and plan are built (None: none, offline).
    limits: Option<ScanLimits>,
    planned: Option<Planned>,
}

/// The grid a model was trained on, when its `config.json` records one; an error when
/// that grid does not have the model's image size.
pub fn model_grid(model: &Model) -> Result<Option<Grid>, PipelineError> {
    let (Some(x), Some(z)) = (&model.spec.grid_x, &model.spec.grid_z) else {
        return Ok(None);
    };
    let setting = |message: String| PipelineError::Config { message };
    let g = Grid::new(x.clone(), z.clone()).map_err(|e| setting(format!("model grid: {e}")))?;
    let n = model.spec.model.image_size;
    if (g.nz(), g.nx()) != (n, n) {
        return Err(setting(format!(
            "model grid is {} x {} (nz x nx) but its images are {n} x {n}",
            g.nz(),
            g.nx()
        )));
    }
    Ok(Some(g))
}

impl PosteriorStage {
    /// A stage sampling with `model` and `cfg` on `device`. The grid is `grid` when given
    /// (it must have the model's image size), else the model's training grid, else
    /// pleura's default uniform grid (0.3 mm pitch from 2 mm depth) of the model's size.
    /// `das` sets the beamforming of the displayed DAS image.
    pub fn new(
        model: &Model,
        cfg: SamplerConfig,
        grid: Option<Grid>,
        das: DasOptions,
        device: &Device,
    ) -> Result<Self, PipelineError> {
        let setting = |message: String| PipelineError::Config { message };
        let n = model.spec.model.image_size;
        let grid = match (grid, model_grid(model)?) {
            (Some(g), _) | (None, Some(g)) => g,
            (None, None) => Grid::uniform(n, n, DEFAULT_PITCH, DEFAULT_Z_MIN)
                .map_err(|e| setting(format!("default grid: {e}")))?,
        };
        if (grid.nz(), grid.nx()) != (n, n) {
            return Err(setting(format!(
                "reconstruction grid is {} x {} (nz x nx) but the model's images are {n} x {n}",
                grid.nz(),
                grid.nx()
            )));
        }
        let sampler = Arc::new(
            PosteriorSampler::new(model, device).map_err(|e| setting(format!("model: {e}")))?,
        );
        let recon = Reconstructor::new(sampler.clone(), cfg, grid.dz())
            .map_err(|e| setting(e.to_string()))?;
        Ok(Self {
            sampler,
            recon,
            grid: Arc::new(grid),
            das_options: das,
            device: device.clone(),
            operators: OperatorCache::new(DEFAULT_MAX_OPERATORS),
            limits: None,
            planned: None,
        })
    }

    /// Keeps at most `n` measurement operators of scans seen before (least recently used
    /// dropped first), instead of [`DEFAULT_MAX_OPERATORS`].
    pub fn with_max_operators(mut self, n: usize) -> Self {
        self.operators = OperatorCache::new(n);
        self
    }

    /// Loads the model `spec` names (a checkpoint or a training output directory) onto
    /// `device` and builds the stage on its grid with `spec`'s sampler, DAS options,
    /// operator cache and caps.
    pub(super) fn load(spec: &StageSpec, device: &Device) -> Result<Self, PipelineError> {
        let model = Model::load(&spec.model, device).map_err(|e| PipelineError::Model {
            path: spec.model.clone(),
            source: Box::new(e),
        })?;
        let mut stage = Self::new(&model, spec.sampler.clone(), None, spec.das, device)?
            .with_max_operators(spec.max_operators);
        stage.limits = spec.limits;
        Ok(stage)
    }

    /// The sampler settings.
    pub fn config(&self) -> &SamplerConfig {
        self.recon.config()
    }

    /// Checks that `scan` can image the grid and builds (or fetches) its operator and
    /// DAS plan. A scan other than the current one restarts the sequence cold.
    fn plan(&mut self, scan: &Arc<Scan>) -> Result<(), ScanError> {
        let current =
            matches!(&self.planned, Some(p) if Arc::ptr_eq(&p.scan, scan) || *p.scan == **scan);
        if current {
            return Ok(());
        }
        // The daemon's validator checks scans too; this holds for frames queued across a
        // reload.
        if let Some(limits) = self.limits {
            self.scan_check(limits).check(scan)?;
        }
        check_fit(scan, &self.grid)?;
        let started = std::time::Instant::now();
        let op = self
            .operators
            .get(scan, &self.grid, OperatorOptions::default(), &self.device)?;
        let op: Arc<dyn LinearOperator> = op;
        let op = NormalizedOperator::new(op, self.config().power_iterations, &self.device)?;
        self.sampler.check_operator(&op)?;
        let das = Beamformer::new(scan, &self.grid, &self.das_options)?;
        tracing::info!(
            operator_norm = op.norm(),
            seconds = started.elapsed().as_secs_f64(),
            "operator and DAS plan built"
        );
        self.recon.reset();
        self.planned = Some(Planned {
            scan: scan.clone(),
            op,
            das,
        });
        Ok(())
    }

    /// Reconstructs one frame. Errors concern the scan (see [`Stage::prepare`]); a frame
    /// that cannot be reconstructed is a [`FrameOutcome::Failed`] with the reason, and the
    /// next frame starts cold.
    pub fn reconstruct(&mut self, frame: &FrameInput<'_>) -> Result<PosteriorFrame, PipelineError> {
        self.prepare(frame.scan_id, frame.scan)?;
        let Some(p) = self.planned.as_mut() else {
            unreachable!("prepare() leaves a plan")
        };
        let mut das = Array2::<f32>::zeros((self.grid.nz(), self.grid.nx()));
        let outcome = match p.das.envelope_into(frame.data.view(), das.view_mut()) {
            Err(e) => {
                self.recon.reset();
                das.fill(0.0);
                FrameOutcome::Failed {
                    reason: format!("beamforming: {e}"),
                    attempts: 0,
                }
            }
            Ok(()) => {
                let peak = beamform::bmode::max_of(das.view());
                if peak > 0.0 {
                    das.mapv_inplace(|v| v / peak);
                }
                let data = frame.data.as_slice().map_or_else(
                    || std::borrow::Cow::Owned(frame.data.iter().copied().collect()),
                    std::borrow::Cow::Borrowed,
                );
                self.recon.reconstruct(&p.op, &data, frame.data.shape())
            }
        };
        Ok(PosteriorFrame {
            das,
            outcome,
            grid: self.grid.clone(),
            operator_norm: p.op.norm(),
        })
    }
}

impl Stage for PosteriorStage {
    fn name(&self) -> &'static str {
        STAGE
    }

    fn scan_check(&self, limits: ScanLimits) -> ScanCheck {
        ScanCheck::imaging(
            limits,
            Some(GridExtent::of(&self.grid)),
            self.das_options,
            true,
        )
    }

    fn operator_cache(&self) -> CacheCount {
        CacheCount {
            len: self.operators.len(),
            evictions: self.operators.evictions(),
        }
    }

    fn device(&self) -> String {
        crate::device::describe(&self.device)
    }

    fn prepare(&mut self, scan_id: u64, scan: &Arc<Scan>) -> Result<(), PipelineError> {
        self.plan(scan).map_err(|e| e.of(scan_id, STAGE))
    }

    fn grid(&self) -> Option<Arc<Grid>> {
        Some(self.grid.clone())
    }

    fn process(&mut self, frame: &FrameInput<'_>) -> Result<Output, PipelineError> {
        self.reconstruct(frame).map(Output::Posterior)
    }
}

/// The grid must lie under the probe (laterally within its aperture plus one pitch) and
/// within the recorded depth (the echo of the deepest row straight below must arrive
/// before the last sample of every transmit).
pub fn check_fit(scan: &Scan, grid: &Grid) -> Result<(), FitError> {
    let xs: Vec<f64> = (0..scan.n_el())
        .map(|e| scan.probe_geometry[[e, 0]])
        .collect();
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min) - scan.pitch();
    let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max) + scan.pitch();
    let (gx0, gx1) = (grid.x[0], grid.x[grid.nx() - 1]);
    if gx0 < lo || gx1 > hi {
        return Err(FitError::Aperture {
            grid: (gx0, gx1),
            aperture: (lo, hi),
        });
    }
    let z_max = grid.z[grid.nz() - 1];
    for (transmit, t0) in scan.initial_times.iter().enumerate() {
        let t_end = t0 + (scan.n_ax as f64 - 1.0) / scan.sampling_frequency;
        let recorded = t_end * scan.sound_speed / 2.0;
        if recorded < z_max {
            return Err(FitError::Depth {
                transmit,
                recorded,
                grid: z_max,
            });
        }
    }
    Ok(())
}
