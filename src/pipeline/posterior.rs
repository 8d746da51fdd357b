//! The reconstruction stage: DAS for display, then posterior sampling of the aeration
//! image ([`crate::posterior`]) on the model's grid. `pleura replay` and the daemon's
//! `posterior` stage both run [`PosteriorStage::reconstruct`], so a recording replayed
//! offline and the same frames streamed live give the same numbers.
//!
//! Per scan (rebuilt when the scan changes): the check that the scan can image the grid,
//! the measurement operator normalised by its spectral norm (from an
//! [`OperatorCache`], so a scan seen before costs nothing), and the DAS plan on the same
//! grid. A new scan also starts the sequence afresh (the next frame starts cold).

use std::path::Path;
use std::sync::Arc;

use candle_core::Device;
use ndarray::Array2;

use super::{CacheCount, FrameInput, PipelineError, ScanCheck, ScanLimits, Stage};
use crate::beamform::{self, Beamformer, DasOptions};
use crate::diffusion::checkpoint::Model;
use crate::grid::{Grid, GridExtent, DEFAULT_PITCH, DEFAULT_Z_MIN};
use crate::operator::{OperatorCache, OperatorOptions};
use crate::posterior::frame::{FrameOutcome, Reconstructor, StartKind};
use crate::posterior::problem::{LinearOperator, NormalizedOperator};
use crate::posterior::sampler::PosteriorSampler;
use crate::posterior::SamplerConfig;
use crate::protocol::{Field, FieldData};
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
    grid: Grid,
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
            grid,
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

    /// Refuses, before building anything, a scan whose operator or DAS plan would exceed
    /// `limits` (the daemon's validator checks scans too; this holds for frames queued
    /// across a reload).
    pub fn with_limits(mut self, limits: ScanLimits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Loads the model from `dir` (a checkpoint or a training output directory) onto
    /// `device` and builds the stage on its grid.
    pub fn load(
        dir: &Path,
        cfg: SamplerConfig,
        das: DasOptions,
        device: &Device,
    ) -> Result<Self, PipelineError> {
        let model = Model::load(dir, device).map_err(|e| PipelineError::Config {
            message: format!("model = \"{}\": {e}", dir.display()),
        })?;
        Self::new(&model, cfg, None, das, device)
    }

    /// The reconstruction grid.
    pub fn grid(&self) -> &Grid {
        &self.grid
    }

    /// The sampler settings.
    pub fn config(&self) -> &SamplerConfig {
        self.recon.config()
    }

    /// The spectral norm of the current scan's operator (None before the first scan).
    pub fn operator_norm(&self) -> Option<f64> {
        self.planned.as_ref().map(|p| p.op.norm())
    }

    /// Checks that `scan` can image the grid and builds (or fetches) its operator and
    /// DAS plan. A scan other than the current one restarts the sequence cold.
    pub fn prepare(&mut self, scan_id: u64, scan: &Arc<Scan>) -> Result<(), PipelineError> {
        let current =
            matches!(&self.planned, Some(p) if Arc::ptr_eq(&p.scan, scan) || *p.scan == **scan);
        if current {
            return Ok(());
        }
        let err = |message: String| PipelineError::Scan {
            scan_id,
            stage: STAGE,
            message,
        };
        if let Some(limits) = self.limits {
            self.scan_check(limits)
                .check(scan)
                .map_err(|e| err(e.to_string()))?;
        }
        check_fit(scan, &self.grid).map_err(err)?;
        let started = std::time::Instant::now();
        let op = self
            .operators
            .get(scan, &self.grid, OperatorOptions::default(), &self.device)
            .map_err(|e| err(format!("measurement operator: {e}")))?;
        let op: Arc<dyn LinearOperator> = op;
        let op = NormalizedOperator::new(op, self.config().power_iterations, &self.device)
            .map_err(|e| err(format!("measurement operator: {e}")))?;
        self.sampler
            .check_operator(&op)
            .map_err(|e| err(e.to_string()))?;
        let das = Beamformer::new(scan, &self.grid, &self.das_options)
            .map_err(|e| err(format!("DAS plan: {e}")))?;
        tracing::info!(
            scan_id,
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

    /// Reconstructs one frame. Errors concern the scan (see [`Self::prepare`]); a frame
    /// that cannot be reconstructed is a [`FrameOutcome::Failed`] with the reason, and the
    /// next frame starts cold.
    pub fn reconstruct(&mut self, frame: &FrameInput<'_>) -> Result<PosteriorFrame, PipelineError> {
        self.prepare(frame.scan_id, frame.scan)?;
        let Some(p) = self.planned.as_mut() else {
            unreachable!("prepare() leaves a plan")
        };
        let mut das = Array2::<f32>::zeros((self.grid.nz(), self.grid.nx()));
        if let Err(e) = p.das.envelope_into(frame.data.view(), das.view_mut()) {
            self.recon.reset();
            return Ok(PosteriorFrame {
                das: Array2::zeros(das.dim()),
                outcome: FrameOutcome::Failed {
                    reason: format!("beamforming: {e}"),
                    attempts: 0,
                },
            });
        }
        let peak = beamform::bmode::max_of(das.view());
        if peak > 0.0 {
            das.mapv_inplace(|v| v / peak);
        }
        let data = frame.data.as_slice().map_or_else(
            || std::borrow::Cow::Owned(frame.data.iter().copied().collect()),
            std::borrow::Cow::Borrowed,
        );
        let outcome = self.recon.reconstruct(&p.op, &data, frame.data.shape());
        Ok(PosteriorFrame { das, outcome })
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

    /// Fields: `mean`, `std` (float32, nz x nx: aeration and its per-pixel standard
    /// deviation), `aeration` (float64 scalar: the lung's mean), `aeration_ci` (float64
    /// \[2\]), `lung_fraction` (float64 scalar: pixels in the lung region), `category`
    /// (uint8 scalar: 0 below 60 %, 1 60-85 %, 2 from 85 %), `das` (float32, nz x nx, in
    /// [0, 1]), `residual`, `noise_sigma`, `nfe` (float64 scalars), `start` (uint8 scalar:
    /// 0 cold, 1 warm, 2 scene change), `grid_x`, `grid_z` (float64, m). A failed frame is
    /// an error with the reason: nothing is published for it.
    fn process(&mut self, frame: &FrameInput<'_>) -> Result<Vec<Field>, PipelineError> {
        let r = self.reconstruct(frame)?;
        let e = match r.outcome {
            FrameOutcome::Done(e) => e,
            FrameOutcome::Failed { reason, .. } => {
                return Err(PipelineError::Frame {
                    sequence: frame.sequence,
                    stage: STAGE,
                    message: reason,
                })
            }
        };
        let (nz, nx) = (self.grid.nz() as u32, self.grid.nx() as u32);
        let image = |name: &str, a: &Array2<f32>| Field {
            name: name.into(),
            shape: vec![nz, nx],
            data: FieldData::F32(a.iter().copied().collect()),
        };
        let start = match e.start {
            StartKind::Cold => 0,
            StartKind::Warm => 1,
            StartKind::SceneChange => 2,
        };
        Ok(vec![
            image("mean", &e.mean),
            image("std", &e.std),
            Field::scalar("aeration", e.aeration),
            Field::f64("aeration_ci", vec![2], e.aeration_ci.to_vec()),
            Field::scalar("lung_fraction", e.lung_fraction),
            Field {
                name: "category".into(),
                shape: Vec::new(),
                data: FieldData::U8(vec![e.category]),
            },
            image("das", &r.das),
            Field::scalar("residual", e.residual),
            Field::scalar("noise_sigma", e.noise_sigma),
            Field::scalar("nfe", e.nfe as f64),
            Field {
                name: "start".into(),
                shape: Vec::new(),
                data: FieldData::U8(vec![start]),
            },
            Field::f64("grid_x", vec![nx], self.grid.x.clone()),
            Field::f64("grid_z", vec![nz], self.grid.z.clone()),
        ])
    }
}

/// The grid must lie under the probe (laterally within its aperture plus one pitch) and
/// within the recorded depth (the echo of the deepest row straight below must arrive
/// before the last sample of every transmit).
pub fn check_fit(scan: &Scan, grid: &Grid) -> Result<(), String> {
    let xs: Vec<f64> = (0..scan.n_el())
        .map(|e| scan.probe_geometry[[e, 0]])
        .collect();
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min) - scan.pitch();
    let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max) + scan.pitch();
    let (gx0, gx1) = (grid.x[0], grid.x[grid.nx() - 1]);
    if gx0 < lo || gx1 > hi {
        return Err(format!(
            "the grid does not fit the probe: grid x spans [{:.2}, {:.2}] mm but the \
             probe's aperture is [{:.2}, {:.2}] mm (elements +- one pitch)",
            gx0 * 1e3,
            gx1 * 1e3,
            lo * 1e3,
            hi * 1e3
        ));
    }
    let z_max = grid.z[grid.nz() - 1];
    for (tx, t0) in scan.initial_times.iter().enumerate() {
        let t_end = t0 + (scan.n_ax as f64 - 1.0) / scan.sampling_frequency;
        let depth = t_end * scan.sound_speed / 2.0;
        if depth < z_max {
            return Err(format!(
                "the grid does not fit the recording: transmit {tx} records echoes down to \
                 {:.2} mm but the grid reaches {:.2} mm",
                depth * 1e3,
                z_max * 1e3
            ));
        }
    }
    Ok(())
}
